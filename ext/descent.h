/* First descent of an m/z array (ionmap's kernels check every spectrum's m/z order): SSE2
 * when the compiler targets it, plain C otherwise; both give the same answers.
 *
 * A descent is a point not >= its predecessor (out of order, or NaN). The SSE2 loops test
 * eight points per branch with the unordered "not greater or equal" compare, which is true
 * for NaN as the scalar test is; the compiler does not vectorise the scalar early-exit loop
 * itself (about one point per cycle), and a spectrum picked on its own pays for the scan.
 */
#ifndef IONMAP_DESCENT_H
#define IONMAP_DESCENT_H
#include <stddef.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* The scalar scan from point i on (the tail of a vector loop, or all of it without SSE2). */
#define DESCENT_FROM(x, i, n)                                                                \
    for (; (i) < (n); (i)++)                                                                 \
        if (!((x)[i] >= (x)[(i) - 1]))                                                       \
            return (i);                                                                      \
    return (n)

/* First i >= 1 with !(x[i] >= x[i - 1]), or n. */
static inline ptrdiff_t descent_f64(const double *x, ptrdiff_t n)
{
    ptrdiff_t i = 1;
#if defined(__SSE2__)
    for (; i + 8 <= n; i += 8) {
        __m128d a = _mm_or_pd(_mm_cmpnge_pd(_mm_loadu_pd(x + i), _mm_loadu_pd(x + i - 1)),
                              _mm_cmpnge_pd(_mm_loadu_pd(x + i + 2), _mm_loadu_pd(x + i + 1)));
        __m128d b = _mm_or_pd(_mm_cmpnge_pd(_mm_loadu_pd(x + i + 4), _mm_loadu_pd(x + i + 3)),
                              _mm_cmpnge_pd(_mm_loadu_pd(x + i + 6), _mm_loadu_pd(x + i + 5)));
        if (_mm_movemask_pd(_mm_or_pd(a, b)))
            break;
    }
#endif
    DESCENT_FROM(x, i, n);
}

static inline ptrdiff_t descent_f32(const float *x, ptrdiff_t n)
{
    ptrdiff_t i = 1;
#if defined(__SSE2__)
    for (; i + 8 <= n; i += 8) {
        __m128 a = _mm_cmpnge_ps(_mm_loadu_ps(x + i), _mm_loadu_ps(x + i - 1));
        __m128 b = _mm_cmpnge_ps(_mm_loadu_ps(x + i + 4), _mm_loadu_ps(x + i + 3));
        if (_mm_movemask_ps(_mm_or_ps(a, b)))
            break;
    }
#endif
    DESCENT_FROM(x, i, n);
}

#endif
