// AVX2 micro-kernel: AVX2 has no vector popcount, so bytes are counted with a nibble lookup
// (vpshufb) and summed into 64-bit lanes with vpsadbw before the byte counters can overflow.
#include <immintrin.h>

#include "conv_impl.h"

#define XNOR_AVX2 __attribute__((target("avx2,fma")))

namespace xnor {
namespace {

XNOR_AVX2 inline __m256i popcnt_bytes(__m256i v, __m256i lut, __m256i low) {
    const __m256i lo = _mm256_and_si256(v, low);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
    return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

// NP pixels x 8 output channels (two ymm of 4 lanes) per pass; 4 passes cover the 32-channel tile.
template <int NP>
XNOR_AVX2 void tile(const uint64_t* const* xs, const uint64_t* wt, int kh, int L,
                    std::size_t rs, int32_t* cnt) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    const __m256i zero = _mm256_setzero_si256();
    for (int sb = 0; sb < kCoTile / 8; ++sb) {
        __m256i acc[NP][2];
        for (int p = 0; p < NP; ++p) acc[p][0] = acc[p][1] = zero;
        for (int ky = 0; ky < kh; ++ky) {
            const uint64_t* w = wt + static_cast<std::size_t>(ky) * L * kCoTile + sb * 8;
            int k = 0;
            while (k < L) {
                // A byte counter grows by at most 8 per word: flush every 31 words.
                const int kend = k + 31 < L ? k + 31 : L;
                __m256i b8[NP][2];
                for (int p = 0; p < NP; ++p) b8[p][0] = b8[p][1] = zero;
                for (; k < kend; ++k) {
                    const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + k * kCoTile));
                    const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + k * kCoTile + 4));
                    for (int p = 0; p < NP; ++p) {
                        const __m256i a = _mm256_set1_epi64x(static_cast<long long>(xs[p][ky * rs + k]));
                        b8[p][0] = _mm256_add_epi8(b8[p][0], popcnt_bytes(_mm256_xor_si256(a, w0), lut, low));
                        b8[p][1] = _mm256_add_epi8(b8[p][1], popcnt_bytes(_mm256_xor_si256(a, w1), lut, low));
                    }
                }
                for (int p = 0; p < NP; ++p) {
                    acc[p][0] = _mm256_add_epi64(acc[p][0], _mm256_sad_epu8(b8[p][0], zero));
                    acc[p][1] = _mm256_add_epi64(acc[p][1], _mm256_sad_epu8(b8[p][1], zero));
                }
            }
        }
        for (int p = 0; p < NP; ++p) {
            alignas(32) int64_t lanes[8];
            _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc[p][0]);
            _mm256_store_si256(reinterpret_cast<__m256i*>(lanes + 4), acc[p][1]);
            for (int j = 0; j < 8; ++j) cnt[p * kCoTile + sb * 8 + j] = static_cast<int32_t>(lanes[j]);
        }
    }
}

}  // namespace

XNOR_AVX2 inline void mk_avx2(const uint64_t* const* xs, int np, const uint64_t* wt, int kh, int L,
                       std::size_t rs, int32_t* cnt) {
    switch (np) {
        case 1: tile<1>(xs, wt, kh, L, rs, cnt); break;
        case 2: tile<2>(xs, wt, kh, L, rs, cnt); break;
        case 3: tile<3>(xs, wt, kh, L, rs, cnt); break;
        default:
            for (int p = 0; p < np; p += 3) {
                const int m = np - p < 3 ? np - p : 3;
                if (m == 3) tile<3>(xs + p, wt, kh, L, rs, cnt + p * kCoTile);
                else if (m == 2) tile<2>(xs + p, wt, kh, L, rs, cnt + p * kCoTile);
                else tile<1>(xs + p, wt, kh, L, rs, cnt + p * kCoTile);
            }
    }
}

XNOR_AVX2 void work_avx2(void* job, int tid, int nthreads) {
    work_loop<tile_then_store<mk_avx2>>(job, tid, nthreads);
}

}  // namespace xnor
