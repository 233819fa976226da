"""The reader's data path in C (compiled as ``ionmap._gather``): copying many byte ranges of a
read buffer into flat arrays, and the validity checks of the decoded values.

Every function takes a whole batch (or stage) of spectra as flat arrays + offsets and loops
over the spectra without the GIL.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.string cimport memcpy

# stored m/z arrays come as any of the imzML precisions; intensities are checked when float
ctypedef fused num_t:
    float
    double
    int32_t
    int64_t

ctypedef fused real_t:
    float
    double


def gather_bytes(const uint8_t[::1] src, const int64_t[::1] pos, const int64_t[::1] counts,
                 Py_ssize_t itemsize, uint8_t[::1] out) -> None:
    """out = concatenation of ``src[pos[k] : pos[k] + counts[k] * itemsize]`` over k (bytes).

    Ranges may be in any order, overlap or repeat; ranges with ``counts[k] == 0`` are skipped
    (their ``pos`` is ignored). Raises ValueError, copying nothing, when a range lies outside
    ``src`` or ``out`` does not hold exactly ``sum(counts) * itemsize`` bytes.
    """
    cdef Py_ssize_t n = pos.shape[0], size = src.shape[0], k, bad = -1
    cdef int64_t total = 0, nb
    cdef const uint8_t* s
    cdef uint8_t* d
    if counts.shape[0] != n:
        raise ValueError(f"{n} positions but {counts.shape[0]} counts")
    if itemsize <= 0:
        raise ValueError(f"item size {itemsize} is not positive")
    with nogil:
        for k in range(n):
            if counts[k] == 0:
                continue
            # written so that no int64 product can overflow
            if (counts[k] < 0 or counts[k] > size // itemsize or pos[k] < 0
                    or pos[k] > size - counts[k] * itemsize):
                bad = k
                break
            total += counts[k] * itemsize
    if bad >= 0:
        raise ValueError(f"range {bad} ({counts[bad]} items at byte {pos[bad]}) lies outside "
                         f"the {size}-byte buffer")
    if total != out.shape[0]:
        raise ValueError(f"ranges hold {total} bytes but out has {out.shape[0]}")
    if total == 0:
        return
    s = &src[0]
    d = &out[0]
    with nogil:
        for k in range(n):
            nb = counts[k] * itemsize
            if nb:
                memcpy(d, s + pos[k], nb)
                d += nb


cdef inline bint finite(num_t v) noexcept nogil:
    if num_t is float or num_t is double:
        return v - v == 0  # false for NaN and +-inf
    else:
        return True


# The scans below OR a flag over a whole run without an early exit (so the compiler can
# vectorise them) and look for the exact point only in a run that failed.

cdef inline bint ascending(const num_t* x, Py_ssize_t n) noexcept nogil:
    """True when x[i] >= x[i - 1] for every i >= 1 (false at a descent or NaN)."""
    cdef Py_ssize_t i
    cdef int bad = 0
    for i in range(1, n):
        bad |= not (x[i] >= x[i - 1])
    return not bad


cdef inline bint all_finite(const num_t* x, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef int bad = 0
    for i in range(n):
        bad |= not finite(x[i])
    return not bad


def mz_problems(const num_t[::1] mz, const int64_t[::1] offsets) -> tuple:
    """First failures of the m/z checks of spectra ``mz[offsets[k] : offsets[k + 1]]``.

    Returns ``(descent, first, last)``: the first point not >= its predecessor within its
    spectrum (out of order, or NaN), the first spectrum start that is not finite, the first
    spectrum end that is not finite (spectra in order), each a point index or -1. Spectra
    without a descent and with finite ends are finite throughout.
    """
    cdef Py_ssize_t n = offsets.shape[0] - 1, k, i
    cdef int64_t a, b, descent = -1, first = -1, last = -1
    cdef const num_t* x
    if n >= 1 and (offsets[0] < 0 or offsets[n] > mz.shape[0]):
        raise ValueError("offsets reach outside the m/z array")
    for k in range(n):
        if offsets[k + 1] < offsets[k]:
            raise ValueError("offsets are not non-decreasing")
    if n < 1 or offsets[n] == offsets[0]:
        return descent, first, last
    x = &mz[0]
    with nogil:
        for k in range(n):
            a, b = offsets[k], offsets[k + 1]
            if not ascending(x + a, b - a):
                for i in range(a + 1, b):
                    if not (x[i] >= x[i - 1]):
                        descent = i
                        break
                break
        for k in range(n):
            a, b = offsets[k], offsets[k + 1]
            if b > a and first < 0 and not finite(x[a]):
                first = a
            if b > a and last < 0 and not finite(x[b - 1]):
                last = b - 1
    return descent, first, last


def first_nonfinite(const real_t[::1] values) -> int:
    """Index of the first NaN or infinite value, or -1."""
    cdef Py_ssize_t a = 0, i, m, n = values.shape[0], found = -1
    cdef const real_t* x
    if n == 0:
        return found
    x = &values[0]
    with nogil:
        while a < n:
            m = min(4096, n - a)
            if not all_finite(x + a, m):
                for i in range(a, a + m):
                    if not finite(x[i]):
                        found = i
                        break
                break
            a += m
    return found


def layout_problem(const int64_t[::1] offsets, const int64_t[::1] mz_starts,
                   Py_ssize_t n_values, Py_ssize_t n_mz) -> int:
    """What is wrong with a batch's layout (see ``ionmap.batch.SpectrumBatch``), in one
    pass: 0 nothing; 1 ``offsets`` do not rise from 0 to ``n_values`` (the intensities);
    2 a spectrum's m/z values (``mz_starts[k]`` on, as many as its intensities) lie
    outside the ``n_mz`` m/z values. ``offsets`` has one more entry than ``mz_starts``."""
    cdef Py_ssize_t n = mz_starts.shape[0], k
    cdef int found = 0
    if offsets.shape[0] != n + 1:
        raise ValueError("offsets need one more entry than mz_starts")
    if offsets[0] != 0 or offsets[n] != n_values:
        return 1
    with nogil:
        for k in range(n):
            if offsets[k + 1] < offsets[k]:
                found = 1
                break
            if found == 0 and (mz_starts[k] < 0
                               or mz_starts[k] + offsets[k + 1] - offsets[k] > n_mz):
                found = 2
    return found
