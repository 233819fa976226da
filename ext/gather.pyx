"""The reader's data path in C (compiled as ``ionmap._gather``): copying many byte ranges of a
read buffer into flat arrays, and the validity checks of the decoded values.

Every function takes a whole batch (or stage) of spectra as flat arrays + offsets and loops
over the spectra without the GIL; ``read_spectrum`` reads and checks one spectrum per call
(the path of a script that reads spectrum by spectrum).
"""
cimport numpy as cnp
from libc.errno cimport EINTR, errno
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy
from posix.uio cimport iovec, preadv
from posix.unistd cimport pread

from kcommon cimport descent_f32, descent_f64

cnp.import_array()

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
# vectorise them) and look for the exact point only in a run that failed. Floating-point m/z
# order is scanned by descent.h's SSE2 loops instead (GCC does not vectorise the flag loop
# for doubles on SSE2).

cdef inline bint ascending(const num_t* x, Py_ssize_t n) noexcept nogil:
    """True when x[i] >= x[i - 1] for every i >= 1 (false at a descent or NaN)."""
    cdef Py_ssize_t i
    cdef int bad = 0
    if num_t is double:
        return descent_f64(x, n) >= n
    elif num_t is float:
        return descent_f32(x, n) >= n
    else:
        for i in range(1, n):
            bad |= not (x[i] >= x[i - 1])
        return not bad


cdef inline bint all_finite(const num_t* x, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef int bad = 0
    for i in range(n):
        bad |= not finite(x[i])
    return not bad


cdef void mz_check(const num_t* x, const int64_t* offsets, Py_ssize_t n,
                   int64_t* found) noexcept nogil:
    """The scans of :func:`mz_problems` (n >= 1 spectra, offsets valid) into found[0:3]."""
    cdef Py_ssize_t k, i
    cdef int64_t a, b
    found[0] = found[1] = found[2] = -1
    for k in range(n):
        a, b = offsets[k], offsets[k + 1]
        if not ascending(x + a, b - a):
            for i in range(a + 1, b):
                if not (x[i] >= x[i - 1]):
                    found[0] = i
                    break
            break
    for k in range(n):
        a, b = offsets[k], offsets[k + 1]
        if b > a and found[1] < 0 and not finite(x[a]):
            found[1] = a
        if b > a and found[2] < 0 and not finite(x[b - 1]):
            found[2] = b - 1


cdef int64_t nonfinite_at(const real_t* x, Py_ssize_t n) noexcept nogil:
    """Index of the first NaN or infinite value of x[0:n], or -1."""
    cdef Py_ssize_t a = 0, i, m
    while a < n:
        m = min(4096, n - a)
        if not all_finite(x + a, m):
            for i in range(a, a + m):
                if not finite(x[i]):
                    return i
        a += m
    return -1


def mz_problems(const num_t[::1] mz, const int64_t[::1] offsets) -> tuple:
    """First failures of the m/z checks of spectra ``mz[offsets[k] : offsets[k + 1]]``.

    Returns ``(descent, first, last)``: the first point not >= its predecessor within its
    spectrum (out of order, or NaN), the first spectrum start that is not finite, the first
    spectrum end that is not finite (spectra in order), each a point index or -1. Spectra
    without a descent and with finite ends are finite throughout.
    """
    cdef Py_ssize_t n = offsets.shape[0] - 1, k
    cdef int64_t found[3]
    if n >= 1 and (offsets[0] < 0 or offsets[n] > mz.shape[0]):
        raise ValueError("offsets reach outside the m/z array")
    for k in range(n):
        if offsets[k + 1] < offsets[k]:
            raise ValueError("offsets are not non-decreasing")
    if n < 1 or offsets[n] == offsets[0]:
        return -1, -1, -1
    with nogil:
        mz_check(&mz[0], &offsets[0], n, found)
    return found[0], found[1], found[2]


def first_nonfinite(const real_t[::1] values) -> int:
    """Index of the first NaN or infinite value, or -1."""
    cdef Py_ssize_t n = values.shape[0], found
    if n == 0:
        return -1
    with nogil:
        found = nonfinite_at(&values[0], n)
    return found


# ---- one spectrum per call

cdef int read_full(int fd, iovec* iov, int count, int64_t start) noexcept nogil:
    """Fill the ``count`` buffers of ``iov`` (advanced in place) with the consecutive bytes of
    fd from byte ``start`` on: 0, the errno of a failed read, or -1 when the file ends first."""
    cdef Py_ssize_t got
    while count > 0:
        if iov[0].iov_len == 0:
            iov += 1
            count -= 1
            continue
        got = preadv(fd, iov, count, start)
        if got < 0:
            if errno == EINTR:
                continue
            return errno
        if got == 0:
            return -1
        start += got
        while count > 0 and <size_t>got >= iov[0].iov_len:
            got -= iov[0].iov_len
            iov += 1
            count -= 1
        if count > 0:
            iov[0].iov_base = <char*>iov[0].iov_base + got
            iov[0].iov_len -= got
    return 0


cdef int read_two(int fd, char* a, int64_t a_bytes, int64_t a_start, char* b, int64_t b_bytes,
                  int64_t b_start) noexcept nogil:
    """Read a_bytes at a_start into a and b_bytes at b_start into b (as :func:`read_full`):
    one system call when the two ranges are adjacent in the file (writers put a spectrum's
    m/z and intensity arrays side by side), else two."""
    cdef iovec iov[2]
    cdef int err
    iov[0].iov_base = a
    iov[0].iov_len = a_bytes
    iov[1].iov_base = b
    iov[1].iov_len = b_bytes
    if a_start + a_bytes == b_start:
        return read_full(fd, iov, 2, a_start)
    if b_start + b_bytes == a_start:
        iov[0].iov_base = b
        iov[0].iov_len = b_bytes
        iov[1].iov_base = a
        iov[1].iov_len = a_bytes
        return read_full(fd, iov, 2, b_start)
    err = read_full(fd, iov, 1, a_start)
    return err if err else read_full(fd, iov + 1, 1, b_start)


cdef int fill(int fd, char* dst, int64_t nbytes, int64_t start, int64_t* got) noexcept nogil:
    """Read up to nbytes from byte ``start`` of fd into dst (less only at the end of the
    file; ``got`` says how many): 0 or the errno of a failed read."""
    cdef Py_ssize_t r
    got[0] = 0
    while got[0] < nbytes:
        r = pread(fd, dst + got[0], nbytes - got[0], start + got[0])
        if r < 0:
            if errno == EINTR:
                continue
            return errno
        if r == 0:
            break
        got[0] += r
    return 0


#: A spectrum whose arrays span at most this many bytes is read through the read-ahead buffer.
cdef int64_t AHEAD_MAX_SPECTRUM = 8 * 1024


cdef class ReadAhead:
    """One thread's read-ahead buffer of a file, for one-spectrum reads: when a spectrum
    follows the one read before (a loop over the spectra in file order), the next
    ``capacity`` bytes are read at once and the spectra after it are copied from memory,
    which saves a system call per spectrum as a buffered file does. Other access patterns
    read just the spectrum. Not for sharing between threads; the file must not change."""
    cdef char* data
    cdef int64_t capacity, start, end, last

    def __cinit__(self, int64_t capacity=64 * 1024):
        self.data = <char*>malloc(capacity)
        if not self.data:
            raise MemoryError()
        self.capacity = capacity
        self.start = self.end = self.last = -1

    def __dealloc__(self):
        free(self.data)


cdef int read_through(int fd, ReadAhead ahead, char* a, int64_t a_bytes, int64_t a_start,
                      char* b, int64_t b_bytes, int64_t b_start) noexcept nogil:
    """:func:`read_two` through ``ahead``'s buffer when the spectrum is small and the buffer
    holds it or the access is sequential."""
    cdef int64_t lo, hi, got
    cdef int err
    if a_bytes and b_bytes:
        lo = min(a_start, b_start)
        hi = max(a_start + a_bytes, b_start + b_bytes)
    elif a_bytes or b_bytes:
        lo = a_start if a_bytes else b_start
        hi = lo + (a_bytes if a_bytes else b_bytes)
    else:
        return 0
    if hi - lo > AHEAD_MAX_SPECTRUM:
        return read_two(fd, a, a_bytes, a_start, b, b_bytes, b_start)
    if not (ahead.start <= lo and hi <= ahead.end):
        if not (ahead.last <= lo < ahead.last + ahead.capacity):  # not sequential
            ahead.last = hi
            return read_two(fd, a, a_bytes, a_start, b, b_bytes, b_start)
        err = fill(fd, ahead.data, ahead.capacity, lo, &got)
        if err:
            ahead.start = ahead.end = -1
            return err
        ahead.start, ahead.end = lo, lo + got
        if ahead.end < hi:
            return -1
    if a_bytes:
        memcpy(a, ahead.data + (a_start - ahead.start), a_bytes)
    if b_bytes:
        memcpy(b, ahead.data + (b_start - ahead.start), b_bytes)
    ahead.last = hi
    return 0


cdef inline bint fresh_vector(object a):
    """a is a writable, 1-D, C-contiguous, native-order NumPy array."""
    return (cnp.PyArray_Check(a) and cnp.PyArray_NDIM(<cnp.ndarray>a) == 1
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a)
            and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>a)
            and cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>a))


def read_spectrum(int fd, ReadAhead ahead, int64_t mz_start, object mz,
                  int64_t intensity_start, object intensity):
    """Read one spectrum from file descriptor ``fd`` straight into ``intensity`` and ``mz``
    (writable contiguous arrays of the stored dtypes and its length; ``mz`` None: not read,
    as in continuous mode), then check them while they are in cache, as
    :func:`mz_problems` and :func:`first_nonfinite` do. No NumPy set-up, no batch: this is
    the whole of a one-spectrum read. Positional reads, one when the two arrays are
    adjacent in the file, none when ``ahead`` (a :class:`ReadAhead`, or None) holds them.

    Returns None when every check passes, else ``(descent, first, last, intensity)``, point
    indices or -1. Raises OSError when a read fails or the file ends first (callers read
    again through their general path, whose error names the file).
    """
    cdef int64_t found[4]
    cdef int64_t offsets[2]
    cdef int err = 0, mz_type = -1, in_type
    cdef char* mz_data = NULL
    cdef char* in_data
    cdef int64_t mz_bytes = 0, in_bytes, n
    if not fresh_vector(intensity) or (mz is not None and not (
            fresh_vector(mz) and cnp.PyArray_DIM(<cnp.ndarray>mz, 0)
            == cnp.PyArray_DIM(<cnp.ndarray>intensity, 0))):
        raise TypeError("read_spectrum needs fresh contiguous arrays of one length")
    if mz is not None and cnp.PyArray_TYPE(<cnp.ndarray>mz) not in (
            cnp.NPY_DOUBLE, cnp.NPY_FLOAT, cnp.NPY_INT32, cnp.NPY_INT64):
        raise TypeError("m/z values are stored as float32, float64, int32 or int64")
    n = cnp.PyArray_DIM(<cnp.ndarray>intensity, 0)
    in_type = cnp.PyArray_TYPE(<cnp.ndarray>intensity)
    in_data = <char*>cnp.PyArray_DATA(<cnp.ndarray>intensity)
    in_bytes = cnp.PyArray_NBYTES(<cnp.ndarray>intensity)
    if mz is not None:
        mz_type = cnp.PyArray_TYPE(<cnp.ndarray>mz)
        mz_data = <char*>cnp.PyArray_DATA(<cnp.ndarray>mz)
        mz_bytes = cnp.PyArray_NBYTES(<cnp.ndarray>mz)
    found[0] = found[1] = found[2] = found[3] = -1
    offsets[0] = 0
    offsets[1] = n
    with nogil:
        if ahead is None:
            err = read_two(fd, in_data, in_bytes, intensity_start, mz_data, mz_bytes, mz_start)
        else:
            err = read_through(fd, ahead, in_data, in_bytes, intensity_start, mz_data,
                               mz_bytes, mz_start)
        if err == 0 and n:
            if mz_type == cnp.NPY_DOUBLE:
                mz_check(<const double*>mz_data, offsets, 1, found)
            elif mz_type == cnp.NPY_FLOAT:
                mz_check(<const float*>mz_data, offsets, 1, found)
            elif mz_type == cnp.NPY_INT32:
                mz_check(<const int32_t*>mz_data, offsets, 1, found)
            elif mz_type == cnp.NPY_INT64:
                mz_check(<const int64_t*>mz_data, offsets, 1, found)
            if in_type == cnp.NPY_DOUBLE:
                found[3] = nonfinite_at(<const double*>in_data, n)
            elif in_type == cnp.NPY_FLOAT:
                found[3] = nonfinite_at(<const float*>in_data, n)
    if err:
        raise OSError(err, "positional read failed") if err > 0 else OSError("unexpected end of file")
    if found[0] < 0 and found[1] < 0 and found[2] < 0 and found[3] < 0:
        return None
    return found[0], found[1], found[2], found[3]


# ---- many spectra per call

#: At most this many buffers per ``preadv`` call (POSIX guarantees 16; Linux and macOS 1024).
cdef int MAX_IOV = 1024


cdef int read_ranges_into(int fd, const int64_t* order, const int64_t* start,
                          const int64_t* nbytes, char** dest, Py_ssize_t n, int64_t max_gap,
                          char* skip, iovec* iov) noexcept nogil:
    """Read range r (``nbytes[r]`` bytes from file byte ``start[r]``) to ``dest[r]`` for
    every r, visiting the ranges in ``order`` (ascending start): consecutive ranges go into
    one ``preadv`` call, which reads through gaps of up to ``max_gap`` bytes into ``skip``
    (a discard buffer of that size). 0, an errno, or -1 when the file ends first."""
    cdef Py_ssize_t t, r
    cdef int count = 0, err
    cdef int64_t req_start = 0, req_end = 0, s
    for t in range(n):
        r = order[t]
        if nbytes[r] == 0:
            continue
        s = start[r]
        if count and (s < req_end or s - req_end > max_gap or count > MAX_IOV - 2):
            err = read_full(fd, iov, count, req_start)
            if err:
                return err
            count = 0
        if count == 0:
            req_start = req_end = s
        if s > req_end:  # a gap, read through
            iov[count].iov_base = skip
            iov[count].iov_len = s - req_end
            count += 1
        iov[count].iov_base = dest[r]
        iov[count].iov_len = nbytes[r]
        count += 1
        req_end = s + nbytes[r]
    return read_full(fd, iov, count, req_start) if count else 0


def read_spectra(int fd, const int64_t[::1] start, const int64_t[::1] order,
                 const int64_t[::1] offsets, object intensity, object mz, int64_t max_gap):
    """Read spectra k = 0 .. m-1 from file descriptor ``fd`` straight into place, then check
    them while they are in cache, as :func:`mz_problems` and :func:`first_nonfinite` do.

    Spectrum k's ``offsets[k + 1] - offsets[k]`` intensities, stored from file byte
    ``start[k]``, go to ``intensity[offsets[k]:]``, and its m/z values, stored from byte
    ``start[m + k]``, to ``mz[offsets[k]:]`` (writable contiguous arrays of the stored
    dtypes and of length ``offsets[m]``, ``offsets[0] == 0``). ``order`` lists the 2m
    ranges by ascending file position; ranges at most ``max_gap`` bytes apart are read by
    one positional read into many buffers (no intermediate buffer, no copy).

    Returns None when every check passes, else ``(descent, first, last, intensity)``, point
    indices or -1. Raises OSError when a read fails or the file ends first (callers read
    again through their general path, whose error names the file).
    """
    cdef Py_ssize_t m = offsets.shape[0] - 1, k, n
    cdef int64_t in_size, mz_size
    cdef int in_type, mz_type, err = 0
    cdef int64_t found[4]
    cdef char* in_data
    cdef char* mz_data
    cdef char** dest = NULL
    cdef int64_t* nbytes = NULL
    cdef char* skip = NULL
    cdef iovec* iov = NULL
    if not (fresh_vector(intensity) and fresh_vector(mz) and cnp.PyArray_DIM(
            <cnp.ndarray>mz, 0) == cnp.PyArray_DIM(<cnp.ndarray>intensity, 0)):
        raise TypeError("read_spectra needs fresh contiguous arrays of one length")
    if cnp.PyArray_TYPE(<cnp.ndarray>mz) not in (cnp.NPY_DOUBLE, cnp.NPY_FLOAT, cnp.NPY_INT32,
                                                 cnp.NPY_INT64):
        raise TypeError("m/z values are stored as float32, float64, int32 or int64")
    n = cnp.PyArray_DIM(<cnp.ndarray>intensity, 0)
    if m < 0 or start.shape[0] != 2 * m or order.shape[0] != 2 * m:
        raise ValueError("read_spectra needs m + 1 offsets and 2m starts and order entries")
    if m == 0 or offsets[0] != 0 or offsets[m] != n:
        if m <= 0 and n == 0:
            return None
        raise ValueError("offsets must rise from 0 to the length of the arrays")
    for k in range(m):
        if offsets[k + 1] < offsets[k]:
            raise ValueError("offsets must not fall")
    for k in range(2 * m):
        if start[k] < 0 or not 0 <= order[k] < 2 * m:
            raise ValueError("file positions must not be negative and order must index them")
    in_type = cnp.PyArray_TYPE(<cnp.ndarray>intensity)
    mz_type = cnp.PyArray_TYPE(<cnp.ndarray>mz)
    in_size = cnp.PyArray_ITEMSIZE(<cnp.ndarray>intensity)
    mz_size = cnp.PyArray_ITEMSIZE(<cnp.ndarray>mz)
    in_data = <char*>cnp.PyArray_DATA(<cnp.ndarray>intensity)
    mz_data = <char*>cnp.PyArray_DATA(<cnp.ndarray>mz)
    found[0] = found[1] = found[2] = found[3] = -1
    try:
        dest = <char**>malloc(2 * m * sizeof(char*))
        nbytes = <int64_t*>malloc(2 * m * sizeof(int64_t))
        skip = <char*>malloc(max(max_gap, 1))
        iov = <iovec*>malloc(MAX_IOV * sizeof(iovec))
        if not (dest and nbytes and skip and iov):
            raise MemoryError()
        with nogil:
            for k in range(m):
                nbytes[k] = (offsets[k + 1] - offsets[k]) * in_size
                dest[k] = in_data + offsets[k] * in_size
                nbytes[m + k] = (offsets[k + 1] - offsets[k]) * mz_size
                dest[m + k] = mz_data + offsets[k] * mz_size
            err = read_ranges_into(fd, &order[0], &start[0], nbytes, dest, 2 * m,
                                   max(max_gap, 0), skip, iov)
            if err == 0 and n:
                if mz_type == cnp.NPY_DOUBLE:
                    mz_check(<const double*>mz_data, &offsets[0], m, found)
                elif mz_type == cnp.NPY_FLOAT:
                    mz_check(<const float*>mz_data, &offsets[0], m, found)
                elif mz_type == cnp.NPY_INT32:
                    mz_check(<const int32_t*>mz_data, &offsets[0], m, found)
                else:
                    mz_check(<const int64_t*>mz_data, &offsets[0], m, found)
                if in_type == cnp.NPY_DOUBLE:
                    found[3] = nonfinite_at(<const double*>in_data, n)
                elif in_type == cnp.NPY_FLOAT:
                    found[3] = nonfinite_at(<const float*>in_data, n)
    finally:
        free(dest)
        free(nbytes)
        free(skip)
        free(iov)
    if err:
        raise OSError(err, "positional read failed") if err > 0 else OSError("unexpected end of file")
    if found[0] < 0 and found[1] < 0 and found[2] < 0 and found[3] < 0:
        return None
    return found[0], found[1], found[2], found[3]


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
