/* norm.c - LLVM lowering of layer_norm and rms_norm (over the last dim, one
 * task unit per row) and group_norm (x (N, C, ...), one unit per (n, group)),
 * all with f32 statistics and the node's fused epilogue (GroupNorm+SiLU is
 * GROUP_NORM with a SILU epilogue). */
#include "cg.h"

#define NORM_GRAIN 16384 /* elements per task */

/* ------------------------------------------------------------------ statistics */

typedef struct stat_ctx {
  LLVMValueRef x, off, mean; /* mean: subtract and square (NULL: plain sum, or squares if sq) */
  bool sq;
  bm_dtype t;
  LLVMValueRef accv, accs;
} stat_ctx;

static void stat_body(bm_cg_fn *f, LLVMValueRef i, int width, LLVMValueRef nvalid, void *vctx) {
  stat_ctx *c = vctx;
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  LLVMValueRef v = bm_cg_load(f, c->x, c->t, LLVMBuildAdd(b, c->off, i, ""), width);
  if (c->mean) v = LLVMBuildFSub(b, v, bm_cg_splat(f, c->mean, width), "");
  if (c->mean || c->sq) v = LLVMBuildFMul(b, v, v, "");
  LLVMValueRef slot = width > 1 ? c->accv : c->accs;
  LLVMTypeRef ty = width > 1 ? LLVMVectorType(cg->t_f32, (unsigned)width) : cg->t_f32;
  LLVMBuildStore(b, LLVMBuildFAdd(b, LLVMBuildLoad2(b, ty, slot, ""), v, ""), slot);
}

/* sum over x[off .. off+len) of x, x^2 (sq) or (x - mean)^2 */
static LLVMValueRef stat(bm_cg_fn *f, LLVMValueRef x, bm_dtype t, LLVMValueRef off, LLVMValueRef len,
                         LLVMValueRef mean, bool sq) {
  bm_cg *cg = f->cg;
  int w = cg->vec;
  LLVMTypeRef vt = LLVMVectorType(cg->t_f32, (unsigned)w);
  stat_ctx c = {x, off, mean, sq, t, bm_cg_alloca(f, vt, "accv"), bm_cg_alloca(f, cg->t_f32, "accs")};
  LLVMBuildStore(cg->b, LLVMConstNull(vt), c.accv);
  LLVMBuildStore(cg->b, bm_cg_f32(cg, 0.0f), c.accs);
  bm_cg_vec_for(f, bm_cg_i64(cg, 0), len, w, true, stat_body, &c);
  LLVMValueRef v = bm_cg_hsum(f, LLVMBuildLoad2(cg->b, vt, c.accv, ""));
  return LLVMBuildFAdd(cg->b, v, LLVMBuildLoad2(cg->b, cg->t_f32, c.accs, ""), "");
}

/* ------------------------------------------------------------------ apply */

typedef struct apply_ctx {
  LLVMValueRef x, out, off;   /* element offset of column 0 */
  LLVMValueRef mean, scale;   /* y = (x - mean) * scale (mean NULL: x * scale) */
  LLVMValueRef w, b;          /* per-column weight / bias buffers (NULL = none) */
  LLVMValueRef wv, bv;        /* or scalar weight / bias values (group norm) */
  LLVMValueRef woff;          /* column offset into w/b */
  bm_dtype xt, ot, wt, bt;
  LLVMValueRef *coords;       /* epilogue coordinates; coords[last] set per vector */
  int last;
} apply_ctx;

static LLVMValueRef ld(bm_cg_fn *f, LLVMValueRef p, bm_dtype t, LLVMValueRef i, int width,
                       LLVMValueRef nvalid) {
  return nvalid ? bm_cg_load_partial(f, p, t, i, width, nvalid) : bm_cg_load(f, p, t, i, width);
}

static void apply_body(bm_cg_fn *f, LLVMValueRef i, int width, LLVMValueRef nvalid, void *vctx) {
  apply_ctx *c = vctx;
  LLVMBuilderRef b = f->cg->b;
  LLVMValueRef at = LLVMBuildAdd(b, c->off, i, "");
  LLVMValueRef y = ld(f, c->x, c->xt, at, width, nvalid);
  if (c->mean) y = LLVMBuildFSub(b, y, bm_cg_splat(f, c->mean, width), "");
  y = LLVMBuildFMul(b, y, bm_cg_splat(f, c->scale, width), "");
  LLVMValueRef wi = LLVMBuildAdd(b, c->woff, i, "");
  if (c->w) y = LLVMBuildFMul(b, y, ld(f, c->w, c->wt, wi, width, nvalid), "");
  if (c->wv) y = LLVMBuildFMul(b, y, bm_cg_splat(f, c->wv, width), "");
  if (c->b) y = LLVMBuildFAdd(b, y, ld(f, c->b, c->bt, wi, width, nvalid), "");
  if (c->bv) y = LLVMBuildFAdd(b, y, bm_cg_splat(f, c->bv, width), "");
  if (c->coords) {
    c->coords[c->last] = i;
    y = bm_cg_epilogue_partial(f, y, c->coords, width, nvalid);
  }
  if (nvalid)
    bm_cg_store_partial(f, c->out, c->ot, at, y, width, nvalid);
  else
    bm_cg_store(f, c->out, c->ot, at, y, width);
}

/* ------------------------------------------------------------------ layer / rms norm */

static bm_status emit_row_norm(bm_cg_fn *f, bm_node *n) {
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  const bm_node *x = n->in[0];
  int nd = x->ndim, base = bm_node_base_nin(n);
  if (nd < 1) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s: rank 0 input", bm_op_name(n->op));
  bool ln = n->op == BM_OP_LAYER_NORM;
  int64_t dmax = bm_cg_dim_max(cg, x->shape[nd - 1]);
  int64_t grain = NORM_GRAIN / (dmax > 0 ? dmax : 1);
  LLVMValueRef lo, hi;
  bm_cg_task_range(f, nd - 1, x->shape, grain < 1 ? 1 : grain, &n->tasks, &lo, &hi);
  LLVMValueRef D = bm_cg_dim(f, x->shape[nd - 1]);
  LLVMValueRef Df = LLVMBuildSIToFP(b, D, cg->t_f32, "");
  LLVMValueRef eps = bm_cg_f32(cg, n->a.eps);
  apply_ctx c = {0};
  c.x = bm_cg_buf(f, 0);
  c.out = bm_cg_buf(f, n->nin);
  c.xt = x->dtype;
  c.ot = n->dtype;
  c.woff = bm_cg_i64(cg, 0);
  if (base > 1) c.w = bm_cg_buf(f, 1), c.wt = n->in[1]->dtype;
  if (ln && base > 2) c.b = bm_cg_buf(f, 2), c.bt = n->in[2]->dtype;
  LLVMValueRef coords[BM_MAX_DIMS];
  bool epi_coords = n->a.prog.n > 0;
  bm_cg_loop l;
  bm_cg_loop_begin(f, &l, lo, hi, bm_cg_i64(cg, 1));
  c.off = LLVMBuildMul(b, l.iv, D, "");
  LLVMValueRef one = bm_cg_f32(cg, 1.0f);
  if (ln) {
    LLVMValueRef mean = LLVMBuildFDiv(b, stat(f, c.x, c.xt, c.off, D, NULL, false), Df, "mean");
    LLVMValueRef var = LLVMBuildFDiv(b, stat(f, c.x, c.xt, c.off, D, mean, false), Df, "var");
    LLVMValueRef sd = bm_cg_unary(f, BM_OP_SQRT, LLVMBuildFAdd(b, var, eps, ""));
    c.mean = mean;
    c.scale = LLVMBuildFDiv(b, one, sd, "rstd");
  } else {
    LLVMValueRef ss = stat(f, c.x, c.xt, c.off, D, NULL, true);
    LLVMValueRef sd = bm_cg_unary(f, BM_OP_SQRT, LLVMBuildFAdd(b, LLVMBuildFDiv(b, ss, Df, ""), eps, ""));
    c.scale = LLVMBuildFDiv(b, one, sd, "scale");
  }
  if (epi_coords) {
    bm_cg_unravel(f, l.iv, nd - 1, x->shape, coords);
    c.coords = coords;
    c.last = nd - 1;
  }
  bm_cg_vec_for(f, bm_cg_i64(cg, 0), D, cg->vec, false, apply_body, &c);
  bm_cg_loop_end(f, &l);
  return NULL;
}

/* ------------------------------------------------------------------ group norm */

static bm_status emit_group_norm(bm_cg_fn *f, bm_node *n) {
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  const bm_node *x = n->in[0];
  int nd = x->ndim, base = bm_node_base_nin(n);
  int64_t G = n->a.groups;
  if (nd < 2 || G <= 0 || !bm_dim_is_static(x->shape[1]) || x->shape[1].add % G != 0)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "group_norm: x must be (N, C, ...) with static C "
                          "divisible by %lld groups", (long long)G);
  int64_t C = x->shape[1].add, cpg = C / G;
  int64_t smax = 1;
  for (int d = 2; d < nd; d++) smax *= bm_cg_dim_max(cg, x->shape[d]);
  int64_t grain = NORM_GRAIN / (cpg * smax > 0 ? cpg * smax : 1);
  bm_dim units[2] = {x->shape[0], bm_dim_c(G)};
  LLVMValueRef lo, hi;
  bm_cg_task_range(f, 2, units, grain < 1 ? 1 : grain, &n->tasks, &lo, &hi);
  /* spatial = (rows of the last dim) x L; L = 1 for (N, C) inputs */
  LLVMValueRef L = nd > 2 ? bm_cg_dim(f, x->shape[nd - 1]) : bm_cg_i64(cg, 1);
  LLVMValueRef S = bm_cg_i64(cg, 1);
  for (int d = 2; d < nd; d++) S = LLVMBuildMul(b, S, bm_cg_dim(f, x->shape[d]), "");
  LLVMValueRef srows = nd > 2 ? LLVMBuildUDiv(b, S, bm_cg_imax(f, L, bm_cg_i64(cg, 1)), "") : bm_cg_i64(cg, 1);
  LLVMValueRef len = LLVMBuildMul(b, bm_cg_i64(cg, cpg), S, "");
  LLVMValueRef lenf = LLVMBuildSIToFP(b, len, cg->t_f32, "");
  apply_ctx c = {0};
  c.x = bm_cg_buf(f, 0);
  c.out = bm_cg_buf(f, n->nin);
  c.xt = x->dtype;
  c.ot = n->dtype;
  c.woff = bm_cg_i64(cg, 0);
  LLVMValueRef wp = base > 1 ? bm_cg_buf(f, 1) : NULL, bp = base > 2 ? bm_cg_buf(f, 2) : NULL;

  bm_cg_loop l;
  bm_cg_loop_begin(f, &l, lo, hi, bm_cg_i64(cg, 1));
  LLVMValueRef ni = LLVMBuildUDiv(b, l.iv, bm_cg_i64(cg, G), "");
  LLVMValueRef gi = LLVMBuildURem(b, l.iv, bm_cg_i64(cg, G), "");
  LLVMValueRef goff = LLVMBuildMul(b, l.iv, len, ""); /* (n*C + g*cpg) * S */
  LLVMValueRef mean = LLVMBuildFDiv(b, stat(f, c.x, c.xt, goff, len, NULL, false), lenf, "mean");
  LLVMValueRef var = LLVMBuildFDiv(b, stat(f, c.x, c.xt, goff, len, mean, false), lenf, "var");
  LLVMValueRef sd = bm_cg_unary(f, BM_OP_SQRT, LLVMBuildFAdd(b, var, bm_cg_f32(cg, n->a.eps), ""));
  c.mean = mean;
  c.scale = LLVMBuildFDiv(b, bm_cg_f32(cg, 1.0f), sd, "rstd");
  bm_cg_loop lc;
  bm_cg_loop_begin(f, &lc, bm_cg_i64(cg, 0), bm_cg_i64(cg, cpg), bm_cg_i64(cg, 1));
  LLVMValueRef ch = LLVMBuildAdd(b, LLVMBuildMul(b, gi, bm_cg_i64(cg, cpg), ""), lc.iv, "ch");
  c.wv = wp ? bm_cg_load(f, wp, n->in[1]->dtype, ch, 1) : NULL;
  c.bv = bp ? bm_cg_load(f, bp, n->in[2]->dtype, ch, 1) : NULL;
  LLVMValueRef choff = LLVMBuildAdd(b, goff, LLVMBuildMul(b, lc.iv, S, ""), "");
  bm_cg_loop lr;
  bm_cg_loop_begin(f, &lr, bm_cg_i64(cg, 0), srows, bm_cg_i64(cg, 1));
  c.off = LLVMBuildAdd(b, choff, LLVMBuildMul(b, lr.iv, L, ""), "");
  LLVMValueRef coords[BM_MAX_DIMS];
  c.coords = NULL;
  if (n->a.prog.n > 0) {
    coords[0] = ni;
    coords[1] = ch;
    if (nd > 2) bm_cg_unravel(f, lr.iv, nd - 3, x->shape + 2, coords + 2);
    c.coords = coords;
    c.last = nd - 1; /* for (N, C): the column index is 0 and replaces ch's... */
    if (nd == 2) c.last = BM_MAX_DIMS - 1; /* park the column in an unused slot */
  }
  bm_cg_vec_for(f, bm_cg_i64(cg, 0), L, cg->vec, false, apply_body, &c);
  bm_cg_loop_end(f, &lr);
  bm_cg_loop_end(f, &lc);
  bm_cg_loop_end(f, &l);
  return NULL;
}

bm_status bm_cg_emit_norm(bm_cg *cg, bm_node *n, const char *symbol) {
  bm_cg_fn f;
  bm_cg_fn_begin(cg, n, symbol, &f);
  bm_status s = n->op == BM_OP_GROUP_NORM ? emit_group_norm(&f, n) : emit_row_norm(&f, n);
  bm_cg_fn_end(&f);
  return s;
}
