"""napari reader for result stores: ``napari RESULT.zarr`` shows the whole result at once.

An npe2 plugin (manifest ``napari.yaml`` beside this module, entry point
``napari.manifest`` in ``pyproject.toml``; ``pip install "ionmap[napari]"``). napari calls
:func:`get_reader` with the path it was given; for an ionmap result root it returns
:func:`napari_layers`, which gives napari's layer data tuples ``(data, kwargs, type)``:

- one image layer per ion image, named ``NAME m/z 89.0244`` (the target's m/z in Th,
  4 decimals), multiscale over the stored pyramid (lazy dask arrays: nothing is read until
  shown), colour and contrast from the stored OMERO channel metadata, additive blending,
  the channels OMERO marks active visible;
- ``TIC`` (total ion count per pixel, hidden);
- ``map NAME`` per stored metabolite or ratio map (after ``ionmap hotspots``; hidden);
- ``tissue`` labels (the stored tissue mask), or ``measured pixels`` (pixels with a
  spectrum) before the maps step;
- one labels layer per stored label image (``hotspots_MAP``: hotspot ids, coloured by
  immune class as in the report);
- ``cells`` points in the MSI frame (after ``ionmap hotspots``), with ``cell_type`` as a
  feature.

Coordinates: data axes (y, x) in MSI pixels (0-based; imzML pixel (x, y) is data
[y - 1, x - 1]); every layer has ``scale`` = the pixel size (y, x) in µm, so napari's world
coordinates are µm (1 per pixel when the result records no pixel size).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..store import ION, LABELS, Result, open_result

#: A napari layer data tuple: (data, layer keyword arguments, layer type).
LayerData = tuple[Any, dict[str, Any], str]


def get_reader(path: str | os.PathLike | Sequence[str | os.PathLike]
               ) -> Callable[[Any], list[LayerData]] | None:
    """napari's ``get_reader`` hook: :func:`napari_layers` when ``path`` is one ionmap
    result root, else None (napari then tries other readers)."""
    if isinstance(path, list | tuple):
        if len(path) != 1:
            return None
        path = path[0]
    path = os.fspath(path)
    if not os.path.isfile(os.path.join(path, "zarr.json")):
        return None
    try:
        open_result(path, allow_incomplete=True)
    except (OSError, ValueError):  # StorageError, InputError: not an ionmap result
        return None
    return napari_layers


def napari_layers(path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[LayerData]:
    """The layers of a result store (see the module docstring); an incomplete result
    (interrupted conversion) is refused with a StorageError."""
    if isinstance(path, list | tuple):
        (path,) = path
    result = open_result(os.fspath(path))
    scale = _scale(result)
    return [*_ion_layers(result, scale), _tic_layer(result, scale), *_map_layers(result, scale),
            _mask_layer(result, scale), *_label_layers(result, scale),
            *_cell_layers(result, scale)]


def _scale(result: Result) -> tuple[float, float]:
    """(y, x) µm per pixel; (1, 1) when unknown."""
    p = result.pixel_size_um
    return (1.0, 1.0) if p is None else (p[1], p[0])


def _levels(level: Callable[[int], Any], n_levels: int) -> dict[str, Any]:
    """``data`` and ``multiscale`` of an image layer over ``n_levels`` pyramid levels."""
    data = [level(i) for i in range(n_levels)]
    return {"data": data if n_levels > 1 else data[0], "multiscale": n_levels > 1}


def _ion_layers(result: Result, scale: tuple[float, float]) -> list[LayerData]:
    channels = result.ome(ION).get("omero", {}).get("channels", [])
    levels = _levels(result.ion_level, result.n_levels)
    layers = []
    for i, target in enumerate(result.targets):
        data = ([lv[i] for lv in levels["data"]] if levels["multiscale"]
                else levels["data"][i])
        kwargs: dict[str, Any] = {"name": f"{target['name']} m/z {target['mz']:.4f}",
                                  "scale": scale, "multiscale": levels["multiscale"],
                                  "blending": "additive", "visible": i < 3,
                                  "metadata": {"target": dict(target)}}
        if i < len(channels):
            window = channels[i].get("window", {})
            kwargs["colormap"] = "#" + channels[i].get("color", "FFFFFF")
            kwargs["visible"] = bool(channels[i].get("active", i < 3))
            if window.get("end", 0) > window.get("start", 0):
                kwargs["contrast_limits"] = (float(window["start"]), float(window["end"]))
        layers.append((data, kwargs, "image"))
    return layers


def _tic_layer(result: Result, scale: tuple[float, float]) -> LayerData:
    """TIC, with contrast 0 to the 99.5th percentile of the measured pixels of the
    coarsest level (lazy data: napari would otherwise not know a range)."""
    levels = _levels(result.tic_level, result.n_levels)
    coarse = np.asarray(result.tic_level(result.n_levels - 1))
    end = float(np.percentile(coarse[coarse > 0], 99.5)) if (coarse > 0).any() else 1.0
    return (levels.pop("data"), {"name": "TIC", "scale": scale, "visible": False,
                                 "colormap": "gray", "contrast_limits": (0.0, end), **levels},
            "image")


def _map_layers(result: Result, scale: tuple[float, float]) -> list[LayerData]:
    stored = result.maps
    if stored is None:
        return []
    values, info = stored
    return [(values[i["name"]], {"name": f"map {i['name']}", "scale": scale,
                                 "visible": False, "colormap": "viridis",
                                 "metadata": dict(i)}, "image")
            for i in info]


def _mask_layer(result: Result, scale: tuple[float, float]) -> LayerData:
    tissue = result.tissue
    name, mask = ("tissue", tissue) if tissue is not None else ("measured pixels", result.mask)
    return (mask.astype(np.uint8), {"name": name, "scale": scale, "opacity": 0.3,
                                    "visible": False}, "labels")


def _label_layers(result: Result, scale: tuple[float, float]) -> list[LayerData]:
    layers = []
    for name in result.label_names:
        meta = result.ome(f"{ION}/{LABELS}/{name}").get("image-label", {})
        colors: dict[Any, Any] = {c["label-value"]: tuple(v / 255 for v in c["rgba"])
                                  for c in meta.get("colors", [])}
        kwargs: dict[str, Any] = {"name": name, "scale": scale, "opacity": 0.6,
                                  "metadata": {"properties": meta.get("properties", [])}}
        if colors:
            kwargs["colormap"] = {None: "transparent", 0: "transparent", **colors}
        layers.append((result.labels(name), kwargs, "labels"))
    return layers


def _cell_layers(result: Result, scale: tuple[float, float]) -> list[LayerData]:
    run = result.hotspots
    if run is None or not len(run["cells_xy"]):
        return []
    yx = np.asarray(run["cells_xy"], np.float64)[:, ::-1]
    return [(yx, {"name": "cells", "scale": scale, "size": 0.5, "visible": False,
                  "features": {"cell_type": np.asarray(run["cells_type"], dtype=str)}},
             "points")]
