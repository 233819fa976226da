# Shared inline helpers of the compiled kernels. This .pxd has no .pyx: every kernel module
# that cimports it gets its own inlined copy, so there is no runtime import between modules.
from libc.stdint cimport int64_t

# m/z and intensity arrays come as float32 or float64, independently of each other.
ctypedef fused mz_t:
    float
    double

ctypedef fused in_t:
    float
    double


cdef inline Py_ssize_t lower_bound(const mz_t* x, Py_ssize_t n, double v) noexcept nogil:
    """First i with x[i] >= v, or n (x ascending)."""
    cdef Py_ssize_t lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if x[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline Py_ssize_t upper_bound(const mz_t* x, Py_ssize_t n, double v) noexcept nogil:
    """First i with x[i] > v, or n (x ascending)."""
    cdef Py_ssize_t lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if x[mid] <= v:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef extern from "descent.h" nogil:
    Py_ssize_t descent_f64(const double* x, Py_ssize_t n)
    Py_ssize_t descent_f32(const float* x, Py_ssize_t n)


cdef inline Py_ssize_t first_descent(const mz_t* x, Py_ssize_t n) noexcept nogil:
    """First i >= 1 where x stops being non-decreasing (NaN counts as a descent), or n
    (SSE2 where available, see descent.h)."""
    if mz_t is double:
        return descent_f64(x, n)
    else:
        return descent_f32(x, n)


cdef inline Py_ssize_t first_unsorted(const mz_t* mz, Py_ssize_t n_mz, const int64_t* offsets,
                                      const int64_t* starts, Py_ssize_t n_spectra,
                                      bint shared) noexcept nogil:
    """Batch position of the first spectrum whose m/z values are not ascending, or -1.

    A shared (continuous-mode) m/z array is scanned once; a spectrum is bad only if its
    length reaches the first descent.
    """
    cdef Py_ssize_t k, p
    if shared:
        p = first_descent(mz, n_mz)
        if p < n_mz:
            for k in range(n_spectra):
                if offsets[k + 1] - offsets[k] > p:
                    return k
        return -1
    for k in range(n_spectra):
        p = offsets[k + 1] - offsets[k]
        if first_descent(mz + starts[k], p) < p:
            return k
    return -1


cdef inline Py_ssize_t spectrum_at(Py_ssize_t k, const mz_t* mz, const in_t* intensity,
                                   const int64_t* offsets, const int64_t* starts, bint shared,
                                   const mz_t** x, const in_t** y) noexcept nogil:
    """Spectrum ``k`` of a batch laid out as :class:`ionmap.batch.SpectrumBatch`: points
    ``x[0]`` to its first m/z (the one shared axis when ``shared``) and ``y[0]`` to its
    first intensity; returns its number of points."""
    x[0] = mz + (0 if shared else starts[k])
    y[0] = intensity + offsets[k]
    return offsets[k + 1] - offsets[k]


cdef inline Py_ssize_t gallop_lower(const mz_t* x, Py_ssize_t n, Py_ssize_t start,
                                    double v) noexcept nogil:
    """lower_bound(x, n, v) found by exponential search from ``start`` (cheap when the
    answer is at or a little after ``start``, as for windows visited in ascending order)."""
    cdef Py_ssize_t lo, hi, step = 1
    if start > n:
        start = n
    if start > 0 and x[start - 1] >= v:
        return lower_bound(x, start, v)
    lo = start
    hi = start
    while hi < n and x[hi] < v:  # invariant: x[i] < v for all i < lo
        lo = hi + 1
        hi = start + step
        step <<= 1
    if hi > n:
        hi = n
    return lo + lower_bound(x + lo, hi - lo, v)


cdef inline Py_ssize_t gallop_upper(const mz_t* x, Py_ssize_t n, Py_ssize_t start,
                                    double v) noexcept nogil:
    """upper_bound(x, n, v) for an answer known to be >= ``start``, by exponential search."""
    cdef Py_ssize_t lo = start, hi = start, step = 1
    while hi < n and x[hi] <= v:  # invariant: x[i] <= v for all i < lo
        lo = hi + 1
        hi = start + step
        step <<= 1
    if hi > n:
        hi = n
    return lo + upper_bound(x + lo, hi - lo, v)
