"""Immune context: compartments, densities, phenotypes and the exclusion test on planted
cells with known geometry and known densities."""
from __future__ import annotations

import numpy as np
import pytest

from ionmap.errors import InputError
from ionmap.regions import classify, edge_distance, exclusion_score, immune_context
from ionmap.regions._immune import _permutation_p, rate_ratio_ci, rate_ratio_p_less

PX = 10.0  # µm
MM2_PER_PX = (PX / 1000) ** 2


def disk_labels(shape, disks):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    labels = np.zeros(shape, np.int32)
    for k, (cx, cy, r) in enumerate(disks, start=1):
        labels[np.hypot(xx - cx, yy - cy) < r] = k
    return labels


def poisson_cells(rng, shape, per_px, where=None):
    """Uniform cells (MSI pixel coordinates) at ``per_px`` cells per pixel."""
    n = rng.poisson(per_px * shape[0] * shape[1])
    xy = rng.uniform([-0.5, -0.5], [shape[1] - 0.5, shape[0] - 0.5], (n, 2))
    return xy if where is None else xy[where(xy)]


def test_edge_distance():
    labels = np.zeros((5, 7), np.int32)
    labels[2, 2] = 1
    labels[1:4, 5] = 2
    sd, owner = edge_distance(labels, (PX, PX))
    assert sd[2, 2] == -5.0 and sd[2, 3] == 5.0 and sd[2, 1] == 5.0
    assert sd[1, 1] == pytest.approx(np.hypot(10, 10) - 5)
    assert owner[2, 0] == 1 and owner[2, 6] == 2 and owner[0, 5] == 2
    sd, owner = edge_distance(np.zeros((3, 3), np.int32), (PX, PX))
    assert np.isinf(sd).all() and not owner.any()


def test_uniform_cells_give_the_same_density_everywhere():
    """Areas and counts measured the same way: uniform cells -> equal densities in every
    compartment, distance bin and hotspot (checks the area bookkeeping independently)."""
    rng = np.random.default_rng(0)
    shape = (80, 90)
    tissue = np.ones(shape, bool)
    tissue[:, :5] = False
    labels = disk_labels(shape, [(25, 25, 6.3), (60, 50, 9.0)])
    labels[70:75, 70:78] = 3  # a rectangle too
    per_px = 40.0
    xy = poisson_cells(rng, shape, per_px)
    types = rng.choice(["CD8", "Tumor"], len(xy), p=[0.25, 0.75])
    ctx = immune_context(labels, xy, types, tissue, PX, rim_um=25.0, n_permutations=0)
    lam = {"CD8": 0.25 * per_px / MM2_PER_PX, "Tumor": 0.75 * per_px / MM2_PER_PX}
    for d in ctx.densities:
        assert d["density_per_mm2"] == pytest.approx(lam[d["cell_type"]], rel=0.08), d
    r = {d["label"]: d["area_mm2"] for d in ctx.densities if d["compartment"] == "rim"}
    # the rim of a disk of radius R: pi((R + w)^2 - R^2), w = 2.5 px (pixelated edge)
    assert r[2] / MM2_PER_PX == pytest.approx(np.pi * (11.5**2 - 9**2), rel=0.1)
    for c in ctx.curves:
        if c["area_mm2"] > 30 * MM2_PER_PX:
            assert c["density_per_mm2"] == pytest.approx(lam[c["cell_type"]], rel=0.15), c
    dist = sorted({c["distance_um"] for c in ctx.curves if c["label"] == 2})
    # whole 10 µm bins from the centre of the disk to 3 rims (75 µm) outside the edge
    assert dist[0] < -80 and dist[-1] == 65.0 and np.all(np.diff(dist) == PX)
    assert ctx.params["n_cells_in_tissue"] + ctx.params["n_cells_not_in_tissue"] == len(xy)
    # the shared baseline: identical outside numbers for every hotspot
    outs = {(d["cell_type"], d["n_cells"]) for d in ctx.densities if d["compartment"] == "outside"}
    assert len(outs) == 2


def plant_phenotypes(rng, shape, disks, classes, base_per_px=0.5, rim_px=2.5):
    """CD8 at baseline except: none inside excluded/desert disks, 4x in the rim of
    excluded ones, none within a pixel beyond the rim of desert ones; tumour cells
    everywhere."""
    xy = poisson_cells(rng, shape, 5 * base_per_px)
    keep = rng.uniform(size=len(xy)) < 0.2  # thinning to the baseline
    for (cx, cy, r), cls in zip(disks, classes):
        d = np.hypot(xy[:, 0] - cx, xy[:, 1] - cy)
        inside, rim = d < r, (d >= r) & (d < r + rim_px)
        if cls != "inflamed":
            keep &= ~inside
            keep |= rim & (rng.uniform(size=len(xy)) < (0.8 if cls == "immune-excluded" else 0))
            keep &= ~(d < r + rim_px + 1) if cls == "immune-desert" else True
    tumour = poisson_cells(rng, shape, 2.0)
    return (np.concatenate([xy[keep], tumour]),
            np.array(["CD8"] * int(keep.sum()) + ["Tumor"] * len(tumour)))


@pytest.mark.parametrize("seed", range(5))
def test_planted_phenotypes(seed):
    rng = np.random.default_rng(seed)
    shape = (60, 80)
    disks = [(15.0, 15.0, 6.0), (45.0, 20.0, 5.0), (60.0, 45.0, 7.0), (20.0, 45.0, 4.5)]
    classes = ["inflamed", "immune-excluded", "immune-desert", "immune-excluded"]
    xy, types = plant_phenotypes(rng, shape, disks, classes)
    labels = disk_labels(shape, disks)
    tissue = np.ones(shape, bool)
    ctx = immune_context(labels, xy, types, tissue, 25.0, rim_um=60.0, seed=seed)
    got = [row["class"] for row in ctx.table]
    # The inflamed disk is planted at the baseline itself, 47 expected cells: when its
    # 90 % interval reaches below the scarce threshold the honest call is undetermined.
    first = ctx.table[0]
    spans = first["inside_vs_tissue_lo"] < 0.5 <= first["inside_vs_tissue_hi"]
    assert got == (["undetermined"] if spans else ["inflamed"]) + classes[1:], got
    by = {row["label"]: row for row in ctx.table}
    assert by[2]["exclusion_score"] > 0.8 and by[2]["p_value"] < 0.01
    assert by[4]["p_value"] < 0.05
    assert abs(by[1]["exclusion_score"]) < 0.4
    assert by[3]["inside_count"] == 0 and by[3]["rim_count"] == 0
    assert by[1]["outside_density"] == pytest.approx(0.5 / (0.025**2), rel=0.2)
    assert by[2]["inside_vs_rim_hi"] < 0.1 and by[2]["inside_vs_rim_p"] < 1e-6
    assert by[2]["class_stable"] and by[2]["classes_across_settings"] == "immune-excluded"
    assert all(row["coverage_fraction"] == 1.0 for row in ctx.table)


def test_rate_ratio_interval_matches_binomial_and_covers():
    """The conditional interval equals scipy's exact binomial interval mapped to rate
    ratios, and covers the true ratio at least at the nominal rate (it is exact, so
    conservative)."""
    from scipy.stats import binomtest

    a1, a2 = 3.0, 40.0
    for n1, n2 in [(0, 50), (3, 40), (17, 200), (9, 0)]:
        ci = binomtest(n1, n1 + n2, 0.5).proportion_ci(0.9, method="exact")
        to_ratio = (lambda p: np.inf if p >= 1 else p / (1 - p) * a2 / a1)
        _, lo, hi = rate_ratio_ci(n1, a1, n2, a2, confidence=0.9)
        assert lo == pytest.approx(to_ratio(ci.low), abs=1e-9)
        assert hi == pytest.approx(to_ratio(ci.high), rel=1e-9) if np.isfinite(hi) else \
            ci.high == 1.0
        p = binomtest(n1, n1 + n2, a1 / (a1 + a2), alternative="less").pvalue
        assert rate_ratio_p_less(n1, a1, n2, a2) == pytest.approx(p, rel=1e-9)
    rng = np.random.default_rng(0)
    for rho in (0.2, 1.0, 2.5):
        n1 = rng.poisson(rho * 2.0 * a1, 4000)
        n2 = rng.poisson(2.0 * a2, 4000)
        cover = [lo <= rho <= hi for lo, hi in
                 (rate_ratio_ci(x, a1, y, a2, confidence=0.9)[1:] for x, y in zip(n1, n2))]
        assert np.mean(cover) >= 0.9
    # overdispersion widens the interval
    narrow = rate_ratio_ci(20, a1, 200, a2)
    wide = rate_ratio_ci(20, a1, 200, a2, dispersion=3.0)
    assert wide[1] < narrow[1] and wide[2] > narrow[2] and wide[0] == pytest.approx(narrow[0])


def test_permutation_p_matches_label_shuffling():
    """The hypergeometric draws give the distribution of shuffling the labels."""
    rng = np.random.default_rng(4)
    n_total, n_in, n_rim, n_focus = 400, 30, 50, 60
    region = np.array([0] * n_in + [1] * n_rim + [2] * (n_total - n_in - n_rim))
    a_in, a_rim = 0.03, 0.05
    score = float(exclusion_score(2 / a_in, 11 / a_rim))
    p = _permutation_p(score, n_in, n_rim, n_total, n_focus, a_in, a_rim, 20000, rng)
    hits = 0
    for _ in range(4000):
        focus = rng.permutation(n_total) < n_focus
        k_in, k_rim = np.sum(focus & (region == 0)), np.sum(focus & (region == 1))
        hits += exclusion_score(k_in / a_in, k_rim / a_rim) >= score - 1e-12
    assert 0.05 < p < 0.5
    assert p == pytest.approx(hits / 4000, abs=0.02)
    assert np.isnan(_permutation_p(0.0, 0, 0, 10, 2, 1.0, 1.0, 99, rng))


def test_classify_and_score():
    # counts and areas: inside (n, a), rim (n, a), outside (n, a); baseline 1 per unit
    assert classify(100, 100, 100, 100, 1000, 1000) == ("inflamed", "")
    assert classify(70, 100, 0, 100, 1000, 1000) == ("inflamed", "")
    assert classify(0, 100, 300, 100, 1000, 1000) == ("immune-excluded", "")
    assert classify(0, 100, 0, 100, 1000, 1000) == ("immune-desert", "")
    # near the threshold, or too few cells expected: undetermined with the reason
    cls, why = classify(45, 100, 100, 100, 1000, 1000)
    assert cls == "undetermined" and "scarce threshold" in why
    # the same inside against a rim where the cells gather (3x): scarce against the
    # margin and below the baseline -> excluded; not when the inside may be at baseline
    assert classify(45, 100, 300, 100, 1000, 1000) == ("immune-excluded", "")
    cls, why = classify(3, 5, 60, 5, 1000, 1000)
    assert cls == "undetermined" and "scarce threshold" in why
    # an inflamed call rests on the cells seen: 12 where 3 are expected is evidence
    # although fewer than min_expected are expected; 2 where 3 are is not
    assert classify(12, 3, 3, 3, 1000, 1000) == ("inflamed", "")
    cls, why = classify(2, 3, 3, 3, 1000, 1000)
    assert cls == "undetermined" and "too few cells expected inside" in why
    cls, why = classify(0, 3, 0, 100, 1000, 1000)
    assert cls == "undetermined" and "too few cells expected inside" in why
    assert classify(0, 8, 0, 100, 1000, 1000) == ("immune-desert", "")
    assert classify(0, 8, 0, 100, 1000, 1000, dispersion=2.0)[0] == "undetermined"
    cls, why = classify(0, 100, 0, 2, 1000, 1000)
    assert cls == "undetermined" and "at the rim" in why
    assert classify(40, 100, 300, 100, 1000, 1000, scarce_ratio=0.25)[0] == "inflamed"
    assert classify(10, 100, 60, 100, 1000, 1000, rim_ratio=0.9)[0] == "immune-desert"
    assert classify(10, 0, 60, 100, 1000, 1000)[0] == "undetermined"
    assert classify(10, 10, 60, 100, 0, 1000)[0] == "undetermined"
    np.testing.assert_allclose(exclusion_score([0, 1, 3, 0], [0, 1, 1, 2]), [0, 0, -0.5, 1])


def test_edge_guard_keeps_boundary_cells_out_of_the_inside():
    shape = (30, 30)
    labels = np.zeros(shape, np.int32)
    labels[10:20, 10:20] = 1
    # CD8 cells 0.3 px inside the edge (in the guard band), one deep inside, one far out
    xy = np.array([[9.8, 15.0], [15.0, 9.8], [19.2, 15.0], [15.0, 15.0], [5.0, 5.0]])
    types = np.array(["CD8"] * 5)
    row = immune_context(labels, xy, types, np.ones(shape, bool), PX)
    assert row.table[0]["inside_count"] == 1 and row.table[0]["rim_count"] == 0
    row = immune_context(labels, xy, types, np.ones(shape, bool), PX, edge_guard_um=0.0)
    assert row.table[0]["inside_count"] == 4
    assert row.table[0]["inside_area_mm2"] == pytest.approx(100 * MM2_PER_PX, rel=0.01)


def test_thin_hotspot_is_undetermined():
    labels = np.zeros((20, 20), np.int32)
    labels[10, 2:15] = 1  # one pixel wide: all of it within the guard band
    xy = poisson_cells(np.random.default_rng(1), (20, 20), 3.0)
    row = immune_context(labels, xy, ["CD8"] * len(xy), np.ones((20, 20), bool), PX).table[0]
    assert row["class"] == "undetermined" and row["inside_area_mm2"] == 0
    assert np.isnan(row["p_value"])


def test_missing_cell_type_and_errors():
    labels = disk_labels((20, 20), [(10, 10, 4)])
    xy = poisson_cells(np.random.default_rng(0), (20, 20), 2.0)
    ctx = immune_context(labels, xy, ["Tumor"] * len(xy), np.ones((20, 20), bool), PX)
    row = ctx.table[0]
    assert row["class"] == "undetermined" and np.isnan(row["p_value"])
    assert "no cells of the type" in row["class_reason"]
    assert ctx.params["cell_type_present"] is False
    empty = immune_context(np.zeros((20, 20), np.int32), xy, ["CD8"] * len(xy),
                           np.ones((20, 20), bool), PX)
    assert empty.table == [] and empty.curves == []
    with pytest.raises(InputError, match="pixel size"):
        immune_context(labels, xy, ["CD8"] * len(xy), np.ones((20, 20), bool), 0.0)
    with pytest.raises(InputError, match="rim"):
        immune_context(labels, xy, ["CD8"] * len(xy), np.ones((20, 20), bool), PX, rim_um=0)
    with pytest.raises(InputError, match="shape"):
        immune_context(labels, xy, ["CD8"] * len(xy), np.ones((20, 21), bool), PX)


def test_takes_the_hotspots_of_find_hotspots():
    from ionmap.regions import find_hotspots

    rng = np.random.default_rng(2)
    shape = (60, 80)
    disks = [(20.0, 20.0, 6.0), (55.0, 40.0, 7.0)]
    xy, types = plant_phenotypes(rng, shape, disks, ["immune-excluded", "inflamed"])
    values = disk_labels(shape, disks).astype(bool) * 3.0 + rng.normal(1, 0.3, shape)
    hs = find_hotspots(values, np.ones(shape, bool))
    ctx = immune_context(hs, xy, types, np.ones(shape, bool), 25.0)
    got = {(round(h["centroid_x"]), row["class"]) for h, row in zip(hs.table, ctx.table)}
    assert got == {(20, "immune-excluded"), (55, "inflamed")}


def test_dispersion_detects_clustered_cells():
    """Poisson cells give φ ≈ 1; a Thomas cluster process (parents 0.02/px, 10 offspring,
    σ 1.5 px) gives φ well above; the intervals widen accordingly."""
    from ionmap.regions._immune import _dispersion

    rng = np.random.default_rng(0)
    shape = (80, 100)
    sd, measured = np.full(shape, np.inf), np.ones(shape, bool)
    lo, hi = [-0.5, -0.5], [shape[1] - 0.5, shape[0] - 0.5]
    poisson = rng.uniform(lo, hi, (rng.poisson(0.2 * shape[0] * shape[1]), 2))
    parents = rng.uniform(lo, hi, (rng.poisson(0.02 * shape[0] * shape[1]), 2))
    kids = np.repeat(parents, rng.poisson(10, len(parents)), axis=0)
    kids = kids + rng.normal(0, 1.5, kids.shape)
    kids = kids[np.all((kids > lo) & (kids < hi), axis=1)]
    assert _dispersion(sd, measured, poisson, 60.0, (25.0, 25.0)) < 1.3
    assert _dispersion(sd, measured, kids, 60.0, (25.0, 25.0)) > 3.0


def test_dispersion_is_one_for_poisson_and_consistent_for_negative_binomial():
    """Poisson cells: the test of the Poisson model keeps φ = 1 in about 95 % of sections
    (the intervals are not widened by tile noise); NB1 tiles with φ = 2 or 4 (gamma-mixed
    intensity per tile): the estimate is centred on the truth."""
    from ionmap.regions._immune import _dispersion

    shape, side = (60, 80), 5  # tiles of 2 x 60 µm at 25 µm: 5 px
    sd, measured = np.full(shape, np.inf), np.ones(shape, bool)
    lo, hi = [-0.5, -0.5], [shape[1] - 0.5, shape[0] - 0.5]
    per_px = 300 * 0.025**2  # 300 CD8 / mm² at 25 µm pixels
    ones = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        xy = rng.uniform(lo, hi, (rng.poisson(per_px * shape[0] * shape[1]), 2))
        ones += _dispersion(sd, measured, xy, 60.0, (25.0, 25.0)) == 1.0
    assert ones >= 17
    n_tiles = (shape[0] // side) * (shape[1] // side)
    for phi in (2.0, 4.0):
        est = []
        for seed in range(12):
            rng = np.random.default_rng(100 + seed)
            xy = rng.uniform(lo, hi, (rng.poisson(3 * per_px * shape[0] * shape[1]), 2))
            tile = (np.floor(xy[:, 1] + 0.5) // side * (shape[1] // side)
                    + np.floor(xy[:, 0] + 0.5) // side).astype(int)
            mu = side * side * per_px
            w = rng.gamma(mu / (phi - 1), phi - 1, n_tiles) / mu
            keep = rng.uniform(size=len(xy)) < w[tile] / 3
            est.append(_dispersion(sd, measured, xy[keep], 60.0, (25.0, 25.0)))
        assert abs(np.mean(est) - phi) < 0.15 * phi, (phi, est)


@pytest.mark.parametrize("seed", range(4))
def test_small_niches_are_called_on_their_evidence(seed):
    """Disks of radius 3.3 px at 25 µm with 300 CD8 / mm² (about 5 cells expected in the
    core): an inflamed one (3x) is called inflamed; an excluded one (none inside, 4x at the
    rim), where 0 of 5 cannot show scarcity against the tissue, by the core-vs-margin
    contrast; a desert one (none inside nor at the rim) stays undetermined, too few cells
    expected to show the scarcity; never a wrong class."""
    rng = np.random.default_rng(seed)
    shape = (50, 70)
    disks = [(15.0, 15.0, 3.3), (50.0, 15.0, 3.3), (30.0, 38.0, 3.3)]
    per_px = 300 * 0.025**2
    xy = poisson_cells(rng, shape, 4 * per_px)
    u = rng.uniform(size=len(xy))
    keep = u < 0.25
    rim_px = 60.0 / 25.0
    for (cx, cy, r), factor_in, factor_rim in zip(disks, (3.0, 0.0, 0.0), (1.0, 4.0, 0.0)):
        d = np.hypot(xy[:, 0] - cx, xy[:, 1] - cy)
        inside, rim = d < r, (d >= r) & (d < r + rim_px + 1)
        keep = np.where(inside, u < 0.25 * factor_in, np.where(rim, u < 0.25 * factor_rim, keep))
    xy = xy[keep]
    ctx = immune_context(disk_labels(shape, disks), xy, ["CD8"] * len(xy),
                         np.ones(shape, bool), 25.0, n_permutations=0)
    rows = ctx.table
    assert all(r["expected_inside"] < 6 for r in rows)
    assert rows[0]["class"] == "inflamed", rows[0]
    assert rows[1]["class"] == "immune-excluded", rows[1]
    assert rows[1]["inside_vs_tissue_hi"] >= 0.5  # not scarce against the tissue alone
    assert rows[2]["class"] == "undetermined", rows[2]
    assert rows[2]["inside_vs_tissue_hi"] >= 0.5 and rows[2]["inside_count"] == 0
