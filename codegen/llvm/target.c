/* target.c - the LLVM target machine of the CPU backend: resolves the host
 * or a named CPU to a feature set, picks the vector width, and records what
 * the runtime must check before running the code. */
#include <stdio.h>
#include <string.h>

#include <llvm-c/Target.h>

#include "cg.h"

/* Feature sets of the CPUs accepted by --cpu (LLVM feature names). Only the
 * features that matter for code generation and for the runtime check are
 * listed; LLVM adds the rest from the CPU name. */
#define BM_FEAT_V2 "+cx16,+sahf,+popcnt,+sse3,+sse4.1,+sse4.2,+ssse3"
#define BM_FEAT_V3 BM_FEAT_V2 ",+avx,+avx2,+bmi,+bmi2,+f16c,+fma,+lzcnt,+movbe,+xsave"
#define BM_FEAT_V4 BM_FEAT_V3 ",+avx512f,+avx512bw,+avx512cd,+avx512dq,+avx512vl"

static const struct {
  const char *cpu;
  const char *features;
} known_cpus[] = {
    {"x86-64", ""},
    {"x86-64-v2", BM_FEAT_V2},
    {"x86-64-v3", BM_FEAT_V3},
    {"x86-64-v4", BM_FEAT_V4},
    {"haswell", BM_FEAT_V3},
    {"broadwell", BM_FEAT_V3},
    {"skylake", BM_FEAT_V3},
    {"alderlake", BM_FEAT_V3},
    {"znver1", BM_FEAT_V3},
    {"znver2", BM_FEAT_V3},
    {"znver3", BM_FEAT_V3},
    {"skylake-avx512", BM_FEAT_V4},
    {"cascadelake", BM_FEAT_V4},
    {"icelake-server", BM_FEAT_V4},
    {"sapphirerapids", BM_FEAT_V4},
    {"znver4", BM_FEAT_V4},
};

/* Features the runtime can check (bm_cpu_has_feature) and that our code
 * may depend on. */
static const char *const checkable[] = {"avx",      "avx2",     "fma",      "f16c",    "avx512f",
                                        "avx512bw", "avx512vl", "avx512dq", "bmi2"};

/* Is "+name" the last word for `name` in a comma-separated feature list? */
static bool feature_on(const char *list, const char *name) {
  bool on = false;
  size_t nl = strlen(name);
  const char *p = list;
  while (p && *p) {
    const char *e = strchr(p, ',');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len == nl + 1 && (p[0] == '+' || p[0] == '-') && memcmp(p + 1, name, nl) == 0)
      on = p[0] == '+';
    p = e ? e + 1 : NULL;
  }
  return on;
}

/* Copies the "+feature" entries of list into out (bounded, whole entries only). */
static void copy_enabled(const char *list, char *out, size_t size) {
  size_t used = 0;
  out[0] = 0;
  const char *p = list;
  while (p && *p) {
    const char *e = strchr(p, ',');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len > 1 && p[0] == '+') {
      size_t need = len + (used ? 1 : 0);
      if (used + need + 1 > size) break;
      if (used) out[used++] = ',';
      memcpy(out + used, p, len);
      used += len;
      out[used] = 0;
    }
    p = e ? e + 1 : NULL;
  }
}

static void init_llvm_x86(void) {
  static bool done;
  if (done) return;
  LLVMInitializeX86TargetInfo();
  LLVMInitializeX86Target();
  LLVMInitializeX86TargetMC();
  LLVMInitializeX86AsmPrinter();
  done = true;
}

bm_status bm_cg_target_init(bm_cg *cg, const bm_target *t, bm_object *out) {
  init_llvm_x86();
  char *triple = t && t->triple ? LLVMNormalizeTargetTriple(t->triple) : LLVMGetDefaultTargetTriple();
  if (strncmp(triple, "x86_64", 6) != 0) {
    bm_status s = bm_status_make(BM_ERR_UNSUPPORTED,
                                 "cpu backend: target triple '%s' is not supported (x86_64 only)",
                                 triple);
    LLVMDisposeMessage(triple);
    return s;
  }
  LLVMTargetRef target;
  char *err = NULL;
  if (LLVMGetTargetFromTriple(triple, &target, &err)) {
    bm_status s = bm_status_make(BM_ERR_UNSUPPORTED, "cpu backend: no LLVM target for '%s': %s",
                                 triple, err ? err : "?");
    LLVMDisposeMessage(err);
    LLVMDisposeMessage(triple);
    return s;
  }

  /* resolve the CPU and its features */
  const char *cpu_req = t ? t->cpu : NULL;
  bool host = !cpu_req || !cpu_req[0] || strcmp(cpu_req, "native") == 0 || strcmp(cpu_req, "host") == 0;
  if (host) {
    char *name = LLVMGetHostCPUName();
    char *feats = LLVMGetHostCPUFeatures();
    snprintf(cg->cpu_name, sizeof cg->cpu_name, "%s", name);
    size_t flen = strlen(feats);
    snprintf(cg->cpu_features, sizeof cg->cpu_features, "%s", feats);
    LLVMDisposeMessage(name);
    LLVMDisposeMessage(feats);
    if (flen >= sizeof cg->cpu_features) {
      LLVMDisposeMessage(triple);
      return bm_status_make(BM_ERR_INTERNAL, "cpu backend: host feature string is %zu bytes (max %zu)",
                            flen, sizeof cg->cpu_features - 1);
    }
  } else {
    int k = -1;
    for (size_t i = 0; i < sizeof known_cpus / sizeof known_cpus[0]; i++)
      if (strcmp(known_cpus[i].cpu, cpu_req) == 0) k = (int)i;
    if (k < 0) {
      char names[512] = "";
      for (size_t i = 0; i < sizeof known_cpus / sizeof known_cpus[0]; i++) {
        strncat(names, i ? ", " : "", sizeof names - strlen(names) - 1);
        strncat(names, known_cpus[i].cpu, sizeof names - strlen(names) - 1);
      }
      LLVMDisposeMessage(triple);
      return bm_status_make(BM_ERR_INVALID_ARGUMENT, "cpu backend: unknown cpu '%s' (known: native, %s)",
                            cpu_req, names);
    }
    snprintf(cg->cpu_name, sizeof cg->cpu_name, "%s", known_cpus[k].cpu);
    snprintf(cg->cpu_features, sizeof cg->cpu_features, "%s", known_cpus[k].features);
  }
  if (t && t->features && t->features[0]) {
    size_t len = strlen(cg->cpu_features);
    if (len + strlen(t->features) + 2 > sizeof cg->cpu_features) {
      LLVMDisposeMessage(triple);
      return bm_status_make(BM_ERR_INVALID_ARGUMENT, "cpu backend: feature string too long");
    }
    snprintf(cg->cpu_features + len, sizeof cg->cpu_features - len, "%s%s", len ? "," : "",
             t->features);
  }

  const char *fl = cg->cpu_features;
  bool avx512 = feature_on(fl, "avx512f");
  cg->vec = avx512 ? 16 : (feature_on(fl, "avx") || feature_on(fl, "avx2")) ? 8 : 4;
  cg->has_fma = feature_on(fl, "fma");
  cg->has_f16c = feature_on(fl, "f16c");

  int opt = t ? t->opt_level : 3;
  LLVMCodeGenOptLevel lvl = opt <= 0   ? LLVMCodeGenLevelNone
                            : opt == 1 ? LLVMCodeGenLevelLess
                            : opt == 2 ? LLVMCodeGenLevelDefault
                                       : LLVMCodeGenLevelAggressive;
  cg->tm = LLVMCreateTargetMachine(target, triple, cg->cpu_name, cg->cpu_features, lvl,
                                   LLVMRelocPIC, LLVMCodeModelSmall);
  if (!cg->tm) {
    bm_status s = bm_status_make(BM_ERR_INTERNAL, "cpu backend: cannot create a target machine for %s/%s",
                                 triple, cg->cpu_name);
    LLVMDisposeMessage(triple);
    return s;
  }

  if (out) {
    snprintf(out->format, sizeof out->format, "elf64-x86_64-rel");
    snprintf(out->triple, sizeof out->triple, "%s", triple);
    snprintf(out->cpu, sizeof out->cpu, "%s", cg->cpu_name);
    copy_enabled(fl, out->features, sizeof out->features);
    out->required[0] = 0;
    for (size_t i = 0; i < sizeof checkable / sizeof checkable[0]; i++) {
      if (!feature_on(fl, checkable[i])) continue;
      size_t len = strlen(out->required);
      snprintf(out->required + len, sizeof out->required - len, "%s%s", len ? "," : "", checkable[i]);
    }
  }
  LLVMDisposeMessage(triple);
  return NULL;
}

bm_status bm_cg_dump_module(bm_cg *cg, const char *path) {
  char *err = NULL;
  size_t len = strlen(path);
  bool asm_out = len > 2 && strcmp(path + len - 2, ".s") == 0;
  LLVMBool fail = asm_out ? LLVMTargetMachineEmitToFile(cg->tm, cg->mod, (char *)path,
                                                         LLVMAssemblyFile, &err)
                          : LLVMPrintModuleToFile(cg->mod, path, &err);
  if (fail) {
    bm_status s = bm_status_make(BM_ERR_IO, "cannot write '%s': %s", path, err ? err : "?");
    LLVMDisposeMessage(err);
    return s;
  }
  return NULL;
}
