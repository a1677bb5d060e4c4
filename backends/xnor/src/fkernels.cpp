// Float kernels of the standalone engine (see fkernels.h).
#include "fkernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace xnor {
namespace {

constexpr int kPix = 6;

struct ConvJob {
    const float* xp;
    int N, Hp, Wp, C, kh, kw, s, Ho, Wo, Co;
    const float* w;
    const float* b;
    bool relu;
    float* out;
    std::size_t tiles;
    int nco;  // output-channel blocks of 64 per tile (work item = tile x block)
    Isa isa;
};

// Pointer to the first input of output pixel m (kernel row 0, column 0).
inline const float* pixel_base(const ConvJob& j, std::size_t m) {
    const std::size_t hw = static_cast<std::size_t>(j.Ho) * j.Wo;
    const std::size_t n = m / hw;
    const std::size_t r = m % hw;
    const std::size_t oy = r / j.Wo, ox = r % j.Wo;
    return j.xp + ((n * j.Hp + oy * j.s) * j.Wp + ox * j.s) * j.C;
}

// Row pointers of a tile's pixels, each to the K = kh*kw*C inputs under its window in the
// weights' order (ky, kx, c): the input itself for a one-row kernel (contiguous there), else a
// per-thread copy of the kh row segments (kh memcpys of kw*C floats: small next to the
// K * Co multiply-adds, and it keeps the micro-kernel a single loop).
inline int tile_rows(const ConvJob& j, std::size_t t, float* buf, const float** rows) {
    const std::size_t pixels = static_cast<std::size_t>(j.N) * j.Ho * j.Wo;
    const std::size_t m0 = t * kPix;
    const int np = static_cast<int>(std::min<std::size_t>(kPix, pixels - m0));
    const std::size_t L = static_cast<std::size_t>(j.kw) * j.C, K = L * j.kh;
    const std::size_t rowstep = static_cast<std::size_t>(j.Wp) * j.C;
    for (int p = 0; p < np; ++p) {
        const float* base = pixel_base(j, m0 + p);
        if (j.kh == 1) {
            rows[p] = base;
            continue;
        }
        float* dst = buf + p * K;
        for (int ky = 0; ky < j.kh; ++ky) std::memcpy(dst + ky * L, base + ky * rowstep, L * sizeof(float));
        rows[p] = dst;
    }
    return np;
}

// ReLU after the store (in the vector paths a select in the micro-kernel's epilogue made GCC
// keep all accumulators in memory); the same comparison as the scalar path.
inline void relu_block(const ConvJob& j, std::size_t m0, int np, int cb) {
    const int c0 = 64 * cb, c1 = std::min(j.Co, c0 + 64);
    for (int p = 0; p < np; ++p) {
        float* o = j.out + (m0 + p) * j.Co;
        for (int c = c0; c < c1; ++c) o[c] = o[c] < 0.0f ? 0.0f : o[c];
    }
}


inline void tile_scalar(const ConvJob& j, const float* const* rows, int np, std::size_t m0, int cb) {
    const std::size_t K = static_cast<std::size_t>(j.kh) * j.kw * j.C;
    for (int p = 0; p < np; ++p) {
        float* o = j.out + (m0 + p) * j.Co;
        for (int co0 = 64 * cb; co0 < j.Co && co0 < 64 * (cb + 1); co0 += 64) {
            const int n = std::min(64, j.Co - co0);
            float acc[64] = {};
            for (std::size_t c = 0; c < K; ++c) {
                const float a = rows[p][c];
                const float* wr = j.w + c * j.Co + co0;
                for (int q = 0; q < n; ++q) acc[q] = std::fma(a, wr[q], acc[q]);
            }
            for (int q = 0; q < n; ++q) o[co0 + q] = acc[q] + j.b[co0 + q];
        }
    }
}

#if defined(__x86_64__)
#define FK_AVX512 __attribute__((target("avx512f")))

// AVX-512: a 12 pixel x 32 channel register tile (24 zmm accumulators) read straight from the
// padded input (the kw*C inputs under one kernel row are contiguous: no gather copy), two weight
// vectors and 12 broadcasts per input for 24 FMAs. Work items are channel-block major, so a
// thread's run of pixel tiles streams its block's weights (Bi-Real's stem: 147 x 32 floats,
// 18.4 KB) from L1; a 64-channel block (37 KB) does not fit Zen 4's 32 KB L1 and ran at ~75 %
// of the FMA peak instead of ~90 %. Same fma chain per output as every other path.
constexpr int kPix512 = 12;

template <int NP>
FK_AVX512 inline void tile_avx512(const ConvJob& j, const float* const* base, std::size_t m0, int cb) {
    const int co0 = 32 * cb;
    const int n = j.Co - co0;
    const __mmask16 k0 = n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1);
    const __mmask16 k1 = n >= 32 ? static_cast<__mmask16>(0xffff)
                                 : n <= 16 ? static_cast<__mmask16>(0) : static_cast<__mmask16>((1u << (n - 16)) - 1);
    const std::size_t L = static_cast<std::size_t>(j.kw) * j.C;
    const std::size_t rowstep = static_cast<std::size_t>(j.Wp) * j.C;
    __m512 acc[NP][2];
#pragma GCC unroll 12
    for (int p = 0; p < NP; ++p) acc[p][0] = acc[p][1] = _mm512_setzero_ps();
    const float* wc = j.w + co0;
    for (int ky = 0; ky < j.kh; ++ky) {
        const float* x[NP];
#pragma GCC unroll 12
        for (int p = 0; p < NP; ++p) x[p] = base[p] + ky * rowstep;
        for (std::size_t t = 0; t < L; ++t, wc += j.Co) {
            const __m512 w0 = _mm512_maskz_loadu_ps(k0, wc);
            const __m512 w1 = _mm512_maskz_loadu_ps(k1, wc + 16);
#pragma GCC unroll 12
            for (int p = 0; p < NP; ++p) {
                const __m512 a = _mm512_set1_ps(x[p][t]);
                acc[p][0] = _mm512_fmadd_ps(a, w0, acc[p][0]);
                acc[p][1] = _mm512_fmadd_ps(a, w1, acc[p][1]);
            }
        }
    }
    const __m512 b0 = _mm512_maskz_loadu_ps(k0, j.b + co0), b1 = _mm512_maskz_loadu_ps(k1, j.b + co0 + 16);
    const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 12
    for (int p = 0; p < NP; ++p) {
        __m512 y0 = _mm512_add_ps(acc[p][0], b0), y1 = _mm512_add_ps(acc[p][1], b1);
        if (j.relu) {  // max(0, y) = (0 > y ? 0 : y): y < 0 ? 0 : y, NaN and -0.0 kept
            y0 = _mm512_max_ps(zero, y0);
            y1 = _mm512_max_ps(zero, y1);
        }
        float* o = j.out + (m0 + p) * j.Co + co0;
        _mm512_mask_storeu_ps(o, k0, y0);
        _mm512_mask_storeu_ps(o + 16, k1, y1);
    }
}

FK_AVX512 void work_avx512(const ConvJob& j, std::size_t i0, std::size_t i1) {
    const std::size_t pixels = static_cast<std::size_t>(j.N) * j.Ho * j.Wo;
    const float* base[kPix512];
    for (std::size_t i = i0; i < i1; ++i) {
        const int cb = static_cast<int>(i / j.tiles);
        const std::size_t m0 = i % j.tiles * kPix512;
        const int np = static_cast<int>(std::min<std::size_t>(kPix512, pixels - m0));
        for (int p = 0; p < np; ++p) base[p] = pixel_base(j, m0 + p);
        switch (np) {
            case 12: tile_avx512<12>(j, base, m0, cb); break;
            case 11: tile_avx512<11>(j, base, m0, cb); break;
            case 10: tile_avx512<10>(j, base, m0, cb); break;
            case 9: tile_avx512<9>(j, base, m0, cb); break;
            case 8: tile_avx512<8>(j, base, m0, cb); break;
            case 7: tile_avx512<7>(j, base, m0, cb); break;
            case 6: tile_avx512<6>(j, base, m0, cb); break;
            case 5: tile_avx512<5>(j, base, m0, cb); break;
            case 4: tile_avx512<4>(j, base, m0, cb); break;
            case 3: tile_avx512<3>(j, base, m0, cb); break;
            case 2: tile_avx512<2>(j, base, m0, cb); break;
            default: tile_avx512<1>(j, base, m0, cb); break;
        }
    }
}

#define FK_AVX2 __attribute__((target("avx2,fma")))

template <int NP>
FK_AVX2 inline void tile_avx2(const ConvJob& j, const float* const* rows, std::size_t m0, int cb) {
    const std::size_t K = static_cast<std::size_t>(j.kh) * j.kw * j.C;
    for (int co0 = 64 * cb; co0 < j.Co && co0 < 64 * (cb + 1); co0 += 32) {
        __m256i mk[4];
        for (int k = 0; k < 4; ++k) {
            const int n = std::min(8, std::max(0, j.Co - co0 - 8 * k));
            mk[k] = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        }
        __m256 acc[NP][4];
        for (int p = 0; p < NP; ++p)
            for (int k = 0; k < 4; ++k) acc[p][k] = _mm256_setzero_ps();
        const float* wc = j.w + co0;
        for (std::size_t c = 0; c < K; ++c, wc += j.Co) {
            __m256 w[4];
            for (int k = 0; k < 4; ++k) w[k] = _mm256_maskload_ps(wc + 8 * k, mk[k]);
            for (int p = 0; p < NP; ++p) {
                const __m256 a = _mm256_broadcast_ss(rows[p] + c);
                for (int k = 0; k < 4; ++k) acc[p][k] = _mm256_fmadd_ps(a, w[k], acc[p][k]);
            }
        }
        for (int p = 0; p < NP; ++p) {
            float* o = j.out + (m0 + p) * j.Co + co0;
            for (int k = 0; k < 4; ++k)
                _mm256_maskstore_ps(o + 8 * k, mk[k],
                                    _mm256_add_ps(acc[p][k], _mm256_maskload_ps(j.b + co0 + 8 * k, mk[k])));
        }
    }
}

FK_AVX2 void work_avx2(const ConvJob& j, std::size_t i0, std::size_t i1, float* buf) {
    const float* rows[kPix];
    for (std::size_t i = i0; i < i1; ++i) {
        const std::size_t t = i / j.nco;
        const int cb = static_cast<int>(i % j.nco);
        const std::size_t m0 = t * kPix;
        const int np = tile_rows(j, t, buf, rows);
        for (int p = 0; p < np; p += 3) {
            switch (std::min(3, np - p)) {
                case 3: tile_avx2<3>(j, rows + p, m0 + p, cb); break;
                case 2: tile_avx2<2>(j, rows + p, m0 + p, cb); break;
                default: tile_avx2<1>(j, rows + p, m0 + p, cb); break;
            }
        }
        if (j.relu) relu_block(j, m0, np, cb);
    }
}
#endif

#if defined(__x86_64__) && defined(__GLIBC__) && !defined(__clang__) && !defined(XNOR_NO_CLONES)
__attribute__((target_clones("fma", "default"), flatten))
#endif
void work_portable(const ConvJob& j, std::size_t i0, std::size_t i1, float* buf) {
    const float* rows[kPix];
    for (std::size_t i = i0; i < i1; ++i) {
        const std::size_t t = i / j.nco;
        const int cb = static_cast<int>(i % j.nco);
        const int np = tile_rows(j, t, buf, rows);
        tile_scalar(j, rows, np, t * kPix, cb);
        if (j.relu) relu_block(j, t * kPix, np, cb);
    }
}

void conv_work(void* ctx, int part, int nparts) {
    const ConvJob& j = *static_cast<const ConvJob*>(ctx);
    const std::size_t items = j.tiles * j.nco;
    const std::size_t t0 = items * part / nparts, t1 = items * (part + 1) / nparts;
    if (t0 >= t1) return;
    thread_local std::vector<float> tls;
    float* buf = nullptr;
    if (j.kh > 1) {
        tls.resize(static_cast<std::size_t>(kPix) * j.kh * j.kw * j.C);
        buf = tls.data();
    }
#if defined(__x86_64__)
    if (j.isa == Isa::avx2) return work_avx2(j, t0, t1, buf);
#endif
    work_portable(j, t0, t1, buf);
}

// Generic row-range helper: f(ctx, r0, r1) over [0, rows) split over threads.
template <typename F>
void split_rows(std::size_t rows, int threads, std::size_t grain, F&& f) {
    struct Ctx {
        std::size_t rows;
        F* f;
    } c{rows, &f};
    auto work = [](void* ctx, int part, int nparts) {
        auto& cc = *static_cast<Ctx*>(ctx);
        const std::size_t r0 = cc.rows * part / nparts, r1 = cc.rows * (part + 1) / nparts;
        if (r0 < r1) (*cc.f)(r0, r1);
    };
    parallel_run(threads, parts_for(rows / (grain ? grain : 1) + 1, threads), work, &c);
}

#if defined(__x86_64__)
void conv_work_avx512(void* ctx, int part, int nparts) {
    const ConvJob& j = *static_cast<const ConvJob*>(ctx);
    const std::size_t items = j.tiles * j.nco;
    const std::size_t i0 = items * part / nparts, i1 = items * (part + 1) / nparts;
    if (i0 < i1) work_avx512(j, i0, i1);
}
#endif

}  // namespace

#if defined(__aarch64__)
// kernel_neon.cpp: 4 pixels x 16 channels, the same fma order as every path here
void conv_float_neon(const float* xp, int N, int Hp, int Wp, int C, int kh, int kw, int stride, const float* w,
                     int Co, const float* b, bool relu, float* out, int threads);
#endif

void conv_float(const float* xp, int N, int Hp, int Wp, int C, int kh, int kw, int stride, const float* w,
                int Co, const float* b, bool relu, float* out, int threads, Isa isa) {
#if defined(__aarch64__)
    if (isa == Isa::neon) return conv_float_neon(xp, N, Hp, Wp, C, kh, kw, stride, w, Co, b, relu, out, threads);
#endif
    ConvJob j{xp, N, Hp, Wp, C, kh, kw, stride, (Hp - kh) / stride + 1, (Wp - kw) / stride + 1, Co, w, b, relu,
              out, 0, (Co + 63) / 64, isa};
    const std::size_t pixels = static_cast<std::size_t>(N) * j.Ho * j.Wo;
#if defined(__x86_64__)
    if (isa == Isa::avx512) {
        // items: 32-channel blocks x 12-pixel tiles, block-major (see tile_avx512)
        j.tiles = (pixels + kPix512 - 1) / kPix512;
        j.nco = (Co + 31) / 32;
        if (j.tiles == 0) return;
        parallel_run(threads, parts_for(j.tiles * j.nco, threads), conv_work_avx512, &j);
        return;
    }
#endif
    j.tiles = (pixels + kPix - 1) / kPix;
    if (j.tiles == 0) return;
    // pixel tiles x channel blocks, pixel-major: a tile's gathered inputs stay in cache across
    // its channel blocks, and small outputs (the classifier at batch 1) still split over threads
    parallel_run(threads, parts_for(j.tiles * j.nco, threads), conv_work, &j);
}

void pad_nhwc(const float* x, int N, int H, int W, int C, int pad, float* out, int threads) {
    const int Hp = H + 2 * pad, Wp = W + 2 * pad;
    const std::size_t rowp = static_cast<std::size_t>(Wp) * C;
    split_rows(static_cast<std::size_t>(N) * Hp, threads, 64, [&](std::size_t r0, std::size_t r1) {
        for (std::size_t r = r0; r < r1; ++r) {
            const std::size_t n = r / Hp;
            const int y = static_cast<int>(r % Hp) - pad;
            float* o = out + r * rowp;
            if (y < 0 || y >= H) {
                std::memset(o, 0, rowp * sizeof(float));
                continue;
            }
            const std::size_t edge = static_cast<std::size_t>(pad) * C;
            std::memset(o, 0, edge * sizeof(float));
            std::memcpy(o + edge, x + ((n * H + y) * W) * C, static_cast<std::size_t>(W) * C * sizeof(float));
            std::memset(o + edge + static_cast<std::size_t>(W) * C, 0, edge * sizeof(float));
        }
    });
}

void nchw_to_nhwc(const float* x, int N, int C, int HW, float* out, int threads) {
    split_rows(static_cast<std::size_t>(N) * HW, threads, 256, [&](std::size_t r0, std::size_t r1) {
        for (std::size_t r = r0; r < r1; ++r) {
            const std::size_t n = r / HW, p = r % HW;
            const float* src = x + n * C * HW + p;
            float* o = out + r * C;
            for (int c = 0; c < C; ++c) o[c] = src[static_cast<std::size_t>(c) * HW];
        }
    });
}

void nhwc_to_nchw(const float* x, int N, int HW, int C, float* out, int threads) {
    split_rows(static_cast<std::size_t>(N) * C, threads, 16, [&](std::size_t r0, std::size_t r1) {
        for (std::size_t r = r0; r < r1; ++r) {
            const std::size_t n = r / C, c = r % C;
            const float* src = x + n * HW * C + c;
            float* o = out + r * HW;
            for (int p = 0; p < HW; ++p) o[p] = src[static_cast<std::size_t>(p) * C];
        }
    });
}

namespace {

// Vector clones of the element-wise loops (max, add, compare-select and a division per element
// are exactly rounded, so every clone gives the same bytes as the baseline one).
#if defined(__x86_64__) && defined(__GLIBC__) && !defined(__clang__) && !defined(XNOR_NO_CLONES)
#define FK_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FK_CLONES
#endif

FK_CLONES void pool_rows(const float* x, int H, int W, int C, bool is_max, int kh, int kw, int sh, int sw, int pt,
                         int pl, int Ho, int Wo, float* out, std::size_t r0, std::size_t r1) {
    const float div = static_cast<float>(kh * kw);
    for (std::size_t r = r0; r < r1; ++r) {
        const std::size_t n = r / (static_cast<std::size_t>(Ho) * Wo);
        const int oy = static_cast<int>(r / Wo % Ho), ox = static_cast<int>(r % Wo);
        float* __restrict o = out + r * C;
        bool first = true;
        for (int ky = 0; ky < kh; ++ky) {
            const int y = oy * sh - pt + ky;
            if (y < 0 || y >= H) continue;
            for (int kx = 0; kx < kw; ++kx) {
                const int xx = ox * sw - pl + kx;
                if (xx < 0 || xx >= W) continue;
                const float* __restrict s = x + ((n * H + y) * W + xx) * C;
                if (first) {
                    for (int c = 0; c < C; ++c) o[c] = s[c];
                    first = false;
                } else if (is_max) {
                    for (int c = 0; c < C; ++c) o[c] = s[c] > o[c] ? s[c] : o[c];
                } else {
                    for (int c = 0; c < C; ++c) o[c] += s[c];
                }
            }
        }
        if (first) {  // a window entirely in the padding (validated away; defined anyway)
            for (int c = 0; c < C; ++c) o[c] = is_max ? -INFINITY : 0.0f;
        } else if (!is_max) {
            for (int c = 0; c < C; ++c) o[c] /= div;
        }
    }
}

FK_CLONES void affine_rows(const float* x, int C, const float* scale, const float* shift, bool relu, float* out,
                           std::size_t r0, std::size_t r1) {
    for (std::size_t r = r0; r < r1; ++r) {
        const float* s = x + r * C;
        float* o = out + r * C;
        if (scale) {
            for (int c = 0; c < C; ++c) {
                const float m = s[c] * scale[c];
                o[c] = m + shift[c];
            }
        } else if (o != s) {
            std::memcpy(o, s, static_cast<std::size_t>(C) * sizeof(float));
        }
        if (relu)
            for (int c = 0; c < C; ++c) o[c] = o[c] < 0.0f ? 0.0f : o[c];
    }
}

}  // namespace

void pool_nhwc(const float* x, int N, int H, int W, int C, bool is_max, int kh, int kw, int sh, int sw, int pt,
               int pl, int Ho, int Wo, float* out, int threads) {
    split_rows(static_cast<std::size_t>(N) * Ho * Wo, threads, 64, [&](std::size_t r0, std::size_t r1) {
        pool_rows(x, H, W, C, is_max, kh, kw, sh, sw, pt, pl, Ho, Wo, out, r0, r1);
    });
}

void affine_nhwc(const float* x, std::size_t pixels, int C, const float* scale, const float* shift, bool relu,
                 float* out, int threads) {
    split_rows(pixels, threads, 256, [&](std::size_t r0, std::size_t r1) {
        affine_rows(x, C, scale, shift, relu, out, r0, r1);
    });
}

void global_avg_pool(const float* x, int N, int HW, int C, float* out) {
    for (int n = 0; n < N; ++n) {
        float* o = out + static_cast<std::size_t>(n) * C;
        const float* s = x + static_cast<std::size_t>(n) * HW * C;
        std::memcpy(o, s, static_cast<std::size_t>(C) * sizeof(float));
        for (int p = 1; p < HW; ++p)
            for (int c = 0; c < C; ++c) o[c] += s[static_cast<std::size_t>(p) * C + c];
        const float d = static_cast<float>(HW);
        for (int c = 0; c < C; ++c) o[c] /= d;
    }
}

void unpack_bits(const uint64_t* x, std::size_t pixels, int C, float* out) {
    const int Cw = (C + 63) / 64;
    for (std::size_t p = 0; p < pixels; ++p)
        for (int c = 0; c < C; ++c)
            out[p * C + c] = (x[p * Cw + c / 64] >> (c % 64)) & 1 ? -1.0f : 1.0f;
}

}  // namespace xnor
