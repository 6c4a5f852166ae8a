/* opcheck.c - see opcheck.h */
#include "opcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

bm_status bm_opcheck_random_inputs(const bm_graph *g, const int64_t *syms, uint64_t seed,
                                   bm_tensor *inputs) {
  int64_t symv[BM_MAX_SYMS];
  for (int i = 0; i < g->nsyms; i++) symv[i] = syms ? syms[i] : g->syms[i].max;
  for (int i = 0; i < g->ninputs; i++) {
    const bm_node *n = g->inputs[i];
    int64_t shape[BM_MAX_DIMS];
    for (int d = 0; d < n->ndim; d++) shape[d] = bm_dim_eval(n->shape[d], symv);
    BM_RETURN_IF_ERROR(bm_tensor_alloc(&inputs[i], n->dtype, n->ndim, shape));
    int64_t cnt = bm_tensor_numel(&inputs[i]);
    uint64_t st = seed * 7919 + (uint64_t)i;
    for (int64_t j = 0; j < cnt; j++) {
      /* i32/i64 inputs are indices (gather, positions, lengths): small; i8/i4
       * inputs are quantized weights: their full range */
      if (n->dtype == BM_DTYPE_I32 || n->dtype == BM_DTYPE_I64)
        bm_store_f32(inputs[i].data, n->dtype, j, (float)(bm_test_rand_u64(&st) % 4));
      else if (n->dtype == BM_DTYPE_I8)
        bm_store_f32(inputs[i].data, n->dtype, j, (float)((int)(bm_test_rand_u64(&st) % 256) - 128));
      else if (n->dtype == BM_DTYPE_I4)
        bm_store_f32(inputs[i].data, n->dtype, j, (float)((int)(bm_test_rand_u64(&st) % 16) - 8));
      else
        bm_store_f32(inputs[i].data, n->dtype, j, bm_test_rand_uniform(&st, -1.f, 1.f));
    }
  }
  return NULL;
}

bm_status bm_opcheck(bm_graph *g, const bm_tensor *inputs, const bm_opcheck_options *o,
                     double *err) {
  bm_opcheck_options def = {.fuse = true};
  if (!o) o = &def;
  *err = INFINITY;
  int nout = g->noutputs;
  bm_tensor *ref = calloc((size_t)nout, sizeof *ref);
  if (!ref) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "opcheck");
  bm_status s = bm_interp_run(g, inputs, ref);
  if (s) {
    free(ref);
    return bm_status_wrap(s, "interpreter");
  }
  char path[512];
  static int counter;
  if (o->package_path)
    snprintf(path, sizeof path, "%s", o->package_path);
  else
    snprintf(path, sizeof path, "%s/opcheck_%d.bmpk", bm_test_tmpdir(), counter++);
  bm_compile_options co;
  bm_compile_options_init(&co);
  co.passes.no_fuse = !o->fuse;
  co.passes.verify_each = true;
  if (o->target) co.target.backend = o->target;
  bm_package *pkg = NULL;
  bm_session *ses = NULL;
  /* the graph's name and inputs survive compilation */
  const char *fname = g->name;
  s = bm_compile_module(g->module, &co, path);
  if (s) goto done;
  s = bm_package_open(path, NULL, &pkg);
  if (s) goto done;
  int f;
  s = bm_package_find_function(pkg, fname, &f);
  if (s) goto done;
  bm_session_options so = {.threads = o->threads};
  s = bm_session_create(pkg, &so, &ses);
  if (s) goto done;
  for (int i = 0; i < g->ninputs && !s; i++)
    s = bm_session_set_input(ses, f, i, inputs[i].data, inputs[i].dtype, inputs[i].ndim,
                             inputs[i].shape);
  if (s) goto done;
  s = bm_session_run(ses, f);
  if (s) goto done;
  double worst = 0;
  for (int i = 0; i < nout && !s; i++) {
    const void *data;
    bm_tensor_info info;
    s = bm_session_get_output(ses, f, i, &data, &info);
    if (s) break;
    int64_t cnt = bm_tensor_numel(&ref[i]);
    if (info.ndim != ref[i].ndim || info.dtype != ref[i].dtype) {
      s = bm_status_make(BM_ERR_INTERNAL, "output %d: rank/dtype differ from the interpreter", i);
      break;
    }
    for (int d = 0; d < info.ndim; d++)
      if (info.shape[d] != ref[i].shape[d]) {
        s = bm_status_make(BM_ERR_INTERNAL, "output %d: dim %d is %lld, interpreter %lld", i, d,
                           (long long)info.shape[d], (long long)ref[i].shape[d]);
        break;
      }
    if (s) break;
    float *a = malloc(sizeof(float) * (size_t)(cnt ? cnt : 1));
    float *b = malloc(sizeof(float) * (size_t)(cnt ? cnt : 1));
    if (!a || !b) {
      free(a);
      free(b);
      s = bm_status_make(BM_ERR_OUT_OF_MEMORY, "opcheck");
      break;
    }
    for (int64_t j = 0; j < cnt; j++) {
      a[j] = bm_load_f32(data, info.dtype, j);
      b[j] = bm_load_f32(ref[i].data, ref[i].dtype, j);
    }
    double e = bm_test_rel_err(a, b, cnt);
    if (isnan(e) || isnan(worst) || e > worst) worst = isnan(worst) ? worst : e;
    free(a);
    free(b);
  }
  if (!s) *err = worst;
done:
  bm_session_destroy(ses);
  bm_package_close(pkg);
  for (int i = 0; i < nout; i++) bm_tensor_free(&ref[i]);
  free(ref);
  return s;
}
