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

Areas are measured the same way (``sd`` sampled 4 × 4 times per pixel near hotspots), and
density = cells / area in cells/mm². Vectorised over cells: one pass per map, no loop over
cells or pixels.

Phenotype of a hotspot, for the chosen cell type (default CD8) with baseline density b
(every threshold is an option; the defaults are no universal cut-off):

- ``inflamed``: inside density ≥ ``scarce_ratio`` · b (default 0.5);
- ``immune-excluded``: inside scarce, rim density ≥ ``rim_ratio`` · b (default 0.5);
- ``immune-desert``: inside and rim scarce;
- ``undetermined``: no core left inside the guard band (a hotspot thinner than twice
  the guard), or no tissue outside the hotspots to give a baseline.

``exclusion_score`` = (rim − inside) / (rim + inside) densities, in [−1, 1] (0 when both
are 0). Its permutation p-value tests whether the cell type avoids the inside in favour of
the rim more than the same number of cells drawn at random among all cells in the tissue
would: random relabelling, drawn exactly as multivariate hypergeometric counts (the same
distribution as shuffling labels, without touching a million cells per permutation).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..geometry import nearest_pixel
from ..params import ImmuneParams

#: Defaults, all options of :func:`immune_context` and the ``hotspots`` command.
DEFAULT_RIM_UM = ImmuneParams.rim_um
DEFAULT_SCARCE_RATIO = ImmuneParams.scarce_ratio
DEFAULT_RIM_RATIO = ImmuneParams.rim_ratio
DEFAULT_PERMUTATIONS = ImmuneParams.n_permutations
CLASSES = ("inflamed", "immune-excluded", "immune-desert", "undetermined")
_SUB = 4  # area samples per pixel side near hotspots
COMPARTMENTS = ("inside", "rim", "outside")


def classify(inside: float, rim: float, baseline: float, *,
             scarce_ratio: float = DEFAULT_SCARCE_RATIO,
             rim_ratio: float = DEFAULT_RIM_RATIO) -> str:
    """Phenotype from densities (any one unit) of the chosen cell type; see the module doc.

    NaN densities (no area to measure them on) give ``undetermined``.
    """
    if not (np.isfinite(inside) and np.isfinite(baseline)):
        return "undetermined"
    if inside > 0 and inside >= scarce_ratio * baseline:
        return "inflamed"
    if rim > 0 and rim >= rim_ratio * baseline:
        return "immune-excluded"
    return "immune-desert"


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

    ``table``: one dict per hotspot (``label``, ``class``, ``inside_density``,
    ``rim_density``, ``outside_density`` of the chosen type in cells/mm², its counts,
    areas in mm², ``exclusion_score``, ``p_value``); ``densities``: long table (label,
    cell_type, compartment, n_cells, area_mm2, density_per_mm2) for every cell type;
    ``curves``: density against signed distance from the edge (label, cell_type,
    distance_um = bin centre, n_cells, area_mm2, density_per_mm2); ``params``: settings.
    """

    table: list[dict]
    densities: list[dict]
    curves: list[dict]
    params: dict


def immune_context(
    labels: np.ndarray | Any,
    cells_xy: np.ndarray,
    cell_types: Sequence[str] | np.ndarray,
    tissue: np.ndarray,
    pixel_size_um: float | tuple[float, float],
    *,
    rim_um: float = DEFAULT_RIM_UM,
    cell_type: str = "CD8",
    edge_guard_um: float | None = None,
    scarce_ratio: float = DEFAULT_SCARCE_RATIO,
    rim_ratio: float = DEFAULT_RIM_RATIO,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
    curve_bin_um: float | None = None,
    curve_max_um: float | None = None,
) -> ImmuneContext:
    """Densities, phenotype and exclusion test of every hotspot in ``labels``.

    ``labels``: (ny, nx) int hotspot labels (0 = none) of one map, or the
    :class:`~ionmap.regions.hotspots.Hotspots` of :func:`find_hotspots`; ``cells_xy``: (n, 2)
    cell positions in MSI pixels (x, y; 0-based pixel centres); ``cell_types``: n labels;
    ``tissue``: (ny, nx) bool; ``pixel_size_um``: MSI pixel size, (x, y) or one number;
    ``rim_um``: rim width outside the edge; ``edge_guard_um``: boundary band left out of
    the inside (default half a pixel); ``curve_bin_um`` / ``curve_max_um``: bin width
    (default one pixel) and reach outside the edge (default 3 × rim) of the distance
    curves. Cells off the tissue are ignored.
    """
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
    guard = 0.5 * min(px) if edge_guard_um is None else float(edge_guard_um)
    if guard < 0:
        raise InputError(None, f"edge guard must be ≥ 0 µm, not {guard}")
    bin_um = curve_bin_um or max(px)
    reach = curve_max_um if curve_max_um is not None else 3 * rim_um
    pixel_mm2 = px[0] * px[1] * 1e-6
    ny, nx = labels.shape
    n_hot = int(labels.max()) if labels.size else 0

    # Cells on the tissue, with their type code, pixel, distance and owner.
    xy = np.asarray(cells_xy, dtype=np.float64).reshape(-1, 2)
    types, codes = np.unique(np.asarray(cell_types, dtype=str), return_inverse=True)
    ix, iy = nearest_pixel(xy)
    on = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    on[on] = tissue[iy[on], ix[on]]
    xy, codes, ix, iy = xy[on], codes[on], ix[on], iy[on]
    n_types = len(types)
    focus = int(np.searchsorted(types, cell_type)) if cell_type in types else None

    sd, owner = edge_distance(labels, px)
    if n_hot:
        sd_cell = ndimage.map_coordinates(sd, [xy[:, 1], xy[:, 0]], order=1, mode="nearest")
    else:
        sd_cell = np.full(len(xy), np.inf)
    own_cell = owner[iy, ix].astype(np.int64)
    comp_cell = _compartment(sd_cell, guard, rim_um)
    # counts[k, compartment, type]; outside is one compartment for all hotspots (row 0).
    sel = comp_cell >= 0
    key_owner = np.where(comp_cell[sel] == 2, 0, own_cell[sel])
    counts = np.bincount((key_owner * 3 + comp_cell[sel]) * n_types + codes[sel],
                         minlength=(n_hot + 1) * 3 * n_types).reshape(n_hot + 1, 3, n_types)
    counts[:, 2] = counts[0, 2]
    areas = _areas(sd, owner, tissue, guard, rim_um, n_hot, px) * pixel_mm2  # (n_hot+1, 3)
    areas[:, 2] = areas[0, 2]

    def dens(n, a):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(a > 0, n / a, np.nan)

    density = dens(counts, areas[:, :, None])  # (n_hot+1, 3, T)
    n_total = int(len(xy))
    n_focus = int((codes == focus).sum()) if focus is not None else 0
    all_counts = counts.sum(axis=2)  # every type, (n_hot+1, 3)
    rng = np.random.default_rng(seed)
    table, densities = [], []
    present = np.unique(labels[labels > 0])
    for k in present.tolist():
        for t in range(n_types):
            for c, comp in enumerate(COMPARTMENTS):
                densities.append({"label": k, "cell_type": str(types[t]), "compartment": comp,
                                  "n_cells": int(counts[k, c, t]),
                                  "area_mm2": float(areas[k, c]),
                                  "density_per_mm2": float(density[k, c, t])})
        if focus is not None:
            f_in, f_rim, f_out = (float(density[k, c, focus]) for c in range(3))
            n_in, n_rim = int(counts[k, 0, focus]), int(counts[k, 1, focus])
        else:
            f_in = f_rim = f_out = 0.0
            n_in = n_rim = 0
        score = float(exclusion_score(np.nan_to_num(f_in), np.nan_to_num(f_rim)))
        table.append({
            "label": k,
            "class": classify(f_in, f_rim, f_out, scarce_ratio=scarce_ratio,
                              rim_ratio=rim_ratio),
            "inside_density": f_in, "rim_density": f_rim, "outside_density": f_out,
            "inside_count": n_in, "rim_count": n_rim,
            "inside_area_mm2": float(areas[k, 0]), "rim_area_mm2": float(areas[k, 1]),
            "exclusion_score": score,
            "p_value": _permutation_p(score, int(all_counts[k, 0]), int(all_counts[k, 1]),
                                      n_total, n_focus, float(areas[k, 0]),
                                      float(areas[k, 1]), n_permutations, rng),
        })
    curves = _curves(sd, owner, tissue, ix, iy, codes, types, present, bin_um,
                     reach, pixel_mm2)
    params = {"cell_type": cell_type, "rim_um": rim_um, "edge_guard_um": guard,
              "scarce_ratio": scarce_ratio, "rim_ratio": rim_ratio,
              "n_permutations": n_permutations, "seed": seed, "pixel_size_um": list(px),
              "curve_bin_um": bin_um, "curve_max_um": reach, "n_cells_in_tissue": n_total,
              "n_cells_not_in_tissue": int((~on).sum()), "cell_type_present": focus is not None}
    return ImmuneContext(table, densities, curves, params)


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
