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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage, optimize, signal
from skimage import transform as sktransform

from ..errors import InputError
from ..geometry import apply_affine, count_points
from .cells import Cells

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
    tissue and cell density after automatic registration.
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
                "score": self.score, "notes": list(self.notes)}


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


def register_auto(
    tissue: np.ndarray,
    cells: Cells | np.ndarray,
    *,
    pixel_size_um: float | tuple[float, float] | None = None,
    scale: float | None = None,
    angle_step_deg: float = 5.0,
    n_starts: int = 3,
) -> Registration:
    """Estimate a similarity transform MSI pixels -> annotation frame without landmarks.

    ``tissue``: (ny, nx) bool, the MSI tissue mask (see :func:`ionmap.regions.maps.tissue_mask`).
    ``cells``: :class:`Cells` or (n, 2) annotation-frame (x, y). The expected scale
    (annotation units per MSI pixel) is ``scale`` if given, else MSI ``pixel_size_um`` /
    ``cells.um_per_unit`` when both are known, else the square root of the ratio of the
    cell-covered area to the tissue area.

    1. All rotations (steps of ``angle_step_deg``), each with its best shift from the FFT
       cross-correlation of tissue and cell density on a coarse grid.
    2. The ``n_starts`` best start Nelder-Mead on the normalised cross-correlation (NCC)
       of the tissue mask and the cell-density image, both Gaussian-smoothed at σ = 4 MSI
       pixels; the best result is refined at σ = 2.
    3. Last, the likelihood of the cells' exact positions under a Poisson process on the
       (0.5 px smoothed) tissue is maximised: sub-pixel, with no binning.

    ``score`` is the final NCC at σ = 1 (1 = perfect match). Assumes the section is not
    mirrored between the two images and that most cells lie on the imaged tissue.
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
    if scale is None:
        scale = _scale_from_area(xy, area)

    span = np.ptp(xy, axis=0) / scale  # MSI pixels
    if span[0] * span[1] > 16 * tissue.size + 10**4:
        raise InputError(source, "cells span far more than the MSI image at the expected "
                                 f"scale ({scale:.4g} annotation units per MSI pixel); check "
                                 "the cell units and pixel sizes")
    yy, xx = np.nonzero(tissue)
    center = np.array([xx.mean(), yy.mean()])
    radius = math.sqrt(area / math.pi)  # px; converts angles and log-scales to pixels
    starts = _coarse_search(tissue, xy, scale, center, angle_step_deg, n_starts)

    oversample = 2.0  # raster pixels per MSI pixel
    step = scale / oversample
    origin = xy.min(axis=0) - 8 * scale
    shape = np.ceil((xy.max(axis=0) + 8 * scale - origin) / step).astype(int)
    ij = np.floor((xy - origin) / step).astype(np.int64)
    counts = count_points(ij, shape).astype(np.float64)
    # Cells per raster pixel in tissue if every cell lies in the tissue: clip there so that
    # dense rings do not outweigh the tissue outline.
    level = len(xy) / (area * oversample**2)

    def matrix_of(start: tuple[float, np.ndarray], p: np.ndarray) -> np.ndarray:
        # p = (angle·radius, log-scale·radius, shift x, shift y): all in MSI pixels at the
        # tissue edge, so Nelder-Mead sees a well-conditioned problem.
        return _similarity(start[0] + p[0] / radius, scale * math.exp(p[1] / radius),
                           center, start[1], p[2:])

    def refine(start, params: np.ndarray, sigma: float) -> tuple[float, np.ndarray]:
        problem = _level(tissue, counts, origin, step, oversample, level, sigma)
        simplex = params + np.vstack([np.zeros(4), sigma * np.eye(4)])
        res = optimize.minimize(lambda p: -problem.ncc(matrix_of(start, p)), params,
                                method="Nelder-Mead",
                                options={"initial_simplex": simplex, "xatol": 0.01,
                                         "fatol": 1e-7, "maxiter": 800})
        return -float(res.fun), res.x

    # Every start at the coarsest smoothing, then only the best one finer.
    fits = [(start, *refine(start, np.zeros(4), 4.0)) for start in starts]
    start, score, params = max(fits, key=lambda f: f[1])
    score, params = refine(start, params, 2.0)
    params = _point_likelihood(tissue, xy, lambda p: matrix_of(start, p), params)
    matrix = matrix_of(start, params)
    score = _level(tissue, counts, origin, step, oversample, level, 1.0).ncc(matrix)
    notes = []
    if score < 0.5:
        notes.append(f"low tissue/cell-density correlation ({score:.2f}): check the result "
                     "or use landmarks")
    return Registration(matrix, "auto", "similarity", score=score,
                        annotation_unit=cells.unit if isinstance(cells, Cells) else None,
                        notes=notes)


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

    def nll(p: np.ndarray) -> float:
        m = matrix_of(p)
        q = apply_affine(np.linalg.inv(m), band)
        v = ndimage.map_coordinates(t, [q[:, 1], q[:, 0]], order=1, mode="constant",
                                    cval=0.0, prefilter=False)
        return -float(np.sum(np.log(outliers + (1 - outliers) * v))) / n + math.log(
            abs(np.linalg.det(m[:2, :2])))

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
    # Local maxima over the circle of angles, best first.
    peaks = [i for i in np.argsort(-scores)
             if scores[i] >= scores[i - 1] and scores[i] >= scores[(i + 1) % len(scores)]]
    starts = []
    for i in peaks[:n_starts]:
        c, s = math.cos(angles[i]), math.sin(angles[i])
        # ref (annotation frame) sits at shifts[i] (MSI); so the tissue centre maps to:
        starts.append((float(angles[i]),
                       ref + scale * np.array([[c, -s], [s, c]]) @ (center - shifts[i])))
    return starts
