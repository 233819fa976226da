"""Hotspots: Gi* against a brute-force NumPy computation, BH against its definition, and
detection of planted niches (found, centred, sized) with few false positives on noise."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from ionmap.errors import InputError
from ionmap.regions import bh_qvalues, find_hotspots, gi_star
from ionmap.regions.hotspots import window


def gi_star_brute(values, mask, weights):
    """Gi* by its textbook formula, one pixel at a time over explicit neighbour lists."""
    ny, nx = values.shape
    valid = mask & np.isfinite(values)
    xs = values[valid]
    n = xs.size
    mean = xs.mean()
    s = np.sqrt((xs**2).mean() - mean**2)
    r = weights.shape[0] // 2
    out = np.full(values.shape, np.nan)
    for i in range(ny):
        for j in range(nx):
            if not valid[i, j]:
                continue
            sw = swx = sw2 = 0.0
            for di in range(-r, r + 1):
                for dj in range(-r, r + 1):
                    a, b = i + di, j + dj
                    if 0 <= a < ny and 0 <= b < nx and valid[a, b]:
                        w = weights[di + r, dj + r]
                        sw += w
                        sw2 += w * w
                        swx += w * values[a, b]
            den = s * np.sqrt((n * sw2 - sw**2) / (n - 1))
            out[i, j] = (swx - mean * sw) / den
    return out


@pytest.mark.parametrize("radius,shape", [(1, "square"), (2, "square"), (2, "disk")])
def test_gi_star_matches_brute_force(radius, shape):
    rng = np.random.default_rng(radius)
    values = rng.gamma(2.0, 3.0, (23, 31)) + 1000.0  # large offset: checks cancellation
    mask = np.ones(values.shape, bool)
    mask[:4, :6] = False       # off tissue
    mask[10:13, 15:18] = False  # a hole
    values[5, 20] = np.nan      # a masked ratio pixel
    z = gi_star(values, mask, radius=radius, shape=shape)
    ref = gi_star_brute(values, mask, window(radius, shape))
    np.testing.assert_array_equal(np.isnan(z), np.isnan(ref))
    np.testing.assert_allclose(z[np.isfinite(z)], ref[np.isfinite(ref)], rtol=1e-9, atol=1e-9)


def test_window_shapes_and_errors():
    assert window(1).sum() == 9 and window(2, "disk").sum() == 13
    with pytest.raises(InputError):
        window(0)
    with pytest.raises(InputError):
        window(1, "hexagon")


def bh_reference(p, alpha):
    """Benjamini-Hochberg step-up by its definition: reject the k smallest p-values,
    k = max{i : p_(i) <= i·alpha/m}."""
    m = p.size
    order = np.argsort(p)
    ok = p[order] <= np.arange(1, m + 1) * alpha / m
    k = np.max(np.nonzero(ok)[0]) + 1 if ok.any() else 0
    reject = np.zeros(m, bool)
    reject[order[:k]] = True
    return reject


@pytest.mark.parametrize("seed", range(5))
def test_bh_matches_definition(seed):
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(size=300), rng.uniform(0, 0.002, 40)])
    q = bh_qvalues(p)
    for alpha in (0.01, 0.05, 0.2):
        np.testing.assert_array_equal(q <= alpha, bh_reference(p, alpha))
    assert bh_qvalues(np.array([])).size == 0


def planted_map(seed, niches, shape=(60, 80), noise=0.25, contrast=2.0, edge=0.6):
    """A map with soft-edged disks on a noisy baseline of 1, inside a tissue ellipse."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    tissue = ((xx - nx / 2) / (0.45 * nx)) ** 2 + ((yy - ny / 2) / (0.45 * ny)) ** 2 < 1
    values = 1.0 + rng.normal(0, noise, shape)
    for cx, cy, r in niches:
        d = np.hypot(xx - cx, yy - cy)
        values += contrast * 0.5 * (1 - np.tanh((d - r) / (2 * edge)))
    values[~tissue] = np.nan
    return values, tissue


NICHES = [(25.0, 20.0, 5.0), (55.0, 35.0, 7.5), (35.0, 45.0, 3.5)]


@pytest.mark.parametrize("seed", range(6))
def test_planted_niches_found(seed):
    values, tissue = planted_map(seed, NICHES)
    hs = find_hotspots(values, tissue)
    assert len(hs) == len(NICHES), hs.table
    for cx, cy, r in NICHES:
        hits = [h for h in hs.table
                if np.hypot(h["centroid_x"] - cx, h["centroid_y"] - cy) < 0.5 * r]
        assert len(hits) == 1
        # half-maximum trimming: area close to the disk's, not grown by the Gi* window
        assert hits[0]["area_px"] == pytest.approx(np.pi * r * r, rel=0.25)
        assert hits[0]["mean_value"] > 2.0
    # the table agrees with the labels; numbered by decreasing peak z
    for h in hs.table:
        sel = hs.labels == h["label"]
        assert sel.sum() == h["area_px"]
        assert h["centroid_x"] == pytest.approx(np.nonzero(sel)[1].mean())
        assert h["max_value"] == pytest.approx(values[sel].max())
    assert [h["max_z"] for h in hs.table] == sorted((h["max_z"] for h in hs.table),
                                                     reverse=True)
    assert np.all(hs.q[hs.labels > 0] <= 0.05)


def test_untrimmed_region_bleeds_by_the_window():
    values, tissue = planted_map(0, [(40.0, 30.0, 6.0)], noise=0.05, contrast=4.0)
    wide = find_hotspots(values, tissue, extent=None, radius=2)
    tight = find_hotspots(values, tissue, radius=2)
    assert wide.table[0]["area_px"] > 1.4 * np.pi * 36
    assert tight.table[0]["area_px"] == pytest.approx(np.pi * 36, rel=0.1)


def test_noise_only_maps_give_few_hotspots():
    """BH at 5 % over pixels: on pure noise a hotspot should be rare."""
    found = 0
    for seed in range(20):
        values, tissue = planted_map(100 + seed, [])
        found += len(find_hotspots(values, tissue))
    assert found <= 2


def test_min_area_and_parameters():
    values, tissue = planted_map(1, NICHES)
    small = find_hotspots(values, tissue, min_area_px=60)
    assert len(small) == 2  # the r=3.5 disk (~38 px) is dropped
    assert small.params["min_area_px"] == 60 and small.params["n_tested"] == tissue.sum()
    assert len(find_hotspots(np.ones((20, 20)), np.ones((20, 20), bool))) == 0
    for bad in ({"fdr": 0}, {"fdr": 1.5}, {"min_area_px": 0}, {"extent": 1.0}):
        with pytest.raises(InputError):
            find_hotspots(values, tissue, **bad)


def test_z_scores_are_standard_normal_under_the_null():
    """Gi* of i.i.d. noise: z ~ N(0, 1) per pixel (checks the variance formula)."""
    rng = np.random.default_rng(5)
    values = rng.normal(size=(200, 200))
    z = gi_star(values, np.ones(values.shape, bool))
    assert abs(np.mean(z)) < 0.02 and abs(np.std(z) - 1) < 0.02
    assert abs(np.mean(z > norm.ppf(0.95)) - 0.05) < 0.005
