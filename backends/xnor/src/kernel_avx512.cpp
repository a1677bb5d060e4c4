// AVX-512 VPOPCNTDQ micro-kernel: NP pixels x 32 (or 64) output channels held in NP*4 (NP*8) zmm
// accumulators (24 for 6 x 32 or 3 x 64; the tile is chosen per CPU: conv_tile in conv.cpp).
// Per input word: 4*NG weight-vector loads, NP broadcasts, and NP*4*NG xor/popcount/add triples (see docs in ../shared xnor-performance-notes). The epilogue works on
// the accumulators in registers: one permute per 16 channels narrows the 64-bit counts to
// int32 lanes (no store and reload of the counts), then the zero-padding correction and the
// requested output transform; channels past c_out are masked off.
#include <immintrin.h>

#include "conv_impl.h"

#define XNOR_AVX512 __attribute__((target("avx512f,avx512bw,avx512vpopcntdq")))

namespace xnor {
namespace {

template <int NP>
XNOR_AVX512 inline void store_tile(const ConvJob& j, std::size_t m0, int ct, const int32_t* const* corr,
                                   __m512i (&dlo)[NP], __m512i (&dhi)[NP]) {
    const int c0 = ct * kCoTile;
    const int cn = j.c_out - c0 < kCoTile ? j.c_out - c0 : kCoTile;
    const __mmask16 mlo = static_cast<__mmask16>(cn >= 16 ? 0xffff : (1u << cn) - 1);
    const __mmask16 mhi = static_cast<__mmask16>(cn >= 32 ? 0xffff : cn > 16 ? (1u << (cn - 16)) - 1 : 0);
    // dot = K - 2 * count - correction
    const __m512i K = _mm512_set1_epi32(j.K);
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) {
        dlo[p] = _mm512_sub_epi32(K, _mm512_add_epi32(dlo[p], dlo[p]));
        dhi[p] = _mm512_sub_epi32(K, _mm512_add_epi32(dhi[p], dhi[p]));
        if (corr[p]) {
            dlo[p] = _mm512_sub_epi32(dlo[p], _mm512_loadu_si512(corr[p] + c0));
            dhi[p] = _mm512_sub_epi32(dhi[p], _mm512_loadu_si512(corr[p] + c0 + 16));
        }
    }
    switch (j.out.kind) {
        case OutKind::int32: {
            int32_t* o = static_cast<int32_t*>(j.out.data) + m0 * j.out.stride + c0;
#pragma GCC unroll 8
            for (int p = 0; p < NP; ++p, o += j.out.stride) {
                _mm512_mask_storeu_epi32(o, mlo, dlo[p]);
                _mm512_mask_storeu_epi32(o + 16, mhi, dhi[p]);
            }
            break;
        }
        case OutKind::affine: {
            const __m512 mul_lo = _mm512_loadu_ps(j.out.mul + c0), mul_hi = _mm512_loadu_ps(j.out.mul + c0 + 16);
            const __m512 b_lo = _mm512_loadu_ps(j.out.bias + c0), b_hi = _mm512_loadu_ps(j.out.bias + c0 + 16);
            float* o = static_cast<float*>(j.out.data) + m0 * j.out.stride + c0;
            const float* r = j.out.residual ? j.out.residual + m0 * j.c_out + c0 : nullptr;
            const std::size_t half_words = 2 * static_cast<std::size_t>((j.c_out + 63) / 64);
            uint32_t* sb = j.out.sign_bits ? reinterpret_cast<uint32_t*>(j.out.sign_bits) + m0 * half_words + ct
                                           : nullptr;
            const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 8
            for (int p = 0; p < NP; ++p, o += j.out.stride) {
                // One rounding (fmaf), the XnorConv contract; float(dot) is exact (|dot| < 2^24).
                __m512 ylo = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dlo[p]), mul_lo, b_lo);
                __m512 yhi = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dhi[p]), mul_hi, b_hi);
                if (r) {  // the fused Add: a second, separate rounding, as the graph has it
                    ylo = _mm512_add_ps(ylo, _mm512_maskz_loadu_ps(mlo, r));
                    yhi = _mm512_add_ps(yhi, _mm512_maskz_loadu_ps(mhi, r + 16));
                    r += j.c_out;
                }
                _mm512_mask_storeu_ps(o, mlo, ylo);
                _mm512_mask_storeu_ps(o + 16, mhi, yhi);
                if (sb) {  // the fused PackBits: bit 1 iff y < 0 (ordered: NaN gives 0)
                    *sb = static_cast<uint32_t>(_mm512_mask_cmp_ps_mask(mlo, ylo, zero, _CMP_LT_OQ)) |
                          static_cast<uint32_t>(_mm512_mask_cmp_ps_mask(mhi, yhi, zero, _CMP_LT_OQ)) << 16;
                    sb += half_words;
                }
            }
            break;
        }
        case OutKind::bits: {
            const __m512i one = _mm512_set1_epi32(1);
            const __m512i t_lo = _mm512_loadu_si512(j.out.thr + c0), t_hi = _mm512_loadu_si512(j.out.thr + c0 + 16);
            const uint32_t flip =
                static_cast<uint32_t>(_mm512_test_epi32_mask(_mm512_loadu_si512(j.out.flip + c0), one)) |
                static_cast<uint32_t>(_mm512_test_epi32_mask(_mm512_loadu_si512(j.out.flip + c0 + 16), one)) << 16;
            const std::size_t half_words = 2 * static_cast<std::size_t>((j.c_out + 63) / 64);
            uint32_t* o = static_cast<uint32_t*>(j.out.data) + m0 * half_words + ct;
#pragma GCC unroll 8
            for (int p = 0; p < NP; ++p, o += half_words) {
                const uint32_t lt = static_cast<uint32_t>(_mm512_cmplt_epi32_mask(dlo[p], t_lo)) |
                                    static_cast<uint32_t>(_mm512_cmplt_epi32_mask(dhi[p], t_hi)) << 16;
                *o = lt ^ flip;  // padded channels: thr = INT32_MIN, flip = 0 -> bit 0
            }
            break;
        }
    }
}

// NP pixels x NG 32-channel tiles (NG = 1 or 2; the weights of tile ct + 1 follow those of ct
// at wt_tile words, so the two tiles are two sequential weight streams). NV < 4 * NG: only the
// first NV 8-channel vectors are computed (a last tile whose channels end early: RF-c3d4's 53,
// 106, 212 or 424 channels), the others stay zero and their channels are masked at the store.
template <int NP, int NG, int NV = 4 * NG>
XNOR_AVX512 inline void tile(const ConvJob& j, const uint64_t* const* xs, std::size_t m0, int ct,
                             const int32_t* const* corr) {
    static_assert(NV >= 1 && NV <= 4 * NG, "vectors per tile");
    const uint64_t* wt = j.wt + ct * j.wt_tile;
    const int L = j.L;
    const std::size_t rs = j.row_stride;
    __m512i acc[NP][4 * NG];
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p)
#pragma GCC unroll 8
        for (int q = 0; q < 4 * NG; ++q) acc[p][q] = _mm512_setzero_si512();
    for (int ky = 0; ky < j.kh; ++ky) {
        const uint64_t* w = wt + static_cast<std::size_t>(ky) * L * kCoTile;
        const uint64_t* x[NP];
#pragma GCC unroll 8
        for (int p = 0; p < NP; ++p) x[p] = xs[p] + ky * rs;
        for (int k = 0; k < L; ++k) {
            __m512i wv[NV];
#pragma GCC unroll 8
            for (int q = 0; q < NV; ++q) wv[q] = _mm512_loadu_si512(w + (q / 4) * j.wt_tile + k * kCoTile + (q % 4) * 8);
#pragma GCC unroll 8
            for (int p = 0; p < NP; ++p) {
                const __m512i a = _mm512_set1_epi64(static_cast<long long>(x[p][k]));
#pragma GCC unroll 8
                for (int q = 0; q < NV; ++q)
                    acc[p][q] = _mm512_add_epi64(acc[p][q], _mm512_popcnt_epi64(_mm512_xor_si512(a, wv[q])));
            }
        }
    }
    // Counts are < 2^31: the low dword of each 64-bit lane is the count. Even dwords of (a, b)
    // are channels 0..7 of a then 0..7 of b.
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
#pragma GCC unroll 2
    for (int g = 0; g < NG; ++g) {
        __m512i clo[NP], chi[NP];
#pragma GCC unroll 8
        for (int p = 0; p < NP; ++p) {
            clo[p] = _mm512_permutex2var_epi32(acc[p][4 * g], even, acc[p][4 * g + 1]);
            chi[p] = _mm512_permutex2var_epi32(acc[p][4 * g + 2], even, acc[p][4 * g + 3]);
        }
        store_tile<NP>(j, m0, ct + g, corr, clo, chi);
    }
}

}  // namespace

template <int NV>
XNOR_AVX512 inline void narrow_tile(const ConvJob& j, const uint64_t* const* xs, int np, std::size_t m0, int ct,
                                    const int32_t* const* corr) {
    switch (np) {
        case 6: tile<6, 1, NV>(j, xs, m0, ct, corr); break;
        case 5: tile<5, 1, NV>(j, xs, m0, ct, corr); break;
        case 4: tile<4, 1, NV>(j, xs, m0, ct, corr); break;
        case 3: tile<3, 1, NV>(j, xs, m0, ct, corr); break;
        case 2: tile<2, 1, NV>(j, xs, m0, ct, corr); break;
        default: tile<1, 1, NV>(j, xs, m0, ct, corr); break;
    }
}

// Item (np pixels, channel group g): ng = 2 pairs 32-channel tiles (2g, 2g + 1) in one
// register tile of up to 3 pixels x 64 channels; an odd last tile runs alone. A last 32-channel
// tile with at most 24 real channels computes only the 8-channel vectors that hold them.
XNOR_AVX512 inline void tile_store_avx512(const ConvJob& j, const uint64_t* const* xs, int np, std::size_t m0,
                                          int g, const int32_t* const* corr, int32_t*) {
    const int ct = g * j.ng;
    if (j.ng == 1 || ct + 1 >= j.nct) {
        const int rem = j.c_out - ct * kCoTile;
        if (rem <= 24) {
            if (rem <= 8) return narrow_tile<1>(j, xs, np, m0, ct, corr);
            if (rem <= 16) return narrow_tile<2>(j, xs, np, m0, ct, corr);
            return narrow_tile<3>(j, xs, np, m0, ct, corr);
        }
    }
    if (j.ng == 2 && ct + 1 < j.nct) {
        switch (np) {
            case 3: tile<3, 2>(j, xs, m0, ct, corr); break;
            case 2: tile<2, 2>(j, xs, m0, ct, corr); break;
            default: tile<1, 2>(j, xs, m0, ct, corr); break;
        }
        return;
    }
    switch (np) {
        case 6: tile<6, 1>(j, xs, m0, ct, corr); break;
        case 5: tile<5, 1>(j, xs, m0, ct, corr); break;
        case 4: tile<4, 1>(j, xs, m0, ct, corr); break;
        case 3: tile<3, 1>(j, xs, m0, ct, corr); break;
        case 2: tile<2, 1>(j, xs, m0, ct, corr); break;
        default: tile<1, 1>(j, xs, m0, ct, corr); break;
    }
}

XNOR_AVX512 void work_avx512(void* job, int tid, int nthreads) {
    work_loop<tile_store_avx512>(job, tid, nthreads);
}

}  // namespace xnor
