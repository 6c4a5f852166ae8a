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
/* causal attention over at most this many keys defaults to the head groups (wa_attn_cfg) */
enum { WA_SHORT_SK = 8192 };
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
 * wgmma layout) by 64 query rows or BN keys. The runtime encodes them per
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
  const char *def = !tma_ok                          ? "w2n128ws"
                    : w3 && causal_short             ? "w3n128tmaqg_pp"
                    : w3                             ? "w3n128tmaqd_pp"
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

/* O / l, the epilogue, the store (the thread's rows i0, i0 + 8) */
static void wa_store(ck *k, const wa_ctx *c, int64_t Dv) {
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
 * the next task's rows issued when this task starts). */
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
      P("        bm_att_mbar_expect_tx(nbar, %du);\n", qbytes);
      for (int a = 0; a < c->dpa / 64; a++)
        P("        bm_att_tma_load2d(nsq + %du, tmq, %d, r2, nbar);\n", a * c->BM * 128, a * 64);
      P("      }\n");
      P("    }\n");
    } else {
      P("    const unsigned int qbar = qbar0 + 8 * wg, qph = qn & 1u;\n");
      P("    if ((tid & 127) == 0) {\n");
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
  P("    float s[%d], o[%d], mr[2] = {-BM_INF, -BM_INF}, lr[2] = {0.0f, 0.0f};\n", c->NB * 4, c->NO * 4);
  P("#pragma unroll\n    for (int x = 0; x < %d; x++) s[x] = 0.0f;\n", c->NB * 4);
  P("#pragma unroll\n    for (int x = 0; x < %d; x++) o[x] = 0.0f;\n", c->NO * 4);
  P("    unsigned int pa[%d][4];\n", c->BN / 16);
  P("    const %s i0 = qw0 + wq * 16 + g8;\n", I);
  P("    const unsigned long long dq = bm_wgmma_desc(sqw, true);\n");
  str relk = ck_strf("      bm_att_mbar_arrive_if(ek0 + 8 * (ci %% %du), lane == 0);\n", NS);
  str relv = ck_strf("      bm_att_mbar_arrive_if(ev0 + 8 * ((ci - 1u) %% %du), lane == 0);\n", NS);
  /* step 0: S only */
  /* three warpgroups (160 registers): the steps' loop kept rolled (kv_len's spilled 4 bytes)
   * and without kv_len the key tile count opaque to the compiler (a count known at compile
   * time, static Sk, unrolled the steps into straight code that spilled 112 bytes; with
   * kv_len the copy spilled 4) */
  const bool opaque = NWG == 3 && !(k->n->a.attn_flags & BM_ATTN_HAS_KV_LEN);
  const char *nt = opaque ? "ntc" : "ntile";
  if (opaque)
    P("    %s ntc = ntile;\n    asm volatile(\"\" : \"+%s\"(ntc));\n", I, strcmp(I, "int") == 0 ? "r" : "l");
  P("    if (%s > 0) {\n      const %s kt0 = 0;\n      const unsigned int ci = it;\n", nt, I);
  P("      bm_att_mbar_wait(fk0 + 8 * (ci %% %du), (ci / %du) & 1u);\n      bm_fence_proxy_async();\n", NS, NS);
  P("%s", turn.s);
  wa_issue_s(k, c, "ci");
  P("%s", hand.s);
  wa_soft(k, c, "kt0", 0, false, false, relk.s, NULL);
  P("    }\n");
  /* steps 1..: S_j and P_{j-1} V_{j-1} */
  if (NWG == 3) P("#pragma unroll 1\n");
  P("    for (%s kt0 = 1; kt0 < %s; kt0++) {\n", I, nt);
  P("      const unsigned int ci = it + (unsigned int)kt0;\n");
  P("      bm_att_mbar_wait(fk0 + 8 * (ci %% %du), (ci / %du) & 1u);\n", NS, NS);
  P("      bm_att_mbar_wait(fv0 + 8 * ((ci - 1u) %% %du), ((ci - 1u) / %du) & 1u);\n", NS, NS);
  P("      bm_fence_proxy_async();\n");
  P("%s", turn.s);
  wa_issue_s(k, c, "ci");
  wa_issue_pv(k, c, "ci - 1u");
  P("%s", hand.s);
  wa_soft(k, c, "kt0", 1, true, true, relk.s, relv.s);
  P("    }\n");
  /* the last tile's P V */
  P("    if (%s > 0) {\n      const unsigned int ci = it + (unsigned int)%s;\n", nt, nt);
  P("      bm_att_mbar_wait(fv0 + 8 * ((ci - 1u) %% %du), ((ci - 1u) / %du) & 1u);\n", NS, NS);
  P("      bm_fence_proxy_async();\n");
  P("%s", turn.s);
  wa_issue_pv(k, c, "ci - 1u");
  P("%s", hand.s);
  wa_wait_pv(k, c);
  P("%s", relv.s);
  P("    }\n");
  P("    it += (unsigned int)%s;\n", nt);
  wa_store(k, c, Dv);
  wa_task_close(k, c);
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
  if (tma) { /* the runtime's tensor-map data (runtime/device_cuda.c, "Tensor maps"), sm_90a only */
    bm_sb *sv = k->b;
    k->b = &k->decl;
    P("#if defined(__CUDA_ARCH_FEAT_SM90_ALL)\n");
    P("extern \"C\" { __constant__ long long BM_KSYM(_tmd)[] = {%ldll, %d, %d, %d, 3, 1, "
      "0, 2, %lld, %lld, 64, 64, 3, 1, 2, %lld, %lld, 64, %d, 3, 2, 2, %lld, %lld, 64, %d, 3}; }\n",
      BM_ATT_TMD_MAGIC, k->smem, w->tma >= 2 ? 1 : 0, BM_ATT_TMA_SLOT, (long long)D, (long long)rq, (long long)D,
      (long long)rk, BN, (long long)Dv, (long long)rv, BN);
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
    P("  const unsigned int fk0 = sv0 + %d, fv0 = fk0 + %d, ek0 = fv0 + %d, ev0 = ek0 + %d;\n", NS * c.VB, 8 * NS,
      8 * NS, 8 * NS);
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
} dec_cfg;

enum { DEC_T = 128, DEC_KT = 32 };

static bool dec_attn_cfg(const bm_graph *g, const bm_node *n, dec_cfg *c) {
  const bm_node *q = n->in[0], *kk = n->in[1], *v = n->in[2];
  if (!bm_dim_is_static(q->shape[1]) || !bm_dim_is_static(kk->shape[1])) return false;
  int64_t Hq = q->shape[1].add, Hkv = kk->shape[1].add, D = q->shape[3].add, Dv = v->shape[3].add;
  int64_t sq = ck_dim_max(g, q->shape[2]), sk = ck_dim_max(g, kk->shape[2]);
  if (Hkv < 1 || Hq % Hkv || sq < 1 || sq > 16 || D < 1 || Dv < 1 || D > 256 || Dv > 256) return false;
  int64_t R = Hq / Hkv * sq;
  if (R > 64) return false;
  c->rb = (int)(R < 16 ? R : 16);
  c->nrg = (int)((R + c->rb - 1) / c->rb);
  /* splits: about 512 blocks at batch 1, each split at least 64 keys */
  c->ns = (int)((512 + Hkv * c->nrg - 1) / (Hkv * c->nrg));
  if (c->ns > (sk + 63) / 64) c->ns = (int)((sk + 63) / 64);
  if (c->ns > 64) c->ns = 64;
  if (c->ns < 1) c->ns = 1;
  c->dp4 = (int)((D + 3) / 4 * 4);
  c->u = (int)((Dv + DEC_T - 1) / DEC_T);
  c->dv = Dv;
  c->hkv = Hkv;
  c->bmax = ck_dim_max(g, q->shape[0]);
  if (c->bmax < 1) return false;
  c->smem = 4 * (DEC_KT * (c->dp4 + 4) + DEC_KT * (int)Dv + c->rb * c->dp4 + c->rb * DEC_KT + c->rb);
  /* the partials' scratch: at most 64 MiB (fewer splits when bigger) */
  for (;;) {
    c->parts = c->bmax * Hkv * c->nrg * c->ns * c->rb * (Dv + 2);
    if (c->parts * 4 <= (64ll << 20) || c->ns == 1) break;
    c->ns = (c->ns + 1) / 2;
  }
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

static bm_status emit_attention_decode(ck *k, const dec_cfg *c, int mi, int li) {
  const bm_node *n = k->n, *q = n->in[0], *kk = n->in[1], *v = n->in[2];
  const char *I = k->I;
  int64_t D = q->shape[3].add, Dv = v->shape[3].add;
  int RB = c->rb, NRG = c->nrg, NS = c->ns, DP4 = c->dp4, KT = DEC_KT, U = c->u, RPW = (RB + 3) / 4;
  const char *ae = getenv("BM_CUDA_DEC_EMPTY_SPLITS");
  const bool all_splits = ae && *ae && strcmp(ae, "0") != 0;
  k->threads = DEC_T;
  k->smem = c->smem;
  bm_dim dims[3] = {q->shape[0], kk->shape[1], bm_dim_c((int64_t)NRG * NS)};
  int64_t divs[3] = {1, 1, 1};
  k->tasks = ck_task_grid(k->g, 3, dims, divs);
  str B = ck_dimx(k, q->shape[0]), Hq = ck_dimx(k, q->shape[1]), Sq = ck_dimx(k, q->shape[2]),
      Hkv = ck_dimx(k, kk->shape[1]), Sk = ck_dimx(k, kk->shape[2]);
  P("  extern __shared__ __align__(128) unsigned char bm_dsm[];\n");
  P("  float *ks = (float *)bm_dsm, *vs = ks + %d, *qs = vs + %d, *ps = qs + %d, *rsc = ps + %d;\n",
    KT * DEC_KS(k), KT * (int)Dv, RB * DP4, RB * KT);
  P("  __shared__ int last_;\n");
  P("  static float bm_part[%lld]; /* (B, Hkv, row groups, splits, rows, Dv + 2): acc, m, l */\n",
    (long long)c->parts);
  P("  static unsigned int bm_cnt[%lld]; /* blocks done per (B, Hkv, row group) */\n",
    (long long)(c->bmax * c->hkv * NRG));
  P("  const %s B = %s, Hq = %s, Sq = %s, Hkv = %s, Sk = %s, G = Hq / Hkv, R = G * Sq;\n", I, B.s, Hq.s, Sq.s,
    Hkv.s, Sk.s);
  P("  const int warp = tid >> 5, lane = tid & 31;\n");
  ck_loop_open(k, ck_strf("B * Hkv * %d", NRG * NS).s);
  P("    const %s sp = t %% %d, rest = t / %d, rg = rest %% %d, bh = rest / %d, hk = bh %% Hkv, b = bh / Hkv;\n", I,
    NS, NS, NRG, NRG);
  emit_len(k, li);
  P("    const %s r0 = rg * %d, nr = R - r0 < %d ? R - r0 : %d;\n", I, RB, RB, RB);
  P("    %s kend = len, kbeg = 0;\n", I);
  if (n->a.causal) P("    if (Sq - 1 + off + 1 < kend) kend = Sq - 1 + off + 1;\n");
  if (n->a.window > 0) {
    P("    kbeg = off - %d + 1;\n", n->a.window);
    P("    if (kbeg < 0) kbeg = 0;\n");
  }
  P("    const %s span = kend > kbeg ? kend - kbeg : 0, chunk = ((span + %d) / %d + %d) / %d * %d;\n", I, NS - 1, NS,
    KT - 1, KT, KT);
  P("    const %s c0 = kbeg + sp * chunk, c1 = c0 + chunk < kend ? c0 + chunk : kend;\n", I);
  /* the splits that hold keys (at least one: it writes zeros for an empty span) */
  P("    const int nact = chunk > 0 ? (int)((span + chunk - 1) / chunk) : 0, nlive = %s;\n",
    all_splits ? ck_strf("%d", NS).s : "nact > 0 ? nact : 1");
  if (!all_splits) P("    if (sp >= nlive) continue; /* an empty split (the whole block): nothing to write */\n");
  P("    BM_SYNC();\n");
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
  P("    float *pp = bm_part + (bm_i64)((bh * %d + rg) * %d + sp) * %lld;\n", NRG, NS, (long long)(RB * (Dv + 2)));
  P("#pragma unroll\n    for (int x = 0; x < %d; x++) {\n", RPW);
  P("      const int rr = warp + 4 * x;\n");
  P("      if (rr < %d && lane == 0) { pp[rr * %lld + %lld] = mrow[x]; pp[rr * %lld + %lld] = lrow[x]; }\n", RB,
    (long long)(Dv + 2), (long long)Dv, (long long)(Dv + 2), (long long)(Dv + 1));
  P("    }\n");
  P("#pragma unroll\n    for (int r = 0; r < %d; r++)\n#pragma unroll\n    for (int u = 0; u < %d; u++) {\n", RB, U);
  P("      const int dd = tid + %d * u;\n", DEC_T);
  P("      if (dd < %lld) pp[r * %lld + dd] = acc[r][u];\n", (long long)Dv, (long long)(Dv + 2));
  P("    }\n");
  P("    __threadfence();\n    BM_SYNC();\n");
  P("    if (tid == 0) {\n");
  P("      const unsigned int done = atomicAdd(&bm_cnt[bh * %d + rg], 1u);\n", NRG);
  P("      last_ = done == (unsigned int)nlive - 1u;\n");
  P("      if (last_) bm_cnt[bh * %d + rg] = 0u; /* for the next run */\n", NRG);
  P("    }\n");
  P("    BM_SYNC();\n");
  P("    if (last_) {\n");
  P("      __threadfence();\n");
  P("      const float *pb = bm_part + (bm_i64)(bh * %d + rg) * %d * %lld;\n", NRG, NS, (long long)(RB * (Dv + 2)));
  /* only the splits that held keys: a short cache (kv_len 136 of 4096 slots) fills a few */
  P("      for (int e = tid; e < %d; e += %d) {\n", RB * U * DEC_T, DEC_T);
  P("        const int rr = e / %d, dd = e %% %d;\n", U * DEC_T, U * DEC_T);
  P("        if (rr < nr && dd < %lld) {\n", (long long)Dv);
  P("          float M = -BM_INF;\n");
  P("          for (int s2 = 0; s2 < nact; s2++) M = fmaxf(M, __ldcg(pb + (s2 * %d + rr) * %lld + %lld));\n", RB,
    (long long)(Dv + 2), (long long)Dv);
  P("          float L = 0.0f, O = 0.0f;\n");
  P("          if (M != -BM_INF)\n");
  P("            for (int s2 = 0; s2 < nact; s2++) {\n");
  P("              const float *ps2 = pb + (s2 * %d + rr) * %lld;\n", RB, (long long)(Dv + 2));
  P("              const float w = expf(__ldcg(ps2 + %lld) - M);\n", (long long)Dv);
  P("              L += w * __ldcg(ps2 + %lld);\n", (long long)(Dv + 1));
  P("              O += w * __ldcg(ps2 + dd);\n");
  P("            }\n");
  P("          const %s r = r0 + rr, h = hk * G + r / Sq, i = r %% Sq;\n", I);
  P("      const %s oi = ((b * Hq + h) * Sq + i) * %lld + dd;\n", I, (long long)Dv);
  P("      float v = L > 0.0f ? O / L : 0.0f;\n");
  ck_emit_epilogue(k, "v", "oi");
  ck_store(k, "oi", "v");
  P("        }\n      }\n    }\n");
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
  if (cuda && dec_attn_cfg(k->g, n, &dc)) return emit_attention_decode(k, &dc, mi, li);
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
