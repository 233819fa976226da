"""The tissue mask: segmentation on the panel ions (planted arrays with the truth) and the
user mask files (TIFF, PNG, GeoJSON in MSI pixels) with their one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ionmap.errors import InputError
from ionmap.regions import read_tissue_mask, tissue_mask
from ionmap.regions._tissue import find_tissue

SHAPE = (40, 50)


def _section(rng, matrix_level=20.0):
    """(mask, tic, images, truth): an irregular tissue with a real 6x6 hole and a ragged
    edge, 10 panel ions on it (absent off it, where a bright matrix makes the TIC high);
    two single-pixel dropouts in the tissue and a stray analyte-like pixel off it."""
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    truth = ((yy - 20) / 15.0) ** 2 + ((xx - 25) / 19.0) ** 2 <= 1
    truth &= ~((yy % 7 == 0) & (xx < 12))  # ragged left edge: notches
    truth[17:23, 22:28] = False  # a real hole (36 px): stays
    mask = np.ones(SHAPE, bool)
    mask[:, :2] = False  # no spectra there
    images = {}
    for i in range(10):
        level = rng.lognormal(np.log(1e3), 0.3, SHAPE)
        images[f"ion{i}"] = np.where(truth, level, rng.exponential(5.0, SHAPE))
    tic = np.where(truth, 1e5, matrix_level * 1e5) * rng.lognormal(0, 0.2, SHAPE)
    observed = truth.copy()
    for y, x in ((10, 30), (28, 15)):  # dropouts: every ion low in one pixel
        for img in images.values():
            img[y, x] = 1.0
    images["ion0"][2, 45] = images["ion1"][2, 45] = 5e3  # stray pixel with a few ions
    for name in ("ion2", "ion3", "ion4", "ion5", "ion6", "ion7"):
        images[name][2, 45] = 2e3
    return mask, tic, images, observed & mask


def test_bright_matrix_off_tissue_is_not_tissue():
    rng = np.random.default_rng(1)
    mask, tic, images, truth = _section(rng)
    found = tissue_mask(mask, tic, images=images)
    np.testing.assert_array_equal(found, truth)
    # the TIC alone (no ion images) takes the bright slide for tissue: why ions are used
    assert (tissue_mask(mask, tic) & truth).sum() < 0.1 * truth.sum()


def test_tissue_only_acquisition_with_a_niche_stays_whole():
    """No off-tissue spectra: a large niche raising 3 of 10 ions 4-fold must not be split
    off as "tissue", nor the rest of the tissue dropped."""
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    niche = (yy - 15) ** 2 + (xx - 20) ** 2 <= 8**2
    mask = np.ones(SHAPE, bool)
    images = {f"ion{i}": rng.lognormal(np.log(1e3), 0.3, SHAPE) * np.where(
        niche & (i < 3), 4.0, 1.0) for i in range(10)}
    np.testing.assert_array_equal(tissue_mask(mask, None, images=images), mask)
    np.testing.assert_array_equal(tissue_mask(mask, None), mask)  # nothing to go on


def test_tic_only_splits_a_bimodal_tic():
    rng = np.random.default_rng(3)
    mask = np.ones(SHAPE, bool)
    tissue = np.zeros(SHAPE, bool)
    tissue[8:32, 10:40] = True
    tic = np.where(tissue, rng.lognormal(np.log(1e5), 0.3, SHAPE),
                   rng.lognormal(np.log(3e3), 0.3, SHAPE))
    np.testing.assert_array_equal(tissue_mask(mask, tic), tissue)
    np.testing.assert_array_equal(tissue_mask(mask, rng.lognormal(np.log(1e5), 0.4, SHAPE)),
                                  mask)


def _truth():
    out = np.zeros(SHAPE, bool)
    out[5:30, 8:40] = True
    out[12:18, 20:26] = False
    return out


def test_user_masks_tiff_png_geojson(tmp_path):
    import tifffile
    from matplotlib.image import imsave

    truth = _truth()
    tifffile.imwrite(tmp_path / "m.tif", truth.astype(np.uint8) * 255)
    imsave(tmp_path / "m.png", truth.astype(float), cmap="gray")
    ring = [[7.5, 4.5], [39.5, 4.5], [39.5, 29.5], [7.5, 29.5], [7.5, 4.5]]
    hole = [[19.5, 11.5], [25.5, 11.5], [25.5, 17.5], [19.5, 17.5], [19.5, 11.5]]
    geo = {"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {"objectType": "annotation"},
        "geometry": {"type": "Polygon", "coordinates": [ring, hole]}}]}
    (tmp_path / "m.geojson").write_text(json.dumps(geo))
    for name in ("m.tif", "m.png", "m.geojson"):
        np.testing.assert_array_equal(read_tissue_mask(tmp_path / name, SHAPE), truth,
                                      err_msg=name)
    # the user's mask replaces the segmentation, on the pixels that have a spectrum
    mask = np.ones(SHAPE, bool)
    mask[:, :10] = False
    found = find_tissue(mask, np.ones(SHAPE), None, tmp_path / "m.tif")
    np.testing.assert_array_equal(found, truth & mask)


def test_user_mask_errors_name_the_file(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "small.tif", np.ones((10, 10), np.uint8))
    tifffile.imwrite(tmp_path / "empty.tif", np.zeros(SHAPE, np.uint8))
    (tmp_path / "broken.tif").write_bytes(b"not a tiff at all")
    (tmp_path / "broken.geojson").write_text("{")
    (tmp_path / "points.geojson").write_text(json.dumps(
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}}))
    (tmp_path / "mask.bmp").write_bytes(b"BM")
    cases = {"small.tif": "10x10 pixels, the MSI grid is 40x50",
             "empty.tif": "no tissue pixel", "broken.tif": "cannot read",
             "broken.geojson": "cannot read the tissue mask", "points.geojson":
             "tissue mask: no Polygon", "mask.bmp": "must be a TIFF, PNG or GeoJSON",
             "missing.tif": "not found"}
    for name, message in cases.items():
        with pytest.raises(InputError, match=message) as err:
            read_tissue_mask(tmp_path / name, SHAPE)
        assert name in str(err.value) and "\n" not in str(err.value)
    away = np.zeros(SHAPE, bool)
    away[:, :10] = True
    tifffile.imwrite(tmp_path / "right.tif", (~away).astype(np.uint8))
    with pytest.raises(InputError, match="no pixel of the tissue mask has a spectrum"):
        find_tissue(away, None, None, tmp_path / "right.tif")
