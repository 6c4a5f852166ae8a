/* weights.c - weight sources for model builders: checkpoints (safetensors
 * files, folders, sharded indexes) and the deterministic generator used by
 * built-in models and tests. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

#include "../ir/interp.h"
#include "../runtime/safetensors.h"
#include "models.h"

struct bm_weight_source {
  bm_st_set *st;  /* checkpoint, or NULL for generated */
  uint64_t seed;
};

bm_status bm_weight_source_open(const char *path, bm_weight_source **out) {
  *out = NULL;
  bm_weight_source *s = calloc(1, sizeof *s);
  if (!s) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "weight source");
  bm_status st = bm_st_open_dir(path, &s->st);
  if (st) {
    free(s);
    return st;
  }
  *out = s;
  return NULL;
}

bm_status bm_weight_source_generated(uint64_t seed, bm_weight_source **out) {
  *out = calloc(1, sizeof **out);
  if (!*out) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "weight source");
  (*out)->seed = seed;
  return NULL;
}

void bm_weight_source_close(bm_weight_source *s) {
  if (!s) return;
  bm_st_set_close(s->st);
  free(s);
}

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && strcmp(s + n - k, suffix) == 0;
}

static char *shape_str(int ndim, const int64_t *shape, char *buf, size_t size) {
  return bm_st_shape_str(ndim, shape, buf, size);
}

/* Generated weights: a pure function of (seed, name, shape). */
static void *generate(bm_arena *a, uint64_t seed, const char *name, bm_dtype t, int ndim,
                      const int64_t *shape, size_t *nbytes) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  *nbytes = bm_dtype_nbytes(t, n);
  void *data = bm_arena_alloc(a, *nbytes ? *nbytes : 1);
  if (!data) return NULL;
  uint64_t h = seed ^ 0x6a09e667f3bcc909ull;
  for (const char *p = name; *p; p++) h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
  int64_t fan_in = ndim > 0 && shape[0] > 0 ? n / shape[0] : 1;
  float scale = 1.0f / sqrtf((float)(fan_in > 0 ? fan_in : 1));
  bool is_norm = ends_with(name, "norm.weight") || ends_with(name, "norm1.weight") ||
                 ends_with(name, "norm2.weight") || ends_with(name, ".gamma");
  bool is_bias = ends_with(name, ".bias") || ends_with(name, ".beta");
  for (int64_t i = 0; i < n; i++) {
    float u = (float)((splitmix64(&h) >> 40) * (1.0 / 8388608.0)) - 1.0f; /* [-1, 1) */
    float v = is_norm ? 1.0f + 0.1f * u : is_bias ? 0.1f * u : scale * u;
    bm_store_f32(data, t, i, v);
  }
  return data;
}

bm_node *bm_model_weight(bm_graph *g, bm_weight_source *src, const char *name, bm_dtype t,
                         int ndim, const int64_t *shape) {
  if (!g || bm_graph_status(g)) return NULL;
  char a[96], b[96];
  if (!src->st) {
    size_t nbytes;
    void *data = generate(g->module->arena, src->seed, name, t, ndim, shape, &nbytes);
    if (!data) {
      bm_graph_fail(g, bm_status_make(BM_ERR_OUT_OF_MEMORY, "weight '%s'", name));
      return NULL;
    }
    return bm_weight(g, name, t, ndim, shape, data, nbytes);
  }
  const bm_st_tensor *st;
  bm_status s = bm_st_set_get(src->st, name, &st, NULL);
  if (s) {
    bm_graph_fail(g, bm_status_wrap(s, "missing weight '%s'", name));
    return NULL;
  }
  bool same = st->ndim == ndim;
  for (int i = 0; same && i < ndim; i++) same = st->shape[i] == shape[i];
  if (!same) {
    bm_graph_fail(g, bm_status_make(BM_ERR_INVALID_ARGUMENT,
                                    "weight '%s' has shape %s in the checkpoint, the model expects %s",
                                    name, shape_str(st->ndim, st->shape, a, sizeof a),
                                    shape_str(ndim, shape, b, sizeof b)));
    return NULL;
  }
  if ((s = bm_st_check_dtype(st))) {
    bm_graph_fail(g, s);
    return NULL;
  }
  if (st->dtype == t) return bm_weight(g, name, t, ndim, shape, st->data, st->nbytes);
  bool conv = (st->dtype == BM_DTYPE_F32 || st->dtype == BM_DTYPE_F16 || st->dtype == BM_DTYPE_BF16) &&
              (t == BM_DTYPE_F32 || t == BM_DTYPE_F16 || t == BM_DTYPE_BF16);
  if (!conv) {
    bm_graph_fail(g, bm_status_make(BM_ERR_INVALID_ARGUMENT,
                                    "weight '%s' is %s in the checkpoint, the model expects %s", name,
                                    bm_dtype_name(st->dtype), bm_dtype_name(t)));
    return NULL;
  }
  size_t nbytes = bm_dtype_nbytes(t, st->numel);
  void *data = bm_arena_alloc(g->module->arena, nbytes ? nbytes : 1);
  if (!data) {
    bm_graph_fail(g, bm_status_make(BM_ERR_OUT_OF_MEMORY, "weight '%s'", name));
    return NULL;
  }
  for (int64_t i = 0; i < st->numel; i++) bm_store_f32(data, t, i, bm_load_f32(st->data, st->dtype, i));
  return bm_weight(g, name, t, ndim, shape, data, nbytes);
}

bm_node *bm_model_weightf(bm_graph *g, bm_weight_source *src, bm_dtype t, int ndim,
                          const int64_t *shape, const char *fmt, ...) {
  char name[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  return bm_model_weight(g, src, name, t, ndim, shape);
}
