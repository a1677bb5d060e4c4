// Float kernels of the standalone engine (see fkernels.h).
#include "fkernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>
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
    // Pixels [m_start, m_end) are computed, in tiles from m_start; pixel m is stored at
    // out + (m - m_base) * Co (a full conv: 0, all pixels, 0; the fused pool: a band of rows).
    std::size_t m_start = 0, m_end = 0, m_base = 0;
    const float* wb = nullptr;  // the weights in 32-channel blocks (block_weights), or null
    // AVX-512 RGB stems (stride x C = 6): tiles of up to `chunk` pixels that never cross an
    // output row (row_tiles per row), so every tile takes the one-pointer path; 0: flat tiles.
    int row_tiles = 0, chunk = 0;
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
    const std::size_t m0 = j.m_start + t * kPix;
    const int np = static_cast<int>(std::min<std::size_t>(kPix, j.m_end - m0));
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
        float* o = j.out + (m0 + p - j.m_base) * j.Co;
        for (int c = c0; c < c1; ++c) o[c] = o[c] < 0.0f ? 0.0f : o[c];
    }
}


inline void tile_scalar(const ConvJob& j, const float* const* rows, int np, std::size_t m0, int cb) {
    const std::size_t K = static_cast<std::size_t>(j.kh) * j.kw * j.C;
    for (int p = 0; p < np; ++p) {
        float* o = j.out + (m0 + p - j.m_base) * j.Co;
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
constexpr int kStemPix = 14;  // row tiles of the RGB stems (stem_tile_avx512)

// S > 0: the NP pixels lie in one output row, S floats apart (stride x C), so one pointer and
// constant offsets address them all (12 pointers spilled registers in the inner loop).
template <int NP, int S = 0>
FK_AVX512 inline void tile_avx512(const ConvJob& j, const float* const* base, std::size_t m0, int cb) {
    const int co0 = 32 * cb;
    const int n = j.Co - co0;
    const __mmask16 k0 = n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1);
    const __mmask16 k1 = n >= 32 ? static_cast<__mmask16>(0xffff)
                                 : n <= 16 ? static_cast<__mmask16>(0) : static_cast<__mmask16>((1u << (n - 16)) - 1);
    const std::size_t L = static_cast<std::size_t>(j.kw) * j.C;
    const std::size_t rowstep = static_cast<std::size_t>(j.Wp) * j.C;
    __m512 acc[NP][2];
#pragma GCC unroll 14
    for (int p = 0; p < NP; ++p) acc[p][0] = acc[p][1] = _mm512_setzero_ps();
    // Blocked weights: one contiguous K x 32 block. HWIO rows of Co = 64 floats would put the
    // block's 128-byte half rows in half of L1's sets, where 147 of them no longer fit.
    const std::size_t K = static_cast<std::size_t>(j.kh) * L;
    const float* wc = j.wb ? j.wb + static_cast<std::size_t>(cb) * K * 32 : j.w + co0;
    const std::size_t wstep = j.wb ? 32 : static_cast<std::size_t>(j.Co);
    for (int ky = 0; ky < j.kh; ++ky) {
        const float* x[NP];
#pragma GCC unroll 14
        for (int p = 0; p < NP; ++p) x[p] = base[p] + ky * rowstep;
        const float* x0 = base[0] + ky * rowstep;
        for (std::size_t t = 0; t < L; ++t, wc += wstep) {
            // Blocked weights are zero past Co: whole vectors (lanes past Co are never stored).
            // The masked loads, masks spilled to the stack, held the stem at ~88 % of the FMA
            // peak; these reach ~97 %.
            const __m512 w0 = j.wb ? _mm512_loadu_ps(wc) : _mm512_maskz_loadu_ps(k0, wc);
            const __m512 w1 = j.wb ? _mm512_loadu_ps(wc + 16) : _mm512_maskz_loadu_ps(k1, wc + 16);
#pragma GCC unroll 14
            for (int p = 0; p < NP; ++p) {
                const __m512 a = _mm512_set1_ps(S ? x0[t + p * S] : x[p][t]);
                acc[p][0] = _mm512_fmadd_ps(a, w0, acc[p][0]);
                acc[p][1] = _mm512_fmadd_ps(a, w1, acc[p][1]);
            }
        }
    }
    const __m512 b0 = _mm512_maskz_loadu_ps(k0, j.b + co0), b1 = _mm512_maskz_loadu_ps(k1, j.b + co0 + 16);
    const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 14
    for (int p = 0; p < NP; ++p) {
        __m512 y0 = _mm512_add_ps(acc[p][0], b0), y1 = _mm512_add_ps(acc[p][1], b1);
        if (j.relu) {  // max(0, y) = (0 > y ? 0 : y): y < 0 ? 0 : y, NaN and -0.0 kept
            y0 = _mm512_max_ps(zero, y0);
            y1 = _mm512_max_ps(zero, y1);
        }
        float* o = j.out + (m0 + p - j.m_base) * j.Co + co0;
        _mm512_mask_storeu_ps(o, k0, y0);
        _mm512_mask_storeu_ps(o + 16, k1, y1);
    }
}

// Item i of an RGB stem with row tiles: NP <= 14 pixels of one output row, 6 floats apart.
FK_AVX512 void stem_tile_avx512(const ConvJob& j, std::size_t i) {
    const int cb = static_cast<int>(i / j.tiles);
    const std::size_t t = i % j.tiles;
    const std::size_t row = j.m_start / j.Wo + t / j.row_tiles;  // n * Ho + oy
    const int ox = static_cast<int>(t % j.row_tiles) * j.chunk;
    const int np = std::min(j.chunk, j.Wo - ox);
    const std::size_t n = row / j.Ho, oy = row % j.Ho;
    const float* base[1] = {j.xp + ((n * j.Hp + oy * j.s) * j.Wp + static_cast<std::size_t>(ox) * j.s) * j.C};
    const std::size_t m0 = row * j.Wo + ox;
    switch (np) {
        case 14: return tile_avx512<14, 6>(j, base, m0, cb);
        case 13: return tile_avx512<13, 6>(j, base, m0, cb);
        case 12: return tile_avx512<12, 6>(j, base, m0, cb);
        case 11: return tile_avx512<11, 6>(j, base, m0, cb);
        case 10: return tile_avx512<10, 6>(j, base, m0, cb);
        case 9: return tile_avx512<9, 6>(j, base, m0, cb);
        case 8: return tile_avx512<8, 6>(j, base, m0, cb);
        case 7: return tile_avx512<7, 6>(j, base, m0, cb);
        case 6: return tile_avx512<6, 6>(j, base, m0, cb);
        case 5: return tile_avx512<5, 6>(j, base, m0, cb);
        case 4: return tile_avx512<4, 6>(j, base, m0, cb);
        case 3: return tile_avx512<3, 6>(j, base, m0, cb);
        case 2: return tile_avx512<2, 6>(j, base, m0, cb);
        default: return tile_avx512<1, 6>(j, base, m0, cb);
    }
}

FK_AVX512 void work_avx512(const ConvJob& j, std::size_t i0, std::size_t i1) {
    if (j.row_tiles) {
        for (std::size_t i = i0; i < i1; ++i) stem_tile_avx512(j, i);
        return;
    }
    const float* base[kPix512];
    for (std::size_t i = i0; i < i1; ++i) {
        const int cb = static_cast<int>(i / j.tiles);
        const std::size_t m0 = j.m_start + i % j.tiles * kPix512;
        const int np = static_cast<int>(std::min<std::size_t>(kPix512, j.m_end - m0));
        // one division per tile (12 cost ~7 % of a stem tile), then step along the row
        const std::size_t hw = static_cast<std::size_t>(j.Ho) * j.Wo;
        std::size_t n = m0 / hw;
        int oy = static_cast<int>(m0 % hw / j.Wo), ox = static_cast<int>(m0 % j.Wo);
        for (int p = 0; p < np; ++p) {
            base[p] = j.xp + ((n * j.Hp + static_cast<std::size_t>(oy) * j.s) * j.Wp + static_cast<std::size_t>(ox) * j.s) * j.C;
            if (++ox == j.Wo) {
                ox = 0;
                if (++oy == j.Ho) oy = 0, ++n;
            }
        }
        if (np == 12 && j.s * j.C == 6 && base[11] == base[0] + 66) {  // the 7x7/2 RGB stem, one row
            tile_avx512<12, 6>(j, base, m0, cb);
            continue;
        }
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
            float* o = j.out + (m0 + p - j.m_base) * j.Co + co0;
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
        const std::size_t m0 = j.m_start + t * kPix;
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
        tile_scalar(j, rows, np, j.m_start + t * kPix, cb);
        if (j.relu) relu_block(j, j.m_start + t * kPix, np, cb);
    }
}

// Tiles and channel blocks of pixels [m_start, m_end) for the ISA's register tile.
void setup_tiles(ConvJob& j) {
    const std::size_t px = j.m_end - j.m_start;
#if defined(__x86_64__)
    if (j.isa == Isa::avx512) {  // 32-channel blocks x 12-pixel tiles, block-major (tile_avx512)
        j.nco = (j.Co + 31) / 32;
        // An RGB stem over whole output rows: row tiles of up to 14 pixels (28 accumulators), as
        // even as the row allows (112 = 8 x 14). A 12-pixel tile crossing a row (one in ten of
        // Bi-Real's) took the 12-pointer path.
        if (j.s * j.C == 6 && j.Wo >= 8 && j.m_start % j.Wo == 0 && j.m_end % j.Wo == 0) {
            j.row_tiles = (j.Wo + kStemPix - 1) / kStemPix;
            j.chunk = (j.Wo + j.row_tiles - 1) / j.row_tiles;
            j.tiles = px / j.Wo * j.row_tiles;
            return;
        }
        j.tiles = (px + kPix512 - 1) / kPix512;
        return;
    }
#endif
    // pixel tiles x 64-channel blocks, pixel-major: a tile's gathered inputs stay in cache
    // across its channel blocks, and small outputs (the classifier at batch 1) still split
    j.tiles = (px + kPix - 1) / kPix;
    j.nco = (j.Co + 63) / 64;
}

// Items [i0, i1) of a job on this thread.
void run_items(const ConvJob& j, std::size_t i0, std::size_t i1) {
    if (i0 >= i1) return;
#if defined(__x86_64__)
    if (j.isa == Isa::avx512) return work_avx512(j, i0, i1);
#endif
    thread_local std::vector<float> tls;
    float* buf = nullptr;
    if (j.kh > 1) {
        tls.resize(static_cast<std::size_t>(kPix) * j.kh * j.kw * j.C);
        buf = tls.data();
    }
#if defined(__x86_64__)
    if (j.isa == Isa::avx2) return work_avx2(j, i0, i1, buf);
#endif
    work_portable(j, i0, i1, buf);
}

void conv_work(void* ctx, int part, int nparts) {
    const ConvJob& j = *static_cast<const ConvJob*>(ctx);
    const std::size_t items = j.tiles * j.nco;
    run_items(j, items * part / nparts, items * (part + 1) / nparts);
}



}  // namespace

#if defined(__aarch64__)
// kernel_neon.cpp: 4 pixels x 16 channels, the same fma order as every path here
void conv_float_neon(const float* xp, int N, int Hp, int Wp, int C, int kh, int kw, int stride, const float* w,
                     int Co, const float* b, bool relu, float* out, int threads);
#endif

std::vector<float> block_weights(const float* w, std::size_t K, int Co) {
    const std::size_t nb = (static_cast<std::size_t>(Co) + 31) / 32;
    std::vector<float> r(nb * K * 32, 0.0f);
    for (std::size_t k = 0; k < K; ++k)
        for (int c = 0; c < Co; ++c) r[(c / 32 * K + k) * 32 + c % 32] = w[k * Co + c];
    return r;
}

void conv_float(const float* xp, int N, int Hp, int Wp, int C, int kh, int kw, int stride, const float* w,
                int Co, const float* b, bool relu, float* out, int threads, Isa isa, const float* wb) {
#if defined(__aarch64__)
    if (isa == Isa::neon) return conv_float_neon(xp, N, Hp, Wp, C, kh, kw, stride, w, Co, b, relu, out, threads);
#endif
    ConvJob j{xp, N, Hp, Wp, C, kh, kw, stride, (Hp - kh) / stride + 1, (Wp - kw) / stride + 1, Co, w, b, relu,
              out, 0, 0, isa};
    j.wb = wb;
    j.m_end = static_cast<std::size_t>(N) * j.Ho * j.Wo;
    setup_tiles(j);
    if (j.tiles == 0) return;
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

namespace {

#if defined(__x86_64__)
// 3-channel images (every RGB stem input): 16 pixels of the three planes -> 48 interleaved
// floats with two permutes per output vector (the scalar loop ran at ~1 pixel per 5 cycles).
FK_AVX512 void nchw3_to_nhwc_avx512(const float* src, std::size_t HW, std::size_t p0, std::size_t p1, float* o) {
    alignas(64) static const int32_t ab_idx[3][16] = {
        {0, 16, 0, 1, 17, 0, 2, 18, 0, 3, 19, 0, 4, 20, 0, 5},
        {21, 0, 6, 22, 0, 7, 23, 0, 8, 24, 0, 9, 25, 0, 10, 26},
        {0, 11, 27, 0, 12, 28, 0, 13, 29, 0, 14, 30, 0, 15, 31, 0}};
    alignas(64) static const int32_t c_idx[3][16] = {
        {0, 1, 16, 3, 4, 17, 6, 7, 18, 9, 10, 19, 12, 13, 20, 15},
        {0, 21, 2, 3, 22, 5, 6, 23, 8, 9, 24, 11, 12, 25, 14, 15},
        {26, 1, 2, 27, 4, 5, 28, 7, 8, 29, 10, 11, 30, 13, 14, 31}};
    std::size_t p = p0;
    for (; p + 16 <= p1; p += 16) {
        const __m512 a = _mm512_loadu_ps(src + p), b = _mm512_loadu_ps(src + HW + p),
                     c = _mm512_loadu_ps(src + 2 * HW + p);
        float* d = o + 3 * (p - p0);
        for (int k = 0; k < 3; ++k) {
            const __m512 t = _mm512_permutex2var_ps(a, _mm512_load_si512(ab_idx[k]), b);
            _mm512_storeu_ps(d + 16 * k, _mm512_permutex2var_ps(t, _mm512_load_si512(c_idx[k]), c));
        }
    }
    for (; p < p1; ++p)
        for (int ch = 0; ch < 3; ++ch) o[3 * (p - p0) + ch] = src[ch * HW + p];
}
#endif

}  // namespace

void nchw_to_nhwc(const float* x, int N, int C, int HW, float* out, int threads) {
#if defined(__x86_64__)
    static const bool avx512 = cpu_supports(Isa::avx512);
#endif
    split_rows(static_cast<std::size_t>(N) * HW, threads, 256, [&](std::size_t r0, std::size_t r1) {
        for (std::size_t r = r0; r < r1;) {  // per image: pixels [p, pe) of image n
            const std::size_t n = r / HW, p = r % HW, pe = std::min<std::size_t>(HW, p + (r1 - r));
            const float* src = x + n * C * HW;
#if defined(__x86_64__)
            if (C == 3 && avx512) {
                nchw3_to_nhwc_avx512(src, HW, p, pe, out + r * C);
                r += pe - p;
                continue;
            }
#endif
            for (std::size_t q = p; q < pe; ++q, ++r) {
                float* o = out + r * C;
                for (int c = 0; c < C; ++c) o[c] = src[static_cast<std::size_t>(c) * HW + q];
            }
        }
    });
}

void nchw_to_nhwc_padded(const float* x, int N, int C, int H, int W, int pad, float* out, int threads) {
#if defined(__x86_64__)
    static const bool avx512 = cpu_supports(Isa::avx512);
#endif
    const int Hp = H + 2 * pad, Wp = W + 2 * pad;
    const std::size_t HW = static_cast<std::size_t>(H) * W, rowp = static_cast<std::size_t>(Wp) * C,
                      edge = static_cast<std::size_t>(pad) * C;
    split_rows(static_cast<std::size_t>(N) * Hp, threads, 64, [&](std::size_t r0, std::size_t r1) {
        for (std::size_t r = r0; r < r1; ++r) {
            const std::size_t n = r / Hp;
            const int y = static_cast<int>(r % Hp) - pad;
            float* o = out + r * rowp;
            if (y < 0 || y >= H) {
                std::memset(o, 0, rowp * sizeof(float));
                continue;
            }
            std::memset(o, 0, edge * sizeof(float));
            std::memset(o + edge + static_cast<std::size_t>(W) * C, 0, edge * sizeof(float));
            const float* src = x + n * C * HW;
            const std::size_t p0 = static_cast<std::size_t>(y) * W;
#if defined(__x86_64__)
            if (C == 3 && avx512) {
                nchw3_to_nhwc_avx512(src, HW, p0, p0 + W, o + edge);
                continue;
            }
#endif
            for (int q = 0; q < W; ++q)
                for (int c = 0; c < C; ++c) o[edge + static_cast<std::size_t>(q) * C + c] = src[c * HW + p0 + q];
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

// Output rows [r0, r1) of (N, Ho, Wo); x holds rows [y0, y0 + Hx) of each (H, W) image (the whole
// image: y0 = 0, Hx = H; the fused conv + pool: a band of one image).
FK_CLONES void pool_rows_generic(const float* x, int H, int W, int C, bool is_max, int kh, int kw, int sh, int sw,
                                 int pt, int pl, int Ho, int Wo, float* out, std::size_t r0, std::size_t r1, int y0,
                                 int Hx) {
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
                const float* __restrict s = x + ((n * Hx + (y - y0)) * W + xx) * C;
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

#if defined(__x86_64__)
// The same operations as pool_rows_generic, up to 64 channels at a time with the window's running
// max (or sum) in registers: the compiled loop above kept it in memory and ran at ~0.5
// elements per cycle (the Bi-Real stem's 3x3/2 max pool took 0.25 ms per image on Zen 4).
template <int NV>
FK_AVX512 inline void pool_px_avx512(const float* x, std::size_t n, int oy, int ox, int H, int W, int C, bool is_max,
                                     int kh, int kw, int sh, int sw, int pt, int pl, int y0, int Hx, int c0,
                                     float* o) {
    __mmask16 m[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
        const int left = C - c0 - 16 * v;
        m[v] = left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1);
    }
    const int ky0 = std::max(0, pt - oy * sh), ky1 = std::min(kh, H + pt - oy * sh);
    const int kx0 = std::max(0, pl - ox * sw), kx1 = std::min(kw, W + pl - ox * sw);
    __m512 acc[NV];
    if (ky0 >= ky1 || kx0 >= kx1) {  // a window entirely in the padding (validated away; defined anyway)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) _mm512_mask_storeu_ps(o + c0 + 16 * v, m[v], _mm512_set1_ps(is_max ? -INFINITY : 0.0f));
        return;
    }
    bool first = true;
    for (int ky = ky0; ky < ky1; ++ky) {
        const float* row = x + ((n * Hx + (oy * sh - pt + ky - y0)) * W) * C + c0;
        for (int kx = kx0; kx < kx1; ++kx) {
            const float* s = row + static_cast<std::size_t>(ox * sw - pl + kx) * C;
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) {
                const __m512 a = _mm512_maskz_loadu_ps(m[v], s + 16 * v);
                if (first)
                    acc[v] = a;
                else if (is_max)  // s > o ? s : o (ordered compare: a NaN never replaces)
                    acc[v] = _mm512_mask_mov_ps(acc[v], _mm512_cmp_ps_mask(a, acc[v], _CMP_GT_OQ), a);
                else
                    acc[v] = _mm512_add_ps(acc[v], a);
            }
            first = false;
        }
    }
    const __m512 div = _mm512_set1_ps(static_cast<float>(kh * kw));
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
        _mm512_mask_storeu_ps(o + c0 + 16 * v, m[v], is_max ? acc[v] : _mm512_div_ps(acc[v], div));
}

// A 3x3 max window wholly inside the input, 64 channels (the ResNet stem's pool): the same
// compare-selects in the same tap order as pool_px_avx512, unrolled (the general loop, with its
// window bounds per pixel, took ~4 % of the fused stem's time).
FK_AVX512 inline void max3x3_px64_avx512(const float* s, std::size_t row, float* o) {
    __m512 acc[4];
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) acc[v] = _mm512_loadu_ps(s + 16 * v);
#pragma GCC unroll 9
    for (int t = 1; t < 9; ++t) {
        const float* q = s + (t / 3) * row + (t % 3) * 64;
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) {
            const __m512 a = _mm512_loadu_ps(q + 16 * v);
            acc[v] = _mm512_mask_mov_ps(acc[v], _mm512_cmp_ps_mask(a, acc[v], _CMP_GT_OQ), a);
        }
    }
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) _mm512_storeu_ps(o + 16 * v, acc[v]);
}

FK_AVX512 void pool_rows_avx512(const float* x, int H, int W, int C, bool is_max, int kh, int kw, int sh, int sw,
                                int pt, int pl, int Ho, int Wo, float* out, std::size_t r0, std::size_t r1, int y0,
                                int Hx) {
    const bool max3x3_64 = is_max && kh == 3 && kw == 3 && C == 64;
    for (std::size_t r = r0; r < r1; ++r) {
        const std::size_t n = r / (static_cast<std::size_t>(Ho) * Wo);
        const int oy = static_cast<int>(r / Wo % Ho), ox = static_cast<int>(r % Wo);
        float* o = out + r * C;
        const int iy = oy * sh - pt, ix = ox * sw - pl;
        if (max3x3_64 && iy >= 0 && iy + 3 <= H && ix >= 0 && ix + 3 <= W) {
            max3x3_px64_avx512(x + ((n * Hx + (iy - y0)) * W + ix) * 64, static_cast<std::size_t>(W) * 64, o);
            continue;
        }
        for (int c0 = 0; c0 < C; c0 += 64) {  // up to 4 registers of 16 channels per pass
            const int nv = std::min(4, (C - c0 + 15) / 16);
            const auto args = std::make_tuple(x, n, oy, ox, H, W, C, is_max, kh, kw, sh, sw, pt, pl, y0, Hx, c0, o);
            switch (nv) {
                case 4: std::apply(pool_px_avx512<4>, args); break;
                case 3: std::apply(pool_px_avx512<3>, args); break;
                case 2: std::apply(pool_px_avx512<2>, args); break;
                default: std::apply(pool_px_avx512<1>, args); break;
            }
        }
    }
}
#endif

// Output rows [r0, r1) of (N, Ho, Wo); x holds rows [y0, y0 + Hx) of each (H, W) image (the whole
// image: y0 = 0, Hx = H; the fused conv + pool: a band of one image). Same bytes on every path.
void pool_rows(const float* x, int H, int W, int C, bool is_max, int kh, int kw, int sh, int sw, int pt, int pl,
               int Ho, int Wo, float* out, std::size_t r0, std::size_t r1, int y0, int Hx) {
#if defined(__x86_64__)
    static const bool avx512 = cpu_supports(Isa::avx512);
    if (avx512) return pool_rows_avx512(x, H, W, C, is_max, kh, kw, sh, sw, pt, pl, Ho, Wo, out, r0, r1, y0, Hx);
#endif
    pool_rows_generic(x, H, W, C, is_max, kh, kw, sh, sw, pt, pl, Ho, Wo, out, r0, r1, y0, Hx);
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
        pool_rows(x, H, W, C, is_max, kh, kw, sh, sw, pt, pl, Ho, Wo, out, r0, r1, 0, H);
    });
}

namespace {

struct ConvPoolJob {
    ConvJob conv;
    bool is_max;
    int kh, kw, sh, sw, pt, pl, Ho, Wo;  // the pool, on the conv's (conv.Ho, conv.Wo) output
    float* out;
    std::size_t rows;                    // N * Ho pool output rows, split over parts
    PackOut pack;                        // bits null: no fused PackBits
};

// A part: a run of pool output rows. Per image, bands of kBand pool rows: the conv rows they
// need are computed into a per-thread buffer (rows the previous band also needed are kept),
// then pooled; a part recomputes at most the rows its first band shares with the part before.
void conv_pool_work(void* ctx, int part, int nparts) {
    constexpr int kBand = 4;
    const ConvPoolJob& J = *static_cast<const ConvPoolJob*>(ctx);
    const ConvJob& c = J.conv;
    const std::size_t r0 = J.rows * part / nparts, r1 = J.rows * (part + 1) / nparts;
    const std::size_t row_floats = static_cast<std::size_t>(c.Wo) * c.Co;
    thread_local std::vector<float> band;
    const std::size_t cap = static_cast<std::size_t>((kBand - 1) * J.sh + J.kh) * row_floats;
    if (band.size() < cap) band.resize(cap);
    int have_n = -1, have_lo = 0, have_hi = 0;  // conv rows [have_lo, have_hi) of image have_n in band
    for (std::size_t r = r0; r < r1;) {
        const int n = static_cast<int>(r / J.Ho);
        const int py = static_cast<int>(r % J.Ho);
        const int pe = static_cast<int>(std::min<std::size_t>({r1 - r + py, static_cast<std::size_t>(J.Ho),
                                                                static_cast<std::size_t>(py + kBand)}));
        const int lo = std::max(0, py * J.sh - J.pt);
        const int hi = std::max(lo, std::min(c.Ho, (pe - 1) * J.sh - J.pt + J.kh));
        int from = lo;
        if (have_n == n && have_lo <= lo && lo < have_hi && hi >= have_hi) {
            std::memmove(band.data(), band.data() + (lo - have_lo) * row_floats,
                         static_cast<std::size_t>(have_hi - lo) * row_floats * sizeof(float));
            from = have_hi;
        }
#if defined(__aarch64__)
        if (from < hi && c.isa == Isa::neon) {  // conv rows [from, hi) as a conv of the input rows under them
            conv_float_neon(c.xp + (static_cast<std::size_t>(n) * c.Hp + static_cast<std::size_t>(from) * c.s) * c.Wp * c.C,
                            1, (hi - from - 1) * c.s + c.kh, c.Wp, c.C, c.kh, c.kw, c.s, c.w, c.Co, c.b, c.relu,
                            band.data() + static_cast<std::size_t>(from - lo) * row_floats, 1);
            from = hi;
        }
#endif
        if (from < hi) {
            ConvJob j = c;
            const std::size_t img = static_cast<std::size_t>(n) * c.Ho;
            j.m_start = (img + from) * c.Wo;
            j.m_end = (img + hi) * c.Wo;
            j.m_base = (img + lo) * c.Wo;
            j.out = band.data();
            setup_tiles(j);
            run_items(j, 0, j.tiles * j.nco);
        }
        have_n = n, have_lo = lo, have_hi = hi;
        pool_rows(band.data(), c.Ho, c.Wo, c.Co, J.is_max, J.kh, J.kw, J.sh, J.sw, J.pt, J.pl, J.Ho, J.Wo,
                  J.out + static_cast<std::size_t>(n) * J.Ho * J.Wo * c.Co, static_cast<std::size_t>(py) * J.Wo,
                  static_cast<std::size_t>(pe) * J.Wo, lo, hi - lo);
        if (J.pack.bits) {  // the pooled rows' signs, read back from L1/L2
            const std::size_t img = static_cast<std::size_t>(n) * J.Ho * J.Wo;
            const std::size_t p0 = img + static_cast<std::size_t>(py) * J.Wo, p1 = img + static_cast<std::size_t>(pe) * J.Wo;
            if (J.pack.t)
                pack_nhwc_threshold_rows(J.out, c.Co, p0, p1, c.Co, J.pack.t, J.pack.flip, J.pack.bits, c.isa);
            else
                pack_nhwc_rows(J.out, p0, p1, c.Co, J.pack.bits, c.isa);
        }
        r += pe - py;
    }
}

}  // namespace

void conv_pool_float(const float* xp, int N, int Hp, int Wp, int C, int kh, int kw, int stride, const float* w,
                     int Co, const float* b, bool relu, bool is_max, int pkh, int pkw, int psh, int psw, int ppt,
                     int ppl, int PHo, int PWo, float* out, int threads, Isa isa, const float* wb,
                     const PackOut* pack) {
    ConvPoolJob J{{xp, N, Hp, Wp, C, kh, kw, stride, (Hp - kh) / stride + 1, (Wp - kw) / stride + 1, Co, w, b, relu,
                   nullptr, 0, 0, isa},
                  is_max, pkh, pkw, psh, psw, ppt, ppl, PHo, PWo, out, static_cast<std::size_t>(N) * PHo, {}};
    J.conv.wb = wb;
    if (pack) J.pack = *pack;
    if (J.rows == 0) return;
    // Few parts (each recomputes up to kh - sh shared conv rows): whole images when there are
    // enough of them, else two runs of rows per thread.
    const int parts = threads <= 1 ? 1 : N >= 2 * threads ? N : std::min<int>(static_cast<int>(J.rows), 2 * threads);
    parallel_run(threads, parts, conv_pool_work, &J);
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
