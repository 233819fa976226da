"""Isobar and interference warnings per target, and its window against the observed peak.

**Interferences.** A target's image sums every point in its extraction window
[mz·(1 − ppm·1e-6), mz·(1 + ppm·1e-6)] (Th), so any other ion whose m/z lies inside adds to
it. Listed per target, each with its m/z and its offset from the target (ppm):

- the other panel ions (their m/z as given);
- every panel formula ionised as the usual adducts of the target's polarity
  (:data:`USUAL_ADDUCTS`: H, Na, K, Cl), other than the target's own ion;
- the usual matrix ions of that polarity (:data:`ionmap.recal.MATRIX_REFERENCES`);

each of the formula ions with its isotope peaks M+1 and M+2
(:func:`ionmap.isotopes.isotope_pattern` at the given resolving power, peaks down to
:data:`MIN_ISOTOPE` of the monoisotopic one, whose abundance relative to it is given).

**Window against the peak.** A profile peak's full width at half maximum (FWHM, ppm of
its m/z) is measured on the data (:func:`ionmap.kernels.reference_errors`); a Gaussian
peak puts 76 % of its area within ±FWHM/2 and 98 % within ±FWHM. The verdict compares the
window's full width 2·ppm with the FWHM: below 1 FWHM "narrower than the peak" (the image
keeps a slice of the peak, and a residual mass error of a few ppm changes it); above
:data:`MUCH_WIDER` FWHM "much wider than the peak" (the window collects nothing more of the
peak, only neighbours and noise); in between "matches the peak". Without a width on the
data (centroid spectra, no peak found) the verdict is "undetermined".
"""
from __future__ import annotations

import numpy as np

from .isotopes import isotope_pattern
from .kernels import tolerance_mz
from .recal import MATRIX_REFERENCES

#: The usual adducts per polarity (charge sign) other ions of a formula form.
USUAL_ADDUCTS: dict[str, tuple[str, ...]] = {
    "+": ("[M+H]+", "[M+Na]+", "[M+K]+"),
    "-": ("[M-H]-", "[M+Cl]-", "[M+Na-2H]-", "[M+K-2H]-"),
}
#: Isotope peaks listed down to this abundance relative to the monoisotopic one.
MIN_ISOTOPE = 1e-3
#: Above this many FWHM of full width a window is "much wider than the peak".
MUCH_WIDER = 4.0


def _sign(t: dict, polarity: str | None) -> str | None:
    if t.get("adduct"):
        return t["adduct"].strip()[-1]
    return {"positive": "+", "negative": "-"}.get(polarity or "")


def candidate_ions(table: list[dict], sign: str, resolving_power: float
                   ) -> list[tuple[str, float, float, tuple | None]]:
    """Ions that may fall into a window in polarity ``sign``: (label, m/z Th, abundance
    relative to the ion's monoisotopic peak, (formula, adduct) of the ion or None)."""
    out: list[tuple[str, float, float, tuple | None]] = []

    def add(label: str, formula: str, adduct: str) -> None:
        try:
            p = isotope_pattern(formula, adduct, resolving_power, n_peaks=3,
                                min_abundance=MIN_ISOTOPE)
        except ValueError:  # the adduct removes atoms the formula does not have
            return
        for k, (m, a) in enumerate(zip(p.mz, p.abundance / p.abundance[0])):
            out.append((label + (f" M+{k}" if k else ""), float(m), float(a), (formula, adduct)))

    for t in table:
        if not t.get("formula"):
            out.append((t["name"], float(t["mz"]), 1.0, None))
            continue
        adducts = dict.fromkeys(([t["adduct"]] if _sign(t, None) == sign else [])
                                + list(USUAL_ADDUCTS[sign]))
        for adduct in adducts:
            add(f"{t['name']} {adduct}", t["formula"], adduct)
    polarity = "positive" if sign == "+" else "negative"
    for matrix, formula, adduct in MATRIX_REFERENCES[polarity]:
        add(f"{matrix} {adduct} (matrix)", formula, adduct)
    return out


def interferences(table: list[dict], polarity: str | None, resolving_power: float
                  ) -> list[list[dict]]:
    """Per target: the other ions inside its window (see the module docstring), each
    ``{"ion", "mz" (Th), "ppm" (offset from the target's m/z), "abundance"}``; both
    polarities for a target whose polarity is unknown."""
    cache: dict[str, list] = {}
    rows = []
    for t in table:
        sign = _sign(t, polarity)
        found: dict[str, dict] = {}
        for s in ([sign] if sign else ["+", "-"]):
            if s not in cache:
                cache[s] = candidate_ions(table, s, resolving_power)
            own = (t.get("formula"), t.get("adduct"))
            lo, hi = t["window"]
            for label, m, a, ion in cache[s]:
                if lo <= m <= hi and ion != own and label != t["name"]:
                    found.setdefault(label, {"ion": label, "mz": round(m, 6),
                                             "ppm": round((m - t["mz"]) / t["mz"] * 1e6, 3),
                                             "abundance": round(a, 4)})
        rows.append(sorted(found.values(), key=lambda r: abs(r["ppm"])))
    return rows


def measured_fwhm(widths: np.ndarray, min_presence: float) -> tuple[np.ndarray, np.ndarray]:
    """Per target from its FWHM in each lattice spectrum (n, T; ppm, NaN where no peak
    apex was found): (median FWHM ppm, NaN unless found in at least ``min_presence`` of
    the spectra; the fraction found)."""
    ok = np.isfinite(widths)
    frac = ok.mean(axis=0) if len(widths) else np.zeros(widths.shape[1])
    med = np.full(widths.shape[1], np.nan)
    keep = (frac >= min_presence) & ok.any(axis=0)
    if keep.any():
        med[keep] = np.nanmedian(widths[:, keep], axis=0)
    return med, frac


def window_vs_fwhm(table: list[dict], fwhm_ppm: np.ndarray, analyzer: str = "tof"
                   ) -> list[dict]:
    """Per target: its window's full width against the peak FWHM (module docstring).

    ``fwhm_ppm``: the measured FWHM of each target's peak (NaN: not measured). A target
    without one gets the median over the measured targets, carried to its m/z by the
    analyser's peak-width law (:func:`ionmap.kernels.tolerance_mz`: FWHM ∝ m for TOF,
    m^1.5 Orbitrap, m^2 FT-ICR), and says so in ``fwhm_from``.
    """
    fwhm_ppm = np.asarray(fwhm_ppm, float)
    known = np.flatnonzero(np.isfinite(fwhm_ppm))
    ref_mz = np.array([table[j]["mz"] for j in known])
    rows = []
    for i, t in enumerate(table):
        window = 2.0 * t["ppm"]
        if np.isfinite(fwhm_ppm[i]):
            fwhm, source = float(fwhm_ppm[i]), "this peak"
        elif known.size:
            law = tolerance_mz(t["mz"], fwhm_ppm[known], analyzer, ref_mz) / t["mz"] * 1e6
            fwhm, source = float(np.median(law)), f"other targets' peaks ({analyzer} law)"
        else:
            rows.append({"window_ppm": window, "fwhm_ppm": None, "ratio": None,
                         "verdict": "undetermined", "fwhm_from": "no peak width on the data"})
            continue
        ratio = window / fwhm
        verdict = ("narrower than the peak" if ratio < 1.0 else "much wider than the peak"
                   if ratio > MUCH_WIDER else "matches the peak")
        rows.append({"window_ppm": window, "fwhm_ppm": round(fwhm, 3),
                     "ratio": round(ratio, 3), "verdict": verdict, "fwhm_from": source})
    return rows



def describe(found: list[dict]) -> str:
    """One line for a target's interferences: ``ion (+1.2 ppm)``, comma separated, or
    ``none``; isotope peaks below 10 % of their ion carry their relative abundance."""
    if not found:
        return "none"
    return ", ".join(f"{r['ion']} ({r['ppm']:+.1f} ppm"
                     + (f", {100 * r['abundance']:.1f} % of its M+0)" if r["abundance"] < 0.1
                        else ")") for r in found)
