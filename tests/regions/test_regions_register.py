"""Co-registration: landmark fits against known transforms, automatic registration on
planted tissue with cells drawn in a rotated, scaled, shifted frame."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ionmap.errors import InputError
from ionmap.regions import Cells, Registration, fit_landmarks, read_landmarks, register_auto


def _similarity(deg, scale, tx, ty):
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty], [0, 0, 1.0]])


def _apply(m, xy):
    return xy @ m[:2, :2].T + m[:2, 2]


def test_landmarks_exact_similarity_and_affine():
    rng = np.random.default_rng(0)
    msi = rng.uniform(0, 80, (7, 2))
    truth = _similarity(17.0, 25.3, 1200.0, -40.0)
    reg = fit_landmarks((msi, _apply(truth, msi)))
    np.testing.assert_allclose(reg.matrix, truth, atol=1e-8)
    assert reg.rms_px < 1e-9 and reg.rms_annotation < 1e-9 and reg.loo_rms_px < 1e-9
    p = reg.parameters()
    assert p["rotation_deg"] == pytest.approx(17.0) and p["scale"] == pytest.approx(25.3)
    np.testing.assert_allclose(reg.to_msi(reg.to_annotation(msi)), msi, atol=1e-9)
    np.testing.assert_allclose(reg.inverse @ reg.matrix, np.eye(3), atol=1e-12)
    shear = np.array([[20.0, 3.0, 5.0], [-2.0, 27.0, 9.0], [0, 0, 1]])
    reg = fit_landmarks(np.column_stack([msi, _apply(shear, msi)]), "affine")
    np.testing.assert_allclose(reg.matrix, shear, atol=1e-8)
    assert reg.model == "affine"


def test_landmarks_noise_residuals_and_csv(tmp_path):
    rng = np.random.default_rng(1)
    msi = rng.uniform(0, 100, (40, 2))
    truth = _similarity(-12.0, 2.0, 10.0, 20.0)  # histology pixels of 12.5 µm on 25 µm MSI
    noise_px = 0.3
    ann = _apply(truth, msi + rng.normal(0, noise_px, msi.shape))
    path = tmp_path / "lm.csv"
    np.savetxt(path, np.column_stack([msi, ann]), delimiter=",", header="msi_x,msi_y,x,y",
               comments="")
    np.testing.assert_allclose(read_landmarks(path)[1], ann)
    reg = fit_landmarks(path, annotation_unit="px")
    # 2-D Gaussian error of sigma 0.3 px per axis: RMS distance ~ 0.3·sqrt(2)
    assert reg.rms_px == pytest.approx(noise_px * math.sqrt(2), rel=0.25)
    assert reg.rms_annotation == pytest.approx(2.0 * reg.rms_px, rel=0.01)
    assert reg.rms_px < reg.loo_rms_px < 1.3 * reg.rms_px
    d = reg.to_dict()
    assert json.loads(json.dumps(d))["msi_to_annotation"] == reg.matrix.tolist()
    assert d["n_landmarks"] == 40 and d["annotation_unit"] == "px"


def test_landmark_errors(tmp_path):
    with pytest.raises(InputError, match="at least 3"):
        fit_landmarks((np.zeros((2, 2)), np.ones((2, 2))), "affine")
    with pytest.raises(InputError, match="degenerate"):
        pts = np.array([[0, 0], [1, 1], [2, 2], [3, 3.0]])
        fit_landmarks((pts, pts * 2), "affine")
    with pytest.raises(InputError, match="unknown registration model"):
        fit_landmarks((np.zeros((3, 2)), np.zeros((3, 2))), "projective")
    bad = tmp_path / "lm.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="msi_x,msi_y,x,y"):
        fit_landmarks(bad)
    bad.write_text("msi_x,msi_y,x,y\n1,2,3,four\n")
    with pytest.raises(InputError, match="non-numeric"):
        fit_landmarks(bad)
    with pytest.raises(InputError, match="not found"):
        fit_landmarks(tmp_path / "none.csv")
    # An exact fit from the minimum number of points carries a warning, not a residual.
    reg = fit_landmarks((np.array([[0, 0], [10, 0.0]]), np.array([[5, 5], [5, 25.0]])))
    assert reg.loo_rms_px is None and "says nothing" in reg.notes[0]


def planted_section(seed, shape=(60, 80), cells_per_px=1.6, odd=1.0):
    """A lobed tissue mask and cells drawn uniformly inside its pixels (MSI frame).

    The outline has no rotational or mirror symmetry; ``odd`` scales its odd harmonics
    (0: symmetric under a 180° turn)."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    theta = np.arctan2(yy - ny / 2, xx - nx / 2)
    r = 1 + odd * (0.12 * np.cos(3 * theta + rng.uniform(0, 6))
                   + 0.05 * np.cos(theta + 2.2)) + 0.08 * np.cos(2 * theta + 1)
    tissue = np.hypot((xx - nx / 2) / (0.38 * nx), (yy - ny / 2) / (0.36 * ny)) < r
    counts = rng.poisson(cells_per_px, shape) * tissue
    iy, ix = np.nonzero(counts)
    rep = counts[iy, ix]
    xy = np.column_stack([np.repeat(ix, rep), np.repeat(iy, rep)]) + rng.uniform(
        -0.5, 0.5, (rep.sum(), 2))
    return tissue, xy


@pytest.mark.parametrize("seed", range(4))
def test_register_auto_recovers_transform(seed):
    rng = np.random.default_rng(100 + seed)
    tissue, xy = planted_section(seed)
    truth = _similarity(rng.uniform(-180, 180), 25.0 * rng.uniform(0.97, 1.03),
                        *rng.uniform(500, 2000, 2))
    ann = _apply(truth, xy)
    types = np.full(len(ann), "Tumor")
    cells = Cells(ann[:, 0], ann[:, 1], types, "um")
    # with the pixel size known (scale guess 25 µm / 1 µm) and without (area-based guess)
    for reg in (register_auto(tissue, cells, pixel_size_um=25.0), register_auto(tissue, ann)):
        yy, xx = np.nonzero(tissue)
        pts = np.column_stack([xx, yy]).astype(float)
        err = np.linalg.norm(reg.to_msi(_apply(truth, pts)) - pts, axis=1)
        assert err.max() < 0.7, err.max()
        assert reg.method == "auto" and reg.score > 0.9
        alt = reg.alternatives[0]  # the audit: a distinct solution, clearly worse
        assert alt["mismatch"] >= 2 * reg.mismatch and alt["score"] < reg.score
        assert reg.to_dict()["alternatives"] == reg.alternatives


@pytest.mark.parametrize("odd", [0.0, 0.05])
def test_register_auto_refuses_a_symmetric_section(odd):
    """A section alike after a 180° turn: the fit is right within a pixel, or refused
    with a line that names both solutions and asks for landmarks; never a wrong one."""
    tissue, xy = planted_section(5, odd=odd)
    truth = _similarity(40.0, 25.0, 900.0, 1400.0)
    cells = Cells(*_apply(truth, xy).T, np.full(len(xy), "Tumor"), "um")
    try:
        reg = register_auto(tissue, cells, pixel_size_um=25.0)
    except InputError as exc:
        assert "ambiguous" in str(exc) and "alternative" in str(exc) and "--landmarks" in str(exc)
        return
    yy, xx = np.nonzero(tissue)
    pts = np.column_stack([xx, yy]).astype(float)
    assert np.linalg.norm(reg.to_msi(_apply(truth, pts)) - pts, axis=1).max() < 1.0
    assert reg.alternatives[0]["mismatch"] >= 2 * reg.mismatch  # the audit trail


def test_register_auto_refuses_partial_cells():
    """Cells on a third of the section only: a poor fit, refused (was a math domain
    error)."""
    tissue, xy = planted_section(2)
    truth = _similarity(-60.0, 25.0, 900.0, 1400.0)
    keep = xy[:, 0] < 30
    ann = _apply(truth, xy[keep])
    with pytest.raises(InputError, match="fits poorly|ambiguous|fits only at a scale"):
        register_auto(tissue, Cells(*ann.T, np.full(len(ann), "CD8"), "um"), pixel_size_um=25.0)


def test_register_auto_histology_pixels_and_partial_grid():
    """Cells in histology pixels (0.5 µm) and a tissue cut by the MSI grid's edge."""
    tissue, xy = planted_section(11, shape=(70, 70))
    truth = _similarity(-23.0, 50.0, 3000.0, 800.0)
    ann = _apply(truth, xy)
    cells = Cells(ann[:, 0], ann[:, 1], np.full(len(ann), "CD8"), "px", pixel_size_um=0.5)
    cut = tissue.copy()
    cut[:, 60:] = False  # the MSI run missed the right part of the section
    keep = xy[:, 0] < 59.5
    reg = register_auto(cut[:, :60], Cells(ann[keep, 0], ann[keep, 1], cells.cell_type[keep],
                                            "px", 0.5), pixel_size_um=25.0)
    yy, xx = np.nonzero(cut[:, :60])
    pts = np.column_stack([xx, yy]).astype(float)
    assert np.linalg.norm(reg.to_msi(_apply(truth, pts)) - pts, axis=1).max() < 0.7


def test_register_auto_errors():
    tissue, xy = planted_section(0)
    with pytest.raises(InputError, match="at least 50 cells"):
        register_auto(tissue, xy[:10])
    with pytest.raises(InputError, match="tissue mask"):
        register_auto(np.zeros((10, 10), bool), xy)
    with pytest.raises(InputError, match="far more than the MSI image"):
        register_auto(tissue, xy * 1000, scale=0.01)


def test_registration_from_matrix():
    m = _similarity(90, 2, 1, 1)
    reg = Registration(m)
    np.testing.assert_allclose(reg.to_annotation([[1, 0]]), [[1, 3]], atol=1e-12)
    np.testing.assert_allclose(reg.to_msi([[1, 3]]), [[1, 0]], atol=1e-12)
