/* test_llm_ops.c - the LLM generation ops (STATE, KV_WRITE, the kv_len form
 * of ATTENTION, TOPK_MASK, MOE with (T) or (batch, seq) tokens, TAKE_ROW), compiled for the CPU against the reference
 * interpreter; states in packages and sessions (persistence across runs and
 * functions, reset, manifest validation); incremental decode through a KV
 * cache against one full pass; negative slices of symbolic axes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "../runtime/internal.h"
#include "opcheck.h"
#include "testutil.h"

/* ------------------------------------------------------------------ helpers */

static float *rand_f32(int64_t n, uint64_t seed, float lo, float hi) {
  float *p = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
  bm_test_fill_uniform(p, n, seed, lo, hi);
  return p;
}

/* A bound f32 weight whose data lives as long as the test (freed at exit). */
static void *keep[256];
static int nkeep;
static bm_node *weight_f32(bm_graph *g, const char *name, bm_dtype t, int ndim, const int64_t *shape,
                           uint64_t seed, float scale) {
  int64_t n = 1;
  for (int d = 0; d < ndim; d++) n *= shape[d];
  float *f = rand_f32(n, seed, -scale, scale);
  void *data = malloc(bm_dtype_nbytes(t, n));
  for (int64_t i = 0; i < n; i++) bm_store_f32(data, t, i, f[i]);
  free(f);
  if (nkeep < 256) keep[nkeep++] = data;
  return bm_weight(g, name, t, ndim, shape, data, bm_dtype_nbytes(t, n));
}

static bm_tensor tensor_f32(bm_dtype t, int ndim, const int64_t *shape, uint64_t seed) {
  bm_tensor x;
  CHECK_OK(bm_tensor_alloc(&x, t, ndim, shape));
  int64_t n = bm_tensor_numel(&x);
  float *f = rand_f32(n, seed, -1.f, 1.f);
  for (int64_t i = 0; i < n; i++) bm_store_f32(x.data, t, i, f[i]);
  free(f);
  return x;
}

static bm_tensor tensor_i(bm_dtype t, int n, const int64_t *v) {
  bm_tensor x;
  int64_t shape[1] = {n};
  CHECK_OK(bm_tensor_alloc(&x, t, 1, shape));
  for (int i = 0; i < n; i++) bm_store_i64(x.data, t, i, v[i]);
  return x;
}

/* opcheck with 1 and 2 threads; the module is rebuilt by `build` each time. */
typedef bm_graph *(*build_fn)(bm_module *m, void *ctx);
static void check_ops(const char *what, build_fn build, void *ctx, bm_tensor *inputs, double tol, bool fuse) {
  for (int threads = 1; threads <= 2; threads++) {
    bm_module *m = bm_module_create(what);
    bm_graph *g = build(m, ctx);
    CHECK_MSG(g && !bm_graph_status(g), "%s: %s", what, g ? bm_status_message(bm_graph_status(g)) : "NULL");
    if (g && !bm_graph_status(g)) {
      double err = INFINITY;
      bm_opcheck_options o = {.fuse = fuse, .threads = threads};
      CHECK_OK(bm_opcheck(g, inputs, &o, &err));
      CHECK_MSG(err <= tol, "%s (threads %d): rel err %g > %g", what, threads, err, tol);
    }
    bm_module_destroy(m);
  }
}

/* ------------------------------------------------------------------ kv_write */

typedef struct kvw_ctx {
  bm_dtype cache_t, rows_t;
} kvw_ctx;

/* cache (3, 2, 16, 8), rows (b<=3, 2, s<=5, 8), pos (b): the written cache */
static bm_graph *build_kv_write(bm_module *m, void *vctx) {
  kvw_ctx *c = vctx;
  bm_graph *g = bm_graph_create(m, "main");
  int b = bm_sym_declare(g, "b", 3), s = bm_sym_declare(g, "s", 5);
  bm_node *cache = bm_state(g, "cache", c->cache_t, 4, (int64_t[]){3, 2, 16, 8});
  bm_node *rows = bm_input(g, "rows", c->rows_t, 4, (int64_t[]){BM_SYM(b), 2, BM_SYM(s), 8});
  bm_node *pos = bm_input(g, "pos", BM_DTYPE_I64, 1, (int64_t[]){BM_SYM(b)});
  bm_output_add(g, "cache", bm_kv_write(g, cache, rows, pos));
  return g;
}

static void test_kv_write(void) {
  /* row 0 near the end (14, 15 kept; 16.. dropped), row 1 partly before the
   * start, row 2 far out of range in both directions */
  int64_t pos_v[3][3] = {{14, -2, INT64_MAX}, {0, 11, INT64_MIN}, {3, 16, -5}};
  for (int k = 0; k < 3; k++) {
    kvw_ctx c = {k == 1 ? BM_DTYPE_F16 : BM_DTYPE_F32, k == 2 ? BM_DTYPE_BF16 : BM_DTYPE_F32};
    bm_tensor in[2];
    in[0] = tensor_f32(c.rows_t, 4, (int64_t[]){3, 2, k == 0 ? 5 : 3, 8}, 11 + k);
    in[1] = tensor_i(BM_DTYPE_I64, 3, pos_v[k]);
    char what[64];
    snprintf(what, sizeof what, "kv_write %d", k);
    check_ops(what, build_kv_write, &c, in, k == 0 ? 0.0 : 1e-2, true);
    bm_tensor_free(&in[0]);
    bm_tensor_free(&in[1]);
  }
  /* the interpreter drops exactly the out-of-range rows */
  kvw_ctx c = {BM_DTYPE_F32, BM_DTYPE_F32};
  bm_module *m = bm_module_create("kvw");
  bm_graph *g = build_kv_write(m, &c);
  bm_tensor in[2] = {tensor_f32(BM_DTYPE_F32, 4, (int64_t[]){1, 2, 5, 8}, 3), tensor_i(BM_DTYPE_I64, 1, (int64_t[]){14})};
  bm_tensor out;
  CHECK_OK(bm_interp_run(g, in, &out));
  const float *o = out.data, *r = in[0].data;
  int bad = 0;
  for (int h = 0; h < 2; h++)
    for (int l = 0; l < 16; l++)
      for (int d = 0; d < 8; d++) {
        float want = l >= 14 ? r[((h * 5) + l - 14) * 8 + d] : 0.f;
        bad += o[((0 * 2 + h) * 16 + l) * 8 + d] != want;
      }
  CHECK(bad == 0);
  bm_tensor_free(&out);
  bm_tensor_free(&in[0]);
  bm_tensor_free(&in[1]);
  /* shape errors name the problem */
  bm_graph *g2 = bm_graph_create(m, "bad");
  bm_node *x = bm_input(g2, "x", BM_DTYPE_F32, 4, (int64_t[]){4, 2, 16, 8});
  bm_node *st = bm_state(g2, "cache", BM_DTYPE_F32, 4, (int64_t[]){3, 2, 16, 8});
  bm_node *p = bm_input(g2, "p", BM_DTYPE_I32, 1, (int64_t[]){4});
  CHECK(bm_kv_write(g2, st, x, p) == NULL);
  CHECK(strstr(bm_status_message(bm_graph_status(g2)), "do not fit cache"));
  bm_graph *g3 = bm_graph_create(m, "bad2");
  bm_node *x3 = bm_input(g3, "x", BM_DTYPE_F32, 4, (int64_t[]){1, 2, 16, 8});
  bm_node *p3 = bm_input(g3, "p", BM_DTYPE_I32, 1, (int64_t[]){1});
  CHECK(bm_kv_write(g3, x3, x3, p3) == NULL);
  CHECK(strstr(bm_status_message(bm_graph_status(g3)), "must be a state"));
  CHECK(bm_state(g3, "s", BM_DTYPE_F32, 1, (int64_t[]){4}) != NULL);
  CHECK(bm_state(g3, "s", BM_DTYPE_F32, 1, (int64_t[]){4}) == bm_state(g3, "s", BM_DTYPE_F32, 1, (int64_t[]){4}));
  bm_module_destroy(m);
}

/* The verifier rejects reads of a state's old value after its in-place update. */
static void test_state_order(void) {
  bm_module *m = bm_module_create("order");
  bm_graph *g = bm_graph_create(m, "main");
  bm_node *s = bm_state(g, "s", BM_DTYPE_F32, 4, (int64_t[]){1, 1, 4, 2});
  bm_node *r = bm_input(g, "r", BM_DTYPE_F32, 4, (int64_t[]){1, 1, 1, 2});
  bm_node *p = bm_input(g, "p", BM_DTYPE_I32, 1, (int64_t[]){1});
  bm_node *w = bm_kv_write(g, s, r, p);
  bm_node *old = bm_unary(g, BM_OP_EXP, s); /* reads the old value after the write */
  bm_output_add(g, "w", w);
  bm_output_add(g, "old", old);
  CHECK_OK(bm_graph_status(g));
  CHECK_ERR(bm_graph_verify(g), BM_ERR_INVALID_ARGUMENT, "reads %0 after it");

  bm_graph *g2 = bm_graph_create(m, "two");
  s = bm_state(g2, "s", BM_DTYPE_F32, 4, (int64_t[]){1, 1, 4, 2});
  r = bm_input(g2, "r", BM_DTYPE_F32, 4, (int64_t[]){1, 1, 1, 2});
  p = bm_input(g2, "p", BM_DTYPE_I32, 1, (int64_t[]){1});
  bm_output_add(g2, "a", bm_kv_write(g2, s, r, p));
  bm_output_add(g2, "b", bm_kv_write(g2, s, r, p));
  CHECK_ERR(bm_graph_verify(g2), BM_ERR_INVALID_ARGUMENT, "already overwrites");

  bm_graph *g3 = bm_graph_create(m, "outold");
  s = bm_state(g3, "s", BM_DTYPE_F32, 4, (int64_t[]){1, 1, 4, 2});
  r = bm_input(g3, "r", BM_DTYPE_F32, 4, (int64_t[]){1, 1, 1, 2});
  p = bm_input(g3, "p", BM_DTYPE_I32, 1, (int64_t[]){1});
  bm_output_add(g3, "old", s);
  bm_output_add(g3, "new", bm_kv_write(g3, s, r, p));
  CHECK_ERR(bm_graph_verify(g3), BM_ERR_INVALID_ARGUMENT, "graph output");

  /* reads before the write are fine, and so are chained writes; text round trip */
  bm_graph *g4 = bm_graph_create(m, "fine");
  s = bm_state(g4, "s", BM_DTYPE_F32, 4, (int64_t[]){1, 1, 4, 2});
  r = bm_input(g4, "r", BM_DTYPE_F32, 4, (int64_t[]){1, 1, 1, 2});
  p = bm_input(g4, "p", BM_DTYPE_I32, 1, (int64_t[]){1});
  bm_node *before = bm_unary(g4, BM_OP_EXP, s);
  bm_node *w1 = bm_kv_write(g4, s, r, p);
  bm_node *w2 = bm_kv_write(g4, w1, r, p);
  bm_output_add(g4, "before", before);
  bm_output_add(g4, "after", w2);
  CHECK_OK(bm_graph_verify(g4));
  char *t1 = NULL, *t2 = NULL;
  CHECK_OK(bm_graph_to_text(g4, &t1));
  CHECK(t1 && strstr(t1, "state \"s\" f32 [1, 1, 4, 2]") && strstr(t1, "kv_write"));
  bm_module *m2 = bm_module_create("parsed");
  bm_graph *pg = NULL;
  CHECK_OK(bm_graph_parse(m2, t1, &pg));
  if (pg) {
    CHECK_OK(bm_graph_verify(pg));
    CHECK_OK(bm_graph_to_text(pg, &t2));
    CHECK(t2 && t1 && strcmp(t1, t2) == 0);
  }
  free(t1);
  free(t2);
  /* CSE keeps two writes with the same inputs apart */
  bm_pass_options po = {.verify_each = true};
  CHECK_OK(bm_pass_run_named(g4, "cse", &po));
  int nw = 0;
  for (int i = 0; i < g4->nnodes; i++) nw += g4->nodes[i]->op == BM_OP_KV_WRITE;
  CHECK(nw == 2);
  bm_module_destroy(m2);
  bm_module_destroy(m);
}

/* ------------------------------------------------------------------ attention with kv_len */

typedef struct akv_ctx {
  int64_t bmax, L, sq_max, hq, hkv, d;
  bool mask, causal, sym_sq;
  int window;
  bm_dtype kt;
} akv_ctx;

/* q (b, Hq, sq, D), k/v (Bmax, Hkv, L, D) inputs, [mask (b, 1, sq, L)], kv_len (b) */
static bm_graph *build_akv(bm_module *m, void *vctx) {
  akv_ctx *c = vctx;
  bm_graph *g = bm_graph_create(m, "main");
  int b = bm_sym_declare(g, "b", c->bmax);
  int64_t sq = c->sym_sq ? BM_SYM(bm_sym_declare(g, "sq", c->sq_max)) : c->sq_max;
  bm_node *q = bm_input(g, "q", BM_DTYPE_F32, 4, (int64_t[]){BM_SYM(b), c->hq, sq, c->d});
  bm_node *k = bm_input(g, "k", c->kt, 4, (int64_t[]){c->bmax, c->hkv, c->L, c->d});
  bm_node *v = bm_input(g, "v", c->kt, 4, (int64_t[]){c->bmax, c->hkv, c->L, c->d});
  bm_node *mask = c->mask ? bm_input(g, "mask", BM_DTYPE_F32, 4, (int64_t[]){BM_SYM(b), 1, sq, c->L}) : NULL;
  bm_node *len = bm_input(g, "kv_len", BM_DTYPE_I32, 1, (int64_t[]){BM_SYM(b)});
  bm_output_add(g, "y", bm_attention_kv(g, q, k, v, mask, len, 0, c->causal, c->window, 0));
  return g;
}

static void run_akv(akv_ctx *c, int64_t b, int64_t sq, const int64_t *lens, bool poison, double tol) {
  bm_tensor in[5];
  int n = 0;
  in[n++] = tensor_f32(BM_DTYPE_F32, 4, (int64_t[]){b, c->hq, sq, c->d}, 1);
  in[n++] = tensor_f32(c->kt, 4, (int64_t[]){c->bmax, c->hkv, c->L, c->d}, 2);
  in[n++] = tensor_f32(c->kt, 4, (int64_t[]){c->bmax, c->hkv, c->L, c->d}, 3);
  if (poison) /* keys and values past each row's length must never be read */
    for (int64_t bb = 0; bb < c->bmax; bb++)
      for (int64_t h = 0; h < c->hkv; h++)
        for (int64_t j = bb < b ? lens[bb] : 0; j < c->L; j++)
          for (int64_t d = 0; d < c->d; d++)
            for (int t = 1; t <= 2; t++) bm_store_f32(in[t].data, c->kt, ((bb * c->hkv + h) * c->L + j) * c->d + d, NAN);
  if (c->mask) in[n++] = tensor_f32(BM_DTYPE_F32, 4, (int64_t[]){b, 1, sq, c->L}, 4);
  in[n++] = tensor_i(BM_DTYPE_I32, (int)b, lens);
  char what[96];
  snprintf(what, sizeof what, "attention_kv b=%lld sq=%lld L=%lld", (long long)b, (long long)sq, (long long)c->L);
  check_ops(what, build_akv, c, in, tol, true);
  for (int i = 0; i < n; i++) bm_tensor_free(&in[i]);
}

static void test_attention_kv(void) {
  /* prefill-shaped: per-row lengths differ, causal, mask, GQA, Bmax > B */
  akv_ctx c = {.bmax = 3, .L = 40, .sq_max = 6, .hq = 4, .hkv = 2, .d = 16, .mask = true, .causal = true,
               .sym_sq = true, .kt = BM_DTYPE_F32};
  run_akv(&c, 2, 5, (int64_t[]){7, 33}, false, 2e-5);
  /* lengths beyond L are clamped, 0 gives zeros; sliding window */
  c.window = 3;
  c.mask = false;
  run_akv(&c, 3, 4, (int64_t[]){0, 99, 4}, false, 2e-5);
  /* decode over a long cache: only the first kv_len keys may be touched */
  akv_ctx dc = {.bmax = 2, .L = 4096, .sq_max = 1, .hq = 2, .hkv = 1, .d = 32, .causal = true, .kt = BM_DTYPE_F32};
  run_akv(&dc, 2, 1, (int64_t[]){10, 3}, true, 2e-5);
  dc.kt = BM_DTYPE_F16;
  dc.L = 300;
  run_akv(&dc, 1, 1, (int64_t[]){129}, true, 2e-3);
}

/* ------------------------------------------------------------------ topk_mask */

typedef struct topk_ctx {
  int k;
  float fill;
  bm_dtype t;
  int64_t n;
} topk_ctx;

static bm_graph *build_topk(bm_module *m, void *vctx) {
  topk_ctx *c = vctx;
  bm_graph *g = bm_graph_create(m, "main");
  int r = bm_sym_declare(g, "rows", 9);
  bm_node *x = bm_input(g, "x", c->t, 3, (int64_t[]){2, BM_SYM(r), c->n});
  bm_output_add(g, "y", bm_topk_mask(g, x, c->k, c->fill));
  return g;
}

static void test_topk_mask(void) {
  topk_ctx cases[] = {{3, -100.f, BM_DTYPE_F32, 37}, {1, 0.f, BM_DTYPE_F16, 8}, {8, -5.f, BM_DTYPE_F32, 8},
                      {20, -7.f, BM_DTYPE_BF16, 5}, {64, -1.f, BM_DTYPE_F32, 300}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    topk_ctx *c = &cases[i];
    bm_tensor x = tensor_f32(c->t, 3, (int64_t[]){2, 7, c->n}, 5 + i);
    /* many ties: values on a coarse grid, plus a NaN and infinities */
    for (int64_t j = 0; j < bm_tensor_numel(&x); j++)
      bm_store_f32(x.data, c->t, j, roundf(bm_load_f32(x.data, c->t, j) * 3.f) / 3.f);
    bm_store_f32(x.data, c->t, 1, NAN);
    bm_store_f32(x.data, c->t, 2, INFINITY);
    bm_store_f32(x.data, c->t, c->n + 1, -INFINITY);
    char what[64];
    snprintf(what, sizeof what, "topk_mask k=%d n=%lld", c->k, (long long)c->n);
    /* NaN and inf inputs: compare exactly, element by element */
    for (int threads = 1; threads <= 2; threads++) {
      bm_module *m = bm_module_create("topk");
      bm_graph *g = build_topk(m, c);
      bm_tensor ref;
      CHECK_OK(bm_interp_run(g, &x, &ref));
      char path[512];
      snprintf(path, sizeof path, "%s/topk_%zu_%d.bmpk", bm_test_tmpdir(), i, threads);
      bm_compile_options co;
      bm_compile_options_init(&co);
      co.passes.verify_each = true;
      CHECK_OK(bm_compile_module(m, &co, path));
      bm_package *pkg = NULL;
      bm_session *s = NULL;
      bm_session_options so = {.threads = threads};
      CHECK_OK(bm_package_open(path, NULL, &pkg));
      if (pkg) CHECK_OK(bm_session_create(pkg, &so, &s));
      if (s) {
        const void *p;
        bm_tensor_info info;
        CHECK_OK(bm_session_set_input(s, 0, 0, x.data, x.dtype, 3, x.shape));
        CHECK_OK(bm_session_run(s, 0));
        CHECK_OK(bm_session_get_output(s, 0, 0, &p, &info));
        int bad = 0, kept = 0;
        for (int64_t j = 0; p && j < bm_tensor_numel(&ref); j++) {
          float a = bm_load_f32(p, c->t, j), b = bm_load_f32(ref.data, c->t, j);
          bad += !(a == b || (isnan(a) && isnan(b)));
          kept += b != c->fill;
        }
        CHECK_MSG(bad == 0, "%s: %d mismatches", what, bad);
        CHECK(kept >= 14 * (c->k < c->n ? c->k : c->n) - 14); /* (fill itself may be kept) */
      }
      bm_session_destroy(s);
      bm_package_close(pkg);
      bm_tensor_free(&ref);
      bm_module_destroy(m);
    }
    bm_tensor_free(&x);
  }
  /* reference semantics on one row: ties keep the lower index */
  bm_module *m = bm_module_create("topk1");
  bm_graph *g = bm_graph_create(m, "main");
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 1, (int64_t[]){6});
  bm_output_add(g, "y", bm_topk_mask(g, x, 3, -INFINITY));
  float xv[6] = {1, 3, 2, 3, NAN, 2};
  bm_tensor in = {BM_DTYPE_F32, 1, {6}, xv}, out;
  CHECK_OK(bm_interp_run(g, &in, &out));
  const float *y = out.data;
  CHECK(y && y[0] == -INFINITY && y[1] == 3 && y[2] == 2 && y[3] == 3 && y[4] == -INFINITY && y[5] == -INFINITY);
  bm_tensor_free(&out);
  CHECK(bm_topk_mask(g, x, 0, 0) == NULL);
  bm_module_destroy(m);
}

/* ------------------------------------------------------------------ moe */

typedef struct moe_ctx {
  int64_t tmax, d, e, f;
  bm_dtype wt, xt;
  bm_op act;
  /* token dims: 0 (t); 1 (b<=3, s<=tmax); 2 (2, s<=tmax); 3 (b<=tmax, 1) */
  int lead;
} moe_ctx;

static bm_graph *build_moe(bm_module *m, void *vctx) {
  moe_ctx *c = vctx;
  bm_graph *g = bm_graph_create(m, "main");
  int t = bm_sym_declare(g, "t", c->tmax);
  int64_t lead[2] = {BM_SYM(t), 0};
  int nl = 1;
  if (c->lead == 1) lead[0] = BM_SYM(bm_sym_declare(g, "b", 3)), lead[1] = BM_SYM(t), nl = 2;
  if (c->lead == 2) lead[0] = 2, lead[1] = BM_SYM(t), nl = 2;
  if (c->lead == 3) lead[1] = 1, nl = 2;
  int64_t xs[3] = {lead[0], lead[1], lead[1]}, gs[3] = {lead[0], lead[1], lead[1]};
  xs[nl] = c->d;
  gs[nl] = c->e;
  bm_node *x = bm_input(g, "x", c->xt, nl + 1, xs);
  bm_node *gates = bm_input(g, "gates", BM_DTYPE_F32, nl + 1, gs);
  /* w_up from E separate (F, D) parts, as HF checkpoints store them */
  bm_node *parts[16];
  for (int i = 0; i < c->e && i < 16; i++) {
    char name[32];
    snprintf(name, sizeof name, "up.%d", i);
    parts[i] = weight_f32(g, name, c->wt, 2, (int64_t[]){c->f, c->d}, 300 + i, 0.3f);
    for (int64_t j = 0; i == c->e - 1 && parts[i] && j < c->f * c->d; j++)
      bm_store_f32((void *)parts[i]->data, c->wt, j, NAN);
  }
  bm_node *wu = bm_weight_stack(g, "w_up", (int)c->e, parts);
  bm_node *wg = weight_f32(g, "w_gate", c->wt, 3, (int64_t[]){c->e, c->f, c->d}, 200, 0.3f);
  bm_node *wd = weight_f32(g, "w_down", c->wt, 3, (int64_t[]){c->e, c->d, c->f}, 201, 0.3f);
  /* the last expert is never routed to and has NaN weights: computing it at
   * all would poison the result */
  bm_node *ws[2] = {wg, wd};
  for (int k = 0; k < 2; k++)
    for (int64_t i = 0; ws[k] && i < c->f * c->d; i++)
      bm_store_f32((void *)ws[k]->data, c->wt, (c->e - 1) * c->f * c->d + i, NAN);
  bm_output_add(g, "y", bm_moe(g, x, gates, wg, wu, wd, c->act));
  return g;
}

static void test_moe(void) {
  moe_ctx cases[] = {{9, 24, 4, 20, BM_DTYPE_F32, BM_DTYPE_F32, BM_OP_SILU},
                     {5, 64, 8, 40, BM_DTYPE_BF16, BM_DTYPE_F32, BM_OP_GELU_TANH},
                     {3, 19, 3, 33, BM_DTYPE_F16, BM_DTYPE_F16, BM_OP_SILU}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    moe_ctx *c = &cases[i];
    for (int64_t T = 1; T <= c->tmax; T += c->tmax - 1) { /* decode (1 token) and a batch */
      bm_tensor in[2] = {tensor_f32(c->xt, 2, (int64_t[]){T, c->d}, 7 + i),
                         tensor_f32(BM_DTYPE_F32, 2, (int64_t[]){T, c->e}, 8 + i)};
      /* two experts per token (the others exactly 0), one token with none */
      float *gv = in[1].data;
      for (int64_t t = 0; t < T; t++)
        for (int64_t e = 0; e < c->e; e++) {
          bool on = (e == t % (c->e - 1) || e == (t * 3 + 1) % (c->e - 1)) && !(T > 1 && t == T - 1);
          gv[t * c->e + e] = on ? 0.25f + 0.5f * fabsf(gv[t * c->e + e]) : 0.f;
        }
      char what[64];
      snprintf(what, sizeof what, "moe %zu T=%lld", i, (long long)T);
      check_ops(what, build_moe, c, in, c->xt == BM_DTYPE_F16 ? 5e-3 : 1e-5, true);
      bm_tensor_free(&in[0]);
      bm_tensor_free(&in[1]);
    }
  }
  /* token dims (batch, seq): both symbolic, one static and one symbolic, (batch, 1) */
  moe_ctx lc[] = {{6, 24, 4, 20, BM_DTYPE_F32, BM_DTYPE_F32, BM_OP_SILU, 1},
                  {7, 16, 5, 36, BM_DTYPE_BF16, BM_DTYPE_F32, BM_OP_GELU_TANH, 2},
                  {4, 40, 3, 17, BM_DTYPE_F32, BM_DTYPE_F32, BM_OP_SILU, 3}};
  int64_t dims[][2] = {{2, 5}, {1, 1}, {3, 6}, {2, 7}, {2, 1}, {4, 1}, {1, 1}};
  int which[] = {0, 0, 0, 1, 1, 2, 2};
  for (size_t k = 0; k < sizeof which / sizeof which[0]; k++) {
    moe_ctx *c = &lc[which[k]];
    int64_t B = dims[k][0], S = dims[k][1], T = B * S;
    bm_tensor in[2] = {tensor_f32(c->xt, 3, (int64_t[]){B, S, c->d}, 17 + k),
                       tensor_f32(BM_DTYPE_F32, 3, (int64_t[]){B, S, c->e}, 18 + k)};
    float *gv = in[1].data;
    for (int64_t t = 0; t < T; t++)
      for (int64_t e = 0; e < c->e; e++) {
        bool on = (e == t % (c->e - 1) || e == (t * 3 + 1) % (c->e - 1)) && !(T > 1 && t == T - 2);
        gv[t * c->e + e] = on ? 0.25f + 0.5f * fabsf(gv[t * c->e + e]) : 0.f;
      }
    char what[64];
    snprintf(what, sizeof what, "moe lead %d (%lld, %lld)", c->lead, (long long)B, (long long)S);
    check_ops(what, build_moe, c, in, 1e-5, true);
    bm_tensor_free(&in[0]);
    bm_tensor_free(&in[1]);
  }
  /* leading dims must agree */
  {
    bm_module *m = bm_module_create("moe_bad");
    bm_graph *g = bm_graph_create(m, "main");
    int b = bm_sym_declare(g, "b", 3), sq = bm_sym_declare(g, "s", 4);
    bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 3, (int64_t[]){BM_SYM(b), BM_SYM(sq), 8});
    bm_node *gates = bm_input(g, "gates", BM_DTYPE_F32, 3, (int64_t[]){BM_SYM(b), 4, 2});
    bm_node *w = bm_weight(g, "w", BM_DTYPE_F32, 3, (int64_t[]){2, 8, 8}, NULL, 0);
    CHECK(bm_moe(g, x, gates, w, w, w, BM_OP_SILU) == NULL);
    CHECK(bm_graph_status(g) && strstr(bm_status_message(bm_graph_status(g)), "same leading dims"));
    bm_module_destroy(m);
  }
  /* the pass lowers MOE into MOE_UP + MOE_DOWN */
  bm_module *m = bm_module_create("moe");
  bm_graph *g = build_moe(m, &cases[0]);
  bm_pass_options po = {.verify_each = true};
  CHECK_OK(bm_pipeline_run(g, &po));
  int up = 0, down = 0, moe = 0;
  for (int i = 0; i < g->nnodes; i++) {
    up += g->nodes[i]->op == BM_OP_MOE_UP;
    down += g->nodes[i]->op == BM_OP_MOE_DOWN;
    moe += g->nodes[i]->op == BM_OP_MOE;
  }
  CHECK(up == 1 && down == 1 && moe == 0);
  bm_module_destroy(m);
}

/* ------------------------------------------------------------------ take_row */

typedef struct take_ctx {
  bm_dtype t, it;
} take_ctx;

/* x (b<=3, s<=6, 2, 5), idx (b) -> (b, 1, 2, 5) */
static bm_graph *build_take(bm_module *m, void *vctx) {
  take_ctx *c = vctx;
  bm_graph *g = bm_graph_create(m, "main");
  int b = bm_sym_declare(g, "b", 3), sq = bm_sym_declare(g, "s", 6);
  bm_node *x = bm_input(g, "x", c->t, 4, (int64_t[]){BM_SYM(b), BM_SYM(sq), 2, 5});
  bm_node *idx = bm_input(g, "idx", c->it, 1, (int64_t[]){BM_SYM(b)});
  bm_output_add(g, "y", bm_take_row(g, x, idx));
  return g;
}

static void test_take_row(void) {
  take_ctx cases[] = {{BM_DTYPE_F32, BM_DTYPE_I32}, {BM_DTYPE_F16, BM_DTYPE_I64}};
  int64_t dims[][2] = {{3, 6}, {2, 1}, {1, 4}};
  int64_t idx[][3] = {{5, 0, 2}, {0, -3, 0}, {99, 0, 0}}; /* out of range: clamped */
  for (size_t i = 0; i < 2; i++)
    for (size_t k = 0; k < 3; k++) {
      int64_t B = dims[k][0], S = dims[k][1];
      bm_tensor in[2] = {tensor_f32(cases[i].t, 4, (int64_t[]){B, S, 2, 5}, 40 + k),
                         tensor_i(cases[i].it, (int)B, idx[k])};
      char what[64];
      snprintf(what, sizeof what, "take_row %zu (%lld, %lld)", i, (long long)B, (long long)S);
      check_ops(what, build_take, &cases[i], in, 0, true);
      /* the reference itself: row clamp(idx[b]) of each batch entry */
      bm_module *m = bm_module_create("take");
      bm_graph *g = build_take(m, &cases[i]);
      bm_tensor ref;
      CHECK_OK(bm_interp_run(g, in, &ref));
      CHECK(ref.ndim == 4 && ref.shape[0] == B && ref.shape[1] == 1 && ref.shape[2] == 2 && ref.shape[3] == 5);
      for (int64_t b = 0; b < B; b++) {
        int64_t r = idx[k][b] < 0 ? 0 : idx[k][b] >= S ? S - 1 : idx[k][b];
        for (int64_t j = 0; j < 10; j++)
          CHECK(bm_load_f32(ref.data, cases[i].t, b * 10 + j) == bm_load_f32(in[0].data, cases[i].t, (b * S + r) * 10 + j));
      }
      bm_tensor_free(&ref);
      bm_module_destroy(m);
      bm_tensor_free(&in[0]);
      bm_tensor_free(&in[1]);
    }
  /* idx must be (B) of an integer type */
  bm_module *m = bm_module_create("take_bad");
  bm_graph *g = bm_graph_create(m, "main");
  int b = bm_sym_declare(g, "b", 3);
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 3, (int64_t[]){BM_SYM(b), 4, 8});
  bm_node *i2 = bm_input(g, "i2", BM_DTYPE_I32, 1, (int64_t[]){2});
  CHECK(bm_take_row(g, x, i2) == NULL);
  CHECK(bm_graph_status(g) && strstr(bm_status_message(bm_graph_status(g)), "(B, S, ...) and (B)"));
  bm_module_destroy(m);
  m = bm_module_create("take_bad2");
  g = bm_graph_create(m, "main");
  x = bm_input(g, "x", BM_DTYPE_F32, 3, (int64_t[]){2, 4, 8});
  bm_node *fi = bm_input(g, "fi", BM_DTYPE_F32, 1, (int64_t[]){2});
  CHECK(bm_take_row(g, x, fi) == NULL);
  CHECK(bm_graph_status(g) && strstr(bm_status_message(bm_graph_status(g)), "i32 or i64"));
  bm_module_destroy(m);
}

static void test_weight_stack(void) {
  bm_module *m = bm_module_create("stack");
  bm_graph *g = bm_graph_create(m, "main");
  float a[6] = {1, 2, 3, 4, 5, 6}, b[6] = {7, 8, 9, 10, 11, 12};
  bm_node *wa = bm_weight(g, "a", BM_DTYPE_F32, 2, (int64_t[]){2, 3}, a, sizeof a);
  bm_node *wb = bm_weight(g, "b", BM_DTYPE_F32, 2, (int64_t[]){2, 3}, b, sizeof b);
  bm_node *s = bm_weight_stack(g, "ab", 2, (bm_node *[]){wa, wb});
  CHECK(s && s->op == BM_OP_WEIGHT && s->ndim == 3 && s->shape[0].add == 2 && s->shape[1].add == 2 &&
        s->shape[2].add == 3 && s->data_size == sizeof a * 2);
  CHECK(s && memcmp(s->data, a, sizeof a) == 0 && memcmp((const char *)s->data + sizeof a, b, sizeof b) == 0);
  bm_node *un = bm_weight(g, "u", BM_DTYPE_F32, 2, (int64_t[]){2, 3}, NULL, 0);
  CHECK(bm_weight_stack(g, "bad", 2, (bm_node *[]){wa, un}) == NULL);
  CHECK(strstr(bm_status_message(bm_graph_status(g)), "'u' is not bound"));
  bm_graph *g2 = bm_graph_create(m, "g2");
  bm_node *w1 = bm_weight(g2, "a", BM_DTYPE_F32, 2, (int64_t[]){2, 3}, a, sizeof a);
  bm_node *w2 = bm_weight(g2, "c", BM_DTYPE_F32, 2, (int64_t[]){3, 2}, b, sizeof b);
  CHECK(bm_weight_stack(g2, "bad", 2, (bm_node *[]){w1, w2}) == NULL);
  CHECK(strstr(bm_status_message(bm_graph_status(g2)), "part 1 'c'"));
  bm_module_destroy(m);
}

/* ------------------------------------------------------------------ slices */

static bm_graph *build_last(bm_module *m, void *vctx) {
  bm_graph *g = bm_graph_create(m, "main");
  int s = bm_sym_declare(g, "seq", 12);
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 3, (int64_t[]){2, BM_SYM(s), 8});
  bm_node *last = bm_slice(g, x, 1, -1, INT64_MAX, 1);
  bm_node *mid = bm_slice(g, x, -2, -3, -1, 1);
  CHECK(last && last->shape[1].add == 1 && bm_dim_is_static(last->shape[1]));
  CHECK(mid && mid->shape[1].add == 2 && bm_dim_is_static(mid->shape[1]));
  bm_output_add(g, "last", last);
  bm_output_add(g, "mid", mid);
  return g;
}

static void test_slice_negative(void) {
  for (int64_t seq = 3; seq <= 12; seq += 9) {
    bm_tensor x = tensor_f32(BM_DTYPE_F32, 3, (int64_t[]){2, seq, 8}, 9);
    check_ops("slice [-1:]", build_last, NULL, &x, 0.0, false);
    bm_tensor_free(&x);
  }
  bm_module *m = bm_module_create("slice");
  bm_graph *g = bm_graph_create(m, "main");
  int s = bm_sym_declare(g, "seq", 12);
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 2, (int64_t[]){BM_SYM(s), 8});
  CHECK(bm_slice(g, x, 0, -2, 1, 1) == NULL);
  CHECK(strstr(bm_status_message(bm_graph_status(g)), "negative begin"));
  bm_module_destroy(m);
}

/* ------------------------------------------------------------------ a tiny cached attention stack */

enum { DM = 16, NH = 2, DH = 8, LMAX = 24, NLAYER = 2 };

/* One function of the stack: x (1, S, DM) at positions pos.. (pos (1)),
 * kv_len (1) = pos + S; per layer: q, k, v projections, the cache update,
 * causal attention over the cache, the output projection and a residual. */
static bm_graph *build_stack_fn(bm_module *m, const char *name, int64_t s_static) {
  bm_graph *g = bm_graph_create(m, name);
  int64_t S = s_static > 0 ? s_static : BM_SYM(bm_sym_declare(g, "seq", LMAX));
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 3, (int64_t[]){1, S, DM});
  bm_node *pos = bm_input(g, "pos", BM_DTYPE_I32, 1, (int64_t[]){1});
  bm_node *len = bm_input(g, "kv_len", BM_DTYPE_I64, 1, (int64_t[]){1});
  for (int l = 0; l < NLAYER; l++) {
    char nm[64];
    bm_node *w[4];
    for (int k = 0; k < 4; k++) {
      snprintf(nm, sizeof nm, "l%d.w%c", l, "qkvo"[k]);
      w[k] = weight_f32(g, nm, BM_DTYPE_F32, 2, (int64_t[]){DM, DM}, 1000 + 10 * l + k, 0.4f);
    }
    bm_node *h[3];
    for (int k = 0; k < 3; k++) {
      bm_node *p = bm_reshape(g, bm_linear(g, x, w[k], NULL), 4, (int64_t[]){1, S, NH, DH});
      h[k] = bm_permute(g, p, (int[]){0, 2, 1, 3}); /* (1, NH, S, DH) */
    }
    snprintf(nm, sizeof nm, "l%d.k", l);
    bm_node *kc = bm_kv_write(g, bm_state(g, nm, BM_DTYPE_F32, 4, (int64_t[]){1, NH, LMAX, DH}), h[1], pos);
    snprintf(nm, sizeof nm, "l%d.v", l);
    bm_node *vc = bm_kv_write(g, bm_state(g, nm, BM_DTYPE_F32, 4, (int64_t[]){1, NH, LMAX, DH}), h[2], pos);
    bm_node *a = bm_attention_kv(g, h[0], kc, vc, NULL, len, 0, true, 0, 0); /* (1, NH, S, DH) */
    a = bm_reshape(g, bm_permute(g, a, (int[]){0, 2, 1, 3}), 3, (int64_t[]){1, S, DM});
    x = bm_add(g, x, bm_linear(g, a, w[3], NULL));
  }
  bm_output_add(g, "y", x);
  return g;
}

static const char *stack_package(void) {
  static char path[512];
  snprintf(path, sizeof path, "%s/stack.bmpk", bm_test_tmpdir());
  bm_module *m = bm_module_create("stack");
  build_stack_fn(m, "prefill", 0);
  build_stack_fn(m, "decode", 1);
  bm_compile_options co;
  bm_compile_options_init(&co);
  co.passes.verify_each = true;
  CHECK_OK(bm_compile_module(m, &co, path));
  bm_module_destroy(m);
  return path;
}

/* Runs function f of the session on x (1, S, DM) at position pos; copies y. */
static void run_step(bm_session *s, int f, const float *x, int64_t S, int64_t pos, float *y) {
  int32_t p = (int32_t)pos;
  int64_t len = pos + S;
  CHECK_OK(bm_session_set_input(s, f, 0, x, BM_DTYPE_F32, 3, (int64_t[]){1, S, DM}));
  CHECK_OK(bm_session_set_input(s, f, 1, &p, BM_DTYPE_I32, 1, (int64_t[]){1}));
  CHECK_OK(bm_session_set_input(s, f, 2, &len, BM_DTYPE_I64, 1, (int64_t[]){1}));
  CHECK_OK(bm_session_run(s, f));
  const void *out = NULL;
  bm_tensor_info info;
  CHECK_OK(bm_session_get_output(s, f, 0, &out, &info));
  if (out) memcpy(y, out, sizeof(float) * (size_t)(S * DM));
}

static void test_incremental_decode(void) {
  const char *path = stack_package();
  bm_package *pkg = NULL;
  bm_session *s = NULL;
  CHECK_OK(bm_package_open(path, NULL, &pkg));
  if (!pkg) return;
  CHECK_OK(bm_session_create(pkg, &(bm_session_options){.threads = 2}, &s));
  int fp = -1, fd = -1;
  CHECK_OK(bm_package_find_function(pkg, "prefill", &fp));
  CHECK_OK(bm_package_find_function(pkg, "decode", &fd));
  if (!s || fp < 0 || fd < 0) {
    bm_session_destroy(s);
    bm_package_close(pkg);
    return;
  }
  enum { S = 11 };
  float *x = rand_f32(S * DM, 77, -1.f, 1.f), full[S * DM], inc[S * DM];
  /* one pass over all S tokens */
  run_step(s, fp, x, S, 0, full);
  /* the interpreter agrees (fresh states) */
  bm_module *m = bm_module_create("stack_ref");
  bm_graph *gp = build_stack_fn(m, "prefill", 0), *gd = build_stack_fn(m, "decode", 1);
  bm_interp_states *ist = NULL;
  CHECK_OK(bm_interp_states_create(&ist));
  int32_t p0 = 0;
  int64_t l0 = S;
  bm_tensor in[3] = {{BM_DTYPE_F32, 3, {1, S, DM}, x}, {BM_DTYPE_I32, 1, {1}, &p0}, {BM_DTYPE_I64, 1, {1}, &l0}};
  bm_tensor ref;
  CHECK_OK(bm_interp_run_states(gp, in, &ref, ist));
  if (ref.data) CHECK(bm_test_rel_err(full, ref.data, S * DM) < 1e-5);
  bm_tensor_free(&ref);

  /* reset, then S-3 tokens of prefill and 3 decode steps through the cache */
  bm_session_reset_state(s);
  void *kd = NULL;
  bm_tensor_info ki;
  CHECK_OK(bm_session_state(s, "l1.v", &kd, &ki));
  CHECK(ki.ndim == 4 && ki.shape[2] == LMAX && ki.dtype == BM_DTYPE_F32);
  int nz = 0;
  for (int i = 0; kd && i < NH * LMAX * DH; i++) nz += ((float *)kd)[i] != 0.f;
  CHECK(nz == 0);
  bm_interp_states_reset(ist);
  run_step(s, fp, x, S - 3, 0, inc);
  for (int i = 0; i < 3; i++) {
    int64_t t = S - 3 + i;
    run_step(s, fd, x + t * DM, 1, t, inc + t * DM);
  }
  double err = bm_test_rel_err(inc, full, S * DM);
  CHECK_MSG(err < 1e-5, "prefill + decode vs one pass: rel err %g", err);
  /* the interpreter's states do the same across its two graphs */
  float iref[S * DM];
  in[0].shape[1] = S - 3;
  l0 = S - 3;
  CHECK_OK(bm_interp_run_states(gp, in, &ref, ist));
  if (ref.data) memcpy(iref, ref.data, sizeof(float) * (S - 3) * DM);
  bm_tensor_free(&ref);
  for (int i = 0; i < 3; i++) {
    int32_t pi = S - 3 + i;
    int64_t li = pi + 1;
    bm_tensor din[3] = {{BM_DTYPE_F32, 3, {1, 1, DM}, x + pi * DM}, {BM_DTYPE_I32, 1, {1}, &pi}, {BM_DTYPE_I64, 1, {1}, &li}};
    CHECK_OK(bm_interp_run_states(gd, din, &ref, ist));
    if (ref.data) memcpy(iref + pi * DM, ref.data, sizeof(float) * DM);
    bm_tensor_free(&ref);
  }
  CHECK(bm_test_rel_err(iref, full, S * DM) < 1e-5);
  const bm_tensor *ivs = bm_interp_states_find(ist, "l1.v");
  CHECK(ivs && kd && bm_test_rel_err(kd, ivs->data, NH * LMAX * DH) < 1e-5);

  /* decode repeated on the same inputs (set once) gives the same answer */
  float again[DM];
  CHECK_OK(bm_session_run(s, fd));
  const void *out;
  bm_tensor_info oi;
  CHECK_OK(bm_session_get_output(s, fd, 0, &out, &oi));
  if (out) memcpy(again, out, sizeof again);
  CHECK(bm_test_rel_err(again, inc + (S - 1) * DM, DM) < 1e-5);

  /* a write at pos >= L is dropped: the caches do not change */
  float *snap = malloc(sizeof(float) * NH * LMAX * DH);
  if (kd) memcpy(snap, kd, sizeof(float) * NH * LMAX * DH);
  float y1[DM];
  run_step(s, fd, x, 1, LMAX, y1);
  CHECK(kd && memcmp(snap, kd, sizeof(float) * NH * LMAX * DH) == 0);
  for (int i = 0; i < DM; i++) CHECK(isfinite(y1[i]));
  CHECK_ERR(bm_session_state(s, "nope", &kd, NULL), BM_ERR_NOT_FOUND, "no state 'nope'");
  free(snap);
  free(x);
  bm_interp_states_destroy(ist);
  bm_module_destroy(m);
  bm_session_destroy(s);
  bm_package_close(pkg);
}

/* ------------------------------------------------------------------ package states */

static uint8_t *read_all(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  *n = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *b = malloc(*n);
  if (b && fread(b, 1, *n, f) != *n) {
    free(b);
    b = NULL;
  }
  fclose(f);
  return b;
}

/* Replaces the first `from` in the manifest by `to` (padded with spaces) and
 * re-signs the header; writes the result to path. */
static bool patched(const uint8_t *src, size_t n, const char *from, const char *to, const char *path) {
  uint8_t *b = malloc(n);
  memcpy(b, src, n);
  uint64_t mo = bm_rd_u64(b + BM_PKG_OFF_MANIFEST_OFFSET), ms = bm_rd_u64(b + BM_PKG_OFF_MANIFEST_SIZE);
  char *m = (char *)b + mo, saved = m[ms];
  m[ms] = 0;
  char *p = strstr(m, from);
  m[ms] = saved;
  bool ok = p && strlen(to) <= strlen(from);
  if (ok) {
    memset(p, ' ', strlen(from));
    memcpy(p, to, strlen(to));
    bm_wr_u64(b + BM_PKG_OFF_MANIFEST_HASH, XXH3_64bits(b + mo, ms));
    bm_wr_u64(b + BM_PKG_OFF_HEADER_HASH, XXH3_64bits(b, BM_PKG_OFF_HEADER_HASH));
    FILE *f = fopen(path, "wb");
    ok = f && fwrite(b, 1, n, f) == n;
    if (f) fclose(f);
  }
  free(b);
  CHECK_MSG(ok, "could not patch '%s'", from);
  return ok;
}

static void test_package_states(void) {
  const char *path = stack_package();
  size_t n = 0;
  uint8_t *b = read_all(path, &n);
  if (!b) {
    CHECK(b != NULL);
    return;
  }
  bm_package *pkg = NULL;
  CHECK_OK(bm_package_open(path, NULL, &pkg));
  const char *man = pkg ? bm_package_manifest_json(pkg) : "";
  /* four states shared by both functions: l0.k, l0.v, l1.k, l1.v */
  CHECK(strstr(man, "\"states\":") && strstr(man, "\"l1.v\"") && strstr(man, "\"state\":\t3"));
  CHECK(pkg && pkg->nstates == 4 && pkg->states[0].nbytes == NH * LMAX * DH * 4);
  bm_package_close(pkg);

  char bad[512];
  snprintf(bad, sizeof bad, "%s/stack_bad.bmpk", bm_test_tmpdir());
  struct {
    const char *from, *to, *err;
  } cases[] = {
      {"\"nbytes\":\t1536", "\"nbytes\":\t1535", "does not match its f32 shape"},
      {"\"state\":\t3", "\"state\":\t9", "states[]"},
      {"\"name\":\t\"l0.v\"", "\"name\":\t\"l0.k\"", "two states are named 'l0.k'"},
      {"\"dtype\":\t\"f32\",\n\t\t\t\"shape\":\t[1, 2, 24, 8]", "\"dtype\":\t\"f99\"", "unknown dtype 'f99'"},
      {"\"states\":", "\"stutes\":", "the package has no states"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    if (!patched(b, n, cases[i].from, cases[i].to, bad)) continue;
    bm_package *p = NULL;
    bm_status s = bm_package_open(bad, NULL, &p);
    CHECK_MSG(s && bm_status_code(s) == BM_ERR_CORRUPT, "case %zu: %s", i, bm_status_message(s));
    if (s && !strstr(bm_status_message(s), cases[i].err) &&
        !(i == 1 && strstr(bm_status_message(s), ".state: expected an integer")))
      CHECK_MSG(false, "case %zu: '%s' lacks '%s'", i, bm_status_message(s), cases[i].err);
    bm_status_free(s);
    bm_package_close(p);
  }
  free(b);

  /* the same state name with another shape in two functions: a compile error */
  bm_module *m = bm_module_create("clash");
  bm_graph *g1 = bm_graph_create(m, "a"), *g2 = bm_graph_create(m, "b");
  bm_node *r = bm_input(g1, "r", BM_DTYPE_F32, 4, (int64_t[]){1, 1, 1, 2});
  bm_node *p = bm_input(g1, "p", BM_DTYPE_I32, 1, (int64_t[]){1});
  bm_output_add(g1, "c", bm_kv_write(g1, bm_state(g1, "cache", BM_DTYPE_F32, 4, (int64_t[]){1, 1, 4, 2}), r, p));
  r = bm_input(g2, "r", BM_DTYPE_F32, 4, (int64_t[]){1, 1, 1, 2});
  p = bm_input(g2, "p", BM_DTYPE_I32, 1, (int64_t[]){1});
  bm_output_add(g2, "c", bm_kv_write(g2, bm_state(g2, "cache", BM_DTYPE_F32, 4, (int64_t[]){1, 1, 8, 2}), r, p));
  bm_compile_options co;
  bm_compile_options_init(&co);
  snprintf(bad, sizeof bad, "%s/clash.bmpk", bm_test_tmpdir());
  CHECK_ERR(bm_compile_module(m, &co, bad), BM_ERR_INVALID_ARGUMENT, "state 'cache' is f32 (1, 1, 4, 2) in function 'a'");
  bm_module_destroy(m);
}

/* Inputs set once survive any number of runs: their slots are never reused. */
static void test_inputs_survive(void) {
  bm_module *m = bm_module_create("inputs");
  bm_graph *g = bm_graph_create(m, "main");
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 1, (int64_t[]){256});
  bm_node *t = x;
  for (int i = 0; i < 6; i++) t = bm_unary(g, i % 2 ? BM_OP_TANH : BM_OP_EXP, t);
  bm_output_add(g, "y", t);
  char path[512];
  snprintf(path, sizeof path, "%s/inputs.bmpk", bm_test_tmpdir());
  bm_compile_options co;
  bm_compile_options_init(&co);
  co.passes.no_fuse = true; /* a chain of kernels that could reuse x's slot */
  CHECK_OK(bm_compile_module(m, &co, path));
  for (int i = 0; i < g->nnodes; i++) {
    bm_node *n = g->nodes[i];
    if (n == x || n->storage != BM_STORAGE_ARENA) continue;
    CHECK(n->offset >= x->offset + x->nbytes || x->offset >= n->offset + n->nbytes);
  }
  bm_package *pkg = NULL;
  bm_session *s = NULL;
  CHECK_OK(bm_package_open(path, NULL, &pkg));
  if (pkg) CHECK_OK(bm_session_create(pkg, NULL, &s));
  float *xv = rand_f32(256, 5, -1, 1), first[256];
  if (s) {
    CHECK_OK(bm_session_set_input(s, 0, 0, xv, BM_DTYPE_F32, 1, (int64_t[]){256}));
    for (int run = 0; run < 3; run++) {
      CHECK_OK(bm_session_run(s, 0));
      const void *p;
      bm_tensor_info info;
      CHECK_OK(bm_session_get_output(s, 0, 0, &p, &info));
      if (run == 0 && p) memcpy(first, p, sizeof first);
      if (p) CHECK(memcmp(first, p, sizeof first) == 0);
    }
  }
  free(xv);
  bm_session_destroy(s);
  bm_package_close(pkg);
  bm_module_destroy(m);
}

int main(void) {
  RUN(test_kv_write);
  RUN(test_state_order);
  RUN(test_attention_kv);
  RUN(test_topk_mask);
  RUN(test_moe);
  RUN(test_take_row);
  RUN(test_weight_stack);
  RUN(test_slice_negative);
  RUN(test_incremental_decode);
  RUN(test_package_states);
  RUN(test_inputs_survive);
  for (int i = 0; i < nkeep; i++) free(keep[i]);
  return bm_test_finish();
}
