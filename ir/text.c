/* text.c - the IR's text form: bm_graph_to_text dumps a graph, and
 * bm_graph_parse reads it back (dump(parse(dump(g))) == dump(g)). The
 * grammar is in docs/ir.md. The parser is bounds-checked everywhere and
 * reports "<message> at line L, column C". */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"

/* ================================================================== dump */

typedef struct sbuf {
  char *p;
  size_t len, cap;
  bool oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
  if (b->oom) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = b->cap - b->len;
    int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? room : 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
      b->oom = true;
      return;
    }
    if (b->p && (size_t)n < room) {
      b->len += (size_t)n;
      return;
    }
    size_t ncap = b->cap ? b->cap * 2 : 4096;
    while (ncap < b->len + (size_t)n + 1) ncap *= 2;
    char *np = realloc(b->p, ncap);
    if (!np) {
      b->oom = true;
      return;
    }
    b->p = np;
    b->cap = ncap;
  }
}

/* Shortest %g form that reads back to the same float ("1e-05", "0.5", "inf"). */
static void fmt_float(char *buf, size_t size, float v) {
  for (int prec = 6; prec <= 9; prec++) {
    snprintf(buf, size, "%.*g", prec, (double)v);
    float back = strtof(buf, NULL);
    if (memcmp(&back, &v, sizeof v) == 0 || v != v) return;
  }
}

static void sb_float(sbuf *b, float v) {
  char buf[48];
  fmt_float(buf, sizeof buf, v);
  sb_printf(b, "%s", buf);
}

static void sb_string(sbuf *b, const char *s) {
  sb_printf(b, "\"");
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\')
      sb_printf(b, "\\%c", *p);
    else if (*p < 0x20 || *p >= 0x7f)
      sb_printf(b, "\\x%02x", *p);
    else
      sb_printf(b, "%c", *p);
  }
  sb_printf(b, "\"");
}

static bool is_ident(const char *s) {
  if (!s || !*s || !((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_')) return false;
  for (s++; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_'))
      return false;
  return true;
}

static void sb_type(sbuf *b, const bm_graph *g, const bm_node *n) {
  sb_printf(b, "%s [", bm_dtype_name(n->dtype));
  for (int i = 0; i < n->ndim && i < BM_MAX_DIMS; i++) {
    char d[96];
    sb_printf(b, "%s%s", i ? ", " : "", bm_dim_str(g, n->shape[i], d, sizeof d));
  }
  sb_printf(b, "]");
}

static void sb_prog(sbuf *b, const bm_prog *p) {
  sb_printf(b, "[");
  for (int i = 0; i < p->n && i < BM_MAX_PROG; i++) {
    const bm_prog_ins *in = &p->ins[i];
    sb_printf(b, "%s%s r%d", i ? "; " : "", in->op < BM_OP_COUNT ? bm_op_name(in->op) : "?", in->a);
    if (in->op < BM_OP_COUNT && (bm_op_table[in->op].flags & BM_OPF_BINARY)) {
      if (in->flags & BM_PROG_IMM_B) {
        sb_printf(b, " ");
        sb_float(b, in->imm);
      } else {
        sb_printf(b, " r%d", in->b);
      }
    }
  }
  sb_printf(b, "]");
}

static void sb_ints(sbuf *b, const char *name, const int32_t *v, int n) {
  sb_printf(b, "%s=[", name);
  for (int i = 0; i < n; i++) sb_printf(b, "%s%d", i ? ", " : "", v[i]);
  sb_printf(b, "]");
}

/* Prints "{...}" with exactly the attributes of the op's mask (plus the
 * epilogue), or nothing if there are none. */
static void sb_attrs(sbuf *b, const bm_node *n) {
  const bm_attrs *a = &n->a;
  const bm_op_info *info = &bm_op_table[n->op];
  unsigned at = info->attrs;
  bool epi = (info->flags & BM_OPF_EPILOGUE) && a->prog.n > 0;
  if (!at && !epi) return;
  int k = 0;
#define SEP() sb_printf(b, "%s", k++ ? ", " : " {")
  if (at & BM_ATTR_TRANS) SEP(), sb_printf(b, "trans_a=%d, trans_b=%d", a->trans_a, a->trans_b);
  if (at & BM_ATTR_CONV) {
    SEP(), sb_ints(b, "stride", a->stride, 2);
    SEP(), sb_ints(b, "pad", a->pad, 2);
    SEP(), sb_ints(b, "dilation", a->dilation, 2);
    SEP(), sb_printf(b, "groups=%d", a->groups);
    if (a->layout) SEP(), sb_printf(b, "layout=%d", a->layout); /* NCHW (0) is not written */
  }
  if (at & BM_ATTR_PERM) {
    int nd = n->nin > 0 && n->in[0] ? n->in[0]->ndim : n->ndim;
    if (nd < 0 || nd > BM_MAX_DIMS) nd = BM_MAX_DIMS;
    SEP(), sb_ints(b, "perm", a->perm, nd);
  }
  if (at & BM_ATTR_SLICE)
    SEP(), sb_printf(b, "axis=%d, begin=%" PRId64 ", end=%" PRId64 ", step=%" PRId64, a->axis,
                     a->begin, a->end, a->step);
  if (at & BM_ATTR_AXIS) SEP(), sb_printf(b, "axis=%d", a->axis);
  if (at & BM_ATTR_PAD) {
    int nd = n->nin > 0 && n->in[0] ? n->in[0]->ndim : n->ndim;
    if (nd < 0 || nd > BM_MAX_DIMS) nd = BM_MAX_DIMS;
    SEP(), sb_printf(b, "pads=[");
    for (int i = 0; i < 2 * nd; i++) sb_printf(b, "%s%" PRId64, i ? ", " : "", a->pads[i]);
    sb_printf(b, "], value=");
    sb_float(b, a->value);
  }
  if (at & BM_ATTR_SCALE) SEP(), sb_printf(b, "scale=%d", a->scale);
  if (at & BM_ATTR_AXES) {
    SEP(), sb_printf(b, "axes=[");
    int j = 0;
    for (int i = 0; i < 32; i++)
      if (a->axes & (1u << i)) sb_printf(b, "%s%d", j++ ? ", " : "", i);
    sb_printf(b, "], keepdim=%d", a->keepdim);
  }
  if (at & BM_ATTR_EPS) SEP(), sb_printf(b, "eps="), sb_float(b, a->eps);
  if (at & BM_ATTR_GROUPS) SEP(), sb_printf(b, "groups=%d", a->groups);
  if (at & BM_ATTR_ROPE) SEP(), sb_printf(b, "rope_mode=%d", a->rope_mode);
  if (at & BM_ATTR_ATTN) {
    SEP(), sb_printf(b, "attn_scale="), sb_float(b, a->attn_scale);
    sb_printf(b, ", causal=%d, window=%d, softcap=", a->causal, a->window);
    sb_float(b, a->softcap);
    sb_printf(b, ", attn_flags=%d", a->attn_flags);
  }
  if (at & BM_ATTR_TOPK) {
    SEP(), sb_printf(b, "topk=%d, fill=", a->topk);
    sb_float(b, a->fill);
  }
  if (at & BM_ATTR_ACT) {
    SEP();
    if ((unsigned)a->act < BM_OP_COUNT)
      sb_printf(b, "act=%s", bm_op_name((bm_op)a->act));
    else
      sb_printf(b, "act=%d", a->act);
  }
  if (at & BM_ATTR_PROG) SEP(), sb_printf(b, "prog="), sb_prog(b, &a->prog);
  if (epi) SEP(), sb_printf(b, "epi_nin=%d, epi=", a->prog.nin), sb_prog(b, &a->prog);
#undef SEP
  sb_printf(b, "}");
}

/* Element width used to print constant data: the dtype's bytes (i4: 1). */
static size_t const_unit(bm_dtype t) {
  size_t u = bm_dtype_nbytes(t, 1);
  return t == BM_DTYPE_I4 || u == 0 ? 1 : u;
}

static int node_pos(const bm_graph *g, const bm_node *x) {
  if (!x) return -1;
  if (x->id >= 0 && x->id < g->nnodes && g->nodes[x->id] == x) return x->id;
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i] == x) return i;
  return -1;
}

bm_status bm_graph_to_text(const bm_graph *g, char **out) {
  if (!out) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_graph_to_text: NULL out");
  *out = NULL;
  if (!g) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_graph_to_text: NULL graph");
  sbuf b = {0};
  sb_printf(&b, "graph ");
  if (is_ident(g->name))
    sb_printf(&b, "%s", g->name);
  else
    sb_string(&b, g->name ? g->name : "");
  sb_printf(&b, " {\n");
  for (int i = 0; i < g->nsyms && i < BM_MAX_SYMS; i++)
    sb_printf(&b, "  sym %s %" PRId64 "\n", g->syms[i].name ? g->syms[i].name : "?", g->syms[i].max);
  for (int i = 0; i < g->nnodes; i++) {
    const bm_node *n = g->nodes[i];
    if ((unsigned)n->op >= BM_OP_COUNT || n->nin < 0 || n->nin > BM_MAX_IN ||
        (unsigned)n->dtype >= BM_DTYPE_COUNT) {
      free(b.p);
      return bm_status_make(BM_ERR_INVALID_ARGUMENT, "graph '%s': node %%%d is malformed", g->name, i);
    }
    sb_printf(&b, "  %%%d = %s", i, bm_op_name(n->op));
    if (n->op == BM_OP_INPUT || n->op == BM_OP_WEIGHT || n->op == BM_OP_STATE) {
      sb_printf(&b, " ");
      sb_string(&b, n->name ? n->name : "");
      sb_printf(&b, " ");
      sb_type(&b, g, n);
      sb_printf(&b, "\n");
      continue;
    }
    if (n->op == BM_OP_CONST) {
      sb_printf(&b, " ");
      sb_type(&b, g, n);
      sb_printf(&b, " {");
      size_t unit = const_unit(n->dtype);
      const unsigned char *d = n->data;
      for (size_t off = 0; d && off + unit <= n->data_size; off += unit) {
        uint64_t w = 0;
        for (size_t k = 0; k < unit; k++) w |= (uint64_t)d[off + k] << (8 * k);
        sb_printf(&b, "%s0x%0*" PRIx64, off ? ", " : "", (int)(2 * unit), w);
      }
      sb_printf(&b, "}");
    } else {
      for (int j = 0; j < n->nin; j++) {
        int p = node_pos(g, n->in[j]);
        if (p < 0) {
          free(b.p);
          return bm_status_make(BM_ERR_INVALID_ARGUMENT,
                                "graph '%s': node %%%d (%s): input %d is not a node of the graph",
                                g->name, i, bm_op_name(n->op), j);
        }
        sb_printf(&b, "%s%%%d", j ? ", " : " ", p);
      }
      sb_attrs(&b, n);
      sb_printf(&b, " : ");
      sb_type(&b, g, n);
    }
    if (n->name) {
      sb_printf(&b, " ");
      sb_string(&b, n->name);
    }
    sb_printf(&b, "\n");
  }
  for (int i = 0; i < g->noutputs; i++) {
    int p = node_pos(g, g->outputs[i].node);
    if (p < 0) {
      free(b.p);
      return bm_status_make(BM_ERR_INVALID_ARGUMENT, "graph '%s': output %d is not a node of the graph",
                            g->name, i);
    }
    sb_printf(&b, "  output ");
    sb_string(&b, g->outputs[i].name ? g->outputs[i].name : "");
    sb_printf(&b, " %%%d\n", p);
  }
  sb_printf(&b, "}\n");
  if (b.oom) {
    free(b.p);
    return bm_status_make(BM_ERR_OUT_OF_MEMORY, "graph '%s': out of memory dumping text", g->name);
  }
  *out = b.p;
  return NULL;
}

/* ================================================================== parse */

typedef struct parser {
  const char *s;
  size_t len, pos;
  bm_status err;
  bm_graph *g;
  /* label -> node, labels strictly increasing */
  int64_t *labels;
  bm_node **lnodes;
  int nlabels, lcap;
} parser;

static void location(const parser *p, size_t pos, int *line, int *col) {
  *line = 1;
  *col = 1;
  for (size_t i = 0; i < pos && i < p->len; i++) {
    if (p->s[i] == '\n') {
      ++*line;
      *col = 1;
    } else {
      ++*col;
    }
  }
}

static int perr_at(parser *p, size_t pos, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int perr_at(parser *p, size_t pos, const char *fmt, ...) {
  if (p->err) return -1;
  char msg[600];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  int line, col;
  location(p, pos, &line, &col);
  p->err = bm_status_make(BM_ERR_INVALID_ARGUMENT, "%s at line %d, column %d", msg, line, col);
  return -1;
}
#define perr(p, ...) perr_at((p), (p)->pos, __VA_ARGS__)

/* Takes the graph's recorded error and re-reports it at pos. */
static int graph_err(parser *p, size_t pos) {
  bm_status s = p->g->err;
  p->g->err = NULL;
  int line, col;
  location(p, pos, &line, &col);
  if (!p->err)
    p->err = bm_status_make(s ? bm_status_code(s) : BM_ERR_INVALID_ARGUMENT, "%s at line %d, column %d",
                            s ? bm_status_message(s) : "invalid node", line, col);
  bm_status_free(s);
  return -1;
}

static int peek(const parser *p) { return p->pos < p->len ? (unsigned char)p->s[p->pos] : 0; }

static void skip_ws(parser *p) {
  while (p->pos < p->len) {
    char c = p->s[p->pos];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      p->pos++;
    } else if (c == '#') { /* comment to the end of the line */
      while (p->pos < p->len && p->s[p->pos] != '\n') p->pos++;
    } else {
      break;
    }
  }
}

static bool accept(parser *p, char c) {
  skip_ws(p);
  if (peek(p) == (unsigned char)c) {
    p->pos++;
    return true;
  }
  return false;
}

static int expect(parser *p, char c, const char *where) {
  if (accept(p, c)) return 0;
  if (p->pos >= p->len) return perr(p, "expected '%c' %s, got end of text", c, where);
  return perr(p, "expected '%c' %s", c, where);
}

static bool ident_start(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool ident_char(int c) { return ident_start(c) || (c >= '0' && c <= '9'); }

/* Reads an identifier into buf (size 65). */
static int parse_ident(parser *p, char *buf, const char *what) {
  skip_ws(p);
  if (!ident_start(peek(p))) {
    if (p->pos >= p->len) return perr(p, "expected %s, got end of text", what);
    return perr(p, "expected %s", what);
  }
  size_t start = p->pos, n = 0;
  while (ident_char(peek(p))) {
    if (n >= 64) return perr_at(p, start, "%s is longer than 64 characters", what);
    buf[n++] = p->s[p->pos++];
  }
  buf[n] = 0;
  return 0;
}

static bool at_ident(parser *p, const char *word) {
  skip_ws(p);
  size_t n = strlen(word);
  return p->len - p->pos >= n && memcmp(p->s + p->pos, word, n) == 0 &&
         !ident_char(p->pos + n < p->len ? (unsigned char)p->s[p->pos + n] : 0);
}

static int parse_int(parser *p, int64_t lo, int64_t hi, int64_t *out, const char *what) {
  skip_ws(p);
  size_t start = p->pos;
  bool neg = accept(p, '-');
  if (!(peek(p) >= '0' && peek(p) <= '9')) return perr_at(p, start, "expected an integer (%s)", what);
  uint64_t v = 0;
  bool big = false;
  while (peek(p) >= '0' && peek(p) <= '9') {
    unsigned d = (unsigned)(p->s[p->pos++] - '0');
    if (v > (UINT64_MAX - d) / 10) big = true;
    else v = v * 10 + d;
  }
  if (ident_char(peek(p)) || peek(p) == '.') return perr_at(p, start, "malformed integer (%s)", what);
  int64_t r;
  if (big || (!neg && v > (uint64_t)INT64_MAX) || (neg && v > (uint64_t)INT64_MAX + 1))
    return perr_at(p, start, "number out of range (%s)", what);
  r = neg ? (v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v) : (int64_t)v;
  if (r < lo || r > hi)
    return perr_at(p, start, "%s %" PRId64 " out of range [%" PRId64 ", %" PRId64 "]", what, r, lo, hi);
  *out = r;
  return 0;
}

static int parse_i32(parser *p, int32_t *out, const char *what) {
  int64_t v;
  if (parse_int(p, INT32_MIN, INT32_MAX, &v, what)) return -1;
  *out = (int32_t)v;
  return 0;
}

static int parse_float(parser *p, float *out, const char *what) {
  skip_ws(p);
  size_t start = p->pos;
  char buf[64];
  size_t n = 0;
  while (p->pos < p->len) {
    int c = peek(p);
    if (!(ident_char(c) || c == '.' || c == '+' || c == '-')) break;
    if ((c == '+' || c == '-') && n > 0 && buf[n - 1] != 'e' && buf[n - 1] != 'E') break;
    if (n >= sizeof buf - 1) return perr_at(p, start, "number too long (%s)", what);
    buf[n++] = (char)c;
    p->pos++;
  }
  buf[n] = 0;
  char *end;
  float v = n ? strtof(buf, &end) : 0.0f;
  if (n == 0 || *end != 0 || buf[0] == '_') return perr_at(p, start, "expected a number (%s)", what);
  *out = v;
  return 0;
}

static int parse_string(parser *p, char *buf, size_t size, const char *what) {
  skip_ws(p);
  size_t start = p->pos, n = 0;
  if (peek(p) != '"') return perr(p, "expected a quoted string (%s)", what);
  p->pos++;
  for (;;) {
    if (p->pos >= p->len) return perr_at(p, start, "unterminated string (%s)", what);
    int c = (unsigned char)p->s[p->pos++];
    if (c == '"') break;
    if (c == '\n') return perr_at(p, start, "newline in string (%s)", what);
    if (c == '\\') {
      if (p->pos >= p->len) return perr_at(p, start, "unterminated string (%s)", what);
      int e = (unsigned char)p->s[p->pos++];
      if (e == '"' || e == '\\') {
        c = e;
      } else if (e == 'x') {
        int v = 0;
        for (int k = 0; k < 2; k++) {
          int h = peek(p);
          int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                  : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
          if (d < 0) return perr(p, "bad \\x escape in string (%s)", what);
          v = v * 16 + d;
          p->pos++;
        }
        if (v == 0) return perr(p, "NUL byte in string (%s)", what);
        c = v;
      } else {
        return perr_at(p, p->pos - 2, "unknown escape '\\%c' in string (%s)", e >= 32 && e < 127 ? e : '?', what);
      }
    }
    if (n + 1 >= size) return perr_at(p, start, "string too long (%s, max %zu bytes)", what, size - 1);
    buf[n++] = (char)c;
  }
  buf[n] = 0;
  return 0;
}

/* dim := INT | [INT '*'] SYM [('+' | '-') INT] */
static int parse_dim(parser *p, bm_dim *out) {
  skip_ws(p);
  size_t start = p->pos;
  int64_t mul = 1;
  if (peek(p) >= '0' && peek(p) <= '9') {
    int64_t v;
    if (parse_int(p, 0, INT64_MAX, &v, "dimension")) return -1;
    if (!accept(p, '*')) {
      *out = bm_dim_c(v);
      return 0;
    }
    if (v < 1 || v > INT32_MAX) return perr_at(p, start, "symbol multiplier %" PRId64 " out of range", v);
    mul = v;
  }
  char name[65];
  if (parse_ident(p, name, "a dimension (integer or symbol)")) return -1;
  int sym = bm_sym_find(p->g, name);
  if (sym < 0) return perr_at(p, start, "unknown symbol '%s'", name);
  int64_t add = 0;
  skip_ws(p);
  if (peek(p) == '+' || peek(p) == '-') {
    bool neg = peek(p) == '-';
    p->pos++;
    if (parse_int(p, 0, (int64_t)1 << 48, &add, "dimension offset")) return -1;
    if (neg) add = -add;
  }
  out->add = add;
  out->sym = sym;
  out->mul = (int32_t)mul;
  return 0;
}

/* type := DTYPE '[' [dim {',' dim}] ']' */
static int parse_type(parser *p, bm_dtype *t, int *ndim, bm_dim *shape) {
  char name[65];
  skip_ws(p);
  size_t start = p->pos;
  if (parse_ident(p, name, "a dtype")) return -1;
  if (bm_dtype_from_name(name, t)) return perr_at(p, start, "unknown dtype '%s'", name);
  if (expect(p, '[', "to open a shape")) return -1;
  *ndim = 0;
  if (accept(p, ']')) return 0;
  do {
    if (*ndim >= BM_MAX_DIMS) return perr(p, "more than %d dimensions", BM_MAX_DIMS);
    if (parse_dim(p, &shape[(*ndim)++])) return -1;
  } while (accept(p, ','));
  return expect(p, ']', "to close a shape");
}

static int parse_node_ref(parser *p, bm_node **out) {
  skip_ws(p);
  size_t start = p->pos;
  if (expect(p, '%', "before a node reference")) return -1;
  int64_t label;
  if (parse_int(p, 0, INT64_MAX, &label, "node label")) return -1;
  int lo = 0, hi = p->nlabels - 1;
  while (lo <= hi) {
    int mid = lo + (hi - lo) / 2;
    if (p->labels[mid] == label) {
      *out = p->lnodes[mid];
      return 0;
    }
    if (p->labels[mid] < label) lo = mid + 1;
    else hi = mid - 1;
  }
  return perr_at(p, start, "unknown node %%%" PRId64 " (nodes must be defined before use)", label);
}

static int parse_int_list(parser *p, int64_t *v, int max, int *n, int64_t lo, int64_t hi,
                          const char *what) {
  *n = 0;
  if (expect(p, '[', "to open a list")) return -1;
  if (accept(p, ']')) return 0;
  do {
    if (*n >= max) return perr(p, "too many entries in %s (max %d)", what, max);
    if (parse_int(p, lo, hi, &v[(*n)++], what)) return -1;
  } while (accept(p, ','));
  return expect(p, ']', "to close a list");
}

/* prog := '[' [ins {';' ins}] ']';  ins := OP 'r'N [('r'N | FLOAT)] */
static int parse_reg(parser *p, uint8_t *r) {
  skip_ws(p);
  size_t start = p->pos;
  if (peek(p) != 'r') return perr(p, "expected a register r<N>");
  p->pos++;
  int64_t v;
  if (!(peek(p) >= '0' && peek(p) <= '9')) return perr_at(p, start, "expected a register r<N>");
  if (parse_int(p, 0, 255, &v, "register")) return -1;
  *r = (uint8_t)v;
  return 0;
}

static int parse_prog(parser *p, bm_prog *prog) {
  memset(prog->ins, 0, sizeof prog->ins);
  prog->n = 0;
  if (expect(p, '[', "to open a program")) return -1;
  if (accept(p, ']')) return 0;
  do {
    if (prog->n >= BM_MAX_PROG) return perr(p, "program longer than %d instructions", BM_MAX_PROG);
    bm_prog_ins *in = &prog->ins[prog->n++];
    char name[65];
    skip_ws(p);
    size_t start = p->pos;
    if (parse_ident(p, name, "an op name")) return -1;
    bm_op op;
    if (bm_op_from_name(name, &op)) return perr_at(p, start, "unknown op '%s'", name);
    unsigned fl = bm_op_table[op].flags;
    if (!(fl & BM_OPF_EW) || !(fl & (BM_OPF_UNARY | BM_OPF_BINARY)) || op == BM_OP_CAST)
      return perr_at(p, start, "'%s' cannot appear in a program", name);
    in->op = (uint8_t)op;
    if (parse_reg(p, &in->a)) return -1;
    if (fl & BM_OPF_BINARY) {
      skip_ws(p);
      if (peek(p) == 'r') {
        if (parse_reg(p, &in->b)) return -1;
      } else {
        in->flags = BM_PROG_IMM_B;
        if (parse_float(p, &in->imm, "immediate")) return -1;
      }
    }
  } while (accept(p, ';'));
  return expect(p, ']', "to close a program");
}

/* attrs := '{' NAME '=' value {',' NAME '=' value} '}' */
static int parse_attrs(parser *p, bm_op op, int nin, bm_attrs *a, int *epi_nin, bool *has_epi) {
  unsigned mask = bm_op_table[op].attrs;
  bool epi_ok = (bm_op_table[op].flags & BM_OPF_EPILOGUE) != 0;
  unsigned seen = 0; /* bit per attribute name below */
  static const char *const names[] = {"trans_a", "trans_b", "stride", "pad", "dilation", "groups",
                                      "perm", "axis", "begin", "end", "step", "pads", "value",
                                      "scale", "axes", "keepdim", "eps", "rope_mode", "attn_scale",
                                      "causal", "window", "softcap", "attn_flags", "topk", "fill",
                                      "act", "layout", "prog", "epi_nin", "epi"};
  static const unsigned need[] = {BM_ATTR_TRANS, BM_ATTR_TRANS, BM_ATTR_CONV, BM_ATTR_CONV,
                                  BM_ATTR_CONV, BM_ATTR_CONV | BM_ATTR_GROUPS, BM_ATTR_PERM,
                                  BM_ATTR_SLICE | BM_ATTR_AXIS, BM_ATTR_SLICE, BM_ATTR_SLICE,
                                  BM_ATTR_SLICE, BM_ATTR_PAD, BM_ATTR_PAD, BM_ATTR_SCALE,
                                  BM_ATTR_AXES, BM_ATTR_AXES, BM_ATTR_EPS, BM_ATTR_ROPE,
                                  BM_ATTR_ATTN, BM_ATTR_ATTN, BM_ATTR_ATTN, BM_ATTR_ATTN,
                                  BM_ATTR_ATTN, BM_ATTR_TOPK, BM_ATTR_TOPK, BM_ATTR_ACT,
                                  BM_ATTR_CONV, BM_ATTR_PROG, 0, 0};
  _Static_assert(sizeof names / sizeof names[0] == sizeof need / sizeof need[0], "attr tables");
  if (!accept(p, '{')) return 0;
  if (accept(p, '}')) return 0;
  do {
    char name[65];
    skip_ws(p);
    size_t start = p->pos;
    if (parse_ident(p, name, "an attribute name")) return -1;
    int k = 0, nk = (int)(sizeof names / sizeof names[0]);
    while (k < nk && strcmp(names[k], name) != 0) k++;
    if (k == nk) return perr_at(p, start, "unknown attribute '%s'", name);
    bool is_epi = k >= nk - 2;
    if ((is_epi && !epi_ok) || (!is_epi && !(need[k] & mask)))
      return perr_at(p, start, "op '%s' has no attribute '%s'", bm_op_name(op), name);
    if (seen & (1u << k)) return perr_at(p, start, "attribute '%s' given twice", name);
    seen |= 1u << k;
    if (expect(p, '=', "after an attribute name")) return -1;
    int64_t v[2 * BM_MAX_DIMS], x;
    int n;
    int rc = 0;
    switch (k) {
      case 0: rc = parse_i32(p, &a->trans_a, name); break;
      case 1: rc = parse_i32(p, &a->trans_b, name); break;
      case 2: case 3: case 4: {
        int32_t *dst = k == 2 ? a->stride : k == 3 ? a->pad : a->dilation;
        rc = parse_int_list(p, v, 2, &n, INT32_MIN, INT32_MAX, name);
        if (!rc && n != 2) rc = perr_at(p, start, "%s needs 2 entries", name);
        if (!rc) dst[0] = (int32_t)v[0], dst[1] = (int32_t)v[1];
        break;
      }
      case 5: rc = parse_i32(p, &a->groups, name); break;
      case 6:
        rc = parse_int_list(p, v, BM_MAX_DIMS, &n, INT32_MIN, INT32_MAX, name);
        for (int i = 0; !rc && i < n; i++) a->perm[i] = (int32_t)v[i];
        break;
      case 7: rc = parse_i32(p, &a->axis, name); break;
      case 8: rc = parse_int(p, INT64_MIN, INT64_MAX, &a->begin, name); break;
      case 9: rc = parse_int(p, INT64_MIN, INT64_MAX, &a->end, name); break;
      case 10: rc = parse_int(p, INT64_MIN, INT64_MAX, &a->step, name); break;
      case 11:
        rc = parse_int_list(p, v, 2 * BM_MAX_DIMS, &n, INT64_MIN, INT64_MAX, name);
        for (int i = 0; !rc && i < n; i++) a->pads[i] = v[i];
        break;
      case 12: rc = parse_float(p, &a->value, name); break;
      case 13: rc = parse_i32(p, &a->scale, name); break;
      case 14:
        rc = parse_int_list(p, v, 2 * BM_MAX_DIMS, &n, 0, 31, name);
        for (int i = 0; !rc && i < n; i++) a->axes |= 1u << v[i];
        break;
      case 15: rc = parse_i32(p, &a->keepdim, name); break;
      case 16: rc = parse_float(p, &a->eps, name); break;
      case 17: rc = parse_i32(p, &a->rope_mode, name); break;
      case 18: rc = parse_float(p, &a->attn_scale, name); break;
      case 19: rc = parse_i32(p, &a->causal, name); break;
      case 20: rc = parse_i32(p, &a->window, name); break;
      case 21: rc = parse_float(p, &a->softcap, name); break;
      case 22: rc = parse_i32(p, &a->attn_flags, name); break;
      case 23: rc = parse_i32(p, &a->topk, name); break;
      case 24: rc = parse_float(p, &a->fill, name); break;
      case 25: {
        char opname[65];
        bm_op aop;
        skip_ws(p);
        size_t apos = p->pos;
        if (parse_ident(p, opname, "an op name")) return -1;
        if (bm_op_from_name(opname, &aop)) return perr_at(p, apos, "unknown op '%s'", opname);
        a->act = (int32_t)aop;
        break;
      }
      case 26: rc = parse_i32(p, &a->layout, name); break;
      case 27:
        rc = parse_prog(p, &a->prog);
        a->prog.nin = (uint8_t)(nin > 0 ? nin : 0);
        break;
      case 28:
        rc = parse_int(p, 1, BM_MAX_IN, &x, name);
        if (!rc) *epi_nin = (int)x;
        break;
      case 29:
        rc = parse_prog(p, &a->prog);
        if (!rc && a->prog.n == 0) rc = perr_at(p, start, "an epilogue needs at least one instruction");
        *has_epi = true;
        break;
    }
    if (rc) return -1;
  } while (accept(p, ','));
  return expect(p, '}', "to close the attributes");
}

static int add_label(parser *p, int64_t label, bm_node *n, size_t pos) {
  if (p->nlabels > 0 && label <= p->labels[p->nlabels - 1])
    return perr_at(p, pos, "node label %%%" PRId64 " must be greater than the previous one (%%%" PRId64 ")",
                   label, p->labels[p->nlabels - 1]);
  if (p->nlabels == p->lcap) {
    int ncap = p->lcap ? p->lcap * 2 : 64;
    int64_t *l = realloc(p->labels, (size_t)ncap * sizeof *l);
    if (!l) return perr_at(p, pos, "out of memory");
    p->labels = l;
    bm_node **ln = realloc(p->lnodes, (size_t)ncap * sizeof *ln);
    if (!ln) return perr_at(p, pos, "out of memory");
    p->lnodes = ln;
    p->lcap = ncap;
  }
  p->labels[p->nlabels] = label;
  p->lnodes[p->nlabels++] = n;
  return 0;
}

/* Optional trailing node name. */
static int parse_opt_name(parser *p, bm_node *n) {
  skip_ws(p);
  if (peek(p) != '"') return 0;
  char name[4096];
  if (parse_string(p, name, sizeof name, "node name")) return -1;
  n->name = bm_arena_strdup(p->g->module->arena, name);
  return n->name ? 0 : perr(p, "out of memory");
}

static int parse_const_data(parser *p, bm_node *n) {
  size_t unit = const_unit(n->dtype);
  int64_t numel = bm_node_numel_max(p->g, n);
  size_t nbytes = bm_dtype_nbytes(n->dtype, numel);
  if (expect(p, '{', "to open constant data")) return -1;
  /* each word takes at least 4 characters of text ("0x0,"): refuse sizes
   * the remaining text cannot hold before allocating */
  if (numel < 0 || nbytes / unit > (p->len - p->pos) / 3 + 1)
    return perr(p, "constant of %" PRId64 " elements is longer than the text", numel);
  unsigned char *d = bm_arena_alloc(p->g->module->arena, nbytes ? nbytes : 1);
  if (!d) return perr(p, "out of memory");
  size_t off = 0;
  if (!accept(p, '}')) {
    do {
      skip_ws(p);
      size_t start = p->pos;
      if (off >= nbytes) return perr(p, "more than %zu data words for %s", nbytes / unit, "the constant");
      if (!(peek(p) == '0' && p->pos + 1 < p->len && (p->s[p->pos + 1] == 'x' || p->s[p->pos + 1] == 'X')))
        return perr(p, "expected a hex word 0x...");
      p->pos += 2;
      uint64_t w = 0;
      size_t digits = 0;
      for (;;) {
        int h = peek(p);
        int v = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
        if (v < 0) break;
        if (++digits > 2 * unit) return perr_at(p, start, "hex word wider than %zu bytes", unit);
        w = (w << 4) | (uint64_t)v;
        p->pos++;
      }
      if (digits == 0) return perr_at(p, start, "expected a hex word 0x...");
      for (size_t k = 0; k < unit; k++) d[off + k] = (unsigned char)(w >> (8 * k));
      off += unit;
    } while (accept(p, ','));
    if (expect(p, '}', "to close constant data")) return -1;
  }
  if (off != nbytes) return perr(p, "constant has %zu data words, needs %zu", off / unit, nbytes / unit);
  n->data = d;
  n->data_size = nbytes;
  return 0;
}

/* node := '%'N '=' OP ... (see docs/ir.md) */
static int parse_node(parser *p) {
  size_t start = p->pos;
  p->pos++; /* '%' */
  int64_t label;
  if (parse_int(p, 0, INT64_MAX, &label, "node label")) return -1;
  if (expect(p, '=', "after the node label")) return -1;
  char name[65];
  skip_ws(p);
  size_t opos = p->pos;
  if (parse_ident(p, name, "an op name")) return -1;
  bm_op op;
  if (bm_op_from_name(name, &op)) return perr_at(p, opos, "unknown op '%s'", name);
  bm_graph *g = p->g;
  bm_node *n = NULL;
  bm_dtype t;
  int ndim;
  bm_dim shape[BM_MAX_DIMS] = {{0}};

  if (op == BM_OP_INPUT || op == BM_OP_WEIGHT || op == BM_OP_STATE) {
    char bind[4096];
    if (parse_string(p, bind, sizeof bind, "binding name")) return -1;
    if (!bind[0]) return perr(p, "%s needs a non-empty name", name);
    if (parse_type(p, &t, &ndim, shape)) return -1;
    if (op == BM_OP_INPUT)
      for (int i = 0; i < g->ninputs; i++)
        if (strcmp(g->inputs[i]->name, bind) == 0)
          return perr_at(p, start, "duplicate input name '%s'", bind);
    if (op == BM_OP_STATE)
      for (int i = 0; i < g->nnodes; i++)
        if (g->nodes[i]->op == BM_OP_STATE && strcmp(g->nodes[i]->name, bind) == 0)
          return perr_at(p, start, "duplicate state name '%s'", bind);
    const char *nm = bm_arena_strdup(g->module->arena, bind);
    if (!nm) return perr(p, "out of memory");
    n = bm_node_make_typed(g, op, 0, NULL, NULL, t, ndim, shape);
    if (!n) return graph_err(p, start);
    n->name = nm;
  } else if (op == BM_OP_CONST) {
    if (parse_type(p, &t, &ndim, shape)) return -1;
    n = bm_node_make_typed(g, op, 0, NULL, NULL, t, ndim, shape);
    if (!n) return graph_err(p, start);
    if (parse_const_data(p, n) || parse_opt_name(p, n)) return -1;
  } else {
    bm_node *in[BM_MAX_IN];
    int nin = 0;
    skip_ws(p);
    if (peek(p) == '%') {
      do {
        if (nin >= BM_MAX_IN) return perr(p, "more than %d inputs", BM_MAX_IN);
        if (parse_node_ref(p, &in[nin++])) return -1;
      } while (accept(p, ','));
    }
    bm_attrs a;
    memset(&a, 0, sizeof a);
    int epi_nin = 0;
    bool has_epi = false;
    if (parse_attrs(p, op, nin, &a, &epi_nin, &has_epi)) return -1;
    if (has_epi) a.prog.nin = (uint8_t)(epi_nin ? epi_nin : 1);
    else if (epi_nin) return perr_at(p, start, "epi_nin without epi");
    if (expect(p, ':', "before the result type")) return -1;
    if (parse_type(p, &t, &ndim, shape)) return -1;
    n = bm_node_make_typed(g, op, nin, in, &a, t, ndim, shape);
    if (!n) return graph_err(p, start);
    if (parse_opt_name(p, n)) return -1;
  }
  return add_label(p, label, n, start);
}

static int parse_graph(parser *p, bm_module *m) {
  skip_ws(p);
  if (!at_ident(p, "graph")) return perr(p, "expected 'graph'");
  p->pos += 5;
  char name[4096];
  skip_ws(p);
  if (peek(p) == '"') {
    if (parse_string(p, name, sizeof name, "graph name")) return -1;
  } else if (parse_ident(p, name, "a graph name")) {
    return -1;
  }
  if (bm_module_find_graph(m, name)) return perr(p, "module already has a graph '%s'", name);
  p->g = bm_graph_create(m, name);
  if (!p->g) return perr(p, "out of memory");
  if (expect(p, '{', "after the graph name")) return -1;
  for (;;) {
    skip_ws(p);
    size_t start = p->pos;
    if (p->pos >= p->len) return perr(p, "unexpected end of text (missing '}')");
    if (accept(p, '}')) break;
    if (peek(p) == '%') {
      if (parse_node(p)) return -1;
    } else if (at_ident(p, "sym")) {
      p->pos += 3;
      char sname[65];
      int64_t max;
      if (parse_ident(p, sname, "a symbol name") || parse_int(p, 1, INT64_MAX, &max, "symbol bound"))
        return -1;
      if (p->g->nnodes > 0) return perr_at(p, start, "symbols must be declared before the nodes");
      if (bm_sym_declare(p->g, sname, max) < 0) return graph_err(p, start);
    } else if (at_ident(p, "output")) {
      p->pos += 6;
      char oname[4096];
      bm_node *n;
      if (parse_string(p, oname, sizeof oname, "output name") || parse_node_ref(p, &n)) return -1;
      bm_output_add(p->g, oname, n);
      if (p->g->err) return graph_err(p, start);
    } else {
      char word[65];
      if (ident_start(peek(p)) && parse_ident(p, word, "a statement") == 0)
        return perr_at(p, start, "unknown statement '%s' (expected %%N = ..., sym, output or '}')", word);
      return perr_at(p, start, "expected a statement (%%N = ..., sym, output or '}')");
    }
  }
  skip_ws(p);
  if (p->pos < p->len) return perr(p, "unexpected text after the graph");
  return 0;
}

bm_status bm_graph_parse(bm_module *m, const char *text, bm_graph **out) {
  if (out) *out = NULL;
  if (!m || !text || !out) return bm_status_make(BM_ERR_INVALID_ARGUMENT, "bm_graph_parse: NULL argument");
  parser p = {.s = text, .len = strlen(text)};
  int rc = parse_graph(&p, m);
  free(p.labels);
  free(p.lnodes);
  if (rc) {
    if (p.g) {
      /* unregister the half-built graph; its memory stays in the arena */
      bm_status_free(p.g->err);
      p.g->err = NULL;
      if (m->ngraphs > 0 && m->graphs[m->ngraphs - 1] == p.g) m->ngraphs--;
    }
    return p.err ? p.err : bm_status_make(BM_ERR_INVALID_ARGUMENT, "parse error");
  }
  *out = p.g;
  return NULL;
}
