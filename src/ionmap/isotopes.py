"""Isotope patterns of ions from their formulas, at a given resolving power.

The fine isotope distribution of an elemental composition is the product of each element's
multinomial isotope distribution, computed by repeated convolution (squaring) of the
element's isotope list with pruning of negligible isotopologues (below ``prune`` of the
largest) and merging of equal masses. At a finite resolving power R = m/FWHM, fine peaks
closer than one FWHM merge into one observed peak (abundance-weighted mean m/z, summed
abundance), which is what a profile spectrum shows and a ±ppm window integrates.

Isotope masses (u) and abundances (mole fractions) are the IUPAC/CIAAW representative
values as tabulated by NIST ("Atomic Weights and Isotopic Compositions"). Besides the
elements of metabolites and their usual adducts, the table holds the elements METASPACE
uses as implausible decoy adducts (Palmer et al., Nat. Methods 14, 57 (2017)).
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np

from .chem import ELECTRON_MASS, adduct_terms
from .errors import InputError

#: Isotopes per element: ((mass u, abundance), ...), most abundant first not required.
ISOTOPES: dict[str, tuple[tuple[float, float], ...]] = {
    "H": ((1.00782503207, 0.999885), (2.0141017778, 0.000115)),
    "C": ((12.0, 0.9893), (13.0033548378, 0.0107)),
    "N": ((14.0030740048, 0.99636), (15.0001088982, 0.00364)),
    "O": ((15.99491461956, 0.99757), (16.99913170, 0.00038), (17.9991610, 0.00205)),
    "P": ((30.97376163, 1.0),),
    "S": ((31.97207100, 0.9499), (32.97145876, 0.0075), (33.96786690, 0.0425),
          (35.96708076, 0.0001)),
    "Na": ((22.9897692809, 1.0),),
    "K": ((38.96370668, 0.932581), (39.96399848, 0.000117), (40.96182576, 0.067302)),
    "Cl": ((34.96885268, 0.7576), (36.96590259, 0.2424)),
    # decoy-adduct elements (never in a real adduct of a metabolite ion)
    "He": ((4.00260325, 1.0),),
    "Li": ((6.0151228874, 0.0759), (7.0160034366, 0.9241)),
    "Be": ((9.012183065, 1.0),),
    "B": ((10.01293695, 0.199), (11.00930536, 0.801)),
    "F": ((18.99840316, 1.0),),
    "Ne": ((19.99244018, 0.9048), (20.99384668, 0.0027), (21.99138511, 0.0925)),
    "Mg": ((23.98504170, 0.7899), (24.98583698, 0.1000), (25.98259297, 0.1101)),
    "Al": ((26.98153853, 1.0),),
    "Si": ((27.97692653, 0.92223), (28.97649466, 0.04685), (29.97377014, 0.03092)),
    "Ar": ((35.96754511, 0.003336), (37.9627322, 0.000629), (39.96238312, 0.996035)),
    "Ca": ((39.96259086, 0.96941), (41.95861783, 0.00647), (42.95876644, 0.00135),
           (43.95548156, 0.02086), (45.953689, 0.00004), (47.95252276, 0.00187)),
    "Sc": ((44.95590828, 1.0),),
    "Ti": ((45.95262772, 0.0825), (46.95175879, 0.0744), (47.94794198, 0.7372),
           (48.94786568, 0.0541), (49.94478689, 0.0518)),
    "V": ((49.94715601, 0.0025), (50.94395704, 0.9975)),
    "Mn": ((54.93804391, 1.0),),
    "Co": ((58.93319429, 1.0),),
    "Cu": ((62.92959772, 0.6915), (64.9277897, 0.3085)),
    "Ga": ((68.9255735, 0.60108), (70.92470258, 0.39892)),
    "As": ((74.92159457, 1.0),),
    "Br": ((78.9183376, 0.5069), (80.9162897, 0.4931)),
    "Rb": ((84.91178974, 0.7217), (86.90918053, 0.2783)),
    "Y": ((88.9058403, 1.0),),
    "Nb": ((92.906373, 1.0),),
    "Rh": ((102.905498, 1.0),),
    "Ag": ((106.9050916, 0.51839), (108.9047553, 0.48161)),
    "In": ((112.90406184, 0.0429), (114.903878776, 0.9571)),
    "Sb": ((120.903812, 0.5721), (122.9042132, 0.4279)),
    "I": ((126.9044719, 1.0),),
    "Cs": ((132.905451961, 1.0),),
    "La": ((137.907115, 0.0008881), (138.9063563, 0.9991119)),
    "Pr": ((140.9076576, 1.0),),
    "Eu": ((150.9198578, 0.4781), (152.921238, 0.5219)),
    "Tb": ((158.9253547, 1.0),),
    "Ho": ((164.9303288, 1.0),),
    "Tm": ((168.9342179, 1.0),),
    "Lu": ((174.9407752, 0.97401), (175.9426897, 0.02599)),
    "Ta": ((179.9474648, 0.0001201), (180.9479958, 0.9998799)),
    "Re": ((184.9529545, 0.374), (186.9557501, 0.626)),
    "Ir": ((190.9605893, 0.373), (192.9629216, 0.627)),
    "Au": ((196.96656879, 1.0),),
    "Tl": ((202.9723446, 0.2952), (204.9744278, 0.7048)),
    "Bi": ((208.9803991, 1.0),),
}
#: Implausible adduct elements for target–decoy FDR (not H, Na, K, Cl or CHNOPS).
DECOY_ELEMENTS: tuple[str, ...] = tuple(e for e in ISOTOPES if e not in
                                        {"H", "C", "N", "O", "P", "S", "Na", "K", "Cl"})

_ELEMENT = re.compile(r"([A-Z][a-z]?)(\d*)")
#: Fine peaks whose masses agree to this many decimals (u) are one isotopologue.
_MASS_DECIMALS = 6


def composition(formula: str) -> dict[str, int]:
    """Element counts of a neutral formula such as ``C3H6O3``."""
    out: dict[str, int] = {}
    f = formula.replace(" ", "")
    if not f or "".join(m.group(0) for m in _ELEMENT.finditer(f)) != f:
        raise InputError(None, f"not a molecular formula: {formula!r}")
    for symbol, count in _ELEMENT.findall(f):
        if symbol not in ISOTOPES:
            raise InputError(None, f"no isotope data for element {symbol!r} in {formula!r}")
        out[symbol] = out.get(symbol, 0) + (int(count) if count else 1)
    return out


def ion_composition(formula: str, adduct: str) -> tuple[dict[str, int], int]:
    """(element counts, signed charge) of ``formula`` ionised as ``adduct``.

    ``[2M+Na-H2O]+`` of C3H6O3 is 2 × C3H6O3 + Na − H2O; a count that goes negative (an
    adduct losing atoms the molecule does not have) raises ``InputError`` (a ``ValueError``).
    """
    n, terms, z = adduct_terms(adduct)
    comp = {e: c * n for e, c in composition(formula).items()}
    for count, part in terms:
        for e, c in composition(part).items():
            comp[e] = comp.get(e, 0) + count * c
    if any(c < 0 for c in comp.values()):
        raise InputError(None, f"adduct {adduct} removes atoms {formula} does not have")
    return {e: c for e, c in comp.items() if c}, z


def _merge(mass: np.ndarray, prob: np.ndarray, prune: float) -> tuple[np.ndarray, np.ndarray]:
    """Drop peaks below ``prune`` × max and merge equal masses (weighted mean)."""
    keep = prob >= prune * prob.max()
    mass, prob = mass[keep], prob[keep]
    key, inverse = np.unique(np.round(mass, _MASS_DECIMALS), return_inverse=True)
    p = np.bincount(inverse, prob, key.size)
    m = np.bincount(inverse, mass * prob, key.size) / p
    return m, p


def _convolve(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray],
              prune: float) -> tuple[np.ndarray, np.ndarray]:
    return _merge(np.add.outer(a[0], b[0]).ravel(), np.multiply.outer(a[1], b[1]).ravel(),
                  prune)


def fine_pattern(comp: dict[str, int], prune: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """Fine isotope distribution of a neutral composition: (masses u, abundances), sorted by
    mass, abundances summing to ~1 (isotopologues below ``prune`` × the largest dropped).

    Elements are convolved in the order of :data:`ISOTOPES` (the elements of metabolites
    first), and every partial product is cached: the decoys of one formula (the formula
    plus one decoy element) share all but their last convolution.
    """
    order = {e: i for i, e in enumerate(ISOTOPES)}
    items = tuple(sorted(((e, c) for e, c in comp.items() if c), key=lambda ec: order[ec[0]]))
    mass, prob = _product(items, prune)
    return mass.copy(), prob.copy()


@functools.lru_cache(maxsize=8192)
def _product(items: tuple[tuple[str, int], ...], prune: float
             ) -> tuple[np.ndarray, np.ndarray]:
    """Sorted fine distribution of the elements ``items`` ((symbol, count), ...), cached."""
    if not items:
        return np.zeros(1), np.ones(1)
    mass, prob = _convolve(_product(items[:-1], prune), _element_power(*items[-1], prune),
                           prune)
    order = np.argsort(mass)
    return mass[order], prob[order]


@functools.lru_cache(maxsize=4096)
def _element_power(symbol: str, count: int, prune: float) -> tuple[np.ndarray, np.ndarray]:
    """Fine distribution of ``count`` atoms of one element (binary exponentiation)."""
    iso = np.array(ISOTOPES[symbol], dtype=np.float64)
    power, total = (iso[:, 0], iso[:, 1]), (np.zeros(1), np.ones(1))
    while count:
        if count & 1:
            total = _convolve(total, power, prune)
        count >>= 1
        if count:
            power = _convolve(power, power, prune)
    return total


@dataclass(frozen=True)
class Pattern:
    """Observed isotope pattern of an ion: peaks in m/z order (the first is the
    monoisotopic one). ``mz`` in Th, ``abundance`` relative to the sum of all peaks kept."""

    mz: np.ndarray
    abundance: np.ndarray


def centroid_peaks(mz: np.ndarray, abundance: np.ndarray, resolving_power: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Merge sorted fine peaks closer than one FWHM (m/R) into observed peaks."""
    if resolving_power <= 0:
        raise InputError(None, f"resolving power must be > 0, got {resolving_power}")
    gap = np.diff(mz) > mz[1:] / resolving_power
    group = np.concatenate(([0], np.cumsum(gap)))
    p = np.bincount(group, abundance)
    m = np.bincount(group, mz * abundance) / p
    return m, p


@functools.lru_cache(maxsize=8192)
def isotope_pattern(formula: str, adduct: str, resolving_power: float = 20000.0, *,
                    n_peaks: int = 4, min_abundance: float = 0.01) -> Pattern:
    """The first ``n_peaks`` observed isotope peaks of an ion at resolving power R.

    Fine peaks are merged within one FWHM (m/R); peaks are kept in m/z order from the
    monoisotopic one while they are at least ``min_abundance`` of the largest; the
    abundances are normalised to sum 1 over the peaks kept (METASPACE compares this many
    peaks, normalised the same way). Cached per arguments (the arrays are read-only).
    """
    comp, z = ion_composition(formula, adduct)
    mass, prob = fine_pattern(comp)
    mz = (mass - z * ELECTRON_MASS) / abs(z)
    mz, prob = centroid_peaks(mz, prob, resolving_power)
    # the monoisotopic peak: the lightest cluster with real abundance (prunes 2H-free noise)
    big = prob >= min_abundance * prob.max()
    first = int(np.argmax(big))
    mz, prob = mz[first:], prob[first:]
    big = big[first:]
    n = int(np.argmin(big)) if not big.all() else big.size  # stop at the first small peak
    n = max(1, min(n, n_peaks))
    mz, abundance = mz[:n].copy(), prob[:n] / prob[:n].sum()
    mz.setflags(write=False)
    abundance.setflags(write=False)
    return Pattern(mz, abundance)
