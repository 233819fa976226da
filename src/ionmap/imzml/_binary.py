"""Reading many byte ranges of an .ibd at once and decoding them into flat arrays.

Ranges are sorted, neighbours closer than ``MERGE_GAP`` are merged into requests of about
``MAX_REQUEST`` bytes at most, the requests are read with positional reads into one aligned
buffer, and each array is gathered from the buffer by a compiled kernel (``ionmap._gather``:
one ``memcpy`` per range in a C loop), or is a zero-copy view when its ranges are adjacent.
The same module checks the decoded values (m/z ascending and finite, intensities finite).
No Python loop runs per spectrum. Processed-mode spectra of a local file skip the buffer
(:func:`read_spectra`: positional reads of many buffers straight into the batch arrays, and
the checks, in one compiled call), and so does one spectrum per call (:func:`read_spectrum`).
"""
from __future__ import annotations

import threading

import numpy as np

from .. import _gather
from .._files import RangeReader

MERGE_GAP = 64 * 2**10  # read through gaps up to this size rather than issue a new request
MAX_REQUEST = 64 * 2**20  # bound on one request (larger single ranges stay whole)
STAGE_BYTES = 4 * 2**20  # processed mode reads and checks about this much at a time (cache-sized)
# Largest read buffer a thread keeps for reuse. A fresh large buffer is mapped and page-faulted
# in on every read when glibc does not recycle it (e.g. dask workers run with
# MALLOC_TRIM_THRESHOLD_ set, which freezes malloc's mmap threshold).
SCRATCH_BYTES = 4 * STAGE_BYTES
_scratch = threading.local()


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
                max_gap: int = MERGE_GAP, *,
                scratch: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Read byte ranges ``[starts[k], starts[k] + nbytes[k])`` with coalesced requests.

    Returns ``(buf, pos)``: one uint8 buffer and the position of every range in it. Each
    request sits in ``buf`` at the same address modulo 8 as in the file, so arrays aligned
    in the file are aligned in memory. Empty ranges get position 0 and are not read.

    With ``scratch`` the buffer (up to ``SCRATCH_BYTES``) is the calling thread's reusable
    one, overwritten by its next ``scratch`` read: for callers that copy the values out
    (:func:`gather` with ``out``) before reading again.
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
    buf = _buffer(total // 8 + 1, scratch)
    reader.read_into(buf, req_start, req_len, req_pos)
    pos[live] = req_pos[req_of] + (starts[live] - req_start[req_of])
    return buf, pos


def _buffer(words: int, scratch: bool) -> np.ndarray:
    """An 8-byte aligned uint8 buffer of ``words`` 8-byte words: fresh, or with ``scratch``
    a view of the thread's kept buffer (grown as needed up to ``SCRATCH_BYTES``)."""
    if not scratch or words * 8 > SCRATCH_BYTES:
        return np.empty(words, np.uint64).view(np.uint8)
    kept = getattr(_scratch, "buf", None)
    if kept is None or len(kept) < words:
        kept = _scratch.buf = np.empty(max(words, STAGE_BYTES // 8), np.uint64)
    return kept[:words].view(np.uint8)


def gather(buf: np.ndarray, pos: np.ndarray, counts: np.ndarray, dtype: np.dtype,
           out: np.ndarray | None = None) -> np.ndarray:
    """Concatenate segments of ``counts[k]`` items of ``dtype`` found at byte ``pos[k]`` of
    ``buf`` into one flat array (little-endian values as stored), or into ``out`` (a
    contiguous 1-D array of ``dtype`` and the total length).

    Without ``out``, segments adjacent in ``buf`` and in order come back as a zero-copy view
    of ``buf``. Otherwise the compiled kernel copies every segment with ``memcpy`` (any order
    and alignment).
    """
    dtype = np.dtype(dtype)
    size = dtype.itemsize
    counts = np.ascontiguousarray(counts, np.int64)
    pos = np.ascontiguousarray(pos, np.int64)
    if out is None:
        live = counts > 0
        p, c = pos[live], counts[live]
        if len(p) and p[0] % size == 0 and (p[1:] == p[:-1] + c[:-1] * size).all():
            # adjacent and in order (continuous mode, file order): no copy
            return buf[p[0] : p[0] + int(c.sum()) * size].view(dtype)
        out = np.empty(int(counts.sum()), dtype)
    _gather.gather_bytes(buf, pos, counts, size, out.view(np.uint8))
    return out


def check(mz: np.ndarray | None, offsets: np.ndarray, intensity: np.ndarray | None) -> np.ndarray:
    """First failures of the validity checks of spectra ``offsets`` in flat arrays.

    Returns int64 ``[descent, first, last, intensity]``, each a point index or -1: the first
    m/z value not >= its predecessor within its spectrum (out of order, or NaN), the first
    spectrum whose first / last m/z value is not finite, the first NaN or infinite
    intensity (float dtypes only). ``None`` skips that array's checks.
    """
    found = np.full(4, -1, np.int64)
    if mz is not None:
        found[:3] = _gather.mz_problems(mz, np.ascontiguousarray(offsets, np.int64))
    if intensity is not None and intensity.dtype.kind == "f":
        found[3] = _gather.first_nonfinite(intensity)
    return found


def read_spectrum(reader: RangeReader, mz_start: int, mz: np.ndarray | None,
                  intensity_start: int, intensity: np.ndarray,
                  ahead: _gather.ReadAhead | None = None) -> np.ndarray | None:
    """Fill ``intensity`` (and ``mz`` unless None) with the values stored from byte
    ``intensity_start`` (``mz_start``) of the file on, and check them as :func:`check` does.
    Returns None when every check passes, else :func:`check`'s failures.

    A local file is read and checked by one compiled call (``_gather.read_spectrum``,
    through the calling thread's read-ahead buffer ``ahead`` if given); a URL, or a read
    that fails there, goes through ``reader.read_into``, which raises the error naming the
    file.
    """
    fd = reader.descriptor()
    if fd is not None:
        try:
            found = _gather.read_spectrum(fd, ahead, mz_start, mz, intensity_start, intensity)
        except OSError:
            pass  # read again below: the reader's error names the file
        else:
            return None if found is None else np.array(found, np.int64)
    for start, out in ((intensity_start, intensity), (mz_start, mz)):
        if out is not None and out.size:
            reader.read_into(out.view(np.uint8), np.array([start]), np.array([out.nbytes]),
                             np.zeros(1, np.int64))
    found = check(mz, np.array([0, intensity.size]), intensity)
    return found if (found >= 0).any() else None


def read_spectra(reader: RangeReader, intensity_start: np.ndarray, mz_start: np.ndarray,
                 offsets: np.ndarray, intensity: np.ndarray, mz: np.ndarray) -> np.ndarray:
    """Fill ``intensity`` and ``mz`` with spectra k = 0 .. m-1 (``offsets``: m + 1 point
    offsets from 0; the values stored from file bytes ``intensity_start[k]`` and
    ``mz_start[k]``) and check them as :func:`check` does, returning its failures.

    A local file is read straight into the arrays, ranges in file order and neighbours
    closer than ``MERGE_GAP`` in one system call, and checked in one compiled call
    (``_gather.read_spectra``); a URL, or a read that fails there, goes through
    :func:`read_ranges` and :func:`gather`, which raise the error naming the file."""
    m = len(offsets) - 1
    starts = np.concatenate([intensity_start, mz_start]).astype(np.int64, copy=False)
    fd = reader.descriptor()
    if fd is not None:
        order = np.argsort(starts, kind="stable")
        try:
            found = _gather.read_spectra(fd, starts, order, offsets, intensity, mz, MERGE_GAP)
        except OSError:
            pass  # read again below: the reader's error names the file
        else:
            return np.full(4, -1, np.int64) if found is None else np.array(found, np.int64)
    lengths = np.diff(offsets)
    nbytes = np.concatenate([lengths * intensity.itemsize, lengths * mz.itemsize])
    buf, pos = read_ranges(reader, starts, nbytes, scratch=True)
    gather(buf, pos[:m], lengths, intensity.dtype, out=intensity)
    gather(buf, pos[m:], lengths, mz.dtype, out=mz)
    return check(mz, offsets, intensity)


def read_ahead(local: threading.local) -> _gather.ReadAhead:
    """The calling thread's read-ahead buffer kept in ``local`` (made on first use)."""
    try:
        return local.buffer
    except AttributeError:
        local.buffer = _gather.ReadAhead()
        return local.buffer
