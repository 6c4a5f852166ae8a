/* samplers_unipc.h - the UniPC (bh1/bh2, data prediction) multistep core
 * shared by the sigma-space sampler and the diffusers scheduler. */
#ifndef BM_SAMPLERS_UNIPC_H
#define BM_SAMPLERS_UNIPC_H

#include <stdint.h>

#include "bm_runtime.h"

typedef struct bm_unipc {
  int solver_order, bh2, lower_order_final;
  const double *alpha, *sigma; /* (nsteps + 1) VP alpha_t, sigma_t of each step */
  int nsteps;
  int64_t n;
  float *hist[3];              /* data predictions, oldest first */
  int nhist;
  float *spare, *last_sample;
  int have_last, this_order, lower_order_nums;
} bm_unipc;

/* bufs: 5 buffers of n floats. */
void bm_unipc_init(bm_unipc *u, int solver_order, int bh2, int lower_order_final,
                   const double *alpha, const double *sigma, int nsteps, float **bufs, int64_t n);
bm_status bm_unipc_step(bm_unipc *u, int i, const float *x0, float *sample, float *out);

#endif
