"""Common m/z axis and binning kernels (compiled as ``ionmap._binning``).

The axis kernels work in the tolerance coordinate u of ``ionmap.kernels`` (one unit = one
tolerance, whatever the analyser), on a grid of ``cells`` cells per unit. Per cell they
count peaks (a spectrum at most once per cell) and sum the peaks' positions inside the cell
in 2**-32 cell units, all in integers: the totals do not depend on the order in which
spectra arrive or accumulators are merged.
"""
from libc.math cimport fabs, floor
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc

from kcommon cimport first_unsorted, in_t, lower_bound, mz_t

cdef double FRAC_SCALE = 4294967296.0  # 2**32
cdef uint64_t FRAC_MAX = 4294967295


cdef inline Py_ssize_t nearest_feature(const double* axis, const double* tol, Py_ssize_t n_feat,
                                       double m) noexcept nogil:
    """Index of the feature nearest to m (the lower one on a tie) if within its tolerance, else -1."""
    cdef Py_ssize_t j = lower_bound(axis, n_feat, m)
    if j == n_feat:
        j -= 1
    elif j > 0 and m - axis[j - 1] <= axis[j] - m:
        j -= 1
    return j if fabs(m - axis[j]) <= tol[j] else -1


cdef inline void bin_spectrum(const mz_t* x, const in_t* y, const Py_ssize_t* feat, Py_ssize_t n,
                              const double* axis, const double* tol, Py_ssize_t n_feat,
                              bint use_max, float* row) noexcept nogil:
    """Add the n points of one spectrum to its row; feat, if given, holds precomputed features.

    The nearest feature never decreases along a spectrum (m/z ascending), so the points of
    one feature are consecutive and are reduced in float64 before one float32 store.
    """
    cdef Py_ssize_t i, f, cur = -1
    cdef double acc = 0, v
    for i in range(n):
        f = feat[i] if feat != NULL else nearest_feature(axis, tol, n_feat, x[i])
        if f < 0:
            continue
        v = y[i]
        if f != cur:
            if cur >= 0:
                row[cur] = <float>acc
            cur = f
            acc = v if use_max else 0.0 + v
        elif use_max:
            if v > acc:
                acc = v
        else:
            acc += v
    if cur >= 0:
        row[cur] = <float>acc


def bin_peaks(const mz_t[::1] mz, const in_t[::1] intensity, const int64_t[::1] offsets,
              const int64_t[::1] mz_starts, bint shared, bint checked,
              const double[::1] axis, const double[::1] tol, bint use_max, float[:, ::1] out):
    """out[k, f] = sum (or max) of spectrum k's points whose nearest feature f is within tol[f].

    out must be zeroed, shape (n_spectra, len(axis)); axis strictly ascending, non-empty.
    Returns -1, or the batch position of the first spectrum with unsorted m/z.
    """
    cdef Py_ssize_t n_spec = offsets.shape[0] - 1, n_feat = axis.shape[0], n_mz = mz.shape[0]
    cdef Py_ssize_t k, i, bad
    cdef Py_ssize_t* feat = NULL
    if shared:
        feat = <Py_ssize_t*>malloc((n_mz + 1) * sizeof(Py_ssize_t))
        if not feat:
            raise MemoryError()
    try:
        with nogil:
            bad = -1 if checked else first_unsorted(&mz[0], n_mz, &offsets[0], &mz_starts[0], n_spec, shared)
            if bad < 0:
                if shared:
                    # continuous mode: one assignment for the whole batch
                    for i in range(n_mz):
                        feat[i] = nearest_feature(&axis[0], &tol[0], n_feat, mz[i])
                for k in range(n_spec):
                    bin_spectrum(&mz[0] + mz_starts[k], &intensity[0] + offsets[k], feat,
                                 offsets[k + 1] - offsets[k], &axis[0], &tol[0], n_feat,
                                 use_max, &out[k, 0])
        return bad
    finally:
        free(feat)


def axis_add(const double[::1] u, const int64_t[::1] offsets, const int64_t[::1] starts,
             bint shared, double cells, int64_t origin, uint32_t[::1] count,
             uint64_t[::1] fracsum):
    """Add a batch of peaks, given by their tolerance coordinate u, to the cell accumulators.

    Cell of a peak: floor(u * cells) - origin (the caller sizes the arrays to cover them).
    Returns -1, or the batch position of the first spectrum with unsorted peaks.
    """
    cdef Py_ssize_t n_spec = offsets.shape[0] - 1, k, i, n, bad
    cdef const double* x
    cdef double v
    cdef int64_t c, prev
    cdef uint64_t q
    with nogil:
        bad = first_unsorted(&u[0], u.shape[0], &offsets[0], &starts[0], n_spec, shared)
        if bad < 0:
            for k in range(n_spec):
                x = &u[0] + starts[k]
                n = offsets[k + 1] - offsets[k]
                prev = -1
                for i in range(n):
                    v = x[i] * cells
                    c = <int64_t>floor(v)
                    if i > 0 and c == prev:
                        continue  # a spectrum counts once per cell
                    prev = c
                    q = <uint64_t>((v - c) * FRAC_SCALE)
                    count[c - origin] += 1
                    fracsum[c - origin] += q if q < FRAC_MAX else FRAC_MAX
    return bad


cdef inline uint64_t window_sum(const uint32_t* count, const uint64_t* fracsum, const char* taken,
                                Py_ssize_t n_cells, int64_t lo, int64_t hi,
                                double* pos_sum) noexcept nogil:
    """Unclaimed peaks in cells lo..hi: their number, and pos_sum = sum of positions - lo."""
    cdef uint64_t tot = 0
    cdef int64_t q
    pos_sum[0] = 0
    for q in range(lo if lo > 0 else 0, hi + 1 if hi < n_cells else n_cells):
        if count[q] and not taken[q]:
            tot += count[q]
            pos_sum[0] += <double>count[q] * (q - lo) + fracsum[q] / FRAC_SCALE
    return tot


def axis_group(const uint32_t[::1] count, const uint64_t[::1] fracsum,
               const int64_t[::1] candidates, int64_t cells, int64_t min_count,
               double[::1] out):
    """Group cells into features; returns their number, positions (in cells) in out[:n].

    Candidates (occupied cells, densest first) in turn: a window of +-1 tolerance (cells
    cells) around the mean position of the unclaimed peaks in it is moved until it stops
    (mean shift, at most 16 steps), then its cells are claimed; a feature of at least
    min_count peaks is kept. out needs room for len(candidates) values.
    """
    cdef Py_ssize_t n_cells = count.shape[0], r, it, n_out = 0
    cdef int64_t c, lo, new_lo, q
    cdef uint64_t tot
    cdef double pos_sum
    cdef char* taken = <char*>calloc(n_cells + 1, 1)
    if not taken:
        raise MemoryError()
    try:
        with nogil:
            for r in range(candidates.shape[0]):
                c = candidates[r]
                if taken[c]:
                    continue
                lo = c - cells
                for it in range(16):
                    tot = window_sum(&count[0], &fracsum[0], taken, n_cells, lo, lo + 2 * cells,
                                     &pos_sum)
                    if tot == 0:
                        break
                    new_lo = <int64_t>floor(lo + pos_sum / tot) - cells
                    if new_lo == lo:
                        break
                    lo = new_lo
                tot = window_sum(&count[0], &fracsum[0], taken, n_cells, lo, lo + 2 * cells,
                                 &pos_sum)
                for q in range(lo if lo > 0 else 0,
                               lo + 2 * cells + 1 if lo + 2 * cells < n_cells else n_cells):
                    taken[q] = 1
                if tot > 0 and tot >= <uint64_t>min_count:
                    out[n_out] = lo + pos_sum / tot
                    n_out += 1
        return n_out
    finally:
        free(taken)
