"""Reading many byte ranges of an .ibd at once and decoding them into flat arrays.

Ranges are sorted, neighbours closer than ``MERGE_GAP`` are merged into requests of about
``MAX_REQUEST`` bytes at most, the requests are read with positional reads into one aligned
buffer, and each array is gathered from the buffer with vectorised NumPy (a zero-copy view
when the ranges are adjacent, a strided copy when they are evenly spaced, a boolean
mask when they are in increasing order, an index gather otherwise). No Python loop runs
per spectrum.
"""
from __future__ import annotations

import numpy as np

from ..storage import RangeReader

MERGE_GAP = 64 * 2**10  # read through gaps up to this size rather than issue a new request
MAX_REQUEST = 64 * 2**20  # bound on one request (larger single ranges stay whole)
STAGE_BYTES = 4 * 2**20  # processed mode reads through a buffer of about this size (cache-sized)
_GATHER_WORDS = 2**22  # index-gather at most this many words per step (bounds the index)


def plan(starts: np.ndarray, nbytes: np.ndarray, max_gap: int = MERGE_GAP,
         max_request: int = MAX_REQUEST) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coalesce byte ranges into read requests.

    Returns ``(req_start, req_length, req_of_range)``: requests sorted by offset, and for
    every input range the request that holds it. Overlapping or repeated ranges are fine.
    """
    n = len(starts)
    if n == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    order = np.argsort(starts, kind="stable")
    s = starts[order]
    e = s + nbytes[order]
    reach = np.maximum.accumulate(e)  # end of everything before and including each range
    new = np.ones(n, bool)
    new[1:] = s[1:] > reach[:-1] + max_gap
    group = np.cumsum(new) - 1
    group_start = s[new][group]
    # split long groups every max_request bytes (a request may overrun by one range)
    piece = (s - group_start) // max_request
    new[1:] |= (group[1:] == group[:-1]) & (piece[1:] != piece[:-1])
    first = np.flatnonzero(new)
    req_start = s[first]
    req_end = np.maximum.reduceat(e, first)
    req_of_sorted = np.cumsum(new) - 1
    req_of_range = np.empty(n, np.int64)
    req_of_range[order] = req_of_sorted
    return req_start, req_end - req_start, req_of_range


def read_ranges(reader: RangeReader, starts: np.ndarray, nbytes: np.ndarray,
                max_gap: int = MERGE_GAP) -> tuple[np.ndarray, np.ndarray]:
    """Read byte ranges ``[starts[k], starts[k] + nbytes[k])`` with coalesced requests.

    Returns ``(buf, pos)``: one uint8 buffer and the position of every range in it. Each
    request sits in ``buf`` at the same address modulo 8 as in the file, so arrays aligned
    in the file are aligned in memory. Empty ranges get position 0 and are not read.
    """
    starts = np.asarray(starts, np.int64)
    nbytes = np.asarray(nbytes, np.int64)
    pos = np.zeros(len(starts), np.int64)
    live = np.flatnonzero(nbytes > 0)
    req_start, req_len, req_of = plan(starts[live], nbytes[live], max_gap)
    skew = req_start % 8
    room = (req_len + skew + 7) // 8 * 8
    base = np.zeros(len(room), np.int64)
    np.cumsum(room[:-1], out=base[1:])
    req_pos = base + skew
    total = int(room.sum())
    buf = np.empty(total // 8 + 1, np.uint64).view(np.uint8)  # 8-byte aligned
    reader.read_into(buf, req_start, req_len, req_pos)
    pos[live] = req_pos[req_of] + (starts[live] - req_start[req_of])
    return buf, pos


def gather(buf: np.ndarray, pos: np.ndarray, counts: np.ndarray, dtype: np.dtype,
           out: np.ndarray | None = None) -> np.ndarray:
    """Concatenate segments of ``counts[k]`` items of ``dtype`` found at byte ``pos[k]`` of
    ``buf`` into one flat array (little-endian values as stored), or into ``out``.

    Without ``out``, segments adjacent in ``buf`` and in order come back as a zero-copy
    view. Otherwise: one strided copy for evenly spaced equal segments, a boolean mask over
    the span for segments in increasing order (the processed-mode layout), an index gather
    else.
    """
    dtype = np.dtype(dtype)
    size = dtype.itemsize
    counts = np.asarray(counts, np.int64)
    total = int(counts.sum())
    if out is None:
        out = np.empty(total, dtype)
        allow_view = True
    else:
        allow_view = False
    live = counts > 0
    p, c = pos[live], counts[live]
    if total == 0:
        return out
    if p[0] % size == 0 and (p[1:] == p[:-1] + c[:-1] * size).all():
        view = buf[p[0] : p[0] + total * size].view(dtype)
        if allow_view:  # adjacent and in order (continuous mode, file order): no copy
            return view
        out[...] = view
        return out
    unit = size  # the widest word that every segment start is aligned to
    while unit > 1 and (p % unit).any():
        unit //= 2
    words = buf[: len(buf) // unit * unit].view(f"u{unit}")
    res = out.view(f"u{unit}")
    per = size // unit
    wp, wc = p // unit, c * per
    m = len(wp)
    stride = wp[1] - wp[0] if m > 1 else 0
    if m > 1 and (wc == wc[0]).all() and stride >= wc[0] and (np.diff(wp) == stride).all():
        rows = np.lib.stride_tricks.as_strided(
            words[wp[0] :], shape=(m, int(wc[0])), strides=(int(stride) * unit, unit))
        res.reshape(m, int(wc[0]))[...] = rows
    elif m == 1 or (wp[1:] >= wp[:-1] + wc[:-1]).all():
        # in increasing order without overlap: keep the segments' words, drop the gaps
        gaps = np.empty(m, np.int64)
        gaps[0] = 0
        gaps[1:] = wp[1:] - (wp[:-1] + wc[:-1])
        runs = np.empty(2 * m, np.int64)
        runs[0::2], runs[1::2] = gaps, wc
        keep = np.repeat(np.tile(np.array([False, True]), m), runs)
        res[...] = words[wp[0] : wp[-1] + wc[-1]][keep]  # faster than np.compress here
    else:
        _index_gather(words, wp, wc, res)
    return out


def _index_gather(words: np.ndarray, wp: np.ndarray, wc: np.ndarray, res: np.ndarray) -> None:
    """res = concatenation of words[wp[k] : wp[k] + wc[k]], in steps of bounded size.

    The source index is built with one cumulative sum: ones, with a jump at each segment
    start (cheaper than repeat + arange)."""
    m = len(wp)
    dst = np.zeros(m + 1, np.int64)
    np.cumsum(wc, out=dst[1:])
    cuts = np.unique(np.concatenate(
        [[0], np.searchsorted(dst[1:], np.arange(_GATHER_WORDS, dst[-1], _GATHER_WORDS)), [m]]))
    for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
        if b <= a:
            continue
        lo, hi = int(dst[a]), int(dst[b])
        idx = np.ones(hi - lo, np.int64)
        idx[0] = wp[a]
        idx[dst[a + 1 : b] - lo] = wp[a + 1 : b] - (wp[a : b - 1] + wc[a : b - 1] - 1)
        np.cumsum(idx, out=idx)
        np.take(words, idx, out=res[lo:hi])
