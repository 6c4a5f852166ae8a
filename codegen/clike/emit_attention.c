/* emit_attention.c - ATTENTION in the C-like emitter: a wgmma kernel for
 * sm_90a (FlashAttention-3's ideas) over a tensor-core FlashAttention-2
 * kernel (f16/bf16 on CUDA), a split-key decode kernel for
 * short query lengths (flash-decoding, any dtype) and the scalar online-softmax
 * kernel for the rest; all do causal, GQA, sliding window, soft-capping, masks
 * and per-batch KV lengths with the interpreter's semantics (ir/interp.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emit_internal.h"

/* ------------------------------------------------------------------ attention */

/* Scalar attention tile sizes for head dims D, Dv (static): keys per tile,
 * and the shared memory (static up to 48 KiB, dynamic above: the single-head
 * 512-channel attention of the SD VAE needs 82 KiB); 0 if unsupported. */
static int attn_kt(int64_t D, int64_t Dv, int64_t *smem) {
  if (D < 1 || Dv < 1 || D > 1024 || Dv > 1024) return 0;
  int kt = (D <= 128 && Dv <= 128) ? 32 : (D <= 512 && Dv <= 512) ? 16 : 8;
  *smem = 4 * (8 * D + kt * (D + 1) + kt * Dv);
  return *smem <= 200 * 1024 ? kt : 0;
}

/* The scalar kernel: a warp per query row, keys in tiles through shared memory. */
static bm_status emit_attention_scalar(ck *k) {
  const bm_node *n = k->n, *q = n->in[0], *kk = n->in[1], *v = n->in[2];
  int at = 3, mi = -1, li = -1;
  if (n->a.attn_flags & BM_ATTN_HAS_MASK) mi = at++;
  if (n->a.attn_flags & BM_ATTN_HAS_KV_LEN) li = at++;
  int64_t D = q->shape[3].add, Dv = v->shape[3].add, smem;
  int KT = attn_kt(D, Dv, &smem);
  if (!KT) return bm_status_make(BM_ERR_UNSUPPORTED, "attention head dims %lld/%lld", (long long)D, (long long)Dv);
  int DPL = (int)((Dv + 31) / 32);
  k->threads = 256;
  bm_dim dims[3] = {q->shape[0], q->shape[1], q->shape[2]};
  int64_t divs[3] = {1, 1, 8};
  k->tasks = ck_task_grid(k->g, 3, dims, divs);
  float scale = n->a.attn_scale != 0.0f ? n->a.attn_scale : 1.0f / sqrtf((float)D);
  str B = ck_dimx(k, q->shape[0]), Hq = ck_dimx(k, q->shape[1]), Sq = ck_dimx(k, q->shape[2]), Hkv = ck_dimx(k, kk->shape[1]),
      Sk = ck_dimx(k, kk->shape[2]);
  if (smem <= 48 * 1024) {
    P("  BM_SHARED float qs[8][%lld];\n", (long long)D);
    P("  BM_SHARED float ks[%d][%lld];\n", KT, (long long)D + 1);
    P("  BM_SHARED float vs[%d][%lld];\n", KT, (long long)Dv);
  } else { /* the same arrays in dynamic shared memory */
    k->smem = (int)smem;
    P("  extern __shared__ __align__(128) unsigned char bm_dsm[];\n");
    P("  float (*qs)[%lld] = (float (*)[%lld])bm_dsm;\n", (long long)D, (long long)D);
    P("  float (*ks)[%lld] = (float (*)[%lld])(bm_dsm + %lld);\n", (long long)D + 1, (long long)D + 1,
      (long long)(4 * 8 * D));
    P("  float (*vs)[%lld] = (float (*)[%lld])(bm_dsm + %lld);\n", (long long)Dv, (long long)Dv,
      (long long)(4 * (8 * D + KT * (D + 1))));
  }
  P("  const %s B = %s, Hq = %s, Sq = %s, Hkv = %s, Sk = %s;\n", k->I, B.s, Hq.s, Sq.s, Hkv.s, Sk.s);
  P("  const int warp = tid >> 5, lane = tid & 31;\n");
  P("  const %s nqt = (Sq + 7) / 8;\n", k->I);
  ck_loop_open(k, "B * Hq * nqt");
  P("    const %s qt = t %% nqt, bh = t / nqt, h = bh %% Hq, b = bh / Hq, hk = h / (Hq / Hkv);\n", k->I);
  if (li >= 0) {
    str l = ck_ldi(k, li, n->in[li]->dtype, ck_strf("b"));
    P("    bm_i64 len_ = %s;\n", l.s);
    P("    const %s len = len_ < 0 ? 0 : len_ > (bm_i64)Sk ? Sk : (%s)len_;\n", k->I, k->I);
  } else {
    P("    const %s len = Sk;\n", k->I);
  }
  P("    const %s off = len - Sq, i = qt * 8 + warp;\n", k->I);
  P("    const bool row_ok = i < Sq;\n");
  P("    BM_SYNC();\n");
  str lq = ck_ld(k, 0, q->dtype, ck_strf("((b * Hq + h) * Sq + i) * %lld + e", (long long)D));
  str sc = ck_flt(scale);
  P("    for (int e = lane; e < %lld; e += 32) qs[warp][e] = row_ok ? %s * %s : 0.0f;\n", (long long)D, lq.s, sc.s);
  P("    const %s i_last = (qt * 8 + 7 < Sq ? qt * 8 + 7 : Sq - 1);\n", k->I);
  P("    %s kend = len;\n", k->I);
  if (n->a.causal) P("    if (i_last + off + 1 < kend) kend = i_last + off + 1;\n");
  P("    %s kbeg = 0;\n", k->I);
  if (n->a.window > 0) {
    P("    kbeg = qt * 8 + off - %d + 1;\n", n->a.window);
    P("    if (kbeg < 0) kbeg = 0;\n");
    P("    kbeg = kbeg / %d * %d;\n", KT, KT);
  }
  P("    float mrow = -BM_INF, lrow = 0.0f, acc[%d];\n", DPL);
  P("    for (int u = 0; u < %d; u++) acc[u] = 0.0f;\n", DPL);
  P("    const %s kvb = (b * Hkv + hk) * Sk;\n", k->I);
  P("    for (%s j0 = kbeg; j0 < kend; j0 += %d) {\n", k->I, KT);
  P("      BM_SYNC();\n");
  str lk = ck_ld(k, 1, kk->dtype, ck_strf("(kvb + j) * %lld + dd", (long long)D));
  str lv = ck_ld(k, 2, v->dtype, ck_strf("(kvb + j) * %lld + dd", (long long)Dv));
  P("      for (int e = tid; e < %lld; e += 256) {\n", (long long)(KT * D));
  P("        const int jj = e / %lld, dd = e %% %lld;\n        const %s j = j0 + jj;\n", (long long)D, (long long)D,
    k->I);
  P("        ks[jj][dd] = j < Sk ? %s : 0.0f;\n      }\n", lk.s);
  P("      for (int e = tid; e < %lld; e += 256) {\n", (long long)(KT * Dv));
  P("        const int jj = e / %lld, dd = e %% %lld;\n        const %s j = j0 + jj;\n", (long long)Dv,
    (long long)Dv, k->I);
  P("        vs[jj][dd] = j < Sk ? %s : 0.0f;\n      }\n", lv.s);
  P("      BM_SYNC();\n");
  P("      if (row_ok) {\n");
  P("        float s = -BM_INF;\n        bool ok = false;\n");
  P("        if (lane < %d) {\n", KT);
  P("          const %s j = j0 + lane;\n", k->I);
  P("          ok = j < len;\n");
  if (n->a.causal) P("          ok = ok && j <= i + off;\n");
  if (n->a.window > 0) P("          ok = ok && j > i + off - %d;\n", n->a.window);
  P("          if (ok) {\n            float d = 0.0f;\n");
  P("            for (int e = 0; e < %lld; e++) d += qs[warp][e] * ks[lane][e];\n", (long long)D);
  if (n->a.softcap > 0.0f) {
    str cap = ck_flt(n->a.softcap);
    P("            d = %s * tanhf(d / %s);\n", cap.s, cap.s);
  }
  if (mi >= 0) {
    const bm_node *m = n->in[mi];
    /* broadcast strides of the mask against (B, Hq, Sq, Sk) with coords b, h, i, j */
    P("            const %s mc0 = b, mc1 = h, mc2 = i, mc3 = j;\n", k->I);
    str off = ck_bcast_off(k, m, 4, "mc");
    P("            d += %s;\n", ck_ld(k, mi, m->dtype, off).s);
  }
  P("            s = d;\n          }\n        }\n");
  P("        const float mnew = fmaxf(mrow, bm_warp_max(s));\n");
  P("        if (mnew != -BM_INF) {\n");
  P("          const float p = ok ? expf(s - mnew) : 0.0f, corr = expf(mrow - mnew);\n");
  P("          lrow = lrow * corr + bm_warp_sum(p);\n");
  P("          for (int u = 0; u < %d; u++) acc[u] *= corr;\n", DPL);
  P("          for (int jj = 0; jj < %d; jj++) {\n", KT);
  P("            const float pj = BM_SHFL(p, jj);\n");
  P("            for (int u = 0; u < %d; u++) {\n", DPL);
  P("              const int dd = lane + 32 * u;\n");
  P("              if (dd < %lld) acc[u] += pj * vs[jj][dd];\n", (long long)Dv);
  P("            }\n          }\n");
  P("          mrow = mnew;\n        }\n      }\n    }\n");
  P("    if (row_ok) {\n");
  P("      for (int u = 0; u < %d; u++) {\n", DPL);
  P("        const int dd = lane + 32 * u;\n");
  P("        if (dd < %lld) {\n", (long long)Dv);
  P("      const %s oi = ((b * Hq + h) * Sq + i) * %lld + dd;\n", k->I, (long long)Dv);
  P("      float v = lrow > 0.0f ? acc[u] / lrow : 0.0f;\n");
  ck_emit_epilogue(k, "v", "oi");
  ck_store(k, "oi", "v");
  P("        }\n      }\n    }\n");
  ck_loop_close(k);
  return NULL;
}

/* ------------------------------------------------------------------ shared pieces */

/* The key range of one query row i (keys j with ok): j < len, causal
 * j <= i + off, window j > i + off - window; the statements set `ok` from
 * `i`, `j` (and `len`, `off`, `Sq`). */
static void emit_key_ok(ck *k, const char *ind) {
  const bm_node *n = k->n;
  P("%sbool ok = j < len && i < Sq;\n", ind);
  if (n->a.causal) P("%sok = ok && j <= i + off;\n", ind);
  if (n->a.window > 0) P("%sok = ok && j > i + off - %d;\n", ind, n->a.window);
}

/* x = x * scale, then soft-capping and the additive mask (for ok keys), as
 * ref_attention; `b`, `h`, `i`, `j` are the coordinates. */
static void emit_score_fix(ck *k, const char *x, const char *ind, int mi) {
  const bm_node *n = k->n;
  float scale = n->a.attn_scale != 0.0f ? n->a.attn_scale : 1.0f / sqrtf((float)n->in[0]->shape[3].add);
  P("%s%s *= %s;\n", ind, x, ck_flt(scale).s);
  if (n->a.softcap > 0.0f) {
    str cap = ck_flt(n->a.softcap);
    P("%s%s = %s * tanhf(%s / %s);\n", ind, x, cap.s, x, cap.s);
  }
  if (mi >= 0) {
    const bm_node *m = n->in[mi];
    P("%sif (ok) {\n", ind);
    P("%s  const %s mc0 = b, mc1 = h, mc2 = i, mc3 = j;\n", ind, k->I);
    str off = ck_bcast_off(k, m, 4, "mc");
    P("%s  %s += %s;\n", ind, x, ck_ld(k, mi, m->dtype, off).s);
    P("%s}\n", ind);
  }
}

/* Declares len (the keys of batch b, clamped to Sk) and off = len - Sq. */
static void emit_len(ck *k, int li) {
  const bm_node *n = k->n;
  if (li >= 0) {
    str l = ck_ldi(k, li, n->in[li]->dtype, ck_strf("b"));
    P("    bm_i64 len_ = %s;\n", l.s);
    P("    const %s len = len_ < 0 ? 0 : len_ > (bm_i64)Sk ? Sk : (%s)len_;\n", k->I, k->I);
  } else {
    P("    const %s len = Sk;\n", k->I);
  }
  P("    const %s off = len - Sq;\n", k->I);
}

/* The task order of the tiled prefill kernels, in one place (emit_tile_range
 * and the WA_WS Q prefetch): declares `const T qt<x>, bh<x>`, the query tile
 * and the (batch, head) of task t, for nq query tiles a head and bhn
 * (batch, head) pairs (expressions of type T; x suffixes the names, the
 * group's g0, gsz, grk included). Not causal, or dyn 0 / 2: a head's query
 * tiles in a row (causal: longest first). Causal with dyn 1: longest first
 * across all heads; dyn 3: longest first within groups of tgh (batch, head)
 * pairs (the kernel's, emit_head_groups: whole KV heads whose K/V stay in
 * L2), group after group, the last one maybe smaller. */
static void emit_task_order(ck *k, int dyn, const char *T, const char *t, const char *nq, const char *bhn,
                            const char *x, const char *ind) {
  if (!k->n->a.causal || dyn == 0 || dyn == 2) {
    P("%sconst %s qt%s = %s%s %% %s, bh%s = %s / %s;\n", ind, T, x, k->n->a.causal ? ck_strf("%s - 1 - ", nq).s : "",
      t, nq, x, t, nq);
  } else if (dyn == 1) {
    P("%sconst %s qt%s = %s - 1 - %s / %s, bh%s = %s %% %s;\n", ind, T, x, nq, t, bhn, x, t, bhn);
  } else { /* g0: the group's first pair, gsz its pairs, grk the task within it */
    P("%sconst %s g0%s = %s / (tgh * %s) * tgh, gsz%s = %s - g0%s < tgh ? %s - g0%s : tgh, grk%s = %s - g0%s * %s;\n",
      ind, T, x, t, nq, x, bhn, x, bhn, x, x, t, x, nq);
    P("%sconst %s qt%s = %s - 1 - grk%s / gsz%s, bh%s = g0%s + grk%s %% gsz%s;\n", ind, T, x, nq, x, x, x, x, x, x);
  }
}

/* L2 bytes for a head group's K/V (wa_cfg.dyn 3, emit_head_groups; the H100
 * has 50 MB in two halves; BM_CUDA_ATTN_L2=bytes overrides it at compile time) */
#define WA_L2 (16ll << 20)
/* causal attention over at most WA_SHORT_SK keys defaults to the head groups, at head dim 128
 * over at most WA_HEAD_MAJOR_SK to the head-major order (wa_attn_cfg) */
enum { WA_SHORT_SK = 8192, WA_HEAD_MAJOR_SK = 1024 };
/* dyn 3's head groups (emit_task_order), per task (a few integer divisions;
 * nothing more stays live across the tasks): tgh (batch, head) pairs, whole KV heads
 * (Hq / Hkv query heads each) whose K/V (Sk keys of kvbytes) fit in WA_L2
 * bytes (BM_CUDA_ATTN_L2 at compile time), at least one, and at least
 * enough that a group's tasks fill the grid (nblk blocks) */
static void emit_head_groups(ck *k) {
  const bm_node *kk = k->n->in[1], *v = k->n->in[2];
  const int64_t kvbytes = (int64_t)bm_dtype_nbytes(kk->dtype, kk->shape[3].add + v->shape[3].add);
  const char *env = getenv("BM_CUDA_ATTN_L2");
  const long long l2 = env && atoll(env) > 0 ? atoll(env) : WA_L2;
  P("    /* head groups: whole KV heads whose K/V (%lld bytes a key) fit in %lld bytes of L2 */\n", (long long)kvbytes,
    l2);
  P("    const int gkv = Sk > 0 ? (int)(%lldll / ((bm_i64)Sk * %lld)) : 1, gq = (int)(Hq / Hkv);\n", l2,
    (long long)kvbytes);
  P("    const int gbusy = (int)((nblk + gq * nqi - 1) / (gq * nqi)), gmax = (int)(B * Hkv);\n");
  P("    int gn = gkv > gbusy ? gkv : gbusy;\n    gn = gn < gmax ? gn : gmax;\n");
  P("    const int tgh = (gn > 1 ? gn : 1) * gq;\n");
}

/* The task's query tile and key range, for the tiled prefill kernels: tile
 * qt of BM query rows (causal: the longest tiles first, they finish last
 * otherwise) of head h, batch b, KV head hk; its keys [kbeg, kend) (causal
 * and window limits, kbeg rounded down to BN) in ntile tiles of BN; qb, kvb
 * the row bases of q and k/v. q_extra (or NULL) adds declarations to the
 * q0 line (then qlast is marked used). */
static void emit_tile_range(ck *k, int BM, int BN, int li, const char *q_extra, int dyn) {
  const bm_node *n = k->n;
  const char *I = k->I;
  if (dyn) { /* the dynamic scheduler (int tasks) */
    P("    const int bhn = (int)(B * Hq), nqi = (int)nqt;\n");
    if (dyn == 3 && n->a.causal) emit_head_groups(k);
    emit_task_order(k, dyn, "int", "t", "nqi", "bhn", "", "    ");
  } else {
    emit_task_order(k, 0, I, "t", "nqt", "", "", "    ");
  }
  P("    const %s h = bh %% Hq, b = bh / Hq, hk = h / (Hq / Hkv);\n", I);
  emit_len(k, li);
  P("    const %s q0 = qt * %d, qlast = (q0 + %d < Sq ? q0 + %d : Sq) - 1%s;\n", I, BM, BM, BM, q_extra ? q_extra : "");
  if (q_extra) P("    (void)qlast;\n");
  P("    %s kend = len, kbeg = 0;\n", I);
  if (n->a.causal) P("    if (qlast + off + 1 < kend) kend = qlast + off + 1;\n");
  if (n->a.window > 0) {
    P("    kbeg = q0 + off - %d + 1;\n", n->a.window);
    P("    kbeg = kbeg < 0 ? 0 : kbeg / %d * %d;\n", BN, BN);
  }
  P("    const %s ntile = kend > kbeg ? (kend - kbeg + %d) / %d : 0;\n", I, BN - 1, BN);
  P("    const %s qb = (b * Hq + h) * Sq, kvb = (b * Hkv + hk) * Sk;\n", I);
}

/* Scale, soft-cap and mask of a key tile's scores in an mma/wgmma
 * accumulator layout: NB 8-key column blocks of 4 values (rows i0 and
 * i0 + 8, keys t4 * 2 and + 1); `sel` names value (x, e). The fast path
 * skips the per-element mask when keys j0..j0 + BN - 1 are visible to every
 * query row qfirst..qfirst + rows - 1 (with `extra`: a scale, soft-cap or
 * mask still applies; without, the scale is folded into the softmax). */
static void emit_tile_mask(ck *k, int BN, int NB, const char *qfirst, int rows, bool extra, int mi, const char *sel) {
  const bm_node *n = k->n;
  const char *I = k->I;
  P("      bool full = j0 + %d <= len;\n", BN);
  if (n->a.causal) P("      full = full && j0 + %d <= %s + off;\n", BN - 1, qfirst);
  if (n->a.window > 0) P("      full = full && j0 > %s + %d + off - %d;\n", qfirst, rows - 1, n->a.window);
  P("      if (full) {\n");
  if (extra) {
    P("#pragma unroll\n        for (int x = 0; x < %d; x++)\n#pragma unroll\n        for (int e = 0; e < 4; e++) {\n", NB);
    P("          const %s i = i0 + (e >> 1) * 8, j = j0 + x * 8 + t4 * 2 + (e & 1);\n", I);
    P("          const bool ok = i < Sq;\n");
    P("          float y = %s;\n", sel);
    emit_score_fix(k, "y", "          ", mi);
    P("          %s = y;\n        }\n", sel);
  } else {
    P("        /* raw scores: the scale is folded into SC */\n");
  }
  P("      } else {\n");
  P("#pragma unroll\n        for (int x = 0; x < %d; x++)\n#pragma unroll\n        for (int e = 0; e < 4; e++) {\n", NB);
  P("          const %s i = i0 + (e >> 1) * 8, j = j0 + x * 8 + t4 * 2 + (e & 1);\n", I);
  emit_key_ok(k, "          ");
  P("          float y = %s;\n", sel);
  if (extra) emit_score_fix(k, "y", "          ", mi);
  P("          %s = ok ? y : -BM_INF;\n        }\n", sel);
  P("      }\n");
}

/* ------------------------------------------------------------------ tensor cores */

/* The FlashAttention-2 kernel: NW warps own BM = 16 NW query rows of one
 * (batch, head); key tiles of BN rows stream through a 3-stage cp.async
 * pipeline in dynamic shared memory (rows padded by 16 bytes: ldmatrix is
 * free of bank conflicts); S = Q K^T and O += P V on mma.sync m16n8k16 with
 * f32 accumulation; online softmax in registers (ex2.approx, the scale and
 * log2(e) folded into one FMA unless soft-capping or a mask need the scaled
 * score first); P rounded to the input dtype for the second product. The
 * pipeline has 3 stages so one barrier per key tile suffices. Head dims are padded to multiples of
 * 16 with zeros. */
typedef struct tc_cfg {
  int nw, bm, bn, dp, dvp, sqb, svb, smem;
  bool qreg; /* Q fragments live in registers (else re-read from shared memory) */
} tc_cfg;

static bool tc_attn_cfg(const bm_graph *g, const bm_node *n, tc_cfg *c) {
  const bm_node *q = n->in[0], *kk = n->in[1], *v = n->in[2];
  if (q->dtype != kk->dtype || q->dtype != v->dtype || (q->dtype != BM_DTYPE_F16 && q->dtype != BM_DTYPE_BF16))
    return false;
  int64_t D = q->shape[3].add, Dv = v->shape[3].add;
  if (D < 8 || Dv < 8 || D > 256 || Dv > 256 || D % 8 || Dv % 8) return false;
  c->dp = (int)((D + 15) / 16 * 16);
  c->dvp = (int)((Dv + 15) / 16 * 16);
  bool small = c->dp <= 128 && c->dvp <= 128;
  /* 8 warps (128 query rows sharing each K/V tile) for head dims 80..128 and
   * long queries; 4 for head dim 64 and short queries (measured on an H100:
   * d128 0.37-0.46x SDPA with 8 warps vs 0.28-0.35x with 4; d64 0.47-0.57x
   * with 4 vs 0.42-0.50x with 8) */
  c->nw = small && c->dp > 64 && ck_dim_max(g, q->shape[2]) >= 512 ? 8 : 4;
  c->bm = 16 * c->nw;
  c->bn = small ? 64 : 32;
  c->qreg = c->dp <= 128;
  c->sqb = (c->dp + 8) * 2;
  c->svb = (c->dvp + 8) * 2;
  c->smem = c->bm * c->sqb + 3 * c->bn * (c->sqb + c->svb);
  return c->smem <= 200 * 1024;
}

/* cp.async of `rows` rows (row index `row` from e) of a (.., width) f16/bf16
 * tensor into shared rows of `rowb` bytes; chunks past `width` or rows
 * failing `okrow` are zero-filled. */
static void tc_copy(ck *k, int buf, int rows, int chunks, int64_t width, int rowb, const char *sbase,
                    const char *grow, const char *okrow) {
  P("      for (int e = tid; e < %d; e += %d) {\n", rows * chunks, k->threads);
  P("        const int row = e / %d, c = e %% %d;\n", chunks, chunks);
  P("        const %s gr = %s;\n", k->I, grow);
  P("        const bool ok = (%s) && c * 8 < %lld;\n", okrow, (long long)width);
  P("        const unsigned char *src = bm_buf(%d) + (ok ? ((bm_i64)gr * %lld + c * 8) * 2 : 0);\n", buf,
    (long long)width);
  P("        bm_cp_async16(%s + row * %d + c * 16, src, ok ? 16 : 0);\n", sbase, rowb);
  P("      }\n");
}

static bm_status emit_attention_tc(ck *k, const tc_cfg *c, int mi, int li) {
  const bm_node *n = k->n, *q = n->in[0], *kk = n->in[1], *v = n->in[2];
  const char *I = k->I, *mma = q->dtype == BM_DTYPE_BF16 ? "bm_mma_bf16" : "bm_mma_f16";
  const char *pack = q->dtype == BM_DTYPE_BF16 ? "bm_pack_bf16x2" : "bm_pack_f16x2";
  int64_t D = q->shape[3].add, Dv = v->shape[3].add;
  int T = 32 * c->nw, BM = c->bm, BN = c->bn, DK = c->dp / 16, NB = BN / 8, NO = c->dvp / 8;
  k->threads = T;
  k->min_blocks = 1;
  k->smem = c->smem;
  bm_dim dims[3] = {q->shape[0], q->shape[1], q->shape[2]};
  int64_t divs[3] = {1, 1, BM};
  k->tasks = ck_task_grid(k->g, 3, dims, divs);
  str B = ck_dimx(k, q->shape[0]), Hq = ck_dimx(k, q->shape[1]), Sq = ck_dimx(k, q->shape[2]),
      Hkv = ck_dimx(k, kk->shape[1]), Sk = ck_dimx(k, kk->shape[2]);
  P("  extern __shared__ __align__(128) unsigned char bm_dsm[];\n");
  P("  const unsigned int sq0 = bm_smem_addr(bm_dsm), sk0 = sq0 + %d, sv0 = sk0 + %d;\n", BM * c->sqb,
    3 * BN * c->sqb);
  P("  const %s B = %s, Hq = %s, Sq = %s, Hkv = %s, Sk = %s;\n", I, B.s, Hq.s, Sq.s, Hkv.s, Sk.s);
  P("  const int warp = tid >> 5, lane = tid & 31, g8 = lane >> 2, t4 = lane & 3;\n");
  /* p = 2^(s SC - m SC): SC = scale log2(e) on raw scores, log2(e) on
   * scores already scaled (soft-capping, mask) */
  float scale = n->a.attn_scale != 0.0f ? n->a.attn_scale : 1.0f / sqrtf((float)D);
  bool extra = mi >= 0 || n->a.softcap > 0.0f || !(scale > 0.0f && isfinite(scale));
  P("  const float SC = %s;\n", ck_flt((extra ? 1.0f : scale) * 1.44269504088896341f).s);
  P("  const %s nqt = (Sq + %d) / %d;\n", I, BM - 1, BM);
  ck_loop_open(k, "B * Hq * nqt");
  /* causal: the longest query tiles first (they finish last otherwise) */
  emit_tile_range(k, BM, BN, li, NULL, 0);
  /* Q tile and key tile 0 */
  P("    {\n");
  tc_copy(k, 0, BM, c->dp / 8, D, c->sqb, "sq0", "qb + q0 + row", "q0 + row < Sq");
  P("    }\n");
  /* the stage loader: stage st <- tile kt */
  bm_sb *saved = k->b;
  bm_sb ld = {0};
  k->b = &ld;
  P("      const %s j0 = kbeg + kt * %d;\n", I, BN);
  P("      const unsigned int skst = sk0 + st * %d, svst = sv0 + st * %d;\n", BN * c->sqb, BN * c->svb);
  tc_copy(k, 1, BN, c->dp / 8, D, c->sqb, "skst", "kvb + j0 + row", "j0 + row < len");
  tc_copy(k, 2, BN, c->dvp / 8, Dv, c->svb, "svst", "kvb + j0 + row", "j0 + row < len");
  k->b = saved;
  const char *lds = ld.s ? ld.s : "";
  P("    if (ntile > 0) {\n      const %s kt = 0; const int st = 0;\n%s    }\n", I, lds);
  P("    bm_cp_commit();\n");
  P("    if (ntile > 1) {\n      const %s kt = 1; const int st = 1;\n%s    }\n", I, lds);
  P("    bm_cp_commit();\n    bm_cp_wait<1>();\n    BM_SYNC();\n");
  P("    unsigned int qf[%d][4];\n", c->qreg ? DK : 1);
  if (c->qreg) {
    P("#pragma unroll\n    for (int kk = 0; kk < %d; kk++)\n", DK);
    P("      bm_ldsm_x4(qf[kk], sq0 + (warp * 16 + (lane & 15)) * %d + (kk * 2 + (lane >> 4)) * 16);\n", c->sqb);
  }
  P("    float o[%d][4], mr[2] = {-BM_INF, -BM_INF}, lr[2] = {0.0f, 0.0f};\n", NO);
  P("#pragma unroll\n    for (int x = 0; x < %d; x++) o[x][0] = o[x][1] = o[x][2] = o[x][3] = 0.0f;\n", NO);
  P("    const %s i0 = q0 + warp * 16 + g8;\n", I);
  P("    for (%s kt0 = 0; kt0 < ntile; kt0++) {\n", I);
  /* tile kt0 has landed (own copies: wait; everyone's: the barrier), and
   * every warp is done with tile kt0 - 1, whose stage tile kt0 + 2 refills */
  P("      bm_cp_wait<1>();\n      BM_SYNC();\n");
  P("      if (kt0 + 2 < ntile) {\n      const %s kt = kt0 + 2; const int st = (int)(kt %% 3);\n%s      }\n", I, lds);
  bm_sb_free(&ld);
  P("      bm_cp_commit();\n");
  P("      const int cst = (int)(kt0 %% 3);\n");
  P("      const unsigned int skst = sk0 + cst * %d, svst = sv0 + cst * %d;\n", BN * c->sqb, BN * c->svb);
  P("      const %s j0 = kbeg + kt0 * %d;\n", I, BN);
  /* S = Q K^T */
  P("      float s[%d][4];\n", NB);
  P("#pragma unroll\n      for (int x = 0; x < %d; x++) s[x][0] = s[x][1] = s[x][2] = s[x][3] = 0.0f;\n", NB);
  P("#pragma unroll\n      for (int kk = 0; kk < %d; kk++) {\n", DK);
  if (c->qreg) {
    P("        const unsigned int *a = qf[kk];\n");
  } else {
    P("        unsigned int a[4];\n");
    P("        bm_ldsm_x4(a, sq0 + (warp * 16 + (lane & 15)) * %d + (kk * 2 + (lane >> 4)) * 16);\n", c->sqb);
  }
  P("#pragma unroll\n        for (int p = 0; p < %d; p++) {\n", BN / 16);
  P("          unsigned int r[4];\n");
  P("          bm_ldsm_x4(r, skst + (p * 16 + (lane & 7) + ((lane >> 4) << 3)) * %d + (kk * 2 + ((lane >> 3) & 1)) * 16);\n",
    c->sqb);
  P("          %s(s[2 * p], a, r);\n          %s(s[2 * p + 1], a, r + 2);\n", mma, mma);
  P("        }\n      }\n");
  /* scale, soft-cap, mask; the fast path when the whole tile is visible to every row */
  emit_tile_mask(k, BN, NB, "q0", BM, extra, mi, "s[x][e]");
  /* online softmax: rows g8 (e = 0, 1) and g8 + 8 (e = 2, 3); a row's keys
   * are spread over the 4 lanes of a quad */
  P("#pragma unroll\n      for (int rr = 0; rr < 2; rr++) {\n");
  P("        float mx = -BM_INF;\n");
  P("#pragma unroll\n        for (int x = 0; x < %d; x++) mx = fmaxf(mx, fmaxf(s[x][2 * rr], s[x][2 * rr + 1]));\n", NB);
  P("        mx = fmaxf(mx, BM_SHFL_XOR(mx, 1));\n        mx = fmaxf(mx, BM_SHFL_XOR(mx, 2));\n");
  P("        const float mnew = fmaxf(mr[rr], mx), mu = mnew == -BM_INF ? 0.0f : mnew * SC;\n");
  P("        const float corr = bm_ex2(mr[rr] * SC - mu);\n");
  P("        mr[rr] = mnew;\n");
  P("        float ls = 0.0f;\n");
  P("#pragma unroll\n        for (int x = 0; x < %d; x++)\n#pragma unroll\n        for (int e = 0; e < 2; e++) {\n", NB);
  P("          const float p = bm_ex2(fmaf(s[x][2 * rr + e], SC, -mu));\n");
  P("          s[x][2 * rr + e] = p;\n          ls += p;\n        }\n");
  P("        lr[rr] = lr[rr] * corr + ls;\n");
  P("#pragma unroll\n        for (int x = 0; x < %d; x++) { o[x][2 * rr] *= corr; o[x][2 * rr + 1] *= corr; }\n", NO);
  P("      }\n");
  /* O += P V: P's accumulator layout is the A fragment of m16n8k16 */
  P("#pragma unroll\n      for (int kk = 0; kk < %d; kk++) {\n", BN / 16);
  P("        unsigned int pa[4];\n");
  P("        pa[0] = %s(s[2 * kk][0], s[2 * kk][1]);\n", pack);
  P("        pa[1] = %s(s[2 * kk][2], s[2 * kk][3]);\n", pack);
  P("        pa[2] = %s(s[2 * kk + 1][0], s[2 * kk + 1][1]);\n", pack);
  P("        pa[3] = %s(s[2 * kk + 1][2], s[2 * kk + 1][3]);\n", pack);
  P("#pragma unroll\n        for (int p = 0; p < %d; p++) {\n", c->dvp / 16);
  P("          unsigned int r[4];\n");
  P("          bm_ldsm_x4_t(r, svst + (kk * 16 + (lane & 7) + (((lane >> 3) & 1) << 3)) * %d + (p * 2 + (lane >> 4)) * 16);\n",
    c->svb);
  P("          %s(o[2 * p], pa, r);\n          %s(o[2 * p + 1], pa, r + 2);\n", mma, mma);
  P("        }\n      }\n");
  P("    }\n");
  P("    bm_cp_wait<0>();\n    BM_SYNC(); /* the next task reuses the shared memory */\n");
  /* O / l, the epilogue, the store */
  P("#pragma unroll\n    for (int rr = 0; rr < 2; rr++) {\n");
  P("      float l = lr[rr];\n      l += BM_SHFL_XOR(l, 1);\n      l += BM_SHFL_XOR(l, 2);\n");
  P("      const float inv = l > 0.0f ? 1.0f / l : 0.0f;\n");
  P("      const %s i = i0 + rr * 8;\n", I);
  P("      if (i < Sq && warp < %d) { /* warp %d: the wgmma kernel's producer in a shared launch */\n", c->nw, c->nw);
  P("#pragma unroll\n      for (int x = 0; x < %d; x++)\n#pragma unroll\n      for (int e = 0; e < 2; e++) {\n", NO);
  P("        const int dd = x * 8 + t4 * 2 + e;\n");
  P("        if (dd < %lld) {\n", (long long)Dv);
  P("      const %s oi = (qb + i) * %lld + dd;\n", I, (long long)Dv);
  P("      float v = o[x][2 * rr + e] * inv;\n");
  ck_emit_epilogue(k, "v", "oi");
  ck_store(k, "oi", "v");
  P("        }\n      }\n      }\n    }\n");
  ck_loop_close(k);
  return NULL;
}

/* ------------------------------------------------------------------ Hopper */

/* FlashAttention on wgmma (sm_90a; FlashAttention-3's ideas): NWG consumer
 * warpgroups own BM = 64 NWG query rows of one (batch,
 * head); warpgroup wg computes S (64 x BN) = Q K^T with wgmma.m64nBNk16, Q
 * and K from shared memory (K-major, 128-byte swizzle), and O (64 x Dv) +=
 * P V with P from registers (the S accumulators rounded to the input dtype
 * are the A fragment as they stand) and V from shared memory through a
 * transposed (MN-major) descriptor. Head dims are padded with zeros to 64 or
 * 128 columns; an operand is stored as 64-column blocks of rows of 128
 * bytes, 16-byte chunk c of row r at c ^ (r & 7) (what the descriptors
 * describe). K and V tiles go through NS stages of cp.async by every thread,
 * issued NS - 1 tiles ahead, one barrier per key tile. The online softmax is
 * the FA2 kernel's (exp2, the scale folded in; masks, soft-capping, causal,
 * window and kv_len likewise). The schedules (wa_cfg.mode):
 * - WA_SERIAL: S_j, wait, softmax, P_j V_j, wait;
 * - WA_PIPE (FA3's intra-warpgroup overlap): step j issues S_j and
 *   P_{j-1} V_{j-1}, waits for S_j only and runs its softmax while the P V
 *   product runs, then waits for that and rescales O (step 0 peeled off, so
 *   no branch sits between a wgmma and its wait);
 * - WA_WS (FA3's warp specialization, emit_attention_ws): a producer
 *   warpgroup loads K and V (cp.async or TMA), mbarriers instead of the
 *   block barrier; the default (docs/cuda.md).
 * FA3's ping-pong between warpgroups (wa_cfg.pp) is named barriers whose ids
 * are computed from the warpgroup, so both run the same code: a divergent
 * form (different code around the barrier per warpgroup) makes ptxas
 * serialize the wgmmas (C7520: a wgmma fence in a divergent path). */
enum { WA_SERIAL, WA_PIPE, WA_WS };
/* registers of a WA_WS producer thread (setmaxnreg; the consumers get the
 * rest of the block's allocation: 232 with two warpgroups, enough for head
 * dim 128 with a mask) */
enum { WA_PREG = 40 };
/* slots of the dynamic scheduler's task ring (wa_task_open) */
enum { WA_TQ = 4 };

typedef struct wa_cfg {
  const char *name; /* BM_CUDA_ATTN=name forces it (compile time, for comparisons; "fa2": off) */
  int nwg, bn, mode, ns, minb; /* warpgroups, keys per tile, schedule, stages, blocks per multiprocessor wanted */
  int tma; /* WA_WS: 0 cp.async loads; 1 TMA loads (Q, K, V; head dims 64 or 128); 2 the same on a
            * persistent grid of one block per multiprocessor; 3 persistent with two Q buffers, the
            * next task's Q loading during this one */
  bool pp;  /* WA_WS: FA3's ping-pong, the consumer warpgroups take turns issuing their products
             * (named barriers 2 + nwg + wg, a ring: 3 and 4 with two), so one's softmax runs while
             * another's products do */
  int dyn; /* WA_WS: a dynamic tile scheduler (wa_task_open): a block's first task is its
            * own, then the next is an atomic ticket; causal tasks 1: longest first across
            * all heads, 2: head-major (a head's tiles in a row, longest first: L2 locality),
            * 3: longest first within groups of heads whose K/V fit in L2 (emit_head_groups) */
  int preg; /* WA_WS: the producers' registers (setmaxnreg; 0: WA_PREG); the consumers get the rest */
} wa_cfg;

static const wa_cfg wa_cfgs[] = {
    {"w2n128p", 2, 128, WA_PIPE, 2, 1},  {"w2n128p3", 2, 128, WA_PIPE, 3, 1}, {"w2n128", 2, 128, WA_SERIAL, 2, 1},
    {"w3n128p", 3, 128, WA_PIPE, 2, 1},  {"w2n64p", 2, 64, WA_PIPE, 2, 1},    {"w3n64p", 3, 64, WA_PIPE, 2, 1},
    {"w1n64p", 1, 64, WA_PIPE, 2, 3},    {"w1n128p", 1, 128, WA_PIPE, 2, 2},  {"w1n64p3", 1, 64, WA_PIPE, 3, 2},
    {"w2n128ws", 2, 128, WA_WS, 2, 1},   {"w2n128ws3", 2, 128, WA_WS, 3, 1},
    {"w2n128tma", 2, 128, WA_WS, 2, 1, 1},   {"w2n128tma3", 2, 128, WA_WS, 3, 1, 1},
    {"w2n128tmap", 2, 128, WA_WS, 2, 1, 2},  {"w2n128tmap3", 2, 128, WA_WS, 3, 1, 2},
    {"w2n128ws_pp", 2, 128, WA_WS, 2, 1, 0, true},   {"w2n128tma_pp", 2, 128, WA_WS, 2, 1, 1, true},
    {"w2n128tmap_pp", 2, 128, WA_WS, 2, 1, 2, true}, {"w2n128tma3_pp", 2, 128, WA_WS, 3, 1, 1, true},
    {"w2n128tmaq", 2, 128, WA_WS, 2, 1, 3},  {"w2n128tmaq_pp", 2, 128, WA_WS, 2, 1, 3, true},
    {"w2n128tmaqd_pp", 2, 128, WA_WS, 2, 1, 3, true, 1}, {"w2n128tmapd_pp", 2, 128, WA_WS, 2, 1, 2, true, 1},
    {"w2n128tmaqd", 2, 128, WA_WS, 2, 1, 3, false, 1},    {"w2n128tmaqh_pp", 2, 128, WA_WS, 2, 1, 3, true, 2},
    {"w2n128tmaqg_pp", 2, 128, WA_WS, 2, 1, 3, true, 3}, {"w2n128tmaqg", 2, 128, WA_WS, 2, 1, 3, false, 3},
    /* three consumer warpgroups (192 query rows a block, 512 threads: 128 registers a thread at launch;
     * ptxas allocates each role's code within its setmaxnreg count): producers 32 (24 spilled 16
     * bytes), consumers 160, no hold (wa_exp_cfg). No spills at head dim 64 with 128-key tiles
     * without causal masking (with it 12-20 bytes) and with 64-key tiles (d64 all; d128 without
     * causal masking) */
    {"w3n128tmaqd", 3, 128, WA_WS, 2, 1, 3, false, 1, 32}, {"w3n128tmaqd_pp", 3, 128, WA_WS, 2, 1, 3, true, 1, 32},
    {"w3n64tmaqd", 3, 64, WA_WS, 2, 1, 3, false, 1, 32},   {"w3n64tmaqd_pp", 3, 64, WA_WS, 2, 1, 3, true, 1, 32},
    {"w3n64tmaqg", 3, 64, WA_WS, 2, 1, 3, false, 3, 32},   {"w3n64tmaqg_pp", 3, 64, WA_WS, 2, 1, 3, true, 3, 32},
    {"w3n64tma_pp", 3, 64, WA_WS, 2, 1, 1, true, 0, 40},   {"w3n128tmaqg_pp", 3, 128, WA_WS, 2, 1, 3, true, 3, 32},
};

/* TMA loads (wa_cfg.tma): the kernel's `<symbol>_tmd` constant array in
 * the layout of emit_gemm.c's BM_TMD_MAGIC (magic "tmd1", dynamic shared
 * memory, blocks per multiprocessor (1: a persistent grid, 0: no cap), the
 * argument slot of the maps, 3 maps, cluster 1, then per map buffer,
 * element bytes, columns, rows, box columns, box rows, swizzle): Q, K, V
 * as 2-d (rows, head dim) tensors, boxes of 64 columns (128-byte swizzle, the
 * wgmma layout) by 64 query rows or BN keys; with the staged O store
 * (wa_store) a 4th, the output as (rows, Dv), boxes of 64 x 64. The runtime encodes them per
 * launch and puts their address into the slot (0: none, the cp.async body). */
#define BM_ATT_TMD_MAGIC 0x31646d74l /* "tmd1" */
#define BM_ATT_TMA_SLOT 15

/* elements of x at the symbols' maxima */
static int64_t elems_max(const bm_graph *g, const bm_node *x) {
  int64_t e = 1;
  for (int d = 0; d < x->ndim; d++) e *= ck_dim_max(g, x->shape[d]);
  return e;
}

/* padded head dims (64 or 128) and the dynamic shared memory of a config */
static int wa_pad(int64_t d) { return d <= 64 ? 64 : 128; }
static int wa_smem(const wa_cfg *w, int dpa, int dva) {
  const int nq = w->tma == 3 ? 2 : 1; /* Q buffers */
  return 1024 + nq * 64 * w->nwg * dpa * 2 + w->ns * w->bn * (dpa + dva) * 2 + (w->mode == WA_WS ? 32 * w->ns : 0) +
         (w->tma ? 8 * nq * w->nwg : 0) + (w->dyn ? 20 * WA_TQ : 0);
}

static const wa_cfg *wa_attn_cfg(const bm_clike_lang *L, const bm_graph *g, const bm_node *n) {
  const bm_node *q = n->in[0], *kk = n->in[1], *v = n->in[2];
  if (!L || L->tensor_cores < 2) return NULL;
  int64_t D = q->shape[3].add, Dv = v->shape[3].add;
  if (D > 128 || Dv > 128) return NULL;
  const char *env = getenv("BM_CUDA_ATTN");
  /* the default, measured on an H100 (docs/cuda.md, "Attention", the
   * table): the warp-specialized kernel, two consumer warpgroups, 128-key
   * tiles; with TMA loads (head dims 64 and 128), on a persistent grid
   * with Q prefetched and the dynamic tile scheduler without causal or
   * window limits or a mask (1-5% faster than the static task order of
   * w2n128tmaq_pp, the previous default): head dim 128 with the ping-pong
   * (w2n128tmaqd_pp), head dim 64 without (w2n128tmaqd); with them one
   * block per task (w2n128tma_pp: a persistent grid was slower with causal
   * masking, statically 0.53-0.64x, dynamically 0.55-0.94x; with a mask it
   * spills); head dim 64 with those and the other head dims keep the
   * cp.async loads (w2n128ws: TMA measured 2-4% slower at d64 causal; the
   * other head dims are padded, past the maps' edge); but causal without
   * a window or mask over at most 8k keys (short tasks that pay the prologue
   * one block per task) on the persistent grid with the dynamic scheduler
   * longest first within head groups whose K/V fit in L2 (w2n128tmaqg_pp,
   * both head dims: 1k d128 0.89x SDPA vs 0.79x, 4k 0.94x vs 0.91x, 4k d64
   * 0.84x vs 0.83x; at 16k keys one block per task stayed faster, 1.07x
   * vs 0.97x at d128, 1.00x vs 0.91x at d64). Head dim 64 without a window
   * or mask (and tensors under 2^30 elements: int indices, wa_index): three
   * consumer warpgroups with the ping-pong, w3n128tmaqd_pp (1k 1.00x SDPA vs
   * 0.86x, 4k 1.09x vs 0.87x; causal 4k 0.91x vs 0.86x, 8k 1.00x vs 0.89x,
   * 16k 1.07x vs 1.00x), causal over at most 8k keys in head groups
   * (w3n128tmaqg_pp: the L2 order, as w2n128tmaqg_pp); not with kv_len
   * (a cache: its consumers spill 4 bytes at 160 registers) */
  const bool tma_ok = (D == 64 || D == 128) && Dv == D,
             limited = n->a.causal || n->a.window > 0 || (n->a.attn_flags & BM_ATTN_HAS_MASK),
             causal_short = n->a.causal && n->a.window <= 0 && !(n->a.attn_flags & BM_ATTN_HAS_MASK) &&
                            ck_dim_max(g, kk->shape[2]) <= WA_SHORT_SK;
  bool small = elems_max(g, n) < (1ll << 30); /* (wa_index: int indices in w3n*) */
  for (int i = 0; i < 3; i++) small = small && elems_max(g, n->in[i]) < (1ll << 30);
  const bool w3 = tma_ok && D == 64 && small && n->a.window <= 0 &&
                  !(n->a.attn_flags & (BM_ATTN_HAS_MASK | BM_ATTN_HAS_KV_LEN)); /* (kv_len: 4 bytes spill) */
  /* causal head dim 128 over at most 1k keys (the shortest tasks): the head-major order
   * (w2n128tmaqh_pp), a head's query tiles in a row, longest first: at 1k 0.289-0.293 ms for
   * the head groups, 0.283-0.292 for it (five runs in two calls, 19:45-19:55 UTC: never
   * slower, 0-3.5% faster; 0.99-1.01x SDPA); at 4k it was slower (0.89 vs 0.92x, 15:10 UTC) */
  const bool causal_1k = causal_short && D == 128 && ck_dim_max(g, kk->shape[2]) <= WA_HEAD_MAJOR_SK;
  const char *def = !tma_ok                          ? "w2n128ws"
                    : w3 && causal_short             ? "w3n128tmaqg_pp"
                    : w3                             ? "w3n128tmaqd_pp"
                    : causal_1k                      ? "w2n128tmaqh_pp"
                    : causal_short                   ? "w2n128tmaqg_pp"
                    : limited && D <= 64             ? "w2n128ws"
                    : limited                        ? "w2n128tma_pp"
                    : D <= 64                        ? "w2n128tmaqd"
                                                     : "w2n128tmaqd_pp";
  const wa_cfg *w = NULL; /* BM_CUDA_ATTN=fa2 or an unknown name: the mma.sync kernel */
  if (!env || !*env) env = def;
  for (size_t i = 0; i < sizeof wa_cfgs / sizeof *wa_cfgs; i++)
    if (strcmp(env, wa_cfgs[i].name) == 0) w = &wa_cfgs[i];
  return w && wa_smem(w, wa_pad(D), wa_pad(Dv)) <= 227 * 1024 ? w : NULL;
}

/* The index type of the wgmma kernel: the node's (k->I), but int in the three-warpgroup
 * configs (160 registers a consumer) without a mask when q, k, v and the output have fewer
 * than 2^30 elements: k->I is 64-bit for the B Hq Sq Sk mask coordinates alone
 * (emit.c index_type), and the 64-bit tile indices spilled 8-20 bytes with causal masking */
static const char *wa_index(const ck *k, const wa_cfg *w, int mi) {
  const bm_node *n = k->n;
  if (w->nwg < 3 || mi >= 0) return k->I;
  for (int i = 0; i < 3; i++)
    if (elems_max(k->g, n->in[i]) >= (1ll << 30)) return k->I;
  return elems_max(k->g, n) < (1ll << 30) ? "int" : k->I;
}

/* cp.async of `rows` rows of a (.., width) f16/bf16 tensor into `atoms`
 * 64-column blocks (astride bytes apart) of swizzled 128-byte rows at sbase
 * (zeros past width and for rows failing okrow), by nthr threads numbered
 * idx, the loop unrolled `unroll` times (0: fully; the few-register WA_WS
 * producer: 2) */
static void wa_copy(ck *k, int buf, int rows, int atoms, int astride, int64_t width, const char *sbase,
                    const char *grow, const char *okrow, const char *idx, int nthr, int unroll) {
  int cpr = 8 * atoms;
  if (unroll)
    P("#pragma unroll %d\n", unroll);
  else
    P("#pragma unroll\n");
  P("      for (int e = %s; e < %d; e += %d) {\n", idx, rows * cpr, nthr);
  P("        const int row = e / %d, c = e %% %d;\n", cpr, cpr);
  P("        const %s gr = %s;\n", k->I, grow);
  P("        const bool ok = (%s) && c * 8 < %lld;\n", okrow, (long long)width);
  P("        const unsigned char *src = bm_buf(%d) + (ok ? ((bm_i64)gr * %lld + c * 8) * 2 : 0);\n", buf,
    (long long)width);
  P("        bm_cp_async16(%s + (c >> 3) * %d + row * 128 + (((c & 7) ^ (row & 7)) << 4), src, ok ? 16 : 0);\n",
    sbase, astride);
  P("      }\n");
}

/* what the step emitters share */
typedef struct wa_ctx {
  const wa_cfg *w;
  int dpa, dva, BM, BN, NB, NO, KB, VB, NS, mi;
  const char *dt, *pack;
  bool extra;
  int ostore; /* WA_WS with maps: O staged in the warpgroup's Q buffer, then 1: TMA tensor stores, 2: 16-byte
              * stores by the warpgroup's threads (wa_store, wa_ostore_ok; 0: from registers) */
  int obuf;   /* with ostore: bytes of a dedicated staging buffer at so0 (8 KiB boxes, the warpgroups'
               * in a row; BM_CUDA_ATTN_OBUF), 0: the warpgroup's Q buffer */
} wa_ctx;

/* the stage of tile `kt` */
static str wa_stage(const wa_ctx *c, const char *kt) {
  return c->NS == 2 ? ck_strf("(unsigned int)((%s) & 1)", kt) : ck_strf("(unsigned int)((%s) %% %d)", kt, c->NS);
}

/* issues S = Q K_kt^T (one commit group) */
static void wa_issue_s(ck *k, const wa_ctx *c, const char *kt) {
  P("      {\n");
  P("      const unsigned long long dk = bm_wgmma_desc(sk0 + %s * %d, true);\n", wa_stage(c, kt).s, c->KB);
  P("      bm_wgmma_fence_n%d(s);\n", c->BN);
  P("#pragma unroll\n      for (int kk = 0; kk < %d; kk++)\n", c->dpa / 16);
  P("        bm_wgmma_ss_%s_n%d(s, dq + (kk >> 2) * %d + (kk & 3) * 2, dk + (kk >> 2) * %d + (kk & 3) * 2, kk > 0);\n",
    c->dt, c->BN, c->BM * 8, c->BN * 8);
  P("      bm_wgmma_commit();\n      }\n");
}

/* issues O += P V_kt (pa holds P; one commit group). V's descriptor: 64-column
 * blocks BN * 128 bytes apart (LBO), 8-key groups 1024 apart (SBO); swapped,
 * the H100 fails the d128 cases (checked) */
static void wa_issue_pv(ck *k, const wa_ctx *c, const char *kt) {
  P("      {\n");
  P("      const unsigned long long dv = bm_wgmma_desc_mn(sv0 + %s * %d, %d, 1024);\n", wa_stage(c, kt).s, c->VB,
    c->BN * 128);
  P("      bm_wgmma_fence_n%d(o);\n", c->dva);
  P("#pragma unroll\n      for (int kk = 0; kk < %d; kk++) bm_wgmma_rs_%s_n%d(o, pa[kk], dv + kk * 128);\n", c->BN / 16,
    c->dt, c->dva);
  P("      }\n      bm_wgmma_commit();\n");
}

/* waits for every P V, then keeps pa (the registers it read) alive until here */
static void wa_wait_pv(ck *k, const wa_ctx *c) {
  P("      bm_wgmma_wait_n%d<0>(o);\n", c->dva);
  P("#pragma unroll\n      for (int kk = 0; kk < %d; kk++) bm_wg_keep4(pa[kk]);\n", c->BN / 16);
}

/* One issue group of the warp-specialized consumer (pipeline tile ci: S =
 * Q K_ci^T with `s`, O += P V_{ci-1} with `pv`): waits for the tiles (full
 * mbarriers), the proxy fence, the ping-pong turn, the products, the hand-over */
static void wa_issue_group(ck *k, const wa_ctx *c, bool s, bool pv, const char *turn, const char *hand) {
  const int NS = c->NS;
  if (s) P("      bm_att_mbar_wait(fk0 + 8 * (ci %% %du), (ci / %du) & 1u);\n", NS, NS);
  if (pv) P("      bm_att_mbar_wait(fv0 + 8 * ((ci - 1u) %% %du), ((ci - 1u) / %du) & 1u);\n", NS, NS);
  P("      bm_fence_proxy_async();\n");
  P("%s", turn);
  if (s) wa_issue_s(k, c, "ci");
  if (pv) wa_issue_pv(k, c, "ci - 1u");
  P("%s", hand);
}

/* the consumer's per-task state: S, O, the row maxima and sums, P (the A fragments) */
static void wa_state_decl(ck *k, const wa_ctx *c) {
  P("    float s[%d], o[%d], mr[2] = {-BM_INF, -BM_INF}, lr[2] = {0.0f, 0.0f};\n", c->NB * 4, c->NO * 4);
  P("#pragma unroll\n    for (int x = 0; x < %d; x++) s[x] = 0.0f;\n", c->NB * 4);
  P("#pragma unroll\n    for (int x = 0; x < %d; x++) o[x] = 0.0f;\n", c->NO * 4);
  P("    unsigned int pa[%d][4];\n", c->BN / 16);
}

/* Cross-task pipelining (FA3's, wa_cfg.tma 3 with maps): the step pipeline
 * runs on over a block's tasks. At a task's end the next task's S_0 = Q' K'_0
 * is issued with this task's last P V (its Q rows were prefetched into the
 * other Q buffer when this task started, its first key tile is the next in
 * the pipeline), its first softmax (its own row maxima and sums; this task's
 * sums saved first) overlaps the P V, then this task's O is stored and the
 * next task starts at its step 1 (xc). The next task's indices come from the
 * setup emitted again in a scope of its own (t = the next task). Every
 * consumer warpgroup takes the same branches (block-uniform conditions), so
 * the ping-pong turns stay paired. BM_CUDA_ATTN_XTASK=0 at compile time: the
 * previous loop (the last P V alone, a peeled step 0 in every task). */
static bool wa_xtask_on(void) {
  const char *e = getenv("BM_CUDA_ATTN_XTASK");
  return !(e && *e && strcmp(e, "0") == 0);
}

/* The softmax's exponentials and rescaling (docs/cuda.md, "Exponentials on
 * the FMA pipe"): the 8-key column blocks x of a tile with x % den < num take
 * 2^x from bm_ex2_poly (FMA pipe, degree deg) instead of ex2.approx (the
 * exponential unit, 16 a cycle per multiprocessor: at head dim 64 as busy as
 * the tensor cores); a row keeps a stale max while its max grows by at most
 * resc (log2 units, so P <= 2^resc; 0: always rescale), and a warp whose rows
 * all kept theirs skips rescaling O. Both are off by default: slower on the
 * H100 at every fraction (1/16..1/4) and at d64 with the stale max (the softmax
 * is latency-bound, not exp-bound). Compile-time knobs: BM_CUDA_ATTN_EXP=num/den
 * (0: off), BM_CUDA_ATTN_EXP_DEG=3..5 (default 4 for f16, 3 for bf16: their
 * errors 3e-6, 9e-5 are 0.6% and 2% of P's rounding), BM_CUDA_ATTN_RESCALE=resc.
 * hold: a never-taken branch (bm_wg_hold) in front of the wait for P V, so that
 * ptxas keeps the wait after the exponentials (it hoists it to the start of
 * the softmax otherwise: the product did not overlap it). It keeps P, pa and O
 * live at once: by default only in the warp-specialized kernels (WA_WS; the
 * others get C7518) at Dv 64 without causal, window or mask (else
 * 80-96 bytes spill at d64, and at d128 the wgmmas serialize, C7512; on the
 * H100 1k d64 +3%, 4k d64 -1%); BM_CUDA_ATTN_HOLD=0 / 1 forces it off / on.
 * ilp (docs/cuda.md, "Shorter softmax chains"): the row maxima as trees and
 * the row sums in ilp independent partial sums (combined as a tree), the two
 * rows' work adjacent, so the softmax is not one long chain of dependent
 * FMNMX / FADD per row (ptxas does not reassociate them); 0: the old chains
 * (a max over the 16 column blocks, a 32-deep sum). By default WA_ILP at Dv
 * above 64 (H100: +1-5% at d128) and 0 at Dv 64 (there every ilp measured
 * slower, 4k d64 0.86x SDPA vs 0.92x); BM_CUDA_ATTN_ILP=0..8 forces one. */
enum { WA_ILP = 4 };
typedef struct wa_exp {
  int num, den, deg, resc;
  bool hold;
  int ilp;
} wa_exp;

static wa_exp wa_exp_cfg(const bm_node *n, const wa_ctx *c) {
  const bool limited = n->a.causal || n->a.window > 0 || c->mi >= 0 || c->extra;
  wa_exp e = {0, 1, strcmp(c->dt, "bf16") == 0 ? 3 : 4, 0, c->dva <= 64 && !limited, c->dva > 64 ? WA_ILP : 0};
  const bool ws = c->w->mode == WA_WS; /* (WA_PIPE: the branch serializes the wgmmas, C7518) */
  const char *fr = getenv("BM_CUDA_ATTN_EXP"), *deg = getenv("BM_CUDA_ATTN_EXP_DEG"),
             *rs = getenv("BM_CUDA_ATTN_RESCALE"), *hold = getenv("BM_CUDA_ATTN_HOLD"),
             *ilp = getenv("BM_CUDA_ATTN_ILP");
  if (ilp && *ilp && atoi(ilp) >= 0 && atoi(ilp) <= 8) e.ilp = atoi(ilp);
  if (hold && *hold) e.hold = strcmp(hold, "0") != 0;
  e.hold = e.hold && ws && c->w->nwg < 3; /* (three warpgroups: 160 registers, the hold spills) */
  int num, den;
  if (fr && *fr) {
    e.num = 0; /* "0" or anything not num/den: off */
    if (sscanf(fr, "%d/%d", &num, &den) == 2 && den > 0 && num >= 0 && num <= den) e.num = num, e.den = den;
  }
  if (deg && *deg && atoi(deg) >= 3 && atoi(deg) <= 5) e.deg = atoi(deg);
  if (rs && *rs && atoi(rs) >= 0 && atoi(rs) <= 16) e.resc = atoi(rs);
  return e;
}

/* row rr's running max from its tile max mx: declares mnew and mu (the
 * exponents' offset, mnew * SC), sets corr[rr] (the factor of O and l) and
 * mr[rr]; with ex->resc the stale max is kept while it grows by at most resc */
static void wa_max_update(ck *k, const wa_exp *ex) {
  if (ex->resc) { /* keep the stale max while the row's max grows by at most resc (log2 units) */
    P("        float mnew = fmaxf(mr[rr], mx);\n");
    P("        const bool up = !((mnew - mr[rr]) * SC <= %d.0f); /* also from -inf */\n", ex->resc);
    P("        mnew = up ? mnew : mr[rr];\n");
    P("        const float mu = mnew == -BM_INF ? 0.0f : mnew * SC;\n");
    P("        corr[rr] = up ? bm_ex2(mr[rr] * SC - mu) : 1.0f;\n");
  } else {
    P("        const float mnew = fmaxf(mr[rr], mx), mu = mnew == -BM_INF ? 0.0f : mnew * SC;\n");
    P("        corr[rr] = bm_ex2(mr[rr] * SC - mu);\n");
  }
  P("        mr[rr] = mnew;\n");
}

/* p = 2^(s * SC - mu) of value (x, rr, e) (ex2.approx, or bm_ex2_poly for the
 * column blocks x % den < num) */
static void wa_exp_p(ck *k, const wa_exp *ex, const char *mu) {
  P("          const float y = fmaf(s[4 * x + 2 * rr + e], SC, -%s);\n", mu);
  if (ex->num == 0)
    P("          const float p = bm_ex2(y);\n");
  else if (ex->num == ex->den)
    P("          const float p = bm_ex2_poly(y, %d);\n", ex->deg);
  else /* x is a constant once unrolled: no branch */
    P("          const float p = x %% %d < %d ? bm_ex2_poly(y, %d) : bm_ex2(y);\n", ex->den, ex->num, ex->deg);
}

/* a[rr][0] = the max (sum: the sum) of a[rr][0..n-1] for both rows, as a
 * tree: each level folds the upper half onto the lower, the two rows' ops
 * adjacent (the ops of a level are independent of each other) */
static void wa_tree(ck *k, const char *a, int n, bool sum) {
  for (; n > 1; n = (n + 1) / 2) {
    const int h = (n + 1) / 2;
    P("#pragma unroll\n      for (int x = 0; x < %d; x++)\n#pragma unroll\n        for (int rr = 0; rr < 2; rr++) ", n - h);
    if (sum)
      P("%s[rr][x] += %s[rr][x + %d];\n", a, a, h);
    else
      P("%s[rr][x] = fmaxf(%s[rr][x], %s[rr][x + %d]);\n", a, a, a, h);
  }
}

/* S_kt (issued, waited for until `wait_s` groups are pending) -> P in pa:
 * mask, online softmax, and with `pv` the wait for the P V product in flight
 * before O is rescaled (rescale: false when O is still zero) */
static void wa_soft(ck *k, const wa_ctx *c, const char *kt, int wait_s, bool pv, bool rescale, const char *after_s,
                    const char *after_pv) {
  const char *I = k->I;
  const int NB = c->NB;
  wa_exp ex = wa_exp_cfg(k->n, c);
  /* the peeled first step (no P V in flight) without the ping-pong at Dv 128 keeps the old chains:
   * with the short ones ptxas hoists the next S's wgmmas into its softmax (S, P and O live at
   * once: w2n128ws at head dim 80 spilled 100 bytes) */
  if (!pv && !c->w->pp && c->dva > 64) ex.ilp = 0;
  P("      {\n");
  P("      const %s j0 = kbeg + (%s) * %d;\n", I, kt, c->BN);
  P("      bm_wgmma_wait_n%d<%d>(s);\n", c->BN, wait_s);
  if (after_s) P("%s", after_s);
  /* scale, soft-cap, mask; the fast path when the tile is visible to every row of the warpgroup */
  emit_tile_mask(k, c->BN, NB, "qw0", 64, c->extra, c->mi, "s[4 * x + e]");
  /* online softmax: rows g8 (e = 0, 1) and g8 + 8 (e = 2, 3) of the warp's
   * 16; a row's keys are spread over the 4 lanes of a quad */
  P("      float corr[2];\n");
  if (ex.ilp == 0) { /* the old chains, a row after the other */
    P("#pragma unroll\n      for (int rr = 0; rr < 2; rr++) {\n");
    P("        float mx = -BM_INF;\n");
    P("#pragma unroll\n        for (int x = 0; x < %d; x++) mx = fmaxf(mx, fmaxf(s[4 * x + 2 * rr], s[4 * x + 2 * rr + 1]));\n",
      NB);
    P("        mx = fmaxf(mx, BM_SHFL_XOR(mx, 1));\n        mx = fmaxf(mx, BM_SHFL_XOR(mx, 2));\n");
    wa_max_update(k, &ex);
    P("        float ls = 0.0f;\n");
    P("#pragma unroll\n        for (int x = 0; x < %d; x++)\n#pragma unroll\n        for (int e = 0; e < 2; e++) {\n", NB);
    wa_exp_p(k, &ex, "mu");
    P("          s[4 * x + 2 * rr + e] = p;\n          ls += p;\n        }\n");
    P("        lr[rr] = lr[rr] * corr[rr] + ls;\n");
    P("      }\n");
  } else { /* both rows at once: max trees, ilp partial sums a row */
    P("      float mu2[2];\n      {\n      float mt[2][%d];\n", NB);
    P("#pragma unroll\n      for (int x = 0; x < %d; x++)\n#pragma unroll\n        for (int rr = 0; rr < 2; rr++)", NB);
    P(" mt[rr][x] = fmaxf(s[4 * x + 2 * rr], s[4 * x + 2 * rr + 1]);\n");
    wa_tree(k, "mt", NB, false);
    P("      float mx2[2] = {mt[0][0], mt[1][0]};\n");
    P("#pragma unroll\n      for (int rr = 0; rr < 2; rr++) mx2[rr] = fmaxf(mx2[rr], BM_SHFL_XOR(mx2[rr], 1));\n");
    P("#pragma unroll\n      for (int rr = 0; rr < 2; rr++) mx2[rr] = fmaxf(mx2[rr], BM_SHFL_XOR(mx2[rr], 2));\n");
    P("#pragma unroll\n      for (int rr = 0; rr < 2; rr++) {\n        const float mx = mx2[rr];\n");
    wa_max_update(k, &ex);
    P("        mu2[rr] = mu;\n      }\n      }\n");
    P("      float ls[2][%d]; /* value v of a row goes to partial sum v %% %d */\n", ex.ilp, ex.ilp);
    P("#pragma unroll\n      for (int x = 0; x < %d; x++)\n#pragma unroll\n        for (int rr = 0; rr < 2; rr++)\n", NB);
    P("#pragma unroll\n        for (int e = 0; e < 2; e++) {\n");
    wa_exp_p(k, &ex, "mu2[rr]");
    P("          const int v = 2 * x + e, q = v %% %d;\n", ex.ilp);
    P("          s[4 * x + 2 * rr + e] = p;\n          ls[rr][q] = v < %d ? p : ls[rr][q] + p;\n        }\n", ex.ilp);
    wa_tree(k, "ls", ex.ilp, true);
    P("#pragma unroll\n      for (int rr = 0; rr < 2; rr++) lr[rr] = lr[rr] * corr[rr] + ls[rr][0];\n");
  }
  if (pv) { /* the previous tile's P V is done: O and pa are free */
    if (ex.hold) P("      bm_wg_hold(lr[1]); /* keeps the wait here */\n");
    wa_wait_pv(k, c);
    if (after_pv) P("%s", after_pv);
  }
  if (rescale) { /* (with resc: unless every row of the warp kept its max; no wgmma is in flight) */
    if (ex.resc) P("      if (__any_sync(0xffffffffu, corr[0] != 1.0f || corr[1] != 1.0f)) {\n");
    P("#pragma unroll\n      for (int x = 0; x < %d; x++) {\n", c->NO);
    P("        o[4 * x] *= corr[0]; o[4 * x + 1] *= corr[0]; o[4 * x + 2] *= corr[1]; o[4 * x + 3] *= corr[1];\n      }\n");
    if (ex.resc) P("      }\n");
  }
  /* P: the accumulator layout of 16 keys is the A fragment of m64n*k16 */
  P("#pragma unroll\n      for (int kk = 0; kk < %d; kk++) {\n", c->BN / 16);
  P("        pa[kk][0] = %s(s[8 * kk], s[8 * kk + 1]);\n", c->pack);
  P("        pa[kk][1] = %s(s[8 * kk + 2], s[8 * kk + 3]);\n", c->pack);
  P("        pa[kk][2] = %s(s[8 * kk + 4], s[8 * kk + 5]);\n", c->pack);
  P("        pa[kk][3] = %s(s[8 * kk + 6], s[8 * kk + 7]);\n", c->pack);
  P("      }\n");
  P("      }\n");
}

/* the top of a step: tile kt0's operands have landed (own copies: wait;
 * everyone's: the barrier; visible to the tensor cores: the proxy fence),
 * then the loads NS - 1 tiles ahead: K tile kt0 + NS - 1 and V tile
 * kt0 + NS - 2 (WA_SERIAL: V with K), one commit group (maybe empty) */
static void wa_step_top(ck *k, const wa_ctx *c, const char *lk, const char *lv) {
  const char *I = k->I;
  const int ah = c->NS - 1;
  P("      bm_cp_wait<%d>();\n      bm_fence_proxy_async();\n      BM_SYNC();\n", ah - 1);
  if (c->w->mode == WA_SERIAL) {
    P("      if (kt0 + %d < ntile) {\n      const %s kt = kt0 + %d;\n%s%s      }\n", ah, I, ah, lk, lv);
  } else {
    P("      if (kt0 + %d < ntile) {\n      const %s kt = kt0 + %d;\n%s      }\n", ah, I, ah, lk);
    P("      if (kt0 + %d < ntile) {\n      const %s kt = kt0 + %d;\n%s      }\n", ah - 1, I, ah - 1, lv);
  }
  P("      bm_cp_commit();\n");
}

/* O / l, the epilogue and the store from registers (the thread's rows i0, i0 + 8) */
static void wa_store_regs(ck *k, const wa_ctx *c, int64_t Dv) {
  const char *I = k->I;
  /* O / l, the epilogue, the store */
  P("#pragma unroll\n    for (int rr = 0; rr < 2; rr++) {\n");
  P("      float l = lr[rr];\n      l += BM_SHFL_XOR(l, 1);\n      l += BM_SHFL_XOR(l, 2);\n");
  P("      const float inv = l > 0.0f ? 1.0f / l : 0.0f;\n");
  P("      const %s i = i0 + rr * 8;\n", I);
  P("      if (i < Sq) {\n");
  const bm_node *n = k->n;
  if (n->dtype == BM_DTYPE_F16 || n->dtype == BM_DTYPE_BF16) {
    /* a thread's two adjacent columns as one 32-bit word (Dv is a multiple of 8) */
    P("#pragma unroll\n      for (int x = 0; x < %d; x++) {\n", c->NO);
    P("        const int dd = x * 8 + t4 * 2;\n");
    P("        if (dd < %lld) {\n", (long long)Dv);
    P("      const %s oi = (qb + i) * %lld + dd, oi1 = oi + 1;\n", I, (long long)Dv);
    P("      float v = o[4 * x + 2 * rr] * inv, v1 = o[4 * x + 2 * rr + 1] * inv;\n");
    ck_emit_epilogue(k, "v", "oi");
    ck_emit_epilogue(k, "v1", "oi1");
    P("      *(unsigned int *)(bm_out(%d) + (bm_i64)oi * 2) = bm_pack_%sx2(v, v1);\n", n->nin,
      n->dtype == BM_DTYPE_BF16 ? "bf16" : "f16");
    P("        }\n      }\n      }\n    }\n");
    return;
  }
  P("#pragma unroll\n      for (int x = 0; x < %d; x++)\n#pragma unroll\n      for (int e = 0; e < 2; e++) {\n", c->NO);
  P("        const int dd = x * 8 + t4 * 2 + e;\n");
  P("        if (dd < %lld) {\n", (long long)Dv);
  P("      const %s oi = (qb + i) * %lld + dd;\n", I, (long long)Dv);
  P("      float v = o[4 * x + 2 * rr + e] * inv;\n");
  ck_emit_epilogue(k, "v", "oi");
  ck_store(k, "oi", "v");
  P("        }\n      }\n      }\n    }\n");
}

/* The staged O store (FA3's epilogue; wa_ctx.ostore, wa_ostore_ok): the 64
 * rows of a warpgroup whose rows all lie below Sq, divided by l and through
 * the node's epilogue in registers, go into the warpgroup's Q buffer of the
 * finished task (sqw; dead: its last S = Q K^T has completed, the P V that
 * followed it in every warp has too) in the layout of the Q map's boxes (64
 * columns of 128-byte rows, the 128-byte swizzle), one stmatrix per two
 * 8-column blocks (a warp writes its own 16 rows: 8 rows a matrix, distinct
 * 16-byte slots under the swizzle, no bank conflicts); then each writer's
 * proxy fence, the warpgroup's barrier, and its first thread issues one TMA
 * tensor store per 64-column box (map 3: the output as (rows, Dv), the
 * batches and heads stacked) and commits them as one bulk group; the
 * warpgroup goes on without waiting. That thread waits for the read of its
 * stores (wa_q_free) before a TMA load rewrites a Q buffer, and for their
 * completion before the kernel exits (wa_store_drain). A warpgroup whose
 * rows reach past Sq (the map would write the next head's rows) or a launch
 * without maps (tmq 0; Q came by cp.async into the same layout) copies its
 * rows below Sq out of the staged tile, 16 bytes a thread (a store from
 * registers on this branch beside the staging spilled 12-20 bytes in the
 * three-warpgroup kernels at 160 registers). With wa_ctx.obuf the tile goes
 * to a dedicated buffer instead (its first thread waits for the read of its
 * last stores, then the warpgroup's barrier). On an H100 (docs/cuda.md,
 * "The staged O store") 1k d128 0.99-1.00x SDPA vs 0.92-0.93x from registers. */
static void wa_store(ck *k, const wa_ctx *c, int64_t Dv) {
  if (!c->ostore) {
    wa_store_regs(k, c, Dv);
    return;
  }
  const bm_node *n = k->n;
  const char *I = k->I, *pk = n->dtype == BM_DTYPE_BF16 ? "bf16" : "f16";
  P("    float oinv[2]; /* 1 / l of rows i0, i0 + 8 */\n");
  P("#pragma unroll\n    for (int rr = 0; rr < 2; rr++) {\n");
  P("      float l = lr[rr];\n      l += BM_SHFL_XOR(l, 1);\n      l += BM_SHFL_XOR(l, 2);\n");
  P("      oinv[rr] = l > 0.0f ? 1.0f / l : 0.0f;\n    }\n");
  /* the staging tile: the Q buffer (boxes BM rows apart) or the dedicated one (8 KiB boxes) */
  const str sb = c->obuf ? ck_strf("(so0 + wg * %du)", c->dva / 64 * 8192) : ck_strf("sqw");
  const int bs = c->obuf ? 8192 : c->BM * 128;
  if (c->obuf) { /* its last stores have read it (issued a task ago) */
    P("    if ((tid & 127) == 0) bm_bulk_wait_read<0>();\n");
    P("    bm_att_bar_sync(1 + wg, 128);\n");
  }
  P("    { /* staged in %s */\n", sb.s);
  P("#pragma unroll\n    for (int x = 0; x < %d; x += 2) {\n", c->NO);
  P("      unsigned int w[4]; /* matrix m: rows + (m & 1) * 8, column block x + (m >> 1) */\n");
  P("#pragma unroll\n      for (int m = 0; m < 4; m++) {\n");
  P("        const int rr = m & 1, xb = x + (m >> 1);\n");
  P("        const %s oi = (qb + i0 + rr * 8) * %lld + xb * 8 + t4 * 2, oi1 = oi + 1;\n", I, (long long)Dv);
  P("        float v = o[4 * xb + 2 * rr] * oinv[rr], v1 = o[4 * xb + 2 * rr + 1] * oinv[rr];\n");
  if (bm_op_table[n->op].flags & BM_OPF_EPILOGUE && n->a.prog.n > 0) { /* (its loads: rows below Sq only) */
    P("        if (i0 + rr * 8 < Sq) {\n");
    ck_emit_epilogue(k, "v", "oi");
    ck_emit_epilogue(k, "v1", "oi1");
    P("        }\n");
  }
  P("        w[m] = bm_pack_%sx2(v, v1);\n      }\n", pk);
  P("      const int r = wq * 16 + (lane & 15), cb = x + (lane >> 4); /* this lane's row address */\n");
  P("      bm_att_stmatrix_x4(%s + (cb >> 3) * %du + r * 128 + (((cb & 7) ^ (r & 7)) << 4), w[0], w[1], w[2], w[3]);\n",
    sb.s, bs);
  P("    }\n");
  P("    }\n");
  P("    bm_fence_proxy_async(); /* visible to the TMA (async proxy) */\n");
  P("    bm_att_bar_sync(1 + wg, 128);\n");
  if (c->ostore == 1)
    P("    if (tmq != 0ull && qw0 + 64 <= Sq) { /* TMA tensor stores */\n");
  else /* (BM_CUDA_ATTN_OSTORE=2: the threads' stores for every tile) */
    P("    if (false) {\n");
  P("    if ((tid & 127) == 0) {\n");
  for (int a = 0; a < c->dva / 64; a++)
    P("      bm_tma_store2d(tmq + 384ull, %s + %du, %d, (int)(qb + qw0));\n", sb.s, a * bs, a * 64);
  P("      bm_bulk_commit();\n    }\n");
  P("    } else { /* the rows below Sq from the staged tile */\n");
  const int ch = c->dva / 8; /* 16-byte chunks a row */
  P("#pragma unroll 2\n    for (int e = (tid & 127); e < %d; e += 128) {\n", 64 * ch);
  P("      const int row = e / %d, cc = e %% %d;\n", ch, ch);
  P("      if (qw0 + row < Sq) {\n");
  P("        const bm_u4 ov = bm_att_ld_shared16(%s + (cc >> 3) * %du + row * 128 + (((cc & 7) ^ (row & 7)) << 4));\n",
    sb.s, bs);
  P("        *(bm_u4 *)(bm_out(%d) + ((bm_i64)(qb + qw0 + row) * %lld + cc * 8) * 2) = ov;\n", n->nin, (long long)Dv);
  P("      }\n    }\n    }\n");
}

/* wa_store's staged store: the Q buffer at `buf` is about to be rewritten by
 * a TMA load issued by this (the store-issuing) thread: its stores have read
 * it (bulk groups are per thread; ind: the indentation) */
static void wa_q_free(ck *k, const wa_ctx *c, const char *ind) {
  if (c->ostore == 1 && !c->obuf) P("%sbm_bulk_wait_read<0>(); /* the staged O stores have read the Q buffer */\n", ind);
}

/* wa_store's staged store: the TMA stores are done before the consumer exits */
static void wa_store_drain(ck *k, const wa_ctx *c) {
  if (c->ostore == 1) P("  if (tmq != 0ull && (tid & 127) == 0) bm_bulk_wait<0>(); /* the O stores are done */\n");
}

/* wa_store's staged store (wa_ctx.ostore), for a WA_WS kernel with TMA
 * maps: an f16/bf16 output (plain (B, Hq, Sq, Dv) layout: the kernel's)
 * whose Dv is exactly the padded 64 or 128 (no padded columns) and whose
 * tile fits the Q buffer (Dv <= the padded D): 1 (TMA stores), else 0.
 * BM_CUDA_ATTN_OSTORE at compile time: 0 the store from registers (the
 * previous kernel), 2 staged but every tile stored by the threads. */
static int wa_ostore_ok(const bm_node *n, const wa_ctx *c) {
  const char *env = getenv("BM_CUDA_ATTN_OSTORE");
  const int mode = env && *env ? atoi(env) : 1;
  const int64_t Dv = n->in[2]->shape[3].add;
  const bool ok = c->w->mode == WA_WS && (n->dtype == BM_DTYPE_F16 || n->dtype == BM_DTYPE_BF16) && Dv == c->dva &&
                  c->dva <= c->dpa && n->shape[3].add == Dv;
  return ok && mode >= 1 && mode <= 2 ? mode : 0;
}

/* The dynamic scheduler's "done" step (wa_cfg.dyn): a block's lead
 * producer thread, after its last ticket (or with none), counts the block
 * done; the last block of the launch resets both counters for the next run
 * (no host memset; CUDA graph replays included). */
static void wa_sched_done(ck *k, const char *ind) {
  P("%s__threadfence(); /* this block's tickets before its count */\n", ind);
  P("%sif (atomicAdd(&bm_tcnt[1], 1u) == (unsigned int)nblk - 1u) { /* the last block: reset */\n", ind);
  P("%s  atomicExch(&bm_tcnt[0], 0u);\n%s  atomicExch(&bm_tcnt[1], 0u);\n%s}\n", ind, ind, ind);
}

/* Opens a WA_WS role's task loop (wa_task_close closes it). Static (not
 * wa_cfg.dyn): t = bid0, bid0 + nblk, ... With the dynamic scheduler: a
 * block's first task is bid0, then at the start of each task the producers'
 * lead thread takes the next one, nblk + atomicAdd(&bm_tcnt[0], 1) (the
 * kernel's static counter), and hands it to the block's threads through a
 * ring of WA_TQ shared words (at te0 + 8 WA_TQ; mbarriers tf0: written,
 * te0: released by all the block's threads at the end of the task, when
 * they read it again as their next t: nothing extra stays live in registers
 * over the task), so every role runs the same task sequence and the
 * consumers' lead threads know the next task (tn) when a task starts (the
 * Q prefetch). Task indices are int (B * Hq * nqt blocks of 128 rows). A
 * ticket at or past ntask ends the block's loop and counts the block done
 * (wa_sched_done). */
static void wa_task_open(ck *k, const wa_ctx *c, bool producer) {
  if (!c->w->dyn) {
    ck_loop_open(k, "B * Hq * nqt");
    return;
  }
  P("  const int ntask = (int)(B * Hq * nqt);\n");
  P("  unsigned int tsq = 0u; /* tasks taken from the ring so far */\n");
  P("  for (int t = (int)bid0; t < ntask; tsq++) {\n");
  P("    const unsigned int tsl = tsq %% %du, tph = (tsq / %du) & 1u;\n", WA_TQ, WA_TQ);
  if (producer) {
    /* the slot free (all the producers wait: a wait in the lead's branch spills) */
    P("    bm_att_mbar_wait(te0 + 8 * tsl, tph ^ 1u);\n");
    P("    if ((tid & 127) == 0) { /* the next task: a ticket */\n");
    P("      const int x = (int)nblk + (int)atomicAdd(&bm_tcnt[0], 1u);\n");
    P("      if (x >= ntask) {\n");
    wa_sched_done(k, "        ");
    P("      }\n");
    P("      bm_att_sts(te0 + %du + 4 * tsl, (int)(x < ntask ? x : ntask));\n", 8 * WA_TQ);
    P("      bm_att_mbar_arrive(tf0 + 8 * tsl);\n");
    P("    }\n");
  }
  P("    bm_att_mbar_wait(tf0 + 8 * tsl, tph);\n");
}

/* Closes wa_task_open's loop: the next task from the ring, the slot released */
static void wa_task_close(ck *k, const wa_ctx *c) {
  if (c->w->dyn) {
    P("    t = bm_att_lds(te0 + %du + 4 * (tsq %% %du));\n", 8 * WA_TQ, WA_TQ);
    P("    bm_att_mbar_arrive(te0 + 8 * (tsq %% %du));\n", WA_TQ);
  }
  ck_loop_close(k);
}

/* After a step 0 that is a real branch (a key tile count not known at compile
 * time: causal masking, kv_len; or xt's carried S_0) ptxas computed the steps'
 * wgmma descriptors in vector registers (64-bit adds and R2UR moves around
 * every wgmma, 2-3x the instructions between them) rather than in uniform
 * registers as it does when the branch folds away (static Sk without causal
 * masking); a __syncwarp() after it (the warp reconverged) restores the
 * uniform form (checked in the SASS). BM_CUDA_ATTN_WSYNC=0 at compile time:
 * without it (the previous kernels). */
static bool wa_wsync_on(void) {
  const char *e = getenv("BM_CUDA_ATTN_WSYNC");
  return !(e && *e && strcmp(e, "0") == 0);
}

/* xt's task boundary: `nt` the task's key tiles, relk / relv the stage
 * releases, turn / hand the ping-pong, setup the task setup (emit_tile_range) */
static void wa_xtask_end(ck *k, const wa_ctx *c, const char *nt, const char *setup, const char *turn,
                         const char *hand, const char *relk, const char *relv, int64_t Dv) {
  const char *I = k->I, *T = c->w->dyn ? "int" : I;
  const int QB = c->BM * c->dpa * 2;
  P("    float lsv[2] = {lr[0], lr[1]}; /* this task's row sums (the next task's softmax starts its own) */\n");
  P("    bool xn = false; /* the next task's S_0 issued with this task's last P V */\n");
  P("    if (%s > 0) {\n      const unsigned int ci = it + (unsigned int)%s;\n", nt, nt);
  if (c->w->dyn)
    P("      const int tn = bm_att_lds(te0 + %du + 4 * tsl); /* the next task */\n", 8 * WA_TQ);
  else
    P("      const %s tn = t + (%s)nblk; /* the next task */\n", I, I);
  P("      if (tmq != 0ull && tn < ntask) {\n");
  P("        const %s t = tn; /* the next task's setup */\n", T);
  P("%s", setup);
  P("        if (ntile > 0) {\n          xn = true;\n");
  P("          const %s i0 = qw0 + wq * 16 + g8, kt0 = 0;\n", I);
  P("          const unsigned int nqs = qn & 1u; /* its Q buffer, prefetched */\n");
  P("          bm_att_mbar_wait(qbar0 + 16 * wg + 8 * nqs, (qn >> 1) & 1u);\n");
  P("          const unsigned long long dq = bm_wgmma_desc(sq0 + wg * 8192 + nqs * %du, true);\n", QB);
  wa_issue_group(k, c, true, true, turn, hand);
  P("          mr[0] = mr[1] = -BM_INF;\n          lr[0] = lr[1] = 0.0f;\n");
  wa_soft(k, c, "kt0", 1, true, false, relk, relv);
  P("        }\n      }\n");
  P("      if (!xn) { /* the last tile's P V alone */\n");
  wa_issue_group(k, c, false, true, turn, hand);
  wa_wait_pv(k, c);
  P("%s", relv);
  P("      }\n    }\n");
  P("    it += (unsigned int)%s;\n", nt);
  P("    {\n    const float lr[2] = {lsv[0], lsv[1]};\n");
  if (c->w->nwg == 3) { /* (160 registers: the store's indices derived again from t, opaque to the
                         * compiler, rather than live over the boundary, which spilled 4-20 bytes) */
    P("    %s to = t;\n    asm volatile(\"\" : \"+%s\"(to));\n", T, strcmp(T, "int") == 0 ? "r" : "l");
    P("    {\n    const %s t = to;\n%s", T, setup);
    P("    const %s i0 = qw0 + wq * 16 + g8;\n", I);
  }
  wa_store(k, c, Dv);
  if (c->w->nwg == 3) P("    }\n");
  P("    }\n");
  P("#pragma unroll\n    for (int x = 0; x < %d; x++) o[x] = 0.0f;\n", c->NO * 4);
  P("    xc = xn;\n");
}

/* The warp-specialized body (WA_WS, FA3's producer): warpgroup NWG loads K
 * and V tiles with cp.async into NS stages, each stage guarded by mbarriers
 * (full: the 128 producers' copies landed, cp.async.mbarrier.arrive; empty:
 * the 4 NWG consumer warps are done with it), with 40 registers a thread
 * (setmaxnreg) so that the consumers get 232; the consumer warpgroups load their own Q rows
 * and run WA_PIPE's steps without block-wide barriers, so they drift apart
 * and one's softmax overlaps the other's products. Producer and consumers
 * count the key tiles of every task (it), which gives the stage (it % NS)
 * and the phase parity ((it / NS) & 1) of each. With `tma` (wa_cfg.tma, the
 * maps' address in bm_a.bufs[BM_ATT_TMA_SLOT], 0: none) one producer thread
 * loads a tile whose keys are all below len with TMA copies (64-column boxes
 * of the 128-byte swizzle: the layout cp.async writes) and an expect-tx
 * arrival while the other 127 arrive plainly, so "full" counts 128 either
 * way; a tile reaching past len (its rows there zero-filled), or any tile
 * without maps, is the 128 threads' cp.async as before. The consumers load
 * their Q rows by TMA too (one mbarrier per warpgroup; tma 3: two buffers,
 * the next task's rows issued when this task starts; with them the steps run
 * on across the tasks, wa_xtask_end). */
static void emit_attention_ws(ck *k, const wa_ctx *c, const char *setup, const char *lk, const char *lv, int64_t D,
                              int64_t Dv, bool tma) {
  const char *I = k->I;
  const int NS = c->NS, NWG = c->w->nwg;
  /* setmaxnreg moves registers within the block's allocation at launch
   * (65536 / threads a thread, in steps of 8): asking for more hangs (the
   * first GPU run did). The roles share no code after it (else ptxas
   * ignores it: C7507). */
  int launch = 65536 / (k->threads * (k->min_blocks > 1 ? k->min_blocks : 1)) / 8 * 8;
  const int preg = c->w->preg ? c->w->preg : WA_PREG;
  int creg = (launch * k->threads - 128 * preg) / (128 * NWG) / 8 * 8;
  P("  if (wg == %d) { /* the producer warpgroup */\n", NWG);
  P("  bm_att_setmaxnreg_dec<%d>();\n", preg);
  if (tma) {
    P("  const bool lead = (tid & 127) == 0;\n");
    P("  if (tmq != 0ull && lead) { bm_att_tmap_acquire(tmq + 128ull); bm_att_tmap_acquire(tmq + 256ull); }\n");
  }
  wa_task_open(k, c, true);
  P("%s", setup);
  P("      for (%s kt = 0; kt < ntile; kt++, it++) {\n", I);
  P("      const unsigned int pit = it, ps = pit %% %du, ph = (pit / %du) & 1u;\n", NS, NS);
  /* with the maps, a tile of keys all below len is one thread's TMA copies
   * (the other 127 arrive); a partial one (rows past len zero-filled) and
   * any tile without maps, every producer's cp.async */
  if (tma) {
    P("      const %s jt = kbeg + kt * %d;\n", I, c->BN);
    P("      const bool full = tmq != 0ull && jt + %d <= len;\n", c->BN);
  }
  for (int kv = 0; kv < 2; kv++) {
    const char *e0 = kv ? "ev0" : "ek0", *f0 = kv ? "fv0" : "fk0", *base = kv ? "sv0" : "sk0";
    int atoms = (kv ? c->dva : c->dpa) / 64, stb = kv ? c->VB : c->KB;
    P("      bm_att_mbar_wait(%s + 8 * ps, ph ^ 1u);\n", e0);
    if (tma) {
      P("      if (full) {\n");
      P("        if (lead) {\n");
      P("          bm_att_mbar_expect_tx(%s + 8 * ps, %du);\n", f0, stb);
      for (int a = 0; a < atoms; a++)
        P("          bm_att_tma_load2d(%s + ps * %du + %du, tmq + %dull, %d, (int)(kvb + jt), %s + 8 * ps);\n", base,
          stb, a * c->BN * 128, kv ? 256 : 128, a * 64, f0);
      P("        } else {\n          bm_att_mbar_arrive(%s + 8 * ps);\n        }\n", f0);
      P("      } else {\n");
    }
    P("%s", kv ? lv : lk);
    P("      bm_att_cp_arrive(%s + 8 * ps);\n", f0);
    if (tma) P("      }\n");
  }
  P("      }\n");
  wa_task_close(k, c);
  if (c->w->dyn) { /* a block with no task takes no ticket: it is done */
    P("  if ((tid & 127) == 0 && (%s)bid0 >= B * Hq * nqt) {\n", I);
    wa_sched_done(k, "    ");
    P("  }\n");
  }
  P("  bm_cp_wait<0>(); /* no copies in flight at exit */\n");
  P("  } else { /* the consumer warpgroups */\n");
  P("  bm_att_setmaxnreg_inc<%d>();\n", creg > 240 ? 240 : creg);
  /* ping-pong: a warpgroup waits for its turn (barrier pb + wg, pb = 1 + NWG
   * past the Q barriers 1 + wg: itself and the previous one's arrival) before
   * issuing a step's products and hands the turn to the next after (a ring);
   * the last gives warpgroup 0 the first turn. All run the same code (else
   * ptxas serializes the wgmmas, C7520) */
  const int pb = 1 + NWG;
  str turn = ck_strf("      bm_att_bar_sync(%d + wg, 256);\n", pb);
  str hand = NWG == 2 ? ck_strf("      bm_att_bar_arrive(%d + (wg ^ 1), 256);\n", pb)
                      : ck_strf("      bm_att_bar_arrive(wg == %d ? %d : %d + wg, 256);\n", NWG - 1, pb, pb + 1);
  if (!c->w->pp) turn.s[0] = hand.s[0] = '\0';
  if (c->w->pp) P("  if (wg == %d) bm_att_bar_arrive(%d, 256);\n", NWG - 1, pb);
  const bool qpf = tma && c->w->tma == 3;
  if (tma) {
    P("  unsigned int qn = 0; /* the warpgroup's tasks so far: the phase of its Q barrier%s */\n",
      qpf ? " and Q buffer" : "");
    P("  if (tmq != 0ull && (tid & 127) == 0) bm_att_tmap_acquire(tmq);\n");
    if (c->ostore == 1) P("  if (tmq != 0ull && (tid & 127) == 0) bm_att_tmap_acquire(tmq + 384ull); /* O */\n");
  }
  /* xt: the step pipeline continuous over the tasks (wa_xtask_end); the state lives across them.
   * Three warpgroups (160 registers) only with static Sq and Sk: symbolic ones spilled 12 bytes */
  const bool xt = qpf && wa_xtask_on() &&
                  (NWG < 3 || (bm_dim_is_static(k->n->in[0]->shape[2]) && bm_dim_is_static(k->n->in[1]->shape[2])));
  if (xt) {
    wa_state_decl(k, c);
    P("    bool xc = false; /* this task's S_0 was issued (and its softmax run) at the previous task's end */\n");
  }
  wa_task_open(k, c, false);
  P("%s", setup);
  /* Q: the warpgroup's 64 rows, once it is done with the last task's */
  P("    bm_att_bar_sync(1 + wg, 128);\n");
  P("    unsigned int sqw = sq0 + wg * 8192; /* the warpgroup's Q rows */\n");
  if (tma) { /* one thread's TMA copies (rows past Sq: other heads' or zeros, not stored) */
    const int QB = c->BM * c->dpa * 2, qbytes = 64 * c->dpa * 2;
    P("    if (tmq != 0ull) {\n");
    if (qpf) { /* two Q buffers: the next task's rows load during this task */
      P("    const unsigned int qs = qn & 1u, qbar = qbar0 + 16 * wg + 8 * qs, qph = (qn >> 1) & 1u;\n");
      P("    sqw += qs * %du;\n", QB);
      P("    if ((tid & 127) == 0) {\n");
      P("      if (qn == 0u) {\n");
      P("        bm_att_mbar_expect_tx(qbar, %du);\n", qbytes);
      for (int a = 0; a < c->dpa / 64; a++)
        P("        bm_att_tma_load2d(sqw + %du, tmq, %d, (int)(qb + qw0), qbar);\n", a * c->BM * 128, a * 64);
      P("      }\n");
      const str nts = ck_strf("t + (%s)nblk", I);
      const char *nt = c->w->dyn ? "tn" : nts.s;
      if (c->w->dyn) P("      const int tn = bm_att_lds(te0 + %du + 4 * tsl); /* the next task */\n", 8 * WA_TQ);
      P("      if (%s < ntask) {\n", nt);
      P("        const int t2 = (int)(%s), nq2 = (int)nqt;\n", nt);
      emit_task_order(k, c->w->dyn, "int", "t2", "nq2", "(int)(B * Hq)", "2", "        "); /* emit_tile_range's */
      P("        const int r2 = bh2 * (int)Sq + qt2 * %d + wg * 64; /* its qb + qw0 */\n", c->BM);
      P("        const unsigned int nbar = qbar0 + 16 * wg + 8 * (qs ^ 1u), nsq = sq0 + wg * 8192 + (qs ^ 1u) * %du;\n",
        QB);
      wa_q_free(k, c, "        ");
      P("        bm_att_mbar_expect_tx(nbar, %du);\n", qbytes);
      for (int a = 0; a < c->dpa / 64; a++)
        P("        bm_att_tma_load2d(nsq + %du, tmq, %d, r2, nbar);\n", a * c->BM * 128, a * 64);
      P("      }\n");
      P("    }\n");
    } else {
      P("    const unsigned int qbar = qbar0 + 8 * wg, qph = qn & 1u;\n");
      P("    if ((tid & 127) == 0) {\n");
      wa_q_free(k, c, "      ");
      P("      bm_att_mbar_expect_tx(qbar, %du);\n", qbytes);
      for (int a = 0; a < c->dpa / 64; a++)
        P("      bm_att_tma_load2d(sqw + %du, tmq, %d, (int)(qb + qw0), qbar);\n", a * c->BM * 128, a * 64);
      P("    }\n");
    }
    P("    bm_att_mbar_wait(qbar, qph);\n    qn++;\n");
    P("    } else {\n");
  }
  P("    {\n");
  /* (with maps the fallback: unrolled by 2, a full unroll's hoisted addresses spilled 12 bytes at head dim 128) */
  wa_copy(k, 0, 64, c->dpa / 64, c->BM * 128, D, "sq0 + wg * 8192", "qb + qw0 + row", "qw0 + row < Sq", "(tid & 127)",
          128, tma ? 2 : 0);
  P("    }\n");
  P("    bm_cp_commit();\n    bm_cp_wait<0>();\n    bm_fence_proxy_async();\n    bm_att_bar_sync(1 + wg, 128);\n");
  if (tma) P("    }\n");
  if (!xt) wa_state_decl(k, c);
  P("    const %s i0 = qw0 + wq * 16 + g8;\n", I);
  P("    const unsigned long long dq = bm_wgmma_desc(sqw, true);\n");
  str relk = ck_strf("      bm_att_mbar_arrive_if(ek0 + 8 * (ci %% %du), lane == 0);\n", NS);
  str relv = ck_strf("      bm_att_mbar_arrive_if(ev0 + 8 * ((ci - 1u) %% %du), lane == 0);\n", NS);
  /* step 0: S only (xt: unless the previous task issued it, xc) */
  /* three warpgroups (160 registers): the steps' loop kept rolled (kv_len's spilled 4 bytes)
   * and without kv_len the key tile count opaque to the compiler (a count known at compile
   * time, static Sk, unrolled the steps into straight code that spilled 112 bytes; with
   * kv_len the copy spilled 4) */
  const bool opaque = NWG == 3 && !(k->n->a.attn_flags & BM_ATTN_HAS_KV_LEN);
  const char *nt = opaque ? "ntc" : "ntile";
  if (opaque)
    P("    %s ntc = ntile;\n    asm volatile(\"\" : \"+%s\"(ntc));\n", I, strcmp(I, "int") == 0 ? "r" : "l");
  if (xt) P("    if (!xc) {\n      mr[0] = mr[1] = -BM_INF;\n      lr[0] = lr[1] = 0.0f;\n    }\n");
  P("    if (%s%s > 0) {\n      const %s kt0 = 0;\n      const unsigned int ci = it;\n", xt ? "!xc && " : "", nt, I);
  wa_issue_group(k, c, true, false, turn.s, hand.s);
  wa_soft(k, c, "kt0", 0, false, false, relk.s, NULL);
  P("    }\n");
  if (wa_wsync_on()) P("    __syncwarp(); /* reconverged: the steps' wgmma descriptors stay uniform (wa_wsync_on) */\n");
  /* steps 1..: S_j and P_{j-1} V_{j-1} */
  if (NWG == 3) P("#pragma unroll 1\n");
  P("    for (%s kt0 = 1; kt0 < %s; kt0++) {\n", I, nt);
  P("      const unsigned int ci = it + (unsigned int)kt0;\n");
  wa_issue_group(k, c, true, true, turn.s, hand.s);
  wa_soft(k, c, "kt0", 1, true, true, relk.s, relv.s);
  P("    }\n");
  if (xt) { /* the next task's S_0 with the last P V, then the store */
    wa_xtask_end(k, c, nt, setup, turn.s, hand.s, relk.s, relv.s, Dv);
  } else { /* the last tile's P V, then the store */
    P("    if (%s > 0) {\n      const unsigned int ci = it + (unsigned int)%s;\n", nt, nt);
    wa_issue_group(k, c, false, true, turn.s, hand.s);
    wa_wait_pv(k, c);
    P("%s", relv.s);
    P("    }\n");
    P("    it += (unsigned int)%s;\n", nt);
    wa_store(k, c, Dv);
  }
  wa_task_close(k, c);
  wa_store_drain(k, c);
  P("  }\n");
}

static void emit_attention_wg(ck *k, const wa_cfg *w, int mi, int li) {
  const bm_node *n = k->n, *q = n->in[0], *kk = n->in[1], *v = n->in[2];
  const char *I = k->I;
  int64_t D = q->shape[3].add, Dv = v->shape[3].add;
  wa_ctx c = {.w = w, .dpa = wa_pad(D), .dva = wa_pad(Dv), .BM = 64 * w->nwg, .BN = w->bn, .NS = w->ns,
              .mi = mi};
  c.NB = c.BN / 8;
  c.NO = c.dva / 8;
  c.KB = c.BN * c.dpa * 2;
  c.VB = c.BN * c.dva * 2;
  c.dt = q->dtype == BM_DTYPE_BF16 ? "bf16" : "f16";
  c.pack = q->dtype == BM_DTYPE_BF16 ? "bm_pack_bf16x2" : "bm_pack_f16x2";
  const int BM = c.BM, BN = c.BN, QB = BM * c.dpa * 2, NS = c.NS;
  const bool ws = w->mode == WA_WS;
  k->threads = 128 * (w->nwg + (ws ? 1 : 0));
  k->smem = wa_smem(w, c.dpa, c.dva);
  /* TMA loads: head dims exactly 64 or 128 (no column past the map's edge) */
  const bool tma = ws && w->tma && D == c.dpa && Dv == c.dva && n->nin < BM_ATT_TMA_SLOT;
  int64_t rq = elems_max(k->g, q) / D, rk = elems_max(k->g, kk) / D, rv = elems_max(k->g, v) / Dv;
  c.ostore = tma ? wa_ostore_ok(n, &c) : 0;
  /* BM_CUDA_ATTN_OBUF=1 (compile time): a dedicated staging buffer where it fits (wa_store; fits
   * everywhere, at d128 with two Q buffers 230576 bytes); off: on an H100 the same speed within 1% as
   * staging in the Q buffer (the wait for the stores' read before a Q load costs nothing measurable) */
  const char *ob = getenv("BM_CUDA_ATTN_OBUF");
  const int obytes = w->nwg * 64 * c.dva * 2;
  if (c.ostore && ob && *ob && atoi(ob) > 0 && k->smem + obytes <= 227 * 1024) {
    c.obuf = obytes;
    k->smem += obytes;
  }
  if (tma) { /* the runtime's tensor-map data (runtime/device_cuda.c, "Tensor maps"), sm_90a only */
    bm_sb *sv = k->b;
    k->b = &k->decl;
    P("#if defined(__CUDA_ARCH_FEAT_SM90_ALL)\n");
    P("extern \"C\" { __constant__ long long BM_KSYM(_tmd)[] = {%ldll, %d, %d, %d, %d, 1, "
      "0, 2, %lld, %lld, 64, 64, 3, 1, 2, %lld, %lld, 64, %d, 3, 2, 2, %lld, %lld, 64, %d, 3",
      BM_ATT_TMD_MAGIC, k->smem, w->tma >= 2 ? 1 : 0, BM_ATT_TMA_SLOT, c.ostore == 1 ? 4 : 3, (long long)D, (long long)rq,
      (long long)D, (long long)rk, BN, (long long)Dv, (long long)rv, BN);
    if (c.ostore == 1) /* the output (wa_store): (rows, Dv), box 64 x 64 */
      P(", %d, 2, %lld, %lld, 64, 64, 3", n->nin, (long long)Dv, (long long)(elems_max(k->g, n) / Dv));
    P("}; }\n");
    P("#endif\n");
    k->b = sv;
  }
  k->min_blocks = w->minb;
  while (k->min_blocks > 1 && k->min_blocks * (k->smem + 1024) > 228 * 1024) k->min_blocks--;
  bm_dim dims[3] = {q->shape[0], q->shape[1], q->shape[2]};
  int64_t divs[3] = {1, 1, BM};
  k->tasks = ck_task_grid(k->g, 3, dims, divs);
  str B = ck_dimx(k, q->shape[0]), Hq = ck_dimx(k, q->shape[1]), Sq = ck_dimx(k, q->shape[2]),
      Hkv = ck_dimx(k, kk->shape[1]), Sk = ck_dimx(k, kk->shape[2]);
  P("  /* wgmma attention %s */\n", w->name);
  P("  extern __shared__ __align__(128) unsigned char bm_dsm[];\n");
  P("  /* Q (%d rows), %d K stages, %d V stages: blocks of 64 columns in 128-byte rows, whole swizzle groups */\n", BM,
    c.NS, c.NS);
  P("  const unsigned int sq0 = (bm_smem_addr(bm_dsm) + 1023u) & ~1023u, sk0 = sq0 + %d, sv0 = sk0 + %d;\n",
    QB * (w->tma == 3 && ws ? 2 : 1),
    c.NS * c.KB);
  P("  const %s B = %s, Hq = %s, Sq = %s, Hkv = %s, Sk = %s;\n", I, B.s, Hq.s, Sq.s, Hkv.s, Sk.s);
  P("  const int wg = tid >> 7, wq = (tid >> 5) & 3, lane = tid & 31, g8 = lane >> 2, t4 = lane & 3;\n");
  if (ws) { /* K, V full (the producers' copies landed), K, V empty (the 4 NWG consumer warps are done) */
    if (c.obuf) P("  const unsigned int so0 = sv0 + %d; /* the O staging tiles (wa_store) */\n", NS * c.VB);
    P("  const unsigned int fk0 = sv0 + %d, fv0 = fk0 + %d, ek0 = fv0 + %d, ev0 = ek0 + %d;\n", NS * c.VB + c.obuf,
      8 * NS, 8 * NS, 8 * NS);
    if (tma) {
      P("  /* tma: Q rows %lld, K rows %lld, V rows %lld (maps at bm_a.bufs[%d], 0: none) */\n", (long long)rq,
        (long long)rk, (long long)rv, BM_ATT_TMA_SLOT);
      P("  const unsigned long long tmq = bm_a.bufs[%d]; /* Q, K, V maps 128 bytes apart */\n", BM_ATT_TMA_SLOT);
      P("  const unsigned int qbar0 = ev0 + %d; /* Q landed, per consumer warpgroup */\n", 8 * NS);
    }
    if (w->dyn) { /* the dynamic scheduler (wa_task_open): its counters, the task ring, its mbarriers */
      P("  static unsigned int bm_tcnt[2]; /* tickets taken, blocks done: zero between runs */\n");
      P("  const unsigned int tf0 = ev0 + %d, te0 = tf0 + %d; /* task ring: written, released; slots at te0 + %d */\n",
        8 * NS + (tma ? 8 * w->nwg * (w->tma == 3 ? 2 : 1) : 0), 8 * WA_TQ, 8 * WA_TQ);
    }
    P("  if (tid == 0) {\n    for (int x = 0; x < %d; x++) {\n", NS);
    P("      bm_att_mbar_init(fk0 + 8 * x, 128u); bm_att_mbar_init(fv0 + 8 * x, 128u);\n");
    P("      bm_att_mbar_init(ek0 + 8 * x, %du); bm_att_mbar_init(ev0 + 8 * x, %du);\n", 4 * w->nwg, 4 * w->nwg);
    P("    }\n");
    if (tma) P("    for (int x = 0; x < %d; x++) bm_att_mbar_init(qbar0 + 8 * x, 1u);\n", w->nwg * (w->tma == 3 ? 2 : 1));
    if (w->dyn)
      P("    for (int x = 0; x < %d; x++) { bm_att_mbar_init(tf0 + 8 * x, 1u); bm_att_mbar_init(te0 + 8 * x, %du); }\n",
        WA_TQ, k->threads);
    P("    bm_att_mbar_fence_init();\n  }\n  BM_SYNC();\n");
    P("  unsigned int it = 0; /* key tiles through the pipeline so far: the stage and phase of the next */\n");
  }
  float scale = n->a.attn_scale != 0.0f ? n->a.attn_scale : 1.0f / sqrtf((float)D);
  c.extra = mi >= 0 || n->a.softcap > 0.0f || !(scale > 0.0f && isfinite(scale));
  P("  const float SC = %s;\n", ck_flt((c.extra ? 1.0f : scale) * 1.44269504088896341f).s);
  P("  const %s nqt = (Sq + %d) / %d;\n", I, BM - 1, BM);
  /* the task's setup (B, head, query tile; key range), emitted once per task loop */
  bm_sb *saved = k->b;
  bm_sb su = {0}, ldk = {0}, ldv = {0};
  k->b = &su;
  emit_tile_range(k, BM, BN, li, ", qw0 = q0 + wg * 64", ws ? w->dyn : 0);
  /* loaders: K tile kt / V tile kt into their stages */
  k->b = &ldk;
  P("      {\n      const %s j0 = kbeg + kt * %d;\n", I, BN);
  P("      const unsigned int skst = sk0 + %s * %d;\n", wa_stage(&c, ws ? "pit" : "kt").s, c.KB);
  wa_copy(k, 1, BN, c.dpa / 64, BN * 128, D, "skst", "kvb + j0 + row", "j0 + row < len", ws ? "(tid & 127)" : "tid",
          ws ? 128 : k->threads, ws ? 2 : 0);
  P("      }\n");
  k->b = &ldv;
  P("      {\n      const %s j0 = kbeg + kt * %d;\n", I, BN);
  P("      const unsigned int svst = sv0 + %s * %d;\n", wa_stage(&c, ws ? "pit" : "kt").s, c.VB);
  wa_copy(k, 2, BN, c.dva / 64, BN * 128, Dv, "svst", "kvb + j0 + row", "j0 + row < len", ws ? "(tid & 127)" : "tid",
          ws ? 128 : k->threads, ws ? 2 : 0);
  P("      }\n");
  k->b = saved;
  const char *lk = ldk.s ? ldk.s : "", *lv = ldv.s ? ldv.s : "", *setup = su.s ? su.s : "";
  if (ws) {
    emit_attention_ws(k, &c, setup, lk, lv, D, Dv, tma);
    bm_sb_free(&su);
    bm_sb_free(&ldk);
    bm_sb_free(&ldv);
    return;
  }
  ck_loop_open(k, "B * Hq * nqt");
  P("%s", setup);
  bm_sb_free(&su);
  /* Q and the first K (and V) tile */
  P("    {\n");
  wa_copy(k, 0, BM, c.dpa / 64, BM * 128, D, "sq0", "qb + q0 + row", "q0 + row < Sq", "tid", k->threads, 0);
  P("    }\n");
  for (int a = 0; a < c.NS - 1; a++) { /* the first NS - 1 groups: K tile a, V tile a - 1 (WA_SERIAL: a) */
    P("    if (%d < ntile) {\n      const %s kt = %d;\n%s    }\n", a, I, a, lk);
    if (w->mode == WA_SERIAL || a > 0)
      P("    if (%d < ntile) {\n      const %s kt = %d;\n%s    }\n", w->mode == WA_SERIAL ? a : a - 1, I,
        w->mode == WA_SERIAL ? a : a - 1, lv);
    P("    bm_cp_commit();\n");
  }
  P("    float s[%d], o[%d], mr[2] = {-BM_INF, -BM_INF}, lr[2] = {0.0f, 0.0f};\n", c.NB * 4, c.NO * 4);
  P("#pragma unroll\n    for (int x = 0; x < %d; x++) s[x] = 0.0f;\n", c.NB * 4);
  P("#pragma unroll\n    for (int x = 0; x < %d; x++) o[x] = 0.0f;\n", c.NO * 4);
  P("    unsigned int pa[%d][4];\n", BN / 16);
  P("    const %s i0 = qw0 + wq * 16 + g8;\n", I);
  P("    const unsigned long long dq = bm_wgmma_desc(sq0 + wg * 8192, true);\n");
  if (w->mode == WA_SERIAL) {
    P("    for (%s kt0 = 0; kt0 < ntile; kt0++) {\n", I);
    wa_step_top(k, &c, lk, lv);
    wa_issue_s(k, &c, "kt0");
    wa_soft(k, &c, "kt0", 0, false, true, NULL, NULL);
    wa_issue_pv(k, &c, "kt0");
    wa_wait_pv(k, &c);
    P("    }\n");
  } else if (w->mode == WA_PIPE) {
    P("    if (ntile > 0) {\n      const %s kt0 = 0;\n", I);
    wa_step_top(k, &c, lk, lv);
    wa_issue_s(k, &c, "kt0");
    wa_soft(k, &c, "kt0", 0, false, false, NULL, NULL);
    P("    }\n");
    P("    for (%s kt0 = 1; kt0 < ntile; kt0++) {\n", I);
    wa_step_top(k, &c, lk, lv);
    wa_issue_s(k, &c, "kt0");
    wa_issue_pv(k, &c, "kt0 - 1");
    wa_soft(k, &c, "kt0", 1, true, true, NULL, NULL);
    P("    }\n");
    P("    if (ntile > 0) { /* the last tile's P V (its V was loaded in an earlier step) */\n");
    P("      bm_cp_wait<0>();\n      bm_fence_proxy_async();\n      BM_SYNC();\n");
    wa_issue_pv(k, &c, "ntile - 1");
    wa_wait_pv(k, &c);
    P("    }\n");
  }
  bm_sb_free(&ldk);
  bm_sb_free(&ldv);
  P("    bm_cp_wait<0>();\n    BM_SYNC(); /* the next task reuses the shared memory */\n");
  wa_store(k, &c, Dv);
  ck_loop_close(k);
}

/* ------------------------------------------------------------------ decode */

/* Flash-decoding for short query lengths (Sq <= 16) over long key ranges:
 * a block of 4 warps takes one (batch, kv head, row group, split): the
 * RB query rows of the heads sharing the kv head (GQA: the K/V rows are read
 * once for all of them), and the split's share of the key range, in tiles of
 * 32 keys staged in shared memory as f32 (f32/f16/bf16 rows of whole 16-byte
 * chunks: 16-byte loads into registers one tile ahead, else element loads).
 * Scores: a lane per key, a warp per query row; P V: a thread per output
 * column. About 512 blocks at batch 1 (splits of at least 64 keys). Each block writes its partial
 * (acc, m, l) per row to a scratch array in global memory (a static device
 * array of the kernel, sized for the symbols' maxima); the last block of a
 * (batch, kv head, row group) to finish (an atomic counter, reset by that
 * block for the next run) combines the splits and stores. The split count is
 * sized for the cache's maximum, but kv_len is data: the splits past the live
 * key span (nact of them hold keys; at least one, which writes zeros for an
 * empty span) leave at once, before reading q, and the counter waits for the
 * nact live ones only (BM_CUDA_DEC_EMPTY_SPLITS=1 at bmc time: every split
 * writes its partial and counts, the previous kernel). */
typedef struct dec_cfg {
  int rb, nrg, ns, dp4, u, smem;
  int64_t bmax, hkv, dv, parts;
  /* the streaming kernel (emit_attention_decode_stream; fast: chosen): nw warps,
   * unr 16-byte K (and V) loads a lane per step, lk lanes per key row (kpw keys
   * per warp load), pf: the next step's loads issued before this step's math */
  bool fast;
  int nw, unr, lk, kpw, pf, minb, fexp;
  /* rs: the rows' partial scores reduce-scattered over a key's lanes (each
   * lane then owns a few (row, key) scores: mask, exponential and softmax
   * once per pair; dec_rs_*), the probabilities broadcast back for P V */
  bool rs;
  /* tb: the streaming kernel's target blocks per run (its splits per (batch, kv
   * head) at run time: tb / (B Hkv), at most ns); dv4: Dv rounded up to 4,
   * pst = dv4 + 4: a partial row's floats (acc, then m and l at dv4: 16-byte rows) */
  int tb;
  int64_t dv4, pst;
  /* cl: the streaming kernel's thread-block cluster (sm_90a images; 0, 1:
   * none): the cl consecutive splits of a cluster merge their partials through
   * distributed shared memory into one (dec_cluster_merge); ns a multiple of cl */
  int cl;
  /* every split writes its partial and counts, empty or not (BM_CUDA_DEC_EMPTY_SPLITS=1 at
   * bmc time: the kernel before the empty splits left at once) */
  bool all_splits;
  /* mink: the streaming kernel's fewest keys a split (a multiple of its block step; 0: none):
   * a short live span runs on fewer, longer splits (the rest leave at once) */
  int mink;
  /* the streaming kernel's publication and combine (dec_finish): pub, the partial published by
   * one thread's release atomic after a block barrier (and the last block's acquire by the same
   * atomic) instead of every thread's __threadfence; oc (dec_knob_get o<N>): 0 the two-phase
   * combine, 3 with the acc prefetched before the weights' phase (else as 1), 1 / 2 in one phase
   * (each thread loads (m, l) and acc of a chunk of 32 / 16 splits at once, rescales online) */
  bool pub;
  int oc; /* 2: chunks of at most 16 splits */
} dec_cfg;

enum { DEC_T = 128, DEC_KT = 32, DEC_OLD_UNROLL = 1 };
/* the multiprocessors the streaming kernel's grid is sized for (an H100 SXM) */
enum { DEC_SMS = 132 };

/* The streaming decode kernel's configuration, BM_CUDA_ATTN_DEC at compile
 * time: "old" (the tiled kernel above for every node), else letters with
 * numbers: u<loads a lane per step; default 4, 2 above 4 rows> w<warps>
 * m<blocks per multiprocessor for the register bound; default by the rows:
 * 4 warps x 4 blocks (128 registers) up to 2 rows, x 2 above (3 before the prefetch at 3-4 rows)>
 * v<waves: the target blocks per run are v x 132 multiprocessors x m; 1>
 * b<target blocks (instead of v)> p<0|1: prefetch; default 1 up to 4 rows (p0m3: the
 * 4-row default before)>
 * e<0|1: the softmax's exponentials by __expf (ex2.approx; the default) or
 * expf> r<0|1: the reduce-scatter of the scores (dec_rs_*; default 1 where it
 * applies: 2, 4 or 8 rows, D >= 16; r0 is the streaming kernel before it)
 * c<0|2|4|8: the splits merged in thread-block clusters of that many blocks
 * (sm_90a, dec_cluster_merge; default 0, the global partials of every split:
 * the clustered launch measured 3-30% slower on the H100, docs/cuda.md)
 * k<fewest keys a split, rounded up to the block step; 0: none>
 * p2: the loads of the next two steps in flight (prefetch distance 2)
 * a<0|1: the partial published by one thread's release atomic (default 1; a0: every thread's
 * __threadfence and a relaxed atomicAdd, as before)>
 * o<0|1|2|3: the last block's combine (dec_finish): o0 a warp per row loads the splits' (m, l),
 * the weights through shared memory, then every thread its acc (the kernel before); o3 (the
 * default) o0 with each thread's acc of the first splits loaded before the weights' phase, both
 * in flight at once, where a thread has one 4-column chunk (NE = T: LLaMA-3's 4 rows of d128),
 * else o1; o1 in one phase (dec_combine_one: each thread loads the (m, l) and acc of up to 32
 * splits at once and rescales online; LLaMA-3 GQA as slow as o0, MHA 1 row 4% faster); o2: o1 in
 * chunks of at most 16 splits>,
 * e.g. "u2p1v2"; "a0o0" is the kernel before the publication and combine changes (H100,
 * 21:41 UTC: LLaMA-3 GQA decode device time 1k / 8k / 16k / b8 4k 8.9 / 19.1 / 31.3 / 54.4 us
 * with a0o0, 7.6 / 17.8 / 29.2 / 53.5 with the default; docs/cuda.md). */
typedef struct dec_knob {
  bool old;
  int unr, nw, blocks, waves, pf, minb, fexp, rs, cl, mink, pub, oc;
} dec_knob;

static dec_knob dec_knob_get(void) {
  dec_knob kb = {false, 0, 4, 0, 1, -1, 0, 1, 1, 0, 0, 1, 3};
  const char *e = getenv("BM_CUDA_ATTN_DEC");
  if (!e || !*e) return kb;
  if (strcmp(e, "old") == 0) {
    kb.old = true;
    return kb;
  }
  for (const char *p = e; *p;) {
    char c = *p++;
    int v = (int)strtol(p, (char **)&p, 10);
    if (c == 'u' && (v == 1 || v == 2 || v == 4 || v == 8)) kb.unr = v;
    if (c == 'w' && (v == 2 || v == 4 || v == 8)) kb.nw = v;
    if (c == 'b' && v >= 32 && v <= 8192) kb.blocks = v;
    if (c == 'v' && v >= 1 && v <= 16) kb.waves = v;
    if (c == 'e' && (v == 0 || v == 1)) kb.fexp = v;
    if (c == 'p' && (v == 0 || v == 1 || v == 2)) kb.pf = v;
    if (c == 'm' && v >= 1 && v <= 8) kb.minb = v;
    if (c == 'r' && (v == 0 || v == 1)) kb.rs = v;
    if (c == 'c' && (v == 0 || v == 1 || v == 2 || v == 4 || v == 8)) kb.cl = v;
    if (c == 'k' && v >= 0 && v <= 65536) kb.mink = v;
    if (c == 'a' && (v == 0 || v == 1)) kb.pub = v;
    if (c == 'o' && v >= 0 && v <= 3) kb.oc = v;
  }
  return kb;
}

/* tcores: the target's tensor-core level (clusters at 2: sm_90a) */
static bool dec_attn_cfg(const bm_graph *g, const bm_node *n, int tcores, dec_cfg *c) {
  const bm_node *q = n->in[0], *kk = n->in[1], *v = n->in[2];
  if (!bm_dim_is_static(q->shape[1]) || !bm_dim_is_static(kk->shape[1])) return false;
  int64_t Hq = q->shape[1].add, Hkv = kk->shape[1].add, D = q->shape[3].add, Dv = v->shape[3].add;
  int64_t sq = ck_dim_max(g, q->shape[2]), sk = ck_dim_max(g, kk->shape[2]);
  if (Hkv < 1 || Hq % Hkv || sq < 1 || sq > 16 || D < 1 || Dv < 1 || D > 256 || Dv > 256) return false;
  int64_t R = Hq / Hkv * sq;
  if (R > 64) return false;
  c->rb = (int)(R < 16 ? R : 16);
  c->nrg = (int)((R + c->rb - 1) / c->rb);
  /* the streaming kernel: f16/bf16 K and V rows of D = Dv elements that are
   * 1-32 lanes of 16 bytes (D 8..256, a power of two), at most 8 rows */
  const dec_knob kb = dec_knob_get();
  const bool kv16 = (kk->dtype == BM_DTYPE_F16 || kk->dtype == BM_DTYPE_BF16) &&
                    (v->dtype == BM_DTYPE_F16 || v->dtype == BM_DTYPE_BF16);
  c->fast = !kb.old && kv16 && D == Dv && D % 8 == 0 && 32 % (D / 8) == 0 && R <= 8;
  c->cl = 1;
  c->mink = 0;
  c->pub = c->fast && kb.pub;
  c->oc = c->fast ? kb.oc : 0;
  c->nw = kb.nw;
  c->fexp = kb.fexp;
  /* the next step's loads issued ahead (prefetch) up to 4 rows; 4 blocks a multiprocessor
   * up to 2 rows, 2 above (at 3-4 rows the prefetch needs the registers: at 3 blocks it spilled;
   * LLaMA-3's GQA at 8k / 16k keys 20.5 / 32.5-32.8 us vs 22.5-22.8 / 34.6-34.7 without it at 3
   * blocks, batch 8 56.4-56.9 vs 57.6-58.1, 1k 9.2 vs 8.9-9.3: H100, two runs, 20:25 UTC) */
  c->pf = kb.pf >= 0 ? kb.pf : R <= 4;
  c->unr = kb.unr ? kb.unr : R <= 4 ? 4 : 2;
  c->minb = kb.minb ? kb.minb : (R <= 2 ? 16 : 8) / c->nw;
  if (c->minb < 1) c->minb = 1;
  if (c->pf == 2 && c->minb * c->nw > 8) c->pf = 1; /* two steps spill at the 128-register bound */
  c->tb = kb.blocks ? kb.blocks : kb.waves * DEC_SMS * c->minb;
  c->lk = (int)(D / 8), c->kpw = 32 / c->lk;
  /* the reduce-scatter: a power-of-two count of (row, key) scores a lane
   * group step (rows 2, 4 or 8) over at least 2 lanes a key */
  c->rs = c->fast && kb.rs && (R == 2 || R == 4 || R == 8) && c->lk >= 2;
  if (c->fast) {
    /* splits: tb blocks at batch 1 (fewer per (batch, kv head) at run time
     * with more of them), each split at least one block step of keys; the
     * combine's weights of at most 256 splits */
    const int step = c->nw * c->kpw * c->unr;
    c->ns = (int)((c->tb + Hkv - 1) / Hkv);
    if (c->ns > (sk + step - 1) / step) c->ns = (int)((sk + step - 1) / step);
    if (c->ns > 256) c->ns = 256;
    /* clusters: whole clusters of splits (empty splits past the keys) */
    c->cl = tcores >= 2 && kb.cl > 1 && c->ns >= kb.cl ? kb.cl : 1;
    c->ns = (c->ns + c->cl - 1) / c->cl * c->cl;
    c->mink = (kb.mink + step - 1) / step * step;
  } else {
    /* splits: about 512 blocks at batch 1, each split at least 64 keys */
    c->ns = (int)((512 + Hkv * c->nrg - 1) / (Hkv * c->nrg));
    if (c->ns > (sk + 63) / 64) c->ns = (int)((sk + 63) / 64);
    if (c->ns > 64) c->ns = 64;
  }
  if (c->ns < 1) c->ns = 1;
  c->dp4 = (int)((D + 3) / 4 * 4);
  c->u = (int)((Dv + DEC_T - 1) / DEC_T);
  c->dv = Dv;
  const char *ae = getenv("BM_CUDA_DEC_EMPTY_SPLITS");
  c->all_splits = ae && *ae && strcmp(ae, "0") != 0;
  c->dv4 = (Dv + 3) / 4 * 4;
  c->pst = c->dv4 + 4;
  c->hkv = Hkv;
  c->bmax = ck_dim_max(g, q->shape[0]);
  if (c->bmax < 1) return false;
  c->smem = 4 * (DEC_KT * (c->dp4 + 4) + DEC_KT * (int)Dv + c->rb * c->dp4 + c->rb * DEC_KT + c->rb);
  /* the partials' scratch: at most 64 MiB (fewer splits when bigger) */
  for (;;) {
    c->parts = c->bmax * Hkv * c->nrg * c->ns * c->rb * c->pst;
    if (c->parts * 4 <= (64ll << 20) || c->ns == 1) break;
    c->ns = (c->ns + 1) / 2;
  }
  if (c->cl > 1 && c->ns % c->cl) c->cl = 1;
  return c->smem <= 200 * 1024 && c->parts * 4 <= (64ll << 20);
}

/* The decode kernel's 16-byte loads: f32/f16/bf16 rows that are whole
 * 16-byte chunks (else it loads element by element). */
static int dec_es(bm_dtype t) { return t == BM_DTYPE_F32 ? 4 : t == BM_DTYPE_F16 || t == BM_DTYPE_BF16 ? 2 : 0; }
static bool dec_vec_ok(bm_dtype t, int64_t w) { return dec_es(t) && (w * dec_es(t)) % 16 == 0; }
/* chunks of a tile per thread */
static int dec_nl(bm_dtype t, int64_t w) {
  int ch = (int)(DEC_KT * w * dec_es(t) / 16);
  return (ch + DEC_T - 1) / DEC_T;
}
/* arr[x] <- chunk tid + x T of the tile of keys jn.. (zeros past c1) */
static void dec_vec_load(ck *k, int buf, bm_dtype t, int64_t w, const char *arr) {
  int ck_ = (int)(w * dec_es(t) / 16), nl = dec_nl(t, w);
  P("#pragma unroll\n      for (int x = 0; x < %d; x++) {\n", nl);
  P("        const int e = tid + x * %d, jj = e / %d, c = e %% %d;\n", DEC_T, ck_, ck_);
  P("        const %s j = jn + jj;\n", k->I);
  P("        %s[x] = make_uint4(0u, 0u, 0u, 0u);\n", arr);
  P("        if (e < %d && j < c1) %s[x] = *(const uint4 *)(bm_buf(%d) + ((bm_i64)(kvb + j) * %lld + c * 16));\n",
    DEC_KT * ck_, arr, buf, (long long)(w * dec_es(t)));
  P("      }\n");
}
/* the row stride of ks (floats): the head dim rounded up to 4, plus 4 (lane
 * per key float4 reads are then free of bank conflicts) */
#define DEC_KS(k) ((int)(((k)->n->in[0]->shape[3].add + 3) / 4 * 4 + 4))
/* arr -> ks or vs (f32 rows) */
static void dec_vec_store(ck *k, bm_dtype t, int64_t w, const char *arr, bool keys) {
  int es = dec_es(t), ve = 16 / es, ck_ = (int)(w * es / 16), nl = dec_nl(t, w);
  P("#pragma unroll\n      for (int x = 0; x < %d; x++) {\n", nl);
  P("        const int e = tid + x * %d, jj = e / %d, c = e %% %d;\n", DEC_T, ck_, ck_);
  P("        if (e < %d) {\n", DEC_KT * ck_);
  P("          float f[%d];\n", ve);
  P("#pragma unroll\n          for (int y = 0; y < %d; y++) {\n", ve);
  if (t == BM_DTYPE_F32)
    P("            f[y] = __uint_as_float(bm_u4_word(%s[x], y));\n", arr);
  else if (t == BM_DTYPE_F16)
    P("            f[y] = bm_h2f((unsigned short)(bm_u4_word(%s[x], y >> 1) >> ((y & 1) * 16)));\n", arr);
  else
    P("            const unsigned int wd = bm_u4_word(%s[x], y >> 1);\n"
      "            f[y] = __uint_as_float((y & 1) ? wd & 0xffff0000u : wd << 16);\n", arr);
  P("          }\n");
  P("          float *dst = %s;\n", keys ? ck_strf("ks + jj * %d + c * %d", DEC_KS(k), ve).s
                                         : ck_strf("vs + jj * %lld + c * %d", (long long)w, ve).s);
  P("#pragma unroll\n          for (int y = 0; y < %d; y += 4) *(float4 *)(dst + y) = make_float4(f[y], f[y + 1], f[y + 2], f[y + 3]);\n",
    ve);
  P("        }\n      }\n");
}

/* The decode kernels' task grid (batch, kv head, row group x split), their
 * shared and static arrays (the combine's weights, the partials and the
 * counters), the sizes B, Hq, Sq, Hkv, Sk, G, R, warp and lane, and the
 * loop over the tasks. */
static void dec_open(ck *k, const dec_cfg *c, int T) {
  const bm_node *q = k->n->in[0], *kk = k->n->in[1];
  const char *I = k->I;
  const int NS = c->ns, NRG = c->nrg, RB = c->rb;
  bm_dim dims[3] = {q->shape[0], kk->shape[1], bm_dim_c((int64_t)NRG * NS)};
  int64_t divs[3] = {1, 1, 1};
  k->tasks = ck_task_grid(k->g, 3, dims, divs);
  str B = ck_dimx(k, q->shape[0]), Hq = ck_dimx(k, q->shape[1]), Sq = ck_dimx(k, q->shape[2]),
      Hkv = ck_dimx(k, kk->shape[1]), Sk = ck_dimx(k, kk->shape[2]);
  P("  __shared__ int last_;\n");
  if (c->oc) /* the one-phase combine (o3: where the acc prefetch does not apply) */
    P("  __shared__ float cmx[%d], csm[%d]; /* the combine's (m, l) per split group */\n", T, T);
  if (c->oc == 0 || c->oc == 3)
    P("  __shared__ float cw[%d], cL[%d]; /* the combine's split weights and row sums */\n", NS * RB, RB);
  P("  __shared__ __align__(16) float cred[%d]; /* the combine's sums per split group */\n", 4 * T);
  P("  static __align__(16) float bm_part[%lld]; /* (B, Hkv, row groups, splits, rows, pst): acc, m, l */\n",
    (long long)c->parts);
  P("  static unsigned int bm_cnt[%lld]; /* blocks done per (B, Hkv, row group) */\n",
    (long long)(c->bmax * c->hkv * NRG));
  P("  const %s B = %s, Hq = %s, Sq = %s, Hkv = %s, Sk = %s, G = Hq / Hkv, R = G * Sq;\n", I, B.s, Hq.s, Sq.s,
    Hkv.s, Sk.s);
  P("  const int warp = tid >> 5, lane = tid & 31;\n");
  ck_loop_open(k, ck_strf("B * Hkv * %d", NRG * NS).s);
}

/* The task of a decode block: t -> split sp, row group rg, (batch, kv head)
 * bh = (b, hk); declares len/off, the rows r0.. (nr of them), the live key
 * span [kbeg, kend) (kv_len, causal and window limits) cut into splits of
 * `chunk` keys (a multiple of `unit`) for the nsr splits of this run (an
 * expression; splits past it leave at once), this split's keys [c0, c1),
 * nact (the splits that hold keys) and nlive (the blocks the counter waits
 * for); an empty split leaves (continue) unless c->all_splits. Ends with a
 * barrier (the block's shared memory is free for this task). With clusters
 * (c->cl > 1; sm_90a images, when the run has at least cl splits: ucl) the
 * split count is a multiple of cl (nsr rounded down) and whole clusters run
 * or leave: nlb, nlive rounded up to cl, blocks run and count (the empty
 * splits among them write an empty partial). */
static void dec_split_range(ck *k, const dec_cfg *c, int unit, int li, const char *nsr) {
  const bool all_splits = c->all_splits;
  const bm_node *n = k->n;
  const char *I = k->I;
  const int NS = c->ns, NRG = c->nrg, RB = c->rb;
  P("    const %s sp = t %% %d, rest = t / %d, rg = rest %% %d, bh = rest / %d, hk = bh %% Hkv, b = bh / Hkv;\n", I,
    NS, NS, NRG, NRG);
  const int CL = c->cl;
  if (CL > 1) {
    P("    const %s nsr0 = %s;\n", I, nsr);
    P("#if defined(__CUDA_ARCH_FEAT_SM90_ALL)\n");
    P("    const bool ucl = nsr0 >= %d; /* whole clusters of splits, merged in the cluster */\n", CL);
    P("#else\n    const bool ucl = false;\n#endif\n");
    P("    const %s nsr = ucl ? nsr0 / %d * %d : nsr0; /* the splits of this run */\n", I, CL, CL);
  } else {
    P("    const %s nsr = %s; /* the splits of this run */\n", I, nsr);
  }
  P("    if (sp >= nsr) continue;\n");
  emit_len(k, li);
  P("    const %s r0 = rg * %d, nr = R - r0 < %d ? R - r0 : %d;\n", I, RB, RB, RB);
  P("    %s kend = len, kbeg = 0;\n", I);
  if (n->a.causal) P("    if (Sq - 1 + off + 1 < kend) kend = Sq - 1 + off + 1;\n");
  if (n->a.window > 0) {
    P("    kbeg = off - %d + 1;\n", n->a.window);
    P("    if (kbeg < 0) kbeg = 0;\n");
  }
  P("    const %s span = kend > kbeg ? kend - kbeg : 0, chunk%s = ((span + nsr - 1) / nsr + %d) / %d * %d;\n", I,
    c->mink > 0 ? "0" : "", unit - 1, unit, unit);
  if (c->mink > 0) /* fewer, longer splits over a short span (the splits past nact leave) */
    P("    const %s chunk = chunk0 > %d ? chunk0 : %d;\n", I, c->mink, c->mink);
  P("    const %s c0 = kbeg + sp * chunk, c1 = c0 + chunk < kend ? c0 + chunk : kend;\n", I);
  /* the splits that hold keys (at least one: it writes zeros for an empty span) */
  P("    const int nact = chunk > 0 ? (int)((span + chunk - 1) / chunk) : 0, nlive = %s;\n",
    all_splits ? "(int)nsr" : "nact > 0 ? nact : 1");
  if (CL > 1) P("    const int nlb = ucl ? (nlive + %d) / %d * %d : nlive; /* the blocks that run */\n", CL - 1, CL, CL);
  if (!all_splits)
    P("    if (sp >= %s) continue; /* an empty split (the whole block): nothing to write */\n", CL > 1 ? "nlb" : "nlive");
  P("    BM_SYNC();\n");
}

/* The output of a combine's chunk (VW columns cc.. of row rr) from its sums o[] and the row
 * sum L (an expression), through the node's epilogue. */
static void dec_store_out(ck *k, const dec_cfg *c, int VW, const char *L) {
  const char *I = k->I;
  P("          {\n");
  P("            const %s r = r0 + rr, h = hk * G + r / Sq, i = r %% Sq;\n", I);
  P("            const float Lr = %s;\n", L);
  P("#pragma unroll\n            for (int x = 0; x < %d; x++) {\n", VW);
  P("              const %s oi = ((b * Hq + h) * Sq + i) * %lld + cc * %d + x;\n", I, (long long)c->dv, VW);
  P("              float v = Lr > 0.0f ? o[x] / Lr : 0.0f;\n");
  ck_emit_epilogue(k, "v", "oi");
  ck_store(k, "oi", "v");
  P("            }\n          }\n");
}

/* The splits whose loads a combine thread has in flight at once (6 registers a split in one
 * phase, 4 with o3's acc prefetch; pre: the latter): 32 at the bound of 255 registers a thread
 * (one chunk of LLaMA-3's 32-33 splits at batch 1), except one phase with the prefetch of two
 * steps (p2: it spilled), o2 and o3's one-phase fallback (rows of several chunks a thread): 16;
 * 8 at 128 registers. */
static int dec_combine_ch(const dec_cfg *c, int T, bool pre) {
  const int regs = 65536 / (c->minb * T);
  if (regs >= 255 && (pre || (c->pf < 2 && c->oc < 2))) return 32;
  return regs >= 168 ? 16 : 8;
}

/* The last block's combine in one phase (dec_cfg.oc; 4-column chunks): thread e0 = (group g,
 * row rr, chunk cc) takes the chunks of CH splits g, g + NG, ...: loads the CH splits' (m, l)
 * and acc at once (all in flight), then the chunk's maximum, the rescale of its running sums
 * and the weighted sum (an online softmax over the chunks). Groups (rows with fewer chunks
 * than threads) merge through shared cred / cmx / csm. */
static void dec_combine_one(ck *k, const dec_cfg *c, int T) {
  const int RB = c->rb, NC = (int)(c->dv / 4), NE = RB * NC, NG = NE >= T ? 1 : T / NE;
  const long long PST = (long long)c->pst, DV4 = (long long)c->dv4;
  const int CH = dec_combine_ch(c, T, false);
  P("      for (int e0 = tid; e0 < %d; e0 += %d) {\n", NE * NG, T);
  P("        const int e = e0 %% %d, g = e0 / %d, rr = e / %d, cc = e %% %d;\n", NE, NE, NC, NC);
  P("        float o[4] = {0.0f, 0.0f, 0.0f, 0.0f}, M = -BM_INF, L = 0.0f;\n");
  P("        if (rr < nr) {\n");
  P("          for (int s0 = g * %d; s0 < ncb; s0 += %d) {\n", CH, NG * CH);
  P("            float2 ml[%d];\n            float4 a[%d];\n", CH, CH);
  P("#pragma unroll\n            for (int u = 0; u < %d; u++) {\n", CH);
  P("              const int s2 = s0 + u;\n");
  P("              const float *ps = pb + (s2 * %d + rr) * %lld;\n", RB, PST);
  P("              ml[u] = s2 < ncb ? __ldcg((const float2 *)(ps + %lld)) : make_float2(-BM_INF, 0.0f);\n", DV4);
  P("              a[u] = s2 < ncb ? __ldcg((const float4 *)ps + cc) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);\n");
  P("            }\n");
  P("            float Mn = M;\n");
  P("#pragma unroll\n            for (int u = 0; u < %d; u++) Mn = fmaxf(Mn, ml[u].x);\n", CH);
  P("            const float f = M == -BM_INF ? 0.0f : expf(M - Mn);\n");
  P("            L *= f;\n");
  P("#pragma unroll\n            for (int x = 0; x < 4; x++) o[x] *= f;\n");
  P("#pragma unroll\n            for (int u = 0; u < %d; u++) {\n", CH);
  P("              const float w = ml[u].x == -BM_INF ? 0.0f : expf(ml[u].x - Mn);\n");
  P("              L += w * ml[u].y;\n");
  P("              o[0] += w * a[u].x;\n              o[1] += w * a[u].y;\n              o[2] += w * a[u].z;\n"
    "              o[3] += w * a[u].w;\n");
  P("            }\n            M = Mn;\n          }\n");
  if (NG == 1) {
    dec_store_out(k, c, 4, "L");
    P("        }\n      }\n");
  } else {
    P("        }\n");
    P("#pragma unroll\n        for (int x = 0; x < 4; x++) cred[e0 * 4 + x] = o[x];\n");
    P("        cmx[e0] = M;\n        csm[e0] = L;\n");
    P("      }\n");
    P("      BM_SYNC();\n");
    P("      for (int e = tid; e < %d; e += %d) {\n", NE, T);
    P("        const int rr = e / %d, cc = e %% %d;\n", NC, NC);
    P("        float o[4] = {0.0f, 0.0f, 0.0f, 0.0f}, M = -BM_INF, L = 0.0f;\n");
    P("#pragma unroll\n        for (int g = 0; g < %d; g++) M = fmaxf(M, cmx[g * %d + e]);\n", NG, NE);
    P("#pragma unroll\n        for (int g = 0; g < %d; g++) {\n", NG);
    P("          const float mg = cmx[g * %d + e], w = mg == -BM_INF ? 0.0f : expf(mg - M);\n", NE);
    P("          L += w * csm[g * %d + e];\n", NE);
    P("#pragma unroll\n          for (int x = 0; x < 4; x++) o[x] += w * cred[(g * %d + e) * 4 + x];\n", NE);
    P("        }\n");
    P("        if (rr < nr)\n");
    dec_store_out(k, c, 4, "L");
    P("      }\n");
  }
  P("    }\n");
}

/* After a block wrote its partial (acc, m, l of its rows) to bm_part: the
 * counter of its (batch, kv head, row group); the last of the nlive blocks
 * resets it for the next run and combines the nact splits' partials with
 * every load of a phase in flight at once: a warp per row loads the splits'
 * (m, l), finds the maximum M and each split's weight w = exp(m - M) (into
 * shared cw) and the row's L = sum w l (cL); then each thread sums w acc
 * over a share of the splits for 4 columns (16-byte loads; groups of splits
 * when the rows have fewer 4-column chunks than the block threads, summed
 * through shared cred) and applies the epilogue to O / L. T threads; the
 * split loop unrolled `unroll` times (loads in flight; 0: the compiler's
 * choice, which keeps the tiled kernel's registers as they were). ncnt: the
 * blocks the counter waits for (nlive), ncomb: the partials to combine (nact;
 * with clusters both are per cluster, see dec_cluster_merge). The streaming
 * kernel's c->pub: the counter bumped by thread 0's release-acquire atomic after
 * a barrier (no __threadfence); c->oc: 3 (o3) each thread's acc loads issued
 * before the weights' phase (a thread a chunk: NE = T), else dec_combine_one. */
static void dec_finish(ck *k, const dec_cfg *c, int T, int unroll, const char *ncnt, const char *ncomb) {
  const int NS = c->ns, NRG = c->nrg, RB = c->rb, NW = T / 32, NSL = (NS + 31) / 32;
  const long long Dv = (long long)c->dv, PST = (long long)c->pst, DV4 = (long long)c->dv4;
  const int VW = Dv % 4 == 0 ? 4 : 1, NC = (int)(Dv / VW), NE = RB * NC, NG = NE >= T ? 1 : T / NE;
  if (c->pub) {
    /* the block's stores, ordered before thread 0's release by the barrier (cumulativity), and
     * the acquire of the last block's thread 0 ordered before its threads' loads by the next */
    P("    BM_SYNC();\n");
    P("    if (tid == 0) {\n");
    P("      unsigned int done;\n");
    P("      asm volatile(\"atom.acq_rel.gpu.global.add.u32 %%0, [%%1], 1;\" : \"=r\"(done) : \"l\"(&bm_cnt[bh * %d + rg]) : "
      "\"memory\");\n", NRG);
  } else {
    P("    __threadfence();\n    BM_SYNC();\n");
    P("    if (tid == 0) {\n");
    P("      const unsigned int done = atomicAdd(&bm_cnt[bh * %d + rg], 1u);\n", NRG);
  }
  P("      last_ = done == (unsigned int)(%s) - 1u;\n", ncnt);
  P("      if (last_) bm_cnt[bh * %d + rg] = 0u; /* for the next run */\n", NRG);
  P("    }\n");
  P("    BM_SYNC();\n");
  P("    if (last_) {\n");
  if (!c->pub) P("      __threadfence();\n");
  P("      const int ncb = %s; /* the partials */\n", ncomb);
  P("      const float *pb = bm_part + (bm_i64)(bh * %d + rg) * %d * %lld;\n", NRG, NS, RB * PST);
  /* o3: a thread a (row, 4 columns) (NE = T): its acc of the first CH splits loaded before the
   * weights' phase, so both loads are in flight at once */
  const bool pre = c->oc == 3 && NE == T;
  const int CH = dec_combine_ch(c, T, true);
  if (c->oc && !pre) { /* the streaming kernel: Dv a multiple of 8 */
    dec_combine_one(k, c, T);
    return;
  }
  if (pre) {
    P("      const int rp = tid / %d, cp = tid %% %d; /* this thread's row and 4-column chunk */\n", NC, NC);
    P("      float4 ap[%d];\n", CH);
    P("#pragma unroll\n      for (int u = 0; u < %d; u++)\n", CH);
    P("        ap[u] = rp < nr && u < ncb ? __ldcg((const float4 *)(pb + (u * %d + rp) * %lld) + cp) : make_float4(0.0f, "
      "0.0f, 0.0f, 0.0f);\n", RB, PST);
  }
  /* only the splits that held keys: a short cache (kv_len 136 of 4096 slots) fills a few */
  P("      for (int rr = warp; rr < nr; rr += %d) {\n", NW);
  P("        float2 ml[%d];\n        float M = -BM_INF, L = 0.0f;\n", NSL);
  P("#pragma unroll\n        for (int y = 0; y < %d; y++) {\n", NSL);
  P("          const int s2 = lane + 32 * y;\n");
  P("          ml[y] = s2 < ncb ? __ldcg((const float2 *)(pb + (s2 * %d + rr) * %lld + %lld)) : make_float2(-BM_INF, "
    "0.0f);\n", RB, PST, DV4);
  P("          M = fmaxf(M, ml[y].x);\n        }\n");
  P("        M = bm_warp_max(M);\n");
  P("#pragma unroll\n        for (int y = 0; y < %d; y++) {\n", NSL);
  P("          const int s2 = lane + 32 * y;\n");
  P("          const float w = ml[y].x == -BM_INF ? 0.0f : expf(ml[y].x - M);\n");
  P("          if (s2 < ncb) cw[s2 * %d + rr] = w;\n", RB);
  P("          L += w * ml[y].y;\n        }\n");
  P("        L = bm_warp_sum(L);\n");
  P("        if (lane == 0) cL[rr] = L;\n      }\n");
  P("      BM_SYNC();\n");
  if (pre) {
    P("      if (rp < nr) {\n");
    P("        const int rr = rp, cc = cp;\n");
    P("        float o[4] = {0.0f, 0.0f, 0.0f, 0.0f};\n");
    P("#pragma unroll\n        for (int u = 0; u < %d; u++) {\n", CH);
    P("          const float w = u < ncb ? cw[u * %d + rr] : 0.0f;\n", RB);
    P("          o[0] += w * ap[u].x;\n          o[1] += w * ap[u].y;\n          o[2] += w * ap[u].z;\n"
      "          o[3] += w * ap[u].w;\n        }\n");
    P("        for (int s2 = %d; s2 < ncb; s2++) { /* past the prefetched splits */\n", CH);
    P("          const float w = cw[s2 * %d + rr];\n", RB);
    P("          const float4 a = __ldcg((const float4 *)(pb + (s2 * %d + rr) * %lld) + cc);\n", RB, PST);
    P("          o[0] += w * a.x;\n          o[1] += w * a.y;\n          o[2] += w * a.z;\n          o[3] += w * a.w;\n");
    P("        }\n");
    dec_store_out(k, c, 4, "cL[rr]");
    P("      }\n    }\n");
    return;
  }
  P("      for (int e0 = tid; e0 < %d; e0 += %d) {\n", NE * NG, T);
  P("        const int e = e0 %% %d, g = e0 / %d, rr = e / %d, cc = e %% %d;\n", NE, NE, NC, NC);
  P("        float o[%d];\n", VW);
  P("#pragma unroll\n        for (int x = 0; x < %d; x++) o[x] = 0.0f;\n", VW);
  P("        if (rr < nr) {\n");
  if (unroll > 0) P("#pragma unroll %d\n", unroll);
  P("          for (int s2 = g; s2 < ncb; s2 += %d) {\n", NG);
  P("            const float w = cw[s2 * %d + rr];\n", RB);
  if (VW == 4) {
    P("            const float4 a = __ldcg((const float4 *)(pb + (s2 * %d + rr) * %lld) + cc);\n", RB, PST);
    P("            o[0] += w * a.x;\n            o[1] += w * a.y;\n            o[2] += w * a.z;\n            o[3] += w * a.w;\n");
  } else {
    P("            o[0] += w * __ldcg(pb + (s2 * %d + rr) * %lld + cc);\n", RB, PST);
  }
  P("          }\n");
  if (NG == 1) {
    dec_store_out(k, c, VW, "cL[rr]");
    P("        }\n      }\n");
  } else {
    P("        }\n");
    P("#pragma unroll\n        for (int x = 0; x < %d; x++) cred[e0 * %d + x] = o[x];\n", VW, VW);
    P("      }\n");
    P("      BM_SYNC();\n");
    P("      for (int e = tid; e < %d; e += %d) {\n", NE, T);
    P("        const int rr = e / %d, cc = e %% %d;\n", NC, NC);
    P("        float o[%d];\n", VW);
    P("#pragma unroll\n        for (int x = 0; x < %d; x++) {\n", VW);
    P("          o[x] = 0.0f;\n");
    P("#pragma unroll\n          for (int g = 0; g < %d; g++) o[x] += cred[(g * %d + e) * %d + x];\n", NG, NE, VW);
    P("        }\n");
    P("        if (rr < nr)\n");
    dec_store_out(k, c, VW, "cL[rr]");
    P("      }\n");
  }
  P("    }\n");
}

static bm_status emit_attention_decode(ck *k, const dec_cfg *c, int mi, int li) {
  const bm_node *n = k->n, *q = n->in[0], *kk = n->in[1], *v = n->in[2];
  const char *I = k->I;
  int64_t D = q->shape[3].add, Dv = v->shape[3].add;
  int RB = c->rb, NRG = c->nrg, NS = c->ns, DP4 = c->dp4, KT = DEC_KT, U = c->u, RPW = (RB + 3) / 4;
  k->threads = DEC_T;
  k->smem = c->smem;
  P("  extern __shared__ __align__(128) unsigned char bm_dsm[];\n");
  P("  float *ks = (float *)bm_dsm, *vs = ks + %d, *qs = vs + %d, *ps = qs + %d, *rsc = ps + %d;\n",
    KT * DEC_KS(k), KT * (int)Dv, RB * DP4, RB * KT);
  dec_open(k, c, DEC_T);
  dec_split_range(k, c, KT, li, ck_strf("%d", NS).s);
  /* the query rows: row r of the group is head hk * G + r / Sq, position r % Sq */
  str lq = ck_ld(k, 0, q->dtype, ck_strf("((b * Hq + hk * G + r / Sq) * Sq + r %% Sq) * %lld + d", (long long)D));
  P("    for (int e = tid; e < %d; e += %d) {\n", RB * DP4, DEC_T);
  P("      const int rr = e / %d, d = e %% %d;\n", DP4, DP4);
  P("      const %s r = r0 + rr;\n", I);
  P("      qs[e] = rr < nr && d < %lld ? %s : 0.0f;\n", (long long)D, lq.s);
  P("    }\n");
  P("    float mrow[%d], lrow[%d], acc[%d][%d];\n", RPW, RPW, RB, U);
  P("#pragma unroll\n    for (int x = 0; x < %d; x++) { mrow[x] = -BM_INF; lrow[x] = 0.0f; }\n", RPW);
  P("#pragma unroll\n    for (int r = 0; r < %d; r++)\n#pragma unroll\n    for (int u = 0; u < %d; u++) acc[r][u] = 0.0f;\n",
    RB, U);
  P("    const %s kvb = (b * Hkv + hk) * Sk;\n", I);
  bool vec = dec_vec_ok(kk->dtype, D) && dec_vec_ok(v->dtype, Dv);
  if (vec) { /* 16-byte loads into registers, one tile ahead */
    P("    uint4 kr[%d], vr[%d];\n", dec_nl(kk->dtype, D), dec_nl(v->dtype, Dv));
    P("    if (c0 < c1) {\n      const %s jn = c0;\n", I);
    dec_vec_load(k, 1, kk->dtype, D, "kr");
    dec_vec_load(k, 2, v->dtype, Dv, "vr");
    P("    }\n");
  }
  P("    for (%s j0 = c0; j0 < c1; j0 += %d) {\n", I, KT);
  P("      BM_SYNC();\n");
  if (vec) {
    dec_vec_store(k, kk->dtype, D, "kr", true);
    dec_vec_store(k, v->dtype, Dv, "vr", false);
    P("      BM_SYNC();\n");
    P("      if (j0 + %d < c1) {\n      const %s jn = j0 + %d;\n", KT, I, KT);
    dec_vec_load(k, 1, kk->dtype, D, "kr");
    dec_vec_load(k, 2, v->dtype, Dv, "vr");
    P("      }\n");
  } else {
    str lk = ck_ld(k, 1, kk->dtype, ck_strf("(kvb + j) * %lld + d", (long long)D));
    str lv = ck_ld(k, 2, v->dtype, ck_strf("(kvb + j) * %lld + d", (long long)Dv));
    P("#pragma unroll 4\n      for (int e = tid; e < %d; e += %d) {\n", KT * DP4, DEC_T);
    P("        const int jj = e / %d, d = e %% %d;\n        const %s j = j0 + jj;\n", DP4, DP4, I);
    P("        ks[jj * %d + d] = j < c1 && d < %lld ? %s : 0.0f;\n      }\n", DEC_KS(k), (long long)D, lk.s);
    P("#pragma unroll 4\n      for (int e = tid; e < %d; e += %d) {\n", KT * (int)Dv, DEC_T);
    P("        const int jj = e / %lld, d = e %% %lld;\n        const %s j = j0 + jj;\n", (long long)Dv,
      (long long)Dv, I);
    P("        vs[e] = j < c1 ? %s : 0.0f;\n      }\n", lv.s);
    P("      BM_SYNC();\n");
  }
  /* scores: lane = key, warp w owns rows w, w + 4, ... */
  P("      float sc[%d];\n", RPW);
  P("#pragma unroll\n      for (int x = 0; x < %d; x++) sc[x] = 0.0f;\n", RPW);
  P("      for (int d = 0; d < %d; d += 4) {\n", DP4);
  P("        const float4 k4 = *(const float4 *)&ks[lane * %d + d];\n", DEC_KS(k));
  P("        const float k0 = k4.x, k1 = k4.y, k2 = k4.z, k3 = k4.w;\n");
  P("#pragma unroll\n        for (int x = 0; x < %d; x++) {\n", RPW);
  P("          const int rr = warp + 4 * x;\n");
  P("          if (rr < %d) {\n", RB);
  P("            const float4 q4 = *(const float4 *)&qs[rr * %d + d];\n", DP4);
  P("            sc[x] += q4.x * k0 + q4.y * k1 + q4.z * k2 + q4.w * k3;\n");
  P("          }\n        }\n      }\n");
  P("#pragma unroll\n      for (int x = 0; x < %d; x++) {\n", RPW);
  P("        const int rr = warp + 4 * x;\n");
  P("        if (rr < %d) {\n", RB);
  P("          const %s r = r0 + rr, h = hk * G + r / Sq, i = r %% Sq, j = j0 + lane;\n", I);
  P("          (void)h;\n");
  emit_key_ok(k, "          ");
  P("          ok = ok && rr < nr && j < c1;\n");
  P("          float y = sc[x];\n");
  emit_score_fix(k, "y", "          ", mi);
  P("          y = ok ? y : -BM_INF;\n");
  P("          const float mnew = fmaxf(mrow[x], bm_warp_max(y)), mu = mnew == -BM_INF ? 0.0f : mnew;\n");
  P("          const float p = ok ? expf(y - mu) : 0.0f, corr = expf(mrow[x] - mu);\n");
  P("          lrow[x] = lrow[x] * corr + bm_warp_sum(p);\n");
  P("          mrow[x] = mnew;\n");
  P("          ps[rr * %d + lane] = p;\n", KT);
  P("          if (lane == 0) rsc[rr] = corr;\n");
  P("        }\n      }\n");
  P("      BM_SYNC();\n");
  /* O = O * corr + P V: thread = output column */
  P("#pragma unroll\n      for (int r = 0; r < %d; r++) {\n", RB);
  P("        const float cr = rsc[r];\n");
  P("#pragma unroll\n        for (int u = 0; u < %d; u++) acc[r][u] *= cr;\n      }\n", U);
  P("      for (int jj = 0; jj < %d; jj += 4) {\n", KT);
  P("#pragma unroll\n        for (int u = 0; u < %d; u++) {\n", U);
  P("          const int dd = tid + %d * u;\n", DEC_T);
  P("          if (dd < %lld) {\n", (long long)Dv);
  P("            const float v0 = vs[jj * %lld + dd], v1 = vs[(jj + 1) * %lld + dd], v2 = vs[(jj + 2) * %lld + dd], "
    "v3 = vs[(jj + 3) * %lld + dd];\n", (long long)Dv, (long long)Dv, (long long)Dv, (long long)Dv);
  P("#pragma unroll\n            for (int r = 0; r < %d; r++) {\n", RB);
  P("              const float4 p4 = *(const float4 *)&ps[r * %d + jj];\n", KT);
  P("              acc[r][u] += p4.x * v0 + p4.y * v1 + p4.z * v2 + p4.w * v3;\n");
  P("            }\n          }\n        }\n      }\n");
  P("    }\n");
  /* the partials of this split */
  P("    float *pp = bm_part + (bm_i64)((bh * %d + rg) * %d + sp) * %lld;\n", NRG, NS, (long long)RB * c->pst);
  P("#pragma unroll\n    for (int x = 0; x < %d; x++) {\n", RPW);
  P("      const int rr = warp + 4 * x;\n");
  P("      if (rr < %d && lane == 0) { pp[rr * %lld + %lld] = mrow[x]; pp[rr * %lld + %lld] = lrow[x]; }\n", RB,
    (long long)c->pst, (long long)c->dv4, (long long)c->pst, (long long)c->dv4 + 1);
  P("    }\n");
  P("#pragma unroll\n    for (int r = 0; r < %d; r++)\n#pragma unroll\n    for (int u = 0; u < %d; u++) {\n", RB, U);
  P("      const int dd = tid + %d * u;\n", DEC_T);
  P("      if (dd < %lld) pp[r * %lld + dd] = acc[r][u];\n", (long long)Dv, (long long)c->pst);
  P("    }\n");
  dec_finish(k, c, DEC_T, DEC_OLD_UNROLL, "nlive", "nact");
  ck_loop_close(k);
  return NULL;
}

/* The reduce-scatter of the streaming kernel (dec_cfg.rs): a lane group (the
 * lk = 2^L lanes of a key) holds N = rows x unr partial scores a lane (its 8
 * columns' dot products; index e = rr unr + u). Level l (xor offset lk >>
 * (l + 1)) keeps the lower or the upper half of the lane's remaining values
 * by its lane bit and adds the partner's, so after ml = min(L, log2 N) levels
 * a lane owns no = N >> ml whole scores, e = ob + t (ob = (kc >> lsh) no; the
 * low lsh = L - ml lane bits, if any, hold copies, summed as before). A lane
 * then owns nro rows' ko keys each: the mask, the scale, the row maximum (an
 * xor max over the sh lanes of its row), the exponentials and the row sum run
 * once per (row, key); the probabilities and each row's correction go back to
 * every lane of the group by shuffles (from the owner with lane bits 0) for
 * P V. mo / lo: the owned rows' running max (equal over the row's lanes) and
 * the lane's share of the sum. */
typedef struct dec_rs {
  int L, N, ml, no, lsh, ko, nro, sh;
} dec_rs;

static int dec_log2(int x) {
  int l = 0;
  while ((1 << l) < x) l++;
  return l;
}

static dec_rs dec_rs_get(const dec_cfg *c) {
  dec_rs r;
  r.L = dec_log2(c->lk);
  r.N = c->rb * c->unr;
  r.ml = r.L < dec_log2(r.N) ? r.L : dec_log2(r.N);
  r.no = r.N >> r.ml;
  r.lsh = r.L - r.ml;
  r.ko = r.no < c->unr ? r.no : c->unr;
  r.nro = r.no / r.ko;
  r.sh = c->unr / r.ko;
  return r;
}

/* the owner lane (in the warp) of score e of this lane's key group */
static str dec_rs_src(const dec_cfg *c, const dec_rs *r, int e) {
  return ck_strf("kg * %d + %d", c->lk, (e / r->no) << r->lsh);
}

/* before the key loop: the owned rows' coordinates and softmax state */
static void dec_rs_open(ck *k, const dec_cfg *c) {
  const dec_rs r = dec_rs_get(c);
  const char *I = k->I;
  P("    const int ob = (kc >> %d) * %d, ub = ob %% %d; /* the lane's first owned score, its key */\n", r.lsh, r.no,
    c->unr);
  P("    float mo[%d], lo[%d];\n    %s oi[%d], oh[%d]; /* the owned rows' positions (past nr: -1), heads */\n", r.nro,
    r.nro, I, r.nro, r.nro);
  P("#pragma unroll\n    for (int q = 0; q < %d; q++) {\n", r.nro);
  P("      const %s rro = ob / %d + q, r = r0 + rro;\n", I, c->unr);
  P("      oi[q] = rro < nr ? r %% Sq : -1;\n      oh[q] = hk * G + r / Sq;\n");
  P("      mo[q] = -BM_INF;\n      lo[q] = 0.0f;\n    }\n");
}

/* a step: the partial scores s[rr][u] -> each row's probabilities pb[rr][u]
 * and correction cr[rr] in every lane */
static void dec_rs_step(ck *k, const dec_cfg *c, int mi) {
  const dec_rs r = dec_rs_get(c);
  const char *I = k->I;
  const int RB = c->rb, UNR = c->unr, KPW = c->kpw;
  P("      float sv[%d];\n", r.N);
  P("#pragma unroll\n      for (int e = 0; e < %d; e++) sv[e] = s[e / %d][e %% %d];\n", r.N, UNR, UNR);
  for (int l = 0; l < r.ml; l++) {
    const int o = c->lk >> (l + 1), h = r.N >> (l + 1);
    P("      {\n        const bool up = (kc & %d) != 0;\n", o);
    P("#pragma unroll\n        for (int e = 0; e < %d; e++) {\n", h);
    P("          const float snd = up ? sv[e] : sv[e + %d];\n", h);
    P("          sv[e] = (up ? sv[e + %d] : sv[e]) + BM_SHFL_XOR(snd, %d);\n        }\n      }\n", h, o);
  }
  for (int o = (1 << r.lsh) >> 1; o >= 1; o >>= 1)
    P("#pragma unroll\n      for (int e = 0; e < %d; e++) sv[e] += BM_SHFL_XOR(sv[e], %d);\n", r.no, o);
  const char *ex = c->fexp ? "__expf" : "expf";
  P("      float po[%d], co[%d];\n", r.no, r.nro);
  P("#pragma unroll\n      for (int q = 0; q < %d; q++) {\n", r.nro);
  P("        float mx = mo[q];\n");
  P("#pragma unroll\n        for (int t = 0; t < %d; t++) {\n", r.ko);
  P("          const %s i = oi[q], h = oh[q], j = j0 + (ub + t) * %d + kg;\n", I, KPW);
  P("          (void)h;\n");
  emit_key_ok(k, "          ");
  P("          ok = ok && i >= 0 && j < c1;\n");
  P("          float y = sv[q * %d + t];\n", r.ko);
  emit_score_fix(k, "y", "          ", mi);
  P("          sv[q * %d + t] = ok ? y : -BM_INF;\n", r.ko);
  P("          mx = fmaxf(mx, sv[q * %d + t]);\n        }\n", r.ko);
  for (int x = 1; x < r.sh; x <<= 1) P("        mx = fmaxf(mx, BM_SHFL_XOR(mx, %d));\n", x << r.lsh);
  P("        const float mu = mx == -BM_INF ? 0.0f : mx;\n");
  P("        co[q] = %s(mo[q] - mu);\n        mo[q] = mx;\n        float ps = 0.0f;\n", ex);
  P("#pragma unroll\n        for (int t = 0; t < %d; t++) { po[q * %d + t] = %s(sv[q * %d + t] - mu); ps += po[q * %d + t]; }\n",
    r.ko, r.ko, ex, r.ko, r.ko);
  P("        lo[q] = lo[q] * co[q] + ps;\n      }\n");
  /* back to every lane of the group */
  P("      float pb[%d][%d], cr[%d];\n", RB, UNR, RB);
  for (int rr = 0; rr < RB; rr++) {
    const int e = rr * UNR;
    P("      cr[%d] = BM_SHFL(co[%d], %s);\n", rr, (e % r.no) / r.ko, dec_rs_src(c, &r, e).s);
    for (int u = 0; u < UNR; u++)
      P("      pb[%d][%d] = BM_SHFL(po[%d], %s);\n", rr, u, (e + u) % r.no, dec_rs_src(c, &r, e + u).s);
  }
}

/* after the key loop: each row's (m, l) of the lane group into mr / lr of
 * every lane (the sums of the row's sh lanes) */
static void dec_rs_close(ck *k, const dec_cfg *c) {
  const dec_rs r = dec_rs_get(c);
  P("#pragma unroll\n    for (int q = 0; q < %d; q++) {\n", r.nro);
  for (int x = 1; x < r.sh; x <<= 1) P("      lo[q] += BM_SHFL_XOR(lo[q], %d);\n", x << r.lsh);
  P("    }\n");
  for (int rr = 0; rr < c->rb; rr++) {
    const int e = rr * c->unr;
    str src = dec_rs_src(c, &r, e);
    P("    mr[%d] = BM_SHFL(mo[%d], %s);\n", rr, (e % r.no) / r.ko, src.s);
    P("    lr[%d] = BM_SHFL(lo[%d], %s);\n", rr, (e % r.no) / r.ko, src.s);
  }
}

/* The cluster merge of the streaming kernel (c->cl > 1, the run's ucl): each
 * block of a cluster wrote its partial (the layout of bm_part's rows: acc,
 * then m and l at dv4) to its shared cpart; after a cluster barrier block
 * rank q (its split's rank in the cluster) merges every cl-th T elements of
 * the cl partials, read from the peers' shared memory (mapa), into the
 * cluster's partial in bm_part (index sp / cl), then arrives on the barrier
 * whose wait (dec_cluster_wait, at the task's end) keeps cpart readable until
 * every peer has read it. The counter and the last block's combine
 * (dec_finish) then see one partial per cluster. */
static void dec_cluster_merge(ck *k, const dec_cfg *c, int T) {
  const int CL = c->cl, RB = c->rb, NS = c->ns;
  const long long Dv = (long long)c->dv, PST = (long long)c->pst, DV4 = (long long)c->dv4;
  P("#if defined(__CUDA_ARCH_FEAT_SM90_ALL)\n");
  P("    if (ucl) {\n");
  P("      bm_cluster_sync(); /* the cluster's partials are in its blocks' cpart */\n");
  P("      const unsigned int cb = bm_smem_addr(cpart);\n");
  P("      float *pq = bm_part + (bm_i64)(bh * %d + sp / %d) * %lld;\n", NS, CL, (long long)RB * PST);
  P("      for (int e = (int)(sp %% %d) * %d + tid; e < %lld; e += %d) {\n", CL, T, (long long)RB * Dv, CL * T);
  P("        const int rr = e / %lld, dd = e %% %lld;\n", Dv, Dv);
  P("        float mq[%d], M = -BM_INF, L = 0.0f, O = 0.0f;\n", CL);
  P("#pragma unroll\n        for (int q = 0; q < %d; q++) {\n", CL);
  P("          mq[q] = bm_cluster_ld_f32(cb + 4u * (unsigned int)(rr * %lld + %lld), (unsigned int)q);\n", PST, DV4);
  P("          M = fmaxf(M, mq[q]);\n        }\n");
  P("#pragma unroll\n        for (int q = 0; q < %d; q++) {\n", CL);
  P("          const float f = mq[q] == -BM_INF ? 0.0f : expf(mq[q] - M);\n");
  P("          O += f * bm_cluster_ld_f32(cb + 4u * (unsigned int)(rr * %lld + dd), (unsigned int)q);\n", PST);
  P("          if (dd == 0) L += f * bm_cluster_ld_f32(cb + 4u * (unsigned int)(rr * %lld + %lld), (unsigned int)q);\n",
    PST, DV4 + 1);
  P("        }\n");
  P("        pq[rr * %lld + dd] = O;\n", PST);
  P("        if (dd == 0) { pq[rr * %lld + %lld] = M; pq[rr * %lld + %lld] = L; }\n", PST, DV4, PST, DV4 + 1);
  P("      }\n");
  P("      bm_cluster_arrive(); /* done reading the peers' cpart (the wait: at the task's end) */\n");
  P("    }\n");
  P("#endif\n");
}

/* the end of a task with the cluster merge: the peers have read cpart */
static void dec_cluster_wait(ck *k, const dec_cfg *c) {
  if (c->cl > 1) P("#if defined(__CUDA_ARCH_FEAT_SM90_ALL)\n    if (ucl) bm_cluster_wait();\n#endif\n");
}

/* The streaming decode kernel (FlashDecoding / FlashInfer's layout) for
 * f16/bf16 K and V with D = Dv a power of two from 8 to 256 and at most 8
 * query rows per kv head: a block of nw warps takes one (batch, kv head,
 * split) as the tiled kernel does (the same task grid, partials, counter and
 * combine: dec_open, dec_split_range, dec_finish), but K and V go straight
 * from global memory into registers, 16 bytes a lane: lk = D / 8 lanes hold
 * one key row (lane c its columns 8c..8c+7), so a warp load covers kpw =
 * 32 / lk keys, and each lane has unr K and unr V loads in flight per step
 * (issued together, before any math). The query rows sit in registers as
 * f32 (8 columns a lane); a score is 8 FMAs and log2(lk) shuffles; each lane
 * group (the lanes of one key) keeps its own online softmax (m, l, and acc
 * for its 8 columns of every row) over the keys it saw, so P V needs no
 * exchange; after the loop the groups of a warp merge by shuffles, the warps
 * through shared memory, into the block's partial. All f32. */
static bm_status emit_attention_decode_stream(ck *k, const dec_cfg *c, int mi, int li) {
  const bm_node *n = k->n, *q = n->in[0], *kk = n->in[1], *v = n->in[2];
  const char *I = k->I;
  const int64_t D = q->shape[3].add, Dv = v->shape[3].add;
  const int RB = c->rb, NS = c->ns, NW = c->nw, UNR = c->unr, LK = c->lk, KPW = c->kpw, T = 32 * c->nw;
  const int step = NW * KPW * UNR; /* keys a block step */
  const char *xk = kk->dtype == BM_DTYPE_F16 ? "bm_x8_f16" : "bm_x8_bf16";
  const char *xv = v->dtype == BM_DTYPE_F16 ? "bm_x8_f16" : "bm_x8_bf16";
  k->threads = T;
  /* the register bound (no spills at 4 warps: up to 2 rows 128 registers, 4 rows 168, 8 rows 255) */
  k->min_blocks = c->minb;
  k->smem = (int)(4 * NW * RB * Dv);
  P("  extern __shared__ __align__(128) unsigned char bm_dsm[];\n");
  P("  float *wacc = (float *)bm_dsm; /* (warps, rows, Dv): the warps' acc */\n");
  P("  __shared__ float wm[%d], wl[%d]; /* the warps' m and l per row */\n", NW * RB, NW * RB);
  if (c->cl > 1) {
    P("  __shared__ __align__(16) float cpart[%lld]; /* the block's partial for the cluster merge */\n",
      (long long)RB * c->pst);
    k->cluster = c->cl;
  }
  dec_open(k, c, T);
  /* this run's splits per (batch, kv head): tb blocks in all, at most ns */
  dec_split_range(k, c, step, li, ck_strf("(%s)%d / (B * Hkv) < 1 ? 1 : (%s)%d / (B * Hkv) > %d ? %d : (%s)%d / (B * Hkv)", I, c->tb, I, c->tb, NS, NS, I, c->tb).s);
  P("    const int kg = lane / %d, kc = lane %% %d; /* the lane's key in a warp load, its 16-byte column */\n", LK, LK);
  /* the query rows (row r: head hk * G + r / Sq, position r % Sq), columns 8 kc.. */
  P("    float qr[%d][8], mr[%d], lr[%d], acc[%d][8];\n", RB, RB, RB, RB);
  P("    int ri[%d]; /* the rows' positions (rows past nr: -1) */\n", RB);
  str lq = ck_ld(k, 0, q->dtype, ck_strf("((b * Hq + h) * Sq + i) * %lld + kc * 8 + x", (long long)D));
  P("#pragma unroll\n    for (int rr = 0; rr < %d; rr++) {\n", RB);
  P("      const %s r = r0 + rr, h = hk * G + r / Sq, i = r %% Sq;\n", I);
  P("      ri[rr] = rr < nr ? (int)i : -1;\n");
  P("#pragma unroll\n      for (int x = 0; x < 8; x++) { qr[rr][x] = rr < nr ? %s : 0.0f; acc[rr][x] = 0.0f; }\n", lq.s);
  P("      mr[rr] = -BM_INF;\n      lr[rr] = 0.0f;\n");
  P("    }\n");
  P("    const %s kvb = (b * Hkv + hk) * Sk;\n", I);
  P("    const unsigned char *kp = bm_buf(1) + (bm_i64)kvb * %lld + kc * 16, *vp = bm_buf(2) + (bm_i64)kvb * %lld + "
    "kc * 16;\n", (long long)D * 2, (long long)Dv * 2);
  /* a step's loads: key j0 + u kpw + kg (past c1: the last key again, masked below) */
  const char *ld = "      for (int u = 0; u < %d; u++) {\n"
                   "        const %s j = %s + u * %d + kg, jc = j < c1 ? j : c1 - 1;\n"
                   "        %s[u] = bm_ld16(kp + (bm_i64)jc * %lld);\n"
                   "        %s[u] = bm_ld16(vp + (bm_i64)jc * %lld);\n"
                   "      }\n";
  P("    %s j0 = c0 + warp * %d;\n", I, KPW * UNR);
  P("    bm_u4 kr[%d], vr[%d];\n", UNR, UNR);
  if (c->pf) {
    P("    bm_u4 kn[%d], vn[%d];\n", UNR, UNR);
    P("    if (j0 < c1) {\n#pragma unroll\n");
    P(ld, UNR, I, "j0", KPW, "kn", (long long)D * 2, "vn", (long long)Dv * 2);
    P("    }\n");
  }
  if (c->pf == 2) { /* the step after it too */
    P("    bm_u4 kn2[%d], vn2[%d];\n", UNR, UNR);
    P("    if (j0 + %d < c1) {\n#pragma unroll\n", step);
    P(ld, UNR, I, ck_strf("(j0 + %d)", step).s, KPW, "kn2", (long long)D * 2, "vn2", (long long)Dv * 2);
    P("    }\n");
  }
  if (c->rs) dec_rs_open(k, c);
  P("    for (; j0 < c1; j0 += %d) {\n", step);
  if (c->pf == 2) {
    P("#pragma unroll\n      for (int u = 0; u < %d; u++) { kr[u] = kn[u]; vr[u] = vn[u]; kn[u] = kn2[u]; vn[u] = vn2[u]; }\n",
      UNR);
    P("      if (j0 + %d < c1) {\n#pragma unroll\n", 2 * step);
    P(ld, UNR, I, ck_strf("(j0 + %d)", 2 * step).s, KPW, "kn2", (long long)D * 2, "vn2", (long long)Dv * 2);
    P("      }\n");
  } else if (c->pf) {
    P("#pragma unroll\n      for (int u = 0; u < %d; u++) { kr[u] = kn[u]; vr[u] = vn[u]; }\n", UNR);
    P("      if (j0 + %d < c1) {\n#pragma unroll\n", step);
    P(ld, UNR, I, ck_strf("(j0 + %d)", step).s, KPW, "kn", (long long)D * 2, "vn", (long long)Dv * 2);
    P("      }\n");
  } else {
    P("#pragma unroll\n");
    P(ld, UNR, I, "j0", KPW, "kr", (long long)D * 2, "vr", (long long)Dv * 2);
  }
  /* scores: this lane's 8 columns, summed over the key's lk lanes */
  P("      float s[%d][%d];\n", RB, UNR);
  P("#pragma unroll\n      for (int u = 0; u < %d; u++) {\n", UNR);
  P("        float kf[8];\n");
  P("#pragma unroll\n        for (int x = 0; x < 8; x++) kf[x] = %s(kr[u], x);\n", xk);
  P("#pragma unroll\n        for (int rr = 0; rr < %d; rr++) {\n", RB);
  P("          float a = qr[rr][0] * kf[0];\n");
  P("#pragma unroll\n          for (int x = 1; x < 8; x++) a = fmaf(qr[rr][x], kf[x], a);\n");
  P("          s[rr][u] = a;\n        }\n      }\n");
  if (LK > 1 && !c->rs) {
    P("#pragma unroll\n      for (int o = 1; o < %d; o <<= 1)\n", LK);
    P("#pragma unroll\n        for (int rr = 0; rr < %d; rr++)\n", RB);
    P("#pragma unroll\n          for (int u = 0; u < %d; u++) s[rr][u] += BM_SHFL_XOR(s[rr][u], o);\n", UNR);
  }
  /* the online softmax of each row over this lane group's unr keys, then P V */
  P("      float vf[%d][8];\n", UNR);
  P("#pragma unroll\n      for (int u = 0; u < %d; u++)\n", UNR);
  P("#pragma unroll\n        for (int x = 0; x < 8; x++) vf[u][x] = %s(vr[u], x);\n", xv);
  if (c->rs) {
    dec_rs_step(k, c, mi);
    P("#pragma unroll\n      for (int rr = 0; rr < %d; rr++)\n", RB);
    P("#pragma unroll\n        for (int x = 0; x < 8; x++) {\n");
    P("          float a = acc[rr][x] * cr[rr];\n");
    P("#pragma unroll\n          for (int u = 0; u < %d; u++) a = fmaf(pb[rr][u], vf[u][x], a);\n", UNR);
    P("          acc[rr][x] = a;\n        }\n");
    P("    }\n");
    dec_rs_close(k, c);
  } else {
    P("#pragma unroll\n      for (int rr = 0; rr < %d; rr++) {\n", RB);
    P("        float mx = mr[rr];\n");
    P("#pragma unroll\n        for (int u = 0; u < %d; u++) {\n", UNR);
    P("          const %s i = ri[rr], j = j0 + u * %d + kg, h = hk * G + (r0 + rr) / Sq;\n", I, KPW);
    P("          (void)h;\n");
    emit_key_ok(k, "          ");
    P("          ok = ok && i >= 0 && j < c1;\n");
    P("          float y = s[rr][u];\n");
    emit_score_fix(k, "y", "          ", mi);
    P("          s[rr][u] = ok ? y : -BM_INF;\n");
    P("          mx = fmaxf(mx, s[rr][u]);\n");
    P("        }\n");
    const char *ex = c->fexp ? "__expf" : "expf";
    P("        const float mu = mx == -BM_INF ? 0.0f : mx, corr = %s(mr[rr] - mu);\n", ex);
    P("        mr[rr] = mx;\n");
    P("        float p[%d], ps = 0.0f;\n", UNR);
    P("#pragma unroll\n        for (int u = 0; u < %d; u++) { p[u] = %s(s[rr][u] - mu); ps += p[u]; }\n", UNR, ex);
    P("        lr[rr] = lr[rr] * corr + ps;\n");
    P("#pragma unroll\n        for (int x = 0; x < 8; x++) {\n");
    P("          float a = acc[rr][x] * corr;\n");
    P("#pragma unroll\n          for (int u = 0; u < %d; u++) a = fmaf(p[u], vf[u][x], a);\n", UNR);
    P("          acc[rr][x] = a;\n        }\n      }\n");
    P("    }\n");
  }
  /* the warp's lane groups merged (shuffles across groups of the same column) */
  if (KPW > 1) {
    P("#pragma unroll\n    for (int rr = 0; rr < %d; rr++) {\n", RB);
    P("      float M = mr[rr];\n");
    P("#pragma unroll\n      for (int o = %d; o < 32; o <<= 1) M = fmaxf(M, BM_SHFL_XOR(M, o));\n", LK);
    P("      const float f = mr[rr] == -BM_INF ? 0.0f : expf(mr[rr] - M);\n");
    P("      mr[rr] = M;\n      lr[rr] *= f;\n");
    P("#pragma unroll\n      for (int x = 0; x < 8; x++) acc[rr][x] *= f;\n");
    P("#pragma unroll\n      for (int o = %d; o < 32; o <<= 1) {\n", LK);
    P("        lr[rr] += BM_SHFL_XOR(lr[rr], o);\n");
    P("#pragma unroll\n        for (int x = 0; x < 8; x++) acc[rr][x] += BM_SHFL_XOR(acc[rr][x], o);\n");
    P("      }\n    }\n");
  }
  P("    if (kg == 0) {\n");
  P("#pragma unroll\n      for (int rr = 0; rr < %d; rr++) {\n", RB);
  P("#pragma unroll\n        for (int x = 0; x < 8; x++) wacc[(warp * %d + rr) * %lld + kc * 8 + x] = acc[rr][x];\n", RB,
    (long long)Dv);
  P("        if (kc == 0) { wm[warp * %d + rr] = mr[rr]; wl[warp * %d + rr] = lr[rr]; }\n", RB, RB);
  P("      }\n    }\n");
  P("    BM_SYNC();\n");
  /* the block's partial: the warps merged, a thread per (row, column) */
  if (c->cl > 1) /* with the cluster merge: into cpart (a generic pointer) */
    P("    float *pp = ucl ? cpart : bm_part + (bm_i64)(bh * %d + sp) * %lld;\n", NS, (long long)RB * c->pst);
  else
    P("    float *pp = bm_part + (bm_i64)(bh * %d + sp) * %lld;\n", NS, (long long)RB * c->pst);
  P("    for (int e = tid; e < %lld; e += %d) {\n", (long long)RB * Dv, T);
  P("      const int rr = e / %lld, dd = e %% %lld;\n", (long long)Dv, (long long)Dv);
  P("      float M = -BM_INF, L = 0.0f, O = 0.0f;\n");
  P("#pragma unroll\n      for (int w = 0; w < %d; w++) M = fmaxf(M, wm[w * %d + rr]);\n", NW, RB);
  P("#pragma unroll\n      for (int w = 0; w < %d; w++) {\n", NW);
  P("        const float mw = wm[w * %d + rr], f = mw == -BM_INF ? 0.0f : expf(mw - M);\n", RB);
  P("        L += f * wl[w * %d + rr];\n", RB);
  P("        O += f * wacc[(w * %d + rr) * %lld + dd];\n", RB, (long long)Dv);
  P("      }\n");
  P("      pp[rr * %lld + dd] = O;\n", (long long)c->pst);
  P("      if (dd == 0) { pp[rr * %lld + %lld] = M; pp[rr * %lld + %lld] = L; }\n", (long long)c->pst,
    (long long)c->dv4, (long long)c->pst, (long long)c->dv4 + 1);
  P("    }\n");
  if (c->cl > 1) {
    dec_cluster_merge(k, c, T);
    dec_finish(k, c, T, 16, "nlb", ck_strf("ucl ? nlb / %d : nact", c->cl).s);
    dec_cluster_wait(k, c);
  } else {
    dec_finish(k, c, T, 16, "nlive", "nact");
  }
  ck_loop_close(k);
  return NULL;
}

/* ------------------------------------------------------------------ dispatch */

bm_status emit_attention(ck *k) {
  const bm_node *n = k->n;
  int at = 3, mi = -1, li = -1;
  if (n->a.attn_flags & BM_ATTN_HAS_MASK) mi = at++;
  if (n->a.attn_flags & BM_ATTN_HAS_KV_LEN) li = at++;
  dec_cfg dc;
  tc_cfg tc;
  /* the decode kernel uses CUDA's atomics and static device arrays */
  bool cuda = k->L && strcmp(k->L->name, "cuda") == 0;
  if (cuda && dec_attn_cfg(k->g, n, k->L->tensor_cores, &dc))
    return dc.fast ? emit_attention_decode_stream(k, &dc, mi, li) : emit_attention_decode(k, &dc, mi, li);
  if (k->L && k->L->tensor_cores && tc_attn_cfg(k->g, n, &tc)) {
    const wa_cfg *w = wa_attn_cfg(k->L, k->g, n);
    if (!w) return emit_attention_tc(k, &tc, mi, li);
    /* sm_90a: wgmma; other archs and the PTX: the FA2 kernel on the same
     * launch (4 warps per warpgroup, the same query tile) */
    tc.nw = 4 * w->nwg;
    tc.bm = 16 * tc.nw;
    tc.smem = tc.bm * tc.sqb + 3 * tc.bn * (tc.sqb + tc.svb);
    P("#if defined(__CUDA_ARCH_FEAT_SM90_ALL)\n");
    const char *idx = k->I;
    k->I = wa_index(k, w, mi);
    emit_attention_wg(k, w, mi, li);
    k->I = idx;
    int smem = k->smem, minb = k->min_blocks, threads = k->threads; /* threads: + the producer warp of WA_WS */
    P("#else\n");
    bm_status st = emit_attention_tc(k, &tc, mi, li);
    P("#endif\n");
    if (smem > k->smem) k->smem = smem;
    k->min_blocks = minb;
    k->threads = threads;
    return st;
  }
  return emit_attention_scalar(k);
}

bool ck_attention_ok(const bm_node *n) {
  const bm_node *q = n->in[0], *v = n->in[2];
  int64_t smem;
  if (!bm_dim_is_static(q->shape[3]) || !bm_dim_is_static(v->shape[3])) return false;
  return attn_kt(q->shape[3].add, v->shape[3].add, &smem) != 0;
}
