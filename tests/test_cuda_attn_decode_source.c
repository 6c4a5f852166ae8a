/* test_cuda_attn_decode_source.c - which CUDA decode attention kernel a node
 * gets (codegen/clike/emit_attention.c "decode"): the streaming kernel for
 * f16/bf16 K/V with D = Dv a power of two and at most 8 rows a kv head, the
 * tiled one otherwise and with BM_CUDA_ATTN_DEC=old, and the streaming
 * kernel's configuration knobs. Source text only (no NVRTC, no GPU:
 * test_ops_cuda compiles and runs the kernels). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_source.h"
#include "testutil.h"

/* the CUDA source of one decode attention: q (1, hq, sq, d) over a cache
 * (1, hkv, 4096, d) with kv_len; caller frees */
static char *dec_source(int64_t hq, int64_t hkv, int64_t sq, int64_t d, bm_dtype q_dt, bm_dtype kv_dt) {
  bm_module *m = bm_module_create("dec");
  bm_graph *g = bm_graph_create(m, "main");
  bm_node *q = bm_input(g, "q", q_dt, 4, (int64_t[]){1, hq, sq, d});        // (batch, heads, seq, head_dim)
  bm_node *k = bm_input(g, "k", kv_dt, 4, (int64_t[]){1, hkv, 4096, d});    // (batch, kv heads, cache, head_dim)
  bm_node *v = bm_input(g, "v", kv_dt, 4, (int64_t[]){1, hkv, 4096, d});
  bm_node *len = bm_input(g, "len", BM_DTYPE_I32, 1, (int64_t[]){1});
  bm_output_add(g, "o", bm_attention_kv(g, q, k, v, NULL, len, 0.0f, true, 0, 0.0f));
  char *src = bm_test_cuda_source(m, g);
  bm_module_destroy(m);
  return src;
}

/* the streaming kernel keeps the warps' acc in shared wacc; the tiled one stages keys in ks */
static bool is_stream(const char *s) { return s && strstr(s, "float *wacc = (float *)bm_dsm;") != NULL; }
static bool is_tiled(const char *s) { return s && strstr(s, "float *ks = (float *)bm_dsm") != NULL; }

static void test_choice(void) {
  unsetenv("BM_CUDA_ATTN_DEC");
  struct {
    int64_t hq, hkv, sq, d;
    bm_dtype q, kv;
    bool stream;
  } cases[] = {
      {32, 8, 1, 128, BM_DTYPE_BF16, BM_DTYPE_BF16, true},  /* LLaMA-3-8B decode: 4 rows a kv head */
      {32, 32, 1, 128, BM_DTYPE_F16, BM_DTYPE_F16, true},   /* MHA */
      {16, 2, 1, 64, BM_DTYPE_F16, BM_DTYPE_F16, true},     /* 8 rows */
      {8, 8, 2, 256, BM_DTYPE_F32, BM_DTYPE_BF16, true},    /* an f32 query over a bf16 cache */
      {32, 2, 1, 128, BM_DTYPE_F16, BM_DTYPE_F16, false},   /* 16 rows */
      {8, 8, 1, 128, BM_DTYPE_F32, BM_DTYPE_F32, false},    /* f32 cache */
      {8, 8, 1, 96, BM_DTYPE_F16, BM_DTYPE_F16, false},     /* 12 lanes a key row */
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char *s = dec_source(cases[i].hq, cases[i].hkv, cases[i].sq, cases[i].d, cases[i].q, cases[i].kv);
    CHECK(s != NULL);
    if (!s) continue;
    if (is_stream(s) != cases[i].stream || is_tiled(s) == cases[i].stream)
      fprintf(stderr, "case %zu: stream %d tiled %d, want stream %d\n", i, is_stream(s), is_tiled(s), cases[i].stream);
    CHECK(is_stream(s) == cases[i].stream);
    CHECK(is_tiled(s) != cases[i].stream);
    free(s);
  }
}

static void test_knobs(void) {
  setenv("BM_CUDA_ATTN_DEC", "old", 1);
  char *s = dec_source(32, 8, 1, 128, BM_DTYPE_BF16, BM_DTYPE_BF16);
  CHECK(is_tiled(s) && !is_stream(s));
  free(s);
  /* defaults at 4 rows: 4 K loads a lane per step (2 keys a warp load: a step of 32 keys), the
   * next step's loads issued ahead, 2 blocks per multiprocessor (264 blocks a run: 33 splits of 8
   * kv heads), __expf, the scores reduce-scattered over a key's lanes (one exponential per
   * (row, key) owner: sv) */
  unsetenv("BM_CUDA_ATTN_DEC");
  s = dec_source(32, 8, 1, 128, BM_DTYPE_BF16, BM_DTYPE_BF16);
  CHECK(s && strstr(s, "__launch_bounds__(128, 2)") && strstr(s, "j0 += 32)") && strstr(s, "bm_u4 kn[") &&
        strstr(s, "(int)264 / (B * Hkv)") && strstr(s, "__expf(sv[") && !strstr(s, "__expf(s[rr][u] - mu)"));
  free(s);
  /* p0m3: the 4-row default before (no prefetch, 3 blocks per multiprocessor) */
  setenv("BM_CUDA_ATTN_DEC", "p0m3", 1);
  s = dec_source(32, 8, 1, 128, BM_DTYPE_BF16, BM_DTYPE_BF16);
  CHECK(s && strstr(s, "__launch_bounds__(128, 3)") && !strstr(s, "bm_u4 kn[") && strstr(s, "(int)396 / (B * Hkv)"));
  free(s);
  unsetenv("BM_CUDA_ATTN_DEC");
  /* r0: every lane of a key's group computes the scores (the streaming kernel before the reduce-scatter) */
  setenv("BM_CUDA_ATTN_DEC", "r0", 1);
  s = dec_source(32, 8, 1, 128, BM_DTYPE_BF16, BM_DTYPE_BF16);
  CHECK(s && strstr(s, "__expf(s[rr][u] - mu)") && !strstr(s, "__expf(sv["));
  free(s);
  unsetenv("BM_CUDA_ATTN_DEC");
  /* one row: prefetch on, 4 blocks per multiprocessor */
  s = dec_source(32, 32, 1, 128, BM_DTYPE_F16, BM_DTYPE_F16);
  CHECK(s && strstr(s, "__launch_bounds__(128, 4)") && strstr(s, "bm_u4 kn[4], vn[4];"));
  /* k100: at least 100 keys a split, rounded up to the block step (128); the default has no floor */
  CHECK(s && !strstr(s, "chunk0"));
  free(s);
  setenv("BM_CUDA_ATTN_DEC", "k100", 1);
  s = dec_source(32, 32, 1, 128, BM_DTYPE_F16, BM_DTYPE_F16);
  CHECK(s && strstr(s, "chunk0 = ((span + nsr - 1) / nsr") && strstr(s, "chunk = chunk0 > 128 ? chunk0 : 128;"));
  free(s);
  unsetenv("BM_CUDA_ATTN_DEC");
  /* forced: 2 loads, 8 warps, expf, 1000 blocks */
  setenv("BM_CUDA_ATTN_DEC", "u2w8e0b1000", 1);
  s = dec_source(32, 8, 1, 128, BM_DTYPE_BF16, BM_DTYPE_BF16);
  CHECK(s && strstr(s, "__launch_bounds__(256, 1)") && strstr(s, "j0 += 32)") && strstr(s, "(int)1000 / (B * Hkv)") &&
        strstr(s, " expf(sv[") && !strstr(s, "__expf("));
  free(s);
  unsetenv("BM_CUDA_ATTN_DEC");
}

/* the splits merged in clusters (dec_cluster_merge): c8, clusters of 8 on sm_90a images
 * (__cluster_dims__ under __CUDA_ARCH_FEAT_SM90_ALL; the other images take the global partials of
 * every split: ucl false), the splits a multiple of 8 (33 of 8 kv heads -> 40 in the grid), the
 * run's split count rounded down to whole clusters, the counter and the combine per cluster; the
 * default (and c0): no clusters; c4: clusters of 4 */
static void test_cluster(void) {
  setenv("BM_CUDA_ATTN_DEC", "c8", 1);
  char *s = dec_source(32, 8, 1, 128, BM_DTYPE_BF16, BM_DTYPE_BF16);
  CHECK(s && strstr(s, "#define BM_KATTR __cluster_dims__(8, 1, 1)") && strstr(s, "B * Hkv * 40;") &&
        strstr(s, "const bool ucl = nsr0 >= 8;") && strstr(s, "#else\n    const bool ucl = false;\n#endif") &&
        strstr(s, "nsr = ucl ? nsr0 / 8 * 8 : nsr0;") && strstr(s, "nlb = ucl ? (nlive + 7) / 8 * 8 : nlive;") &&
        strstr(s, "if (sp >= nlb) continue;") && strstr(s, "float *pp = ucl ? cpart :") &&
        strstr(s, "bm_cluster_sync();") && strstr(s, "bm_cluster_ld_f32(cb + ") &&
        strstr(s, "sp / 8) * 528;") && strstr(s, "e += 1024)") && strstr(s, "bm_cluster_arrive();") &&
        strstr(s, "if (ucl) bm_cluster_wait();") && strstr(s, "done == (unsigned int)(nlb) - 1u;") &&
        strstr(s, "const int ncb = ucl ? nlb / 8 : nact;"));
  free(s);
  for (int i = 0; i < 2; i++) {
    if (i) setenv("BM_CUDA_ATTN_DEC", "c0", 1);
    else unsetenv("BM_CUDA_ATTN_DEC");
    s = dec_source(32, 8, 1, 128, BM_DTYPE_BF16, BM_DTYPE_BF16);
    CHECK(s && !strstr(s, "__cluster_dims__(") && !strstr(s, "ucl") && !strstr(s, "bm_cluster_sync();") &&
          strstr(s, "B * Hkv * 33;") && strstr(s, "if (sp >= nlive) continue;") &&
          strstr(s, "done == (unsigned int)(nlive) - 1u;") && strstr(s, "const int ncb = nact;"));
    free(s);
  }
  setenv("BM_CUDA_ATTN_DEC", "c4", 1);
  s = dec_source(32, 8, 1, 128, BM_DTYPE_BF16, BM_DTYPE_BF16);
  CHECK(s && strstr(s, "__cluster_dims__(4, 1, 1)") && strstr(s, "B * Hkv * 36;") && strstr(s, "e += 512)"));
  free(s);
  /* the tiled kernel: no clusters */
  setenv("BM_CUDA_ATTN_DEC", "old", 1);
  s = dec_source(32, 8, 1, 128, BM_DTYPE_BF16, BM_DTYPE_BF16);
  CHECK(s && is_tiled(s) && !strstr(s, "__cluster_dims__(") && !strstr(s, "ucl"));
  free(s);
  unsetenv("BM_CUDA_ATTN_DEC");
}

/* the publication and the last block's combine (dec_finish, dec_combine_one), the prefetch of two
 * steps: the default publishes by one thread's release atomic after a barrier (no
 * __threadfence) and, at 4 rows of d128 (a thread a 4-column chunk), loads each thread's acc of
 * the first 32 splits before the weights' phase (o3); one row (fewer chunks than threads) takes
 * the one-phase combine (o1, chunks of 8 splits at the 4-block bound); a0o0 the kernel before;
 * o1 / o2 at 4 rows chunks of 32 / 16; p2 the loads of two steps ahead (not at one row: spills) */
static void test_combine(void) {
  unsetenv("BM_CUDA_ATTN_DEC");
  char *s = dec_source(32, 8, 1, 128, BM_DTYPE_BF16, BM_DTYPE_BF16);
  CHECK(s && strstr(s, "atom.acq_rel.gpu.global.add.u32") && !strstr(s, "__threadfence()") &&
        !strstr(s, "atomicAdd(") && strstr(s, "float4 ap[32];") && strstr(s, "w * ap[u].x") &&
        strstr(s, "cw[s2 * 4 + rr]") && !strstr(s, "float2 ml[32]") && strstr(s, "bm_u4 kn[4]") && !strstr(s, "kn2["));
  free(s);
  s = dec_source(32, 32, 1, 128, BM_DTYPE_F16, BM_DTYPE_F16);
  CHECK(s && strstr(s, "atom.acq_rel.gpu.global.add.u32") && strstr(s, "float2 ml[8];") && strstr(s, "cmx[e0] = M;") &&
        !strstr(s, "ap[u]") && !strstr(s, "cw[s2"));
  free(s);
  setenv("BM_CUDA_ATTN_DEC", "a0o0", 1);
  s = dec_source(32, 8, 1, 128, BM_DTYPE_BF16, BM_DTYPE_BF16);
  CHECK(s && !strstr(s, "atom.acq_rel") && strstr(s, "__threadfence();") && strstr(s, "atomicAdd(&bm_cnt[") &&
        !strstr(s, "ap[u]") && !strstr(s, "cmx[") && strstr(s, "cw[s2 * 4 + rr] = w;"));
  free(s);
  setenv("BM_CUDA_ATTN_DEC", "o1", 1);
  s = dec_source(32, 8, 1, 128, BM_DTYPE_BF16, BM_DTYPE_BF16);
  CHECK(s && strstr(s, "float2 ml[32];") && strstr(s, "float4 a[32];") && !strstr(s, "ap[u]"));
  free(s);
  setenv("BM_CUDA_ATTN_DEC", "o2", 1);
  s = dec_source(32, 8, 1, 128, BM_DTYPE_BF16, BM_DTYPE_BF16);
  CHECK(s && strstr(s, "float2 ml[16];") && strstr(s, "float4 a[16];"));
  free(s);
  setenv("BM_CUDA_ATTN_DEC", "p2", 1);
  s = dec_source(32, 8, 1, 128, BM_DTYPE_BF16, BM_DTYPE_BF16);
  CHECK(s && strstr(s, "bm_u4 kn2[4], vn2[4];") && strstr(s, "if (j0 + 64 < c1)") && strstr(s, "kn[u] = kn2[u];"));
  free(s);
  s = dec_source(32, 32, 1, 128, BM_DTYPE_F16, BM_DTYPE_F16);
  CHECK(s && !strstr(s, "kn2[") && strstr(s, "bm_u4 kn[4]"));
  free(s);
  unsetenv("BM_CUDA_ATTN_DEC");
}

int main(void) {
  RUN(test_choice);
  RUN(test_knobs);
  RUN(test_cluster);
  RUN(test_combine);
  return bm_test_finish();
}
