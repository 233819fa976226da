"""Monoisotopic m/z from molecular formulas and adducts, and the built-in target panels.

Masses are computed from element masses (u); nothing is typed in by hand. An adduct is
written the usual way, ``[M-H]-``, ``[M+H]+``, ``[M+Na]+``, ``[M+H-H2O]+``, ``[2M-H]-``,
``[M-2H]2-``; the m/z of an ion is (n·M + Σ added − Σ lost ∓ z·mₑ) / z.
"""
from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from importlib import resources

from .errors import InputError
from .params import MAX_PPM

#: Monoisotopic element masses in u.
ELEMENT_MASS: dict[str, float] = {
    "H": 1.00782503207,
    "C": 12.0,
    "N": 14.0030740048,
    "O": 15.99491461956,
    "P": 30.97376163,
    "S": 31.97207100,
    "Na": 22.9897692809,
    "K": 38.96370668,
    "Cl": 34.96885268,
}
#: Electron mass in u.
ELECTRON_MASS = 0.00054857990946
#: A targets row with both mz and formula + adduct: they must agree within this (Th; a
#: rounded mz), else the row is refused (the formula drives isotopes and annotation).
MZ_AGREEMENT = 0.01

_ELEMENT = re.compile(r"([A-Z][a-z]?)(\d*)")
_ADDUCT = re.compile(r"^\[(\d*)M((?:[+-]\d*[A-Za-z0-9]+)*)\](\d*)([+-])$")
_ADDUCT_TERM = re.compile(r"([+-])(\d*)([A-Za-z0-9]+)")


def formula_mass(formula: str) -> float:
    """Monoisotopic mass (u) of a neutral formula such as ``C3H6O3``."""
    f = formula.replace(" ", "")
    if not f or "".join(m.group(0) for m in _ELEMENT.finditer(f)) != f:
        raise InputError(None, f"not a molecular formula: {formula!r}")
    mass = 0.0
    for symbol, count in _ELEMENT.findall(f):
        if symbol not in ELEMENT_MASS:
            raise InputError(None, f"unknown element {symbol!r} in formula {formula!r}")
        mass += ELEMENT_MASS[symbol] * (int(count) if count else 1)
    return mass


def adduct_terms(adduct: str) -> tuple[int, list[tuple[int, str]], int]:
    """(multimer n, [(signed count, formula) added], signed charge) of an adduct, e.g.
    ``[2M+Na-H2O]+`` → (2, [(1, "Na"), (-1, "H2O")], 1). Element symbols are not checked."""
    m = _ADDUCT.match(adduct.replace(" ", ""))
    if not m:
        raise InputError(None, f"not an adduct: {adduct!r} (expected e.g. [M-H]- or [M+Na]+)")
    terms = [((1 if sign == "+" else -1) * int(mult or 1), formula)
             for sign, mult, formula in _ADDUCT_TERM.findall(m.group(2))]
    z = int(m.group(3) or 1)
    return int(m.group(1) or 1), terms, z if m.group(4) == "+" else -z


def parse_adduct(adduct: str) -> tuple[int, float, int]:
    """(multimer n, mass added in u, signed charge) of an adduct such as ``[M+Na]+``."""
    n, terms, z = adduct_terms(adduct)
    try:
        return n, sum(count * formula_mass(formula) for count, formula in terms), z
    except InputError as exc:
        raise InputError(None, f"adduct {adduct!r}: {exc.problem}") from None


def mz(formula: str, adduct: str) -> float:
    """Monoisotopic m/z (Th) of ``formula`` ionised as ``adduct``.

    >>> round(mz("C3H6O3", "[M-H]-"), 4)
    89.0244
    """
    n, delta, z = parse_adduct(adduct)
    # A cation has lost |z| electrons, an anion gained them.
    return (n * formula_mass(formula) + delta - z * ELECTRON_MASS) / abs(z)


@dataclass(frozen=True)
class Target:
    """One ion image to extract: a window of ±``ppm`` around ``mz`` (Th)."""

    name: str
    mz: float
    ppm: float | None = None
    formula: str | None = None
    adduct: str | None = None
    group: str | None = None


#: Columns a targets CSV may have; any other column is an error (a typo would be ignored).
TARGET_COLUMNS = ("name", "mz", "formula", "adduct", "ppm", "group")


def read_targets(text: str, source: str = "<targets>") -> list[Target]:
    """Targets from CSV text with columns ``name`` and ``mz`` or ``formula`` + ``adduct``.

    Optional columns: ``ppm`` (window half-width, else the run's default) and ``group``
    (free-form class such as ``lipid``, used by composite maps); other columns are an
    error. Errors name ``source``.
    """
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise InputError(source, "no targets (expected a header line and one row per target)")
    cols = set(rows[0])
    unknown = sorted(str(c) for c in cols - set(TARGET_COLUMNS) if c and str(c).strip())
    if unknown:
        raise InputError(source, f"unknown column(s) {', '.join(map(repr, unknown))} "
                         f"(columns: {', '.join(TARGET_COLUMNS)})")
    if "name" not in cols or not ({"mz"} <= cols or {"formula", "adduct"} <= cols):
        raise InputError(source, "targets CSV needs columns name and mz, or name, formula and "
                                 "adduct")
    targets: list[Target] = []
    for line, row in enumerate(rows, start=2):
        def cell(key: str, row: dict = row) -> str | None:
            value = (row.get(key) or "").strip()
            return value or None

        name = cell("name")
        try:
            if not name:
                raise ValueError("empty name")
            formula, adduct = cell("formula"), cell("adduct")
            if cell("mz"):
                value = float(cell("mz"))
                if formula and adduct and abs(value - mz(formula, adduct)) > MZ_AGREEMENT:
                    raise ValueError(f"mz {value:g} disagrees with {formula} {adduct} (m/z "
                                     f"{mz(formula, adduct):.4f}): give mz or formula and "
                                     "adduct, or make them agree")
            elif formula and adduct:
                value = mz(formula, adduct)
            else:
                raise ValueError("needs mz, or formula and adduct")
            ppm = float(cell("ppm")) if cell("ppm") else None
            if not (0 < value < math.inf) or (ppm is not None and not 0 < ppm < MAX_PPM):
                raise ValueError(f"mz must be positive and finite and ppm within 0..{MAX_PPM:g}"
                                 " (exclusive)")
        except ValueError as exc:
            raise InputError(source, f"line {line}: {exc}") from None
        targets.append(Target(name, value, ppm, formula, adduct, cell("group")))
    names = [t.name for t in targets]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(source, f"duplicate target names: {', '.join(dupes)}")
    return targets


def panel_names() -> list[str]:
    """Names of the built-in panels (``tme-negative``, ``tme-positive``)."""
    files = resources.files("ionmap") / "data" / "panels"
    return sorted(p.name[:-4] for p in files.iterdir() if p.name.endswith(".csv"))


def panel(name: str) -> list[Target]:
    """The targets of a built-in panel, m/z computed from formula and adduct."""
    if name not in panel_names():
        raise InputError(None, f"unknown panel {name!r} (built-in: {', '.join(panel_names())})")
    path = resources.files("ionmap") / "data" / "panels" / f"{name}.csv"
    return read_targets(path.read_text(), source=f"panel {name}")
