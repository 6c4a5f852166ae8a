/* llm.h - decoder-only LLMs from Hugging Face folders: the shared blocks
 * (RMSNorm, RoPE tables, GQA attention with or without a KV cache, sliding
 * windows, soft-capping, gated MLPs, mixture of experts, multi-head latent
 * attention) written once, and the per-family hooks (models/llama.c,
 * gemma2.c, phi3.c, mixtral.c, deepseek_v2.c) that map weight names onto
 * them. Nothing here computes: every block records graph nodes.
 *
 * One package holds three functions (docs/models.md):
 *   forward (input_ids (batch, seq) i32, positions (batch, seq) i32)
 *       -> logits (batch, seq, vocab) f32                  no cache
 *   prefill (input_ids (batch, seq), positions (batch, seq), start (batch),
 *            kv_len (batch)) -> logits (batch, seq, vocab)  writes the cache
 *   decode  (the same with seq = 1) -> logits (batch, 1, vocab)
 * The KV cache is one STATE per layer and kind: "cache.L.k" / "cache.L.v"
 * (max_batch, kv_heads, max_ctx, head_dim) in the compute dtype (f32
 * unless bm_model_options.dtype says f16/bf16), or for MLA "cache.L.kv"
 * (max_batch, 1, max_ctx, kv_lora_rank + rope_dim): the normalized latent
 * followed by the rotated rope key, with attention run in the latent space.
 */
#ifndef BM_LLM_H
#define BM_LLM_H

#include "hf_config.h"
#include "models.h"

typedef enum bm_llm_fn {
  BM_LLM_FORWARD = 0, /* full forward, no cache */
  BM_LLM_PREFILL,     /* writes the chunk into the cache, attends over it */
  BM_LLM_DECODE,      /* as prefill with seq = 1 */
} bm_llm_fn;

typedef struct bm_llm bm_llm;
typedef struct bm_llm_cache bm_llm_cache;

/* One model family. */
typedef struct bm_llm_arch {
  const char *model_type;  /* config.json "model_type" */
  /* Checks the config for what this family needs; NULL = fine. */
  bm_status (*check)(const bm_hf_config *c);
  /* One decoder layer, residuals included: x (batch, seq, hidden) -> same. */
  bm_node *(*layer)(bm_llm *L, bm_node *x, int l);
  bool gemma;              /* embeddings * sqrt(hidden), RMSNorm weights (1 + w) */
  int rope_mode;           /* ROPE op mode: 0 halves (Llama), 1 interleaved */
  int64_t rope_dim;        /* rotated dims; 0 = head_dim * partial_rotary_factor,
                            * -1 = qk_rope_head_dim (MLA) */
} bm_llm_arch;

/* The state of one graph being built. */
struct bm_llm {
  bm_graph *g;
  bm_weight_source *src;
  const bm_hf_config *c;
  const bm_llm_arch *arch;
  bm_llm_fn fn;
  bm_dtype wdt;              /* matmul weights */
  bm_dtype adt;              /* activations and KV cache (compute dtype, bm_model_options.dtype) */
  int64_t B, S;              /* dims as builder int64s: BM_SYM(k) or static */
  int64_t max_batch, max_ctx, max_seq;
  bm_node *positions;        /* (batch, seq) i32 */
  bm_node *start, *kv_len;   /* (batch) i32; NULL in forward */
  bm_node *freqs;            /* (rope_dim / 2) f32 inverse frequencies */
  float rope_scale;          /* multiplies rotated values (1 unless the rope type says so) */
  bm_op act;                 /* MLP activation (hidden_act) */
  bm_llm_cache *cache;       /* weights shared by the module's graphs */
};

/* ---- weights */

/* A matmul weight in L->wdt / a norm or bias weight in f32. */
bm_node *bm_llm_w(bm_llm *L, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
bm_node *bm_llm_w32(bm_llm *L, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A weight added to activations (a bias) in L->adt. */
bm_node *bm_llm_wa(bm_llm *L, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Rows [begin, begin + count) of the 2-D checkpoint tensor `name`
 * (rows, cols), as a weight of its own (fused qkv / gate_up split at build
 * time), in L->wdt. */
bm_node *bm_llm_w_rows(bm_llm *L, const char *name, int64_t rows, int64_t cols, int64_t begin,
                       int64_t count);
/* The same for a tensor made of `groups` equal row groups (e.g. heads):
 * rows [begin, begin + count) of every group, concatenated. */
bm_node *bm_llm_w_group_rows(bm_llm *L, const char *name, int64_t rows, int64_t cols, int64_t groups,
                             int64_t begin, int64_t count);
/* The experts' 2-D tensors printf(fmt, layer, e, part) for e < n, each
 * (r, c), stacked into one (n, r, c) weight in L->wdt. */
bm_node *bm_llm_w_stack(bm_llm *L, const char *fmt, int layer, const char *part, int n, int64_t r,
                        int64_t c);

/* ---- blocks */

/* RMSNorm over the last dim with weight `name` (dim) (Gemma: 1 + w). */
bm_node *bm_llm_norm(bm_llm *L, bm_node *x, int64_t dim, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Attention of one layer (self-attention, causal). */
typedef struct bm_llm_attn {
  bm_node *wq, *wk, *wv, *wo;  /* (heads*hd, hidden), (kv*hd, hidden) x2, (hidden, heads*hd) */
  bm_node *bq, *bk, *bv, *bo;  /* biases or NULL */
  bm_node *q_norm, *k_norm;    /* per-head RMSNorm weights (hd) or NULL (Qwen3) */
  float scale;                 /* 0 = 1/sqrt(hd) */
  int window;                  /* sliding window, 0 = none */
  float softcap;               /* 0 = none */
} bm_llm_attn;
/* x (batch, seq, hidden) -> (batch, seq, hidden) (o_proj applied) */
bm_node *bm_llm_attention(bm_llm *L, bm_node *x, int l, const bm_llm_attn *a);

/* Multi-head latent attention (DeepSeek-V2). */
typedef struct bm_llm_mla {
  bm_node *wq_a, *q_a_norm;    /* (q_lora, hidden), (q_lora); NULL: q from x directly */
  bm_node *wq_nope, *wq_pe;    /* (heads*nope, in), (heads*rope, in): q_b_proj / q_proj split per head */
  bm_node *w_lat, *w_kpe;      /* (kv_lora, hidden), (rope, hidden): kv_a_proj_with_mqa split */
  bm_node *kv_a_norm;          /* (kv_lora) */
  bm_node *w_uk;               /* (heads, nope, kv_lora): the key part of kv_b_proj */
  bm_node *w_uv;               /* (heads, v, kv_lora): its value part */
  bm_node *wo;                 /* (hidden, heads*v) */
  float scale;                 /* softmax scale */
} bm_llm_mla;
bm_node *bm_llm_mla_attention(bm_llm *L, bm_node *x, int l, const bm_llm_mla *a);
/* kv_b_proj (heads*(nope+v), kv_lora) split per head into w_uk and w_uv. */
void bm_llm_split_kv_b(bm_llm *L, const char *name, bm_node **w_uk, bm_node **w_uv);

/* hidden_act name -> op: silu, gelu_pytorch_tanh / gelu_new / gelu_fast
 * (tanh approximation), gelu (erf). */
bm_status bm_llm_act(const bm_hf_config *c, bm_op *op);

/* Gated MLP: down(act(gate(x)) * up(x)); act SILU or GELU_TANH. */
bm_node *bm_llm_mlp(bm_llm *L, bm_node *x, bm_node *wg, bm_node *wu, bm_node *wd, bm_op act);

/* Routed experts. gates come from the router logits:
 *   softmax_first = false (Mixtral): softmax over the top-k logits;
 *   softmax_first = true (DeepSeek): softmax over all, keep the top k,
 *     renormalize if `renorm`, times `scale`. */
typedef struct bm_llm_moe {
  bm_node *router;             /* (experts, hidden) */
  int experts, top_k;
  bool softmax_first, renorm;
  float scale;
  bm_node *w_gate, *w_up;      /* (experts, ffn, hidden) */
  bm_node *w_down;             /* (experts, hidden, ffn) */
  bm_op act;
} bm_llm_moe;
bm_node *bm_llm_moe_block(bm_llm *L, bm_node *x, const bm_llm_moe *m);

/* YaRN's magnitude scale: 0.1 * mscale * ln(factor) + 1 (1 if factor <= 1). */
double bm_llm_yarn_mscale(double factor, double mscale);

/* The model-wide build: forward, prefill and decode for config c. */
bm_status bm_llm_build(bm_module *m, bm_weight_source *src, const bm_model_options *o,
                       const bm_hf_config *c, const bm_llm_arch *arch);

/* The families (one file each). */
extern const bm_llm_arch bm_llm_arch_llama, bm_llm_arch_mistral, bm_llm_arch_qwen2,
    bm_llm_arch_qwen3, bm_llm_arch_gemma2, bm_llm_arch_phi3, bm_llm_arch_mixtral,
    bm_llm_arch_deepseek_v2;
/* By config.json model_type; NULL if unsupported. */
const bm_llm_arch *bm_llm_arch_find(const char *model_type);
/* "llama, mistral, ..." */
const char *bm_llm_supported(void);

#endif
