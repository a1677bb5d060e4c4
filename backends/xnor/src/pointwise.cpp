// Pointwise float convolution (see pointwise.h): pixel tiles of up to 6 go through the
// prologue (BN, 2x2 pool, ReLU) into a per-thread buffer, then a 6 x 64 register tile (24 zmm
// accumulators on AVX-512) walks the input channels. The scalar form is the reference the vector form matches bit for bit: same
// pooling order, fma accumulation over ascending c from 0, bias added last.
#include "pointwise.h"

#include <algorithm>
#include <cmath>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace xnor {
namespace {

constexpr int kPix = 6;

struct PwJob {
    const float* x;
    int N, H, W, C, Ho, Wo, Co;
    PwPrologue pro;
    const float* w;
    const float* b;
    float* out;
    std::size_t tiles;
    Isa isa;
    std::size_t ostride;  // floats from one output pixel to the next
};

inline bool has_prologue(const PwPrologue& pr) { return pr.pool != PwPool::none || pr.scale || pr.relu; }

// Row pointers of the tile's input pixels after the prologue (computed into `buf`), or straight
// into x when there is none. Scalar code shared by every ISA path (the build forbids fp
// contraction, so x * scale + shift rounds twice everywhere).
inline int tile_rows(const PwJob& j, std::size_t t, std::vector<float>& buf, const float** rows) {
    const std::size_t pixels = static_cast<std::size_t>(j.N) * j.Ho * j.Wo;
    const std::size_t m0 = t * kPix;
    const int np = static_cast<int>(std::min<std::size_t>(kPix, pixels - m0));
    const PwPrologue& pr = j.pro;
    for (int p = 0; p < np; ++p) {
        const std::size_t m = m0 + p;
        if (!has_prologue(pr)) {
            rows[p] = j.x + m * j.C;
            continue;
        }
        float* dst = buf.data() + static_cast<std::size_t>(p) * j.C;
        if (pr.pool == PwPool::none) {
            const float* r = j.x + m * j.C;
            for (int c = 0; c < j.C; ++c) {
                float v = pr.scale ? r[c] * pr.scale[c] + pr.shift[c] : r[c];
                if (pr.relu) v = v < 0.0f ? 0.0f : v;
                dst[c] = v;
            }
            rows[p] = dst;
            continue;
        }
        const std::size_t n = m / (static_cast<std::size_t>(j.Ho) * j.Wo);
        const int oy = static_cast<int>(m / j.Wo % j.Ho), ox = static_cast<int>(m % j.Wo);
        const float* r0 = j.x + ((n * j.H + 2 * oy) * j.W + 2 * ox) * j.C;
        const float* r1 = r0 + static_cast<std::size_t>(j.W) * j.C;
        for (int c = 0; c < j.C; ++c) {
            float a = r0[c], b = r0[c + j.C], e = r1[c], d = r1[c + j.C];
            if (pr.scale) {
                const float sc = pr.scale[c], sh = pr.shift[c];
                a = a * sc + sh;
                b = b * sc + sh;
                e = e * sc + sh;
                d = d * sc + sh;
            }
            float v;
            if (pr.pool == PwPool::avg) {  // torch's order: row by row, then the exact / 4
                v = a + b;
                v += e;
                v += d;
                v *= 0.25f;
            } else {                       // max in the same order; NaN-free data assumed equal
                v = b > a ? b : a;
                v = e > v ? e : v;
                v = d > v ? d : v;
            }
            if (pr.relu) v = v < 0.0f ? 0.0f : v;
            dst[c] = v;
        }
        rows[p] = dst;
    }
    return np;
}

// Channels in blocks of 64 with the accumulators in an array, so a compiler can vectorise the
// inner loop across channels (each lane still sums over c in ascending order).
inline void tile_scalar(const PwJob& j, const float* const* rows, int np, std::size_t m0) {
    for (int p = 0; p < np; ++p) {
        float* o = j.out + (m0 + p) * j.ostride;
        for (int co0 = 0; co0 < j.Co; co0 += 64) {
            const int n = std::min(64, j.Co - co0);
            float acc[64] = {};
            for (int c = 0; c < j.C; ++c) {
                const float a = rows[p][c];
                const float* wr = j.w + static_cast<std::size_t>(c) * j.Co + co0;
                for (int q = 0; q < n; ++q) acc[q] = std::fma(a, wr[q], acc[q]);
            }
            for (int q = 0; q < n; ++q) o[co0 + q] = acc[q] + j.b[co0 + q];
        }
    }
}

#if defined(__x86_64__)
#define PW_AVX512 __attribute__((target("avx512f")))

// One block of NV x 16 output channels from co0 for NP pixels. Full: every channel of the block
// exists, so every load and store is a whole vector (masked loads with the masks spilled to the
// stack cost ~10 % of the FMA rate).
template <int NP, int NV, bool Full>
PW_AVX512 inline void block_avx512(const PwJob& j, const float* const* rows, std::size_t m0, int co0) {
    __mmask16 mk[NV];
    for (int k = 0; k < NV; ++k) {
        const int n = j.Co - co0 - 16 * k;
        mk[k] = n >= 16 ? static_cast<__mmask16>(0xffff) : n <= 0 ? 0 : static_cast<__mmask16>((1u << n) - 1);
    }
    __m512 acc[NP][NV];
    for (int p = 0; p < NP; ++p)
        for (int k = 0; k < NV; ++k) acc[p][k] = _mm512_setzero_ps();
    const float* wc = j.w + co0;
    for (int c = 0; c < j.C; ++c, wc += j.Co) {
        __m512 wv[NV];
        for (int k = 0; k < NV; ++k) wv[k] = Full ? _mm512_loadu_ps(wc + 16 * k) : _mm512_maskz_loadu_ps(mk[k], wc + 16 * k);
        for (int p = 0; p < NP; ++p) {
            const __m512 a = _mm512_set1_ps(rows[p][c]);
            for (int k = 0; k < NV; ++k) acc[p][k] = _mm512_fmadd_ps(a, wv[k], acc[p][k]);
        }
    }
    for (int p = 0; p < NP; ++p) {
        float* o = j.out + (m0 + p) * j.ostride + co0;
        for (int k = 0; k < NV; ++k)
            _mm512_mask_storeu_ps(o + 16 * k, mk[k],
                                  _mm512_add_ps(acc[p][k], _mm512_maskz_loadu_ps(mk[k], j.b + co0 + 16 * k)));
    }
}

// Output channels in blocks of 64 (4 zmm per pixel), then a last block of as many zmm as its
// channels need (Co = 160, a dense transition's width, or RF-c3d4's 106 and 212 would otherwise
// waste up to 3/4 of a block).
template <int NP>
PW_AVX512 inline void tile_avx512(const PwJob& j, const float* const* rows, std::size_t m0) {
    int co0 = 0;
    for (; co0 + 64 <= j.Co; co0 += 64) block_avx512<NP, 4, true>(j, rows, m0, co0);
    const int left = j.Co - co0;
    if (left > 48)
        block_avx512<NP, 4, false>(j, rows, m0, co0);
    else if (left > 32)
        block_avx512<NP, 3, false>(j, rows, m0, co0);
    else if (left == 32)
        block_avx512<NP, 2, true>(j, rows, m0, co0);
    else if (left > 16)
        block_avx512<NP, 2, false>(j, rows, m0, co0);
    else if (left > 0)
        block_avx512<NP, 1, false>(j, rows, m0, co0);
}

// tile_rows 16 channels at a time, the same operations in the same order (so the same bytes:
// max(b, a) is `b > a ? b : a`, ReLU sets exactly the lanes below zero): compiled from the
// scalar loop the prologue (a dense transition's BN, max pool and ReLU) cost ~25 % of the op.
PW_AVX512 inline int tile_rows_avx512(const PwJob& j, std::size_t t, std::vector<float>& buf, const float** rows) {
    const PwPrologue& pr = j.pro;
    if (!has_prologue(pr)) return tile_rows(j, t, buf, rows);
    const std::size_t pixels = static_cast<std::size_t>(j.N) * j.Ho * j.Wo;
    const std::size_t m0 = t * kPix;
    const int np = static_cast<int>(std::min<std::size_t>(kPix, pixels - m0));
    const __m512 zero = _mm512_setzero_ps(), quarter = _mm512_set1_ps(0.25f);
    const std::size_t C = static_cast<std::size_t>(j.C);
    for (int p = 0; p < np; ++p) {
        const std::size_t m = m0 + p;
        float* dst = buf.data() + static_cast<std::size_t>(p) * C;
        const float *r0, *r1 = nullptr;
        if (pr.pool == PwPool::none) {
            r0 = j.x + m * C;
        } else {
            const std::size_t n = m / (static_cast<std::size_t>(j.Ho) * j.Wo);
            const int oy = static_cast<int>(m / j.Wo % j.Ho), ox = static_cast<int>(m % j.Wo);
            r0 = j.x + ((n * j.H + 2 * oy) * j.W + 2 * ox) * C;
            r1 = r0 + static_cast<std::size_t>(j.W) * C;
        }
        for (int c = 0; c < j.C; c += 16) {
            const int left = j.C - c;
            const __mmask16 k = left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1);
            __m512 sc = zero, sh = zero;
            if (pr.scale) {
                sc = _mm512_maskz_loadu_ps(k, pr.scale + c);
                sh = _mm512_maskz_loadu_ps(k, pr.shift + c);
            }
            __m512 v;
            if (pr.pool == PwPool::none) {
                v = _mm512_maskz_loadu_ps(k, r0 + c);
                if (pr.scale) v = _mm512_add_ps(_mm512_mul_ps(v, sc), sh);
            } else {
                __m512 a = _mm512_maskz_loadu_ps(k, r0 + c), b = _mm512_maskz_loadu_ps(k, r0 + c + C);
                __m512 e = _mm512_maskz_loadu_ps(k, r1 + c), d = _mm512_maskz_loadu_ps(k, r1 + c + C);
                if (pr.scale) {
                    a = _mm512_add_ps(_mm512_mul_ps(a, sc), sh);
                    b = _mm512_add_ps(_mm512_mul_ps(b, sc), sh);
                    e = _mm512_add_ps(_mm512_mul_ps(e, sc), sh);
                    d = _mm512_add_ps(_mm512_mul_ps(d, sc), sh);
                }
                if (pr.pool == PwPool::avg) {
                    v = _mm512_mul_ps(_mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a, b), e), d), quarter);
                } else {
                    v = _mm512_max_ps(b, a);
                    v = _mm512_max_ps(e, v);
                    v = _mm512_max_ps(d, v);
                }
            }
            if (pr.relu) v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), zero);
            _mm512_mask_storeu_ps(dst + c, k, v);
        }
        rows[p] = dst;
    }
    return np;
}

PW_AVX512 void work_avx512(const PwJob& j, std::size_t t0, std::size_t t1, std::vector<float>& buf) {
    const float* rows[kPix];
    for (std::size_t t = t0; t < t1; ++t) {
        const int np = tile_rows_avx512(j, t, buf, rows);
        switch (np) {
            case 6: tile_avx512<6>(j, rows, t * kPix); break;
            case 5: tile_avx512<5>(j, rows, t * kPix); break;
            case 4: tile_avx512<4>(j, rows, t * kPix); break;
            case 3: tile_avx512<3>(j, rows, t * kPix); break;
            case 2: tile_avx512<2>(j, rows, t * kPix); break;
            default: tile_avx512<1>(j, rows, t * kPix); break;
        }
    }
}

#define PW_AVX2 __attribute__((target("avx2,fma")))

// AVX2 + FMA: 3 pixels x 32 channels (12 ymm accumulators, 4 weight vectors, 1 broadcast);
// channels past Co are masked (vmaskmov loads give 0, stores skip them).
template <int NP>
PW_AVX2 inline void tile_avx2(const PwJob& j, const float* const* rows, std::size_t m0) {
    for (int co0 = 0; co0 < j.Co; co0 += 32) {
        __m256i mk[4];
        for (int k = 0; k < 4; ++k) {
            const int n = std::min(8, std::max(0, j.Co - co0 - 8 * k));
            mk[k] = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        }
        __m256 acc[NP][4];
        for (int p = 0; p < NP; ++p)
            for (int k = 0; k < 4; ++k) acc[p][k] = _mm256_setzero_ps();
        const float* wc = j.w + co0;
        for (int c = 0; c < j.C; ++c, wc += j.Co) {
            __m256 w[4];
            for (int k = 0; k < 4; ++k) w[k] = _mm256_maskload_ps(wc + 8 * k, mk[k]);
            for (int p = 0; p < NP; ++p) {
                const __m256 a = _mm256_broadcast_ss(rows[p] + c);
                for (int k = 0; k < 4; ++k) acc[p][k] = _mm256_fmadd_ps(a, w[k], acc[p][k]);
            }
        }
        for (int p = 0; p < NP; ++p) {
            float* o = j.out + (m0 + p) * j.ostride + co0;
            for (int k = 0; k < 4; ++k)
                _mm256_maskstore_ps(o + 8 * k, mk[k],
                                    _mm256_add_ps(acc[p][k], _mm256_maskload_ps(j.b + co0 + 8 * k, mk[k])));
        }
    }
}

PW_AVX2 void work_avx2(const PwJob& j, std::size_t t0, std::size_t t1, std::vector<float>& buf) {
    const float* rows[kPix];
    for (std::size_t t = t0; t < t1; ++t) {
        const int np = tile_rows(j, t, buf, rows);
        for (int p = 0; p < np; p += 3) {
            switch (std::min(3, np - p)) {
                case 3: tile_avx2<3>(j, rows + p, t * kPix + p); break;
                case 2: tile_avx2<2>(j, rows + p, t * kPix + p); break;
                default: tile_avx2<1>(j, rows + p, t * kPix + p); break;
            }
        }
    }
}
#endif

// Baseline x86-64 has no FMA instruction, so std::fma is a library call there; a clone for CPUs
// with FMA (picked once through an ifunc) vectorises the same code. Same results either way:
// fma is exactly rounded. The sanitizer build (XNOR_NO_CLONES) runs the baseline compilation.
#if defined(__x86_64__) && defined(__GLIBC__) && !defined(__clang__) && !defined(XNOR_NO_CLONES)
__attribute__((target_clones("fma", "default"), flatten))
#endif
void work_portable(const PwJob& j, std::size_t t0, std::size_t t1, std::vector<float>& buf) {
    const float* rows[kPix];
    for (std::size_t t = t0; t < t1; ++t) tile_scalar(j, rows, tile_rows(j, t, buf, rows), t * kPix);
}

void pw_work(void* ctx, int part, int nparts) {
    const PwJob& j = *static_cast<const PwJob*>(ctx);
    const std::size_t t0 = j.tiles * part / nparts, t1 = j.tiles * (part + 1) / nparts;
    if (t0 >= t1) return;
    thread_local std::vector<float> buf;
    if (has_prologue(j.pro)) buf.resize(static_cast<std::size_t>(kPix) * j.C);
#if defined(__x86_64__)
    if (j.isa == Isa::avx512) return work_avx512(j, t0, t1, buf);
    if (j.isa == Isa::avx2) return work_avx2(j, t0, t1, buf);
#endif
    work_portable(j, t0, t1, buf);
}

}  // namespace

void pointwise_conv(const float* x, int N, int H, int W, int C, const PwPrologue& pro, const float* w,
                    int Co, const float* b, float* out, int threads, Isa isa, std::size_t out_stride) {
    const bool pool = pro.pool != PwPool::none;
    PwJob j{x, N, H, W, C, pool ? H / 2 : H, pool ? W / 2 : W, Co, pro, w, b, out, 0, isa,
            out_stride ? out_stride : static_cast<std::size_t>(Co)};
    const std::size_t pixels = static_cast<std::size_t>(N) * j.Ho * j.Wo;
    j.tiles = (pixels + kPix - 1) / kPix;
    if (j.tiles == 0) return;
    parallel_run(threads, parts_for(j.tiles, threads), pw_work, &j);
}

}  // namespace xnor
