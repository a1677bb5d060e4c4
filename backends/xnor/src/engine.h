// The standalone engine: a validated model file (layout below, documented in
// backends/xnor/FORMAT.md), an arena plan, and an executor running every op natively.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "conv.h"
#include "xnor.h"

namespace frt {

constexpr uint32_t kVersion = 1;
constexpr uint32_t kNone = 0xffffffffu;
constexpr int kMaxIn = 16, kMaxP = 16, kMaxW = 4;

// On-disk records (little-endian, no padding).
struct FileHeader {
    char magic[8];          // "FRCTLRT\0"
    uint32_t version;       // kVersion
    uint32_t header_bytes;  // sizeof(FileHeader)
    uint64_t file_bytes;    // the whole file
    uint32_t crc32;         // zlib CRC-32 of bytes [header_bytes, file_bytes)
    uint32_t n_values;
    uint32_t n_ops;
    uint32_t output_value;  // value 0 is the input
    uint64_t values_off;    // n_values ValueRec
    uint64_t ops_off;       // n_ops OpRec
    uint64_t blob_off;      // 64-byte aligned weights
    uint64_t blob_bytes;
    uint64_t meta_off;      // UTF-8 JSON (informational)
    uint64_t meta_bytes;
    uint64_t reserved;      // 0
};
static_assert(sizeof(FileHeader) == 96, "header layout");

enum ValKind : uint32_t { kF4 = 0, kBits = 1, kFlat = 2 };
struct ValueRec {
    uint32_t kind;
    int32_t c, h, w;  // flat: (c, 1, 1)
};
static_assert(sizeof(ValueRec) == 16, "value layout");

struct WRef {
    uint64_t off, bytes;  // into the blob
};

enum OpType : uint32_t {
    OP_XCONV = 1, OP_PACK = 2, OP_UNPACK = 3, OP_JOIN = 4, OP_AFFINE = 5, OP_POOL = 6, OP_GAP = 7,
    OP_FLATTEN = 8, OP_CONV = 9, OP_GEMM = 10, OP_CONCAT = 11, OP_SLICE = 12, OP_PWCONV = 13,
    // issue 14's element-wise ops (chanwise.cpp), numbered apart from the others
    OP_PRELU = 32, OP_SIGMOID = 33, OP_MUL = 34,
};
struct OpRec {
    uint32_t type;
    uint32_t n_in;
    uint32_t in[kMaxIn];
    uint32_t out, out2;
    int32_t p[kMaxP];
    WRef w[kMaxW];
};
static_assert(sizeof(OpRec) == 208, "op layout");

struct Error : std::runtime_error {
    int code;
    Error(int c, const std::string& m) : std::runtime_error(m), code(c) {}
};

// The bytes of a model: owned (copied), or a read-only mapping.
struct Bytes {
    const uint8_t* data = nullptr;
    std::size_t size = 0;
    std::shared_ptr<void> keep;
};

struct Value {
    uint32_t kind;
    int c, h, w;
    std::size_t elems;  // per image: floats (f4, flat) or words (bits)
    std::size_t bytes;  // per image
};

struct Op {
    OpRec r;
    std::string kind;
    std::unique_ptr<xnor::ConvPlan> conv;  // OP_XCONV
    std::shared_ptr<void> aux;             // ops of engine_ops2.cpp: their plan (a grouped conv)
    const void* w[kMaxW] = {};             // weights in the blob
    std::size_t temp_bytes = 0;            // per image scratch (the float conv's padded input)
    double seconds = 0;
    // OP_CONV: the index of the pool op run inside it (its output only feeds that pool), or -1;
    // OP_POOL: true when a conv computes it, so it is skipped.
    long fused_pool = -1;
    bool fused = false;
    // OP_CONV with a fused pool: the PackBits op reading the pool's output, run inside it (it
    // packs the pooled rows while in cache), or -1; that op is then `fused`.
    long fused_pack = -1;
    // OP_CONV, OP_GEMM on a CPU with AVX-512: the weights in 32-channel blocks (block_weights)
    std::vector<float> wblock;
};

class Engine {
public:
    // Validates everything (throws Error(FRT_ERR_FORMAT, ...)): header, checksum, every value,
    // op, index, shape and weight reference; builds the binary conv plans.
    explicit Engine(Bytes bytes);

    // Runs n images, in passes of batch_images(n) images (each pass planned for that many).
    void run(const float* in, int64_t n, float* out, std::size_t out_len);
    // Arena bytes a run of n images uses (planned for batch_images(n) images), and the sum of
    // all values' bytes for n images (unplanned: no reuse, no passes).
    std::pair<std::size_t, std::size_t> arena_bytes(int64_t n);
    // Images per pass for a batch of n (engine_plan.cpp): the most whose arena fits in
    // batch_budget(), at least 1; $FRACTALC_BATCH_IMAGES=k forces k. Every op computes each
    // image alone, so the bytes do not depend on it; only cache traffic does.
    int64_t batch_images(int64_t n);
    int64_t images_per_pass = 0;  // > 0: forced (frt_set_batch_images), over the environment

    int threads = 1;
    xnor::Isa isa = xnor::Isa::portable;
    bool profile = false;
    std::vector<Value> vals;
    std::vector<Op> ops;
    uint32_t output = 0;
    std::string meta;

    // Dense blocks (engine_plan.cpp): value v is written in place into a channel slice of a
    // Concat's output, a view: view_op[v] is that Concat (-1: v has its own buffer),
    // view_root[v] the value owning the buffer (v itself when not a view), view_c0[v] the first
    // channel of v in it, and ld[v] the floats from one pixel to the next (vals[v].c when not a
    // view). Decided at load; the same for every batch size.
    std::vector<long> view_op;
    std::vector<uint32_t> view_root;
    std::vector<int> view_c0, ld;

private:
    void find_views();
    void plan(int64_t n);
    void run_pass(const float* in, int64_t n, float* out);
    std::size_t image_arena_ = 0;  // the arena of one image (planned once)
    Bytes bytes_;
    int64_t planned_n_ = -1;
    std::vector<std::size_t> val_off_, temp_off_;
    std::size_t arena_size_ = 0, unplanned_ = 0;
    long padded_input_ = -1;  // the op whose padded scratch receives the input (value 0), or -1
    std::shared_ptr<uint8_t> arena_;
    std::size_t arena_cap_ = 0;
};

uint32_t crc32(const uint8_t* p, std::size_t n);
// The arena bytes a batch pass may use (engine_plan.cpp): half the last-level cache that sysfs
// reports for CPU 0, at most 16 MiB (16 MiB when unknown); `how` says which.
std::size_t batch_budget(std::string* how = nullptr);
inline std::size_t align64(std::size_t n) { return (n + 63) & ~std::size_t{63}; }

}  // namespace frt
