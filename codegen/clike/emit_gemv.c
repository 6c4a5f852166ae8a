/* emit_gemv.c - the skinny GEMM of the C-like emitter (decode: at most 16
 * rows): MATMUL with B stored (N, K) and QMATMUL stream the weight rows. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emit_internal.h"

/* A memory-bound kernel for C (M, N) = A (M, K) @ W (N, K)^T with M <= 16
 * (the batch dims of A folded into M; W has no batch). A block of 256
 * threads = 8 warps in WN column groups x WK K slices; a warp owns NC
 * consecutive output columns and one K slice, each lane streams 16-byte
 * chunks of the NC weight rows (two chunks in flight per row), converts them
 * to f32 (QMATMUL: dequantizes, one scale per chunk) and multiplies them with
 * the activations it reads from L1 (reused for the NC columns), accumulating
 * in f32. Warp shuffles, then shared memory, reduce the WK slices; one thread
 * per output applies the epilogue and stores. Checked on an H100 with WK = 8
 * (bf16/f16/f32 weights of 4096+ columns); WK < 8 only by a CPU emulation of
 * the generated kernel (see docs/cuda.md).
 * Without 16-byte aligned rows (K not a multiple of the chunk, symbolic K,
 * groups that split a chunk) the same structure loads element by element.
 * MATMUL_GLU (x, w_gate, w_up): a warp's NC rows are NC/2 rows of w_gate and
 * the same NC/2 rows of w_up (NC/2 outputs per warp), and the output thread
 * computes act(gate) * up: one kernel and one read of x for a gated MLP's
 * gate/up pair (decode).
 * RMS_MATMUL (x, w_norm, W [, W_up]): the rms_norm before the layer folded
 * in: the lanes multiply each activation by its w_norm entry as they load
 * it and also sum its square; the K warps' sums reduce with the dot
 * products and the output thread scales by r = 1/sqrt(mean(x^2) + eps)
 * (a scalar per row, so it factors out of the dot products). */

#define GEMV_MAX_ROWS 16
#define GEMV_WARPS 8

/* A weight dtype's 16-byte chunk: elements, the element accessor of the
 * CUDA prelude, the xor that biases the sign of integer elements. */
typedef struct wchunk {
  int vec;
  const char *at;
  const char *bias;
  const char *ascale; /* the power of two an activation meets element e with */
} wchunk;

static bool weight_chunk(bm_dtype t, wchunk *w) {
  switch (t) {
    case BM_DTYPE_F32: *w = (wchunk){4, "bm_x4_f32", NULL, NULL}; return true;
    case BM_DTYPE_F16: *w = (wchunk){8, "bm_x8_f16", NULL, NULL}; return true;
    case BM_DTYPE_BF16: *w = (wchunk){8, "bm_x8_bf16", NULL, NULL}; return true;
    case BM_DTYPE_I8: *w = (wchunk){16, "bm_x16_i8", "0x80808080u", "bm_i8_ap"}; return true;
    case BM_DTYPE_I4: *w = (wchunk){32, "bm_x32_i4", "0x88888888u", "bm_i4_ap"}; return true;
    default: return false;
  }
}

static bool is_float16x(bm_dtype t) { return t == BM_DTYPE_F32 || t == BM_DTYPE_F16 || t == BM_DTYPE_BF16; }

/* The largest number of rows (output dims but the last, folded). */
static int64_t rows_max(const bm_graph *g, const bm_node *n) {
  int64_t r = 1;
  for (int d = 0; d < n->ndim - 1; d++) r *= ck_dim_max(g, n->shape[d]);
  return r;
}

bool ck_gemv_ok(const bm_graph *g, const bm_clike_lang *L, const bm_node *n, int64_t *rows) {
  *rows = 0;
  /* the 16-byte loads and chunk accessors live in the CUDA prelude, next to
   * the tensor-core helpers */
  if (!L || !L->tensor_cores || n->ndim < 1) return false;
  if (n->op == BM_OP_MATMUL) {
    const bm_node *a = n->in[0], *b = n->in[1];
    if (!n->a.trans_b || n->a.trans_a || a->ndim < 2 || b->ndim < 2 || n->ndim < 2) return false;
    for (int d = 0; d < b->ndim - 2; d++)
      if (!bm_dim_is_one(b->shape[d])) return false; /* W shared by every row */
    if (!is_float16x(a->dtype) || !is_float16x(b->dtype)) return false;
  } else if (n->op == BM_OP_QMATMUL) {
    if (!is_float16x(n->in[0]->dtype)) return false;
  } else if (n->op == BM_OP_MATMUL_GLU) {
    if (!is_float16x(n->in[0]->dtype) || !is_float16x(n->in[1]->dtype) || n->in[2]->dtype != n->in[1]->dtype)
      return false;
  } else if (n->op == BM_OP_RMS_MATMUL) {
    if (!is_float16x(n->in[0]->dtype) || !is_float16x(n->in[1]->dtype) || !is_float16x(n->in[2]->dtype) ||
        (n->nin > 3 && n->in[3]->dtype != n->in[2]->dtype))
      return false;
  } else {
    return false;
  }
  int64_t r = *rows = rows_max(g, n);
  return r >= 1 && r <= GEMV_MAX_ROWS;
}

/* dst[0..SUB) = SUB f32/f16/bf16 elements at ptr, as f32, with volatile
 * 16- or 8-byte loads (activations and the norm weight: the PDL rule);
 * SUB 8 (16-bit) or a multiple of 4 (f32). */
void ck_load_floats(ck *k, const char *dst, const char *ptr, bm_dtype t, int SUB) {
  if (t == BM_DTYPE_F32) {
    P("#pragma unroll\n            for (int q = 0; q < %d; q++) {\n", SUB / 4);
    P("              const bm_u4 r = bm_ld16(%s + 16 * q);\n", ptr);
    P("#pragma unroll\n              for (int e = 0; e < 4; e++) %s[4 * q + e] = bm_x4_f32(r, e);\n", dst);
    P("            }\n");
  } else {
    P("            const bm_u4 r = %s(%s);\n", SUB == 8 ? "bm_ld16" : "bm_ld8", ptr);
    P("#pragma unroll\n            for (int e = 0; e < %d; e++) %s[e] = %s(r, e);\n", SUB, dst,
      t == BM_DTYPE_F16 ? "bm_x8_f16" : "bm_x8_bf16");
  }
}

bm_status emit_gemv(ck *k) {
  const bool rmsn = k->n->op == BM_OP_RMS_MATMUL; /* w_norm in buffer 1, the weights after it */
  const int wb = rmsn ? 2 : 1, ub = wb + 1;       /* the weight's (gate's) and up's buffers */
  const bm_node *n = k->n, *a = n->in[0], *w = n->in[wb], *nw = rmsn ? n->in[1] : NULL;
  const bool quant = n->op == BM_OP_QMATMUL, glu = n->op == BM_OP_MATMUL_GLU || (rmsn && n->nin > 3);
  const char *I = k->I;
  const bm_dim Kd = w->shape[w->ndim - 1], Nd = w->shape[w->ndim - 2];
  const int64_t mr = rows_max(k->g, n);
  const int MR = mr <= 1 ? 1 : mr <= 2 ? 2 : mr <= 4 ? 4 : mr <= 8 ? 8 : 16;
  const int NC = MR <= 4 ? 4 : 2;
  const int H = glu ? NC / 2 : NC; /* outputs per warp (GLU: NC/2 gate rows + NC/2 up rows) */
  const bm_node *sc = quant ? n->in[2] : NULL;
  str M = ck_prodx(k, n->shape, 0, n->ndim - 1), N = ck_dimx(k, Nd), K = ck_dimx(k, Kd);
  wchunk wc;
  bool vec = bm_dim_is_static(Kd) && Kd.add > 0 && weight_chunk(w->dtype, &wc) && Kd.add % wc.vec == 0;
  if (vec && quant) /* each chunk inside one scale group */
    vec = bm_dim_is_static(sc->shape[1]) && sc->shape[1].add > 0 && Kd.add % sc->shape[1].add == 0 &&
          (Kd.add / sc->shape[1].add) % wc.vec == 0;
  const bool grouped = quant && !(bm_dim_is_static(sc->shape[1]) && sc->shape[1].add == 1);
  const int SUB = vec && wc.vec == 4 ? 4 : 8;      /* elements converted at a time */
  const int esa = a->dtype == BM_DTYPE_F32 ? 4 : 2; /* activation element bytes */
  /* WK warps split K, WN = 8 / WK column groups: as many K warps as keep two
   * chunks per lane in flight (i4/i8 rows have 4-8x fewer chunks than bf16) */
  int WK = GEMV_WARPS;
  if (vec)
    while (WK > 1 && Kd.add / wc.vec < 64 * WK) WK /= 2;
  const int WN = GEMV_WARPS / WK, CB = WN * H; /* output columns per block */

  k->threads = 32 * GEMV_WARPS;
  /* one row (decode at batch 1): at most 64 registers, 4 blocks per
   * multiprocessor (bf16: 60 registers, no spills; the unbounded kernel used
   * 86, 2 blocks) to keep more weight loads in flight. BM_CUDA_GEMV_MINB=n
   * (read by bmc, for comparisons) sets it for every GEMV. */
  k->min_blocks = MR == 1 ? 4 : 1;
  const char *mb = getenv("BM_CUDA_GEMV_MINB");
  if (mb && *mb && atoi(mb) >= 1 && atoi(mb) <= 8) k->min_blocks = atoi(mb);
  bm_dim dims[1] = {Nd};
  int64_t divs[1] = {CB};
  k->tasks = ck_task_grid(k->g, 1, dims, divs);
  P("  /* skinny GEMM%s: %d row(s) at most, %d columns per block (%d per warp), K split over %d warps, %s loads */\n",
    glu ? " (GLU: gate and up rows)" : "", MR, CB, H, WK, vec ? "16-byte" : "element");
  P("  const %s M = %s, N = %s, K = %s;\n", I, M.s, N.s, K.s);
  /* bytes per weight row (16-byte chunks only) */
  str rowb = w->dtype == BM_DTYPE_I4 ? ck_strf("(K / 2)") : ck_strf("(K * %d)", (int)bm_dtype_nbytes(w->dtype, 1));
  /* Programmatic dependent launch (CUDA sm_90): this kernel may start while
   * the one before it still runs. The weights are constants, so one thread
   * starts copying the block's first tile of weight rows (contiguous) into
   * L2 right away; the activations, the scales and the epilogue's inputs are
   * read only after the wait for the previous kernel. */
  k->pdl_in_body = true;
  if (vec) {
    P("  if (tid == 0 && bid0 * %d < (bm_i64)N) {\n", CB);
    P("    const bm_i64 r0 = bid0 * %d, nrow = (bm_i64)N - r0 < %d ? (bm_i64)N - r0 : %d;\n", CB, CB, CB);
    P("    bm_prefetch_l2(bm_buf(%d) + r0 * %s, (unsigned int)(nrow * %s));\n", wb, rowb.s, rowb.s);
    if (glu) P("    bm_prefetch_l2(bm_buf(%d) + r0 * %s, (unsigned int)(nrow * %s));\n", ub, rowb.s, rowb.s);
    P("  }\n");
  }
  P("  BM_PDL_WAIT();\n");
  P("  BM_PDL_TRIGGER();\n");
  if (quant) P("  const %s G = %s, gs = K / G;\n", I, ck_dimx(k, sc->shape[1]).s);
  P("  const int lane = tid & 31, warp = tid >> 5, wk = warp %% %d, wn = warp / %d;\n", WK, WK);
  P("  BM_SHARED float red[%d][%d][%d];\n", GEMV_WARPS, MR, NC);
  if (rmsn) P("  BM_SHARED float redss[%d][%d]; /* sums of squares of the rows' K slices */\n", GEMV_WARPS, MR);
  ck_loop_open(k, ck_strf("(N + %d) / %d", CB - 1, CB).s);
  P("    const %s n0 = t * %d + wn * %d;\n", I, CB, H);
  P("    %s nr[%d];\n", I, NC);
  P("#pragma unroll\n    for (int c = 0; c < %d; c++) nr[c] = n0 + c %% %d < N ? n0 + c %% %d : N - 1;\n", NC, H, H);
  P("    float acc[%d][%d];\n", MR, NC);
  P("#pragma unroll\n    for (int m = 0; m < %d; m++)\n#pragma unroll\n    for (int c = 0; c < %d; c++) acc[m][c] = 0.0f;\n",
    MR, NC);
  if (rmsn) P("    float ssq[%d];\n#pragma unroll\n    for (int m = 0; m < %d; m++) ssq[m] = 0.0f;\n", MR, MR);
  if (vec) {
    P("    const unsigned char *wp[%d];\n", NC);
    P("#pragma unroll\n    for (int c = 0; c < %d; c++) wp[c] = bm_buf(%s) + (bm_i64)nr[c] * %s;\n", NC,
      glu ? ck_strf("c < %d ? %d : %d", H, wb, ub).s : ck_strf("%d", wb).s, rowb.s);
    P("    const %s nch = K / %d;\n", I, wc.vec);
    P("    for (%s kc = wk * 32 + lane; kc < nch; kc += %d) {\n", I, 64 * WK);
    P("      const bool two = kc + %d < nch;\n", 32 * WK);
    P("      bm_u4 wv[2][%d];\n", NC);
    P("#pragma unroll\n      for (int c = 0; c < %d; c++) {\n", NC);
    P("        wv[0][c] = bm_ld16_stream(wp[c] + (bm_i64)kc * 16);\n");
    P("        if (two) wv[1][c] = bm_ld16_stream(wp[c] + (bm_i64)(kc + %d) * 16); else wv[1][c] = wv[0][c];\n",
      32 * WK);
    P("      }\n");
    P("#pragma unroll\n      for (int h = 0; h < 2; h++) {\n");
    P("        if (h == 1 && !two) break;\n");
    P("        const %s kb = (kc + h * %d) * %d;\n", I, 32 * WK, wc.vec);
    if (wc.bias)
      P("#pragma unroll\n        for (int c = 0; c < %d; c++)\n#pragma unroll\n        for (int q = 0; q < 4; q++) "
        "wv[h][c].w[q] ^= %s;\n", NC, wc.bias);
    const char *tgt = "acc";
    if (grouped) {
      P("        float sc[%d], part[%d][%d];\n", NC, MR, NC);
      P("#pragma unroll\n        for (int c = 0; c < %d; c++) sc[c] = %s;\n", NC,
        ck_ld(k, 2, sc->dtype, ck_strf("nr[c] * G + kb / gs")).s);
      P("#pragma unroll\n        for (int m = 0; m < %d; m++)\n#pragma unroll\n        for (int c = 0; c < %d; c++) "
        "part[m][c] = 0.0f;\n", MR, NC);
      tgt = "part";
    }
    P("#pragma unroll\n        for (int j = 0; j < %d; j++) {\n", wc.vec / SUB);
    P("          float wf[%d][%d];\n", NC, SUB);
    P("#pragma unroll\n          for (int c = 0; c < %d; c++)\n#pragma unroll\n          for (int e = 0; e < %d; e++) "
      "wf[c][e] = %s(wv[h][c], j * %d + e);\n", NC, SUB, wc.at, SUB);
    if (rmsn) { /* the w_norm entries of these SUB activations */
      P("          float gv[%d];\n", SUB);
      P("          {\n            const unsigned char *gp = bm_buf(1) + (bm_i64)(kb + j * %d) * %d;\n", SUB,
        (int)bm_dtype_nbytes(nw->dtype, 1));
      ck_load_floats(k, "gv", "gp", nw->dtype, SUB);
      P("          }\n");
    }
    P("#pragma unroll\n          for (int m = 0; m < %d; m++) {\n", MR);
    P("            if (m >= M) break;\n");
    P("            const unsigned char *ap = bm_buf(0) + ((bm_i64)m * K + kb + j * %d) * %d;\n", SUB, esa);
    P("            float av[%d];\n", SUB);
    ck_load_floats(k, "av", "ap", a->dtype, SUB);
    if (wc.ascale) P("#pragma unroll\n            for (int e = 0; e < %d; e++) av[e] *= %s(e);\n", SUB, wc.ascale);
    if (rmsn)
      P("#pragma unroll\n            for (int e = 0; e < %d; e++) { ssq[m] += av[e] * av[e]; av[e] *= gv[e]; }\n", SUB);
    P("#pragma unroll\n            for (int c = 0; c < %d; c++)\n#pragma unroll\n            for (int e = 0; e < %d; e++) "
      "%s[m][c] += av[e] * wf[c][e];\n", NC, SUB, tgt);
    P("          }\n");
    P("        }\n");
    if (grouped)
      P("#pragma unroll\n        for (int m = 0; m < %d; m++)\n#pragma unroll\n        for (int c = 0; c < %d; c++) "
        "acc[m][c] += sc[c] * part[m][c];\n", MR, NC);
    P("      }\n");
    P("    }\n");
  } else {
    P("    for (%s kk = wk * 32 + lane; kk < K; kk += %d) {\n", I, 32 * WK);
    P("      float wf[%d];\n", NC);
    str lw = ck_ld(k, wb, w->dtype, ck_strf("nr[c] * K + kk"));
    if (grouped)
      P("#pragma unroll\n      for (int c = 0; c < %d; c++) wf[c] = %s * %s;\n", NC, lw.s,
        ck_ld(k, 2, sc->dtype, ck_strf("nr[c] * G + kk / gs")).s);
    else if (glu)
      P("#pragma unroll\n      for (int c = 0; c < %d; c++) wf[c] = c < %d ? %s : %s;\n", NC, H, lw.s,
        ck_ld(k, ub, w->dtype, ck_strf("nr[c] * K + kk")).s);
    else
      P("#pragma unroll\n      for (int c = 0; c < %d; c++) wf[c] = %s;\n", NC, lw.s);
    P("#pragma unroll\n      for (int m = 0; m < %d; m++) {\n", MR);
    P("        if (m >= M) break;\n");
    if (rmsn) {
      P("        float av = %s;\n", ck_ld(k, 0, a->dtype, ck_strf("m * K + kk")).s);
      P("        ssq[m] += av * av;\n        av *= %s;\n", ck_ld(k, 1, nw->dtype, ck_strf("kk")).s);
    } else {
      P("        const float av = %s;\n", ck_ld(k, 0, a->dtype, ck_strf("m * K + kk")).s);
    }
    P("#pragma unroll\n        for (int c = 0; c < %d; c++) acc[m][c] += av * wf[c];\n", NC);
    P("      }\n");
    P("    }\n");
  }
  /* reduce: lanes (shuffles), then the 8 warps (shared memory) */
  P("#pragma unroll\n    for (int m = 0; m < %d; m++) {\n", MR);
  P("      if (m >= M) break;\n");
  P("#pragma unroll\n      for (int c = 0; c < %d; c++) {\n", NC);
  P("        const float s = bm_warp_sum(acc[m][c]);\n");
  P("        if (lane == 0) red[warp][m][c] = s;\n");
  P("      }\n");
  if (rmsn) P("      {\n        const float s = bm_warp_sum(ssq[m]);\n        if (lane == 0) redss[warp][m] = s;\n      }\n");
  P("    }\n");
  P("    BM_SYNC();\n");
  P("    if (tid < %d) { /* output (row m, column c of column group cg): the sum of its K warps */\n", CB * MR);
  P("      const int c = tid %% %d, m = (tid / %d) %% %d, cg = tid / %d;\n", H, H, MR, H * MR);
  P("      const %s gm = m, gn = t * %d + cg * %d + c;\n", I, CB, H);
  P("      if (gm < M && gn < N) {\n");
  P("      float v = 0.0f;\n");
  P("      for (int q = 0; q < %d; q++) v += red[cg * %d + q][m][c];\n", WK, WK);
  if (rmsn) { /* r = 1/sqrt(mean(x^2) + eps) of row m */
    P("      float ss = 0.0f;\n");
    P("      for (int q = 0; q < %d; q++) ss += redss[cg * %d + q][m];\n", WK, WK);
    P("      const float rn = 1.0f / sqrtf(ss / (float)K + %s);\n", ck_flt(n->a.eps).s);
    P("      v *= rn;\n");
  }
  if (glu) { /* v = act(gate) * up */
    P("      float u = 0.0f;\n");
    P("      for (int q = 0; q < %d; q++) u += red[cg * %d + q][m][c + %d];\n", WK, WK, H);
    if (rmsn) P("      u *= rn;\n");
    P("      v = (%s) * u;\n", ck_unary_expr((bm_op)n->a.act, "v").s);
  }
  if (quant && !grouped) P("      v *= %s;\n", ck_ld(k, 2, sc->dtype, ck_strf("gn")).s);
  P("      const %s oi = gm * N + gn;\n", I);
  ck_emit_epilogue(k, "v", "oi");
  ck_store(k, "oi", "v");
  P("      }\n");
  P("    }\n");
  P("    BM_SYNC(); /* red is reused by the next columns */\n");
  ck_loop_close(k);
  return NULL;
}

bm_status emit_matmul_glu(ck *k) {
  int64_t rows;
  if (!ck_gemv_ok(k->g, k->L, k->n, &rows))
    return bm_status_make(BM_ERR_UNSUPPORTED, "%s '%s': needs the skinny GEMM (at most %d rows, float "
                          "weights of one dtype, the CUDA prelude); got %lld rows",
                          bm_op_name(k->n->op), k->n->name ? k->n->name : "?", GEMV_MAX_ROWS, (long long)rows);
  bool plain = k->n->op == BM_OP_RMS_MATMUL && k->n->nin == 3;
  if (!plain && k->n->a.act != BM_OP_SILU && k->n->a.act != BM_OP_GELU_TANH)
    return bm_status_make(BM_ERR_UNSUPPORTED, "%s '%s': act %d", bm_op_name(k->n->op), k->n->name ? k->n->name : "?",
                          k->n->a.act);
  return emit_gemv(k);
}
