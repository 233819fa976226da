"""Byte-level scan of imzML ``<spectrumList>`` blocks (compiled as ``ionmap._xmlscan``).

One pass over the bytes, without the GIL, finds two independent kinds of match, each
searched left to right and resuming after its previous match (regular-expression
``findall`` semantics):

- a *token*: ``accession="ACC"`` with ACC one of the given accessions, taken from ACC up to
  (not including) the next ``>`` or the end of the block;
- a *reference*: ``<referenceableParamGroupRef`` + whitespace + ``ref="VALUE"`` gives
  VALUE, and ``<!`` (comment, CDATA) gives an empty reference.
"""
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memchr, memcmp, memcpy

import numpy as np

cdef extern from "<string.h>" nogil:
    void *memmem(const void *haystack, size_t hlen, const void *needle, size_t nlen)

cdef const char* ACC = b'accession="'
cdef Py_ssize_t ACC_LEN = 11
cdef const char* REF = b"referenceableParamGroupRef"
cdef Py_ssize_t REF_LEN = 26
cdef const char* REF_ATTR = b'ref="'
cdef enum:
    LT = 60
    GT = 62
    QUOTE = 34
    BANG = 33


cdef inline bint is_space(unsigned char c) noexcept nogil:
    # the ASCII whitespace of a bytes regex's \s
    return c == 32 or 9 <= c <= 13


cdef inline bint in_words(const unsigned char* s, Py_ssize_t n, const unsigned char* words,
                          const Py_ssize_t* bounds, Py_ssize_t n_words) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n_words):
        if bounds[i + 1] - bounds[i] == n and memcmp(s, words + bounds[i], n) == 0:
            return True
    return False


def scan(const unsigned char[::1] buf, tuple accessions, tuple refs, Py_ssize_t min_width):
    """Tokens and references of ``buf`` (see the module docstring).

    ``accessions``: the accepted accessions (bytes). ``refs``: the references expected, in
    order and repeated cyclically. Returns None as soon as a reference differs from the
    one expected, else ``(tokens, lengths, n_refs)``: the tokens as left-aligned rows of a
    NUL-padded uint8 array at least ``min_width`` wide, their lengths, and the number of
    references found.
    """
    cdef bytes words_b = b"".join(accessions), refs_b = b"".join(refs)
    cdef const unsigned char* words = words_b
    cdef const unsigned char* want = refs_b
    cdef Py_ssize_t n_words = len(accessions), n_want = len(refs), i
    cdef Py_ssize_t[::1] wb = np.cumsum([0] + list(map(len, accessions))).astype(np.intp)
    cdef Py_ssize_t[::1] rb = np.cumsum([0] + list(map(len, refs))).astype(np.intp)
    cdef Py_ssize_t longest = max(list(map(len, accessions)) + [0])
    cdef const unsigned char* s = &buf[0] if buf.shape[0] else NULL
    cdef Py_ssize_t n = buf.shape[0]
    cdef Py_ssize_t tok = 0, ref = 0  # where each search resumes
    cdef Py_ssize_t quote_free = n  # no '"' at or after this position
    cdef Py_ssize_t n_tok = 0, cap = 1024, n_ref = 0, width = min_width
    cdef Py_ssize_t p, v, q, e, r, vlen
    cdef const unsigned char* hit
    cdef int64_t* spans = <int64_t*>malloc(2 * cap * sizeof(int64_t))
    cdef int64_t* grown
    cdef bint ok = True, failed = False
    if spans == NULL:
        raise MemoryError()
    with nogil:
        p = r = -1  # next candidates, valid while >= their search's resume position
        while ok:
            if p < tok:
                hit = NULL
                if tok < n:
                    hit = <const unsigned char*>memmem(s + tok, n - tok, ACC, ACC_LEN)
                p = n if hit == NULL else hit - s
            if r < ref:
                hit = NULL
                if ref < n:
                    hit = <const unsigned char*>memchr(s + ref, LT, n - ref)
                r = n if hit == NULL else hit - s
            if p >= n and r >= n:
                break
            if p <= r:  # a token candidate at p
                v = p + ACC_LEN
                e = v + longest + 1 if v + longest + 1 < n else n
                hit = <const unsigned char*>memchr(s + v, QUOTE, e - v)
                if hit == NULL or not in_words(s + v, hit - s - v, words, &wb[0], n_words):
                    tok = p + 1
                    continue
                hit = <const unsigned char*>memchr(s + v, GT, n - v)
                e = n if hit == NULL else hit - s
                if n_tok == cap:
                    grown = <int64_t*>realloc(spans, 4 * cap * sizeof(int64_t))
                    if grown == NULL:
                        failed = True
                        break
                    spans = grown
                    cap *= 2
                spans[2 * n_tok] = v
                spans[2 * n_tok + 1] = e
                n_tok += 1
                if e - v > width:
                    width = e - v
                tok = e
            else:  # a '<' at r
                ref = r + 1
                if r + 1 < n and s[r + 1] == BANG:
                    vlen = 0
                    v = r
                    ref = r + 2
                elif (r + 1 + REF_LEN < n and memcmp(s + r + 1, REF, REF_LEN) == 0
                        and is_space(s[r + 1 + REF_LEN])):
                    q = r + 2 + REF_LEN
                    while q < n and is_space(s[q]):
                        q += 1
                    if q + 5 > n or memcmp(s + q, REF_ATTR, 5) != 0:
                        continue
                    v = q + 5
                    hit = NULL
                    if v < quote_free:
                        hit = <const unsigned char*>memchr(s + v, QUOTE, n - v)
                    if hit == NULL:
                        if v < quote_free:
                            quote_free = v
                        continue
                    vlen = hit - s - v
                    ref = v + vlen + 1
                else:
                    continue
                if n_want == 0:
                    ok = False
                else:
                    i = n_ref % n_want
                    ok = rb[i + 1] - rb[i] == vlen and memcmp(s + v, want + rb[i], vlen) == 0
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
            memcpy(&out[i, 0], s + spans[2 * i], lens[i])
    free(spans)
    return tokens, lengths, n_ref
