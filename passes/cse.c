/* cse.c - common subexpression elimination: merges nodes that compute the
 * same thing (same op, inputs, dtype, shape and the attributes the op
 * reads), and constants with equal data. INPUT, WEIGHT, STATE and in-place
 * ops (KV_WRITE) are never merged. */
#include <stdlib.h>
#include <string.h>

#include "passes.h"

/* ---- hashing */

static uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  return h * 0xff51afd7ed558ccdull;
}

static uint64_t hash_bytes(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
  return h;
}

/* Hash of everything equal nodes share (attributes are left out: equality
 * checks them; nodes that differ only in attributes just share a bucket). */
static uint64_t node_hash(const bm_node *n) {
  uint64_t h = mix(0x243f6a8885a308d3ull, (uint64_t)n->op);
  h = mix(h, (uint64_t)n->dtype);
  h = mix(h, (uint64_t)n->ndim);
  for (int d = 0; d < n->ndim; d++) {
    h = mix(h, (uint64_t)n->shape[d].add);
    if (!bm_dim_is_static(n->shape[d])) h = mix(h, ((uint64_t)n->shape[d].sym << 32) | (uint32_t)n->shape[d].mul);
  }
  h = mix(h, (uint64_t)n->nin);
  for (int k = 0; k < n->nin; k++) h = mix(h, (uint64_t)(uintptr_t)n->in[k]);
  if (n->op == BM_OP_CONST && n->data) h = hash_bytes(h, n->data, n->data_size);
  return h;
}

/* ---- equality */

static bool prog_eq(const bm_prog *a, const bm_prog *b) {
  if (a->n != b->n || (a->n > 0 && a->nin != b->nin)) return false;
  for (int j = 0; j < a->n; j++) {
    const bm_prog_ins *x = &a->ins[j], *y = &b->ins[j];
    if (x->op != y->op || x->a != y->a || x->flags != y->flags) return false;
    bool binary = (bm_op_table[x->op].flags & BM_OPF_BINARY) != 0;
    if (binary && (x->flags & BM_PROG_IMM_B) && memcmp(&x->imm, &y->imm, sizeof x->imm) != 0)
      return false;
    if (binary && !(x->flags & BM_PROG_IMM_B) && x->b != y->b) return false;
  }
  return true;
}

/* Compares only the attributes op reads (bm_op_info.attrs), field by field;
 * floats bitwise, so -0.0 and 0.0 stay apart. */
#define FEQ(f) (memcmp(&x->f, &y->f, sizeof x->f) == 0)
static bool attrs_eq(bm_op op, const bm_attrs *x, const bm_attrs *y) {
  unsigned m = bm_op_table[op].attrs;
  if ((m & BM_ATTR_TRANS) && !(FEQ(trans_a) && FEQ(trans_b))) return false;
  if ((m & BM_ATTR_CONV) && !(FEQ(stride) && FEQ(pad) && FEQ(dilation) && FEQ(groups)))
    return false;
  if ((m & BM_ATTR_PERM) && !FEQ(perm)) return false;
  if ((m & BM_ATTR_SLICE) && !(FEQ(axis) && FEQ(begin) && FEQ(end) && FEQ(step))) return false;
  if ((m & BM_ATTR_AXIS) && !FEQ(axis)) return false;
  if ((m & BM_ATTR_PAD) && !(FEQ(pads) && FEQ(value))) return false;
  if ((m & BM_ATTR_SCALE) && !FEQ(scale)) return false;
  if ((m & BM_ATTR_AXES) && !(FEQ(axes) && FEQ(keepdim))) return false;
  if ((m & BM_ATTR_EPS) && !FEQ(eps)) return false;
  if ((m & BM_ATTR_GROUPS) && !FEQ(groups)) return false;
  if ((m & BM_ATTR_ROPE) && !FEQ(rope_mode)) return false;
  if ((m & BM_ATTR_ATTN) &&
      !(FEQ(attn_scale) && FEQ(causal) && FEQ(window) && FEQ(softcap) && FEQ(attn_flags)))
    return false;
  if ((m & BM_ATTR_TOPK) && !(FEQ(topk) && FEQ(fill))) return false;
  if ((m & BM_ATTR_ACT) && !FEQ(act)) return false;
  /* FUSED programs, and epilogues of any op that can carry one */
  if (((m & BM_ATTR_PROG) || (bm_op_table[op].flags & BM_OPF_EPILOGUE)) &&
      !prog_eq(&x->prog, &y->prog))
    return false;
  return true;
}
#undef FEQ

static bool node_eq(const bm_node *x, const bm_node *y) {
  if (x->op != y->op || x->dtype != y->dtype || x->ndim != y->ndim || x->nin != y->nin)
    return false;
  for (int d = 0; d < x->ndim; d++)
    if (!bm_dim_eq(x->shape[d], y->shape[d])) return false;
  for (int k = 0; k < x->nin; k++)
    if (x->in[k] != y->in[k]) return false;
  if (x->op == BM_OP_CONST)
    return x->data_size == y->data_size &&
           (x->data_size == 0 || (x->data && y->data && memcmp(x->data, y->data, x->data_size) == 0));
  return attrs_eq(x->op, &x->a, &y->a);
}

/* ---- the pass */

/* INPUT, WEIGHT and STATE are named bindings (two equal-looking ones are
 * different tensors); in-place writes (KV_WRITE) are never merged either:
 * each one is an update. */
static int is_mergeable(const bm_node *n) {
  return n->op != BM_OP_INPUT && n->op != BM_OP_WEIGHT && n->op != BM_OP_STATE &&
         !(bm_op_table[n->op].flags & BM_OPF_INPLACE);
}

bm_status bm_pass_cse(bm_graph *g, const bm_pass_options *o) {
  (void)o;
  int n = g->nnodes;
  if (n == 0) return NULL;
  size_t cap = 16;
  while (cap < (size_t)n * 2) cap *= 2;
  bm_node **table = calloc(cap, sizeof *table);  /* open addressing, linear probing */
  bm_node **repl = calloc((size_t)n, sizeof *repl); /* by index: the node that replaces it */
  if (!table || !repl) {
    free(table);
    free(repl);
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "cse: out of memory for %d nodes", n);
  }
  for (int i = 0; i < n; i++) g->nodes[i]->id = i;

  int merged = 0;
  for (int i = 0; i < n; i++) {
    bm_node *x = g->nodes[i];
    /* inputs first: point them at their canonical nodes (topological order
     * means they were visited already) */
    for (int k = 0; k < x->nin; k++) {
      bm_node *in = x->in[k];
      if (in && in->id >= 0 && in->id < n && g->nodes[in->id] == in && repl[in->id])
        x->in[k] = repl[in->id];
    }
    if (!is_mergeable(x)) continue;
    size_t h = (size_t)node_hash(x) & (cap - 1);
    while (table[h] && !node_eq(table[h], x)) h = (h + 1) & (cap - 1);
    if (table[h]) {
      repl[i] = table[h];
      merged++;
    } else {
      table[h] = x;
    }
  }
  if (merged) {
    for (int k = 0; k < g->noutputs; k++) {
      bm_node *out = g->outputs[k].node;
      if (out && out->id >= 0 && out->id < n && g->nodes[out->id] == out && repl[out->id])
        g->outputs[k].node = repl[out->id];
    }
  }
  free(table);
  free(repl);
  return merged ? bm_graph_compact(g) : NULL;
}
