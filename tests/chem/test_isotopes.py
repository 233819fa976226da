"""Isotope patterns from formulas against pyopenms (an independent implementation)."""
from __future__ import annotations

import numpy as np
import pyopenms as oms
import pytest

from ionmap import chem
from ionmap.isotopes import (
    DECOY_ELEMENTS,
    ISOTOPES,
    centroid_peaks,
    composition,
    fine_pattern,
    ion_composition,
    isotope_pattern,
)

# pyopenms' element table leaves out 3He (1.3 ppm) and 87Rb (radioactive), and its Ir
# entry holds rhenium's isotopes; those three are checked against NIST values by hand.
OPENMS_DIFFERS = {"He", "Rb", "Ir"}
FORMULAS = ["C3H5O3", "C5H8NO4", "C10H11N2O3", "C47H82O13P", "C42H83NO8PNa", "C6H5Cl2O",
            "C10H13N5O7PS", "C27H45K"]


def _openms(formula: str, generator) -> tuple[np.ndarray, np.ndarray]:
    dist = oms.EmpiricalFormula(formula).getIsotopeDistribution(generator).getContainer()
    return np.array([p.getMZ() for p in dist]), np.array([p.getIntensity() for p in dist])


@pytest.mark.parametrize("element", sorted(set(ISOTOPES) - OPENMS_DIFFERS))
def test_element_isotopes_match_openms(element):
    dist = oms.ElementDB().getElement(element).getIsotopeDistribution().getContainer()
    theirs = sorted((p.getMZ(), p.getIntensity()) for p in dist if p.getIntensity() > 0)
    mine = sorted(ISOTOPES[element])
    assert len(mine) == len(theirs)
    np.testing.assert_allclose([m for m, _ in mine], [m for m, _ in theirs], atol=1e-4)
    np.testing.assert_allclose([p for _, p in mine], [p for _, p in theirs], atol=1e-3)
    assert abs(sum(p for _, p in mine) - 1) < 1e-3


@pytest.mark.parametrize("formula", FORMULAS)
def test_fine_pattern_matches_openms_fine_generator(formula):
    mass, prob = fine_pattern(composition(formula))
    om, op = _openms(formula, oms.FineIsotopePatternGenerator(1e-7))
    big = prob > 1e-4 * prob.max()
    for m, p in zip(mass[big], prob[big]):  # every isotopologue of ours is theirs
        j = np.argmin(np.abs(om - m))
        assert abs(om[j] - m) < 5e-5 and abs(op[j] - p) < 2e-3 + 0.01 * p
    assert abs(mass[0] - chem.formula_mass(formula)) < 1e-9  # monoisotopic = chem's mass


@pytest.mark.parametrize("formula", FORMULAS)
def test_nominal_abundances_match_openms_coarse_generator(formula):
    mass, prob = fine_pattern(composition(formula))
    _, coarse = _openms(formula, oms.CoarseIsotopePatternGenerator(5))
    nominal = np.bincount(np.round(mass - mass[0]).astype(int), prob)[:5]
    np.testing.assert_allclose(nominal, coarse[:5], atol=3e-3)


def test_observed_pattern_merges_within_one_fwhm():
    # glutamate [M-H]-: at R = 20000 13C and 15N merge into one M+1 peak at their weighted mean
    p = isotope_pattern("C5H9NO4", "[M-H]-", 20000)
    assert p.mz[0] == pytest.approx(chem.mz("C5H9NO4", "[M-H]-"), abs=1e-9)
    mass, prob = fine_pattern(ion_composition("C5H9NO4", "[M-H]-")[0])
    m1 = np.abs(mass - mass[0] - 1) < 0.1
    want = (mass[m1] * prob[m1]).sum() / prob[m1].sum() + chem.ELECTRON_MASS  # an anion
    assert p.mz[1] == pytest.approx(want, abs=1e-6)
    assert p.abundance.sum() == pytest.approx(1.0)
    # at R = 10**7 they are separate peaks
    m, _ = centroid_peaks(mass, prob, 1e7)
    assert (np.abs(m - mass[0] - 1) < 0.1).sum() >= 2


def test_ion_composition_and_decoys():
    assert ion_composition("C42H82NO8P", "[M+Na]+") == ({"C": 42, "H": 82, "N": 1, "O": 8,
                                                        "P": 1, "Na": 1}, 1)
    assert ion_composition("C27H46O", "[M+H-H2O]+")[0] == {"C": 27, "H": 45}
    assert ion_composition("C3H6O3", "[2M-H]-") == ({"C": 6, "H": 11, "O": 6}, -1)
    with pytest.raises(ValueError):
        ion_composition("C3H6O3", "[M-Na]-")
    assert len(DECOY_ELEMENTS) >= 30
    assert not set(DECOY_ELEMENTS) & {"H", "C", "N", "O", "P", "S", "Na", "K", "Cl"}
    li = isotope_pattern("C5H9NO4", "[M+Li]-", 20000)
    assert li.mz[0] < li.mz[1] and li.abundance[0] < li.abundance[1]  # 6Li before 7Li
