"""Issue 11 end to end on confounded synthetic sections (synth -> convert -> hotspots):
bright matrix off the tissue with a partial annotation, and a TIC-confounded null section.

- the tissue mask matches the generator's tissue (Jaccard >= 0.98; Otsu on log TIC, the
  mask before, gets ~0.02 on such a section and misses the niches);
- every planted niche is found in each of its maps with its planted class or
  "undetermined", and "undetermined (not annotated)" where it lies outside the annotated
  part; nothing is classified outside it;
- a null section with a smooth ionisation field and pixel scatter has no significant
  hotspot.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

import ionmap
from ionmap import regions
from ionmap.cli import main
from ionmap.params import ImmuneParams
from ionmap.synth import Confounders

SMALL = {"shape": (48, 64), "spectrum_type": "centroid"}
COMMON = {"n_permutations": 0, "write_labels": False}


def _run(tmp_path_factory, name, **options):
    d = tmp_path_factory.mktemp(name)
    sample = ionmap.synth.make_sample(d, **SMALL, **options)
    url = d / "result.zarr"
    ionmap.convert(sample.imzml, url, progress=False)
    truth = sample.truth_dict
    cells = regions.read_cells(sample.cells, pixel_size_um=truth["histology_pixel_size_um"])
    run = regions.run_hotspots(url, cells, sample.landmarks, d / "out", **COMMON)
    return truth, run, sample, url


def _true_tissue(truth):
    out = np.zeros(tuple(truth["shape"]), bool)
    for y, x0, x1 in truth["tissue_runs"]:
        out[y, x0:x1] = True
    return out


@pytest.fixture(scope="module")
def matrix_section(tmp_path_factory):
    return _run(tmp_path_factory, "matrix", seed=2, off_tissue="matrix", n_niches=4,
                annotated_fraction=0.6, confounders=Confounders(matrix_level=8.0))


def test_matrix_off_tissue_mask_and_niches(matrix_section):
    truth, run, _, _ = matrix_section
    tissue = _true_tissue(truth)
    assert (run.tissue & tissue).sum() / (run.tissue | tissue).sum() >= 0.98
    for niche in truth["niches"]:
        annotated = niche["annotated_fraction"] >= ImmuneParams.min_coverage
        for name in niche["maps"]:
            hits = [h for h in run.hotspots if h["map"] == name and np.hypot(
                h["centroid_x"] - niche["center_x"], h["centroid_y"] - niche["center_y"])
                <= niche["radius_px"]]
            assert hits, f"niche {niche['id']} ({niche['kind']}) missed in {name}"
            best = max(hits, key=lambda h: h["area_px"])
            assert best["class"] in (niche["immune_class"], "undetermined"), (niche, best)
            if not annotated:
                assert best["class"] == "undetermined", (niche, best)
    for h in run.hotspots:  # nothing classified outside the annotated part
        if h["coverage_fraction"] < ImmuneParams.min_coverage:
            assert h["class"] == "undetermined" and "not annotated" in h["class_reason"], h


def test_tic_confounded_null_section_has_no_hotspot(tmp_path_factory):
    truth, run, _, _ = _run(tmp_path_factory, "null", seed=6, n_niches=0, confounders=Confounders(
        ionisation_sd=0.4, ionisation_corr_px=3.0, pixel_ionisation_sd=0.15))
    assert not truth["niches"]
    assert run.hotspots == [] and run.params["n_significant"] == 0


def test_user_tissue_mask_from_the_command_line(matrix_section, tmp_path, capsys):
    """--tissue-mask replaces the segmentation; a mask of the wrong size is one line, exit 2."""
    truth, _, sample, url = matrix_section
    mask = _true_tissue(truth)
    mask[17:23, 20:26] = False  # a hole the segmentation would not make: the user's
    tifffile.imwrite(tmp_path / "user.tif", mask.astype(np.uint8))
    tifffile.imwrite(tmp_path / "small.tif", np.ones((10, 10), np.uint8))
    args = ["hotspots", str(url), "--cells", str(sample.cells), "--landmarks",
            str(sample.landmarks), "--permutations", "0", "--no-labels"]
    assert main([*args, "--out", str(tmp_path / "a"), "--tissue-mask",
                 str(tmp_path / "user.tif")]) == 0
    used = json.loads((tmp_path / "a" / "registration.json").read_text())["parameters"]
    assert used["tissue_px"] == int(mask.sum()) and used["tissue_mask"].endswith("user.tif")
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "b"), "--tissue-mask",
                 str(tmp_path / "small.tif")]) == 2
    err = capsys.readouterr().err.strip()
    assert "small.tif" in err and "10x10" in err and len(err.splitlines()) == 1
