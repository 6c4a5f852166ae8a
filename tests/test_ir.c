/* test_ir.c - the IR core: builders and shape errors for every op family,
 * symbolic dims, the text form (round trip, parse errors, mutation fuzz),
 * the verifier and the graph utilities (compact, replace_uses). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../ir/ir.h"
#include "testutil.h"

/* ------------------------------------------------------------------ helpers */

static void check_graph_err(bm_graph *g, const char *substr, int line) {
  bm_status s = bm_graph_status(g);
  if (!s) {
    fprintf(stderr, "test_ir.c:%d: expected a builder error containing '%s', got none\n", line, substr);
    bm_test_failed_checks++;
    return;
  }
  if (bm_status_code(s) != BM_ERR_INVALID_ARGUMENT || !strstr(bm_status_message(s), substr)) {
    fprintf(stderr, "test_ir.c:%d: expected invalid argument containing '%s', got %s: %s\n", line,
            substr, bm_code_name(bm_status_code(s)), bm_status_message(s));
    bm_test_failed_checks++;
  }
}

/* Common operands for the shape-error cases. */
typedef struct fixture {
  bm_node *x;    /* f32 (2, 3, 4) */
  bm_node *y;    /* f32 (5, 6) */
  bm_node *h;    /* f16 (2, 3, 4) */
  bm_node *idx;  /* i32 (2, 3) */
  bm_node *img;  /* f32 (1, 4, 8, 8) */
  bm_node *v4;   /* f32 (4) */
  bm_node *v5;   /* f32 (5) */
} fixture;

static void setup(bm_graph *g, fixture *f) {
  f->x = bm_input(g, "x", BM_DTYPE_F32, 3, (int64_t[]){2, 3, 4});
  f->y = bm_input(g, "y", BM_DTYPE_F32, 2, (int64_t[]){5, 6});
  f->h = bm_input(g, "h", BM_DTYPE_F16, 3, (int64_t[]){2, 3, 4});
  f->idx = bm_input(g, "idx", BM_DTYPE_I32, 2, (int64_t[]){2, 3});
  f->img = bm_input(g, "img", BM_DTYPE_F32, 4, (int64_t[]){1, 4, 8, 8});
  f->v4 = bm_weight(g, "v4", BM_DTYPE_F32, 1, (int64_t[]){4}, NULL, 0);
  f->v5 = bm_weight(g, "v5", BM_DTYPE_F32, 1, (int64_t[]){5}, NULL, 0);
}

/* Runs `stmt` on a fresh graph with the fixture and checks the first error. */
#define EXPECT_BUILD_ERR(substr, ...)                        \
  do {                                                       \
    bm_module *m_ = bm_module_create("t");                   \
    bm_graph *g = bm_graph_create(m_, "main");               \
    fixture f;                                               \
    setup(g, &f);                                            \
    CHECK(bm_graph_status(g) == NULL);                       \
    __VA_ARGS__;                                             \
    check_graph_err(g, substr, __LINE__);                    \
    bm_module_destroy(m_);                                   \
  } while (0)

/* The statement must build without an error. */
#define EXPECT_BUILD_OK(stmt)                                                      \
  do {                                                                             \
    bm_module *m_ = bm_module_create("t");                                         \
    bm_graph *g = bm_graph_create(m_, "main");                                     \
    fixture f;                                                                     \
    setup(g, &f);                                                                  \
    bm_node *r_ = (stmt);                                                          \
    CHECK_MSG(r_ && !bm_graph_status(g), "%s", bm_status_message(bm_graph_status(g))); \
    bm_module_destroy(m_);                                                         \
  } while (0)

static char *dump(const bm_graph *g) {
  char *t = NULL;
  bm_status s = bm_graph_to_text(g, &t);
  CHECK_MSG(s == NULL, "%s", bm_status_message(s));
  bm_status_free(s);
  return t;
}

/* ------------------------------------------------------------------ shape errors */

static void test_shape_errors(void) {
  /* elementwise */
  EXPECT_BUILD_ERR("shapes do not broadcast: a (2, 3, 4) vs b (5, 6)", bm_add(g, f.x, f.y));
  EXPECT_BUILD_ERR("add %7: dtypes differ: a f32 vs b f16", bm_add(g, f.x, f.h));
  EXPECT_BUILD_ERR("must be f32, f16 or bf16, got i32", bm_unary(g, BM_OP_EXP, f.idx));
  EXPECT_BUILD_ERR("not a unary elementwise op", bm_unary(g, BM_OP_ADD, f.x));
  EXPECT_BUILD_ERR("cannot cast f32 to i4", bm_cast(g, f.x, BM_DTYPE_I4));
  EXPECT_BUILD_OK(bm_mul(g, f.h, bm_scalar(g, 2.0f))); /* scalar const adopts f16 */
  EXPECT_BUILD_OK(bm_cast(g, f.idx, BM_DTYPE_F32));
  /* linear algebra */
  EXPECT_BUILD_ERR("matmul %7: inner dimensions differ: a (2, 3, 4) vs b (5, 6)",
                   bm_matmul(g, f.x, f.y, false, false));
  EXPECT_BUILD_ERR("rank >= 2", bm_matmul(g, f.v4, f.y, false, false));
  EXPECT_BUILD_ERR("channels do not match groups=3", {
    bm_node *w = bm_weight(g, "cw", BM_DTYPE_F32, 4, (int64_t[]){6, 2, 3, 3}, NULL, 0);
    bm_conv2d(g, f.img, w, NULL, 1, 1, 0, 0, 1, 1, 3);
  });
  EXPECT_BUILD_ERR("larger than the padded input", {
    bm_node *w = bm_weight(g, "cw", BM_DTYPE_F32, 4, (int64_t[]){6, 4, 9, 9}, NULL, 0);
    bm_conv2d(g, f.img, w, NULL, 1, 1, 0, 0, 1, 1, 1);
  });
  EXPECT_BUILD_ERR("bias (5) must be (6)", {
    bm_node *w = bm_weight(g, "cw", BM_DTYPE_F32, 4, (int64_t[]){6, 4, 3, 3}, NULL, 0);
    bm_conv2d(g, f.img, w, f.v5, 1, 1, 0, 0, 1, 1, 1);
  });
  EXPECT_BUILD_ERR("q must be i8 or i4, got f32", bm_dequant(g, f.y, f.y));
  EXPECT_BUILD_ERR("does not fit q (5, 6)", {
    bm_node *q = bm_weight(g, "q", BM_DTYPE_I8, 2, (int64_t[]){5, 6}, NULL, 0);
    bm_node *s = bm_weight(g, "s", BM_DTYPE_F32, 2, (int64_t[]){5, 4}, NULL, 0);
    bm_dequant(g, q, s);
  });
  EXPECT_BUILD_ERR("qmatmul %9: inner dimensions differ: x (2, 3, 4) vs q (5, 6)", {
    bm_node *q = bm_weight(g, "q", BM_DTYPE_I4, 2, (int64_t[]){5, 6}, NULL, 0);
    bm_node *s = bm_weight(g, "s", BM_DTYPE_F32, 2, (int64_t[]){5, 3}, NULL, 0);
    bm_qmatmul(g, f.x, q, s);
  });
  /* data movement */
  EXPECT_BUILD_ERR("cannot prove element count equal: (2, 3, 4) -> (5, 5)",
                   bm_reshape(g, f.x, 2, (int64_t[]){5, 5}));
  EXPECT_BUILD_ERR("not a permutation", bm_permute(g, f.x, (int[]){0, 0, 1}));
  EXPECT_BUILD_ERR("empty slice", bm_slice(g, f.x, 1, 2, 1, 1));
  EXPECT_BUILD_ERR("step must be >= 1", bm_slice(g, f.x, 1, 0, 2, 0));
  EXPECT_BUILD_ERR("axis 3 out of range for rank 3", bm_slice(g, f.x, 3, 0, 1, 1));
  EXPECT_BUILD_ERR("does not match input 0 (2, 3, 4) outside axis 0",
                   bm_concat(g, 2, (bm_node *[]){f.x, f.img}, 0));
  EXPECT_BUILD_ERR("input 1 is f16, input 0 is f32", bm_concat(g, 2, (bm_node *[]){f.x, f.h}, 0));
  EXPECT_BUILD_ERR("indices must be i32 or i64, got f32", bm_gather(g, f.y, f.y));
  EXPECT_BUILD_ERR("pad 1 is -1", bm_pad(g, f.y, (int64_t[]){0, -1, 0, 0}, 0.0f));
  EXPECT_BUILD_ERR("scale must be in [1, 65536], got 0", bm_upsample_nearest(g, f.img, 0));
  /* reductions and norms */
  EXPECT_BUILD_ERR("sum %7: axis 5 out of range for rank 3", bm_sum(g, f.x, 5, false));
  EXPECT_BUILD_ERR("names an axis outside", bm_reduce(g, BM_OP_MEAN, f.x, 1u << 4, false));
  EXPECT_BUILD_ERR("softmax %7: axis -4 out of range", bm_softmax(g, f.x, -4));
  EXPECT_BUILD_ERR("weight (5) must be (4)", bm_layer_norm(g, f.x, f.v5, NULL, 1e-5f));
  EXPECT_BUILD_ERR("eps must be finite", bm_rms_norm(g, f.x, f.v4, -1.0f));
  EXPECT_BUILD_ERR("divisible by groups=3", bm_group_norm(g, f.img, NULL, NULL, 3, 1e-5f));
  EXPECT_BUILD_ERR("a bias needs a weight", bm_layer_norm(g, f.x, NULL, f.v4, 1e-5f));
  /* transformer */
  EXPECT_BUILD_ERR("must be (B, S, H, D)", bm_rope(g, f.x, f.idx, f.v4, 0));
  EXPECT_BUILD_ERR("pos must be i32 or i64, got f32", {
    bm_node *x4 = bm_reshape(g, f.x, 4, (int64_t[]){2, 3, 2, 2});
    bm_rope(g, x4, f.y, f.v4, 0);
  });
  EXPECT_BUILD_ERR("with R <= D", {
    bm_node *x4 = bm_reshape(g, f.x, 4, (int64_t[]){2, 3, 1, 4});
    bm_rope(g, x4, f.idx, f.v4, 0);
  });
  EXPECT_BUILD_ERR("Hq % Hkv == 0", {
    bm_node *q = bm_input(g, "q", BM_DTYPE_F32, 4, (int64_t[]){1, 4, 5, 8});
    bm_node *k = bm_input(g, "k", BM_DTYPE_F32, 4, (int64_t[]){1, 3, 5, 8});
    bm_attention(g, q, k, k, NULL, 0, true, 0, 0);
  });
  EXPECT_BUILD_ERR("mask (1, 1, 5, 6) does not broadcast to (1, 4, 5, 7)", {
    bm_node *q = bm_input(g, "q", BM_DTYPE_F32, 4, (int64_t[]){1, 4, 5, 8});
    bm_node *k = bm_input(g, "k", BM_DTYPE_F32, 4, (int64_t[]){1, 2, 7, 8});
    bm_node *mask = bm_input(g, "mask", BM_DTYPE_F32, 4, (int64_t[]){1, 1, 5, 6});
    bm_attention(g, q, k, k, mask, 0, false, 0, 0);
  });
  /* fused programs and epilogues */
  EXPECT_BUILD_ERR("instruction 0 reads r5, only r0..r1 exist", {
    bm_attrs a = {0};
    a.prog.nin = 2;
    a.prog.n = 1;
    a.prog.ins[0] = (bm_prog_ins){.op = BM_OP_ADD, .a = 0, .b = 5};
    bm_node_make(g, BM_OP_FUSED, 2, (bm_node *[]){f.x, f.v4}, &a);
  });
  EXPECT_BUILD_ERR("'matmul' is not an elementwise unary or binary op", {
    bm_attrs a = {0};
    a.prog.nin = 1;
    a.prog.n = 1;
    a.prog.ins[0] = (bm_prog_ins){.op = BM_OP_MATMUL};
    bm_node_make(g, BM_OP_FUSED, 1, (bm_node *[]){f.x}, &a);
  });
  EXPECT_BUILD_ERR("epilogue operand 2 (3) does not broadcast to the output (2, 3, 5)", {
    bm_attrs a = {0};
    a.trans_b = 1;
    a.prog.nin = 2;
    a.prog.n = 1;
    a.prog.ins[0] = (bm_prog_ins){.op = BM_OP_ADD, .a = 0, .b = 1};
    bm_node *w = bm_weight(g, "w", BM_DTYPE_F32, 2, (int64_t[]){5, 4}, NULL, 0);
    bm_node *bias = bm_weight(g, "bias", BM_DTYPE_F32, 1, (int64_t[]){3}, NULL, 0);
    bm_node_make(g, BM_OP_MATMUL, 3, (bm_node *[]){f.x, w, bias}, &a);
  });
  /* sources and misuse */
  EXPECT_BUILD_ERR("duplicate input name 'x'", bm_input(g, "x", BM_DTYPE_F32, 1, (int64_t[]){1}));
  EXPECT_BUILD_ERR("names symbol 0, graph 'main' has 0 symbols",
                   bm_input(g, "z", BM_DTYPE_F32, 1, (int64_t[]){BM_SYM(0)}));
  EXPECT_BUILD_ERR("needs 16 bytes of data, got 3", {
    float d[4] = {0};
    bm_weight(g, "wd", BM_DTYPE_F32, 1, (int64_t[]){4}, d, 3);
  });
  EXPECT_BUILD_ERR("must be static", {
    int s = bm_sym_declare(g, "seq", 8);
    bm_weight(g, "wd", BM_DTYPE_F32, 1, (int64_t[]){BM_SYM(s)}, NULL, 0);
  });
  EXPECT_BUILD_ERR("needs a target dtype", bm_node_make(g, BM_OP_CAST, 1, &f.x, NULL));
  EXPECT_BUILD_ERR("takes 1 to 1 inputs, got 2",
                   bm_node_make(g, BM_OP_EXP, 2, (bm_node *[]){f.x, f.x}, NULL));
  EXPECT_BUILD_ERR("given type f16 (2, 3, 4) differs from the inferred f32 (2, 3, 4)",
                   bm_node_make_typed(g, BM_OP_EXP, 1, &f.x, NULL, BM_DTYPE_F16, 3, f.x->shape));
  /* NULL propagation: the first error stays */
  EXPECT_BUILD_ERR("matmul %7: inner dimensions differ", {
    bm_node *bad = bm_matmul(g, f.x, f.y, false, false);
    CHECK(bad == NULL);
    CHECK(bm_add(g, bad, f.x) == NULL);
    CHECK(bm_silu(g, bm_silu(g, NULL)) == NULL);
    bm_output_add(g, "out", bad);
  });
  EXPECT_BUILD_ERR("add %7: input 0 is NULL", bm_add(g, NULL, f.x));
}

/* ------------------------------------------------------------------ symbolic dims */

static void test_symbolic(void) {
  bm_module *m = bm_module_create("sym");
  bm_graph *g = bm_graph_create(m, "main");
  int seq = bm_sym_declare(g, "seq", 16);
  int bat = bm_sym_declare(g, "batch", 4);
  CHECK(seq == 0 && bat == 1);
  CHECK(bm_sym_declare(g, "seq", 3) == -1);
  bm_status_free(g->err); /* that failure was the point */
  g->err = NULL;
  CHECK(bm_sym_find(g, "batch") == 1 && bm_sym_find(g, "nope") == -1);

  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 3, (int64_t[]){BM_SYM(bat), BM_SYM(seq), 8});
  bm_node *r = bm_reshape(g, x, 2, (int64_t[]){BM_SYM(seq), -1 /* symbol 0 = seq */});
  CHECK(r == NULL); /* (batch, seq, 8) -> (seq, seq): not provable */
  check_graph_err(g, "cannot prove element count equal: (batch, seq, 8) -> (seq, seq)", __LINE__);
  bm_status_free(g->err);
  g->err = NULL;

  /* (batch, seq, 8) -> (batch, 2*seq, 4) -> (batch, seq, 2, 4) */
  bm_dim d1[3] = {bm_dim_s(bat), {0, seq, 2}, bm_dim_c(4)};
  bm_node *r1 = bm_reshape_d(g, x, 3, d1);
  bm_node *r2 = bm_reshape(g, r1, 4, (int64_t[]){BM_SYM(bat), BM_SYM(seq), 2, 4});
  CHECK(r1 && r2);
  /* slice [1:] of seq gives seq-1; concat gives 2*seq-1; pad gives +2 */
  bm_node *s = bm_slice(g, x, 1, 1, INT64_MAX, 1);
  CHECK(s && s->shape[1].sym == seq && s->shape[1].add == -1 && s->shape[1].mul == 1);
  bm_node *c = bm_concat(g, 2, (bm_node *[]){x, s}, -2);
  CHECK(c && c->shape[1].mul == 2 && c->shape[1].add == -1);
  bm_node *p = bm_pad(g, c, (int64_t[]){0, 0, 1, 1, 0, 0}, 0.0f);
  CHECK(p && p->shape[1].mul == 2 && p->shape[1].add == 1);
  /* affine dims cancel when identical on both sides */
  bm_node *r3 = bm_reshape(g, p, 2, (int64_t[]){BM_SYM(bat), 8});
  CHECK(r3 == NULL);
  check_graph_err(g, "(batch, 2*seq+1, 8) -> (batch, 8)", __LINE__);
  bm_status_free(g->err);
  g->err = NULL;
  bm_dim d4[3] = {p->shape[1], bm_dim_s(bat), bm_dim_c(8)};
  bm_node *r4 = bm_reshape_d(g, p, 3, d4);
  CHECK(r4 != NULL);
  /* broadcasting with a static 1 and with an equal symbol */
  bm_node *one = bm_input(g, "one", BM_DTYPE_F32, 3, (int64_t[]){1, BM_SYM(seq), 1});
  bm_node *sum = bm_add(g, x, one);
  CHECK(sum && bm_dim_eq(sum->shape[0], bm_dim_s(bat)) && bm_dim_eq(sum->shape[2], bm_dim_c(8)));
  /* symbolic conv needs stride 1 */
  bm_node *img = bm_input(g, "img", BM_DTYPE_F32, 4, (int64_t[]){1, 2, BM_SYM(seq), 8});
  bm_node *cw = bm_weight(g, "cw", BM_DTYPE_F32, 4, (int64_t[]){4, 2, 3, 3}, NULL, 0);
  bm_node *cv = bm_conv2d(g, img, cw, NULL, 1, 1, 1, 1, 1, 1, 1);
  CHECK(cv && bm_dim_eq(cv->shape[2], bm_dim_s(seq)) && bm_dim_eq(cv->shape[3], bm_dim_c(8)));
  CHECK(bm_graph_status(g) == NULL);
  CHECK(bm_node_numel_max(g, x) == 4 * 16 * 8);
  CHECK(bm_node_numel_max(g, p) == 4 * 33 * 8);
  char buf[96];
  CHECK(strcmp(bm_dim_str(g, p->shape[1], buf, sizeof buf), "2*seq+1") == 0);
  CHECK(strcmp(bm_dim_str(g, s->shape[1], buf, sizeof buf), "seq-1") == 0);
  bm_output_add(g, "y", r4);
  CHECK_OK(bm_graph_verify(g));
  bm_node *bad = bm_conv2d(g, img, cw, NULL, 2, 2, 1, 1, 1, 1, 1);
  CHECK(bad == NULL);
  check_graph_err(g, "needs stride 1", __LINE__);
  bm_module_destroy(m);
}

/* ------------------------------------------------------------------ every op */

/* Builds a graph that uses every op (epilogues and fused programs too). */
static bm_graph *build_all_ops(bm_module *m) {
  bm_graph *g = bm_graph_create(m, "main");
  int seq = bm_sym_declare(g, "seq", 16);
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 3, (int64_t[]){2, BM_SYM(seq), 8});
  bm_node *w = bm_weight(g, "fc.weight", BM_DTYPE_F32, 2, (int64_t[]){16, 8}, NULL, 0);
  bm_node *b = bm_weight(g, "fc.bias", BM_DTYPE_F32, 1, (int64_t[]){16}, NULL, 0);
  bm_node *w8 = bm_weight(g, "ln.weight", BM_DTYPE_F32, 1, (int64_t[]){8}, NULL, 0);
  bm_node *half = bm_scalar(g, 0.5f);
  int nout = 0;
  char name[32];
#define OUT(n) (snprintf(name, sizeof name, "o%d", nout++), bm_output_add(g, name, (n)))
  for (int op = 0; op < BM_OP_COUNT; op++) {
    unsigned fl = bm_op_table[op].flags;
    if ((fl & BM_OPF_UNARY) && op != BM_OP_CAST) OUT(bm_unary(g, (bm_op)op, x));
    if (fl & BM_OPF_BINARY) OUT(bm_binary(g, (bm_op)op, x, half));
  }
  OUT(bm_cast(g, x, BM_DTYPE_BF16));
  OUT(bm_linear(g, x, w, b));
  /* matmul with an epilogue: relu(x @ w^T + b) */
  bm_attrs ea = {0};
  ea.trans_b = 1;
  ea.prog.nin = 2;
  ea.prog.n = 2;
  ea.prog.ins[0] = (bm_prog_ins){.op = BM_OP_ADD, .a = 0, .b = 1};
  ea.prog.ins[1] = (bm_prog_ins){.op = BM_OP_RELU, .a = 2};
  OUT(bm_node_make(g, BM_OP_MATMUL, 3, (bm_node *[]){x, w, b}, &ea));
  bm_node *img = bm_input(g, "img", BM_DTYPE_F16, 4, (int64_t[]){1, 4, 8, 8});
  bm_node *cw = bm_weight(g, "conv.weight", BM_DTYPE_F16, 4, (int64_t[]){8, 2, 3, 3}, NULL, 0);
  bm_node *cb = bm_weight(g, "conv.bias", BM_DTYPE_F16, 1, (int64_t[]){8}, NULL, 0);
  OUT(bm_conv2d(g, img, cw, cb, 2, 2, 1, 1, 1, 1, 2));
  bm_node *q = bm_weight(g, "q", BM_DTYPE_I4, 2, (int64_t[]){16, 8}, NULL, 0);
  bm_node *qs = bm_weight(g, "q.scale", BM_DTYPE_F32, 2, (int64_t[]){16, 2}, NULL, 0);
  OUT(bm_dequant(g, q, qs));
  OUT(bm_qmatmul(g, x, q, qs));
  bm_node *x4 = bm_reshape(g, x, 4, (int64_t[]){2, BM_SYM(seq), 2, 4});
  OUT(bm_permute(g, x4, (int[]){0, 2, 1, 3}));
  OUT(bm_slice(g, x, 1, 1, INT64_MAX, 1));
  OUT(bm_slice(g, x, -1, -6, -1, 2));
  OUT(bm_concat(g, 2, (bm_node *[]){x, x}, 1));
  bm_node *table = bm_weight(g, "embed", BM_DTYPE_BF16, 2, (int64_t[]){100, 8}, NULL, 0);
  bm_node *ids = bm_input(g, "ids", BM_DTYPE_I32, 2, (int64_t[]){2, BM_SYM(seq)});
  OUT(bm_gather(g, table, ids));
  OUT(bm_pad(g, img, (int64_t[]){0, 0, 0, 0, 1, 2, 3, 4}, -1.25f));
  OUT(bm_upsample_nearest(g, img, 2));
  OUT(bm_sum(g, x, -1, true));
  OUT(bm_mean(g, x, 1, false));
  OUT(bm_reduce(g, BM_OP_REDUCE_MAX, x, 5u, false));
  OUT(bm_softmax(g, x, -1));
  OUT(bm_layer_norm(g, x, w8, w8, 1e-5f));
  OUT(bm_group_norm(g, img, NULL, NULL, 2, 1e-6f));
  /* rms norm with a mul epilogue reading an immediate */
  bm_attrs ra = {0};
  ra.eps = 1e-6f;
  ra.prog.nin = 1;
  ra.prog.n = 1;
  ra.prog.ins[0] = (bm_prog_ins){.op = BM_OP_MUL, .a = 0, .flags = BM_PROG_IMM_B, .imm = 0.1f};
  OUT(bm_node_make(g, BM_OP_RMS_NORM, 2, (bm_node *[]){x, w8}, &ra));
  bm_node *pos = bm_input(g, "pos", BM_DTYPE_I64, 1, (int64_t[]){BM_SYM(seq)});
  float fr[2] = {1.0f, 0.01f};
  bm_node *freqs = bm_const(g, BM_DTYPE_F32, 1, (int64_t[]){2}, fr);
  OUT(bm_rope(g, x4, pos, freqs, 1));
  bm_node *aq = bm_input(g, "q_in", BM_DTYPE_F32, 4, (int64_t[]){1, 4, BM_SYM(seq), 8});
  bm_node *ak = bm_input(g, "k_in", BM_DTYPE_F32, 4, (int64_t[]){1, 2, BM_SYM(seq), 8});
  bm_node *mask = bm_input(g, "mask", BM_DTYPE_F32, 4, (int64_t[]){1, 1, BM_SYM(seq), BM_SYM(seq)});
  OUT(bm_attention(g, aq, ak, ak, mask, 0.125f, true, 4, 30.0f));
  /* LLM generation: a cache state, a write into it, attention over it, top-k, experts */
  bm_node *kc = bm_state(g, "cache.k", BM_DTYPE_F32, 4, (int64_t[]){3, 2, 32, 8});
  bm_node *kpos = bm_input(g, "kv_pos", BM_DTYPE_I32, 1, (int64_t[]){1});
  bm_node *kw = bm_kv_write(g, kc, ak, kpos);
  bm_node *kv_len = bm_input(g, "kv_len", BM_DTYPE_I64, 1, (int64_t[]){1});
  OUT(bm_attention_kv(g, aq, kw, kw, NULL, kv_len, 0, true, 0, 0));
  OUT(bm_topk_mask(g, x, 3, -INFINITY));
  OUT(bm_take_row(g, x, bm_input(g, "last", BM_DTYPE_I32, 1, (int64_t[]){2})));
  bm_node *tok = bm_input(g, "tok", BM_DTYPE_F32, 2, (int64_t[]){BM_SYM(seq), 8});
  bm_node *gates = bm_input(g, "gates", BM_DTYPE_F32, 2, (int64_t[]){BM_SYM(seq), 4});
  bm_node *wg = bm_weight(g, "wg", BM_DTYPE_F16, 3, (int64_t[]){4, 16, 8}, NULL, 0);
  bm_node *wd = bm_weight(g, "wd", BM_DTYPE_BF16, 3, (int64_t[]){4, 8, 16}, NULL, 0);
  OUT(bm_moe(g, tok, gates, wg, wg, wd, BM_OP_GELU_TANH));
  bm_attrs ma = {0};
  ma.act = BM_OP_SILU;
  bm_node *hmoe = bm_node_make(g, BM_OP_MOE_UP, 4, (bm_node *[]){tok, gates, wg, wg}, &ma);
  OUT(bm_node_make(g, BM_OP_MOE_DOWN, 3, (bm_node *[]){hmoe, gates, wd}, NULL));
  OUT(bm_node_make(g, BM_OP_MATMUL_GLU, 3, (bm_node *[]){x, w, w}, &ma)); /* gated MLP (fuse_horizontal) */
  bm_attrs rma = {0};
  rma.eps = 1e-6f;
  OUT(bm_node_make(g, BM_OP_RMS_MATMUL, 3, (bm_node *[]){x, w8, w}, &rma)); /* rms_norm + linear (fuse_horizontal) */
  /* fused: silu(x * 0.5) - x * 3 */
  bm_attrs fa = {0};
  fa.prog.nin = 2;
  fa.prog.n = 4;
  fa.prog.ins[0] = (bm_prog_ins){.op = BM_OP_MUL, .a = 0, .b = 1};
  fa.prog.ins[1] = (bm_prog_ins){.op = BM_OP_SILU, .a = 2};
  fa.prog.ins[2] = (bm_prog_ins){.op = BM_OP_MUL, .a = 0, .flags = BM_PROG_IMM_B, .imm = 3.0f};
  fa.prog.ins[3] = (bm_prog_ins){.op = BM_OP_SUB, .a = 3, .b = 4};
  bm_node *fu = bm_node_make_typed(g, BM_OP_FUSED, 2, (bm_node *[]){x, half}, &fa, BM_DTYPE_F16, 3,
                                   x->shape);
  if (fu) fu->name = "my \"fused\"\n";
  OUT(fu);
#undef OUT
  return g;
}

static void test_all_ops_round_trip(void) {
  bm_module *m = bm_module_create("all");
  bm_graph *g = build_all_ops(m);
  CHECK_MSG(!bm_graph_status(g), "%s", bm_status_message(bm_graph_status(g)));
  CHECK_OK(bm_graph_verify(g));
  bool used[BM_OP_COUNT] = {0};
  for (int i = 0; i < g->nnodes; i++) used[g->nodes[i]->op] = true;
  for (int op = 0; op < BM_OP_COUNT; op++) CHECK_MSG(used[op], "op %s not covered", bm_op_name(op));

  char *t1 = dump(g);
  if (getenv("BM_TEST_IR_DUMP")) fputs(t1, stderr);
  CHECK(t1 && strstr(t1, "sym seq 16"));
  CHECK(t1 && strstr(t1, "= input \"x\" f32 [2, seq, 8]"));
  CHECK(t1 && strstr(t1, "{trans_a=0, trans_b=1, epi_nin=2, epi=[add r0 r1; relu r2]} : f32 [2, seq, 16]"));
  CHECK(t1 && strstr(t1, "{prog=[mul r0 r1; silu r2; mul r0 3; sub r3 r4]} : f16 [2, seq, 8] \"my \\\"fused\\\"\\x0a\""));
  CHECK(t1 && strstr(t1, "= const f32 [] {0x3f000000}"));
  CHECK(t1 && strstr(t1, "eps=1e-05"));
  CHECK(t1 && strstr(t1, "slice %0 {axis=1, begin=1, end=9223372036854775807, step=1} : f32 [2, seq-1, 8]"));
  CHECK(t1 && strstr(t1, "{axis=2, begin=2, end=7, step=2} : f32 [2, seq, 3]"));
  CHECK(t1 && strstr(t1, "[2, 2*seq, 8]"));

  bm_module *m2 = bm_module_create("parsed");
  bm_graph *g2 = NULL;
  bm_status s = bm_graph_parse(m2, t1 ? t1 : "", &g2);
  CHECK_MSG(s == NULL, "%s", bm_status_message(s));
  bm_status_free(s);
  if (g2) {
    CHECK_OK(bm_graph_verify(g2));
    char *t2 = dump(g2);
    CHECK(t1 && t2 && strcmp(t1, t2) == 0);
    if (t1 && t2 && strcmp(t1, t2) != 0) fprintf(stderr, "--- first\n%s--- second\n%s", t1, t2);
    CHECK(g2->ninputs == g->ninputs && g2->noutputs == g->noutputs && g2->nnodes == g->nnodes);
    CHECK(bm_module_find_graph(m2, "main") == g2);
    free(t2);
  }
  free(t1);
  bm_module_destroy(m2);
  bm_module_destroy(m);
}

/* ------------------------------------------------------------------ parse errors */

static void expect_parse_err(const char *text, const char *substr, int line) {
  bm_module *m = bm_module_create("p");
  bm_graph *g = NULL;
  bm_status s = bm_graph_parse(m, text, &g);
  if (!s || bm_status_code(s) != BM_ERR_INVALID_ARGUMENT || !strstr(bm_status_message(s), substr)) {
    fprintf(stderr, "test_ir.c:%d: expected parse error containing '%s', got %s\n", line, substr,
            bm_status_message(s));
    bm_test_failed_checks++;
  }
  CHECK(g == NULL && m->ngraphs == 0);
  bm_status_free(s);
  bm_module_destroy(m);
}
#define PARSE_ERR(text, substr) expect_parse_err(text, substr, __LINE__)

static void test_parse_errors(void) {
  PARSE_ERR("graph main {\n  %0 = input \"x\" f32 [2]\n  %1 = foo %0 : f32 [2]\n}\n",
            "unknown op 'foo' at line 3, column 8");
  PARSE_ERR("graph main {\n  %0 = input \"x\" f32 [2]\n  %1 exp %0 : f32 [2]\n}\n",
            "expected '=' after the node label at line 3");
  PARSE_ERR("graph main {\n  %0 = input \"x\" f32 [2]\n  %1 = exp %0 : f16 [2]\n}\n",
            "given type f16 (2) differs from the inferred f32 (2) at line 3");
  PARSE_ERR("graph main {\n  %0 = input \"x\" f32 [2]\n  %1 = exp %7 : f32 [2]\n}\n",
            "unknown node %7");
  PARSE_ERR("graph main {\n  %0 = input \"x\" f32 [seq]\n}\n", "unknown symbol 'seq'");
  PARSE_ERR("graph main {\n  sym seq 99999999999999999999999\n}\n", "number out of range");
  PARSE_ERR("graph main {\n  %0 = input \"x\" f32 [9223372036854775807, 9223372036854775807]\n}\n",
            "dim 0 of");
  PARSE_ERR("graph main {\n  %0 = input \"x\" f32 [99999999999999999999]\n}\n", "number out of range");
  PARSE_ERR("graph main {\n  %0 = input \"x\" f32 [2]\n  %0 = input \"y\" f32 [2]\n}\n",
            "must be greater than the previous one");
  PARSE_ERR("graph main {\n  %0 = input \"x\" f32 [2]\n  %1 = exp %0 {axis=1} : f32 [2]\n}\n",
            "op 'exp' has no attribute 'axis'");
  PARSE_ERR("graph main {\n  %0 = input \"x\" f32 [2]\n  %1 = softmax %0 {axis=0, axis=0} : f32 [2]\n}\n",
            "given twice");
  PARSE_ERR("graph main {\n  %0 = const f32 [2] {0x1}\n}\n", "constant has 1 data words, needs 2");
  PARSE_ERR("graph main {\n  %0 = const f32 [] {0x123456789}\n}\n", "hex word wider than 4 bytes");
  PARSE_ERR("graph main {\n  %0 = const f32 [100000000, 100000000] {0x0}\n}\n", "longer than the text");
  PARSE_ERR("graph main {\n  %0 = input \"x\" f32 [2]\n  output \"y\" %0\n  output \"y\" %0\n}\n",
            "duplicate output name 'y' at line 4");
  PARSE_ERR("graph main {\n  %0 = input \"x\\q\" f32 [2]\n}\n", "unknown escape");
  PARSE_ERR("graph main {\n  %0 = input \"x\" f32 [2]\n", "unexpected end of text");
  PARSE_ERR("graph main {\n  %0 = input \"x\" f32 [2]\n} trailing", "unexpected text after the graph");
  PARSE_ERR("graph main {\n  %0 = input \"x\" f32 [2]\n  %1 = fused %0 {prog=[add r0 r9]} : f32 [2]\n}\n",
            "reads r9");
  PARSE_ERR("graph main {\n  %0 = input \"x\" f32 [2]\n  %1 = fused %0 {prog=[matmul r0 r0]} : f32 [2]\n}\n",
            "'matmul' cannot appear in a program");
  PARSE_ERR("", "expected 'graph' at line 1, column 1");
  PARSE_ERR("graph main {\n  bogus\n}\n", "unknown statement 'bogus' (expected %N = ..., sym, output or '}') at line 2, column 3");
  PARSE_ERR("graph main {\n  %0 = input \"x\" q99 [2]\n}\n", "unknown dtype 'q99'");

  /* every strict prefix of a valid text fails cleanly */
  const char *ok = "graph main {\n  sym seq 8\n  %0 = input \"x\" f32 [2, seq]\n"
                   "  %1 = const f32 [] {0x3f800000}\n  %2 = add %0, %1 : f32 [2, seq]\n"
                   "  output \"y\" %2\n}\n";
  size_t len = strlen(ok);
  char *buf = malloc(len + 1);
  for (size_t n = 0; n + 1 < len; n++) { /* dropping only the final newline is still valid */
    memcpy(buf, ok, n);
    buf[n] = 0;
    bm_module *m = bm_module_create("p");
    bm_graph *g = NULL;
    bm_status s = bm_graph_parse(m, buf, &g);
    CHECK_MSG(s != NULL && g == NULL, "prefix of %zu bytes parsed", n);
    bm_status_free(s);
    bm_module_destroy(m);
  }
  free(buf);
  bm_module *m = bm_module_create("p");
  bm_graph *g = NULL;
  CHECK_OK(bm_graph_parse(m, ok, &g));
  CHECK(g && g->nnodes == 3 && g->ninputs == 1 && g->noutputs == 1);
  if (g) CHECK_OK(bm_graph_verify(g));
  /* a second graph with the same name in the module is refused */
  bm_graph *g2 = NULL;
  CHECK_ERR(bm_graph_parse(m, ok, &g2), BM_ERR_INVALID_ARGUMENT, "already has a graph 'main'");
  CHECK(m->ngraphs == 1);
  bm_module_destroy(m);
}

/* The example in docs/ir.md parses and prints back unchanged. */
static void test_doc_example(void) {
  const char *text =
      "graph main {\n"
      "  sym seq 16\n"
      "  %0 = input \"x\" f32 [2, seq, 8]\n"
      "  %1 = weight \"fc.weight\" f32 [16, 8]\n"
      "  %2 = weight \"fc.bias\" f32 [16]\n"
      "  %3 = const f32 [] {0x3f000000}\n"
      "  %4 = matmul %0, %1, %2 {trans_a=0, trans_b=1, epi_nin=2, epi=[add r0 r1; relu r2]} : f32 [2, seq, 16]\n"
      "  %5 = slice %0 {axis=1, begin=1, end=9223372036854775807, step=1} : f32 [2, seq-1, 8]\n"
      "  %6 = fused %0, %3 {prog=[mul r0 r1; silu r2; mul r0 3; sub r3 r4]} : f16 [2, seq, 8] \"act\"\n"
      "  %7 = rms_norm %0 {eps=1e-06, epi_nin=1, epi=[mul r0 0.1]} : f32 [2, seq, 8]\n"
      "  output \"y\" %4\n"
      "  output \"z\" %7\n"
      "}\n";
  bm_module *m = bm_module_create("doc");
  bm_graph *g = NULL;
  CHECK_OK(bm_graph_parse(m, text, &g));
  if (g) {
    CHECK_OK(bm_graph_verify(g));
    char *t = dump(g);
    CHECK(t && strcmp(t, text) == 0);
    free(t);
    /* labels need only increase; comments and spacing are free */
    bm_graph *g2 = NULL;
    CHECK_OK(bm_graph_parse(m, "graph other{ # c\n %3=input \"a\" f32[4] %9 = neg %3:f32[4]\n"
                               "output \"b\" %9}", &g2));
    char *t2 = g2 ? dump(g2) : NULL;
    CHECK(t2 && strcmp(t2, "graph other {\n  %0 = input \"a\" f32 [4]\n  %1 = neg %0 : f32 [4]\n"
                           "  output \"b\" %1\n}\n") == 0);
    free(t2);
  }
  bm_module_destroy(m);
}

/* Mutates a valid dump at random; the parser must never crash, and whatever
 * it accepts must verify and round-trip. */
static void test_parse_fuzz(void) {
  bm_module *m = bm_module_create("all");
  bm_graph *g = build_all_ops(m);
  char *text = dump(g);
  if (!text) {
    bm_module_destroy(m);
    return;
  }
  size_t len = strlen(text);
  char *buf = malloc(len + 64);
  uint64_t rng = 1234;
  static const char pool[] = "%=,:[]{}\"\\;*+-0123456789rxe_. \n#";
  int accepted = 0;
  for (int iter = 0; iter < 1500; iter++) {
    memcpy(buf, text, len + 1);
    size_t n = len;
    int edits = 1 + (int)(bm_test_rand_u64(&rng) % 3);
    for (int e = 0; e < edits; e++) {
      size_t at = (size_t)(bm_test_rand_u64(&rng) % (n ? n : 1));
      int kind = (int)(bm_test_rand_u64(&rng) % 4);
      char c = (bm_test_rand_u64(&rng) & 1) ? pool[bm_test_rand_u64(&rng) % (sizeof pool - 1)]
                                             : (char)(1 + bm_test_rand_u64(&rng) % 255);
      if (kind == 0 && n > 0) {
        buf[at] = c;
      } else if (kind == 1 && n > 0) {
        memmove(buf + at, buf + at + 1, n - at);
        n--;
      } else if (kind == 2) {
        memmove(buf + at + 1, buf + at, n - at + 1);
        buf[at] = c;
        n++;
      } else {
        n = at; /* truncate */
        buf[n] = 0;
      }
    }
    bm_module *pm = bm_module_create("fuzz");
    bm_graph *pg = NULL;
    bm_status s = bm_graph_parse(pm, buf, &pg);
    if (!s) {
      accepted++;
      CHECK_OK(bm_graph_verify(pg));
      char *t1 = dump(pg);
      bm_module *pm2 = bm_module_create("fuzz2");
      bm_graph *pg2 = NULL;
      CHECK_OK(bm_graph_parse(pm2, t1 ? t1 : "", &pg2));
      char *t2 = pg2 ? dump(pg2) : NULL;
      CHECK(t1 && t2 && strcmp(t1, t2) == 0);
      free(t1);
      free(t2);
      bm_module_destroy(pm2);
    } else {
      CHECK(pg == NULL && pm->ngraphs == 0);
      CHECK(strstr(bm_status_message(s), " at line ") != NULL);
    }
    bm_status_free(s);
    bm_module_destroy(pm);
  }
  fprintf(stderr, "  fuzz: %d of 1500 mutants parsed\n", accepted);
  CHECK(accepted > 0); /* some edits (comments, whitespace, names) are harmless */
  free(buf);
  free(text);
  bm_module_destroy(m);
}

/* ------------------------------------------------------------------ verify */

static void test_verify(void) {
  bm_module *m = bm_module_create("v");
  bm_graph *g = bm_graph_create(m, "main");
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 2, (int64_t[]){3, 4});
  bm_node *e = bm_unary(g, BM_OP_EXP, x);
  bm_node *s = bm_slice(g, e, -1, -3, INT64_MAX, 1);
  bm_node *a = bm_add(g, s, s);
  bm_output_add(g, "y", a);
  CHECK_OK(bm_graph_verify(g));
  CHECK(s && s->a.axis == 1 && s->a.begin == 1 && s->a.end == 4); /* normalized */

  /* wrong stored shape */
  a->shape[1] = bm_dim_c(5);
  CHECK_ERR(bm_graph_verify(g), BM_ERR_INVALID_ARGUMENT,
            "node %3 (add): stored type f32 (3, 5) differs from the inferred f32 (3, 3)");
  a->shape[1] = bm_dim_c(3);
  /* attribute the op does not read */
  e->a.axis = 2;
  CHECK_ERR(bm_graph_verify(g), BM_ERR_INVALID_ARGUMENT, "node %1 (exp): attributes the op does not read");
  e->a.axis = 0;
  /* slice bounds not normalized */
  s->a.begin = -3;
  CHECK_ERR(bm_graph_verify(g), BM_ERR_INVALID_ARGUMENT, "node %2 (slice): attributes are not normalized");
  s->a.begin = 1;
  /* order not topological */
  g->nodes[1] = s, g->nodes[2] = e, s->id = 1, e->id = 2;
  CHECK_ERR(bm_graph_verify(g), BM_ERR_INVALID_ARGUMENT, "does not precede its user");
  CHECK_OK(bm_graph_compact(g)); /* compaction restores the order */
  CHECK(g->nodes[1] == e && g->nodes[2] == s);
  CHECK_OK(bm_graph_verify(g));
  /* stale id */
  e->id = 7;
  CHECK_ERR(bm_graph_verify(g), BM_ERR_INVALID_ARGUMENT, "id 7 does not match its position 1");
  e->id = 1;
  /* arity */
  a->nin = 1;
  CHECK_ERR(bm_graph_verify(g), BM_ERR_INVALID_ARGUMENT, "takes 2 to 2 inputs, got 1");
  a->nin = 2;
  /* output not in the graph */
  bm_node stray = *a;
  g->outputs[0].node = &stray;
  CHECK_ERR(bm_graph_verify(g), BM_ERR_INVALID_ARGUMENT, "output 'y' is not a node of the graph");
  g->outputs[0].node = a;
  /* unnamed weight, symbol out of range */
  bm_node *w = bm_weight(g, "w", BM_DTYPE_F32, 1, (int64_t[]){3}, NULL, 0);
  w->name = NULL;
  CHECK_ERR(bm_graph_verify(g), BM_ERR_INVALID_ARGUMENT, "weight has no name");
  w->name = "w";
  x->shape[0] = bm_dim_s(3);
  CHECK_ERR(bm_graph_verify(g), BM_ERR_INVALID_ARGUMENT, "names an unknown symbol");
  x->shape[0] = bm_dim_c(3);
  /* duplicate input names */
  bm_node *x2 = bm_input(g, "x2", BM_DTYPE_F32, 1, (int64_t[]){1});
  x2->name = "x";
  CHECK_ERR(bm_graph_verify(g), BM_ERR_INVALID_ARGUMENT, "duplicate input 'x'");
  x2->name = "x2";
  CHECK_OK(bm_graph_verify(g));
  /* a recorded builder error fails verification */
  bm_sum(g, x, 9, false);
  CHECK_ERR(bm_graph_verify(g), BM_ERR_INVALID_ARGUMENT, "has a recorded builder error");
  bm_module_destroy(m);
}

/* ------------------------------------------------------------------ utilities */

static void test_compact_replace(void) {
  bm_module *m = bm_module_create("c");
  bm_graph *g = bm_graph_create(m, "main");
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 1, (int64_t[]){4});
  bm_node *unused_in = bm_input(g, "unused", BM_DTYPE_F32, 1, (int64_t[]){4});
  bm_node *a = bm_unary(g, BM_OP_EXP, x);
  bm_node *b = bm_unary(g, BM_OP_NEG, x);  /* dead */
  bm_node *c = bm_add(g, a, x);
  bm_output_add(g, "y", c);
  bm_output_add(g, "z", a);
  int *uses = bm_graph_use_counts(g);
  CHECK(uses && uses[x->id] == 3 && uses[a->id] == 2 && uses[b->id] == 0 && uses[c->id] == 1 &&
        uses[unused_in->id] == 0);
  free(uses);

  CHECK_OK(bm_graph_compact(g));
  CHECK(g->nnodes == 4); /* x, unused, a, c */
  for (int i = 0; i < g->nnodes; i++) CHECK(g->nodes[i]->id == i && g->nodes[i] != b);
  CHECK(g->nodes[1] == unused_in && g->ninputs == 2);
  CHECK_OK(bm_graph_verify(g));

  /* replace a by sqrt(x): c and output z now read the new node */
  bm_node *r = bm_unary(g, BM_OP_SQRT, x);
  bm_graph_replace_uses(g, a, r);
  CHECK(c->in[0] == r && g->outputs[1].node == r);
  /* r comes after its user c: compaction fixes the order and drops a */
  CHECK_OK(bm_graph_compact(g));
  CHECK(g->nnodes == 4);
  for (int i = 0; i < g->nnodes; i++) CHECK(g->nodes[i] != a);
  CHECK(r->id < c->id);
  CHECK_OK(bm_graph_verify(g));
  /* replacing x by f(x) does not make f read itself */
  bm_node *f = bm_unary(g, BM_OP_ABS, x);
  bm_graph_replace_uses(g, x, f);
  CHECK(f->in[0] == x && r->in[0] == f);
  CHECK_OK(bm_graph_compact(g));
  CHECK_OK(bm_graph_verify(g));
  /* a cycle is reported, not looped on */
  f->in[0] = c;
  CHECK_ERR(bm_graph_compact(g), BM_ERR_INTERNAL, "cycle");
  bm_module_destroy(m);
}

static void test_module_and_ops(void) {
  bm_op op;
  CHECK(bm_op_from_name("gelu_tanh", &op) == 0 && op == BM_OP_GELU_TANH);
  CHECK(bm_op_from_name("nope", &op) != 0);
  for (int i = 0; i < BM_OP_COUNT; i++) {
    CHECK(bm_op_from_name(bm_op_name((bm_op)i), &op) == 0 && op == (bm_op)i);
    CHECK(bm_op_table[i].min_in <= bm_op_table[i].max_in && bm_op_table[i].max_in <= BM_MAX_IN);
  }
  bm_module *m = bm_module_create("mod");
  bm_graph *a = bm_graph_create(m, "prefill"), *b = bm_graph_create(m, "decode");
  CHECK(bm_module_find_graph(m, "decode") == b && bm_module_find_graph(m, "prefill") == a);
  CHECK(bm_module_find_graph(m, "x") == NULL);
  bm_graph_fail(a, bm_status_make(BM_ERR_INVALID_ARGUMENT, "first"));
  bm_graph_fail(a, bm_status_make(BM_ERR_INTERNAL, "second"));
  CHECK(strcmp(bm_status_message(bm_graph_status(a)), "first") == 0);
  CHECK(bm_graph_status(b) == NULL);
  CHECK(bm_sym_declare(b, "1bad", 4) == -1);
  CHECK(bm_graph_status(b) != NULL);
  /* arena: alignment, zeroing, big blocks */
  for (int i = 0; i < 100; i++) {
    unsigned char *p = bm_arena_alloc(m->arena, (size_t)(i * 37 + 1));
    CHECK(p && ((uintptr_t)p & 15) == 0 && p[0] == 0);
  }
  char *big = bm_arena_alloc(m->arena, 1 << 20);
  CHECK(big && big[(1 << 20) - 1] == 0);
  CHECK(strcmp(bm_arena_strdup(m->arena, "abc"), "abc") == 0);
  bm_module_destroy(m); /* frees a's status too (ASan checks) */
  bm_module_destroy(NULL);
}

int main(void) {
  RUN(test_module_and_ops);
  RUN(test_shape_errors);
  RUN(test_symbolic);
  RUN(test_all_ops_round_trip);
  RUN(test_parse_errors);
  RUN(test_doc_example);
  RUN(test_parse_fuzz);
  RUN(test_verify);
  RUN(test_compact_replace);
  return bm_test_finish();
}
