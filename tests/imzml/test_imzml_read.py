"""Reading spectra: parity with pyimzML, batches, threads, pickling, derived metadata."""
from __future__ import annotations

import pickle
import re
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from pyimzml.ImzMLParser import ImzMLParser

import ionmap
from ionmap.imzml import _binary as binary
from ionmap.imzml import _xml as xml
from ionmap.imzml._opener import read_metadata as _parse

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
CORPUS_FILES = sorted(p for p in CORPUS.glob("*/*") if p.suffix.lower() == ".imzml")


def assert_matches_pyimzml(path: Path) -> ionmap.ImzMLFile:
    """Metadata, every spectrum and its dtypes equal pyimzML's reading of ``path``."""
    f = ionmap.open_imzml(path, cache=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyimzML complains about Cardinal's term names
        ref = ImzMLParser(str(path))
    assert f.n_spectra == len(ref.coordinates)
    assert f.coordinates.dtype == np.int32  # compact: positions are at most MAX_GRID_SIDE
    np.testing.assert_array_equal(f.coordinates, np.array(ref.coordinates))
    batch = f.read_batch(np.arange(f.n_spectra))
    for i in range(f.n_spectra):
        mz, it = f.spectrum(i)
        rmz, rit = ref.getspectrum(i)
        assert mz.dtype == rmz.dtype and it.dtype == rit.dtype
        np.testing.assert_array_equal(mz, rmz)
        np.testing.assert_array_equal(it, rit)
        bmz, bit = batch.spectrum(i)
        np.testing.assert_array_equal(bmz, rmz)
        np.testing.assert_array_equal(bit, rit)
    ref.m.close()
    return f


def assert_fast_equals_slow(path: Path) -> int:
    """Both XML paths give identical metadata; returns how many spectra the fast scan read."""
    fast_fields, fast_arrays = _parse(str(path), {}, fast=True)
    slow_fields, slow_arrays = _parse(str(path), {}, fast=False)
    assert fast_fields == slow_fields
    for name in fast_arrays:
        np.testing.assert_array_equal(fast_arrays[name], slow_arrays[name])
    return xml.parse(path.read_bytes(), str(path)).n_fast


@pytest.mark.skipif(not CORPUS_FILES, reason="../shared/corpus not present")
@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_matches_pyimzml(path):
    f = assert_matches_pyimzml(path)
    assert f.shape[0] >= f.coordinates[:, 1].max() and f.shape[1] >= f.coordinates[:, 0].max()
    n_fast = assert_fast_equals_slow(path)
    assert n_fast == f.n_spectra  # these writers are regular: the fast scan reads them all


COMBOS = [(mode, kind, mzd, itd)
          for mode in ("continuous", "processed") for kind in ("profile", "centroid")
          for mzd in (np.float32, np.float64)
          for itd in (np.float32, np.float64, np.int32, np.int64)]


@pytest.mark.parametrize("mode,kind,mz_dtype,int_dtype", COMBOS,
                         ids=["-".join([m, k, np.dtype(a).name, np.dtype(b).name])
                              for m, k, a, b in COMBOS])
def test_generated_matches_pyimzml_and_written_data(write_imzml, mode, kind, mz_dtype, int_dtype):
    w = write_imzml(mode=mode, spectrum_type=kind, mz_dtype=mz_dtype, intensity_dtype=int_dtype,
                    polarity="positive", seed=hash((mode, kind)) % 1000)
    f = assert_matches_pyimzml(w.path)
    assert f.mode == mode and f.declared_mode == mode
    assert f.spectrum_type == kind and not f.spectrum_type_detected
    assert f.mz_dtype == np.dtype(mz_dtype) and f.intensity_dtype == np.dtype(int_dtype)
    assert f.polarity == "positive"
    assert f.shape == (3, 4)
    for i, (mz, it) in enumerate(zip(w.mzs, w.intensities)):
        got_mz, got_it = f.spectrum(i)
        np.testing.assert_array_equal(got_mz, mz)
        np.testing.assert_array_equal(got_it, it)
    assert assert_fast_equals_slow(w.path) == f.n_spectra


def test_batches_any_order_with_repeats(write_imzml):
    f = ionmap.open_imzml(write_imzml(points=40, seed=3).path, cache=False)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, f.n_spectra, 50)
    batch = f.read_batch(idx)
    np.testing.assert_array_equal(batch.index, idx)
    assert batch.offsets[0] == 0 and batch.offsets[-1] == len(batch.intensity)
    np.testing.assert_array_equal(batch.mz_starts, batch.offsets[:-1])  # processed layout
    for k, i in enumerate(idx):
        for got, want in zip(batch.spectrum(k), f.spectrum(int(i))):
            np.testing.assert_array_equal(got, want)
    with pytest.raises(IndexError):
        f.read_batch([f.n_spectra])


def test_continuous_batches_share_one_read_only_mz(write_imzml):
    f = ionmap.open_imzml(write_imzml(mode="continuous", spectrum_type="profile").path,
                          cache=False)
    a, b = f.read_batch([0, 5]), f.read_batch([3])
    assert a.mz is b.mz and a.shared_mz and not a.mz_starts.any()
    assert not a.mz.flags.writeable


def test_iter_batches_bounded_and_complete(write_imzml):
    f = ionmap.open_imzml(write_imzml(shape=(6, 7), points=50).path, cache=False)
    per_spectrum = f.intensity_lengths * 4 + f.mz_lengths * 8
    max_bytes = 2000
    batches = list(f.iter_batches(max_bytes=max_bytes))
    assert len(batches) > 5
    np.testing.assert_array_equal(np.concatenate([b.index for b in batches]),
                                  np.arange(f.n_spectra))
    for b in batches:  # about max_bytes: below it plus at most one spectrum's worth
        assert (b.lengths * 12).sum() <= max_bytes + per_spectrum.max()
    subset = np.array([9, 2, 30, 4])
    got = np.concatenate([b.index for b in f.iter_batches(subset, max_bytes=10**9)])
    np.testing.assert_array_equal(got, subset)


def test_concurrent_read_batch_from_threads(write_imzml):
    w = write_imzml(shape=(8, 8), points=60, seed=11)
    f = ionmap.open_imzml(w.path, cache=False)
    errors: list = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for _ in range(30):
                idx = rng.choice(f.n_spectra, size=int(rng.integers(1, 20)), replace=False)
                batch = f.read_batch(idx)
                for k, i in enumerate(idx):
                    mz, it = batch.spectrum(k)
                    assert np.array_equal(mz, w.mzs[i]) and np.array_equal(it, w.intensities[i])
        except Exception as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_pickle_round_trip_reopens_lazily(write_imzml):
    w = write_imzml(mode="continuous", spectrum_type="profile", seed=5)
    f = ionmap.open_imzml(w.path, cache=False)
    f.spectrum(0)  # handle open and shared m/z decoded: neither may travel
    g = pickle.loads(pickle.dumps(f))
    assert g._reader._fd is None and g._shared_mz is None
    assert g.url == f.url and g.shape == f.shape and g.mode == f.mode
    for i in range(f.n_spectra):
        np.testing.assert_array_equal(g.spectrum(i)[1], w.intensities[i])
    with g:
        g.spectrum(1)
    assert g._reader._fd is None


def strip(path: Path, pattern: bytes) -> None:
    path.write_bytes(re.sub(pattern, b"", path.read_bytes()))


@pytest.mark.parametrize("mode,kind", [("processed", "profile"), ("processed", "centroid"),
                                       ("continuous", "profile")])
def test_spectrum_type_detected_when_not_declared(write_imzml, mode, kind):
    w = write_imzml(mode=mode, spectrum_type=kind, points=60)
    strip(w.path, rb'\s*<cvParam[^>]*accession="MS:100012[78]"[^>]*/>')
    f = ionmap.open_imzml(w.path, cache=False)
    assert f.spectrum_type_detected
    assert f.spectrum_type == kind


def test_mz_range_from_xml_and_from_data(write_imzml):
    w = write_imzml(points=40, seed=8)
    lo = min(m.min() for m in w.mzs)
    hi = max(m.max() for m in w.mzs)
    f = ionmap.open_imzml(w.path, cache=False)
    assert f.mz_range == pytest.approx((lo, hi))  # pyimzML writes lowest/highest observed
    strip(w.path, rb'\s*<cvParam[^>]*accession="MS:100052[78]"[^>]*/>')
    g = ionmap.open_imzml(w.path, cache=False)
    assert g.metadata.mz_range is None  # not in the XML: read from the data on demand
    assert g.mz_range == (float(lo), float(hi))


def test_plan_merges_small_gaps_and_bounds_requests():
    starts = np.array([1000, 0, 100, 5000, 5010, 90000])
    nbytes = np.array([10, 50, 50, 4, 4, 10])
    rs, rl, of = binary.plan(starts, nbytes, max_gap=1000, max_request=10**6)
    np.testing.assert_array_equal(rs, [0, 5000, 90000])
    np.testing.assert_array_equal(rl, [1010, 14, 10])
    np.testing.assert_array_equal(of, [0, 0, 0, 1, 1, 2])
    rs, rl, of = binary.plan(np.arange(0, 1000, 10), np.full(100, 10), max_gap=0,
                             max_request=100)
    assert (rl <= 100 + 10).all() and len(rs) == 10
    rs, rl, of = binary.plan(np.array([0, 0, 4]), np.array([8, 8, 8]), max_gap=0)
    assert list(rs) == [0] and list(rl) == [12] and list(of) == [0, 0, 0]


@pytest.mark.parametrize("stage", [64, 1000, 10**9])
def test_staged_reads(write_imzml, monkeypatch, stage):
    """Processed batches in file order are read through a small buffer in stages."""
    monkeypatch.setattr(binary, "STAGE_BYTES", stage)
    w = write_imzml(shape=(5, 6), points=40, seed=17, intensity_dtype=np.float32)
    f = ionmap.open_imzml(w.path, cache=False)
    n = f.n_spectra
    stages = f._stages(np.arange(n), f.intensity_lengths * 4 + f.mz_lengths * 8)
    assert (len(stages) > 3) == (stage < 10**9)
    for idx in (np.arange(n), np.arange(3, n - 2), np.random.default_rng(0).permutation(n)):
        batch = f.read_batch(idx)
        for k, i in enumerate(idx):
            mz, it = batch.spectrum(k)
            np.testing.assert_array_equal(mz, w.mzs[i])
            np.testing.assert_array_equal(it, w.intensities[i])


@pytest.mark.parametrize("layout", ["adjacent", "strided", "increasing", "gather", "misaligned"])
@pytest.mark.parametrize("into", [False, True])
def test_gather_layouts(layout, into):
    rng = np.random.default_rng(1)
    buf = np.zeros(4096, np.uint8)
    values = rng.random(200)
    if layout == "adjacent":
        pos, counts = np.array([16, 16 + 8 * 5]), np.array([5, 7])
    elif layout == "strided":
        pos, counts = np.arange(4) * 96 + 8, np.full(4, 6)
    elif layout == "increasing":
        pos, counts = np.array([8, 104, 400, 2000]), np.array([3, 0, 9, 1])
    elif layout == "gather":
        pos, counts = np.array([800, 8, 400, 2000]), np.array([3, 0, 9, 1])
    else:
        pos, counts = np.array([12, 204, 1004]), np.array([4, 4, 3])
    want = []
    for p, c in zip(pos, counts):
        chunk = values[: int(c)]
        values = values[int(c) :]
        buf[p : p + 8 * c] = np.frombuffer(chunk.astype("<f8").tobytes(), np.uint8)
        want.append(chunk)
    out = np.full(int(counts.sum()), np.nan) if into else None
    got = binary.gather(buf, pos, counts, np.dtype("<f8"), out=out)
    np.testing.assert_array_equal(got, np.concatenate(want))
    assert got is out if into else True


def written_file(path: Path, mode: str, n: int = 400, seed: int = 0) -> Path:
    """n spectra of 1 to 1500 points (most near 100, some beyond the read-ahead window's
    8 KiB), float64 m/z and float32 intensities, written by pyimzML."""
    from pyimzml.ImzMLWriter import ImzMLWriter

    rng = np.random.default_rng(seed)
    axis = np.sort(rng.uniform(100.0, 1000.0, 1500))
    with ImzMLWriter(str(path), mode=mode, mz_dtype=np.float64, intensity_dtype=np.float32,
                     spec_type="centroid" if mode == "processed" else "profile") as w:
        for i in range(n):
            k = int(rng.choice([1, 3, 100, 120, 900, 1500], p=[.05, .05, .5, .3, .05, .05]))
            mz = np.sort(rng.uniform(100.0, 1000.0, k)) if mode == "processed" else axis
            w.addSpectrum(mz, rng.random(len(mz), dtype=np.float32), (i % 20 + 1, i // 20 + 1))
    return path


@pytest.mark.parametrize("mode", ["processed", "continuous"])
def test_one_spectrum_per_call_path(tmp_path, monkeypatch, mode):
    """spectrum(i) reads a local file in one compiled call (positional reads or copies from
    the thread's read-ahead window, and the checks), equal to read_batch and to pyimzML in
    file order, in reverse, at random and from several threads; after close() it reopens; a
    read that fails there (the .ibd shrank after the open) is reported by the reader, naming
    the file."""
    from concurrent.futures import ThreadPoolExecutor

    from ionmap._files import RangeReader
    from ionmap.errors import StorageError

    path = written_file(tmp_path / "run.imzML", mode)
    f = ionmap.open_imzml(path, cache=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ImzMLParser(str(path))
    want = [ref.getspectrum(i) for i in range(f.n_spectra)]
    ref.m.close()
    batch = f.read_batch(np.arange(f.n_spectra))
    calls = []
    general = RangeReader.read_into
    monkeypatch.setattr(RangeReader, "read_into",
                        lambda self, *a: calls.append(1) or general(self, *a))
    f.spectrum(0)  # continuous mode: reads the shared m/z array through the reader, once
    calls.clear()

    def same(order):
        for i in order:
            mz, it = f.spectrum(int(i))
            assert it.flags.writeable and it.flags.c_contiguous
            for got, ref_arr, batch_arr in zip((mz, it), want[i], batch.spectrum(i)):
                assert got.dtype == ref_arr.dtype
                np.testing.assert_array_equal(got, ref_arr)
                np.testing.assert_array_equal(got, batch_arr)
        return True

    n = f.n_spectra
    rng = np.random.default_rng(1)
    assert same(range(n)) and same(range(n - 1, -1, -1)) and same(rng.permutation(n))
    assert same(np.repeat(np.arange(0, n, 7), 2))
    with ThreadPoolExecutor(2) as pool:  # each thread its own window
        assert all(pool.map(same, [range(n), rng.permutation(n), range(n)]))
    f.close()  # the next call opens the .ibd again
    assert same(range(0, n, 3))
    assert calls == []  # not one read went through the general path
    f.close()
    ibd = path.with_suffix(".ibd")
    last = int(np.argmax(f.intensity_offsets))
    with open(ibd, "r+b") as fh:
        fh.truncate(int(f.intensity_offsets[last]) + 1)
    for i in (last, last - 1):  # a read of just the spectrum / a window read after another
        f.close()
        with pytest.raises(StorageError, match="unexpected end of file") as info:
            f.spectrum(i) if i == last else (f.spectrum(i), f.spectrum(last))
        assert str(ibd) in str(info.value) and calls  # the general path raised it
