/* Substring search for the XML scan (ionmap._xmlscan): SSE2 when the compiler targets it,
 * plain C otherwise; both give the same answers.
 *
 * The SSE2 loops follow the "generic SIMD" substring search (W. Mula, "SIMD-friendly
 * algorithms for substring searching", 2016): compare 16 positions at once against the
 * needle's first two and last bytes, and verify only the positions where all three agree. Unlike
 * glibc memmem there is no per-call set-up, which matters for the many short searches
 * of one spectrum (a match every ~100 bytes).
 */
#ifndef IONMAP_BYTEFIND_H
#define IONMAP_BYTEFIND_H
#include <stddef.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* First i >= 0 with s[i:i+m] == needle (m >= 2), or -1. */
static inline ptrdiff_t bf_find(const unsigned char *s, ptrdiff_t n,
                                const unsigned char *needle, ptrdiff_t m)
{
    ptrdiff_t i = 0, last = m - 1;
    const unsigned char first = needle[0], second = needle[1], final = needle[last];
    if (m < 2 || m > n)
        return -1;
#if defined(__SSE2__)
    {
        const __m128i f = _mm_set1_epi8((char)first), g = _mm_set1_epi8((char)second),
                      l = _mm_set1_epi8((char)final);
        for (; i + last + 16 <= n; i += 16) {
            __m128i a = _mm_loadu_si128((const __m128i *)(s + i));
            __m128i b = _mm_loadu_si128((const __m128i *)(s + i + 1));
            __m128i c = _mm_loadu_si128((const __m128i *)(s + i + last));
            unsigned mask = (unsigned)_mm_movemask_epi8(_mm_and_si128(
                _mm_and_si128(_mm_cmpeq_epi8(a, f), _mm_cmpeq_epi8(b, g)),
                _mm_cmpeq_epi8(c, l)));
            while (mask) {
                int k = __builtin_ctz(mask);
                if (memcmp(s + i + k + 2, needle + 2, (size_t)(m - 2)) == 0)
                    return i + k;
                mask &= mask - 1;
            }
        }
    }
#endif
    for (; i + last < n; i++)
        if (s[i] == first && s[i + 1] == second && s[i + last] == final
                && memcmp(s + i + 2, needle + 2, (size_t)(m - 2)) == 0)
            return i;
    return -1;
}

/* First i >= 0 with s[i] == c and s[i+1] one of a, b (so i + 1 < n), or -1. */
static inline ptrdiff_t bf_find_pair(const unsigned char *s, ptrdiff_t n, unsigned char c,
                                     unsigned char a, unsigned char b)
{
    ptrdiff_t i = 0;
#if defined(__SSE2__)
    {
        const __m128i vc = _mm_set1_epi8((char)c), va = _mm_set1_epi8((char)a),
                      vb = _mm_set1_epi8((char)b);
        for (; i + 17 <= n; i += 16) {
            __m128i x = _mm_loadu_si128((const __m128i *)(s + i));
            __m128i y = _mm_loadu_si128((const __m128i *)(s + i + 1));
            unsigned mask = (unsigned)_mm_movemask_epi8(_mm_and_si128(
                _mm_cmpeq_epi8(x, vc),
                _mm_or_si128(_mm_cmpeq_epi8(y, va), _mm_cmpeq_epi8(y, vb))));
            if (mask)
                return i + __builtin_ctz(mask);
        }
    }
#endif
    for (; i + 1 < n; i++)
        if (s[i] == c && (s[i + 1] == a || s[i + 1] == b))
            return i;
    return -1;
}
#endif
