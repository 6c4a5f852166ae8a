/* threadpool.c - persistent worker threads for running kernels: tasks are
 * handed out dynamically in chunks from an atomic counter. Idle workers
 * spin (pause, then pause and yield) for a bounded time before sleeping on
 * a futex: long while a session run is in progress (between its kernels),
 * short between runs. A worker joins a job only while the job is open, so
 * the caller never waits for a worker that was not running (descheduled or
 * asleep) when the work ran out. */
#include <limits.h>
#include <sched.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
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

/* Waiting for a word to change: `pause` alone for SPIN_PURE_NS (a kernel
 * is often microseconds), then pause with a sched_yield every 64 pauses
 * (gives the CPU away when threads outnumber free cores) until the budget,
 * then the futex. Waking a sleeping thread costs 0.2-0.4 ms on a small VM,
 * more than most decode kernels take, so inside a run (bm_threadpool_begin
 * .. _end) the budget is long; between runs it is about one wake-up. */
#define SPIN_PURE_NS 50000ull
#define SPIN_RUN_NS 2000000ull  /* during a run */
#define SPIN_IDLE_NS 300000ull  /* between runs */

/* The join word of a job: (job counter << 32) | CLOSED | (threads taking
 * part, caller included, << 16) | workers that joined. */
#define JOIN_CLOSED (1ull << 31)
#define JOIN_ACTIVE(j) ((unsigned)((j) >> 16) & 0x7fffu)
#define JOIN_COUNT(j) ((unsigned)(j)&0xffffu)

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ volatile("yield");
#endif
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct bm_threadpool {
  int nthreads;                 /* including the caller */
  pthread_t *workers;           /* nthreads - 1 */
  int nstarted;
  /* the current job (written by the caller before it is published) */
  bm_kernel_fn fn;
  void *const *bufs;
  const int64_t *syms;
  int64_t ntasks, chunk;
  uint8_t *scratch;
  size_t scratch_stride;
  /* each hot atomic on its own cache line: spinning workers must not be
   * disturbed by the task counter */
  _Alignas(64) atomic_llong next; /* next task to hand out */
  _Alignas(64) atomic_uint gen;   /* job counter: bumped to publish a job (futex word) */
  _Alignas(64) atomic_ullong join; /* the job's join word (see JOIN_*) */
  _Alignas(64) atomic_uint done;  /* joined workers finished with the job */
  _Alignas(64) atomic_uint sleepers; /* workers in futex_wait on gen */
  atomic_uint caller_waiting;
  atomic_int running;           /* > 0: inside bm_threadpool_begin .. _end */
  atomic_bool stop;
};

typedef struct worker_arg {
  bm_threadpool *pool;
  int index;
} worker_arg;

/* Spins until *w != val or the budget runs out (false). */
static bool spin_until_changed(bm_threadpool *p, atomic_uint *w, unsigned val) {
  uint64_t t0 = 0;
  for (unsigned i = 1;; i++) {
    if (atomic_load_explicit(w, memory_order_acquire) != val) return true;
    if ((i & 63) == 0) {
      uint64_t t = now_ns();
      if (!t0) t0 = t;
      uint64_t spent = t - t0;
      if (spent > (atomic_load_explicit(&p->running, memory_order_relaxed) > 0 ? SPIN_RUN_NS : SPIN_IDLE_NS))
        return false;
      if (spent > SPIN_PURE_NS) sched_yield();
    }
    cpu_relax();
  }
}

static void work(bm_threadpool *p, int t) {
  uint8_t *scratch = p->scratch ? p->scratch + (size_t)t * p->scratch_stride : NULL;
  for (;;) {
    int64_t b = atomic_fetch_add_explicit(&p->next, p->chunk, memory_order_relaxed);
    if (b >= p->ntasks) break;
    int64_t e = b + p->chunk < p->ntasks ? b + p->chunk : p->ntasks;
    p->fn(p->bufs, p->syms, b, e, scratch);
  }
}

/* Joins job g if it is still open and needs another thread. */
static bool try_join(bm_threadpool *p, unsigned g) {
  unsigned long long j = atomic_load(&p->join);
  for (;;) {
    if ((unsigned)(j >> 32) != g || (j & JOIN_CLOSED) || JOIN_COUNT(j) + 1 >= JOIN_ACTIVE(j)) return false;
    if (atomic_compare_exchange_weak(&p->join, &j, j + 1)) return true;
  }
}

static void *worker_main(void *arg) {
  worker_arg wa = *(worker_arg *)arg;
  free(arg);
  bm_threadpool *p = wa.pool;
  unsigned seen = 0;
  for (;;) {
    unsigned g;
    while ((g = atomic_load(&p->gen)) == seen) {
      if (spin_until_changed(p, &p->gen, seen)) continue;
      atomic_fetch_add(&p->sleepers, 1);
      futex_wait(&p->gen, seen);
      atomic_fetch_sub(&p->sleepers, 1);
    }
    seen = g;
    if (atomic_load(&p->stop)) return NULL;
    if (!try_join(p, g)) continue; /* closed, or enough threads */
    work(p, wa.index);
    atomic_fetch_add(&p->done, 1);
    if (atomic_load(&p->caller_waiting)) futex_wake(&p->done, 1);
  }
}

int bm_threadpool_threads(const bm_threadpool *p) { return p ? p->nthreads : 0; }

void bm_threadpool_destroy(bm_threadpool *p) {
  if (!p) return;
  atomic_store(&p->stop, true);
  atomic_fetch_add(&p->gen, 1);
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

void bm_threadpool_begin(bm_threadpool *p) {
  if (p) atomic_fetch_add_explicit(&p->running, 1, memory_order_relaxed);
}

void bm_threadpool_end(bm_threadpool *p) {
  if (p) atomic_fetch_sub_explicit(&p->running, 1, memory_order_relaxed);
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
  atomic_store(&p->done, 0);
  unsigned g = atomic_load_explicit(&p->gen, memory_order_relaxed) + 1;
  atomic_store(&p->join, (unsigned long long)g << 32 | (unsigned long long)active << 16);
  atomic_store(&p->gen, g); /* publishes the job */
  if (atomic_load(&p->sleepers)) futex_wake(&p->gen, INT_MAX);
  work(p, 0);
  /* close the job: a worker that has not joined by now stays out */
  unsigned joined = JOIN_COUNT(atomic_fetch_or(&p->join, JOIN_CLOSED));
  unsigned d;
  while ((d = atomic_load(&p->done)) != joined) {
    if (spin_until_changed(p, &p->done, d)) continue;
    atomic_store(&p->caller_waiting, 1);
    if ((d = atomic_load(&p->done)) != joined) futex_wait(&p->done, d);
    atomic_store(&p->caller_waiting, 0);
  }
}
