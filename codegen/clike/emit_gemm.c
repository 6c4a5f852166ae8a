/* emit_gemm.c - the GEMM family of the C-like emitter: MATMUL, QMATMUL
 * (weight-only int8/int4) and CONV2D (implicit GEMM) on a scalar tile or the
 * tensor-core tile; a few rows go to the skinny GEMM (emit_gemv.c). */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emit_internal.h"

/* ------------------------------------------------------------------ GEMM family */

/* A tiled GEMM: for each batch, C (M, N) = A (M, K) @ B (K, N), 64x64 tiles
 * of 256 threads (4x4 outputs each, strided by 16), K in steps of 16 through
 * shared memory, f32 accumulation. The caller emits the declarations of
 * M, N, K, nb and the code below through the callbacks. */
typedef struct gemm {
  /* statements computing a_off/b_off/c_off... for batch `bi` (may be "") */
  str batch_setup;
  /* load expressions / statements: writes float `val` for A(gm, gk), B(gk, gn) */
  void (*load_a)(ck *k, struct gemm *g);
  void (*load_b)(ck *k, struct gemm *g);
  bool a_k_fast, b_k_fast; /* which index is contiguous in memory (coalescing) */
  /* final store of float `v` at (gm, gn) of batch bi */
  void (*store_c)(ck *k, struct gemm *g);
  const bm_node *aux; /* op-specific */
} gemm;

static void emit_gemm(ck *k, gemm *g) {
  k->threads = 256;
  P("  BM_SHARED float As[16][68];\n");
  P("  BM_SHARED float Bs[16][68];\n");
  P("  const %s tm = (M + 63) / 64, tn = (N + 63) / 64;\n", k->I);
  P("  const int tx = tid & 15, ty = tid >> 4;\n");
  ck_loop_open(k, "nb * tm * tn");
  P("    const %s bi = t / (tm * tn), rem = t %% (tm * tn);\n", k->I);
  P("    const %s m0 = (rem / tn) * 64, n0 = (rem %% tn) * 64;\n", k->I);
  P("%s", g->batch_setup.s);
  P("    float acc[4][4];\n");
  P("    for (int a = 0; a < 4; a++) for (int b = 0; b < 4; b++) acc[a][b] = 0.0f;\n");
  P("    for (%s k0 = 0; k0 < K; k0 += 16) {\n", k->I);
  /* A tile: 64 (m) x 16 (k) */
  P("      for (int e = tid; e < 1024; e += 256) {\n");
  if (g->a_k_fast)
    P("        const int mm = e >> 4, kk = e & 15;\n");
  else
    P("        const int mm = e & 63, kk = e >> 6;\n");
  P("        const %s gm = m0 + mm, gk = k0 + kk;\n", k->I);
  P("        float val = 0.0f;\n");
  P("        if (gm < M && gk < K) {\n");
  g->load_a(k, g);
  P("        }\n");
  P("        As[kk][mm] = val;\n");
  P("      }\n");
  /* B tile: 16 (k) x 64 (n) */
  P("      for (int e = tid; e < 1024; e += 256) {\n");
  if (g->b_k_fast)
    P("        const int nn = e >> 4, kk = e & 15;\n");
  else
    P("        const int nn = e & 63, kk = e >> 6;\n");
  P("        const %s gn = n0 + nn, gk = k0 + kk;\n", k->I);
  P("        float val = 0.0f;\n");
  P("        if (gn < N && gk < K) {\n");
  g->load_b(k, g);
  P("        }\n");
  P("        Bs[kk][nn] = val;\n");
  P("      }\n");
  P("      BM_SYNC();\n");
  P("      for (int kk = 0; kk < 16; kk++) {\n");
  P("        float a[4], b[4];\n");
  P("        for (int u = 0; u < 4; u++) { a[u] = As[kk][ty + 16 * u]; b[u] = Bs[kk][tx + 16 * u]; }\n");
  P("        for (int u = 0; u < 4; u++) for (int w = 0; w < 4; w++) acc[u][w] += a[u] * b[w];\n");
  P("      }\n");
  P("      BM_SYNC();\n");
  P("    }\n");
  P("    for (int u = 0; u < 4; u++) for (int w = 0; w < 4; w++) {\n");
  P("      const %s gm = m0 + ty + 16 * u, gn = n0 + tx + 16 * w;\n", k->I);
  P("      if (gm < M && gn < N) {\n");
  P("      float v = acc[u][w];\n");
  g->store_c(k, g);
  P("      }\n");
  P("    }\n");
  ck_loop_close(k);
}

/* The tensor-core GEMM (languages with tensor_cores; f16/bf16 A and B of
 * one dtype, or f32 A with bf16 B): C (M, N) = A (M, K) @ B (K, N) per
 * batch, 128x128 tiles of 256 threads (8 warps of 64x32, 2 along M x 4 along
 * N), K in steps of 32 through a 3-stage pipeline, ldmatrix fragments
 * (.trans for an operand whose M/N index is contiguous), mma.sync m16n8k16
 * with f32 accumulation; the store applies the epilogue per element. Shared
 * rows are XOR-swizzled by 16-byte chunk so ldmatrix is free of bank
 * conflicts. 16-bit operands arrive by cp.async (3 x 16 KiB of static
 * shared memory). An f32 A ("split": f32 activations, bf16 weights) is
 * loaded to registers one stage ahead, split into bf16 hi + lo (x = hi + lo
 * to 2^-17) and stored as two tiles; each product is then two MMAs, so the
 * result keeps f32 accuracy (3 x 24 KiB of dynamic shared memory). Needs each
 * operand's contiguous dim static and a multiple of 8 (16-byte chunks never
 * straddle the edge; out-of-range chunks are zero-filled); tc_gemm_ok says
 * when. */
static bool tc_split(const bm_node *n) {
  return n->in[0]->dtype == BM_DTYPE_F32 && n->in[1]->dtype == BM_DTYPE_BF16;
}

static bool tc_gemm_ok(const bm_clike_lang *L, const bm_node *n) {
  if (!L || !L->tensor_cores || n->op != BM_OP_MATMUL) return false;
  const bm_node *a = n->in[0], *b = n->in[1];
  bool same = a->dtype == b->dtype && (a->dtype == BM_DTYPE_F16 || a->dtype == BM_DTYPE_BF16);
  if (!same && !tc_split(n)) return false;
  if (a->ndim < 2 || b->ndim < 2) return false;
  bm_dim ac = a->shape[a->ndim - 1], bc = b->shape[b->ndim - 1];
  return bm_dim_is_static(ac) && ac.add % 8 == 0 && ac.add > 0 && bm_dim_is_static(bc) && bc.add % 8 == 0 &&
         bc.add > 0;
}

/* Loads one 128 x 32 operand tile (rows r0.. of R, k0.. of K) into shared
 * memory at byte address `sbase`: k_major = the K index is contiguous. */
static void tc_load(ck *k, int buf, bool k_major, const char *R, const char *r0, const char *off, const char *sbase) {
  const char *I = k->I;
  P("      for (int e = tid; e < 512; e += 256) {\n");
  if (k_major) {
    P("        const int row = e >> 2, c = e & 3;\n");
    P("        const %s gr = %s + row, gk = k0 + c * 8;\n", I, r0);
    P("        const bool ok = gr < %s && gk < K;\n", R);
    P("        const unsigned char *src = bm_buf(%d) + (ok ? (bm_i64)(%s + gr * K + gk) * 2 : 0);\n", buf, off);
    P("        bm_cp_async16(%s + row * 64 + ((c ^ ((row >> 1) & 3)) << 4), src, ok ? 16 : 0);\n", sbase);
  } else {
    P("        const int kr = e >> 4, c = e & 15;\n");
    P("        const %s gk = k0 + kr, gr = %s + c * 8;\n", I, r0);
    P("        const bool ok = gr < %s && gk < K;\n", R);
    P("        const unsigned char *src = bm_buf(%d) + (ok ? (bm_i64)(%s + gk * %s + gr) * 2 : 0);\n", buf, off, R);
    P("        bm_cp_async16(%s + kr * 256 + ((c ^ (kr & 7)) << 4), src, ok ? 16 : 0);\n", sbase);
  }
  P("      }\n");
}

/* split A, first half: the thread's two 8-element f32 chunks of the A tile
 * of K step k0 into registers xa (zero out of range) */
static void tc_fetch_a32(ck *k, bool k_major) {
  const char *I = k->I;
  P("      for (int i = 0; i < 2; i++) {\n");
  P("        const int e = tid + 256 * i;\n");
  if (k_major) {
    P("        const int row = e >> 2, c = e & 3;\n");
    P("        const %s gr = m0 + row, gk = k0 + c * 8;\n", I);
    P("        const %s src = a_off + gr * K + gk;\n", I);
  } else {
    P("        const int kr = e >> 4, c = e & 15;\n");
    P("        const %s gk = k0 + kr, gr = m0 + c * 8;\n", I);
    P("        const %s src = a_off + gk * M + gr;\n", I);
  }
  P("        if (gr < M && gk < K) {\n");
  P("          xa[i][0] = bm_ld16(bm_buf(0) + (bm_i64)src * 4); xa[i][1] = bm_ld16(bm_buf(0) + (bm_i64)src * 4 + 16);\n");
  P("        } else {\n");
  P("#pragma unroll\n          for (int q = 0; q < 4; q++) xa[i][0].w[q] = xa[i][1].w[q] = 0u;\n");
  P("        }\n");
  P("      }\n");
}

/* split A, second half: xa -> bf16 hi tile at sa, lo tile at sa + 8192 */
static void tc_put_a32(ck *k, bool k_major) {
  P("      for (int i = 0; i < 2; i++) {\n");
  P("        const int e = tid + 256 * i;\n");
  if (k_major) {
    P("        const int row = e >> 2, c = e & 3;\n");
    P("        const unsigned int dst = sa + row * 64 + ((c ^ ((row >> 1) & 3)) << 4);\n");
  } else {
    P("        const int kr = e >> 4, c = e & 15;\n");
    P("        const unsigned int dst = sa + kr * 256 + ((c ^ (kr & 7)) << 4);\n");
  }
  P("        bm_u4 hi, lo;\n");
  P("#pragma unroll\n        for (int q = 0; q < 4; q++)\n");
  P("          bm_split_bf16x2(xa[i][q >> 1].w[(2 * q) & 3], xa[i][q >> 1].w[(2 * q + 1) & 3], hi.w[q], lo.w[q]);\n");
  P("        bm_st_shared16(dst, hi);\n        bm_st_shared16(dst + 8192, lo);\n");
  P("      }\n");
}

/* CONV2D as an implicit GEMM on the tensor cores: f16/bf16 x and w of one
 * dtype, C (O/G, OH*OW) = W (O/G, Cg*KH*KW) @ im2col(x) per image and group.
 * W tiles arrive by cp.async (K = Cg*KH*KW static, a multiple of 8); the
 * im2col tile is gathered element by element into registers one stage ahead
 * (zero padding and tails there) and stored as 16-byte chunks of 8 output
 * positions. */
static bool tc_conv_ok(const bm_clike_lang *L, const bm_node *n) {
  if (!L || !L->tensor_cores || n->op != BM_OP_CONV2D) return false;
  const bm_node *x = n->in[0], *w = n->in[1];
  if (x->dtype != w->dtype || (x->dtype != BM_DTYPE_F16 && x->dtype != BM_DTYPE_BF16)) return false;
  for (int d = 1; d < 4; d++)
    if (!bm_dim_is_static(w->shape[d])) return false;
  int64_t K = w->shape[1].add * w->shape[2].add * w->shape[3].add;
  return K > 0 && K % 8 == 0;
}

/* conv, first half: the thread's two 8-position chunks of the im2col tile
 * of K step k0 (rows kr of K, columns n0 + 8c..) into registers xb */
static void tc_fetch_conv(ck *k) {
  const bm_node *n = k->n, *w = n->in[1];
  const char *I = k->I;
  int64_t KH = w->shape[2].add, KW = w->shape[3].add;
  P("      for (int i = 0; i < 2; i++) {\n");
  P("        const int e = tid + 256 * i, kr = e >> 4, c = e & 15;\n");
  P("        const %s gk = k0 + kr, gn = n0 + c * 8;\n", I);
  P("        const %s ci = gk / %lld, kh = (gk / %lld) %% %lld, kw = gk %% %lld;\n", I, (long long)(KH * KW),
    (long long)KW, (long long)KH, (long long)KW);
  P("        const unsigned short *xs = (const unsigned short *)bm_buf(0) + (bm_i64)(img * Cin + grp * Cg + ci) * H * W;\n");
  P("        %s oh = gn / OW, ow = gn %% OW;\n", I);
  P("#pragma unroll\n        for (int j = 0; j < 8; j++) {\n");
  P("          const %s ih = oh * %d - %d + kh * %d, iw = ow * %d - %d + kw * %d;\n", I, n->a.stride[0], n->a.pad[0],
    n->a.dilation[0], n->a.stride[1], n->a.pad[1], n->a.dilation[1]);
  P("          const unsigned int v = gk < K && gn + j < N && ih >= 0 && ih < H && iw >= 0 && iw < W ? xs[ih * W + iw] : 0u;\n");
  P("          if (j & 1) xb[i].w[j >> 1] |= v << 16; else xb[i].w[j >> 1] = v;\n");
  P("          if (++ow == OW) { ow = 0; oh++; }\n");
  P("        }\n");
  P("      }\n");
}

/* conv, second half: xb -> the im2col tile at sb (N contiguous, swizzled) */
static void tc_put_conv(ck *k) {
  P("      for (int i = 0; i < 2; i++) {\n");
  P("        const int e = tid + 256 * i, kr = e >> 4, c = e & 15;\n");
  P("        bm_st_shared16(sb + kr * 256 + ((c ^ (kr & 7)) << 4), xb[i]);\n");
  P("      }\n");
}

/* The NHWC conv (layout BM_CONV_NHWC, groups 1, C a multiple of 8: ck_conv_nhwc_ok):
 * the im2col tile is B (N, K) K-major, K = (kh, kw, ci), so a 16-byte chunk of
 * a B row (8 channels of one tap) is 16 contiguous bytes of x (N, H, W, C):
 * one cp.async per chunk, as a matmul's B, with src-size 0 (zero fill) for
 * padding and for rows past OH*OW or chunks past K. 128 rows (output
 * positions n0..) x 32 of K into the swizzled rows at sb. */
static void tc_load_conv_nhwc(ck *k) {
  const bm_node *n = k->n, *w = n->in[1];
  const char *I = k->I;
  const long long KW = (long long)w->shape[2].add;
  P("      for (int e = tid; e < 512; e += 256) {\n");
  P("        const int row = e >> 2, c = e & 3;\n");
  P("        const %s gn = n0 + row, gk = k0 + c * 8, tap = gk / Cin, ci = gk - tap * Cin;\n", I);
  P("        const %s oh = gn / OW, ow = gn - oh * OW;\n", I);
  P("        const %s ih = oh * %d - %d + (tap / %lld) * %d, iw = ow * %d - %d + (tap %% %lld) * %d;\n", I,
    n->a.stride[0], n->a.pad[0], KW, n->a.dilation[0], n->a.stride[1], n->a.pad[1], KW, n->a.dilation[1]);
  P("        const bool ok = gn < N && gk < K && ih >= 0 && ih < H && iw >= 0 && iw < W;\n");
  P("        const unsigned char *src = bm_buf(0) + (ok ? (bm_i64)(((img * H + ih) * W + iw) * Cin + ci) * 2 : 0);\n");
  P("        bm_cp_async16(sb + row * 64 + ((c ^ ((row >> 1) & 3)) << 4), src, ok ? 16 : 0);\n");
  P("      }\n");
}

static void emit_gemm_tc(ck *k, gemm *g) {
  const bm_node *n = k->n;
  const bool conv = n->op == BM_OP_CONV2D, split = !conv && tc_split(n);
  const bool nhwc = conv && n->a.layout == BM_CONV_NHWC; /* B by cp.async from x (N, H, W, C) */
  const char *I = k->I, *mma = n->in[1]->dtype == BM_DTYPE_BF16 ? "bm_mma_bf16" : "bm_mma_f16";
  /* conv: A = the weights (K contiguous), B = im2col(x) (N contiguous; K contiguous when nhwc) */
  bool a_km = conv || !n->a.trans_a, b_km = nhwc || (!conv && n->a.trans_b);
  /* a stage: A (hi, lo when split), then B, 8 KiB each */
  const int stage = split ? 24576 : 16384, boff = split ? 16384 : 8192;
  k->threads = 256;
  /* one block per multiprocessor: 2 (registers capped at 128) measured the
   * same on an H100 (docs/cuda.md) */
  k->min_blocks = 1;
  if (split || k->smem > 0) { /* smem > 0: the wgmma kernel's, which this body shares (emit_matmul) */
    if (k->smem < 3 * stage) k->smem = 3 * stage;
    P("  extern __shared__ __align__(128) unsigned char bm_dsm[];\n");
    P("  const unsigned int sm0 = bm_smem_addr(bm_dsm);\n");
  } else {
    P("  __shared__ __align__(128) unsigned char bm_sm[3 * 16384];\n");
    P("  const unsigned int sm0 = bm_smem_addr(bm_sm);\n");
  }
  P("  const int lane = tid & 31, wm = (tid >> 5) >> 2, wn = (tid >> 5) & 3;\n");
  P("  const %s tm = (M + 127) / 128, tn = (N + 127) / 128, ktiles = (K + 31) / 32;\n", I);
  ck_loop_open(k, "nb * tm * tn");
  P("    const %s bi = t / (tm * tn), rem = t %% (tm * tn);\n", I);
  P("    /* groups of 8 M-tiles walk N together (L2 reuse of A and B) */\n");
  P("    const %s tgrp = rem / (8 * tn), first = tgrp * 8, gsz = tm - first < 8 ? tm - first : 8;\n", I);
  P("    const %s m0 = (first + (rem %% (8 * tn)) %% gsz) * 128, n0 = ((rem %% (8 * tn)) / gsz) * 128;\n", I);
  P("%s", g->batch_setup.s);
  P("    float acc[4][4][4];\n");
  P("#pragma unroll\n    for (int i = 0; i < 4; i++)\n#pragma unroll\n    for (int j = 0; j < 4; j++)\n"
    "#pragma unroll\n    for (int q = 0; q < 4; q++) acc[i][j][q] = 0.0f;\n");
  /* the stage loaders: stage st <- K tile kt (B, and A unless split: by
   * cp.async; split A: fetch to registers, then put into the stage) */
  bm_sb *saved = k->b;
  bm_sb ld = {0}, fetch = {0}, put = {0};
  k->b = &ld;
  P("    %s k0 = kt * 32;\n", I);
  P("    const unsigned int sa = sm0 + st * %d, sb = sa + %d;\n", stage, boff);
  /* conv: the weights are input 1, x input 0 */
  if (!split) tc_load(k, conv ? 1 : 0, a_km, "M", "m0", "a_off", "sa");
  if (!conv) tc_load(k, 1, b_km, "N", "n0", "b_off", "sb");
  if (nhwc) tc_load_conv_nhwc(k);
  const bool staged = split || (conv && !nhwc); /* an operand goes through registers */
  if (staged) {
    k->b = &fetch;
    if (split)
      tc_fetch_a32(k, a_km);
    else
      tc_fetch_conv(k);
    k->b = &put;
    P("    const unsigned int sa = sm0 + st * %d, sb = sa + %d;\n", stage, boff);
    if (split)
      tc_put_a32(k, a_km);
    else
      tc_put_conv(k);
  }
  k->b = saved;
  const char *lds = ld.s ? ld.s : "", *fs = fetch.s ? fetch.s : "", *ps = put.s ? put.s : "";
  if (split) P("    bm_u4 xa[2][2];\n");
  if (conv && staged) P("    bm_u4 xb[2];\n");
  P("    for (int s = 0; s < 2; s++) {\n");
  P("      if (s < ktiles) {\n      const %s kt = s; const int st = s;\n  %s", I, lds);
  if (staged) P("      {\n%s%s      }\n", fs, ps);
  P("      }\n");
  P("      bm_cp_commit();\n    }\n");
  P("    for (%s kt0 = 0; kt0 < ktiles; kt0++) {\n", I);
  P("      bm_cp_wait<1>();\n      BM_SYNC();\n");
  P("      if (kt0 + 2 < ktiles) {\n      const %s kt = kt0 + 2; const int st = (int)(kt %% 3);\n  %s", I, lds);
  if (staged) P("      {\n%s      }\n", fs);
  P("      }\n");
  P("      bm_cp_commit();\n");
  P("      {\n");
  P("      const unsigned int sa = sm0 + (int)(kt0 %% 3) * %d, sb = sa + %d;\n", stage, boff);
  P("#pragma unroll\n      for (int kk = 0; kk < 32; kk += 16) {\n");
  P("        unsigned int af[4][4], bf[4][2];\n");
  if (split) P("        unsigned int al[4][4];\n");
  P("#pragma unroll\n        for (int mi = 0; mi < 4; mi++) {\n");
  if (a_km) {
    P("          const int row = wm * 64 + mi * 16 + (lane & 15), c = (kk >> 3) + (lane >> 4);\n");
    P("          const unsigned int ad = sa + row * 64 + ((c ^ ((row >> 1) & 3)) << 4);\n");
    P("          bm_ldsm_x4(af[mi], ad);\n");
    if (split) P("          bm_ldsm_x4(al[mi], ad + 8192);\n");
  } else {
    P("          const int kr = kk + (lane & 7) + ((lane >> 4) << 3), c = ((wm * 64 + mi * 16) >> 3) + ((lane >> 3) & 1);\n");
    P("          const unsigned int ad = sa + kr * 256 + ((c ^ (kr & 7)) << 4);\n");
    P("          bm_ldsm_x4_t(af[mi], ad);\n");
    if (split) P("          bm_ldsm_x4_t(al[mi], ad + 8192);\n");
  }
  P("        }\n");
  P("#pragma unroll\n        for (int p = 0; p < 2; p++) {\n");
  P("          unsigned int r[4];\n");
  if (b_km) {
    P("          const int nr = wn * 32 + p * 16 + (lane & 7) + ((lane >> 4) << 3), c = (kk >> 3) + ((lane >> 3) & 1);\n");
    P("          bm_ldsm_x4(r, sb + nr * 64 + ((c ^ ((nr >> 1) & 3)) << 4));\n");
  } else {
    P("          const int kr = kk + (lane & 7) + (((lane >> 3) & 1) << 3), c = ((wn * 32 + p * 16) >> 3) + (lane >> 4);\n");
    P("          bm_ldsm_x4_t(r, sb + kr * 256 + ((c ^ (kr & 7)) << 4));\n");
  }
  P("          bf[2 * p][0] = r[0]; bf[2 * p][1] = r[1]; bf[2 * p + 1][0] = r[2]; bf[2 * p + 1][1] = r[3];\n");
  P("        }\n");
  P("#pragma unroll\n        for (int mi = 0; mi < 4; mi++)\n#pragma unroll\n        for (int nj = 0; nj < 4; nj++) {\n");
  P("          %s(acc[mi][nj], af[mi], bf[nj]);\n", mma);
  if (split) P("          %s(acc[mi][nj], al[mi], bf[nj]);\n", mma);
  P("        }\n");
  P("      }\n");
  P("      }\n");
  if (staged) /* stage (kt0 + 2) % 3 was last read in iteration kt0 - 1, before this iteration's barrier */
    P("      if (kt0 + 2 < ktiles) {\n      const %s kt = kt0 + 2; const int st = (int)(kt %% 3);\n%s      }\n", I, ps);
  bm_sb_free(&ld);
  bm_sb_free(&fetch);
  bm_sb_free(&put);
  P("    }\n");
  P("    bm_cp_wait<0>();\n    BM_SYNC(); /* the next tile reuses the stages */\n");
  P("#pragma unroll\n    for (int mi = 0; mi < 4; mi++)\n#pragma unroll\n    for (int nj = 0; nj < 4; nj++)\n");
  P("#pragma unroll\n    for (int q = 0; q < 4; q++) {\n");
  P("      const %s gm = m0 + wm * 64 + mi * 16 + (lane >> 2) + (q >> 1) * 8;\n", I);
  P("      const %s gn = n0 + wn * 32 + nj * 8 + (lane & 3) * 2 + (q & 1);\n", I);
  P("      if (gm < M && gn < N) {\n");
  P("      float v = acc[mi][nj][q];\n");
  g->store_c(k, g);
  P("      }\n");
  P("    }\n");
  ck_loop_close(k);
}

/* The Hopper tensor-core GEMM (wgmma, sm_90a): f16/bf16 A (M, K) and B (N, K)
 * of one dtype, both K-major (B as nn.Linear weights), C (M, N) = A @ B^T per
 * batch with f32 accumulation. Tiles of 128 x BN (BN = 128 or 256) for 256
 * threads = two warpgroups, each 64 rows x BN: one wgmma.m64nBNk16 per 16 of
 * K, BN / 2 f32 accumulators per thread. K goes in steps of BK (32 or 64)
 * through S stages of cp.async (A then B) in dynamic shared memory: at most
 * 97 KiB with the 1024-byte alignment, so the mma.sync body that sm_80/86/89
 * and the PTX run instead fits the same launch (and with BN = 128 two blocks
 * share a multiprocessor). An operand row of BK elements is 2 BK bytes; its
 * 16-byte chunk c sits at c ^ (row & 7) (BK 64: wgmma's 128-byte swizzle,
 * 8-row groups of 1024 bytes) or c ^ ((row >> 1) & 3) (BK 32: the 64-byte
 * swizzle, groups of 512 bytes), described by bm_wgmma_desc; the start
 * advances by 32 bytes per 16 of K. Each step: wait for stage kt, make it
 * visible to the tensor cores (fence.proxy.async) and to every thread
 * (barrier), start the loads of K tile kt + S - lag into the stage that
 * wgmma batch kt - lag read (done: each warpgroup waited for it before the
 * barrier), issue the wgmmas on stage kt, then wait until lag - 1 batches
 * are in flight (lag 2: batch kt runs while the next step loads and issues).
 * The store applies the epilogue per element (the accumulator layout of
 * mma.sync's m16n8 C fragment: row 16 * warp + lane / 4 (+8), column
 * 8 j + 2 (lane % 4) + (0, 1)). */
typedef struct wg_cfg {
  const char *name; /* BM_CUDA_WGMMA=name picks it (compile time, for comparisons; 0: off) */
  int bn, bk, stages, lag;
} wg_cfg;

/* the first is the default; on an H100 (bench/RESULTS.md) n128k64s3 ran
 * 451-511 TFLOP/s on the square and LLM shapes, n256k32s4 374-508 and
 * n128k32s6 379-440: the per-step barrier and loads cost more than the
 * wait for the last wgmma batch, which the second block on the
 * multiprocessor covers */
static const wg_cfg wg_cfgs[] = {
    {"n128k64s3", 128, 64, 3, 1},
    {"n256k32s4", 256, 32, 4, 2},
    {"n128k32s6", 128, 32, 6, 2},
    {"n64k64s3", 64, 64, 3, 1}, /* conv2d's default (wgmma_conv_ok) */
};

static int wg_stage_bytes(const wg_cfg *c) { return (128 + c->bn) * 2 * c->bk; }
static int wg_smem(const wg_cfg *c) { return c->stages * wg_stage_bytes(c) + 1024; }

static const wg_cfg *wgmma_cfg(const bm_clike_lang *L, const bm_node *n) {
  if (!L || L->tensor_cores < 2 || !tc_gemm_ok(L, n) || tc_split(n) || n->a.trans_a || !n->a.trans_b) return NULL;
  const char *env = getenv("BM_CUDA_WGMMA");
  if (!env || !*env) return &wg_cfgs[0];
  for (size_t i = 0; i < sizeof wg_cfgs / sizeof *wg_cfgs; i++)
    if (strcmp(env, wg_cfgs[i].name) == 0) return &wg_cfgs[i];
  if (strncmp(env, "tma_", 4) == 0) return &wg_cfgs[0]; /* a TMA config (tma_cfg_for): the fallback body's */
  return NULL; /* "0" or an unknown name: mma.sync */
}

/* CONV2D on the wgmma body (wgmma_conv_ok): C (O/G, OH*OW) per image and
 * group; A = the weights (O/G, K = Cg*KH*KW) by cp.async as a matmul's A;
 * B = im2col(x) as (OH*OW, K) K-major, so the tile, layout and descriptors
 * are the matmul's and the accumulators store NCHW rows. x is NCHW
 * (contiguous along W, not K), and a run of 8 output positions starts at
 * any element (kw - pad shifts it), so cp.async cannot fetch B: the thread
 * owns output position n0 + tid % BN and gathers 64 / (256 / BN) of the
 * step's 64 K elements (k = (ci, kh, kw), decoded once per step, then
 * stepped) into registers (zero outside the image, past K and past
 * OH*OW; the load itself is unconditional, of element 0 when masked).
 * Step kt0 issues the wgmmas of stage kt0, then packs the registers
 * gathered in step kt0 - 1 into 16-byte chunks of the B half of stage
 * kt0 + 1 (read by wgmma batch kt0 - 2, done before the last barrier; made
 * visible to the tensor cores by the next step's fence.proxy.async), then
 * starts the gather of K tile kt0 + 2 (its loads land during the wgmma wait
 * and the next barrier). Configurations with BK 64, 3 stages and lag 1:
 * n64k64s3 (the default: more blocks, 98 registers) or n128k64s3 (128
 * registers with a few spilled; slower on the SD shapes, bench/RESULTS.md).
 * K = Cg*KH*KW static and a multiple of 8 (tc_conv_ok). */
static bool wg_conv_cfg(const wg_cfg *c) { return c->bk == 64 && c->stages == 3 && c->lag == 1; }

static bool wgmma_conv_ok(const bm_clike_lang *L, const bm_node *n, const wg_cfg **cfg) {
  if (!L || L->tensor_cores < 2 || !tc_conv_ok(L, n)) return false;
  const char *env = getenv("BM_CUDA_WGMMA");
  if (env && *env) { /* a name forces a configuration (BK 64, 3 stages); "0" or another: mma.sync */
    for (size_t i = 0; i < sizeof wg_cfgs / sizeof *wg_cfgs; i++)
      if (strcmp(env, wg_cfgs[i].name) == 0 && wg_conv_cfg(&wg_cfgs[i])) {
        *cfg = &wg_cfgs[i];
        return true;
      }
    return false;
  }
  *cfg = &wg_cfgs[3]; /* n64k64s3: the faster on every SD shape measured (bench/RESULTS.md) */
  return true;
}

/* conv B gather of K tile kt (BK 64) into xv: the thread's position (ih0,
 * iw0, nok of the tile setup: row tid % BN of the tile) and its 64 / (256 /
 * BN) K elements from kt * 64 + (tid / BN) times that */
static void wg_conv_gather(ck *k, int BN) {
  const bm_node *n = k->n, *w = n->in[1];
  const char *I = k->I;
  int64_t KH = w->shape[2].add, KW = w->shape[3].add;
  const int ept = 64 / (256 / BN);
  P("      {\n");
  P("      const %s gk0 = kt * 64 + (tid / %d) * %d;\n", I, BN, ept);
  P("      %s ci = gk0 / %lld; int kh = (int)((gk0 / %lld) %% %lld), kw = (int)(gk0 %% %lld);\n", I,
    (long long)(KH * KW), (long long)KW, (long long)KH, (long long)KW);
  P("#pragma unroll\n      for (int j = 0; j < %d; j++) {\n", ept);
  P("        const %s ih = ih0 + kh * %d, iw = iw0 + kw * %d;\n", I, n->a.dilation[0], n->a.dilation[1]);
  P("        const bool ok = nok && gk0 + j < K && (unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W;\n");
  P("        const unsigned short v = xs[ok ? (ci * H + ih) * W + iw : 0]; /* no branch: element 0 is in bounds */\n");
  P("        xv[j] = ok ? v : (unsigned short)0;\n");
  P("        if (++kw == %lld) { kw = 0; if (++kh == %lld) { kh = 0; ci++; } }\n", (long long)KW, (long long)KH);
  P("      }\n");
  P("      }\n");
}

/* conv B put: xv -> the B half of stage st (row tid % BN, the thread's chunks) */
static void wg_conv_put(ck *k, const wg_cfg *c) {
  const int BN = c->bn, ept = 64 / (256 / BN);
  P("      {\n");
  P("      const int r = tid %% %d, c0 = (tid / %d) * %d;\n", BN, BN, ept / 8);
  P("      const unsigned int sbp = sm0 + st * %d + %d + r * 128;\n", wg_stage_bytes(c), 128 * 128);
  P("#pragma unroll\n      for (int i = 0; i < %d; i++) {\n", ept / 8);
  P("        bm_u4 v;\n");
  P("#pragma unroll\n        for (int q = 0; q < 4; q++)\n");
  P("          v.w[q] = (unsigned int)xv[8 * i + 2 * q] | ((unsigned int)xv[8 * i + 2 * q + 1] << 16);\n");
  P("        bm_st_shared16(sbp + (((c0 + i) ^ (r & 7)) << 4), v);\n");
  P("      }\n");
  P("      }\n");
}

static void emit_gemm_wgmma(ck *k, gemm *g, const wg_cfg *c) {
  const bool conv = k->n->op == BM_OP_CONV2D;
  const char *I = k->I, *dt = k->n->in[1]->dtype == BM_DTYPE_BF16 ? "bf16" : "f16";
  const int BN = c->bn, BK = c->bk, S = c->stages, lag = c->lag;
  const int rowb = 2 * BK, cpr = BK / 8, step = 256 / cpr; /* row bytes, chunks per row, rows per pass */
  const int stage = wg_stage_bytes(c), boff = 128 * rowb;
  assert(!conv || wg_conv_cfg(c));
  P("  extern __shared__ __align__(128) unsigned char bm_dsm[];\n");
  P("  const unsigned int sm0 = (bm_smem_addr(bm_dsm) + 1023u) & ~1023u; /* whole swizzle groups */\n");
  P("  const int wg = tid >> 7, wq = (tid >> 5) & 3, lane = tid & 31;\n");
  P("  /* loads: the thread's chunk lc of rows lrow + %d i of A and of B */\n", step);
  P("  const int lrow = tid / %d, lc = tid %% %d;\n", cpr, cpr);
  if (BK == 64)
    P("  const unsigned int ldst = lrow * 128 + ((lc ^ (lrow & 7)) << 4);\n");
  else
    P("  const unsigned int ldst = lrow * 64 + ((lc ^ ((lrow >> 1) & 3)) << 4);\n");
  P("  const %s tm = (M + 127) / 128, tn = (N + %d) / %d, ktiles = (K + %d) / %d;\n", I, BN - 1, BN, BK - 1, BK);
  ck_loop_open(k, "nb * tm * tn");
  P("    const %s bi = t / (tm * tn), rem = t %% (tm * tn);\n", I);
  P("    const %s tgrp = rem / (8 * tn), first = tgrp * 8, gsz = tm - first < 8 ? tm - first : 8;\n", I);
  P("    const %s m0 = (first + (rem %% (8 * tn)) %% gsz) * 128, n0 = ((rem %% (8 * tn)) / gsz) * %d;\n", I, BN);
  P("%s", g->batch_setup.s);
  if (conv) { /* the thread's output position of the B gather */
    const bm_node *n = k->n;
    P("    const %s gnb = n0 + tid %% %d, ohb = gnb / OW, owb = gnb %% OW;\n", I, BN);
    P("    const bool nok = gnb < N;\n");
    P("    const %s ih0 = ohb * %d - %d, iw0 = owb * %d - %d;\n", I, n->a.stride[0], n->a.pad[0], n->a.stride[1],
      n->a.pad[1]);
    P("    const unsigned short *xs = (const unsigned short *)bm_buf(0) + (bm_i64)(img * Cin + grp * Cg) * H * W;\n");
    P("    unsigned short xv[%d];\n", 64 / (256 / BN));
  }
  P("    float acc[%d];\n", BN / 2);
  P("#pragma unroll\n    for (int i = 0; i < %d; i++) acc[i] = 0.0f;\n", BN / 2);
  bm_sb *saved = k->b;
  bm_sb ld = {0}, gat = {0}, put = {0};
  k->b = &ld;
  P("      {\n");
  P("      const %s gk = kt * %d + lc * 8;\n", I, BK);
  P("      const unsigned int sa = sm0 + st * %d + ldst;\n", stage);
  P("#pragma unroll\n      for (int i = 0; i < %d; i++) {\n", 128 / step);
  P("        const %s ra = m0 + lrow + %d * i;\n", I, step);
  P("        const bool ok = ra < M && gk < K;\n");
  P("        bm_cp_async16(sa + %d * i, bm_buf(%d) + (ok ? (bm_i64)(a_off + ra * K + gk) * 2 : 0), ok ? 16 : 0);\n",
    step * rowb, conv ? 1 : 0);
  P("      }\n");
  if (!conv) {
    P("#pragma unroll\n      for (int i = 0; i < %d; i++) {\n", BN / step);
    P("        const %s rb = n0 + lrow + %d * i;\n", I, step);
    P("        const bool ok = rb < N && gk < K;\n");
    P("        bm_cp_async16(sa + %d + %d * i, bm_buf(1) + (ok ? (bm_i64)(b_off + rb * K + gk) * 2 : 0), ok ? 16 : 0);\n",
      boff, step * rowb);
    P("      }\n");
  }
  P("      }\n");
  if (conv) {
    k->b = &gat;
    wg_conv_gather(k, BN);
    k->b = &put;
    wg_conv_put(k, c);
  }
  k->b = saved;
  const char *lds = ld.s ? ld.s : "", *gs = gat.s ? gat.s : "", *ps = put.s ? put.s : "";
  P("    for (int s = 0; s < %d; s++) {\n", S - lag);
  if (conv) /* B of K tile 0 goes in now, that of tile 1 in step 0 */
    P("      if (s < ktiles) {\n      const %s kt = s; const int st = s;\n%s%s      if (s == 0) {\n%s      }\n      }\n",
      I, lds, gs, ps);
  else
    P("      if (s < ktiles) {\n      const %s kt = s; const int st = s;\n%s      }\n", I, lds);
  P("      bm_cp_commit();\n    }\n");
  P("    for (%s kt0 = 0; kt0 < ktiles; kt0++) {\n", I);
  P("      bm_cp_wait<%d>();\n      bm_fence_proxy_async();\n      BM_SYNC();\n", S - lag - 1);
  P("      if (kt0 + %d < ktiles) {\n      const %s kt = kt0 + %d; const int st = (int)(kt %% %d);\n%s      }\n", S - lag, I,
    S - lag, S, lds);
  P("      bm_cp_commit();\n");
  P("      {\n");
  P("      const unsigned int sa = sm0 + (int)(kt0 %% %d) * %d;\n", S, stage);
  P("      const unsigned long long da = bm_wgmma_desc(sa + wg * %d, %s), db = bm_wgmma_desc(sa + %d, %s);\n", 64 * rowb,
    BK == 64 ? "true" : "false", boff, BK == 64 ? "true" : "false");
  P("      bm_wgmma_fence_n%d(acc);\n", BN);
  P("#pragma unroll\n      for (int kk = 0; kk < %d; kk++) bm_wgmma_%s_n%d(acc, da + 2 * kk, db + 2 * kk);\n", BK / 16, dt, BN);
  P("      bm_wgmma_commit();\n");
  P("      }\n");
  if (conv) { /* while the wgmmas run: B of K tile kt0 + 1 (gathered in step kt0 - 1) into its stage, then the
               * gather of tile kt0 + 2, whose loads land during the next barrier */
    P("      if (kt0 + 1 < ktiles) {\n      const int st = (int)((kt0 + 1) %% %d);\n%s      }\n", S, ps);
    P("      if (kt0 + 2 < ktiles) {\n      const %s kt = kt0 + 2;\n%s      }\n", I, gs);
  }
  P("      bm_wgmma_wait_n%d<%d>(acc);\n", BN, lag - 1);
  bm_sb_free(&ld);
  bm_sb_free(&gat);
  bm_sb_free(&put);
  P("    }\n");
  if (lag > 1) P("    bm_wgmma_wait_n%d<0>(acc);\n", BN);
  P("    bm_cp_wait<0>();\n    BM_SYNC(); /* the next tile reuses the stages */\n");
  P("#pragma unroll\n    for (int j = 0; j < %d; j++)\n#pragma unroll\n    for (int q = 0; q < 4; q++) {\n", BN / 8);
  P("      const %s gm = m0 + wg * 64 + wq * 16 + (lane >> 2) + (q >> 1) * 8;\n", I);
  P("      const %s gn = n0 + j * 8 + (lane & 3) * 2 + (q & 1);\n", I);
  P("      if (gm < M && gn < N) {\n");
  P("      float v = acc[j * 4 + q];\n");
  g->store_c(k, g);
  P("      }\n");
  P("    }\n");
  ck_loop_close(k);
}

/* The Hopper TMA GEMM (sm_90a): the same operands as the wgmma body above
 * (f16/bf16 A (M, K) and B (N, K), both K-major), or B stored (K, N)
 * (tma_kn_ok), warp-specialized and persistent. 384 threads: warpgroup 0 is the producer (registers cut to 40
 * by setmaxnreg; one thread issues everything), warpgroups 1 and 2 the
 * consumers (registers raised to 232), each 64 rows x BN of a 128 x BN
 * tile with BN / 2 f32 accumulators per thread. K goes in steps of 64
 * through S stages of shared memory (A 16 KiB + B BN * 128 bytes), loaded
 * by 2-d TMA tensor loads (cp.async.bulk.tensor, 128-byte swizzle: the
 * wgmma descriptor's layout; zero fill past K and past the tensor's last
 * row) that complete on the stage's "full" mbarrier (the producer arrives
 * with the stage's byte count). A consumer waits on "full", issues its 4
 * wgmmas, commits, waits until one batch is in flight, and then the
 * previous stage is done: one lane per consumer warp arrives on its
 * "empty" mbarrier, which the producer waits on before it refills the
 * stage. No block-wide barrier after the setup, so the producer runs up to
 * S stages ahead, across tiles: the loads of the next tile overlap the
 * consumers' epilogue. Blocks loop over the tiles (grid-stride, groups of
 * 8 M-tiles walking N for L2 reuse); the runtime caps the grid at
 * blocks_per_sm x the multiprocessors.
 *
 * Cluster 2 (the c2 configs): the two blocks of a cluster take the two
 * M-tiles of a pair (2 pm, 2 pm + 1) with the same N columns, and each
 * loads one half of the shared B tile, multicast into both blocks' stages
 * (TMA .multicast::cluster: each block's "full" barrier counts A, its own
 * half and the peer's), so the L2 -> shared memory traffic per FLOP drops
 * by a third (1 + 1/2 operand tiles per block instead of 2). A stage is
 * free when the consumers of both blocks are done with it: "empty" counts
 * 16 arrivals (each consumer warp arrives on its own block's barrier and
 * on the peer's). Cluster barriers after the setup (the peer's barriers
 * exist) and before the exit (no arrival or copy targets an exited block).
 * A pair whose second M-tile is past M computes rows that are not stored.
 *
 * The tensor maps (A and B, 128 bytes each, encoded by the runtime with
 * cuTensorMapEncodeTiled at session create, per launch) are in device
 * memory whose address the runtime puts into argument slot BM_TMA_SLOT; it
 * learns what to encode, the shared memory and the cluster size from the
 * kernel's `<symbol>_tmd` constant array (BM_TMD_* layout below), found
 * with cuModuleGetGlobal, so only the sm_90a image has it. Rows of a map:
 * the operand's element count at the symbols' maxima / K (batches stacked:
 * the tile's first row is off / K + m0; rows past M of a batch read the
 * next batch or garbage inside the allocation and only feed outputs that
 * are not stored). When the runtime has no maps for the launch (slot 0: an
 * old runtime, no cuTensorMapEncodeTiled, an unaligned operand) or
 * launched it with less shared memory, the kernel runs the cp.async wgmma
 * body (the n128k64s3 config) on 256 of its threads, without clusters.
 *
 * B stored (K, N) (not trans_b; 256-wide tiles): B's map has N columns and
 * the stacked K rows; a stage's B is four 64-column blocks of 64 K rows x
 * 128 bytes (box 64 x 64, 128-byte swizzle), 8 KiB apart, which wgmma reads
 * through the MN-major descriptor (bm_wgmma_desc_mn: LBO 8192 between the
 * column blocks, SBO 1024 between 8-row groups; + 2048 bytes per 16 of K)
 * with imm-trans-b (bm_wgmma_tb_*). With clusters each block loads two of
 * the four blocks, multicast. Its fallback without maps is the mma.sync
 * tile (emit_gemm_tc, 3 x 16 KiB of dynamic shared memory).
 *
 * The TMA store (tstore configs, the default; f16/bf16 output with N static
 * and a multiple of 8: tma_store_ok): a third map over the output (N
 * columns, the batches' stacked rows, box 64 x 64, 128-byte swizzle) and two
 * 8 KiB buffers per consumer warpgroup after the stages. When M is a
 * multiple of 128 (so no tile crosses a batch) a warpgroup writes its 64 x
 * 256 results, with the epilogue, one 64-column chunk at a time into
 * buffer h & 1 (32-bit st.shared in the swizzled layout, conflict-free),
 * fences them for the async proxy, syncs its 128 threads (named barrier
 * 1 + wg), and its first thread issues one tensor store of the chunk
 * (bulk group; before a buffer is rewritten it waits until the store two
 * chunks back has read it). The warpgroup then starts the next tile's
 * wgmmas while the stores drain, instead of storing per element from
 * registers (the store of a tile had left the tensor cores idle: +10% on
 * 4096^3). Columns past N are clipped by the map; other M keep the
 * per-element store. Before exiting the thread waits for its stores. */
typedef struct tma_cfg {
  const char *name; /* BM_CUDA_WGMMA=name */
  int bn, stages, cluster;
  int group;  /* M-tiles per group of the tile order */
  int tstore; /* 1: the store goes through shared memory and TMA tensor stores (tma_store_ok) */
} tma_cfg;

/* tensor-map data of a kernel (`<symbol>_tmd`, long long[]): magic, dynamic
 * shared memory, blocks per multiprocessor (grid cap; 0: none), argument
 * slot of the maps' address, number of maps, cluster size (blocks along x;
 * the grid is rounded up to a multiple), then per map 7 values: buffer
 * (argument index), element bytes, columns (inner dim, elements), rows, box
 * columns, box rows, swizzle (CUtensorMapSwizzle). The runtime side is
 * runtime/device_cuda.c ("Tensor maps"). */
#define BM_TMD_MAGIC 0x31646d74l /* "tmd1" */
#define BM_TMA_SLOT 15

/* the first is the default: on an H100 (docs/cuda.md) 747-809 TFLOP/s on
 * 4096^3, 8192^3 and the LLM prefill shapes with B (N, K) or (K, N),
 * 0.95-0.98x cuBLAS's best time in the same call; the previous default
 * tma_n256s4c2 (the per-element store from registers) 637-785, 0.86-0.94x
 * (0.89 on 4096^3); tma_n256s4c2g16e and tma_n256s4e (no clusters) measured
 * the same as the default within 1% on 4096^3 and 2048x4096x4096; without
 * the TMA store: no clusters 663-748, 128 x 128 tiles ~500, groups of 16
 * M-tiles +1-3% without clusters; tma_n256s4c2g16 and g4 not measured */
static const tma_cfg tma_cfgs[] = {
    {"tma_n256s4c2e", 256, 4, 2, 8, 1},
    {"tma_n256s4c2", 256, 4, 2, 8},
    {"tma_n256s4", 256, 4, 1, 8},
    {"tma_n128s6", 128, 6, 1, 8},
    {"tma_n256s3", 256, 3, 1, 8},
    {"tma_n128s6c2", 128, 6, 2, 8},
    {"tma_n256s4g16", 256, 4, 1, 16},
    {"tma_n256s4g4", 256, 4, 1, 4},
    {"tma_n256s4c2g16", 256, 4, 2, 16},
    {"tma_n256s4c2g16e", 256, 4, 2, 16, 1},
    {"tma_n256s4e", 256, 4, 1, 8, 1},
};

static int tma_stage_bytes(const tma_cfg *c) { return (128 + c->bn) * 128; }
/* the epilogue buffers of tma_store_ok: 2 x 8 KiB per consumer warpgroup */
#define BM_TMA_EPI_BYTES 32768
static int tma_smem(const tma_cfg *c, bool ts) {
  return c->stages * tma_stage_bytes(c) + 1024 + 16 * c->stages + (ts ? BM_TMA_EPI_BYTES : 0);
}

/* elements of x at the symbols' maxima */
static int64_t max_elems(const bm_graph *g, const bm_node *x) {
  int64_t e = 1;
  for (int d = 0; d < x->ndim; d++) e *= ck_dim_max(g, x->shape[d]);
  return e;
}

/* B stored (K, N) (not trans_b) on the TMA kernel: f16/bf16 of one dtype, A
 * (M, K) K-major, and B rows past K zero (the tensor's end: B has one
 * matrix) or never read (K a multiple of the 64-deep step), since the
 * (K, N) map's rows are the stacked batches' K rows */
static bool tma_kn_ok(const bm_clike_lang *L, const bm_node *n) {
  if (!L || L->tensor_cores < 2 || !tc_gemm_ok(L, n) || tc_split(n) || n->a.trans_a || n->a.trans_b) return false;
  const bm_node *a = n->in[0], *b = n->in[1];
  const bm_dim kd = a->shape[a->ndim - 1];
  int64_t bn = b->shape[b->ndim - 1].add, bmat = 1;
  for (int d = 0; d < b->ndim - 2; d++) bmat *= bm_dim_is_static(b->shape[d]) ? b->shape[d].add : 2;
  return bm_dim_is_static(kd) && bm_dim_is_static(b->shape[b->ndim - 2]) && bn % 8 == 0 &&
         (kd.add % 64 == 0 || bmat == 1);
}

/* the TMA config for node n (NULL: the cp.async wgmma config of wgmma_cfg,
 * the mma.sync tile for B (K, N), or none): BM_CUDA_WGMMA names one, or a
 * cp.async one (then NULL), else the first; the output index must leave the
 * map slot free; B (K, N) only with 256-wide tiles (bm_wgmma_tb_*_n256) */
static const tma_cfg *tma_cfg_for(const bm_clike_lang *L, const bm_node *n) {
  const bool kn = tma_kn_ok(L, n);
  if ((!kn && !wgmma_cfg(L, n)) || n->nin >= BM_TMA_SLOT) return NULL;
  const char *env = getenv("BM_CUDA_WGMMA");
  if (!env || !*env) return &tma_cfgs[0];
  for (size_t i = 0; i < sizeof tma_cfgs / sizeof *tma_cfgs; i++)
    if (strcmp(env, tma_cfgs[i].name) == 0) return kn && tma_cfgs[i].bn != 256 ? NULL : &tma_cfgs[i];
  return NULL;
}

/* the store through shared memory and TMA (config tstore): f16/bf16 output
 * with N static and a multiple of 8 (the map's row pitch: 16-byte multiples) */
static bool tma_store_ok(const tma_cfg *c, const bm_node *n) {
  const bm_dim nd = n->shape[n->ndim - 1];
  return c->tstore && (n->dtype == BM_DTYPE_F16 || n->dtype == BM_DTYPE_BF16) && bm_dim_is_static(nd) &&
         nd.add % 8 == 0 && nd.add > 0;
}

/* "tmd2": the same header as tmd1, then per map BM_TMD2_VALS values: buffer,
 * element bytes, rank (1..5), dims[5] (innermost first), strides[4] (bytes
 * of dims 1..4), box[5], element strides[5] (traversal), swizzle; unused
 * entries 0 (dims, strides) or 1 (box, element strides). The runtime
 * (runtime/device_cuda.c, "Tensor maps") reads tmd1 and tmd2. */
#define BM_TMD2_MAGIC 0x32646d74l /* "tmd2" */
#define BM_TMD2_VALS 23

/* estr: the element (traversal) strides, NULL for 1s; box[d] counts the
 * elements traversed (box[d] / estr[d] of them are loaded) */
static void tmd2_map(ck *k, int buf, int rank, const int64_t *dims, const int *box, const int *estr, int swz) {
  P(", %d, 2, %d", buf, rank);
  for (int d = 0; d < 5; d++) P(", %lld", (long long)(d < rank ? dims[d] : 0));
  int64_t st = 2;
  for (int d = 1; d < 5; d++) {
    if (d < rank) st *= dims[d - 1];
    P(", %lld", (long long)(d < rank ? st : 0));
  }
  for (int d = 0; d < 5; d++) P(", %d", d < rank ? box[d] : 1);
  for (int d = 0; d < 5; d++) P(", %d", d < rank && estr ? estr[d] : 1);
  P(", %d", swz);
}

/* The NHWC conv on the TMA GEMM (layout BM_CONV_NHWC, passes/layout_conv.c):
 * C (O, OH*OW) per image = W (O, K) @ X^T, K = (kh, kw, ci) with the weights
 * stored (O, KH, KW, Cg) (A: the GEMM's A map, K columns x O rows) and x
 * (N, H, W, C): a K step (64 channels of one tap kh, kw) of the B tile is,
 * per output position, 64 contiguous channels = one 128-byte row, the
 * GEMM's K-major B in the 128-byte swizzle. The tile's 256 positions are
 * whole output rows (bw = OW, bh = 256 / OW when OW divides 256) or 256 of
 * one row (OW a multiple of 256), so B is ONE 4-d TMA box (64 channels, bw,
 * bh, 1 image) at (ci0, ow0 + kw*dil - pad, oh0 + kh*dil - pad, img) of a
 * map over x (C, W, H, N): the out-of-bounds zero fill is the padding.
 * With clusters of 2 each block loads half the box (bh / 2 rows, or 128
 * columns when bh is 1), multicast. Stride 1, groups 1, C a multiple of 64,
 * OH*OW >= 256 (smaller grids waste most of a 256-wide tile: the old kernel
 * keeps them). BM_CUDA_CONV=old keeps every conv NCHW (the previous wgmma
 * kernel), BM_CUDA_CONV=<a tma config> picks one (256-wide; conv_tma_cfg). */
static const tma_cfg *tma_cfg_named(const char *name) {
  for (size_t i = 0; i < sizeof tma_cfgs / sizeof *tma_cfgs; i++)
    if (strcmp(name, tma_cfgs[i].name) == 0) return &tma_cfgs[i];
  return NULL;
}

/* n's config: BM_CUDA_CONV names one (256-wide), "old" (or a cp.async
 * BM_CUDA_WGMMA config) none; by default clusters of 2 (tma_n256s4c2e) when
 * the O tiles pair up (ceil(O / 128) even), else none (tma_n256s4e): an odd
 * count leaves the last pair's second tile idle. H100 (docs/cuda.md): O 320,
 * 640, 128 ran 1.03 / 0.96 / 1.43x cuDNN without clusters and 0.71 / 0.52 /
 * 0.87x with them; O 512 and 256 on the VAE's large images 1.22 / 1.27x
 * with clusters, 1.05 / 1.16x without. */
static const tma_cfg *conv_tma_cfg(const bm_node *n) {
  const char *wg = getenv("BM_CUDA_WGMMA"); /* a cp.async wgmma config or 0 forces the old kernel's body */
  if (wg && *wg && strncmp(wg, "tma_", 4) != 0) return NULL;
  const char *env = getenv("BM_CUDA_CONV");
  if (env && *env) {
    const tma_cfg *c = tma_cfg_named(env);
    return c && c->bn == 256 ? c : NULL; /* "old" or an unknown name: the NCHW kernel */
  }
  const int64_t tm = (n->in[1]->shape[0].add + 127) / 128;
  return tma_cfg_named(tm % 2 == 0 ? "tma_n256s4c2e" : "tma_n256s4e");
}

/* Stride 2: the same box with the TMA's element strides (traversal stride
 * 2 along W and H: a box of 2 bw x 2 bh input elements loads bw x bh of
 * them, at the output positions' taps), so OW <= 128; the mma.sync bodies
 * take any stride. On by default (H100: the SD downsampler 1.12x cuDNN, the
 * NCHW kernel 0.61x; docs/cuda.md); BM_CUDA_CONV_S2=0 keeps stride 2 on
 * the NCHW kernel. */
static bool conv_stride2_on(void) {
  const char *e = getenv("BM_CUDA_CONV_S2");
  return !e || !*e || atoi(e) > 0;
}

bool ck_conv_nhwc_ok(const bm_node *n) {
  if (n->op != BM_OP_CONV2D || n->a.layout != BM_CONV_NHWC || !conv_tma_cfg(n)) return false;
  const bm_node *x = n->in[0], *w = n->in[1];
  if (x->dtype != w->dtype || (x->dtype != BM_DTYPE_F16 && x->dtype != BM_DTYPE_BF16)) return false;
  const int s = n->a.stride[0];
  if (n->a.groups != 1 || n->a.stride[1] != s || !(s == 1 || (s == 2 && conv_stride2_on())) || n->nin >= BM_TMA_SLOT)
    return false;
  for (int d = 1; d < 4; d++)
    if (!bm_dim_is_static(x->shape[d]) || !bm_dim_is_static(n->shape[d])) return false;
  const int64_t C = x->shape[3].add, OH = n->shape[2].add, OW = n->shape[3].add;
  if (C % 64 || OH * OW < 256 || x->shape[1].add >= (1 << 30) || x->shape[2].add >= (1 << 30)) return false;
  if (s == 2) return OW >= 2 && OW <= 128 && 256 % OW == 0; /* the box's 2 OW x 2 bh traversed: at most 256 each */
  return (OW <= 256 && 256 % OW == 0) || OW % 256 == 0;
}

/* a conv tile's B box: bw x bh positions; each of a cluster's C blocks loads
 * boxw x boxh of them at (offw, offh) x its rank */
typedef struct conv_box {
  int bw, bh, boxw, boxh, offw, offh;
} conv_box;

static conv_box conv_box_of(const bm_node *n, int C) {
  const int64_t OW = n->shape[3].add;
  conv_box b = {OW <= 256 ? (int)OW : 256, OW <= 256 ? (int)(256 / OW) : 1, 0, 0, 0, 0};
  b.boxw = b.bw, b.boxh = b.bh;
  if (C > 1 && b.bh >= C) b.boxh = b.bh / C, b.offh = b.boxh;
  else if (C > 1) b.boxw = b.bw / C, b.offw = b.boxw;
  return b;
}

/* work item t -> bi, m0, n0 (groups of 8 M-tiles walk N together); with
 * clusters of 2 an item is a pair of M-tiles, the block's is 2 pm + crank */
static void tma_tile(ck *k, const tma_cfg *c) {
  const char *I = k->I;
  const int G = c->group / c->cluster;
  P("      const %s bi = t / (tmp * tn), rem = t %% (tmp * tn);\n", I);
  P("      const %s tgrp = rem / (%d * tn), first = tgrp * %d, gsz = tmp - first < %d ? tmp - first : %d;\n", I, G, G, G, G);
  P("      const %s pm = first + (rem %% (%d * tn)) %% gsz, n0 = ((rem %% (%d * tn)) / gsz) * %d;\n", I, G, G, c->bn);
  if (c->cluster > 1)
    P("      const %s m0 = (pm * %d + (%s)crank) * 128;\n", I, c->cluster, I);
  else
    P("      const %s m0 = pm * 128;\n", I);
}

/* The producer's TMA load of this block's part of a B tile into stage sa
 * (+ extra) at (col, row) of B's map: with clusters, the block's half
 * (bh rows/columns, crank) multicast into every block of the cluster. */
static void tma_load_b(ck *k, int C, int bh, const char *ind, const char *extra, const char *col, const char *row) {
  if (C > 1)
    P("%sbm_tma_load2d_mc(sa + 16384 + %d * crank%s, tmb, %s, %s, fb, (unsigned short)%d);\n", ind, bh * 128, extra,
      col, row, (1 << C) - 1);
  else
    P("%sbm_tma_load2d(sa + 16384%s, tmb, %s, %s, fb);\n", ind, extra, col, row);
}

/* the conv's bias of output channel gm added to v and v1 (two positions) */
static void conv_bias2(ck *k) {
  str b = ck_ld(k, 2, k->n->in[2]->dtype, ck_strf("gm"));
  P("      { const float bv = %s; v += bv; v1 += bv; }\n", b.s);
}

/* The TMA store's epilogue prefetch: the number of extra epilogue inputs
 * when every one is f16/bf16 with the output's shape (the LLM's residual add
 * and gate x up: read as the pair of columns each thread stores, one 32-bit
 * word, before the chunk's wait), else 0 (loaded per element in the
 * epilogue, as before; BM_CUDA_EPI_PREFETCH=0, read by bmc, keeps that). */
static int tma_epi_prefetch(const ck *k) {
  const bm_node *n = k->n;
  const char *e = getenv("BM_CUDA_EPI_PREFETCH");
  if (e && strcmp(e, "0") == 0) return 0;
  const int base = bm_node_base_nin(n), nx = n->a.prog.nin - 1;
  if (nx < 1 || nx > 8 || base + nx > n->nin) return 0;
  for (int x = 0; x < nx; x++) {
    const bm_node *in = n->in[base + x];
    if (in->dtype != n->in[base]->dtype || (in->dtype != BM_DTYPE_BF16 && in->dtype != BM_DTYPE_F16) ||
        !ck_same_dims(in, n))
      return 0;
  }
  return nx;
}

static void emit_gemm_tma(ck *k, gemm *g, const tma_cfg *c) {
  const bm_node *n = k->n, *a = n->in[0], *b = n->in[1];
  const char *I = k->I, *dt = b->dtype == BM_DTYPE_BF16 ? "bf16" : "f16";
  const bool conv = n->op == BM_OP_CONV2D; /* the NHWC conv (ck_conv_nhwc_ok): 4-d B box, weights as A */
  const bool kn = !conv && !n->a.trans_b; /* B stored (K, N) */
  const bool ts = tma_store_ok(c, n) && (!conv || n->in[1]->shape[0].add % 64 == 0); /* the TMA store */
  const int BN = c->bn, S = c->stages, C = c->cluster, stage = tma_stage_bytes(c), smem = tma_smem(c, ts);
  const int bh = BN / C; /* B rows (columns when kn) each block of a cluster loads */
  assert(!kn || BN == 256);
  assert(!conv || BN == 256);
  int64_t Kc = a->shape[a->ndim - 1].add; /* static (tc_gemm_ok) */
  int64_t Nc = n->shape[n->ndim - 1].add; /* static when kn or ts (tc_gemm_ok, tma_store_ok) */
  int64_t ra = 0, rb = 0;
  const long magic = conv ? BM_TMD2_MAGIC : BM_TMD_MAGIC;
  bm_sb *saved = k->b;
  k->b = &k->decl;
  P("#if defined(__CUDA_ARCH_FEAT_SM90_ALL)\n");
  if (conv) { /* A: the weights (K columns, O rows); B: x (C, W, H, images); the output: (OH*OW, images * O) */
    const bm_node *x = n->in[0], *w = n->in[1];
    const conv_box cb = conv_box_of(n, C);
    Kc = w->shape[1].add * w->shape[2].add * w->shape[3].add;
    Nc = n->shape[2].add * n->shape[3].add;
    ra = w->shape[0].add;
    rb = ck_dim_max(k->g, x->shape[0]);
    const int64_t da[2] = {Kc, ra}, db[4] = {x->shape[3].add, x->shape[2].add, x->shape[1].add, rb},
                  dc[2] = {Nc, max_elems(k->g, n) / Nc};
    const int sw = n->a.stride[1], sh = n->a.stride[0]; /* stride 2: traversal strides (conv_stride2_on) */
    const int boxa[2] = {64, 128}, boxb[4] = {64, cb.boxw * sw, cb.boxh * sh, 1}, boxc[2] = {64, 64};
    const int estrb[4] = {1, sw, sh, 1};
    P("extern \"C\" { __constant__ long long BM_KSYM(_tmd)[] = {%ldll, %d, 1, %d, %d, %d", magic, smem, BM_TMA_SLOT,
      ts ? 3 : 2, C);
    tmd2_map(k, 1, 2, da, boxa, NULL, 3);
    tmd2_map(k, 0, 4, db, boxb, estrb, 3);
    if (ts) tmd2_map(k, n->nin, 2, dc, boxc, NULL, 3);
  } else {
    ra = max_elems(k->g, a) / Kc, rb = max_elems(k->g, b) / (kn ? Nc : Kc);
    /* the runtime's data (BM_TMD_MAGIC layout); the body names the config,
     * so kernels with other data never share a source. B (N, K): box 64 K
     * columns x bh rows; B (K, N): box 64 N columns x 64 K rows (bh / 64 per
     * step and block); the output (ts): box 64 x 64 */
    P("extern \"C\" { __constant__ long long BM_KSYM(_tmd)[] = {%ldll, %d, 1, %d, %d, %d, 0, 2, %lld, %lld, 64, 128, 3, 1, "
      "2, %lld, %lld, 64, %d, 3",
      BM_TMD_MAGIC, smem, BM_TMA_SLOT, ts ? 3 : 2, C, (long long)Kc, (long long)ra, (long long)(kn ? Nc : Kc),
      (long long)rb, kn ? 64 : bh);
    if (ts) P(", %d, 2, %lld, %lld, 64, 64, 3", n->nin, (long long)Nc, (long long)(max_elems(k->g, n) / Nc));
  }
  P("}; }\n");
  P("#endif\n");
  k->b = saved;
  if (conv)
    P("  /* tma %s, NHWC conv%s: O %lld, images %lld, K %lld */\n", c->name, ts ? ", TMA store" : "", (long long)ra,
      (long long)rb, (long long)Kc);
  else
    P("  /* tma %s%s%s: A rows %lld, B rows %lld, K %lld */\n", c->name, kn ? ", B (K, N)" : "", ts ? ", TMA store" : "",
      (long long)ra, (long long)rb, (long long)Kc);
  P("  if (bm_a.bufs[%d] == 0ull || bm_dyn_smem() < %du || BM_KSYM(_tmd)[0] != %ldll) {\n", BM_TMA_SLOT, smem, magic);
  P("  if (tid >= 256) return;\n");
  if (conv || kn) /* the mma.sync tile (the NHWC conv: B rows by cp.async), in k->smem of dynamic shared memory */
    emit_gemm_tc(k, g);
  else
    emit_gemm_wgmma(k, g, &wg_cfgs[0]);
  P("  } else {\n");
  P("  extern __shared__ __align__(128) unsigned char bm_dsm[];\n");
  P("  const unsigned int sm0 = (bm_smem_addr(bm_dsm) + 1023u) & ~1023u, bar = sm0 + %d; /* full[s], empty[s] */\n",
    S * stage + (ts ? BM_TMA_EPI_BYTES : 0));
  P("  const unsigned long long tma = bm_a.bufs[%d], tmb = tma + 128;\n", BM_TMA_SLOT);
  P("  const %s tm = (M + 127) / 128, tmp = (tm + %d) / %d, tn = (N + %d) / %d, ktiles = (K + 63) / 64;\n", I, C - 1, C,
    BN - 1, BN);
  P("  const %s nitems = nb * tmp * tn, ncl = (%s)nblk / %d;\n", I, I, C);
  P("  const unsigned int crank = %s;\n", C > 1 ? "bm_cluster_rank()" : "0u");
  P("  (void)crank;\n");
  P("  if (tid == 0) {\n");
  P("    for (int s = 0; s < %d; s++) { bm_mbar_init(bar + 8 * s, 1); bm_mbar_init(bar + %d + 8 * s, %d); }\n", S, 8 * S,
    8 * C);
  P("    bm_mbar_fence_init();\n");
  P("  }\n");
  if (C > 1)
    P("  bm_cluster_sync(); /* the peer's barriers are initialized */\n");
  else
    P("  BM_SYNC();\n");
  P("  if (tid < 128) { /* producer */\n");
  P("    bm_setmaxnreg_dec<40>();\n");
  P("    if (tid == 0) {\n");
  P("    bm_tmap_acquire(tma); bm_tmap_acquire(tmb);\n");
  P("    unsigned int it = 0;\n");
  P("    for (%s t = (%s)bid0 / %d; t < nitems; t += ncl) {\n", I, I, C);
  tma_tile(k, c);
  P("%s", g->batch_setup.s);
  if (conv) /* the tile's first output position (oh0, ow0) of image bi */
    P("      const int ra = (int)m0, oh0 = (int)(n0 / OW), ow0 = (int)(n0 %% OW);\n");
  else if (kn) /* B's map: (stacked K rows, N columns); this block's bh columns */
    P("      const int ra = (int)(a_off / K + m0), rb = (int)(b_off / N), cb = (int)n0 + %d * (int)crank;\n", bh);
  else
    P("      const int ra = (int)(a_off / K + m0), rb = (int)(b_off / K + n0) + %d * (int)crank;\n", bh);
  P("      for (%s kt = 0; kt < ktiles; kt++, it++) {\n", I);
  P("        const unsigned int s = it %% %du, fb = bar + 8 * s, sa = sm0 + s * %d;\n", S, stage);
  P("        bm_mbar_wait(bar + %d + 8 * s, ((it / %du) & 1u) ^ 1u); /* the consumers freed it */\n", 8 * S, S);
  P("        bm_mbar_expect_tx(fb, %du);\n", stage);
  P("        bm_tma_load2d(sa, tma, (int)(kt * 64), ra, fb);\n");
  if (conv) { /* K step kt: tap (kh, kw) = kt * 64 / C, channels ci0.. of it; this block's part of the box */
    const bm_node *w = n->in[1];
    const int64_t Ci = w->shape[3].add, KW = w->shape[2].add;
    const conv_box cb = conv_box_of(n, C);
    P("        const int tap = (int)(kt * 64) / %lld, ci0 = (int)(kt * 64) %% %lld;\n", (long long)Ci, (long long)Ci);
    const int sh = n->a.stride[0], sw = n->a.stride[1]; /* the box's first input element (stride 2: traversed by 2) */
    P("        const int ih = oh0 * %d + (tap / %lld) * %d - %d, iw = ow0 * %d + (tap %% %lld) * %d - %d;\n", sh,
      (long long)KW, n->a.dilation[0], n->a.pad[0], sw, (long long)KW, n->a.dilation[1], n->a.pad[1]);
    if (C > 1)
      P("        bm_tma_load4d_mc(sa + 16384 + %d * crank, tmb, ci0, iw + %d * (int)crank, ih + %d * (int)crank, (int)img, fb, "
        "(unsigned short)%d);\n",
        cb.boxw * cb.boxh * 128, cb.offw * sw, cb.offh * sh, (1 << C) - 1);
    else
      P("        bm_tma_load4d(sa + 16384, tmb, ci0, iw, ih, (int)img, fb);\n");
  } else if (kn) { /* 64-column blocks of 64 K rows x 128 bytes (the MN-major descriptor's LBO: 8192) */
    P("#pragma unroll\n        for (int j = 0; j < %d; j++)\n", bh / 64);
    tma_load_b(k, C, bh, "          ", " + 8192 * j", "cb + 64 * j", "rb + (int)(kt * 64)");
  } else {
    tma_load_b(k, C, bh, "        ", "", "(int)(kt * 64)", "rb");
  }
  P("      }\n");
  P("    }\n");
  P("    }\n");
  P("  } else { /* consumers: warpgroup wg of 64 rows */\n");
  P("    bm_setmaxnreg_inc<232>();\n");
  P("    const int wg = (tid >> 7) - 1, wq = (tid >> 5) & 3, lane = tid & 31;\n");
  if (ts) { /* the warpgroup's two 8 KiB buffers (64 rows x 64 columns, 128-byte swizzle), its first thread stores */
    P("    const unsigned long long tmc = tma + 256;\n");
    P("    const unsigned int eb0 = sm0 + %d + wg * 16384;\n", S * stage);
    if (conv) /* O % 64 == 0: a warpgroup's 64 rows lie all below O or all past it */
      P("    const bool tstore = true;\n");
    else
      P("    const bool tstore = M %% 128 == 0; /* whole tiles: the map's rows are the batches' stacked rows */\n");
    P("    if ((tid & 127) == 0) bm_tmap_acquire(tmc);\n");
  }
  P("    unsigned int it = 0;\n");
  P("    for (%s t = (%s)bid0 / %d; t < nitems; t += ncl) {\n", I, I, C);
  tma_tile(k, c);
  P("%s", g->batch_setup.s);
  P("      float acc[%d];\n", BN / 2);
  P("#pragma unroll\n      for (int i = 0; i < %d; i++) acc[i] = 0.0f;\n", BN / 2);
  P("      for (%s kt = 0; kt < ktiles; kt++, it++) {\n", I);
  P("        const unsigned int s = it %% %du, sa = sm0 + s * %d;\n", S, stage);
  P("        bm_mbar_wait(bar + 8 * s, (it / %du) & 1u);\n", S);
  if (kn) {
    P("        const unsigned long long da = bm_wgmma_desc(sa + wg * 8192, true), db = bm_wgmma_desc_mn(sa + 16384, 8192, "
      "1024);\n");
    P("        bm_wgmma_fence_n%d(acc);\n", BN);
    P("#pragma unroll\n        for (int kk = 0; kk < 4; kk++) bm_wgmma_tb_%s_n%d(acc, da + 2 * kk, db + 128 * kk);\n", dt,
      BN);
  } else {
    P("        const unsigned long long da = bm_wgmma_desc(sa + wg * 8192, true), db = bm_wgmma_desc(sa + 16384, true);\n");
    P("        bm_wgmma_fence_n%d(acc);\n", BN);
    P("#pragma unroll\n        for (int kk = 0; kk < 4; kk++) bm_wgmma_%s_n%d(acc, da + 2 * kk, db + 2 * kk);\n", dt, BN);
  }
  P("        bm_wgmma_commit();\n");
  P("        bm_wgmma_wait_n%d<1>(acc);\n", BN);
  P("        if (kt > 0 && lane == 0) { /* step kt - 1 is done */\n");
  P("          const unsigned int eb = bar + %d + 8 * ((it + %du) %% %du);\n", 8 * S, S - 1, S);
  P("          bm_mbar_arrive(eb);%s\n", C > 1 ? " bm_mbar_arrive_peer(eb, crank ^ 1u);" : "");
  P("        }\n");
  P("      }\n");
  P("      bm_wgmma_wait_n%d<0>(acc);\n", BN);
  P("      if (lane == 0) {\n");
  P("        const unsigned int eb = bar + %d + 8 * ((it + %du) %% %du);\n", 8 * S, S - 1, S);
  P("        bm_mbar_arrive(eb);%s\n", C > 1 ? " bm_mbar_arrive_peer(eb, crank ^ 1u);" : "");
  P("      }\n");
  /* the store: f16/bf16 outputs with an even N write each thread's two
   * adjacent columns as one 32-bit word (the epilogue per element) */
  const bm_dim nd = n->shape[n->ndim - 1];
  const bool pair = (n->dtype == BM_DTYPE_F16 || n->dtype == BM_DTYPE_BF16) && bm_dim_is_static(nd) && nd.add % 2 == 0;
  const char *pk = n->dtype == BM_DTYPE_BF16 ? "bf16" : "f16";
  const bool cbias = conv && bm_node_base_nin(n) >= 3; /* the conv's bias (input 2) before the epilogue */
  if (ts) { /* whole tiles: per 64-column chunk h, the warpgroup writes its 64 rows into buffer h & 1 (after the
             * store of chunk h - 2 has read it), then its first thread stores them with one TMA tensor store; the
             * warpgroup goes on to the next tile while the stores drain. Columns past N: clipped by the map. */
    P("      if (tstore) {\n");
    if (conv)
      P("      if (m0 + wg * 64 < M) { /* the warpgroup's rows: below O (a pair's second tile may lie past it) */\n");
    else
      P("      if (m0 < M) { /* a cluster pair's second tile may lie past M */\n");
    P("      const int crow = (int)(bi * M + m0) + wg * 64;\n");
    const int npre = (bm_op_table[n->op].flags & BM_OPF_EPILOGUE) && n->a.prog.n > 0 && !cbias ? tma_epi_prefetch(k) : 0;
    P("#pragma unroll\n      for (int h = 0; h < %d; h++) {\n", BN / 64);
    P("      const unsigned int eb = eb0 + (h & 1) * 8192;\n");
    if (npre) { /* the epilogue's inputs of chunk h, loaded before the wait: their latencies overlap */
      P("      unsigned int ex[%d][16];\n", npre);
      P("#pragma unroll\n      for (int j = 0; j < 8; j++)\n#pragma unroll\n      for (int q = 0; q < 4; q += 2) {\n");
      P("      const %s gm = m0 + wg * 64 + wq * 16 + (lane >> 2) + (q >> 1) * 8, gn = n0 + h * 64 + j * 8 + (lane & 3) * 2;\n", I);
      P("      const %s oi = (bi * M + gm) * N + gn;\n", I);
      for (int x = 0; x < npre; x++)
        P("      ex[%d][j * 2 + (q >> 1)] = gn < N ? *(const BM_GLOBAL unsigned int *)(bm_buf(%d) + (bm_i64)oi * 2) : 0u;\n", x,
          bm_node_base_nin(n) + x);
      P("      }\n");
    }
    P("      if ((tid & 127) == 0) bm_bulk_wait_read<1>();\n");
    P("      bm_bar_sync_n(1 + wg, 128); /* buffer h & 1 is free */\n");
    P("#pragma unroll\n      for (int j = 0; j < 8; j++)\n#pragma unroll\n      for (int q = 0; q < 4; q += 2) {\n");
    P("      const int r = wq * 16 + (lane >> 2) + (q >> 1) * 8;\n");
    P("      float v = acc[(h * 8 + j) * 4 + q], v1 = acc[(h * 8 + j) * 4 + q + 1];\n");
    const bool epi = bm_op_table[n->op].flags & BM_OPF_EPILOGUE && n->a.prog.n > 0;
    if (epi || cbias) {
      P("      const %s gm = m0 + wg * 64 + r, gn = n0 + h * 64 + j * 8 + (lane & 3) * 2;\n", I);
      P("      if (gn < N) {\n");
      if (cbias) conv_bias2(k);
      if (epi) {
        P("      const %s oi = (bi * M + gm) * N + gn, oi1 = oi + 1;\n", I);
        if (npre) { /* the low half of each 32-bit word is column gn, the high half gn + 1 */
          const bool bf = n->in[bm_node_base_nin(n)]->dtype == BM_DTYPE_BF16;
          str lo[8], hi[8];
          const char *plo[8], *phi[8];
          for (int x = 0; x < npre; x++) {
            lo[x] = bf ? ck_strf("bm_bits_f32(ex[%d][j * 2 + (q >> 1)] << 16)", x)
                       : ck_strf("bm_h2f((unsigned short)(ex[%d][j * 2 + (q >> 1)] & 0xffffu))", x);
            hi[x] = bf ? ck_strf("bm_bits_f32(ex[%d][j * 2 + (q >> 1)] & 0xffff0000u)", x)
                       : ck_strf("bm_h2f((unsigned short)(ex[%d][j * 2 + (q >> 1)] >> 16))", x);
            plo[x] = lo[x].s;
            phi[x] = hi[x].s;
          }
          ck_emit_epilogue_pre(k, "v", "oi", plo);
          ck_emit_epilogue_pre(k, "v1", "oi1", phi);
        } else {
          ck_emit_epilogue(k, "v", "oi");
          ck_emit_epilogue(k, "v1", "oi1");
        }
      }
      P("      }\n");
    }
    P("      bm_st_shared_u32(eb + r * 128 + ((j ^ (r & 7)) << 4) + (lane & 3) * 4, bm_pack_%sx2(v, v1));\n", pk);
    P("      }\n");
    P("      bm_fence_proxy_async(); /* visible to the TMA (async proxy) */\n");
    P("      bm_bar_sync_n(1 + wg, 128);\n");
    P("      if ((tid & 127) == 0) { bm_tma_store2d(tmc, eb, (int)n0 + h * 64, crow); bm_bulk_commit(); }\n");
    P("      }\n");
    P("      }\n");
    P("      } else {\n");
  }
  P("#pragma unroll\n      for (int j = 0; j < %d; j++)\n#pragma unroll\n      for (int q = 0; q < 4; q += %d) {\n", BN / 8,
    pair ? 2 : 1);
  P("      const %s gm = m0 + wg * 64 + wq * 16 + (lane >> 2) + (q >> 1) * 8;\n", I);
  P("      const %s gn = n0 + j * 8 + (lane & 3) * 2 + (q & 1);\n", I);
  P("      if (gm < M && gn < N) {\n");
  if (pair) {
    P("      float v = acc[j * 4 + q], v1 = acc[j * 4 + q + 1];\n");
    if (cbias) conv_bias2(k);
    P("      const %s oi = (bi * M + gm) * N + gn, oi1 = oi + 1;\n", I);
    ck_emit_epilogue(k, "v", "oi");
    ck_emit_epilogue(k, "v1", "oi1");
    P("      *(unsigned int *)(bm_out(%d) + (bm_i64)oi * 2) = bm_pack_%sx2(v, v1);\n", n->nin, pk);
  } else {
    P("      float v = acc[j * 4 + q];\n");
    g->store_c(k, g);
  }
  P("      }\n");
  P("      }\n");
  if (ts) P("      }\n");
  P("    }\n");
  if (ts) P("    if ((tid & 127) == 0) bm_bulk_wait<0>(); /* the stores are done before the block exits */\n");
  P("  }\n");
  if (C > 1) P("  bm_cluster_sync(); /* no copy or arrival targets an exited block */\n");
  P("  }\n");
}

static void mm_load_a(ck *k, gemm *g) {
  const bm_node *a = k->n->in[0];
  str off = k->n->a.trans_a ? ck_strf("a_off + gk * M + gm") : ck_strf("a_off + gm * K + gk");
  P("          val = %s;\n", ck_ld(k, 0, a->dtype, off).s);
}
static void mm_load_b(ck *k, gemm *g) {
  const bm_node *b = k->n->in[1];
  str off = k->n->a.trans_b ? ck_strf("b_off + gn * K + gk") : ck_strf("b_off + gk * N + gn");
  P("          val = %s;\n", ck_ld(k, 1, b->dtype, off).s);
}
static void mm_store(ck *k, gemm *g) {
  P("      const %s oi = (bi * M + gm) * N + gn;\n", k->I);
  ck_emit_epilogue(k, "v", "oi");
  ck_store(k, "oi", "v");
}

/* Batch offset (in elements of the batch) of operand x of rank rx, whose
 * leading rx-2 dims broadcast to the output's nb dims, for coordinates bc*. */
static str batch_off(ck *k, const bm_node *x, int nbd) {
  bm_node tmp = *x;
  tmp.ndim = x->ndim - 2;
  return ck_bcast_off(k, &tmp, nbd, "bc");
}

/* Does emit_matmul give MATMUL n to the GEMV? Decode: a few rows stream the
 * weights; from 5 rows on, the CUDA-core GEMV is bound by its activation
 * reads (16 rows: 0.2x cuBLAS on an H100) and the tensor-core tile is faster
 * where it applies; the small-M GEMM first (emit_gemm_small.c). */
static bool matmul_gemv_use(const bm_graph *g, const bm_clike_lang *L, const bm_node *n) {
  int64_t rows;
  return !ck_gemm_small_use(g, L, n) && ck_gemv_ok(g, L, n, &rows) && (rows <= 4 || !tc_gemm_ok(L, n));
}

/* A MATMUL probe of x @ W^T (W (N, K) of dtype wt) with n's output type: what the
 * emitter would do with the unfused form of n. */
static bm_node linear_probe(const bm_node *n, const bm_node *x, const bm_node *w, bm_node *wcopy, bm_dtype wt) {
  *wcopy = *w;
  wcopy->dtype = wt;
  bm_node mm;
  memset(&mm, 0, sizeof mm);
  mm.op = BM_OP_MATMUL, mm.nin = 2, mm.in[0] = (bm_node *)x, mm.in[1] = wcopy, mm.a.trans_b = 1;
  mm.dtype = n->dtype, mm.ndim = n->ndim;
  memcpy(mm.shape, n->shape, sizeof mm.shape);
  return mm;
}

bool ck_qmatmul_fast(const bm_graph *g, const bm_clike_lang *L, const bm_node *n) {
  int64_t rows;
  return ck_gemm_small_use(g, L, n) || ck_gemv_ok(g, L, n, &rows);
}

bool ck_qmatmul_keep(const bm_graph *g, const bm_clike_lang *L, const bm_node *n) {
  if (n->op != BM_OP_QMATMUL || ck_qmatmul_fast(g, L, n)) return true;
  const char *env = getenv("BM_CUDA_QGEMM");
  if (env && !strcmp(env, "old")) return true;
  const bm_node *x = n->in[0];
  if (x->dtype != BM_DTYPE_F16 && x->dtype != BM_DTYPE_BF16) return true; /* f32: no rounding of the weight */
  bm_node w;
  bm_node mm = linear_probe(n, x, n->in[1], &w, x->dtype);
  return !tc_gemm_ok(L, &mm);
}

bool ck_skinny_fused_ok(const bm_graph *g, const bm_clike_lang *L, const bm_node *n) {
  if (n->op != BM_OP_MATMUL_GLU && n->op != BM_OP_RMS_MATMUL) return true;
  const bm_node *w = n->in[n->op == BM_OP_RMS_MATMUL ? 2 : 1];
  bm_node wc;
  bm_node mm = linear_probe(n, n->in[0], w, &wc, w->dtype);
  return matmul_gemv_use(g, L, &mm);
}

/* The two bodies of a TMA GEMM launch (matmul, NHWC conv): the warp-
 * specialized TMA kernel on sm_90a (its own fallback without maps), the
 * mma.sync tile on 256 of the 384 threads elsewhere; `smem` is the dynamic
 * shared memory of the fallback (the runtime raises it to the TMA body's,
 * BM_KSYM(_tmd)). */
static void emit_tma_bodies(ck *k, gemm *g, const tma_cfg *c, int smem) {
  k->smem = smem;
  P("#if defined(__CUDA_ARCH_FEAT_SM90_ALL)\n");
  emit_gemm_tma(k, g, c);
  P("#else\n");
  P("  if (tid >= 256) return;\n");
  emit_gemm_tc(k, g);
  P("#endif\n");
  k->threads = 384;
  k->min_blocks = 1;
}

bm_status emit_matmul(ck *k) {
  const bm_node *n = k->n, *a = n->in[0], *b = n->in[1];
  if (ck_gemm_small_use(k->g, k->L, n)) return emit_gemm_small(k); /* 2..64 rows: emit_gemm_small.c */
  if (matmul_gemv_use(k->g, k->L, n)) return emit_gemv(k);
  int ro = n->ndim, nbd = ro - 2;
  str M = ck_dimx(k, n->shape[ro - 2]), N = ck_dimx(k, n->shape[ro - 1]);
  str K = ck_dimx(k, n->a.trans_a ? a->shape[a->ndim - 2] : a->shape[a->ndim - 1]);
  str nb = ck_prodx(k, n->shape, 0, nbd);
  P("  const %s M = %s, N = %s, K = %s, nb = %s;\n", k->I, M.s, N.s, K.s, nb.s);
  bool tc = tc_gemm_ok(k->L, n);
  bm_dim dims[BM_MAX_DIMS + 2];
  int64_t divs[BM_MAX_DIMS + 2];
  for (int d = 0; d < nbd; d++) {
    dims[d] = n->shape[d];
    divs[d] = 1;
  }
  dims[nbd] = n->shape[ro - 2];
  divs[nbd] = tc ? 128 : 64;
  dims[nbd + 1] = n->shape[ro - 1];
  divs[nbd + 1] = tc ? 128 : 64;
  k->tasks = ck_task_grid(k->g, nbd + 2, dims, divs);
  bm_sb tmp = {0};
  bm_sb *saved = k->b;
  k->b = &tmp;
  ck_unravel(k, "bi", nbd, n->shape, "bc");
  str ao = batch_off(k, a, nbd), bo = batch_off(k, b, nbd);
  P("      const %s a_off = %s * M * K, b_off = %s * K * N;\n", k->I, ao.s, bo.s);
  k->b = saved;
  gemm g = {0};
  snprintf(g.batch_setup.s, sizeof g.batch_setup.s, "%s", tmp.s ? tmp.s : "");
  bm_sb_free(&tmp);
  g.load_a = mm_load_a;
  g.load_b = mm_load_b;
  g.a_k_fast = !n->a.trans_a;
  g.b_k_fast = n->a.trans_b;
  g.store_c = mm_store;
  const wg_cfg *wc = wgmma_cfg(k->L, n);
  const tma_cfg *tc9 = tma_cfg_for(k->L, n);
  if (tc9) { /* sm_90a: TMA + wgmma (or its cp.async fallback); elsewhere mma.sync on 256 of the 384 threads */
    /* the fallback's (B (K, N): the mma.sync tile's 3 stages, dynamic); the runtime raises it to the TMA
     * body's (BM_KSYM(_tmd)) */
    emit_tma_bodies(k, &g, tc9, n->a.trans_b ? wg_smem(&wg_cfgs[0]) : 3 * 16384);
  } else if (wc) { /* sm_90a: wgmma; other archs and the PTX: mma.sync, same launch (128x128 tasks) */
    k->smem = wg_smem(wc);
    P("#if defined(__CUDA_ARCH_FEAT_SM90_ALL)\n");
    emit_gemm_wgmma(k, &g, wc);
    P("#else\n");
    emit_gemm_tc(k, &g);
    P("#endif\n");
    k->min_blocks = wc->bn <= 128 ? 2 : 1;
  } else if (tc) {
    emit_gemm_tc(k, &g);
  } else {
    emit_gemm(k, &g);
  }
  return NULL;
}

static void qmm_load_a(ck *k, gemm *g) {
  P("          val = %s;\n", ck_ld(k, 0, k->n->in[0]->dtype, ck_strf("gm * K + gk")).s);
}
static void qmm_load_b(ck *k, gemm *g) {
  const bm_node *q = k->n->in[1], *sc = k->n->in[2];
  str G = ck_dimx(k, sc->shape[1]);
  str lq = ck_ld(k, 1, q->dtype, ck_strf("gn * K + gk"));
  str ls = ck_ld(k, 2, sc->dtype, ck_strf("gn * %s + gk / (K / %s)", G.s, G.s));
  P("          val = %s * %s;\n", lq.s, ls.s);
}

/* More rows than the GEMV and the small-M GEMM take: the scalar tile. The
 * pipeline keeps QMATMUL there only where ck_qmatmul_keep says so (f32
 * activations, no tensor-core GEMM, BM_CUDA_QGEMM=old) or where a graph
 * was built with QMATMUL itself; else it is DEQUANT + MATMUL. */
bm_status emit_qmatmul(ck *k) {
  const bm_node *n = k->n, *q = n->in[1];
  int64_t nrows;
  if (ck_gemm_small_use(k->g, k->L, n)) return emit_gemm_small(k); /* 2..64 rows: emit_gemm_small.c */
  if (ck_gemv_ok(k->g, k->L, n, &nrows)) return emit_gemv(k);
  int ro = n->ndim;
  str N = ck_dimx(k, q->shape[0]), K = ck_dimx(k, q->shape[1]), M = ck_prodx(k, n->shape, 0, ro - 1);
  P("  const %s M = %s, N = %s, K = %s, nb = 1;\n", k->I, M.s, N.s, K.s);
  bm_dim dims[2];
  int64_t divs[2] = {64, 64};
  /* rows: the product of the leading dims */
  bm_task_expr rows = ck_task_linear(k->g, ro - 1, n->shape, 64);
  dims[0] = n->shape[ro - 1];
  (void)dims;
  (void)divs;
  int64_t tn = (q->shape[0].add + 63) / 64;
  rows.factor *= tn;
  k->tasks = rows;
  gemm g = {0};
  g.load_a = qmm_load_a;
  g.load_b = qmm_load_b;
  g.a_k_fast = true;
  g.b_k_fast = true;
  g.store_c = mm_store;
  emit_gemm(k, &g);
  return NULL;
}

static void conv_load_a(ck *k, gemm *g) {
  P("          val = %s;\n", ck_ld(k, 1, k->n->in[1]->dtype, ck_strf("(grp * M + gm) * K + gk")).s);
}
static void conv_load_b(ck *k, gemm *g) {
  const bm_node *n = k->n, *x = n->in[0], *w = n->in[1];
  int64_t KH = w->shape[2].add, KW = w->shape[3].add;
  P("          const %s c = gk / %lld, kh = (gk / %lld) %% %lld, kw = gk %% %lld;\n", k->I,
    (long long)(KH * KW), (long long)KW, (long long)KH, (long long)KW);
  P("          const %s ih = (gn / OW) * %d - %d + kh * %d, iw = (gn %% OW) * %d - %d + kw * %d;\n", k->I,
    n->a.stride[0], n->a.pad[0], n->a.dilation[0], n->a.stride[1], n->a.pad[1], n->a.dilation[1]);
  str l = ck_ld(k, 0, x->dtype, ck_strf("((img * Cin + grp * Cg + c) * H + ih) * W + iw"));
  P("          if (ih >= 0 && ih < H && iw >= 0 && iw < W) val = %s;\n", l.s);
}
/* the NHWC form (groups 1): k = (kh, kw, ci), x (N, H, W, C) */
static void conv_load_b_nhwc(ck *k, gemm *g) {
  const bm_node *n = k->n, *x = n->in[0], *w = n->in[1];
  int64_t KW = w->shape[2].add;
  P("          const %s c = gk %% Cin, kh = (gk / Cin) / %lld, kw = (gk / Cin) %% %lld;\n", k->I, (long long)KW,
    (long long)KW);
  P("          const %s ih = (gn / OW) * %d - %d + kh * %d, iw = (gn %% OW) * %d - %d + kw * %d;\n", k->I,
    n->a.stride[0], n->a.pad[0], n->a.dilation[0], n->a.stride[1], n->a.pad[1], n->a.dilation[1]);
  str l = ck_ld(k, 0, x->dtype, ck_strf("((img * H + ih) * W + iw) * Cin + c"));
  P("          if (ih >= 0 && ih < H && iw >= 0 && iw < W) val = %s;\n", l.s);
}
static void conv_store(ck *k, gemm *g) {
  const bm_node *n = k->n;
  P("      const %s oi = ((img * O + grp * M + gm) * OH * OW) + gn;\n", k->I);
  if (bm_node_base_nin(n) >= 3) P("      v += %s;\n", ck_ld(k, 2, n->in[2]->dtype, ck_strf("grp * M + gm")).s);
  ck_emit_epilogue(k, "v", "oi");
  ck_store(k, "oi", "v");
}

bm_status emit_conv2d(ck *k) {
  const bm_node *n = k->n, *x = n->in[0], *w = n->in[1];
  const bool nhwc = n->a.layout == BM_CONV_NHWC; /* x (N, H, W, C), w (O, KH, KW, Cg): ck_conv_nhwc_ok */
  if (nhwc && !ck_conv_nhwc_ok(n))
    return bm_status_make(BM_ERR_UNSUPPORTED, "conv2d: an NHWC conv the TMA kernel does not take");
  int64_t G = n->a.groups > 0 ? n->a.groups : 1;
  str Nimg = ck_dimx(k, x->shape[0]), Cin = ck_dimx(k, x->shape[nhwc ? 3 : 1]), H = ck_dimx(k, x->shape[nhwc ? 1 : 2]),
      W = ck_dimx(k, x->shape[nhwc ? 2 : 3]);
  str O = ck_dimx(k, w->shape[0]), Cg = ck_dimx(k, w->shape[nhwc ? 3 : 1]), OH = ck_dimx(k, n->shape[2]),
      OW = ck_dimx(k, n->shape[3]);
  int64_t KHW = w->shape[1].add * w->shape[2].add * w->shape[3].add / w->shape[nhwc ? 3 : 1].add;
  P("  const %s Cin = %s, H = %s, W = %s, O = %s, Cg = %s, OH = %s, OW = %s;\n", k->I, Cin.s, H.s, W.s, O.s,
    Cg.s, OH.s, OW.s);
  P("  const %s M = O / %lld, N = OH * OW, K = Cg * %lld, nb = %s * %lld;\n", k->I, (long long)G,
    (long long)KHW, Nimg.s, (long long)G);
  /* tasks: images x groups x ceil(M/64) x ceil(OH*OW/64) */
  bm_dim dims[4] = {x->shape[0], bm_dim_c(G), bm_dim_c(w->shape[0].add / G), bm_dim_c(0)};
  /* OH*OW: one symbolic dim at most (stride 1 for symbolic spatial dims) */
  bm_dim oh = n->shape[2], ow = n->shape[3];
  if (bm_dim_is_static(oh) && bm_dim_is_static(ow))
    dims[3] = bm_dim_c(oh.add * ow.add);
  else if (bm_dim_is_static(ow))
    dims[3] = (bm_dim){oh.add * ow.add, oh.sym, (int32_t)(oh.mul * ow.add)};
  else if (bm_dim_is_static(oh))
    dims[3] = (bm_dim){oh.add * ow.add, ow.sym, (int32_t)(ow.mul * oh.add)};
  else
    dims[3] = bm_dim_c(ck_dim_max(k->g, oh) * ck_dim_max(k->g, ow));
  const bool tc = !nhwc && tc_conv_ok(k->L, n);
  const wg_cfg *wc = NULL;
  const bool wgc = tc && wgmma_conv_ok(k->L, n, &wc);
  const bool tma = nhwc && k->L && k->L->tensor_cores >= 2; /* the NHWC conv on the TMA GEMM (sm_90a) */
  /* the NHWC conv: the mma.sync tile's 128 x 128 tasks (the TMA body's grid is capped and loops over its 128 x 256
   * tiles) */
  int64_t divs[4] = {1, 1, tc || tma ? 128 : 64, wgc ? wc->bn : tc || tma ? 128 : 64};
  if (!bm_dim_is_static(x->shape[0]) && !bm_dim_is_static(dims[3])) dims[0] = bm_dim_c(ck_dim_max(k->g, x->shape[0]));
  k->tasks = ck_task_grid(k->g, 4, dims, divs);
  gemm g = {0};
  snprintf(g.batch_setup.s, sizeof g.batch_setup.s,
           "    const %s img = bi / %lld, grp = bi %% %lld, a_off = grp * M * K;\n", k->I, (long long)G, (long long)G);
  g.load_a = conv_load_a;
  g.load_b = nhwc ? conv_load_b_nhwc : conv_load_b;
  g.a_k_fast = true;
  g.b_k_fast = nhwc;
  g.store_c = conv_store;
  if (tma) { /* sm_90a: the TMA kernel (without maps: the mma.sync tile); elsewhere the mma.sync tile on 256 of 384
             * threads, B rows by cp.async from NHWC x (tc_load_conv_nhwc) */
    /* the mma.sync tile's shared memory, dynamic: the TMA body needs 225 of the 227 KiB (no static) */
    emit_tma_bodies(k, &g, conv_tma_cfg(n), 3 * 16384);
  } else if (wgc) { /* as emit_matmul: wgmma on sm_90a, mma.sync elsewhere */
    k->smem = wg_smem(wc);
    P("#if defined(__CUDA_ARCH_FEAT_SM90_ALL)\n");
    emit_gemm_wgmma(k, &g, wc);
    P("#else\n");
    emit_gemm_tc(k, &g);
    P("#endif\n");
    k->min_blocks = 2;
  } else if (tc) {
    emit_gemm_tc(k, &g);
  } else {
    emit_gemm(k, &g);
  }
  return NULL;
}
