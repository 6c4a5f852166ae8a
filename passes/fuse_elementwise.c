/* fuse_elementwise.c - turns trees of single-use elementwise ops into one
 * FUSED node that runs a small register program per output element.
 *
 * Roots are visited last-to-first; from each root the tree grows through
 * operands that are elementwise (not CAST), used once and of a float dtype.
 * Everything else becomes a leaf input (scalar CONSTs become immediates).
 * A float-to-float CAST (root or operand) is transparent: registers are
 * f32, loads widen every float dtype exactly and the FUSED node stores in
 * its own dtype, so absorbing a cast only drops an intermediate rounding,
 * as fusing any f16/bf16 chain does (the graph's compute dtype, bmc --dtype).
 * The FUSED node replaces the root in place; absorbed nodes die. */
#include <stdlib.h>
#include <string.h>

#include "../ir/interp.h"
#include "passes.h"

/* The program being built. Operands are registers numbered as in the final
 * program only after all leaves are known, so instructions first refer to
 * leaves as LEAF(i) and to instruction results as INS(j). */
#define REF_INS 0x80
typedef struct fuse_state {
  bm_node *leaves[BM_MAX_IN];
  int nleaves;
  bm_prog_ins ins[BM_MAX_PROG]; /* a, b: leaf index, or REF_INS | instruction index */
  int nins;
  bm_node *absorbed[2 * BM_MAX_PROG]; /* instructions' nodes and transparent casts */
  int nabsorbed;
  int ncasts;                         /* transparent casts absorbed (the root included) */
  const int *uses;
} fuse_state;

static bool is_fusible_ew(const bm_node *n) {
  unsigned f = bm_op_table[n->op].flags;
  return (f & BM_OPF_EW) && (f & (BM_OPF_UNARY | BM_OPF_BINARY)) && n->op != BM_OP_CAST &&
         n->op != BM_OP_FUSED;
}

static bool is_float(bm_dtype t) {
  return t == BM_DTYPE_F32 || t == BM_DTYPE_F16 || t == BM_DTYPE_BF16;
}

static bool is_float_cast(const bm_node *n) {
  return n->op == BM_OP_CAST && n->nin == 1 && is_float(n->dtype) && is_float(n->in[0]->dtype);
}

static bool scalar_const(const bm_node *c, float *v) {
  if (c->op != BM_OP_CONST || !c->data || c->ndim != 0) return false;
  if (c->data_size < bm_dtype_nbytes(c->dtype, 1)) return false;
  *v = bm_load_f32(c->data, c->dtype, 0);
  return true;
}

static bool commutative(bm_op op) {
  return op == BM_OP_ADD || op == BM_OP_MUL || op == BM_OP_MAX || op == BM_OP_MIN;
}

/* x as a leaf: its index, or -1 when leaf slots (minus `reserve`) are full. */
static int leaf(fuse_state *st, bm_node *x, int reserve) {
  for (int i = 0; i < st->nleaves; i++)
    if (st->leaves[i] == x) return i;
  if (st->nleaves + 1 + reserve > BM_MAX_IN) return -1;
  st->leaves[st->nleaves] = x;
  return st->nleaves++;
}

/* Adds x to the program and returns its operand reference, or -1. An
 * interior node is absorbed if it fits while keeping `ins_reserve`
 * instruction slots and `leaf_reserve` leaf slots free for the ancestors
 * and siblings still pending; otherwise it becomes a leaf. */
static int build(fuse_state *st, bm_node *x, bool root, int ins_reserve, int leaf_reserve) {
  if (is_float_cast(x) && (root || st->uses[x->id] == 1) &&
      st->nabsorbed < (int)(sizeof st->absorbed / sizeof st->absorbed[0])) {
    /* transparent: x's value is its operand's (widened or rounded at the store) */
    int nabs0 = st->nabsorbed;
    if (!root) st->absorbed[st->nabsorbed++] = x;
    int r = build(st, x->in[0], false, ins_reserve, leaf_reserve);
    if (r >= 0) {
      st->ncasts++;
      return r;
    }
    st->nabsorbed = nabs0;
    return root ? -1 : leaf(st, x, leaf_reserve);
  }
  if (!root && !(is_fusible_ew(x) && st->uses[x->id] == 1 && is_float(x->dtype)))
    return leaf(st, x, leaf_reserve);
  int nleaves0 = st->nleaves, nins0 = st->nins, nabs0 = st->nabsorbed, ncasts0 = st->ncasts;
  bm_prog_ins ins = {.op = (uint8_t)x->op};
  bool ok = st->nins + 1 + ins_reserve <= BM_MAX_PROG;
  if (ok && x->nin == 1) {
    int a = build(st, x->in[0], false, ins_reserve + 1, leaf_reserve);
    ok = a >= 0;
    ins.a = (uint8_t)a;
  } else if (ok) {
    bm_node *a = x->in[0], *b = x->in[1];
    float v;
    if (scalar_const(a, &v) && !scalar_const(b, &v) && commutative(x->op)) {
      bm_node *t = a; /* put the constant on the immediate side */
      a = b;
      b = t;
    }
    if (scalar_const(b, &v)) {
      int ra = build(st, a, false, ins_reserve + 1, leaf_reserve);
      ok = ra >= 0;
      ins.a = (uint8_t)ra;
      ins.flags = BM_PROG_IMM_B;
      ins.imm = v;
    } else {
      int ra = build(st, a, false, ins_reserve + 1, leaf_reserve + 1);
      int rb = ra >= 0 ? build(st, b, false, ins_reserve + 1, leaf_reserve) : -1;
      ok = ra >= 0 && rb >= 0;
      ins.a = (uint8_t)ra;
      ins.b = (uint8_t)rb;
    }
  }
  if (ok) {
    st->ins[st->nins] = ins;
    if (!root) st->absorbed[st->nabsorbed++] = x;
    return REF_INS | st->nins++;
  }
  /* roll back and take x whole */
  st->nleaves = nleaves0;
  st->nins = nins0;
  st->nabsorbed = nabs0;
  st->ncasts = ncasts0;
  return root ? -1 : leaf(st, x, leaf_reserve);
}

/* Final register numbering: leaves 0..nleaves-1, instruction j -> nleaves+j. */
static uint8_t reg(const fuse_state *st, uint8_t ref) {
  return (ref & REF_INS) ? (uint8_t)(st->nleaves + (ref & ~REF_INS)) : ref;
}

static bool shape_eq(const bm_node *a, const bm_node *b) {
  if (a->ndim != b->ndim) return false;
  for (int d = 0; d < a->ndim; d++)
    if (!bm_dim_eq(a->shape[d], b->shape[d])) return false;
  return true;
}

bm_status bm_pass_fuse_elementwise(bm_graph *g, const bm_pass_options *o) {
  for (int i = 0; i < g->nnodes; i++) g->nodes[i]->id = i;
  int *uses = bm_graph_use_counts(g);
  bool *done = calloc((size_t)g->nnodes + 1, sizeof *done); /* absorbed into a later root */
  if (!uses || !done) {
    free(uses);
    free(done);
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "fuse_elementwise: %d nodes", g->nnodes);
  }
  int fused = 0;
  for (int i = g->nnodes - 1; i >= 0; i--) {
    bm_node *root = g->nodes[i];
    if (done[i] || !(is_fusible_ew(root) || is_float_cast(root))) continue;
    fuse_state st = {.uses = uses};
    /* worth it when two kernels or more become one */
    if (build(&st, root, true, 0, 0) < 0 || st.nins < 1 || st.nins + st.ncasts < 2 || st.nleaves < 1) continue;

    bm_node saved = *root;
    memset(root->in, 0, sizeof root->in);
    memset(&root->a, 0, sizeof root->a);
    root->op = BM_OP_FUSED;
    root->nin = st.nleaves;
    for (int l = 0; l < st.nleaves; l++) root->in[l] = st.leaves[l];
    bm_prog *p = &root->a.prog;
    p->nin = (uint8_t)st.nleaves;
    p->n = (uint8_t)st.nins;
    for (int j = 0; j < st.nins; j++) {
      p->ins[j] = st.ins[j];
      p->ins[j].a = reg(&st, st.ins[j].a);
      if (bm_op_table[st.ins[j].op].flags & BM_OPF_BINARY) {
        if (!(st.ins[j].flags & BM_PROG_IMM_B)) p->ins[j].b = reg(&st, st.ins[j].b);
      } else {
        p->ins[j].b = 0;
      }
    }
    bm_status s = bm_node_infer(g, root);
    bool ok = !s && shape_eq(root, &saved) && root->dtype == saved.dtype &&
              (!o || !o->supports || o->supports(root));
    bm_status_free(s);
    if (!ok) {
      *root = saved; /* e.g. the leaves broadcast to a smaller shape: keep it */
      continue;
    }
    for (int k = 0; k < st.nabsorbed; k++) done[st.absorbed[k]->id] = true;
    fused++;
  }
  free(uses);
  free(done);
  return fused ? bm_graph_compact(g) : NULL;
}
