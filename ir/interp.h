/* interp.h - the reference interpreter: plain C, f32 accumulation.
 *
 * It evaluates any verified graph, fused or not, one node at a time, and is
 * the oracle that every backend is tested against. Each node's value is
 * stored in the node's dtype (so f16/bf16 rounding matches compiled code);
 * floating math is done in f32 (accumulations in f32, some in double where
 * noted), integers as int64.
 */
#ifndef BM_INTERP_H
#define BM_INTERP_H

#include "ir.h"

/* A host tensor: contiguous, row-major. */
typedef struct bm_tensor {
  bm_dtype dtype;
  int ndim;
  int64_t shape[BM_MAX_DIMS];
  void *data;
} bm_tensor;

int64_t bm_tensor_numel(const bm_tensor *t);
size_t bm_tensor_nbytes(const bm_tensor *t);
/* Allocates data (zeroed) for the given dtype/shape. */
bm_status bm_tensor_alloc(bm_tensor *t, bm_dtype dtype, int ndim, const int64_t *shape);
void bm_tensor_free(bm_tensor *t); /* frees data, NULL-safe */

/* Scalar conversions shared by the interpreter, tests and the runtime tools. */
float bm_f16_to_f32(uint16_t h);
uint16_t bm_f32_to_f16(float f);           /* round to nearest even */
float bm_bf16_to_f32(uint16_t h);
uint16_t bm_f32_to_bf16(float f);          /* round to nearest even */
float bm_fp8_e4m3_to_f32(uint8_t v);
uint8_t bm_f32_to_fp8_e4m3(float f);       /* saturating, nearest even */
float bm_fp8_e5m2_to_f32(uint8_t v);
uint8_t bm_f32_to_fp8_e5m2(float f);
/* Element i of a buffer of dtype t, as f32 / int64. */
float bm_load_f32(const void *p, bm_dtype t, int64_t i);
int64_t bm_load_i64(const void *p, bm_dtype t, int64_t i);
void bm_store_f32(void *p, bm_dtype t, int64_t i, float v);
/* Stores an integer: saturating for integer dtypes, via f32 for float dtypes. */
void bm_store_i64(void *p, bm_dtype t, int64_t i, int64_t v);

/* Runs g. inputs[i] feeds g->inputs[i] (dtype and rank must match; symbolic
 * dims are bound from them). outputs must have g->noutputs entries; each is
 * allocated by the interpreter (free with bm_tensor_free). Weights must be
 * bound (node->data). */
bm_status bm_interp_run(const bm_graph *g, const bm_tensor *inputs, bm_tensor *outputs);

/* STATE values kept across runs: named tensors, created zeroed the first
 * time a graph reads a state of that name (later graphs must agree on its
 * dtype and shape). KV_WRITE updates them in place, so a sequence of runs
 * (prefill, then decode steps, across graphs of one module) behaves like a
 * runtime session. bm_interp_run() uses a fresh store for each call. */
typedef struct bm_interp_states bm_interp_states;
bm_status bm_interp_states_create(bm_interp_states **out);
void bm_interp_states_destroy(bm_interp_states *st);          /* NULL-safe */
void bm_interp_states_reset(bm_interp_states *st);            /* zero every state */
const bm_tensor *bm_interp_states_find(const bm_interp_states *st, const char *name); /* borrowed, NULL if absent */
/* bm_interp_run with states read from and written to `states`. */
bm_status bm_interp_run_states(const bm_graph *g, const bm_tensor *inputs, bm_tensor *outputs,
                               bm_interp_states *states);

/* Evaluates a fused program on one element: regs[0..prog->nin-1] are the inputs. */
float bm_prog_eval(const bm_prog *prog, float *regs);
/* Scalar f32 semantics of a unary / binary elementwise op (the reference). */
float bm_ref_unary_f32(bm_op op, float x);
float bm_ref_binary_f32(bm_op op, float a, float b);

#endif
