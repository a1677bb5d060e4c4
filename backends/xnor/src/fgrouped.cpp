// Grouped / dilated float convolution, n-ary max and global max pool (fgrouped.h).
#include "fgrouped.h"

#include <algorithm>
#include <vector>

#include "xnor.h"

namespace xnor {

void conv_grouped_float(const float* x, int N, int H, int W, int C, int kh, int kw, int stride, int pad,
                        int dilation, int groups, const float* w, int Co, const float* b, bool relu, int Ho,
                        int Wo, float* out, int threads) {
    const int cg = C / groups, og = Co / groups;
    const bool depthwise = cg == 1 && og == 1;
    const std::size_t rows = static_cast<std::size_t>(N) * Ho;
    // one output row (Wo pixels) per unit; rows of small images are cheap, so a grain of 4
    split_rows(rows, threads, 4, [&](std::size_t r0, std::size_t r1) {
        std::vector<float> acc(static_cast<std::size_t>(Co));
        for (std::size_t r = r0; r < r1; ++r) {
            const int n = static_cast<int>(r / Ho), oy = static_cast<int>(r % Ho);
            for (int ox = 0; ox < Wo; ++ox) {
                std::fill(acc.begin(), acc.end(), 0.0f);
                for (int ky = 0; ky < kh; ++ky) {
                    const int iy = oy * stride - pad + ky * dilation;
                    if (iy < 0 || iy >= H) continue;
                    for (int kx = 0; kx < kw; ++kx) {
                        const int ix = ox * stride - pad + kx * dilation;
                        if (ix < 0 || ix >= W) continue;
                        const float* xp = x + ((static_cast<std::size_t>(n) * H + iy) * W + ix) * C;
                        const float* wt = w + (static_cast<std::size_t>(ky) * kw + kx) * cg * Co;
                        float* a = acc.data();
                        if (depthwise) {  // contiguous over channels in x, w and acc: vectorised
                            for (int c = 0; c < Co; ++c) a[c] = a[c] + xp[c] * wt[c];
                            continue;
                        }
                        for (int g = 0; g < groups; ++g)
                            for (int i = 0; i < cg; ++i) {
                                const float xv = xp[g * cg + i];
                                const float* wr = wt + static_cast<std::size_t>(i) * Co + g * og;
                                float* ag = a + g * og;
                                for (int o = 0; o < og; ++o) ag[o] = ag[o] + xv * wr[o];
                            }
                    }
                }
                float* y = out + (r * Wo + ox) * Co;
                for (int c = 0; c < Co; ++c) {
                    const float v = acc[c] + b[c];
                    y[c] = relu ? (v > 0.0f ? v : 0.0f) : v;
                }
            }
        }
    });
}

void max_n(const float* const* x, int n, std::size_t elems, float* out, int threads) {
    split_rows(elems, threads, 4096, [&](std::size_t e0, std::size_t e1) {
        for (std::size_t e = e0; e < e1; ++e) {
            float m = x[0][e];
            for (int k = 1; k < n; ++k) m = std::max(m, x[k][e]);
            out[e] = m;
        }
    });
}

void global_max_pool(const float* x, int N, std::size_t HW, int C, float* out, int threads) {
    split_rows(static_cast<std::size_t>(N), threads, 1, [&](std::size_t n0, std::size_t n1) {
        for (std::size_t n = n0; n < n1; ++n) {
            const float* s = x + n * HW * C;
            float* o = out + n * C;
            std::copy(s, s + C, o);
            for (std::size_t q = 1; q < HW; ++q)
                for (int c = 0; c < C; ++c) o[c] = std::max(o[c], s[q * C + c]);
        }
    });
}

}  // namespace xnor
