// Grouped and dilated binary convolution (XnorConv with group > 1 or dilations > 1).
//
// Kept apart from the tuned dense path (conv.cpp, kernel_*.cpp): with dilation 1 each group runs
// the ISA's dense kernel (a ConvPlan over the group's channels, re-packed from bit 0) into an
// int32 buffer; with dilation > 1 a direct popcount loop computes the same integer dots. One
// epilogue then applies the Output contract of conv.h (int32, affine with fmaf and the optional
// residual and sign bits, or thresholded bits), so every path gives the same bytes.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "conv.h"

namespace xnor {

class GroupedConvPlan {
public:
    // w: canonical (c_out, kh, kw, ceil(c_in/groups / 64)) words; output channel o reads input
    // channels [g * c_in/groups, (g + 1) * c_in/groups), g = o / (c_out/groups).
    GroupedConvPlan(const uint64_t* w, int c_out, int kh, int kw, int c_in, int groups, int stride, int pad,
                    int dilation, bool zero_padding);
    GroupedConvPlan(const GroupedConvPlan&) = delete;
    GroupedConvPlan& operator=(const GroupedConvPlan&) = delete;

    int out_size(int in, int k) const { return (in + 2 * pad_ - dil_ * (k - 1) - 1) / stride_ + 1; }
    // x: (N, H, W, ceil(c_in/64)) words. Throws std::invalid_argument when the input is too small.
    void run(const uint64_t* x, int N, int H, int W, const Output& out, int threads, Isa isa) const;

    int c_out, kh, kw, c_in, cw, groups;

private:
    int stride_, pad_, dil_;
    bool zero_;
    int cg_, og_, gw_;                                  // channels in / out per group, words per group
    std::vector<uint64_t> w_;                           // canonical weights
    std::vector<int32_t> wpad_;                         // [c_out][kh][kw]: sum of sign(w) (a +1 tap)
    std::vector<std::unique_ptr<ConvPlan>> plans_;      // per group, dilation 1 only
};

}  // namespace xnor
