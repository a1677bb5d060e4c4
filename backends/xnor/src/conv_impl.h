// The per-thread work loop of the binary convolution, shared by every ISA. Each kernel file
// instantiates work_loop with its micro-kernel inside a function carrying its target attribute,
// so the micro-kernel inlines and the store code is vectorised for that ISA too.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "conv.h"

namespace xnor {

struct ConvJob {
    const uint64_t* x;         // +1-padded input (N, Hp, Wp, cw)
    std::size_t img_words, row_stride;
    int cw, kh, L, c_out, c_in, K;
    int Ho, Wo, stride, nct, np_tile;
    int ng = 1;                // 32-channel tiles per work item (a kernel's channel tile / 32)
    int ngrp = 0;              // work items per pixel tile: ceil(nct / ng)
    std::size_t items, pixels;
    const uint64_t* wt;
    std::size_t wt_tile;       // words per output-channel tile
    const int* row_cls;
    const int* col_cls;
    int ncc;
    const int32_t* corr;       // [rc][cc][c_pad], null when no zero-padding correction
    std::size_t corr_stride;   // c_pad = output channels rounded up to whole tiles
    Output out;
};

using WorkFn = void (*)(void* job, int tid, int nthreads);
WorkFn work_fn(Isa isa);
void work_portable(void* job, int tid, int nthreads);
void work_avx2(void* job, int tid, int nthreads);
void work_avx512(void* job, int tid, int nthreads);
void work_neon(void* job, int tid, int nthreads);  // kernel_neon.cpp, AArch64 builds only

// Applies the border correction and the output transform to one (pixel, 32-channel) result.
// Every per-channel array (corr rows, mul, bias, thr, flip) is padded to whole 32-channel tiles,
// so the loops have a fixed trip count and vectorise; only the real channels are stored.
// Bit q of the result is (dot[q] < thr[q]) != flip[q] (flip is 0 or 1).
inline uint32_t threshold_bits_generic(const int32_t* dot, const int32_t* thr, const int32_t* flip) {
    uint32_t bits = 0;
    for (int q = 0; q < kCoTile; ++q) bits |= static_cast<uint32_t>((dot[q] < thr[q]) ^ flip[q]) << q;
    return bits;
}

template <auto threshold_bits>
inline void store_one(const ConvJob& j, std::size_t m, int ct, const int32_t* corr,
                      const int32_t* __restrict cnt) {
    const int c0 = ct * kCoTile;
    const int cn = std::min(kCoTile, j.c_out - c0);
    alignas(64) int32_t dot[kCoTile];
    if (corr) {
        const int32_t* __restrict cr = corr + c0;
        for (int q = 0; q < kCoTile; ++q) dot[q] = j.K - 2 * cnt[q] - cr[q];
    } else {
        for (int q = 0; q < kCoTile; ++q) dot[q] = j.K - 2 * cnt[q];
    }
    switch (j.out.kind) {
        case OutKind::int32: {
            int32_t* __restrict o = static_cast<int32_t*>(j.out.data) + m * j.out.stride + c0;
            if (cn == kCoTile) {
                for (int q = 0; q < kCoTile; ++q) o[q] = dot[q];
            } else {
                for (int q = 0; q < cn; ++q) o[q] = dot[q];
            }
            break;
        }
        case OutKind::affine: {
            alignas(64) float y[kCoTile];
            const float* __restrict mul = j.out.mul + c0;
            const float* __restrict bias = j.out.bias + c0;
            // One rounding (fmaf), the XnorConv contract; float(dot) is exact (|dot| < 2^24).
            for (int q = 0; q < kCoTile; ++q) y[q] = std::fma(static_cast<float>(dot[q]), mul[q], bias[q]);
            if (j.out.residual) {  // the fused Add: a second, separate rounding, as the graph has it
                const float* __restrict r = j.out.residual + m * j.c_out + c0;
                for (int q = 0; q < cn; ++q) y[q] += r[q];
            }
            float* __restrict o = static_cast<float*>(j.out.data) + m * j.out.stride + c0;
            if (cn == kCoTile) {
                for (int q = 0; q < kCoTile; ++q) o[q] = y[q];
            } else {
                for (int q = 0; q < cn; ++q) o[q] = y[q];
            }
            if (j.out.sign_bits) {  // the fused PackBits (bit 1 iff y < 0; NaN and -0.0 give 0)
                uint32_t bits = 0;
                for (int q = 0; q < cn; ++q) bits |= static_cast<uint32_t>(y[q] < 0.0f) << q;
                const std::size_t half_words = 2 * static_cast<std::size_t>((j.c_out + 63) / 64);
                reinterpret_cast<uint32_t*>(j.out.sign_bits)[m * half_words + ct] = bits;
            }
            break;
        }
        case OutKind::bits: {
            // Padded channels have thr = INT32_MIN and flip = 0, so their bits are 0. A 32-channel
            // tile is exactly one little-endian half of an output word, so threads never share a
            // store target.
            const int32_t* __restrict thr = j.out.thr + c0;
            const int32_t* __restrict flip = j.out.flip + c0;
            const uint32_t bits = threshold_bits(dot, thr, flip);
            const std::size_t half_words = 2 * static_cast<std::size_t>((j.c_out + 63) / 64);
            static_cast<uint32_t*>(j.out.data)[m * half_words + ct] = bits;
            break;
        }
    }
}

// Items are (pixel tile, channel group) pairs, channel group fastest (a group is ng 32-channel
// tiles: 1 except for kernels with a wider channel tile); part `tid` of `nthreads`
// is a contiguous share, so each output element has one writer and its value does not depend
// on the split.
// Stores a whole (np pixels x 32 channels) tile; corr[p] is pixel p's correction row or null.
template <auto threshold_bits>
inline void store_tile_generic(const ConvJob& j, std::size_t m0, int np, int ct,
                               const int32_t* const* corr, const int32_t* cnt) {
    for (int p = 0; p < np; ++p) store_one<threshold_bits>(j, m0 + p, ct, corr[p], cnt + p * kCoTile);
}

// A micro-kernel (counts into cnt) followed by a separate store: the portable and AVX2 paths.
template <auto tile, auto store_tile = store_tile_generic<threshold_bits_generic>>
inline void tile_then_store(const ConvJob& j, const uint64_t* const* xs, int np, std::size_t m0, int ct,
                            const int32_t* const* corr, int32_t* cnt) {
    tile(xs, np, j.wt + ct * j.wt_tile, j.kh, j.L, j.row_stride, cnt);
    store_tile(j, m0, np, ct, corr, cnt);
}

// tile_store(j, xs, np, m0, g, corr, scratch) computes and stores one item: np pixels x channel
// group g (with ng = 1, g is the 32-channel tile); scratch holds kMaxPixTile * kCoTile counts
// for paths that go through memory.
template <auto tile_store>
inline void work_loop(void* ctx, int tid, int nthreads) {
    const ConvJob& j = *static_cast<const ConvJob*>(ctx);
    const std::size_t b = j.items * tid / nthreads, e = j.items * (tid + 1) / nthreads;
    const std::size_t hw = static_cast<std::size_t>(j.Ho) * j.Wo;
    alignas(64) int32_t cnt[kMaxPixTile * kCoTile];
    const uint64_t* xs[kMaxPixTile];
    const int32_t* corr[kMaxPixTile];
    if (b >= e) return;
    std::size_t it = b;
    std::size_t pt = b / j.ngrp;
    int ct0 = static_cast<int>(b % j.ngrp);
    // (n, oy, ox) of the tile's first pixel; the pixel loop below leaves it at the next tile's.
    std::size_t n = pt * j.np_tile / hw;
    int oy = static_cast<int>(pt * j.np_tile % hw / j.Wo), ox = static_cast<int>(pt * j.np_tile % hw % j.Wo);
    while (it < e) {
        const int ct1 = static_cast<int>(std::min<std::size_t>(j.ngrp, ct0 + (e - it)));
        const std::size_t m0 = pt * j.np_tile;
        const int np = static_cast<int>(std::min<std::size_t>(j.np_tile, j.pixels - m0));
        for (int p = 0; p < np; ++p) {
            xs[p] = j.x + n * j.img_words + static_cast<std::size_t>(oy) * j.stride * j.row_stride +
                    static_cast<std::size_t>(ox) * j.stride * j.cw;
            corr[p] = nullptr;
            if (j.corr) {
                const int rc = j.row_cls[oy], cc = j.col_cls[ox];
                if (rc != 0 || cc != 0) corr[p] = j.corr + (static_cast<std::size_t>(rc) * j.ncc + cc) * j.corr_stride;
            }
            if (++ox == j.Wo) {
                ox = 0;
                if (++oy == j.Ho) {
                    oy = 0;
                    ++n;
                }
            }
        }
        for (int ct = ct0; ct < ct1; ++ct) tile_store(j, xs, np, m0, ct, corr, cnt);
        it += ct1 - ct0;
        ++pt;
        ct0 = 0;
    }
}

}  // namespace xnor
