"""What one task computes: spectra of a band -> ion images, TIC, mask, features.

Spectra are read in sub-batches of bounded payload and handed whole to the compiled kernels
(:mod:`ionmap.kernels`); the only per-batch Python work is a vectorised scatter of the
kernels' (spectra × values) results into the band's (planes, rows, x) block.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .. import kernels
from ..batch import SpectrumBatch
from ..recal import Model
from ._plan import Band

#: Payload (bytes of m/z + intensity read from the .ibd) of one sub-batch inside a task.
BATCH_BYTES = 8 * 2**20  # small enough for malloc to reuse the buffers
_ALL_LO = np.array([-np.inf])
_ALL_HI = np.array([np.inf])


@dataclass(frozen=True)
class Extraction:
    """The per-spectrum work of a run.

    Attributes:
        lo, hi: float64 (K,) inclusive target windows in m/z (Th).
        peaks: windows sum picked peaks instead of raw points.
        pick: spectra are profile and must be peak-picked (for ``peaks`` or features).
        snr: peak-picking signal-to-noise threshold.
        axis: float64 (F,) feature m/z axis, or None without features.
        feature_ppm, analyzer, ref_mz: tolerance of feature binning (peak-width law).
        normalize: 'none', 'tic' or 'rms' (the task then also returns the normaliser).
        batch_bytes: payload per sub-batch (bounds task memory).
        recal: the mass error model (:class:`ionmap.recal.Model`) whose shift moves every
            spectrum's windows, or None for the recorded axis.
        references: float64 (R,) reference ions (Th) whose residual error is measured per
            spectrum when ``recal`` is set; residual_ppm: their search half-width.
        profile: spectra are profile (apex fit of the references) rather than centroid.
    """

    lo: np.ndarray
    hi: np.ndarray
    peaks: bool = False
    pick: bool = False
    snr: float = 3.0
    axis: np.ndarray | None = None
    feature_ppm: float = 10.0
    analyzer: str = "tof"
    ref_mz: float = 200.0
    normalize: str = "none"
    batch_bytes: int = BATCH_BYTES
    recal: Model | None = None
    references: np.ndarray | None = None
    residual_ppm: float = 10.0
    profile: bool = True


@dataclass
class BandBlock:
    """A band's output: level-0 rows [y0, y0 + rows) over the full width ``nx``.

    images (K, rows, nx) float32 window sums; tic (rows, nx) float32; mask (rows, nx) bool;
    norm (rows, nx) float64 TIC or RMS when normalising, else None; features (F, rows, nx)
    float32 or None; mass_error (3, rows, nx) float32 with a model: per pixel the median
    error (ppm) of the reference ions on the recorded axis, after the model, and the
    model's offset a(x, y); NaN where no reference was found.
    """

    images: np.ndarray
    tic: np.ndarray
    mask: np.ndarray
    norm: np.ndarray | None
    features: np.ndarray | None
    mass_error: np.ndarray | None = None


def window_bounds(mz: np.ndarray, ppm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive windows [mz·(1 − ppm·1e-6), mz·(1 + ppm·1e-6)] in m/z (Th), float64."""
    mz = np.asarray(mz, dtype=np.float64)
    ppm = np.asarray(ppm, dtype=np.float64)
    return mz * (1 - ppm * 1e-6), mz * (1 + ppm * 1e-6)


def _squared(batch: SpectrumBatch) -> SpectrumBatch:
    # Σ I² through the same exact window-sum kernel as the TIC.
    return replace(batch, intensity=np.square(batch.intensity, dtype=np.float64))


def raw_sums(batch: SpectrumBatch, ex: Extraction, shift: kernels.MassShift | None = None
             ) -> tuple[np.ndarray, np.ndarray | None]:
    """(TIC, window sums over the raw points or None) per spectrum, float64.

    TIC = the sum of all intensities of the raw spectrum (before peak picking). Unless the
    images come from picked peaks (``peaks`` on profile spectra; centroid spectra are their
    own peaks), the target windows ride along in the same kernel call as the TIC (one
    window [-inf, inf] more), so the spectra are scanned once. ``shift`` moves the target
    windows of each spectrum (recalibration); the TIC window is unbounded and unaffected.
    """
    if ex.peaks and ex.pick:
        return kernels.window_sums(batch, _ALL_LO, _ALL_HI)[:, 0], None
    sums = kernels.window_sums(batch, np.r_[ex.lo, _ALL_LO], np.r_[ex.hi, _ALL_HI],
                               shift=shift)
    return sums[:, -1], sums[:, :-1]


def spectrum_norm(batch: SpectrumBatch, tic: np.ndarray, method: str) -> np.ndarray | None:
    """The normaliser per spectrum, float64: the TIC for 'tic', the root mean square of
    the intensities sqrt(Σ I² / n) for 'rms' (0 for an empty spectrum), None for 'none'."""
    if method == "none":
        return None
    if method == "tic":
        return tic
    n = batch.lengths
    sq = kernels.window_sums(_squared(batch), _ALL_LO, _ALL_HI)[:, 0]
    rms = np.zeros(len(batch))
    np.sqrt(sq / np.maximum(n, 1), out=rms, where=n > 0)
    return rms


@dataclass
class SpectrumValues:
    """What a batch of spectra gives without the feature axis, float64 per spectrum:
    ``tic`` (n,), ``norm`` (n,) or None, ``sums`` (K, n) window sums, ``mass_error``
    (3, n) or None (see :func:`mass_errors`); ``peaks``: the picked peaks (on the
    recalibrated m/z with a model), the input of the feature axis and cube, or None."""

    tic: np.ndarray
    norm: np.ndarray | None
    sums: np.ndarray
    mass_error: np.ndarray | None
    peaks: SpectrumBatch | None


def spectrum_values(batch: SpectrumBatch, coords: np.ndarray, ex: Extraction, *,
                    peaks: bool) -> SpectrumValues:
    """The per-spectrum results of ``batch`` (``coords``: the file's 1-based (x, y, z));
    ``peaks``: also return the (recalibrated) picked peaks."""
    x = coords[batch.index, 0].astype(np.intp) - 1
    y = coords[batch.index, 1].astype(np.intp) - 1
    shift = None if ex.recal is None else ex.recal.shift_at(x, y)
    mass_error = None if shift is None else mass_errors(batch, ex, shift)
    tic, sums = raw_sums(batch, ex, shift)
    norm = spectrum_norm(batch, tic, ex.normalize)
    picked = kernels.pick_peaks_batch(batch, snr=ex.snr) if ex.pick else batch
    if sums is None:
        sums = kernels.window_sums(picked, ex.lo, ex.hi, shift=shift)
    if peaks and shift is not None:  # the axis is on the recalibrated m/z, and so the peaks
        picked = kernels.recalibrated(picked, shift)
    return SpectrumValues(tic, norm, sums.T, mass_error, picked if peaks else None)


def empty_block(band: Band, nx: int, ex: Extraction) -> BandBlock:
    """The output block of ``band`` before any spectrum: zeros, mass errors NaN."""
    rows = band.y1 - band.y0
    return BandBlock(
        images=np.zeros((len(ex.lo), rows, nx), np.float32),
        tic=np.zeros((rows, nx), np.float32),
        mask=np.zeros((rows, nx), bool),
        norm=None if ex.normalize == "none" else np.zeros((rows, nx), np.float64),
        features=None if ex.axis is None else np.zeros((len(ex.axis), rows, nx), np.float32),
        mass_error=None if ex.recal is None else np.full((3, rows, nx), np.nan, np.float32),
    )


def scatter(block: BandBlock, y0: int, coords: np.ndarray, index: np.ndarray,
            v: SpectrumValues, ex: Extraction) -> None:
    """Write the values of spectra ``index`` into their pixels of ``block`` (rows from
    ``y0``), binning their peaks to the feature axis when the block has one."""
    y = coords[index, 1].astype(np.intp) - 1 - y0
    x = coords[index, 0].astype(np.intp) - 1
    block.mask[y, x] = True
    if v.mass_error is not None:
        block.mass_error[:, y, x] = v.mass_error
    block.tic[y, x] = v.tic
    if v.norm is not None:
        block.norm[y, x] = v.norm
    block.images[:, y, x] = v.sums
    if ex.axis is not None:
        binned = kernels.bin_to_axis(v.peaks, ex.axis, ppm=ex.feature_ppm,
                                     analyzer=ex.analyzer, ref_mz=ex.ref_mz)
        block.features[:, y, x] = binned.T


def compute_band(src, band: Band, nx: int, ex: Extraction) -> BandBlock:
    """Read band ``band`` of ``src`` (an ImzMLFile) and compute its output block."""
    block = empty_block(band, nx, ex)
    coords = src.coordinates
    # each batch is done with before the next is read: into the thread's kept buffers
    for batch in src.iter_batches(band.spectra, max_bytes=ex.batch_bytes, reuse=True):
        v = spectrum_values(batch, coords, ex, peaks=ex.axis is not None)
        scatter(block, band.y0, coords, batch.index, v, ex)
    return block


def spill_unit(src, unit: Band, ex: Extraction, spill, sampled: np.ndarray,
               builder_options: dict) -> kernels.MzAxisBuilder:
    """First pass of a one-pass feature run: read and pick the spectra of ``unit`` once,
    append their values and peaks to ``spill`` (a :class:`ionmap.store.SpillWriter`,
    closed here) and return an m/z-axis accumulator fed with the peaks of the spectra in
    ``sampled`` (sorted file indices)."""
    builder = kernels.MzAxisBuilder(**builder_options)
    coords = src.coordinates
    for batch in src.iter_batches(unit.spectra, max_bytes=ex.batch_bytes, reuse=True):
        v = spectrum_values(batch, coords, ex, peaks=True)
        spill.append(v.peaks, tic=v.tic, norm=v.norm, sums=v.sums, mass_error=v.mass_error)
        builder.add(v.peaks.take(np.flatnonzero(np.isin(batch.index, sampled))))
    spill.close()
    return builder


def spilled_axis_part(spill, sampled: np.ndarray, builder_options: dict
                      ) -> kernels.MzAxisBuilder:
    """An m/z-axis accumulator fed with the spilled peaks of the spectra in ``sampled``
    (a unit spilled before a resumed run)."""
    builder = kernels.MzAxisBuilder(**builder_options)
    builder.add(spill.peaks.take(np.flatnonzero(np.isin(spill.peaks.index, sampled))))
    return builder


def spilled_band(src, band: Band, nx: int, ex: Extraction, spills: list) -> BandBlock:
    """The output block of ``band`` from the spilled units its rows overlap (their
    :class:`ionmap.store.Spill`), in sub-batches of bounded payload: no imzML read, no
    peak picking; equal bit for bit to :func:`compute_band`."""
    block = empty_block(band, nx, ex)
    coords = src.coordinates
    for spill in spills:
        peaks, values = spill.peaks, spill.values
        y = coords[peaks.index, 1] - 1
        rows = np.flatnonzero((y >= band.y0) & (y < band.y1))
        nbytes = np.diff(peaks.offsets)[rows] * (peaks.mz.itemsize + peaks.intensity.itemsize)
        cuts = np.searchsorted(np.cumsum(nbytes), np.arange(1, -(-int(nbytes.sum()) //
                                                                 ex.batch_bytes)) * ex.batch_bytes)
        for part in np.split(rows, cuts):
            if not part.size:
                continue
            v = SpectrumValues(
                values["tic"][part], values["norm"][part] if "norm" in values else None,
                values["sums"][:, part],
                values["mass_error"][:, part] if "mass_error" in values else None,
                peaks.take(part))
            scatter(block, band.y0, coords, peaks.index[part], v, ex)
    return block


def mass_errors(batch: SpectrumBatch, ex: Extraction, shift: kernels.MassShift) -> np.ndarray:
    """(3, n) per spectrum: median reference error (ppm) on the recorded axis, after the
    model, and the model offset a; NaN where no reference is found near its prediction."""
    err, _, _ = kernels.reference_errors(batch, ex.references, ex.residual_ppm, profile=ex.profile,
                                      shift=shift)
    pred = shift.a[:, None] + shift.b[:, None] * (ex.references[None, :] - shift.m0) / 1000.0
    out = np.full((3, len(batch)), np.nan)
    out[0] = row_nanmedian(err)
    out[1] = row_nanmedian(err - pred)
    out[2] = shift.a
    return out


def row_nanmedian(a: np.ndarray) -> np.ndarray:
    """Per row of the 2-D float array ``a``, the median of its non-NaN values (NaN for a
    row without any), equal bit for bit to ``np.nanmedian(a, axis=1)`` on rows that have
    values: one sort of the whole array (NaN sorts last) and the middle one or two values
    of each row's finite run, where ``np.nanmedian`` goes through masked arrays (several
    times slower on the (spectra × references) arrays of a band)."""
    n, r = a.shape
    out = np.full(n, np.nan)
    if not r:
        return out
    s = np.sort(a, axis=1)
    k = r - np.isnan(a).sum(axis=1)
    rows = np.flatnonzero(k)
    k = k[rows]
    lo = s[rows, (k - 1) // 2]
    hi = s[rows, k // 2]
    out[rows] = (lo + hi) / 2
    return out


def axis_part(src, spectra: np.ndarray, ex: Extraction, builder_options: dict):
    """A streaming m/z-axis accumulator fed with the (picked) peaks of ``spectra``, on
    the recalibrated m/z axis when ``ex.recal`` is set."""
    builder = kernels.MzAxisBuilder(**builder_options)
    coords = src.coordinates
    for batch in src.iter_batches(spectra, max_bytes=ex.batch_bytes, reuse=True):
        peaks = kernels.pick_peaks_batch(batch, snr=ex.snr) if ex.pick else batch
        if ex.recal is not None:
            xy = coords[batch.index].astype(np.intp) - 1
            peaks = kernels.recalibrated(peaks, ex.recal.shift_at(xy[:, 0], xy[:, 1]))
        builder.add(peaks)
    return builder
