/* cpu_features.c - host architecture and ISA feature checks, so a package
 * built for AVX-512 fails to open with a clear message instead of SIGILL. */
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* Test hook (bm_cpu_test_mask): features reported as missing. */
static char g_masked[256];

void bm_cpu_test_mask(const char *names) { snprintf(g_masked, sizeof g_masked, ",%s,", names ? names : ""); }

static bool masked(const char *name) {
  char key[80];
  snprintf(key, sizeof key, ",%s,", name);
  return g_masked[0] && strstr(g_masked, key) != NULL;
}

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <pthread.h>

/* XCR0 bits the OS must enable for the vector state a feature uses. */
#define XCR0_AVX 0x6ull     /* SSE + AVX (ymm) */
#define XCR0_AVX512 0xe6ull /* + opmask, zmm_hi256, hi16_zmm */

static unsigned long long read_xcr0(void) {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0; /* no OSXSAVE */
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return ((unsigned long long)hi << 32) | lo;
}

typedef struct x86_feature {
  const char *name;
  unsigned leaf, subleaf;
  char reg; /* 'b', 'c', 'd' */
  unsigned bit;
  unsigned long long xcr0; /* OS state needed */
} x86_feature;

static const x86_feature x86_features[] = {
    {"sse2", 1, 0, 'd', 26, 0},         {"sse3", 1, 0, 'c', 0, 0},
    {"ssse3", 1, 0, 'c', 9, 0},         {"sse4.1", 1, 0, 'c', 19, 0},
    {"sse4.2", 1, 0, 'c', 20, 0},       {"popcnt", 1, 0, 'c', 23, 0},
    {"movbe", 1, 0, 'c', 22, 0},        {"aes", 1, 0, 'c', 25, 0},
    {"pclmul", 1, 0, 'c', 1, 0},        {"avx", 1, 0, 'c', 28, XCR0_AVX},
    {"fma", 1, 0, 'c', 12, XCR0_AVX},   {"f16c", 1, 0, 'c', 29, XCR0_AVX},
    {"bmi", 7, 0, 'b', 3, 0},           {"bmi2", 7, 0, 'b', 8, 0},
    {"avx2", 7, 0, 'b', 5, XCR0_AVX},   {"avx512f", 7, 0, 'b', 16, XCR0_AVX512},
    {"avx512dq", 7, 0, 'b', 17, XCR0_AVX512}, {"avx512cd", 7, 0, 'b', 28, XCR0_AVX512},
    {"avx512bw", 7, 0, 'b', 30, XCR0_AVX512}, {"avx512vl", 7, 0, 'b', 31, XCR0_AVX512},
    {"avx512ifma", 7, 0, 'b', 21, XCR0_AVX512}, {"avx512vbmi", 7, 0, 'c', 1, XCR0_AVX512},
    {"avx512vnni", 7, 0, 'c', 11, XCR0_AVX512}, {"avx512bitalg", 7, 0, 'c', 12, XCR0_AVX512},
    {"avx512vpopcntdq", 7, 0, 'c', 14, XCR0_AVX512}, {"avx512fp16", 7, 0, 'd', 23, XCR0_AVX512},
    {"avx512bf16", 7, 1, 'a', 5, XCR0_AVX512}, {"avxvnni", 7, 1, 'a', 4, XCR0_AVX},
    {"lzcnt", 0x80000001u, 0, 'c', 5, 0},
};

#define N_X86_FEATURES (sizeof x86_features / sizeof x86_features[0])

/* CPUID and XGETBV are read once per process: in a virtual machine each
 * CPUID traps to the hypervisor (tens of microseconds), and every package
 * open checks all the features its code needs. */
static bool g_x86_have[N_X86_FEATURES];
static pthread_once_t g_x86_once = PTHREAD_ONCE_INIT;

static void x86_detect(void) {
  unsigned long long xcr0 = read_xcr0();
  for (size_t i = 0; i < N_X86_FEATURES; i++) {
    const x86_feature *f = &x86_features[i];
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(f->leaf, f->subleaf, &a, &b, &c, &d)) continue;
    unsigned r = f->reg == 'a' ? a : f->reg == 'b' ? b : f->reg == 'c' ? c : d;
    g_x86_have[i] = (r & (1u << f->bit)) && (!f->xcr0 || (xcr0 & f->xcr0) == f->xcr0);
  }
}

int bm_cpu_has_feature(const char *name) {
  if (!name) return -1;
  pthread_once(&g_x86_once, x86_detect);
  for (size_t i = 0; i < N_X86_FEATURES; i++) {
    if (strcmp(x86_features[i].name, name) != 0) continue;
    if (!g_x86_have[i]) return 0;
    return masked(name) ? 0 : 1;
  }
  return -1;
}

const char *bm_cpu_host_arch(void) { return "x86_64"; }

#elif defined(__aarch64__)
#include <sys/auxv.h>

#ifndef HWCAP_ASIMDHP
#define HWCAP_ASIMDHP (1 << 10)
#endif
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#ifndef HWCAP_SVE
#define HWCAP_SVE (1 << 22)
#endif

int bm_cpu_has_feature(const char *name) {
  if (!name) return -1;
  unsigned long hw = getauxval(AT_HWCAP);
  if (!strcmp(name, "neon") || !strcmp(name, "asimd") || !strcmp(name, "fp")) return 1;
  if (!strcmp(name, "fullfp16") || !strcmp(name, "fp16")) return (hw & HWCAP_ASIMDHP) != 0;
  if (!strcmp(name, "dotprod")) return (hw & HWCAP_ASIMDDP) != 0;
  if (!strcmp(name, "sve")) return (hw & HWCAP_SVE) != 0;
  return -1;
}

const char *bm_cpu_host_arch(void) { return "aarch64"; }

#else
int bm_cpu_has_feature(const char *name) { return -1; }
const char *bm_cpu_host_arch(void) { return "unknown"; }
#endif

bool bm_cpu_arch_matches(const char *triple) {
  if (!triple) return false;
  const char *host = bm_cpu_host_arch();
  size_t n = strlen(host);
  if (strncmp(triple, host, n) == 0 && (triple[n] == '-' || triple[n] == 0)) return true;
  if (!strcmp(host, "aarch64") && !strncmp(triple, "arm64-", 6)) return true;
  return false;
}
