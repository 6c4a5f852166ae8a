/* test_cuda_move_source.c - which CUDA kernel the SD 1.5 UNet's movement nodes
 * get (codegen/clike/emit_movement.c): the vector copy, the tiled transpose,
 * the vector concat and upsample at the UNet's f16 shapes, the element-wise
 * fallback where they do not fit, and BM_CUDA_MOVE=old. Source text only (no
 * NVRTC, no GPU: test_ops_cuda compiles and runs the kernels). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../codegen/clike/clike.h"
#include "../passes/passes.h"
#include "cuda_source.h"
#include "testutil.h"

#define F16 BM_DTYPE_F16
#define F32 BM_DTYPE_F32

typedef enum { MV_PERM, MV_SLICE2, MV_CONCAT1, MV_UP } mv_kind;

/* the CUDA source of one movement of an input x; caller frees */
static char *mv_source(mv_kind kind, bm_dtype t, int nd, const int64_t *shape, const int *perm, int64_t begin,
                       int64_t end) {
  bm_module *m = bm_module_create("mv");
  bm_graph *g = bm_graph_create(m, "main");
  bm_node *x = bm_input(g, "x", t, nd, shape), *y = NULL;
  switch (kind) {
    case MV_PERM: y = bm_permute(g, x, perm); break;
    case MV_SLICE2: y = bm_slice(g, x, nd - 1, begin, end, 1); break;
    case MV_CONCAT1: y = bm_concat(g, 2, (bm_node *[]){x, bm_input(g, "x2", t, nd, shape)}, 1); break;
    case MV_UP: y = bm_upsample_nearest(g, x, 2); break;
  }
  bm_output_add(g, "y", y);
  char *src = bm_test_cuda_source(m, g);
  bm_module_destroy(m);
  return src;
}

static bool has(const char *src, const char *s) { return src && strstr(src, s); }

#define VEC16 "/* a strided copy of 16-byte vectors"
#define TILED "/* (B, R, C) -> (B, C, R): 64 x 64 tiles"
#define CAT16 "/* concat of 16-byte vectors"
#define UP2 "/* 2x nearest"

static void test_unet_shapes(void) {
  struct {
    mv_kind kind;
    bm_dtype t;
    int nd;
    int64_t shape[4];
    int perm[4];
    int64_t begin, end;
    const char *want; /* NULL: the element-wise kernel */
  } t[] = {
      /* the attention head split and merge */
      {MV_PERM, F16, 4, {2, 4096, 8, 40}, {0, 2, 1, 3}, 0, 0, VEC16},
      {MV_PERM, F16, 4, {2, 8, 4096, 40}, {0, 2, 1, 3}, 0, 0, VEC16},
      {MV_PERM, F16, 4, {2, 77, 8, 160}, {0, 2, 1, 3}, 0, 0, VEC16},
      /* the transformer's (b, C, H*W) <-> (b, H*W, C) and the NHWC conv input */
      {MV_PERM, F16, 3, {2, 320, 4096}, {0, 2, 1}, 0, 0, TILED},
      {MV_PERM, F16, 3, {2, 4096, 320}, {0, 2, 1}, 0, 0, TILED},
      {MV_PERM, F16, 4, {2, 1280, 16, 16}, {0, 2, 3, 1}, 0, 0, TILED},
      /* q / k / v and the GEGLU halves */
      {MV_SLICE2, F16, 3, {2, 4096, 2560}, {0}, 1280, 2560, VEC16},
      {MV_SLICE2, F16, 3, {2, 77, 3200}, {0}, 1600, 1920, VEC16},
      /* the skip concat and the upsampler */
      {MV_CONCAT1, F16, 4, {2, 640, 32, 32}, {0}, 0, 0, CAT16},
      {MV_UP, F16, 4, {2, 1280, 16, 16}, {0}, 0, 0, UP2},
      /* no vector fits: the element-wise kernel */
      {MV_PERM, F16, 3, {2, 12, 20}, {0, 2, 1}, 0, 0, NULL},
      {MV_PERM, F32, 3, {2, 64, 64}, {0, 2, 1}, 0, 0, NULL},
      {MV_SLICE2, F16, 3, {2, 7, 33}, {0}, 1, 8, NULL},
      {MV_UP, F16, 4, {1, 2, 3, 6}, {0}, 0, 0, NULL},
  };
  for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
    char *src = mv_source(t[i].kind, t[i].t, t[i].nd, t[i].shape, t[i].perm, t[i].begin, t[i].end);
    CHECK_MSG(src != NULL, "case %zu: no source", i);
    if (t[i].want) {
      CHECK_MSG(has(src, t[i].want), "case %zu: expected the kernel \"%s\"", i, t[i].want);
    } else {
      CHECK_MSG(!has(src, VEC16) && !has(src, TILED) && !has(src, CAT16) && !has(src, UP2) &&
                    !has(src, "a strided copy of"),
                "case %zu: expected the element-wise kernel", i);
    }
    free(src);
  }
}

/* BM_CUDA_MOVE=old: the element-wise kernels, but the NCHW -> NHWC transpose */
static void test_old_knob(void) {
  setenv("BM_CUDA_MOVE", "old", 1);
  char *a = mv_source(MV_PERM, F16, 4, (int64_t[]){2, 4096, 8, 40}, (int[]){0, 2, 1, 3}, 0, 0);
  char *b = mv_source(MV_PERM, F16, 3, (int64_t[]){2, 320, 4096}, (int[]){0, 2, 1}, 0, 0);
  char *c = mv_source(MV_PERM, F16, 4, (int64_t[]){2, 1280, 16, 16}, (int[]){0, 2, 3, 1}, 0, 0);
  unsetenv("BM_CUDA_MOVE");
  CHECK(a && !has(a, VEC16));
  CHECK(b && !has(b, TILED));
  CHECK(c && has(c, TILED));
  free(a);
  free(b);
  free(c);
}

int main(void) {
  RUN(test_unet_shapes);
  RUN(test_old_knob);
  return bm_test_finish();
}
