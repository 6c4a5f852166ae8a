/* verify.c - bm_graph_verify: checks every graph invariant (arity,
 * topological order, ids, re-inferred shapes, attributes, symbols, inputs,
 * outputs, weights). Run after every pass in tests. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"

static bm_status vfail(const bm_graph *g, const bm_node *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bm_status vfail(const bm_graph *g, const bm_node *n, const char *fmt, ...) {
  char msg[900];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const char *gname = g->name ? g->name : "?";
  if (!n) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "graph '%s': %s", gname, msg);
  const char *op = (unsigned)n->op < BM_OP_COUNT ? bm_op_name(n->op) : "?";
  if (n->name)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "graph '%s': node %%%d (%s \"%.100s\"): %s", gname,
                          n->id, op, n->name, msg);
  return bm_status_make(BM_ERR_INVALID_ARGUMENT, "graph '%s': node %%%d (%s): %s", gname, n->id, op,
                        msg);
}

static bool feq(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

static bool prog_eq(const bm_prog *a, const bm_prog *b) {
  if (a->n != b->n || a->nin != b->nin) return false;
  for (int i = 0; i < a->n && i < BM_MAX_PROG; i++) {
    const bm_prog_ins *x = &a->ins[i], *y = &b->ins[i];
    if (x->op != y->op || x->a != y->a || x->b != y->b || x->flags != y->flags || !feq(x->imm, y->imm))
      return false;
  }
  return true;
}

/* Field-by-field equality (padding bytes are not compared). */
static bool attrs_eq(const bm_attrs *a, const bm_attrs *b) {
  if (a->trans_a != b->trans_a || a->trans_b != b->trans_b || a->groups != b->groups || a->layout != b->layout ||
      a->axis != b->axis || a->begin != b->begin || a->end != b->end || a->step != b->step ||
      !feq(a->value, b->value) || a->scale != b->scale || a->axes != b->axes ||
      a->keepdim != b->keepdim || !feq(a->eps, b->eps) || a->rope_mode != b->rope_mode ||
      !feq(a->attn_scale, b->attn_scale) || a->causal != b->causal || a->window != b->window ||
      !feq(a->softcap, b->softcap) || a->attn_flags != b->attn_flags || a->topk != b->topk ||
      !feq(a->fill, b->fill) || a->act != b->act)
    return false;
  for (int i = 0; i < 2; i++)
    if (a->stride[i] != b->stride[i] || a->pad[i] != b->pad[i] || a->dilation[i] != b->dilation[i])
      return false;
  for (int i = 0; i < BM_MAX_DIMS; i++)
    if (a->perm[i] != b->perm[i]) return false;
  for (int i = 0; i < 2 * BM_MAX_DIMS; i++)
    if (a->pads[i] != b->pads[i]) return false;
  return prog_eq(&a->prog, &b->prog);
}

/* The attributes of n that its op reads; everything else zero. */
static bm_attrs attrs_masked(const bm_node *n) {
  bm_attrs m;
  memset(&m, 0, sizeof m);
  const bm_attrs *a = &n->a;
  const bm_op_info *info = &bm_op_table[n->op];
  unsigned at = info->attrs;
  if (at & BM_ATTR_TRANS) m.trans_a = a->trans_a, m.trans_b = a->trans_b;
  if (at & BM_ATTR_CONV) {
    memcpy(m.stride, a->stride, sizeof m.stride);
    memcpy(m.pad, a->pad, sizeof m.pad);
    memcpy(m.dilation, a->dilation, sizeof m.dilation);
    m.groups = a->groups;
    m.layout = a->layout;
  }
  if (at & BM_ATTR_PERM) memcpy(m.perm, a->perm, sizeof m.perm);
  if (at & BM_ATTR_SLICE) m.axis = a->axis, m.begin = a->begin, m.end = a->end, m.step = a->step;
  if (at & BM_ATTR_AXIS) m.axis = a->axis;
  if (at & BM_ATTR_PAD) memcpy(m.pads, a->pads, sizeof m.pads), m.value = a->value;
  if (at & BM_ATTR_SCALE) m.scale = a->scale;
  if (at & BM_ATTR_AXES) m.axes = a->axes, m.keepdim = a->keepdim;
  if (at & BM_ATTR_EPS) m.eps = a->eps;
  if (at & BM_ATTR_GROUPS) m.groups = a->groups;
  if (at & BM_ATTR_ROPE) m.rope_mode = a->rope_mode;
  if (at & BM_ATTR_ATTN)
    m.attn_scale = a->attn_scale, m.causal = a->causal, m.window = a->window, m.softcap = a->softcap,
    m.attn_flags = a->attn_flags;
  if (at & BM_ATTR_TOPK) m.topk = a->topk, m.fill = a->fill;
  if (at & BM_ATTR_ACT) m.act = a->act;
  if ((at & BM_ATTR_PROG) || ((info->flags & BM_OPF_EPILOGUE) && a->prog.n > 0)) m.prog = a->prog;
  return m;
}

static bool ident(const char *s) {
  if (!s || !*s || !((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_')) return false;
  for (s++; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_'))
      return false;
  return true;
}

static bool in_graph(const bm_graph *g, const bm_node *x) {
  return x && x->id >= 0 && x->id < g->nnodes && g->nodes[x->id] == x;
}

static bm_status verify_node(const bm_graph *g, int i) {
  const bm_node *n = g->nodes[i];
  if (!n) return vfail(g, NULL, "node slot %d is NULL", i);
  if (n->id != i) return vfail(g, n, "id %d does not match its position %d", n->id, i);
  if ((unsigned)n->op >= BM_OP_COUNT) return vfail(g, NULL, "node %%%d has bad op %d", i, (int)n->op);
  if (n->nin < 0 || n->nin > BM_MAX_IN) return vfail(g, n, "bad input count %d", n->nin);
  for (int j = 0; j < n->nin; j++) {
    const bm_node *x = n->in[j];
    if (!x) return vfail(g, n, "input %d is NULL", j);
    if (!in_graph(g, x)) return vfail(g, n, "input %d is not a node of the graph", j);
    if (x->id >= i)
      return vfail(g, n, "input %d (%%%d) does not precede its user (order is not topological)", j,
                   x->id);
  }
  if ((unsigned)n->dtype >= BM_DTYPE_COUNT || n->ndim < 0 || n->ndim > BM_MAX_DIMS)
    return vfail(g, n, "bad dtype %d or rank %d", (int)n->dtype, n->ndim);
  for (int d = 0; d < n->ndim; d++) {
    bm_dim x = n->shape[d];
    bool canonical = x.sym < 0 ? (x.sym == -1 && x.mul == 0) : (x.sym < g->nsyms && x.mul >= 1);
    if (!canonical)
      return vfail(g, n, "dim %d {add %lld, sym %d, mul %d} is not canonical or names an unknown symbol",
                   d, (long long)x.add, x.sym, x.mul);
  }

  /* attributes outside the op's mask must be zero */
  bm_attrs masked = attrs_masked(n);
  if (!attrs_eq(&masked, &n->a))
    return vfail(g, n, "attributes the op does not read are not zero");

  /* shapes re-inferred on a copy must equal the stored ones */
  bm_node copy = *n;
  bm_status s = bm_node_infer((bm_graph *)g, &copy); /* reads g only */
  if (s) return bm_status_wrap(s, "graph '%s': verify", g->name);
  bool same = copy.dtype == n->dtype && copy.ndim == n->ndim;
  for (int d = 0; same && d < n->ndim; d++)
    same = copy.shape[d].add == n->shape[d].add && copy.shape[d].sym == n->shape[d].sym &&
           copy.shape[d].mul == n->shape[d].mul;
  if (!same) {
    char a[512], b[512];
    return vfail(g, n, "stored type %s %s differs from the inferred %s %s", bm_dtype_name(n->dtype),
                 bm_shape_str(g, n->ndim, n->shape, a, sizeof a), bm_dtype_name(copy.dtype),
                 bm_shape_str(g, copy.ndim, copy.shape, b, sizeof b));
  }
  if (!attrs_eq(&copy.a, &n->a)) return vfail(g, n, "attributes are not normalized (axes, slice bounds)");

  /* sources */
  if (n->op == BM_OP_INPUT || n->op == BM_OP_WEIGHT || n->op == BM_OP_STATE) {
    if (!n->name || !*n->name) return vfail(g, n, "%s has no name", bm_op_name(n->op));
  }
  size_t nbytes = bm_dtype_nbytes(n->dtype, bm_node_numel_max(g, n));
  if (n->op == BM_OP_CONST && (!n->data || n->data_size != nbytes))
    return vfail(g, n, "constant data is %zu bytes, needs %zu", n->data ? n->data_size : 0, nbytes);
  if (n->op == BM_OP_WEIGHT && n->data && n->data_size != nbytes)
    return vfail(g, n, "bound data is %zu bytes, needs %zu", n->data_size, nbytes);
  return NULL;
}

/* The value a node reads through views: RESHAPE chains lead to their source. */
static const bm_node *view_source(const bm_node *n) {
  for (int hops = 0; n && n->op == BM_OP_RESHAPE && n->nin == 1 && hops < (1 << 28); hops++) n = n->in[0];
  return n;
}

/* States: unique names per graph; every KV_WRITE overwrites a value (a
 * STATE or an earlier KV_WRITE, through no view) that nothing reads after
 * it and that no other KV_WRITE overwrites, so that the in-place update is
 * invisible to every reader of the old value. */
static bm_status verify_states(const bm_graph *g) {
  int n = g->nnodes;
  for (int i = 0; i < n; i++) {
    const bm_node *x = g->nodes[i];
    if (x->op != BM_OP_STATE) continue;
    for (int j = 0; j < i; j++)
      if (g->nodes[j]->op == BM_OP_STATE && strcmp(g->nodes[j]->name, x->name) == 0)
        return vfail(g, x, "state '%s' also appears as node %%%d (one node per state and graph)", x->name, j);
  }
  bool any = false;
  for (int i = 0; i < n && !any; i++) any = g->nodes[i]->op == BM_OP_KV_WRITE;
  if (!any) return NULL;
  int *last_read = malloc(sizeof(int) * (size_t)n), *writer = malloc(sizeof(int) * (size_t)n);
  if (!last_read || !writer) {
    free(last_read);
    free(writer);
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "graph '%s': verify: out of memory", g->name);
  }
  for (int i = 0; i < n; i++) last_read[i] = -1, writer[i] = -1;
  bm_status s = NULL;
  for (int i = 0; i < n && !s; i++) {
    const bm_node *x = g->nodes[i];
    for (int k = 0; k < x->nin; k++) {
      const bm_node *src = view_source(x->in[k]);
      if (x->op == BM_OP_KV_WRITE && k == 0) {
        if (x->in[0]->op != BM_OP_STATE && x->in[0]->op != BM_OP_KV_WRITE) {
          s = vfail(g, x, "the cache must be a state or a kv_write, got %s %%%d", bm_op_name(x->in[0]->op),
                    x->in[0]->id);
          break;
        }
        if (writer[src->id] >= 0) {
          s = vfail(g, x, "overwrites %%%d, which kv_write %%%d already overwrites", src->id, writer[src->id]);
          break;
        }
        writer[src->id] = i;
      } else if (src->op == BM_OP_STATE || src->op == BM_OP_KV_WRITE) {
        last_read[src->id] = i;
      }
    }
  }
  for (int o = 0; o < g->noutputs && !s; o++) {
    const bm_node *src = view_source(g->outputs[o].node);
    if (src && (src->op == BM_OP_STATE || src->op == BM_OP_KV_WRITE)) last_read[src->id] = n;
  }
  for (int i = 0; i < n && !s; i++)
    if (writer[i] >= 0 && last_read[i] > writer[i]) {
      const bm_node *w = g->nodes[writer[i]];
      s = last_read[i] == n
              ? vfail(g, w, "overwrites %%%d in place, but %%%d is (a view of) a graph output", i, i)
              : vfail(g, w, "overwrites %%%d in place, but node %%%d reads %%%d after it (reads of the old "
                            "value must come before the kv_write)", i, last_read[i], i);
    }
  free(last_read);
  free(writer);
  return s;
}

bm_status bm_graph_verify(const bm_graph *g) {
  if (!g) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_graph_verify: NULL graph");
  if (g->err)
    return vfail(g, NULL, "has a recorded builder error: %s", bm_status_message(g->err));
  if (g->nnodes < 0 || (g->nnodes > 0 && !g->nodes)) return vfail(g, NULL, "bad node count %d", g->nnodes);

  if (g->nsyms < 0 || g->nsyms > BM_MAX_SYMS) return vfail(g, NULL, "bad symbol count %d", g->nsyms);
  for (int i = 0; i < g->nsyms; i++) {
    if (!ident(g->syms[i].name)) return vfail(g, NULL, "symbol %d has no valid name", i);
    if (g->syms[i].max < 1) return vfail(g, NULL, "symbol '%s' has bound %lld < 1", g->syms[i].name,
                                         (long long)g->syms[i].max);
    for (int j = 0; j < i; j++)
      if (strcmp(g->syms[i].name, g->syms[j].name) == 0)
        return vfail(g, NULL, "symbol '%s' declared twice", g->syms[i].name);
  }

  for (int i = 0; i < g->nnodes; i++) BM_RETURN_IF_ERROR(verify_node(g, i));
  BM_RETURN_IF_ERROR(verify_states(g));

  /* inputs: exactly the INPUT nodes, uniquely named */
  int ninput_nodes = 0;
  for (int i = 0; i < g->nnodes; i++) ninput_nodes += g->nodes[i]->op == BM_OP_INPUT;
  if (ninput_nodes != g->ninputs)
    return vfail(g, NULL, "%d INPUT nodes but %d entries in the input list", ninput_nodes, g->ninputs);
  for (int i = 0; i < g->ninputs; i++) {
    const bm_node *x = g->inputs[i];
    if (!in_graph(g, x) || x->op != BM_OP_INPUT)
      return vfail(g, NULL, "input list entry %d is not an INPUT node of the graph", i);
    for (int j = 0; j < i; j++)
      if (g->inputs[j] == x || strcmp(g->inputs[j]->name, x->name) == 0)
        return vfail(g, x, "duplicate input '%s'", x->name);
  }

  /* outputs: non-NULL nodes of the graph, uniquely named */
  for (int i = 0; i < g->noutputs; i++) {
    const bm_output *o = &g->outputs[i];
    if (!o->name) return vfail(g, NULL, "output %d has no name", i);
    if (!in_graph(g, o->node)) return vfail(g, NULL, "output '%s' is not a node of the graph", o->name);
    for (int j = 0; j < i; j++)
      if (strcmp(g->outputs[j].name, o->name) == 0)
        return vfail(g, NULL, "duplicate output name '%s'", o->name);
  }
  return NULL;
}
