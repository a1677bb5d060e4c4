// Element-wise kernels for issue 14's primitives (chanwise.h).
#include "chanwise.h"

#include <cmath>

#include "xnor.h"

namespace xnor {

namespace {

// Calls f(r0, r1) on disjoint row ranges covering [0, rows), on up to `threads` threads.
template <class F>
void rows_parallel(std::size_t rows, int threads, F&& f) {
    struct Ctx {
        std::size_t rows;
        F* f;
    } c{rows, &f};
    auto work = [](void* ctx, int part, int nparts) {
        auto& cc = *static_cast<Ctx*>(ctx);
        const std::size_t r0 = cc.rows * part / nparts, r1 = cc.rows * (part + 1) / nparts;
        if (r0 < r1) (*cc.f)(r0, r1);
    };
    parallel_run(threads, parts_for(rows / 256 + 1, threads), work, &c);
}

}  // namespace

void prelu_nhwc(const float* x, std::size_t pixels, int C, const float* shift_in, const float* slope,
                const float* shift_out, float* out, int threads) {
    rows_parallel(pixels, threads, [&](std::size_t r0, std::size_t r1) {
        for (std::size_t r = r0; r < r1; ++r) {
            const float* s = x + r * C;
            float* o = out + r * C;
            for (int c = 0; c < C; ++c) {
                float t = shift_in ? s[c] + shift_in[c] : s[c];
                t = t > 0.0f ? t : slope[c] * t;
                o[c] = shift_out ? t + shift_out[c] : t;
            }
        }
    });
}

void sigmoid_f64(const float* x, std::size_t n, float* out, int threads) {
    rows_parallel(n, threads, [&](std::size_t r0, std::size_t r1) {
        for (std::size_t i = r0; i < r1; ++i)
            out[i] = static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(x[i]))));
    });
}

void mul_nhwc(const float* a, const float* b, int N, std::size_t HW, int C, bool broadcast, float* out,
              int threads) {
    rows_parallel(static_cast<std::size_t>(N) * HW, threads, [&](std::size_t r0, std::size_t r1) {
        for (std::size_t r = r0; r < r1; ++r) {
            const float* s = a + r * C;
            const float* g = broadcast ? b + (r / HW) * C : b + r * C;
            float* o = out + r * C;
            for (int c = 0; c < C; ++c) o[c] = s[c] * g[c];
        }
    });
}

}  // namespace xnor
