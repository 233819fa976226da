"""Interference lists and window-vs-peak verdicts against m/z computed independently:
pyopenms ``EmpiricalFormula`` masses and fine isotope distributions, electrons by hand."""
from __future__ import annotations

import numpy as np
import pyopenms as oms
import pytest

from ionmap import chem
from ionmap.interference import interferences, window_vs_fwhm

ELECTRON = 0.000548579909


def target_table(targets: list[chem.Target], ppm: float) -> list[dict]:
    """Target rows as a result stores them, windows ±ppm around each m/z."""
    rows = []
    for t in targets:
        p = t.ppm or ppm
        rows.append({"name": t.name, "formula": t.formula, "adduct": t.adduct, "mz": t.mz,
                     "ppm": p, "window": [t.mz * (1 - p * 1e-6), t.mz * (1 + p * 1e-6)]})
    return rows


def ion_mz(atoms: str, charge: int) -> float:
    """m/z of the ion made of ``atoms`` (every atom, adduct included) with ``charge``."""
    return (oms.EmpiricalFormula(atoms).getMonoWeight() - charge * ELECTRON) / abs(charge)


def m1_mz(atoms: str, charge: int) -> tuple[float, float]:
    """The merged M+1 peak of an ion (all isotopologues one neutron up, abundance-weighted,
    as one peak at R = 20000) and its abundance relative to M+0, from pyopenms."""
    dist = oms.EmpiricalFormula(atoms).getIsotopeDistribution(
        oms.FineIsotopePatternGenerator(1e-7)).getContainer()
    mass = np.array([p.getMZ() for p in dist])
    prob = np.array([p.getIntensity() for p in dist])
    m0 = mass.min()
    one = np.abs(mass - m0 - 1.0) < 0.2
    mean = (mass[one] * prob[one]).sum() / prob[one].sum()
    return (mean - charge * ELECTRON) / abs(charge), prob[one].sum() / prob[np.argmin(mass)]


def test_other_ions_inside_each_window_match_pyopenms():
    cl = ion_mz("C3H6O3Cl", -1)                 # lactate [M+Cl]-
    m1, m1_abundance = m1_mz("C5H8NO4", -1)     # glutamate [M-H]- M+1
    aa = ion_mz("C13H9N2", -1)                  # 9-aminoacridine [M-H]-
    targets = [
        chem.Target("lactate", chem.mz("C3H6O3", "[M-H]-"), None, "C3H6O3", "[M-H]-"),
        chem.Target("glutamate", chem.mz("C5H9NO4", "[M-H]-"), None, "C5H9NO4", "[M-H]-"),
        chem.Target("probe-cl", cl * (1 + 4e-6), 5.0),    # inside its 5 ppm window
        chem.Target("probe-edge", cl * (1 + 5.5e-6), 5.0),  # 5.5 ppm away: outside
        chem.Target("probe-m1", m1, 5.0),
        chem.Target("probe-matrix", aa * (1 - 2e-6), 5.0),
        chem.Target("empty", 500.1234, 5.0),
    ]
    table = target_table(targets, 5.0)
    rows = dict(zip([t.name for t in targets], interferences(table, "negative", 20000.0)))
    ions = {name: {r["ion"]: r for r in found} for name, found in rows.items()}
    # the two probes lie 1.5 ppm apart, each inside the other's window; lactate [M+Cl]- is
    # 4 ppm from one (inside) and 5.5 ppm from the other (outside)
    assert set(ions["probe-cl"]) == {"lactate [M+Cl]-", "probe-edge"}
    assert ions["probe-cl"]["lactate [M+Cl]-"]["ppm"] == pytest.approx(-4.0, abs=0.01)
    assert ions["probe-cl"]["lactate [M+Cl]-"]["mz"] == pytest.approx(cl, abs=1e-5)
    assert set(ions["probe-edge"]) == {"probe-cl"}
    hit = ions["probe-m1"]["glutamate [M-H]- M+1"]
    assert hit["ppm"] == pytest.approx(0.0, abs=0.3)
    assert hit["abundance"] == pytest.approx(m1_abundance, rel=0.02)
    assert set(ions["probe-matrix"]) == {"9-AA [M-H]- (matrix)"}
    assert ions["probe-matrix"]["9-AA [M-H]- (matrix)"]["ppm"] == pytest.approx(2.0, abs=0.01)
    # a target's own ion is not its interference; nothing near lactate, glutamate or 500
    assert rows["lactate"] == [] and rows["glutamate"] == [] and rows["empty"] == []


def test_positive_adducts_and_the_panel_finding():
    k = ion_mz("C6H12O6K", 1)  # glucose [M+K]+
    targets = [chem.Target("glucose", chem.mz("C6H12O6", "[M+H]+"), None, "C6H12O6", "[M+H]+"),
               chem.Target("probe-k", k, 3.0)]
    rows = interferences(target_table(targets, 3.0), "positive", 20000.0)
    assert [r["ion"] for r in rows[1]] == ["glucose [M+K]+"]
    # the built-in negative panel: oleate [M+Na-2H]- sits 7.9 ppm below arachidonate [M-H]-
    table = target_table(chem.panel("tme-negative"), 10.0)
    rows = dict(zip([t["name"] for t in table], interferences(table, "negative", 20000.0)))
    na = ion_mz("C18H32O2Na", -1)  # oleate C18H34O2 + Na - 2H
    ara = ion_mz("C20H31O2", -1)
    hit = {r["ion"]: r for r in rows["arachidonate"]}["oleate [M+Na-2H]-"]
    assert hit["ppm"] == pytest.approx((na - ara) / ara * 1e6, abs=0.01)


def test_window_against_the_peak_width():
    table = target_table([chem.Target("a", 100.0, 5.0), chem.Target("b", 200.0, 25.0),
                          chem.Target("c", 300.0, 150.0), chem.Target("d", 400.0, 10.0)], 5.0)
    rows = window_vs_fwhm(table, np.array([50.0, 50.0, 50.0, np.nan]), "tof")
    assert [r["verdict"] for r in rows[:3]] == ["narrower than the peak", "matches the peak",
                                                "much wider than the peak"]
    assert [r["ratio"] for r in rows[:3]] == [0.2, 1.0, 6.0]
    # d has no width of its own: TOF peaks have a constant width in ppm
    assert rows[3]["fwhm_ppm"] == pytest.approx(50.0) and "other targets" in rows[3]["fwhm_from"]
    # Orbitrap: FWHM (Th) ∝ m^1.5, so in ppm ∝ m^0.5: 20 ppm at 100 is 40 ppm at 400
    rows = window_vs_fwhm(table, np.array([20.0, np.nan, np.nan, np.nan]), "orbitrap")
    assert rows[3]["fwhm_ppm"] == pytest.approx(40.0)
    assert rows[3]["verdict"] == "narrower than the peak"  # 20 ppm window, 40 ppm peak
    none = window_vs_fwhm(table, np.full(4, np.nan))
    assert {r["verdict"] for r in none} == {"undetermined"}
