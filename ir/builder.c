/* builder.c - the graph-builder API: generic node construction (shape
 * inference + append) and one thin builder per op. Builders record the
 * first error in the graph and return NULL; NULL inputs give NULL. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ir.h"

/* ------------------------------------------------------------------ helpers */

/* Records "<what> %<next id>: <message>" as the graph's error; returns NULL. */
static bm_node *bfail(bm_graph *g, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bm_node *bfail(bm_graph *g, const char *what, const char *fmt, ...) {
  char msg[900];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  bm_graph_fail(g, bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s %%%d: %s", what, g->nnodes, msg));
  return NULL;
}

static bm_node *oom(bm_graph *g, const char *what) {
  bm_graph_fail(g, bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s: out of memory in graph '%s'", what,
                                  g->name));
  return NULL;
}

/* Grows an arena array to hold `need` items; 0 on success. */
static int grow(bm_arena *a, void **arr, int *cap, int need, size_t elem) {
  if (need <= *cap) return 0;
  if (need > (1 << 28)) return -1;
  int ncap = *cap ? *cap : 64;
  while (ncap < need) ncap *= 2;
  void *p = bm_arena_alloc(a, (size_t)ncap * elem);
  if (!p) return -1;
  if (*cap) memcpy(p, *arr, (size_t)*cap * elem);
  *arr = p;
  *cap = ncap;
  return 0;
}

static bool in_graph(const bm_graph *g, const bm_node *x) {
  if (x->id >= 0 && x->id < g->nnodes && g->nodes[x->id] == x) return true;
  for (int i = g->nnodes - 1; i >= 0; i--) /* ids may be stale mid-pass */
    if (g->nodes[i] == x) return true;
  return false;
}

static bool same_type(const bm_node *n, bm_dtype t, int ndim, const bm_dim *shape) {
  if (n->dtype != t || n->ndim != ndim) return false;
  for (int i = 0; i < ndim; i++)
    if (!bm_dim_eq(n->shape[i], shape[i])) return false;
  return true;
}

static bm_node *make(bm_graph *g, bm_op op, int nin, bm_node *const *in, const bm_attrs *a,
                     bool typed, bm_dtype dtype, int ndim, const bm_dim *shape) {
  if (!g) return NULL;
  if ((unsigned)op >= BM_OP_COUNT) return bfail(g, "node", "bad op %d", (int)op);
  const char *what = bm_op_name(op);
  if (nin < 0 || nin > BM_MAX_IN || (nin > 0 && !in))
    return bfail(g, what, "bad input count %d (max %d)", nin, BM_MAX_IN);
  for (int i = 0; i < nin; i++) {
    if (!in[i]) return bfail(g, what, "input %d is NULL", i); /* quiet if an error is recorded */
    if (!in_graph(g, in[i]))
      return bfail(g, what, "input %d (%s %%%d) belongs to another graph", i,
                   bm_op_name(in[i]->op), in[i]->id);
  }
  if (typed) {
    if ((unsigned)dtype >= BM_DTYPE_COUNT) return bfail(g, what, "bad dtype %d", (int)dtype);
    if (ndim < 0 || ndim > BM_MAX_DIMS || (ndim > 0 && !shape))
      return bfail(g, what, "bad rank %d (max %d)", ndim, BM_MAX_DIMS);
  }
  if (g->nnodes >= (1 << 28)) return bfail(g, what, "graph '%s' has too many nodes", g->name);

  bm_node *n = bm_arena_alloc(g->module->arena, sizeof *n);
  if (!n) return oom(g, what);
  n->op = op;
  n->id = g->nnodes;
  n->nin = nin;
  for (int i = 0; i < nin; i++) n->in[i] = in[i];
  if (a) n->a = *a;
  if (typed) {
    n->dtype = dtype;
    n->ndim = ndim;
    for (int i = 0; i < ndim; i++) n->shape[i] = shape[i];
  } else {
    n->dtype = BM_DTYPE_COUNT; /* "not given": the shape function decides */
    n->ndim = -1;
  }
  bm_status s = bm_node_infer(g, n);
  if (s) {
    bm_graph_fail(g, s);
    return NULL;
  }
  if (typed && !same_type(n, dtype, ndim, shape)) {
    char sg[512], si[512];
    return bfail(g, what, "given type %s %s differs from the inferred %s %s", bm_dtype_name(dtype),
                 bm_shape_str(g, ndim, shape, sg, sizeof sg), bm_dtype_name(n->dtype),
                 bm_shape_str(g, n->ndim, n->shape, si, sizeof si));
  }
  if (grow(g->module->arena, (void **)&g->nodes, &g->cap, g->nnodes + 1, sizeof *g->nodes))
    return oom(g, what);
  if (op == BM_OP_INPUT &&
      grow(g->module->arena, (void **)&g->inputs, &g->inputs_cap, g->ninputs + 1, sizeof *g->inputs))
    return oom(g, what);
  g->nodes[g->nnodes++] = n;
  if (op == BM_OP_INPUT) g->inputs[g->ninputs++] = n;
  return n;
}

bm_node *bm_node_make(bm_graph *g, bm_op op, int nin, bm_node *const *in, const bm_attrs *a) {
  return make(g, op, nin, in, a, false, BM_DTYPE_COUNT, -1, NULL);
}

bm_node *bm_node_make_typed(bm_graph *g, bm_op op, int nin, bm_node *const *in,
                            const bm_attrs *a, bm_dtype dtype, int ndim, const bm_dim *shape) {
  return make(g, op, nin, in, a, true, dtype, ndim, shape);
}

/* int64 dims (BM_SYM(k) = symbol k) -> bm_dim; NULL on error (recorded). */
static bool dims_from_i64(bm_graph *g, const char *what, int ndim, const int64_t *shape,
                          bm_dim *out) {
  if (ndim < 0 || ndim > BM_MAX_DIMS || (ndim > 0 && !shape)) {
    bfail(g, what, "bad rank %d (max %d)", ndim, BM_MAX_DIMS);
    return false;
  }
  for (int i = 0; i < ndim; i++) {
    int64_t v = shape[i];
    if (v >= 0) {
      out[i] = bm_dim_c(v);
    } else {
      int64_t k = -(v + 1);
      if (k >= g->nsyms) {
        bfail(g, what, "dim %d names symbol %" PRId64 ", graph '%s' has %d symbols", i, k, g->name,
              g->nsyms);
        return false;
      }
      out[i] = bm_dim_s((int)k);
    }
  }
  return true;
}

/* ------------------------------------------------------------------ sources */

bm_node *bm_input(bm_graph *g, const char *name, bm_dtype t, int ndim, const int64_t *shape) {
  if (!g) return NULL;
  if (!name) return bfail(g, "input", "NULL name");
  for (int i = 0; i < g->ninputs; i++)
    if (g->inputs[i]->name && strcmp(g->inputs[i]->name, name) == 0)
      return bfail(g, "input", "duplicate input name '%s'", name);
  bm_dim d[BM_MAX_DIMS];
  if (!dims_from_i64(g, "input", ndim, shape, d)) return NULL;
  const char *nm = bm_arena_strdup(g->module->arena, name);
  if (!nm) return oom(g, "input");
  bm_node *n = bm_node_make_typed(g, BM_OP_INPUT, 0, NULL, NULL, t, ndim, d);
  if (n) n->name = nm;
  return n;
}

bm_node *bm_weight(bm_graph *g, const char *name, bm_dtype t, int ndim, const int64_t *shape,
                   const void *data, size_t nbytes) {
  if (!g) return NULL;
  if (!name || !*name) return bfail(g, "weight", "weights need a name");
  bm_dim d[BM_MAX_DIMS];
  if (!dims_from_i64(g, "weight", ndim, shape, d)) return NULL;
  const char *nm = bm_arena_strdup(g->module->arena, name);
  if (!nm) return oom(g, "weight");
  bm_node *n = bm_node_make_typed(g, BM_OP_WEIGHT, 0, NULL, NULL, t, ndim, d);
  if (!n) return NULL;
  n->name = nm;
  size_t want = bm_dtype_nbytes(t, bm_node_numel_max(g, n));
  if (data && nbytes != want) {
    g->nnodes--; /* drop the node just added */
    char sb[512];
    bfail(g, "weight", "'%s' %s %s needs %zu bytes of data, got %zu", name, bm_dtype_name(t),
          bm_shape_str(g, ndim, d, sb, sizeof sb), want, nbytes);
    return NULL;
  }
  n->data = data;
  n->data_size = data ? nbytes : 0;
  return n;
}

#define BM_MAX_CONST_BYTES (1ull << 32) /* inline constants are copied into the arena */

bm_node *bm_const(bm_graph *g, bm_dtype t, int ndim, const int64_t *shape, const void *data) {
  if (!g) return NULL;
  bm_dim d[BM_MAX_DIMS];
  if (!dims_from_i64(g, "const", ndim, shape, d)) return NULL;
  if (!data) return bfail(g, "const", "NULL data");
  bm_node *n = bm_node_make_typed(g, BM_OP_CONST, 0, NULL, NULL, t, ndim, d);
  if (!n) return NULL;
  size_t size = bm_dtype_nbytes(t, bm_node_numel_max(g, n));
  if (size > BM_MAX_CONST_BYTES) { /* checked before copying from a buffer of that size */
    g->nnodes--;
    char sb[512];
    return bfail(g, "const", "%s %s is %zu bytes, more than a constant may hold (%llu): use a weight",
                 bm_dtype_name(t), bm_shape_str(g, ndim, d, sb, sizeof sb), size, (unsigned long long)BM_MAX_CONST_BYTES);
  }
  void *copy = bm_arena_alloc(g->module->arena, size);
  if (!copy) {
    g->nnodes--;
    return oom(g, "const");
  }
  memcpy(copy, data, size);
  n->data = copy;
  n->data_size = size;
  return n;
}

bm_node *bm_scalar(bm_graph *g, float v) { return bm_const(g, BM_DTYPE_F32, 0, NULL, &v); }

void bm_output_add(bm_graph *g, const char *name, bm_node *n) {
  if (!g) return;
  if (!name) {
    bfail(g, "output", "NULL name");
    return;
  }
  if (!n) {
    bfail(g, "output", "'%s' is NULL", name);
    return;
  }
  if (!in_graph(g, n)) {
    bfail(g, "output", "'%s' is not a node of graph '%s'", name, g->name);
    return;
  }
  for (int i = 0; i < g->noutputs; i++)
    if (strcmp(g->outputs[i].name, name) == 0) {
      bfail(g, "output", "duplicate output name '%s'", name);
      return;
    }
  const char *nm = bm_arena_strdup(g->module->arena, name);
  if (!nm || grow(g->module->arena, (void **)&g->outputs, &g->outputs_cap, g->noutputs + 1,
                  sizeof *g->outputs)) {
    oom(g, "output");
    return;
  }
  g->outputs[g->noutputs].name = nm;
  g->outputs[g->noutputs].node = n;
  g->noutputs++;
}

/* ------------------------------------------------------------------ elementwise */

bm_node *bm_unary(bm_graph *g, bm_op op, bm_node *x) {
  if (!g) return NULL;
  if ((unsigned)op >= BM_OP_COUNT || !(bm_op_table[op].flags & BM_OPF_UNARY) || op == BM_OP_CAST)
    return bfail(g, "unary", "op %d is not a unary elementwise op (use bm_cast for casts)", (int)op);
  return bm_node_make(g, op, 1, &x, NULL);
}

bm_node *bm_binary(bm_graph *g, bm_op op, bm_node *a, bm_node *b) {
  if (!g) return NULL;
  if ((unsigned)op >= BM_OP_COUNT || !(bm_op_table[op].flags & BM_OPF_BINARY))
    return bfail(g, "binary", "op %d is not a binary elementwise op", (int)op);
  bm_node *in[2] = {a, b};
  return bm_node_make(g, op, 2, in, NULL);
}

bm_node *bm_cast(bm_graph *g, bm_node *x, bm_dtype t) {
  if (!g) return NULL;
  if (!x) return bfail(g, "cast", "input 0 is NULL");
  return bm_node_make_typed(g, BM_OP_CAST, 1, &x, NULL, t, x->ndim, x->shape);
}

bm_node *bm_add(bm_graph *g, bm_node *a, bm_node *b) { return bm_binary(g, BM_OP_ADD, a, b); }
bm_node *bm_sub(bm_graph *g, bm_node *a, bm_node *b) { return bm_binary(g, BM_OP_SUB, a, b); }
bm_node *bm_mul(bm_graph *g, bm_node *a, bm_node *b) { return bm_binary(g, BM_OP_MUL, a, b); }
bm_node *bm_div(bm_graph *g, bm_node *a, bm_node *b) { return bm_binary(g, BM_OP_DIV, a, b); }
bm_node *bm_silu(bm_graph *g, bm_node *x) { return bm_unary(g, BM_OP_SILU, x); }
bm_node *bm_gelu(bm_graph *g, bm_node *x) { return bm_unary(g, BM_OP_GELU, x); }
bm_node *bm_gelu_tanh(bm_graph *g, bm_node *x) { return bm_unary(g, BM_OP_GELU_TANH, x); }
bm_node *bm_quick_gelu(bm_graph *g, bm_node *x) { return bm_unary(g, BM_OP_QUICK_GELU, x); }

/* ------------------------------------------------------------------ linear algebra */

bm_node *bm_matmul(bm_graph *g, bm_node *a, bm_node *b, bool trans_a, bool trans_b) {
  bm_attrs at = {0};
  at.trans_a = trans_a;
  at.trans_b = trans_b;
  bm_node *in[2] = {a, b};
  return bm_node_make(g, BM_OP_MATMUL, 2, in, &at);
}

bm_node *bm_linear(bm_graph *g, bm_node *x, bm_node *w, bm_node *bias) {
  bm_node *y = bm_matmul(g, x, w, false, true);
  return bias ? bm_add(g, y, bias) : y;
}

bm_node *bm_conv2d(bm_graph *g, bm_node *x, bm_node *w, bm_node *bias, int stride_h,
                   int stride_w, int pad_h, int pad_w, int dil_h, int dil_w, int groups) {
  bm_attrs at = {0};
  at.stride[0] = stride_h;
  at.stride[1] = stride_w;
  at.pad[0] = pad_h;
  at.pad[1] = pad_w;
  at.dilation[0] = dil_h;
  at.dilation[1] = dil_w;
  at.groups = groups;
  bm_node *in[3] = {x, w, bias};
  return bm_node_make(g, BM_OP_CONV2D, bias ? 3 : 2, in, &at);
}

bm_node *bm_dequant(bm_graph *g, bm_node *q, bm_node *scale) {
  bm_node *in[2] = {q, scale};
  return bm_node_make(g, BM_OP_DEQUANT, 2, in, NULL);
}

bm_node *bm_qmatmul(bm_graph *g, bm_node *x, bm_node *q, bm_node *scale) {
  bm_node *in[3] = {x, q, scale};
  return bm_node_make(g, BM_OP_QMATMUL, 3, in, NULL);
}

/* ------------------------------------------------------------------ data movement */

bm_node *bm_reshape(bm_graph *g, bm_node *x, int ndim, const int64_t *shape) {
  if (!g) return NULL;
  bm_dim d[BM_MAX_DIMS];
  if (!dims_from_i64(g, "reshape", ndim, shape, d)) return NULL;
  return bm_reshape_d(g, x, ndim, d);
}

bm_node *bm_reshape_d(bm_graph *g, bm_node *x, int ndim, const bm_dim *shape) {
  if (!g) return NULL;
  if (!x) return bfail(g, "reshape", "input 0 is NULL");
  return bm_node_make_typed(g, BM_OP_RESHAPE, 1, &x, NULL, x->dtype, ndim, shape);
}

bm_node *bm_permute(bm_graph *g, bm_node *x, const int *perm) {
  if (!g) return NULL;
  if (!x) return bfail(g, "permute", "input 0 is NULL");
  if (!perm) return bfail(g, "permute", "NULL perm");
  bm_attrs at = {0};
  for (int i = 0; i < x->ndim; i++) at.perm[i] = perm[i];
  return bm_node_make(g, BM_OP_PERMUTE, 1, &x, &at);
}

bm_node *bm_transpose(bm_graph *g, bm_node *x, int d0, int d1) {
  if (!g) return NULL;
  if (!x) return bfail(g, "permute", "input 0 is NULL");
  int nd = x->ndim;
  if (d0 < 0) d0 += nd;
  if (d1 < 0) d1 += nd;
  if (d0 < 0 || d0 >= nd || d1 < 0 || d1 >= nd)
    return bfail(g, "permute", "transpose axes out of range for rank %d", nd);
  int perm[BM_MAX_DIMS];
  for (int i = 0; i < nd; i++) perm[i] = i;
  perm[d0] = d1;
  perm[d1] = d0;
  return bm_permute(g, x, perm);
}

bm_node *bm_slice(bm_graph *g, bm_node *x, int axis, int64_t begin, int64_t end, int64_t step) {
  bm_attrs at = {0};
  at.axis = axis;
  at.begin = begin;
  at.end = end;
  at.step = step;
  return bm_node_make(g, BM_OP_SLICE, 1, &x, &at);
}

bm_node *bm_concat(bm_graph *g, int n, bm_node *const *xs, int axis) {
  if (!g) return NULL;
  if (n < 1 || n > bm_op_table[BM_OP_CONCAT].max_in || !xs)
    return bfail(g, "concat", "takes 1 to %d inputs, got %d", bm_op_table[BM_OP_CONCAT].max_in, n);
  bm_attrs at = {0};
  at.axis = axis;
  return bm_node_make(g, BM_OP_CONCAT, n, xs, &at);
}

bm_node *bm_gather(bm_graph *g, bm_node *table, bm_node *idx) {
  bm_node *in[2] = {table, idx};
  return bm_node_make(g, BM_OP_GATHER, 2, in, NULL);
}

bm_node *bm_pad(bm_graph *g, bm_node *x, const int64_t *pads, float value) {
  if (!g) return NULL;
  if (!x) return bfail(g, "pad", "input 0 is NULL");
  if (!pads) return bfail(g, "pad", "NULL pads");
  bm_attrs at = {0};
  for (int i = 0; i < 2 * x->ndim && i < 2 * BM_MAX_DIMS; i++) at.pads[i] = pads[i];
  at.value = value;
  return bm_node_make(g, BM_OP_PAD, 1, &x, &at);
}

bm_node *bm_upsample_nearest(bm_graph *g, bm_node *x, int scale) {
  bm_attrs at = {0};
  at.scale = scale;
  return bm_node_make(g, BM_OP_UPSAMPLE, 1, &x, &at);
}

/* ------------------------------------------------------------------ reductions */

bm_node *bm_reduce(bm_graph *g, bm_op op, bm_node *x, uint32_t axes, bool keepdim) {
  if (!g) return NULL;
  if ((unsigned)op >= BM_OP_COUNT || !(bm_op_table[op].flags & BM_OPF_REDUCE))
    return bfail(g, "reduce", "op %d is not a reduction", (int)op);
  bm_attrs at = {0};
  at.axes = axes;
  at.keepdim = keepdim;
  return bm_node_make(g, op, 1, &x, &at);
}

static bm_node *reduce_axis(bm_graph *g, bm_op op, bm_node *x, int axis, bool keepdim) {
  if (!g) return NULL;
  if (!x) return bfail(g, bm_op_name(op), "input 0 is NULL");
  int a = axis < 0 ? axis + x->ndim : axis;
  if (a < 0 || a >= x->ndim)
    return bfail(g, bm_op_name(op), "axis %d out of range for rank %d", axis, x->ndim);
  return bm_reduce(g, op, x, 1u << a, keepdim);
}

bm_node *bm_sum(bm_graph *g, bm_node *x, int axis, bool keepdim) {
  return reduce_axis(g, BM_OP_SUM, x, axis, keepdim);
}
bm_node *bm_mean(bm_graph *g, bm_node *x, int axis, bool keepdim) {
  return reduce_axis(g, BM_OP_MEAN, x, axis, keepdim);
}
bm_node *bm_reduce_max(bm_graph *g, bm_node *x, int axis, bool keepdim) {
  return reduce_axis(g, BM_OP_REDUCE_MAX, x, axis, keepdim);
}

bm_node *bm_softmax(bm_graph *g, bm_node *x, int axis) {
  bm_attrs at = {0};
  at.axis = axis;
  return bm_node_make(g, BM_OP_SOFTMAX, 1, &x, &at);
}

/* ------------------------------------------------------------------ norms */

static bm_node *norm(bm_graph *g, bm_op op, bm_node *x, bm_node *w, bm_node *b, int groups,
                     float eps) {
  if (!g) return NULL;
  if (b && !w) return bfail(g, bm_op_name(op), "a bias needs a weight");
  bm_attrs at = {0};
  at.eps = eps;
  at.groups = groups;
  bm_node *in[3] = {x, w, b};
  return bm_node_make(g, op, b ? 3 : w ? 2 : 1, in, &at);
}

bm_node *bm_layer_norm(bm_graph *g, bm_node *x, bm_node *w, bm_node *b, float eps) {
  return norm(g, BM_OP_LAYER_NORM, x, w, b, 0, eps);
}
bm_node *bm_group_norm(bm_graph *g, bm_node *x, bm_node *w, bm_node *b, int groups, float eps) {
  return norm(g, BM_OP_GROUP_NORM, x, w, b, groups, eps);
}
bm_node *bm_rms_norm(bm_graph *g, bm_node *x, bm_node *w, float eps) {
  return norm(g, BM_OP_RMS_NORM, x, w, NULL, 0, eps);
}

/* ------------------------------------------------------------------ transformer */

bm_node *bm_rope(bm_graph *g, bm_node *x, bm_node *pos, bm_node *freqs, int mode) {
  bm_attrs at = {0};
  at.rope_mode = mode;
  bm_node *in[3] = {x, pos, freqs};
  return bm_node_make(g, BM_OP_ROPE, 3, in, &at);
}

bm_node *bm_attention(bm_graph *g, bm_node *q, bm_node *k, bm_node *v, bm_node *mask,
                      float scale, bool causal, int window, float softcap) {
  return bm_attention_kv(g, q, k, v, mask, NULL, scale, causal, window, softcap);
}

bm_node *bm_attention_kv(bm_graph *g, bm_node *q, bm_node *k, bm_node *v, bm_node *mask,
                         bm_node *kv_len, float scale, bool causal, int window, float softcap) {
  bm_attrs at = {0};
  at.attn_scale = scale;
  at.causal = causal;
  at.window = window;
  at.softcap = softcap;
  bm_node *in[5] = {q, k, v};
  int nin = 3;
  if (mask) {
    at.attn_flags |= BM_ATTN_HAS_MASK;
    in[nin++] = mask;
  }
  if (kv_len) {
    at.attn_flags |= BM_ATTN_HAS_KV_LEN;
    in[nin++] = kv_len;
  }
  return bm_node_make(g, BM_OP_ATTENTION, nin, in, &at);
}

/* ------------------------------------------------------------------ LLM generation */

bm_node *bm_state(bm_graph *g, const char *name, bm_dtype t, int ndim, const int64_t *shape) {
  if (!g) return NULL;
  if (!name || !*name) return bfail(g, "state", "states need a name");
  bm_dim d[BM_MAX_DIMS];
  if (!dims_from_i64(g, "state", ndim, shape, d)) return NULL;
  /* one node per name and graph: asking again gives the same node */
  for (int i = 0; i < g->nnodes; i++) {
    bm_node *x = g->nodes[i];
    if (x->op != BM_OP_STATE || !x->name || strcmp(x->name, name) != 0) continue;
    if (!same_type(x, t, ndim, d)) {
      char sa[512], sb[512];
      return bfail(g, "state", "'%s' is %s %s here but %s %s at %%%d", name, bm_dtype_name(t),
                   bm_shape_str(g, ndim, d, sa, sizeof sa), bm_dtype_name(x->dtype),
                   bm_shape_str(g, x->ndim, x->shape, sb, sizeof sb), i);
    }
    return x;
  }
  const char *nm = bm_arena_strdup(g->module->arena, name);
  if (!nm) return oom(g, "state");
  bm_node *n = bm_node_make_typed(g, BM_OP_STATE, 0, NULL, NULL, t, ndim, d);
  if (n) n->name = nm;
  return n;
}

bm_node *bm_kv_write(bm_graph *g, bm_node *cache, bm_node *rows, bm_node *pos) {
  bm_node *in[3] = {cache, rows, pos};
  return bm_node_make(g, BM_OP_KV_WRITE, 3, in, NULL);
}

bm_node *bm_topk_mask(bm_graph *g, bm_node *x, int k, float fill) {
  bm_attrs at = {0};
  at.topk = k;
  at.fill = fill;
  return bm_node_make(g, BM_OP_TOPK_MASK, 1, &x, &at);
}

bm_node *bm_take_row(bm_graph *g, bm_node *x, bm_node *idx) {
  bm_node *in[2] = {x, idx};
  return bm_node_make(g, BM_OP_TAKE_ROW, 2, in, NULL);
}

bm_node *bm_moe(bm_graph *g, bm_node *x, bm_node *gates, bm_node *w_gate, bm_node *w_up,
                bm_node *w_down, bm_op act) {
  bm_attrs at = {0};
  at.act = (int32_t)act;
  bm_node *in[5] = {x, gates, w_gate, w_up, w_down};
  return bm_node_make(g, BM_OP_MOE, 5, in, &at);
}

bm_node *bm_weight_stack(bm_graph *g, const char *name, int n, bm_node *const *weights) {
  if (!g) return NULL;
  if (!name || !*name) return bfail(g, "weight", "weight_stack needs a name");
  if (n < 1 || n > (1 << 20) || !weights)
    return bfail(g, "weight", "weight_stack '%s': %d parts (1..2^20)", name, n);
  for (int i = 0; i < n; i++)
    if (!weights[i]) return bfail(g, "weight", "weight_stack '%s': part %d is NULL", name, i);
  const bm_node *w0 = weights[0];
  if (w0->ndim + 1 > BM_MAX_DIMS)
    return bfail(g, "weight", "weight_stack '%s': parts of rank %d give a rank above %d", name, w0->ndim,
                 BM_MAX_DIMS);
  for (int i = 0; i < n; i++) {
    const bm_node *w = weights[i];
    char sa[512], sb[512];
    if (w->op != BM_OP_WEIGHT)
      return bfail(g, "weight", "weight_stack '%s': part %d is a %s, not a weight", name, i,
                   bm_op_name(w->op));
    if (!same_type(w, w0->dtype, w0->ndim, w0->shape))
      return bfail(g, "weight", "weight_stack '%s': part %d '%s' is %s %s, part 0 '%s' is %s %s", name, i,
                   w->name, bm_dtype_name(w->dtype), bm_shape_str(g, w->ndim, w->shape, sa, sizeof sa),
                   w0->name, bm_dtype_name(w0->dtype), bm_shape_str(g, w0->ndim, w0->shape, sb, sizeof sb));
    if (!w->data)
      return bfail(g, "weight", "weight_stack '%s': part %d '%s' is not bound", name, i, w->name);
    if (w->data_size != w0->data_size)
      return bfail(g, "weight", "weight_stack '%s': part %d '%s' has %zu bytes, part 0 has %zu", name, i,
                   w->name, w->data_size, w0->data_size);
  }
  size_t part = w0->data_size;
  if (part > SIZE_MAX / (size_t)n) return bfail(g, "weight", "weight_stack '%s' is too large", name);
  int64_t shape[BM_MAX_DIMS];
  shape[0] = n;
  for (int d = 0; d < w0->ndim; d++) shape[d + 1] = w0->shape[d].add;
  /* i4 parts of odd element count would not concatenate bytewise */
  if (w0->dtype == BM_DTYPE_I4 && bm_dtype_nbytes(w0->dtype, bm_node_numel_max(g, w0)) * 2 !=
                                      (size_t)bm_node_numel_max(g, w0))
    return bfail(g, "weight", "weight_stack '%s': i4 parts need an even element count", name);
  unsigned char *data = bm_arena_alloc(g->module->arena, part * (size_t)n + 1);
  if (!data) return oom(g, "weight");
  for (int i = 0; i < n; i++) memcpy(data + part * (size_t)i, weights[i]->data, part);
  return bm_weight(g, name, w0->dtype, w0->ndim + 1, shape, data, part * (size_t)n);
}
