"""Synthetic MALDI spectra: the peak list, per-pixel abundances and block rendering.

Every ion is a peak with an exact m/z (Th) computed by :mod:`ionmap.chem` (panel
metabolites and matrix clusters) or drawn on a realistic mass-defect line (unassigned
background ions), with its isotope peaks: the full isotope pattern at the resolving power
(:func:`ionmap.isotopes.isotope_pattern`) for ions with a formula, 13C isotopes for the
unassigned ones. A pixel's spectrum is

    height[pixel, peak] = abundance[pixel, component(peak)] · weight(peak) · TIC(pixel) · ε

with ε a log-normal ionisation noise drawn per pixel and ion (the isotopologues of one ion
ionise together, so its isotope peaks keep the pattern's ratios up to counting noise). Every
peak of a pixel is shifted by that pixel's mass error (ppm): a slow drift along the
acquisition plus jitter, and optionally (:func:`calibration_drift`) a global offset and a
linear gradient across the section, as TOF instruments show. Profile spectra are Gaussian peaks of FWHM = m/R on a
TOF-like grid of constant ppm spacing (``points_per_fwhm`` points per FWHM); centroid
spectra hold one point per detected peak. Noise is Poisson-like (√signal) on top of a
half-normal baseline that rises at low m/z. Spectra are generated for blocks of pixels at
once: no Python loop runs per spectrum or per point.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import sparse

from ..chem import Target
from ..errors import InputError
from ..isotopes import isotope_pattern
from ._layout import Section, smooth_field

#: 13C − 12C mass difference (u), for isotope peaks of unassigned ions.
C13_SHIFT = 1.0033548378
#: Isotope peaks rendered per ion with a formula, and their smallest relative abundance.
N_ISOTOPES = 5
MIN_ISOTOPE = 0.002
#: Fraction of 13C per carbon atom (natural abundance), for isotope ratios.
C13_PER_CARBON = 0.0107
#: Gaussian FWHM / σ.
FWHM_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))

#: Apex height (counts) of panel ions at tissue baseline; unknown targets get DEFAULT_LEVEL.
LEVELS: dict[str, float] = {
    "lactate": 15000, "glutamine": 5000, "glutamate": 12000, "tryptophan": 5000,
    "kynurenine": 900, "succinate": 3000, "alpha-ketoglutarate": 1500,
    "2-hydroxyglutarate": 1000, "palmitate": 6000, "oleate": 5000, "arachidonate": 3000,
    "PGE2": 400, "PI 38:4": 8000, "AMP": 3000, "ATP": 1200,
    "PC 34:1": 30000, "PC 34:1 +Na": 10000, "PC 34:1 +K": 12000, "cholesterol": 6000,
}
DEFAULT_LEVEL = 2000.0

#: Per niche kind: (target name or "group:NAME", lowest fold, highest fold) inside the niche.
NICHE_EFFECTS: dict[str, list[tuple[str, float, float]]] = {
    "lactate": [("lactate", 4.0, 7.0), ("succinate", 1.3, 1.7), ("glutamine", 0.6, 0.8)],
    "kynurenine": [("kynurenine", 5.0, 9.0), ("tryptophan", 0.3, 0.45), ("PGE2", 1.3, 1.8)],
    "lipid": [("group:lipid", 3.0, 5.5)],
}
#: A niche kind can be planted only when the panel has these targets (its maps need them).
NICHE_REQUIRES: dict[str, list[str]] = {
    "lactate": ["lactate"],
    "kynurenine": ["kynurenine", "tryptophan"],
    "lipid": ["group:lipid"],
}

#: Matrix ions per polarity: (formula, adduct, relative weight). 9-AA (negative), DHB
#: (positive), the usual matrices for small metabolites and lipids.
MATRIX_IONS: dict[str, tuple[str, list[tuple[str, str, float]]]] = {
    "negative": ("9-aminoacridine", [
        ("C13H10N2", "[M-H]-", 1.0), ("C13H10N2", "[2M-H]-", 0.12),
        ("C13H10N2", "[M+Cl]-", 0.05), ("C13H10N2", "[3M-H]-", 0.02),
    ]),
    "positive": ("2,5-dihydroxybenzoic acid", [
        ("C7H6O4", "[M+H-H2O]+", 1.0), ("C7H6O4", "[M+H]+", 0.5), ("C7H6O4", "[M+Na]+", 0.4),
        ("C7H6O4", "[M+K]+", 0.25), ("C7H6O4", "[2M+H-2H2O]+", 0.15),
        ("C7H6O4", "[2M+Na-2H2O]+", 0.05),
    ]),
}
MATRIX_LEVEL = 30000.0  # 9-AA / DHB: the base peak off tissue
#: Apex height (counts) of an impostor peak at abundance 1.
IMPOSTOR_LEVEL = 3000.0
#: Default m/z range (Th) per polarity, widened if a panel ion falls outside.
MZ_RANGE = {"negative": (70.0, 950.0), "positive": (100.0, 1000.0)}
#: Background noise σ (counts) at high m/z; it rises ×2.5 towards the low-mass end.
NOISE_SIGMA = 8.0
#: Processed profile keeps points above this many noise σ; centroids need the same SNR.
KEEP_SNR = 3.0
N_BACKGROUND_FIELDS = 6
#: σ of the log-normal pixel-to-pixel ionisation noise of each peak.
ION_NOISE = 0.12
#: Profile grid points per FWHM (the grid's relative spacing is 1 / (R · this)).
POINTS_PER_FWHM = 5.0

@dataclass(frozen=True)
class Peaks:
    """The sample's peaks, sorted by m/z: exact m/z (Th), abundance component, weight and
    the ion each belongs to (its isotope peaks share the ionisation noise)."""

    mz: np.ndarray
    comp: np.ndarray
    weight: np.ndarray
    ion: np.ndarray


def niche_folds(targets: list[Target], kind: str, rng: np.random.Generator) -> dict[str, float]:
    """Fold change per target name inside one niche of ``kind`` (drawn per niche)."""
    folds: dict[str, float] = {}
    for selector, lo, hi in NICHE_EFFECTS[kind]:
        fold = rng.uniform(lo, hi)
        for t in targets:
            if t.name == selector or selector == f"group:{t.group}":
                folds[t.name] = round(float(fold * rng.uniform(0.9, 1.1)), 3)
    return folds


def available_kinds(targets: list[Target]) -> list[str]:
    """Niche kinds the panel can show (e.g. no lactate niches without a lactate target)."""
    names = {t.name for t in targets} | {f"group:{t.group}" for t in targets}
    return [k for k, need in NICHE_REQUIRES.items() if all(n in names for n in need)]


def mz_range(targets: list[Target], polarity: str) -> tuple[float, float]:
    """Acquisition m/z range (Th): the polarity's default, widened to hold every target."""
    lo, hi = MZ_RANGE[polarity]
    return min(lo, min(t.mz for t in targets) - 10.0), max(hi, max(t.mz for t in targets) + 10.0)


def make_peaks(
    targets: list[Target],
    polarity: str,
    resolving_power: float,
    mz_lo: float,
    mz_hi: float,
    n_background: int,
    rng: np.random.Generator,
    impostors: tuple[float, ...] = (),
) -> Peaks:
    """Panel ions (component = target index), matrix ions (component T), background ions
    (components T+1 .. T+N_BACKGROUND_FIELDS), each with its isotope peaks, and impostors
    (component T+1+N_BACKGROUND_FIELDS+i): single peaks at the given m/z, no isotopes."""
    n_t = len(targets)
    # per ion: its peaks as (m/z, relative weight), component, weight of the first peak
    ions: list[tuple[list[tuple[float, float]], int, float]] = []

    def pattern(formula: str, adduct: str) -> list[tuple[float, float]]:
        p = isotope_pattern(formula, adduct, resolving_power, n_peaks=N_ISOTOPES,
                            min_abundance=MIN_ISOTOPE)
        return list(zip(p.mz.tolist(), (p.abundance / p.abundance[0]).tolist()))

    def carbon13(m: float, nc: int, z: int) -> list[tuple[float, float]]:
        r1 = C13_PER_CARBON * nc
        out = [(m, 1.0), (m + C13_SHIFT / z, r1)]
        return out + ([(m + 2 * C13_SHIFT / z, r1 * r1 / 2)] if r1 * r1 / 2 > 0.05 else [])

    for i, t in enumerate(targets):
        level = LEVELS.get(t.name, DEFAULT_LEVEL)
        if t.formula and t.adduct:
            ions.append((pattern(t.formula, t.adduct), i, level))
        else:
            ions.append((carbon13(t.mz, round(t.mz / 14.5), 1), i, level))
    for formula, adduct, w in MATRIX_IONS[polarity][1]:
        ions.append((pattern(formula, adduct), n_t, MATRIX_LEVEL * w))
    # Unassigned ions on the organic mass-defect band, ≥ 3 FWHM from every other ion.
    taken = [m for peaks, *_ in ions for m, _ in peaks[:2]] + list(impostors)
    cands = rng.integers(int(mz_lo) + 2, int(mz_hi) - 2, 8 * n_background + 16).astype(float)
    cands += cands * rng.uniform(0.0003, 0.0008, len(cands))
    added = 0
    for m in cands:
        if added == n_background:
            break
        if np.min(np.abs(np.asarray(taken) - m)) > 3.0 * m / resolving_power:
            level = 10.0 ** rng.uniform(1.9, 3.6)
            comp = n_t + 1 + int(rng.integers(0, N_BACKGROUND_FIELDS))
            ions.append((carbon13(m, round(m / 14.5), 1), comp, level))
            taken += [m, m + C13_SHIFT]
            added += 1
    for j, m in enumerate(impostors):
        ions.append(([(float(m), 1.0)], n_t + 1 + N_BACKGROUND_FIELDS + j, IMPOSTOR_LEVEL))
    rows = [(m, comp, w * r, ion) for ion, (peaks, comp, w) in enumerate(ions)
            for m, r in peaks]
    arr = np.array(sorted(r for r in rows if mz_lo <= r[0] <= mz_hi))
    return Peaks(arr[:, 0], arr[:, 1].astype(np.intp), arr[:, 2], arr[:, 3].astype(np.intp))


def calibration_drift(px: Pixels, shape: tuple[int, int], global_ppm: float,
                      gradient_ppm: float, rng: np.random.Generator) -> tuple[Pixels, float]:
    """Add a calibration error to every pixel's mass shift: ``global_ppm`` everywhere plus a
    linear gradient of ``gradient_ppm`` from one edge of the grid to the opposite one, along
    a seeded random direction. Returns the pixels and the direction (degrees from +x)."""
    angle = float(rng.uniform(0.0, 360.0))
    ny, nx = shape
    ux, uy = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    # projection on the direction, scaled to -0.5 .. 0.5 over the grid's extent
    span = (abs(nx - 1) * abs(ux) + abs(ny - 1) * abs(uy)) or 1.0
    proj = ((px.x - (nx - 1) / 2) * ux + (px.y - (ny - 1) / 2) * uy) / span
    shift = px.shift_ppm + global_ppm + gradient_ppm * proj
    return replace(px, shift_ppm=shift), angle


def add_impostors(px: Pixels, n: int, rng: np.random.Generator) -> Pixels:
    """Append ``n`` impostor components: spatially random (independent per pixel,
    log-normal σ 0.5) abundance on tissue, none elsewhere."""
    if not n:
        return px
    on = px.abundance[:, 0] > 0
    extra = np.exp(rng.normal(0.0, 0.5, (len(px.x), n))) * on[:, None]
    return replace(px, abundance=np.hstack([px.abundance, extra.astype(np.float32)]))


@dataclass(frozen=True)
class Confounders:
    """Nuisance effects of real sections, all off by default (seeded with the sample).

    ``ionisation_sd``: SD of the log of a smooth multiplicative ionisation field over the
    whole section (every ion and so the TIC; e.g. matrix crystal size, laser energy), of
    correlation length ``ionisation_corr_px`` (Gaussian kernel SD, MSI pixels);
    ``pixel_ionisation_sd``: extra i.i.d. log-normal pixel-to-pixel scatter of the same
    kind; ``background_sd``: SD of the log of an independent smooth abundance field on
    every panel target (biology without a niche), of correlation length
    ``background_corr_px``; ``matrix_level``: matrix and background ions off the tissue ×
    this factor (bright matrix off tissue: TIC there exceeds the tissue's).
    """

    ionisation_sd: float = 0.0
    ionisation_corr_px: float = 3.0
    pixel_ionisation_sd: float = 0.0
    background_sd: float = 0.0
    background_corr_px: float = 5.0
    matrix_level: float = 1.0

    def __post_init__(self) -> None:
        for name in ("ionisation_sd", "pixel_ionisation_sd", "background_sd"):
            if not getattr(self, name) >= 0:
                raise InputError(None, f"{name} must be >= 0, not {getattr(self, name)}")
        for name in ("ionisation_corr_px", "background_corr_px", "matrix_level"):
            if not getattr(self, name) > 0:
                raise InputError(None, f"{name} must be > 0, not {getattr(self, name)}")

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Pixels:
    """The pixels written, in acquisition (raster) order, and their per-pixel quantities.

    ``x``, ``y``: 0-based pixel indices; ``abundance`` (n, components) relative ion yield;
    ``tic``: multiplicative TIC factor; ``shift_ppm``: mass shift of every peak (ppm).
    """

    x: np.ndarray
    y: np.ndarray
    abundance: np.ndarray
    tic: np.ndarray
    shift_ppm: np.ndarray


def make_pixels(
    layout: Section,
    targets: list[Target],
    folds: list[dict[str, float]],
    off_tissue: str,
    pixel_size_um: float,
    rng: np.random.Generator,
    confounders: Confounders | None = None,
    rng_confounders: np.random.Generator | None = None,
) -> Pixels:
    """Per-pixel abundances: panel targets at baseline with smooth variation, times each
    niche's fold (soft edge); background ions on smooth fields; matrix suppressed on tissue.
    ``off_tissue`` "absent" writes tissue pixels only, "matrix" the whole grid.
    ``confounders`` (drawn from ``rng_confounders``, so the rest does not change) add
    ionisation fields, background abundance fields and bright off-tissue matrix."""
    conf = confounders or Confounders()
    rc = rng_confounders if rng_confounders is not None else np.random.default_rng(0)
    written = layout.mask if off_tissue == "absent" else np.ones(layout.shape, bool)
    y, x = np.nonzero(written)  # raster order: row by row, left to right
    on = layout.mask[y, x]
    xf, yf = x.astype(float), y.astype(float)
    scale = 150.0 / pixel_size_um  # tissue structures of ~150 µm
    n_t = len(targets)
    ab = np.zeros((len(x), n_t + 1 + N_BACKGROUND_FIELDS), np.float32)
    weights = [n.weight(xf, yf) for n in layout.niches]
    for i, t in enumerate(targets):
        col = np.exp(0.15 * smooth_field(layout.shape, scale, rng)[y, x])
        for w, f in zip(weights, folds):
            if t.name in f:
                col *= 1.0 + (f[t.name] - 1.0) * w
        if conf.background_sd > 0:
            col *= np.exp(conf.background_sd
                          * smooth_field(layout.shape, conf.background_corr_px, rc)[y, x])
        ab[:, i] = col * on
    ab[:, n_t] = np.where(on, 0.5, conf.matrix_level) * np.exp(
        0.1 * smooth_field(layout.shape, scale, rng)[y, x])
    for j in range(N_BACKGROUND_FIELDS):
        field = np.exp(0.35 * smooth_field(layout.shape, scale, rng)[y, x])
        ab[:, n_t + 1 + j] = field * np.where(on, 1.0, 0.03 * conf.matrix_level)
    # Acquisition effects: line-to-line and pixel TIC variation, slow calibration drift.
    row = 1.0 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.05, 0.2) * y + rng.uniform(0, 6.3))
    tic = row * np.exp(rng.normal(0.0, 0.12, len(x)))
    if conf.ionisation_sd > 0:
        tic *= np.exp(conf.ionisation_sd
                      * smooth_field(layout.shape, conf.ionisation_corr_px, rc)[y, x])
    if conf.pixel_ionisation_sd > 0:
        tic *= np.exp(rc.normal(0.0, conf.pixel_ionisation_sd, len(x)))
    t = np.arange(len(x)) / max(1, len(x) - 1)
    cycles, phase = rng.uniform(0.5, 1.5), rng.uniform(0, 6.3)
    drift = rng.uniform(1.0, 2.5) * np.sin(2 * np.pi * cycles * t + phase)
    shift = np.clip(drift + rng.normal(0.0, 0.7, len(x)), -5.0, 5.0)
    return Pixels(x, y, ab, tic.astype(np.float32), shift)


@dataclass
class Block:
    """Spectra of ``n`` consecutive written pixels as flat arrays.

    Spectrum ``k`` is ``intensity[offsets[k]:offsets[k+1]]`` with m/z values
    ``mz[offsets[k]:offsets[k+1]]``, or the shared ``mz`` when ``shared`` (continuous)."""

    offsets: np.ndarray
    mz: np.ndarray
    intensity: np.ndarray
    shared: bool


class Renderer:
    """Turns per-pixel peak heights into profile or centroid spectra, block by block.

    Profile spectra live on a grid of constant relative spacing 1/(R·points_per_fwhm)
    from ``mz_lo``. With ``dense_axis`` the whole grid is stored (raw TOF-like spectra);
    otherwise only grid points within ±``window_fwhm`` FWHM of some peak (the rest of the
    range carries nothing but sub-threshold noise). Continuous mode shares that axis;
    processed mode shifts each pixel's grid by a random fraction of a step (so every
    spectrum has its own m/z array) and keeps points above ``KEEP_SNR`` noise σ.
    """

    def __init__(
        self,
        peaks: Peaks,
        mode: str,
        spectrum_type: str,
        resolving_power: float,
        mz_lo: float,
        mz_hi: float,
        *,
        dense_axis: bool = False,
        points_per_fwhm: float = POINTS_PER_FWHM,
        window_fwhm: float = 2.0,
        axis_shift_ppm: float = 0.0,
    ) -> None:
        self.peaks, self.mode, self.type = peaks, mode, spectrum_type
        self.step = 1.0 / (resolving_power * points_per_fwhm)  # relative grid spacing
        sigma = peaks.mz / (resolving_power * FWHM_SIGMA)
        self.peak_noise = self._noise(peaks.mz, mz_lo).astype(np.float32)
        if spectrum_type == "centroid":
            # one shared peak list: continuous centroid files carry a global shift only
            self.axis = peaks.mz * (1.0 + axis_shift_ppm * 1e-6) if mode == "continuous" \
                else peaks.mz
            return
        ln_step = np.log1p(self.step)
        half = window_fwhm / resolving_power
        i_lo = np.ceil(np.log(peaks.mz * (1 - half) / mz_lo) / ln_step).astype(np.int64)
        i_hi = np.floor(np.log(peaks.mz * (1 + half) / mz_lo) / ln_step).astype(np.int64)
        lengths = i_hi - i_lo + 1
        c_grid = np.repeat(i_lo - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
        c_peak = np.repeat(np.arange(len(peaks.mz)), lengths)
        if dense_axis:
            grid = np.arange(int(np.floor(np.log(mz_hi / mz_lo) / ln_step)) + 1)
            inside = (c_grid >= 0) & (c_grid < len(grid))
            c_grid, c_peak = c_grid[inside], c_peak[inside]
        else:
            grid = np.unique(c_grid)
        self.axis = mz_lo * np.exp(grid * ln_step)
        c_pos = np.searchsorted(grid, c_grid)
        x = self.axis[c_pos]
        self.c_peak = c_peak
        self.d = ((x - peaks.mz[c_peak]) / sigma[c_peak]).astype(np.float32)
        self.u = (x / sigma[c_peak]).astype(np.float32)
        n_c = len(c_pos)
        # (axis point × contribution) incidence: intensity = S · contributions.
        self.S = sparse.csr_matrix(
            (np.ones(n_c, np.float32), (c_pos, np.arange(n_c))), shape=(len(grid), n_c)
        )
        self.noise = self._noise(self.axis, mz_lo).astype(np.float32)
        self.keep_level = (KEEP_SNR * self.noise).astype(np.float32)

    @staticmethod
    def _noise(m: np.ndarray, mz_lo: float) -> np.ndarray:
        return NOISE_SIGMA * (1.0 + 1.5 * np.exp(-(m - mz_lo) / 100.0))

    def heights(self, px: Pixels, sl: slice, rng: np.random.Generator) -> np.ndarray:
        """Apex heights (pixels, peaks) before detector noise: abundance × weight × TIC ×
        log-normal ionisation noise (mean 1)."""
        h = px.abundance[sl][:, self.peaks.comp] * self.peaks.weight.astype(np.float32)
        h *= px.tic[sl, None]
        n_ions = int(self.peaks.ion.max()) + 1
        eps = np.exp(rng.normal(-ION_NOISE**2 / 2, ION_NOISE, (h.shape[0], n_ions)))
        h *= eps.astype(np.float32)[:, self.peaks.ion]
        return h

    def block(self, px: Pixels, sl: slice, rng: np.random.Generator) -> Block:
        """Spectra of the written pixels ``sl`` (a slice of the acquisition order)."""
        h = self.heights(px, sl, rng)
        n = h.shape[0]
        shift = (px.shift_ppm[sl] * 1e-6).astype(np.float32)
        if self.type == "centroid":
            obs = _counts(h, self.peak_noise, rng)
            det = obs > KEEP_SNR * self.peak_noise
            if self.mode == "continuous":  # aligned peak list: undetected peaks are 0
                obs *= det
                return Block(np.arange(n + 1) * len(self.axis), self.axis, obs.ravel(), True)
            det[np.arange(n), np.argmax(obs, axis=1)] = True  # never an empty spectrum
            mzs = self.axis * (1.0 + shift[:, None] + rng.normal(0.0, 3e-7, h.shape))
            order = np.argsort(np.where(det, mzs, np.inf), axis=1, kind="stable")
            mzs = np.take_along_axis(mzs, order, 1)
            obs = np.take_along_axis(obs, order, 1)
            det = np.take_along_axis(det, order, 1)
            return Block(_offsets(det), mzs[det], obs[det], False)
        offset = np.zeros(n, np.float32) if self.mode == "continuous" else (
            rng.uniform(0.0, self.step, n).astype(np.float32))
        z = np.multiply.outer(offset - shift, self.u)
        z += self.d
        z *= z
        z *= -0.5
        np.exp(z, out=z)
        z *= h[:, self.c_peak]
        signal = np.ascontiguousarray((self.S @ z.T).T)
        obs = _counts(signal, self.noise, rng)
        if self.mode == "continuous":
            return Block(np.arange(n + 1) * len(self.axis), self.axis, obs.ravel(), True)
        keep = obs > self.keep_level
        keep[np.arange(n), np.argmax(obs, axis=1)] = True
        mzs = np.multiply.outer(1.0 + offset.astype(np.float64), self.axis)
        return Block(_offsets(keep), mzs[keep], obs[keep], False)


def _counts(signal: np.ndarray, sigma: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Detector counts: √signal shot noise plus half-normal baseline noise σ (float32)."""
    noise = rng.standard_normal(signal.shape, dtype=np.float32)
    noise *= np.sqrt(signal + sigma * sigma)
    noise += signal
    return np.abs(noise, out=noise)


def _offsets(keep: np.ndarray) -> np.ndarray:
    off = np.zeros(keep.shape[0] + 1, np.int64)
    np.cumsum(keep.sum(axis=1), out=off[1:])
    return off
