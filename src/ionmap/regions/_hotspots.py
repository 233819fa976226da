"""Hotspots: multi-scale contrast clusters, inference against autocorrelated surrogate maps.

Neighbouring MSI pixels are not independent (laser-spot overlap, diffusion, smooth
biology, ionisation fields), so testing every pixel's Getis-Ord Gi* z-score as if they
were — pixel-level Benjamini–Hochberg — calls dozens of "hotspots" on maps with no niche
at all. Here the unit of inference is the *cluster*, and its null keeps the map's own
spatial autocorrelation. H0 of a map: *the map is a stationary Gaussian field with its own
autocorrelation — smooth gradients and patches allowed, no localised excess*.

1. **Transform and scale** (``transform="log"``, default): ``y = log(x + c)`` with
   ``c = 0.01 ×`` the tissue median, so multiplicative (ionisation, TIC) variation is
   additive; then scores ``u`` over the valid (tissue, finite) pixels that a niche
   neither compresses nor inflates much (:func:`robust_standardise`: normal scores below
   the median, ``(y − median) / s`` above it with s from the lower quartile; plain normal
   scores would squeeze a large niche into the top ranks, a MAD scale grows with it).
2. **Statistic: local contrast over scales.** At scale (a, b) and pixel i,
   ``T_ab = (mean of u over the square of half-width a − mean over the ring from a to
   b) / sqrt(1/n_in + 1/n_ring) / κ_ab`` (valid pixels only), with κ_ab its standard
   deviation under the map's own correlation model ρ (``κ² = Σ_h ρ(h) (w ⋆ w)(h) / Σ w²``
   for the contrast weights w; 1 for independent pixels). Scales: a = r, 2r + 1, 4r + 3,
   … (r = ``radius``, up to 4) with b the next, while the outer window fits in the map;
   beyond the first, a ring mostly off the tissue is not used. The statistic is the
   largest T over scales: a centre–surround (difference-of-boxes) filter bank as in
   scale-space blob detection (Lindeberg 1998, Int. J. Comput. Vis. 30:79) and the
   variable-window scan statistic (Kulldorff 1997, Commun. Stat. Theory Methods
   26:1481). It tests a *local excess*, not the absolute level: a niche on a low patch of
   a smooth field is found, a smooth gradient is not a hotspot. Candidate clusters:
   8-connected pixels with ``T > cluster_z`` (default 3.09, one-sided p = 0.001: Woo et
   al. 2014, NeuroImage 91:412); each has its peak T and its mass Σ (T − cluster_z)
   (Bullmore et al. 1999, IEEE TMI 18:32). A large window reaches a strong niche from up
   to its half-width away, so a cluster whose peak's winning inner window holds the peak
   of a higher cluster is that cluster's shadow and joins it (before the extent).
3. **Null**: ``n_surrogates`` Gaussian random fields with the map's autocovariance,
   measured inside the tissue mask and simulated exactly by circulant embedding
   (:mod:`ionmap.regions._surrogates`). Each goes through the scores, the statistic and the
   threshold like the map and gives its largest peak and its largest cluster mass.
   Two stages: a niche inflates the covariance it is tested against, so when clusters are
   significant at the first stage or lie beyond every surrogate (in peak or in mass: a
   large niche among many weak candidates, whose BH q cannot reach ``fdr`` with
   p ≥ 1/(n_surrogates + 1)), the covariance is fitted again without them (grown by
   ``radius + 1`` pixels) and the map is tested again (a two-stage robust estimate,
   Cressie & Hawkins 1980, Math. Geol. 12:115). Other maps keep their first-stage null:
   a signal-free map goes on with probability ≤ ``fdr`` + 2/(n_surrogates + 1), and
   leaving out every candidate would cut its highest excursions out of its own null and
   make the test liberal.
4. **p-value** of a cluster: peak and mass combined (Hayasaka & Nichols 2004, NeuroImage
   23:54): each becomes its tail share among the surrogates' largest values, the cluster's
   statistic is the smaller share, and p = (1 + #{surrogates whose own smaller share is as
   small}) / (1 + n_surrogates) — a max-statistic p-value that controls the family-wise
   error over the map's clusters (Nichols & Holmes 2002, Hum. Brain Mapp. 15:1) and is
   sensitive both to small intense and to large faint niches. A cluster past every
   surrogate (in peak or mass) would sit at the floor 1/(n_surrogates + 1), which
   Benjamini–Hochberg over the hundreds of weak candidates of a large map cannot bring
   under ``fdr`` (a 1000 × 1000 map with 30 strong niches gave none); its p is then
   twice the smaller of the two generalised Pareto tail probabilities fitted to the top
   ``TAIL_SHARE`` of the surrogate maxima (Knijnenburg et al. 2009, Bioinformatics
   25:i161; Winkler et al. 2016, NeuroImage 141:502), at least ``P_FLOOR``, at most the
   floor. q-values: Benjamini–Hochberg
   over the candidates (here of one map; :func:`sample_significance` and
   :func:`ionmap.regions.run_hotspots` redo it over every map of the sample). A cluster is
   *significant* when q ≤ ``fdr``. ``benchmarks/bench_calibration.py`` measures the
   realised false hotspots per null map and the power (benchmarks/README.md).

**Extent** (decoupled from the statistic, whose windows would blur it). Each cluster is
grown by ``radius + 1`` pixels (and a plateau wider than the windows, ringed by its edge
contrast, gets its inside back); on the map smoothed by a Gaussian of ``EXTENT_SIGMA``
pixels (normalised convolution on the valid pixels, Knutsson & Westin 1993, CVPR 515) it
keeps the pixels whose *excess over the local background* is at least ``extent`` (0.5:
half maximum) of its plateau, holes filled. Local background: the values of a band of
``EXTENT_BAND`` pixels around the grown cluster spread into it (normalised convolution,
``BACKGROUND_SIGMA`` pixels), so a niche on a gradient keeps its low side; the excess is
the ratio to it minus 1 for ``transform="log"`` (multiplicative niches) and the difference
for ``"none"``. Plateau: the median excess of the *core* of the pixels kept (eroded by
``EXTENT_CORE`` pixels, clear of the blurred edge; its peak for a region too small to
have one), iterated from the whole grown cluster (the two-class threshold of Ridler &
Calvard 1978, IEEE Trans. Syst. Man Cybern. 8:630, with the source level taken from the
core as the adaptive source-to-background thresholds of PET delineation, Nestle et al.
2005, J. Nucl. Med. 46:1342), so variation inside a large niche does not cut it and the edge
does not pull the level down. Pieces keep their cluster's p-value; pieces under
``min_area_px`` are dropped. On soft-edged niches of radius 3.5–10 px (logistic edge of
0.6 px, 3–5× over a smooth background of log-SD 0.3 and pixel scatter 0.15) the median
area is 0.94–0.99 of the disc's (with the mean of all kept pixels it was 1.03–1.36;
the median, not the mean, keeps a large niche over a patchy background whole).
Ratio maps (ions moving in opposite directions) come out smaller, 0.5–0.7 of the disc:
their linear half-maximum lies inside the niche edge (half-way on the log scale
overshoots to 1.3–1.45), so a small ratio-map hotspot may expect too few cells to
call; the single-ion map of the same niche is the one to read.

Cost: window sums through integral images and surrogates in stacks; a 300 × 300 map with
199 surrogates takes about 3–4 s of CPU for one stage and 5 s with a significant cluster
(two stages), against 0.9 s for the single-scale Gi* version it replaced (same machine,
2026-12-02); a third of it is ranking the surrogates' lower halves.
Limits: a map that is zero on most of the tissue (an ion seen only in a few places) has no
robust scale; it gives no hotspots.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage, signal

from ..errors import InputError
from ..params import HotspotParams
from ._surrogates import SurrogateField

TRANSFORMS = ("log", "none")
#: Centre–surround scales of the statistic (inner half-widths r, 2r + 1, 4r + 3, 8r + 7).
N_SCALES = 4
#: Gaussian smoothing (pixels) of the map whose half-way level gives a hotspot's extent.
EXTENT_SIGMA = 1.0
#: Width (pixels) of the band around a hotspot whose median is its local background.
EXTENT_BAND = 4
#: Gaussian SD (pixels) with which the band around a hotspot is spread into it as its
#: local background.
BACKGROUND_SIGMA = 8.0
#: Erosion (pixels) of a hotspot's kept pixels to its core, whose median excess is the
#: plateau of the extent: twice the smoothing, so the core is clear of the blurred edge.
EXTENT_CORE = 2
#: Iterations of the plateau estimate of a hotspot's extent (it converges in a few).
EXTENT_ITERATIONS = 20
#: Share of the surrogate maxima whose generalised Pareto fit gives the p-value of a cluster
#: beyond all of them.
TAIL_SHARE = 0.1
#: Smallest p-value reported (a tail fit says no more than "far beyond the surrogates").
P_FLOOR = 1e-10
#: Offset of the log transform, as a fraction of the tissue median.
LOG_OFFSET = 0.01

_EIGHT = np.ones((3, 3), dtype=bool)
_QUARTILE = 0.6744897501960817  # Φ⁻¹(0.75): (median − Q₂₅) of N(0, 1)


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
    0-based), ``mean_value``, ``max_value`` (map units), ``max_z`` (peak contrast T),
    ``cluster_mass``, ``hotspot_p`` (combined peak/mass max-statistic p-value of its
    cluster), ``hotspot_q`` (BH over this map's candidates) and ``significant`` (q ≤ fdr);
    ``z``: T per pixel (NaN where not computed); ``null_max_mass`` and ``null_max_z``: the
    largest cluster mass and the largest T of each surrogate; ``params``: the settings, κ
    of every scale, the scales, the correlation lag and the pixels the covariance was
    fitted on (``background_px``).
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


def robust_standardise(y: np.ndarray, valid: np.ndarray) -> np.ndarray | None:
    """Scores of ``y`` on ``valid`` (0 elsewhere) that are N(0, 1) for a Gaussian map and
    that a niche neither compresses nor inflates much: below the median, the normal score
    Φ⁻¹((rank − ½)/n) of each value's rank among the n valid pixels (a Gaussian
    anamorphosis of the lower half: Chilès & Delfiner 2012, *Geostatistics*, §6.2; low
    outliers, e.g. the left tail of log intensities, then do not fake a contrast);
    above it, ``(y − median) / s`` with ``s = (median − Q₂₅) / 0.6745``, the scale of
    the lower half, so the upper tail where niches lie keeps its distances. ``y`` is one
    map (ny, nx) or a stack (k, ny, nx), each scored on its own (the surrogates go through
    it like the map). None when a map has no scale."""
    v = y[..., valid]
    n = v.shape[-1]
    if n < 3:
        return None
    order = np.argsort(v, axis=-1, kind="stable")
    ranked = np.take_along_axis(v, order, axis=-1)
    med = 0.5 * (ranked[..., (n - 1) // 2] + ranked[..., n // 2])
    q25 = ranked[..., (n - 1) // 4]
    scale = (med - q25) / _QUARTILE
    if not np.all(scale > 0):
        return None
    out = (v - med[..., None]) / scale[..., None]
    low = _lower_scores(n)
    np.put_along_axis(out, order[..., :low.size], np.broadcast_to(low, (*v.shape[:-1], low.size)),
                      axis=-1)
    result = np.zeros(y.shape)
    result[..., valid] = out
    return result


def _lower_scores(n: int) -> np.ndarray:
    """Normal scores Φ⁻¹((i + ½)/n) of the ranks below the median of n values."""
    from scipy.special import ndtri

    return ndtri((np.arange(n // 2) + 0.5) / n)


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
            self.terms.append((inv_sd / n_in, inv_sd / n_ring, ~good))
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

    def _per_scale(self, u: np.ndarray):
        """(inner half-width, T at that scale) for every scale, −inf where not usable."""
        sums = self._sums(u)
        for (a, b), (w_in, w_ring, unused), k in zip(self.scales, self.terms, self.kappa):
            t = sums[a] * ((w_in + w_ring) / k) - sums[b] * (w_ring / k)
            t[..., unused] = -np.inf  # a scale not usable at a pixel does not compete
            yield a, t

    def __call__(self, u: np.ndarray) -> np.ndarray:
        """The statistic of ``u`` (…, ny, nx), 0 where not computed; ``u`` 0 off the mask."""
        best = np.full(u.shape, -np.inf)
        for _, t in self._per_scale(u):
            np.maximum(best, t, out=best)
        return np.where(self.ok, best, 0.0)

    def winning(self, u: np.ndarray) -> np.ndarray:
        """Inner half-width (pixels) of the scale whose T is the largest, per pixel of ``u``
        (ny, nx)."""
        best, width = np.full(u.shape, -np.inf), np.zeros(u.shape, dtype=np.intp)
        for a, t in self._per_scale(u):
            width = np.where(t > best, a, width)
            np.maximum(best, t, out=best)
        return width


def _shadows(t: np.ndarray, regions: np.ndarray, n: int, width: np.ndarray) -> np.ndarray:
    """For each cluster, the cluster it is a shadow of (itself if none), 1-based, (n + 1,):
    a cluster whose peak's winning inner window holds the peak of a cluster with a higher
    peak owes its contrast to that one (a large window reaches a strong niche from up to
    its half-width away), so it joins it."""
    index = np.arange(1, n + 1)
    peaks = np.asarray(ndimage.maximum_position(t, regions, index)).reshape(n, 2)
    height = t[peaks[:, 0], peaks[:, 1]]
    reach = width[peaks[:, 0], peaks[:, 1]]
    owner = np.arange(n + 1)
    for j in np.argsort(-height, kind="stable"):  # one pass over the clusters, not pixels
        near = (np.abs(peaks[:, 0] - peaks[j, 0]) <= reach[j]) & (
            np.abs(peaks[:, 1] - peaks[j, 1]) <= reach[j]) & (height > height[j])
        if near.any():
            i = int(np.flatnonzero(near)[np.argmax(height[near])])
            owner[j + 1] = owner[i + 1]
    return owner


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
    after trimming); ``radius``/``shape``: half-width (pixels) and shape of the smallest
    centre window of the contrast; ``extent``: trim each cluster to the pixels whose
    smoothed excess over the local background is ≥ extent × its plateau (None keeps the
    cluster as is); ``cluster_z``: cluster-forming threshold on the contrast T;
    ``n_surrogates``: surrogate maps of the null (p-values are multiples of
    1/(n_surrogates + 1), smaller only past every surrogate, from the tail fit);
    ``transform``: "log" or "none"; ``seed``: of the surrogates;
    ``keep``: "significant" (default) or "all" candidates (with their p and q). Hotspots
    are numbered by decreasing peak T (``max_z``; ``z`` holds T per pixel).
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
    neighbourhood_weights(radius, shape)  # checks radius and shape
    params = {"fdr": fdr, "min_area_px": min_area_px, "radius_px": radius, "neighbourhood": shape,
              "extent": extent, "cluster_z": cluster_z, "n_surrogates": n_surrogates,
              "transform": transform, "n_tested": int(valid.sum()), "kappa": float("nan"),
              "max_lag_px": 0}
    z = np.full(values.shape, np.nan)
    y = transformed(values, valid, transform)
    u = robust_standardise(y, valid)
    empty = Hotspots(np.zeros(values.shape, np.int32), [], z, np.zeros(0), params)
    if u is None or valid.sum() < 16:
        return empty
    stat = _LocalContrast(valid, radius, shape)
    field = SurrogateField(u, valid)
    t, regions, n, mass, null, p, beyond = _infer(u, stat, field, cluster_z, n_surrogates,
                                                  seed)
    # Second stage: a niche inflates the covariance it is tested against (its surrogates
    # get blobs as large as itself), so the covariance is fitted again without the
    # clusters significant at the first stage or beyond every surrogate (peak or mass),
    # grown by radius + 1 pixels, and the map is tested again (a two-stage robust
    # estimate: Cressie & Hawkins 1980, Math. Geol. 12:115). A signal-free map gets there
    # with probability ≤ fdr + 2/(n_surrogates + 1); leaving out every candidate instead
    # would cut its highest excursions out of its own null and make the test liberal.
    first = (bh_qvalues(p) <= fdr) | beyond if n else np.zeros(0, bool)
    background = valid
    if first.any():
        out = np.isin(regions, np.flatnonzero(first) + 1)
        background = valid & ~ndimage.binary_dilation(
            out, structure=neighbourhood_weights(radius + 1) > 0)
        if background.sum() >= 16:
            field = SurrogateField(u, background)
            t, regions, n, mass, null, p, _ = _infer(u, stat, field, cluster_z, n_surrogates,
                                                     seed)
    params.update(kappa=[float(k) for k in stat.kappa], max_lag_px=field.max_lag,
                  scales_px=stat.scales, background_px=int(background.sum()))
    z[stat.ok] = t[stat.ok]
    if n == 0:
        return replace(empty, z=z, null_max_mass=null[1], null_max_z=null[0])
    owner = _shadows(t, regions, n, stat.winning(u))
    if (owner[1:] != np.arange(1, n + 1)).any():  # shadows join their cluster: one region
        regions = owner[regions]
        own = np.flatnonzero(owner[1:] == np.arange(1, n + 1))
        mass = np.bincount(owner[1:], weights=mass, minlength=n + 1)[1:][own]
        p = p[own]
        renumber = np.zeros(n + 1, dtype=np.intp)
        renumber[own + 1] = np.arange(1, own.size + 1)
        regions, n = renumber[regions], own.size
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
        pieces, n_pieces = _trim(regions, n, values, valid, extent, transform == "log")
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


def _infer(u: np.ndarray, stat: _LocalContrast, field: SurrogateField, cluster_z: float,
           n_surrogates: int, seed: int | np.random.SeedSequence) -> tuple:
    """One stage of the test: κ of every scale under ``field``, the statistic t of ``u``,
    its clusters (labels, count, mass), the surrogates' (largest peak, largest mass)
    (2, n_surrogates), the clusters' combined p-values and whether each lies beyond every
    surrogate (in peak or in mass)."""
    stat.calibrate(field)
    t = stat(u)
    regions, n, mass = _clusters(t, stat.ok, cluster_z)
    null = np.concatenate([_largest(stat(robust_standardise(g, stat.valid)), stat.ok, cluster_z)
                           for g in field.draw(np.random.default_rng(seed), n_surrogates,
                                               batch=_batch(u.shape))], axis=1)
    peak = np.asarray(ndimage.maximum(t, regions, np.arange(1, n + 1))) if n else np.zeros(0)
    p = _combined_p(np.vstack([peak, mass]), null) if n else np.zeros(0)
    beyond = (peak > null[0].max()) | (mass > null[1].max())
    return t, regions, n, mass, null, p, beyond


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
    p = (1.0 + (reference[None, :] <= combined[:, None]).sum(axis=1)) / (b + 1.0)
    beyond = combined == 0  # past every surrogate in peak or mass: p is at its floor
    if beyond.any():
        far = np.fmin(*(_pareto_tail(null[k], observed[k, beyond]) for k in range(2)))
        # Bonferroni over the two statistics; past the fitted tail's end, the floor
        p[beyond] = np.fmin(p[beyond], np.maximum(2.0 * far, P_FLOOR))
    return p


def _pareto_tail(null: np.ndarray, x: np.ndarray) -> np.ndarray:
    """P(max ≥ x) for values ``x`` beyond the surrogates' largest, from a generalised
    Pareto fit to the top ``TAIL_SHARE`` of the surrogate maxima ``null`` (permutation
    tail approximation: Knijnenburg et al. 2009, Bioinformatics 25:i161; Winkler et al.
    2016, NeuroImage 141:502); NaN where no fit is possible or ``x`` is not beyond. Without
    it every cluster past the surrogates has p = 1/(n_surrogates + 1), and among the many
    weak candidates of a large map Benjamini–Hochberg cannot reach ``fdr`` with that."""
    from scipy.stats import genpareto

    out = np.full(x.shape, np.nan)
    k = max(int(round(TAIL_SHARE * null.size)), 10)
    top = np.sort(null)[-k - 1:]
    u, excess = top[0], top[1:] - top[0]
    if null.size < 2 * k or not np.ptp(excess) > 0:
        return out
    shape, _, scale = genpareto.fit(excess, floc=0.0)
    past = x > null.max()
    out[past] = (k / null.size) * genpareto.sf(x[past] - u, shape, 0.0, scale)
    return out


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


def _normalised_convolution(values: np.ndarray, support: np.ndarray,
                            sigma: float) -> np.ndarray:
    """Gaussian-weighted mean (SD ``sigma`` pixels) of ``values`` over the ``support``
    pixels around every pixel (normalised convolution, Knutsson & Westin 1993, CVPR 515);
    NaN where the support is out of reach."""
    num = ndimage.gaussian_filter(np.where(support, values, 0.0), sigma, mode="constant")
    den = ndimage.gaussian_filter(support.astype(np.float64), sigma, mode="constant")
    return np.where(den > 1e-6, num / np.maximum(den, 1e-6), np.nan)


def _trim(regions: np.ndarray, n: int, values: np.ndarray, valid: np.ndarray,
          extent: float, relative: bool) -> tuple[np.ndarray, int]:
    """Each region's extent (see the module doc), holes filled, pieces relabelled."""
    s = np.where(valid, _normalised_convolution(values, valid, EXTENT_SIGMA), 0.0)
    index = np.arange(1, n + 1)
    reach = np.ones((2 * EXTENT_BAND + 1,) * 2, dtype=bool)
    band = ndimage.grey_erosion(np.where(regions > 0, regions, n + 1), footprint=reach)
    band[(band > n) | (regions > 0) | ~valid] = 0
    # the local background: band values spread into the region (normalised convolution);
    # where the band is too far away, the band's median (or the tissue median)
    base = np.full(n + 1, float(np.median(s[valid])))
    has = np.bincount(band.ravel(), minlength=n + 1) > 0
    has[0] = False
    if has.any():
        base[has] = ndimage.median(s, band, np.flatnonzero(has))
    surface = _normalised_convolution(s, band > 0, BACKGROUND_SIGMA)
    surface = np.where(np.isfinite(surface), surface, base[regions])
    inside = regions > 0
    if relative:  # multiplicative niches: the ratio to the background, 1 = none
        excess = np.where(inside, s / np.where(surface > 0, surface, np.inf) - 1.0, 0.0)
    else:
        excess = np.where(inside, s - surface, 0.0)
    top = np.concatenate([[np.inf], ndimage.maximum(excess, regions, index)])
    # from the whole grown cluster down: started at the peak, the kept pixels of a large
    # niche over a patchy background would be its highest patches, and their core higher
    level = np.full(n + 1, -np.inf)
    level[0] = np.inf
    for _ in range(EXTENT_ITERATIONS):  # plateau: median excess of the kept pixels' core
        kept = ndimage.binary_fill_holes(inside & (excess >= level[regions])) & inside
        # the core leaves out the edge, whose blur would pull the plateau (and the level)
        # down, but keeps the low patches inside (holes filled first: eroding around them
        # would leave only the highest parts); a region without one keeps its peak
        core = np.where(ndimage.binary_erosion(kept, iterations=EXTENT_CORE), regions, 0)
        count = np.bincount(core.ravel(), minlength=n + 1)
        has = np.flatnonzero(count[1:]) + 1
        plateau = top.copy()
        if has.size:
            plateau[has] = ndimage.median(excess, core, has)
        new = extent * plateau
        new[0] = np.inf
        if np.allclose(new, level):
            break
        level = new
    keep = inside & (excess >= level[regions])
    keep = ndimage.binary_fill_holes(keep) & inside
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
