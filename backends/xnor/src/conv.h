// Binary convolution on packed activations and packed weights (layouts in xnor.h).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "xnor.h"

namespace xnor {

enum class OutKind : int { int32 = 0, affine = 1, bits = 2 };

// Where and how a convolution writes its result; output is NHWC (N, Ho, Wo, C_out) for int32
// and affine, (N, Ho, Wo, ceil(C_out/64)) uint64 for bits (must be zero-initialised).
struct Output {
    OutKind kind = OutKind::int32;
    void* data = nullptr;
    std::size_t stride = 0;           // int32 / affine: elements from one pixel's row to the next
                                      // (0: C_out; more: data points into wider rows, e.g. a
                                      // channel slice of a dense block's buffer)
    const float* mul = nullptr;     // affine: y = fmaf(float(dot), mul[c], bias[c]) (one rounding)
    const float* bias = nullptr;
    const float* residual = nullptr;  // affine, optional: y = fl(y + residual[m][c]) (same layout as data)
    uint64_t* sign_bits = nullptr;    // affine, optional: packed sign of the final y (bit 1 iff y < 0),
                                      // (N, Ho, Wo, ceil(C_out/64)), zero-initialised
    const int32_t* thr = nullptr;   // bits: bit = (dot < thr[c]) != flip[c]
    const int32_t* flip = nullptr;
};

// Weights re-laid out once for the micro-kernels, plus the per-position weight sums that the
// exact zero-padding correction needs.
class ConvPlan {
public:
    ConvPlan(const uint64_t* w, int c_out, int kh, int kw, int c_in, int stride, int pad,
             bool zero_padding);

    int out_size(int in, int k) const { return (in + 2 * pad_ - k) / stride_ + 1; }
    // x: (N, H, W, Cw) words. Throws std::invalid_argument when the input is too small.
    void run(const uint64_t* x, int N, int H, int W, const Output& out, int threads, Isa isa) const;

    int c_out, kh, kw, c_in, cw;

private:
    // Border classes of output rows/columns and the zero-padding correction per class pair,
    // which depend on the input size: computed once per size and cached.
    struct BorderTables {
        std::vector<int> row_cls, col_cls;
        int ncc = 1;
        std::vector<int32_t> corr;  // [rc][cc][c_pad]; empty when no correction is needed
    };
    std::shared_ptr<const BorderTables> border_tables(int H, int W) const;

    mutable std::mutex cache_mu_;
    mutable std::vector<std::pair<std::pair<int, int>, std::shared_ptr<const BorderTables>>> cache_;
    int stride_, pad_;
    bool zero_;
    int nct_;
    std::vector<uint64_t> wt_;   // [ct][ky][kx*cw + w][kCoTile]
    std::vector<int32_t> wsum_;  // [c_out][kh][kw]: sum over input channels of sign(w)
};

}  // namespace xnor
