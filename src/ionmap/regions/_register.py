"""Co-registration of the MSI pixel grid with the annotation (histology) frame.

A :class:`Registration` holds a 3×3 matrix that maps homogeneous MSI pixel coordinates
``(x, y, 1)`` (0-based pixel centres, x = column, y = row) to the annotation frame of the
cell file (µm or histology pixels, origin top-left). Two ways to get one:

- :func:`fit_landmarks`: pairs of points (CSV ``msi_x,msi_y,x,y``) fitted as a similarity
  (rotation, uniform scale, shift) or affine transform with scikit-image; reports the RMS
  residual in MSI pixels and annotation units and a leave-one-out RMS (the error to
  expect at a point that was not a landmark).
- :func:`register_auto`: no landmarks; rotation, scale and shift are found by matching the
  MSI tissue mask with the cell-density image (a coarse search over all rotations with
  FFT cross-correlation for the shift, then Nelder-Mead on the normalised
  cross-correlation of the two smoothed images, coarse to fine).
"""
from __future__ import annotations

import csv
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage, optimize, signal
from scipy.spatial import cKDTree
from skimage import transform as sktransform

from .._geometry import apply_affine, count_points, pixels_inside
from ..errors import InputError, IonmapWarning
from ._cells import Cells

_MODELS = {"similarity": sktransform.SimilarityTransform,
           "affine": sktransform.AffineTransform}
_MIN_POINTS = {"similarity": 2, "affine": 3}


@dataclass(frozen=True)
class Registration:
    """A transform from MSI pixels to the annotation frame, with its quality.

    ``matrix``: 3×3, homogeneous MSI (x, y, 1) -> annotation (x, y, 1). ``method``:
    "landmarks", "auto" or "matrix". ``rms_px`` / ``rms_annotation``: RMS landmark
    residual in MSI pixels / annotation units; ``loo_rms_px``: leave-one-out RMS in MSI
    pixels (None with too few landmarks); ``score``: normalised cross-correlation of
    tissue and cell density after automatic registration; ``alternatives``: the best
    distinct other solution of an automatic registration (``rotation_deg``,
    ``mirrored``, ``score``, ``mismatch``) and ``mismatch`` the chosen one's (see
    :func:`register_auto`), for the audit.
    """

    matrix: np.ndarray
    method: str = "matrix"
    model: str = "affine"
    rms_px: float | None = None
    rms_annotation: float | None = None
    loo_rms_px: float | None = None
    n_landmarks: int = 0
    score: float | None = None
    annotation_unit: str | None = None
    notes: list[str] = field(default_factory=list)
    alternatives: list[dict] = field(default_factory=list)
    mismatch: float | None = None

    @property
    def inverse(self) -> np.ndarray:
        """3×3 matrix from the annotation frame to MSI pixels."""
        return np.linalg.inv(self.matrix)

    def to_annotation(self, xy: np.ndarray) -> np.ndarray:
        """(n, 2) MSI pixel (x, y) -> (n, 2) annotation-frame (x, y)."""
        return apply_affine(self.matrix, xy)

    def to_msi(self, xy: np.ndarray) -> np.ndarray:
        """(n, 2) annotation-frame (x, y) -> (n, 2) MSI pixel (x, y), 0-based centres."""
        return apply_affine(self.inverse, xy)

    def parameters(self) -> dict:
        """Rotation (degrees, counter-clockwise as seen with y up), scale(s) and shift."""
        a = self.matrix[:2, :2]
        sx, sy = np.hypot(a[0, 0], a[1, 0]), math.copysign(1.0, np.linalg.det(a)) * np.hypot(
            a[0, 1], a[1, 1])
        return {"rotation_deg": math.degrees(math.atan2(a[1, 0], a[0, 0])),
                "scale": float(np.sqrt(abs(np.linalg.det(a)))),
                "scale_xy": [float(sx), float(sy)],
                "translation": [float(self.matrix[0, 2]), float(self.matrix[1, 2])]}

    def to_dict(self) -> dict:
        """JSON-ready description (registration.json)."""
        return {"method": self.method, "model": self.model,
                "msi_to_annotation": self.matrix.tolist(),
                "annotation_to_msi": self.inverse.tolist(),
                "annotation_unit": self.annotation_unit,
                **self.parameters(),
                "rms_residual_px": self.rms_px, "rms_residual_annotation": self.rms_annotation,
                "loo_rms_px": self.loo_rms_px, "n_landmarks": self.n_landmarks,
                "score": self.score, "mismatch": self.mismatch,
                "alternatives": list(self.alternatives),
                "notes": list(self.notes)}


def _estimate(model: str, src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
    """Least-squares matrix of ``model`` mapping src -> dst, or None if ill-conditioned."""
    cls = _MODELS[model]
    if hasattr(cls, "from_estimate"):  # scikit-image >= 0.26
        tform = cls.from_estimate(src, dst)
        ok = bool(tform)
    else:
        tform = cls()
        ok = tform.estimate(src, dst)
    return np.asarray(tform.params, dtype=np.float64) if ok else None


def read_landmarks(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(msi_xy, annotation_xy), each (n, 2), from a CSV with columns msi_x,msi_y,x,y."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "landmarks file not found")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    need = ("msi_x", "msi_y", "x", "y")
    if not rows or any(c not in rows[0] for c in need):
        raise InputError(path, "landmarks CSV needs columns msi_x,msi_y,x,y and one row per "
                               "point")
    try:
        values = np.array([[float(r[c]) for c in need] for r in rows])
    except (TypeError, ValueError):
        raise InputError(path, "landmarks CSV has a non-numeric value") from None
    if not np.isfinite(values).all():
        raise InputError(path, "landmarks CSV has a non-finite value")
    return values[:, :2], values[:, 2:]


def fit_landmarks(
    landmarks: str | os.PathLike | tuple[np.ndarray, np.ndarray] | np.ndarray,
    model: str = "similarity",
    *,
    annotation_unit: str | None = None,
) -> Registration:
    """Fit MSI pixel -> annotation frame from landmark pairs.

    ``landmarks``: a CSV path (``msi_x,msi_y,x,y``, MSI pixels 0-based, annotation frame),
    a pair of (n, 2) arrays (msi_xy, annotation_xy), or an (n, 4) array. ``model``:
    "similarity" (≥ 2 points) or "affine" (≥ 3). Residuals are reported in MSI pixels
    (annotation points mapped back) and annotation units; the leave-one-out RMS needs at
    least one point more than the minimum.
    """
    source = str(landmarks) if isinstance(landmarks, (str, os.PathLike)) else None
    if model not in _MODELS:
        raise InputError(source, f"unknown registration model {model!r} "
                                 f"(expected {' or '.join(_MODELS)})")
    if source is not None:
        msi, ann = read_landmarks(landmarks)
    elif isinstance(landmarks, tuple):
        msi, ann = (np.asarray(a, dtype=np.float64).reshape(-1, 2) for a in landmarks)
    else:
        arr = np.asarray(landmarks, dtype=np.float64)
        msi, ann = arr[:, :2], arr[:, 2:4]
    n = len(msi)
    if n != len(ann) or n < _MIN_POINTS[model]:
        raise InputError(source, f"a {model} fit needs at least {_MIN_POINTS[model]} landmark "
                                 f"pairs, got {min(n, len(ann))}")
    matrix = _estimate(model, msi, ann) if _spread(msi, model) and _spread(ann, model) else None
    if matrix is None or abs(np.linalg.det(matrix[:2, :2])) < 1e-12:
        raise InputError(source, "landmarks are degenerate (coincident points, or collinear "
                                 "for an affine fit)")
    reg = Registration(matrix, "landmarks", model, n_landmarks=n, annotation_unit=annotation_unit)
    rms_ann = _rms(reg.to_annotation(msi) - ann)
    rms_px = _rms(reg.to_msi(ann) - msi)
    loo = None
    if n > _MIN_POINTS[model]:
        errors = []
        for i in range(n):  # a handful of landmarks: one small fit each
            keep = np.arange(n) != i
            m = _estimate(model, msi[keep], ann[keep])
            if _spread(msi[keep], model) and m is not None \
                    and abs(np.linalg.det(m[:2, :2])) > 1e-12:
                errors.append(apply_affine(np.linalg.inv(m), ann[i]) - msi[i])
        loo = _rms(np.concatenate(errors)) if errors else None
    notes = [] if loo is not None else [
        f"only {n} landmarks: the residual of an exact fit says nothing about its error; "
        f"use at least {_MIN_POINTS[model] + 2}"]
    return Registration(matrix, "landmarks", model, rms_px, rms_ann, loo, n,
                        annotation_unit=annotation_unit, notes=notes)


def _spread(xy: np.ndarray, model: str) -> bool:
    """Points pin the model down: not all coincident, and not collinear for affine."""
    sv = np.linalg.svd(xy - xy.mean(axis=0), compute_uv=False)
    return bool(sv[0] > 0 and (model != "affine" or sv[1] > 1e-9 * sv[0]))


def _rms(d: np.ndarray) -> float:
    d = np.asarray(d).reshape(-1, 2)
    return float(np.sqrt(np.mean(np.sum(d * d, axis=1))))


# ---------------------------------------------------------------------------------------
# Automatic registration


@dataclass
class _AutoProblem:
    """Smoothed tissue and cell-density images and the sampling grid of one level."""

    tissue: np.ndarray  # smoothed tissue at the sample points (flat)
    points: np.ndarray  # (m, 2) MSI pixel (x, y) of the sample points
    density: np.ndarray  # smoothed, clipped cell density raster (annotation frame)
    origin: np.ndarray  # annotation (x, y) of raster edge (0, 0)
    step: float  # annotation units per raster pixel
    tt: float = field(init=False)  # squared norm of ``tissue``

    def __post_init__(self) -> None:
        self.tt = float(np.einsum("i,i->", self.tissue, self.tissue)) or 1.0

    def ncc(self, matrix: np.ndarray) -> float:
        q = apply_affine(matrix, self.points)
        idx = (q - self.origin) / self.step - 0.5  # raster pixel centres are at +0.5
        c = ndimage.map_coordinates(self.density, [idx[:, 1], idx[:, 0]], order=1,
                                    mode="constant", cval=0.0, prefilter=False)
        c = c - c.mean()
        # einsum rather than BLAS dot, for the same reason as in apply_affine
        cc = float(np.einsum("i,i->", c, c))
        return float(np.einsum("i,i->", c, self.tissue)) / math.sqrt(cc * self.tt) if cc else 0.0


def _similarity(theta: float, scale: float, center: np.ndarray, target: np.ndarray,
                shift: np.ndarray) -> np.ndarray:
    """Matrix of p -> scale·R(theta)·(p − center + shift) + target (MSI px -> annotation)."""
    c, s = math.cos(theta), math.sin(theta)
    a = scale * np.array([[c, -s], [s, c]])
    m = np.eye(3)
    m[:2, :2] = a
    m[:2, 2] = target + a @ (shift - center)
    return m


#: Refusal rules of :func:`register_auto` (see there).
AUTO_MIN_SCORE = 0.5
AUTO_MAX_MISMATCH = 0.25
AUTO_MIN_MISFIT_RATIO = 2.0
_MIN_EXTRA_CELLS = 3.0
#: Two candidate transforms are distinct when mirrored differently or rotated this far apart.
_DISTINCT_DEG = 20.0


def register_auto(
    tissue: np.ndarray,
    cells: Cells | np.ndarray,
    *,
    pixel_size_um: float | tuple[float, float] | None = None,
    scale: float | None = None,
    angle_step_deg: float = 5.0,
    n_starts: int = 3,
    mirror: bool = False,
    min_score: float = AUTO_MIN_SCORE,
    max_mismatch: float = AUTO_MAX_MISMATCH,
    min_misfit_ratio: float = AUTO_MIN_MISFIT_RATIO,
) -> Registration:
    """Estimate a similarity transform MSI pixels -> annotation frame without landmarks.

    ``tissue``: (ny, nx) bool, the MSI tissue mask (see :func:`ionmap.regions.tissue_mask`).
    ``cells``: :class:`Cells` or (n, 2) annotation-frame (x, y). The expected scale
    (annotation units per MSI pixel) is ``scale`` if given, else MSI ``pixel_size_um`` /
    ``cells.um_per_unit`` when both are known, else the square root of the ratio of the
    cell-covered area to the tissue area.

    1. All rotations (steps of ``angle_step_deg``), each with its best shift from the FFT
       cross-correlation of tissue and cell density on a coarse grid; with ``mirror``,
       the same for the cells mirrored left-right (a section mounted face down). The
       default assumes the two images show the same face (no mirror): many outlines
       fit their own mirror image within a few cells, so allowing it would refuse them.
    2. The ``n_starts`` best of each handedness start Nelder-Mead on the normalised
       cross-correlation (NCC) of the tissue mask and the cell-density image, both
       Gaussian-smoothed at σ = 4 MSI pixels.
    3. The best fit, the best of the other handedness and the best other rotation (more
       than 20° away: typically the ~180° turn of a near-symmetric section) are each
       refined at σ = 2 and then by maximising the likelihood of the cells' exact
       positions under a Poisson process on the (0.5 px smoothed) tissue: sub-pixel, with
       no binning. Each gets its ``score`` (NCC at σ = 1, 1 = perfect match) and its
       ``mismatch``: the share of cells more than a pixel off the tissue plus the share
       of tissue farther than 4 median cell spacings from any cell (0 = perfect). The one with
       the least mismatch wins.

    With a declared scale (``scale``, or pixel sizes), a fit more than 10 % off it is
    refused too (cells stretched over the tissue: a partial annotation).

    Audit: the result's ``score`` and ``alternatives`` (rotation, mirrored, score,
    mismatch of the best distinct other solution) are reported. The fit is refused with
    :class:`~ionmap.errors.InputError` (asking for landmarks) when it is poor (score
    below ``min_score`` or mismatch above ``max_mismatch``: cells on part of the section
    only, a wrong tissue mask, wrong units), or when the alternative is not clearly worse:
    its mismatch, counted in cells, is below ``min_misfit_ratio`` times the best one's
    plus 3 cells. These rules were calibrated on synthetic sections (asymmetric ones are
    accepted within a pixel; near-symmetric ones are refused or right). A silent wrong
    transform would make every class wrong.
    """
    tissue = np.asarray(tissue, dtype=bool)
    xy = cells.xy if isinstance(cells, Cells) else np.asarray(cells, dtype=np.float64)
    source = cells.source if isinstance(cells, Cells) else None
    area = int(tissue.sum())
    if tissue.ndim != 2 or area < 16:
        raise InputError(None, "automatic registration needs a 2-D tissue mask of at least "
                               "16 pixels")
    if len(xy) < 50:
        raise InputError(source, f"automatic registration needs at least 50 cells, got {len(xy)}")
    if scale is None and pixel_size_um is not None and isinstance(cells, Cells) \
            and cells.um_per_unit:
        scale = float(np.mean(pixel_size_um)) / cells.um_per_unit
    declared = scale is not None
    if scale is None:
        scale = _scale_from_area(xy, area)
    if not (scale > 0 and math.isfinite(scale)):
        raise InputError(source, "automatic registration: cannot estimate the scale of the "
                                 "cells (all cells at one point?)")

    span = np.ptp(xy, axis=0) / scale  # MSI pixels
    if span[0] * span[1] > 16 * tissue.size + 10**4:
        raise InputError(source, "cells span far more than the MSI image at the expected "
                                 f"scale ({scale:.4g} annotation units per MSI pixel); check "
                                 "the cell units and pixel sizes")
    fits = [_AutoFit(tissue, xy, scale, False)]
    if mirror:
        fits.append(_AutoFit(tissue, xy * np.array([-1.0, 1.0]), scale, True))
    # Every start at the coarsest smoothing, best first; then the best one, the best of the
    # other handedness and the best other rotation are finished and compared.
    cands = sorted(((fit, start, *fit.refine(start, np.zeros(4), 4.0))
                    for fit in fits for start in fit.starts(angle_step_deg, n_starts)),
                   key=lambda c: -c[2])
    best = cands[0]
    picks = [best] + [c for c in (
        next((c for c in cands if c[0].mirrored != best[0].mirrored), None),
        next((c for c in cands if c[0] is best[0] and _turn(
            c[0].angle(c[1], c[3]), best[0].angle(best[1], best[3])) > _DISTINCT_DEG),
            None)) if c is not None]
    n_cells = len(xy)
    final = sorted((fit.finish(start, params) for fit, start, _, params in picks),
                   key=lambda f: (f["mismatch"], -f["score"]))
    chosen = final[0]
    other = next((f for f in final[1:] if f["mirrored"] != chosen["mirrored"] or _turn(
        math.radians(f["rotation_deg"]), math.radians(chosen["rotation_deg"])) > _DISTINCT_DEG),
        None)
    keys = ("rotation_deg", "mirrored", "score", "mismatch")
    alternatives = [] if other is None else [{k: other[k] for k in keys}]
    unit = cells.unit if isinstance(cells, Cells) else None

    def describe(f: dict) -> str:
        return (f"rotation {f['rotation_deg']:.1f}°{', mirrored' if f['mirrored'] else ''}, "
                f"score {f['score']:.3f}, mismatch {f['mismatch']:.2%}")

    described = f"best: {describe(chosen)}" + (
        "" if other is None else f"; best distinct alternative: {describe(other)}")
    off = math.sqrt(abs(np.linalg.det(chosen["matrix"][:2, :2]))) / scale
    if declared and max(off, 1 / off) > SCALE_WARN:
        raise InputError(source, f"automatic registration fits only at a scale {off:.3g} "
                                 f"times the declared one ({described}): cells on part of "
                                 "the section only, or wrong pixel sizes? Give landmarks "
                                 "(--landmarks)")
    if chosen["score"] < min_score or chosen["mismatch"] > max_mismatch:
        raise InputError(source, f"automatic registration fits poorly ({described}): cells "
                                 "on part of the section only, a wrong tissue mask or wrong "
                                 "units? Give landmarks (--landmarks)")
    if other is not None and other["mismatch"] * n_cells < (
            min_misfit_ratio * chosen["mismatch"] * n_cells + _MIN_EXTRA_CELLS):
        raise InputError(source, f"automatic registration is ambiguous ({described}): the "
                                 "section looks alike both ways; give landmarks (--landmarks)")
    notes = [f"automatic registration {described}"]
    return Registration(chosen["matrix"], "auto", "similarity", score=chosen["score"],
                        annotation_unit=unit, notes=notes, alternatives=alternatives,
                        mismatch=chosen["mismatch"])


def _turn(a: float, b: float) -> float:
    """Absolute difference of two angles (radians), in degrees within [0, 180]."""
    turn = math.degrees(a - b) % 360.0
    return min(turn, 360.0 - turn)


def _mismatch(tissue: np.ndarray, cells_msi: np.ndarray, reach: float) -> float:
    """Share of the cells more than a pixel off the tissue plus share of the tissue
    farther than ``reach`` MSI pixels (4 median cell spacings) from any cell: 0 when cells
    and tissue coincide."""
    area = int(tissue.sum())
    ix, iy, on = pixels_inside(cells_msi, tissue.shape)
    outside = ndimage.distance_transform_edt(~tissue)
    off = np.ones(len(ix), dtype=bool)
    off[on] = outside[iy[on], ix[on]] > 1.0
    occupied = np.zeros(tissue.shape, dtype=bool)
    occupied[iy[on], ix[on]] = True
    empty = tissue & (ndimage.distance_transform_edt(~occupied) > reach)
    return float(off.mean() + empty.sum() / max(1, area))


class _AutoFit:
    """One handedness of the automatic registration: cells raster and optimisers.

    ``xy`` are the cells in the annotation frame, mirrored (x -> −x) when ``mirrored``;
    matrices are composed back to the true annotation frame by :meth:`matrix`.
    """

    def __init__(self, tissue: np.ndarray, xy: np.ndarray, scale: float, mirrored: bool):
        self.tissue, self.xy, self.scale, self.mirrored = tissue, xy, scale, mirrored
        yy, xx = np.nonzero(tissue)
        area = len(xx)
        self.center = np.array([xx.mean(), yy.mean()])
        self.radius = math.sqrt(area / math.pi)  # px; converts angles, log-scales to pixels
        self.oversample = 2.0  # raster pixels per MSI pixel
        self.step = scale / self.oversample
        self.origin = xy.min(axis=0) - 8 * scale
        shape = np.ceil((xy.max(axis=0) + 8 * scale - self.origin) / self.step).astype(int)
        ij = np.floor((xy - self.origin) / self.step).astype(np.int64)
        self.counts = count_points(ij, shape).astype(np.float64)
        # Cells per raster pixel in tissue if every cell lies in the tissue: clip there so
        # that dense rings do not outweigh the tissue outline.
        self.level = len(xy) / (area * self.oversample**2)
        tree = cKDTree(xy)
        d, _ = tree.query(xy[:: max(1, len(xy) // 20_000)], k=2)
        self.spacing_px = float(np.median(d[:, 1])) / scale  # cell spacing, MSI pixels

    def starts(self, angle_step_deg: float, n_starts: int) -> list[tuple[float, np.ndarray]]:
        return _coarse_search(self.tissue, self.xy, self.scale, self.center, angle_step_deg,
                              n_starts)

    def local(self, start: tuple[float, np.ndarray], p: np.ndarray) -> np.ndarray:
        # p = (angle·radius, log-scale·radius, shift x, shift y): all in MSI pixels at the
        # tissue edge, so Nelder-Mead sees a well-conditioned problem. The log-scale is
        # bounded (a factor e^±3) so the optimiser can never reach a degenerate matrix.
        log_s = float(np.clip(p[1] / self.radius, -3.0, 3.0))
        return _similarity(self.angle(start, p), self.scale * math.exp(log_s),
                           self.center, start[1], p[2:])

    def angle(self, start: tuple[float, np.ndarray], p: np.ndarray) -> float:
        """Rotation (radians) of the candidate ``(start, p)``."""
        return start[0] + p[0] / self.radius

    def matrix(self, start: tuple[float, np.ndarray], p: np.ndarray) -> np.ndarray:
        """MSI pixels -> the true (unmirrored) annotation frame."""
        m = self.local(start, p)
        return np.diag([-1.0, 1.0, 1.0]) @ m if self.mirrored else m

    def problem(self, sigma: float) -> _AutoProblem:
        return _level(self.tissue, self.counts, self.origin, self.step, self.oversample,
                      self.level, sigma)

    def refine(self, start, params: np.ndarray, sigma: float) -> tuple[float, np.ndarray]:
        problem = self.problem(sigma)
        simplex = params + np.vstack([np.zeros(4), sigma * np.eye(4)])
        res = optimize.minimize(lambda p: -problem.ncc(self.local(start, p)), params,
                                method="Nelder-Mead",
                                options={"initial_simplex": simplex, "xatol": 0.01,
                                         "fatol": 1e-7, "maxiter": 800})
        return -float(res.fun), res.x

    def finish(self, start, params: np.ndarray) -> dict:
        """σ = 2 refinement, point likelihood, σ = 1 score: the candidate's final form."""
        _, params = self.refine(start, params, 2.0)
        params = _point_likelihood(self.tissue, self.xy, lambda p: self.local(start, p),
                                   params)
        local = self.local(start, params)
        a = local[:2, :2]
        return {"matrix": self.matrix(start, params), "mirrored": self.mirrored,
                "rotation_deg": math.degrees(math.atan2(a[1, 0], a[0, 0])) % 360.0,
                "score": self.problem(1.0).ncc(local),
                "mismatch": _mismatch(self.tissue, apply_affine(np.linalg.inv(local), self.xy),
                                      max(2.0, 4.0 * self.spacing_px))}


def _level(tissue: np.ndarray, counts: np.ndarray, origin: np.ndarray, step: float,
           oversample: float, level: float, sigma: float) -> _AutoProblem:
    """Images smoothed at ``sigma`` MSI pixels; tissue sampled on a regular grid."""
    ny, nx = tissue.shape
    # Enough points for the precision a smoothing allows, few enough for a few ms per
    # evaluation: ~25k points at σ = 4, 100k at σ = 1.
    stride = max(1, int(math.ceil(math.sqrt(ny * nx * sigma / 100_000))))
    t = ndimage.gaussian_filter(tissue.astype(np.float64), sigma, mode="constant")
    gy, gx = np.mgrid[0:ny:stride, 0:nx:stride]
    t = t[::stride, ::stride].ravel()
    density = ndimage.gaussian_filter(counts, sigma * oversample, mode="constant")
    density = np.minimum(density / level, 1.0)
    return _AutoProblem(t - t.mean(), np.column_stack([gx.ravel(), gy.ravel()]).astype(
        np.float64), density, origin, step)


def _point_likelihood(tissue: np.ndarray, xy: np.ndarray, matrix_of, params: np.ndarray,
                      outliers: float = 0.01, band_px: float = 4.0) -> np.ndarray:
    """Final refinement: maximum likelihood of the cells as a Poisson process on the tissue.

    With intensity ∝ the (slightly smoothed) tissue indicator T mapped into the annotation
    frame, the log-likelihood per cell is mean log(ε + (1 − ε)·T(A⁻¹q)) − 2·log(scale), up
    to constants: every cell is used at its exact position, no binning. Only cells within
    ``band_px`` of the tissue edge (at the starting estimate, good to about a pixel) can
    change their term, so only they are evaluated.
    """
    t = ndimage.gaussian_filter(tissue.astype(np.float64), 0.5, mode="constant")
    edge = ndimage.distance_transform_edt(tissue) + ndimage.distance_transform_edt(~tissue)
    q0 = apply_affine(np.linalg.inv(matrix_of(params)), xy)
    near = ndimage.map_coordinates(edge, [q0[:, 1], q0[:, 0]], order=0, mode="nearest") \
        <= band_px
    band, n = xy[near], len(xy)

    if len(band) == 0:  # no cell near the edge: nothing to refine
        return params

    def nll(p: np.ndarray) -> float:
        m = matrix_of(p)
        det = abs(float(np.linalg.det(m[:2, :2])))
        if not (det > 0 and math.isfinite(det)):
            return math.inf
        q = apply_affine(np.linalg.inv(m), band)
        v = ndimage.map_coordinates(t, [q[:, 1], q[:, 0]], order=1, mode="constant",
                                    cval=0.0, prefilter=False)
        return -float(np.sum(np.log(outliers + (1 - outliers) * v))) / n + math.log(det)

    simplex = params + np.vstack([np.zeros(4), 0.5 * np.eye(4)])
    res = optimize.minimize(nll, params, method="Nelder-Mead",
                            options={"initial_simplex": simplex, "xatol": 0.005,
                                     "fatol": 1e-9, "maxiter": 800})
    return res.x


def _scale_from_area(xy: np.ndarray, tissue_area_px: int) -> float:
    """Annotation units per MSI pixel from the cell-covered area (cells binned ~4 per bin)."""
    span = np.ptp(xy, axis=0)
    h = max(math.sqrt(float(span[0] * span[1]) / len(xy)) * 2.0, 1e-9)
    shape = (np.floor(span / h).astype(int) + 1)
    ij = np.minimum(np.floor((xy - xy.min(axis=0)) / h).astype(np.int64), shape - 1)
    smooth = ndimage.gaussian_filter(count_points(ij, shape).astype(float), 1.0)
    covered = np.count_nonzero(smooth > 0.5 * np.median(smooth[smooth > 0]))
    return math.sqrt(covered * h * h / tissue_area_px)


def _coarse_search(tissue: np.ndarray, xy: np.ndarray, scale: float, center: np.ndarray,
                   angle_step_deg: float, n_starts: int) -> list[tuple[float, np.ndarray]]:
    """Best rotations (radians), each with the annotation point the tissue centre maps to.

    For every candidate rotation the cells are brought into the MSI frame (up to a shift),
    binned on a coarse grid, and the shift comes from the peak of the FFT
    cross-correlation with the coarse tissue image.
    """
    ny, nx = tissue.shape
    f = max(1, int(math.ceil(max(ny, nx) / 96)))  # coarse pixel = f MSI pixels
    sigma = 2.0
    tc = ndimage.gaussian_filter(
        tissue.astype(np.float64), sigma * f, mode="constant")[f // 2::f, f // 2::f]
    tc = tc - tc.mean()
    tnorm = math.sqrt(float((tc * tc).sum()))
    if len(xy) > 200_000:  # plenty for a coarse density image
        xy = xy[np.random.default_rng(0).choice(len(xy), 200_000, replace=False)]
    ref = xy.mean(axis=0)
    rel = (xy - ref) / scale  # MSI pixels, unrotated
    level = len(xy) / float(tissue.sum()) * f * f  # cells per coarse pixel in tissue
    angles = np.deg2rad(np.arange(0.0, 360.0, angle_step_deg))
    scores, shifts = [], []
    for theta in angles:
        c, s = math.cos(theta), math.sin(theta)
        # Inverse rotation (R transposed): annotation offsets -> MSI offsets.
        p = apply_affine(np.array([[c, s, 0.0], [-s, c, 0.0]]), rel)
        lo = p.min(axis=0)
        ij = np.floor((p - lo) / f).astype(np.int64)
        shape = ij.max(axis=0) + 1
        img = count_points(ij, shape)
        img = ndimage.gaussian_filter(img.astype(np.float64), sigma, mode="constant")
        img = np.minimum(img / level, 1.0)
        corr = signal.fftconvolve(tc, img[::-1, ::-1], mode="full")
        k = np.unravel_index(np.argmax(corr), corr.shape)
        norm = math.sqrt(float((img * img).sum())) * tnorm
        scores.append(corr[k] / norm if norm > 0 else 0.0)
        # corr[k] aligns img pixel (0, 0) with tc pixel (k - (img.shape - 1)).
        off = np.array([k[1] - (img.shape[1] - 1), k[0] - (img.shape[0] - 1)], dtype=float)
        # MSI position of the cells' reference point: coarse pixel centres sit at f·i + f//2.
        # MSI position of the cells' reference point (offset 0): coarse pixel i samples MSI
        # coordinate f·i + f//2, and bin j is centred on offset lo + (j + 0.5)·f.
        shifts.append(off * f + f // 2 - lo - 0.5 * f)
    scores = np.asarray(scores)
    # Local maxima over the circle of angles, best first, at least 20° apart.
    peaks = [i for i in np.argsort(-scores)
             if scores[i] >= scores[i - 1] and scores[i] >= scores[(i + 1) % len(scores)]]
    chosen: list[int] = []  # the best maxima, each > 20° from the better ones
    for i in peaks:
        if all(_turn(angles[i], angles[j]) > _DISTINCT_DEG for j in chosen):
            chosen.append(i)
        if len(chosen) == n_starts:
            break
    starts = []
    for i in chosen:
        c, s = math.cos(angles[i]), math.sin(angles[i])
        # ref (annotation frame) sits at shifts[i] (MSI); so the tissue centre maps to:
        starts.append((float(angles[i]),
                       ref + scale * np.array([[c, -s], [s, c]]) @ (center - shifts[i])))
    return starts


# ---------------------------------------------------------------------------------------
# Sanity of a registration against the declared units


#: Fitted / declared scale beyond which a registration warns, and errs.
SCALE_WARN, SCALE_ERROR = 1.1, 1.5
#: Plausible density of annotated cells on tissue (cells/mm²; nuclei are ≥ ~5 µm apart).
DENSITY_RANGE = (10.0, 50_000.0)


def audit_registration(reg: Registration, cells: Cells, cells_msi: np.ndarray,
                       tissue: np.ndarray, pixel_size_um: tuple[float, float],
                       rim_um: float, coverage: np.ndarray | None = None) -> list[str]:
    """Check a registration against the declared units; return the warnings (also
    issued with :func:`warnings.warn`), or raise :class:`InputError` naming the likely
    cause.

    - the fitted scale (annotation units per MSI pixel) against MSI ``pixel_size_um`` /
      ``cells.um_per_unit`` (when the cells' unit is known in µm): off by more than 10 %
      warns, by more than 50 % errs ("landmarks and cells in different units?");
    - the share of cells that ``cells_msi`` (MSI pixels) puts on the tissue: below half
      errs, below 90 % warns;
    - the density of cells on the tissue within ``coverage`` outside 10–50,000 cells/mm²
      warns;
    - a landmark leave-one-out error above half the rim width ``rim_um`` warns (classes
      near a threshold may then follow the registration, see ``registration_stable``).
    """
    notes: list[str] = []
    px_um = float(np.mean(pixel_size_um))
    scale = reg.parameters()["scale"]
    what = {"landmarks": "the landmark fit", "auto": "automatic registration"}.get(
        reg.method, "the registration")
    if cells.um_per_unit:
        expected = px_um / cells.um_per_unit
        ratio = scale / expected
        if max(ratio, 1 / ratio) > SCALE_WARN:
            histo = f", histology pixels of {cells.pixel_size_um:g} µm" \
                if cells.unit == "px" else ""
            msg = (f"{what} has {scale:.4g} {cells.unit} per MSI pixel, but the declared "
                   f"pixel sizes give {expected:.4g} ({px_um:g} µm MSI pixels, cells in "
                   f"{cells.unit}{histo}): {ratio:.3g} times off; landmarks and cells in "
                   "different units?")
            if max(ratio, 1 / ratio) > SCALE_ERROR:
                raise InputError(cells.source, f"{msg} If a declared pixel size is wrong, give "
                                               "it (--pixel-size-um, --cells-pixel-size-um)")
            notes.append(msg)
    else:
        notes.append("the registration's scale is not checked: the histology pixel size is "
                     "unknown (--cells-pixel-size-um)")
    ix, iy, on = pixels_inside(cells_msi, tissue.shape)
    on[on] = tissue[iy[on], ix[on]]
    share = float(on.mean()) if len(on) else 1.0
    if share < 0.5:
        raise InputError(cells.source, f"after {what} only {share:.0%} of the {len(on)} cells "
                                       "fall on the MSI tissue: landmarks and cells in "
                                       "different units, or landmarks of another section?")
    if share < 0.9:
        notes.append(f"after {what} {1 - share:.0%} of the cells fall outside the MSI tissue")
    region = tissue if coverage is None else tissue & coverage
    inside = on.copy()
    inside[on] = region[iy[on], ix[on]]
    area_mm2 = float(region.sum()) * pixel_size_um[0] * pixel_size_um[1] * 1e-6
    if area_mm2 > 0:
        density = inside.sum() / area_mm2
        if not DENSITY_RANGE[0] <= density <= DENSITY_RANGE[1]:
            notes.append(f"{density:.4g} cells/mm² on the annotated tissue is implausible "
                         f"(expected {DENSITY_RANGE[0]:g}–{DENSITY_RANGE[1]:g}): cells and "
                         "MSI pixel sizes in different units?")
    if reg.loo_rms_px is not None and reg.loo_rms_px * px_um > 0.5 * rim_um:
        notes.append(f"the landmarks' leave-one-out error ({reg.loo_rms_px * px_um:.0f} µm) "
                     f"exceeds half the rim width ({rim_um:g} µm): classes may follow the "
                     "registration error (see registration_stable)")
    for n in notes:
        warnings.warn(n, IonmapWarning, stacklevel=2)
    return notes
