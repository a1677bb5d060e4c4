// Binary convolution driver: +1 padding in the packed domain (zero words), a register-tiled
// micro-kernel over (pixel tile x 32 output channels) items split across threads, and a fused
// store that applies the zero-padding correction and the requested output transform.
#include "conv.h"
#include "conv_impl.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

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

// ---- Per-CPU choice of the binary kernel's register tile ----------------------------------

std::string tile_name(Tile t) { return std::to_string(t.pixels) + "x" + std::to_string(t.channels); }

std::vector<Tile> tile_candidates(Isa isa) {
    // The first candidate is the table default (AMD Zen 4 measured best with 6 x 32 on AVX-512).
    if (isa == Isa::avx512) return {{6, 32}, {5, 32}, {4, 32}, {3, 64}, {2, 64}};
    // AVX2: 3 pixels need 17 ymm registers (a spill); 2 fit in 16.
    if (isa == Isa::avx2) return {{3, 32}, {2, 32}};
    return {{pixel_tile(isa), 32}};
}

std::string cpu_description() {
#if defined(__x86_64__) || defined(__i386__)
    unsigned a = 0, b = 0, c = 0, d = 0;
    char vendor[13] = {};
    if (__get_cpuid(0, &a, &b, &c, &d)) {
        std::memcpy(vendor, &b, 4);
        std::memcpy(vendor + 4, &d, 4);
        std::memcpy(vendor + 8, &c, 4);
    }
    unsigned family = 0, model = 0, stepping = 0;
    if (__get_cpuid(1, &a, &b, &c, &d)) {
        family = (a >> 8) & 0xf;
        model = (a >> 4) & 0xf;
        stepping = a & 0xf;
        if (family == 0xf) family += (a >> 20) & 0xff;
        if (family == 0x6 || family >= 0xf) model |= ((a >> 16) & 0xf) << 4;
    }
    char brand[49] = {};
    unsigned max_ext = __get_cpuid_max(0x80000000u, nullptr);
    if (max_ext >= 0x80000004u)
        for (unsigned i = 0; i < 3; ++i) {
            __get_cpuid(0x80000002u + i, &a, &b, &c, &d);
            std::memcpy(brand + 16 * i, &a, 4);
            std::memcpy(brand + 16 * i + 4, &b, 4);
            std::memcpy(brand + 16 * i + 8, &c, 4);
            std::memcpy(brand + 16 * i + 12, &d, 4);
        }
    std::string br(brand);
    br.erase(0, br.find_first_not_of(' '));
    br.erase(br.find_last_not_of(' ') + 1);
    char head[96];
    std::snprintf(head, sizeof head, "%s family 0x%x model 0x%x stepping %u", vendor, family, model, stepping);
    return std::string(head) + (br.empty() ? "" : ": " + br);
#else
    return "unknown CPU";
#endif
}

namespace {

bool parse_tile(const std::string& v, Tile& t) {
    int p = 0, c = 0;
    char x = 0, extra = 0;
    if (std::sscanf(v.c_str(), "%d%c%d%c", &p, &x, &c, &extra) != 3 || (x != 'x' && x != 'X')) return false;
    t = {p, c};
    return true;
}

bool supported(Isa isa, Tile t) {
    for (const Tile& c : tile_candidates(isa))
        if (c == t) return true;
    return false;
}

struct TileState {
    bool chosen = false;
    TileChoice choice;
    Tile forced;
};
std::mutex tile_mu;
std::map<int, TileState> tile_states;

std::string cache_path(Isa isa) {
    const char* env = std::getenv("FRACTALC_TILE_CACHE");
    std::filesystem::path dir;
    if (env && *env) {
        const std::string v(env);
        if (v == "off" || v == "0" || v == "none") return {};
        dir = v;
    } else if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) {
        dir = std::filesystem::path(x) / "fractalc";
    } else if (const char* h = std::getenv("HOME"); h && *h) {
        dir = std::filesystem::path(h) / ".cache" / "fractalc";
    } else {
        return {};
    }
    // One file per CPU model and ISA; the kernel version invalidates old measurements.
    const std::size_t key = std::hash<std::string>{}(cpu_description());
    char name[96];
    std::snprintf(name, sizeof name, "xnor-tile-v1-%s-%016zx.txt", isa_name(isa), key);
    return (dir / name).string();
}

std::string cache_key(Isa isa) { return std::string("fractalc xnor tile v1 ") + isa_name(isa) + " " + cpu_description(); }

bool read_cache(Isa isa, const std::string& path, Tile& t, std::string& detail) {
    if (path.empty()) return false;
    std::ifstream f(path);
    std::string key, tile;
    if (!f || !std::getline(f, key) || key != cache_key(isa) || !std::getline(f, tile)) return false;
    std::getline(f, detail);
    return parse_tile(tile, t) && supported(isa, t);
}

void write_cache(Isa isa, const std::string& path, Tile t, const std::string& detail) {
    if (path.empty()) return;
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
    const std::string tmp = path + ".tmp" + std::to_string(static_cast<long>(getpid()));
    {
        std::ofstream f(tmp, std::ios::trunc);
        if (!f) return;
        f << cache_key(isa) << "\n" << tile_name(t) << "\n" << detail << "\n";
        if (!f.flush()) {
            std::filesystem::remove(tmp, ec);
            return;
        }
    }
    std::filesystem::rename(tmp, path, ec);  // atomic: readers see the old file or the new one
    if (ec) std::filesystem::remove(tmp, ec);
}

// Times every candidate on two small 3x3 convolutions (28x28x64: 3-word kernel rows, and
// 14x14x256: 12-word rows; float outputs), one thread, interleaved rounds, minimum per
// candidate (about 2.5 ms on AMD Zen 4 for five AVX-512 tiles); keeps the table default unless
// another tile is more than 3 % faster.
Tile calibrate(Isa isa, std::string& detail) {
    const std::vector<Tile> cands = tile_candidates(isa);
    if (cands.size() == 1) {
        detail = "one candidate";
        return cands[0];
    }
    struct Shape {
        int c, hw;
    };
    const Shape shapes[] = {{64, 28}, {256, 14}};
    std::mt19937_64 rng(12345);
    std::vector<double> total(cands.size(), 0.0);
    for (const Shape& sh : shapes) {
        const int cw = (sh.c + 63) / 64;
        std::vector<uint64_t> w(static_cast<std::size_t>(sh.c) * 9 * cw), x(static_cast<std::size_t>(sh.hw) * sh.hw * cw);
        for (auto& v : w) v = rng();
        for (auto& v : x) v = rng();
        const ConvPlan plan(w.data(), sh.c, 3, 3, sh.c, 1, 1, true);
        std::vector<float> mul(sh.c, 0.5f), bias(sh.c, 0.25f), y(static_cast<std::size_t>(sh.hw) * sh.hw * sh.c);
        Output o;
        o.kind = OutKind::affine;
        o.data = y.data();
        o.mul = mul.data();
        o.bias = bias.data();
        std::vector<double> best(cands.size(), 1e30);
        using clk = std::chrono::steady_clock;
        for (int round = 0; round < 4; ++round)
            for (std::size_t i = 0; i < cands.size(); ++i) {
                const auto t0 = clk::now();
                plan.run(x.data(), 1, sh.hw, sh.hw, o, 1, isa, cands[i]);
                const double dt = std::chrono::duration<double>(clk::now() - t0).count();
                if (round > 0) best[i] = std::min(best[i], dt);  // round 0 warms caches and code
            }
        for (std::size_t i = 0; i < cands.size(); ++i) total[i] += best[i];
    }
    std::size_t bi = 0;
    for (std::size_t i = 1; i < cands.size(); ++i)
        if (total[i] < total[bi]) bi = i;
    if (bi != 0 && total[bi] > 0.97 * total[0]) bi = 0;
    std::ostringstream d;
    d.setf(std::ios::fixed);
    d.precision(1);
    for (std::size_t i = 0; i < cands.size(); ++i)
        d << (i ? ", " : "") << tile_name(cands[i]) << " " << total[i] * 1e6 << " us";
    detail = d.str();
    return cands[bi];
}

}  // namespace

void set_tile_override(Isa isa, Tile t) {
    if (t != Tile{} && !supported(isa, t))
        throw std::invalid_argument("the " + std::string(isa_name(isa)) + " kernel has no " + tile_name(t) + " tile");
    const std::lock_guard<std::mutex> lock(tile_mu);
    tile_states[static_cast<int>(isa)].forced = t;
}

TileChoice tile_choice(Isa isa) {
    const std::lock_guard<std::mutex> lock(tile_mu);
    TileState& st = tile_states[static_cast<int>(isa)];
    if (st.forced != Tile{}) return {st.forced, "override", "set_tile_override"};
    if (st.chosen) return st.choice;
    TileChoice c;
    const std::vector<Tile> cands = tile_candidates(isa);
    const char* env = std::getenv("FRACTALC_TILE");
    const std::string ev = env ? env : "";
    Tile t;
    const std::string path = cache_path(isa);
    if (!ev.empty() && ev != "calibrate" && ev != "table" && parse_tile(ev, t) && supported(isa, t)) {
        c = {t, "environment", "FRACTALC_TILE=" + ev};
    } else if (ev == "table") {
        c = {cands[0], "table", "FRACTALC_TILE=table"};
    } else if (std::string detail; ev != "calibrate" && read_cache(isa, path, t, detail)) {
        c = {t, "cache file " + path, detail};
    } else {
        c.tile = calibrate(isa, c.detail);
        c.how = "calibrated";
        write_cache(isa, path, c.tile, c.detail);
    }
    if (!ev.empty() && c.how != "environment" && ev != "table" && ev != "calibrate")
        c.detail += " (FRACTALC_TILE=" + ev + " is not a " + isa_name(isa) + " tile: ignored)";
    st.choice = c;
    st.chosen = true;
    return c;
}

Tile conv_tile(Isa isa) { return tile_choice(isa).tile; }

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

void ConvPlan::run(const uint64_t* x, int N, int H, int W, const Output& out, int threads, Isa isa,
                   Tile tile) const {
    if (tile == Tile{}) tile = conv_tile(isa);
    if (!supported(isa, tile))
        throw std::invalid_argument("the " + std::string(isa_name(isa)) + " kernel has no " + tile_name(tile) + " tile");
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
    j.np_tile = tile.pixels;
    j.ng = tile.channels / kCoTile;
    j.ngrp = (nct_ + j.ng - 1) / j.ng;
    j.pixels = static_cast<std::size_t>(N) * Ho * Wo;
    j.items = (j.pixels + j.np_tile - 1) / j.np_tile * j.ngrp;
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
    if (out.kind == OutKind::affine && c_out % kCoTile != 0) {  // (whole tiles are used in place)
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
