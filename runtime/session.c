/* session.c - a session runs a package's functions: one activation arena,
 * per-thread scratch, a thread pool and precomputed kernel argument arrays,
 * all allocated at create; nothing is allocated per run. */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "internal.h"
#include "sample.h"

/* What a session knows about one input of a function. Input slots are
 * never reused by the memory planner, so an input set once stays valid for
 * any number of runs (until another function takes the arena). */
typedef struct input_state {
  bool set;
  int64_t syms[BM_RT_MAX_SYMS]; /* symbol values it binds, -1 = none */
} input_state;

typedef struct fn_state {
  input_state *in;              /* per input */
  int64_t syms[BM_RT_MAX_SYMS]; /* the values of the last run */
  bool ran;
  void **bufs;                  /* kernel k's arguments at bufs + buf_start[k] */
  size_t *buf_start;
  bm_kernel_profile *profile;   /* per kernel, when profiling */
} fn_state;

struct bm_session {
  bm_package *pkg;
  const bm_device_iface *dev;
  bm_threadpool *pool;
  uint8_t *arena;
  size_t arena_size;
  uint8_t *scratch;
  size_t scratch_stride;
  uint8_t *states;            /* every state, 64-byte aligned, zeroed at create */
  size_t states_size;
  size_t *state_off;          /* per state: offset in `states` */
  int profile;
  int nthreads;
  int arena_owner;            /* function whose inputs the arena holds, -1 = none */
  fn_state *fns;
  bm_cuda_session *gpu;       /* a "cuda" package: memory and kernels live on the GPU */
};

#define INVALID(...) bm_status_make(BM_ERR_INVALID_ARGUMENT, __VA_ARGS__)

void bm_session_destroy(bm_session *s) {
  if (!s) return;
  bm_threadpool_destroy(s->pool);
  bm_cuda_session_destroy(s->gpu);
  if (s->fns)
    for (int f = 0; f < s->pkg->nfunctions; f++) {
      free(s->fns[f].in);
      free(s->fns[f].bufs);
      free(s->fns[f].buf_start);
      free(s->fns[f].profile);
    }
  free(s->fns);
  if (s->arena) s->dev->free(s->arena, s->arena_size ? s->arena_size : 64);
  if (s->scratch) s->dev->free(s->scratch, s->scratch_stride * (size_t)s->nthreads);
  if (s->states) s->dev->free(s->states, s->states_size);
  free(s->state_off);
  bm_package_close(s->pkg); /* the session's reference */
  free(s);
}

static size_t round64(uint64_t v) { return (size_t)((v + 63) & ~(uint64_t)63); }

static void *arg_ptr(bm_session *s, const bm_rt_arg *a) {
  if (a->weight >= 0) return (void *)s->pkg->weights[a->weight].data;
  if (a->state >= 0) return s->states + s->state_off[a->state];
  return s->arena + a->offset;
}

static bm_status setup_function(bm_session *s, int f) {
  const bm_rt_function *fn = &s->pkg->functions[f];
  fn_state *st = &s->fns[f];
  st->in = calloc((size_t)fn->ninputs + 1, sizeof *st->in);
  st->buf_start = calloc((size_t)fn->nkernels + 1, sizeof *st->buf_start);
  size_t nbufs = 0;
  for (int k = 0; k < fn->nkernels; k++) nbufs += (size_t)fn->kernels[k].nargs;
  st->bufs = calloc(nbufs + 1, sizeof *st->bufs);
  if (s->profile) st->profile = calloc((size_t)fn->nkernels + 1, sizeof *st->profile);
  if (!st->in || !st->buf_start || !st->bufs || (s->profile && !st->profile))
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "session for function '%s'", fn->name);
  size_t at = 0;
  for (int k = 0; k < fn->nkernels; k++) {
    const bm_rt_kernel *kr = &fn->kernels[k];
    st->buf_start[k] = at;
    for (int j = 0; j < kr->nargs; j++) st->bufs[at++] = s->gpu ? NULL : arg_ptr(s, &kr->args[j]);
    if (st->profile) {
      st->profile[k].kernel = kr->symbol;
      st->profile[k].op = kr->op;
    }
  }
  return NULL;
}

/* A session that needs more than the machine's memory (RAM + swap) gets a
 * clear error before anything is allocated, whatever the overcommit policy. */
static bm_status check_memory(const bm_package *pkg, size_t arena, size_t scratch, int threads) {
  struct sysinfo si;
  if (sysinfo(&si) != 0) return NULL;
  unsigned __int128 have = ((unsigned __int128)si.totalram + si.totalswap) * (si.mem_unit ? si.mem_unit : 1);
  unsigned __int128 need = (unsigned __int128)arena + (unsigned __int128)scratch * (unsigned)threads + pkg->state_bytes;
  if (need <= have) return NULL;
  return bm_status_make(BM_ERR_OUT_OF_MEMORY,
                        "package '%s' needs %.1f GiB for a session (arena %zu bytes, scratch %zu x %d threads, "
                        "states %" PRIu64 " bytes) but this machine has %.1f GiB of memory",
                        pkg->model, (double)need / (1 << 30), arena, scratch, threads, pkg->state_bytes,
                        (double)have / (1 << 30));
}

bm_status bm_session_create(bm_package *pkg, const bm_session_options *opts, bm_session **out) {
  if (out) *out = NULL;
  if (!pkg || !out) return INVALID("bm_session_create: NULL argument");
  int threads = opts ? opts->threads : 0;
  if (threads < 0 || threads > 1024) return INVALID("thread count %d is not in [0, 1024]", threads);
  if (threads == 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    threads = n < 1 ? 1 : n > 256 ? 256 : (int)n;
  }
  bm_session *s = calloc(1, sizeof *s);
  if (!s) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "session");
  s->pkg = pkg;
  __atomic_add_fetch(&pkg->refs, 1, __ATOMIC_ACQ_REL); /* the package lives as long as its sessions */
  s->dev = &bm_device_cpu;
  s->profile = opts && opts->profile;
  s->arena_owner = -1;
  s->nthreads = threads;
  s->arena_size = round64(pkg->arena_bytes);
  s->scratch_stride = round64(pkg->max_scratch);
  bm_status st = NULL;
  if (pkg->gpu) { /* device memory instead of the host arena, scratch, states and pool */
    st = bm_cuda_session_create(pkg, &s->gpu);
    if (!st) {
      s->fns = calloc((size_t)pkg->nfunctions, sizeof *s->fns);
      if (!s->fns) st = bm_status_make(BM_ERR_OUT_OF_MEMORY, "session");
    }
    for (int f = 0; !st && f < pkg->nfunctions; f++) st = setup_function(s, f);
    if (st) {
      bm_session_destroy(s);
      return bm_status_wrap(st, "creating a CUDA session for '%s'", pkg->model);
    }
    *out = s;
    return NULL;
  }
  st = check_memory(pkg, s->arena_size, s->scratch_stride, threads);
  if (!st) st = s->dev->alloc(s->arena_size ? s->arena_size : 64, 64, (void **)&s->arena);
  if (!st && s->scratch_stride)
    st = s->dev->alloc(s->scratch_stride * (size_t)threads, 64, (void **)&s->scratch);
  if (!st && pkg->nstates > 0) { /* all states in one zeroed block, each 64-byte aligned */
    s->state_off = calloc((size_t)pkg->nstates, sizeof *s->state_off);
    size_t at = 0;
    for (int i = 0; s->state_off && i < pkg->nstates; i++) {
      s->state_off[i] = at;
      at += round64(pkg->states[i].nbytes);
    }
    s->states_size = at ? at : 64;
    st = s->state_off ? s->dev->alloc(s->states_size, 64, (void **)&s->states)
                      : bm_status_make(BM_ERR_OUT_OF_MEMORY, "session: state table");
  }
  if (!st) st = bm_threadpool_create(threads, &s->pool);
  if (!st) {
    s->fns = calloc((size_t)pkg->nfunctions, sizeof *s->fns);
    if (!s->fns) st = bm_status_make(BM_ERR_OUT_OF_MEMORY, "session");
  }
  for (int f = 0; !st && f < pkg->nfunctions; f++) st = setup_function(s, f);
  if (st) {
    size_t arena_size = s->arena_size; /* s is freed below */
    bm_session_destroy(s);
    return bm_status_wrap(st, "creating a session for '%s' (arena %zu bytes)", pkg->model, arena_size);
  }
  *out = s;
  return NULL;
}

/* The arena is shared by all functions: binding inputs of (or running) f
 * drops the inputs and outputs of the function that used it before. */
static void take_arena(bm_session *s, int f) {
  if (s->arena_owner == f) return;
  if (s->arena_owner >= 0) {
    fn_state *old = &s->fns[s->arena_owner];
    for (int i = 0; i < s->pkg->functions[s->arena_owner].ninputs; i++) old->in[i].set = false;
    old->ran = false;
  }
  s->arena_owner = f;
}

static bm_status check_fn(bm_session *s, int f, const bm_rt_function **fn) {
  if (f < 0 || f >= s->pkg->nfunctions)
    return INVALID("function index %d out of range [0, %d)", f, s->pkg->nfunctions);
  *fn = &s->pkg->functions[f];
  return NULL;
}

bm_status bm_session_set_input(bm_session *s, int f, int i, const void *data, bm_dtype dtype, int ndim,
                               const int64_t *shape) {
  if (!s || (!shape && ndim > 0)) return INVALID("bm_session_set_input: NULL argument");
  const bm_rt_function *fn = NULL;
  BM_RETURN_IF_ERROR(check_fn(s, f, &fn));
  if (i < 0 || i >= fn->ninputs)
    return INVALID("input index %d out of range: function '%s' has %d inputs", i, fn->name, fn->ninputs);
  const bm_rt_tensor *t = &fn->inputs[i];
  if (dtype != t->dtype)
    return INVALID("input '%s' of '%s': dtype %s, expected %s", t->name, fn->name, bm_dtype_name(dtype),
                   bm_dtype_name(t->dtype));
  if (ndim != t->ndim)
    return INVALID("input '%s' of '%s': rank %d, expected %d", t->name, fn->name, ndim, t->ndim);
  int64_t bound[BM_RT_MAX_SYMS], elems = 1;
  for (int k = 0; k < BM_RT_MAX_SYMS; k++) bound[k] = -1;
  for (int d = 0; d < ndim; d++) {
    bm_rt_dim dim = t->shape[d];
    if (shape[d] < 0) return INVALID("input '%s': dimension %d is negative (%" PRId64 ")", t->name, d, shape[d]);
    if (dim.sym < 0) {
      if (shape[d] != dim.add)
        return INVALID("input '%s' of '%s': dimension %d is %" PRId64 ", expected %" PRId64, t->name, fn->name, d,
                       shape[d], dim.add);
    } else {
      const bm_rt_sym *sym = &fn->syms[dim.sym];
      int64_t v;
      if (__builtin_sub_overflow(shape[d], dim.add, &v) || v < 0 || v % dim.mul)
        return INVALID("input '%s': dimension %d is %" PRId64 ", which is not %" PRId64 "*%s%+" PRId64, t->name, d,
                       shape[d], dim.mul, sym->name, dim.add);
      v /= dim.mul;
      if (v > sym->max)
        return INVALID("input '%s': dimension %d gives %s = %" PRId64 ", above its bound %" PRId64, t->name, d,
                       sym->name, v, sym->max);
      if (bound[dim.sym] >= 0 && bound[dim.sym] != v)
        return INVALID("input '%s': dimensions disagree on %s (%" PRId64 " vs %" PRId64 ")", t->name, sym->name,
                       bound[dim.sym], v);
      bound[dim.sym] = v;
    }
    elems *= shape[d]; /* each dim is at most its planned bound: no overflow */
  }
  size_t bytes = bm_dtype_nbytes(dtype, elems);
  if (bytes > t->nbytes) return bm_status_make(BM_ERR_INTERNAL, "input '%s' overflows its arena slot", t->name);
  if (!data && bytes) return INVALID("input '%s': data is NULL", t->name);

  take_arena(s, f);
  fn_state *st = &s->fns[f];
  input_state *in = &st->in[i];
  if (s->gpu)
    BM_RETURN_IF_ERROR(bm_cuda_set_input(s->gpu, t->offset, data, bytes));
  else if (bytes)
    memmove(s->arena + t->offset, data, bytes); /* data may be a previous output */
  memcpy(in->syms, bound, sizeof bound);
  in->set = true;
  st->ran = false;
  return NULL;
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

bm_status bm_session_run(bm_session *s, int f) {
  if (!s) return INVALID("bm_session_run: NULL session");
  const bm_rt_function *fn = NULL;
  BM_RETURN_IF_ERROR(check_fn(s, f, &fn));
  fn_state *st = &s->fns[f];
  for (int i = 0; i < fn->ninputs; i++)
    if (!st->in[i].set) return INVALID("function '%s': input '%s' was not set", fn->name, fn->inputs[i].name);
  take_arena(s, f);

  /* bind the symbols from the inputs; unbound ones take their upper bound */
  for (int k = 0; k < fn->nsyms; k++) {
    int64_t v = -1;
    int from = -1;
    for (int i = 0; i < fn->ninputs; i++) {
      int64_t b = st->in[i].syms[k];
      if (b < 0) continue;
      if (v >= 0 && b != v)
        return INVALID("function '%s': input '%s' gives %s = %" PRId64 " but input '%s' gives %" PRId64, fn->name,
                       fn->inputs[i].name, fn->syms[k].name, b, fn->inputs[from].name, v);
      v = b;
      from = i;
    }
    st->syms[k] = v >= 0 ? v : fn->syms[k].max;
  }
  for (int o = 0; o < fn->noutputs; o++)
    for (int d = 0; d < fn->outputs[o].ndim; d++)
      if (bm_rt_dim_eval(fn->outputs[o].shape[d], st->syms) < 0)
        return INVALID("function '%s': these input shapes give output '%s' a negative dimension", fn->name,
                       fn->outputs[o].name);

  if (s->gpu) {
    st->ran = false;
    BM_RETURN_IF_ERROR(bm_cuda_run(s->gpu, f, st->syms, st->profile));
    st->ran = true;
    return NULL;
  }
  bm_threadpool_begin(s->pool); /* workers stay awake between the kernels */
  for (int k = 0; k < fn->nkernels; k++) {
    const bm_rt_kernel *kr = &fn->kernels[k];
    int64_t ntasks = bm_task_count(&kr->tasks, st->syms);
    double t0 = st->profile ? now_seconds() : 0;
    uint64_t bytes = 0; /* what the kernel can touch (slots at their bounds): a cost estimate */
    for (int j = 0; j < kr->nargs && bytes < BM_THREADPOOL_INLINE_BYTES; j++) bytes += kr->args[j].nbytes;
    if (bytes < BM_THREADPOOL_INLINE_BYTES && ntasks > 0) /* tiny: on this thread, as thread 0 */
      kr->fn(st->bufs + st->buf_start[k], st->syms, 0, ntasks, s->scratch);
    else
      s->dev->launch(s->pool, kr->fn, st->bufs + st->buf_start[k], st->syms, ntasks, s->scratch, s->scratch_stride);
    if (st->profile) st->profile[k].seconds = now_seconds() - t0;
  }
  bm_threadpool_end(s->pool);
  st->ran = true;
  return NULL;
}

/* Output i of function f, which must have run since its inputs were set. */
static bm_status check_output(bm_session *s, int f, int i, const bm_rt_function **fn, const fn_state **st,
                              const bm_rt_tensor **t) {
  BM_RETURN_IF_ERROR(check_fn(s, f, fn));
  if (i < 0 || i >= (*fn)->noutputs)
    return INVALID("output index %d out of range: function '%s' has %d outputs", i, (*fn)->name, (*fn)->noutputs);
  *st = &s->fns[f];
  if (!(*st)->ran) return INVALID("function '%s' has not been run since its inputs were set", (*fn)->name);
  *t = &(*fn)->outputs[i];
  return NULL;
}

bm_status bm_session_get_output(bm_session *s, int f, int i, const void **data, bm_tensor_info *info) {
  if (data) *data = NULL;
  if (info) memset(info, 0, sizeof *info);
  if (!s || !data) return INVALID("bm_session_get_output: NULL argument");
  const bm_rt_function *fn = NULL;
  const fn_state *st = NULL;
  const bm_rt_tensor *t = NULL;
  BM_RETURN_IF_ERROR(check_output(s, f, i, &fn, &st, &t));
  if (s->gpu) { /* copied into a host buffer the session owns */
    BM_RETURN_IF_ERROR(bm_cuda_get_output(s->gpu, f, i, st->syms, data));
    if (info) bm_rt_tensor_info(fn, t, st->syms, info);
    return NULL;
  }
  bm_rt_arg a = {.weight = t->weight, .offset = t->offset, .nbytes = t->nbytes, .state = t->state};
  *data = arg_ptr(s, &a);
  if (info) bm_rt_tensor_info(fn, t, st->syms, info);
  return NULL;
}

bm_status bm_session_output_argmax(bm_session *s, int f, int i, int32_t *ids, int64_t cap) {
  if (!s || !ids) return INVALID("bm_session_output_argmax: NULL argument");
  const bm_rt_function *fn = NULL;
  const fn_state *st = NULL;
  const bm_rt_tensor *t = NULL;
  BM_RETURN_IF_ERROR(check_output(s, f, i, &fn, &st, &t));
  bm_tensor_info info;
  bm_rt_tensor_info(fn, t, st->syms, &info);
  if (info.dtype != BM_DTYPE_F32 || info.ndim < 1)
    return INVALID("output '%s' is %s with %d dims: argmax needs f32 rows", t->name, bm_dtype_name(info.dtype),
                   info.ndim);
  int64_t rows = 1, n = info.shape[info.ndim - 1];
  for (int d = 0; d + 1 < info.ndim; d++) rows *= info.shape[d];
  if (rows > cap) return INVALID("output '%s' has %" PRId64 " rows but ids has room for %" PRId64, t->name, rows, cap);
  if (n < 1) return INVALID("output '%s' has empty rows", t->name);
  if (s->gpu) {
    bm_status e = bm_cuda_output_argmax(s->gpu, f, i, rows, n, ids);
    if (!e || bm_status_code(e) != BM_ERR_UNSUPPORTED) return e;
    bm_status_free(e); /* an older package without the kernel: on the host */
  }
  const void *data;
  BM_RETURN_IF_ERROR(bm_session_get_output(s, f, i, &data, NULL));
  if (n > INT32_MAX) return INVALID("output '%s': rows of %" PRId64 " values", t->name, n);
  for (int64_t r = 0; r < rows; r++) ids[r] = bm_sample_argmax((const float *)data + r * n, (int32_t)n);
  return NULL;
}

bm_status bm_session_profile(bm_session *s, int f, const bm_kernel_profile **out, int *n) {
  if (out) *out = NULL;
  if (n) *n = 0;
  if (!s || !out || !n) return INVALID("bm_session_profile: NULL argument");
  const bm_rt_function *fn = NULL;
  BM_RETURN_IF_ERROR(check_fn(s, f, &fn));
  if (!s->profile) return INVALID("the session was created without profile = 1");
  *out = s->fns[f].profile;
  *n = fn->nkernels;
  return NULL;
}

void bm_session_reset_state(bm_session *s) {
  if (s && s->gpu) {
    bm_cuda_reset_state(s->gpu);
    return;
  }
  if (s && s->states) memset(s->states, 0, s->states_size);
}

bm_status bm_session_state(bm_session *s, const char *name, void **data, bm_tensor_info *info) {
  if (data) *data = NULL;
  if (info) memset(info, 0, sizeof *info);
  if (!s || !name || !data) return INVALID("bm_session_state: NULL argument");
  const bm_package *pkg = s->pkg;
  for (int i = 0; i < pkg->nstates; i++) {
    const bm_rt_state *st = &pkg->states[i];
    if (strcmp(st->name, name) != 0) continue;
    if (s->gpu)
      BM_RETURN_IF_ERROR(bm_cuda_state(s->gpu, i, data)); /* a host snapshot */
    else
      *data = s->states + s->state_off[i];
    if (info) {
      info->name = st->name;
      info->dtype = st->dtype;
      info->ndim = st->ndim;
      for (int d = 0; d < st->ndim; d++) info->shape[d] = st->shape[d];
    }
    return NULL;
  }
  return bm_status_make(BM_ERR_NOT_FOUND, "package '%s' has no state '%s' (it has %d states)", pkg->model, name,
                        pkg->nstates);
}
