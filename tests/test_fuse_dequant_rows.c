/* test_fuse_dequant_rows.c - fuse_dequant's decision by rows (the backend's
 * sized answer, bm_pass_options.supports_in): QMATMUL where the CUDA GEMV /
 * small-M kernels take the rows, else DEQUANT (to x's f16/bf16) + MATMUL on
 * the tensor-core GEMM; the CPU unchanged; fold keeps quantized bytes; the
 * same query deciding fuse_horizontal's MATMUL_GLU rows. No GPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../codegen/clike/clike.h"
#include "../ir/interp.h"
#include "../models/models.h"
#include "../passes/passes.h"
#include "opcheck.h"
#include "testutil.h"

#define F32 BM_DTYPE_F32
#define F16 BM_DTYPE_F16
#define BF16 BM_DTYPE_BF16

enum { K = 256, N = 136 };
static float wdata[N * K];

static void fill(float *w, int n, uint64_t seed) {
  uint64_t st = seed;
  for (int i = 0; i < n; i++) w[i] = bm_test_rand_uniform(&st, -0.5f, 0.5f);
}

static int count(const bm_graph *g, bm_op op) {
  int c = 0;
  for (int i = 0; i < g->nnodes; i++) c += g->nodes[i]->op == op;
  return c;
}

/* bm_test_rel_err of two tensors of one shape (any float dtypes) */
static double rel_err(const bm_tensor *got, const bm_tensor *want) {
  int64_t n = bm_tensor_numel(want);
  float *a = malloc((size_t)(n + 1) * sizeof *a), *b = malloc((size_t)(n + 1) * sizeof *b);
  double e = INFINITY;
  if (a && b && bm_tensor_numel(got) == n) {
    for (int64_t i = 0; i < n; i++) a[i] = bm_load_f32(got->data, got->dtype, i), b[i] = bm_load_f32(want->data, want->dtype, i);
    e = bm_test_rel_err(a, b, n);
  }
  free(a), free(b);
  return e;
}

static const bm_node *find(const bm_graph *g, bm_op op) {
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->op == op) return g->nodes[i];
  return NULL;
}

/* y (rows, N) = x (rows, K) @ W^T with W a bound f32 weight; rows symbolic
 * (max `rows`) or static; + bias and a residual (epilogue candidates) */
static bm_graph *linear(bm_module *m, bm_dtype at, int64_t rows, bool sym) {
  bm_graph *g = bm_graph_create(m, "main");
  int64_t r = sym ? BM_SYM(bm_sym_declare(g, "m", rows)) : rows;
  bm_node *x = bm_input(g, "x", at, 2, (int64_t[]){r, K}); // (rows, K)
  bm_node *w = bm_weight(g, "w", F32, 2, (int64_t[]){N, K}, wdata, sizeof wdata);
  bm_node *y = bm_linear(g, x, w, bm_input(g, "bias", at, 1, (int64_t[]){N}));
  bm_output_add(g, "y", bm_add(g, y, bm_input(g, "res", at, 2, (int64_t[]){r, N}))); // (rows, N)
  return g;
}

/* the CUDA backend's options (bm_backend_cuda: NVRTC not needed for passes) */
static bm_pass_options cuda_opts(bm_quant_mode q) {
  bm_pass_options po = {.verify_each = true, .quant = q, .quant_group = 32};
  po.supports = bm_clike_supports;
  po.supports_in = bm_clike_cuda_supports_in;
  return po;
}

/* the CUDA pipeline over the linear layer: which form the weight ends in */
static void cuda_case(bm_dtype at, bm_quant_mode q, int64_t rows, bool sym, bool want_dequant) {
  bm_module *m = bm_module_create("t");
  bm_graph *g = linear(m, at, rows, sym);
  bm_pass_options po = cuda_opts(q);
  CHECK_OK(bm_pipeline_run(g, &po));
  const bm_node *dq = find(g, BM_OP_DEQUANT), *mm = find(g, BM_OP_MATMUL);
  bm_dtype qt = q == BM_QUANT_INT8 ? BM_DTYPE_I8 : BM_DTYPE_I4;
  if (want_dequant) {
    CHECK_MSG(dq && mm && count(g, BM_OP_QMATMUL) == 0, "%s rows %lld (quant %d): want dequant + matmul",
              bm_dtype_name(at), (long long)rows, (int)q);
    if (dq && mm) {
      CHECK_MSG(dq->dtype == at, "dequant is %s, want %s", bm_dtype_name(dq->dtype), bm_dtype_name(at));
      CHECK(mm->in[1] == dq && mm->a.trans_b && mm->a.prog.n > 0); /* bias + residual fused */
      CHECK(dq->in[0]->op == BM_OP_WEIGHT && dq->in[0]->dtype == qt && dq->in[1]->dtype == F32);
      CHECK(dq->storage == BM_STORAGE_ARENA); /* planned with the activations */
    }
  } else {
    const bm_node *qm = find(g, BM_OP_QMATMUL);
    CHECK_MSG(qm && !dq && !mm, "%s rows %lld (quant %d): want qmatmul", bm_dtype_name(at), (long long)rows, (int)q);
    if (qm) CHECK(qm->in[1]->op == BM_OP_WEIGHT && qm->in[1]->dtype == qt);
  }
  bm_module_destroy(m);
}

/* more than 64 rows with f16/bf16 activations: DEQUANT + MATMUL; the GEMV /
 * small-M rows and f32 activations keep QMATMUL; symbolic rows at their max */
static void test_cuda_rows(void) {
  for (int qi = 0; qi < 2; qi++) {
    bm_quant_mode q = qi ? BM_QUANT_INT4 : BM_QUANT_INT8;
    for (int a = 0; a < 2; a++) {
      bm_dtype at = a ? F16 : BF16;
      cuda_case(at, q, 65, false, true);
      cuda_case(at, q, 300, false, true);
      cuda_case(at, q, 2048, true, true);
      cuda_case(at, q, 64, false, false);
      cuda_case(at, q, 64, true, false);
      cuda_case(at, q, 16, false, false);
      cuda_case(at, q, 1, false, false);
    }
    cuda_case(F32, q, 2048, false, false); /* f32: the weight is not rounded */
  }
  setenv("BM_CUDA_QGEMM", "old", 1); /* the previous path: QMATMUL at every row count */
  cuda_case(BF16, BM_QUANT_INT4, 2048, true, false);
  unsetenv("BM_CUDA_QGEMM");
}

/* the CPU backend (supports alone): QMATMUL at every row count, as before */
static void test_cpu_unchanged(void) {
  bm_module *m = bm_module_create("t");
  bm_graph *g = linear(m, F32, 4096, true);
  bm_pass_options po = {.verify_each = true, .quant = BM_QUANT_INT4, .supports = bm_backend_cpu.supports};
  CHECK(bm_backend_cpu.supports_in == NULL);
  CHECK_OK(bm_pipeline_run(g, &po));
  CHECK(count(g, BM_OP_QMATMUL) == 1 && count(g, BM_OP_DEQUANT) == 0);
  bm_module_destroy(m);
}

/* a fake backend answering as CUDA does: QMATMUL at <= 64 rows */
static int fake_supports_in(const bm_graph *g, const bm_node *n) {
  if (n->op != BM_OP_QMATMUL) return 1;
  int64_t k = n->in[1]->shape[1].add, nx = bm_node_numel_max(g, n->in[0]);
  return k > 0 && nx / k <= 64;
}

/* fuse_dequant alone: the interpreter before and after (the weight rounded to
 * the activation dtype: within that dtype's rounding) */
static void test_fake_backend(void) {
  const int64_t rows[] = {100, 64};
  for (int i = 0; i < 2; i++)
    for (int a = 0; a < 2; a++) {
      bm_dtype at = a ? F16 : BF16;
      bm_module *m = bm_module_create("t");
      bm_graph *g = bm_graph_create(m, "main");
      bm_node *x = bm_input(g, "x", at, 2, (int64_t[]){rows[i], K});
      int8_t qd[N * K];
      float sd[N * 8];
      uint64_t st = 7;
      for (int j = 0; j < N * K; j++) qd[j] = (int8_t)(bm_test_rand_uniform(&st, -127.9f, 127.9f));
      for (int j = 0; j < N * 8; j++) sd[j] = bm_test_rand_uniform(&st, 0.001f, 0.01f);
      bm_node *q = bm_weight(g, "q", BM_DTYPE_I8, 2, (int64_t[]){N, K}, qd, sizeof qd);
      bm_node *s = bm_weight(g, "s", F32, 2, (int64_t[]){N, 8}, sd, sizeof sd);
      bm_output_add(g, "y", bm_matmul(g, x, bm_dequant(g, q, s), false, true));
      int64_t syms[BM_MAX_SYMS] = {0};
      bm_tensor in[1], before[1], after[1];
      memset(before, 0, sizeof before), memset(after, 0, sizeof after);
      CHECK_OK(bm_opcheck_random_inputs(g, syms, 3, in));
      CHECK_OK(bm_interp_run(g, in, before));
      bm_pass_options po = {.verify_each = true, .supports_in = fake_supports_in};
      CHECK_OK(bm_pass_fuse_dequant(g, &po));
      CHECK_OK(bm_graph_verify(g));
      CHECK_OK(bm_interp_run(g, in, after));
      const bm_node *dq = find(g, BM_OP_DEQUANT);
      if (i == 0) CHECK(dq && dq->dtype == at && count(g, BM_OP_MATMUL) == 1 && count(g, BM_OP_QMATMUL) == 0);
      else CHECK(!dq && count(g, BM_OP_QMATMUL) == 1);
      double err = rel_err(&after[0], &before[0]);
      double tol = i == 0 ? (at == BF16 ? 1e-2 : 2e-3) : 0; /* QMATMUL: the same f32 dequant */
      CHECK_MSG(err <= tol, "%s rows %lld: rel err %g > %g", bm_dtype_name(at), (long long)rows[i], err, tol);
      bm_tensor_free(&in[0]), bm_tensor_free(&before[0]), bm_tensor_free(&after[0]);
      bm_module_destroy(m);
    }
}

/* a DEQUANT made f16/bf16 is q * scale in f32 rounded to nearest even, in the
 * interpreter (the CUDA kernel matches it bit for bit, test_ops_cuda) */
static void test_typed_dequant(void) {
  bm_module *m = bm_module_create("t");
  bm_graph *g = bm_graph_create(m, "main");
  uint8_t qd[4 * 32 / 2];
  float sd[4] = {0.37f, -1.1e-3f, 3.3f, 1e4f};
  for (size_t j = 0; j < sizeof qd; j++) qd[j] = (uint8_t)(j * 37 + 11);
  bm_node *q = bm_weight(g, "q", BM_DTYPE_I4, 2, (int64_t[]){4, 32}, qd, sizeof qd);
  bm_node *s = bm_weight(g, "s", F32, 2, (int64_t[]){4, 1}, sd, sizeof sd);
  bm_node *d = bm_node_make_typed(g, BM_OP_DEQUANT, 2, (bm_node *[]){q, s}, NULL, BF16, 2, q->shape);
  bm_node *d32 = bm_dequant(g, q, s);
  CHECK(d && d->dtype == BF16 && d32 && d32->dtype == F32);
  bm_output_add(g, "d", d);
  bm_output_add(g, "d32", d32);
  CHECK_OK(bm_graph_verify(g));
  bm_tensor out[2] = {{0}};
  CHECK_OK(bm_interp_run(g, NULL, out));
  int bad = 0;
  for (int i = 0; i < 4 * 32; i++) {
    float f = bm_load_f32(out[1].data, F32, i);
    uint16_t want = bm_f32_to_bf16(f), got;
    memcpy(&got, (const char *)out[0].data + 2 * i, 2);
    bad += want != got;
  }
  CHECK_MSG(bad == 0, "%d of 128 bf16 values differ from round(q * scale)", bad);
  bm_tensor_free(&out[0]), bm_tensor_free(&out[1]);
  /* the text form keeps the dtype */
  char *txt = NULL;
  bm_graph *g2 = NULL;
  CHECK_OK(bm_graph_to_text(g, &txt));
  bm_module *m2 = bm_module_create("t3");
  CHECK_OK(bm_graph_parse(m2, txt ? txt : "", &g2));
  int nbf = 0;
  for (int i = 0; g2 && i < g2->nnodes; i++) nbf += g2->nodes[i]->op == BM_OP_DEQUANT && g2->nodes[i]->dtype == BF16;
  CHECK_MSG(nbf == 1, "parsed back: %d bf16 dequants (text:\n%s)", nbf, txt ? txt : "");
  free(txt);
  bm_module_destroy(m2);
  bm_module_destroy(m);
  /* the CPU backend compiles a bf16 / f16 DEQUANT as the interpreter runs it */
  for (int t = 0; t < 2; t++) {
    m = bm_module_create("tc");
    g = bm_graph_create(m, "main");
    bm_node *qi = bm_input(g, "q", t ? BM_DTYPE_I4 : BM_DTYPE_I8, 2, (int64_t[]){24, 64});
    bm_node *si = bm_input(g, "s", F32, 2, (int64_t[]){24, 2});
    bm_output_add(g, "d", bm_node_make_typed(g, BM_OP_DEQUANT, 2, (bm_node *[]){qi, si}, NULL, t ? F16 : BF16, 2,
                                             qi->shape));
    bm_tensor in2[2];
    CHECK_OK(bm_opcheck_random_inputs(g, NULL, 5, in2));
    double err = 1;
    bm_opcheck_options oo = {.fuse = true};
    CHECK_OK(bm_opcheck(g, in2, &oo, &err));
    CHECK_MSG(err == 0, "cpu typed dequant %d: rel err %g", t, err);
    bm_tensor_free(&in2[0]), bm_tensor_free(&in2[1]);
    bm_module_destroy(m);
  }
  /* another dtype is refused with the inferred one named */
  m = bm_module_create("t2");
  g = bm_graph_create(m, "main");
  q = bm_weight(g, "q", BM_DTYPE_I4, 2, (int64_t[]){4, 32}, qd, sizeof qd);
  s = bm_weight(g, "s", F32, 2, (int64_t[]){4, 1}, sd, sizeof sd);
  CHECK(bm_node_make_typed(g, BM_OP_DEQUANT, 2, (bm_node *[]){q, s}, NULL, BM_DTYPE_I32, 2, q->shape) == NULL);
  CHECK(bm_graph_status(g) && strstr(bm_status_message(bm_graph_status(g)), "f32"));
  bm_module_destroy(m);
}

/* fold never expands a DEQUANT of constants (the package keeps i8/i4), and
 * the pipeline's quantized weights stay i8/i4 WEIGHTs */
static void test_fold_keeps_quant(void) {
  bm_module *m = bm_module_create("t");
  bm_graph *g = bm_graph_create(m, "main");
  int8_t qd[8 * 16];
  float sd[8];
  for (int i = 0; i < 8 * 16; i++) qd[i] = (int8_t)(i - 64);
  for (int i = 0; i < 8; i++) sd[i] = 0.01f * (float)(i + 1);
  bm_node *q = bm_const(g, BM_DTYPE_I8, 2, (int64_t[]){8, 16}, qd);
  bm_node *s = bm_const(g, F32, 2, (int64_t[]){8, 1}, sd);
  bm_node *x = bm_input(g, "x", F32, 2, (int64_t[]){3, 16});
  bm_output_add(g, "y", bm_matmul(g, x, bm_dequant(g, q, s), false, true));
  bm_pass_options po = {.verify_each = true};
  CHECK_OK(bm_pass_fold(g, &po));
  CHECK(count(g, BM_OP_DEQUANT) == 1);
  bm_module_destroy(m);

  m = bm_module_create("t2");
  g = linear(m, BF16, 2048, true);
  po = cuda_opts(BM_QUANT_INT8);
  CHECK_OK(bm_pipeline_run(g, &po));
  for (int i = 0; i < g->nnodes; i++) {
    const bm_node *n = g->nodes[i];
    bool big_float = (n->op == BM_OP_WEIGHT || n->op == BM_OP_CONST) && n->ndim == 2 && n->dtype != BM_DTYPE_I8 &&
                     n->shape[0].add == N && n->shape[1].add == K;
    CHECK_MSG(!big_float, "node %d: a %s (N, K) constant in the package", i, bm_dtype_name(n->dtype));
  }
  CHECK(count(g, BM_OP_DEQUANT) == 1);
  bm_module_destroy(m);
}

/* ---- fuse_horizontal's MATMUL_GLU rows from the same query */

static float wg[N * K], wu[N * K];

static bm_graph *mlp(bm_module *m, bm_dtype at, bm_dtype wt, int64_t rows) {
  bm_graph *g = bm_graph_create(m, "main");
  bm_node *x = bm_input(g, "x", at, 2, (int64_t[]){BM_SYM(bm_sym_declare(g, "m", rows)), K});
  size_t wb = bm_dtype_nbytes(wt, N * K);
  void *gd = bm_arena_alloc(m->arena, wb), *ud = bm_arena_alloc(m->arena, wb);
  for (int i = 0; i < N * K; i++) bm_store_f32(gd, wt, i, wg[i]), bm_store_f32(ud, wt, i, wu[i]);
  bm_node *gt = bm_linear(g, x, bm_weight(g, "gate", wt, 2, (int64_t[]){N, K}, gd, wb), NULL);
  bm_node *up = bm_linear(g, x, bm_weight(g, "up", wt, 2, (int64_t[]){N, K}, ud, wb), NULL);
  bm_output_add(g, "h", bm_mul(g, bm_silu(g, gt), up));
  return g;
}

static int glu_le8(const bm_graph *g, const bm_node *n) {
  if (n->op != BM_OP_MATMUL_GLU) return 1;
  return bm_node_numel_max(g, n->in[0]) / K <= 8;
}

static int glu_made(bm_dtype at, bm_dtype wt, int64_t rows, int (*sup_in)(const bm_graph *, const bm_node *)) {
  bm_module *m = bm_module_create("t");
  bm_graph *g = mlp(m, at, wt, rows);
  bm_pass_options po = {.verify_each = true, .supports = bm_clike_supports, .supports_in = sup_in};
  CHECK_OK(bm_pass_fuse_horizontal(g, &po));
  CHECK_OK(bm_graph_verify(g));
  int c = count(g, BM_OP_MATMUL_GLU);
  bm_module_destroy(m);
  return c;
}

static void test_glu_rows(void) {
  /* the backend's sized answer decides (not the 4-row default) */
  CHECK(glu_made(F32, F32, 8, glu_le8) == 1);
  CHECK(glu_made(F32, F32, 9, glu_le8) == 0);
  /* CUDA: where emit_matmul would run x @ W^T on the GEMV: bf16 up to 4 rows
   * (then the small-M GEMM), f32 weights up to 16 (no tensor-core tile) */
  CHECK(glu_made(BF16, BF16, 4, bm_clike_cuda_supports_in) == 1);
  CHECK(glu_made(BF16, BF16, 5, bm_clike_cuda_supports_in) == 0);
  CHECK(glu_made(F32, F32, 16, bm_clike_cuda_supports_in) == 1);
  CHECK(glu_made(F32, F32, 17, bm_clike_cuda_supports_in) == 0);
  /* `supports` alone: decode rows (at most 4) */
  CHECK(glu_made(F32, F32, 4, NULL) == 1);
  CHECK(glu_made(F32, F32, 5, NULL) == 0);
}

/* ---- the kernels: a DEQUANT kernel (8-output units; BM_CUDA_DEQ=old: 16-byte
 * chunks) and the TMA GEMM */

static void test_cuda_source(void) {
  for (int old = 0; old < 2; old++)
    for (int qi = 0; qi < 2; qi++) {
      if (old) setenv("BM_CUDA_DEQ", "old", 1);
      bm_module *m = bm_module_create("t");
      bm_graph *g = linear(m, BF16, 777, false);
      bm_pass_options po = cuda_opts(qi ? BM_QUANT_INT4 : BM_QUANT_INT8);
      CHECK_OK(bm_pipeline_run(g, &po));
      bm_clike_out out;
      CHECK_OK(bm_clike_emit_module(&bm_clike_cuda, m, &out));
      const char *src = out.src.s;
      if (old) {
        CHECK(src && strstr(src, "/* 16-byte chunks of q */") && strstr(src, "bm_ld16_stream(bm_buf(0) + e0"));
        CHECK(src && strstr(src, "*(bm_u4 *)(bm_out(2) + 2 * (e0 + 8 * s8)) = o;")); /* q, s, then the output */
        CHECK(src && strstr(src, qi ? "(float)((int)(r.w[e >> 3]" : "(float)(signed char)(r.w[e >> 2]"));
      } else { /* constant q: non-volatile loads past L1, one word (i4) or two (i8) per unit */
        CHECK(src && strstr(src, "/* units of 8 outputs */") && strstr(src, "for (int u = 0; u < 2; u++)"));
        CHECK(src && strstr(src, qi ? "asm(\"ld.global.nc.L1::no_allocate.u32 %0, [%1];\""
                                    : "asm(\"ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];\""));
        CHECK(src && strstr(src, "*(bm_u4 *)(bm_out(2) + (size_t)16 * c) = o;")); /* q, s, then the output */
        CHECK(src && strstr(src, qi ? "(((w[u] ^ 0x88888888u) >> (4 * j)) & 15u)) - 8388616.0f"
                                    : "^ 0x80808080u) >> (8 * (j & 3))) & 255u)) - 8388736.0f"));
      }
      CHECK(src && strstr(src, "  /* tma ") && !strstr(src, "_qmatmul"));
      CHECK(out.nkernels == 2);
      bm_clike_out_free(&out);
      bm_module_destroy(m);
      unsetenv("BM_CUDA_DEQ");
    }
}

/* ---- the golden llama2 in bf16 with int8 / int4 weights: the forward
 * function after the CUDA pipeline (100 rows: DEQUANT to bf16 + MATMUL) and
 * after the same with BM_CUDA_QGEMM=old (QMATMUL: the f32 dequantization),
 * both in the interpreter, against the f32 model with the same quantized
 * weights. Rounding the dequantized weight to bf16 (at most 2^-9 relative)
 * re-rolls the bf16 roundings of the activations (the two bf16 runs are
 * ~1e-2 apart) but hardly adds to their error: measured int8 0.0234 vs
 * 0.0228, int4 g32 0.0867 vs 0.0864 (rms relative over the logits);
 * asserted: at most 1.25x QMATMUL's (bm_test_rms_rel). */

/* logits (1, P, V) of the golden prompt's first P tokens through `forward`
 * after the pipeline with po; the DEQUANTs left in *ndq */
static bm_status llm_forward(const char *dir, bm_dtype dt, const bm_pass_options *po, int64_t P, bm_tensor *logits,
                             int *ndq) {
  bm_model_options mo = {.max_ctx = 128, .max_batch = 1, .max_seq = 128, .dtype = dt, .weight_dtype = dt};
  bm_module *m = NULL;
  bm_weight_source *src = NULL;
  BM_RETURN_IF_ERROR(bm_model_build(dir, &mo, &m, &src));
  bm_status s = NULL;
  bm_graph *g = NULL;
  for (int i = 0; i < m->ngraphs; i++)
    if (!strcmp(m->graphs[i]->name, "forward")) g = m->graphs[i];
  if (!g) s = bm_status_make(BM_ERR_NOT_FOUND, "%s: no forward function", dir);
  if (!s) s = bm_pipeline_run(g, po);
  *ndq = g ? count(g, BM_OP_DEQUANT) : 0;
  bm_tensor in[2] = {{0}};
  for (int i = 0; i < 2 && !s; i++) { /* input_ids, positions: (1, P) i32 */
    in[i] = (bm_tensor){.dtype = BM_DTYPE_I32, .ndim = 2, .shape = {1, P}};
    in[i].data = calloc((size_t)P, sizeof(int32_t));
    if (!in[i].data) s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "inputs");
    for (int64_t t = 0; t < P && !s; t++) ((int32_t *)in[i].data)[t] = (int32_t)(i ? t : (t * 7 + 3) % 64);
  }
  for (int i = 0; i < g->ninputs && !s; i++)
    if (strcmp(g->inputs[i]->name, i ? "positions" : "input_ids"))
      s = bm_status_make(BM_ERR_INTERNAL, "forward input %d is '%s'", i, g->inputs[i]->name);
  if (!s) s = bm_interp_run(g, in, logits);
  free(in[0].data), free(in[1].data);
  bm_module_destroy(m);
  bm_weight_source_close(src);
  return s;
}

static void test_llm_bf16(void) {
  const char *dir = bm_test_shared("golden/hf/llama2");
  enum { P = 100 }; /* more than 64 rows (the symbol's max: 128) */
  for (int qi = 0; qi < 2; qi++) {
    bm_quant_mode q = qi ? BM_QUANT_INT4 : BM_QUANT_INT8;
    bm_pass_options cuda = cuda_opts(q);
    bm_tensor r[4] = {{0}}, a[4] = {{0}}, b[4] = {{0}};
    int ndq_ref = -1, ndq_old = -1, ndq_new = -1;
    CHECK_OK(llm_forward(dir, F32, &cuda, P, r, &ndq_ref)); /* f32: QMATMUL, the reference */
    setenv("BM_CUDA_QGEMM", "old", 1);
    CHECK_OK(llm_forward(dir, BF16, &cuda, P, a, &ndq_old));
    unsetenv("BM_CUDA_QGEMM");
    CHECK_OK(llm_forward(dir, BF16, &cuda, P, b, &ndq_new));
    CHECK_MSG(ndq_ref == 0 && ndq_old == 0 && ndq_new >= 14, "dequants: ref %d, old %d, new %d", ndq_ref, ndq_old, ndq_new);
    int64_t n = bm_tensor_numel(&r[0]);
    bool ok = n > 0 && r[0].dtype == F32 && a[0].dtype == F32 && b[0].dtype == F32 && bm_tensor_numel(&a[0]) == n &&
              bm_tensor_numel(&b[0]) == n;
    CHECK_MSG(ok, "logits missing");
    if (ok) {
      const float *rf = r[0].data, *af = a[0].data, *bf = b[0].data;
      double eo = bm_test_rms_rel(af, rf, n), en = bm_test_rms_rel(bf, rf, n), d = bm_test_rms_rel(bf, af, n);
      if (getenv("BM_TEST_VERBOSE"))
        fprintf(stderr, "  llama2 %s, bf16 vs f32 logits rms rel: qmatmul %.4g, dequant + matmul %.4g (apart %.4g)\n",
                qi ? "int4 g32" : "int8", eo, en, d);
      CHECK_MSG(en <= 1.25 * eo, "quant %d: bf16 rms rel err %g with the dequant vs %g with qmatmul", (int)q, en, eo);
    }
    for (int i = 0; i < 4; i++) bm_tensor_free(&r[i]), bm_tensor_free(&a[i]), bm_tensor_free(&b[i]);
  }
}

int main(void) {
  fill(wdata, N * K, 1);
  fill(wg, N * K, 2);
  fill(wu, N * K, 3);
  RUN(test_cuda_rows);
  RUN(test_cpu_unchanged);
  RUN(test_fake_backend);
  RUN(test_typed_dequant);
  RUN(test_fold_keeps_quant);
  RUN(test_glu_rows);
  RUN(test_cuda_source);
  RUN(test_llm_bf16);
  return bm_test_finish();
}
