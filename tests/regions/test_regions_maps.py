"""Metabolite maps, on small planted arrays."""
from __future__ import annotations

import numpy as np
import pytest

from ionmap.errors import InputError
from ionmap.regions import build_maps, ratio, resolve_map
from ionmap.regions._maps import map_channels

CHANNELS = ["lactate", "kynurenine", "tryptophan", "palmitate", "oleate", "PI 38:4"]
GROUPS = {"lactate": "glycolysis", "kynurenine": "kynurenine_pathway",
          "tryptophan": "kynurenine_pathway", "palmitate": "lipid", "oleate": "lipid",
          "PI 38:4": "lipid"}


def test_resolve_map():
    assert resolve_map("lactate", CHANNELS, GROUPS) == ("single", "lactate")
    assert resolve_map("kyn_trp", CHANNELS, GROUPS) == ("ratio", "kynurenine", "tryptophan")
    assert resolve_map("palmitate/oleate", CHANNELS) == ("ratio", "palmitate", "oleate")
    assert resolve_map("lipids", CHANNELS, GROUPS) == ("group", "lipid", "palmitate", "oleate",
                                                       "PI 38:4")
    assert resolve_map("kynurenine_pathway", CHANNELS, GROUPS)[2:] == ("kynurenine",
                                                                       "tryptophan")
    with pytest.raises(InputError, match="unknown map 'glucose'"):
        resolve_map("glucose", CHANNELS, GROUPS)
    with pytest.raises(InputError, match="needs channel.*glutamine"):
        resolve_map("glu_gln", CHANNELS + ["glutamate"], GROUPS)
    with pytest.raises(InputError, match="group 'lipid'"):
        resolve_map("lipids", ["lactate"], {"lactate": "glycolysis"})
    assert map_channels(["kyn_trp", "lactate", "kynurenine"], CHANNELS, GROUPS) == [
        "kynurenine", "tryptophan", "lactate"]


def test_normalised_single_and_composite():
    rng = np.random.default_rng(0)
    shape = (30, 40)
    tissue = np.zeros(shape, bool)
    tissue[3:27, 4:36] = True
    factor = rng.uniform(0.5, 2.0, shape)  # per-pixel ionisation (TIC) factor
    base = {c: rng.uniform(50, 500) for c in CHANNELS}
    true = {c: base[c] * np.ones(shape) for c in CHANNELS}
    true["lactate"][10:15, 10:15] *= 4.0
    images = {c: true[c] * factor for c in CHANNELS}
    tic = 10_000.0 * factor
    maps = build_maps(images, tissue, ["lactate", "lipids"], GROUPS, tic=tic)
    lac = maps["lactate"]
    assert np.isnan(lac[~tissue]).all()
    # TIC normalisation removes the pixel factor; baseline 1, niche 4x
    np.testing.assert_allclose(lac[tissue & (true["lactate"] == base["lactate"])], 1.0)
    np.testing.assert_allclose(lac[10:15, 10:15], 4.0)
    # composite: three lipid channels at their own baseline sum to 3
    np.testing.assert_allclose(maps["lipids"][tissue], 3.0)
    # without TIC the factor stays in the map
    raw = build_maps(images, tissue, ["lactate"], GROUPS)["lactate"]
    assert np.nanstd(raw[tissue & (true["lactate"] == base["lactate"])]) > 0.2


def test_ratio_masks_low_denominator():
    tissue = np.ones((4, 5), bool)
    tissue[0, 0] = False
    num = np.full((4, 5), 6.0)
    den = np.full((4, 5), 2.0)
    den[1, 1] = 0.1  # below 10 % of the median (2.0)
    den[2, 2] = 0.0
    r = ratio(num, den, tissue)
    assert np.isnan(r[0, 0]) and np.isnan(r[1, 1]) and np.isnan(r[2, 2])
    assert np.sum(np.isfinite(r)) == 17 and np.all(r[np.isfinite(r)] == 3.0)
    r = ratio(num, den, tissue, noise_floor=0.01)
    assert r[1, 1] == pytest.approx(60.0)
    maps = build_maps({"kynurenine": num, "tryptophan": den}, tissue, ["kyn_trp"])
    expected = np.full((4, 5), 3.0)
    expected[0, 0] = expected[1, 1] = expected[2, 2] = np.nan  # off tissue, below the floor
    np.testing.assert_array_equal(maps["kyn_trp"], expected)  # NaN == NaN


def test_sparse_channel_baseline_is_its_mean():
    tissue = np.ones((10, 10), bool)
    img = np.zeros((10, 10))
    img[:2, :2] = 50.0  # median 0: the tissue mean (2.0) is the baseline
    out = build_maps({"lactate": img}, tissue, ["lactate"])["lactate"]
    assert out[0, 0] == pytest.approx(25.0) and out[5, 5] == 0.0
    empty = build_maps({"lactate": np.zeros((10, 10))}, tissue, ["lactate"])["lactate"]
    assert np.all(empty == 0)


def test_pqn_removes_ionisation_and_keeps_a_niche():
    """Every ion x a smooth ionisation field; a niche raises 2 of 8 ions 3-fold; the TIC is
    mostly matrix with its own unrelated field. PQN recovers the planted abundance of a
    niche ion (fold 3 inside, 1 outside); TIC normalisation imprints the matrix field."""
    shape = (30, 40)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    tissue = np.ones(shape, bool)
    niche = (yy - 15) ** 2 + (xx - 20) ** 2 <= 36
    ionisation = np.exp(0.5 * np.sin(xx / 6.0))
    truth = np.where(niche, 3.0, 1.0)
    images = {f"ion{i}": 100.0 * (i + 1) * ionisation * (truth if i < 2 else 1.0)
              for i in range(8)}
    tic = ionisation * (1e4 * np.exp(0.5 * np.cos(yy / 5.0)) + sum(images.values()))
    pqn = build_maps(images, tissue, ["ion0"], tic=tic, normalisation="pqn")["ion0"]
    np.testing.assert_allclose(pqn, truth, rtol=1e-9)
    by_tic = build_maps(images, tissue, ["ion0"], tic=tic, normalisation="tic")["ion0"]
    assert np.abs(np.log(by_tic / truth)).max() > 0.3
    raw = build_maps(images, tissue, ["ion0"], tic=tic, normalisation="none")["ion0"]
    assert np.abs(np.log(raw / truth)).max() > 0.4
    with pytest.raises(InputError, match="normalisation 'rms'"):
        build_maps(images, tissue, ["ion0"], tic=tic, normalisation="rms")
