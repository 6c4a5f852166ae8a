/* backend.c - the LLVM CPU backend: one kernel per distinct node of every
 * graph, emitted into one LLVM module, verified, optimized (new pass
 * manager) and compiled to an ELF relocatable object.
 *
 * Kernel sharing: nodes whose kernels would be identical (same canonical
 * key: everything an emitter reads, see kernel_key) share one kernel, named
 * after the first such node in module order, so repeated layers are
 * generated, optimized and emitted once.
 *
 * Debugging: BM_DUMP_LLVM=path writes the optimized module as LLVM IR
 * (also the unoptimized one to path.pre.ll), BM_DUMP_ASM=path.s its
 * assembly; BM_CG_NO_SHARE=1 turns kernel sharing off (one kernel per node);
 * BM_CG_TIME=1 prints the kernel counts and the time of each phase. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include "cg.h"

/* The emitter of each op; NULL = no kernel (sources) or unsupported. */
static const bm_cg_emit_fn emitters[BM_OP_COUNT] = {
    [BM_OP_NEG] = bm_cg_emit_elementwise,
    [BM_OP_ABS] = bm_cg_emit_elementwise,
    [BM_OP_EXP] = bm_cg_emit_elementwise,
    [BM_OP_LOG] = bm_cg_emit_elementwise,
    [BM_OP_SQRT] = bm_cg_emit_elementwise,
    [BM_OP_RSQRT] = bm_cg_emit_elementwise,
    [BM_OP_RECIP] = bm_cg_emit_elementwise,
    [BM_OP_SQUARE] = bm_cg_emit_elementwise,
    [BM_OP_SIN] = bm_cg_emit_elementwise,
    [BM_OP_COS] = bm_cg_emit_elementwise,
    [BM_OP_TANH] = bm_cg_emit_elementwise,
    [BM_OP_ERF] = bm_cg_emit_elementwise,
    [BM_OP_SIGMOID] = bm_cg_emit_elementwise,
    [BM_OP_RELU] = bm_cg_emit_elementwise,
    [BM_OP_SILU] = bm_cg_emit_elementwise,
    [BM_OP_GELU] = bm_cg_emit_elementwise,
    [BM_OP_GELU_TANH] = bm_cg_emit_elementwise,
    [BM_OP_QUICK_GELU] = bm_cg_emit_elementwise,
    [BM_OP_CAST] = bm_cg_emit_elementwise,
    [BM_OP_ADD] = bm_cg_emit_elementwise,
    [BM_OP_SUB] = bm_cg_emit_elementwise,
    [BM_OP_MUL] = bm_cg_emit_elementwise,
    [BM_OP_DIV] = bm_cg_emit_elementwise,
    [BM_OP_POW] = bm_cg_emit_elementwise,
    [BM_OP_MAX] = bm_cg_emit_elementwise,
    [BM_OP_MIN] = bm_cg_emit_elementwise,
    [BM_OP_MATMUL] = bm_cg_emit_matmul,
    [BM_OP_CONV2D] = bm_cg_emit_conv2d,
    [BM_OP_DEQUANT] = bm_cg_emit_movement,
    [BM_OP_QMATMUL] = bm_cg_emit_matmul,
    [BM_OP_RESHAPE] = bm_cg_emit_movement,
    [BM_OP_PERMUTE] = bm_cg_emit_movement,
    [BM_OP_SLICE] = bm_cg_emit_movement,
    [BM_OP_CONCAT] = bm_cg_emit_movement,
    [BM_OP_GATHER] = bm_cg_emit_movement,
    [BM_OP_PAD] = bm_cg_emit_movement,
    [BM_OP_UPSAMPLE] = bm_cg_emit_movement,
    [BM_OP_SUM] = bm_cg_emit_reduce,
    [BM_OP_MEAN] = bm_cg_emit_reduce,
    [BM_OP_REDUCE_MAX] = bm_cg_emit_reduce,
    [BM_OP_SOFTMAX] = bm_cg_emit_reduce,
    [BM_OP_LAYER_NORM] = bm_cg_emit_norm,
    [BM_OP_GROUP_NORM] = bm_cg_emit_norm,
    [BM_OP_RMS_NORM] = bm_cg_emit_norm,
    [BM_OP_ROPE] = bm_cg_emit_rope,
    [BM_OP_ATTENTION] = bm_cg_emit_attention,
    [BM_OP_FUSED] = bm_cg_emit_elementwise,
    [BM_OP_KV_WRITE] = bm_cg_emit_llm,
    [BM_OP_TOPK_MASK] = bm_cg_emit_llm,
    [BM_OP_MOE_UP] = bm_cg_emit_llm,
    [BM_OP_MOE_DOWN] = bm_cg_emit_llm,
    [BM_OP_TAKE_ROW] = bm_cg_emit_llm,
    /* STATE: a source; MOE: lowered to MOE_UP + MOE_DOWN by the lower_moe pass;
     * MATMUL_GLU, RMS_MATMUL: not here (fuse_horizontal makes them only where supported) */
};
_Static_assert(BM_OP_COUNT == 59, "a new op needs a row in the cpu backend's emitter table");

/* Is every instruction of prog an elementwise op the math helpers implement? */
static bool prog_ok(const bm_prog *p, int nin_expected) {
  if (nin_expected >= 0 && p->nin != nin_expected) return false;
  bm_status s = bm_prog_check(p, p->nin, "program");
  bool ok = s == NULL;
  bm_status_free(s);
  return ok;
}

static bool is_movement(bm_op op) {
  return op == BM_OP_RESHAPE || op == BM_OP_PERMUTE || op == BM_OP_SLICE || op == BM_OP_CONCAT ||
         op == BM_OP_GATHER || op == BM_OP_PAD || op == BM_OP_UPSAMPLE;
}

static int cpu_supports(const bm_node *n) {
  if ((unsigned)n->op >= BM_OP_COUNT || !emitters[n->op]) return 0;
  if (is_movement(n->op)) {
    /* raw copies: any dtype but packed i4 */
    if (n->dtype == BM_DTYPE_I4) return 0;
    for (int i = 0; i < n->nin; i++)
      if (n->op != BM_OP_GATHER || i == 0)
        if (n->in[i]->dtype == BM_DTYPE_I4) return 0;
    return 1;
  }
  if (n->op == BM_OP_KV_WRITE) /* raw row copies (or float conversion): any dtype but i4 */
    return n->dtype != BM_DTYPE_I4 && n->in[1]->dtype != BM_DTYPE_I4 &&
           (n->dtype == n->in[1]->dtype || bm_cg_dtype_storable(n->dtype));
  if (!bm_cg_dtype_storable(n->dtype)) return 0;
  if (n->op == BM_OP_CONV2D && n->a.layout != BM_CONV_NCHW) return 0; /* NHWC: the CUDA TMA conv only */
  for (int i = 0; i < n->nin; i++)
    if (!n->in[i] || !bm_cg_dtype_loadable(n->in[i]->dtype)) return 0;
  if (n->op == BM_OP_FUSED && !prog_ok(&n->a.prog, n->nin)) return 0;
  if ((bm_op_table[n->op].flags & BM_OPF_EPILOGUE) && n->a.prog.n > 0 &&
      !prog_ok(&n->a.prog, -1))
    return 0;
  return 1;
}

static void cg_init_types(bm_cg *cg) {
  LLVMContextRef c = cg->ctx;
  cg->t_void = LLVMVoidTypeInContext(c);
  cg->t_i1 = LLVMInt1TypeInContext(c);
  cg->t_i8 = LLVMInt8TypeInContext(c);
  cg->t_i16 = LLVMInt16TypeInContext(c);
  cg->t_i32 = LLVMInt32TypeInContext(c);
  cg->t_i64 = LLVMInt64TypeInContext(c);
  cg->t_f16 = LLVMHalfTypeInContext(c);
  cg->t_bf16 = LLVMBFloatTypeInContext(c);
  cg->t_f32 = LLVMFloatTypeInContext(c);
  cg->t_f64 = LLVMDoubleTypeInContext(c);
  cg->t_ptr = LLVMPointerTypeInContext(c, 0);
  LLVMTypeRef params[5] = {cg->t_ptr, cg->t_ptr, cg->t_i64, cg->t_i64, cg->t_ptr};
  cg->t_kernel = LLVMFunctionType(cg->t_void, params, 5, 0);
}

static void dump_env(bm_cg *cg, const char *env, const char *suffix) {
  const char *p = getenv(env);
  if (!p || !*p) return;
  char path[1024];
  snprintf(path, sizeof path, "%s%s", p, suffix);
  bm_status s = bm_cg_dump_module(cg, path);
  if (s) {
    fprintf(stderr, "bm: %s\n", bm_status_message(s));
    bm_status_free(s);
  }
}

/* ------------------------------------------------------------------ kernel sharing */

/* A canonical key is a byte string that holds everything an emitter reads
 * of a node (cg.h; checked by grepping every emitter in codegen/llvm/):
 *   - op, dtype, shape, input count, the attributes the op reads
 *     (bm_op_info.attrs, compared like CSE does: floats bitwise) and the
 *     fused program / epilogue (only the fields bm_cg_prog reads);
 *   - each input's dtype and shape (epilogue operands included);
 *   - for every symbolic dim: symbol index, mul, add and the symbol's max
 *     (bm_cg_dim_max reads the graph's bounds), so kernels are shared across
 *     the graphs of a module only where the bounds agree.
 * The target (cg->vec, has_fma, cpu, features) is the same for every node
 * of one compile, and the table lives for one compile, so it is not keyed.
 * No emitter reads constant data, names, storage or ids (except in error
 * messages), so those are not keyed either. */
#define KEY_MAX 4096

typedef struct key_buf {
  unsigned char b[KEY_MAX];
  size_t n;
  bool overflow; /* the key did not fit: the node is not shared */
} key_buf;

static void key_put(key_buf *k, const void *p, size_t size) {
  if (k->n + size > KEY_MAX) {
    k->overflow = true;
    return;
  }
  memcpy(k->b + k->n, p, size);
  k->n += size;
}
static void key_i32(key_buf *k, int32_t v) { key_put(k, &v, sizeof v); }
static void key_i64(key_buf *k, int64_t v) { key_put(k, &v, sizeof v); }
static void key_u8(key_buf *k, uint8_t v) { key_put(k, &v, sizeof v); }

static void key_shape(key_buf *k, const bm_graph *g, bm_dtype dt, int ndim, const bm_dim *shape) {
  key_i32(k, (int32_t)dt);
  key_i32(k, (int32_t)ndim);
  for (int d = 0; d < ndim && d < BM_MAX_DIMS; d++) {
    bm_dim x = shape[d];
    if (bm_dim_is_static(x)) {
      key_i32(k, (int32_t)-1);
      key_i64(k, x.add);
    } else {
      int64_t max = x.sym < g->nsyms ? g->syms[x.sym].max : 0;
      key_i32(k, (int32_t)x.sym);
      key_i64(k, x.add);
      key_i32(k, (int32_t)x.mul);
      key_i64(k, max);
    }
  }
}

static void key_prog(key_buf *k, const bm_prog *p) {
  key_u8(k, (uint8_t)p->n);
  if (p->n == 0) return;
  key_u8(k, (uint8_t)p->nin);
  for (int j = 0; j < p->n && j < BM_MAX_PROG; j++) {
    const bm_prog_ins *in = &p->ins[j];
    key_u8(k, in->op);
    key_u8(k, in->a);
    key_u8(k, in->flags);
    bool binary = in->op < BM_OP_COUNT && (bm_op_table[in->op].flags & BM_OPF_BINARY);
    if (binary && (in->flags & BM_PROG_IMM_B)) key_put(k, &in->imm, sizeof in->imm);
    if (binary && !(in->flags & BM_PROG_IMM_B)) key_u8(k, in->b);
  }
}

static void key_attrs(key_buf *k, const bm_node *n) {
  const bm_attrs *a = &n->a;
  unsigned m = bm_op_table[n->op].attrs;
#define PUT(f) key_put(k, &a->f, sizeof a->f)
  if (m & BM_ATTR_TRANS) PUT(trans_a), PUT(trans_b);
  if (m & BM_ATTR_CONV) PUT(stride), PUT(pad), PUT(dilation), PUT(groups);
  if (m & BM_ATTR_PERM) PUT(perm);
  if (m & BM_ATTR_SLICE) PUT(axis), PUT(begin), PUT(end), PUT(step);
  if (m & BM_ATTR_AXIS) PUT(axis);
  if (m & BM_ATTR_PAD) PUT(pads), PUT(value);
  if (m & BM_ATTR_SCALE) PUT(scale);
  if (m & BM_ATTR_AXES) PUT(axes), PUT(keepdim);
  if (m & BM_ATTR_EPS) PUT(eps);
  if (m & BM_ATTR_GROUPS) PUT(groups);
  if (m & BM_ATTR_ROPE) PUT(rope_mode);
  if (m & BM_ATTR_ATTN) PUT(attn_scale), PUT(causal), PUT(window), PUT(softcap), PUT(attn_flags);
  if (m & BM_ATTR_TOPK) PUT(topk), PUT(fill);
  if (m & BM_ATTR_ACT) PUT(act);
#undef PUT
  if ((m & BM_ATTR_PROG) || (bm_op_table[n->op].flags & BM_OPF_EPILOGUE)) key_prog(k, &a->prog);
}

/* The canonical key of node n of graph g; false if it does not fit. */
static bool kernel_key(key_buf *k, const bm_graph *g, const bm_node *n) {
  k->n = 0;
  k->overflow = false;
  key_i32(k, (int32_t)n->op);
  key_shape(k, g, n->dtype, n->ndim, n->shape);
  key_i32(k, (int32_t)n->nin);
  for (int i = 0; i < n->nin; i++) key_shape(k, g, n->in[i]->dtype, n->in[i]->ndim, n->in[i]->shape);
  key_attrs(k, n);
  return !k->overflow;
}

/* The kernels emitted so far, by key (chained hash table; keys compared in
 * full). Entries and keys live in `arena`; the bucket array is malloc'd. */
typedef struct share_entry share_entry;
struct share_entry {
  uint64_t hash;
  size_t len;
  const unsigned char *key;
  const bm_node *owner; /* the node whose kernel it is (kernel, tasks, scratch) */
  share_entry *next;
};

typedef struct share_table {
  bm_arena *arena;
  share_entry **buckets;
  size_t nbuckets, count;
  int emitted; /* kernels emitted (shared or not) */
  bool off;    /* BM_CG_NO_SHARE */
  key_buf key; /* the key of the node being emitted */
} share_table;

static share_entry *share_find(const share_table *t, uint64_t h, const key_buf *k) {
  if (!t->buckets) return NULL;
  for (share_entry *e = t->buckets[h & (t->nbuckets - 1)]; e; e = e->next)
    if (e->hash == h && e->len == k->n && memcmp(e->key, k->b, k->n) == 0) return e;
  return NULL;
}

static bm_status share_add(share_table *t, uint64_t h, const key_buf *k, const bm_node *owner) {
  if (t->count >= t->nbuckets) { /* grow: keep the load factor <= 1 */
    size_t nb = t->nbuckets ? 2 * t->nbuckets : 256;
    share_entry **b = calloc(nb, sizeof *b);
    if (!b) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "cpu backend: kernel table of %zu buckets", nb);
    for (size_t i = 0; i < t->nbuckets; i++)
      for (share_entry *e = t->buckets[i], *next; e; e = next) {
        next = e->next;
        e->next = b[e->hash & (nb - 1)];
        b[e->hash & (nb - 1)] = e;
      }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = nb;
  }
  share_entry *e = bm_arena_alloc(t->arena, sizeof *e);
  unsigned char *key = bm_arena_alloc(t->arena, k->n ? k->n : 1);
  if (!e || !key) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "cpu backend: kernel table entry");
  memcpy(key, k->b, k->n);
  e->hash = h;
  e->len = k->n;
  e->key = key;
  e->owner = owner;
  e->next = t->buckets[h & (t->nbuckets - 1)];
  t->buckets[h & (t->nbuckets - 1)] = e;
  t->count++;
  return NULL;
}

/* Emits the kernels of graph gi into cg's module. */
static bm_status emit_graph(bm_cg *cg, bm_module *m, int gi, share_table *share) {
  bm_graph *g = m->graphs[gi];
  cg->graph = g;
  cg->graph_index = gi;
  for (int i = 0; i < g->nnodes; i++) {
    bm_node *n = g->nodes[i];
    n->kernel = NULL;
    if (!bm_node_needs_kernel(n)) continue;
    bm_cg_emit_fn emit = (unsigned)n->op < BM_OP_COUNT ? emitters[n->op] : NULL;
    if (!emit || !cpu_supports(n))
      return bm_status_make(BM_ERR_UNSUPPORTED,
                            "cpu backend: function '%s' node %d (%s, %s): not supported", g->name,
                            n->id, bm_op_name(n->op), bm_dtype_name(n->dtype));
    /* an identical kernel already emitted: share it */
    key_buf *key = &share->key;
    bool keyed = !share->off && kernel_key(key, g, n);
    uint64_t h = keyed ? XXH3_64bits(key->b, key->n) : 0;
    const share_entry *e = keyed ? share_find(share, h, key) : NULL;
    if (e) {
      n->kernel = e->owner->kernel;
      n->tasks = e->owner->tasks;
      n->scratch = e->owner->scratch;
      continue;
    }
    char symbol[128];
    snprintf(symbol, sizeof symbol, "bm_k%d_%d_%s", gi, n->id, bm_op_name(n->op));
    n->kernel = bm_arena_strdup(m->arena, symbol);
    if (!n->kernel) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "cpu backend: kernel name");
    n->tasks = (bm_task_expr){-1, 0, 1, 1, 1};
    n->scratch = 0;
    bm_status s = emit(cg, n, symbol);
    share->emitted++;
    if (s) return bm_status_wrap(s, "function '%s' node %d (%s)", g->name, n->id, bm_op_name(n->op));
    if (keyed) BM_RETURN_IF_ERROR(share_add(share, h, key, n));
  }
  return NULL;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bool env_on(const char *name) {
  const char *v = getenv(name);
  return v && *v && strcmp(v, "0") != 0;
}

static bm_status cpu_compile(bm_module *m, const bm_target *t, bm_object *out) {
  if (!m || !out) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "cpu backend: NULL argument");
  memset(out, 0, sizeof *out);
  bm_cg cg;
  memset(&cg, 0, sizeof cg);
  cg.target = t;
  cg.ctx = LLVMContextCreate();
  cg.mod = LLVMModuleCreateWithNameInContext(m->name ? m->name : "bm", cg.ctx);
  cg.b = LLVMCreateBuilderInContext(cg.ctx);
  cg_init_types(&cg);

  bm_status s = bm_cg_target_init(&cg, t, out);
  if (!s) {
    char *triple = LLVMGetTargetMachineTriple(cg.tm);
    LLVMSetTarget(cg.mod, triple);
    LLVMDisposeMessage(triple);
    LLVMTargetDataRef dl = LLVMCreateTargetDataLayout(cg.tm);
    LLVMSetModuleDataLayout(cg.mod, dl);
    LLVMDisposeTargetData(dl);
  }
  bool timing = env_on("BM_CG_TIME");
  double t0 = timing ? now_s() : 0, t_emit = 0, t_opt = 0, t_obj = 0;
  share_table share = {0};
  share.off = env_on("BM_CG_NO_SHARE");
  share.arena = s ? NULL : bm_arena_create();
  if (!s && !share.arena) s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "cpu backend: kernel table arena");
  for (int gi = 0; !s && gi < m->ngraphs; gi++) s = emit_graph(&cg, m, gi, &share);
  if (timing) {
    int nodes = 0;
    for (int gi = 0; gi < m->ngraphs; gi++)
      for (int i = 0; i < m->graphs[gi]->nnodes; i++) nodes += m->graphs[gi]->nodes[i]->kernel != NULL;
    fprintf(stderr, "bm cpu backend: %d kernel nodes, %d kernels emitted%s\n", nodes, share.emitted,
            share.off ? " (sharing off)" : "");
    t_emit = now_s();
  }
  free(share.buckets);
  if (share.arena) bm_arena_destroy(share.arena);

  char *msg = NULL;
  if (!s && LLVMVerifyModule(cg.mod, LLVMReturnStatusAction, &msg)) {
    dump_env(&cg, "BM_DUMP_LLVM", ".bad.ll");
    s = bm_status_make(BM_ERR_INTERNAL, "cpu backend: generated LLVM IR is invalid: %.600s",
                       msg ? msg : "?");
  }
  LLVMDisposeMessage(msg);

  if (!s) {
    dump_env(&cg, "BM_DUMP_LLVM", ".pre.ll");
    int opt = t ? t->opt_level : 3;
    if (opt < 0) opt = 0;
    if (opt > 3) opt = 3;
    char pipeline[32];
    snprintf(pipeline, sizeof pipeline, "default<O%d>", opt);
    LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
    LLVMErrorRef e = LLVMRunPasses(cg.mod, pipeline, cg.tm, po);
    LLVMDisposePassBuilderOptions(po);
    if (timing) t_opt = now_s();
    if (e) {
      char *em = LLVMGetErrorMessage(e);
      s = bm_status_make(BM_ERR_INTERNAL, "cpu backend: LLVM passes failed: %s", em);
      LLVMDisposeErrorMessage(em);
    }
  }
  if (!s) {
    dump_env(&cg, "BM_DUMP_LLVM", "");
    dump_env(&cg, "BM_DUMP_ASM", "");
    LLVMMemoryBufferRef buf = NULL;
    char *em = NULL;
    if (LLVMTargetMachineEmitToMemoryBuffer(cg.tm, cg.mod, LLVMObjectFile, &em, &buf)) {
      s = bm_status_make(BM_ERR_INTERNAL, "cpu backend: object emission failed: %s", em ? em : "?");
      LLVMDisposeMessage(em);
    } else {
      size_t size = LLVMGetBufferSize(buf);
      out->data = malloc(size ? size : 1);
      if (!out->data) {
        s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "cpu backend: %zu bytes of object code", size);
      } else {
        memcpy(out->data, LLVMGetBufferStart(buf), size);
        out->size = size;
      }
      LLVMDisposeMemoryBuffer(buf);
    }
    if (timing) {
      t_obj = now_s();
      fprintf(stderr, "bm cpu backend: emit %.2f s, verify+optimize %.2f s, object code %.2f s\n",
              t_emit - t0, t_opt - t_emit, t_obj - t_opt);
    }
  }

  LLVMDisposeBuilder(cg.b);
  LLVMDisposeModule(cg.mod);
  if (cg.tm) LLVMDisposeTargetMachine(cg.tm);
  LLVMContextDispose(cg.ctx);
  if (s) bm_object_free(out);
  return s;
}

const bm_backend bm_backend_cpu = {
    .name = "cpu",
    .supports = cpu_supports,
    .compile = cpu_compile,
};
