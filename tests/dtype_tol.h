/* dtype_tol.h - the error bounds of half-precision models against f32
 * references, shared by test_dtype (CPU) and bm_cuda_check --llm (GPU).
 *
 * Rounding to a dtype with p significant bits has a relative error of at
 * most its unit roundoff u = 2^-p: bf16 (p = 8) 3.9e-3, f16 (p = 11)
 * 4.9e-4. Every stored activation and weight carries such an error and the
 * model amplifies them into the output by a factor A (norms divide by small
 * variances, softmax exponentiates, the residual stream adds up the
 * layers). Errors (max|out - ref| / max|ref|) are bounded by AMP * u with
 * AMP a couple of times the worst A measured over the goldens (docs/models.md):
 * logits vs transformers' f32 at most 6.8 u, compiled vs the interpreter at
 * most 4.8 u. A real bug (a value read in the wrong dtype, a missing cast)
 * gives errors of order 1 = hundreds of u. */
#ifndef BM_TESTS_DTYPE_TOL_H
#define BM_TESTS_DTYPE_TOL_H

#include <math.h>
#include <stdint.h>

/* unit roundoff: half the distance between 1 and the next value */
#define BM_U_BF16 (1.0 / 256.0) /* 8 significant bits: 2^-8 */
#define BM_U_F16 (1.0 / 2048.0) /* 11 significant bits: 2^-11 */

/* amplification bounds, in units of u */
#define BM_AMP_GOLD 12.0   /* logits vs transformers' f32 (worst seen 6.8) */
#define BM_AMP_INTERP 10.0 /* compiled vs the interpreter on the same graph (worst seen 4.8) */

/* top1 - top2 of p[0..n), relative to max|p| (the scale of the errors above):
 * a greedy token is only checked where this exceeds twice the error bound,
 * since rounding may swap two candidates closer than that */
static inline double bm_top2_margin(const float *p, int64_t n) {
  float a = -INFINITY, b = -INFINITY, m = 0;
  for (int64_t i = 0; i < n; i++) {
    if (p[i] > a) b = a, a = p[i];
    else if (p[i] > b) b = p[i];
    if (fabsf(p[i]) > m) m = fabsf(p[i]);
  }
  return m > 0 ? (double)(a - b) / m : 0;
}

#endif
