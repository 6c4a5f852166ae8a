/* test_interp.c - the reference interpreter against hand-computed answers:
 * dtype conversions, every op, broadcasting, symbols, epilogues and errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../ir/interp.h"
#include "testutil.h"

/* ------------------------------------------------------------------ helpers */

static bm_module *mod;

static bm_graph *new_graph(void) {
  if (mod) bm_module_destroy(mod);
  mod = bm_module_create("test");
  return bm_graph_create(mod, "main");
}

static bm_node *in_f32(bm_graph *g, const char *name, int ndim, const int64_t *shape) {
  return bm_input(g, name, BM_DTYPE_F32, ndim, shape);
}

static bm_node *const_f32(bm_graph *g, int ndim, const int64_t *shape, const float *data) {
  return bm_const(g, BM_DTYPE_F32, ndim, shape, data);
}

static bm_tensor tensor_f32(int ndim, const int64_t *shape, const float *data) {
  bm_tensor t;
  bm_status s = bm_tensor_alloc(&t, BM_DTYPE_F32, ndim, shape);
  CHECK(s == NULL);
  bm_status_free(s);
  if (t.data) memcpy(t.data, data, (size_t)bm_tensor_numel(&t) * sizeof(float));
  return t;
}

/* Runs g (one output) and checks the output's shape and values. */
static void expect(bm_graph *g, const bm_tensor *inputs, int ndim, const int64_t *shape,
                   const float *want, float tol, int line) {
  CHECK_MSG(bm_graph_status(g) == NULL, "line %d: build error: %s", line,
            bm_status_message(bm_graph_status(g)));
  if (bm_graph_status(g)) return;
  bm_tensor out;
  bm_status s = bm_interp_run(g, inputs, &out);
  CHECK_MSG(s == NULL, "line %d: %s", line, bm_status_message(s));
  if (s) {
    bm_status_free(s);
    return;
  }
  CHECK_MSG(out.ndim == ndim, "line %d: rank %d, want %d", line, out.ndim, ndim);
  bool shape_ok = out.ndim == ndim;
  for (int d = 0; shape_ok && d < ndim; d++) shape_ok = out.shape[d] == shape[d];
  CHECK_MSG(shape_ok, "line %d: shape differs", line);
  if (shape_ok) {
    int64_t n = bm_tensor_numel(&out);
    for (int64_t i = 0; i < n; i++) {
      float got = bm_load_f32(out.data, out.dtype, i);
      CHECK_MSG(fabsf(got - want[i]) <= tol * (1.0f + fabsf(want[i])),
                "line %d: element %lld is %.7g, want %.7g", line, (long long)i, got, want[i]);
    }
  }
  bm_tensor_free(&out);
}
#define EXPECT(g, inputs, ndim, shape, want, tol) expect(g, inputs, ndim, shape, want, tol, __LINE__)

static void free_inputs(bm_tensor *t, int n) {
  for (int i = 0; i < n; i++) bm_tensor_free(&t[i]);
}

/* ------------------------------------------------------------------ conversions */

static float from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static void test_f16(void) {
  CHECK(bm_f32_to_f16(1.0f) == 0x3c00);
  CHECK(bm_f32_to_f16(-2.0f) == 0xc000);
  CHECK(bm_f32_to_f16(-0.0f) == 0x8000);
  CHECK(bm_f32_to_f16(65504.0f) == 0x7bff);
  CHECK(bm_f32_to_f16(65519.0f) == 0x7bff);
  CHECK(bm_f32_to_f16(65520.0f) == 0x7c00); /* halfway to 65536 rounds to even: inf */
  CHECK(bm_f32_to_f16(INFINITY) == 0x7c00);
  CHECK(bm_f32_to_f16(-INFINITY) == 0xfc00);
  uint16_t nan = bm_f32_to_f16(NAN);
  CHECK((nan & 0x7c00) == 0x7c00 && (nan & 0x3ff) != 0);
  CHECK(isnan(bm_f16_to_f32(0x7e00)));
  CHECK(bm_f16_to_f32(0x7c00) == INFINITY);
  /* ties to even */
  CHECK(bm_f32_to_f16(1.0f + ldexpf(1, -11)) == 0x3c00);
  CHECK(bm_f32_to_f16(1.0f + 3 * ldexpf(1, -11)) == 0x3c02);
  CHECK(bm_f32_to_f16(1.0f + ldexpf(1, -11) + ldexpf(1, -20)) == 0x3c01);
  /* subnormals */
  CHECK(bm_f16_to_f32(0x0001) == ldexpf(1, -24));
  CHECK(bm_f16_to_f32(0x03ff) == ldexpf(1023, -24));
  CHECK(bm_f32_to_f16(ldexpf(1, -24)) == 0x0001);
  CHECK(bm_f32_to_f16(ldexpf(1, -25)) == 0x0000);           /* tie -> even (0) */
  CHECK(bm_f32_to_f16(ldexpf(3, -26)) == 0x0001);           /* 0.75 units -> 1 */
  CHECK(bm_f32_to_f16(ldexpf(3, -25)) == 0x0002);           /* 1.5 units tie -> 2 */
  CHECK(bm_f32_to_f16(ldexpf(5, -25)) == 0x0002);           /* 2.5 units tie -> 2 */
  CHECK(bm_f32_to_f16(ldexpf(1, -14) - ldexpf(1, -25)) == 0x0400); /* rounds up into normal */
  CHECK(bm_f32_to_f16(-ldexpf(1, -24)) == 0x8001);
  CHECK(bm_f32_to_f16(1e-30f) == 0x0000);
  CHECK(bm_f32_to_f16(from_bits(1)) == 0x0000); /* f32 subnormal */
  /* every finite f16 round-trips exactly */
  int bad = 0;
  for (uint32_t h = 0; h < 65536; h++) {
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue;
    if (bm_f32_to_f16(bm_f16_to_f32((uint16_t)h)) != h) bad++;
  }
  CHECK(bad == 0);
  /* rounding matches double-precision nearest on a sweep of midpoints */
  bad = 0;
  for (uint32_t h = 0x0000; h < 0x7bff; h += 7) {
    double lo = bm_f16_to_f32((uint16_t)h), hi = bm_f16_to_f32((uint16_t)(h + 1));
    float mid_up = (float)(lo + (hi - lo) * 0.75), mid_dn = (float)(lo + (hi - lo) * 0.25);
    if (bm_f32_to_f16(mid_up) != h + 1 || bm_f32_to_f16(mid_dn) != h) bad++;
  }
  CHECK(bad == 0);
}

static void test_bf16(void) {
  CHECK(bm_f32_to_bf16(1.0f) == 0x3f80);
  CHECK(bm_bf16_to_f32(0x3f80) == 1.0f);
  CHECK(bm_f32_to_bf16(from_bits(0x3f808000)) == 0x3f80); /* tie -> even */
  CHECK(bm_f32_to_bf16(from_bits(0x3f818000)) == 0x3f82); /* tie -> even (up) */
  CHECK(bm_f32_to_bf16(from_bits(0x3f808001)) == 0x3f81);
  CHECK(bm_f32_to_bf16(from_bits(0x7f7fffff)) == 0x7f80); /* FLT_MAX rounds to inf */
  CHECK(bm_f32_to_bf16(INFINITY) == 0x7f80);
  CHECK(bm_f32_to_bf16(-INFINITY) == 0xff80);
  CHECK(isnan(bm_bf16_to_f32(bm_f32_to_bf16(NAN))));
  CHECK(isnan(bm_bf16_to_f32(bm_f32_to_bf16(from_bits(0x7f800001))))); /* signalling NaN stays NaN */
  CHECK(bm_f32_to_bf16(from_bits(0x00010000)) == 0x0001); /* subnormal */
  int bad = 0;
  for (uint32_t h = 0; h < 65536; h++) {
    if ((h & 0x7f80) == 0x7f80 && (h & 0x7f)) continue;
    if (bm_f32_to_bf16(bm_bf16_to_f32((uint16_t)h)) != h) bad++;
  }
  CHECK(bad == 0);
}

static void test_fp8(void) {
  /* e4m3 (FN) */
  CHECK(bm_fp8_e4m3_to_f32(0x7e) == 448.0f);
  CHECK(bm_fp8_e4m3_to_f32(0xfe) == -448.0f);
  CHECK(isnan(bm_fp8_e4m3_to_f32(0x7f)) && isnan(bm_fp8_e4m3_to_f32(0xff)));
  CHECK(bm_fp8_e4m3_to_f32(0x78) == 256.0f); /* exponent 15 is finite */
  CHECK(bm_fp8_e4m3_to_f32(0x01) == ldexpf(1, -9));
  CHECK(bm_fp8_e4m3_to_f32(0x08) == ldexpf(1, -6));
  CHECK(bm_fp8_e4m3_to_f32(0x38) == 1.0f);
  CHECK(bm_f32_to_fp8_e4m3(1.0f) == 0x38);
  CHECK(bm_f32_to_fp8_e4m3(448.0f) == 0x7e);
  CHECK(bm_f32_to_fp8_e4m3(464.0f) == 0x7e);  /* tie -> even (448) */
  CHECK(bm_f32_to_fp8_e4m3(1000.0f) == 0x7e); /* saturates */
  CHECK(bm_f32_to_fp8_e4m3(INFINITY) == 0x7e);
  CHECK(bm_f32_to_fp8_e4m3(-INFINITY) == 0xfe);
  CHECK((bm_f32_to_fp8_e4m3(NAN) & 0x7f) == 0x7f);
  CHECK(bm_f32_to_fp8_e4m3(ldexpf(1, -10)) == 0x00); /* half the smallest subnormal: tie -> 0 */
  CHECK(bm_f32_to_fp8_e4m3(ldexpf(3, -10)) == 0x02); /* 1.5 units -> 2 */
  CHECK(bm_f32_to_fp8_e4m3(1.0625f) == 0x38);        /* 1 + 1/16: tie -> even */
  CHECK(bm_f32_to_fp8_e4m3(1.1875f) == 0x3a);        /* 1 + 3/16: tie -> even (up) */
  CHECK(bm_f32_to_fp8_e4m3(-0.0f) == 0x80);
  int bad = 0;
  for (int v = 0; v < 256; v++) {
    if ((v & 0x7f) == 0x7f) continue;
    if (bm_f32_to_fp8_e4m3(bm_fp8_e4m3_to_f32((uint8_t)v)) != v) bad++;
  }
  CHECK(bad == 0);
  /* e5m2 */
  CHECK(bm_fp8_e5m2_to_f32(0x3c) == 1.0f);
  CHECK(bm_fp8_e5m2_to_f32(0x7b) == 57344.0f);
  CHECK(bm_fp8_e5m2_to_f32(0x7c) == INFINITY);
  CHECK(isnan(bm_fp8_e5m2_to_f32(0x7d)));
  CHECK(bm_fp8_e5m2_to_f32(0x01) == ldexpf(1, -16));
  CHECK(bm_f32_to_fp8_e5m2(1.0f) == 0x3c);
  CHECK(bm_f32_to_fp8_e5m2(57344.0f) == 0x7b);
  CHECK(bm_f32_to_fp8_e5m2(61440.0f) == 0x7c); /* tie past the max -> inf */
  CHECK(bm_f32_to_fp8_e5m2(1e6f) == 0x7c);
  CHECK(bm_f32_to_fp8_e5m2(-INFINITY) == 0xfc);
  CHECK(isnan(bm_fp8_e5m2_to_f32(bm_f32_to_fp8_e5m2(NAN))));
  CHECK(bm_f32_to_fp8_e5m2(ldexpf(1, -17)) == 0x00);
  CHECK(bm_f32_to_fp8_e5m2(ldexpf(3, -17)) == 0x02);
  CHECK(bm_f32_to_fp8_e5m2(1.125f) == 0x3c);  /* tie -> even */
  CHECK(bm_f32_to_fp8_e5m2(1.375f) == 0x3e);  /* tie -> even (up) */
  bad = 0;
  for (int v = 0; v < 256; v++) {
    if ((v & 0x7c) == 0x7c && (v & 3)) continue;
    if (bm_f32_to_fp8_e5m2(bm_fp8_e5m2_to_f32((uint8_t)v)) != v) bad++;
  }
  CHECK(bad == 0);
}

static void test_int_access(void) {
  uint8_t p[4] = {0};
  int vals[8] = {-8, 7, -1, 3, 0, 5, -3, 1};
  for (int i = 0; i < 8; i++) bm_store_f32(p, BM_DTYPE_I4, i, (float)vals[i]);
  CHECK(p[0] == 0x78 && p[1] == 0x3f && p[2] == 0x50 && p[3] == 0x1d);
  for (int i = 0; i < 8; i++) CHECK(bm_load_i64(p, BM_DTYPE_I4, i) == vals[i]);
  for (int i = 0; i < 8; i++) CHECK(bm_load_f32(p, BM_DTYPE_I4, i) == (float)vals[i]);
  bm_store_f32(p, BM_DTYPE_I4, 1, 9.0f); /* saturates, leaves the other nibble */
  CHECK(p[0] == 0x78);
  bm_store_i64(p, BM_DTYPE_I4, 0, -20);
  CHECK(p[0] == 0x78);
  bm_store_f32(p, BM_DTYPE_I4, 0, 2.9f);
  CHECK(p[0] == 0x72);

  int32_t i32[4];
  bm_store_f32(i32, BM_DTYPE_I32, 0, 3.7f);
  bm_store_f32(i32, BM_DTYPE_I32, 1, -3.7f);
  bm_store_f32(i32, BM_DTYPE_I32, 2, 1e10f);
  bm_store_f32(i32, BM_DTYPE_I32, 3, NAN);
  CHECK(i32[0] == 3 && i32[1] == -3 && i32[2] == INT32_MAX && i32[3] == 0);
  int8_t i8[2];
  bm_store_f32(i8, BM_DTYPE_I8, 0, 300.0f);
  bm_store_f32(i8, BM_DTYPE_I8, 1, -300.0f);
  CHECK(i8[0] == 127 && i8[1] == -128);
  int64_t i64[2];
  bm_store_f32(i64, BM_DTYPE_I64, 0, -1e30f);
  bm_store_i64(i64, BM_DTYPE_I64, 1, INT64_MAX);
  CHECK(i64[0] == INT64_MIN && i64[1] == INT64_MAX);
  CHECK(bm_load_i64(i64, BM_DTYPE_I64, 1) == INT64_MAX);
  uint16_t h = bm_f32_to_f16(-2.5f);
  CHECK(bm_load_i64(&h, BM_DTYPE_F16, 0) == -2);

  bm_tensor t;
  int64_t shape[2] = {3, 5};
  CHECK_OK(bm_tensor_alloc(&t, BM_DTYPE_I4, 2, shape));
  CHECK(bm_tensor_numel(&t) == 15 && bm_tensor_nbytes(&t) == 8);
  CHECK(((uint8_t *)t.data)[7] == 0);
  bm_tensor_free(&t);
  bm_tensor_free(&t); /* NULL-safe after free */
  int64_t huge[3] = {1 << 30, 1 << 30, 1 << 30};
  CHECK_ERR(bm_tensor_alloc(&t, BM_DTYPE_F32, 3, huge), BM_ERR_OUT_OF_MEMORY, NULL);
  int64_t neg[1] = {-1};
  CHECK_ERR(bm_tensor_alloc(&t, BM_DTYPE_F32, 1, neg), BM_ERR_INVALID_ARGUMENT, "negative");
}

/* ------------------------------------------------------------------ elementwise */

static void test_unary(void) {
  struct { bm_op op; float x, want; } cases[] = {
      {BM_OP_NEG, 2, -2},        {BM_OP_ABS, -3, 3},
      {BM_OP_EXP, 1, 2.7182818f}, {BM_OP_LOG, 1, 0},
      {BM_OP_SQRT, 9, 3},        {BM_OP_RSQRT, 4, 0.5f},
      {BM_OP_RECIP, 4, 0.25f},   {BM_OP_SQUARE, -3, 9},
      {BM_OP_SIN, 0.5f, 0.47942554f}, {BM_OP_COS, 0.5f, 0.87758256f},
      {BM_OP_TANH, 0.5f, 0.46211716f}, {BM_OP_ERF, 0.5f, 0.52049988f},
      {BM_OP_SIGMOID, 0, 0.5f},  {BM_OP_SIGMOID, 2, 0.88079708f},
      {BM_OP_RELU, -1, 0},       {BM_OP_RELU, 1.5f, 1.5f},
      {BM_OP_SILU, 1, 0.73105858f}, {BM_OP_GELU, 1, 0.84134475f},
      {BM_OP_GELU, -1, -0.15865525f}, {BM_OP_GELU_TANH, 1, 0.84119199f},
      {BM_OP_QUICK_GELU, 1, 0.84579575f},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    float got = bm_ref_unary_f32(cases[i].op, cases[i].x);
    CHECK_MSG(fabsf(got - cases[i].want) < 1e-6f, "%s(%g) = %.8g, want %.8g",
              bm_op_name(cases[i].op), cases[i].x, got, cases[i].want);
  }
  CHECK(bm_ref_binary_f32(BM_OP_POW, 2, 3) == 8);
  CHECK(bm_ref_binary_f32(BM_OP_MAX, 2, 3) == 3 && bm_ref_binary_f32(BM_OP_MIN, 2, 3) == 2);
  CHECK(bm_ref_binary_f32(BM_OP_DIV, 1, 4) == 0.25f && bm_ref_binary_f32(BM_OP_SUB, 1, 4) == -3);

  /* through a graph, with an f16 output: rounding to the node dtype */
  bm_graph *g = new_graph();
  int64_t s3[1] = {3};
  bm_node *x = bm_input(g, "x", BM_DTYPE_F16, 1, s3);
  bm_output_add(g, "y", bm_unary(g, BM_OP_EXP, x));
  bm_tensor in;
  CHECK_OK(bm_tensor_alloc(&in, BM_DTYPE_F16, 1, s3));
  float xs[3] = {0, 1, -1};
  for (int i = 0; i < 3; i++) bm_store_f32(in.data, BM_DTYPE_F16, i, xs[i]);
  float want[3] = {1, bm_f16_to_f32(bm_f32_to_f16(expf(1))), bm_f16_to_f32(bm_f32_to_f16(expf(-1)))};
  EXPECT(g, &in, 1, s3, want, 0);
  bm_tensor_free(&in);
}

static void test_binary_broadcast(void) {
  bm_graph *g = new_graph();
  int64_t s23[2] = {2, 3}, s3[1] = {3}, s21[2] = {2, 1};
  bm_node *a = in_f32(g, "a", 2, s23), *b = in_f32(g, "b", 1, s3), *c = in_f32(g, "c", 2, s21);
  bm_node *y = bm_mul(g, bm_add(g, a, b), c); /* (a + b) * c */
  bm_output_add(g, "y", y);
  float av[6] = {1, 2, 3, 4, 5, 6}, bv[3] = {10, 20, 30}, cv[2] = {1, -1};
  bm_tensor in[3] = {tensor_f32(2, s23, av), tensor_f32(1, s3, bv), tensor_f32(2, s21, cv)};
  float want[6] = {11, 22, 33, -14, -25, -36};
  EXPECT(g, in, 2, s23, want, 0);
  free_inputs(in, 3);

  /* (2,1) - (1,3) -> (2,3); pow with a scalar const */
  g = new_graph();
  int64_t s13[2] = {1, 3};
  a = in_f32(g, "a", 2, s21);
  b = in_f32(g, "b", 2, s13);
  y = bm_binary(g, BM_OP_POW, bm_sub(g, a, b), bm_scalar(g, 2.0f));
  bm_output_add(g, "y", y);
  float a2[2] = {1, 2}, b2[3] = {0, 1, 3};
  bm_tensor in2[2] = {tensor_f32(2, s21, a2), tensor_f32(2, s13, b2)};
  float want2[6] = {1, 0, 4, 4, 1, 1};
  EXPECT(g, in2, 2, s23, want2, 1e-6f);
  free_inputs(in2, 2);
}

static void test_cast(void) {
  bm_graph *g = new_graph();
  int64_t s4[1] = {4};
  bm_node *x = in_f32(g, "x", 1, s4);
  bm_node *i = bm_cast(g, x, BM_DTYPE_I32);
  bm_output_add(g, "i", i);
  bm_output_add(g, "h", bm_cast(g, x, BM_DTYPE_F16));
  bm_output_add(g, "back", bm_cast(g, bm_cast(g, i, BM_DTYPE_I64), BM_DTYPE_F32));
  float xv[4] = {-2.7f, 2.7f, 1e10f, 1.0009765625f + 0.0001f};
  bm_tensor in = tensor_f32(1, s4, xv);
  bm_tensor out[3];
  CHECK_OK(bm_interp_run(g, &in, out));
  if (out[0].data) {
    int32_t *iv = out[0].data;
    CHECK(out[0].dtype == BM_DTYPE_I32);
    CHECK(iv[0] == -2 && iv[1] == 2 && iv[2] == INT32_MAX && iv[3] == 1);
    CHECK(out[1].dtype == BM_DTYPE_F16);
    CHECK(bm_load_f32(out[1].data, BM_DTYPE_F16, 3) == 1.0009765625f);
    CHECK(bm_load_f32(out[1].data, BM_DTYPE_F16, 2) == INFINITY);
    CHECK(bm_load_f32(out[2].data, BM_DTYPE_F32, 2) == (float)INT32_MAX);
  }
  for (int k = 0; k < 3; k++) bm_tensor_free(&out[k]);
  bm_tensor_free(&in);
}

/* ------------------------------------------------------------------ linear algebra */

static void test_matmul(void) {
  float av[6] = {1, 2, 3, 4, 5, 6};       /* (2, 3) */
  float bv[6] = {7, 8, 9, 10, 11, 12};    /* (3, 2) */
  float btv[6] = {7, 9, 11, 8, 10, 12};   /* b^T (2, 3) */
  float atv[6] = {1, 4, 2, 5, 3, 6};      /* a^T (3, 2) */
  float want[4] = {58, 64, 139, 154};
  int64_t s23[2] = {2, 3}, s32[2] = {3, 2}, s22[2] = {2, 2};
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) {
      bm_graph *g = new_graph();
      bm_node *a = in_f32(g, "a", 2, ta ? s32 : s23);
      bm_node *b = in_f32(g, "b", 2, tb ? s23 : s32);
      bm_output_add(g, "c", bm_matmul(g, a, b, ta, tb));
      bm_tensor in[2] = {tensor_f32(2, ta ? s32 : s23, ta ? atv : av),
                         tensor_f32(2, tb ? s23 : s32, tb ? btv : bv)};
      EXPECT(g, in, 2, s22, want, 0);
      free_inputs(in, 2);
    }
  /* batch broadcasting: a (2, 1, 2, 3) @ b (3, 3, 2) -> (2, 3, 2, 2) */
  bm_graph *g = new_graph();
  int64_t sa[4] = {2, 1, 2, 3}, sb[3] = {3, 3, 2}, so[4] = {2, 3, 2, 2};
  bm_node *a = in_f32(g, "a", 4, sa), *b = in_f32(g, "b", 3, sb);
  bm_output_add(g, "c", bm_matmul(g, a, b, false, false));
  float a2[12], b2[18], want2[24];
  for (int i = 0; i < 12; i++) a2[i] = av[i % 6] * (i < 6 ? 1 : -1);
  for (int i = 0; i < 18; i++) b2[i] = bv[i % 6] * (float)(i / 6 + 1);
  for (int i = 0; i < 24; i++) want2[i] = want[i % 4] * (float)((i / 4) % 3 + 1) * (i < 12 ? 1 : -1);
  bm_tensor in[2] = {tensor_f32(4, sa, a2), tensor_f32(3, sb, b2)};
  EXPECT(g, in, 4, so, want2, 0);
  free_inputs(in, 2);
}

static void test_conv2d(void) {
  /* 3x3 input 1..9, 2x2 kernel of ones */
  float xv[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, ones[4] = {1, 1, 1, 1};
  int64_t sx[4] = {1, 1, 3, 3}, sw[4] = {1, 1, 2, 2}, so[4] = {1, 1, 2, 2};
  bm_graph *g = new_graph();
  bm_node *x = in_f32(g, "x", 4, sx);
  bm_output_add(g, "y", bm_conv2d(g, x, const_f32(g, 4, sw, ones), NULL, 1, 1, 0, 0, 1, 1, 1));
  bm_tensor in = tensor_f32(4, sx, xv);
  float want[4] = {12, 16, 24, 28};
  EXPECT(g, &in, 4, so, want, 0);

  /* pad 1, stride 2, bias 100: out (1,1,2,2) windows at (-1,-1), (-1,1), (1,-1), (1,1) */
  g = new_graph();
  x = in_f32(g, "x", 4, sx);
  int64_t s1[1] = {1};
  float bias = 100;
  bm_output_add(g, "y", bm_conv2d(g, x, const_f32(g, 4, sw, ones), const_f32(g, 1, s1, &bias), 2, 2,
                                  1, 1, 1, 1, 1));
  float want2[4] = {101, 105, 111, 128};
  EXPECT(g, &in, 4, so, want2, 0);

  /* dilation 2: a 2x2 kernel spanning 3x3 -> one output = 1 + 3 + 7 + 9 */
  g = new_graph();
  x = in_f32(g, "x", 4, sx);
  bm_output_add(g, "y", bm_conv2d(g, x, const_f32(g, 4, sw, ones), NULL, 1, 1, 0, 0, 2, 2, 1));
  int64_t s11[4] = {1, 1, 1, 1};
  float want3[1] = {20};
  EXPECT(g, &in, 4, s11, want3, 0);
  bm_tensor_free(&in);

  /* groups = 2: x (1, 2, 1, 2), w (2, 1, 1, 1) = [2, 3] scales each channel */
  g = new_graph();
  int64_t sx2[4] = {1, 2, 1, 2}, sw2[4] = {2, 1, 1, 1};
  float xv2[4] = {1, 2, 3, 4}, wv2[2] = {2, 3};
  x = in_f32(g, "x", 4, sx2);
  bm_output_add(g, "y", bm_conv2d(g, x, const_f32(g, 4, sw2, wv2), NULL, 1, 1, 0, 0, 1, 1, 2));
  bm_tensor in2 = tensor_f32(4, sx2, xv2);
  float want4[4] = {2, 4, 9, 12};
  EXPECT(g, &in2, 4, sx2, want4, 0);
  bm_tensor_free(&in2);

  /* two input channels summed, two output channels */
  g = new_graph();
  int64_t sw3[4] = {2, 2, 1, 1}, so3[4] = {1, 2, 1, 2};
  float wv3[4] = {1, 1, 1, -1};
  x = in_f32(g, "x", 4, sx2);
  bm_output_add(g, "y", bm_conv2d(g, x, const_f32(g, 4, sw3, wv3), NULL, 1, 1, 0, 0, 1, 1, 1));
  in2 = tensor_f32(4, sx2, xv2);
  float want5[4] = {4, 6, -2, -2};
  EXPECT(g, &in2, 4, so3, want5, 0);
  bm_tensor_free(&in2);
}

static void test_dequant(void) {
  /* i8 q (2, 4), scale (2, 2): groups of 2 */
  int8_t qv[8] = {1, 2, 3, 4, -1, -2, -3, -4};
  float sv[4] = {0.5f, 2, 1, 10};
  int64_t sq[2] = {2, 4}, ss[2] = {2, 2};
  bm_graph *g = new_graph();
  bm_node *q = bm_weight(g, "q", BM_DTYPE_I8, 2, sq, qv, sizeof qv);
  bm_node *sc = bm_weight(g, "s", BM_DTYPE_F32, 2, ss, sv, sizeof sv);
  bm_output_add(g, "w", bm_dequant(g, q, sc));
  float want[8] = {0.5f, 1, 6, 8, -1, -2, -30, -40};
  EXPECT(g, NULL, 2, sq, want, 0);

  /* qmatmul: x (1, 4) @ dequant^T -> (1, 2) */
  g = new_graph();
  int64_t sx[2] = {1, 4}, so[2] = {1, 2};
  bm_node *x = in_f32(g, "x", 2, sx);
  q = bm_weight(g, "q", BM_DTYPE_I8, 2, sq, qv, sizeof qv);
  sc = bm_weight(g, "s", BM_DTYPE_F32, 2, ss, sv, sizeof sv);
  bm_output_add(g, "y", bm_qmatmul(g, x, q, sc));
  float xv[4] = {1, 1, 1, 1};
  bm_tensor in = tensor_f32(2, sx, xv);
  float want2[2] = {15.5f, -73};
  EXPECT(g, &in, 2, so, want2, 0);
  bm_tensor_free(&in);

  /* i4 packed: q (1, 4) = [-8, 7, -1, 3] in bytes 0x78, 0x3f; per-channel scale 0.5 */
  g = new_graph();
  uint8_t q4[2] = {0x78, 0x3f};
  float s4 = 0.5f;
  int64_t sq4[2] = {1, 4}, ss4[2] = {1, 1};
  q = bm_weight(g, "q", BM_DTYPE_I4, 2, sq4, q4, sizeof q4);
  sc = bm_weight(g, "s", BM_DTYPE_F32, 2, ss4, &s4, sizeof s4);
  bm_output_add(g, "w", bm_dequant(g, q, sc));
  float want3[4] = {-4, 3.5f, -0.5f, 1.5f};
  EXPECT(g, NULL, 2, sq4, want3, 0);
}

/* ------------------------------------------------------------------ data movement */

static void test_movement(void) {
  int64_t s23[2] = {2, 3}, s32[2] = {3, 2};
  float xv[6] = {0, 1, 2, 3, 4, 5};
  bm_tensor in = tensor_f32(2, s23, xv);

  /* permute / transpose */
  bm_graph *g = new_graph();
  bm_node *x = in_f32(g, "x", 2, s23);
  bm_output_add(g, "y", bm_transpose(g, x, 0, 1));
  float wt[6] = {0, 3, 1, 4, 2, 5};
  EXPECT(g, &in, 2, s32, wt, 0);

  /* reshape (2, 3) -> (3, 2) keeps order */
  g = new_graph();
  x = in_f32(g, "x", 2, s23);
  bm_output_add(g, "y", bm_reshape(g, x, 2, s32));
  EXPECT(g, &in, 2, s32, xv, 0);

  /* slice axis 1, 1:3 -> (2, 2); and step 2 over 0..: */
  g = new_graph();
  x = in_f32(g, "x", 2, s23);
  bm_output_add(g, "y", bm_slice(g, x, 1, 1, 3, 1));
  int64_t s22[2] = {2, 2};
  float ws[4] = {1, 2, 4, 5};
  EXPECT(g, &in, 2, s22, ws, 0);
  g = new_graph();
  x = in_f32(g, "x", 2, s23);
  bm_output_add(g, "y", bm_slice(g, x, -1, 0, INT64_MAX, 2));
  float ws2[4] = {0, 2, 3, 5};
  EXPECT(g, &in, 2, s22, ws2, 0);

  /* concat along axis 1: (2,3) ++ (2,1) */
  g = new_graph();
  x = in_f32(g, "x", 2, s23);
  int64_t s21[2] = {2, 1}, s24[2] = {2, 4};
  float cv[2] = {9, 8};
  bm_node *parts[2] = {x, const_f32(g, 2, s21, cv)};
  bm_output_add(g, "y", bm_concat(g, 2, parts, 1));
  float wc[8] = {0, 1, 2, 9, 3, 4, 5, 8};
  EXPECT(g, &in, 2, s24, wc, 0);

  /* pad: 1 row before, 1 column after, value 7 */
  g = new_graph();
  x = in_f32(g, "x", 2, s23);
  int64_t pads[4] = {1, 0, 0, 1};
  bm_output_add(g, "y", bm_pad(g, x, pads, 7));
  int64_t s34[2] = {3, 4};
  float wp[12] = {7, 7, 7, 7, 0, 1, 2, 7, 3, 4, 5, 7};
  EXPECT(g, &in, 2, s34, wp, 0);
  bm_tensor_free(&in);

  /* upsample (1, 1, 2, 2) x2 */
  g = new_graph();
  int64_t su[4] = {1, 1, 2, 2}, su2[4] = {1, 1, 4, 4};
  float uv[4] = {1, 2, 3, 4};
  x = in_f32(g, "x", 4, su);
  bm_output_add(g, "y", bm_upsample_nearest(g, x, 2));
  in = tensor_f32(4, su, uv);
  float wu[16] = {1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4};
  EXPECT(g, &in, 4, su2, wu, 0);
  bm_tensor_free(&in);

  /* 3-d permute (2, 0, 1) of (2, 3, 2) */
  g = new_graph();
  int64_t s232[3] = {2, 3, 2}, s223[3] = {2, 2, 3};
  float pv[12];
  for (int i = 0; i < 12; i++) pv[i] = (float)i;
  x = in_f32(g, "x", 3, s232);
  int perm[3] = {2, 0, 1};
  bm_output_add(g, "y", bm_permute(g, x, perm));
  in = tensor_f32(3, s232, pv);
  /* out[c][a][b] = in[a][b][c] = a*6 + b*2 + c */
  float wpm[12] = {0, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11};
  EXPECT(g, &in, 3, s223, wpm, 0);
  bm_tensor_free(&in);
}

static void test_gather(void) {
  float tv[6] = {0, 1, 10, 11, 20, 21}; /* (3, 2) */
  int64_t st[2] = {3, 2}, si[1] = {3}, so[2] = {3, 2};
  bm_graph *g = new_graph();
  bm_node *idx = bm_input(g, "idx", BM_DTYPE_I32, 1, si);
  bm_output_add(g, "y", bm_gather(g, const_f32(g, 2, st, tv), idx));
  bm_tensor in;
  CHECK_OK(bm_tensor_alloc(&in, BM_DTYPE_I32, 1, si));
  int32_t iv[3] = {2, 0, 2};
  memcpy(in.data, iv, sizeof iv);
  float want[6] = {20, 21, 0, 1, 20, 21};
  EXPECT(g, &in, 2, so, want, 0);
  /* an index past the table: an error naming it, outputs left zeroed */
  ((int32_t *)in.data)[1] = 3;
  bm_tensor out = {.data = (void *)1};
  CHECK_ERR(bm_interp_run(g, &in, &out), BM_ERR_INVALID_ARGUMENT, "index 3");
  CHECK(out.data == NULL);
  ((int32_t *)in.data)[1] = -1;
  CHECK_ERR(bm_interp_run(g, &in, &out), BM_ERR_INVALID_ARGUMENT, "index -1");
  bm_tensor_free(&in);
}

/* ------------------------------------------------------------------ reductions */

static void test_reduce(void) {
  int64_t s23[2] = {2, 3};
  float xv[6] = {1, 2, 3, 4, 5, 6};
  bm_tensor in = tensor_f32(2, s23, xv);

  bm_graph *g = new_graph();
  bm_node *x = in_f32(g, "x", 2, s23);
  bm_output_add(g, "y", bm_sum(g, x, 1, true));
  int64_t s21[2] = {2, 1};
  float w1[2] = {6, 15};
  EXPECT(g, &in, 2, s21, w1, 0);

  g = new_graph();
  x = in_f32(g, "x", 2, s23);
  bm_output_add(g, "y", bm_mean(g, x, 0, false));
  int64_t s3[1] = {3};
  float w2[3] = {2.5f, 3.5f, 4.5f};
  EXPECT(g, &in, 1, s3, w2, 0);

  g = new_graph();
  x = in_f32(g, "x", 2, s23);
  bm_output_add(g, "y", bm_reduce(g, BM_OP_REDUCE_MAX, x, 3, false));
  float w3[1] = {6};
  EXPECT(g, &in, 0, NULL, w3, 0);

  g = new_graph();
  x = in_f32(g, "x", 2, s23);
  bm_output_add(g, "y", bm_reduce(g, BM_OP_SUM, x, 3, true));
  int64_t s11[2] = {1, 1};
  float w4[1] = {21};
  EXPECT(g, &in, 2, s11, w4, 0);

  /* softmax of [1, 2, 3] along the last axis, and along axis 0 */
  g = new_graph();
  x = in_f32(g, "x", 2, s23);
  bm_output_add(g, "y", bm_softmax(g, x, -1));
  float w5[6] = {0.09003057f, 0.24472847f, 0.66524096f, 0.09003057f, 0.24472847f, 0.66524096f};
  EXPECT(g, &in, 2, s23, w5, 1e-6f);
  g = new_graph();
  x = in_f32(g, "x", 2, s23);
  bm_output_add(g, "y", bm_softmax(g, x, 0));
  float a = 1.0f / (1.0f + expf(3)), b = 1.0f - a;
  float w6[6] = {a, a, a, b, b, b};
  EXPECT(g, &in, 2, s23, w6, 1e-6f);
  bm_tensor_free(&in);

  /* softmax is max-subtracted: large values do not overflow */
  g = new_graph();
  int64_t s2[1] = {2};
  float big[2] = {1000, 1000};
  x = in_f32(g, "x", 1, s2);
  bm_output_add(g, "y", bm_softmax(g, x, 0));
  in = tensor_f32(1, s2, big);
  float w7[2] = {0.5f, 0.5f};
  EXPECT(g, &in, 1, s2, w7, 0);
  bm_tensor_free(&in);
}

/* ------------------------------------------------------------------ normalization */

static void test_norms(void) {
  int64_t s4[1] = {4}, s14[2] = {1, 4};
  float xv[4] = {1, 2, 3, 4};
  bm_tensor in = tensor_f32(2, s14, xv);
  /* mean 2.5, biased var 1.25 */
  float r = 1.0f / sqrtf(1.25f);
  bm_graph *g = new_graph();
  bm_node *x = in_f32(g, "x", 2, s14);
  bm_output_add(g, "y", bm_layer_norm(g, x, NULL, NULL, 0));
  float w1[4] = {-1.5f * r, -0.5f * r, 0.5f * r, 1.5f * r};
  EXPECT(g, &in, 2, s14, w1, 1e-6f);

  g = new_graph();
  x = in_f32(g, "x", 2, s14);
  float wv[4] = {2, 2, 2, 2}, bv[4] = {1, 1, 1, 1};
  bm_output_add(g, "y", bm_layer_norm(g, x, const_f32(g, 1, s4, wv), const_f32(g, 1, s4, bv), 0.75f));
  float r2 = 1.0f / sqrtf(2.0f); /* var + eps = 2 */
  float w2[4] = {1 - 3 * r2, 1 - r2, 1 + r2, 1 + 3 * r2};
  EXPECT(g, &in, 2, s14, w2, 1e-6f);

  /* rms norm of [3, 4]: mean square 12.5 */
  g = new_graph();
  int64_t s2[1] = {2};
  float rv[2] = {3, 4}, rw[2] = {1, 10};
  x = in_f32(g, "x", 1, s2);
  bm_output_add(g, "y", bm_rms_norm(g, x, const_f32(g, 1, s2, rw), 0));
  bm_tensor in2 = tensor_f32(1, s2, rv);
  float rs = 1.0f / sqrtf(12.5f);
  float w3[2] = {3 * rs, 40 * rs};
  EXPECT(g, &in2, 1, s2, w3, 1e-6f);
  bm_tensor_free(&in2);
  bm_tensor_free(&in);

  /* group norm: x (1, 4, 1, 2), 2 groups: [1 2 3 4] and [10 10 20 20] */
  g = new_graph();
  int64_t sg[4] = {1, 4, 1, 2};
  float gv[8] = {1, 2, 3, 4, 10, 10, 20, 20};
  float gw[4] = {1, 1, 2, 2}, gb[4] = {0, 0, 0, 5};
  x = in_f32(g, "x", 4, sg);
  bm_output_add(g, "y", bm_group_norm(g, x, const_f32(g, 1, s4, gw), const_f32(g, 1, s4, gb), 2, 0));
  in = tensor_f32(4, sg, gv);
  float w4[8] = {-1.5f * r, -0.5f * r, 0.5f * r, 1.5f * r, -2, -2, 7, 7};
  EXPECT(g, &in, 4, sg, w4, 1e-6f);
  bm_tensor_free(&in);
}

/* ------------------------------------------------------------------ transformer */

static void test_rope(void) {
  int64_t sx[4] = {1, 1, 1, 4}, sp[1] = {1}, sf[1] = {2}, sf1[1] = {1};
  float xv[4] = {1, 2, 3, 4};
  float fr[2] = {(float)M_PI / 2, 0};
  bm_tensor in[2] = {tensor_f32(4, sx, xv)};
  CHECK_OK(bm_tensor_alloc(&in[1], BM_DTYPE_I32, 1, sp));
  ((int32_t *)in[1].data)[0] = 1;
  /* mode 0: pairs (0, 2), (1, 3); pair 0 rotated by 90 degrees */
  bm_graph *g = new_graph();
  bm_node *x = in_f32(g, "x", 4, sx), *pos = bm_input(g, "pos", BM_DTYPE_I32, 1, sp);
  bm_output_add(g, "y", bm_rope(g, x, pos, const_f32(g, 1, sf, fr), 0));
  float w0[4] = {-3, 2, 1, 4};
  EXPECT(g, in, 4, sx, w0, 1e-6f);
  /* mode 1: pairs (0, 1), (2, 3) */
  g = new_graph();
  x = in_f32(g, "x", 4, sx);
  pos = bm_input(g, "pos", BM_DTYPE_I32, 1, sp);
  bm_output_add(g, "y", bm_rope(g, x, pos, const_f32(g, 1, sf, fr), 1));
  float w1[4] = {-2, 1, 3, 4};
  EXPECT(g, in, 4, sx, w1, 1e-6f);
  /* partial rotary (R = 2 < D = 4): channels 2, 3 pass through; position 2 -> 180 degrees */
  ((int32_t *)in[1].data)[0] = 2;
  g = new_graph();
  x = in_f32(g, "x", 4, sx);
  pos = bm_input(g, "pos", BM_DTYPE_I32, 1, sp);
  bm_output_add(g, "y", bm_rope(g, x, pos, const_f32(g, 1, sf1, fr), 0));
  float w2[4] = {-1, -2, 3, 4};
  EXPECT(g, in, 4, sx, w2, 1e-6f);
  free_inputs(in, 2);

  /* pos (B, S) with two batches and two positions */
  int64_t sx2[4] = {2, 2, 1, 2}, sp2[2] = {2, 2};
  float xv2[8] = {1, 0, 1, 0, 1, 0, 1, 0};
  float fr2[1] = {(float)M_PI / 2};
  bm_tensor in2[2] = {tensor_f32(4, sx2, xv2)};
  CHECK_OK(bm_tensor_alloc(&in2[1], BM_DTYPE_I64, 2, sp2));
  int64_t pv[4] = {0, 1, 2, 3};
  memcpy(in2[1].data, pv, sizeof pv);
  g = new_graph();
  x = in_f32(g, "x", 4, sx2);
  pos = bm_input(g, "pos", BM_DTYPE_I64, 2, sp2);
  bm_output_add(g, "y", bm_rope(g, x, pos, const_f32(g, 1, sf1, fr2), 1));
  float w3[8] = {1, 0, 0, 1, -1, 0, 0, -1};
  EXPECT(g, in2, 4, sx2, w3, 1e-6f);
  free_inputs(in2, 2);
}

/* One attention call on constant q, k, v (and mask) of the given shapes. */
static void attn_case(const int64_t *sq, const float *q, const int64_t *sk, const float *k,
                      const int64_t *sv, const float *v, int mask_ndim, const int64_t *sm,
                      const float *m, float scale, bool causal, int window, float softcap,
                      const float *want, int line) {
  bm_graph *g = new_graph();
  bm_node *mn = m ? const_f32(g, mask_ndim, sm, m) : NULL;
  bm_node *y = bm_attention(g, const_f32(g, 4, sq, q), const_f32(g, 4, sk, k), const_f32(g, 4, sv, v),
                            mn, scale, causal, window, softcap);
  bm_output_add(g, "y", y);
  int64_t so[4] = {sq[0], sq[1], sq[2], sv[3]};
  expect(g, NULL, 4, so, want, 1e-6f, line);
}

static void test_attention(void) {
  /* one query, two keys with scores 0 and ln 3 -> weights 1/4, 3/4 */
  int64_t sq[4] = {1, 1, 1, 1}, sk[4] = {1, 1, 2, 1}, sv[4] = {1, 1, 2, 2};
  float q[1] = {1}, k[2] = {0, logf(3)}, v[4] = {1, 2, 3, 4};
  float want[2] = {0.25f * 1 + 0.75f * 3, 0.25f * 2 + 0.75f * 4};
  attn_case(sq, q, sk, k, sv, v, 0, NULL, NULL, 1, false, 0, 0, want, __LINE__);

  /* scale 0 means 1/sqrt(D): D = 4, q.k1 = 2 ln 3 -> score ln 3 */
  int64_t sq4[4] = {1, 1, 1, 4}, sk4[4] = {1, 1, 2, 4};
  float q4[4] = {2, 0, 0, 0}, k4[8] = {0, 5, 5, 5, logf(3), 7, 7, 7};
  attn_case(sq4, q4, sk4, k4, sv, v, 0, NULL, NULL, 0, false, 0, 0, want, __LINE__);

  /* softcap 1: score 2 becomes tanh(2) */
  float k2[2] = {2, 0};
  float p0 = expf(tanhf(2)) / (expf(tanhf(2)) + 1), p1 = 1 - p0;
  float want_cap[2] = {p0 * 1 + p1 * 3, p0 * 2 + p1 * 4};
  attn_case(sq, q, sk, k2, sv, v, 0, NULL, NULL, 1, false, 0, 1.0f, want_cap, __LINE__);

  /* additive mask [0, -inf] selects key 0; a fully masked row gives zeros */
  float m[2] = {0, -INFINITY}, mfull[2] = {-INFINITY, -INFINITY};
  int64_t sm[1] = {2};
  float want_m[2] = {1, 2}, zeros[2] = {0, 0};
  attn_case(sq, q, sk, k, sv, v, 1, sm, m, 1, false, 0, 0, want_m, __LINE__);
  attn_case(sq, q, sk, k, sv, v, 1, sm, mfull, 1, false, 0, 0, zeros, __LINE__);

  /* causal, Sq = Sk = 2 with equal scores: row 0 sees key 0, row 1 averages */
  int64_t sq2[4] = {1, 1, 2, 1};
  float q2[2] = {0, 0};
  float want_c[4] = {1, 2, 2, 3};
  attn_case(sq2, q2, sk, k, sv, v, 0, NULL, NULL, 1, true, 0, 0, want_c, __LINE__);
  /* causal + window 1: each row sees only its own key */
  float want_w[4] = {1, 2, 3, 4};
  attn_case(sq2, q2, sk, k, sv, v, 0, NULL, NULL, 1, true, 1, 0, want_w, __LINE__);
  /* causal with offset Sk - Sq = 1: a single query sees both keys */
  attn_case(sq, q, sk, k, sv, v, 0, NULL, NULL, 1, true, 0, 0, want, __LINE__);
  /* Sq = 2 > Sk = 1, causal: row 0 sees nothing (zeros), row 1 sees key 0 */
  int64_t sk1[4] = {1, 1, 1, 1}, sv1[4] = {1, 1, 1, 2};
  float want_e[4] = {0, 0, 1, 2};
  attn_case(sq2, q2, sk1, k, sv1, v, 0, NULL, NULL, 1, true, 0, 0, want_e, __LINE__);
  /* a (Sq, Sk) mask broadcast over batch and heads, with causal */
  int64_t sm2[2] = {2, 2};
  float m2[4] = {0, 0, -INFINITY, 0};
  attn_case(sq2, q2, sk, k, sv, v, 2, sm2, m2, 1, true, 0, 0, want_w, __LINE__);

  /* GQA: Hq = 4, Hkv = 2; heads 0, 1 use kv head 0, heads 2, 3 kv head 1 */
  int64_t sqg[4] = {1, 4, 1, 1}, skg[4] = {1, 2, 2, 1}, svg[4] = {1, 2, 2, 1};
  float qg[4] = {1, 1, 1, 1}, kg[4] = {0, 0, 0, logf(3)}, vg[4] = {1, 3, 10, 30};
  float want_g[4] = {2, 2, 0.25f * 10 + 0.75f * 30, 0.25f * 10 + 0.75f * 30};
  attn_case(sqg, qg, skg, kg, svg, vg, 0, NULL, NULL, 1, false, 0, 0, want_g, __LINE__);
}

/* ------------------------------------------------------------------ symbols */

static void test_symbols(void) {
  bm_graph *g = new_graph();
  int seq = bm_sym_declare(g, "seq", 8);
  int64_t sx[2] = {BM_SYM(seq), 2}, sy[1] = {BM_SYM(seq)};
  bm_node *x = in_f32(g, "x", 2, sx), *y = in_f32(g, "y", 1, sy);
  bm_node *s = bm_sum(g, x, 1, false); /* (seq) */
  bm_output_add(g, "z", bm_add(g, s, y));
  float xv[6] = {1, 2, 3, 4, 5, 6}, yv[3] = {10, 20, 30};
  int64_t bx[2] = {3, 2}, by[1] = {3};
  bm_tensor in[2] = {tensor_f32(2, bx, xv), tensor_f32(1, by, yv)};
  float want[3] = {13, 27, 41};
  EXPECT(g, in, 1, by, want, 0);
  /* y disagrees about seq */
  in[1].shape[0] = 2;
  bm_tensor out;
  CHECK_ERR(bm_interp_run(g, in, &out), BM_ERR_INVALID_ARGUMENT, "'y'");
  free_inputs(in, 2);
  /* above the max */
  int64_t bbig[2] = {9, 2}, bbig1[1] = {9};
  float zero[18] = {0};
  bm_tensor in2[2] = {tensor_f32(2, bbig, zero), tensor_f32(1, bbig1, zero)};
  CHECK_ERR(bm_interp_run(g, in2, &out), BM_ERR_INVALID_ARGUMENT, "max");
  free_inputs(in2, 2);
  /* wrong static dim, wrong dtype, wrong rank */
  int64_t bad[2] = {3, 5};
  bm_tensor in3[2] = {tensor_f32(2, bad, zero), tensor_f32(1, by, yv)};
  CHECK_ERR(bm_interp_run(g, in3, &out), BM_ERR_INVALID_ARGUMENT, "input 'x': dim 1 is 5");
  in3[0].shape[1] = 2;
  in3[0].dtype = BM_DTYPE_F16;
  CHECK_ERR(bm_interp_run(g, in3, &out), BM_ERR_INVALID_ARGUMENT, "input 'x': dtype");
  in3[0].dtype = BM_DTYPE_F32;
  in3[0].ndim = 1;
  CHECK_ERR(bm_interp_run(g, in3, &out), BM_ERR_INVALID_ARGUMENT, "input 'x': rank");
  free_inputs(in3, 2);

  /* an affine dim: x (2*n+1) binds n; slicing [1:] gives (2*n) */
  g = new_graph();
  int nsym = bm_sym_declare(g, "n", 4);
  bm_dim d = {1, nsym, 2};
  bm_attrs at = {0};
  bm_node *src = bm_node_make_typed(g, BM_OP_INPUT, 0, NULL, &at, BM_DTYPE_F32, 1, &d);
  if (src) src->name = "x";
  bm_node *sl = bm_slice(g, src, 0, 1, INT64_MAX, 1);
  bm_output_add(g, "y", sl);
  float av[5] = {0, 1, 2, 3, 4};
  int64_t b5[1] = {5}, b4[1] = {4}, b6[1] = {6};
  bm_tensor ia = tensor_f32(1, b5, av);
  float wa[4] = {1, 2, 3, 4};
  EXPECT(g, &ia, 1, b4, wa, 0);
  bm_tensor_free(&ia);
  float z6[6] = {0};
  ia = tensor_f32(1, b6, z6);
  CHECK_ERR(bm_interp_run(g, &ia, &out), BM_ERR_INVALID_ARGUMENT, "not 2*n+1");
  bm_tensor_free(&ia);
}

/* ------------------------------------------------------------------ epilogues and FUSED */

static void test_epilogue(void) {
  /* matmul (2,3)@(3,2) with epilogue relu(r0 + bias) - 100 */
  bm_graph *g = new_graph();
  int64_t s23[2] = {2, 3}, s32[2] = {3, 2}, s2[1] = {2}, s22[2] = {2, 2};
  float av[6] = {1, 2, 3, 4, 5, 6}, bv[6] = {7, 8, 9, 10, 11, 12}, biasv[2] = {-100, 0};
  bm_node *a = in_f32(g, "a", 2, s23), *b = in_f32(g, "b", 2, s32);
  bm_node *bias = const_f32(g, 1, s2, biasv);
  bm_node *mm = bm_matmul(g, a, b, false, false);
  if (mm) {
    mm->in[mm->nin++] = bias;
    bm_prog *p = &mm->a.prog;
    p->nin = 2;
    p->n = 3;
    p->ins[0] = (bm_prog_ins){BM_OP_ADD, 0, 1, 0, 0};           /* r2 = r0 + r1 */
    p->ins[1] = (bm_prog_ins){BM_OP_RELU, 2, 0, 0, 0};          /* r3 = relu(r2) */
    p->ins[2] = (bm_prog_ins){BM_OP_SUB, 3, 0, BM_PROG_IMM_B, 100}; /* r4 = r3 - 100 */
    CHECK_OK(bm_node_infer(g, mm));
  }
  bm_output_add(g, "c", mm);
  bm_tensor in[2] = {tensor_f32(2, s23, av), tensor_f32(2, s32, bv)};
  /* [[58, 64], [139, 154]] + [-100, 0] -> relu -> -100 */
  float want[4] = {-100, -36, -61, 54};
  EXPECT(g, in, 2, s22, want, 0);
  free_inputs(in, 2);

  /* FUSED: y = x * w + 1 over x (2, 2), w (2) */
  g = new_graph();
  bm_node *x = in_f32(g, "x", 2, s22);
  float wv[2] = {10, 100};
  bm_node *ins[2] = {x, const_f32(g, 1, s2, wv)};
  bm_attrs at = {0};
  at.prog.nin = 2;
  at.prog.n = 2;
  at.prog.ins[0] = (bm_prog_ins){BM_OP_MUL, 0, 1, 0, 0};
  at.prog.ins[1] = (bm_prog_ins){BM_OP_ADD, 2, 0, BM_PROG_IMM_B, 1};
  bm_output_add(g, "y", bm_node_make(g, BM_OP_FUSED, 2, ins, &at));
  float xv[4] = {1, 2, 3, 4};
  bm_tensor xin = tensor_f32(2, s22, xv);
  float want2[4] = {11, 201, 31, 401};
  EXPECT(g, &xin, 2, s22, want2, 0);
  bm_tensor_free(&xin);

  /* bm_prog_eval directly, and n = 0 returns r0 */
  bm_prog p = {0};
  p.nin = 1;
  float r0 = 3;
  CHECK(bm_prog_eval(&p, &r0) == 3);
  p.n = 2;
  p.ins[0] = (bm_prog_ins){BM_OP_SQUARE, 0, 0, 0, 0};
  p.ins[1] = (bm_prog_ins){BM_OP_DIV, 1, 0, BM_PROG_IMM_B, 2};
  CHECK(bm_prog_eval(&p, &r0) == 4.5f);
}

/* ------------------------------------------------------------------ errors */

static void test_errors(void) {
  bm_graph *g = new_graph();
  int64_t s2[1] = {2};
  bm_node *x = in_f32(g, "x", 1, s2);
  bm_node *w = bm_weight(g, "blk.0.w", BM_DTYPE_F32, 1, s2, NULL, 0);
  bm_output_add(g, "y", bm_add(g, x, w));
  bm_output_add(g, "x", x);
  float xv[2] = {1, 2};
  bm_tensor in = tensor_f32(1, s2, xv);
  bm_tensor out[2] = {{.data = (void *)1}, {.data = (void *)1}};
  CHECK_ERR(bm_interp_run(g, &in, out), BM_ERR_NOT_FOUND, "weight 'blk.0.w' is not bound");
  CHECK(out[0].data == NULL && out[1].data == NULL);
  /* wrong byte size */
  float wv[3] = {1, 2, 3};
  if (w) {
    w->data = wv;
    w->data_size = sizeof wv;
  }
  CHECK_ERR(bm_interp_run(g, &in, out), BM_ERR_INVALID_ARGUMENT, "blk.0.w");
  if (w) w->data_size = 2 * sizeof(float);
  CHECK_OK(bm_interp_run(g, &in, out));
  if (out[0].data) {
    CHECK(((float *)out[0].data)[1] == 4);
    CHECK(((float *)out[1].data)[0] == 1); /* an input can be an output */
  }
  bm_tensor_free(&out[0]);
  bm_tensor_free(&out[1]);
  /* missing inputs */
  CHECK_ERR(bm_interp_run(g, NULL, out), BM_ERR_INVALID_ARGUMENT, NULL);
  bm_tensor_free(&in);

  /* an unused, unbound weight is not an error */
  g = new_graph();
  x = in_f32(g, "x", 1, s2);
  bm_weight(g, "unused", BM_DTYPE_F32, 1, s2, NULL, 0);
  bm_output_add(g, "y", bm_unary(g, BM_OP_NEG, x));
  in = tensor_f32(1, s2, xv);
  float want[2] = {-1, -2};
  EXPECT(g, &in, 1, s2, want, 0);
  bm_tensor_free(&in);
}

/* A chain long enough that freeing after last use matters; checks the result. */
static void test_chain(void) {
  bm_graph *g = new_graph();
  int64_t s[1] = {64};
  bm_node *x = in_f32(g, "x", 1, s), *y = x;
  for (int i = 0; i < 50; i++) y = bm_add(g, y, x);
  bm_output_add(g, "y", y);
  float xv[64], want[64];
  for (int i = 0; i < 64; i++) {
    xv[i] = (float)i;
    want[i] = 51.0f * (float)i;
  }
  bm_tensor in = tensor_f32(1, s, xv);
  EXPECT(g, &in, 1, s, want, 0);
  bm_tensor_free(&in);
}

int main(void) {
  RUN(test_f16);
  RUN(test_bf16);
  RUN(test_fp8);
  RUN(test_int_access);
  RUN(test_unary);
  RUN(test_binary_broadcast);
  RUN(test_cast);
  RUN(test_matmul);
  RUN(test_conv2d);
  RUN(test_dequant);
  RUN(test_movement);
  RUN(test_gather);
  RUN(test_reduce);
  RUN(test_norms);
  RUN(test_rope);
  RUN(test_attention);
  RUN(test_symbols);
  RUN(test_epilogue);
  RUN(test_errors);
  RUN(test_chain);
  if (mod) bm_module_destroy(mod);
  return bm_test_finish();
}
