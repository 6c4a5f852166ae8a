/* package.c - bm_package_open: map a .bmpk file, verify every byte we will
 * use (header, checksums, manifest fields, offsets, target, CPU features),
 * decompress weights, load the code; plus the package accessors.
 * The format is described in docs/package.md. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include "cuda_bundle.h"
#include "internal.h"

#define CORRUPT(...) bm_status_make(BM_ERR_CORRUPT, __VA_ARGS__)
/* A zstd block holds at most 128 KiB and takes at least 4 bytes (an RLE
 * block), so a frame can never expand more than 32768 times. */
#define BM_ZSTD_MAX_RATIO 32768u

/* ------------------------------------------------------------------ JSON field readers */

/* Every reader names the field by its path, e.g.
 * "manifest: functions[0].kernels[3].scratch: expected an integer in [0, 4294967296]". */

static const cJSON *field(const cJSON *obj, const char *key) {
  return cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
}

static bm_status get_int(const cJSON *obj, const char *key, int64_t lo, int64_t hi, int64_t *out,
                         const char *path) {
  const cJSON *v = field(obj, key);
  double d = v && cJSON_IsNumber(v) ? v->valuedouble : NAN;
  if (!(d >= (double)lo && d <= (double)hi) || d != floor(d) || fabs(d) > 9007199254740992.0)
    return CORRUPT("manifest: %s.%s: expected an integer in [%" PRId64 ", %" PRId64 "]", path, key,
                   lo, hi);
  *out = (int64_t)d;
  return NULL;
}

static bm_status get_u64(const cJSON *obj, const char *key, uint64_t hi, uint64_t *out,
                         const char *path) {
  int64_t v;
  BM_RETURN_IF_ERROR(get_int(obj, key, 0, (int64_t)hi, &v, path));
  *out = (uint64_t)v;
  return NULL;
}

static bm_status get_str(const cJSON *obj, const char *key, const char **out, const char *path) {
  const cJSON *v = field(obj, key);
  if (!cJSON_IsString(v) || !v->valuestring)
    return CORRUPT("manifest: %s.%s: expected a string", path, key);
  *out = v->valuestring;
  return NULL;
}

static bm_status get_array(const cJSON *obj, const char *key, int max, const cJSON **out, int *n,
                           const char *path) {
  const cJSON *v = field(obj, key);
  if (!cJSON_IsArray(v)) return CORRUPT("manifest: %s.%s: expected an array", path, key);
  int cnt = cJSON_GetArraySize(v);
  if (cnt > max) return CORRUPT("manifest: %s.%s: %d entries, at most %d allowed", path, key, cnt, max);
  *out = v;
  *n = cnt;
  return NULL;
}

static bm_status get_hash(const cJSON *obj, const char *key, uint64_t *out, const char *path) {
  const char *s = NULL;
  BM_RETURN_IF_ERROR(get_str(obj, key, &s, path));
  uint64_t v = 0;
  int i = 0;
  for (; s[i] && i < 17; i++) {
    char c = s[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) break;
    v = v << 4 | (uint64_t)d;
  }
  if (i != 16 || s[i]) return CORRUPT("manifest: %s.%s: expected 16 lowercase hex digits", path, key);
  *out = v;
  return NULL;
}

static bm_status get_dtype(const cJSON *obj, const char *key, bm_dtype *out, const char *path) {
  const char *s = NULL;
  BM_RETURN_IF_ERROR(get_str(obj, key, &s, path));
  if (bm_dtype_from_name(s, out) != 0) return CORRUPT("manifest: %s.%s: unknown dtype '%s'", path, key, s);
  return NULL;
}

/* a*b, or -1 if it overflows or exceeds lim */
static int64_t mul_lim(int64_t a, int64_t b, int64_t lim) {
  int64_t r;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r) || r > lim) return -1;
  return r;
}

/* Reads a shape: ints, or (when syms != NULL) {"sym": i, "mul": m, "add": a}.
 * *max_elems gets the element count at the symbols' upper bounds. */
static bm_status get_shape(const cJSON *obj, const char *key, const bm_rt_sym *syms, int nsyms,
                           int *ndim, bm_rt_dim *dims, int64_t *max_elems, const char *path) {
  const cJSON *arr = NULL;
  int n = 0;
  char p[256];
  BM_RETURN_IF_ERROR(get_array(obj, key, BM_MAX_DIMS, &arr, &n, path));
  int64_t elems = 1;
  for (int i = 0; i < n; i++) {
    const cJSON *d = cJSON_GetArrayItem(arr, i);
    bm_rt_dim dim = {-1, 0, 0};
    int64_t at_max;
    snprintf(p, sizeof p, "%s.%s[%d]", path, key, i);
    if (cJSON_IsNumber(d)) {
      double v = d->valuedouble;
      if (!(v >= 0 && v <= (double)BM_PKG_MAX_ELEMS) || v != floor(v))
        return CORRUPT("manifest: %s: expected a dimension in [0, 2^50]", p);
      dim.add = (int64_t)v;
      at_max = dim.add;
    } else if (syms && cJSON_IsObject(d)) {
      int64_t s, m, a;
      BM_RETURN_IF_ERROR(get_int(d, "sym", 0, nsyms - 1, &s, p));
      BM_RETURN_IF_ERROR(get_int(d, "mul", 1, 1 << 20, &m, p));
      BM_RETURN_IF_ERROR(get_int(d, "add", -(1ll << 40), 1ll << 40, &a, p));
      dim.sym = (int32_t)s;
      dim.mul = m;
      dim.add = a;
      at_max = m * syms[s].max + a; /* max <= 2^40, m <= 2^20: no overflow */
      if (at_max < 0 || at_max > BM_PKG_MAX_ELEMS)
        return CORRUPT("manifest: %s: dimension is %" PRId64 " at the symbol's upper bound", p, at_max);
    } else {
      return CORRUPT("manifest: %s: expected %s", p, syms ? "an integer or {sym, mul, add}" : "an integer");
    }
    dims[i] = dim;
    elems = mul_lim(elems, at_max, BM_PKG_MAX_ELEMS);
    if (elems < 0) return CORRUPT("manifest: %s.%s: too many elements", path, key);
  }
  *ndim = n;
  *max_elems = elems;
  return NULL;
}

/* {"arena": offset, "nbytes": n}, {"weight": index} or {"state": index} */
static bm_status get_storage(const bm_package *pkg, const cJSON *obj, uint64_t arena_bytes,
                             bm_rt_arg *out, const char *path) {
  if (!cJSON_IsObject(obj))
    return CORRUPT("manifest: %s: expected {\"arena\": ..}, {\"weight\": ..} or {\"state\": ..}", path);
  out->state = -1;
  if (field(obj, "weight")) {
    int64_t w;
    BM_RETURN_IF_ERROR(get_int(obj, "weight", 0, (int64_t)pkg->nweights - 1, &w, path));
    out->weight = (int)w;
    out->offset = 0;
    out->nbytes = pkg->weights[w].size;
    return NULL;
  }
  if (field(obj, "state")) {
    int64_t k;
    if (pkg->nstates == 0) return CORRUPT("manifest: %s.state: the package has no states", path);
    BM_RETURN_IF_ERROR(get_int(obj, "state", 0, (int64_t)pkg->nstates - 1, &k, path));
    out->weight = -1;
    out->state = (int)k;
    out->offset = 0;
    out->nbytes = pkg->states[k].nbytes;
    return NULL;
  }
  out->weight = -1;
  BM_RETURN_IF_ERROR(get_u64(obj, "arena", arena_bytes, &out->offset, path));
  BM_RETURN_IF_ERROR(get_u64(obj, "nbytes", arena_bytes - out->offset, &out->nbytes, path));
  return NULL;
}

/* ------------------------------------------------------------------ manifest sections */

static bm_status parse_weights(bm_package *pkg, const cJSON *root) {
  const cJSON *arr = NULL;
  int n = 0;
  BM_RETURN_IF_ERROR(get_array(root, "weights", 1 << 24, &arr, &n, "manifest"));
  pkg->weights = calloc((size_t)n + 1, sizeof *pkg->weights);
  if (!pkg->weights) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%d weights", n);
  pkg->nweights = n;
  char p[64];
  for (int i = 0; i < n; i++) {
    const cJSON *o = cJSON_GetArrayItem(arr, i);
    bm_rt_weight *w = &pkg->weights[i];
    snprintf(p, sizeof p, "weights[%d]", i);
    if (!cJSON_IsObject(o)) return CORRUPT("manifest: %s: expected an object", p);
    bm_rt_dim dims[BM_MAX_DIMS];
    int64_t elems;
    const char *comp = NULL;
    BM_RETURN_IF_ERROR(get_str(o, "name", &w->name, p));
    BM_RETURN_IF_ERROR(get_dtype(o, "dtype", &w->dtype, p));
    BM_RETURN_IF_ERROR(get_shape(o, "shape", NULL, 0, &w->ndim, dims, &elems, p));
    for (int d = 0; d < w->ndim; d++) w->shape[d] = dims[d].add;
    BM_RETURN_IF_ERROR(get_u64(o, "offset", pkg->map_size, &w->offset, p));
    BM_RETURN_IF_ERROR(get_u64(o, "size", 1ull << 50, &w->size, p));
    BM_RETURN_IF_ERROR(get_u64(o, "stored_size", pkg->map_size - w->offset, &w->stored_size, p));
    BM_RETURN_IF_ERROR(get_str(o, "compression", &comp, p));
    BM_RETURN_IF_ERROR(get_hash(o, "xxh3", &w->xxh3, p));
    if (w->size != bm_dtype_nbytes(w->dtype, elems))
      return CORRUPT("manifest: weight '%s': size %" PRIu64 " does not match its %s shape (%zu bytes)",
                     w->name, w->size, bm_dtype_name(w->dtype), bm_dtype_nbytes(w->dtype, elems));
    if (w->offset % BM_PKG_WEIGHT_ALIGN)
      return CORRUPT("manifest: weight '%s': offset %" PRIu64 " is not 64-byte aligned", w->name, w->offset);
    if (!strcmp(comp, "none")) {
      if (w->stored_size != w->size)
        return CORRUPT("manifest: weight '%s': stored_size %" PRIu64 " != size %" PRIu64
                       " for an uncompressed weight", w->name, w->stored_size, w->size);
    } else if (!strcmp(comp, "zstd")) {
      w->zstd = 1;
      if (w->stored_size == 0) return CORRUPT("manifest: weight '%s': empty zstd data", w->name);
      if (w->size > BM_PKG_MAX_ARENA) /* checked before we allocate for it */
        return CORRUPT("manifest: weight '%s': %" PRIu64 " bytes decompressed is too large", w->name, w->size);
    } else {
      return CORRUPT("manifest: weight '%s': unknown compression '%s'", w->name, comp);
    }
    pkg->weight_bytes += w->size;
  }
  return NULL;
}

/* "states": [{name, dtype, shape, nbytes}] (optional: absent = none). */
static bm_status parse_states(bm_package *pkg, const cJSON *root) {
  if (!field(root, "states")) return NULL;
  const cJSON *arr = NULL;
  int n = 0;
  BM_RETURN_IF_ERROR(get_array(root, "states", BM_PKG_MAX_STATES, &arr, &n, "manifest"));
  pkg->states = calloc((size_t)n + 1, sizeof *pkg->states);
  if (!pkg->states) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%d states", n);
  pkg->nstates = n;
  char p[64];
  for (int i = 0; i < n; i++) {
    const cJSON *o = cJSON_GetArrayItem(arr, i);
    bm_rt_state *st = &pkg->states[i];
    snprintf(p, sizeof p, "states[%d]", i);
    if (!cJSON_IsObject(o)) return CORRUPT("manifest: %s: expected an object", p);
    bm_rt_dim dims[BM_MAX_DIMS];
    int64_t elems;
    BM_RETURN_IF_ERROR(get_str(o, "name", &st->name, p));
    if (!st->name[0]) return CORRUPT("manifest: %s.name: empty", p);
    for (int j = 0; j < i; j++)
      if (!strcmp(pkg->states[j].name, st->name)) return CORRUPT("manifest: two states are named '%s'", st->name);
    BM_RETURN_IF_ERROR(get_dtype(o, "dtype", &st->dtype, p));
    BM_RETURN_IF_ERROR(get_shape(o, "shape", NULL, 0, &st->ndim, dims, &elems, p));
    for (int d = 0; d < st->ndim; d++) st->shape[d] = dims[d].add;
    BM_RETURN_IF_ERROR(get_u64(o, "nbytes", BM_PKG_MAX_ARENA, &st->nbytes, p));
    if (st->nbytes != bm_dtype_nbytes(st->dtype, elems))
      return CORRUPT("manifest: state '%s': nbytes %" PRIu64 " does not match its %s shape (%zu bytes)", st->name,
                     st->nbytes, bm_dtype_name(st->dtype), bm_dtype_nbytes(st->dtype, elems));
    uint64_t rounded = (st->nbytes + 63) / 64 * 64;
    if (rounded > BM_PKG_MAX_ARENA - pkg->state_bytes) /* checked before a session allocates them */
      return CORRUPT("manifest: states total more than 2^40 bytes (at state '%s')", st->name);
    pkg->state_bytes += rounded;
  }
  return NULL;
}

/* "blobs": [{name, offset, size, stored_size, compression, xxh3}]
 * (optional: absent = none): embedded files such as the tokenizer. */
static bm_status parse_blobs(bm_package *pkg, const cJSON *root) {
  if (!field(root, "blobs")) return NULL;
  const cJSON *arr = NULL;
  int n = 0;
  BM_RETURN_IF_ERROR(get_array(root, "blobs", BM_PKG_MAX_BLOBS, &arr, &n, "manifest"));
  pkg->blobs = calloc((size_t)n + 1, sizeof *pkg->blobs);
  if (!pkg->blobs) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%d blobs", n);
  pkg->nblobs = n;
  char p[64];
  for (int i = 0; i < n; i++) {
    const cJSON *o = cJSON_GetArrayItem(arr, i);
    bm_rt_blob *b = &pkg->blobs[i];
    snprintf(p, sizeof p, "blobs[%d]", i);
    if (!cJSON_IsObject(o)) return CORRUPT("manifest: %s: expected an object", p);
    const char *comp = NULL;
    BM_RETURN_IF_ERROR(get_str(o, "name", &b->name, p));
    if (!b->name[0]) return CORRUPT("manifest: %s.name: empty", p);
    for (int j = 0; j < i; j++)
      if (!strcmp(pkg->blobs[j].name, b->name)) return CORRUPT("manifest: two blobs are named '%s'", b->name);
    BM_RETURN_IF_ERROR(get_u64(o, "offset", pkg->map_size, &b->offset, p));
    BM_RETURN_IF_ERROR(get_u64(o, "size", 1ull << 40, &b->size, p));
    BM_RETURN_IF_ERROR(get_u64(o, "stored_size", pkg->map_size - b->offset, &b->stored_size, p));
    BM_RETURN_IF_ERROR(get_str(o, "compression", &comp, p));
    BM_RETURN_IF_ERROR(get_hash(o, "xxh3", &b->xxh3, p));
    if (b->offset % BM_PKG_WEIGHT_ALIGN)
      return CORRUPT("manifest: blob '%s': offset %" PRIu64 " is not 64-byte aligned", b->name, b->offset);
    if (!strcmp(comp, "none")) {
      if (b->stored_size != b->size)
        return CORRUPT("manifest: blob '%s': stored_size %" PRIu64 " != size %" PRIu64 " for an uncompressed blob",
                       b->name, b->stored_size, b->size);
    } else if (!strcmp(comp, "zstd")) {
      b->zstd = 1;
      if (b->stored_size == 0) return CORRUPT("manifest: blob '%s': empty zstd data", b->name);
    } else {
      return CORRUPT("manifest: blob '%s': unknown compression '%s'", b->name, comp);
    }
  }
  return NULL;
}

static bm_status parse_syms(const cJSON *fo, bm_rt_function *fn, const char *p) {
  const cJSON *arr = NULL;
  int n = 0;
  BM_RETURN_IF_ERROR(get_array(fo, "syms", BM_RT_MAX_SYMS, &arr, &n, p));
  char q[160];
  for (int i = 0; i < n; i++) {
    const cJSON *o = cJSON_GetArrayItem(arr, i);
    snprintf(q, sizeof q, "%s.syms[%d]", p, i);
    BM_RETURN_IF_ERROR(get_str(o, "name", &fn->syms[i].name, q));
    BM_RETURN_IF_ERROR(get_int(o, "max", 0, 1ll << 40, &fn->syms[i].max, q));
  }
  fn->nsyms = n;
  return NULL;
}

static bm_status parse_tensors(bm_package *pkg, const cJSON *fo, const char *key, bool is_input,
                               bm_rt_function *fn, const char *p) {
  const cJSON *arr = NULL;
  int n = 0;
  BM_RETURN_IF_ERROR(get_array(fo, key, 4096, &arr, &n, p));
  bm_rt_tensor *ts = calloc((size_t)n + 1, sizeof *ts);
  if (!ts) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "manifest tensors");
  if (is_input) {
    fn->inputs = ts;
    fn->ninputs = n;
  } else {
    fn->outputs = ts;
    fn->noutputs = n;
  }
  char q[192];
  for (int i = 0; i < n; i++) {
    const cJSON *o = cJSON_GetArrayItem(arr, i);
    bm_rt_tensor *t = &ts[i];
    int64_t elems;
    snprintf(q, sizeof q, "%s.%s[%d]", p, key, i);
    if (!cJSON_IsObject(o)) return CORRUPT("manifest: %s: expected an object", q);
    BM_RETURN_IF_ERROR(get_str(o, "name", &t->name, q));
    BM_RETURN_IF_ERROR(get_dtype(o, "dtype", &t->dtype, q));
    BM_RETURN_IF_ERROR(get_shape(o, "shape", fn->syms, fn->nsyms, &t->ndim, t->shape, &elems, q));
    uint64_t need = bm_dtype_nbytes(t->dtype, elems);
    t->state = -1;
    if (is_input) {
      t->weight = -1;
      BM_RETURN_IF_ERROR(get_u64(o, "offset", fn->arena_bytes, &t->offset, q));
      BM_RETURN_IF_ERROR(get_u64(o, "nbytes", fn->arena_bytes - t->offset, &t->nbytes, q));
    } else {
      bm_rt_arg a;
      char r[224];
      snprintf(r, sizeof r, "%s.storage", q);
      BM_RETURN_IF_ERROR(get_storage(pkg, field(o, "storage"), fn->arena_bytes, &a, r));
      t->weight = a.weight;
      t->state = a.state;
      t->offset = a.offset;
      t->nbytes = a.nbytes;
    }
    if (t->nbytes < need)
      return CORRUPT("manifest: %s '%s' needs %" PRIu64 " bytes at its upper bound but its slot has %" PRIu64,
                     key, t->name, need, t->nbytes);
  }
  return NULL;
}

/* Task count of e at sym value v, or -1 if it could overflow. */
static int64_t task_count_checked(const bm_task_expr *e, int64_t v) {
  __int128 x = (__int128)(e->sym >= 0 ? e->mul : 0) * v + e->add; /* |mul|, |add|, v <= 2^40 */
  if (x > BM_PKG_MAX_TASKS * (__int128)1024 || x < -BM_PKG_MAX_TASKS * (__int128)1024) return -1;
  if (x <= 0) return 0;
  __int128 t = ((x + e->div - 1) / e->div) * e->factor;
  return t > BM_PKG_MAX_TASKS ? -1 : (int64_t)t;
}

static bm_status parse_kernels(bm_package *pkg, const cJSON *fo, bm_rt_function *fn, const char *p) {
  const cJSON *arr = NULL;
  int n = 0;
  BM_RETURN_IF_ERROR(get_array(fo, "kernels", 1 << 20, &arr, &n, p));
  fn->kernels = calloc((size_t)n + 1, sizeof *fn->kernels);
  if (!fn->kernels) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "manifest kernels");
  fn->nkernels = n;
  char q[192], r[256];
  for (int i = 0; i < n; i++) {
    const cJSON *o = cJSON_GetArrayItem(arr, i);
    bm_rt_kernel *k = &fn->kernels[i];
    snprintf(q, sizeof q, "%s.kernels[%d]", p, i);
    if (!cJSON_IsObject(o)) return CORRUPT("manifest: %s: expected an object", q);
    BM_RETURN_IF_ERROR(get_str(o, "symbol", &k->symbol, q));
    BM_RETURN_IF_ERROR(get_str(o, "op", &k->op, q));
    BM_RETURN_IF_ERROR(get_u64(o, "scratch", BM_PKG_MAX_SCRATCH, &k->scratch, q));
    if (k->scratch > pkg->max_scratch) pkg->max_scratch = k->scratch;
    const cJSON *t = field(o, "tasks");
    snprintf(r, sizeof r, "%s.tasks", q);
    if (!cJSON_IsObject(t)) return CORRUPT("manifest: %s: expected an object", r);
    int64_t sym, mul, add, div, factor;
    BM_RETURN_IF_ERROR(get_int(t, "sym", -1, fn->nsyms - 1, &sym, r));
    BM_RETURN_IF_ERROR(get_int(t, "mul", -(1ll << 40), 1ll << 40, &mul, r));
    BM_RETURN_IF_ERROR(get_int(t, "add", -(1ll << 40), 1ll << 40, &add, r));
    BM_RETURN_IF_ERROR(get_int(t, "div", 1, 1ll << 40, &div, r));
    BM_RETURN_IF_ERROR(get_int(t, "factor", 1, 1ll << 40, &factor, r));
    k->tasks = (bm_task_expr){(int32_t)sym, mul, add, div, factor};
    int64_t hi = sym >= 0 ? fn->syms[sym].max : 0;
    if (task_count_checked(&k->tasks, 0) < 0 || task_count_checked(&k->tasks, hi) < 0)
      return CORRUPT("manifest: %s: task count overflows", r);
    const cJSON *args = NULL;
    int na = 0;
    BM_RETURN_IF_ERROR(get_array(o, "args", 64, &args, &na, q));
    if (na < 1) return CORRUPT("manifest: %s.args: a kernel needs at least one argument", q);
    k->args = calloc((size_t)na, sizeof *k->args);
    if (!k->args) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "manifest args");
    k->nargs = na;
    for (int j = 0; j < na; j++) {
      snprintf(r, sizeof r, "%s.args[%d]", q, j);
      BM_RETURN_IF_ERROR(get_storage(pkg, cJSON_GetArrayItem(args, j), fn->arena_bytes, &k->args[j], r));
    }
  }
  return NULL;
}

static bm_status parse_functions(bm_package *pkg, const cJSON *root) {
  const cJSON *arr = NULL;
  int n = 0;
  BM_RETURN_IF_ERROR(get_array(root, "functions", 4096, &arr, &n, "manifest"));
  if (n == 0) return CORRUPT("manifest: the package has no functions");
  pkg->functions = calloc((size_t)n, sizeof *pkg->functions);
  if (!pkg->functions) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "manifest functions");
  pkg->nfunctions = n;
  char p[64];
  for (int i = 0; i < n; i++) {
    const cJSON *fo = cJSON_GetArrayItem(arr, i);
    bm_rt_function *fn = &pkg->functions[i];
    snprintf(p, sizeof p, "functions[%d]", i);
    if (!cJSON_IsObject(fo)) return CORRUPT("manifest: %s: expected an object", p);
    BM_RETURN_IF_ERROR(get_str(fo, "name", &fn->name, p));
    for (int j = 0; j < i; j++)
      if (!strcmp(pkg->functions[j].name, fn->name))
        return CORRUPT("manifest: two functions are named '%s'", fn->name);
    BM_RETURN_IF_ERROR(get_u64(fo, "arena_bytes", pkg->arena_bytes, &fn->arena_bytes, p));
    BM_RETURN_IF_ERROR(parse_syms(fo, fn, p));
    BM_RETURN_IF_ERROR(parse_tensors(pkg, fo, "inputs", true, fn, p));
    BM_RETURN_IF_ERROR(parse_tensors(pkg, fo, "outputs", false, fn, p));
    BM_RETURN_IF_ERROR(parse_kernels(pkg, fo, fn, p));
  }
  return NULL;
}

/* Checks the package's target against this host: backend, arch, CPU features. */
static bm_status check_target(const cJSON *root, const char **code_format) {
  const cJSON *t = field(root, "target");
  if (!cJSON_IsObject(t)) return CORRUPT("manifest: target: expected an object");
  const char *backend = NULL, *triple = NULL, *required = NULL;
  BM_RETURN_IF_ERROR(get_str(t, "backend", &backend, "target"));
  BM_RETURN_IF_ERROR(get_str(t, "triple", &triple, "target"));
  BM_RETURN_IF_ERROR(get_str(t, "required", &required, "target"));
  if (strcmp(backend, "cuda") == 0) { /* GPU code bundle: checked by bm_cuda_bundle_parse */
    if (strcmp(*code_format, BM_CUDA_CODE_FORMAT) != 0)
      return bm_status_make(BM_ERR_INCOMPATIBLE, "code format '%s' cannot be loaded here (expected '%s')",
                            *code_format, BM_CUDA_CODE_FORMAT);
    return NULL;
  }
  if (strcmp(backend, "cpu") != 0)
    return bm_status_make(BM_ERR_INCOMPATIBLE,
                          "package targets backend '%s'; this runtime runs 'cpu' and 'cuda' packages", backend);
  if (!bm_cpu_arch_matches(triple))
    return bm_status_make(BM_ERR_INCOMPATIBLE, "package was built for %s, this host is %s", triple,
                          bm_cpu_host_arch());
  char expect[64];
  snprintf(expect, sizeof expect, "elf64-%s-rel", bm_cpu_host_arch());
  if (strcmp(*code_format, expect) != 0)
    return bm_status_make(BM_ERR_INCOMPATIBLE, "code format '%s' cannot be loaded here (expected '%s')",
                          *code_format, expect);
  /* required: "avx2,fma,avx512f" */
  const char *s = required;
  while (*s) {
    const char *e = strchr(s, ',');
    size_t len = e ? (size_t)(e - s) : strlen(s);
    char feat[64];
    if (len >= sizeof feat) return CORRUPT("manifest: target.required: feature name too long");
    memcpy(feat, s, len);
    feat[len] = 0;
    if (len) {
      int has = bm_cpu_has_feature(feat);
      if (has == 0)
        return bm_status_make(BM_ERR_INCOMPATIBLE, "package needs CPU feature %s, which this CPU lacks", feat);
      if (has < 0)
        return bm_status_make(BM_ERR_INCOMPATIBLE,
                              "package needs CPU feature %s, which this runtime does not know", feat);
    }
    s += len;
    if (*s == ',') s++;
  }
  return NULL;
}

/* ------------------------------------------------------------------ open */

/* Drops one reference (the caller's, or a session's); the last one frees
 * the package, so a session keeps its package alive after bm_package_close. */
void bm_package_close(bm_package *pkg) {
  if (!pkg) return;
  if (__atomic_sub_fetch(&pkg->refs, 1, __ATOMIC_ACQ_REL) > 0) return;
  bm_elf_unload(pkg->code);
  for (int i = 0; i < pkg->nweights; i++) free(pkg->weights[i].owned);
  free(pkg->weights);
  free(pkg->states);
  for (int i = 0; i < pkg->nblobs; i++) free(pkg->blobs[i].owned);
  free(pkg->blobs);
  free(pkg->gpu_images);
  for (int i = 0; i < pkg->nfunctions; i++) {
    bm_rt_function *fn = &pkg->functions[i];
    for (int k = 0; k < fn->nkernels; k++) free(fn->kernels[k].args);
    free(fn->kernels);
    free(fn->inputs);
    free(fn->outputs);
  }
  free(pkg->functions);
  cJSON_Delete(pkg->json);
  free(pkg->manifest);
  if (pkg->map) munmap((void *)pkg->map, pkg->map_size);
  free(pkg);
}

/* Explains a truncated file: which section the cut falls in. */
static bm_status truncated(const bm_package *pkg, uint64_t want, uint64_t mo, uint64_t ms) {
  uint64_t have = pkg->map_size;
  char what[300] = "the padding at the end";
  if (mo + ms > have) {
    snprintf(what, sizeof what, "the manifest");
  } else {
    cJSON *j = cJSON_ParseWithLength((const char *)pkg->map + mo, ms);
    const cJSON *w, *code = field(j, "code"), *o = field(code, "offset"), *sz = field(code, "size");
    if (cJSON_IsNumber(o) && cJSON_IsNumber(sz) && o->valuedouble + sz->valuedouble > (double)have)
      snprintf(what, sizeof what, "the code section");
    cJSON_ArrayForEach(w, field(j, "blobs")) {
      const cJSON *wo = field(w, "offset"), *ws = field(w, "stored_size"), *nm = field(w, "name");
      if (cJSON_IsNumber(wo) && cJSON_IsNumber(ws) && wo->valuedouble + ws->valuedouble > (double)have) {
        snprintf(what, sizeof what, "blob '%s' in the weight section", cJSON_IsString(nm) ? nm->valuestring : "?");
        break;
      }
    }
    cJSON_ArrayForEach(w, field(j, "weights")) {
      const cJSON *wo = field(w, "offset"), *ws = field(w, "stored_size"), *nm = field(w, "name");
      if (cJSON_IsNumber(wo) && cJSON_IsNumber(ws) && wo->valuedouble + ws->valuedouble > (double)have) {
        snprintf(what, sizeof what, "weight '%s' in the weight section", cJSON_IsString(nm) ? nm->valuestring : "?");
        break;
      }
    }
    cJSON_Delete(j);
  }
  return CORRUPT("package is truncated: %" PRIu64 " bytes of %" PRIu64 "; %s is cut off", have, want, what);
}

static bm_status check_header(bm_package *pkg, uint64_t *mo, uint64_t *ms) {
  const uint8_t *h = pkg->map;
  if (pkg->map_size < 8 || memcmp(h, BM_PKG_MAGIC, 8) != 0) return CORRUPT("not a bm package (bad magic)");
  if (pkg->map_size < BM_PKG_HEADER_SIZE)
    return CORRUPT("package is truncated: %zu bytes, the header alone is 64", pkg->map_size);
  uint32_t version = bm_rd_u32(h + BM_PKG_OFF_VERSION);
  if (version != BM_PKG_VERSION)
    return bm_status_make(BM_ERR_INCOMPATIBLE, "package format version %u, this runtime reads version %u",
                          version, BM_PKG_VERSION);
  if (XXH3_64bits(h, BM_PKG_OFF_HEADER_HASH) != bm_rd_u64(h + BM_PKG_OFF_HEADER_HASH))
    return CORRUPT("package header checksum mismatch");
  for (int i = BM_PKG_OFF_HEADER_HASH + 8; i < BM_PKG_HEADER_SIZE; i++)
    if (h[i]) return CORRUPT("package header padding byte %d is not zero", i);
  if (bm_rd_u32(h + BM_PKG_OFF_FLAGS) != 0)
    return bm_status_make(BM_ERR_INCOMPATIBLE, "package header flags 0x%x are not known to this runtime",
                          bm_rd_u32(h + BM_PKG_OFF_FLAGS));
  uint64_t want = bm_rd_u64(h + BM_PKG_OFF_FILE_SIZE);
  *mo = bm_rd_u64(h + BM_PKG_OFF_MANIFEST_OFFSET);
  *ms = bm_rd_u64(h + BM_PKG_OFF_MANIFEST_SIZE);
  if (*mo < BM_PKG_HEADER_SIZE || *mo > want || *ms > want - *mo || *ms == 0 || *ms > BM_PKG_MAX_MANIFEST)
    return CORRUPT("package header: manifest (offset %" PRIu64 ", size %" PRIu64 ") lies outside the %" PRIu64
                   "-byte file", *mo, *ms, want);
  if (want > pkg->map_size) return truncated(pkg, want, *mo, *ms);
  if (want < pkg->map_size)
    return CORRUPT("package has %zu bytes but its header says %" PRIu64 " (trailing data)", pkg->map_size, want);
  if (XXH3_64bits(h + *mo, *ms) != bm_rd_u64(h + BM_PKG_OFF_MANIFEST_HASH))
    return CORRUPT("package manifest checksum mismatch");
  return NULL;
}

/* Maps or decompresses one stored tensor or blob (kind "weight"/"blob")
 * and checks its XXH3. Sizes are checked before anything is allocated.
 * *dctx is the package's zstd context, created on first use: one per open,
 * not one per tensor (creating a context runs CPUID, which traps in a VM). */
static bm_status load_data(const char *kind, const char *name, const uint8_t *src, uint64_t offset,
                           uint64_t stored_size, uint64_t size, uint64_t xxh3, int zstd, bool verify,
                           ZSTD_DCtx **dctx, void **owned, const void **data) {
  if (zstd) {
    unsigned long long fs = ZSTD_getFrameContentSize(src, stored_size);
    if (fs != size)
      return CORRUPT("%s '%s': zstd frame holds %llu bytes, manifest says %" PRIu64, kind, name, fs, size);
    if (size / BM_ZSTD_MAX_RATIO > stored_size) /* checked before we allocate for it */
      return CORRUPT("%s '%s': %" PRIu64 " bytes of zstd data cannot hold %" PRIu64 " bytes", kind, name,
                     stored_size, size);
    *owned = aligned_alloc(64, (size + 63) / 64 * 64 + 64); /* 64-aligned like mapped data */
    if (!*owned) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s '%s': %" PRIu64 " bytes", kind, name, size);
    if (!*dctx && !(*dctx = ZSTD_createDCtx()))
      return bm_status_make(BM_ERR_OUT_OF_MEMORY, "%s '%s': zstd context", kind, name);
    size_t r = ZSTD_decompressDCtx(*dctx, *owned, size, src, stored_size);
    if (ZSTD_isError(r) || r != size)
      return CORRUPT("%s '%s': zstd data is corrupt (%s)", kind, name, ZSTD_isError(r) ? ZSTD_getErrorName(r) : "short");
    *data = *owned;
  } else {
    *data = src;
  }
  if (verify && XXH3_64bits(*data, size) != xxh3)
    return CORRUPT("%s '%s' checksum mismatch (offset %" PRIu64 ")", kind, name, offset);
  return NULL;
}

static bm_status load_weights(bm_package *pkg, bool verify, ZSTD_DCtx **dctx) {
  for (int i = 0; i < pkg->nweights; i++) {
    bm_rt_weight *w = &pkg->weights[i];
    void *owned = NULL;
    const void *data = NULL;
    bm_status s = load_data("weight", w->name, pkg->map + w->offset, w->offset, w->stored_size, w->size,
                            w->xxh3, w->zstd, verify, dctx, &owned, &data);
    w->owned = owned;
    w->data = data;
    if (s) return s;
  }
  return NULL;
}

static bm_status load_blobs(bm_package *pkg, bool verify, ZSTD_DCtx **dctx) {
  for (int i = 0; i < pkg->nblobs; i++) {
    bm_rt_blob *b = &pkg->blobs[i];
    void *owned = NULL;
    const void *data = NULL;
    bm_status s = load_data("blob", b->name, pkg->map + b->offset, b->offset, b->stored_size, b->size,
                            b->xxh3, b->zstd, verify, dctx, &owned, &data);
    b->owned = owned;
    b->data = data;
    if (s) return s;
  }
  return NULL;
}

static bm_status open_package(bm_package *pkg, const char *path, const bm_open_options *o) {
  uint64_t mo = 0, ms = 0;
  BM_RETURN_IF_ERROR(check_header(pkg, &mo, &ms));

  if (o && o->n_allowed_hashes > 0) { /* before any of the content is parsed or loaded */
    uint64_t h = bm_package_file_hash(pkg);
    bool ok = false;
    for (size_t i = 0; o->allowed_hashes && i < o->n_allowed_hashes; i++) ok |= o->allowed_hashes[i] == h;
    if (!ok)
      return bm_status_make(BM_ERR_PERMISSION, "package %s (xxh3 %016" PRIx64 ") is not on the allow-list", path, h);
  }

  pkg->manifest = malloc(ms + 1);
  if (!pkg->manifest) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "manifest of %" PRIu64 " bytes", ms);
  memcpy(pkg->manifest, pkg->map + mo, ms);
  pkg->manifest[ms] = 0;
  if (strlen(pkg->manifest) != ms) return CORRUPT("manifest contains a NUL byte");
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithOpts(pkg->manifest, &end, 1);
  pkg->json = root;
  if (!root || !cJSON_IsObject(root))
    return CORRUPT("manifest is not a JSON object (parse error at byte %td)",
                   end ? end - pkg->manifest : (ptrdiff_t)0);

  int64_t fv;
  BM_RETURN_IF_ERROR(get_int(root, "format_version", 0, INT32_MAX, &fv, "manifest"));
  if (fv != BM_PKG_VERSION)
    return bm_status_make(BM_ERR_INCOMPATIBLE, "package format version %" PRId64 ", this runtime reads version %u",
                          fv, BM_PKG_VERSION);
  BM_RETURN_IF_ERROR(get_str(root, "model", &pkg->model, "manifest"));
  BM_RETURN_IF_ERROR(get_u64(root, "arena_bytes", BM_PKG_MAX_ARENA, &pkg->arena_bytes, "manifest"));

  /* code section */
  const cJSON *code = field(root, "code");
  const char *format = NULL; /* set by get_str */
  uint64_t code_off, code_size, code_hash;
  if (!cJSON_IsObject(code)) return CORRUPT("manifest: code: expected an object");
  BM_RETURN_IF_ERROR(get_str(code, "format", &format, "code"));
  BM_RETURN_IF_ERROR(get_u64(code, "offset", pkg->map_size, &code_off, "code"));
  BM_RETURN_IF_ERROR(get_u64(code, "size", pkg->map_size - code_off, &code_size, "code"));
  BM_RETURN_IF_ERROR(get_hash(code, "xxh3", &code_hash, "code"));

  BM_RETURN_IF_ERROR(parse_weights(pkg, root));
  BM_RETURN_IF_ERROR(parse_states(pkg, root));
  BM_RETURN_IF_ERROR(parse_blobs(pkg, root));
  BM_RETURN_IF_ERROR(parse_functions(pkg, root));
  BM_RETURN_IF_ERROR(check_target(root, &format));

  bool verify = !(o && (o->flags & BM_OPEN_SKIP_CHECKSUMS));
  if (verify && XXH3_64bits(pkg->map + code_off, code_size) != code_hash)
    return CORRUPT("code section checksum mismatch (offset %" PRIu64 ", %" PRIu64 " bytes)", code_off, code_size);
  ZSTD_DCtx *dctx = NULL;
  bm_status ls = load_weights(pkg, verify, &dctx);
  if (!ls) ls = load_blobs(pkg, verify, &dctx);
  ZSTD_freeDCtx(dctx);
  BM_RETURN_IF_ERROR(ls);

  if (strcmp(format, BM_CUDA_CODE_FORMAT) == 0) /* kernels run on the GPU (device_cuda.c) */
    return bm_cuda_bundle_parse(pkg, pkg->map + code_off, code_size);
  if (code_size > 0) BM_RETURN_IF_ERROR(bm_elf_load(pkg->map + code_off, code_size, NULL, &pkg->code));
  for (int f = 0; f < pkg->nfunctions; f++) {
    bm_rt_function *fn = &pkg->functions[f];
    for (int k = 0; k < fn->nkernels; k++) {
      void *addr = bm_elf_lookup(pkg->code, fn->kernels[k].symbol);
      if (!addr)
        return CORRUPT("kernel '%s' (function '%s', kernel %d) is not defined in the code section",
                       fn->kernels[k].symbol, fn->name, k);
      fn->kernels[k].fn = (bm_kernel_fn)addr;
    }
  }
  return NULL;
}

bm_status bm_package_open(const char *path, const bm_open_options *opts, bm_package **out) {
  if (out) *out = NULL;
  if (!path || !out) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_package_open: NULL argument");
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return bm_status_make(BM_ERR_IO, "cannot open package %s: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return bm_status_make(BM_ERR_IO, "%s is not a regular file", path);
  }
  bm_package *pkg = calloc(1, sizeof *pkg);
  if (!pkg) {
    close(fd);
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "package");
  }
  pkg->refs = 1;
  pkg->map_size = (size_t)st.st_size;
  if (pkg->map_size == 0) {
    close(fd);
    free(pkg);
    return CORRUPT("%s: not a bm package (empty file)", path);
  }
  void *m = mmap(NULL, pkg->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (m == MAP_FAILED) {
    free(pkg);
    return bm_status_make(BM_ERR_IO, "cannot map package %s: %s", path, strerror(errno));
  }
  pkg->map = m;
  bm_status s = open_package(pkg, path, opts);
  if (s) {
    bm_package_close(pkg);
    return bm_status_wrap(s, "%s", path);
  }
  *out = pkg;
  return NULL;
}

/* ------------------------------------------------------------------ accessors */

const char *bm_package_manifest_json(const bm_package *pkg) { return pkg ? pkg->manifest : NULL; }
const char *bm_package_model_name(const bm_package *pkg) { return pkg ? pkg->model : NULL; }
/* Hashing a large file takes a while, so it is done on first use (and at
 * open only for the allow-list). Racing callers compute the same value. */
uint64_t bm_package_file_hash(const bm_package *pkg) {
  if (!pkg) return 0;
  bm_package *p = (bm_package *)pkg;
  if (!__atomic_load_n(&p->file_hash_done, __ATOMIC_ACQUIRE)) {
    __atomic_store_n(&p->file_hash, XXH3_64bits(p->map, p->map_size), __ATOMIC_RELAXED);
    __atomic_store_n(&p->file_hash_done, 1, __ATOMIC_RELEASE);
  }
  return __atomic_load_n(&p->file_hash, __ATOMIC_RELAXED);
}
uint64_t bm_package_arena_bytes(const bm_package *pkg) { return pkg ? pkg->arena_bytes : 0; }
uint64_t bm_package_weight_bytes(const bm_package *pkg) { return pkg ? pkg->weight_bytes : 0; }
int bm_package_function_count(const bm_package *pkg) { return pkg ? pkg->nfunctions : 0; }

static const bm_rt_function *get_fn(const bm_package *pkg, int f) {
  return pkg && f >= 0 && f < pkg->nfunctions ? &pkg->functions[f] : NULL;
}

const char *bm_package_function_name(const bm_package *pkg, int f) {
  const bm_rt_function *fn = get_fn(pkg, f);
  return fn ? fn->name : NULL;
}

int bm_function_input_count(const bm_package *pkg, int f) {
  const bm_rt_function *fn = get_fn(pkg, f);
  return fn ? fn->ninputs : 0;
}

int bm_function_output_count(const bm_package *pkg, int f) {
  const bm_rt_function *fn = get_fn(pkg, f);
  return fn ? fn->noutputs : 0;
}

/* "a, b, c" into buf */
static const char *list_names(char *buf, size_t size, int n, const char *(*name)(const void *, int),
                              const void *ctx) {
  size_t len = 0;
  buf[0] = 0;
  for (int i = 0; i < n && len + 1 < size; i++)
    len += (size_t)snprintf(buf + len, size - len, "%s'%s'", i ? ", " : "", name(ctx, i));
  if (n == 0) snprintf(buf, size, "none");
  return buf;
}

static const char *fn_name_at(const void *ctx, int i) { return ((const bm_package *)ctx)->functions[i].name; }
static const char *input_name_at(const void *ctx, int i) { return ((const bm_rt_function *)ctx)->inputs[i].name; }

bm_status bm_package_find_function(const bm_package *pkg, const char *name, int *f) {
  if (f) *f = -1;
  if (!pkg || !name || !f) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_package_find_function: NULL argument");
  for (int i = 0; i < pkg->nfunctions; i++)
    if (!strcmp(pkg->functions[i].name, name)) {
      *f = i;
      return NULL;
    }
  char buf[512];
  return bm_status_make(BM_ERR_NOT_FOUND, "package '%s' has no function '%s' (it has %s)", pkg->model, name,
                        list_names(buf, sizeof buf, pkg->nfunctions, fn_name_at, pkg));
}

bm_status bm_function_find_input(const bm_package *pkg, int f, const char *name, int *i) {
  if (i) *i = -1;
  if (!pkg || !name || !i) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_function_find_input: NULL argument");
  const bm_rt_function *fn = get_fn(pkg, f);
  if (!fn)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "function index %d out of range [0, %d)", f, pkg->nfunctions);
  for (int k = 0; k < fn->ninputs; k++)
    if (!strcmp(fn->inputs[k].name, name)) {
      *i = k;
      return NULL;
    }
  char buf[512];
  return bm_status_make(BM_ERR_NOT_FOUND, "function '%s' has no input '%s' (its inputs: %s)", fn->name, name,
                        list_names(buf, sizeof buf, fn->ninputs, input_name_at, fn));
}

static void fill_info(const bm_rt_function *fn, const bm_rt_tensor *t, const int64_t *syms, bm_tensor_info *out) {
  out->name = t->name;
  out->dtype = t->dtype;
  out->ndim = t->ndim;
  for (int d = 0; d < t->ndim; d++) {
    bm_rt_dim dim = t->shape[d];
    out->shape[d] = dim.sym >= 0 ? dim.mul * syms[dim.sym] + dim.add : dim.add;
    out->dim_names[d] = dim.sym >= 0 ? fn->syms[dim.sym].name : NULL;
  }
}

void bm_rt_tensor_info(const bm_rt_function *fn, const bm_rt_tensor *t, const int64_t *syms,
                       bm_tensor_info *out) {
  memset(out, 0, sizeof *out);
  fill_info(fn, t, syms, out);
}

static bm_status tensor_info(const bm_package *pkg, int f, int i, bool input, bm_tensor_info *out) {
  if (out) memset(out, 0, sizeof *out);
  if (!pkg || !out) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "tensor info: NULL argument");
  const bm_rt_function *fn = get_fn(pkg, f);
  if (!fn)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "function index %d out of range [0, %d)", f, pkg->nfunctions);
  int n = input ? fn->ninputs : fn->noutputs;
  if (i < 0 || i >= n)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s index %d out of range: function '%s' has %d",
                          input ? "input" : "output", i, fn->name, n);
  int64_t maxes[BM_RT_MAX_SYMS];
  for (int k = 0; k < fn->nsyms; k++) maxes[k] = fn->syms[k].max;
  bm_rt_tensor_info(fn, input ? &fn->inputs[i] : &fn->outputs[i], maxes, out);
  return NULL;
}

bm_status bm_function_input_info(const bm_package *pkg, int f, int i, bm_tensor_info *out) {
  return tensor_info(pkg, f, i, true, out);
}

bm_status bm_function_output_info(const bm_package *pkg, int f, int i, bm_tensor_info *out) {
  return tensor_info(pkg, f, i, false, out);
}

bm_status bm_package_blob(const bm_package *pkg, const char *name, const void **data, size_t *size) {
  if (data) *data = NULL;
  if (size) *size = 0;
  if (!pkg || !name || !data || !size) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_package_blob: NULL argument");
  for (int i = 0; i < pkg->nblobs; i++)
    if (!strcmp(pkg->blobs[i].name, name)) {
      *data = pkg->blobs[i].data;
      *size = (size_t)pkg->blobs[i].size;
      return NULL;
    }
  return bm_status_make(BM_ERR_NOT_FOUND, "package '%s' has no embedded file '%s' (%d blobs)", pkg->model, name,
                        pkg->nblobs);
}

int bm_package_blob_count(const bm_package *pkg) { return pkg ? pkg->nblobs : 0; }

const char *bm_package_blob_name(const bm_package *pkg, int i) {
  return pkg && i >= 0 && i < pkg->nblobs ? pkg->blobs[i].name : NULL;
}
