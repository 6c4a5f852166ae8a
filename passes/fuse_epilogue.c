/* fuse_epilogue.c - folds elementwise consumers (bias, activation, residual,
 * GroupNorm+SiLU, ...) into the epilogue program of the op that produces
 * their input, so the intermediate is never written to memory.
 *
 * The fusions are data: one row of epilogue_rules per producer. */
#include <stdlib.h>
#include <string.h>

#include "../ir/interp.h"
#include "passes.h"

/* A producer op and the elementwise consumers it can absorb: any EW op
 * whose flags intersect consumer_flags, or one of the listed ops. CAST and
 * FUSED are never absorbed. */
typedef struct epilogue_rule {
  bm_op producer;
  unsigned consumer_flags; /* BM_OPF_UNARY and/or BM_OPF_BINARY */
  bm_op consumers[4];
  int nconsumers;
  const char *what;
} epilogue_rule;

#define EW_ANY (BM_OPF_UNARY | BM_OPF_BINARY)

static const epilogue_rule epilogue_rules[] = {
    {BM_OP_GROUP_NORM, 0, {BM_OP_SILU}, 1, "GroupNorm+SiLU"},
    {BM_OP_MATMUL, EW_ANY, {0}, 0, "matmul bias/activation/residual"},
    {BM_OP_QMATMUL, EW_ANY, {0}, 0, "qmatmul bias/activation/residual"},
    {BM_OP_CONV2D, EW_ANY, {0}, 0, "conv bias/activation/residual"},
    {BM_OP_LAYER_NORM, EW_ANY, {0}, 0, "layer norm + elementwise"},
    {BM_OP_RMS_NORM, EW_ANY, {0}, 0, "rms norm + elementwise"},
    {BM_OP_ATTENTION, EW_ANY, {0}, 0, "attention + elementwise"},
};

static bool rule_accepts(const bm_node *p, const bm_node *e) {
  unsigned ef = bm_op_table[e->op].flags;
  if (!(ef & BM_OPF_EW) || !(ef & EW_ANY) || e->op == BM_OP_CAST || e->op == BM_OP_FUSED)
    return false;
  for (size_t r = 0; r < sizeof epilogue_rules / sizeof epilogue_rules[0]; r++) {
    const epilogue_rule *rule = &epilogue_rules[r];
    if (rule->producer != p->op) continue;
    if (ef & rule->consumer_flags) return true;
    for (int c = 0; c < rule->nconsumers; c++)
      if (rule->consumers[c] == e->op) return true;
  }
  return false;
}

static bool shape_eq(const bm_node *a, const bm_node *b) {
  if (a->ndim != b->ndim) return false;
  for (int d = 0; d < a->ndim; d++)
    if (!bm_dim_eq(a->shape[d], b->shape[d])) return false;
  return true;
}

/* A CONST holding one element whose rank does not exceed the output's. */
static bool scalar_const(const bm_node *c, const bm_node *out, float *v) {
  if (c->op != BM_OP_CONST || !c->data || c->ndim > out->ndim) return false;
  for (int d = 0; d < c->ndim; d++)
    if (!bm_dim_is_one(c->shape[d])) return false;
  if (c->data_size < bm_dtype_nbytes(c->dtype, 1)) return false;
  *v = bm_load_f32(c->data, c->dtype, 0);
  return true;
}

static bool commutative(bm_op op) {
  return op == BM_OP_ADD || op == BM_OP_MUL || op == BM_OP_MAX || op == BM_OP_MIN;
}

/* The register holding the program's current result. */
static int result_reg(const bm_prog *p) { return p->n == 0 ? 0 : p->nin + p->n - 1; }

/* Adds an input register at index nin, shifting instruction registers. */
static int add_input_reg(bm_prog *p) {
  int r = p->nin;
  for (int j = 0; j < p->n; j++) {
    bm_prog_ins *ins = &p->ins[j];
    if (ins->a >= r) ins->a++;
    if (!(ins->flags & BM_PROG_IMM_B) && (bm_op_table[ins->op].flags & BM_OPF_BINARY) &&
        ins->b >= r)
      ins->b++;
  }
  p->nin++;
  return r;
}

/* Builds in *f the producer p with e appended to its epilogue (p is e's
 * operand k). Returns false if limits forbid it. */
static bool append_epilogue(const bm_node *p, const bm_node *e, int k, bm_node *f) {
  *f = *p;
  bm_prog *prog = &f->a.prog;
  if (prog->n == 0) prog->nin = 1;
  if (prog->n >= BM_MAX_PROG) return false;
  bm_prog_ins ins = {.op = (uint8_t)e->op};
  if (e->nin == 1) {
    ins.a = (uint8_t)result_reg(prog);
  } else {
    const bm_node *other = e->in[1 - k];
    float v;
    if (scalar_const(other, e, &v) && (k == 0 || commutative(e->op))) {
      ins.a = (uint8_t)result_reg(prog);
      ins.flags = BM_PROG_IMM_B;
      ins.imm = v;
    } else {
      /* reuse the register if this operand is already an epilogue input */
      int base = f->nin - (prog->nin - 1), r = -1;
      for (int q = base; q < f->nin; q++)
        if (f->in[q] == other) r = 1 + (q - base);
      if (r < 0) {
        if (f->nin >= BM_MAX_IN) return false;
        r = add_input_reg(prog);
        f->in[f->nin++] = (bm_node *)other;
      }
      int res = result_reg(prog);
      ins.a = (uint8_t)(k == 0 ? res : r);
      ins.b = (uint8_t)(k == 0 ? r : res);
    }
  }
  prog->ins[prog->n++] = ins;
  f->dtype = e->dtype;
  return true;
}

bm_status bm_pass_fuse_epilogue(bm_graph *g, const bm_pass_options *o) {
  for (int i = 0; i < g->nnodes; i++) g->nodes[i]->id = i;
  int *uses = bm_graph_use_counts(g);
  if (!uses) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "fuse_epilogue: use counts");
  int fused = 0;
  for (int i = 0; i < g->nnodes; i++) {
    bm_node *e = g->nodes[i];
    if (e->nin < 1 || e->nin > 2) continue;
    for (int k = 0; k < e->nin; k++) {
      bm_node *p = e->in[k];
      if (!rule_accepts(p, e) || uses[p->id] != 1 || !shape_eq(p, e)) continue;
      if (e->nin == 2 && e->in[1 - k] == p) continue;
      bm_node f;
      if (!append_epilogue(p, e, k, &f)) continue;
      /* the fused node takes e's place: every operand comes before e */
      bm_node saved = *e;
      f.id = e->id;
      f.name = e->name ? e->name : p->name;
      *e = f;
      bm_status s = bm_node_infer(g, e);
      bool ok = !s && shape_eq(e, &saved) && e->dtype == saved.dtype &&
                (!o || !o->supports || o->supports(e));
      bm_status_free(s);
      if (!ok) {
        *e = saved; /* the backend cannot run it: undo */
        continue;
      }
      fused++;
      break;
    }
  }
  free(uses);
  return fused ? bm_graph_compact(g) : NULL;
}
