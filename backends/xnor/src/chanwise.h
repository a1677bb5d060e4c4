// Element-wise float kernels of the standalone engine for issue 14's primitives: PReLU and
// ReActNet's RPReLU (per-channel shifts around it), the sigmoid, and the gating product.
// Channels-last values; each output is computed with exactly the torch backend's operations in
// its order (no contraction: the build passes -ffp-contract=off), so results do not depend on
// the thread count.
#pragma once

#include <cstddef>

namespace xnor {

// out[p][c] = t > 0 ? t : slope[c] * t (+ shift_out[c]), t = x[p][c] (+ shift_in[c]), for
// `pixels` rows of C channels; shift_in / shift_out may be null (plain PReLU).
void prelu_nhwc(const float* x, std::size_t pixels, int C, const float* shift_in, const float* slope,
                const float* shift_out, float* out, int threads);

// out[i] = float(1 / (1 + exp(-double(x[i])))): float64, rounded once.
void sigmoid_f64(const float* x, std::size_t n, float* out, int threads);

// The product of a (N, HW, C) value a and b: b of the same shape, or (broadcast) one C-vector
// per image (a Cx1x1 value) used for each of the image's HW pixels.
void mul_nhwc(const float* a, const float* b, int N, std::size_t HW, int C, bool broadcast, float* out,
              int threads);

}  // namespace xnor
