"""Everything the report draws, read from a result store (nothing recomputed)."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..regions import label_name


@dataclass
class Stored:
    """A result's stored arrays and tables, as NumPy arrays and dicts.

    Images are (ny, nx) in the MSI pixel frame. ``pixel_size_um``: x pixel size (µm) or
    None; ``mean_spectrum``: (m/z, intensity, info) or None; ``maps`` / ``map_units``:
    map name -> values / unit; ``hotspots``: the stored hotspot run or None;
    ``hotspot_labels``: map name -> hotspot ids; ``recalibration``: what recalibration
    did (method, message, model, ``histogram``) or None; ``mass_error``: "before" /
    "after" / "model" -> (ny, nx) ppm map, or None when not recalibrated.
    """

    url: str
    attrs: dict
    tic: np.ndarray
    mask: np.ndarray
    targets: list[dict]
    ion_images: dict[str, np.ndarray]
    pixel_size_um: float | None
    mean_spectrum: tuple[np.ndarray, np.ndarray, dict] | None
    tissue: np.ndarray | None
    maps: dict[str, np.ndarray]
    map_info: list[dict]
    hotspots: dict | None
    hotspot_labels: dict[str, np.ndarray]
    recalibration: dict | None = None
    mass_error: dict[str, np.ndarray] | None = None

    @property
    def map_units(self) -> dict[str, str]:
        return {i["name"]: i.get("unit", "") for i in self.map_info}

    @property
    def cell_type(self) -> str:
        return str((self.hotspots or {}).get("parameters", {}).get("cell_type", ""))

    @property
    def safe_names(self) -> dict[str, str]:
        """Map name -> the name used in file and label names."""
        return {m: label_name(m).removeprefix("hotspots_") for m in self.maps}


def read_stored(result: Any, storage_options: Mapping[str, Any] | None = None) -> Stored:
    """Read what the report shows from a result (URL or opened Result)."""
    from ..store import open_result

    if isinstance(result, (str, os.PathLike)):
        result = open_result(result, storage_options)
    stored_maps = result.maps
    maps, info = stored_maps if stored_maps is not None else ({}, [])
    hotspots = result.hotspots
    have = set(result.label_names)
    labels = {m: result.labels(label_name(m)) for m in (hotspots or {}).get("maps", [])
              if label_name(m) in have}
    px = result.pixel_size_um
    return Stored(
        url=str(result.url), attrs=dict(result.attrs), tic=np.asarray(result.tic),
        mask=np.asarray(result.mask, bool), targets=result.targets,
        ion_images={n: np.asarray(result.ion_image(n)) for n in result.target_names},
        pixel_size_um=None if px is None else float(px[0]),
        mean_spectrum=result.mean_spectrum, tissue=result.tissue,
        maps=maps, map_info=info, hotspots=hotspots, hotspot_labels=labels,
        recalibration=result.recalibration, mass_error=result.mass_error)
