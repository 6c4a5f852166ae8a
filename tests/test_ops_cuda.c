/* test_ops_cuda.c - every op of the CUDA backend against the reference
 * interpreter (tests/opcheck.h with target "cuda"): elementwise and fused
 * programs with broadcasting, casts, data movement, reductions, softmax,
 * norms with epilogues, rope, matmul/qmatmul/conv2d, flash attention
 * (causal, window, softcap, GQA, mask, kv_len), kv_write, topk_mask, MoE.
 *
 * Without NVRTC every case is skipped; with NVRTC but no GPU each case is
 * compiled (the generated CUDA must compile) and its run is skipped; on a
 * GPU each case runs and is compared. The test exits 0 when nothing failed.
 * BM_CUDA_ARCHS defaults to the GPU's own architecture here (one NVRTC
 * compile per case); one case checks the full default bundle and PTX. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../codegen/clike/clike.h"
#include "../runtime/internal.h"
#include "opcheck.h"
#include "testutil.h"

static int have_gpu, ran, compiled_only, skipped, exported;
static const char *export_dir; /* BM_CUDA_EXPORT: write cases for bm_cuda_check instead */
static char gpu_name[128];

typedef void (*build_fn)(bm_graph *g);

typedef struct tcase {
  const char *name;
  build_fn build;
  double tol;
  int64_t syms[BM_MAX_SYMS]; /* 0 = the bound */
  bool unfused;              /* also run without fusion */
  bool ptx; /* export: also the compute_80 PTX, run again with BM_CUDA_FORCE_PTX=1 (the non-sm_90a bodies) */
} tcase;

static bm_status write_file(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) return bm_status_make(BM_ERR_IO, "cannot write %s", path);
  size_t w = n ? fwrite(data, 1, n, f) : 0;
  fclose(f);
  return w == n ? NULL : bm_status_make(BM_ERR_IO, "short write to %s", path);
}

static void meta_tensor(FILE *f, const char *kind, const bm_tensor *t) {
  fprintf(f, "%s %s %d", kind, bm_dtype_name(t->dtype), t->ndim);
  for (int d = 0; d < t->ndim; d++) fprintf(f, " %lld", (long long)t->shape[d]);
  fprintf(f, "\n");
}

/* Export mode: the interpreter's outputs and the compiled package go to
 * export_dir/<case>/ for bm_cuda_check. */
static bm_status export_case(bm_module *m, bm_graph *g, const bm_tensor *in, const char *name, double tol,
                             bool fuse, const char *archs, bool ptx) {
  int nout = g->noutputs;
  bm_tensor *ref = calloc((size_t)nout + 1, sizeof *ref);
  if (!ref) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "export");
  bm_status is = bm_interp_run(g, in, ref);
  if (is) {
    free(ref);
    return is;
  }
  char dir[1024], path[1200];
  snprintf(dir, sizeof dir, "%s/%s_%d", export_dir, name, fuse);
  char cmd[1200];
  snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
  bm_status s = system(cmd) == 0 ? NULL : bm_status_make(BM_ERR_IO, "cannot create %s", dir);
  bm_compile_options co;
  bm_compile_options_init(&co);
  co.target.backend = "cuda";
  co.target.cpu = archs;
  co.passes.no_fuse = !fuse;
  snprintf(path, sizeof path, "%s/pkg.bmpk", dir);
  int nin = g->ninputs;
  if (!s) s = bm_compile_module(m, &co, path);
  snprintf(path, sizeof path, "%s/meta.txt", dir);
  FILE *f = s ? NULL : fopen(path, "w");
  if (!s && !f) s = bm_status_make(BM_ERR_IO, "cannot write %s", path);
  if (f) {
    fprintf(f, "tol %.3g\n%s", tol, ptx ? "ptx\n" : "");
    for (int i = 0; i < nin; i++) meta_tensor(f, "input", &in[i]);
    for (int i = 0; i < nout; i++) meta_tensor(f, "output", &ref[i]);
    fclose(f);
  }
  for (int i = 0; !s && i < nin; i++) {
    snprintf(path, sizeof path, "%s/in%d.bin", dir, i);
    s = write_file(path, in[i].data, bm_tensor_nbytes(&in[i]));
  }
  for (int i = 0; !s && i < nout; i++) {
    snprintf(path, sizeof path, "%s/ref%d.bin", dir, i);
    s = write_file(path, ref[i].data, bm_tensor_nbytes(&ref[i]));
  }
  for (int i = 0; i < nout; i++) bm_tensor_free(&ref[i]);
  free(ref);
  if (!s) {
    snprintf(path, sizeof path, "%s/list.txt", export_dir);
    f = fopen(path, "a");
    if (f) {
      fprintf(f, "%s_%d\n", name, fuse);
      fclose(f);
    }
    exported++;
  }
  return s;
}

static void run_one(const tcase *c, bool fuse) {
  bm_module *m = bm_module_create("t");
  bm_graph *g = bm_graph_create(m, "main");
  c->build(g);
  bm_status gs = bm_graph_status(g);
  if (gs) {
    fprintf(stderr, "%s: build failed: %s\n", c->name, bm_status_message(gs));
    bm_test_failed_checks++;
    bm_module_destroy(m);
    return;
  }
  int64_t syms[BM_MAX_SYMS];
  for (int i = 0; i < g->nsyms; i++) syms[i] = c->syms[i] ? c->syms[i] : g->syms[i].max;
  if (export_dir) {
    bm_tensor *in = calloc((size_t)g->ninputs + 1, sizeof *in);
    CHECK(in != NULL);
    CHECK_OK(bm_opcheck_random_inputs(g, syms, 77, in));
    char archs[256] = ""; /* a [ptx] case: the exported cubin(s) and the compute_80 PTX */
    const char *ea = getenv("BM_CUDA_ARCHS");
    if (c->ptx)
      snprintf(archs, sizeof archs, "%s%s", ea && *ea ? ea : "sm_90", ea && strstr(ea, "compute_") ? "" : ",compute_80");
    bm_status s = export_case(m, g, in, c->name, c->tol, fuse, c->ptx ? archs : NULL, c->ptx);
    if (s) {
      fprintf(stderr, "%s (fuse %d): %s\n", c->name, fuse, bm_status_message(s));
      bm_status_free(s);
      bm_test_failed_checks++;
    }
    for (int i = 0; i < g->ninputs; i++) bm_tensor_free(&in[i]);
    free(in);
    bm_module_destroy(m);
    return;
  }
  if (!have_gpu) { /* compile only: the generated CUDA must compile and the package must open */
    bm_compile_options co;
    bm_compile_options_init(&co);
    co.target.backend = "cuda";
    co.passes.no_fuse = !fuse;
    char path[512];
    snprintf(path, sizeof path, "%s/%s_%d.bmpk", bm_test_tmpdir(), c->name, fuse);
    bm_status s = bm_compile_module(m, &co, path);
    bm_package *pkg = NULL;
    if (!s) s = bm_package_open(path, NULL, &pkg);
    if (s) {
      fprintf(stderr, "%s (fuse %d): %s\n", c->name, fuse, bm_status_message(s));
      bm_status_free(s);
      bm_test_failed_checks++;
    } else {
      compiled_only++;
    }
    bm_package_close(pkg);
    bm_module_destroy(m);
    return;
  }
  bm_tensor *in = calloc((size_t)g->ninputs + 1, sizeof *in); /* any number of inputs */
  CHECK(in != NULL);
  CHECK_OK(bm_opcheck_random_inputs(g, syms, 77, in));
  bm_opcheck_options o = {.fuse = fuse, .target = "cuda"};
  double err = INFINITY;
  bm_status s = bm_opcheck(g, in, &o, &err);
  if (s) {
    fprintf(stderr, "%s (fuse %d): %s\n", c->name, fuse, bm_status_message(s));
    bm_status_free(s);
    bm_test_failed_checks++;
  } else {
    ran++;
    if (getenv("BM_TEST_VERBOSE")) fprintf(stderr, "  %-28s fuse %d: rel err %.3g\n", c->name, fuse, err);
    CHECK_MSG(err <= c->tol, "%s (fuse %d): rel err %g > %g", c->name, fuse, err, c->tol);
  }
  for (int i = 0; i < g->ninputs; i++) bm_tensor_free(&in[i]);
  free(in);
  bm_module_destroy(m);
}

/* ------------------------------------------------------------------ cases */

#define IN(name, dt, ...) bm_input(g, name, dt, (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__})
#define F32 BM_DTYPE_F32
#define F16 BM_DTYPE_F16
#define BF16 BM_DTYPE_BF16

static void b_unary_all(bm_graph *g) {
  bm_node *x = IN("x", F32, 3, 5, 67);
  static const bm_op ops[] = {BM_OP_NEG, BM_OP_ABS, BM_OP_EXP, BM_OP_SQRT, BM_OP_RSQRT, BM_OP_RECIP,
                              BM_OP_SQUARE, BM_OP_SIN, BM_OP_COS, BM_OP_TANH, BM_OP_ERF, BM_OP_SIGMOID,
                              BM_OP_RELU, BM_OP_SILU, BM_OP_GELU, BM_OP_GELU_TANH, BM_OP_QUICK_GELU};
  char name[32];
  for (size_t i = 0; i < sizeof ops / sizeof *ops; i++) {
    bm_node *in = x;
    if (ops[i] == BM_OP_SQRT || ops[i] == BM_OP_RSQRT || ops[i] == BM_OP_RECIP)
      in = bm_add(g, bm_unary(g, BM_OP_ABS, x), bm_scalar(g, 0.5f));
    snprintf(name, sizeof name, "y%zu", i);
    bm_output_add(g, name, bm_unary(g, ops[i], in));
  }
  bm_output_add(g, "log", bm_unary(g, BM_OP_LOG, bm_add(g, bm_unary(g, BM_OP_ABS, x), bm_scalar(g, 0.1f))));
}

static void b_binary_bcast(bm_graph *g) {
  bm_node *a = IN("a", F32, 2, 3, 1, 33), *b = IN("b", F32, 3, 7, 1), *c = IN("c", F32, 33);
  static const bm_op ops[] = {BM_OP_ADD, BM_OP_SUB, BM_OP_MUL, BM_OP_DIV, BM_OP_MAX, BM_OP_MIN};
  char name[32];
  for (size_t i = 0; i < sizeof ops / sizeof *ops; i++) {
    snprintf(name, sizeof name, "y%zu", i);
    bm_output_add(g, name, bm_binary(g, ops[i], a, b));
  }
  bm_output_add(g, "pow", bm_binary(g, BM_OP_POW, bm_add(g, bm_unary(g, BM_OP_ABS, c), bm_scalar(g, 0.5f)), c));
}

static void b_fused_f16(bm_graph *g) {
  int s = bm_sym_declare(g, "seq", 40);
  bm_node *x = IN("x", F16, 2, BM_SYM(s), 48), *b = IN("b", F16, 48);
  bm_node *y = bm_silu(g, bm_add(g, bm_mul(g, x, bm_scalar(g, 0.5f)), b));
  bm_output_add(g, "y", bm_gelu_tanh(g, bm_sub(g, y, x)));
}

static void b_fused_bf16(bm_graph *g) {
  bm_node *x = IN("x", BF16, 4, 33), *b = IN("b", BF16, 4, 1);
  bm_output_add(g, "y", bm_mul(g, bm_unary(g, BM_OP_SIGMOID, x), b));
}

static void b_cast(bm_graph *g) {
  bm_node *x = IN("x", F32, 5, 31);
  bm_node *big = bm_mul(g, x, bm_scalar(g, 300.0f));
  bm_output_add(g, "h", bm_cast(g, x, F16));
  bm_output_add(g, "b", bm_cast(g, x, BF16));
  bm_output_add(g, "i32", bm_cast(g, big, BM_DTYPE_I32));
  bm_output_add(g, "i8", bm_cast(g, big, BM_DTYPE_I8)); /* saturates */
  bm_output_add(g, "back", bm_cast(g, bm_cast(g, big, BM_DTYPE_I64), F32));
  bm_node *i = IN("i", BM_DTYPE_I32, 7);
  bm_output_add(g, "i2i", bm_cast(g, i, BM_DTYPE_I8));
}

static void b_movement(bm_graph *g) {
  int s = bm_sym_declare(g, "seq", 12);
  bm_node *x = IN("x", F32, 2, BM_SYM(s), 3, 8);
  bm_output_add(g, "perm", bm_permute(g, x, (int[]){2, 0, 3, 1}));
  bm_output_add(g, "slice", bm_slice(g, x, 3, 1, 7, 2));
  bm_output_add(g, "slice_sym", bm_slice(g, x, 1, -3, INT64_MAX, 1));
  bm_output_add(g, "cat", bm_concat(g, 2, (bm_node *[]){x, bm_mul(g, x, bm_scalar(g, 2.0f))}, 3));
  bm_output_add(g, "pad", bm_pad(g, x, (int64_t[]){0, 0, 1, 2, 0, 1, 2, 0}, -1.5f));
  bm_node *img = IN("img", F16, 1, 3, 5, 7);
  bm_output_add(g, "up", bm_upsample_nearest(g, img, 2));
  bm_node *tab = IN("tab", F32, 9, 6), *idx = IN("idx", BM_DTYPE_I32, 2, 5);
  bm_output_add(g, "gather", bm_gather(g, tab, idx));
  bm_node *rows = IN("rows", BM_DTYPE_I64, 2);
  bm_output_add(g, "take", bm_take_row(g, x, rows));
}

static void b_reduce(bm_graph *g) {
  int s = bm_sym_declare(g, "n", 20);
  bm_node *x = IN("x", F32, 3, BM_SYM(s), 37);
  bm_output_add(g, "sum_last", bm_sum(g, x, 2, false));
  bm_output_add(g, "mean_mid", bm_mean(g, x, 1, true));
  bm_output_add(g, "max_first", bm_reduce_max(g, x, 0, false));
  bm_output_add(g, "sum_all", bm_reduce(g, BM_OP_SUM, x, 7u, false));
  bm_output_add(g, "sum_02", bm_reduce(g, BM_OP_SUM, x, 5u, true));
}

static void b_softmax(bm_graph *g) {
  bm_node *x = IN("x", F32, 4, 6, 300), *y = IN("y", F16, 2, 3000), *z = IN("z", F32, 5, 9, 4);
  bm_output_add(g, "last", bm_softmax(g, bm_mul(g, x, bm_scalar(g, 4.0f)), 2));
  bm_output_add(g, "wide", bm_softmax(g, y, 1));
  bm_output_add(g, "mid", bm_softmax(g, z, 1));
}

static void b_norms(bm_graph *g) {
  int s = bm_sym_declare(g, "seq", 9);
  bm_node *x = IN("x", F32, 2, BM_SYM(s), 96), *w = IN("w", F32, 96), *b = IN("b", F32, 96);
  bm_output_add(g, "ln", bm_layer_norm(g, x, w, b, 1e-5f));
  bm_output_add(g, "rms", bm_mul(g, bm_rms_norm(g, x, w, 1e-6f), bm_scalar(g, 3.0f)));
  bm_node *wide = IN("wide", BF16, 3, 2500);
  bm_output_add(g, "ln_wide", bm_layer_norm(g, wide, NULL, NULL, 1e-5f));
}

static void b_groupnorm_silu(bm_graph *g) {
  bm_node *x = IN("x", F32, 2, 32, 6, 5), *w = IN("w", F32, 32), *b = IN("b", F32, 32);
  bm_node *r = IN("r", F32, 2, 32, 6, 5);
  bm_output_add(g, "y", bm_add(g, bm_silu(g, bm_group_norm(g, x, w, b, 8, 1e-5f)), r));
}

/* GROUP_NORM on 16-byte vectors (emit.c group_norm_vec_ok: the spatial
 * size a multiple of the vector): the SD VAE's 128 channels in 32 groups
 * with SiLU and a residual (f16), a wide bf16 group without weight or bias,
 * f32 with a batch of 2 */
/* y = silu(group_norm(x)) + r over f16 (n, c, h, w) */
static void gn_silu_res_f16(bm_graph *g, int64_t n, int64_t c, int64_t h, int64_t w, int groups) {
  bm_node *x = IN("x", F16, n, c, h, w), *wt = IN("w", F16, c), *b = IN("b", F16, c);
  bm_node *r = IN("r", F16, n, c, h, w);
  bm_output_add(g, "y", bm_add(g, bm_silu(g, bm_group_norm(g, x, wt, b, groups, 1e-6f)), r));
}
static void b_gn_vec_f16(bm_graph *g) { gn_silu_res_f16(g, 1, 128, 32, 48, 32); }
static void b_gn_vec_bf16(bm_graph *g) {
  bm_node *x = IN("x", BF16, 1, 256, 64, 64);
  bm_output_add(g, "y", bm_group_norm(g, x, NULL, NULL, 8, 1e-5f));
}
/* a group split over a cluster of blocks (emit.c group_norm_cluster, sm_90a:
 * at least 2 vectors a thread per block, at most 8 blocks): 4 blocks a group
 * with a batch of 2 and SiLU + residual (f16); 8 with one group (f32); a
 * symbolic batch (bf16, 4 blocks). _cl1: the same with one block a group. */
static void b_gn_cl_f16(bm_graph *g) { gn_silu_res_f16(g, 2, 64, 64, 64, 4); }
static void b_gn_cl_f32(bm_graph *g) {
  bm_node *x = IN("x", F32, 1, 32, 64, 64);
  bm_output_add(g, "y", bm_group_norm(g, x, NULL, NULL, 1, 1e-5f));
}
static void b_gn_cl_bf16_sym(bm_graph *g) {
  int s = bm_sym_declare(g, "n", 3);
  bm_node *x = IN("x", BF16, BM_SYM(s), 64, 32, 64), *w = IN("w", BF16, 64), *b = IN("b", BF16, 64);
  bm_output_add(g, "y", bm_group_norm(g, x, w, b, 2, 1e-5f));
}
static void b_gn_vec_f32(bm_graph *g) {
  bm_node *x = IN("x", F32, 2, 40, 4, 8), *w = IN("w", F32, 40), *b = IN("b", F32, 40);
  bm_output_add(g, "y", bm_silu(g, bm_group_norm(g, x, w, b, 8, 1e-5f)));
}

static void b_rope(bm_graph *g) {
  int s = bm_sym_declare(g, "seq", 7);
  bm_node *x = IN("x", F32, 2, BM_SYM(s), 3, 16), *pos = IN("pos", BM_DTYPE_I32, 2, BM_SYM(s));
  float fr[6];
  for (int i = 0; i < 6; i++) fr[i] = powf(10000.0f, -(float)i / 6.0f);
  bm_node *f = bm_const(g, F32, 1, (int64_t[]){6}, fr);
  bm_output_add(g, "halves", bm_rope(g, x, pos, f, 0));
  bm_node *p1 = IN("p1", BM_DTYPE_I64, BM_SYM(s));
  bm_output_add(g, "pairs", bm_rope(g, x, p1, f, 1));
}

typedef struct mm_cfg {
  bm_dtype dt;
  bool ta, tb, bias_act;
} mm_cfg;
static mm_cfg mm;

static void b_matmul(bm_graph *g) {
  int s = bm_sym_declare(g, "m", 70);
  bm_node *a = mm.ta ? IN("a", mm.dt, 2, 45, BM_SYM(s)) : IN("a", mm.dt, 2, BM_SYM(s), 45);
  bm_node *b = mm.tb ? IN("b", mm.dt, 67, 45) : IN("b", mm.dt, 45, 67);
  bm_node *y = bm_matmul(g, a, b, mm.ta, mm.tb);
  if (mm.bias_act) {
    bm_node *bias = IN("bias", mm.dt, 67), *res = IN("res", mm.dt, 2, BM_SYM(s), 67);
    y = bm_add(g, bm_gelu(g, bm_add(g, y, bias)), res);
  }
  bm_output_add(g, "y", y);
}
static void b_mm_f32(bm_graph *g) { mm = (mm_cfg){F32, false, false, false}; b_matmul(g); }
static void b_mm_f32_tt(bm_graph *g) { mm = (mm_cfg){F32, true, true, true}; b_matmul(g); }
static void b_mm_f16_tb(bm_graph *g) { mm = (mm_cfg){F16, false, true, true}; b_matmul(g); }
static void b_mm_bf16(bm_graph *g) { mm = (mm_cfg){BF16, false, false, true}; b_matmul(g); }

/* The tensor-core GEMM (f16/bf16 with the contiguous dims multiples of 8):
 * odd M and N, K not a multiple of the 32-deep tile, every layout, epilogues,
 * batch broadcast, several 128x128 tiles and K tiles (pipeline wrap). */
static void b_tc_f16_tb(bm_graph *g) { /* (m, 40) @ (67, 40)^T + bias, GELU, + residual */
  int s = bm_sym_declare(g, "m", 75);
  bm_node *a = IN("a", F16, BM_SYM(s), 40), *b = IN("b", F16, 67, 40);
  bm_node *bias = IN("bias", F16, 67), *res = IN("res", F16, BM_SYM(s), 67);
  bm_output_add(g, "y", bm_add(g, bm_gelu(g, bm_add(g, bm_matmul(g, a, b, false, true), bias)), res));
}
static void b_tc_bf16_nn(bm_graph *g) { /* (m, 264) @ (264, 136): 9 K tiles, 2x2 output tiles */
  int s = bm_sym_declare(g, "m", 150);
  bm_node *a = IN("a", BF16, BM_SYM(s), 264), *b = IN("b", BF16, 264, 136);
  bm_node *bias = IN("bias", BF16, 136);
  bm_output_add(g, "y", bm_silu(g, bm_add(g, bm_matmul(g, a, b, false, false), bias)));
}
static void b_tc_f16_tt(bm_graph *g) { /* (48, 136)^T @ (200, 48)^T -> (136, 200) */
  bm_node *a = IN("a", F16, 48, 136), *b = IN("b", F16, 200, 48);
  bm_output_add(g, "y", bm_matmul(g, a, b, true, true));
}
static void b_tc_bf16_tn_batch(bm_graph *g) { /* (3, 2, 72, 40)^T @ (2, 72, 24) -> (3, 2, 40, 24), f32 out */
  bm_node *a = IN("a", BF16, 3, 2, 72, 40), *b = IN("b", BF16, 2, 72, 24);
  bm_output_add(g, "y", bm_cast(g, bm_matmul(g, a, b, true, false), F32));
}

/* The tensor-core GEMM with f32 A and bf16 B (A split into bf16 hi + lo):
 * f32 accuracy, every layout, tails, batch broadcast, epilogues. */
static void b_tcs_tb(bm_graph *g) { /* (m, 264) @ (136, 264)^T + bias, SiLU */
  int s = bm_sym_declare(g, "m", 150);
  bm_node *a = IN("a", F32, BM_SYM(s), 264), *b = IN("b", BF16, 136, 264), *bias = IN("bias", F32, 136);
  bm_output_add(g, "y", bm_silu(g, bm_add(g, bm_matmul(g, a, b, false, true), bias)));
}
static void b_tcs_nn(bm_graph *g) { /* (150, 72) @ (72, 200) + residual */
  bm_node *a = IN("a", F32, 150, 72), *b = IN("b", BF16, 72, 200), *r = IN("r", F32, 150, 200);
  bm_output_add(g, "y", bm_add(g, bm_matmul(g, a, b, false, false), r));
}
static void b_tcs_tt_batch(bm_graph *g) { /* (2, 1, 40, 136)^T @ (3, 24, 40)^T -> (2, 3, 136, 24) */
  bm_node *a = IN("a", F32, 2, 1, 40, 136), *b = IN("b", BF16, 3, 24, 40);
  bm_output_add(g, "y", bm_matmul(g, a, b, true, true));
}

/* The Hopper GEMM (wgmma; the sm_90 cubin, built as sm_90a): A (M, K) and B
 * (N, K) both K-major, f16/bf16. M from 1 to 1000 (symbolic, and static
 * non-multiples of 128), N and K with tails of 8 past the 128-wide tile and
 * the 64-deep K step, several K steps (the 3-stage ring wraps), epilogues,
 * batch dims with broadcast, f32 output. Tolerances as the mma.sync cases of
 * the same dtype (both round the f32 result once to the output dtype). */
static void b_wg_bf16_sym_epi(bm_graph *g) { /* (m, 520) @ (392, 520)^T + bias, GELU, + residual */
  int s = bm_sym_declare(g, "m", 1000);
  bm_node *a = IN("a", BF16, BM_SYM(s), 520), *b = IN("b", BF16, 392, 520);
  bm_node *bias = IN("bias", BF16, 392), *res = IN("res", BF16, BM_SYM(s), 392);
  bm_output_add(g, "y", bm_add(g, bm_gelu(g, bm_add(g, bm_matmul(g, a, b, false, true), bias)), res));
}
static void b_wg_f16_m13(bm_graph *g) { /* (13, 64) @ (136, 64)^T: one K step, rows past M and N */
  bm_node *a = IN("a", F16, 13, 64), *b = IN("b", F16, 136, 64);
  bm_output_add(g, "y", bm_matmul(g, a, b, false, true));
}
static void b_wg_f16_m1000(bm_graph *g) { /* (1000, 1000) @ (264, 1000)^T + bias, SiLU: 16 K steps */
  bm_node *a = IN("a", F16, 1000, 1000), *b = IN("b", F16, 264, 1000), *bias = IN("bias", F16, 264);
  bm_output_add(g, "y", bm_silu(g, bm_add(g, bm_matmul(g, a, b, false, true), bias)));
}
static void b_wg_bf16_batch(bm_graph *g) { /* (2, 3, 200, 136) @ (3, 40, 136)^T -> (2, 3, 200, 40), f32 out */
  bm_node *a = IN("a", BF16, 2, 3, 200, 136), *b = IN("b", BF16, 3, 40, 136);
  bm_output_add(g, "y", bm_cast(g, bm_matmul(g, a, b, false, true), F32));
}
static void b_wg_f16_persist(bm_graph *g) { /* (129, 64) @ (17920, 64)^T: 140 TMA tiles, more than the SMs */
  bm_node *a = IN("a", F16, 129, 64), *b = IN("b", F16, 17920, 64);
  bm_output_add(g, "y", bm_matmul(g, a, b, false, true));
}
static void b_wg_f16_sym(bm_graph *g) { /* (m, 256) @ (512, 256)^T: exact tiles at m = 256 */
  int s = bm_sym_declare(g, "m", 1000);
  bm_node *a = IN("a", F16, BM_SYM(s), 256), *b = IN("b", F16, 512, 256);
  bm_output_add(g, "y", bm_matmul(g, a, b, false, true));
}

/* The TMA kernel with B stored (K, N) (MN-major B descriptor; not trans_b):
 * symbolic M with epilogues, K past the 64-deep step with one B matrix (rows
 * past K are the tensor's end: zero), batches (K a multiple of 64), f32 out. */
static void b_wg_kn_bf16_sym_epi(bm_graph *g) { /* (m, 512) @ (512, 392) + bias, GELU, + residual */
  int s = bm_sym_declare(g, "m", 1000);
  bm_node *a = IN("a", BF16, BM_SYM(s), 512), *b = IN("b", BF16, 512, 392);
  bm_node *bias = IN("bias", BF16, 392), *res = IN("res", BF16, BM_SYM(s), 392);
  bm_output_add(g, "y", bm_add(g, bm_gelu(g, bm_add(g, bm_matmul(g, a, b, false, false), bias)), res));
}
static void b_wg_kn_f16_k200(bm_graph *g) { /* (300, 200) @ (200, 264): K tail */
  bm_node *a = IN("a", F16, 300, 200), *b = IN("b", F16, 200, 264);
  bm_output_add(g, "y", bm_matmul(g, a, b, false, false));
}
static void b_wg_kn_bf16_batch(bm_graph *g) { /* (2, 3, 200, 128) @ (3, 128, 72) -> (2, 3, 200, 72), f32 out */
  bm_node *a = IN("a", BF16, 2, 3, 200, 128), *b = IN("b", BF16, 3, 128, 72);
  bm_output_add(g, "y", bm_cast(g, bm_matmul(g, a, b, false, false), F32));
}
/* The TMA store epilogue (_tmae: tma_n256s4c2e, the default, named; _tmae1:
 * tma_n256s4e; _tmap: tma_n256s4c2, the previous default, stores from registers): whole
 * 128-row tiles go through shared memory and TMA tensor stores (columns
 * past N clipped by the map, a cluster pair's tile past M skipped, batches
 * stacked), other M the per-element store. */
static void b_wg_f16_m384_epi(bm_graph *g) { /* (384, 520) @ (392, 520)^T + bias, SiLU: 3 M-tiles */
  bm_node *a = IN("a", F16, 384, 520), *b = IN("b", F16, 392, 520), *bias = IN("bias", F16, 392);
  bm_output_add(g, "y", bm_silu(g, bm_add(g, bm_matmul(g, a, b, false, true), bias)));
}
static void b_wg_f16_batch_m256(bm_graph *g) { /* (2, 256, 136) @ (2, 200, 136)^T -> (2, 256, 200) */
  bm_node *a = IN("a", F16, 2, 256, 136), *b = IN("b", F16, 2, 200, 136);
  bm_output_add(g, "y", bm_matmul(g, a, b, false, true));
}

static void b_mm_batch(bm_graph *g) {
  bm_node *a = IN("a", F32, 3, 2, 17, 40), *b = IN("b", F32, 2, 40, 19);
  bm_output_add(g, "y", bm_matmul(g, a, b, false, false));
}

static void b_qmatmul(bm_graph *g) {
  bm_node *x = IN("x", F32, 3, 64), *q8 = IN("q8", BM_DTYPE_I8, 40, 64), *s8 = IN("s8", F32, 40, 2);
  bm_output_add(g, "q8", bm_qmatmul(g, x, q8, s8));
  bm_node *q4 = IN("q4", BM_DTYPE_I4, 24, 64), *s4 = IN("s4", F32, 24, 4);
  bm_output_add(g, "q4", bm_qmatmul(g, x, q4, s4));
  bm_output_add(g, "deq", bm_dequant(g, q4, s4));
}

/* The skinny GEMM (decode, at most 16 rows after folding batch dims): W
 * stored (N, K), every dtype pair, static and symbolic M, N not a multiple
 * of the block's columns, K tails of the 16-byte chunk loop, epilogues, a
 * broadcast W, and K that forces element loads. */
typedef struct gv_cfg {
  bm_dtype at, wt;
  int64_t rows, n, k; /* rows: the static M, or the symbol's max */
  bool sym, epi;
} gv_cfg;
static gv_cfg gv;

static void b_gemv(bm_graph *g) {
  bm_node *x;
  if (gv.sym) {
    int s = bm_sym_declare(g, "m", gv.rows);
    x = IN("x", gv.at, BM_SYM(s), gv.k);
  } else {
    x = IN("x", gv.at, gv.rows, gv.k);
  }
  bm_node *w = IN("w", gv.wt, gv.n, gv.k);
  bm_node *y = bm_matmul(g, x, w, false, true);
  if (gv.epi) {
    bm_node *bias = IN("bias", gv.at, gv.n);
    bm_node *res = gv.sym ? bm_mul(g, y, bm_scalar(g, 0.25f)) : IN("res", gv.at, gv.rows, gv.n);
    y = bm_add(g, bm_gelu(g, bm_add(g, y, bias)), res);
  }
  bm_output_add(g, "y", y);
}
static void b_gv_f32xbf16_m1(bm_graph *g) { gv = (gv_cfg){F32, BF16, 1, 37, 264, false, true}; b_gemv(g); }
static void b_gv_bf16_m2(bm_graph *g) { gv = (gv_cfg){BF16, BF16, 2, 67, 512, false, false}; b_gemv(g); }
static void b_gv_f16_m7_sym(bm_graph *g) { gv = (gv_cfg){F16, F16, 16, 40, 136, true, true}; b_gemv(g); }
static void b_gv_f32xf16_m16(bm_graph *g) { gv = (gv_cfg){F32, F16, 16, 33, 72, false, true}; b_gemv(g); }
static void b_gv_bf16xf32_sym(bm_graph *g) { gv = (gv_cfg){BF16, F32, 2, 21, 100, true, false}; b_gemv(g); }
static void b_gv_f16xbf16_m3(bm_graph *g) { gv = (gv_cfg){F16, BF16, 3, 50, 64, false, false}; b_gemv(g); }
static void b_gv_f32_oddk(bm_graph *g) { gv = (gv_cfg){F32, F32, 5, 13, 45, false, true}; b_gemv(g); }
static void b_gv_batch_bcast(bm_graph *g) { /* (2, s, 96) @ (1, 24, 96)^T: 2 * s rows */
  int s = bm_sym_declare(g, "s", 8);
  bm_node *x = IN("x", F32, 2, BM_SYM(s), 96), *w = IN("w", BF16, 1, 24, 96);
  bm_output_add(g, "y", bm_matmul(g, x, w, false, true));
}

/* QMATMUL through the skinny GEMM: i8 per channel, i4 groups of 32 and 64,
 * 16 rows, groups that split a 16-byte chunk (element loads), bf16 x. */
/* Quantized weights over the full range (i8 -128..127, i4 -8..7, packed two
 * per byte, low nibble first) as constants: the harness's random inputs
 * would give i8 0..3 and i4 zeros only. */
static bm_node *qweight(bm_graph *g, bm_dtype t, int64_t n, int64_t k, uint32_t seed) {
  static unsigned char buf[1 << 16];
  int64_t bytes = t == BM_DTYPE_I4 ? (n * k + 1) / 2 : n * k;
  if (bytes > (int64_t)sizeof buf) return NULL;
  for (int64_t i = 0; i < bytes; i++) {
    seed = seed * 1664525u + 1013904223u;
    buf[i] = (unsigned char)(seed >> 24);
  }
  return bm_const(g, t, 2, (int64_t[]){n, k}, buf);
}

/* (at most 8 inputs per case: the harness's input array) */
static void b_qgemv(bm_graph *g) {
  bm_node *x = IN("x", F32, 1, 256), *x16 = IN("x16", F32, 2, 8, 256);
  bm_node *q8 = qweight(g, BM_DTYPE_I8, 40, 256, 1), *s8 = IN("s8", F32, 40, 1);
  bm_output_add(g, "i8_pc", bm_qmatmul(g, x, q8, s8));
  bm_node *q4 = qweight(g, BM_DTYPE_I4, 24, 256, 2), *s32 = IN("s32", F32, 24, 8), *s64 = IN("s64", F32, 24, 4);
  bm_output_add(g, "i4_g32", bm_qmatmul(g, x, q4, s32));
  bm_output_add(g, "i4_g64_m16", bm_silu(g, bm_qmatmul(g, x16, q4, s64)));
  bm_output_add(g, "i8_g32_m16", bm_qmatmul(g, x16, q8, IN("s8g", F32, 40, 8)));
}
static void b_qgemv_g48(bm_graph *g) { /* groups of 48 split the 32-nibble chunks: element loads */
  bm_node *q4s = qweight(g, BM_DTYPE_I4, 9, 96, 3), *s48 = IN("s48", F32, 9, 2);
  bm_output_add(g, "i4_g48", bm_qmatmul(g, IN("x96", F32, 7, 96), q4s, s48));
}
static void b_qgemv_bf16_sym(bm_graph *g) { /* bf16 activations, symbolic rows (max 4) */
  int s = bm_sym_declare(g, "m", 4);
  bm_node *x = IN("x", BF16, BM_SYM(s), 128);
  bm_node *q4 = qweight(g, BM_DTYPE_I4, 70, 128, 4), *s4 = IN("s4", F32, 70, 4);
  bm_output_add(g, "y", bm_qmatmul(g, x, q4, s4));
}
static void b_qgemv_sym16(bm_graph *g) { /* f16 x, symbolic rows (max 16), i8 groups of 16, i4 g64 */
  int s = bm_sym_declare(g, "m", 16);
  bm_node *x = IN("x", F16, BM_SYM(s), 192);
  bm_node *q8 = qweight(g, BM_DTYPE_I8, 33, 192, 5), *s8 = IN("s8", F32, 33, 12);
  bm_node *q4 = qweight(g, BM_DTYPE_I4, 33, 192, 6), *s4 = IN("s4", F32, 33, 3);
  bm_output_add(g, "i8", bm_qmatmul(g, x, q8, s8));
  bm_output_add(g, "i4", bm_qmatmul(g, x, q4, s4));
}

/* ---- the small-M GEMM (codegen/clike/emit_gemm_small.c, owner: smallm): 2..64
 * rows of MATMUL (bf16 x bf16/f32, f16 x f16) and QMATMUL (int8/int4 per channel
 * and in groups of 1, 2, 4+ chunks x f32/bf16/f16), static and symbolic rows, N
 * not a multiple of the 16-row tile, an odd number of K rounds, epilogues. */
static void b_sm_mm(bm_graph *g, bm_dtype at, bm_dtype wt, int64_t rows, int64_t n, int64_t k, bool sym, bool epi) {
  gv = (gv_cfg){at, wt, rows, n, k, sym, epi}; /* rows: the static M, or the symbol's max */
  b_gemv(g);
}
static void b_sm_bf16_m2_epi(bm_graph *g) { b_sm_mm(g, BF16, BF16, 2, 72, 256, false, true); }
static void b_sm_f32xbf16_m5(bm_graph *g) { b_sm_mm(g, F32, BF16, 5, 40, 512, false, false); }
static void b_sm_f32xbf16_m16_epi(bm_graph *g) { b_sm_mm(g, F32, BF16, 16, 136, 96, false, true); }
static void b_sm_bf16_m8(bm_graph *g) { b_sm_mm(g, BF16, BF16, 8, 24, 64, false, false); }
static void b_sm_f16_sym(bm_graph *g) { b_sm_mm(g, F16, F16, 64, 50, 160, true, true); }
static void b_sm_f32xbf16_sym(bm_graph *g) { b_sm_mm(g, F32, BF16, 64, 33, 128, true, false); }
/* (x, i8 per channel / g32 / g64, i4 per channel / g32 / g128): K 256 */
static void b_sm_q(bm_graph *g, bm_node *x, int64_t n) {
  bm_node *q8 = qweight(g, BM_DTYPE_I8, n, 256, 11), *q4 = qweight(g, BM_DTYPE_I4, n, 256, 12);
  bm_output_add(g, "i8_pc", bm_qmatmul(g, x, q8, IN("s8", F32, n, 1)));
  bm_output_add(g, "i8_g32", bm_qmatmul(g, x, q8, IN("s8g32", F32, n, 8)));
  bm_output_add(g, "i8_g64", bm_silu(g, bm_qmatmul(g, x, q8, IN("s8g64", F32, n, 4))));
  bm_output_add(g, "i4_pc", bm_qmatmul(g, x, q4, IN("s4", F32, n, 1)));
  bm_output_add(g, "i4_g32", bm_qmatmul(g, x, q4, IN("s4g32", F32, n, 8)));
  bm_output_add(g, "i4_g128", bm_qmatmul(g, x, q4, IN("s4g128", F32, n, 2)));
}
static void b_sm_q_f32_m8(bm_graph *g) { b_sm_q(g, IN("x", F32, 8, 256), 40); }
static void b_sm_q_bf16_m16(bm_graph *g) { b_sm_q(g, IN("x", BF16, 2, 8, 256), 33); }
static void b_sm_q_f16_sym(bm_graph *g) {
  int s = bm_sym_declare(g, "m", 64);
  b_sm_q(g, IN("x", F16, BM_SYM(s), 256), 24);
}
static void b_sm_q_f32_m5_k384(bm_graph *g) { /* 3 int4 rounds (odd), bias + residual epilogue */
  bm_node *x = IN("x", F32, 5, 384);
  bm_node *q8 = qweight(g, BM_DTYPE_I8, 50, 384, 13), *q4 = qweight(g, BM_DTYPE_I4, 50, 384, 14);
  bm_node *bias = IN("bias", F32, 50), *res = IN("res", F32, 5, 50);
  bm_output_add(g, "i4_g32", bm_add(g, bm_add(g, bm_qmatmul(g, x, q4, IN("s4", F32, 50, 12)), bias), res));
  bm_output_add(g, "i8_g64", bm_qmatmul(g, x, q8, IN("s8", F32, 50, 6)));
}

static void b_conv(bm_graph *g) {
  bm_node *x = IN("x", F32, 2, 6, 11, 9), *w = IN("w", F32, 8, 3, 3, 3), *b = IN("b", F32, 8);
  bm_output_add(g, "grouped", bm_silu(g, bm_conv2d(g, x, w, b, 2, 1, 1, 1, 1, 1, 2)));
  bm_node *w1 = IN("w1", F32, 5, 6, 1, 1);
  bm_output_add(g, "pointwise", bm_conv2d(g, x, w1, NULL, 1, 1, 0, 0, 1, 1, 1));
  bm_node *w2 = IN("w2", F32, 4, 6, 3, 2);
  bm_output_add(g, "dilated", bm_conv2d(g, x, w2, NULL, 1, 2, 2, 1, 2, 1, 1));
}

static void b_conv_f16_sym(bm_graph *g) {
  int s = bm_sym_declare(g, "h", 12);
  bm_node *x = IN("x", F16, 1, 4, BM_SYM(s), 10), *w = IN("w", F16, 6, 4, 3, 3);
  bm_output_add(g, "y", bm_conv2d(g, x, w, NULL, 1, 1, 1, 1, 1, 1, 1));
}

/* CONV2D as an implicit GEMM on the tensor cores (f16/bf16, Cg*KH*KW a
 * multiple of 8): 3x3 pad 1, stride 2, 1x1 with two M tiles, groups with
 * dilation, a symbolic height, several N and K tiles, bias + epilogues. */
static void b_conv_tc(bm_graph *g) {
  bm_node *x = IN("x", F16, 2, 16, 11, 9), *w = IN("w", F16, 24, 16, 3, 3), *b = IN("b", F16, 24);
  bm_output_add(g, "y3x3", bm_silu(g, bm_conv2d(g, x, w, b, 1, 1, 1, 1, 1, 1, 1)));
  bm_node *x1 = IN("x1", F16, 2, 32, 7, 5), *w1 = IN("w1", F16, 136, 32, 1, 1);
  bm_output_add(g, "y1x1", bm_conv2d(g, x1, w1, NULL, 1, 1, 0, 0, 1, 1, 1));
  bm_node *xg = bm_slice(g, x, 2, 0, 6, 1), *wg = bm_slice(g, bm_reshape(g, w, 4, (int64_t[]){48, 8, 3, 3}), 0, 0, 8, 1);
  bm_output_add(g, "grouped_dil", bm_conv2d(g, xg, wg, NULL, 1, 1, 2, 2, 2, 2, 2));
}
static void b_conv_tc_big(bm_graph *g) { /* 4 N tiles, 9 K tiles, residual */
  bm_node *xl = IN("xl", F16, 1, 32, 20, 20), *wl = IN("wl", F16, 40, 32, 3, 3);
  bm_node *r = IN("r", F16, 1, 40, 20, 20);
  bm_output_add(g, "big_res", bm_add(g, bm_conv2d(g, xl, wl, NULL, 1, 1, 1, 1, 1, 1, 1), r));
}
static void b_conv_tc_bf16_s2(bm_graph *g) {
  bm_node *x = IN("x", BF16, 1, 8, 13, 12), *w = IN("w", BF16, 20, 8, 3, 3), *b = IN("b", BF16, 20);
  bm_output_add(g, "y", bm_conv2d(g, x, w, b, 2, 2, 1, 1, 1, 1, 1));
}
static void b_conv_tc_sym(bm_graph *g) {
  int s = bm_sym_declare(g, "h", 12);
  bm_node *x = IN("x", F16, 1, 8, BM_SYM(s), 10), *w = IN("w", F16, 6, 8, 3, 3);
  bm_output_add(g, "y", bm_conv2d(g, x, w, NULL, 1, 1, 1, 1, 1, 1, 1));
}

/* CONV2D on the wgmma body (sm_90a; the mma.sync tile elsewhere): SD-like
 * channel counts on small images, spatial tails past the 128-wide N tile,
 * M tails past 128, K tails past the 64-deep step (K = 360), batch 2,
 * stride 2, 1x1, bias + SiLU + residual, f16 and bf16. */
static void b_conv_wg_f16_320(bm_graph *g) { /* 3x3 pad 1, 320 -> 320, 10x9, bias, SiLU, + residual */
  bm_node *x = IN("x", F16, 2, 320, 10, 9), *w = IN("w", F16, 320, 320, 3, 3), *b = IN("b", F16, 320);
  bm_node *r = IN("r", F16, 2, 320, 10, 9);
  bm_output_add(g, "y", bm_add(g, bm_silu(g, bm_conv2d(g, x, w, b, 1, 1, 1, 1, 1, 1, 1)), r));
}
static void b_conv_wg_bf16_s2(bm_graph *g) { /* 3x3 stride 2 pad 1, 64 -> 136, 17x15 -> 9x8 */
  bm_node *x = IN("x", BF16, 2, 64, 17, 15), *w = IN("w", BF16, 136, 64, 3, 3), *b = IN("b", BF16, 136);
  bm_output_add(g, "y", bm_conv2d(g, x, w, b, 2, 2, 1, 1, 1, 1, 1));
}
static void b_conv_wg_f16_1x1(bm_graph *g) { /* 1x1, 640 -> 200, 12x13 (two N tiles) */
  bm_node *x = IN("x", F16, 2, 640, 12, 13), *w = IN("w", F16, 200, 640, 1, 1);
  bm_output_add(g, "y", bm_conv2d(g, x, w, NULL, 1, 1, 0, 0, 1, 1, 1));
}
static void b_conv_wg_bf16_k360(bm_graph *g) { /* 3x3, 40 -> 72, 23x11 (N 253), K 360, bias, SiLU, + residual */
  bm_node *x = IN("x", BF16, 2, 40, 23, 11), *w = IN("w", BF16, 72, 40, 3, 3), *b = IN("b", BF16, 72);
  bm_node *r = IN("r", BF16, 2, 72, 23, 11);
  bm_output_add(g, "y", bm_add(g, bm_silu(g, bm_conv2d(g, x, w, b, 1, 1, 1, 1, 1, 1, 1)), r));
}

/* ---- conv: the NHWC conv on the TMA GEMM (passes/layout_conv.c, emit_gemm.c
 * ck_conv_nhwc_ok; owner: conv). Bound weights (reordered to (O, KH, KW, Cg)
 * at compile time) or an input w (a permute); OW 64, 32, 16, 8, 256, 512;
 * O past a 128-row tile and a cluster pair's second tile past O; positions
 * past OH*OW; bias, SiLU, residual; batch 2; dilation; f16 and bf16. */
static bm_node *cw_weight(bm_graph *g, bm_dtype t, int64_t o, int64_t c, int64_t kh, int64_t kw, uint64_t seed) {
  const int64_t n = o * c * kh * kw;
  void *d = bm_arena_alloc(g->module->arena, (size_t)n * 2);
  if (!d) return NULL;
  uint64_t st = seed;
  for (int64_t i = 0; i < n; i++) bm_store_f32(d, t, i, bm_test_rand_uniform(&st, -0.1f, 0.1f));
  char name[32];
  snprintf(name, sizeof name, "cw%llu", (unsigned long long)seed);
  return bm_weight(g, name, t, 4, (int64_t[]){o, c, kh, kw}, d, (size_t)n * 2);
}
static void cn_case(bm_graph *g, bm_dtype t, int64_t nb, int64_t c, int64_t h, int64_t w, int64_t o, int k, int pad,
                    int dil, bool bias, bool res, bool winput) {
  bm_node *x = IN("x", t, nb, c, h, w);
  bm_node *wt = winput ? IN("w", t, o, c, k, k) : cw_weight(g, t, o, c, k, k, 11 + (uint64_t)o);
  bm_node *b = bias ? IN("b", t, o) : NULL;
  bm_node *y = bm_conv2d(g, x, wt, b, 1, 1, pad, pad, dil, dil, 1);
  if (res) y = bm_add(g, bm_silu(g, y), IN("r", t, nb, o, h + 2 * pad - dil * (k - 1), w + 2 * pad - dil * (k - 1)));
  bm_output_add(g, "y", y);
}
static void b_cn_f16_ow64(bm_graph *g) { cn_case(g, F16, 2, 64, 8, 64, 128, 3, 1, 1, true, true, false); }
static void b_cn_bf16_ow32(bm_graph *g) { cn_case(g, BF16, 1, 128, 16, 32, 320, 3, 1, 1, true, false, false); }
static void b_cn_f16_ow16(bm_graph *g) { cn_case(g, F16, 2, 64, 24, 16, 320, 3, 1, 1, true, true, false); }
static void b_cn_bf16_ow8(bm_graph *g) { cn_case(g, BF16, 1, 64, 40, 8, 64, 3, 1, 1, false, false, false); }
static void b_cn_f16_ow256(bm_graph *g) { cn_case(g, F16, 1, 64, 2, 256, 64, 3, 1, 1, true, false, false); }
static void b_cn_f16_ow512(bm_graph *g) { cn_case(g, F16, 1, 64, 1, 512, 64, 3, 1, 1, false, false, false); }
static void b_cn_f16_1x1(bm_graph *g) { cn_case(g, F16, 2, 128, 16, 16, 200, 1, 0, 1, false, false, false); }
static void b_cn_bf16_dil2(bm_graph *g) { cn_case(g, BF16, 1, 64, 16, 16, 128, 3, 2, 2, true, true, false); }
static void b_cn_f16_winput(bm_graph *g) { cn_case(g, F16, 1, 64, 16, 16, 192, 3, 1, 1, true, false, true); }
/* stride 2 (owner: conv2; the NHWC form only with BM_CUDA_CONV_S2=1: the "_convs2" cases) */
static void cn_s2(bm_graph *g, bm_dtype t, int64_t nb, int64_t c, int64_t h, int64_t w, int64_t o, bool res) {
  bm_node *x = IN("x", t, nb, c, h, w);
  bm_node *y = bm_conv2d(g, x, cw_weight(g, t, o, c, 3, 3, 31 + (uint64_t)o), IN("b", t, o), 2, 2, 1, 1, 1, 1, 1);
  if (res) y = bm_add(g, bm_silu(g, y), IN("r", t, nb, o, (h - 1) / 2 + 1, (w - 1) / 2 + 1));
  bm_output_add(g, "y", y);
}
/* the SD downsampler's shape at 32x32 -> 16x16; O 256: clusters by default */
static void b_cn_s2_f16_ow16(bm_graph *g) { cn_s2(g, F16, 1, 64, 32, 32, 256, false); }
/* odd H and W (the last row's and column's taps past the image), OH*OW 384 (a tile past it), O 320, batch 2 */
static void b_cn_s2_bf16_ow16_res(bm_graph *g) { cn_s2(g, BF16, 2, 128, 47, 31, 320, true); }
/* OW 64 (a box of 128 x 8 input columns x rows), 512 positions: two tiles of 4 rows */
static void b_cn_s2_f16_ow64(bm_graph *g) { cn_s2(g, F16, 1, 64, 16, 128, 128, false); }
static void b_cn_transpose(bm_graph *g) { /* the NCHW -> NHWC transpose alone: tiles past C = 72 and H*W = 120 */
  bm_output_add(g, "y", bm_permute(g, IN("x", BF16, 2, 72, 5, 24), (int[]){0, 2, 3, 1}));
}

/* ---- mov: the movement kernels' vector copy, tiled transpose and 2x upsample
 * (codegen/clike/emit_movement.c), each beside its element-wise fallback */
/* permutes keeping the last dim: the attention head split/merge (16-byte vectors, batch
 * symbolic), 12-byte rows (4-byte vectors), f32 (16-byte), odd last dims (the fallback) */
static void b_mv_perm_keep(bm_graph *g) {
  int b = bm_sym_declare(g, "b", 3);
  bm_node *x = IN("x", F16, BM_SYM(b), 77, 8, 40);
  bm_node *h = bm_permute(g, x, (int[]){0, 2, 1, 3}); /* (b, 8, 77, 40) */
  bm_output_add(g, "heads", h);
  bm_output_add(g, "merge", bm_permute(g, bm_mul(g, h, bm_scalar(g, 2.0f)), (int[]){0, 2, 1, 3}));
  bm_node *y = IN("y", BF16, 3, 5, 7, 6);
  bm_output_add(g, "bf16_12b", bm_permute(g, y, (int[]){2, 0, 1, 3}));
  bm_node *z = IN("z", F32, 4, 6, 8);
  bm_output_add(g, "f32_16b", bm_permute(g, z, (int[]){1, 0, 2}));
  bm_node *o = IN("o", F16, 3, 5, 7);
  bm_output_add(g, "odd", bm_permute(g, o, (int[]){1, 0, 2}));
  bm_output_add(g, "f32_last", bm_permute(g, z, (int[]){0, 2, 1})); /* f32 moving the last dim: fallback */
}
/* permutes swapping two blocks of dims (the tiled transpose): (B, R, C) -> (B, C, R) with
 * tail tiles, NHWC -> NCHW, 2-D, batch symbolic; R or C not a multiple of 8: the fallback */
static void b_mv_transpose(bm_graph *g) {
  int b = bm_sym_declare(g, "b", 2);
  bm_node *x = IN("x", F16, BM_SYM(b), 72, 136);
  bm_output_add(g, "t3", bm_permute(g, x, (int[]){0, 2, 1}));
  bm_node *y = IN("y", BF16, 2, 5, 8, 16);
  bm_output_add(g, "nchw", bm_permute(g, y, (int[]){0, 3, 1, 2}));
  bm_output_add(g, "nhwc", bm_permute(g, y, (int[]){0, 2, 3, 1})); /* C 5: the fallback */
  bm_node *z = IN("z", F16, 48, 24);
  bm_output_add(g, "t2", bm_permute(g, z, (int[]){1, 0}));
  bm_node *w = IN("w", F16, 2, 3, 16, 8);
  bm_output_add(g, "batch2", bm_permute(g, w, (int[]){0, 1, 3, 2}));
  bm_output_add(g, "odd", bm_permute(g, IN("o", F16, 2, 12, 20), (int[]){0, 2, 1})); /* 12, 20: fallback */
}
/* slices along each axis: the GEGLU / q-k-v split (last dim, 16-byte vectors at an offset),
 * step 2 (the fallback), a negative begin of a symbolic dim, odd offsets (4-byte vectors or none) */
static void b_mv_slice(bm_graph *g) {
  int b = bm_sym_declare(g, "b", 3);
  bm_node *x = IN("x", F16, BM_SYM(b), 9, 48);
  bm_output_add(g, "last_hi", bm_slice(g, x, 2, 24, 48, 1));
  bm_output_add(g, "last_mid", bm_slice(g, x, 2, 8, 16, 1));
  bm_output_add(g, "last_odd", bm_slice(g, x, 2, 3, 9, 1));
  bm_output_add(g, "last_2", bm_slice(g, x, 2, 2, 8, 1)); /* 4-byte vectors */
  bm_output_add(g, "mid", bm_slice(g, x, 1, 2, 7, 1));
  bm_output_add(g, "mid_step2", bm_slice(g, x, 1, 1, 9, 2));
  bm_output_add(g, "first_neg", bm_slice(g, x, 0, -2, INT64_MAX, 1));
  bm_node *y = IN("y", F32, 2, 5, 12);
  bm_output_add(g, "f32", bm_slice(g, y, 2, 4, 12, 1));
  bm_output_add(g, "f32_odd", bm_slice(g, y, 2, 1, 12, 1));
}
/* ---- prefill: the LLM prefill's head split over a symbolic batch and sequence
 * (strided copies with symbolic strides), ROPE and KV_WRITE on 16-byte vectors,
 * each beside a case that keeps the fallback */
/* a fused q/k/v projection (b, s, 64) -> q (b, 2, s, 16), k, v (b, 1, s, 16) and the merge back */
static void b_pf_split(bm_graph *g) {
  int b = bm_sym_declare(g, "b", 2), s = bm_sym_declare(g, "seq", 9);
  bm_node *x = IN("x", BF16, BM_SYM(b), BM_SYM(s), 64);
  const int64_t part[3][2] = {{0, 32}, {32, 48}, {48, 64}};
  const char *names[3] = {"q", "k", "v"};
  for (int i = 0; i < 3; i++) {
    bm_node *sl = bm_slice(g, x, 2, part[i][0], part[i][1], 1);
    const int64_t h = (part[i][1] - part[i][0]) / 16;
    bm_node *r = bm_reshape(g, sl, 4, (int64_t[]){BM_SYM(b), BM_SYM(s), h, 16});
    bm_node *heads = bm_permute(g, r, (int[]){0, 2, 1, 3});
    bm_output_add(g, names[i], heads);
    if (i == 0) bm_output_add(g, "merge", bm_permute(g, bm_mul(g, heads, bm_scalar(g, 2.0f)), (int[]){0, 2, 1, 3}));
  }
  bm_node *y = IN("y", F16, BM_SYM(b), BM_SYM(s), 3, 24); /* f16, 3 heads of 24 */
  bm_output_add(g, "f16_odd", bm_permute(g, y, (int[]){0, 2, 1, 3}));
}
static void pf_rope(bm_graph *g, bm_dtype t, int64_t D, bool pos2) {
  int b = bm_sym_declare(g, "b", 2), s = bm_sym_declare(g, "seq", 11);
  bm_node *x = IN("x", t, BM_SYM(b), BM_SYM(s), 3, D);
  bm_node *pos = pos2 ? IN("pos", BM_DTYPE_I32, BM_SYM(b), BM_SYM(s)) : IN("pos", BM_DTYPE_I32, BM_SYM(s));
  float fr[16];
  for (int i = 0; i < 16; i++) fr[i] = powf(500000.0f, -(float)i / 16.0f);
  bm_node *f = bm_const(g, F32, 1, (int64_t[]){16}, fr);
  bm_output_add(g, "halves", bm_rope(g, x, pos, f, 0)); /* 16-byte vectors where D = 32 */
  bm_output_add(g, "pairs", bm_rope(g, x, pos, f, 1)); /* rope_mode 1: the element-wise kernel */
}
static void b_pf_rope_bf16(bm_graph *g) { pf_rope(g, BF16, 32, true); }
static void b_pf_rope_f16(bm_graph *g) { pf_rope(g, F16, 32, false); }
static void b_pf_rope_partial(bm_graph *g) { pf_rope(g, BF16, 48, true); } /* D > 2 * half: the fallback */
/* rows (b, 2, s, 32) into a (2, 2, 16, 32) cache at random starts (some past the cache) */
static void pf_kv(bm_graph *g, bm_dtype t) {
  int b = bm_sym_declare(g, "b", 2), s = bm_sym_declare(g, "seq", 5);
  bm_node *cache = bm_state(g, "kcache", t, 4, (int64_t[]){2, 2, 16, 32});
  bm_node *rows = IN("rows", t, BM_SYM(b), 2, BM_SYM(s), 32), *pos = IN("pos", BM_DTYPE_I32, BM_SYM(b));
  bm_node *kv = bm_kv_write(g, cache, rows, pos);
  bm_output_add(g, "kv", bm_mul(g, kv, bm_scalar(g, 1.0f)));
}
/* the TMA GEMM's store with the epilogue inputs prefetched (every one f16/bf16 of the output's
 * shape): the MLP's silu(x Wg^T) * (x Wu^T) and the residual add, columns past N (392), batches */
static void b_pf_glu_bf16(bm_graph *g) {
  int s = bm_sym_declare(g, "m", 512);
  bm_node *x = IN("x", BF16, BM_SYM(s), 512), *wg = IN("wg", BF16, 392, 512), *wu = IN("wu", BF16, 392, 512);
  bm_node *up = bm_matmul(g, x, wu, false, true);
  bm_output_add(g, "y", bm_mul(g, bm_silu(g, bm_matmul(g, x, wg, false, true)), up));
}
static void b_pf_res_f16(bm_graph *g) {
  bm_node *a = IN("a", F16, 384, 520), *b = IN("b", F16, 392, 520), *r = IN("r", F16, 384, 392);
  bm_output_add(g, "y", bm_add(g, bm_matmul(g, a, b, false, true), r));
}
static void b_pf_res_batch_bf16(bm_graph *g) {
  bm_node *a = IN("a", BF16, 2, 256, 136), *b = IN("b", BF16, 2, 200, 136), *r = IN("r", BF16, 2, 256, 200);
  bm_output_add(g, "y", bm_add(g, r, bm_matmul(g, a, b, false, true)));
}
static void b_pf_kv_bf16(bm_graph *g) { pf_kv(g, BF16); }
static void b_pf_kv_f32(bm_graph *g) { pf_kv(g, F32); }
/* ---- end prefill */
/* concats along each axis: the UNet's skip concat (channels of NCHW), axis 0 with a
 * symbolic batch, the last axis (the fallback), f32 with odd inner runs (the fallback) */
static void b_mv_concat(bm_graph *g) {
  int b = bm_sym_declare(g, "b", 3);
  bm_node *x = IN("x", F16, BM_SYM(b), 6, 5, 8), *y = IN("y", F16, BM_SYM(b), 3, 5, 8);
  bm_output_add(g, "ch", bm_concat(g, 2, (bm_node *[]){x, y}, 1));
  bm_output_add(g, "ch3", bm_concat(g, 3, (bm_node *[]){y, x, y}, 1));
  bm_output_add(g, "h", bm_concat(g, 2, (bm_node *[]){x, bm_mul(g, x, bm_scalar(g, 2.0f))}, 2));
  bm_output_add(g, "w", bm_concat(g, 2, (bm_node *[]){x, x}, 3));
  bm_output_add(g, "batch", bm_concat(g, 2, (bm_node *[]){x, x}, 0));
  bm_node *p = IN("p", BF16, 2, 3, 4), *q = IN("q", BF16, 2, 5, 4);
  bm_output_add(g, "bf16_8b", bm_concat(g, 2, (bm_node *[]){p, q}, 1));
  bm_node *u = IN("u", F32, 2, 3, 5), *v = IN("v", F32, 2, 4, 5);
  bm_output_add(g, "f32_odd", bm_concat(g, 2, (bm_node *[]){u, v}, 1));
}
/* 2x nearest upsample: 16-bit with W a multiple of 4 (the vector path), odd H, batch
 * symbolic; W 6 (the fallback) */
static void b_mv_upsample(bm_graph *g) {
  int b = bm_sym_declare(g, "b", 3);
  bm_output_add(g, "f16", bm_upsample_nearest(g, IN("x", F16, BM_SYM(b), 3, 5, 12), 2));
  bm_output_add(g, "bf16", bm_upsample_nearest(g, IN("y", BF16, 1, 2, 3, 8), 2));
  bm_output_add(g, "w6", bm_upsample_nearest(g, IN("z", F16, 1, 2, 3, 6), 2));
}
/* ---- end mov */

typedef struct at_cfg {
  int D, Dv, hq, hkv, sq, sk;
  bool causal, mask;
  int window;
  float softcap;
  bm_dtype dt;
} at_cfg;
static at_cfg at;

static void b_attention(bm_graph *g) {
  bm_node *q = IN("q", at.dt, 2, at.hq, at.sq, at.D), *k = IN("k", at.dt, 2, at.hkv, at.sk, at.D);
  bm_node *v = IN("v", at.dt, 2, at.hkv, at.sk, at.Dv);
  bm_node *mask = at.mask ? IN("mask", F32, 1, at.sq, at.sk) : NULL;
  bm_output_add(g, "o", bm_attention(g, q, k, v, mask, 0.0f, at.causal, at.window, at.softcap));
}
static void b_at_plain(bm_graph *g) { at = (at_cfg){64, 64, 4, 4, 37, 53, false, false, 0, 0, F32}; b_attention(g); }
static void b_at_causal_gqa(bm_graph *g) { at = (at_cfg){128, 128, 8, 2, 45, 45, true, false, 0, 0, F16}; b_attention(g); }
static void b_at_window_cap(bm_graph *g) { at = (at_cfg){80, 80, 2, 1, 20, 70, true, true, 16, 30.0f, BF16}; b_attention(g); }
static void b_at_d256(bm_graph *g) { at = (at_cfg){256, 256, 2, 2, 9, 40, false, true, 0, 0, F32}; b_attention(g); }
static void b_at_d96(bm_graph *g) { at = (at_cfg){96, 64, 3, 3, 1, 33, true, false, 0, 0, F32}; b_attention(g); }
/* the SD VAE's mid-block attention: one head of 512 channels (dynamic shared memory) */
static void b_at_d512(bm_graph *g) { at = (at_cfg){512, 512, 2, 2, 70, 70, false, false, 0, 0, F32}; b_attention(g); }
/* the same in f16 / bf16 (head dims above 256): passes/lower_attention.c makes it Q K^T (f32 scores from the
 * GEMM's cast epilogue), softmax, P rounded, P V on the GEMMs: the tensor-core kernels' error model */
static void b_at_d512_f16(bm_graph *g) { at = (at_cfg){512, 512, 1, 1, 300, 300, false, false, 0, 0, F16}; b_attention(g); }
static void b_at_d320_bf16(bm_graph *g) { at = (at_cfg){320, 320, 2, 2, 130, 200, false, false, 0, 0, BF16}; b_attention(g); }

/* Tensor-core (f16/bf16, Sq > 16) and decode (Sq <= 16, split keys) attention.
 * Derived tolerances, relative to max|ref| (opcheck's metric), inputs in
 * [-1, 1] (exact in both the interpreter and the kernel):
 * - the tensor-core kernel rounds P (in [0, 1]) to the input dtype before
 *   P V: |err| <= u * sum_j p_j |v_j| / l <= u max|v| = u (u = 2^-11 for
 *   f16, 2^-8 for bf16); both sides then round the output to its dtype: at
 *   most one more ulp, 2u' max|ref| (u' of the output dtype); f32
 *   accumulation and exp2f vs expf add < 1e-5. So tol = u / rho + 2u' + 1e-5
 *   where rho is a lower bound of max|ref| for the case (measured with the
 *   interpreter on these inputs, seed 77; the values are given per case);
 *   the tensor-core cases here run with Sq > 16, the decode ones with Sq <= 16;
 * - the decode kernel does f32 math throughout: tol = 2u' + 1e-5 (f32 output:
 *   the f32 cases' 2e-5). */
#define TOL_TC_F16(rho) (0x1p-11 / (rho) + 0x1p-10 + 1e-5)
#define TOL_TC_BF16(rho) (0x1p-8 / (rho) + 0x1p-7 + 1e-5)
/* - the lowered form of head dims above 256 (passes/lower_attention.c) also
 *   rounds the scores Q K^T to the input dtype before the f32 softmax (a
 *   relative error of u |s| in each p, |s| = the scaled score: at most smax,
 *   measured on these inputs as rho is, 1.45 and 1.43 for the two cases):
 *   tol = (1 + smax) u / rho + 2u' + 1e-5 */
#define TOL_LOW_F16(rho, smax) ((1.0 + (smax)) * 0x1p-11 / (rho) + 0x1p-10 + 1e-5)
#define TOL_LOW_BF16(rho, smax) ((1.0 + (smax)) * 0x1p-8 / (rho) + 0x1p-7 + 1e-5)
#define TOL_DEC_F16 (0x1p-10 + 1e-5)
#define TOL_DEC_BF16 (0x1p-7 + 1e-5)
static void b_at_tc_d64_f16(bm_graph *g) { at = (at_cfg){64, 64, 4, 4, 200, 200, false, false, 0, 0, F16}; b_attention(g); }
static void b_at_tc_d80_gqa_bf16(bm_graph *g) { at = (at_cfg){80, 80, 6, 2, 77, 130, true, false, 0, 0, BF16}; b_attention(g); }
static void b_at_tc_d96_window_f16(bm_graph *g) { at = (at_cfg){96, 64, 2, 1, 300, 300, true, false, 40, 0, F16}; b_attention(g); }
static void b_at_tc_d128_mask_cap_bf16(bm_graph *g) { at = (at_cfg){128, 128, 2, 2, 70, 150, false, true, 0, 20.0f, BF16}; b_attention(g); }
static void b_at_tc_d256_causal_f16(bm_graph *g) { at = (at_cfg){256, 256, 2, 2, 100, 100, true, false, 0, 0, F16}; b_attention(g); }
static void b_at_tc_d128_long_f16(bm_graph *g) { at = (at_cfg){128, 128, 4, 2, 600, 600, true, false, 0, 0, F16}; b_attention(g); }
/* ---- attnl2 (the causal head groups of the dynamic tile scheduler, wa_cfg.dyn 3):
 * 10 KV heads (2 x 5, GQA 2) of 260 keys at head dim 128: with BM_CUDA_ATTN_L2=500000
 * groups of 3 KV heads, the last one of 1 (on a grid of a few blocks) */
static void b_at_tc_d128_groups_f16(bm_graph *g) {
  at = (at_cfg){128, 128, 10, 5, 260, 260, true, false, 0, 0, F16};
  b_attention(g);
}
/* ---- end attnl2 */
/* ---- attnexp (exponentials on the FMA pipe, emit_attention.c wa_exp): "attn_exp_" cases
 * compile with every exponential of the softmax from bm_ex2_poly (BM_CUDA_ATTN_EXP=1/1) and
 * the stale-max rescaling (BM_CUDA_ATTN_RESCALE=8). Scales above 1/sqrt(D) make the rows
 * peaky (max|ref| near 1: the tightest tolerances) and their maxima grow by more than 8
 * (log2) after the first tile in some rows and less in others: both paths of the rescale. */
static void at_exp(bm_graph *g, int D, int hq, int hkv, int sq, int sk, bool causal, float scale, bm_dtype t) {
  bm_node *q = IN("q", t, 2, hq, sq, D), *k = IN("k", t, 2, hkv, sk, D), *v = IN("v", t, 2, hkv, sk, D);
  bm_output_add(g, "o", bm_attention(g, q, k, v, NULL, scale, causal, 0, 0.0f));
}
static void b_at_exp_d64_f16(bm_graph *g) { at_exp(g, 64, 4, 4, 300, 300, false, 2.0f, F16); }
static void b_at_exp_d64_causal_bf16(bm_graph *g) { at_exp(g, 64, 4, 2, 300, 300, true, 2.0f, BF16); }
static void b_at_exp_d128_causal_f16(bm_graph *g) { at_exp(g, 128, 4, 2, 200, 330, true, 1.5f, F16); }
static void b_at_exp_d128_bf16(bm_graph *g) { at_exp(g, 128, 2, 2, 150, 400, false, 0.0f, BF16); }
/* ---- end attnexp */
/* ---- attn3wg (three consumer warpgroups, 192 query rows a block: w3n*): ragged last
 * tiles (450 rows: its second warpgroup holds 2 rows, the third none; 330 rows over 520
 * keys, causal: a diagonal tile split across the warpgroups) */
static void b_at_w3_d64_ragged_f16(bm_graph *g) { at = (at_cfg){64, 64, 6, 2, 450, 450, false, false, 0, 0, F16}; b_attention(g); }
static void b_at_w3_d64_causal_bf16(bm_graph *g) { at = (at_cfg){64, 64, 4, 4, 330, 520, true, false, 0, 0, BF16}; b_attention(g); }
/* ---- end attn3wg */
/* ---- attnstore (the staged O store: O through the warpgroup's Q buffer and TMA tensor stores,
 * emit_attention.c wa_store): query lengths of whole 64-row tiles over 8 (batch, head) pairs
 * (every tile by TMA; a tile past its head's end would write the next head's rows), the
 * plain and causal defaults at head dims 64 and 128 (w3n128tmaqg_pp, w2n128tmaqd_pp,
 * w2n128tmaqg_pp), the single Q buffer (_tma1: w2n128tma_pp), and a fused residual add over
 * 200 rows (the node's epilogue before the staging; the last tile from registers) */
static void b_at_ost_res_f16(bm_graph *g) {
  bm_node *q = IN("q", F16, 2, 4, 200, 128), *k = IN("k", F16, 2, 2, 200, 128), *v = IN("v", F16, 2, 2, 200, 128);
  bm_node *r = IN("r", F16, 2, 4, 200, 128);
  bm_output_add(g, "o", bm_add(g, bm_attention(g, q, k, v, NULL, 0.0f, true, 0, 0.0f), r));
}
static void b_at_ost_d128_f16(bm_graph *g) { at_exp(g, 128, 4, 2, 256, 320, false, 2.0f, F16); }
static void b_at_ost_d128_causal_f16(bm_graph *g) { at_exp(g, 128, 4, 2, 256, 256, true, 0.0f, F16); }
static void b_at_ost_d64_causal_bf16(bm_graph *g) { at_exp(g, 64, 4, 4, 384, 384, true, 0.0f, BF16); }
/* ---- end attnstore */
/* ---- attnx (cross-task pipelining, emit_attention.c wa_xtask_end: a task's last P V with the next
 * task's S_0): tasks of different key counts in a row (on a grid of 2 blocks, BM_CUDA_TMA_GRID=2, a
 * block runs many): d128 kv_len 130 * (len - 1) = 0 and 260 (the batch of length 0: tasks without a
 * key tile, rows of zeros), 3 query tiles of 128 (the last one's second warpgroup empty); d128 causal,
 * 450 rows over 700 keys (3..6 key tiles a task, the last tile's second warpgroup 2 rows); "_xt0" the
 * previous loop (BM_CUDA_ATTN_XTASK=0) */
static void b_at_xt_d128_kvlen0_bf16(bm_graph *g) {
  bm_node *q = IN("q", BF16, 2, 4, 300, 128), *kc = IN("kc", BF16, 2, 2, 512, 128), *vc = IN("vc", BF16, 2, 2, 512, 128);
  bm_node *len = IN("len", BM_DTYPE_I32, 2);
  bm_node *lenp = bm_cast(g, bm_mul(g, bm_sub(g, bm_cast(g, len, F32), bm_scalar(g, 1.0f)), bm_scalar(g, 130.0f)),
                          BM_DTYPE_I32);
  bm_output_add(g, "o", bm_attention_kv(g, q, kc, vc, NULL, lenp, 0.0f, false, 0, 0.0f));
}
static void b_at_xt_d128_causal_f16(bm_graph *g) { at = (at_cfg){128, 128, 6, 2, 450, 700, true, false, 0, 0, F16}; b_attention(g); }
/* ---- end attnx */
/* symbolic Sq = Sk (self-attention), causal, bound below the max */
static void b_at_tc_sym_bf16(bm_graph *g) {
  int s = bm_sym_declare(g, "seq", 300);
  bm_node *q = IN("q", BF16, 2, 4, BM_SYM(s), 64), *k = IN("k", BF16, 2, 2, BM_SYM(s), 64);
  bm_node *v = IN("v", BF16, 2, 2, BM_SYM(s), 64);
  bm_output_add(g, "o", bm_attention(g, q, k, v, NULL, 0.0f, true, 0, 0.0f));
}
/* kv_len over a cache (Sq = 40 prefill chunk, lengths 40 + 50 * [0, 4)), with
 * an f32 output cast fused as the epilogue */
static void b_at_tc_kvlen_f16(bm_graph *g) {
  bm_node *q = IN("q", F16, 2, 4, 40, 64), *kc = IN("kc", F16, 3, 2, 256, 64), *vc = IN("vc", F16, 3, 2, 256, 64);
  bm_node *len = IN("len", BM_DTYPE_I32, 2);
  bm_node *lenp = bm_cast(g, bm_add(g, bm_mul(g, bm_cast(g, len, F32), bm_scalar(g, 50.0f)), bm_scalar(g, 40.0f)),
                          BM_DTYPE_I32);
  bm_output_add(g, "o", bm_cast(g, bm_attention_kv(g, q, kc, vc, NULL, lenp, 0.0f, true, 0, 0.0f), F32));
}
/* decode: Sq query rows over a cache of L keys, lengths base + step * [0, 4) */
typedef struct dec_at {
  int hq, hkv, sq, L, D, window;
  bool mask;
  float softcap, base, step;
  bm_dtype dt;
} dec_at;
static dec_at dat;
static void b_dec(bm_graph *g) {
  bm_node *q = IN("q", dat.dt, 2, dat.hq, dat.sq, dat.D), *kc = IN("kc", dat.dt, 2, dat.hkv, dat.L, dat.D);
  bm_node *vc = IN("vc", dat.dt, 2, dat.hkv, dat.L, dat.D), *len = IN("len", BM_DTYPE_I32, 2);
  bm_node *mask = dat.mask ? IN("mask", F32, 2, 1, dat.sq, dat.L) : NULL;
  bm_node *lenp = bm_cast(
      g, bm_add(g, bm_mul(g, bm_cast(g, len, F32), bm_scalar(g, dat.step)), bm_scalar(g, dat.base)), BM_DTYPE_I32);
  bm_output_add(g, "o", bm_attention_kv(g, q, kc, vc, mask, lenp, 0.0f, true, dat.window, dat.softcap));
}
static void b_dec_f16_gqa(bm_graph *g) { dat = (dec_at){8, 2, 1, 2048, 128, 0, false, 0, 700, 400, F16}; b_dec(g); }
static void b_dec_bf16_window_cap(bm_graph *g) { dat = (dec_at){4, 4, 4, 1500, 64, 300, false, 25.0f, 900, 150, BF16}; b_dec(g); }
static void b_dec_f32_mask(bm_graph *g) { dat = (dec_at){16, 2, 2, 1000, 80, 0, true, 0, 200, 250, F32}; b_dec(g); }
static void b_dec_f16_rowgroups(bm_graph *g) { dat = (dec_at){32, 4, 3, 700, 256, 0, false, 0, 3, 200, F16}; b_dec(g); }
/* decode without kv_len, symbolic Sk (a growing context), not causal */
static void b_dec_sym_bf16(bm_graph *g) {
  int s = bm_sym_declare(g, "ctx", 2000);
  bm_node *q = IN("q", BF16, 1, 8, 2, 128), *k = IN("k", BF16, 1, 8, BM_SYM(s), 128);
  bm_node *v = IN("v", BF16, 1, 8, BM_SYM(s), 128);
  bm_output_add(g, "o", bm_attention(g, q, k, v, NULL, 0.0f, false, 0, 0.0f));
}

/* ---- attndec: the streaming decode kernel (emit_attention.c emit_attention_decode_stream: f16/bf16
 * K/V, D = Dv a power of two, at most 8 rows a kv head): MHA and GQA, kv_len with causal rows, a window,
 * a mask, soft-capping, d64/d128/d256; 5 live keys of 2048 (one live split of 64) and kv_len 0 */
static void b_dec2_mha_f16_d128(bm_graph *g) { dat = (dec_at){2, 2, 1, 1200, 128, 0, false, 0, 300, 300, F16}; b_dec(g); }
static void b_dec2_gqa8_bf16_d128(bm_graph *g) { dat = (dec_at){16, 2, 1, 2500, 128, 0, false, 0, 300, 700, BF16}; b_dec(g); }
static void b_dec2_gqa4_sq2_f16_d64_win(bm_graph *g) { dat = (dec_at){8, 2, 2, 2000, 64, 300, false, 0, 600, 450, F16}; b_dec(g); }
static void b_dec2_sq4_bf16_d64_mask(bm_graph *g) { dat = (dec_at){4, 4, 4, 1200, 64, 0, true, 0, 100, 350, BF16}; b_dec(g); }
static void b_dec2_llama_short_f16(bm_graph *g) { dat = (dec_at){8, 2, 1, 2048, 128, 0, false, 0, 5, 0, F16}; b_dec(g); }
static void b_dec2_len0_f16(bm_graph *g) { dat = (dec_at){4, 2, 1, 512, 128, 0, false, 0, 0, 0, F16}; b_dec(g); }
static void b_dec2_d256_cap_bf16(bm_graph *g) { dat = (dec_at){4, 2, 1, 700, 256, 0, false, 30.0f, 200, 150, BF16}; b_dec(g); }
/* ---- attndec2: the reduce-scatter of the streaming kernel (dec_rs_*: 2, 4 or 8 rows a kv head, D >= 16):
 * every lane count a key (D 16..256), one or several owned scores a lane, copies (D 256 at 4 rows, d128 at
 * 2), GQA 2/4/8 and Sq 2, kv_len, a window, a mask, soft-capping */
static void b_dec3_gqa2_f16_d128(bm_graph *g) { dat = (dec_at){4, 2, 1, 1800, 128, 0, false, 0, 300, 500, F16}; b_dec(g); }
static void b_dec3_gqa2_bf16_d64_win(bm_graph *g) { dat = (dec_at){8, 4, 1, 1000, 64, 200, false, 0, 250, 250, BF16}; b_dec(g); }
static void b_dec3_gqa4_bf16_d32_mask(bm_graph *g) { dat = (dec_at){8, 2, 1, 900, 32, 0, true, 0, 100, 260, BF16}; b_dec(g); }
static void b_dec3_gqa4_f16_d16_cap(bm_graph *g) { dat = (dec_at){8, 2, 1, 600, 16, 0, false, 20.0f, 50, 180, F16}; b_dec(g); }
static void b_dec3_gqa8_f16_d64_win_cap(bm_graph *g) { dat = (dec_at){16, 2, 1, 1500, 64, 400, false, 30.0f, 500, 300, F16}; b_dec(g); }
static void b_dec3_gqa4_bf16_d256(bm_graph *g) { dat = (dec_at){8, 2, 1, 800, 256, 0, false, 0, 150, 200, BF16}; b_dec(g); }
static void b_dec3_gqa2_sq2_bf16_d128(bm_graph *g) { dat = (dec_at){4, 2, 2, 1300, 128, 0, false, 0, 2, 400, BF16}; b_dec(g); }
/* ---- end attndec */

static void b_kv(bm_graph *g) {
  bm_node *cache = bm_state(g, "kcache", F16, 4, (int64_t[]){2, 2, 16, 32});
  bm_node *rows = IN("rows", F32, 2, 2, 3, 32), *pos = IN("pos", BM_DTYPE_I32, 2);
  bm_node *kv = bm_kv_write(g, cache, rows, pos);
  bm_node *q = IN("q", F16, 2, 4, 3, 32), *len = IN("len", BM_DTYPE_I32, 2);
  bm_node *lenp = bm_cast(g, bm_add(g, bm_cast(g, len, F32), bm_scalar(g, 3.0f)), BM_DTYPE_I32);
  bm_output_add(g, "o", bm_attention_kv(g, q, kv, kv, NULL, lenp, 0.0f, true, 0, 0.0f));
}

static void b_topk(bm_graph *g) {
  bm_node *x = IN("x", F32, 3, 1000);
  bm_node *r = bm_cast(g, bm_cast(g, bm_mul(g, x, bm_scalar(g, 4.0f)), BM_DTYPE_I32), F32); /* many ties */
  bm_output_add(g, "t5", bm_topk_mask(g, r, 5, -100.0f));
  bm_output_add(g, "t50", bm_topk_mask(g, x, 50, 0.0f));
  bm_output_add(g, "all", bm_topk_mask(g, x, 2000, 0.0f));
}

static void b_moe(bm_graph *g) {
  bm_node *x = IN("x", F32, 5, 24), *gates = IN("gates", F32, 5, 4);
  bm_node *gm = bm_mul(g, gates, bm_cast(g, bm_cast(g, bm_mul(g, gates, bm_scalar(g, 2.0f)), BM_DTYPE_I32), F32));
  bm_node *wg = IN("wg", F32, 4, 16, 24), *wu = IN("wu", F32, 4, 16, 24), *wd = IN("wd", F32, 4, 24, 16);
  bm_output_add(g, "y", bm_moe(g, x, gm, wg, wu, wd, BM_OP_SILU));
}

/* ---- decode2 (fuse_horizontal): q/k/v slice views and the gate/up GLU */

/* Bound weights (the pass fuses only WEIGHTs with data): random values in
 * [-0.2, 0.2), stored bf16 or f32 in static arrays that outlive the compile. */
enum { HF_K = 256, HF_HD = 64, HF_H = 4, HF_KV = 2, HF_F = 200 };
static uint16_t hf_w16[4][HF_H * HF_HD * HF_K];
static float hf_w32[4][HF_H * HF_HD * HF_K], hf_nw[2][HF_HD];
static bm_node *hf_weight2(bm_graph *g, const char *name, bm_dtype t, int slot, int64_t n, int64_t kk) {
  uint64_t st = 1000 + (uint64_t)slot;
  for (int64_t i = 0; i < n * kk; i++) {
    float v = bm_test_rand_uniform(&st, -0.2f, 0.2f);
    hf_w16[slot][i] = bm_f32_to_bf16(v);
    hf_w32[slot][i] = v;
  }
  int64_t shp[2] = {n, kk};
  bool b = t == BF16;
  return bm_weight(g, name, t, 2, shp, b ? (void *)hf_w16[slot] : (void *)hf_w32[slot], (size_t)(n * kk) * (b ? 2 : 4));
}
static bm_node *hf_weight(bm_graph *g, const char *name, bm_dtype t, int slot, int64_t n) {
  return hf_weight2(g, name, t, slot, n, HF_K);
}

/* A decode step of one attention block at batch 1 (the q/k/v parts are
 * views at byte offsets 0, 256*es, 384*es of the fused projection):
 * q/k (optionally rms_norm'ed per head, Qwen3) roped, k and v written to
 * caches of 16 positions, attention over them. */
static float hf_gamma[1024];
/* an rms_norm of x with weights 0.5..1.5 (folded into the next GEMV: RMS_MATMUL) */
static bm_node *hf_prenorm(bm_graph *g, bm_node *x, int64_t kk) {
  for (int64_t i = 0; i < kk; i++) hf_gamma[i] = 0.5f + (float)(i % 97) / 97.0f;
  bm_node *w = bm_weight(g, "pre_norm", F32, 1, (int64_t[]){kk}, hf_gamma, sizeof(float) * (size_t)kk);
  return bm_rms_norm(g, x, w, 1e-5f);
}
static bool hf_pre; /* the cases below with an rms_norm before the projections */

static void b_hf_qkv(bm_graph *g, bm_dtype at, bm_dtype wt, bool qk_norm) {
  int b = bm_sym_declare(g, "batch", 1);
  bm_node *x = IN("x", at, BM_SYM(b), 1, HF_K), *start = IN("start", BM_DTYPE_I32, BM_SYM(b));
  if (hf_pre) x = hf_prenorm(g, x, HF_K);
  float fr[HF_HD / 2];
  for (int i = 0; i < HF_HD / 2; i++) fr[i] = powf(10000.0f, -(float)i / (HF_HD / 2));
  bm_node *f = bm_const(g, F32, 1, (int64_t[]){HF_HD / 2}, fr);
  bm_node *q = bm_linear(g, x, hf_weight(g, "q.weight", wt, 0, HF_H * HF_HD), NULL);
  bm_node *k = bm_linear(g, x, hf_weight(g, "k.weight", wt, 1, HF_KV * HF_HD), NULL);
  bm_node *v = bm_linear(g, x, hf_weight(g, "v.weight", wt, 2, HF_KV * HF_HD), NULL);
  q = bm_reshape(g, q, 4, (int64_t[]){BM_SYM(b), 1, HF_H, HF_HD});
  k = bm_reshape(g, k, 4, (int64_t[]){BM_SYM(b), 1, HF_KV, HF_HD});
  v = bm_reshape(g, v, 4, (int64_t[]){BM_SYM(b), 1, HF_KV, HF_HD});
  if (qk_norm) {
    for (int i = 0; i < HF_HD; i++) hf_nw[0][i] = 1.0f + 0.01f * (float)i, hf_nw[1][i] = 1.5f - 0.01f * (float)i;
    bm_node *nq = bm_weight(g, "q_norm", F32, 1, (int64_t[]){HF_HD}, hf_nw[0], sizeof hf_nw[0]);
    bm_node *nk = bm_weight(g, "k_norm", F32, 1, (int64_t[]){HF_HD}, hf_nw[1], sizeof hf_nw[1]);
    q = bm_rms_norm(g, q, nq, 1e-6f);
    k = bm_rms_norm(g, k, nk, 1e-6f);
  }
  int32_t perm[4] = {0, 2, 1, 3};
  bm_node *pos = bm_reshape(g, start, 2, (int64_t[]){BM_SYM(b), 1}); /* (B, S) */
  q = bm_permute(g, bm_rope(g, q, pos, f, 0), perm); /* (B, H, 1, hd) */
  k = bm_permute(g, bm_rope(g, k, pos, f, 0), perm);
  v = bm_permute(g, v, perm);
  bm_node *kc = bm_kv_write(g, bm_state(g, "kc", at, 4, (int64_t[]){1, HF_KV, 16, HF_HD}), k, start);
  bm_node *vc = bm_kv_write(g, bm_state(g, "vc", at, 4, (int64_t[]){1, HF_KV, 16, HF_HD}), v, start);
  bm_node *len = bm_cast(g, bm_add(g, bm_cast(g, start, F32), bm_scalar(g, 1.0f)), BM_DTYPE_I32);
  bm_output_add(g, "q", q);
  bm_output_add(g, "o", bm_attention_kv(g, q, kc, vc, NULL, len, 0.0f, true, 0, 0.0f));
}
static void b_hf_qkv_f32xbf16(bm_graph *g) { hf_pre = false; b_hf_qkv(g, F32, BF16, false); }
static void b_hf_qkv_bf16_norm(bm_graph *g) { hf_pre = false; b_hf_qkv(g, BF16, BF16, true); }
static void b_hf_rms_qkv_f32xbf16(bm_graph *g) { hf_pre = true; b_hf_qkv(g, F32, BF16, false); }
static void b_hf_rms_qkv_bf16(bm_graph *g) { hf_pre = true; b_hf_qkv(g, BF16, BF16, false); }

/* A gated MLP at <= 4 rows (GLU_MAX_ROWS): act(x Wg^T) * (x Wu^T) -> one MATMUL_GLU, then
 * the down projection with a residual. */
static bm_op hf_act;
static int64_t hf_k = HF_K;
static void b_hf_glu(bm_graph *g, bm_dtype at, bm_dtype wt, int64_t rows, bool sym) {
  int s = sym ? bm_sym_declare(g, "m", rows) : -1;
  bm_node *x = sym ? IN("x", at, BM_SYM(s), hf_k) : IN("x", at, rows, hf_k);
  bm_node *xn = hf_pre ? hf_prenorm(g, x, hf_k) : x;
  bm_node *gt = bm_linear(g, xn, hf_weight2(g, "gate.weight", wt, 0, HF_F, hf_k), NULL);
  bm_node *up = bm_linear(g, xn, hf_weight2(g, "up.weight", wt, 1, HF_F, hf_k), NULL);
  bm_node *h = bm_mul(g, bm_unary(g, hf_act, gt), up); /* (m, F) */
  bm_output_add(g, "h", h);
  bm_node *wd = hf_weight2(g, "down.weight", wt, 2, hf_k, HF_F);
  bm_output_add(g, "y", bm_add(g, bm_linear(g, h, wd, NULL), x));
  hf_pre = false, hf_k = HF_K;
}
static void b_hf_glu_f32xbf16_m1(bm_graph *g) { hf_act = BM_OP_SILU; b_hf_glu(g, F32, BF16, 1, false); }
static void b_hf_glu_bf16_m2_gelu(bm_graph *g) { hf_act = BM_OP_GELU_TANH; b_hf_glu(g, BF16, BF16, 2, false); }
static void b_hf_glu_f32_sym(bm_graph *g) { hf_act = BM_OP_SILU; b_hf_glu(g, F32, F32, 4, true); }
static void b_hf_glu_f32xbf16_m100(bm_graph *g) { hf_act = BM_OP_SILU; b_hf_glu(g, F32, BF16, 100, false); } /* not fused */
static void b_hf_rms_glu_bf16_m1(bm_graph *g) { hf_act = BM_OP_SILU, hf_pre = true; b_hf_glu(g, BF16, BF16, 1, false); }
static void b_hf_rms_glu_f32xbf16_m3(bm_graph *g) { hf_act = BM_OP_GELU_TANH, hf_pre = true; b_hf_glu(g, F32, BF16, 3, false); }
/* K = 102: element loads (no 16-byte chunks) */
static void b_hf_rms_glu_f32_k102(bm_graph *g) { hf_act = BM_OP_SILU, hf_pre = true, hf_k = 102; b_hf_glu(g, F32, F32, 2, false); }

/* The pipeline for CUDA makes the views and the MATMUL_GLU (and not the
 * GLU above 4 rows); BM_NO_GLU=1 keeps the two GEMVs. */
static void test_hfuse_pipeline(void) {
  if (export_dir) return;
  struct { build_fn f; int glu, views; } t[] = {
      {b_hf_qkv_f32xbf16, 0, 2}, {b_hf_qkv_bf16_norm, 0, 2}, {b_hf_glu_f32xbf16_m1, 1, 0},
      {b_hf_glu_bf16_m2_gelu, 1, 0}, {b_hf_glu_f32_sym, 1, 0}, {b_hf_glu_f32xbf16_m100, 0, 0},
      {b_hf_rms_qkv_f32xbf16, 0, 2}, {b_hf_rms_glu_bf16_m1, 0, 0}};
  static const int rms[] = {0, 0, 0, 0, 0, 0, 1, 1}; /* RMS_MATMULs made */
  for (int i = 0; i < (int)(sizeof t / sizeof t[0]); i++) {
    for (int off = 0; off < 2; off++) {
      if (off) setenv("BM_NO_GLU", "1", 1);
      bm_module *m = bm_module_create("hf");
      bm_graph *g = bm_graph_create(m, "main");
      t[i].f(g);
      bm_pass_options po = {0};
      po.supports = bm_clike_supports;
      CHECK_OK(bm_pipeline_run(g, &po));
      int glu = 0, views = 0, nrm = 0;
      for (int j = 0; j < g->nnodes; j++) {
        const bm_node *n = g->nodes[j];
        glu += n->op == BM_OP_MATMUL_GLU;
        nrm += n->op == BM_OP_RMS_MATMUL && (n->nin == 4) == (i == 7 && !off);
        views += n->op == BM_OP_SLICE && n->storage == BM_STORAGE_ALIAS && n->view_offset > 0;
      }
      CHECK_MSG(glu == (off ? 0 : t[i].glu), "case %d (BM_NO_GLU %d): %d matmul_glu", i, off, glu);
      CHECK_MSG(views >= t[i].views, "case %d: %d slice views at non-zero offsets, expected %d", i, views, t[i].views);
      CHECK_MSG(nrm == (i == 7 && off ? 0 : rms[i]), "case %d (BM_NO_GLU %d): %d rms_matmul", i, off, nrm);
      bm_module_destroy(m);
      unsetenv("BM_NO_GLU");
    }
  }
}
/* ---- end decode2 */

/* ---- quantized weights with many rows (owner: qgemm): matmul(x, dequant(q, s), trans_b)
 * through the pipeline: above the GEMV / small-M rows (ck_qmatmul_keep) with f16/bf16 x,
 * fuse_dequant leaves DEQUANT (to x's dtype, the 16-byte-chunk kernel) + the TMA wgmma
 * GEMM; int8 per channel and in groups of 32, int4 in groups of 32 and 128; 65, 128, 300,
 * 777 rows; symbolic rows (max 2048) run at 5 and 300; the bias + residual epilogue. The
 * interpreter dequantizes to f32: the rounding of the weight to f16/bf16 is within the
 * dtype's tolerance. And the GLU rows that now follow the emitter's GEMV rule (f32
 * weights: up to 16 rows). */
typedef struct qg_cfg {
  bm_dtype at, qt;
  int64_t rows, n, k, groups; /* rows: static, or the symbol's max (sym) */
  bool sym, epi;
} qg_cfg;
static qg_cfg qg;

static void b_qgemm(bm_graph *g) {
  int s = qg.sym ? bm_sym_declare(g, "m", qg.rows) : -1;
  int64_t r = qg.sym ? BM_SYM(s) : qg.rows;
  bm_node *x = IN("x", qg.at, r, qg.k);
  bm_node *q = qweight(g, qg.qt, qg.n, qg.k, 11), *sc = IN("s", F32, qg.n, qg.groups);
  bm_node *y = bm_matmul(g, x, bm_dequant(g, q, sc), false, true); // (rows, N)
  if (qg.epi) y = bm_add(g, bm_add(g, y, IN("bias", qg.at, qg.n)), IN("res", qg.at, r, qg.n));
  bm_output_add(g, "y", y);
}
#define I8 BM_DTYPE_I8
#define I4 BM_DTYPE_I4
static void b_qg_bf16_i8_m65_epi(bm_graph *g) { qg = (qg_cfg){BF16, I8, 65, 136, 256, 1, false, true}; b_qgemm(g); }
static void b_qg_f16_i8g32_m128(bm_graph *g) { qg = (qg_cfg){F16, I8, 128, 200, 256, 8, false, false}; b_qgemm(g); }
static void b_qg_bf16_i4g32_m300(bm_graph *g) { qg = (qg_cfg){BF16, I4, 300, 264, 384, 12, false, true}; b_qgemm(g); }
static void b_qg_f16_i4g128_m777_epi(bm_graph *g) { qg = (qg_cfg){F16, I4, 777, 136, 512, 4, false, true}; b_qgemm(g); }
static void b_qg_bf16_i4g128_m777(bm_graph *g) { qg = (qg_cfg){BF16, I4, 777, 392, 256, 2, false, false}; b_qgemm(g); }
static void b_qg_f16_i8_m300(bm_graph *g) { qg = (qg_cfg){F16, I8, 300, 500, 128, 1, false, false}; b_qgemm(g); }
static void b_qg_bf16_i4g32_sym(bm_graph *g) { qg = (qg_cfg){BF16, I4, 2048, 136, 256, 8, true, true}; b_qgemm(g); }
static void b_qg_f16_i8g32_sym(bm_graph *g) { qg = (qg_cfg){F16, I8, 2048, 72, 256, 8, true, false}; b_qgemm(g); }
/* groups smaller than the 16-byte chunk: a scale per 8 outputs */
static void b_qg_f16_i4g16_m100(bm_graph *g) { qg = (qg_cfg){F16, I4, 100, 136, 256, 16, false, false}; b_qgemm(g); }
static void b_qg_bf16_i8g8_m70_epi(bm_graph *g) { qg = (qg_cfg){BF16, I8, 70, 200, 128, 16, false, true}; b_qgemm(g); }
static void b_qg_glu_f32_sym16(bm_graph *g) { hf_act = BM_OP_SILU; b_hf_glu(g, F32, F32, 16, true); }
static void b_qg_rms_glu_f32_m8(bm_graph *g) { hf_act = BM_OP_SILU, hf_pre = true; b_hf_glu(g, F32, F32, 8, false); }
#undef I8
#undef I4
/* ---- end qgemm */

/* ---- deqv: the DEQUANT kernel alone (owner: deq): i8/i4 weights to f16/bf16 in 8-output
 * units (emit.c emit_dequant_vec), compared exactly (tol 0: each output is the f32 product
 * q * scale rounded to nearest even, as the interpreter's). int4 in groups of 32 and 128,
 * per-row scales and groups of 8; int8 per row and in groups of 8; K = 136 and 200 (not
 * multiples of the old 16-byte chunk); unit counts that leave a partial last block; a q
 * that is not a constant (volatile loads) with a symbolic row count. */
static void b_dq(bm_graph *g, bm_node *q, int64_t groups, bm_dtype out) {
  bm_node *s = IN("s", F32, q->shape[0].add, groups); // (N, groups)
  bm_output_add(g, "w", bm_node_make_typed(g, BM_OP_DEQUANT, 2, (bm_node *[]){q, s}, NULL, out, 2, q->shape));
}
static void b_dq_i4g32_bf16(bm_graph *g) { b_dq(g, qweight(g, BM_DTYPE_I4, 40, 256, 21), 8, BF16); }
static void b_dq_i4g128_f16(bm_graph *g) { b_dq(g, qweight(g, BM_DTYPE_I4, 33, 384, 22), 3, F16); }
static void b_dq_i4pr_bf16_k136(bm_graph *g) { b_dq(g, qweight(g, BM_DTYPE_I4, 24, 136, 23), 1, BF16); }
static void b_dq_i4g8_f16_k72(bm_graph *g) { b_dq(g, qweight(g, BM_DTYPE_I4, 50, 72, 24), 9, F16); }
static void b_dq_i8_f16_k200(bm_graph *g) { b_dq(g, qweight(g, BM_DTYPE_I8, 31, 200, 25), 1, F16); }
static void b_dq_i8g8_bf16(bm_graph *g) { b_dq(g, qweight(g, BM_DTYPE_I8, 20, 128, 26), 16, BF16); }
static void b_dq_i4g32_bf16_big(bm_graph *g) { b_dq(g, qweight(g, BM_DTYPE_I4, 300, 384, 27), 12, BF16); }
/* q computed on the device (an activation: the volatile loads), its rows symbolic */
static void b_dq_i8_act_sym(bm_graph *g) {
  int m = bm_sym_declare(g, "m", 64);
  bm_node *x = IN("x", F32, BM_SYM(m), 136);
  bm_node *q = bm_cast(g, bm_mul(g, x, bm_scalar(g, 300.0f)), BM_DTYPE_I8); // (m, 136), saturating
  bm_node *s = IN("s", F32, BM_SYM(m), 17);
  bm_output_add(g, "w", bm_node_make_typed(g, BM_OP_DEQUANT, 2, (bm_node *[]){q, s}, NULL, F16, 2, q->shape));
}
/* ---- end deqv */

static const tcase cases[] = {
    {"unary_all", b_unary_all, 2e-5, {0}, true},
    {"binary_bcast", b_binary_bcast, 2e-5, {0}, true},
    {"fused_f16_sym", b_fused_f16, 2e-3, {17}, true},
    {"fused_bf16", b_fused_bf16, 1e-2, {0}, false},
    {"cast", b_cast, 1e-6, {0}, false},
    {"movement", b_movement, 0, {5}, true},
    {"reduce", b_reduce, 2e-5, {11}, false},
    {"softmax", b_softmax, 2e-3, {0}, false},
    {"norms", b_norms, 1e-2, {4}, false},
    {"groupnorm_silu", b_groupnorm_silu, 2e-5, {0}, true},
    {"groupnorm_vec_f16", b_gn_vec_f16, 3e-3, {0}, true},
    {"groupnorm_vec_bf16", b_gn_vec_bf16, 1.5e-2, {0}, false},
    {"groupnorm_vec_f32", b_gn_vec_f32, 2e-5, {0}, true},
    {"groupnorm_cl_f16", b_gn_cl_f16, 3e-3, {0}, true},
    {"groupnorm_cl_f32", b_gn_cl_f32, 2e-5, {0}, false},
    {"groupnorm_cl_bf16_sym", b_gn_cl_bf16_sym, 1.5e-2, {2}, false},
    {"groupnorm_cl_f16_cl1", b_gn_cl_f16, 3e-3, {0}, false},
    {"rope", b_rope, 2e-5, {5}, false},
    {"matmul_f32", b_mm_f32, 2e-5, {70}, false},
    {"matmul_f32_tt_epi", b_mm_f32_tt, 2e-5, {33}, true},
    {"matmul_f16_tb_epi", b_mm_f16_tb, 3e-3, {64}, false},
    {"matmul_bf16_epi", b_mm_bf16, 1.5e-2, {1}, false},
    {"matmul_batch", b_mm_batch, 2e-5, {0}, false},
    {"matmul_tc_f32xbf16_tb_epi", b_tcs_tb, 2e-5, {131}, true},
    {"matmul_tc_f32xbf16_nn_res", b_tcs_nn, 2e-5, {0}, false},
    {"matmul_tc_f32xbf16_tt_batch", b_tcs_tt_batch, 2e-5, {0}, false},
    {"matmul_tc_f16_tb_epi", b_tc_f16_tb, 3e-3, {61}, true},
    {"matmul_tc_bf16_nn_epi", b_tc_bf16_nn, 1.5e-2, {131}, false},
    {"matmul_tc_f16_tt", b_tc_f16_tt, 3e-3, {0}, false},
    {"matmul_tc_bf16_tn_batch", b_tc_bf16_tn_batch, 1.5e-2, {0}, true},
    {"matmul_wg_bf16_sym777_epi", b_wg_bf16_sym_epi, 1.5e-2, {777}, true},
    {"matmul_wg_bf16_sym1_epi", b_wg_bf16_sym_epi, 1.5e-2, {1}, false},
    {"matmul_wg_f16_m13", b_wg_f16_m13, 3e-3, {0}, false},
    {"matmul_wg_f16_m1000_epi", b_wg_f16_m1000, 3e-3, {0}, false},
    {"matmul_wg_bf16_batch_f32", b_wg_bf16_batch, 1.5e-2, {0}, true},
    {"matmul_wg_f16_sym256", b_wg_f16_sym, 3e-3, {256}, false},
    {"matmul_wg_f16_sym129", b_wg_f16_sym, 3e-3, {129}, false},
    {"matmul_wg_f16_persist", b_wg_f16_persist, 3e-3, {0}, false},
    /* the same with the TMA kernel's 128-wide tiles (the default is 256: tma_cfg_for) */
    {"matmul_wg_bf16_sym777_epi_tman128", b_wg_bf16_sym_epi, 1.5e-2, {777}, false},
    {"matmul_wg_bf16_batch_f32_tman128", b_wg_bf16_batch, 1.5e-2, {0}, false},
    /* and without clusters (the default pairs two blocks that share B tiles: tma_cfgs) */
    {"matmul_wg_bf16_sym777_epi_tmac1", b_wg_bf16_sym_epi, 1.5e-2, {777}, false},
    {"matmul_wg_bf16_batch_f32_tmac1", b_wg_bf16_batch, 1.5e-2, {0}, false},
    {"matmul_wg_f16_persist_tmac1", b_wg_f16_persist, 3e-3, {0}, false},
    /* B stored (K, N) on the TMA kernel (tma_kn_ok) */
    {"matmul_wg_kn_bf16_sym777_epi", b_wg_kn_bf16_sym_epi, 1.5e-2, {777}, true},
    {"matmul_wg_kn_bf16_sym256_epi", b_wg_kn_bf16_sym_epi, 1.5e-2, {256}, false},
    {"matmul_wg_kn_f16_k200", b_wg_kn_f16_k200, 3e-3, {0}, false},
    {"matmul_wg_kn_bf16_batch_f32", b_wg_kn_bf16_batch, 1.5e-2, {0}, false},
    {"matmul_wg_kn_f16_k200_tmac1", b_wg_kn_f16_k200, 3e-3, {0}, false},
    /* the TMA store epilogue (config tstore, the default; named here) and the previous default's store
     * from registers (_tmap: tma_n256s4c2) */
    {"matmul_wg_bf16_sym777_epi_tmae", b_wg_bf16_sym_epi, 1.5e-2, {777}, false},
    {"matmul_wg_f16_sym256_tmae", b_wg_f16_sym, 3e-3, {256}, false},
    {"matmul_wg_f16_m384_epi_tmae", b_wg_f16_m384_epi, 3e-3, {0}, true},
    {"matmul_wg_f16_batch_m256_tmae", b_wg_f16_batch_m256, 3e-3, {0}, false},
    {"matmul_wg_kn_bf16_sym256_epi_tmae", b_wg_kn_bf16_sym_epi, 1.5e-2, {256}, false},
    {"matmul_wg_f16_m384_epi_tmae1", b_wg_f16_m384_epi, 3e-3, {0}, false},
    {"matmul_wg_kn_bf16_sym256_epi_tmae1", b_wg_kn_bf16_sym_epi, 1.5e-2, {256}, false},
    {"matmul_wg_f16_m384_epi_tmap", b_wg_f16_m384_epi, 3e-3, {0}, false},
    {"matmul_wg_kn_bf16_sym256_epi_tmap", b_wg_kn_bf16_sym_epi, 1.5e-2, {256}, false},
    {"qmatmul", b_qmatmul, 2e-5, {0}, false},
    {"gemv_f32xbf16_m1_epi", b_gv_f32xbf16_m1, 2e-5, {0}, true},
    {"gemv_bf16_m2", b_gv_bf16_m2, 1.5e-2, {0}, false},
    {"gemv_f16_m7_sym_epi", b_gv_f16_m7_sym, 3e-3, {7}, true},
    {"gemv_f16_m16_sym_epi", b_gv_f16_m7_sym, 3e-3, {16}, false},
    {"gemv_f32xf16_m16_epi", b_gv_f32xf16_m16, 2e-5, {0}, false},
    {"gemv_bf16xf32_sym1", b_gv_bf16xf32_sym, 1.5e-2, {1}, false},
    {"gemv_bf16xf32_sym2", b_gv_bf16xf32_sym, 1.5e-2, {2}, false},
    {"gemv_f16xbf16_m3", b_gv_f16xbf16_m3, 3e-3, {0}, false},
    {"gemv_f32_oddk_epi", b_gv_f32_oddk, 2e-5, {0}, true},
    {"gemv_batch_bcast", b_gv_batch_bcast, 2e-5, {3}, false},
    {"qgemv_i8_i4", b_qgemv, 2e-5, {0}, true},
    {"qgemv_i4_g48_elem", b_qgemv_g48, 2e-5, {0}, false},
    {"qgemv_i4_bf16_sym", b_qgemv_bf16_sym, 1.5e-2, {3}, false},
    {"qgemv_f16_sym7", b_qgemv_sym16, 3e-3, {7}, false},
    {"qgemv_f16_sym16", b_qgemv_sym16, 3e-3, {16}, false},
    /* the small-M GEMM (owner: smallm) */
    {"smallm_bf16_m2_epi_rows2", b_sm_bf16_m2_epi, 1.5e-2, {0}, true}, /* 2 rows: the GEMV's by default */
    {"smallm_f32xbf16_m5", b_sm_f32xbf16_m5, 2e-5, {0}, false},
    {"smallm_f32xbf16_m16_epi", b_sm_f32xbf16_m16_epi, 2e-5, {0}, true},
    {"smallm_bf16_m8", b_sm_bf16_m8, 1.5e-2, {0}, false},
    {"smallm_f16_sym33_epi", b_sm_f16_sym, 3e-3, {33}, false},
    {"smallm_f16_sym64_epi", b_sm_f16_sym, 3e-3, {64}, false},
    {"smallm_f32xbf16_sym2", b_sm_f32xbf16_sym, 2e-5, {2}, false},
    {"smallm_f32xbf16_sym64", b_sm_f32xbf16_sym, 2e-5, {64}, false},
    {"smallm_q_f32_m8", b_sm_q_f32_m8, 2e-5, {0}, true},
    {"smallm_q_bf16_m16", b_sm_q_bf16_m16, 1.5e-2, {0}, false},
    {"smallm_q_f16_sym2", b_sm_q_f16_sym, 3e-3, {2}, false},
    {"smallm_q_f16_sym33", b_sm_q_f16_sym, 3e-3, {33}, false},
    {"smallm_q_f16_sym64", b_sm_q_f16_sym, 3e-3, {64}, false},
    {"smallm_q_f32_m5_k384_epi", b_sm_q_f32_m5_k384, 2e-5, {0}, true},
    /* the same with other configurations forced (the default picks by shape) */
    {"smallm_q_f32_m8_t2w16", b_sm_q_f32_m8, 2e-5, {0}, false},
    {"smallm_f32xbf16_m16_epi_t2w16", b_sm_f32xbf16_m16_epi, 2e-5, {0}, false},
    {"smallm_q_f16_sym33_t4w8", b_sm_q_f16_sym, 3e-3, {33}, false},
    {"smallm_q_bf16_m16_t2w8s0", b_sm_q_bf16_m16, 1.5e-2, {0}, false},
    {"smallm_f32xbf16_m5_p1", b_sm_f32xbf16_m5, 2e-5, {0}, false},
    {"smallm_f32xbf16_m16_epi_t1w4", b_sm_f32xbf16_m16_epi, 2e-5, {0}, false}, /* long N's default */
    {"smallm_q_bf16_m16_t1w4", b_sm_q_bf16_m16, 1.5e-2, {0}, false},
    {"conv2d", b_conv, 2e-5, {0}, true},
    {"conv2d_f16_sym", b_conv_f16_sym, 3e-3, {7}, false},
    {"conv2d_tc_f16", b_conv_tc, 3e-3, {0}, true},
    {"conv2d_tc_f16_big_res", b_conv_tc_big, 3e-3, {0}, false},
    {"conv2d_tc_bf16_s2", b_conv_tc_bf16_s2, 1.5e-2, {0}, false},
    {"conv2d_tc_f16_sym", b_conv_tc_sym, 3e-3, {7}, false},
    {"conv2d_wg_f16_320_res", b_conv_wg_f16_320, 3e-3, {0}, true},
    {"conv2d_wg_bf16_s2", b_conv_wg_bf16_s2, 1.5e-2, {0}, false},
    {"conv2d_wg_f16_1x1", b_conv_wg_f16_1x1, 3e-3, {0}, false},
    {"conv2d_wg_bf16_k360_res", b_conv_wg_bf16_k360, 1.5e-2, {0}, true},
    /* the same with 128-wide N tiles (the default is 64: wgmma_conv_ok) */
    {"conv2d_wg_f16_320_res_wgn128", b_conv_wg_f16_320, 3e-3, {0}, false},
    {"conv2d_wg_bf16_s2_wgn128", b_conv_wg_bf16_s2, 1.5e-2, {0}, false},
    {"conv2d_wg_bf16_k360_res_wgn128", b_conv_wg_bf16_k360, 1.5e-2, {0}, false},
    /* the NHWC conv on the TMA GEMM (owner: conv); "_convc1": no clusters, "_convc2": clusters of 2, "_convp": the
     * store from registers (the default picks clusters by O: conv_tma_cfg) */
    /* [ptx] (owner: conv2): also run from the PTX, i.e. the mma.sync body of the non-sm_90a images
     * (tc_load_conv_nhwc: B rows by cp.async) */
    {"conv2d_nhwc_f16_ow64_res", b_cn_f16_ow64, 3e-3, {0}, true, true},
    {"conv2d_nhwc_bf16_ow32_o320", b_cn_bf16_ow32, 1.5e-2, {0}, false, true},
    {"conv2d_nhwc_f16_ow16_res_b2", b_cn_f16_ow16, 3e-3, {0}, true, true},
    {"conv2d_nhwc_bf16_ow8_o64", b_cn_bf16_ow8, 1.5e-2, {0}, false, true},
    {"conv2d_nhwc_f16_ow256", b_cn_f16_ow256, 3e-3, {0}, false, true},
    {"conv2d_nhwc_f16_ow512", b_cn_f16_ow512, 3e-3, {0}, false, true},
    {"conv2d_nhwc_f16_1x1_o200", b_cn_f16_1x1, 3e-3, {0}, false, true},
    {"conv2d_nhwc_bf16_dil2_res", b_cn_bf16_dil2, 1.5e-2, {0}, true, true},
    {"conv2d_nhwc_f16_winput", b_cn_f16_winput, 3e-3, {0}, false, true},
    {"conv2d_nhwc_transpose_bf16", b_cn_transpose, 0, {0}, false},
    {"conv2d_nhwc_f16_ow16_res_b2_convc1", b_cn_f16_ow16, 3e-3, {0}, false},
    {"conv2d_nhwc_f16_ow256_convc1", b_cn_f16_ow256, 3e-3, {0}, false},
    {"conv2d_nhwc_bf16_ow32_o320_convp", b_cn_bf16_ow32, 1.5e-2, {0}, false},
    {"conv2d_nhwc_f16_ow64_res_convold", b_cn_f16_ow64, 3e-3, {0}, false},
    {"conv2d_nhwc_f16_ow16_res_b2_convc2", b_cn_f16_ow16, 3e-3, {0}, false}, /* clusters with O 320 (3 tiles) */
    {"conv2d_nhwc_f16_ow256_convc2", b_cn_f16_ow256, 3e-3, {0}, false},
    {"conv2d_nhwc_bf16_ow8_o64_convc2", b_cn_bf16_ow8, 1.5e-2, {0}, false},
    /* stride 2 on the NHWC conv (owner: conv2): "_convs2" compiles with BM_CUDA_CONV_S2=1 (TMA element strides on
     * sm_90a; [ptx]: the mma.sync body); "_convs2c1" / "_convs2c2" without / with clusters */
    {"conv2d_nhwc_s2_f16_ow16_convs2", b_cn_s2_f16_ow16, 3e-3, {0}, false, true},
    {"conv2d_nhwc_s2_bf16_ow16_res_convs2", b_cn_s2_bf16_ow16_res, 1.5e-2, {0}, true, true},
    {"conv2d_nhwc_s2_f16_ow64_convs2", b_cn_s2_f16_ow64, 3e-3, {0}, false, true},
    {"conv2d_nhwc_s2_bf16_ow16_res_convs2c2", b_cn_s2_bf16_ow16_res, 1.5e-2, {0}, false},
    {"conv2d_nhwc_s2_f16_ow16_convs2c1", b_cn_s2_f16_ow16, 3e-3, {0}, false},
    {"attn_plain", b_at_plain, 2e-5, {0}, false},
    {"attn_causal_gqa_f16", b_at_causal_gqa, TOL_TC_F16(0.9) /* 0.99 */, {0}, false},
    {"attn_window_cap_mask", b_at_window_cap, TOL_TC_BF16(0.6) /* 0.61 */, {0}, false},
    {"attn_d256_mask", b_at_d256, 2e-5, {0}, false},
    {"attn_d96_decode", b_at_d96, 2e-5, {0}, false},
    {"attn_d512_vae", b_at_d512, 2e-5, {0}, false},
    {"attn_d512_vae_f16", b_at_d512_f16, TOL_LOW_F16(0.15, 1.5) /* max|ref| 0.156, smax 1.45 */, {0}, false},
    {"attn_d320_bf16", b_at_d320_bf16, TOL_LOW_BF16(0.15, 1.5) /* 0.170, smax 1.43 */, {0}, false},
    {"kv_write_attn", b_kv, TOL_DEC_F16, {0}, false},
    {"attn_tc_d64_f16", b_at_tc_d64_f16, TOL_TC_F16(0.15) /* max|ref| 0.18 */, {0}, false},
    {"attn_tc_d80_gqa_causal_bf16", b_at_tc_d80_gqa_bf16, TOL_TC_BF16(0.3) /* 0.31 */, {0}, false},
    {"attn_tc_d96_dv64_window_f16", b_at_tc_d96_window_f16, TOL_TC_F16(0.9) /* 0.99 */, {0}, false},
    {"attn_tc_d128_mask_cap_bf16", b_at_tc_d128_mask_cap_bf16, TOL_TC_BF16(0.25) /* 0.27 */, {0}, false},
    {"attn_tc_d256_causal_f16", b_at_tc_d256_causal_f16, TOL_TC_F16(0.9) /* 0.998 */, {0}, false},
    {"attn_tc_d128_long_f16", b_at_tc_d128_long_f16, TOL_TC_F16(0.9) /* 0.99 */, {0}, false},
    {"attn_tc_sym_bf16", b_at_tc_sym_bf16, TOL_TC_BF16(0.9) /* 0.996 */, {173}, false},
    {"attn_tc_d128_groups_f16", b_at_tc_d128_groups_f16, TOL_TC_F16(0.9) /* 0.999 */, {0}, false},
    {"attn_tc_kvlen_f16_epi", b_at_tc_kvlen_f16, TOL_TC_F16(0.25) /* 0.28 */, {0}, true},
    {"attn_dec_f16_gqa", b_dec_f16_gqa, TOL_DEC_F16, {0}, false},
    {"attn_dec_bf16_window_cap", b_dec_bf16_window_cap, TOL_DEC_BF16, {0}, false},
    {"attn_dec_f32_mask", b_dec_f32_mask, 2e-5, {0}, false},
    {"attn_dec_f16_rowgroups", b_dec_f16_rowgroups, TOL_DEC_F16, {0}, false},
    {"attn_dec_sym_bf16", b_dec_sym_bf16, TOL_DEC_BF16, {1234}, false},
    /* attndec: the streaming decode kernel; "_decold" the tiled kernel, "_decpf" / "_decp0" / "_dece0" / "_decu8" /
     * "_decu2" / "_decw8" / "_decb2k" other configurations (BM_CUDA_ATTN_DEC, the knob table below) */
    {"attn_dec2_mha_f16_d128", b_dec2_mha_f16_d128, TOL_DEC_F16, {0}, false},
    {"attn_dec2_gqa8_bf16_d128", b_dec2_gqa8_bf16_d128, TOL_DEC_BF16, {0}, true},
    {"attn_dec2_gqa4_sq2_f16_d64_win", b_dec2_gqa4_sq2_f16_d64_win, TOL_DEC_F16, {0}, false},
    {"attn_dec2_sq4_bf16_d64_mask", b_dec2_sq4_bf16_d64_mask, TOL_DEC_BF16, {0}, false},
    {"attn_dec2_llama_short_f16", b_dec2_llama_short_f16, TOL_DEC_F16, {0}, false},
    {"attn_dec2_len0_f16", b_dec2_len0_f16, TOL_DEC_F16, {0}, false},
    {"attn_dec2_d256_cap_bf16", b_dec2_d256_cap_bf16, TOL_DEC_BF16, {0}, false},
    /* attndec2: the reduce-scatter (the default at 2, 4, 8 rows); "_decr0" the streaming kernel without it */
    {"attn_dec3_gqa2_f16_d128", b_dec3_gqa2_f16_d128, TOL_DEC_F16, {0}, false},
    {"attn_dec3_gqa2_bf16_d64_win", b_dec3_gqa2_bf16_d64_win, TOL_DEC_BF16, {0}, false},
    {"attn_dec3_gqa4_bf16_d32_mask", b_dec3_gqa4_bf16_d32_mask, TOL_DEC_BF16, {0}, false},
    {"attn_dec3_gqa4_f16_d16_cap", b_dec3_gqa4_f16_d16_cap, TOL_DEC_F16, {0}, false},
    {"attn_dec3_gqa8_f16_d64_win_cap", b_dec3_gqa8_f16_d64_win_cap, TOL_DEC_F16, {0}, false},
    {"attn_dec3_gqa4_bf16_d256", b_dec3_gqa4_bf16_d256, TOL_DEC_BF16, {0}, false},
    {"attn_dec3_gqa2_sq2_bf16_d128", b_dec3_gqa2_sq2_bf16_d128, TOL_DEC_BF16, {0}, false},
    {"attn_dec2_llama_short_f16_decr0", b_dec2_llama_short_f16, TOL_DEC_F16, {0}, false},
    {"attn_dec2_gqa8_bf16_d128_decr0", b_dec2_gqa8_bf16_d128, TOL_DEC_BF16, {0}, false},
    {"attn_dec3_gqa2_bf16_d64_win_decr0", b_dec3_gqa2_bf16_d64_win, TOL_DEC_BF16, {0}, false},
    {"attn_dec2_mha_f16_d128_decold", b_dec2_mha_f16_d128, TOL_DEC_F16, {0}, false},
    {"attn_dec2_gqa8_bf16_d128_decold", b_dec2_gqa8_bf16_d128, TOL_DEC_BF16, {0}, false},
    {"attn_dec_f16_gqa_decold", b_dec_f16_gqa, TOL_DEC_F16, {0}, false},
    {"attn_dec_bf16_window_cap_decold", b_dec_bf16_window_cap, TOL_DEC_BF16, {0}, false},
    {"attn_dec2_mha_f16_d128_decpf", b_dec2_mha_f16_d128, TOL_DEC_F16, {0}, false},
    {"attn_dec2_gqa4_sq2_f16_d64_win_decpf", b_dec2_gqa4_sq2_f16_d64_win, TOL_DEC_F16, {0}, false},
    {"attn_dec2_mha_f16_d128_decu8", b_dec2_mha_f16_d128, TOL_DEC_F16, {0}, false},
    {"attn_dec2_sq4_bf16_d64_mask_decu2", b_dec2_sq4_bf16_d64_mask, TOL_DEC_BF16, {0}, false},
    {"attn_dec2_mha_f16_d128_decp0", b_dec2_mha_f16_d128, TOL_DEC_F16, {0}, false},
    {"attn_dec2_gqa8_bf16_d128_dece0", b_dec2_gqa8_bf16_d128, TOL_DEC_BF16, {0}, false},
    {"attn_dec_f16_gqa_dece0", b_dec_f16_gqa, TOL_DEC_F16, {0}, false},
    {"attn_dec2_mha_f16_d128_decw8", b_dec2_mha_f16_d128, TOL_DEC_F16, {0}, false},
    {"attn_dec_bf16_window_cap_decw8", b_dec_bf16_window_cap, TOL_DEC_BF16, {0}, false},
    {"attn_dec2_llama_short_f16_decb2k", b_dec2_llama_short_f16, TOL_DEC_F16, {0}, false},
    {"attn_dec_f16_gqa_decb2k", b_dec_f16_gqa, TOL_DEC_F16, {0}, false},
    /* ---- attndec3: the cluster merge of the decode splits (emit_attention.c dec_cluster_merge; off by
     * default): clusters of 8 (the live span in one cluster: 5 keys; many clusters), 4 and 2 (d256 at 4
     * rows: 4 merge rounds a block), and b32c8 (4 splits a (batch, kv head) at run time: the clustered
     * kernel's path without the merge) */
    {"attn_dec2_gqa8_bf16_d128_decc8", b_dec2_gqa8_bf16_d128, TOL_DEC_BF16, {0}, false},
    {"attn_dec_f16_gqa_decc8", b_dec_f16_gqa, TOL_DEC_F16, {0}, false},
    {"attn_dec2_llama_short_f16_decc8", b_dec2_llama_short_f16, TOL_DEC_F16, {0}, false},
    {"attn_dec2_len0_f16_decc8", b_dec2_len0_f16, TOL_DEC_F16, {0}, false},
    {"attn_dec3_gqa8_f16_d64_win_cap_decc8", b_dec3_gqa8_f16_d64_win_cap, TOL_DEC_F16, {0}, false},
    {"attn_dec2_llama_short_f16_decc4", b_dec2_llama_short_f16, TOL_DEC_F16, {0}, false},
    {"attn_dec3_gqa4_bf16_d256_decc2", b_dec3_gqa4_bf16_d256, TOL_DEC_BF16, {0}, false},
    {"attn_dec_bf16_window_cap_decb32c8", b_dec_bf16_window_cap, TOL_DEC_BF16, {0}, false},
    /* ---- end attndec3 */
    /* ---- attndec4: the decode prefetch of two steps (emit_attention.c dec_knob_get p2), the
     * publication / combine before the release atomic and the acc prefetch ("_deca0o0"), the
     * one-phase combine at 4 rows ("_deco1") */
    {"attn_dec2_llama_short_f16_decp2", b_dec2_llama_short_f16, TOL_DEC_F16, {0}, false},
    {"attn_dec3_gqa4_bf16_d256_decp2", b_dec3_gqa4_bf16_d256, TOL_DEC_BF16, {0}, false},
    {"attn_dec2_gqa8_bf16_d128_decp2", b_dec2_gqa8_bf16_d128, TOL_DEC_BF16, {0}, false},
    {"attn_dec2_llama_short_f16_deca0o0", b_dec2_llama_short_f16, TOL_DEC_F16, {0}, false},
    {"attn_dec2_mha_f16_d128_deca0o0", b_dec2_mha_f16_d128, TOL_DEC_F16, {0}, false},
    {"attn_dec2_llama_short_f16_deco1", b_dec2_llama_short_f16, TOL_DEC_F16, {0}, false},
    /* ---- end attndec4 */
    /* attnexp: every exponential from the polynomial, the stale max (the tolerances as above:
     * the polynomial's error, 3e-6 / 9e-5 relative, is within their 1e-5 and bf16's u / 40) */
    {"attn_exp_d64_f16", b_at_exp_d64_f16, TOL_TC_F16(0.9) /* 0.998 */, {0}, false},
    {"attn_exp_d64_causal_bf16", b_at_exp_d64_causal_bf16, TOL_TC_BF16(0.9) /* 1.0 */, {0}, false},
    {"attn_exp_d128_causal_f16", b_at_exp_d128_causal_f16, TOL_TC_F16(0.9) /* 0.998 */, {0}, false},
    {"attn_exp_d128_bf16", b_at_exp_d128_bf16, TOL_TC_BF16(0.1) /* 0.112 */, {0}, false},
    /* attn3wg */
    {"attn_w3_d64_ragged_f16", b_at_w3_d64_ragged_f16, TOL_TC_F16(0.1) /* 0.106 */, {0}, false},
    {"attn_w3_d64_causal_bf16", b_at_w3_d64_causal_bf16, TOL_TC_BF16(0.15) /* 0.155 */, {0}, false},
    /* attnx (rho measured with the interpreter: 0.155, 0.149) */
    {"attn_xt_d128_kvlen0_bf16", b_at_xt_d128_kvlen0_bf16, TOL_TC_BF16(0.15), {0}, false},
    {"attn_xt_d128_causal_f16", b_at_xt_d128_causal_f16, TOL_TC_F16(0.14), {0}, false},
    {"attn_xt_d128_causal_f16_xt0", b_at_xt_d128_causal_f16, TOL_TC_F16(0.14), {0}, false},
    /* attnstore (rho: causal rows that see one key copy a row of v; scale 2 makes rows peaky, as attn_exp_) */
    {"attn_ost_d128_f16", b_at_ost_d128_f16, TOL_TC_F16(0.9), {0}, false},
    {"attn_ost_d128_causal_f16", b_at_ost_d128_causal_f16, TOL_TC_F16(0.9), {0}, false},
    {"attn_ost_d128_causal_f16_tma1", b_at_ost_d128_causal_f16, TOL_TC_F16(0.9), {0}, false},
    {"attn_ost_d64_causal_bf16", b_at_ost_d64_causal_bf16, TOL_TC_BF16(0.9), {0}, false},
    {"attn_ost_res_f16", b_at_ost_res_f16, TOL_TC_F16(0.9), {0}, true},
    {"topk_mask", b_topk, 0, {0}, false},
    {"moe", b_moe, 2e-5, {0}, false},
    /* decode2: q/k/v slice views (batch max 1), the gate/up GLU */
    {"hfuse_qkv_views_f32xbf16", b_hf_qkv_f32xbf16, 2e-5, {0}, false},
    {"hfuse_qkv_views_bf16_qknorm", b_hf_qkv_bf16_norm, TOL_DEC_BF16, {0}, false},
    {"hfuse_glu_f32xbf16_m1", b_hf_glu_f32xbf16_m1, 2e-5, {0}, true},
    {"hfuse_glu_bf16_m2_gelu", b_hf_glu_bf16_m2_gelu, 1.5e-2, {0}, false},
    {"hfuse_glu_f32_sym3", b_hf_glu_f32_sym, 2e-5, {3}, false},
    {"hfuse_glu_f32_sym4", b_hf_glu_f32_sym, 2e-5, {4}, false},
    {"hfuse_glu_f32xbf16_m100", b_hf_glu_f32xbf16_m100, 2e-5, {0}, false},
    {"hfuse_rms_qkv_views_f32xbf16", b_hf_rms_qkv_f32xbf16, 2e-5, {0}, false},
    /* bf16 matmul tolerance: RMS_MATMUL does not round the normed row to bf16 as the interpreter's
     * rms_norm does (on an H100: 7.9e-3, one bf16 step of the largest output) */
    {"hfuse_rms_qkv_views_bf16", b_hf_rms_qkv_bf16, 1.5e-2, {0}, false},
    {"hfuse_rms_glu_bf16_m1", b_hf_rms_glu_bf16_m1, 1.5e-2, {0}, true},
    {"hfuse_rms_glu_f32xbf16_m3_gelu", b_hf_rms_glu_f32xbf16_m3, 2e-5, {0}, false},
    {"hfuse_rms_glu_f32_k102", b_hf_rms_glu_f32_k102, 2e-5, {0}, false},
    /* ---- qgemm: quantized weights with many rows (DEQUANT + the TMA GEMM) */
    {"qgemm_bf16_i8_m65_epi", b_qg_bf16_i8_m65_epi, 1.5e-2, {0}, true},
    {"qgemm_f16_i8g32_m128", b_qg_f16_i8g32_m128, 3e-3, {0}, false},
    {"qgemm_bf16_i4g32_m300_epi", b_qg_bf16_i4g32_m300, 1.5e-2, {0}, false},
    {"qgemm_f16_i4g128_m777_epi", b_qg_f16_i4g128_m777_epi, 3e-3, {0}, true},
    {"qgemm_bf16_i4g128_m777", b_qg_bf16_i4g128_m777, 1.5e-2, {0}, false},
    {"qgemm_f16_i8_m300", b_qg_f16_i8_m300, 3e-3, {0}, false},
    {"qgemm_bf16_i4g32_sym5_epi", b_qg_bf16_i4g32_sym, 1.5e-2, {5}, false},
    {"qgemm_bf16_i4g32_sym300_epi", b_qg_bf16_i4g32_sym, 1.5e-2, {300}, false},
    {"qgemm_f16_i8g32_sym2048", b_qg_f16_i8g32_sym, 3e-3, {0}, false},
    {"qgemm_f16_i4g16_m100", b_qg_f16_i4g16_m100, 3e-3, {0}, false},
    {"qgemm_bf16_i8g8_m70_epi", b_qg_bf16_i8g8_m70_epi, 1.5e-2, {0}, false},
    {"qgemm_glu_f32_sym16", b_qg_glu_f32_sym16, 2e-5, {0}, false},
    {"qgemm_glu_f32_sym9", b_qg_glu_f32_sym16, 2e-5, {9}, false},
    {"qgemm_rms_glu_f32_m8", b_qg_rms_glu_f32_m8, 2e-5, {0}, false},
    /* ---- end qgemm */
    /* ---- deqv: the DEQUANT kernel alone, exact */
    {"deqv_i4g32_bf16", b_dq_i4g32_bf16, 0, {0}, false},
    {"deqv_i4g128_f16", b_dq_i4g128_f16, 0, {0}, false},
    {"deqv_i4pr_bf16_k136", b_dq_i4pr_bf16_k136, 0, {0}, false},
    {"deqv_i4g8_f16_k72", b_dq_i4g8_f16_k72, 0, {0}, false},
    {"deqv_i8_f16_k200", b_dq_i8_f16_k200, 0, {0}, false},
    {"deqv_i8g8_bf16", b_dq_i8g8_bf16, 0, {0}, false},
    {"deqv_i4g32_bf16_big", b_dq_i4g32_bf16_big, 0, {0}, false},
    {"deqv_i8_act_sym50", b_dq_i8_act_sym, 0, {50}, false},
    {"deqv_i8_act_sym64", b_dq_i8_act_sym, 0, {0}, false},
    /* ---- end deqv */
    /* ---- mov: the movement kernels (emit_movement.c) */
    {"move_perm_keep", b_mv_perm_keep, 0, {2}, false},
    {"move_transpose", b_mv_transpose, 0, {2}, false},
    {"move_slice", b_mv_slice, 0, {3}, false},
    {"move_concat", b_mv_concat, 0, {2}, false},
    {"move_upsample", b_mv_upsample, 0, {2}, false},
    /* ---- end mov */
    /* ---- prefill: head split with symbolic strides, ROPE / KV_WRITE on vectors */
    {"pf_split", b_pf_split, 0, {2, 7}, false},
    {"pf_split_b1", b_pf_split, 0, {1, 9}, false},
    {"pf_rope_bf16", b_pf_rope_bf16, TOL_DEC_BF16, {2, 9}, false},
    {"pf_rope_f16", b_pf_rope_f16, TOL_DEC_F16, {1, 11}, false},
    {"pf_rope_partial", b_pf_rope_partial, TOL_DEC_BF16, {2, 5}, false},
    {"pf_kv_bf16", b_pf_kv_bf16, 0, {2, 5}, false},
    {"pf_kv_f32", b_pf_kv_f32, 0, {2, 3}, false},
    {"pf_glu_bf16", b_pf_glu_bf16, 1.5e-2, {256}, false},
    {"pf_glu_bf16_m200", b_pf_glu_bf16, 1.5e-2, {200}, false},
    {"pf_res_f16", b_pf_res_f16, 3e-3, {0}, false},
    {"pf_res_batch_bf16", b_pf_res_batch_bf16, 1.5e-2, {0}, false},
    /* ---- end prefill */
};

/* BM_TEST_ONLY=a,b,...: the cases whose name contains one of the words */
static bool only_match(const char *only, const char *name) {
  if (!only) return true;
  char w[128];
  for (const char *p = only; *p;) {
    size_t n = strcspn(p, ",");
    if (n > 0 && n < sizeof w) {
      memcpy(w, p, n), w[n] = 0;
      if (strstr(name, w)) return true;
    }
    p += n + (p[n] == ',');
  }
  return false;
}

/* Compile-time knobs a case forces by its name: a case whose name starts
 * with `prefix` (NULL: any) and contains `tag` compiles (and runs) with
 * `var` set to `value`, the first matching row per variable; the
 * variable's previous value (a pack may set it for every case) comes back
 * after the case. */
typedef struct case_knob {
  const char *prefix, *tag, *var, *value;
} case_knob;

static const case_knob case_knobs[] = {
    /* the wgmma conv's 128-wide N tiles; the TMA GEMM's configurations: 128 x 128 tiles, no clusters,
     * the TMA store epilogue with / without clusters, the previous store */
    {NULL, "_wgn128", "BM_CUDA_WGMMA", "n128k64s3"},
    {NULL, "_tman128", "BM_CUDA_WGMMA", "tma_n128s6"},
    {NULL, "_tmac1", "BM_CUDA_WGMMA", "tma_n256s4"},
    {NULL, "_tmae1", "BM_CUDA_WGMMA", "tma_n256s4e"},
    {NULL, "_tmae", "BM_CUDA_WGMMA", "tma_n256s4c2e"},
    {NULL, "_tmap", "BM_CUDA_WGMMA", "tma_n256s4c2"},
    /* the small-M GEMM's configuration (emit_gemm_small.c) or row range */
    {"smallm", "_t2w16", "BM_CUDA_SMALLM", "t2w16"},
    {"smallm", "_t4w8", "BM_CUDA_SMALLM", "t4w8"},
    {"smallm", "_t2w8s0", "BM_CUDA_SMALLM", "t2w8s0"},
    {"smallm", "_p1", "BM_CUDA_SMALLM", "p1"},
    {"smallm", "_t1w4", "BM_CUDA_SMALLM", "t1w4"},
    {"smallm", "_rows2", "BM_CUDA_SMALLM_ROWS", "2-64"},
    /* the NHWC conv's configuration (emit_gemm.c conv_tma_cfg), the NCHW kernel, stride 2 forced on */
    {NULL, "_convc1", "BM_CUDA_CONV", "tma_n256s4e"},
    {NULL, "_convs2c1", "BM_CUDA_CONV", "tma_n256s4e"},
    {NULL, "_convc2", "BM_CUDA_CONV", "tma_n256s4c2e"},
    {NULL, "_convs2c2", "BM_CUDA_CONV", "tma_n256s4c2e"},
    {NULL, "_convp", "BM_CUDA_CONV", "tma_n256s4c2"},
    {NULL, "_convold", "BM_CUDA_CONV", "old"},
    {NULL, "_convs2", "BM_CUDA_CONV_S2", "1"},
    /* every exponential from the polynomial, and the stale max (emit_attention.c wa_exp_cfg) */
    {"attn_exp_", "", "BM_CUDA_ATTN_EXP", "1/1"},
    /* the decode kernel (emit_attention.c dec_knob_get): the tiled kernel, other streaming configurations */
    {"attn_dec", "_decold", "BM_CUDA_ATTN_DEC", "old"},
    {"attn_dec", "_decpf", "BM_CUDA_ATTN_DEC", "p1"},
    {"attn_dec", "_decu8", "BM_CUDA_ATTN_DEC", "u8p0"},
    {"attn_dec", "_decu2", "BM_CUDA_ATTN_DEC", "u2"},
    {"attn_dec", "_decp0", "BM_CUDA_ATTN_DEC", "p0"},
    {"attn_dec", "_dece0", "BM_CUDA_ATTN_DEC", "e0"},
    {"attn_dec", "_decw8", "BM_CUDA_ATTN_DEC", "w8"},
    {"attn_dec", "_decb2k", "BM_CUDA_ATTN_DEC", "b2048"},
    {"attn_dec", "_decr0", "BM_CUDA_ATTN_DEC", "r0"},
    /* attndec3: the decode splits' cluster merge (dec_knob_get c<N>) */
    {"attn_dec", "_decc8", "BM_CUDA_ATTN_DEC", "c8"},
    {"attn_dec", "_decc4", "BM_CUDA_ATTN_DEC", "c4"},
    {"attn_dec", "_decc2", "BM_CUDA_ATTN_DEC", "c2"},
    {"attn_dec", "_decb32c8", "BM_CUDA_ATTN_DEC", "b32c8"},
    /* attndec4: the prefetch of two steps; the publication and combine before (dec_knob_get p2, a0o0) */
    {"attn_dec", "_decp2", "BM_CUDA_ATTN_DEC", "p2"},
    {"attn_dec", "_deca0o0", "BM_CUDA_ATTN_DEC", "a0o0"},
    {"attn_dec", "_deco1", "BM_CUDA_ATTN_DEC", "o1"},
    {"attn_exp_", "", "BM_CUDA_ATTN_RESCALE", "8"},
    /* attnx: the previous consumer loop (emit_attention.c wa_xtask_on) */
    {"attn_xt_", "_xt0", "BM_CUDA_ATTN_XTASK", "0"},
    /* attnstore: the staged O store with one Q buffer (emit_attention.c wa_store) */
    {"attn_ost_", "_tma1", "BM_CUDA_ATTN", "w2n128tma_pp"},
    /* the group norm in one block a group (emit.c group_norm_cluster) */
    {"groupnorm_cl", "_cl1", "BM_CUDA_GN_CLUSTER", "1"},
};
enum { NKNOBS = sizeof case_knobs / sizeof *case_knobs };

/* Sets the knobs `name` asks for; old[] keeps what to restore (set[i]: row i was applied). */
static void knobs_set(const char *name, bool set[NKNOBS], char old[NKNOBS][64], bool had[NKNOBS]) {
  for (int i = 0; i < NKNOBS; i++) {
    const case_knob *r = &case_knobs[i];
    set[i] = (!r->prefix || strncmp(name, r->prefix, strlen(r->prefix)) == 0) && strstr(name, r->tag);
    for (int j = 0; set[i] && j < i; j++) set[i] = !(set[j] && strcmp(case_knobs[j].var, r->var) == 0);
    if (!set[i]) continue;
    const char *v = getenv(r->var);
    had[i] = v != NULL;
    snprintf(old[i], sizeof old[i], "%s", v ? v : "");
    setenv(r->var, r->value, 1);
  }
}

static void knobs_restore(const bool set[NKNOBS], char old[NKNOBS][64], const bool had[NKNOBS]) {
  for (int i = 0; i < NKNOBS; i++) {
    if (!set[i]) continue;
    if (had[i])
      setenv(case_knobs[i].var, old[i], 1);
    else
      unsetenv(case_knobs[i].var);
  }
}

static void test_cases(void) {
  const char *only = getenv("BM_TEST_ONLY");
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    if (!only_match(only, cases[i].name)) {
      skipped++;
      continue;
    }
    bool set[NKNOBS], had[NKNOBS];
    char old[NKNOBS][64];
    knobs_set(cases[i].name, set, old, had);
    run_one(&cases[i], true);
    if (cases[i].unfused) run_one(&cases[i], false);
    knobs_restore(set, old, had);
  }
}

/* One package with the default architectures: the bundle holds 4 cubins and
 * PTX; on a GPU it runs from the cubin and again from the PTX (driver JIT). */
static void test_bundle_and_ptx(void) {
  bm_module *m = bm_module_create("bundle");
  bm_graph *g = bm_graph_create(m, "main");
  b_fused_f16(g);
  if (export_dir) { /* every architecture, and bm_cuda_check also runs it from the PTX */
    bm_tensor in[2] = {0};
    CHECK_OK(bm_opcheck_random_inputs(g, NULL, 5, in));
    CHECK_OK(export_case(m, g, in, "bundle_all_archs", 2e-3, true, "sm_80,sm_86,sm_89,sm_90,compute_80", true));
    for (int i = 0; i < 2; i++) bm_tensor_free(&in[i]);
    bm_module_destroy(m);
    return;
  }
  bm_compile_options co;
  bm_compile_options_init(&co);
  co.target.backend = "cuda";
  co.target.cpu = "sm_80,sm_86,sm_89,sm_90,compute_80";
  char path[512];
  snprintf(path, sizeof path, "%s/bundle.bmpk", bm_test_tmpdir());
  CHECK_OK(bm_compile_module(m, &co, path));
  bm_package *pkg = NULL;
  CHECK_OK(bm_package_open(path, NULL, &pkg));
  if (pkg) {
    CHECK(pkg->gpu == 1);
    CHECK(pkg->ngpu_images == 5);
    int ptx = 0;
    for (int i = 0; i < pkg->ngpu_images; i++) ptx += pkg->gpu_images[i].ptx;
    CHECK(ptx == 1);
  }
  for (int force = 0; have_gpu && pkg && force < 2; force++) {
    setenv("BM_CUDA_FORCE_PTX", force ? "1" : "0", 1);
    bm_session *s = NULL;
    CHECK_OK(bm_session_create(pkg, NULL, &s));
    uint16_t x[2 * 17 * 48], b[48];
    for (int i = 0; i < 2 * 17 * 48; i++) x[i] = bm_f32_to_f16((float)(i % 7) * 0.25f - 0.5f);
    for (int i = 0; i < 48; i++) b[i] = bm_f32_to_f16(0.1f * (float)i);
    if (s) {
      CHECK_OK(bm_session_set_input(s, 0, 0, x, F16, 3, (int64_t[]){2, 17, 48}));
      CHECK_OK(bm_session_set_input(s, 0, 1, b, F16, 1, (int64_t[]){48}));
      CHECK_OK(bm_session_run(s, 0));
      const void *out = NULL;
      bm_tensor_info info;
      CHECK_OK(bm_session_get_output(s, 0, 0, &out, &info));
      CHECK(info.ndim == 3 && info.shape[1] == 17);
      if (out) { /* element 5: x = 0.75, b = 0.5 */
        float xv = 0.75f, y = xv * 0.5f + 0.5f;
        y = y / (1.0f + expf(-y)) - xv;
        float ref = 0.5f * y * (1.0f + tanhf(0.7978845608f * (y + 0.044715f * y * y * y)));
        CHECK_MSG(fabsf(bm_f16_to_f32(((const uint16_t *)out)[5]) - ref) < 2e-3, "ptx %d: %g vs %g", force,
                  bm_f16_to_f32(((const uint16_t *)out)[5]), ref);
      }
    }
    bm_session_destroy(s);
  }
  unsetenv("BM_CUDA_FORCE_PTX");
  bm_package_close(pkg);
  bm_module_destroy(m);
}

/* The wgmma body goes only into K-major f16/bf16 matmuls, under the sm_90a
 * feature macro with the mma.sync body in #else; the default bundle (cubins
 * for sm_80..sm_90 and the compute_80 PTX) compiles with it. */
static void test_wgmma_source(void) {
  if (export_dir) return;
  build_fn fns[3] = {b_wg_bf16_sym_epi, b_tc_bf16_nn, b_tcs_tb};
  for (int i = 0; i < 3; i++) {
    bm_module *m = bm_module_create("wg");
    bm_graph *g = bm_graph_create(m, "main");
    fns[i](g);
    bm_pass_options po = {0};
    po.supports = bm_clike_supports;
    CHECK_OK(bm_pipeline_run(g, &po));
    bm_clike_out out;
    CHECK_OK(bm_clike_emit_module(&bm_clike_cuda, m, &out));
    if (out.src.s) {
      bool wg = strstr(out.src.s, "(acc, da + 2 * kk") != NULL; /* a wgmma call (the prelude defines them always) */
      CHECK_MSG(wg == (i < 2), "case %d: wgmma body %s", i, wg ? "present" : "missing");
      /* B stored (K, N): the TMA kernel with the MN-major B descriptor, the mma.sync tile as its fallback */
      bool tb = strstr(out.src.s, "bm_wgmma_tb_bf16_n256(acc, da + 2 * kk, db + 128 * kk)") != NULL;
      CHECK_MSG(tb == (i == 1), "case %d: B (K, N) wgmma %s", i, tb ? "present" : "missing");
      if (i == 1) CHECK(strstr(out.src.s, "bm_tma_load2d_mc(") != NULL && strstr(out.src.s, "bm_mma_bf16(acc") != NULL);
      if (i == 0) CHECK(strstr(out.src.s, "#else\n") != NULL && strstr(out.src.s, "bm_mma_bf16(acc") != NULL);
      /* the TMA body, its runtime data and the cp.async fallback */
      if (i == 0) CHECK(strstr(out.src.s, "bm_tma_load2d(sa, tma") != NULL && strstr(out.src.s, "_tmd)[] = {") != NULL &&
                        strstr(out.src.s, "bm_cp_async16(sa + ") != NULL);
      if (i == 0) CHECK(strstr(out.src.s, "bm_tma_load2d_mc(") != NULL); /* the default: clusters of 2 */
      if (i == 0) CHECK(strstr(out.src.s, "bm_tma_store2d(tmc, ") != NULL); /* and the TMA store */
    }
    bm_clike_out_free(&out);
    bm_module_destroy(m);
  }
  bm_module *m = bm_module_create("wgbundle");
  bm_graph *g = bm_graph_create(m, "main");
  b_wg_f16_m13(g);
  bm_compile_options co;
  bm_compile_options_init(&co);
  co.target.backend = "cuda";
  co.target.cpu = "sm_80,sm_86,sm_89,sm_90,compute_80";
  char path[512];
  snprintf(path, sizeof path, "%s/wgbundle.bmpk", bm_test_tmpdir());
  CHECK_OK(bm_compile_module(m, &co, path));
  bm_module_destroy(m);
}

/* CONV2D gets the wgmma body (the im2col gather, under the sm_90a macro
 * with mma.sync in #else) when Cg*KH*KW is a multiple of 8, with 64-wide N
 * tiles, or 128-wide under BM_CUDA_WGMMA=n128k64s3; the 4-channel
 * input conv (K = 36) keeps the scalar tile, and BM_CUDA_WGMMA=0 turns the
 * wgmma body off. */
static void test_wgmma_conv_source(void) {
  if (export_dir) return;
  for (int i = 0; i < 4; i++) {
    bm_module *m = bm_module_create("wgconv");
    bm_graph *g = bm_graph_create(m, "main");
    if (i == 1) {
      bm_node *x = IN("x", F16, 1, 4, 8, 8), *w = IN("w", F16, 32, 4, 3, 3);
      bm_output_add(g, "y", bm_conv2d(g, x, w, NULL, 1, 1, 1, 1, 1, 1, 1));
    } else if (i == 3) {
      bm_node *x = IN("x", F16, 2, 320, 64, 64), *w = IN("w", F16, 320, 320, 3, 3);
      bm_output_add(g, "y", bm_conv2d(g, x, w, NULL, 1, 1, 1, 1, 1, 1, 1));
    } else {
      b_conv_wg_bf16_s2(g);
    }
    if (i >= 2) setenv("BM_CUDA_WGMMA", i == 2 ? "0" : "n128k64s3", 1);
    bm_pass_options po = {0};
    po.supports = bm_clike_supports;
    CHECK_OK(bm_pipeline_run(g, &po));
    bm_clike_out out;
    CHECK_OK(bm_clike_emit_module(&bm_clike_cuda, m, &out));
    if (i >= 2) unsetenv("BM_CUDA_WGMMA");
    if (out.src.s) {
      bool wg = strstr(out.src.s, "(acc, da + 2 * kk") != NULL && strstr(out.src.s, "xv[j] = ok ?") != NULL;
      CHECK_MSG(wg == (i == 0 || i == 3), "case %d: wgmma conv body %s", i, wg ? "present" : "missing");
      if (i == 0) CHECK(strstr(out.src.s, "#else\n") != NULL && strstr(out.src.s, "bm_mma_bf16(acc") != NULL);
      if (i == 0) CHECK(strstr(out.src.s, "bm_wgmma_bf16_n64(acc") != NULL);
      if (i == 3) CHECK(strstr(out.src.s, "bm_wgmma_f16_n128(acc") != NULL);
      if (i == 1) CHECK(strstr(out.src.s, "bm_mma_") == NULL || strstr(out.src.s, "bm_mma_f16(acc") == NULL);
    }
    bm_clike_out_free(&out);
    bm_module_destroy(m);
  }
}

/* A CUDA package on a machine without a GPU opens, and a session says why it cannot run. */
static void test_no_gpu_message(void) {
  if (have_gpu || export_dir) return;
  bm_module *m = bm_module_create("nogpu");
  bm_graph *g = bm_graph_create(m, "main");
  b_fused_bf16(g);
  bm_compile_options co;
  bm_compile_options_init(&co);
  co.target.backend = "cuda";
  co.target.cpu = "sm_90";
  char path[512];
  snprintf(path, sizeof path, "%s/nogpu.bmpk", bm_test_tmpdir());
  CHECK_OK(bm_compile_module(m, &co, path));
  bm_package *pkg = NULL;
  CHECK_OK(bm_package_open(path, NULL, &pkg));
  bm_session *s = NULL;
  if (pkg) CHECK_ERR(bm_session_create(pkg, NULL, &s), BM_ERR_UNSUPPORTED, "cuda");
  bm_package_close(pkg);
  bm_module_destroy(m);
}

/* The emitter is language-neutral: the same module lowered with the Metal
 * table has Metal's kernel syntax and none of CUDA's (not compiled here). */
static void test_metal_split(void) {
  bm_module *m = bm_module_create("metal");
  bm_graph *g = bm_graph_create(m, "main");
  b_groupnorm_silu(g);
  bm_pass_options po = {0};
  po.supports = bm_clike_supports;
  CHECK_OK(bm_pipeline_run(g, &po));
  bm_clike_out out;
  CHECK_OK(bm_clike_emit_module(&bm_clike_metal, m, &out));
  if (out.src.s) {
    CHECK(strstr(out.src.s, "kernel void bm_k0_") != NULL);
    CHECK(strstr(out.src.s, "threadgroup_barrier") != NULL);
    CHECK(strstr(out.src.s, "__global__") == NULL && strstr(out.src.s, "__syncthreads") == NULL);
  }
  bm_clike_out_free(&out);
  bm_module_destroy(m);
}

int main(void) {
  RUN(test_metal_split);
  const bm_backend *be = NULL;
  bm_status s = bm_backend_find("cuda", &be);
  if (s) {
    printf("test_ops_cuda: skipped (%s)\n", bm_status_message(s));
    printf("0 passed, 0 failed, %zu skipped\n", sizeof cases / sizeof *cases);
    bm_status_free(s);
    return 0;
  }
  int arch = 0;
  s = bm_cuda_device_arch(&arch, gpu_name, sizeof gpu_name);
  have_gpu = !s && arch >= 80;
  if (s) {
    printf("test_ops_cuda: no GPU (%s): compiling every case, running none\n", bm_status_message(s));
    bm_status_free(s);
  } else {
    printf("test_ops_cuda: running on %s (sm_%d)\n", gpu_name, arch);
  }
  char archs[32];
  snprintf(archs, sizeof archs, "sm_%d", have_gpu ? arch : 90);
  setenv("BM_CUDA_ARCHS", archs, 0);
  export_dir = getenv("BM_CUDA_EXPORT");
  if (export_dir && *export_dir) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", export_dir, export_dir);
    CHECK(system(cmd) == 0);
    have_gpu = 0;
  } else {
    export_dir = NULL;
  }
  RUN(test_cases);
  RUN(test_bundle_and_ptx);
  RUN(test_wgmma_source);
  RUN(test_hfuse_pipeline);
  RUN(test_wgmma_conv_source);
  RUN(test_no_gpu_message);
  printf("cuda ops: %d runs compared on the GPU, %d compiled only (no GPU), %d exported, %d cases skipped\n", ran,
         compiled_only, exported, skipped);
  return bm_test_finish();
}
