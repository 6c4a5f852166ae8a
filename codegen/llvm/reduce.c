/* reduce.c - LLVM lowering of sum, mean, reduce_max over any set of axes
 * and of softmax over any axis.
 *
 * Reductions merge adjacent axes into (A, R, K): A kept, R reduced, K kept.
 * K == 1 (trailing axes reduced) reduces contiguous rows with vector
 * accumulators; K > 1 vectorizes across K. Other axis patterns fall back to
 * a scalar loop over the reduced coordinates. Softmax does max, sum of exp
 * and normalize passes per row (exp recomputed, no scratch). */
#include <math.h>

#include "cg.h"

#define RED_GRAIN 16384 /* input elements per task */

typedef struct red_op {
  bm_op op;        /* SUM, MEAN, REDUCE_MAX, or SOFTMAX (for its max pass) */
  bool max;        /* combine with max instead of add */
  bool nan_prop;   /* max propagates NaN (reduce_max) rather than ignoring it (softmax) */
} red_op;

static LLVMValueRef combine(bm_cg_fn *f, const red_op *r, LLVMValueRef acc, LLVMValueRef v) {
  if (!r->max) return LLVMBuildFAdd(f->cg->b, acc, v, "");
  if (!r->nan_prop) return bm_cg_fmax(f, acc, v);
  /* NaN-propagating max: v > acc || isnan(v) ? v : acc, then NaN in acc sticks */
  LLVMBuilderRef b = f->cg->b;
  LLVMValueRef take = LLVMBuildFCmp(b, LLVMRealUGT, v, acc, "");
  LLVMValueRef m = LLVMBuildSelect(b, take, v, acc, "");
  return LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealUNO, acc, acc, ""), acc, m, "");
}

static LLVMValueRef init_value(bm_cg_fn *f, const red_op *r, int width) {
  return bm_cg_splat(f, bm_cg_f32(f->cg, r->max ? -INFINITY : 0.0f), width);
}

/* Horizontal combine of a vector accumulator. */
static LLVMValueRef hcombine(bm_cg_fn *f, const red_op *r, LLVMValueRef v) {
  if (!r->max) return bm_cg_hsum(f, v);
  int w = (int)LLVMGetVectorSize(LLVMTypeOf(v));
  LLVMValueRef acc = LLVMBuildExtractElement(f->cg->b, v, bm_cg_i32(f->cg, 0), "");
  for (int i = 1; i < w; i++)
    acc = combine(f, r, acc, LLVMBuildExtractElement(f->cg->b, v, bm_cg_i32(f->cg, i), ""));
  return acc;
}

/* ------------------------------------------------------------------ contiguous row reduce */

typedef struct row_ctx {
  const red_op *r;
  LLVMValueRef x, off;        /* source and element offset of the row */
  bm_dtype t;
  LLVMValueRef accv, accs;    /* allocas: <w x float>, float */
  LLVMValueRef sub;           /* softmax: subtract before exp (NULL = plain reduce) */
  int w;
} row_ctx;

static void row_body(bm_cg_fn *f, LLVMValueRef i, int width, LLVMValueRef nvalid, void *vctx) {
  row_ctx *c = vctx;
  LLVMBuilderRef b = f->cg->b;
  LLVMValueRef v = bm_cg_load(f, c->x, c->t, LLVMBuildAdd(b, c->off, i, ""), width);
  if (c->sub) v = bm_cg_exp(f, LLVMBuildFSub(b, v, bm_cg_splat(f, c->sub, width), ""));
  LLVMValueRef slot = width > 1 ? c->accv : c->accs;
  LLVMTypeRef ty = width > 1 ? LLVMVectorType(f->cg->t_f32, (unsigned)width) : f->cg->t_f32;
  LLVMValueRef acc = LLVMBuildLoad2(b, ty, slot, "");
  LLVMBuildStore(b, combine(f, c->r, acc, v), slot);
}

/* reduce x[off .. off+len) (exp(x - sub) summed when sub is set) -> f32 scalar */
static LLVMValueRef reduce_row(bm_cg_fn *f, const red_op *r, LLVMValueRef x, bm_dtype t,
                               LLVMValueRef off, LLVMValueRef len, LLVMValueRef sub) {
  bm_cg *cg = f->cg;
  int w = cg->vec;
  row_ctx c = {r, x, off, t, NULL, NULL, sub, w};
  c.accv = bm_cg_alloca(f, LLVMVectorType(cg->t_f32, (unsigned)w), "accv");
  c.accs = bm_cg_alloca(f, cg->t_f32, "accs");
  LLVMBuildStore(cg->b, init_value(f, r, w), c.accv);
  LLVMBuildStore(cg->b, init_value(f, r, 1), c.accs);
  bm_cg_vec_for(f, bm_cg_i64(cg, 0), len, w, true, row_body, &c);
  LLVMValueRef v = LLVMBuildLoad2(cg->b, LLVMVectorType(cg->t_f32, (unsigned)w), c.accv, "");
  LLVMValueRef s = LLVMBuildLoad2(cg->b, cg->t_f32, c.accs, "");
  return combine(f, r, hcombine(f, r, v), s);
}

/* ------------------------------------------------------------------ strided (A, R, K) reduce */

typedef struct col_ctx {
  const red_op *r;
  LLVMValueRef x, out, xoff, ooff; /* offsets of element (a, 0, 0) / (a, 0) */
  LLVMValueRef R, K, count_f;      /* count_f: divisor for mean (NULL = none) */
  bm_dtype xt, ot;
} col_ctx;

static void col_body(bm_cg_fn *f, LLVMValueRef k, int width, LLVMValueRef nvalid, void *vctx) {
  col_ctx *c = vctx;
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  LLVMTypeRef ty = width > 1 ? LLVMVectorType(cg->t_f32, (unsigned)width) : cg->t_f32;
  bm_cg_loop l;
  LLVMValueRef init = init_value(f, c->r, width);
  bm_cg_loop_begin(f, &l, bm_cg_i64(cg, 0), c->R, bm_cg_i64(cg, 1));
  LLVMValueRef acc = bm_cg_loop_phi(f, &l, ty, init);
  LLVMValueRef at = LLVMBuildAdd(b, c->xoff, LLVMBuildAdd(b, LLVMBuildMul(b, l.iv, c->K, ""), k, ""), "");
  LLVMValueRef v = nvalid ? bm_cg_load_partial(f, c->x, c->xt, at, width, nvalid)
                          : bm_cg_load(f, c->x, c->xt, at, width);
  bm_cg_loop_phi_next(&l, acc, combine(f, c->r, acc, v));
  bm_cg_loop_end(f, &l);
  LLVMValueRef res = acc;
  if (c->count_f) res = LLVMBuildFDiv(b, res, bm_cg_splat(f, c->count_f, width), "");
  LLVMValueRef o = LLVMBuildAdd(b, c->ooff, k, "");
  if (nvalid)
    bm_cg_store_partial(f, c->out, c->ot, o, res, width, nvalid);
  else
    bm_cg_store(f, c->out, c->ot, o, res, width);
}

/* ------------------------------------------------------------------ sum / mean / max */

/* Merged axis groups of x: kind 0 kept, 1 reduced. Static size-1 axes are dropped. */
typedef struct group {
  int kind;
  int first, last; /* axis range [first, last] */
} group;

static LLVMValueRef dims_prod(bm_cg_fn *f, const bm_node *x, int first, int last) {
  LLVMValueRef v = bm_cg_i64(f->cg, 1);
  for (int d = first; d <= last; d++) v = LLVMBuildMul(f->cg->b, v, bm_cg_dim(f, x->shape[d]), "");
  return v;
}

static int64_t dims_prod_max(const bm_cg *cg, const bm_node *x, int first, int last) {
  int64_t v = 1;
  for (int d = first; d <= last; d++) v *= bm_cg_dim_max(cg, x->shape[d]);
  return v;
}

static bm_status emit_reduce_axes(bm_cg_fn *f, bm_node *n) {
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  const bm_node *x = n->in[0];
  int r = x->ndim;
  uint32_t axes = n->a.axes;
  red_op op = {n->op, n->op == BM_OP_REDUCE_MAX, true};
  group gs[BM_MAX_DIMS];
  int ng = 0;
  for (int d = 0; d < r; d++) {
    if (bm_dim_is_one(x->shape[d])) continue;
    int kind = (axes >> d) & 1;
    if (ng && gs[ng - 1].kind == kind && gs[ng - 1].last == d - 1) {
      gs[ng - 1].last = d;
    } else if (ng && gs[ng - 1].kind == kind) {
      /* separated only by size-1 axes: still adjacent in memory */
      gs[ng - 1].last = d;
    } else {
      gs[ng++] = (group){kind, d, d};
    }
  }
  /* kept dims of x in order, for the task split over outputs */
  bm_dim kept[BM_MAX_DIMS];
  int nk = 0;
  for (int d = 0; d < r; d++)
    if (!((axes >> d) & 1)) kept[nk++] = x->shape[d];
  LLVMValueRef xp = bm_cg_buf(f, 0), op_ = bm_cg_buf(f, 1);
  LLVMValueRef count = bm_cg_i64(cg, 1);
  for (int d = 0; d < r; d++)
    if ((axes >> d) & 1) count = LLVMBuildMul(b, count, bm_cg_dim(f, x->shape[d]), "");
  LLVMValueRef count_f = n->op == BM_OP_MEAN ? LLVMBuildSIToFP(b, count, cg->t_f32, "") : NULL;

  /* pattern (A, R): trailing reduction of contiguous rows */
  bool trailing = ng == 0 || gs[ng - 1].kind == 1;
  int nred = 0;
  for (int i = 0; i < ng; i++) nred += gs[i].kind;
  if (trailing && nred <= 1) {
    int64_t rmax = ng ? dims_prod_max(cg, x, gs[ng - 1].first, gs[ng - 1].last) : 1;
    int64_t grain = RED_GRAIN / (rmax > 0 ? rmax : 1);
    LLVMValueRef lo, hi;
    bm_cg_task_range(f, nk, kept, grain < 1 ? 1 : grain, &n->tasks, &lo, &hi);
    LLVMValueRef R = ng && nred ? dims_prod(f, x, gs[ng - 1].first, gs[ng - 1].last) : bm_cg_i64(cg, 1);
    bm_cg_loop l;
    bm_cg_loop_begin(f, &l, lo, hi, bm_cg_i64(cg, 1));
    LLVMValueRef v = reduce_row(f, &op, xp, x->dtype, LLVMBuildMul(b, l.iv, R, ""), R, NULL);
    if (count_f) v = LLVMBuildFDiv(b, v, count_f, "");
    bm_cg_store(f, op_, n->dtype, l.iv, v, 1);
    bm_cg_loop_end(f, &l);
    return NULL;
  }
  /* pattern (A, R, K) */
  if (nred == 1 && ng >= 2 && gs[ng - 1].kind == 0 && gs[ng - 2].kind == 1 && (ng == 2 || ng == 3)) {
    const group *gr = &gs[ng - 2], *gk = &gs[ng - 1];
    int64_t per_a = dims_prod_max(cg, x, gr->first, gk->last);
    int64_t grain = RED_GRAIN / (per_a > 0 ? per_a : 1);
    LLVMValueRef lo, hi;
    /* tasks over A = the kept dims before the reduced group */
    int na = 0;
    bm_dim adims[BM_MAX_DIMS];
    for (int d = 0; d < gr->first; d++)
      if (!((axes >> d) & 1)) adims[na++] = x->shape[d];
    bm_cg_task_range(f, na, adims, grain < 1 ? 1 : grain, &n->tasks, &lo, &hi);
    col_ctx c = {&op, xp, op_, NULL, NULL, dims_prod(f, x, gr->first, gr->last),
                 dims_prod(f, x, gk->first, gk->last), count_f, x->dtype, n->dtype};
    bm_cg_loop l;
    bm_cg_loop_begin(f, &l, lo, hi, bm_cg_i64(cg, 1));
    c.xoff = LLVMBuildMul(b, l.iv, LLVMBuildMul(b, c.R, c.K, ""), "");
    c.ooff = LLVMBuildMul(b, l.iv, c.K, "");
    bm_cg_vec_for(f, bm_cg_i64(cg, 0), c.K, cg->vec, false, col_body, &c);
    bm_cg_loop_end(f, &l);
    return NULL;
  }
  /* general: per output element, loop over the flat reduced index */
  bm_dim red[BM_MAX_DIMS];
  int rd[BM_MAX_DIMS], kd[BM_MAX_DIMS], nr = 0;
  nk = 0;
  for (int d = 0; d < r; d++) {
    if ((axes >> d) & 1) {
      rd[nr] = d;
      red[nr++] = x->shape[d];
    } else {
      kd[nk++] = d;
    }
  }
  int64_t rmax = 1;
  for (int i = 0; i < nr; i++) rmax *= bm_cg_dim_max(cg, red[i]);
  int64_t grain = RED_GRAIN / (rmax > 0 ? rmax : 1);
  LLVMValueRef lo, hi;
  bm_cg_task_range(f, nk, kept, grain < 1 ? 1 : grain, &n->tasks, &lo, &hi);
  LLVMValueRef xs[BM_MAX_DIMS], s = bm_cg_i64(cg, 1);
  for (int d = r - 1; d >= 0; d--) {
    xs[d] = s;
    s = LLVMBuildMul(b, s, bm_cg_dim(f, x->shape[d]), "");
  }
  bm_cg_loop l;
  bm_cg_loop_begin(f, &l, lo, hi, bm_cg_i64(cg, 1));
  LLVMValueRef kc[BM_MAX_DIMS];
  bm_cg_unravel(f, l.iv, nk, kept, kc);
  LLVMValueRef base = bm_cg_i64(cg, 0);
  for (int i = 0; i < nk; i++) base = LLVMBuildAdd(b, base, LLVMBuildMul(b, kc[i], xs[kd[i]], ""), "");
  bm_cg_loop lr;
  bm_cg_loop_begin(f, &lr, bm_cg_i64(cg, 0), count, bm_cg_i64(cg, 1));
  LLVMValueRef acc = bm_cg_loop_phi(f, &lr, cg->t_f32, init_value(f, &op, 1));
  LLVMValueRef rc[BM_MAX_DIMS];
  bm_cg_unravel(f, lr.iv, nr, red, rc);
  LLVMValueRef off = base;
  for (int i = 0; i < nr; i++) off = LLVMBuildAdd(b, off, LLVMBuildMul(b, rc[i], xs[rd[i]], ""), "");
  bm_cg_loop_phi_next(&lr, acc, combine(f, &op, acc, bm_cg_load(f, xp, x->dtype, off, 1)));
  bm_cg_loop_end(f, &lr);
  LLVMValueRef v = acc;
  if (count_f) v = LLVMBuildFDiv(b, v, count_f, "");
  bm_cg_store(f, op_, n->dtype, l.iv, v, 1);
  bm_cg_loop_end(f, &l);
  return NULL;
}

/* ------------------------------------------------------------------ softmax */

typedef struct sm_ctx {
  LLVMValueRef x, out, off, mx, sum;
  bm_dtype xt, ot;
} sm_ctx;

/* out = exp(x - mx) / sum */
static void sm_norm_body(bm_cg_fn *f, LLVMValueRef i, int width, LLVMValueRef nvalid, void *vctx) {
  sm_ctx *c = vctx;
  LLVMBuilderRef b = f->cg->b;
  LLVMValueRef at = LLVMBuildAdd(b, c->off, i, "");
  LLVMValueRef v = nvalid ? bm_cg_load_partial(f, c->x, c->xt, at, width, nvalid)
                          : bm_cg_load(f, c->x, c->xt, at, width);
  v = bm_cg_exp(f, LLVMBuildFSub(b, v, bm_cg_splat(f, c->mx, width), ""));
  v = LLVMBuildFDiv(b, v, bm_cg_splat(f, c->sum, width), "");
  if (nvalid)
    bm_cg_store_partial(f, c->out, c->ot, at, v, width, nvalid);
  else
    bm_cg_store(f, c->out, c->ot, at, v, width);
}

typedef struct smc_ctx {
  LLVMValueRef x, out, base, L, inner; /* base: offset of (o, 0, 0) */
  bm_dtype xt, ot;
} smc_ctx;

/* softmax over a strided axis: lanes are `width` consecutive inner positions */
static void sm_col_body(bm_cg_fn *f, LLVMValueRef k, int width, LLVMValueRef nvalid, void *vctx) {
  smc_ctx *c = vctx;
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  LLVMTypeRef ty = width > 1 ? LLVMVectorType(cg->t_f32, (unsigned)width) : cg->t_f32;
  red_op mop = {BM_OP_SOFTMAX, true, false}, sop = {BM_OP_SUM, false, false};
  LLVMValueRef start = LLVMBuildAdd(b, c->base, k, "");
#define SM_LOAD(j)                                                                            \
  (nvalid ? bm_cg_load_partial(f, c->x, c->xt, LLVMBuildAdd(b, start, LLVMBuildMul(b, j, c->inner, ""), ""), \
                               width, nvalid)                                                 \
          : bm_cg_load(f, c->x, c->xt, LLVMBuildAdd(b, start, LLVMBuildMul(b, j, c->inner, ""), ""), width))
  bm_cg_loop l;
  bm_cg_loop_begin(f, &l, bm_cg_i64(cg, 0), c->L, bm_cg_i64(cg, 1));
  LLVMValueRef mx = bm_cg_loop_phi(f, &l, ty, init_value(f, &mop, width));
  bm_cg_loop_phi_next(&l, mx, combine(f, &mop, mx, SM_LOAD(l.iv)));
  bm_cg_loop_end(f, &l);
  bm_cg_loop_begin(f, &l, bm_cg_i64(cg, 0), c->L, bm_cg_i64(cg, 1));
  LLVMValueRef sum = bm_cg_loop_phi(f, &l, ty, init_value(f, &sop, width));
  LLVMValueRef e = bm_cg_exp(f, LLVMBuildFSub(b, SM_LOAD(l.iv), mx, ""));
  bm_cg_loop_phi_next(&l, sum, LLVMBuildFAdd(b, sum, e, ""));
  bm_cg_loop_end(f, &l);
  bm_cg_loop_begin(f, &l, bm_cg_i64(cg, 0), c->L, bm_cg_i64(cg, 1));
  LLVMValueRef v = LLVMBuildFDiv(b, bm_cg_exp(f, LLVMBuildFSub(b, SM_LOAD(l.iv), mx, "")), sum, "");
  LLVMValueRef at = LLVMBuildAdd(b, start, LLVMBuildMul(b, l.iv, c->inner, ""), "");
  if (nvalid)
    bm_cg_store_partial(f, c->out, c->ot, at, v, width, nvalid);
  else
    bm_cg_store(f, c->out, c->ot, at, v, width);
  bm_cg_loop_end(f, &l);
#undef SM_LOAD
}

static bm_status emit_softmax(bm_cg_fn *f, bm_node *n) {
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  const bm_node *x = n->in[0];
  int r = x->ndim, ax = n->a.axis;
  if (ax < 0 || ax >= r) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "softmax: axis %d of rank %d", ax, r);
  bool last = true;
  for (int d = ax + 1; d < r; d++)
    if (!bm_dim_is_one(x->shape[d])) last = false;
  int64_t per_o = dims_prod_max(cg, x, ax, r - 1);
  int64_t grain = RED_GRAIN / (per_o > 0 ? per_o : 1);
  LLVMValueRef lo, hi;
  bm_cg_task_range(f, ax, x->shape, grain < 1 ? 1 : grain, &n->tasks, &lo, &hi);
  LLVMValueRef xp = bm_cg_buf(f, 0), outp = bm_cg_buf(f, 1);
  LLVMValueRef L = bm_cg_dim(f, x->shape[ax]);
  LLVMValueRef inner = dims_prod(f, x, ax + 1, r - 1);
  bm_cg_loop l;
  bm_cg_loop_begin(f, &l, lo, hi, bm_cg_i64(cg, 1));
  if (last) {
    LLVMValueRef off = LLVMBuildMul(b, l.iv, L, "");
    red_op mop = {BM_OP_SOFTMAX, true, false}, sop = {BM_OP_SUM, false, false};
    LLVMValueRef mx = reduce_row(f, &mop, xp, x->dtype, off, L, NULL);
    LLVMValueRef sum = reduce_row(f, &sop, xp, x->dtype, off, L, mx);
    sm_ctx c = {xp, outp, off, mx, sum, x->dtype, n->dtype};
    bm_cg_vec_for(f, bm_cg_i64(cg, 0), L, cg->vec, false, sm_norm_body, &c);
  } else {
    smc_ctx c = {xp, outp, LLVMBuildMul(b, l.iv, LLVMBuildMul(b, L, inner, ""), ""), L, inner,
                 x->dtype, n->dtype};
    bm_cg_vec_for(f, bm_cg_i64(cg, 0), inner, cg->vec, false, sm_col_body, &c);
  }
  bm_cg_loop_end(f, &l);
  return NULL;
}

bm_status bm_cg_emit_reduce(bm_cg *cg, bm_node *n, const char *symbol) {
  bm_cg_fn f;
  bm_cg_fn_begin(cg, n, symbol, &f);
  bm_status s = n->op == BM_OP_SOFTMAX ? emit_softmax(&f, n) : emit_reduce_axes(&f, n);
  bm_cg_fn_end(&f);
  return s;
}
