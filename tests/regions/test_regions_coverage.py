"""Annotation coverage: hull of the cells, polygons and masks in any frame, and the immune
context measured only where cells were annotated."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tifffile
from matplotlib.path import Path as MplPath

from ionmap.errors import InputError
from ionmap.regions import Cells, Registration, immune_context, read_cells
from ionmap.regions._coverage import cells_hull, coverage_mask, polygons_mask

PX = 25.0


def uniform(rng, shape, per_px, keep=None):
    ny, nx = shape
    n = rng.poisson(per_px * ny * nx)
    xy = rng.uniform([-0.5, -0.5], [nx - 0.5, ny - 0.5], (n, 2))
    return xy if keep is None else xy[keep(xy)]


def similarity(deg, scale, tx, ty):
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty], [0, 0, 1.0]])


def test_cells_hull_follows_the_annotated_part():
    rng = np.random.default_rng(0)
    shape = (50, 70)
    xy = uniform(rng, shape, 1.5, lambda p: (p[:, 0] < 30) & (np.hypot(p[:, 0] - 15, p[:, 1] - 25) > 2))
    hull = cells_hull(xy, shape)
    truth = np.zeros(shape, bool)
    truth[:, :30] = True
    assert (hull & truth).sum() / truth.sum() > 0.99  # within a pixel or two of the cut:
    assert (hull & ~truth).sum() <= 2 * shape[0]
    assert hull[25, 15]  # a small gap between cells is filled
    assert not hull[:, 33:].any()  # nobody looked there
    # sparse cells (one type only): the closing radius follows the cell spacing
    sparse = uniform(rng, shape, 0.15, lambda p: p[:, 0] < 30)
    hs = cells_hull(sparse, shape)
    assert (hs & truth).sum() / truth.sum() > 0.9 and not hs[:, 40:].any()


def test_polygons_mask_against_point_in_polygon():
    """Pixel centres inside the outer ring and outside the hole, through a rotation."""
    m = similarity(23.0, 2.0, 40.0, -10.0)  # MSI -> annotation
    outer = np.array([[10, 5], [80, 10], [70, 70], [15, 60], [10, 5.0]])
    hole = np.array([[35, 25], [50, 25], [50, 40], [35, 40], [35, 25.0]])
    shape = (45, 50)
    got = polygons_mask([[outer, hole]], np.linalg.inv(m), shape)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    centres = np.column_stack([xx.ravel(), yy.ravel()]).astype(float)
    ann = centres @ m[:2, :2].T + m[:2, 2]
    want = MplPath(outer).contains_points(ann) & ~MplPath(hole).contains_points(ann)
    np.testing.assert_array_equal(got.ravel(), want)
    assert want.sum() > 300 and (~want).sum() > 300


def test_coverage_sources(tmp_path):
    rng = np.random.default_rng(1)
    shape = (40, 60)
    reg = Registration(similarity(-15.0, 50.0, 3000.0, 500.0))  # MSI -> histology px (0.5 µm)
    msi = uniform(rng, shape, 1.0)
    ann = reg.to_annotation(msi)
    cells_px = Cells(ann[:, 0], ann[:, 1], np.full(len(ann), "CD8"), "px", 0.5)
    # a GeoJSON region in histology pixels: the left half of the MSI grid
    ring = reg.to_annotation(np.array([[-0.5, -0.5], [29.5, -0.5], [29.5, 39.5], [-0.5, 39.5],
                                       [-0.5, -0.5]]))
    path = tmp_path / "region.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring.tolist()]},
         "properties": {"objectType": "annotation"}}]}))
    want = np.zeros(shape, bool)
    want[:, :30] = True
    mask, source = coverage_mask(shape, cells_px, msi, reg, path)
    np.testing.assert_array_equal(mask, want)
    assert source == "file region.geojson"
    # the same cells in µm: the region is converted with the histology pixel size ...
    um = Cells(ann[:, 0] * 0.5, ann[:, 1] * 0.5, cells_px.cell_type, "um", 0.5)
    reg_um = Registration(np.diag([0.5, 0.5, 1.0]) @ reg.matrix)
    np.testing.assert_array_equal(coverage_mask(shape, um, msi, reg_um, path)[0], want)
    # ... which must be known
    with pytest.raises(InputError, match="histology pixel size"):
        coverage_mask(shape, Cells(um.x, um.y, um.cell_type, "um"), msi, reg_um, path)
    # TIFF masks: on the MSI grid, and in histology pixels (sampled at pixel centres)
    tifffile.imwrite(tmp_path / "msi.tif", want.astype(np.uint8))
    np.testing.assert_array_equal(coverage_mask(shape, cells_px, msi, reg,
                                                tmp_path / "msi.tif")[0], want)
    histo = np.zeros((3600, 6200), np.uint8)
    hx, hy = np.meshgrid(np.arange(6200) + 0.5, np.arange(3600) + 0.5)
    back = reg.to_msi(np.column_stack([hx.ravel(), hy.ravel()]))
    histo.ravel()[back[:, 0] < 29.5] = 1
    tifffile.imwrite(tmp_path / "histo.tif", histo)
    got = coverage_mask(shape, cells_px, msi, reg, tmp_path / "histo.tif")[0]
    assert (got != want).sum() == 0
    with pytest.raises(InputError, match="not found"):
        coverage_mask(shape, cells_px, msi, reg, tmp_path / "none.geojson")
    bad = tmp_path / "bad.geojson"
    bad.write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(InputError, match="no Polygon"):
        coverage_mask(shape, cells_px, msi, reg, bad)
    # default: the hull of the cells
    assert coverage_mask(shape, cells_px, msi, reg)[1] == "cells hull"


def test_qupath_annotation_in_the_cells_file(tmp_path):
    square = [[0, 0], [100, 0], [100, 80], [0, 80], [0, 0]]
    features = [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [square]},
                 "properties": {"objectType": "annotation", "name": "Tumor"}}]
    for x, y in [(10, 10), (50, 40), (90, 70)]:
        features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [x, y]},
                         "properties": {"objectType": "cell",
                                        "classification": {"name": "CD8"}}})
    path = tmp_path / "cells.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    cells = read_cells(path)
    assert len(cells) == 3 and len(cells.annotations) == 1
    np.testing.assert_allclose(cells.annotations[0][0], square)
    reg = Registration(np.diag([10.0, 10.0, 1.0]))  # 10 histology px per MSI pixel
    mask, source = coverage_mask((20, 20), cells, reg.to_msi(cells.xy), reg)
    assert source == "cells-file annotations"
    want = np.zeros((20, 20), bool)
    want[:9, :11] = True  # centres 0..10 in x (0..100 px), 0..8 in y (0..80 px)
    np.testing.assert_array_equal(mask, want)


def disk(shape, cx, cy, r):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return np.hypot(xx - cx, yy - cy) < r


def test_densities_only_inside_the_annotated_region():
    """Cells annotated on the left 40 columns only: the baseline is not diluted by the
    unannotated part, a hotspot on the right is "not annotated", one straddling the edge
    reports its coverage, and an inflamed one on the left is still inflamed."""
    rng = np.random.default_rng(3)
    shape = (60, 90)
    labels = np.zeros(shape, np.int32)
    labels[disk(shape, 18, 30, 7)] = 1  # annotated
    labels[disk(shape, 72, 30, 7)] = 2  # not annotated
    labels[disk(shape, 40, 50, 6)] = 3  # half annotated
    left = lambda p: p[:, 0] < 39.5  # noqa: E731
    cd8 = uniform(rng, shape, 0.5, left)
    tumour = uniform(rng, shape, 2.0, left)
    xy = np.concatenate([cd8, tumour])
    types = np.array(["CD8"] * len(cd8) + ["Tumor"] * len(tumour))
    coverage = np.zeros(shape, bool)
    coverage[:, :40] = True
    tissue = np.ones(shape, bool)
    ctx = immune_context(labels, xy, types, tissue, PX, coverage=coverage, n_permutations=0)
    by = {r["label"]: r for r in ctx.table}
    assert by[1]["class"] == "inflamed" and by[1]["coverage_fraction"] == 1.0
    assert by[1]["outside_density"] == pytest.approx(0.5 / (PX / 1000) ** 2, rel=0.1)
    assert by[2]["class"] == "undetermined" and by[2]["class_reason"] == "not annotated"
    assert by[2]["coverage_fraction"] == 0.0
    assert 0.4 < by[3]["coverage_fraction"] < 0.65
    assert by[3]["class"] in ("inflamed", "undetermined")
    # without the coverage mask, the empty half shows as strong overdispersion
    naive = immune_context(labels, xy, types, tissue, PX, n_permutations=0)
    assert naive.params["dispersion"] > 3 > ctx.params["dispersion"]


def test_not_significant_hotspots_are_never_classified():
    rng = np.random.default_rng(4)
    shape = (40, 40)
    labels = np.zeros(shape, np.int32)
    labels[disk(shape, 12, 12, 6)] = 1
    labels[disk(shape, 28, 28, 6)] = 2
    xy = uniform(rng, shape, 0.6)
    types = np.full(len(xy), "CD8")
    ctx = immune_context(labels, xy, types, np.ones(shape, bool), PX,
                         significant=[True, False], n_permutations=0)
    classes = [(r["class"], r["class_reason"]) for r in ctx.table]
    assert classes == [("inflamed", ""), ("undetermined", "not significant")]
    with pytest.raises(InputError, match="significance flags"):
        immune_context(labels, xy, types, np.ones(shape, bool), PX, significant=[True])


def test_cells_off_the_tissue_are_refused_or_warned():
    rng = np.random.default_rng(5)
    shape = (40, 40)
    labels = np.zeros(shape, np.int32)
    labels[disk(shape, 20, 20, 6)] = 1
    xy = uniform(rng, shape, 1.0)
    types = np.full(len(xy), "CD8")
    tissue = np.ones(shape, bool)
    with pytest.raises(InputError, match="fall on the MSI tissue"):
        immune_context(labels, xy * 25.0, types, tissue, PX)  # cells left in µm
    part = tissue.copy()
    part[:, 28:] = False  # 30 % of the cells off the tissue
    with pytest.warns(UserWarning, match="outside the MSI tissue"):
        immune_context(labels, xy, types, part, PX, n_permutations=0)


def test_registration_error_flags_fragile_classes():
    """An excluded hotspot whose CD8 wall hugs the edge: moving the cells by 3 px puts the
    wall inside; by 0.05 px changes nothing."""
    rng = np.random.default_rng(6)
    shape = (50, 50)
    labels = np.zeros(shape, np.int32)
    labels[disk(shape, 25, 25, 8)] = 1
    xy = uniform(rng, shape, 3.0)
    d = np.hypot(xy[:, 0] - 25, xy[:, 1] - 25)
    keep = (d > 8) & ((d < 10.4) | (rng.uniform(size=len(xy)) < 0.15))
    xy = xy[keep]
    types = np.full(len(xy), "CD8")
    tissue = np.ones(shape, bool)
    for err, stable in ((0.05, True), (3.0, False)):
        row = immune_context(labels, xy, types, tissue, PX, n_permutations=0,
                             registration_error_px=err).table[0]
        assert row["class"] == "immune-excluded" and row["registration_stable"] is stable
    row = immune_context(labels, xy, types, tissue, PX, n_permutations=0).table[0]
    assert row["registration_stable"] is None
