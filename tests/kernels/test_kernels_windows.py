"""Window sums against a sequential float64 NumPy reference, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ionmap.batch import SpectrumBatch
from ionmap.errors import InputError
from ionmap.kernels import window_sums


def reference(batch: SpectrumBatch, lo: np.ndarray, hi: np.ndarray, reduce: str = "sum") -> np.ndarray:
    """Brute force: every spectrum, every window, a mask and a sequential float64 reduction."""
    out = np.zeros((len(batch), lo.size))
    for k in range(len(batch)):
        mz, y = batch.spectrum(k)
        mz = mz.astype(np.float64)
        for q in range(lo.size):
            inside = y[(mz >= lo[q]) & (mz <= hi[q])].astype(np.float64)
            if inside.size:
                # cumsum adds in order (np.sum is pairwise and would differ in the last bits)
                out[k, q] = np.cumsum(inside)[-1] if reduce == "sum" else inside.max()
    return out


def random_batch(rng: np.random.Generator, n_spec: int, shared: bool, mz_dtype=np.float64,
                 y_dtype=np.float64, max_len: int = 300) -> SpectrumBatch:
    if shared:
        n = int(rng.integers(0, max_len))
        mz = np.sort(rng.uniform(100.0, 200.0, n)).astype(mz_dtype)
        lengths = np.full(n_spec, n)
    else:
        lengths = rng.integers(0, max_len, n_spec)
        mz = np.concatenate([np.sort(rng.uniform(100.0, 200.0, m)) for m in lengths] or [np.zeros(0)])
        mz = mz.astype(mz_dtype)
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    starts = np.zeros(n_spec, dtype=np.int64) if shared else offsets[:-1].copy()
    # intensities over many orders of magnitude make the order of additions visible
    y = (rng.lognormal(0.0, 4.0, offsets[-1]) * rng.choice([-1, 1, 1, 1], offsets[-1])).astype(y_dtype)
    return SpectrumBatch(np.arange(n_spec, dtype=np.int64) + 1000, offsets, mz, starts, y)


def random_windows(rng: np.random.Generator, k: int) -> tuple[np.ndarray, np.ndarray]:
    centre = rng.uniform(90.0, 210.0, k)  # some windows beyond the m/z range
    half = rng.uniform(0.0, 5.0, k) * rng.choice([1, 1, 1, -1], k)  # a few with hi < lo
    return centre - half, centre + half


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("mz_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("y_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduce", ["sum", "max"])
def test_equals_reference_bit_for_bit(shared, mz_dtype, y_dtype, reduce):
    rng = np.random.default_rng([shared, reduce == "max", np.dtype(mz_dtype).itemsize,
                                 np.dtype(y_dtype).itemsize])
    batch = random_batch(rng, 25, shared, mz_dtype, y_dtype)
    lo, hi = random_windows(rng, 40)
    got = window_sums(batch, lo, hi, reduce)
    np.testing.assert_array_equal(got, reference(batch, lo, hi, reduce))
    assert got.dtype == np.float64 and got.shape == (25, 40)


def test_bounds_are_inclusive_and_exact():
    mz = np.array([100.0, 100.5, 101.0, 101.0, 102.0])
    y = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    batch = SpectrumBatch(np.array([0]), np.array([0, 5]), mz, np.array([0]), y)
    lo = np.array([100.5, 101.0, np.nextafter(101.0, 200), 99.0, 102.5, 101.0, 100.0])
    hi = np.array([101.0, 101.0, 102.0, 99.5, 103.0, 100.0, 102.0])
    np.testing.assert_array_equal(window_sums(batch, lo, hi)[0], [14.0, 12.0, 16.0, 0, 0, 0, 31.0])
    np.testing.assert_array_equal(window_sums(batch, lo, hi, "max")[0], [8.0, 8.0, 16.0, 0, 0, 0, 16.0])


def test_continuous_spectra_shorter_than_the_shared_axis():
    # spectrum k uses the first len_k values of the shared m/z array
    mz = np.arange(10, dtype=np.float64) + 100.0
    y = np.arange(1.0, 16.0)  # lengths 10 and 5
    batch = SpectrumBatch(np.array([0, 1]), np.array([0, 10, 15]), mz, np.array([0, 0]), y)
    lo, hi = np.array([103.0, 100.0]), np.array([107.0, 109.0])
    np.testing.assert_array_equal(window_sums(batch, lo, hi), reference(batch, lo, hi))
    np.testing.assert_array_equal(window_sums(batch, lo, hi)[1], [14.0 + 15.0, 11.0 + 12 + 13 + 14 + 15])


def test_integer_intensities_and_no_windows():
    rng = np.random.default_rng(3)
    batch = random_batch(rng, 5, False)
    ints = SpectrumBatch(batch.index, batch.offsets, batch.mz, batch.mz_starts,
                         rng.integers(0, 2**31 - 1, batch.intensity.size).astype(np.int32))
    lo, hi = random_windows(rng, 10)
    np.testing.assert_array_equal(window_sums(ints, lo, hi), reference(ints, lo, hi))
    assert window_sums(ints, lo[:0], hi[:0]).shape == (5, 0)


def test_unsorted_and_malformed_input():
    rng = np.random.default_rng(4)
    batch = random_batch(rng, 6, False, max_len=50)
    mz = batch.mz.copy()
    k = 3
    a = int(batch.offsets[k])
    assert batch.lengths[k] >= 2
    mz[a], mz[a + 1] = mz[a + 1] + 1.0, mz[a]
    bad = SpectrumBatch(batch.index, batch.offsets, mz, batch.mz_starts, batch.intensity)
    with pytest.raises(ValueError, match=f"spectrum {1000 + k}: m/z values are not ascending"):
        window_sums(bad, np.array([0.0]), np.array([1e9]))
    with pytest.raises(ValueError, match="offsets"):
        window_sums(SpectrumBatch(batch.index, batch.offsets[:-1], batch.mz, batch.mz_starts,
                                  batch.intensity), np.array([0.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="lo and hi"):
        window_sums(batch, np.array([0.0, 1.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="reduce"):
        window_sums(batch, np.array([0.0]), np.array([1.0]), "mean")


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_edge_cases_match_reference(data):
    n_spec = data.draw(st.integers(0, 4))
    shared = data.draw(st.booleans())
    grid = st.sampled_from([100.0, 100.25, 100.5, 101.0, 101.0, 102.0])  # duplicates likely
    if shared:
        axis = np.sort(np.asarray(data.draw(st.lists(grid, max_size=8))))
        lengths = [data.draw(st.integers(0, axis.size)) for _ in range(n_spec)]
        mz = axis
    else:
        parts = [np.sort(np.asarray(data.draw(st.lists(grid, max_size=8)))) for _ in range(n_spec)]
        lengths = [p.size for p in parts]
        mz = np.concatenate(parts or [np.zeros(0)])
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    y = np.asarray(data.draw(st.lists(st.floats(-1e3, 1e3), min_size=int(offsets[-1]),
                                      max_size=int(offsets[-1]))), dtype=np.float64)
    starts = np.zeros(n_spec, np.int64) if shared else offsets[:-1].copy()
    batch = SpectrumBatch(np.arange(n_spec), offsets, mz, starts, y)
    bounds = st.sampled_from([99.0, 100.0, 100.25, 100.3, 101.0, 102.0, 103.0])
    lo = np.asarray(data.draw(st.lists(bounds, max_size=5)))
    hi = np.asarray(data.draw(st.lists(bounds, min_size=lo.size, max_size=lo.size)))
    for reduce in ("sum", "max"):
        np.testing.assert_array_equal(window_sums(batch, lo, hi, reduce), reference(batch, lo, hi, reduce))


@pytest.mark.parametrize("mode,spectrum_type", [("processed", "centroid"),
                                                ("continuous", "profile")])
def test_ion_images_equal_pyimzml_brute_force(write_imzml, mode, spectrum_type):
    """ion_images against pyimzML: every spectrum read by ImzMLParser, an inclusive
    ppm window masked and summed in order, placed at its (x, y); a missing pixel is fill."""
    from pyimzml.ImzMLParser import ImzMLParser

    from ionmap.kernels import ion_images

    w = write_imzml(mode=mode, spectrum_type=spectrum_type, shape=(4, 5), points=400,
                    skip=(7,), seed=3)
    rng = np.random.default_rng(1)
    targets = np.concatenate([rng.uniform(150, 850, 6), w.mzs[0][[5, 17]]])  # some on a point
    ppm = 500.0
    got = ion_images(w.path, targets, ppm)
    p = ImzMLParser(str(w.path))
    want = np.full((targets.size, 4, 5), np.nan)
    for i, (x, y, *_) in enumerate(p.coordinates):
        mz, it = p.getspectrum(i)
        for k, m in enumerate(targets):
            inside = it[(mz >= m * (1 - ppm * 1e-6)) & (mz <= m * (1 + ppm * 1e-6))]
            want[k, y - 1, x - 1] = np.cumsum(inside.astype(np.float64))[-1] if inside.size else 0
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[:, 1, 2]).all() and (got[:, 0, 0] >= 0).all()
    assert (got[-2:, 0, 0] > 0).all()  # the windows on a point of spectrum 0 hold it
    assert np.array_equal(ion_images(w.path, targets, ppm, fill=0.0), np.nan_to_num(want))
    with pytest.raises(InputError, match="positive ppm"):
        ion_images(w.path, targets, 0)
