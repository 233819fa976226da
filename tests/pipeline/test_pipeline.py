"""Bulk pipelines, the demo and the report: configs, discovery, failure isolation, resume."""
from __future__ import annotations

import base64
import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ionmap import synth
from ionmap.errors import InputError
from ionmap.pipeline import PipelineConfig, discover_samples, load_config, run_pipeline

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(shape=(40, 48), spectrum_type="centroid")


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """A folder of three samples: one complete, one without cells, one with a broken .ibd."""
    folder = tmp_path_factory.mktemp("cohort")
    synth.make_sample(folder, "alpha", seed=3, **SMALL)
    bare = synth.make_sample(folder, "beta", seed=4, **SMALL)
    bare.cells.unlink()
    bare.landmarks.unlink()
    broken = synth.make_sample(folder, "gamma", seed=5, **SMALL)
    with open(broken.ibd, "r+b") as f:  # cut the binary file in half
        f.truncate(broken.ibd.stat().st_size // 2)
    return folder


@pytest.mark.parametrize("name", ["tme-negative", "tme-positive"])
def test_shipped_configs_load(name):
    config = load_config(ROOT / "pipelines" / f"{name}.toml")
    assert config.convert.panel == name
    assert config.immune.rim_um == 60.0
    assert config.registration.method == "landmarks-or-auto"


def test_config_errors_name_file_and_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[convert]\nppm = 10\nppmm = 5\n")
    with pytest.raises(InputError, match=r"bad\.toml: \[convert\] unknown key 'ppmm'"):
        load_config(bad)
    bad.write_text("[hotspots]\nfdr = 'low'\n")
    with pytest.raises(InputError, match=r"\[hotspots\] fdr = 'low': expected a number"):
        load_config(bad)
    bad.write_text("[convert\n")
    with pytest.raises(InputError, match="not valid TOML"):
        load_config(bad)
    bad.write_text("[registration]\nmethod = 'manual'\n")
    with pytest.raises(InputError, match="method = 'manual'"):
        load_config(bad)


def test_discovery(cohort, tmp_path):
    samples = {s.name: s for s in discover_samples(str(cohort))}
    assert sorted(samples) == ["alpha", "beta", "gamma"]
    assert samples["alpha"].cells.endswith("alpha.cells.csv")
    assert samples["alpha"].landmarks.endswith("alpha.landmarks.csv")
    assert samples["beta"].cells is None and samples["beta"].landmarks is None
    with pytest.raises(InputError, match="no .imzML files"):
        discover_samples(str(tmp_path / "missing"))


def _report_images(path: Path) -> list[bytes]:
    text = path.read_text()
    assert "<img" in text and not re.search(r'src="(?!data:)', text), "images must be embedded"
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', text)]


def test_run_isolates_failures_and_resumes(cohort, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ionmap.cli", "run", str(ROOT / "pipelines" / "tme-negative.toml"),
           "--input", str(cohort), "--output", str(out), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr  # gamma failed, the others went on
    summary = {r["sample"]: r for r in _read_csv(out / "summary.csv")}
    assert summary["alpha"]["status"] == "ok" and summary["beta"]["status"] == "ok"
    assert summary["gamma"]["status"] == "failed"
    assert "gamma.ibd" in summary["gamma"]["error"]

    truth = json.loads((cohort / "alpha.truth.json").read_text())
    hotspots = _read_csv(out / "alpha" / "hotspots" / "hotspots.csv")
    right = 0
    for niche in truth["niches"]:  # the planted niches are in the cohort's numbers
        near = [h for h in hotspots if np.hypot(float(h["centroid_x"]) - niche["center_x"],
                                                float(h["centroid_y"]) - niche["center_y"])
                < niche["radius_px"]]
        # the planted class, or undetermined on weak evidence (a stated reason)
        assert near and {h["class"] for h in near} <= {niche["immune_class"], "undetermined"}
        assert all(h["class_reason"] for h in near if h["class"] == "undetermined")
        right += any(h["class"] == niche["immune_class"] for h in near)
    assert right >= 1  # the tiny 40 x 48 section leaves small niches undetermined
    rows = {r["sample"]: r for r in _read_csv(out / "cohort.csv")}
    assert set(rows) == {"alpha", "beta"}
    n_excluded = sum(h["class"] == "immune-excluded" for h in hotspots)
    assert int(rows["alpha"]["n_immune_excluded"]) == n_excluded
    share = float(rows["alpha"]["excluded_area_fraction"])
    assert (share > 0) == (n_excluded > 0) and share < 0.5

    pngs = _report_images(out / "alpha" / "report.html")
    assert len(pngs) >= 6 and all(p.startswith(b"\x89PNG") for p in pngs)
    beta = (out / "beta" / "report.html").read_text()
    assert "immune context not assessed" in beta and not (out / "beta" / "hotspots").exists()

    # A sample interrupted after its conversion (no completion record, no report) is
    # finished; complete ones are skipped. (Resuming a half-written store: test_convert.)
    (out / "beta" / "sample.json").unlink()
    (out / "beta" / "report.html").unlink()
    before = (out / "alpha" / "report.html").stat().st_mtime_ns
    proc = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    summary = {r["sample"]: r["status"] for r in _read_csv(out / "summary.csv")}
    assert summary == {"alpha": "skipped", "beta": "ok", "gamma": "failed"}
    assert (out / "alpha" / "report.html").stat().st_mtime_ns == before
    assert (out / "beta" / "sample.json").exists() and (out / "beta" / "report.html").exists()


def test_run_from_object_storage(s3_server, cohort, tmp_path):
    bucket = s3_server.make_bucket()
    for suffix in (".imzML", ".ibd", ".cells.csv", ".landmarks.csv"):
        s3_server.put(cohort / f"alpha{suffix}", f"s3://{bucket}/in/alpha{suffix}")
    outcomes = run_pipeline(PipelineConfig("<defaults>"), f"s3://{bucket}/in", tmp_path / "out",
                            storage_options=s3_server.storage_options, progress=False,
                            echo=lambda _: None)
    assert [(o.name, o.status) for o in outcomes] == [("alpha", "ok")], outcomes
    assert (tmp_path / "out" / "alpha" / "hotspots" / "hotspots.csv").exists()


def test_demo_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ionmap.cli", "demo", "--out", str(tmp_path),
                           "--quiet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr and "warning" not in proc.stdout, proc.stderr
    report = Path(proc.stdout.strip().splitlines()[-1].removeprefix("report: "))
    assert report.is_file() and report.parent.name == "demo"
    # The demo knows the synthetic histology pixel size: the QuPath annotations are in image
    # pixels (µm of the cell frame / pixel size), each on its planted niche.
    truth = json.loads((tmp_path / "input" / "demo.truth.json").read_text())
    to_cells = np.array(truth["msi_to_cells"])
    centres = [(to_cells @ [n["center_x"], n["center_y"], 1.0])[:2] / synth.HISTOLOGY_PIXEL_UM
               for n in truth["niches"]]
    reach = max(n["radius_px"] for n in truth["niches"]) * truth["transform"]["scale"] \
        / synth.HISTOLOGY_PIXEL_UM
    geo = json.loads((report.parent / "hotspots" / "hotspots.geojson").read_text())
    assert geo["features"]
    for feature in geo["features"]:
        centre = np.array(feature["geometry"]["coordinates"][0]).mean(0)
        assert min(np.hypot(*(centre - c)) for c in centres) < reach, centre
    assert len(_report_images(report)) >= 6
    # Every reported hotspot is a planted niche (no spurious edge hotspot), with its class,
    # significant on its own, and cohort.csv counts exactly those.
    hotspots = _read_csv(report.parent / "hotspots" / "hotspots.csv")
    for h in hotspots:
        near = [n for n in truth["niches"] if h["map"] in n["maps"] and np.hypot(
            float(h["centroid_x"]) - n["center_x"], float(h["centroid_y"]) - n["center_y"])
            < n["radius_px"]]
        assert len(near) == 1, h
        # a class is the planted one, or "undetermined" with its reason (never a wrong class)
        assert h["significant"] == "True"
        assert h["class"] == near[0]["immune_class"] or (
            h["class"] == "undetermined" and h["class_reason"]), h
        assert float(h["hotspot_q"]) <= 0.05
    assert len(hotspots) == sum(len(n["maps"]) for n in truth["niches"])
    assert sum(h["class"] != "undetermined" for h in hotspots) >= len(hotspots) // 2
    cohort = _read_csv(tmp_path / "output" / "cohort.csv")[0]
    assert int(cohort["n_hotspots"]) == len(hotspots)


def test_cohort_counts_only_significant_hotspots():
    from ionmap.pipeline import cohort_row

    labels = {"lactate": np.array([[1, 2], [0, 0]], np.int32)}
    hotspots = [{"id": 1, "map": "lactate", "class": "immune-excluded", "significant": True},
                {"id": 2, "map": "lactate", "class": "undetermined", "significant": False}]
    row = cohort_row("s", hotspots, labels, np.ones((2, 2), bool), 1.0)
    assert row["n_hotspots"] == 1 and row["n_immune_excluded"] == 1
    assert row["excluded_area_fraction"] == 0.25


def test_tissue_masks_from_config_and_sample_files(tmp_path):
    """``[hotspots] tissue_mask`` is relative to the config; NAME.tissue.* is discovered."""
    (tmp_path / "conf").mkdir()
    config = tmp_path / "conf" / "p.toml"
    config.write_text("[hotspots]\ntissue_mask = 'masks/t.tif'\nnormalisation = 'pqn'\n")
    loaded = load_config(config)
    assert loaded.hotspots.tissue_mask == str(tmp_path / "conf" / "masks" / "t.tif")
    assert loaded.hotspots.normalisation == "pqn"
    for name in ("a.imzML", "a.ibd", "a.Tissue.PNG", "b.imzML", "b.ibd"):
        (tmp_path / name).write_bytes(b"")
    samples = {s.name: s for s in discover_samples(str(tmp_path))}
    assert samples["a"].tissue_mask.endswith("a.Tissue.PNG")
    assert samples["b"].tissue_mask is None
    config.write_text("[hotspots]\nnormalisation = 'rms'\n")
    with pytest.raises(InputError, match="normalisation"):
        load_config(config)
