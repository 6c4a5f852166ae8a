/* elf_loader.c - a small loader for ELF64 relocatable objects (ET_REL):
 * validate everything, lay out the allocated sections in one region, build
 * a GOT and jump stubs for imports, apply RELA relocations, protect. */
#include "elf_loader.h"

#include <elf.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#define ERR(...) bm_status_make(BM_ERR_CORRUPT, "code object: " __VA_ARGS__)

#define MAX_SECTIONS 65280u           /* below SHN_LORESERVE */
#define MAX_IMAGE (1ull << 30)        /* 1 GiB of code and data is plenty */
#define MAX_ALIGN 4096u

/* ------------------------------------------------------------------ imports */

static void rt_bzero(void *p, size_t n) { memset(p, 0, n); }

/* compiler-rt: x^n for an integer n (llvm.powi) */
static float rt_powisf2(float x, int n) {
  unsigned m = n < 0 ? 0u - (unsigned)n : (unsigned)n;
  float r = 1.0f;
  for (; m; m >>= 1, x *= x)
    if (m & 1) r *= x;
  return n < 0 ? 1.0f / r : r;
}
static double rt_powidf2(double x, int n) {
  unsigned m = n < 0 ? 0u - (unsigned)n : (unsigned)n;
  double r = 1.0;
  for (; m; m >>= 1, x *= x)
    if (m & 1) r *= x;
  return n < 0 ? 1.0 / r : r;
}

static float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);
  } else if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else { /* subnormal: normalize */
      int e = -1;
      do {
        e++;
        man <<= 1;
      } while (!(man & 0x400));
      bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
    }
  } else {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

static uint16_t float_to_half(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000, ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* rounds to inf */
  if (ax < 0x38800000u) {                                  /* subnormal or zero */
    if (ax < 0x33000000u) return (uint16_t)sign;
    uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - e; /* 14..24 */
    uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) r++;
    return (uint16_t)(sign | r);
  }
  uint32_t r = ((ax - 0x38000000u) >> 13), rem = ax & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;
  return (uint16_t)(sign | r);
}

/* libgcc/compiler-rt conversion helpers LLVM calls without F16C. */
static float rt_gnu_h2f_ieee(uint16_t h) { return half_to_float(h); }
static uint16_t rt_gnu_f2h_ieee(float f) { return float_to_half(f); }
#if defined(__x86_64__) && defined(__FLT16_MAX__)
/* The x86-64 ABI passes half (and bf16) in xmm registers, like _Float16. */
static uint16_t float_to_bf16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);
  x += 0x7fff + ((x >> 16) & 1);
  return (uint16_t)(x >> 16);
}
static float rt_extendhfsf2(_Float16 h) {
  uint16_t b;
  memcpy(&b, &h, 2);
  return half_to_float(b);
}
static _Float16 rt_truncsfhf2(float f) {
  uint16_t b = float_to_half(f);
  _Float16 h;
  memcpy(&h, &b, 2);
  return h;
}
static _Float16 rt_truncsfbf2(float f) { /* returns bf16 bits in xmm0 */
  uint16_t b = float_to_bf16(f);
  _Float16 h;
  memcpy(&h, &b, 2);
  return h;
}
#endif

const bm_elf_import bm_elf_default_imports[] = {
    {"memcpy", (void *)memcpy},   {"memset", (void *)memset},   {"memmove", (void *)memmove},
    {"memcmp", (void *)memcmp},   {"__bzero", (void *)rt_bzero}, {"bzero", (void *)rt_bzero},
    {"expf", (void *)expf},       {"exp2f", (void *)exp2f},     {"expm1f", (void *)expm1f},
    {"logf", (void *)logf},       {"log2f", (void *)log2f},     {"log1pf", (void *)log1pf},
    {"tanhf", (void *)tanhf},     {"erff", (void *)erff},       {"erfcf", (void *)erfcf},
    {"sinf", (void *)sinf},       {"cosf", (void *)cosf},       {"tanf", (void *)tanf},
    {"atanf", (void *)atanf},     {"atan2f", (void *)atan2f},   {"powf", (void *)powf},
    {"sqrtf", (void *)sqrtf},     {"fmaf", (void *)fmaf},       {"fabsf", (void *)fabsf},
    {"floorf", (void *)floorf},   {"ceilf", (void *)ceilf},     {"roundf", (void *)roundf},
    {"truncf", (void *)truncf},   {"rintf", (void *)rintf},     {"nearbyintf", (void *)nearbyintf},
    {"fmaxf", (void *)fmaxf},     {"fminf", (void *)fminf},     {"fmodf", (void *)fmodf},
    {"exp", (void *)exp},         {"log", (void *)log},         {"tanh", (void *)tanh},
    {"erf", (void *)erf},         {"sin", (void *)sin},         {"cos", (void *)cos},
    {"pow", (void *)pow},         {"sqrt", (void *)sqrt},       {"fma", (void *)fma},
    {"floor", (void *)floor},     {"ceil", (void *)ceil},       {"round", (void *)round},
    {"sincosf", (void *)sincosf}, {"sincos", (void *)sincos},   {"exp10f", (void *)exp10f},
    {"log10f", (void *)log10f},   {"ldexpf", (void *)ldexpf},   {"frexpf", (void *)frexpf},
    {"asinf", (void *)asinf},     {"acosf", (void *)acosf},     {"sinhf", (void *)sinhf},
    {"coshf", (void *)coshf},     {"asinhf", (void *)asinhf},   {"acoshf", (void *)acoshf},
    {"atanhf", (void *)atanhf},   {"cbrtf", (void *)cbrtf},     {"hypotf", (void *)hypotf},
    {"lrintf", (void *)lrintf},   {"lroundf", (void *)lroundf}, {"exp2", (void *)exp2},
    {"log2", (void *)log2},       {"expm1", (void *)expm1},     {"log1p", (void *)log1p},
    {"trunc", (void *)trunc},     {"fmax", (void *)fmax},       {"fmin", (void *)fmin},
    {"__powisf2", (void *)rt_powisf2}, {"__powidf2", (void *)rt_powidf2},
    {"__gnu_h2f_ieee", (void *)rt_gnu_h2f_ieee}, {"__gnu_f2h_ieee", (void *)rt_gnu_f2h_ieee},
#if defined(__x86_64__) && defined(__FLT16_MAX__)
    {"__extendhfsf2", (void *)rt_extendhfsf2}, {"__truncsfhf2", (void *)rt_truncsfhf2},
    {"__truncsfbf2", (void *)rt_truncsfbf2},
#endif
    {NULL, NULL},
};

/* ------------------------------------------------------------------ arch tables */

enum { NEED_GOT = 1, NEED_STUB = 2 };

/* Everything a relocation needs to compute its value. */
typedef struct reloc_ctx {
  uint32_t type;
  uint8_t *place;     /* where to write */
  uint64_t P;         /* address of the place */
  uint64_t S;         /* symbol address (stub address for calls to imports) */
  int64_t A;          /* addend */
  uint64_t G;         /* address of the symbol's GOT entry (0 if none) */
} reloc_ctx;

typedef struct elf_arch {
  uint16_t machine;
  const char *name;
  size_t stub_size;
  /* What a relocation of this type needs for symbol `undefined`; -1 = unknown type. */
  int (*needs)(uint32_t type, bool undefined);
  /* Writes a stub at `stub` that jumps through the GOT entry at `got`. */
  void (*write_stub)(uint8_t *stub, uint8_t *got);
  /* Width in bytes the relocation writes (0 = none). */
  int (*width)(uint32_t type);
  /* Applies it; returns NULL or an error (overflow). */
  bm_status (*apply)(const reloc_ctx *r);
  const char *(*type_name)(uint32_t type);
} elf_arch;

static const char *x86_type_name(uint32_t t) {
  switch (t) {
    case R_X86_64_NONE: return "R_X86_64_NONE";
    case R_X86_64_64: return "R_X86_64_64";
    case R_X86_64_PC32: return "R_X86_64_PC32";
    case R_X86_64_GOT32: return "R_X86_64_GOT32";
    case R_X86_64_PLT32: return "R_X86_64_PLT32";
    case R_X86_64_32: return "R_X86_64_32";
    case R_X86_64_32S: return "R_X86_64_32S";
    case R_X86_64_GOTPCREL: return "R_X86_64_GOTPCREL";
    case R_X86_64_PC64: return "R_X86_64_PC64";
    case R_X86_64_GOTOFF64: return "R_X86_64_GOTOFF64";
    case R_X86_64_GOTPC32: return "R_X86_64_GOTPC32";
    case R_X86_64_TPOFF32: return "R_X86_64_TPOFF32";
    case R_X86_64_GOTPCRELX: return "R_X86_64_GOTPCRELX";
    case R_X86_64_REX_GOTPCRELX: return "R_X86_64_REX_GOTPCRELX";
    default: return "unknown";
  }
}

static int x86_width(uint32_t t) {
  switch (t) {
    case R_X86_64_NONE: return 0;
    case R_X86_64_64: case R_X86_64_PC64: return 8;
    default: return 4;
  }
}

static int x86_needs(uint32_t t, bool undefined) {
  switch (t) {
    case R_X86_64_NONE: case R_X86_64_64: case R_X86_64_PC64:
    case R_X86_64_32: case R_X86_64_32S: return 0;
    case R_X86_64_PC32: case R_X86_64_PLT32: return undefined ? NEED_GOT | NEED_STUB : 0;
    case R_X86_64_GOTPCREL: case R_X86_64_GOTPCRELX: case R_X86_64_REX_GOTPCRELX: return NEED_GOT;
    default: return -1;
  }
}

static void x86_write_stub(uint8_t *stub, uint8_t *got) {
  /* jmp *disp32(%rip); int3 padding */
  int32_t disp = (int32_t)((intptr_t)got - (intptr_t)(stub + 6));
  stub[0] = 0xff;
  stub[1] = 0x25;
  memcpy(stub + 2, &disp, 4);
  stub[6] = 0xcc;
  stub[7] = 0xcc;
}

static bm_status put32s(const reloc_ctx *r, int64_t v) {
  if (v < INT32_MIN || v > INT32_MAX)
    return ERR("relocation %s at 0x%llx: value 0x%llx does not fit 32 bits", x86_type_name(r->type),
               (unsigned long long)r->P, (unsigned long long)v);
  int32_t x = (int32_t)v;
  memcpy(r->place, &x, 4);
  return NULL;
}

static bm_status x86_apply(const reloc_ctx *r) {
  uint64_t SA = r->S + (uint64_t)r->A;
  switch (r->type) {
    case R_X86_64_NONE: return NULL;
    case R_X86_64_64: memcpy(r->place, &SA, 8); return NULL;
    case R_X86_64_PC64: {
      uint64_t v = SA - r->P;
      memcpy(r->place, &v, 8);
      return NULL;
    }
    case R_X86_64_PC32: case R_X86_64_PLT32: return put32s(r, (int64_t)(SA - r->P));
    case R_X86_64_32: {
      if (SA > UINT32_MAX)
        return ERR("relocation R_X86_64_32 at 0x%llx: address 0x%llx does not fit 32 bits",
                   (unsigned long long)r->P, (unsigned long long)SA);
      uint32_t x = (uint32_t)SA;
      memcpy(r->place, &x, 4);
      return NULL;
    }
    case R_X86_64_32S: return put32s(r, (int64_t)SA);
    case R_X86_64_GOTPCREL: case R_X86_64_GOTPCRELX: case R_X86_64_REX_GOTPCRELX:
      return put32s(r, (int64_t)(r->G + (uint64_t)r->A - r->P));
    default: return ERR("unsupported relocation type %u", r->type);
  }
}

static const elf_arch arches[] = {
    {EM_X86_64, "x86-64", 8, x86_needs, x86_write_stub, x86_width, x86_apply, x86_type_name},
    /* aarch64: add {EM_AARCH64, ...} with its relocation set here. */
};

/* ------------------------------------------------------------------ image */

typedef struct export_sym {
  const char *name;  /* into image->names */
  void *addr;
} export_sym;

struct bm_elf_image {
  uint8_t *base;
  size_t size;
  int nexports;
  export_sym *exports;
  char *names;
};

void bm_elf_unload(bm_elf_image *img) {
  if (!img) return;
  if (img->base) munmap(img->base, img->size);
  free(img->exports);
  free(img->names);
  free(img);
}

void *bm_elf_lookup(const bm_elf_image *img, const char *name) {
  if (!img || !name) return NULL;
  for (int i = 0; i < img->nexports; i++)
    if (strcmp(img->exports[i].name, name) == 0) return img->exports[i].addr;
  return NULL;
}

size_t bm_elf_image_size(const bm_elf_image *img) { return img ? img->size : 0; }

/* ------------------------------------------------------------------ loading */

typedef struct loader {
  const uint8_t *data;
  size_t size;
  const elf_arch *arch;
  const bm_elf_import *imports;
  Elf64_Ehdr eh;
  Elf64_Shdr *sh;      /* copies of the section headers */
  unsigned shnum;
  uint64_t *sec_addr;  /* load address of each allocated section, 0 if not loaded */
  const char *shstr;   /* section name table */
  uint64_t shstr_size;
  unsigned symtab;     /* section index of SHT_SYMTAB */
  Elf64_Sym *syms;     /* copies */
  uint64_t nsyms;
  const char *str;     /* symbol string table */
  uint64_t str_size;
  int64_t *got_slot, *stub_slot; /* per symbol, -1 = none */
  uint64_t *sym_addr;  /* resolved addresses */
  uint8_t *sym_state;  /* 0 ok, 1 unresolved import, 2 unsupported section index */
  bm_elf_image *img;
} loader;

static bool in_file(const loader *L, uint64_t off, uint64_t len) {
  return off <= L->size && len <= L->size - off;
}

/* A NUL-terminated string at `off` inside a string table, or NULL. */
static const char *str_at(const char *tab, uint64_t tab_size, uint64_t off) {
  if (!tab || off >= tab_size) return NULL;
  if (!memchr(tab + off, 0, tab_size - off)) return NULL;
  return tab + off;
}

static const char *sec_name(const loader *L, unsigned i) {
  const char *n = str_at(L->shstr, L->shstr_size, L->sh[i].sh_name);
  return n ? n : "?";
}

static bm_status check_headers(loader *L) {
  if (L->size < sizeof(Elf64_Ehdr)) return ERR("%zu bytes is too small for an ELF header", L->size);
  memcpy(&L->eh, L->data, sizeof L->eh);
  const Elf64_Ehdr *e = &L->eh;
  if (memcmp(e->e_ident, ELFMAG, SELFMAG) != 0) return ERR("not an ELF file (bad magic)");
  if (e->e_ident[EI_CLASS] != ELFCLASS64) return ERR("not a 64-bit ELF object");
  if (e->e_ident[EI_DATA] != ELFDATA2LSB) return ERR("not a little-endian ELF object");
  if (e->e_ident[EI_VERSION] != EV_CURRENT) return ERR("bad ELF version %u", e->e_ident[EI_VERSION]);
  if (e->e_type != ET_REL) return ERR("ELF type %u is not a relocatable object (ET_REL)", e->e_type);
  L->arch = NULL;
  for (size_t i = 0; i < sizeof arches / sizeof arches[0]; i++)
    if (arches[i].machine == e->e_machine) L->arch = &arches[i];
  if (!L->arch) return bm_status_make(BM_ERR_INCOMPATIBLE, "code object: ELF machine %u is not supported by this loader", e->e_machine);
#if defined(__x86_64__)
  if (e->e_machine != EM_X86_64)
#elif defined(__aarch64__)
  if (e->e_machine != EM_AARCH64)
#endif
    return bm_status_make(BM_ERR_INCOMPATIBLE, "code object for %s cannot run on this host", L->arch->name);
  if (e->e_shentsize != sizeof(Elf64_Shdr)) return ERR("section header size %u, expected %zu", e->e_shentsize, sizeof(Elf64_Shdr));
  if (e->e_shnum == 0 || e->e_shnum > MAX_SECTIONS) return ERR("bad section count %u", e->e_shnum);
  if (!in_file(L, e->e_shoff, (uint64_t)e->e_shnum * sizeof(Elf64_Shdr)))
    return ERR("section headers (offset %llu, %u entries) lie outside the %zu-byte object",
               (unsigned long long)e->e_shoff, e->e_shnum, L->size);
  if (e->e_shstrndx == SHN_UNDEF || e->e_shstrndx >= e->e_shnum)
    return ERR("bad section name table index %u", e->e_shstrndx);
  L->shnum = e->e_shnum;
  L->sh = malloc(L->shnum * sizeof *L->sh);
  L->sec_addr = calloc(L->shnum, sizeof *L->sec_addr);
  if (!L->sh || !L->sec_addr) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "code object: section table");
  memcpy(L->sh, L->data + e->e_shoff, L->shnum * sizeof *L->sh);

  for (unsigned i = 0; i < L->shnum; i++) {
    const Elf64_Shdr *s = &L->sh[i];
    if (i == 0) continue;
    if (s->sh_type != SHT_NOBITS && !in_file(L, s->sh_offset, s->sh_size))
      return ERR("section %u (offset %llu, size %llu) lies outside the %zu-byte object", i,
                 (unsigned long long)s->sh_offset, (unsigned long long)s->sh_size, L->size);
    if (s->sh_addralign > MAX_ALIGN || (s->sh_addralign & (s->sh_addralign - 1)))
      return ERR("section %u has bad alignment %llu", i, (unsigned long long)s->sh_addralign);
    if ((s->sh_flags & SHF_ALLOC) && s->sh_size > MAX_IMAGE)
      return ERR("section %u is too large (%llu bytes)", i, (unsigned long long)s->sh_size);
  }
  const Elf64_Shdr *ss = &L->sh[e->e_shstrndx];
  if (ss->sh_type != SHT_STRTAB) return ERR("section name table (section %u) is not a string table", e->e_shstrndx);
  L->shstr = (const char *)L->data + ss->sh_offset;
  L->shstr_size = ss->sh_size;

  /* the symbol table */
  L->symtab = 0;
  for (unsigned i = 1; i < L->shnum; i++) {
    if (L->sh[i].sh_type != SHT_SYMTAB) continue;
    if (L->symtab) return ERR("more than one symbol table");
    L->symtab = i;
  }
  if (!L->symtab) return ERR("no symbol table");
  const Elf64_Shdr *st = &L->sh[L->symtab];
  if (st->sh_entsize != sizeof(Elf64_Sym) || st->sh_size % sizeof(Elf64_Sym))
    return ERR("symbol table entry size %llu / size %llu is invalid", (unsigned long long)st->sh_entsize,
               (unsigned long long)st->sh_size);
  if (st->sh_link == 0 || st->sh_link >= L->shnum || L->sh[st->sh_link].sh_type != SHT_STRTAB)
    return ERR("symbol table links to section %u, which is not a string table", st->sh_link);
  L->nsyms = st->sh_size / sizeof(Elf64_Sym);
  if (L->nsyms == 0) return ERR("empty symbol table");
  L->syms = malloc(L->nsyms * sizeof *L->syms);
  L->sym_state = calloc(L->nsyms, 1);
  L->got_slot = malloc(L->nsyms * sizeof(int64_t));
  L->stub_slot = malloc(L->nsyms * sizeof(int64_t));
  L->sym_addr = calloc(L->nsyms, sizeof(uint64_t));
  if (!L->syms || !L->sym_state || !L->got_slot || !L->stub_slot || !L->sym_addr)
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "code object: %llu symbols", (unsigned long long)L->nsyms);
  memcpy(L->syms, L->data + st->sh_offset, L->nsyms * sizeof *L->syms);
  L->str = (const char *)L->data + L->sh[st->sh_link].sh_offset;
  L->str_size = L->sh[st->sh_link].sh_size;
  for (uint64_t i = 0; i < L->nsyms; i++) {
    L->got_slot[i] = L->stub_slot[i] = -1;
    if (!str_at(L->str, L->str_size, L->syms[i].st_name))
      return ERR("symbol %llu has a bad name offset %u", (unsigned long long)i, L->syms[i].st_name);
  }
  return NULL;
}

/* Allocated sections with contents we lay out (not groups, not
 * LLVM address-significance tables). */
static bool is_loaded(const Elf64_Shdr *s) {
  if (!(s->sh_flags & SHF_ALLOC)) return false;
  return s->sh_type == SHT_PROGBITS || s->sh_type == SHT_NOBITS || s->sh_type == SHT_INIT_ARRAY ||
         s->sh_type == SHT_FINI_ARRAY || s->sh_type == SHT_X86_64_UNWIND || s->sh_type == SHT_NOTE;
}

/* Checks one RELA section; returns its target section index via *target,
 * or 0 if it applies to a section we do not load (debug info). */
static bm_status check_rela(loader *L, unsigned i, unsigned *target) {
  const Elf64_Shdr *s = &L->sh[i];
  *target = 0;
  if (s->sh_info == 0 || s->sh_info >= L->shnum)
    return ERR("relocation section %s targets bad section %u", sec_name(L, i), s->sh_info);
  if (!(L->sh[s->sh_info].sh_flags & SHF_ALLOC)) return NULL;
  if (!is_loaded(&L->sh[s->sh_info]))
    return ERR("relocation section %s targets section %u, which is not loadable", sec_name(L, i), s->sh_info);
  if (s->sh_link != L->symtab)
    return ERR("relocation section %s links to section %u, not the symbol table", sec_name(L, i), s->sh_link);
  if (s->sh_entsize != sizeof(Elf64_Rela) || s->sh_size % sizeof(Elf64_Rela))
    return ERR("relocation section %s has bad entry size", sec_name(L, i));
  if (L->sh[s->sh_info].sh_type == SHT_NOBITS)
    return ERR("relocation section %s targets a NOBITS section", sec_name(L, i));
  *target = s->sh_info;
  return NULL;
}

static void read_rela(const loader *L, unsigned i, uint64_t k, Elf64_Rela *r) {
  memcpy(r, L->data + L->sh[i].sh_offset + k * sizeof *r, sizeof *r);
}

/* Pass 1: which symbols need a GOT entry or a stub; unknown types. */
static bm_status scan_relocs(loader *L, uint64_t *ngot, uint64_t *nstub) {
  *ngot = *nstub = 0;
  for (unsigned i = 1; i < L->shnum; i++) {
    if (L->sh[i].sh_type == SHT_REL)
      if (L->sh[i].sh_info < L->shnum && (L->sh[L->sh[i].sh_info].sh_flags & SHF_ALLOC))
        return ERR("REL (not RELA) relocations in %s are not supported", sec_name(L, i));
    if (L->sh[i].sh_type != SHT_RELA) continue;
    unsigned target;
    BM_RETURN_IF_ERROR(check_rela(L, i, &target));
    if (!target) continue;
    uint64_t n = L->sh[i].sh_size / sizeof(Elf64_Rela);
    for (uint64_t k = 0; k < n; k++) {
      Elf64_Rela r;
      read_rela(L, i, k, &r);
      uint64_t sym = ELF64_R_SYM(r.r_info);
      uint32_t type = (uint32_t)ELF64_R_TYPE(r.r_info);
      if (sym >= L->nsyms)
        return ERR("relocation %llu in %s uses symbol %llu of %llu", (unsigned long long)k,
                   sec_name(L, i), (unsigned long long)sym, (unsigned long long)L->nsyms);
      bool undef = L->syms[sym].st_shndx == SHN_UNDEF && sym != 0;
      int need = L->arch->needs(type, undef);
      if (need < 0)
        return ERR("unsupported relocation type %u (%s) in %s", type, L->arch->type_name(type),
                   sec_name(L, i));
      int w = L->arch->width(type);
      uint64_t size = L->sh[target].sh_size;
      if (r.r_offset > size || (uint64_t)w > size - r.r_offset)
        return ERR("relocation %llu in %s at offset %llu lies outside %s (%llu bytes)",
                   (unsigned long long)k, sec_name(L, i), (unsigned long long)r.r_offset,
                   sec_name(L, target), (unsigned long long)size);
      if ((need & NEED_GOT) && L->got_slot[sym] < 0) L->got_slot[sym] = (int64_t)(*ngot)++;
      if ((need & NEED_STUB) && L->stub_slot[sym] < 0) L->stub_slot[sym] = (int64_t)(*nstub)++;
    }
  }
  return NULL;
}

static uint64_t align_up(uint64_t v, uint64_t a) { return a ? (v + a - 1) & ~(a - 1) : v; }

static void *find_import(const bm_elf_import *t, const char *name) {
  for (; t && t->name; t++)
    if (strcmp(t->name, name) == 0) return t->addr;
  return NULL;
}

static bm_status resolve_symbols(loader *L) {
  for (uint64_t i = 1; i < L->nsyms; i++) {
    const Elf64_Sym *s = &L->syms[i];
    const char *name = L->str + s->st_name;
    if (s->st_shndx == SHN_UNDEF) {
      void *a = find_import(L->imports, name);
      if (a) L->sym_addr[i] = (uint64_t)(uintptr_t)a;
      else L->sym_state[i] = 1;
    } else if (s->st_shndx == SHN_ABS) {
      L->sym_addr[i] = s->st_value;
    } else if (s->st_shndx >= SHN_LORESERVE || s->st_shndx >= L->shnum) {
      L->sym_state[i] = 2;
    } else if (L->sec_addr[s->st_shndx]) {
      if (s->st_value > L->sh[s->st_shndx].sh_size)
        return ERR("symbol '%s' value %llu lies outside section %s", name,
                   (unsigned long long)s->st_value, sec_name(L, s->st_shndx));
      L->sym_addr[i] = L->sec_addr[s->st_shndx] + s->st_value;
    } else {
      L->sym_state[i] = 2; /* in a section we did not load */
    }
  }
  return NULL;
}

static bm_status apply_relocs(loader *L, uint8_t *got, uint8_t *stubs) {
  for (unsigned i = 1; i < L->shnum; i++) {
    if (L->sh[i].sh_type != SHT_RELA) continue;
    unsigned target;
    BM_RETURN_IF_ERROR(check_rela(L, i, &target));
    if (!target) continue;
    uint64_t n = L->sh[i].sh_size / sizeof(Elf64_Rela);
    for (uint64_t k = 0; k < n; k++) {
      Elf64_Rela r;
      read_rela(L, i, k, &r);
      uint64_t sym = ELF64_R_SYM(r.r_info);
      uint32_t type = (uint32_t)ELF64_R_TYPE(r.r_info);
      const char *name = L->str + L->syms[sym].st_name;
      if (type == 0) continue; /* R_*_NONE on every arch */
      if (L->sym_state[sym] == 1)
        return bm_status_make(BM_ERR_CORRUPT, "code object: unresolved symbol '%s' (not in the runtime's import table)", name);
      if (L->sym_state[sym] == 2)
        return ERR("relocation in %s refers to symbol '%s' in section %u, which is not loaded",
                   sec_name(L, i), name, L->syms[sym].st_shndx);
      reloc_ctx c = {.type = type,
                     .place = (uint8_t *)(uintptr_t)(L->sec_addr[target] + r.r_offset),
                     .P = L->sec_addr[target] + r.r_offset,
                     .S = L->sym_addr[sym],
                     .A = r.r_addend};
      if (L->got_slot[sym] >= 0) c.G = (uint64_t)(uintptr_t)(got + 8 * L->got_slot[sym]);
      if (L->stub_slot[sym] >= 0 && (L->arch->needs(type, true) & NEED_STUB))
        c.S = (uint64_t)(uintptr_t)(stubs + L->arch->stub_size * (uint64_t)L->stub_slot[sym]);
      bm_status st = L->arch->apply(&c);
      if (st) return bm_status_wrap(st, "in %s", sec_name(L, i));
    }
  }
  return NULL;
}

/* Named global/weak symbols defined in a loaded section are looked up by name. */
static bool is_export(const loader *L, uint64_t i) {
  const Elf64_Sym *s = &L->syms[i];
  int bind = ELF64_ST_BIND(s->st_info);
  return (bind == STB_GLOBAL || bind == STB_WEAK) && s->st_shndx != SHN_UNDEF && s->st_shndx != SHN_ABS &&
         !L->sym_state[i] && L->str[s->st_name] != 0;
}

static bm_status collect_exports(loader *L) {
  size_t nbytes = 0;
  int n = 0;
  for (uint64_t i = 1; i < L->nsyms; i++)
    if (is_export(L, i)) {
      nbytes += strlen(L->str + L->syms[i].st_name) + 1;
      n++;
    }
  bm_elf_image *img = L->img;
  img->exports = calloc((size_t)n + 1, sizeof *img->exports);
  img->names = malloc(nbytes + 1);
  if (!img->exports || !img->names) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "code object: symbols");
  char *p = img->names;
  for (uint64_t i = 1; i < L->nsyms; i++) {
    if (!is_export(L, i)) continue;
    const char *name = L->str + L->syms[i].st_name;
    size_t len = strlen(name) + 1;
    memcpy(p, name, len);
    img->exports[img->nexports].name = p;
    img->exports[img->nexports].addr = (void *)(uintptr_t)L->sym_addr[i];
    img->nexports++;
    p += len;
  }
  return NULL;
}

static bm_status load(loader *L) {
  BM_RETURN_IF_ERROR(check_headers(L));
  uint64_t ngot, nstub;
  BM_RETURN_IF_ERROR(scan_relocs(L, &ngot, &nstub));

  /* layout: [exec sections][stubs] | [read-only sections][GOT] | [writable sections] */
  uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
  uint64_t off = 0, stubs_off = 0, got_off = 0, ro_start = 0, rw_start = 0;
  uint64_t *sec_off = calloc(L->shnum, sizeof *sec_off);
  if (!sec_off) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "code object layout");
  for (int cls = 0; cls < 3; cls++) {
    if (cls == 1) ro_start = off = align_up(off, page);
    if (cls == 2) rw_start = off = align_up(off, page);
    for (unsigned i = 1; i < L->shnum; i++) {
      const Elf64_Shdr *s = &L->sh[i];
      if (!is_loaded(s)) continue;
      int c = (s->sh_flags & SHF_EXECINSTR) ? 0 : (s->sh_flags & SHF_WRITE) ? 2 : 1;
      if (c != cls) continue;
      if (s->sh_flags & SHF_TLS) {
        free(sec_off);
        return ERR("thread-local section %s is not supported", sec_name(L, i));
      }
      off = align_up(off, s->sh_addralign ? s->sh_addralign : 1);
      sec_off[i] = off;
      off += s->sh_size;
      if (off > MAX_IMAGE) {
        free(sec_off);
        return ERR("allocated sections exceed %llu bytes", (unsigned long long)MAX_IMAGE);
      }
    }
    if (cls == 0) {
      stubs_off = off = align_up(off, 16);
      off += nstub * L->arch->stub_size;
    }
    if (cls == 1) {
      got_off = off = align_up(off, 8);
      off += ngot * 8;
    }
  }
  uint64_t total = align_up(off, page);
  if (total == 0) total = page;
  if (total > MAX_IMAGE) {
    free(sec_off);
    return ERR("image of %llu bytes is too large", (unsigned long long)total);
  }

  uint8_t *base = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) {
    free(sec_off);
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "code object: mmap of %llu bytes failed", (unsigned long long)total);
  }
  L->img->base = base;
  L->img->size = total;
  for (unsigned i = 1; i < L->shnum; i++) {
    const Elf64_Shdr *s = &L->sh[i];
    if (!is_loaded(s)) continue;
    L->sec_addr[i] = (uint64_t)(uintptr_t)(base + sec_off[i]);
    if (s->sh_type != SHT_NOBITS && s->sh_size) memcpy(base + sec_off[i], L->data + s->sh_offset, s->sh_size);
  }
  free(sec_off);

  BM_RETURN_IF_ERROR(resolve_symbols(L));
  /* GOT entries and stubs */
  uint8_t *got = base + got_off, *stubs = base + stubs_off;
  for (uint64_t i = 0; i < L->nsyms; i++) {
    if (L->got_slot[i] < 0) continue;
    if (L->sym_state[i] == 1)
      return bm_status_make(BM_ERR_CORRUPT, "code object: unresolved symbol '%s' (not in the runtime's import table)",
                            L->str + L->syms[i].st_name);
    memcpy(got + 8 * L->got_slot[i], &L->sym_addr[i], 8);
    if (L->stub_slot[i] >= 0)
      L->arch->write_stub(stubs + L->arch->stub_size * (uint64_t)L->stub_slot[i], got + 8 * L->got_slot[i]);
  }
  BM_RETURN_IF_ERROR(apply_relocs(L, got, stubs));
  BM_RETURN_IF_ERROR(collect_exports(L));

  /* protect: text+stubs RX, rodata+GOT RO, data RW */
  if ((ro_start && mprotect(base, ro_start, PROT_READ | PROT_EXEC) != 0) ||
      (rw_start > ro_start && mprotect(base + ro_start, rw_start - ro_start, PROT_READ) != 0))
    return bm_status_make(BM_ERR_IO, "code object: mprotect failed");
  __builtin___clear_cache((char *)base, (char *)base + ro_start);
  return NULL;
}

bm_status bm_elf_load(const void *data, size_t size, const bm_elf_import *imports, bm_elf_image **out) {
  if (out) *out = NULL;
  if (!data || !out) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_elf_load: NULL argument");
  loader L = {.data = data, .size = size, .imports = imports ? imports : bm_elf_default_imports};
  L.img = calloc(1, sizeof *L.img);
  if (!L.img) return bm_status_make(BM_ERR_OUT_OF_MEMORY, "code object");
  bm_status s = load(&L);
  free(L.sh);
  free(L.sec_addr);
  free(L.syms);
  free(L.sym_state);
  free(L.got_slot);
  free(L.stub_slot);
  free(L.sym_addr);
  if (s) {
    bm_elf_unload(L.img);
    return s;
  }
  *out = L.img;
  return NULL;
}
