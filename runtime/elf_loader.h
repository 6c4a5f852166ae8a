/* elf_loader.h - loads an ELF64 relocatable object (ET_REL, as LLVM emits
 * for a package's kernels) into executable memory, without dlopen.
 *
 * The loader trusts nothing in the object: every header, offset, size and
 * index is checked, and a malformed object gives BM_ERR_CORRUPT naming the
 * problem. Allocated sections (text, rodata, data, bss) are laid out in one
 * mmap'd region with a small GOT and jump stubs for undefined symbols, which
 * are resolved against a fixed table of C library / libm functions (or the
 * caller's table). Text ends up RX, read-only data RO, data RW.
 *
 * Supported: x86-64 (R_X86_64_64, PC32, PLT32, 32, 32S, GOTPCREL,
 * GOTPCRELX, REX_GOTPCRELX, PC64). The relocation set is a per-arch table
 * entry in elf_loader.c so aarch64 can be added.
 */
#ifndef BM_ELF_LOADER_H
#define BM_ELF_LOADER_H

#include <stddef.h>

#include "bm_runtime.h"

typedef struct bm_elf_image bm_elf_image;

typedef struct bm_elf_import {
  const char *name;
  void *addr;
} bm_elf_import;

/* The default import table (memcpy, memset, memmove, expf, logf, ...),
 * terminated by a {NULL, NULL} entry. */
extern const bm_elf_import bm_elf_default_imports[];

/* Loads `size` bytes of object code (copied; `data` may be freed after).
 * imports: NULL-terminated table for undefined symbols; NULL = defaults. */
bm_status bm_elf_load(const void *data, size_t size, const bm_elf_import *imports,
                      bm_elf_image **out);
void bm_elf_unload(bm_elf_image *img); /* NULL is fine */
/* Address of a defined global symbol, or NULL. */
void *bm_elf_lookup(const bm_elf_image *img, const char *name);
/* Bytes of the mapped region (for reporting). */
size_t bm_elf_image_size(const bm_elf_image *img);

#endif
