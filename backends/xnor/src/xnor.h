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

enum class Isa : int { portable = 0, avx2 = 1, avx512 = 2, neon = 3 };  // neon: AArch64 builds only

// ISAs this CPU can run (portable always), and names for messages.
bool cpu_supports(Isa isa);
Isa best_isa();
const char* isa_name(Isa isa);
Isa parse_isa(const std::string& name);  // throws std::invalid_argument

// Output channels are processed in tiles of this many; weights are re-laid out per tile.
constexpr int kCoTile = 32;
// Largest pixel tile any micro-kernel uses.
constexpr int kMaxPixTile = 6;

// Pixels per register tile of each ISA's micro-kernel.
int pixel_tile(Isa isa);

// Packing (row ranges so callers can split work over threads).
// NHWC float (pixels x C) -> (pixels x Cw) words, for pixels [p0, p1).
void pack_nhwc_rows(const float* x, std::size_t p0, std::size_t p1, int C, uint64_t* out, Isa isa);
// The same with a per-channel threshold: bit 1 where x < t[c], or x > t[c] where flip[c] != 0;
// pixel p's C channels start at x + p * stride (stride >= C: a channel prefix of wider rows).
void pack_nhwc_threshold_rows(const float* x, std::size_t stride, std::size_t p0, std::size_t p1, int C,
                              const float* t, const uint8_t* flip, uint64_t* out, Isa isa);
// NCHW float for one image plane set: x is (C, HW); writes (HW, Cw) words for hw in [h0, h1).
void pack_nchw_image(const float* x, int C, std::size_t HW, std::size_t h0, std::size_t h1,
                     uint64_t* out, Isa isa);

// Runs f(ctx, part, nparts) once for every part in [0, nparts) on up to nthreads threads of a
// persistent pool (the caller included). Parts must write disjoint outputs; which thread runs a
// part is unspecified, so results cannot depend on it.
void parallel_run(int nthreads, int nparts, void (*f)(void* ctx, int part, int nparts), void* ctx);
// How many parts to cut n units of work into for nthreads threads.
inline int parts_for(std::size_t n, int nthreads) {
    if (nthreads <= 1) return 1;
    const std::size_t p = static_cast<std::size_t>(nthreads) * 8;
    return static_cast<int>(n < p ? (n == 0 ? 1 : n) : p);
}

// Calls f(r0, r1) on disjoint row ranges covering [0, rows), on up to `threads` threads of the
// pool, at least `grain` rows a part (small ops stay on one thread).
template <typename F>
void split_rows(std::size_t rows, int threads, std::size_t grain, F&& f) {
    struct Ctx {
        std::size_t rows;
        F* f;
    } c{rows, &f};
    auto work = [](void* ctx, int part, int nparts) {
        auto& cc = *static_cast<Ctx*>(ctx);
        const std::size_t r0 = cc.rows * part / nparts, r1 = cc.rows * (part + 1) / nparts;
        if (r0 < r1) (*cc.f)(r0, r1);
    };
    parallel_run(threads, parts_for(rows / (grain ? grain : 1) + 1, threads), work, &c);
}

}  // namespace xnor
