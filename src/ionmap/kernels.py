"""Typed Python face of the compiled kernels: peak picking, common m/z axis, binning and
window sums.

Every function works on a whole :class:`~ionmap.batch.SpectrumBatch` (both layouts:
continuous batches share one m/z array, processed batches and peak lists do not). This
module validates the inputs and hands the flat arrays to ``ionmap._peaks``,
``ionmap._binning`` and ``ionmap._windows``, which loop over the spectra in C with the GIL
released, so several threads run kernels in parallel.

Units: m/z in Th, tolerances in ppm of m/z at ``ref_mz`` (see :func:`tolerance_mz`),
intensities as stored. M/z arrays may be float32 or float64; intensities float32, float64
or any integer dtype (converted to float64). M/z values must be ascending (equal values
allowed) within each spectrum; a batch that breaks this raises ``ValueError`` naming the
spectrum's index in the file.
"""
from __future__ import annotations

import inspect
import math
import os
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from . import _binning, _gather, _peaks, _recal, _windows
from .batch import SpectrumBatch
from .errors import InputError

if TYPE_CHECKING:
    from .imzml import ImzMLFile

Analyzer = Literal["tof", "orbitrap", "fticr"]

# Peak width ~ m**p: the one place the analysers' peak-width law lives.
_WIDTH_EXPONENT: dict[str, float] = {"tof": 1.0, "orbitrap": 1.5, "fticr": 2.0}
# Median and MAD are estimated on at most this many evenly spaced points (per spectrum or
# per noise window): selection on a subsample keeps picking at a few ns per point.
_NOISE_SAMPLE = 256
#: From this many windows on, processed spectra are summed by the ordered (galloping) kernel.
_MANY_WINDOWS = 64
#: Checked option sets of :func:`pick_peaks` kept for its next calls (at most this many).
_PICK_SETTINGS: dict[tuple, _peaks.PickSettings] = {}
_PICK_SETTINGS_KEPT = 64
_APEX = {"none": int(_peaks.ApexMode.APEX_NONE), "parabola": int(_peaks.ApexMode.APEX_PARABOLA),
         "gauss": int(_peaks.ApexMode.APEX_GAUSS)}


# --------------------------------------------------------------------------- validation


def _floats(a: np.ndarray) -> np.ndarray:
    """a as a C-contiguous float32/float64 array (other dtypes become float64)."""
    a = np.asarray(a)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    return np.ascontiguousarray(a)


def _arrays(batch: SpectrumBatch
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool, bool]:
    """Checked flat arrays of a batch: (mz, intensity, offsets, mz_starts, shared, checked)."""
    mz = _floats(batch.mz)
    intensity = _floats(batch.intensity)
    offsets = np.ascontiguousarray(batch.offsets, dtype=np.int64)
    starts = np.ascontiguousarray(batch.mz_starts, dtype=np.int64)
    n = len(batch.index)
    if mz.ndim != 1 or intensity.ndim != 1:
        raise InputError(None, "SpectrumBatch: mz and intensity must be 1-D")
    if offsets.shape != (n + 1,) or starts.shape != (n,):
        raise InputError(
            None, f"SpectrumBatch: {n} spectra need {n + 1} offsets and {n} mz_starts, "
                         f"got {offsets.size} and {starts.size}")
    problem = _gather.layout_problem(offsets, starts, intensity.size, mz.size)
    if problem == 1:
        raise InputError(None, "SpectrumBatch: offsets must rise from 0 to len(intensity)")
    if problem == 2:
        raise InputError(None, "SpectrumBatch: mz_starts point outside the mz array")
    return mz, intensity, offsets, starts, bool(n) and batch.shared_mz, bool(batch.checked)


def _unsorted(batch: SpectrumBatch, position: int) -> None:
    if position >= 0:
        raise InputError(
            None, f"spectrum {int(batch.index[position])}: m/z values are not ascending")


def _choice(name: str, value: str, choices: Iterable[str]) -> str:
    if value not in choices:
        raise InputError(
            None, f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _width_exponent(analyzer: str) -> float:
    return _WIDTH_EXPONENT[_choice("analyzer", analyzer, _WIDTH_EXPONENT)]


# --------------------------------------------------------------------------- peak picking


def pick_peaks_batch(
    batch: SpectrumBatch,
    snr: float = 3.0,
    *,
    noise: Literal["mad", "local"] = "mad",
    noise_window: int = 512,
    min_points: int = 4,
    min_separation: float = 0.0,
    separation_unit: Literal["points", "ppm"] = "points",
    apex: Literal["gauss", "parabola", "none"] = "gauss",
    measure: Literal["height", "area"] = "height",
) -> SpectrumBatch:
    """Pick the peaks of every profile spectrum of a batch (centroid data need no picking).

    For each spectrum, the noise is ``sigma = 1.4826 * MAD`` of the intensities around
    their median, over the whole spectrum (``noise="mad"``) or per window of
    ``noise_window`` points with thresholds interpolated linearly between window centres
    (``noise="local"``, for spectra whose noise level drifts); median and MAD come from at
    most 256 evenly spaced points of the spectrum or window. A peak is a local maximum above
    ``median + snr * sigma`` that is carried by at least ``min_points`` consecutive points
    above that threshold, descending from the apex on either side (apex included): this
    rejects single-point spikes and keeps false peaks on noise near zero. A maximum that is
    separated from a higher one, within the points above the threshold, by a valley less
    than ``snr * sigma`` deep is a noise bump on that peak's flank and is dropped. If more
    than half of the points are equal (for example zero-filled spectra) the MAD is 0 and the
    threshold is the median. Spectra of fewer than 3 points have no peaks.

    Args:
        batch: profile spectra (continuous or processed layout).
        snr: threshold in noise sigmas above the median.
        noise: ``"mad"`` (one level per spectrum) or ``"local"`` (windowed).
        noise_window: points per noise window for ``noise="local"`` (>= 16).
        min_points: points above the threshold a peak needs, descending from its apex (>= 1).
        min_separation: of two peaks closer than this, only the higher is kept (greedy from
            the highest); 0 disables it.
        separation_unit: ``"points"`` (distance between apex samples) or ``"ppm"`` (of m/z).
        apex: sub-sample apex: ``"gauss"`` (least-squares parabola through the log of the
            points above half the apex height, at most 8 each side, weighted by intensity
            squared; exact for Gaussian peaks), ``"parabola"`` (three-point parabola on the
            intensities) or ``"none"`` (the highest sample, the middle of a flat top; also
            the fallback when a fit is not a peak shape).
        measure: ``"height"`` (fitted apex intensity) or ``"area"`` (trapezoidal integral of
            the intensities, in intensity x Th, from the apex down to the nearest local
            minimum on each side).

    Returns:
        A peak batch with the same ``index``: processed layout (``mz_starts ==
        offsets[:-1]``), apex m/z and height/area as float64, ascending m/z per spectrum.
    """
    mz, intensity, offsets, starts, shared, checked = _arrays(batch)
    settings = _pick_settings(snr, noise, noise_window, min_points, min_separation,
                              separation_unit, apex, measure)
    n = len(batch.index)
    capacity = intensity.size // 2 + n  # a spectrum of k points has at most k // 2 peaks
    peak_mz = np.empty(capacity)
    peak_value = np.empty(capacity)
    peak_offsets = np.empty(n + 1, dtype=np.int64)
    bad = _peaks.pick(mz, intensity, offsets, starts, shared, checked, settings, peak_mz,
                      peak_value, peak_offsets)
    _unsorted(batch, bad)
    total = int(peak_offsets[-1])
    return SpectrumBatch(index=batch.index, offsets=peak_offsets, mz=peak_mz[:total].copy(),
                         mz_starts=peak_offsets[:-1].copy(), intensity=peak_value[:total].copy(),
                         checked=True)


def pick_peaks(mz: np.ndarray, intensity: np.ndarray, snr: float = 3.0,
               **options) -> tuple[np.ndarray, np.ndarray]:
    """Peaks of one profile spectrum: ``(peak_mz, peak_intensity)``, float64, m/z ascending.

    ``mz`` (Th, ascending) and ``intensity`` have one value per point; ``snr`` and the
    keyword options are those of :func:`pick_peaks_batch`, and so are the peaks (the same
    compiled picker). Made for scripts that pick spectrum by spectrum: the options are
    checked once per distinct set and kept, and 1-D contiguous float32/float64 arrays go to
    the kernel as they are, so a call costs little more than the picking itself.
    """
    key = (snr, *options.items()) if options else snr
    try:
        settings = _PICK_SETTINGS[key]
    except KeyError:
        if len(_PICK_SETTINGS) >= _PICK_SETTINGS_KEPT:
            _PICK_SETTINGS.clear()
        settings = _PICK_SETTINGS[key] = _call_settings(snr, options)
    except TypeError:  # an unhashable option value (a 0-d array, say): checked every call
        settings = _call_settings(snr, options)
    try:
        peaks = _peaks.pick_spectrum(mz, intensity, settings)
    except TypeError:  # not 1-D contiguous float32/float64 arrays of one length
        peaks = _peaks.pick_spectrum(*_one_spectrum(mz, intensity), settings)
    if peaks is None:
        raise InputError(None, "m/z values are not ascending")
    return peaks


def _call_settings(snr: float, options: dict) -> _peaks.PickSettings:
    """The checked settings of a :func:`pick_peaks` call: its options with the defaults of
    :func:`pick_peaks_batch` (unknown names raise TypeError as a call of it would)."""
    call = inspect.signature(pick_peaks_batch).bind(None, snr, **options)
    call.apply_defaults()
    return _pick_settings(*list(call.arguments.values())[1:])


def _one_spectrum(mz: np.ndarray, intensity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One spectrum's arrays as the kernels take them (see :func:`_floats`), shapes checked."""
    mz, intensity = _floats(mz), _floats(intensity)
    if mz.shape != intensity.shape or mz.ndim != 1:
        raise InputError(None, f"mz and intensity must be 1-D of one length, got shapes "
                         f"{mz.shape} and {intensity.shape}")
    return mz, intensity


def _pick_settings(snr: float, noise: str, noise_window: int, min_points: int,
                   min_separation: float, separation_unit: str, apex: str,
                   measure: str) -> _peaks.PickSettings:
    """The checked options of :func:`pick_peaks_batch` in the form the kernel takes."""
    _choice("noise", noise, ("mad", "local"))
    _choice("separation_unit", separation_unit, ("points", "ppm"))
    _choice("measure", measure, ("height", "area"))
    apex_code = _APEX[_choice("apex", apex, _APEX)]
    if not snr >= 0 or not math.isfinite(snr):
        raise InputError(None, f"snr must be a finite number >= 0, got {snr}")
    if int(min_points) < 1 or int(noise_window) < 16:
        raise InputError(None, "min_points must be >= 1 and noise_window >= 16")
    if not min_separation >= 0:
        raise InputError(None, f"min_separation must be >= 0, got {min_separation}")
    return _peaks.PickSettings(float(snr), noise == "local", int(noise_window), _NOISE_SAMPLE,
                               int(min_points), float(min_separation), separation_unit == "ppm",
                               apex_code, measure == "area")


# --------------------------------------------------------------------------- window sums


def _shift_arrays(batch: SpectrumBatch, shift: MassShift | None) -> tuple[np.ndarray, np.ndarray, float]:
    n = len(batch.index)
    if shift is None:
        return np.zeros(n), np.zeros(n), 0.0
    a = np.ascontiguousarray(shift.a, dtype=np.float64)
    b = np.ascontiguousarray(shift.b, dtype=np.float64)
    if a.shape != (n,) or b.shape != (n,) or not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise InputError(None, f"mass shift needs finite a and b for each of the {n} spectra")
    return a, b, float(shift.m0)


class MassShift:
    """Per-spectrum mass error model δ(m) = a + b·(m − m0)/1000 in ppm (m, m0 in Th): an ion
    of exact m/z m is observed at m·(1 + δ(m)·1e-6). ``a``, ``b``: float64 (n_spectra,)."""

    def __init__(self, a: np.ndarray, b: np.ndarray, m0: float) -> None:
        self.a, self.b, self.m0 = a, b, m0


def recalibrated(batch: SpectrumBatch, shift: MassShift) -> SpectrumBatch:
    """The batch on the recalibrated m/z axis: every point's recorded m/z o becomes the exact
    m/z m with o = m·(1 + δ(m)·1e-6) (two fixed-point steps from m = o; the residual is
    below 1e-6 ppm for |b| ≤ 100 ppm/1000 Th). Vectorised over the whole batch; the result
    is in processed layout (a continuous batch's shared axis is moved per spectrum), m/z
    float64, intensities shared with ``batch``. Recalibration leaves the order of points
    unchanged (δ varies by far less than 1e6 ppm per Th)."""
    a, b, m0 = _shift_arrays(batch, shift)
    lengths = np.diff(batch.offsets)
    k = np.repeat(np.arange(len(batch.index)), lengths)
    pos = np.arange(int(batch.offsets[-1])) - np.repeat(batch.offsets[:-1], lengths)
    observed = batch.mz[batch.mz_starts[k] + pos].astype(np.float64)
    exact = observed
    for _ in range(2):
        exact = observed / (1.0 + (a[k] + b[k] * (exact - m0) * 1e-3) * 1e-6)
    return SpectrumBatch(batch.index, batch.offsets, exact,
                         np.ascontiguousarray(batch.offsets[:-1]), batch.intensity)


def window_sums(batch: SpectrumBatch, lo: np.ndarray, hi: np.ndarray,
                reduce: Literal["sum", "max"] = "sum", *,
                shift: MassShift | None = None) -> np.ndarray:
    """Per spectrum and window k, the sum (or max) of the intensities with lo[k] <= mz <= hi[k].

    Args:
        batch: spectra, profile or centroid, either layout. Continuous batches locate each
            window once for the whole batch (unless shifted).
        lo, hi: window bounds in Th, float64 (K,); windows may overlap and need not be
            sorted; a window with hi < lo is empty.
        reduce: ``"sum"`` (float64 accumulation in point order, so equal bit for bit to a
            sequential float64 sum) or ``"max"``.
        shift: per-spectrum mass error (:class:`MassShift`): spectrum k's windows become
            [lo·f, hi·f] with f = 1 + δ_k(centre)·1e-6, which extracts the ions of a
            miscalibrated spectrum exactly as rewriting its m/z values would, without
            touching them. Unbounded windows (the TIC) are not shifted. Many windows on
            processed spectra also take this path (it visits windows in m/z order).

    Returns:
        float64 (n_spectra, K); 0 where a window holds no point.
    """
    mz, intensity, offsets, starts, shared, checked = _arrays(batch)
    _choice("reduce", reduce, ("sum", "max"))
    lo = np.ascontiguousarray(lo, dtype=np.float64)
    hi = np.ascontiguousarray(hi, dtype=np.float64)
    if lo.ndim != 1 or lo.shape != hi.shape:
        raise InputError(
            None, f"lo and hi must be 1-D of one length, got {lo.shape} and {hi.shape}")
    out = np.zeros((len(batch.index), lo.size))
    if shift is None and (shared or lo.size < _MANY_WINDOWS):
        bad = _windows.window_sums(mz, intensity, offsets, starts, shared, checked, lo, hi,
                                   reduce == "max", out)
    else:
        a, b, m0 = _shift_arrays(batch, shift)
        order = np.argsort(lo, kind="stable").astype(np.int64)
        bad = _windows.window_sums_shifted(mz, intensity, offsets, starts, shared, checked,
                                           lo, hi, order, a, b, m0, reduce == "max", out)
    _unsorted(batch, bad)
    return out


def reference_errors(batch: SpectrumBatch, ref_mz: np.ndarray, search_ppm: float, *,
                     profile: bool, shift: MassShift | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mass error of reference ions in every spectrum: (error ppm, apex height, FWHM ppm),
    each (n, R).

    Looks for reference ion j (exact m/z ``ref_mz[j]``, Th) within ±``search_ppm`` of its
    position predicted by ``shift`` (none: its exact m/z), takes the highest point there
    and reports its apex as ``(apex − ref) / ref · 1e6``: on profile spectra a local maximum
    only, apex from a log-parabola through the top three points; on centroid spectra the
    point. NaN error (and height 0) where no such point exists. The FWHM (ppm of the apex
    m/z) comes from the log-parabola's curvature (a Gaussian's σ); NaN for centroid
    spectra.
    """
    mz, intensity, offsets, starts, shared, checked = _arrays(batch)
    ref = np.ascontiguousarray(ref_mz, dtype=np.float64)
    if not search_ppm > 0:
        raise InputError(None, f"search_ppm must be > 0, got {search_ppm}")
    a, b, m0 = _shift_arrays(batch, shift)
    # the kernel searches each spectrum for the references in ascending m/z order
    order = np.argsort(ref, kind="stable")
    ascending = bool((order == np.arange(ref.size)).all())
    err = np.empty((len(batch.index), ref.size))
    height = np.empty_like(err)
    width = np.empty_like(err)
    _unsorted(batch, _recal.reference_errors(mz, intensity, offsets, starts, shared, checked,
                                             ref if ascending else ref[order], a, b, m0,
                                             float(search_ppm), bool(profile), err, height,
                                             width))
    if ascending:
        return err, height, width
    back = np.argsort(order)
    return err[:, back], height[:, back], width[:, back]


# --------------------------------------------------------------------------- m/z axis


def tolerance_mz(mz: float | np.ndarray, ppm: float, analyzer: Analyzer = "tof",
                 ref_mz: float = 200.0) -> float | np.ndarray:
    """Mass tolerance in Th at ``mz`` (Th) for a tolerance of ``ppm`` at ``ref_mz``.

    Peak width grows as m (TOF), m**1.5 (Orbitrap) or m**2 (FT-ICR); all three equal
    ``ppm * 1e-6 * mz`` at ``mz == ref_mz``.
    """
    p = _width_exponent(analyzer)
    return ppm * 1e-6 * ref_mz * (np.asarray(mz, dtype=np.float64) / ref_mz) ** p


def _tolerance_coordinate(mz: np.ndarray, ppm: float, analyzer: str, ref_mz: float) -> np.ndarray:
    """u(mz): integral of dm / tolerance_mz(m) from ref_mz, so one tolerance is one unit of u."""
    p, eps, t = _width_exponent(analyzer), ppm * 1e-6, np.asarray(mz, dtype=np.float64) / ref_mz
    return np.log(t) / eps if p == 1 else (t ** (1 - p) - 1) / ((1 - p) * eps)


def _from_tolerance_coordinate(u: np.ndarray, ppm: float, analyzer: str, ref_mz: float) -> np.ndarray:
    """Inverse of :func:`_tolerance_coordinate`: m/z in Th."""
    p, eps = _width_exponent(analyzer), ppm * 1e-6
    return ref_mz * (np.exp(u * eps) if p == 1 else (1 + (1 - p) * eps * u) ** (1 / (1 - p)))


class MzAxisBuilder:
    """Streaming accumulator for a common m/z axis from peak batches, in bounded memory.

    Peaks go to a grid of ``cells_per_tolerance`` cells per tolerance (ppm-spaced for TOF):
    per cell, the number of peaks (a spectrum counts at most once per cell) and the sum of
    their exact positions inside the cell, both integers. Memory depends on the m/z range
    and the tolerance only (12 bytes per cell, about 18 MB for 50-2000 Th at 10 ppm TOF),
    never on the number of spectra, and the result does not depend on how the spectra are
    split into batches, in which order they come, or how builders are merged.

    ``add`` and ``merge`` may be called from several threads; a builder pickles, so Dask
    tasks can each fill one and merge them.
    """

    def __init__(self, ppm: float = 10.0, analyzer: Analyzer = "tof", ref_mz: float = 200.0,
                 min_fraction: float = 0.01, cells_per_tolerance: int = 4) -> None:
        _width_exponent(analyzer)
        if not ppm > 0 or not ref_mz > 0 or not 0 <= min_fraction <= 1 or cells_per_tolerance < 1:
            raise InputError(None, "need ppm > 0, ref_mz > 0, 0 <= min_fraction <= 1 and "
                             "cells_per_tolerance >= 1")
        self.ppm, self.analyzer, self.ref_mz = float(ppm), analyzer, float(ref_mz)
        self.min_fraction, self.cells = float(min_fraction), int(cells_per_tolerance)
        self.n_spectra = 0
        self._origin = 0  # grid cell of element 0 of the accumulators
        self._count = np.zeros(0, dtype=np.uint32)
        self._frac = np.zeros(0, dtype=np.uint64)
        self._lock = threading.Lock()

    def _settings(self) -> tuple:
        return self.ppm, self.analyzer, self.ref_mz, self.cells

    def _cover(self, first: int, last: int) -> None:
        """Grow the accumulators to cover grid cells first..last (lock held)."""
        size = self._count.size
        lo = min(first, self._origin) if size else first
        hi = max(last, self._origin + size - 1) if size else last
        if size and lo == self._origin and hi == self._origin + size - 1:
            return
        count = np.zeros(hi - lo + 1, dtype=np.uint32)
        frac = np.zeros(hi - lo + 1, dtype=np.uint64)
        at = self._origin - lo
        count[at:at + size] = self._count
        frac[at:at + size] = self._frac
        self._origin, self._count, self._frac = lo, count, frac

    def add(self, peaks: SpectrumBatch) -> None:
        """Add a batch of peak lists (e.g. from :func:`pick_peaks_batch` or centroid data)."""
        mz, _, offsets, starts, shared, _ = _arrays(peaks)
        if mz.size and not (np.isfinite(mz).all() and mz.min() > 0):
            raise InputError(None, "peak m/z values must be finite and > 0")
        u = _tolerance_coordinate(mz, self.ppm, self.analyzer, self.ref_mz)
        with self._lock:
            if u.size:
                self._cover(math.floor(u.min() * self.cells), math.floor(u.max() * self.cells))
                _unsorted(peaks, _binning.axis_add(u, offsets, starts, shared, float(self.cells),
                                                   self._origin, self._count, self._frac))
            self.n_spectra += len(peaks.index)

    def merge(self, other: MzAxisBuilder) -> None:
        """Add everything ``other`` has accumulated (same settings required)."""
        if other._settings() != self._settings():
            raise InputError(None, "cannot merge MzAxisBuilders with different settings")
        with other._lock:
            origin, count, frac, n = other._origin, other._count.copy(), other._frac.copy(), other.n_spectra
        with self._lock:
            if count.size:
                self._cover(origin, origin + count.size - 1)
                at = origin - self._origin
                self._count[at:at + count.size] += count
                self._frac[at:at + count.size] += frac
            self.n_spectra += n

    def finish(self) -> np.ndarray:
        """Feature m/z values (Th, float64, ascending) of the peaks added so far.

        Features are found densest first: a window of +-1 tolerance is moved to the mean
        of the peaks in it (mean shift) and takes them; a feature needs at least
        ``min_fraction`` times as many peaks as spectra were added (a spectrum counts once
        per grid cell). Its m/z is the mean of its peaks.
        """
        with self._lock:
            count, frac, origin, n = self._count, self._frac, self._origin, self.n_spectra
            min_count = max(1, math.ceil(self.min_fraction * n * (1 - 1e-12)))
            occupied = np.flatnonzero(count)
            if not occupied.size:
                return np.zeros(0)
            # peaks within +-1 tolerance of each occupied cell: the order in which cells seed features
            csum = np.concatenate(([0], np.cumsum(count, dtype=np.int64)))
            g = self.cells
            near = csum[np.minimum(occupied + g + 1, count.size)] - csum[np.maximum(occupied - g, 0)]
            seeds = occupied[near >= min_count]
            seeds = np.ascontiguousarray(seeds[np.lexsort((seeds, -near[near >= min_count]))])
            cells = np.empty(seeds.size)
            n_feat = _binning.axis_group(count, frac, seeds, g, min_count, cells)
        u = (origin + cells[:n_feat]) / g
        return np.sort(_from_tolerance_coordinate(u, self.ppm, self.analyzer, self.ref_mz))

    def __getstate__(self) -> dict:
        with self._lock:
            state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def build_mz_axis(peak_batches: Iterable[SpectrumBatch], ppm: float = 10.0,
                  analyzer: Analyzer = "tof", ref_mz: float = 200.0,
                  min_fraction: float = 0.01, cells_per_tolerance: int = 4) -> np.ndarray:
    """Common m/z axis (Th, float64, ascending) from peak batches of all or a sample of spectra.

    Peaks within ``tolerance_mz(m, ppm, analyzer, ref_mz)`` of each other are grouped into
    features; features seen in fewer than ``min_fraction`` of the spectra are dropped. See
    :class:`MzAxisBuilder`, which this streams the batches through in bounded memory.
    """
    builder = MzAxisBuilder(ppm, analyzer, ref_mz, min_fraction, cells_per_tolerance)
    for batch in peak_batches:
        builder.add(batch)
    return builder.finish()


# --------------------------------------------------------------------------- binning


def bin_to_axis(batch: SpectrumBatch, axis: np.ndarray, ppm: float = 10.0,
                analyzer: Analyzer = "tof", ref_mz: float = 200.0,
                reduce: Literal["sum", "max"] = "sum") -> np.ndarray:
    """Dense block of a batch on a common axis: float32 (n_spectra, len(axis)).

    Each point (peak) goes to the nearest feature of ``axis`` (Th, strictly ascending; the
    lower one on a tie) if it lies within ``tolerance_mz(feature, ppm, analyzer, ref_mz)``
    of it; points of one spectrum in one feature are summed (or their max taken) in float64,
    then stored as float32. Features without a point are 0.
    """
    mz, intensity, offsets, starts, shared, checked = _arrays(batch)
    _choice("reduce", reduce, ("sum", "max"))
    axis = np.ascontiguousarray(axis, dtype=np.float64)
    if axis.ndim != 1 or not (np.diff(axis) > 0).all():
        raise InputError(None, "axis must be a 1-D array of strictly ascending m/z values")
    out = np.zeros((len(batch.index), axis.size), dtype=np.float32)
    if axis.size:
        tol = np.ascontiguousarray(tolerance_mz(axis, ppm, analyzer, ref_mz))
        _unsorted(batch, _binning.bin_peaks(mz, intensity, offsets, starts, shared, checked,
                                            axis, tol, reduce == "max", out))
    return out


def ion_images(source: str | os.PathLike | ImzMLFile, mz: Iterable[float] | np.ndarray,
               ppm: float = 10.0, *, reduce: Literal["sum", "max"] = "sum",
               fill: float = np.nan,
               storage_options: Mapping[str, Any] | None = None) -> np.ndarray:
    """Ion images of an imzML file in memory, straight from its spectra: for each m/z in
    ``mz`` (Th), the sum (or max) per spectrum of the intensities with
    ``mz·(1 − ppm·10⁻⁶) ≤ m/z ≤ mz·(1 + ppm·10⁻⁶)`` (:func:`window_sums`, batch by batch,
    memory bounded by the batch size and the images).

    ``source``: an :class:`~ionmap.imzml.ImzMLFile` or a path/URL (opened with
    ``storage_options``). Returns float64 ``(len(mz), ny, nx)`` on the file's grid
    (pixel (x, y) is element ``[:, y − 1, x − 1]``), ``fill`` where a pixel has no
    spectrum. The recorded m/z axis as it is: no recalibration, normalisation, annotation
    or store; :func:`ionmap.convert` does those and keeps the result.
    """
    from .imzml import ImzMLFile, open_imzml  # the reader is the layer beside; loaded on use

    f = source if isinstance(source, ImzMLFile) else open_imzml(source, storage_options)
    centre = np.asarray(mz, dtype=np.float64).reshape(-1)
    if not ppm > 0:
        raise InputError(f.url, f"the m/z window must be a positive ppm, not {ppm}")
    lo, hi = centre * (1.0 - ppm * 1e-6), centre * (1.0 + ppm * 1e-6)
    ny, nx = f.shape
    out = np.full((centre.size, ny * nx), fill, dtype=np.float64)
    pixel = (f.coordinates[:, 1] - 1) * nx + (f.coordinates[:, 0] - 1)
    for batch in f.iter_batches(reuse=True):
        out[:, pixel[batch.index]] = window_sums(batch, lo, hi, reduce).T
    return out.reshape(centre.size, ny, nx)
