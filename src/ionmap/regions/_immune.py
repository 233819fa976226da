"""Immune context of hotspots: cell densities inside, at the rim and outside; phenotypes.

Geometry, all in µm on the MSI grid: the signed distance ``sd`` to the nearest hotspot
edge (< 0 inside, > 0 outside; the edge runs half a pixel beyond the centres of a
hotspot's outer pixels) is computed once per map with a Euclidean distance transform and
interpolated bilinearly at each cell's exact position, so a cell's compartment does not
depend on which pixel it is rounded to. Every point belongs to its nearest hotspot.

- *inside*: the hotspot's core, ``sd ≤ −edge_guard_um`` (default half an MSI pixel):
  cells on the boundary itself, where pixelation and registration error (a few tenths of
  a pixel) make inside and outside ambiguous, do not decide the phenotype;
- *rim*: tissue with ``0 < sd ≤ rim_um`` around the hotspot;
- *outside*: tissue outside all hotspots of the map (the tissue baseline).

Only the *measured* tissue counts: the tissue inside the annotation coverage mask
(``coverage``, see :mod:`ionmap.regions._coverage`; cells were looked for only there).
Areas are measured the same way as counts (``sd`` sampled 4 × 4 times per pixel near
hotspots), and density = cells / area in cells/mm². Vectorised over cells: one pass per
map and setting, no loop over cells or pixels.

Evidence. The counts of the chosen cell type (default CD8) are modelled as Poisson with
a rate per compartment, the tissue-wide density being the offset (the expected count of
a compartment is its area times the tissue rate, as the neighbourhood statistics of
SPIAT and squidpy compare observed with expected counts); the contrasts inside/tissue,
rim/tissue and inside/rim are rate ratios with exact conditional confidence intervals:
given n₁ + n₂, n₁ is binomial with p = a₁ρ / (a₁ρ + a₂) (ρ the rate ratio, a the areas),
so the Clopper–Pearson interval of p gives that of ρ (Przyborowski & Wilenski 1940,
Biometrika 31:313; Fay 2010, R Journal 2:53, as R's ``poisson.test``). Exact intervals
hold at any count, so a small hotspot with many cells is called on its own evidence and
one with few expected cells gets a wide interval (undetermined) without a rule of thumb.
Cells cluster, so counts may be overdispersed: a quasi-Poisson dispersion φ ≥ 1
(Wedderburn 1974, Biometrika 61:439; McCullagh & Nelder 1989, §4.5) divides every count
before the interval. φ is estimated from the cell type's counts in square tiles (side
2 · rim, ≥ 3 px) of the measured outside tissue (away from other regions too when given,
as :func:`~ionmap.regions.run_hotspots` gives every candidate cluster of every map: a
niche's own cell pattern, significant or not, is not background scatter): 1 unless a test
of the Poisson model rejects it (5 %), else the negative binomial (NB1) dispersion
matched by a robust, clipped Pearson statistic (see :func:`_dispersion`). The one-sided
p-value ``inside_vs_rim_p`` tests "inside rate ≥ rim rate" by the same binomial.

Phenotype of a hotspot, with ρ_in, ρ_rim and ρ_in/rim the inside/tissue, rim/tissue and
inside/rim rate ratios and their ``confidence`` intervals (default 90 %: each one-sided
call errs at most 5 % of the time); the thresholds are options, no universal cut-off:

- ``inflamed``: lower bound of ρ_in ≥ ``scarce_ratio`` (default 0.5);
- ``immune-excluded``: present at the rim, lower bound of ρ_rim ≥ ``rim_ratio`` (default
  0.5), and scarce inside: either against the tissue (upper bound of ρ_in <
  ``scarce_ratio``) or against the margin where the cells gather (upper bounds of ρ_in
  < 1, below the tissue baseline, and of ρ_in/rim < ``scarce_ratio``: the core vs
  invasive-margin contrast of the Immunoscore, Galon et al. 2006, Science 313:1960;
  Pagès et al. 2018, Lancet 391:2128). Each way is an intersection–union test at 5 %
  (Berger 1982, Technometrics 24:295), so a false "excluded" is at most 10 %;
- ``immune-desert``: upper bounds of ρ_in < ``scarce_ratio`` and of ρ_rim < ``rim_ratio``;
- ``undetermined`` otherwise, with the reason in ``class_reason``: the hotspot is not
  significant on its own (``significant``), less than ``min_coverage`` (default half) of
  its inside (or, for a scarce inside, of its rim) lies in the annotated region ("not
  annotated"), no core inside the guard band, no baseline tissue, a scarcity call
  resting on fewer than ``min_expected`` (default 5) cells expected (after dividing by φ)
  under the reference rate (the tissue's; the rim's for the margin contrast; at the rim
  for a desert), or an interval that spans the threshold. Scarcity needs the cells that
  would be there: with 5 expected, 0 observed is still 0.7 % likely at the baseline;
  an inflamed call rests on the cells seen and needs no minimum.

Sensitivity: every hotspot is also classified for rim widths 30, 60, 90, 120 µm (and the
chosen one) × ``scarce_ratio`` and ``rim_ratio`` scaled by 2/3, 1 and 3/2;
``class_stable`` says whether all of them agree with the default call and
``classes_across_settings`` lists what they gave. With ``registration_error_px`` (e.g.
the leave-one-out error of a landmark fit) the cells are also moved by that error in 8
directions; ``registration_stable`` says whether the class survives every move.

``exclusion_score`` = (rim − inside) / (rim + inside) densities, in [−1, 1] (0 when both
are 0). Its permutation p-value tests whether the cell type avoids the inside in favour of
the rim more than the same number of cells drawn at random among all cells in the measured
tissue would: random relabelling, drawn exactly as multivariate hypergeometric counts (the
same distribution as shuffling labels, without touching a million cells per permutation).

Guard: when fewer than ``min_on_tissue`` (default half) of the cells fall on the tissue
(cells not mapped to MSI pixels, wrong registration or units) :func:`immune_context`
raises :class:`~ionmap.errors.InputError`; below 90 % it warns.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage, special

from .._geometry import pixels_inside
from ..errors import InputError, IonmapWarning
from ..params import ImmuneParams

#: Least share of the cells on tissue for :func:`immune_context` (others' defaults: ImmuneParams).
DEFAULT_MIN_ON_TISSUE = 0.5
#: Settings of the sensitivity analysis: rim widths (µm) and threshold factors.
SENSITIVITY_RIMS_UM = (30.0, 60.0, 90.0, 120.0)
SENSITIVITY_FACTORS = (2.0 / 3.0, 1.0, 1.5)
CLASSES = ("inflamed", "immune-excluded", "immune-desert", "undetermined")
NOT_ANNOTATED = "not annotated"
NOT_SIGNIFICANT = "not significant"
_SUB = 4  # area samples per pixel side near hotspots
_SHIFTS = 8  # directions in which cells are moved by the registration error
_NULL_DRAWS = 200  # simulated tile sets per dispersion value that calibrate φ
_CLIP = 3.0  # Pearson residuals clipped at ±this in the dispersion statistic
_PHI_GRID = np.geomspace(1.0, 30.0, 18)  # dispersions the statistic is simulated at
_OVERDISPERSION_ALPHA = 0.05  # level of the test of Poisson tiles before φ is estimated
COMPARTMENTS = ("inside", "rim", "outside")


def rate_ratio_ci(n1: float, a1: float, n2: float, a2: float, *,
                  confidence: float = ImmuneParams.confidence,
                  dispersion: float = 1.0) -> tuple[float, float, float]:
    """Rate ratio (n1/a1) / (n2/a2) of two Poisson counts and its exact conditional
    interval (Clopper–Pearson on n1 | n1 + n2; counts divided by ``dispersion`` first).

    Areas in any one unit. Returns (ratio, low, high); NaN ratio with (0, inf) when both
    counts are 0, NaN everything when an area is not positive.
    """
    if not (a1 > 0 and a2 > 0):
        return math.nan, math.nan, math.nan
    x, y = n1 / dispersion, n2 / dispersion
    if x + y <= 0:
        return math.nan, 0.0, math.inf
    alpha = 1.0 - confidence
    p_lo = special.betaincinv(x, y + 1, alpha / 2) if x > 0 else 0.0
    p_hi = special.betaincinv(x + 1, y, 1 - alpha / 2) if y > 0 else 1.0

    def ratio(p: float) -> float:
        return math.inf if p >= 1 else p / (1 - p) * a2 / a1

    return (ratio(x / (x + y)) if y > 0 else math.inf), ratio(p_lo), ratio(p_hi)


def rate_ratio_p_less(n1: float, a1: float, n2: float, a2: float, *,
                      dispersion: float = 1.0) -> float:
    """One-sided p-value of "rate 1 ≥ rate 2": P(X ≤ n1) for X ~ Binomial(n1 + n2,
    a1 / (a1 + a2)) (counts divided by ``dispersion``); NaN without counts or area."""
    x, y = n1 / dispersion, n2 / dispersion
    if not (a1 > 0 and a2 > 0) or x + y <= 0:
        return math.nan
    if y <= 0:
        return 1.0
    # Binomial CDF at x, continued to non-integer counts: I_{1-p}(n - x, x + 1).
    return float(special.betainc(y, x + 1, a2 / (a1 + a2)))


def classify(n_in: float, a_in: float, n_rim: float, a_rim: float, n_out: float,
             a_out: float, *, scarce_ratio: float = ImmuneParams.scarce_ratio,
             rim_ratio: float = ImmuneParams.rim_ratio,
             min_expected: float = ImmuneParams.min_expected,
             confidence: float = ImmuneParams.confidence, dispersion: float = 1.0
             ) -> tuple[str, str]:
    """Phenotype and reason from the counts and areas (any one unit) of the chosen cell
    type inside, at the rim and outside (the baseline); see the module doc. The reason is
    "" for a determined class."""
    if not a_in > 0:
        return "undetermined", "no core inside the edge guard"
    if not (a_out > 0 and n_out > 0):
        return "undetermined", "no cells of the type in the baseline tissue"
    base = n_out / a_out
    opts = {"confidence": confidence, "dispersion": dispersion}
    _, lo, hi = rate_ratio_ci(n_in, a_in, n_out, a_out, **opts)
    if lo >= scarce_ratio:  # positive evidence: the exact interval needs no minimum count
        return "inflamed", ""
    _, r_lo, r_hi = rate_ratio_ci(n_rim, a_rim, n_out, a_out, **opts)
    e_in = base * a_in / dispersion
    if hi < scarce_ratio and e_in >= min_expected:  # scarce against the tissue
        if r_lo >= rim_ratio:
            return "immune-excluded", ""
        e_rim = base * a_rim / dispersion
        if e_rim < min_expected:
            return "undetermined", f"too few cells expected at the rim ({e_rim:.1f} < " \
                                   f"{min_expected:g})"
        if r_hi < rim_ratio:
            return "immune-desert", ""
        return "undetermined", "rim density not distinguishable from the rim threshold"
    # scarce against the margin: below the tissue baseline and below scarce_ratio of the
    # rim, where the cells gather (core vs invasive margin, as the Immunoscore)
    e_margin = n_rim / a_rim * a_in / dispersion if a_rim > 0 else 0.0
    if r_lo >= rim_ratio and hi < 1.0 and e_margin >= min_expected and \
            rate_ratio_ci(n_in, a_in, n_rim, a_rim, **opts)[2] < scarce_ratio:
        return "immune-excluded", ""
    if e_in < min_expected:
        return "undetermined", f"too few cells expected inside ({e_in:.1f} < {min_expected:g})"
    return "undetermined", "inside density not distinguishable from the scarce threshold"


def exclusion_score(inside: np.ndarray | float, rim: np.ndarray | float) -> np.ndarray:
    """(rim − inside) / (rim + inside) of densities, 0 where both are 0."""
    inside = np.asarray(inside, dtype=np.float64)
    rim = np.asarray(rim, dtype=np.float64)
    total = rim + inside
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (rim - inside) / total, 0.0)


def edge_distance(labels: np.ndarray, pixel_size_um: tuple[float, float]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance (µm) of each pixel centre to the nearest hotspot edge, and the
    label of that hotspot (its own label inside). Pixels next to an edge are at ±half a
    pixel; with no hotspot, distances are +inf and owners 0."""
    inside = labels > 0
    if not inside.any():
        return np.full(labels.shape, np.inf), np.zeros(labels.shape, dtype=labels.dtype)
    sampling = (pixel_size_um[1], pixel_size_um[0])  # (y, x)
    half = 0.5 * min(pixel_size_um)
    d_out, (iy, ix) = ndimage.distance_transform_edt(~inside, sampling=sampling,
                                                     return_indices=True)
    d_in = ndimage.distance_transform_edt(inside, sampling=sampling)
    return np.where(inside, half - d_in, d_out - half), labels[iy, ix]


@dataclass(frozen=True)
class ImmuneContext:
    """Per-hotspot immune context of one map.

    ``table``: one dict per hotspot (``label``, ``class``, ``class_reason``,
    ``inside_density``, ``rim_density``, ``outside_density`` of the chosen type in
    cells/mm², its counts, areas in mm², ``coverage_fraction`` / ``rim_coverage_fraction``
    (share of the inside / rim tissue in the annotated region), ``expected_inside`` (cells
    under the tissue rate), the rate ratios ``inside_vs_tissue``, ``rim_vs_tissue``,
    ``inside_vs_rim`` with ``_lo`` / ``_hi`` bounds, ``inside_vs_rim_p``, ``dispersion``,
    ``exclusion_score``, ``p_value``, ``class_stable``, ``classes_across_settings``,
    ``registration_stable``); ``densities``: long table (label, cell_type, compartment,
    n_cells, area_mm2, density_per_mm2) for every cell type; ``curves``: density against
    signed distance from the edge (label, cell_type, distance_um = bin centre, n_cells,
    area_mm2, density_per_mm2); ``params``: settings; ``cell_label`` (n,) int32 and
    ``cell_compartment`` (n,) int8, each input cell's hotspot label (0: none) and
    compartment as counted at ``rim_um``: :data:`COMPARTMENTS` index, or −1 in the edge
    guard band, −2 not measured (off the image, the tissue or the annotated region).
    """

    table: list[dict]
    densities: list[dict]
    curves: list[dict]
    params: dict
    cell_label: np.ndarray
    cell_compartment: np.ndarray


@dataclass(frozen=True)
class _Geometry:
    """What every measurement of one map shares: distances, owners, the measured tissue."""

    sd: np.ndarray  # signed distance to the nearest edge, µm
    owner: np.ndarray  # nearest hotspot label
    tissue: np.ndarray  # bool, all tissue
    measured: np.ndarray  # bool, tissue inside the annotation coverage
    n_hot: int
    px: tuple[float, float]
    guard: float

    def assign(self, xy: np.ndarray, rim_um: float) -> tuple[np.ndarray, np.ndarray]:
        """Each cell's owner (hotspot label, 0 outside) and compartment (0 inside, 1 rim,
        2 outside, −1 guard band, −2 not measured): two (n,) int64 arrays."""
        ix, iy, on = pixels_inside(xy, self.sd.shape)
        on[on] = self.measured[iy[on], ix[on]]
        comp = np.full(len(xy), -2, np.int64)
        if self.n_hot:
            sd = ndimage.map_coordinates(self.sd, [xy[on, 1], xy[on, 0]], order=1,
                                         mode="nearest")
        else:
            sd = np.full(int(on.sum()), np.inf)
        comp[on] = _compartment(sd, self.guard, rim_um)
        owner = np.zeros(len(xy), np.int64)
        held = comp >= 0
        held[held] = comp[held] < 2
        owner[held] = self.owner[iy[held], ix[held]]
        return owner, comp

    def counts(self, xy: np.ndarray, codes: np.ndarray, n_types: int, rim_um: float
               ) -> np.ndarray:
        """Cells per (owner, compartment, type): (n_hot + 1, 3, T); outside in every row."""
        return self.tally(*self.assign(xy, rim_um), codes, n_types)

    def tally(self, owner: np.ndarray, comp: np.ndarray, codes: np.ndarray, n_types: int
              ) -> np.ndarray:
        """:meth:`counts` of cells already :meth:`assign`-ed."""
        sel = comp >= 0
        counts = np.bincount((owner[sel] * 3 + comp[sel]) * n_types + codes[sel],
                             minlength=(self.n_hot + 1) * 3 * n_types
                             ).reshape(self.n_hot + 1, 3, n_types)
        counts[:, 2] = counts[0, 2]
        return counts

    def areas(self, rim_um: float, region: np.ndarray | None = None) -> np.ndarray:
        """Areas in mm² of (inside, rim, outside) per owner over ``region`` (default the
        measured tissue): (n_hot + 1, 3), outside in every row."""
        a = _areas(self.sd, self.owner, self.measured if region is None else region,
                   self.guard, rim_um, self.n_hot, self.px) * (self.px[0] * self.px[1] * 1e-6)
        a[:, 2] = a[0, 2]
        return a


def immune_context(
    labels: np.ndarray | Any,
    cells_xy: np.ndarray,
    cell_types: Sequence[str] | np.ndarray,
    tissue: np.ndarray,
    pixel_size_um: float | tuple[float, float],
    *,
    rim_um: float = ImmuneParams.rim_um,
    cell_type: str = "CD8",
    edge_guard_um: float | None = None,
    scarce_ratio: float = ImmuneParams.scarce_ratio,
    rim_ratio: float = ImmuneParams.rim_ratio,
    n_permutations: int = ImmuneParams.n_permutations,
    seed: int = 0,
    curve_bin_um: float | None = None,
    curve_max_um: float | None = None,
    coverage: np.ndarray | None = None,
    significant: Sequence[bool] | None = None,
    min_expected: float = ImmuneParams.min_expected,
    confidence: float = ImmuneParams.confidence,
    min_coverage: float = ImmuneParams.min_coverage,
    min_on_tissue: float = DEFAULT_MIN_ON_TISSUE,
    sensitivity: bool = True,
    registration_error_px: float | None = None,
    other_hotspots: np.ndarray | None = None,
) -> ImmuneContext:
    """Densities, phenotype, evidence and exclusion test of every hotspot in ``labels``.

    ``labels``: (ny, nx) int hotspot labels (0 = none) of one map, or the
    :class:`~ionmap.regions._hotspots.Hotspots` of :func:`find_hotspots`; ``cells_xy``: (n, 2)
    cell positions in MSI pixels (x, y; 0-based pixel centres); ``cell_types``: n labels;
    ``tissue``: (ny, nx) bool; ``pixel_size_um``: MSI pixel size, (x, y) or one number;
    ``rim_um``: rim width outside the edge; ``edge_guard_um``: boundary band left out of
    the inside (default half a pixel); ``curve_bin_um`` / ``curve_max_um``: bin width
    (default one pixel) and reach outside the edge (default 3 × rim) of the distance
    curves; ``coverage``: (ny, nx) bool annotated region on the MSI grid (default: all of
    it); ``significant``: one flag per hotspot (label order; default: the ``significant``
    field of a Hotspots table if it has one, else all True); ``min_expected``,
    ``confidence``, ``min_coverage``, ``sensitivity``, ``registration_error_px`` (MSI
    pixels): see the module doc; ``other_hotspots``: (ny, nx) bool, regions kept (with a
    rim around them) out of the tiles that estimate the dispersion (e.g. the candidate
    clusters of every map). Cells off
    the measured tissue are ignored.
    """
    hs_table = getattr(labels, "table", None)
    labels = np.asarray(getattr(labels, "labels", labels))
    tissue = np.asarray(tissue, dtype=bool)
    px = (float(pixel_size_um),) * 2 if np.isscalar(pixel_size_um) else tuple(
        float(v) for v in pixel_size_um)
    if not (px[0] > 0 and px[1] > 0):
        raise InputError(None, f"MSI pixel size must be positive, not {pixel_size_um}")
    if rim_um <= 0:
        raise InputError(None, f"rim width must be positive, not {rim_um} µm")
    if tissue.shape != labels.shape:
        raise InputError(None, "hotspot labels and tissue mask differ in shape")
    if not 0 < confidence < 1:
        raise InputError(None, f"confidence must be between 0 and 1, not {confidence}")
    guard = 0.5 * min(px) if edge_guard_um is None else float(edge_guard_um)
    if guard < 0:
        raise InputError(None, f"edge guard must be ≥ 0 µm, not {guard}")
    measured = tissue.copy()
    if coverage is not None:
        coverage = np.asarray(coverage, dtype=bool)
        if coverage.shape != tissue.shape:
            raise InputError(None, "annotation coverage mask and tissue mask differ in shape")
        measured &= coverage
    bin_um = curve_bin_um or max(px)
    reach = curve_max_um if curve_max_um is not None else 3 * rim_um
    pixel_mm2 = px[0] * px[1] * 1e-6
    n_hot = int(labels.max()) if labels.size else 0
    present = np.unique(labels[labels > 0])
    flags = _significance(significant, hs_table, n_hot)

    xy = np.asarray(cells_xy, dtype=np.float64).reshape(-1, 2)
    types, codes = np.unique(np.asarray(cell_types, dtype=str), return_inverse=True)
    ix, iy, on = pixels_inside(xy, labels.shape)
    on[on] = tissue[iy[on], ix[on]]
    _check_on_tissue(int(on.sum()), len(xy), min_on_tissue)
    n_types = len(types)
    focus = int(np.searchsorted(types, cell_type)) if cell_type in types else None

    sd, owner = edge_distance(labels, px)
    geo = _Geometry(sd, owner, tissue, measured, n_hot, px, guard)
    cell_label, cell_comp = geo.assign(xy, rim_um)
    counts = geo.tally(cell_label, cell_comp, codes, n_types)
    areas = geo.areas(rim_um)
    areas_tissue = geo.areas(rim_um, tissue)
    density = _density(counts, areas[:, :, None])  # (n_hot+1, 3, T)
    inm = on.copy()
    inm[on] = measured[iy[on], ix[on]]
    n_total = int(inm.sum())
    n_focus = int((codes[inm] == focus).sum()) if focus is not None else 0
    all_counts = counts.sum(axis=2)  # every type, (n_hot+1, 3)
    baseline = measured
    if other_hotspots is not None:
        away = ndimage.distance_transform_edt(~np.asarray(other_hotspots, dtype=bool),
                                              sampling=(px[1], px[0])) > rim_um
        baseline = measured & away
    phi = _dispersion(sd, baseline, xy[inm & (codes == focus)] if focus is not None
                      else np.zeros((0, 2)), rim_um, px)
    evidence = {"min_expected": min_expected, "confidence": confidence, "dispersion": phi}
    fc = counts[..., focus] if focus is not None else np.zeros(counts.shape[:2], np.int64)

    def call(k: int, fcounts: np.ndarray, a: np.ndarray, a_tissue: np.ndarray,
             s_ratio: float, r_ratio: float) -> tuple[str, str]:
        if not flags[k - 1]:
            return "undetermined", NOT_SIGNIFICANT
        cov_in = _fraction(a[k, 0], a_tissue[k, 0])
        if not cov_in >= min_coverage:
            return "undetermined", NOT_ANNOTATED
        cls, why = classify(fcounts[k, 0], a[k, 0], fcounts[k, 1], a[k, 1], fcounts[k, 2],
                            a[k, 2], scarce_ratio=s_ratio, rim_ratio=r_ratio, **evidence)
        if cls in ("immune-excluded", "immune-desert") and not _fraction(
                a[k, 1], a_tissue[k, 1]) >= min_coverage:
            return "undetermined", f"rim {NOT_ANNOTATED}"
        return cls, why

    rng = np.random.default_rng(seed)
    table, densities = [], []
    for k in present.tolist():
        for t in range(n_types):
            for c, comp in enumerate(COMPARTMENTS):
                densities.append({"label": k, "cell_type": str(types[t]), "compartment": comp,
                                  "n_cells": int(counts[k, c, t]),
                                  "area_mm2": float(areas[k, c]),
                                  "density_per_mm2": float(density[k, c, t])})
        if focus is not None:
            f_in, f_rim, f_out = (float(density[k, c, focus]) for c in range(3))
        else:
            f_in = f_rim = f_out = 0.0
        n_in, n_rim, n_out = (int(v) for v in fc[k])
        score = float(exclusion_score(np.nan_to_num(f_in), np.nan_to_num(f_rim)))
        cls, why = call(k, fc, areas, areas_tissue, scarce_ratio, rim_ratio)
        opts = {"confidence": confidence, "dispersion": phi}
        ratios = {}
        for name, (n1, a1, n2, a2) in {
                "inside_vs_tissue": (n_in, areas[k, 0], n_out, areas[k, 2]),
                "rim_vs_tissue": (n_rim, areas[k, 1], n_out, areas[k, 2]),
                "inside_vs_rim": (n_in, areas[k, 0], n_rim, areas[k, 1])}.items():
            r, lo, hi = rate_ratio_ci(n1, a1, n2, a2, **opts)
            ratios.update({name: r, f"{name}_lo": lo, f"{name}_hi": hi})
        table.append({
            "label": k, "class": cls, "class_reason": why,
            "inside_density": f_in, "rim_density": f_rim, "outside_density": f_out,
            "inside_count": n_in, "rim_count": n_rim,
            "inside_area_mm2": float(areas[k, 0]), "rim_area_mm2": float(areas[k, 1]),
            "coverage_fraction": _fraction(areas[k, 0], areas_tissue[k, 0]),
            "rim_coverage_fraction": _fraction(areas[k, 1], areas_tissue[k, 1]),
            "expected_inside": float(n_out / areas[k, 2] * areas[k, 0])
            if areas[k, 2] > 0 else float("nan"),
            **ratios,
            "inside_vs_rim_p": rate_ratio_p_less(n_in, areas[k, 0], n_rim, areas[k, 1],
                                                 dispersion=phi),
            "dispersion": phi,
            "exclusion_score": score,
            "p_value": _permutation_p(score, int(all_counts[k, 0]), int(all_counts[k, 1]),
                                      n_total, n_focus, float(areas[k, 0]),
                                      float(areas[k, 1]), n_permutations, rng),
            "class_stable": None, "classes_across_settings": "", "registration_stable": None,
        })
    decided = [row for row in table if row["class_reason"] not in (NOT_SIGNIFICANT,
                                                                    NOT_ANNOTATED)]
    if sensitivity and decided and focus is not None:
        seen: dict[int, set[str]] = {row["label"]: set() for row in decided}
        for rim in sorted({*SENSITIVITY_RIMS_UM, rim_um}):
            c_r = geo.counts(xy, codes, n_types, rim)[..., focus]
            a_r, t_r = geo.areas(rim), geo.areas(rim, tissue)
            for fs in SENSITIVITY_FACTORS:
                for fr in SENSITIVITY_FACTORS:
                    for row in decided:
                        seen[row["label"]].add(call(row["label"], c_r, a_r, t_r,
                                                    scarce_ratio * fs, rim_ratio * fr)[0])
        for row in decided:
            row["class_stable"] = seen[row["label"]] == {row["class"]}
            row["classes_across_settings"] = "|".join(c for c in CLASSES
                                                      if c in seen[row["label"]])
    if registration_error_px and decided and focus is not None:
        stable = {row["label"]: True for row in decided}
        for j in range(_SHIFTS):
            t = 2 * math.pi * j / _SHIFTS
            moved = xy + registration_error_px * np.array([math.cos(t), math.sin(t)])
            c_s = geo.counts(moved, codes, n_types, rim_um)[..., focus]
            for row in decided:
                stable[row["label"]] &= call(row["label"], c_s, areas, areas_tissue,
                                             scarce_ratio, rim_ratio)[0] == row["class"]
        for row in decided:
            row["registration_stable"] = stable[row["label"]]
    curves = _curves(sd, owner, measured, ix[inm], iy[inm], codes[inm], types, present,
                     bin_um, reach, pixel_mm2)
    params = {"cell_type": cell_type, "rim_um": rim_um, "edge_guard_um": guard,
              "scarce_ratio": scarce_ratio, "rim_ratio": rim_ratio,
              "n_permutations": n_permutations, "seed": seed, "pixel_size_um": list(px),
              "curve_bin_um": bin_um, "curve_max_um": reach, "n_cells_in_tissue": n_total,
              "n_cells_not_in_tissue": int(len(xy) - n_total),
              "cell_type_present": focus is not None, "min_expected": min_expected,
              "confidence": confidence, "min_coverage": min_coverage, "dispersion": phi,
              "coverage_px": int(measured.sum()), "tissue_px": int(tissue.sum()),
              "registration_error_px": registration_error_px}
    return ImmuneContext(table, densities, curves, params, cell_label.astype(np.int32),
                         cell_comp.astype(np.int8))


def _density(n: np.ndarray, a: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(a > 0, n / a, np.nan)


def _fraction(part: float, whole: float) -> float:
    return float(part / whole) if whole > 0 else float("nan")


def _significance(significant: Sequence[bool] | None, table: list[dict] | None,
                  n_hot: int) -> list[bool]:
    """One significance flag per hotspot label 1..n_hot."""
    if significant is None:
        significant = [bool(r.get("significant", True)) for r in table] if table else \
            [True] * n_hot
    flags = [bool(v) for v in significant]
    if len(flags) != n_hot:
        raise InputError(None, f"{len(flags)} significance flags for {n_hot} hotspots")
    return flags


def _check_on_tissue(n_on: int, n: int, min_on_tissue: float) -> None:
    """Refuse (or warn about) cells that mostly miss the tissue."""
    if n == 0:
        return
    share = n_on / n
    if share < min_on_tissue:
        raise InputError(None, f"only {share:.0%} of the {n} cells fall on the MSI tissue: "
                               "are the positions in MSI pixels (Registration.to_msi), and "
                               "are landmarks and cells in the same units?")
    if share < 0.9:
        warnings.warn(f"{1 - share:.0%} of the {n} cells fall outside the MSI tissue: check "
                      "the registration, or crop the cells to the imaged area", IonmapWarning,
                      stacklevel=3)


def _dispersion(sd: np.ndarray, measured: np.ndarray, xy: np.ndarray, rim_um: float,
                px: tuple[float, float]) -> float:
    """Quasi-Poisson dispersion φ ≥ 1 of the cells ``xy`` (MSI px) in square tiles of the
    measured tissue outside every rim (tiles at least half covered; 1 with < 5 tiles).

    The statistic is the mean squared Pearson residual of the tiles, each residual
    clipped at ±``_CLIP`` (Huber-type, as Cantoni & Ronchetti 2001: one tile over a
    structure the hotspots missed moves it little). First a test of the Poisson model
    (Dean & Lawless 1989, JASA 84:467, by simulation): against the statistic of Poisson
    counts with the tiles' expectations, at level ``_OVERDISPERSION_ALPHA``; when Poisson
    is not rejected φ = 1, so the sampling noise of a few dozen tiles does not widen every
    interval (Cameron & Trivedi 2013, §3.4). Else φ is the value at which the statistic of
    negative binomial counts with variance φ·μ (gamma-mixed Poisson, NB1) has the observed
    mean: Fisher-consistent under that model, read off a grid of φ simulated with one
    seed.
    """
    side = max(3, int(math.ceil(2 * rim_um / min(px))))
    nx = sd.shape[1]
    ntx = (nx + side - 1) // side
    yy, xx = np.indices(sd.shape)
    tile = (yy // side) * ntx + xx // side
    out = measured & (sd > rim_um)
    area = np.bincount(tile[out], minlength=tile.max() + 1).astype(np.float64)
    ix, iy, sel = pixels_inside(xy, sd.shape)
    sel[sel] = out[iy[sel], ix[sel]]
    n = np.bincount(tile[iy[sel], ix[sel]], minlength=area.size).astype(np.float64)
    ok = area >= 0.5 * side * side
    if ok.sum() < 5 or n[ok].sum() == 0:
        return 1.0
    expected = n[ok].sum() / area[ok].sum() * area[ok]
    observed = float(_clipped_pearson(n[ok], expected))
    stats = []
    for phi in _PHI_GRID:  # the same seed at every φ: common random numbers
        rng = np.random.default_rng(0)
        lam = expected if phi == 1.0 else rng.gamma(expected / (phi - 1.0), phi - 1.0,
                                                    (_NULL_DRAWS, expected.size))
        draws = _clipped_pearson(rng.poisson(lam, (_NULL_DRAWS, expected.size)), expected)
        if phi == 1.0 and (1 + np.sum(draws >= observed)) / (1 + _NULL_DRAWS) > \
                _OVERDISPERSION_ALPHA:
            return 1.0  # the tiles are not overdispersed beyond Poisson noise
        stats.append(float(np.mean(draws)))
    stats = np.maximum.accumulate(np.asarray(stats))
    if observed >= stats[-1]:
        return float(_PHI_GRID[-1])
    return max(1.0, float(np.interp(observed, stats, _PHI_GRID)))


def _clipped_pearson(n: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Mean over the last axis of the squared Pearson residuals clipped at ±_CLIP."""
    r = np.clip((n - expected) / np.sqrt(expected), -_CLIP, _CLIP)
    return np.mean(r * r, axis=-1)


def _compartment(sd: np.ndarray, guard: float, rim_um: float) -> np.ndarray:
    """0 inside core, 1 rim, 2 outside, -1 guard band, from signed distances (µm)."""
    comp = np.full(sd.shape, 2)
    comp[sd <= rim_um] = 1
    comp[sd <= 0] = -1
    comp[sd <= -guard] = 0
    return comp


def _areas(sd: np.ndarray, owner: np.ndarray, tissue: np.ndarray, guard: float,
           rim_um: float, n_hot: int, px: tuple[float, float]) -> np.ndarray:
    """Area in pixels of (inside core, rim, outside) per owner: (n_hot + 1, 3).

    Pixels whose centre is within 1.5 pixel diagonals of a compartment boundary (sd =
    −guard, 0 or rim) are sampled 4 × 4 times with bilinear ``sd``; the others count
    whole. Row 0 holds the outside area (one baseline shared by all hotspots).
    """
    out = np.zeros((n_hot + 1, 3))
    if n_hot == 0:
        out[0, 2] = tissue.sum()
        return out
    near = np.zeros(sd.shape, dtype=bool)
    for b in (-guard, 0.0, rim_um):
        near |= np.abs(sd - b) < 1.5 * float(np.hypot(*px))
    near &= tissue
    whole = tissue & ~near
    _accumulate(out, owner[whole], _compartment(sd[whole], guard, rim_um),
                np.ones(int(whole.sum())))
    yy, xx = np.nonzero(near)
    offs = (np.arange(_SUB) + 0.5) / _SUB - 0.5
    oy, ox = (g.ravel() for g in np.meshgrid(offs, offs, indexing="ij"))
    s = ndimage.map_coordinates(sd, [(yy[:, None] + oy).ravel(), (xx[:, None] + ox).ravel()],
                                order=1, mode="nearest")
    _accumulate(out, np.repeat(owner[yy, xx], _SUB * _SUB), _compartment(s, guard, rim_um),
                np.full(s.shape, 1.0 / _SUB**2))
    return out


def _accumulate(out: np.ndarray, owner: np.ndarray, comp: np.ndarray, weight: np.ndarray) -> None:
    keep = comp >= 0
    own = np.where(comp[keep] == 2, 0, owner[keep]).astype(np.int64)
    out += np.bincount(own * 3 + comp[keep], weights=weight[keep],
                       minlength=out.size).reshape(out.shape)


def _permutation_p(score: float, n_in: int, n_rim: int, n_total: int, n_focus: int,
                   a_in: float, a_rim: float, n_permutations: int,
                   rng: np.random.Generator) -> float:
    """P(score of random relabelling ≥ observed), (1 + hits) / (1 + permutations)."""
    if n_permutations < 1 or n_in + n_rim == 0 or n_focus == 0 or a_in <= 0 or a_rim <= 0:
        return float("nan")
    colors = np.array([n_in, n_rim, n_total - n_in - n_rim], dtype=np.int64)
    draws = rng.multivariate_hypergeometric(colors, n_focus, size=n_permutations)
    perm = exclusion_score(draws[:, 0] / a_in, draws[:, 1] / a_rim)
    hits = int(np.count_nonzero(perm >= score - 1e-12))
    return (1 + hits) / (1 + n_permutations)


def _curves(sd: np.ndarray, owner: np.ndarray, tissue: np.ndarray, ix: np.ndarray,
            iy: np.ndarray, codes: np.ndarray, types: np.ndarray, present: np.ndarray,
            bin_um: float, reach: float, pixel_mm2: float) -> list[dict]:
    """Density per (hotspot, signed-distance bin, type), by pixel centre distance."""
    if present.size == 0:
        return []
    hi = int(np.floor(reach / bin_um))  # whole bins only: the last ends at or before reach
    sel = tissue & (sd < hi * bin_um)
    if not sel.any():  # every hotspot and its surroundings outside the measured tissue
        return []
    lo = int(np.floor(sd[sel].min() / bin_um))
    nb = hi - lo
    pix_bin = np.floor(sd / np.where(sel, bin_um, 1.0)).astype(np.int64) - lo
    area = np.bincount(owner[sel].astype(np.int64) * nb + pix_bin[sel],
                       minlength=(owner.max() + 1) * nb).reshape(-1, nb) * pixel_mm2
    csel = sel[iy, ix]
    n_types = len(types)
    ck = (owner[iy[csel], ix[csel]].astype(np.int64) * nb + pix_bin[iy[csel], ix[csel]]) \
        * n_types + codes[csel]
    n = np.bincount(ck, minlength=area.size * n_types).reshape(area.shape[0], nb, n_types)
    out = []
    for k in present.tolist():
        for b in np.flatnonzero(area[k] > 0).tolist():
            for t in range(n_types):
                out.append({"label": k, "cell_type": str(types[t]),
                            "distance_um": (lo + b + 0.5) * bin_um, "n_cells": int(n[k, b, t]),
                            "area_mm2": float(area[k, b]),
                            "density_per_mm2": float(n[k, b, t] / area[k, b])})
    return out
