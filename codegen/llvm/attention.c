/* attention.c - LLVM lowering of ATTENTION: a fused flash-attention kernel
 * (tiled Q.K^T, online softmax, P.V) that never materializes Sq x Sk scores.
 *
 * Task space: one task per (batch, query head, block of BQ queries), ordered
 * head-major (t = (b * Hq + h) * nblocks + block). When B and Sq are both
 * symbolic (a task expression has one symbol) a task is a whole head. For
 * one block of queries q0 .. q0+nq-1:
 *
 *   Qs  = scale * q[b, h, q0:q0+nq, :]          f32 scratch (BQ, DQ), zero padded
 *   m   = -inf, l = 0, acc = 0                  per query row
 *   for each key block [kb, kb+BK) of the block's visible range (key blocks
 *   fully hidden by causal/window are never visited):
 *     S   = Qs . K[kb:kb+BK]^T                  (BQ, BK) f32 scratch; vectorized over D
 *     S   = mask(softcap(S)), -inf where causal/window hide a key
 *     m'  = max(m, rowmax S); alpha = exp(m - m'); P = exp(S - m')   vectorized over keys
 *     l   = alpha * l + rowsum P
 *     acc = alpha * acc + P . V[kb:kb+BK]        (BQ, DVA) f32 scratch; vectorized over Dv
 *   out = epilogue(acc / l), 0 where l == 0 (a fully masked row).
 *
 * With kv_len (attn_flags BM_ATTN_HAS_KV_LEN), k and v are caches (Bmax, Hkv,
 * L, D) and row b sees keys [0, min(kv_len[b], L)) with causal offset
 * kv_len[b] - Sq: the visible key range of each block ends there, so decode
 * over a long cache only reads the keys that exist.
 *
 * Register tiles: S is computed RI query rows x JR keys at a time (RI*JR
 * vector accumulators over D, then one combined horizontal reduction per
 * row); P.V is accumulated RI rows x CV vectors of Dv at a time. With Sq
 * static 1 (decode) RI is 1; with Sq symbolic, blocks of fewer than RI
 * queries take a one-row variant, so decode never computes padding rows.
 *
 * Vector widths: <cg->vec x float> when D % vec is 0 or a power of two >= 4
 * (that leftover is one narrow load widened with zeros); otherwise the
 * widest power of two dividing D (at least 4) and the last D % 4 elements
 * element by element. Dv likewise.
 *
 * Splitting Sk across tasks (for decode with few heads) is not done: tasks
 * share no memory but the output, so partial results could not be combined
 * within one kernel.
 */
#include <math.h>
#include <string.h>

#include "cg.h"

enum {
  ATTN_BQ = 32,  /* query rows per task (fewer when Sq is static and smaller) */
  ATTN_BK = 128, /* keys per block */
  ATTN_JR = 4,   /* keys per dot-product register tile */
  ATTN_RI = 4,   /* most query rows per register tile (2 with 16 vector registers) */
  ATTN_CV = 4,   /* Dv vectors per P.V register tile */
};

/* Everything the emitter needs while building one kernel. */
typedef struct attn_ctx {
  bm_cg *cg;
  bm_cg_fn *f;
  bm_node *n;
  LLVMBuilderRef b;

  /* static configuration */
  int64_t hq, hkv, group, d, dv;
  bm_dtype tq, tk, tv, tm, tout;
  float scale, softcap;
  int causal, window;
  int w, nfull_d, tail_d, dq;   /* dot width, full chunks of D, leftover, Qs row length */
  int wv, nfull_v, tail_v, dva; /* same for Dv, acc row length */
  int bq, bk, ri, jr, vk;       /* tile sizes; vk = lanes of the softmax pass */
  bool has_mask, mask_row_contig, has_kv_len;
  bm_dtype tl;                  /* kv_len dtype */

  /* run-time values (i64 unless noted); with kv_len, sk and off are set per
   * block (emit_block) from kv_len[b] */
  LLVMValueRef sq, sk, off, nqb, sk_full; /* sk_full: rows of k/v per head (L) */
  LLVMValueRef q, k, v, mask, kvlen, out;
  LLVMValueRef mstride[4]; /* mask strides for (b, h, i, j); 0 = broadcast */
  LLVMValueRef qs, s, acc, mrow, lrow, arow; /* scratch regions (ptr to f32) */
} attn_ctx;

/* ------------------------------------------------------------------ small IR helpers */

static LLVMValueRef c64(attn_ctx *a, int64_t v) { return bm_cg_i64(a->cg, v); }
static LLVMValueRef add(attn_ctx *a, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildAdd(a->b, x, y, ""); }
static LLVMValueRef sub(attn_ctx *a, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildSub(a->b, x, y, ""); }
static LLVMValueRef mul(attn_ctx *a, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildMul(a->b, x, y, ""); }
static LLVMValueRef addc(attn_ctx *a, LLVMValueRef x, int64_t c) { return add(a, x, c64(a, c)); }
static LLVMValueRef mulc(attn_ctx *a, LLVMValueRef x, int64_t c) { return mul(a, x, c64(a, c)); }
static LLVMValueRef smin(attn_ctx *a, LLVMValueRef x, LLVMValueRef y) { return bm_cg_imin(a->f, x, y); }
static LLVMValueRef smax(attn_ctx *a, LLVMValueRef x, LLVMValueRef y) { return bm_cg_imax(a->f, x, y); }
/* ceil(x / c) for x >= 0 */
static LLVMValueRef ceil_div(attn_ctx *a, LLVMValueRef x, int64_t c) {
  return LLVMBuildSDiv(a->b, addc(a, x, c - 1), c64(a, c), "");
}

static LLVMTypeRef vec_t(attn_ctx *a, int w) { return w == 1 ? a->cg->t_f32 : LLVMVectorType(a->cg->t_f32, (unsigned)w); }
static LLVMValueRef fzero(attn_ctx *a, int w) { return LLVMConstNull(vec_t(a, w)); }
static LLVMValueRef fsplat(attn_ctx *a, float v, int w) { return bm_cg_splat(a->f, bm_cg_f32(a->cg, v), w); }

/* A stack slot in the entry block (SROA turns it into registers). */
static LLVMValueRef entry_alloca(attn_ctx *a, LLVMTypeRef t) { return bm_cg_alloca(a->f, t, "attn"); }
/* <w x i32> with every lane x */
static LLVMValueRef isplat(attn_ctx *a, LLVMValueRef x, int w) {
  LLVMTypeRef t = LLVMVectorType(a->cg->t_i32, (unsigned)w);
  LLVMValueRef v = LLVMBuildInsertElement(a->b, LLVMGetUndef(t), x, bm_cg_i32(a->cg, 0), "");
  return LLVMBuildShuffleVector(a->b, v, LLVMGetUndef(t), LLVMConstNull(t), "");
}
static LLVMValueRef ld(attn_ctx *a, LLVMTypeRef t, LLVMValueRef p) { return LLVMBuildLoad2(a->b, t, p, ""); }
static void st(attn_ctx *a, LLVMValueRef v, LLVMValueRef p) { LLVMBuildStore(a->b, v, p); }

/* f32 scratch: w floats at base[idx] */
static LLVMValueRef ld_f32(attn_ctx *a, LLVMValueRef base, LLVMValueRef idx, int w) {
  return bm_cg_load(a->f, base, BM_DTYPE_F32, idx, w);
}
static void st_f32(attn_ctx *a, LLVMValueRef base, LLVMValueRef idx, LLVMValueRef v, int w) {
  bm_cg_store(a->f, base, BM_DTYPE_F32, idx, v, w);
}

static bool is_pow2(int x) { return x > 0 && (x & (x - 1)) == 0; }

/* Lanes first, first+stride, ... (w of them) of the concatenation of x and y. */
static LLVMValueRef shuffle(attn_ctx *a, LLVMValueRef x, LLVMValueRef y, int w, int first, int stride) {
  LLVMValueRef m[64];
  for (int e = 0; e < w; e++) m[e] = bm_cg_i32(a->cg, first + e * stride);
  return LLVMBuildShuffleVector(a->b, x, y, LLVMConstVector(m, (unsigned)w), "");
}

/* The first n (static, n < w) elements of base[idx...] as a w-lane vector
 * whose other lanes are 0: one narrow vector load when n is a power of two
 * >= 4, else element by element (only for odd head sizes). */
static LLVMValueRef load_tail(attn_ctx *a, LLVMValueRef base, bm_dtype t, LLVMValueRef idx,
                              int w, int n) {
  if (n >= 4 && is_pow2(n)) {
    LLVMValueRef x = bm_cg_load(a->f, base, t, idx, n);
    LLVMValueRef m[64];
    for (int e = 0; e < w; e++) m[e] = bm_cg_i32(a->cg, e < n ? e : n); /* lane n: a zero */
    return LLVMBuildShuffleVector(a->b, x, fzero(a, n), LLVMConstVector(m, (unsigned)w), "");
  }
  LLVMValueRef v = fzero(a, w);
  for (int e = 0; e < n; e++) {
    LLVMValueRef x = bm_cg_load(a->f, base, t, addc(a, idx, e), 1);
    v = LLVMBuildInsertElement(a->b, v, x, bm_cg_i32(a->cg, e), "");
  }
  return v;
}

/* max(x, y) as x86 maxps computes it (no NaN handling: scores are never NaN) */
static LLVMValueRef vmax(attn_ctx *a, LLVMValueRef x, LLVMValueRef y) {
  return LLVMBuildSelect(a->b, LLVMBuildFCmp(a->b, LLVMRealOGT, x, y, ""), x, y, "");
}
static LLVMValueRef hmax(attn_ctx *a, LLVMValueRef x, int w) {
  for (; w > 1; w /= 2) x = vmax(a, shuffle(a, x, x, w / 2, 0, 1), shuffle(a, x, x, w / 2, w / 2, 1));
  return LLVMBuildExtractElement(a->b, x, bm_cg_i32(a->cg, 0), "");
}

/* Chunk c of a row of length len at base[idx]: full vector or zero-padded tail. */
static LLVMValueRef load_chunk(attn_ctx *a, LLVMValueRef base, bm_dtype t, LLVMValueRef row,
                               int c, int w, int nfull, int tail) {
  LLVMValueRef idx = addc(a, row, (int64_t)c * w);
  if (c < nfull) return bm_cg_load(a->f, base, t, idx, w);
  return load_tail(a, base, t, idx, w, tail);
}

/* ------------------------------------------------------------------ phases */

/* Qs[0:nqr, :] = scale * q rows (zero rows past nq, zero columns past D). */
static void emit_load_q(attn_ctx *a, LLVMValueRef qrow0, LLVMValueRef nq, LLVMValueRef nqr) {
  int nch = a->nfull_d + (a->tail_d > 0);
  bm_cg_loop li;
  bm_cg_loop_begin(a->f, &li, c64(a, 0), nq, c64(a, 1));
  {
    LLVMValueRef src = mulc(a, add(a, qrow0, li.iv), a->d);
    LLVMValueRef dst = mulc(a, li.iv, a->dq);
    LLVMValueRef sc = fsplat(a, a->scale, a->w);
    for (int c = 0; c < nch; c++) {
      LLVMValueRef x = load_chunk(a, a->q, a->tq, src, c, a->w, a->nfull_d, a->tail_d);
      st_f32(a, a->qs, addc(a, dst, (int64_t)c * a->w), LLVMBuildFMul(a->b, x, sc, ""), a->w);
    }
  }
  bm_cg_loop_end(a->f, &li);
  bm_cg_loop lz;
  bm_cg_loop_begin(a->f, &lz, nq, nqr, c64(a, 1));
  for (int c = 0; c < nch; c++)
    st_f32(a, a->qs, addc(a, mulc(a, lz.iv, a->dq), (int64_t)c * a->w), fzero(a, a->w), a->w);
  bm_cg_loop_end(a->f, &lz);
}

/* m = -inf, l = 0, acc = 0 for rows [0, nqr). */
static void emit_init_state(attn_ctx *a, LLVMValueRef nqr) {
  bm_cg_loop l;
  bm_cg_loop_begin(a->f, &l, c64(a, 0), nqr, c64(a, 1));
  st_f32(a, a->mrow, l.iv, bm_cg_f32(a->cg, -INFINITY), 1);
  st_f32(a, a->lrow, l.iv, bm_cg_f32(a->cg, 0.f), 1);
  for (int c = 0; c < a->dva / a->wv; c++)
    st_f32(a, a->acc, addc(a, mulc(a, l.iv, a->dva), (int64_t)c * a->wv), fzero(a, a->wv), a->wv);
  bm_cg_loop_end(a->f, &l);
}

/* Horizontal sums of nv vectors of width w (nv, w powers of two, nv <= w)
 * as one nv-lane vector: pairwise even+odd lane additions, which costs far
 * fewer shuffles than nv separate reductions. */
static LLVMValueRef hsum_many(attn_ctx *a, LLVMValueRef *v, int nv, int w) {
  LLVMValueRef t[ATTN_JR];
  for (int i = 0; i < nv; i++) t[i] = v[i];
  for (int n = nv; n > 1; n /= 2) /* after this, lanes hold groups of n/2 vectors' pair sums */
    for (int i = 0; i < n / 2; i++)
      t[i] = LLVMBuildFAdd(a->b, shuffle(a, t[2 * i], t[2 * i + 1], w, 0, 2),
                           shuffle(a, t[2 * i], t[2 * i + 1], w, 1, 2), "");
  LLVMValueRef x = t[0]; /* nv groups of w/nv lanes, in order */
  for (int width = w; width > nv; width /= 2)
    x = LLVMBuildFAdd(a->b, shuffle(a, x, x, width / 2, 0, 2), shuffle(a, x, x, width / 2, 1, 2), "");
  return x;
}

/* S[0:nqr, 0:nk] = Qs . K[kb:kb+nk]^T, in tiles of ri rows x jr keys; keys
 * past the block end are clamped to the last valid key (their scores are
 * masked later). */
static void emit_scores(attn_ctx *a, LLVMValueRef krow0, LLVMValueRef kb, LLVMValueRef hi,
                        LLVMValueRef nk, LLVMValueRef nqr) {
  int ri = a->ri, jr = a->jr, w = a->w;
  int nch = a->nfull_d + (a->tail_d > 0);
  bm_cg_loop li, lj;
  bm_cg_loop_begin(a->f, &li, c64(a, 0), nqr, c64(a, ri));
  bm_cg_loop_begin(a->f, &lj, c64(a, 0), nk, c64(a, jr));
  LLVMValueRef last = addc(a, hi, -1);
  LLVMValueRef krow[ATTN_JR];
  for (int r = 0; r < jr; r++) {
    LLVMValueRef key = smin(a, add(a, kb, addc(a, lj.iv, r)), last);
    krow[r] = mulc(a, add(a, krow0, key), a->d);
  }
  LLVMValueRef accv[ATTN_RI][ATTN_JR];
  for (int i = 0; i < ri; i++)
    for (int r = 0; r < jr; r++) accv[i][r] = fzero(a, w);
  for (int c = 0; c < nch; c++) {
    LLVMValueRef qv[ATTN_RI];
    for (int i = 0; i < ri; i++)
      qv[i] = ld_f32(a, a->qs, addc(a, mulc(a, addc(a, li.iv, i), a->dq), (int64_t)c * w), w);
    for (int r = 0; r < jr; r++) {
      LLVMValueRef kv = load_chunk(a, a->k, a->tk, krow[r], c, w, a->nfull_d, a->tail_d);
      for (int i = 0; i < ri; i++) accv[i][r] = bm_cg_fma(a->f, qv[i], kv, accv[i][r]);
    }
  }
  for (int i = 0; i < ri; i++) {
    LLVMValueRef sidx = add(a, mulc(a, addc(a, li.iv, i), a->bk), lj.iv);
    st_f32(a, a->s, sidx, hsum_many(a, accv[i], jr, w), jr);
  }
  bm_cg_loop_end(a->f, &lj);
  bm_cg_loop_end(a->f, &li);
}

/* Mask values for row qi (clamped), keys kb+j0 .. kb+j0+vk-1 of which `valid`
 * (i64 > 0) are in range. */
static LLVMValueRef emit_mask_load(attn_ctx *a, LLVMValueRef bidx, LLVMValueRef hidx,
                                   LLVMValueRef qi, LLVMValueRef key0, LLVMValueRef valid) {
  int vk = a->vk;
  LLVMValueRef base = add(a, add(a, mul(a, bidx, a->mstride[0]), mul(a, hidx, a->mstride[1])),
                          mul(a, qi, a->mstride[2]));
  if (!a->mask_row_contig) return bm_cg_splat(a->f, bm_cg_load(a->f, a->mask, a->tm, base, 1), vk);
  LLVMValueRef idx = add(a, base, key0);
  LLVMValueRef tmp = entry_alloca(a, vec_t(a, vk));
  LLVMValueRef full = LLVMBuildICmp(a->b, LLVMIntSGE, valid, c64(a, vk), "");
  bm_cg_if c1, c2;
  bm_cg_if_begin(a->f, &c1, full);
  st(a, bm_cg_load(a->f, a->mask, a->tm, idx, vk), tmp);
  bm_cg_if_end(a->f, &c1);
  bm_cg_if_begin(a->f, &c2, LLVMBuildNot(a->b, full, ""));
  st(a, bm_cg_load_partial(a->f, a->mask, a->tm, idx, vk, valid), tmp);
  bm_cg_if_end(a->f, &c2);
  return ld(a, vec_t(a, vk), tmp);
}

/* Online-softmax update of rows [0, nqr) for the key block [kb, kb+nk):
 * transforms S in place into P and records alpha per row. */
static void emit_softmax_update(attn_ctx *a, LLVMValueRef bidx, LLVMValueRef hidx,
                                LLVMValueRef q0, LLVMValueRef kb, LLVMValueRef nk,
                                LLVMValueRef nqr) {
  bm_cg *cg = a->cg;
  int vk = a->vk;
  LLVMTypeRef tv = vec_t(a, vk);
  LLVMValueRef lanes[64];
  for (int e = 0; e < vk; e++) lanes[e] = bm_cg_i32(cg, e);
  LLVMValueRef lane = LLVMConstVector(lanes, (unsigned)vk);
  LLVMValueRef ninf = fsplat(a, -INFINITY, vk);
  LLVMValueRef vmax_p = entry_alloca(a, tv), vsum_p = entry_alloca(a, tv);

  bm_cg_loop li;
  bm_cg_loop_begin(a->f, &li, c64(a, 0), nqr, c64(a, 1));
  LLVMValueRef qi = add(a, q0, li.iv);                       /* query index */
  LLVMValueRef qm = smin(a, qi, addc(a, a->sq, -1));         /* its row in the mask */
  LLVMValueRef diag = sub(a, add(a, qi, a->off), kb);        /* last visible key - kb */
  LLVMValueRef hi = a->causal ? smin(a, nk, addc(a, diag, 1)) : nk; /* keys < hi visible */
  LLVMValueRef lo = a->window > 0 ? sub(a, diag, c64(a, a->window)) : c64(a, -1); /* keys > lo */
  LLVMValueRef srow = mulc(a, li.iv, a->bk);

  /* pass 1: transformed scores and their max */
  st(a, ninf, vmax_p);
  bm_cg_loop lj;
  bm_cg_loop_begin(a->f, &lj, c64(a, 0), nk, c64(a, vk));
  {
    LLVMValueRef sidx = add(a, srow, lj.iv);
    LLVMValueRef x = ld_f32(a, a->s, sidx, vk);
    if (a->softcap > 0) {
      LLVMValueRef cap = fsplat(a, a->softcap, vk), rcap = fsplat(a, 1.f / a->softcap, vk);
      x = LLVMBuildFMul(a->b, cap, bm_cg_unary(a->f, BM_OP_TANH, LLVMBuildFMul(a->b, x, rcap, "")), "");
    }
    if (a->has_mask)
      x = LLVMBuildFAdd(a->b, x, emit_mask_load(a, bidx, hidx, qm, add(a, kb, lj.iv), sub(a, nk, lj.iv)), "");
    /* visible lanes: lo < j0 + lane < hi, clamped to small i32 values */
    LLVMValueRef hl = smax(a, smin(a, sub(a, hi, lj.iv), c64(a, vk)), c64(a, -1));
    LLVMValueRef ll = smax(a, smin(a, sub(a, lo, lj.iv), c64(a, vk)), c64(a, -1));
    hl = LLVMBuildTrunc(a->b, hl, cg->t_i32, "");
    ll = LLVMBuildTrunc(a->b, ll, cg->t_i32, "");
    LLVMValueRef hv = isplat(a, hl, vk), lv = isplat(a, ll, vk);
    LLVMValueRef ok = LLVMBuildAnd(a->b, LLVMBuildICmp(a->b, LLVMIntSLT, lane, hv, ""),
                                   LLVMBuildICmp(a->b, LLVMIntSGT, lane, lv, ""), "");
    x = LLVMBuildSelect(a->b, ok, x, ninf, "");
    st_f32(a, a->s, sidx, x, vk);
    st(a, vmax(a, ld(a, tv, vmax_p), x), vmax_p);
  }
  bm_cg_loop_end(a->f, &lj);

  /* new running max; m_use = 0 while the row has seen nothing (avoids inf - inf) */
  LLVMValueRef m_old = ld_f32(a, a->mrow, li.iv, 1);
  LLVMValueRef m_new = vmax(a, m_old, hmax(a, ld(a, tv, vmax_p), vk));
  LLVMValueRef empty = LLVMBuildFCmp(a->b, LLVMRealOEQ, m_new, bm_cg_f32(cg, -INFINITY), "");
  LLVMValueRef m_use = LLVMBuildSelect(a->b, empty, bm_cg_f32(cg, 0.f), m_new, "");
  LLVMValueRef lim1 = bm_cg_f32(cg, -87.f);
  LLVMValueRef alpha = bm_cg_exp(a->f, bm_cg_fmax(a->f, LLVMBuildFSub(a->b, m_old, m_use, ""), lim1));
  alpha = LLVMBuildSelect(a->b, LLVMBuildFCmp(a->b, LLVMRealOEQ, m_old, bm_cg_f32(cg, -INFINITY), ""),
                          bm_cg_f32(cg, 0.f), alpha, "");

  /* pass 2: P = exp(S - m_use) (exactly 0 where S = -inf), row sum */
  st(a, fzero(a, vk), vsum_p);
  LLVMValueRef mv = bm_cg_splat(a->f, m_use, vk), limv = fsplat(a, -87.f, vk);
  bm_cg_loop lp;
  bm_cg_loop_begin(a->f, &lp, c64(a, 0), nk, c64(a, vk));
  {
    LLVMValueRef sidx = add(a, srow, lp.iv);
    LLVMValueRef x = ld_f32(a, a->s, sidx, vk);
    LLVMValueRef p = bm_cg_exp(a->f, bm_cg_fmax(a->f, LLVMBuildFSub(a->b, x, mv, ""), limv));
    p = LLVMBuildSelect(a->b, LLVMBuildFCmp(a->b, LLVMRealOEQ, x, ninf, ""), fzero(a, vk), p, "");
    st_f32(a, a->s, sidx, p, vk);
    st(a, LLVMBuildFAdd(a->b, ld(a, tv, vsum_p), p, ""), vsum_p);
  }
  bm_cg_loop_end(a->f, &lp);

  LLVMValueRef l_old = ld_f32(a, a->lrow, li.iv, 1);
  LLVMValueRef l_new = bm_cg_fma(a->f, l_old, alpha, bm_cg_hsum(a->f, ld(a, tv, vsum_p)));
  st_f32(a, a->lrow, li.iv, l_new, 1);
  st_f32(a, a->mrow, li.iv, m_new, 1);
  st_f32(a, a->arow, li.iv, alpha, 1);
  bm_cg_loop_end(a->f, &li);
}

/* acc[0:nqr] = alpha * acc + P . V[kb:kb+nk], in tiles of ri rows x CV vectors of Dv. */
static void emit_pv(attn_ctx *a, LLVMValueRef vrow0, LLVMValueRef kb, LLVMValueRef nk,
                    LLVMValueRef nqr) {
  int ri = a->ri, wv = a->wv;
  int nch = a->dva / wv;
  LLVMTypeRef tv = vec_t(a, wv);
  bm_cg_loop li;
  bm_cg_loop_begin(a->f, &li, c64(a, 0), nqr, c64(a, ri));
  for (int c0 = 0; c0 < nch; c0 += ATTN_CV) {
    int ncv = nch - c0 < ATTN_CV ? nch - c0 : ATTN_CV;
    LLVMValueRef accp[ATTN_RI][ATTN_CV], aidx[ATTN_RI][ATTN_CV];
    for (int i = 0; i < ri; i++) {
      LLVMValueRef row = addc(a, li.iv, i);
      LLVMValueRef al = bm_cg_splat(a->f, ld_f32(a, a->arow, row, 1), wv);
      for (int c = 0; c < ncv; c++) {
        aidx[i][c] = addc(a, mulc(a, row, a->dva), (int64_t)(c0 + c) * wv);
        accp[i][c] = entry_alloca(a, tv);
        st(a, LLVMBuildFMul(a->b, ld_f32(a, a->acc, aidx[i][c], wv), al, ""), accp[i][c]);
      }
    }
    bm_cg_loop lj;
    bm_cg_loop_begin(a->f, &lj, c64(a, 0), nk, c64(a, 1));
    {
      LLVMValueRef vrow = mulc(a, add(a, vrow0, add(a, kb, lj.iv)), a->dv);
      LLVMValueRef p[ATTN_RI];
      for (int i = 0; i < ri; i++)
        p[i] = bm_cg_splat(a->f, ld_f32(a, a->s, add(a, mulc(a, addc(a, li.iv, i), a->bk), lj.iv), 1), wv);
      for (int c = 0; c < ncv; c++) {
        LLVMValueRef vv = load_chunk(a, a->v, a->tv, vrow, c0 + c, wv, a->nfull_v, a->tail_v);
        for (int i = 0; i < ri; i++)
          st(a, bm_cg_fma(a->f, p[i], vv, ld(a, tv, accp[i][c])), accp[i][c]);
      }
    }
    bm_cg_loop_end(a->f, &lj);
    for (int i = 0; i < ri; i++)
      for (int c = 0; c < ncv; c++) st_f32(a, a->acc, aidx[i][c], ld(a, tv, accp[i][c]), wv);
  }
  bm_cg_loop_end(a->f, &li);
}

/* out[b, h, q0+i, :] = epilogue(acc[i] / l[i]) for i < nq. */
static void emit_store(attn_ctx *a, LLVMValueRef bidx, LLVMValueRef hidx, LLVMValueRef q0,
                       LLVMValueRef orow0, LLVMValueRef nq) {
  bm_cg *cg = a->cg;
  int wv = a->wv;
  bool epi = a->n->a.prog.n > 0;
  bm_cg_loop li;
  bm_cg_loop_begin(a->f, &li, c64(a, 0), nq, c64(a, 1));
  LLVMValueRef l = ld_f32(a, a->lrow, li.iv, 1);
  LLVMValueRef inv = LLVMBuildFDiv(a->b, bm_cg_f32(cg, 1.f), l, "");
  inv = LLVMBuildSelect(a->b, LLVMBuildFCmp(a->b, LLVMRealOGT, l, bm_cg_f32(cg, 0.f), ""), inv,
                        bm_cg_f32(cg, 0.f), "");
  LLVMValueRef invv = bm_cg_splat(a->f, inv, wv);
  LLVMValueRef dst = mulc(a, add(a, orow0, li.iv), a->dv);
  LLVMValueRef arow = mulc(a, li.iv, a->dva);
  LLVMValueRef coords[4] = {bidx, hidx, add(a, q0, li.iv), NULL};
  for (int c = 0; c < a->nfull_v; c++) {
    LLVMValueRef x = LLVMBuildFMul(a->b, ld_f32(a, a->acc, addc(a, arow, (int64_t)c * wv), wv), invv, "");
    coords[3] = c64(a, (int64_t)c * wv);
    if (epi) x = bm_cg_epilogue(a->f, x, coords, wv);
    bm_cg_store(a->f, a->out, a->tout, addc(a, dst, (int64_t)c * wv), x, wv);
  }
  if (a->tail_v >= 4 && is_pow2(a->tail_v)) { /* leftover as one narrow vector */
    int t = a->tail_v;
    int64_t col = (int64_t)a->nfull_v * wv;
    LLVMValueRef x = LLVMBuildFMul(a->b, ld_f32(a, a->acc, addc(a, arow, col), t),
                                   bm_cg_splat(a->f, inv, t), "");
    coords[3] = c64(a, col);
    if (epi) x = bm_cg_epilogue(a->f, x, coords, t);
    bm_cg_store(a->f, a->out, a->tout, addc(a, dst, col), x, t);
  } else {
    for (int e = 0; e < a->tail_v; e++) { /* Dv % 4 leftovers, one by one */
      int64_t col = (int64_t)a->nfull_v * wv + e;
      LLVMValueRef x = LLVMBuildFMul(a->b, ld_f32(a, a->acc, addc(a, arow, col), 1), inv, "");
      coords[3] = c64(a, col);
      if (epi) x = bm_cg_epilogue(a->f, x, coords, 1);
      bm_cg_store(a->f, a->out, a->tout, addc(a, dst, col), x, 1);
    }
  }
  bm_cg_loop_end(a->f, &li);
}

/* One (batch, head, query block) work item. */
static void emit_block(attn_ctx *a, LLVMValueRef bh, LLVMValueRef qb) {
  LLVMValueRef bidx = LLVMBuildSDiv(a->b, bh, c64(a, a->hq), "");
  LLVMValueRef hidx = LLVMBuildSRem(a->b, bh, c64(a, a->hq), "");
  LLVMValueRef kvh = add(a, mulc(a, bidx, a->hkv), LLVMBuildSDiv(a->b, hidx, c64(a, a->group), ""));
  LLVMValueRef q0 = mulc(a, qb, a->bq);
  LLVMValueRef nq = smin(a, c64(a, a->bq), sub(a, a->sq, q0));
  LLVMValueRef nqr = mulc(a, ceil_div(a, nq, a->ri), a->ri);
  LLVMValueRef qrow0 = add(a, mul(a, bh, a->sq), q0); /* row of (b, h, q0) in q and out */
  LLVMValueRef krow0 = mul(a, kvh, a->sk_full);       /* row of (b, kvh, 0) in k and v */
  if (a->has_kv_len) {
    /* keys [0, kv_len[b]) exist (clamped to [0, L]): key blocks past them are never visited */
    LLVMValueRef len = bm_cg_load_i64(a->f, a->kvlen, a->tl, bidx);
    a->sk = smin(a, smax(a, len, c64(a, 0)), a->sk_full);
    a->off = sub(a, a->sk, a->sq);
  }

  emit_load_q(a, qrow0, nq, nqr);
  emit_init_state(a, nqr);

  /* visible key range of the whole block: [lo, hi) */
  LLVMValueRef hi = a->sk, lo = c64(a, 0);
  if (a->causal) hi = smin(a, hi, add(a, add(a, q0, nq), a->off));
  if (a->window > 0) lo = smax(a, lo, add(a, q0, addc(a, a->off, 1 - (int64_t)a->window)));
  bm_cg_loop lk;
  bm_cg_loop_begin(a->f, &lk, lo, hi, c64(a, a->bk));
  {
    LLVMValueRef kb = lk.iv;
    LLVMValueRef nk = smin(a, c64(a, a->bk), sub(a, hi, kb));
    emit_scores(a, krow0, kb, hi, nk, nqr);
    emit_softmax_update(a, bidx, hidx, q0, kb, nk, nqr);
    emit_pv(a, krow0, kb, nk, nqr);
  }
  bm_cg_loop_end(a->f, &lk);

  emit_store(a, bidx, hidx, q0, qrow0, nq);
}

/* ------------------------------------------------------------------ checks and setup */

static bool is_float_dtype(bm_dtype t) {
  return t == BM_DTYPE_F32 || t == BM_DTYPE_F16 || t == BM_DTYPE_BF16 ||
         t == BM_DTYPE_FP8_E4M3 || t == BM_DTYPE_FP8_E5M2;
}

/* Vector width for a row of len elements: the full width when the leftover
 * is a power of two >= 4 (loaded as one narrow vector), else the widest
 * power of two dividing len (at least 4; a leftover < 4 goes element-wise). */
static int pick_width(int vec, int64_t len) {
  int w = vec < 4 ? 4 : vec;
  int t = (int)(len % w);
  if (t == 0 || (t >= 4 && is_pow2(t))) return w;
  while (w > 4 && len % w) w /= 2;
  return w;
}

static bm_status check_node(bm_node *n, attn_ctx *a) {
  int nb = bm_node_base_nin(n);
  int nflags = !!(n->a.attn_flags & BM_ATTN_HAS_MASK) + !!(n->a.attn_flags & BM_ATTN_HAS_KV_LEN);
  if (n->op != BM_OP_ATTENTION || nb != 3 + nflags)
    return bm_status_make(BM_ERR_INTERNAL, "attention emitter: node %d is %s with %d inputs", n->id,
                          bm_op_name(n->op), nb);
  bool has_mask = (n->a.attn_flags & BM_ATTN_HAS_MASK) != 0;
  bm_node *q = n->in[0], *k = n->in[1], *v = n->in[2];
  if (q->ndim != 4 || k->ndim != 4 || v->ndim != 4 || n->ndim != 4)
    return bm_status_make(BM_ERR_UNSUPPORTED,
                          "cpu attention (node %d): q, k, v must be rank 4, got %d, %d, %d", n->id,
                          q->ndim, k->ndim, v->ndim);
  const bm_dim sdims[4] = {q->shape[1], k->shape[1], q->shape[3], v->shape[3]};
  const char *names[4] = {"Hq", "Hkv", "D", "Dv"};
  for (int i = 0; i < 4; i++)
    if (!bm_dim_is_static(sdims[i]) || sdims[i].add <= 0)
      return bm_status_make(BM_ERR_UNSUPPORTED,
                            "cpu attention (node %d): %s must be static and positive", n->id,
                            names[i]);
  if (!is_float_dtype(q->dtype) || !is_float_dtype(k->dtype) || !is_float_dtype(v->dtype) ||
      !is_float_dtype(n->dtype) || !bm_cg_dtype_storable(n->dtype) ||
      (has_mask && !is_float_dtype(n->in[3]->dtype)))
    return bm_status_make(BM_ERR_UNSUPPORTED,
                          "cpu attention (node %d): dtypes q %s, k %s, v %s, out %s: only "
                          "float dtypes are supported",
                          n->id, bm_dtype_name(q->dtype), bm_dtype_name(k->dtype),
                          bm_dtype_name(v->dtype), bm_dtype_name(n->dtype));
  a->hq = sdims[0].add;
  a->hkv = sdims[1].add;
  a->d = sdims[2].add;
  a->dv = sdims[3].add;
  if (a->hq % a->hkv)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT,
                          "cpu attention (node %d): Hq %lld is not a multiple of Hkv %lld", n->id,
                          (long long)a->hq, (long long)a->hkv);
  if (has_mask) {
    bm_node *m = n->in[3];
    if (m->ndim > 4 || m->ndim < 1)
      return bm_status_make(BM_ERR_UNSUPPORTED, "cpu attention (node %d): mask rank %d", n->id,
                            m->ndim);
  }
  return NULL;
}

bm_status bm_cg_emit_attention(bm_cg *cg, bm_node *n, const char *symbol) {
  attn_ctx a;
  memset(&a, 0, sizeof a);
  BM_RETURN_IF_ERROR(check_node(n, &a));
  bm_node *q = n->in[0], *k = n->in[1], *v = n->in[2];
  a.cg = cg;
  a.n = n;
  a.b = cg->b;
  a.group = a.hq / a.hkv;
  a.tq = q->dtype;
  a.tk = k->dtype;
  a.tv = v->dtype;
  a.tout = n->dtype;
  a.has_mask = (n->a.attn_flags & BM_ATTN_HAS_MASK) != 0;
  a.has_kv_len = (n->a.attn_flags & BM_ATTN_HAS_KV_LEN) != 0;
  a.scale = n->a.attn_scale != 0 ? n->a.attn_scale : (float)(1.0 / sqrt((double)a.d));
  a.softcap = n->a.softcap;
  a.causal = n->a.causal;
  a.window = n->a.window;

  a.w = pick_width(cg->vec, a.d);
  a.nfull_d = (int)(a.d / a.w);
  a.tail_d = (int)(a.d % a.w);
  a.dq = (a.nfull_d + (a.tail_d > 0)) * a.w;
  a.wv = pick_width(cg->vec, a.dv);
  a.nfull_v = (int)(a.dv / a.wv);
  a.tail_v = (int)(a.dv % a.wv);
  a.dva = (a.nfull_v + (a.tail_v > 0)) * a.wv;
  a.vk = cg->vec < 4 ? 4 : cg->vec;
  a.bk = ATTN_BK;
  a.jr = ATTN_JR;
  /* decode-shaped (static Sq == 1): one row per tile, no padding work */
  bm_dim sqd = q->shape[2];
  bool sq_static = bm_dim_is_static(sqd);
  a.ri = (sq_static && sqd.add == 1) ? 1 : cg->vec >= 16 ? ATTN_RI : 2;
  a.bq = ATTN_BQ;
  if (sq_static && sqd.add < a.bq) a.bq = (int)((sqd.add + a.ri - 1) / a.ri * a.ri);
  if (a.bq < a.ri) a.bq = a.ri;

  /* task space: (B * Hq) heads x ceil(Sq / bq) query blocks, one symbol at most */
  bm_dim bd = q->shape[0];
  bool per_block = true; /* false: a task is a whole head (B and Sq both symbolic) */
  if (!sq_static && bm_dim_is_static(bd))
    n->tasks = bm_cg_tasks(sqd, a.bq, bd.add * a.hq);
  else if (sq_static && bm_dim_is_static(bd))
    n->tasks = bm_cg_tasks(bm_dim_c((sqd.add + a.bq - 1) / a.bq * bd.add * a.hq), 1, 1);
  else if (sq_static)
    n->tasks = bm_cg_tasks(bd, 1, a.hq * ((sqd.add + a.bq - 1) / a.bq));
  else {
    n->tasks = bm_cg_tasks(bd, 1, a.hq);
    per_block = false;
  }

  /* scratch: Qs (bq, dq), S (bq, bk), acc (bq, dva), m, l, alpha (bq) */
  uint64_t off_qs = 0;
  uint64_t off_s = off_qs + (uint64_t)a.bq * a.dq * 4;
  uint64_t off_acc = off_s + (uint64_t)a.bq * a.bk * 4;
  uint64_t off_m = off_acc + (uint64_t)a.bq * a.dva * 4;
  uint64_t off_l = off_m + (uint64_t)a.bq * 4;
  uint64_t off_a = off_l + (uint64_t)a.bq * 4;
  n->scratch = (off_a + (uint64_t)a.bq * 4 + 63) / 64 * 64;

  bm_cg_fn f;
  bm_cg_fn_begin(cg, n, symbol, &f);
  a.f = &f;
  a.b = cg->b;
  int nin = n->nin;
  a.q = bm_cg_buf(&f, 0);
  a.k = bm_cg_buf(&f, 1);
  a.v = bm_cg_buf(&f, 2);
  a.out = bm_cg_buf(&f, nin);
  LLVMValueRef sbase = f.scratch;
  LLVMValueRef offs[6] = {c64(&a, (int64_t)off_qs), c64(&a, (int64_t)off_s), c64(&a, (int64_t)off_acc),
                          c64(&a, (int64_t)off_m), c64(&a, (int64_t)off_l), c64(&a, (int64_t)off_a)};
  LLVMValueRef *dst[6] = {&a.qs, &a.s, &a.acc, &a.mrow, &a.lrow, &a.arow};
  for (int i = 0; i < 6; i++) *dst[i] = LLVMBuildGEP2(a.b, cg->t_i8, sbase, &offs[i], 1, "");

  a.sq = bm_cg_dim(&f, sqd);
  a.sk_full = bm_cg_dim(&f, k->shape[2]);
  a.sk = a.sk_full;
  a.off = sub(&a, a.sk, a.sq);
  if (a.has_kv_len) {
    int li = 3 + a.has_mask;
    a.kvlen = bm_cg_buf(&f, li);
    a.tl = n->in[li]->dtype;
  }
  a.nqb = ceil_div(&a, a.sq, a.bq);

  if (a.has_mask) {
    bm_node *m = n->in[3];
    a.mask = bm_cg_buf(&f, 3);
    a.tm = m->dtype;
    bm_dim md[4];
    int pad = 4 - m->ndim;
    for (int i = 0; i < 4; i++) md[i] = i < pad ? bm_dim_c(1) : m->shape[i - pad];
    LLVMValueRef stride = c64(&a, 1);
    for (int i = 3; i >= 0; i--) {
      a.mstride[i] = bm_dim_is_one(md[i]) ? c64(&a, 0) : stride;
      stride = mul(&a, stride, bm_cg_dim(&f, md[i]));
    }
    a.mask_row_contig = !bm_dim_is_one(md[3]);
  }

  bm_cg_loop lt;
  bm_cg_loop_begin(&f, &lt, f.begin, f.end, c64(&a, 1));
  {
    LLVMValueRef bh, qb_lo, qb_hi;
    if (per_block) {
      bh = LLVMBuildSDiv(a.b, lt.iv, a.nqb, "");
      qb_lo = LLVMBuildSRem(a.b, lt.iv, a.nqb, "");
      qb_hi = addc(&a, qb_lo, 1);
    } else {
      bh = lt.iv;
      qb_lo = c64(&a, 0);
      qb_hi = a.nqb;
    }
    bm_cg_loop lq;
    bm_cg_loop_begin(&f, &lq, qb_lo, qb_hi, c64(&a, 1));
    if (a.ri > 1 && !sq_static) {
      /* Sq known only at run time: blocks of fewer than ri queries (decode)
       * take a one-row variant instead of computing padding rows */
      int ri = a.ri;
      LLVMValueRef nq = smin(&a, c64(&a, a.bq), sub(&a, a.sq, mulc(&a, lq.iv, a.bq)));
      LLVMValueRef small = LLVMBuildICmp(a.b, LLVMIntSLT, nq, c64(&a, ri), "");
      bm_cg_if c1, c2;
      bm_cg_if_begin(&f, &c1, small);
      a.ri = 1;
      emit_block(&a, bh, lq.iv);
      bm_cg_if_end(&f, &c1);
      bm_cg_if_begin(&f, &c2, LLVMBuildNot(a.b, small, ""));
      a.ri = ri;
      emit_block(&a, bh, lq.iv);
      bm_cg_if_end(&f, &c2);
    } else {
      emit_block(&a, bh, lq.iv);
    }
    bm_cg_loop_end(&f, &lq);
  }
  bm_cg_loop_end(&f, &lt);
  bm_cg_fn_end(&f);
  return NULL;
}
