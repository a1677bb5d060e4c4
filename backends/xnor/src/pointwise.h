// Float pointwise convolution on channels-last activations with an optional prologue: Bi-Real's
// downsampling shortcut (AvgPool -> 1x1 Conv -> BN, the BN folded into w and b) and DenseNet's
// transition (BN -> MaxPool -> ReLU -> 1x1 Conv).
#pragma once

#include <cstddef>
#include <cstdint>

#include "xnor.h"

namespace xnor {

enum class PwPool : int { none = 0, avg = 1, max = 2 };

// What happens to the input before the product, in this order: a per-channel affine map
// (a BatchNorm: x * scale[c] + shift[c], two roundings), a 2x2 stride-2 pool (average: added
// row by row, then * 0.25; max: left to right), ReLU.
struct PwPrologue {
    const float* scale = nullptr;  // with shift; null for none
    const float* shift = nullptr;
    PwPool pool = PwPool::none;
    bool relu = false;
};

// x: (N, H, W, C) float; w: (C, Co) row-major; b: (Co); out: (N, Ho, Wo, Co) with Ho = H/2,
// Wo = W/2 (floor) when pooling, else H, W. Every ISA computes each output the same way:
//   p[c] = prologue(x)[c]
//   acc  = fma(p[C-1], w[C-1][o], ... fma(p[0], w[0][o], 0))
//   y[o] = acc + b[o]
// Output pixel p starts at out + p * out_stride (0: Co; more: a channel slice of wider rows).
void pointwise_conv(const float* x, int N, int H, int W, int C, const PwPrologue& pro, const float* w,
                    int Co, const float* b, float* out, int threads, Isa isa, std::size_t out_stride = 0);

}  // namespace xnor
