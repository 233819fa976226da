"""The compiled gather and check kernels (ionmap._gather) against NumPy references."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from ionmap import _gather
from ionmap.batch import SpectrumBatch
from ionmap.errors import InputError
from ionmap.imzml import _binary as binary
from ionmap.kernels import pick_peaks_batch


def _reference_gather(buf: np.ndarray, pos: np.ndarray, counts: np.ndarray,
                      itemsize: int) -> np.ndarray:
    parts = [buf[p : p + c * itemsize] for p, c in zip(pos.tolist(), counts.tolist())]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint8)


@pytest.mark.parametrize("itemsize", [1, 4, 8])
@pytest.mark.parametrize("seed", range(4))
def test_gather_bytes_matches_numpy(itemsize, seed):
    """Random ranges: any order, overlapping, repeated, unaligned, empty (with any pos)."""
    rng = np.random.default_rng(seed)
    buf = rng.integers(0, 256, 5000, dtype=np.uint8)
    n = int(rng.integers(0, 60))
    counts = rng.integers(0, 40, n)
    counts[rng.random(n) < 0.2] = 0
    pos = rng.integers(0, len(buf) - counts * itemsize + 1)
    pos[counts == 0] = 10**9  # ignored for empty ranges
    out = np.full(int(counts.sum()) * itemsize, 7, np.uint8)
    _gather.gather_bytes(buf, pos, counts, itemsize, out)
    np.testing.assert_array_equal(out, _reference_gather(buf, pos, counts, itemsize))


@pytest.mark.parametrize("dtype", ["<f4", "<f8", "<i4", "<i8"])
def test_gather_typed_values_and_view(dtype):
    rng = np.random.default_rng(3)
    values = (rng.random(300) * 1000).astype(dtype)
    raw = np.zeros(4000, np.uint8)
    raw[5 : 5 + values.nbytes] = values.view(np.uint8)  # misaligned on purpose
    size = values.itemsize
    pos = 5 + np.array([200, 0, 50, 50]) * size
    counts = np.array([100, 50, 0, 30])
    want = np.concatenate([values[200:300], values[0:50], values[50:80]])
    got = binary.gather(raw, pos, counts, np.dtype(dtype))
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.dtype(dtype)
    # adjacent, in order and aligned: a zero-copy view of the buffer
    raw2 = np.zeros(values.nbytes + 16, np.uint8)
    raw2[8 : 8 + values.nbytes] = values.view(np.uint8)
    view = binary.gather(raw2, 8 + np.array([0, 100]) * size, np.array([100, 200]), dtype)
    assert np.shares_memory(view, raw2)
    np.testing.assert_array_equal(view, values)


def test_gather_bytes_rejects_bad_ranges():
    buf = np.zeros(100, np.uint8)
    out = np.zeros(16, np.uint8)
    with pytest.raises(ValueError, match="outside"):
        _gather.gather_bytes(buf, np.array([90]), np.array([2]), 8, out)
    with pytest.raises(ValueError, match="outside"):
        _gather.gather_bytes(buf, np.array([-1]), np.array([2]), 8, out)
    with pytest.raises(ValueError, match="outside"):
        _gather.gather_bytes(buf, np.array([0]), np.array([2**61]), 8, out)
    with pytest.raises(ValueError, match="out has"):
        _gather.gather_bytes(buf, np.array([0]), np.array([1]), 8, out)
    assert not out.any()


def _reference_check(mz, offsets, intensity):
    """Brute force, spectrum by spectrum: [descent, first, last, intensity]."""
    found = [-1, -1, -1, -1]
    spans = list(zip(offsets[:-1].tolist(), offsets[1:].tolist()))
    if mz is not None:
        for a, b in spans:
            for i in range(a + 1, b):
                if not mz[i] >= mz[i - 1]:
                    found[0] = i
                    break
            if found[0] >= 0:
                break
        for slot, end in ((1, 0), (2, 1)):
            for a, b in spans:
                if b > a and not np.isfinite(mz[(a, b - 1)[end]]):
                    found[slot] = (a, b - 1)[end]
                    break
    if intensity is not None and intensity.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(intensity))
        found[3] = int(bad[0]) if len(bad) else -1
    return found


@pytest.mark.parametrize("mz_dtype", ["<f4", "<f8", "<i4", "<i8"])
@pytest.mark.parametrize("in_dtype", ["<f4", "<f8", "<i4"])
@pytest.mark.parametrize("seed", range(6))
def test_check_matches_brute_force(mz_dtype, in_dtype, seed, tmp_path):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 40, 12)  # m/z order is scanned 8 points at a time, then a tail
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    n = int(offsets[-1])
    mz = np.concatenate([np.sort(rng.random(c) * 1000) for c in lengths]).astype(mz_dtype)
    intensity = rng.random(n).astype(in_dtype)
    if n:  # plant a few problems at random points (some seeds stay clean)
        for _ in range(int(rng.integers(0, 3))):
            i = int(rng.integers(0, n))
            if mz.dtype.kind == "f":
                mz[i] = rng.choice([np.nan, np.inf, -np.inf, -1.0])
            else:
                mz[i] = -1
        if intensity.dtype.kind == "f" and rng.random() < 0.5:
            intensity[int(rng.integers(0, n))] = rng.choice([np.nan, np.inf])
    got = binary.check(mz, offsets, intensity)
    assert got.tolist() == _reference_check(mz, offsets, intensity)
    assert binary.check(None, offsets, intensity)[:3].tolist() == [-1, -1, -1]
    assert binary.check(mz, offsets, None)[3] == -1
    # one spectrum per call: read from a file and checked in one compiled call, alike
    path = tmp_path / "values.bin"
    path.write_bytes(mz.tobytes() + intensity.tobytes())
    with open(path, "rb") as fh:
        for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
            got_mz, got_in = np.empty(b - a, mz.dtype), np.empty(b - a, intensity.dtype)
            for into in (got_mz, None):
                found = _gather.read_spectrum(fh.fileno(), None, a * mz.itemsize, into,
                                              mz.nbytes + a * intensity.itemsize, got_in)
                want = _reference_check(mz[a:b], np.array([0, b - a]), intensity[a:b])
                if into is None:
                    want[:3] = [-1, -1, -1]
                assert (found or (-1, -1, -1, -1)) == tuple(want)
            np.testing.assert_array_equal(got_mz, mz[a:b])
            np.testing.assert_array_equal(got_in, intensity[a:b])


def test_check_finds_each_problem_and_ignores_spectrum_boundaries():
    offsets = np.array([0, 3, 3, 6])
    mz = np.array([1.0, 2.0, 3.0, 0.5, 0.7, 0.9])  # a new spectrum may start lower
    intensity = np.ones(6, np.float32)
    assert binary.check(mz, offsets, intensity).tolist() == [-1, -1, -1, -1]
    bad = mz.copy()
    bad[4] = 0.1
    assert binary.check(bad, offsets, intensity).tolist()[0] == 4
    bad = mz.copy()
    bad[5] = np.inf  # ascending, but not finite: only the end check sees it
    assert binary.check(bad, offsets, intensity).tolist() == [-1, -1, 5, -1]
    bad[0] = -np.inf
    assert binary.check(bad, offsets, intensity).tolist() == [-1, 0, 5, -1]
    intensity[2] = np.nan
    assert binary.check(mz, offsets, intensity).tolist() == [-1, -1, -1, 2]
    with pytest.raises(ValueError):
        binary.check(mz, np.array([0, 7]), None)


def test_scratch_buffer_is_reused_per_thread(tmp_path):
    """read_ranges(scratch=True) reuses the thread's buffer; other threads get their own."""
    from ionmap._files import RangeReader

    data = np.random.default_rng(5).integers(0, 256, 50_000, dtype=np.uint8)
    path = tmp_path / "blob.bin"
    data.tofile(path)
    reader = RangeReader(str(path), {})
    starts, nbytes = np.array([100, 30_000, 7]), np.array([500, 64, 9])

    def read() -> tuple[np.ndarray, np.ndarray]:
        buf, pos = binary.read_ranges(reader, starts, nbytes, scratch=True)
        for p, s, c in zip(pos, starts, nbytes):
            np.testing.assert_array_equal(buf[p : p + c], data[s : s + c])
        return buf, pos

    a, _ = read()
    b, _ = read()
    assert np.shares_memory(a, b)
    other: list[np.ndarray] = []
    t = threading.Thread(target=lambda: other.append(read()[0]))
    t.start()
    t.join()
    assert not np.shares_memory(other[0], b)
    fresh, _ = binary.read_ranges(reader, starts, nbytes)
    assert not np.shares_memory(fresh, b)
    reader.close()


@pytest.mark.parametrize("plant", [
    # (spectrum, array, point, value) changes -> the spectrum and problem reported
    ([(1, "intensity", 2, np.nan), (9, "mz", 3, -1.0)], 9, "m/z values are not in ascending"),
    ([(1, "intensity", 0, np.inf), (9, "mz", -1, np.inf)], 9, "m/z array holds NaN"),
    ([(2, "mz", -1, np.inf), (8, "mz", 0, -np.inf)], 8, "m/z array holds NaN"),  # starts first
    ([(3, "intensity", 1, np.nan), (10, "intensity", 0, np.nan)], 3, "intensity array holds"),
    ([(6, "mz", 2, np.nan)], 6, "m/z array holds NaN"),
])
@pytest.mark.parametrize("stage", [64, 10**9])
def test_checks_in_stages_report_the_whole_batch_first_failure(write_imzml, monkeypatch,
                                                               plant, stage):
    """Checks run stage by stage but report what one pass over the batch would: m/z order
    first, then non-finite m/z starts, ends, then intensities, each in spectrum order."""
    import ionmap
    from ionmap.errors import SpectrumDataError

    changes, spectrum, problem = plant
    w = write_imzml(shape=(3, 4), points=10, seed=4)
    f = ionmap.open_imzml(w.path, cache=False)
    ibd = np.memmap(f.ibd_url, np.uint8, "r+")
    for i, kind, point, value in changes:
        dtype = f.mz_dtype if kind == "mz" else f.intensity_dtype
        start = int(getattr(f, f"{kind}_offsets")[i])
        n = int(getattr(f, f"{kind}_lengths")[i])
        values = ibd[start : start + n * dtype.itemsize].view(dtype)
        values[point] = value
    ibd.flush()
    del ibd, values
    monkeypatch.setattr(binary, "STAGE_BYTES", stage)
    f = ionmap.open_imzml(w.path, cache=False)
    assert (len(f._stages(np.arange(f.n_spectra), f.intensity_lengths * 12)) > 1) == (stage < 100)
    x, y = w.coords[spectrum]
    message = rf"spectrum {spectrum} \(x={x}, y={y}\): {problem}"
    with pytest.raises(SpectrumDataError, match=message):
        f.read_batch(np.arange(f.n_spectra))


def test_layout_problem_matches_numpy_and_the_kernels_refuse_bad_layouts():
    """The one-pass layout check against the NumPy statement of the rule, on seeded random
    layouts (good and broken offsets, starts past either end of the m/z array); and a
    kernel given a broken batch raises InputError instead of reading out of bounds."""
    rng = np.random.default_rng(5)
    for _ in range(2000):
        n = int(rng.integers(0, 5))
        lengths = rng.integers(-1 if rng.random() < 0.2 else 0, 4, n)
        offsets = np.concatenate([[int(rng.random() < 0.1)], lengths]).cumsum().astype(np.int64)
        starts = rng.integers(-1, 8, n).astype(np.int64)
        n_values = int(offsets[-1]) + int(rng.random() < 0.1)
        n_mz = int(rng.integers(0, 10))
        steps = np.diff(offsets)
        want = (1 if offsets[0] != 0 or offsets[-1] != n_values or (steps < 0).any()
                else 2 if ((starts < 0) | (starts + steps > n_mz)).any() else 0)
        assert _gather.layout_problem(offsets, starts, n_values, n_mz) == want
    bad = SpectrumBatch(np.zeros(1, np.int64), np.array([0, 3], np.int64), np.arange(2.0),
                        np.zeros(1, np.int64), np.ones(3))
    with pytest.raises(InputError, match="mz_starts point outside"):
        pick_peaks_batch(bad)


@pytest.mark.parametrize("intensity_first", [False, True])
def test_read_spectrum_through_the_read_ahead_window(tmp_path, intensity_first):
    """Spectra stored side by side in either order, small and large (beyond the window's
    8 KiB), read in file order through a ReadAhead window (refilled as the loop passes its
    end), in reverse and at random: always the stored values; a file that ends inside a
    spectrum raises OSError."""
    rng = np.random.default_rng(4)
    lengths = rng.choice([0, 1, 5, 90, 1200], 300, p=[.05, .05, .2, .65, .05])
    lengths[-2:] = 90  # the last two fit the window
    mzs = [np.sort(rng.random(k)) * 900 + 100 for k in lengths]
    ints = [rng.random(k).astype(np.float32) for k in lengths]
    blob, where = bytearray(), []
    for mz, it in zip(mzs, ints):
        first, second = (it, mz) if intensity_first else (mz, it)
        at = len(blob)
        blob += first.tobytes() + second.tobytes()
        where.append((at + it.nbytes, at) if intensity_first else (at, at + mz.nbytes))
    path = tmp_path / "spectra.bin"
    path.write_bytes(bytes(blob))
    ahead = _gather.ReadAhead()
    with open(path, "rb") as fh:
        for order in (range(300), range(299, -1, -1), rng.permutation(300), range(300)):
            for i in order:
                mz, it = np.empty(lengths[i]), np.empty(lengths[i], np.float32)
                assert _gather.read_spectrum(fh.fileno(), ahead, where[i][0], mz, where[i][1],
                                             it) is None
                np.testing.assert_array_equal(mz, mzs[i])
                np.testing.assert_array_equal(it, ints[i])
    live = np.flatnonzero(lengths)
    before, last = int(live[-2]), int(live[-1])
    path.write_bytes(bytes(blob[: max(where[last]) + 1]))

    def read(i, window):
        return _gather.read_spectrum(fh.fileno(), window, where[i][0], np.empty(lengths[i]),
                                     where[i][1], np.empty(lengths[i], np.float32))

    with open(path, "rb") as fh:
        for window in (None, _gather.ReadAhead()):
            if window is not None:  # a sequential read: the window's refill comes back short
                assert read(before, window) is None
            with pytest.raises(OSError, match="end of file"):
                read(last, window)


@pytest.mark.parametrize("mz_dtype", ["<f8", "<f4", "<i4"])
@pytest.mark.parametrize("seed", range(3))
def test_read_spectra_straight_into_place_matches_the_stored_values(mz_dtype, seed, tmp_path):
    """Many spectra per call (more than 1024 ranges, so several positional reads), stored
    in either order with gaps below and above the merge gap between them, requested in
    file order, reversed, at random and with repeats: the stored values, and the checks'
    first failures as binary.check finds them; a file that ends early raises OSError."""
    rng = np.random.default_rng(seed)
    m = 700
    lengths = rng.choice([0, 1, 7, 60, 400], m, p=[.05, .05, .3, .5, .1])
    mzs = [(np.sort(rng.random(k)) * 900 + 100).astype(mz_dtype) for k in lengths]
    ints = [rng.random(k).astype(np.float32) for k in lengths]
    blob, at_in, at_mz = bytearray(), [], []
    for mz, it in zip(mzs, ints):
        blob += bytes(int(rng.choice([0, 0, 3, 5000, binary.MERGE_GAP + 9])))  # gaps
        pairs = [(it, at_in), (mz, at_mz)]
        for values, where in (pairs if rng.random() < 0.5 else pairs[::-1]):
            where.append(len(blob))
            blob += values.tobytes()
    bad = int(rng.integers(0, m))
    if lengths[bad] > 1 and seed:  # a planted problem, found at its point of the batch
        mzs[bad] = mzs[bad][::-1].copy()
        blob[at_mz[bad] : at_mz[bad] + mzs[bad].nbytes] = mzs[bad].tobytes()
    path = tmp_path / "spectra.bin"
    path.write_bytes(bytes(blob))
    at_in, at_mz = np.array(at_in, np.int64), np.array(at_mz, np.int64)
    with open(path, "rb") as fh:
        for idx in (np.arange(m), np.arange(m)[::-1], rng.permutation(m),
                    rng.integers(0, m, 900)):
            offsets = np.concatenate([[0], np.cumsum(lengths[idx])]).astype(np.int64)
            intensity = np.full(offsets[-1], -1, np.float32)
            mz = np.zeros(offsets[-1], mz_dtype)
            starts = np.concatenate([at_in[idx], at_mz[idx]])
            order = np.argsort(starts, kind="stable")
            found = _gather.read_spectra(fh.fileno(), starts, order, offsets, intensity, mz,
                                         binary.MERGE_GAP)
            want_mz = np.concatenate([mzs[i] for i in idx])
            np.testing.assert_array_equal(mz, want_mz)
            np.testing.assert_array_equal(intensity, np.concatenate([ints[i] for i in idx]))
            assert (found or (-1, -1, -1, -1)) == tuple(
                _reference_check(want_mz, offsets, intensity))
    path.write_bytes(bytes(blob[:-1]))  # the last byte is a value: gaps come before
    with open(path, "rb") as fh, pytest.raises(OSError, match="end of file"):
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        starts = np.concatenate([at_in, at_mz])
        _gather.read_spectra(fh.fileno(), starts, np.argsort(starts), offsets,
                             np.empty(offsets[-1], np.float32), np.empty(offsets[-1], mz_dtype),
                             binary.MERGE_GAP)
