"""Shifted window sums and reference-ion errors against brute-force NumPy references."""
from __future__ import annotations

import numpy as np
import pytest
from test_kernels_windows import random_batch, reference

from ionmap.batch import SpectrumBatch
from ionmap.kernels import MassShift, recalibrated, reference_errors, window_sums


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("dtypes", [(np.float64, np.float32), (np.float32, np.float64)])
def test_shifted_windows_equal_brute_force(shared, dtypes):
    rng = np.random.default_rng(5)
    batch = random_batch(rng, 40, shared, *dtypes)
    centre = rng.uniform(0, 1200, 300)
    lo, hi = centre * (1 - 3e-4), centre * (1 + 3e-4)
    lo, hi = np.r_[lo, -np.inf, 50.0], np.r_[hi, np.inf, 40.0]  # TIC and an empty window
    a, b, m0 = rng.normal(0, 30, len(batch)), rng.normal(0, 5, len(batch)), 400.0
    got = window_sums(batch, lo, hi, shift=MassShift(a, b, m0))
    want = np.zeros_like(got)
    for k in range(len(batch)):
        mz, y = batch.spectrum(k)
        mz = mz.astype(np.float64)
        for q in range(lo.size):
            f = 1.0
            if np.isfinite(lo[q]) and np.isfinite(hi[q]):
                f = 1 + (a[k] + b[k] * ((lo[q] + hi[q]) / 2 - m0) * 1e-3) * 1e-6
            v = y[(mz >= lo[q] * f) & (mz <= hi[q] * f)].astype(np.float64)
            want[k, q] = np.cumsum(v)[-1] if v.size else 0.0
    np.testing.assert_array_equal(got, want)
    # zero shift and the many-window path are bit for bit the plain sums
    zero = MassShift(np.zeros(len(batch)), np.zeros(len(batch)), m0)
    np.testing.assert_array_equal(window_sums(batch, lo, hi, shift=zero), reference(batch, lo, hi))
    np.testing.assert_array_equal(window_sums(batch, lo, hi), reference(batch, lo, hi))


@pytest.mark.parametrize("shared", [False, True])
def test_recalibrated_batch_inverts_the_model(shared):
    # the recorded m/z of exact m/z m is m·(1 + δ(m)·1e-6): taking the batch's points as
    # exact, the recorded batch recalibrates back to them
    rng = np.random.default_rng(3)
    exact = random_batch(rng, 30, shared, np.float64, np.float32)
    a, b, m0 = rng.normal(0, 30, len(exact)), rng.normal(0, 20, len(exact)), 400.0
    k = np.repeat(np.arange(len(exact)), np.diff(exact.offsets))
    truth = np.concatenate([exact.spectrum(i)[0] for i in range(len(exact))])
    observed = truth * (1 + (a[k] + b[k] * (truth - m0) * 1e-3) * 1e-6)
    recorded = SpectrumBatch(exact.index, exact.offsets, observed, exact.offsets[:-1].copy(),
                             exact.intensity)
    got = recalibrated(recorded, MassShift(a, b, m0))
    np.testing.assert_allclose(got.mz, truth, rtol=1e-12)
    for i in range(len(exact)):
        np.testing.assert_array_equal(got.spectrum(i)[1], exact.spectrum(i)[1])
    # either layout in, processed layout out: a shared axis is moved per spectrum
    zero = recalibrated(exact, MassShift(np.zeros(len(exact)), np.zeros(len(exact)), m0))
    np.testing.assert_array_equal(zero.mz, truth)


def _gauss_batch(shift_ppm: np.ndarray, centroid: bool, rng) -> tuple[SpectrumBatch, np.ndarray]:
    """Spectra with Gaussian peaks (R = 20000) of known ions, each spectrum shifted."""
    ions = np.array([150.0, 310.5, 620.25, 888.8])
    mzs, ys, offsets = [], [], [0]
    for s in shift_ppm:
        if centroid:
            x = ions * (1 + s * 1e-6)
            y = np.full(ions.size, 1000.0)
        else:
            x = 100.0 * np.exp(np.arange(0, 231000) * np.log1p(1e-5))  # 10 ppm grid
            x = x[x < 1000]
            y = np.zeros_like(x)
            for m in ions * (1 + s * 1e-6):
                sigma = m / 20000 / 2.3548
                y += 1000 * np.exp(-0.5 * ((x - m) / sigma) ** 2)
            y += rng.uniform(0, 1, x.size)
        mzs.append(x)
        ys.append(y)
        offsets.append(offsets[-1] + x.size)
    off = np.array(offsets)
    return SpectrumBatch(index=np.arange(len(shift_ppm)), offsets=off, mz=np.concatenate(mzs),
                         mz_starts=off[:-1].copy(), intensity=np.concatenate(ys)), ions


@pytest.mark.parametrize("centroid", [False, True])
def test_reference_errors_recover_planted_shift(centroid):
    rng = np.random.default_rng(2)
    shift = rng.uniform(-25, 25, 12)
    batch, ions = _gauss_batch(shift, centroid, rng)
    refs = np.r_[ions, 500.0]  # 500 Th: no ion there
    err, height, width = reference_errors(batch, refs, 40.0, profile=not centroid)
    if centroid:
        assert np.isnan(width).all()
    else:  # FWHM = m / R = 50 ppm
        np.testing.assert_allclose(width[:, :4], 50.0, rtol=0.03)
    np.testing.assert_allclose(err[:, :4], np.repeat(shift[:, None], 4, 1), atol=0.3)
    assert (height[:, :4] > 900).all()
    assert np.isnan(err[:, 4]).all() or centroid is False and (height[:, 4] < 2).all()
    # with the model's prediction the search is centred on the shifted position
    narrow, _, _ = reference_errors(batch, ions, 5.0, profile=not centroid,
                                 shift=MassShift(shift, np.zeros_like(shift), 500.0))
    np.testing.assert_allclose(narrow, err[:, :4], atol=1e-9)
    blind, _, _ = reference_errors(batch, ions, 5.0, profile=not centroid)
    assert np.isnan(blind[np.abs(shift) > 8]).all()
