/* test_output_argmax.c - bm_session_output_argmax (the greedy decoder's
 * per-row argmax, bm_runtime.h) on a CPU package: agrees with
 * bm_sample_argmax on ties, NaN and -inf rows, leaves the output readable,
 * and rejects misuse with clear errors. (On a GPU session the same call runs
 * the prelude's device kernel; bm_cuda_check --llm compares the two.) */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../compiler/compile.h"
#include "../runtime/sample.h"
#include "testutil.h"

enum { ROWS = 5, V = 37 };

/* main(x: (n, V) f32, n <= 8) -> y = x + 0 (f32), i = x (i32 cast) */
static const char *build(void) {
  static char path[512];
  snprintf(path, sizeof path, "%s/argmax.bmpk", bm_test_tmpdir());
  bm_module *m = bm_module_create("argmax");
  bm_graph *g = bm_graph_create(m, "main");
  int n = bm_sym_declare(g, "n", 8);
  int64_t xs[2] = {BM_SYM(n), V};
  bm_node *x = bm_input(g, "x", BM_DTYPE_F32, 2, xs);
  bm_output_add(g, "y", bm_add(g, x, bm_scalar(g, 0.0f)));
  bm_output_add(g, "i", bm_cast(g, x, BM_DTYPE_I32));
  bm_compile_options o;
  bm_compile_options_init(&o);
  o.target.opt_level = 1;
  bm_status s = bm_graph_status(g);
  if (!s) s = bm_compile_module(m, &o, path);
  bm_module_destroy(m);
  CHECK_OK(s);
  return s ? NULL : path;
}

static void test_rows(void) {
  const char *path = build();
  if (!path) return;
  bm_package *pkg = NULL;
  bm_session *ses = NULL;
  CHECK_OK(bm_package_open(path, NULL, &pkg));
  CHECK_OK(bm_session_create(pkg, NULL, &ses));
  if (!ses) {
    bm_package_close(pkg);
    return;
  }
  float x[ROWS][V];
  for (int r = 0; r < ROWS; r++)
    for (int j = 0; j < V; j++) x[r][j] = (float)((r * 7 + j * 13) % 23) - 11.0f;
  x[0][3] = 50.0f;                       /* a clear maximum */
  x[1][5] = x[1][9] = 40.0f;             /* a tie: the lower index wins */
  x[2][0] = NAN, x[2][30] = 60.0f;       /* NaN never wins */
  for (int j = 0; j < V; j++) x[3][j] = -INFINITY; /* all -inf: index 0 */
  x[3][7] = NAN;
  x[4][V - 1] = INFINITY;                /* +inf at the end */
  int64_t shape[2] = {ROWS, V};
  CHECK_OK(bm_session_set_input(ses, 0, 0, x, BM_DTYPE_F32, 2, shape));
  int32_t ids[8] = {-1, -1, -1, -1, -1, -1, -1, -1};
  CHECK_ERR(bm_session_output_argmax(ses, 0, 0, ids, 8), BM_ERR_INVALID_ARGUMENT, "has not been run");
  CHECK_OK(bm_session_run(ses, 0));
  CHECK_OK(bm_session_output_argmax(ses, 0, 0, ids, 8));
  int want[ROWS] = {3, 5, 30, 0, V - 1};
  for (int r = 0; r < ROWS; r++) {
    CHECK(ids[r] == want[r]);
    CHECK(ids[r] == bm_sample_argmax(x[r], V));
  }
  CHECK(ids[ROWS] == -1); /* nothing written past the rows */
  /* the output stays readable */
  const void *d = NULL;
  bm_tensor_info info;
  CHECK_OK(bm_session_get_output(ses, 0, 0, &d, &info));
  CHECK(d && ((const float *)d)[3] == 50.0f);
  /* misuse */
  CHECK_ERR(bm_session_output_argmax(ses, 0, 0, ids, ROWS - 1), BM_ERR_INVALID_ARGUMENT, "room for 4");
  CHECK_ERR(bm_session_output_argmax(ses, 0, 1, ids, 8), BM_ERR_INVALID_ARGUMENT, "argmax needs f32");
  CHECK_ERR(bm_session_output_argmax(ses, 0, 2, ids, 8), BM_ERR_INVALID_ARGUMENT, "out of range");
  CHECK_ERR(bm_session_output_argmax(ses, 5, 0, ids, 8), BM_ERR_INVALID_ARGUMENT, NULL);
  CHECK_ERR(bm_session_output_argmax(ses, 0, 0, NULL, 8), BM_ERR_INVALID_ARGUMENT, NULL);
  CHECK_ERR(bm_session_output_argmax(NULL, 0, 0, ids, 8), BM_ERR_INVALID_ARGUMENT, NULL);
  bm_session_destroy(ses);
  bm_package_close(pkg);
}

int main(void) {
  RUN(test_rows);
  return bm_test_finish();
}
