// Element-wise kernels for issue 14's primitives (chanwise.h).
#include "chanwise.h"

#include <cmath>

#include "xnor.h"

namespace xnor {

void prelu_nhwc(const float* x, std::size_t pixels, int C, const float* shift_in, const float* slope,
                const float* shift_out, float* out, int threads) {
    split_rows(pixels, threads, 256, [&](std::size_t r0, std::size_t r1) {
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
    split_rows(n, threads, 256, [&](std::size_t r0, std::size_t r1) {
        for (std::size_t i = r0; i < r1; ++i)
            out[i] = static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(x[i]))));
    });
}

void mul_nhwc(const float* a, const float* b, int N, std::size_t HW, int C, bool broadcast, float* out,
              int threads) {
    split_rows(static_cast<std::size_t>(N) * HW, threads, 256, [&](std::size_t r0, std::size_t r1) {
        for (std::size_t r = r0; r < r1; ++r) {
            const float* s = a + r * C;
            const float* g = broadcast ? b + (r / HW) * C : b + r * C;
            float* o = out + r * C;
            for (int c = 0; c < C; ++c) o[c] = s[c] * g[c];
        }
    });
}

}  // namespace xnor
