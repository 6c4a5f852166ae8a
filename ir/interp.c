/* interp.c - the reference interpreter: evaluates a graph one node at a time
 * with plain loops and f32 math. It is the oracle every backend is tested
 * against, so every function here favours obvious over fast. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "interp.h"

/* ------------------------------------------------------------------ context */

/* Named STATE tensors, kept across runs (see interp.h). */
typedef struct bm_state_entry {
  char *name;
  bm_tensor t;
} bm_state_entry;

struct bm_interp_states {
  bm_state_entry *e;
  int n, cap;
};

typedef struct bm_ictx {
  const bm_graph *g;
  bm_interp_states *states;    /* STATE values */
  const bm_tensor *inputs;     /* one per g->inputs */
  int64_t syms[BM_MAX_SYMS];   /* bound symbol values; -1 = unbound */
  bool borrowed;               /* set by ref_source: out->data is not ours to free */
} bm_ictx;

/* A reference function computes node n from its input values in[] into out.
 * For every op except the sources, out is already allocated in n's dtype and
 * bound shape. */
typedef bm_status (*bm_ref_fn)(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                               bm_tensor *out);

/* "matmul %12 ("attn.q")" for messages, as in shape.c */
typedef struct { char s[160]; } bm_label;

static bm_label label(const bm_node *n) {
  bm_label l;
  const char *op = (unsigned)n->op < BM_OP_COUNT ? bm_op_name(n->op) : "?";
  if (n->name)
    snprintf(l.s, sizeof l.s, "%s %%%d (\"%.100s\")", op, n->id, n->name);
  else
    snprintf(l.s, sizeof l.s, "%s %%%d", op, n->id);
  return l;
}

/* An error about node n: "<op> %<id> ("<name>"): <message>". */
static bm_status node_err(const bm_node *n, bm_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bm_status node_err(const bm_node *n, bm_code code, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return bm_status_make(code, "%s: %s", label(n).s, msg);
}

static bm_status oom(const bm_node *n) {
  return node_err(n, BM_ERR_OUT_OF_MEMORY, "out of memory in the reference interpreter");
}

static bool is_int(bm_dtype t) {
  return t == BM_DTYPE_I8 || t == BM_DTYPE_I4 || t == BM_DTYPE_I32 || t == BM_DTYPE_I64;
}

static int64_t numel(const bm_tensor *t) { return bm_tensor_numel(t); }

/* Product of shape[lo..hi-1]. */
static int64_t prod(const int64_t *shape, int lo, int hi) {
  int64_t p = 1;
  for (int d = lo; d < hi; d++) p *= shape[d];
  return p;
}

/* Row-major element strides of a shape. */
static void strides_of(int ndim, const int64_t *shape, int64_t *st) {
  int64_t s = 1;
  for (int d = ndim - 1; d >= 0; d--) {
    st[d] = s;
    s *= shape[d];
  }
}

/* Flat element i of a tensor of `shape` -> its offset under strides st. */
static int64_t strided_offset(int64_t i, int ndim, const int64_t *shape, const int64_t *st) {
  int64_t off = 0;
  for (int d = ndim - 1; d >= 0; d--) {
    off += (i % shape[d]) * st[d];
    i /= shape[d];
  }
  return off;
}

/* Flat element i -> coordinates c. */
static void unravel(int64_t i, int ndim, const int64_t *shape, int64_t *c) {
  for (int d = ndim - 1; d >= 0; d--) {
    c[d] = i % shape[d];
    i /= shape[d];
  }
}

/* Strides that read a tensor of shape (tndim, tshape) as if it had shape
 * (ndim, shape) under numpy broadcasting (right-aligned; 0 on broadcast
 * dims). Returns false if it does not broadcast. */
static bool bcast_strides(int tndim, const int64_t *tshape, int ndim, const int64_t *shape,
                          int64_t *st) {
  if (tndim > ndim) return false;
  int64_t s = 1;
  for (int d = ndim - 1; d >= 0; d--) {
    int td = d - (ndim - tndim);
    if (td < 0) {
      st[d] = 0;
      continue;
    }
    int64_t ts = tshape[td];
    if (ts == shape[d])
      st[d] = ts == 1 ? 0 : s;
    else if (ts == 1)
      st[d] = 0;
    else
      return false;
    s *= ts;
  }
  return true;
}

static bm_status bcast_check(const bm_node *n, const bm_tensor *t, int which, const bm_tensor *out,
                             int64_t *st) {
  if (bcast_strides(t->ndim, t->shape, out->ndim, out->shape, st)) return NULL;
  return node_err(n, BM_ERR_INVALID_ARGUMENT,
                  "input %d (rank %d) does not broadcast to the output shape (rank %d)", which,
                  t->ndim, out->ndim);
}

/* All elements of t as a malloc'd f32 array (NULL on out of memory). */
static float *load_all_f32(const bm_tensor *t) {
  int64_t cnt = numel(t);
  float *p = malloc((size_t)(cnt > 0 ? cnt : 1) * sizeof(float));
  if (!p) return NULL;
  for (int64_t i = 0; i < cnt; i++) p[i] = bm_load_f32(t->data, t->dtype, i);
  return p;
}

/* A zeroed f32 result buffer for out (NULL on out of memory). */
static float *alloc_res(const bm_tensor *out) {
  int64_t cnt = numel(out);
  return calloc((size_t)(cnt > 0 ? cnt : 1), sizeof(float));
}

/* Copies element si of src to element di of dst; converts if the dtypes differ. */
static void copy_elem(const bm_tensor *dst, int64_t di, const bm_tensor *src, int64_t si) {
  if (dst->dtype == src->dtype && dst->dtype != BM_DTYPE_I4) {
    size_t es = bm_dtype_nbytes(dst->dtype, 1);
    memcpy((char *)dst->data + di * es, (const char *)src->data + si * es, es);
  } else if (is_int(dst->dtype) && is_int(src->dtype)) {
    bm_store_i64(dst->data, dst->dtype, di, bm_load_i64(src->data, src->dtype, si));
  } else {
    bm_store_f32(dst->data, dst->dtype, di, bm_load_f32(src->data, src->dtype, si));
  }
}

static bool same_shape(const bm_tensor *a, const bm_tensor *b) {
  if (a->ndim != b->ndim) return false;
  for (int d = 0; d < a->ndim; d++)
    if (a->shape[d] != b->shape[d]) return false;
  return true;
}

/* ------------------------------------------------------------------ scalar semantics */

static float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

float bm_ref_unary_f32(bm_op op, float x) {
  switch (op) {
    case BM_OP_NEG: return -x;
    case BM_OP_ABS: return fabsf(x);
    case BM_OP_EXP: return expf(x);
    case BM_OP_LOG: return logf(x);
    case BM_OP_SQRT: return sqrtf(x);
    case BM_OP_RSQRT: return 1.0f / sqrtf(x);
    case BM_OP_RECIP: return 1.0f / x;
    case BM_OP_SQUARE: return x * x;
    case BM_OP_SIN: return sinf(x);
    case BM_OP_COS: return cosf(x);
    case BM_OP_TANH: return tanhf(x);
    case BM_OP_ERF: return erff(x);
    case BM_OP_SIGMOID: return sigmoidf(x);
    case BM_OP_RELU: return isnan(x) ? x : (x > 0.0f ? x : 0.0f);
    case BM_OP_SILU: return x * sigmoidf(x);
    case BM_OP_GELU: return 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2));
    case BM_OP_GELU_TANH: {
      const float k = 0.7978845608028654f; /* sqrt(2/pi) */
      return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
    }
    case BM_OP_QUICK_GELU: return x * sigmoidf(1.702f * x);
    case BM_OP_CAST: return x;
    default: return NAN;
  }
}

float bm_ref_binary_f32(bm_op op, float a, float b) {
  switch (op) {
    case BM_OP_ADD: return a + b;
    case BM_OP_SUB: return a - b;
    case BM_OP_MUL: return a * b;
    case BM_OP_DIV: return a / b;
    case BM_OP_POW: return powf(a, b);
    case BM_OP_MAX: return fmaxf(a, b);
    case BM_OP_MIN: return fminf(a, b);
    default: return NAN;
  }
}

/* ------------------------------------------------------------------ programs */

float bm_prog_eval(const bm_prog *prog, float *regs) {
  float r[BM_MAX_IN + BM_MAX_PROG];
  int nin = prog->nin;
  if (nin < 1 || nin > BM_MAX_IN || prog->n > BM_MAX_PROG) return NAN;
  for (int k = 0; k < nin; k++) r[k] = regs[k];
  for (int j = 0; j < prog->n; j++) {
    const bm_prog_ins *ins = &prog->ins[j];
    if (ins->op >= BM_OP_COUNT || ins->a >= nin + j) return NAN;
    unsigned fl = bm_op_table[ins->op].flags;
    float v;
    if (fl & BM_OPF_UNARY) {
      v = bm_ref_unary_f32((bm_op)ins->op, r[ins->a]);
    } else {
      float b;
      if (ins->flags & BM_PROG_IMM_B)
        b = ins->imm;
      else if (ins->b < nin + j)
        b = r[ins->b];
      else
        return NAN;
      v = bm_ref_binary_f32((bm_op)ins->op, r[ins->a], b);
    }
    r[nin + j] = v;
  }
  return prog->n ? r[nin + prog->n - 1] : r[0];
}

/* Checks that p is a well-formed program with `nin` input registers. */
static bm_status check_prog(const bm_node *n, const bm_prog *p, int nin) {
  if (p->nin != nin)
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "program has %d input registers, expected %d",
                    p->nin, nin);
  bm_status s = bm_prog_check(p, nin, "program");
  if (!s) return NULL;
  bm_status r = node_err(n, BM_ERR_INVALID_ARGUMENT, "%s", bm_status_message(s));
  bm_status_free(s);
  return r;
}

/* Applies n's epilogue (if any) to the f32 results res (one per element of
 * out), stores them into out in its dtype, and frees res. */
static bm_status finish(const bm_node *n, const bm_tensor *const *in, float *res,
                        bm_tensor *out) {
  int64_t cnt = numel(out);
  const bm_prog *p = &n->a.prog;
  if ((bm_op_table[n->op].flags & BM_OPF_EPILOGUE) && p->n > 0) {
    int base = bm_node_base_nin(n);
    int nx = p->nin - 1; /* extra operands in[base .. base+nx-1] */
    int64_t st[BM_MAX_IN][BM_MAX_DIMS];
    for (int k = 0; k < nx; k++) {
      bm_status s = bcast_check(n, in[base + k], base + k, out, st[k]);
      if (s) {
        free(res);
        return s;
      }
    }
    float regs[BM_MAX_IN];
    for (int64_t i = 0; i < cnt; i++) {
      regs[0] = res[i];
      for (int k = 0; k < nx; k++) {
        const bm_tensor *t = in[base + k];
        regs[1 + k] = bm_load_f32(t->data, t->dtype, strided_offset(i, out->ndim, out->shape, st[k]));
      }
      res[i] = bm_prog_eval(p, regs);
    }
  }
  for (int64_t i = 0; i < cnt; i++) bm_store_f32(out->data, out->dtype, i, res[i]);
  free(res);
  return NULL;
}

/* ------------------------------------------------------------------ shapes and symbols */

static const char *sym_name(const bm_graph *g, int sym) {
  return (sym >= 0 && sym < g->nsyms && g->syms[sym].name) ? g->syms[sym].name : "?";
}

/* Binds the graph's symbols from the input tensors and checks every input's
 * dtype, rank and static dims. */
static bm_status bind_inputs(bm_ictx *cx) {
  const bm_graph *g = cx->g;
  for (int i = 0; i < BM_MAX_SYMS; i++) cx->syms[i] = -1;
  for (int i = 0; i < g->ninputs; i++) {
    const bm_node *n = g->inputs[i];
    const bm_tensor *t = &cx->inputs[i];
    const char *name = n->name ? n->name : "?";
    if (t->dtype != n->dtype)
      return bm_status_make(BM_ERR_INVALID_ARGUMENT, "input '%s': dtype is %s, expected %s", name,
                            bm_dtype_name(t->dtype), bm_dtype_name(n->dtype));
    if (t->ndim != n->ndim)
      return bm_status_make(BM_ERR_INVALID_ARGUMENT, "input '%s': rank is %d, expected %d", name,
                            t->ndim, n->ndim);
    for (int d = 0; d < n->ndim; d++) {
      bm_dim dim = n->shape[d];
      int64_t got = t->shape[d];
      if (got < 0)
        return bm_status_make(BM_ERR_INVALID_ARGUMENT, "input '%s': dim %d is negative (%lld)",
                              name, d, (long long)got);
      if (bm_dim_is_static(dim)) {
        if (got != dim.add)
          return bm_status_make(BM_ERR_INVALID_ARGUMENT, "input '%s': dim %d is %lld, expected %lld",
                                name, d, (long long)got, (long long)dim.add);
        continue;
      }
      if (dim.sym >= g->nsyms || dim.sym >= BM_MAX_SYMS)
        return bm_status_make(BM_ERR_INVALID_ARGUMENT, "input '%s': dim %d uses undeclared symbol %d",
                              name, d, dim.sym);
      const char *sn = sym_name(g, dim.sym);
      int64_t diff = got - dim.add;
      if (diff % dim.mul != 0 || diff / dim.mul < 0)
        return bm_status_make(BM_ERR_INVALID_ARGUMENT,
                              "input '%s': dim %d is %lld, which is not %d*%s%+lld for any %s >= 0",
                              name, d, (long long)got, dim.mul, sn, (long long)dim.add, sn);
      int64_t v = diff / dim.mul;
      if (v > g->syms[dim.sym].max)
        return bm_status_make(BM_ERR_INVALID_ARGUMENT,
                              "input '%s': dim %d binds %s = %lld, above its max %lld", name, d, sn,
                              (long long)v, (long long)g->syms[dim.sym].max);
      if (cx->syms[dim.sym] >= 0 && cx->syms[dim.sym] != v)
        return bm_status_make(BM_ERR_INVALID_ARGUMENT,
                              "input '%s': dim %d binds %s = %lld, but an earlier input bound it to %lld",
                              name, d, sn, (long long)v, (long long)cx->syms[dim.sym]);
      cx->syms[dim.sym] = v;
    }
    if (numel(t) < 0)
      return bm_status_make(BM_ERR_INVALID_ARGUMENT, "input '%s': shape is too large", name);
    if (numel(t) > 0 && !t->data)
      return bm_status_make(BM_ERR_INVALID_ARGUMENT, "input '%s': data is NULL", name);
  }
  return NULL;
}

/* The bound shape of node n. */
static bm_status node_shape(const bm_ictx *cx, const bm_node *n, int64_t *shape) {
  if (n->ndim < 0 || n->ndim > BM_MAX_DIMS)
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "rank %d is out of range", n->ndim);
  for (int d = 0; d < n->ndim; d++) {
    bm_dim dim = n->shape[d];
    if (!bm_dim_is_static(dim)) {
      if (dim.sym >= cx->g->nsyms || dim.sym >= BM_MAX_SYMS)
        return node_err(n, BM_ERR_INVALID_ARGUMENT, "dim %d uses undeclared symbol %d", d, dim.sym);
      if (cx->syms[dim.sym] < 0)
        return node_err(n, BM_ERR_INVALID_ARGUMENT, "symbol '%s' (dim %d) is not bound by any input",
                        sym_name(cx->g, dim.sym), d);
    }
    shape[d] = bm_dim_eval(dim, cx->syms);
    if (shape[d] < 0)
      return node_err(n, BM_ERR_INVALID_ARGUMENT, "dim %d evaluates to %lld", d,
                      (long long)shape[d]);
  }
  return NULL;
}

/* ------------------------------------------------------------------ states */

bm_status bm_interp_states_create(bm_interp_states **out) {
  if (!out) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_interp_states_create: NULL out");
  *out = calloc(1, sizeof **out);
  return *out ? NULL : bm_status_make(BM_ERR_OUT_OF_MEMORY, "interp states");
}

void bm_interp_states_destroy(bm_interp_states *st) {
  if (!st) return;
  for (int i = 0; i < st->n; i++) {
    free(st->e[i].name);
    bm_tensor_free(&st->e[i].t);
  }
  free(st->e);
  free(st);
}

void bm_interp_states_reset(bm_interp_states *st) {
  if (!st) return;
  for (int i = 0; i < st->n; i++) {
    size_t bytes = bm_tensor_nbytes(&st->e[i].t);
    if (bytes) memset(st->e[i].t.data, 0, bytes);
  }
}

const bm_tensor *bm_interp_states_find(const bm_interp_states *st, const char *name) {
  if (!st || !name) return NULL;
  for (int i = 0; i < st->n; i++)
    if (strcmp(st->e[i].name, name) == 0) return &st->e[i].t;
  return NULL;
}

/* The store's tensor for STATE node n (shape bound into want), created
 * zeroed on first use; a different dtype or shape under the same name is an
 * error naming it. */
static bm_status state_get(bm_interp_states *st, const bm_node *n, const bm_tensor *want,
                           bm_tensor **out) {
  const char *name = n->name ? n->name : "";
  for (int i = 0; i < st->n; i++) {
    bm_tensor *t = &st->e[i].t;
    if (strcmp(st->e[i].name, name) != 0) continue;
    if (t->dtype != want->dtype || !same_shape(t, want))
      return node_err(n, BM_ERR_INVALID_ARGUMENT,
                      "state '%s' is %s of rank %d (%lld elements) in the store, this node wants %s of "
                      "rank %d (%lld elements)",
                      name, bm_dtype_name(t->dtype), t->ndim, (long long)numel(t),
                      bm_dtype_name(want->dtype), want->ndim, (long long)numel(want));
    *out = t;
    return NULL;
  }
  if (st->n == st->cap) {
    int cap = st->cap ? 2 * st->cap : 16;
    bm_state_entry *e = realloc(st->e, (size_t)cap * sizeof *e);
    if (!e) return oom(n);
    st->e = e;
    st->cap = cap;
  }
  bm_state_entry *e = &st->e[st->n];
  memset(e, 0, sizeof *e);
  e->name = strdup(name);
  if (!e->name) return oom(n);
  bm_status s = bm_tensor_alloc(&e->t, want->dtype, want->ndim, want->shape);
  if (s) {
    free(e->name);
    return s;
  }
  st->n++;
  *out = &e->t;
  return NULL;
}

/* ------------------------------------------------------------------ sources */

static bm_status ref_source(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                            bm_tensor *out) {
  int64_t shape[BM_MAX_DIMS];
  BM_RETURN_IF_ERROR(node_shape(cx, n, shape));
  memset(out, 0, sizeof *out);
  out->dtype = n->dtype;
  out->ndim = n->ndim;
  memcpy(out->shape, shape, sizeof(int64_t) * (size_t)n->ndim);
  if (numel(out) < 0) return node_err(n, BM_ERR_INVALID_ARGUMENT, "shape is too large");
  size_t want = bm_dtype_nbytes(n->dtype, numel(out));
  const char *name = n->name ? n->name : "?";
  cx->borrowed = true;
  if (n->op == BM_OP_STATE) {
    bm_tensor *t = NULL;
    BM_RETURN_IF_ERROR(state_get(cx->states, n, out, &t));
    out->data = t->data;
    return NULL;
  }
  if (n->op == BM_OP_INPUT) {
    for (int i = 0; i < cx->g->ninputs; i++)
      if (cx->g->inputs[i] == n) {
        out->data = cx->inputs[i].data; /* checked by bind_inputs */
        return NULL;
      }
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "input '%s' is not in the graph's input list", name);
  }
  if (!n->data && want > 0) {
    if (n->op == BM_OP_WEIGHT)
      return bm_status_make(BM_ERR_NOT_FOUND, "weight '%s' is not bound", name);
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "constant has no data");
  }
  if (n->data_size != want)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s '%s' has %zu bytes, expected %zu (%s, %lld elements)",
                          bm_op_name(n->op), name, n->data_size, want, bm_dtype_name(n->dtype),
                          (long long)numel(out));
  out->data = (void *)n->data;
  return NULL;
}

/* ------------------------------------------------------------------ elementwise */

static bm_status ref_unary(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                           bm_tensor *out) {
  const bm_tensor *x = in[0];
  if (!same_shape(x, out))
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "input and output shapes differ");
  int64_t cnt = numel(out);
  if (n->op == BM_OP_CAST && is_int(x->dtype) && is_int(out->dtype)) {
    /* integer -> integer: exact, saturating */
    for (int64_t i = 0; i < cnt; i++)
      bm_store_i64(out->data, out->dtype, i, bm_load_i64(x->data, x->dtype, i));
    return NULL;
  }
  float *res = alloc_res(out);
  if (!res) return oom(n);
  for (int64_t i = 0; i < cnt; i++)
    res[i] = bm_ref_unary_f32(n->op, bm_load_f32(x->data, x->dtype, i));
  return finish(n, in, res, out);
}

static bm_status ref_binary(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                            bm_tensor *out) {
  const bm_tensor *a = in[0], *b = in[1];
  int64_t sa[BM_MAX_DIMS], sb[BM_MAX_DIMS];
  BM_RETURN_IF_ERROR(bcast_check(n, a, 0, out, sa));
  BM_RETURN_IF_ERROR(bcast_check(n, b, 1, out, sb));
  float *res = alloc_res(out);
  if (!res) return oom(n);
  int64_t cnt = numel(out);
  for (int64_t i = 0; i < cnt; i++) {
    float x = bm_load_f32(a->data, a->dtype, strided_offset(i, out->ndim, out->shape, sa));
    float y = bm_load_f32(b->data, b->dtype, strided_offset(i, out->ndim, out->shape, sb));
    res[i] = bm_ref_binary_f32(n->op, x, y);
  }
  return finish(n, in, res, out);
}

/* FUSED: the program over all inputs, broadcast to the output. */
static bm_status ref_fused(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                           bm_tensor *out) {
  int64_t st[BM_MAX_IN][BM_MAX_DIMS];
  for (int k = 0; k < n->nin; k++) BM_RETURN_IF_ERROR(bcast_check(n, in[k], k, out, st[k]));
  float *res = alloc_res(out);
  if (!res) return oom(n);
  int64_t cnt = numel(out);
  float regs[BM_MAX_IN];
  for (int64_t i = 0; i < cnt; i++) {
    for (int k = 0; k < n->nin; k++)
      regs[k] = bm_load_f32(in[k]->data, in[k]->dtype,
                            strided_offset(i, out->ndim, out->shape, st[k]));
    res[i] = bm_prog_eval(&n->a.prog, regs);
  }
  for (int64_t i = 0; i < cnt; i++) bm_store_f32(out->data, out->dtype, i, res[i]);
  free(res);
  return NULL;
}

/* ------------------------------------------------------------------ linear algebra */

static bm_status ref_matmul(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                            bm_tensor *out) {
  const bm_tensor *a = in[0], *b = in[1];
  int ra = a->ndim, rb = b->ndim, ro = out->ndim;
  if (ra < 2 || rb < 2 || ro < 2)
    return node_err(n, BM_ERR_UNSUPPORTED, "operands must have rank >= 2 (got %d, %d)", ra, rb);
  bool ta = n->a.trans_a, tb = n->a.trans_b;
  int64_t M = out->shape[ro - 2], N = out->shape[ro - 1];
  int64_t am = ta ? a->shape[ra - 1] : a->shape[ra - 2];
  int64_t K = ta ? a->shape[ra - 2] : a->shape[ra - 1];
  int64_t bk = tb ? b->shape[rb - 1] : b->shape[rb - 2];
  int64_t bn = tb ? b->shape[rb - 2] : b->shape[rb - 1];
  if (am != M || bn != N || bk != K)
    return node_err(n, BM_ERR_INVALID_ARGUMENT,
                    "a is %lldx%lld, b is %lldx%lld, output %lldx%lld (after transposes)",
                    (long long)am, (long long)K, (long long)bk, (long long)bn, (long long)M,
                    (long long)N);
  /* batch dims: a's and b's leading dims broadcast to the output's */
  int nb = ro - 2;
  int64_t sa[BM_MAX_DIMS], sb[BM_MAX_DIMS];
  if (!bcast_strides(ra - 2, a->shape, nb, out->shape, sa) ||
      !bcast_strides(rb - 2, b->shape, nb, out->shape, sb))
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "batch dims do not broadcast");
  int64_t batches = prod(out->shape, 0, nb);
  float *af = load_all_f32(a), *bf = load_all_f32(b), *res = alloc_res(out);
  if (!af || !bf || !res) {
    free(af), free(bf), free(res);
    return oom(n);
  }
  for (int64_t bi = 0; bi < batches; bi++) {
    const float *A = af + strided_offset(bi, nb, out->shape, sa) * M * K; /* (M, K) or (K, M) */
    const float *B = bf + strided_offset(bi, nb, out->shape, sb) * K * N; /* (K, N) or (N, K) */
    float *C = res + bi * M * N;                                          /* (M, N) */
    for (int64_t i = 0; i < M; i++) {
      float *c = C + i * N;
      if (tb) { /* rows of B are columns of b: dot products */
        for (int64_t j = 0; j < N; j++) {
          float sum = 0.0f;
          for (int64_t k = 0; k < K; k++) sum += (ta ? A[k * M + i] : A[i * K + k]) * B[j * K + k];
          c[j] = sum;
        }
      } else { /* i-k-j: stream rows of B */
        for (int64_t k = 0; k < K; k++) {
          float aik = ta ? A[k * M + i] : A[i * K + k];
          const float *brow = B + k * N;
          for (int64_t j = 0; j < N; j++) c[j] += aik * brow[j];
        }
      }
    }
  }
  free(af);
  free(bf);
  return finish(n, in, res, out);
}

/* x NCHW and w (O, Cg, KH, KW), or with layout BM_CONV_NHWC x (N, H, W, C)
 * and w (O, KH, KW, Cg); the output is NCHW either way */
static bm_status ref_conv2d(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                            bm_tensor *out) {
  const bm_tensor *x = in[0], *w = in[1];
  const bm_tensor *bias = bm_node_base_nin(n) >= 3 ? in[2] : NULL;
  if (x->ndim != 4 || w->ndim != 4 || out->ndim != 4)
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "x, w and output must have rank 4");
  if (n->a.layout != BM_CONV_NCHW && n->a.layout != BM_CONV_NHWC)
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "unknown conv layout %d", n->a.layout);
  const bool nhwc = n->a.layout == BM_CONV_NHWC;
  int64_t N = x->shape[0], C = x->shape[nhwc ? 3 : 1], H = x->shape[nhwc ? 1 : 2], W = x->shape[nhwc ? 2 : 3];
  int64_t O = w->shape[0], Cg = w->shape[nhwc ? 3 : 1], KH = w->shape[nhwc ? 1 : 2], KW = w->shape[nhwc ? 2 : 3];
  int64_t OH = out->shape[2], OW = out->shape[3];
  int64_t G = n->a.groups > 0 ? n->a.groups : 1;
  int64_t sh = n->a.stride[0], sw = n->a.stride[1];
  int64_t ph = n->a.pad[0], pw = n->a.pad[1];
  int64_t dh = n->a.dilation[0], dw = n->a.dilation[1];
  if (sh <= 0 || sw <= 0 || dh <= 0 || dw <= 0)
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "stride and dilation must be positive");
  if (Cg * G != C || O % G != 0 || out->shape[0] != N || out->shape[1] != O)
    return node_err(n, BM_ERR_INVALID_ARGUMENT,
                    "x has %lld channels, w is (%lld, %lld, ...), groups %lld", (long long)C,
                    (long long)O, (long long)Cg, (long long)G);
  if (bias && numel(bias) != O)
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "bias has %lld elements, expected %lld",
                    (long long)numel(bias), (long long)O);
  /* element strides of x's (c, h, w) and of w's (c, kh, kw) within an image / output channel */
  const int64_t xsc = nhwc ? 1 : H * W, xsh = nhwc ? W * C : W, xsw = nhwc ? C : 1;
  const int64_t wsc = nhwc ? 1 : KH * KW, wsh = nhwc ? KW * Cg : KW, wsw = nhwc ? Cg : 1;
  int64_t Og = O / G;
  float *xf = load_all_f32(x), *wf = load_all_f32(w), *res = alloc_res(out);
  if (!xf || !wf || !res) {
    free(xf), free(wf), free(res);
    return oom(n);
  }
  for (int64_t b = 0; b < N; b++) {
    for (int64_t o = 0; o < O; o++) {
      int64_t g = o / Og;
      float *acc = res + (b * O + o) * OH * OW; /* (OH, OW) */
      for (int64_t c = 0; c < Cg; c++) {
        const float *xp = xf + b * C * H * W + (g * Cg + c) * xsc; /* x[b, g*Cg + c, 0, 0] */
        for (int64_t kh = 0; kh < KH; kh++) {
          for (int64_t kw = 0; kw < KW; kw++) {
            float wv = wf[o * Cg * KH * KW + c * wsc + kh * wsh + kw * wsw];
            for (int64_t oh = 0; oh < OH; oh++) {
              int64_t ih = oh * sh - ph + kh * dh;
              if (ih < 0 || ih >= H) continue;
              for (int64_t ow = 0; ow < OW; ow++) {
                int64_t iw = ow * sw - pw + kw * dw;
                if (iw < 0 || iw >= W) continue;
                acc[oh * OW + ow] += wv * xp[ih * xsh + iw * xsw];
              }
            }
          }
        }
      }
      if (bias) {
        float bv = bm_load_f32(bias->data, bias->dtype, o);
        for (int64_t i = 0; i < OH * OW; i++) acc[i] += bv;
      }
    }
  }
  free(xf);
  free(wf);
  return finish(n, in, res, out);
}

/* Dequantizes q (N, K) with scale (N, G) into a malloc'd f32 (N, K) array. */
static bm_status dequant_f32(const bm_node *n, const bm_tensor *q, const bm_tensor *scale,
                             float **outp) {
  *outp = NULL;
  if (q->ndim != 2 || scale->ndim != 2)
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "q and scale must have rank 2");
  int64_t N = q->shape[0], K = q->shape[1], G = scale->shape[1];
  if (scale->shape[0] != N || G <= 0 || K % G != 0)
    return node_err(n, BM_ERR_INVALID_ARGUMENT,
                    "q is (%lld, %lld) but scale is (%lld, %lld): need (N, G) with K %% G == 0",
                    (long long)N, (long long)K, (long long)scale->shape[0], (long long)G);
  int64_t gs = K / G; /* group size */
  float *d = malloc((size_t)(N * K > 0 ? N * K : 1) * sizeof(float));
  if (!d) return oom(n);
  for (int64_t r = 0; r < N; r++)
    for (int64_t k = 0; k < K; k++)
      d[r * K + k] = bm_load_f32(q->data, q->dtype, r * K + k) *
                     bm_load_f32(scale->data, scale->dtype, r * G + k / gs);
  *outp = d;
  return NULL;
}

static bm_status ref_dequant(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                             bm_tensor *out) {
  float *d;
  BM_RETURN_IF_ERROR(dequant_f32(n, in[0], in[1], &d));
  if (!same_shape(in[0], out)) {
    free(d);
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "output shape differs from q's");
  }
  return finish(n, in, d, out);
}

static bm_status ref_qmatmul(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                             bm_tensor *out) {
  const bm_tensor *x = in[0];
  float *wq;
  BM_RETURN_IF_ERROR(dequant_f32(n, in[1], in[2], &wq)); /* (N, K) */
  int64_t N = in[1]->shape[0], K = in[1]->shape[1];
  int64_t M = x->ndim >= 1 && K > 0 ? numel(x) / K : 0;
  if (x->ndim < 1 || x->shape[x->ndim - 1] != K || out->shape[out->ndim - 1] != N ||
      numel(out) != M * N) {
    free(wq);
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "x (..., K) does not match q (%lld, %lld)",
                    (long long)N, (long long)K);
  }
  float *xf = load_all_f32(x), *res = alloc_res(out);
  if (!xf || !res) {
    free(wq), free(xf), free(res);
    return oom(n);
  }
  for (int64_t m = 0; m < M; m++)
    for (int64_t j = 0; j < N; j++) {
      float sum = 0.0f;
      for (int64_t k = 0; k < K; k++) sum += xf[m * K + k] * wq[j * K + k];
      res[m * N + j] = sum;
    }
  free(wq);
  free(xf);
  return finish(n, in, res, out);
}

/* ------------------------------------------------------------------ data movement */

static bm_status ref_reshape(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                             bm_tensor *out) {
  const bm_tensor *x = in[0];
  if (numel(x) != numel(out))
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "reshape of %lld elements to %lld elements",
                    (long long)numel(x), (long long)numel(out));
  if (x->dtype == out->dtype) {
    size_t bytes = bm_tensor_nbytes(out);
    if (bytes) memcpy(out->data, x->data, bytes);
  } else {
    for (int64_t i = 0; i < numel(out); i++) copy_elem(out, i, x, i);
  }
  return NULL;
}

static bm_status ref_permute(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                             bm_tensor *out) {
  const bm_tensor *x = in[0];
  int r = x->ndim;
  if (out->ndim != r) return node_err(n, BM_ERR_INVALID_ARGUMENT, "rank changed");
  int64_t xs[BM_MAX_DIMS], st[BM_MAX_DIMS];
  strides_of(r, x->shape, xs);
  unsigned seen = 0;
  for (int i = 0; i < r; i++) {
    int p = n->a.perm[i];
    if (p < 0 || p >= r || (seen & (1u << p)) || out->shape[i] != x->shape[p])
      return node_err(n, BM_ERR_INVALID_ARGUMENT, "perm[%d] = %d is invalid", i, p);
    seen |= 1u << p;
    st[i] = xs[p]; /* out axis i walks in axis perm[i] */
  }
  int64_t cnt = numel(out);
  for (int64_t o = 0; o < cnt; o++) copy_elem(out, o, x, strided_offset(o, r, out->shape, st));
  return NULL;
}

static bm_status ref_slice(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                           bm_tensor *out) {
  const bm_tensor *x = in[0];
  int ax = n->a.axis, r = x->ndim;
  if (ax < 0 || ax >= r || out->ndim != r)
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "axis %d out of range for rank %d", ax, r);
  int64_t dim = x->shape[ax], step = n->a.step;
  if (step <= 0) return node_err(n, BM_ERR_INVALID_ARGUMENT, "step %lld must be positive", (long long)step);
  int64_t begin = n->a.begin, end = n->a.end;
  if (begin < 0) begin += dim; /* python-style negative indices */
  if (end < 0) end += dim;
  begin = begin < 0 ? 0 : begin > dim ? dim : begin;
  end = end < begin ? begin : end > dim ? dim : end;
  int64_t len = (end - begin + step - 1) / step;
  for (int d = 0; d < r; d++) {
    int64_t want = d == ax ? len : x->shape[d];
    if (out->shape[d] != want)
      return node_err(n, BM_ERR_INVALID_ARGUMENT, "output dim %d is %lld, slice gives %lld", d,
                      (long long)out->shape[d], (long long)want);
  }
  int64_t xs[BM_MAX_DIMS];
  strides_of(r, x->shape, xs);
  int64_t base = begin * xs[ax];
  xs[ax] *= step;
  int64_t cnt = numel(out);
  for (int64_t o = 0; o < cnt; o++) copy_elem(out, o, x, base + strided_offset(o, r, out->shape, xs));
  return NULL;
}

static bm_status ref_concat(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                            bm_tensor *out) {
  int ax = n->a.axis, r = out->ndim;
  if (ax < 0 || ax >= r) return node_err(n, BM_ERR_INVALID_ARGUMENT, "axis %d out of range", ax);
  int64_t total = 0;
  for (int k = 0; k < n->nin; k++) {
    const bm_tensor *t = in[k];
    if (t->ndim != r) return node_err(n, BM_ERR_INVALID_ARGUMENT, "input %d has rank %d, expected %d", k, t->ndim, r);
    for (int d = 0; d < r; d++)
      if (d != ax && t->shape[d] != out->shape[d])
        return node_err(n, BM_ERR_INVALID_ARGUMENT, "input %d dim %d is %lld, expected %lld", k, d,
                        (long long)t->shape[d], (long long)out->shape[d]);
    total += t->shape[ax];
  }
  if (total != out->shape[ax])
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "inputs add up to %lld along axis %d, output has %lld",
                    (long long)total, ax, (long long)out->shape[ax]);
  int64_t outer = prod(out->shape, 0, ax), inner = prod(out->shape, ax + 1, r);
  for (int64_t o = 0; o < outer; o++) {
    int64_t at = 0; /* position along the axis */
    for (int k = 0; k < n->nin; k++) {
      int64_t len = in[k]->shape[ax] * inner;
      for (int64_t j = 0; j < len; j++)
        copy_elem(out, (o * out->shape[ax] + at) * inner + j, in[k], o * len + j);
      at += in[k]->shape[ax];
    }
  }
  return NULL;
}

static bm_status ref_gather(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                            bm_tensor *out) {
  const bm_tensor *table = in[0], *idx = in[1]; /* (V, ...), (...) */
  if (table->ndim < 1) return node_err(n, BM_ERR_INVALID_ARGUMENT, "table must have rank >= 1");
  int64_t V = table->shape[0];
  int64_t row = prod(table->shape, 1, table->ndim);
  int64_t cnt = numel(idx);
  if (numel(out) != cnt * row)
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "output has %lld elements, expected %lld",
                    (long long)numel(out), (long long)(cnt * row));
  for (int64_t p = 0; p < cnt; p++) {
    int64_t v = bm_load_i64(idx->data, idx->dtype, p);
    if (v < 0 || v >= V)
      return node_err(n, BM_ERR_INVALID_ARGUMENT,
                      "index %lld (element %lld of the indices) is out of range [0, %lld)",
                      (long long)v, (long long)p, (long long)V);
    for (int64_t j = 0; j < row; j++) copy_elem(out, p * row + j, table, v * row + j);
  }
  return NULL;
}

static bm_status ref_pad(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                         bm_tensor *out) {
  const bm_tensor *x = in[0];
  int r = x->ndim;
  if (out->ndim != r) return node_err(n, BM_ERR_INVALID_ARGUMENT, "rank changed");
  for (int d = 0; d < r; d++)
    if (out->shape[d] != x->shape[d] + n->a.pads[2 * d] + n->a.pads[2 * d + 1])
      return node_err(n, BM_ERR_INVALID_ARGUMENT, "output dim %d is %lld, expected %lld", d,
                      (long long)out->shape[d],
                      (long long)(x->shape[d] + n->a.pads[2 * d] + n->a.pads[2 * d + 1]));
  int64_t xs[BM_MAX_DIMS], c[BM_MAX_DIMS];
  strides_of(r, x->shape, xs);
  int64_t cnt = numel(out);
  for (int64_t o = 0; o < cnt; o++) {
    unravel(o, r, out->shape, c);
    int64_t off = 0;
    bool inside = true;
    for (int d = 0; d < r; d++) {
      int64_t ci = c[d] - n->a.pads[2 * d];
      if (ci < 0 || ci >= x->shape[d]) inside = false;
      off += ci * xs[d];
    }
    if (inside)
      copy_elem(out, o, x, off);
    else
      bm_store_f32(out->data, out->dtype, o, n->a.value);
  }
  return NULL;
}

static bm_status ref_upsample(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                              bm_tensor *out) {
  const bm_tensor *x = in[0];
  int r = x->ndim;
  int64_t s = n->a.scale;
  if (r < 2 || out->ndim != r || s <= 0)
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "needs rank >= 2 and a positive scale");
  for (int d = 0; d < r; d++)
    if (out->shape[d] != x->shape[d] * (d >= r - 2 ? s : 1))
      return node_err(n, BM_ERR_INVALID_ARGUMENT, "output dim %d is %lld, expected %lld", d,
                      (long long)out->shape[d], (long long)(x->shape[d] * (d >= r - 2 ? s : 1)));
  int64_t xs[BM_MAX_DIMS], c[BM_MAX_DIMS];
  strides_of(r, x->shape, xs);
  int64_t cnt = numel(out);
  for (int64_t o = 0; o < cnt; o++) {
    unravel(o, r, out->shape, c);
    c[r - 2] /= s; /* out[..., h, w] = in[..., h/s, w/s] */
    c[r - 1] /= s;
    int64_t off = 0;
    for (int d = 0; d < r; d++) off += c[d] * xs[d];
    copy_elem(out, o, x, off);
  }
  return NULL;
}

/* ------------------------------------------------------------------ reductions */

static bm_status ref_reduce(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                            bm_tensor *out) {
  const bm_tensor *x = in[0];
  int r = x->ndim;
  uint32_t axes = n->a.axes;
  if (r < 32 && (axes >> r) != 0)
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "axes mask 0x%x has bits past rank %d", axes, r);
  /* ost[d]: stride of input axis d in the output (0 for reduced axes) */
  int64_t ost[BM_MAX_DIMS], acc = 1, count = 1;
  for (int d = r - 1; d >= 0; d--) {
    if (axes & (1u << d)) {
      ost[d] = 0;
      count *= x->shape[d];
    } else {
      ost[d] = acc;
      acc *= x->shape[d];
    }
  }
  if (acc != numel(out))
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "output has %lld elements, expected %lld",
                    (long long)numel(out), (long long)acc);
  float *res = alloc_res(out);
  if (!res) return oom(n);
  int64_t cnt = numel(out);
  if (n->op == BM_OP_REDUCE_MAX)
    for (int64_t o = 0; o < cnt; o++) res[o] = -INFINITY;
  int64_t xn = numel(x);
  for (int64_t i = 0; i < xn; i++) {
    float v = bm_load_f32(x->data, x->dtype, i);
    int64_t o = strided_offset(i, r, x->shape, ost);
    if (n->op == BM_OP_REDUCE_MAX) {
      if (v > res[o] || isnan(v)) res[o] = isnan(res[o]) ? res[o] : v; /* NaN propagates */
    } else {
      res[o] += v;
    }
  }
  if (n->op == BM_OP_MEAN)
    for (int64_t o = 0; o < cnt; o++) res[o] = count > 0 ? res[o] / (float)count : NAN;
  return finish(n, in, res, out);
}

static bm_status ref_softmax(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                             bm_tensor *out) {
  const bm_tensor *x = in[0];
  int ax = n->a.axis, r = x->ndim;
  if (ax < 0 || ax >= r || !same_shape(x, out))
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "axis %d out of range for rank %d", ax, r);
  int64_t outer = prod(x->shape, 0, ax), L = x->shape[ax], inner = prod(x->shape, ax + 1, r);
  float *res = load_all_f32(x);
  if (!res) return oom(n);
  for (int64_t o = 0; o < outer; o++)
    for (int64_t in_ = 0; in_ < inner; in_++) {
      float *p = res + o * L * inner + in_; /* element j at p[j * inner] */
      float mx = -INFINITY;
      for (int64_t j = 0; j < L; j++) mx = fmaxf(mx, p[j * inner]);
      float sum = 0.0f;
      for (int64_t j = 0; j < L; j++) {
        p[j * inner] = expf(p[j * inner] - mx);
        sum += p[j * inner];
      }
      for (int64_t j = 0; j < L; j++) p[j * inner] /= sum;
    }
  return finish(n, in, res, out);
}

/* ------------------------------------------------------------------ normalization */

/* Optional weight/bias of a norm: input k if the op has it, checked to have d elements. */
static bm_status norm_param(const bm_node *n, const bm_tensor *const *in, int k, int64_t d,
                            const bm_tensor **out) {
  *out = NULL;
  if (bm_node_base_nin(n) <= k) return NULL;
  if (numel(in[k]) != d)
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "input %d has %lld elements, expected %lld", k,
                    (long long)numel(in[k]), (long long)d);
  *out = in[k];
  return NULL;
}

static bm_status ref_layer_norm(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                                bm_tensor *out) {
  const bm_tensor *x = in[0], *w, *b;
  if (x->ndim < 1 || !same_shape(x, out))
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "x must have rank >= 1 and the output's shape");
  int64_t D = x->shape[x->ndim - 1], rows = D ? numel(x) / D : 0;
  BM_RETURN_IF_ERROR(norm_param(n, in, 1, D, &w));
  BM_RETURN_IF_ERROR(norm_param(n, in, 2, D, &b));
  float *res = load_all_f32(x);
  if (!res) return oom(n);
  for (int64_t r = 0; r < rows; r++) {
    float *p = res + r * D; /* (D) */
    float mean = 0.0f, var = 0.0f;
    for (int64_t i = 0; i < D; i++) mean += p[i];
    mean /= (float)D;
    for (int64_t i = 0; i < D; i++) var += (p[i] - mean) * (p[i] - mean); /* biased */
    var /= (float)D;
    float rstd = 1.0f / sqrtf(var + n->a.eps);
    for (int64_t i = 0; i < D; i++) {
      float y = (p[i] - mean) * rstd;
      if (w) y *= bm_load_f32(w->data, w->dtype, i);
      if (b) y += bm_load_f32(b->data, b->dtype, i);
      p[i] = y;
    }
  }
  return finish(n, in, res, out);
}

static bm_status ref_group_norm(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                                bm_tensor *out) {
  const bm_tensor *x = in[0], *w, *b;
  if (x->ndim < 2 || !same_shape(x, out))
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "x must be (N, C, ...) with the output's shape");
  int64_t N = x->shape[0], C = x->shape[1], S = prod(x->shape, 2, x->ndim), G = n->a.groups;
  if (G <= 0 || C % G != 0)
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "%lld channels do not split into %lld groups",
                    (long long)C, (long long)G);
  BM_RETURN_IF_ERROR(norm_param(n, in, 1, C, &w));
  BM_RETURN_IF_ERROR(norm_param(n, in, 2, C, &b));
  float *res = load_all_f32(x);
  if (!res) return oom(n);
  int64_t cg = C / G, len = cg * S; /* a group is cg channels times S spatial elements */
  for (int64_t i = 0; i < N; i++)
    for (int64_t g = 0; g < G; g++) {
      float *p = res + (i * C + g * cg) * S; /* (cg, S) */
      float mean = 0.0f, var = 0.0f;
      for (int64_t j = 0; j < len; j++) mean += p[j];
      mean /= (float)len;
      for (int64_t j = 0; j < len; j++) var += (p[j] - mean) * (p[j] - mean);
      var /= (float)len;
      float rstd = 1.0f / sqrtf(var + n->a.eps);
      for (int64_t c = 0; c < cg; c++) {
        int64_t ch = g * cg + c;
        float wv = w ? bm_load_f32(w->data, w->dtype, ch) : 1.0f;
        float bv = b ? bm_load_f32(b->data, b->dtype, ch) : 0.0f;
        for (int64_t s = 0; s < S; s++) {
          float y = (p[c * S + s] - mean) * rstd;
          if (w) y *= wv;
          if (b) y += bv;
          p[c * S + s] = y;
        }
      }
    }
  return finish(n, in, res, out);
}

static bm_status ref_rms_norm(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                              bm_tensor *out) {
  const bm_tensor *x = in[0], *w;
  if (x->ndim < 1 || !same_shape(x, out))
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "x must have rank >= 1 and the output's shape");
  int64_t D = x->shape[x->ndim - 1], rows = D ? numel(x) / D : 0;
  BM_RETURN_IF_ERROR(norm_param(n, in, 1, D, &w));
  float *res = load_all_f32(x);
  if (!res) return oom(n);
  for (int64_t r = 0; r < rows; r++) {
    float *p = res + r * D; /* (D) */
    float ss = 0.0f;
    for (int64_t i = 0; i < D; i++) ss += p[i] * p[i];
    float scale = 1.0f / sqrtf(ss / (float)D + n->a.eps);
    for (int64_t i = 0; i < D; i++) {
      float y = p[i] * scale;
      if (w) y *= bm_load_f32(w->data, w->dtype, i);
      p[i] = y;
    }
  }
  return finish(n, in, res, out);
}

/* ------------------------------------------------------------------ transformer */

static bm_status ref_rope(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                          bm_tensor *out) {
  const bm_tensor *x = in[0], *pos = in[1], *freqs = in[2];
  int r = x->ndim;
  if (r < 3 || !same_shape(x, out))
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "x must be (B, S, H, D) with the output's shape");
  int64_t S = x->shape[r - 3], H = x->shape[r - 2], D = x->shape[r - 1];
  int64_t B = prod(x->shape, 0, r - 3);
  int64_t half = numel(freqs), R = 2 * half;
  int mode = n->a.rope_mode;
  if (R > D || (mode != 0 && mode != 1))
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "rotary dims %lld > head dim %lld or bad mode %d",
                    (long long)R, (long long)D, mode);
  int64_t np = numel(pos);
  if (np != B * S && np != S)
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "pos has %lld elements, expected %lld or %lld",
                    (long long)np, (long long)(B * S), (long long)S);
  float *res = load_all_f32(x);
  if (!res) return oom(n);
  for (int64_t b = 0; b < B; b++)
    for (int64_t s = 0; s < S; s++) {
      float p = bm_load_f32(pos->data, pos->dtype, np == S ? s : b * S + s);
      for (int64_t h = 0; h < H; h++) {
        float *v = res + ((b * S + s) * H + h) * D; /* (D) */
        for (int64_t i = 0; i < half; i++) {
          float angle = p * bm_load_f32(freqs->data, freqs->dtype, i);
          float c = cosf(angle), sn = sinf(angle);
          int64_t ia = mode == 0 ? i : 2 * i, ib = mode == 0 ? i + half : 2 * i + 1;
          float a = v[ia], bb = v[ib];
          v[ia] = a * c - bb * sn;
          v[ib] = bb * c + a * sn;
        }
      }
    }
  return finish(n, in, res, out);
}

static bm_status ref_attention(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                               bm_tensor *out) {
  const bm_tensor *q = in[0], *k = in[1], *v = in[2];
  int at = 3;
  const bm_tensor *mask = (n->a.attn_flags & BM_ATTN_HAS_MASK) ? in[at++] : NULL;
  const bm_tensor *kv_len = (n->a.attn_flags & BM_ATTN_HAS_KV_LEN) ? in[at++] : NULL;
  if (at != bm_node_base_nin(n))
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "attn_flags 0x%x do not match %d inputs",
                    (unsigned)n->a.attn_flags, bm_node_base_nin(n));
  if (q->ndim != 4 || k->ndim != 4 || v->ndim != 4 || out->ndim != 4)
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "q, k, v and output must have rank 4");
  int64_t B = q->shape[0], Hq = q->shape[1], Sq = q->shape[2], D = q->shape[3];
  int64_t Bk = k->shape[0], Hkv = k->shape[1], Sk = k->shape[2], Dv = v->shape[3];
  bool batch_ok = kv_len ? Bk >= B : Bk == B;
  if (!batch_ok || v->shape[0] != Bk || v->shape[1] != Hkv || v->shape[2] != Sk ||
      k->shape[3] != D || Hkv <= 0 || Hq % Hkv != 0)
    return node_err(n, BM_ERR_INVALID_ARGUMENT,
                    "q (%lld, %lld, %lld, %lld), k (%lld, %lld, %lld, %lld), v (..., %lld) do not fit",
                    (long long)B, (long long)Hq, (long long)Sq, (long long)D,
                    (long long)k->shape[0], (long long)Hkv, (long long)Sk, (long long)k->shape[3],
                    (long long)Dv);
  if (kv_len && (kv_len->ndim != 1 || kv_len->shape[0] != B))
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "kv_len must have shape (%lld)", (long long)B);
  int64_t want[4] = {B, Hq, Sq, Dv};
  for (int d = 0; d < 4; d++)
    if (out->shape[d] != want[d])
      return node_err(n, BM_ERR_INVALID_ARGUMENT, "output dim %d is %lld, expected %lld", d,
                      (long long)out->shape[d], (long long)want[d]);
  int64_t full[4] = {B, Hq, Sq, Sk}, ms[4] = {0, 0, 0, 0};
  if (mask && !bcast_strides(mask->ndim, mask->shape, 4, full, ms))
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "mask does not broadcast to (B, Hq, Sq, Sk)");
  float scale = n->a.attn_scale != 0.0f ? n->a.attn_scale : 1.0f / sqrtf((float)D);
  float softcap = n->a.softcap;
  int64_t window = n->a.window, group = Hq / Hkv;
  float *qf = load_all_f32(q), *kf = load_all_f32(k), *vf = load_all_f32(v);
  float *mf = mask ? load_all_f32(mask) : NULL;
  float *res = alloc_res(out);
  float *sc = malloc((size_t)(Sk > 0 ? Sk : 1) * sizeof(float));
  char *ok = malloc((size_t)(Sk > 0 ? Sk : 1));
  if (!qf || !kf || !vf || (mask && !mf) || !res || !sc || !ok) {
    free(qf), free(kf), free(vf), free(mf), free(res), free(sc), free(ok);
    return oom(n);
  }
  for (int64_t b = 0; b < B; b++) {
    /* keys [0, len) exist for row b; clamped to the cache length */
    int64_t len = Sk;
    if (kv_len) {
      len = bm_load_i64(kv_len->data, kv_len->dtype, b);
      len = len < 0 ? 0 : len > Sk ? Sk : len;
    }
    int64_t off = len - Sq;
    for (int64_t h = 0; h < Hq; h++) {
      int64_t hk = h / group; /* GQA: kv head of query head h */
      const float *K = kf + (b * Hkv + hk) * Sk * D;  /* (Sk, D) */
      const float *V = vf + (b * Hkv + hk) * Sk * Dv; /* (Sk, Dv) */
      for (int64_t i = 0; i < Sq; i++) {
        const float *qi = qf + ((b * Hq + h) * Sq + i) * D; /* (D) */
        float *o = res + ((b * Hq + h) * Sq + i) * Dv;      /* (Dv) */
        float mx = -INFINITY;
        for (int64_t j = 0; j < Sk; j++) {
          ok[j] = j < len;
          if (n->a.causal && j > i + off) ok[j] = 0;
          if (window > 0 && j <= i + off - window) ok[j] = 0;
          if (!ok[j]) continue;
          float s = 0.0f;
          for (int64_t d = 0; d < D; d++) s += qi[d] * K[j * D + d];
          s *= scale;
          if (softcap > 0.0f) s = softcap * tanhf(s / softcap);
          if (mask) s += mf[b * ms[0] + h * ms[1] + i * ms[2] + j * ms[3]];
          sc[j] = s;
          mx = fmaxf(mx, s);
        }
        if (mx == -INFINITY) continue; /* fully masked row: zeros */
        float sum = 0.0f;
        for (int64_t j = 0; j < Sk; j++) {
          if (!ok[j]) continue;
          sc[j] = expf(sc[j] - mx);
          sum += sc[j];
        }
        for (int64_t j = 0; j < Sk; j++) {
          if (!ok[j]) continue;
          float p = sc[j] / sum;
          for (int64_t d = 0; d < Dv; d++) o[d] += p * V[j * Dv + d];
        }
      }
    }
  }
  free(qf), free(kf), free(vf), free(mf), free(sc), free(ok);
  return finish(n, in, res, out);
}

/* ------------------------------------------------------------------ LLM generation */

/* In place: out shares the cache's data (a STATE), see the driver. */
static bm_status ref_kv_write(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                              bm_tensor *out) {
  const bm_tensor *c = in[0], *r = in[1], *pos = in[2];
  if (c->ndim != 4 || r->ndim != 4 || out->data != c->data)
    return node_err(n, BM_ERR_INTERNAL, "kv_write must run in place on a rank-4 cache");
  int64_t Bm = c->shape[0], H = c->shape[1], L = c->shape[2], D = c->shape[3];
  int64_t B = r->shape[0], S = r->shape[2];
  if (B > Bm || r->shape[1] != H || r->shape[3] != D || numel(pos) != B)
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "rows (%lld, %lld, %lld, %lld) do not fit the cache",
                    (long long)B, (long long)r->shape[1], (long long)S, (long long)r->shape[3]);
  for (int64_t b = 0; b < B; b++) {
    int64_t p0 = bm_load_i64(pos->data, pos->dtype, b);
    for (int64_t h = 0; h < H; h++)
      for (int64_t i = 0; i < S; i++) {
        if (p0 > L || p0 + i < 0 || p0 + i >= L) continue; /* dropped (p0 > L: no overflow) */
        int64_t src = ((b * H + h) * S + i) * D, dst = ((b * H + h) * L + p0 + i) * D;
        for (int64_t d = 0; d < D; d++) copy_elem(out, dst + d, r, src + d);
      }
  }
  return NULL;
}

/* (key, index) ordered by key descending, then index ascending */
typedef struct topk_item {
  float key;
  int64_t idx;
} topk_item;

static int topk_cmp(const void *pa, const void *pb) {
  const topk_item *a = pa, *b = pb;
  if (a->key != b->key) return a->key > b->key ? -1 : 1;
  return a->idx < b->idx ? -1 : a->idx > b->idx;
}

static bm_status ref_topk_mask(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                               bm_tensor *out) {
  const bm_tensor *x = in[0];
  if (!same_shape(x, out) || x->ndim < 1)
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "input and output shapes differ");
  int64_t N = x->shape[x->ndim - 1], rows = N > 0 ? numel(x) / N : 0, k = n->a.topk;
  topk_item *it = malloc((size_t)(N > 0 ? N : 1) * sizeof *it);
  float *res = alloc_res(out);
  if (!it || !res) {
    free(it), free(res);
    return oom(n);
  }
  for (int64_t r = 0; r < rows; r++) {
    for (int64_t j = 0; j < N; j++) {
      float v = bm_load_f32(x->data, x->dtype, r * N + j);
      it[j] = (topk_item){isnan(v) ? -INFINITY : v, j};
      res[r * N + j] = n->a.fill;
    }
    qsort(it, (size_t)N, sizeof *it, topk_cmp);
    for (int64_t j = 0; j < k && j < N; j++)
      res[r * N + it[j].idx] = bm_load_f32(x->data, x->dtype, r * N + it[j].idx);
  }
  free(it);
  return finish(n, in, res, out);
}

/* y (rows) = w (rows, cols) @ x (cols), f32 accumulation */
static void gemv_f32(const bm_tensor *w, int64_t w_off, int64_t rows, int64_t cols, const float *x,
                     float *y) {
  for (int64_t r = 0; r < rows; r++) {
    float s = 0.0f;
    for (int64_t c = 0; c < cols; c++) s += bm_load_f32(w->data, w->dtype, w_off + r * cols + c) * x[c];
    y[r] = s;
  }
}

/* act(w_gate[e] x) * (w_up[e] x) -> h (F) */
static void moe_hidden(bm_op act, const bm_tensor *wg, const bm_tensor *wu, int64_t e, int64_t F,
                       int64_t D, const float *x, float *h, float *tmp) {
  gemv_f32(wg, e * F * D, F, D, x, h);
  gemv_f32(wu, e * F * D, F, D, x, tmp);
  for (int64_t f = 0; f < F; f++) h[f] = bm_ref_unary_f32(act, h[f]) * tmp[f];
}

/* act(x w_gate^T) * (x w_up^T) row by row: moe_hidden with one expert */
static bm_status ref_matmul_glu(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                                bm_tensor *out) {
  const bm_tensor *x = in[0], *wg = in[1], *wu = in[2];
  if (x->ndim < 1 || wg->ndim != 2 || wu->ndim != 2)
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "x must be (..., K), w_gate and w_up (N, K)");
  int64_t K = x->shape[x->ndim - 1], N = wg->shape[0];
  int64_t T = K > 0 ? numel(x) / K : 0;
  if (wg->shape[1] != K || wu->shape[0] != N || wu->shape[1] != K || numel(out) != T * N)
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "x has K = %lld, w_gate (%lld, %lld), w_up (%lld, %lld)",
                    (long long)K, (long long)N, (long long)wg->shape[1], (long long)wu->shape[0],
                    (long long)wu->shape[1]);
  float *xf = load_all_f32(x), *res = alloc_res(out);
  float *tmp = malloc((size_t)(N > 0 ? N : 1) * sizeof *tmp);
  if (!xf || !res || !tmp) {
    free(xf), free(res), free(tmp);
    return oom(n);
  }
  for (int64_t t = 0; t < T; t++) moe_hidden((bm_op)n->a.act, wg, wu, 0, N, K, xf + t * K, res + t * N, tmp);
  free(xf), free(tmp);
  return finish(n, in, res, out);
}

/* the rms_norm of each row folded into the linear layer(s) after it */
static bm_status ref_rms_matmul(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                                bm_tensor *out) {
  const bm_tensor *x = in[0], *nw = in[1], *w = in[2], *wu = n->nin > 3 ? in[3] : NULL;
  if (x->ndim < 1 || nw->ndim != 1 || w->ndim != 2 || (wu && wu->ndim != 2))
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "x must be (..., K), w_norm (K), W and W_up (N, K)");
  int64_t K = x->shape[x->ndim - 1], N = w->shape[0];
  int64_t T = K > 0 ? numel(x) / K : 0;
  if (w->shape[1] != K || nw->shape[0] != K || (wu && (wu->shape[0] != N || wu->shape[1] != K)) ||
      numel(out) != T * N)
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "x has K = %lld, w_norm %lld, W (%lld, %lld)", (long long)K,
                    (long long)nw->shape[0], (long long)N, (long long)w->shape[1]);
  float *xf = load_all_f32(x), *res = alloc_res(out);
  float *a = malloc((size_t)(K > 0 ? K : 1) * sizeof *a), *tmp = malloc((size_t)(N > 0 ? N : 1) * sizeof *tmp);
  if (!xf || !res || !a || !tmp) {
    free(xf), free(res), free(a), free(tmp);
    return oom(n);
  }
  for (int64_t t = 0; t < T; t++) {
    const float *p = xf + t * K;
    float ss = 0.0f;
    for (int64_t i = 0; i < K; i++) ss += p[i] * p[i];
    const float r = 1.0f / sqrtf(ss / (float)K + n->a.eps);
    for (int64_t i = 0; i < K; i++) a[i] = p[i] * bm_load_f32(nw->data, nw->dtype, i);
    float *y = res + t * N;
    gemv_f32(w, 0, N, K, a, y);
    if (wu) gemv_f32(wu, 0, N, K, a, tmp);
    for (int64_t j = 0; j < N; j++)
      y[j] = wu ? bm_ref_unary_f32((bm_op)n->a.act, r * y[j]) * (r * tmp[j]) : r * y[j];
  }
  free(xf), free(a), free(tmp);
  return finish(n, in, res, out);
}

static bm_status ref_moe(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                         bm_tensor *out) {
  const bm_tensor *x = in[0], *gates = in[1], *wg = in[2], *wu = in[3], *wd = in[4];
  /* x (..., D), gates (..., E): T tokens */
  int64_t D = x->shape[x->ndim - 1], E = gates->shape[gates->ndim - 1], F = wg->shape[1];
  int64_t T = D > 0 ? numel(x) / D : 0;
  float *xf = load_all_f32(x), *res = alloc_res(out);
  float *h = malloc((size_t)(F > 0 ? F : 1) * sizeof *h), *tmp = malloc((size_t)(F > 0 ? F : 1) * sizeof *tmp);
  float *y = malloc((size_t)(D > 0 ? D : 1) * sizeof *y);
  if (!xf || !res || !h || !tmp || !y) {
    free(xf), free(res), free(h), free(tmp), free(y);
    return oom(n);
  }
  for (int64_t t = 0; t < T; t++)
    for (int64_t e = 0; e < E; e++) {
      float gv = bm_load_f32(gates->data, gates->dtype, t * E + e);
      if (gv == 0.0f) continue; /* skipped expert */
      moe_hidden((bm_op)n->a.act, wg, wu, e, F, D, xf + t * D, h, tmp);
      gemv_f32(wd, e * D * F, D, F, h, y);
      for (int64_t d = 0; d < D; d++) res[t * D + d] += gv * y[d];
    }
  free(xf), free(h), free(tmp), free(y);
  return finish(n, in, res, out);
}

static bm_status ref_moe_up(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                            bm_tensor *out) {
  const bm_tensor *x = in[0], *gates = in[1], *wg = in[2], *wu = in[3];
  int64_t D = x->shape[x->ndim - 1], E = gates->shape[gates->ndim - 1], F = wg->shape[1];
  int64_t T = D > 0 ? numel(x) / D : 0;
  float *xf = load_all_f32(x), *res = alloc_res(out);
  float *tmp = malloc((size_t)(F > 0 ? F : 1) * sizeof *tmp);
  if (!xf || !res || !tmp) {
    free(xf), free(res), free(tmp);
    return oom(n);
  }
  for (int64_t t = 0; t < T; t++)
    for (int64_t e = 0; e < E; e++)
      if (bm_load_f32(gates->data, gates->dtype, t * E + e) != 0.0f) /* skipped rows stay 0 */
        moe_hidden((bm_op)n->a.act, wg, wu, e, F, D, xf + t * D, res + (t * E + e) * F, tmp);
  free(xf), free(tmp);
  return finish(n, in, res, out);
}

static bm_status ref_moe_down(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                              bm_tensor *out) {
  const bm_tensor *h = in[0], *gates = in[1], *wd = in[2];
  /* h (..., E, F), gates (..., E): T tokens */
  int64_t E = h->shape[h->ndim - 2], F = h->shape[h->ndim - 1], D = wd->shape[1];
  int64_t T = E * F > 0 ? numel(h) / (E * F) : 0;
  float *hf = load_all_f32(h), *res = alloc_res(out);
  float *y = malloc((size_t)(D > 0 ? D : 1) * sizeof *y);
  if (!hf || !res || !y) {
    free(hf), free(res), free(y);
    return oom(n);
  }
  for (int64_t t = 0; t < T; t++)
    for (int64_t e = 0; e < E; e++) {
      float gv = bm_load_f32(gates->data, gates->dtype, t * E + e);
      if (gv == 0.0f) continue;
      gemv_f32(wd, e * D * F, D, F, hf + (t * E + e) * F, y);
      for (int64_t d = 0; d < D; d++) res[t * D + d] += gv * y[d];
    }
  free(hf), free(y);
  return finish(n, in, res, out);
}

static bm_status ref_take_row(bm_ictx *cx, const bm_node *n, const bm_tensor *const *in,
                              bm_tensor *out) {
  const bm_tensor *x = in[0], *idx = in[1]; /* (B, S, ...), (B) */
  if (x->ndim < 2 || idx->ndim != 1 || idx->shape[0] != x->shape[0] || out->ndim != x->ndim)
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "x must be (B, S, ...) and idx (B)");
  int64_t B = x->shape[0], S = x->shape[1], row = prod(x->shape, 2, x->ndim);
  if (numel(out) != B * row)
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "output has %lld elements, expected %lld",
                    (long long)numel(out), (long long)(B * row));
  for (int64_t b = 0; b < B && S > 0; b++) {
    int64_t i = bm_load_i64(idx->data, idx->dtype, b);
    i = i < 0 ? 0 : i >= S ? S - 1 : i;
    for (int64_t j = 0; j < row; j++) copy_elem(out, b * row + j, x, (b * S + i) * row + j);
  }
  return NULL;
}

/* ------------------------------------------------------------------ the table */

static const bm_ref_fn ref_table[BM_OP_COUNT] = {
#define X(e, name, mn, mx, fl, at, sh, rf) [BM_OP_##e] = rf,
#include "ops.def"
#undef X
};
_Static_assert(sizeof ref_table / sizeof ref_table[0] == BM_OP_COUNT, "one ref function per op");

/* ------------------------------------------------------------------ driver */

typedef struct bm_value {
  bm_tensor t;
  bool computed;
  bool owned; /* t.data is ours to free */
} bm_value;

typedef struct bm_slot {
  const bm_node *node;
  int index;
} bm_slot;

static int slot_cmp(const void *a, const void *b) {
  uintptr_t x = (uintptr_t)((const bm_slot *)a)->node, y = (uintptr_t)((const bm_slot *)b)->node;
  return x < y ? -1 : x > y;
}

/* Index of node p in the graph, or -1. */
static int slot_find(const bm_slot *slots, int n, const bm_node *p) {
  bm_slot key = {p, 0};
  const bm_slot *s = bsearch(&key, slots, (size_t)n, sizeof *slots, slot_cmp);
  return s ? s->index : -1;
}

static void value_release(bm_value *v) {
  if (v->owned) bm_tensor_free(&v->t);
  memset(v, 0, sizeof *v);
}

/* Checks arity and program of node n before it is evaluated. */
static bm_status check_node(const bm_node *n) {
  if ((unsigned)n->op >= BM_OP_COUNT)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "node #%d has bad op %d", n->id, (int)n->op);
  const bm_op_info *info = &bm_op_table[n->op];
  if (n->nin < 0 || n->nin > BM_MAX_IN)
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "has %d inputs", n->nin);
  bool epi = (info->flags & BM_OPF_EPILOGUE) && n->a.prog.n > 0;
  if (epi) {
    if (n->a.prog.nin < 1 || n->a.prog.nin > n->nin + 1)
      return node_err(n, BM_ERR_INVALID_ARGUMENT, "epilogue has %d input registers for %d inputs",
                      n->a.prog.nin, n->nin);
    BM_RETURN_IF_ERROR(check_prog(n, &n->a.prog, n->a.prog.nin));
  }
  if (n->op == BM_OP_FUSED) BM_RETURN_IF_ERROR(check_prog(n, &n->a.prog, n->nin));
  int base = bm_node_base_nin(n);
  if (base < info->min_in || base > info->max_in)
    return node_err(n, BM_ERR_INVALID_ARGUMENT, "has %d inputs, expected %d to %d", base,
                    info->min_in, info->max_in);
  for (int k = 0; k < n->nin; k++)
    if (!n->in[k]) return node_err(n, BM_ERR_INVALID_ARGUMENT, "input %d is NULL", k);
  return NULL;
}

bm_status bm_interp_run(const bm_graph *g, const bm_tensor *inputs, bm_tensor *outputs) {
  bm_interp_states *st = NULL;
  BM_RETURN_IF_ERROR(bm_interp_states_create(&st));
  bm_status s = bm_interp_run_states(g, inputs, outputs, st);
  bm_interp_states_destroy(st);
  return s;
}

bm_status bm_interp_run_states(const bm_graph *g, const bm_tensor *inputs, bm_tensor *outputs,
                               bm_interp_states *states) {
  if (!g) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "interp: graph is NULL");
  if (!states) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "interp: states is NULL");
  if (g->noutputs > 0 && !outputs)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "interp: outputs is NULL");
  for (int o = 0; o < g->noutputs; o++) memset(&outputs[o], 0, sizeof outputs[o]);
  if (g->err)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "interp: graph '%s' has a build error: %s",
                          g->name ? g->name : "?", bm_status_message(g->err));
  if (g->ninputs > 0 && !inputs)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "interp: graph '%s' has %d inputs but none were given",
                          g->name ? g->name : "?", g->ninputs);
  bm_ictx cx = {.g = g, .inputs = inputs, .states = states};
  BM_RETURN_IF_ERROR(bind_inputs(&cx));

  int nn = g->nnodes;
  size_t cap = (size_t)(nn > 0 ? nn : 1);
  bm_slot *slots = malloc(cap * sizeof *slots);
  bm_value *vals = calloc(cap, sizeof *vals);
  int *last = malloc(cap * sizeof *last);       /* index of the last node reading each node */
  bool *needed = calloc(cap, sizeof *needed);   /* reaches an output */
  bm_status s = NULL;
  if (!slots || !vals || !last || !needed) {
    s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "interp: cannot allocate %d node slots", nn);
    goto done;
  }
  for (int j = 0; j < nn; j++) {
    slots[j] = (bm_slot){g->nodes[j], j};
    last[j] = j;
  }
  qsort(slots, (size_t)nn, sizeof *slots, slot_cmp);

  /* liveness: which nodes feed an output, and when each value dies */
  for (int o = 0; o < g->noutputs; o++) {
    int k = slot_find(slots, nn, g->outputs[o].node);
    if (k < 0) {
      s = bm_status_make(BM_ERR_INVALID_ARGUMENT, "interp: output '%s' is not a node of the graph",
                         g->outputs[o].name ? g->outputs[o].name : "?");
      goto done;
    }
    needed[k] = true;
    last[k] = nn; /* outputs live to the end */
  }
  for (int j = nn - 1; j >= 0; j--) {
    const bm_node *n = g->nodes[j];
    if (!needed[j]) continue;
    if ((s = check_node(n))) goto done;
    for (int k = 0; k < n->nin; k++) {
      int p = slot_find(slots, nn, n->in[k]);
      if (p < 0 || p >= j) {
        s = node_err(n, BM_ERR_INVALID_ARGUMENT, "input %d is not an earlier node of the graph", k);
        goto done;
      }
      needed[p] = true;
      if (last[p] < j) last[p] = j;
    }
  }

  for (int j = 0; j < nn && !s; j++) {
    if (!needed[j]) continue;
    const bm_node *n = g->nodes[j];
    const bm_tensor *in[BM_MAX_IN];
    for (int k = 0; k < n->nin; k++) in[k] = &vals[slot_find(slots, nn, n->in[k])].t;
    bm_value *v = &vals[j];
    cx.borrowed = false;
    if (bm_op_table[n->op].flags & BM_OPF_SOURCE) {
      s = ref_source(&cx, n, in, &v->t);
    } else {
      int64_t shape[BM_MAX_DIMS];
      s = node_shape(&cx, n, shape);
      bool inplace = (bm_op_table[n->op].flags & BM_OPF_INPLACE) != 0;
      if (!s && inplace) {
        v->t = *in[0]; /* the result is the first input's (a state's) storage */
        if (v->t.dtype != n->dtype || v->t.ndim != n->ndim ||
            memcmp(v->t.shape, shape, sizeof(int64_t) * (size_t)n->ndim) != 0)
          s = node_err(n, BM_ERR_INTERNAL, "in-place result differs from its first input");
      } else if (!s) {
        s = bm_tensor_alloc(&v->t, n->dtype, n->ndim, shape);
      }
      if (s) {
        s = bm_status_wrap(s, "%s", label(n).s);
        break;
      }
      v->owned = !inplace;
      s = ref_table[n->op](&cx, n, in, &v->t);
    }
    v->computed = true;
    if (!s && cx.borrowed) v->owned = false;
    /* free the values whose last reader was this node */
    for (int k = 0; k < n->nin; k++) {
      int p = slot_find(slots, nn, n->in[k]);
      if (last[p] == j) value_release(&vals[p]);
    }
  }
  if (s) goto done;

  for (int o = 0; o < g->noutputs; o++) {
    const bm_tensor *t = &vals[slot_find(slots, nn, g->outputs[o].node)].t;
    if ((s = bm_tensor_alloc(&outputs[o], t->dtype, t->ndim, t->shape))) goto done;
    size_t bytes = bm_tensor_nbytes(t);
    if (bytes) memcpy(outputs[o].data, t->data, bytes);
  }

done:
  if (vals)
    for (int j = 0; j < nn; j++) value_release(&vals[j]);
  if (s && outputs)
    for (int o = 0; o < g->noutputs; o++) {
      bm_tensor_free(&outputs[o]);
      memset(&outputs[o], 0, sizeof outputs[o]);
    }
  free(slots);
  free(vals);
  free(last);
  free(needed);
  return s;
}
