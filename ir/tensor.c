/* tensor.c - host tensors for the reference interpreter and the tools:
 * allocation, and scalar conversions between f32 and every bm dtype. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "interp.h"

/* Largest tensor the interpreter will allocate (1 TiB): anything bigger is a
 * bad shape, not a real request. */
#define BM_TENSOR_MAX_BYTES ((int64_t)1 << 40)

/* ------------------------------------------------------------------ tensors */

int64_t bm_tensor_numel(const bm_tensor *t) {
  int64_t n = 1;
  for (int d = 0; d < t->ndim; d++) {
    int64_t s = t->shape[d];
    if (s < 0) return -1;
    if (s != 0 && n > INT64_MAX / s) return -1;
    n *= s;
  }
  return n;
}

size_t bm_tensor_nbytes(const bm_tensor *t) {
  int64_t n = bm_tensor_numel(t);
  if (n < 0 || n > BM_TENSOR_MAX_BYTES * 2) return 0;
  return bm_dtype_nbytes(t->dtype, n);
}

bm_status bm_tensor_alloc(bm_tensor *t, bm_dtype dtype, int ndim, const int64_t *shape) {
  memset(t, 0, sizeof *t);
  if ((unsigned)dtype >= BM_DTYPE_COUNT)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "tensor alloc: bad dtype %d", (int)dtype);
  if (ndim < 0 || ndim > BM_MAX_DIMS)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "tensor alloc: rank %d is not in [0, %d]",
                          ndim, BM_MAX_DIMS);
  t->dtype = dtype;
  t->ndim = ndim;
  for (int d = 0; d < ndim; d++) {
    if (shape[d] < 0)
      return bm_status_make(BM_ERR_INVALID_ARGUMENT, "tensor alloc: dim %d is negative (%lld)",
                            d, (long long)shape[d]);
    t->shape[d] = shape[d];
  }
  int64_t n = bm_tensor_numel(t);
  if (n < 0 || n > BM_TENSOR_MAX_BYTES)
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "tensor alloc: %d-d %s tensor is too large",
                          ndim, bm_dtype_name(dtype));
  size_t bytes = bm_dtype_nbytes(dtype, n);
  if ((int64_t)bytes > BM_TENSOR_MAX_BYTES)
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "tensor alloc: %zu bytes is too large", bytes);
  t->data = calloc(bytes ? bytes : 1, 1);
  if (!t->data)
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "tensor alloc: cannot allocate %zu bytes", bytes);
  return NULL;
}

void bm_tensor_free(bm_tensor *t) {
  if (!t) return;
  free(t->data);
  t->data = NULL;
}

/* ------------------------------------------------------------------ bits */

static uint32_t f32_bits(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  return x;
}

static float bits_f32(uint32_t x) {
  float f;
  memcpy(&f, &x, 4);
  return f;
}

/* Rounds the finite, non-negative f32 with bits `ax` to a small float format
 * with `mbits` mantissa bits and exponent bias `bias`, round to nearest even.
 * Returns the code (biased exponent << mbits | mantissa) without any
 * overflow handling: a code past the format's largest finite value means
 * "too large" and the caller decides (inf or saturate). */
static uint32_t round_small_float(uint32_t ax, int mbits, int bias) {
  int e = (int)(ax >> 23) - 127; /* unbiased exponent */
  int shift = 23 - mbits;
  if (e >= 1 - bias) {
    /* normal in the target: rebias the exponent, round the mantissa; a carry
     * out of the mantissa correctly bumps the exponent */
    uint32_t x = ax - ((uint32_t)(127 - bias) << 23);
    uint32_t half = (1u << (shift - 1)) - 1;
    return (x + half + ((x >> shift) & 1)) >> shift;
  }
  /* subnormal in the target: count units of 2^(1 - bias - mbits) */
  uint32_t m = (ax & 0x7fffff) | ((ax >> 23) ? 0x800000u : 0);
  shift += (1 - bias) - e;
  if (shift >= 25) return 0; /* below half the smallest subnormal */
  uint32_t q = m >> shift;
  uint32_t rem = m & ((1u << shift) - 1);
  uint32_t half = 1u << (shift - 1);
  if (rem > half || (rem == half && (q & 1))) q++;
  return q;
}

/* ------------------------------------------------------------------ f16 */

float bm_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  if (exp == 0) { /* zero or subnormal: mant * 2^-24, exact in f32 */
    float v = ldexpf((float)mant, -24);
    return (h & 0x8000) ? -v : v;
  }
  if (exp == 31) return bits_f32(sign | 0x7f800000 | (mant << 13)); /* inf, NaN */
  return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t bm_f32_to_f16(float f) {
  uint32_t x = f32_bits(f);
  uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
  uint32_t ax = x & 0x7fffffff;
  if (ax > 0x7f800000) return sign | 0x7e00 | (uint16_t)((ax >> 13) & 0x1ff); /* quiet NaN */
  if (ax == 0x7f800000) return sign | 0x7c00;
  uint32_t c = round_small_float(ax, 10, 15);
  if (c >= 0x7c00) return sign | 0x7c00; /* overflow: >= 65520 -> inf */
  return sign | (uint16_t)c;
}

/* ------------------------------------------------------------------ bf16 */

float bm_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t bm_f32_to_bf16(float f) {
  uint32_t x = f32_bits(f);
  if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
  /* round to nearest even; overflow carries into inf correctly */
  return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

/* ------------------------------------------------------------------ fp8 */

/* e4m3 (OCP "FN"): bias 7, no inf, S.1111.111 is NaN, max 448. */
float bm_fp8_e4m3_to_f32(uint8_t v) {
  int exp = (v >> 3) & 0xf, mant = v & 7;
  float r;
  if (exp == 15 && mant == 7)
    r = NAN;
  else if (exp == 0)
    r = ldexpf((float)mant, -9);
  else
    r = ldexpf(1.0f + (float)mant / 8.0f, exp - 7);
  return (v & 0x80) ? -r : r;
}

uint8_t bm_f32_to_fp8_e4m3(float f) {
  uint32_t x = f32_bits(f);
  uint8_t sign = (uint8_t)((x >> 24) & 0x80);
  uint32_t ax = x & 0x7fffffff;
  if (ax > 0x7f800000) return sign | 0x7f;  /* NaN */
  if (ax == 0x7f800000) return sign | 0x7e; /* inf saturates to 448 */
  uint32_t c = round_small_float(ax, 3, 7);
  if (c > 0x7e) c = 0x7e;                   /* saturate */
  return sign | (uint8_t)c;
}

/* e5m2: bias 15, IEEE-like (inf and NaN); the top byte of an f16. */
float bm_fp8_e5m2_to_f32(uint8_t v) { return bm_f16_to_f32((uint16_t)(v << 8)); }

uint8_t bm_f32_to_fp8_e5m2(float f) {
  uint32_t x = f32_bits(f);
  uint8_t sign = (uint8_t)((x >> 24) & 0x80);
  uint32_t ax = x & 0x7fffffff;
  if (ax > 0x7f800000) return sign | 0x7e;  /* NaN */
  uint32_t c = ax == 0x7f800000 ? 0x7c : round_small_float(ax, 2, 15);
  if (c >= 0x7c) c = 0x7c;                  /* overflow -> inf */
  return sign | (uint8_t)c;
}

/* ------------------------------------------------------------------ element access */

/* float -> integer: truncate toward zero, saturate to [lo, hi], NaN -> 0. */
static int64_t f32_to_int_sat(float v, int64_t lo, int64_t hi) {
  if (isnan(v)) return 0;
  if (v <= (float)lo) return lo;
  if (v >= (float)hi) return hi; /* (float)hi rounds up to a power of two */
  return (int64_t)v;
}

static int i4_load(const void *p, int64_t i) {
  uint8_t byte = ((const uint8_t *)p)[i / 2];
  int nib = (i & 1) ? byte >> 4 : byte & 0xf;
  return nib >= 8 ? nib - 16 : nib;
}

static void i4_store(void *p, int64_t i, int64_t v) {
  if (v < -8) v = -8;
  if (v > 7) v = 7;
  uint8_t *b = (uint8_t *)p + i / 2;
  uint8_t nib = (uint8_t)(v & 0xf);
  *b = (i & 1) ? (uint8_t)((*b & 0x0f) | (nib << 4)) : (uint8_t)((*b & 0xf0) | nib);
}

float bm_load_f32(const void *p, bm_dtype t, int64_t i) {
  const uint8_t *b = p;
  switch (t) {
    case BM_DTYPE_F32: { float v; memcpy(&v, b + 4 * i, 4); return v; }
    case BM_DTYPE_F16: { uint16_t h; memcpy(&h, b + 2 * i, 2); return bm_f16_to_f32(h); }
    case BM_DTYPE_BF16: { uint16_t h; memcpy(&h, b + 2 * i, 2); return bm_bf16_to_f32(h); }
    case BM_DTYPE_I8: return (float)(int8_t)b[i];
    case BM_DTYPE_I4: return (float)i4_load(p, i);
    case BM_DTYPE_FP8_E4M3: return bm_fp8_e4m3_to_f32(b[i]);
    case BM_DTYPE_FP8_E5M2: return bm_fp8_e5m2_to_f32(b[i]);
    case BM_DTYPE_I32: { int32_t v; memcpy(&v, b + 4 * i, 4); return (float)v; }
    case BM_DTYPE_I64: { int64_t v; memcpy(&v, b + 8 * i, 8); return (float)v; }
    default: return NAN;
  }
}

int64_t bm_load_i64(const void *p, bm_dtype t, int64_t i) {
  const uint8_t *b = p;
  switch (t) {
    case BM_DTYPE_I8: return (int8_t)b[i];
    case BM_DTYPE_I4: return i4_load(p, i);
    case BM_DTYPE_I32: { int32_t v; memcpy(&v, b + 4 * i, 4); return v; }
    case BM_DTYPE_I64: { int64_t v; memcpy(&v, b + 8 * i, 8); return v; }
    default: return f32_to_int_sat(bm_load_f32(p, t, i), INT64_MIN, INT64_MAX);
  }
}

void bm_store_f32(void *p, bm_dtype t, int64_t i, float v) {
  uint8_t *b = p;
  switch (t) {
    case BM_DTYPE_F32: memcpy(b + 4 * i, &v, 4); break;
    case BM_DTYPE_F16: { uint16_t h = bm_f32_to_f16(v); memcpy(b + 2 * i, &h, 2); break; }
    case BM_DTYPE_BF16: { uint16_t h = bm_f32_to_bf16(v); memcpy(b + 2 * i, &h, 2); break; }
    case BM_DTYPE_I8: b[i] = (uint8_t)(int8_t)f32_to_int_sat(v, INT8_MIN, INT8_MAX); break;
    case BM_DTYPE_I4: i4_store(p, i, f32_to_int_sat(v, -8, 7)); break;
    case BM_DTYPE_FP8_E4M3: b[i] = bm_f32_to_fp8_e4m3(v); break;
    case BM_DTYPE_FP8_E5M2: b[i] = bm_f32_to_fp8_e5m2(v); break;
    case BM_DTYPE_I32: {
      int32_t x = (int32_t)f32_to_int_sat(v, INT32_MIN, INT32_MAX);
      memcpy(b + 4 * i, &x, 4);
      break;
    }
    case BM_DTYPE_I64: {
      int64_t x = f32_to_int_sat(v, INT64_MIN, INT64_MAX);
      memcpy(b + 8 * i, &x, 8);
      break;
    }
    default: break;
  }
}

void bm_store_i64(void *p, bm_dtype t, int64_t i, int64_t v) {
  uint8_t *b = p;
  switch (t) {
    case BM_DTYPE_I8: b[i] = (uint8_t)(int8_t)(v < INT8_MIN ? INT8_MIN : v > INT8_MAX ? INT8_MAX : v); break;
    case BM_DTYPE_I4: i4_store(p, i, v); break;
    case BM_DTYPE_I32: {
      int32_t x = (int32_t)(v < INT32_MIN ? INT32_MIN : v > INT32_MAX ? INT32_MAX : v);
      memcpy(b + 4 * i, &x, 4);
      break;
    }
    case BM_DTYPE_I64: memcpy(b + 8 * i, &v, 8); break;
    default: bm_store_f32(p, t, i, (float)v); break;
  }
}
