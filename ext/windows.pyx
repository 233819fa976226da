"""Window sums for ion images, a whole batch per call (compiled as ``ionmap._windows``).

A point counts in window k iff lo[k] <= mz <= hi[k]. Sums accumulate in float64 in point
order, so they equal a sequential float64 reference bit for bit. Every kernel of ionmap
scans the m/z order of its batch first (unsorted values would give wrong sums) unless
``checked`` says the reader (or a kernel) has already made sure of it.
"""
from libc.math cimport INFINITY, fabs
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

from kcommon cimport (first_unsorted, gallop_lower, gallop_upper, in_t, lower_bound, mz_t,
                     spectrum_at, upper_bound)


cdef inline double reduce_range(const in_t* y, Py_ssize_t a, Py_ssize_t b, bint use_max) noexcept nogil:
    """Sum (or max) of y[a:b] in float64, in order; 0 if a >= b."""
    cdef Py_ssize_t i
    cdef double acc
    if a >= b:
        return 0.0
    if use_max:
        acc = -INFINITY
        for i in range(a, b):
            if y[i] > acc:
                acc = y[i]
        return acc
    acc = 0.0
    for i in range(a, b):
        acc += <double>y[i]
    return acc


def window_sums(const mz_t[::1] mz, const in_t[::1] intensity, const int64_t[::1] offsets,
                const int64_t[::1] mz_starts, bint shared, bint checked,
                const double[::1] lo, const double[::1] hi, bint use_max, double[:, ::1] out):
    """out[k, w] = sum (or max) of spectrum k's intensities with lo[w] <= mz <= hi[w].

    With a shared m/z array (continuous mode) each window's index range is found once for
    the batch. Returns -1, or the batch position of the first spectrum whose m/z values are
    not ascending (then out is untouched).
    """
    cdef Py_ssize_t n_spec = offsets.shape[0] - 1, n_win = lo.shape[0], n_mz = mz.shape[0]
    cdef Py_ssize_t k, q, n, bad, a, b
    cdef const mz_t* x
    cdef const in_t* y
    cdef Py_ssize_t* first = NULL
    cdef Py_ssize_t* last = NULL
    if shared:
        first = <Py_ssize_t*>malloc((n_win + 1) * sizeof(Py_ssize_t))
        last = <Py_ssize_t*>malloc((n_win + 1) * sizeof(Py_ssize_t))
        if not first or not last:
            free(first)
            free(last)
            raise MemoryError()
    try:
        with nogil:
            bad = -1 if checked else first_unsorted(&mz[0], n_mz, &offsets[0], &mz_starts[0], n_spec, shared)
            if bad >= 0:
                pass
            elif shared:
                for q in range(n_win):
                    first[q] = lower_bound(&mz[0], n_mz, lo[q])
                    last[q] = upper_bound(&mz[0], n_mz, hi[q])
                for k in range(n_spec):
                    n = spectrum_at(k, &mz[0], &intensity[0], &offsets[0], &mz_starts[0],
                                    shared, &x, &y)
                    for q in range(n_win):
                        # a spectrum shorter than the shared array uses its first n values
                        out[k, q] = reduce_range(y, first[q] if first[q] < n else n,
                                                 last[q] if last[q] < n else n, use_max)
            else:
                for k in range(n_spec):
                    n = spectrum_at(k, &mz[0], &intensity[0], &offsets[0], &mz_starts[0],
                                    shared, &x, &y)
                    for q in range(n_win):
                        a = lower_bound(x, n, lo[q])
                        b = gallop_upper(x, n, a, hi[q])  # windows are narrow
                        out[k, q] = reduce_range(y, a, b, use_max)
        return bad
    finally:
        free(first)
        free(last)


def window_sums_shifted(const mz_t[::1] mz, const in_t[::1] intensity,
                        const int64_t[::1] offsets, const int64_t[::1] mz_starts, bint shared,
                        bint checked, const double[::1] lo, const double[::1] hi,
                        const int64_t[::1] order, const double[::1] shift_a,
                        const double[::1] shift_b, double m0, bint use_max, double[:, ::1] out):
    """Window sums with a per-spectrum mass shift: out[k, w] sums spectrum k's points with
    lo[w]·f <= mz <= hi[w]·f, f = 1 + (a[k] + b[k]·(c[w] − m0)/1000)·1e-6, c[w] the window
    centre (Th). Windows are visited in ``order`` (ascending lo) and located by exponential
    search from the previous one, so many narrow windows cost about one pass over the
    points. With zero shifts the sums equal :func:`window_sums` bit for bit.

    Returns -1, or the batch position of the first spectrum whose m/z values are not
    ascending (then out is untouched).
    """
    cdef Py_ssize_t n_spec = offsets.shape[0] - 1, n_win = lo.shape[0], n_mz = mz.shape[0]
    cdef Py_ssize_t k, q, w, n, bad, a, b, pos
    cdef double f, c
    cdef const mz_t* x
    cdef const in_t* y
    with nogil:
        bad = -1 if checked else first_unsorted(&mz[0], n_mz, &offsets[0], &mz_starts[0], n_spec, shared)
        if bad < 0:
            for k in range(n_spec):
                n = spectrum_at(k, &mz[0], &intensity[0], &offsets[0], &mz_starts[0], shared,
                                &x, &y)
                pos = 0
                for q in range(n_win):
                    w = order[q]
                    c = 0.5 * (lo[w] + hi[w])
                    if (shift_a[k] == 0.0 and shift_b[k] == 0.0) or not (
                            fabs(lo[w]) < INFINITY and fabs(hi[w]) < INFINITY):
                        f = 1.0  # unshifted, or an unbounded window such as the TIC
                    else:
                        f = 1.0 + (shift_a[k] + shift_b[k] * (c - m0) * 1e-3) * 1e-6
                    a = gallop_lower(x, n, pos, lo[w] * f)
                    pos = a
                    b = gallop_upper(x, n, a, hi[w] * f)
                    out[k, w] = reduce_range(y, a, b, use_max)
    return bad
