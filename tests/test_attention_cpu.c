/* test_attention_cpu.c - the CPU flash-attention kernel (codegen/llvm/attention.c)
 * against the reference interpreter: head sizes, decode, causal offsets, GQA,
 * window, softcap, masks (with fully masked rows), f16, symbolic lengths,
 * epilogues, 1 and 2 threads, and fusion of the unfused pattern. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opcheck.h"
#include "testutil.h"

/* ------------------------------------------------------------------ helpers */

typedef enum mask_kind {
  MASK_NONE = 0,
  MASK_B1SS,      /* (B, 1, Sq, Sk) */
  MASK_111S,      /* (1, 1, 1, Sk) */
  MASK_SS_DEAD,   /* (1, 1, Sq, Sk) with query row 1 fully masked */
  MASK_BHS1,      /* (B, Hq, Sq, 1): one value per query row */
} mask_kind;

typedef struct attn_case {
  const char *name;
  int64_t b, hq, hkv, sq, sk, d, dv;
  bool causal;
  int window;
  float softcap, scale;
  mask_kind mask;
  bm_dtype dtype;   /* of q, k, v (and the output) */
  bool sym;         /* Sq, Sk symbolic, declared larger than the bound values */
  bool sym_batch;   /* B symbolic as well */
  bool residual;    /* + residual, to be fused as an epilogue */
  int threads;      /* 0 = 1 */
} attn_case;

static int count_op(const bm_graph *g, bm_op op) {
  int c = 0;
  for (int i = 0; i < g->nnodes; i++) c += g->nodes[i]->op == op;
  return c;
}

static bm_node *find_op(const bm_graph *g, bm_op op) {
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->op == op) return g->nodes[i];
  return NULL;
}

/* Random inputs for g with symbols bound to syms: uniform(-1, 1) (q and k
 * scaled by 2 so that softmax is far from uniform); an input named "mask"
 * gets -inf / -1e4 / small values, and with dead_row its row 1 all -inf. */
static bool make_inputs(const bm_graph *g, const int64_t *syms, uint64_t seed, bool dead_row,
                        bm_tensor *in) {
  for (int i = 0; i < g->ninputs; i++) {
    const bm_node *x = g->inputs[i];
    int64_t shape[BM_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) shape[d] = bm_dim_eval(x->shape[d], syms);
    bm_status s = bm_tensor_alloc(&in[i], x->dtype, x->ndim, shape);
    if (s) {
      CHECK_OK(s);
      return false;
    }
    int64_t n = bm_tensor_numel(&in[i]);
    bool is_mask = strcmp(x->name, "mask") == 0;
    bool is_qk = strcmp(x->name, "q") == 0 || strcmp(x->name, "k") == 0;
    uint64_t st = seed * 1000003u + (uint64_t)i * 7919u;
    for (int64_t e = 0; e < n; e++) {
      float u = bm_test_rand_uniform(&st, -1.0f, 1.0f);
      if (is_mask) u = u < -0.7f ? -INFINITY : u < -0.5f ? -1e4f : u;
      if (is_qk) u *= 2.0f;
      bm_store_f32(in[i].data, x->dtype, e, u);
    }
    if (is_mask && dead_row) {
      int64_t sk = shape[x->ndim - 1];
      for (int64_t j = 0; j < sk; j++) bm_store_f32(in[i].data, x->dtype, sk + j, -INFINITY);
    }
  }
  return true;
}

/* Compiles g (fusion on), runs it with `threads` and checks it against the
 * interpreter within tol. */
static void check_graph(bm_graph *g, const int64_t *syms, bool dead_row, int threads, double tol,
                        const char *name) {
  bm_tensor in[8];
  memset(in, 0, sizeof in);
  if (make_inputs(g, syms, 42, dead_row, in)) {
    bm_opcheck_options o = {.fuse = true, .threads = threads ? threads : 1};
    double err = INFINITY;
    bm_status s = bm_opcheck(g, in, &o, &err);
    CHECK_MSG(!s, "%s: %s", name, bm_status_message(s));
    bm_status_free(s);
    CHECK_MSG(err <= tol, "%s: relative error %.3g > %.3g", name, err, tol);
  }
  for (int i = 0; i < g->ninputs && i < 8; i++) bm_tensor_free(&in[i]);
}

static void run_case(const attn_case *c) {
  bm_module *m = bm_module_create("attn");
  bm_graph *g = bm_graph_create(m, "main");
  int64_t sq = c->sq, sk = c->sk, bt = c->b, syms[BM_MAX_SYMS] = {0};
  if (c->sym) {
    int a = bm_sym_declare(g, "sq", c->sq + 11), b = bm_sym_declare(g, "sk", c->sk + 13);
    sq = BM_SYM(a);
    sk = BM_SYM(b);
    syms[a] = c->sq; /* bound below the declared maximum */
    syms[b] = c->sk;
  }
  if (c->sym_batch) {
    int a = bm_sym_declare(g, "batch", c->b + 2);
    bt = BM_SYM(a);
    syms[a] = c->b;
  }
  int64_t qs[4] = {bt, c->hq, sq, c->d}, ks[4] = {bt, c->hkv, sk, c->d};
  int64_t vs[4] = {bt, c->hkv, sk, c->dv}, os[4] = {bt, c->hq, sq, c->dv};
  bm_node *q = bm_input(g, "q", c->dtype, 4, qs);
  bm_node *k = bm_input(g, "k", c->dtype, 4, ks);
  bm_node *v = bm_input(g, "v", c->dtype, 4, vs);
  bm_node *mask = NULL;
  if (c->mask == MASK_B1SS) {
    int64_t ms[4] = {bt, 1, sq, sk};
    mask = bm_input(g, "mask", BM_DTYPE_F32, 4, ms);
  } else if (c->mask == MASK_BHS1) {
    int64_t ms[4] = {bt, c->hq, sq, 1};
    mask = bm_input(g, "mask", BM_DTYPE_F16, 4, ms);
  } else if (c->mask == MASK_111S) {
    int64_t ms[4] = {1, 1, 1, sk};
    mask = bm_input(g, "mask", BM_DTYPE_F32, 4, ms);
  } else if (c->mask == MASK_SS_DEAD) {
    int64_t ms[4] = {1, 1, sq, sk};
    mask = bm_input(g, "mask", BM_DTYPE_F32, 4, ms);
  }
  bm_node *out = bm_attention(g, q, k, v, mask, c->scale, c->causal, c->window, c->softcap);
  if (c->residual) out = bm_add(g, out, bm_input(g, "res", c->dtype, 4, os));
  bm_output_add(g, "out", out);
  CHECK_MSG(!bm_graph_status(g), "%s: %s", c->name, bm_status_message(bm_graph_status(g)));
  if (!bm_graph_status(g)) {
    /* f16/bf16 results are rounded by both sides: allow one ulp (2^-10, 2^-7) */
    double tol = c->dtype == BM_DTYPE_F32 ? 1e-5 : c->dtype == BM_DTYPE_F16 ? 1e-3 : 8e-3;
    check_graph(g, syms, c->mask == MASK_SS_DEAD, c->threads, tol, c->name);
    /* after compilation: one ATTENTION node, carrying the residual as its epilogue */
    CHECK_MSG(count_op(g, BM_OP_ATTENTION) == 1, "%s: %d attention nodes", c->name,
              count_op(g, BM_OP_ATTENTION));
    bm_node *a = find_op(g, BM_OP_ATTENTION);
    if (c->residual && a)
      CHECK_MSG(a->a.prog.n > 0 && count_op(g, BM_OP_ADD) == 0,
                "%s: the residual add was not fused into the attention kernel", c->name);
  }
  bm_module_destroy(m);
}

/* Compiles g and runs it once with the runtime; *out gets a copy of output 0
 * as f32 (caller frees). */
static bm_status run_compiled(bm_graph *g, const bm_tensor *in, float **out, int64_t *n) {
  *out = NULL;
  char path[512];
  snprintf(path, sizeof path, "%s/attn_direct.bmpk", bm_test_tmpdir());
  bm_compile_options co;
  bm_compile_options_init(&co);
  bm_package *pkg = NULL;
  bm_session *ses = NULL;
  int f = 0;
  int nin = g->ninputs;
  bm_status s = bm_compile_module(g->module, &co, path);
  if (!s) s = bm_package_open(path, NULL, &pkg);
  if (!s) s = bm_package_find_function(pkg, "main", &f);
  if (!s) s = bm_session_create(pkg, NULL, &ses);
  for (int i = 0; i < nin && !s; i++)
    s = bm_session_set_input(ses, f, i, in[i].data, in[i].dtype, in[i].ndim, in[i].shape);
  if (!s) s = bm_session_run(ses, f);
  const void *data;
  bm_tensor_info info;
  if (!s) s = bm_session_get_output(ses, f, 0, &data, &info);
  if (!s) {
    *n = 1;
    for (int d = 0; d < info.ndim; d++) *n *= info.shape[d];
    *out = malloc(sizeof(float) * (size_t)(*n ? *n : 1));
    if (!*out) s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "output copy");
    for (int64_t e = 0; !s && e < *n; e++) (*out)[e] = bm_load_f32(data, info.dtype, e);
  }
  bm_session_destroy(ses);
  bm_package_close(pkg);
  return s;
}

/* ------------------------------------------------------------------ tests */

#define F32 BM_DTYPE_F32
#define F16 BM_DTYPE_F16

static void test_head_dims(void) {
  /* D and Dv not multiples of the vector width, and larger than it */
  static const attn_case cs[] = {
      {"d8", 1, 2, 2, 19, 19, 8, 8, .dtype = F32},
      {"d16", 2, 2, 2, 33, 33, 16, 16, .dtype = F32},
      {"d24", 1, 2, 2, 40, 40, 24, 24, .dtype = F32},
      {"d64", 1, 2, 2, 70, 70, 64, 64, .dtype = F32},
      {"d80", 1, 2, 2, 45, 45, 80, 80, .dtype = F32},
      {"d128", 1, 2, 2, 100, 100, 128, 128, .dtype = F32},
      {"d13 dv7", 1, 2, 2, 21, 21, 13, 7, .dtype = F32},
      {"d40 dv72", 1, 2, 2, 30, 140, 40, 72, .dtype = F32},
  };
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) run_case(&cs[i]);
}

static void test_shapes(void) {
  static const attn_case cs[] = {
      {"decode sq1 sk37", 1, 4, 4, 1, 37, 64, 64, .dtype = F32},
      {"decode sq1 sk300 causal", 2, 4, 4, 1, 300, 64, 64, .causal = true, .dtype = F32},
      {"sq<sk causal offset", 1, 4, 4, 20, 90, 40, 40, .causal = true, .dtype = F32},
      {"sq>sk causal (empty rows)", 1, 2, 2, 70, 40, 32, 32, .causal = true, .dtype = F32},
      {"gqa 4:1", 1, 4, 1, 25, 25, 32, 32, .dtype = F32},
      {"gqa 8:2 causal", 2, 8, 2, 19, 19, 32, 32, .causal = true, .dtype = F32},
      {"causal", 1, 4, 4, 150, 150, 32, 32, .causal = true, .dtype = F32},
      {"causal window 8", 1, 4, 4, 200, 200, 32, 32, .causal = true, .window = 8, .dtype = F32},
      {"window 8 no causal", 1, 2, 2, 77, 77, 32, 32, .window = 8, .dtype = F32},
      {"softcap 50", 1, 2, 2, 50, 50, 32, 32, .softcap = 50, .scale = 4.0f, .dtype = F32},
      {"explicit scale", 1, 2, 2, 20, 20, 16, 16, .scale = 0.3f, .dtype = F32},
  };
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) run_case(&cs[i]);
}

static void test_masks(void) {
  static const attn_case cs[] = {
      {"mask (B,1,Sq,Sk)", 2, 2, 2, 40, 170, 32, 32, .mask = MASK_B1SS, .dtype = F32},
      {"mask (1,1,1,Sk)", 1, 2, 2, 40, 70, 32, 32, .mask = MASK_111S, .dtype = F32},
      {"mask fully masked row", 1, 2, 2, 40, 170, 32, 32, .mask = MASK_SS_DEAD, .dtype = F32},
      {"mask + causal + gqa", 2, 4, 2, 33, 50, 24, 24, .causal = true, .mask = MASK_B1SS,
       .dtype = F32},
      {"mask (B,Hq,Sq,1) f16", 2, 2, 2, 20, 30, 16, 16, .mask = MASK_BHS1, .dtype = F32},
  };
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) run_case(&cs[i]);
}

static void test_f16_bf16(void) {
  static const attn_case cs[] = {
      {"f16", 1, 2, 2, 40, 150, 32, 32, .dtype = F16},
      {"f16 causal gqa d80", 1, 4, 2, 33, 33, 80, 80, .causal = true, .dtype = F16},
      {"bf16 mask", 1, 2, 2, 20, 150, 40, 40, .mask = MASK_B1SS, .dtype = BM_DTYPE_BF16},
  };
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) run_case(&cs[i]);
}

static void test_symbolic(void) {
  static const attn_case cs[] = {
      {"sym", 1, 2, 2, 37, 150, 32, 32, .sym = true, .dtype = F32},
      {"sym causal mask", 1, 4, 2, 37, 50, 64, 64, .causal = true, .mask = MASK_B1SS, .sym = true,
       .dtype = F32},
      {"sym decode", 1, 4, 4, 1, 77, 64, 64, .causal = true, .sym = true, .dtype = F32},
      {"sym 3 queries", 1, 4, 2, 3, 40, 16, 16, .causal = true, .sym = true, .dtype = F32},
      {"sym batch and lengths", 2, 2, 2, 37, 150, 32, 32, .causal = true, .mask = MASK_B1SS,
       .sym = true, .sym_batch = true, .dtype = F32},
  };
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) run_case(&cs[i]);
}

/* A fully masked query row (by the mask, or by causality when Sq > Sk) is
 * exactly zero, and no output is NaN or inf. Checked directly because a
 * NaN must never hide behind a max-error summary. */
static void test_dead_rows_exact(void) {
  for (int variant = 0; variant < 2; variant++) {
    bm_module *m = bm_module_create("attn_dead");
    bm_graph *g = bm_graph_create(m, "main");
    const int64_t H = 2, D = 32;
    int64_t sq = variant == 0 ? 40 : 70, sk = variant == 0 ? 170 : 40;
    int64_t qs[4] = {1, H, sq, D}, ks[4] = {1, H, sk, D}, ms[4] = {1, 1, sq, sk};
    bm_node *q = bm_input(g, "q", F32, 4, qs);
    bm_node *k = bm_input(g, "k", F32, 4, ks);
    bm_node *v = bm_input(g, "v", F32, 4, ks);
    bm_node *mask = variant == 0 ? bm_input(g, "mask", F32, 4, ms) : NULL;
    bm_output_add(g, "out", bm_attention(g, q, k, v, mask, 0.0f, variant == 1, 0, 0.0f));
    bm_tensor in[4];
    memset(in, 0, sizeof in);
    float *out = NULL;
    int64_t n = 0;
    if (!bm_graph_status(g) && make_inputs(g, NULL, 7, true, in)) {
      CHECK_OK(run_compiled(g, in, &out, &n));
      int64_t bad = 0, nonzero = 0;
      for (int64_t e = 0; out && e < n; e++) {
        int64_t row = (e / D) % sq; /* (1, H, Sq, D) */
        bool dead = variant == 0 ? row == 1 : row + (sk - sq) < 0;
        bad += !isfinite(out[e]);
        nonzero += dead && out[e] != 0.0f;
      }
      CHECK_MSG(out && bad == 0, "variant %d: %lld outputs are not finite", variant, (long long)bad);
      CHECK_MSG(out && nonzero == 0, "variant %d: %lld outputs of fully masked rows are not 0",
                variant, (long long)nonzero);
    }
    CHECK(!bm_graph_status(g));
    free(out);
    for (int i = 0; i < 4; i++) bm_tensor_free(&in[i]);
    bm_module_destroy(m);
  }
}

static void test_epilogue_threads(void) {
  static const attn_case cs[] = {
      {"residual", 1, 2, 2, 40, 40, 32, 32, .residual = true, .dtype = F32},
      {"residual dv 40", 1, 2, 2, 21, 33, 40, 40, .causal = true, .residual = true, .dtype = F32},
      {"2 threads", 2, 4, 4, 70, 170, 32, 32, .causal = true, .threads = 2, .dtype = F32},
      {"2 threads decode", 1, 8, 2, 1, 300, 64, 64, .threads = 2, .dtype = F32},
  };
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) run_case(&cs[i]);
}

/* matmul -> mul scale -> add mask -> softmax -> matmul, compiled with fusion
 * on: same result as the interpreter, and one ATTENTION node afterwards. */
static void test_fuse_pattern(void) {
  for (int threads = 1; threads <= 2; threads++) {
    bm_module *m = bm_module_create("attn_unfused");
    bm_graph *g = bm_graph_create(m, "main");
    const int64_t B = 2, H = 3, S = 45, D = 24;
    int64_t qs[4] = {B, H, S, D}, ms[4] = {B, 1, S, S};
    bm_node *q = bm_input(g, "q", F32, 4, qs);
    bm_node *k = bm_input(g, "k", F32, 4, qs);
    bm_node *v = bm_input(g, "v", F32, 4, qs);
    bm_node *mask = bm_input(g, "mask", F32, 4, ms);
    bm_node *s = bm_matmul(g, q, k, false, true);          /* (B, H, S, S) */
    s = bm_mul(g, s, bm_scalar(g, 1.0f / sqrtf((float)D)));
    s = bm_add(g, s, mask);
    bm_node *p = bm_softmax(g, s, 3);
    bm_output_add(g, "out", bm_matmul(g, p, v, false, false)); /* (B, H, S, D) */
    CHECK_OK(bm_graph_status(g) ? bm_status_make(BM_ERR_INTERNAL, "%s",
                                                 bm_status_message(bm_graph_status(g)))
                                : NULL);
    if (!bm_graph_status(g)) {
      check_graph(g, NULL, false, threads, 1e-5, "unfused pattern");
      CHECK_MSG(count_op(g, BM_OP_ATTENTION) == 1 && count_op(g, BM_OP_SOFTMAX) == 0 &&
                    count_op(g, BM_OP_MATMUL) == 0,
                "the pattern did not become one attention node: %d attention, %d softmax, %d "
                "matmul",
                count_op(g, BM_OP_ATTENTION), count_op(g, BM_OP_SOFTMAX),
                count_op(g, BM_OP_MATMUL));
    }
    bm_module_destroy(m);
  }
}

int main(void) {
  RUN(test_head_dims);
  RUN(test_shapes);
  RUN(test_masks);
  RUN(test_f16_bf16);
  RUN(test_symbolic);
  RUN(test_dead_rows_exact);
  RUN(test_epilogue_threads);
  RUN(test_fuse_pattern);
  return bm_test_finish();
}
