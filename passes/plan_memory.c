/* plan_memory.c - assigns every node its storage: weights and constants in
 * the package, states in session memory (BM_STORAGE_STATE), reshapes and
 * in-place KV_WRITEs as aliases of their root, everything else at an offset
 * in one activation arena sized for the symbols' upper bounds.
 *
 * Liveness is by node index (the execution order): a buffer is live from
 * its definition to its last use, counting uses through aliases for the
 * storage's root; graph outputs live to the end. INPUT nodes live for the
 * whole function (their slots are never reused), so inputs set once stay
 * valid for any number of runs.
 * Buffers are placed greedily by size, largest first, each at the best-
 * fitting gap among the buffers already placed whose live ranges overlap.
 * Because ranges are inclusive, a kernel's output never overlaps its inputs. */
#include <stdlib.h>
#include <string.h>

#include "passes.h"

#define ARENA_ALIGN 64
#define MAX_BUFFER_BYTES ((int64_t)1 << 48)

typedef struct buffer {
  bm_node *node;
  int64_t size;   /* aligned */
  int start, end; /* inclusive live range in node indices */
  int64_t offset;
} buffer;

static const char *label(const bm_node *n) { return n->name ? n->name : ""; }

/* The node whose storage n shares: through views and in-place writes. */
static bm_node *storage_root(bm_node *n) {
  while ((n->op == BM_OP_RESHAPE && n->nin == 1) ||
         ((bm_op_table[n->op].flags & BM_OPF_INPLACE) && n->nin >= 1))
    n = n->in[0];
  return n;
}

static int cmp_size_desc(const void *pa, const void *pb) {
  const buffer *a = *(buffer *const *)pa, *b = *(buffer *const *)pb;
  if (a->size != b->size) return a->size > b->size ? -1 : 1;
  return a->start - b->start; /* deterministic */
}

static int cmp_offset(const void *pa, const void *pb) {
  const buffer *a = *(buffer *const *)pa, *b = *(buffer *const *)pb;
  return a->offset < b->offset ? -1 : a->offset > b->offset;
}

/* Bytes of n at the symbols' upper bounds; error naming n on overflow. */
static bm_status node_bytes(const bm_graph *g, bm_node *n, int64_t *out) {
  int64_t numel = bm_node_numel_max(g, n);
  if (numel < 0 || numel > MAX_BUFFER_BYTES)
    return bm_status_make(BM_ERR_OUT_OF_MEMORY,
                          "node %d (%s '%s'): %s elements at the symbols' upper bounds is too large "
                          "(limit 2^48 bytes)",
                          n->id, bm_op_name(n->op), label(n), numel < 0 ? "overflowing" : "too many");
  int64_t bytes = (int64_t)bm_dtype_nbytes(n->dtype, numel);
  if (bytes > MAX_BUFFER_BYTES)
    return bm_status_make(BM_ERR_OUT_OF_MEMORY,
                          "node %d (%s '%s'): %lld bytes is over the 2^48-byte limit", n->id,
                          bm_op_name(n->op), label(n), (long long)bytes);
  *out = bytes;
  return NULL;
}

/* Places buffers (sorted by size, descending) at offsets; returns the arena size. */
static int64_t place(buffer **order, int nb, buffer **tmp) {
  int64_t total = 0;
  for (int i = 0; i < nb; i++) {
    buffer *b = order[i];
    /* the placed buffers that are live at the same time as b, by offset */
    int nc = 0;
    for (int j = 0; j < i; j++)
      if (order[j]->start <= b->end && b->start <= order[j]->end) tmp[nc++] = order[j];
    qsort(tmp, (size_t)nc, sizeof *tmp, cmp_offset);
    /* smallest gap that fits; else after the last conflicting buffer */
    int64_t best = -1, best_gap = INT64_MAX, cursor = 0;
    for (int j = 0; j < nc; j++) {
      int64_t gap = tmp[j]->offset - cursor;
      if (gap >= b->size && gap < best_gap) {
        best = cursor;
        best_gap = gap;
      }
      int64_t e = tmp[j]->offset + tmp[j]->size;
      if (e > cursor) cursor = e;
    }
    b->offset = best >= 0 ? best : cursor;
    if (b->offset + b->size > total) total = b->offset + b->size;
  }
  return total;
}

bm_status bm_pass_plan_memory(bm_graph *g, const bm_pass_options *o) {
  (void)o;
  int n = g->nnodes;
  for (int i = 0; i < n; i++) g->nodes[i]->id = i;
  buffer *bufs = calloc((size_t)n + 1, sizeof *bufs);
  buffer **byid = calloc((size_t)n + 1, sizeof *byid);  /* node index -> its buffer */
  buffer **order = calloc((size_t)n + 1, sizeof *order);
  buffer **tmp = calloc((size_t)n + 1, sizeof *tmp);
  bm_status s = NULL;
  if (!bufs || !byid || !order || !tmp) {
    s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "plan_memory: %d nodes", n);
    goto done;
  }

  /* storage kinds and sizes */
  int nb = 0;
  for (int i = 0; i < n; i++) {
    bm_node *x = g->nodes[i];
    int64_t bytes = 0;
    if ((s = node_bytes(g, x, &bytes))) goto done;
    x->nbytes = bytes;
    x->offset = 0;
    x->alias = NULL;
    if (x->op == BM_OP_WEIGHT || x->op == BM_OP_CONST) {
      x->storage = BM_STORAGE_WEIGHT;
    } else if (x->op == BM_OP_STATE) {
      x->storage = BM_STORAGE_STATE; /* the package writer numbers the states */
    } else if (x->op == BM_OP_RESHAPE || (bm_op_table[x->op].flags & BM_OPF_INPLACE)) {
      x->storage = BM_STORAGE_ALIAS;
      x->alias = storage_root(x);
    } else {
      x->storage = BM_STORAGE_ARENA;
      buffer *b = &bufs[nb++];
      b->node = x;
      b->size = (bytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
      if (b->size == 0) b->size = ARENA_ALIGN;
      b->start = x->op == BM_OP_INPUT ? 0 : i;
      b->end = x->op == BM_OP_INPUT ? n : i; /* inputs live for the whole function */
      byid[i] = b;
    }
  }

  /* live ranges: a use of n (or of a view of n) extends n's root's range */
  for (int i = 0; i < n; i++) {
    bm_node *x = g->nodes[i];
    for (int k = 0; k < x->nin; k++) {
      bm_node *r = storage_root(x->in[k]);
      buffer *b = r->id >= 0 && r->id < n && g->nodes[r->id] == r ? byid[r->id] : NULL;
      if (b && b->end < i) b->end = i;
    }
  }
  for (int k = 0; k < g->noutputs; k++) {
    bm_node *r = storage_root(g->outputs[k].node);
    buffer *b = r->id >= 0 && r->id < n && g->nodes[r->id] == r ? byid[r->id] : NULL;
    if (b) b->end = n;
  }

  for (int i = 0; i < nb; i++) order[i] = &bufs[i];
  qsort(order, (size_t)nb, sizeof *order, cmp_size_desc);
  int64_t total = place(order, nb, tmp);
  if (total > MAX_BUFFER_BYTES) {
    s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "graph '%s': activation arena of %lld bytes is over 2^48",
                       g->name ? g->name : "?", (long long)total);
    goto done;
  }
  for (int i = 0; i < nb; i++) bufs[i].node->offset = bufs[i].offset;
  for (int i = 0; i < n; i++) {
    bm_node *x = g->nodes[i];
    if (x->storage == BM_STORAGE_ALIAS) x->offset = x->alias->offset;
  }
  g->arena_bytes = total;
done:
  free(bufs);
  free(byid);
  free(order);
  free(tmp);
  return s;
}
