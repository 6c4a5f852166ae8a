/* models.h - the model registry: every model family is one file in models/
 * that calls the graph-builder API (ir/ir.h) and maps checkpoint weight
 * names. Nothing in models/ computes; it only records graphs.
 *
 * A model's weights come from a bm_weight_source: either a checkpoint
 * (safetensors file or folder) or a deterministic generator (built-in
 * models, tests). Builders ask for every weight by name with the dtype and
 * shape they expect; the source checks both and gives a clear error for a
 * missing or mismatched tensor.
 */
#ifndef BM_MODELS_H
#define BM_MODELS_H

#include "../ir/ir.h"

typedef struct bm_weight_source bm_weight_source;

/* Opens a source of weights: path to a .safetensors file, a folder or a
 * *.safetensors.index.json. */
bm_status bm_weight_source_open(const char *path, bm_weight_source **out);
/* A deterministic generator: every weight gets values from a hash of
 * (seed, name): uniform in [-a, a] with a = 1/sqrt(fan_in) (fan_in = numel /
 * shape[0]); names ending in "norm.weight"/".gamma" get 1 + small noise and
 * ".bias" gets small values. */
bm_status bm_weight_source_generated(uint64_t seed, bm_weight_source **out);
void bm_weight_source_close(bm_weight_source *s);
/* A folder holding model_index.json (a diffusers pipeline) opens as one
 * source whose names are "<component>/<name>" (unet/, vae/,
 * text_encoder/, ...). */
/* The checkpoint tensor behind `name` (borrowed, valid until the source is
 * closed), or NULL if absent or the source is generated. For builders that
 * probe optional weights or map names themselves (models/sd.c). */
typedef struct bm_st_tensor bm_st_tensor;
const bm_st_tensor *bm_weight_source_find(const bm_weight_source *s, const char *name);

/* Declares weight `name` in g with the given dtype and shape, bound to the
 * source's data. If the source stores another float dtype (f32/f16/bf16),
 * it is converted once into the module arena. Records an error in g and
 * returns NULL when the tensor is missing or its shape differs. */
bm_node *bm_model_weight(bm_graph *g, bm_weight_source *src, const char *name, bm_dtype t,
                         int ndim, const int64_t *shape);
/* printf-style name helper: bm_model_weightf(g, src, t, ndim, shape, "layers.%d.w", i) */
bm_node *bm_model_weightf(bm_graph *g, bm_weight_source *src, bm_dtype t, int ndim,
                          const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

typedef struct bm_model_options {
  const char *weights;   /* checkpoint path; NULL = the model's default source */
  uint64_t seed;         /* for generated weights */
  int max_batch;         /* symbolic batch upper bound; 0 = model default */
  /* Models built from a folder (Hugging Face LLMs, models/llm.h). 0 = default. */
  const char *path;      /* the model folder; set by bm_model_build for a path */
  int max_ctx;           /* KV cache length; default min(max_position_embeddings, 4096) */
  int max_seq;           /* longest forward/prefill chunk; default min(max_ctx, 512) */
  bm_dtype weight_dtype; /* dtype of matmul weights: f32 (default), f16 or bf16 */
  /* Compute dtype: f32 (default), f16 or bf16. The activations between
   * kernels (hidden states, attention q/k/v, MLP intermediates, feature
   * maps) and the KV cache are stored in it; kernels still compute in f32.
   * The functions' inputs and outputs keep their f32/i32 dtypes (cast at
   * the start and end of each graph), so runtimes and apps are unchanged.
   * Small numerically sensitive pieces stay f32 (rope tables, timestep
   * sinusoids, the logits). Independent of weight_dtype (bmc sets both). */
  bm_dtype dtype;
  /* Out (may be NULL): receives a malloc'd JSON object for the package
   * manifest's "extra" (what a generation driver needs), or NULL. */
  char **extra_json;
  /* Stable Diffusion (models/sd.c). 0/NULL = default. */
  int width, height;     /* image size in pixels, multiples of 8; default 512x512 */
  int clip_skip;         /* 1 = last CLIP layer (default), 2 = penultimate, ... */
  const char *sd_config; /* a diffusers folder whose <part>/config.json (and tokenizer/)
                          * describe a single-file checkpoint's parts */
  /* A model folder built with generated weights (bm_weight_source_generated
   * with `seed`) instead of its checkpoint: only its config is read (tests,
   * benchmarks: bmc --random-weights). Excludes `weights`. */
  bool random_weights;
} bm_model_options;

typedef struct bm_model_def {
  const char *name;
  const char *description;
  /* Builds the model's functions into m. */
  bm_status (*build)(bm_module *m, bm_weight_source *src, const bm_model_options *o);
  /* Optional, for models built from a folder: nonzero if this model builds
   * the folder at `path` (e.g. its config.json names a supported
   * architecture). */
  int (*detect)(const char *path);
  /* Optional: what detect() accepts, for error messages
   * (e.g. "Hugging Face model_type llama, mistral, ..."). */
  const char *formats;
} bm_model_def;

extern const bm_model_def *const bm_models[];
extern const int bm_models_count;
const bm_model_def *bm_model_find(const char *name);

/* Builds a registered model by name, or the model folder at path
 * `name` (the first model whose detect() accepts it; its weights default
 * to the folder): opens its weight source (o->weights, the folder or
 * generated), builds, and checks every graph's builder status. A folder
 * no model accepts is an error naming its config.json model_type and the
 * supported ones. The
 * module borrows weight data from *src_out: close it after the module is
 * compiled. */
bm_status bm_model_build(const char *name, const bm_model_options *o, bm_module **out,
                         bm_weight_source **src_out);

#endif
