/* conv.c - LLVM lowering of conv2d as an implicit GEMM on the tiled GEMM
 * engine (matmul.c): per (image, group), C (O/groups, OH*OW) = W (O/groups,
 * C/groups*KH*KW) @ col (C/groups*KH*KW, OH*OW), where col is gathered from
 * the NCHW input while B is packed (im2col per tile, never materialized).
 * 1x1 stride-1 unpadded convolutions read x directly as a dense B. */
#include "cg.h"

typedef struct conv_ctx {
  bm_node *n, *x, *w;
  int64_t c, o, groups, cg, og, kh, kw;
  int sh, sw, ph, pw, dh, dw;
  bool float_div; /* p / OW through f32 (exact for p < 2^22) */
  /* run-time values */
  LLVMValueRef H, W, OH, OW, HW, P;
} conv_ctx;

static void conv_setup(bm_cg_fn *f, bm_cg_gemm *g) {
  conv_ctx *c = g->ctx;
  bm_cg *cg = f->cg;
  LLVMBuilderRef B = cg->b;
  c->H = bm_cg_dim(f, c->x->shape[2]);
  c->W = bm_cg_dim(f, c->x->shape[3]);
  c->OH = bm_cg_dim(f, c->n->shape[2]);
  c->OW = bm_cg_dim(f, c->n->shape[3]);
  c->HW = LLVMBuildMul(B, c->H, c->W, "");
  c->P = LLVMBuildMul(B, c->OH, c->OW, "");
  g->a = bm_cg_buf(f, 1);
  g->b = bm_cg_buf(f, 0);
  g->c = bm_cg_buf(f, c->n->nin);
  g->bias = bm_node_base_nin(c->n) == 3 ? bm_cg_buf(f, 2) : NULL;
  g->M = bm_cg_i64(cg, c->og);
  g->N = c->P;
  g->K = bm_cg_i64(cg, g->k_max);
  g->nb = LLVMBuildMul(B, bm_cg_dim(f, c->x->shape[0]), bm_cg_i64(cg, c->groups), "");
  g->lda = g->K;
  g->ldb = c->HW; /* dense 1x1 case: B[k = channel, n = pixel] */
  g->ldc = c->P;
}

static void conv_batch(bm_cg_fn *f, bm_cg_gemm *g, LLVMValueRef bi, LLVMValueRef *a_off,
                       LLVMValueRef *b_off, LLVMValueRef *c_off, LLVMValueRef *bias_off) {
  conv_ctx *c = g->ctx;
  bm_cg *cg = f->cg;
  LLVMBuilderRef B = cg->b;
  LLVMValueRef G = bm_cg_i64(cg, c->groups);
  LLVMValueRef img = LLVMBuildSDiv(B, bi, G, ""), gi = LLVMBuildSRem(B, bi, G, "");
  LLVMValueRef og = bm_cg_i64(cg, c->og);
  *a_off = LLVMBuildMul(B, gi, bm_cg_i64(cg, c->og * g->k_max), "");
  LLVMValueRef ch = LLVMBuildAdd(B, LLVMBuildMul(B, img, bm_cg_i64(cg, c->c), ""),
                                 LLVMBuildMul(B, gi, bm_cg_i64(cg, c->cg), ""), "");
  *b_off = LLVMBuildMul(B, ch, c->HW, "");
  LLVMValueRef oc = LLVMBuildAdd(B, LLVMBuildMul(B, img, bm_cg_i64(cg, c->o), ""),
                                 LLVMBuildMul(B, gi, og, ""), "");
  *c_off = LLVMBuildMul(B, oc, c->P, "");
  *bias_off = LLVMBuildMul(B, gi, og, "");
}

static void conv_coords(bm_cg_fn *f, bm_cg_gemm *g, LLVMValueRef bi, LLVMValueRef row,
                        LLVMValueRef col, LLVMValueRef *coords) {
  conv_ctx *c = g->ctx;
  bm_cg *cg = f->cg;
  LLVMBuilderRef B = cg->b;
  LLVMValueRef G = bm_cg_i64(cg, c->groups);
  LLVMValueRef img = LLVMBuildSDiv(B, bi, G, ""), gi = LLVMBuildSRem(B, bi, G, "");
  coords[0] = img;
  coords[1] = LLVMBuildAdd(B, LLVMBuildMul(B, gi, bm_cg_i64(cg, c->og), ""), row, "");
  coords[2] = LLVMBuildSDiv(B, col, c->OW, "");
  coords[3] = LLVMBuildSRem(B, col, c->OW, "");
}

static LLVMValueRef splat_i64(bm_cg_fn *f, LLVMValueRef v, int width) {
  return bm_cg_splat(f, v, width);
}

static LLVMValueRef iota_i64(bm_cg *cg, int width) {
  LLVMValueRef ids[64];
  for (int i = 0; i < width; i++) ids[i] = LLVMConstInt(cg->t_i64, (unsigned long long)i, 0);
  return LLVMConstVector(ids, (unsigned)width);
}

/* st: [0] ih0 = oh*sh - ph, [1] iw0 = ow*sw - pw (i64 vectors), [2] valid
 * lanes (i1 vector), [3] b_off */
static void conv_prep(bm_cg_fn *f, bm_cg_gemm *g, LLVMValueRef b_off, LLVMValueRef n, int width,
                      LLVMValueRef nvalid, LLVMValueRef st[4]) {
  conv_ctx *c = g->ctx;
  bm_cg *cg = f->cg;
  LLVMBuilderRef B = cg->b;
  LLVMValueRef p = LLVMBuildAdd(B, splat_i64(f, n, width), iota_i64(cg, width), "");
  LLVMValueRef owv = splat_i64(f, c->OW, width), oh;
  if (c->float_div) {
    LLVMTypeRef vf = LLVMVectorType(cg->t_f32, (unsigned)width);
    LLVMValueRef pf = LLVMBuildSIToFP(B, p, vf, "");
    LLVMValueRef half = bm_cg_splat(f, bm_cg_f32(cg, 0.5f), width);
    LLVMValueRef q = LLVMBuildFDiv(B, LLVMBuildFAdd(B, pf, half, ""), LLVMBuildSIToFP(B, owv, vf, ""), "");
    oh = LLVMBuildFPToSI(B, q, LLVMVectorType(cg->t_i64, (unsigned)width), "");
  } else {
    oh = LLVMBuildSDiv(B, p, owv, "");
  }
  LLVMValueRef ow = LLVMBuildSub(B, p, LLVMBuildMul(B, oh, owv, ""), "");
  st[0] = LLVMBuildSub(B, LLVMBuildMul(B, oh, splat_i64(f, bm_cg_i64(cg, c->sh), width), ""),
                       splat_i64(f, bm_cg_i64(cg, c->ph), width), "");
  st[1] = LLVMBuildSub(B, LLVMBuildMul(B, ow, splat_i64(f, bm_cg_i64(cg, c->sw), width), ""),
                       splat_i64(f, bm_cg_i64(cg, c->pw), width), "");
  LLVMValueRef lim = nvalid ? LLVMBuildAdd(B, n, nvalid, "") : LLVMBuildAdd(B, n, bm_cg_i64(cg, width), "");
  lim = bm_cg_imin(f, lim, c->P);
  st[2] = LLVMBuildICmp(B, LLVMIntSLT, p, splat_i64(f, lim, width), "");
  st[3] = b_off;
}

/* x[b_off + c*HW + ih*W + iw] for k = (c, kh, kw), zero outside the image */
static LLVMValueRef conv_load(bm_cg_fn *f, bm_cg_gemm *g, LLVMValueRef st[4], LLVMValueRef k,
                              int width) {
  conv_ctx *c = g->ctx;
  bm_cg *cg = f->cg;
  LLVMBuilderRef B = cg->b;
  LLVMValueRef kk = bm_cg_i64(cg, c->kh * c->kw), kwv = bm_cg_i64(cg, c->kw);
  LLVMValueRef ch = LLVMBuildSDiv(B, k, kk, ""), r = LLVMBuildSRem(B, k, kk, "");
  LLVMValueRef kh = LLVMBuildSDiv(B, r, kwv, ""), kw = LLVMBuildSRem(B, r, kwv, "");
  LLVMValueRef ih = LLVMBuildAdd(B, st[0],
                                 splat_i64(f, LLVMBuildMul(B, kh, bm_cg_i64(cg, c->dh), ""), width), "");
  LLVMValueRef iw = LLVMBuildAdd(B, st[1],
                                 splat_i64(f, LLVMBuildMul(B, kw, bm_cg_i64(cg, c->dw), ""), width), "");
  /* unsigned compares: 0 <= ih < H and 0 <= iw < W */
  LLVMValueRef ok = LLVMBuildAnd(B, LLVMBuildICmp(B, LLVMIntULT, ih, splat_i64(f, c->H, width), ""),
                                 LLVMBuildICmp(B, LLVMIntULT, iw, splat_i64(f, c->W, width), ""), "");
  ok = LLVMBuildAnd(B, ok, st[2], "");
  LLVMValueRef base = LLVMBuildAdd(B, st[3], LLVMBuildMul(B, ch, c->HW, ""), "");
  LLVMValueRef idx = LLVMBuildAdd(B, splat_i64(f, base, width),
                                  LLVMBuildAdd(B, LLVMBuildMul(B, ih, splat_i64(f, c->W, width), ""), iw, ""), "");
  /* keep masked-off lanes' addresses in bounds of nothing: the gather does not touch them */
  bm_dtype t = c->x->dtype;
  LLVMTypeRef et = t == BM_DTYPE_F32 ? cg->t_f32 : cg->t_i16;
  LLVMValueRef ptrs = LLVMBuildGEP2(B, et, g->b, &idx, 1, "");
  LLVMTypeRef vt = LLVMVectorType(et, (unsigned)width);
  LLVMTypeRef ovl[2] = {vt, LLVMTypeOf(ptrs)};
  LLVMValueRef args[4] = {ptrs, bm_cg_i32(cg, t == BM_DTYPE_F32 ? 4 : 2), ok, LLVMConstNull(vt)};
  unsigned id = LLVMLookupIntrinsicID("llvm.masked.gather", 18);
  LLVMValueRef fn = LLVMGetIntrinsicDeclaration(cg->mod, id, ovl, 2);
  LLVMTypeRef ft = LLVMIntrinsicGetType(cg->ctx, id, ovl, 2);
  LLVMValueRef v = LLVMBuildCall2(B, ft, fn, args, 4, "");
  if (t == BM_DTYPE_F32) return v;
  LLVMTypeRef v32 = LLVMVectorType(cg->t_i32, (unsigned)width);
  LLVMTypeRef vf = LLVMVectorType(cg->t_f32, (unsigned)width);
  if (t == BM_DTYPE_BF16) {
    LLVMValueRef w = LLVMBuildShl(B, LLVMBuildZExt(B, v, v32, ""),
                                  bm_cg_splat(f, bm_cg_i32(cg, 16), width), "");
    return LLVMBuildBitCast(B, w, vf, "");
  }
  LLVMValueRef h = LLVMBuildBitCast(B, v, LLVMVectorType(cg->t_f16, (unsigned)width), "");
  return LLVMBuildFPExt(B, h, vf, "");
}

/* Can the epilogue see vectors running across output rows? Yes if every
 * epilogue operand is constant over (oh, ow) or covers both. */
static bool conv_vec_epilogue(const bm_node *n) {
  int first = n->nin - (n->a.prog.n ? n->a.prog.nin - 1 : 0);
  for (int i = first; i < n->nin; i++) {
    const bm_node *e = n->in[i];
    bm_dim dh = e->ndim >= 2 ? e->shape[e->ndim - 2] : bm_dim_c(1);
    bm_dim dw = e->ndim >= 1 ? e->shape[e->ndim - 1] : bm_dim_c(1);
    bool constant = bm_dim_is_one(dh) && bm_dim_is_one(dw);
    bool full = bm_dim_eq(dh, n->shape[2]) && bm_dim_eq(dw, n->shape[3]);
    if (!constant && !full) return false;
  }
  return true;
}

bm_status bm_cg_emit_conv2d(bm_cg *cg, bm_node *n, const char *symbol) {
  bm_node *x = n->in[0], *w = n->in[1];
  conv_ctx c = {.n = n, .x = x, .w = w};
  const bm_attrs *a = &n->a;
  c.c = x->shape[1].add;
  c.o = w->shape[0].add;
  c.groups = a->groups;
  c.cg = c.c / c.groups;
  c.og = c.o / c.groups;
  c.kh = w->shape[2].add;
  c.kw = w->shape[3].add;
  c.sh = a->stride[0];
  c.sw = a->stride[1];
  c.ph = a->pad[0];
  c.pw = a->pad[1];
  c.dh = a->dilation[0];
  c.dw = a->dilation[1];
  if (x->dtype != BM_DTYPE_F32 && x->dtype != BM_DTYPE_F16 && x->dtype != BM_DTYPE_BF16)
    return bm_status_make(BM_ERR_UNSUPPORTED, "conv2d %%%d: input dtype %s", n->id,
                          bm_dtype_name(x->dtype));
  int64_t p_max = bm_cg_dim_max(cg, n->shape[2]) * bm_cg_dim_max(cg, n->shape[3]);
  c.float_div = p_max + 64 < (1 << 22);

  bm_cg_gemm g = {0};
  g.ctx = &c;
  g.setup = conv_setup;
  g.batch = conv_batch;
  g.coords = conv_coords;
  g.load_b_prep = conv_prep;
  g.load_b = conv_load;
  g.m = bm_dim_c(c.og);
  g.m_linear = true;
  bm_dim nimg = x->shape[0];
  if (bm_dim_is_static(nimg)) {
    g.nbatch = bm_dim_c(nimg.add * c.groups);
  } else {
    g.nbatch = (bm_dim){nimg.add * c.groups, nimg.sym, (int32_t)(nimg.mul * c.groups)};
  }
  g.nbatch_linear = true;
  g.n_max = p_max;
  g.k_max = c.cg * c.kh * c.kw;
  g.a_dt = w->dtype;
  g.b_dt = x->dtype;
  g.c_dt = n->dtype;
  g.bias_dt = bm_node_base_nin(n) == 3 ? n->in[2]->dtype : BM_DTYPE_F32;
  g.vec_epilogue = conv_vec_epilogue(n);
  bool pointwise = c.kh == 1 && c.kw == 1 && c.sh == 1 && c.sw == 1 && c.ph == 0 && c.pw == 0;
  g.b_kind = pointwise ? BM_CG_GEMM_B_KN : BM_CG_GEMM_B_LOADER;
  return bm_cg_emit_gemm(cg, n, symbol, &g);
}
