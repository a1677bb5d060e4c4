// Mean join of equally shaped float activations (a fractal join: Sum then Div), optionally
// packing the sign of the result for the binary layers that read it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "xnor.h"

namespace xnor {

// xs: k pointers to (pixels, C) float; y = ((x0 + x1) + x2 ...) / divisor, one float32 rounding
// per operation in that order (the graph's Sum, then Div: a true division, not a reciprocal
// multiply); out may alias xs[0] (then out_stride must be C). Pixel p's output starts at
// out + p * out_stride (0: C; more: a channel slice of wider rows, a dense block's buffer).
// sign_bits (pixels, ceil(C/64)), optional: bit 1 iff y < 0.
void mean_join(const float* const* xs, int k, std::size_t pixels, int C, float divisor, float* out,
               uint64_t* sign_bits, int threads, Isa isa, std::size_t out_stride = 0);

}  // namespace xnor
