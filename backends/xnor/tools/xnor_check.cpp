// xnor_check: runs the binary-conv and packing kernels on jobs from a file and writes every
// result, for each requested ISA and thread count, to another file. It links the C++ runtime
// (libfractalc_rt.a) directly, so tests/test_aarch64.py can run the NEON kernels of the AArch64
// cross build under qemu and compare them with torch and the portable path in Python.
//
// Usage: xnor_check JOBS.bin RESULTS.bin ISAS THREADS      e.g. ... portable,neon 1,2
// Little-endian records, no padding. A job is a u32 kind, then:
//   kind 1, binary conv: i32 n, c_in, c_out, h, w, kh, kw, stride, pad, zero_padding,
//       out_kind (0 int32, 1 float, 2 bits), has_residual, sign_bits; f32 x (n, c_in, h, w);
//       u64 packed weights (c_out, kh, kw, ceil(c_in/64)); out_kind 1: f32 mul, bias (c_out) and,
//       with has_residual, f32 residual (n, ho, wo, c_out); out_kind 2: i32 threshold, flip (c_out).
//     Results per (ISA, threads): u64 x packed from NCHW (pack_nchw_image), u64 x packed from
//       NHWC (pack_nhwc_rows), then the conv output: i32 (n, ho, wo, c_out); or f32 (n, ho, wo,
//       c_out) and, with sign_bits, u64 (n, ho, wo, ceil(c_out/64)); or u64 bits of that shape.
//   kind 2, thresholded packing: i32 pixels, stride, C; f32 x (pixels, stride); f32 t (C);
//       u8 flip (C). Results per (ISA, threads): u64 (pixels, ceil(C/64)) thresholded, and when
//       stride == C the plain sign packing of the same rows.
//   kind 3, float convolution (the engine's conv_float): i32 n, hp, wp, c, kh, kw, stride, c_out,
//       relu; f32 x (n, hp, wp, c) (already padded, NHWC); f32 w (kh * kw * c, c_out); f32 b
//       (c_out). Results per (ISA, threads): f32 (n, ho, wo, c_out).
// Exit status 0, or 1 with a message on stderr.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "conv.h"
#include "fkernels.h"
#include "xnor.h"

namespace {

struct Reader {
    std::vector<unsigned char> b;
    std::size_t off = 0;
    bool done() const { return off >= b.size(); }
    template <typename T>
    std::vector<T> take(std::size_t n) {
        if (n > (b.size() - off) / sizeof(T)) throw std::runtime_error("truncated job file");
        std::vector<T> v(n);
        if (n) std::memcpy(v.data(), b.data() + off, n * sizeof(T));
        off += n * sizeof(T);
        return v;
    }
    template <typename T>
    T one() { return take<T>(1)[0]; }
};

struct Writer {
    FILE* f;
    template <typename T>
    void put(const std::vector<T>& v) {
        if (!v.empty() && std::fwrite(v.data(), sizeof(T), v.size(), f) != v.size())
            throw std::runtime_error("cannot write the results");
    }
};

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> r;
    std::size_t p = 0;
    while (p <= s.size()) {
        const std::size_t q = s.find(',', p);
        r.push_back(s.substr(p, q == std::string::npos ? std::string::npos : q - p));
        if (q == std::string::npos) break;
        p = q + 1;
    }
    return r;
}

struct PackJob {
    const float* x;
    std::size_t stride;
    int C;
    const float* t;
    const uint8_t* flip;
    uint64_t* out;
    std::size_t pixels;
    xnor::Isa isa;
};

void pack_part(void* ctx, int part, int nparts) {
    const PackJob& j = *static_cast<const PackJob*>(ctx);
    const std::size_t p0 = j.pixels * part / nparts, p1 = j.pixels * (part + 1) / nparts;
    if (j.t) xnor::pack_nhwc_threshold_rows(j.x, j.stride, p0, p1, j.C, j.t, j.flip, j.out, j.isa);
    else xnor::pack_nhwc_rows(j.x, p0, p1, j.C, j.out, j.isa);
}

std::vector<uint64_t> pack_rows(const float* x, std::size_t stride, std::size_t pixels, int C, const float* t,
                                const uint8_t* flip, xnor::Isa isa, int threads) {
    std::vector<uint64_t> out(pixels * ((C + 63) / 64), ~uint64_t{0});  // every word must be written
    PackJob j{x, stride, C, t, flip, out.data(), pixels, isa};
    xnor::parallel_run(threads, xnor::parts_for(pixels, threads), pack_part, &j);
    return out;
}

void conv_job(Reader& r, Writer& w, const std::vector<xnor::Isa>& isas, const std::vector<int>& threads) {
    const std::vector<int32_t> q = r.take<int32_t>(13);
    const int n = q[0], ci = q[1], co = q[2], h = q[3], wd = q[4], kh = q[5], kw = q[6], stride = q[7], pad = q[8];
    const bool zero = q[9] != 0, residual = q[11] != 0, sign_bits = q[12] != 0;
    const int kind = q[10];
    if (n <= 0 || ci <= 0 || co <= 0 || h <= 0 || wd <= 0 || kh <= 0 || kw <= 0 || stride <= 0 || pad < 0 ||
        kind < 0 || kind > 2)
        throw std::runtime_error("bad conv job");
    const int cw = (ci + 63) / 64, cwo = (co + 63) / 64;
    const int ho = (h + 2 * pad - kh) / stride + 1, wo = (wd + 2 * pad - kw) / stride + 1;
    const std::size_t hw = static_cast<std::size_t>(h) * wd, pix_out = static_cast<std::size_t>(n) * ho * wo;
    const std::vector<float> x = r.take<float>(static_cast<std::size_t>(n) * ci * hw);
    const std::vector<uint64_t> wp = r.take<uint64_t>(static_cast<std::size_t>(co) * kh * kw * cw);
    std::vector<float> mul, bias, res;
    std::vector<int32_t> thr, flip;
    if (kind == 1) {
        mul = r.take<float>(co);
        bias = r.take<float>(co);
        if (residual) res = r.take<float>(pix_out * co);
    } else if (kind == 2) {
        thr = r.take<int32_t>(co);
        flip = r.take<int32_t>(co);
    }
    // NHWC copy of the input for the row packer
    std::vector<float> nhwc(x.size());
    for (int b = 0; b < n; ++b)
        for (int c = 0; c < ci; ++c)
            for (std::size_t p = 0; p < hw; ++p)
                nhwc[(b * hw + p) * ci + c] = x[(static_cast<std::size_t>(b) * ci + c) * hw + p];
    const xnor::ConvPlan plan(wp.data(), co, kh, kw, ci, stride, pad, zero);
    for (xnor::Isa isa : isas)
        for (int t : threads) {
            std::vector<uint64_t> xp(static_cast<std::size_t>(n) * hw * cw, ~uint64_t{0});
            for (int b = 0; b < n; ++b)
                xnor::pack_nchw_image(x.data() + static_cast<std::size_t>(b) * ci * hw, ci, hw, 0, hw,
                                      xp.data() + b * hw * cw, isa);
            w.put(xp);
            w.put(pack_rows(nhwc.data(), ci, n * hw, ci, nullptr, nullptr, isa, t));
            xnor::Output o;
            std::vector<int32_t> yi;
            std::vector<float> yf;
            std::vector<uint64_t> yb, sb;
            if (kind == 0) {
                yi.assign(pix_out * co, 0);
                o.kind = xnor::OutKind::int32;
                o.data = yi.data();
            } else if (kind == 1) {
                yf.assign(pix_out * co, 0.0f);
                if (residual) yf = res;  // in place, as the engine does
                o.kind = xnor::OutKind::affine;
                o.data = yf.data();
                o.mul = mul.data();
                o.bias = bias.data();
                o.residual = residual ? yf.data() : nullptr;
                if (sign_bits) {
                    sb.assign(pix_out * cwo, 0);
                    o.sign_bits = sb.data();
                }
            } else {
                yb.assign(pix_out * cwo, 0);
                o.kind = xnor::OutKind::bits;
                o.data = yb.data();
                o.thr = thr.data();
                o.flip = flip.data();
            }
            plan.run(xp.data(), n, h, wd, o, t, isa);
            if (kind == 0) w.put(yi);
            else if (kind == 1) {
                w.put(yf);
                if (sign_bits) w.put(sb);
            } else {
                w.put(yb);
            }
        }
}

void pack_job(Reader& r, Writer& w, const std::vector<xnor::Isa>& isas, const std::vector<int>& threads) {
    const std::vector<int32_t> q = r.take<int32_t>(3);
    const int pixels = q[0], stride = q[1], C = q[2];
    if (pixels <= 0 || C <= 0 || stride < C) throw std::runtime_error("bad pack job");
    const std::vector<float> x = r.take<float>(static_cast<std::size_t>(pixels) * stride);
    const std::vector<float> t = r.take<float>(C);
    const std::vector<uint8_t> flip = r.take<uint8_t>(C);
    for (xnor::Isa isa : isas)
        for (int th : threads) {
            w.put(pack_rows(x.data(), stride, pixels, C, t.data(), flip.data(), isa, th));
            if (stride == C) w.put(pack_rows(x.data(), stride, pixels, C, nullptr, nullptr, isa, th));
        }
}

void fconv_job(Reader& r, Writer& w, const std::vector<xnor::Isa>& isas, const std::vector<int>& threads) {
    const std::vector<int32_t> q = r.take<int32_t>(9);
    const int n = q[0], hp = q[1], wp = q[2], c = q[3], kh = q[4], kw = q[5], s = q[6], co = q[7];
    if (n <= 0 || c <= 0 || kh <= 0 || kw <= 0 || s <= 0 || co <= 0 || hp < kh || wp < kw)
        throw std::runtime_error("bad float conv job");
    const std::vector<float> x = r.take<float>(static_cast<std::size_t>(n) * hp * wp * c);
    const std::vector<float> wt = r.take<float>(static_cast<std::size_t>(kh) * kw * c * co);
    const std::vector<float> b = r.take<float>(co);
    const std::size_t ho = (hp - kh) / s + 1, wo = (wp - kw) / s + 1;
    for (xnor::Isa isa : isas)
        for (int t : threads) {
            std::vector<float> y(n * ho * wo * co, -7.0f);
            xnor::conv_float(x.data(), n, hp, wp, c, kh, kw, s, wt.data(), co, b.data(), q[8] != 0, y.data(), t, isa);
            w.put(y);
        }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 5) {
        std::fprintf(stderr, "usage: %s JOBS.bin RESULTS.bin ISAS THREADS\n", argv[0]);
        return 2;
    }
    try {
        std::vector<xnor::Isa> isas;
        for (const std::string& s : split(argv[3])) isas.push_back(xnor::parse_isa(s));
        std::vector<int> threads;
        for (const std::string& s : split(argv[4])) threads.push_back(std::stoi(s));
        Reader r;
        FILE* f = std::fopen(argv[1], "rb");
        if (!f) throw std::runtime_error(std::string("cannot open ") + argv[1]);
        unsigned char buf[65536];
        std::size_t k;
        while ((k = std::fread(buf, 1, sizeof buf, f)) > 0) r.b.insert(r.b.end(), buf, buf + k);
        std::fclose(f);
        FILE* o = std::fopen(argv[2], "wb");
        if (!o) throw std::runtime_error(std::string("cannot create ") + argv[2]);
        Writer w{o};
        int jobs = 0;
        while (!r.done()) {
            const uint32_t kind = r.one<uint32_t>();
            if (kind == 1) conv_job(r, w, isas, threads);
            else if (kind == 2) pack_job(r, w, isas, threads);
            else if (kind == 3) fconv_job(r, w, isas, threads);
            else throw std::runtime_error("unknown job kind " + std::to_string(kind));
            ++jobs;
        }
        if (std::fclose(o) != 0) throw std::runtime_error("cannot write the results");
        std::printf("xnor_check: %d jobs, isa %s (best %s)\n", jobs, argv[3], xnor::isa_name(xnor::best_isa()));
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "xnor_check: %s\n", e.what());
        return 1;
    }
}
