// The standalone engine's ops for issue 14's grouped / dilated convolutions and max ops
// (backends/xnor/FORMAT.md, types 40..43), kept out of engine.cpp: engine.cpp calls these three
// hooks for any op type `is_op2` accepts (load-time validation, naming, execution).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "engine.h"

namespace frt {

enum Op2Type : uint32_t {
    OP_GXCONV = 40,  // XnorConv with groups and/or dilation (xnor::GroupedConvPlan)
    OP_GCONV = 41,   // float Conv with groups and/or dilation (xnor::conv_grouped_float)
    OP_MAX = 42,     // element-wise max of 1..16 values (ONNX Max: maxjoin)
    OP_GMP = 43,     // GlobalMaxPool
};

inline bool is_op2(uint32_t t) { return t >= OP_GXCONV && t <= OP_GMP; }
const char* op2_name(uint32_t t);  // "?" for any other type

struct OpCheck;  // engine_check.h

// Validates op chk.op of type is_op2 (its input / output indices are already checked; chk.who
// names it in messages) against the values, points op.w at its weights inside the blob and
// builds its plan (op.aux). Returns the number of weight slots it uses; throws
// Error(FRT_ERR_FORMAT).
int validate_op2(OpCheck& chk, const std::vector<Value>& vals);

// The checks a binary conv (OP_XCONV, or OP_GXCONV with groups / dilation) makes once its
// parameters are range-checked (1..2^16 channels, kernel, stride, pad, dilation 1..64, kind 1 or
// 2): the input count and kind, the kernel inside the padded input, the weights (slot 0: packed,
// no bits above the group's channels; 1, 2: per-channel mul / bias or threshold / flip), the
// output shapes and the flips. Points chk.op.w at the weights and returns the packed ones.
struct XconvParams {
    int ci, co, kh, kw, stride, pad, kind, groups = 1, dilation = 1;
    bool zero, residual;
};
// The range checks of those parameters (p: c_in, c_out, kh, kw, stride, pad, zero_padding,
// out_kind, residual; then groups, dilation when `grouped`, the OP_GXCONV record).
XconvParams xconv_params(OpCheck& chk, bool grouped);
const uint64_t* validate_xconv(OpCheck& chk, const XconvParams& q, const std::vector<Value>& vals);

// Runs op `op` on n images; values live in `arena` at `val_off`.
void run_op2(const Op& op, const std::vector<Value>& vals, uint8_t* arena, const std::vector<std::size_t>& val_off,
             int n, int threads, xnor::Isa isa);

}  // namespace frt
