/* llm.c - LLVM lowering of the LLM generation ops: KV_WRITE (rows into a
 * state cache, in place), TAKE_ROW (one position per batch entry),
 * TOPK_MASK (the k largest entries of each row), and
 * the two halves of a mixture-of-experts layer that the lower_moe pass makes
 * of MOE: MOE_UP (gated expert hidden states) and MOE_DOWN (gate-weighted
 * down projections). Experts whose gate is exactly 0 cost nothing but the
 * test of the gate: per block of MOE_TB tokens and expert, the tokens that
 * use the expert are listed, then run MOE_TILE at a time against each weight
 * row (a prefill chunk gets GEMM-like reuse of the weights). */
#include <math.h>
#include <string.h>

#include "cg.h"

enum {
  KV_GRAIN = 16384, /* elements copied per task */
  TOPK_GRAIN = 4096, /* elements per task (one row at least) */
  MOE_TB = 32,      /* tokens per task (they share each weight row while it is in cache) */
  MOE_TILE = 4,     /* tokens per register tile (each weight load feeds that many dot products) */
  MOE_FC = 16,      /* rows of F per MOE_UP task */
  MOE_DC = 16,      /* rows of D per MOE_DOWN task */
};

/* ------------------------------------------------------------------ small IR helpers */

typedef struct llm_ctx {
  bm_cg *cg;
  bm_cg_fn *f;
  LLVMBuilderRef b;
} llm_ctx;

static LLVMValueRef c64(llm_ctx *c, int64_t v) { return bm_cg_i64(c->cg, v); }
static LLVMValueRef add(llm_ctx *c, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildAdd(c->b, x, y, ""); }
static LLVMValueRef sub(llm_ctx *c, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildSub(c->b, x, y, ""); }
static LLVMValueRef mul(llm_ctx *c, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildMul(c->b, x, y, ""); }
static LLVMValueRef mulc(llm_ctx *c, LLVMValueRef x, int64_t k) { return mul(c, x, c64(c, k)); }
static LLVMValueRef addc(llm_ctx *c, LLVMValueRef x, int64_t k) { return add(c, x, c64(c, k)); }
static LLVMValueRef smin(llm_ctx *c, LLVMValueRef x, LLVMValueRef y) { return bm_cg_imin(c->f, x, y); }
static LLVMValueRef icmp(llm_ctx *c, LLVMIntPredicate p, LLVMValueRef x, LLVMValueRef y) {
  return LLVMBuildICmp(c->b, p, x, y, "");
}
static LLVMValueRef ld(llm_ctx *c, LLVMTypeRef t, LLVMValueRef p) { return LLVMBuildLoad2(c->b, t, p, ""); }
static void st(llm_ctx *c, LLVMValueRef v, LLVMValueRef p) { LLVMBuildStore(c->b, v, p); }
static LLVMTypeRef fvec(llm_ctx *c, int w) {
  return w == 1 ? c->cg->t_f32 : LLVMVectorType(c->cg->t_f32, (unsigned)w);
}

/* ------------------------------------------------------------------ kv_write */

typedef struct copy_ctx {
  LLVMValueRef src, dst, soff, doff;
  bm_dtype st, dt;
} copy_ctx;

static void copy_body(bm_cg_fn *f, LLVMValueRef i, int width, LLVMValueRef nvalid, void *vctx) {
  copy_ctx *c = vctx;
  LLVMBuilderRef b = f->cg->b;
  LLVMValueRef si = LLVMBuildAdd(b, c->soff, i, ""), di = LLVMBuildAdd(b, c->doff, i, "");
  if (c->st == c->dt)
    bm_cg_store_raw(f, c->dst, c->dt, di, bm_cg_load_raw(f, c->src, c->st, si, width), width);
  else
    bm_cg_store(f, c->dst, c->dt, di, bm_cg_load(f, c->src, c->st, si, width), width);
}

/* cache (Bm, H, L, D), rows (B, H, S, D), pos (B): one unit of work per row
 * (b, h, i) of `rows`; rows landing outside [0, L) are skipped. */
static bm_status emit_kv_write(llm_ctx *c, bm_node *n) {
  bm_cg_fn *f = c->f;
  const bm_node *cache = n->in[0], *rows = n->in[1], *pos = n->in[2];
  int64_t H = cache->shape[1].add, L = cache->shape[2].add, D = cache->shape[3].add;
  int64_t grain = KV_GRAIN / (D > 0 ? D : 1);
  LLVMValueRef lo, hi;
  bm_cg_task_range(f, 3, rows->shape, grain < 1 ? 1 : grain, &n->tasks, &lo, &hi);
  LLVMValueRef src = bm_cg_buf(f, 1), pp = bm_cg_buf(f, 2), dst = bm_cg_buf(f, 3);
  bm_cg_loop l;
  bm_cg_loop_begin(f, &l, lo, hi, c64(c, 1));
  LLVMValueRef co[3];
  bm_cg_unravel(f, l.iv, 3, rows->shape, co); /* (b, h, i) */
  LLVMValueRef p0 = bm_cg_load_i64(f, pp, pos->dtype, co[0]);
  /* 0 <= p0 + i < L, written without forming p0 + i (p0 may be anything) */
  LLVMValueRef ok = LLVMBuildAnd(c->b, icmp(c, LLVMIntSGE, p0, sub(c, c64(c, 0), co[2])),
                                 icmp(c, LLVMIntSLT, p0, sub(c, c64(c, L), co[2])), "");
  bm_cg_if in;
  bm_cg_if_begin(f, &in, ok);
  LLVMValueRef drow = add(c, mulc(c, add(c, mulc(c, co[0], H), co[1]), L), add(c, p0, co[2]));
  copy_ctx cc = {src, dst, mulc(c, l.iv, D), mulc(c, drow, D), rows->dtype, cache->dtype};
  int width = cc.st == cc.dt ? (int)(c->cg->vec * 4 / (int64_t)bm_dtype_nbytes(cc.st, 1)) : c->cg->vec;
  bm_cg_vec_for(f, c64(c, 0), c64(c, D), width < 1 ? 1 : width, true, copy_body, &cc);
  bm_cg_if_end(f, &in);
  bm_cg_loop_end(f, &l);
  return NULL;
}

/* ------------------------------------------------------------------ take_row */

/* x (B, S, ...), idx (B) -> out (B, 1, ...): one task per batch entry b
 * copies row clamp(idx[b], 0, S - 1) of x[b]. */
static bm_status emit_take_row(llm_ctx *c, bm_node *n) {
  bm_cg_fn *f = c->f;
  const bm_node *x = n->in[0], *idx = n->in[1];
  LLVMValueRef lo, hi;
  bm_cg_task_range(f, 1, n->shape, 1, &n->tasks, &lo, &hi);
  LLVMValueRef S = bm_cg_dim(f, x->shape[1]), row = c64(c, 1);
  for (int d = 2; d < x->ndim; d++) row = mul(c, row, bm_cg_dim(f, x->shape[d]));
  LLVMValueRef xp = bm_cg_buf(f, 0), ip = bm_cg_buf(f, 1), out = bm_cg_buf(f, 2);
  bm_cg_if nonempty;
  bm_cg_if_begin(f, &nonempty, icmp(c, LLVMIntSGT, S, c64(c, 0)));
  bm_cg_loop l;
  bm_cg_loop_begin(f, &l, lo, hi, c64(c, 1));
  LLVMValueRef i = bm_cg_load_i64(f, ip, idx->dtype, l.iv);
  i = smin(c, bm_cg_imax(f, i, c64(c, 0)), sub(c, S, c64(c, 1)));
  copy_ctx cc = {xp, out, mul(c, add(c, mul(c, l.iv, S), i), row), mul(c, l.iv, row), x->dtype, n->dtype};
  int width = (int)(c->cg->vec * 4 / (int64_t)bm_dtype_nbytes(x->dtype, 1));
  bm_cg_vec_for(f, c64(c, 0), row, width < 1 ? 1 : width, true, copy_body, &cc);
  bm_cg_loop_end(f, &l);
  bm_cg_if_end(f, &nonempty);
  return NULL;
}

/* ------------------------------------------------------------------ topk_mask */

/* The ranking key of element j of a row: its value, NaN as -inf. */
static LLVMValueRef topk_key(llm_ctx *c, LLVMValueRef x, bm_dtype t, LLVMValueRef idx) {
  LLVMValueRef v = bm_cg_load(c->f, x, t, idx, 1);
  LLVMValueRef nan = LLVMBuildFCmp(c->b, LLVMRealUNO, v, v, "");
  return LLVMBuildSelect(c->b, nan, bm_cg_f32(c->cg, -INFINITY), v, "");
}

/* Per row: k selection passes, each finding the best element ranked below
 * the previous one in the order (key descending, index ascending); the k-th
 * is the threshold. O(k N) per row: simple, and fine for router logits and
 * sampling's top-k. */
static bm_status emit_topk_mask(llm_ctx *c, bm_node *n) {
  bm_cg_fn *f = c->f;
  bm_cg *cg = c->cg;
  const bm_node *xn = n->in[0];
  int nd = n->ndim;
  bm_dim nd_last = n->shape[nd - 1];
  int64_t nmax = bm_cg_dim_max(cg, nd_last);
  int64_t grain = TOPK_GRAIN / (nmax > 0 ? nmax : 1);
  LLVMValueRef lo, hi;
  bm_cg_task_range(f, nd - 1, n->shape, grain < 1 ? 1 : grain, &n->tasks, &lo, &hi);
  LLVMValueRef x = bm_cg_buf(f, 0), out = bm_cg_buf(f, 1);
  LLVMValueRef N = bm_cg_dim(f, nd_last);
  LLVMValueRef kk = smin(c, c64(c, n->a.topk), N);
  LLVMValueRef pk = bm_cg_alloca(f, cg->t_f32, "prev_key"), pi = bm_cg_alloca(f, cg->t_i64, "prev_idx");
  LLVMValueRef bk = bm_cg_alloca(f, cg->t_f32, "best_key"), bi = bm_cg_alloca(f, cg->t_i64, "best_idx");

  bm_cg_loop lr;
  bm_cg_loop_begin(f, &lr, lo, hi, c64(c, 1));
  LLVMValueRef base = mul(c, lr.iv, N);
  st(c, bm_cg_f32(cg, INFINITY), pk);
  st(c, c64(c, -1), pi);
  bm_cg_loop lp;
  bm_cg_loop_begin(f, &lp, c64(c, 0), kk, c64(c, 1));
  {
    st(c, bm_cg_f32(cg, -INFINITY), bk);
    st(c, c64(c, -1), bi);
    LLVMValueRef prev_k = ld(c, cg->t_f32, pk), prev_i = ld(c, cg->t_i64, pi);
    bm_cg_loop lj;
    bm_cg_loop_begin(f, &lj, c64(c, 0), N, c64(c, 1));
    LLVMValueRef key = topk_key(c, x, xn->dtype, add(c, base, lj.iv));
    /* ranked below the previous pick: smaller key, or equal key and later index
     * (the first pass: prev = (+inf, -1) admits everything but +inf keys,
     * which the equal-key rule then admits too) */
    LLVMValueRef below = LLVMBuildOr(
        c->b, LLVMBuildFCmp(c->b, LLVMRealOLT, key, prev_k, ""),
        LLVMBuildAnd(c->b, LLVMBuildFCmp(c->b, LLVMRealOEQ, key, prev_k, ""),
                     icmp(c, LLVMIntSGT, lj.iv, prev_i), ""), "");
    LLVMValueRef cur_i = ld(c, cg->t_i64, bi), cur_k = ld(c, cg->t_f32, bk);
    /* scanning upwards: on equal keys the earlier index stays */
    LLVMValueRef better = LLVMBuildOr(c->b, icmp(c, LLVMIntSLT, cur_i, c64(c, 0)),
                                      LLVMBuildFCmp(c->b, LLVMRealOGT, key, cur_k, ""), "");
    LLVMValueRef take = LLVMBuildAnd(c->b, below, better, "");
    st(c, LLVMBuildSelect(c->b, take, key, cur_k, ""), bk);
    st(c, LLVMBuildSelect(c->b, take, lj.iv, cur_i, ""), bi);
    bm_cg_loop_end(f, &lj);
    st(c, ld(c, cg->t_f32, bk), pk);
    st(c, ld(c, cg->t_i64, bi), pi);
  }
  bm_cg_loop_end(f, &lp);
  /* keep (key, j) ranked at or above the threshold (prev) */
  LLVMValueRef tk = ld(c, cg->t_f32, pk), ti = ld(c, cg->t_i64, pi);
  LLVMValueRef fill = bm_cg_f32(cg, n->a.fill);
  bm_cg_loop lo2;
  bm_cg_loop_begin(f, &lo2, c64(c, 0), N, c64(c, 1));
  {
    LLVMValueRef idx = add(c, base, lo2.iv);
    LLVMValueRef v = bm_cg_load(f, x, xn->dtype, idx, 1);
    LLVMValueRef key = topk_key(c, x, xn->dtype, idx);
    LLVMValueRef keep = LLVMBuildOr(
        c->b, LLVMBuildFCmp(c->b, LLVMRealOGT, key, tk, ""),
        LLVMBuildAnd(c->b, LLVMBuildFCmp(c->b, LLVMRealOEQ, key, tk, ""),
                     icmp(c, LLVMIntSLE, lo2.iv, ti), ""), "");
    bm_cg_store(f, out, n->dtype, idx, LLVMBuildSelect(c->b, keep, v, fill, ""), 1);
  }
  bm_cg_loop_end(f, &lo2);
  bm_cg_loop_end(f, &lr);
  return NULL;
}

/* ------------------------------------------------------------------ moe */

/* The token space of MOE_UP / MOE_DOWN: the nl leading dims of x (or h),
 * flattened to T tokens (rows are contiguous). The task count can follow
 * one symbol only, so:
 * - at most one symbolic leading dim: T is linear in it, and tasks are
 *   (block of MOE_TB tokens, rest): ceil(T / MOE_TB) * per;
 * - more (e.g. (batch, seq)): the dims up to the first symbolic one form
 *   an outer index (linear in that symbol) and the others an inner token
 *   count Ti whose blocks are counted at its bound: tasks are
 *   (outer, block, rest), outer * ceil(Ti_max / MOE_TB) * per; the blocks
 *   past the actual Ti are empty. */
typedef struct moe_tokens {
  int nl;               /* leading dims */
  const bm_dim *dims;
  int split;            /* 0: one outer index; else dims [0, split) are the outer index */
  int64_t nblk;         /* blocks per outer index (split > 0) */
} moe_tokens;

/* Sets up the token space and n->tasks for `per` tasks per token block. */
static bm_status moe_tokens_init(llm_ctx *c, bm_node *n, const bm_node *x, int nl, int64_t per,
                                 moe_tokens *mt) {
  mt->nl = nl;
  mt->dims = x->shape;
  mt->split = 0;
  mt->nblk = 0;
  int first = -1, nsym = 0;
  for (int d = 0; d < nl; d++)
    if (!bm_dim_is_static(x->shape[d])) {
      if (first < 0) first = d;
      nsym++;
    }
  int upto = nsym <= 1 ? nl : first + 1; /* the dims of the task expression */
  int64_t P = 1;
  bm_dim sd = bm_dim_c(1);
  for (int d = 0; d < upto; d++) {
    if (bm_dim_is_static(x->shape[d])) P *= x->shape[d].add;
    else sd = x->shape[d];
  }
  bm_dim td = bm_dim_is_static(sd) ? bm_dim_c(P) : sd;
  if (!bm_dim_is_static(sd)) {
    if (P > INT32_MAX / (sd.mul > 0 ? sd.mul : 1))
      return bm_status_make(BM_ERR_UNSUPPORTED, "%s: %lld tokens per symbol step", bm_op_name(n->op),
                            (long long)P);
    td.mul = (int32_t)(sd.mul * P);
    td.add = sd.add * P;
  }
  if (nsym <= 1) {
    n->tasks = bm_cg_tasks(td, MOE_TB, per);
    return NULL;
  }
  int64_t inner = 1;
  for (int d = upto; d < nl; d++) inner *= bm_cg_dim_max(c->cg, x->shape[d]);
  mt->split = upto;
  mt->nblk = (inner + MOE_TB - 1) / MOE_TB;
  n->tasks = bm_cg_tasks(td, 1, mt->nblk * per);
  return NULL;
}

/* Task t: the token range [t0, t1) (possibly empty) and the index within
 * the block's `per` tasks. */
static void moe_task(llm_ctx *c, const moe_tokens *mt, LLVMValueRef t, int64_t per, LLVMValueRef *t0,
                     LLVMValueRef *t1, LLVMValueRef *rest) {
  LLVMValueRef q = LLVMBuildSDiv(c->b, t, c64(c, per), "");
  *rest = LLVMBuildSRem(c->b, t, c64(c, per), "");
  LLVMValueRef base = c64(c, 0), blk = q, count = c64(c, 1);
  for (int d = mt->split; d < mt->nl; d++) count = mul(c, count, bm_cg_dim(c->f, mt->dims[d]));
  if (mt->split > 0) {
    base = mul(c, LLVMBuildSDiv(c->b, q, c64(c, mt->nblk), ""), count);
    blk = LLVMBuildSRem(c->b, q, c64(c, mt->nblk), "");
  }
  *t0 = add(c, base, mulc(c, blk, MOE_TB));
  *t1 = smin(c, addc(c, *t0, MOE_TB), add(c, base, count));
}

/* Register tiles of MOE_TILE tokens: every load of a weight row feeds the
 * dot products of up to MOE_TILE tokens (GEMM-like reuse), and each
 * (matrix, token) pair has its own accumulator, so a token's result depends
 * only on its own data (not on which tokens share its tile or block).
 *
 * out[m][j] = sum_k w[m][wrow + k] * x[xrow[j] + k] over k < K (static), for
 * nw weight matrices (1 or 2) and nt (<= MOE_TILE) token rows xrow[j]. */
static void tile_dots(llm_ctx *c, int nw, const LLVMValueRef *w, const bm_dtype *tw, LLVMValueRef wrow,
                      LLVMValueRef x, bm_dtype tx, const LLVMValueRef *xrow, int nt, int64_t K,
                      LLVMValueRef out[2][MOE_TILE]) {
  bm_cg_fn *f = c->f;
  int vw = c->cg->vec < 4 ? 4 : c->cg->vec;
  LLVMTypeRef vt = fvec(c, vw);
  LLVMValueRef acc[2][MOE_TILE];
  for (int m = 0; m < nw; m++)
    for (int j = 0; j < nt; j++) {
      acc[m][j] = bm_cg_alloca(f, vt, "tile");
      st(c, LLVMConstNull(vt), acc[m][j]);
    }
  int64_t vend = K / vw * vw;
  if (vend > 0) {
    bm_cg_loop l;
    bm_cg_loop_begin(f, &l, c64(c, 0), c64(c, vend), c64(c, vw));
    LLVMValueRef wv[2];
    for (int m = 0; m < nw; m++) wv[m] = bm_cg_load(f, w[m], tw[m], add(c, wrow, l.iv), vw);
    for (int j = 0; j < nt; j++) {
      LLVMValueRef xv = bm_cg_load(f, x, tx, add(c, xrow[j], l.iv), vw);
      for (int m = 0; m < nw; m++) st(c, bm_cg_fma(f, wv[m], xv, ld(c, vt, acc[m][j])), acc[m][j]);
    }
    bm_cg_loop_end(f, &l);
  }
  for (int m = 0; m < nw; m++)
    for (int j = 0; j < nt; j++) {
      LLVMValueRef sum = bm_cg_hsum(f, ld(c, vt, acc[m][j]));
      for (int64_t k = vend; k < K; k++) /* K % vw leftovers */
        sum = bm_cg_fma(f, bm_cg_load(f, w[m], tw[m], addc(c, wrow, k), 1),
                        bm_cg_load(f, x, tx, addc(c, xrow[j], k), 1), sum);
      out[m][j] = sum;
    }
}

/* Lists in list[0, n) the tokens of [t0, t1) whose gate for expert e is
 * not 0; returns n (i64). */
static LLVMValueRef active_tokens(llm_ctx *c, LLVMValueRef gp, bm_dtype gt, int64_t E, LLVMValueRef e,
                                  LLVMValueRef t0, LLVMValueRef t1, LLVMValueRef list) {
  bm_cg_fn *f = c->f;
  LLVMValueRef cnt = bm_cg_alloca(f, c->cg->t_i64, "nact");
  st(c, c64(c, 0), cnt);
  bm_cg_loop lk;
  bm_cg_loop_begin(f, &lk, t0, t1, c64(c, 1));
  LLVMValueRef gv = bm_cg_load(f, gp, gt, add(c, mulc(c, lk.iv, E), e), 1);
  bm_cg_if on;
  bm_cg_if_begin(f, &on, LLVMBuildFCmp(c->b, LLVMRealUNE, gv, bm_cg_f32(c->cg, 0.f), ""));
  LLVMValueRef k = ld(c, c->cg->t_i64, cnt);
  bm_cg_store_i64(f, list, BM_DTYPE_I64, k, lk.iv);
  st(c, addc(c, k, 1), cnt);
  bm_cg_if_end(f, &on);
  bm_cg_loop_end(f, &lk);
  return ld(c, c->cg->t_i64, cnt);
}

/* One tile of MOE_UP or MOE_DOWN: tokens list[g, g + nt) against weight
 * row wrow of expert e (UP: of w_gate and w_up, row f; DOWN: of w_down,
 * row d). */
typedef struct moe_tile {
  const bm_node *n;
  LLVMValueRef list, e, wrow, row; /* row: f (UP) or d (DOWN) */
  LLVMValueRef t0, acc;            /* DOWN: the block's first token and its partial sums */
} moe_tile;

static void moe_tile_emit(llm_ctx *c, const moe_tile *m, LLVMValueRef g, int nt) {
  bm_cg_fn *f = c->f;
  const bm_node *n = m->n;
  LLVMValueRef tok[MOE_TILE], rows[MOE_TILE], out[2][MOE_TILE];
  for (int j = 0; j < nt; j++) tok[j] = bm_cg_load_i64(f, m->list, BM_DTYPE_I64, addc(c, g, j));
  if (n->op == BM_OP_MOE_UP) {
    const bm_node *x = n->in[0], *gt = n->in[1];
    int64_t D = x->shape[x->ndim - 1].add, E = gt->shape[gt->ndim - 1].add, F = n->in[2]->shape[1].add;
    for (int j = 0; j < nt; j++) rows[j] = mulc(c, tok[j], D);
    LLVMValueRef ws[2] = {bm_cg_buf(f, 2), bm_cg_buf(f, 3)};
    bm_dtype wt[2] = {n->in[2]->dtype, n->in[3]->dtype};
    tile_dots(c, 2, ws, wt, m->wrow, bm_cg_buf(f, 0), x->dtype, rows, nt, D, out);
    for (int j = 0; j < nt; j++) {
      LLVMValueRef hv = LLVMBuildFMul(c->b, bm_cg_unary(f, (bm_op)n->a.act, out[0][j]), out[1][j], "");
      bm_cg_store(f, bm_cg_buf(f, 4), n->dtype, add(c, mulc(c, add(c, mulc(c, tok[j], E), m->e), F), m->row), hv,
                  1);
    }
  } else {
    const bm_node *h = n->in[0], *gt = n->in[1];
    int nl = h->ndim - 2;
    int64_t E = h->shape[nl].add, F = h->shape[nl + 1].add;
    for (int j = 0; j < nt; j++) rows[j] = mulc(c, add(c, mulc(c, tok[j], E), m->e), F);
    LLVMValueRef wp = bm_cg_buf(f, 2);
    bm_dtype wt[1] = {n->in[2]->dtype};
    tile_dots(c, 1, &wp, wt, m->wrow, bm_cg_buf(f, 0), h->dtype, rows, nt, F, out);
    for (int j = 0; j < nt; j++) {
      LLVMValueRef gv = bm_cg_load(f, bm_cg_buf(f, 1), gt->dtype, add(c, mulc(c, tok[j], E), m->e), 1);
      LLVMValueRef ai = add(c, mulc(c, sub(c, tok[j], m->t0), MOE_DC), m->row);
      LLVMValueRef old = bm_cg_load(f, m->acc, BM_DTYPE_F32, ai, 1);
      bm_cg_store(f, m->acc, BM_DTYPE_F32, ai, bm_cg_fma(f, gv, out[0][j], old), 1);
    }
  }
}

/* The active tokens list[0, na) in tiles: MOE_TILE at a time, then one by
 * one (a token's result does not depend on its tile). */
static void moe_tiles(llm_ctx *c, const moe_tile *m, LLVMValueRef na) {
  bm_cg_fn *f = c->f;
  LLVMValueRef n4 = mulc(c, LLVMBuildSDiv(c->b, na, c64(c, MOE_TILE), ""), MOE_TILE);
  bm_cg_loop lg;
  bm_cg_loop_begin(f, &lg, c64(c, 0), n4, c64(c, MOE_TILE));
  moe_tile_emit(c, m, lg.iv, MOE_TILE);
  bm_cg_loop_end(f, &lg);
  bm_cg_loop l1;
  bm_cg_loop_begin(f, &l1, n4, na, c64(c, 1));
  moe_tile_emit(c, m, l1.iv, 1);
  bm_cg_loop_end(f, &l1);
}

/* h[t, e, f] = act(w_gate[e, f] . x[t]) * (w_up[e, f] . x[t]) for the tokens
 * of the block whose gate for e is not 0. Task = (token block, e, chunk of
 * MOE_FC rows of F); the block's active tokens go through register tiles. */
static bm_status emit_moe_up(llm_ctx *c, bm_node *n) {
  bm_cg_fn *f = c->f;
  const bm_node *x = n->in[0], *g = n->in[1], *wg = n->in[2];
  int nl = x->ndim - 1;
  int64_t D = x->shape[nl].add, E = g->shape[nl].add, F = wg->shape[1].add;
  int64_t nfc = (F + MOE_FC - 1) / MOE_FC;
  moe_tokens mt;
  BM_RETURN_IF_ERROR(moe_tokens_init(c, n, x, nl, E * nfc, &mt));
  n->scratch = (uint64_t)MOE_TB * 8; /* the block's active tokens (i64) */
  LLVMValueRef gp = bm_cg_buf(f, 1), list = f->scratch;
  bm_cg_loop lt;
  bm_cg_loop_begin(f, &lt, f->begin, f->end, c64(c, 1));
  LLVMValueRef t0, t1, rest;
  moe_task(c, &mt, lt.iv, E * nfc, &t0, &t1, &rest);
  LLVMValueRef e = LLVMBuildSDiv(c->b, rest, c64(c, nfc), "");
  LLVMValueRef f0 = mulc(c, LLVMBuildSRem(c->b, rest, c64(c, nfc), ""), MOE_FC);
  LLVMValueRef f1 = smin(c, addc(c, f0, MOE_FC), c64(c, F));
  LLVMValueRef na = active_tokens(c, gp, g->dtype, E, e, t0, t1, list);
  bm_cg_loop lf;
  bm_cg_loop_begin(f, &lf, f0, f1, c64(c, 1));
  LLVMValueRef wrow = mulc(c, add(c, mulc(c, e, F), lf.iv), D); /* (e, f, 0) */
  moe_tile mt1 = {.n = n, .list = list, .e = e, .wrow = wrow, .row = lf.iv};
  moe_tiles(c, &mt1, na);
  bm_cg_loop_end(f, &lf);
  bm_cg_loop_end(f, &lt);
  return NULL;
}

/* out[t, d] = sum over e with gates[t, e] != 0 of gates[t, e] * (w_down[e, d] . h[t, e]).
 * Task = (token block, chunk of MOE_DC rows of D); per expert, the block's
 * active tokens go through register tiles; partial sums (over e, in
 * ascending order) in scratch. */
static bm_status emit_moe_down(llm_ctx *c, bm_node *n) {
  bm_cg_fn *f = c->f;
  bm_cg *cg = c->cg;
  const bm_node *h = n->in[0], *g = n->in[1], *wd = n->in[2];
  int nl = h->ndim - 2;
  int64_t E = h->shape[nl].add, F = h->shape[nl + 1].add, D = wd->shape[1].add;
  int64_t ndc = (D + MOE_DC - 1) / MOE_DC;
  moe_tokens mt;
  BM_RETURN_IF_ERROR(moe_tokens_init(c, n, h, nl, ndc, &mt));
  int64_t acc_bytes = (int64_t)MOE_TB * MOE_DC * 4;
  n->scratch = (uint64_t)acc_bytes + (uint64_t)MOE_TB * 8; /* (MOE_TB, MOE_DC) f32, then the token list */
  LLVMValueRef gp = bm_cg_buf(f, 1), op = bm_cg_buf(f, 3);
  LLVMValueRef acc = f->scratch;
  LLVMValueRef off = c64(c, acc_bytes);
  LLVMValueRef list = LLVMBuildGEP2(c->b, cg->t_i8, f->scratch, &off, 1, "");
  bm_cg_loop lt;
  bm_cg_loop_begin(f, &lt, f->begin, f->end, c64(c, 1));
  LLVMValueRef t0, t1, rest;
  moe_task(c, &mt, lt.iv, ndc, &t0, &t1, &rest);
  LLVMValueRef d0 = mulc(c, rest, MOE_DC), d1 = smin(c, addc(c, d0, MOE_DC), c64(c, D));
  for (int i = 0; i < MOE_TB * MOE_DC; i++) bm_cg_store(f, acc, BM_DTYPE_F32, c64(c, i), bm_cg_f32(cg, 0.f), 1);
  bm_cg_loop le;
  bm_cg_loop_begin(f, &le, c64(c, 0), c64(c, E), c64(c, 1));
  {
    LLVMValueRef na = active_tokens(c, gp, g->dtype, E, le.iv, t0, t1, list);
    bm_cg_loop ld_;
    bm_cg_loop_begin(f, &ld_, d0, d1, c64(c, 1));
    LLVMValueRef wrow = mulc(c, add(c, mulc(c, le.iv, D), ld_.iv), F); /* (e, d, 0) */
    moe_tile mt1 = {.n = n, .list = list, .e = le.iv, .wrow = wrow, .row = sub(c, ld_.iv, d0), .t0 = t0,
                    .acc = acc};
    moe_tiles(c, &mt1, na);
    bm_cg_loop_end(f, &ld_);
  }
  bm_cg_loop_end(f, &le);
  bm_cg_loop lk;
  bm_cg_loop_begin(f, &lk, t0, t1, c64(c, 1));
  {
    bm_cg_loop ld_;
    bm_cg_loop_begin(f, &ld_, d0, d1, c64(c, 1));
    LLVMValueRef ai = add(c, mulc(c, sub(c, lk.iv, t0), MOE_DC), sub(c, ld_.iv, d0));
    bm_cg_store(f, op, n->dtype, add(c, mulc(c, lk.iv, D), ld_.iv), bm_cg_load(f, acc, BM_DTYPE_F32, ai, 1), 1);
    bm_cg_loop_end(f, &ld_);
  }
  bm_cg_loop_end(f, &lk);
  bm_cg_loop_end(f, &lt);
  return NULL;
}

/* ------------------------------------------------------------------ entry */

static bool is_float(bm_dtype t) {
  return t == BM_DTYPE_F32 || t == BM_DTYPE_F16 || t == BM_DTYPE_BF16;
}

/* The static facts the emitters rely on (shape inference guarantees them;
 * checked again so a bad graph gives an error, not bad code). */
static bm_status check(const bm_node *n) {
  switch (n->op) {
    case BM_OP_KV_WRITE: {
      const bm_node *cache = n->in[0], *rows = n->in[1];
      if (n->nin != 3 || cache->ndim != 4 || rows->ndim != 4) break;
      for (int d = 0; d < 4; d++)
        if (!bm_dim_is_static(cache->shape[d])) return bm_status_make(BM_ERR_UNSUPPORTED, "kv_write: symbolic cache");
      if (cache->dtype != rows->dtype && !(is_float(cache->dtype) && is_float(rows->dtype))) break;
      if (n->in[2]->dtype != BM_DTYPE_I32 && n->in[2]->dtype != BM_DTYPE_I64) break;
      return NULL;
    }
    case BM_OP_TAKE_ROW:
      if (n->nin == 2 && n->ndim >= 2 && n->dtype == n->in[0]->dtype && n->dtype != BM_DTYPE_I4 &&
          (n->in[1]->dtype == BM_DTYPE_I32 || n->in[1]->dtype == BM_DTYPE_I64))
        return NULL;
      break;
    case BM_OP_TOPK_MASK:
      if (n->nin == 1 && n->ndim >= 1 && n->a.topk >= 1 && is_float(n->dtype)) return NULL;
      break;
    case BM_OP_MOE_UP:
    case BM_OP_MOE_DOWN: {
      int nin = n->op == BM_OP_MOE_UP ? 4 : 3;
      if (n->nin != nin) break;
      for (int i = 0; i < nin; i++)
        if (!is_float(n->in[i]->dtype)) return bm_status_make(BM_ERR_UNSUPPORTED, "%s: input %d is %s",
                                                              bm_op_name(n->op), i, bm_dtype_name(n->in[i]->dtype));
      /* gates (..., E): only its leading (token) dims may be symbolic */
      for (int i = 1; i < nin; i++)
        for (int d = 0; d < n->in[i]->ndim; d++)
          if (!bm_dim_is_static(n->in[i]->shape[d]) && !(i == 1 && d < n->in[1]->ndim - 1))
            return bm_status_make(BM_ERR_UNSUPPORTED, "%s: input %d has a symbolic dim %d", bm_op_name(n->op), i, d);
      if (n->op == BM_OP_MOE_UP && n->a.act != BM_OP_SILU && n->a.act != BM_OP_GELU_TANH) break;
      return NULL;
    }
    default: break;
  }
  return bm_status_make(BM_ERR_INTERNAL, "llm emitter: node %d (%s) has an unexpected form", n->id,
                        bm_op_name(n->op));
}

bm_status bm_cg_emit_llm(bm_cg *cg, bm_node *n, const char *symbol) {
  BM_RETURN_IF_ERROR(check(n));
  bm_cg_fn f;
  bm_cg_fn_begin(cg, n, symbol, &f);
  llm_ctx c = {cg, &f, cg->b};
  bm_status s;
  switch (n->op) {
    case BM_OP_KV_WRITE: s = emit_kv_write(&c, n); break;
    case BM_OP_TAKE_ROW: s = emit_take_row(&c, n); break;
    case BM_OP_TOPK_MASK: s = emit_topk_mask(&c, n); break;
    case BM_OP_MOE_UP: s = emit_moe_up(&c, n); break;
    case BM_OP_MOE_DOWN: s = emit_moe_down(&c, n); break;
    default: s = bm_status_make(BM_ERR_INTERNAL, "llm emitter got %s", bm_op_name(n->op));
  }
  bm_cg_fn_end(&f);
  return s;
}
