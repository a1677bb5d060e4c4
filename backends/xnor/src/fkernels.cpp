// Float kernels of the standalone engine (see fkernels.h).
#include "fkernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>

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

inline float finish(float acc, float b, bool relu) {
    const float y = acc + b;
    return relu && y < 0.0f ? 0.0f : y;
}

inline void tile_scalar(const ConvJob& j, const float* const* rows, int np, std::size_t m0) {
    const std::size_t L = static_cast<std::size_t>(j.kw) * j.C;
    const std::size_t rowstep = static_cast<std::size_t>(j.Wp) * j.C;
    for (int p = 0; p < np; ++p) {
        float* o = j.out + (m0 + p) * j.Co;
        for (int co0 = 0; co0 < j.Co; co0 += 64) {
            const int n = std::min(64, j.Co - co0);
            float acc[64] = {};
            for (int ky = 0; ky < j.kh; ++ky) {
                const float* r = rows[p] + ky * rowstep;
                const float* wk = j.w + ky * L * j.Co + co0;
                for (std::size_t t = 0; t < L; ++t) {
                    const float a = r[t];
                    const float* wr = wk + t * j.Co;
                    for (int q = 0; q < n; ++q) acc[q] = std::fma(a, wr[q], acc[q]);
                }
            }
            for (int q = 0; q < n; ++q) o[co0 + q] = finish(acc[q], j.b[co0 + q], j.relu);
        }
    }
}

#if defined(__x86_64__)
#define FK_AVX512 __attribute__((target("avx512f")))

template <int NP>
FK_AVX512 inline void tile_avx512(const ConvJob& j, const float* const* rows, std::size_t m0) {
    const std::size_t L = static_cast<std::size_t>(j.kw) * j.C;
    const std::size_t rowstep = static_cast<std::size_t>(j.Wp) * j.C;
    const __m512 zero = _mm512_setzero_ps();
    for (int co0 = 0; co0 < j.Co; co0 += 64) {
        __mmask16 mk[4];
        for (int k = 0; k < 4; ++k) {
            const int n = j.Co - co0 - 16 * k;
            mk[k] = n >= 16 ? static_cast<__mmask16>(0xffff) : n <= 0 ? 0 : static_cast<__mmask16>((1u << n) - 1);
        }
        __m512 acc[NP][4];
        for (int p = 0; p < NP; ++p)
            for (int k = 0; k < 4; ++k) acc[p][k] = _mm512_setzero_ps();
        for (int ky = 0; ky < j.kh; ++ky) {
            const float* wc = j.w + ky * L * j.Co + co0;
            const std::size_t off = ky * rowstep;
            for (std::size_t t = 0; t < L; ++t, wc += j.Co) {
                const __m512 w0 = _mm512_maskz_loadu_ps(mk[0], wc);
                const __m512 w1 = _mm512_maskz_loadu_ps(mk[1], wc + 16);
                const __m512 w2 = _mm512_maskz_loadu_ps(mk[2], wc + 32);
                const __m512 w3 = _mm512_maskz_loadu_ps(mk[3], wc + 48);
                for (int p = 0; p < NP; ++p) {
                    const __m512 a = _mm512_set1_ps(rows[p][off + t]);
                    acc[p][0] = _mm512_fmadd_ps(a, w0, acc[p][0]);
                    acc[p][1] = _mm512_fmadd_ps(a, w1, acc[p][1]);
                    acc[p][2] = _mm512_fmadd_ps(a, w2, acc[p][2]);
                    acc[p][3] = _mm512_fmadd_ps(a, w3, acc[p][3]);
                }
            }
        }
        for (int p = 0; p < NP; ++p) {
            float* o = j.out + (m0 + p) * j.Co + co0;
            for (int k = 0; k < 4; ++k) {
                __m512 y = _mm512_add_ps(acc[p][k], _mm512_maskz_loadu_ps(mk[k], j.b + co0 + 16 * k));
                if (j.relu) y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(y, zero, _CMP_LT_OQ), y, zero);
                _mm512_mask_storeu_ps(o + 16 * k, mk[k], y);
            }
        }
    }
}

FK_AVX512 void work_avx512(const ConvJob& j, std::size_t t0, std::size_t t1) {
    const std::size_t pixels = static_cast<std::size_t>(j.N) * j.Ho * j.Wo;
    const float* rows[kPix];
    for (std::size_t t = t0; t < t1; ++t) {
        const std::size_t m0 = t * kPix;
        const int np = static_cast<int>(std::min<std::size_t>(kPix, pixels - m0));
        for (int p = 0; p < np; ++p) rows[p] = pixel_base(j, m0 + p);
        switch (np) {
            case 6: tile_avx512<6>(j, rows, m0); break;
            case 5: tile_avx512<5>(j, rows, m0); break;
            case 4: tile_avx512<4>(j, rows, m0); break;
            case 3: tile_avx512<3>(j, rows, m0); break;
            case 2: tile_avx512<2>(j, rows, m0); break;
            default: tile_avx512<1>(j, rows, m0); break;
        }
    }
}

#define FK_AVX2 __attribute__((target("avx2,fma")))

template <int NP>
FK_AVX2 inline void tile_avx2(const ConvJob& j, const float* const* rows, std::size_t m0) {
    const std::size_t L = static_cast<std::size_t>(j.kw) * j.C;
    const std::size_t rowstep = static_cast<std::size_t>(j.Wp) * j.C;
    const __m256 zero = _mm256_setzero_ps();
    for (int co0 = 0; co0 < j.Co; co0 += 32) {
        __m256i mk[4];
        for (int k = 0; k < 4; ++k) {
            const int n = std::min(8, std::max(0, j.Co - co0 - 8 * k));
            mk[k] = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        }
        __m256 acc[NP][4];
        for (int p = 0; p < NP; ++p)
            for (int k = 0; k < 4; ++k) acc[p][k] = _mm256_setzero_ps();
        for (int ky = 0; ky < j.kh; ++ky) {
            const float* wc = j.w + ky * L * j.Co + co0;
            const std::size_t off = ky * rowstep;
            for (std::size_t t = 0; t < L; ++t, wc += j.Co) {
                __m256 w[4];
                for (int k = 0; k < 4; ++k) w[k] = _mm256_maskload_ps(wc + 8 * k, mk[k]);
                for (int p = 0; p < NP; ++p) {
                    const __m256 a = _mm256_broadcast_ss(rows[p] + off + t);
                    for (int k = 0; k < 4; ++k) acc[p][k] = _mm256_fmadd_ps(a, w[k], acc[p][k]);
                }
            }
        }
        for (int p = 0; p < NP; ++p) {
            float* o = j.out + (m0 + p) * j.Co + co0;
            for (int k = 0; k < 4; ++k) {
                __m256 y = _mm256_add_ps(acc[p][k], _mm256_maskload_ps(j.b + co0 + 8 * k, mk[k]));
                if (j.relu) y = _mm256_blendv_ps(y, zero, _mm256_cmp_ps(y, zero, _CMP_LT_OQ));
                _mm256_maskstore_ps(o + 8 * k, mk[k], y);
            }
        }
    }
}

FK_AVX2 void work_avx2(const ConvJob& j, std::size_t t0, std::size_t t1) {
    const std::size_t pixels = static_cast<std::size_t>(j.N) * j.Ho * j.Wo;
    const float* rows[kPix];
    for (std::size_t t = t0; t < t1; ++t) {
        const std::size_t m0 = t * kPix;
        const int np = static_cast<int>(std::min<std::size_t>(kPix, pixels - m0));
        for (int p = 0; p < np; ++p) rows[p] = pixel_base(j, m0 + p);
        for (int p = 0; p < np; p += 3) {
            switch (std::min(3, np - p)) {
                case 3: tile_avx2<3>(j, rows + p, m0 + p); break;
                case 2: tile_avx2<2>(j, rows + p, m0 + p); break;
                default: tile_avx2<1>(j, rows + p, m0 + p); break;
            }
        }
    }
}
#endif

#if defined(__x86_64__) && defined(__GLIBC__) && !defined(__clang__) && !defined(XNOR_NO_CLONES)
__attribute__((target_clones("fma", "default"), flatten))
#endif
void work_portable(const ConvJob& j, std::size_t t0, std::size_t t1) {
    const std::size_t pixels = static_cast<std::size_t>(j.N) * j.Ho * j.Wo;
    const float* rows[kPix];
    for (std::size_t t = t0; t < t1; ++t) {
        const std::size_t m0 = t * kPix;
        const int np = static_cast<int>(std::min<std::size_t>(kPix, pixels - m0));
        for (int p = 0; p < np; ++p) rows[p] = pixel_base(j, m0 + p);
        tile_scalar(j, rows, np, m0);
    }
}

void conv_work(void* ctx, int part, int nparts) {
    const ConvJob& j = *static_cast<const ConvJob*>(ctx);
    const std::size_t t0 = j.tiles * part / nparts, t1 = j.tiles * (part + 1) / nparts;
    if (t0 >= t1) return;
#if defined(__x86_64__)
    if (j.isa == Isa::avx512) return work_avx512(j, t0, t1);
    if (j.isa == Isa::avx2) return work_avx2(j, t0, t1);
#endif
    work_portable(j, t0, t1);
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

}  // namespace

void conv_float(const float* xp, int N, int Hp, int Wp, int C, int kh, int kw, int stride, const float* w,
                int Co, const float* b, bool relu, float* out, int threads, Isa isa) {
    ConvJob j{xp, N, Hp, Wp, C, kh, kw, stride, (Hp - kh) / stride + 1, (Wp - kw) / stride + 1, Co, w, b, relu,
              out, 0, isa};
    const std::size_t pixels = static_cast<std::size_t>(N) * j.Ho * j.Wo;
    j.tiles = (pixels + kPix - 1) / kPix;
    if (j.tiles == 0) return;
    parallel_run(threads, parts_for(j.tiles, threads), conv_work, &j);
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

void pool_nhwc(const float* x, int N, int H, int W, int C, bool is_max, int kh, int kw, int sh, int sw, int pt,
               int pl, int Ho, int Wo, float* out, int threads) {
    const float inv = static_cast<float>(kh * kw);
    split_rows(static_cast<std::size_t>(N) * Ho * Wo, threads, 64, [&](std::size_t r0, std::size_t r1) {
        for (std::size_t r = r0; r < r1; ++r) {
            const std::size_t n = r / (static_cast<std::size_t>(Ho) * Wo);
            const int oy = static_cast<int>(r / Wo % Ho), ox = static_cast<int>(r % Wo);
            float* o = out + r * C;
            bool first = true;
            for (int ky = 0; ky < kh; ++ky) {
                const int y = oy * sh - pt + ky;
                if (y < 0 || y >= H) continue;
                for (int kx = 0; kx < kw; ++kx) {
                    const int xx = ox * sw - pl + kx;
                    if (xx < 0 || xx >= W) continue;
                    const float* s = x + ((n * H + y) * W + xx) * C;
                    if (first) {
                        std::memcpy(o, s, static_cast<std::size_t>(C) * sizeof(float));
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
                for (int c = 0; c < C; ++c) o[c] /= inv;
            }
        }
    });
}

void affine_nhwc(const float* x, std::size_t pixels, int C, const float* scale, const float* shift, bool relu,
                 float* out, int threads) {
    split_rows(pixels, threads, 256, [&](std::size_t r0, std::size_t r1) {
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
