/* bench_cuda_gemm.c - packs the CUDA GEMM and attention benchmarks: one
 * package per shape (a one-op graph whose operands are all inputs), timed on
 * the GPU machine by `bm_cuda_check --bench` against PyTorch (cuBLAS, SDPA)
 * by bench/cuda_bench.py. Runs here (needs NVRTC, no GPU); see bench/README.md.
 *
 *   bench_cuda_gemm DIR [ARCHS]     writes DIR/<case>.bmpk and DIR/list.txt
 *                                   (ARCHS default sm_90); BM_BENCH_KINDS=gemm,conv
 *                                   packs only those kinds (gemm, gemv, smallm, qgemm,
 *                                   conv, attn);
 *                                   BM_BENCH_ONLY=s1,s2 only the GEMM cases whose
 *                                   names contain one of them
 *
 * list.txt: one line per case: "gemm NAME DTYPE M N K TB REPS" (TB 1: B is (N, K),
 * as nn.Linear; REPS GEMMs per run, over distinct B inputs, so that the
 * run's launch and synchronization are amortized: bm's time per GEMM is the
 * run time / REPS), "gemv NAME WDTYPE M N K REPS WBYTES" (REPS GEMVs per run,
 * WBYTES weight bytes each), "conv NAME DTYPE N C H W O KH KW STRIDE PAD" or
 * "attn NAME DTYPE B H S D CAUSAL REPS HKV CHAIN2" (REPS attentions per run, each
 * one's output the next one's queries, so that the run's launch and
 * synchronization are amortized as torch's back-to-back calls do: bm's
 * time per attention is the run time / REPS; the decode step (S < 0): REPS
 * over distinct K/V copies, and NAME_x2.bmpk chains CHAIN2 = 2 REPS, so that
 * (run(CHAIN2) - run(REPS)) / REPS is one attention's device time without the
 * run's fixed launch, output copy and synchronization; CHAIN2 0: none). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../compiler/compile.h"
#include "../ir/interp.h"

typedef struct gcase {
  const char *name;
  bm_dtype dt;
  int64_t m, n, k;
  int tb;
} gcase;

/* square, then LLM (7B-class prefill of 2048 tokens: qkv/o, MLP up, down)
 * and UNet (SD 1.5 at 64x64 latents: attention projections, feed-forward) */
static const gcase gemms[] = {
    {"sq4096_bf16", BM_DTYPE_BF16, 4096, 4096, 4096, 1},
    {"sq4096_f16", BM_DTYPE_F16, 4096, 4096, 4096, 1},
    {"sq4096_bf16_nn", BM_DTYPE_BF16, 4096, 4096, 4096, 0},
    {"sq4096_f16_nn", BM_DTYPE_F16, 4096, 4096, 4096, 0},
    {"llm_up_2048x14336x4096_nn", BM_DTYPE_BF16, 2048, 14336, 4096, 0},
    {"sq8192_bf16", BM_DTYPE_BF16, 8192, 8192, 8192, 1},
    {"sq8192_f16", BM_DTYPE_F16, 8192, 8192, 8192, 1},
    {"llm_qkvo_2048x4096x4096", BM_DTYPE_BF16, 2048, 4096, 4096, 1},
    {"llm_up_2048x11008x4096", BM_DTYPE_BF16, 2048, 11008, 4096, 1},
    {"llm_down_2048x4096x11008", BM_DTYPE_BF16, 2048, 4096, 11008, 1},
    {"llm_up_2048x14336x4096", BM_DTYPE_BF16, 2048, 14336, 4096, 1},
    {"llm_down_2048x4096x14336", BM_DTYPE_BF16, 2048, 4096, 14336, 1},
    {"unet_proj_4096x320x320", BM_DTYPE_F16, 4096, 320, 320, 1},
    {"unet_ff_4096x2560x320", BM_DTYPE_F16, 4096, 2560, 320, 1},
    {"unet_ff_1024x640x2560", BM_DTYPE_F16, 1024, 640, 2560, 1},
};

/* decode GEMV (LLaMA-3-8B, one token; M = 4..16: a batch of tokens): y (M, N) = x (M, K) f32 @ W (N, K)^T
 * with W bf16 / i8 per channel / i4 in groups of 32. Each package chains
 * `reps` independent GEMVs over distinct weights (about 1 GiB per run, so
 * bm_session_run's launch + synchronization is amortized and L2 holds none
 * of them); the weights are states (zero on the device: the bytes cost the
 * same), so neither the package nor the carry holds them. */
typedef struct vcase {
  const char *name;
  bm_dtype wt;
  int64_t m, n, k, group; /* group: i4 group size (0: per channel) */
  bm_dtype at;             /* activations (0: f32) */
} vcase;

static const vcase gemvs[] = {
    {"gemv_qkvo_4096x4096_bf16", BM_DTYPE_BF16, 1, 4096, 4096, 0},
    {"gemv_up_14336x4096_bf16", BM_DTYPE_BF16, 1, 14336, 4096, 0},
    {"gemv_down_4096x14336_bf16", BM_DTYPE_BF16, 1, 4096, 14336, 0},
    {"gemv_lmhead_128256x4096_bf16", BM_DTYPE_BF16, 1, 128256, 4096, 0},
    {"gemv_m4_up_14336x4096_bf16", BM_DTYPE_BF16, 4, 14336, 4096, 0},
    {"gemv_m8_up_14336x4096_bf16", BM_DTYPE_BF16, 8, 14336, 4096, 0},
    {"gemv_m16_up_14336x4096_bf16", BM_DTYPE_BF16, 16, 14336, 4096, 0},
    {"gemv_qkvo_4096x4096_i8", BM_DTYPE_I8, 1, 4096, 4096, 0},
    {"gemv_up_14336x4096_i8", BM_DTYPE_I8, 1, 14336, 4096, 0},
    {"gemv_down_4096x14336_i8", BM_DTYPE_I8, 1, 4096, 14336, 0},
    {"gemv_qkvo_4096x4096_i4g32", BM_DTYPE_I4, 1, 4096, 4096, 32},
    {"gemv_up_14336x4096_i4g32", BM_DTYPE_I4, 1, 14336, 4096, 32},
    {"gemv_down_4096x14336_i4g32", BM_DTYPE_I4, 1, 4096, 14336, 32},
    {"gemv_lmhead_128256x4096_i4g32", BM_DTYPE_I4, 1, 128256, 4096, 32},
    {"gemv_m4_up_14336x4096_i4g32", BM_DTYPE_I4, 4, 14336, 4096, 32},
    {"gemv_m16_up_14336x4096_i4g32", BM_DTYPE_I4, 16, 14336, 4096, 32},
};

/* small-M GEMM (batched decode, speculative verify; codegen/clike/emit_gemm_small.c):
 * the LLaMA-3-8B layer shapes at 2..64 rows with bf16 activations (bf16 weights
 * at every M, int8 per channel and int4 in groups of 32 but at 32), as "gemv" lines
 * named sm_m<M>_<shape>_<w>; BM_BENCH_KINDS=smallm packs only them, BM_BENCH_ONLY
 * filters them by name as the GEMM cases */
static const struct {
  const char *name;
  int64_t n, k;
} sm_shapes[] = {{"qkvo", 4096, 4096}, {"kv", 1024, 4096}, {"up", 14336, 4096}, {"down", 4096, 14336}};
static const int sm_rows[] = {2, 4, 8, 16, 32, 64};

/* quantized weights with many rows (LLM prefill of 2048 tokens with int8 / int4
 * weights, LLaMA-3-8B shapes, bf16 activations): y = x @ dequant(q, s)^T as the
 * quantize pass leaves it, so the CUDA pipeline picks the form (fuse_dequant:
 * DEQUANT to bf16 + the TMA GEMM above 64 rows; BM_CUDA_QGEMM=old at bmc time:
 * the QMATMUL scalar tile), as "gemm" lines timed against torch's bf16 matmul of
 * the same shape; q and s are states (zeros on the device: the bytes cost the
 * same). `m16` cases: 16 rows, QMATMUL (the small-M GEMM) vs `_dq`, the DEQUANT
 * + GEMM a prefill function whose row symbol reaches 2048 runs for a 16-token
 * prompt; `qgemm_dq_*`: the DEQUANT alone, as a "gemv" line whose WBYTES are
 * its bytes read and written (bandwidth against the copy). */
typedef struct qcase {
  const char *name;
  int64_t m, n, k, group; /* group: i4 group size (0: int8 per channel) */
  int form;               /* 0: matmul(x, dequant) for the pipeline; 1: DEQUANT to bf16 + MATMUL; 2: DEQUANT alone */
} qcase;

static const qcase qgemms[] = {
    {"qgemm_qkvo_2048x4096x4096_i8", 2048, 4096, 4096, 0, 0},
    {"qgemm_qkvo_2048x4096x4096_i4g32", 2048, 4096, 4096, 32, 0},
    {"qgemm_up_2048x14336x4096_i8", 2048, 14336, 4096, 0, 0},
    {"qgemm_up_2048x14336x4096_i4g32", 2048, 14336, 4096, 32, 0},
    {"qgemm_down_2048x4096x14336_i8", 2048, 4096, 14336, 0, 0},
    {"qgemm_down_2048x4096x14336_i4g32", 2048, 4096, 14336, 32, 0},
    {"qgemm_m16_up_14336x4096_i4g32", 16, 14336, 4096, 32, 0},
    {"qgemm_m16_up_14336x4096_i4g32_dq", 16, 14336, 4096, 32, 1},
    {"qgemm_dq_up_14336x4096_i8", 1, 14336, 4096, 0, 2},
    {"qgemm_dq_up_14336x4096_i4g32", 1, 14336, 4096, 32, 2},
    {"qgemm_dq_up_14336x4096_i4g128", 1, 14336, 4096, 128, 2},
    {"qgemm_dq_up_14336x4096_i4pr", 1, 14336, 4096, 4096, 2}, /* per-row scales */
};

/* SD 1.5 UNet convolutions (batch 2), f16 */
typedef struct ccase {
  const char *name;
  int64_t n, c, h, w, o, kh, kw, stride, pad;
} ccase;

static const ccase convs[] = {
    {"conv_320c_64x64", 2, 320, 64, 64, 320, 3, 3, 1, 1},
    {"conv_640c_32x32", 2, 640, 32, 32, 640, 3, 3, 1, 1},
    {"conv_1280c_16x16", 2, 1280, 16, 16, 1280, 3, 3, 1, 1},
    {"conv_320c_64x64_s2", 2, 320, 64, 64, 320, 3, 3, 2, 1},
    {"conv_1x1_640c_32x32", 2, 640, 32, 32, 640, 1, 1, 1, 0},
    /* the SD 1.5 VAE decoder's 3x3 convolutions (batch 1) */
    {"conv_vae_512c_64x64", 1, 512, 64, 64, 512, 3, 3, 1, 1},
    {"conv_vae_512c_128x128", 1, 512, 128, 128, 512, 3, 3, 1, 1},
    {"conv_vae_256c_256x256", 1, 256, 256, 256, 256, 3, 3, 1, 1},
    {"conv_vae_128c_512x512", 1, 128, 512, 512, 128, 3, 3, 1, 1},
};

/* A conv's weights as a model has them: bound (so the CUDA backend may
 * reorder them once at compile time, passes/layout_conv.c), random f16 in
 * [-0.05, 0.05) repeating every 4099 values (zstd-compressed in the
 * package: the carry stays small; the kernels' speed does not depend on
 * the values) */
static bm_node *conv_weight(bm_graph *g, const ccase *c) {
  const int64_t n = c->o * c->c * c->kh * c->kw;
  uint16_t *d = bm_arena_alloc(g->module->arena, (size_t)n * 2);
  if (!d) return NULL;
  uint64_t st = 12345;
  for (int64_t i = 0; i < n; i++) {
    if (i < 4099) {
      st = st * 6364136223846793005ull + 1442695040888963407ull;
      d[i] = bm_f32_to_f16((float)((double)(st >> 40) / (double)(1ull << 24) - 0.5) * 0.1f);
    } else {
      d[i] = d[i - 4099];
    }
  }
  return bm_weight(g, "w", BM_DTYPE_F16, 4, (int64_t[]){c->o, c->c, c->kh, c->kw}, d, (size_t)n * 2);
}

/* quantized bytes of one GEMV's weights (with its f32 scales) */
static int64_t gemv_weight_bytes(const vcase *c) {
  int64_t nk = c->n * c->k;
  if (c->wt == BM_DTYPE_BF16) return 2 * nk;
  int64_t groups = c->group ? c->k / c->group : 1;
  return (c->wt == BM_DTYPE_I8 ? nk : nk / 2) + 4 * c->n * groups;
}

typedef struct acase {
  const char *name;
  bm_dtype dt;
  int64_t b, h, s, d;
  int causal;
  int64_t hkv; /* KV heads (GQA; 0: h) */
  int kvc;     /* decode: chained attentions over kvc distinct K/V copies per run (0: one), so that a
                * short one is timed from HBM, not L2, and without a run's launch and sync each */
} acase;

/* batch * heads chosen so each case runs a few ms; S = 1 is the decode step
 * (one query row over S keys: bm's split-key kernel vs SDPA with q of length 1) */
static const acase attns[] = {
    {"attn_s1024_d64", BM_DTYPE_F16, 32, 16, 1024, 64, 0},
    {"attn_s1024_d128", BM_DTYPE_F16, 32, 16, 1024, 128, 0},
    {"attn_s1024_d128_causal_bf16", BM_DTYPE_BF16, 32, 16, 1024, 128, 1},
    {"attn_s4096_d64", BM_DTYPE_F16, 4, 16, 4096, 64, 0},
    {"attn_s4096_d64_causal_bf16", BM_DTYPE_BF16, 4, 16, 4096, 64, 1},
    {"attn_s4096_d128", BM_DTYPE_BF16, 4, 16, 4096, 128, 0},
    {"attn_s4096_d128_causal", BM_DTYPE_F16, 4, 16, 4096, 128, 1},
    {"attn_s16384_d64_causal", BM_DTYPE_F16, 1, 8, 16384, 64, 1},
    {"attn_s16384_d128", BM_DTYPE_BF16, 1, 4, 16384, 128, 0},
    {"attn_s16384_d128_causal", BM_DTYPE_F16, 1, 8, 16384, 128, 1},
    /* 8k keys: the last causal length on the head groups (emit_attention.c, WA_SHORT_SK) */
    {"attn_s8192_d64_causal", BM_DTYPE_F16, 2, 16, 8192, 64, 1},
    {"attn_s8192_d128_causal_bf16", BM_DTYPE_BF16, 2, 16, 8192, 128, 1},
    {"attn_dec_s4096_d128", BM_DTYPE_F16, 8, 32, -4096, 128, 0},
    {"attn_dec_s16384_d128_bf16", BM_DTYPE_BF16, 4, 32, -16384, 128, 0},
    /* attndec: LLaMA-3-8B's decode (32 query heads on 8 KV heads) at batch 1 and 8; a batch-1 MHA
     * decode (LLaMA-2-7B) */
    /* 1k keys: 16 copies (64 MiB of K/V, more than the 50 MiB L2), so that both sides read HBM */
    {"attn_dec_llama3_s1024_d128_bf16", BM_DTYPE_BF16, 1, 32, -1024, 128, 0, 8, 16},
    {"attn_dec_llama3_s8192_d128_bf16", BM_DTYPE_BF16, 1, 32, -8192, 128, 0, 8, 7},
    {"attn_dec_llama3_s16384_d128_bf16", BM_DTYPE_BF16, 1, 32, -16384, 128, 0, 8, 7},
    {"attn_dec_llama3_b8_s4096_d128_bf16", BM_DTYPE_BF16, 8, 32, -4096, 128, 0, 8, 4},
    {"attn_dec_b1_s4096_d128", BM_DTYPE_F16, 1, 32, -4096, 128, 0, 0, 7},
};

/* BM_BENCH_KINDS (comma-separated kinds; unset: all) includes `kind`? */
static bool kind_on(const char *kind) {
  const char *env = getenv("BM_BENCH_KINDS");
  if (!env || !*env) return true;
  size_t n = strlen(kind);
  for (const char *p = strstr(env, kind); p; p = strstr(p + 1, kind))
    if ((p == env || p[-1] == ',') && (p[n] == 0 || p[n] == ',')) return true;
  return false;
}

/* BM_BENCH_ONLY (comma-separated substrings; unset: all) matches GEMM case `name`? */
static bool gemm_on(const char *name) {
  const char *env = getenv("BM_BENCH_ONLY");
  if (!env || !*env) return true;
  char buf[256];
  snprintf(buf, sizeof buf, "%s", env);
  for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ","))
    if (strstr(name, tok)) return true;
  return false;
}

static bm_status compile_to_opt(bm_module *m, bm_graph *g, const char *archs, const char *path, bool compress) {
  bm_status gs = bm_graph_status(g);
  if (gs) return bm_status_make(BM_ERR_INTERNAL, "%s: %s", path, bm_status_message(gs));
  bm_compile_options co;
  bm_compile_options_init(&co);
  co.target.backend = "cuda";
  co.target.cpu = archs;
  co.compress = compress; /* zstd weights */
  return bm_compile_module(m, &co, path);
}
static bm_status compile_to(bm_module *m, bm_graph *g, const char *archs, const char *path) {
  return compile_to_opt(m, g, archs, path, false);
}

/* packs one "gemv" case: REPS y = x @ W^T (QMATMUL for int weights) over distinct
 * state weights, about 1 GiB per run */
static bm_status pack_gemv(const vcase *c, const char *dir, const char *archs, FILE *list) {
  char path[4096];
  int64_t wb = gemv_weight_bytes(c), reps = ((int64_t)1 << 30) / wb;
  if (reps < 1) reps = 1;
  bm_module *m = bm_module_create("gemv");
  bm_graph *g = bm_graph_create(m, "main");
  bm_node *x = bm_input(g, "x", c->at, 2, (int64_t[]){c->m, c->k});
  for (int64_t r = 0; r < reps; r++) {
    char nm[64];
    snprintf(nm, sizeof nm, "w%lld", (long long)r);
    bm_node *w = bm_state(g, nm, c->wt, 2, (int64_t[]){c->n, c->k}), *y;
    if (c->wt == BM_DTYPE_BF16) {
      y = bm_matmul(g, x, w, false, true);
    } else {
      snprintf(nm, sizeof nm, "s%lld", (long long)r);
      int64_t groups = c->group ? c->k / c->group : 1;
      y = bm_qmatmul(g, x, w, bm_state(g, nm, BM_DTYPE_F32, 2, (int64_t[]){c->n, groups}));
    }
    snprintf(nm, sizeof nm, "y%lld", (long long)r);
    bm_output_add(g, nm, y);
  }
  snprintf(path, sizeof path, "%s/%s.bmpk", dir, c->name);
  bm_status st = compile_to(m, g, archs, path);
  bm_module_destroy(m);
  fprintf(list, "gemv %s %s %lld %lld %lld %lld %lld\n", c->name, bm_dtype_name(c->wt), (long long)c->m,
          (long long)c->n, (long long)c->k, (long long)reps, (long long)wb);
  return st;
}

/* packs one qgemm case (see qgemms): REPS products (or dequants) over distinct state weights */
static bm_status pack_qgemm(const qcase *c, const char *dir, const char *archs, FILE *list) {
  char path[4096];
  const bm_dtype qt = c->group ? BM_DTYPE_I4 : BM_DTYPE_I8;
  const int64_t groups = c->group ? c->k / c->group : 1;
  const int64_t qbytes = (c->group ? c->n * c->k / 2 : c->n * c->k) + 4 * c->n * groups;
  /* reps: about 1 ms of GEMMs at 600 TFLOP/s (dequant alone: 256 MiB of weights), at most 8 */
  double ms = 2.0 * (double)c->m * (double)c->n * (double)c->k / 6e11;
  int64_t reps = c->form == 2 ? ((int64_t)256 << 20) / qbytes : ms >= 1.0 ? 1 : (int64_t)(1.0 / ms) + 1;
  if (reps > 8) reps = 8;
  if (reps < 1) reps = 1;
  bm_module *m = bm_module_create("qgemm");
  bm_graph *g = bm_graph_create(m, "main");
  bm_node *x = bm_input(g, "x", BM_DTYPE_BF16, 2, (int64_t[]){c->m, c->k}); // (rows, K)
  for (int64_t r = 0; r < reps; r++) {
    char nm[64];
    snprintf(nm, sizeof nm, "q%lld", (long long)r);
    bm_node *q = bm_state(g, nm, qt, 2, (int64_t[]){c->n, c->k});
    snprintf(nm, sizeof nm, "s%lld", (long long)r);
    bm_node *s = bm_state(g, nm, BM_DTYPE_F32, 2, (int64_t[]){c->n, groups});
    bm_node *w = c->form ? bm_node_make_typed(g, BM_OP_DEQUANT, 2, (bm_node *[]){q, s}, NULL, BM_DTYPE_BF16, 2, q->shape)
                         : bm_dequant(g, q, s); // (N, K)
    snprintf(nm, sizeof nm, "y%lld", (long long)r);
    bm_output_add(g, nm, c->form == 2 ? w : bm_matmul(g, x, w, false, true));
  }
  snprintf(path, sizeof path, "%s/%s.bmpk", dir, c->name);
  bm_status st = compile_to(m, g, archs, path);
  bm_module_destroy(m);
  if (c->form == 2) /* the dequant's bytes: q and s read, bf16 written */
    fprintf(list, "gemv %s %s 1 %lld %lld %lld %lld\n", c->name, bm_dtype_name(qt), (long long)c->n, (long long)c->k,
            (long long)reps, (long long)(qbytes + 2 * c->n * c->k));
  else
    fprintf(list, "gemm %s bf16 %lld %lld %lld 1 %lld\n", c->name, (long long)c->m, (long long)c->n, (long long)c->k,
            (long long)reps);
  return st;
}

int main(int argc, char **argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: bench_cuda_gemm DIR [ARCHS]\n");
    return 2;
  }
  const char *dir = argv[1], *archs = argc > 2 ? argv[2] : "sm_90";
  char path[4096];
  snprintf(path, sizeof path, "%s/list.txt", dir);
  FILE *list = fopen(path, "w");
  if (!list) {
    fprintf(stderr, "bench_cuda_gemm: cannot write %s (does the folder exist?)\n", path);
    return 1;
  }
  bm_status st = NULL;
  size_t ngemm = 0;
  for (size_t i = 0; !st && kind_on("gemm") && i < sizeof gemms / sizeof *gemms; i++) {
    const gcase *c = &gemms[i];
    if (!gemm_on(c->name)) continue;
    bm_module *m = bm_module_create("gemm");
    bm_graph *g = bm_graph_create(m, "main");
    int64_t sa[2] = {c->m, c->k}, sb[2] = {c->tb ? c->n : c->k, c->tb ? c->k : c->n};
    /* reps: about 1 ms of GEMMs per run at 600 TFLOP/s, at most 8 and 256 MiB of B inputs */
    double ms = 2.0 * (double)c->m * (double)c->n * (double)c->k / 6e11;
    int64_t reps = ms >= 1.0 ? 1 : (int64_t)(1.0 / ms) + 1, bbytes = 2 * c->n * c->k;
    if (reps > 8) reps = 8;
    if (reps > ((int64_t)256 << 20) / bbytes) reps = ((int64_t)256 << 20) / bbytes;
    if (reps < 1) reps = 1;
    bm_node *a = bm_input(g, "a", c->dt, 2, sa);
    for (int64_t r = 0; r < reps; r++) {
      char nm[32];
      snprintf(nm, sizeof nm, "b%lld", (long long)r);
      bm_node *b = bm_input(g, nm, c->dt, 2, sb);
      snprintf(nm, sizeof nm, "y%lld", (long long)r);
      bm_output_add(g, nm, bm_matmul(g, a, b, false, c->tb));
    }
    snprintf(path, sizeof path, "%s/%s.bmpk", dir, c->name);
    st = compile_to(m, g, archs, path);
    bm_module_destroy(m);
    ngemm++;
    fprintf(list, "gemm %s %s %lld %lld %lld %d %lld\n", c->name, bm_dtype_name(c->dt), (long long)c->m,
            (long long)c->n, (long long)c->k, c->tb, (long long)reps);
  }
  for (size_t i = 0; !st && kind_on("gemv") && i < sizeof gemvs / sizeof *gemvs; i++)
    st = pack_gemv(&gemvs[i], dir, archs, list);
  size_t nsmall = 0;
  for (size_t si = 0; !st && kind_on("smallm") && si < sizeof sm_shapes / sizeof *sm_shapes; si++)
    for (size_t ri = 0; !st && ri < sizeof sm_rows / sizeof *sm_rows; ri++)
      for (int wi = 0; !st && wi < 3; wi++) {
        const int m = sm_rows[ri];
        if (wi > 0 && m == 32) continue; /* int8 / int4: fewer rows */
        char nm[96];
        const char *wn = wi == 0 ? "bf16" : wi == 1 ? "i8" : "i4g32";
        snprintf(nm, sizeof nm, "sm_m%d_%s_%lldx%lld_%s", m, sm_shapes[si].name, (long long)sm_shapes[si].n,
                 (long long)sm_shapes[si].k, wn);
        if (!gemm_on(nm)) continue;
        vcase c = {nm, wi == 0 ? BM_DTYPE_BF16 : wi == 1 ? BM_DTYPE_I8 : BM_DTYPE_I4, m, sm_shapes[si].n,
                   sm_shapes[si].k, wi == 2 ? 32 : 0, BM_DTYPE_BF16};
        st = pack_gemv(&c, dir, archs, list);
        nsmall++;
      }
  size_t nq = 0;
  for (size_t i = 0; !st && kind_on("qgemm") && i < sizeof qgemms / sizeof *qgemms; i++)
    if (gemm_on(qgemms[i].name)) st = pack_qgemm(&qgemms[i], dir, archs, list), nq++;
  for (size_t i = 0; !st && kind_on("conv") && i < sizeof convs / sizeof *convs; i++) {
    const ccase *c = &convs[i];
    bm_module *m = bm_module_create("conv");
    bm_graph *g = bm_graph_create(m, "main");
    bm_node *x = bm_input(g, "x", BM_DTYPE_F16, 4, (int64_t[]){c->n, c->c, c->h, c->w}); // (batch, C, H, W)
    bm_node *w = conv_weight(g, c); // (out, in, kh, kw)
    bm_output_add(g, "y", bm_conv2d(g, x, w, NULL, (int)c->stride, (int)c->stride, (int)c->pad, (int)c->pad, 1, 1, 1));
    snprintf(path, sizeof path, "%s/%s.bmpk", dir, c->name);
    st = compile_to_opt(m, g, archs, path, true);
    bm_module_destroy(m);
    fprintf(list, "conv %s f16 %lld %lld %lld %lld %lld %lld %lld %lld %lld\n", c->name, (long long)c->n,
            (long long)c->c, (long long)c->h, (long long)c->w, (long long)c->o, (long long)c->kh, (long long)c->kw,
            (long long)c->stride, (long long)c->pad);
  }
  for (size_t i = 0; !st && kind_on("attn") && i < sizeof attns / sizeof *attns; i++) {
    const acase *c = &attns[i];
    if (getenv("BM_BENCH_ATTN_ONLY") && !strstr(c->name, getenv("BM_BENCH_ATTN_ONLY")))
      continue;
    /* prefill: about 2 ms of attention per run at 400 TFLOP/s, at most 8 */
    int64_t sk = c->s < 0 ? -c->s : c->s, hkv = c->hkv ? c->hkv : c->h;
    double flop = 4.0 * (double)(c->b * c->h) * (double)sk * (double)sk * (double)c->d * (c->causal ? 0.5 : 1.0);
    int64_t reps = c->s < 0 ? 1 : (int64_t)(2.0 / (flop / 4e11)) + 1; /* ms at 4e11 FLOP/ms */
    if (reps > 8) reps = 8;
    if (getenv("BM_BENCH_ATTN_REPS") && atoi(getenv("BM_BENCH_ATTN_REPS")) > 0) /* experiments: a fixed count */
      reps = atoi(getenv("BM_BENCH_ATTN_REPS"));
    if (c->s < 0 && c->kvc > 1) reps = c->kvc;
    /* decode: a second package NAME_x2 chains twice as many attentions, so that the time of one
     * attention on the device is (run(2 REPS) - run(REPS)) / REPS, without the run's fixed launch,
     * output copy and synchronization (cuda_bench.py prints both) */
    int64_t chain2 = c->s < 0 ? 2 * reps : 0;
    for (int pass = 0; !st && pass < (chain2 ? 2 : 1); pass++) {
      int64_t n = pass ? chain2 : reps;
      bm_module *m = bm_module_create("attn");
      bm_graph *g = bm_graph_create(m, "main");
      int64_t sh[4] = {c->b, hkv, sk, c->d}, shq[4] = {c->b, c->h, c->s < 0 ? 1 : sk, c->d}; // (batch, heads, seq, head_dim)
      bm_node *o = bm_input(g, "q", c->dt, 4, shq), *k = bm_input(g, "k", c->dt, 4, sh); // (batch, heads, seq, head_dim)
      bm_node *v = bm_input(g, "v", c->dt, 4, sh);
      for (int64_t r = 0; r < n; r++) {
        if (r > 0 && c->s < 0 && c->kvc > 1) { /* copy r of K and V */
          char kn[16], vn[16];
          snprintf(kn, sizeof kn, "k%d", (int)r), snprintf(vn, sizeof vn, "v%d", (int)r);
          k = bm_input(g, kn, c->dt, 4, sh), v = bm_input(g, vn, c->dt, 4, sh);
        }
        o = bm_attention(g, o, k, v, NULL, 0.0f, c->causal, 0, 0.0f);
      }
      bm_output_add(g, "o", o);
      snprintf(path, sizeof path, "%s/%s%s.bmpk", dir, c->name, pass ? "_x2" : "");
      st = compile_to(m, g, archs, path);
      bm_module_destroy(m);
    }
    fprintf(list, "attn %s %s %lld %lld %lld %lld %d %lld %lld %lld\n", c->name, bm_dtype_name(c->dt), (long long)c->b,
            (long long)c->h, (long long)c->s, (long long)c->d, c->causal, (long long)reps, (long long)hkv,
            (long long)chain2);
  }
  fclose(list);
  if (st) {
    fprintf(stderr, "bench_cuda_gemm: %s\n", bm_status_message(st));
    bm_status_free(st);
    return 1;
  }
  printf("bench_cuda_gemm: packed %zu GEMM, %zu GEMV (%zu small-M), %zu quantized-GEMM, %zu conv and %zu attention "
         "cases for %s into %s\n",
         ngemm, (kind_on("gemv") ? sizeof gemvs / sizeof *gemvs : 0) + nsmall, nsmall, nq,
         kind_on("conv") ? sizeof convs / sizeof *convs : 0, kind_on("attn") ? sizeof attns / sizeof *attns : 0, archs,
         dir);
  return 0;
}
