"""Hotspots: Gi* clusters, cluster-mass inference against autocorrelated surrogate maps.

Neighbouring MSI pixels are not independent (laser-spot overlap, diffusion, smooth
biology, ionisation fields), so testing every pixel's Getis-Ord Gi* z-score as if they
were — pixel-level Benjamini–Hochberg — calls dozens of "hotspots" on maps with no niche
at all. Here the unit of inference is the *cluster*, and its null keeps the map's own
spatial autocorrelation:

1. **Transform and scale** (``transform="log"``, default): ``y = log(x + c)`` with
   ``c = 0.01 ×`` the tissue median, so multiplicative (ionisation, TIC) variation is
   additive and right-skewed intensities become near-Gaussian; then
   ``u = (y − median) / (1.4826 · MAD)`` over the valid (tissue, finite) pixels, robust
   so niches do not inflate the scale.
2. **Cluster-forming statistic**: Gi* of ``u`` with the robust centre 0 and scale 1 in
   place of the mean and SD (for pixel i with binary neighbourhood weights w_ij of radius r over
   the n valid pixels: ``Σ_j w_ij u_j / sqrt((n Σ_j w_ij² − (Σ_j w_ij)²) / (n − 1))``),
   divided by κ, its standard deviation under the map's own autocorrelation ρ
   (``κ² = Σ_h ρ(h) (w ⋆ w)(h) / Σ w²``; 1 for independent pixels). Candidate clusters:
   8-connected pixels with ``Gi*/κ > cluster_z`` (default 3.09, one-sided p = 0.001, the
   primary threshold recommended for cluster inference: Woo et al. 2014, NeuroImage
   91:412). Cluster mass = Σ (Gi*/κ − cluster_z) over the cluster (Bullmore et al. 1999,
   IEEE TMI 18:32).
3. **Null**: ``n_surrogates`` Gaussian random fields with the map's autocovariance, measured
   inside the tissue mask and simulated exactly by circulant embedding
   (:mod:`ionmap.regions._surrogates`). Each surrogate goes through steps 1–2 like the map
   (robust scaling, Gi*, κ, threshold) and gives its largest cluster mass. H0 of a map:
   *the map is a stationary Gaussian field with its own autocorrelation — smooth
   gradients allowed, no localised excess*.
4. **p-value** of a cluster = (1 + #{surrogates whose largest mass ≥ its mass}) /
   (1 + n_surrogates): the max-statistic permutation p-value, which controls the
   family-wise error over all clusters of the map (Nichols & Holmes 2002, Hum. Brain
   Mapp. 15:1). q-values: Benjamini–Hochberg over the candidates (here over one map;
   :func:`ionmap.regions.run_hotspots` redoes it over every map of the sample). A cluster
   is *significant* when q ≤ ``fdr``. On a signal-free map P(any significant) ≤ ``fdr``;
   ``benchmarks/bench_calibration.py`` measures the realised rate and the power.

Each cluster, grown by ``radius + 1`` pixels, is then trimmed to its pixels whose own value
is at least half-way from the tissue median to its peak (the 90th percentile of its
values), i.e. its half-maximum extent, so the inside/rim split of the immune context
follows the niche edge, not the Gi* neighbourhood or the threshold; pieces keep their cluster's
p-value; pieces under ``min_area_px`` are dropped.
Gi* sums are convolutions (``scipy.ndimage``); a 300 × 300 map with 199 surrogates takes
about a second. Limits: a map that is zero on most of the tissue (an ion seen only in a few
places) has no robust scale; it gives no hotspots.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..params import HotspotParams
from ._surrogates import SurrogateField

TRANSFORMS = ("log", "none")
#: Offset of the log transform, as a fraction of the tissue median.
LOG_OFFSET = 0.01

_EIGHT = np.ones((3, 3), dtype=bool)
_MAD = 1.4826  # MAD → SD of a Gaussian


def neighbourhood_weights(radius: int, shape: str = "square") -> np.ndarray:
    """Gi* neighbourhood: binary weights w_ij of a (2r+1)² square or a disk of radius r
    pixels (float64), centred on the pixel. (Not the m/z extraction window of a target.)"""
    if radius < 1:
        raise InputError(None, f"Gi* neighbourhood radius must be at least 1 pixel, not {radius}")
    if shape == "square":
        return np.ones((2 * radius + 1,) * 2)
    if shape == "disk":
        yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
        return (xx * xx + yy * yy <= radius * radius).astype(np.float64)
    raise InputError(None, f"unknown Gi* neighbourhood shape {shape!r} (expected square or disk)")


def _neighbourhood_sum(image: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Σ_j w_ij image_j for every pixel i, zero outside the array."""
    if weights.all():  # square neighbourhood: separable running sums
        return ndimage.uniform_filter(image, size=weights.shape, mode="constant") * weights.size
    return ndimage.correlate(image, weights, mode="constant")


class _GiStar:
    """Gi* of standardised values (centre 0, scale 1) on a fixed mask, mask terms cached."""

    def __init__(self, valid: np.ndarray, weights: np.ndarray) -> None:
        self.valid, self.weights = valid, weights
        n = int(valid.sum())
        m = valid.astype(np.float64)
        wsum = _neighbourhood_sum(m, weights)
        var = (n * _neighbourhood_sum(m, weights * weights) - wsum * wsum) / max(n - 1, 1)
        # A neighbourhood covering all valid pixels has zero variance: no evidence either way.
        self.ok = valid & (var > 1e-12)
        self.inv_sd = np.where(self.ok, 1.0 / np.sqrt(np.where(self.ok, var, 1.0)), 0.0)

    def __call__(self, standardised: np.ndarray) -> np.ndarray:
        """Gi* (float64), 0 where not computed; ``standardised`` must be 0 off the mask."""
        return _neighbourhood_sum(standardised, self.weights) * self.inv_sd


def gi_star(values: np.ndarray, mask: np.ndarray, *, radius: int = HotspotParams.radius_px,
            shape: str = "square") -> np.ndarray:
    """Getis-Ord Gi* z-scores (float64, NaN where not computed), with the mean x̄ and
    (population) SD S of the valid pixels:
    ``(Σ_j w_ij x_j − x̄ Σ_j w_ij) / (S sqrt((n Σ_j w_ij² − (Σ_j w_ij)²) / (n − 1)))``.

    ``values``: (ny, nx) map; ``mask``: (ny, nx) bool tissue. Pixels that are off the mask
    or NaN are neither focal pixels nor neighbours. A z-score under spatial randomness
    (independent pixels): not a valid per-pixel test on autocorrelated maps.
    """
    values = np.asarray(values, dtype=np.float64)
    valid = np.asarray(mask, dtype=bool) & np.isfinite(values)
    z = np.full(values.shape, np.nan)
    if valid.sum() < 3:
        return z
    x = values[valid]
    std = x.std()
    if std == 0:
        z[valid] = 0.0
        return z
    centred = np.where(valid, (values - x.mean()) / std, 0.0)  # centred first: no cancellation
    z[valid] = _GiStar(valid, neighbourhood_weights(radius, shape))(centred)[valid]
    return z


def bh_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values) of a 1-D array of p-values."""
    from scipy.stats import false_discovery_control

    p = np.asarray(p, dtype=np.float64)
    return false_discovery_control(p, method="bh") if p.size else p.copy()


@dataclass(frozen=True)
class Hotspots:
    """Hotspots (candidate clusters and their inference) of one map.

    ``labels``: (ny, nx) int32, 0 = none, k = row k-1 of ``table``; ``table``: one dict per
    hotspot with ``label``, ``area_px``, ``centroid_x``, ``centroid_y`` (MSI pixels,
    0-based), ``mean_value``, ``max_value`` (map units), ``max_z`` (peak Gi*/κ),
    ``cluster_mass``, ``hotspot_p`` (max-statistic p-value of its cluster),
    ``hotspot_q`` (BH over this map's candidates) and ``significant`` (q ≤ fdr);
    ``z``: Gi*/κ per pixel (NaN where not computed); ``null_max_mass``: the largest
    cluster mass of each surrogate; ``params``: the settings and κ, the correlation lag.
    """

    labels: np.ndarray
    table: list[dict]
    z: np.ndarray
    null_max_mass: np.ndarray
    params: dict

    def __len__(self) -> int:
        return len(self.table)

    def subset(self, keep: list[bool] | np.ndarray) -> Hotspots:
        """The hotspots whose row has ``keep`` True, renumbered 1.. in the same order."""
        keep = np.asarray(keep, dtype=bool)
        if keep.size != len(self.table):
            raise InputError(None, "keep needs one flag per hotspot")
        new = np.zeros(len(self.table) + 1, dtype=np.int32)
        new[1:][keep] = np.arange(1, int(keep.sum()) + 1)
        table = [{**row, "label": int(new[row["label"]])}
                 for row, k in zip(self.table, keep) if k]
        return replace(self, labels=new[self.labels], table=table)


def robust_standardise(y: np.ndarray, valid: np.ndarray) -> np.ndarray | None:
    """(y − median) / (1.4826 MAD) on ``valid``, 0 elsewhere; None without a scale."""
    v = y[valid]
    if v.size < 3:
        return None
    med = np.median(v)
    scale = _MAD * np.median(np.abs(v - med))
    if not scale > 0:
        return None
    return np.where(valid, (y - med) / scale, 0.0)


def transformed(values: np.ndarray, valid: np.ndarray, transform: str = "log") -> np.ndarray:
    """The map on the scale that is tested: ``log(x + c)`` (c = 0.01 × tissue median of the
    positive values) for ``"log"``, the values themselves for ``"none"``."""
    if transform not in TRANSFORMS:
        raise InputError(None, f"unknown transform {transform!r} (expected "
                               f"{' or '.join(TRANSFORMS)})")
    if transform == "none":
        return np.where(valid, values, 0.0)
    pos = values[valid & (values > 0)]
    if pos.size == 0:
        return np.where(valid, values, 0.0)
    c = LOG_OFFSET * float(np.median(pos))
    return np.where(valid, np.log(np.maximum(np.where(valid, values, 0.0), 0.0) + c), 0.0)


def _inflation(field: SurrogateField, weights: np.ndarray) -> float:
    """κ: SD of Gi* (full neighbourhood) under the field's correlation; 1 for white noise."""
    pairs = ndimage.correlate(np.pad(weights, weights.shape[0] // 2), weights, mode="constant")
    r = pairs.shape[0] // 2
    iy = np.arange(-r, r + 1) % field.torus[0]
    ix = np.arange(-r, r + 1) % field.torus[1]
    rho = field.correlation[np.ix_(iy, ix)]
    return float(np.sqrt(max((rho * pairs).sum() / (weights * weights).sum(), 1e-12)))


def _clusters(t: np.ndarray, valid: np.ndarray, level: float) -> tuple[np.ndarray, int, np.ndarray]:
    """8-connected clusters of t > level: labels, count, and mass Σ (t − level) of each."""
    regions, n = ndimage.label(valid & (t > level), structure=_EIGHT)
    if n == 0:
        return regions, 0, np.zeros(0)
    mass = np.bincount(regions.ravel(), weights=(t - level).ravel(), minlength=n + 1)[1:]
    return regions, n, mass


def find_hotspots(
    values: np.ndarray,
    mask: np.ndarray,
    *,
    fdr: float = HotspotParams.fdr,
    min_area_px: int = HotspotParams.min_area_px,
    radius: int = HotspotParams.radius_px,
    shape: str = "square",
    extent: float | None = HotspotParams.extent,
    cluster_z: float = HotspotParams.cluster_z,
    n_surrogates: int = HotspotParams.n_surrogates,
    transform: str = "log",
    seed: int | np.random.SeedSequence = 0,
    keep: str = "significant",
) -> Hotspots:
    """Find hotspots of ``values`` (ny, nx) inside ``mask`` (ny, nx bool); see the module doc.

    ``fdr``: q-value level for ``significant``; ``min_area_px``: smallest hotspot (pixels,
    after trimming); ``radius``/``shape``: Gi* neighbourhood (pixels); ``extent``: trim each
    cluster to pixels ≥ median + extent·(peak − median) (None keeps the cluster as is);
    ``cluster_z``: cluster-forming threshold on Gi*/κ; ``n_surrogates``: surrogate maps of
    the null (p-values are multiples of 1/(n_surrogates + 1)); ``transform``: "log" or
    "none"; ``seed``: of the surrogates; ``keep``: "significant" (default) or "all"
    candidates (with their p and q). Hotspots are numbered by decreasing peak Gi*/κ.
    """
    if not 0 < fdr < 1:
        raise InputError(None, f"FDR must be between 0 and 1, not {fdr}")
    if min_area_px < 1:
        raise InputError(None, f"minimum hotspot area must be at least 1 pixel, not {min_area_px}")
    if extent is not None and not 0 <= extent < 1:
        raise InputError(None, f"hotspot extent must be in [0, 1), not {extent}")
    if not cluster_z > 0:
        raise InputError(None, f"cluster-forming threshold must be > 0, not {cluster_z}")
    if n_surrogates < 19:
        raise InputError(None, f"at least 19 surrogate maps are needed, not {n_surrogates}")
    if keep not in ("significant", "all"):
        raise InputError(None, f"keep must be 'significant' or 'all', not {keep!r}")
    values = np.asarray(values, dtype=np.float64)
    valid = np.asarray(mask, dtype=bool) & np.isfinite(values)
    weights = neighbourhood_weights(radius, shape)
    params = {"fdr": fdr, "min_area_px": min_area_px, "radius_px": radius, "neighbourhood": shape,
              "extent": extent, "cluster_z": cluster_z, "n_surrogates": n_surrogates,
              "transform": transform, "n_tested": int(valid.sum()), "kappa": float("nan"),
              "max_lag_px": 0}
    z = np.full(values.shape, np.nan)
    u = robust_standardise(transformed(values, valid, transform), valid)
    empty = Hotspots(np.zeros(values.shape, np.int32), [], z, np.zeros(0), params)
    if u is None or valid.sum() < 16:
        return empty
    field = SurrogateField(u, valid)
    gi = _GiStar(valid, weights)
    kappa = _inflation(field, weights)
    params.update(kappa=kappa, max_lag_px=field.max_lag)
    t = gi(u) / kappa
    z[gi.ok] = t[gi.ok]
    regions, n, mass = _clusters(t, gi.ok, cluster_z)
    null = np.zeros(n_surrogates)
    rng = np.random.default_rng(seed)
    for b, g in enumerate(field.draw(rng, n_surrogates)):
        us = robust_standardise(g, valid)
        if us is not None:
            m = _clusters(gi(us) / kappa, gi.ok, cluster_z)[2]
            null[b] = m.max() if m.size else 0.0
    if n == 0:
        return replace(empty, z=z, null_max_mass=null)
    p = (1.0 + (null[None, :] >= mass[:, None]).sum(axis=1)) / (n_surrogates + 1.0)
    if extent is not None:  # let the half-maximum extent reach one neighbourhood beyond
        reach = neighbourhood_weights(radius + 1, "square") > 0
        regions = ndimage.grey_dilation(regions, footprint=reach)
        regions[~valid] = 0
        pieces, n_pieces = _trim(regions, n, values, valid, extent)
    else:
        pieces, n_pieces = regions, n
    parent = (np.asarray(ndimage.maximum(regions, pieces, np.arange(1, n_pieces + 1)),
                         dtype=np.intp) if n_pieces else np.zeros(0, np.intp))
    labels, table = _measure(pieces, n_pieces, values, z, parent, mass, p, min_area_px)
    q = bh_qvalues(np.array([r["hotspot_p"] for r in table]))
    for r, qq in zip(table, q):
        r["hotspot_q"] = float(qq)
        r["significant"] = bool(qq <= fdr)
    hs = Hotspots(labels, table, z, null, params)
    return hs.subset([r["significant"] for r in table]) if keep == "significant" else hs


def sample_significance(found: list[Hotspots], fdr: float = HotspotParams.fdr) -> list[np.ndarray]:
    """Significance over a sample: q-values by Benjamini–Hochberg over every candidate of
    every map in ``found`` (each from ``find_hotspots(..., keep="all")``), written into
    their rows (``hotspot_q``, ``significant``: q ≤ ``fdr``); returns, per map, the flags."""
    q = bh_qvalues(np.array([h["hotspot_p"] for hs in found for h in hs.table]))
    out, i = [], 0
    for hs in found:
        for h in hs.table:
            h["hotspot_q"] = float(q[i])
            h["significant"] = bool(q[i] <= fdr)
            i += 1
        out.append(np.array([h["significant"] for h in hs.table], dtype=bool))
    return out


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


def _measure(regions: np.ndarray, n: int, values: np.ndarray, z: np.ndarray,
             parent: np.ndarray, mass: np.ndarray, p: np.ndarray,
             min_area_px: int) -> tuple[np.ndarray, list[dict]]:
    """Drop small pieces, number the rest by decreasing peak z, and tabulate them."""
    labels = np.zeros(regions.shape, dtype=np.int32)
    if n == 0:
        return labels, []
    area = np.bincount(regions.ravel(), minlength=n + 1)
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
    a = area[order].astype(np.float64)
    cx = ndimage.sum_labels(cols, labels, idx) / a
    cy = ndimage.sum_labels(rows, labels, idx) / a
    mean = ndimage.mean(values, labels, idx)
    vmax = ndimage.maximum(values, labels, idx)
    zm = ndimage.maximum(z, labels, idx)
    src = parent[np.asarray(order) - 1] - 1  # 0-based cluster of each kept piece
    table = [{"label": int(k), "area_px": int(a[k - 1]), "centroid_x": float(cx[k - 1]),
              "centroid_y": float(cy[k - 1]), "mean_value": float(mean[k - 1]),
              "max_value": float(vmax[k - 1]), "max_z": float(zm[k - 1]),
              "cluster_mass": float(mass[src[k - 1]]), "hotspot_p": float(p[src[k - 1]])}
             for k in idx]
    return labels, table
