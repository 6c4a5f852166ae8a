/* torch_rng.h - PyTorch's CPU random generator (torch.Generator on the CPU)
 * reproduced bit for bit: mt19937, torch.rand and torch.randn for float32.
 *
 *   bm_torch_rng g;
 *   bm_torch_rng_seed(&g, 42);              // torch.Generator().manual_seed(42)
 *   bm_torch_randn(&g, latents, 4*64*64);   // torch.randn((1,4,64,64), generator=g)
 *
 * How torch draws (ATen/native/cpu/DistributionTemplates.h, torch 1.13-2.x):
 *  - manual_seed(s) seeds mt19937 with the low 32 bits of s (2^32+7 == 7) and
 *    clears the cached second normal sample.
 *  - rand (float32): each value is (mt() & 0xFFFFFF) * 2^-24.
 *  - randn of fewer than 16 elements (or non-contiguous): one value at a time
 *    with normal_distribution<double>: u1, u2 from 53-bit doubles (two mt()
 *    words, first word high), r = sqrt(-2 log(1 - u2)), theta = 2 pi u1;
 *    returns r cos(theta) and caches r sin(theta) in the generator, which the
 *    next scalar-path value consumes.
 *  - randn of 16 or more elements: all n values are first filled with float
 *    uniforms, then every block of 16 is turned into normals by Box-Muller in
 *    float (u1 = 1 - data[j], u2 = data[j + 8], j < 8: data[j] = r cos,
 *    data[j + 8] = r sin); if n % 16 != 0 the LAST 16 positions are refilled
 *    with 16 fresh uniforms and transformed again. On CPUs with AVX2 torch
 *    uses avx_mathfun's log256_ps/sincos256_ps (cephes polynomials in float)
 *    for this transform; BM_TORCH_RNG_AVX2 (the default) reproduces that
 *    arithmetic exactly, BM_TORCH_RNG_SCALAR uses libm logf/cosf/sinf as
 *    torch's non-AVX2 build does (equal to within a few ulp).
 * The cache of the scalar path is not touched by the 16-block path. */
#ifndef BM_TORCH_RNG_H
#define BM_TORCH_RNG_H

#include <stdint.h>

#define BM_MT19937_N 624

typedef enum bm_torch_rng_mode {
  BM_TORCH_RNG_AVX2 = 0, /* torch built with AVX2 on an AVX2 CPU (the usual case) */
  BM_TORCH_RNG_SCALAR,   /* torch's portable normal_fill_16 (libm in float) */
} bm_torch_rng_mode;

typedef struct bm_torch_rng {
  uint32_t state[BM_MT19937_N];
  int left;                 /* words left before the next twist */
  int next;                 /* index of the next word */
  int has_next_normal;      /* the scalar path's cached r*sin(theta) */
  double next_normal;
  bm_torch_rng_mode mode;
} bm_torch_rng;

/* torch.Generator().manual_seed(seed). Keeps g->mode (set it after seeding
 * or leave the zero default, BM_TORCH_RNG_AVX2). */
void bm_torch_rng_seed(bm_torch_rng *g, uint64_t seed);
/* The next raw 32-bit mt19937 word (torch's generator->random()). */
uint32_t bm_torch_rng_u32(bm_torch_rng *g);
/* The next 64-bit value (random64(): first word high). */
uint64_t bm_torch_rng_u64(bm_torch_rng *g);

/* torch.rand(n, generator=g) in float32. */
void bm_torch_rand(bm_torch_rng *g, float *out, int64_t n);
/* torch.randn(shape, generator=g) in float32 for a contiguous tensor of n
 * elements (the shape does not matter, only n). */
void bm_torch_randn(bm_torch_rng *g, float *out, int64_t n);

#endif /* BM_TORCH_RNG_H */
