"""The bounds that keep the compiler's work finite on any input (see README, "Trust model").

A spec is untrusted text: these limits turn every way of asking for unbounded work (huge files,
deep nesting, huge integers, repetitions and recursions that make no nodes) into a prompt,
positioned error instead of a hang, a `RecursionError` or an exhausted memory. They are far
above what a real spec needs (the largest shipped file is 4 KB, nests 6 levels, and expands in
about 60,000 evaluation steps).
"""
from __future__ import annotations

import contextlib
import sys

#: Bytes of spec text in one file (parsing costs ~10 us per byte in pure-Python lark).
MAX_SPEC_BYTES = 256 * 1024

#: Nesting levels of one expression (lists, parentheses, unary minus, operator chains). Every
#: stage after the parser walks expressions recursively, so this bounds their stack depth.
MAX_EXPR_DEPTH = 256

#: Integers are 64-bit: |n| < 2**63. Floats must be finite.
MAX_INT = 2**63

#: Evaluation steps (expressions evaluated and repetitions) of one expansion: STEPS_PER_NODE per
#: node allowed by --max-nodes, at least MIN_STEPS (1,000,000 at the default 100,000 nodes; the
#: shipped specs take 11-15 steps per node and at most 11,149 in all). The size guard predicts
#: the count before anything is built, multiplying memoised sub-results instead of iterating,
#: so a repetition or recursion that makes no nodes is refused at once whatever its count; work
#: that cannot be memoised is refused when the budget runs out (about 1 s here).
STEPS_PER_NODE = 10
MIN_STEPS = 100_000


def max_steps(max_nodes: int) -> int:
    """The step budget of an expansion limited to `max_nodes` nodes."""
    return max(STEPS_PER_NODE * max_nodes, MIN_STEPS)


#: Python frames needed by the recursive stages for the nesting above (expression depth times a
#: few frames, rule nesting times a few more); set only around those stages.
RECURSION_LIMIT = 40_000


@contextlib.contextmanager
def recursion_room(limit: int = RECURSION_LIMIT):
    """Raise Python's recursion limit to `limit` inside the block (never lowers it)."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, limit))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)

#: Tensor sizes: each dimension, and the elements of one sample's tensor. Far beyond a real
#: network (ImageNet stems are 64x112x112 = 0.8 M elements), and inside int32/int64 indexing.
MAX_DIM = 2**31 - 1
MAX_TENSOR_ELEMENTS = 2**32

#: Bytes of float32 parameters a backend may allocate for one network (torch, ONNX export).
#: The largest shipped network (FractalNet, CIFAR) needs 135 MB.
DEFAULT_MAX_MODEL_BYTES = 4 * 2**30


def max_model_bytes() -> int:
    """`DEFAULT_MAX_MODEL_BYTES`, or the environment variable FRACTALC_MAX_MODEL_BYTES."""
    import os

    text = os.environ.get("FRACTALC_MAX_MODEL_BYTES", "").strip()
    return int(text) if text.isdigit() else DEFAULT_MAX_MODEL_BYTES
