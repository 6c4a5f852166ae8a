/* shape.c - shape and dtype inference: one function per op family, named in
 * ops.def, plus the checks every node gets (arity, epilogue programs, output
 * dims). Errors name the op, the node and the shapes involved. */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ir.h"

#define SHAPE_BUF 512
#define MAX_PAD ((int64_t)1 << 30)    /* bounds on attributes, so dim arithmetic cannot overflow */
#define MAX_DIM_VALUE ((int64_t)1 << 48)

typedef bm_status (*shape_fn)(bm_graph *g, bm_node *n);

/* ------------------------------------------------------------------ helpers */

/* "matmul %3: <message>" (with the node's name if it has one). */
static bm_status fail(const bm_graph *g, const bm_node *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bm_status fail(const bm_graph *g, const bm_node *n, const char *fmt, ...) {
  char msg[900];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const char *op = (unsigned)n->op < BM_OP_COUNT ? bm_op_name(n->op) : "?";
  if (n->name)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s %%%d (\"%.100s\"): %s", op, n->id, n->name,
                          msg);
  return bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s %%%d: %s", op, n->id, msg);
}

#define SH(x, buf) bm_shape_str(g, (x)->ndim, (x)->shape, buf, sizeof buf)

static bool is_float(bm_dtype t) {
  return t == BM_DTYPE_F32 || t == BM_DTYPE_F16 || t == BM_DTYPE_BF16;
}
static bool is_int(bm_dtype t) { return t == BM_DTYPE_I32 || t == BM_DTYPE_I64; }
static const char *dt(bm_dtype t) { return bm_dtype_name(t); }

/* A well-formed dim: static >= 1, or mul >= 1 times a declared symbol. */
static bool dim_ok(const bm_graph *g, bm_dim d) {
  if (d.sym < 0) return d.mul == 0 && d.add >= 1 && d.add <= MAX_DIM_VALUE;
  if (d.sym >= g->nsyms || d.mul < 1 || d.add < -MAX_DIM_VALUE || d.add > MAX_DIM_VALUE) return false;
  int64_t v = (int64_t)d.mul * g->syms[d.sym].max + d.add;
  return v >= 1;
}

/* Broadcasts a and b (numpy rules, right-aligned); dims broadcast if equal
 * or one is a static 1. Returns false if they do not. */
static bool broadcast(int na, const bm_dim *a, int nb, const bm_dim *b, int *no, bm_dim *o) {
  int n = na > nb ? na : nb;
  bm_dim tmp[BM_MAX_DIMS];
  for (int i = 0; i < n; i++) {
    int ia = i - (n - na), ib = i - (n - nb);
    bm_dim da = ia >= 0 ? a[ia] : bm_dim_c(1), db = ib >= 0 ? b[ib] : bm_dim_c(1);
    if (bm_dim_eq(da, db))
      tmp[i] = da;
    else if (bm_dim_is_one(da))
      tmp[i] = db;
    else if (bm_dim_is_one(db))
      tmp[i] = da;
    else
      return false;
  }
  *no = n;
  memcpy(o, tmp, (size_t)n * sizeof *o);
  return true;
}

/* True if x broadcasts to exactly the shape (n, s). */
static bool broadcasts_to(const bm_node *x, int n, const bm_dim *s) {
  int no;
  bm_dim o[BM_MAX_DIMS];
  if (x->ndim > n || !broadcast(x->ndim, x->shape, n, s, &no, o)) return false;
  for (int i = 0; i < n; i++)
    if (!bm_dim_eq(o[i], s[i])) return false;
  return true;
}

/* a + b for dims that stay affine in one symbol; false otherwise. */
static bool dim_add(bm_dim a, bm_dim b, bm_dim *out) {
  bool sa = bm_dim_is_static(a), sb = bm_dim_is_static(b);
  if (!sa && !sb && a.sym != b.sym) return false;
  bm_dim r = sa ? b : a;
  r.add = a.add + b.add; /* adds are bounded by MAX_DIM_VALUE */
  if (!sa && !sb) {
    int64_t m = (int64_t)a.mul + b.mul;
    if (m > INT32_MAX) return false;
    r.mul = (int32_t)m;
  }
  if (sa && sb) r = bm_dim_c(a.add + b.add);
  *out = r;
  return true;
}

static bool is_single_f32_const(const bm_node *x) {
  if (x->op != BM_OP_CONST || x->dtype != BM_DTYPE_F32) return false;
  for (int i = 0; i < x->ndim; i++)
    if (!bm_dim_is_one(x->shape[i])) return false;
  return true;
}

static void set_out(bm_node *n, bm_dtype t, int ndim, const bm_dim *shape) {
  n->dtype = t;
  n->ndim = ndim;
  memmove(n->shape, shape, (size_t)ndim * sizeof *shape);
  for (int i = ndim; i < BM_MAX_DIMS; i++) n->shape[i] = (bm_dim){0, 0, 0};
}

static bm_status need_float(const bm_graph *g, const bm_node *n, const char *what, const bm_node *x) {
  if (is_float(x->dtype)) return NULL;
  return fail(g, n, "%s must be f32, f16 or bf16, got %s", what, dt(x->dtype));
}

/* Normalizes an axis in place against rank nd. */
static bm_status norm_axis(const bm_graph *g, const bm_node *n, int32_t *axis, int nd) {
  int64_t a = *axis;
  if (a < 0) a += nd;
  if (a < 0 || a >= nd) return fail(g, n, "axis %d out of range for rank %d", (int)*axis, nd);
  *axis = (int32_t)a;
  return NULL;
}

bm_status bm_prog_check(const bm_prog *p, int nin, const char *what) {
#define PFAIL(...) bm_status_make(BM_ERR_INVALID_ARGUMENT, __VA_ARGS__)
  if (p->n > BM_MAX_PROG) return PFAIL("%s has %d instructions (max %d)", what, p->n, BM_MAX_PROG);
  if (nin < 1 || nin > BM_MAX_IN) return PFAIL("%s reads %d inputs (1..%d)", what, nin, BM_MAX_IN);
  for (int j = 0; j < p->n; j++) {
    const bm_prog_ins *in = &p->ins[j];
    if (in->op >= BM_OP_COUNT) return PFAIL("%s instruction %d: bad op %d", what, j, in->op);
    unsigned fl = bm_op_table[in->op].flags;
    bool unary = (fl & BM_OPF_UNARY) != 0, binary = (fl & BM_OPF_BINARY) != 0;
    if (!(fl & BM_OPF_EW) || !(unary || binary) || in->op == BM_OP_CAST)
      return PFAIL("%s instruction %d: '%s' is not an elementwise unary or binary op", what, j,
                   bm_op_name(in->op));
    if (in->flags & ~BM_PROG_IMM_B) return PFAIL("%s instruction %d: bad flags 0x%x", what, j, in->flags);
    bool imm = (in->flags & BM_PROG_IMM_B) != 0;
    float zero = 0.0f;
    if ((unary && (imm || in->b != 0 || memcmp(&in->imm, &zero, sizeof zero) != 0)) ||
        (binary && !imm && memcmp(&in->imm, &zero, sizeof zero) != 0) || (binary && imm && in->b != 0))
      return PFAIL("%s instruction %d: unused operand fields of '%s' must be zero", what, j,
                   bm_op_name(in->op));
    int nreg = nin + j;
    if (in->a >= nreg)
      return PFAIL("%s instruction %d reads r%d, only r0..r%d exist", what, j, in->a, nreg - 1);
    if (binary && !imm && in->b >= nreg)
      return PFAIL("%s instruction %d reads r%d, only r0..r%d exist", what, j, in->b, nreg - 1);
  }
  return NULL;
#undef PFAIL
}

/* bm_prog_check with the node named in the message. */
static bm_status check_prog(const bm_graph *g, const bm_node *n, const bm_prog *p, int nin,
                            const char *what) {
  bm_status s = bm_prog_check(p, nin, what);
  if (!s) return NULL;
  bm_status r = fail(g, n, "%s", bm_status_message(s));
  bm_status_free(s);
  return r;
}

/* ------------------------------------------------------------------ sources */

static bm_status shape_source(bm_graph *g, bm_node *n) {
  if ((unsigned)n->dtype >= BM_DTYPE_COUNT || n->ndim < 0)
    return fail(g, n, "needs a dtype and shape (use bm_node_make_typed)");
  if (n->ndim > BM_MAX_DIMS) return fail(g, n, "rank %d exceeds %d", n->ndim, BM_MAX_DIMS);
  for (int i = 0; i < n->ndim; i++) {
    bm_dim d = n->shape[i];
    if (!bm_dim_is_static(d) && n->op != BM_OP_INPUT) {
      char b[SHAPE_BUF];
      return fail(g, n, "shape %s must be static", SH(n, b));
    }
    if (bm_dim_is_static(d)) n->shape[i] = bm_dim_c(d.add); /* canonical form */
    if (!dim_ok(g, n->shape[i])) {
      char b[SHAPE_BUF];
      return fail(g, n, "dim %d of %s is invalid (static dims must be >= 1, symbols declared)", i,
                  SH(n, b));
    }
  }
  return NULL;
}

/* ------------------------------------------------------------------ elementwise */

static bm_status shape_unary(bm_graph *g, bm_node *n) {
  bm_node *x = n->in[0];
  if (n->op == BM_OP_CAST) {
    if ((unsigned)n->dtype >= BM_DTYPE_COUNT)
      return fail(g, n, "needs a target dtype (use bm_cast or bm_node_make_typed)");
    if (x->dtype == BM_DTYPE_I4 || n->dtype == BM_DTYPE_I4)
      return fail(g, n, "cannot cast %s to %s (i4 is only read by dequant/qmatmul)", dt(x->dtype),
                  dt(n->dtype));
    set_out(n, n->dtype, x->ndim, x->shape);
    return NULL;
  }
  BM_RETURN_IF_ERROR(need_float(g, n, "input", x));
  if (n->op == BM_OP_SOFTMAX) {
    if (x->ndim < 1) return fail(g, n, "input must have rank >= 1");
    BM_RETURN_IF_ERROR(norm_axis(g, n, &n->a.axis, x->ndim));
  }
  set_out(n, x->dtype, x->ndim, x->shape);
  return NULL;
}

static bm_status shape_binary(bm_graph *g, bm_node *n) {
  bm_node *a = n->in[0], *b = n->in[1];
  bm_dtype t = a->dtype;
  if (a->dtype != b->dtype) {
    if (is_single_f32_const(b))
      t = a->dtype;
    else if (is_single_f32_const(a))
      t = b->dtype;
    else
      return fail(g, n, "dtypes differ: a %s vs b %s", dt(a->dtype), dt(b->dtype));
  }
  if (!is_float(t)) return fail(g, n, "operands must be f32, f16 or bf16, got %s", dt(t));
  int no;
  bm_dim o[BM_MAX_DIMS];
  if (!broadcast(a->ndim, a->shape, b->ndim, b->shape, &no, o)) {
    char sa[SHAPE_BUF], sb[SHAPE_BUF];
    return fail(g, n, "shapes do not broadcast: a %s vs b %s", SH(a, sa), SH(b, sb));
  }
  set_out(n, t, no, o);
  return NULL;
}

/* ------------------------------------------------------------------ linear algebra */

static bm_status shape_matmul(bm_graph *g, bm_node *n) {
  bm_node *a = n->in[0], *b = n->in[1];
  char sa[SHAPE_BUF], sb[SHAPE_BUF];
  if ((n->a.trans_a & ~1) || (n->a.trans_b & ~1))
    return fail(g, n, "trans_a/trans_b must be 0 or 1, got %d/%d", n->a.trans_a, n->a.trans_b);
  if (a->ndim < 2 || b->ndim < 2)
    return fail(g, n, "operands must have rank >= 2: a %s, b %s", SH(a, sa), SH(b, sb));
  BM_RETURN_IF_ERROR(need_float(g, n, "a", a));
  BM_RETURN_IF_ERROR(need_float(g, n, "b", b));
  bm_dim m = a->shape[a->ndim - (n->a.trans_a ? 1 : 2)];
  bm_dim ka = a->shape[a->ndim - (n->a.trans_a ? 2 : 1)];
  bm_dim kb = b->shape[b->ndim - (n->a.trans_b ? 1 : 2)];
  bm_dim nn = b->shape[b->ndim - (n->a.trans_b ? 2 : 1)];
  if (!bm_dim_eq(ka, kb))
    return fail(g, n, "inner dimensions differ: a %s vs b %s%s", SH(a, sa), SH(b, sb),
                n->a.trans_a || n->a.trans_b ? " (after transposition)" : "");
  int no;
  bm_dim o[BM_MAX_DIMS];
  if (!broadcast(a->ndim - 2, a->shape, b->ndim - 2, b->shape, &no, o))
    return fail(g, n, "batch dimensions do not broadcast: a %s vs b %s", SH(a, sa), SH(b, sb));
  o[no] = m;
  o[no + 1] = nn;
  set_out(n, a->dtype, no + 2, o);
  return NULL;
}

static bm_status conv_out(const bm_graph *g, const bm_node *n, const char *which, bm_dim in,
                          int64_t k, int32_t s, int32_t p, int32_t d, bm_dim *out) {
  int64_t span = (int64_t)d * (k - 1) + 1;
  if (bm_dim_is_static(in)) {
    int64_t v = in.add + 2 * (int64_t)p - span;
    if (v < 0) {
      char b[SHAPE_BUF];
      return fail(g, n, "kernel (%s extent %" PRId64 ") is larger than the padded input %s", which,
                  span, SH(n->in[0], b));
    }
    *out = bm_dim_c(v / s + 1);
    return NULL;
  }
  if (s != 1) {
    char b[SHAPE_BUF];
    return fail(g, n, "symbolic %s dimension of %s needs stride 1", which, SH(n->in[0], b));
  }
  *out = in;
  out->add = in.add + 2 * (int64_t)p - span + 1;
  return NULL;
}

static bm_status shape_conv2d(bm_graph *g, bm_node *n) {
  bm_node *x = n->in[0], *w = n->in[1];
  char sx[SHAPE_BUF], sw[SHAPE_BUF];
  const bm_attrs *a = &n->a;
  if (a->layout != BM_CONV_NCHW && a->layout != BM_CONV_NHWC)
    return fail(g, n, "layout must be %d (NCHW) or %d (NHWC), got %d", BM_CONV_NCHW, BM_CONV_NHWC, a->layout);
  const bool nhwc = a->layout == BM_CONV_NHWC;
  /* dims of x and w by meaning: channels, height, width; w's in-channels, KH, KW */
  const int xc = nhwc ? 3 : 1, xh = nhwc ? 1 : 2, xw = nhwc ? 2 : 3;
  const int wc = nhwc ? 3 : 1, wh = nhwc ? 1 : 2, ww = nhwc ? 2 : 3;
  if (x->ndim != 4 || w->ndim != 4)
    return fail(g, n, nhwc ? "x must be (N, H, W, C) and w (O, KH, KW, C/groups): x %s, w %s"
                           : "x must be (N, C, H, W) and w (O, C/groups, KH, KW): x %s, w %s",
                SH(x, sx), SH(w, sw));
  BM_RETURN_IF_ERROR(need_float(g, n, "x", x));
  BM_RETURN_IF_ERROR(need_float(g, n, "w", w));
  for (int i = 0; i < 2; i++) {
    if (a->stride[i] < 1 || a->stride[i] > 1 << 16 || a->dilation[i] < 1 || a->dilation[i] > 1 << 16 ||
        a->pad[i] < 0 || a->pad[i] > 1 << 20)
      return fail(g, n, "bad stride/pad/dilation (%d, %d)/(%d, %d)/(%d, %d)", a->stride[0],
                  a->stride[1], a->pad[0], a->pad[1], a->dilation[0], a->dilation[1]);
  }
  if (a->groups < 1) return fail(g, n, "groups must be >= 1, got %d", a->groups);
  for (int i = 0; i < 4; i++)
    if (!bm_dim_is_static(w->shape[i])) return fail(g, n, "w %s must be static", SH(w, sw));
  if (!bm_dim_is_static(x->shape[xc])) return fail(g, n, "channels of x %s must be static", SH(x, sx));
  int64_t c = x->shape[xc].add, o = w->shape[0].add;
  if (c % a->groups || o % a->groups || w->shape[wc].add * a->groups != c)
    return fail(g, n, "channels do not match groups=%d: x %s, w %s", a->groups, SH(x, sx),
                SH(w, sw));
  if (bm_node_base_nin(n) == 3) {
    bm_node *bias = n->in[2];
    BM_RETURN_IF_ERROR(need_float(g, n, "bias", bias));
    if (bias->ndim != 1 || !bm_dim_eq(bias->shape[0], w->shape[0]))
      return fail(g, n, "bias %s must be (%" PRId64 ")", SH(bias, sx), o);
  }
  bm_dim out[4] = {x->shape[0], w->shape[0]};
  BM_RETURN_IF_ERROR(conv_out(g, n, "height", x->shape[xh], w->shape[wh].add, a->stride[0], a->pad[0],
                              a->dilation[0], &out[2]));
  BM_RETURN_IF_ERROR(conv_out(g, n, "width", x->shape[xw], w->shape[ww].add, a->stride[1], a->pad[1],
                              a->dilation[1], &out[3]));
  set_out(n, x->dtype, 4, out);
  return NULL;
}

/* Checks q (N, K) i8|i4 and scale f32 (N, G) with K % G == 0. */
static bm_status check_quant(const bm_graph *g, const bm_node *n, const bm_node *q,
                             const bm_node *scale) {
  char sq[SHAPE_BUF], ss[SHAPE_BUF];
  if (q->dtype != BM_DTYPE_I8 && q->dtype != BM_DTYPE_I4)
    return fail(g, n, "q must be i8 or i4, got %s", dt(q->dtype));
  if (scale->dtype != BM_DTYPE_F32) return fail(g, n, "scale must be f32, got %s", dt(scale->dtype));
  if (q->ndim != 2 || scale->ndim != 2)
    return fail(g, n, "q must be (N, K) and scale (N, G): q %s, scale %s", SH(q, sq), SH(scale, ss));
  if (!bm_dim_is_static(q->shape[1]) || !bm_dim_is_static(scale->shape[1]))
    return fail(g, n, "K and G must be static: q %s, scale %s", SH(q, sq), SH(scale, ss));
  if (!bm_dim_eq(q->shape[0], scale->shape[0]) || q->shape[1].add % scale->shape[1].add != 0)
    return fail(g, n, "scale %s does not fit q %s (rows must match, K %% G == 0)", SH(scale, ss),
                SH(q, sq));
  return NULL;
}

static bm_status shape_dequant(bm_graph *g, bm_node *n) {
  BM_RETURN_IF_ERROR(check_quant(g, n, n->in[0], n->in[1]));
  /* f32; a node made (or retyped by fuse_dequant) as f16/bf16 keeps it */
  bm_dtype t = n->dtype == BM_DTYPE_F16 || n->dtype == BM_DTYPE_BF16 ? n->dtype : BM_DTYPE_F32;
  set_out(n, t, 2, n->in[0]->shape);
  return NULL;
}

static bm_status shape_qmatmul(bm_graph *g, bm_node *n) {
  bm_node *x = n->in[0], *q = n->in[1];
  BM_RETURN_IF_ERROR(need_float(g, n, "x", x));
  BM_RETURN_IF_ERROR(check_quant(g, n, q, n->in[2]));
  char sx[SHAPE_BUF], sq[SHAPE_BUF];
  if (x->ndim < 1 || !bm_dim_eq(x->shape[x->ndim - 1], q->shape[1]))
    return fail(g, n, "inner dimensions differ: x %s vs q %s", SH(x, sx), SH(q, sq));
  bm_dim o[BM_MAX_DIMS];
  memcpy(o, x->shape, sizeof o);
  o[x->ndim - 1] = q->shape[0];
  set_out(n, x->dtype, x->ndim, o);
  return NULL;
}

static bm_status check_moe_act(const bm_graph *g, const bm_node *n);

static bm_status shape_matmul_glu(bm_graph *g, bm_node *n) {
  bm_node *x = n->in[0], *wg = n->in[1], *wu = n->in[2];
  char sx[SHAPE_BUF], sg[SHAPE_BUF], su[SHAPE_BUF];
  BM_RETURN_IF_ERROR(check_moe_act(g, n));
  BM_RETURN_IF_ERROR(need_float(g, n, "x", x));
  BM_RETURN_IF_ERROR(need_float(g, n, "w_gate", wg));
  BM_RETURN_IF_ERROR(need_float(g, n, "w_up", wu));
  if (x->ndim < 1 || wg->ndim != 2 || wu->ndim != 2 || !bm_dim_eq(wg->shape[0], wu->shape[0]) ||
      !bm_dim_eq(wg->shape[1], wu->shape[1]) || !bm_dim_eq(x->shape[x->ndim - 1], wg->shape[1]))
    return fail(g, n, "x (..., K), w_gate and w_up (N, K) expected: x %s, w_gate %s, w_up %s", SH(x, sx),
                SH(wg, sg), SH(wu, su));
  bm_dim o[BM_MAX_DIMS];
  memcpy(o, x->shape, sizeof o);
  o[x->ndim - 1] = wg->shape[0];
  set_out(n, x->dtype, x->ndim, o);
  return NULL;
}

static bm_status shape_rms_matmul(bm_graph *g, bm_node *n) {
  bm_node *x = n->in[0], *nw = n->in[1], *w = n->in[2], *wu = n->nin > 3 ? n->in[3] : NULL;
  char sx[SHAPE_BUF], sn[SHAPE_BUF], sw[SHAPE_BUF];
  if ((n->nin == 3) != (n->a.act == 0))
    return fail(g, n, "act 0 takes x, w_norm, W; act silu/gelu_tanh also W_up: got %d inputs, act %d", n->nin,
                n->a.act);
  if (wu) BM_RETURN_IF_ERROR(check_moe_act(g, n));
  BM_RETURN_IF_ERROR(need_float(g, n, "x", x));
  BM_RETURN_IF_ERROR(need_float(g, n, "w_norm", nw));
  BM_RETURN_IF_ERROR(need_float(g, n, "W", w));
  if (wu) BM_RETURN_IF_ERROR(need_float(g, n, "W_up", wu));
  if (x->ndim < 1 || nw->ndim != 1 || w->ndim != 2 || !bm_dim_eq(x->shape[x->ndim - 1], w->shape[1]) ||
      !bm_dim_eq(nw->shape[0], w->shape[1]) ||
      (wu && (wu->ndim != 2 || !bm_dim_eq(wu->shape[0], w->shape[0]) || !bm_dim_eq(wu->shape[1], w->shape[1]))))
    return fail(g, n, "x (..., K), w_norm (K), W (and W_up) (N, K) expected: x %s, w_norm %s, W %s", SH(x, sx),
                SH(nw, sn), SH(w, sw));
  if (!(n->a.eps >= 0.0f)) return fail(g, n, "eps must be >= 0, got %g", (double)n->a.eps);
  bm_dim o[BM_MAX_DIMS];
  memcpy(o, x->shape, sizeof o);
  o[x->ndim - 1] = w->shape[0];
  set_out(n, x->dtype, x->ndim, o);
  return NULL;
}

/* ------------------------------------------------------------------ data movement */

/* Element count of a shape as static product * symbolic factors *
 * affine dims, for proving two shapes hold the same number of elements. */
typedef struct numel_form {
  int64_t stat;
  int nsym, naff;
  int syms[BM_MAX_DIMS];
  bm_dim aff[BM_MAX_DIMS];
} numel_form;

static bool numel_form_of(int nd, const bm_dim *s, numel_form *f) {
  memset(f, 0, sizeof *f);
  f->stat = 1;
  for (int i = 0; i < nd; i++) {
    bm_dim d = s[i];
    int64_t k;
    if (bm_dim_is_static(d))
      k = d.add;
    else if (d.add == 0) {
      k = d.mul;
      f->syms[f->nsym++] = d.sym;
    } else {
      f->aff[f->naff++] = d;
      continue;
    }
    if (__builtin_mul_overflow(f->stat, k, &f->stat)) return false;
  }
  /* sort symbol factors for comparison */
  for (int i = 1; i < f->nsym; i++)
    for (int j = i; j > 0 && f->syms[j - 1] > f->syms[j]; j--) {
      int t = f->syms[j];
      f->syms[j] = f->syms[j - 1];
      f->syms[j - 1] = t;
    }
  return true;
}

static bool same_numel(int na, const bm_dim *a, int nb, const bm_dim *b) {
  numel_form fa, fb;
  if (!numel_form_of(na, a, &fa) || !numel_form_of(nb, b, &fb)) return false;
  if (fa.stat != fb.stat || fa.nsym != fb.nsym || fa.naff != fb.naff) return false;
  for (int i = 0; i < fa.nsym; i++)
    if (fa.syms[i] != fb.syms[i]) return false;
  bool used[BM_MAX_DIMS] = {0};
  for (int i = 0; i < fa.naff; i++) {
    int j = 0;
    while (j < fb.naff && (used[j] || !bm_dim_eq(fa.aff[i], fb.aff[j]))) j++;
    if (j == fb.naff) return false;
    used[j] = true;
  }
  return true;
}

static bm_status shape_reshape(bm_graph *g, bm_node *n) {
  bm_node *x = n->in[0];
  if (n->ndim < 0) return fail(g, n, "needs a target shape (use bm_reshape or bm_node_make_typed)");
  if (n->ndim > BM_MAX_DIMS) return fail(g, n, "rank %d exceeds %d", n->ndim, BM_MAX_DIMS);
  char sx[SHAPE_BUF], so[SHAPE_BUF];
  for (int i = 0; i < n->ndim; i++) {
    if (bm_dim_is_static(n->shape[i])) n->shape[i] = bm_dim_c(n->shape[i].add);
    if (!dim_ok(g, n->shape[i])) return fail(g, n, "target dim %d of %s is invalid", i, SH(n, so));
  }
  if (x->dtype == BM_DTYPE_I4) return fail(g, n, "cannot reshape i4 (packed) tensors");
  if (!same_numel(x->ndim, x->shape, n->ndim, n->shape))
    return fail(g, n, "cannot prove element count equal: %s -> %s", SH(x, sx), SH(n, so));
  set_out(n, x->dtype, n->ndim, n->shape);
  return NULL;
}

static bm_status shape_permute(bm_graph *g, bm_node *n) {
  bm_node *x = n->in[0];
  int nd = x->ndim;
  bool seen[BM_MAX_DIMS] = {0};
  char sx[SHAPE_BUF];
  if (x->dtype == BM_DTYPE_I4) return fail(g, n, "cannot permute i4 (packed) tensors");
  for (int i = 0; i < BM_MAX_DIMS; i++) {
    if (i >= nd) {
      if (n->a.perm[i] != 0) return fail(g, n, "perm has more than %d entries", nd);
      continue;
    }
    int p = n->a.perm[i];
    if (p < 0) p += nd;
    if (p < 0 || p >= nd || seen[p])
      return fail(g, n, "perm is not a permutation of the %d axes of %s", nd, SH(x, sx));
    seen[p] = true;
    n->a.perm[i] = p;
  }
  bm_dim o[BM_MAX_DIMS];
  for (int i = 0; i < nd; i++) o[i] = x->shape[n->a.perm[i]];
  set_out(n, x->dtype, nd, o);
  return NULL;
}

static bm_status shape_slice(bm_graph *g, bm_node *n) {
  bm_node *x = n->in[0];
  bm_attrs *a = &n->a;
  char sx[SHAPE_BUF];
  if (x->dtype == BM_DTYPE_I4) return fail(g, n, "cannot slice i4 (packed) tensors");
  if (x->ndim < 1) return fail(g, n, "input must have rank >= 1");
  BM_RETURN_IF_ERROR(norm_axis(g, n, &a->axis, x->ndim));
  if (a->step < 1 || a->step > MAX_DIM_VALUE) return fail(g, n, "step must be >= 1, got %" PRId64, a->step);
  bm_dim d = x->shape[a->axis], out;
  if (bm_dim_is_static(d)) {
    int64_t dim = d.add, b = a->begin, e = a->end;
    if (b < 0) b = b < -dim ? 0 : b + dim;
    if (b > dim) b = dim;
    if (e < 0) e = e < -dim ? 0 : e + dim;
    if (e > dim) e = dim;
    if (e <= b)
      return fail(g, n, "empty slice [%" PRId64 ":%" PRId64 "] of axis %d of %s", a->begin, a->end,
                  a->axis, SH(x, sx));
    a->begin = b;
    a->end = e;
    out = bm_dim_c((e - b + a->step - 1) / a->step);
  } else if (a->begin < 0) {
    /* [-k:] or [-k:-j] of a symbolic axis: a static length, the start is
     * computed at run time (dim - k); the dim must then be >= k */
    int64_t e = a->end == INT64_MAX ? 0 : a->end;
    if (a->begin < -MAX_DIM_VALUE || (a->end != INT64_MAX && a->end >= 0) || e <= a->begin ||
        a->step != 1)
      return fail(g, n,
                  "symbolic axis %d of %s: a negative begin needs end = INT64_MAX (to the end) or a "
                  "negative end > begin, and step 1 (got [%" PRId64 ":%" PRId64 ":%" PRId64 "])",
                  a->axis, SH(x, sx), a->begin, a->end, a->step);
    out = bm_dim_c(e - a->begin);
  } else {
    if (a->end != INT64_MAX || a->begin > MAX_DIM_VALUE || a->step != 1)
      return fail(g, n,
                  "symbolic axis %d of %s can only be sliced as [begin:] with step 1, or as [-k:]",
                  a->axis, SH(x, sx));
    out = d;
    out.add -= a->begin;
    if (!dim_ok(g, out))
      return fail(g, n, "slice [%" PRId64 ":] of axis %d of %s is empty at the symbol's bound",
                  a->begin, a->axis, SH(x, sx));
  }
  bm_dim o[BM_MAX_DIMS];
  memcpy(o, x->shape, sizeof o);
  o[a->axis] = out;
  set_out(n, x->dtype, x->ndim, o);
  return NULL;
}

static bm_status shape_concat(bm_graph *g, bm_node *n) {
  bm_node *x = n->in[0];
  char s0[SHAPE_BUF], si[SHAPE_BUF];
  if (x->dtype == BM_DTYPE_I4) return fail(g, n, "cannot concatenate i4 (packed) tensors");
  if (x->ndim < 1) return fail(g, n, "inputs must have rank >= 1");
  BM_RETURN_IF_ERROR(norm_axis(g, n, &n->a.axis, x->ndim));
  int ax = n->a.axis;
  bm_dim o[BM_MAX_DIMS];
  memcpy(o, x->shape, sizeof o);
  for (int i = 1; i < n->nin; i++) {
    bm_node *y = n->in[i];
    if (y->dtype != x->dtype)
      return fail(g, n, "input %d is %s, input 0 is %s", i, dt(y->dtype), dt(x->dtype));
    bool ok = y->ndim == x->ndim;
    for (int d = 0; ok && d < x->ndim; d++)
      if (d != ax && !bm_dim_eq(y->shape[d], x->shape[d])) ok = false;
    if (!ok)
      return fail(g, n, "input %d %s does not match input 0 %s outside axis %d", i, SH(y, si),
                  SH(x, s0), ax);
    if (!dim_add(o[ax], y->shape[ax], &o[ax]))
      return fail(g, n, "cannot add symbolic sizes along axis %d: input %d %s, input 0 %s", ax, i,
                  SH(y, si), SH(x, s0));
  }
  set_out(n, x->dtype, x->ndim, o);
  return NULL;
}

static bm_status shape_gather(bm_graph *g, bm_node *n) {
  bm_node *t = n->in[0], *idx = n->in[1];
  char st[SHAPE_BUF], si[SHAPE_BUF];
  if (!is_int(idx->dtype)) return fail(g, n, "indices must be i32 or i64, got %s", dt(idx->dtype));
  if (t->dtype == BM_DTYPE_I4) return fail(g, n, "cannot gather from i4 (packed) tables");
  if (t->ndim < 1 || idx->ndim + t->ndim - 1 > BM_MAX_DIMS)
    return fail(g, n, "table %s and indices %s give a rank above %d", SH(t, st), SH(idx, si),
                BM_MAX_DIMS);
  bm_dim o[BM_MAX_DIMS];
  memcpy(o, idx->shape, (size_t)idx->ndim * sizeof *o);
  memcpy(o + idx->ndim, t->shape + 1, (size_t)(t->ndim - 1) * sizeof *o);
  set_out(n, t->dtype, idx->ndim + t->ndim - 1, o);
  return NULL;
}

static bm_status shape_pad(bm_graph *g, bm_node *n) {
  bm_node *x = n->in[0];
  if (x->dtype == BM_DTYPE_I4) return fail(g, n, "cannot pad i4 (packed) tensors");
  bm_dim o[BM_MAX_DIMS];
  memcpy(o, x->shape, sizeof o);
  for (int i = 0; i < 2 * BM_MAX_DIMS; i++) {
    int64_t p = n->a.pads[i];
    if (i >= 2 * x->ndim) {
      if (p != 0) return fail(g, n, "pads has more than %d entries for rank %d", 2 * x->ndim, x->ndim);
      continue;
    }
    if (p < 0 || p > MAX_PAD) return fail(g, n, "pad %d is %" PRId64 ", must be in [0, 2^30]", i, p);
    o[i / 2].add += p;
  }
  set_out(n, x->dtype, x->ndim, o);
  return NULL;
}

static bm_status shape_upsample(bm_graph *g, bm_node *n) {
  bm_node *x = n->in[0];
  char sx[SHAPE_BUF];
  BM_RETURN_IF_ERROR(need_float(g, n, "input", x));
  if (x->ndim < 2) return fail(g, n, "input %s must have rank >= 2", SH(x, sx));
  int32_t s = n->a.scale;
  if (s < 1 || s > 1 << 16) return fail(g, n, "scale must be in [1, 65536], got %d", s);
  bm_dim o[BM_MAX_DIMS];
  memcpy(o, x->shape, sizeof o);
  for (int i = x->ndim - 2; i < x->ndim; i++) {
    int64_t m = (int64_t)o[i].mul * s;
    if (m > INT32_MAX || o[i].add > MAX_DIM_VALUE / s || o[i].add < -MAX_DIM_VALUE / s)
      return fail(g, n, "upsampled size of %s overflows", SH(x, sx));
    if (!bm_dim_is_static(o[i])) o[i].mul = (int32_t)m;
    o[i].add *= s;
  }
  set_out(n, x->dtype, x->ndim, o);
  return NULL;
}

/* ------------------------------------------------------------------ reductions, norms */

static bm_status shape_reduce(bm_graph *g, bm_node *n) {
  bm_node *x = n->in[0];
  char sx[SHAPE_BUF];
  BM_RETURN_IF_ERROR(need_float(g, n, "input", x));
  uint32_t axes = n->a.axes;
  if (axes == 0 || (x->ndim < 32 && (axes >> x->ndim) != 0))
    return fail(g, n, "axes mask 0x%x is empty or names an axis outside %s", axes, SH(x, sx));
  if (n->a.keepdim & ~1) return fail(g, n, "keepdim must be 0 or 1, got %d", n->a.keepdim);
  bm_dim o[BM_MAX_DIMS];
  int no = 0;
  for (int i = 0; i < x->ndim; i++) {
    if (axes & (1u << i)) {
      if (n->a.keepdim) o[no++] = bm_dim_c(1);
    } else {
      o[no++] = x->shape[i];
    }
  }
  set_out(n, x->dtype, no, o);
  return NULL;
}

static bm_status check_eps(const bm_graph *g, const bm_node *n) {
  if (!isfinite(n->a.eps) || n->a.eps < 0) return fail(g, n, "eps must be finite and >= 0, got %g", n->a.eps);
  return NULL;
}

static bm_status shape_norm(bm_graph *g, bm_node *n) {
  bm_node *x = n->in[0];
  char sx[SHAPE_BUF], sp[SHAPE_BUF];
  int nin = bm_node_base_nin(n);
  BM_RETURN_IF_ERROR(need_float(g, n, "input", x));
  BM_RETURN_IF_ERROR(check_eps(g, n));
  bm_dim c;
  if (n->op == BM_OP_GROUP_NORM) {
    if (x->ndim < 2) return fail(g, n, "input %s must be (N, C, ...)", SH(x, sx));
    c = x->shape[1];
    if (n->a.groups < 1 || !bm_dim_is_static(c) || c.add % n->a.groups != 0)
      return fail(g, n, "channels of %s must be static and divisible by groups=%d", SH(x, sx),
                  n->a.groups);
  } else {
    if (x->ndim < 1) return fail(g, n, "input must have rank >= 1");
    c = x->shape[x->ndim - 1];
  }
  for (int i = 1; i < nin; i++) {
    bm_node *p = n->in[i];
    const char *what = i == 1 ? "weight" : "bias";
    BM_RETURN_IF_ERROR(need_float(g, n, what, p));
    if (p->ndim != 1 || !bm_dim_eq(p->shape[0], c)) {
      char sc[96];
      return fail(g, n, "%s %s must be (%s) for input %s", what, SH(p, sp), bm_dim_str(g, c, sc, sizeof sc),
                  SH(x, sx));
    }
  }
  set_out(n, x->dtype, x->ndim, x->shape);
  return NULL;
}

/* ------------------------------------------------------------------ transformer */

static bm_status shape_rope(bm_graph *g, bm_node *n) {
  bm_node *x = n->in[0], *pos = n->in[1], *fr = n->in[2];
  char sx[SHAPE_BUF], sp[SHAPE_BUF], sf[SHAPE_BUF];
  BM_RETURN_IF_ERROR(need_float(g, n, "x", x));
  if (x->ndim != 4) return fail(g, n, "x %s must be (B, S, H, D)", SH(x, sx));
  if (!is_int(pos->dtype)) return fail(g, n, "pos must be i32 or i64, got %s", dt(pos->dtype));
  bool pos_ok = (pos->ndim == 2 && bm_dim_eq(pos->shape[0], x->shape[0]) &&
                 bm_dim_eq(pos->shape[1], x->shape[1])) ||
                (pos->ndim == 1 && bm_dim_eq(pos->shape[0], x->shape[1]));
  if (!pos_ok) return fail(g, n, "pos %s must be (B, S) or (S) for x %s", SH(pos, sp), SH(x, sx));
  if (fr->dtype != BM_DTYPE_F32 || fr->ndim != 1 || !bm_dim_is_static(fr->shape[0]) ||
      !bm_dim_is_static(x->shape[3]) || 2 * fr->shape[0].add > x->shape[3].add)
    return fail(g, n, "freqs %s %s must be static f32 (R/2) with R <= D of x %s", dt(fr->dtype),
                SH(fr, sf), SH(x, sx));
  if (n->a.rope_mode & ~1) return fail(g, n, "rope_mode must be 0 or 1, got %d", n->a.rope_mode);
  set_out(n, x->dtype, 4, x->shape);
  return NULL;
}

/* Upper bound of a dim (symbols at their bounds). */
static int64_t dim_max(const bm_graph *g, bm_dim d) {
  if (bm_dim_is_static(d)) return d.add;
  if (d.sym < 0 || d.sym >= g->nsyms) return INT64_MAX;
  return (int64_t)d.mul * g->syms[d.sym].max + d.add;
}

/* A batch dim b of a query/update that reads rows of a cache batch bmax:
 * equal, or b's upper bound <= a static bmax. */
static bool batch_fits(const bm_graph *g, bm_dim b, bm_dim bmax) {
  if (bm_dim_eq(b, bmax)) return true;
  return bm_dim_is_static(bmax) && dim_max(g, b) <= bmax.add;
}

static int popcount32(uint32_t v) {
  int c = 0;
  for (; v; v &= v - 1) c++;
  return c;
}

static bm_status shape_attention(bm_graph *g, bm_node *n) {
  bm_node *q = n->in[0], *k = n->in[1], *v = n->in[2];
  char sq[SHAPE_BUF], sk[SHAPE_BUF], sv[SHAPE_BUF];
  const bm_attrs *a = &n->a;
  int nb = bm_node_base_nin(n);
  if ((uint32_t)a->attn_flags & ~(uint32_t)(BM_ATTN_HAS_MASK | BM_ATTN_HAS_KV_LEN))
    return fail(g, n, "unknown attn_flags 0x%x", (unsigned)a->attn_flags);
  if (nb != 3 + popcount32((uint32_t)a->attn_flags))
    return fail(g, n, "attn_flags 0x%x name %d optional inputs, the node has %d (mask, kv_len)",
                (unsigned)a->attn_flags, popcount32((uint32_t)a->attn_flags), nb - 3);
  bool has_mask = (a->attn_flags & BM_ATTN_HAS_MASK) != 0;
  bool has_len = (a->attn_flags & BM_ATTN_HAS_KV_LEN) != 0;
  if (q->ndim != 4 || k->ndim != 4 || v->ndim != 4)
    return fail(g, n, "q, k, v must be rank 4 (B, H, S, D): q %s, k %s, v %s", SH(q, sq), SH(k, sk),
                SH(v, sv));
  BM_RETURN_IF_ERROR(need_float(g, n, "q", q));
  BM_RETURN_IF_ERROR(need_float(g, n, "k", k));
  BM_RETURN_IF_ERROR(need_float(g, n, "v", v));
  bm_dim hq = q->shape[1], hkv = k->shape[1];
  /* with kv_len, k and v are caches whose batch may exceed q's */
  bool batch_ok = has_len ? batch_fits(g, q->shape[0], k->shape[0]) && bm_dim_eq(k->shape[0], v->shape[0])
                          : bm_dim_eq(q->shape[0], k->shape[0]) && bm_dim_eq(q->shape[0], v->shape[0]);
  if (!batch_ok || !bm_dim_is_static(hq) || !bm_dim_is_static(hkv) || hq.add % hkv.add != 0 ||
      !bm_dim_eq(hkv, v->shape[1]) || !bm_dim_eq(q->shape[3], k->shape[3]) ||
      !bm_dim_eq(k->shape[2], v->shape[2]))
    return fail(g, n,
                "shapes do not fit (B equal%s, Hq %% Hkv == 0, D of q and k equal, Sk of k and v "
                "equal): q %s, k %s, v %s",
                has_len ? " or q's B <= the caches' static B" : "", SH(q, sq), SH(k, sk), SH(v, sv));
  if (!isfinite(a->attn_scale) || a->attn_scale < 0 || !isfinite(a->softcap) || a->softcap < 0 ||
      (a->causal & ~1) || a->window < 0)
    return fail(g, n, "bad attributes: scale %g, causal %d, window %d, softcap %g", a->attn_scale,
                a->causal, a->window, a->softcap);
  int at = 3;
  if (has_mask) {
    bm_node *m = n->in[at++];
    bm_dim target[4] = {q->shape[0], hq, q->shape[2], k->shape[2]};
    BM_RETURN_IF_ERROR(need_float(g, n, "mask", m));
    if (!broadcasts_to(m, 4, target)) {
      char sm[SHAPE_BUF], st[SHAPE_BUF];
      return fail(g, n, "mask %s does not broadcast to %s", SH(m, sm),
                  bm_shape_str(g, 4, target, st, sizeof st));
    }
  }
  if (has_len) {
    bm_node *l = n->in[at++];
    char sl[SHAPE_BUF];
    if (!is_int(l->dtype)) return fail(g, n, "kv_len must be i32 or i64, got %s", dt(l->dtype));
    if (l->ndim != 1 || !bm_dim_eq(l->shape[0], q->shape[0]))
      return fail(g, n, "kv_len %s must be (B) for q %s", SH(l, sl), SH(q, sq));
  }
  bm_dim o[4] = {q->shape[0], hq, q->shape[2], v->shape[3]};
  set_out(n, q->dtype, 4, o);
  return NULL;
}

/* ------------------------------------------------------------------ LLM generation */

static bm_status shape_kv_write(bm_graph *g, bm_node *n) {
  bm_node *c = n->in[0], *r = n->in[1], *pos = n->in[2];
  char sc[SHAPE_BUF], sr[SHAPE_BUF], sp[SHAPE_BUF];
  if (c->op != BM_OP_STATE && c->op != BM_OP_KV_WRITE)
    return fail(g, n, "the cache must be a state or the result of a kv_write, got %s %%%d",
                bm_op_name(c->op), c->id);
  if (c->ndim != 4 || r->ndim != 4)
    return fail(g, n, "cache and rows must be rank 4 (B, H, L, D) / (B, H, S, D): cache %s, rows %s",
                SH(c, sc), SH(r, sr));
  for (int d = 0; d < 4; d++)
    if (!bm_dim_is_static(c->shape[d])) return fail(g, n, "cache %s must be static", SH(c, sc));
  bool same = c->dtype == r->dtype;
  if (!same && !(is_float(c->dtype) && is_float(r->dtype)))
    return fail(g, n, "rows are %s, the cache is %s (equal dtypes, or both floating point)",
                dt(r->dtype), dt(c->dtype));
  if (c->dtype == BM_DTYPE_I4 || r->dtype == BM_DTYPE_I4)
    return fail(g, n, "i4 (packed) caches are not supported");
  if (!batch_fits(g, r->shape[0], c->shape[0]) || !bm_dim_eq(r->shape[1], c->shape[1]) ||
      !bm_dim_eq(r->shape[3], c->shape[3]))
    return fail(g, n, "rows %s do not fit cache %s (B <= the cache's B, H and D equal)", SH(r, sr),
                SH(c, sc));
  if (!is_int(pos->dtype)) return fail(g, n, "pos must be i32 or i64, got %s", dt(pos->dtype));
  if (pos->ndim != 1 || !bm_dim_eq(pos->shape[0], r->shape[0]))
    return fail(g, n, "pos %s must be (B) for rows %s", SH(pos, sp), SH(r, sr));
  set_out(n, c->dtype, 4, c->shape);
  return NULL;
}

static bm_status shape_topk_mask(bm_graph *g, bm_node *n) {
  bm_node *x = n->in[0];
  BM_RETURN_IF_ERROR(need_float(g, n, "input", x));
  if (x->ndim < 1) return fail(g, n, "input must have rank >= 1");
  if (n->a.topk < 1) return fail(g, n, "topk must be >= 1, got %d", n->a.topk);
  if (isnan(n->a.fill)) return fail(g, n, "fill must not be NaN");
  set_out(n, x->dtype, x->ndim, x->shape);
  return NULL;
}

/* The expert weights (E, A, B) of MOE/MOE_UP/MOE_DOWN. */
static bm_status check_moe_w(const bm_graph *g, const bm_node *n, const char *what,
                             const bm_node *w, bm_dim e, bm_dim a, bm_dim b) {
  char sw[SHAPE_BUF], se[96], sa[96], sb[96];
  BM_RETURN_IF_ERROR(need_float(g, n, what, w));
  if (w->ndim != 3 || !bm_dim_eq(w->shape[0], e) || !bm_dim_eq(w->shape[1], a) ||
      !bm_dim_eq(w->shape[2], b) || !bm_dim_is_static(w->shape[1]) || !bm_dim_is_static(w->shape[2]))
    return fail(g, n, "%s %s must be static (%s, %s, %s)", what, SH(w, sw), bm_dim_str(g, e, se, sizeof se),
                bm_dim_str(g, a, sa, sizeof sa), bm_dim_str(g, b, sb, sizeof sb));
  return NULL;
}

static bm_status check_moe_act(const bm_graph *g, const bm_node *n) {
  if (n->a.act != BM_OP_SILU && n->a.act != BM_OP_GELU_TANH)
    return fail(g, n, "act must be silu or gelu_tanh, got op %d", n->a.act);
  return NULL;
}

/* Do a and b have the same first n dims? */
static bool same_lead(const bm_node *a, const bm_node *b, int n) {
  for (int d = 0; d < n; d++)
    if (!bm_dim_eq(a->shape[d], b->shape[d])) return false;
  return true;
}

/* x (..., D) and gates (..., E) with the same leading (token) dims, at least
 * one and at most BM_MAX_DIMS - 2 of them (MOE_UP adds (E, F)); D, E static. */
static bm_status check_moe_xg(const bm_graph *g, const bm_node *n, const bm_node *x,
                              const bm_node *gates) {
  char sx[SHAPE_BUF], sg[SHAPE_BUF];
  BM_RETURN_IF_ERROR(need_float(g, n, "x", x));
  BM_RETURN_IF_ERROR(need_float(g, n, "gates", gates));
  if (x->ndim < 2 || x->ndim > BM_MAX_DIMS - 1 || gates->ndim != x->ndim ||
      !same_lead(x, gates, x->ndim - 1) || !bm_dim_is_static(x->shape[x->ndim - 1]) ||
      !bm_dim_is_static(gates->shape[x->ndim - 1]))
    return fail(g, n, "x %s and gates %s must be (..., D) and (..., E) with the same leading dims (1 to %d) "
                "and D, E static", SH(x, sx), SH(gates, sg), BM_MAX_DIMS - 2);
  return NULL;
}

static bm_status shape_moe(bm_graph *g, bm_node *n) {
  bm_node *x = n->in[0], *gates = n->in[1], *wg = n->in[2], *wu = n->in[3], *wd = n->in[4];
  BM_RETURN_IF_ERROR(check_moe_act(g, n));
  BM_RETURN_IF_ERROR(check_moe_xg(g, n, x, gates));
  bm_dim e = gates->shape[gates->ndim - 1], d = x->shape[x->ndim - 1];
  if (wg->ndim != 3) {
    char sw[SHAPE_BUF];
    return fail(g, n, "w_gate %s must be (E, F, D)", SH(wg, sw));
  }
  bm_dim f = wg->shape[1];
  BM_RETURN_IF_ERROR(check_moe_w(g, n, "w_gate", wg, e, f, d));
  BM_RETURN_IF_ERROR(check_moe_w(g, n, "w_up", wu, e, f, d));
  BM_RETURN_IF_ERROR(check_moe_w(g, n, "w_down", wd, e, d, f));
  set_out(n, x->dtype, x->ndim, x->shape);
  return NULL;
}

static bm_status shape_moe_up(bm_graph *g, bm_node *n) {
  bm_node *x = n->in[0], *gates = n->in[1], *wg = n->in[2], *wu = n->in[3];
  BM_RETURN_IF_ERROR(check_moe_act(g, n));
  BM_RETURN_IF_ERROR(check_moe_xg(g, n, x, gates));
  int lead = x->ndim - 1;
  bm_dim e = gates->shape[lead], d = x->shape[lead];
  if (wg->ndim != 3) {
    char sw[SHAPE_BUF];
    return fail(g, n, "w_gate %s must be (E, F, D)", SH(wg, sw));
  }
  bm_dim f = wg->shape[1];
  BM_RETURN_IF_ERROR(check_moe_w(g, n, "w_gate", wg, e, f, d));
  BM_RETURN_IF_ERROR(check_moe_w(g, n, "w_up", wu, e, f, d));
  bm_dim o[BM_MAX_DIMS];
  memcpy(o, x->shape, sizeof(bm_dim) * (size_t)lead);
  o[lead] = e;
  o[lead + 1] = f;
  set_out(n, x->dtype, lead + 2, o);
  return NULL;
}

static bm_status shape_moe_down(bm_graph *g, bm_node *n) {
  bm_node *h = n->in[0], *gates = n->in[1], *wd = n->in[2];
  char sh[SHAPE_BUF], sg[SHAPE_BUF];
  BM_RETURN_IF_ERROR(need_float(g, n, "h", h));
  BM_RETURN_IF_ERROR(need_float(g, n, "gates", gates));
  int lead = h->ndim - 2;
  if (lead < 1 || gates->ndim != lead + 1 || !same_lead(h, gates, lead + 1) ||
      !bm_dim_is_static(h->shape[lead]) || !bm_dim_is_static(h->shape[lead + 1]))
    return fail(g, n, "h %s and gates %s must be (..., E, F) and (..., E) with the same leading dims and E, F "
                "static", SH(h, sh), SH(gates, sg));
  if (wd->ndim != 3) {
    char sw[SHAPE_BUF];
    return fail(g, n, "w_down %s must be (E, D, F)", SH(wd, sw));
  }
  BM_RETURN_IF_ERROR(check_moe_w(g, n, "w_down", wd, h->shape[lead], wd->shape[1], h->shape[lead + 1]));
  bm_dim o[BM_MAX_DIMS];
  memcpy(o, h->shape, sizeof(bm_dim) * (size_t)lead);
  o[lead] = wd->shape[1];
  set_out(n, h->dtype, lead + 1, o);
  return NULL;
}

static bm_status shape_take_row(bm_graph *g, bm_node *n) {
  bm_node *x = n->in[0], *idx = n->in[1];
  char sx[SHAPE_BUF], si[SHAPE_BUF];
  if (x->dtype == BM_DTYPE_I4) return fail(g, n, "cannot take rows of i4 (packed) tensors");
  if (!is_int(idx->dtype)) return fail(g, n, "idx must be i32 or i64, got %s", dt(idx->dtype));
  if (x->ndim < 2 || idx->ndim != 1 || !bm_dim_eq(idx->shape[0], x->shape[0]))
    return fail(g, n, "x %s and idx %s must be (B, S, ...) and (B)", SH(x, sx), SH(idx, si));
  bm_dim o[BM_MAX_DIMS];
  memcpy(o, x->shape, sizeof o);
  o[1] = bm_dim_c(1);
  set_out(n, x->dtype, x->ndim, o);
  return NULL;
}

/* ------------------------------------------------------------------ fused */

static bm_status shape_fused(bm_graph *g, bm_node *n) {
  if (n->a.prog.nin != n->nin)
    return fail(g, n, "program reads %d inputs, node has %d", n->a.prog.nin, n->nin);
  BM_RETURN_IF_ERROR(check_prog(g, n, &n->a.prog, n->nin, "program"));
  int no = 0;
  bm_dim o[BM_MAX_DIMS];
  bm_dtype first_float = BM_DTYPE_COUNT;
  for (int i = 0; i < n->nin; i++) {
    bm_node *x = n->in[i];
    if (x->dtype == BM_DTYPE_I4) return fail(g, n, "input %d is i4 (packed)", i);
    if (first_float == BM_DTYPE_COUNT && is_float(x->dtype)) first_float = x->dtype;
    if (!broadcast(no, o, x->ndim, x->shape, &no, o)) {
      char sx[SHAPE_BUF], so[SHAPE_BUF];
      return fail(g, n, "input %d %s does not broadcast with %s", i, SH(x, sx),
                  bm_shape_str(g, no, o, so, sizeof so));
    }
  }
  bm_dtype t = n->dtype;
  if ((unsigned)t >= BM_DTYPE_COUNT) t = first_float != BM_DTYPE_COUNT ? first_float : BM_DTYPE_F32;
  if (!is_float(t)) return fail(g, n, "output dtype must be f32, f16 or bf16, got %s", dt(t));
  set_out(n, t, no, o);
  return NULL;
}

/* ------------------------------------------------------------------ table and driver */

static const shape_fn shape_table[BM_OP_COUNT] = {
#define X(e, nm, mn, mx, fl, at, sh, rf) [BM_OP_##e] = sh,
#include "ops.def"
#undef X
};
_Static_assert(sizeof shape_table / sizeof shape_table[0] == BM_OP_COUNT, "shape table covers every op");

bm_status bm_node_infer(bm_graph *g, bm_node *n) {
  if (!g || !n) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_node_infer: NULL argument");
  if ((unsigned)n->op >= BM_OP_COUNT)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "node %%%d: bad op %d", n->id, (int)n->op);
  const bm_op_info *info = &bm_op_table[n->op];
  if (n->nin < 0 || n->nin > BM_MAX_IN) return fail(g, n, "has %d inputs (max %d)", n->nin, BM_MAX_IN);
  for (int i = 0; i < n->nin; i++) {
    const bm_node *x = n->in[i];
    if (!x) return fail(g, n, "input %d is NULL", i);
    if (x->ndim < 0 || x->ndim > BM_MAX_DIMS || (unsigned)x->dtype >= BM_DTYPE_COUNT)
      return fail(g, n, "input %d has no valid type", i);
  }
  int extras = 0;
  bool epi = (info->flags & BM_OPF_EPILOGUE) && n->a.prog.n > 0;
  if (epi) {
    if (n->a.prog.nin < 1 || n->a.prog.nin - 1 > n->nin)
      return fail(g, n, "epilogue reads %d registers, node has %d inputs", n->a.prog.nin, n->nin);
    extras = n->a.prog.nin - 1;
  }
  int base = n->nin - extras;
  if (base < info->min_in || base > info->max_in) {
    if (extras)
      return fail(g, n, "takes %d to %d inputs, got %d (plus %d epilogue operands)", info->min_in,
                  info->max_in, base, extras);
    return fail(g, n, "takes %d to %d inputs, got %d", info->min_in, info->max_in, base);
  }
  BM_RETURN_IF_ERROR(shape_table[n->op](g, n));
  if (epi) {
    BM_RETURN_IF_ERROR(check_prog(g, n, &n->a.prog, n->a.prog.nin, "epilogue"));
    for (int i = base; i < n->nin; i++) {
      bm_node *x = n->in[i];
      char sx[SHAPE_BUF], so[SHAPE_BUF];
      BM_RETURN_IF_ERROR(need_float(g, n, "epilogue operand", x));
      if (!broadcasts_to(x, n->ndim, n->shape))
        return fail(g, n, "epilogue operand %d %s does not broadcast to the output %s", i, SH(x, sx),
                    SH(n, so));
    }
  }
  for (int i = 0; i < n->ndim; i++)
    if (!dim_ok(g, n->shape[i])) {
      char so[SHAPE_BUF];
      return fail(g, n, "output dim %d of %s is empty or invalid", i, SH(n, so));
    }
  if (bm_node_numel_max(g, n) < 0) {
    char so[SHAPE_BUF];
    return fail(g, n, "output %s is too large", SH(n, so));
  }
  return NULL;
}
