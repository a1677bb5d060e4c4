// Binary convolution driver: +1 padding in the packed domain (zero words), a register-tiled
// micro-kernel over (pixel tile x 32 output channels) items split across threads, and a fused
// store that applies the zero-padding correction and the requested output transform.
#include "conv.h"
#include "conv_impl.h"

#include <algorithm>
#include <climits>
#include <cstdint>
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
    // Counts are int32 (and the dot is K - 2*count): keep K well inside that range.
    if (static_cast<int64_t>(kh) * kw * c_in > (int64_t{1} << 30) || pad > (1 << 20) || stride > (1 << 20))
        throw std::invalid_argument("binary conv: kernel x channels, padding or stride too large");
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

// Reused per calling thread so a padded copy costs no allocation or page faults per call.
thread_local std::vector<uint64_t> tls_padded;

struct PadJob {
    const uint64_t* x;
    uint64_t* out;
    int N, H, W, Hp, Wp, cw, pad;
};

void pad_rows(void* ctx, int part, int nparts) {
    const PadJob& j = *static_cast<const PadJob*>(ctx);
    const std::size_t rows = static_cast<std::size_t>(j.N) * j.Hp;
    const std::size_t row = static_cast<std::size_t>(j.Wp) * j.cw;
    const std::size_t edge = static_cast<std::size_t>(j.pad) * j.cw;
    for (std::size_t r = rows * part / nparts; r < rows * (part + 1) / nparts; ++r) {
        uint64_t* dst = j.out + r * row;
        const std::size_t n = r / j.Hp;
        const int sy = static_cast<int>(r % j.Hp) - j.pad;
        if (sy < 0 || sy >= j.H) {
            std::memset(dst, 0, row * sizeof(uint64_t));
            continue;
        }
        std::memset(dst, 0, edge * sizeof(uint64_t));
        std::memcpy(dst + edge, j.x + (n * j.H + sy) * j.W * j.cw,
                    static_cast<std::size_t>(j.W) * j.cw * sizeof(uint64_t));
        std::memset(dst + edge + static_cast<std::size_t>(j.W) * j.cw, 0, edge * sizeof(uint64_t));
    }
}

}  // namespace

std::shared_ptr<const ConvPlan::BorderTables> ConvPlan::border_tables(int H, int W) const {
    const std::lock_guard<std::mutex> lock(cache_mu_);
    for (const auto& [key, t] : cache_)
        if (key == std::make_pair(H, W)) return t;
    auto t = std::make_shared<BorderTables>();
    std::vector<std::pair<int, int>> rr, cr;
    t->row_cls = border_classes(out_size(H, kh), H, kh, stride_, pad_, rr);
    t->col_cls = border_classes(out_size(W, kw), W, kw, stride_, pad_, cr);
    t->ncc = static_cast<int>(cr.size());
    if (zero_ && (rr.size() > 1 || cr.size() > 1)) {
        // corr[rc][cc][co]: sum of sign(w) over the taps that fall on padding.
        const std::size_t cpad = static_cast<std::size_t>(nct_) * kCoTile;
        t->corr.assign(rr.size() * cr.size() * cpad, 0);
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
                    t->corr[(rc * cr.size() + cc) * cpad + co] = s;
                }
    }
    // A plan sees few input sizes (usually one); keep the most recent handful.
    if (cache_.size() >= 8) cache_.erase(cache_.begin());
    cache_.emplace_back(std::make_pair(H, W), t);
    return t;
}

void ConvPlan::run(const uint64_t* x, int N, int H, int W, const Output& out, int threads,
                   Isa isa) const {
    if (N <= 0 || H <= 0 || W <= 0) throw std::invalid_argument("binary conv: empty input");
    if (H + 2 * pad_ < kh || W + 2 * pad_ < kw)
        throw std::invalid_argument("binary conv: input " + std::to_string(H) + "x" + std::to_string(W) +
                                    " is smaller than the kernel after padding");
    if (out.kind == OutKind::affine && static_cast<int64_t>(kh) * kw * c_in > (int64_t{1} << 24))
        throw std::invalid_argument("binary conv: float output needs kh*kw*C_in <= 2^24 (float(dot) exact)");
    const int Ho = out_size(H, kh), Wo = out_size(W, kw);
    const int Hp = H + 2 * pad_, Wp = W + 2 * pad_;
    const uint64_t* xp = x;
    if (pad_ > 0) {
        // Zero words are +1 in the packed domain: the "one" padding; "zero" is corrected below.
        // Large copies run in parallel, rows split like the output tiles below, so each core
        // mostly reads rows it wrote (a serial copy cost ~9 % of a 56x56x64 batch-8 conv on 2
        // threads); small ones (a 56x56x64 image: 27 KB) stay on this thread, where a second
        // hand-off to the pool would cost more than the copy.
        auto& buf = tls_padded;
        buf.resize(static_cast<std::size_t>(N) * Hp * Wp * cw);
        PadJob pj{x, buf.data(), N, H, W, Hp, Wp, cw, pad_};
        const std::size_t rows = static_cast<std::size_t>(N) * Hp;
        if (buf.size() * sizeof(uint64_t) >= (std::size_t{128} << 10)) {
            parallel_run(threads, parts_for(rows, threads), pad_rows, &pj);
        } else {
            pad_rows(&pj, 0, 1);
        }
        xp = buf.data();
    }

    const std::size_t cpad = static_cast<std::size_t>(nct_) * kCoTile;
    const std::shared_ptr<const BorderTables> bt = border_tables(H, W);
    const bool need_corr = zero_ && !bt->corr.empty();
    ConvJob j;
    j.x = xp;
    j.row_stride = static_cast<std::size_t>(Wp) * cw;
    j.img_words = static_cast<std::size_t>(Hp) * j.row_stride;
    j.cw = cw;
    j.kh = kh;
    j.L = kw * cw;
    j.c_out = c_out;
    j.c_in = c_in;
    j.K = kh * kw * c_in;
    j.Ho = Ho;
    j.Wo = Wo;
    j.stride = stride_;
    j.nct = nct_;
    j.np_tile = pixel_tile(isa);
    j.pixels = static_cast<std::size_t>(N) * Ho * Wo;
    j.items = (j.pixels + j.np_tile - 1) / j.np_tile * nct_;
    j.wt = wt_.data();
    j.wt_tile = static_cast<std::size_t>(kh) * kw * cw * kCoTile;
    j.row_cls = bt->row_cls.data();
    j.col_cls = bt->col_cls.data();
    j.ncc = bt->ncc;
    j.corr = need_corr ? bt->corr.data() : nullptr;
    j.corr_stride = cpad;
    // Per-channel parameters padded to whole tiles (see store_one).
    std::vector<float> mul, bias;
    std::vector<int32_t> thr, flip;
    j.out = out;
    if (j.out.stride == 0) j.out.stride = static_cast<std::size_t>(c_out);
    if (out.kind == OutKind::affine) {
        mul.assign(out.mul, out.mul + c_out);
        bias.assign(out.bias, out.bias + c_out);
        mul.resize(cpad, 0.0f);
        bias.resize(cpad, 0.0f);
        j.out.mul = mul.data();
        j.out.bias = bias.data();
    } else if (out.kind == OutKind::bits) {
        thr.assign(out.thr, out.thr + c_out);
        flip.resize(cpad, 0);
        for (int c = 0; c < c_out; ++c) flip[c] = out.flip[c] != 0;
        thr.resize(cpad, INT32_MIN);
        j.out.thr = thr.data();
        j.out.flip = flip.data();
    }
    parallel_run(threads, parts_for(j.items, threads), work_fn(isa), &j);
}

}  // namespace xnor
