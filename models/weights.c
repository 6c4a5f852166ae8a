/* weights.c - weight sources for model builders: checkpoints (safetensors
 * files, folders, sharded indexes) and the deterministic generator used by
 * built-in models and tests. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

#include "../ir/interp.h"
#include "../runtime/safetensors.h"
#include "models.h"

#define BM_WEIGHT_MAX_PARTS 8

struct bm_weight_source {
  bm_st_set *st;  /* checkpoint, or NULL for generated (or a source made of parts) */
  uint64_t seed;
  /* A diffusers pipeline folder: one checkpoint per component subfolder,
   * serving the names "<sub>/<name>" (st is NULL then). */
  int nparts;
  char *part_prefix[BM_WEIGHT_MAX_PARTS]; /* "unet/", ... */
  bm_st_set *parts[BM_WEIGHT_MAX_PARTS];
};

/* The components of a diffusers pipeline folder that hold weights. */
static const char *const pipeline_parts[] = {"unet", "vae", "text_encoder", "text_encoder_2",
                                             "transformer", "controlnet"};

static bool is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool is_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* A folder with model_index.json: opens every component subfolder that
 * holds a checkpoint. */
static bm_status open_pipeline(const char *path, bm_weight_source *s) {
  char sub[4096];
  for (size_t i = 0; i < sizeof pipeline_parts / sizeof pipeline_parts[0]; i++) {
    snprintf(sub, sizeof sub, "%s/%s", path, pipeline_parts[i]);
    if (!is_dir(sub)) continue;
    bm_st_set *set = NULL;
    bm_status st = bm_st_open_dir(sub, &set);
    if (st) {
      if (bm_status_code(st) == BM_ERR_NOT_FOUND || bm_status_code(st) == BM_ERR_IO) {
        bm_status_free(st); /* a component without weights of its own */
        continue;
      }
      return st;
    }
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%s/", pipeline_parts[i]);
    s->part_prefix[s->nparts] = strdup(prefix);
    s->parts[s->nparts++] = set;
    if (!s->part_prefix[s->nparts - 1]) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "weight source");
  }
  if (s->nparts == 0)
    return bm_status_make(BM_ERR_NOT_FOUND, "%s: a pipeline folder (model_index.json) with no "
                          "component checkpoint (unet/, vae/, text_encoder/, ...)", path);
  return NULL;
}

/* The checkpoint tensor behind name, or NULL. */
static const bm_st_tensor *lookup(const bm_weight_source *s, const char *name) {
  if (s->st) return bm_st_set_find(s->st, name);
  for (int i = 0; i < s->nparts; i++) {
    size_t k = strlen(s->part_prefix[i]);
    if (strncmp(name, s->part_prefix[i], k) == 0) return bm_st_set_find(s->parts[i], name + k);
  }
  return NULL;
}

const bm_st_tensor *bm_weight_source_find(const bm_weight_source *s, const char *name) {
  return s && name ? lookup(s, name) : NULL;
}

bm_status bm_weight_source_open(const char *path, bm_weight_source **out) {
  *out = NULL;
  bm_weight_source *s = calloc(1, sizeof *s);
  if (!s) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "weight source");
  char index[4096];
  snprintf(index, sizeof index, "%s/model_index.json", path);
  bm_status st = is_dir(path) && is_file(index) ? open_pipeline(path, s) : bm_st_open_dir(path, &s->st);
  if (st) {
    bm_weight_source_close(s);
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
  for (int i = 0; i < s->nparts; i++) {
    bm_st_set_close(s->parts[i]);
    free(s->part_prefix[i]);
  }
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
  if (!src->st && src->nparts == 0) {
    size_t nbytes;
    void *data = generate(g->module->arena, src->seed, name, t, ndim, shape, &nbytes);
    if (!data) {
      bm_graph_fail(g, bm_status_make(BM_ERR_OUT_OF_MEMORY, "weight '%s'", name));
      return NULL;
    }
    return bm_weight(g, name, t, ndim, shape, data, nbytes);
  }
  const bm_st_tensor *st;
  bm_status s = NULL;
  if (src->st) {
    s = bm_st_set_get(src->st, name, &st, NULL);
  } else if (!(st = lookup(src, name))) {
    s = bm_status_make(BM_ERR_NOT_FOUND, "not in the pipeline folder's checkpoints");
  }
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
