"""The report and the exports render what convert and ``ionmap hotspots`` stored.

References: the mean spectrum against pyimzML spectra binned with NumPy; the rendered
report read back from headless Chromium (its text: scale bar, hotspot numbers of
hotspots.csv, units); AnnData tables read back with anndata against the ion images;
GeoJSON and label colours against the one palette; the napari reader plugin run through
npe2 against the store read with ome-zarr (and through napari itself where installed).
"""
from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import tomllib
import warnings
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

import ionmap
from ionmap.cli import main
from ionmap.errors import IonmapWarning
from ionmap.report import render_report, write_report
from ionmap.report._palette import CLASS_RGB

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """A small synthetic section: converted, hotspots found through the command line."""
    root = tmp_path_factory.mktemp("report")
    sample = ionmap.synth.make_sample(root / "in", "s", seed=2, spectrum_type="centroid",
                                      shape=(40, 48))
    result = root / "s.zarr"
    assert main(["convert", str(sample.imzml), str(result), "--quiet"]) == 0
    out = root / "hot"
    assert main(["hotspots", str(result), "--cells", str(sample.cells), "--landmarks",
                 str(sample.landmarks), "--cells-pixel-size-um", "0.5", "--permutations",
                 "49", "--out", str(out)]) == 0
    return sample, result, out


def _hotspot_rows(out):
    with (out / "hotspots.csv").open() as f:
        return list(csv.DictReader(f))


def test_mean_spectrum_is_stored_by_convert(analysed):
    from pyimzml.ImzMLParser import ImzMLParser

    from ionmap.engine._spectrum import MEAN_SPECTRUM_BINS, MEAN_SPECTRUM_SPECTRA

    sample, result, _ = analysed
    mz, mean, info = ionmap.open_result(result).mean_spectrum
    parser = ImzMLParser(str(sample.imzml))
    n = len(parser.coordinates)
    index = np.unique(np.linspace(0, n - 1, min(MEAN_SPECTRUM_SPECTRA, n)).astype(int))
    spectra = [parser.getspectrum(int(i)) for i in index]
    all_mz = np.concatenate([s[0] for s in spectra])
    every = [parser.getspectrum(i)[0] for i in range(n)]  # the file's m/z range
    lo, hi = min(m.min() for m in every if len(m)), max(m.max() for m in every if len(m))
    edges = np.geomspace(lo, hi, MEAN_SPECTRUM_BINS + 1)
    ref, _ = np.histogram(all_mz, edges, weights=np.concatenate([s[1] for s in spectra]))
    assert info["spectra"] == len(index)
    np.testing.assert_allclose(mz, np.sqrt(edges[:-1] * edges[1:]), rtol=1e-6)
    # cumulative sums: robust to a point on a bin edge going to its neighbour
    np.testing.assert_allclose(np.cumsum(mean), np.cumsum(ref) / len(index), rtol=1e-4)
    assert np.mean(np.isclose(mean, ref / len(index), rtol=1e-4)) > 0.99


def test_report_is_a_pure_renderer(analysed, tmp_path):
    """With the raw imzML gone, the report still has every picture."""
    sample, result, _ = analysed
    copy = tmp_path / "copy.zarr"
    shutil.copytree(result, copy)
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    for path in (sample.imzml, sample.imzml.with_suffix(".ibd")):
        shutil.move(path, hidden / path.name)
    try:
        text = render_report(copy)
    finally:
        for path in hidden.iterdir():
            shutil.move(path, sample.imzml.parent / path.name)
    assert len(re.findall(r'src="data:image/png;base64,', text)) >= 7
    assert "Mean spectrum" in text and "No mean spectrum stored" not in text


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_report_in_headless_chromium(analysed, tmp_path):
    _, result, out = analysed
    report = write_report(tmp_path / "report.html", result)
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                          "--dump-dom", report.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r'src="[^"]+"', "", dom)))
    assert "ionmap report" in text
    assert re.search(r"Scale bars: \d+ µm", text)
    for unit in ("counts", "fold of tissue median (TIC-normalised)", "ratio kynurenine/tryptophan",
                 "cells/mm²"):
        assert unit in text, unit
    rows = _hotspot_rows(out)
    assert rows
    for r in rows:  # every hotspot of hotspots.csv is named with its number and class
        assert f"{r['id']} ({r['class']})" in text
    assert re.search(r"\b\d{2,4}\.\d{5}\b", text)  # m/z with 5 decimals
    # the annotation table: every scored target with its stored m/z (4 decimals), MSM and
    # FDR, those above the threshold marked; the recalibration section when applied
    res = ionmap.open_result(result)
    assert "Annotation confidence" in text
    scored = [t for t in res.targets if t.get("fdr") is not None]
    assert scored
    section = dom.split("Annotation confidence", 1)[1].split("<h2>", 1)[0]
    for t in scored:
        row = re.search(rf"<tr( class=\"flag\")?><td>{re.escape(t['name'])}</td>.*?</tr>",
                        section)
        assert row, t["name"]
        assert f"<td>{t['mz']:.4f}</td>" in row.group(0)
        assert f"<td>{t['msm']:.3f}</td>" in row.group(0)
        assert f"<td>{t['fdr']:.3f}</td>" in row.group(0)
        assert bool(row.group(1)) == (t["fdr"] > 0.1), t["name"]
        assert f"<td>{t['window_vs_fwhm']['verdict']}</td>" in row.group(0)
        for near in t["interferences"] or [{"ion": "none"}]:  # other ions in the window
            assert near["ion"] in row.group(0), (t["name"], near)
    if (res.recalibration or {}).get("applied"):
        assert "Mass recalibration" in text and 'alt="mass error histogram"' in dom
    # hotspots.csv says the same of each hotspot's map
    fdr = {t["name"]: t.get("fdr") for t in res.targets}
    for r in rows:
        if r["map"] in fdr:
            assert (r["annotation"] == "confident") == (fdr[r["map"]] <= 0.1), r
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                    "--window-size=1200,3000", f"--screenshot={shot}", report.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_palette_in_geojson_labels_and_report(analysed):
    _, result, out = analysed
    geo = json.loads((out / "hotspots.geojson").read_text())
    assert geo["features"]
    for f in geo["features"]:
        cls = f["properties"]["classification"]
        assert cls["color"] == list(CLASS_RGB[cls["name"]])
    res = ionmap.open_result(result)
    rows = {int(r["id"]): r["class"] for r in _hotspot_rows(out)}
    import zarr

    name = res.label_names[0]
    attrs = zarr.open_group(str(result), path=f"ion_images/labels/{name}", mode="r").attrs
    for c in attrs["ome"]["image-label"]["colors"]:
        if c["label-value"] in rows:
            assert c["rgba"][:3] == list(CLASS_RGB[rows[c["label-value"]]])
    html = render_report(result)
    assert all("#%02x%02x%02x" % rgb in html for rgb in CLASS_RGB.values())
    assert (out / "hotspots_lactate.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_labels_carry_provenance_and_a_rerun_removes_stale_ones(analysed, tmp_path):
    import zarr

    sample, result, _ = analysed
    copy = tmp_path / "copy.zarr"
    shutil.copytree(result, copy)
    before = ionmap.open_result(copy).label_names
    assert len(before) >= 2
    assert main(["hotspots", str(copy), "--cells", str(sample.cells), "--landmarks",
                 str(sample.landmarks), "--maps", "lactate", "--cells-pixel-size-um", "0.5",
                 "--permutations", "0", "--out", str(tmp_path / "o")]) == 0
    res = ionmap.open_result(copy)
    assert res.label_names == ["hotspots_lactate"]
    assert not (copy / "ion_images" / "labels" / before[-1]).exists()
    meta = zarr.open_group(str(copy), path="ion_images/labels/hotspots_lactate",
                           mode="r").attrs["ionmap"]
    assert meta["map"] == "lactate" and meta["parameters"]["n_permutations"] == 0
    assert re.match(r"\d{4}-\d\d-\d\dT", meta["written"])
    assert res.hotspots["maps"] == ["lactate"] and list(res.maps[0]) == ["lactate"]


def test_cells_in_um_without_histology_pixel_size_are_never_silent_pixels(analysed, tmp_path,
                                                                          capsys):
    sample, result, _ = analysed
    copy = tmp_path / "copy.zarr"
    shutil.copytree(result, copy)
    out = tmp_path / "o"
    with warnings.catch_warnings():  # the test config ignores this notice elsewhere
        warnings.simplefilter("always", IonmapWarning)
        assert main(["hotspots", str(copy), "--cells", str(sample.cells), "--landmarks",
                     str(sample.landmarks), "--permutations", "0", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "ionmap: warning:" in err and "--cells-pixel-size-um" in err
    assert (out / "hotspots_UM_NOT_PIXELS.geojson").is_file()
    assert not (out / "hotspots.geojson").exists()
    assert json.loads((out / "registration.json").read_text())["geojson_unit"] == "um"


def test_anndata_exports_read_back(analysed, tmp_path, capsys):
    import anndata

    _, result, _ = analysed
    pixels, cells = tmp_path / "pixels.h5ad", tmp_path / "cells.h5ad"
    assert main(["export", str(result), "--anndata", str(pixels), "--cells-table",
                 str(cells)]) == 0
    res = ionmap.open_result(result)
    cube = res.ion_images.compute()
    a = anndata.read_h5ad(pixels)
    assert list(a.var_names) == res.target_names
    assert a.n_obs == int(res.mask.sum())
    x, y = a.obs["x"].to_numpy(), a.obs["y"].to_numpy()
    np.testing.assert_array_equal(a.X, cube[:, y, x].T)
    np.testing.assert_allclose(a.obsm["spatial"], np.column_stack([x, y]) * 25.0)
    np.testing.assert_allclose(a.obs["tic"], res.tic[y, x])
    assert a.var.loc["lactate", "mz"] == pytest.approx(res.targets[0]["mz"])
    c = anndata.read_h5ad(cells)
    hot = res.hotspots
    assert c.n_obs == len(hot["cells_xy"])
    # a cell lies in the pixel whose centre is nearest, ties up (the immune context's rule)
    col = np.floor(c.obs["msi_x"].to_numpy() + 0.5).astype(int)
    row = np.floor(c.obs["msi_y"].to_numpy() + 0.5).astype(int)
    on = c.obs["on_grid"].to_numpy()
    np.testing.assert_array_equal(c.X[on], cube[:, row[on], col[on]].T)
    labels = res.labels("hotspots_lactate")
    comp = c.obs["compartment_lactate"].to_numpy()
    inside, rim = comp == "inside", comp == "rim"
    ids = c.obs["hotspot_lactate"].to_numpy()
    assert (labels[row[inside], col[inside]] == ids[inside]).all() and (ids[inside] > 0).all()
    assert (ids[rim] > 0).all()  # (the edge is sub-pixel: a rim cell may sit on an edge pixel)
    assert (ids[~(inside | rim)] == 0).all() and not (inside | rim)[~on].any()
    assert set(comp) <= {"inside", "rim", "outside", "edge band", "not measured"}
    # the compartments are the ones the hotspot table counted, not recomputed
    cd8 = c.obs["cell_type"].to_numpy() == "CD8"
    rows = [h for h in hot["hotspots"] if h["map"] == "lactate"]
    assert rows
    for h in rows:
        for where, column in ((inside, "inside_count"), (rim, "rim_count")):
            assert int((where & cd8 & (ids == h["id"])).sum()) == h[column]
    assert main(["export", str(result)]) == 2


def test_feature_cube_channels_are_labelled_by_mz(write_imzml, tmp_path):
    import zarr

    w = write_imzml("f", shape=(4, 5), spectrum_type="centroid", points=6)
    targets = tmp_path / "t.csv"
    targets.write_text("name,mz\na,300\n")
    res = ionmap.convert(w.path, tmp_path / "f.zarr", targets=targets, features=True,
                         min_fraction=0.0)
    channels = zarr.open_group(str(tmp_path / "f.zarr"), path="features",
                               mode="r").attrs["ome"]["omero"]["channels"]
    assert [c["label"] for c in channels] == [f"m/z {m:.4f}" for m in res.features_mz]


# -- napari ----------------------------------------------------------------------------------


def _napari_read(result) -> list:
    """The result's layers as napari gets them: our manifest registered with npe2, the
    reader chosen by npe2 for the path (the same call napari makes)."""
    npe2 = pytest.importorskip("npe2")
    pm = npe2.PluginManager.instance()
    try:
        pm.get_manifest("ionmap")  # installed with the napari.manifest entry point
    except KeyError:
        pm.register(npe2.PluginManifest.from_file(files("ionmap.report") / "napari.yaml"))
    return npe2.read([str(result)], stack=False, plugin_name="ionmap")


def test_napari_manifest_is_valid_and_registered():
    npe2 = pytest.importorskip("npe2")
    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml")
                            .read_text())["project"]
    value = project["entry-points"]["napari.manifest"]["ionmap"]
    module, name = value.split(":")  # how npe2 finds a manifest from the entry point
    manifest = npe2.PluginManifest.from_file(files(module) / name)
    assert manifest.name == project["name"]  # npe2 requires the package name
    manifest.validate_imports()  # `npe2 validate --imports`: every python_name resolves
    (reader,) = manifest.contributions.readers
    assert reader.accepts_directories and "*.zarr" in reader.filename_patterns
    assert "napari" in project["optional-dependencies"]


def test_napari_reader_opens_every_layer_of_the_root(analysed):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    from ionmap.report._napari import get_reader

    sample, result, out = analysed
    assert get_reader(str(result)) is not None
    assert get_reader(str(out)) is None and get_reader(str(sample.imzml)) is None
    assert get_reader([str(result), str(result)]) is None
    layers = _napari_read(result)
    res = ionmap.open_result(result)
    py, px = res.pixel_size_um
    by_name = {k["name"]: (d, k, t) for d, k, t in layers}
    assert len(by_name) == len(layers)
    assert all(tuple(k["scale"]) == (py, px) for _, k, _ in layers)  # µm, (y, x)

    # Ion images against the store read independently by ome-zarr (NGFF metadata).
    ion, *_ = Reader(parse_url(str(result / "ion_images")))()
    assert ion.metadata["coordinateTransformations"][0][0]["scale"][1:] == [py, px]
    images = [(d, k) for d, k, t in layers if "target" in k.get("metadata", {})]
    assert [k["name"] for _, k in images] == [
        f"{n} m/z {t['mz']:.4f}" for n, t in zip(ion.metadata["channel_names"], res.targets)]
    for i, (data, kwargs) in enumerate(images):
        level0 = data[0] if kwargs["multiscale"] else data
        np.testing.assert_array_equal(np.asarray(level0), np.asarray(ion.data[0][i]))
        lo, hi = kwargs["contrast_limits"]
        assert 0 <= lo < hi
    assert sum(k["visible"] for _, k in images) == 3  # OMERO's active channels

    tic = by_name["TIC"]
    np.testing.assert_array_equal(np.asarray(tic[0]), res.tic)
    assert not tic[1]["visible"] and tic[1]["contrast_limits"][1] > 0
    maps, info = res.maps
    for m in info:
        np.testing.assert_array_equal(by_name[f"map {m['name']}"][0], maps[m["name"]])
    tissue, _, kind = by_name["tissue"]
    assert kind == "labels" and (tissue.astype(bool) == res.tissue).all()

    # Hotspot labels: the ids of hotspots.csv, coloured by their class (the one palette).
    rows = [r for r in _hotspot_rows(out)]
    assert res.label_names
    for name in res.label_names:
        data, kwargs, kind = by_name[name]
        assert kind == "labels"
        np.testing.assert_array_equal(data, res.labels(name))
        map_rows = {int(r["id"]): r["class"] for r in rows if f"hotspots_{r['map']}" == name}
        assert set(np.unique(data)) - {0} == set(map_rows)
        for value, cls in map_rows.items():
            assert np.allclose(np.array(kwargs["colormap"][value][:3]) * 255, CLASS_RGB[cls])

    # Cells in the MSI frame, (y, x) = stored (x, y) flipped, typed.
    cells, kwargs, kind = by_name["cells"]
    stored = res.hotspots
    assert kind == "points" and cells.shape == stored["cells_xy"].shape
    np.testing.assert_allclose(cells, stored["cells_xy"][:, ::-1])
    assert list(kwargs["features"]["cell_type"]) == list(stored["cells_type"])


def test_napari_itself_opens_the_root(analysed):
    napari_components = pytest.importorskip("napari.components")  # the [napari] extra
    _, result, _ = analysed
    _napari_read(result)  # registers the manifest when the entry point is not installed
    viewer = napari_components.ViewerModel()
    viewer.open(str(result), plugin="ionmap")
    res = ionmap.open_result(result)
    names = [layer.name for layer in viewer.layers]
    assert len(names) == len(res.target_names) + 1 + len(res.maps[1]) + 1 + len(
        res.label_names) + 1
    assert {type(layer).__name__ for layer in viewer.layers} == {"Image", "Labels", "Points"}
    assert tuple(viewer.layers["TIC"].scale) == tuple(res.pixel_size_um[::-1])
