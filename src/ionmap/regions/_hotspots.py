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
from scipy import ndimage, signal
from scipy.stats import norm, rankdata

from ..errors import InputError
from ..params import HotspotParams
from ._surrogates import SurrogateField

#: Defaults of :func:`find_hotspots` (from :class:`ionmap.params.HotspotParams`).
DEFAULT_FDR = HotspotParams.fdr
DEFAULT_RADIUS_PX = HotspotParams.radius_px
DEFAULT_MIN_AREA_PX = HotspotParams.min_area_px
DEFAULT_EXTENT = HotspotParams.extent
DEFAULT_CLUSTER_Z = HotspotParams.cluster_z
DEFAULT_SURROGATES = HotspotParams.n_surrogates
TRANSFORMS = ("log", "none")
#: Centre–surround scales of the statistic (inner half-widths r, 2r + 1, 4r + 3, 8r + 7).
N_SCALES = 4
#: Offset of the log transform, as a fraction of the tissue median.
LOG_OFFSET = 0.01

_EIGHT = np.ones((3, 3), dtype=bool)


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
    """Σ_j w_ij image_j for every pixel i, zero outside the array (``weights`` symmetric)."""
    if weights.all():  # square window: separable running sums
        return ndimage.uniform_filter(image, size=weights.shape, mode="constant") * weights.size
    if weights.shape[0] > 7:  # large disk: by FFT
        return signal.fftconvolve(image, weights, mode="same")
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


def gi_star(values: np.ndarray, mask: np.ndarray, *, radius: int = DEFAULT_RADIUS_PX,
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
    null_max_z: np.ndarray | None = None

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


def normal_scores(y: np.ndarray, valid: np.ndarray) -> np.ndarray | None:
    """Gaussian anamorphosis of ``y`` on ``valid`` (ny, nx), 0 elsewhere: each value goes to
    the standard-normal quantile Φ⁻¹((rank − ½)/n) of its rank among the n valid pixels
    (ties share their mean rank), so the map is N(0, 1) whatever its distribution (the
    normal-score transform of geostatistics: Chilès & Delfiner 2012, *Geostatistics*,
    §6.2). ``y`` is one map (ny, nx) or a stack (k, ny, nx), each scored on its own: the
    surrogates go through it like the map. None when a map has no scale (MAD 0)."""
    v = y[..., valid]
    if v.shape[-1] < 3:
        return None
    med = np.median(v, axis=-1, keepdims=True)
    if not np.all(np.median(np.abs(v - med), axis=-1) > 0):
        return None
    out = np.zeros(y.shape)
    out[..., valid] = norm.ppf((rankdata(v, axis=-1) - 0.5) / v.shape[-1])
    return out


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


def _scales(radius: int, shape: tuple[int, int]) -> list[tuple[int, int]]:
    """(inner, outer) half-widths in pixels of the centre–surround windows: inner
    r, 2r + 1, 4r + 3, … each with the next as its outer edge, while the outer window
    (2·outer + 1 pixels across) fits in the map."""
    sizes = [radius]
    while len(sizes) <= N_SCALES and 2 * (2 * sizes[-1] + 1) + 1 <= max(shape):
        sizes.append(2 * sizes[-1] + 1)
    if len(sizes) == 1:
        sizes.append(2 * radius + 1)
    return list(zip(sizes[:-1], sizes[1:]))


class _LocalContrast:
    """Centre–surround contrast of standardised values on a fixed mask, over several scales.

    At scale (a, b) and pixel i: ``T = mean(u over the inner window of half-width a) −
    mean(u over the ring between a and b)``, both over valid pixels, divided by its SD for
    independent unit-variance pixels, ``sqrt(1/n_inner + 1/n_ring)``, and by κ_ab, the
    inflation of that SD under the map's own autocorrelation. The statistic is the largest
    of the scales at each pixel. Mask terms are cached; κ comes from :meth:`calibrate`.
    Square windows are summed through an integral image, for a stack of maps at once.
    """

    def __init__(self, valid: np.ndarray, radius: int, shape: str) -> None:
        self.valid, self.shape = valid, shape
        self.scales = _scales(radius, valid.shape)
        self.sizes = sorted({s for pair in self.scales for s in pair})
        count = self._sums(valid.astype(np.float64))
        self.terms, self.ok = [], np.zeros(valid.shape, dtype=bool)
        full = {s: neighbourhood_weights(s, shape).sum() for s in self.sizes}
        for k, (a, b) in enumerate(self.scales):
            n_in, n_ring = np.rint(count[a]), np.rint(count[b] - count[a])
            # beyond the first scale, a window mostly off the tissue is not used there
            least = 0.5 * (full[b] - full[a]) if k else 0.5
            good = valid & (n_in > 0) & (n_ring > least)
            n_in, n_ring = np.where(good, n_in, 1.0), np.where(good, n_ring, 1.0)
            inv_sd = np.where(good, 1.0 / np.sqrt(1.0 / n_in + 1.0 / n_ring), 0.0)
            self.terms.append((inv_sd / n_in, inv_sd / n_ring))
            self.ok |= good
        self.kappa = np.ones(len(self.scales))

    def _sums(self, u: np.ndarray) -> dict[int, np.ndarray]:
        """Σ of ``u`` (…, ny, nx) over the window of every half-width, zero outside."""
        if self.shape != "square":
            return {s: np.stack([_neighbourhood_sum(x, neighbourhood_weights(s, self.shape))
                                 for x in u.reshape(-1, *u.shape[-2:])]).reshape(u.shape)
                    for s in self.sizes}
        ny, nx = u.shape[-2:]
        top = max(self.sizes)
        table = np.zeros((*u.shape[:-2], ny + 1, nx + 1))
        np.cumsum(np.cumsum(u, axis=-2), axis=-1, out=table[..., 1:, 1:])
        # edge padding clips every window to the array: padded row k is row clip(k − top)
        pad = [(0, 0)] * (u.ndim - 2) + [(top, top), (top, top)]
        table = np.pad(table, pad, mode="edge")
        out = {}
        for s in self.sizes:
            hy, ly = slice(top + s + 1, top + s + 1 + ny), slice(top - s, top - s + ny)
            hx, lx = slice(top + s + 1, top + s + 1 + nx), slice(top - s, top - s + nx)
            out[s] = (table[..., hy, hx] - table[..., hy, lx]
                      - table[..., ly, hx] + table[..., ly, lx])
        return out

    def calibrate(self, field: SurrogateField) -> np.ndarray:
        """κ of every scale under ``field``'s correlation (1 for white noise)."""
        out = []
        for a, b in self.scales:
            inner = np.pad(neighbourhood_weights(a, self.shape), b - a)
            ring = neighbourhood_weights(b, self.shape) - inner
            w = inner / inner.sum() - ring / ring.sum()
            pairs = signal.fftconvolve(w, w[::-1, ::-1])  # (w ⋆ w)(h), lags ±2b
            dy, dx = np.mgrid[-2 * b:2 * b + 1, -2 * b:2 * b + 1]
            var = float((field.model(dy, dx) * pairs).sum())
            out.append(np.sqrt(max(var, 1e-12) / (w * w).sum()))
        self.kappa = np.array(out)
        return self.kappa

    def __call__(self, u: np.ndarray) -> np.ndarray:
        """The statistic of ``u`` (…, ny, nx), 0 where not computed; ``u`` 0 off the mask."""
        sums = self._sums(u)
        best = np.full(u.shape, -np.inf)
        for (a, b), (w_in, w_ring), k in zip(self.scales, self.terms, self.kappa):
            t = sums[a] * ((w_in + w_ring) / k) - sums[b] * (w_ring / k)
            np.maximum(best, t, out=best)
        return np.where(self.ok, best, 0.0)


def _clusters(t: np.ndarray, valid: np.ndarray, level: float) -> tuple[np.ndarray, int, np.ndarray]:
    """8-connected clusters of t > level: labels, count, and mass Σ (t − level) of each."""
    regions, n = ndimage.label(valid & (t > level), structure=_EIGHT)
    if n == 0:
        return regions, 0, np.zeros(0)
    mass = np.bincount(regions.ravel(), weights=(t - level).ravel(), minlength=n + 1)[1:]
    return regions, n, mass


def _largest(t: np.ndarray, valid: np.ndarray, level: float) -> np.ndarray:
    """(2, k): the largest value and the largest cluster mass of each map of the stack
    ``t`` (k, ny, nx), clusters as in :func:`_clusters` (labelled in one pass: a stack
    is labelled plane by plane in raster order, so each plane's labels are contiguous)."""
    flat = t[:, valid]
    out = np.zeros((2, t.shape[0]))
    out[0] = flat.max(axis=1)
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = _EIGHT
    regions, n = ndimage.label(valid & (t > level), structure=structure)
    if n:
        mass = np.bincount(regions.ravel(), weights=(t - level).ravel(), minlength=n + 1)
        ends = np.maximum.accumulate(regions.reshape(t.shape[0], -1).max(axis=1))
        plane = np.searchsorted(ends, np.arange(1, n + 1))  # plane b holds (ends[b-1], ends[b]]
        np.maximum.at(out[1], plane, mass[1:])
    return out


def find_hotspots(
    values: np.ndarray,
    mask: np.ndarray,
    *,
    fdr: float = DEFAULT_FDR,
    min_area_px: int = DEFAULT_MIN_AREA_PX,
    radius: int = DEFAULT_RADIUS_PX,
    shape: str = "square",
    extent: float | None = DEFAULT_EXTENT,
    cluster_z: float = DEFAULT_CLUSTER_Z,
    n_surrogates: int = DEFAULT_SURROGATES,
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

    params = {"fdr": fdr, "min_area_px": min_area_px, "radius_px": radius, "neighbourhood": shape,
              "extent": extent, "cluster_z": cluster_z, "n_surrogates": n_surrogates,
              "transform": transform, "n_tested": int(valid.sum()), "kappa": float("nan"),
              "max_lag_px": 0}
    z = np.full(values.shape, np.nan)
    y = transformed(values, valid, transform)
    u = normal_scores(y, valid)
    empty = Hotspots(np.zeros(values.shape, np.int32), [], z, np.zeros(0), params)
    if u is None or valid.sum() < 16:
        return empty
    stat = _LocalContrast(valid, radius, shape)
    field = SurrogateField(u, valid)
    stat.calibrate(field)
    t = stat(u)
    # Refit: the covariance again without the candidate clusters (and a window around
    # them), so that a niche does not inflate its own null (a two-stage robust estimate,
    # Cressie & Hawkins 1980). The scores stay those of all pixels: re-ranking without the
    # candidates would push them higher on signal-free maps.
    candidates = _clusters(t, stat.ok, cluster_z)[0] > 0
    background = valid & ~ndimage.binary_dilation(candidates, structure=neighbourhood_weights(radius + 1) > 0)
    if candidates.any() and background.sum() >= 16:
        field = SurrogateField(u, background)
        stat.calibrate(field)
        t = stat(u)
    params.update(kappa=[float(k) for k in stat.kappa], max_lag_px=field.max_lag,
                  scales_px=stat.scales, background_px=int(background.sum()))
    z[stat.ok] = t[stat.ok]
    regions, n, mass = _clusters(t, stat.ok, cluster_z)
    null = np.concatenate([_largest(stat(normal_scores(g, valid)), stat.ok, cluster_z)
                           for g in field.draw(np.random.default_rng(seed), n_surrogates,
                                               batch=_batch(values.shape))], axis=1)
    if n == 0:
        return replace(empty, z=z, null_max_mass=null[1], null_max_z=null[0])
    peak = np.asarray(ndimage.maximum(t, regions, np.arange(1, n + 1)))
    p = _combined_p(np.vstack([peak, mass]), null)
    order = np.argsort(p, kind="stable")  # clusters by p: a piece takes its best cluster's
    rank = np.zeros(n + 1, dtype=np.intp)
    rank[order + 1] = np.arange(1, n + 1)
    regions = rank[regions]
    mass, p = mass[order], p[order]
    if extent is not None:  # let the half-maximum extent reach one window beyond
        regions = ndimage.grey_erosion(np.where(regions > 0, regions, n + 1),
                                       footprint=neighbourhood_weights(radius + 1, "square") > 0)
        regions[(regions > n) | ~valid] = 0
        # a plateau wider than the windows is ringed by its edge contrast: its inside
        # (a hole of the grown clusters) goes to the nearest cluster
        hole = ndimage.binary_fill_holes(regions > 0) & (regions == 0) & valid
        if hole.any():
            near = ndimage.distance_transform_edt(regions == 0, return_distances=False,
                                                  return_indices=True)
            regions[hole] = regions[tuple(near)][hole]
        pieces, n_pieces = _trim(regions, n, y, valid, extent)
    else:
        pieces, n_pieces = regions, n
    parent = (np.asarray(ndimage.minimum(regions, pieces, np.arange(1, n_pieces + 1)),
                         dtype=np.intp) if n_pieces else np.zeros(0, np.intp))
    labels, table = _measure(pieces, n_pieces, values, z, parent, mass, p, min_area_px)
    q = bh_qvalues(np.array([r["hotspot_p"] for r in table]))
    for r, qq in zip(table, q):
        r["hotspot_q"] = float(qq)
        r["significant"] = bool(qq <= fdr)
    hs = Hotspots(labels, table, z, null[1], params, null[0])
    return hs.subset([r["significant"] for r in table]) if keep == "significant" else hs


def _batch(shape: tuple[int, int]) -> int:
    """Surrogates evaluated together: about 2 million pixels (≈ 16 MB per float64 stack)."""
    return int(np.clip(2_000_000 // (shape[0] * shape[1]), 1, 64))


def _combined_p(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Max-statistic p-values of clusters from their peak height and their mass together
    (Hayasaka & Nichols 2004, NeuroImage 23:54): ``observed`` (2, n) and ``null`` (2, B)
    hold (peak, mass) of each cluster and (largest peak, largest mass) of each surrogate;
    each statistic becomes its tail share among the surrogates, a cluster's combined
    statistic is the smaller of its two, and its p-value is the share of surrogates whose
    own combined statistic is as small (their smaller share, with themselves counted)."""
    b = null.shape[1]
    tail = (null[:, None, :] >= observed[:, :, None]).sum(axis=2) / b      # (2, n)
    own = (null[:, None, :] >= null[:, :, None]).sum(axis=2) / b           # (2, B)
    combined, reference = tail.min(axis=0), own.min(axis=0)
    return (1.0 + (reference[None, :] <= combined[:, None]).sum(axis=1)) / (b + 1.0)


def sample_significance(found: list[Hotspots], fdr: float = DEFAULT_FDR) -> list[np.ndarray]:
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
    """Keep each region's pixels at or above its half-way level, holes filled; relabel the
    pieces."""
    base = float(np.median(values[valid]))
    index = np.arange(1, n + 1)
    peak = np.asarray(ndimage.labeled_comprehension(
        values, regions, index, lambda v: np.percentile(v, 90), np.float64, np.nan))
    level = np.concatenate([[np.inf], base + extent * (peak - base)])
    keep = (regions > 0) & (values >= level[regions])
    keep = ndimage.binary_fill_holes(keep) & (regions > 0)
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
