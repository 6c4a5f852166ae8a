/* matmul.c - LLVM lowering of MATMUL and QMATMUL, and the tiled GEMM engine
 * they share with conv2d (bm_cg_emit_gemm, declared in cg.h).
 *
 * The engine is BLIS/GotoBLAS-style: inside one task it loops over K in
 * blocks of KC, packs the task's B block (KC x NT, panels of NR columns,
 * converting/dequantizing/transposing as needed) and A blocks (MC x KC, row
 * panels with a padded stride), and runs a register-blocked MR x NR
 * micro-kernel (MR broadcasts of A times NR/vec vectors of B per k, llvm.fma
 * into MR*NR/vec vector accumulators, K unrolled by 4). C is written after
 * each K block (stored, then accumulated); the bias and the epilogue are
 * applied only after the last one. Tasks with at most 3 rows (decode, GEMV)
 * stream B without packing; for quantized B (QMATMUL) tasks with up to 32
 * rows take a multi-row GEMV (qgemv_block) that dequantizes each vector of
 * B once per 4 rows of A and streams the weights at memory speed.
 *
 * Task space: (batch, N blocks, M blocks), M blocks fastest; consecutive
 * tasks of one call that share (batch, N block) run as one M range, so the
 * packed B block is reused across them.
 */
#include <string.h>

#include "cg.h"

#define GEMV_MAX_ROWS 3   /* tasks with at most this many rows take the GEMV path */
#define QGEMV_MAX_ROWS 32 /* the same for quantized B with the multi-row GEMV (qgemv) */
#define QGEMV_MB 4        /* rows of A per pass over B in qgemv */

/* ------------------------------------------------------------------ emitter state */

typedef struct gm {
  bm_cg *cg;
  bm_cg_fn *f;
  bm_cg_gemm *g;
  LLVMBuilderRef b;
  int vec, mr, nr, nv;       /* lanes; micro-tile MR x NR; NR = nv * vec */
  int64_t kc, kcs, mc, nnb;  /* K block, packed A row stride, M block, N blocks */
  int64_t mt;                /* rows per task (part_m) */
  int64_t nt_max;            /* bound of the run-time N block */
  bool part_m, part_b;       /* tasks split M / the batches */
  bool multi_k;              /* K may need more than one block */
  bool gemm;                 /* emit the packed GEMM path (else only GEMV) */
  bool qv;                   /* quantized B takes the multi-row GEMV (qgemv_block) */
  int64_t ks;                /* qgemv: k per step (vec for i8, 2*vec for i4) */
  int64_t ap_row;            /* qgemv: floats per A row in xrows */
  LLVMTypeRef vt;            /* <vec x float> */
  LLVMValueRef bp, ap, tile, arow, yacc, xperm, xrows; /* scratch regions */
  /* current batch */
  LLVMValueRef bi, a_off, b_off, c_off, bias_off;
} gm;

static LLVMValueRef c64(gm *m, int64_t v) { return bm_cg_i64(m->cg, v); }
static LLVMValueRef iadd(gm *m, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildAdd(m->b, a, b, ""); }
static LLVMValueRef isub(gm *m, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildSub(m->b, a, b, ""); }
static LLVMValueRef imul(gm *m, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildMul(m->b, a, b, ""); }
static LLVMValueRef idiv(gm *m, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildSDiv(m->b, a, b, ""); }
static LLVMValueRef irem(gm *m, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildSRem(m->b, a, b, ""); }
static LLVMValueRef imin(gm *m, LLVMValueRef a, LLVMValueRef b) { return bm_cg_imin(m->f, a, b); }
static LLVMValueRef ilt(gm *m, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildICmp(m->b, LLVMIntSLT, a, b, "");
}
static LLVMValueRef ige(gm *m, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildICmp(m->b, LLVMIntSGE, a, b, "");
}
static LLVMValueRef land(gm *m, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildAnd(m->b, a, b, ""); }
/* ceil(a / d) for a >= 0, d > 0 */
static LLVMValueRef iceil(gm *m, LLVMValueRef a, LLVMValueRef d) {
  return idiv(m, iadd(m, a, isub(m, d, c64(m, 1))), d);
}
static int64_t ceil_div(int64_t a, int64_t d) { return (a + d - 1) / d; }
static int64_t round_up(int64_t a, int64_t d) { return ceil_div(a, d) * d; }

static LLVMValueRef zero_vec(gm *m) { return LLVMConstNull(m->vt); }

static LLVMValueRef fptr(gm *m, LLVMValueRef base, LLVMValueRef idx) {
  return LLVMBuildGEP2(m->b, m->cg->t_f32, base, &idx, 1, "");
}
/* f32 scratch access: `width` floats at base[idx] */
static LLVMValueRef sload(gm *m, LLVMValueRef base, LLVMValueRef idx, int width) {
  LLVMTypeRef t = width == 1 ? m->cg->t_f32 : LLVMVectorType(m->cg->t_f32, (unsigned)width);
  LLVMValueRef v = LLVMBuildLoad2(m->b, t, fptr(m, base, idx), "");
  LLVMSetAlignment(v, 4);
  return v;
}
static void sstore(gm *m, LLVMValueRef base, LLVMValueRef idx, LLVMValueRef v) {
  LLVMValueRef s = LLVMBuildStore(m->b, v, fptr(m, base, idx));
  LLVMSetAlignment(s, 4);
}
static LLVMValueRef splat(gm *m, LLVMValueRef s) { return bm_cg_splat(m->f, s, m->vec); }

/* ------------------------------------------------------------------ control flow */

/* for (iv = start; iv < end; iv += step) with a stack counter (mem2reg
 * turns it into a phi); step may be computed in the body via loop_step. */
typedef struct lp {
  LLVMValueRef slot, iv, end, step;
  LLVMBasicBlockRef hdr, body, exit;
} lp;

static LLVMValueRef entry_alloca(gm *m, LLVMTypeRef t) { return bm_cg_alloca(m->f, t, ""); }

static void loop_begin(gm *m, lp *l, LLVMValueRef start, LLVMValueRef end, LLVMValueRef step) {
  l->slot = entry_alloca(m, m->cg->t_i64);
  LLVMBuildStore(m->b, start, l->slot);
  l->end = end;
  l->step = step;
  l->hdr = LLVMAppendBasicBlockInContext(m->cg->ctx, m->f->fn, "lp.hdr");
  l->body = LLVMAppendBasicBlockInContext(m->cg->ctx, m->f->fn, "lp.body");
  l->exit = LLVMAppendBasicBlockInContext(m->cg->ctx, m->f->fn, "lp.exit");
  LLVMBuildBr(m->b, l->hdr);
  LLVMPositionBuilderAtEnd(m->b, l->hdr);
  LLVMValueRef iv = LLVMBuildLoad2(m->b, m->cg->t_i64, l->slot, "iv");
  LLVMBuildCondBr(m->b, ilt(m, iv, end), l->body, l->exit);
  LLVMPositionBuilderAtEnd(m->b, l->body);
  l->iv = LLVMBuildLoad2(m->b, m->cg->t_i64, l->slot, "iv");
}

static void loop_end(gm *m, lp *l) {
  LLVMBuildStore(m->b, iadd(m, l->iv, l->step), l->slot);
  LLVMBuildBr(m->b, l->hdr);
  LLVMPositionBuilderAtEnd(m->b, l->exit);
}

typedef struct ifb {
  LLVMBasicBlockRef then_bb, else_bb, merge;
} ifb;

static void if_begin(gm *m, ifb *c, LLVMValueRef cond) {
  c->then_bb = LLVMAppendBasicBlockInContext(m->cg->ctx, m->f->fn, "if.then");
  c->else_bb = NULL;
  c->merge = LLVMAppendBasicBlockInContext(m->cg->ctx, m->f->fn, "if.end");
  LLVMBuildCondBr(m->b, cond, c->then_bb, c->merge);
  LLVMPositionBuilderAtEnd(m->b, c->then_bb);
}

/* if (cond) {...} else {...}: if_begin2, if_else, if_end */
static void if_begin2(gm *m, ifb *c, LLVMValueRef cond) {
  c->then_bb = LLVMAppendBasicBlockInContext(m->cg->ctx, m->f->fn, "if.then");
  c->else_bb = LLVMAppendBasicBlockInContext(m->cg->ctx, m->f->fn, "if.else");
  c->merge = LLVMAppendBasicBlockInContext(m->cg->ctx, m->f->fn, "if.end");
  LLVMBuildCondBr(m->b, cond, c->then_bb, c->else_bb);
  LLVMPositionBuilderAtEnd(m->b, c->then_bb);
}

static void if_else(gm *m, ifb *c) {
  LLVMBuildBr(m->b, c->merge);
  LLVMPositionBuilderAtEnd(m->b, c->else_bb);
}

static void if_end(gm *m, ifb *c) {
  LLVMBuildBr(m->b, c->merge);
  LLVMPositionBuilderAtEnd(m->b, c->merge);
}

/* ------------------------------------------------------------------ loads of B */

/* `width` elements of a float buffer at idx, lanes >= nvalid (if given) zero.
 * nvalid must be >= 1 when given. */
static LLVMValueRef load_dense(gm *m, LLVMValueRef base, bm_dtype t, LLVMValueRef idx, int width,
                               LLVMValueRef nvalid) {
  if (!nvalid) return bm_cg_load(m->f, base, t, idx, width);
  return bm_cg_load_partial(m->f, base, t, idx, width, nvalid); /* masked: zero lanes */
}

/* Quantized weights: `width` elements of q (i8, or packed signed i4) at
 * element index idx, as f32. even: idx is known to be even (i4 fast path). */
static LLVMValueRef q_load(gm *m, LLVMValueRef q, LLVMValueRef idx, int width, bool even) {
  bm_cg *cg = m->cg;
  LLVMBuilderRef b = m->b;
  LLVMTypeRef ft = width == 1 ? cg->t_f32 : LLVMVectorType(cg->t_f32, (unsigned)width);
  if (m->g->b_dt == BM_DTYPE_I8) {
    LLVMTypeRef it = width == 1 ? cg->t_i8 : LLVMVectorType(cg->t_i8, (unsigned)width);
    LLVMValueRef p = LLVMBuildGEP2(b, cg->t_i8, q, &idx, 1, "");
    LLVMValueRef v = LLVMBuildLoad2(b, it, p, "");
    LLVMSetAlignment(v, 1);
    return LLVMBuildSIToFP(b, v, ft, "");
  }
  /* i4: byte idx/2, even element in the low nibble */
  if (even && width > 1) {
    LLVMTypeRef bt = LLVMVectorType(cg->t_i8, (unsigned)(width / 2));
    LLVMValueRef byte = LLVMBuildAShr(b, idx, c64(m, 1), "");
    LLVMValueRef p = LLVMBuildGEP2(b, cg->t_i8, q, &byte, 1, "");
    LLVMValueRef v = LLVMBuildLoad2(b, bt, p, "");
    LLVMSetAlignment(v, 1);
    LLVMValueRef four = bm_cg_splat(m->f, LLVMConstInt(cg->t_i8, 4, 0), width / 2);
    LLVMValueRef lo = LLVMBuildAShr(b, LLVMBuildShl(b, v, four, ""), four, "");
    LLVMValueRef hi = LLVMBuildAShr(b, v, four, "");
    LLVMValueRef mask[64];
    for (int i = 0; i < width; i++)
      mask[i] = bm_cg_i32(cg, (i & 1) ? width / 2 + i / 2 : i / 2);
    LLVMValueRef both = LLVMBuildShuffleVector(b, lo, hi, LLVMConstVector(mask, (unsigned)width), "");
    return LLVMBuildSIToFP(b, both, ft, "");
  }
  LLVMValueRef out = width == 1 ? NULL : LLVMGetUndef(ft);
  for (int i = 0; i < width; i++) {
    LLVMValueRef e = iadd(m, idx, c64(m, i));
    LLVMValueRef byte = LLVMBuildAShr(b, e, c64(m, 1), "");
    LLVMValueRef p = LLVMBuildGEP2(b, cg->t_i8, q, &byte, 1, "");
    LLVMValueRef v = LLVMBuildLoad2(b, cg->t_i8, p, "");
    LLVMSetAlignment(v, 1);
    LLVMValueRef odd = LLVMBuildTrunc(b, LLVMBuildAnd(b, e, c64(m, 1), ""), cg->t_i1, "");
    LLVMValueRef four = LLVMConstInt(cg->t_i8, 4, 0);
    LLVMValueRef lo = LLVMBuildAShr(b, LLVMBuildShl(b, v, four, ""), four, "");
    LLVMValueRef hi = LLVMBuildAShr(b, v, four, "");
    LLVMValueRef s = LLVMBuildSIToFP(b, LLVMBuildSelect(b, odd, hi, lo, ""), cg->t_f32, "");
    if (width == 1) return s;
    out = LLVMBuildInsertElement(b, out, s, bm_cg_i32(cg, i), "");
  }
  return out;
}

/* Scalar B_b[k, n] for the NK and Q kinds (dequantized). */
static LLVMValueRef b_elem_nk(gm *m, LLVMValueRef k, LLVMValueRef n) {
  bm_cg_gemm *g = m->g;
  if (g->b_kind == BM_CG_GEMM_B_NK)
    return bm_cg_load(m->f, g->b, g->b_dt, iadd(m, m->b_off, iadd(m, imul(m, n, g->ldb), k)), 1);
  LLVMValueRef q = q_load(m, g->b, iadd(m, imul(m, n, g->K), k), 1, false);
  LLVMValueRef ng = c64(m, g->k_max / g->q_group);
  LLVMValueRef si = iadd(m, imul(m, n, ng), idiv(m, k, c64(m, g->q_group)));
  return LLVMBuildFMul(m->b, q, bm_cg_load(m->f, g->scale, BM_DTYPE_F32, si, 1), "");
}

/* Row loads along K for the NK and Q kinds: B_b[k..k+vec, n] as a vector
 * (Q: q times its group scale; the vec chunk lies in one group). */
static LLVMValueRef b_row_nk(gm *m, LLVMValueRef n, LLVMValueRef k, bool scaled) {
  bm_cg_gemm *g = m->g;
  if (g->b_kind == BM_CG_GEMM_B_NK)
    return bm_cg_load(m->f, g->b, g->b_dt, iadd(m, m->b_off, iadd(m, imul(m, n, g->ldb), k)), m->vec);
  LLVMValueRef q = q_load(m, g->b, iadd(m, imul(m, n, g->K), k), m->vec,
                          g->b_dt == BM_DTYPE_I8 || g->k_max % 2 == 0);
  if (!scaled) return q;
  LLVMValueRef ng = c64(m, g->k_max / g->q_group);
  LLVMValueRef si = iadd(m, imul(m, n, ng), idiv(m, k, c64(m, g->q_group)));
  return LLVMBuildFMul(m->b, q, splat(m, bm_cg_load(m->f, g->scale, BM_DTYPE_F32, si, 1)), "");
}

/* Vector-along-n access for the KN and LOADER kinds. */
typedef struct bvec {
  LLVMValueRef st[4];
} bvec;

static void bvec_prep(gm *m, bvec *v, LLVMValueRef n, LLVMValueRef nvalid) {
  bm_cg_gemm *g = m->g;
  memset(v, 0, sizeof *v);
  if (g->b_kind == BM_CG_GEMM_B_LOADER) {
    g->load_b_prep(m->f, g, m->b_off, n, m->vec, nvalid, v->st);
    return;
  }
  v->st[0] = iadd(m, m->b_off, n);
  v->st[1] = nvalid;
}

static LLVMValueRef bvec_load(gm *m, bvec *v, LLVMValueRef k) {
  bm_cg_gemm *g = m->g;
  if (g->b_kind == BM_CG_GEMM_B_LOADER) return g->load_b(m->f, g, v->st, k, m->vec);
  return load_dense(m, g->b, g->b_dt, iadd(m, v->st[0], imul(m, k, g->ldb)), m->vec, v->st[1]);
}

/* ------------------------------------------------------------------ storing C */

/* Stores v (`width` lanes along n; nvalid NULL = all) to C_b[row, col..]:
 * adds the old C when `add`; applies bias and epilogue when `epi`. */
static void store_seg(gm *m, LLVMValueRef v, LLVMValueRef row, LLVMValueRef col, int width,
                      LLVMValueRef nvalid, bool add, bool epi) {
  bm_cg_gemm *g = m->g;
  bm_cg_fn *f = m->f;
  LLVMValueRef idx = iadd(m, m->c_off, iadd(m, imul(m, row, g->ldc), col));
  if (add) {
    LLVMValueRef old = nvalid ? bm_cg_load_partial(f, g->c, g->c_dt, idx, width, nvalid)
                              : bm_cg_load(f, g->c, g->c_dt, idx, width);
    v = LLVMBuildFAdd(m->b, v, old, "");
  }
  if (epi && g->bias) {
    LLVMValueRef bv = bm_cg_load(f, g->bias, g->bias_dt, iadd(m, m->bias_off, row), 1);
    v = LLVMBuildFAdd(m->b, v, bm_cg_splat(f, bv, width), "");
  }
  if (epi && m->f->node->a.prog.n > 0) {
    LLVMValueRef coords[BM_MAX_DIMS];
    if (width == 1 || g->vec_epilogue) {
      g->coords(f, g, m->bi, row, col, coords);
      v = nvalid ? bm_cg_epilogue_partial(f, v, coords, width, nvalid)
                 : bm_cg_epilogue(f, v, coords, width);
    } else {
      /* lane by lane: the operands are not contiguous along this vector */
      for (int j = 0; j < width; j++) {
        ifb c;
        LLVMValueRef lane = bm_cg_i32(m->cg, j);
        if (nvalid) if_begin(m, &c, ilt(m, c64(m, j), nvalid));
        LLVMValueRef cj = iadd(m, col, c64(m, j));
        g->coords(f, g, m->bi, row, cj, coords);
        LLVMValueRef s = bm_cg_epilogue(f, LLVMBuildExtractElement(m->b, v, lane, ""), coords, 1);
        bm_cg_store(f, g->c, g->c_dt, iadd(m, idx, c64(m, j)), s, 1);
        if (nvalid) if_end(m, &c);
      }
      return;
    }
  }
  if (nvalid)
    bm_cg_store_partial(f, g->c, g->c_dt, idx, v, width, nvalid);
  else
    bm_cg_store(f, g->c, g->c_dt, idx, v, width);
}

/* Stores a micro-tile acc[MR][NV] at C_b[row0.., col0..] with mr x nr valid. */
static void store_tile(gm *m, LLVMValueRef *acc, LLVMValueRef row0, LLVMValueRef col0,
                       LLVMValueRef mr, LLVMValueRef nr, bool add, bool epi) {
  int MR = m->mr, NV = m->nv, V = m->vec;
  ifb full;
  if_begin2(m, &full, land(m, LLVMBuildICmp(m->b, LLVMIntEQ, mr, c64(m, MR), ""),
                           LLVMBuildICmp(m->b, LLVMIntEQ, nr, c64(m, m->nr), "")));
  for (int i = 0; i < MR; i++)
    for (int v = 0; v < NV; v++)
      store_seg(m, acc[i * NV + v], iadd(m, row0, c64(m, i)), iadd(m, col0, c64(m, v * V)), V, NULL,
                add, epi);
  if_else(m, &full);
  /* edge tile: through the tile buffer, row by row */
  for (int i = 0; i < MR; i++)
    for (int v = 0; v < NV; v++) sstore(m, m->tile, c64(m, i * m->nr + v * V), acc[i * NV + v]);
  lp li;
  loop_begin(m, &li, c64(m, 0), mr, c64(m, 1));
  for (int v = 0; v < NV; v++) {
    LLVMValueRef cnt = isub(m, nr, c64(m, v * V));
    ifb some;
    if_begin(m, &some, LLVMBuildICmp(m->b, LLVMIntSGT, cnt, c64(m, 0), ""));
    LLVMValueRef val = sload(m, m->tile, iadd(m, imul(m, li.iv, c64(m, m->nr)), c64(m, v * V)), V);
    LLVMValueRef row = iadd(m, row0, li.iv), col = iadd(m, col0, c64(m, v * V));
    ifb whole;
    if_begin2(m, &whole, ige(m, cnt, c64(m, V)));
    store_seg(m, val, row, col, V, NULL, add, epi);
    if_else(m, &whole);
    store_seg(m, val, row, col, V, cnt, add, epi);
    if_end(m, &whole);
    if_end(m, &some);
  }
  loop_end(m, &li);
  if_end(m, &full);
}

/* ------------------------------------------------------------------ packing */

/* Transposes w vectors of w lanes in place: out[i][c] = in[c][i]. */
static void transpose(gm *m, LLVMValueRef *r, int w) {
  for (int h = w / 2; h >= 1; h /= 2) {
    LLVMValueRef mi[64], mj[64];
    for (int c = 0; c < w; c++) {
      mi[c] = bm_cg_i32(m->cg, (c & h) ? w + c - h : c);
      mj[c] = bm_cg_i32(m->cg, (c & h) ? w + c : c + h);
    }
    LLVMValueRef Mi = LLVMConstVector(mi, (unsigned)w), Mj = LLVMConstVector(mj, (unsigned)w);
    for (int i = 0; i < w; i++) {
      if (i & h) continue;
      int j = i + h;
      LLVMValueRef a = LLVMBuildShuffleVector(m->b, r[i], r[j], Mi, "");
      LLVMValueRef c = LLVMBuildShuffleVector(m->b, r[i], r[j], Mj, "");
      r[i] = a;
      r[j] = c;
    }
  }
}

/* Packs B_b[pc .. pc+kc, n0 .. n0+ncnt) into bp: panel p (NR columns) at
 * p*kcp*NR, row k of it at + k*NR; zero beyond kc (up to kcp) and ncnt. */
static void pack_b(gm *m, LLVMValueRef pc, LLVMValueRef kc, LLVMValueRef kcp, LLVMValueRef n0,
                   LLVMValueRef ncnt) {
  bm_cg_gemm *g = m->g;
  int V = m->vec, NR = m->nr;
  LLVMValueRef jstart = c64(m, 0);
  if (g->b_kind == BM_CG_GEMM_B_KN) {
    /* full panels row by row, so that B is read as contiguous runs */
    LLVMValueRef nfull = imul(m, idiv(m, ncnt, c64(m, NR)), c64(m, NR));
    lp lk;
    loop_begin(m, &lk, c64(m, 0), kcp, c64(m, 1));
    LLVMValueRef src = iadd(m, m->b_off, iadd(m, imul(m, iadd(m, pc, lk.iv), g->ldb), n0));
    LLVMValueRef inside = ilt(m, lk.iv, kc);
    lp lj;
    loop_begin(m, &lj, c64(m, 0), nfull, c64(m, NR));
    LLVMValueRef dst = iadd(m, imul(m, lj.iv, kcp), imul(m, lk.iv, c64(m, NR)));
    ifb in;
    if_begin2(m, &in, inside);
    for (int v = 0; v < m->nv; v++)
      sstore(m, m->bp, iadd(m, dst, c64(m, v * V)),
             load_dense(m, g->b, g->b_dt, iadd(m, src, iadd(m, lj.iv, c64(m, v * V))), V, NULL));
    if_else(m, &in);
    for (int v = 0; v < m->nv; v++) sstore(m, m->bp, iadd(m, dst, c64(m, v * V)), zero_vec(m));
    if_end(m, &in);
    loop_end(m, &lj);
    loop_end(m, &lk);
    jstart = nfull;
  }
  lp lj;
  loop_begin(m, &lj, jstart, ncnt, c64(m, NR));
  LLVMValueRef pb = imul(m, lj.iv, kcp); /* panel base: (jr / NR) * kcp * NR */
  LLVMValueRef nvp = imin(m, c64(m, NR), isub(m, ncnt, lj.iv));
  for (int v = 0; v < m->nv; v++) {
    LLVMValueRef col = iadd(m, n0, iadd(m, lj.iv, c64(m, v * V)));
    LLVMValueRef cnt = isub(m, nvp, c64(m, v * V)); /* valid lanes of this vector (may be <= 0) */
    LLVMValueRef dst0 = iadd(m, pb, c64(m, v * V));
    if (g->b_kind == BM_CG_GEMM_B_KN || g->b_kind == BM_CG_GEMM_B_LOADER) {
      ifb c;
      if_begin2(m, &c, LLVMBuildICmp(m->b, LLVMIntSGT, cnt, c64(m, 0), ""));
      for (int part = 0; part < 2; part++) {
        ifb w;
        if (part == 0)
          if_begin2(m, &w, ige(m, cnt, c64(m, V)));
        else
          if_else(m, &w);
        bvec bv;
        bvec_prep(m, &bv, col, part == 0 ? NULL : cnt);
        lp lk;
        loop_begin(m, &lk, c64(m, 0), kc, c64(m, 1));
        sstore(m, m->bp, iadd(m, dst0, imul(m, lk.iv, c64(m, NR))), bvec_load(m, &bv, iadd(m, pc, lk.iv)));
        loop_end(m, &lk);
        if (part == 1) if_end(m, &w);
      }
      /* padding rows kc .. kcp */
      lp lz;
      loop_begin(m, &lz, kc, kcp, c64(m, 1));
      sstore(m, m->bp, iadd(m, dst0, imul(m, lz.iv, c64(m, NR))), zero_vec(m));
      loop_end(m, &lz);
      if_else(m, &c);
      lp lz2;
      loop_begin(m, &lz2, c64(m, 0), kcp, c64(m, 1));
      sstore(m, m->bp, iadd(m, dst0, imul(m, lz2.iv, c64(m, NR))), zero_vec(m));
      loop_end(m, &lz2);
      if_end(m, &c);
      continue;
    }
    /* NK / Q: V x V blocks, transposed in registers */
    bool fast_ok = g->b_kind == BM_CG_GEMM_B_NK ||
                   (g->q_group % V == 0 && (g->b_dt == BM_DTYPE_I8 || g->k_max % 2 == 0));
    lp lk;
    loop_begin(m, &lk, c64(m, 0), kcp, c64(m, V));
    LLVMValueRef kk = lk.iv;
    ifb fast;
    if (fast_ok) {
      if_begin2(m, &fast, land(m, ige(m, cnt, c64(m, V)), LLVMBuildICmp(m->b, LLVMIntSLE,
                                                                        iadd(m, kk, c64(m, V)), kc, "")));
      LLVMValueRef r[64];
      for (int j = 0; j < V; j++) r[j] = b_row_nk(m, iadd(m, col, c64(m, j)), iadd(m, pc, kk), true);
      transpose(m, r, V);
      for (int c = 0; c < V; c++)
        sstore(m, m->bp, iadd(m, dst0, imul(m, iadd(m, kk, c64(m, c)), c64(m, NR))), r[c]);
      if_else(m, &fast);
    }
    /* general block: element by element, zeros outside */
    lp lc;
    loop_begin(m, &lc, kk, imin(m, kcp, iadd(m, kk, c64(m, V))), c64(m, 1));
    lp lr;
    loop_begin(m, &lr, c64(m, 0), c64(m, V), c64(m, 1));
    LLVMValueRef dst = iadd(m, dst0, iadd(m, imul(m, lc.iv, c64(m, NR)), lr.iv));
    sstore(m, m->bp, dst, LLVMConstNull(m->cg->t_f32));
    ifb valid;
    if_begin(m, &valid, land(m, ilt(m, lr.iv, cnt), ilt(m, lc.iv, kc)));
    sstore(m, m->bp, dst, b_elem_nk(m, iadd(m, pc, lc.iv), iadd(m, col, lr.iv)));
    if_end(m, &valid);
    loop_end(m, &lr);
    loop_end(m, &lc);
    if (fast_ok) if_end(m, &fast);
    loop_end(m, &lk);
  }
  loop_end(m, &lj);
}

/* Packs A_b[row0 .. row0+mcnt, pc .. pc+kc) into ap: row r at r*KCS, zero
 * beyond kc (up to kcp) and for the rows mcnt .. roundup(mcnt, MR). */
static void pack_a(gm *m, LLVMValueRef pc, LLVMValueRef kc, LLVMValueRef kcp, LLVMValueRef row0,
                   LLVMValueRef mcnt) {
  bm_cg_gemm *g = m->g;
  int V = m->vec;
  LLVMValueRef rows = imul(m, iceil(m, mcnt, c64(m, m->mr)), c64(m, m->mr));
  lp lr;
  loop_begin(m, &lr, c64(m, 0), rows, c64(m, 1));
  LLVMValueRef dst0 = imul(m, lr.iv, c64(m, m->kcs));
  LLVMValueRef row = iadd(m, row0, lr.iv);
  ifb valid;
  if_begin2(m, &valid, ilt(m, lr.iv, mcnt));
  if (!g->a_trans) {
    LLVMValueRef src0 = iadd(m, m->a_off, iadd(m, imul(m, row, g->lda), pc));
    lp lk;
    loop_begin(m, &lk, c64(m, 0), kcp, c64(m, V));
    LLVMValueRef cnt = isub(m, kc, lk.iv); /* >= 1: see the block padding */
    ifb w;
    if_begin2(m, &w, ige(m, cnt, c64(m, V)));
    sstore(m, m->ap, iadd(m, dst0, lk.iv), load_dense(m, g->a, g->a_dt, iadd(m, src0, lk.iv), V, NULL));
    if_else(m, &w);
    sstore(m, m->ap, iadd(m, dst0, lk.iv), load_dense(m, g->a, g->a_dt, iadd(m, src0, lk.iv), V, cnt));
    if_end(m, &w);
    loop_end(m, &lk);
  } else {
    lp lk;
    loop_begin(m, &lk, c64(m, 0), kcp, c64(m, 1));
    LLVMValueRef kk = imin(m, lk.iv, isub(m, kc, c64(m, 1))); /* in bounds; masked below */
    LLVMValueRef src = iadd(m, m->a_off, iadd(m, imul(m, iadd(m, pc, kk), g->lda), row));
    LLVMValueRef x = bm_cg_load(m->f, g->a, g->a_dt, src, 1);
    x = LLVMBuildSelect(m->b, ilt(m, lk.iv, kc), x, LLVMConstNull(m->cg->t_f32), "");
    sstore(m, m->ap, iadd(m, dst0, lk.iv), x);
    loop_end(m, &lk);
  }
  if_else(m, &valid);
  lp lz;
  loop_begin(m, &lz, c64(m, 0), kcp, c64(m, V));
  sstore(m, m->ap, iadd(m, dst0, lz.iv), zero_vec(m));
  loop_end(m, &lz);
  if_end(m, &valid);
  loop_end(m, &lr);
}

/* ------------------------------------------------------------------ micro-kernel */

/* acc[MR*NV] = sum over k < kcp (multiple of 4) of Ap[i*KCS + k] * Bp[k*NR + v*vec ..]. */
static void micro_kernel(gm *m, LLVMValueRef ap0, LLVMValueRef bp0, LLVMValueRef kcp,
                         LLVMValueRef *acc) {
  bm_cg *cg = m->cg;
  LLVMBuilderRef b = m->b;
  int MR = m->mr, NV = m->nv, NR = m->nr, V = m->vec;
  int nacc = MR * NV;
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(b);
  LLVMBasicBlockRef hdr = LLVMAppendBasicBlockInContext(cg->ctx, m->f->fn, "mk.hdr");
  LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(cg->ctx, m->f->fn, "mk.body");
  LLVMBasicBlockRef exit = LLVMAppendBasicBlockInContext(cg->ctx, m->f->fn, "mk.exit");
  LLVMBuildBr(b, hdr);
  LLVMPositionBuilderAtEnd(b, hdr);
  LLVMValueRef k = LLVMBuildPhi(b, cg->t_i64, "k");
  LLVMValueRef phis[64];
  LLVMValueRef z = zero_vec(m), zero = c64(m, 0);
  LLVMAddIncoming(k, &zero, &pre, 1);
  for (int i = 0; i < nacc; i++) {
    phis[i] = LLVMBuildPhi(b, m->vt, "acc");
    LLVMAddIncoming(phis[i], &z, &pre, 1);
  }
  LLVMBuildCondBr(b, ilt(m, k, kcp), body, exit);
  LLVMPositionBuilderAtEnd(b, body);
  LLVMValueRef cur[64];
  memcpy(cur, phis, sizeof(LLVMValueRef) * (size_t)nacc);
  LLVMValueRef apk = fptr(m, ap0, k);
  LLVMValueRef bpk = fptr(m, bp0, imul(m, k, c64(m, NR)));
  for (int u = 0; u < 4; u++) {
    LLVMValueRef bv[8];
    for (int v = 0; v < NV; v++) bv[v] = sload(m, bpk, c64(m, u * NR + v * V), V);
    for (int i = 0; i < MR; i++) {
      LLVMValueRef a = splat(m, sload(m, apk, c64(m, (int64_t)i * m->kcs + u), 1));
      for (int v = 0; v < NV; v++) cur[i * NV + v] = bm_cg_fma(m->f, a, bv[v], cur[i * NV + v]);
    }
  }
  LLVMValueRef knext = iadd(m, k, c64(m, 4));
  LLVMBasicBlockRef latch = LLVMGetInsertBlock(b);
  LLVMAddIncoming(k, &knext, &latch, 1);
  for (int i = 0; i < nacc; i++) LLVMAddIncoming(phis[i], &cur[i], &latch, 1);
  LLVMBuildBr(b, hdr);
  LLVMPositionBuilderAtEnd(b, exit);
  memcpy(acc, phis, sizeof(LLVMValueRef) * (size_t)nacc);
}

/* ------------------------------------------------------------------ GEMM path */

/* Prefetches (for writing) the C tile the next micro-kernel call updates, so
 * its store after the K loop does not wait on memory. Rows past M are
 * harmless: prefetches never fault. */
static void prefetch_c_tile(gm *m, LLVMValueRef row0, LLVMValueRef col0) {
  bm_cg *cg = m->cg;
  bm_cg_gemm *g = m->g;
  unsigned id = LLVMLookupIntrinsicID("llvm.prefetch", 13);
  LLVMTypeRef ovl = cg->t_ptr;
  LLVMValueRef fn = LLVMGetIntrinsicDeclaration(cg->mod, id, &ovl, 1);
  LLVMTypeRef ft = LLVMIntrinsicGetType(cg->ctx, id, &ovl, 1);
  for (int i = 0; i < m->mr; i++) {
    LLVMValueRef idx = iadd(m, m->c_off, iadd(m, imul(m, iadd(m, row0, c64(m, i)), g->ldc), col0));
    for (int e = 0; e < m->nr; e += 16) {
      LLVMValueRef p = fptr(m, g->c, iadd(m, idx, c64(m, e)));
      LLVMValueRef args[4] = {p, bm_cg_i32(cg, 1), bm_cg_i32(cg, 3), bm_cg_i32(cg, 1)};
      LLVMBuildCall2(m->b, ft, fn, args, 4, "");
    }
  }
}

static void gemm_block(gm *m, LLVMValueRef m0, LLVMValueRef m1, LLVMValueRef n0, LLVMValueRef n1) {
  bm_cg_gemm *g = m->g;
  LLVMValueRef ncnt = isub(m, n1, n0);
  lp lpc;
  loop_begin(m, &lpc, c64(m, 0), g->K, c64(m, m->kc));
  LLVMValueRef pc = lpc.iv;
  LLVMValueRef kc = imin(m, c64(m, m->kc), isub(m, g->K, pc));
  LLVMValueRef kcp = LLVMBuildAnd(m->b, iadd(m, kc, c64(m, 3)), c64(m, ~(int64_t)3), "");
  LLVMValueRef first = LLVMBuildICmp(m->b, LLVMIntEQ, pc, c64(m, 0), "");
  LLVMValueRef last = ige(m, iadd(m, pc, kc), g->K);
  pack_b(m, pc, kc, kcp, n0, ncnt);
  lp lic;
  loop_begin(m, &lic, m0, m1, c64(m, m->mc));
  LLVMValueRef mcnt = imin(m, c64(m, m->mc), isub(m, m1, lic.iv));
  pack_a(m, pc, kc, kcp, lic.iv, mcnt);
  lp ljr;
  loop_begin(m, &ljr, c64(m, 0), ncnt, c64(m, m->nr));
  LLVMValueRef nr = imin(m, c64(m, m->nr), isub(m, ncnt, ljr.iv));
  lp lir;
  loop_begin(m, &lir, c64(m, 0), mcnt, c64(m, m->mr));
  LLVMValueRef mr = imin(m, c64(m, m->mr), isub(m, mcnt, lir.iv));
  LLVMValueRef acc[64];
  if (g->c_dt == BM_DTYPE_F32) prefetch_c_tile(m, iadd(m, lic.iv, lir.iv), iadd(m, n0, ljr.iv));
  micro_kernel(m, fptr(m, m->ap, imul(m, lir.iv, c64(m, m->kcs))),
               fptr(m, m->bp, imul(m, ljr.iv, kcp)), kcp, acc);
  LLVMValueRef row0 = iadd(m, lic.iv, lir.iv), col0 = iadd(m, n0, ljr.iv);
  if (!m->multi_k) {
    store_tile(m, acc, row0, col0, mr, nr, false, true);
  } else {
    /* first block stores, later blocks add; the last applies bias + epilogue */
    ifb cf;
    if_begin2(m, &cf, first);
    {
      ifb cl;
      if_begin2(m, &cl, last);
      store_tile(m, acc, row0, col0, mr, nr, false, true);
      if_else(m, &cl);
      store_tile(m, acc, row0, col0, mr, nr, false, false);
      if_end(m, &cl);
    }
    if_else(m, &cf);
    {
      ifb cl;
      if_begin2(m, &cl, last);
      store_tile(m, acc, row0, col0, mr, nr, true, true);
      if_else(m, &cl);
      store_tile(m, acc, row0, col0, mr, nr, true, false);
      if_end(m, &cl);
    }
    if_end(m, &cf);
  }
  loop_end(m, &lir);
  loop_end(m, &ljr);
  loop_end(m, &lic);
  loop_end(m, &lpc);
}

/* ------------------------------------------------------------------ GEMV path */

/* dst[0 .. roundup(K, vec)) = A_b[row, :] as f32, zero padded. */
static void copy_a_row_to(gm *m, LLVMValueRef row, LLVMValueRef dst) {
  bm_cg_gemm *g = m->g;
  int V = m->vec;
  if (!g->a_trans) {
    LLVMValueRef src0 = iadd(m, m->a_off, imul(m, row, g->lda));
    lp lk;
    loop_begin(m, &lk, c64(m, 0), g->K, c64(m, V));
    LLVMValueRef cnt = isub(m, g->K, lk.iv);
    ifb w;
    if_begin2(m, &w, ige(m, cnt, c64(m, V)));
    sstore(m, dst, lk.iv, load_dense(m, g->a, g->a_dt, iadd(m, src0, lk.iv), V, NULL));
    if_else(m, &w);
    sstore(m, dst, lk.iv, load_dense(m, g->a, g->a_dt, iadd(m, src0, lk.iv), V, cnt));
    if_end(m, &w);
    loop_end(m, &lk);
  } else {
    lp lk;
    loop_begin(m, &lk, c64(m, 0), g->K, c64(m, 1));
    LLVMValueRef src = iadd(m, m->a_off, iadd(m, imul(m, lk.iv, g->lda), row));
    sstore(m, dst, lk.iv, bm_cg_load(m->f, g->a, g->a_dt, src, 1));
    loop_end(m, &lk);
    /* zero the padding up to the next vector */
    lp lz;
    loop_begin(m, &lz, g->K, iadd(m, g->K, c64(m, V)), c64(m, 1));
    sstore(m, dst, lz.iv, LLVMConstNull(m->cg->t_f32));
    loop_end(m, &lz);
  }
}

static void copy_a_row(gm *m, LLVMValueRef row) { copy_a_row_to(m, row, m->arow); }

/* KN / LOADER: C[row, n .. n+nvec*vec) for one row, B streamed along n.
 * nvalid NULL: nvec full vectors; else one vector with nvalid lanes. */
static void gemv_kn_chunk(gm *m, LLVMValueRef row, LLVMValueRef n, int nvec, LLVMValueRef nvalid) {
  bm_cg_gemm *g = m->g;
  int V = m->vec;
  bvec bv[8];
  LLVMValueRef slot[8];
  for (int v = 0; v < nvec; v++) {
    bvec_prep(m, &bv[v], iadd(m, n, c64(m, v * V)), nvalid);
    slot[v] = entry_alloca(m, m->vt);
    LLVMBuildStore(m->b, zero_vec(m), slot[v]);
  }
  lp lk;
  loop_begin(m, &lk, c64(m, 0), g->K, c64(m, 1));
  LLVMValueRef a = splat(m, sload(m, m->arow, lk.iv, 1));
  for (int v = 0; v < nvec; v++) {
    LLVMValueRef acc = LLVMBuildLoad2(m->b, m->vt, slot[v], "");
    LLVMBuildStore(m->b, bm_cg_fma(m->f, a, bvec_load(m, &bv[v], lk.iv), acc), slot[v]);
  }
  loop_end(m, &lk);
  for (int v = 0; v < nvec; v++)
    store_seg(m, LLVMBuildLoad2(m->b, m->vt, slot[v], ""), row, iadd(m, n, c64(m, v * V)), V, nvalid,
              false, true);
}

/* i4 GEMV in pairs: with the activation row permuted per 2*vec chunk into
 * (even lanes, odd lanes), the low and high nibbles of vec bytes multiply
 * them directly, without re-interleaving the nibbles. */
static bool i4_pairs(const gm *m) {
  const bm_cg_gemm *g = m->g;
  return g->b_kind == BM_CG_GEMM_B_Q && g->b_dt == BM_DTYPE_I4 && g->k_max % (2 * m->vec) == 0 &&
         g->q_group % (2 * m->vec) == 0;
}

/* dst = src (K floats) with each 2*vec chunk split into its even and odd lanes. */
static void permute_row(gm *m, LLVMValueRef src, LLVMValueRef dst) {
  int V = m->vec;
  LLVMValueRef ev[64], od[64];
  for (int j = 0; j < V; j++) {
    ev[j] = bm_cg_i32(m->cg, 2 * j);
    od[j] = bm_cg_i32(m->cg, 2 * j + 1);
  }
  lp lc;
  loop_begin(m, &lc, c64(m, 0), m->g->K, c64(m, 2 * V));
  LLVMValueRef a = sload(m, src, lc.iv, V), b = sload(m, src, iadd(m, lc.iv, c64(m, V)), V);
  sstore(m, dst, lc.iv, LLVMBuildShuffleVector(m->b, a, b, LLVMConstVector(ev, (unsigned)V), ""));
  sstore(m, dst, iadd(m, lc.iv, c64(m, V)),
         LLVMBuildShuffleVector(m->b, a, b, LLVMConstVector(od, (unsigned)V), ""));
  loop_end(m, &lc);
}

/* xperm = arow permuted (see permute_row) */
static void permute_a_row(gm *m) { permute_row(m, m->arow, m->xperm); }

/* NK / Q: C[row, n .. n+R) as R dot products of arow with rows of B^T. */
static void gemv_nk_rows(gm *m, LLVMValueRef row, LLVMValueRef n, int R) {
  bm_cg_gemm *g = m->g;
  bm_cg *cg = m->cg;
  int V = m->vec;
  bool quant = g->b_kind == BM_CG_GEMM_B_Q;
  /* groups along K: Q has K/q_group groups with a scale each; NK one group, no scale */
  LLVMValueRef gs = quant ? c64(m, g->q_group) : g->K;
  LLVMValueRef ngroups = quant ? c64(m, g->k_max / g->q_group) : c64(m, 1);
  bool vec_ok = !quant || g->b_dt == BM_DTYPE_I8 || (g->k_max % 2 == 0 && g->q_group % 2 == 0);
  bool pairs = i4_pairs(m);
  LLVMValueRef acc[4], sacc[4], gacc[4], gacc2[4], gsacc[4];
  for (int r = 0; r < R; r++) {
    gacc2[r] = entry_alloca(m, m->vt);
    acc[r] = entry_alloca(m, m->vt);
    sacc[r] = entry_alloca(m, cg->t_f32);
    gacc[r] = entry_alloca(m, m->vt);
    gsacc[r] = entry_alloca(m, cg->t_f32);
    LLVMBuildStore(m->b, zero_vec(m), acc[r]);
    LLVMBuildStore(m->b, LLVMConstNull(cg->t_f32), sacc[r]);
  }
  lp lg;
  loop_begin(m, &lg, c64(m, 0), ngroups, c64(m, 1));
  LLVMValueRef g0 = imul(m, lg.iv, gs);
  LLVMValueRef gend = iadd(m, g0, gs);
  LLVMValueRef vend = vec_ok ? isub(m, gend, irem(m, gs, c64(m, V))) : g0;
  for (int r = 0; r < R; r++) {
    LLVMBuildStore(m->b, zero_vec(m), gacc[r]);
    LLVMBuildStore(m->b, zero_vec(m), gacc2[r]);
    LLVMBuildStore(m->b, LLVMConstNull(cg->t_f32), gsacc[r]);
  }
  /* small static groups are unrolled; otherwise a loop over the group's vectors */
  int KS = pairs ? 2 * V : V; /* k per step */
  bool unroll = quant && vec_ok && g->q_group % KS == 0 && g->q_group / KS <= 16;
  int64_t steps = unroll ? g->q_group / KS : 1;
  lp lk;
  if (!unroll) loop_begin(m, &lk, g0, vend, c64(m, KS));
  for (int64_t u = 0; u < steps; u++) {
    LLVMValueRef k = unroll ? iadd(m, g0, c64(m, u * KS)) : lk.iv;
    if (pairs) {
      LLVMValueRef xe = sload(m, m->xperm, k, V), xo = sload(m, m->xperm, iadd(m, k, c64(m, V)), V);
      LLVMTypeRef bt = LLVMVectorType(cg->t_i8, (unsigned)V), ft = m->vt;
      LLVMValueRef four = bm_cg_splat(m->f, LLVMConstInt(cg->t_i8, 4, 0), V);
      for (int r = 0; r < R; r++) {
        LLVMValueRef e = iadd(m, imul(m, iadd(m, n, c64(m, r)), g->K), k);
        LLVMValueRef byte = LLVMBuildAShr(m->b, e, c64(m, 1), "");
        LLVMValueRef q = LLVMBuildLoad2(m->b, bt, LLVMBuildGEP2(m->b, cg->t_i8, g->b, &byte, 1, ""), "");
        LLVMSetAlignment(q, 1);
        LLVMValueRef lo = LLVMBuildAShr(m->b, LLVMBuildShl(m->b, q, four, ""), four, "");
        LLVMValueRef hi = LLVMBuildAShr(m->b, q, four, "");
        LLVMValueRef a = LLVMBuildLoad2(m->b, m->vt, gacc[r], "");
        LLVMBuildStore(m->b, bm_cg_fma(m->f, xe, LLVMBuildSIToFP(m->b, lo, ft, ""), a), gacc[r]);
        LLVMValueRef a2 = LLVMBuildLoad2(m->b, m->vt, gacc2[r], "");
        LLVMBuildStore(m->b, bm_cg_fma(m->f, xo, LLVMBuildSIToFP(m->b, hi, ft, ""), a2), gacc2[r]);
      }
      continue;
    }
    LLVMValueRef x = sload(m, m->arow, k, V);
    for (int r = 0; r < R; r++) {
      LLVMValueRef w = b_row_nk(m, iadd(m, n, c64(m, r)), k, false);
      LLVMValueRef a = LLVMBuildLoad2(m->b, m->vt, gacc[r], "");
      LLVMBuildStore(m->b, bm_cg_fma(m->f, x, w, a), gacc[r]);
    }
  }
  if (!unroll) loop_end(m, &lk);
  lp lt; /* scalar tail of the group */
  loop_begin(m, &lt, vend, gend, c64(m, 1));
  LLVMValueRef xs = sload(m, m->arow, lt.iv, 1);
  for (int r = 0; r < R; r++) {
    LLVMValueRef w;
    LLVMValueRef nn = iadd(m, n, c64(m, r));
    if (quant)
      w = q_load(m, g->b, iadd(m, imul(m, nn, g->K), lt.iv), 1, false);
    else
      w = b_elem_nk(m, lt.iv, nn);
    LLVMValueRef a = LLVMBuildLoad2(m->b, cg->t_f32, gsacc[r], "");
    LLVMBuildStore(m->b, bm_cg_fma(m->f, xs, w, a), gsacc[r]);
  }
  loop_end(m, &lt);
  for (int r = 0; r < R; r++) {
    LLVMValueRef ga = LLVMBuildLoad2(m->b, m->vt, gacc[r], "");
    if (pairs) ga = LLVMBuildFAdd(m->b, ga, LLVMBuildLoad2(m->b, m->vt, gacc2[r], ""), "");
    LLVMValueRef gsa = LLVMBuildLoad2(m->b, cg->t_f32, gsacc[r], "");
    LLVMValueRef a = LLVMBuildLoad2(m->b, m->vt, acc[r], "");
    LLVMValueRef sa = LLVMBuildLoad2(m->b, cg->t_f32, sacc[r], "");
    if (quant) {
      LLVMValueRef nn = iadd(m, n, c64(m, r));
      LLVMValueRef sc = bm_cg_load(m->f, g->scale, BM_DTYPE_F32, iadd(m, imul(m, nn, ngroups), lg.iv), 1);
      a = bm_cg_fma(m->f, ga, splat(m, sc), a);
      sa = bm_cg_fma(m->f, gsa, sc, sa);
    } else {
      a = LLVMBuildFAdd(m->b, a, ga, "");
      sa = LLVMBuildFAdd(m->b, sa, gsa, "");
    }
    LLVMBuildStore(m->b, a, acc[r]);
    LLVMBuildStore(m->b, sa, sacc[r]);
  }
  loop_end(m, &lg);
  for (int r = 0; r < R; r++) {
    LLVMValueRef s = LLVMBuildFAdd(m->b, bm_cg_hsum(m->f, LLVMBuildLoad2(m->b, m->vt, acc[r], "")),
                                   LLVMBuildLoad2(m->b, cg->t_f32, sacc[r], ""), "");
    store_seg(m, s, row, iadd(m, n, c64(m, r)), 1, NULL, false, true);
  }
}

/* KN dense: C[row, n0 .. n1) with B read row by row (contiguous runs of the
 * task's columns, 4 rows per step) into the y accumulator in scratch. */
static void gemv_kn_rows(gm *m, LLVMValueRef row, LLVMValueRef n0, LLVMValueRef n1) {
  bm_cg_gemm *g = m->g;
  int V = m->vec;
  LLVMValueRef ncnt = isub(m, n1, n0);
  LLVMValueRef nvec = imul(m, iceil(m, ncnt, c64(m, V)), c64(m, V));
  LLVMValueRef nfull = imul(m, idiv(m, ncnt, c64(m, V)), c64(m, V));
  lp lz;
  loop_begin(m, &lz, c64(m, 0), nvec, c64(m, V));
  sstore(m, m->yacc, lz.iv, zero_vec(m));
  loop_end(m, &lz);
  for (int step = 4; step >= 1; step -= 3) { /* k by 4, then the rest one by one */
    LLVMValueRef kend = step == 4 ? LLVMBuildAnd(m->b, g->K, c64(m, ~(int64_t)3), "") : g->K;
    LLVMValueRef kstart = step == 4 ? c64(m, 0) : LLVMBuildAnd(m->b, g->K, c64(m, ~(int64_t)3), "");
    lp lk;
    loop_begin(m, &lk, kstart, kend, c64(m, step));
    LLVMValueRef a[4], src[4];
    for (int u = 0; u < step; u++) {
      LLVMValueRef k = iadd(m, lk.iv, c64(m, u));
      a[u] = splat(m, sload(m, m->arow, k, 1));
      src[u] = iadd(m, m->b_off, iadd(m, imul(m, k, g->ldb), n0));
    }
    for (int part = 0; part < 2; part++) {
      lp ln;
      if (part == 0)
        loop_begin(m, &ln, c64(m, 0), nfull, c64(m, V));
      else
        loop_begin(m, &ln, nfull, ncnt, c64(m, V));
      LLVMValueRef cnt = part ? isub(m, ncnt, ln.iv) : NULL;
      LLVMValueRef y = sload(m, m->yacc, ln.iv, V);
      for (int u = 0; u < step; u++)
        y = bm_cg_fma(m->f, a[u], load_dense(m, g->b, g->b_dt, iadd(m, src[u], ln.iv), V, cnt), y);
      sstore(m, m->yacc, ln.iv, y);
      loop_end(m, &ln);
    }
    loop_end(m, &lk);
  }
  lp ls;
  loop_begin(m, &ls, c64(m, 0), nfull, c64(m, V));
  store_seg(m, sload(m, m->yacc, ls.iv, V), row, iadd(m, n0, ls.iv), V, NULL, false, true);
  loop_end(m, &ls);
  lp lt;
  loop_begin(m, &lt, nfull, ncnt, c64(m, V));
  store_seg(m, sload(m, m->yacc, lt.iv, V), row, iadd(m, n0, lt.iv), V, isub(m, ncnt, lt.iv), false,
            true);
  loop_end(m, &lt);
}

static void gemv_block(gm *m, LLVMValueRef m0, LLVMValueRef m1, LLVMValueRef n0, LLVMValueRef n1) {
  bm_cg_gemm *g = m->g;
  int V = m->vec;
  lp lm;
  loop_begin(m, &lm, m0, m1, c64(m, 1));
  copy_a_row(m, lm.iv);
  if (g->b_kind == BM_CG_GEMM_B_KN) {
    gemv_kn_rows(m, lm.iv, n0, n1);
  } else if (g->b_kind == BM_CG_GEMM_B_LOADER) {
    int CW = V == 16 ? 8 : 4; /* vectors per chunk */
    LLVMValueRef ncnt = isub(m, n1, n0);
    LLVMValueRef nfull = iadd(m, n0, imul(m, idiv(m, ncnt, c64(m, CW * V)), c64(m, CW * V)));
    lp ln;
    loop_begin(m, &ln, n0, nfull, c64(m, CW * V));
    gemv_kn_chunk(m, lm.iv, ln.iv, CW, NULL);
    loop_end(m, &ln);
    lp lt;
    loop_begin(m, &lt, nfull, n1, c64(m, V));
    gemv_kn_chunk(m, lm.iv, lt.iv, 1, imin(m, c64(m, V), isub(m, n1, lt.iv)));
    loop_end(m, &lt);
  } else {
    if (i4_pairs(m)) permute_a_row(m);
    LLVMValueRef ncnt = isub(m, n1, n0);
    LLVMValueRef n4 = iadd(m, n0, imul(m, idiv(m, ncnt, c64(m, 4)), c64(m, 4)));
    lp ln;
    loop_begin(m, &ln, n0, n4, c64(m, 4));
    gemv_nk_rows(m, lm.iv, ln.iv, 4);
    loop_end(m, &ln);
    lp lt;
    loop_begin(m, &lt, n4, n1, c64(m, 1));
    gemv_nk_rows(m, lm.iv, lt.iv, 1);
    loop_end(m, &lt);
  }
  loop_end(m, &lm);
}

/* ------------------------------------------------------------------ multi-row quantized GEMV */

/* Can quantized B take qgemv? Every step of ks along K must lie inside one
 * scale group and K must be a multiple of it (i4: 2*vec, read as vec bytes
 * against even/odd-permuted rows of A; i8: vec). */
static bool qgemv_ok(const gm *m) {
  const bm_cg_gemm *g = m->g;
  if (g->b_kind != BM_CG_GEMM_B_Q || g->a_trans) return false;
  int64_t ks = g->b_dt == BM_DTYPE_I4 ? 2 * m->vec : m->vec;
  return g->k_max % ks == 0 && g->q_group % ks == 0;
}

/* C[row0 .. row0+MB, n .. n+R) from the MB rows of A in xrows (i4:
 * permuted) and R rows of q: each vector of q is converted and scaled once
 * and multiplies all MB rows. Per-channel scales (G = 1) are applied to the
 * sums; group scales to each converted vector. */
static void qgemv_rows(gm *m, LLVMValueRef row0, int MB, LLVMValueRef n, int R) {
  bm_cg_gemm *g = m->g;
  bm_cg *cg = m->cg;
  LLVMBuilderRef b = m->b;
  int V = m->vec;
  bool i4 = g->b_dt == BM_DTYPE_I4;
  int64_t G = g->k_max / g->q_group;
  /* two accumulators per (row, column) for i4 with few rows: more independent FMA chains */
  int S = i4 && MB <= 2 ? 2 : 1;
  LLVMValueRef acc[QGEMV_MB][4][2];
  for (int i = 0; i < MB; i++)
    for (int r = 0; r < R; r++)
      for (int t = 0; t < S; t++) {
        acc[i][r][t] = entry_alloca(m, m->vt);
        LLVMBuildStore(b, zero_vec(m), acc[i][r][t]);
      }
  LLVMTypeRef bt = LLVMVectorType(cg->t_i8, (unsigned)V), it = LLVMVectorType(cg->t_i32, (unsigned)V);
  LLVMValueRef qrow[4];
  for (int r = 0; r < R; r++) qrow[r] = imul(m, iadd(m, n, c64(m, r)), g->K); /* element index of row n+r */
  lp lk;
  loop_begin(m, &lk, c64(m, 0), g->K, c64(m, m->ks));
  LLVMValueRef k = lk.iv;
  LLVMValueRef w[4][2];
  for (int r = 0; r < R; r++) {
    LLVMValueRef e = iadd(m, qrow[r], k);
    LLVMValueRef sc = NULL;
    if (G > 1) {
      LLVMValueRef si = iadd(m, imul(m, iadd(m, n, c64(m, r)), c64(m, G)), idiv(m, k, c64(m, g->q_group)));
      sc = splat(m, bm_cg_load(m->f, g->scale, BM_DTYPE_F32, si, 1));
    }
    if (i4 && V == 16) {
      /* AVX-512: the 16 nibble values (times the group scale) as a table,
       * looked up with vpermps, which reads the low 4 bits of each lane */
      LLVMValueRef byte = LLVMBuildAShr(b, e, c64(m, 1), "");
      LLVMValueRef v = LLVMBuildLoad2(b, bt, LLVMBuildGEP2(b, cg->t_i8, g->b, &byte, 1, ""), "");
      LLVMSetAlignment(v, 1);
      LLVMValueRef x = LLVMBuildZExt(b, v, it, "");
      LLVMValueRef tv[16];
      for (int j = 0; j < 16; j++) tv[j] = LLVMConstReal(cg->t_f32, j < 8 ? j : j - 16);
      LLVMValueRef table = LLVMConstVector(tv, 16);
      if (sc) table = LLVMBuildFMul(b, table, sc, "");
      LLVMTypeRef pt[2] = {m->vt, it};
      LLVMTypeRef pft = LLVMFunctionType(m->vt, pt, 2, 0);
      LLVMValueRef pf = LLVMGetNamedFunction(cg->mod, "llvm.x86.avx512.permvar.sf.512");
      if (!pf) pf = LLVMAddFunction(cg->mod, "llvm.x86.avx512.permvar.sf.512", pft);
      LLVMValueRef a0[2] = {table, x};
      w[r][0] = LLVMBuildCall2(b, pft, pf, a0, 2, "");
      LLVMValueRef a1[2] = {table, LLVMBuildLShr(b, x, bm_cg_splat(m->f, LLVMConstInt(cg->t_i32, 4, 0), V), "")};
      w[r][1] = LLVMBuildCall2(b, pft, pf, a1, 2, "");
      continue;
    }
    if (i4) {
      LLVMValueRef byte = LLVMBuildAShr(b, e, c64(m, 1), "");
      LLVMValueRef v = LLVMBuildLoad2(b, bt, LLVMBuildGEP2(b, cg->t_i8, g->b, &byte, 1, ""), "");
      LLVMSetAlignment(v, 1);
      /* in i32 lanes (x86 has no byte shifts): hi = v >> 4, lo = (v << 28) >> 28, arithmetic */
      LLVMValueRef x = LLVMBuildSExt(b, v, it, "");
      LLVMValueRef c4 = bm_cg_splat(m->f, LLVMConstInt(cg->t_i32, 4, 0), V);
      LLVMValueRef c28 = bm_cg_splat(m->f, LLVMConstInt(cg->t_i32, 28, 0), V);
      w[r][0] = LLVMBuildSIToFP(b, LLVMBuildAShr(b, LLVMBuildShl(b, x, c28, ""), c28, ""), m->vt, "");
      w[r][1] = LLVMBuildSIToFP(b, LLVMBuildAShr(b, x, c4, ""), m->vt, "");
    } else {
      w[r][0] = q_load(m, g->b, e, V, true);
    }
    if (sc)
      for (int h = 0; h < (i4 ? 2 : 1); h++) w[r][h] = LLVMBuildFMul(b, w[r][h], sc, "");
  }
  for (int i = 0; i < MB; i++) {
    LLVMValueRef xb = iadd(m, c64(m, i * m->ap_row), k);
    LLVMValueRef x0 = sload(m, m->xrows, xb, V);
    LLVMValueRef x1 = i4 ? sload(m, m->xrows, iadd(m, xb, c64(m, V)), V) : NULL;
    for (int r = 0; r < R; r++) {
      LLVMValueRef a = LLVMBuildLoad2(b, m->vt, acc[i][r][0], "");
      a = bm_cg_fma(m->f, x0, w[r][0], a);
      if (i4 && S == 1) a = bm_cg_fma(m->f, x1, w[r][1], a);
      LLVMBuildStore(b, a, acc[i][r][0]);
      if (i4 && S == 2) {
        LLVMValueRef a2 = LLVMBuildLoad2(b, m->vt, acc[i][r][1], "");
        LLVMBuildStore(b, bm_cg_fma(m->f, x1, w[r][1], a2), acc[i][r][1]);
      }
    }
  }
  loop_end(m, &lk);
  for (int i = 0; i < MB; i++)
    for (int r = 0; r < R; r++) {
      LLVMValueRef a = LLVMBuildLoad2(b, m->vt, acc[i][r][0], "");
      if (S == 2) a = LLVMBuildFAdd(b, a, LLVMBuildLoad2(b, m->vt, acc[i][r][1], ""), "");
      LLVMValueRef sum = bm_cg_hsum(m->f, a);
      if (G == 1) sum = LLVMBuildFMul(b, sum, bm_cg_load(m->f, g->scale, BM_DTYPE_F32, iadd(m, n, c64(m, r)), 1), "");
      store_seg(m, sum, iadd(m, row0, c64(m, i)), iadd(m, n, c64(m, r)), 1, NULL, false, true);
    }
}

/* MB rows of A from row mb: copied to xrows (i4: permuted), then all of the
 * task's columns, 4 rows of q at a time. */
static void qgemv_pass(gm *m, LLVMValueRef mb, int MB, LLVMValueRef n0, LLVMValueRef n1) {
  bool i4 = m->g->b_dt == BM_DTYPE_I4;
  for (int i = 0; i < MB; i++) {
    LLVMValueRef dst = fptr(m, m->xrows, c64(m, i * m->ap_row));
    if (i4) {
      copy_a_row(m, iadd(m, mb, c64(m, i)));
      permute_row(m, m->arow, dst);
    } else {
      copy_a_row_to(m, iadd(m, mb, c64(m, i)), dst);
    }
  }
  LLVMValueRef ncnt = isub(m, n1, n0);
  LLVMValueRef n4 = iadd(m, n0, imul(m, idiv(m, ncnt, c64(m, 4)), c64(m, 4)));
  lp ln;
  loop_begin(m, &ln, n0, n4, c64(m, 4));
  qgemv_rows(m, mb, MB, ln.iv, 4);
  loop_end(m, &ln);
  lp lt;
  loop_begin(m, &lt, n4, n1, c64(m, 1));
  qgemv_rows(m, mb, MB, lt.iv, 1);
  loop_end(m, &lt);
}

/* Rows m0 .. m1 in passes of 4, then one pass of the 1 to 3 left. */
static void qgemv_block(gm *m, LLVMValueRef m0, LLVMValueRef m1, LLVMValueRef n0, LLVMValueRef n1) {
  LLVMValueRef cnt = isub(m, m1, m0);
  LLVMValueRef end4 = iadd(m, m0, imul(m, idiv(m, cnt, c64(m, QGEMV_MB)), c64(m, QGEMV_MB)));
  lp lm;
  loop_begin(m, &lm, m0, end4, c64(m, QGEMV_MB));
  qgemv_pass(m, lm.iv, QGEMV_MB, n0, n1);
  loop_end(m, &lm);
  LLVMValueRef rem = isub(m, m1, end4);
  for (int r = 1; r < QGEMV_MB; r++) {
    ifb c;
    if_begin(m, &c, LLVMBuildICmp(m->b, LLVMIntEQ, rem, c64(m, r), ""));
    qgemv_pass(m, end4, r, n0, n1);
    if_end(m, &c);
  }
}

/* ------------------------------------------------------------------ the kernel */

/* Picks the N and M block counts of a static GEMM. The runtime hands out
 * tasks dynamically in chunks of ntasks / (4 * threads), and consecutive
 * tasks of one chunk share their packed B; so the cost model is the load
 * imbalance of 2 threads plus the packing overhead (B repacked per run of
 * M blocks, A per N block, ~0.1 cycle per element against 1/32 cycle per
 * FMA). */
static void choose_split(gm *m, int64_t M, int64_t N, int64_t nbs) {
  double best = 1e30;
  for (int64_t nnb = 1; nnb <= 64; nnb++) {
    int64_t nt = round_up(ceil_div(N, nnb), m->nr);
    /* no empty N blocks; the B block (KC x NT) should stay in L2 */
    if (ceil_div(N, nt) != nnb || (nt > 1024 && nnb < 64)) continue;
    for (int64_t nmb = 1; nmb <= 64; nmb++) {
      int64_t mt = round_up(ceil_div(M, nmb), m->mr);
      if (ceil_div(M, mt) != nmb || (nmb > 1 && mt < 4 * m->mr)) continue;
      int64_t total = nnb * nmb * nbs;
      int64_t chunk = total / 8 > 0 ? total / 8 : 1;
      int64_t nchunks = ceil_div(total, chunk);
      int64_t busiest = ceil_div(nchunks, 2) * chunk;
      if (busiest > total) busiest = total;
      double imbalance = total > 1 ? (double)busiest / ((double)total / 2) - 1 : 1.0;
      int64_t mrun = chunk * mt < M ? chunk * mt : M;
      double pack = 3.2 / (double)mrun + 3.2 / (double)nt;
      double cost = imbalance + pack + (total < 4 ? 0.05 : 0); /* some slack for busy cores */
      if (cost < best - 1e-9) {
        best = cost;
        m->nnb = nnb;
        m->mt = mt;
      }
    }
  }
  m->nt_max = round_up(ceil_div(N, m->nnb), m->nr);
}

bm_status bm_cg_emit_gemm(bm_cg *cg, bm_node *n, const char *symbol, bm_cg_gemm *g) {
  gm mm = {0}, *m = &mm;
  m->cg = cg;
  m->g = g;
  m->b = cg->b;
  m->vec = cg->vec >= 16 ? 16 : cg->vec >= 8 ? 8 : 4;
  m->nv = 2;
  m->nr = m->nv * m->vec;
  m->mr = m->vec == 16 ? 12 : 6;
  m->vt = LLVMVectorType(cg->t_f32, (unsigned)m->vec);
  int64_t m_max = bm_cg_dim_max(cg, g->m);
  int64_t nb_max = bm_cg_dim_max(cg, g->nbatch);
  if (m_max < 1 || g->n_max < 1 || g->k_max < 1 || nb_max < 1)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s %%%d: empty matrix product (M %lld, N %lld, K %lld)",
                          bm_op_name(n->op), n->id, (long long)m_max, (long long)g->n_max,
                          (long long)g->k_max);
  if (g->b_kind == BM_CG_GEMM_B_Q && (g->q_group < 1 || g->k_max % g->q_group))
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s %%%d: group size %lld does not divide K %lld",
                          bm_op_name(n->op), n->id, (long long)g->q_group, (long long)g->k_max);
  m->qv = qgemv_ok(m);
  m->ks = g->b_dt == BM_DTYPE_I4 ? 2 * m->vec : m->vec;
  m->gemm = m_max > (m->qv ? QGEMV_MAX_ROWS : GEMV_MAX_ROWS);

  /* K blocking: f32 C accumulates across K blocks; other C dtypes take K in one block */
  int64_t KC = 256;
  if (g->k_max <= KC + KC / 2 || g->c_dt != BM_DTYPE_F32) KC = round_up(g->k_max, 4);
  m->kc = KC;
  m->multi_k = g->k_max > KC;
  m->kcs = round_up(KC, m->vec) + m->vec; /* padded: rows of a panel in different cache sets */
  m->mc = m->mr * 16;

  /* task space: N blocks of about 512 columns (GEMV: 16 blocks), M blocks, batches */
  m->part_b = g->nbatch_linear;
  m->part_m = g->m_linear;
  if (m->part_m && m->part_b && !bm_dim_is_static(g->m) && !bm_dim_is_static(g->nbatch))
    m->part_b = false; /* one symbolic factor per task expression */
  /* tiny problems (<= 128^3 multiply-adds at the bounds) are one task: the
   * runtime runs those inline instead of waking its workers */
  bool tiny = (double)m_max * (double)g->n_max * (double)g->k_max * (double)nb_max <= 2097152.0 &&
              g->n_max <= 4096;
  if (tiny) m->part_m = m->part_b = false;
  int64_t nt_target = tiny ? round_up(g->n_max, m->nr)
                           : m->gemm ? 512 : round_up(ceil_div(g->n_max, 16), 4 * m->vec);
  if (nt_target < 4 * m->vec) nt_target = 4 * m->vec;
  m->nnb = ceil_div(g->n_max, nt_target);
  m->nt_max = round_up(ceil_div(g->n_max, m->nnb), m->nr);
  int64_t nbs = m->part_b ? nb_max : 1;
  m->mt = m_max;
  if (m->part_m) {
    int64_t want = 16, have = nbs * m->nnb;
    int64_t nmb = have >= want ? 1 : ceil_div(want, have);
    m->mt = round_up(ceil_div(m_max, nmb), m->mr);
    if (m->mt < 2 * m->mr) m->mt = 2 * m->mr;
  }
  if (m->gemm && m->part_m && bm_dim_is_static(g->m) && (!m->part_b || bm_dim_is_static(g->nbatch)))
    choose_split(m, m_max, g->n_max, nbs);
  if (m->part_m && !bm_dim_is_static(g->m))
    n->tasks = bm_cg_tasks(g->m, m->mt, m->nnb * (m->part_b ? g->nbatch.add : 1));
  else if (m->part_b && !bm_dim_is_static(g->nbatch))
    n->tasks = bm_cg_tasks(g->nbatch, 1, m->nnb * (m->part_m ? ceil_div(g->m.add, m->mt) : 1));
  else
    n->tasks = bm_cg_tasks(bm_dim_c((m->part_m ? ceil_div(g->m.add, m->mt) : 1) *
                                    (m->part_b ? g->nbatch.add : 1) * m->nnb),
                           1, 1);

  /* scratch: packed B block, packed A block, tile buffer, GEMV row of A */
  int64_t bp_f = m->gemm ? round_up(KC, 4) * m->nt_max : 0;
  int64_t ap_f = m->gemm ? round_up(m->mc, m->mr) * m->kcs : 0;
  int64_t tile_f = m->mr * m->nr;
  int64_t arow_f = round_up(g->k_max, m->vec) + m->vec;
  int64_t yacc_f = m->nt_max + m->vec;
  int64_t off_bp = 0, off_ap = round_up(bp_f, 16), off_tile = off_ap + round_up(ap_f, 16),
          off_arow = off_tile + round_up(tile_f, 16);
  int64_t off_yacc = off_arow + round_up(arow_f, 16);
  int64_t off_xperm = off_yacc + round_up(yacc_f, 16);
  int64_t xperm_f = i4_pairs(m) ? arow_f : 0;
  m->ap_row = round_up(arow_f, 16);
  int64_t xrows_f = m->qv ? QGEMV_MB * m->ap_row : 0;
  int64_t off_xrows = off_xperm + round_up(xperm_f, 16);
  n->scratch = (uint64_t)(off_xrows + xrows_f) * 4;

  bm_cg_fn f;
  bm_cg_fn_begin(cg, n, symbol, &f);
  m->f = &f;
  g->setup(&f, g);
  m->bp = fptr(m, f.scratch, c64(m, off_bp));
  m->ap = fptr(m, f.scratch, c64(m, off_ap));
  m->tile = fptr(m, f.scratch, c64(m, off_tile));
  m->arow = fptr(m, f.scratch, c64(m, off_arow));
  m->yacc = fptr(m, f.scratch, c64(m, off_yacc));
  m->xperm = fptr(m, f.scratch, c64(m, off_xperm));
  m->xrows = fptr(m, f.scratch, c64(m, off_xrows));

  LLVMValueRef nmb_rt = m->part_m ? iceil(m, g->M, c64(m, m->mt)) : c64(m, 1);
  LLVMValueRef nt_rt = imul(m, iceil(m, iceil(m, g->N, c64(m, m->nnb)), c64(m, m->nr)), c64(m, m->nr));

  /* task loop: consecutive tasks with the same (batch, N block) form one M range */
  lp lt;
  loop_begin(m, &lt, f.begin, f.end, NULL);
  LLVMValueRef t = lt.iv;
  LLVMValueRef mb = irem(m, t, nmb_rt), r = idiv(m, t, nmb_rt);
  LLVMValueRef nbk = irem(m, r, c64(m, m->nnb)), bt = idiv(m, r, c64(m, m->nnb));
  LLVMValueRef run = imin(m, isub(m, f.end, t), isub(m, nmb_rt, mb));
  lt.step = run;
  LLVMValueRef m0 = m->part_m ? imul(m, mb, c64(m, m->mt)) : c64(m, 0);
  LLVMValueRef m1 = m->part_m ? imin(m, g->M, imul(m, iadd(m, mb, run), c64(m, m->mt))) : g->M;
  LLVMValueRef n0 = imul(m, nbk, nt_rt);
  LLVMValueRef n1 = imin(m, g->N, iadd(m, n0, nt_rt));
  ifb nonempty;
  if_begin(m, &nonempty, land(m, ilt(m, m0, m1), ilt(m, n0, n1)));
  lp lb;
  if (m->part_b)
    loop_begin(m, &lb, bt, iadd(m, bt, c64(m, 1)), c64(m, 1));
  else
    loop_begin(m, &lb, c64(m, 0), g->nb, c64(m, 1));
  m->bi = lb.iv;
  m->bias_off = NULL;
  g->batch(&f, g, lb.iv, &m->a_off, &m->b_off, &m->c_off, &m->bias_off);
  if (!m->bias_off) m->bias_off = c64(m, 0);
  if (m->gemm) {
    ifb small;
    if_begin2(m, &small, LLVMBuildICmp(m->b, LLVMIntSLE, isub(m, m1, m0),
                                       c64(m, m->qv ? QGEMV_MAX_ROWS : GEMV_MAX_ROWS), ""));
    if (m->qv)
      qgemv_block(m, m0, m1, n0, n1);
    else
      gemv_block(m, m0, m1, n0, n1);
    if_else(m, &small);
    gemm_block(m, m0, m1, n0, n1);
    if_end(m, &small);
  } else if (m->qv) {
    qgemv_block(m, m0, m1, n0, n1);
  } else {
    gemv_block(m, m0, m1, n0, n1);
  }
  loop_end(m, &lb);
  if_end(m, &nonempty);
  loop_end(m, &lt);
  bm_cg_fn_end(&f);
  return NULL;
}

/* ------------------------------------------------------------------ matmul / qmatmul */

/* Product of dims as one linear dim, if at most one of them is symbolic. */
static bool dim_product(const bm_dim *d, int n, bm_dim *out) {
  int64_t stat = 1;
  int sym = -1;
  for (int i = 0; i < n; i++) {
    if (bm_dim_is_static(d[i])) {
      stat *= d[i].add;
    } else {
      if (sym >= 0) return false;
      sym = i;
    }
  }
  if (sym < 0) {
    *out = bm_dim_c(stat);
    return true;
  }
  int64_t mul = (int64_t)d[sym].mul * stat;
  if (mul > INT32_MAX) return false;
  *out = (bm_dim){d[sym].add * stat, d[sym].sym, (int32_t)mul};
  return true;
}

typedef struct mm_ctx {
  bm_node *n, *a, *b;
  int nob;          /* output batch dims */
  bool fold;        /* batches folded into M (b shared, a dense) */
  bool quant;
} mm_ctx;

static LLVMValueRef dims_product_rt(bm_cg_fn *f, const bm_dim *d, int n) {
  LLVMValueRef p = bm_cg_i64(f->cg, 1);
  for (int i = 0; i < n; i++) p = LLVMBuildMul(f->cg->b, p, bm_cg_dim(f, d[i]), "");
  return p;
}

static void mm_setup(bm_cg_fn *f, bm_cg_gemm *g) {
  mm_ctx *c = g->ctx;
  bm_node *n = c->n, *a = c->a, *b = c->b;
  LLVMBuilderRef B = f->cg->b;
  g->a = bm_cg_buf(f, 0);
  g->b = bm_cg_buf(f, 1);
  g->c = bm_cg_buf(f, n->nin);
  g->bias = NULL;
  if (c->quant) {
    g->scale = bm_cg_buf(f, 2);
    g->M = dims_product_rt(f, a->shape, a->ndim - 1);
    g->N = bm_cg_dim(f, b->shape[0]);
    g->K = bm_cg_i64(f->cg, g->k_max);
    g->nb = bm_cg_i64(f->cg, 1);
    g->lda = g->K;
    g->ldb = g->K;
    g->ldc = g->N;
    return;
  }
  LLVMValueRef Mv = bm_cg_dim(f, n->shape[c->nob]);
  g->N = bm_cg_dim(f, n->shape[c->nob + 1]);
  g->K = bm_cg_dim(f, a->shape[a->ndim - (n->a.trans_a ? 2 : 1)]);
  LLVMValueRef nbv = dims_product_rt(f, n->shape, c->nob);
  g->M = c->fold ? LLVMBuildMul(B, nbv, Mv, "") : Mv;
  g->nb = c->fold ? bm_cg_i64(f->cg, 1) : nbv;
  g->lda = n->a.trans_a ? Mv : g->K;
  g->ldb = n->a.trans_b ? g->K : g->N;
  g->ldc = g->N;
}

/* offset of a batch element of operand x (rank xr, matrix dims last) */
static LLVMValueRef batch_offset(bm_cg_fn *f, const bm_node *x, int nob, LLVMValueRef *bc) {
  LLVMBuilderRef B = f->cg->b;
  LLVMValueRef off = bm_cg_i64(f->cg, 0), stride = dims_product_rt(f, x->shape + x->ndim - 2, 2);
  int xb = x->ndim - 2;
  for (int d = xb - 1; d >= 0; d--) {
    int od = d + (nob - xb);
    if (!bm_dim_is_one(x->shape[d])) off = LLVMBuildAdd(B, off, LLVMBuildMul(B, bc[od], stride, ""), "");
    stride = LLVMBuildMul(B, stride, bm_cg_dim(f, x->shape[d]), "");
  }
  return off;
}

static void unravel(bm_cg_fn *f, LLVMValueRef idx, const bm_dim *dims, int n, LLVMValueRef *out) {
  LLVMBuilderRef B = f->cg->b;
  for (int d = n - 1; d >= 0; d--) {
    if (d == 0) {
      out[d] = idx;
      break;
    }
    LLVMValueRef dv = bm_cg_dim(f, dims[d]);
    out[d] = LLVMBuildSRem(B, idx, dv, "");
    idx = LLVMBuildSDiv(B, idx, dv, "");
  }
}

static void mm_batch(bm_cg_fn *f, bm_cg_gemm *g, LLVMValueRef bi, LLVMValueRef *a_off,
                     LLVMValueRef *b_off, LLVMValueRef *c_off, LLVMValueRef *bias_off) {
  mm_ctx *c = g->ctx;
  LLVMBuilderRef B = f->cg->b;
  if (c->quant || c->fold) {
    *a_off = *b_off = *c_off = bm_cg_i64(f->cg, 0);
    return;
  }
  LLVMValueRef bc[BM_MAX_DIMS];
  unravel(f, bi, c->n->shape, c->nob, bc);
  *a_off = batch_offset(f, c->a, c->nob, bc);
  *b_off = batch_offset(f, c->b, c->nob, bc);
  *c_off = LLVMBuildMul(B, bi, LLVMBuildMul(B, g->M, g->N, ""), "");
}

static void mm_coords(bm_cg_fn *f, bm_cg_gemm *g, LLVMValueRef bi, LLVMValueRef row,
                      LLVMValueRef col, LLVMValueRef *coords) {
  mm_ctx *c = g->ctx;
  int nd = c->n->ndim;
  if (c->quant || c->fold) {
    unravel(f, row, c->n->shape, nd - 1, coords);
  } else {
    unravel(f, bi, c->n->shape, c->nob, coords);
    coords[nd - 2] = row;
  }
  coords[nd - 1] = col;
}

bm_status bm_cg_emit_matmul(bm_cg *cg, bm_node *n, const char *symbol) {
  mm_ctx c = {.n = n, .a = n->in[0], .b = n->in[1], .quant = n->op == BM_OP_QMATMUL};
  bm_cg_gemm g = {0};
  g.ctx = &c;
  g.setup = mm_setup;
  g.batch = mm_batch;
  g.coords = mm_coords;
  g.vec_epilogue = true;
  g.c_dt = n->dtype;
  g.a_dt = c.a->dtype;
  g.b_dt = c.b->dtype;
  if (n->op == BM_OP_QMATMUL) {
    bm_node *q = c.b, *scale = n->in[2];
    if (!bm_dim_is_static(q->shape[1]) || !bm_dim_is_static(scale->shape[1]) ||
        scale->shape[1].add < 1 || q->shape[1].add % scale->shape[1].add)
      return bm_status_make(BM_ERR_UNSUPPORTED, "qmatmul %%%d: K and G must be static with K %% G == 0",
                            n->id);
    g.b_kind = BM_CG_GEMM_B_Q;
    g.k_max = q->shape[1].add;
    g.q_group = g.k_max / scale->shape[1].add;
    g.n_max = bm_cg_dim_max(cg, q->shape[0]);
    g.m_linear = dim_product(c.a->shape, c.a->ndim - 1, &g.m);
    if (!g.m_linear) {
      int64_t mx = 1;
      for (int i = 0; i < c.a->ndim - 1; i++) mx *= bm_cg_dim_max(cg, c.a->shape[i]);
      g.m = bm_dim_c(mx);
    }
    g.nbatch = bm_dim_c(1);
    g.nbatch_linear = true;
    return bm_cg_emit_gemm(cg, n, symbol, &g);
  }
  if (n->op != BM_OP_MATMUL)
    return bm_status_make(BM_ERR_INTERNAL, "matmul emitter got %s", bm_op_name(n->op));
  c.nob = n->ndim - 2;
  bool ta = n->a.trans_a, tb = n->a.trans_b;
  g.a_trans = ta;
  g.b_kind = tb ? BM_CG_GEMM_B_NK : BM_CG_GEMM_B_KN;
  g.n_max = bm_cg_dim_max(cg, n->shape[c.nob + 1]);
  g.k_max = bm_cg_dim_max(cg, c.a->shape[c.a->ndim - (ta ? 2 : 1)]);
  /* fold the batches into M when b is shared and a is dense over them */
  bool b_shared = true;
  for (int i = 0; i < c.b->ndim - 2; i++) b_shared &= bm_dim_is_one(c.b->shape[i]);
  bool a_full = c.a->ndim == n->ndim;
  for (int i = 0; a_full && i < c.nob; i++) a_full = bm_dim_eq(c.a->shape[i], n->shape[i]);
  bm_dim mb;
  c.fold = c.nob > 0 && !ta && b_shared && a_full && dim_product(n->shape, c.nob + 1, &mb);
  if (c.fold) {
    g.m = mb;
    g.m_linear = true;
    g.nbatch = bm_dim_c(1);
    g.nbatch_linear = true;
  } else {
    g.m = n->shape[c.nob];
    g.m_linear = true;
    g.nbatch_linear = dim_product(n->shape, c.nob, &g.nbatch);
    if (!g.nbatch_linear) {
      int64_t mx = 1;
      for (int i = 0; i < c.nob; i++) mx *= bm_cg_dim_max(cg, n->shape[i]);
      g.nbatch = bm_dim_c(mx);
    }
  }
  return bm_cg_emit_gemm(cg, n, symbol, &g);
}
