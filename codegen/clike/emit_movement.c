/* emit_movement.c - the bandwidth paths of the data-movement ops for CUDA:
 * PERMUTE / SLICE / CONCAT / RESHAPE as a copy of 16-, 8- or 4-byte vectors,
 * the tiled transpose of 16-bit data, and the 2x nearest UPSAMPLE of 16-bit
 * data. emit.c's emit_movement asks here first and keeps its element-wise
 * kernel as the fallback (and for every op under BM_CUDA_MOVE=old). */
#include <stdlib.h>
#include <string.h>

#include "emit_internal.h"

/* ------------------------------------------------------------------ the strided map */

/* A movement of one input as a strided copy: output element (c0 .. c{r-1})
 * (adjacent dims merged where the input is contiguous across them) reads
 * input element base + sum c_d * stride(d), stride(d) = st[d] where from[d]
 * < 0, else st[d] * (the product of the input's dims from[d] .. ndim-1: a
 * symbolic stride, e.g. the batch's over a symbolic sequence). */
typedef struct mv_map {
  int r;
  bm_dim dims[BM_MAX_DIMS];
  int64_t st[BM_MAX_DIMS];
  int from[BM_MAX_DIMS];
  int64_t base;
} mv_map;

/* Row-major strides of x; -1 where a later dim is symbolic. */
static void static_strides(const bm_node *x, int64_t *st) {
  int64_t s = 1;
  for (int d = x->ndim - 1; d >= 0; d--) {
    st[d] = s;
    if (s >= 0) s = bm_dim_is_static(x->shape[d]) ? s * x->shape[d].add : -1;
  }
}

/* Row-major strides of x as (st, from) (see mv_map): static where every later
 * dim is, else 1 x the product of the dims after d. */
static void map_strides(const bm_node *x, int64_t *st, int *from) {
  static_strides(x, st);
  for (int d = 0; d < x->ndim; d++) {
    from[d] = st[d] < 0 ? d + 1 : -1;
    if (st[d] < 0) st[d] = 1;
  }
}

/* The static factor of stride d of m over input x (what divides it for sure). */
static int64_t map_stride_static(const mv_map *m, const bm_node *x, int d) {
  int64_t s = m->st[d];
  if (m->from[d] >= 0)
    for (int j = m->from[d]; j < x->ndim; j++)
      if (bm_dim_is_static(x->shape[j])) s *= x->shape[j].add;
  return s;
}

/* Merges dim d into d+1 where both dims and strides are static and the input
 * runs on across them. */
static void map_merge(mv_map *m) {
  int w = m->r - 1;
  bm_dim dims[BM_MAX_DIMS];
  int64_t st[BM_MAX_DIMS];
  int from[BM_MAX_DIMS];
  dims[w] = m->dims[m->r - 1];
  st[w] = m->st[m->r - 1];
  from[w] = m->from[m->r - 1];
  for (int d = m->r - 2; d >= 0; d--) {
    if (bm_dim_is_static(m->dims[d]) && bm_dim_is_static(dims[w]) && m->from[d] < 0 && from[w] < 0 &&
        m->st[d] == st[w] * dims[w].add) {
      dims[w] = bm_dim_c(dims[w].add * m->dims[d].add);
      continue;
    }
    w--;
    dims[w] = m->dims[d];
    st[w] = m->st[d];
    from[w] = m->from[d];
  }
  int r = m->r - w;
  memmove(m->dims, dims + w, (size_t)r * sizeof dims[0]);
  memmove(m->st, st + w, (size_t)r * sizeof st[0]);
  memmove(m->from, from + w, (size_t)r * sizeof from[0]);
  m->r = r;
}

/* BM_CUDA_MOVE=static (read by bmc): the strided copy only where every input
 * stride is static (before symbolic strides: the LLM's head split/merge and
 * q/k/v slices over a symbolic sequence took the element-wise kernel). */
static bool move_static_only(void) {
  const char *e = getenv("BM_CUDA_MOVE");
  return e && strcmp(e, "static") == 0;
}

/* The map of a PERMUTE, SLICE or RESHAPE (strides static or symbolic, see mv_map). */
static bool map_build(const bm_node *n, mv_map *m) {
  const bm_node *x = n->in[0];
  int64_t st[BM_MAX_DIMS];
  int from[BM_MAX_DIMS];
  map_strides(x, st, from);
  memset(m, 0, sizeof *m);
  m->r = n->ndim;
  for (int d = 0; d < n->ndim; d++) m->dims[d] = n->shape[d];
  switch (n->op) {
    case BM_OP_PERMUTE:
      for (int d = 0; d < n->ndim; d++) {
        m->st[d] = st[n->a.perm[d]];
        m->from[d] = from[n->a.perm[d]];
      }
      break;
    case BM_OP_SLICE: {
      const int ax = n->a.axis;
      int64_t begin = n->a.begin;
      if (n->a.step < 1) return false;
      if (begin < 0) {
        if (!bm_dim_is_static(x->shape[ax])) return false;
        begin += x->shape[ax].add;
      }
      for (int d = 0; d < n->ndim; d++) {
        m->st[d] = d == ax ? st[d] * n->a.step : st[d];
        m->from[d] = from[d];
      }
      if (from[ax] >= 0 && begin != 0) return false; /* a symbolic base */
      m->base = begin * st[ax];
      break;
    }
    case BM_OP_RESHAPE: /* the output's own row-major order (the input is contiguous) */
      static_strides(n, m->st);
      for (int d = 0; d < n->ndim; d++) {
        m->from[d] = -1;
        if (m->st[d] < 0) return false;
      }
      break;
    default: return false;
  }
  if (n->ndim == 0) return false;
  if (move_static_only() && n->op != BM_OP_RESHAPE) /* BM_CUDA_MOVE=static: only static strides */
    for (int d = 0; d < m->r; d++)
      if (m->from[d] >= 0) return false;
  map_merge(m);
  return true;
}

/* The vector elements (16, 8 or 4 bytes, at least 2 elements) for a copy whose
 * contiguous runs are `run` elements long and start at multiples of `align`
 * elements; 0 if none fits. */
static int vec_elems(int64_t es, int64_t run, int64_t align) {
  for (int vb = 16; vb >= 4; vb /= 2) {
    if (vb % es || vb / es < 2) continue;
    const int64_t v = vb / es;
    if (run % v == 0 && align % v == 0) return (int)v;
  }
  return 0;
}

static bool move_old(void) {
  const char *e = getenv("BM_CUDA_MOVE");
  return e && strcmp(e, "old") == 0;
}

/* PERMUTE / SLICE / RESHAPE: the vector (elements) of the strided copy, 0 if none. */
static int map_vec(const bm_node *n, mv_map *m) {
  if (n->in[0]->dtype != n->dtype || n->dtype == BM_DTYPE_I4 || !map_build(n, m)) return 0;
  const int L = m->r - 1;
  if (m->st[L] != 1 || !bm_dim_is_static(m->dims[L])) return 0;
  /* the run, the base and every stride must be multiples of the vector */
  const int64_t es = (int64_t)bm_dtype_nbytes(n->dtype, 1);
  for (int64_t v = 16 / es; v >= 2 && v * es >= 4; v /= 2) {
    bool ok = m->dims[L].add % v == 0 && m->base % v == 0 && m->from[L] < 0;
    for (int d = 0; d < L && ok; d++) ok = map_stride_static(m, n->in[0], d) % v == 0;
    if (ok) return (int)v;
  }
  return 0;
}

/* CONCAT along a dim before the last: (outer, A, inner) with `inner` static:
 * the vector, 0 if none. */
static int concat_vec(const bm_node *n, int64_t *inner) {
  const int ax = n->a.axis;
  if (n->dtype == BM_DTYPE_I4 || ax < 0 || ax >= n->ndim) return 0;
  for (int j = 0; j < n->nin; j++)
    if (n->in[j]->dtype != n->dtype) return 0;
  int64_t in = 1;
  for (int d = ax + 1; d < n->ndim; d++) {
    if (!bm_dim_is_static(n->shape[d])) return 0;
    in *= n->shape[d].add;
  }
  *inner = in;
  const int64_t es = (int64_t)bm_dtype_nbytes(n->dtype, 1);
  int v = vec_elems(es, in, in);
  return v >= 2 && v * es >= 4 ? v : 0;
}

/* The copy of one vector: output vector `ov` <- input buffer `buf`, vector `iv`
 * (offsets in vectors). Loads of 16 bytes through the prelude's volatile
 * bm_ld16 (activations: never above the PDL wait); 8 and 4 bytes as plain
 * loads (ordinary C loads stay below the wait's memory clobber). */
static void vec_copy(ck *k, int V, int buf, const char *ov, const char *iv, const char *indent) {
  const int vb = V * (int)bm_dtype_nbytes(k->n->dtype, 1);
  const char *ty = vb == 8 ? "uint2" : "unsigned int";
  if (vb == 16)
    P("%s((BM_GLOBAL bm_u4 *)bm_out(%d))[%s] = bm_ld16((const BM_GLOBAL bm_u4 *)bm_buf(%d) + %s);\n", indent,
      k->n->nin, ov, buf, iv);
  else
    P("%s((BM_GLOBAL %s *)bm_out(%d))[%s] = ((const BM_GLOBAL %s *)bm_buf(%d))[%s];\n", indent, ty, k->n->nin, ov, ty,
      buf, iv);
}

static bm_status emit_map_copy(ck *k, const mv_map *m, int V) {
  const bm_node *n = k->n;
  const int T = k->threads = 256, L = m->r - 1;
  k->tasks = ck_task_linear(k->g, n->ndim, n->shape, (int64_t)T * V);
  bm_dim dims[BM_MAX_DIMS];
  memcpy(dims, m->dims, sizeof dims);
  dims[L] = bm_dim_c(m->dims[L].add / V);
  str nv = ck_prodx(k, dims, 0, m->r);
  P("  /* a strided copy of %d-byte vectors (%d elements) */\n", V * (int)bm_dtype_nbytes(n->dtype, 1), V);
  P("  const %s nv = %s;\n", k->I, nv.s);
  ck_loop_open(k, ck_strf("(nv + %d) / %d", T - 1, T).s);
  P("    const %s v = t * %d + tid;\n", k->I, T);
  P("    if (v < nv) {\n");
  ck_unravel(k, "v", m->r, dims, "c");
  str off = ck_strf("%lld", (long long)(m->base / V));
  for (int d = 0; d < m->r; d++) {
    if (d == L)
      off = ck_strf("%s + c%d", off.s, d);
    else if (m->from[d] < 0)
      off = ck_strf("%s + c%d * %lld", off.s, d, (long long)(m->st[d] / V));
    else /* a symbolic stride: st x the product of the input's dims from[d] on, a multiple of V */
      off = ck_strf("%s + c%d * (%s * %lld / %d)", off.s, d,
                    ck_prodx(k, n->in[0]->shape, m->from[d], n->in[0]->ndim).s, (long long)m->st[d], V);
  }
  P("      const %s s = %s;\n", k->I, off.s);
  vec_copy(k, V, 0, "v", "s", "      ");
  P("    }\n");
  ck_loop_close(k);
  return NULL;
}

/* CONCAT along ax (not the last dim): output vector v = (o, a, i) over
 * (outer, A, inner / V); part j holds a in [start_j, start_j + A_j). */
static bm_status emit_concat_vec(ck *k, int V, int64_t inner) {
  const bm_node *n = k->n;
  const int T = k->threads = 256, ax = n->a.axis;
  k->tasks = ck_task_linear(k->g, n->ndim, n->shape, (int64_t)T * V);
  const long long IV = (long long)(inner / V);
  str outer = ck_prodx(k, n->shape, 0, ax);
  str A = ck_dimx(k, n->shape[ax]);
  P("  /* concat of %d-byte vectors (%d elements), inner runs of %lld vectors */\n",
    V * (int)bm_dtype_nbytes(n->dtype, 1), V, IV);
  P("  const %s A = %s, nv = %s * A * %lld;\n", k->I, A.s, outer.s, IV);
  ck_loop_open(k, ck_strf("(nv + %d) / %d", T - 1, T).s);
  P("    const %s v = t * %d + tid;\n", k->I, T);
  P("    if (v < nv) {\n");
  P("      const %s i = v %% %lld, oa = v / %lld, a = oa %% A, o = oa / A;\n", k->I, IV, IV);
  str start = ck_strf("0");
  for (int j = 0; j < n->nin; j++) {
    str len = ck_dimx(k, n->in[j]->shape[ax]);
    str end = ck_strf("(%s + %s)", start.s, len.s);
    if (j < n->nin - 1)
      P("      %sif (a < %s) {\n", j ? "else " : "", end.s);
    else
      P("      %s{\n", j ? "else " : "");
    str iv = ck_strf("(o * %s + (a - %s)) * %lld + i", len.s, start.s, IV);
    vec_copy(k, V, j, "v", iv.s, "        ");
    P("      }\n");
    start = end;
  }
  P("    }\n");
  ck_loop_close(k);
  return NULL;
}

/* ------------------------------------------------------------------ the tiled transpose */

/* PERMUTE of 16-bit elements that swaps two blocks of dims, perm = [0 .. a-1,
 * b .. r-1, a .. b-1]: a batched transpose (B, R, C) -> (B, C, R) with B the
 * dims before a (at most one symbolic: the first), R = dims [a, b), C = dims
 * [b, r), R and C static multiples of 8. NCHW -> NHWC (the NHWC conv's input,
 * passes/layout_conv.c) is R = C channels, C = H*W; the UNet's (b, 320, 4096)
 * <-> (b, 4096, 320) are the others. */
static bool transpose_dims(const bm_node *n, bm_dim *B, int64_t *R, int64_t *C) {
  if (n->op != BM_OP_PERMUTE || n->in[0]->dtype != n->dtype) return false;
  if (n->dtype != BM_DTYPE_F16 && n->dtype != BM_DTYPE_BF16) return false;
  const bm_node *x = n->in[0];
  const int r = n->ndim;
  int a = 0;
  while (a < r && n->a.perm[a] == a) a++;
  if (a >= r - 1) return false;
  const int b = n->a.perm[a];
  if (b <= a) return false;
  for (int d = a; d < r; d++) /* [b .. r-1] then [a .. b-1] */
    if (n->a.perm[d] != (d - a < r - b ? b + (d - a) : a + (d - a - (r - b)))) return false;
  *R = *C = 1;
  for (int d = a; d < r; d++) {
    if (!bm_dim_is_static(x->shape[d])) return false;
    *(d < b ? R : C) *= x->shape[d].add;
  }
  *B = bm_dim_c(1);
  for (int d = 0; d < a; d++) {
    if (d == 0) {
      *B = x->shape[0];
    } else {
      if (!bm_dim_is_static(x->shape[d]) || !bm_dim_is_static(*B)) return false;
      *B = bm_dim_c(B->add * x->shape[d].add);
    }
  }
  return *R % 8 == 0 && *C % 8 == 0;
}

bool ck_nhwc_transpose_ok(const bm_clike_lang *L, const bm_node *n) {
  bm_dim B;
  int64_t R, C;
  if (!L || !L->tensor_cores || !transpose_dims(n, &B, &R, &C)) return false;
  if (move_old()) /* the previous rule: only NCHW -> NHWC */
    return n->ndim == 4 && n->a.perm[0] == 0 && n->a.perm[1] == 2 && n->a.perm[2] == 3 && n->a.perm[3] == 1;
  return true;
}

/* 64 x 64 tiles through shared memory per block of 256 threads, 16-byte loads
 * along C and 16-byte stores along R (chunks are all in or all out), 66-element
 * rows of shared memory (8 rows of one column are read 33 words apart: no bank
 * conflict). The elementwise permute reads with a stride of C elements. */
bm_status emit_nhwc_transpose(ck *k) {
  const bm_node *n = k->n;
  const char *I = k->I;
  k->threads = 256;
  bm_dim B;
  int64_t R, C;
  if (!transpose_dims(n, &B, &R, &C)) return bm_status_make(BM_ERR_INTERNAL, "clike: not a tiled transpose");
  bm_dim dims[3] = {B, bm_dim_c(R), bm_dim_c(C)};
  const int64_t divs[3] = {1, 64, 64};
  k->tasks = ck_task_grid(k->g, 3, dims, divs);
  str nb = ck_dimx(k, B);
  P("  /* (B, R, C) -> (B, C, R): 64 x 64 tiles through shared memory */\n");
  P("  BM_SHARED unsigned short ts[64 * 66];\n");
  P("  const %s C = %lld, P = %lld, tc = (C + 63) / 64, tp = (P + 63) / 64;\n", I, (long long)R, (long long)C);
  ck_loop_open(k, ck_strf("%s * tc * tp", nb.s).s);
  P("    const %s img = t / (tc * tp), c0 = ((t / tp) %% tc) * 64, p0 = (t %% tp) * 64;\n", I);
  P("    const unsigned short *xs = (const unsigned short *)bm_buf(0) + (bm_i64)img * C * P;\n");
  P("    unsigned short *ys = (unsigned short *)bm_out(1) + (bm_i64)img * C * P;\n");
  P("#pragma unroll\n    for (int i = 0; i < 2; i++) { /* load: row r, 8 columns from 8 q */\n");
  P("      const int e = tid + 256 * i, r = e >> 3, q = e & 7;\n");
  P("      const %s c = c0 + r, p = p0 + 8 * q;\n", I);
  P("      bm_u4 v = {{0u, 0u, 0u, 0u}};\n");
  P("      if (c < C && p < P) v = bm_ld16(xs + (bm_i64)c * P + p);\n");
  P("#pragma unroll\n      for (int j = 0; j < 4; j++) {\n");
  P("        ts[r * 66 + 8 * q + 2 * j] = (unsigned short)(v.w[j] & 0xffffu);\n");
  P("        ts[r * 66 + 8 * q + 2 * j + 1] = (unsigned short)(v.w[j] >> 16);\n");
  P("      }\n");
  P("    }\n");
  P("    BM_SYNC();\n");
  P("#pragma unroll\n    for (int i = 0; i < 2; i++) { /* store: column pr, 8 rows from 8 q */\n");
  P("      const int e = tid + 256 * i, pr = e >> 3, q = e & 7;\n");
  P("      const %s c = c0 + 8 * q, p = p0 + pr;\n", I);
  P("      bm_u4 v;\n");
  P("#pragma unroll\n      for (int j = 0; j < 4; j++)\n");
  P("        v.w[j] = (unsigned int)ts[(8 * q + 2 * j) * 66 + pr] | ((unsigned int)ts[(8 * q + 2 * j + 1) * 66 + pr] << 16);\n");
  P("      if (c < C && p < P) *(bm_u4 *)(ys + (bm_i64)p * C + c) = v;\n");
  P("    }\n");
  P("    BM_SYNC(); /* the next tile reuses ts */\n");
  ck_loop_close(k);
  return NULL;
}

/* ------------------------------------------------------------------ 2x nearest upsample */

/* UPSAMPLE scale 2 of 16-bit data, (.., H, W) -> (.., 2H, 2W), W a multiple of
 * 4: a thread reads 4 input elements (8 bytes) and writes them doubled as one
 * 16-byte vector to both output rows. */
static bool upsample2_ok(const bm_node *n) {
  const bm_node *x = n->in[0];
  if (n->op != BM_OP_UPSAMPLE || n->a.scale != 2 || x->dtype != n->dtype || n->ndim < 2) return false;
  if (n->dtype != BM_DTYPE_F16 && n->dtype != BM_DTYPE_BF16) return false;
  for (int d = n->ndim - 2; d < n->ndim; d++)
    if (!bm_dim_is_static(x->shape[d])) return false;
  return x->shape[n->ndim - 1].add % 4 == 0;
}

static bm_status emit_upsample2(ck *k) {
  const bm_node *n = k->n, *x = n->in[0];
  const int T = k->threads = 256, r = n->ndim;
  const long long W4 = (long long)x->shape[r - 1].add / 4;
  k->tasks = ck_task_linear(k->g, x->ndim, x->shape, (int64_t)T * 4);
  str nv = ck_prodx(k, x->shape, 0, r);
  P("  /* 2x nearest: 4 inputs (8 bytes) -> 8 outputs (16 bytes) in each of 2 rows */\n");
  P("  const %s nv = %s / 4;\n", k->I, nv.s);
  ck_loop_open(k, ck_strf("(nv + %d) / %d", T - 1, T).s);
  P("    const %s v = t * %d + tid;\n", k->I, T);
  P("    if (v < nv) {\n");
  P("      const %s row = v / %lld, w = v %% %lld; /* input row (.., h), 4-element column w */\n", k->I, W4, W4);
  P("      const uint2 u = ((const BM_GLOBAL uint2 *)bm_buf(0))[v];\n");
  P("      bm_u4 o;\n");
  P("      o.w[0] = (u.x & 0xffffu) * 0x10001u;\n");
  P("      o.w[1] = (u.x >> 16) * 0x10001u;\n");
  P("      o.w[2] = (u.y & 0xffffu) * 0x10001u;\n");
  P("      o.w[3] = (u.y >> 16) * 0x10001u;\n");
  P("      const %s o0 = (2 * row) * %lld + w; /* output row 2 * row (rows of W / 4 16-byte vectors) */\n", k->I, W4);
  P("      ((BM_GLOBAL bm_u4 *)bm_out(1))[o0] = o;\n");
  P("      ((BM_GLOBAL bm_u4 *)bm_out(1))[o0 + %lld] = o;\n", W4);
  P("    }\n");
  ck_loop_close(k);
  return NULL;
}

/* ------------------------------------------------------------------ entry */

bool ck_movement_fast(ck *k, bm_status *st) {
  const bm_node *n = k->n;
  *st = NULL;
  if (!k->L || !k->L->tensor_cores) return false; /* the CUDA prelude's vectors */
  if (ck_nhwc_transpose_ok(k->L, n)) {
    *st = emit_nhwc_transpose(k);
    return true;
  }
  if (move_old()) return false;
  mv_map m;
  int V;
  int64_t inner;
  switch (n->op) {
    case BM_OP_PERMUTE:
    case BM_OP_SLICE:
    case BM_OP_RESHAPE:
      if ((V = map_vec(n, &m)) == 0) return false;
      *st = emit_map_copy(k, &m, V);
      return true;
    case BM_OP_CONCAT:
      if ((V = concat_vec(n, &inner)) == 0) return false;
      *st = emit_concat_vec(k, V, inner);
      return true;
    case BM_OP_UPSAMPLE:
      if (!upsample2_ok(n)) return false;
      *st = emit_upsample2(k);
      return true;
    default: return false;
  }
}
