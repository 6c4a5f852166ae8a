/* emit_attention.c - ATTENTION in the C-like emitter (flash attention:
 * online softmax over key tiles; causal, GQA, sliding window, soft-capping,
 * masks and per-batch KV lengths). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "emit_internal.h"

/* ------------------------------------------------------------------ attention */

/* Attention tile sizes for head dims D, Dv (static): keys per tile, and the
 * static shared memory; 0 if unsupported. */
static int attn_kt(int64_t D, int64_t Dv, int64_t *smem) {
  if (D < 1 || Dv < 1 || D > 256 || Dv > 256) return 0;
  int kt = (D <= 128 && Dv <= 128) ? 32 : 16;
  *smem = 4 * (8 * D + kt * (D + 1) + kt * Dv);
  return *smem <= 48 * 1024 ? kt : 0;
}

bm_status emit_attention(ck *k) {
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
  P("  BM_SHARED float qs[8][%lld];\n", (long long)D);
  P("  BM_SHARED float ks[%d][%lld];\n", KT, (long long)D + 1);
  P("  BM_SHARED float vs[%d][%lld];\n", KT, (long long)Dv);
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


bool ck_attention_ok(const bm_node *n) {
  const bm_node *q = n->in[0], *v = n->in[2];
  int64_t smem;
  if (!bm_dim_is_static(q->shape[3]) || !bm_dim_is_static(v->shape[3])) return false;
  return attn_kt(q->shape[3].add, v->shape[3].add, &smem) != 0;
}
