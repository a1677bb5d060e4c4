"""The IR layer: what a network is once the language is gone.

- `graph`: the node kinds (frozen records, `fractalc.records`) and `Graph`, re-exported here so that
  ``from fractalc import ir; ir.Conv(...)`` reads as the IR's vocabulary;
- `ops`: the op table (one `OpDef` per node kind: shape rule, tensors, cost, style, hooks);
- `prims`: the language's view of the table (primitive names, defaults);
- `shapes`: shape inference read from the table; `printer`: the IR listing and JSON;
- `passes`: graph rewrites and checks (collapse_joins, infer_shapes, verify, extract_column).

This package imports nothing above it (not the language, not the backends); the language
sits on top of it because it checks names against the op table.
"""
from fractalc.ir.graph import (Activation, Add, BatchNorm, BinaryConv, BlurPool, Concat, Conv, CycleError, Dropout, Graph,
                               Input, Join, Linear, Op, Output, Pool, Shape, Slice, op_attrs,
                               op_name)

__all__ = ["Activation", "Add", "BatchNorm", "BinaryConv", "BlurPool", "Concat", "Conv", "CycleError", "Dropout", "Graph",
           "Input", "Join", "Linear", "Op", "Output", "Pool", "Shape", "Slice", "op_attrs", "op_name"]
# the binary-network primitives of issue 14 (ReActNet, Real-to-Binary)
from fractalc.ir.graph import Mul, PReLU, RSign, Scale, Shift  # noqa: E402

__all__ += ["Mul", "PReLU", "RSign", "Scale", "Shift"]
# the joins of issue 14 (weighted, learnable and max joins)
from fractalc.ir.graph import MaxJoin, WeightedJoin  # noqa: E402

__all__ += ["MaxJoin", "WeightedJoin"]
