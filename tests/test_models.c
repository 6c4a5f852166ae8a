/* test_models.c - the built-in model end to end: compiled (fused and not)
 * against the reference interpreter, weights loaded from a checkpoint, and
 * the errors for missing and mismatched weights. */
#include <stdlib.h>
#include <string.h>

#include "../models/models.h"
#include "../runtime/safetensors.h"
#include "opcheck.h"
#include "testutil.h"

static void check_tiny(bool fuse, int threads, const char *weights) {
  bm_model_options mo = {.weights = weights, .max_batch = 3};
  bm_module *m;
  bm_weight_source *src;
  CHECK_OK(bm_model_build("tiny", &mo, &m, &src));
  if (!m) return;
  bm_graph *g = m->graphs[0];
  int64_t syms[1] = {2}; /* batch 2 of at most 3 */
  bm_tensor in[1] = {0};
  CHECK_OK(bm_opcheck_random_inputs(g, syms, 7, in));
  double err = 1;
  bm_opcheck_options oo = {.fuse = fuse, .threads = threads};
  CHECK_OK(bm_opcheck(g, in, &oo, &err));
  CHECK_MSG(err < 1e-4, "tiny fuse=%d threads=%d: rel err %g", fuse, threads, err);
  bm_tensor_free(&in[0]);
  bm_module_destroy(m);
  bm_weight_source_close(src);
}

static void test_tiny_fused(void) { check_tiny(true, 2, NULL); }
static void test_tiny_unfused(void) { check_tiny(false, 1, NULL); }

/* Writes tiny's generated weights to a safetensors file, optionally
 * dropping or reshaping one tensor. */
static char *export_tiny(const char *file, const char *drop, const char *reshape) {
  static char path[512];
  snprintf(path, sizeof path, "%s/%s", bm_test_tmpdir(), file);
  bm_module *m;
  bm_weight_source *src;
  bm_status s = bm_model_build("tiny", NULL, &m, &src);
  CHECK_OK(s);
  if (!m) return path;
  bm_graph *g = m->graphs[0];
  bm_tensor_info infos[256];
  const void *datas[256];
  int n = 0;
  for (int i = 0; i < g->nnodes && n < 256; i++) {
    bm_node *w = g->nodes[i];
    if (w->op != BM_OP_WEIGHT || (drop && !strcmp(w->name, drop))) continue;
    memset(&infos[n], 0, sizeof infos[n]);
    infos[n].name = w->name;
    infos[n].dtype = w->dtype;
    infos[n].ndim = w->ndim;
    for (int d = 0; d < w->ndim; d++) infos[n].shape[d] = w->shape[d].add;
    if (reshape && !strcmp(w->name, reshape)) { /* same bytes, other shape */
      infos[n].ndim = 1;
      infos[n].shape[0] = (int64_t)(w->data_size / 4);
    }
    datas[n++] = w->data;
  }
  CHECK_OK(bm_st_write(path, n, infos, datas, NULL));
  bm_module_destroy(m);
  bm_weight_source_close(src);
  return path;
}

static void test_tiny_from_checkpoint(void) {
  check_tiny(true, 2, export_tiny("tiny.safetensors", NULL, NULL));
}

static void test_missing_weight(void) {
  const char *p = export_tiny("tiny_missing.safetensors", "blocks.1.mlp.fc2.weight", NULL);
  bm_model_options mo = {.weights = p};
  bm_module *m;
  bm_weight_source *src;
  CHECK_ERR(bm_model_build("tiny", &mo, &m, &src), BM_ERR_NOT_FOUND, "blocks.1.mlp.fc2.weight");
  CHECK(m == NULL);
}

static void test_wrong_shape_weight(void) {
  const char *p = export_tiny("tiny_shape.safetensors", NULL, "head.weight");
  bm_model_options mo = {.weights = p};
  bm_module *m;
  bm_weight_source *src;
  CHECK_ERR(bm_model_build("tiny", &mo, &m, &src), BM_ERR_INVALID_ARGUMENT, "head.weight");
}

static void test_unknown_model(void) {
  bm_module *m;
  bm_weight_source *src;
  CHECK_ERR(bm_model_build("gpt-17", NULL, &m, &src), BM_ERR_NOT_FOUND, "unknown model 'gpt-17'");
}

int main(void) {
  RUN(test_tiny_fused);
  RUN(test_tiny_unfused);
  RUN(test_tiny_from_checkpoint);
  RUN(test_missing_weight);
  RUN(test_wrong_shape_weight);
  RUN(test_unknown_model);
  return bm_test_finish();
}
