"""Peak-width law, streaming common m/z axis and binning, against planted truth and
brute-force NumPy references."""
from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ionmap.batch import SpectrumBatch
from ionmap.kernels import MzAxisBuilder, bin_to_axis, build_mz_axis, tolerance_mz


def peak_batch(peaks: list[np.ndarray], heights: list[np.ndarray] | None = None,
               first_index: int = 0) -> SpectrumBatch:
    """Peak lists (each ascending) as a processed-layout batch."""
    lengths = [p.size for p in peaks]
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    mz = np.concatenate(peaks or [np.zeros(0)])
    y = np.concatenate(heights) if heights else np.ones_like(mz)
    return SpectrumBatch(np.arange(len(peaks), dtype=np.int64) + first_index, offsets, mz,
                         offsets[:-1].copy(), y)


def planted_features(rng: np.random.Generator, n_spectra: int, centres: np.ndarray,
                     fractions: np.ndarray, ppm: float, analyzer: str = "tof",
                     noise_peaks: int = 5) -> list[np.ndarray]:
    """Per spectrum: each feature present with its probability, m/z jittered with sd of a
    quarter tolerance, plus uniformly scattered noise peaks."""
    tol = tolerance_mz(centres, ppm, analyzer)
    spectra = []
    for _ in range(n_spectra):
        present = rng.random(centres.size) < fractions
        found = centres[present] + rng.normal(0.0, 0.25, present.sum()) * tol[present]
        spectra.append(np.sort(np.concatenate([found, rng.uniform(centres.min(), centres.max(), noise_peaks)])))
    return spectra


# ------------------------------------------------------------------------- peak-width law


def test_tolerance_law_per_analyzer():
    m = np.array([100.0, 200.0, 400.0, 800.0])
    np.testing.assert_allclose(tolerance_mz(m, 5.0, "tof"), 5e-6 * m)
    np.testing.assert_allclose(tolerance_mz(m, 5.0, "orbitrap"), 5e-6 * 200 * (m / 200) ** 1.5)
    np.testing.assert_allclose(tolerance_mz(m, 5.0, "fticr"), 5e-6 * m**2 / 200)
    for analyzer in ("tof", "orbitrap", "fticr"):
        assert tolerance_mz(300.0, 3.0, analyzer, ref_mz=300.0) == pytest.approx(9e-4)
    with pytest.raises(ValueError, match="analyzer must be one of"):
        tolerance_mz(m, 5.0, "quadrupole")


@pytest.mark.parametrize("analyzer", ["tof", "orbitrap", "fticr"])
def test_tolerance_coordinate_counts_tolerances(analyzer):
    from ionmap.kernels import _from_tolerance_coordinate, _tolerance_coordinate

    m = np.geomspace(50.0, 3000.0, 200)
    u = _tolerance_coordinate(m, 7.0, analyzer, 150.0)
    np.testing.assert_allclose(_from_tolerance_coordinate(u, 7.0, analyzer, 150.0), m, rtol=1e-12)
    # one tolerance further along m/z is one unit further along u
    step = _tolerance_coordinate(m + tolerance_mz(m, 7.0, analyzer, 150.0), 7.0, analyzer, 150.0) - u
    np.testing.assert_allclose(step, 1.0, rtol=1e-3)


# ------------------------------------------------------------------------- common axis


@pytest.mark.parametrize("analyzer", ["tof", "orbitrap", "fticr"])
def test_planted_features_are_recovered_and_rare_ones_dropped(analyzer):
    rng = np.random.default_rng(11)
    centres = np.sort(rng.uniform(100.0, 1000.0, 50))
    centres = centres[np.diff(centres, prepend=0) > 0.1]  # keep features well apart
    fractions = np.where(np.arange(centres.size) % 5 == 0, 0.004, rng.uniform(0.03, 1.0, centres.size))
    spectra = planted_features(rng, 2000, centres, fractions, 10.0, analyzer)
    axis = build_mz_axis([peak_batch(spectra)], ppm=10.0, analyzer=analyzer, min_fraction=0.01)
    kept = centres[fractions > 0.01]
    assert axis.size == kept.size
    assert (np.diff(axis) > 0).all()
    err = np.abs(axis - kept) / tolerance_mz(kept, 10.0, analyzer)
    assert err.max() <= 0.25  # mean of >= 60 peaks jittered by 0.25 tolerance


def test_min_fraction_threshold():
    rng = np.random.default_rng(12)
    centres = np.array([300.0, 400.0, 500.0])
    spectra = planted_features(rng, 1000, centres, np.array([0.05, 0.2, 0.6]), 10.0, noise_peaks=0)
    batch = peak_batch(spectra)
    np.testing.assert_allclose(build_mz_axis([batch], min_fraction=0.1), [400.0, 500.0], rtol=1e-6)
    np.testing.assert_allclose(build_mz_axis([batch], min_fraction=0.5), [500.0], rtol=1e-6)
    assert build_mz_axis([batch], min_fraction=0.9).size == 0
    assert build_mz_axis([], min_fraction=0.1).size == 0


def test_result_independent_of_split_order_merge_and_pickling():
    rng = np.random.default_rng(13)
    centres = np.sort(rng.uniform(150.0, 900.0, 40))
    spectra = planted_features(rng, 1200, centres, rng.uniform(0.02, 1.0, centres.size), 5.0)
    one = build_mz_axis([peak_batch(spectra)], ppm=5.0)
    assert one.size >= 30
    cuts = [0, 1, 7, 300, 301, 950, 1200]
    pieces = [peak_batch(spectra[a:b], first_index=a) for a, b in zip(cuts, cuts[1:])]
    np.testing.assert_array_equal(build_mz_axis(pieces[::-1], ppm=5.0), one)
    left, right = MzAxisBuilder(ppm=5.0), MzAxisBuilder(ppm=5.0)
    for i, piece in enumerate(pieces):
        (left if i % 2 else right).add(piece)
    right = pickle.loads(pickle.dumps(right))  # as between Dask workers
    left.merge(right)
    assert left.n_spectra == 1200
    np.testing.assert_array_equal(left.finish(), one)
    threaded = MzAxisBuilder(ppm=5.0)
    workers = [threading.Thread(target=threaded.add, args=(p,)) for p in pieces]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    np.testing.assert_array_equal(threaded.finish(), one)
    with pytest.raises(ValueError, match="different settings"):
        left.merge(MzAxisBuilder(ppm=6.0))


def test_axis_builder_rejects_bad_peaks():
    builder = MzAxisBuilder()
    with pytest.raises(ValueError, match="spectrum 5: m/z values are not ascending"):
        builder.add(peak_batch([np.array([300.0, 200.0])], first_index=5))
    with pytest.raises(ValueError, match="finite and > 0"):
        builder.add(peak_batch([np.array([0.0, 200.0])]))
    assert builder.n_spectra == 0


def test_memory_does_not_grow_with_spectra():
    rng = np.random.default_rng(14)
    builder = MzAxisBuilder(ppm=10.0)
    centres = np.array([200.0, 600.0, 999.0])
    for _ in range(5):
        builder.add(peak_batch(planted_features(rng, 500, centres, np.ones(3), 10.0)))
        size = builder._count.nbytes + builder._frac.nbytes
    builder.add(peak_batch(planted_features(rng, 5000, centres, np.ones(3), 10.0)))
    assert builder._count.nbytes + builder._frac.nbytes == size
    # 12 bytes per cell, 4 cells per tolerance over 200-999 Th
    assert size <= 12 * 4 * np.log(999.0 / 200.0) / 10e-6 * 1.01


# ------------------------------------------------------------------------- binning


def bin_reference(batch: SpectrumBatch, axis: np.ndarray, ppm: float, analyzer: str,
                  reduce: str) -> np.ndarray:
    """Brute force: every point to the nearest feature (first on ties) if within tolerance."""
    tol = tolerance_mz(axis, ppm, analyzer)
    out = np.zeros((len(batch), axis.size))
    seen = np.zeros(out.shape, dtype=bool)
    for k in range(len(batch)):
        mz, y = batch.spectrum(k)
        for m, v in zip(mz.astype(np.float64), y.astype(np.float64)):
            d = np.abs(axis - m)
            f = int(np.argmin(d))
            if d[f] <= tol[f]:
                if reduce == "sum":
                    out[k, f] += v
                else:
                    out[k, f] = v if not seen[k, f] else max(out[k, f], v)
                seen[k, f] = True
    return out.astype(np.float32)


@pytest.mark.parametrize("analyzer", ["tof", "fticr"])
@pytest.mark.parametrize("reduce", ["sum", "max"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binning_equals_reference(analyzer, reduce, dtype):
    rng = np.random.default_rng([analyzer == "tof", reduce == "sum", np.dtype(dtype).itemsize])
    axis = np.sort(rng.uniform(200.0, 800.0, 80))
    tol = tolerance_mz(axis, 20.0, analyzer)
    spectra, heights = [], []
    for _ in range(40):
        # peaks near features (inside and just outside tolerance), on the midpoints, and random
        pick = rng.integers(0, axis.size, 60)
        m = np.concatenate([axis[pick] + rng.uniform(-1.5, 1.5, 60) * tol[pick],
                            (axis[1:] + axis[:-1])[:5] / 2, rng.uniform(190.0, 810.0, 20)])
        spectra.append(np.sort(m).astype(dtype))
        heights.append((rng.lognormal(0, 3, m.size) * rng.choice([-1, 1, 1], m.size)).astype(dtype))
    batch = peak_batch(spectra, heights)
    got = bin_to_axis(batch, axis, ppm=20.0, analyzer=analyzer, reduce=reduce)
    assert got.dtype == np.float32 and got.shape == (40, axis.size)
    np.testing.assert_array_equal(got, bin_reference(batch, axis, 20.0, analyzer, reduce))
    assert np.count_nonzero(got) > 1000


def test_binning_continuous_batch_and_tolerance_edge():
    mz = np.array([99.9991, 100.0, 100.0009, 100.0011, 100.5, 101.0, 101.0])
    axis = np.array([100.0, 101.0])
    y = np.arange(1.0, 15.0)
    batch = SpectrumBatch(np.array([0, 1]), np.array([0, 7, 14]), mz, np.array([0, 0]), y)
    got = bin_to_axis(batch, axis, ppm=10.0)  # 1 mTh at 100 Th: 100.0009 is inside, 100.0011 not
    np.testing.assert_array_equal(got, bin_reference(batch, axis, 10.0, "tof", "sum"))
    np.testing.assert_array_equal(got[0], [1 + 2 + 3, 6 + 7])
    np.testing.assert_array_equal(bin_to_axis(batch, axis, ppm=10.0, reduce="max")[1], [10, 14])
    assert bin_to_axis(batch, axis[:0]).shape == (2, 0)
    with pytest.raises(ValueError, match="strictly ascending"):
        bin_to_axis(batch, np.array([101.0, 100.0]))
    unsorted = SpectrumBatch(np.array([7, 8]), batch.offsets, mz[::-1].copy(), batch.mz_starts, y)
    with pytest.raises(ValueError, match="spectrum 7: m/z values are not ascending"):
        bin_to_axis(unsorted, axis)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_binning_edge_cases_match_reference(data):
    grid = st.sampled_from([99.0, 100.0, 100.0005, 100.001, 100.002, 101.0, 101.0015, 150.0])
    peaks = [np.sort(np.asarray(data.draw(st.lists(grid, max_size=6)))) for _ in range(data.draw(st.integers(0, 4)))]
    heights = [np.asarray(data.draw(st.lists(st.floats(-1e3, 1e3), min_size=p.size, max_size=p.size)),
                          dtype=np.float64) for p in peaks]
    axis = np.unique(np.asarray(data.draw(st.lists(st.sampled_from([100.0, 100.0015, 101.0, 140.0]),
                                                   min_size=1, max_size=4))))
    batch = peak_batch(peaks, heights)
    for reduce in ("sum", "max"):
        np.testing.assert_array_equal(bin_to_axis(batch, axis, ppm=10.0, reduce=reduce),
                                      bin_reference(batch, axis, 10.0, "tof", reduce))
