"""Byte-level scan of imzML ``<spectrumList>`` blocks (compiled as ``ionmap._xmlscan``).

One pass over the bytes, without the GIL, finds two independent kinds of match, each
searched left to right and resuming after its previous match (regular-expression
``findall`` semantics):

- a *token*: ``accession="ACC"`` with ACC one of the given accessions, taken from ACC up to
  (not including) the next ``>`` or the end of the block;
- a *reference*: ``<referenceableParamGroupRef`` + whitespace + ``ref="VALUE"`` gives
  VALUE, and ``<!`` (comment, CDATA) gives an empty reference.

:func:`scan` returns the tokens (to learn a template from one spectrum);
:func:`scan_block` checks every token of a block against a template and parses the values
it needs in place (integers, and the extremes of the m/z hints), writing typed columns.
"""
from libc.math cimport INFINITY, NAN, floor, isfinite
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport free, malloc, realloc, strtod
from libc.string cimport memchr, memcmp, memcpy

import numpy as np

cdef extern from "bytefind.h" nogil:
    Py_ssize_t bf_find(const unsigned char* s, Py_ssize_t n, const unsigned char* needle,
                       Py_ssize_t m)
    Py_ssize_t bf_find_pair(const unsigned char* s, Py_ssize_t n, unsigned char c,
                            unsigned char a, unsigned char b)

cdef const unsigned char* ACC = b'accession="'
cdef Py_ssize_t ACC_LEN = 11
cdef const char* REF = b"referenceableParamGroupRef"
cdef Py_ssize_t REF_LEN = 26
cdef const char* REF_ATTR = b'ref="'
cdef enum:
    LT = 60
    GT = 62
    QUOTE = 34
    BANG = 33
    AMP = 38
    LOWER_R = 114

# what the matcher found
cdef enum:
    END = 0
    TOKEN = 1
    REFERENCE = 2

# template columns (``cols`` of scan_block): integer columns, then the m/z hints
cdef enum:
    COL_X = 0
    COL_Y = 1
    COL_Z = 2
    COL_MZ_OFFSET = 3
    COL_MZ_LENGTH = 4
    COL_INT_OFFSET = 5
    COL_INT_LENGTH = 6
    COL_LOWEST = 7
    COL_HIGHEST = 8
    N_COLS = 9

cdef int64_t EXACT = 9007199254740992  # 2**53: every integer below is exact in a double
cdef int64_t INT32_MAX = 2147483647


cdef inline bint is_space(unsigned char c) noexcept nogil:
    # the ASCII whitespace of a bytes regex's \s
    return c == 32 or 9 <= c <= 13


cdef inline bint is_digit(unsigned char c) noexcept nogil:
    return 48 <= c <= 57


cdef inline bint in_words(const unsigned char* s, Py_ssize_t n, const unsigned char* words,
                          const Py_ssize_t* bounds, Py_ssize_t n_words) noexcept nogil:
    """s[:n] is one of the words, sorted as Python sorts bytes (binary search)."""
    cdef Py_ssize_t lo = 0, hi = n_words, mid, size
    cdef int c
    while lo < hi:
        mid = (lo + hi) >> 1
        size = bounds[mid + 1] - bounds[mid]
        c = memcmp(words + bounds[mid], s, size if size < n else n)
        if c == 0:
            if size == n:
                return True
            c = -1 if size < n else 1
        if c < 0:
            lo = mid + 1
        else:
            hi = mid
    return False


cdef struct Matcher:
    const unsigned char* s
    Py_ssize_t n
    const unsigned char* words
    const Py_ssize_t* wb
    Py_ssize_t n_words
    Py_ssize_t longest
    const unsigned char* hint  # a word the next token is likely to be (checked first)
    Py_ssize_t hint_len  # -1: no hint
    Py_ssize_t tok, ref  # where each search resumes
    Py_ssize_t p, r  # next candidates, valid while >= their search's resume position
    Py_ssize_t quote_free  # no '"' at or after this position
    Py_ssize_t v, e  # the match: token text s[v:e], or reference value s[v:e]


cdef void matcher_init(Matcher* m, const unsigned char* s, Py_ssize_t n,
                       const unsigned char* words, const Py_ssize_t* wb, Py_ssize_t n_words,
                       Py_ssize_t longest) noexcept nogil:
    m.s = s
    m.n = n
    m.words = words
    m.wb = wb
    m.n_words = n_words
    m.longest = longest
    m.hint = NULL
    m.hint_len = -1
    m.tok = m.ref = 0
    m.p = m.r = -1
    m.quote_free = n


cdef int next_match(Matcher* m) noexcept nogil:
    """The next token or reference (sets m.v, m.e), or END."""
    cdef const unsigned char* s = m.s
    cdef Py_ssize_t n = m.n, v, e, q, size
    cdef const unsigned char* hit
    while True:
        if m.p < m.tok:
            q = bf_find(s + m.tok, n - m.tok, ACC, ACC_LEN) if m.tok < n else -1
            m.p = n if q < 0 else m.tok + q
        if m.r < m.ref:
            # only a '<' followed by 'r' (a group reference) or '!' can match below
            q = bf_find_pair(s + m.ref, n - m.ref, LT, LOWER_R, BANG) if m.ref < n else -1
            m.r = n if q < 0 else m.ref + q
        if m.p >= n and m.r >= n:
            return END
        if m.p <= m.r:  # a token candidate at p
            v = m.p + ACC_LEN
            e = v + m.longest + 1 if v + m.longest + 1 < n else n
            hit = <const unsigned char*>memchr(s + v, QUOTE, e - v)
            size = -2 if hit == NULL else hit - s - v
            if size == -2 or not (
                    (size == m.hint_len and memcmp(s + v, m.hint, size) == 0)
                    or in_words(s + v, size, m.words, m.wb, m.n_words)):
                m.tok = m.p + 1
                continue
            hit = <const unsigned char*>memchr(s + v, GT, n - v)
            e = n if hit == NULL else hit - s
            m.tok = e
            m.v = v
            m.e = e
            return TOKEN
        # a '<' at r
        m.ref = m.r + 1
        if m.r + 1 < n and s[m.r + 1] == BANG:
            m.v = m.e = m.r
            m.ref = m.r + 2
            return REFERENCE
        if (m.r + 1 + REF_LEN < n and memcmp(s + m.r + 1, REF, REF_LEN) == 0
                and is_space(s[m.r + 1 + REF_LEN])):
            q = m.r + 2 + REF_LEN
            while q < n and is_space(s[q]):
                q += 1
            if q + 5 > n or memcmp(s + q, REF_ATTR, 5) != 0:
                continue
            v = q + 5
            hit = NULL
            if v < m.quote_free:
                hit = <const unsigned char*>memchr(s + v, QUOTE, n - v)
            if hit == NULL:
                if v < m.quote_free:
                    m.quote_free = v
                continue
            m.v = v
            m.e = hit - s
            m.ref = m.e + 1
            return REFERENCE


cdef inline bint ref_is(Matcher* m, const unsigned char* want, const Py_ssize_t* rb,
                        Py_ssize_t n_want, Py_ssize_t n_ref) noexcept nogil:
    """The reference just matched is the expected one (references repeat cyclically)."""
    cdef Py_ssize_t i
    if n_want == 0:
        return False
    i = n_ref % n_want
    return rb[i + 1] - rb[i] == m.e - m.v and memcmp(m.s + m.v, want + rb[i], m.e - m.v) == 0


cdef class _Words:
    """Concatenated byte strings and their bounds, kept alive for a scan."""
    cdef bytes data
    cdef Py_ssize_t[::1] bounds
    cdef Py_ssize_t n, longest

    def __init__(self, tuple items):
        self.data = b"".join(items)
        self.bounds = np.cumsum([0] + [len(w) for w in items]).astype(np.intp)
        self.n = len(items)
        self.longest = max([len(w) for w in items] + [0])


def scan(const unsigned char[::1] buf, tuple accessions, tuple refs, Py_ssize_t min_width):
    """Tokens and references of ``buf`` (see the module docstring).

    ``accessions``: the accepted accessions (bytes). ``refs``: the references expected, in
    order and repeated cyclically. Returns None as soon as a reference differs from the
    one expected, else ``(tokens, lengths, n_refs)``: the tokens as left-aligned rows of a
    NUL-padded uint8 array at least ``min_width`` wide, their lengths, and the number of
    references found.
    """
    cdef _Words words = _Words(tuple(sorted(accessions))), want = _Words(refs)
    cdef Matcher m
    cdef Py_ssize_t n_tok = 0, cap = 1024, n_ref = 0, width = min_width, i
    cdef int kind
    cdef int64_t* spans = <int64_t*>malloc(2 * cap * sizeof(int64_t))
    cdef int64_t* grown
    cdef bint ok = True, failed = False
    cdef const unsigned char* want_data = want.data
    if spans == NULL:
        raise MemoryError()
    matcher_init(&m, &buf[0] if buf.shape[0] else NULL, buf.shape[0], words.data,
                 &words.bounds[0], words.n, words.longest)
    with nogil:
        while ok:
            kind = next_match(&m)
            if kind == END:
                break
            if kind == TOKEN:
                if n_tok == cap:
                    grown = <int64_t*>realloc(spans, 4 * cap * sizeof(int64_t))
                    if grown == NULL:
                        failed = True
                        break
                    spans = grown
                    cap *= 2
                spans[2 * n_tok] = m.v
                spans[2 * n_tok + 1] = m.e
                n_tok += 1
                if m.e - m.v > width:
                    width = m.e - m.v
            else:
                ok = ref_is(&m, want_data, &want.bounds[0], want.n, n_ref)
                n_ref += 1
    if failed:
        free(spans)
        raise MemoryError()
    if not ok:
        free(spans)
        return None
    tokens = np.zeros((n_tok, width), np.uint8)
    lengths = np.empty(n_tok, np.int64)
    cdef unsigned char[:, ::1] out = tokens
    cdef int64_t[::1] lens = lengths
    with nogil:
        for i in range(n_tok):
            lens[i] = spans[2 * i + 1] - spans[2 * i]
            memcpy(&out[i, 0], m.s + spans[2 * i], lens[i])
    free(spans)
    return tokens, lengths, n_ref


# ---- number parsing -------------------------------------------------------------------
cdef Py_ssize_t value_end(const unsigned char* s, Py_ssize_t a, Py_ssize_t e) noexcept nogil:
    """End of the value starting at ``a`` (the closing quote before ``e``), or -1 when it is
    unterminated, empty or holds an entity reference (which only an XML parser reads)."""
    cdef const unsigned char* q = <const unsigned char*>memchr(s + a, QUOTE, e - a)
    if q == NULL or q == s + a or memchr(s + a, AMP, q - s - a) != NULL:
        return -1
    return q - s


cdef Py_ssize_t decimal_syntax(const unsigned char* s, Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """Length of the integer part when s[a:b] is a decimal number as Python's float()
    reads it without surprises, ``[+-]DIGITS[.DIGITS][(e|E)[+-]DIGITS]`` (a bare ``.5`` or
    ``5.`` included), else -1. Anything else goes to the XML parser path."""
    cdef Py_ssize_t i = a, k, digits = 0
    if i < b and (s[i] == 43 or s[i] == 45):  # + -
        i += 1
    k = i
    while i < b and is_digit(s[i]):
        i += 1
    digits = i - k
    if i < b and s[i] == 46:  # .
        i += 1
        k = i
        while i < b and is_digit(s[i]):
            i += 1
        if digits == 0 and i == k:
            return -1
    elif digits == 0:
        return -1
    if i < b and (s[i] == 101 or s[i] == 69):  # e E
        i += 1
        if i < b and (s[i] == 43 or s[i] == 45):
            i += 1
        k = i
        while i < b and is_digit(s[i]):
            i += 1
        if i == k:
            return -1
    return digits if i == b else -1


cdef double to_double(const unsigned char* s, Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    # strtod stops at the closing quote, which s[b] is
    return strtod(<const char*>(s + a), NULL)


cdef bint parse_integer(const unsigned char* s, Py_ssize_t a, Py_ssize_t b,
                        int64_t* out) noexcept nogil:
    """An exact integer: ``[+-]DIGITS`` (up to 18 digits), or a decimal/scientific number
    (``1.6E+4``) whose value is an integer below 2**53. False otherwise."""
    cdef Py_ssize_t i = a
    cdef bint neg = False
    cdef int64_t v = 0
    cdef double d
    if i < b and (s[i] == 43 or s[i] == 45):
        neg = s[i] == 45
        i += 1
    if 0 < b - i <= 18:
        while i < b and is_digit(s[i]):
            v = v * 10 + (s[i] - 48)
            i += 1
        if i == b:
            out[0] = -v if neg else v
            return True
    if decimal_syntax(s, a, b) < 0:
        return False
    d = to_double(s, a, b)
    if not isfinite(d) or d != floor(d) or not (-EXACT < d < EXACT):
        return False
    out[0] = <int64_t>d
    return True


def parse_integer_text(const unsigned char[::1] text):
    """The integer :func:`scan_block` reads from a value (bytes, without quotes), or None
    when it hands such a value to the XML parser (for tests)."""
    cdef bytes quoted = bytes(text) + b'"'
    cdef const unsigned char* s = quoted
    cdef int64_t v
    if text.shape[0] == 0 or memchr(s, AMP, text.shape[0]) != NULL:
        return None
    return v if parse_integer(s, 0, text.shape[0], &v) else None


cdef struct Extreme:
    # Running minimum (or maximum) of decimal texts, parsing only the values that can
    # change it. A plain decimal is ranked by its truncated fixed-point prefix
    # int(value * 1e6): one whose prefix lies beyond the current extreme's (with a margin
    # for the rounding of extreme * 1e6) cannot be the extreme and is not converted; the
    # others are converted with strtod (correctly rounded, as Python's float()).
    bint smallest
    bint have
    double best


cdef inline void extreme_init(Extreme* x, bint smallest) noexcept nogil:
    x.smallest = smallest
    x.have = False
    x.best = INFINITY if smallest else -INFINITY


cdef bint extreme_add(Extreme* x, const unsigned char* s, Py_ssize_t a,
                      Py_ssize_t b) noexcept nogil:
    """Fold s[a:b] in; False when it is not a number the fast path reads."""
    cdef Py_ssize_t int_digits = decimal_syntax(s, a, b), i = a, d6
    cdef int64_t prefix = 0, limit
    cdef double d
    if int_digits < 0:
        return False
    if (x.have and 0 <= x.best < 1e9 and int_digits <= 12 and s[a] != 43 and s[a] != 45):
        # a plain non-negative decimal: its prefix (integer part and 6 decimals)
        while i < b and is_digit(s[i]):
            prefix = prefix * 10 + (s[i] - 48)
            i += 1
        if i < b and s[i] == 46:
            i += 1
        for d6 in range(6):
            prefix *= 10
            if i < b and is_digit(s[i]):
                prefix += s[i] - 48
                i += 1
        while i < b and is_digit(s[i]):
            i += 1
        if i == b:  # no exponent: value in [prefix, prefix + 1) * 1e-6
            limit = <int64_t>floor(x.best * 1e6)  # within 1 of best * 1e6 below 1e15
            if x.smallest and prefix > limit + 2:
                return True
            if not x.smallest and prefix + 1 < limit - 2:
                return True
    d = to_double(s, a, b)
    if not x.have or (d < x.best if x.smallest else d > x.best):
        x.best = d
    x.have = True
    return True


def extreme_of(list texts, bint smallest):
    """The min (or max) :func:`scan_block` finds among decimal texts (bytes), or None when
    one is a value it hands to the XML parser (for tests)."""
    cdef Extreme x
    cdef bytes quoted
    cdef const unsigned char* s
    extreme_init(&x, smallest)
    for t in texts:
        quoted = bytes(t) + b'"'
        s = quoted
        if len(t) == 0 or not extreme_add(&x, s, 0, len(t)):
            return None
    return x.best


# ---- a block against a template -------------------------------------------------------
def scan_block(const unsigned char[::1] buf, tuple accessions, tuple refs, tuple fixed,
               const unsigned char[::1] has_value, const int32_t[::1] cols,
               int32_t[:, ::1] coords, int64_t[::1] mz_offset, int32_t[::1] mz_length,
               int64_t[::1] intensity_offset, int32_t[::1] intensity_length,
               Py_ssize_t row0):
    """Scan a block of whole spectra that repeat a template, writing their columns.

    The template: the ``k`` tokens of one spectrum, each of which must start with
    ``fixed[j]`` (its text up to and including ``value="``, or all of it when
    ``has_value[j]`` is 0, then the token must equal it); ``cols[j]``: which column token
    j's value goes to (0..6: x, y, z, m/z offset, m/z length, intensity offset, intensity
    length; 7/8: lowest/highest observed m/z; -1: none); ``refs``: the group references of
    one spectrum in order. Rows ``row0 ..`` of the output arrays receive the spectra
    (``coords[:, 2]`` = 1 when the template has no z); the caller leaves room for
    ``len(buf) // (11 * k) + 1`` rows.

    Returns ``(n, lowest, highest)``: the number of spectra, and the extremes of the m/z
    hints over spectra with data (+-inf when none has data, NaN when the template has no
    hint), or None when some token, value or reference differs from what the template
    allows (the caller then reads the block with the XML parser). Values written for a
    block that returns None are meaningless.
    """
    cdef _Words words = _Words(tuple(sorted(accessions))), want = _Words(refs), pre = _Words(fixed)
    cdef Py_ssize_t k = len(fixed), cap = coords.shape[0], j = 0, row = row0
    cdef Py_ssize_t n_ref = 0, a, b, t
    cdef Py_ssize_t hint_a[2]
    cdef Py_ssize_t hint_b[2]
    cdef int kind, col
    cdef int64_t value
    cdef bint ok = True, has_z = False, has_lo = False, has_hi = False, live = False
    cdef Matcher m
    cdef Extreme lo, hi
    cdef const unsigned char* pre_data = pre.data
    cdef const unsigned char* want_data = want.data
    cdef const unsigned char* quote
    # the accession of template token j, when it is one of the words: the hint for token j
    cdef Py_ssize_t[::1] hint_len = np.full(k, -1, np.intp)
    if k == 0 or has_value.shape[0] != k or cols.shape[0] != k:
        raise ValueError("template arrays differ in length")
    if (mz_offset.shape[0] < cap or mz_length.shape[0] < cap
            or intensity_offset.shape[0] < cap or intensity_length.shape[0] < cap
            or coords.shape[1] != 3):
        raise ValueError("output columns differ in size")
    extreme_init(&lo, True)
    extreme_init(&hi, False)
    for t in range(k):
        a = pre.bounds[t]
        quote = <const unsigned char*>memchr(pre_data + a, QUOTE, pre.bounds[t + 1] - a)
        if quote != NULL and in_words(pre_data + a, quote - pre_data - a, words.data,
                                      &words.bounds[0], words.n):
            hint_len[t] = quote - pre_data - a
        has_z |= cols[t] == COL_Z
        has_lo |= cols[t] == COL_LOWEST
        has_hi |= cols[t] == COL_HIGHEST
    matcher_init(&m, &buf[0] if buf.shape[0] else NULL, buf.shape[0], words.data,
                 &words.bounds[0], words.n, words.longest)
    with nogil:
        while ok:
            m.hint = pre_data + pre.bounds[j]
            m.hint_len = hint_len[j]
            kind = next_match(&m)
            if kind == END:
                break
            if kind == REFERENCE:
                ok = ref_is(&m, want_data, &want.bounds[0], want.n, n_ref)
                n_ref += 1
                continue
            # token j of the spectrum at ``row``
            if row >= cap:
                ok = False
                break
            a = pre.bounds[j]
            b = pre.bounds[j + 1]
            if m.e - m.v < b - a or memcmp(m.s + m.v, pre_data + a, b - a) != 0:
                ok = False
                break
            if not has_value[j]:
                if m.e - m.v != b - a:
                    ok = False
                    break
            else:
                col = cols[j]
                if col >= 0:
                    a = m.v + (b - a)
                    b = value_end(m.s, a, m.e)
                    if b < 0:
                        ok = False
                        break
                    if col >= COL_LOWEST:
                        hint_a[col - COL_LOWEST] = a
                        hint_b[col - COL_LOWEST] = b
                    else:
                        if not parse_integer(m.s, a, b, &value):
                            ok = False
                            break
                        if col <= COL_Z:
                            if not (-INT32_MAX - 1 <= value <= INT32_MAX):
                                ok = False
                                break
                            coords[row, col] = <int32_t>value
                        elif col == COL_MZ_OFFSET:
                            mz_offset[row] = value
                        elif col == COL_INT_OFFSET:
                            intensity_offset[row] = value
                        else:
                            if not (-INT32_MAX - 1 <= value <= INT32_MAX):
                                ok = False
                                break
                            if col == COL_MZ_LENGTH:
                                mz_length[row] = <int32_t>value
                            else:
                                intensity_length[row] = <int32_t>value
            j += 1
            if j == k:  # the spectrum is complete
                if not has_z:
                    coords[row, 2] = 1
                if intensity_length[row] > 0:
                    live = True
                    if has_lo and not extreme_add(&lo, m.s, hint_a[0], hint_b[0]):
                        ok = False
                        break
                    if has_hi and not extreme_add(&hi, m.s, hint_a[1], hint_b[1]):
                        ok = False
                        break
                j = 0
                row += 1
    if not ok or j != 0 or row == row0 or n_ref != want.n * (row - row0):
        return None
    if not live:
        return row - row0, INFINITY, -INFINITY
    return row - row0, lo.best if has_lo else NAN, hi.best if has_hi else NAN


def find(const unsigned char[::1] buf, const unsigned char[::1] needle, Py_ssize_t start,
         Py_ssize_t stop):
    """``bytes.find(needle, start, stop)`` over ``buf`` (0 <= start <= stop <= len(buf)),
    without the GIL: ``bytes.find`` uses a two-way search several times slower on the
    megabytes of a block. ``needle`` has at least 2 bytes."""
    cdef Py_ssize_t q
    if needle.shape[0] < 2 or not 0 <= start <= stop <= buf.shape[0]:
        raise ValueError("needle shorter than 2 bytes, or start/stop outside the buffer")
    if stop - start < needle.shape[0]:
        return -1
    with nogil:
        q = bf_find(&buf[start], stop - start, &needle[0], needle.shape[0])
    return -1 if q < 0 else start + q
