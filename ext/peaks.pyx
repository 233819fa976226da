"""Peak picking of profile spectra, a whole batch per call or one spectrum per call
(compiled as ``ionmap._peaks``).

Per spectrum: a robust noise level (median and MAD of the intensities, for the whole
spectrum or per window), local maxima above ``median + snr * sigma`` that are carried by at
least ``min_points`` points above that threshold descending from the apex and that are not
noise bumps on a higher peak's flank (valley test), a sub-sample apex, optional suppression
of weaker peaks closer than a minimum separation. Inputs are validated by
``ionmap.kernels``; this module trusts them.
"""
cimport numpy as cnp
from libc.math cimport exp, fabs, log
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc, qsort
from libc.string cimport memcpy

from kcommon cimport first_descent, first_unsorted, in_t, mz_t

cnp.import_array()

# sigma of normal noise = 1.4826 * MAD
cdef double MAD_TO_SIGMA = 1.482602218505602
# the gauss fit uses at most this many points on each side of the apex
cdef Py_ssize_t FIT_HALF_WIDTH = 8
# how far (points) the valley test looks for a higher maximum
cdef Py_ssize_t VALLEY_REACH = 256

# apex modes (also visible from Python)
cpdef enum ApexMode:
    APEX_NONE = 0
    APEX_PARABOLA = 1
    APEX_GAUSS = 2


cdef struct Settings:
    double snr
    bint local_noise
    Py_ssize_t window       # points per noise window (local mode)
    Py_ssize_t sample       # at most this many points per median/MAD estimate
    Py_ssize_t min_points   # support: points above the threshold descending from the apex
    double min_sep          # minimum separation, 0 = off
    bint sep_ppm            # min_sep in ppm of m/z (else in points)
    int apex
    bint area


cdef struct Ranked:
    double key
    Py_ssize_t idx


cdef struct Scratch:
    double* buf        # noise sample (sample)
    double* thr        # per-point threshold, local mode (max_n)
    double* band       # per-point snr * sigma, local mode (max_n)
    double* blk_t      # per-window threshold (max_n // window + 1)
    double* blk_b      # per-window snr * sigma
    double* blk_c      # window centres (max_n // window + 1)
    double* c_mz       # candidate apex m/z (max_n // 2 + 1)
    double* c_val      # candidate height or area
    double* c_key      # candidate priority for separation: apex sample intensity
    int64_t* c_pos     # candidate apex index
    char* c_drop
    Ranked* order


cdef double select_kth(double* a, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """k-th smallest of a[0:n] (0-based), reordering a.

    Quickselect with a median-of-3 pivot and a branch-free Lomuto partition (no branch
    mispredictions in the inner loop); insertion sort for short ranges.
    """
    cdef Py_ssize_t lo = 0, hi = n - 1, i, j, mid, store
    cdef double t, pivot
    while hi - lo > 16:
        # median of three to a[hi] as the pivot
        mid = lo + ((hi - lo) >> 1)
        if a[mid] < a[lo]:
            t = a[mid]; a[mid] = a[lo]; a[lo] = t
        if a[hi] < a[lo]:
            t = a[hi]; a[hi] = a[lo]; a[lo] = t
        if a[mid] < a[hi]:
            t = a[mid]; a[mid] = a[hi]; a[hi] = t
        pivot = a[hi]
        store = lo
        for i in range(lo, hi):
            t = a[i]
            a[i] = a[store]
            a[store] = t
            store += t < pivot
        a[hi] = a[store]
        a[store] = pivot
        # a[lo:store] < pivot <= a[store + 1:hi + 1]
        if store >= k:
            if store == k:
                return pivot
            hi = store - 1
            continue
        if store > lo:
            lo = store + 1
            continue
        # the pivot is the range's minimum, a sign of many equal values (zero-filled
        # spectra): gather the values equal to it so that selection cannot turn quadratic
        j = store + 1
        for i in range(store + 1, hi + 1):
            t = a[i]
            a[i] = a[j]
            a[j] = t
            j += t <= pivot
        if k < j:
            return pivot
        lo = j
    for i in range(lo + 1, hi + 1):
        t = a[i]
        j = i - 1
        while j >= lo and a[j] > t:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = t
    return a[k]


cdef double noise_level(const in_t* y, Py_ssize_t n, const Settings* s, double* buf,
                        double* band) noexcept nogil:
    """Median of y[0:n] (n >= 1); sets band = snr * 1.4826 * MAD. At most s.sample evenly
    spaced points are used."""
    cdef Py_ssize_t m, i, stride = 1
    cdef double med, mad
    if n > s.sample:
        stride = (n + s.sample - 1) // s.sample
    m = (n + stride - 1) // stride
    for i in range(m):
        buf[i] = y[i * stride]
    med = select_kth(buf, m, m >> 1)
    for i in range(m):
        buf[i] = fabs(buf[i] - med)
    mad = select_kth(buf, m, m >> 1)
    band[0] = s.snr * MAD_TO_SIGMA * mad
    return med


cdef void local_levels(const in_t* y, Py_ssize_t n, const Settings* s, Scratch* w) noexcept nogil:
    """Fill w.thr[0:n] and w.band[0:n] from consecutive windows, linear between window centres.

    The last window absorbs the remainder, so every window has at least s.window points
    (or the whole spectrum).
    """
    cdef Py_ssize_t nb = n // s.window, b, start, end, i
    cdef double f
    if nb < 1:
        nb = 1
    for b in range(nb):
        start = b * s.window
        end = n if b == nb - 1 else start + s.window
        w.blk_t[b] = noise_level(y + start, end - start, s, w.buf, &w.blk_b[b])
        w.blk_t[b] += w.blk_b[b]
        w.blk_c[b] = 0.5 * (start + end - 1)
    i = 0
    while i < n and i <= w.blk_c[0]:
        w.thr[i] = w.blk_t[0]
        w.band[i] = w.blk_b[0]
        i += 1
    for b in range(nb - 1):
        while i < n and i <= w.blk_c[b + 1]:
            f = (i - w.blk_c[b]) / (w.blk_c[b + 1] - w.blk_c[b])
            w.thr[i] = w.blk_t[b] + f * (w.blk_t[b + 1] - w.blk_t[b])
            w.band[i] = w.blk_b[b] + f * (w.blk_b[b + 1] - w.blk_b[b])
            i += 1
    while i < n:
        w.thr[i] = w.blk_t[nb - 1]
        w.band[i] = w.blk_b[nb - 1]
        i += 1


cdef bint stands_out(const in_t* y, Py_ssize_t n, Py_ssize_t i, Py_ssize_t j, double t,
                     double band, const Scratch* w, bint local) noexcept nogil:
    """Valley test of the maximum i..j: False if, within the run of points above the threshold,
    a higher maximum follows a valley shallower than the noise band (snr * sigma): a noise
    bump on the flank of a peak, not a peak of its own. Equal twins: the right one is kept.
    """
    cdef double yi = y[i], low = yi
    cdef Py_ssize_t k = i - 1
    if local:
        band = w.band[i]
    while k >= 0 and i - k <= VALLEY_REACH and y[k] > (w.thr[k] if local else t):
        if y[k] > yi:
            if yi - low < band:
                return False
            break
        if y[k] < low:
            low = y[k]
        k -= 1
    low = yi
    k = j + 1
    while k < n and k - j <= VALLEY_REACH and y[k] > (w.thr[k] if local else t):
        if y[k] >= yi:
            if yi - low < band:
                return False
            break
        if y[k] < low:
            low = y[k]
        k += 1
    return True


cdef bint fit_apex(const mz_t* x, const in_t* y, Py_ssize_t lo, Py_ssize_t hi,
                   Py_ssize_t i, Py_ssize_t j, bint logmode,
                   double* apex_mz, double* apex_y) noexcept nogil:
    """Weighted least-squares parabola through points lo..hi (inclusive) around the apex i..j.

    logmode: parabola of log(y) weighted by y**2 (a Gaussian, Guo's weighting), else of y
    with unit weights. x is centred on the apex and scaled by the local spacing so that the
    normal equations stay well conditioned. False (outputs untouched) if the fit is not a
    maximum inside [x[lo], x[hi]] of at most twice y[i], or a log of a non-positive intensity
    would be needed.
    """
    cdef double x0 = x[i], h = <double>x[j + 1] - <double>x[i - 1]
    cdef double ynorm = y[i], u, u2, v, lv, wt
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, t0 = 0, t1 = 0, t2 = 0
    cdef double m00, m01, m11, det, c0, c1, c2, xv
    cdef Py_ssize_t k
    if not (h > 0):
        return False
    for k in range(lo, hi + 1):
        u = (x[k] - x0) / h
        v = y[k]
        if logmode:
            if not (v > 0):
                return False
            lv = log(v)
            wt = (v / ynorm) * (v / ynorm)
        else:
            lv = v / ynorm
            wt = 1.0
        u2 = u * u
        s0 += wt
        s1 += wt * u
        s2 += wt * u2
        s3 += wt * u2 * u
        s4 += wt * u2 * u2
        t0 += wt * lv
        t1 += wt * u * lv
        t2 += wt * u2 * lv
    m00 = s2 * s0 - s1 * s1
    m01 = s3 * s0 - s1 * s2
    m11 = s3 * s1 - s2 * s2
    det = s4 * m00 - s3 * m01 + s2 * m11
    if det == 0:
        return False
    c2 = (t2 * m00 - s3 * (t1 * s0 - s1 * t0) + s2 * (t1 * s1 - s2 * t0)) / det
    c1 = (s4 * (t1 * s0 - s1 * t0) - t2 * m01 + s2 * (s3 * t0 - t1 * s2)) / det
    c0 = (s4 * (s2 * t0 - t1 * s1) - s3 * (s3 * t0 - t1 * s2) + t2 * m11) / det
    if not (c2 < 0):
        return False
    xv = -c1 / (2.0 * c2)
    if not ((x[lo] - x0) / h <= xv <= (x[hi] - x0) / h):
        return False
    v = c0 - c1 * c1 / (4.0 * c2)
    v = exp(v) if logmode else v * ynorm
    # even one point per FWHM puts a sample at >= half the apex height: a fit above twice the
    # highest sample is not a peak shape (e.g. a steep edge next to a gap)
    if not (v <= 2.0 * ynorm):
        return False
    apex_mz[0] = x0 + xv * h
    apex_y[0] = v
    return True


cdef int cmp_ranked(const void* a, const void* b) noexcept nogil:
    # higher key first; ties by position, so the order is deterministic
    cdef const Ranked* ra = <const Ranked*>a
    cdef const Ranked* rb = <const Ranked*>b
    if ra.key > rb.key:
        return -1
    if ra.key < rb.key:
        return 1
    return -1 if ra.idx < rb.idx else (1 if ra.idx > rb.idx else 0)


cdef void separate(Py_ssize_t nc, const Settings* s, Scratch* w) noexcept nogil:
    """Mark in w.c_drop every candidate closer than s.min_sep to a higher one (greedy by height)."""
    cdef Py_ssize_t r, c, k
    for c in range(nc):
        w.c_drop[c] = 0
        w.order[c].key = w.c_key[c]
        w.order[c].idx = c
    qsort(w.order, nc, sizeof(Ranked), cmp_ranked)
    for r in range(nc):
        c = w.order[r].idx
        if w.c_drop[c]:
            continue
        k = c - 1
        while k >= 0 and (
            (w.c_mz[c] - w.c_mz[k] < s.min_sep * 1e-6 * w.c_mz[c]) if s.sep_ppm
            else (w.c_pos[c] - w.c_pos[k] < s.min_sep)
        ):
            w.c_drop[k] = 1
            k -= 1
        k = c + 1
        while k < nc and (
            (w.c_mz[k] - w.c_mz[c] < s.min_sep * 1e-6 * w.c_mz[c]) if s.sep_ppm
            else (w.c_pos[k] - w.c_pos[c] < s.min_sep)
        ):
            w.c_drop[k] = 1
            k += 1


cdef Py_ssize_t pick_one(const mz_t* x, const in_t* y, Py_ssize_t n, const Settings* s,
                         Scratch* w, double* out_mz, double* out_val) noexcept nogil:
    """Pick the peaks of one spectrum into out_mz/out_val; returns their number."""
    cdef Py_ssize_t i, j, l, r, lo, hi, count, nc = 0, nout = 0
    cdef double t = 0, band = 0, yi, half, pmz, py, area
    cdef bint local = s.local_noise
    if n < 3:
        return 0
    if local:
        local_levels(y, n, s, w)
    else:
        t = noise_level(y, n, s, w.buf, &band)
        t += band
    i = 1
    while i < n - 1:
        # hot loop: nearly every point is below the threshold
        if local:
            while i < n - 1 and not (y[i] > w.thr[i]):
                i += 1
        else:
            while i < n - 1 and not (y[i] > t):
                i += 1
        if i >= n - 1:
            break
        yi = y[i]
        if not (yi > y[i - 1]):
            i += 1
            continue
        j = i
        while j + 1 < n and y[j + 1] == yi:
            j += 1
        if j + 1 >= n:
            break
        if y[j + 1] > yi:
            i = j + 1
            continue
        # a local maximum (apex i..j); y[j + 1] < yi, so the next candidate is at j + 2 or later
        # support: points above the threshold that descend from the apex on either side
        count = j - i + 1
        l = i - 1
        while count < s.min_points and l >= 0 and y[l] > (w.thr[l] if local else t) \
                and y[l] <= y[l + 1]:
            count += 1
            l -= 1
        r = j + 1
        while count < s.min_points and r < n and y[r] > (w.thr[r] if local else t) \
                and y[r] <= y[r - 1]:
            count += 1
            r += 1
        if count < s.min_points or not stands_out(y, n, i, j, t, band, w, local):
            i = j + 2
            continue
        # sub-sample apex
        pmz = 0.5 * (<double>x[i] + <double>x[j])
        py = yi
        if s.apex == APEX_GAUSS:
            half = 0.5 * yi
            lo = i - 1
            while lo > 0 and i - lo < FIT_HALF_WIDTH and y[lo - 1] < y[lo] and y[lo - 1] > half:
                lo -= 1
            hi = j + 1
            while hi < n - 1 and hi - j < FIT_HALF_WIDTH and y[hi + 1] < y[hi] and y[hi + 1] > half:
                hi += 1
            fit_apex(x, y, lo, hi, i, j, True, &pmz, &py)
        elif s.apex == APEX_PARABOLA:
            fit_apex(x, y, i - 1, j + 1, i, j, False, &pmz, &py)
        if s.area:
            lo = i
            while lo > 0 and y[lo - 1] < y[lo]:
                lo -= 1
            hi = j
            while hi < n - 1 and y[hi + 1] < y[hi]:
                hi += 1
            area = 0
            for l in range(lo, hi):
                area += 0.5 * (<double>y[l] + <double>y[l + 1]) * (<double>x[l + 1] - <double>x[l])
            py = area
        w.c_mz[nc] = pmz
        w.c_val[nc] = py
        w.c_key[nc] = yi
        w.c_pos[nc] = i
        nc += 1
        i = j + 2
    if s.min_sep > 0 and nc > 1:
        separate(nc, s, w)
        for i in range(nc):
            if not w.c_drop[i]:
                out_mz[nout] = w.c_mz[i]
                out_val[nout] = w.c_val[i]
                nout += 1
        return nout
    for i in range(nc):
        out_mz[i] = w.c_mz[i]
        out_val[i] = w.c_val[i]
    return nc


cdef bint scratch_alloc(Scratch* w, Py_ssize_t max_n, const Settings* s) noexcept nogil:
    """Point w's buffers into one allocation sized for spectra of up to max_n points; False
    when out of memory."""
    cdef Py_ssize_t cap = max_n // 2 + 1, nb = max_n // s.window + 1
    cdef Py_ssize_t n_double = (s.sample + 1) + 2 * (max_n + 1) + 3 * nb + 3 * cap
    cdef char* block = <char*>malloc(n_double * sizeof(double) + cap * sizeof(int64_t)
                                     + cap * sizeof(Ranked) + cap)
    if not block:
        w.buf = NULL
        return False
    w.buf = <double*>block
    w.thr = w.buf + (s.sample + 1)
    w.band = w.thr + (max_n + 1)
    w.blk_t = w.band + (max_n + 1)
    w.blk_b = w.blk_t + nb
    w.blk_c = w.blk_b + nb
    w.c_mz = w.blk_c + nb
    w.c_val = w.c_mz + cap
    w.c_key = w.c_val + cap
    w.c_pos = <int64_t*>(w.c_key + cap)
    w.order = <Ranked*>(w.c_pos + cap)
    w.c_drop = <char*>(w.order + cap)
    return True


cdef class PickSettings:
    """The options of :func:`pick` and :func:`pick_spectrum`, checked by ``ionmap.kernels``
    once and kept (a call then passes one object instead of a dozen arguments)."""
    cdef Settings s

    def __init__(self, double snr, bint local_noise, Py_ssize_t window, Py_ssize_t sample,
                 Py_ssize_t min_points, double min_sep, bint sep_ppm, int apex, bint area):
        if window < 1 or sample < 1:
            raise ValueError("noise window and sample need at least one point")
        self.s.snr = snr
        self.s.local_noise = local_noise
        self.s.window = window
        self.s.sample = sample
        self.s.min_points = min_points
        self.s.min_sep = min_sep
        self.s.sep_ppm = sep_ppm
        self.s.apex = apex
        self.s.area = area


def pick(const mz_t[::1] mz, const in_t[::1] intensity, const int64_t[::1] offsets,
         const int64_t[::1] mz_starts, bint shared, bint checked,
         PickSettings settings not None,
         double[::1] out_mz, double[::1] out_val, int64_t[::1] out_offsets):
    """Pick the peaks of every spectrum of a batch.

    Peaks of spectrum k go to out_mz/out_val[out_offsets[k]:out_offsets[k + 1]]; the
    outputs need room for sum(n_k // 2) + n_spectra peaks. Returns -1, or the batch position
    of the first spectrum whose m/z values are not ascending (then nothing is picked).
    """
    cdef Py_ssize_t n_spec = offsets.shape[0] - 1, k, n, max_n = 0, bad
    cdef const Settings* s = &settings.s
    cdef Scratch w
    for k in range(n_spec):
        n = offsets[k + 1] - offsets[k]
        if n > max_n:
            max_n = n
    if not scratch_alloc(&w, max_n, s):
        raise MemoryError()
    try:
        with nogil:
            bad = -1 if checked else first_unsorted(&mz[0], mz.shape[0], &offsets[0], &mz_starts[0], n_spec, shared)
            if bad < 0:
                out_offsets[0] = 0
                for k in range(n_spec):
                    out_offsets[k + 1] = out_offsets[k] + pick_one(
                        &mz[0] + mz_starts[k], &intensity[0] + offsets[k],
                        offsets[k + 1] - offsets[k], s, &w,
                        &out_mz[0] + out_offsets[k], &out_val[0] + out_offsets[k])
        return bad
    finally:
        free(w.buf)


# ---- one spectrum per call: no batch, no memoryviews, no fused-signature dispatch

cdef Py_ssize_t pick_alone(const mz_t* x, const in_t* y, Py_ssize_t n, const Settings* s,
                           Scratch* w) noexcept nogil:
    """Peaks of one spectrum into w.c_mz / w.c_val (pick_one compacts them in place);
    returns their number, or -1 when the m/z values are not ascending."""
    if first_descent(x, n) < n:
        return -1
    return pick_one(x, y, n, s, w, w.c_mz, w.c_val)


cdef inline bint float_vector(object a):
    return (cnp.PyArray_Check(a) and cnp.PyArray_NDIM(<cnp.ndarray>a) == 1
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a)
            and cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>a)
            and (cnp.PyArray_TYPE(<cnp.ndarray>a) == cnp.NPY_DOUBLE
                 or cnp.PyArray_TYPE(<cnp.ndarray>a) == cnp.NPY_FLOAT))


def pick_spectrum(object mz, object intensity, PickSettings settings not None):
    """Peaks of one spectrum, exactly as :func:`pick` picks it in a batch: ``(peak_mz,
    peak_value)``, new float64 arrays; None when the m/z values are not ascending.

    ``mz`` and ``intensity`` must be 1-D, C-contiguous, native-order float32/float64 NumPy
    arrays of one length, else TypeError (the caller converts them and calls again).
    """
    cdef Py_ssize_t n, nc
    cdef const void* px
    cdef const void* py
    cdef bint x64, y64
    cdef const Settings* s = &settings.s
    cdef Scratch w
    cdef cnp.npy_intp dim
    cdef cnp.ndarray out_mz, out_val
    if not (float_vector(mz) and float_vector(intensity)):
        raise TypeError("mz and intensity must be 1-D contiguous float32/float64 arrays")
    n = cnp.PyArray_DIM(<cnp.ndarray>intensity, 0)
    if cnp.PyArray_DIM(<cnp.ndarray>mz, 0) != n:
        raise TypeError("mz and intensity differ in length")
    px = cnp.PyArray_DATA(<cnp.ndarray>mz)
    py = cnp.PyArray_DATA(<cnp.ndarray>intensity)
    x64 = cnp.PyArray_TYPE(<cnp.ndarray>mz) == cnp.NPY_DOUBLE
    y64 = cnp.PyArray_TYPE(<cnp.ndarray>intensity) == cnp.NPY_DOUBLE
    if not scratch_alloc(&w, n, s):
        raise MemoryError()
    try:
        with nogil:
            if x64 and y64:
                nc = pick_alone(<const double*>px, <const double*>py, n, s, &w)
            elif x64:
                nc = pick_alone(<const double*>px, <const float*>py, n, s, &w)
            elif y64:
                nc = pick_alone(<const float*>px, <const double*>py, n, s, &w)
            else:
                nc = pick_alone(<const float*>px, <const float*>py, n, s, &w)
        if nc < 0:
            return None
        dim = nc
        out_mz = cnp.PyArray_EMPTY(1, &dim, cnp.NPY_DOUBLE, 0)
        out_val = cnp.PyArray_EMPTY(1, &dim, cnp.NPY_DOUBLE, 0)
        if nc:
            memcpy(cnp.PyArray_DATA(out_mz), w.c_mz, nc * sizeof(double))
            memcpy(cnp.PyArray_DATA(out_val), w.c_val, nc * sizeof(double))
        return out_mz, out_val
    finally:
        free(w.buf)
