"""Hotspots: Getis-Ord Gi* inside the tissue, Benjamini–Hochberg FDR, connected regions.

For pixel i with window weights w_ij (binary: a (2r+1)² square or a disk of radius r
pixels, the pixel itself included) over the n valid tissue pixels j with values x_j:

    Gi*_i = (Σ_j w_ij x_j − x̄ Σ_j w_ij) / (S · sqrt((n Σ_j w_ij² − (Σ_j w_ij)²) / (n − 1)))

with x̄ and S the mean and (population) standard deviation of x over the valid pixels.
Every window sum is one convolution (``scipy.ndimage``), so a 1000 × 1000 map takes tens
of milliseconds. Gi* is a z-score under spatial randomness; the one-sided p-value (high
values) of every valid pixel goes through Benjamini–Hochberg (``scipy.stats``; valid
under the positive dependence that overlapping windows create), and pixels with
q ≤ ``fdr`` form hotspots: 8-connected regions of at least ``min_area_px``. A smooth
background gradient also violates "spatial randomness": broad, weak elevations can be
significant; ``mean_value``, ``max_z`` and ``min_q`` of each hotspot show how strong it is.

A window that overlaps a strong niche makes pixels just outside it significant too (the
window "bleeds" by up to r pixels). Each region is therefore trimmed to its pixels whose
own value is at least half-way from the tissue median to the region's peak (the 90th
percentile of its values), i.e. its half-maximum extent, so the inside/rim split that the
immune context relies on follows the niche edge, not the window.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, special
from scipy.stats import false_discovery_control

from ..errors import InputError
from ..params import HotspotParams

#: Defaults of :func:`find_hotspots` (from :class:`ionmap.params.HotspotParams`).
DEFAULT_FDR = HotspotParams.fdr
DEFAULT_RADIUS_PX = HotspotParams.radius_px
DEFAULT_MIN_AREA_PX = HotspotParams.min_area_px
DEFAULT_EXTENT = HotspotParams.extent

_EIGHT = np.ones((3, 3), dtype=bool)


def window(radius: int, shape: str = "square") -> np.ndarray:
    """Binary weights of a (2r+1)² square or a disk of radius r pixels (float64)."""
    if radius < 1:
        raise InputError(None, f"Gi* window radius must be at least 1 pixel, not {radius}")
    if shape == "square":
        return np.ones((2 * radius + 1,) * 2)
    if shape == "disk":
        yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
        return (xx * xx + yy * yy <= radius * radius).astype(np.float64)
    raise InputError(None, f"unknown window shape {shape!r} (expected square or disk)")


def _window_sum(image: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Σ_j w_ij image_j for every pixel i, zero outside the array."""
    if weights.all():  # square window: separable running sums
        return ndimage.uniform_filter(image, size=weights.shape, mode="constant") * weights.size
    return ndimage.correlate(image, weights, mode="constant")


def gi_star(values: np.ndarray, mask: np.ndarray, *, radius: int = DEFAULT_RADIUS_PX,
            shape: str = "square") -> np.ndarray:
    """Getis-Ord Gi* z-scores (float64, NaN where not computed).

    ``values``: (ny, nx) map; ``mask``: (ny, nx) bool tissue. Pixels that are off the mask
    or NaN are neither focal pixels nor neighbours.
    """
    values = np.asarray(values, dtype=np.float64)
    valid = np.asarray(mask, dtype=bool) & np.isfinite(values)
    n = int(valid.sum())
    z = np.full(values.shape, np.nan)
    if n < 3:
        return z
    x = values[valid]
    mean = x.mean()
    std = x.std()
    if std == 0:
        z[valid] = 0.0
        return z
    w = window(radius, shape)
    m = valid.astype(np.float64)
    centred = np.where(valid, values - mean, 0.0)  # centred first: no cancellation
    num = _window_sum(centred, w)
    wsum = _window_sum(m, w)
    w2sum = _window_sum(m, w * w)
    var = (n * w2sum - wsum * wsum) / (n - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        zz = num / (std * np.sqrt(np.maximum(var, 0.0)))
    # A window covering all valid pixels has zero variance: no evidence either way.
    z[valid] = np.where(var[valid] > 1e-12, zz[valid], 0.0)
    return z


def bh_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values) of a 1-D array of p-values."""
    p = np.asarray(p, dtype=np.float64)
    return false_discovery_control(p, method="bh") if p.size else p.copy()


@dataclass(frozen=True)
class Hotspots:
    """Hotspots of one map.

    ``labels``: (ny, nx) int32, 0 = none, k = row k-1 of ``table``; ``table``: one dict per
    hotspot with ``label``, ``area_px``, ``centroid_x``, ``centroid_y`` (MSI pixels,
    0-based), ``mean_value``, ``max_value``, ``max_z``, ``min_q``; ``z`` and ``q``: Gi*
    z-scores and BH q-values per pixel (NaN where not tested); ``params``: the settings.
    """

    labels: np.ndarray
    table: list[dict]
    z: np.ndarray
    q: np.ndarray
    params: dict

    def __len__(self) -> int:
        return len(self.table)


def find_hotspots(
    values: np.ndarray,
    mask: np.ndarray,
    *,
    fdr: float = DEFAULT_FDR,
    min_area_px: int = DEFAULT_MIN_AREA_PX,
    radius: int = DEFAULT_RADIUS_PX,
    shape: str = "square",
    extent: float | None = DEFAULT_EXTENT,
) -> Hotspots:
    """Find hotspots of ``values`` (ny, nx) inside ``mask`` (ny, nx bool).

    ``fdr``: Benjamini–Hochberg level over all valid pixels; ``min_area_px``: smallest
    hotspot (pixels, after trimming); ``radius``/``shape``: Gi* window; ``extent``: trim
    each region to pixels ≥ median + extent·(peak − median) (None keeps the significant
    region as is). Hotspots are numbered by decreasing peak Gi*.
    """
    if not 0 < fdr < 1:
        raise InputError(None, f"FDR must be between 0 and 1, not {fdr}")
    if min_area_px < 1:
        raise InputError(None, f"minimum hotspot area must be at least 1 pixel, not {min_area_px}")
    if extent is not None and not 0 <= extent < 1:
        raise InputError(None, f"hotspot extent must be in [0, 1), not {extent}")
    values = np.asarray(values, dtype=np.float64)
    valid = np.asarray(mask, dtype=bool) & np.isfinite(values)
    z = gi_star(values, valid, radius=radius, shape=shape)
    q = np.full(values.shape, np.nan)
    q[valid] = bh_qvalues(special.ndtr(-z[valid]))
    significant = valid & (q <= fdr) & (z > 0)
    regions, n = ndimage.label(significant, structure=_EIGHT)
    if n and extent is not None:
        regions, n = _trim(regions, n, values, valid, extent)
    labels, table = _measure(regions, n, values, z, q, min_area_px)
    params = {"fdr": fdr, "min_area_px": min_area_px, "radius_px": radius, "window": shape,
              "extent": extent, "n_tested": int(valid.sum())}
    return Hotspots(labels, table, z, q, params)


def _trim(regions: np.ndarray, n: int, values: np.ndarray, valid: np.ndarray,
          extent: float) -> tuple[np.ndarray, int]:
    """Keep each region's pixels at or above its half-way level; relabel the pieces."""
    base = float(np.median(values[valid]))
    index = np.arange(1, n + 1)
    peak = np.asarray(ndimage.labeled_comprehension(
        values, regions, index, lambda v: np.percentile(v, 90), np.float64, np.nan))
    level = np.concatenate([[np.inf], base + extent * (peak - base)])
    keep = (regions > 0) & (values >= level[regions])
    return ndimage.label(keep, structure=_EIGHT)


def _measure(regions: np.ndarray, n: int, values: np.ndarray, z: np.ndarray, q: np.ndarray,
             min_area_px: int) -> tuple[np.ndarray, list[dict]]:
    """Drop small regions, number the rest by decreasing peak z, and tabulate them."""
    labels = np.zeros(regions.shape, dtype=np.int32)
    if n == 0:
        return labels, []
    flat = regions.ravel()
    area = np.bincount(flat, minlength=n + 1)
    rows, cols = np.indices(regions.shape)
    index = np.arange(1, n + 1)
    zmax = ndimage.maximum(z, regions, index)
    order = [k for k in index[np.argsort(-np.asarray(zmax), kind="stable")]
             if area[k] >= min_area_px]
    new = np.zeros(n + 1, dtype=np.int32)
    new[order] = np.arange(1, len(order) + 1)
    labels = new[regions]
    if not order:
        return labels, []
    idx = np.arange(1, len(order) + 1)
    a = np.bincount(labels.ravel(), minlength=len(order) + 1)[1:].astype(np.float64)
    cx = ndimage.sum_labels(cols, labels, idx) / a
    cy = ndimage.sum_labels(rows, labels, idx) / a
    mean = ndimage.mean(values, labels, idx)
    vmax = ndimage.maximum(values, labels, idx)
    zm = ndimage.maximum(z, labels, idx)
    qm = ndimage.minimum(q, labels, idx)
    table = [{"label": int(k), "area_px": int(a[k - 1]), "centroid_x": float(cx[k - 1]),
              "centroid_y": float(cy[k - 1]), "mean_value": float(mean[k - 1]),
              "max_value": float(vmax[k - 1]), "max_z": float(zm[k - 1]),
              "min_q": float(qm[k - 1])} for k in idx]
    return labels, table
