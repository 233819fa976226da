"""ionmap.convert against brute-force references computed from pyimzML spectra with NumPy.

References: every spectrum from pyimzML ``getspectrum``; a pixel's value for a window is the
sequential float64 sum of the intensities with lo <= m/z <= hi (m/z compared in float64),
stored as float32; TIC the same over all points; with peaks, the kernel's single-spectrum
``pick_peaks`` on each pyimzML spectrum first.
"""
from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np
import pytest
from pyimzml.ImzMLParser import ImzMLParser

import ionmap
from conftest import brute_mean2
from ionmap import kernels
from ionmap import store as st
from ionmap.batch import SpectrumBatch
from ionmap.chem import Target, panel
from ionmap.cli import main
from ionmap.errors import InputError, StorageError
from ionmap.synth import make_sample

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
CORPUS_FILES = sorted(p for p in CORPUS.glob("*/*") if p.suffix.lower() == ".imzml")
SMALL = (36, 44)  # small, yet the generator fits its three niches (with a 10 µm rim)


def _seqsum(values: np.ndarray) -> float:
    """Sequential float64 sum in point order (the kernels' exact accumulation)."""
    return float(np.cumsum(values.astype(np.float64))[-1]) if values.size else 0.0


def _spectra(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parser = ImzMLParser(str(path))
    for i, (x, y, _) in enumerate(parser.coordinates):
        mz, intensity = parser.getspectrum(i)
        yield x, y, np.asarray(mz), np.asarray(intensity)


def reference(path, windows, shape, *, pick_snr=None, normalize="none"):
    """(images (K, ny, nx) float32, tic float32, mask bool) from pyimzML spectra."""
    k = len(windows)
    images = np.zeros((k, *shape))
    tic = np.zeros(shape)
    norm = np.zeros(shape)
    mask = np.zeros(shape, bool)
    for x, y, mz, intensity in _spectra(path):
        px = (y - 1, x - 1)
        mask[px] = True
        tic[px] = _seqsum(intensity)
        sq = intensity.astype(np.float64) ** 2
        norm[px] = tic[px] if normalize == "tic" else (
            np.sqrt(_seqsum(sq) / sq.size) if sq.size else 0.0)
        if pick_snr is not None:
            mz, intensity = kernels.pick_peaks(mz, intensity, snr=pick_snr)
        mz = mz.astype(np.float64)
        for j, (lo, hi) in enumerate(windows):
            images[(j, *px)] = _seqsum(intensity[(mz >= lo) & (mz <= hi)])
    images = images.astype(np.float32)
    if normalize != "none":
        scale = float(np.median(norm[norm > 0]))
        factor = np.zeros(shape)
        np.divide(scale, norm, out=factor, where=norm > 0)
        images = (images * factor).astype(np.float32)
    return images, tic.astype(np.float32), mask


def _windows(targets, ppm=10.0):
    return [(t.mz * (1 - (t.ppm or ppm) * 1e-6), t.mz * (1 + (t.ppm or ppm) * 1e-6))
            for t in targets]


def _data_targets(path):
    """Targets on real points of the file: exact peak, a random point, a wide window, an
    m/z below the range."""
    spectra = [s for s in _spectra(path) if s[2].size]
    rng = np.random.default_rng(7)
    first = spectra[0]
    mid = spectra[len(spectra) // 2]
    targets = [Target("apex", float(first[2][np.argmax(first[3])]), 5.0),
               Target("point", float(mid[2][rng.integers(mid[2].size)]), 50.0),
               Target("wide", float(np.median(mid[2])), 3000.0),
               Target("outside", 5.0, 10.0)]
    return targets


def _assert_result(res, images, tic, mask):
    assert res.complete
    assert res.shape == mask.shape
    np.testing.assert_array_equal(res.mask, mask)
    np.testing.assert_array_equal(res.tic, tic)
    np.testing.assert_array_equal(res.ion_images.compute(), images)


def _grid(path):
    """Reader shape, checked to hold every coordinate."""
    shape = ionmap.open_imzml(str(path)).shape
    for x, y, _, _ in _spectra(path):
        assert y <= shape[0] and x <= shape[1]
    return shape


@pytest.mark.skipif(not CORPUS_FILES, reason="../shared/corpus not present")
@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_ion_images_equal_reference(path, tmp_path):
    targets = _data_targets(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 'outside' is outside the m/z range on purpose
        res = ionmap.convert(path, tmp_path / "out.zarr", targets=targets, progress=False,
                             workers=2, recalibrate="none")
    shape = _grid(path)
    _assert_result(res, *reference(path, _windows(targets), shape))
    assert res.target_names == ["apex", "point", "wide", "outside"]
    assert not res.ion_image("outside").any()
    assert res.ion_image("apex").any()


COMBOS = list(itertools.product(("processed", "continuous"), ("profile", "centroid"),
                                ("float32", "float64"), ("float32", "float64")))


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """Small synthetic samples, made once per module, keyed by (mode, type, mz, intensity)."""
    root = tmp_path_factory.mktemp("samples")
    cache = {}

    def get(mode, kind, mzd="float64", intd="float32", polarity="negative"):
        key = (mode, kind, mzd, intd, polarity)
        if key not in cache:
            name = "-".join(key)
            cache[key] = make_sample(root, name, seed=3, mode=mode, spectrum_type=kind,
                                     mz_dtype=mzd, intensity_dtype=intd, polarity=polarity,
                                     shape=SMALL, rim_um=10.0)
        return cache[key]

    return get


@pytest.mark.parametrize("mode,kind,mzd,intd", COMBOS)
def test_generated_files_equal_reference(mode, kind, mzd, intd, samples, tmp_path):
    sample = samples(mode, kind, mzd, intd)
    res = ionmap.convert(sample.imzml, tmp_path / "out.zarr", progress=False, band_rows=8,
                         recalibrate="none")
    targets = panel("tme-negative")
    _assert_result(res, *reference(sample.imzml, _windows(targets), tuple(SMALL)))
    assert res.target_names == [t.name for t in targets]
    assert res.ion_image("lactate").max() > 0
    t = res.targets[0]
    assert (t["name"], t["formula"], t["adduct"], t["ppm"]) == ("lactate", "C3H6O3", "[M-H]-", 10)
    assert abs(t["mz"] - 89.0244) < 1e-4
    assert res.pixel_size_um == (25.0, 25.0)


@pytest.mark.parametrize("mode", ["processed", "continuous"])
def test_peaks_equal_reference(mode, samples, tmp_path):
    sample = samples(mode, "profile")
    res = ionmap.convert(sample.imzml, tmp_path / "out.zarr", peaks=True, ppm=20,
                         progress=False, snr=4.0, recalibrate="none")
    targets = panel("tme-negative")
    expected = reference(sample.imzml, _windows(targets, 20), SMALL, pick_snr=4.0)
    _assert_result(res, *expected)
    # picked peaks see the planted ions, and the values differ from raw-point sums
    raw = reference(sample.imzml, _windows(targets, 20), SMALL)[0]
    assert expected[0][0].max() > 0 and not np.array_equal(expected[0], raw)


@pytest.mark.parametrize("method", ["tic", "rms"])
def test_normalize_equals_reference(method, samples, tmp_path):
    sample = samples("processed", "profile")
    res = ionmap.convert(sample.imzml, tmp_path / "out.zarr", normalize=method,
                         progress=False, band_rows=8,
                         recalibrate="none")
    _assert_result(res, *reference(sample.imzml, _windows(panel("tme-negative")), SMALL,
                                   normalize=method))
    assert res.attrs["normalization"]["method"] == method
    assert not (tmp_path / "out.zarr" / st.WORK).exists()


def _one(mz, intensity):
    return SpectrumBatch(np.zeros(1, np.int64), np.array([0, intensity.size]), mz,
                         np.zeros(1, np.int64), intensity)


@pytest.mark.parametrize("mode,kind", [("continuous", "profile"), ("processed", "centroid")])
def test_features_equal_reference(mode, kind, samples, tmp_path):
    sample = samples(mode, kind)
    res = ionmap.convert(sample.imzml, tmp_path / "out.zarr", features=True, ppm=10,
                         progress=False, axis_sample=None, band_rows=8,
                         recalibrate="none")
    peak_lists = []
    for x, y, mz, intensity in _spectra(sample.imzml):
        if kind == "profile":
            mz, intensity = kernels.pick_peaks(mz, intensity, snr=3.0)
        peak_lists.append((x, y, np.asarray(mz), np.asarray(intensity)))
    axis = kernels.build_mz_axis((_one(m, i) for _, _, m, i in peak_lists), ppm=10)
    np.testing.assert_array_equal(res.features_mz, axis)
    assert len(axis) > 10
    cube = np.zeros((len(axis), *SMALL), np.float32)
    for x, y, mz, intensity in peak_lists:
        cube[:, y - 1, x - 1] = kernels.bin_to_axis(_one(mz, intensity), axis, ppm=10)[0]
    np.testing.assert_array_equal(res.features.compute(), cube)
    # Planted truth, independent of the kernels: every panel metabolite is a feature within
    # a few ppm of its formula m/z, and its feature image follows its ion image.
    for t in res.targets:
        k = int(np.argmin(np.abs(axis - t["mz"])))
        assert abs(axis[k] - t["mz"]) / t["mz"] < 5e-6, t["name"]
        ion, feature = res.ion_image(t["name"]), cube[k]
        assert np.corrcoef(ion[res.mask], feature[res.mask])[0, 1] > 0.9, t["name"]


def test_axis_from_a_sample_of_spectra(samples, tmp_path):
    sample = samples("processed", "centroid")
    res = ionmap.convert(sample.imzml, tmp_path / "out.zarr", features=True, progress=False,
                         axis_sample=40)
    full = ionmap.convert(sample.imzml, tmp_path / "full.zarr", features=True,
                          progress=False, axis_sample=None)
    assert res.attrs["parameters"]["axis_sample"] == 40
    # the planted ions are common: a 40-spectrum sample finds most features of the full axis
    near = np.abs(res.features_mz[:, None] - full.features_mz[None, :]).min(axis=0)
    assert (near < full.features_mz * 10e-6).mean() > 0.8


def test_resume_after_interruption_equals_uninterrupted(samples, tmp_path, monkeypatch):
    from ionmap.engine import _convert as engine_convert

    sample = samples("processed", "profile")
    options = dict(progress=False, band_rows=4, workers=1, normalize="tic")
    whole = ionmap.convert(sample.imzml, tmp_path / "whole.zarr", **options)
    original = engine_convert._band_task
    calls = []
    interrupt = [True]

    def flaky(src, band, *args):
        calls.append(band.index)
        if len(calls) == 3 and interrupt and interrupt.pop():
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the third band
        return original(src, band, *args)

    monkeypatch.setattr(engine_convert, "_band_task", flaky)
    out = tmp_path / "out.zarr"
    with pytest.raises(KeyboardInterrupt):
        ionmap.convert(sample.imzml, out, **options)
    with pytest.raises(StorageError, match="incomplete"):
        ionmap.open_result(out)
    done = st.read_root_attrs(st.open_store(out))["progress"]["bands_done"]
    assert done == sorted(calls[:2])
    with pytest.raises(StorageError, match="resume=True"):
        ionmap.convert(sample.imzml, out, **options)
    calls.clear()
    res = ionmap.convert(sample.imzml, out, resume=True, **options)
    assert sorted(calls) == [b for b in range(whole.attrs["layout"]["n_bands"]) if b not in done]
    _assert_result(res, whole.ion_images.compute(), whole.tic, whole.mask)
    for level in range(1, whole.n_levels):
        np.testing.assert_array_equal(res.ion_level(level).compute(),
                                      whole.ion_level(level).compute())
    # resuming a finished result does nothing; other parameters are refused
    calls.clear()
    ionmap.convert(sample.imzml, out, resume=True, **options)
    assert calls == []
    with pytest.raises(StorageError, match="different targets or parameters"):
        ionmap.convert(sample.imzml, out, resume=True, **{**options, "normalize": "rms"})


def test_distributed_cluster_equals_threads(samples, tmp_path):
    distributed = pytest.importorskip("distributed")
    sample = samples("continuous", "profile")
    threads = ionmap.convert(sample.imzml, tmp_path / "t.zarr", progress=False, band_rows=4,
                             peaks=True, features=True, axis_sample=None)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        dist = ionmap.convert(sample.imzml, tmp_path / "d.zarr", progress=False, band_rows=4,
                              peaks=True, features=True, axis_sample=None,
                              scheduler=cluster.scheduler_address)
    _assert_result(dist, threads.ion_images.compute(), threads.tic, threads.mask)
    np.testing.assert_array_equal(dist.features_mz, threads.features_mz)
    np.testing.assert_array_equal(dist.features.compute(), threads.features.compute())


def test_store_opens_in_ome_zarr_reader_with_channel_labels(samples, tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    sample = samples("processed", "centroid")
    res = ionmap.convert(sample.imzml, tmp_path / "out.zarr", progress=False)
    node = list(Reader(parse_url(str(tmp_path / "out.zarr" / "ion_images")))())[0]
    assert node.metadata["channel_names"] == res.target_names
    np.testing.assert_array_equal(np.asarray(node.data[0]), res.ion_images.compute())
    attrs = res.attrs
    src = ionmap.open_imzml(sample.imzml)
    assert attrs["source"]["uuid"] == src.uuid and src.uuid
    assert attrs["source"]["size"] == sample.ibd.stat().st_size
    assert attrs["version"] == ionmap.__version__ and attrs["complete"] is True


def test_targets_csv_and_polarity(samples, tmp_path):
    sample = samples("processed", "centroid", polarity="positive")
    csv = tmp_path / "targets.csv"
    csv.write_text("name,mz,ppm\nfirst,205.0972,20\nsecond,760.5851,\n")
    res = ionmap.convert(sample.imzml, tmp_path / "a.zarr", targets=csv, progress=False)
    assert res.target_names == ["first", "second"]
    assert [t["ppm"] for t in res.targets] == [20.0, 10.0]
    assert res.attrs["parameters"]["targets_from"] == str(csv)
    auto = ionmap.convert(sample.imzml, tmp_path / "b.zarr", progress=False)
    assert auto.target_names == [t.name for t in panel("tme-positive")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ionmap.convert(sample.imzml, tmp_path / "c.zarr", panel="tme-negative",
                       progress=False)
    messages = [str(w.message) for w in caught]
    assert any("no target is a positive ion" in m for m in messages)
    assert any("outside the file's m/z range" in m and "lactate" in m for m in messages)
    bad = tmp_path / "bad.csv"
    bad.write_text("name,weight\nx,3\n")
    with pytest.raises(InputError, match="bad.csv"):
        ionmap.convert(sample.imzml, tmp_path / "d.zarr", targets=bad, progress=False)


def test_cli_convert_and_errors(samples, tmp_path, capsys):
    sample = samples("processed", "centroid")
    out = tmp_path / "cli.zarr"
    assert main(["convert", str(sample.imzml), str(out), "--quiet", "--ppm", "15"]) == 0
    printed = capsys.readouterr().out
    assert "15 ion images of 36 x 44 pixels" in printed
    # the interference table: oleate [M+Na-2H]- is 7.9 ppm from arachidonate; centroid
    # spectra carry no peak width
    rows = [line for line in printed.splitlines() if "other ions in the window" in line
            or "oleate [M+Na-2H]- (-7.9 ppm)" in line]
    assert len(rows) == 2 and rows[1].startswith("arachidonate") and "undetermined" in rows[1]
    assert ionmap.open_result(out).attrs["parameters"]["ppm"] == 15.0
    # a second run refuses to replace the result, --overwrite replaces it
    assert main(["convert", str(sample.imzml), str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0] and str(out) in err[0]
    assert main(["convert", str(sample.imzml), str(out), "--quiet", "--overwrite"]) == 0
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "missing.imzML"), str(tmp_path / "x.zarr"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.imzML" in err[0]
    assert main(["convert", str(sample.imzml), str(tmp_path / "y.zarr"), "--quiet",
                 "--storage-option", "oops"]) == 2


def test_bad_options_are_refused_before_any_work(samples, tmp_path):
    sample = samples("processed", "centroid")
    out = tmp_path / "never.zarr"
    for bad in ({"normalize": "max"}, {"ppm": 0}, {"analyzer": "ion trap"},
                {"min_fraction": 2}, {"workers": 0}):
        with pytest.raises(InputError):
            ionmap.convert(sample.imzml, out, progress=False, **bad)
    with pytest.raises(InputError, match="empty target list"):
        ionmap.convert(sample.imzml, out, targets=[], progress=False)
    with pytest.raises(InputError, match="unknown panel"):
        ionmap.convert(sample.imzml, out, panel="tme-sideways", progress=False)
    assert not out.exists()


@pytest.mark.parametrize("normalize", ["none", "tic"])
def test_every_pyramid_level_is_the_mean_of_the_level_below(tmp_path, normalize):
    """Pyramid parts built beside the bands, each once the rows it averages are written (or
    after normalising): every level of the ion images and the TIC equals the 2 × 2 means
    of the level below, also where a level has an odd number of rows."""
    sample = make_sample(tmp_path, "deep", seed=2, mode="processed", spectrum_type="centroid",
                         shape=(26, 600), rim_um=10.0)
    res = ionmap.convert(sample.imzml, tmp_path / "out.zarr", band_rows=2, normalize=normalize)
    assert [res.ion_level(level).shape[1] for level in range(res.n_levels)] == [26, 13, 7]
    for level in range(1, res.n_levels):
        for get in (res.ion_level, res.tic_level):
            below = np.asarray(get(level - 1), dtype=np.float64)
            assert below.any()
            np.testing.assert_allclose(np.asarray(get(level)), brute_mean2(below), rtol=1e-6)
