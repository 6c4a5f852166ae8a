/* test_codegen_dedup.c - kernel sharing in the LLVM CPU backend
 * (codegen/llvm/backend.c): repeated identical layers compile to one kernel
 * per distinct node and still match the interpreter; nodes that differ in
 * any keyed property (shape, dtype, attribute, epilogue, symbol, symbol
 * bound) get kernels of their own; builds stay byte-reproducible. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opcheck.h"
#include "testutil.h"

/* ------------------------------------------------------------------ helpers */

#define LAYERS 4
#define DIM 16

/* Weights of the layer model (borrowed by the WEIGHT nodes: static). */
static float w_norm[LAYERS][DIM], w_lin[LAYERS][DIM * DIM];

static void init_weights(void) {
  static bool done;
  if (done) return;
  done = true;
  for (int l = 0; l < LAYERS; l++) {
    bm_test_fill_uniform(w_norm[l], DIM, 100 + (uint64_t)l, 0.8f, 1.2f);
    bm_test_fill_uniform(w_lin[l], DIM * DIM, 200 + (uint64_t)l, -0.25f, 0.25f);
  }
}

/* x (seq, DIM); LAYERS times: h = rms_norm(x) @ W_l^T;
 * x = x + silu(h) + attention(h, h, h) (one head, causal). Every layer has
 * its own weights but the same kernels (attention's have scratch). */
static bm_graph *build_layers(bm_module *m, const char *name, int64_t seq_max) {
  init_weights();
  bm_graph *g = bm_graph_create(m, name);
  int seq = bm_sym_declare(g, "seq", seq_max);
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 2, (int64_t[]){BM_SYM(seq), DIM});
  for (int l = 0; l < LAYERS; l++) {
    char n1[32], n2[32];
    snprintf(n1, sizeof n1, "l%d.norm", l);
    snprintf(n2, sizeof n2, "l%d.w", l);
    bm_node *wn = bm_weight(g, n1, BM_DTYPE_F32, 1, (int64_t[]){DIM}, w_norm[l], sizeof w_norm[l]);
    bm_node *wl = bm_weight(g, n2, BM_DTYPE_F32, 2, (int64_t[]){DIM, DIM}, w_lin[l], sizeof w_lin[l]);
    bm_node *h = bm_rms_norm(g, x, wn, 1e-5f);
    h = bm_linear(g, h, wl, NULL);
    bm_node *h4 = bm_reshape(g, h, 4, (int64_t[]){1, 1, BM_SYM(seq), DIM});
    bm_node *at = bm_attention(g, h4, h4, h4, NULL, 0.f, true, 0, 0.f);
    at = bm_reshape(g, at, 2, (int64_t[]){BM_SYM(seq), DIM});
    x = bm_add(g, bm_add(g, x, bm_silu(g, h)), at);
  }
  bm_output_add(g, "y", x);
  return g;
}

/* Kernel entries of a package's manifest: total and distinct symbols, and
 * those of one op ("" = all). */
typedef struct kernel_count {
  int entries, distinct;
} kernel_count;

static kernel_count count_kernels(const char *path, const char *op) {
  kernel_count c = {0, 0};
  bm_package *pkg = NULL;
  CHECK_OK(bm_package_open(path, NULL, &pkg));
  if (!pkg) return c;
  cJSON *root = cJSON_Parse(bm_package_manifest_json(pkg));
  CHECK(root != NULL);
  const char *seen[512];
  const cJSON *fn, *k;
  cJSON_ArrayForEach(fn, cJSON_GetObjectItemCaseSensitive(root, "functions")) {
    cJSON_ArrayForEach(k, cJSON_GetObjectItemCaseSensitive(fn, "kernels")) {
      const char *sym = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(k, "symbol"));
      const char *kop = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(k, "op"));
      CHECK(sym != NULL && kop != NULL);
      if (!sym || !kop || (*op && strcmp(op, kop) != 0)) continue;
      c.entries++;
      bool dup = false;
      for (int i = 0; i < c.distinct && !dup; i++) dup = strcmp(seen[i], sym) == 0;
      if (!dup && c.distinct < 512) seen[c.distinct++] = sym;
    }
  }
  cJSON_Delete(root);
  bm_package_close(pkg);
  return c;
}

/* Compiles g's module with opcheck (fusion on/off, `threads`, symbols bound
 * to syms) into path and checks it against the interpreter. */
static void check_graph(bm_graph *g, bool fuse, int threads, const int64_t *syms,
                        const char *path) {
  CHECK_OK(bm_graph_status(g));
  if (bm_graph_status(g)) return;
  bm_tensor in[8] = {0};
  CHECK_OK(bm_opcheck_random_inputs(g, syms, 77, in));
  bm_opcheck_options o = {.fuse = fuse, .threads = threads, .package_path = path};
  double err = INFINITY;
  CHECK_OK(bm_opcheck(g, in, &o, &err));
  CHECK_MSG(err < 1e-4, "%s: relative error %g", g->name, err);
  for (int i = 0; i < g->ninputs; i++) bm_tensor_free(&in[i]);
}

static const char *tmp_path(const char *name) {
  static char p[8][512];
  static int next;
  char *s = p[next++ % 8];
  snprintf(s, 512, "%s/%s.bmpk", bm_test_tmpdir(), name);
  return s;
}

/* The kernels of g's nodes of op `op`, in graph order (at most 8). */
static int kernels_of(const bm_graph *g, bm_op op, const bm_node **out) {
  int k = 0;
  for (int i = 0; i < g->nnodes && k < 8; i++)
    if (g->nodes[i]->op == op && g->nodes[i]->kernel) out[k++] = g->nodes[i];
  return k;
}

/* ------------------------------------------------------------------ repeated layers */

static void test_layers_share(void) {
  for (int threads = 1; threads <= 2; threads++) {
    for (int fuse = 0; fuse < 2; fuse++) {
      bm_module *m = bm_module_create("layers");
      bm_graph *g = build_layers(m, "main", 8);
      const char *path = tmp_path("layers");
      int64_t seq = threads == 1 ? 8 : 5; /* also bound below the max */
      check_graph(g, fuse, threads, &seq, path);

      kernel_count all = count_kernels(path, ""), mm = count_kernels(path, "matmul");
      CHECK_MSG(mm.entries == LAYERS && mm.distinct == 1, "matmul kernels %d, distinct %d",
                mm.entries, mm.distinct);
      /* every layer has the same kernels: at most one layer's worth + 1 */
      CHECK_MSG(all.entries >= LAYERS * 2 && all.distinct * LAYERS <= all.entries + LAYERS,
                "fuse %d: %d kernel entries, %d distinct", fuse, all.entries, all.distinct);

      kernel_count at = count_kernels(path, "attention");
      CHECK_MSG(at.entries == LAYERS && at.distinct == 1, "attention kernels %d, distinct %d",
                at.entries, at.distinct);

      /* nodes sharing a kernel got its task space and scratch too */
      int shared_scratch = 0;
      for (int i = 0; i < g->nnodes; i++)
        for (int j = 0; j < i; j++) {
          const bm_node *a = g->nodes[i], *b = g->nodes[j];
          if (!a->kernel || !b->kernel || strcmp(a->kernel, b->kernel) != 0) continue;
          CHECK(a->op == b->op && a->scratch == b->scratch &&
                memcmp(&a->tasks, &b->tasks, sizeof a->tasks) == 0);
          shared_scratch += a->scratch > 0;
        }
      CHECK(shared_scratch > 0);
      bm_module_destroy(m);
    }
  }
}

/* Sharing is off with BM_CG_NO_SHARE=1: one kernel per node, same results. */
static void test_no_share_env(void) {
  setenv("BM_CG_NO_SHARE", "1", 1);
  bm_module *m = bm_module_create("layers");
  bm_graph *g = build_layers(m, "main", 8);
  const char *path = tmp_path("noshare");
  check_graph(g, true, 1, NULL, path);
  kernel_count all = count_kernels(path, "");
  CHECK_MSG(all.entries == all.distinct && all.entries >= LAYERS * 2, "%d entries, %d distinct",
            all.entries, all.distinct);
  bm_module_destroy(m);
  unsetenv("BM_CG_NO_SHARE");
}

/* Two compiles of the same module are byte-identical (kernel names are
 * deterministic). */
static bool read_all(const char *path, unsigned char **data, long *size) {
  FILE *f = fopen(path, "rb");
  if (!f) return false;
  fseek(f, 0, SEEK_END);
  *size = ftell(f);
  fseek(f, 0, SEEK_SET);
  *data = malloc((size_t)*size + 1);
  bool ok = *data && fread(*data, 1, (size_t)*size, f) == (size_t)*size;
  fclose(f);
  return ok;
}

static void test_reproducible(void) {
  const char *p[2] = {tmp_path("repro0"), tmp_path("repro1")};
  for (int i = 0; i < 2; i++) {
    bm_module *m = bm_module_create("layers");
    build_layers(m, "prefill", 8);
    build_layers(m, "decode", 1);
    bm_compile_options co;
    bm_compile_options_init(&co);
    CHECK_OK(bm_compile_module(m, &co, p[i]));
    bm_module_destroy(m);
  }
  unsigned char *a = NULL, *b = NULL;
  long na = 0, nb = 0;
  CHECK(read_all(p[0], &a, &na) && read_all(p[1], &b, &nb));
  CHECK(na == nb && na > 0 && a && b && memcmp(a, b, (size_t)na) == 0);
  free(a);
  free(b);
}

/* ------------------------------------------------------------------ differing nodes */

typedef void (*pair_fn)(bm_graph *g);

static void pair_same(bm_graph *g) { /* control: identical relus share */
  bm_node *a = bm_input(g, "a", BM_DTYPE_F32, 2, (int64_t[]){4, 8});
  bm_node *b = bm_input(g, "b", BM_DTYPE_F32, 2, (int64_t[]){4, 8});
  bm_output_add(g, "ya", bm_unary(g, BM_OP_RELU, a));
  bm_output_add(g, "yb", bm_unary(g, BM_OP_RELU, b));
}
static void pair_shape(bm_graph *g) {
  bm_node *a = bm_input(g, "a", BM_DTYPE_F32, 2, (int64_t[]){4, 8});
  bm_node *b = bm_input(g, "b", BM_DTYPE_F32, 2, (int64_t[]){4, 9});
  bm_output_add(g, "ya", bm_unary(g, BM_OP_RELU, a));
  bm_output_add(g, "yb", bm_unary(g, BM_OP_RELU, b));
}
static void pair_bcast_shape(bm_graph *g) { /* same output shape, inputs broadcast differently */
  bm_node *a = bm_input(g, "a", BM_DTYPE_F32, 2, (int64_t[]){4, 8});
  bm_node *r = bm_input(g, "r", BM_DTYPE_F32, 2, (int64_t[]){1, 8});
  bm_node *c = bm_input(g, "c", BM_DTYPE_F32, 2, (int64_t[]){4, 1});
  bm_output_add(g, "ya", bm_add(g, a, r));
  bm_output_add(g, "yb", bm_add(g, a, c));
}
static void pair_out_dtype(bm_graph *g) {
  bm_node *a = bm_input(g, "a", BM_DTYPE_F32, 2, (int64_t[]){4, 8});
  bm_output_add(g, "ya", bm_cast(g, a, BM_DTYPE_F16));
  bm_output_add(g, "yb", bm_cast(g, a, BM_DTYPE_BF16));
}
static void pair_in_dtype(bm_graph *g) {
  bm_node *a = bm_input(g, "a", BM_DTYPE_F16, 2, (int64_t[]){4, 8});
  bm_node *b = bm_input(g, "b", BM_DTYPE_BF16, 2, (int64_t[]){4, 8});
  bm_output_add(g, "ya", bm_cast(g, a, BM_DTYPE_F32));
  bm_output_add(g, "yb", bm_cast(g, b, BM_DTYPE_F32));
}
static void pair_attr_axis(bm_graph *g) {
  bm_node *a = bm_input(g, "a", BM_DTYPE_F32, 2, (int64_t[]){8, 8});
  bm_output_add(g, "ya", bm_softmax(g, a, 0));
  bm_output_add(g, "yb", bm_softmax(g, a, 1));
}
static void pair_attr_eps(bm_graph *g) { /* a float attribute */
  bm_node *a = bm_input(g, "a", BM_DTYPE_F32, 2, (int64_t[]){4, 8});
  bm_output_add(g, "ya", bm_rms_norm(g, a, NULL, 1e-5f));
  bm_output_add(g, "yb", bm_rms_norm(g, a, NULL, 0.5f));
}
static void pair_epilogue(bm_graph *g) { /* matmul + relu vs matmul + silu, fused */
  init_weights();
  bm_node *a = bm_input(g, "a", BM_DTYPE_F32, 2, (int64_t[]){4, DIM});
  bm_node *w0 = bm_weight(g, "w0", BM_DTYPE_F32, 2, (int64_t[]){DIM, DIM}, w_lin[0], sizeof w_lin[0]);
  bm_node *w1 = bm_weight(g, "w1", BM_DTYPE_F32, 2, (int64_t[]){DIM, DIM}, w_lin[1], sizeof w_lin[1]);
  bm_output_add(g, "ya", bm_unary(g, BM_OP_RELU, bm_linear(g, a, w0, NULL)));
  bm_output_add(g, "yb", bm_silu(g, bm_linear(g, a, w1, NULL)));
}
static void pair_sym(bm_graph *g) { /* same bound, different symbols */
  int s = bm_sym_declare(g, "s", 8), t = bm_sym_declare(g, "t", 8);
  bm_node *a = bm_input(g, "a", BM_DTYPE_F32, 2, (int64_t[]){BM_SYM(s), 8});
  bm_node *b = bm_input(g, "b", BM_DTYPE_F32, 2, (int64_t[]){BM_SYM(t), 8});
  bm_output_add(g, "ya", bm_unary(g, BM_OP_RELU, a));
  bm_output_add(g, "yb", bm_unary(g, BM_OP_RELU, b));
}
static void pair_sym_static(bm_graph *g) { /* a symbol vs a static dim of its bound */
  int s = bm_sym_declare(g, "s", 4);
  bm_node *a = bm_input(g, "a", BM_DTYPE_F32, 2, (int64_t[]){BM_SYM(s), 8});
  bm_node *b = bm_input(g, "b", BM_DTYPE_F32, 2, (int64_t[]){4, 8});
  bm_output_add(g, "ya", bm_unary(g, BM_OP_RELU, a));
  bm_output_add(g, "yb", bm_unary(g, BM_OP_RELU, b));
}

typedef struct pair_case {
  const char *name;
  pair_fn build;
  bm_op op;       /* the probed nodes' op (after the passes) */
  bool fuse;
  bool share;     /* expected: one kernel for both */
} pair_case;

static void test_pairs(void) {
  static const pair_case cases[] = {
      {"same", pair_same, BM_OP_RELU, false, true},
      {"shape", pair_shape, BM_OP_RELU, false, false},
      {"bcast_shape", pair_bcast_shape, BM_OP_ADD, false, false},
      {"out_dtype", pair_out_dtype, BM_OP_CAST, false, false},
      {"in_dtype", pair_in_dtype, BM_OP_CAST, false, false},
      {"attr_axis", pair_attr_axis, BM_OP_SOFTMAX, false, false},
      {"attr_eps", pair_attr_eps, BM_OP_RMS_NORM, false, false},
      {"epilogue", pair_epilogue, BM_OP_MATMUL, true, false},
      {"sym", pair_sym, BM_OP_RELU, false, false},
      {"sym_static", pair_sym_static, BM_OP_RELU, false, false},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    const pair_case *pc = &cases[c];
    bm_module *m = bm_module_create(pc->name);
    bm_graph *g = bm_graph_create(m, "main");
    pc->build(g);
    int64_t syms[2] = {3, 5}; /* bound below the max */
    check_graph(g, pc->fuse, 1, g->nsyms ? syms : NULL, tmp_path(pc->name));
    const bm_node *k[8];
    int nk = kernels_of(g, pc->op, k);
    CHECK_MSG(nk == 2, "%s: %d %s kernels", pc->name, nk, bm_op_name(pc->op));
    if (nk == 2) {
      bool shared = strcmp(k[0]->kernel, k[1]->kernel) == 0;
      CHECK_MSG(shared == pc->share, "%s: kernels %s and %s", pc->name, k[0]->kernel, k[1]->kernel);
      if (pc->op == BM_OP_MATMUL) /* the epilogues really were fused */
        CHECK_MSG(k[0]->a.prog.n > 0 && k[1]->a.prog.n > 0, "%s: no epilogue", pc->name);
    }
    bm_module_destroy(m);
  }
}

/* ------------------------------------------------------------------ across graphs */

/* relu of x (s, 8) in graphs a (s <= 8), b (s <= 16), c (s <= 8): the
 * bound is keyed (emitters read it), so a and c share, b does not. */
static void build_relu(bm_module *m, const char *name, int64_t max) {
  bm_graph *g = bm_graph_create(m, name);
  int s = bm_sym_declare(g, "s", max);
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 2, (int64_t[]){BM_SYM(s), 8});
  bm_output_add(g, "y", bm_unary(g, BM_OP_RELU, x));
}

static void test_across_graphs(void) {
  static const char *const names[3] = {"a", "b", "c"};
  for (int run = 0; run < 3; run++) { /* each graph checked against the interpreter once */
    bm_module *m = bm_module_create("graphs");
    build_relu(m, "a", 8);
    build_relu(m, "b", 16);
    build_relu(m, "c", 8);
    bm_graph *g = bm_module_find_graph(m, names[run]);
    CHECK(g != NULL);
    if (!g) {
      bm_module_destroy(m);
      return;
    }
    check_graph(g, false, 2, NULL, tmp_path("graphs"));
    const bm_node *k[3][8];
    int nk[3];
    for (int i = 0; i < 3; i++) nk[i] = kernels_of(m->graphs[i], BM_OP_RELU, k[i]);
    CHECK(nk[0] == 1 && nk[1] == 1 && nk[2] == 1);
    if (nk[0] == 1 && nk[1] == 1 && nk[2] == 1) {
      CHECK_MSG(strcmp(k[0][0]->kernel, k[2][0]->kernel) == 0, "a %s, c %s", k[0][0]->kernel,
                k[2][0]->kernel);
      CHECK_MSG(strcmp(k[0][0]->kernel, k[1][0]->kernel) != 0, "a %s, b %s", k[0][0]->kernel,
                k[1][0]->kernel);
    }
    bm_module_destroy(m);
  }
}

int main(void) {
  RUN(test_layers_share);
  RUN(test_no_share_env);
  RUN(test_reproducible);
  RUN(test_pairs);
  RUN(test_across_graphs);
  return bm_test_finish();
}
