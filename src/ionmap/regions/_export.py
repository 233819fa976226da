"""Exports of hotspot results: CSV tables, JSON, GeoJSON outlines (QuPath annotations).

Outlines are traced with marching squares (``skimage.measure.find_contours``) at level 0.5
of each hotspot's mask, so they run half-way between pixel centres (along pixel edges),
8-connected like the hotspots. They are computed in MSI pixels (0-based pixel centres)
and mapped to any other frame by a 3×3 matrix.
"""
from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.measure import find_contours, points_in_poly

from .._files import write_atomic
from .._geometry import apply_affine, ring_area


def outlines(labels: np.ndarray) -> dict[int, list[list[np.ndarray]]]:
    """Polygons of every labelled region, in MSI pixel (x, y).

    Returns label -> list of polygons, each [outer ring, *holes], rings as closed (k, 2)
    arrays. A region is 8-connected, so it has one outer ring.
    """
    out: dict[int, list[list[np.ndarray]]] = {}
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        sub = np.pad((labels[sl] == k).astype(np.float64), 1)
        rings = [np.column_stack([c[:, 1] - 1 + sl[1].start, c[:, 0] - 1 + sl[0].start])
                 for c in find_contours(sub, 0.5, fully_connected="high",
                                        positive_orientation="high")]
        # In (x, y) with y down, outer rings (high values on their left in (row, col)) have
        # negative shoelace area, holes positive.
        outer = [r for r in rings if ring_area(r) < 0]
        holes = [r for r in rings if ring_area(r) >= 0]
        polys = [[r] for r in outer]
        for h in holes:
            owner = next((p for p in polys if points_in_poly(h[:1], p[0])[0]), polys[0])
            owner.append(h)
        out[k] = polys
    return out


def hotspots_geojson(labels: Mapping[str, np.ndarray], rows: Sequence[Mapping], *,
                     matrix: np.ndarray | None = None, decimals: int = 3,
                     colors: Mapping[str, Sequence[int]] | None = None) -> dict:
    """A QuPath-style FeatureCollection of hotspot annotations.

    ``labels``: map name -> (ny, nx) hotspot ids (hotspots of different maps may
    overlap); ``rows``: hotspot table rows with ``id``, ``map``, ``class`` and
    measurements; ``matrix``: 3×3 MSI pixel -> output frame (None: MSI pixels);
    ``colors``: class -> RGB (0-255). Each feature has ``objectType: "annotation"``,
    ``classification`` {name, color (when ``colors`` has the class)} = the immune class,
    a name like ``lactate hotspot 3`` (the id of hotspots.csv) and the numeric columns as
    QuPath measurements.
    """
    shapes = {name: outlines(lab) for name, lab in labels.items()}
    features = []
    for row in rows:
        polys = shapes.get(row["map"], {}).get(int(row["id"]))
        if not polys:
            continue
        rings = [[(apply_affine(matrix, r) if matrix is not None else r) for r in p] for p in polys]
        coords = [[np.round(r, decimals).tolist() for r in p] for p in rings]
        geometry = ({"type": "Polygon", "coordinates": coords[0]} if len(coords) == 1
                    else {"type": "MultiPolygon", "coordinates": coords})
        cls = str(row.get("class", ""))
        features.append({
            "type": "Feature",
            "geometry": geometry,
            "properties": {
                "objectType": "annotation",
                "name": f"{row['map']} hotspot {row['id']}",
                "classification": {"name": cls, **({"color": list(colors[cls])}
                                                   if colors and cls in colors else {})},
                "isLocked": False,
                "measurements": {k: v for k, v in row.items()
                                 if isinstance(v, (int, float)) and not isinstance(v, bool)
                                 and np.isfinite(v)},
            },
        })
    return {"type": "FeatureCollection", "features": features}


def _fmt(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "" if not np.isfinite(value) else f"{value:.7g}"
    return str(value)


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping],
              columns: Sequence[str] | None = None) -> Path:
    """Write dict rows as CSV (columns: given order, else the first row's keys), whole or
    not at all (:func:`ionmap._files.write_atomic`; a failure is a StorageError)."""
    columns = list(columns or (rows[0].keys() if rows else []))
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_fmt(row.get(c, "")) for c in columns])
    return write_atomic(path, text.getvalue())


def json_ready(data):
    """``data`` with NumPy scalars as Python numbers and NaN/inf as None (JSON null)."""
    if isinstance(data, float) and not np.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: json_ready(x) for k, x in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_ready(x) for x in data]
    if isinstance(data, np.ndarray):
        return json_ready(data.tolist())
    if isinstance(data, np.generic):
        return json_ready(data.item())
    return data


def write_json(path: str | os.PathLike, data) -> Path:
    """Write JSON (NaN written as null), whole or not at all (as :func:`write_csv`)."""
    return write_atomic(path, json.dumps(json_ready(data), indent=1) + "\n")
