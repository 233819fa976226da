"""Split an image into spatial bands aligned to the store's shards.

A band is a run of whole image rows, ``[y0, y1)`` in 0-based pixel rows, that is exactly
one shard tall in every array the band task writes. No two bands touch the same shard, so
band tasks can run in any order, on any worker, any number of times (idempotent).

The band height is a function of the data only (image size, number of planes, .ibd size),
never of the number of workers, so a resumed run on another machine finds the same bands.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..store import TILE, Layout

#: Aim for bands of about this much input (.ibd bytes), so big files give many tasks.
TARGET_BAND_INPUT_BYTES = 128 * 2**20
#: Upper bound of one band's output block (all planes, float32), which bounds task memory.
MAX_BAND_BLOCK_BYTES = 96 * 2**20
#: Bands are at least this tall unless memory forbids it (fewer, larger shard objects).
MIN_BAND_ROWS = 16


def choose_band_rows(
    shape: tuple[int, int],
    n_planes: int,
    input_bytes: int,
    *,
    target_band_input_bytes: int = TARGET_BAND_INPUT_BYTES,
    max_block_bytes: int = MAX_BAND_BLOCK_BYTES,
) -> int:
    """Rows per band for an image of ``shape`` (ny, nx) pixels.

    Args:
        n_planes: float32 planes one band task holds (targets + features + TIC etc.).
        input_bytes: size of the .ibd; bands of about ``target_band_input_bytes`` input
            give enough tasks to share between workers without tiny shards.
        max_block_bytes: cap on ``n_planes × rows × width × 4`` (bounds task memory).
    """
    ny, nx = shape
    width = math.ceil(nx / min(TILE, max(nx, 1))) * min(TILE, max(nx, 1))
    by_memory = max(1, max_block_bytes // max(1, n_planes * width * 4))
    wanted_bands = max(1, math.ceil(input_bytes / target_band_input_bytes))
    by_work = max(MIN_BAND_ROWS, math.ceil(ny / wanted_bands))
    rows = min(TILE, by_memory, by_work)
    if rows >= 8:
        rows = min(by_memory, math.ceil(rows / 8) * 8, TILE)  # tidy multiples of 8
    return max(1, min(rows, ny))


@dataclass(frozen=True)
class Band:
    """One band task's share of the image.

    Attributes:
        index: band number (0-based, top to bottom).
        y0, y1: its rows [y0, y1), 0-based pixel rows of level 0.
        spectra: int64 indices of the spectra whose pixel lies in the band, in file order.
    """

    index: int
    y0: int
    y1: int
    spectra: np.ndarray


def plan_bands(coordinates: np.ndarray, layout: Layout) -> list[Band]:
    """Assign every spectrum to the band holding its pixel.

    ``coordinates`` is the file's (N, 3) array of 1-based (x, y, z); spectrum ``i`` lands at
    image[y - 1, x - 1]. Bands without spectra are included (they have nothing to read).
    """
    y = np.asarray(coordinates)[:, 1].astype(np.int64) - 1
    band_of = y // layout.band_rows
    order = np.argsort(band_of, kind="stable")  # stable: file order within a band
    bounds = np.searchsorted(band_of[order], np.arange(layout.n_bands + 1))
    bands = []
    for b in range(layout.n_bands):
        y0, y1 = layout.band_range(b)
        bands.append(Band(b, y0, y1, order[bounds[b] : bounds[b + 1]].astype(np.int64)))
    return bands
