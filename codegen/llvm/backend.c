/* backend.c - the LLVM CPU backend: one kernel per node of every graph,
 * emitted into one LLVM module, verified, optimized (new pass manager) and
 * compiled to an ELF relocatable object.
 *
 * Debugging: BM_DUMP_LLVM=path writes the optimized module as LLVM IR
 * (also the unoptimized one to path.pre.ll), BM_DUMP_ASM=path.s its assembly. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    /* STATE: a source; MOE: lowered to MOE_UP + MOE_DOWN by the lower_moe pass */
};
_Static_assert(BM_OP_COUNT == 56, "a new op needs a row in the cpu backend's emitter table");

/* Is every instruction of prog an elementwise op the math helpers implement? */
static bool prog_ok(const bm_prog *p, int nin_expected) {
  if (p->n > BM_MAX_PROG || p->nin < 1 || p->nin > BM_MAX_IN) return false;
  if (nin_expected >= 0 && p->nin != nin_expected) return false;
  for (int j = 0; j < p->n; j++) {
    const bm_prog_ins *in = &p->ins[j];
    if (in->op >= BM_OP_COUNT || in->op == BM_OP_CAST || in->op == BM_OP_FUSED) return false;
    unsigned fl = bm_op_table[in->op].flags;
    if (!(fl & BM_OPF_EW) || !(fl & (BM_OPF_UNARY | BM_OPF_BINARY))) return false;
    if (in->a >= p->nin + j) return false;
    if ((fl & BM_OPF_BINARY) && !(in->flags & BM_PROG_IMM_B) && in->b >= p->nin + j) return false;
  }
  return true;
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

/* Emits the kernels of graph gi into cg's module. */
static bm_status emit_graph(bm_cg *cg, bm_module *m, int gi) {
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
    char symbol[128];
    snprintf(symbol, sizeof symbol, "bm_k%d_%d_%s", gi, n->id, bm_op_name(n->op));
    n->kernel = bm_arena_strdup(m->arena, symbol);
    if (!n->kernel) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "cpu backend: kernel name");
    n->tasks = (bm_task_expr){-1, 0, 1, 1, 1};
    n->scratch = 0;
    bm_status s = emit(cg, n, symbol);
    if (s) return bm_status_wrap(s, "function '%s' node %d (%s)", g->name, n->id, bm_op_name(n->op));
  }
  return NULL;
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
  for (int gi = 0; !s && gi < m->ngraphs; gi++) s = emit_graph(&cg, m, gi);

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
