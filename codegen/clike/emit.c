/* emit.c - the C-like kernel emitter (clike.h): one kernel per node, one
 * function per op family, writing source in the dialect the language table
 * defines. Kernels are correct first: each block runs a grid-stride loop
 * over its tasks with index arithmetic in int (or bm_i64 for tensors of 2^30
 * elements or more); shapes are literals or expressions of the symbols. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "emit_internal.h"

/* ------------------------------------------------------------------ strings */

void bm_sb_printf(bm_sb *b, const char *fmt, ...) {
  if (b->oom) return;
  va_list ap;
  va_start(ap, fmt);
  va_list ap2;
  va_copy(ap2, ap);
  int need = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (need < 0) {
    b->oom = 1;
    va_end(ap2);
    return;
  }
  if (b->len + (size_t)need + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + (size_t)need + 1) cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s) {
      b->oom = 1;
      va_end(ap2);
      return;
    }
    b->s = s;
    b->cap = cap;
  }
  vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap2);
  va_end(ap2);
  b->len += (size_t)need;
}

void bm_sb_puts(bm_sb *b, const char *s) { bm_sb_printf(b, "%s", s); }

void bm_sb_free(bm_sb *b) {
  free(b->s);
  memset(b, 0, sizeof *b);
}

void bm_clike_out_free(bm_clike_out *o) {
  if (!o) return;
  bm_sb_free(&o->src);
  for (int i = 0; i < o->nkernels; i++) free(o->kernels[i].symbol);
  free(o->kernels);
  memset(o, 0, sizeof *o);
}

str ck_strf(const char *fmt, ...) {
  str r;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r.s, sizeof r.s, fmt, ap);
  va_end(ap);
  return r;
}

int64_t ck_dim_max(const bm_graph *g, bm_dim d) {
  if (bm_dim_is_static(d)) return d.add;
  return (int64_t)d.mul * g->syms[d.sym].max + d.add;
}

/* The value of a dim in the kernel's index type. */
str ck_dimx(const ck *k, bm_dim d) {
  if (bm_dim_is_static(d)) return ck_strf("%lld", (long long)d.add);
  if (d.mul == 1 && d.add == 0) return ck_strf("((%s)S%d)", k->I, d.sym);
  return ck_strf("((%s)(%d * S%d + %lld))", k->I, d.mul, d.sym, (long long)d.add);
}

/* Product of dims [lo, hi) ("1" if empty). */
str ck_prodx(const ck *k, const bm_dim *dims, int lo, int hi) {
  str r = ck_strf("1");
  int64_t c = 1;
  bool first = true;
  for (int d = lo; d < hi; d++) {
    if (bm_dim_is_static(dims[d])) {
      c *= dims[d].add;
      continue;
    }
    str x = ck_dimx(k, dims[d]);
    r = first ? ck_strf("%s", x.s) : ck_strf("%s * %s", r.s, x.s);
    first = false;
  }
  if (first) return ck_strf("%lld", (long long)c);
  if (c != 1) r = ck_strf("%s * %lld", r.s, (long long)c);
  return ck_strf("(%s)", r.s);
}

bool ck_same_dims(const bm_node *a, const bm_node *b) {
  if (a->ndim != b->ndim) return false;
  for (int d = 0; d < a->ndim; d++)
    if (!bm_dim_eq(a->shape[d], b->shape[d])) return false;
  return true;
}

bool ck_is_single(const bm_node *a) {
  for (int d = 0; d < a->ndim; d++)
    if (!bm_dim_is_one(a->shape[d])) return false;
  return true;
}

/* Offset into input `in` broadcast (right-aligned) to a shape of rank r,
 * given coordinate variables <c>0..<c>{r-1}. */
str ck_bcast_off(const ck *k, const bm_node *in, int r, const char *c) {
  str acc = ck_strf("0");
  bool any = false;
  for (int td = in->ndim - 1, d = r - 1; td >= 0; td--, d--) {
    if (bm_dim_is_one(in->shape[td])) continue;
    str st = ck_prodx(k, in->shape, td + 1, in->ndim);
    str term = strcmp(st.s, "1") == 0 ? ck_strf("%s%d", c, d) : ck_strf("%s%d * %s", c, d, st.s);
    acc = any ? ck_strf("%s + %s", acc.s, term.s) : term;
    any = true;
  }
  return any ? ck_strf("(%s)", acc.s) : acc;
}

/* Declares <c>0..<c>{r-1} and unravels linear index `idx` over dims. */
void ck_unravel(ck *k, const char *idx, int r, const bm_dim *dims, const char *c) {
  if (r == 0) return;
  P("      %s %s_r = %s;\n", k->I, c, idx);
  for (int d = r - 1; d >= 0; d--) {
    str dd = ck_dimx(k, dims[d]);
    if (d > 0) {
      P("      const %s %s%d = %s_r %% %s;\n", k->I, c, d, c, dd.s);
      P("      %s_r /= %s;\n", c, dd.s);
    } else {
      P("      const %s %s%d = %s_r;\n", k->I, c, d, c);
    }
  }
}

str ck_ld(const ck *k, int buf, bm_dtype t, str off) {
  (void)k;
  return ck_strf("bm_ld_%s(bm_buf(%d), %s)", bm_dtype_name(t), buf, off.s);
}

str ck_ldi(const ck *k, int buf, bm_dtype t, str off) {
  (void)k;
  return ck_strf("bm_ldi_%s(bm_buf(%d), %s)", bm_dtype_name(t), buf, off.s);
}

str ck_flt(float v) {
  if (isnan(v)) return ck_strf("BM_NAN");
  if (isinf(v)) return ck_strf(v > 0 ? "BM_INF" : "(-BM_INF)");
  return ck_strf("%.8ef", (double)v);
}

bool ck_is_int_dtype(bm_dtype t) {
  return t == BM_DTYPE_I8 || t == BM_DTYPE_I4 || t == BM_DTYPE_I32 || t == BM_DTYPE_I64;
}

/* The f32 expression of unary op `op` on x / binary op on a, b. */
str ck_unary_expr(bm_op op, const char *x) {
  switch (op) {
    case BM_OP_NEG: return ck_strf("(-%s)", x);
    case BM_OP_ABS: return ck_strf("fabsf(%s)", x);
    case BM_OP_EXP: return ck_strf("expf(%s)", x);
    case BM_OP_LOG: return ck_strf("logf(%s)", x);
    case BM_OP_SQRT: return ck_strf("sqrtf(%s)", x);
    case BM_OP_RSQRT: return ck_strf("(1.0f / sqrtf(%s))", x);
    case BM_OP_RECIP: return ck_strf("(1.0f / %s)", x);
    case BM_OP_SQUARE: return ck_strf("(%s * %s)", x, x);
    case BM_OP_SIN: return ck_strf("sinf(%s)", x);
    case BM_OP_COS: return ck_strf("cosf(%s)", x);
    case BM_OP_TANH: return ck_strf("tanhf(%s)", x);
    case BM_OP_ERF: return ck_strf("erff(%s)", x);
    case BM_OP_SIGMOID: return ck_strf("bm_sigmoid(%s)", x);
    case BM_OP_RELU: return ck_strf("bm_relu(%s)", x);
    case BM_OP_SILU: return ck_strf("(%s * bm_sigmoid(%s))", x, x);
    case BM_OP_GELU: return ck_strf("bm_gelu(%s)", x);
    case BM_OP_GELU_TANH: return ck_strf("bm_gelu_tanh(%s)", x);
    case BM_OP_QUICK_GELU: return ck_strf("(%s * bm_sigmoid(1.702f * %s))", x, x);
    case BM_OP_CAST: return ck_strf("%s", x);
    default: return ck_strf("BM_NAN");
  }
}

str ck_binary_expr(bm_op op, const char *a, const char *b) {
  switch (op) {
    case BM_OP_ADD: return ck_strf("(%s + %s)", a, b);
    case BM_OP_SUB: return ck_strf("(%s - %s)", a, b);
    case BM_OP_MUL: return ck_strf("(%s * %s)", a, b);
    case BM_OP_DIV: return ck_strf("(%s / %s)", a, b);
    case BM_OP_POW: return ck_strf("powf(%s, %s)", a, b);
    case BM_OP_MAX: return ck_strf("fmaxf(%s, %s)", a, b);
    case BM_OP_MIN: return ck_strf("fminf(%s, %s)", a, b);
    default: return ck_strf("BM_NAN");
  }
}

/* Emits a program over registers <r>0..<r>{nin-1} (declared by the caller);
 * returns the name of the result register. */
str ck_emit_prog(ck *k, const bm_prog *p, const char *r, const char *indent) {
  for (int j = 0; j < p->n; j++) {
    const bm_prog_ins *in = &p->ins[j];
    str a = ck_strf("%s%d", r, in->a), e;
    if (bm_op_table[in->op].flags & BM_OPF_UNARY) {
      e = ck_unary_expr((bm_op)in->op, a.s);
    } else {
      str b = (in->flags & BM_PROG_IMM_B) ? ck_flt(in->imm) : ck_strf("%s%d", r, in->b);
      e = ck_binary_expr((bm_op)in->op, a.s, b.s);
    }
    P("%sconst float %s%d = %s;\n", indent, r, p->nin + j, e.s);
  }
  return ck_strf("%s%d", r, p->n ? p->nin + p->n - 1 : 0);
}

/* Applies the node's epilogue (if any) to the f32 variable v, for output
 * element `idx` (linear). */
void ck_emit_epilogue(ck *k, const char *v, const char *idx) { ck_emit_epilogue_pre(k, v, idx, NULL); }

void ck_emit_epilogue_pre(ck *k, const char *v, const char *idx, const char *const *pre) {
  const bm_node *n = k->n;
  const bm_prog *p = &n->a.prog;
  if (!(bm_op_table[n->op].flags & BM_OPF_EPILOGUE) || p->n == 0) return;
  int base = bm_node_base_nin(n), nx = p->nin - 1;
  P("      {\n");
  bool coords = false;
  for (int x = 0; x < nx; x++)
    if (!ck_same_dims(n->in[base + x], n) && !ck_is_single(n->in[base + x])) coords = true;
  if (coords) ck_unravel(k, idx, n->ndim, n->shape, "ec");
  P("      const float er0 = %s;\n", v);
  for (int x = 0; x < nx; x++) {
    const bm_node *in = n->in[base + x];
    str off = ck_same_dims(in, n) ? ck_strf("%s", idx) : ck_is_single(in) ? ck_strf("0") : ck_bcast_off(k, in, n->ndim, "ec");
    str l = pre && pre[x] ? ck_strf("%s", pre[x]) : ck_ld(k, base + x, in->dtype, off);
    P("      const float er%d = %s;\n", 1 + x, l.s);
  }
  str res = ck_emit_prog(k, p, "er", "      ");
  P("      %s = %s;\n", v, res.s);
  P("      }\n");
}

void ck_store(ck *k, const char *idx, const char *v) {
  P("      bm_st_%s(bm_out(%d), %s, %s);\n", bm_dtype_name(k->n->dtype), k->n->nin, idx, v);
}

/* ------------------------------------------------------------------ task spaces */

/* tasks = prod_i ceil(dims[i] / divs[i]) as a bm_task_expr: exact when at
 * most one dim is symbolic, else an upper bound (kernels loop over their own
 * exact count, so extra blocks do nothing). */
bm_task_expr ck_task_grid(const bm_graph *g, int n, const bm_dim *dims, const int64_t *divs) {
  int sym_i = -1;
  for (int i = 0; i < n; i++)
    if (!bm_dim_is_static(dims[i])) {
      sym_i = i;
      break;
    }
  int64_t factor = 1;
  for (int i = 0; i < n; i++) {
    if (i == sym_i) continue;
    int64_t v = ck_dim_max(g, dims[i]);
    factor *= v <= 0 ? 0 : (v + divs[i] - 1) / divs[i];
  }
  if (factor == 0) return (bm_task_expr){-1, 0, 0, 1, 1};
  if (sym_i < 0) return (bm_task_expr){-1, 0, factor, 1, 1};
  return (bm_task_expr){dims[sym_i].sym, dims[sym_i].mul, dims[sym_i].add, divs[sym_i], factor};
}

/* tasks = ceil(prod(dims) / div). */
bm_task_expr ck_task_linear(const bm_graph *g, int n, const bm_dim *dims, int64_t div) {
  int sym_i = -1;
  for (int i = 0; i < n; i++)
    if (!bm_dim_is_static(dims[i])) {
      sym_i = i;
      break;
    }
  int64_t c = 1;
  for (int i = 0; i < n; i++)
    if (i != sym_i) c *= ck_dim_max(g, dims[i]);
  if (c <= 0) return (bm_task_expr){-1, 0, 0, 1, 1};
  if (sym_i < 0) return (bm_task_expr){-1, 0, (c + div - 1) / div, 1, 1};
  return (bm_task_expr){dims[sym_i].sym, dims[sym_i].mul * c, dims[sym_i].add * c, div, 1};
}

/* for (t over [0, count)) { ... } : the grid-stride loop over tasks */
void ck_loop_open(ck *k, const char *count) {
  P("  const %s ntask = %s;\n", k->I, count);
  P("  for (%s t = (%s)bid0; t < ntask; t += (%s)nblk) {\n", k->I, k->I, k->I);
}
void ck_loop_close(ck *k) { P("  }\n"); }

/* ------------------------------------------------------------------ elementwise */

static bm_status emit_ew(ck *k) {
  const bm_node *n = k->n;
  const int T = k->threads = 256;
  k->tasks = ck_task_linear(k->g, n->ndim, n->shape, T);
  str total = ck_prodx(k, n->shape, 0, n->ndim);
  P("  const %s total = %s;\n", k->I, total.s);
  ck_loop_open(k, ck_strf("(total + %d) / %d", T - 1, T).s);
  P("    const %s i = t * %d + tid;\n", k->I, T);
  P("    if (i < total) {\n");
  bool coords = false;
  for (int x = 0; x < n->nin; x++)
    if (!ck_same_dims(n->in[x], n) && !ck_is_single(n->in[x])) coords = true;
  if (coords) ck_unravel(k, "i", n->ndim, n->shape, "c");
  if (n->op == BM_OP_CAST && ck_is_int_dtype(n->dtype) && ck_is_int_dtype(n->in[0]->dtype)) {
    str l = ck_ldi(k, 0, n->in[0]->dtype, ck_strf("i"));
    P("      bm_sti_%s(bm_out(1), i, %s);\n", bm_dtype_name(n->dtype), l.s);
  } else {
    for (int x = 0; x < n->nin; x++) {
      const bm_node *in = n->in[x];
      str off = ck_same_dims(in, n) ? ck_strf("i") : ck_is_single(in) ? ck_strf("0") : ck_bcast_off(k, in, n->ndim, "c");
      str l = ck_ld(k, x, in->dtype, off);
      P("      const float r%d = %s;\n", x, l.s);
    }
    str res;
    if (n->op == BM_OP_FUSED)
      res = ck_emit_prog(k, &n->a.prog, "r", "      ");
    else if (bm_op_table[n->op].flags & BM_OPF_UNARY)
      res = ck_unary_expr(n->op, "r0");
    else
      res = ck_binary_expr(n->op, "r0", "r1");
    P("      float v = %s;\n", res.s);
    ck_store(k, "i", "v");
  }
  P("    }\n");
  ck_loop_close(k);
  return NULL;
}

/* ------------------------------------------------------------------ data movement */

/* out[i] = element `off` of input buffer `buf` (copy_elem semantics). */
void ck_copy_elem(ck *k, int buf, bm_dtype src, str off, const char *indent) {
  const bm_node *n = k->n;
  bm_dtype dst = n->dtype;
  int o = n->nin;
  if (src == dst) {
    size_t es = bm_dtype_nbytes(dst, 1);
    const char *ty = es == 1 ? "unsigned char" : es == 2 ? "unsigned short" : es == 4 ? "unsigned int" : "bm_i64";
    P("%s((BM_GLOBAL %s *)bm_out(%d))[i] = ((const BM_GLOBAL %s *)bm_buf(%d))[%s];\n", indent, ty, o, ty, buf,
      off.s);
  } else if (ck_is_int_dtype(src) && ck_is_int_dtype(dst)) {
    P("%sbm_sti_%s(bm_out(%d), i, bm_ldi_%s(bm_buf(%d), %s));\n", indent, bm_dtype_name(dst), o,
      bm_dtype_name(src), buf, off.s);
  } else {
    P("%sbm_st_%s(bm_out(%d), i, bm_ld_%s(bm_buf(%d), %s));\n", indent, bm_dtype_name(dst), o,
      bm_dtype_name(src), buf, off.s);
  }
}

/* Row-major stride of axis d of node x. */
static str stride_of(const ck *k, const bm_node *x, int d) { return ck_prodx(k, x->shape, d + 1, x->ndim); }

/* DEQUANT to f16/bf16 (fuse_dequant's form for the GEMM with many rows): the
 * kernel's configuration, read by bmc from BM_CUDA_DEQ: "old" (the 16-byte-chunk
 * kernel below), else "u<N>" (units per thread, 1-16) and/or "cs" (streaming
 * stores); unset: 2 units per thread, normal stores (the fastest on an H100 of
 * 1-16 units, cs no faster: docs/cuda.md). */
typedef struct dq_cfg {
  bool old;  /* the 16-byte-chunk kernel */
  int units; /* 8-output units per thread; 0: the default, 2 */
  bool cs;   /* st.global.cs (evict-first) stores of the output */
} dq_cfg;

static dq_cfg dequant_cfg(void) {
  dq_cfg c = {false, 0, false};
  const char *e = getenv("BM_CUDA_DEQ");
  if (!e) return c;
  if (strcmp(e, "old") == 0) c.old = true;
  const char *u = strchr(e, 'u');
  if (u && u[1] >= '1' && u[1] <= '9') {
    c.units = atoi(u + 1);
    if (c.units > 16) c.units = 16;
  }
  c.cs = strstr(e, "cs") != NULL;
  return c;
}

/* DEQUANT to f16/bf16 in 8-output units: unit c is elements 8c..8c+7 of the
 * row-major (N, K) weight, its q one 32-bit word (i4) or two (i8), its output one
 * 16-byte store; a thread takes units u0 + 256 u (u < U), so a warp's loads and
 * stores cover contiguous bytes (i4: 128 bytes of q, 512 of output per
 * instruction), with all U loads issued before the first store. Each output is
 * the f32 product q * scale rounded to nearest even (bit-identical to the
 * reference); q becomes f32 exactly by the 2^23 trick (sign biased by an xor,
 * the value put under the exponent of 2^23, 2^23 + bias subtracted). One scale
 * load per unit (a unit never straddles a group). Needs K static and a multiple
 * of 8, groups of a multiple of 8. q streams past L1 where it is a package
 * constant (else volatile loads: the PDL rule). */
/* Both DEQUANT kernels: i8/i4 to f16/bf16 on a tensor-core target, K and the
 * groups static, K a multiple of `unit` elements, groups of a multiple of 8. */
static bool dequant_ok(const ck *k, int64_t unit) {
  const bm_node *n = k->n, *q = n->in[0], *sc = n->in[1];
  if (!k->L->tensor_cores || (n->dtype != BM_DTYPE_F16 && n->dtype != BM_DTYPE_BF16) ||
      (q->dtype != BM_DTYPE_I8 && q->dtype != BM_DTYPE_I4) || !bm_dim_is_static(q->shape[1]) ||
      !bm_dim_is_static(sc->shape[1]))
    return false;
  const int64_t K = q->shape[1].add, G = sc->shape[1].add;
  return K > 0 && G > 0 && K % unit == 0 && K % G == 0 && (K / G) % 8 == 0;
}

static bool dequant_vec_ok(const ck *k) { return dequant_ok(k, 8); }

static bm_status emit_dequant_vec(ck *k, dq_cfg cfg) {
  const bm_node *n = k->n, *q = n->in[0], *sc = n->in[1];
  const char *I = k->I;
  const int T = k->threads = 256;
  const long long K = (long long)q->shape[1].add, G = (long long)sc->shape[1].add;
  const bool i4 = q->dtype == BM_DTYPE_I4, cst = q->op == BM_OP_WEIGHT || q->op == BM_OP_CONST;
  const int U = cfg.units > 0 ? cfg.units : 2, W = i4 ? 1 : 2; /* units per thread, q words per unit */
  k->tasks = ck_task_linear(k->g, 2, n->shape, (int64_t)T * U * 8);
  str total = ck_prodx(k, n->shape, 0, 2);
  P("  const %s nu = %s / 8; /* units of 8 outputs */\n", I, total.s);
  ck_loop_open(k, ck_strf("(nu + %d) / %d", T * U - 1, T * U).s);
  P("    const %s u0 = t * %d + tid;\n", I, T * U);
  P("    unsigned int w[%d]; /* q: unit u0 + %d u in words %d u.. */\n", U * W, T, W);
  P("#pragma unroll\n    for (int u = 0; u < %d; u++) {\n", U);
  P("      const %s c = u0 + %d * u < nu ? u0 + %d * u : nu - 1; /* past the end: the last unit again */\n", I, T, T);
  /* constant q: non-volatile, past L1; else volatile (never above BM_PDL_WAIT) */
  const char *ld = cst ? "asm(\"ld.global.nc.L1::no_allocate" : "asm volatile(\"ld.global.nc";
  if (i4)
    P("      %s.u32 %%0, [%%1];\" : \"=r\"(w[u]) : \"l\"(bm_buf(0) + (size_t)4 * c));\n", ld);
  else
    P("      %s.v2.u32 {%%0, %%1}, [%%2];\" : \"=r\"(w[2 * u]), \"=r\"(w[2 * u + 1]) : \"l\"(bm_buf(0) + (size_t)8 * c));\n",
      ld);
  P("    }\n");
  P("#pragma unroll\n    for (int u = 0; u < %d; u++) {\n", U);
  P("      const %s c = u0 + %d * u;\n", I, T);
  P("      if (c < nu) {\n");
  P("        const %s row = c / %lld, col = 8 * (c %% %lld);\n", I, K / 8, K / 8);
  P("        const float s = %s;\n", ck_ld(k, 1, sc->dtype, ck_strf("row * %lld + col / %lld", G, K / G)).s);
  P("        float v[8]; /* q exactly */\n");
  if (i4)
    P("#pragma unroll\n        for (int j = 0; j < 8; j++)\n"
      "          v[j] = __uint_as_float(0x4b000000u | (((w[u] ^ 0x88888888u) >> (4 * j)) & 15u)) - 8388616.0f;\n");
  else
    P("#pragma unroll\n        for (int j = 0; j < 8; j++)\n"
      "          v[j] = __uint_as_float(0x4b000000u | (((w[2 * u + (j >> 2)] ^ 0x80808080u) >> (8 * (j & 3))) & 255u)) - 8388736.0f;\n");
  P("        bm_u4 o;\n");
  P("#pragma unroll\n        for (int j = 0; j < 4; j++) o.w[j] = %s(v[2 * j] * s, v[2 * j + 1] * s);\n",
    n->dtype == BM_DTYPE_BF16 ? "bm_pack_bf16x2" : "bm_pack_f16x2");
  /* the output: the buffer after the inputs */
  if (cfg.cs)
    P("        asm volatile(\"st.global.cs.v4.u32 [%%0], {%%1, %%2, %%3, %%4};\" :: \"l\"(bm_out(%d) + (size_t)16 * c), \"r\"(o.w[0]),"
      " \"r\"(o.w[1]), \"r\"(o.w[2]), \"r\"(o.w[3]) : \"memory\");\n", n->nin);
  else
    P("        *(bm_u4 *)(bm_out(%d) + (size_t)16 * c) = o;\n", n->nin);
  P("      }\n");
  P("    }\n");
  ck_loop_close(k);
  return NULL;
}

/* The previous DEQUANT kernel (BM_CUDA_DEQ=old), in the CUDA prelude's 16-byte
 * chunks: a thread turns one 16-byte chunk of q (16 i8 or 32 i4 values of one
 * row) into 16-byte stores of 8 outputs, each the f32 product q * scale rounded
 * to nearest even (as the reference: bit-identical), one scale per chunk (groups
 * of a multiple of the chunk) or per 8 outputs. Needs K static and a multiple of
 * the chunk, and groups of a multiple of 8; *ch: the chunk's elements. q streams
 * past L1 where it is a package constant (else volatile loads: the PDL rule). */
static bool dequant_chunk_ok(const ck *k, int *ch) {
  *ch = k->n->in[0]->dtype == BM_DTYPE_I4 ? 32 : 16;
  return dequant_ok(k, *ch);
}

static bm_status emit_dequant_chunk(ck *k, int CH) {
  const bm_node *n = k->n, *q = n->in[0], *sc = n->in[1];
  const char *I = k->I;
  const int T = k->threads = 256;
  const long long K = (long long)q->shape[1].add, G = (long long)sc->shape[1].add;
  const bool i4 = q->dtype == BM_DTYPE_I4, cst = q->op == BM_OP_WEIGHT || q->op == BM_OP_CONST;
  k->tasks = ck_task_linear(k->g, 2, n->shape, (int64_t)T * CH);
  str total = ck_prodx(k, n->shape, 0, 2);
  P("  const %s nch = %s / %d; /* 16-byte chunks of q */\n", I, total.s, CH);
  ck_loop_open(k, ck_strf("(nch + %d) / %d", T - 1, T).s);
  P("    const %s c = t * %d + tid;\n", I, T);
  P("    if (c < nch) {\n");
  P("      const %s e0 = c * %d, row = e0 / %lld, col = e0 %% %lld;\n", I, CH, K, K);
  P("      const bm_u4 r = %s(bm_buf(0) + e0%s);\n", cst ? "bm_ld16_stream" : "bm_ld16", i4 ? " / 2" : "");
  P("      float v[%d]; /* q exactly */\n", CH);
  if (i4)
    P("#pragma unroll\n      for (int e = 0; e < 32; e++) v[e] = (float)((int)(r.w[e >> 3] << (28 - 4 * (e & 7))) >> 28);\n");
  else
    P("#pragma unroll\n      for (int e = 0; e < 16; e++) v[e] = (float)(signed char)(r.w[e >> 2] >> (8 * (e & 3)));\n");
  const bool one = (K / G) % CH == 0; /* the chunk inside one group: one scale */
  if (one) P("      const float sc = %s;\n", ck_ld(k, 1, sc->dtype, ck_strf("row * %lld + col / %lld", G, K / G)).s);
  P("#pragma unroll\n      for (int s8 = 0; s8 < %d; s8++) {\n", CH / 8);
  if (!one)
    P("        const float sc = %s;\n", ck_ld(k, 1, sc->dtype, ck_strf("row * %lld + (col + 8 * s8) / %lld", G, K / G)).s);
  P("        bm_u4 o;\n");
  P("#pragma unroll\n        for (int j = 0; j < 4; j++) o.w[j] = %s(v[8 * s8 + 2 * j] * sc, v[8 * s8 + 2 * j + 1] * sc);\n",
    n->dtype == BM_DTYPE_BF16 ? "bm_pack_bf16x2" : "bm_pack_f16x2");
  P("        *(bm_u4 *)(bm_out(%d) + 2 * (e0 + 8 * s8)) = o; /* the output: the buffer after the inputs */\n", n->nin);
  P("      }\n");
  P("    }\n");
  ck_loop_close(k);
  return NULL;
}

static bm_status emit_movement(ck *k) {
  const bm_node *n = k->n;
  if (n->op == BM_OP_DEQUANT) { /* the vector kernels (BM_CUDA_DEQ=old: the previous one) */
    const dq_cfg dq = dequant_cfg();
    int dq_chunk;
    if (!dq.old && dequant_vec_ok(k)) return emit_dequant_vec(k, dq);
    if (dq.old && dequant_chunk_ok(k, &dq_chunk)) return emit_dequant_chunk(k, dq_chunk);
  }
  bm_status fast;
  if (ck_movement_fast(k, &fast)) return fast; /* vectors / tiled transpose (emit_movement.c) */
  const int T = k->threads = 256;
  int r = n->ndim;
  k->tasks = ck_task_linear(k->g, r, n->shape, T);
  str total = ck_prodx(k, n->shape, 0, r);
  P("  const %s total = %s;\n", k->I, total.s);
  ck_loop_open(k, ck_strf("(total + %d) / %d", T - 1, T).s);
  P("    const %s i = t * %d + tid;\n", k->I, T);
  P("    if (i < total) {\n");
  const bm_node *x = n->in[0];
  switch (n->op) {
    case BM_OP_RESHAPE: ck_copy_elem(k, 0, x->dtype, ck_strf("i"), "      "); break;
    case BM_OP_PERMUTE: {
      ck_unravel(k, "i", r, n->shape, "c");
      str off = ck_strf("0");
      for (int d = 0; d < r; d++) {
        str st = stride_of(k, x, n->a.perm[d]);
        off = ck_strf("%s + c%d * %s", off.s, d, st.s);
      }
      ck_copy_elem(k, 0, x->dtype, ck_strf("(%s)", off.s), "      ");
      break;
    }
    case BM_OP_SLICE: {
      ck_unravel(k, "i", r, n->shape, "c");
      int ax = n->a.axis;
      str dim = ck_dimx(k, x->shape[ax]);
      str begin = n->a.begin < 0 ? ck_strf("(%s + (%lld))", dim.s, (long long)n->a.begin)
                                 : ck_strf("%lld", (long long)n->a.begin);
      str off = ck_strf("0");
      for (int d = 0; d < r; d++) {
        str st = stride_of(k, x, d);
        if (d == ax)
          off = ck_strf("%s + (%s + c%d * %lld) * %s", off.s, begin.s, d, (long long)n->a.step, st.s);
        else
          off = ck_strf("%s + c%d * %s", off.s, d, st.s);
      }
      ck_copy_elem(k, 0, x->dtype, ck_strf("(%s)", off.s), "      ");
      break;
    }
    case BM_OP_CONCAT: {
      ck_unravel(k, "i", r, n->shape, "c");
      int ax = n->a.axis;
      str start = ck_strf("0");
      for (int j = 0; j < n->nin; j++) {
        const bm_node *in = n->in[j];
        str len = ck_dimx(k, in->shape[ax]);
        str end = ck_strf("(%s + %s)", start.s, len.s);
        if (j < n->nin - 1)
          P("      %sif (c%d < %s) {\n", j ? "else " : "", ax, end.s);
        else
          P("      %s{\n", j ? "else " : "");
        str off = ck_strf("0");
        for (int d = 0; d < r; d++) {
          str st = stride_of(k, in, d);
          if (d == ax)
            off = ck_strf("%s + (c%d - %s) * %s", off.s, d, start.s, st.s);
          else
            off = ck_strf("%s + c%d * %s", off.s, d, st.s);
        }
        ck_copy_elem(k, j, in->dtype, ck_strf("(%s)", off.s), "        ");
        P("      }\n");
        start = end;
      }
      break;
    }
    case BM_OP_GATHER: {
      const bm_node *idx = n->in[1];
      str row = ck_prodx(k, x->shape, 1, x->ndim);
      str V = ck_dimx(k, x->shape[0]);
      str l = ck_ldi(k, 1, idx->dtype, ck_strf("i / %s", row.s));
      P("      bm_i64 v = %s;\n", l.s);
      P("      v = v < 0 ? 0 : v >= (bm_i64)%s ? (bm_i64)%s - 1 : v; /* out of range: clamped */\n", V.s, V.s);
      ck_copy_elem(k, 0, x->dtype, ck_strf("(%s)v * %s + i %% %s", k->I, row.s, row.s), "      ");
      break;
    }
    case BM_OP_PAD: {
      ck_unravel(k, "i", r, n->shape, "c");
      P("      bool inside = true;\n");
      str off = ck_strf("0");
      for (int d = 0; d < r; d++) {
        str xd = ck_dimx(k, x->shape[d]);
        P("      const %s x%d = c%d - %lld;\n", k->I, d, d, (long long)n->a.pads[2 * d]);
        P("      if (x%d < 0 || x%d >= %s) inside = false;\n", d, d, xd.s);
        str st = stride_of(k, x, d);
        off = ck_strf("%s + x%d * %s", off.s, d, st.s);
      }
      P("      if (inside) {\n");
      ck_copy_elem(k, 0, x->dtype, ck_strf("(%s)", off.s), "        ");
      str val = ck_flt(n->a.value);
      P("      } else {\n        bm_st_%s(bm_out(1), i, %s);\n      }\n", bm_dtype_name(n->dtype), val.s);
      break;
    }
    case BM_OP_UPSAMPLE: {
      ck_unravel(k, "i", r, n->shape, "c");
      str off = ck_strf("0");
      for (int d = 0; d < r; d++) {
        str st = stride_of(k, x, d);
        if (d >= r - 2)
          off = ck_strf("%s + (c%d / %d) * %s", off.s, d, n->a.scale, st.s);
        else
          off = ck_strf("%s + c%d * %s", off.s, d, st.s);
      }
      ck_copy_elem(k, 0, x->dtype, ck_strf("(%s)", off.s), "      ");
      break;
    }
    case BM_OP_TAKE_ROW: {
      const bm_node *idx = n->in[1];
      str row = ck_prodx(k, x->shape, 2, x->ndim);
      str S = ck_dimx(k, x->shape[1]);
      P("      const %s b = i / %s;\n", k->I, row.s);
      str l = ck_ldi(k, 1, idx->dtype, ck_strf("b"));
      P("      bm_i64 s = %s;\n", l.s);
      P("      s = s < 0 ? 0 : s >= (bm_i64)%s ? (bm_i64)%s - 1 : s;\n", S.s, S.s);
      ck_copy_elem(k, 0, x->dtype, ck_strf("(b * %s + (%s)s) * %s + i %% %s", S.s, k->I, row.s, row.s), "      ");
      break;
    }
    case BM_OP_DEQUANT: {
      const bm_node *sc = n->in[1];
      str K = ck_dimx(k, x->shape[1]);
      str G = ck_dimx(k, sc->shape[1]);
      P("      const %s row = i / %s, col = i %% %s;\n", k->I, K.s, K.s);
      str q = ck_ld(k, 0, x->dtype, ck_strf("i"));
      str s = ck_ld(k, 1, sc->dtype, ck_strf("row * %s + col / (%s / %s)", G.s, K.s, G.s));
      P("      const float v = %s * %s;\n", q.s, s.s);
      ck_store(k, "i", "v");
      break;
    }
    default: return bm_status_make(BM_ERR_INTERNAL, "clike: %s is not a movement op", bm_op_name(n->op));
  }
  P("    }\n");
  ck_loop_close(k);
  return NULL;
}

/* ------------------------------------------------------------------ reductions */

static bm_status emit_reduce(ck *k) {
  const bm_node *n = k->n, *x = n->in[0];
  const int T = k->threads = 256, W = T / 32;
  int r = x->ndim;
  uint32_t axes = n->a.axes;
  bm_dim kept[BM_MAX_DIMS], red[BM_MAX_DIMS];
  int kd[BM_MAX_DIMS], rd[BM_MAX_DIMS], nk = 0, nr = 0;
  for (int d = 0; d < r; d++) {
    if (axes & (1u << d)) {
      rd[nr] = d;
      red[nr++] = x->shape[d];
    } else {
      kd[nk] = d;
      kept[nk++] = x->shape[d];
    }
  }
  bm_dim one = bm_dim_c(1);
  k->tasks = ck_task_linear(k->g, nk ? nk : 1, nk ? kept : &one, W);
  str nout = ck_prodx(k, kept, 0, nk), R = ck_prodx(k, red, 0, nr);
  P("  const %s nout = %s, R = %s;\n", k->I, nout.s, R.s);
  P("  const int warp = tid >> 5, lane = tid & 31;\n");
  ck_loop_open(k, ck_strf("(nout + %d) / %d", W - 1, W).s);
  P("    const %s o = t * %d + warp;\n", k->I, W);
  P("    if (o < nout) {\n");
  ck_unravel(k, "o", nk, kept, "k");
  str base = ck_strf("0");
  for (int j = 0; j < nk; j++) {
    str st = stride_of(k, x, kd[j]);
    base = ck_strf("%s + k%d * %s", base.s, j, st.s);
  }
  P("      const %s base = %s;\n", k->I, base.s);
  bool mx = n->op == BM_OP_REDUCE_MAX;
  P("      float acc = %s;\n", mx ? "-BM_INF" : "0.0f");
  P("      for (%s j = lane; j < R; j += 32) {\n", k->I);
  ck_unravel(k, "j", nr, red, "q");
  str off = ck_strf("base");
  for (int j = 0; j < nr; j++) {
    str st = stride_of(k, x, rd[j]);
    off = ck_strf("%s + q%d * %s", off.s, j, st.s);
  }
  str l = ck_ld(k, 0, x->dtype, off);
  P("        const float v = %s;\n", l.s);
  P("        acc = %s;\n", mx ? "bm_max_nan(acc, v)" : "acc + v");
  P("      }\n");
  P("      acc = %s(acc);\n", mx ? "bm_warp_max_nan" : "bm_warp_sum");
  if (n->op == BM_OP_MEAN) P("      acc = R > 0 ? acc / (float)R : BM_NAN;\n");
  P("      if (lane == 0) {\n");
  ck_store(k, "o", "acc");
  P("      }\n    }\n");
  ck_loop_close(k);
  return NULL;
}

/* Row kernels (softmax, layer and rms norm): a warp per row when rows are
 * short, else a block per row. Sets up RSUM/RMAX, `lane`, `nl`. */
typedef struct rowk {
  bool warp;
  const char *sum, *max;
} rowk;

static rowk row_open(ck *k, str rows, int64_t len_max) {
  rowk w;
  w.warp = len_max <= 1024;
  const int T = k->threads = 256;
  if (w.warp) {
    P("  const int lane = tid & 31, nl = 32, warp = tid >> 5;\n");
    P("  const %s rows = %s;\n", k->I, rows.s);
    ck_loop_open(k, ck_strf("(rows + 7) / 8").s);
    P("    const %s row = t * 8 + warp;\n", k->I);
    P("    if (row < rows) {\n");
    w.sum = "bm_warp_sum(%s)";
    w.max = "bm_warp_max(%s)";
  } else {
    P("  BM_SHARED float red[32];\n");
    P("  const int lane = tid, nl = %d;\n", T);
    P("  const %s rows = %s;\n", k->I, rows.s);
    ck_loop_open(k, "rows");
    P("    const %s row = t;\n", k->I);
    P("    {\n");
    w.sum = "bm_block_sum(%s, red, tid, nl)";
    w.max = "bm_block_max(%s, red, tid, nl)";
  }
  return w;
}

static void row_close(ck *k) {
  P("    }\n");
  ck_loop_close(k);
}

static str red_call(const char *fmt, const char *v) { return ck_strf(fmt, v); }

static bm_status emit_softmax(ck *k) {
  const bm_node *n = k->n, *x = n->in[0];
  int ax = n->a.axis, r = x->ndim;
  str outer = ck_prodx(k, x->shape, 0, ax), L = ck_dimx(k, x->shape[ax]), inner = ck_prodx(k, x->shape, ax + 1, r);
  bm_dim rd[BM_MAX_DIMS];
  int nrd = 0;
  for (int d = 0; d < r; d++)
    if (d != ax) rd[nrd++] = x->shape[d];
  rowk w = row_open(k, ck_strf("(%s * %s)", outer.s, inner.s), ck_dim_max(k->g, x->shape[ax]));
  k->tasks = w.warp ? ck_task_linear(k->g, nrd, rd, 8) : ck_task_linear(k->g, nrd, rd, 1);
  if (nrd == 0) k->tasks = (bm_task_expr){-1, 0, 1, 1, 1};
  P("      const %s L = %s, inner = %s;\n", k->I, L.s, inner.s);
  P("      const %s base = (row / inner) * L * inner + row %% inner;\n", k->I);
  str l = ck_ld(k, 0, x->dtype, ck_strf("base + j * inner"));
  P("      float m = -BM_INF;\n");
  P("      for (%s j = lane; j < L; j += nl) m = fmaxf(m, %s);\n", k->I, l.s);
  P("      m = %s;\n", red_call(w.max, "m").s);
  P("      float s = 0.0f;\n");
  P("      for (%s j = lane; j < L; j += nl) s += expf(%s - m);\n", k->I, l.s);
  P("      s = %s;\n", red_call(w.sum, "s").s);
  P("      for (%s j = lane; j < L; j += nl) {\n", k->I);
  P("        const float v = expf(%s - m) / s;\n", l.s);
  P("        bm_st_%s(bm_out(1), base + j * inner, v);\n", bm_dtype_name(n->dtype));
  P("      }\n");
  row_close(k);
  return NULL;
}

/* Layer / rms norm, element j of the row at base: (xj - mean) * rstd, times
 * the weight, plus the bias, the node's epilogue, the store. */
static void norm_store(ck *k, const char *xj, bool has_w, bool has_b) {
  const bm_node *n = k->n;
  P("        const %s oi = base + j;\n", k->I);
  P("        float v = (%s - mean) * rstd;\n", xj);
  if (has_w) P("        v *= %s;\n", ck_ld(k, 1, n->in[1]->dtype, ck_strf("j")).s);
  if (has_b) P("        v += %s;\n", ck_ld(k, 2, n->in[2]->dtype, ck_strf("j")).s);
  ck_emit_epilogue(k, "v", "oi");
  ck_store(k, "oi", "v");
}

/* GROUP_NORM with 16-byte vectors (CUDA prelude; f32/f16/bf16 x, the
 * spatial size static and a multiple of the vector, so a vector never
 * straddles two channels): a block of 1024 threads per (image, group), as
 * the element kernel below, but each thread reads 16 bytes at a time
 * (`ck_load_floats`: volatile loads, the PDL rule), 4 in flight, and the
 * channel (its weight and bias) once per vector, with no division per
 * element. The sums run in the same two passes (mean, then the squared
 * deviations), only grouped per thread differently. The SD VAE's group
 * norms over 128-512 channels x 64^2-512^2 pixels: 2.41 -> 0.53 ms each on
 * an H100 (the element kernel: 256 threads, 2-byte loads, a division per
 * element), the VAE decode 47.3 -> 19.0 ms (docs/cuda.md). BM_CUDA_GN_OLD=1
 * (at compile time) keeps the element kernel. */
static bool group_norm_vec_ok(const ck *k) {
  const bm_node *n = k->n, *x = n->in[0];
  if (!k->L || !k->L->tensor_cores || getenv("BM_CUDA_GN_OLD")) return false;
  if (x->dtype != BM_DTYPE_F32 && x->dtype != BM_DTYPE_F16 && x->dtype != BM_DTYPE_BF16) return false;
  int64_t S = 1;
  for (int d = 2; d < x->ndim; d++) {
    if (!bm_dim_is_static(x->shape[d])) return false;
    S *= x->shape[d].add;
  }
  const int V = x->dtype == BM_DTYPE_F32 ? 4 : 8;
  return x->ndim >= 3 && S > 0 && S % V == 0 && n->a.groups > 0;
}

/* A group split over a cluster (sm_90a): `cl` blocks of 1024 threads per
 * (image, group) instead of one, so the SD VAE's 32 groups at batch 1 fill
 * more than 32 of the multiprocessors. The blocks of a cluster take every
 * cl-th vector of their group; each pass's block sum goes to the block's
 * shared memory, a cluster barrier, then every block adds the cl sums in
 * rank order (the same mean and rstd in all of them) from its peers' shared
 * memory (mapa). The last pass runs between an arrival and the wait of the
 * barrier that keeps the sums readable until every peer has read them.
 * Images without clusters (sm_80-89, PTX) run the same grid: block rank 0 of
 * each cl takes the whole group as cl = 1 does, the others return. At least
 * 2 vectors a thread per block; at most 8 blocks (the portable cluster);
 * BM_CUDA_GN_CLUSTER=N caps it at compile time (1: the single block). */
static int group_norm_cluster(const ck *k, int64_t nv) {
  if (k->L->tensor_cores < 2) return 1;
  const char *e = getenv("BM_CUDA_GN_CLUSTER");
  int cap = e && *e ? atoi(e) : 8, cl = 1;
  while (cl < 8 && cl * 2 <= cap && nv >= (int64_t)cl * 2 * 2048) cl *= 2;
  return cl;
}

static bm_status emit_group_norm_vec(ck *k, bool has_w, bool has_b) {
  const bm_node *n = k->n, *x = n->in[0];
  const char *I = k->I;
  const int T = k->threads = 1024, V = x->dtype == BM_DTYPE_F32 ? 4 : 8;
  const int64_t G = n->a.groups, es = (int64_t)bm_dtype_nbytes(x->dtype, 1);
  int64_t S = 1;
  for (int d = 2; d < x->ndim; d++) S *= x->shape[d].add;
  const int cl = group_norm_cluster(k, x->shape[1].add / G * S / V);
  bm_dim dims[3] = {x->shape[0], bm_dim_c(G), bm_dim_c(cl)};
  int64_t divs[3] = {1, 1, 1};
  k->tasks = ck_task_grid(k->g, 3, dims, divs);
  k->cluster = cl;
  str N = ck_dimx(k, x->shape[0]), C = ck_dimx(k, x->shape[1]);
  P("  BM_SHARED float red[32];\n");
  if (cl > 1) P("  BM_SHARED float gsum[2]; /* this block's sums: read by the cluster's blocks */\n");
  P("  const %s C = %s, S = %lld, cg = C / %lld, len = cg * S, nv = len / %d;\n", I, C.s, (long long)S,
    (long long)G, V);
  ck_loop_open(k, ck_strf("%s * %lld", N.s, (long long)(G * cl)).s);
  if (cl > 1) {
    P("    const %s tg = t / %d; /* (image, group) */\n", I, cl);
    P("#if defined(__CUDA_ARCH_FEAT_SM90_ALL)\n");
    P("    const int cr = (int)(t %% %d), cn = %d; /* the cluster's blocks: t, t + 1, ... */\n", cl, cl);
    P("#else\n");
    P("    if (t %% %d != 0) continue; /* no clusters: one block per group */\n", cl);
    P("    const int cr = 0, cn = 1;\n");
    P("#endif\n");
  } else {
    P("    const %s tg = t;\n    const int cr = 0, cn = 1;\n", I);
  }
  P("    const %s g = tg %% %lld, base = tg * len;\n", I, (long long)G);
  P("    const unsigned char *xb = bm_buf(0) + (bm_i64)base * %lld;\n", (long long)es);
  /* the three passes over the block's vectors: iv = cr T + tid, step cn T */
  for (int pass = 0; pass < 3; pass++) {
    if (pass < 2) P("    float %s = 0.0f;\n", pass ? "q" : "s");
    P("#pragma unroll %d\n    for (%s iv = cr * %d + tid; iv < nv; iv += cn * %d) {\n", pass < 2 ? 4 : 2, I, T, T);
    P("      float xv[%d];\n      {\n        const unsigned char *xp = xb + (bm_i64)iv * 16;\n", V);
    ck_load_floats(k, "xv", "xp", x->dtype, V);
    P("      }\n");
    if (pass == 0) P("#pragma unroll\n      for (int e = 0; e < %d; e++) s += xv[e];\n    }\n", V);
    if (pass == 1)
      P("#pragma unroll\n      for (int e = 0; e < %d; e++) { const float d = xv[e] - mean; q += d * d; }\n    }\n", V);
    if (pass < 2) {
      const char *v = pass ? "q" : "s";
      P("    float %s_all = bm_block_sum(%s, red, tid, %d);\n", v, v, T);
      if (cl > 1) {
        P("#if defined(__CUDA_ARCH_FEAT_SM90_ALL)\n");
        P("    if (tid == 0) gsum[%d] = %s_all;\n    bm_cluster_sync();\n", pass, v);
        P("    %s_all = 0.0f;\n", v);
        P("    for (int r = 0; r < %d; r++) %s_all += bm_cluster_ld_f32(bm_smem_addr(&gsum[%d]), (unsigned int)r);\n",
          cl, v, pass);
        if (pass == 1) P("    bm_cluster_arrive(); /* done reading the peers' sums (the wait: below) */\n");
        P("#endif\n");
      }
      if (pass == 0) P("    const float mean = s_all / (float)len;\n");
      else
        P("    const float rstd = 1.0f / sqrtf(q_all / (float)len + %s);\n", ck_flt(n->a.eps).s);
      continue;
    }
    P("      const %s j0 = iv * %d, ch = g * cg + j0 / S;\n", I, V);
    if (has_w) P("      const float wv = %s;\n", ck_ld(k, 1, n->in[1]->dtype, ck_strf("ch")).s);
    if (has_b) P("      const float bv = %s;\n", ck_ld(k, 2, n->in[2]->dtype, ck_strf("ch")).s);
    P("      (void)ch;\n#pragma unroll\n      for (int e = 0; e < %d; e++) {\n", V);
    P("        const %s oi = base + j0 + e;\n", I);
    P("        float v = (xv[e] - mean) * rstd;\n");
    if (has_w) P("        v *= wv;\n");
    if (has_b) P("        v += bv;\n");
    ck_emit_epilogue(k, "v", "oi");
    ck_store(k, "oi", "v");
    P("      }\n    }\n");
  }
  if (cl > 1) P("#if defined(__CUDA_ARCH_FEAT_SM90_ALL)\n    bm_cluster_wait(); /* the peers have read gsum */\n#endif\n");
  ck_loop_close(k);
  return NULL;
}

static bm_status emit_norm(ck *k) {
  const bm_node *n = k->n, *x = n->in[0];
  int r = x->ndim, base_nin = bm_node_base_nin(n);
  bool has_w = base_nin > 1, has_b = base_nin > 2;
  str eps = ck_flt(n->a.eps);
  if (n->op == BM_OP_GROUP_NORM && group_norm_vec_ok(k)) return emit_group_norm_vec(k, has_w, has_b);
  if (n->op == BM_OP_GROUP_NORM) {
    const int T = k->threads = 256;
    (void)T;
    int64_t G = n->a.groups;
    bm_dim dims[2] = {x->shape[0], bm_dim_c(G)};
    int64_t divs[2] = {1, 1};
    k->tasks = ck_task_grid(k->g, 2, dims, divs);
    str N = ck_dimx(k, x->shape[0]), C = ck_dimx(k, x->shape[1]), S = ck_prodx(k, x->shape, 2, r);
    P("  BM_SHARED float red[32];\n");
    P("  const %s C = %s, S = %s, cg = C / %lld, len = cg * S;\n", k->I, C.s, S.s, (long long)G);
    ck_loop_open(k, ck_strf("%s * %lld", N.s, (long long)G).s);
    P("    const %s g = t %% %lld, base = t * len;\n", k->I, (long long)G);
    str l = ck_ld(k, 0, x->dtype, ck_strf("base + j"));
    P("    float s = 0.0f;\n");
    P("    for (%s j = tid; j < len; j += 256) s += %s;\n", k->I, l.s);
    P("    const float mean = bm_block_sum(s, red, tid, 256) / (float)len;\n");
    P("    float q = 0.0f;\n");
    P("    for (%s j = tid; j < len; j += 256) { const float d = %s - mean; q += d * d; }\n", k->I, l.s);
    P("    const float rstd = 1.0f / sqrtf(bm_block_sum(q, red, tid, 256) / (float)len + %s);\n", eps.s);
    P("    for (%s j = tid; j < len; j += 256) {\n", k->I);
    P("      const %s ch = g * cg + j / S, oi = base + j;\n", k->I);
    P("      float v = (%s - mean) * rstd;\n", l.s);
    (void)0;
    if (has_w) P("      v *= %s;\n", ck_ld(k, 1, n->in[1]->dtype, ck_strf("ch")).s);
    if (has_b) P("      v += %s;\n", ck_ld(k, 2, n->in[2]->dtype, ck_strf("ch")).s);
    P("      (void)ch;\n");
    ck_emit_epilogue(k, "v", "oi");
    ck_store(k, "oi", "v");
    P("    }\n");
    ck_loop_close(k);
    return NULL;
  }
  /* layer / rms norm over the last dim */
  str D = ck_dimx(k, x->shape[r - 1]), rows = ck_prodx(k, x->shape, 0, r - 1);
  rowk w = row_open(k, rows, ck_dim_max(k->g, x->shape[r - 1]));
  k->tasks = r > 1 ? ck_task_linear(k->g, r - 1, x->shape, w.warp ? 8 : 1) : (bm_task_expr){-1, 0, 1, 1, 1};
  P("      const %s D = %s, base = row * D;\n", k->I, D.s);
  str l = ck_ld(k, 0, x->dtype, ck_strf("base + j"));
  /* A static row of at most 32 elements per lane is loaded once into
   * registers (all loads issued together, no second read of x); the same
   * per-lane order of the sums as the loop below, so the same results. */
  const bm_dim Dd = x->shape[r - 1];
  const int64_t nlv = w.warp ? 32 : k->threads, npt = bm_dim_is_static(Dd) ? (Dd.add + nlv - 1) / nlv : 0;
  if (npt >= 1 && npt <= 32 && getenv("BM_CUDA_NORM_LOOP") == NULL) {
    P("      float xv[%lld];\n", (long long)npt);
    P("#pragma unroll\n      for (int u = 0; u < %lld; u++) {\n", (long long)npt);
    P("        const %s j = lane + u * nl;\n", k->I);
    P("        xv[u] = j < D ? %s : 0.0f;\n", l.s);
    P("      }\n");
    if (n->op == BM_OP_LAYER_NORM) {
      P("      float s = 0.0f;\n");
      P("#pragma unroll\n      for (int u = 0; u < %lld; u++) if (lane + u * nl < D) s += xv[u];\n", (long long)npt);
      P("      const float mean = %s / (float)D;\n", red_call(w.sum, "s").s);
    } else {
      P("      const float mean = 0.0f;\n");
    }
    P("      float q = 0.0f;\n");
    P("#pragma unroll\n      for (int u = 0; u < %lld; u++) if (lane + u * nl < D) { const float d = xv[u] - mean; q += d * d; }\n",
      (long long)npt);
    P("      const float rstd = 1.0f / sqrtf(%s / (float)D + %s);\n", red_call(w.sum, "q").s, eps.s);
    P("#pragma unroll\n      for (int u = 0; u < %lld; u++) {\n", (long long)npt);
    P("        const %s j = lane + u * nl;\n", k->I);
    P("        if (j >= D) break;\n");
    norm_store(k, "xv[u]", has_w, has_b);
    P("      }\n");
    row_close(k);
    return NULL;
  }
  if (n->op == BM_OP_LAYER_NORM) {
    P("      float s = 0.0f;\n");
    P("      for (%s j = lane; j < D; j += nl) s += %s;\n", k->I, l.s);
    P("      const float mean = %s / (float)D;\n", red_call(w.sum, "s").s);
    P("      float q = 0.0f;\n");
    P("      for (%s j = lane; j < D; j += nl) { const float d = %s - mean; q += d * d; }\n", k->I, l.s);
    P("      const float rstd = 1.0f / sqrtf(%s / (float)D + %s);\n", red_call(w.sum, "q").s, eps.s);
  } else {
    P("      float q = 0.0f;\n");
    P("      for (%s j = lane; j < D; j += nl) { const float d = %s; q += d * d; }\n", k->I, l.s);
    P("      const float rstd = 1.0f / sqrtf(%s / (float)D + %s);\n", red_call(w.sum, "q").s, eps.s);
    P("      const float mean = 0.0f;\n");
  }
  P("      for (%s j = lane; j < D; j += nl) {\n", k->I);
  norm_store(k, l.s, has_w, has_b);
  P("      }\n");
  row_close(k);
  return NULL;
}

/* ------------------------------------------------------------------ rope */

/* BM_CUDA_ROPE=old (read by bmc): ROPE and KV_WRITE one element a thread (the
 * kernels before the 16-byte ones below). */
static bool rope_old(void) {
  const char *e = getenv("BM_CUDA_ROPE");
  return e && strcmp(e, "old") == 0;
}

/* ROPE of 16-bit data in the half-split mode (rope_mode 0) over the whole head
 * (D = 2 * half, half a multiple of 8), with the CUDA prelude: a thread rotates
 * 8 pairs (j, j + half), j = 8g .. 8g+7, of one (b, s, h) row: two 16-byte
 * loads and stores, each angle's cos/sin computed once for its pair (the
 * element-wise kernel computes them twice). Same arithmetic per element. */
static bool rope_vec_ok(const ck *k) {
  const bm_node *n = k->n, *x = n->in[0];
  if (!k->L || !k->L->tensor_cores || rope_old() || n->a.rope_mode != 0 || x->dtype != n->dtype) return false;
  if (n->dtype != BM_DTYPE_BF16 && n->dtype != BM_DTYPE_F16) return false;
  const int64_t half = n->in[2]->shape[0].add;
  return x->ndim == 4 && bm_dim_is_static(x->shape[3]) && x->shape[3].add == 2 * half && half % 8 == 0;
}

static bm_status emit_rope_vec(ck *k) {
  const bm_node *n = k->n, *x = n->in[0], *pos = n->in[1], *fr = n->in[2];
  const int T = k->threads = 256;
  const long long half = (long long)fr->shape[0].add, G = half / 8;
  k->tasks = ck_task_linear(k->g, 4, x->shape, (int64_t)T * 16);
  const char *t16 = n->dtype == BM_DTYPE_BF16 ? "bf16" : "f16";
  str rows = ck_prodx(k, x->shape, 0, 3), S = ck_dimx(k, x->shape[1]), H = ck_dimx(k, x->shape[2]);
  P("  /* rope: 8 pairs (j, j + %lld) of one row a thread, 16-byte loads and stores */\n", half);
  P("  const %s nv = %s * %lld, S = %s, H = %s;\n", k->I, rows.s, G, S.s, H.s);
  ck_loop_open(k, ck_strf("(nv + %d) / %d", T - 1, T).s);
  P("    const %s v = t * %d + tid;\n", k->I, T);
  P("    if (v < nv) {\n");
  P("      const %s g = v %% %lld, row = v / %lld, s = (row / H) %% S, b = row / (H * S);\n", k->I, G, G);
  P("      (void)b;\n");
  P("      const %s i0 = row * %lld + g * 8; /* element (row, j0) */\n", k->I, 2 * half);
  str lp = ck_ld(k, 1, pos->dtype, pos->ndim == 1 ? ck_strf("s") : ck_strf("b * S + s"));
  P("      const float p = %s;\n", lp.s);
  P("      const bm_u4 va = bm_ld16((const BM_GLOBAL bm_u4 *)bm_buf(0) + i0 / 8);\n");
  P("      const bm_u4 vb = bm_ld16((const BM_GLOBAL bm_u4 *)bm_buf(0) + (i0 + %lld) / 8);\n", half);
  P("      bm_u4 oa, ob;\n");
  P("#pragma unroll\n      for (int e = 0; e < 8; e += 2) {\n");
  P("        float ra[2], rb[2];\n");
  P("#pragma unroll\n        for (int q = 0; q < 2; q++) {\n");
  str lf = ck_ld(k, 2, fr->dtype, ck_strf("g * 8 + e + q"));
  P("          const float ang = p * %s, c = cosf(ang), sn = sinf(ang);\n", lf.s);
  P("          const float a = bm_x8_%s(va, e + q), bb = bm_x8_%s(vb, e + q);\n", t16, t16);
  P("          ra[q] = a * c - bb * sn;\n");
  P("          rb[q] = bb * c + a * sn;\n");
  P("        }\n");
  P("        oa.w[e >> 1] = bm_pack_%sx2(ra[0], ra[1]);\n", t16);
  P("        ob.w[e >> 1] = bm_pack_%sx2(rb[0], rb[1]);\n", t16);
  P("      }\n");
  P("      ((BM_GLOBAL bm_u4 *)bm_out(3))[i0 / 8] = oa;\n");
  P("      ((BM_GLOBAL bm_u4 *)bm_out(3))[(i0 + %lld) / 8] = ob;\n", half);
  P("    }\n");
  ck_loop_close(k);
  return NULL;
}

static bm_status emit_rope(ck *k) {
  const bm_node *n = k->n, *x = n->in[0], *pos = n->in[1], *fr = n->in[2];
  if (rope_vec_ok(k)) return emit_rope_vec(k);
  const int T = k->threads = 256;
  k->tasks = ck_task_linear(k->g, 4, x->shape, T);
  int64_t half = fr->shape[0].add;
  str total = ck_prodx(k, x->shape, 0, 4), S = ck_dimx(k, x->shape[1]), H = ck_dimx(k, x->shape[2]),
      D = ck_dimx(k, x->shape[3]);
  P("  const %s total = %s, S = %s, H = %s, D = %s;\n", k->I, total.s, S.s, H.s, D.s);
  ck_loop_open(k, ck_strf("(total + %d) / %d", T - 1, T).s);
  P("    const %s i = t * %d + tid;\n", k->I, T);
  P("    if (i < total) {\n");
  P("      const %s d = i %% D, s = (i / (D * H)) %% S, b = i / (D * H * S);\n", k->I);
  P("      (void)b;\n");
  str lx = ck_ld(k, 0, x->dtype, ck_strf("i"));
  P("      float v;\n");
  P("      if (d >= %lld) {\n        v = %s;\n      } else {\n", (long long)(2 * half), lx.s);
  if (n->a.rope_mode == 0)
    P("        const %s j = d < %lld ? d : d - %lld, ia = j, ib = j + %lld;\n        const bool first = d < %lld;\n",
      k->I, (long long)half, (long long)half, (long long)half, (long long)half);
  else
    P("        const %s j = d >> 1, ia = 2 * j, ib = 2 * j + 1;\n        const bool first = (d & 1) == 0;\n", k->I);
  str lp = ck_ld(k, 1, pos->dtype, pos->ndim == 1 ? ck_strf("s") : ck_strf("b * S + s"));
  str lf = ck_ld(k, 2, fr->dtype, ck_strf("j"));
  str la = ck_ld(k, 0, x->dtype, ck_strf("i - d + ia")), lb = ck_ld(k, 0, x->dtype, ck_strf("i - d + ib"));
  P("        const float ang = %s * %s, c = cosf(ang), sn = sinf(ang);\n", lp.s, lf.s);
  P("        const float a = %s, bb = %s;\n", la.s, lb.s);
  P("        v = first ? a * c - bb * sn : bb * c + a * sn;\n");
  P("      }\n");
  ck_store(k, "i", "v");
  P("    }\n");
  ck_loop_close(k);
  return NULL;
}

/* ------------------------------------------------------------------ LLM ops */

/* KV_WRITE: rows (B, H, S, D) into the cache (B, H, L, D) at position p0 of
 * batch b. With the CUDA prelude, the same dtype and D * element bytes a
 * multiple of 16, a thread copies one 16-byte vector (V elements; a vector
 * never crosses a row); else one element. */
static bm_status emit_kv_write(ck *k) {
  const bm_node *n = k->n, *c = n->in[0], *rows = n->in[1], *pos = n->in[2];
  const int T = k->threads = 256;
  const int64_t es = (int64_t)bm_dtype_nbytes(rows->dtype, 1);
  int V = 1;
  if (k->L && k->L->tensor_cores && !rope_old() && rows->dtype == n->dtype && n->dtype != BM_DTYPE_I4 && es <= 8 &&
      bm_dim_is_static(rows->shape[3]) && rows->shape[3].add * es % 16 == 0)
    V = (int)(16 / es);
  k->tasks = ck_task_linear(k->g, 4, rows->shape, (int64_t)T * V);
  str total = ck_prodx(k, rows->shape, 0, 4), H = ck_dimx(k, rows->shape[1]), S = ck_dimx(k, rows->shape[2]),
      D = ck_dimx(k, rows->shape[3]), L = ck_dimx(k, c->shape[2]);
  P("  const %s total = %s, H = %s, S = %s, D = %s, L = %s;\n", k->I, total.s, H.s, S.s, D.s, L.s);
  /* a thread per unit: a 16-byte vector v of element e = v V (V > 1), else element e */
  if (V > 1) {
    P("  /* 16-byte vectors (%d elements) */\n", V);
    P("  const %s nv = total / %d;\n", k->I, V);
    ck_loop_open(k, ck_strf("(nv + %d) / %d", T - 1, T).s);
    P("    const %s v = t * %d + tid, e = v * %d;\n", k->I, T, V);
    P("    if (v < nv) {\n");
  } else {
    ck_loop_open(k, ck_strf("(total + %d) / %d", T - 1, T).s);
    P("    const %s e = t * %d + tid;\n", k->I, T);
    P("    if (e < total) {\n");
  }
  P("      const %s d = e %% D, s = (e / D) %% S, bh = e / (D * S), b = bh / H;\n", k->I);
  str lp = ck_ldi(k, 2, pos->dtype, ck_strf("b"));
  P("      const bm_i64 p0 = %s;\n", lp.s);
  P("      if (!(p0 > (bm_i64)L || p0 + s < 0 || p0 + s >= (bm_i64)L)) {\n");
  P("        const %s i = (bh * L + (%s)p0 + s) * D + d;\n", k->I, k->I);
  if (V > 1)
    P("        ((BM_GLOBAL bm_u4 *)bm_out(3))[i / %d] = bm_ld16((const BM_GLOBAL bm_u4 *)bm_buf(1) + v);\n", V);
  else
    ck_copy_elem(k, 1, rows->dtype, ck_strf("e"), "        ");
  P("      }\n    }\n");
  ck_loop_close(k);
  return NULL;
}

static bm_status emit_topk(ck *k) {
  const bm_node *n = k->n, *x = n->in[0];
  const int T = k->threads = 256;
  int r = x->ndim;
  k->tasks = r > 1 ? ck_task_linear(k->g, r - 1, x->shape, 1) : (bm_task_expr){-1, 0, 1, 1, 1};
  str N = ck_dimx(k, x->shape[r - 1]), rows = ck_prodx(k, x->shape, 0, r - 1);
  str l = ck_ld(k, 0, x->dtype, ck_strf("base + j"));
  str fill = ck_flt(n->a.fill);
  const char *dt = bm_dtype_name(n->dtype);
  P("  BM_SHARED int redi[32];\n");
  P("  const %s N = %s, Kk = %d;\n", k->I, N.s, n->a.topk);
  ck_loop_open(k, rows.s);
  P("    const %s base = t * N;\n", k->I);
  P("    if (Kk >= N) {\n");
  P("      for (%s j = tid; j < N; j += %d) bm_st_%s(bm_out(1), base + j, %s);\n", k->I, T, dt, l.s);
  P("    } else {\n");
  /* radix select of the Kk-th largest ordering key */
  P("      unsigned int prefix = 0u;\n");
  P("      for (int bit = 31; bit >= 0; bit--) {\n");
  P("        const unsigned int cand = prefix | (1u << bit);\n");
  P("        int cnt = 0;\n");
  P("        for (%s j = tid; j < N; j += %d) cnt += bm_order_key(%s) >= cand;\n", k->I, T, l.s);
  P("        if (bm_block_count(cnt, redi, tid, %d) >= Kk) prefix = cand;\n", T);
  P("      }\n");
  P("      int gt = 0;\n");
  P("      for (%s j = tid; j < N; j += %d) gt += bm_order_key(%s) > prefix;\n", k->I, T, l.s);
  P("      const int need = (int)Kk - bm_block_count(gt, redi, tid, %d);\n", T);
  /* keep ties at the threshold in index order: a block-wide exclusive scan per chunk */
  P("      int taken = 0;\n");
  P("      for (%s j0 = 0; j0 < N; j0 += %d) {\n", k->I, T);
  P("        const %s j = j0 + tid;\n", k->I);
  P("        const float v = j < N ? %s : 0.0f;\n", l.s);
  P("        const unsigned int key = bm_order_key(v);\n");
  P("        const int tie = (j < N && key == prefix) ? 1 : 0;\n");
  P("        int inc = tie;\n");
  P("        for (int o = 1; o < 32; o <<= 1) { const int y = BM_SHFL_UP(inc, o); if ((tid & 31) >= o) inc += y; }\n");
  P("        BM_SYNC();\n");
  P("        if ((tid & 31) == 31) redi[tid >> 5] = inc;\n");
  P("        BM_SYNC();\n");
  P("        int before = 0, all = 0;\n");
  P("        for (int w = 0; w < %d; w++) { if (w < (tid >> 5)) before += redi[w]; all += redi[w]; }\n", T / 32);
  P("        const int excl = before + inc - tie;\n");
  P("        if (j < N) {\n");
  P("          const bool keep = key > prefix || (tie && taken + excl < need);\n");
  P("          bm_st_%s(bm_out(1), base + j, keep ? v : %s);\n", dt, fill.s);
  P("        }\n");
  P("        taken += all;\n");
  P("      }\n");
  P("    }\n");
  ck_loop_close(k);
  return NULL;
}

static bm_status emit_moe(ck *k) {
  const bm_node *n = k->n;
  const int T = k->threads = 256, W = T / 32;
  P("  const int warp = tid >> 5, lane = tid & 31;\n");
  if (n->op == BM_OP_MOE_UP) {
    const bm_node *x = n->in[0], *gt = n->in[1], *wg = n->in[2], *wu = n->in[3];
    k->tasks = ck_task_linear(k->g, n->ndim, n->shape, W);
    str Tn = ck_prodx(k, x->shape, 0, x->ndim - 1), D = ck_dimx(k, x->shape[x->ndim - 1]),
        E = ck_dimx(k, gt->shape[gt->ndim - 1]), F = ck_dimx(k, wg->shape[1]);
    P("  const %s Tn = %s, D = %s, E = %s, F = %s;\n", k->I, Tn.s, D.s, E.s, F.s);
    ck_loop_open(k, ck_strf("(Tn * E * F + %d) / %d", W - 1, W).s);
    P("    const %s o = t * %d + warp;\n", k->I, W);
    P("    if (o < Tn * E * F) {\n");
    P("      const %s f = o %% F, e = (o / F) %% E, tt = o / (F * E);\n", k->I);
    P("      const float gate = %s;\n", ck_ld(k, 1, gt->dtype, ck_strf("tt * E + e")).s);
    P("      if (gate != 0.0f) {\n");
    P("        float g = 0.0f, u = 0.0f;\n");
    P("        for (%s d = lane; d < D; d += 32) {\n", k->I);
    P("          const float xv = %s;\n", ck_ld(k, 0, x->dtype, ck_strf("tt * D + d")).s);
    P("          g += %s * xv;\n", ck_ld(k, 2, wg->dtype, ck_strf("(e * F + f) * D + d")).s);
    P("          u += %s * xv;\n", ck_ld(k, 3, wu->dtype, ck_strf("(e * F + f) * D + d")).s);
    P("        }\n");
    P("        g = bm_warp_sum(g);\n        u = bm_warp_sum(u);\n");
    str act = ck_unary_expr((bm_op)n->a.act, "g");
    P("        float v = %s * u;\n", act.s);
    P("        if (lane == 0) {\n");
    ck_store(k, "o", "v");
    P("        }\n      }\n    }\n");
  } else {
    const bm_node *h = n->in[0], *gt = n->in[1], *wd = n->in[2];
    k->tasks = ck_task_linear(k->g, n->ndim, n->shape, W);
    int r = h->ndim;
    str Tn = ck_prodx(k, h->shape, 0, r - 2), E = ck_dimx(k, h->shape[r - 2]), F = ck_dimx(k, h->shape[r - 1]),
        D = ck_dimx(k, wd->shape[1]);
    P("  const %s Tn = %s, E = %s, F = %s, D = %s;\n", k->I, Tn.s, E.s, F.s, D.s);
    ck_loop_open(k, ck_strf("(Tn * D + %d) / %d", W - 1, W).s);
    P("    const %s o = t * %d + warp;\n", k->I, W);
    P("    if (o < Tn * D) {\n");
    P("      const %s d = o %% D, tt = o / D;\n", k->I);
    P("      float acc = 0.0f;\n");
    P("      for (%s e = 0; e < E; e++) {\n", k->I);
    P("        const float gate = %s;\n", ck_ld(k, 1, gt->dtype, ck_strf("tt * E + e")).s);
    P("        if (gate == 0.0f) continue;\n");
    P("        float y = 0.0f;\n");
    P("        for (%s f = lane; f < F; f += 32) y += %s * %s;\n", k->I,
      ck_ld(k, 2, wd->dtype, ck_strf("(e * D + d) * F + f")).s, ck_ld(k, 0, h->dtype, ck_strf("(tt * E + e) * F + f")).s);
    P("        acc += gate * bm_warp_sum(y);\n");
    P("      }\n");
    P("      if (lane == 0) {\n");
    ck_store(k, "o", "acc");
    P("      }\n    }\n");
  }
  ck_loop_close(k);
  return NULL;
}

/* ------------------------------------------------------------------ the table */

typedef bm_status (*emit_fn)(ck *k);

static const emit_fn emitters[BM_OP_COUNT] = {
    [BM_OP_NEG] = emit_ew,        [BM_OP_ABS] = emit_ew,         [BM_OP_EXP] = emit_ew,
    [BM_OP_LOG] = emit_ew,        [BM_OP_SQRT] = emit_ew,        [BM_OP_RSQRT] = emit_ew,
    [BM_OP_RECIP] = emit_ew,      [BM_OP_SQUARE] = emit_ew,      [BM_OP_SIN] = emit_ew,
    [BM_OP_COS] = emit_ew,        [BM_OP_TANH] = emit_ew,        [BM_OP_ERF] = emit_ew,
    [BM_OP_SIGMOID] = emit_ew,    [BM_OP_RELU] = emit_ew,        [BM_OP_SILU] = emit_ew,
    [BM_OP_GELU] = emit_ew,       [BM_OP_GELU_TANH] = emit_ew,   [BM_OP_QUICK_GELU] = emit_ew,
    [BM_OP_CAST] = emit_ew,       [BM_OP_ADD] = emit_ew,         [BM_OP_SUB] = emit_ew,
    [BM_OP_MUL] = emit_ew,        [BM_OP_DIV] = emit_ew,         [BM_OP_POW] = emit_ew,
    [BM_OP_MAX] = emit_ew,        [BM_OP_MIN] = emit_ew,         [BM_OP_FUSED] = emit_ew,
    [BM_OP_MATMUL] = emit_matmul, [BM_OP_QMATMUL] = emit_qmatmul, [BM_OP_CONV2D] = emit_conv2d,
    [BM_OP_DEQUANT] = emit_movement, [BM_OP_RESHAPE] = emit_movement, [BM_OP_PERMUTE] = emit_movement,
    [BM_OP_SLICE] = emit_movement, [BM_OP_CONCAT] = emit_movement, [BM_OP_GATHER] = emit_movement,
    [BM_OP_PAD] = emit_movement,  [BM_OP_UPSAMPLE] = emit_movement, [BM_OP_TAKE_ROW] = emit_movement,
    [BM_OP_SUM] = emit_reduce,    [BM_OP_MEAN] = emit_reduce,    [BM_OP_REDUCE_MAX] = emit_reduce,
    [BM_OP_SOFTMAX] = emit_softmax, [BM_OP_LAYER_NORM] = emit_norm, [BM_OP_GROUP_NORM] = emit_norm,
    [BM_OP_RMS_NORM] = emit_norm, [BM_OP_ROPE] = emit_rope,      [BM_OP_ATTENTION] = emit_attention,
    [BM_OP_KV_WRITE] = emit_kv_write, [BM_OP_TOPK_MASK] = emit_topk, [BM_OP_MOE_UP] = emit_moe,
    [BM_OP_MOE_DOWN] = emit_moe, [BM_OP_MATMUL_GLU] = emit_matmul_glu,
    [BM_OP_RMS_MATMUL] = emit_matmul_glu,
    /* sources: no kernel; MOE: lowered by lower_moe */
};
_Static_assert(BM_OP_COUNT == 59, "a new op needs a row in the clike emitter table");

static bool prog_ok(const bm_prog *p, int nin_expected) {
  if (nin_expected >= 0 && p->nin != nin_expected) return false;
  bm_status s = bm_prog_check(p, p->nin, "program");
  bool ok = s == NULL;
  bm_status_free(s);
  return ok;
}

static bool storable(bm_dtype t) {
  return t == BM_DTYPE_F32 || t == BM_DTYPE_F16 || t == BM_DTYPE_BF16 || t == BM_DTYPE_I8 || t == BM_DTYPE_I32 ||
         t == BM_DTYPE_I64;
}

static bool is_movement(bm_op op) {
  return op == BM_OP_RESHAPE || op == BM_OP_PERMUTE || op == BM_OP_SLICE || op == BM_OP_CONCAT ||
         op == BM_OP_GATHER || op == BM_OP_PAD || op == BM_OP_UPSAMPLE || op == BM_OP_TAKE_ROW;
}

int bm_clike_supports(const bm_node *n) {
  if ((unsigned)n->op >= BM_OP_COUNT || !emitters[n->op]) return 0;
  if (n->nin + 1 > 16) return 0; /* bm_gpu_args holds 16 buffers */
  if (is_movement(n->op)) {
    if (n->dtype == BM_DTYPE_I4) return 0;
    for (int i = 0; i < n->nin; i++)
      if (n->in[i]->dtype == BM_DTYPE_I4 && !(n->op == BM_OP_GATHER && i == 1)) return 0;
    if (n->op == BM_OP_TAKE_ROW && n->in[0]->ndim < 2) return 0;
    for (int i = 0; i < n->nin; i++)
      if (n->in[i]->dtype != n->dtype && !storable(n->dtype)) return 0;
    return 1;
  }
  if (n->op == BM_OP_KV_WRITE)
    return n->dtype != BM_DTYPE_I4 && n->in[1]->dtype != BM_DTYPE_I4 &&
           (n->dtype == n->in[1]->dtype || storable(n->dtype));
  if (!storable(n->dtype)) return 0;
  if (n->op == BM_OP_ATTENTION) {
    if (!ck_attention_ok(n)) return 0;
  }
  if (n->op == BM_OP_MATMUL_GLU || n->op == BM_OP_RMS_MATMUL) /* the skinny GEMM's floats (rows: checked by the pass) */
    for (int i = 0; i < n->nin; i++)
      if (n->in[i]->dtype != BM_DTYPE_F32 && n->in[i]->dtype != BM_DTYPE_F16 && n->in[i]->dtype != BM_DTYPE_BF16)
        return 0;
  if (n->op == BM_OP_CONV2D && (!bm_dim_is_static(n->in[1]->shape[2]) || !bm_dim_is_static(n->in[1]->shape[3])))
    return 0;
  if (n->op == BM_OP_CONV2D && n->a.layout != BM_CONV_NCHW && !ck_conv_nhwc_ok(n)) return 0; /* emit_gemm.c */
  if (n->op == BM_OP_FUSED && !prog_ok(&n->a.prog, n->nin)) return 0;
  if ((bm_op_table[n->op].flags & BM_OPF_EPILOGUE) && n->a.prog.n > 0 && !prog_ok(&n->a.prog, -1)) return 0;
  return 1;
}

int bm_clike_supports_in(const bm_clike_lang *L, const bm_graph *g, const bm_node *n) {
  if (!bm_clike_supports(n)) return 0;
  if (n->op == BM_OP_QMATMUL) return ck_qmatmul_keep(g, L, n);
  if (n->op == BM_OP_MATMUL_GLU || n->op == BM_OP_RMS_MATMUL) return ck_skinny_fused_ok(g, L, n);
  /* f16/bf16 head dims above 256 have no tensor-core attention (the scalar
   * kernel: the SD VAE's 512-channel head took 6.3 ms on an H100): ask
   * passes/lower_attention.c for the GEMMs + softmax */
  if (n->op == BM_OP_ATTENTION && L->tensor_cores && n->in[0]->shape[3].add > 256 &&
      (n->in[0]->dtype == BM_DTYPE_F16 || n->in[0]->dtype == BM_DTYPE_BF16))
    return 0;
  return 1;
}

int bm_clike_cuda_supports_in(const bm_graph *g, const bm_node *n) { return bm_clike_supports_in(&bm_clike_cuda, g, n); }

/* ------------------------------------------------------------------ the driver */

static const char *index_type(const bm_graph *g, const bm_node *n) {
  int64_t mx = bm_node_numel_max(g, n);
  for (int i = 0; i < n->nin; i++) {
    int64_t v = bm_node_numel_max(g, n->in[i]);
    if (v < 0 || v > mx) mx = v < 0 ? INT64_MAX : v;
  }
  if (n->op == BM_OP_ATTENTION) { /* B*Hq*Sq*Sk mask coordinates and K/V rows */
    int64_t s = 1;
    for (int d = 0; d < 3; d++) s *= ck_dim_max(g, n->in[0]->shape[d]);
    s *= ck_dim_max(g, n->in[1]->shape[2]);
    if (s > mx) mx = s;
  }
  return mx >= 0 && mx < (1ll << 30) ? "int" : "bm_i64";
}

typedef struct kent {
  uint64_t hash;
  char *body;
  int threads, min_blocks, smem, cluster;
  int index; /* into out->kernels */
} kent;

bm_status bm_clike_emit_module(const bm_clike_lang *L, bm_module *m, bm_clike_out *out) {
  memset(out, 0, sizeof *out);
  bm_sb_puts(&out->src, L->prelude);
  bm_sb_puts(&out->src, "\n");
  bm_sb_puts(&out->src, bm_clike_lib);
  bm_sb_puts(&out->src, "\n");
  kent *seen = NULL;
  int nseen = 0, capseen = 0;
  bm_status s = NULL;
  for (int gi = 0; gi < m->ngraphs && !s; gi++) {
    bm_graph *g = m->graphs[gi];
    for (int i = 0; i < g->nnodes && !s; i++) {
      bm_node *n = g->nodes[i];
      n->kernel = NULL;
      if (!bm_node_needs_kernel(n)) continue;
      emit_fn emit = (unsigned)n->op < BM_OP_COUNT ? emitters[n->op] : NULL;
      if (!emit || !bm_clike_supports(n)) {
        s = bm_status_make(BM_ERR_UNSUPPORTED, "%s backend: function '%s' node %d (%s, %s): not supported", L->name,
                           g->name, n->id, bm_op_name(n->op), bm_dtype_name(n->dtype));
        break;
      }
      bm_sb body = {0};
      ck k = {.b = &body, .g = g, .n = n, .L = L, .I = index_type(g, n), .threads = 256};
      s = emit(&k);
      if (!s && body.oom) s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s backend: kernel source", L->name);
      if (!s && k.decl.oom) s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s backend: kernel source", L->name);
      if (s) {
        bm_sb_free(&body);
        bm_sb_free(&k.decl);
        s = bm_status_wrap(s, "function '%s' node %d (%s)", g->name, n->id, bm_op_name(n->op));
        break;
      }
      if (k.min_blocks < 1) k.min_blocks = 1;
      uint64_t h = XXH3_64bits(body.s, body.len) ^ (uint64_t)k.threads ^ ((uint64_t)k.min_blocks << 32) ^
                   ((uint64_t)k.smem << 40) ^ ((uint64_t)k.cluster << 56);
      int found = -1;
      for (int j = 0; j < nseen && found < 0; j++)
        if (seen[j].hash == h && seen[j].threads == k.threads && seen[j].min_blocks == k.min_blocks &&
            seen[j].smem == k.smem && seen[j].cluster == k.cluster && strcmp(seen[j].body, body.s) == 0)
          found = seen[j].index;
      if (found < 0) {
        char sym[128];
        snprintf(sym, sizeof sym, "bm_k%d_%d_%s", gi, n->id, bm_op_name(n->op));
        if (out->nkernels == out->cap) {
          int cap = out->cap ? 2 * out->cap : 64;
          bm_clike_kernel *nk = realloc(out->kernels, (size_t)cap * sizeof *nk);
          if (!nk) {
            bm_sb_free(&body);
            bm_sb_free(&k.decl);
            s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "kernel table");
            break;
          }
          out->kernels = nk;
          out->cap = cap;
        }
        if (nseen == capseen) {
          int cap = capseen ? 2 * capseen : 64;
          kent *ns = realloc(seen, (size_t)cap * sizeof *ns);
          if (!ns) {
            bm_sb_free(&body);
            bm_sb_free(&k.decl);
            s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "kernel table");
            break;
          }
          seen = ns;
          capseen = cap;
        }
        found = out->nkernels++;
        out->kernels[found] = (bm_clike_kernel){strdup(sym), k.threads, k.smem};
        seen[nseen++] = (kent){h, body.s, k.threads, k.min_blocks, k.smem, k.cluster, found};
        body.s = NULL; /* owned by seen */
        bm_sb_printf(&out->src, "/* %s: function '%s' node %d */\n", sym, g->name, n->id);
        if (k.decl.s) bm_sb_printf(&out->src, "#define BM_KSYM(x) %s##x\n%s", sym, k.decl.s);
        if (k.pdl_in_body) bm_sb_puts(&out->src, "#define BM_PDL_IN_BODY\n");
        if (k.cluster > 1) /* clusters on sm_90a images only (the prelude's BM_KATTR: empty) */
          bm_sb_printf(&out->src,
                       "#if defined(__CUDA_ARCH_FEAT_SM90_ALL)\n#undef BM_KATTR\n#define BM_KATTR __cluster_dims__(%d, 1, 1)\n"
                       "#endif\n",
                       k.cluster);
        bm_sb_printf(&out->src, L->kernel_open, sym, k.threads, k.min_blocks);
        bm_sb_puts(&out->src, seen[nseen - 1].body);
        bm_sb_puts(&out->src, L->kernel_close);
        if (k.cluster > 1) bm_sb_puts(&out->src, "#undef BM_KATTR\n#define BM_KATTR\n");
        if (k.pdl_in_body) bm_sb_puts(&out->src, "#undef BM_PDL_IN_BODY\n");
        if (k.decl.s) bm_sb_puts(&out->src, "#undef BM_KSYM\n");
      }
      bm_sb_free(&body);
      bm_sb_free(&k.decl);
      n->kernel = bm_arena_strdup(m->arena, out->kernels[found].symbol);
      n->tasks = k.tasks;
      n->scratch = 0;
      if (!n->kernel || !out->kernels[found].symbol) s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "kernel name");
    }
  }
  for (int j = 0; j < nseen; j++) free(seen[j].body);
  free(seen);
  if (!s && out->src.oom) s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s backend: source", L->name);
  if (s) bm_clike_out_free(out);
  return s;
}
