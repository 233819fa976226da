"""Annotation confidence (MSM, target–decoy FDR) on a synthetic section with planted truth:
panel ions with isotope patterns (present), formulas not in the sample (absent) and an
impostor (one peak at a formula's m/z, no isotopes, spatially random)."""
from __future__ import annotations

import warnings

import numpy as np

import ionmap
from ionmap import annotate, chem


def test_present_confident_absent_and_impostor_not(tmp_path):
    impostor = chem.mz("C7H6O2", "[M-H]-")
    sample = ionmap.synth.make_sample(tmp_path, "a", seed=5, shape=(36, 44), rim_um=10.0,
                                      drift_ppm=-15.0, drift_gradient_ppm=10.0,
                                      impostors=(impostor,))
    absent = [("phenylalanine", "C9H11NO2"), ("citrate", "C6H8O7"), ("taurine", "C2H7NO3S")]
    targets = chem.panel("tme-negative") + [
        chem.Target("impostor", impostor, None, "C7H6O2", "[M-H]-")] + [
        chem.Target(n, chem.mz(f, "[M-H]-"), None, f, "[M-H]-") for n, f in absent]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ionmap.convert(sample.imzml, tmp_path / "o.zarr", targets=targets, ppm=5.0)
    rows = {t["name"]: t for t in res.targets}
    present = sample.truth_dict["targets"]
    for name in present:
        assert rows[name]["fdr"] <= 0.1, (name, rows[name])
        assert rows[name]["n_decoys"] >= 20
    for name in ["impostor"] + [n for n, _ in absent]:
        assert rows[name]["fdr"] > 0.1, (name, rows[name])
    assert rows["impostor"]["rho_spatial"] < 0.2  # its "isotope" images are empty
    # profile peaks of FWHM m/R = 50 ppm (R = 20000) against 10 ppm-wide windows
    for name in present:
        peak = rows[name]["window_vs_fwhm"]
        assert peak["fwhm_from"] == "this peak" and 42.0 <= peak["fwhm_ppm"] <= 55.0, peak
        assert peak["verdict"] == "narrower than the peak" and peak["window_ppm"] == 10.0
    for name, _ in absent:  # no peak of their own: the others' width (TOF: same ppm)
        assert "other targets" in rows[name]["window_vs_fwhm"]["fwhm_from"]


def test_fdr_is_monotone_and_counts_decoys():
    t = np.array([0.9, 0.5, 0.3, 0.0])
    d = np.r_[np.full(38, 0.0), [0.4, 0.6]]  # 2 decoys per target
    q = annotate.fdr(t, d, 10)
    # at 0.9: 0 decoys -> 0; at 0.5: 1 decoy / 10 per target / 2 targets = 0.05;
    # at 0.3: 2 / 10 / 3 = 0.0667; MSM 0: 1
    np.testing.assert_allclose(q, [0.0, 0.05, 2 / 30, 1.0])
    order = np.argsort(-t)
    assert (np.diff(q[order]) >= 0).all()
    assert len(set(annotate.decoy_adducts("C5H9NO4", "[M-H]-"))) == 20
    assert annotate.decoy_adducts("C5H9NO4", "[M-H]-") == annotate.decoy_adducts("C5H9NO4",
                                                                                  "[M-H]-")


def test_chaos_separates_structure_from_noise():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:40]
    blob = np.exp(-((yy - 20) ** 2 + (xx - 20) ** 2) / 80.0)
    noise = rng.random((40, 40))
    # the measure is near 1 for any image and separates by little (as in METASPACE)
    assert annotate.chaos(blob) > annotate.chaos(noise) + 0.01
    assert annotate.chaos(np.zeros((5, 5))) == 0.0
