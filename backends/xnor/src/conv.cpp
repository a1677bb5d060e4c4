// Binary convolution driver: +1 padding in the packed domain (zero words), a register-tiled
// micro-kernel over (pixel tile x 32 output channels) items split across threads, and a fused
// store that applies the zero-padding correction and the requested output transform.
#include "conv.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>

namespace xnor {

ConvPlan::ConvPlan(const uint64_t* w, int c_out_, int kh_, int kw_, int c_in_, int stride,
                   int pad, bool zero_padding)
    : c_out(c_out_), kh(kh_), kw(kw_), c_in(c_in_), cw((c_in_ + 63) / 64), stride_(stride),
      pad_(pad), zero_(zero_padding) {
    if (c_out <= 0 || kh <= 0 || kw <= 0 || c_in <= 0 || stride <= 0 || pad < 0)
        throw std::invalid_argument("binary conv: sizes, stride must be positive and padding >= 0");
    nct_ = (c_out + kCoTile - 1) / kCoTile;
    const std::size_t L = static_cast<std::size_t>(kw) * cw;
    wt_.assign(static_cast<std::size_t>(nct_) * kh * L * kCoTile, 0);
    wsum_.assign(static_cast<std::size_t>(c_out) * kh * kw, 0);
    for (int co = 0; co < c_out; ++co) {
        const int ct = co / kCoTile, j = co % kCoTile;
        for (int ky = 0; ky < kh; ++ky)
            for (int kx = 0; kx < kw; ++kx) {
                int ones = 0;
                for (int q = 0; q < cw; ++q) {
                    const uint64_t v = w[((static_cast<std::size_t>(co) * kh + ky) * kw + kx) * cw + q];
                    wt_[((static_cast<std::size_t>(ct) * kh + ky) * L + kx * cw + q) * kCoTile + j] = v;
                    ones += __builtin_popcountll(v);
                }
                wsum_[(static_cast<std::size_t>(co) * kh + ky) * kw + kx] = c_in - 2 * ones;
            }
    }
}

namespace {

// Output rows (or columns) that see the same range of kernel taps inside the image share a
// border class; class 0 is the interior (all taps inside).
std::vector<int> border_classes(int out, int in, int k, int stride, int pad,
                                std::vector<std::pair<int, int>>& ranges) {
    std::map<std::pair<int, int>, int> ids;
    ranges.assign(1, {0, k});
    ids[{0, k}] = 0;
    std::vector<int> cls(out);
    for (int o = 0; o < out; ++o) {
        const int lo = std::max(0, pad - o * stride);
        const int hi = std::max(lo, std::min(k, in + pad - o * stride));
        auto [it, fresh] = ids.emplace(std::make_pair(lo, hi), static_cast<int>(ranges.size()));
        if (fresh) ranges.push_back({lo, hi});
        cls[o] = it->second;
    }
    return cls;
}

struct Job {
    const ConvPlan* plan;
    const uint64_t* x;         // padded input
    std::size_t img_words, row_stride;
    int Ho, Wo, stride, nct, np_tile;
    std::size_t items, pixels;
    const uint64_t* wt;
    std::size_t wt_tile;       // words per output-channel tile
    MicroKernel mk;
    const std::vector<int>* row_cls;
    const std::vector<int>* col_cls;
    int ncc;
    const int32_t* corr;       // [rc][cc][c_out], null when no zero-padding correction
    Output out;
};

void store(const Job& j, std::size_t m0, int np, int ct, const int32_t* cnt) {
    const ConvPlan& P = *j.plan;
    const int K = P.kh * P.kw * P.c_in;
    const int c0 = ct * kCoTile;
    const int cn = std::min(kCoTile, P.c_out - c0);
    const std::size_t hw = static_cast<std::size_t>(j.Ho) * j.Wo;
    for (int p = 0; p < np; ++p) {
        const std::size_t m = m0 + p;
        const std::size_t r = m % hw;
        const int oy = static_cast<int>(r / j.Wo), ox = static_cast<int>(r % j.Wo);
        const int32_t* corr = nullptr;
        if (j.corr) {
            const int rc = (*j.row_cls)[oy], cc = (*j.col_cls)[ox];
            if (rc != 0 || cc != 0)
                corr = j.corr + (static_cast<std::size_t>(rc) * j.ncc + cc) * P.c_out + c0;
        }
        int32_t dot[kCoTile];
        for (int q = 0; q < cn; ++q) dot[q] = K - 2 * cnt[p * kCoTile + q] - (corr ? corr[q] : 0);
        switch (j.out.kind) {
            case OutKind::int32: {
                int32_t* o = static_cast<int32_t*>(j.out.data) + m * P.c_out + c0;
                std::memcpy(o, dot, sizeof(int32_t) * cn);
                break;
            }
            case OutKind::affine: {
                float* o = static_cast<float*>(j.out.data) + m * P.c_out + c0;
                for (int q = 0; q < cn; ++q) {
                    const float prod = static_cast<float>(dot[q]) * j.out.mul[c0 + q];
                    o[q] = prod + j.out.bias[c0 + q];
                }
                break;
            }
            case OutKind::bits: {
                // A 32-channel tile is exactly one little-endian half of an output word, so
                // threads never share a store target.
                uint32_t bits = 0;
                for (int q = 0; q < cn; ++q)
                    bits |= static_cast<uint32_t>((dot[q] < j.out.thr[c0 + q]) != (j.out.flip[c0 + q] != 0)) << q;
                const std::size_t half_words = 2 * static_cast<std::size_t>((P.c_out + 63) / 64);
                static_cast<uint32_t*>(j.out.data)[m * half_words + ct] = bits;
                break;
            }
        }
    }
}

void work(void* ctx, int tid, int nthreads) {
    const Job& j = *static_cast<const Job*>(ctx);
    const std::size_t b = j.items * tid / nthreads, e = j.items * (tid + 1) / nthreads;
    const std::size_t hw = static_cast<std::size_t>(j.Ho) * j.Wo;
    const int cw = j.plan->cw;
    const int L = j.plan->kw * cw;
    alignas(64) int32_t cnt[kMaxPixTile * kCoTile];
    const uint64_t* xs[kMaxPixTile];
    for (std::size_t it = b; it < e; ++it) {
        const std::size_t pt = it / j.nct;
        const int ct = static_cast<int>(it % j.nct);
        const std::size_t m0 = pt * j.np_tile;
        const int np = static_cast<int>(std::min<std::size_t>(j.np_tile, j.pixels - m0));
        for (int p = 0; p < np; ++p) {
            const std::size_t m = m0 + p;
            const std::size_t n = m / hw, r = m % hw;
            const std::size_t oy = r / j.Wo, ox = r % j.Wo;
            xs[p] = j.x + n * j.img_words + oy * j.stride * j.row_stride + ox * j.stride * cw;
        }
        j.mk(xs, np, j.wt + ct * j.wt_tile, j.plan->kh, L, j.row_stride, cnt);
        store(j, m0, np, ct, cnt);
    }
}

// Reused per calling thread so a padded copy costs no allocation or page faults per call.
thread_local std::vector<uint64_t> tls_padded;

}  // namespace

void ConvPlan::run(const uint64_t* x, int N, int H, int W, const Output& out, int threads,
                   Isa isa) const {
    if (N <= 0 || H <= 0 || W <= 0) throw std::invalid_argument("binary conv: empty input");
    if (H + 2 * pad_ < kh || W + 2 * pad_ < kw)
        throw std::invalid_argument("binary conv: input " + std::to_string(H) + "x" + std::to_string(W) +
                                    " is smaller than the kernel after padding");
    const int Ho = out_size(H, kh), Wo = out_size(W, kw);
    const int Hp = H + 2 * pad_, Wp = W + 2 * pad_;
    const uint64_t* xp = x;
    if (pad_ > 0) {
        // Zero words are +1 in the packed domain: the "one" padding; "zero" is corrected below.
        auto& buf = tls_padded;
        const std::size_t row = static_cast<std::size_t>(Wp) * cw;
        buf.resize(static_cast<std::size_t>(N) * Hp * row);
        for (int n = 0; n < N; ++n)
            for (int y = 0; y < Hp; ++y) {
                uint64_t* dst = buf.data() + (static_cast<std::size_t>(n) * Hp + y) * row;
                const int sy = y - pad_;
                if (sy < 0 || sy >= H) {
                    std::memset(dst, 0, row * sizeof(uint64_t));
                    continue;
                }
                const std::size_t edge = static_cast<std::size_t>(pad_) * cw;
                std::memset(dst, 0, edge * sizeof(uint64_t));
                std::memcpy(dst + edge, x + (static_cast<std::size_t>(n) * H + sy) * W * cw,
                            static_cast<std::size_t>(W) * cw * sizeof(uint64_t));
                std::memset(dst + edge + static_cast<std::size_t>(W) * cw, 0, edge * sizeof(uint64_t));
            }
        xp = buf.data();
    }

    std::vector<std::pair<int, int>> rr, cr;
    const std::vector<int> row_cls = border_classes(Ho, H, kh, stride_, pad_, rr);
    const std::vector<int> col_cls = border_classes(Wo, W, kw, stride_, pad_, cr);
    std::vector<int32_t> corr;
    const bool need_corr = zero_ && (rr.size() > 1 || cr.size() > 1);
    if (need_corr) {
        // corr[rc][cc][co]: sum of sign(w) over the taps that fall on padding.
        corr.assign(rr.size() * cr.size() * c_out, 0);
        for (std::size_t rc = 0; rc < rr.size(); ++rc)
            for (std::size_t cc = 0; cc < cr.size(); ++cc)
                for (int co = 0; co < c_out; ++co) {
                    int s = 0;
                    for (int ky = 0; ky < kh; ++ky)
                        for (int kx = 0; kx < kw; ++kx) {
                            const bool inside = ky >= rr[rc].first && ky < rr[rc].second &&
                                                kx >= cr[cc].first && kx < cr[cc].second;
                            if (!inside) s += wsum_[(static_cast<std::size_t>(co) * kh + ky) * kw + kx];
                        }
                    corr[(rc * cr.size() + cc) * c_out + co] = s;
                }
    }

    Job j;
    j.plan = this;
    j.x = xp;
    j.row_stride = static_cast<std::size_t>(Wp) * cw;
    j.img_words = static_cast<std::size_t>(Hp) * j.row_stride;
    j.Ho = Ho;
    j.Wo = Wo;
    j.stride = stride_;
    j.nct = nct_;
    j.np_tile = pixel_tile(isa);
    j.pixels = static_cast<std::size_t>(N) * Ho * Wo;
    j.items = (j.pixels + j.np_tile - 1) / j.np_tile * nct_;
    j.wt = wt_.data();
    j.wt_tile = static_cast<std::size_t>(kh) * kw * cw * kCoTile;
    j.mk = micro_kernel(isa);
    j.row_cls = &row_cls;
    j.col_cls = &col_cls;
    j.ncc = static_cast<int>(cr.size());
    j.corr = need_corr ? corr.data() : nullptr;
    j.out = out;
    const int T = static_cast<int>(std::max<std::size_t>(1, std::min<std::size_t>(threads, j.items)));
    parallel_run(T, work, &j);
}

}  // namespace xnor
