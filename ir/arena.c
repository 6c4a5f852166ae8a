/* arena.c - bump allocator for compile-time memory: nodes, names and
 * constants live in chunks that are freed together. */
#include <stdlib.h>
#include <string.h>

#include "ir.h"

#define BM_ARENA_CHUNK (64 * 1024)

typedef struct bm_arena_chunk {
  struct bm_arena_chunk *next;
  size_t size, used;                  /* bytes of data[] */
  _Alignas(16) unsigned char data[];
} bm_arena_chunk;

struct bm_arena {
  bm_arena_chunk *head;               /* current chunk (newest first) */
};

bm_arena *bm_arena_create(void) { return calloc(1, sizeof(bm_arena)); }

void bm_arena_destroy(bm_arena *a) {
  if (!a) return;
  bm_arena_chunk *c = a->head;
  while (c) {
    bm_arena_chunk *next = c->next;
    free(c);
    c = next;
  }
  free(a);
}

void *bm_arena_alloc(bm_arena *a, size_t size) {
  if (!a) return NULL;
  if (size == 0) size = 1;
  if (size > SIZE_MAX - 64 - sizeof(bm_arena_chunk)) return NULL;
  size = (size + 15) & ~(size_t)15;
  bm_arena_chunk *c = a->head;
  if (!c || c->size - c->used < size) {
    size_t csize = size > BM_ARENA_CHUNK ? size : BM_ARENA_CHUNK;
    bm_arena_chunk *n = malloc(sizeof(bm_arena_chunk) + csize);
    if (!n) return NULL;
    n->size = csize;
    n->used = 0;
    /* A big allocation gets its own chunk behind the current one, so the
     * current chunk's free space is not thrown away. */
    if (c && csize > BM_ARENA_CHUNK) {
      n->next = c->next;
      c->next = n;
    } else {
      n->next = c;
      a->head = n;
    }
    c = n;
  }
  void *p = c->data + c->used;
  c->used += size;
  memset(p, 0, size);
  return p;
}

char *bm_arena_strdup(bm_arena *a, const char *s) {
  if (!s) return NULL;
  size_t n = strlen(s);
  char *p = bm_arena_alloc(a, n + 1);
  if (p) memcpy(p, s, n + 1);
  return p;
}
