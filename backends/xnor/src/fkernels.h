// Float kernels of the standalone engine (engine.cpp): direct convolution on a zero-padded
// channels-last input, pooling, per-channel affine maps, and small layout ops. Every ISA path
// computes each output with the same operations in the same order (no contraction; the fma
// chains are explicit), so results are identical for any ISA and thread count.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "xnor.h"

namespace xnor {

// Direct convolution, stride s, on a padded NHWC input xp (N, Hp, Wp, C); w is
// [kh][kw*C][Co] (HWIO), b (Co); out (N, Ho, Wo, Co) with Ho = (Hp - kh)/s + 1 (same for W).
//   acc = fma(x, w, acc) over ky, then t = kx*C + c ascending, from 0; y = acc + b; relu opt.
// The kw*C inputs under one kernel row are contiguous, so no im2col is needed: a register tile
// of pixels x output channels walks them (AVX-512: 12 x 32 in 24 zmm, read in place, items
// channel-block major so the block's weights stay in L1; RGB stems: up to 14 x 32 within one
// output row; AVX2: 3 x 32 on gathered windows).
// wb, optional: the same weights from block_weights (read by the AVX-512 path, whose 32-channel
// blocks are then contiguous; the same results).
void conv_float(const float* xp, int N, int Hp, int Wp, int C, int kh, int kw, int stride, const float* w,
                int Co, const float* b, bool relu, float* out, int threads, Isa isa, const float* wb = nullptr);

// (K, Co) weights -> (ceil(Co/32), K, 32), channels past Co zero.
std::vector<float> block_weights(const float* w, std::size_t K, int Co);

// The packed signs of a float output (a fused PackBits): (pixels, ceil(C/64)) words, bit 1 where
// x < t[c] (x > t[c] where flip[c]), or where x < 0 when t is null: pack_nhwc_threshold_rows /
// pack_nhwc_rows.
struct PackOut {
    uint64_t* bits = nullptr;
    const float* t = nullptr;
    const uint8_t* flip = nullptr;
};

// conv_float followed by pool_nhwc on its (N, Ho, Wo, Co) output (pool window pkh x pkw,
// strides psh/psw, top/left pads ppt/ppl, output PHo x PWo), without materialising the conv
// output: bands of conv rows are computed into a per-thread buffer and pooled while in cache;
// pack (optional) also packs the pooled rows while in cache. The same bytes as the two (three) calls.
void conv_pool_float(const float* xp, int N, int Hp, int Wp, int C, int kh, int kw, int stride, const float* w,
                     int Co, const float* b, bool relu, bool is_max, int pkh, int pkw, int psh, int psw, int ppt,
                     int ppl, int PHo, int PWo, float* out, int threads, Isa isa, const float* wb = nullptr,
                     const PackOut* pack = nullptr);

// Zero-padded NHWC copy: x (N, H, W, C) -> out (N, H+2p, W+2p, C).
void pad_nhwc(const float* x, int N, int H, int W, int C, int pad, float* out, int threads);

// NCHW -> NHWC (one image plane set at a time) and back.
void nchw_to_nhwc(const float* x, int N, int C, int HW, float* out, int threads);
// NCHW (N, C, H, W) -> zero-padded NHWC (N, H+2p, W+2p, C): nchw_to_nhwc then pad_nhwc, in one pass.
void nchw_to_nhwc_padded(const float* x, int N, int C, int H, int W, int pad, float* out, int threads);
void nhwc_to_nchw(const float* x, int N, int HW, int C, float* out, int threads);

// Max / average pool on NHWC with explicit pads (max ignores padded taps; average counts them,
// ONNX count_include_pad=1): taps summed in row-major window order, then divided by kh*kw.
void pool_nhwc(const float* x, int N, int H, int W, int C, bool is_max, int kh, int kw, int sh, int sw,
               int pt, int pl, int Ho, int Wo, float* out, int threads);

// y = x * scale[c] + shift[c] (two roundings), then ReLU when relu; scale null: y = x (relu only).
void affine_nhwc(const float* x, std::size_t pixels, int C, const float* scale, const float* shift, bool relu,
                 float* out, int threads);

// Mean over the HW pixels of each image, summed in pixel order, then divided by HW.
void global_avg_pool(const float* x, int N, int HW, int C, float* out);

// Bits -> +-1 floats: (pixels, ceil(C/64)) words -> (pixels, C).
void unpack_bits(const uint64_t* x, std::size_t pixels, int C, float* out);

}  // namespace xnor
