// Binary convolution on packed activations and packed weights (layouts in xnor.h).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "xnor.h"

namespace xnor {

enum class OutKind : int { int32 = 0, affine = 1, bits = 2 };

// The register tile of the binary kernel: pixels x output channels (channels a multiple of 32).
// Every tile gives the same bytes (integer counts, the same epilogue per element); only speed
// differs, by micro-architecture, so the tile is chosen per CPU (conv_tile).
struct Tile {
    int pixels = 0, channels = 0;  // {0, 0}: the process-wide choice for the ISA
    bool operator==(const Tile&) const = default;
};
std::string tile_name(Tile t);               // "6x32"
std::vector<Tile> tile_candidates(Isa isa);  // the tiles isa's kernel supports, the default first
// The tile used for isa: set_tile_override's, else $FRACTALC_TILE ("6x32": forced; "table": the
// CPUID table; "calibrate": measure now), else a per-user cache file, else a measurement of the
// candidates on two small convolutions (one thread, 2-3 ms, once per process and ISA),
// written to the cache file ($FRACTALC_TILE_CACHE: its directory, or "off"; default
// $XDG_CACHE_HOME/fractalc or ~/.cache/fractalc) atomically.
Tile conv_tile(Isa isa);
// Forces a tile for isa in this process (tests, benchmarks); {0, 0} clears. Throws
// std::invalid_argument for a tile isa does not support.
void set_tile_override(Isa isa, Tile t);
struct TileChoice {
    Tile tile;
    std::string how;       // "override", "environment", "table", "cache file PATH", "calibrated"
    std::string detail;    // e.g. the measured microseconds per candidate
};
TileChoice tile_choice(Isa isa);  // conv_tile's answer and how it was reached
// This CPU: "vendor family 0x19 model 0x11: brand string" (x86 CPUID), or the machine name.
std::string cpu_description();

// Where and how a convolution writes its result; output is NHWC (N, Ho, Wo, C_out) for int32
// and affine, (N, Ho, Wo, ceil(C_out/64)) uint64 for bits (must be zero-initialised).
struct Output {
    OutKind kind = OutKind::int32;
    void* data = nullptr;
    std::size_t stride = 0;           // int32 / affine: elements from one pixel's row to the next
                                      // (0: C_out; more: data points into wider rows, e.g. a
                                      // channel slice of a dense block's buffer)
    const float* mul = nullptr;     // affine: y = fmaf(float(dot), mul[c], bias[c]) (one rounding)
    const float* bias = nullptr;
    const float* residual = nullptr;  // affine, optional: y = fl(y + residual[m][c]), (M, C_out) rows
                                      // (not strided: a residual output keeps its own buffer)
    uint64_t* sign_bits = nullptr;    // affine, optional: packed sign of the final y (bit 1 iff y < 0),
                                      // (N, Ho, Wo, ceil(C_out/64)), zero-initialised
    const int32_t* thr = nullptr;   // bits: bit = (dot < thr[c]) != flip[c]
    const int32_t* flip = nullptr;
};

// Weights re-laid out once for the micro-kernels, plus the per-position weight sums that the
// exact zero-padding correction needs.
class ConvPlan {
public:
    ConvPlan(const uint64_t* w, int c_out, int kh, int kw, int c_in, int stride, int pad,
             bool zero_padding);

    int out_size(int in, int k) const { return (in + 2 * pad_ - k) / stride_ + 1; }
    // x: (N, H, W, Cw) words. Throws std::invalid_argument when the input is too small.
    // tile {0, 0}: conv_tile(isa).
    void run(const uint64_t* x, int N, int H, int W, const Output& out, int threads, Isa isa,
             Tile tile = {}) const;

    int c_out, kh, kw, c_in, cw;

private:
    // Border classes of output rows/columns and the zero-padding correction per class pair,
    // which depend on the input size: computed once per size and cached.
    struct BorderTables {
        std::vector<int> row_cls, col_cls;
        int ncc = 1;
        std::vector<int32_t> corr;  // [rc][cc][c_pad]; empty when no correction is needed
    };
    std::shared_ptr<const BorderTables> border_tables(int H, int W) const;

    mutable std::mutex cache_mu_;
    mutable std::vector<std::pair<std::pair<int, int>, std::shared_ptr<const BorderTables>>> cache_;
    int stride_, pad_;
    bool zero_;
    int nct_;
    std::vector<uint64_t> wt_;   // [ct][ky][kx*cw + w][kCoTile]
    std::vector<int32_t> wsum_;  // [c_out][kh][kw]: sum over input channels of sign(w)
};

}  // namespace xnor
