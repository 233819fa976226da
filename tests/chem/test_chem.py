"""ionmap.chem against an independent reference: pyopenms EmpiricalFormula masses.

synth plants ions with the same ``chem.mz`` that convert extracts, so a mass error would
cancel out end to end; here every panel target and adduct is checked against OpenMS's
element table and proton mass instead.
"""
from __future__ import annotations

import pyopenms  # a test dependency (pyproject [test]): this check must not skip
import pytest

from ionmap import chem
from ionmap.errors import InputError

#: adduct -> (multimer n, groups added, groups lost, signed charge); spelled out here, not
#: parsed by the code under test.
ADDUCTS = {
    "[M-H]-": (1, [], ["H"], -1),
    "[M+H]+": (1, ["H"], [], 1),
    "[M+Na]+": (1, ["Na"], [], 1),
    "[M+K]+": (1, ["K"], [], 1),
    "[M+H-H2O]+": (1, ["H"], ["H2O"], 1),
    "[M+Cl]-": (1, ["Cl"], [], -1),
    "[2M-H]-": (2, [], ["H"], -1),
    "[M-2H]2-": (1, [], ["H2"], -2),
    "[M+2H]2+": (1, ["H2"], [], 2),
}


def _proton() -> float:
    empty = pyopenms.EmpiricalFormula("")
    empty.setCharge(1)
    return empty.getMonoWeight()


def reference_mz(formula: str, adduct: str) -> float:
    """(mass of the ion's elements − z · electron) / |z|, all from OpenMS."""
    n, added, lost, z = ADDUCTS[adduct]
    ion = pyopenms.EmpiricalFormula("")
    for _ in range(n):
        ion = ion + pyopenms.EmpiricalFormula(formula)
    for group in added:
        ion = ion + pyopenms.EmpiricalFormula(group)
    for group in lost:
        ion = ion - pyopenms.EmpiricalFormula(group)
    electron = pyopenms.EmpiricalFormula("H").getMonoWeight() - _proton()
    return (ion.getMonoWeight() - z * electron) / abs(z)


PANEL_TARGETS = [(name, t) for name in chem.panel_names() for t in chem.panel(name)]


def test_every_panel_is_covered():
    assert {"tme-negative", "tme-positive"} <= set(chem.panel_names())
    assert len(PANEL_TARGETS) >= 20
    assert {t.adduct for _, t in PANEL_TARGETS} <= set(ADDUCTS)


@pytest.mark.parametrize("panel, target", PANEL_TARGETS,
                         ids=[f"{p}:{t.name}" for p, t in PANEL_TARGETS])
def test_panel_mz_matches_openms(panel, target):
    expected = reference_mz(target.formula, target.adduct)
    assert target.mz == pytest.approx(expected, rel=0.05e-6)  # 0.05 ppm
    assert abs(target.mz - expected) < 1e-5  # Th


@pytest.mark.parametrize("adduct", sorted(ADDUCTS))
def test_every_adduct_form_matches_openms(adduct):
    for formula in ("C3H6O3", "C10H12N2O3", "C6H13O9P", "C21H36N7O16P3S"):
        # element tables differ in the last digits: agree within 0.05 ppm at any mass
        assert chem.mz(formula, adduct) == pytest.approx(reference_mz(formula, adduct),
                                                         rel=0.05e-6)


def test_neutral_masses_match_openms():
    for formula in ("C3H6O3", "C11H12N2O2", "NaCl", "KH2PO4", "C2H6OS"):
        expected = pyopenms.EmpiricalFormula(formula).getMonoWeight()
        assert chem.formula_mass(formula) == pytest.approx(expected, abs=1e-5)


def test_bad_formulas_and_adducts_are_input_errors():
    with pytest.raises(InputError, match="unknown element"):
        chem.mz("C3Xx", "[M-H]-")
    with pytest.raises(InputError, match="not an adduct"):
        chem.mz("C3H6O3", "M-H")
