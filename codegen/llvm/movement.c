/* movement.c - LLVM lowering of data movement: reshape (copy), permute,
 * slice, concat, gather, pad, nearest upsample, and dequant (i8 / packed i4,
 * per channel or group-wise). Copies between equal dtypes move raw bits;
 * rows of the output are the unit of work. */
#include <string.h>

#include "../../ir/interp.h"
#include "cg.h"

#define MV_GRAIN 32768 /* elements per task */

static bool is_int(bm_dtype t) {
  return t == BM_DTYPE_I8 || t == BM_DTYPE_I4 || t == BM_DTYPE_I32 || t == BM_DTYPE_I64;
}

static int64_t elem_bytes(bm_dtype t) { return (int64_t)bm_dtype_nbytes(t, 1); }

/* ------------------------------------------------------------------ element copies */

typedef struct copy_ctx {
  LLVMValueRef src, dst;
  bm_dtype st, dt;
  LLVMValueRef soff, doff;   /* element offsets of element 0 */
  LLVMValueRef sstride;      /* source stride (i64), NULL = 1 */
  int64_t sdiv;              /* source index = soff + (i / sdiv) * sstride (upsample); 1 = none */
} copy_ctx;

static void copy_body(bm_cg_fn *f, LLVMValueRef i, int width, LLVMValueRef nvalid, void *vctx) {
  copy_ctx *c = vctx;
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  LLVMValueRef di = LLVMBuildAdd(b, c->doff, i, "");
  LLVMValueRef si = c->sdiv > 1 ? LLVMBuildUDiv(b, i, bm_cg_i64(cg, c->sdiv), "") : i;
  if (c->sstride) si = LLVMBuildMul(b, si, c->sstride, "");
  si = LLVMBuildAdd(b, c->soff, si, "");
  if (c->st == c->dt) {
    bm_cg_store_raw(f, c->dst, c->dt, di, bm_cg_load_raw(f, c->src, c->st, si, width), width);
  } else if (is_int(c->st) && is_int(c->dt)) {
    bm_cg_store_i64(f, c->dst, c->dt, di, bm_cg_load_i64(f, c->src, c->st, si));
  } else {
    bm_cg_store(f, c->dst, c->dt, di, bm_cg_load(f, c->src, c->st, si, width), width);
  }
}

/* dst[doff + i] = src[soff + (i / sdiv) * sstride] for i in [0, count) */
static void copy_elems(bm_cg_fn *f, LLVMValueRef src, bm_dtype st, LLVMValueRef soff,
                       LLVMValueRef sstride, int64_t sdiv, LLVMValueRef dst, bm_dtype dt,
                       LLVMValueRef doff, LLVMValueRef count) {
  bm_cg *cg = f->cg;
  copy_ctx c = {src, dst, st, dt, soff, doff, sstride, sdiv};
  int width = 1;
  bool contiguous = !sstride && sdiv <= 1;
  if (contiguous && st != BM_DTYPE_I4 && dt != BM_DTYPE_I4) {
    if (st == dt) {
      width = (int)(cg->vec * 4 / elem_bytes(st)); /* one vector register of bytes */
      if (width < 1) width = 1;
    } else if (!(is_int(st) && is_int(dt))) {
      width = cg->vec;
    }
  }
  bm_cg_vec_for(f, bm_cg_i64(cg, 0), count, width, true, copy_body, &c);
}

typedef struct fill_ctx {
  LLVMValueRef dst, doff, value;
  bm_dtype dt;
} fill_ctx;

static void fill_body(bm_cg_fn *f, LLVMValueRef i, int width, LLVMValueRef nvalid, void *vctx) {
  fill_ctx *c = vctx;
  LLVMValueRef v = bm_cg_splat(f, c->value, width);
  bm_cg_store_raw(f, c->dst, c->dt, LLVMBuildAdd(f->cg->b, c->doff, i, ""), v, width);
}

/* The raw bits of `value` stored in dtype t, as an LLVM constant of t's storage type. */
static LLVMValueRef raw_const(bm_cg *cg, bm_dtype t, float value) {
  uint8_t buf[8] = {0};
  bm_store_f32(buf, t, 0, value);
  uint64_t bits = 0;
  memcpy(&bits, buf, sizeof buf);
  switch (t) {
    case BM_DTYPE_F32: return LLVMConstReal(cg->t_f32, value);
    case BM_DTYPE_F16:
    case BM_DTYPE_BF16: return LLVMConstInt(cg->t_i16, bits & 0xffff, 0);
    case BM_DTYPE_I32: return LLVMConstInt(cg->t_i32, bits & 0xffffffffu, 0);
    case BM_DTYPE_I64: return LLVMConstInt(cg->t_i64, bits, 0);
    default: return LLVMConstInt(cg->t_i8, bits & 0xff, 0);
  }
}

static void fill_elems(bm_cg_fn *f, LLVMValueRef dst, bm_dtype dt, LLVMValueRef doff,
                       LLVMValueRef count, float value) {
  bm_cg *cg = f->cg;
  fill_ctx c = {dst, doff, raw_const(cg, dt, value), dt};
  int width = (int)(cg->vec * 4 / elem_bytes(dt));
  bm_cg_vec_for(f, bm_cg_i64(cg, 0), count, width < 1 ? 1 : width, true, fill_body, &c);
}

/* ------------------------------------------------------------------ rows */

/* Row-major strides of a node's shape as i64 values. */
static void strides_of(bm_cg_fn *f, const bm_node *t, LLVMValueRef *st) {
  LLVMValueRef s = bm_cg_i64(f->cg, 1);
  for (int d = t->ndim - 1; d >= 0; d--) {
    st[d] = s;
    s = LLVMBuildMul(f->cg->b, s, bm_cg_dim(f, t->shape[d]), "");
  }
}

/* Opens a loop over the output rows (all dims but the last) owned by this
 * kernel call; sets coords[0..nd-2] of the row and *row. Close with bm_cg_loop_end. */
static void rows_begin(bm_cg_fn *f, bm_node *n, bm_cg_loop *l, LLVMValueRef *coords,
                       LLVMValueRef *row) {
  bm_cg *cg = f->cg;
  int nd = n->ndim;
  int64_t dmax = bm_cg_dim_max(cg, n->shape[nd - 1]);
  int64_t grain = MV_GRAIN / (dmax > 0 ? dmax : 1);
  LLVMValueRef lo, hi;
  bm_cg_task_range(f, nd - 1, n->shape, grain < 1 ? 1 : grain, &n->tasks, &lo, &hi);
  bm_cg_loop_begin(f, l, lo, hi, bm_cg_i64(cg, 1));
  *row = l->iv;
  bm_cg_unravel(f, l->iv, nd - 1, n->shape, coords);
}

/* ------------------------------------------------------------------ ops */

static bm_status emit_reshape(bm_cg_fn *f, bm_node *n) {
  LLVMValueRef lo, hi;
  bm_cg_task_range(f, n->ndim, n->shape, MV_GRAIN, &n->tasks, &lo, &hi);
  const bm_node *x = n->in[0];
  copy_elems(f, bm_cg_buf(f, 0), x->dtype, lo, NULL, 1, bm_cg_buf(f, 1), n->dtype, lo,
             LLVMBuildSub(f->cg->b, hi, lo, ""));
  return NULL;
}

static bm_status emit_permute(bm_cg_fn *f, bm_node *n) {
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  const bm_node *x = n->in[0];
  int nd = n->ndim;
  if (nd == 0) return emit_reshape(f, n);
  LLVMValueRef xs[BM_MAX_DIMS], coords[BM_MAX_DIMS], row;
  strides_of(f, x, xs);
  bm_cg_loop l;
  rows_begin(f, n, &l, coords, &row);
  LLVMValueRef base = bm_cg_i64(cg, 0);
  for (int i = 0; i < nd - 1; i++)
    base = LLVMBuildAdd(b, base, LLVMBuildMul(b, coords[i], xs[n->a.perm[i]], ""), "");
  int pl = n->a.perm[nd - 1];
  LLVMValueRef D = bm_cg_dim(f, n->shape[nd - 1]);
  copy_elems(f, bm_cg_buf(f, 0), x->dtype, base, pl == x->ndim - 1 ? NULL : xs[pl], 1,
             bm_cg_buf(f, 1), n->dtype, LLVMBuildMul(b, row, D, ""), D);
  bm_cg_loop_end(f, &l);
  return NULL;
}

static bm_status emit_slice(bm_cg_fn *f, bm_node *n) {
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  const bm_node *x = n->in[0];
  int nd = n->ndim, ax = n->a.axis;
  if (ax < 0 || ax >= nd || n->a.step <= 0)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "slice: axis %d / step %lld", ax,
                          (long long)n->a.step);
  /* begin, python-style, clamped to [0, dim] at run time (dim may be symbolic) */
  LLVMValueRef dim = bm_cg_dim(f, x->shape[ax]);
  LLVMValueRef bg = bm_cg_i64(cg, n->a.begin);
  if (n->a.begin < 0) bg = LLVMBuildAdd(b, bg, dim, "");
  bg = bm_cg_imin(f, bm_cg_imax(f, bg, bm_cg_i64(cg, 0)), dim);
  LLVMValueRef xs[BM_MAX_DIMS], coords[BM_MAX_DIMS], row;
  strides_of(f, x, xs);
  bm_cg_loop l;
  rows_begin(f, n, &l, coords, &row);
  LLVMValueRef base = LLVMBuildMul(b, bg, xs[ax], "");
  for (int i = 0; i < nd - 1; i++) {
    LLVMValueRef c = coords[i];
    if (i == ax) c = LLVMBuildMul(b, c, bm_cg_i64(cg, n->a.step), "");
    base = LLVMBuildAdd(b, base, LLVMBuildMul(b, c, xs[i], ""), "");
  }
  LLVMValueRef stride = ax == nd - 1 && n->a.step != 1 ? bm_cg_i64(cg, n->a.step) : NULL;
  LLVMValueRef D = bm_cg_dim(f, n->shape[nd - 1]);
  copy_elems(f, bm_cg_buf(f, 0), x->dtype, base, stride, 1, bm_cg_buf(f, 1), n->dtype,
             LLVMBuildMul(b, row, D, ""), D);
  bm_cg_loop_end(f, &l);
  return NULL;
}

/* out viewed as (outer, L) with L = dim[ax] * inner: each input k owns the
 * column segment [at_k * inner, (at_k + d_k) * inner) of every row. Tasks
 * are chunks of output elements, so concat along axis 0 is parallel too. */
static bm_status emit_concat(bm_cg_fn *f, bm_node *n) {
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  int nd = n->ndim, ax = n->a.axis;
  if (ax < 0 || ax >= nd) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "concat: axis %d", ax);
  LLVMValueRef lo, hi;
  bm_cg_task_range(f, nd, n->shape, MV_GRAIN, &n->tasks, &lo, &hi);
  LLVMValueRef inner = bm_cg_i64(cg, 1);
  for (int d = ax + 1; d < nd; d++) inner = LLVMBuildMul(b, inner, bm_cg_dim(f, n->shape[d]), "");
  LLVMValueRef L = LLVMBuildMul(b, bm_cg_dim(f, n->shape[ax]), inner, "L");
  LLVMValueRef Lnz = bm_cg_imax(f, L, bm_cg_i64(cg, 1));
  LLVMValueRef r0 = LLVMBuildUDiv(b, lo, Lnz, "");
  LLVMValueRef r1 = LLVMBuildUDiv(b, LLVMBuildAdd(b, hi, LLVMBuildSub(b, Lnz, bm_cg_i64(cg, 1), ""), ""), Lnz, "");
  LLVMValueRef out = bm_cg_buf(f, n->nin);
  bm_cg_loop l;
  bm_cg_loop_begin(f, &l, r0, r1, bm_cg_i64(cg, 1));
  LLVMValueRef rs = LLVMBuildMul(b, l.iv, L, "");
  LLVMValueRef cs = bm_cg_imax(f, LLVMBuildSub(b, lo, rs, ""), bm_cg_i64(cg, 0));
  LLVMValueRef ce = bm_cg_imin(f, LLVMBuildSub(b, hi, rs, ""), L);
  LLVMValueRef at = bm_cg_i64(cg, 0);
  for (int k = 0; k < n->nin; k++) {
    const bm_node *x = n->in[k];
    LLVMValueRef len = LLVMBuildMul(b, bm_cg_dim(f, x->shape[ax]), inner, "");
    LLVMValueRef s0 = bm_cg_imax(f, cs, at);
    LLVMValueRef s1 = bm_cg_imin(f, ce, LLVMBuildAdd(b, at, len, ""));
    bm_cg_if c;
    bm_cg_if_begin(f, &c, LLVMBuildICmp(b, LLVMIntSLT, s0, s1, ""));
    LLVMValueRef soff = LLVMBuildAdd(b, LLVMBuildMul(b, l.iv, len, ""), LLVMBuildSub(b, s0, at, ""), "");
    copy_elems(f, bm_cg_buf(f, k), x->dtype, soff, NULL, 1, out, n->dtype,
               LLVMBuildAdd(b, rs, s0, ""), LLVMBuildSub(b, s1, s0, ""));
    bm_cg_if_end(f, &c);
    at = LLVMBuildAdd(b, at, len, "");
  }
  bm_cg_loop_end(f, &l);
  return NULL;
}

/* Indices outside [0, V) are clamped (the kernel cannot report errors; the
 * interpreter rejects them). */
static bm_status emit_gather(bm_cg_fn *f, bm_node *n) {
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  const bm_node *table = n->in[0], *idx = n->in[1];
  if (table->ndim < 1) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "gather: table rank 0");
  LLVMValueRef row = bm_cg_i64(cg, 1);
  int64_t row_max = 1;
  for (int d = 1; d < table->ndim; d++) {
    row = LLVMBuildMul(b, row, bm_cg_dim(f, table->shape[d]), "");
    row_max *= bm_cg_dim_max(cg, table->shape[d]);
  }
  int64_t grain = MV_GRAIN / (row_max > 0 ? row_max : 1);
  LLVMValueRef lo, hi;
  bm_cg_task_range(f, idx->ndim, idx->shape, grain < 1 ? 1 : grain, &n->tasks, &lo, &hi);
  LLVMValueRef V = bm_cg_dim(f, table->shape[0]);
  LLVMValueRef tp = bm_cg_buf(f, 0), ip = bm_cg_buf(f, 1), out = bm_cg_buf(f, 2);
  bm_cg_if nonempty;
  bm_cg_if_begin(f, &nonempty, LLVMBuildICmp(b, LLVMIntSGT, V, bm_cg_i64(cg, 0), ""));
  bm_cg_loop l;
  bm_cg_loop_begin(f, &l, lo, hi, bm_cg_i64(cg, 1));
  LLVMValueRef v = bm_cg_load_i64(f, ip, idx->dtype, l.iv);
  v = bm_cg_imin(f, bm_cg_imax(f, v, bm_cg_i64(cg, 0)), LLVMBuildSub(b, V, bm_cg_i64(cg, 1), ""));
  copy_elems(f, tp, table->dtype, LLVMBuildMul(b, v, row, ""), NULL, 1, out, n->dtype,
             LLVMBuildMul(b, l.iv, row, ""), row);
  bm_cg_loop_end(f, &l);
  bm_cg_if_end(f, &nonempty);
  return NULL;
}

static bm_status emit_pad(bm_cg_fn *f, bm_node *n) {
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  const bm_node *x = n->in[0];
  int nd = n->ndim;
  if (nd == 0) return emit_reshape(f, n);
  LLVMValueRef xs[BM_MAX_DIMS], coords[BM_MAX_DIMS], row;
  strides_of(f, x, xs);
  LLVMValueRef outp = bm_cg_buf(f, 1);
  LLVMValueRef Do = bm_cg_dim(f, n->shape[nd - 1]);
  bm_cg_loop l;
  rows_begin(f, n, &l, coords, &row);
  LLVMValueRef orow = LLVMBuildMul(b, row, Do, "");
  /* is the row inside the input? */
  LLVMValueRef inside = LLVMConstInt(cg->t_i1, 1, 0), base = bm_cg_i64(cg, 0);
  for (int d = 0; d < nd - 1; d++) {
    LLVMValueRef ci = LLVMBuildSub(b, coords[d], bm_cg_i64(cg, n->a.pads[2 * d]), "");
    LLVMValueRef ok = LLVMBuildAnd(
        b, LLVMBuildICmp(b, LLVMIntSGE, ci, bm_cg_i64(cg, 0), ""),
        LLVMBuildICmp(b, LLVMIntSLT, ci, bm_cg_dim(f, x->shape[d]), ""), "");
    inside = LLVMBuildAnd(b, inside, ok, "");
    base = LLVMBuildAdd(b, base, LLVMBuildMul(b, ci, xs[d], ""), "");
  }
  LLVMValueRef pb = bm_cg_i64(cg, n->a.pads[2 * (nd - 1)]);
  LLVMValueRef Di = bm_cg_dim(f, x->shape[nd - 1]);
  LLVMValueRef c0 = bm_cg_imin(f, bm_cg_imax(f, pb, bm_cg_i64(cg, 0)), Do);
  LLVMValueRef c1 = bm_cg_imax(f, bm_cg_imin(f, LLVMBuildAdd(b, pb, Di, ""), Do), c0);
  /* outside rows copy nothing: c0 = c1 = 0 */
  c0 = LLVMBuildSelect(b, inside, c0, bm_cg_i64(cg, 0), "");
  c1 = LLVMBuildSelect(b, inside, c1, bm_cg_i64(cg, 0), "");
  fill_elems(f, outp, n->dtype, orow, c0, n->a.value);
  copy_elems(f, bm_cg_buf(f, 0), x->dtype, LLVMBuildSub(b, LLVMBuildAdd(b, base, c0, ""), pb, ""),
             NULL, 1, outp, n->dtype, LLVMBuildAdd(b, orow, c0, ""), LLVMBuildSub(b, c1, c0, ""));
  fill_elems(f, outp, n->dtype, LLVMBuildAdd(b, orow, c1, ""), LLVMBuildSub(b, Do, c1, ""),
             n->a.value);
  bm_cg_loop_end(f, &l);
  return NULL;
}

static bm_status emit_upsample(bm_cg_fn *f, bm_node *n) {
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  const bm_node *x = n->in[0];
  int nd = n->ndim;
  int64_t s = n->a.scale;
  if (nd < 2 || s <= 0) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "upsample: rank %d scale %lld", nd, (long long)s);
  LLVMValueRef xs[BM_MAX_DIMS], coords[BM_MAX_DIMS], row;
  strides_of(f, x, xs);
  bm_cg_loop l;
  rows_begin(f, n, &l, coords, &row);
  LLVMValueRef base = bm_cg_i64(cg, 0);
  for (int d = 0; d < nd - 1; d++) {
    LLVMValueRef c = coords[d];
    if (d == nd - 2) c = LLVMBuildUDiv(b, c, bm_cg_i64(cg, s), "");
    base = LLVMBuildAdd(b, base, LLVMBuildMul(b, c, xs[d], ""), "");
  }
  LLVMValueRef D = bm_cg_dim(f, n->shape[nd - 1]);
  copy_elems(f, bm_cg_buf(f, 0), x->dtype, base, NULL, s, bm_cg_buf(f, 1), n->dtype,
             LLVMBuildMul(b, row, D, ""), D);
  bm_cg_loop_end(f, &l);
  return NULL;
}

/* ------------------------------------------------------------------ dequant */

typedef struct dq_ctx {
  LLVMValueRef q, out, scale; /* scale: the group's f32 scale (scalar) */
  LLVMValueRef rowoff;        /* element offset of the row */
  bm_dtype qt, ot;
  bool i4_pairs;              /* packed i4 with even offsets: unpack bytes */
} dq_ctx;

/* `width` (even) i4 values starting at an even element index, as f32 */
static LLVMValueRef load_i4_pairs(bm_cg_fn *f, LLVMValueRef base, LLVMValueRef idx, int width) {
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  int h = width / 2;
  LLVMValueRef bi = LLVMBuildLShr(b, idx, bm_cg_i64(cg, 1), "");
  LLVMValueRef p = LLVMBuildGEP2(b, cg->t_i8, base, &bi, 1, "");
  LLVMTypeRef vt = LLVMVectorType(cg->t_i8, (unsigned)h);
  LLVMValueRef by = LLVMBuildLoad2(b, vt, p, "");
  LLVMSetAlignment(by, 1);
  LLVMValueRef four[32];
  for (int i = 0; i < h; i++) four[i] = LLVMConstInt(cg->t_i8, 4, 0);
  LLVMValueRef fv = LLVMConstVector(four, (unsigned)h);
  LLVMValueRef lo = LLVMBuildAShr(b, LLVMBuildShl(b, by, fv, ""), fv, "");
  LLVMValueRef hi = LLVMBuildAShr(b, by, fv, "");
  LLVMValueRef mask[64];
  for (int i = 0; i < h; i++) {
    mask[2 * i] = bm_cg_i32(cg, i);
    mask[2 * i + 1] = bm_cg_i32(cg, h + i);
  }
  LLVMValueRef v = LLVMBuildShuffleVector(b, lo, hi, LLVMConstVector(mask, (unsigned)width), "");
  return LLVMBuildSIToFP(b, v, LLVMVectorType(cg->t_f32, (unsigned)width), "");
}

static void dq_body(bm_cg_fn *f, LLVMValueRef k, int width, LLVMValueRef nvalid, void *vctx) {
  dq_ctx *c = vctx;
  LLVMBuilderRef b = f->cg->b;
  LLVMValueRef e = LLVMBuildAdd(b, c->rowoff, k, "");
  LLVMValueRef v;
  if (width > 1 && c->i4_pairs)
    v = load_i4_pairs(f, c->q, e, width);
  else
    v = nvalid ? bm_cg_load_partial(f, c->q, c->qt, e, width, nvalid)
               : bm_cg_load(f, c->q, c->qt, e, width);
  v = LLVMBuildFMul(b, v, bm_cg_splat(f, c->scale, width), "");
  if (nvalid)
    bm_cg_store_partial(f, c->out, c->ot, e, v, width, nvalid);
  else
    bm_cg_store(f, c->out, c->ot, e, v, width);
}

static bm_status emit_dequant(bm_cg_fn *f, bm_node *n) {
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  const bm_node *q = n->in[0], *sc = n->in[1];
  if (q->ndim != 2 || sc->ndim != 2)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "dequant: q and scale must have rank 2");
  if (q->dtype != BM_DTYPE_I8 && q->dtype != BM_DTYPE_I4)
    return bm_status_make(BM_ERR_UNSUPPORTED, "dequant: q is %s (i8 or i4 expected)", bm_dtype_name(q->dtype));
  if (!bm_dim_is_static(q->shape[1]) || !bm_dim_is_static(sc->shape[1]) || sc->shape[1].add <= 0 ||
      q->shape[1].add % sc->shape[1].add != 0)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "dequant: K and G must be static with K %% G == 0");
  int64_t K = q->shape[1].add, G = sc->shape[1].add, gs = K / G;
  int64_t grain = MV_GRAIN / (K > 0 ? K : 1);
  LLVMValueRef lo, hi;
  bm_cg_task_range(f, 1, q->shape, grain < 1 ? 1 : grain, &n->tasks, &lo, &hi);
  dq_ctx c = {bm_cg_buf(f, 0), bm_cg_buf(f, 2), NULL, NULL, q->dtype, n->dtype, false};
  LLVMValueRef sp = bm_cg_buf(f, 1);
  int width = cg->vec;
  bool scalar_tail = false;
  if (q->dtype == BM_DTYPE_I4) {
    /* every group starts at an even element when K and the group size are even */
    c.i4_pairs = K % 2 == 0 && gs % 2 == 0;
    scalar_tail = true;
    if (!c.i4_pairs) width = 1;
  }
  bm_cg_loop rows;
  bm_cg_loop_begin(f, &rows, lo, hi, bm_cg_i64(cg, 1));
  c.rowoff = LLVMBuildMul(b, rows.iv, bm_cg_i64(cg, K), "");
  bm_cg_loop grp;
  bm_cg_loop_begin(f, &grp, bm_cg_i64(cg, 0), bm_cg_i64(cg, G), bm_cg_i64(cg, 1));
  c.scale = bm_cg_load(f, sp, sc->dtype,
                       LLVMBuildAdd(b, LLVMBuildMul(b, rows.iv, bm_cg_i64(cg, G), ""), grp.iv, ""), 1);
  LLVMValueRef k0 = LLVMBuildMul(b, grp.iv, bm_cg_i64(cg, gs), "");
  bm_cg_vec_for(f, k0, LLVMBuildAdd(b, k0, bm_cg_i64(cg, gs), ""), width, scalar_tail, dq_body, &c);
  bm_cg_loop_end(f, &grp);
  bm_cg_loop_end(f, &rows);
  return NULL;
}

/* ------------------------------------------------------------------ entry */

bm_status bm_cg_emit_movement(bm_cg *cg, bm_node *n, const char *symbol) {
  bm_cg_fn f;
  bm_cg_fn_begin(cg, n, symbol, &f);
  bm_status s;
  switch (n->op) {
    case BM_OP_RESHAPE: s = emit_reshape(&f, n); break;
    case BM_OP_PERMUTE: s = emit_permute(&f, n); break;
    case BM_OP_SLICE: s = emit_slice(&f, n); break;
    case BM_OP_CONCAT: s = emit_concat(&f, n); break;
    case BM_OP_GATHER: s = emit_gather(&f, n); break;
    case BM_OP_PAD: s = emit_pad(&f, n); break;
    case BM_OP_UPSAMPLE: s = emit_upsample(&f, n); break;
    case BM_OP_DEQUANT: s = emit_dequant(&f, n); break;
    default:
      s = bm_status_make(BM_ERR_INTERNAL, "movement emitter got %s", bm_op_name(n->op));
  }
  bm_cg_fn_end(&f);
  return s;
}
