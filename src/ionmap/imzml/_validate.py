"""Vectorised checks that every spectrum of an opened file can be placed and read."""
from __future__ import annotations

import uuid as uuidlib
from collections.abc import Mapping

import numpy as np

from ..errors import (
    ImzMLFormatError,
    TruncatedIbdError,
    UnsupportedImzMLError,
    UUIDMismatchError,
)

#: Largest pixel grid side accepted (1 m at 1 µm pixels): a position or declared size
#: beyond it is corrupt metadata, and would make a grid no image can be allocated for.
MAX_GRID_SIDE = 2**20


def grid(max_count: tuple[int, int] | None, coordinates: np.ndarray) -> tuple[int, int]:
    """(nx, ny): the declared max count of pixels, grown to cover every position."""
    nx, ny = (int(v) for v in coordinates[:, :2].max(axis=0))
    if max_count is not None:
        nx, ny = max(nx, max_count[0]), max(ny, max_count[1])
    return nx, ny


def check_uuid(declared: str | None, head: bytes, url: str, ibd_url: str) -> None:
    """The .ibd's first 16 bytes (``head``) are the UUID the XML declares."""
    if declared is not None and uuidlib.UUID(declared).bytes != head:
        raise UUIDMismatchError(
            ibd_url, f"its UUID {uuidlib.UUID(bytes=head)} differs from {declared} in {url}: "
                     "the two files do not belong together")


def validate(url: str, ibd_url: str, ibd_size: int, max_count: tuple[int, int] | None,
             dtypes: Mapping[str, np.dtype], arrays: Mapping[str, np.ndarray]) -> None:
    """Positions on the grid (2-D, 1 .. MAX_GRID_SIDE, no duplicates) and every array
    inside the .ibd (``ibd_size`` bytes); ``dtypes``: the ``mz`` and ``intensity`` dtypes."""
    xyz = arrays["coordinates"]
    z = xyz[:, 2]
    if (z > 1).any() or (z != z[0]).any():
        i = int(np.flatnonzero((z > 1) | (z != z[0]))[0])
        raise UnsupportedImzMLError(url, f"3-D data (spectrum {i} has position z = {z[i]}) "
                                         "is not supported")
    x, y = xyz[:, 0], xyz[:, 1]
    outside = (x < 1) | (y < 1)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ImzMLFormatError(url, f"spectrum {i} at position x={x[i]}, y={y[i]} lies outside "
                                    "the pixel grid (positions are 1-based)")
    huge = (x > MAX_GRID_SIDE) | (y > MAX_GRID_SIDE)
    if huge.any():
        i = int(np.flatnonzero(huge)[0])
        raise ImzMLFormatError(url, f"spectrum {i} at position x={x[i]}, y={y[i]} lies beyond "
                                    f"the largest supported grid ({MAX_GRID_SIDE} pixels a side)")
    if max_count is not None and max(max_count) > MAX_GRID_SIDE:
        nx, ny = max_count
        raise ImzMLFormatError(url, f"declared grid of {nx} x {ny} pixels (x, y) exceeds the "
                                    f"largest supported grid ({MAX_GRID_SIDE} pixels a side)")
    nx, _ = grid(max_count, xyz)
    linear = (y.astype(np.int64) - 1) * nx + (x - 1)  # int64: up to 2**40 pixels
    order = np.argsort(linear, kind="stable")
    ordered = linear[order]
    same = np.flatnonzero(ordered[1:] == ordered[:-1])
    del ordered, linear
    if len(same):
        a, b = sorted(order[[same[0], same[0] + 1]].tolist())
        raise ImzMLFormatError(url, f"spectra {a} and {b} share position x={x[a]}, y={y[a]}")
    for kind in ("mz", "intensity"):
        lengths, offsets = arrays[f"{kind}_lengths"], arrays[f"{kind}_offsets"]
        label = "m/z" if kind == "mz" else "intensity"
        if (lengths < 0).any():
            i = int(np.flatnonzero(lengths < 0)[0])
            raise ImzMLFormatError(url, f"spectrum {i}: negative {label} array length")
        size = np.dtype(dtypes[kind]).itemsize
        # offset + length * size > ibd_size, written so that no int64 product can overflow
        beyond = (lengths > 0) & ((offsets < 0) | (offsets > ibd_size)
                                  | (lengths > (ibd_size - np.clip(offsets, 0, ibd_size)) // size))
        if beyond.any():
            i = int(np.flatnonzero(beyond)[0])
            end = int(offsets[i]) + int(lengths[i]) * size
            raise TruncatedIbdError(
                ibd_url, f"spectrum {i}'s {label} array (bytes {offsets[i]}..{end}) reaches "
                         f"beyond the end of the file ({ibd_size} bytes): truncated .ibd?")
    if arrays["mz_lengths"] is not arrays["intensity_lengths"]:
        differ = arrays["mz_lengths"] != arrays["intensity_lengths"]
        if differ.any():
            i = int(np.flatnonzero(differ)[0])
            raise ImzMLFormatError(url, f"spectrum {i}: {arrays['mz_lengths'][i]} m/z values "
                                        f"but {arrays['intensity_lengths'][i]} intensities")
