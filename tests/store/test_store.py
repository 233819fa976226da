"""The result store layout, band planning, pyramid, checkpoints and labels (no imzML needed)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from conftest import brute_mean2
from ionmap import StorageError, open_result
from ionmap import store as st
from ionmap.batch import SpectrumBatch
from ionmap.engine._plan import choose_band_rows, plan_bands
from ionmap.store import Layout, level_shapes


def _fake_result(path, shape=(300, 520), k=3, band_rows=64, pixel=(10.0, 12.5), seed=0):
    """A complete result written through the store API from known arrays."""
    layout = Layout(shape, band_rows)
    levels = level_shapes(shape)
    names = [f"t{i}" for i in range(k)]
    attrs = {"shape": list(shape), "targets": [{"name": n} for n in names],
             "layout": {"band_rows": band_rows, "levels": len(levels)},
             "pixel_size_um": list(pixel), "progress": {"bands_done": []}, "complete": False}
    store = st.open_store(path)
    st.create_result(store, attrs, layout, names, pixel, normalized=False)
    rng = np.random.default_rng(seed)
    images = rng.random((k, *shape)).astype(np.float32)
    tic = rng.random(shape).astype(np.float32)
    mask = rng.random(shape) > 0.3
    for b in range(layout.n_bands):
        y0, y1 = layout.band_range(b)
        st.write_band(store, y0, images=images[:, y0:y1], tic=tic[y0:y1], mask=mask[y0:y1])
    for level, lshape in enumerate(levels[1:], start=1):
        lay = Layout(lshape, band_rows)
        for group in (st.ION, st.TIC):
            for b in range(lay.n_bands):
                st.pyramid_band(store, group, level, *lay.band_range(b))
    st.write_display_ranges(store, names)
    checkpoint = st.Checkpoint(store, attrs)
    checkpoint.finish()
    return store, names, images, tic, mask


def test_plan_bands_assigns_every_spectrum_to_the_band_of_its_row():
    rng = np.random.default_rng(1)
    ny, nx = 45, 17
    pixels = rng.choice(ny * nx, size=500, replace=False)
    coords = np.stack([pixels % nx + 1, pixels // nx + 1, np.ones_like(pixels)], axis=1)
    layout = Layout((ny, nx), 8)
    bands = plan_bands(coords, layout)
    assert [b.index for b in bands] == list(range(6))
    seen = np.concatenate([b.spectra for b in bands])
    assert sorted(seen) == list(range(500))
    for b in bands:
        rows = coords[b.spectra, 1] - 1
        assert ((rows >= b.y0) & (rows < b.y1)).all()
        assert (np.diff(b.spectra) > 0).all()  # file order kept for coalesced reads
    assert bands[-1].y1 == ny


def test_layout_chunks_are_one_band_tall_and_full_width():
    layout = Layout((300, 520), 64)
    assert layout.chunking((5, 300, 520), 4, 1) == ((1, 64, 256), (5, 64, 768))
    assert layout.chunking((5, 300, 520)) == ((5, 64, 256), (5, 64, 768))
    assert layout.chunking((20, 30)) == ((20, 30), (20, 30))
    # the feature cube packs planes into ~1 MB inner chunks (few chunks per shard)
    assert layout.chunking((900, 300, 520), 4, 0) == ((16, 64, 256), (912, 64, 768))
    assert layout.n_bands == 5 and layout.band_range(4) == (256, 300)


def test_band_rows_follow_file_size_and_memory_not_workers():
    # a small file: one band; a big one: many bands; huge planes: memory-bound rows
    assert choose_band_rows((316, 316), 53, 50 * 2**20) == 256
    rows = choose_band_rows((316, 316), 53, 1600 * 2**20)
    assert 16 <= rows <= 40 and rows % 8 == 0
    assert choose_band_rows((1000, 1000), 5003, 10 * 2**30) < 8
    assert choose_band_rows((5, 7), 3, 10 * 2**30) == 5


def test_written_bands_pyramid_and_metadata(tmp_path):
    path = tmp_path / "r.zarr"
    _, names, images, tic, mask = _fake_result(path)
    res = open_result(path)
    assert res.complete and res.shape == (300, 520) and res.target_names == names
    assert res.pixel_size_um == (10.0, 12.5)
    assert res.label_names == [] and res.features is None and res.features_mz is None
    np.testing.assert_array_equal(res.ion_images.compute(), images)
    np.testing.assert_array_equal(res.ion_image("t1"), images[1])
    np.testing.assert_array_equal(res.tic, tic)
    np.testing.assert_array_equal(res.mask, mask)
    expected = images
    for level in range(1, res.n_levels):
        expected = brute_mean2(expected.astype(np.float64)).astype(np.float32)
        np.testing.assert_allclose(res.ion_level(level).compute(), expected, rtol=1e-6)
    assert res.ion_level(res.n_levels - 1).shape == (3, 75, 130)
    # the OME-NGFF 0.5 metadata is valid and scales are in µm (x = 10, y = 12.5)
    from ome_zarr_models.v05.image import Image

    image = Image.from_zarr(zarr.open_group(path / st.ION, mode="r"))
    ms = image.attributes.ome.multiscales[0]
    assert [a.name for a in ms.axes] == ["c", "y", "x"]
    assert ms.datasets[1].coordinateTransformations[0].scale == [1.0, 25.0, 20.0]
    assert zarr.open_array(path / st.ION / "0").metadata.dimension_names == ("c", "y", "x")
    omero = zarr.open_group(path / st.ION).attrs["ome"]["omero"]
    assert [c["label"] for c in omero["channels"]] == names
    assert all(0 < c["window"]["end"] <= c["window"]["max"] for c in omero["channels"])


def test_ome_zarr_reader_shows_channel_labels(tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    _, names, images, _, _ = _fake_result(tmp_path / "r.zarr", shape=(40, 30), k=4)
    node = list(Reader(parse_url(str(tmp_path / "r.zarr" / st.ION)))())[0]
    assert node.metadata["channel_names"] == names
    np.testing.assert_array_equal(np.asarray(node.data[0]), images)


def test_few_objects_for_a_100k_pixel_50_target_result(tmp_path):
    # 316 x 316 pixels, 50 targets, bands chosen for a 1.6 GB file: a few dozen objects
    shape, k = (316, 316), 50
    rows = choose_band_rows(shape, k + 3, 1600 * 2**20)
    _fake_result(tmp_path / "r.zarr", shape=shape, k=k, band_rows=rows)
    files = [p for p in (tmp_path / "r.zarr").rglob("*") if p.is_file()]
    assert len(files) <= 72, len(files)


def test_labels_open_over_the_ion_images(tmp_path):
    path = tmp_path / "r.zarr"
    _fake_result(path, shape=(40, 30))
    labels = np.zeros((40, 30), np.int32)
    labels[5:10, 3:9] = 1
    labels[20:30, 10:20] = 2
    st.write_labels(path, "hotspots", labels, colors={1: (255, 0, 0, 255)},
                    properties={1: {"map": "lactate"}, 2: {"map": "kynurenine"}})
    st.write_labels(path, "other", labels * 0)
    res = open_result(path)
    assert res.label_names == ["hotspots", "other"]
    np.testing.assert_array_equal(res.labels("hotspots"), labels)
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    from ome_zarr_models.v05.labels import Labels

    Labels.from_zarr(zarr.open_group(path / st.ION / st.LABELS, mode="r"))
    nodes = list(Reader(parse_url(str(path / st.ION / st.LABELS / "hotspots")))())
    label_node = [n for n in nodes if n.metadata.get("name") == "hotspots"][0]
    assert label_node.metadata["properties"][2] == {"map": "kynurenine"}
    with pytest.raises(Exception, match="shape"):
        st.write_labels(path, "bad", np.zeros((3, 3), np.int32))
    with pytest.raises(Exception, match="integers"):
        st.write_labels(path, "bad", np.zeros((40, 30)))


def test_incomplete_store_is_not_mistaken_for_complete(tmp_path):
    path = tmp_path / "r.zarr"
    store, *_ = _fake_result(path, shape=(20, 20))
    attrs = st.read_root_attrs(store)
    attrs["complete"] = False
    st.update_root_attrs(store, attrs)
    with pytest.raises(StorageError, match="incomplete"):
        open_result(path)
    assert not open_result(path, allow_incomplete=True).complete
    with pytest.raises(StorageError, match="resume=True"):
        st.prepare_output(str(path), None, resume=False, overwrite=False)
    _, previous = st.prepare_output(str(path), None, resume=True, overwrite=False)
    assert previous["complete"] is False


def test_existing_outputs_are_protected(tmp_path):
    path = tmp_path / "r.zarr"
    _fake_result(path, shape=(20, 20))
    with pytest.raises(StorageError, match="overwrite=True"):
        st.prepare_output(str(path), None, resume=False, overwrite=False)
    store, previous = st.prepare_output(str(path), None, resume=False, overwrite=True)
    assert previous is None and st.read_root_attrs(store) is None
    other = tmp_path / "precious"
    other.mkdir()
    (other / "thesis.txt").write_text("do not delete")
    for overwrite in (False, True):
        with pytest.raises(StorageError, match="not an ionmap result"):
            st.prepare_output(str(other), None, resume=False, overwrite=overwrite)
    assert (other / "thesis.txt").exists()
    with pytest.raises(StorageError, match="not an ionmap result"):
        open_result(other)


def test_checkpoint_is_throttled_and_flushed(tmp_path):
    path = tmp_path / "r.zarr"
    store, *_ = _fake_result(path, shape=(20, 20))
    attrs = st.read_root_attrs(store)
    attrs["progress"]["bands_done"] = []
    cp = st.Checkpoint(store, attrs, interval=3600)
    cp._written = float("-inf")  # long ago: the first band is written at once
    cp.band_done(2)
    assert st.read_root_attrs(store)["progress"]["bands_done"] == [2]
    cp.band_done(0)  # within the interval: not yet written
    assert st.read_root_attrs(store)["progress"]["bands_done"] == [2]
    cp.flush()
    assert st.read_root_attrs(store)["progress"]["bands_done"] == [0, 2]
    assert json.loads((path / "zarr.json").read_text())["attributes"]["ionmap"]["progress"]


@pytest.mark.parametrize("shape", [(2, 5, 7), (3, 6, 8), (4, 7, 1), (1, 1), (1, 2), (2, 1),
                                   (9, 10)])
def test_downsample_mean_handles_odd_edges(shape):
    a = np.random.default_rng(len(shape)).random(shape).astype(np.float32) * 1000
    got = st.downsample_mean(a)
    assert got.dtype == a.dtype
    np.testing.assert_allclose(got, brute_mean2(a), rtol=1e-6)


def _peak_batch(rng, index, dtype):
    lengths = rng.integers(0, 6, len(index))
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    mz = np.sort(rng.random(int(offsets[-1]))).astype(dtype) * 900 + 100
    return SpectrumBatch(np.asarray(index, np.int64), offsets, mz,
                         np.ascontiguousarray(offsets[:-1]),
                         rng.random(int(offsets[-1])).astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_spill_round_trip_memory_mapped(tmp_path, dtype):
    """Peaks appended batch by batch read back as one memory-mapped batch in their dtype,
    per-spectrum values concatenated along the spectra; take() of any rows equals the
    spectra one by one; a unit without spectra reads as empty; delete_spill removes _work."""
    url = str(tmp_path / "out.zarr")
    rng = np.random.default_rng(4)
    batches = [_peak_batch(rng, [5, 9, 2], dtype), _peak_batch(rng, [7, 1], dtype)]
    writer = st.SpillWriter(url, 0)
    for b in batches:
        writer.append(b, tic=rng.random(len(b)), sums=rng.random((3, len(b))), norm=None)
    writer.close()
    st.SpillWriter(url, 1).close()
    spill = st.read_spill(url, 0)
    peaks = spill.peaks
    assert isinstance(peaks.mz, np.memmap) and peaks.mz.dtype == dtype
    assert peaks.intensity.dtype == dtype and "norm" not in spill.values
    assert spill.values["sums"].shape == (3, 5) and spill.values["tic"].shape == (5,)
    np.testing.assert_array_equal(peaks.index, [5, 9, 2, 7, 1])
    expected = [b.spectrum(k) for b in batches for k in range(len(b))]
    for k, (mz, intensity) in enumerate(expected):
        np.testing.assert_array_equal(peaks.spectrum(k)[0], mz)
        np.testing.assert_array_equal(peaks.spectrum(k)[1], intensity)
    for rows in ([1, 2, 3], [0, 2, 4], [4], []):
        part = peaks.take(np.array(rows, np.int64))
        np.testing.assert_array_equal(part.index, peaks.index[rows])
        for j, k in enumerate(rows):
            np.testing.assert_array_equal(part.spectrum(j)[0], expected[k][0])
            np.testing.assert_array_equal(part.spectrum(j)[1], expected[k][1])
    assert len(st.read_spill(url, 1).peaks) == 0
    st.delete_spill(url)
    assert not (tmp_path / "out.zarr" / st.WORK).exists()
