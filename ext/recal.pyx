"""Mass errors of reference ions, a whole batch per call (compiled as ``ionmap._recal``).

For every spectrum k and reference ion j (exact m/z r_j, Th) the kernel looks for the
highest point within ±``search_ppm`` of where the current model puts it,
r_j·(1 + (a[k] + b[k]·(r_j − m0)/1000)·1e-6), and reports its apex m/z as an error in ppm
of r_j. Profile spectra: the apex must be a local maximum (not a flank cut by the search
window) and its position comes from a parabola through the logarithms of the three top
points (exact for a Gaussian peak), and its FWHM from that parabola's curvature; centroid
spectra: the point itself (no width). Inputs are
validated by ``ionmap.kernels``; this module trusts them.
"""
from libc.math cimport NAN, log, sqrt
from libc.stdint cimport int64_t

from kcommon cimport first_unsorted, gallop_lower, gallop_upper, in_t, mz_t, spectrum_at


cdef inline double log_parabola_apex(const mz_t* x, Py_ssize_t i, double num,
                                     double den) noexcept nogil:
    """Apex m/z of the Gaussian through points i-1, i, i+1 (point i the highest), given
    num = ln y[i-1] − ln y[i+1] and den = ln y[i-1] − 2 ln y[i] + ln y[i+1] (< 0 for a
    peak top)."""
    cdef double d
    if not den < 0.0:
        return x[i]
    d = 0.5 * num / den  # offset in units of the local spacing, within ±0.5
    if d > 0.0:
        return x[i] + d * (x[i + 1] - x[i])
    return x[i] + d * (x[i] - x[i - 1])


def reference_errors(const mz_t[::1] mz, const in_t[::1] intensity, const int64_t[::1] offsets,
                     const int64_t[::1] mz_starts, bint shared, bint checked,
                     const double[::1] ref, const double[::1] shift_a,
                     const double[::1] shift_b, double m0, double search_ppm, bint profile,
                     double[:, ::1] err, double[:, ::1] height, double[:, ::1] width):
    """err[k, j] = apex error (ppm) of reference j in spectrum k, NaN if not found;
    height[k, j] its apex intensity (0 if not found); width[k, j] its FWHM in ppm (profile
    spectra with a Gaussian-shaped top, else NaN). Returns -1 or the batch position of
    the first spectrum whose m/z values are not ascending (then err is untouched)."""
    cdef Py_ssize_t n_spec = offsets.shape[0] - 1, n_ref = ref.shape[0], n_mz = mz.shape[0]
    cdef Py_ssize_t k, j, n, bad, a, b, i, best
    cdef double centre, top, apex, den, num, y0, y1, y2
    cdef const mz_t* x
    cdef const in_t* y
    with nogil:
        bad = -1 if checked else first_unsorted(&mz[0], n_mz, &offsets[0], &mz_starts[0], n_spec, shared)
        if bad < 0:
            for k in range(n_spec):
                n = spectrum_at(k, &mz[0], &intensity[0], &offsets[0], &mz_starts[0], shared,
                                &x, &y)
                a = 0
                for j in range(n_ref):
                    err[k, j] = NAN
                    height[k, j] = 0.0
                    width[k, j] = NAN
                    centre = ref[j] * (1.0 + (shift_a[k] + shift_b[k] * (ref[j] - m0) * 1e-3)
                                       * 1e-6)
                    # references in ascending m/z are found by exponential search from
                    # the previous one (any order is right, ascending is fast)
                    a = gallop_lower(x, n, a, centre * (1.0 - search_ppm * 1e-6))
                    b = gallop_upper(x, n, a, centre * (1.0 + search_ppm * 1e-6))
                    best = -1
                    top = 0.0
                    for i in range(a, b):
                        if y[i] > top:
                            top = y[i]
                            best = i
                    if best < 0:
                        continue
                    if profile:
                        if best == 0 or best == n - 1 or y[best - 1] <= 0 or y[best + 1] <= 0:
                            continue
                        if y[best - 1] > y[best] or y[best + 1] > y[best]:
                            continue  # the window cut a flank of a peak outside it
                        # two logarithms of ratios instead of three of the heights
                        y0, y1, y2 = y[best - 1], y[best], y[best + 1]
                        num = log(y0 / y2)
                        den = log((y0 / y1) * (y2 / y1))
                        apex = log_parabola_apex(x, best, num, den)
                        if den < 0.0:  # ln y'' = -1/sigma² in units of the spacing
                            width[k, j] = (2.3548200450309493 * 0.5 * (x[best + 1] - x[best - 1])
                                           / sqrt(-den) / apex * 1e6)
                    else:
                        apex = x[best]
                    err[k, j] = (apex - ref[j]) / ref[j] * 1e6
                    height[k, j] = top
    return bad
