/* graph.c - modules, graphs, symbols and graph utilities (use counts,
 * replace-uses, compaction). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"

/* ------------------------------------------------------------------ module */

bm_module *bm_module_create(const char *name) {
  bm_arena *a = bm_arena_create();
  if (!a) return NULL;
  bm_module *m = bm_arena_alloc(a, sizeof *m);
  if (!m) {
    bm_arena_destroy(a);
    return NULL;
  }
  m->arena = a;
  m->name = bm_arena_strdup(a, name ? name : "");
  if (!m->name) {
    bm_arena_destroy(a);
    return NULL;
  }
  return m;
}

void bm_module_destroy(bm_module *m) {
  if (!m) return;
  for (int i = 0; i < m->ngraphs; i++) {
    bm_status_free(m->graphs[i]->err);
    m->graphs[i]->err = NULL;
  }
  bm_arena_destroy(m->arena); /* m itself lives in the arena */
}

/* Grows an arena-allocated array of `elem`-byte items to hold at least
 * `need` items. Old storage is left in the arena. 0 on success. */
static int grow(bm_arena *a, void **arr, int *cap, int need, size_t elem) {
  if (need <= *cap) return 0;
  if (need > (1 << 28)) return -1;
  int ncap = *cap ? *cap : 16;
  while (ncap < need) ncap *= 2;
  void *p = bm_arena_alloc(a, (size_t)ncap * elem);
  if (!p) return -1;
  if (*cap) memcpy(p, *arr, (size_t)*cap * elem);
  *arr = p;
  *cap = ncap;
  return 0;
}

bm_graph *bm_graph_create(bm_module *m, const char *name) {
  if (!m) return NULL;
  bm_graph *g = bm_arena_alloc(m->arena, sizeof *g);
  if (!g) return NULL;
  g->module = m;
  g->name = bm_arena_strdup(m->arena, name ? name : "main");
  if (!g->name) return NULL;
  if (grow(m->arena, (void **)&m->graphs, &m->cap, m->ngraphs + 1, sizeof *m->graphs)) return NULL;
  m->graphs[m->ngraphs++] = g;
  return g;
}

bm_status bm_graph_status(const bm_graph *g) {
  return g ? g->err : NULL;
}

void bm_graph_fail(bm_graph *g, bm_status err) {
  if (!err) return;
  if (!g || g->err) {
    bm_status_free(err);
    return;
  }
  g->err = err;
}

bm_graph *bm_module_find_graph(const bm_module *m, const char *name) {
  if (!m || !name) return NULL;
  for (int i = 0; i < m->ngraphs; i++)
    if (strcmp(m->graphs[i]->name, name) == 0) return m->graphs[i];
  return NULL;
}

/* ------------------------------------------------------------------ symbols */

static int is_ident(const char *s) {
  if (!s || !*s) return 0;
  if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_')) return 0;
  for (s++; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
          *s == '_'))
      return 0;
  return 1;
}

int bm_sym_declare(bm_graph *g, const char *name, int64_t max) {
  if (!g) return -1;
  if (!is_ident(name) || strlen(name) > 63) {
    bm_graph_fail(g, bm_status_make(BM_ERR_INVALID_ARGUMENT,
                                    "symbol name '%s' must be an identifier ([A-Za-z_][A-Za-z0-9_]*, "
                                    "at most 63 characters)",
                                    name ? name : "(null)"));
    return -1;
  }
  if (bm_sym_find(g, name) >= 0) {
    bm_graph_fail(g, bm_status_make(BM_ERR_INVALID_ARGUMENT, "symbol '%s' declared twice in graph '%s'",
                                    name, g->name));
    return -1;
  }
  if (g->nsyms >= BM_MAX_SYMS) {
    bm_graph_fail(g, bm_status_make(BM_ERR_INVALID_ARGUMENT,
                                    "symbol '%s': graph '%s' already has %d symbols (the maximum)",
                                    name, g->name, BM_MAX_SYMS));
    return -1;
  }
  if (max < 1 || max > ((int64_t)1 << 40)) {
    bm_graph_fail(g, bm_status_make(BM_ERR_INVALID_ARGUMENT,
                                    "symbol '%s': upper bound %" PRId64 " out of range [1, 2^40]",
                                    name, max));
    return -1;
  }
  const char *nm = bm_arena_strdup(g->module->arena, name);
  if (!nm) {
    bm_graph_fail(g, bm_status_make(BM_ERR_OUT_OF_MEMORY, "symbol '%s': out of memory", name));
    return -1;
  }
  g->syms[g->nsyms].name = nm;
  g->syms[g->nsyms].max = max;
  return g->nsyms++;
}

int bm_sym_find(const bm_graph *g, const char *name) {
  if (!g || !name) return -1;
  for (int i = 0; i < g->nsyms && i < BM_MAX_SYMS; i++)
    if (g->syms[i].name && strcmp(g->syms[i].name, name) == 0) return i;
  return -1;
}

/* ------------------------------------------------------------------ dims */

const char *bm_dim_str(const bm_graph *g, bm_dim d, char *buf, size_t size) {
  if (!buf || size == 0) return "";
  if (bm_dim_is_static(d)) {
    snprintf(buf, size, "%" PRId64, d.add);
    return buf;
  }
  char symname[32];
  const char *sn;
  if (g && d.sym < g->nsyms && d.sym < BM_MAX_SYMS && g->syms[d.sym].name) {
    sn = g->syms[d.sym].name;
  } else {
    snprintf(symname, sizeof symname, "s%d", (int)d.sym);
    sn = symname;
  }
  char mul[24] = "";
  if (d.mul != 1) snprintf(mul, sizeof mul, "%d*", (int)d.mul);
  if (d.add > 0)
    snprintf(buf, size, "%s%s+%" PRId64, mul, sn, d.add);
  else if (d.add < 0)
    snprintf(buf, size, "%s%s%" PRId64, mul, sn, d.add);
  else
    snprintf(buf, size, "%s%s", mul, sn);
  return buf;
}

const char *bm_shape_str(const bm_graph *g, int ndim, const bm_dim *shape, char *buf,
                         size_t size) {
  if (!buf || size == 0) return "";
  size_t len = 0;
  buf[0] = 0;
  int nd = ndim < 0 ? 0 : ndim > BM_MAX_DIMS ? BM_MAX_DIMS : ndim;
  len += (size_t)snprintf(buf + len, size - len, "(");
  for (int i = 0; i < nd && len < size; i++) {
    char d[96];
    len += (size_t)snprintf(buf + len, size - len, "%s%s", i ? ", " : "",
                            bm_dim_str(g, shape[i], d, sizeof d));
  }
  if (len < size) snprintf(buf + len, size - len, ")");
  return buf;
}

int64_t bm_node_numel_max(const bm_graph *g, const bm_node *n) {
  if (!g || !n || n->ndim < 0 || n->ndim > BM_MAX_DIMS) return -1;
  int64_t total = 1;
  for (int i = 0; i < n->ndim; i++) {
    bm_dim d = n->shape[i];
    int64_t v;
    if (bm_dim_is_static(d)) {
      v = d.add;
    } else {
      if (d.sym < 0 || d.sym >= g->nsyms) return -1;
      if (__builtin_mul_overflow((int64_t)d.mul, g->syms[d.sym].max, &v)) return -1;
      if (__builtin_add_overflow(v, d.add, &v)) return -1;
    }
    if (v < 0) return -1;
    if (__builtin_mul_overflow(total, v, &total)) return -1;
  }
  return total;
}

/* ------------------------------------------------------------------ utilities */

void bm_graph_replace_uses(bm_graph *g, bm_node *old, bm_node *repl) {
  if (!g || !old || old == repl) return;
  for (int i = 0; i < g->nnodes; i++) {
    bm_node *n = g->nodes[i];
    if (n == repl) continue; /* repl may use old (x -> f(x)) */
    for (int j = 0; j < n->nin; j++)
      if (n->in[j] == old) n->in[j] = repl;
  }
  for (int i = 0; i < g->noutputs; i++)
    if (g->outputs[i].node == old) g->outputs[i].node = repl;
}

int *bm_graph_use_counts(const bm_graph *g) {
  if (!g) return NULL;
  int size = g->nnodes;
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->id >= size) size = g->nodes[i]->id + 1;
  int *uses = calloc((size_t)(size > 0 ? size : 1), sizeof *uses);
  if (!uses) return NULL;
  for (int i = 0; i < g->nnodes; i++) {
    const bm_node *n = g->nodes[i];
    for (int j = 0; j < n->nin && j < BM_MAX_IN; j++)
      if (n->in[j] && n->in[j]->id >= 0 && n->in[j]->id < size) uses[n->in[j]->id]++;
  }
  for (int i = 0; i < g->noutputs; i++) {
    const bm_node *n = g->outputs[i].node;
    if (n && n->id >= 0 && n->id < size) uses[n->id]++;
  }
  return uses;
}

/* Index of n in g->nodes (ids are positions after the renumbering at the
 * start of compaction), or -1 if n is not in the graph. */
static int node_index(const bm_graph *g, const bm_node *n) {
  if (!n || n->id < 0 || n->id >= g->nnodes || g->nodes[n->id] != n) return -1;
  return n->id;
}

bm_status bm_graph_compact(bm_graph *g) {
  if (!g) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_graph_compact: NULL graph");
  int nn = g->nnodes;
  for (int i = 0; i < nn; i++) g->nodes[i]->id = i;

  /* state: 0 unvisited, 1 on the DFS stack, 2 emitted. */
  unsigned char *state = calloc((size_t)(nn > 0 ? nn : 1), 1);
  unsigned char *live = calloc((size_t)(nn > 0 ? nn : 1), 1);
  int *stack = malloc((size_t)(nn > 0 ? nn : 1) * sizeof *stack);
  int *stack_arg = malloc((size_t)(nn > 0 ? nn : 1) * sizeof *stack_arg);
  bm_node **order = malloc((size_t)(nn > 0 ? nn : 1) * sizeof *order);
  bm_status err = NULL;
  if (!state || !live || !stack || !stack_arg || !order) {
    err = bm_status_make(BM_ERR_OUT_OF_MEMORY, "graph '%s': compaction: out of memory", g->name);
    goto done;
  }

  /* Roots: outputs and every INPUT node. */
  for (int i = 0; i < g->noutputs; i++) {
    int k = node_index(g, g->outputs[i].node);
    if (k < 0) {
      err = bm_status_make(BM_ERR_INTERNAL, "graph '%s': output '%s' is not a node of the graph",
                           g->name, g->outputs[i].name ? g->outputs[i].name : "?");
      goto done;
    }
    live[k] = 1;
  }
  for (int i = 0; i < nn; i++)
    if (g->nodes[i]->op == BM_OP_INPUT) live[i] = 1;

  /* Mark everything reachable from the roots. */
  {
    int sp = 0;
    for (int i = 0; i < nn; i++)
      if (live[i]) stack[sp++] = i;
    while (sp > 0) {
      bm_node *n = g->nodes[stack[--sp]];
      for (int j = 0; j < n->nin && j < BM_MAX_IN; j++) {
        int k = node_index(g, n->in[j]);
        if (k < 0) {
          err = bm_status_make(BM_ERR_INTERNAL,
                               "graph '%s': node %%%d (%s) input %d is not a node of the graph",
                               g->name, n->id, bm_op_name(n->op), j);
          goto done;
        }
        if (!live[k]) {
          live[k] = 1;
          stack[sp++] = k;
        }
      }
    }
  }

  /* Post-order DFS from each live node in the current order: keeps the
   * existing order where it is already topological, repairs it where not. */
  int norder = 0;
  for (int r = 0; r < nn; r++) {
    if (!live[r] || state[r]) continue;
    int sp = 0;
    stack[sp] = r;
    stack_arg[sp++] = 0;
    state[r] = 1;
    while (sp > 0) {
      int k = stack[sp - 1];
      bm_node *n = g->nodes[k];
      if (stack_arg[sp - 1] < n->nin && stack_arg[sp - 1] < BM_MAX_IN) {
        bm_node *in = n->in[stack_arg[sp - 1]++];
        int j = node_index(g, in);
        if (j < 0) {
          err = bm_status_make(BM_ERR_INTERNAL,
                               "graph '%s': node %%%d (%s) has an input that is not in the graph",
                               g->name, k, bm_op_name(n->op));
          goto done;
        }
        if (state[j] == 1) {
          err = bm_status_make(BM_ERR_INTERNAL, "graph '%s': cycle through node %%%d (%s)", g->name,
                               j, bm_op_name(g->nodes[j]->op));
          goto done;
        }
        if (state[j] == 0) {
          state[j] = 1;
          stack[sp] = j;
          stack_arg[sp++] = 0;
        }
      } else {
        state[k] = 2;
        order[norder++] = n;
        sp--;
      }
    }
  }
  memcpy(g->nodes, order, (size_t)norder * sizeof *order);
  g->nnodes = norder;
  for (int i = 0; i < norder; i++) g->nodes[i]->id = i;

done:
  free(state);
  free(live);
  free(stack);
  free(stack_arg);
  free(order);
  return err;
}
