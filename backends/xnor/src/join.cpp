// Mean join (see join.h). Element-wise IEEE adds and a division are exactly rounded, so the
// vector and scalar forms give the same bytes; the sign bits follow pack.cpp (x < 0 -> 1).
#include "join.h"

#include <algorithm>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace xnor {
namespace {

struct JoinJob {
    const float* const* xs;
    int k;
    std::size_t pixels;
    int C;
    float divisor;
    float* out;
    uint64_t* bits;
    Isa isa;
    std::size_t ostride;  // floats from one output pixel to the next
};

void rows_scalar(const JoinJob& j, std::size_t p0, std::size_t p1) {
    const int Cw = (j.C + 63) / 64;
    for (std::size_t p = p0; p < p1; ++p) {
        const std::size_t base = p * j.C;
        for (int w = 0; w < Cw; ++w) {
            uint64_t word = 0;
            const int c1 = std::min(j.C, 64 * (w + 1));
            for (int c = 64 * w; c < c1; ++c) {
                float s = j.xs[0][base + c];
                for (int i = 1; i < j.k; ++i) s += j.xs[i][base + c];
                const float y = s / j.divisor;
                j.out[p * j.ostride + c] = y;
                word |= static_cast<uint64_t>(y < 0.0f) << (c - 64 * w);
            }
            if (j.bits) j.bits[p * Cw + w] = word;
        }
    }
}

#if defined(__x86_64__)
__attribute__((target("avx512f"))) void rows_avx512(const JoinJob& j, std::size_t p0, std::size_t p1) {
    const int Cw = (j.C + 63) / 64;
    const __m512 d = _mm512_set1_ps(j.divisor);
    const __m512 zero = _mm512_setzero_ps();
    for (std::size_t p = p0; p < p1; ++p) {
        const std::size_t base = p * j.C;
        for (int w = 0; w < Cw; ++w) {
            uint64_t word = 0;
            for (int q = 0; q < 4; ++q) {
                const int c0 = 64 * w + 16 * q;
                const int n = j.C - c0;
                if (n <= 0) break;
                const __mmask16 m = n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1);
                __m512 s = _mm512_maskz_loadu_ps(m, j.xs[0] + base + c0);
                for (int i = 1; i < j.k; ++i) s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(m, j.xs[i] + base + c0));
                const __m512 y = _mm512_div_ps(s, d);
                _mm512_mask_storeu_ps(j.out + p * j.ostride + c0, m, y);
                word |= static_cast<uint64_t>(_mm512_mask_cmp_ps_mask(m, y, zero, _CMP_LT_OQ)) << (16 * q);
            }
            if (j.bits) j.bits[p * Cw + w] = word;
        }
    }
}
#endif

void join_work(void* ctx, int part, int nparts) {
    const JoinJob& j = *static_cast<const JoinJob*>(ctx);
    const std::size_t p0 = j.pixels * part / nparts, p1 = j.pixels * (part + 1) / nparts;
#if defined(__x86_64__)
    if (j.isa == Isa::avx512) return rows_avx512(j, p0, p1);
#endif
    rows_scalar(j, p0, p1);
}

}  // namespace

void mean_join(const float* const* xs, int k, std::size_t pixels, int C, float divisor, float* out,
               uint64_t* sign_bits, int threads, Isa isa, std::size_t out_stride) {
    JoinJob j{xs, k, pixels, C, divisor, out, sign_bits, isa, out_stride ? out_stride : static_cast<std::size_t>(C)};
    if (pixels == 0) return;
    parallel_run(threads, parts_for(pixels / 16 + 1, threads), join_work, &j);
}

}  // namespace xnor
