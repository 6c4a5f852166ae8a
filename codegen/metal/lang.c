/* lang.c - the Metal instance of the C-like emitter's language table: a
 * stub that shows the split (it is not compiled into any backend yet; the
 * Metal backend will hand this source to the Metal compiler on macOS). */
#include "../clike/clike.h"

static const char metal_prelude[] =
    "#include <metal_stdlib>\n"
    "using namespace metal;\n"
    "typedef long bm_i64;\n"
    "#define BM_DEV static inline\n"
    "#define BM_GLOBAL device\n"
    "#define BM_SHARED_PTR threadgroup\n"
    "#define BM_SHARED threadgroup\n"
    "#define BM_SYNC() threadgroup_barrier(mem_flags::mem_threadgroup)\n"
    "#define BM_SHFL_XOR(v, m) simd_shuffle_xor((v), (m))\n"
    "#define BM_SHFL(v, l) simd_shuffle((v), (l))\n"
    "#define BM_SHFL_UP(v, d) simd_shuffle_up((v), (d))\n"
    "#define BM_INF INFINITY\n"
    "#define BM_NAN NAN\n"
    "#define expf(x) precise::exp(x)\n"
    "#define logf(x) precise::log(x)\n"
    "#define sqrtf(x) precise::sqrt(x)\n"
    "#define sinf(x) precise::sin(x)\n"
    "#define cosf(x) precise::cos(x)\n"
    "#define tanhf(x) precise::tanh(x)\n"
    "#define powf(a, b) precise::pow(a, b)\n"
    "#define fabsf(x) fabs(x)\n"
    "#define fmaxf(a, b) fmax(a, b)\n"
    "#define fminf(a, b) fmin(a, b)\n"
    "#define bm_buf(i) ((device const unsigned char *)bm_bufs[i])\n"
    "#define bm_out(i) ((device unsigned char *)bm_bufs[i])\n"
    "BM_DEV float bm_bits_f32(unsigned int u) { return as_type<float>(u); }\n"
    "BM_DEV unsigned int bm_f32_bits(float f) { return as_type<unsigned int>(f); }\n"
    "BM_DEV float bm_h2f(unsigned short h) { return float(as_type<half>(h)); }\n"
    "BM_DEV unsigned short bm_f2h(float f) { return as_type<unsigned short>(half(f)); }\n"
    "BM_DEV unsigned short bm_f2bf(float f) { return as_type<unsigned short>(bfloat(f)); }\n";
/* erff is not in the Metal standard library: the backend will add one. */

const bm_clike_lang bm_clike_metal = {
    .name = "metal",
    .prelude = metal_prelude,
    .kernel_open =
        "kernel void %1$s(device const uint64_t *bm_bufs [[buffer(0)]], constant long *bm_syms [[buffer(1)]],\n"
        "    uint tid_ [[thread_position_in_threadgroup]], uint bid_ [[threadgroup_position_in_grid]],\n"
        "    uint nblk_ [[threadgroups_per_grid]]) {\n"
        "  /* threads per threadgroup: %2$d */\n"
        "  const int tid = (int)tid_;\n"
        "  const bm_i64 bid0 = bid_, nblk = nblk_;\n"
        "  const bm_i64 S0 = bm_syms[0], S1 = bm_syms[1], S2 = bm_syms[2], S3 = bm_syms[3];\n"
        "  const bm_i64 S4 = bm_syms[4], S5 = bm_syms[5], S6 = bm_syms[6], S7 = bm_syms[7];\n",
    .kernel_close = "}\n",
};
