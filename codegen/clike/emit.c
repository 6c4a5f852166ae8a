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

#include "clike.h"

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

/* ------------------------------------------------------------------ kernel context */

typedef struct ck {
  bm_sb *b;            /* the kernel body */
  const bm_graph *g;
  const bm_node *n;
  const bm_clike_lang *L;
  const char *I;       /* index type: "int" or "bm_i64" */
  int threads;
  int min_blocks;      /* blocks per multiprocessor for __launch_bounds__ (0: 1) */
  bm_task_expr tasks;
} ck;

#define P(...) bm_sb_printf(k->b, __VA_ARGS__)

/* A small string (dims, offsets, expressions). */
typedef struct str {
  char s[1024];
} str;

static str strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static str strf(const char *fmt, ...) {
  str r;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r.s, sizeof r.s, fmt, ap);
  va_end(ap);
  return r;
}

static int64_t dim_max(const bm_graph *g, bm_dim d) {
  if (bm_dim_is_static(d)) return d.add;
  return (int64_t)d.mul * g->syms[d.sym].max + d.add;
}

/* The value of a dim in the kernel's index type. */
static str dimx(const ck *k, bm_dim d) {
  if (bm_dim_is_static(d)) return strf("%lld", (long long)d.add);
  if (d.mul == 1 && d.add == 0) return strf("((%s)S%d)", k->I, d.sym);
  return strf("((%s)(%d * S%d + %lld))", k->I, d.mul, d.sym, (long long)d.add);
}

/* Product of dims [lo, hi) ("1" if empty). */
static str prodx(const ck *k, const bm_dim *dims, int lo, int hi) {
  str r = strf("1");
  int64_t c = 1;
  bool first = true;
  for (int d = lo; d < hi; d++) {
    if (bm_dim_is_static(dims[d])) {
      c *= dims[d].add;
      continue;
    }
    str x = dimx(k, dims[d]);
    r = first ? strf("%s", x.s) : strf("%s * %s", r.s, x.s);
    first = false;
  }
  if (first) return strf("%lld", (long long)c);
  if (c != 1) r = strf("%s * %lld", r.s, (long long)c);
  return strf("(%s)", r.s);
}

static bool same_dims(const bm_node *a, const bm_node *b) {
  if (a->ndim != b->ndim) return false;
  for (int d = 0; d < a->ndim; d++)
    if (!bm_dim_eq(a->shape[d], b->shape[d])) return false;
  return true;
}

static bool is_single(const bm_node *a) {
  for (int d = 0; d < a->ndim; d++)
    if (!bm_dim_is_one(a->shape[d])) return false;
  return true;
}

/* Offset into input `in` broadcast (right-aligned) to a shape of rank r,
 * given coordinate variables <c>0..<c>{r-1}. */
static str bcast_off(const ck *k, const bm_node *in, int r, const char *c) {
  str acc = strf("0");
  bool any = false;
  for (int td = in->ndim - 1, d = r - 1; td >= 0; td--, d--) {
    if (bm_dim_is_one(in->shape[td])) continue;
    str st = prodx(k, in->shape, td + 1, in->ndim);
    str term = strcmp(st.s, "1") == 0 ? strf("%s%d", c, d) : strf("%s%d * %s", c, d, st.s);
    acc = any ? strf("%s + %s", acc.s, term.s) : term;
    any = true;
  }
  return any ? strf("(%s)", acc.s) : acc;
}

/* Declares <c>0..<c>{r-1} and unravels linear index `idx` over dims. */
static void unravel(ck *k, const char *idx, int r, const bm_dim *dims, const char *c) {
  if (r == 0) return;
  P("      %s %s_r = %s;\n", k->I, c, idx);
  for (int d = r - 1; d >= 0; d--) {
    str dd = dimx(k, dims[d]);
    if (d > 0) {
      P("      const %s %s%d = %s_r %% %s;\n", k->I, c, d, c, dd.s);
      P("      %s_r /= %s;\n", c, dd.s);
    } else {
      P("      const %s %s%d = %s_r;\n", k->I, c, d, c);
    }
  }
}

static str ld(const ck *k, int buf, bm_dtype t, str off) {
  (void)k;
  return strf("bm_ld_%s(bm_buf(%d), %s)", bm_dtype_name(t), buf, off.s);
}

static str ldi(const ck *k, int buf, bm_dtype t, str off) {
  (void)k;
  return strf("bm_ldi_%s(bm_buf(%d), %s)", bm_dtype_name(t), buf, off.s);
}

static str flt(float v) {
  if (isnan(v)) return strf("BM_NAN");
  if (isinf(v)) return strf(v > 0 ? "BM_INF" : "(-BM_INF)");
  return strf("%.8ef", (double)v);
}

static bool is_int_dtype(bm_dtype t) {
  return t == BM_DTYPE_I8 || t == BM_DTYPE_I4 || t == BM_DTYPE_I32 || t == BM_DTYPE_I64;
}

/* The f32 expression of unary op `op` on x / binary op on a, b. */
static str unary_expr(bm_op op, const char *x) {
  switch (op) {
    case BM_OP_NEG: return strf("(-%s)", x);
    case BM_OP_ABS: return strf("fabsf(%s)", x);
    case BM_OP_EXP: return strf("expf(%s)", x);
    case BM_OP_LOG: return strf("logf(%s)", x);
    case BM_OP_SQRT: return strf("sqrtf(%s)", x);
    case BM_OP_RSQRT: return strf("(1.0f / sqrtf(%s))", x);
    case BM_OP_RECIP: return strf("(1.0f / %s)", x);
    case BM_OP_SQUARE: return strf("(%s * %s)", x, x);
    case BM_OP_SIN: return strf("sinf(%s)", x);
    case BM_OP_COS: return strf("cosf(%s)", x);
    case BM_OP_TANH: return strf("tanhf(%s)", x);
    case BM_OP_ERF: return strf("erff(%s)", x);
    case BM_OP_SIGMOID: return strf("bm_sigmoid(%s)", x);
    case BM_OP_RELU: return strf("bm_relu(%s)", x);
    case BM_OP_SILU: return strf("(%s * bm_sigmoid(%s))", x, x);
    case BM_OP_GELU: return strf("bm_gelu(%s)", x);
    case BM_OP_GELU_TANH: return strf("bm_gelu_tanh(%s)", x);
    case BM_OP_QUICK_GELU: return strf("(%s * bm_sigmoid(1.702f * %s))", x, x);
    case BM_OP_CAST: return strf("%s", x);
    default: return strf("BM_NAN");
  }
}

static str binary_expr(bm_op op, const char *a, const char *b) {
  switch (op) {
    case BM_OP_ADD: return strf("(%s + %s)", a, b);
    case BM_OP_SUB: return strf("(%s - %s)", a, b);
    case BM_OP_MUL: return strf("(%s * %s)", a, b);
    case BM_OP_DIV: return strf("(%s / %s)", a, b);
    case BM_OP_POW: return strf("powf(%s, %s)", a, b);
    case BM_OP_MAX: return strf("fmaxf(%s, %s)", a, b);
    case BM_OP_MIN: return strf("fminf(%s, %s)", a, b);
    default: return strf("BM_NAN");
  }
}

/* Emits a program over registers <r>0..<r>{nin-1} (declared by the caller);
 * returns the name of the result register. */
static str emit_prog(ck *k, const bm_prog *p, const char *r, const char *indent) {
  for (int j = 0; j < p->n; j++) {
    const bm_prog_ins *in = &p->ins[j];
    str a = strf("%s%d", r, in->a), e;
    if (bm_op_table[in->op].flags & BM_OPF_UNARY) {
      e = unary_expr((bm_op)in->op, a.s);
    } else {
      str b = (in->flags & BM_PROG_IMM_B) ? flt(in->imm) : strf("%s%d", r, in->b);
      e = binary_expr((bm_op)in->op, a.s, b.s);
    }
    P("%sconst float %s%d = %s;\n", indent, r, p->nin + j, e.s);
  }
  return strf("%s%d", r, p->n ? p->nin + p->n - 1 : 0);
}

/* Applies the node's epilogue (if any) to the f32 variable v, for output
 * element `idx` (linear). */
static void emit_epilogue(ck *k, const char *v, const char *idx) {
  const bm_node *n = k->n;
  const bm_prog *p = &n->a.prog;
  if (!(bm_op_table[n->op].flags & BM_OPF_EPILOGUE) || p->n == 0) return;
  int base = bm_node_base_nin(n), nx = p->nin - 1;
  P("      {\n");
  bool coords = false;
  for (int x = 0; x < nx; x++)
    if (!same_dims(n->in[base + x], n) && !is_single(n->in[base + x])) coords = true;
  if (coords) unravel(k, idx, n->ndim, n->shape, "ec");
  P("      const float er0 = %s;\n", v);
  for (int x = 0; x < nx; x++) {
    const bm_node *in = n->in[base + x];
    str off = same_dims(in, n) ? strf("%s", idx) : is_single(in) ? strf("0") : bcast_off(k, in, n->ndim, "ec");
    str l = ld(k, base + x, in->dtype, off);
    P("      const float er%d = %s;\n", 1 + x, l.s);
  }
  str res = emit_prog(k, p, "er", "      ");
  P("      %s = %s;\n", v, res.s);
  P("      }\n");
}

static void store(ck *k, const char *idx, const char *v) {
  P("      bm_st_%s(bm_out(%d), %s, %s);\n", bm_dtype_name(k->n->dtype), k->n->nin, idx, v);
}

/* ------------------------------------------------------------------ task spaces */

/* tasks = prod_i ceil(dims[i] / divs[i]) as a bm_task_expr: exact when at
 * most one dim is symbolic, else an upper bound (kernels loop over their own
 * exact count, so extra blocks do nothing). */
static bm_task_expr task_grid(const bm_graph *g, int n, const bm_dim *dims, const int64_t *divs) {
  int sym_i = -1;
  for (int i = 0; i < n; i++)
    if (!bm_dim_is_static(dims[i])) {
      sym_i = i;
      break;
    }
  int64_t factor = 1;
  for (int i = 0; i < n; i++) {
    if (i == sym_i) continue;
    int64_t v = dim_max(g, dims[i]);
    factor *= v <= 0 ? 0 : (v + divs[i] - 1) / divs[i];
  }
  if (factor == 0) return (bm_task_expr){-1, 0, 0, 1, 1};
  if (sym_i < 0) return (bm_task_expr){-1, 0, factor, 1, 1};
  return (bm_task_expr){dims[sym_i].sym, dims[sym_i].mul, dims[sym_i].add, divs[sym_i], factor};
}

/* tasks = ceil(prod(dims) / div). */
static bm_task_expr task_linear(const bm_graph *g, int n, const bm_dim *dims, int64_t div) {
  int sym_i = -1;
  for (int i = 0; i < n; i++)
    if (!bm_dim_is_static(dims[i])) {
      sym_i = i;
      break;
    }
  int64_t c = 1;
  for (int i = 0; i < n; i++)
    if (i != sym_i) c *= dim_max(g, dims[i]);
  if (c <= 0) return (bm_task_expr){-1, 0, 0, 1, 1};
  if (sym_i < 0) return (bm_task_expr){-1, 0, (c + div - 1) / div, 1, 1};
  return (bm_task_expr){dims[sym_i].sym, dims[sym_i].mul * c, dims[sym_i].add * c, div, 1};
}

/* for (t over [0, count)) { ... } : the grid-stride loop over tasks */
static void loop_open(ck *k, const char *count) {
  P("  const %s ntask = %s;\n", k->I, count);
  P("  for (%s t = (%s)bid0; t < ntask; t += (%s)nblk) {\n", k->I, k->I, k->I);
}
static void loop_close(ck *k) { P("  }\n"); }

/* ------------------------------------------------------------------ elementwise */

static bm_status emit_ew(ck *k) {
  const bm_node *n = k->n;
  const int T = k->threads = 256;
  k->tasks = task_linear(k->g, n->ndim, n->shape, T);
  str total = prodx(k, n->shape, 0, n->ndim);
  P("  const %s total = %s;\n", k->I, total.s);
  loop_open(k, strf("(total + %d) / %d", T - 1, T).s);
  P("    const %s i = t * %d + tid;\n", k->I, T);
  P("    if (i < total) {\n");
  bool coords = false;
  for (int x = 0; x < n->nin; x++)
    if (!same_dims(n->in[x], n) && !is_single(n->in[x])) coords = true;
  if (coords) unravel(k, "i", n->ndim, n->shape, "c");
  if (n->op == BM_OP_CAST && is_int_dtype(n->dtype) && is_int_dtype(n->in[0]->dtype)) {
    str l = ldi(k, 0, n->in[0]->dtype, strf("i"));
    P("      bm_sti_%s(bm_out(1), i, %s);\n", bm_dtype_name(n->dtype), l.s);
  } else {
    for (int x = 0; x < n->nin; x++) {
      const bm_node *in = n->in[x];
      str off = same_dims(in, n) ? strf("i") : is_single(in) ? strf("0") : bcast_off(k, in, n->ndim, "c");
      str l = ld(k, x, in->dtype, off);
      P("      const float r%d = %s;\n", x, l.s);
    }
    str res;
    if (n->op == BM_OP_FUSED)
      res = emit_prog(k, &n->a.prog, "r", "      ");
    else if (bm_op_table[n->op].flags & BM_OPF_UNARY)
      res = unary_expr(n->op, "r0");
    else
      res = binary_expr(n->op, "r0", "r1");
    P("      float v = %s;\n", res.s);
    store(k, "i", "v");
  }
  P("    }\n");
  loop_close(k);
  return NULL;
}

/* ------------------------------------------------------------------ data movement */

/* out[i] = element `off` of input buffer `buf` (copy_elem semantics). */
static void copy_elem(ck *k, int buf, bm_dtype src, str off, const char *indent) {
  const bm_node *n = k->n;
  bm_dtype dst = n->dtype;
  int o = n->nin;
  if (src == dst) {
    size_t es = bm_dtype_nbytes(dst, 1);
    const char *ty = es == 1 ? "unsigned char" : es == 2 ? "unsigned short" : es == 4 ? "unsigned int" : "bm_i64";
    P("%s((BM_GLOBAL %s *)bm_out(%d))[i] = ((const BM_GLOBAL %s *)bm_buf(%d))[%s];\n", indent, ty, o, ty, buf,
      off.s);
  } else if (is_int_dtype(src) && is_int_dtype(dst)) {
    P("%sbm_sti_%s(bm_out(%d), i, bm_ldi_%s(bm_buf(%d), %s));\n", indent, bm_dtype_name(dst), o,
      bm_dtype_name(src), buf, off.s);
  } else {
    P("%sbm_st_%s(bm_out(%d), i, bm_ld_%s(bm_buf(%d), %s));\n", indent, bm_dtype_name(dst), o,
      bm_dtype_name(src), buf, off.s);
  }
}

/* Row-major stride of axis d of node x. */
static str stride_of(const ck *k, const bm_node *x, int d) { return prodx(k, x->shape, d + 1, x->ndim); }

static bm_status emit_movement(ck *k) {
  const bm_node *n = k->n;
  const int T = k->threads = 256;
  int r = n->ndim;
  k->tasks = task_linear(k->g, r, n->shape, T);
  str total = prodx(k, n->shape, 0, r);
  P("  const %s total = %s;\n", k->I, total.s);
  loop_open(k, strf("(total + %d) / %d", T - 1, T).s);
  P("    const %s i = t * %d + tid;\n", k->I, T);
  P("    if (i < total) {\n");
  const bm_node *x = n->in[0];
  switch (n->op) {
    case BM_OP_RESHAPE: copy_elem(k, 0, x->dtype, strf("i"), "      "); break;
    case BM_OP_PERMUTE: {
      unravel(k, "i", r, n->shape, "c");
      str off = strf("0");
      for (int d = 0; d < r; d++) {
        str st = stride_of(k, x, n->a.perm[d]);
        off = strf("%s + c%d * %s", off.s, d, st.s);
      }
      copy_elem(k, 0, x->dtype, strf("(%s)", off.s), "      ");
      break;
    }
    case BM_OP_SLICE: {
      unravel(k, "i", r, n->shape, "c");
      int ax = n->a.axis;
      str dim = dimx(k, x->shape[ax]);
      str begin = n->a.begin < 0 ? strf("(%s + (%lld))", dim.s, (long long)n->a.begin)
                                 : strf("%lld", (long long)n->a.begin);
      str off = strf("0");
      for (int d = 0; d < r; d++) {
        str st = stride_of(k, x, d);
        if (d == ax)
          off = strf("%s + (%s + c%d * %lld) * %s", off.s, begin.s, d, (long long)n->a.step, st.s);
        else
          off = strf("%s + c%d * %s", off.s, d, st.s);
      }
      copy_elem(k, 0, x->dtype, strf("(%s)", off.s), "      ");
      break;
    }
    case BM_OP_CONCAT: {
      unravel(k, "i", r, n->shape, "c");
      int ax = n->a.axis;
      str start = strf("0");
      for (int j = 0; j < n->nin; j++) {
        const bm_node *in = n->in[j];
        str len = dimx(k, in->shape[ax]);
        str end = strf("(%s + %s)", start.s, len.s);
        if (j < n->nin - 1)
          P("      %sif (c%d < %s) {\n", j ? "else " : "", ax, end.s);
        else
          P("      %s{\n", j ? "else " : "");
        str off = strf("0");
        for (int d = 0; d < r; d++) {
          str st = stride_of(k, in, d);
          if (d == ax)
            off = strf("%s + (c%d - %s) * %s", off.s, d, start.s, st.s);
          else
            off = strf("%s + c%d * %s", off.s, d, st.s);
        }
        copy_elem(k, j, in->dtype, strf("(%s)", off.s), "        ");
        P("      }\n");
        start = end;
      }
      break;
    }
    case BM_OP_GATHER: {
      const bm_node *idx = n->in[1];
      str row = prodx(k, x->shape, 1, x->ndim);
      str V = dimx(k, x->shape[0]);
      str l = ldi(k, 1, idx->dtype, strf("i / %s", row.s));
      P("      bm_i64 v = %s;\n", l.s);
      P("      v = v < 0 ? 0 : v >= (bm_i64)%s ? (bm_i64)%s - 1 : v; /* out of range: clamped */\n", V.s, V.s);
      copy_elem(k, 0, x->dtype, strf("(%s)v * %s + i %% %s", k->I, row.s, row.s), "      ");
      break;
    }
    case BM_OP_PAD: {
      unravel(k, "i", r, n->shape, "c");
      P("      bool inside = true;\n");
      str off = strf("0");
      for (int d = 0; d < r; d++) {
        str xd = dimx(k, x->shape[d]);
        P("      const %s x%d = c%d - %lld;\n", k->I, d, d, (long long)n->a.pads[2 * d]);
        P("      if (x%d < 0 || x%d >= %s) inside = false;\n", d, d, xd.s);
        str st = stride_of(k, x, d);
        off = strf("%s + x%d * %s", off.s, d, st.s);
      }
      P("      if (inside) {\n");
      copy_elem(k, 0, x->dtype, strf("(%s)", off.s), "        ");
      str val = flt(n->a.value);
      P("      } else {\n        bm_st_%s(bm_out(1), i, %s);\n      }\n", bm_dtype_name(n->dtype), val.s);
      break;
    }
    case BM_OP_UPSAMPLE: {
      unravel(k, "i", r, n->shape, "c");
      str off = strf("0");
      for (int d = 0; d < r; d++) {
        str st = stride_of(k, x, d);
        if (d >= r - 2)
          off = strf("%s + (c%d / %d) * %s", off.s, d, n->a.scale, st.s);
        else
          off = strf("%s + c%d * %s", off.s, d, st.s);
      }
      copy_elem(k, 0, x->dtype, strf("(%s)", off.s), "      ");
      break;
    }
    case BM_OP_TAKE_ROW: {
      const bm_node *idx = n->in[1];
      str row = prodx(k, x->shape, 2, x->ndim);
      str S = dimx(k, x->shape[1]);
      P("      const %s b = i / %s;\n", k->I, row.s);
      str l = ldi(k, 1, idx->dtype, strf("b"));
      P("      bm_i64 s = %s;\n", l.s);
      P("      s = s < 0 ? 0 : s >= (bm_i64)%s ? (bm_i64)%s - 1 : s;\n", S.s, S.s);
      copy_elem(k, 0, x->dtype, strf("(b * %s + (%s)s) * %s + i %% %s", S.s, k->I, row.s, row.s), "      ");
      break;
    }
    case BM_OP_DEQUANT: {
      const bm_node *sc = n->in[1];
      str K = dimx(k, x->shape[1]);
      str G = dimx(k, sc->shape[1]);
      P("      const %s row = i / %s, col = i %% %s;\n", k->I, K.s, K.s);
      str q = ld(k, 0, x->dtype, strf("i"));
      str s = ld(k, 1, sc->dtype, strf("row * %s + col / (%s / %s)", G.s, K.s, G.s));
      P("      const float v = %s * %s;\n", q.s, s.s);
      store(k, "i", "v");
      break;
    }
    default: return bm_status_make(BM_ERR_INTERNAL, "clike: %s is not a movement op", bm_op_name(n->op));
  }
  P("    }\n");
  loop_close(k);
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
  k->tasks = task_linear(k->g, nk ? nk : 1, nk ? kept : &one, W);
  str nout = prodx(k, kept, 0, nk), R = prodx(k, red, 0, nr);
  P("  const %s nout = %s, R = %s;\n", k->I, nout.s, R.s);
  P("  const int warp = tid >> 5, lane = tid & 31;\n");
  loop_open(k, strf("(nout + %d) / %d", W - 1, W).s);
  P("    const %s o = t * %d + warp;\n", k->I, W);
  P("    if (o < nout) {\n");
  unravel(k, "o", nk, kept, "k");
  str base = strf("0");
  for (int j = 0; j < nk; j++) {
    str st = stride_of(k, x, kd[j]);
    base = strf("%s + k%d * %s", base.s, j, st.s);
  }
  P("      const %s base = %s;\n", k->I, base.s);
  bool mx = n->op == BM_OP_REDUCE_MAX;
  P("      float acc = %s;\n", mx ? "-BM_INF" : "0.0f");
  P("      for (%s j = lane; j < R; j += 32) {\n", k->I);
  unravel(k, "j", nr, red, "q");
  str off = strf("base");
  for (int j = 0; j < nr; j++) {
    str st = stride_of(k, x, rd[j]);
    off = strf("%s + q%d * %s", off.s, j, st.s);
  }
  str l = ld(k, 0, x->dtype, off);
  P("        const float v = %s;\n", l.s);
  P("        acc = %s;\n", mx ? "bm_max_nan(acc, v)" : "acc + v");
  P("      }\n");
  P("      acc = %s(acc);\n", mx ? "bm_warp_max_nan" : "bm_warp_sum");
  if (n->op == BM_OP_MEAN) P("      acc = R > 0 ? acc / (float)R : BM_NAN;\n");
  P("      if (lane == 0) {\n");
  store(k, "o", "acc");
  P("      }\n    }\n");
  loop_close(k);
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
    loop_open(k, strf("(rows + 7) / 8").s);
    P("    const %s row = t * 8 + warp;\n", k->I);
    P("    if (row < rows) {\n");
    w.sum = "bm_warp_sum(%s)";
    w.max = "bm_warp_max(%s)";
  } else {
    P("  BM_SHARED float red[32];\n");
    P("  const int lane = tid, nl = %d;\n", T);
    P("  const %s rows = %s;\n", k->I, rows.s);
    loop_open(k, "rows");
    P("    const %s row = t;\n", k->I);
    P("    {\n");
    w.sum = "bm_block_sum(%s, red, tid, nl)";
    w.max = "bm_block_max(%s, red, tid, nl)";
  }
  return w;
}

static void row_close(ck *k) {
  P("    }\n");
  loop_close(k);
}

static str red_call(const char *fmt, const char *v) { return strf(fmt, v); }

static bm_status emit_softmax(ck *k) {
  const bm_node *n = k->n, *x = n->in[0];
  int ax = n->a.axis, r = x->ndim;
  str outer = prodx(k, x->shape, 0, ax), L = dimx(k, x->shape[ax]), inner = prodx(k, x->shape, ax + 1, r);
  bm_dim rd[BM_MAX_DIMS];
  int nrd = 0;
  for (int d = 0; d < r; d++)
    if (d != ax) rd[nrd++] = x->shape[d];
  rowk w = row_open(k, strf("(%s * %s)", outer.s, inner.s), dim_max(k->g, x->shape[ax]));
  k->tasks = w.warp ? task_linear(k->g, nrd, rd, 8) : task_linear(k->g, nrd, rd, 1);
  if (nrd == 0) k->tasks = (bm_task_expr){-1, 0, 1, 1, 1};
  P("      const %s L = %s, inner = %s;\n", k->I, L.s, inner.s);
  P("      const %s base = (row / inner) * L * inner + row %% inner;\n", k->I);
  str l = ld(k, 0, x->dtype, strf("base + j * inner"));
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

static bm_status emit_norm(ck *k) {
  const bm_node *n = k->n, *x = n->in[0];
  int r = x->ndim, base_nin = bm_node_base_nin(n);
  bool has_w = base_nin > 1, has_b = base_nin > 2;
  str eps = flt(n->a.eps);
  if (n->op == BM_OP_GROUP_NORM) {
    const int T = k->threads = 256;
    (void)T;
    int64_t G = n->a.groups;
    bm_dim dims[2] = {x->shape[0], bm_dim_c(G)};
    int64_t divs[2] = {1, 1};
    k->tasks = task_grid(k->g, 2, dims, divs);
    str N = dimx(k, x->shape[0]), C = dimx(k, x->shape[1]), S = prodx(k, x->shape, 2, r);
    P("  BM_SHARED float red[32];\n");
    P("  const %s C = %s, S = %s, cg = C / %lld, len = cg * S;\n", k->I, C.s, S.s, (long long)G);
    loop_open(k, strf("%s * %lld", N.s, (long long)G).s);
    P("    const %s g = t %% %lld, base = t * len;\n", k->I, (long long)G);
    str l = ld(k, 0, x->dtype, strf("base + j"));
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
    if (has_w) P("      v *= %s;\n", ld(k, 1, n->in[1]->dtype, strf("ch")).s);
    if (has_b) P("      v += %s;\n", ld(k, 2, n->in[2]->dtype, strf("ch")).s);
    P("      (void)ch;\n");
    emit_epilogue(k, "v", "oi");
    store(k, "oi", "v");
    P("    }\n");
    loop_close(k);
    return NULL;
  }
  /* layer / rms norm over the last dim */
  str D = dimx(k, x->shape[r - 1]), rows = prodx(k, x->shape, 0, r - 1);
  rowk w = row_open(k, rows, dim_max(k->g, x->shape[r - 1]));
  k->tasks = r > 1 ? task_linear(k->g, r - 1, x->shape, w.warp ? 8 : 1) : (bm_task_expr){-1, 0, 1, 1, 1};
  P("      const %s D = %s, base = row * D;\n", k->I, D.s);
  str l = ld(k, 0, x->dtype, strf("base + j"));
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
  P("        const %s oi = base + j;\n", k->I);
  P("        float v = (%s - mean) * rstd;\n", l.s);
  if (has_w) P("        v *= %s;\n", ld(k, 1, n->in[1]->dtype, strf("j")).s);
  if (has_b) P("        v += %s;\n", ld(k, 2, n->in[2]->dtype, strf("j")).s);
  emit_epilogue(k, "v", "oi");
  store(k, "oi", "v");
  P("      }\n");
  row_close(k);
  return NULL;
}

/* ------------------------------------------------------------------ rope */

static bm_status emit_rope(ck *k) {
  const bm_node *n = k->n, *x = n->in[0], *pos = n->in[1], *fr = n->in[2];
  const int T = k->threads = 256;
  k->tasks = task_linear(k->g, 4, x->shape, T);
  int64_t half = fr->shape[0].add;
  str total = prodx(k, x->shape, 0, 4), S = dimx(k, x->shape[1]), H = dimx(k, x->shape[2]),
      D = dimx(k, x->shape[3]);
  P("  const %s total = %s, S = %s, H = %s, D = %s;\n", k->I, total.s, S.s, H.s, D.s);
  loop_open(k, strf("(total + %d) / %d", T - 1, T).s);
  P("    const %s i = t * %d + tid;\n", k->I, T);
  P("    if (i < total) {\n");
  P("      const %s d = i %% D, s = (i / (D * H)) %% S, b = i / (D * H * S);\n", k->I);
  P("      (void)b;\n");
  str lx = ld(k, 0, x->dtype, strf("i"));
  P("      float v;\n");
  P("      if (d >= %lld) {\n        v = %s;\n      } else {\n", (long long)(2 * half), lx.s);
  if (n->a.rope_mode == 0)
    P("        const %s j = d < %lld ? d : d - %lld, ia = j, ib = j + %lld;\n        const bool first = d < %lld;\n",
      k->I, (long long)half, (long long)half, (long long)half, (long long)half);
  else
    P("        const %s j = d >> 1, ia = 2 * j, ib = 2 * j + 1;\n        const bool first = (d & 1) == 0;\n", k->I);
  str lp = ld(k, 1, pos->dtype, pos->ndim == 1 ? strf("s") : strf("b * S + s"));
  str lf = ld(k, 2, fr->dtype, strf("j"));
  str la = ld(k, 0, x->dtype, strf("i - d + ia")), lb = ld(k, 0, x->dtype, strf("i - d + ib"));
  P("        const float ang = %s * %s, c = cosf(ang), sn = sinf(ang);\n", lp.s, lf.s);
  P("        const float a = %s, bb = %s;\n", la.s, lb.s);
  P("        v = first ? a * c - bb * sn : bb * c + a * sn;\n");
  P("      }\n");
  store(k, "i", "v");
  P("    }\n");
  loop_close(k);
  return NULL;
}

/* ------------------------------------------------------------------ GEMM family */

/* A tiled GEMM: for each batch, C (M, N) = A (M, K) @ B (K, N), 64x64 tiles
 * of 256 threads (4x4 outputs each, strided by 16), K in steps of 16 through
 * shared memory, f32 accumulation. The caller emits the declarations of
 * M, N, K, nb and the code below through the callbacks. */
typedef struct gemm {
  /* statements computing a_off/b_off/c_off... for batch `bi` (may be "") */
  str batch_setup;
  /* load expressions / statements: writes float `val` for A(gm, gk), B(gk, gn) */
  void (*load_a)(ck *k, struct gemm *g);
  void (*load_b)(ck *k, struct gemm *g);
  bool a_k_fast, b_k_fast; /* which index is contiguous in memory (coalescing) */
  /* final store of float `v` at (gm, gn) of batch bi */
  void (*store_c)(ck *k, struct gemm *g);
  const bm_node *aux; /* op-specific */
} gemm;

static void emit_gemm(ck *k, gemm *g) {
  k->threads = 256;
  P("  BM_SHARED float As[16][68];\n");
  P("  BM_SHARED float Bs[16][68];\n");
  P("  const %s tm = (M + 63) / 64, tn = (N + 63) / 64;\n", k->I);
  P("  const int tx = tid & 15, ty = tid >> 4;\n");
  loop_open(k, "nb * tm * tn");
  P("    const %s bi = t / (tm * tn), rem = t %% (tm * tn);\n", k->I);
  P("    const %s m0 = (rem / tn) * 64, n0 = (rem %% tn) * 64;\n", k->I);
  P("%s", g->batch_setup.s);
  P("    float acc[4][4];\n");
  P("    for (int a = 0; a < 4; a++) for (int b = 0; b < 4; b++) acc[a][b] = 0.0f;\n");
  P("    for (%s k0 = 0; k0 < K; k0 += 16) {\n", k->I);
  /* A tile: 64 (m) x 16 (k) */
  P("      for (int e = tid; e < 1024; e += 256) {\n");
  if (g->a_k_fast)
    P("        const int mm = e >> 4, kk = e & 15;\n");
  else
    P("        const int mm = e & 63, kk = e >> 6;\n");
  P("        const %s gm = m0 + mm, gk = k0 + kk;\n", k->I);
  P("        float val = 0.0f;\n");
  P("        if (gm < M && gk < K) {\n");
  g->load_a(k, g);
  P("        }\n");
  P("        As[kk][mm] = val;\n");
  P("      }\n");
  /* B tile: 16 (k) x 64 (n) */
  P("      for (int e = tid; e < 1024; e += 256) {\n");
  if (g->b_k_fast)
    P("        const int nn = e >> 4, kk = e & 15;\n");
  else
    P("        const int nn = e & 63, kk = e >> 6;\n");
  P("        const %s gn = n0 + nn, gk = k0 + kk;\n", k->I);
  P("        float val = 0.0f;\n");
  P("        if (gn < N && gk < K) {\n");
  g->load_b(k, g);
  P("        }\n");
  P("        Bs[kk][nn] = val;\n");
  P("      }\n");
  P("      BM_SYNC();\n");
  P("      for (int kk = 0; kk < 16; kk++) {\n");
  P("        float a[4], b[4];\n");
  P("        for (int u = 0; u < 4; u++) { a[u] = As[kk][ty + 16 * u]; b[u] = Bs[kk][tx + 16 * u]; }\n");
  P("        for (int u = 0; u < 4; u++) for (int w = 0; w < 4; w++) acc[u][w] += a[u] * b[w];\n");
  P("      }\n");
  P("      BM_SYNC();\n");
  P("    }\n");
  P("    for (int u = 0; u < 4; u++) for (int w = 0; w < 4; w++) {\n");
  P("      const %s gm = m0 + ty + 16 * u, gn = n0 + tx + 16 * w;\n", k->I);
  P("      if (gm < M && gn < N) {\n");
  P("      float v = acc[u][w];\n");
  g->store_c(k, g);
  P("      }\n");
  P("    }\n");
  loop_close(k);
}

/* The tensor-core GEMM (languages with tensor_cores, f16/bf16 A and B of one
 * dtype): C (M, N) = A (M, K) @ B (K, N) per batch, 128x128 tiles of 256
 * threads (8 warps of 64x32, 2 along M x 4 along N), K in steps of 32
 * through a 3-stage cp.async pipeline (3 x 16 KiB of static shared memory),
 * ldmatrix fragments (.trans for an operand whose M/N index is contiguous),
 * mma.sync m16n8k16 with f32 accumulation; the store applies the epilogue per
 * element. Shared rows are XOR-swizzled by 16-byte chunk so ldmatrix is free
 * of bank conflicts. Needs each operand's contiguous dim static and a
 * multiple of 8 (16-byte chunks never straddle the edge; out-of-range chunks
 * are zero-filled); tc_gemm_ok says when. */
static bool tc_gemm_ok(const bm_clike_lang *L, const bm_node *n) {
  if (!L || !L->tensor_cores || n->op != BM_OP_MATMUL) return false;
  const bm_node *a = n->in[0], *b = n->in[1];
  if (a->dtype != b->dtype || (a->dtype != BM_DTYPE_F16 && a->dtype != BM_DTYPE_BF16)) return false;
  if (a->ndim < 2 || b->ndim < 2) return false;
  bm_dim ac = a->shape[a->ndim - 1], bc = b->shape[b->ndim - 1];
  return bm_dim_is_static(ac) && ac.add % 8 == 0 && ac.add > 0 && bm_dim_is_static(bc) && bc.add % 8 == 0 &&
         bc.add > 0;
}

/* Loads one 128 x 32 operand tile (rows r0.. of R, k0.. of K) into shared
 * memory at byte address `sbase`: k_major = the K index is contiguous. */
static void tc_load(ck *k, int buf, bool k_major, const char *R, const char *r0, const char *off, const char *sbase) {
  const char *I = k->I;
  P("      for (int e = tid; e < 512; e += 256) {\n");
  if (k_major) {
    P("        const int row = e >> 2, c = e & 3;\n");
    P("        const %s gr = %s + row, gk = k0 + c * 8;\n", I, r0);
    P("        const bool ok = gr < %s && gk < K;\n", R);
    P("        const unsigned char *src = bm_buf(%d) + (ok ? (bm_i64)(%s + gr * K + gk) * 2 : 0);\n", buf, off);
    P("        bm_cp_async16(%s + row * 64 + ((c ^ ((row >> 1) & 3)) << 4), src, ok ? 16 : 0);\n", sbase);
  } else {
    P("        const int kr = e >> 4, c = e & 15;\n");
    P("        const %s gk = k0 + kr, gr = %s + c * 8;\n", I, r0);
    P("        const bool ok = gr < %s && gk < K;\n", R);
    P("        const unsigned char *src = bm_buf(%d) + (ok ? (bm_i64)(%s + gk * %s + gr) * 2 : 0);\n", buf, off, R);
    P("        bm_cp_async16(%s + kr * 256 + ((c ^ (kr & 7)) << 4), src, ok ? 16 : 0);\n", sbase);
  }
  P("      }\n");
}

static void emit_gemm_tc(ck *k, gemm *g) {
  const bm_node *n = k->n;
  const char *I = k->I, *mma = n->in[0]->dtype == BM_DTYPE_BF16 ? "bm_mma_bf16" : "bm_mma_f16";
  bool a_km = !n->a.trans_a, b_km = n->a.trans_b;
  k->threads = 256;
  /* one block per multiprocessor: 2 (registers capped at 128) measured the
   * same on an H100 (docs/cuda.md) */
  k->min_blocks = 1;
  P("  __shared__ __align__(128) unsigned char bm_sm[3 * 16384];\n");
  P("  const unsigned int sm0 = bm_smem_addr(bm_sm);\n");
  P("  const int lane = tid & 31, wm = (tid >> 5) >> 2, wn = (tid >> 5) & 3;\n");
  P("  const %s tm = (M + 127) / 128, tn = (N + 127) / 128, ktiles = (K + 31) / 32;\n", I);
  loop_open(k, "nb * tm * tn");
  P("    const %s bi = t / (tm * tn), rem = t %% (tm * tn);\n", I);
  P("    /* groups of 8 M-tiles walk N together (L2 reuse of A and B) */\n");
  P("    const %s grp = rem / (8 * tn), first = grp * 8, gsz = tm - first < 8 ? tm - first : 8;\n", I);
  P("    const %s m0 = (first + (rem %% (8 * tn)) %% gsz) * 128, n0 = ((rem %% (8 * tn)) / gsz) * 128;\n", I);
  P("%s", g->batch_setup.s);
  P("    float acc[4][4][4];\n");
  P("#pragma unroll\n    for (int i = 0; i < 4; i++)\n#pragma unroll\n    for (int j = 0; j < 4; j++)\n"
    "#pragma unroll\n    for (int q = 0; q < 4; q++) acc[i][j][q] = 0.0f;\n");
  /* the stage loader: stage st <- K tile kt */
  bm_sb *saved = k->b;
  bm_sb ld = {0};
  k->b = &ld;
  P("    %s k0 = kt * 32;\n", I);
  P("    const unsigned int sa = sm0 + st * 16384, sb = sa + 8192;\n");
  tc_load(k, 0, a_km, "M", "m0", "a_off", "sa");
  tc_load(k, 1, b_km, "N", "n0", "b_off", "sb");
  k->b = saved;
  P("    for (int s = 0; s < 2; s++) {\n");
  P("      if (s < ktiles) {\n      const %s kt = s; const int st = s;\n  %s      }\n", I, ld.s ? ld.s : "");
  P("      bm_cp_commit();\n    }\n");
  P("    for (%s kt0 = 0; kt0 < ktiles; kt0++) {\n", I);
  P("      bm_cp_wait<1>();\n      BM_SYNC();\n");
  P("      if (kt0 + 2 < ktiles) {\n      const %s kt = kt0 + 2; const int st = (int)(kt %% 3);\n  %s      }\n", I,
    ld.s ? ld.s : "");
  bm_sb_free(&ld);
  P("      bm_cp_commit();\n");
  P("      const unsigned int sa = sm0 + (int)(kt0 %% 3) * 16384, sb = sa + 8192;\n");
  P("#pragma unroll\n      for (int kk = 0; kk < 32; kk += 16) {\n");
  P("        unsigned int af[4][4], bf[4][2];\n");
  P("#pragma unroll\n        for (int mi = 0; mi < 4; mi++) {\n");
  if (a_km) {
    P("          const int row = wm * 64 + mi * 16 + (lane & 15), c = (kk >> 3) + (lane >> 4);\n");
    P("          bm_ldsm_x4(af[mi], sa + row * 64 + ((c ^ ((row >> 1) & 3)) << 4));\n");
  } else {
    P("          const int kr = kk + (lane & 7) + ((lane >> 4) << 3), c = ((wm * 64 + mi * 16) >> 3) + ((lane >> 3) & 1);\n");
    P("          bm_ldsm_x4_t(af[mi], sa + kr * 256 + ((c ^ (kr & 7)) << 4));\n");
  }
  P("        }\n");
  P("#pragma unroll\n        for (int p = 0; p < 2; p++) {\n");
  P("          unsigned int r[4];\n");
  if (b_km) {
    P("          const int nr = wn * 32 + p * 16 + (lane & 7) + ((lane >> 4) << 3), c = (kk >> 3) + ((lane >> 3) & 1);\n");
    P("          bm_ldsm_x4(r, sb + nr * 64 + ((c ^ ((nr >> 1) & 3)) << 4));\n");
  } else {
    P("          const int kr = kk + (lane & 7) + (((lane >> 3) & 1) << 3), c = ((wn * 32 + p * 16) >> 3) + (lane >> 4);\n");
    P("          bm_ldsm_x4_t(r, sb + kr * 256 + ((c ^ (kr & 7)) << 4));\n");
  }
  P("          bf[2 * p][0] = r[0]; bf[2 * p][1] = r[1]; bf[2 * p + 1][0] = r[2]; bf[2 * p + 1][1] = r[3];\n");
  P("        }\n");
  P("#pragma unroll\n        for (int mi = 0; mi < 4; mi++)\n#pragma unroll\n        for (int nj = 0; nj < 4; nj++) "
    "%s(acc[mi][nj], af[mi], bf[nj]);\n", mma);
  P("      }\n");
  P("    }\n");
  P("    bm_cp_wait<0>();\n    BM_SYNC(); /* the next tile reuses the stages */\n");
  P("#pragma unroll\n    for (int mi = 0; mi < 4; mi++)\n#pragma unroll\n    for (int nj = 0; nj < 4; nj++)\n");
  P("#pragma unroll\n    for (int q = 0; q < 4; q++) {\n");
  P("      const %s gm = m0 + wm * 64 + mi * 16 + (lane >> 2) + (q >> 1) * 8;\n", I);
  P("      const %s gn = n0 + wn * 32 + nj * 8 + (lane & 3) * 2 + (q & 1);\n", I);
  P("      if (gm < M && gn < N) {\n");
  P("      float v = acc[mi][nj][q];\n");
  g->store_c(k, g);
  P("      }\n");
  P("    }\n");
  loop_close(k);
}

static void mm_load_a(ck *k, gemm *g) {
  const bm_node *a = k->n->in[0];
  str off = k->n->a.trans_a ? strf("a_off + gk * M + gm") : strf("a_off + gm * K + gk");
  P("          val = %s;\n", ld(k, 0, a->dtype, off).s);
}
static void mm_load_b(ck *k, gemm *g) {
  const bm_node *b = k->n->in[1];
  str off = k->n->a.trans_b ? strf("b_off + gn * K + gk") : strf("b_off + gk * N + gn");
  P("          val = %s;\n", ld(k, 1, b->dtype, off).s);
}
static void mm_store(ck *k, gemm *g) {
  P("      const %s oi = (bi * M + gm) * N + gn;\n", k->I);
  emit_epilogue(k, "v", "oi");
  store(k, "oi", "v");
}

/* Batch offset (in elements of the batch) of operand x of rank rx, whose
 * leading rx-2 dims broadcast to the output's nb dims, for coordinates bc*. */
static str batch_off(ck *k, const bm_node *x, int nbd) {
  bm_node tmp = *x;
  tmp.ndim = x->ndim - 2;
  return bcast_off(k, &tmp, nbd, "bc");
}

static bm_status emit_matmul(ck *k) {
  const bm_node *n = k->n, *a = n->in[0], *b = n->in[1];
  int ro = n->ndim, nbd = ro - 2;
  str M = dimx(k, n->shape[ro - 2]), N = dimx(k, n->shape[ro - 1]);
  str K = dimx(k, n->a.trans_a ? a->shape[a->ndim - 2] : a->shape[a->ndim - 1]);
  str nb = prodx(k, n->shape, 0, nbd);
  P("  const %s M = %s, N = %s, K = %s, nb = %s;\n", k->I, M.s, N.s, K.s, nb.s);
  bool tc = tc_gemm_ok(k->L, n);
  bm_dim dims[BM_MAX_DIMS + 2];
  int64_t divs[BM_MAX_DIMS + 2];
  for (int d = 0; d < nbd; d++) {
    dims[d] = n->shape[d];
    divs[d] = 1;
  }
  dims[nbd] = n->shape[ro - 2];
  divs[nbd] = tc ? 128 : 64;
  dims[nbd + 1] = n->shape[ro - 1];
  divs[nbd + 1] = tc ? 128 : 64;
  k->tasks = task_grid(k->g, nbd + 2, dims, divs);
  bm_sb tmp = {0};
  bm_sb *saved = k->b;
  k->b = &tmp;
  unravel(k, "bi", nbd, n->shape, "bc");
  str ao = batch_off(k, a, nbd), bo = batch_off(k, b, nbd);
  P("      const %s a_off = %s * M * K, b_off = %s * K * N;\n", k->I, ao.s, bo.s);
  k->b = saved;
  gemm g = {0};
  snprintf(g.batch_setup.s, sizeof g.batch_setup.s, "%s", tmp.s ? tmp.s : "");
  bm_sb_free(&tmp);
  g.load_a = mm_load_a;
  g.load_b = mm_load_b;
  g.a_k_fast = !n->a.trans_a;
  g.b_k_fast = n->a.trans_b;
  g.store_c = mm_store;
  if (tc)
    emit_gemm_tc(k, &g);
  else
    emit_gemm(k, &g);
  return NULL;
}

static void qmm_load_a(ck *k, gemm *g) {
  P("          val = %s;\n", ld(k, 0, k->n->in[0]->dtype, strf("gm * K + gk")).s);
}
static void qmm_load_b(ck *k, gemm *g) {
  const bm_node *q = k->n->in[1], *sc = k->n->in[2];
  str G = dimx(k, sc->shape[1]);
  str lq = ld(k, 1, q->dtype, strf("gn * K + gk"));
  str ls = ld(k, 2, sc->dtype, strf("gn * %s + gk / (K / %s)", G.s, G.s));
  P("          val = %s * %s;\n", lq.s, ls.s);
}

static bm_status emit_qmatmul(ck *k) {
  const bm_node *n = k->n, *q = n->in[1];
  int ro = n->ndim;
  str N = dimx(k, q->shape[0]), K = dimx(k, q->shape[1]), M = prodx(k, n->shape, 0, ro - 1);
  P("  const %s M = %s, N = %s, K = %s, nb = 1;\n", k->I, M.s, N.s, K.s);
  bm_dim dims[2];
  int64_t divs[2] = {64, 64};
  /* rows: the product of the leading dims */
  bm_task_expr rows = task_linear(k->g, ro - 1, n->shape, 64);
  dims[0] = n->shape[ro - 1];
  (void)dims;
  (void)divs;
  int64_t tn = (q->shape[0].add + 63) / 64;
  rows.factor *= tn;
  k->tasks = rows;
  gemm g = {0};
  g.load_a = qmm_load_a;
  g.load_b = qmm_load_b;
  g.a_k_fast = true;
  g.b_k_fast = true;
  g.store_c = mm_store;
  emit_gemm(k, &g);
  return NULL;
}

static void conv_load_a(ck *k, gemm *g) {
  P("          val = %s;\n", ld(k, 1, k->n->in[1]->dtype, strf("(grp * M + gm) * K + gk")).s);
}
static void conv_load_b(ck *k, gemm *g) {
  const bm_node *n = k->n, *x = n->in[0], *w = n->in[1];
  int64_t KH = w->shape[2].add, KW = w->shape[3].add;
  P("          const %s c = gk / %lld, kh = (gk / %lld) %% %lld, kw = gk %% %lld;\n", k->I,
    (long long)(KH * KW), (long long)KW, (long long)KH, (long long)KW);
  P("          const %s ih = (gn / OW) * %d - %d + kh * %d, iw = (gn %% OW) * %d - %d + kw * %d;\n", k->I,
    n->a.stride[0], n->a.pad[0], n->a.dilation[0], n->a.stride[1], n->a.pad[1], n->a.dilation[1]);
  str l = ld(k, 0, x->dtype, strf("((img * Cin + grp * Cg + c) * H + ih) * W + iw"));
  P("          if (ih >= 0 && ih < H && iw >= 0 && iw < W) val = %s;\n", l.s);
}
static void conv_store(ck *k, gemm *g) {
  const bm_node *n = k->n;
  P("      const %s oi = ((img * O + grp * M + gm) * OH * OW) + gn;\n", k->I);
  if (bm_node_base_nin(n) >= 3) P("      v += %s;\n", ld(k, 2, n->in[2]->dtype, strf("grp * M + gm")).s);
  emit_epilogue(k, "v", "oi");
  store(k, "oi", "v");
}

static bm_status emit_conv2d(ck *k) {
  const bm_node *n = k->n, *x = n->in[0], *w = n->in[1];
  int64_t G = n->a.groups > 0 ? n->a.groups : 1;
  str Nimg = dimx(k, x->shape[0]), Cin = dimx(k, x->shape[1]), H = dimx(k, x->shape[2]), W = dimx(k, x->shape[3]);
  str O = dimx(k, w->shape[0]), Cg = dimx(k, w->shape[1]), OH = dimx(k, n->shape[2]), OW = dimx(k, n->shape[3]);
  int64_t KHW = w->shape[2].add * w->shape[3].add;
  P("  const %s Cin = %s, H = %s, W = %s, O = %s, Cg = %s, OH = %s, OW = %s;\n", k->I, Cin.s, H.s, W.s, O.s,
    Cg.s, OH.s, OW.s);
  P("  const %s M = O / %lld, N = OH * OW, K = Cg * %lld, nb = %s * %lld;\n", k->I, (long long)G,
    (long long)KHW, Nimg.s, (long long)G);
  /* tasks: images x groups x ceil(M/64) x ceil(OH*OW/64) */
  bm_dim dims[4] = {x->shape[0], bm_dim_c(G), bm_dim_c(w->shape[0].add / G), bm_dim_c(0)};
  /* OH*OW: one symbolic dim at most (stride 1 for symbolic spatial dims) */
  bm_dim oh = n->shape[2], ow = n->shape[3];
  if (bm_dim_is_static(oh) && bm_dim_is_static(ow))
    dims[3] = bm_dim_c(oh.add * ow.add);
  else if (bm_dim_is_static(ow))
    dims[3] = (bm_dim){oh.add * ow.add, oh.sym, (int32_t)(oh.mul * ow.add)};
  else if (bm_dim_is_static(oh))
    dims[3] = (bm_dim){oh.add * ow.add, ow.sym, (int32_t)(ow.mul * oh.add)};
  else
    dims[3] = bm_dim_c(dim_max(k->g, oh) * dim_max(k->g, ow));
  int64_t divs[4] = {1, 1, 64, 64};
  if (!bm_dim_is_static(x->shape[0]) && !bm_dim_is_static(dims[3])) dims[0] = bm_dim_c(dim_max(k->g, x->shape[0]));
  k->tasks = task_grid(k->g, 4, dims, divs);
  gemm g = {0};
  snprintf(g.batch_setup.s, sizeof g.batch_setup.s,
           "    const %s img = bi / %lld, grp = bi %% %lld;\n", k->I, (long long)G, (long long)G);
  g.load_a = conv_load_a;
  g.load_b = conv_load_b;
  g.a_k_fast = true;
  g.b_k_fast = false;
  g.store_c = conv_store;
  emit_gemm(k, &g);
  return NULL;
}

/* ------------------------------------------------------------------ attention */

/* Attention tile sizes for head dims D, Dv (static): keys per tile, and the
 * static shared memory; 0 if unsupported. */
static int attn_kt(int64_t D, int64_t Dv, int64_t *smem) {
  if (D < 1 || Dv < 1 || D > 256 || Dv > 256) return 0;
  int kt = (D <= 128 && Dv <= 128) ? 32 : 16;
  *smem = 4 * (8 * D + kt * (D + 1) + kt * Dv);
  return *smem <= 48 * 1024 ? kt : 0;
}

static bm_status emit_attention(ck *k) {
  const bm_node *n = k->n, *q = n->in[0], *kk = n->in[1], *v = n->in[2];
  int at = 3, mi = -1, li = -1;
  if (n->a.attn_flags & BM_ATTN_HAS_MASK) mi = at++;
  if (n->a.attn_flags & BM_ATTN_HAS_KV_LEN) li = at++;
  int64_t D = q->shape[3].add, Dv = v->shape[3].add, smem;
  int KT = attn_kt(D, Dv, &smem);
  if (!KT) return bm_status_make(BM_ERR_UNSUPPORTED, "attention head dims %lld/%lld", (long long)D, (long long)Dv);
  int DPL = (int)((Dv + 31) / 32);
  k->threads = 256;
  bm_dim dims[3] = {q->shape[0], q->shape[1], q->shape[2]};
  int64_t divs[3] = {1, 1, 8};
  k->tasks = task_grid(k->g, 3, dims, divs);
  float scale = n->a.attn_scale != 0.0f ? n->a.attn_scale : 1.0f / sqrtf((float)D);
  str B = dimx(k, q->shape[0]), Hq = dimx(k, q->shape[1]), Sq = dimx(k, q->shape[2]), Hkv = dimx(k, kk->shape[1]),
      Sk = dimx(k, kk->shape[2]);
  P("  BM_SHARED float qs[8][%lld];\n", (long long)D);
  P("  BM_SHARED float ks[%d][%lld];\n", KT, (long long)D + 1);
  P("  BM_SHARED float vs[%d][%lld];\n", KT, (long long)Dv);
  P("  const %s B = %s, Hq = %s, Sq = %s, Hkv = %s, Sk = %s;\n", k->I, B.s, Hq.s, Sq.s, Hkv.s, Sk.s);
  P("  const int warp = tid >> 5, lane = tid & 31;\n");
  P("  const %s nqt = (Sq + 7) / 8;\n", k->I);
  loop_open(k, "B * Hq * nqt");
  P("    const %s qt = t %% nqt, bh = t / nqt, h = bh %% Hq, b = bh / Hq, hk = h / (Hq / Hkv);\n", k->I);
  if (li >= 0) {
    str l = ldi(k, li, n->in[li]->dtype, strf("b"));
    P("    bm_i64 len_ = %s;\n", l.s);
    P("    const %s len = len_ < 0 ? 0 : len_ > (bm_i64)Sk ? Sk : (%s)len_;\n", k->I, k->I);
  } else {
    P("    const %s len = Sk;\n", k->I);
  }
  P("    const %s off = len - Sq, i = qt * 8 + warp;\n", k->I);
  P("    const bool row_ok = i < Sq;\n");
  P("    BM_SYNC();\n");
  str lq = ld(k, 0, q->dtype, strf("((b * Hq + h) * Sq + i) * %lld + e", (long long)D));
  str sc = flt(scale);
  P("    for (int e = lane; e < %lld; e += 32) qs[warp][e] = row_ok ? %s * %s : 0.0f;\n", (long long)D, lq.s, sc.s);
  P("    const %s i_last = (qt * 8 + 7 < Sq ? qt * 8 + 7 : Sq - 1);\n", k->I);
  P("    %s kend = len;\n", k->I);
  if (n->a.causal) P("    if (i_last + off + 1 < kend) kend = i_last + off + 1;\n");
  P("    %s kbeg = 0;\n", k->I);
  if (n->a.window > 0) {
    P("    kbeg = qt * 8 + off - %d + 1;\n", n->a.window);
    P("    if (kbeg < 0) kbeg = 0;\n");
    P("    kbeg = kbeg / %d * %d;\n", KT, KT);
  }
  P("    float mrow = -BM_INF, lrow = 0.0f, acc[%d];\n", DPL);
  P("    for (int u = 0; u < %d; u++) acc[u] = 0.0f;\n", DPL);
  P("    const %s kvb = (b * Hkv + hk) * Sk;\n", k->I);
  P("    for (%s j0 = kbeg; j0 < kend; j0 += %d) {\n", k->I, KT);
  P("      BM_SYNC();\n");
  str lk = ld(k, 1, kk->dtype, strf("(kvb + j) * %lld + dd", (long long)D));
  str lv = ld(k, 2, v->dtype, strf("(kvb + j) * %lld + dd", (long long)Dv));
  P("      for (int e = tid; e < %lld; e += 256) {\n", (long long)(KT * D));
  P("        const int jj = e / %lld, dd = e %% %lld;\n        const %s j = j0 + jj;\n", (long long)D, (long long)D,
    k->I);
  P("        ks[jj][dd] = j < Sk ? %s : 0.0f;\n      }\n", lk.s);
  P("      for (int e = tid; e < %lld; e += 256) {\n", (long long)(KT * Dv));
  P("        const int jj = e / %lld, dd = e %% %lld;\n        const %s j = j0 + jj;\n", (long long)Dv,
    (long long)Dv, k->I);
  P("        vs[jj][dd] = j < Sk ? %s : 0.0f;\n      }\n", lv.s);
  P("      BM_SYNC();\n");
  P("      if (row_ok) {\n");
  P("        float s = -BM_INF;\n        bool ok = false;\n");
  P("        if (lane < %d) {\n", KT);
  P("          const %s j = j0 + lane;\n", k->I);
  P("          ok = j < len;\n");
  if (n->a.causal) P("          ok = ok && j <= i + off;\n");
  if (n->a.window > 0) P("          ok = ok && j > i + off - %d;\n", n->a.window);
  P("          if (ok) {\n            float d = 0.0f;\n");
  P("            for (int e = 0; e < %lld; e++) d += qs[warp][e] * ks[lane][e];\n", (long long)D);
  if (n->a.softcap > 0.0f) {
    str cap = flt(n->a.softcap);
    P("            d = %s * tanhf(d / %s);\n", cap.s, cap.s);
  }
  if (mi >= 0) {
    const bm_node *m = n->in[mi];
    /* broadcast strides of the mask against (B, Hq, Sq, Sk) with coords b, h, i, j */
    P("            const %s mc0 = b, mc1 = h, mc2 = i, mc3 = j;\n", k->I);
    str off = bcast_off(k, m, 4, "mc");
    P("            d += %s;\n", ld(k, mi, m->dtype, off).s);
  }
  P("            s = d;\n          }\n        }\n");
  P("        const float mnew = fmaxf(mrow, bm_warp_max(s));\n");
  P("        if (mnew != -BM_INF) {\n");
  P("          const float p = ok ? expf(s - mnew) : 0.0f, corr = expf(mrow - mnew);\n");
  P("          lrow = lrow * corr + bm_warp_sum(p);\n");
  P("          for (int u = 0; u < %d; u++) acc[u] *= corr;\n", DPL);
  P("          for (int jj = 0; jj < %d; jj++) {\n", KT);
  P("            const float pj = BM_SHFL(p, jj);\n");
  P("            for (int u = 0; u < %d; u++) {\n", DPL);
  P("              const int dd = lane + 32 * u;\n");
  P("              if (dd < %lld) acc[u] += pj * vs[jj][dd];\n", (long long)Dv);
  P("            }\n          }\n");
  P("          mrow = mnew;\n        }\n      }\n    }\n");
  P("    if (row_ok) {\n");
  P("      for (int u = 0; u < %d; u++) {\n", DPL);
  P("        const int dd = lane + 32 * u;\n");
  P("        if (dd < %lld) {\n", (long long)Dv);
  P("      const %s oi = ((b * Hq + h) * Sq + i) * %lld + dd;\n", k->I, (long long)Dv);
  P("      float v = lrow > 0.0f ? acc[u] / lrow : 0.0f;\n");
  emit_epilogue(k, "v", "oi");
  store(k, "oi", "v");
  P("        }\n      }\n    }\n");
  loop_close(k);
  return NULL;
}

/* ------------------------------------------------------------------ LLM ops */

static bm_status emit_kv_write(ck *k) {
  const bm_node *n = k->n, *c = n->in[0], *rows = n->in[1], *pos = n->in[2];
  const int T = k->threads = 256;
  k->tasks = task_linear(k->g, 4, rows->shape, T);
  str total = prodx(k, rows->shape, 0, 4), H = dimx(k, rows->shape[1]), S = dimx(k, rows->shape[2]),
      D = dimx(k, rows->shape[3]), L = dimx(k, c->shape[2]);
  P("  const %s total = %s, H = %s, S = %s, D = %s, L = %s;\n", k->I, total.s, H.s, S.s, D.s, L.s);
  loop_open(k, strf("(total + %d) / %d", T - 1, T).s);
  P("    const %s e = t * %d + tid;\n", k->I, T);
  P("    if (e < total) {\n");
  P("      const %s d = e %% D, s = (e / D) %% S, bh = e / (D * S), b = bh / H;\n", k->I);
  str lp = ldi(k, 2, pos->dtype, strf("b"));
  P("      const bm_i64 p0 = %s;\n", lp.s);
  P("      if (!(p0 > (bm_i64)L || p0 + s < 0 || p0 + s >= (bm_i64)L)) {\n");
  P("        const %s i = (bh * L + (%s)p0 + s) * D + d;\n", k->I, k->I);
  copy_elem(k, 1, rows->dtype, strf("e"), "        ");
  P("      }\n    }\n");
  loop_close(k);
  return NULL;
}

static bm_status emit_topk(ck *k) {
  const bm_node *n = k->n, *x = n->in[0];
  const int T = k->threads = 256;
  int r = x->ndim;
  k->tasks = r > 1 ? task_linear(k->g, r - 1, x->shape, 1) : (bm_task_expr){-1, 0, 1, 1, 1};
  str N = dimx(k, x->shape[r - 1]), rows = prodx(k, x->shape, 0, r - 1);
  str l = ld(k, 0, x->dtype, strf("base + j"));
  str fill = flt(n->a.fill);
  const char *dt = bm_dtype_name(n->dtype);
  P("  BM_SHARED int redi[32];\n");
  P("  const %s N = %s, Kk = %d;\n", k->I, N.s, n->a.topk);
  loop_open(k, rows.s);
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
  loop_close(k);
  return NULL;
}

static bm_status emit_moe(ck *k) {
  const bm_node *n = k->n;
  const int T = k->threads = 256, W = T / 32;
  P("  const int warp = tid >> 5, lane = tid & 31;\n");
  if (n->op == BM_OP_MOE_UP) {
    const bm_node *x = n->in[0], *gt = n->in[1], *wg = n->in[2], *wu = n->in[3];
    k->tasks = task_linear(k->g, n->ndim, n->shape, W);
    str Tn = prodx(k, x->shape, 0, x->ndim - 1), D = dimx(k, x->shape[x->ndim - 1]),
        E = dimx(k, gt->shape[gt->ndim - 1]), F = dimx(k, wg->shape[1]);
    P("  const %s Tn = %s, D = %s, E = %s, F = %s;\n", k->I, Tn.s, D.s, E.s, F.s);
    loop_open(k, strf("(Tn * E * F + %d) / %d", W - 1, W).s);
    P("    const %s o = t * %d + warp;\n", k->I, W);
    P("    if (o < Tn * E * F) {\n");
    P("      const %s f = o %% F, e = (o / F) %% E, tt = o / (F * E);\n", k->I);
    P("      const float gate = %s;\n", ld(k, 1, gt->dtype, strf("tt * E + e")).s);
    P("      if (gate != 0.0f) {\n");
    P("        float g = 0.0f, u = 0.0f;\n");
    P("        for (%s d = lane; d < D; d += 32) {\n", k->I);
    P("          const float xv = %s;\n", ld(k, 0, x->dtype, strf("tt * D + d")).s);
    P("          g += %s * xv;\n", ld(k, 2, wg->dtype, strf("(e * F + f) * D + d")).s);
    P("          u += %s * xv;\n", ld(k, 3, wu->dtype, strf("(e * F + f) * D + d")).s);
    P("        }\n");
    P("        g = bm_warp_sum(g);\n        u = bm_warp_sum(u);\n");
    str act = unary_expr((bm_op)n->a.act, "g");
    P("        float v = %s * u;\n", act.s);
    P("        if (lane == 0) {\n");
    store(k, "o", "v");
    P("        }\n      }\n    }\n");
  } else {
    const bm_node *h = n->in[0], *gt = n->in[1], *wd = n->in[2];
    k->tasks = task_linear(k->g, n->ndim, n->shape, W);
    int r = h->ndim;
    str Tn = prodx(k, h->shape, 0, r - 2), E = dimx(k, h->shape[r - 2]), F = dimx(k, h->shape[r - 1]),
        D = dimx(k, wd->shape[1]);
    P("  const %s Tn = %s, E = %s, F = %s, D = %s;\n", k->I, Tn.s, E.s, F.s, D.s);
    loop_open(k, strf("(Tn * D + %d) / %d", W - 1, W).s);
    P("    const %s o = t * %d + warp;\n", k->I, W);
    P("    if (o < Tn * D) {\n");
    P("      const %s d = o %% D, tt = o / D;\n", k->I);
    P("      float acc = 0.0f;\n");
    P("      for (%s e = 0; e < E; e++) {\n", k->I);
    P("        const float gate = %s;\n", ld(k, 1, gt->dtype, strf("tt * E + e")).s);
    P("        if (gate == 0.0f) continue;\n");
    P("        float y = 0.0f;\n");
    P("        for (%s f = lane; f < F; f += 32) y += %s * %s;\n", k->I,
      ld(k, 2, wd->dtype, strf("(e * D + d) * F + f")).s, ld(k, 0, h->dtype, strf("(tt * E + e) * F + f")).s);
    P("        acc += gate * bm_warp_sum(y);\n");
    P("      }\n");
    P("      if (lane == 0) {\n");
    store(k, "o", "acc");
    P("      }\n    }\n");
  }
  loop_close(k);
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
    [BM_OP_MOE_DOWN] = emit_moe,
    /* sources: no kernel; MOE: lowered by lower_moe */
};
_Static_assert(BM_OP_COUNT == 57, "a new op needs a row in the clike emitter table");

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
    const bm_node *q = n->in[0], *v = n->in[2];
    int64_t smem;
    if (!bm_dim_is_static(q->shape[3]) || !bm_dim_is_static(v->shape[3])) return 0;
    if (!attn_kt(q->shape[3].add, v->shape[3].add, &smem)) return 0;
  }
  if (n->op == BM_OP_CONV2D && (!bm_dim_is_static(n->in[1]->shape[2]) || !bm_dim_is_static(n->in[1]->shape[3])))
    return 0;
  if (n->op == BM_OP_FUSED && !prog_ok(&n->a.prog, n->nin)) return 0;
  if ((bm_op_table[n->op].flags & BM_OPF_EPILOGUE) && n->a.prog.n > 0 && !prog_ok(&n->a.prog, -1)) return 0;
  return 1;
}

/* ------------------------------------------------------------------ the driver */

static const char *index_type(const bm_graph *g, const bm_node *n) {
  int64_t mx = bm_node_numel_max(g, n);
  for (int i = 0; i < n->nin; i++) {
    int64_t v = bm_node_numel_max(g, n->in[i]);
    if (v < 0 || v > mx) mx = v < 0 ? INT64_MAX : v;
  }
  if (n->op == BM_OP_ATTENTION) { /* B*Hq*Sq*Sk mask coordinates and K/V rows */
    int64_t s = 1;
    for (int d = 0; d < 3; d++) s *= dim_max(g, n->in[0]->shape[d]);
    s *= dim_max(g, n->in[1]->shape[2]);
    if (s > mx) mx = s;
  }
  return mx >= 0 && mx < (1ll << 30) ? "int" : "bm_i64";
}

typedef struct kent {
  uint64_t hash;
  char *body;
  int threads, min_blocks;
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
      if (s) {
        bm_sb_free(&body);
        s = bm_status_wrap(s, "function '%s' node %d (%s)", g->name, n->id, bm_op_name(n->op));
        break;
      }
      if (k.min_blocks < 1) k.min_blocks = 1;
      uint64_t h = XXH3_64bits(body.s, body.len) ^ (uint64_t)k.threads ^ ((uint64_t)k.min_blocks << 32);
      int found = -1;
      for (int j = 0; j < nseen && found < 0; j++)
        if (seen[j].hash == h && seen[j].threads == k.threads && seen[j].min_blocks == k.min_blocks && strcmp(seen[j].body, body.s) == 0)
          found = seen[j].index;
      if (found < 0) {
        char sym[128];
        snprintf(sym, sizeof sym, "bm_k%d_%d_%s", gi, n->id, bm_op_name(n->op));
        if (out->nkernels == out->cap) {
          int cap = out->cap ? 2 * out->cap : 64;
          bm_clike_kernel *nk = realloc(out->kernels, (size_t)cap * sizeof *nk);
          if (!nk) {
            bm_sb_free(&body);
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
            s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "kernel table");
            break;
          }
          seen = ns;
          capseen = cap;
        }
        found = out->nkernels++;
        out->kernels[found] = (bm_clike_kernel){strdup(sym), k.threads, 0};
        seen[nseen++] = (kent){h, body.s, k.threads, k.min_blocks, found};
        body.s = NULL; /* owned by seen */
        bm_sb_printf(&out->src, "/* %s: function '%s' node %d */\n", sym, g->name, n->id);
        bm_sb_printf(&out->src, L->kernel_open, sym, k.threads, k.min_blocks);
        bm_sb_puts(&out->src, seen[nseen - 1].body);
        bm_sb_puts(&out->src, L->kernel_close);
      }
      bm_sb_free(&body);
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
