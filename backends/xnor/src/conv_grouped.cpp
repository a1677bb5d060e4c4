// Grouped and dilated binary convolution: see conv_grouped.h.
#include "conv_grouped.h"

#include <cmath>
#include <stdexcept>

namespace xnor {

namespace {

int words_of(int c) { return (c + 63) / 64; }

// Bits [first, first + count) of a packed row, re-packed from bit 0 into `out` (words_of(count)).
void extract_bits(const uint64_t* row, int first, int count, uint64_t* out) {
    const int nw = words_of(count);
    for (int k = 0; k < nw; ++k) {
        const int bit = first + 64 * k;
        const int q = bit / 64, r = bit % 64;
        uint64_t v = row[q] >> r;
        if (r && bit + (64 - r) < first + count) v |= row[q + 1] << (64 - r);
        const int left = count - 64 * k;
        if (left < 64) v &= (uint64_t{1} << left) - 1;
        out[k] = v;
    }
}

struct Job {
    const GroupedConvPlan* p;
    const uint64_t* x;       // group-major packed input (N*H*W, groups, gw) words
    int N, H, W, Ho, Wo;
    int stride, pad, dil, cg, og, gw;
    bool zero;
    const uint64_t* w;
    const int32_t* wpad;
    int32_t* dot;             // (N*Ho*Wo, c_out)
    const Output* out;
};

// Direct integer dots for output rows [part's share of N*Ho).
void direct_work(void* ctx, int part, int nparts) {
    auto& j = *static_cast<Job*>(ctx);
    const GroupedConvPlan& p = *j.p;
    const std::size_t rows = static_cast<std::size_t>(j.N) * j.Ho;
    const std::size_t r0 = rows * part / nparts, r1 = rows * (part + 1) / nparts;
    const std::size_t pix_words = static_cast<std::size_t>(p.groups) * j.gw;
    for (std::size_t r = r0; r < r1; ++r) {
        const int n = static_cast<int>(r / j.Ho), oy = static_cast<int>(r % j.Ho);
        for (int ox = 0; ox < j.Wo; ++ox) {
            int32_t* d = j.dot + (r * j.Wo + ox) * p.c_out;
            for (int o = 0; o < p.c_out; ++o) {
                const int g = o / j.og;
                int32_t acc = 0;
                for (int ky = 0; ky < p.kh; ++ky) {
                    const int iy = oy * j.stride - j.pad + ky * j.dil;
                    for (int kx = 0; kx < p.kw; ++kx) {
                        const int ix = ox * j.stride - j.pad + kx * j.dil;
                        const std::size_t t = (static_cast<std::size_t>(o) * p.kh + ky) * p.kw + kx;
                        if (iy < 0 || iy >= j.H || ix < 0 || ix >= j.W) {
                            if (!j.zero) acc += j.wpad[t];  // +1 padding: sum of sign(w)
                            continue;
                        }
                        const uint64_t* xs = j.x + ((static_cast<std::size_t>(n) * j.H + iy) * j.W + ix) * pix_words +
                                             static_cast<std::size_t>(g) * j.gw;
                        const uint64_t* ws = j.w + t * j.gw;
                        int pc = 0;
                        for (int k = 0; k < j.gw; ++k) pc += __builtin_popcountll(xs[k] ^ ws[k]);
                        acc += j.cg - 2 * pc;
                    }
                }
                d[o] = acc;
            }
        }
    }
}

// The Output contract of conv.h applied to the integer dots, pixels [part's share).
void epilogue_work(void* ctx, int part, int nparts) {
    auto& j = *static_cast<Job*>(ctx);
    const int co = j.p->c_out;
    const Output& o = *j.out;
    const std::size_t pix = static_cast<std::size_t>(j.N) * j.Ho * j.Wo;
    const std::size_t m0 = pix * part / nparts, m1 = pix * (part + 1) / nparts;
    const std::size_t stride = o.stride ? o.stride : static_cast<std::size_t>(co);
    const int ow = words_of(co);
    for (std::size_t m = m0; m < m1; ++m) {
        const int32_t* d = j.dot + m * co;
        switch (o.kind) {
            case OutKind::int32: {
                int32_t* y = static_cast<int32_t*>(o.data) + m * stride;
                for (int c = 0; c < co; ++c) y[c] = d[c];
                break;
            }
            case OutKind::affine: {
                float* y = static_cast<float*>(o.data) + m * stride;
                uint64_t* sb = o.sign_bits ? o.sign_bits + m * ow : nullptr;
                for (int c = 0; c < co; ++c) {
                    // one rounding (the XnorConv contract), then the fused Add's own rounding
                    float v = std::fma(static_cast<float>(d[c]), o.mul[c], o.bias[c]);
                    if (o.residual) v += o.residual[m * co + c];
                    y[c] = v;
                    if (sb && v < 0.0f) sb[c / 64] |= uint64_t{1} << (c % 64);
                }
                break;
            }
            case OutKind::bits: {
                uint64_t* y = static_cast<uint64_t*>(o.data) + m * ow;
                for (int c = 0; c < co; ++c)
                    if ((d[c] < o.thr[c]) != (o.flip[c] != 0)) y[c / 64] |= uint64_t{1} << (c % 64);
                break;
            }
        }
    }
}

}  // namespace

GroupedConvPlan::GroupedConvPlan(const uint64_t* w, int c_out_, int kh_, int kw_, int c_in_, int groups_,
                                 int stride, int pad, int dilation, bool zero_padding)
    : c_out(c_out_), kh(kh_), kw(kw_), c_in(c_in_), cw(words_of(c_in_)), groups(groups_), stride_(stride),
      pad_(pad), dil_(dilation), zero_(zero_padding) {
    if (groups < 1 || c_in % groups || c_out % groups || stride < 1 || pad < 0 || dilation < 1 || kh < 1 || kw < 1)
        throw std::invalid_argument("grouped conv: groups must divide the channels; stride, dilation, kernel >= 1");
    cg_ = c_in / groups;
    og_ = c_out / groups;
    gw_ = words_of(cg_);
    const std::size_t n = static_cast<std::size_t>(c_out) * kh * kw * gw_;
    w_.assign(w, w + n);
    wpad_.resize(static_cast<std::size_t>(c_out) * kh * kw);
    for (std::size_t t = 0; t < wpad_.size(); ++t) {
        int pc = 0;
        for (int k = 0; k < gw_; ++k) pc += __builtin_popcountll(w_[t * gw_ + k]);
        wpad_[t] = cg_ - 2 * pc;
    }
    if (dil_ == 1)
        for (int g = 0; g < groups; ++g)
            plans_.push_back(std::make_unique<ConvPlan>(w_.data() + static_cast<std::size_t>(g) * og_ * kh * kw * gw_,
                                                        og_, kh, kw, cg_, stride, pad, zero_padding));
}

void GroupedConvPlan::run(const uint64_t* x, int N, int H, int W, const Output& out, int threads, Isa isa) const {
    const int Ho = out_size(H, kh), Wo = out_size(W, kw);
    if (Ho < 1 || Wo < 1) throw std::invalid_argument("input is smaller than the dilated kernel after padding");
    const std::size_t pix_in = static_cast<std::size_t>(N) * H * W;
    const std::size_t pix_out = static_cast<std::size_t>(N) * Ho * Wo;
    std::vector<int32_t> dot(pix_out * c_out);
    Job j{this, nullptr, N, H, W, Ho, Wo, stride_, pad_, dil_, cg_, og_, gw_, zero_, w_.data(), wpad_.data(),
          dot.data(), &out};
    if (dil_ == 1) {
        // each group on the ISA's dense kernel, reading the group's channels re-packed from bit 0
        std::vector<uint64_t> xg(pix_in * gw_);
        for (int g = 0; g < groups; ++g) {
            for (std::size_t q = 0; q < pix_in; ++q) extract_bits(x + q * cw, g * cg_, cg_, xg.data() + q * gw_);
            Output o;
            o.kind = OutKind::int32;
            o.data = dot.data() + static_cast<std::size_t>(g) * og_;
            o.stride = static_cast<std::size_t>(c_out);
            plans_[g]->run(xg.data(), N, H, W, o, threads, isa);
        }
    } else {
        std::vector<uint64_t> xg(pix_in * groups * gw_);  // (pixel, group, word)
        for (std::size_t q = 0; q < pix_in; ++q)
            for (int g = 0; g < groups; ++g)
                extract_bits(x + q * cw, g * cg_, cg_, xg.data() + (q * groups + g) * gw_);
        j.x = xg.data();
        parallel_run(threads, parts_for(static_cast<std::size_t>(N) * Ho, threads), direct_work, &j);
    }
    parallel_run(threads, parts_for(pix_out, threads), epilogue_work, &j);
}

}  // namespace xnor
