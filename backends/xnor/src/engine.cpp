// The standalone engine (engine.h): load-time validation of the model file, the arena plan,
// and the executor. Nothing here trusts the file: every count, index, shape, parameter and
// weight reference is checked before any kernel sees it, and the checks are written so that
// no arithmetic on file values can overflow (every quantity is bounded first).
#include "engine.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

#include "fkernels.h"
#include "fractalc_rt.h"
#include "join.h"
#include "pointwise.h"
#include "chanwise.h"
#include "engine_check.h"
#include "engine_ops2.h"

namespace frt {

using xnor::Isa;

uint32_t crc32(const uint8_t* p, std::size_t n) {
    static const auto table = [] {
        std::vector<uint32_t> t(256);
        for (uint32_t i = 0; i < 256; ++i) {
            uint32_t c = i;
            for (int k = 0; k < 8; ++k) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[i] = c;
        }
        return t;
    }();
    uint32_t c = 0xffffffffu;
    for (std::size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

namespace {

constexpr int64_t kMaxDim = 1 << 20, kMaxElems = int64_t{1} << 28, kMaxCh = 1 << 16;
constexpr int kMaxK = 64;  // kernel sizes, strides and pads of any op
constexpr uint32_t kMaxOps = 1u << 20, kMaxValues = 1u << 21;

[[noreturn]] void fail(const std::string& m) { throw Error(FRT_ERR_FORMAT, m); }
void need(bool ok, const std::string& m) {
    if (!ok) fail(m);
}

const char* op_name(uint32_t t) {
    switch (t) {
        case OP_XCONV: return "XnorConv";
        case OP_PACK: return "PackBits";
        case OP_UNPACK: return "UnpackBits";
        case OP_JOIN: return "Join";
        case OP_AFFINE: return "Affine";
        case OP_POOL: return "Pool";
        case OP_GAP: return "GlobalAveragePool";
        case OP_FLATTEN: return "Flatten";
        case OP_CONV: return "Conv";
        case OP_GEMM: return "Gemm";
        case OP_CONCAT: return "Concat";
        case OP_SLICE: return "Slice";
        case OP_PWCONV: return "Conv1x1";
        case OP_PRELU: return "PReLU";
        case OP_SIGMOID: return "Sigmoid";
        case OP_MUL: return "Mul";
        default: return op2_name(t);  // engine_ops2.cpp
    }
}

int words(int c) { return (c + 63) / 64; }
int out_size(int in, int k, int s, int p0, int p1) { return (in + p0 + p1 - k) / s + 1; }

}  // namespace

Engine::Engine(Bytes bytes) : bytes_(std::move(bytes)) {
    const uint8_t* d = bytes_.data;
    const std::size_t size = bytes_.size;
    need(d != nullptr && size >= sizeof(FileHeader), "file too short for a fractalc engine header");
    FileHeader h;
    std::memcpy(&h, d, sizeof h);
    need(std::memcmp(h.magic, "FRCTLRT\0", 8) == 0, "not a fractalc engine file (bad magic)");
    need(h.version == kVersion, "unsupported engine file version " + std::to_string(h.version) + " (this engine reads " +
                                    std::to_string(kVersion) + ")");
    need(h.header_bytes == sizeof(FileHeader) && h.reserved == 0, "bad header size or reserved field");
    need(h.file_bytes == size, "file size " + std::to_string(size) + " does not match its header (" +
                                   std::to_string(h.file_bytes) + "): truncated or padded");
    need(crc32(d + sizeof h, size - sizeof h) == h.crc32, "checksum mismatch: the file is corrupted");
    need(h.n_values >= 1 && h.n_values <= kMaxValues && h.n_ops >= 1 && h.n_ops <= kMaxOps, "bad value or op count");
    auto section = [&](uint64_t off, uint64_t bytes, const char* what) {
        need(off >= sizeof h && off <= size && bytes <= size - off, std::string(what) + " section out of the file");
    };
    section(h.values_off, uint64_t{h.n_values} * sizeof(ValueRec), "value");
    section(h.ops_off, uint64_t{h.n_ops} * sizeof(OpRec), "op");
    section(h.blob_off, h.blob_bytes, "weight");
    section(h.meta_off, h.meta_bytes, "metadata");
    need(h.values_off % 8 == 0 && h.ops_off % 8 == 0 && h.blob_off % 64 == 0, "misaligned section");
    need(h.meta_bytes <= (1u << 20), "metadata too large");
    meta.assign(reinterpret_cast<const char*>(d + h.meta_off), h.meta_bytes);
    const uint8_t* blob = d + h.blob_off;

    vals.resize(h.n_values);
    for (uint32_t i = 0; i < h.n_values; ++i) {
        ValueRec r;
        std::memcpy(&r, d + h.values_off + i * sizeof(ValueRec), sizeof r);
        const std::string who = "value " + std::to_string(i);
        need(r.kind <= kFlat, who + ": unknown kind");
        need(r.c >= 1 && r.h >= 1 && r.w >= 1 && r.c <= kMaxDim && r.h <= kMaxDim && r.w <= kMaxDim,
             who + ": dimensions must be in 1..2^20");
        need(r.kind != kFlat || (r.h == 1 && r.w == 1), who + ": a flat value is (C, 1, 1)");
        const int64_t e = int64_t{r.c} * r.h * r.w;  // < 2^60
        need(e <= kMaxElems, who + ": more than 2^28 elements per image");
        Value& v = vals[i];
        v.kind = r.kind;
        v.c = r.c, v.h = r.h, v.w = r.w;
        v.elems = r.kind == kBits ? static_cast<std::size_t>(r.h) * r.w * words(r.c) : static_cast<std::size_t>(e);
        v.bytes = r.kind == kBits ? v.elems * 8 : v.elems * 4;
    }
    need(vals[0].kind == kF4, "value 0 (the input) must be a float (C, H, W) value");
    need(h.output_value < h.n_values && h.output_value != 0, "bad output value");
    output = h.output_value;
    need(vals[output].kind != kBits, "the output must be a float value");

    std::vector<char> defined(h.n_values, 0);
    defined[0] = 1;
    ops.resize(h.n_ops);
    for (uint32_t i = 0; i < h.n_ops; ++i) {
        Op& op = ops[i];
        OpRec& r = op.r;
        std::memcpy(&r, d + h.ops_off + i * sizeof(OpRec), sizeof r);
        op.kind = op_name(r.type);
        const std::string who = "op " + std::to_string(i) + " (" + op.kind + ")";
        OpCheck chk{op, blob, h.blob_bytes, who};  // chk(ok, what) and the checks of engine_check.h
        chk((r.type >= OP_XCONV && r.type <= OP_PWCONV) || (r.type >= OP_PRELU && r.type <= OP_MUL) || is_op2(r.type),
            "unknown op type " + std::to_string(r.type));
        chk(r.n_in >= 1 && r.n_in <= kMaxIn, "bad input count");
        for (uint32_t k = 0; k < r.n_in; ++k)
            chk(r.in[k] < h.n_values && defined[r.in[k]], "input " + std::to_string(k) + " is not defined before it");
        for (uint32_t k = r.n_in; k < kMaxIn; ++k) chk(r.in[k] == kNone, "unused input slots must be empty");
        chk(r.out < h.n_values && !defined[r.out], "output missing or already defined");
        defined[r.out] = 1;
        if (r.out2 != kNone) {
            chk(r.out2 < h.n_values && !defined[r.out2], "second output already defined");
            defined[r.out2] = 1;
        }
        const Value& x = vals[r.in[0]];
        const Value& y = vals[r.out];
        const int32_t* p = r.p;
        switch (r.type) {
            case OP_XCONV: {  // the checks it shares with the grouped / dilated conv: validate_xconv
                const XconvParams q = xconv_params(chk, false);
                const uint64_t* wt = validate_xconv(chk, q, vals);
                chk.nw = 3;
                op.conv = std::make_unique<xnor::ConvPlan>(wt, q.co, q.kh, q.kw, q.ci, q.stride, q.pad, q.zero);
                break;
            }
            case OP_PACK: {
                chk(r.n_in == 1 && x.kind == kF4, "needs one float input");
                chk.no_out2();
                chk.shape(y, kBits, x.c, x.h, x.w, "output");
                if (chk.flag(0)) {
                    chk.wref(0, uint64_t(x.c) * 4);
                    const auto* fl = static_cast<const uint8_t*>(chk.wref(1, uint64_t(x.c)));
                    for (int c = 0; c < x.c; ++c) chk(fl[c] <= 1, "flip values must be 0 or 1");
                }
                break;
            }
            case OP_UNPACK:
                chk(r.n_in == 1 && x.kind == kBits, "needs one bits input");
                chk.no_out2();
                chk.shape(y, kF4, x.c, x.h, x.w, "output");
                break;
            case OP_JOIN: {
                chk(x.kind != kBits, "needs float inputs");
                for (uint32_t k = 1; k < r.n_in; ++k)
                    chk.shape(vals[r.in[k]], x.kind, x.c, x.h, x.w, "an input");
                chk.shape(y, x.kind, x.c, x.h, x.w, "output");
                float dv;
                std::memcpy(&dv, &p[0], 4);
                chk(std::isfinite(dv) && dv != 0.0f, "divisor must be finite and nonzero");
                if (r.out2 != kNone) {
                    chk(x.kind == kF4, "sign bits need a 4-D value");
                    chk.shape(vals[r.out2], kBits, x.c, x.h, x.w, "sign bits");
                }
                break;
            }
            case OP_AFFINE:
                chk(r.n_in == 1 && x.kind != kBits, "needs one float input");
                chk.no_out2();
                chk.shape(y, x.kind, x.c, x.h, x.w, "output");
                if (chk.flag(0)) {
                    chk.wref(0, uint64_t(x.c) * 4);
                    chk.wref(1, uint64_t(x.c) * 4);
                }
                chk.flag(1);
                break;
            case OP_POOL: {
                chk(r.n_in == 1 && x.kind == kF4, "needs one 4-D float input");
                chk.no_out2();
                chk.in_range(0, 1, 2);
                const int kh = chk.in_range(1, 1, kMaxK), kw = chk.in_range(2, 1, kMaxK);
                const int sh = chk.in_range(3, 1, kMaxK), sw = chk.in_range(4, 1, kMaxK);
                const int pt = chk.in_range(5, 0, kh - 1), pl = chk.in_range(6, 0, kw - 1), pb = chk.in_range(7, 0, kh - 1),
                          pr = chk.in_range(8, 0, kw - 1);
                chk(x.h + pt + pb >= kh && x.w + pl + pr >= kw, "window larger than the padded input");
                chk.shape(y, kF4, x.c, out_size(x.h, kh, sh, pt, pb), out_size(x.w, kw, sw, pl, pr), "output");
                break;
            }
            case OP_GAP:
                chk(r.n_in == 1 && x.kind == kF4, "needs one 4-D float input");
                chk.no_out2();
                chk.shape(y, kF4, x.c, 1, 1, "output");
                break;
            case OP_FLATTEN:
                chk(r.n_in == 1 && x.kind == kF4, "needs one 4-D float input");
                chk.no_out2();
                chk(int64_t{x.c} * x.h * x.w <= kMaxDim, "too many features");
                chk.shape(y, kFlat, x.c * x.h * x.w, 1, 1, "output");
                break;
            case OP_CONV: {
                const int ci = chk.in_range(0, 1, kMaxCh), co = chk.in_range(1, 1, kMaxCh), kh = chk.in_range(2, 1, kMaxK),
                          kw = chk.in_range(3, 1, kMaxK), s = chk.in_range(4, 1, kMaxK), pad = chk.in_range(5, 0, kMaxK);
                chk.flag(6);
                chk(r.n_in == 1 && x.kind == kF4 && x.c == ci, "needs one 4-D float input with in_channels");
                chk.no_out2();
                chk(x.h + 2 * pad >= kh && x.w + 2 * pad >= kw, "kernel larger than the padded input");
                chk.shape(y, kF4, co, out_size(x.h, kh, s, pad, pad), out_size(x.w, kw, s, pad, pad), "output");
                chk.wref(0, uint64_t(kh) * kw * ci * co * 4);
                chk.wref(1, uint64_t(co) * 4);
                if (pad) {
                    const uint64_t e = uint64_t(x.h + 2 * pad) * (x.w + 2 * pad) * ci;
                    chk(e <= uint64_t(kMaxElems), "padded input too large");
                    op.temp_bytes = e * 4;
                }
                break;
            }
            case OP_GEMM: {
                const int K = chk.in_range(0, 1, kMaxDim), co = chk.in_range(1, 1, kMaxDim);
                chk(r.n_in == 1 && x.kind == kFlat && x.c == K, "needs one flat input of K features");
                chk.no_out2();
                chk.shape(y, kFlat, co, 1, 1, "output");
                chk(uint64_t(K) * co <= uint64_t(kMaxElems), "weights too large");
                chk.wref(0, uint64_t(K) * co * 4);
                chk.wref(1, uint64_t(co) * 4);
                break;
            }
            case OP_PWCONV: {
                const int ci = chk.in_range(0, 1, kMaxCh), co = chk.in_range(1, 1, kMaxCh), pool = chk.in_range(2, 0, 2);
                chk.flag(3);
                const bool pre = chk.flag(4);
                chk(r.n_in == 1 && x.kind == kF4 && x.c == ci, "needs one 4-D float input with in_channels");
                chk.no_out2();
                chk(pool == 0 || (x.h >= 2 && x.w >= 2), "pooling needs 2x2 pixels");
                chk.shape(y, kF4, co, pool ? x.h / 2 : x.h, pool ? x.w / 2 : x.w, "output");
                chk.wref(0, uint64_t(ci) * co * 4);
                chk.wref(1, uint64_t(co) * 4);
                if (pre) {
                    chk.wref(2, uint64_t(ci) * 4);
                    chk.wref(3, uint64_t(ci) * 4);
                }
                break;
            }
            case OP_CONCAT: {
                chk(r.n_in >= 2 && x.kind == kF4, "needs two or more 4-D float inputs");
                chk.no_out2();
                int64_t c = 0;
                for (uint32_t k = 0; k < r.n_in; ++k) {
                    const Value& v = vals[r.in[k]];
                    chk(v.kind == kF4 && v.h == x.h && v.w == x.w, "inputs must share height and width");
                    c += v.c;
                }
                chk(c <= kMaxDim, "too many channels");
                chk.shape(y, kF4, static_cast<int>(c), x.h, x.w, "output");
                break;
            }
            case OP_SLICE: {
                chk(r.n_in == 1 && x.kind == kF4, "needs one 4-D float input");
                chk.no_out2();
                const int a = chk.in_range(0, 0, x.c - 1), b = chk.in_range(1, a + 1, x.c);
                chk.shape(y, kF4, b - a, x.h, x.w, "output");
                break;
            }
            case OP_PRELU: {  // weights: slope, [shift_in if p0], [shift_out if p1]
                chk(r.n_in == 1 && x.kind != kBits, "needs one float input");
                chk.no_out2();
                chk.shape(y, x.kind, x.c, x.h, x.w, "output");
                const int k = 1 + chk.flag(0);
                chk.wref(0, uint64_t(x.c) * 4);
                if (k == 2) chk.wref(1, uint64_t(x.c) * 4);
                if (chk.flag(1)) chk.wref(k, uint64_t(x.c) * 4);
                if (p[0] || p[1]) op.kind = "RPReLU";
                break;
            }
            case OP_SIGMOID:
                chk(r.n_in == 1 && x.kind != kBits, "needs one float input");
                chk.no_out2();
                chk.shape(y, x.kind, x.c, x.h, x.w, "output");
                break;
            case OP_MUL: {  // p0: the second input is one C-vector per image (Cx1x1)
                chk(r.n_in == 2 && x.kind != kBits, "needs two float inputs");
                chk.no_out2();
                if (chk.flag(0))
                    chk.shape(vals[r.in[1]], kF4, x.c, 1, 1, "the per-channel input");
                else
                    chk.shape(vals[r.in[1]], x.kind, x.c, x.h, x.w, "the second input");
                chk(!p[0] || x.kind == kF4, "a per-channel product needs a 4-D input");
                chk.shape(y, x.kind, x.c, x.h, x.w, "output");
                break;
            }
            default: chk.nw = validate_op2(chk, vals); break;  // engine_ops2.cpp
        }
        if (r.type == OP_XCONV) {
            if (r.p[8]) op.kind += "+Add";
            if (r.out2 != kNone) op.kind += "+PackBits";
            if (r.p[7] == 2) op.kind += "(bits)";
        } else if (r.type == OP_JOIN) {
            float dv;
            std::memcpy(&dv, &r.p[0], 4);
            op.kind = r.n_in == 1 ? "Div" : dv == 1.0f ? "Add" : "MeanJoin";
            if (r.out2 != kNone) op.kind += "+PackBits";
        } else if (r.type == OP_AFFINE) {
            op.kind = r.p[0] ? (r.p[1] ? "BatchNorm+Relu" : "BatchNorm") : "Relu";
        } else if (r.type == OP_POOL) {
            op.kind = r.p[0] == 2 ? "MaxPool" : "AveragePool";
        } else if (r.type == OP_PWCONV) {
            op.kind = std::string(r.p[4] ? "BatchNorm+" : "") + (r.p[2] == 1 ? "AvgPool+" : r.p[2] == 2 ? "MaxPool+" : "") +
                      (r.p[3] ? "Relu+" : "") + "Conv1x1";
        } else if (r.type == OP_CONV) {
            op.kind = r.p[2] == 1 && r.p[3] == 1 ? "Conv1x1" : "Conv";
            if (r.p[6]) op.kind += "+Relu";
        }
        for (int k = chk.nw; k < kMaxW; ++k) chk(r.w[k].off == 0 && r.w[k].bytes == 0, "unused weight slots must be empty");
        for (int k = 0; k < kMaxW; ++k)
            if (!op.w[k]) chk(r.w[k].off == 0 && r.w[k].bytes == 0, "unused weight slots must be empty");
    }
    need(defined[output], "the output value is not computed by any op");
    // A float conv whose output only feeds a pool (the stem's Conv -> MaxPool) runs with the pool
    // fused (conv_pool_float: the conv output is never stored; the same bytes).
    {
        std::vector<int> readers(vals.size(), 0);
        std::vector<long> reader(vals.size(), -1);
        for (std::size_t i = 0; i < ops.size(); ++i)
            for (uint32_t k = 0; k < ops[i].r.n_in; ++k) {
                ++readers[ops[i].r.in[k]];
                reader[ops[i].r.in[k]] = static_cast<long>(i);
            }
        for (std::size_t i = 0; i < ops.size(); ++i) {
            const OpRec& r = ops[i].r;
            if (r.type != OP_CONV || r.out == output || readers[r.out] != 1) continue;
            Op& pool = ops[reader[r.out]];
            if (pool.r.type != OP_POOL || pool.r.n_in != 1) continue;
            ops[i].fused_pool = reader[r.out];
            pool.fused = true;
            ops[i].kind += "+" + pool.kind;
            // and a PackBits of the pool's output (Bi-Real's first block input): packed in the
            // same pass (at batch 8 the separate op re-read 6.4 MB)
            for (std::size_t k = reader[r.out] + 1; k < ops.size(); ++k)
                if (ops[k].r.type == OP_PACK && ops[k].r.in[0] == pool.r.out) {
                    ops[i].fused_pack = static_cast<long>(k);
                    ops[k].fused = true;
                    ops[i].kind += "+PackBits";
                    break;
                }
        }
        // A padded float conv that alone reads the input (an RGB stem) gets it transposed straight
        // into its zero-padded buffer: no NHWC copy of the input, no second pass to pad it.
        // (The sole reader of the input is the first op: nothing else is defined before it.)
        if (readers[0] == 1 && reader[0] == 0 && ops[0].r.type == OP_CONV && ops[0].temp_bytes) padded_input_ = 0;
    }
    find_views();  // after the fusions: a fused op's values are never views
    // The AVX-512 float conv reads its weights in contiguous 32-channel blocks (re-laid here).
    if (xnor::cpu_supports(Isa::avx512))
        for (Op& op : ops) {
            const int32_t* p = op.r.p;
            if (op.r.type == OP_CONV)
                op.wblock = xnor::block_weights(static_cast<const float*>(op.w[0]),
                                                static_cast<std::size_t>(p[2]) * p[3] * p[0], p[1]);
            else if (op.r.type == OP_GEMM)
                op.wblock = xnor::block_weights(static_cast<const float*>(op.w[0]), static_cast<std::size_t>(p[0]), p[1]);
        }
    // The binary kernel's tile for this CPU is chosen (measured or read from the cache file)
    // here, at load, rather than in the first call.
    for (const Op& op : ops)
        if (op.conv) {
            xnor::conv_tile(xnor::best_isa());
            break;
        }
}


namespace {

struct PackJob {
    const float* x;
    std::size_t stride;  // floats from one pixel to the next (more than C: a slice of wider rows)
    std::size_t pixels;
    int C;
    const float* t;
    const uint8_t* flip;
    uint64_t* out;
    Isa isa;
};

void pack_work(void* ctx, int part, int nparts) {
    auto& j = *static_cast<PackJob*>(ctx);
    const std::size_t p0 = j.pixels * part / nparts, p1 = j.pixels * (part + 1) / nparts;
    xnor::pack_nhwc_threshold_rows(j.x, j.stride, p0, p1, j.C, j.t, j.flip, j.out, j.isa);
}

// Copies one Concat input into its channel slice of the output rows (both strided).
struct CopyJob {
    const float* src;
    std::size_t src_ld;
    float* dst;
    std::size_t dst_ld, pixels, bytes;
};

void copy_work(void* ctx, int part, int nparts) {
    auto& j = *static_cast<CopyJob*>(ctx);
    const std::size_t p0 = j.pixels * part / nparts, p1 = j.pixels * (part + 1) / nparts;
    for (std::size_t q = p0; q < p1; ++q) std::memcpy(j.dst + q * j.dst_ld, j.src + q * j.src_ld, j.bytes);
}

}  // namespace

void Engine::run(const float* in, int64_t n, float* out, std::size_t out_len) {
    if (!in || !out) throw Error(FRT_ERR_ARG, "input and output must not be null");
    if (n < 1 || n > (1 << 16)) throw Error(FRT_ERR_ARG, "batch must be in 1..65536");
    const Value& ov = vals[output];
    if (out_len < ov.elems * static_cast<std::size_t>(n))
        throw Error(FRT_ERR_ARG, "output buffer too small: needs " + std::to_string(ov.elems * n) + " floats");
    const int64_t per = batch_images(n);
    plan(per);
    if (arena_cap_ < arena_size_) {
        arena_.reset();
        void* a = std::aligned_alloc(64, align64(arena_size_));
        if (!a) throw Error(FRT_ERR_MEMORY, "cannot allocate the arena (" + std::to_string(arena_size_) + " bytes)");
        arena_ = std::shared_ptr<uint8_t>(static_cast<uint8_t*>(a), [](uint8_t* q) { std::free(q); });
        arena_cap_ = arena_size_;
    }
    if (profile)
        for (Op& op : ops) op.seconds = 0;
    const std::size_t in_elems = vals[0].elems;
    for (int64_t i0 = 0; i0 < n; i0 += per)
        run_pass(in + i0 * in_elems, std::min(per, n - i0), out + i0 * ov.elems);
}

// One pass of n images (n <= the planned count: every buffer of fewer images is a prefix of
// the planned one's, so the plan holds).
void Engine::run_pass(const float* in, int64_t n, float* out) {
    const Value& ov = vals[output];
    uint8_t* A = arena_.get();
    auto F = [&](uint32_t v) { return reinterpret_cast<float*>(A + val_off_[v]); };
    auto U = [&](uint32_t v) { return reinterpret_cast<uint64_t*>(A + val_off_[v]); };
    const int T = threads;
    const int N = static_cast<int>(n);
    const Value& iv = vals[0];
    if (padded_input_ >= 0)
        xnor::nchw_to_nhwc_padded(in, N, iv.c, iv.h, iv.w, ops[padded_input_].r.p[5],
                                  reinterpret_cast<float*>(A + temp_off_[padded_input_]), T);
    else
        xnor::nchw_to_nhwc(in, N, iv.c, iv.h * iv.w, F(0), T);
    using clk = std::chrono::steady_clock;
    for (std::size_t i = 0; i < ops.size(); ++i) {
        Op& op = ops[i];
        const OpRec& r = op.r;
        const Value& x = vals[r.in[0]];
        const Value& y = vals[r.out];
        const std::size_t pix = static_cast<std::size_t>(n) * x.h * x.w;
        if (op.fused) continue;  // (its seconds stay 0)
        const auto t0 = profile ? clk::now() : clk::time_point{};
        const float* wb = op.wblock.empty() ? nullptr : op.wblock.data();
        switch (r.type) {
            case OP_XCONV: {
                xnor::Output o;
                // Bit outputs are stored as whole 32-channel halves of their words, so only an
                // odd number of halves leaves bits unwritten that must be zero.
                const bool partial_words = (r.p[1] + 31) / 32 % 2 != 0;
                if (r.p[7] == 1) {
                    o.kind = xnor::OutKind::affine;
                    o.data = F(r.out);
                    o.stride = static_cast<std::size_t>(ld[r.out]);  // wider: a slice of a Concat's buffer
                    o.mul = static_cast<const float*>(op.w[1]);
                    o.bias = static_cast<const float*>(op.w[2]);
                    if (r.p[8]) o.residual = F(r.in[1]);
                    if (r.out2 != kNone) {
                        if (partial_words) std::memset(U(r.out2), 0, vals[r.out2].bytes * n);
                        o.sign_bits = U(r.out2);
                    }
                } else {
                    o.kind = xnor::OutKind::bits;
                    if (partial_words) std::memset(U(r.out), 0, y.bytes * n);
                    o.data = U(r.out);
                    o.thr = static_cast<const int32_t*>(op.w[1]);
                    o.flip = static_cast<const int32_t*>(op.w[2]);
                }
                op.conv->run(U(r.in[0]), N, x.h, x.w, o, T, isa);
                break;
            }
            case OP_PACK: {
                PackJob j{F(r.in[0]), static_cast<std::size_t>(ld[r.in[0]]), pix, x.c, static_cast<const float*>(op.w[0]),
                          static_cast<const uint8_t*>(op.w[1]), U(r.out), isa};
                xnor::parallel_run(T, xnor::parts_for(pix, T), pack_work, &j);
                break;
            }
            case OP_UNPACK: xnor::unpack_bits(U(r.in[0]), pix, x.c, F(r.out)); break;
            case OP_JOIN: {
                const float* xs[kMaxIn];
                for (uint32_t k = 0; k < r.n_in; ++k) xs[k] = F(r.in[k]);
                float dv;
                std::memcpy(&dv, &r.p[0], 4);
                xnor::mean_join(xs, static_cast<int>(r.n_in), pix, x.c, dv, F(r.out),
                                r.out2 != kNone ? U(r.out2) : nullptr, T, isa, static_cast<std::size_t>(ld[r.out]));
                break;
            }
            case OP_AFFINE:
                xnor::affine_nhwc(F(r.in[0]), pix, x.c, r.p[0] ? static_cast<const float*>(op.w[0]) : nullptr,
                                  static_cast<const float*>(op.w[1]), r.p[1] != 0, F(r.out), T);
                break;
            case OP_POOL:
                xnor::pool_nhwc(F(r.in[0]), N, x.h, x.w, x.c, r.p[0] == 2, r.p[1], r.p[2], r.p[3], r.p[4], r.p[5],
                                r.p[6], y.h, y.w, F(r.out), T);
                break;
            case OP_GAP: xnor::global_avg_pool(F(r.in[0]), N, x.h * x.w, x.c, F(r.out)); break;
            case OP_FLATTEN:
                if (x.h * x.w == 1)
                    std::memcpy(F(r.out), F(r.in[0]), y.bytes * n);
                else
                    xnor::nhwc_to_nchw(F(r.in[0]), N, x.h * x.w, x.c, F(r.out), T);
                break;
            case OP_CONV: {
                const int pad = r.p[5];
                const float* xp = F(r.in[0]);
                if (static_cast<long>(i) == padded_input_) {
                    xp = reinterpret_cast<const float*>(A + temp_off_[i]);
                } else if (pad) {
                    float* tmp = reinterpret_cast<float*>(A + temp_off_[i]);
                    xnor::pad_nhwc(xp, N, x.h, x.w, x.c, pad, tmp, T);
                    xp = tmp;
                }
                if (op.fused_pool >= 0) {
                    const OpRec& q = ops[op.fused_pool].r;
                    const Value& pv = vals[q.out];
                    xnor::PackOut pack;
                    if (op.fused_pack >= 0) {
                        const Op& pk = ops[op.fused_pack];
                        pack = {U(pk.r.out), static_cast<const float*>(pk.w[0]), static_cast<const uint8_t*>(pk.w[1])};
                    }
                    xnor::conv_pool_float(xp, N, x.h + 2 * pad, x.w + 2 * pad, x.c, r.p[2], r.p[3], r.p[4],
                                          static_cast<const float*>(op.w[0]), r.p[1],
                                          static_cast<const float*>(op.w[1]), r.p[6] != 0, q.p[0] == 2, q.p[1],
                                          q.p[2], q.p[3], q.p[4], q.p[5], q.p[6], pv.h, pv.w, F(q.out), T, isa, wb,
                                          op.fused_pack >= 0 ? &pack : nullptr);
                    break;
                }
                xnor::conv_float(xp, N, x.h + 2 * pad, x.w + 2 * pad, x.c, r.p[2], r.p[3], r.p[4],
                                 static_cast<const float*>(op.w[0]), r.p[1], static_cast<const float*>(op.w[1]),
                                 r.p[6] != 0, F(r.out), T, isa, wb);
                break;
            }
            case OP_GEMM:  // a 1x1 conv over N one-pixel images (split over output channels too)
                xnor::conv_float(F(r.in[0]), N, 1, 1, r.p[0], 1, 1, 1, static_cast<const float*>(op.w[0]), r.p[1],
                                 static_cast<const float*>(op.w[1]), false, F(r.out), T, isa, wb);
                break;
            case OP_PWCONV: {
                xnor::PwPrologue pro;
                pro.pool = static_cast<xnor::PwPool>(r.p[2]);
                pro.relu = r.p[3] != 0;
                if (r.p[4]) {
                    pro.scale = static_cast<const float*>(op.w[2]);
                    pro.shift = static_cast<const float*>(op.w[3]);
                }
                xnor::pointwise_conv(F(r.in[0]), N, x.h, x.w, x.c, pro, static_cast<const float*>(op.w[0]), r.p[1],
                                     static_cast<const float*>(op.w[1]), F(r.out), T, isa,
                                     static_cast<std::size_t>(ld[r.out]));
                break;
            }
            case OP_CONCAT: {  // inputs written in place by their producers (find_views) are skipped
                std::size_t c0 = 0;
                for (uint32_t k = 0; k < r.n_in; ++k) {
                    const uint32_t a = r.in[k];
                    if (view_op[a] != static_cast<long>(i)) {
                        CopyJob j{F(a), static_cast<std::size_t>(ld[a]), F(r.out) + c0, static_cast<std::size_t>(ld[r.out]),
                                  pix, static_cast<std::size_t>(vals[a].c) * 4};
                        xnor::parallel_run(T, xnor::parts_for(pix * vals[a].c / 1024 + 1, T), copy_work, &j);
                    }
                    c0 += vals[a].c;
                }
                break;
            }
            case OP_SLICE: {
                const float* s = F(r.in[0]);
                float* o = F(r.out);
                for (std::size_t q = 0; q < pix; ++q)
                    std::memcpy(o + q * y.c, s + q * x.c + r.p[0], static_cast<std::size_t>(y.c) * 4);
                break;
            }
            case OP_PRELU: {
                auto wf = [&](int k) { return static_cast<const float*>(op.w[k]); };
                xnor::prelu_nhwc(F(r.in[0]), pix, x.c, r.p[0] ? wf(1) : nullptr, wf(0),
                                 r.p[1] ? wf(1 + r.p[0]) : nullptr, F(r.out), T);
                break;
            }
            case OP_SIGMOID: xnor::sigmoid_f64(F(r.in[0]), pix * x.c, F(r.out), T); break;
            case OP_MUL:
                xnor::mul_nhwc(F(r.in[0]), F(r.in[1]), N, static_cast<std::size_t>(x.h) * x.w, x.c, r.p[0] != 0,
                               F(r.out), T);
                break;
            default: run_op2(op, vals, A, val_off_, N, T, isa); break;  // engine_ops2.cpp
        }
        if (profile) op.seconds += std::chrono::duration<double>(clk::now() - t0).count();
    }
    if (ov.kind == kF4 && ov.h * ov.w > 1)
        xnor::nhwc_to_nchw(F(output), N, ov.h * ov.w, ov.c, out, T);
    else
        std::memcpy(out, F(output), ov.bytes * n);
}

}  // namespace frt
