"""Exports: outlines, QuPath GeoJSON, CSV, PNG; and run_hotspots on plain arrays."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from ionmap.errors import InputError
from ionmap.regions import Cells, MSIData, Registration, read_cells, run_hotspots
from ionmap.regions._export import hotspots_geojson, outlines, write_csv
from ionmap.regions._run import HOTSPOT_COLUMNS, run_summary


def _area(ring):
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def test_outlines_follow_pixel_edges_with_holes():
    labels = np.zeros((12, 14), np.int32)
    labels[2:9, 3:11] = 4      # 7 x 8 block ...
    labels[4:6, 5:7] = 0       # ... with a 2 x 2 hole
    labels[10, 0] = 2          # a single pixel at the border
    labels[11, 1] = 2          # diagonal neighbour: one 8-connected region
    shapes = outlines(labels)
    assert set(shapes) == {2, 4}
    (outer, hole), = shapes[4]
    assert np.all(outer[0] == outer[-1])  # closed ring
    # marching squares at 0.5 runs along pixel edges, cutting corners by half a pixel
    assert outer[:, 0].min() == 2.5 and outer[:, 0].max() == 10.5
    assert outer[:, 1].min() == 1.5 and outer[:, 1].max() == 8.5
    assert _area(outer) == pytest.approx(56 - 4 * 0.125)
    assert _area(hole) == pytest.approx(4 - 4 * 0.125)
    assert len(shapes[2]) == 1  # diagonal pixels stay one polygon
    # a label in two pieces (user labels need not be connected): holes go to their owner
    labels[2:5, 12:14] = 4
    pieces = outlines(labels)[4]
    assert sorted(len(p) for p in pieces) == [1, 2]
    holed = next(p for p in pieces if len(p) == 2)
    assert _area(holed[0]) == pytest.approx(56 - 0.5)


def test_geojson_is_qupath_annotations_in_the_annotation_frame():
    labels = np.zeros((20, 20), np.int32)
    labels[5:10, 5:10] = 1
    labels[12:15, 2:6] = 2
    rows = [{"id": 1, "map": "lactate", "class": "immune-excluded", "area_px": 25,
             "p_value": 0.01, "exclusion_score": float("nan")},
            {"id": 2, "map": "lactate", "class": "inflamed", "area_px": 12}]
    m = np.array([[0.0, -25.0, 1000.0], [25.0, 0.0, 50.0], [0, 0, 1]])  # 90 degrees
    from ionmap.report._palette import CLASS_RGB

    geo = hotspots_geojson({"lactate": labels}, rows, matrix=m, colors=CLASS_RGB)
    json.dumps(geo)  # serialisable
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == 2
    f = geo["features"][0]
    assert f["properties"]["objectType"] == "annotation"
    assert f["properties"]["classification"]["name"] == "immune-excluded"
    assert f["properties"]["classification"]["color"] == list(CLASS_RGB["immune-excluded"])
    plain = hotspots_geojson({"lactate": labels}, rows, matrix=m)  # QuPath picks colours
    assert "color" not in plain["features"][0]["properties"]["classification"]
    assert f["properties"]["name"] == "lactate hotspot 1"
    assert f["properties"]["measurements"] == {"id": 1, "area_px": 25, "p_value": 0.01}
    ring = np.array(f["geometry"]["coordinates"][0])
    # the MSI pixel centre (7, 7) lies inside the mapped outline
    inside = m[:2, :2] @ [7, 7] + m[:2, 2]
    outside = m[:2, :2] @ [12, 7] + m[:2, 2]
    assert MplPath(ring).contains_point(inside) and not MplPath(ring).contains_point(outside)
    assert _area(ring) == pytest.approx(625 * (25 - 0.5))


def test_write_csv(tmp_path):
    rows = [{"a": 1, "b": 0.123456789, "c": float("nan")}, {"a": 2, "b": 1e-12}]
    p = write_csv(tmp_path / "t.csv", rows, ["a", "b", "c"])
    with p.open() as f:
        got = list(csv.reader(f))
    assert got == [["a", "b", "c"], ["1", "0.1234568", ""], ["2", "1e-12", ""]]


def planted_arrays(seed=0, shape=(50, 70), px=25.0):
    """Ion images with a lactate niche and a kynurenine niche (tryptophan depleted), and
    cells in a frame rotated by 90° and scaled to µm: CD8 excluded from the lactate
    niche (dense at its rim), CD8 inside the kynurenine niche at baseline."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    mask = np.zeros(shape, bool)
    mask[3:ny - 3, 3:nx - 3] = True
    mask[xx + yy > nx + 20] = False  # a cut corner: no symmetry for automatic registration
    lac_c, kyn_c, r = (18.0, 20.0), (50.0, 30.0), 6.0
    lac = np.hypot(xx - lac_c[0], yy - lac_c[1]) < r
    kyn = np.hypot(xx - kyn_c[0], yy - kyn_c[1]) < r
    tic = rng.uniform(0.8, 1.2, shape) * 1e5
    f = tic / 1e5

    def noisy(level):
        return (level * f * rng.lognormal(0, 0.15, shape)).astype(np.float32)

    images = {"lactate": noisy(np.where(lac, 500.0, 100.0)),
              "kynurenine": noisy(np.where(kyn, 400.0, 80.0)),
              "tryptophan": noisy(np.where(kyn, 60.0, 150.0)),
              "palmitate": noisy(np.full(shape, 90.0))}
    for img in images.values():
        img[~mask] = 0
    data = MSIData(images, mask, np.where(mask, tic, 0), (px, px),
                   {"lactate": "glycolysis", "kynurenine": "kynurenine_pathway",
                    "tryptophan": "kynurenine_pathway", "palmitate": "lipid"})
    def on_tissue(n):  # uniform over the tissue pixels' area
        xy = rng.uniform(-0.5, [nx - 0.5, ny - 0.5], (n, 2))
        return xy[mask[np.rint(xy[:, 1]).astype(int), np.rint(xy[:, 0]).astype(int)]]

    cd8 = on_tissue(rng.poisson(0.4 * nx * ny))
    cd8 = cd8[np.hypot(cd8[:, 0] - lac_c[0], cd8[:, 1] - lac_c[1]) >= r]
    ring_t = rng.uniform(0, 2 * np.pi, 150)
    ring_r = rng.uniform(r, r + 2.2, 150)
    ring = np.column_stack([lac_c[0] + ring_r * np.cos(ring_t), lac_c[1] + ring_r * np.sin(ring_t)])
    tum = on_tissue(4000)
    msi_xy = np.concatenate([cd8, ring, tum])
    types = np.array(["CD8"] * (len(cd8) + len(ring)) + ["Tumor"] * len(tum))
    m = np.array([[0.0, -px, 5000.0], [px, 0.0, 100.0], [0, 0, 1]])
    ann = msi_xy @ m[:2, :2].T + m[:2, 2]
    return data, Cells(ann[:, 0], ann[:, 1], types, "um", pixel_size_um=0.5), m


def test_run_hotspots_on_arrays(tmp_path):
    data, cells, m = planted_arrays()
    out = tmp_path / "out"
    run = run_hotspots(data, cells, Registration(m, "matrix"), out, n_permutations=199)
    assert list(run.maps) == ["lactate", "kynurenine", "kyn_trp", "lipids"]
    got = {(h["map"], h["class"]) for h in run.hotspots}
    assert got == {("lactate", "immune-excluded"), ("kynurenine", "inflamed"),
                   ("kyn_trp", "inflamed")}
    lac = next(h for h in run.hotspots if h["map"] == "lactate")
    assert np.hypot(lac["centroid_x"] - 18, lac["centroid_y"] - 20) < 1.0
    assert lac["p_value"] < 0.01 and lac["area_mm2"] == pytest.approx(lac["area_px"] * 625e-6)
    np.testing.assert_allclose([lac["centroid_annotation_x"], lac["centroid_annotation_y"]],
                               m[:2, :2] @ [lac["centroid_x"], lac["centroid_y"]] + m[:2, 2])
    names = {p.name for p in run.files}
    assert {"hotspots.csv", "cell_densities.csv", "distance_curves.csv", "hotspots.geojson",
            "hotspots_msi.geojson", "registration.json"} <= names
    assert not any(p.suffix == ".png" for p in run.files)  # pictures are the report's
    with (out / "hotspots.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == HOTSPOT_COLUMNS and len(rows) == 3
    assert [int(r["id"]) for r in rows] == [1, 2, 3]
    # ids are unique over maps and match the label images
    for h in run.hotspots:
        assert (run.labels[h["map"]] == h["id"]).sum() == h["area_px"]
    geo = json.loads((out / "hotspots.geojson").read_text())
    classes = sorted(f["properties"]["classification"]["name"] for f in geo["features"])
    assert classes == ["immune-excluded", "inflamed", "inflamed"]
    # cells in µm with a known histology pixel size: the GeoJSON is in histology pixels
    ring = np.array(geo["features"][0]["geometry"]["coordinates"][0])
    f0 = geo["features"][0]["properties"]["measurements"]["id"]
    h0 = next(h for h in run.hotspots if h["id"] == f0)
    c_px = np.array([h0["centroid_annotation_x"], h0["centroid_annotation_y"]]) / 0.5
    assert MplPath(ring).contains_point(c_px)
    msi = json.loads((out / "hotspots_msi.geojson").read_text())
    ring = np.array(msi["features"][0]["geometry"]["coordinates"][0])
    assert MplPath(ring).contains_point([h0["centroid_x"], h0["centroid_y"]])
    reg = json.loads((out / "registration.json").read_text())
    assert reg["method"] == "matrix" and reg["geojson_unit"] == "px"
    with (out / "cell_densities.csv").open() as f:
        dens = list(csv.DictReader(f))
    assert {d["compartment"] for d in dens} == {"inside", "rim", "outside"}
    assert {d["cell_type"] for d in dens} == {"CD8", "Tumor"}
    text = run_summary(run)
    assert "3 hotspot(s)" in text and "immune-excluded" in text


def test_hotspots_of_doubtful_annotations_are_flagged(tmp_path):
    """kynurenine scored as an impostor (FDR 0.6): its map and the kyn_trp ratio that reads
    it are flagged with that FDR; lactate (present, FDR 0.02) is not; without scores (an
    older store) every row says "not scored"."""
    data, cells, m = planted_arrays()
    data.fdr = {"lactate": 0.02, "kynurenine": 0.6, "tryptophan": 0.01, "palmitate": 0.03}
    run = run_hotspots(data, cells, Registration(m, "matrix"), tmp_path / "a",
                       n_permutations=99)
    got = {h["map"]: h["annotation"] for h in run.hotspots}
    assert got == {"lactate": "confident",
                   "kynurenine": "not confidently annotated (FDR 0.60: kynurenine)",
                   "kyn_trp": "not confidently annotated (FDR 0.60: kynurenine)"}
    with (tmp_path / "a" / "hotspots.csv").open() as f:
        assert {r["map"]: r["annotation"] for r in csv.DictReader(f)} == got
    # a looser threshold accepts it; the threshold is the parameter's, not a constant
    loose = run_hotspots(data, cells, Registration(m, "matrix"), tmp_path / "b",
                         n_permutations=99, annotation_fdr=0.7)
    assert {h["annotation"] for h in loose.hotspots} == {"confident"}
    data.fdr = {}
    old = run_hotspots(data, cells, Registration(m, "matrix"), tmp_path / "c",
                       n_permutations=99)
    assert {h["annotation"] for h in old.hotspots} == {"not scored"}


def test_run_hotspots_registration_options(tmp_path):
    data, cells, m = planted_arrays(1)
    lm = tmp_path / "lm.csv"
    pts = np.array([[5, 5], [60, 8], [10, 40], [55, 42], [30, 25.0]])
    ann = pts @ m[:2, :2].T + m[:2, 2]
    np.savetxt(lm, np.column_stack([pts, ann]), delimiter=",", header="msi_x,msi_y,x,y",
               comments="")
    cells_csv = tmp_path / "cells.csv"
    with cells_csv.open("w") as f:
        f.write("x,y,cell_type\n")
        for x, y, t in zip(cells.x, cells.y, cells.cell_type):
            f.write(f"{x:.3f},{y:.3f},{t}\n")
    with pytest.warns(UserWarning, match="QuPath annotations are in µm"):
        run = run_hotspots(data, cells_csv, lm, tmp_path / "a", maps=["lactate"],
                           n_permutations=0)
    assert (tmp_path / "a" / "hotspots_UM_NOT_PIXELS.geojson").is_file()
    assert not (tmp_path / "a" / "hotspots.geojson").exists()
    assert run.registration.method == "landmarks" and run.registration.rms_px < 1e-6
    assert [h["class"] for h in run.hotspots] == ["immune-excluded"]
    with pytest.warns(UserWarning, match="µm"):
        auto = run_hotspots(data, read_cells(cells_csv), "auto", tmp_path / "b",
                            maps=["lactate"], n_permutations=0)
    assert auto.registration.method == "auto"
    np.testing.assert_allclose(auto.registration.to_msi(cells.xy[:5]),
                               run.registration.to_msi(cells.xy[:5]), atol=0.5)
    assert [h["class"] for h in auto.hotspots] == ["immune-excluded"]
    data.pixel_size_um = None
    with pytest.raises(InputError, match="pixel size is unknown"):
        run_hotspots(data, cells, lm, tmp_path / "c")
    with pytest.raises(InputError, match="unknown map"):
        run_hotspots(data, cells, lm, tmp_path / "c", maps=["glucose"], pixel_size_um=25.0)


def test_cli_defaults_match_the_api():
    """The CLI takes its defaults from the parameter objects, and the analysis functions'
    own defaults are the same values, so --help, the API and the TOML agree."""
    import inspect

    from ionmap.cli import _params, build_parser
    from ionmap.params import HotspotParams, ImmuneParams, RegistrationParams
    from ionmap.regions import build_maps, find_hotspots, immune_context

    args = build_parser().parse_args(["hotspots", "r.zarr", "--cells", "c.csv", "--register",
                                      "auto", "--out", "o"])
    assert _params("hotspots", args) == HotspotParams()
    assert _params("immune", args) == ImmuneParams()
    assert args.model == RegistrationParams().model == "similarity"
    changed = build_parser().parse_args(["hotspots", "r.zarr", "--cells", "c.csv", "--register",
                                         "auto", "--out", "o", "--fdr", "0.01", "--maps",
                                         "lactate, kyn_trp", "--permutations", "99"])
    assert _params("hotspots", changed) == HotspotParams(fdr=0.01,
                                                            maps=("lactate", "kyn_trp"))
    assert _params("immune", changed).n_permutations == 99

    def defaults(func):
        return {k: v.default for k, v in inspect.signature(func).parameters.items()}

    hp, ip = HotspotParams(), ImmuneParams()
    fh, ic, bm = defaults(find_hotspots), defaults(immune_context), defaults(build_maps)
    assert (fh["fdr"], fh["min_area_px"], fh["radius"], fh["shape"], fh["extent"]) == (
        hp.fdr, hp.min_area_px, hp.radius_px, hp.neighbourhood, hp.extent)
    assert bm["noise_floor"] == hp.noise_floor
    assert bm["normalisation"] == hp.normalisation
    masked = build_parser().parse_args(["hotspots", "r.zarr", "--cells", "c.csv", "--register",
                                        "auto", "--out", "o", "--tissue-mask", "t.tif",
                                        "--normalisation", "pqn"])
    assert _params("hotspots", masked) == HotspotParams(tissue_mask="t.tif",
                                                           normalisation="pqn")
    with pytest.raises(SystemExit) as done:  # help texts with '%' are escaped for argparse
        build_parser().parse_args(["hotspots", "--help"])
    assert done.value.code == 0
    for name in ("rim_um", "cell_type", "scarce_ratio", "rim_ratio", "n_permutations", "seed",
                 "edge_guard_um"):
        assert ic[name] == getattr(ip, name), name


def test_candidates_that_are_not_significant_read_undetermined(tmp_path):
    """With ``candidates``, clusters that are not significant are listed as undetermined
    with their reason, never with an immune class (a low cluster-forming threshold makes
    weak clusters)."""
    data, cells, m = planted_arrays()
    run = run_hotspots(data, cells, Registration(m, "matrix"), tmp_path / "out",
                       n_permutations=199, candidates=True, write_labels=False, cluster_z=1.5)
    weak = [h for h in run.hotspots if not h["significant"]]
    assert weak, "the planted arrays give candidate clusters that are not significant"
    assert {(h["class"], h["class_reason"]) for h in weak} == {("undetermined", "not significant")}
    assert all(h["class"] != "undetermined" or h["class_reason"] for h in run.hotspots)
