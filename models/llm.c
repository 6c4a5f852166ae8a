/* llm.c - the shared blocks of decoder-only LLMs and the model-wide build
 * (forward, prefill, decode) for Hugging Face folders (see llm.h). */
#include "llm.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../ir/interp.h" /* bm_load_f32 / bm_store_f32 */

/* ------------------------------------------------------------------ weight cache */

/* Weights converted or derived at build time are made once per module and
 * shared by its graphs (same name, same bytes: the package stores one). */
typedef struct cached_weight {
  const char *name;
  bm_dtype dtype;
  const void *data;
  size_t nbytes;
  struct cached_weight *next;
} cached_weight;

struct bm_llm_cache {
  bm_arena *arena;
  cached_weight *head;
};

static const cached_weight *cache_find(bm_llm_cache *c, const char *name, bm_dtype t) {
  for (cached_weight *w = c->head; w; w = w->next)
    if (w->dtype == t && !strcmp(w->name, name)) return w;
  return NULL;
}

static void cache_add(bm_llm_cache *c, const char *name, bm_dtype t, const void *data, size_t nbytes) {
  cached_weight *w = bm_arena_alloc(c->arena, sizeof *w);
  const char *nm = bm_arena_strdup(c->arena, name);
  if (!w || !nm) return; /* only a missed sharing, not an error */
  w->name = nm;
  w->dtype = t;
  w->data = data;
  w->nbytes = nbytes;
  w->next = c->head;
  c->head = w;
}

static bm_node *weight_t(bm_llm *L, const char *name, bm_dtype t, int ndim, const int64_t *shape) {
  if (bm_graph_status(L->g)) return NULL;
  const cached_weight *w = cache_find(L->cache, name, t);
  if (w) return bm_weight(L->g, name, t, ndim, shape, w->data, w->nbytes);
  bm_node *n = bm_model_weight(L->g, L->src, name, t, ndim, shape);
  if (n) cache_add(L->cache, name, t, n->data, n->data_size);
  return n;
}

bm_node *bm_llm_w(bm_llm *L, int ndim, const int64_t *shape, const char *fmt, ...) {
  char name[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  return weight_t(L, name, L->wdt, ndim, shape);
}

bm_node *bm_llm_w32(bm_llm *L, int ndim, const int64_t *shape, const char *fmt, ...) {
  char name[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  return weight_t(L, name, BM_DTYPE_F32, ndim, shape);
}

bm_node *bm_llm_wa(bm_llm *L, int ndim, const int64_t *shape, const char *fmt, ...) {
  char name[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  return weight_t(L, name, L->adt, ndim, shape);
}

/* A weight computed at build time: `name` is its (derived) name, fill()
 * writes numel f32 values from the source tensors. */
typedef void (*derive_fn)(float *out, int64_t numel, const float *const *srcs, const void *arg);

static float *load_f32_copy(bm_llm *L, const bm_node *w) {
  int64_t n = (int64_t)(w->data_size / bm_dtype_nbytes(w->dtype, 1));
  float *p = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
  if (!p) return NULL;
  for (int64_t i = 0; i < n; i++) p[i] = bm_load_f32(w->data, w->dtype, i);
  return p;
}

/* Declares a derived weight `name` of dtype t, shape (ndim, shape) whose
 * values fill() computes from the checkpoint tensors srcs[i] (nsrc of
 * them, each of shape src_shapes[i]). */
static bm_node *derived(bm_llm *L, const char *name, bm_dtype t, int ndim, const int64_t *shape,
                        int nsrc, const char *const *src_names, const int *src_ndim,
                        const int64_t (*src_shapes)[4], derive_fn fill, const void *arg) {
  if (bm_graph_status(L->g)) return NULL;
  const cached_weight *cw = cache_find(L->cache, name, t);
  if (cw) return bm_weight(L->g, name, t, ndim, shape, cw->data, cw->nbytes);
  int64_t numel = 1;
  for (int i = 0; i < ndim; i++) numel *= shape[i];
  float *out = malloc(sizeof(float) * (size_t)(numel > 0 ? numel : 1));
  const float **srcs = calloc((size_t)(nsrc > 0 ? nsrc : 1), sizeof *srcs);
  bm_status s = NULL;
  if (!out || !srcs) s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "weight '%s'", name);
  for (int i = 0; !s && i < nsrc; i++) {
    /* the checkpoint tensor as it is stored (no conversion copy); the node
     * stays unused in the graph and dead-code elimination drops it */
    bm_node *w = bm_model_weight(L->g, L->src, src_names[i], BM_DTYPE_F32, src_ndim[i], src_shapes[i]);
    if (!w) break; /* error recorded in the graph */
    srcs[i] = load_f32_copy(L, w);
    if (!srcs[i]) s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "weight '%s'", src_names[i]);
  }
  bm_node *res = NULL;
  if (!s && !bm_graph_status(L->g)) {
    fill(out, numel, srcs, arg);
    size_t nbytes = bm_dtype_nbytes(t, numel);
    void *data = bm_arena_alloc(L->g->module->arena, nbytes ? nbytes : 1);
    if (!data) {
      s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "weight '%s'", name);
    } else {
      for (int64_t i = 0; i < numel; i++) bm_store_f32(data, t, i, out[i]);
      cache_add(L->cache, name, t, data, nbytes);
      res = bm_weight(L->g, name, t, ndim, shape, data, nbytes);
    }
  }
  if (s) bm_graph_fail(L->g, s);
  free(out);
  for (int i = 0; srcs && i < nsrc; i++) free((void *)srcs[i]);
  free(srcs);
  return res;
}

typedef struct rows_arg {
  int64_t cols, groups, group_rows, begin, count;
} rows_arg;

static void fill_rows(float *out, int64_t numel, const float *const *srcs, const void *arg) {
  const rows_arg *a = arg;
  for (int64_t g = 0; g < a->groups; g++)
    memcpy(out + g * a->count * a->cols, srcs[0] + (g * a->group_rows + a->begin) * a->cols,
           sizeof(float) * (size_t)(a->count * a->cols));
}

bm_node *bm_llm_w_group_rows(bm_llm *L, const char *name, int64_t rows, int64_t cols, int64_t groups,
                             int64_t begin, int64_t count) {
  int64_t gr = groups > 0 ? rows / groups : 0;
  if (groups < 1 || gr * groups != rows || begin < 0 || count < 1 || begin + count > gr) {
    bm_graph_fail(L->g, bm_status_make(BM_ERR_INVALID_ARGUMENT,
                                       "weight '%s': rows [%lld, %lld) of each of %lld groups of its "
                                       "%lld rows do not fit",
                                       name, (long long)begin, (long long)(begin + count),
                                       (long long)groups, (long long)rows));
    return NULL;
  }
  char dn[300];
  if (groups == 1)
    snprintf(dn, sizeof dn, "%s[%lld:%lld]", name, (long long)begin, (long long)(begin + count));
  else
    snprintf(dn, sizeof dn, "%s[%lldx %lld:%lld]", name, (long long)groups, (long long)begin,
             (long long)(begin + count));
  int64_t shape[2] = {groups * count, cols};
  const char *names[1] = {name};
  int nd[1] = {2};
  int64_t ss[1][4] = {{rows, cols}};
  rows_arg a = {cols, groups, gr, begin, count};
  return derived(L, dn, L->wdt, 2, shape, 1, names, nd, ss, fill_rows, &a);
}

bm_node *bm_llm_w_rows(bm_llm *L, const char *name, int64_t rows, int64_t cols, int64_t begin,
                       int64_t count) {
  return bm_llm_w_group_rows(L, name, rows, cols, 1, begin, count);
}

typedef struct stack_arg {
  int n;
  int64_t part;
} stack_arg;

static void fill_stack(float *out, int64_t numel, const float *const *srcs, const void *arg) {
  const stack_arg *a = arg;
  for (int e = 0; e < a->n; e++) memcpy(out + e * a->part, srcs[e], sizeof(float) * (size_t)a->part);
}

bm_node *bm_llm_w_stack(bm_llm *L, const char *fmt, int layer, const char *part, int n, int64_t r,
                        int64_t c) {
  if (n < 1 || n > 4096) {
    bm_graph_fail(L->g, bm_status_make(BM_ERR_UNSUPPORTED, "%d experts (1..4096 supported)", n));
    return NULL;
  }
  enum { NAME = 256 };
  char *buf = malloc((size_t)n * NAME);
  const char **names = malloc(sizeof *names * (size_t)n);
  int *nd = malloc(sizeof *nd * (size_t)n);
  int64_t(*ss)[4] = malloc(sizeof *ss * (size_t)n);
  bm_node *res = NULL;
  if (!buf || !names || !nd || !ss) {
    bm_graph_fail(L->g, bm_status_make(BM_ERR_OUT_OF_MEMORY, "stacking %d experts", n));
  } else {
    for (int e = 0; e < n; e++) {
      snprintf(buf + (size_t)e * NAME, NAME, fmt, layer, e, part);
      names[e] = buf + (size_t)e * NAME;
      nd[e] = 2;
      ss[e][0] = r;
      ss[e][1] = c;
    }
    /* named after expert "*" : model.layers.3.mlp.experts.*.up_proj.weight */
    char stacked[NAME + 32];
    snprintf(stacked, sizeof stacked, fmt, layer, -1, part);
    char *p = strstr(stacked, ".-1.");
    if (p) { /* ".-1." -> ".*." */
      p[1] = '*';
      memmove(p + 2, p + 3, strlen(p + 3) + 1);
    }
    int64_t shape[3] = {n, r, c};
    stack_arg a = {n, r * c};
    res = derived(L, stacked, L->wdt, 3, shape, n, names, nd, (const int64_t(*)[4])ss, fill_stack, &a);
  }
  free(buf);
  free(names);
  free(nd);
  free(ss);
  return res;
}

static void fill_plus_one(float *out, int64_t numel, const float *const *srcs, const void *arg) {
  for (int64_t i = 0; i < numel; i++) out[i] = 1.0f + srcs[0][i];
}

/* ------------------------------------------------------------------ blocks */

static int64_t *dims4(int64_t *d, int64_t a, int64_t b, int64_t c, int64_t e) {
  d[0] = a, d[1] = b, d[2] = c, d[3] = e;
  return d;
}

bm_node *bm_llm_norm(bm_llm *L, bm_node *x, int64_t dim, const char *fmt, ...) {
  char name[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  int64_t shape[1] = {dim};
  bm_node *w;
  if (L->arch->gemma) { /* Gemma scales by (1 + w), folded into the weight */
    char dn[300];
    snprintf(dn, sizeof dn, "%s[1+w]", name);
    const char *names[1] = {name};
    int nd[1] = {1};
    int64_t ss[1][4] = {{dim}};
    w = derived(L, dn, BM_DTYPE_F32, 1, shape, 1, names, nd, ss, fill_plus_one, NULL);
  } else {
    w = weight_t(L, name, BM_DTYPE_F32, 1, shape);
  }
  return bm_rms_norm(L->g, x, w, (float)L->c->eps);
}

static const int perm_bshd[4] = {0, 2, 1, 3}; /* (B, S, H, D) <-> (B, H, S, D) */

/* (B, S, H, D) <-> (B, H, S, D): with one position (decode) the two
 * layouts hold the same bytes, so a reshape (a view) does. */
static bm_node *swap_sh(bm_llm *L, bm_node *x) {
  if (!x) return NULL;
  if (L->S == 1) {
    int64_t s[4] = {L->B, x->shape[2].add, x->shape[1].add, x->shape[3].add};
    return bm_reshape(L->g, x, 4, s);
  }
  return bm_permute(L->g, x, perm_bshd);
}

/* Rotates the first rope_dim channels of x (B, S, H, D). */
static bm_node *rope(bm_llm *L, bm_node *x) {
  bm_node *r = bm_rope(L->g, x, L->positions, L->freqs, L->arch->rope_mode);
  if (r && L->rope_scale != 1.0f) { /* yarn: cos and sin carry the attention factor */
    if (r->shape[3].add != 2 * L->freqs->shape[0].add) {
      bm_graph_fail(L->g, bm_status_make(BM_ERR_UNSUPPORTED,
                                         "yarn rope scaling with a partial rotary dimension"));
      return NULL;
    }
    r = bm_mul(L->g, r, bm_scalar(L->g, L->rope_scale));
  }
  return r;
}

/* (B, S, H*D) -> (B, S, H, D) */
static bm_node *split_heads(bm_llm *L, bm_node *x, int64_t h, int64_t d) {
  int64_t s[4];
  return bm_reshape(L->g, x, 4, dims4(s, L->B, L->S, h, d));
}

/* (B, H, S, D) -> (B, S, H*D) */
static bm_node *merge_heads(bm_llm *L, bm_node *o, int64_t h, int64_t d) {
  o = swap_sh(L, o);
  int64_t s[3] = {L->B, L->S, h * d};
  return bm_reshape(L->g, o, 3, s);
}

/* Attention core: q (B, Hq, S, D), k/v rows of this chunk (B, Hkv, S, D/Dv).
 * Forward: over the chunk. Prefill/decode: the rows are written into the
 * layer's cache states and attention reads the caches up to kv_len. */
static bm_node *attend(bm_llm *L, int l, const char *kind_k, const char *kind_v, bm_node *q,
                       bm_node *k, bm_node *v, float scale, int window, float softcap) {
  bm_graph *g = L->g;
  if (L->fn == BM_LLM_FORWARD) return bm_attention(g, q, k, v, NULL, scale, true, window, softcap);
  if (!q || !k || !v) return NULL;
  char name[64];
  int64_t s[4];
  snprintf(name, sizeof name, "cache.%d.%s", l, kind_k);
  bm_node *kc = bm_state(g, name, L->adt, 4,
                         dims4(s, L->max_batch, k->shape[1].add, L->max_ctx, k->shape[3].add));
  kc = bm_kv_write(g, kc, k, L->start);
  bm_node *vc = kc;
  if (kind_v) {
    snprintf(name, sizeof name, "cache.%d.%s", l, kind_v);
    vc = bm_state(g, name, L->adt, 4,
                  dims4(s, L->max_batch, v->shape[1].add, L->max_ctx, v->shape[3].add));
    vc = bm_kv_write(g, vc, v, L->start);
  }
  return bm_attention_kv(g, q, kc, vc, NULL, L->kv_len, scale, true, window, softcap);
}

bm_node *bm_llm_attention(bm_llm *L, bm_node *x, int l, const bm_llm_attn *a) {
  bm_graph *g = L->g;
  const bm_hf_config *c = L->c;
  int64_t H = c->heads, KV = c->kv_heads, hd = c->head_dim;
  bm_node *q = split_heads(L, bm_linear(g, x, a->wq, a->bq), H, hd); /* (B, S, H, hd) */
  bm_node *k = split_heads(L, bm_linear(g, x, a->wk, a->bk), KV, hd);
  bm_node *v = split_heads(L, bm_linear(g, x, a->wv, a->bv), KV, hd);
  if (a->q_norm) q = bm_rms_norm(g, q, a->q_norm, (float)c->eps);
  if (a->k_norm) k = bm_rms_norm(g, k, a->k_norm, (float)c->eps);
  q = swap_sh(L, rope(L, q)); /* (B, H, S, hd) */
  k = swap_sh(L, rope(L, k)); /* (B, KV, S, hd) */
  v = swap_sh(L, v);
  bm_node *o = attend(L, l, "k", "v", q, k, v, a->scale, a->window, a->softcap); /* (B, H, S, hd) */
  return bm_linear(g, merge_heads(L, o, H, hd), a->wo, a->bo);
}

/* ---- multi-head latent attention
 *
 * Per head h, with c_j the normalized latent of key j (kv_lora) and
 * W_uk[h] (nope, kv_lora), W_uv[h] (v, kv_lora) the parts of kv_b_proj:
 *   q_nope . k_nope_j = q_nope . (W_uk[h] c_j) = (W_uk[h]^T q_nope) . c_j
 *   sum_j p_j v_j = W_uv[h] (sum_j p_j c_j)
 * so attention runs against the latent [c_j, rope(k_pe_j)] (kv_lora + rope,
 * one head shared by all query heads) with the query
 * [W_uk[h]^T q_nope, rope(q_pe)], and the value is that same latent row
 * (its first kv_lora channels give sum_j p_j c_j). This is what the cache
 * stores: kv_lora + rope floats per token instead of heads * (nope + rope + v). */
bm_node *bm_llm_mla_attention(bm_llm *L, bm_node *x, int l, const bm_llm_mla *a) {
  bm_graph *g = L->g;
  const bm_hf_config *c = L->c;
  int64_t H = c->heads, nope = c->qk_nope_head_dim, R = c->qk_rope_head_dim;
  int64_t kvr = c->kv_lora_rank, vd = c->v_head_dim;
  bm_node *qin = x;
  if (a->wq_a) qin = bm_rms_norm(g, bm_linear(g, x, a->wq_a, NULL), a->q_a_norm, 1e-6f);
  bm_node *q_nope = swap_sh(L, split_heads(L, bm_linear(g, qin, a->wq_nope, NULL), H, nope)); /* (B, H, S, nope) */
  bm_node *q_pe = swap_sh(L, rope(L, split_heads(L, bm_linear(g, qin, a->wq_pe, NULL), H, R)));  /* (B, H, S, R) */
  bm_node *q_lat = bm_matmul(g, q_nope, a->w_uk, false, false); /* (B, H, S, kvr) */
  bm_node *qs[2] = {q_lat, q_pe};
  bm_node *qq = bm_concat(g, 2, qs, 3);                  /* (B, H, S, kvr + R) */

  int64_t s[4];
  bm_node *lat = bm_rms_norm(g, bm_linear(g, x, a->w_lat, NULL), a->kv_a_norm, 1e-6f); /* (B, S, kvr) */
  lat = bm_reshape(g, lat, 4, dims4(s, L->B, L->S, 1, kvr));
  bm_node *k_pe = split_heads(L, bm_linear(g, x, a->w_kpe, NULL), 1, R); /* (B, S, 1, R) */
  bm_node *ks[2] = {lat, rope(L, k_pe)};
  bm_node *key = bm_concat(g, 2, ks, 3);                 /* (B, S, 1, kvr + R) */
  key = bm_reshape(g, key, 4, dims4(s, L->B, 1, L->S, kvr + R)); /* (B, 1, S, kvr + R): one head */
  bm_node *o = attend(L, l, "kv", NULL, qq, key, key, a->scale, 0, 0.0f); /* (B, H, S, kvr + R) */
  o = bm_slice(g, o, 3, 0, kvr, 1);                      /* (B, H, S, kvr) */
  o = bm_matmul(g, o, a->w_uv, false, true);             /* (B, H, S, v) */
  return bm_linear(g, merge_heads(L, o, H, vd), a->wo, NULL);
}

typedef struct kvb_arg {
  int64_t H, nope, vd, kvr;
  bool value;
} kvb_arg;

static void fill_kv_b(float *out, int64_t numel, const float *const *srcs, const void *arg) {
  const kvb_arg *a = arg;
  int64_t per = a->nope + a->vd, rows = a->value ? a->vd : a->nope, off = a->value ? a->nope : 0;
  for (int64_t h = 0; h < a->H; h++)
    memcpy(out + h * rows * a->kvr, srcs[0] + (h * per + off) * a->kvr,
           sizeof(float) * (size_t)(rows * a->kvr));
}

void bm_llm_split_kv_b(bm_llm *L, const char *name, bm_node **w_uk, bm_node **w_uv) {
  const bm_hf_config *c = L->c;
  int64_t H = c->heads, nope = c->qk_nope_head_dim, vd = c->v_head_dim, kvr = c->kv_lora_rank;
  const char *names[1] = {name};
  int nd[1] = {2};
  int64_t ss[1][4] = {{H * (nope + vd), kvr}};
  char dn[300];
  kvb_arg a = {H, nope, vd, kvr, false};
  snprintf(dn, sizeof dn, "%s[k_nope]", name);
  int64_t sk[3] = {H, nope, kvr};
  *w_uk = derived(L, dn, L->wdt, 3, sk, 1, names, nd, ss, fill_kv_b, &a);
  a.value = true;
  snprintf(dn, sizeof dn, "%s[v]", name);
  int64_t sv[3] = {H, vd, kvr};
  *w_uv = derived(L, dn, L->wdt, 3, sv, 1, names, nd, ss, fill_kv_b, &a);
}

bm_status bm_llm_act(const bm_hf_config *c, bm_op *op) {
  const char *a = c->hidden_act;
  if (!strcmp(a, "silu") || !strcmp(a, "swish")) *op = BM_OP_SILU;
  else if (!strcmp(a, "gelu_pytorch_tanh") || !strcmp(a, "gelu_new") || !strcmp(a, "gelu_fast"))
    *op = BM_OP_GELU_TANH;
  else if (!strcmp(a, "gelu")) *op = BM_OP_GELU;
  else
    return bm_status_make(BM_ERR_UNSUPPORTED,
                          "hidden_act '%s' is not supported (silu, gelu, gelu_pytorch_tanh, gelu_new)", a);
  return NULL;
}

bm_node *bm_llm_mlp(bm_llm *L, bm_node *x, bm_node *wg, bm_node *wu, bm_node *wd, bm_op act) {
  bm_graph *g = L->g;
  bm_node *h = bm_unary(g, act, bm_linear(g, x, wg, NULL));
  h = bm_mul(g, h, bm_linear(g, x, wu, NULL));
  return bm_linear(g, h, wd, NULL);
}

/* Gates (..., E) from router logits (..., E): zero outside the top k. */
static bm_node *moe_gates(bm_llm *L, bm_node *logits, const bm_llm_moe *m) {
  bm_graph *g = L->g;
  if (!m->softmax_first) /* softmax over the selected logits = renormalized top-k probs */
    return bm_softmax(g, bm_topk_mask(g, logits, m->top_k, -INFINITY), -1);
  bm_node *p = bm_topk_mask(g, bm_softmax(g, logits, -1), m->top_k, 0.0f);
  if (m->renorm) p = bm_div(g, p, bm_add(g, bm_sum(g, p, -1, true), bm_scalar(g, 1e-20f)));
  if (m->scale != 1.0f) p = bm_mul(g, p, bm_scalar(g, m->scale));
  return p;
}

bm_node *bm_llm_moe_block(bm_llm *L, bm_node *x, const bm_llm_moe *m) {
  bm_graph *g = L->g;
  /* the MOE op takes the (batch, seq) tokens as they are and runs only the
   * experts each token selected (the gates of the others are 0) */
  bm_node *logits = bm_linear(g, x, m->router, NULL); /* (B, S, E) */
  /* routing in f32, as transformers does (softmax(..., dtype=float)) */
  if (logits && logits->dtype != BM_DTYPE_F32) logits = bm_cast(g, logits, BM_DTYPE_F32);
  bm_node *gates = moe_gates(L, logits, m);                            /* (B, S, E) f32 */
  return bm_moe(g, x, gates, m->w_gate, m->w_up, m->w_down, m->act);   /* (B, S, D) */
}

/* ------------------------------------------------------------------ rope tables */

double bm_llm_yarn_mscale(double factor, double mscale) {
  return factor <= 1 ? 1.0 : 0.1 * mscale * log(factor) + 1.0;
}
#define yarn_mscale bm_llm_yarn_mscale

/* Inverse frequencies (dim / 2) of the config's rope type, as transformers
 * computes them (f32 exponent and power, then the type's adjustment). */
static bm_status rope_freqs(const bm_hf_config *c, int64_t dim, float *out, float *scale) {
  int64_t half = dim / 2;
  *scale = 1.0f;
  for (int64_t i = 0; i < half; i++) {
    float e = (float)(2 * i) / (float)dim;
    out[i] = 1.0f / powf((float)c->rope_theta, e);
  }
  if (!strcmp(c->rope_type, "default")) return NULL;
  if (!strcmp(c->rope_type, "linear")) {
    for (int64_t i = 0; i < half; i++) out[i] = out[i] / (float)c->rope_factor;
    return NULL;
  }
  if (!strcmp(c->rope_type, "llama3")) {
    double factor = c->rope_factor, lo = c->rope_low_freq_factor, hi = c->rope_high_freq_factor;
    double old = (double)c->rope_orig_max_pos;
    double lo_wavelen = old / lo, hi_wavelen = old / hi;
    for (int64_t i = 0; i < half; i++) {
      float inv = out[i];
      float wavelen = 2.0f * (float)M_PI / inv;
      if (wavelen > (float)lo_wavelen) {
        out[i] = inv / (float)factor; /* low frequencies: scaled */
      } else if (!(wavelen < (float)hi_wavelen)) { /* medium: smooth blend */
        float smooth = ((float)old / wavelen - (float)lo) / (float)(hi - lo);
        out[i] = (1.0f - smooth) * inv / (float)factor + smooth * inv;
      }
    }
    return NULL;
  }
  if (!strcmp(c->rope_type, "yarn")) {
    /* transformers' _compute_yarn_parameters: blend interpolated (1/factor)
     * and extrapolated frequencies over a linear ramp between the
     * correction dims of beta_fast and beta_slow rotations; the rotated
     * values are scaled by the attention factor */
    double factor = c->rope_factor, base = c->rope_theta, d = (double)dim;
    double omp = (double)c->rope_orig_max_pos;
    double lo = floor(d * log(omp / (c->rope_beta_fast * 2 * M_PI)) / (2 * log(base)));
    double hi = ceil(d * log(omp / (c->rope_beta_slow * 2 * M_PI)) / (2 * log(base)));
    if (lo < 0) lo = 0;
    if (hi > d - 1) hi = d - 1;
    if (lo == hi) hi += 0.001;
    for (int64_t i = 0; i < half; i++) {
      float ramp = (float)(((double)i - lo) / (hi - lo));
      ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
      float extra = 1.0f - ramp; /* weight of the extrapolated (unscaled) frequency */
      float inv = out[i], interp = inv / (float)factor;
      out[i] = interp * (1.0f - extra) + inv * extra;
    }
    double ms = c->rope_mscale, msa = c->rope_mscale_all_dim;
    double af = ms > 0 && msa > 0 ? yarn_mscale(factor, ms) / yarn_mscale(factor, msa) : yarn_mscale(factor, 1.0);
    *scale = (float)af;
    return NULL;
  }
  return bm_status_make(BM_ERR_UNSUPPORTED,
                        "rope_type '%s' is not supported (supported: default, linear, llama3, yarn)",
                        c->rope_type);
}

/* ------------------------------------------------------------------ graphs */

static bm_status build_graph(bm_module *m, bm_weight_source *src, const bm_hf_config *c,
                             const bm_llm_arch *arch, bm_llm_fn fn, bm_dtype wdt, bm_dtype adt, int64_t max_batch,
                             int64_t max_ctx, int64_t max_seq, bm_llm_cache *cache) {
  static const char *const names[] = {"forward", "prefill", "decode"};
  bm_graph *g = bm_graph_create(m, names[fn]);
  if (!g) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "graph '%s'", names[fn]);
  bm_llm L = {.g = g, .src = src, .c = c, .arch = arch, .fn = fn, .wdt = wdt, .adt = adt,
              .max_batch = max_batch, .max_ctx = max_ctx, .max_seq = max_seq, .cache = cache};
  BM_RETURN_IF_ERROR(bm_llm_act(c, &L.act));
  int sb = bm_sym_declare(g, "batch", max_batch);
  L.B = BM_SYM(sb);
  L.S = fn == BM_LLM_DECODE ? 1 : BM_SYM(bm_sym_declare(g, "seq", max_seq));
  int64_t bs[2] = {L.B, L.S}, b1[1] = {L.B};
  bm_node *ids = bm_input(g, "input_ids", BM_DTYPE_I32, 2, bs);
  L.positions = bm_input(g, "positions", BM_DTYPE_I32, 2, bs);
  if (fn != BM_LLM_FORWARD) {
    L.start = bm_input(g, "start", BM_DTYPE_I32, 1, b1);
    L.kv_len = bm_input(g, "kv_len", BM_DTYPE_I32, 1, b1);
  }
  /* prefill: the chunk position of each row's last real token, the only
   * one whose logits are computed */
  bm_node *last = fn == BM_LLM_PREFILL ? bm_input(g, "last", BM_DTYPE_I32, 1, b1) : NULL;

  /* rope: inverse frequencies as a constant */
  int64_t rdim = arch->rope_dim > 0   ? arch->rope_dim
                 : arch->rope_dim < 0 ? c->qk_rope_head_dim /* MLA: the decoupled rope key */
                                      : (int64_t)((double)c->head_dim * c->partial_rotary_factor);
  rdim -= rdim % 2;
  if (rdim < 2 || rdim > 4096)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "rotary dimension %lld (head_dim %lld x %g)",
                          (long long)rdim, (long long)c->head_dim, c->partial_rotary_factor);
  float freqs[2048];
  BM_RETURN_IF_ERROR(rope_freqs(c, rdim, freqs, &L.rope_scale));
  int64_t fs[1] = {rdim / 2};
  L.freqs = bm_const(g, BM_DTYPE_F32, 1, fs, freqs);

  /* embeddings */
  int64_t es[2] = {c->vocab, c->hidden};
  bm_node *table = bm_llm_w(&L, 2, es, "model.embed_tokens.weight");
  bm_node *x = bm_gather(g, table, ids); /* (B, S, hidden) */
  if (x && x->dtype != adt) x = bm_cast(g, x, adt); /* from here on: the compute dtype */
  if (arch->gemma) x = bm_mul(g, x, bm_scalar(g, (float)sqrt((double)c->hidden)));

  for (int l = 0; l < c->layers && !bm_graph_status(g); l++) x = arch->layer(&L, x, l);

  if (last) x = bm_take_row(g, x, last); /* (B, 1, hidden) */
  x = bm_llm_norm(&L, x, c->hidden, "model.norm.weight");
  /* the logits are f32 whatever the compute dtype: the lm_head reads the
   * normed state widened to f32 (exact), so they are not rounded to f16/bf16 */
  if (x && x->dtype != BM_DTYPE_F32) x = bm_cast(g, x, BM_DTYPE_F32);
  bm_node *head = c->tie_word_embeddings ? table : bm_llm_w(&L, 2, es, "lm_head.weight");
  bm_node *logits = bm_linear(g, x, head, NULL); /* (B, S, vocab); prefill (B, 1, vocab) */
  if (c->final_softcap > 0) {
    bm_node *cap = bm_scalar(g, (float)c->final_softcap);
    logits = bm_mul(g, bm_unary(g, BM_OP_TANH, bm_div(g, logits, cap)), cap);
  }
  bm_output_add(g, "logits", logits);
  return NULL;
}

static char *extra_json(const bm_hf_config *c, const bm_llm_arch *arch, bm_dtype wdt, bm_dtype adt,
                        int64_t max_batch, int64_t max_ctx, int64_t max_seq) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "kind", "causal_lm");
  cJSON_AddStringToObject(o, "arch", arch->model_type);
  cJSON_AddStringToObject(o, "architecture", c->architecture);
  cJSON_AddNumberToObject(o, "vocab_size", (double)c->vocab);
  cJSON_AddNumberToObject(o, "hidden_size", (double)c->hidden);
  cJSON_AddNumberToObject(o, "num_layers", (double)c->layers);
  cJSON *bos = cJSON_AddArrayToObject(o, "bos_token_id");
  for (int i = 0; i < c->nbos; i++) cJSON_AddItemToArray(bos, cJSON_CreateNumber((double)c->bos_ids[i]));
  cJSON *eos = cJSON_AddArrayToObject(o, "eos_token_id");
  for (int i = 0; i < c->neos; i++) cJSON_AddItemToArray(eos, cJSON_CreateNumber((double)c->eos_ids[i]));
  if (c->pad_id >= 0)
    cJSON_AddNumberToObject(o, "pad_token_id", (double)c->pad_id);
  else
    cJSON_AddNullToObject(o, "pad_token_id");
  cJSON_AddNumberToObject(o, "max_ctx", (double)max_ctx);
  cJSON_AddNumberToObject(o, "max_batch", (double)max_batch);
  cJSON_AddNumberToObject(o, "max_seq", (double)max_seq);
  cJSON_AddStringToObject(o, "weight_dtype", bm_dtype_name(wdt));
  cJSON_AddStringToObject(o, "dtype", bm_dtype_name(adt));
  cJSON *fns = cJSON_AddObjectToObject(o, "functions");
  static const char *const fnames[] = {"forward", "prefill", "decode"};
  for (int f = 0; f < 3; f++) {
    cJSON *fo = cJSON_AddObjectToObject(fns, fnames[f]);
    cJSON *in = cJSON_AddArrayToObject(fo, "inputs");
    cJSON_AddItemToArray(in, cJSON_CreateString("input_ids"));
    cJSON_AddItemToArray(in, cJSON_CreateString("positions"));
    if (f) {
      cJSON_AddItemToArray(in, cJSON_CreateString("start"));
      cJSON_AddItemToArray(in, cJSON_CreateString("kv_len"));
    }
    if (f == 1) cJSON_AddItemToArray(in, cJSON_CreateString("last"));
    cJSON *out = cJSON_AddArrayToObject(fo, "outputs");
    cJSON_AddItemToArray(out, cJSON_CreateString("logits"));
    cJSON_AddStringToObject(fo, "logits", f == 0   ? "every position"
                                          : f == 1 ? "position last[b] of each row"
                                                   : "the one position");
    cJSON_AddNumberToObject(fo, "max_seq", f == 2 ? 1.0 : (double)max_seq);
  }
  cJSON *cache = cJSON_AddObjectToObject(o, "cache");
  bool mla = c->kv_lora_rank > 0;
  cJSON_AddStringToObject(cache, "layout", mla ? "mla_latent" : "kv");
  cJSON_AddStringToObject(cache, "states", mla ? "cache.<layer>.kv" : "cache.<layer>.k, cache.<layer>.v");
  char *s = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  return s;
}

bm_status bm_llm_build(bm_module *m, bm_weight_source *src, const bm_model_options *o,
                       const bm_hf_config *c, const bm_llm_arch *arch) {
  if (arch->check) BM_RETURN_IF_ERROR(arch->check(c));
  bm_dtype wdt = o->weight_dtype;
  if (wdt != BM_DTYPE_F32 && wdt != BM_DTYPE_F16 && wdt != BM_DTYPE_BF16)
    return bm_status_make(BM_ERR_UNSUPPORTED, "weight dtype %s (supported: f32, f16, bf16)",
                          bm_dtype_name(wdt));
  bm_dtype adt = o->dtype;
  if (adt != BM_DTYPE_F32 && adt != BM_DTYPE_F16 && adt != BM_DTYPE_BF16)
    return bm_status_make(BM_ERR_UNSUPPORTED, "compute dtype %s (supported: f32, f16, bf16)",
                          (unsigned)adt < BM_DTYPE_COUNT ? bm_dtype_name(adt) : "?");
  int64_t max_batch = o->max_batch > 0 ? o->max_batch : 4;
  int64_t max_ctx = o->max_ctx > 0 ? o->max_ctx : (c->max_pos < 4096 ? c->max_pos : 4096);
  int64_t max_seq = o->max_seq > 0 ? o->max_seq : (max_ctx < 512 ? max_ctx : 512);
  if (max_seq > max_ctx) max_seq = max_ctx;
  if (max_ctx < 1) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "max_ctx %lld", (long long)max_ctx);
  const char *nm = bm_arena_strdup(m->arena, arch->model_type);
  if (nm) m->name = nm;
  bm_llm_cache cache = {.arena = m->arena};
  for (int f = BM_LLM_FORWARD; f <= BM_LLM_DECODE; f++) {
    BM_RETURN_IF_ERROR(build_graph(m, src, c, arch, (bm_llm_fn)f, wdt, adt, max_batch, max_ctx, max_seq, &cache));
    if (bm_graph_status(m->graphs[m->ngraphs - 1])) return NULL; /* reported by the caller */
  }
  if (o->extra_json) {
    *o->extra_json = extra_json(c, arch, wdt, adt, max_batch, max_ctx, max_seq);
    if (!*o->extra_json) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "extra json");
  }
  return NULL;
}

/* ------------------------------------------------------------------ registry */

static const bm_llm_arch *const archs[] = {
    &bm_llm_arch_llama, &bm_llm_arch_mistral, &bm_llm_arch_qwen2,   &bm_llm_arch_qwen3,
    &bm_llm_arch_gemma2, &bm_llm_arch_phi3,   &bm_llm_arch_mixtral, &bm_llm_arch_deepseek_v2,
};

const bm_llm_arch *bm_llm_arch_find(const char *model_type) {
  for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
    if (model_type && !strcmp(archs[i]->model_type, model_type)) return archs[i];
  return NULL;
}

const char *bm_llm_supported(void) {
  return "llama, mistral, qwen2, qwen3, gemma2, phi3, mixtral, deepseek_v2";
}

static int hf_detect(const char *path) {
  char mt[64], arch[128];
  bm_status s = bm_hf_config_peek(path, mt, sizeof mt, arch, sizeof arch);
  if (s) {
    bm_status_free(s);
    return 0;
  }
  return bm_llm_arch_find(mt) != NULL;
}

static bm_status hf_build(bm_module *m, bm_weight_source *src, const bm_model_options *o) {
  const char *path = o->path ? o->path : o->weights;
  if (!path)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT,
                          "model 'hf' needs the path of a Hugging Face model folder (--model PATH)");
  bm_hf_config c;
  BM_RETURN_IF_ERROR(bm_hf_config_load(path, &c));
  const bm_llm_arch *arch = bm_llm_arch_find(c.model_type);
  if (!arch)
    return bm_status_make(BM_ERR_UNSUPPORTED,
                          "%s/config.json: unsupported architecture: model_type '%s' (architectures [%s]); "
                          "supported model types: %s",
                          path, c.model_type, c.architecture, bm_llm_supported());
  return bm_llm_build(m, src, o, &c, arch);
}

const bm_model_def bm_model_hf_llm = {
    .name = "hf",
    .description = "decoder-only LLM from a Hugging Face folder (--model PATH; see docs/models.md)",
    .build = hf_build,
    .detect = hf_detect,
    .formats = "Hugging Face causal LMs, model_type llama, mistral, qwen2, qwen3, gemma2, phi3, "
               "mixtral, deepseek_v2",
};
