"""Plane geometry shared by the region analysis and the synthetic data: affine maps, polygon
rings, points on a pixel grid. NumPy only.

Frames: points are (x, y) rows; pixel (ix, iy) is the square of side 1 centred on integer
(x, y), so a point belongs to pixel ``floor(x + 0.5), floor(y + 0.5)``; images are indexed
``image[iy, ix]``.
"""
from __future__ import annotations

import numpy as np


def apply_affine(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Points (N, 2) mapped through the affine ``matrix`` (2 × 3 or 3 × 3, last row 0 0 1).

    >>> apply_affine(np.array([[2.0, 0, 1], [0, 3.0, -1]]), [[1.0, 1.0]]).tolist()
    [[3.0, 2.0]]
    """
    # Element-wise, not a matrix product: BLAS threads would fight over busy cores for
    # a 2 x 2 product repeated hundreds of times by the optimiser.
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    x, y = xy[:, 0], xy[:, 1]
    (a, b, c), (d, e, f) = matrix[0, :3], matrix[1, :3]
    return np.column_stack([a * x + b * y + c, d * x + e * y + f])


def ring_moments(ring: np.ndarray) -> tuple[float, float, float]:
    """(signed area, centroid x, centroid y) of a closed ring of (x, y) vertices (shoelace
    formula; the last vertex joins the first). The area is positive for a ring that turns
    counter-clockwise when y points up (clockwise on an image, where y points down); a
    degenerate ring has area 0 and the mean of its vertices as centroid.

    >>> ring_moments(np.array([[0.0, 0.0], [2.0, 0.0], [2.0, 1.0], [0.0, 1.0]]))
    (2.0, 1.0, 0.5)
    """
    p = np.asarray(ring, dtype=np.float64)[:, :2]
    if len(p) < 3:
        c = p.mean(axis=0) if len(p) else np.zeros(2)
        return 0.0, float(c[0]), float(c[1])
    x0, y0 = p[:, 0], p[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    cross = x0 * y1 - x1 * y0
    area = float(cross.sum() / 2)
    if area == 0:
        return 0.0, float(x0.mean()), float(y0.mean())
    return area, float(((x0 + x1) * cross).sum() / (6 * area)), float(
        ((y0 + y1) * cross).sum() / (6 * area))


def ring_area(ring: np.ndarray) -> float:
    """Signed area of a ring (see :func:`ring_moments`), in squared coordinate units."""
    return ring_moments(ring)[0]


def nearest_pixel(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ix, iy) int64 of the pixel each (x, y) point falls in (pixel centres at integers).

    >>> [a.tolist() for a in nearest_pixel([[0.49, 0.5], [-0.6, 2.2]])]
    [[0, -1], [1, 2]]
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    return (np.floor(xy[:, 0] + 0.5).astype(np.int64),
            np.floor(xy[:, 1] + 0.5).astype(np.int64))


def pixels_inside(xy: np.ndarray, shape: tuple[int, int]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ix, iy, inside) of the points (x, y) on an image of ``shape`` = (ny, nx): the pixel
    each falls in (:func:`nearest_pixel`) and whether that pixel is on the image, so
    ``image[iy[inside], ix[inside]]`` reads the points' pixels.

    >>> [a.tolist() for a in pixels_inside([[0.2, 1.4], [2.5, 0.0]], (2, 3))]
    [[0, 3], [1, 0], [True, False]]
    """
    ix, iy = nearest_pixel(xy)
    ny, nx = shape
    return ix, iy, (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)


def count_points(ij: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(ny, nx) int64 image counting the points with grid indices ``ij`` (N, 2) as (column,
    row); every index must lie inside ``shape`` = (nx, ny) columns and rows.

    >>> count_points(np.array([[0, 0], [2, 1], [2, 1]]), (3, 2)).tolist()
    [[1, 0, 0], [0, 0, 2]]
    """
    nx, ny = int(shape[0]), int(shape[1])
    ij = np.asarray(ij, dtype=np.int64).reshape(-1, 2)
    return np.bincount(ij[:, 1] * nx + ij[:, 0], minlength=nx * ny).reshape(ny, nx)
