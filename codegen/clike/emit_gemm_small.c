/* emit_gemm_small.c - the small-M GEMM of the C-like emitter (batched decode,
 * speculative verify: 2..64 rows): weight-streaming mma.sync on the tensor cores. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emit_internal.h"

/* C (M, N) = A (M, K) @ W (N, K)^T with a few rows M (the batch dims of A
 * folded), W bf16 / f16 (MATMUL, B stored (N, K) as nn.Linear) or int8 /
 * int4 with f32 scales per row and group (QMATMUL), computed transposed:
 * C^T = W A^T, so the weights are mma.sync m16n8k16's A operand (16 weight
 * rows per tile) and the activations its B operand (8 rows per n8 tile).
 *
 * A warp owns NT tiles of 16 weight rows and one of NW K slices (a block of
 * NW warps = one row tile of 16 NT rows, K split over its warps). Each lane
 * (g = lane / 4, q = lane % 4) streams 16-byte chunks of rows g and g + 8 of
 * each tile (`bm_ld16_stream`, non-allocating): a "round" is 4 chunks per
 * row (64 bytes), the 4 lanes of a quad holding one each; a warp does two
 * adjacent rounds (a 128-byte line per row) per step and loads the next
 * step's into registers while it computes this one. mma sums the 16 K of a
 * step over the quad's lanes in any order, so the K order inside a round is
 * chosen per weight dtype and the activations follow it:
 *   bf16/f16: lane q's chunk (8 elements) is steps 0 and 1, 4 elements each,
 *     the mma's pairs in memory order;
 *   int8/int4: the quad first transposes its 4 x 4 words with 4 shuffles, so
 *     lane q holds word q of each of the round's 4 chunks and step s of the
 *     round draws from one chunk (one scale group) on every lane: int8 a
 *     word (4 elements) per step, pairs (0, 2) (1, 3); int4 a word (8
 *     elements) per 2 steps, pairs (j, j + 4). The dequantization is exact:
 *     the biased byte/nibble under a magic exponent (f16 1024, bf16 128) with
 *     one fma, or through f32 (int8 to bf16).
 * The activations are read with plain loads (through L1, shared by the
 * block's warps; plain loads cannot move above the programmatic-launch
 * wait), packed into the same pairs; f32 activations are split into bf16
 * hi + lo (two MMAs, f32 accuracy as emit_gemm.c's split tile). f32
 * accumulation; int scales per group on each group's partial sums (per
 * channel at the end). Shared memory reduces the NW K slices; the block's
 * threads apply the epilogue (bias, activation, residual, cast) per output.
 *
 * Needs K static and a multiple of the round (32 bf16/f16, 64 int8, 128
 * int4 elements), a scale group that holds whole chunks and either fits a
 * round a whole number of times or spans whole rounds, weights that are
 * graph sources (weights, constants, inputs, states: never written by an
 * earlier kernel of the run), and the dtype pairs bf16 x (bf16 | f32),
 * f16 x f16, int x (f32 | bf16 | f16). ck_gemm_small_ok says when. */

#define SM_MAX_ROWS 64

/* A configuration (BM_CUDA_SMALLM=name picks one for every small-M GEMM at
 * compile time, for comparisons; "0" turns the kernel off). A name may be
 * followed by flags that change the default: "p1" prefetches the block's
 * first tile into L2 before the PDL wait (as the GEMV does; slower on an
 * H100), "s0" loads each step's weights at the step (no register double
 * buffering); the flags alone keep the default configuration. */
typedef struct sm_cfg {
  const char *name;
  int nt;   /* 16-row tiles per warp */
  int nw;   /* warps per block (= K slices) */
  int minb; /* blocks per multiprocessor for __launch_bounds__ (registers: 65536 / (32 nw minb)) */
  int u;    /* rounds (64 bytes of each row) in flight per warp step: 2 or 4 */
  bool pf;    /* L2 prefetch of the first tile before the PDL wait ("p1") */
  bool nopipe; /* no double buffering of the weight loads ("s0") */
} sm_cfg;

static const sm_cfg sm_cfgs[] = {
    {"t1w8", 1, 8, 2, 2},    {"t2w8", 2, 8, 2, 2},    {"t4w8", 4, 8, 1, 2},   {"t1w16", 1, 16, 1, 2},
    {"t2w16", 2, 16, 1, 2},  {"t1w4", 1, 4, 4, 2},    {"t2w4", 2, 4, 3, 2},   {"t1w8b1", 1, 8, 1, 2},
    {"t2w8b1", 2, 8, 1, 2},  {"t1w4b2", 1, 4, 2, 2},  {"t1w8u4", 1, 8, 2, 4}, {"t1w4u4", 1, 4, 4, 4},
    {"t1w16u4", 1, 16, 1, 4}, {"t2w8u4", 2, 8, 1, 4},
};

static int elems_per_chunk(bm_dtype t) {
  switch (t) {
    case BM_DTYPE_BF16:
    case BM_DTYPE_F16: return 8;
    case BM_DTYPE_I8: return 16;
    case BM_DTYPE_I4: return 32;
    default: return 0;
  }
}

static int64_t rows_max(const bm_graph *g, const bm_node *n) {
  int64_t r = 1;
  for (int d = 0; d < n->ndim - 1; d++) r *= ck_dim_max(g, n->shape[d]);
  return r;
}

/* the mma operand type: bf16 unless both sides are f16 (f16 x f16, int x f16) */
static bool mma_f16(const bm_node *a, const bm_node *w) {
  return a->dtype == BM_DTYPE_F16 && (w->dtype == BM_DTYPE_F16 || w->dtype == BM_DTYPE_I8 || w->dtype == BM_DTYPE_I4);
}

bool ck_gemm_small_ok(const bm_graph *g, const bm_clike_lang *L, const bm_node *n, int64_t *rows) {
  *rows = 0;
  if (!L || !L->tensor_cores || n->ndim < 2) return false;
  const char *env = getenv("BM_CUDA_SMALLM");
  if (env && strcmp(env, "0") == 0) return false;
  const bm_node *a = n->in[0], *w = n->in[1];
  if (a->ndim < 1 || w->ndim < 2) return false;
  if (!(bm_op_table[w->op].flags & BM_OPF_SOURCE)) return false; /* streamed without the PDL wait */
  const bm_dim Kd = w->shape[w->ndim - 1];
  if (n->op == BM_OP_MATMUL) {
    if (!n->a.trans_b || n->a.trans_a || a->ndim < 2) return false;
    for (int d = 0; d < w->ndim - 2; d++)
      if (!bm_dim_is_one(w->shape[d])) return false; /* W shared by every row */
    bool ok = (w->dtype == BM_DTYPE_BF16 && (a->dtype == BM_DTYPE_BF16 || a->dtype == BM_DTYPE_F32)) ||
              (w->dtype == BM_DTYPE_F16 && a->dtype == BM_DTYPE_F16);
    if (!ok) return false;
  } else if (n->op == BM_OP_QMATMUL) {
    if (w->dtype != BM_DTYPE_I8 && w->dtype != BM_DTYPE_I4) return false;
    if (a->dtype != BM_DTYPE_F32 && a->dtype != BM_DTYPE_BF16 && a->dtype != BM_DTYPE_F16) return false;
  } else {
    return false;
  }
  const int E = elems_per_chunk(w->dtype);
  if (!bm_dim_is_static(Kd) || Kd.add <= 0 || Kd.add % (4 * E) != 0) return false;
  if (n->op == BM_OP_QMATMUL) {
    const bm_dim Gd = n->in[2]->shape[1];
    if (!bm_dim_is_static(Gd) || Gd.add <= 0 || Kd.add % Gd.add != 0) return false;
    int64_t gs = Kd.add / Gd.add;
    /* whole chunks per group, and groups that tile a round or whole rounds */
    if (gs % E != 0) return false;
    int64_t cpg = gs / E;
    if (cpg != 1 && cpg != 2 && cpg % 4 != 0) return false;
  }
  int64_t r = *rows = rows_max(g, n);
  return r >= 1 && r <= SM_MAX_ROWS;
}

/* the default configuration for R rows (rounded up to 8) of this weight */
static sm_cfg default_cfg(const bm_node *n, int R) {
  const bm_node *w = n->in[1];
  const char *env = getenv("BM_CUDA_SMALLM");
  const sm_cfg *named = NULL;
  bool pf = false, nopipe = false;
  if (env && *env) { /* the longest configuration name that starts env, then the flags */
    size_t best = 0;
    for (size_t i = 0; i < sizeof sm_cfgs / sizeof *sm_cfgs; i++) {
      size_t l = strlen(sm_cfgs[i].name);
      if (l > best && strncmp(env, sm_cfgs[i].name, l) == 0) best = l, named = &sm_cfgs[i];
    }
    pf = strstr(env + best, "p1") != NULL;
    nopipe = strstr(env + best, "s0") != NULL;
  }
  if (named) {
    sm_cfg c = *named;
    c.pf = pf, c.nopipe = nopipe;
    return c;
  }
  /* Picked from the sweep on an H100 (bench/RESULTS.md, "small-M GEMM"; the
   * LLaMA-3-8B shapes): the row tiles (N / 16) decide how many warps a block
   * needs to keep ~16 warps per multiprocessor streaming. Up to 16 rows:
   * long N (14336: 896 tiles) runs best with small blocks (4 warps; int8 at
   * 16 rows two tiles per warp and 8 warps), N of 2048..8191 with 16 warps
   * and two tiles per warp (bf16; int8 at 16 rows), short N (1024: 64
   * tiles) with 16 warps and one tile. int8 up to 8 rows runs without the
   * double buffer (its registers cost a block per multiprocessor); int4
   * takes 8 warps, two tiles without the double buffer up to 8 rows on long
   * N (it would spill). 24-32 rows: 8 warps (4 on long N); more: 4 warps.
   * No default spills (ptxas -v, sm_90a; the named configurations may). */
  const int64_t N = w->shape[w->ndim - 2].add;
  const bool i4 = w->dtype == BM_DTYPE_I4, i8 = w->dtype == BM_DTYPE_I8, wide = !i4 && !i8;
  const bool longn = N >= 8192, midn = N >= 2048 && !longn, f32a = n->in[0]->dtype == BM_DTYPE_F32;
  int nt = 1, nw = 8, minb = 2;
  if (R <= 16) {
    nw = 16, minb = 1;
    if (wide && midn) nt = 2;                  /* t2w16 */
    if (wide && longn) nw = 4, minb = 4;       /* t1w4 */
    if (i8 && R <= 8) nopipe = true;           /* t1w16s0 */
    if (i8 && R == 16 && midn) nt = 2;         /* t2w16 */
    if (i8 && R == 16 && longn) nt = f32a ? 1 : 2, nw = 8, minb = 2; /* t2w8 (f32 activations: t1w8) */
    if (i4 && N / 16 >= 200) nw = 8, minb = 2; /* t1w8 */
    if (i4 && R <= 8 && longn) nt = 2, nopipe = true; /* t2w8s0 */
    if (i4 && R == 16 && longn) nw = 4, minb = f32a ? 2 : 4; /* t1w4 (f32 activations: t1w4b2) */
  } else if (R <= 32) {
    if (wide && longn) nw = 4, minb = 4; /* t1w4 */
    else if (i4) minb = 1; /* accumulators and group partials need more than 128 registers */
  } else {
    nw = 4, minb = i4 || (i8 && f32a) ? 2 : 4; /* int4, int8 x f32: 129+ registers */
  }
  return (sm_cfg){"default", nt, nw, minb, 2, pf, nopipe};
}

/* device helpers, once per translation unit */
static const char sm_helpers[] =
    "#ifndef BM_SMALLM_HELPERS\n"
    "#define BM_SMALLM_HELPERS\n"
    "/* small-M GEMM (emit_gemm_small.c): byte permute; exact int -> f16x2/bf16x2 pairs of a\n"
    " * sign-biased word (xor 0x88888888 / 0x80808080 first): int4 nibbles (j, j + 4), int8\n"
    " * bytes (0, 2) (h = 0) or (1, 3) (h = 1) */\n"
    "BM_DEV unsigned int bm_sm_prmt(unsigned int a, unsigned int b, unsigned int s) {\n"
    "  unsigned int r; asm(\"prmt.b32 %0, %1, %2, %3;\" : \"=r\"(r) : \"r\"(a), \"r\"(b), \"r\"(s)); return r; }\n"
    "BM_DEV unsigned int bm_sm_i4_bf16(unsigned int u, int j) {\n"
    "  const unsigned int h = ((u >> (4 * j)) & 0x000f000fu) | 0x43004300u; unsigned int r;\n"
    "  asm(\"fma.rn.bf16x2 %0, %1, %2, %3;\" : \"=r\"(r) : \"r\"(h), \"r\"(0x3f803f80u), \"r\"(0xc308c308u)); return r; }\n"
    "BM_DEV unsigned int bm_sm_i4_f16(unsigned int u, int j) {\n"
    "  const unsigned int h = ((u >> (4 * j)) & 0x000f000fu) | 0x64006400u; unsigned int r;\n"
    "  asm(\"fma.rn.f16x2 %0, %1, %2, %3;\" : \"=r\"(r) : \"r\"(h), \"r\"(0x3c003c00u), \"r\"(0xe408e408u)); return r; }\n"
    "BM_DEV unsigned int bm_sm_i8_f16(unsigned int u, int h) {\n"
    "  const unsigned int v = bm_sm_prmt(u, 0x64646464u, h ? 0x4341u : 0x4240u); unsigned int r;\n"
    "  asm(\"fma.rn.f16x2 %0, %1, %2, %3;\" : \"=r\"(r) : \"r\"(v), \"r\"(0x3c003c00u), \"r\"(0xe480e480u)); return r; }\n"
    "BM_DEV unsigned int bm_sm_i8_bf16(unsigned int u, int h) {\n"
    "  const float a = __uint_as_float(bm_sm_prmt(u, 0x4b000000u, 0x7440u | (unsigned int)h)) - 8388736.0f;\n"
    "  const float b = __uint_as_float(bm_sm_prmt(u, 0x4b000000u, 0x7440u | (unsigned int)(h + 2))) - 8388736.0f;\n"
    "  return bm_pack_bf16x2(a, b); }\n"
    "/* the quad's 4 x 4 transpose: lane q ends with word q of each lane's vector */\n"
    "BM_DEV void bm_sm_quad_transpose(bm_u4 &v, int q) {\n"
    "  const bool b1 = (q & 1) != 0, b2 = (q & 2) != 0;\n"
    "#pragma unroll\n"
    "  for (int p = 0; p < 4; p += 2) {\n"
    "    const unsigned int r = BM_SHFL_XOR(b1 ? v.w[p] : v.w[p + 1], 1);\n"
    "    if (b1) v.w[p] = r; else v.w[p + 1] = r; }\n"
    "#pragma unroll\n"
    "  for (int p = 0; p < 2; p++) {\n"
    "    const unsigned int r = BM_SHFL_XOR(b2 ? v.w[p] : v.w[p + 2], 2);\n"
    "    if (b2) v.w[p] = r; else v.w[p + 2] = r; }\n"
    "}\n"
    "#endif\n";

/* static shared memory of the K reduction (at most 48 KiB) */
static int red_bytes(int nt, int nw, int mc) { return nw * 16 * nt * (mc + 1) * 4; }

bm_status emit_gemm_small(ck *k) {
  const bm_node *n = k->n, *a = n->in[0], *w = n->in[1];
  const bool quant = n->op == BM_OP_QMATMUL;
  const char *I = k->I;
  const bm_dim Kd = w->shape[w->ndim - 1], Nd = w->shape[w->ndim - 2];
  const int64_t mr = rows_max(k->g, n);
  const int R8 = (int)((mr + 7) / 8) * 8, NTN = R8 / 8;
  sm_cfg cfg = default_cfg(n, R8);
  while (red_bytes(cfg.nt, cfg.nw, 8 * NTN) > 48 * 1024 && cfg.nt > 1) cfg.nt /= 2;
  while (red_bytes(cfg.nt, cfg.nw, 8 * NTN) > 48 * 1024 && cfg.nw > 4) cfg.nw /= 2, cfg.minb *= 2;
  const int NT = cfg.nt, NW = cfg.nw, BR = 16 * NT, MC = 8 * NTN;
  const int E = elems_per_chunk(w->dtype), RE = 4 * E;
  const bool split = a->dtype == BM_DTYPE_F32, f16 = mma_f16(a, w);
  const char *mma = f16 ? "bm_mma_f16" : "bm_mma_bf16";
  const int esa = a->dtype == BM_DTYPE_F32 ? 4 : 2;
  const bm_node *sc = quant ? n->in[2] : NULL;
  int64_t gs = 0, cpg = 0; /* group size, chunks per group */
  bool grouped = false;
  if (quant) {
    int64_t G = sc->shape[1].add;
    gs = Kd.add / G;
    cpg = gs / E;
    grouped = G > 1;
  }
  /* chunks (of the round's 4) under one scale: 1, 2 or 4 */
  const int cgrp = !grouped ? 4 : cpg >= 4 ? 4 : (int)cpg;
  str M = ck_prodx(k, n->shape, 0, n->ndim - 1), N = ck_dimx(k, Nd);

  bm_sb_puts(&k->decl, sm_helpers);
  k->threads = 32 * NW;
  k->min_blocks = cfg.minb;
  bm_dim dims[1] = {Nd};
  int64_t divs[1] = {BR};
  k->tasks = ck_task_grid(k->g, 1, dims, divs);
  const int U = cfg.u;
  P("  /* small-M GEMM (%s): %d rows at most, %d weight rows per block (%d tile(s) of 16), K over %d warps, "
    "%d rounds per step, %s x %s%s */\n",
    cfg.name, R8, BR, NT, NW, U, bm_dtype_name(a->dtype), bm_dtype_name(w->dtype), split ? " (split hi + lo)" : "");
  P("  const %s M = %s, N = %s, K = %lld;\n", I, M.s, N.s, (long long)Kd.add);
  str rowb = ck_strf("%lld", (long long)(w->dtype == BM_DTYPE_I4 ? Kd.add / 2 : Kd.add * (int64_t)bm_dtype_nbytes(w->dtype, 1)));
  /* programmatic dependent launch: the body waits itself. "p1": the weights
   * are graph sources, so one thread may start copying the block's first
   * tile into L2 before the wait (as the GEMV does; 2-15% slower here) */
  k->pdl_in_body = true;
  if (cfg.pf) {
    P("  if (tid == 0 && bid0 * %d < (bm_i64)N) {\n", BR);
    P("    const bm_i64 r0 = bid0 * %d, nrow = (bm_i64)N - r0 < %d ? (bm_i64)N - r0 : %d;\n", BR, BR, BR);
    P("    bm_prefetch_l2(bm_buf(1) + r0 * %s, (unsigned int)(nrow * %s));\n", rowb.s, rowb.s);
    P("  }\n");
  }
  P("  BM_PDL_WAIT();\n");
  P("  BM_PDL_TRIGGER();\n");
  P("  if (M <= 0) return;\n");
  P("  const int lane = tid & 31, wk = tid >> 5, g = lane >> 2, q = lane & 3;\n");
  P("  BM_SHARED float red[%d][%d][%d];\n", NW, BR, MC + 1);
  P("  const %s nround = K / %d;\n", I, RE);
  if (quant) P("  const %s G = %lld;\n", I, (long long)sc->shape[1].add);
  /* the lane's activation rows (clamped: rows past M feed only discarded columns) */
  P("  const unsigned char *ap[%d];\n", NTN);
  P("#pragma unroll\n  for (int u = 0; u < %d; u++) ap[u] = bm_buf(0) + (bm_i64)(u * 8 + g < M ? u * 8 + g : M - 1) * K * %d;\n",
    NTN, esa);
  ck_loop_open(k, ck_strf("(N + %d) / %d", BR - 1, BR).s);
  P("    const %s n0 = t * %d;\n", I, BR);
  P("    %s nr[%d][2];\n", I, NT);
  P("    const unsigned char *wp[%d][2];\n", NT);
  P("#pragma unroll\n    for (int i = 0; i < %d; i++)\n#pragma unroll\n    for (int j = 0; j < 2; j++) {\n", NT);
  P("      const %s r = n0 + 16 * i + 8 * j + g;\n", I);
  P("      nr[i][j] = r < N ? r : N - 1;\n");
  P("      wp[i][j] = bm_buf(1) + (bm_i64)nr[i][j] * %s + q * 16;\n", rowb.s);
  P("    }\n");
  P("    float acc[%d][%d][4];\n", NT, NTN);
  P("#pragma unroll\n    for (int i = 0; i < %d; i++)\n#pragma unroll\n    for (int u = 0; u < %d; u++)\n#pragma unroll\n"
    "    for (int e = 0; e < 4; e++) acc[i][u][e] = 0.0f;\n", NT, NTN);
  /* U adjacent rounds (U / 2 128-byte lines per row) per step of the warp;
   * double buffered: the next step's weights load while this one computes */
  const char *ldloop = cfg.nopipe ? "      " : "    ";
  if (!cfg.nopipe) P("    bm_u4 wv[%d][%d][2]; /* the step's weights, loaded a step ahead */\n", U, NT);
  for (int pass = cfg.nopipe ? 1 : 0; pass < 2; pass++) {
    /* pass 0: the first step's loads (before the loop); 1: in the loop */
    if (pass == 1) {
      P("    for (%s r0 = wk * %d; r0 < nround; r0 += %d) {\n", I, U, U * NW);
      ldloop = "      ";
    }
    const char *r = pass == 0 ? "wk * %d" : cfg.nopipe ? "r0" : "r0 + %d";
    str rs = ck_strf(r, pass == 0 ? U : U * NW);
    const char *dst = pass == 0 || cfg.nopipe ? "wv" : "wn";
    if (pass == 1) P("      bm_u4 %s[%d][%d][2];\n", dst, U, NT);
    P("%s{\n%s  const %s rs = %s;\n", ldloop, ldloop, I, rs.s);
    P("#pragma unroll\n%s  for (int h = 0; h < %d; h++)\n#pragma unroll\n%s  for (int i = 0; i < %d; i++)\n#pragma unroll\n"
      "%s  for (int j = 0; j < 2; j++)\n", ldloop, U, ldloop, NT, ldloop);
    P("%s    if (rs + h < nround) %s[h][i][j] = bm_ld16_stream(wp[i][j] + (bm_i64)(rs + h) * 64);\n", ldloop, dst);
    if (pass == 1 && !cfg.nopipe) P("%s    else wn[h][i][j] = wv[h][i][j];\n", ldloop);
    else if (pass == 0) P("%s    else wv[h][i][j].w[0] = wv[h][i][j].w[1] = wv[h][i][j].w[2] = wv[h][i][j].w[3] = 0u;\n", ldloop);
    P("%s}\n", ldloop);
  }
  P("#pragma unroll\n      for (int h = 0; h < %d; h++) {\n", U);
  P("        if (h > 0 && r0 + h >= nround) break;\n");
  P("        const %s kb = (r0 + h) * %d; /* the round's first element */\n", I, RE);
  if (quant) {
    P("#pragma unroll\n        for (int i = 0; i < %d; i++)\n#pragma unroll\n        for (int j = 0; j < 2; j++) {\n", NT);
    P("          bm_sm_quad_transpose(wv[h][i][j], q);\n");
    P("#pragma unroll\n          for (int e = 0; e < 4; e++) wv[h][i][j].w[e] ^= %s;\n",
      w->dtype == BM_DTYPE_I4 ? "0x88888888u" : "0x80808080u");
    P("        }\n");
  }
  /* the round's steps: c = the chunk (quant) or the lane's chunk (16-bit) */
  const int nchunk = quant ? 4 : 1;
  const char *tgt = grouped ? "part" : "acc";
  if (grouped) P("        float part[%d][%d][4]; /* the scale group's partial sums */\n", NT, NTN);
  for (int c = 0; c < nchunk; c++) {
    P("        {\n");
    if (grouped && c % cgrp == 0)
      P("#pragma unroll\n        for (int i = 0; i < %d; i++)\n#pragma unroll\n        for (int u = 0; u < %d; u++)\n"
        "#pragma unroll\n        for (int e = 0; e < 4; e++) part[i][u][e] = 0.0f;\n", NT, NTN);
    /* the activation elements of this chunk step on the lane: byte offset
     * and count; the steps inside (1 or 2) with their pair selectors */
    int nel, nsteps;
    str aoff;
    if (!quant) {
      nel = 8, nsteps = 2;
      aoff = ck_strf("(kb + q * 8) * %d", esa);
    } else if (w->dtype == BM_DTYPE_I8) {
      nel = 4, nsteps = 1;
      aoff = ck_strf("(kb + %d + q * 4) * %d", 16 * c, esa);
    } else {
      nel = 8, nsteps = 2;
      aoff = ck_strf("(kb + %d + q * 8) * %d", 32 * c, esa);
    }
    /* weight A fragments of the chunk: aw[i][s][4] */
    P("        unsigned int aw[%d][%d][4];\n", NT, nsteps);
    P("#pragma unroll\n        for (int i = 0; i < %d; i++)\n#pragma unroll\n        for (int j = 0; j < 2; j++) {\n", NT);
    if (!quant) {
      P("          aw[i][0][j] = wv[h][i][j].w[0]; aw[i][0][2 + j] = wv[h][i][j].w[1];\n");
      P("          aw[i][1][j] = wv[h][i][j].w[2]; aw[i][1][2 + j] = wv[h][i][j].w[3];\n");
    } else if (w->dtype == BM_DTYPE_I8) {
      const char *cv = f16 ? "bm_sm_i8_f16" : "bm_sm_i8_bf16";
      P("          const unsigned int x = wv[h][i][j].w[%d];\n", c);
      P("          aw[i][0][j] = %s(x, 0); aw[i][0][2 + j] = %s(x, 1);\n", cv, cv);
    } else {
      const char *cv = f16 ? "bm_sm_i4_f16" : "bm_sm_i4_bf16";
      P("          const unsigned int x = wv[h][i][j].w[%d];\n", c);
      P("          aw[i][0][j] = %s(x, 0); aw[i][0][2 + j] = %s(x, 1);\n", cv, cv);
      P("          aw[i][1][j] = %s(x, 2); aw[i][1][2 + j] = %s(x, 3);\n", cv, cv);
    }
    P("        }\n");
    /* per n8 tile: the activations, packed as the weights' pairs, then the MMAs */
    P("#pragma unroll\n        for (int u = 0; u < %d; u++) {\n", NTN);
    P("          const unsigned char *xp = ap[u] + %s;\n", aoff.s);
    /* x holds the nel elements; pair (e0, e1) of step s */
    int pe[2][2][2]; /* [step][b reg][element] */
    if (!quant) { /* identity pairs: step s = elements 4s..4s+3 */
      for (int s = 0; s < 2; s++)
        for (int b = 0; b < 2; b++) pe[s][b][0] = 4 * s + 2 * b, pe[s][b][1] = 4 * s + 2 * b + 1;
    } else if (w->dtype == BM_DTYPE_I8) { /* (0, 2), (1, 3) */
      pe[0][0][0] = 0, pe[0][0][1] = 2, pe[0][1][0] = 1, pe[0][1][1] = 3;
    } else { /* step 0: (0, 4), (1, 5); step 1: (2, 6), (3, 7) */
      for (int s = 0; s < 2; s++)
        for (int b = 0; b < 2; b++) pe[s][b][0] = 2 * s + b, pe[s][b][1] = 2 * s + b + 4;
    }
    if (split) {
      P("          unsigned int xf[%d];\n", nel);
      for (int v = 0; v < nel / 4; v++)
        P("          { const bm_u4 r = *(const bm_u4 *)(xp + %d); xf[%d] = r.w[0]; xf[%d] = r.w[1]; xf[%d] = r.w[2]; "
          "xf[%d] = r.w[3]; }\n", 16 * v, 4 * v, 4 * v + 1, 4 * v + 2, 4 * v + 3);
      for (int s = 0; s < nsteps; s++) {
        P("          {\n            unsigned int bh[2], bl[2];\n");
        for (int b = 0; b < 2; b++)
          P("            bm_split_bf16x2(xf[%d], xf[%d], bh[%d], bl[%d]);\n", pe[s][b][0], pe[s][b][1], b, b);
        P("#pragma unroll\n            for (int i = 0; i < %d; i++) { %s(%s[i][u], aw[i][%d], bh); %s(%s[i][u], aw[i][%d], bl); }\n",
          NT, mma, tgt, s, mma, tgt, s);
        P("          }\n");
      }
    } else {
      /* 16-bit activations: words hold pairs (2v, 2v + 1) */
      if (nel == 8)
        P("          const bm_u4 r = *(const bm_u4 *)xp;\n          const unsigned int xw[4] = {r.w[0], r.w[1], r.w[2], r.w[3]};\n");
      else
        P("          const unsigned long long r = *(const unsigned long long *)xp;\n"
          "          const unsigned int xw[2] = {(unsigned int)r, (unsigned int)(r >> 32)};\n");
      for (int s = 0; s < nsteps; s++) {
        P("          {\n            unsigned int bh[2];\n");
        for (int b = 0; b < 2; b++) {
          int e0 = pe[s][b][0], e1 = pe[s][b][1];
          if (e1 == e0 + 1 && e0 % 2 == 0)
            P("            bh[%d] = xw[%d];\n", b, e0 / 2);
          else /* the half of e0 (low) and of e1 (high) by byte permute */
            P("            bh[%d] = bm_sm_prmt(xw[%d], xw[%d], 0x%x%x%x%xu);\n", b, e0 / 2, e1 / 2, e1 % 2 ? 7 : 5,
              e1 % 2 ? 6 : 4, e0 % 2 ? 3 : 1, e0 % 2 ? 2 : 0);
        }
        P("#pragma unroll\n            for (int i = 0; i < %d; i++) %s(%s[i][u], aw[i][%d], bh);\n", NT, mma, tgt, s);
        P("          }\n");
      }
    }
    P("        }\n");
    if (grouped && (c % cgrp == cgrp - 1)) {
      /* the group's scales (rows g, g + 8 of each tile) on its partial sums */
      P("        {\n");
      P("          const %s grp = (kb + %d) / %lld;\n", I, c * E, (long long)gs);
      P("#pragma unroll\n          for (int i = 0; i < %d; i++) {\n", NT);
      P("            const float s0 = %s, s1 = %s;\n", ck_ld(k, 2, sc->dtype, ck_strf("nr[i][0] * G + grp")).s,
        ck_ld(k, 2, sc->dtype, ck_strf("nr[i][1] * G + grp")).s);
      P("#pragma unroll\n            for (int u = 0; u < %d; u++) {\n", NTN);
      P("              acc[i][u][0] += s0 * part[i][u][0]; acc[i][u][1] += s0 * part[i][u][1];\n");
      P("              acc[i][u][2] += s1 * part[i][u][2]; acc[i][u][3] += s1 * part[i][u][3];\n");
      P("            }\n");
      P("          }\n");
      P("        }\n");
    }
    P("        }\n");
  }
  P("      }\n");
  if (!cfg.nopipe)
    P("#pragma unroll\n      for (int h = 0; h < %d; h++)\n#pragma unroll\n      for (int i = 0; i < %d; i++)\n#pragma unroll\n"
      "      for (int j = 0; j < 2; j++) wv[h][i][j] = wn[h][i][j];\n", U, NT);
  P("    }\n");
  /* reduce the K warps: accumulator (row, column) = (16 i + g (+8), 8 u + 2 q (+1)) */
  P("#pragma unroll\n    for (int i = 0; i < %d; i++)\n#pragma unroll\n    for (int u = 0; u < %d; u++) {\n", NT, NTN);
  P("      red[wk][16 * i + g][8 * u + 2 * q] = acc[i][u][0]; red[wk][16 * i + g][8 * u + 2 * q + 1] = acc[i][u][1];\n");
  P("      red[wk][16 * i + g + 8][8 * u + 2 * q] = acc[i][u][2]; red[wk][16 * i + g + 8][8 * u + 2 * q + 1] = acc[i][u][3];\n");
  P("    }\n");
  P("    BM_SYNC();\n");
  P("    for (int e = tid; e < %d; e += %d) { /* output (row m, column n0 + c): the sum of the K warps */\n", BR * MC,
    32 * NW);
  P("      const int c = e %% %d, m = e / %d;\n", BR, BR);
  P("      const %s gm = m, gn = n0 + c;\n", I);
  P("      if (gm < M && gn < N) {\n");
  P("      float v = 0.0f;\n");
  P("#pragma unroll\n      for (int w = 0; w < %d; w++) v += red[w][c][m];\n", NW);
  if (quant && !grouped) P("      v *= %s;\n", ck_ld(k, 2, sc->dtype, ck_strf("gn")).s);
  P("      const %s oi = gm * N + gn;\n", I);
  ck_emit_epilogue(k, "v", "oi");
  ck_store(k, "oi", "v");
  P("      }\n");
  P("    }\n");
  P("    BM_SYNC(); /* red is reused by the next tile */\n");
  ck_loop_close(k);
  return NULL;
}

bool ck_gemm_small_use(const bm_graph *g, const bm_clike_lang *L, const bm_node *n) {
  int64_t rows;
  if (!ck_gemm_small_ok(g, L, n, &rows)) return false;
  /* the GEMV (emit_gemv.c) streams int8 and bf16/f16 weights faster up to 4
   * rows, but bf16/f16 rows of 8192+ elements; int4 from 2 rows here (H100,
   * bench/RESULTS.md) */
  const bm_node *w = n->in[1];
  const bm_dtype wt = w->dtype;
  const bool longk = w->shape[w->ndim - 1].add >= 8192;
  int64_t lo = wt == BM_DTYPE_I4 ? 2 : wt == BM_DTYPE_I8 ? 5 : longk ? 2 : 5, hi = SM_MAX_ROWS;
  const char *env = getenv("BM_CUDA_SMALLM_ROWS");
  if (env && *env) {
    long long l = 0, h = 0;
    if (sscanf(env, "%lld-%lld", &l, &h) == 2) lo = l, hi = h;
  }
  return rows >= lo && rows <= hi;
}
