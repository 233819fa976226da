"""Spatial layout of a synthetic section: tissue shape, metabolic niches, smooth fields.

Frame: the MSI pixel grid, ``(y, x)`` array indices, 0-based; a position ``(x, y)`` in pixel
units has pixel centres at integers. Distances are in pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Niche kinds and the map names in which each must show as a hotspot.
NICHE_MAPS: dict[str, list[str]] = {
    "lactate": ["lactate"],
    "kynurenine": ["kynurenine", "kyn_trp"],
    "lipid": ["lipids"],
}
IMMUNE_CLASSES = ("inflamed", "immune-excluded", "immune-desert")


@dataclass(frozen=True)
class Tissue:
    """A star-shaped section: an ellipse whose radius is modulated by low harmonics.

    Centre ``(cx, cy)`` and semi-axes ``a, b`` in pixels, ``angle`` in radians;
    ``harmonics`` rows are ``(k, amplitude, phase)`` of ``r(θ) = 1 + Σ amp·cos(kθ + phase)``.
    """

    cx: float
    cy: float
    a: float
    b: float
    angle: float
    harmonics: np.ndarray

    def _radius(self, theta: np.ndarray) -> np.ndarray:
        k, amp, phase = self.harmonics.T
        return 1.0 + (amp * np.cos(np.multiply.outer(theta, k) + phase)).sum(axis=-1)

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """True where the point ``(x, y)`` (pixels) is inside the tissue outline."""
        c, s = np.cos(self.angle), np.sin(self.angle)
        u = ((x - self.cx) * c + (y - self.cy) * s) / self.a
        v = (-(x - self.cx) * s + (y - self.cy) * c) / self.b
        return np.hypot(u, v) <= self._radius(np.arctan2(v, u))

    def boundary(self, theta: np.ndarray, inset: float = 0.0) -> np.ndarray:
        """Outline points ``(n, 2)`` as ``(x, y)`` pixels at ellipse angles ``theta``,
        moved ``inset`` pixels towards the centre."""
        r = self._radius(theta)
        u, v = self.a * r * np.cos(theta), self.b * r * np.sin(theta)
        norm = np.hypot(u, v)
        shrink = np.clip((norm - inset) / np.maximum(norm, 1e-9), 0.0, 1.0)
        u, v = u * shrink, v * shrink
        c, s = np.cos(self.angle), np.sin(self.angle)
        return np.column_stack([self.cx + u * c - v * s, self.cy + u * s + v * c])


@dataclass(frozen=True)
class Niche:
    """A planted metabolic niche: centre ``(center_x, center_y)`` and radius in pixels."""

    id: int
    kind: str
    center_x: float
    center_y: float
    radius_px: float
    immune_class: str

    def distance(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Distance (pixels) from ``(x, y)`` to the niche centre."""
        return np.hypot(x - self.center_x, y - self.center_y)

    def weight(self, x: np.ndarray, y: np.ndarray, edge_px: float = 0.6) -> np.ndarray:
        """Soft membership in [0, 1]: 1 inside, 0.5 at the radius, logistic edge."""
        return 0.5 * (1.0 - np.tanh((self.distance(x, y) - self.radius_px) / (2.0 * edge_px)))


@dataclass(frozen=True)
class Section:
    """Tissue mask ``(ny, nx)`` bool, the outline, and the niches (disjoint with rims)."""

    shape: tuple[int, int]
    tissue: Tissue
    mask: np.ndarray
    niches: list[Niche]
    rim_px: float


#: Odd harmonics of a near-symmetric section, relative to the usual ones.
NEAR_SYMMETRIC_ODD = 0.03


def make_tissue(shape: tuple[int, int], rng: np.random.Generator,
                near_symmetric: bool = False) -> tuple[Tissue, np.ndarray]:
    """A random asymmetric section covering about half of the grid, 2 px clear of edges;
    ``near_symmetric``: odd harmonics at 3 % of their usual amplitude, so the outline is
    almost the same after a 180° turn (the same random draws otherwise)."""
    ny, nx = shape
    k = np.arange(1, 6, dtype=float)
    # Low harmonics of a few % make an irregular, asymmetric outline (no 180° symmetry,
    # so rotation can be recovered from the shape).
    amp = rng.uniform(0.5, 1.0, 5) * np.array([0.08, 0.09, 0.07, 0.04, 0.025])
    if near_symmetric:
        amp[::2] *= NEAR_SYMMETRIC_ODD  # k = 1, 3, 5
    harmonics = np.column_stack([k, amp, rng.uniform(0, 2 * np.pi, 5)])
    cx = (nx - 1) / 2 + rng.uniform(-0.03, 0.03) * nx
    cy = (ny - 1) / 2 + rng.uniform(-0.03, 0.03) * ny
    angle = rng.uniform(-0.25, 0.25)
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    scale = 0.95
    while True:  # shrink until the outline is 2 px clear of the grid edges
        tissue = Tissue(cx, cy, 0.5 * nx * scale, 0.5 * ny * scale, angle, harmonics)
        mask = tissue.contains(xx, yy)
        if not (mask[:2].any() or mask[-2:].any() or mask[:, :2].any() or mask[:, -2:].any()):
            return tissue, mask
        scale *= 0.97


def place_niches(
    mask: np.ndarray,
    kinds: list[str],
    rim_px: float,
    rng: np.random.Generator,
    n_niches: int | None = None,
) -> list[Niche] | None:
    """Disjoint niches (with their rims) inside the tissue, at least one of each kind and
    a mix of immune classes; None if fewer than three fit. ``n_niches=0``: none (a
    null section)."""
    if n_niches == 0:
        return []
    tissue_px = int(mask.sum())
    if n_niches is None:
        n_niches = int(np.clip(tissue_px // 1000 + rng.integers(0, 2), 3, 40))
    inside = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    r_max = float(np.clip(min(mask.shape) / 7.0, 4.0, 10.0))
    radii = np.sort(rng.uniform(4.0, r_max, n_niches))[::-1]
    placed: list[tuple[float, float, float]] = []
    for r in radii:
        for shrink in (1.0, 0.85, 0.7):
            rr = max(3.0, r * shrink)
            ys, xs = np.nonzero(inside >= rr + rim_px + 1.5)
            if len(xs) == 0:
                continue
            order = rng.permutation(len(xs))[:400]
            cx = xs[order] + rng.uniform(-0.4, 0.4, len(order))
            cy = ys[order] + rng.uniform(-0.4, 0.4, len(order))
            ok = np.ones(len(order), bool)
            for px, py, pr in placed:
                ok &= np.hypot(cx - px, cy - py) >= rr + pr + 2 * rim_px + 2.0
            hit = np.flatnonzero(ok)
            if len(hit):
                placed.append((float(cx[hit[0]]), float(cy[hit[0]]), float(rr)))
                break
    if len(placed) < 3:
        return None
    n = len(placed)
    kind_list = list(rng.permutation(kinds)) + list(rng.choice(kinds, max(0, n - len(kinds))))
    class_list = list(rng.permutation(IMMUNE_CLASSES)) + list(
        rng.choice(IMMUNE_CLASSES, max(0, n - 3))
    )
    kind_list = [str(kind_list[i]) for i in rng.permutation(n)]
    return [
        Niche(i + 1, kind_list[i], round(x, 3), round(y, 3), round(r, 3), str(class_list[i]))
        for i, (x, y, r) in enumerate(placed)
    ]


def make_section(
    shape: tuple[int, int],
    kinds: list[str],
    rim_px: float,
    rng: np.random.Generator,
    n_niches: int | None = None,
    near_symmetric: bool = False,
) -> Section | None:
    """Tissue and niches for a grid ``(ny, nx)``; None when three niches do not fit
    (after a few tissue outlines were tried)."""
    for _ in range(8):
        tissue, mask = make_tissue(shape, rng, near_symmetric)
        niches = place_niches(mask, kinds, rim_px, rng, n_niches)
        if niches is not None:
            return Section(shape, tissue, mask, niches, rim_px)
    return None


def smooth_field(shape: tuple[int, int], scale_px: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth random field (y, x) with zero mean and unit standard deviation."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), scale_px, mode="reflect")
    return (f - f.mean()) / (f.std() + 1e-12)
