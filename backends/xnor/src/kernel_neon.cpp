// AArch64 Advanced SIMD (NEON) kernels: the XNOR/popcount micro-kernel, the float -> bit
// packing (plain sign, per-channel threshold, NCHW) and the engine's float convolution. Compiled only for AArch64 (where NEON is
// part of the base ISA, so no target attribute or run-time check is needed); on x86 this file
// is empty. The instruction counts behind the tile shape are in docs/arm64.md.
//
// Micro-kernel: NP = 2 pixels x 16 output channels per pass (two passes per pixel pair cover
// the 32-channel tile). A q register holds the weight words of 2 channels; per input word (k)
// each pixel's activation word is broadcast once, and each of the 8 weight registers costs,
// per pixel,
//     eor  (a ^ w)   cnt  (popcount per byte)   add  (into a byte counter)
// i.e. 3 instructions per 128 binary MACs. 16 byte counters, 2 broadcasts and one weight
// register at a time stay in the 32 vector registers (no spills; the loop is kept in source
// order, no-schedule-insns, which stops GCC's pre-allocation scheduler from hoisting all the
// eors and spilling). A byte counter gains at most 8 per word, so after 31 words the counters
// are widened (uaddlp to 16 bits, uadalp into 32-bit totals kept in memory) and cleared: exact
// for any K the driver accepts (counts < 2^31). The counts go through the same store (border
// correction, float / bit output) as the portable path, so every output is bit-identical to it.
#if defined(__aarch64__)
#include <arm_neon.h>

#include <cstring>
#include <vector>

#include "conv_impl.h"
#include "xnor.h"

namespace xnor {
namespace {

constexpr int kFlush = 31;  // words per byte-counter flush: 31 * 8 = 248 <= 255

// Widens the byte counters into the 32-bit totals and clears them.
template <int NP>
inline void flush(uint8x16_t (&b8)[NP][8], uint32_t (&tot)[NP][8][4]) {
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p)
#pragma GCC unroll 8
        for (int q = 0; q < 8; ++q) {
            const uint32x4_t t = vpadalq_u16(vld1q_u32(tot[p][q]), vpaddlq_u8(b8[p][q]));
            vst1q_u32(tot[p][q], t);
            b8[p][q] = vdupq_n_u8(0);
        }
}

// NP pixels x 16 channels (channels 16*h .. 16*h + 15 of the tile) -> cnt[p * 32 + c].
template <int NP>
__attribute__((noinline, optimize("no-schedule-insns"))) void tile16(const uint64_t* const* xs, const uint64_t* wt, int kh, int L, std::size_t rs, int h,
                   int32_t* cnt) {
    alignas(16) uint32_t tot[NP][8][4] = {};
    uint8x16_t b8[NP][8];
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p)
#pragma GCC unroll 8
        for (int q = 0; q < 8; ++q) b8[p][q] = vdupq_n_u8(0);
    int used = 0;  // words since the last flush
    for (int ky = 0; ky < kh; ++ky) {
        const uint64_t* w = wt + static_cast<std::size_t>(ky) * L * kCoTile + 16 * h;
        const uint64_t* x[NP];
#pragma GCC unroll 8
        for (int p = 0; p < NP; ++p) x[p] = xs[p] + ky * rs;
        int k = 0;
        while (k < L) {
            const int kend = k + (L - k < kFlush - used ? L - k : kFlush - used);
            used += kend - k;
            for (; k < kend; ++k) {
                const uint64_t* wk = w + static_cast<std::size_t>(k) * kCoTile;
                uint8x16_t a[NP];
#pragma GCC unroll 8
                for (int p = 0; p < NP; ++p) a[p] = vreinterpretq_u8_u64(vld1q_dup_u64(x[p] + k));
#pragma GCC unroll 8
                for (int q = 0; q < 8; ++q) {
                    const uint8x16_t wq = vreinterpretq_u8_u64(vld1q_u64(wk + 2 * q));
#pragma GCC unroll 8
                    for (int p = 0; p < NP; ++p) b8[p][q] = vaddq_u8(b8[p][q], vcntq_u8(veorq_u8(a[p], wq)));
                }
            }
            if (used == kFlush) {
                flush<NP>(b8, tot);
                used = 0;
            }
        }
    }
    flush<NP>(b8, tot);
    // tot[p][q] = (channel 2q: two halves, channel 2q+1: two halves); pairwise adds finish them.
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p)
#pragma GCC unroll 4
        for (int q = 0; q < 8; q += 2) {
            const uint32x4_t c = vpaddq_u32(vld1q_u32(tot[p][q]), vld1q_u32(tot[p][q + 1]));
            vst1q_s32(cnt + p * kCoTile + 16 * h + 2 * q, vreinterpretq_s32_u32(c));
        }
}

inline void mk_neon(const uint64_t* const* xs, int np, const uint64_t* wt, int kh, int L, std::size_t rs,
                    int32_t* cnt) {
    for (int h = 0; h < kCoTile / 16; ++h) {
        int p = 0;
        for (; p + 2 <= np; p += 2) tile16<2>(xs + p, wt, kh, L, rs, h, cnt + p * kCoTile);
        if (p < np) tile16<1>(xs + p, wt, kh, L, rs, h, cnt + p * kCoTile);
    }
}

// ---- packing ----

// 16 compare masks (four uint32x4, all-ones or zero) -> 16 mask bytes, channel order kept.
inline uint8x16_t narrow16(uint32x4_t m0, uint32x4_t m1, uint32x4_t m2, uint32x4_t m3) {
    const uint16x8_t h0 = vuzp1q_u16(vreinterpretq_u16_u32(m0), vreinterpretq_u16_u32(m1));
    const uint16x8_t h1 = vuzp1q_u16(vreinterpretq_u16_u32(m2), vreinterpretq_u16_u32(m3));
    return vuzp1q_u8(vreinterpretq_u8_u16(h0), vreinterpretq_u8_u16(h1));
}

// 64 mask bytes (g[i] lane j = channel 16 i + j) -> the packed word (bit c = channel c): each
// byte keeps its bit weight, three levels of pairwise adds sum 8 channels into one byte.
inline uint64_t word64(uint8x16_t g0, uint8x16_t g1, uint8x16_t g2, uint8x16_t g3) {
    static const uint8_t kW[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t wts = vld1q_u8(kW);
    const uint8x16_t s0 = vpaddq_u8(vandq_u8(g0, wts), vandq_u8(g1, wts));
    const uint8x16_t s1 = vpaddq_u8(vandq_u8(g2, wts), vandq_u8(g3, wts));
    const uint8x16_t s2 = vpaddq_u8(s0, s1);
    return vgetq_lane_u64(vreinterpretq_u64_u8(vpaddq_u8(s2, s2)), 0);
}

// 64 channels starting at v (t, fm: thresholds and flip masks, padded to whole words).
template <bool Thr>
inline uint64_t pack64(const float* v, const float* t, const uint32_t* fm) {
    uint8x16_t g[4];
    const float32x4_t zero = vdupq_n_f32(0.0f);
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
        uint32x4_t m[4];
#pragma GCC unroll 4
        for (int r = 0; r < 4; ++r) {
            const int c = 16 * i + 4 * r;
            const float32x4_t x = vld1q_f32(v + c);
            if constexpr (Thr) {
                // bit 1 where x < t, or x > t where flip (NaN compares false: bit 0)
                const float32x4_t th = vld1q_f32(t + c);
                m[r] = vbslq_u32(vld1q_u32(fm + c), vcgtq_f32(x, th), vcltq_f32(x, th));
            } else {
                m[r] = vcltq_f32(x, zero);
            }
        }
        g[i] = narrow16(m[0], m[1], m[2], m[3]);
    }
    return word64(g[0], g[1], g[2], g[3]);
}

template <bool Thr>
void pack_nhwc_neon_impl(const float* x, std::size_t stride, std::size_t p0, std::size_t p1, int C,
                         const float* t, const uint8_t* flip, uint64_t* out) {
    const int Cw = (C + 63) / 64;
    const int full = C / 64;  // words with 64 real channels
    // thresholds and flip masks padded to whole words (pads: t = 0, flip = 0; x pads are 0, and
    // 0 < 0 is false, so padded channels give bit 0)
    std::vector<float> tp(Thr ? static_cast<std::size_t>(Cw) * 64 : 0, 0.0f);
    std::vector<uint32_t> fm(Thr ? static_cast<std::size_t>(Cw) * 64 : 0, 0u);
    if constexpr (Thr) {
        std::memcpy(tp.data(), t, static_cast<std::size_t>(C) * sizeof(float));
        for (int c = 0; c < C; ++c) fm[c] = flip[c] ? ~0u : 0u;
    }
    alignas(16) float tail[64];
    for (std::size_t p = p0; p < p1; ++p) {
        const float* xp = x + p * stride;
        uint64_t* op = out + p * Cw;
        for (int w = 0; w < full; ++w) op[w] = pack64<Thr>(xp + 64 * w, tp.data() + 64 * w, fm.data() + 64 * w);
        if (full < Cw) {
            const int n = C - 64 * full;
            std::memset(tail, 0, sizeof(tail));
            std::memcpy(tail, xp + 64 * full, static_cast<std::size_t>(n) * sizeof(float));
            op[full] = pack64<Thr>(tail, tp.data() + 64 * full, fm.data() + 64 * full);
        }
    }
}

}  // namespace

void work_neon(void* job, int tid, int nthreads) {
    work_loop<tile_then_store<mk_neon>>(job, tid, nthreads);
}

void pack_nhwc_neon(const float* x, std::size_t stride, std::size_t p0, std::size_t p1, int C, const float* t,
                    const uint8_t* flip, uint64_t* out) {
    if (t) pack_nhwc_neon_impl<true>(x, stride, p0, p1, C, t, flip, out);
    else pack_nhwc_neon_impl<false>(x, stride, p0, p1, C, nullptr, nullptr, out);
}

// NCHW: 16 pixels at a time; the channels of a word are visited from the highest down and each
// one's compare mask is shifted in at bit 0 (sli #1: acc = acc << 1 | mask & 1), so the lowest
// channel ends at bit 0. Per channel and 4 pixels: load, compare, 2 widenings, 2 inserts.
void pack_nchw_neon(const float* x, int C, std::size_t HW, std::size_t h0, std::size_t h1, uint64_t* out) {
    const int Cw = (C + 63) / 64;
    const float32x4_t zero = vdupq_n_f32(0.0f);
    std::size_t s = h0;
    for (; s + 16 <= h1; s += 16) {
        for (int w = 0; w < Cw; ++w) {
            uint64x2_t acc[8];
#pragma GCC unroll 8
            for (int i = 0; i < 8; ++i) acc[i] = vdupq_n_u64(0);
            const int cend = C < (w + 1) * 64 ? C : (w + 1) * 64;
            for (int c = cend - 1; c >= w * 64; --c) {
                const float* plane = x + static_cast<std::size_t>(c) * HW + s;
#pragma GCC unroll 4
                for (int i = 0; i < 4; ++i) {
                    const int32x4_t m = vreinterpretq_s32_u32(vcltq_f32(vld1q_f32(plane + 4 * i), zero));
                    const uint64x2_t lo = vreinterpretq_u64_s64(vmovl_s32(vget_low_s32(m)));
                    const uint64x2_t hi = vreinterpretq_u64_s64(vmovl_high_s32(m));
                    acc[2 * i] = vsliq_n_u64(lo, acc[2 * i], 1);
                    acc[2 * i + 1] = vsliq_n_u64(hi, acc[2 * i + 1], 1);
                }
            }
            if (Cw == 1) {
#pragma GCC unroll 8
                for (int i = 0; i < 8; ++i) vst1q_u64(out + s + 2 * i, acc[i]);
            } else {
                alignas(16) uint64_t tmp[16];
#pragma GCC unroll 8
                for (int i = 0; i < 8; ++i) vst1q_u64(tmp + 2 * i, acc[i]);
                for (int i = 0; i < 16; ++i) out[(s + i) * Cw + w] = tmp[i];
            }
        }
    }
    // the last < 16 pixels, scalar
    for (; s < h1; ++s)
        for (int w = 0; w < Cw; ++w) {
            uint64_t word = 0;
            const int cend = C < (w + 1) * 64 ? C : (w + 1) * 64;
            for (int c = w * 64; c < cend; ++c)
                word |= static_cast<uint64_t>(x[static_cast<std::size_t>(c) * HW + s] < 0.0f) << (c - w * 64);
            out[s * Cw + w] = word;
        }
}

// ---- the float convolution of the engine (fkernels.h: conv_float) ----
//
// Same contract as every ISA: per output, acc = fma(x, w, acc) over ky, then t = kx*C + c
// ascending, from +0; y = acc + b; ReLU (y < 0 ? 0 : y). Register tile: 4 pixels x 16 channels
// (16 accumulators); the inputs are read in place, 4 consecutive t at a time (one q load per
// pixel), each lane feeding 4 fmla-by-element against that t's weight row, so the fma order per
// output is the scalar path's. Items are (16-channel block, 4-pixel tile), block-major: a
// block's weights (K x 16 floats) stay in L1 across its pixel tiles.

namespace {

constexpr int kFPix = 4;

struct FConvJob {
    const float* xp;
    int Hp, Wp, C, kh, kw, s, Ho, Wo, Co, Cop;
    const float* w;  // [kh * kw * C][Cop]
    const float* b;
    bool relu;
    float* out;
    std::size_t m_start, m_end, m_base;  // pixels [m_start, m_end); pixel m at out + (m - m_base) * Co
    std::size_t tiles, items;
};

template <int NP>
__attribute__((noinline, optimize("no-schedule-insns"))) void ftile(const FConvJob& j, const float* const* base,
                                                                     std::size_t m0, int cb) {
    const int L = j.kw * j.C;
    const std::size_t rowstep = static_cast<std::size_t>(j.Wp) * j.C;
    float32x4_t acc[NP][4];
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p)
#pragma GCC unroll 4
        for (int q = 0; q < 4; ++q) acc[p][q] = vdupq_n_f32(0.0f);
    const float* wb = j.w + 16 * cb;
    for (int ky = 0; ky < j.kh; ++ky) {
        const float* x[NP];
#pragma GCC unroll 8
        for (int p = 0; p < NP; ++p) x[p] = base[p] + ky * rowstep;
        const float* wr = wb + static_cast<std::size_t>(ky) * L * j.Cop;
        int t = 0;
        for (; t + 4 <= L; t += 4) {
            float32x4_t a[NP];
#pragma GCC unroll 8
            for (int p = 0; p < NP; ++p) a[p] = vld1q_f32(x[p] + t);
#pragma GCC unroll 4
            for (int l = 0; l < 4; ++l) {
                const float* wt = wr + static_cast<std::size_t>(t + l) * j.Cop;
                float32x4_t wq[4];
#pragma GCC unroll 4
                for (int q = 0; q < 4; ++q) wq[q] = vld1q_f32(wt + 4 * q);
#pragma GCC unroll 8
                for (int p = 0; p < NP; ++p) {
                    // lane l of a[p]; a switch keeps the lane index a constant
                    float32x4_t* ap = acc[p];
                    switch (l) {
                        case 0:
                            for (int q = 0; q < 4; ++q) ap[q] = vfmaq_laneq_f32(ap[q], wq[q], a[p], 0);
                            break;
                        case 1:
                            for (int q = 0; q < 4; ++q) ap[q] = vfmaq_laneq_f32(ap[q], wq[q], a[p], 1);
                            break;
                        case 2:
                            for (int q = 0; q < 4; ++q) ap[q] = vfmaq_laneq_f32(ap[q], wq[q], a[p], 2);
                            break;
                        default:
                            for (int q = 0; q < 4; ++q) ap[q] = vfmaq_laneq_f32(ap[q], wq[q], a[p], 3);
                            break;
                    }
                }
            }
        }
        for (; t < L; ++t) {
            const float* wt = wr + static_cast<std::size_t>(t) * j.Cop;
            float32x4_t wq[4];
#pragma GCC unroll 4
            for (int q = 0; q < 4; ++q) wq[q] = vld1q_f32(wt + 4 * q);
#pragma GCC unroll 8
            for (int p = 0; p < NP; ++p) {
                const float32x4_t a = vld1q_dup_f32(x[p] + t);
#pragma GCC unroll 4
                for (int q = 0; q < 4; ++q) acc[p][q] = vfmaq_f32(acc[p][q], wq[q], a);
            }
        }
    }
    const int c0 = 16 * cb, cn = j.Co - c0 < 16 ? j.Co - c0 : 16;
    const float32x4_t zero = vdupq_n_f32(0.0f);
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) {
        alignas(16) float y[16];
#pragma GCC unroll 4
        for (int q = 0; q < 4; ++q) {
            float32x4_t v = vaddq_f32(acc[p][q], vld1q_f32(j.b + c0 + 4 * q));
            if (j.relu) v = vbslq_f32(vcltq_f32(v, zero), zero, v);
            vst1q_f32(y + 4 * q, v);
        }
        float* o = j.out + (m0 + p - j.m_base) * j.Co + c0;
        if (cn == 16) std::memcpy(o, y, sizeof(y));
        else std::memcpy(o, y, static_cast<std::size_t>(cn) * sizeof(float));
    }
}

void fconv_work(void* ctx, int part, int nparts) {
    const FConvJob& j = *static_cast<const FConvJob*>(ctx);
    const std::size_t i0 = j.items * part / nparts, i1 = j.items * (part + 1) / nparts;
    const std::size_t hw = static_cast<std::size_t>(j.Ho) * j.Wo;
    const float* base[kFPix];
    for (std::size_t i = i0; i < i1; ++i) {
        const int cb = static_cast<int>(i / j.tiles);
        const std::size_t m0 = j.m_start + (i % j.tiles) * kFPix;
        const int np = static_cast<int>(j.m_end - m0 < kFPix ? j.m_end - m0 : kFPix);
        for (int p = 0; p < np; ++p) {
            const std::size_t m = m0 + p, n = m / hw, r = m % hw;
            const std::size_t oy = r / j.Wo, ox = r % j.Wo;
            base[p] = j.xp + ((n * j.Hp + oy * j.s) * j.Wp + ox * j.s) * j.C;
        }
        switch (np) {
            case 4: ftile<4>(j, base, m0, cb); break;
            case 3: ftile<3>(j, base, m0, cb); break;
            case 2: ftile<2>(j, base, m0, cb); break;
            default: ftile<1>(j, base, m0, cb); break;
        }
    }
}

}  // namespace

namespace {

// Pixels [m_start, m_end) of the conv into out + (m - m_base) * Co, on `threads` threads.
void conv_float_neon_impl(const float* xp, int N, int Hp, int Wp, int C, int kh, int kw, int stride,
                          const float* w, int Co, const float* b, bool relu, float* out, int threads,
                          std::size_t m_start, std::size_t m_end, std::size_t m_base) {
    (void)N;
    FConvJob j{};
    j.xp = xp;
    j.Hp = Hp, j.Wp = Wp, j.C = C, j.kh = kh, j.kw = kw, j.s = stride;
    j.Ho = (Hp - kh) / stride + 1, j.Wo = (Wp - kw) / stride + 1;
    j.Co = Co;
    j.Cop = (Co + 15) / 16 * 16;
    j.relu = relu;
    j.out = out;
    j.m_start = m_start, j.m_end = m_end, j.m_base = m_base;
    if (m_end <= m_start) return;
    // weights and bias padded to whole 16-channel blocks (zeros) unless they already are
    std::vector<float> wpad, bpad;
    const std::size_t K = static_cast<std::size_t>(kh) * kw * C;
    if (j.Cop != Co) {
        wpad.assign(K * j.Cop, 0.0f);
        for (std::size_t t = 0; t < K; ++t)
            std::memcpy(wpad.data() + t * j.Cop, w + t * Co, static_cast<std::size_t>(Co) * sizeof(float));
        bpad.assign(j.Cop, 0.0f);
        std::memcpy(bpad.data(), b, static_cast<std::size_t>(Co) * sizeof(float));
        w = wpad.data();
        b = bpad.data();
    }
    j.w = w;
    j.b = b;
    j.tiles = (m_end - m_start + kFPix - 1) / kFPix;
    j.items = j.tiles * (j.Cop / 16);
    if (threads <= 1) fconv_work(&j, 0, 1);
    else parallel_run(threads, parts_for(j.items, threads), fconv_work, &j);
}

}  // namespace

void conv_float_neon(const float* xp, int N, int Hp, int Wp, int C, int kh, int kw, int stride, const float* w,
                     int Co, const float* b, bool relu, float* out, int threads) {
    const std::size_t pixels =
        static_cast<std::size_t>(N) * ((Hp - kh) / stride + 1) * ((Wp - kw) / stride + 1);
    conv_float_neon_impl(xp, N, Hp, Wp, C, kh, kw, stride, w, Co, b, relu, out, threads, 0, pixels, 0);
}

}  // namespace xnor
#endif  // __aarch64__
