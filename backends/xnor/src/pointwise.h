// Float pointwise convolution on channels-last activations, optionally after a 2x2/2 average
// pool: Bi-Real's downsampling shortcut (AvgPool -> 1x1 Conv -> BN, the BN folded into w and b).
#pragma once

#include <cstddef>
#include <cstdint>

#include "xnor.h"

namespace xnor {

// x: (N, H, W, C) float; w: (C, Co) row-major; b: (Co); out: (N, Ho, Wo, Co) with Ho = H/2,
// Wo = W/2 (floor) when pool, else H, W. Every ISA computes each output exactly the same way:
//   p[c] = (((x00 + x01) + x10) + x11) * 0.25      (pool; x otherwise)
//   acc  = fma(p[C-1], w[C-1][o], ... fma(p[0], w[0][o], 0))
//   y[o] = acc + b[o]
void pointwise_conv(const float* x, int N, int H, int W, int C, bool pool, const float* w, int Co,
                    const float* b, float* out, int threads, Isa isa);

}  // namespace xnor
