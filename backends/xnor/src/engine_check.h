// The checks the engine's loader makes on one op record (engine.cpp, engine_ops2.cpp): one place
// for the rules and their messages. Every failure throws Error(FRT_ERR_FORMAT, "<who>: <what>").
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "engine.h"
#include "fractalc_rt.h"

namespace frt {

struct OpCheck {
    Op& op;
    const uint8_t* blob;
    uint64_t blob_bytes;
    std::string who;  // "op 3 (XnorConv)"
    int used_p = 0;   // parameters read through in_range / flag (highest + 1)
    int nw = 0;       // weight slots read through wref (highest + 1)

    void operator()(bool ok, const std::string& what) const {
        if (!ok) throw Error(FRT_ERR_FORMAT, who + ": " + what);
    }
    int32_t in_range(int k, int lo, int64_t hi) {
        (*this)(op.r.p[k] >= lo && op.r.p[k] <= hi, "parameter " + std::to_string(k) + " out of range");
        used_p = std::max(used_p, k + 1);
        return op.r.p[k];
    }
    bool flag(int k) {
        (*this)(op.r.p[k] == 0 || op.r.p[k] == 1, "flag parameter " + std::to_string(k) + " must be 0 or 1");
        used_p = std::max(used_p, k + 1);
        return op.r.p[k] == 1;
    }
    void shape(const Value& v, uint32_t kind, int c, int h, int w, const char* what) const {
        (*this)(v.kind == kind && v.c == c && v.h == h && v.w == w, std::string(what) + " has the wrong kind or shape");
    }
    // Weight slot k: `bytes` long, 64-byte aligned, inside the blob; points op.w[k] at it.
    const void* wref(int k, uint64_t bytes) {
        const WRef& wr = op.r.w[k];
        (*this)(wr.off % 64 == 0 && wr.off <= blob_bytes && wr.bytes == bytes && bytes <= blob_bytes - wr.off,
                "weight " + std::to_string(k) + " is out of the blob, misaligned or has the wrong size");
        op.w[k] = blob + wr.off;
        nw = std::max(nw, k + 1);
        return op.w[k];
    }
    void no_out2() const { (*this)(op.r.out2 == kNone, "no second output allowed"); }
};

}  // namespace frt
