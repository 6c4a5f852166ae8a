/* test_cuda_attn_source.c - which CUDA attention kernel each ATTENTION node
 * gets (codegen/clike/emit_attention.c): the sm_90a wgmma body with the FA2
 * mma.sync body as its fallback, the configuration per head dim and flags,
 * and BM_CUDA_ATTN. Source text only (no NVRTC, no GPU: test_ops_cuda
 * compiles and runs the kernels). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../codegen/clike/clike.h"
#include "../passes/passes.h"
#include "cuda_source.h"
#include "testutil.h"

typedef struct at_case {
  int64_t d, dv;
  bool causal, mask;
  bm_dtype dt;
  int64_t seq; /* queries and keys (0: 300) */
  int window;
} at_case;

/* the CUDA source of one attention node (2, 4, seq, d) x (2, 2, seq, d); caller frees */
static char *attn_source(at_case c) {
  bm_module *m = bm_module_create("attn");
  bm_graph *g = bm_graph_create(m, "main");
  const int64_t S = c.seq ? c.seq : 300;
  bm_node *q = bm_input(g, "q", c.dt, 4, (int64_t[]){2, 4, S, c.d}); // (batch, heads, seq, head_dim)
  bm_node *k = bm_input(g, "k", c.dt, 4, (int64_t[]){2, 2, S, c.d});
  bm_node *v = bm_input(g, "v", c.dt, 4, (int64_t[]){2, 2, S, c.dv});
  bm_node *mask = c.mask ? bm_input(g, "mask", BM_DTYPE_F32, 2, (int64_t[]){S, S}) : NULL;
  bm_output_add(g, "o", bm_attention(g, q, k, v, mask, 0.0f, c.causal, c.window, 0.0f));
  char *src = bm_test_cuda_source(m, g);
  bm_module_destroy(m);
  return src;
}

/* the wgmma body (the prelude only defines the helpers; kernels call them on o, pa) */
static bool has_wgmma(const char *s) { return strstr(s, "(o, pa[kk], dv + kk * 128)") != NULL; }

/* the warp-specialized body: a producer warpgroup, registers moved to the consumers */
static bool is_ws(const char *s) {
  return strstr(s, "__launch_bounds__(384, 1)") && strstr(s, "bm_att_setmaxnreg_dec<40>()") &&
         strstr(s, "bm_att_setmaxnreg_inc<232>()");
}

/* the kernel's TMA loads (tensor maps for Q, K, V; `grid` the blocks per
 * multiprocessor of its _tmd: 1 persistent, 0 one block per task) */
static bool has_tma(const char *s, int grid) {
  char want[64];
  snprintf(want, sizeof want, "_tmd)[] = {828665204ll, ");
  const char *t = strstr(s, want);
  if (!t || !strstr(s, "bm_att_tma_load2d(sk0 + ps * ") || !strstr(s, "bm_att_tma_load2d(sv0 + ps * ")) return false;
  t = strchr(t + strlen(want), ','); /* past the shared memory */
  return t && atoi(t + 1) == grid;
}

/* the dynamic tile scheduler: the counters, the ticket, the reset by the last block */
static bool has_dyn(const char *s) {
  return strstr(s, "static unsigned int bm_tcnt[2];") && strstr(s, "(int)nblk + (int)atomicAdd(&bm_tcnt[0], 1u)") &&
         strstr(s, "atomicExch(&bm_tcnt[0], 0u);") && strstr(s, "atomicExch(&bm_tcnt[1], 0u);");
}

/* FA3's ping-pong of the two consumer warpgroups (named barriers 3, 4) */
static bool has_pp(const char *s) {
  return strstr(s, "bm_att_bar_sync(3 + wg, 256);") && strstr(s, "bm_att_bar_arrive(3 + (wg ^ 1), 256);");
}

/* three consumer warpgroups (attn3wg): 512 threads, producers 32 registers, consumers 160 */
static bool is_ws3(const char *s) {
  return strstr(s, "__launch_bounds__(512, 1)") && strstr(s, "bm_att_setmaxnreg_dec<32>()") &&
         strstr(s, "bm_att_setmaxnreg_inc<160>()");
}

/* their ping-pong: a ring of named barriers 4, 5, 6 */
static bool has_pp3(const char *s) {
  return strstr(s, "if (wg == 2) bm_att_bar_arrive(4, 256);") && strstr(s, "bm_att_bar_sync(4 + wg, 256);") &&
         strstr(s, "bm_att_bar_arrive(wg == 2 ? 4 : 5 + wg, 256);");
}

static void test_defaults(void) {
  /* head dim 64: the warp-specialized kernel with three consumer warpgroups (attn3wg);
   * FA2 in #else, storing only its 12 warps' rows */
  char *s = attn_source((at_case){64, 64, false, false, BM_DTYPE_F16});
  CHECK(s && has_wgmma(s) && is_ws3(s) && strstr(s, "bm_wgmma_rs_f16_n64(o"));
  const char *kern = s ? strstr(s, "_attention(const bm_gpu_args") : NULL; /* past the prelude */
  CHECK(kern && strstr(kern, "#if defined(__CUDA_ARCH_FEAT_SM90_ALL)\n") && strstr(kern, "#else\n") &&
        strstr(kern, "bm_mma_f16(o[") && strstr(kern, "warp < 12"));
  free(s);
  /* with a mask: two (w2n128ws) */
  s = attn_source((at_case){64, 64, false, true, BM_DTYPE_F16});
  CHECK(s && is_ws(s) && strstr(s, "wgmma attention w2n128ws") && strstr(s, "warp < 8"));
  free(s);
  /* head dim 128, causal, bf16; without masking; with a mask: the same kernel, 128-key tiles */
  s = attn_source((at_case){128, 128, true, false, BM_DTYPE_BF16});
  CHECK(s && has_wgmma(s) && is_ws(s) && strstr(s, "bm_wgmma_rs_bf16_n128(o") && strstr(s, "bm_wgmma_ss_bf16_n128(s") &&
        strstr(s, "bm_mma_bf16(o["));
  free(s);
  s = attn_source((at_case){128, 128, false, false, BM_DTYPE_F16});
  CHECK(s && has_wgmma(s) && is_ws(s) && strstr(s, "bm_wgmma_ss_f16_n128(s"));
  free(s);
  s = attn_source((at_case){128, 128, false, true, BM_DTYPE_F16});
  CHECK(s && has_wgmma(s) && is_ws(s));
  free(s);
  /* head dim 80 / 96 (padded to 128) and Dv 64 */
  s = attn_source((at_case){96, 64, true, false, BM_DTYPE_F16});
  CHECK(s && has_wgmma(s) && strstr(s, "bm_wgmma_rs_f16_n64(o") && strstr(s, "bm_wgmma_ss_f16_n128(s"));
  free(s);
  /* the loads: TMA for head dims 64 and 128, on a persistent grid with Q
   * prefetched and the dynamic scheduler without causal masking or a mask
   * (the ping-pong at head dim 128 only) and with causal masking over at
   * most 8k keys (head groups, the ping-pong), one block per task with the
   * ping-pong otherwise; cp.async at head dim 64 with causal masking over
   * more keys, a window or a mask, and at other head dims (w2n128ws) */
  s = attn_source((at_case){64, 64, false, false, BM_DTYPE_F16});
  CHECK(s && is_ws3(s) && has_tma(s, 1) && has_pp3(s) && has_dyn(s) && strstr(s, "wgmma attention w3n128tmaqd_pp */") &&
        strstr(s, "const int r2 = bh2 * (int)Sq + qt2 * 192 + wg * 64;") &&
        strstr(s, "const int qt2 = t2 % nq2, bh2 = t2 / nq2;"));
  free(s);
  s = attn_source((at_case){128, 128, false, false, BM_DTYPE_BF16});
  CHECK(s && is_ws(s) && has_tma(s, 1) && has_pp(s) && has_dyn(s) && strstr(s, "wgmma attention w2n128tmaqd_pp"));
  free(s);
  /* causal over at most 8k keys, no window or mask: the head groups (both head dims); at head
   * dim 128 over at most 1k keys the head-major order (a head's query tiles in a row) */
  s = attn_source((at_case){128, 128, true, false, BM_DTYPE_BF16, 4096});
  CHECK(s && is_ws(s) && has_tma(s, 1) && has_pp(s) && has_dyn(s) && strstr(s, "wgmma attention w2n128tmaqg_pp") &&
        strstr(s, "const int qt = nqi - 1 - grk / gsz, bh = g0 + grk % gsz;"));
  free(s);
  s = attn_source((at_case){128, 128, true, false, BM_DTYPE_BF16, 1024});
  CHECK(s && is_ws(s) && has_tma(s, 1) && has_pp(s) && has_dyn(s) && strstr(s, "wgmma attention w2n128tmaqh_pp") &&
        !strstr(s, "grk / gsz") && strstr(s, "const int qt = nqi - 1 - t % nqi, bh = t / nqi;"));
  free(s);
  s = attn_source((at_case){64, 64, true, false, BM_DTYPE_F16, 8192});
  CHECK(s && is_ws3(s) && has_tma(s, 1) && has_pp3(s) && has_dyn(s) && strstr(s, "wgmma attention w3n128tmaqg_pp") &&
        strstr(s, "const int qt = nqi - 1 - grk / gsz, bh = g0 + grk % gsz;"));
  free(s);
  /* longer, or with a window or mask: one block per task (d128), cp.async (d64) */
  s = attn_source((at_case){128, 128, true, false, BM_DTYPE_BF16, 8193});
  CHECK(s && is_ws(s) && has_tma(s, 0) && has_pp(s) && !has_dyn(s) && strstr(s, "wgmma attention w2n128tma_pp"));
  free(s);
  s = attn_source((at_case){128, 128, true, false, BM_DTYPE_F16, 0, 64});
  CHECK(s && has_tma(s, 0) && !has_dyn(s) && strstr(s, "wgmma attention w2n128tma_pp"));
  free(s);
  s = attn_source((at_case){128, 128, false, true, BM_DTYPE_F16});
  CHECK(s && is_ws(s) && has_tma(s, 0) && has_pp(s));
  free(s);
  s = attn_source((at_case){128, 128, true, true, BM_DTYPE_F16});
  CHECK(s && has_tma(s, 0) && !has_dyn(s) && strstr(s, "wgmma attention w2n128tma_pp"));
  free(s);
  /* head dim 64 causal over more keys: three warpgroups, longest first across the heads */
  s = attn_source((at_case){64, 64, true, false, BM_DTYPE_F16, 16384});
  CHECK(s && is_ws3(s) && has_tma(s, 1) && has_pp3(s) && has_dyn(s) && strstr(s, "wgmma attention w3n128tmaqd_pp") &&
        strstr(s, "qt = nqi - 1 - t / bhn, bh = t % bhn"));
  free(s);
  s = attn_source((at_case){64, 64, true, false, BM_DTYPE_F16, 0, 64}); /* a window: w2n128ws */
  CHECK(s && is_ws(s) && !strstr(s, "_tmd)") && !has_pp(s) && strstr(s, "wgmma attention w2n128ws"));
  free(s);
  s = attn_source((at_case){96, 64, false, false, BM_DTYPE_F16});
  CHECK(s && is_ws(s) && !strstr(s, "_tmd)") && strstr(s, "wgmma attention w2n128ws"));
  free(s);
  /* head dim 256 and f32: no wgmma */
  s = attn_source((at_case){256, 256, false, false, BM_DTYPE_F16});
  CHECK(s && !has_wgmma(s) && strstr(s, "bm_mma_f16(o["));
  free(s);
  s = attn_source((at_case){64, 64, false, false, BM_DTYPE_F32});
  CHECK(s && !has_wgmma(s));
  free(s);
}

static void test_env(void) {
  setenv("BM_CUDA_ATTN", "fa2", 1);
  char *s = attn_source((at_case){64, 64, false, false, BM_DTYPE_F16});
  CHECK(s && !has_wgmma(s) && strstr(s, "bm_mma_f16(o["));
  free(s);
  /* the barrier-synchronized configs: one warpgroup with two blocks a
   * multiprocessor; three warpgroups with 64-key tiles */
  setenv("BM_CUDA_ATTN", "w1n128p", 1);
  s = attn_source((at_case){64, 64, false, false, BM_DTYPE_F16});
  CHECK(s && has_wgmma(s) && !is_ws(s) && strstr(s, "__launch_bounds__(128, 2)"));
  free(s);
  setenv("BM_CUDA_ATTN", "w3n64p", 1);
  s = attn_source((at_case){128, 128, false, false, BM_DTYPE_F16});
  CHECK(s && has_wgmma(s) && !is_ws(s) && strstr(s, "bm_wgmma_ss_f16_n64(s") && strstr(s, "__launch_bounds__(384, 1)"));
  free(s);
  /* the previous default and the other TMA configs, by name */
  setenv("BM_CUDA_ATTN", "w2n128ws", 1);
  s = attn_source((at_case){128, 128, false, false, BM_DTYPE_F16});
  CHECK(s && is_ws(s) && !strstr(s, "_tmd)") && !has_pp(s));
  free(s);
  setenv("BM_CUDA_ATTN", "w2n128tma", 1);
  s = attn_source((at_case){64, 64, true, false, BM_DTYPE_F16});
  CHECK(s && is_ws(s) && has_tma(s, 0) && !has_pp(s));
  free(s);
  setenv("BM_CUDA_ATTN", "w2n128tmap_pp", 1);
  s = attn_source((at_case){128, 128, true, false, BM_DTYPE_F16});
  CHECK(s && is_ws(s) && has_tma(s, 1) && has_pp(s) && !strstr(s, "const int r2 ="));
  free(s);
  /* the previous default without causal masking (a static task order) */
  setenv("BM_CUDA_ATTN", "w2n128tmaq_pp", 1);
  s = attn_source((at_case){64, 64, false, false, BM_DTYPE_F16});
  CHECK(s && is_ws(s) && has_tma(s, 1) && has_pp(s) && !has_dyn(s) && strstr(s, "const int r2 ="));
  free(s);
  /* the dynamic scheduler with causal masking: tasks longest first across
   * the heads, the next task's Q rows in the same order */
  setenv("BM_CUDA_ATTN", "w2n128tmaqd_pp", 1);
  s = attn_source((at_case){128, 128, true, false, BM_DTYPE_F16});
  CHECK(s && is_ws(s) && has_tma(s, 1) && has_pp(s) && has_dyn(s) &&
        strstr(s, "qt = nqi - 1 - t / bhn, bh = t % bhn") &&
        strstr(s, "const int qt2 = nq2 - 1 - t2 / (int)(B * Hq), bh2 = t2 % (int)(B * Hq);"));
  free(s);
  /* head-major causal order (a head's query tiles in a row, longest first) */
  setenv("BM_CUDA_ATTN", "w2n128tmaqh_pp", 1);
  s = attn_source((at_case){128, 128, true, false, BM_DTYPE_F16});
  CHECK(s && has_dyn(s) && strstr(s, "qt = nqi - 1 - t % nqi, bh = t / nqi") &&
        strstr(s, "const int qt2 = nq2 - 1 - t2 % nq2, bh2 = t2 / nq2;"));
  free(s);
  /* longest first within groups of heads whose K/V fit in L2: the group
   * size from Sk (512 bytes a key at head dim 128, f16), the budget (16 MiB,
   * BM_CUDA_ATTN_L2 at compile time) and the grid; the same order for the
   * tile and the Q prefetch; without causal masking the static order */
  setenv("BM_CUDA_ATTN", "w2n128tmaqg_pp", 1);
  s = attn_source((at_case){128, 128, true, false, BM_DTYPE_F16});
  CHECK(s && is_ws(s) && has_tma(s, 1) && has_pp(s) && has_dyn(s) && strstr(s, "wgmma attention w2n128tmaqg_pp") &&
        strstr(s, "const int gkv = Sk > 0 ? (int)(16777216ll / ((bm_i64)Sk * 512)) : 1, gq = (int)(Hq / Hkv);") &&
        strstr(s, "const int tgh = (gn > 1 ? gn : 1) * gq;") &&
        strstr(s, "const int g0 = t / (tgh * nqi) * tgh, gsz = bhn - g0 < tgh ? bhn - g0 : tgh, grk = t - g0 * nqi;") &&
        strstr(s, "const int qt = nqi - 1 - grk / gsz, bh = g0 + grk % gsz;") &&
        strstr(s, "const int qt2 = nq2 - 1 - grk2 / gsz2, bh2 = g02 + grk2 % gsz2;"));
  free(s);
  setenv("BM_CUDA_ATTN_L2", "1000000", 1);
  s = attn_source((at_case){64, 64, true, false, BM_DTYPE_BF16});
  CHECK(s && has_dyn(s) && strstr(s, "const int gkv = Sk > 0 ? (int)(1000000ll / ((bm_i64)Sk * 256)) : 1,"));
  free(s);
  unsetenv("BM_CUDA_ATTN_L2");
  setenv("BM_CUDA_ATTN", "w2n128tmaqg", 1);
  s = attn_source((at_case){64, 64, false, false, BM_DTYPE_F16});
  CHECK(s && has_tma(s, 1) && !has_pp(s) && has_dyn(s) && !strstr(s, "tgh") &&
        strstr(s, "const int qt2 = t2 % nq2, bh2 = t2 / nq2;"));
  free(s);
  setenv("BM_CUDA_ATTN", "w2n128tmapd_pp", 1);
  s = attn_source((at_case){64, 64, true, false, BM_DTYPE_F16});
  CHECK(s && is_ws(s) && has_tma(s, 1) && has_pp(s) && has_dyn(s) && !strstr(s, "const int r2 ="));
  free(s);
  unsetenv("BM_CUDA_ATTN");
}

/* ---- attn3wg: three consumer warpgroups (w3n*: 192 query rows a block, 512 threads; the
 * producers at 32 registers, the consumers at 160; no hold; the ping-pong a ring of named
 * barriers 4 + wg past the Q barriers 1 + wg) */
static void test_three_wg(void) {
  setenv("BM_CUDA_ATTN", "w3n128tmaqd", 1);
  char *s = attn_source((at_case){64, 64, false, false, BM_DTYPE_F16});
  CHECK(s && strstr(s, "wgmma attention w3n128tmaqd */") && strstr(s, "__launch_bounds__(512, 1)") &&
        strstr(s, "bm_att_setmaxnreg_dec<32>()") && strstr(s, "bm_att_setmaxnreg_inc<160>()") && has_tma(s, 1) &&
        has_dyn(s) && !strstr(s, "bm_wg_hold(lr") && !strstr(s, "bm_att_bar_sync(4 + wg") &&
        strstr(s, "bm_att_bar_sync(1 + wg, 128);") && strstr(s, "bm_att_mbar_init(ek0 + 8 * x, 12u);") &&
        strstr(s, "bm_att_mbar_init(te0 + 8 * x, 512u);") && strstr(s, "for (int x = 0; x < 6; x++) bm_att_mbar_init(qbar0") &&
        strstr(s, "const int nqt = (Sq + 191) / 192;") && strstr(s, "const int r2 = bh2 * (int)Sq + qt2 * 192 + wg * 64;") &&
        strstr(s, "bm_wgmma_ss_f16_n128(s") && strstr(s, "warp < 12"));
  free(s);
  setenv("BM_CUDA_ATTN", "w3n64tmaqd_pp", 1);
  s = attn_source((at_case){64, 64, false, false, BM_DTYPE_BF16});
  CHECK(s && strstr(s, "bm_wgmma_ss_bf16_n64(s") && has_pp3(s) && !has_pp(s));
  free(s);
  setenv("BM_CUDA_ATTN", "w3n64tmaqg_pp", 1);
  s = attn_source((at_case){64, 64, true, false, BM_DTYPE_F16});
  CHECK(s && has_dyn(s) && strstr(s, "const int qt = nqi - 1 - grk / gsz, bh = g0 + grk % gsz;") &&
        has_pp3(s));
  free(s);
  setenv("BM_CUDA_ATTN", "w3n64tma_pp", 1);
  s = attn_source((at_case){64, 64, true, false, BM_DTYPE_F16});
  CHECK(s && has_tma(s, 0) && !has_dyn(s) && strstr(s, "bm_att_setmaxnreg_dec<40>()") &&
        strstr(s, "bm_att_setmaxnreg_inc<152>()"));
  free(s);
  /* two warpgroups keep barriers 3 + wg (the generated code unchanged) */
  setenv("BM_CUDA_ATTN", "w2n128tmaqd_pp", 1);
  s = attn_source((at_case){64, 64, false, false, BM_DTYPE_F16});
  CHECK(s && has_pp(s) && strstr(s, "if (wg == 1) bm_att_bar_arrive(3, 256);") && is_ws(s));
  free(s);
  unsetenv("BM_CUDA_ATTN");
}
/* ---- end attn3wg */

/* ---- attnsum: the softmax's short chains (wa_soft, BM_CUDA_ATTN_ILP): Dv above 64 by
 * default the max trees and 4 partial sums a row; Dv 64 and ILP 0 the old chains (one
 * running max, a 32-deep sum); the peeled first step of w2n128ws at Dv 128 keeps them */
static bool ilp_chains(const char *s, int ilp) {
  char want[64];
  snprintf(want, sizeof want, "float ls[2][%d];", ilp);
  return strstr(s, "float mt[2][16];") && strstr(s, "mt[rr][x] = fmaxf(mt[rr][x], mt[rr][x + 8]);") &&
         strstr(s, "mx2[rr] = fmaxf(mx2[rr], BM_SHFL_XOR(mx2[rr], 2));") && strstr(s, want) &&
         strstr(s, "lr[rr] = lr[rr] * corr[rr] + ls[rr][0];");
}
static bool old_chains(const char *s) { return strstr(s, "ls += p;") && strstr(s, "lr[rr] = lr[rr] * corr[rr] + ls;"); }

static void test_softmax_ilp(void) {
  char *s = attn_source((at_case){128, 128, false, false, BM_DTYPE_F16}); /* w2n128tmaqd_pp */
  CHECK(s && ilp_chains(s, 4) && strstr(s, "ls[rr][x] += ls[rr][x + 2];") && !old_chains(s));
  free(s);
  s = attn_source((at_case){128, 128, true, false, BM_DTYPE_BF16});
  CHECK(s && ilp_chains(s, 4) && !old_chains(s));
  free(s);
  s = attn_source((at_case){64, 64, false, false, BM_DTYPE_F16});
  CHECK(s && old_chains(s) && !strstr(s, "float mt[2]"));
  free(s);
  /* head dim 80 (w2n128ws, no ping-pong): the first step the old chains, the loop the short */
  s = attn_source((at_case){80, 80, true, false, BM_DTYPE_BF16});
  CHECK(s && strstr(s, "wgmma attention w2n128ws */") && old_chains(s) && ilp_chains(s, 4));
  free(s);
  setenv("BM_CUDA_ATTN_ILP", "0", 1);
  s = attn_source((at_case){128, 128, false, false, BM_DTYPE_F16});
  CHECK(s && old_chains(s) && !strstr(s, "float mt[2]"));
  free(s);
  setenv("BM_CUDA_ATTN_ILP", "8", 1);
  s = attn_source((at_case){64, 64, false, false, BM_DTYPE_F16});
  CHECK(s && ilp_chains(s, 8) && strstr(s, "ls[rr][x] += ls[rr][x + 4];") && !old_chains(s));
  free(s);
  setenv("BM_CUDA_ATTN_ILP", "9", 1); /* out of range: the default */
  s = attn_source((at_case){128, 128, false, false, BM_DTYPE_F16});
  CHECK(s && ilp_chains(s, 4));
  free(s);
  unsetenv("BM_CUDA_ATTN_ILP");
}
/* ---- end attnsum */

int main(void) {
  RUN(test_defaults);
  RUN(test_env);
  RUN(test_three_wg);
  RUN(test_softmax_ilp);
  return bm_test_finish();
}
