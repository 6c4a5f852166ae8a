/* backend.c - the backend registry and helpers shared by every backend
 * (see codegen.h). */
#include <stdlib.h>
#include <string.h>

#include "codegen.h"

static const bm_backend *const backends[] = {&bm_backend_cpu, &bm_backend_null, &bm_backend_cuda};

bm_status bm_backend_find(const char *name, const bm_backend **out) {
  if (!out) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_backend_find: NULL out");
  *out = NULL;
  if (!name) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_backend_find: NULL backend name");
  for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++)
    if (strcmp(backends[i]->name, name) == 0) {
      if (backends[i]->available) BM_RETURN_IF_ERROR(backends[i]->available());
      *out = backends[i];
      return NULL;
    }
  if (strcmp(name, "metal") == 0)
    return bm_status_make(BM_ERR_UNSUPPORTED, "backend '%s' is not built into this compiler", name);
  return bm_status_make(BM_ERR_NOT_FOUND, "unknown backend '%s' (known: cpu, cuda, null)", name);
}

bool bm_node_needs_kernel(const bm_node *n) {
  unsigned fl = bm_op_table[n->op].flags;
  if (fl & BM_OPF_SOURCE) return false;
  if (fl & BM_OPF_INPLACE) return true; /* aliases its input's storage, but writes into it */
  return n->storage != BM_STORAGE_ALIAS;
}

void bm_object_free(bm_object *c) {
  if (!c) return;
  free(c->data);
  c->data = NULL;
  c->size = 0;
}
