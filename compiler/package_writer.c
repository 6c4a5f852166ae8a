/* package_writer.c - writes a planned, compiled module as one .bmpk file:
 * header, JSON manifest, 64-byte-aligned weight section, code section.
 * Deterministic (same inputs, same bytes) and atomic (PATH.tmp + rename).
 * The format is described in docs/package.md. */
#include "package_writer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include "../runtime/internal.h"

/* Op names straight from the op table (no dependency on ir/ops.c). */
static const char *const op_names[] = {
#define X(e, name, mn, mx, fl, at, sh, rf) name,
#include "../ir/ops.def"
#undef X
};

static const char *op_name(bm_op op) {
  return (unsigned)op < sizeof op_names / sizeof op_names[0] ? op_names[op] : "?";
}

/* ------------------------------------------------------------------ weights */

typedef struct wentry {
  char *name;                 /* owned */
  const bm_node *node;        /* first node that defined it */
  const char *function;
  bm_dtype dtype;
  int ndim;
  int64_t shape[BM_MAX_DIMS];
  const void *data;
  uint64_t size, hash;
  void *packed;               /* zstd bytes, owned, or NULL */
  uint64_t stored_size, offset;
} wentry;

/* node -> weight index, for CONST nodes (WEIGHT nodes are found by name) */
typedef struct nmap {
  const bm_node *node;
  int w;
} nmap;

/* A STATE, shared by name by every function. */
typedef struct sentry {
  const char *name;           /* borrowed from the module */
  const char *function;       /* first function that declared it */
  bm_dtype dtype;
  int ndim;
  int64_t shape[BM_MAX_DIMS];
  uint64_t nbytes;
} sentry;

/* An embedded file. */
typedef struct bentry {
  const bm_embedded_file *b;   /* borrowed from the meta */
  uint64_t hash;
  void *packed;               /* zstd bytes, owned, or NULL */
  uint64_t stored_size, offset;
} bentry;

typedef struct writer {
  const bm_module *m;
  const bm_object *code;
  const bm_package_meta *meta;
  wentry *w;
  int nw, wcap;
  nmap *map;
  int nmap, mapcap;
  sentry *st;
  int nst, stcap;
  bentry *bl;
  int nbl;
  uint64_t code_offset, file_size;
} writer;

#define INVALID(...) bm_status_make(BM_ERR_INVALID_ARGUMENT, __VA_ARGS__)
#define INTERNAL(...) bm_status_make(BM_ERR_INTERNAL, __VA_ARGS__)

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

/* Bytes of n at the symbols' upper bounds, or -1. */
static int64_t node_bytes_max(const bm_graph *g, const bm_node *n) {
  int64_t elems = 1;
  for (int d = 0; d < n->ndim; d++) {
    bm_dim dim = n->shape[d];
    int64_t v = dim.add;
    if (!bm_dim_is_static(dim)) {
      if (dim.sym >= g->nsyms || dim.mul < 0) return -1;
      v = (int64_t)dim.mul * g->syms[dim.sym].max + dim.add;
    }
    if (v < 0 || __builtin_mul_overflow(elems, v, &elems)) return -1;
  }
  return (int64_t)bm_dtype_nbytes(n->dtype, elems);
}

static bm_status add_weight(writer *W, const bm_graph *g, const bm_node *n) {
  const char *fn = g->name ? g->name : "?";
  char cname[160];
  if (n->op == BM_OP_WEIGHT) {
    if (!n->name || !*n->name) return INVALID("function '%s': weight node %d has no name", fn, n->id);
    if (!n->data) return INVALID("weight '%s' is not bound (no data) in function '%s'", n->name, fn);
  } else {
    if (!n->data) return INVALID("function '%s': constant node %d has no data", fn, n->id);
    snprintf(cname, sizeof cname, "const.%s.%d", fn, n->id);
  }
  const char *name = n->op == BM_OP_WEIGHT ? n->name : cname;
  int64_t shape[BM_MAX_DIMS], elems = 1;
  for (int d = 0; d < n->ndim; d++) {
    if (!bm_dim_is_static(n->shape[d]) || n->shape[d].add < 0)
      return INVALID("weight '%s' has a symbolic or negative dimension %d", name, d);
    shape[d] = n->shape[d].add;
    if (__builtin_mul_overflow(elems, shape[d], &elems)) return INVALID("weight '%s' is too large", name);
  }
  uint64_t size = bm_dtype_nbytes(n->dtype, elems);
  if (n->data_size != size)
    return INVALID("weight '%s': %zu bytes bound, its %s shape needs %" PRIu64, name, n->data_size,
                   bm_dtype_name(n->dtype), size);
  uint64_t hash = XXH3_64bits(n->data, size);

  for (int i = 0; i < W->nw; i++) {
    wentry *e = &W->w[i];
    bool same = e->dtype == n->dtype && e->ndim == n->ndim && e->size == size &&
                !memcmp(e->shape, shape, sizeof(int64_t) * (size_t)n->ndim) && e->hash == hash &&
                (e->data == n->data || !memcmp(e->data, n->data, size));
    if (n->op == BM_OP_WEIGHT && e->node->op == BM_OP_WEIGHT && !strcmp(e->name, name)) {
      if (!same)
        return INVALID("weight '%s' differs (dtype, shape or data) between functions '%s' and '%s'", name,
                       e->function, fn);
      return NULL; /* found by name at lookup */
    }
    if (n->op == BM_OP_CONST && e->node->op == BM_OP_CONST && same) {
      if (W->nmap == W->mapcap) {
        W->mapcap = W->mapcap ? 2 * W->mapcap : 64;
        nmap *nm = realloc(W->map, (size_t)W->mapcap * sizeof *nm);
        if (!nm) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "package writer");
        W->map = nm;
      }
      W->map[W->nmap++] = (nmap){n, i};
      return NULL;
    }
  }
  if (W->nw == W->wcap) {
    W->wcap = W->wcap ? 2 * W->wcap : 64;
    wentry *nw = realloc(W->w, (size_t)W->wcap * sizeof *nw);
    if (!nw) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "package writer");
    W->w = nw;
  }
  wentry *e = &W->w[W->nw];
  memset(e, 0, sizeof *e);
  e->name = strdup(name);
  if (!e->name) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "package writer");
  e->node = n;
  e->function = fn;
  e->dtype = n->dtype;
  e->ndim = n->ndim;
  memcpy(e->shape, shape, sizeof shape);
  e->data = n->data;
  e->size = e->stored_size = size;
  e->hash = hash;
  W->nw++;
  if (n->op == BM_OP_CONST) {
    if (W->nmap == W->mapcap) {
      W->mapcap = W->mapcap ? 2 * W->mapcap : 64;
      nmap *nm = realloc(W->map, (size_t)W->mapcap * sizeof *nm);
      if (!nm) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "package writer");
      W->map = nm;
    }
    W->map[W->nmap++] = (nmap){n, W->nw - 1};
  }
  return NULL;
}

/* Records STATE node n; the same name must have the same dtype and shape
 * in every function. */
static bm_status add_state(writer *W, const bm_graph *g, const bm_node *n) {
  const char *fn = g->name ? g->name : "?";
  if (!n->name || !*n->name) return INVALID("function '%s': state node %d has no name", fn, n->id);
  int64_t shape[BM_MAX_DIMS] = {0}, elems = 1;
  for (int d = 0; d < n->ndim; d++) {
    if (!bm_dim_is_static(n->shape[d]) || n->shape[d].add < 0)
      return INVALID("state '%s' in function '%s' has a symbolic or negative dimension %d", n->name, fn, d);
    shape[d] = n->shape[d].add;
    if (__builtin_mul_overflow(elems, shape[d], &elems)) return INVALID("state '%s' is too large", n->name);
  }
  uint64_t nbytes = bm_dtype_nbytes(n->dtype, elems);
  if (nbytes > BM_PKG_MAX_ARENA) return INVALID("state '%s': %" PRIu64 " bytes is too large", n->name, nbytes);
  for (int i = 0; i < W->nst; i++) {
    sentry *e = &W->st[i];
    if (strcmp(e->name, n->name) != 0) continue;
    if (e->dtype != n->dtype || e->ndim != n->ndim || memcmp(e->shape, shape, sizeof shape) != 0) {
      char a[256] = "", b[256] = "";
      size_t la = 0, lb = 0;
      for (int d = 0; d < e->ndim; d++) la += (size_t)snprintf(a + la, sizeof a - la, "%s%" PRId64, d ? ", " : "", e->shape[d]);
      for (int d = 0; d < n->ndim; d++) lb += (size_t)snprintf(b + lb, sizeof b - lb, "%s%" PRId64, d ? ", " : "", shape[d]);
      return INVALID("state '%s' is %s (%s) in function '%s' but %s (%s) in function '%s'", n->name,
                     bm_dtype_name(e->dtype), a, e->function, bm_dtype_name(n->dtype), b, fn);
    }
    return NULL;
  }
  if (W->nst == W->stcap) {
    W->stcap = W->stcap ? 2 * W->stcap : 16;
    sentry *ns = realloc(W->st, (size_t)W->stcap * sizeof *ns);
    if (!ns) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "package writer");
    W->st = ns;
  }
  sentry *e = &W->st[W->nst++];
  memset(e, 0, sizeof *e);
  e->name = n->name;
  e->function = fn;
  e->dtype = n->dtype;
  e->ndim = n->ndim;
  memcpy(e->shape, shape, sizeof shape);
  e->nbytes = nbytes;
  return NULL;
}

static int state_index(const writer *W, const bm_node *n) {
  for (int i = 0; i < W->nst; i++)
    if (n->name && !strcmp(W->st[i].name, n->name)) return i;
  return -1;
}

static int weight_index(const writer *W, const bm_node *n) {
  if (n->op == BM_OP_WEIGHT) {
    for (int i = 0; i < W->nw; i++)
      if (W->w[i].node->op == BM_OP_WEIGHT && !strcmp(W->w[i].name, n->name)) return i;
  } else {
    for (int i = 0; i < W->nmap; i++)
      if (W->map[i].node == n) return W->map[i].w;
  }
  return -1;
}

static bm_status compress_weights(writer *W) {
  if (!W->meta->compress) return NULL;
  int level = W->meta->zstd_level ? W->meta->zstd_level : 3;
  for (int i = 0; i < W->nw; i++) {
    wentry *e = &W->w[i];
    if (e->size < 64) continue;
    size_t cap = ZSTD_compressBound(e->size);
    void *buf = malloc(cap);
    if (!buf) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "compressing weight '%s'", e->name);
    size_t r = ZSTD_compress(buf, cap, e->data, e->size, level);
    if (ZSTD_isError(r)) {
      free(buf);
      return INTERNAL("zstd failed on weight '%s': %s", e->name, ZSTD_getErrorName(r));
    }
    if (r <= e->size - e->size / 10) { /* saves at least 10% */
      e->packed = buf;
      e->stored_size = r;
    } else {
      free(buf);
    }
  }
  return NULL;
}

/* Checks the meta's blobs (names unique and non-empty, data present) and
 * compresses them like weights. */
static bm_status collect_blobs(writer *W) {
  const bm_package_meta *meta = W->meta;
  if (meta->nblobs < 0 || meta->nblobs > BM_PKG_MAX_BLOBS || (meta->nblobs && !meta->blobs))
    return INVALID("package meta: %d blobs", meta->nblobs);
  if (!meta->nblobs) return NULL;
  W->bl = calloc((size_t)meta->nblobs, sizeof *W->bl);
  if (!W->bl) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "package writer");
  W->nbl = meta->nblobs;
  int level = meta->zstd_level ? meta->zstd_level : 3;
  for (int i = 0; i < W->nbl; i++) {
    const bm_embedded_file *b = &meta->blobs[i];
    bentry *e = &W->bl[i];
    e->b = b;
    if (!b->name || !b->name[0]) return INVALID("embedded file %d has no name", i);
    if (b->size && !b->data) return INVALID("embedded file '%s' has %zu bytes but no data", b->name, b->size);
    for (int j = 0; j < i; j++)
      if (!strcmp(meta->blobs[j].name, b->name)) return INVALID("two embedded files are named '%s'", b->name);
    e->hash = XXH3_64bits(b->data, b->size);
    e->stored_size = b->size;
    if (!meta->compress || b->size < 64) continue;
    size_t cap = ZSTD_compressBound(b->size);
    void *buf = malloc(cap);
    if (!buf) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "compressing embedded file '%s'", b->name);
    size_t r = ZSTD_compress(buf, cap, b->data, b->size, level);
    if (ZSTD_isError(r)) {
      free(buf);
      return INTERNAL("zstd failed on embedded file '%s': %s", b->name, ZSTD_getErrorName(r));
    }
    if (r <= b->size - b->size / 10) {
      e->packed = buf;
      e->stored_size = r;
    } else {
      free(buf);
    }
  }
  return NULL;
}

/* ------------------------------------------------------------------ manifest */

static char *hex64(char buf[17], uint64_t v) {
  snprintf(buf, 17, "%016" PRIx64, v);
  return buf;
}

static cJSON *num(int64_t v) { return cJSON_CreateNumber((double)v); }

static cJSON *dim_json(const bm_graph *g, bm_dim d) {
  if (bm_dim_is_static(d)) return num(d.add);
  cJSON *o = cJSON_CreateObject();
  cJSON_AddItemToObject(o, "sym", num(d.sym));
  cJSON_AddItemToObject(o, "mul", num(d.mul));
  cJSON_AddItemToObject(o, "add", num(d.add));
  return o;
}

static bm_status check_dims(const bm_graph *g, const bm_node *n, const char *what) {
  for (int d = 0; d < n->ndim; d++) {
    bm_dim dim = n->shape[d];
    if (bm_dim_is_static(dim) ? dim.add < 0 : (dim.sym >= g->nsyms || dim.mul < 1))
      return INVALID("function '%s': %s has an unsupported dimension %d (sym %d, mul %d, add %" PRId64 ")",
                     g->name, what, d, dim.sym, dim.mul, dim.add);
  }
  return NULL;
}

static cJSON *shape_json(const bm_graph *g, const bm_node *n) {
  cJSON *a = cJSON_CreateArray();
  for (int d = 0; d < n->ndim; d++) cJSON_AddItemToArray(a, dim_json(g, n->shape[d]));
  return a;
}

static cJSON *syms_json(const bm_graph *g) {
  cJSON *a = cJSON_CreateArray();
  for (int i = 0; i < g->nsyms; i++) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", g->syms[i].name ? g->syms[i].name : "?");
    cJSON_AddItemToObject(o, "max", num(g->syms[i].max));
    cJSON_AddItemToArray(a, o);
  }
  return a;
}

/* The storage of node n as {"arena": off, "nbytes": n} or {"weight": i}. */
static bm_status storage_json(const writer *W, const bm_graph *g, const bm_node *n, cJSON **out) {
  const bm_node *root = n;
  int64_t view = 0; /* byte offset of a SLICE view into its root (plan_memory.c) */
  for (int hops = 0; root && root->storage == BM_STORAGE_ALIAS; hops++) {
    if (hops > 10000 || !root->alias) return INVALID("function '%s': node %d has a broken alias chain", g->name, n->id);
    view += root->view_offset;
    root = root->alias;
  }
  cJSON *o = cJSON_CreateObject();
  *out = o;
  if (root->op == BM_OP_STATE) {
    int k = state_index(W, root);
    if (k < 0) return INTERNAL("function '%s': state node %d was not collected", g->name, root->id);
    cJSON_AddItemToObject(o, "state", num(k));
    return NULL;
  }
  if (root->op == BM_OP_WEIGHT || root->op == BM_OP_CONST) {
    int w = weight_index(W, root);
    if (w < 0) return INTERNAL("function '%s': weight node %d was not collected", g->name, root->id);
    cJSON_AddItemToObject(o, "weight", num(w));
    return NULL;
  }
  if (root->storage != BM_STORAGE_ARENA)
    return INVALID("function '%s': node %d (%s) has no storage (was the graph memory-planned?)", g->name, root->id,
                   op_name(root->op));
  int64_t need = node_bytes_max(g, root), nb = root->nbytes > 0 ? root->nbytes : need;
  if (need < 0 || nb < need || root->offset < 0 || nb > g->arena_bytes || root->offset > g->arena_bytes - nb)
    return INTERNAL("function '%s': node %d (%s) slot [%" PRId64 ", +%" PRId64 ") (needs %" PRId64
                    ") lies outside the %" PRId64 "-byte arena", g->name, root->id, op_name(root->op), root->offset,
                    nb, need, g->arena_bytes);
  if (view) { /* a part of the root's slot */
    int64_t vb = node_bytes_max(g, n);
    if (view < 0 || vb < 0 || vb > nb || view > nb - vb)
      return INTERNAL("function '%s': node %d (%s) view [+%" PRId64 ", +%" PRId64 ") lies outside its root's %" PRId64
                      " bytes", g->name, n->id, op_name(n->op), view, vb, nb);
    cJSON_AddItemToObject(o, "arena", num(root->offset + view));
    cJSON_AddItemToObject(o, "nbytes", num(vb));
    return NULL;
  }
  cJSON_AddItemToObject(o, "arena", num(root->offset));
  cJSON_AddItemToObject(o, "nbytes", num(nb));
  return NULL;
}

static bm_status function_json(const writer *W, const bm_graph *g, cJSON **out) {
  cJSON *f = cJSON_CreateObject();
  *out = f;
  cJSON_AddStringToObject(f, "name", g->name ? g->name : "main");
  cJSON_AddItemToObject(f, "syms", syms_json(g));
  if (g->arena_bytes < 0 || (uint64_t)g->arena_bytes > BM_PKG_MAX_ARENA)
    return INVALID("function '%s': arena of %" PRId64 " bytes", g->name, g->arena_bytes);
  cJSON_AddItemToObject(f, "arena_bytes", num(g->arena_bytes));

  cJSON *ins = cJSON_AddArrayToObject(f, "inputs");
  for (int i = 0; i < g->ninputs; i++) {
    const bm_node *n = g->inputs[i];
    char what[200];
    snprintf(what, sizeof what, "input '%s'", n->name ? n->name : "?");
    BM_RETURN_IF_ERROR(check_dims(g, n, what));
    cJSON *st;
    bm_status s = storage_json(W, g, n, &st);
    if (!s && !cJSON_GetObjectItem(st, "arena")) s = INVALID("function '%s': %s is not in the arena", g->name, what);
    if (s) {
      cJSON_Delete(st);
      return s;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", n->name ? n->name : "?");
    cJSON_AddStringToObject(o, "dtype", bm_dtype_name(n->dtype));
    cJSON_AddItemToObject(o, "shape", shape_json(g, n));
    cJSON_AddItemToObject(o, "offset", cJSON_DetachItemFromObject(st, "arena"));
    cJSON_AddItemToObject(o, "nbytes", cJSON_DetachItemFromObject(st, "nbytes"));
    cJSON_Delete(st);
    cJSON_AddItemToArray(ins, o);
  }

  cJSON *outs = cJSON_AddArrayToObject(f, "outputs");
  for (int i = 0; i < g->noutputs; i++) {
    const bm_output *op = &g->outputs[i];
    if (!op->node) return INVALID("function '%s': output %d has no node", g->name, i);
    char what[200];
    snprintf(what, sizeof what, "output '%s'", op->name ? op->name : "?");
    BM_RETURN_IF_ERROR(check_dims(g, op->node, what));
    cJSON *o = cJSON_CreateObject(), *st;
    cJSON_AddItemToArray(outs, o);
    cJSON_AddStringToObject(o, "name", op->name ? op->name : "?");
    cJSON_AddStringToObject(o, "dtype", bm_dtype_name(op->node->dtype));
    cJSON_AddItemToObject(o, "shape", shape_json(g, op->node));
    bm_status s = storage_json(W, g, op->node, &st);
    cJSON_AddItemToObject(o, "storage", st);
    if (s) return s;
  }

  cJSON *ks = cJSON_AddArrayToObject(f, "kernels");
  for (int i = 0; i < g->nnodes; i++) {
    const bm_node *n = g->nodes[i];
    if (!n->kernel) continue;
    const bm_task_expr *t = &n->tasks;
    if (t->div < 1 || t->factor < 1 || (t->sym >= 0 && t->sym >= g->nsyms))
      return INVALID("function '%s': kernel '%s' has a bad task expression", g->name, n->kernel);
    cJSON *k = cJSON_CreateObject();
    cJSON_AddItemToArray(ks, k);
    cJSON_AddStringToObject(k, "symbol", n->kernel);
    cJSON_AddStringToObject(k, "op", op_name(n->op));
    cJSON *tj = cJSON_AddObjectToObject(k, "tasks");
    cJSON_AddItemToObject(tj, "sym", num(t->sym < 0 ? -1 : t->sym));
    cJSON_AddItemToObject(tj, "mul", num(t->mul));
    cJSON_AddItemToObject(tj, "add", num(t->add));
    cJSON_AddItemToObject(tj, "div", num(t->div));
    cJSON_AddItemToObject(tj, "factor", num(t->factor));
    cJSON_AddItemToObject(k, "scratch", num((int64_t)n->scratch));
    cJSON *args = cJSON_AddArrayToObject(k, "args");
    for (int j = 0; j <= n->nin; j++) {
      const bm_node *a = j < n->nin ? n->in[j] : n;
      if (!a) return INVALID("function '%s': node %d input %d is NULL", g->name, n->id, j);
      cJSON *st;
      bm_status s = storage_json(W, g, a, &st);
      cJSON_AddItemToArray(args, st);
      if (s) return s;
    }
  }
  return NULL;
}

static bm_status build_manifest(const writer *W, char **out) {
  const bm_package_meta *meta = W->meta;
  const bm_object *code = W->code;
  char hx[17];
  bm_status s = NULL;
  cJSON *root = cJSON_CreateObject();
  cJSON_AddItemToObject(root, "format_version", num(BM_PKG_VERSION));
  cJSON_AddStringToObject(root, "model", meta->model ? meta->model : (W->m->name ? W->m->name : "model"));
  cJSON_AddStringToObject(root, "compiler_version", meta->compiler_version ? meta->compiler_version : "");
  if (meta->options_json) {
    cJSON *o = cJSON_Parse(meta->options_json);
    if (!cJSON_IsObject(o)) {
      cJSON_Delete(o);
      cJSON_Delete(root);
      return INVALID("package meta: options_json is not a JSON object");
    }
    cJSON_AddItemToObject(root, "options", o);
  } else {
    cJSON_AddObjectToObject(root, "options");
  }
  cJSON *t = cJSON_AddObjectToObject(root, "target");
  cJSON_AddStringToObject(t, "backend", meta->target_backend ? meta->target_backend : "cpu");
  cJSON_AddStringToObject(t, "triple", code->triple);
  cJSON_AddStringToObject(t, "cpu", code->cpu);
  cJSON_AddStringToObject(t, "features", code->features);
  cJSON_AddStringToObject(t, "required", code->required);
  cJSON *c = cJSON_AddObjectToObject(root, "code");
  cJSON_AddStringToObject(c, "format", code->format);
  cJSON_AddItemToObject(c, "offset", num((int64_t)W->code_offset));
  cJSON_AddItemToObject(c, "size", num((int64_t)code->size));
  cJSON_AddStringToObject(c, "xxh3", hex64(hx, XXH3_64bits(code->data, code->size)));

  cJSON *syms = cJSON_AddArrayToObject(root, "symbols");
  for (int i = 0; i < W->m->ngraphs; i++) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "function", W->m->graphs[i]->name ? W->m->graphs[i]->name : "main");
    cJSON_AddItemToObject(o, "syms", syms_json(W->m->graphs[i]));
    cJSON_AddItemToArray(syms, o);
  }
  cJSON *ws = cJSON_AddArrayToObject(root, "weights");
  for (int i = 0; i < W->nw; i++) {
    const wentry *e = &W->w[i];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", e->name);
    cJSON_AddStringToObject(o, "dtype", bm_dtype_name(e->dtype));
    cJSON *sh = cJSON_AddArrayToObject(o, "shape");
    for (int d = 0; d < e->ndim; d++) cJSON_AddItemToArray(sh, num(e->shape[d]));
    cJSON_AddItemToObject(o, "offset", num((int64_t)e->offset));
    cJSON_AddItemToObject(o, "size", num((int64_t)e->size));
    cJSON_AddItemToObject(o, "stored_size", num((int64_t)e->stored_size));
    cJSON_AddStringToObject(o, "compression", e->packed ? "zstd" : "none");
    cJSON_AddStringToObject(o, "xxh3", hex64(hx, e->hash));
    cJSON_AddItemToArray(ws, o);
  }
  cJSON *sts = cJSON_AddArrayToObject(root, "states");
  for (int i = 0; i < W->nst; i++) {
    const sentry *e = &W->st[i];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", e->name);
    cJSON_AddStringToObject(o, "dtype", bm_dtype_name(e->dtype));
    cJSON *sh = cJSON_AddArrayToObject(o, "shape");
    for (int d = 0; d < e->ndim; d++) cJSON_AddItemToArray(sh, num(e->shape[d]));
    cJSON_AddItemToObject(o, "nbytes", num((int64_t)e->nbytes));
    cJSON_AddItemToArray(sts, o);
  }
  if (W->nbl) {
    cJSON *bs = cJSON_AddArrayToObject(root, "blobs");
    for (int i = 0; i < W->nbl; i++) {
      const bentry *e = &W->bl[i];
      cJSON *o = cJSON_CreateObject();
      cJSON_AddStringToObject(o, "name", e->b->name);
      cJSON_AddItemToObject(o, "offset", num((int64_t)e->offset));
      cJSON_AddItemToObject(o, "size", num((int64_t)e->b->size));
      cJSON_AddItemToObject(o, "stored_size", num((int64_t)e->stored_size));
      cJSON_AddStringToObject(o, "compression", e->packed ? "zstd" : "none");
      cJSON_AddStringToObject(o, "xxh3", hex64(hx, e->hash));
      cJSON_AddItemToArray(bs, o);
    }
  }
  cJSON *fs = cJSON_AddArrayToObject(root, "functions");
  int64_t arena = 0;
  for (int i = 0; i < W->m->ngraphs && !s; i++) {
    cJSON *f;
    s = function_json(W, W->m->graphs[i], &f);
    cJSON_AddItemToArray(fs, f);
    if (s) s = bm_status_wrap(s, "writing function '%s'", W->m->graphs[i]->name);
    if (W->m->graphs[i]->arena_bytes > arena) arena = W->m->graphs[i]->arena_bytes;
  }
  cJSON_AddItemToObject(root, "arena_bytes", num(arena));
  if (!s && meta->extra_json) {
    cJSON *e = cJSON_Parse(meta->extra_json);
    bool ok = cJSON_IsObject(e);
    cJSON_Delete(e);
    if (!ok) s = INVALID("package meta: extra_json is not a JSON object");
    else cJSON_AddItemToObject(root, "extra", cJSON_CreateRaw(meta->extra_json));
  }
  if (!s) {
    *out = cJSON_Print(root);
    if (!*out) s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "printing the manifest");
  }
  cJSON_Delete(root);
  return s;
}

/* Loads the code object once (when it is for this host) and checks that
 * every kernel is defined and every import resolves: a codegen bug is then
 * reported by the compiler instead of by every runtime that opens the file. */
static bm_status check_code(const writer *W) {
  int nkernels = 0;
  for (int gi = 0; gi < W->m->ngraphs; gi++)
    for (int i = 0; i < W->m->graphs[gi]->nnodes; i++) nkernels += W->m->graphs[gi]->nodes[i]->kernel != NULL;
  if (!W->code->size)
    return nkernels ? INVALID("the module has %d kernels but the code object is empty", nkernels) : NULL;
  if (strncmp(W->code->format, "elf", 3) != 0) return NULL; /* a GPU code bundle: checked by its backend */
  bm_elf_image *img = NULL;
  bm_status s = bm_elf_load(W->code->data, W->code->size, NULL, &img);
  if (s && bm_status_code(s) == BM_ERR_INCOMPATIBLE) { /* built for another host: cannot check here */
    bm_status_free(s);
    return NULL;
  }
  if (s) return bm_status_wrap(s, "the compiled code object is not loadable");
  for (int gi = 0; gi < W->m->ngraphs && !s; gi++) {
    const bm_graph *g = W->m->graphs[gi];
    for (int i = 0; i < g->nnodes && !s; i++) {
      const bm_node *n = g->nodes[i];
      if (n->kernel && !bm_elf_lookup(img, n->kernel))
        s = INTERNAL("kernel '%s' (function '%s', node %d, %s) is not defined in the code object", n->kernel,
                     g->name, n->id, op_name(n->op));
    }
  }
  bm_elf_unload(img);
  return s;
}

/* ------------------------------------------------------------------ file */

static bm_status write_all(int fd, const void *p, size_t n, const char *tmp) {
  const uint8_t *b = p;
  while (n) {
    ssize_t r = write(fd, b, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return bm_status_make(BM_ERR_IO, "writing %s: %s", tmp, strerror(errno));
    b += r;
    n -= (size_t)r;
  }
  return NULL;
}

static bm_status write_zeros(int fd, uint64_t n, const char *tmp) {
  static const uint8_t zeros[4096];
  while (n) {
    size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
    BM_RETURN_IF_ERROR(write_all(fd, zeros, k, tmp));
    n -= k;
  }
  return NULL;
}

static bm_status write_file(const writer *W, const char *manifest, uint64_t msize, uint64_t wstart,
                            const char *path) {
  size_t plen = strlen(path);
  char *tmp = malloc(plen + 5);
  if (!tmp) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "path");
  memcpy(tmp, path, plen);
  memcpy(tmp + plen, ".tmp", 5);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    bm_status s = bm_status_make(BM_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    free(tmp);
    return s;
  }
  uint8_t h[BM_PKG_HEADER_SIZE] = {0};
  memcpy(h, BM_PKG_MAGIC, 8);
  bm_wr_u32(h + BM_PKG_OFF_VERSION, BM_PKG_VERSION);
  bm_wr_u32(h + BM_PKG_OFF_FLAGS, 0);
  bm_wr_u64(h + BM_PKG_OFF_MANIFEST_OFFSET, BM_PKG_HEADER_SIZE);
  bm_wr_u64(h + BM_PKG_OFF_MANIFEST_SIZE, msize);
  bm_wr_u64(h + BM_PKG_OFF_FILE_SIZE, W->file_size);
  bm_wr_u64(h + BM_PKG_OFF_MANIFEST_HASH, XXH3_64bits(manifest, msize));
  bm_wr_u64(h + BM_PKG_OFF_HEADER_HASH, XXH3_64bits(h, BM_PKG_OFF_HEADER_HASH));

  bm_status s = write_all(fd, h, sizeof h, tmp);
  uint64_t pos = sizeof h;
  if (!s) s = write_all(fd, manifest, msize, tmp);
  pos += msize;
  if (!s) s = write_zeros(fd, wstart - pos, tmp);
  pos = wstart;
  for (int i = 0; i < W->nw && !s; i++) {
    const wentry *e = &W->w[i];
    s = write_zeros(fd, e->offset - pos, tmp);
    if (!s) s = write_all(fd, e->packed ? e->packed : e->data, e->stored_size, tmp);
    pos = e->offset + e->stored_size;
  }
  for (int i = 0; i < W->nbl && !s; i++) {
    const bentry *e = &W->bl[i];
    s = write_zeros(fd, e->offset - pos, tmp);
    if (!s && e->stored_size) s = write_all(fd, e->packed ? e->packed : e->b->data, e->stored_size, tmp);
    pos = e->offset + e->stored_size;
  }
  if (!s) s = write_zeros(fd, W->code_offset - pos, tmp);
  if (!s) s = write_all(fd, W->code->data, W->code->size, tmp);
  if (!s && fsync(fd) != 0) s = bm_status_make(BM_ERR_IO, "fsync %s: %s", tmp, strerror(errno));
  if (close(fd) != 0 && !s) s = bm_status_make(BM_ERR_IO, "close %s: %s", tmp, strerror(errno));
  if (!s && rename(tmp, path) != 0) s = bm_status_make(BM_ERR_IO, "rename %s -> %s: %s", tmp, path, strerror(errno));
  if (s) {
    unlink(tmp);
  } else { /* make the rename durable (best effort) */
    char *slash = strrchr(tmp, '/');
    if (slash) *slash = 0;
    int dfd = open(slash ? (slash == tmp ? "/" : tmp) : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      fsync(dfd);
      close(dfd);
    }
  }
  free(tmp);
  return s;
}

bm_status bm_package_write(const char *path, const bm_module *m, const bm_object *code,
                           const bm_package_meta *meta) {
  if (!path || !m || !code || !meta) return INVALID("bm_package_write: NULL argument");
  if (m->ngraphs < 1) return INVALID("module '%s' has no functions", m->name ? m->name : "?");
  if (code->size && !code->data) return INVALID("bm_package_write: code has %zu bytes but no data", code->size);
  writer W = {.m = m, .code = code, .meta = meta};
  bm_status s = NULL;
  for (int gi = 0; gi < m->ngraphs && !s; gi++) {
    const bm_graph *g = m->graphs[gi];
    if (!g) {
      s = INVALID("module '%s': graph %d is NULL", m->name, gi);
      break;
    }
    for (int i = 0; i < g->nnodes && !s; i++) {
      const bm_node *n = g->nodes[i];
      if (n->op == BM_OP_WEIGHT || n->op == BM_OP_CONST) s = add_weight(&W, g, n);
      else if (n->op == BM_OP_STATE) s = add_state(&W, g, n);
      else if (n->storage == BM_STORAGE_WEIGHT)
        s = INVALID("function '%s': node %d (%s) has weight storage but is not a weight", g->name, n->id,
                    op_name(n->op));
    }
  }
  if (!s) s = check_code(&W);
  if (!s) s = compress_weights(&W);
  if (!s) s = collect_blobs(&W);

  /* Layout: header | manifest | pad to 4096 | weights (64-aligned) | code (64-aligned).
   * The manifest holds the weight offsets, so grow the weight start until it fits. */
  char *manifest = NULL;
  uint64_t msize = 0, wstart = BM_PKG_SECTION_ALIGN;
  for (int iter = 0; !s; iter++) {
    uint64_t off = wstart;
    for (int i = 0; i < W.nw; i++) {
      off = align_up(off, BM_PKG_WEIGHT_ALIGN);
      W.w[i].offset = off;
      off += W.w[i].stored_size;
    }
    for (int i = 0; i < W.nbl; i++) {
      off = align_up(off, BM_PKG_WEIGHT_ALIGN);
      W.bl[i].offset = off;
      off += W.bl[i].stored_size;
    }
    W.code_offset = align_up(off, BM_PKG_WEIGHT_ALIGN);
    W.file_size = W.code_offset + code->size;
    free(manifest);
    manifest = NULL;
    s = build_manifest(&W, &manifest);
    if (s) break;
    msize = strlen(manifest);
    if (BM_PKG_HEADER_SIZE + msize <= wstart) break;
    wstart = align_up(BM_PKG_HEADER_SIZE + msize, BM_PKG_SECTION_ALIGN);
    if (iter > 100) s = INTERNAL("package layout did not converge");
  }
  if (!s) s = write_file(&W, manifest, msize, wstart, path);
  if (s) s = bm_status_wrap(s, "writing package %s", path);
  free(manifest);
  for (int i = 0; i < W.nw; i++) {
    free(W.w[i].name);
    free(W.w[i].packed);
  }
  free(W.w);
  free(W.map);
  free(W.st);
  for (int i = 0; i < W.nbl; i++) free(W.bl[i].packed);
  free(W.bl);
  return s;
}
