// nanobind module fractalc.backends.xnor._xnor. The Python wrapper (../kernels.py) validates
// arguments with clear messages and allocates outputs; checks here only guard memory safety.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <optional>
#include <stdexcept>
#include <string>

#include "conv.h"
#include "conv_grouped.h"
#include "engine.h"
#include "fractalc_rt.h"
#include "join.h"
#include "pointwise.h"
#include "xnor.h"

namespace nb = nanobind;
using namespace xnor;

template <typename T, int D>
using Arr = nb::ndarray<T, nb::ndim<D>, nb::c_contig, nb::device::cpu>;

namespace {

void require(bool ok, const std::string& msg) {
    if (!ok) throw std::invalid_argument(msg);
}

struct PackNhwcJob {
    const float* x;
    std::size_t pixels;
    int C;
    uint64_t* out;
    Isa isa;
};

void pack_nhwc_work(void* ctx, int tid, int T) {
    auto& j = *static_cast<PackNhwcJob*>(ctx);
    pack_nhwc_rows(j.x, j.pixels * tid / T, j.pixels * (tid + 1) / T, j.C, j.out, j.isa);
}

struct PackThrJob {
    const float* x;
    std::size_t stride, pixels;
    int C;
    const float* t;
    const uint8_t* flip;
    uint64_t* out;
    Isa isa;
};

void pack_thr_work(void* ctx, int tid, int T) {
    auto& j = *static_cast<PackThrJob*>(ctx);
    pack_nhwc_threshold_rows(j.x, j.stride, j.pixels * tid / T, j.pixels * (tid + 1) / T, j.C, j.t, j.flip, j.out,
                             j.isa);
}

struct PackNchwJob {
    const float* x;
    std::size_t N, HW;
    int C;
    uint64_t* out;
    Isa isa;
};

void pack_nchw_work(void* ctx, int tid, int T) {
    auto& j = *static_cast<PackNchwJob*>(ctx);
    const int Cw = (j.C + 63) / 64;
    for (std::size_t n = 0; n < j.N; ++n)
        pack_nchw_image(j.x + n * j.C * j.HW, j.C, j.HW, j.HW * tid / T, j.HW * (tid + 1) / T,
                        j.out + n * j.HW * Cw, j.isa);
}

int words(int c) { return (c + 63) / 64; }

template <class P>  // ConvPlan or GroupedConvPlan
void run_checked(const P& p, Arr<const uint64_t, 4> x, const Output& o, std::size_t out_size,
                 std::size_t out_elems, int threads, const std::string& isa) {
    require(static_cast<int>(x.shape(3)) == p.cw, "input words per pixel do not match the plan");
    const int N = static_cast<int>(x.shape(0)), H = static_cast<int>(x.shape(1)),
              W = static_cast<int>(x.shape(2));
    require(N > 0 && H > 0 && W > 0, "empty input");
    require(x.shape(0) < (1u << 30) && x.shape(1) < (1u << 30) && x.shape(2) < (1u << 30),
            "input dimensions too large");
    const std::size_t need = static_cast<std::size_t>(N) * p.out_size(H, p.kh) * p.out_size(W, p.kw) * out_elems;
    require(out_size == need, "output buffer has the wrong size");
    require(threads >= 1 && threads <= 1024, "threads must be in 1..1024");
    const Isa i = parse_isa(isa);
    nb::gil_scoped_release release;
    p.run(x.data(), N, H, W, o, threads, i);
}

// The standalone engine through its C API (the same entry points C programs use): errors come
// back as codes and messages, raised here as ValueError (format, arguments) or RuntimeError.
class EngineHandle {
public:
    explicit EngineHandle(frt_model* m) : m_(m) {}
    ~EngineHandle() { frt_free(m_); }
    EngineHandle(const EngineHandle&) = delete;
    EngineHandle& operator=(const EngineHandle&) = delete;
    frt_model* get() const { return m_; }
    void check(int rc) const {
        if (rc == FRT_OK) return;
        const std::string msg = frt_last_error(m_);
        if (rc == FRT_ERR_MEMORY) throw std::bad_alloc();
        if (rc == FRT_ERR_INTERNAL) throw std::runtime_error(msg);
        throw std::invalid_argument(msg);
    }

private:
    frt_model* m_;
};

EngineHandle* engine_loaded(int rc, frt_model* m, const char* err) {
    if (rc == FRT_OK) return new EngineHandle(m);
    if (rc == FRT_ERR_IO) throw std::runtime_error(err);
    throw std::invalid_argument(err);
}

}  // namespace

namespace {

// The run methods shared by the dense and the grouped/dilated plans (same arguments, same checks).
template <class P>
void conv_runs(nb::class_<P>& c) {
    c
        .def("out_hw", [](const P& p, int H, int W) {
            return std::make_pair(p.out_size(H, p.kh), p.out_size(W, p.kw));
        })
        .def("run_int32", [](const P& p, Arr<const uint64_t, 4> x, Arr<int32_t, 4> out, int threads,
                             const std::string& isa) {
            Output o;
            o.kind = OutKind::int32;
            o.data = out.data();
            require(static_cast<int>(out.shape(3)) == p.c_out, "output channels mismatch");
            run_checked(p, x, o, out.size(), p.c_out, threads, isa);
        })
        // out: (N, Ho, Wo, C) with channels [offset, offset + C_out) written (C >= offset + C_out)
        .def("run_affine", [](const P& p, Arr<const uint64_t, 4> x, Arr<float, 4> out, int offset,
                              Arr<const float, 1> mul, Arr<const float, 1> bias,
                              std::optional<Arr<const float, 4>> residual, std::optional<Arr<uint64_t, 4>> sign_bits,
                              int threads, const std::string& isa) {
            require(offset >= 0 && static_cast<std::size_t>(offset) + p.c_out <= out.shape(3),
                    "output channels mismatch");
            require(static_cast<int>(mul.shape(0)) == p.c_out && static_cast<int>(bias.shape(0)) == p.c_out,
                    "mul and bias need one value per output channel");
            Output o;
            o.kind = OutKind::affine;
            o.data = out.data() + offset;
            o.stride = out.shape(3);
            o.mul = mul.data();
            o.bias = bias.data();
            if (residual) {
                for (int d = 0; d < 3; ++d)
                    require(residual->shape(d) == out.shape(d), "residual must have the output's shape");
                require(static_cast<int>(residual->shape(3)) == p.c_out, "residual must have the output's shape");
                o.residual = residual->data();
            }
            if (sign_bits) {
                for (int d = 0; d < 3; ++d)
                    require(sign_bits->shape(d) == out.shape(d), "sign bits must have the output's pixels");
                require(static_cast<int>(sign_bits->shape(3)) == words(p.c_out), "sign bits: words mismatch");
                o.sign_bits = sign_bits->data();
            }
            run_checked(p, x, o, out.size(), out.shape(3), threads, isa);
        }, nb::arg("x"), nb::arg("out"), nb::arg("offset"), nb::arg("mul"), nb::arg("bias"), nb::arg("residual").none(),
           nb::arg("sign_bits").none(), nb::arg("threads"), nb::arg("isa"))
        .def("run_bits", [](const P& p, Arr<const uint64_t, 4> x, Arr<uint64_t, 4> out,
                            Arr<const int32_t, 1> thr, Arr<const int32_t, 1> flip, int threads, const std::string& isa) {
            require(static_cast<int>(out.shape(3)) == words(p.c_out), "output words mismatch");
            require(static_cast<int>(thr.shape(0)) == p.c_out && static_cast<int>(flip.shape(0)) == p.c_out,
                    "threshold and flip need one value per output channel");
            Output o;
            o.kind = OutKind::bits;
            o.data = out.data();
            o.thr = thr.data();
            o.flip = flip.data();
            run_checked(p, x, o, out.size(), words(p.c_out), threads, isa);
        });
}

}  // namespace

NB_MODULE(_xnor, m) {
    m.doc() = "Native XNOR/popcount kernels (see fractalc.backends.xnor for the documented API).";

    m.def("available_isas", [] {
        std::vector<std::string> r;
        for (Isa i : {Isa::portable, Isa::avx2, Isa::avx512, Isa::neon})
            if (cpu_supports(i)) r.push_back(isa_name(i));
        return r;
    });
    m.def("best_isa", [] { return std::string(isa_name(best_isa())); });
    // The binary kernel's per-CPU register tile (conv.h): the choice and how it was made, the
    // candidates, and a process-wide override for tests and benchmarks ("" clears it).
    m.def("tile_choice", [](const std::string& isa) {
        const TileChoice c = tile_choice(parse_isa(isa));
        return std::vector<std::string>{cpu_description(), tile_name(c.tile), c.how, c.detail};
    });
    m.def("batch_budget", [] {
        std::string how;
        const std::size_t b = frt::batch_budget(&how);
        return std::make_pair(b, how);
    });
    m.def("tile_candidates", [](const std::string& isa) {
        std::vector<std::string> r;
        for (Tile t : tile_candidates(parse_isa(isa))) r.push_back(tile_name(t));
        return r;
    });
    m.def("set_tile", [](const std::string& isa, const std::string& tile) {
        Tile t;
        if (!tile.empty()) {
            for (Tile c : tile_candidates(parse_isa(isa)))
                if (tile_name(c) == tile) t = c;
            require(t != Tile{}, "the " + isa + " kernel has no " + tile + " tile");
        }
        set_tile_override(parse_isa(isa), t);
    });

    m.def("pack_nhwc", [](Arr<const float, 2> x, Arr<uint64_t, 2> out, int threads, const std::string& isa) {
        const int C = static_cast<int>(x.shape(1));
        require(C > 0 && out.shape(0) == x.shape(0) && static_cast<int>(out.shape(1)) == words(C),
                "pack_nhwc: output shape mismatch");
        require(threads >= 1 && threads <= 1024, "threads must be in 1..1024");
        PackNhwcJob j{x.data(), x.shape(0), C, out.data(), parse_isa(isa)};
        nb::gil_scoped_release release;
        parallel_run(threads, parts_for(j.pixels, threads), pack_nhwc_work, &j);
    });

    // x: (pixels, stride) rows of which the first C channels are packed (C <= stride)
    m.def("pack_nhwc_threshold", [](Arr<const float, 2> x, int C, Arr<const float, 1> t, Arr<const uint8_t, 1> flip,
                                    Arr<uint64_t, 2> out, int threads, const std::string& isa) {
        require(C > 0 && static_cast<std::size_t>(C) <= x.shape(1) && out.shape(0) == x.shape(0) &&
                    static_cast<int>(out.shape(1)) == words(C),
                "pack_nhwc_threshold: output shape mismatch");
        require(static_cast<int>(t.shape(0)) == C && static_cast<int>(flip.shape(0)) == C,
                "pack_nhwc_threshold: threshold and flip need one value per channel");
        require(threads >= 1 && threads <= 1024, "threads must be in 1..1024");
        PackThrJob j{x.data(), x.shape(1), x.shape(0), C, t.data(), flip.data(), out.data(), parse_isa(isa)};
        nb::gil_scoped_release release;
        parallel_run(threads, parts_for(j.pixels, threads), pack_thr_work, &j);
    });

    m.def("pack_nchw", [](Arr<const float, 3> x, Arr<uint64_t, 3> out, int threads, const std::string& isa) {
        const int C = static_cast<int>(x.shape(1));
        require(C > 0 && out.shape(0) == x.shape(0) && out.shape(1) == x.shape(2) &&
                    static_cast<int>(out.shape(2)) == words(C),
                "pack_nchw: output shape mismatch");
        require(threads >= 1 && threads <= 1024, "threads must be in 1..1024");
        PackNchwJob j{x.data(), x.shape(0), x.shape(2), C, out.data(), parse_isa(isa)};
        nb::gil_scoped_release release;
        parallel_run(threads, parts_for(j.HW / 64 + 1, threads), pack_nchw_work, &j);
    });

    m.def("pointwise_conv", [](Arr<const float, 4> x, int pool, std::optional<Arr<const float, 1>> scale,
                               std::optional<Arr<const float, 1>> shift, bool relu, Arr<const float, 2> w,
                               Arr<const float, 1> b, Arr<float, 4> out, int threads, const std::string& isa) {
        require(x.shape(0) < (1u << 30) && x.shape(1) < (1u << 30) && x.shape(2) < (1u << 30) &&
                    x.shape(3) < (1u << 30) && w.shape(1) < (1u << 30),
                "pointwise_conv: dimensions too large");
        const int N = static_cast<int>(x.shape(0)), H = static_cast<int>(x.shape(1)),
                  W = static_cast<int>(x.shape(2)), C = static_cast<int>(x.shape(3));
        const int Co = static_cast<int>(w.shape(1));
        require(N > 0 && H > 0 && W > 0 && C > 0 && Co > 0, "pointwise_conv: empty input or weights");
        require(static_cast<int>(w.shape(0)) == C && static_cast<int>(b.shape(0)) == Co,
                "pointwise_conv: weights must be (C_in, C_out) and bias (C_out)");
        require(pool >= 0 && pool <= 2, "pointwise_conv: pool must be 0 (none), 1 (avg) or 2 (max)");
        require(pool == 0 || (H >= 2 && W >= 2), "pointwise_conv: pooling needs at least 2x2 pixels");
        require(scale.has_value() == shift.has_value(), "pointwise_conv: scale and shift go together");
        PwPrologue pro;
        pro.pool = static_cast<PwPool>(pool);
        pro.relu = relu;
        if (scale) {
            require(static_cast<int>(scale->shape(0)) == C && static_cast<int>(shift->shape(0)) == C,
                    "pointwise_conv: scale and shift need one value per input channel");
            pro.scale = scale->data();
            pro.shift = shift->data();
        }
        const std::size_t Ho = pool ? H / 2 : H, Wo = pool ? W / 2 : W;
        require(out.shape(0) == x.shape(0) && out.shape(1) == Ho && out.shape(2) == Wo &&
                    static_cast<int>(out.shape(3)) == Co,
                "pointwise_conv: output shape mismatch");
        require(threads >= 1 && threads <= 1024, "threads must be in 1..1024");
        const Isa i = parse_isa(isa);
        nb::gil_scoped_release release;
        pointwise_conv(x.data(), N, H, W, C, pro, w.data(), Co, b.data(), out.data(), threads, i);
    }, nb::arg("x"), nb::arg("pool"), nb::arg("scale").none(), nb::arg("shift").none(), nb::arg("relu"),
       nb::arg("w"), nb::arg("b"), nb::arg("out"), nb::arg("threads"), nb::arg("isa"));

    m.def("mean_join", [](std::vector<Arr<const float, 2>> xs, float divisor, Arr<float, 2> out,
                          std::optional<Arr<uint64_t, 2>> sign_bits, int threads, const std::string& isa) {
        require(!xs.empty() && xs.size() <= 4096, "mean_join: needs 1..4096 inputs");
        const std::size_t P = out.shape(0), C = out.shape(1);
        require(P > 0 && C > 0 && C < (1u << 30), "mean_join: empty or oversized output");
        std::vector<const float*> ptrs;
        for (const auto& x : xs) {
            require(x.shape(0) == P && x.shape(1) == C, "mean_join: inputs must all have the output's shape");
            ptrs.push_back(x.data());
        }
        if (sign_bits)
            require(sign_bits->shape(0) == P && static_cast<int>(sign_bits->shape(1)) == words(static_cast<int>(C)),
                    "mean_join: sign bits shape mismatch");
        require(threads >= 1 && threads <= 1024, "threads must be in 1..1024");
        const Isa i = parse_isa(isa);
        uint64_t* bits = sign_bits ? sign_bits->data() : nullptr;
        nb::gil_scoped_release release;
        mean_join(ptrs.data(), static_cast<int>(ptrs.size()), P, static_cast<int>(C), divisor, out.data(), bits,
                  threads, i);
    }, nb::arg("xs"), nb::arg("divisor"), nb::arg("out"), nb::arg("sign_bits").none(), nb::arg("threads"),
       nb::arg("isa"));

    auto conv_plan = nb::class_<ConvPlan>(m, "ConvPlan")
        .def("__init__",
             [](ConvPlan* self, Arr<const uint64_t, 4> w, int c_in, int stride, int pad, bool zero) {
                 require(words(c_in) == static_cast<int>(w.shape(3)),
                         "weight words per position do not match in_channels");
                 new (self) ConvPlan(w.data(), static_cast<int>(w.shape(0)), static_cast<int>(w.shape(1)),
                                     static_cast<int>(w.shape(2)), c_in, stride, pad, zero);
             });
    conv_runs(conv_plan);
    auto grouped_plan = nb::class_<GroupedConvPlan>(m, "GroupedConvPlan")
        .def("__init__", [](GroupedConvPlan* self, Arr<const uint64_t, 4> w, int c_in, int groups, int stride,
                            int pad, int dilation, bool zero) {
            require(groups >= 1 && c_in % groups == 0 && words(c_in / groups) == static_cast<int>(w.shape(3)),
                    "weight words per position do not match in_channels / groups");
            new (self) GroupedConvPlan(w.data(), static_cast<int>(w.shape(0)), static_cast<int>(w.shape(1)),
                                       static_cast<int>(w.shape(2)), c_in, groups, stride, pad, dilation, zero);
        });
    conv_runs(grouped_plan);

    nb::class_<EngineHandle>(m, "Engine")
        .def_static("from_bytes", [](nb::bytes data, int threads) {
            frt_model* mm = nullptr;
            char err[1024];
            int rc;
            {
                nb::gil_scoped_release release;
                rc = frt_load_bytes(data.c_str(), data.size(), threads, &mm, err, sizeof err);
            }
            return engine_loaded(rc, mm, err);
        }, nb::rv_policy::take_ownership)
        .def_static("from_file", [](const std::string& path, int threads) {
            frt_model* mm = nullptr;
            char err[1024];
            int rc;
            {
                nb::gil_scoped_release release;
                rc = frt_load_file(path.c_str(), threads, &mm, err, sizeof err);
            }
            return engine_loaded(rc, mm, err);
        }, nb::rv_policy::take_ownership)
        .def("input_shape", [](const EngineHandle& e) {
            int64_t d[3];
            frt_input_shape(e.get(), d);
            return std::vector<int64_t>{d[0], d[1], d[2]};
        })
        .def("output_shape", [](const EngineHandle& e) {
            int64_t d[3];
            int rank = 0;
            frt_output_shape(e.get(), &rank, d);
            return std::vector<int64_t>(d, d + rank);
        })
        .def("run", [](EngineHandle& e, Arr<const float, 4> x, nb::ndarray<float, nb::c_contig, nb::device::cpu> out) {
            const int64_t n = static_cast<int64_t>(x.shape(0));
            int rc;
            {
                nb::gil_scoped_release release;
                rc = frt_run(e.get(), x.data(), n, out.data(), out.size());
            }
            e.check(rc);
        })
        .def("set_threads", [](EngineHandle& e, int t) { e.check(frt_set_threads(e.get(), t)); })
        .def("threads", [](const EngineHandle& e) { return frt_threads(e.get()); })
        .def("set_isa", [](EngineHandle& e, const std::string& isa) { e.check(frt_set_isa(e.get(), isa.c_str())); })
        .def("isa", [](const EngineHandle& e) { return std::string(frt_isa(e.get())); })
        .def("metadata", [](const EngineHandle& e) { return std::string(frt_metadata(e.get())); })
        .def("set_profile", [](EngineHandle& e, bool on) { frt_set_profile(e.get(), on ? 1 : 0); })
        .def("op_kinds", [](const EngineHandle& e) {
            std::vector<std::string> r;
            for (int i = 0; i < frt_op_count(e.get()); ++i) r.push_back(frt_op_kind(e.get(), i));
            return r;
        })
        .def("op_seconds", [](const EngineHandle& e) {
            std::vector<double> r;
            for (int i = 0; i < frt_op_count(e.get()); ++i) r.push_back(frt_op_seconds(e.get(), i));
            return r;
        })
        .def("set_batch_images", [](EngineHandle& e, int64_t k) { e.check(frt_set_batch_images(e.get(), k)); })
        .def("batch_images", [](EngineHandle& e, int64_t batch) {
            int64_t k = 0;
            e.check(frt_batch_images(e.get(), batch, &k));
            return k;
        })
        .def("arena_bytes", [](EngineHandle& e, int64_t batch) {
            size_t a = 0, b = 0;
            e.check(frt_arena_bytes(e.get(), batch, &a, &b));
            return std::make_pair(a, b);
        });
}
