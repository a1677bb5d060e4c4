// Float kernels of the standalone engine for issue 14's float ops, kept apart from the tuned
// dense float conv (fkernels.cpp): the grouped / depthwise / dilated float convolution (QuickNet's
// depthwise stem conv, the fixed blur pool), the element-wise max of n values (maxjoin) and the
// global max pool. Channels-last values. Each output is computed with the same operations in the
// same order whatever the thread count (parts split pixels, never a sum), and without any
// fused multiply-add (the build passes -ffp-contract=off), so every ISA gives the same bytes.
#pragma once

#include <cstddef>

namespace xnor {

// Grouped convolution of x (N, H, W, C) NHWC with zero padding `pad` on every side, stride s,
// dilation d, `groups` groups (C % groups == 0, Co % groups == 0); w is [kh][kw][C/groups][Co]
// (output channel o reads input channels g*C/groups + i, g = o / (Co/groups)), b (Co).
//   acc = 0; acc = acc + x * w (two roundings) over ky, kx, i ascending, taps in the padding
//   skipped (they add +0); y = acc + b; then max(y, 0) when relu.
// out (N, Ho, Wo, Co), Ho = (H + 2 pad - d (kh - 1) - 1) / s + 1 (the same for W).
void conv_grouped_float(const float* x, int N, int H, int W, int C, int kh, int kw, int stride, int pad,
                        int dilation, int groups, const float* w, int Co, const float* b, bool relu, int Ho,
                        int Wo, float* out, int threads);

// out = max(...max(max(x[0], x[1]), x[2])..., x[n-1]) element-wise over `elems` floats.
void max_n(const float* const* x, int n, std::size_t elems, float* out, int threads);

// out (N, C): the maximum over the HW pixels of each image of x (N, HW, C), in pixel order.
void global_max_pool(const float* x, int N, std::size_t HW, int C, float* out, int threads);

}  // namespace xnor
