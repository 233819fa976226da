"""ionmap.synth: files are real imzML (checked with pyimzML), the planted truth is in the data."""
from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
from pyimzml.ImzMLParser import ImzMLParser

from ionmap.chem import panel
from ionmap.cli import main
from ionmap.errors import InputError
from ionmap.synth import make_sample, parse_shape, parse_size

SHAPE = (44, 56)
RIM_UM = 60.0


def _tissue(truth: dict) -> np.ndarray:
    mask = np.zeros(truth["shape"], bool)
    for y, x0, x1 in truth["tissue_runs"]:
        mask[y, x0:x1] = True
    return mask


def _images(imzml, truth: dict, names: list[str], ppm: float = 30.0) -> dict[str, np.ndarray]:
    """Reference ion images: per pixel, the sum of intensities within ±ppm of each target
    (pyimzML reads, NumPy sums)."""
    pol = truth["polarity"]
    mzs = {t.name: t.mz for t in panel(f"tme-{pol}")}
    p = ImzMLParser(str(imzml))
    out = {n: np.zeros(truth["shape"]) for n in names}
    for i, (x, y, _) in enumerate(p.coordinates):
        mz, it = p.getspectrum(i)
        for n in names:
            lo, hi = mzs[n] * (1 - ppm * 1e-6), mzs[n] * (1 + ppm * 1e-6)
            out[n][y - 1, x - 1] = it[(mz >= lo) & (mz <= hi)].sum()
    return out


def _zones(truth: dict, niche: dict):
    ny, nx = truth["shape"]
    yy, xx = np.mgrid[0:ny, 0:nx]
    d = np.hypot(xx - niche["center_x"], yy - niche["center_y"])
    return d, _tissue(truth)


def _cells_msi(sample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cells read back from the written file and mapped into the MSI frame with the
    inverse of the truth transform."""
    t = sample.truth_dict
    if t["cells_unit"] == "um":
        rows = np.genfromtxt(sample.cells, delimiter=",", names=True, dtype=None, encoding="utf-8")
        x, y, ct = rows["x"], rows["y"], rows["cell_type"].astype(str)
    else:
        feats = json.loads(sample.cells.read_text())["features"]
        x = np.array([np.mean(f["geometry"]["coordinates"][0][:-1], axis=0)[0] for f in feats])
        y = np.array([np.mean(f["geometry"]["coordinates"][0][:-1], axis=0)[1] for f in feats])
        ct = np.array([f["properties"]["classification"]["name"] for f in feats])
    inv = np.linalg.inv(np.array(t["msi_to_cells"]))
    return inv[0, 0] * x + inv[0, 1] * y + inv[0, 2], inv[1, 0] * x + inv[1, 1] * y + inv[1, 2], ct


@pytest.mark.parametrize("mode", ["processed", "continuous"])
@pytest.mark.parametrize("spectrum_type", ["profile", "centroid"])
@pytest.mark.parametrize("mz_dtype", ["float32", "float64"])
@pytest.mark.parametrize("intensity_dtype", ["float32", "float64"])
def test_metadata_every_combination(tmp_path, mode, spectrum_type, mz_dtype, intensity_dtype):
    s = make_sample(tmp_path, "s", seed=7, mode=mode, spectrum_type=spectrum_type,
                    mz_dtype=mz_dtype, intensity_dtype=intensity_dtype, shape=SHAPE)
    t = s.truth_dict
    assert json.loads(s.truth.read_text()) == t
    p = ImzMLParser(str(s.imzml))
    assert p.imzmldict["max count of pixels x"] == SHAPE[1]
    assert p.imzmldict["max count of pixels y"] == SHAPE[0]
    assert p.imzmldict["pixel size x"] == p.imzmldict["pixel size y"] == 25.0
    assert p.polarity == "negative"
    assert p.spectrum_mode == spectrum_type
    assert p.mzPrecision == {"float32": "f", "float64": "d"}[mz_dtype]
    assert p.intensityPrecision == {"float32": "f", "float64": "d"}[intensity_dtype]
    xml = s.imzml.read_text()
    assert ('name="continuous"' in xml) == (mode == "continuous")
    assert ('name="processed"' in xml) == (mode == "processed")
    # UUID at the head of the .ibd and SHA-1 of the .ibd, as declared in the XML.
    ibd = s.ibd.read_bytes()
    uid = re.search(r'name="universally unique identifier" value="\{([0-9A-F-]+)\}"', xml)
    assert ibd[:16].hex() == uid.group(1).replace("-", "").lower()
    assert hashlib.sha1(ibd).hexdigest().upper() in xml
    assert t["ibd_bytes"] == len(ibd)
    # Coordinates: 1-based, exactly the tissue pixels, each once.
    mask = _tissue(t)
    coords = np.array(p.coordinates)
    assert coords[:, 2].tolist() == [1] * len(coords) and len(coords) == t["n_spectra"]
    written = np.zeros(SHAPE, int)
    np.add.at(written, (coords[:, 1] - 1, coords[:, 0] - 1), 1)
    assert np.array_equal(written, mask.astype(int))
    assert 0.35 < mask.mean() < 0.8
    # Spectra: ascending m/z, finite non-negative intensities, one shared axis iff continuous.
    first = p.getspectrum(0)[0]
    for i in range(1, len(coords), 97):
        mz, it = p.getspectrum(i)
        assert len(mz) == len(it) > 0 and np.all(np.diff(mz) > 0)
        assert np.all(np.isfinite(it)) and it.min() >= 0
        assert (len(mz) == len(first) and np.array_equal(mz, first)) == (mode == "continuous")
    if mode == "continuous":
        assert len(set(p.mzOffsets)) == 1


def test_profile_peaks_have_the_resolving_power_and_grid(tmp_path):
    s = make_sample(tmp_path, "s", seed=2, mode="continuous", shape=SHAPE, resolving_power=20000)
    p = ImzMLParser(str(s.imzml))
    mz, _ = p.getspectrum(0)
    step = np.diff(mz) / mz[:-1]
    assert np.median(step) == pytest.approx(1 / (20000 * 5), rel=1e-3)  # 5 points per FWHM
    lactate = next(t.mz for t in panel("tme-negative") if t.name == "lactate")
    total = sum(p.getspectrum(i)[1] for i in range(len(p.coordinates)))
    sel = np.abs(mz - lactate) < lactate / 20000 * 3
    m, w = mz[sel], total[sel]
    centre = (m * w).sum() / w.sum()
    sd = np.sqrt((w * (m - centre) ** 2).sum() / w.sum())
    assert abs(centre - lactate) / lactate < 2e-6  # mass shifts average out
    fwhm = 2.3548 * sd
    assert fwhm == pytest.approx(lactate / 20000, rel=0.15)


def test_mass_shifts_are_a_few_ppm(tmp_path):
    s = make_sample(tmp_path, "s", seed=6, spectrum_type="centroid", shape=SHAPE)
    lactate = next(t.mz for t in panel("tme-negative") if t.name == "lactate")
    p = ImzMLParser(str(s.imzml))
    err = []
    for i in range(len(p.coordinates)):
        mz, it = p.getspectrum(i)
        j = np.argmin(np.abs(mz - lactate))
        err.append((mz[j] - lactate) / lactate * 1e6)
    err = np.array(err)
    assert np.abs(err).max() <= 5.5 and err.std() > 0.5  # calibration drift + jitter
    assert s.truth_dict["mass_shift_ppm_max"] <= 5.0


@pytest.mark.parametrize("mode,spectrum_type",
                         [("processed", "profile"), ("continuous", "centroid")])
def test_planted_niches_are_in_the_spectra(tmp_path, mode, spectrum_type):
    s = make_sample(tmp_path, "s", seed=11, mode=mode, spectrum_type=spectrum_type, shape=SHAPE)
    t = s.truth_dict
    kinds = {n["kind"] for n in t["niches"]}
    assert kinds == {"lactate", "kynurenine", "lipid"}
    assert len({n["immune_class"] for n in t["niches"]}) == 3
    lipids = [x.name for x in panel("tme-negative") if x.group == "lipid"]
    img = _images(s.imzml, t, ["lactate", "kynurenine", "tryptophan", *lipids])
    img["lipids"] = sum(img[n] for n in lipids)
    img["kyn_trp"] = img["kynurenine"] / np.maximum(img["tryptophan"], 1.0)
    mask = _tissue(t)
    away = mask.copy()
    for n in t["niches"]:
        d, _ = _zones(t, n)
        away &= d > n["radius_px"] + 3
    for n in t["niches"]:
        d, _ = _zones(t, n)
        core = d < n["radius_px"] - 1
        fold = {k: v[core].mean() / v[away].mean() for k, v in img.items()}
        for name in n["maps"]:
            assert fold[name] > (4.0 if name == "kyn_trp" else 2.5), (n, fold)
        for other in {"lactate", "kyn_trp", "lipids"} - set(n["maps"]):
            assert fold[other] < 1.6, (n, other, fold)
        if n["kind"] == "kynurenine":
            assert fold["tryptophan"] < 0.6


def test_positive_mode_uses_the_positive_panel(tmp_path):
    s = make_sample(tmp_path, "pos", seed=3, polarity="positive", spectrum_type="centroid",
                    shape=SHAPE)
    t = s.truth_dict
    assert ImzMLParser(str(s.imzml)).polarity == "positive"
    assert t["panel"] == "tme-positive"
    assert t["targets"] == [x.name for x in panel("tme-positive")]
    # No lactate target in the positive panel: only niches the panel can show.
    assert {n["kind"] for n in t["niches"]} == {"kynurenine", "lipid"}
    img = _images(s.imzml, t, ["PC 34:1", "cholesterol", "kynurenine"])
    mask = _tissue(t)
    for n in t["niches"]:
        d, _ = _zones(t, n)
        core, away = d < n["radius_px"] - 1, mask & (d > n["radius_px"] + 3)
        name = "PC 34:1" if n["kind"] == "lipid" else "kynurenine"
        assert img[name][core].mean() > 2.5 * img[name][away].mean()


@pytest.mark.parametrize("cells_format", ["csv", "geojson"])
def test_cells_follow_the_immune_classes(tmp_path, cells_format):
    px_mm2 = (25.0 / 1000) ** 2
    rim_px = RIM_UM / 25.0
    seen = set()
    treg_in, treg_base = [], []
    for seed in range(3):
        s = make_sample(tmp_path / str(seed), "c", seed=seed, spectrum_type="centroid",
                        shape=SHAPE, cells_format=cells_format)
        t = s.truth_dict
        assert t["cells_unit"] == ("um" if cells_format == "csv" else "px")
        x, y, ct = _cells_msi(s)
        assert set(ct) == set(t["cell_types"]) and t["cd8_label"] in set(ct)
        assert len(ct) == sum(t["cell_counts"].values())
        mask = _tissue(t)
        ix = np.clip(np.rint(x).astype(int), 0, t["shape"][1] - 1)
        iy = np.clip(np.rint(y).astype(int), 0, t["shape"][0] - 1)
        assert mask[iy, ix].all()  # cells only on tissue
        ny, nx = t["shape"]
        yy, xx = np.mgrid[0:ny, 0:nx]
        outside_all = mask.copy()
        for n in t["niches"]:
            d_px = np.hypot(xx - n["center_x"], yy - n["center_y"])
            outside_all &= d_px >= n["radius_px"] + rim_px
        cd8 = ct == "CD8"

        def density(sel_cells, area_px):
            return sel_cells.sum() / (area_px * px_mm2)

        free = np.ones(len(x), bool)
        for n in t["niches"]:
            free &= np.hypot(x - n["center_x"], y - n["center_y"]) >= n["radius_px"] + rim_px
        base = density(cd8 & free, outside_all.sum())
        assert 200 < base < 400  # cells/mm², planted 300
        treg_base.append(density((ct == "Treg") & free, outside_all.sum()))
        for n in t["niches"]:
            d = np.hypot(x - n["center_x"], y - n["center_y"])
            r = n["radius_px"]
            inside = density(cd8 & (d < r), np.pi * r * r)
            rim = density(cd8 & (d >= r) & (d < r + rim_px), np.pi * ((r + rim_px) ** 2 - r * r))
            cls = n["immune_class"]
            seen.add(cls)
            # Bounds in cells, with room for Poisson noise (≈ 10 CD8 expected at baseline
            # inside a 4 px niche): "scarce" allows 0.2 × baseline + 2 cells.
            expect_in = base * np.pi * r * r * px_mm2
            got_in = inside * np.pi * r * r * px_mm2
            if cls == "inflamed":
                assert inside >= 0.8 * base, (n, inside, base)
            else:
                assert got_in <= 0.2 * expect_in + 2, (n, inside, base)
            if cls == "immune-excluded":
                assert rim >= 2.0 * base, (n, rim, base)
            if cls == "immune-desert":
                assert rim <= 0.2 * base, (n, rim, base)
            if n["kind"] == "kynurenine":
                treg_in.append(density((ct == "Treg") & (d < r), np.pi * r * r))
    assert seen == {"inflamed", "immune-excluded", "immune-desert"}
    assert np.mean(treg_in) > 1.8 * np.mean(treg_base)


def test_geojson_is_qupath_like(tmp_path):
    s = make_sample(tmp_path, "g", seed=1, spectrum_type="centroid", shape=SHAPE,
                    cells_format="geojson")
    t = s.truth_dict
    assert s.cells.name == "g.cells.geojson" and t["histology_pixel_size_um"] == 0.5
    doc = json.loads(s.cells.read_text())
    assert doc["type"] == "FeatureCollection"
    f = doc["features"][0]
    assert f["properties"]["objectType"] == "cell"
    assert f["properties"]["classification"]["name"] in t["cell_types"]
    for geom in (f["geometry"], f["nucleusGeometry"]):
        ring = geom["coordinates"][0]
        assert geom["type"] == "Polygon" and ring[0] == ring[-1] and len(ring) >= 5
    # Scale: histology pixels per MSI pixel ≈ 25 µm / 0.5 µm.
    assert t["transform"]["scale"] == pytest.approx(50.0, rel=0.05)


@pytest.mark.parametrize("cells_format", ["csv", "geojson"])
def test_landmarks_and_transform(tmp_path, cells_format):
    s = make_sample(tmp_path, "l", seed=5, spectrum_type="centroid", shape=SHAPE,
                    cells_format=cells_format)
    t = s.truth_dict
    m = np.array(t["msi_to_cells"])
    tr = t["transform"]
    scale = tr["scale"]
    # The matrix is the stated similarity.
    a = np.radians(tr["rotation_deg"])
    expect = np.array([[scale * np.cos(a), -scale * np.sin(a), tr["translation"][0]],
                       [scale * np.sin(a), scale * np.cos(a), tr["translation"][1]], [0, 0, 1]])
    assert np.allclose(m, expect)
    assert 5 <= abs(tr["rotation_deg"]) <= 30
    header = s.landmarks.read_text().splitlines()[0]
    assert header == "msi_x,msi_y,x,y"
    lm = np.loadtxt(s.landmarks, delimiter=",", skiprows=1)
    assert len(lm) >= 6
    mapped = (m @ np.column_stack([lm[:, :2], np.ones(len(lm))]).T).T[:, :2]
    err_px = np.hypot(*(mapped - lm[:, 2:]).T) / scale
    # 0.2 px per axis: radial RMS 0.28 px expected
    assert err_px.max() < 1.2 and 0.1 < np.sqrt(np.mean(err_px ** 2)) < 0.55
    # Landmarks sit on the tissue outline, spread around it.
    mask = _tissue(t)
    ix, iy = np.rint(lm[:, 0]).astype(int), np.rint(lm[:, 1]).astype(int)
    near_edge = [mask[y - 1:y + 2, x - 1:x + 2].any() and not mask[y - 1:y + 2, x - 1:x + 2].all()
                 for x, y in zip(ix, iy)]
    assert sum(near_edge) >= len(lm) - 1
    ys, xs = np.nonzero(mask)
    assert np.ptp(lm[:, 0]) > 0.7 * np.ptp(xs) and np.ptp(lm[:, 1]) > 0.7 * np.ptp(ys)
    # All cells land at positive coordinates (histology image origin top-left).
    x, y, _ = _cells_msi(s)
    cx = m[0, 0] * x + m[0, 1] * y + m[0, 2]
    cy = m[1, 0] * x + m[1, 1] * y + m[1, 2]
    assert cx.min() > 0 and cy.min() > 0


def test_chunked_xml_equals_one_piece(tmp_path, monkeypatch):
    import ionmap.synth._writer as writer

    kw = dict(seed=8, spectrum_type="centroid", shape=SHAPE)
    monkeypatch.setattr(writer, "_CHUNK", 7)
    a = make_sample(tmp_path / "a", "s", **kw)
    monkeypatch.setattr(writer, "_LOOP", "no such line")  # falls back to one piece
    b = make_sample(tmp_path / "b", "s", **kw)
    xml_a = a.imzml.read_text().replace(str(tmp_path / "a"), "DIR")
    xml_b = b.imzml.read_text().replace(str(tmp_path / "b"), "DIR")
    assert xml_a == xml_b and xml_a.count("<spectrum ") == a.truth_dict["n_spectra"] > 7
    p = ImzMLParser(str(a.imzml))
    assert len(p.coordinates) == a.truth_dict["n_spectra"]


def test_deterministic_per_seed(tmp_path):
    kw = dict(seed=4, mode="processed", spectrum_type="profile", shape=SHAPE)
    a = make_sample(tmp_path / "a", "s", **kw)
    b = make_sample(tmp_path / "b", "s", **kw)
    c = make_sample(tmp_path / "c", "s", **{**kw, "seed": 5})
    assert a.ibd.read_bytes() == b.ibd.read_bytes()
    assert a.cells.read_bytes() == b.cells.read_bytes()
    assert a.landmarks.read_bytes() == b.landmarks.read_bytes()
    assert a.truth_dict == b.truth_dict
    assert a.ibd.read_bytes() != c.ibd.read_bytes()
    assert a.truth_dict["niches"] != c.truth_dict["niches"]
    # The section (tissue, niches, cells) does not depend on how the spectra are stored.
    d = make_sample(tmp_path / "d", "s",
                    **{**kw, "mode": "continuous", "spectrum_type": "centroid"})
    assert d.truth_dict["niches"] == a.truth_dict["niches"]
    assert d.cells.read_bytes() == a.cells.read_bytes()


def test_matrix_off_tissue(tmp_path):
    s = make_sample(tmp_path, "m", seed=2, spectrum_type="centroid", shape=SHAPE,
                    off_tissue="matrix")
    t = s.truth_dict
    assert t["off_tissue"] == "matrix" and t["n_spectra"] == SHAPE[0] * SHAPE[1]
    p = ImzMLParser(str(s.imzml))
    tic = np.zeros(SHAPE)
    for i, (x, y, _) in enumerate(p.coordinates):
        tic[y - 1, x - 1] = p.getspectrum(i)[1].sum()
    mask = _tissue(t)
    assert np.median(tic[~mask]) < 0.4 * np.median(tic[mask])


def test_target_bytes_sizes_the_grid(tmp_path):
    target = 12_000_000
    s = make_sample(tmp_path, "big", seed=1, mode="processed", spectrum_type="centroid",
                    target_bytes=target)
    t = s.truth_dict
    assert target <= t["ibd_bytes"] <= 1.08 * target
    assert t["shape"][0] * 80 == pytest.approx(t["shape"][1] * 60, rel=0.05)  # aspect kept
    assert len(t["niches"]) >= 3


def test_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="mode"):
        make_sample(tmp_path, mode="sideways")
    with pytest.raises(InputError, match="too small"):
        make_sample(tmp_path, shape=(12, 12))
    with pytest.raises(InputError, match="name"):
        make_sample(tmp_path, "../escape")
    dotted = make_sample(tmp_path, "s.v1", spectrum_type="centroid", shape=SHAPE)
    assert dotted.imzml.name == "s.v1.imzML" and dotted.truth.name == "s.v1.truth.json"
    assert parse_shape("60x80") == (60, 80)
    assert parse_size("1.5GB") == 1_500_000_000 and parse_size("2MiB") == 2 * 2**20
    with pytest.raises(InputError, match="not a size such as 1.5GB"):  # an argument mistake
        parse_size("lots")
    with pytest.raises(InputError, match="not a grid size"):
        parse_shape("60 by 80")


def test_cli_synth(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["synth", str(out), "--name", "x", "--seed", "3", "--shape", "44x56",
                 "--type", "centroid", "--mode", "continuous", "--mz-dtype", "float32",
                 "--polarity", "positive", "--cells-format", "geojson"]) == 0
    text = capsys.readouterr().out
    assert "x.imzML" in text and "Niches" in text
    t = json.loads((out / "x.truth.json").read_text())
    assert (t["mode"], t["spectrum_type"], t["mz_dtype"], t["polarity"], t["shape"]) == (
        "continuous", "centroid", "float32", "positive", [44, 56])
    assert (out / "x.cells.geojson").exists() and (out / "x.landmarks.csv").exists()
    assert main(["synth", str(out), "--shape", "12x12"]) == 2
    assert "too small" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["synth", str(out), "--shape", "big"])
