"""Exports of hotspot results: CSV tables, GeoJSON outlines (QuPath annotations), PNGs.

Outlines are traced with marching squares (``skimage.measure.find_contours``) at level 0.5
of each hotspot's mask, so they run half-way between pixel centres (along pixel edges),
8-connected like the hotspots. They are computed in MSI pixels (0-based pixel centres)
and mapped to any other frame by a 3×3 matrix.
"""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.measure import find_contours, points_in_poly

from ..errors import StorageError
from ..geometry import apply_affine, ring_area

#: Outline colours (RGB) by immune class: Okabe–Ito palette, safe for colour blindness.
CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "inflamed": (204, 121, 167),
    "immune-excluded": (230, 159, 0),
    "immune-desert": (0, 114, 178),
    "undetermined": (128, 128, 128),
}
_OTHER_COLOR = (64, 64, 64)


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
                     matrix: np.ndarray | None = None, decimals: int = 3) -> dict:
    """A QuPath-style FeatureCollection of hotspot annotations.

    ``labels``: map name -> (ny, nx) hotspot ids (hotspots of different maps may
    overlap); ``rows``: hotspot table rows with ``id``, ``map``, ``class`` and
    measurements; ``matrix``: 3×3 MSI pixel -> output frame (None: MSI pixels). Each
    feature has ``objectType: "annotation"``, ``classification`` {name, color} = the
    immune class, a name like ``lactate hotspot 3`` and the numeric columns as QuPath
    measurements.
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
                "classification": {"name": cls,
                                   "color": list(CLASS_COLORS.get(cls, _OTHER_COLOR))},
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
    """Write dict rows as CSV (columns: given order, else the first row's keys)."""
    path = Path(path)
    columns = list(columns or (rows[0].keys() if rows else []))
    try:
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            for row in rows:
                writer.writerow([_fmt(row.get(c, "")) for c in columns])
    except OSError as exc:
        raise StorageError(path, f"cannot write: {exc.strerror or exc}") from None
    return path


def write_json(path: str | os.PathLike, data) -> Path:
    """Write JSON (NaN written as null)."""
    path = Path(path)

    def clean(v):
        if isinstance(v, float) and not np.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, np.generic):
            return clean(v.item())
        return v

    try:
        path.write_text(json.dumps(clean(data), indent=1) + "\n", encoding="utf-8")
    except OSError as exc:
        raise StorageError(path, f"cannot write: {exc.strerror or exc}") from None
    return path


def draw_map(fig, ax, values: np.ndarray, *, label: str = "") -> None:
    """Draw a (ny, nx) map on a matplotlib axis in the MSI pixel frame: viridis from 0 to
    the 99.5th percentile, NaN (off tissue, masked) light grey, with a colour bar."""
    import matplotlib

    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#e6e6e6")
    finite = values[np.isfinite(values)]
    vmax = float(np.percentile(finite, 99.5)) if finite.size else 1.0
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=vmax or 1.0,
                   interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label=label)


def overlay_png(path: str | os.PathLike, values: np.ndarray, labels: np.ndarray,
                rows: Sequence[Mapping], cells_xy: np.ndarray | None = None, *,
                title: str = "", cell_label: str = "cells", max_cells: int = 200_000,
                seed: int = 0) -> Path:
    """PNG of a map with hotspot outlines coloured by class and cells as dots.

    ``values``: (ny, nx) map (NaN drawn light grey); ``labels``: hotspot ids; ``rows``: the
    hotspot table (``id``, ``class``); ``cells_xy``: (n, 2) cell positions in MSI pixels
    (a random ``max_cells`` are drawn if there are more).
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    ny, nx = values.shape
    fig = Figure(figsize=(6.4, 6.4 * ny / nx + 0.8), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    draw_map(fig, ax, values, label=title)
    if cells_xy is not None and len(cells_xy):
        xy = np.asarray(cells_xy)
        if len(xy) > max_cells:
            xy = xy[np.random.default_rng(seed).choice(len(xy), max_cells, replace=False)]
        ax.scatter(xy[:, 0], xy[:, 1], s=max(0.5, 400.0 / max(nx, ny)), c="white",
                   edgecolors="black", linewidths=0.2, rasterized=True)
    classes = {int(r["id"]): str(r.get("class", "")) for r in rows}
    for k, polys in outlines(labels).items():
        color = np.array(CLASS_COLORS.get(classes.get(k, ""), _OTHER_COLOR)) / 255
        for poly in polys:
            for ring in poly:
                ax.plot(ring[:, 0], ring[:, 1], color=color, lw=1.5)
    handles = [Line2D([], [], color=np.array(c) / 255, lw=2, label=name)
               for name, c in CLASS_COLORS.items()]
    if cells_xy is not None:
        handles.append(Line2D([], [], ls="", marker="o", mfc="white", mec="black",
                              label=cell_label))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.04), ncol=5,
              fontsize=7, frameon=False)
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(ny - 0.5, -0.5)
    ax.set_title(f"{title}: {len(rows)} hotspot(s)")
    ax.set_xticks([])
    ax.set_yticks([])
    path = Path(path)
    try:
        fig.savefig(path)
    except OSError as exc:
        raise StorageError(path, f"cannot write: {exc.strerror or exc}") from None
    return path
