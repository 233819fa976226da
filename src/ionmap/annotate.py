"""Annotation confidence per target, the way METASPACE scores ions (Palmer et al., Nat.
Methods 14, 57 (2017)): MSM = ρ_spectral × ρ_spatial × ρ_chaos, and a target–decoy FDR.

For every target with a formula and adduct, its isotope pattern at the data's resolving
power (:func:`ionmap.isotopes.isotope_pattern`) gives one window per isotope peak (the
target's ppm). Decoys: the same formula with ``n_decoys`` implausible element adducts
(+He, +Li, +Be, ...; :data:`ionmap.isotopes.DECOY_ELEMENTS`) in place of the real adduct,
sampled per formula with a seeded generator, scored identically.

- ρ_spectral = 1 − mean |t/‖t‖ − o/‖o‖| over the isotope peaks, t theoretical abundances, o
  the mean window intensities over the scored pixels (0 when o is all zero);
- ρ_spatial = Σ_k t_k·max(0, r_k) / Σ_k t_k over the isotope peaks k ≥ 1, r_k the Pearson
  correlation of peak k's image with the principal one (0 when undefined);
- ρ_chaos = 1 − mean over 30 intensity levels of (connected components of the pixels above
  the level, 8-connectivity) / (non-zero pixels), on the principal image clipped at its
  99th percentile (Alexandrov & Bartels, Bioinformatics 29, 2335 (2013)); 0 for an empty
  image.

FDR: targets and decoys ranked by MSM; at a target's MSM s, FDR(s) = (decoys ≥ s /
n_decoys) / (targets ≥ s), made monotone (q-value: the smallest FDR at any s' ≤ s), at most
1. A target with MSM 0 (no signal, or no isotope structure) has FDR 1. The null is the
decoys: ions that cannot exist, so their scores show what chance matches of windows to
unrelated peaks look like. With few targets the estimate is coarse (METASPACE's own caveat);
decoys are many per target for that reason.

Scores are computed on the spectra of the recalibration lattice (all spectra of small
files, about ``max_sample`` spread over large ones), read once for both.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .isotopes import DECOY_ELEMENTS, isotope_pattern

#: Decoy adducts sampled per target formula (METASPACE: 20).
N_DECOYS = 20
#: Isotope peaks scored per ion.
N_PEAKS = 4
CHAOS_LEVELS = 30


@dataclass(frozen=True)
class Ions:
    """The scored ions (targets first, then decoys) and their isotope windows.

    ``target[i]``: index of the target row ion i belongs to; ``decoy[i]``: it is a decoy;
    ``first[i]..first[i+1]``: its windows in ``lo``/``hi`` (Th), theoretical abundances
    ``abundance`` (normalised per ion).
    """

    target: np.ndarray
    decoy: np.ndarray
    first: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    abundance: np.ndarray
    label: list[str]


def decoy_adducts(formula: str, adduct: str, n: int = N_DECOYS) -> list[str]:
    """``n`` decoy adducts ``[M+X]±`` (seeded by the formula) of the target's charge."""
    sign = adduct.strip()[-1]
    rng = np.random.default_rng(zlib.crc32(f"{formula}{adduct}".encode()))
    picks = rng.choice(len(DECOY_ELEMENTS), size=min(n, len(DECOY_ELEMENTS)), replace=False)
    return [f"[M+{DECOY_ELEMENTS[i]}]{sign}" for i in sorted(picks)]


def build_ions(targets: list[dict], resolving_power: float, n_decoys: int = N_DECOYS) -> Ions:
    """Isotope windows of every scorable target (formula and adduct) and its decoys."""
    target, decoy, first, lo, hi, ab, label = [], [], [0], [], [], [], []
    for i, t in enumerate(targets):
        if not (t.get("formula") and t.get("adduct")):
            continue
        ions = [(t["adduct"], False)] + [(a, True) for a in decoy_adducts(t["formula"],
                                                                            t["adduct"], n_decoys)]
        for adduct, is_decoy in ions:
            p = isotope_pattern(t["formula"], adduct, resolving_power, n_peaks=N_PEAKS)
            mz = p.mz if is_decoy else p.mz - p.mz[0] + t["mz"]  # the target's own m/z
            lo.extend(mz * (1 - t["ppm"] * 1e-6))
            hi.extend(mz * (1 + t["ppm"] * 1e-6))
            ab.extend(p.abundance)
            first.append(first[-1] + len(mz))
            target.append(i)
            decoy.append(is_decoy)
            label.append(f"{t['name']} {adduct}")
    return Ions(np.array(target, int), np.array(decoy, bool), np.array(first, int),
                np.array(lo), np.array(hi), np.array(ab), label)


def chaos(image: np.ndarray, levels: int = CHAOS_LEVELS) -> float:
    """ρ_chaos of a (y, x) image (see the module docstring)."""
    im = np.nan_to_num(np.asarray(image, dtype=np.float64))
    nonzero = int((im > 0).sum())
    if nonzero == 0:
        return 0.0
    top = np.percentile(im[im > 0], 99)
    im = np.clip(im, 0, top) / top if top > 0 else im
    structure = np.ones((3, 3), bool)
    counts = [ndimage.label(im > level, structure)[1]
              for level in np.linspace(0, 1, levels, endpoint=False)]
    return float(1.0 - np.mean(counts) / nonzero)


def score(sums: np.ndarray, ions: Ions, grid: tuple[np.ndarray, np.ndarray, tuple[int, int]]
          ) -> dict[str, np.ndarray]:
    """ρ_spectral, ρ_spatial, ρ_chaos and MSM per ion from window sums (pixels, windows).

    ``grid`` = (gy, gx, shape): each pixel's place on the lattice image used for ρ_chaos.
    """
    gy, gx, shape = grid
    n = len(ions.target)
    out = {k: np.zeros(n) for k in ("spectral", "spatial", "chaos", "msm")}
    mean = sums.mean(axis=0)  # per window, over the scored pixels
    # Pearson r of every isotope window with its ion's principal window, all at once
    size = np.diff(ions.first)
    principal = np.repeat(ions.first[:-1], size)
    other = np.arange(ions.first[-1])
    pair = other != principal
    centred = sums - mean
    norm = np.sqrt(np.einsum("ij,ij->j", centred, centred))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.einsum("ij,ij->j", centred[:, principal[pair]], centred[:, other[pair]]) / (
            norm[principal[pair]] * norm[other[pair]])
    corr = np.zeros(other.size)
    corr[pair] = np.where(np.isfinite(r), np.maximum(r, 0.0), 0.0)
    for i in range(n):
        a, b = ions.first[i], ions.first[i + 1]
        o, t = mean[a:b], ions.abundance[a:b]
        if not o.any():
            continue
        out["spectral"][i] = 1 - np.mean(np.abs(t / np.linalg.norm(t) - o / np.linalg.norm(o)))
        if b - a > 1:
            out["spatial"][i] = float((t[1:] * corr[a + 1:b]).sum() / t[1:].sum())
        if out["spectral"][i] * out["spatial"][i] > 0:
            image = np.zeros(shape)
            image[gy, gx] = sums[:, a]
            out["chaos"][i] = chaos(image)
    out["msm"] = out["spectral"] * out["spatial"] * out["chaos"]
    return out


def fdr(msm_targets: np.ndarray, msm_decoys: np.ndarray, n_decoys: int) -> np.ndarray:
    """Monotone target–decoy q-values per target (see the module docstring)."""
    t = np.asarray(msm_targets, float)
    d = np.sort(np.asarray(msm_decoys, float))
    ts = np.sort(t)
    raw = np.ones_like(t)
    for j, s in enumerate(t):
        if s <= 0:
            continue
        n_t = ts.size - np.searchsorted(ts, s, "left")
        n_d = d.size - np.searchsorted(d, s, "left")
        raw[j] = min(1.0, (n_d / n_decoys) / n_t)
    q = raw.copy()
    for j, s in enumerate(t):  # the smallest FDR at any threshold at or below s
        if s > 0:
            q[j] = raw[(t <= s) & (t > 0)].min()
    return np.where(t > 0, q, 1.0)


def annotate(sums: np.ndarray, ions: Ions, grid, targets: list[dict], n_decoys: int
             ) -> list[dict]:
    """Per target row: msm, fdr and the component scores (None without a formula)."""
    s = score(sums, ions, grid)
    tgt = ~ions.decoy
    q = fdr(s["msm"][tgt], s["msm"][ions.decoy], n_decoys)
    rows: list[dict] = [{"msm": None, "fdr": None, "rho_spectral": None, "rho_spatial": None,
                         "rho_chaos": None, "n_decoys": 0} for _ in targets]
    for j, i in enumerate(np.flatnonzero(tgt)):
        rows[ions.target[i]] = {
            "msm": round(float(s["msm"][i]), 6), "fdr": round(float(q[j]), 6),
            "rho_spectral": round(float(s["spectral"][i]), 6),
            "rho_spatial": round(float(s["spatial"][i]), 6),
            "rho_chaos": round(float(s["chaos"][i]), 6),
            "n_decoys": int((ions.decoy & (ions.target == ions.target[i])).sum()),
        }
    return rows
