/* threadpool.c - persistent worker threads for running kernels: tasks are
 * handed out dynamically in chunks from an atomic counter; idle workers
 * spin briefly, then sleep on a futex. */
#include <limits.h>
#include <sched.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
static void futex_wait(atomic_uint *addr, unsigned val) {
  syscall(SYS_futex, (unsigned *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}
static void futex_wake(atomic_uint *addr, int n) {
  syscall(SYS_futex, (unsigned *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}
#else
static void futex_wait(atomic_uint *addr, unsigned val) { sched_yield(); }
static void futex_wake(atomic_uint *addr, int n) {}
#endif

/* Waiting: spin with `pause` first (a kernel is often microseconds), then
 * yield the CPU a few times (helps when threads outnumber free cores), then
 * sleep on the futex. */
#define SPIN_ITERS 2000
#define YIELD_ITERS 64
#define ACTIVE_BITS 11
#define ACTIVE_MASK ((1u << ACTIVE_BITS) - 1)

static inline void cpu_relax_or_yield(int spins) {
  if (spins < SPIN_ITERS) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
  } else {
    sched_yield();
  }
}


struct bm_threadpool {
  int nthreads;                 /* including the caller */
  pthread_t *workers;           /* nthreads - 1 */
  int nstarted;
  /* the current job (written by the caller before gen is bumped) */
  bm_kernel_fn fn;
  void *const *bufs;
  const int64_t *syms;
  int64_t ntasks, chunk;
  uint8_t *scratch;
  size_t scratch_stride;
  /* each hot atomic on its own cache line: spinning workers must not be
   * disturbed by the task counter */
  _Alignas(64) atomic_llong next; /* next task to hand out */
  /* Job word, written only by the caller: (job counter << 11) | number of
   * threads taking part (caller included, <= 1024). Workers read both in
   * one load, so a worker left out of a job never touches its fields. */
  _Alignas(64) atomic_uint gen;
  _Alignas(64) atomic_uint remaining; /* active workers still busy */
  _Alignas(64) atomic_uint sleepers;  /* workers in futex_wait on gen */
  atomic_uint caller_waiting;
  atomic_bool stop;
};

typedef struct worker_arg {
  bm_threadpool *pool;
  int index;
} worker_arg;

static void work(bm_threadpool *p, int t) {
  uint8_t *scratch = p->scratch ? p->scratch + (size_t)t * p->scratch_stride : NULL;
  for (;;) {
    int64_t b = atomic_fetch_add_explicit(&p->next, p->chunk, memory_order_relaxed);
    if (b >= p->ntasks) break;
    int64_t e = b + p->chunk < p->ntasks ? b + p->chunk : p->ntasks;
    p->fn(p->bufs, p->syms, b, e, scratch);
  }
}

static void *worker_main(void *arg) {
  worker_arg wa = *(worker_arg *)arg;
  free(arg);
  bm_threadpool *p = wa.pool;
  unsigned seen = 0;
  for (;;) {
    unsigned g;
    int spins = 0;
    while ((g = atomic_load(&p->gen)) == seen) {
      if (++spins < SPIN_ITERS + YIELD_ITERS) {
        cpu_relax_or_yield(spins);
        continue;
      }
      atomic_fetch_add(&p->sleepers, 1);
      futex_wait(&p->gen, seen);
      atomic_fetch_sub(&p->sleepers, 1);
    }
    seen = g;
    if (atomic_load(&p->stop)) return NULL;
    if ((unsigned)wa.index >= (g & ACTIVE_MASK)) continue; /* not needed for this job */
    work(p, wa.index);
    if (atomic_fetch_sub(&p->remaining, 1) == 1 && atomic_load(&p->caller_waiting))
      futex_wake(&p->remaining, 1);
  }
}

int bm_threadpool_threads(const bm_threadpool *p) { return p ? p->nthreads : 0; }

void bm_threadpool_destroy(bm_threadpool *p) {
  if (!p) return;
  atomic_store(&p->stop, true);
  atomic_fetch_add(&p->gen, 1u << ACTIVE_BITS);
  futex_wake(&p->gen, INT_MAX);
  for (int i = 0; i < p->nstarted; i++) pthread_join(p->workers[i], NULL);
  free(p->workers);
  free(p);
}

bm_status bm_threadpool_create(int nthreads, bm_threadpool **out) {
  *out = NULL;
  if (nthreads < 1 || nthreads > 1024)
    return bm_status_make(BM_ERR_INVALID_ARGUMENT, "thread count %d is not in [1, 1024]", nthreads);
  bm_threadpool *p = aligned_alloc(64, (sizeof *p + 63) / 64 * 64); /* the atomics are cache-line aligned */
  if (!p) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "thread pool");
  memset(p, 0, sizeof *p);
  p->nthreads = nthreads;
  p->workers = calloc((size_t)nthreads, sizeof *p->workers);
  if (!p->workers) {
    free(p);
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "thread pool");
  }
  for (int i = 1; i < nthreads; i++) {
    worker_arg *wa = malloc(sizeof *wa);
    if (!wa) {
      bm_threadpool_destroy(p);
      return bm_status_make(BM_ERR_OUT_OF_MEMORY, "thread pool");
    }
    wa->pool = p;
    wa->index = i;
    int rc = pthread_create(&p->workers[p->nstarted], NULL, worker_main, wa);
    if (rc != 0) {
      free(wa);
      bm_threadpool_destroy(p);
      return bm_status_make(BM_ERR_OUT_OF_MEMORY, "cannot start worker thread %d (error %d)", i, rc);
    }
    p->nstarted++;
  }
  *out = p;
  return NULL;
}

void bm_threadpool_run(bm_threadpool *p, bm_kernel_fn fn, void *const *bufs, const int64_t *syms,
                       int64_t ntasks, uint8_t *scratch, size_t scratch_stride) {
  if (ntasks <= 0) return;
  if (ntasks == 1 || p->nthreads == 1) {
    fn(bufs, syms, 0, ntasks, scratch);
    return;
  }
  int64_t chunk = ntasks / (4 * (int64_t)p->nthreads);
  if (chunk < 1) chunk = 1;
  int64_t nchunks = (ntasks + chunk - 1) / chunk;
  unsigned active = nchunks < p->nthreads ? (unsigned)nchunks : (unsigned)p->nthreads;
  p->fn = fn;
  p->bufs = bufs;
  p->syms = syms;
  p->ntasks = ntasks;
  p->chunk = chunk;
  p->scratch = scratch;
  p->scratch_stride = scratch_stride;
  atomic_store(&p->next, 0);
  atomic_store(&p->remaining, active - 1);
  unsigned g = atomic_load_explicit(&p->gen, memory_order_relaxed);
  atomic_store(&p->gen, (((g >> ACTIVE_BITS) + 1) << ACTIVE_BITS) | active); /* publishes the job */
  if (atomic_load(&p->sleepers)) futex_wake(&p->gen, INT_MAX);
  work(p, 0);
  int spins = 0;
  unsigned r;
  while ((r = atomic_load(&p->remaining)) != 0) {
    if (++spins < SPIN_ITERS + YIELD_ITERS) {
      cpu_relax_or_yield(spins);
      continue;
    }
    atomic_store(&p->caller_waiting, 1);
    if ((r = atomic_load(&p->remaining)) != 0) futex_wait(&p->remaining, r);
    atomic_store(&p->caller_waiting, 0);
  }
}
