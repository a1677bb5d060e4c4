// AVX-512 VPOPCNTDQ micro-kernel: NP pixels x 32 output channels held in NP*4 zmm accumulators
// (24 for NP = 6). Per input word: four weight-vector loads, NP broadcasts, and NP*4
// xor/popcount/add triples (see docs in ../shared xnor-performance-notes).
#include <immintrin.h>

#include "conv_impl.h"

#define XNOR_AVX512 __attribute__((target("avx512f,avx512bw,avx512vpopcntdq")))

namespace xnor {
namespace {

template <int NP>
XNOR_AVX512 inline void tile(const uint64_t* const* xs, const uint64_t* wt, int kh, int L,
                             std::size_t rs, int32_t* cnt) {
    __m512i acc[NP][4];
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p)
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) acc[p][j] = _mm512_setzero_si512();
    for (int ky = 0; ky < kh; ++ky) {
        const uint64_t* w = wt + static_cast<std::size_t>(ky) * L * kCoTile;
        const uint64_t* x[NP];
#pragma GCC unroll 8
        for (int p = 0; p < NP; ++p) x[p] = xs[p] + ky * rs;
        for (int k = 0; k < L; ++k) {
            const __m512i w0 = _mm512_loadu_si512(w + k * kCoTile);
            const __m512i w1 = _mm512_loadu_si512(w + k * kCoTile + 8);
            const __m512i w2 = _mm512_loadu_si512(w + k * kCoTile + 16);
            const __m512i w3 = _mm512_loadu_si512(w + k * kCoTile + 24);
#pragma GCC unroll 8
            for (int p = 0; p < NP; ++p) {
                const __m512i a = _mm512_set1_epi64(static_cast<long long>(x[p][k]));
                acc[p][0] = _mm512_add_epi64(acc[p][0], _mm512_popcnt_epi64(_mm512_xor_si512(a, w0)));
                acc[p][1] = _mm512_add_epi64(acc[p][1], _mm512_popcnt_epi64(_mm512_xor_si512(a, w1)));
                acc[p][2] = _mm512_add_epi64(acc[p][2], _mm512_popcnt_epi64(_mm512_xor_si512(a, w2)));
                acc[p][3] = _mm512_add_epi64(acc[p][3], _mm512_popcnt_epi64(_mm512_xor_si512(a, w3)));
            }
        }
    }
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p)
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j)
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(cnt + p * kCoTile + j * 8),
                                _mm512_cvtepi64_epi32(acc[p][j]));
}

}  // namespace

XNOR_AVX512 inline void mk_avx512(const uint64_t* const* xs, int np, const uint64_t* wt, int kh, int L,
                           std::size_t rs, int32_t* cnt) {
    switch (np) {
        case 6: tile<6>(xs, wt, kh, L, rs, cnt); break;
        case 5: tile<5>(xs, wt, kh, L, rs, cnt); break;
        case 4: tile<4>(xs, wt, kh, L, rs, cnt); break;
        case 3: tile<3>(xs, wt, kh, L, rs, cnt); break;
        case 2: tile<2>(xs, wt, kh, L, rs, cnt); break;
        default: tile<1>(xs, wt, kh, L, rs, cnt); break;
    }
}

XNOR_AVX512 inline uint32_t threshold_bits_avx512(const int32_t* dot, const int32_t* thr,
                                                  const int32_t* flip) {
    const __m512i one = _mm512_set1_epi32(1);
    uint32_t r = 0;
    for (int h = 0; h < 2; ++h) {
        const __mmask16 lt = _mm512_cmplt_epi32_mask(_mm512_loadu_si512(dot + 16 * h),
                                                     _mm512_loadu_si512(thr + 16 * h));
        const __mmask16 fl = _mm512_test_epi32_mask(_mm512_loadu_si512(flip + 16 * h), one);
        r |= static_cast<uint32_t>(static_cast<uint16_t>(lt ^ fl)) << (16 * h);
    }
    return r;
}

XNOR_AVX512 void work_avx512(void* job, int tid, int nthreads) {
    work_loop<mk_avx512, threshold_bits_avx512>(job, tid, nthreads);
}

}  // namespace xnor
