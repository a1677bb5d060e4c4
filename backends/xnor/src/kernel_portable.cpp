// Scalar micro-kernel: the reference path every other ISA must match bit for bit.
#include <bit>

#include "conv_impl.h"

namespace xnor {

inline void mk_portable(const uint64_t* const* xs, int np, const uint64_t* wt, int kh, int L,
                 std::size_t row_stride, int32_t* cnt) {
    for (int p = 0; p < np; ++p) {
        int32_t acc[kCoTile] = {0};
        for (int ky = 0; ky < kh; ++ky) {
            const uint64_t* x = xs[p] + ky * row_stride;
            const uint64_t* w = wt + static_cast<std::size_t>(ky) * L * kCoTile;
            for (int k = 0; k < L; ++k) {
                const uint64_t a = x[k];
                for (int j = 0; j < kCoTile; ++j) acc[j] += std::popcount(a ^ w[k * kCoTile + j]);
            }
        }
        for (int j = 0; j < kCoTile; ++j) cnt[p * kCoTile + j] = acc[j];
    }
}

// On x86-64 the baseline ISA has no popcnt instruction, so std::popcount is a ~12-instruction
// bit trick there, and std::fma (the float output) a library call. Clones for CPUs with POPCNT,
// and with POPCNT + FMA (x86-64-v3), chosen once at load through an ifunc, run the same code
// about 5x faster with the same results (popcount is exact, fma exactly rounded). Elsewhere
// (e.g. aarch64) the one compilation is native. The sanitizer build (XNOR_NO_CLONES) runs the
// baseline compilation, so it is tested too.
#if defined(__x86_64__) && defined(__GLIBC__) && !defined(__clang__) && !defined(XNOR_NO_CLONES)
__attribute__((target_clones("arch=x86-64-v3", "popcnt", "default"), flatten))
#endif
void work_portable(void* job, int tid, int nthreads) {
    work_loop<tile_then_store<mk_portable>>(job, tid, nthreads);
}

}  // namespace xnor
