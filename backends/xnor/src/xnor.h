// Native XNOR/popcount kernels for fractalc. Packing layout: docs/packing.md.
//
// Activations: (N, H, W, Cw) uint64, Cw = ceil(C/64); bit j of word w is channel 64*w + j;
// bit 1 means -1 (x < 0), bit 0 means +1; unused high bits of the last word are 0.
// Weights: (C_out, kh, kw, Cw) uint64, same bit convention.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace xnor {

enum class Isa : int { portable = 0, avx2 = 1, avx512 = 2 };

// ISAs this CPU can run (portable always), and names for messages.
bool cpu_supports(Isa isa);
Isa best_isa();
const char* isa_name(Isa isa);
Isa parse_isa(const std::string& name);  // throws std::invalid_argument

// Output channels are processed in tiles of this many; weights are re-laid out per tile.
constexpr int kCoTile = 32;
// Largest pixel tile any micro-kernel uses.
constexpr int kMaxPixTile = 6;

// A micro-kernel: for `np` output pixels whose receptive fields start at xs[p] (row ky of pixel p
// is at xs[p] + ky*row_stride, L contiguous words), and one tile of 32 output channels whose
// weights are wt[ky][k][32], write cnt[p][j] = sum over ky, k of popcount(x ^ w).
using MicroKernel = void (*)(const uint64_t* const* xs, int np, const uint64_t* wt, int kh,
                             int L, std::size_t row_stride, int32_t* cnt);

MicroKernel micro_kernel(Isa isa);
int pixel_tile(Isa isa);

void mk_portable(const uint64_t* const* xs, int np, const uint64_t* wt, int kh, int L,
                 std::size_t row_stride, int32_t* cnt);
void mk_avx2(const uint64_t* const* xs, int np, const uint64_t* wt, int kh, int L,
             std::size_t row_stride, int32_t* cnt);
void mk_avx512(const uint64_t* const* xs, int np, const uint64_t* wt, int kh, int L,
               std::size_t row_stride, int32_t* cnt);

// Packing (row ranges so callers can split work over threads).
// NHWC float (pixels x C) -> (pixels x Cw) words, for pixels [p0, p1).
void pack_nhwc_rows(const float* x, std::size_t p0, std::size_t p1, int C, uint64_t* out, Isa isa);
// NCHW float for one image plane set: x is (C, HW); writes (HW, Cw) words for hw in [h0, h1).
void pack_nchw_image(const float* x, int C, std::size_t HW, std::size_t h0, std::size_t h1,
                     uint64_t* out);

// Runs f(tid) for tid in [0, nthreads) on a persistent pool; the caller is tid 0.
void parallel_run(int nthreads, void (*f)(void* ctx, int tid, int nthreads), void* ctx);

}  // namespace xnor
