/* plan_memory.c - assigns every node its storage: weights and constants in
 * the package, states in session memory (BM_STORAGE_STATE), reshapes and
 * in-place KV_WRITEs and contiguous SLICEs (bm_slice_view: a byte offset into
 * the root) as aliases of their root, everything else at an offset
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

/* A dim's value at the symbols' upper bounds. */
static int64_t dim_max(const bm_graph *g, bm_dim d) {
  if (bm_dim_is_static(d)) return d.add;
  if (d.sym >= g->nsyms) return INT64_MAX;
  return (int64_t)d.mul * g->syms[d.sym].max + d.add;
}

/* Is n a view of its input: a reshape, or a slice bm_slice_view accepts. */
static bool is_view(const bm_graph *g, const bm_node *n, int64_t *byte_offset) {
  *byte_offset = 0;
  if (n->op == BM_OP_RESHAPE && n->nin == 1) return true;
  return n->op == BM_OP_SLICE && bm_slice_view(g, n, byte_offset);
}

/* The node whose storage n shares: through views and in-place writes;
 * *byte_offset (may be NULL): where n starts in it. */
static bm_node *storage_root_at(const bm_graph *g, bm_node *n, int64_t *byte_offset) {
  int64_t total = 0, off;
  for (;;) {
    if (is_view(g, n, &off)) {
      total += off;
      n = n->in[0];
    } else if ((bm_op_table[n->op].flags & BM_OPF_INPLACE) && n->nin >= 1) {
      n = n->in[0];
    } else {
      break;
    }
  }
  if (byte_offset) *byte_offset = total;
  return n;
}

static bm_node *storage_root(const bm_graph *g, bm_node *n) { return storage_root_at(g, n, NULL); }

bool bm_slice_view(const bm_graph *g, const bm_node *n, int64_t *byte_offset) {
  *byte_offset = 0;
  if (!g || !n || n->op != BM_OP_SLICE || n->nin != 1 || n->a.step != 1) return false;
  const bm_node *x = n->in[0];
  int ax = n->a.axis;
  if (x->dtype == BM_DTYPE_I4 || ax < 0 || ax >= x->ndim || !bm_dim_is_static(x->shape[ax]) || n->a.begin < 0)
    return false;
  for (int d = 0; d < ax; d++) {
    int64_t m = dim_max(g, x->shape[d]);
    if (m < 0 || m > 1) return false;
  }
  int64_t inner = 1;
  for (int d = ax + 1; d < x->ndim; d++) {
    if (!bm_dim_is_static(x->shape[d])) return false;
    inner *= x->shape[d].add;
  }
  int64_t off = (int64_t)bm_dtype_nbytes(x->dtype, n->a.begin * inner);
  if (off % ARENA_ALIGN) return false;
  /* the storage must be the arena's (the manifest has no offsets into weights and states) */
  int64_t dummy;
  const bm_node *r = storage_root_at(g, (bm_node *)x, &dummy);
  if ((bm_op_table[r->op].flags & BM_OPF_SOURCE) && r->op != BM_OP_INPUT) return false;
  *byte_offset = off;
  return true;
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
    x->view_offset = 0;
    int64_t voff = 0;
    if (x->op == BM_OP_WEIGHT || x->op == BM_OP_CONST) {
      x->storage = BM_STORAGE_WEIGHT;
    } else if (x->op == BM_OP_STATE) {
      x->storage = BM_STORAGE_STATE; /* the package writer numbers the states */
    } else if (x->op == BM_OP_RESHAPE || (bm_op_table[x->op].flags & BM_OPF_INPLACE) ||
               (x->op == BM_OP_SLICE && bm_slice_view(g, x, &voff))) {
      x->storage = BM_STORAGE_ALIAS;
      x->alias = storage_root_at(g, x, &x->view_offset);
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
      bm_node *r = storage_root(g, x->in[k]);
      buffer *b = r->id >= 0 && r->id < n && g->nodes[r->id] == r ? byid[r->id] : NULL;
      if (b && b->end < i) b->end = i;
    }
  }
  for (int k = 0; k < g->noutputs; k++) {
    bm_node *r = storage_root(g, g->outputs[k].node);
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
    if (x->storage == BM_STORAGE_ALIAS) x->offset = x->alias->offset + x->view_offset;
  }
  g->arena_bytes = total;
done:
  free(bufs);
  free(byid);
  free(order);
  free(tmp);
  return s;
}
