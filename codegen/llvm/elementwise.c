/* elementwise.c - LLVM lowering of elementwise ops: unary, binary with
 * numpy broadcasting, cast, and FUSED programs. Tasks are chunks of about
 * 16K output elements; inner loops are <vec x float> with a masked tail. */
#include "cg.h"

#define EW_GRAIN 16384

typedef enum { IN_SAME, IN_SCALAR, IN_BCAST } in_kind;

typedef struct ew_ctx {
  bm_node *n;
  int nin;
  in_kind kind[BM_MAX_IN];
  bool contig[BM_MAX_IN];     /* IN_BCAST: last dim runs with the output's */
  LLVMValueRef ptr[BM_MAX_IN];
  LLVMValueRef scalar[BM_MAX_IN]; /* IN_SCALAR, and IN_BCAST with !contig: value of this row */
  LLVMValueRef base[BM_MAX_IN];   /* IN_BCAST contig: offset of this row */
  LLVMValueRef out;
  LLVMValueRef row_off;           /* output offset of the row (row path), else NULL */
} ew_ctx;

/* Does input `in` have the output's layout (same element order)? */
static bool same_layout(const bm_node *in, const bm_node *out) {
  for (int od = 0; od < out->ndim; od++) {
    int d = od - (out->ndim - in->ndim);
    bm_dim id = d >= 0 ? in->shape[d] : bm_dim_c(1);
    if (!bm_dim_eq(id, out->shape[od]) && !(bm_dim_is_one(id) && bm_dim_is_one(out->shape[od])))
      return false;
  }
  return in->ndim <= out->ndim;
}

static bool all_ones(const bm_node *in) {
  for (int d = 0; d < in->ndim; d++)
    if (!bm_dim_is_one(in->shape[d])) return false;
  return true;
}

static LLVMValueRef compute(bm_cg_fn *f, ew_ctx *c, LLVMValueRef *x) {
  bm_node *n = c->n;
  if (n->op == BM_OP_FUSED) return bm_cg_prog(f, &n->a.prog, x);
  if (bm_op_table[n->op].flags & BM_OPF_BINARY) return bm_cg_binary(f, n->op, x[0], x[1]);
  return bm_cg_unary(f, n->op, x[0]);
}

/* body over `width` output elements at index idx (flat path: idx is the
 * output offset; row path: idx is the column within the row) */
static void ew_body(bm_cg_fn *f, LLVMValueRef idx, int width, LLVMValueRef nvalid, void *vctx) {
  ew_ctx *c = vctx;
  LLVMBuilderRef b = f->cg->b;
  LLVMValueRef oidx = c->row_off ? LLVMBuildAdd(b, c->row_off, idx, "") : idx;
  LLVMValueRef x[BM_MAX_IN];
  for (int i = 0; i < c->nin; i++) {
    bm_dtype t = c->n->in[i]->dtype;
    LLVMValueRef at;
    switch (c->kind[i]) {
      case IN_SCALAR: x[i] = bm_cg_splat(f, c->scalar[i], width); continue;
      case IN_SAME: at = oidx; break;
      default:
        if (!c->contig[i]) {
          x[i] = bm_cg_splat(f, c->scalar[i], width);
          continue;
        }
        at = LLVMBuildAdd(b, c->base[i], idx, "");
        break;
    }
    x[i] = nvalid ? bm_cg_load_partial(f, c->ptr[i], t, at, width, nvalid)
                  : bm_cg_load(f, c->ptr[i], t, at, width);
  }
  LLVMValueRef y = compute(f, c, x);
  if (nvalid)
    bm_cg_store_partial(f, c->out, c->n->dtype, oidx, y, width, nvalid);
  else
    bm_cg_store(f, c->out, c->n->dtype, oidx, y, width);
}

static bool is_int(bm_dtype t) {
  return t == BM_DTYPE_I8 || t == BM_DTYPE_I4 || t == BM_DTYPE_I32 || t == BM_DTYPE_I64;
}

bm_status bm_cg_emit_elementwise(bm_cg *cg, bm_node *n, const char *symbol) {
  ew_ctx c = {.n = n, .nin = n->nin};
  if (n->op != BM_OP_FUSED && n->nin != ((bm_op_table[n->op].flags & BM_OPF_BINARY) ? 2 : 1))
    return bm_status_make(BM_ERR_INTERNAL, "elementwise %s with %d inputs", bm_op_name(n->op), n->nin);
  if (n->op == BM_OP_FUSED && n->a.prog.nin != n->nin)
    return bm_status_make(BM_ERR_INTERNAL, "fused program has %d inputs, node %d", n->a.prog.nin, n->nin);

  bm_cg_fn f;
  bm_cg_fn_begin(cg, n, symbol, &f);
  LLVMBuilderRef b = cg->b;
  LLVMValueRef lo, hi;
  bm_cg_task_range(&f, n->ndim, n->shape, EW_GRAIN, &n->tasks, &lo, &hi);
  c.out = bm_cg_buf(&f, n->nin);

  /* integer -> integer cast: exact, saturating */
  if (n->op == BM_OP_CAST && is_int(n->dtype) && is_int(n->in[0]->dtype)) {
    LLVMValueRef in = bm_cg_buf(&f, 0);
    bm_cg_loop l;
    bm_cg_loop_begin(&f, &l, lo, hi, bm_cg_i64(cg, 1));
    bm_cg_store_i64(&f, c.out, n->dtype, l.iv, bm_cg_load_i64(&f, in, n->in[0]->dtype, l.iv));
    bm_cg_loop_end(&f, &l);
    bm_cg_fn_end(&f);
    return NULL;
  }

  bool any_bcast = false;
  for (int i = 0; i < n->nin; i++) {
    const bm_node *in = n->in[i];
    c.ptr[i] = bm_cg_buf(&f, i);
    if (same_layout(in, n)) {
      c.kind[i] = IN_SAME;
    } else if (all_ones(in)) {
      c.kind[i] = IN_SCALAR;
      c.scalar[i] = bm_cg_load(&f, c.ptr[i], in->dtype, bm_cg_i64(cg, 0), 1);
    } else {
      c.kind[i] = IN_BCAST;
      c.contig[i] = in->ndim >= 1 && !bm_dim_is_one(in->shape[in->ndim - 1]);
      any_bcast = true;
    }
  }
  int w = cg->vec;
  /* i4 inputs are unpacked lane by lane: keep those loops scalar */
  for (int i = 0; i < n->nin; i++)
    if (n->in[i]->dtype == BM_DTYPE_I4) w = 1;

  if (!any_bcast || n->ndim == 0) {
    bm_cg_vec_for(&f, lo, hi, w, false, ew_body, &c);
    bm_cg_fn_end(&f);
    return NULL;
  }

  /* rows of the last output dim; broadcast inputs get a per-row base offset */
  int nd = n->ndim;
  LLVMValueRef D = bm_cg_dim(&f, n->shape[nd - 1]);
  LLVMValueRef Dnz = bm_cg_imax(&f, D, bm_cg_i64(cg, 1));
  LLVMValueRef r0 = LLVMBuildUDiv(b, lo, Dnz, "");
  LLVMValueRef r1 = LLVMBuildUDiv(b, LLVMBuildAdd(b, hi, LLVMBuildSub(b, Dnz, bm_cg_i64(cg, 1), ""), ""), Dnz, "");
  bm_cg_loop rows;
  bm_cg_loop_begin(&f, &rows, r0, r1, bm_cg_i64(cg, 1));
  LLVMValueRef row_start = LLVMBuildMul(b, rows.iv, D, "");
  LLVMValueRef cs = bm_cg_imax(&f, LLVMBuildSub(b, lo, row_start, ""), bm_cg_i64(cg, 0));
  LLVMValueRef ce = bm_cg_imin(&f, LLVMBuildSub(b, hi, row_start, ""), D);
  LLVMValueRef coords[BM_MAX_DIMS];
  bm_cg_unravel(&f, rows.iv, nd - 1, n->shape, coords);
  coords[nd - 1] = bm_cg_i64(cg, 0);
  for (int i = 0; i < n->nin; i++) {
    if (c.kind[i] != IN_BCAST) continue;
    LLVMValueRef off = bm_cg_bcast_offset(&f, n->in[i], n, coords);
    if (c.contig[i])
      c.base[i] = off;
    else
      c.scalar[i] = bm_cg_load(&f, c.ptr[i], n->in[i]->dtype, off, 1);
  }
  c.row_off = row_start;
  bm_cg_vec_for(&f, cs, ce, w, false, ew_body, &c);
  bm_cg_loop_end(&f, &rows);
  bm_cg_fn_end(&f);
  return NULL;
}
