// Load-time validation and execution of the engine's ops 40..43 (engine_ops2.h). As in
// engine.cpp, nothing in the file is trusted: every parameter is range-checked before any
// arithmetic on it (so none can overflow), every shape is recomputed from the inputs, every
// weight reference is checked against the blob, and unused parameters must be 0.
#include "engine_ops2.h"

#include <algorithm>
#include <cstring>
#include <memory>

#include "conv_grouped.h"
#include "engine_check.h"
#include "fgrouped.h"
#include "fractalc_rt.h"

namespace frt {

namespace {

constexpr int kMaxCh = 1 << 16, kMaxK = 64;

int words(int c) { return (c + 63) / 64; }

// the output size of a (dilated) kernel with symmetric padding; the caller checked it fits
int out_size(int in, int k, int s, int pad, int d) { return (in + 2 * pad - d * (k - 1) - 1) / s + 1; }

}  // namespace

XconvParams xconv_params(OpCheck& chk, bool grouped) {
    XconvParams q;
    q.ci = chk.in_range(0, 1, kMaxCh), q.co = chk.in_range(1, 1, kMaxCh), q.kh = chk.in_range(2, 1, kMaxK);
    q.kw = chk.in_range(3, 1, kMaxK), q.stride = chk.in_range(4, 1, kMaxK), q.pad = chk.in_range(5, 0, kMaxK);
    q.zero = chk.flag(6);
    q.kind = chk.in_range(7, 1, 2);
    q.residual = chk.flag(8);
    if (grouped) q.groups = chk.in_range(9, 1, kMaxCh), q.dilation = chk.in_range(10, 1, kMaxK);
    return q;
}

const uint64_t* validate_xconv(OpCheck& chk, const XconvParams& q, const std::vector<Value>& vals) {
    const OpRec& r = chk.op.r;
    const Value& x = vals[r.in[0]];
    const Value& y = vals[r.out];
    const int co = q.co, d = q.dilation;
    chk(q.ci % q.groups == 0 && co % q.groups == 0, "groups must divide in_channels and out_channels");
    chk(r.n_in == (q.residual ? 2u : 1u), "input count does not match the residual flag");
    chk(x.kind == kBits && x.c == q.ci, "input must be bits with in_channels channels");
    const int ekh = d * (q.kh - 1) + 1, ekw = d * (q.kw - 1) + 1;  // <= 4033
    chk(x.h + 2 * q.pad >= ekh && x.w + 2 * q.pad >= ekw,
        std::string(d > 1 ? "dilated " : "") + "kernel larger than the padded input");
    const int ho = out_size(x.h, q.kh, q.stride, q.pad, d), wo = out_size(x.w, q.kw, q.stride, q.pad, d);
    const int cg = q.ci / q.groups;
    const int64_t K = int64_t{q.kh} * q.kw * cg;
    const uint64_t wwords = uint64_t(co) * q.kh * q.kw * words(cg);
    const auto* wt = static_cast<const uint64_t*>(chk.wref(0, wwords * 8));
    if (cg % 64)
        for (uint64_t i = words(cg) - 1; i < wwords; i += words(cg))
            chk((wt[i] >> (cg % 64)) == 0, "weights have bits set above the (group's) input channels");
    if (q.kind == 1) {
        chk(K <= (int64_t{1} << 24), "kernel x channels above 2^24 for a float output");
        chk.shape(y, kF4, co, ho, wo, "output");
        if (q.residual) chk.shape(vals[r.in[1]], kF4, co, ho, wo, "residual");
        if (r.out2 != kNone) chk.shape(vals[r.out2], kBits, co, ho, wo, "sign bits");
    } else {
        chk(!q.residual, "a residual needs a float output");
        chk(r.out2 == kNone, "no second output allowed");
        chk.shape(y, kBits, co, ho, wo, "output");
    }
    chk.wref(1, uint64_t(co) * 4);
    chk.wref(2, uint64_t(co) * 4);
    if (q.kind == 2) {
        const auto* fl = static_cast<const int32_t*>(chk.op.w[2]);
        for (int c = 0; c < co; ++c) chk(fl[c] == 0 || fl[c] == 1, "flip values must be 0 or 1");
    }
    return wt;
}

const char* op2_name(uint32_t t) {
    switch (t) {
        case OP_GXCONV: return "XnorConv";
        case OP_GCONV: return "Conv";
        case OP_MAX: return "Max";
        case OP_GMP: return "GlobalMaxPool";
        default: return "?";
    }
}

int validate_op2(OpCheck& chk, const std::vector<Value>& vals) {
    Op& op = chk.op;
    const OpRec& r = op.r;
    const int32_t* p = r.p;
    const Value& x = vals[r.in[0]];
    const Value& y = vals[r.out];
    switch (r.type) {
        case OP_GXCONV: {  // p: c_in, c_out, kh, kw, stride, pad, zero_padding, out_kind, residual, groups, dilation
            const XconvParams q = xconv_params(chk, true);
            const bool zero = q.zero;
            const uint64_t* wt = validate_xconv(chk, q, vals);
            chk.nw = 3;
            const int groups = q.groups, dil = q.dilation, kind = q.kind;
            const bool res = q.residual;
            op.aux = std::make_shared<xnor::GroupedConvPlan>(wt, q.co, q.kh, q.kw, q.ci, groups, q.stride, q.pad, dil,
                                                             zero);
            op.kind = std::string("XnorConv(") + (groups > 1 ? "grouped" : "") + (groups > 1 && dil > 1 ? "," : "") +
                      (dil > 1 ? "dilated" : "") + (groups == 1 && dil == 1 ? "plain" : "") + ")";
            if (res) op.kind += "+Add";
            if (r.out2 != kNone) op.kind += "+PackBits";
            if (kind == 2) op.kind += "(bits)";
            break;
        }
        case OP_GCONV: {  // p: c_in, c_out, kh, kw, stride, pad, relu, groups, dilation
            const int ci = chk.in_range(0, 1, kMaxCh), co = chk.in_range(1, 1, kMaxCh), kh = chk.in_range(2, 1, kMaxK),
                      kw = chk.in_range(3, 1, kMaxK), s = chk.in_range(4, 1, kMaxK), pad = chk.in_range(5, 0, kMaxK);
            const bool relu = chk.flag(6);
            const int groups = chk.in_range(7, 1, kMaxCh), dil = chk.in_range(8, 1, kMaxK);
            chk(ci % groups == 0 && co % groups == 0, "groups must divide in_channels and out_channels");
            chk(r.n_in == 1 && x.kind == kF4 && x.c == ci, "needs one 4-D float input with in_channels");
            chk.no_out2();
            const int ekh = dil * (kh - 1) + 1, ekw = dil * (kw - 1) + 1;
            chk(x.h + 2 * pad >= ekh && x.w + 2 * pad >= ekw, "dilated kernel larger than the padded input");
            chk.shape(y, kF4, co, out_size(x.h, kh, s, pad, dil), out_size(x.w, kw, s, pad, dil), "output");
            chk.wref(0, uint64_t(kh) * kw * (ci / groups) * co * 4);
            chk.wref(1, uint64_t(co) * 4);
            op.kind = std::string(groups == ci && groups == co ? "DepthwiseConv" : groups > 1 ? "GroupedConv" : "Conv") +
                      (dil > 1 ? "(dilated)" : "") + (relu ? "+Relu" : "");
            break;
        }
        case OP_MAX:
            chk(x.kind != kBits, "needs float inputs");
            chk.no_out2();
            for (uint32_t k = 1; k < r.n_in; ++k) chk.shape(vals[r.in[k]], x.kind, x.c, x.h, x.w, "an input");
            chk.shape(y, x.kind, x.c, x.h, x.w, "output");
            break;
        case OP_GMP:
            chk(r.n_in == 1 && x.kind == kF4, "needs one 4-D float input");
            chk.no_out2();
            chk.shape(y, kF4, x.c, 1, 1, "output");
            break;
        default: chk(false, "unknown op type " + std::to_string(r.type));
    }
    for (int k = chk.used_p; k < kMaxP; ++k) chk(p[k] == 0, "unused parameters must be 0");
    return chk.nw;
}

void run_op2(const Op& op, const std::vector<Value>& vals, uint8_t* arena, const std::vector<std::size_t>& val_off,
             int n, int threads, xnor::Isa isa) {
    const OpRec& r = op.r;
    auto F = [&](uint32_t v) { return reinterpret_cast<float*>(arena + val_off[v]); };
    auto U = [&](uint32_t v) { return reinterpret_cast<uint64_t*>(arena + val_off[v]); };
    const Value& x = vals[r.in[0]];
    const Value& y = vals[r.out];
    const std::size_t N = static_cast<std::size_t>(n);
    switch (r.type) {
        case OP_GXCONV: {
            xnor::Output o;
            if (r.p[7] == 1) {
                o.kind = xnor::OutKind::affine;
                o.data = F(r.out);
                o.mul = static_cast<const float*>(op.w[1]);
                o.bias = static_cast<const float*>(op.w[2]);
                if (r.p[8]) o.residual = F(r.in[1]);
                if (r.out2 != kNone) {
                    std::memset(U(r.out2), 0, vals[r.out2].bytes * N);  // the epilogue ORs sign bits in
                    o.sign_bits = U(r.out2);
                }
            } else {
                o.kind = xnor::OutKind::bits;
                std::memset(U(r.out), 0, y.bytes * N);
                o.data = U(r.out);
                o.thr = static_cast<const int32_t*>(op.w[1]);
                o.flip = static_cast<const int32_t*>(op.w[2]);
            }
            static_cast<const xnor::GroupedConvPlan*>(op.aux.get())->run(U(r.in[0]), n, x.h, x.w, o, threads, isa);
            break;
        }
        case OP_GCONV:
            xnor::conv_grouped_float(F(r.in[0]), n, x.h, x.w, x.c, r.p[2], r.p[3], r.p[4], r.p[5], r.p[8], r.p[7],
                                     static_cast<const float*>(op.w[0]), r.p[1], static_cast<const float*>(op.w[1]),
                                     r.p[6] != 0, y.h, y.w, F(r.out), threads);
            break;
        case OP_MAX: {
            const float* xs[kMaxIn];
            for (uint32_t k = 0; k < r.n_in; ++k) xs[k] = F(r.in[k]);
            xnor::max_n(xs, static_cast<int>(r.n_in), x.elems * N, F(r.out), threads);
            break;
        }
        case OP_GMP:
            xnor::global_max_pool(F(r.in[0]), n, static_cast<std::size_t>(x.h) * x.w, x.c, F(r.out), threads);
            break;
        default: break;  // validate_op2 admits no other type
    }
}

}  // namespace frt
