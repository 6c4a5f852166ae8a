/* rope.c - LLVM lowering of rotary position embedding: x (B, S, H, D), pos
 * (B, S) or (S) integer, freqs (R/2) f32. One task unit per (b, s) row: the
 * row's cos/sin table (cosf/sinf of pos * freq in f32, as the reference)
 * goes to scratch, then every head is rotated (mode 0: halves, vectorized;
 * mode 1: interleaved pairs). Channels past R are copied. */
#include "cg.h"

#define ROPE_GRAIN 16384

typedef struct rope_ctx {
  LLVMValueRef x, out, off, cs, sn; /* off: element offset of the head; cs/sn: f32 tables */
  LLVMValueRef half;
  bm_dtype t;
} rope_ctx;

static LLVMValueRef ld(bm_cg_fn *f, LLVMValueRef p, bm_dtype t, LLVMValueRef i, int width,
                       LLVMValueRef nvalid) {
  return nvalid ? bm_cg_load_partial(f, p, t, i, width, nvalid) : bm_cg_load(f, p, t, i, width);
}

static void st(bm_cg_fn *f, LLVMValueRef p, bm_dtype t, LLVMValueRef i, LLVMValueRef v, int width,
               LLVMValueRef nvalid) {
  if (nvalid)
    bm_cg_store_partial(f, p, t, i, v, width, nvalid);
  else
    bm_cg_store(f, p, t, i, v, width);
}

/* mode 0: (a, b) = (x[i], x[i + half]) */
static void halves_body(bm_cg_fn *f, LLVMValueRef i, int width, LLVMValueRef nvalid, void *vctx) {
  rope_ctx *c = vctx;
  LLVMBuilderRef b = f->cg->b;
  LLVMValueRef ia = LLVMBuildAdd(b, c->off, i, "");
  LLVMValueRef ib = LLVMBuildAdd(b, ia, c->half, "");
  LLVMValueRef a = ld(f, c->x, c->t, ia, width, nvalid), bb = ld(f, c->x, c->t, ib, width, nvalid);
  LLVMValueRef co = ld(f, c->cs, BM_DTYPE_F32, i, width, nvalid);
  LLVMValueRef si = ld(f, c->sn, BM_DTYPE_F32, i, width, nvalid);
  LLVMValueRef ya = LLVMBuildFSub(b, LLVMBuildFMul(b, a, co, ""), LLVMBuildFMul(b, bb, si, ""), "");
  LLVMValueRef yb = LLVMBuildFAdd(b, LLVMBuildFMul(b, bb, co, ""), LLVMBuildFMul(b, a, si, ""), "");
  st(f, c->out, c->t, ia, ya, width, nvalid);
  st(f, c->out, c->t, ib, yb, width, nvalid);
}

/* mode 1: (a, b) = (x[2i], x[2i + 1]) */
static void pairs_body(bm_cg_fn *f, LLVMValueRef i, int width, LLVMValueRef nvalid, void *vctx) {
  rope_ctx *c = vctx;
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  LLVMValueRef ia = LLVMBuildAdd(b, c->off, LLVMBuildMul(b, i, bm_cg_i64(cg, 2), ""), "");
  LLVMValueRef ib = LLVMBuildAdd(b, ia, bm_cg_i64(cg, 1), "");
  LLVMValueRef a = bm_cg_load(f, c->x, c->t, ia, 1), bb = bm_cg_load(f, c->x, c->t, ib, 1);
  LLVMValueRef co = bm_cg_load(f, c->cs, BM_DTYPE_F32, i, 1);
  LLVMValueRef si = bm_cg_load(f, c->sn, BM_DTYPE_F32, i, 1);
  LLVMValueRef ya = LLVMBuildFSub(b, LLVMBuildFMul(b, a, co, ""), LLVMBuildFMul(b, bb, si, ""), "");
  LLVMValueRef yb = LLVMBuildFAdd(b, LLVMBuildFMul(b, bb, co, ""), LLVMBuildFMul(b, a, si, ""), "");
  bm_cg_store(f, c->out, c->t, ia, ya, 1);
  bm_cg_store(f, c->out, c->t, ib, yb, 1);
}

/* pass-through channels [R, D) */
static void copy_body(bm_cg_fn *f, LLVMValueRef i, int width, LLVMValueRef nvalid, void *vctx) {
  rope_ctx *c = vctx;
  LLVMValueRef at = LLVMBuildAdd(f->cg->b, c->off, i, "");
  bm_cg_store_raw(f, c->out, c->t, at, bm_cg_load_raw(f, c->x, c->t, at, width), width);
}

bm_status bm_cg_emit_rope(bm_cg *cg, bm_node *n, const char *symbol) {
  const bm_node *x = n->in[0], *pos = n->in[1], *fr = n->in[2];
  int r = x->ndim;
  if (r < 3) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "rope: x must be (B, S, H, D)");
  if (n->a.rope_mode != 0 && n->a.rope_mode != 1)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "rope: mode %d", n->a.rope_mode);
  if (!bm_dim_is_static(x->shape[r - 1]) || !bm_dim_is_static(x->shape[r - 2]))
    return bm_status_make(BM_ERR_UNSUPPORTED, "rope: H and D must be static");
  int64_t half = 1;
  for (int d = 0; d < fr->ndim; d++) {
    if (!bm_dim_is_static(fr->shape[d]))
      return bm_status_make(BM_ERR_UNSUPPORTED, "rope: freqs must have a static shape");
    half *= fr->shape[d].add;
  }
  int64_t H = x->shape[r - 2].add, D = x->shape[r - 1].add, R = 2 * half;
  if (R > D) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "rope: %lld rotary dims > head dim %lld",
                                   (long long)R, (long long)D);

  bm_cg_fn f;
  bm_cg_fn_begin(cg, n, symbol, &f);
  LLVMBuilderRef b = cg->b;
  int64_t grain = ROPE_GRAIN / (H * D > 0 ? H * D : 1);
  LLVMValueRef lo, hi;
  bm_cg_task_range(&f, r - 2, x->shape, grain < 1 ? 1 : grain, &n->tasks, &lo, &hi);
  n->scratch = (uint64_t)(2 * half * 4 + 64);
  LLVMValueRef S = bm_cg_dim(&f, x->shape[r - 3]);
  rope_ctx c = {bm_cg_buf(&f, 0), bm_cg_buf(&f, 3), NULL, NULL, NULL, bm_cg_i64(cg, half), x->dtype};
  c.cs = f.scratch;
  c.sn = LLVMBuildGEP2(b, cg->t_f32, f.scratch, (LLVMValueRef[]){bm_cg_i64(cg, half)}, 1, "");
  LLVMValueRef pp = bm_cg_buf(&f, 1), fp = bm_cg_buf(&f, 2);
  bool pos_per_seq = pos->ndim == 1; /* (S) shared by every batch, else (B, S) */

  bm_cg_loop l;
  bm_cg_loop_begin(&f, &l, lo, hi, bm_cg_i64(cg, 1));
  LLVMValueRef pi = pos_per_seq ? LLVMBuildURem(b, l.iv, bm_cg_imax(&f, S, bm_cg_i64(cg, 1)), "") : l.iv;
  LLVMValueRef p = bm_cg_load(&f, pp, pos->dtype, pi, 1);
  /* cos/sin table of this position */
  bm_cg_loop lt;
  bm_cg_loop_begin(&f, &lt, bm_cg_i64(cg, 0), bm_cg_i64(cg, half), bm_cg_i64(cg, 1));
  LLVMValueRef ang = LLVMBuildFMul(b, p, bm_cg_load(&f, fp, fr->dtype, lt.iv, 1), "");
  bm_cg_store(&f, c.cs, BM_DTYPE_F32, lt.iv, bm_cg_libm1(&f, "cosf", ang), 1);
  bm_cg_store(&f, c.sn, BM_DTYPE_F32, lt.iv, bm_cg_libm1(&f, "sinf", ang), 1);
  bm_cg_loop_end(&f, &lt);
  /* every head */
  bm_cg_loop lh;
  bm_cg_loop_begin(&f, &lh, bm_cg_i64(cg, 0), bm_cg_i64(cg, H), bm_cg_i64(cg, 1));
  LLVMValueRef head = LLVMBuildAdd(b, LLVMBuildMul(b, l.iv, bm_cg_i64(cg, H), ""), lh.iv, "");
  c.off = LLVMBuildMul(b, head, bm_cg_i64(cg, D), "");
  if (n->a.rope_mode == 0)
    bm_cg_vec_for(&f, bm_cg_i64(cg, 0), c.half, cg->vec, false, halves_body, &c);
  else
    bm_cg_vec_for(&f, bm_cg_i64(cg, 0), c.half, 1, true, pairs_body, &c);
  if (R < D) {
    LLVMValueRef off0 = c.off;
    c.off = LLVMBuildAdd(b, off0, bm_cg_i64(cg, R), "");
    bm_cg_vec_for(&f, bm_cg_i64(cg, 0), bm_cg_i64(cg, D - R), 1, true, copy_body, &c);
    c.off = off0;
  }
  bm_cg_loop_end(&f, &lh);
  bm_cg_loop_end(&f, &l);
  bm_cg_fn_end(&f);
  return NULL;
}
