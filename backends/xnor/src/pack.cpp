// Float -> bit packing. Bit 1 means x < 0, so +0.0, -0.0 and NaN all pack as +1 (sign(0) = +1).
#include <cstring>
#include <vector>

#include "xnor.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace xnor {

#if defined(__aarch64__)
// kernel_neon.cpp
void pack_nhwc_neon(const float* x, std::size_t stride, std::size_t p0, std::size_t p1, int C, const float* t,
                    const uint8_t* flip, uint64_t* out);
void pack_nchw_neon(const float* x, int C, std::size_t HW, std::size_t h0, std::size_t h1, uint64_t* out);
#endif
namespace {

// NHWC rows: bit 1 where x < t[c], or x > t[c] where flip[c] (a BatchNorm folded into
// PackBits); without t, where x < 0. NaN compares false both ways (bit 0, +1), as in the
// reference executor. Pixel p's C channels start at x + p * stride.
template <bool Thr>
void pack_nhwc_portable_impl(const float* x, std::size_t stride, std::size_t p0, std::size_t p1, int C,
                             const float* t, const uint8_t* flip, uint64_t* out) {
    const int Cw = (C + 63) / 64;
    for (std::size_t p = p0; p < p1; ++p) {
        const float* xp = x + p * stride;
        uint64_t* op = out + p * Cw;
        for (int w = 0; w < Cw; ++w) {
            const int c0 = w * 64;
            const int n = C - c0 < 64 ? C - c0 : 64;
            uint64_t word = 0;
            for (int j = 0; j < n; ++j) {
                const float v = xp[c0 + j];
                bool neg;
                if constexpr (Thr) neg = flip[c0 + j] ? v > t[c0 + j] : v < t[c0 + j];
                else neg = v < 0.0f;
                word |= static_cast<uint64_t>(neg) << j;
            }
            op[w] = word;
        }
    }
}

void pack_nhwc_portable(const float* x, std::size_t stride, std::size_t p0, std::size_t p1, int C,
                        const float* t, const uint8_t* flip, uint64_t* out) {
    if (t) pack_nhwc_portable_impl<true>(x, stride, p0, p1, C, t, flip, out);
    else pack_nhwc_portable_impl<false>(x, stride, p0, p1, C, nullptr, nullptr, out);
}

#if defined(__x86_64__)
// Thr = false: the plain sign (one compare per 16 channels, no threshold loads).
template <bool Thr>
__attribute__((target("avx512f"))) void pack_nhwc_avx512_impl(const float* x, std::size_t stride, std::size_t p0,
                                                               std::size_t p1, int C, const float* t,
                                                               const uint8_t* flip, uint64_t* out) {
    const int Cw = (C + 63) / 64;
    // the flips as one 16-bit mask per 16 channels, built once per call
    std::vector<__mmask16> fmask(Thr ? static_cast<std::size_t>(Cw) * 4 : 0, 0);
    for (int c = 0; Thr && c < C; ++c)
        if (flip[c]) fmask[c / 16] = static_cast<__mmask16>(fmask[c / 16] | (1u << (c % 16)));
    const __m512 zero = _mm512_setzero_ps();
    for (std::size_t p = p0; p < p1; ++p) {
        const float* xp = x + p * stride;
        uint64_t* op = out + p * Cw;
        for (int w = 0; w < Cw; ++w) {
            uint64_t word = 0;
            for (int q = 0; q < 4; ++q) {
                const int c0 = w * 64 + q * 16;
                const int n = C - c0;
                if (n <= 0) break;
                // Masked loads past the end of the channels; those lanes give bit 0.
                const __mmask16 m = n >= 16 ? static_cast<__mmask16>(0xffff)
                                            : static_cast<__mmask16>((1u << n) - 1);
                const __m512 v = _mm512_maskz_loadu_ps(m, xp + c0);
                __mmask16 bits;
                if constexpr (Thr) {
                    const __m512 th = _mm512_maskz_loadu_ps(m, t + c0);
                    const __mmask16 f = fmask[c0 / 16];
                    bits = _mm512_mask_cmp_ps_mask(m & ~f, v, th, _CMP_LT_OQ) |
                           _mm512_mask_cmp_ps_mask(m & f, v, th, _CMP_GT_OQ);
                } else {
                    bits = _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ);
                }
                word |= static_cast<uint64_t>(static_cast<uint16_t>(bits)) << (q * 16);
            }
            op[w] = word;
        }
    }
}

void pack_nhwc_avx512(const float* x, std::size_t stride, std::size_t p0, std::size_t p1, int C,
                      const float* t, const uint8_t* flip, uint64_t* out) {
    if (t) pack_nhwc_avx512_impl<true>(x, stride, p0, p1, C, t, flip, out);
    else pack_nhwc_avx512_impl<false>(x, stride, p0, p1, C, nullptr, nullptr, out);
}

// NCHW: for 16 pixels at a time, one compare per channel gives a 16-bit mask (one bit per
// pixel); masked ORs of the channel's bit into 16 pixel words transpose it into place.
__attribute__((target("avx512f"))) void pack_nchw_avx512(const float* x, int C, std::size_t HW,
                                                          std::size_t h0, std::size_t h1,
                                                          uint64_t* out) {
    const int Cw = (C + 63) / 64;
    const __m512 zero = _mm512_setzero_ps();
    alignas(64) uint64_t tmp[16];
    for (std::size_t s = h0; s < h1; s += 16) {
        const std::size_t n = h1 - s < 16 ? h1 - s : 16;
        const __mmask16 tail = static_cast<__mmask16>(n == 16 ? 0xffff : (1u << n) - 1);
        for (int w = 0; w < Cw; ++w) {
            __m512i lo = _mm512_setzero_si512(), hi = _mm512_setzero_si512();
            const int cend = C < (w + 1) * 64 ? C : (w + 1) * 64;
            for (int c = w * 64; c < cend; ++c) {
                const __m512 v = _mm512_maskz_loadu_ps(tail, x + static_cast<std::size_t>(c) * HW + s);
                const __mmask16 m = _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ);
                const __m512i bit = _mm512_set1_epi64(static_cast<long long>(uint64_t{1} << (c - w * 64)));
                lo = _mm512_mask_or_epi64(lo, static_cast<__mmask8>(m), lo, bit);
                hi = _mm512_mask_or_epi64(hi, static_cast<__mmask8>(m >> 8), hi, bit);
            }
            if (Cw == 1 && n == 16) {
                _mm512_storeu_si512(out + s, lo);
                _mm512_storeu_si512(out + s + 8, hi);
            } else {
                _mm512_store_si512(tmp, lo);
                _mm512_store_si512(tmp + 8, hi);
                for (std::size_t i = 0; i < n; ++i) out[(s + i) * Cw + w] = tmp[i];
            }
        }
    }
}
#endif

}  // namespace

void pack_nhwc_threshold_rows(const float* x, std::size_t stride, std::size_t p0, std::size_t p1, int C,
                              const float* t, const uint8_t* flip, uint64_t* out, Isa isa) {
#if defined(__x86_64__)
    if (isa == Isa::avx512) return pack_nhwc_avx512(x, stride, p0, p1, C, t, flip, out);
#endif
#if defined(__aarch64__)
    if (isa == Isa::neon) return pack_nhwc_neon(x, stride, p0, p1, C, t, flip, out);
#endif
    (void)isa;
    pack_nhwc_portable(x, stride, p0, p1, C, t, flip, out);
}

void pack_nhwc_rows(const float* x, std::size_t p0, std::size_t p1, int C, uint64_t* out, Isa isa) {
    pack_nhwc_threshold_rows(x, static_cast<std::size_t>(C), p0, p1, C, nullptr, nullptr, out, isa);
}

// Walks each channel plane contiguously and ORs its bit into a row of pixel words, so the read
// of the float plane is sequential (NCHW is channel-major).
void pack_nchw_image(const float* x, int C, std::size_t HW, std::size_t h0, std::size_t h1,
                     uint64_t* out, Isa isa) {
#if defined(__x86_64__)
    if (isa == Isa::avx512) return pack_nchw_avx512(x, C, HW, h0, h1, out);
#endif
#if defined(__aarch64__)
    if (isa == Isa::neon) return pack_nchw_neon(x, C, HW, h0, h1, out);
#endif
    (void)isa;
    const int Cw = (C + 63) / 64;
    constexpr std::size_t kChunk = 256;
    uint64_t buf[kChunk];
    for (std::size_t s = h0; s < h1; s += kChunk) {
        const std::size_t n = h1 - s < kChunk ? h1 - s : kChunk;
        for (int w = 0; w < Cw; ++w) {
            std::memset(buf, 0, sizeof(buf));
            const int cend = C < (w + 1) * 64 ? C : (w + 1) * 64;
            for (int c = w * 64; c < cend; ++c) {
                const float* plane = x + static_cast<std::size_t>(c) * HW + s;
                const int j = c - w * 64;
                for (std::size_t i = 0; i < n; ++i) buf[i] |= static_cast<uint64_t>(plane[i] < 0.0f) << j;
            }
            for (std::size_t i = 0; i < n; ++i) out[(s + i) * Cw + w] = buf[i];
        }
    }
}

}  // namespace xnor
