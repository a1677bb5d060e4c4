// The engine's memory plan (engine.h): which values live in a slice of another's buffer
// (find_views, once at load) and where every value and scratch buffer sits in the arena for a
// batch size (plan).
#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <string>

#include "engine.h"

namespace frt {

// A dense block is a chain x_k = Concat(x_{k-1}, f_k): copied, it rewrites every earlier
// feature map once per layer (quadratic in the block's depth; BinaryDenseNet28's concats took
// about a fifth of its time). Instead a Concat's float input is written straight into its
// channel slice of the Concat's output (its producer writes rows with the output's pixel
// stride), and a chain of Concats nests into one buffer of the last one's width, so the Concat
// itself does nothing. An input qualifies when
//   - its producer can write strided rows: an affine XnorConv without a fused Add (the Add
//     reads its residual with the conv's own width), a mean join, a pointwise conv (a
//     transition) or another Concat;
//   - every other reader can read strided rows: a PackBits (thresholded packing takes a pixel
//     stride); any other reader keeps the value in its own buffer;
//   - it is not the model's input or output, appears once in the Concat, and is not already
//     a slice of another Concat.
// Inputs that do not qualify are copied as before. The bytes computed are the same either way
// (only where they are stored changes); the engine tests compare every shipped spec with the
// reference executor.
void Engine::find_views() {
    const std::size_t V = vals.size(), O = ops.size();
    view_op.assign(V, -1);
    view_root.resize(V);
    view_c0.assign(V, 0);
    ld.resize(V);
    for (std::size_t v = 0; v < V; ++v) {
        view_root[v] = static_cast<uint32_t>(v);
        ld[v] = vals[v].c;
    }
    std::vector<long> producer(V, -1);
    std::vector<std::vector<long>> readers(V);
    for (std::size_t i = 0; i < O; ++i) {
        const OpRec& r = ops[i].r;
        if (ops[i].fused) continue;
        for (uint32_t k = 0; k < r.n_in; ++k) readers[r.in[k]].push_back(long(i));
        if (ops[i].fused_pool >= 0) {  // the conv stores the pool's (and the fused pack's) output
            producer[ops[ops[i].fused_pool].r.out] = long(i);
            if (ops[i].fused_pack >= 0) producer[ops[ops[i].fused_pack].r.out] = long(i);
            continue;
        }
        for (uint32_t o : {r.out, r.out2})
            if (o != kNone) producer[o] = long(i);
    }
    auto writes_strided = [&](uint32_t v) {
        const long p = producer[v];
        if (p < 0) return false;
        const Op& op = ops[p];
        if (op.fused_pool >= 0 || op.r.out != v) return false;
        // a DRF unit's top join; a dense transition's (or shortcut's) 1x1 conv
        if (op.r.type == OP_CONCAT || op.r.type == OP_JOIN || op.r.type == OP_PWCONV) return true;
        return op.r.type == OP_XCONV && op.r.p[7] == 1 && op.r.p[8] == 0;
    };
    // Latest Concat first: its output's own place (a slice of a later Concat, or its own buffer)
    // is known before its inputs are placed in it.
    for (std::size_t i = O; i-- > 0;) {
        const OpRec& r = ops[i].r;
        if (r.type != OP_CONCAT || ops[i].fused) continue;
        const uint32_t y = r.out;
        int c0 = 0;
        bool all = true;
        for (uint32_t k = 0; k < r.n_in; ++k) {
            const uint32_t a = r.in[k];
            const int ca = vals[a].c;
            bool ok = a != 0 && a != output && vals[a].kind == kF4 && view_op[a] < 0 && writes_strided(a);
            for (uint32_t q = 0; q < r.n_in && ok; ++q) ok = q == k || r.in[q] != a;
            for (long j : readers[a])
                if (ok && j != long(i)) ok = ops[j].r.type == OP_PACK;
            if (ok) {
                view_op[a] = long(i);
                view_root[a] = view_root[y];
                view_c0[a] = view_c0[y] + c0;
                ld[a] = ld[y];
            } else {
                all = false;
            }
            c0 += ca;
        }
        if (all) ops[i].kind = "Concat(in place)";
    }
}

void Engine::plan(int64_t n) {
    if (n == planned_n_) return;
    const std::size_t V = vals.size(), O = ops.size();
    // items: values, then one scratch item per op that needs one
    struct Item {
        std::size_t bytes;
        long first, last;  // op indices (input: -1; output: O)
        std::size_t off = 0;
    };
    std::vector<Item> items(V);
    std::vector<char> used(V, 0);
    for (std::size_t v = 0; v < V; ++v) items[v] = {align64(vals[v].bytes * n), -1, -1};
    items[0].first = -1;
    items[0].last = -1;
    used[0] = padded_input_ < 0;  // else the input goes straight into its reader's scratch
    for (std::size_t i = 0; i < O; ++i) {
        const OpRec& r = ops[i].r;
        if (ops[i].fused) continue;  // its input is never stored and its output is written by the conv
        if (ops[i].fused_pool >= 0) {
            const OpRec& pr = ops[ops[i].fused_pool].r;
            for (uint32_t k = 0; k < r.n_in; ++k) items[r.in[k]].last = std::max<long>(items[r.in[k]].last, long(i));
            items[pr.out].first = long(i);
            items[pr.out].last = std::max<long>(items[pr.out].last, long(i));
            used[pr.out] = 1;
            if (ops[i].fused_pack >= 0) {
                const uint32_t b = ops[ops[i].fused_pack].r.out;
                items[b].first = long(i);
                items[b].last = std::max<long>(items[b].last, long(i));
                used[b] = 1;
            }
            continue;
        }
        for (uint32_t k = 0; k < r.n_in; ++k) items[r.in[k]].last = std::max<long>(items[r.in[k]].last, long(i));
        for (uint32_t o : {r.out, r.out2})
            if (o != kNone) {
                items[o].first = long(i);
                items[o].last = std::max<long>(items[o].last, long(i));
                used[o] = 1;
            }
    }
    items[output].last = long(O);
    // A Concat's slice (find_views) lives in its root's buffer: the root's item spans them all.
    std::size_t viewed_bytes = 0;
    for (std::size_t v = 0; v < V; ++v) {
        const uint32_t R = view_root[v];
        if (R == v || !used[v]) continue;
        items[R].first = std::min(items[R].first, items[v].first);
        items[R].last = std::max(items[R].last, items[v].last);
        used[v] = 0;
        viewed_bytes += items[v].bytes;
    }
    // A float XnorConv+Add whose residual dies with it writes its output over the residual (each
    // element's residual is read before that element is written, by the same work item; the
    // same bytes), and a mean join over an input that dies with it: one buffer for a chain of
    // residual blocks instead of two, so at batch 8 the 6.4 MB maps are rewritten in cache
    // instead of written to fresh memory.
    std::vector<long> alias(V, -1);
    auto root = [&](long v) {
        while (alias[v] >= 0) v = alias[v];
        return v;
    };
    std::size_t aliased_bytes = 0;
    for (std::size_t i = 0; i < O; ++i) {
        const OpRec& r = ops[i].r;
        auto dies_here = [&](uint32_t v) {
            return v != 0 && r.out != output && items[v].last == long(i) && vals[v].bytes == vals[r.out].bytes;
        };
        uint32_t res = kNone;
        if (ops[i].fused || view_root[r.out] != r.out) continue;  // a slice is written in place
        if (r.type == OP_XCONV && r.p[7] == 1 && r.p[8] && r.n_in == 2 && dies_here(r.in[1])) res = r.in[1];
        // a mean join (element-wise: every input of a chunk is read before it is stored) over
        // an input that dies with it
        if (r.type == OP_JOIN)
            for (uint32_t k = 0; k < r.n_in && res == kNone; ++k)
                if (dies_here(r.in[k])) res = r.in[k];
        if (res == kNone) continue;
        const long rt = root(res);
        alias[r.out] = rt;
        items[rt].last = std::max(items[rt].last, items[r.out].last);
        used[r.out] = 0;
        aliased_bytes += items[r.out].bytes;
    }
    temp_off_.assign(O, 0);
    std::vector<std::size_t> temp_item(O, 0);
    for (std::size_t i = 0; i < O; ++i)
        if (ops[i].temp_bytes) {
            temp_item[i] = items.size();
            items.push_back({align64(ops[i].temp_bytes * n), long(i), long(i)});
            used.push_back(1);
        }
    std::vector<std::size_t> order;
    unplanned_ = aliased_bytes + viewed_bytes;
    for (std::size_t k = 0; k < items.size(); ++k)
        if (used[k]) {
            order.push_back(k);
            unplanned_ += items[k].bytes;
        }
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return items[a].bytes > items[b].bytes; });
    std::vector<std::size_t> placed;
    std::size_t top = 0;
    for (std::size_t k : order) {
        Item& it = items[k];
        std::vector<std::pair<std::size_t, std::size_t>> busy;
        for (std::size_t q : placed)
            if (items[q].first <= it.last && it.first <= items[q].last) busy.push_back({items[q].off, items[q].bytes});
        std::sort(busy.begin(), busy.end());
        std::size_t off = 0;
        for (auto [o, b] : busy) {
            if (o >= off + it.bytes) break;
            off = std::max(off, o + b);
        }
        it.off = off;
        top = std::max(top, off + it.bytes);
        placed.push_back(k);
    }
    val_off_.resize(V);
    for (std::size_t v = 0; v < V; ++v)
        val_off_[v] = items[root(static_cast<long>(view_root[v]))].off + static_cast<std::size_t>(view_c0[v]) * 4;
    for (std::size_t i = 0; i < O; ++i) temp_off_[i] = ops[i].temp_bytes ? items[temp_item[i]].off : 0;
    arena_size_ = std::max<std::size_t>(top, 64);
    planned_n_ = n;
}

std::pair<std::size_t, std::size_t> Engine::arena_bytes(int64_t n) {
    plan(n);
    const std::size_t unplanned = unplanned_;
    plan(batch_images(n));
    return {arena_size_, unplanned};
}

std::size_t batch_budget(std::string* how) {
    constexpr std::size_t kCap = std::size_t{16} << 20;
    // sysfs, not sysconf: on a VM glibc's L3 figure can be the whole host's (320 MiB on the
    // 2-vCPU AMD EPYC this was tuned on, whose sysfs says 32 MiB).
    std::size_t llc = 0;
    int level = 0;
    for (int i = 0; i < 8; ++i) {
        const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
        std::ifstream lf(dir + "level"), sf(dir + "size"), tf(dir + "type");
        int lv = 0;
        std::string size, type;
        if (!(lf >> lv) || !(sf >> size) || !(tf >> type) || type == "Instruction" || lv < level) continue;
        char* end = nullptr;
        const unsigned long long v = std::strtoull(size.c_str(), &end, 10);
        const std::size_t mul = *end == 'K' ? 1024 : *end == 'M' ? std::size_t{1} << 20 : *end == 'G' ? std::size_t{1} << 30 : 1;
        if (v == 0 || v > (1ull << 40) / mul) continue;
        level = lv;
        llc = static_cast<std::size_t>(v) * mul;
    }
    if (llc == 0) {
        if (how) *how = "16 MiB (no cache size in sysfs)";
        return kCap;
    }
    const std::size_t b = std::min(kCap, llc / 2);
    if (how) *how = std::to_string(b >> 10) + " KiB (half the " + std::to_string(llc >> 10) + " KiB L" +
                    std::to_string(level) + " cache, at most 16 MiB)";
    return b;
}

// Why passes: a batch's values are batch times larger; once they outgrow the cache every op
// streams them from memory. BinaryDenseNet28 at batch 8 (a 56 MiB arena) ran 20 % faster in
// passes of 2 images on AMD Zen 4 (32 MiB L3), while Bi-Real ResNet18 and RF-c3d4 (11 and 16 MiB)
// ran 1-6 % slower in passes of 1 or 2 than in one.
int64_t Engine::batch_images(int64_t n) {
    static const long forced = [] {
        const char* v = std::getenv("FRACTALC_BATCH_IMAGES");
        return v ? std::strtol(v, nullptr, 10) : 0L;
    }();
    if (images_per_pass > 0) return std::min<int64_t>(n, images_per_pass);
    if (forced > 0) return std::min<int64_t>(n, forced);
    if (image_arena_ == 0) {
        plan(1);
        image_arena_ = std::max<std::size_t>(arena_size_, 1);
    }
    static const std::size_t budget = batch_budget();
    return std::clamp<int64_t>(static_cast<int64_t>(budget / image_arena_), 1, n);
}

}  // namespace frt
