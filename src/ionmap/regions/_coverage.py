"""Annotation coverage: the part of the MSI tissue where cells were looked for.

Cell files often cover part of a section only (one annotated region, a field of view).
Outside that part, "no CD8 cells" means "nobody looked", not "immune desert", so the
immune context measures densities only inside a *coverage mask* on the MSI grid, and a
hotspot mostly outside it is "undetermined (not annotated)". The mask comes from, in
this order of precedence:

1. an annotated-region file (``--annotated-region``): a GeoJSON of polygons in
   histology pixels (QuPath export, origin top-left; every Polygon/MultiPolygon feature
   counts), or a TIFF mask (non-zero = annotated) either of the MSI grid's shape (MSI
   pixels) or in histology pixels (pixel (col, row) covers [col, col+1) × [row, row+1));
2. the annotation objects (``objectType: annotation``) of a QuPath cells GeoJSON
   (:attr:`Cells.annotations`, in the cells' frame);
3. the hull of the cells: a closing (dilation, then erosion one pixel less) of the
   pixels holding a cell with a disk whose radius is 4 × the median nearest-neighbour
   distance of the cells (at least 1.5 MSI pixels), holes filled: a concave hull that
   follows the annotated part at the scale of the cell spacing (like an alpha shape
   with α ≈ that radius; Edelsbrunner, Kirkpatrick & Seidel 1983, IEEE Trans. Inf.
   Theory 29:551).

A pixel (its centre) is covered when it lies inside the region; the mask is intersected
with the tissue by the caller (:func:`ionmap.regions._immune.immune_context`).
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.measure import points_in_poly

from .._geometry import pixels_inside
from ..errors import InputError
from ._cells import Cells, geometry_polygons
from ._register import Registration, apply_affine

#: A polygon: [outer ring, *holes], each an (k, 2) array of (x, y).
Polygon = list[np.ndarray]
_NN_SAMPLE = 20_000  # cells whose nearest-neighbour distance estimates the spacing


def cells_hull(cells_msi: np.ndarray, shape: tuple[int, int],
               reach_px: float | None = None) -> np.ndarray:
    """(ny, nx) bool: the concave hull of cells at MSI pixel positions ``cells_msi``
    (n, 2) (see the module doc); ``reach_px`` overrides the closing radius (MSI px)."""
    xy = np.asarray(cells_msi, dtype=np.float64).reshape(-1, 2)
    ix, iy, on = pixels_inside(xy, shape)
    occupied = np.zeros(shape, dtype=bool)
    occupied[iy[on], ix[on]] = True
    if not occupied.any():
        return occupied
    if reach_px is None:
        reach_px = max(1.5, 4.0 * _spacing(xy[on]))
    grown = ndimage.distance_transform_edt(~occupied) <= reach_px
    closed = ndimage.distance_transform_edt(grown) > reach_px - 1.0
    return ndimage.binary_fill_holes(closed | occupied)


def _spacing(xy: np.ndarray) -> float:
    """Median nearest-neighbour distance (same unit as ``xy``) of a sample of points."""
    if len(xy) < 2:
        return 0.0
    tree = cKDTree(xy)
    pick = xy if len(xy) <= _NN_SAMPLE else xy[
        np.random.default_rng(0).choice(len(xy), _NN_SAMPLE, replace=False)]
    d, _ = tree.query(pick, k=2)
    return float(np.median(d[:, 1]))


def polygons_mask(polygons: Sequence[Polygon], to_msi: np.ndarray,
                  shape: tuple[int, int]) -> np.ndarray:
    """(ny, nx) bool: MSI pixel centres inside the union of ``polygons`` (outer rings
    minus their holes), given in a frame that the 3×3 ``to_msi`` maps to MSI pixels."""
    ny, nx = shape
    mask = np.zeros(shape, dtype=bool)
    for poly in polygons:
        rings = [apply_affine(to_msi, r) for r in poly]
        lo = np.maximum(np.floor(rings[0].min(axis=0)).astype(int), 0)
        hi = np.minimum(np.ceil(rings[0].max(axis=0)).astype(int), [nx - 1, ny - 1])
        if (hi < lo).any():
            continue
        yy, xx = np.mgrid[lo[1]:hi[1] + 1, lo[0]:hi[0] + 1]
        pts = np.column_stack([xx.ravel(), yy.ravel()]).astype(np.float64)
        inside = points_in_poly(pts, rings[0])
        for hole in rings[1:]:
            inside &= ~points_in_poly(pts, hole)
        mask[yy.ravel()[inside], xx.ravel()[inside]] = True
    return mask


def read_region_polygons(path: str | os.PathLike, what: str = "annotated region"
                         ) -> list[Polygon]:
    """Polygons of every Polygon/MultiPolygon feature of a GeoJSON (in the file's frame);
    ``what`` names the file's role in the errors."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"cannot read the {what} as GeoJSON: {exc}") from None
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features") or []
    elif isinstance(data, dict) and data.get("type") == "Feature":
        features = [data]
    elif isinstance(data, dict) and "coordinates" in data:
        features = [{"geometry": data}]
    elif isinstance(data, list):
        features = data
    else:
        raise InputError(path, f"{what}: not a GeoJSON FeatureCollection, Feature, "
                               "geometry or list of features")
    polys: list[Polygon] = []
    for i, feat in enumerate(features):
        geom = feat.get("geometry") if isinstance(feat, dict) else None
        if not isinstance(geom, dict):
            raise InputError(path, f"{what}: feature {i} has no geometry")
        try:
            polys += geometry_polygons(geom)
        except (ValueError, TypeError, IndexError) as exc:
            raise InputError(path, f"{what}: feature {i}: bad geometry ({exc})") \
                from None
    if not polys:
        raise InputError(path, f"{what}: no Polygon or MultiPolygon feature")
    return polys


def coverage_mask(
    shape: tuple[int, int],
    cells: Cells,
    cells_msi: np.ndarray,
    registration: Registration,
    region: str | os.PathLike | np.ndarray | None = None,
) -> tuple[np.ndarray, str]:
    """The coverage mask (ny, nx bool, MSI grid) and where it came from ("file NAME",
    "cells-file annotations" or "cells hull"); see the module doc for the sources.

    ``region``: an annotated-region file (GeoJSON or TIFF), an (ny, nx) bool array on
    the MSI grid, or None. Histology-pixel sources need ``cells`` in histology pixels or
    their pixel size (µm) when the cells are in µm.
    """
    if isinstance(region, np.ndarray):
        if region.shape != tuple(shape):
            raise InputError(None, f"annotated region mask is {region.shape}, the MSI grid "
                                   f"{tuple(shape)}")
        return region.astype(bool), "array"
    if region is not None:
        path = Path(region)
        if not path.is_file():
            raise InputError(path, "annotated region file not found")
        if path.suffix.lower() in (".tif", ".tiff"):
            return _tiff_region(path, shape, cells, registration), f"file {path.name}"
        polys = read_region_polygons(path)
        to_cells = _histology_to_cells(cells, path)
        return polygons_mask(polys, registration.inverse @ to_cells, shape), \
            f"file {path.name}"
    if cells.annotations:
        return polygons_mask(cells.annotations, registration.inverse, shape), \
            "cells-file annotations"
    return cells_hull(cells_msi, shape), "cells hull"


def _histology_to_cells(cells: Cells, source: Path) -> np.ndarray:
    """3×3 from histology pixels to the cells' frame."""
    if cells.unit == "px":
        return np.eye(3)
    if not cells.pixel_size_um:
        raise InputError(source, "the annotated region is in histology pixels but the cells "
                                 "are in µm: give the histology pixel size "
                                 "(--cells-pixel-size-um)")
    return np.diag([cells.pixel_size_um, cells.pixel_size_um, 1.0])


def _tiff_region(path: Path, shape: tuple[int, int], cells: Cells,
                 registration: Registration) -> np.ndarray:
    import tifffile

    try:
        mask = np.squeeze(tifffile.imread(path))
    except Exception as exc:  # tifffile raises many types for a bad file
        raise InputError(path, f"cannot read TIFF: {exc}") from None
    if mask.ndim != 2:
        raise InputError(path, f"annotated region: expected a 2-D mask, got {mask.ndim}-D")
    mask = mask != 0
    if mask.shape == tuple(shape):
        return mask
    # A histology-pixel mask: sample it at each MSI pixel centre.
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    centres = np.column_stack([xx.ravel(), yy.ravel()]).astype(np.float64)
    to_histology = np.linalg.inv(_histology_to_cells(cells, path)) @ registration.matrix
    h = np.floor(apply_affine(to_histology, centres)).astype(np.int64)
    ok = (h[:, 0] >= 0) & (h[:, 0] < mask.shape[1]) & (h[:, 1] >= 0) & (h[:, 1] < mask.shape[0])
    out = np.zeros(ny * nx, dtype=bool)
    out[ok] = mask[h[ok, 1], h[ok, 0]]
    return out.reshape(shape)
