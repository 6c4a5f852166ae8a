/* test_threadpool.c - the runtime's thread pool: every task of every job
 * runs exactly once and each thread's scratch is used by one thread at a
 * time, inside and outside a run (bm_threadpool_begin/_end), with gaps
 * between jobs that make the workers spin, yield or sleep; more threads
 * than cores. */
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "../runtime/internal.h"
#include "testutil.h"

enum { MAXT = 2000, STRIDE = 64, MAXTHREADS = 6 };

static atomic_int hits[MAXT];
static atomic_int busy[MAXTHREADS]; /* scratch slot in use */
static atomic_int overlap;          /* a scratch slot used by two threads at once */
static uint8_t scratch[MAXTHREADS * STRIDE];

static void task(void *const *bufs, const int64_t *syms, int64_t begin, int64_t end, void *s) {
  (void)bufs, (void)syms;
  int slot = (int)(((uint8_t *)s - scratch) / STRIDE);
  if (atomic_exchange(&busy[slot], 1)) atomic_fetch_add(&overlap, 1);
  for (int64_t i = begin; i < end; i++) {
    volatile int spin = 0;
    for (int k = 0; k < 50; k++) spin += k; /* a little work per task */
    atomic_fetch_add_explicit(&hits[i], 1, memory_order_relaxed);
  }
  atomic_store(&busy[slot], 0);
}

static void pause_us(long us) {
  struct timespec ts = {0, us * 1000};
  nanosleep(&ts, NULL);
}

/* njobs jobs of varying size; every `gap_every`-th is preceded by a pause
 * of gap_us (0: none). Returns the number of wrongly counted tasks. */
static int run_jobs(bm_threadpool *p, int njobs, int gap_every, long gap_us) {
  int bad = 0;
  for (int job = 0; job < njobs; job++) {
    int64_t ntasks = job % 7 == 0 ? 1 : job % 5 == 0 ? 2 : (job * 37) % MAXT;
    for (int i = 0; i < MAXT; i++) atomic_store(&hits[i], 0);
    if (gap_us && job % gap_every == 0) pause_us(gap_us);
    bm_threadpool_run(p, task, NULL, NULL, ntasks, scratch, STRIDE);
    for (int64_t i = 0; i < MAXT; i++) bad += atomic_load(&hits[i]) != (i < ntasks);
  }
  return bad;
}

static void test_exactly_once(void) {
  for (int threads = 1; threads <= MAXTHREADS; threads++) {
    bm_threadpool *p = NULL;
    CHECK_OK(bm_threadpool_create(threads, &p));
    if (!p) return;
    CHECK(bm_threadpool_threads(p) == threads);
    atomic_store(&overlap, 0);
    /* outside a run: back to back, then with gaps past the idle spin (workers sleep) */
    CHECK_MSG(run_jobs(p, 200, 1, 0) == 0, "threads %d: back to back", threads);
    CHECK_MSG(run_jobs(p, 20, 4, 1500) == 0, "threads %d: gaps between jobs", threads);
    /* inside a run (nested): short gaps (workers spin), one long gap (they sleep) */
    bm_threadpool_begin(p);
    bm_threadpool_begin(p);
    CHECK_MSG(run_jobs(p, 200, 3, 100) == 0, "threads %d: in a run", threads);
    bm_threadpool_end(p);
    CHECK_MSG(run_jobs(p, 6, 3, 4000) == 0, "threads %d: long gaps in a run", threads);
    bm_threadpool_end(p);
    CHECK_MSG(atomic_load(&overlap) == 0, "threads %d: a scratch slot was shared %d times", threads,
              atomic_load(&overlap));
    bm_threadpool_destroy(p);
  }
  /* destroying a pool whose workers sleep, and one right after a job */
  bm_threadpool *p = NULL;
  CHECK_OK(bm_threadpool_create(3, &p));
  pause_us(2000);
  bm_threadpool_destroy(p);
  CHECK_OK(bm_threadpool_create(3, &p));
  CHECK(run_jobs(p, 3, 1, 0) == 0);
  bm_threadpool_destroy(p);
  bm_threadpool_begin(NULL);
  bm_threadpool_end(NULL);
  CHECK_ERR(bm_threadpool_create(0, &p), BM_ERR_INVALID_ARGUMENT, NULL);
  CHECK_ERR(bm_threadpool_create(1025, &p), BM_ERR_INVALID_ARGUMENT, NULL);
}

int main(void) {
  RUN(test_exactly_once);
  return bm_test_finish();
}
