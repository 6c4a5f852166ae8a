/* backend.c - the CUDA backend: emits CUDA C for every kernel with the
 * shared C-like emitter (codegen/clike), compiles it with NVRTC when bmc
 * runs (a cubin per architecture plus PTX, in parallel) and packs the images
 * and the launch table into one code bundle (runtime/cuda_bundle.h).
 *
 * Architectures: target.cpu if it names them ("sm_90,compute_90"), else
 * BM_CUDA_ARCHS, else sm_80, sm_86, sm_89, sm_90 and compute_80 (PTX).
 * Debugging: BM_DUMP_CUDA=path writes the generated source. */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../runtime/cuda_bundle.h"
#include "../clike/clike.h"
#include "cuda.h"

#define DEFAULT_ARCHS "sm_80,sm_86,sm_89,sm_90,compute_80"
#define MAX_ARCHS 8

static int cuda_supports(const bm_node *n) { return bm_clike_supports(n); }
static int cuda_supports_in(const bm_graph *g, const bm_node *n) { return bm_clike_cuda_supports_in(g, n); }

static bm_status cuda_available(void) { return bm_nvrtc_load(); }

typedef struct job {
  const char *src;
  char arch[32];
  void *img;
  size_t size;
  bm_status s;
} job;

static void *compile_job(void *p) {
  job *j = p;
  j->s = bm_nvrtc_compile(j->src, j->arch, &j->img, &j->size);
  return NULL;
}

/* Splits "sm_80,compute_80" into jobs; checks the names. */
static bm_status parse_archs(const char *list, job *jobs, int *n) {
  *n = 0;
  const char *s = list;
  while (*s) {
    const char *e = strchr(s, ',');
    size_t len = e ? (size_t)(e - s) : strlen(s);
    if (len) {
      if (*n == MAX_ARCHS) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "cuda: more than %d architectures in '%s'", MAX_ARCHS, list);
      if (len >= sizeof jobs[0].arch) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "cuda: bad architecture in '%s'", list);
      job *j = &jobs[(*n)++];
      memcpy(j->arch, s, len);
      j->arch[len] = 0;
      int num = 0;
      const char *digits = strncmp(j->arch, "sm_", 3) == 0 ? j->arch + 3 : strncmp(j->arch, "compute_", 8) == 0 ? j->arch + 8 : NULL;
      if (!digits || sscanf(digits, "%d", &num) != 1 || num < 80)
        return bm_status_make(BM_ERR_INVALID_ARGUMENT,
                              "cuda: architecture '%s' is not supported (sm_XY or compute_XY with XY >= 80)", j->arch);
    }
    s += len;
    if (*s == ',') s++;
  }
  if (*n == 0) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "cuda: no architecture in '%s'", list);
  return NULL;
}

static int arch_num(const char *a) {
  const char *d = strchr(a, '_');
  return d ? atoi(d + 1) : 0;
}

/* The bundle: magic, JSON header, images (16-aligned). */
static bm_status make_bundle(const bm_clike_out *src, const job *jobs, int njobs, bm_object *out) {
  cJSON *root = cJSON_CreateObject();
  cJSON *ks = cJSON_AddArrayToObject(root, "kernels");
  for (int i = 0; i < src->nkernels; i++) {
    cJSON *k = cJSON_CreateObject();
    cJSON_AddStringToObject(k, "symbol", src->kernels[i].symbol);
    cJSON_AddNumberToObject(k, "threads", src->kernels[i].threads);
    cJSON_AddNumberToObject(k, "smem", src->kernels[i].smem);
    cJSON_AddItemToArray(ks, k);
  }
  /* offsets depend on the header size: lay out twice (offsets only grow) */
  char *hdr = NULL;
  size_t hlen = 0, at = 0;
  for (int pass = 0; pass < 3; pass++) {
    cJSON_DeleteItemFromObjectCaseSensitive(root, "images");
    cJSON *im = cJSON_AddArrayToObject(root, "images");
    at = (BM_CUDA_BUNDLE_HEADER + hlen + 15) / 16 * 16;
    for (int j = 0; j < njobs; j++) {
      cJSON *o = cJSON_CreateObject();
      cJSON_AddStringToObject(o, "kind", strncmp(jobs[j].arch, "sm_", 3) == 0 ? "cubin" : "ptx");
      cJSON_AddNumberToObject(o, "arch", arch_num(jobs[j].arch));
      cJSON_AddNumberToObject(o, "offset", (double)at);
      cJSON_AddNumberToObject(o, "size", (double)jobs[j].size);
      cJSON_AddItemToArray(im, o);
      at = (at + jobs[j].size + 15) / 16 * 16;
    }
    free(hdr);
    hdr = cJSON_PrintUnformatted(root);
    if (!hdr) break;
    size_t nl = strlen(hdr);
    if (nl == hlen) break;
    hlen = nl;
  }
  cJSON_Delete(root);
  if (!hdr) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "cuda: bundle header");
  hlen = strlen(hdr);
  size_t first = (BM_CUDA_BUNDLE_HEADER + hlen + 15) / 16 * 16;
  size_t total = first;
  for (int j = 0; j < njobs; j++) total = (total + jobs[j].size + 15) / 16 * 16;
  if (total != at) {
    free(hdr);
    return bm_status_make(BM_ERR_INTERNAL, "cuda: bundle layout did not converge");
  }
  uint8_t *b = calloc(1, total);
  if (!b) {
    free(hdr);
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "cuda: %zu bytes of code", total);
  }
  memcpy(b, BM_CUDA_BUNDLE_MAGIC, 8);
  uint32_t hl = (uint32_t)hlen;
  for (int i = 0; i < 4; i++) b[8 + i] = (uint8_t)(hl >> (8 * i));
  memcpy(b + BM_CUDA_BUNDLE_HEADER, hdr, hlen);
  free(hdr);
  size_t off = first;
  for (int j = 0; j < njobs; j++) {
    memcpy(b + off, jobs[j].img, jobs[j].size);
    off = (off + jobs[j].size + 15) / 16 * 16;
  }
  out->data = b;
  out->size = total;
  return NULL;
}

static bm_status cuda_compile(bm_module *m, const bm_target *t, bm_object *out) {
  if (!m || !out) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "cuda backend: NULL argument");
  memset(out, 0, sizeof *out);
  BM_RETURN_IF_ERROR(bm_nvrtc_load());
  const char *archs = DEFAULT_ARCHS;
  if (t && t->cpu && (strncmp(t->cpu, "sm_", 3) == 0 || strncmp(t->cpu, "compute_", 8) == 0))
    archs = t->cpu;
  else if (getenv("BM_CUDA_ARCHS") && *getenv("BM_CUDA_ARCHS"))
    archs = getenv("BM_CUDA_ARCHS");
  job jobs[MAX_ARCHS];
  memset(jobs, 0, sizeof jobs);
  int njobs = 0;
  BM_RETURN_IF_ERROR(parse_archs(archs, jobs, &njobs));

  bm_clike_out src;
  BM_RETURN_IF_ERROR(bm_clike_emit_module(&bm_clike_cuda, m, &src));
  const char *dump = getenv("BM_DUMP_CUDA");
  if (dump && *dump) {
    FILE *f = fopen(dump, getenv("BM_DUMP_CUDA_APPEND") ? "a" : "w"); /* append: every module of a process */
    if (f) {
      fwrite(src.src.s, 1, src.src.len, f);
      fclose(f);
    }
  }
  bm_status s = NULL;
  if (src.nkernels > 0) {
    pthread_t th[MAX_ARCHS];
    bool started[MAX_ARCHS] = {0};
    for (int j = 0; j < njobs; j++) {
      jobs[j].src = src.src.s;
      started[j] = pthread_create(&th[j], NULL, compile_job, &jobs[j]) == 0;
      if (!started[j]) compile_job(&jobs[j]);
    }
    for (int j = 0; j < njobs; j++)
      if (started[j]) pthread_join(th[j], NULL);
    for (int j = 0; j < njobs && !s; j++)
      if (jobs[j].s) {
        s = jobs[j].s;
        jobs[j].s = NULL;
      }
    for (int j = 0; j < njobs; j++) bm_status_free(jobs[j].s);
    if (!s) s = make_bundle(&src, jobs, njobs, out);
  } else {
    njobs = 0;
    s = make_bundle(&src, jobs, 0, out);
  }
  for (int j = 0; j < MAX_ARCHS; j++) free(jobs[j].img);
  bm_clike_out_free(&src);
  if (s) {
    bm_object_free(out);
    return s;
  }
  snprintf(out->format, sizeof out->format, "%s", BM_CUDA_CODE_FORMAT);
  snprintf(out->triple, sizeof out->triple, "%s", BM_CUDA_TRIPLE);
  snprintf(out->cpu, sizeof out->cpu, "%s", archs);
  snprintf(out->features, sizeof out->features, "nvrtc %s", bm_nvrtc_version());
  out->required[0] = 0;
  return NULL;
}

const bm_backend bm_backend_cuda = {
    .name = "cuda",
    .supports = cuda_supports,
    .supports_in = cuda_supports_in,
    .compile = cuda_compile,
    .available = cuda_available,
};
