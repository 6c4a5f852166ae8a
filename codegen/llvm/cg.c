/* cg.c - shared helpers of the LLVM CPU backend (see cg.h): function
 * scaffolding, loops, typed loads/stores with dtype conversion, and
 * vector-friendly f32 math (exp, log, tanh, erf, ...) without libm calls. */
#include "cg.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------------ small utilities */

static int width_of(LLVMValueRef v) {
  LLVMTypeRef t = LLVMTypeOf(v);
  return LLVMGetTypeKind(t) == LLVMVectorTypeKind ? (int)LLVMGetVectorSize(t) : 1;
}

static LLVMTypeRef vec_of(LLVMTypeRef elem, int width) {
  return width == 1 ? elem : LLVMVectorType(elem, (unsigned)width);
}

LLVMValueRef bm_cg_i64(bm_cg *cg, int64_t v) { return LLVMConstInt(cg->t_i64, (unsigned long long)v, 1); }
LLVMValueRef bm_cg_i32(bm_cg *cg, int32_t v) { return LLVMConstInt(cg->t_i32, (unsigned long long)(int64_t)v, 1); }
LLVMValueRef bm_cg_f32(bm_cg *cg, float v) { return LLVMConstReal(cg->t_f32, v); }

/* A constant of scalar type t (int or float) splatted to width. */
static LLVMValueRef const_splat(LLVMValueRef c, int width) {
  if (width == 1) return c;
  LLVMValueRef elems[64];
  for (int i = 0; i < width; i++) elems[i] = c;
  return LLVMConstVector(elems, (unsigned)width);
}

static LLVMValueRef cf(bm_cg_fn *f, double v, int width) {
  return const_splat(LLVMConstReal(f->cg->t_f32, v), width);
}

static LLVMValueRef ci32(bm_cg_fn *f, int64_t v, int width) {
  return const_splat(LLVMConstInt(f->cg->t_i32, (unsigned long long)v, 1), width);
}

static LLVMValueRef cint(LLVMTypeRef t, int64_t v, int width) {
  return const_splat(LLVMConstInt(t, (unsigned long long)v, 1), width);
}

LLVMValueRef bm_cg_splat(bm_cg_fn *f, LLVMValueRef scalar, int width) {
  if (width == 1) return scalar;
  if (LLVMIsConstant(scalar)) return const_splat(scalar, width);
  LLVMBuilderRef b = f->cg->b;
  LLVMTypeRef vt = LLVMVectorType(LLVMTypeOf(scalar), (unsigned)width);
  LLVMValueRef v = LLVMBuildInsertElement(b, LLVMGetPoison(vt), scalar, bm_cg_i32(f->cg, 0), "");
  LLVMValueRef zeros = LLVMConstNull(LLVMVectorType(f->cg->t_i32, (unsigned)width));
  return LLVMBuildShuffleVector(b, v, LLVMGetPoison(vt), zeros, "splat");
}

/* <0, 1, ..., width-1> as i32 lanes */
static LLVMValueRef lane_ids(bm_cg_fn *f, int width) {
  LLVMValueRef e[64];
  for (int i = 0; i < width; i++) e[i] = bm_cg_i32(f->cg, i);
  return LLVMConstVector(e, (unsigned)width);
}

/* Calls intrinsic `name` overloaded on types ovl[0..novl-1]. */
static LLVMValueRef intrin(bm_cg_fn *f, const char *name, LLVMTypeRef *ovl, int novl,
                           LLVMValueRef *args, int nargs) {
  bm_cg *cg = f->cg;
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  LLVMValueRef fn = LLVMGetIntrinsicDeclaration(cg->mod, id, ovl, (size_t)novl);
  LLVMTypeRef ty = LLVMIntrinsicGetType(cg->ctx, id, ovl, (size_t)novl);
  return LLVMBuildCall2(cg->b, ty, fn, args, (unsigned)nargs, "");
}

static LLVMValueRef intrin1(bm_cg_fn *f, const char *name, LLVMValueRef x) {
  LLVMTypeRef t = LLVMTypeOf(x);
  return intrin(f, name, &t, 1, &x, 1);
}

static LLVMValueRef intrin2(bm_cg_fn *f, const char *name, LLVMValueRef x, LLVMValueRef y) {
  LLVMTypeRef t = LLVMTypeOf(x);
  LLVMValueRef a[2] = {x, y};
  return intrin(f, name, &t, 1, a, 2);
}

LLVMValueRef bm_cg_imin(bm_cg_fn *f, LLVMValueRef a, LLVMValueRef b) {
  return intrin2(f, "llvm.smin", a, b);
}

LLVMValueRef bm_cg_imax(bm_cg_fn *f, LLVMValueRef a, LLVMValueRef b) {
  return intrin2(f, "llvm.smax", a, b);
}

bm_task_expr bm_cg_tasks(bm_dim d, int64_t div, int64_t factor) {
  bm_task_expr e = {-1, 0, d.add, div < 1 ? 1 : div, factor < 1 ? 1 : factor};
  if (!bm_dim_is_static(d)) {
    e.sym = d.sym;
    e.mul = d.mul;
  }
  return e;
}

int64_t bm_cg_dim_max(const bm_cg *cg, bm_dim d) {
  if (bm_dim_is_static(d)) return d.add;
  int64_t m = (d.sym < cg->graph->nsyms) ? cg->graph->syms[d.sym].max : 0;
  int64_t v = (int64_t)d.mul * m + d.add;
  return v < 0 ? 0 : v;
}

/* ------------------------------------------------------------------ functions */

static void add_attr(bm_cg *cg, LLVMValueRef fn, int idx, const char *name) {
  unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
  LLVMAddAttributeAtIndex(fn, (LLVMAttributeIndex)idx, LLVMCreateEnumAttribute(cg->ctx, kind, 0));
}

static void add_str_attr(bm_cg *cg, LLVMValueRef fn, const char *k, const char *v) {
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex,
                          LLVMCreateStringAttribute(cg->ctx, k, (unsigned)strlen(k), v,
                                                    (unsigned)strlen(v)));
}

void bm_cg_fn_begin(bm_cg *cg, bm_node *n, const char *symbol, bm_cg_fn *f) {
  memset(f, 0, sizeof *f);
  f->cg = cg;
  f->node = n;
  f->fn = LLVMAddFunction(cg->mod, symbol, cg->t_kernel);
  LLVMSetLinkage(f->fn, LLVMExternalLinkage);
  add_attr(cg, f->fn, (int)LLVMAttributeFunctionIndex, "nounwind");
  /* bufs and syms: read-only tables that no kernel store can touch */
  for (int i = 1; i <= 2; i++) {
    add_attr(cg, f->fn, i, "noalias");
    add_attr(cg, f->fn, i, "nocapture");
    add_attr(cg, f->fn, i, "readonly");
  }
  if (cg->cpu_name[0]) add_str_attr(cg, f->fn, "target-cpu", cg->cpu_name);
  if (cg->cpu_features[0]) add_str_attr(cg, f->fn, "target-features", cg->cpu_features);
  f->bufs = LLVMGetParam(f->fn, 0);
  f->syms = LLVMGetParam(f->fn, 1);
  f->begin = LLVMGetParam(f->fn, 2);
  f->end = LLVMGetParam(f->fn, 3);
  f->scratch = LLVMGetParam(f->fn, 4);
  LLVMSetValueName2(f->bufs, "bufs", 4);
  LLVMSetValueName2(f->syms, "syms", 4);
  LLVMSetValueName2(f->begin, "begin", 5);
  LLVMSetValueName2(f->end, "end", 3);
  LLVMSetValueName2(f->scratch, "scratch", 7);
  /* "entry" collects hoisted loads and allocas; it branches to "body" at the end */
  LLVMAppendBasicBlockInContext(cg->ctx, f->fn, "entry");
  LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(cg->ctx, f->fn, "body");
  LLVMPositionBuilderAtEnd(cg->b, body);
}

void bm_cg_fn_end(bm_cg_fn *f) {
  bm_cg *cg = f->cg;
  LLVMBuildRetVoid(cg->b);
  LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(f->fn);
  LLVMPositionBuilderAtEnd(cg->b, entry);
  LLVMBuildBr(cg->b, LLVMGetNextBasicBlock(entry));
}

/* Moves the builder to the end of the entry block (for hoisted loads and
 * allocas); returns the block to go back to with leave_entry(). */
static LLVMBasicBlockRef enter_entry(bm_cg_fn *f) {
  LLVMBasicBlockRef cur = LLVMGetInsertBlock(f->cg->b);
  LLVMPositionBuilderAtEnd(f->cg->b, LLVMGetEntryBasicBlock(f->fn));
  return cur;
}

static void leave_entry(bm_cg_fn *f, LLVMBasicBlockRef cur) {
  LLVMPositionBuilderAtEnd(f->cg->b, cur);
}

static LLVMValueRef load_buf(bm_cg_fn *f, int i) {
  bm_cg *cg = f->cg;
  LLVMValueRef idx = bm_cg_i64(cg, i);
  LLVMValueRef p = LLVMBuildGEP2(cg->b, cg->t_ptr, f->bufs, &idx, 1, "");
  char name[32];
  snprintf(name, sizeof name, "buf%d", i);
  return LLVMBuildLoad2(cg->b, cg->t_ptr, p, name);
}

LLVMValueRef bm_cg_buf(bm_cg_fn *f, int i) {
  LLVMBasicBlockRef cur = enter_entry(f);
  LLVMValueRef v = load_buf(f, i);
  leave_entry(f, cur);
  return v;
}

static LLVMValueRef load_sym(bm_cg_fn *f, int k) {
  bm_cg *cg = f->cg;
  LLVMValueRef idx = bm_cg_i64(cg, k);
  LLVMValueRef p = LLVMBuildGEP2(cg->b, cg->t_i64, f->syms, &idx, 1, "");
  return LLVMBuildLoad2(cg->b, cg->t_i64, p, "sym");
}

LLVMValueRef bm_cg_dim(bm_cg_fn *f, bm_dim d) {
  bm_cg *cg = f->cg;
  if (bm_dim_is_static(d)) return bm_cg_i64(cg, d.add);
  LLVMBasicBlockRef cur = enter_entry(f);
  LLVMValueRef s = load_sym(f, d.sym);
  leave_entry(f, cur);
  LLVMValueRef v = d.mul == 1 ? s : LLVMBuildMul(cg->b, s, bm_cg_i64(cg, d.mul), "");
  return d.add ? LLVMBuildAdd(cg->b, v, bm_cg_i64(cg, d.add), "") : v;
}

LLVMValueRef bm_cg_numel(bm_cg_fn *f, const bm_node *n) {
  LLVMValueRef v = bm_cg_i64(f->cg, 1);
  for (int d = 0; d < n->ndim; d++) v = LLVMBuildMul(f->cg->b, v, bm_cg_dim(f, n->shape[d]), "");
  return v;
}

LLVMValueRef bm_cg_alloca(bm_cg_fn *f, LLVMTypeRef t, const char *name) {
  LLVMBasicBlockRef cur = enter_entry(f);
  LLVMValueRef v = LLVMBuildAlloca(f->cg->b, t, name);
  leave_entry(f, cur);
  return v;
}

/* ------------------------------------------------------------------ control flow */

void bm_cg_loop_begin(bm_cg_fn *f, bm_cg_loop *l, LLVMValueRef start, LLVMValueRef end,
                      LLVMValueRef step) {
  bm_cg *cg = f->cg;
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(cg->b);
  l->cond = LLVMAppendBasicBlockInContext(cg->ctx, f->fn, "loop.cond");
  l->body = LLVMAppendBasicBlockInContext(cg->ctx, f->fn, "loop.body");
  l->latch_from = LLVMAppendBasicBlockInContext(cg->ctx, f->fn, "loop.latch");
  l->exit = LLVMAppendBasicBlockInContext(cg->ctx, f->fn, "loop.exit");
  l->step = step;
  LLVMBuildBr(cg->b, l->cond);
  LLVMPositionBuilderAtEnd(cg->b, l->cond);
  l->phi = LLVMBuildPhi(cg->b, cg->t_i64, "iv");
  LLVMAddIncoming(l->phi, &start, &pre, 1);
  l->iv = l->phi;
  LLVMValueRef c = LLVMBuildICmp(cg->b, LLVMIntSLT, l->phi, end, "");
  LLVMBuildCondBr(cg->b, c, l->body, l->exit);
  LLVMPositionBuilderAtEnd(cg->b, l->body);
}

void bm_cg_loop_end(bm_cg_fn *f, bm_cg_loop *l) {
  bm_cg *cg = f->cg;
  LLVMBuildBr(cg->b, l->latch_from);
  LLVMPositionBuilderAtEnd(cg->b, l->latch_from);
  LLVMValueRef next = LLVMBuildNSWAdd(cg->b, l->phi, l->step, "iv.next");
  LLVMAddIncoming(l->phi, &next, &l->latch_from, 1);
  LLVMBuildBr(cg->b, l->cond);
  LLVMPositionBuilderAtEnd(cg->b, l->exit);
}

LLVMValueRef bm_cg_loop_phi(bm_cg_fn *f, bm_cg_loop *l, LLVMTypeRef t, LLVMValueRef init) {
  bm_cg *cg = f->cg;
  LLVMBasicBlockRef cur = LLVMGetInsertBlock(cg->b);
  LLVMValueRef first = LLVMGetFirstInstruction(l->cond);
  while (first && LLVMGetInstructionOpcode(first) == LLVMPHI) first = LLVMGetNextInstruction(first);
  LLVMPositionBuilderBefore(cg->b, first);
  LLVMValueRef phi = LLVMBuildPhi(cg->b, t, "acc");
  LLVMBasicBlockRef pre = LLVMGetIncomingBlock(l->phi, 0);
  LLVMAddIncoming(phi, &init, &pre, 1);
  LLVMPositionBuilderAtEnd(cg->b, cur);
  return phi;
}

void bm_cg_loop_phi_next(bm_cg_loop *l, LLVMValueRef phi, LLVMValueRef next) {
  LLVMAddIncoming(phi, &next, &l->latch_from, 1);
}

void bm_cg_if_begin(bm_cg_fn *f, bm_cg_if *c, LLVMValueRef cond) {
  bm_cg *cg = f->cg;
  c->then_bb = LLVMAppendBasicBlockInContext(cg->ctx, f->fn, "if.then");
  c->merge_bb = LLVMAppendBasicBlockInContext(cg->ctx, f->fn, "if.end");
  LLVMBuildCondBr(cg->b, cond, c->then_bb, c->merge_bb);
  LLVMPositionBuilderAtEnd(cg->b, c->then_bb);
}

void bm_cg_if_end(bm_cg_fn *f, bm_cg_if *c) {
  LLVMBuildBr(f->cg->b, c->merge_bb);
  LLVMPositionBuilderAtEnd(f->cg->b, c->merge_bb);
}

void bm_cg_vec_for(bm_cg_fn *f, LLVMValueRef start, LLVMValueRef end, int width,
                   bool scalar_tail, bm_cg_body_fn body, void *ctx) {
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  bm_cg_loop l;
  if (width <= 1) {
    bm_cg_loop_begin(f, &l, start, end, bm_cg_i64(cg, 1));
    body(f, l.iv, 1, NULL, ctx);
    bm_cg_loop_end(f, &l);
    return;
  }
  LLVMValueRef n = bm_cg_imax(f, LLVMBuildSub(b, end, start, ""), bm_cg_i64(cg, 0));
  LLVMValueRef nfull = LLVMBuildMul(
      b, LLVMBuildUDiv(b, n, bm_cg_i64(cg, width), ""), bm_cg_i64(cg, width), "");
  LLVMValueRef vend = LLVMBuildAdd(b, start, nfull, "vend");
  bm_cg_loop_begin(f, &l, start, vend, bm_cg_i64(cg, width));
  body(f, l.iv, width, NULL, ctx);
  bm_cg_loop_end(f, &l);
  if (scalar_tail) {
    bm_cg_loop_begin(f, &l, vend, end, bm_cg_i64(cg, 1));
    body(f, l.iv, 1, NULL, ctx);
    bm_cg_loop_end(f, &l);
  } else {
    bm_cg_if c;
    bm_cg_if_begin(f, &c, LLVMBuildICmp(b, LLVMIntSLT, vend, end, ""));
    body(f, vend, width, LLVMBuildSub(b, end, vend, "nvalid"), ctx);
    bm_cg_if_end(f, &c);
  }
}

void bm_cg_unravel(bm_cg_fn *f, LLVMValueRef idx, int ndim, const bm_dim *dims,
                   LLVMValueRef *coords) {
  LLVMBuilderRef b = f->cg->b;
  for (int d = ndim - 1; d >= 0; d--) {
    if (d == 0) {
      coords[0] = idx;
      break;
    }
    if (bm_dim_is_one(dims[d])) {
      coords[d] = bm_cg_i64(f->cg, 0);
      continue;
    }
    LLVMValueRef dv = bm_cg_dim(f, dims[d]);
    coords[d] = LLVMBuildURem(b, idx, dv, "");
    idx = LLVMBuildUDiv(b, idx, dv, "");
  }
}

/* Split a space of prod(dims) units: the longest leading product that is
 * linear in one symbol is divided into tasks; the rest is the unit size. */
void bm_cg_task_range(bm_cg_fn *f, int ndim, const bm_dim *dims, int64_t grain,
                      bm_task_expr *tasks, LLVMValueRef *lo, LLVMValueRef *hi) {
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  int64_t P = 1;
  int sym = -1, k;
  bm_dim sd = bm_dim_c(1);
  for (k = 0; k < ndim; k++) {
    bm_dim d = dims[k];
    if (bm_dim_is_static(d)) {
      P *= d.add;
    } else if (sym < 0) {
      sym = d.sym;
      sd = d;
    } else {
      break;
    }
  }
  int64_t inner_max = 1;
  for (int i = k; i < ndim; i++) inner_max *= bm_cg_dim_max(cg, dims[i]);
  int64_t R = grain / (inner_max > 0 ? inner_max : 1);
  if (R < 1) R = 1;
  if (sym < 0) {
    *tasks = (bm_task_expr){-1, 0, P, R, 1};
  } else {
    *tasks = (bm_task_expr){sym, P * sd.mul, P * sd.add, R, 1};
  }
  LLVMValueRef outer = bm_cg_i64(cg, P);
  if (sym >= 0) outer = LLVMBuildMul(b, outer, bm_cg_dim(f, sd), "");
  LLVMValueRef inner = bm_cg_i64(cg, 1);
  for (int i = k; i < ndim; i++) inner = LLVMBuildMul(b, inner, bm_cg_dim(f, dims[i]), "");
  LLVMValueRef Rv = bm_cg_i64(cg, R);
  LLVMValueRef u0 = bm_cg_imin(f, LLVMBuildMul(b, f->begin, Rv, ""), outer);
  LLVMValueRef u1 = bm_cg_imin(f, LLVMBuildMul(b, f->end, Rv, ""), outer);
  *lo = LLVMBuildMul(b, u0, inner, "lo");
  *hi = LLVMBuildMul(b, u1, inner, "hi");
}

/* ------------------------------------------------------------------ dtype conversion */

bool bm_cg_dtype_loadable(bm_dtype t) { return (unsigned)t < BM_DTYPE_COUNT; }

bool bm_cg_dtype_storable(bm_dtype t) {
  return t == BM_DTYPE_F32 || t == BM_DTYPE_F16 || t == BM_DTYPE_BF16 || t == BM_DTYPE_I8 ||
         t == BM_DTYPE_I32 || t == BM_DTYPE_I64;
}

/* Storage type of one element (I4: a byte holding two). */
static LLVMTypeRef raw_type(bm_cg *cg, bm_dtype t) {
  switch (t) {
    case BM_DTYPE_F32: return cg->t_f32;
    case BM_DTYPE_F16:
    case BM_DTYPE_BF16: return cg->t_i16;
    case BM_DTYPE_I32: return cg->t_i32;
    case BM_DTYPE_I64: return cg->t_i64;
    default: return cg->t_i8;
  }
}

static unsigned raw_align(bm_dtype t) {
  switch (t) {
    case BM_DTYPE_F32:
    case BM_DTYPE_I32: return 4;
    case BM_DTYPE_F16:
    case BM_DTYPE_BF16: return 2;
    case BM_DTYPE_I64: return 8;
    default: return 1;
  }
}

static LLVMValueRef bitcast_w(bm_cg_fn *f, LLVMValueRef v, LLVMTypeRef elem) {
  return LLVMBuildBitCast(f->cg->b, v, vec_of(elem, width_of(v)), "");
}

/* f16 bits (i16 lanes) -> f32 */
static LLVMValueRef f16_to_f32(bm_cg_fn *f, LLVMValueRef h) {
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  int w = width_of(h);
  if (cg->has_f16c)
    return LLVMBuildFPExt(b, bitcast_w(f, h, cg->t_f16), vec_of(cg->t_f32, w), "");
  /* integer path: normal and subnormal halves are (em << 13) * 2^112 */
  LLVMValueRef x = LLVMBuildZExt(b, h, vec_of(cg->t_i32, w), "");
  LLVMValueRef sign = LLVMBuildShl(b, LLVMBuildAnd(b, x, ci32(f, 0x8000, w), ""), ci32(f, 16, w), "");
  LLVMValueRef em = LLVMBuildAnd(b, x, ci32(f, 0x7fff, w), "");
  LLVMValueRef sh = LLVMBuildShl(b, em, ci32(f, 13, w), "");
  LLVMValueRef fin = LLVMBuildFMul(b, bitcast_w(f, sh, cg->t_f32), cf(f, 0x1p112, w), "");
  LLVMValueRef special =
      bitcast_w(f, LLVMBuildOr(b, sh, ci32(f, 0x7f800000, w), ""), cg->t_f32);
  LLVMValueRef is_sp = LLVMBuildICmp(b, LLVMIntUGE, em, ci32(f, 0x7c00, w), "");
  LLVMValueRef mag = LLVMBuildSelect(b, is_sp, special, fin, "");
  LLVMValueRef bits = LLVMBuildOr(b, bitcast_w(f, mag, cg->t_i32), sign, "");
  return bitcast_w(f, bits, cg->t_f32);
}

/* f32 -> f16 bits (i16 lanes), round to nearest even, like bm_f32_to_f16 */
static LLVMValueRef f32_to_f16(bm_cg_fn *f, LLVMValueRef v) {
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  int w = width_of(v);
  if (cg->has_f16c) {
    /* keep the NaN payload rule of the reference: quiet bit + top payload bits */
    LLVMValueRef h = bitcast_w(f, LLVMBuildFPTrunc(b, v, vec_of(cg->t_f16, w), ""), cg->t_i16);
    return h;
  }
  LLVMValueRef x = bitcast_w(f, v, cg->t_i32);
  LLVMValueRef sign = LLVMBuildAnd(b, LLVMBuildLShr(b, x, ci32(f, 16, w), ""), ci32(f, 0x8000, w), "");
  LLVMValueRef ax = LLVMBuildAnd(b, x, ci32(f, 0x7fffffff, w), "");
  /* NaN: quiet, keep the top payload bits */
  LLVMValueRef nan = LLVMBuildOr(
      b, ci32(f, 0x7e00, w),
      LLVMBuildAnd(b, LLVMBuildLShr(b, ax, ci32(f, 13, w), ""), ci32(f, 0x1ff, w), ""), "");
  /* too large (>= 65520 after rounding) or inf */
  LLVMValueRef is_nan = LLVMBuildICmp(b, LLVMIntUGT, ax, ci32(f, 0x7f800000, w), "");
  LLVMValueRef is_big = LLVMBuildICmp(b, LLVMIntUGE, ax, ci32(f, 0x477ff000, w), "");
  /* subnormal result: add the magic 0.5 so the FPU rounds, then take the low bits */
  LLVMValueRef is_sub = LLVMBuildICmp(b, LLVMIntULT, ax, ci32(f, 113 << 23, w), "");
  LLVMValueRef magic = ci32(f, 126 << 23, w);
  LLVMValueRef sf = LLVMBuildFAdd(b, bitcast_w(f, ax, cg->t_f32), bitcast_w(f, magic, cg->t_f32), "");
  LLVMValueRef sub = LLVMBuildSub(b, bitcast_w(f, sf, cg->t_i32), magic, "");
  /* normal: rebias, round to nearest even */
  LLVMValueRef odd = LLVMBuildAnd(b, LLVMBuildLShr(b, ax, ci32(f, 13, w), ""), ci32(f, 1, w), "");
  LLVMValueRef nm = LLVMBuildAdd(b, ax, ci32(f, (int64_t)((uint32_t)(15 - 127) << 23) + 0xfff, w), "");
  nm = LLVMBuildLShr(b, LLVMBuildAdd(b, nm, odd, ""), ci32(f, 13, w), "");
  LLVMValueRef r = LLVMBuildSelect(b, is_sub, sub, nm, "");
  r = LLVMBuildSelect(b, is_big, ci32(f, 0x7c00, w), r, "");
  r = LLVMBuildSelect(b, is_nan, nan, r, "");
  r = LLVMBuildOr(b, r, sign, "");
  return LLVMBuildTrunc(b, r, vec_of(cg->t_i16, w), "");
}

static LLVMValueRef bf16_to_f32(bm_cg_fn *f, LLVMValueRef h) {
  bm_cg *cg = f->cg;
  int w = width_of(h);
  LLVMValueRef x = LLVMBuildZExt(cg->b, h, vec_of(cg->t_i32, w), "");
  return bitcast_w(f, LLVMBuildShl(cg->b, x, ci32(f, 16, w), ""), cg->t_f32);
}

static LLVMValueRef f32_to_bf16(bm_cg_fn *f, LLVMValueRef v) {
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  int w = width_of(v);
  LLVMValueRef x = bitcast_w(f, v, cg->t_i32);
  LLVMValueRef odd = LLVMBuildAnd(b, LLVMBuildLShr(b, x, ci32(f, 16, w), ""), ci32(f, 1, w), "");
  LLVMValueRef r = LLVMBuildLShr(
      b, LLVMBuildAdd(b, LLVMBuildAdd(b, x, ci32(f, 0x7fff, w), ""), odd, ""), ci32(f, 16, w), "");
  LLVMValueRef nan = LLVMBuildOr(b, LLVMBuildLShr(b, x, ci32(f, 16, w), ""), ci32(f, 0x40, w), "");
  LLVMValueRef is_nan = LLVMBuildICmp(
      b, LLVMIntUGT, LLVMBuildAnd(b, x, ci32(f, 0x7fffffff, w), ""), ci32(f, 0x7f800000, w), "");
  r = LLVMBuildSelect(b, is_nan, nan, r, "");
  return LLVMBuildTrunc(b, r, vec_of(cg->t_i16, w), "");
}

static LLVMValueRef e4m3_to_f32(bm_cg_fn *f, LLVMValueRef q) {
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  int w = width_of(q);
  LLVMValueRef x = LLVMBuildZExt(b, q, vec_of(cg->t_i32, w), "");
  LLVMValueRef sign = LLVMBuildShl(b, LLVMBuildAnd(b, x, ci32(f, 0x80, w), ""), ci32(f, 24, w), "");
  LLVMValueRef e = LLVMBuildAnd(b, LLVMBuildLShr(b, x, ci32(f, 3, w), ""), ci32(f, 15, w), "");
  LLVMValueRef m = LLVMBuildAnd(b, x, ci32(f, 7, w), "");
  LLVMValueRef normal = LLVMBuildOr(
      b, LLVMBuildShl(b, LLVMBuildAdd(b, e, ci32(f, 120, w), ""), ci32(f, 23, w), ""),
      LLVMBuildShl(b, m, ci32(f, 20, w), ""), "");
  LLVMValueRef sub = LLVMBuildFMul(b, LLVMBuildSIToFP(b, m, vec_of(cg->t_f32, w), ""),
                                   cf(f, 0x1p-9, w), "");
  LLVMValueRef mag = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntEQ, e, ci32(f, 0, w), ""),
                                     bitcast_w(f, sub, cg->t_i32), normal, "");
  LLVMValueRef is_nan = LLVMBuildICmp(b, LLVMIntEQ, LLVMBuildAnd(b, x, ci32(f, 0x7f, w), ""),
                                      ci32(f, 0x7f, w), "");
  mag = LLVMBuildSelect(b, is_nan, ci32(f, 0x7fc00000, w), mag, "");
  return bitcast_w(f, LLVMBuildOr(b, mag, sign, ""), cg->t_f32);
}

/* raw lanes of dtype t -> f32 */
static LLVMValueRef raw_to_f32(bm_cg_fn *f, LLVMValueRef raw, bm_dtype t) {
  bm_cg *cg = f->cg;
  int w = width_of(raw);
  LLVMTypeRef ft = vec_of(cg->t_f32, w);
  switch (t) {
    case BM_DTYPE_F32: return raw;
    case BM_DTYPE_F16: return f16_to_f32(f, raw);
    case BM_DTYPE_BF16: return bf16_to_f32(f, raw);
    case BM_DTYPE_FP8_E5M2:
      return f16_to_f32(f, LLVMBuildShl(cg->b, LLVMBuildZExt(cg->b, raw, vec_of(cg->t_i16, w), ""),
                                        cint(cg->t_i16, 8, w), ""));
    case BM_DTYPE_FP8_E4M3: return e4m3_to_f32(f, raw);
    default: return LLVMBuildSIToFP(cg->b, raw, ft, "");
  }
}

/* f32 lanes -> raw lanes of dtype t (t storable) */
static LLVMValueRef f32_to_raw(bm_cg_fn *f, LLVMValueRef v, bm_dtype t) {
  bm_cg *cg = f->cg;
  int w = width_of(v);
  switch (t) {
    case BM_DTYPE_F32: return v;
    case BM_DTYPE_F16: return f32_to_f16(f, v);
    case BM_DTYPE_BF16: return f32_to_bf16(f, v);
    default: {
      LLVMTypeRef it = vec_of(raw_type(cg, t), w);
      LLVMTypeRef ovl[2] = {it, LLVMTypeOf(v)};
      return intrin(f, "llvm.fptosi.sat", ovl, 2, &v, 1);
    }
  }
}

/* ------------------------------------------------------------------ loads and stores */

static LLVMValueRef elem_ptr(bm_cg_fn *f, LLVMValueRef base, bm_dtype t, LLVMValueRef idx) {
  bm_cg *cg = f->cg;
  return LLVMBuildGEP2(cg->b, raw_type(cg, t), base, &idx, 1, "");
}

/* One i4 element (sign-extended, as i8). */
static LLVMValueRef load_i4(bm_cg_fn *f, LLVMValueRef base, LLVMValueRef idx) {
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  LLVMValueRef byte_idx = LLVMBuildLShr(b, idx, bm_cg_i64(cg, 1), "");
  LLVMValueRef p = LLVMBuildGEP2(b, cg->t_i8, base, &byte_idx, 1, "");
  LLVMValueRef byte = LLVMBuildLoad2(b, cg->t_i8, p, "");
  LLVMValueRef odd = LLVMBuildTrunc(b, LLVMBuildAnd(b, idx, bm_cg_i64(cg, 1), ""), cg->t_i8, "");
  /* even: low nibble -> shift left 4 first; odd: high nibble */
  LLVMValueRef shl = LLVMBuildShl(b, LLVMBuildXor(b, odd, LLVMConstInt(cg->t_i8, 1, 0), ""),
                                  LLVMConstInt(cg->t_i8, 2, 0), "");
  LLVMValueRef v = LLVMBuildShl(b, byte, shl, "");
  return LLVMBuildAShr(b, v, LLVMConstInt(cg->t_i8, 4, 0), "");
}

LLVMValueRef bm_cg_load_raw(bm_cg_fn *f, LLVMValueRef base, bm_dtype t, LLVMValueRef idx, int width) {
  bm_cg *cg = f->cg;
  if (t == BM_DTYPE_I4) {
    if (width == 1) return load_i4(f, base, idx);
    LLVMValueRef v = LLVMGetPoison(LLVMVectorType(cg->t_i8, (unsigned)width));
    for (int i = 0; i < width; i++) {
      LLVMValueRef e = load_i4(f, base, LLVMBuildAdd(cg->b, idx, bm_cg_i64(cg, i), ""));
      v = LLVMBuildInsertElement(cg->b, v, e, bm_cg_i32(cg, i), "");
    }
    return v;
  }
  LLVMTypeRef rt = raw_type(cg, t);
  LLVMValueRef ld = LLVMBuildLoad2(cg->b, vec_of(rt, width), elem_ptr(f, base, t, idx), "");
  LLVMSetAlignment(ld, raw_align(t));
  return ld;
}

void bm_cg_store_raw(bm_cg_fn *f, LLVMValueRef base, bm_dtype t, LLVMValueRef idx, LLVMValueRef v,
                     int width) {
  LLVMValueRef st = LLVMBuildStore(f->cg->b, v, elem_ptr(f, base, t, idx));
  LLVMSetAlignment(st, raw_align(t));
}

LLVMValueRef bm_cg_load(bm_cg_fn *f, LLVMValueRef base, bm_dtype t, LLVMValueRef idx, int width) {
  return raw_to_f32(f, bm_cg_load_raw(f, base, t, idx, width), t);
}

void bm_cg_store(bm_cg_fn *f, LLVMValueRef base, bm_dtype t, LLVMValueRef idx, LLVMValueRef v,
                 int width) {
  bm_cg_store_raw(f, base, t, idx, f32_to_raw(f, v, t), width);
}

LLVMValueRef bm_cg_load_i64(bm_cg_fn *f, LLVMValueRef base, bm_dtype t, LLVMValueRef idx) {
  bm_cg *cg = f->cg;
  switch (t) {
    case BM_DTYPE_I8:
    case BM_DTYPE_I4:
    case BM_DTYPE_I32: return LLVMBuildSExt(cg->b, bm_cg_load_raw(f, base, t, idx, 1), cg->t_i64, "");
    case BM_DTYPE_I64: return bm_cg_load_raw(f, base, t, idx, 1);
    default: {
      LLVMValueRef x = bm_cg_load(f, base, t, idx, 1);
      LLVMTypeRef ovl[2] = {cg->t_i64, cg->t_f32};
      return intrin(f, "llvm.fptosi.sat", ovl, 2, &x, 1);
    }
  }
}

void bm_cg_store_i64(bm_cg_fn *f, LLVMValueRef base, bm_dtype t, LLVMValueRef idx, LLVMValueRef v) {
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  int64_t lo, hi;
  switch (t) {
    case BM_DTYPE_I8: lo = INT8_MIN; hi = INT8_MAX; break;
    case BM_DTYPE_I32: lo = INT32_MIN; hi = INT32_MAX; break;
    case BM_DTYPE_I64: bm_cg_store_raw(f, base, t, idx, v, 1); return;
    default: bm_cg_store(f, base, t, idx, LLVMBuildSIToFP(b, v, cg->t_f32, ""), 1); return;
  }
  v = bm_cg_imin(f, bm_cg_imax(f, v, bm_cg_i64(cg, lo)), bm_cg_i64(cg, hi));
  bm_cg_store_raw(f, base, t, idx, LLVMBuildTrunc(b, v, raw_type(cg, t), ""), 1);
}

/* mask of lanes < n */
static LLVMValueRef lane_mask(bm_cg_fn *f, LLVMValueRef n, int width) {
  bm_cg *cg = f->cg;
  LLVMValueRef n32 = LLVMBuildTrunc(cg->b, n, cg->t_i32, "");
  return LLVMBuildICmp(cg->b, LLVMIntSLT, lane_ids(f, width), bm_cg_splat(f, n32, width), "mask");
}

LLVMValueRef bm_cg_load_partial(bm_cg_fn *f, LLVMValueRef base, bm_dtype t, LLVMValueRef idx,
                                int width, LLVMValueRef n) {
  bm_cg *cg = f->cg;
  if (width == 1) return bm_cg_load(f, base, t, idx, 1);
  if (t == BM_DTYPE_I4) {
    /* read lane min(i, n-1): always in bounds */
    LLVMValueRef v = LLVMGetPoison(LLVMVectorType(cg->t_i8, (unsigned)width));
    LLVMValueRef last = LLVMBuildSub(cg->b, n, bm_cg_i64(cg, 1), "");
    for (int i = 0; i < width; i++) {
      LLVMValueRef j = bm_cg_imin(f, bm_cg_i64(cg, i), last);
      LLVMValueRef e = load_i4(f, base, LLVMBuildAdd(cg->b, idx, j, ""));
      v = LLVMBuildInsertElement(cg->b, v, e, bm_cg_i32(cg, i), "");
    }
    return raw_to_f32(f, v, t);
  }
  LLVMTypeRef vt = LLVMVectorType(raw_type(cg, t), (unsigned)width);
  LLVMTypeRef ovl[2] = {vt, cg->t_ptr};
  LLVMValueRef args[4] = {elem_ptr(f, base, t, idx), bm_cg_i32(cg, (int32_t)raw_align(t)),
                          lane_mask(f, n, width), LLVMConstNull(vt)};
  return raw_to_f32(f, intrin(f, "llvm.masked.load", ovl, 2, args, 4), t);
}

void bm_cg_store_partial(bm_cg_fn *f, LLVMValueRef base, bm_dtype t, LLVMValueRef idx,
                         LLVMValueRef v, int width, LLVMValueRef n) {
  bm_cg *cg = f->cg;
  if (width == 1) {
    bm_cg_store(f, base, t, idx, v, 1);
    return;
  }
  LLVMValueRef raw = f32_to_raw(f, v, t);
  LLVMTypeRef ovl[2] = {LLVMTypeOf(raw), cg->t_ptr};
  LLVMValueRef args[4] = {raw, elem_ptr(f, base, t, idx), bm_cg_i32(cg, (int32_t)raw_align(t)),
                          lane_mask(f, n, width)};
  intrin(f, "llvm.masked.store", ovl, 2, args, 4);
}

/* ------------------------------------------------------------------ math */

LLVMValueRef bm_cg_fma(bm_cg_fn *f, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
  if (f->cg->has_fma) {
    LLVMTypeRef t = LLVMTypeOf(a);
    LLVMValueRef args[3] = {a, b, c};
    return intrin(f, "llvm.fma", &t, 1, args, 3);
  }
  return LLVMBuildFAdd(f->cg->b, LLVMBuildFMul(f->cg->b, a, b, ""), c, "");
}

LLVMValueRef bm_cg_fmax(bm_cg_fn *f, LLVMValueRef a, LLVMValueRef b) {
  return intrin2(f, "llvm.maxnum", a, b);
}

static LLVMValueRef fmin_(bm_cg_fn *f, LLVMValueRef a, LLVMValueRef b) {
  return intrin2(f, "llvm.minnum", a, b);
}

/* Tree reduction of a vector with op (0 = fadd, 1 = maxnum). */
static LLVMValueRef hreduce(bm_cg_fn *f, LLVMValueRef v, int op) {
  bm_cg *cg = f->cg;
  int w = width_of(v);
  while (w > 1) {
    int h = w / 2;
    LLVMValueRef lo_idx[32], hi_idx[32];
    for (int i = 0; i < h; i++) {
      lo_idx[i] = bm_cg_i32(cg, i);
      hi_idx[i] = bm_cg_i32(cg, i + h);
    }
    LLVMValueRef lo = LLVMBuildShuffleVector(cg->b, v, LLVMGetPoison(LLVMTypeOf(v)),
                                             LLVMConstVector(lo_idx, (unsigned)h), "");
    LLVMValueRef hi = LLVMBuildShuffleVector(cg->b, v, LLVMGetPoison(LLVMTypeOf(v)),
                                             LLVMConstVector(hi_idx, (unsigned)h), "");
    if (h == 1) {
      lo = LLVMBuildExtractElement(cg->b, lo, bm_cg_i32(cg, 0), "");
      hi = LLVMBuildExtractElement(cg->b, hi, bm_cg_i32(cg, 0), "");
    }
    v = op == 0 ? LLVMBuildFAdd(cg->b, lo, hi, "") : bm_cg_fmax(f, lo, hi);
    w = h;
  }
  return v;
}

LLVMValueRef bm_cg_hsum(bm_cg_fn *f, LLVMValueRef v) { return hreduce(f, v, 0); }
LLVMValueRef bm_cg_hmax(bm_cg_fn *f, LLVMValueRef v) { return hreduce(f, v, 1); }

static LLVMValueRef poly(bm_cg_fn *f, LLVMValueRef x, const double *c, int n) {
  /* c[0] + c[1] x + ... + c[n-1] x^(n-1), Horner */
  int w = width_of(x);
  LLVMValueRef p = cf(f, c[n - 1], w);
  for (int i = n - 2; i >= 0; i--) p = bm_cg_fma(f, p, x, cf(f, c[i], w));
  return p;
}

static LLVMValueRef fsel(bm_cg_fn *f, LLVMRealPredicate pred, LLVMValueRef a, LLVMValueRef b,
                         LLVMValueRef t, LLVMValueRef e) {
  return LLVMBuildSelect(f->cg->b, LLVMBuildFCmp(f->cg->b, pred, a, b, ""), t, e, "");
}

/* exp: x = n ln2 + r, |r| <= ln2/2; e^r by a degree-7 polynomial; 2^n
 * applied in two halves so results in the subnormal range are right. */
LLVMValueRef bm_cg_exp(bm_cg_fn *f, LLVMValueRef x) {
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  int w = width_of(x);
  LLVMValueRef xc = fmin_(f, bm_cg_fmax(f, x, cf(f, -104.0, w)), cf(f, 89.0, w));
  const float magic = 12582912.0f; /* 1.5 * 2^23 */
  LLVMValueRef t = bm_cg_fma(f, xc, cf(f, 1.44269504088896341, w), cf(f, magic, w));
  LLVMValueRef n = LLVMBuildFSub(b, t, cf(f, magic, w), "");
  LLVMValueRef r = bm_cg_fma(f, n, cf(f, -0.693145751953125, w), xc);
  r = bm_cg_fma(f, n, cf(f, -1.428606765330187045e-06, w), r);
  static const double c[8] = {1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040};
  LLVMValueRef p = poly(f, r, c, 8);
  uint32_t mbits;
  memcpy(&mbits, &magic, 4);
  LLVMValueRef ni = LLVMBuildSub(b, bitcast_w(f, t, cg->t_i32), ci32(f, mbits, w), "");
  LLVMValueRef n1 = LLVMBuildAShr(b, ni, ci32(f, 1, w), "");
  LLVMValueRef n2 = LLVMBuildSub(b, ni, n1, "");
  LLVMValueRef s1 = bitcast_w(
      f, LLVMBuildShl(b, LLVMBuildAdd(b, n1, ci32(f, 127, w), ""), ci32(f, 23, w), ""), cg->t_f32);
  LLVMValueRef s2 = bitcast_w(
      f, LLVMBuildShl(b, LLVMBuildAdd(b, n2, ci32(f, 127, w), ""), ci32(f, 23, w), ""), cg->t_f32);
  LLVMValueRef res = LLVMBuildFMul(b, LLVMBuildFMul(b, p, s1, ""), s2, "");
  return fsel(f, LLVMRealUNO, x, x, x, res); /* NaN in, NaN out */
}

/* log (Cephes logf): x = m 2^e, m in [sqrt(1/2), sqrt(2)), polynomial in m-1. */
static LLVMValueRef cg_log(bm_cg_fn *f, LLVMValueRef x) {
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  int w = width_of(x);
  /* scale subnormals up by 2^23 */
  LLVMValueRef tiny = LLVMBuildFCmp(b, LLVMRealOLT, x, cf(f, 0x1p-126, w), "");
  LLVMValueRef xs = LLVMBuildSelect(b, tiny, LLVMBuildFMul(b, x, cf(f, 0x1p23, w), ""), x, "");
  LLVMValueRef eadj = LLVMBuildSelect(b, tiny, cf(f, -23.0, w), cf(f, 0.0, w), "");
  LLVMValueRef bits = bitcast_w(f, xs, cg->t_i32);
  LLVMValueRef e = LLVMBuildSub(b, LLVMBuildLShr(b, bits, ci32(f, 23, w), ""), ci32(f, 126, w), "");
  LLVMValueRef mb = LLVMBuildOr(b, LLVMBuildAnd(b, bits, ci32(f, 0x007fffff, w), ""),
                                ci32(f, 0x3f000000, w), "");
  LLVMValueRef m = bitcast_w(f, mb, cg->t_f32); /* [0.5, 1) */
  LLVMValueRef fe = LLVMBuildFAdd(b, LLVMBuildSIToFP(b, e, vec_of(cg->t_f32, w), ""), eadj, "");
  LLVMValueRef small = LLVMBuildFCmp(b, LLVMRealOLT, m, cf(f, 0.707106781186547524, w), "");
  fe = LLVMBuildSelect(b, small, LLVMBuildFSub(b, fe, cf(f, 1.0, w), ""), fe, "");
  LLVMValueRef m1 = LLVMBuildSelect(b, small, LLVMBuildFSub(b, LLVMBuildFAdd(b, m, m, ""), cf(f, 1.0, w), ""),
                                    LLVMBuildFSub(b, m, cf(f, 1.0, w), ""), "");
  LLVMValueRef z = LLVMBuildFMul(b, m1, m1, "");
  static const double c[9] = {3.3333331174E-1, -2.4999993993E-1, 2.0000714765E-1,
                              -1.6668057665E-1, 1.4249322787E-1,  -1.2420140846E-1,
                              1.1676998740E-1,  -1.1514610310E-1, 7.0376836292E-2};
  LLVMValueRef y = LLVMBuildFMul(b, LLVMBuildFMul(b, poly(f, m1, c, 9), m1, ""), z, "");
  y = bm_cg_fma(f, fe, cf(f, -2.12194440e-4, w), y);
  y = bm_cg_fma(f, z, cf(f, -0.5, w), y);
  LLVMValueRef r = LLVMBuildFAdd(b, m1, y, "");
  r = bm_cg_fma(f, fe, cf(f, 0.693359375, w), r);
  /* specials */
  r = fsel(f, LLVMRealOEQ, x, cf(f, INFINITY, w), x, r);
  r = fsel(f, LLVMRealOEQ, x, cf(f, 0.0, w), cf(f, -INFINITY, w), r);
  r = fsel(f, LLVMRealOLT, x, cf(f, 0.0, w), cf(f, NAN, w), r);
  return fsel(f, LLVMRealUNO, x, x, x, r);
}

/* tanh: odd polynomial for |x| < 0.625 (Cephes tanhf), else 1 - 2/(e^2|x| + 1). */
static LLVMValueRef cg_tanh(bm_cg_fn *f, LLVMValueRef x) {
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  int w = width_of(x);
  LLVMValueRef ax = intrin1(f, "llvm.fabs", x);
  LLVMValueRef z = LLVMBuildFMul(b, x, x, "");
  static const double c[5] = {-3.33332819422E-1, 1.33314422036E-1, -5.37397155531E-2,
                              2.06390887954E-2, -5.70498872745E-3};
  LLVMValueRef ps = bm_cg_fma(f, LLVMBuildFMul(b, poly(f, z, c, 5), z, ""), x, x);
  LLVMValueRef e = bm_cg_exp(f, LLVMBuildFAdd(b, ax, ax, ""));
  LLVMValueRef pl = LLVMBuildFSub(
      b, cf(f, 1.0, w), LLVMBuildFDiv(b, cf(f, 2.0, w), LLVMBuildFAdd(b, e, cf(f, 1.0, w), ""), ""), "");
  pl = intrin2(f, "llvm.copysign", pl, x);
  return fsel(f, LLVMRealOLT, ax, cf(f, 0.625, w), ps, pl); /* NaN: pl is NaN */
}

/* erf: Taylor series for |x| < 1; above, 1 - erfc(|x|) with the Chebyshev
 * fit erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z/2), whose relative error is
 * below 1.2e-7 everywhere (Numerical Recipes' erfcc), so erf's absolute
 * error there is at most erfc(1) * 1.2e-7 < 2e-8 plus rounding. */
static LLVMValueRef cg_erf(bm_cg_fn *f, LLVMValueRef x) {
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  int w = width_of(x);
  LLVMValueRef ax = intrin1(f, "llvm.fabs", x);
  LLVMValueRef z = LLVMBuildFMul(b, x, x, "");
  double c[12];
  double fact = 1;
  for (int n = 0; n < 12; n++) {
    if (n) fact *= n;
    c[n] = 1.12837916709551257 * ((n & 1) ? -1 : 1) / (fact * (2 * n + 1));
  }
  LLVMValueRef small = LLVMBuildFMul(b, poly(f, z, c, 12), x, "");
  static const double a[10] = {-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
                                0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277};
  LLVMValueRef t = LLVMBuildFDiv(b, cf(f, 1.0, w), bm_cg_fma(f, ax, cf(f, 0.5, w), cf(f, 1.0, w)), "");
  LLVMValueRef e = bm_cg_exp(f, LLVMBuildFSub(b, poly(f, t, a, 10), z, ""));
  LLVMValueRef large = LLVMBuildFSub(b, cf(f, 1.0, w), LLVMBuildFMul(b, t, e, ""), "");
  large = intrin2(f, "llvm.copysign", large, x);
  LLVMValueRef r = fsel(f, LLVMRealOLT, ax, cf(f, 1.0, w), small, large);
  return fsel(f, LLVMRealUNO, x, x, x, r);
}

static LLVMValueRef cg_sigmoid(bm_cg_fn *f, LLVMValueRef x) {
  int w = width_of(x);
  LLVMBuilderRef b = f->cg->b;
  LLVMValueRef e = bm_cg_exp(f, LLVMBuildFNeg(b, x, ""));
  return LLVMBuildFDiv(b, cf(f, 1.0, w), LLVMBuildFAdd(b, cf(f, 1.0, w), e, ""), "");
}

static LLVMValueRef libm_decl(bm_cg *cg, const char *name, int nargs) {
  LLVMValueRef fn = LLVMGetNamedFunction(cg->mod, name);
  if (fn) return fn;
  LLVMTypeRef params[2] = {cg->t_f32, cg->t_f32};
  fn = LLVMAddFunction(cg->mod, name, LLVMFunctionType(cg->t_f32, params, (unsigned)nargs, 0));
  add_attr(cg, fn, (int)LLVMAttributeFunctionIndex, "nounwind");
  return fn;
}

static LLVMValueRef libm_call(bm_cg_fn *f, const char *name, LLVMValueRef x, LLVMValueRef y) {
  bm_cg *cg = f->cg;
  int nargs = y ? 2 : 1;
  LLVMValueRef fn = libm_decl(cg, name, nargs);
  LLVMTypeRef params[2] = {cg->t_f32, cg->t_f32};
  LLVMTypeRef ft = LLVMFunctionType(cg->t_f32, params, (unsigned)nargs, 0);
  int w = width_of(x);
  if (w == 1) {
    LLVMValueRef args[2] = {x, y};
    return LLVMBuildCall2(cg->b, ft, fn, args, (unsigned)nargs, "");
  }
  LLVMValueRef out = LLVMGetPoison(LLVMTypeOf(x));
  for (int i = 0; i < w; i++) {
    LLVMValueRef li = bm_cg_i32(cg, i);
    LLVMValueRef args[2] = {LLVMBuildExtractElement(cg->b, x, li, ""),
                            y ? LLVMBuildExtractElement(cg->b, y, li, "") : NULL};
    LLVMValueRef r = LLVMBuildCall2(cg->b, ft, fn, args, (unsigned)nargs, "");
    out = LLVMBuildInsertElement(cg->b, out, r, li, "");
  }
  return out;
}

LLVMValueRef bm_cg_libm1(bm_cg_fn *f, const char *name, LLVMValueRef x) {
  return libm_call(f, name, x, NULL);
}

LLVMValueRef bm_cg_unary(bm_cg_fn *f, bm_op op, LLVMValueRef x) {
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  int w = width_of(x);
  switch (op) {
    case BM_OP_NEG: return LLVMBuildFNeg(b, x, "");
    case BM_OP_ABS: return intrin1(f, "llvm.fabs", x);
    case BM_OP_EXP: return bm_cg_exp(f, x);
    case BM_OP_LOG: return cg_log(f, x);
    case BM_OP_SQRT: return intrin1(f, "llvm.sqrt", x);
    case BM_OP_RSQRT: return LLVMBuildFDiv(b, cf(f, 1.0, w), intrin1(f, "llvm.sqrt", x), "");
    case BM_OP_RECIP: return LLVMBuildFDiv(b, cf(f, 1.0, w), x, "");
    case BM_OP_SQUARE: return LLVMBuildFMul(b, x, x, "");
    case BM_OP_SIN: return libm_call(f, "sinf", x, NULL);
    case BM_OP_COS: return libm_call(f, "cosf", x, NULL);
    case BM_OP_TANH: return cg_tanh(f, x);
    case BM_OP_ERF: return cg_erf(f, x);
    case BM_OP_SIGMOID: return cg_sigmoid(f, x);
    case BM_OP_RELU: /* x > 0 ? x : 0; NaN stays NaN */
      return fsel(f, LLVMRealUGT, x, cf(f, 0.0, w), x, cf(f, 0.0, w));
    case BM_OP_SILU: return LLVMBuildFMul(b, x, cg_sigmoid(f, x), "");
    case BM_OP_GELU: {
      LLVMValueRef e = cg_erf(f, LLVMBuildFMul(b, x, cf(f, 0.70710678118654752, w), ""));
      return LLVMBuildFMul(b, LLVMBuildFMul(b, cf(f, 0.5, w), x, ""),
                           LLVMBuildFAdd(b, cf(f, 1.0, w), e, ""), "");
    }
    case BM_OP_GELU_TANH: {
      /* same operation order as the reference: ((0.044715 x) x) x */
      LLVMValueRef c3 = LLVMBuildFMul(b, cf(f, 0.044715, w), x, "");
      c3 = LLVMBuildFMul(b, LLVMBuildFMul(b, c3, x, ""), x, "");
      LLVMValueRef in = LLVMBuildFMul(b, cf(f, 0.79788456080286536, w),
                                      LLVMBuildFAdd(b, x, c3, ""), "");
      LLVMValueRef t = cg_tanh(f, in);
      return LLVMBuildFMul(b, LLVMBuildFMul(b, cf(f, 0.5, w), x, ""),
                           LLVMBuildFAdd(b, cf(f, 1.0, w), t, ""), "");
    }
    case BM_OP_QUICK_GELU:
      return LLVMBuildFMul(b, x, cg_sigmoid(f, LLVMBuildFMul(b, cf(f, 1.702, w), x, "")), "");
    case BM_OP_CAST: return x;
    default: return cf(f, NAN, w); /* not unary: the emitters check before */
  }
}

LLVMValueRef bm_cg_binary(bm_cg_fn *f, bm_op op, LLVMValueRef a, LLVMValueRef c) {
  LLVMBuilderRef b = f->cg->b;
  switch (op) {
    case BM_OP_ADD: return LLVMBuildFAdd(b, a, c, "");
    case BM_OP_SUB: return LLVMBuildFSub(b, a, c, "");
    case BM_OP_MUL: return LLVMBuildFMul(b, a, c, "");
    case BM_OP_DIV: return LLVMBuildFDiv(b, a, c, "");
    case BM_OP_POW: return libm_call(f, "powf", a, c);
    case BM_OP_MAX: return bm_cg_fmax(f, a, c);
    case BM_OP_MIN: return fmin_(f, a, c);
    default: return cf(f, NAN, width_of(a));
  }
}

/* ------------------------------------------------------------------ programs and epilogues */

LLVMValueRef bm_cg_prog(bm_cg_fn *f, const bm_prog *prog, LLVMValueRef *regs_in) {
  LLVMValueRef regs[BM_MAX_IN + BM_MAX_PROG];
  int nin = prog->nin;
  for (int i = 0; i < nin; i++) regs[i] = regs_in[i];
  int w = width_of(regs[0]);
  for (int j = 0; j < prog->n; j++) {
    const bm_prog_ins *in = &prog->ins[j];
    LLVMValueRef a = regs[in->a];
    bm_op op = (bm_op)in->op;
    if (bm_op_table[op].flags & BM_OPF_BINARY) {
      LLVMValueRef bv = (in->flags & BM_PROG_IMM_B) ? cf(f, in->imm, w) : regs[in->b];
      regs[nin + j] = bm_cg_binary(f, op, a, bv);
    } else {
      regs[nin + j] = bm_cg_unary(f, op, a);
    }
  }
  return prog->n ? regs[nin + prog->n - 1] : regs[0];
}

LLVMValueRef bm_cg_bcast_offset(bm_cg_fn *f, const bm_node *in, const bm_node *out,
                                LLVMValueRef *coords) {
  bm_cg *cg = f->cg;
  LLVMBuilderRef b = cg->b;
  LLVMValueRef off = bm_cg_i64(cg, 0), stride = bm_cg_i64(cg, 1);
  for (int d = in->ndim - 1; d >= 0; d--) {
    int od = d + out->ndim - in->ndim;
    if (od < 0) break;
    if (!bm_dim_is_one(in->shape[d]))
      off = LLVMBuildAdd(b, off, LLVMBuildMul(b, coords[od], stride, ""), "");
    stride = LLVMBuildMul(b, stride, bm_cg_dim(f, in->shape[d]), "");
  }
  return off;
}

LLVMValueRef bm_cg_epilogue_partial(bm_cg_fn *f, LLVMValueRef v, LLVMValueRef *coords, int width,
                                    LLVMValueRef nvalid) {
  bm_node *n = f->node;
  const bm_prog *prog = &n->a.prog;
  if (prog->n == 0) return v;
  LLVMValueRef regs[BM_MAX_IN];
  regs[0] = v;
  int first = n->nin - (prog->nin - 1);
  for (int k = 1; k < prog->nin; k++) {
    int ii = first + k - 1;
    const bm_node *in = n->in[ii];
    LLVMValueRef base = bm_cg_buf(f, ii);
    LLVMValueRef off = bm_cg_bcast_offset(f, in, n, coords);
    bool contiguous = in->ndim >= 1 && n->ndim >= 1 && !bm_dim_is_one(in->shape[in->ndim - 1]);
    if (width == 1) {
      regs[k] = bm_cg_load(f, base, in->dtype, off, 1);
    } else if (!contiguous) {
      regs[k] = bm_cg_splat(f, bm_cg_load(f, base, in->dtype, off, 1), width);
    } else if (nvalid) {
      regs[k] = bm_cg_load_partial(f, base, in->dtype, off, width, nvalid);
    } else {
      regs[k] = bm_cg_load(f, base, in->dtype, off, width);
    }
  }
  return bm_cg_prog(f, prog, regs);
}

LLVMValueRef bm_cg_epilogue(bm_cg_fn *f, LLVMValueRef v, LLVMValueRef *coords, int width) {
  return bm_cg_epilogue_partial(f, v, coords, width, NULL);
}
