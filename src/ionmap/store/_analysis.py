"""What the analysis steps store beside the ion images, so that the report only renders.

Layout (paths relative to the result root)::

    mean_spectrum/        written by convert: ``mz`` (B,) float64 bin centres (Th) and
                          ``intensity`` (B,) float64 mean intensity per spectrum; attrs
                          ``ionmap``: spectra sampled, bins, how it was made
    tissue                (y, x) bool: the pixels that are tissue (written with the maps)
    maps/                 OME-NGFF image (c, y, x) float32, one channel per metabolite or
                          ratio map (omero channel labels = map names), NaN off tissue;
                          attrs ``ionmap``: name, unit and definition of every map
    hotspots/             attrs ``ionmap``: the hotspot table, densities, distance curves,
                          registration, parameters, time; ``cells_xy`` (n, 2) float32 cell
                          positions in MSI pixels (x, y, 0-based) and ``cells_type`` (n,)
                          int16 codes into ``attrs["ionmap"]["cell_types"]``;
                          ``cells_hotspot`` (map, cell) int32 hotspot id (0: none) and
                          ``cells_compartment`` (map, cell) int8 code (0 inside, 1 rim,
                          2 outside, -1 edge guard band, -2 not measured), maps in
                          ``attrs["ionmap"]["maps"]`` order, as the immune context counted

Readers return plain NumPy arrays and dicts; every entry may be absent (an older result,
or a step that did not run), and then reads as None.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import zarr

from ..errors import StorageError
from ._backend import open_store, read_root_attrs
from ._backend import storage_errors as _storage_errors
from ._layout import ION, LABELS
from ._ngff import OME_VERSION, multiscales

MEAN_SPECTRUM = "mean_spectrum"
TISSUE = "tissue"
MAPS = "maps"
HOTSPOTS = "hotspots"


def now() -> str:
    """The current time, ISO 8601 in UTC (provenance stamps)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _group(store: Any, path: str, mode: str = "r") -> zarr.Group | None:
    try:
        return zarr.open_group(store, path=path, mode=mode, zarr_format=3)
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError,
            zarr.errors.NodeTypeValidationError):
        return None


def _array(store: Any, path: str) -> np.ndarray | None:
    try:
        return zarr.open_array(store, path=path, mode="r", zarr_format=3)[...]
    except (FileNotFoundError, KeyError, zarr.errors.ArrayNotFoundError,
            zarr.errors.NodeTypeValidationError):
        return None


def _writable(url: str | os.PathLike, storage_options: Mapping[str, Any] | None):
    url = os.fspath(url)
    store = open_store(url, storage_options)
    attrs = read_root_attrs(store)
    if attrs is None:
        raise StorageError(url, "not an ionmap result")
    return store, attrs


def _put(group: zarr.Group, name: str, data: np.ndarray, dims: Sequence[str]) -> None:
    arr = group.create_array(name, shape=data.shape, dtype=data.dtype,
                             chunks=data.shape or (1,), dimension_names=list(dims),
                             overwrite=True)
    arr[...] = data


# -- convert ---------------------------------------------------------------------------------


@_storage_errors
def write_mean_spectrum(store: Any, mz: np.ndarray, intensity: np.ndarray, info: dict) -> None:
    """Store the mean spectrum (m/z bin centres in Th, mean intensity per spectrum)."""
    group = zarr.open_group(store, mode="r+", zarr_format=3).require_group(MEAN_SPECTRUM)
    group.update_attributes({"ionmap": dict(info)})
    _put(group, "mz", np.asarray(mz, np.float64), ["mz"])
    _put(group, "intensity", np.asarray(intensity, np.float64), ["mz"])


def read_mean_spectrum(store: Any) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """(m/z, mean intensity, info) or None when the result has none."""
    group = _group(store, MEAN_SPECTRUM)
    if group is None:
        return None
    mz, intensity = _array(store, f"{MEAN_SPECTRUM}/mz"), _array(store, f"{MEAN_SPECTRUM}/intensity")
    if mz is None or intensity is None:
        return None
    return mz, intensity, dict(group.attrs.asdict().get("ionmap", {}))


# -- maps ------------------------------------------------------------------------------------


def write_maps(url: str | os.PathLike, maps: Mapping[str, np.ndarray], tissue: np.ndarray,
               info: Sequence[Mapping[str, Any]], *,
               storage_options: Mapping[str, Any] | None = None) -> None:
    """Store the metabolite/ratio maps (one OME-NGFF image, channels = maps) and the tissue.

    ``maps``: name -> (ny, nx) values (NaN off tissue); ``info``: per map (same order) a
    dict with at least ``name`` and ``unit``. Replaces the maps of an earlier run.
    """
    store, attrs = _writable(url, storage_options)
    _write_maps(store, attrs, maps, tissue, info)


@_storage_errors
def _write_maps(store, attrs, maps, tissue, info) -> None:
    root = zarr.open_group(store, mode="r+", zarr_format=3)
    shape = tuple(attrs["shape"])
    names = list(maps)
    cube = np.stack([np.asarray(maps[n], np.float32) for n in names]) if names else \
        np.zeros((0, *shape), np.float32)
    group = root.create_group(MAPS, overwrite=True, attributes={
        "ome": {"version": OME_VERSION,
                "multiscales": multiscales(MAPS, "cyx", 1, attrs.get("pixel_size_um"),
                                           method="mean"),
                "omero": {"channels": [{"label": n, "color": "FFFFFF", "active": i == 0,
                                        "window": _window(maps[n])}
                                       for i, n in enumerate(names)],
                          "rdefs": {"model": "color"}}},
        "ionmap": {"maps": [dict(i) for i in info], "written": now()},
    })
    arr = group.create_array("0", shape=cube.shape, dtype="float32",
                             chunks=(1, *shape), dimension_names=["c", "y", "x"],
                             fill_value=float("nan"))
    arr[...] = cube
    _put(root, TISSUE, np.asarray(tissue, bool), ["y", "x"])


def _window(values: np.ndarray) -> dict:
    finite = np.asarray(values)[np.isfinite(values)]
    if not finite.size:
        return {"min": 0.0, "max": 1.0, "start": 0.0, "end": 1.0}
    lo, hi = float(finite.min()), float(finite.max())
    return {"min": lo, "max": hi, "start": lo, "end": float(np.percentile(finite, 99.5))}


def read_maps(store: Any) -> tuple[dict[str, np.ndarray], list[dict]] | None:
    """(name -> (ny, nx) float32 map, per-map info) or None without stored maps."""
    group = _group(store, MAPS)
    cube = _array(store, f"{MAPS}/0")
    if group is None or cube is None:
        return None
    info = list(group.attrs.asdict().get("ionmap", {}).get("maps", []))
    return {i["name"]: cube[k] for k, i in enumerate(info)}, info


def read_tissue(store: Any) -> np.ndarray | None:
    """(ny, nx) bool tissue, or None before the maps step ran."""
    t = _array(store, TISSUE)
    return None if t is None else t.astype(bool)


# -- hotspots --------------------------------------------------------------------------------


def write_hotspots(url: str | os.PathLike, info: Mapping[str, Any], cells_xy: np.ndarray,
                   cell_types: np.ndarray, cell_hotspot: np.ndarray,
                   cell_compartment: np.ndarray, *,
                   storage_options: Mapping[str, Any] | None = None) -> None:
    """Store a hotspot run: ``info`` (JSON-ready: table rows, densities, curves,
    registration, parameters, ``maps``), the cells in MSI pixels with their types, and per
    map (rows in ``info["maps"]`` order) each cell's hotspot id and compartment code as
    the immune context counted them: (n_maps, n_cells) arrays."""
    store, _ = _writable(url, storage_options)
    _write_hotspots(store, info, cells_xy, cell_types, cell_hotspot, cell_compartment)


@_storage_errors
def _write_hotspots(store, info, cells_xy, cell_types, cell_hotspot, cell_compartment
                    ) -> None:
    types, codes = np.unique(np.asarray(cell_types).astype(str), return_inverse=True)
    root = zarr.open_group(store, mode="r+", zarr_format=3)
    group = root.create_group(HOTSPOTS, overwrite=True, attributes={"ionmap": {
        **dict(info), "cell_types": types.tolist(), "written": now()}})
    _put(group, "cells_xy", np.asarray(cells_xy, np.float32).reshape(-1, 2), ["cell", "xy"])
    _put(group, "cells_type", codes.astype(np.int16), ["cell"])
    _put(group, "cells_hotspot", np.asarray(cell_hotspot, np.int32), ["map", "cell"])
    _put(group, "cells_compartment", np.asarray(cell_compartment, np.int8), ["map", "cell"])


def read_hotspots(store: Any) -> dict | None:
    """The stored hotspot run (info dict plus ``cells_xy`` and ``cells_type`` as arrays of
    positions in MSI pixels and type names), or None."""
    group = _group(store, HOTSPOTS)
    if group is None:
        return None
    info = dict(group.attrs.asdict().get("ionmap", {}))
    xy = _array(store, f"{HOTSPOTS}/cells_xy")
    codes = _array(store, f"{HOTSPOTS}/cells_type")
    types = np.asarray(info.get("cell_types", []), dtype=object)
    info["cells_xy"] = np.zeros((0, 2), np.float32) if xy is None else xy
    info["cells_type"] = (types[codes] if codes is not None and len(types)
                          else np.zeros(0, dtype=object))
    for name in ("cells_hotspot", "cells_compartment"):
        info[name] = _array(store, f"{HOTSPOTS}/{name}")
    return info


@_storage_errors
def _remove_labels(store: Any, keep: Sequence[str], prefix: str) -> list[str]:
    group = _group(store, f"{ION}/{LABELS}", mode="r+")
    if group is None:
        return []
    names = list(group.attrs.asdict().get("ome", {}).get("labels", []))
    stale = [n for n in names if n.startswith(prefix) and n not in keep]
    for name in stale:
        del group[name]
    if stale:
        group.update_attributes({"ome": {"version": OME_VERSION,
                                         "labels": [n for n in names if n not in stale]}})
    return stale


def remove_stale_labels(url: str | os.PathLike, keep: Sequence[str], *, prefix: str,
                        storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Delete the label images named ``prefix*`` that are not in ``keep`` (those of an
    earlier run with other maps); returns their names."""
    store, _ = _writable(url, storage_options)
    return _remove_labels(store, keep, prefix)
