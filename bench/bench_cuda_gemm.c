/* bench_cuda_gemm.c - packs the CUDA GEMM and attention benchmarks: one
 * package per shape (a one-op graph whose operands are all inputs), timed on
 * the GPU machine by `bm_cuda_check --bench` against PyTorch (cuBLAS, SDPA)
 * by bench/cuda_bench.py. Runs here (needs NVRTC, no GPU); see bench/README.md.
 *
 *   bench_cuda_gemm DIR [ARCHS]     writes DIR/<case>.bmpk and DIR/list.txt
 *                                   (ARCHS default sm_90)
 *
 * list.txt: one line per case: "gemm NAME DTYPE M N K TB" (TB 1: B is (N, K),
 * as nn.Linear) or "attn NAME DTYPE B H S D CAUSAL". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../compiler/compile.h"

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
    {"sq8192_bf16", BM_DTYPE_BF16, 8192, 8192, 8192, 1},
    {"sq8192_f16", BM_DTYPE_F16, 8192, 8192, 8192, 1},
    {"llm_qkvo_2048x4096x4096", BM_DTYPE_BF16, 2048, 4096, 4096, 1},
    {"llm_up_2048x11008x4096", BM_DTYPE_BF16, 2048, 11008, 4096, 1},
    {"llm_down_2048x4096x11008", BM_DTYPE_BF16, 2048, 4096, 11008, 1},
    {"unet_proj_4096x320x320", BM_DTYPE_F16, 4096, 320, 320, 1},
    {"unet_ff_4096x2560x320", BM_DTYPE_F16, 4096, 2560, 320, 1},
    {"unet_ff_1024x640x2560", BM_DTYPE_F16, 1024, 640, 2560, 1},
};

typedef struct acase {
  const char *name;
  bm_dtype dt;
  int64_t b, h, s, d;
  int causal;
} acase;

static const acase attns[] = {
    {"attn_s1024_d64", BM_DTYPE_F16, 1, 16, 1024, 64, 0},
    {"attn_s1024_d128", BM_DTYPE_F16, 1, 16, 1024, 128, 0},
    {"attn_s4096_d64", BM_DTYPE_F16, 1, 16, 4096, 64, 0},
    {"attn_s4096_d128_causal", BM_DTYPE_F16, 1, 16, 4096, 128, 1},
};

static bm_status compile_to(bm_module *m, bm_graph *g, const char *archs, const char *path) {
  bm_status gs = bm_graph_status(g);
  if (gs) return bm_status_make(BM_ERR_INTERNAL, "%s: %s", path, bm_status_message(gs));
  bm_compile_options co;
  bm_compile_options_init(&co);
  co.target.backend = "cuda";
  co.target.cpu = archs;
  return bm_compile_module(m, &co, path);
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
  for (size_t i = 0; !st && i < sizeof gemms / sizeof *gemms; i++) {
    const gcase *c = &gemms[i];
    bm_module *m = bm_module_create("gemm");
    bm_graph *g = bm_graph_create(m, "main");
    int64_t sa[2] = {c->m, c->k}, sb[2] = {c->tb ? c->n : c->k, c->tb ? c->k : c->n};
    bm_node *a = bm_input(g, "a", c->dt, 2, sa), *b = bm_input(g, "b", c->dt, 2, sb);
    bm_output_add(g, "y", bm_matmul(g, a, b, false, c->tb));
    snprintf(path, sizeof path, "%s/%s.bmpk", dir, c->name);
    st = compile_to(m, g, archs, path);
    bm_module_destroy(m);
    fprintf(list, "gemm %s %s %lld %lld %lld %d\n", c->name, bm_dtype_name(c->dt), (long long)c->m, (long long)c->n,
            (long long)c->k, c->tb);
  }
  for (size_t i = 0; !st && i < sizeof attns / sizeof *attns; i++) {
    const acase *c = &attns[i];
    bm_module *m = bm_module_create("attn");
    bm_graph *g = bm_graph_create(m, "main");
    int64_t sh[4] = {c->b, c->h, c->s, c->d}; // (batch, heads, seq, head_dim)
    bm_node *q = bm_input(g, "q", c->dt, 4, sh), *k = bm_input(g, "k", c->dt, 4, sh);
    bm_node *v = bm_input(g, "v", c->dt, 4, sh);
    bm_output_add(g, "o", bm_attention(g, q, k, v, NULL, 0.0f, c->causal, 0, 0.0f));
    snprintf(path, sizeof path, "%s/%s.bmpk", dir, c->name);
    st = compile_to(m, g, archs, path);
    bm_module_destroy(m);
    fprintf(list, "attn %s %s %lld %lld %lld %lld %d\n", c->name, bm_dtype_name(c->dt), (long long)c->b,
            (long long)c->h, (long long)c->s, (long long)c->d, c->causal);
  }
  fclose(list);
  if (st) {
    fprintf(stderr, "bench_cuda_gemm: %s\n", bm_status_message(st));
    bm_status_free(st);
    return 1;
  }
  printf("bench_cuda_gemm: packed %zu GEMM and %zu attention cases for %s into %s\n",
         sizeof gemms / sizeof *gemms, sizeof attns / sizeof *attns, archs, dir);
  return 0;
}
