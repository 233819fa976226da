"""Peak picking against planted Gaussian peaks and against pyopenms PeakPickerHiRes.

``planted_spectra``, ``score_picks`` and ``openms_pick`` are also used by
benchmarks/bench_peaks.py, so the benchmark measures exactly what these tests assert.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ionmap.batch import SpectrumBatch
from ionmap.kernels import pick_peaks, pick_peaks_batch

FWHM_PER_SD = 2.0 * np.sqrt(2.0 * np.log(2.0))


def planted_spectra(n_spectra: int, n_points: int, *, resolving_power: float = 20_000.0,
                    points_per_fwhm: float = 6.0, mz_start: float = 500.0,
                    peaks_per_spectrum: int = 20, snr: tuple[float, float] = (10.0, 1000.0),
                    noise: float = 1.0, seed: int = 0, dtype=np.float64
                    ) -> tuple[SpectrumBatch, list[tuple[np.ndarray, np.ndarray]]]:
    """Profile spectra with planted Gaussian peaks on half-normal noise, as a continuous batch.

    The m/z axis is TOF-like (m/z = (a + b t)**2 for sample t) with ``points_per_fwhm``
    points per FWHM (= m/z / resolving_power) at ``mz_start`` and more above. Peak heights
    are ``snr * noise``, log-uniform in ``snr``; ``noise`` is the scale of the normal
    distribution whose absolute values make the noise; peaks are at least 4 FWHM apart.

    Returns:
        (batch, truth): truth[k] = (planted m/z, planted heights) of spectrum k, ascending.
    """
    rng = np.random.default_rng(seed)
    a = np.sqrt(mz_start)
    mz = (a + a / (2.0 * resolving_power * points_per_fwhm) * np.arange(n_points)) ** 2
    y = np.abs(rng.normal(0.0, noise or 1.0, (n_spectra, n_points))) * (noise > 0)
    truth = []
    lo, hi = mz[min(30, n_points // 4)], mz[-min(30, n_points // 4) - 1]
    for k in range(n_spectra):
        pos: list[float] = []
        for m in rng.uniform(lo, hi, 20 * peaks_per_spectrum):
            if len(pos) == peaks_per_spectrum:
                break
            if all(abs(m - p) > 4.0 * m / resolving_power for p in pos):
                pos.append(m)
        centres = np.sort(np.array(pos))
        # noise-free spectra: heights are the snr values themselves
        heights = (noise or 1.0) * np.exp(rng.uniform(np.log(snr[0]), np.log(snr[1]), centres.size))
        for m, h in zip(centres, heights):
            sd = m / resolving_power / FWHM_PER_SD
            i0, i1 = np.searchsorted(mz, [m - 8 * sd, m + 8 * sd])
            y[k, i0:i1] += h * np.exp(-0.5 * ((mz[i0:i1] - m) / sd) ** 2)
        truth.append((centres, heights))
    batch = SpectrumBatch(index=np.arange(n_spectra, dtype=np.int64),
                          offsets=np.arange(n_spectra + 1, dtype=np.int64) * n_points,
                          mz=mz.astype(dtype), mz_starts=np.zeros(n_spectra, dtype=np.int64),
                          intensity=y.astype(dtype).ravel())
    return batch, truth


def score_picks(picked: list[np.ndarray], truth: list[tuple[np.ndarray, np.ndarray]],
                resolving_power: float = 20_000.0) -> tuple[np.ndarray, np.ndarray, int]:
    """Match picked m/z to planted peaks: the nearest pick within FWHM/2 finds a peak.

    Returns:
        (error_ppm, heights, n_false): signed apex error in ppm of each planted peak (NaN if
        missed), the planted heights, and the number of picks within FWHM/2 of no planted peak.
    """
    errors, heights, n_false = [], [], 0
    for pm, (tm, th) in zip(picked, truth):
        pm = np.asarray(pm, dtype=np.float64)
        err = np.full(tm.size, np.nan)
        if pm.size and tm.size:
            j = np.clip(np.searchsorted(pm, tm), 1, max(pm.size - 1, 1))
            near = np.where(np.abs(pm[j - 1] - tm) <= np.abs(pm[np.minimum(j, pm.size - 1)] - tm),
                            pm[j - 1], pm[np.minimum(j, pm.size - 1)])
            ok = np.abs(near - tm) <= 0.5 * tm / resolving_power
            err[ok] = (near[ok] - tm[ok]) / tm[ok] * 1e6
        if pm.size:
            if tm.size:
                j = np.clip(np.searchsorted(tm, pm), 1, max(tm.size - 1, 1))
                dist = np.minimum(np.abs(tm[j - 1] - pm), np.abs(tm[np.minimum(j, tm.size - 1)] - pm))
                n_false += int((dist > 0.5 * pm / resolving_power).sum())
            else:
                n_false += pm.size
        errors.append(err)
        heights.append(th)
    return np.concatenate(errors), np.concatenate(heights), n_false


def openms_pick(batch: SpectrumBatch, signal_to_noise: float = 3.0) -> list[np.ndarray]:
    """Peak m/z of every spectrum by pyopenms PeakPickerHiRes (one C++ call for all)."""
    oms = pytest.importorskip("pyopenms")
    oms.LogConfigHandler.getInstance().setLogLevel("WARNING")  # no per-call summary on stdout
    picker = oms.PeakPickerHiRes()
    params = picker.getParameters()
    params.setValue("signal_to_noise", float(signal_to_noise))
    picker.setParameters(params)
    picked = picker.pickExperiment(openms_experiment(batch), False)
    return [picked.getSpectrum(k).get_peaks()[0] for k in range(picked.getNrSpectra())]


def openms_experiment(batch: SpectrumBatch):
    """The batch as a pyopenms MSExperiment of profile MS1 spectra."""
    import pyopenms as oms

    exp = oms.MSExperiment()
    for k in range(len(batch)):
        mz, y = batch.spectrum(k)
        spec = oms.MSSpectrum()
        spec.set_peaks((mz.astype(np.float64), y.astype(np.float32)))
        spec.setType(oms.SpectrumSettings.SpectrumType.PROFILE)
        spec.setMSLevel(1)
        exp.addSpectrum(spec)
    return exp


def peak_lists(peaks: SpectrumBatch) -> list[np.ndarray]:
    return [peaks.spectrum(k)[0] for k in range(len(peaks))]


def processed(batch: SpectrumBatch) -> SpectrumBatch:
    """The same spectra in processed layout (one m/z array per spectrum)."""
    mz = np.concatenate([batch.spectrum(k)[0] for k in range(len(batch))] or [batch.mz[:0]])
    return SpectrumBatch(batch.index, batch.offsets, mz, batch.offsets[:-1].copy(), batch.intensity)


# ------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize("points_per_fwhm", [5.0, 12.0])
def test_noise_free_gaussian_apex_error(points_per_fwhm):
    batch, truth = planted_spectra(100, 2000, noise=0.0, points_per_fwhm=points_per_fwhm, seed=1)
    err, _, n_false = score_picks(peak_lists(pick_peaks_batch(batch)), truth)
    assert not np.isnan(err).any() and n_false == 0
    assert np.median(np.abs(err)) <= 0.05
    assert np.abs(err).max() <= 0.5


def test_noisy_spectra_recall_error_and_false_peaks_vs_peakpickerhires():
    batch, truth = planted_spectra(200, 2000, seed=2)
    err, heights, n_false = score_picks(peak_lists(pick_peaks_batch(batch)), truth)
    ref_err, _, ref_false = score_picks(openms_pick(batch, 3.0), truth)
    found, ref_found = ~np.isnan(err), ~np.isnan(ref_err)
    assert found[heights >= 20].mean() >= 0.99
    assert found.mean() >= ref_found.mean()
    # apex error on the planted peaks both found, and each on all it found
    both = found & ref_found
    for mine, ref in ((err[both], ref_err[both]), (err[found], ref_err[ref_found])):
        assert np.median(np.abs(mine)) <= np.median(np.abs(ref))
        assert np.percentile(np.abs(mine), 99) <= np.percentile(np.abs(ref), 99)
    assert n_false <= ref_false + 2  # picks next to no planted peak (noise bumps on flanks)


def test_false_peaks_on_pure_noise_no_more_than_peakpickerhires():
    batch, truth = planted_spectra(300, 2000, peaks_per_spectrum=0, seed=3)
    mine = len(pick_peaks_batch(batch).mz)
    ref = sum(len(p) for p in openms_pick(batch, 3.0))
    assert mine <= ref
    assert mine / len(batch) <= 0.01
    # single-point spikes are not peaks at the default min_points
    assert len(pick_peaks_batch(batch, min_points=1).mz) > 10 * max(mine, 1)


def test_local_noise_follows_a_drifting_noise_level():
    # noise sigma rises 1 -> 30 along the spectrum; peaks at 100 local sigmas
    batch, _ = planted_spectra(100, 4000, peaks_per_spectrum=0, seed=4)
    n = 4000
    sigma = np.linspace(1.0, 30.0, n)
    y = batch.intensity.reshape(-1, n) * sigma
    rng = np.random.default_rng(4)
    mz = batch.mz
    truth = []
    for row in y:
        centres = np.sort(rng.choice(np.arange(100, n - 100, 60), 12, replace=False)).astype(float)
        pos = np.interp(centres + rng.uniform(-0.5, 0.5, centres.size), np.arange(n), mz)
        h = 100.0 * np.interp(pos, mz, sigma)
        for m, hh in zip(pos, h):
            sd = m / 20_000 / FWHM_PER_SD
            row += hh * np.exp(-0.5 * ((mz - m) / sd) ** 2)
        truth.append((pos, h))
    drift = SpectrumBatch(batch.index, batch.offsets, mz, batch.mz_starts, y.ravel())
    local_err, _, local_false = score_picks(peak_lists(pick_peaks_batch(drift, noise="local")), truth)
    global_err, _, global_false = score_picks(peak_lists(pick_peaks_batch(drift)), truth)
    assert (~np.isnan(local_err)).mean() >= 0.99
    # the global level is too high where the noise is low and too low where it is high
    assert local_false <= 1 and global_false >= 10 * max(local_false, 1)


def test_area_of_a_gaussian():
    mz = np.linspace(499.5, 500.5, 4001)
    sd = 0.01
    y = 1000.0 * np.exp(-0.5 * ((mz - 500.0123) / sd) ** 2)
    pm, area = pick_peaks(mz, y, measure="area")
    assert pm.size == 1
    assert area[0] == pytest.approx(1000.0 * sd * np.sqrt(2 * np.pi), rel=1e-3)
    _, height = pick_peaks(mz, y)
    assert height[0] == pytest.approx(1000.0, rel=1e-9)


@pytest.mark.parametrize("apex, bound_ppm", [("parabola", 15.0), ("none", 60.0)])
def test_other_apex_modes(apex, bound_ppm):
    batch, truth = planted_spectra(30, 2000, noise=0.0, seed=5)
    peaks = pick_peaks_batch(batch, apex=apex)
    err, _, _ = score_picks(peak_lists(peaks), truth)
    assert not np.isnan(err).any()
    assert np.abs(err).max() <= bound_ppm
    if apex == "none":
        assert np.isin(peaks.mz, batch.mz).all()


def test_min_separation_keeps_the_higher_peak():
    mz = np.linspace(100.0, 101.0, 1001)
    y = np.zeros_like(mz)
    for centre, h in ((100.40, 50.0), (100.41, 80.0), (100.42, 60.0), (100.70, 10.0)):
        y += h * np.exp(-0.5 * ((mz - centre) / 0.002) ** 2)
    assert pick_peaks(mz, y)[0].size == 4
    pm, ph = pick_peaks(mz, y, min_separation=15)  # points
    np.testing.assert_allclose(pm, [100.41, 100.70], atol=1e-4)
    pm, _ = pick_peaks(mz, y, min_separation=150, separation_unit="ppm")  # 15 mTh at 100 Th
    np.testing.assert_allclose(pm, [100.41, 100.70], atol=1e-4)
    pm, _ = pick_peaks(mz, y, min_separation=50, separation_unit="ppm")
    assert pm.size == 4


def test_flat_top_peak_apex_in_the_middle():
    mz = np.arange(20, dtype=float) + 100.0
    y = np.array([0, 0, 1, 2, 5, 9, 9, 9, 9, 5, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0], dtype=float)
    pm, ph = pick_peaks(mz, y, apex="none")
    np.testing.assert_array_equal(pm, [106.5])
    pm, ph = pick_peaks(mz, y)
    assert pm[0] == pytest.approx(106.5, abs=1e-9) and ph[0] >= 9.0


# ------------------------------------------------------------------------- layouts and types


def test_layouts_dtypes_and_single_spectrum_agree():
    batch, _ = planted_spectra(20, 1500, seed=6)
    ref = pick_peaks_batch(batch)
    proc = pick_peaks_batch(processed(batch))
    for a, b in ((ref.offsets, proc.offsets), (ref.mz, proc.mz), (ref.intensity, proc.intensity)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ref.mz_starts, ref.offsets[:-1])
    np.testing.assert_array_equal(ref.index, batch.index)
    assert ref.mz.dtype == ref.intensity.dtype == np.float64
    mz, y = batch.spectrum(7)
    pm, ph = pick_peaks(mz, y)
    np.testing.assert_array_equal(pm, ref.spectrum(7)[0])
    np.testing.assert_array_equal(ph, ref.spectrum(7)[1])
    # integer intensities are accepted (as float64)
    ints = SpectrumBatch(batch.index, batch.offsets, batch.mz, batch.mz_starts,
                         np.round(batch.intensity * 100).astype(np.int32))
    assert abs(len(pick_peaks_batch(ints).mz) - len(ref.mz)) <= 2


@pytest.mark.parametrize("options", [{}, dict(noise="local", noise_window=200),
                                     dict(measure="area", apex="parabola"),
                                     dict(min_separation=30.0, separation_unit="ppm", apex="none"),
                                     dict(snr=1.0, min_points=1, min_separation=3)])
@pytest.mark.parametrize("mz_dtype, y_dtype", [(np.float64, np.float64), (np.float32, np.float64),
                                               (np.float64, np.float32), (np.float32, np.float32),
                                               (np.float64, np.int32)])
def test_one_spectrum_per_call_equals_the_batch(options, mz_dtype, y_dtype):
    # pick_peaks has its own entry into the kernel (no batch): it must pick exactly what
    # pick_peaks_batch picks, whatever the options, dtypes and memory layout of the arrays
    batch, _ = planted_spectra(12, 3000, peaks_per_spectrum=25, seed=11)
    y = batch.intensity * (100 if y_dtype == np.int32 else 1)
    batch = SpectrumBatch(batch.index, batch.offsets, batch.mz.astype(mz_dtype),
                          batch.mz_starts, y.astype(y_dtype))
    peaks = pick_peaks_batch(processed(batch), **options)
    assert len(peaks.mz) > 12 * 10
    for k in range(len(batch)):
        mz, y = batch.spectrum(k)
        want_mz, want_y = peaks.spectrum(k)
        for args in ((mz, y), (np.repeat(mz, 2)[::2], np.repeat(y, 2)[::2]), (list(mz), y)):
            got_mz, got_y = pick_peaks(*args, **options)
            assert got_mz.dtype == got_y.dtype == np.float64
            np.testing.assert_array_equal(got_mz, want_mz)
            np.testing.assert_array_equal(got_y, want_y)
    # the options are kept between calls, never mixed up: other options, other peaks
    if options:
        mz, y = batch.spectrum(0)
        np.testing.assert_array_equal(pick_peaks(mz, y)[0], pick_peaks_batch(batch).spectrum(0)[0])


def test_float32_spectra():
    batch64, truth = planted_spectra(50, 2000, seed=7)
    batch32 = SpectrumBatch(batch64.index, batch64.offsets, batch64.mz.astype(np.float32),
                            batch64.mz_starts, batch64.intensity.astype(np.float32))
    err32, heights, _ = score_picks(peak_lists(pick_peaks_batch(batch32)), truth)
    err64, _, _ = score_picks(peak_lists(pick_peaks_batch(batch64)), truth)
    assert (~np.isnan(err32))[heights >= 20].mean() >= 0.99
    # float32 m/z carries 0.06 ppm per ulp at 500 Th
    assert np.nanmedian(np.abs(err32)) <= np.nanmedian(np.abs(err64)) + 0.05


def test_unsorted_mz_is_rejected_naming_the_spectrum():
    batch, _ = planted_spectra(4, 100, peaks_per_spectrum=2, seed=8)
    proc = processed(batch)
    mz = proc.mz.copy()
    mz[2 * 100 + 50], mz[2 * 100 + 51] = mz[2 * 100 + 51], mz[2 * 100 + 50]
    bad = SpectrumBatch(np.array([10, 11, 12, 13]), proc.offsets, mz, proc.mz_starts, proc.intensity)
    with pytest.raises(ValueError, match="spectrum 12: m/z values are not ascending"):
        pick_peaks_batch(bad)
    with pytest.raises(ValueError, match="not ascending"):
        pick_peaks(mz[200:300], proc.intensity[200:300])
    shared = batch.mz.copy()
    shared[60] = np.nan
    with pytest.raises(ValueError, match="spectrum 0"):
        pick_peaks_batch(SpectrumBatch(batch.index, batch.offsets, shared, batch.mz_starts,
                                       batch.intensity))


@pytest.mark.parametrize("kwargs", [dict(noise="median"), dict(apex="spline"), dict(snr=-1.0),
                                    dict(min_points=0), dict(measure="volume"),
                                    dict(separation_unit="Th")])
def test_bad_options_are_rejected(kwargs):
    with pytest.raises(ValueError):
        pick_peaks(np.arange(10.0), np.ones(10), **kwargs)


def test_zero_filled_spectrum():
    # more than half the points are 0: MAD is 0, every peak above 0 counts; selection on
    # many equal values must stay fast
    mz = np.arange(5000.0) + 100.0
    y = np.zeros(5000)
    y[1000:1005] = [1, 3, 7, 3, 1]
    y[3000:3007] = [2, 4, 6, 8, 6, 4, 2]
    pm, ph = pick_peaks(mz, y)
    np.testing.assert_allclose(pm, [1102.0, 3103.0], atol=1e-9)


# ------------------------------------------------------------------------- edge cases


@st.composite
def spectra_batches(draw):
    n_spec = draw(st.integers(0, 5))
    lengths = draw(st.lists(st.integers(0, 40), min_size=n_spec, max_size=n_spec))
    mz, y = [], []
    for n in lengths:
        steps = draw(st.lists(st.sampled_from([0.0, 0.01, 0.5, 1.0]), min_size=n, max_size=n))
        mz.append(100.0 + np.cumsum(np.asarray(steps, dtype=float)))
        y.append(np.asarray(draw(st.lists(st.floats(0, 1e6), min_size=n, max_size=n)), dtype=float))
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    flat_mz = np.concatenate(mz) if mz else np.zeros(0)
    flat_y = np.concatenate(y) if y else np.zeros(0)
    return SpectrumBatch(np.arange(n_spec, dtype=np.int64), offsets, flat_mz, offsets[:-1].copy(), flat_y)


@settings(max_examples=150, deadline=None)
@given(spectra_batches(), st.sampled_from([0.0, 3.0]), st.integers(1, 4),
       st.sampled_from(["gauss", "parabola", "none"]), st.sampled_from(["height", "area"]),
       st.sampled_from(["mad", "local"]))
def test_any_batch_gives_sane_peaks(batch, snr, min_points, apex, measure, noise):
    peaks = pick_peaks_batch(batch, snr, min_points=min_points, apex=apex, measure=measure,
                             noise=noise, noise_window=16)
    assert len(peaks) == len(batch)
    assert peaks.offsets[0] == 0 and peaks.offsets[-1] == len(peaks.mz) == len(peaks.intensity)
    for k in range(len(batch)):
        mz, y = batch.spectrum(k)
        pm, ph = peaks.spectrum(k)
        one = pick_peaks(mz, y, snr, min_points=min_points, apex=apex, measure=measure,
                         noise=noise, noise_window=16)
        np.testing.assert_array_equal(one[0], pm)
        np.testing.assert_array_equal(one[1], ph)
        assert pm.size <= mz.size // 2
        if mz.size < 3:
            assert pm.size == 0
        if pm.size:
            assert (np.diff(pm) >= 0).all()
            assert mz[0] <= pm.min() and pm.max() <= mz[-1]
            assert np.isfinite(ph).all()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 100), min_size=2, max_size=30), st.data())
def test_any_unsorted_spectrum_is_rejected(values, data):
    mz = np.sort(np.asarray(values)) + 100.0
    i = data.draw(st.integers(1, len(mz) - 1))
    if mz[i] == mz[i - 1]:
        mz[i - 1] += 1.0  # make it a real descent
    mz[i - 1], mz[i] = max(mz[i - 1], mz[i]), min(mz[i - 1], mz[i])
    with pytest.raises(ValueError, match="not ascending"):
        pick_peaks(mz, np.ones_like(mz))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_descent_position_is_found(dtype):
    # the m/z order scan tests eight points per step (SSE2): a descent, NaN or -inf at any
    # position of any length, in a block or in the tail, is found, and a sorted array with
    # equal neighbours passes
    for n in range(2, 42):
        mz = (100.0 + np.arange(n) // 2).astype(dtype)  # pairs of equal values
        y = np.ones(n, dtype)
        pick_peaks(mz, y)
        for p in range(1, n):
            for bad in (mz[p - 1] - 1, np.nan, -np.inf):
                broken = mz.copy()
                broken[p] = bad
                with pytest.raises(ValueError, match="not ascending"):
                    pick_peaks(broken, y)
        broken = mz.copy()
        broken[0] = np.nan
        with pytest.raises(ValueError, match="not ascending"):
            pick_peaks(broken, y)
