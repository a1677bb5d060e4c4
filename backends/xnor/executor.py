"""Whole-model executor of lowered (``onnx-xnor``) graphs on the native XNOR kernels.

`Executor(path_or_bytes_or_proto, threads, isa)` loads and validates the model once
(`backends.onnx.load_model`, then `plan.build`), and `run(x)` executes the precomputed plan:
one Python loop over steps, each a prepared closure (a kernel call, a numpy op or a one-node
onnxruntime session), with no per-node checks, dict lookups or allocations beyond the outputs.
The input is checked (dtype, shape) on every call; values are released after their last use.

A fast planner, not a reference: its float nodes run in numpy and onnxruntime, whose summation
orders differ from the float arithmetic the native engine, torch eval and `run_reference` share
(docs/float-arithmetic.md), so its outputs agree with theirs within rounding (bit for bit where
every float value is exactly computable).
"""
from __future__ import annotations

import time

import numpy as np

from fractalc.errors import BackendUnavailable, ModelError

from . import kernels, plan as _plan

MAX_BATCH = 1 << 16


class Executor:
    def __init__(self, model, threads: int | None = None, isa: str | None = None):
        from fractalc.backends.onnx.loader import load_model
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailable(f"the runtime needs onnx and onnxruntime ({exc})",
                                     hint='pip install "fractalc[onnx]"') from None
        self.threads = kernels._threads(threads)
        self.isa = kernels.resolve_isa(isa)
        try:
            proto = load_model(model)
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            # the loader's checks should turn every malformed model into a ModelError; this
            # keeps the runtime's promise where one slips through (e.g. an int attribute
            # given where ints are expected)
            raise ModelError(f"model is malformed: {type(exc).__name__}: {exc}") from None
        meta = {p.key: p.value for p in proto.metadata_props}
        self.metadata = meta
        self.plan = _plan.build(proto, self.threads, self.isa)
        self._source = model  # what the caller gave (a path, bytes or a proto): run_all reloads it
        self._unfused = None
        p = self.plan
        self.input_name = p.input_name
        self.input_shape = p.input_shape
        self.output_shape = p.output_val.shape
        self._steps = [(s.fast or s.fn, s.ins, s.out, f) for s, f in zip(p.steps, p.free_after)]

    def _check_input(self, x) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            raise ModelError(f"input must be a numpy array, got {type(x).__name__}")
        if x.dtype != np.float32:
            raise ModelError(f"input must be float32, got {x.dtype}")
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape or not 1 <= x.shape[0] <= MAX_BATCH:
            raise ModelError(f"input must have shape (N, {', '.join(map(str, self.input_shape))}) with "
                             f"1 <= N <= {MAX_BATCH}, got {tuple(x.shape)}")
        if self.plan.input_nchw:
            return np.ascontiguousarray(x)
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))

    def run(self, x: np.ndarray, profile: dict | None = None) -> np.ndarray:
        """Run on float32 ``x`` ``(N, C, H, W)``; returns the graph output (NCHW if 4-D).

        With `profile` (a dict), adds the seconds spent per operator kind to it.
        """
        vals = [None] * self.plan.n_slots
        vals[0] = self._check_input(x)
        with np.errstate(all="ignore"):  # inf/NaN are data, not errors (as in onnxruntime)
            self._loop(vals, profile)
        y = vals[self.plan.output_slot]
        if self.plan.output_val.kind == "f4":
            y = y.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(y)

    def _loop(self, vals, profile):
        # a fused step may give two values (Step.out a pair of slots)
        if profile is None:
            for fn, ins, out, free in self._steps:
                if out.__class__ is int:
                    vals[out] = fn(*[vals[i] for i in ins])
                else:
                    vals[out[0]], vals[out[1]] = fn(*[vals[i] for i in ins])
                for i in free:
                    vals[i] = None
        else:
            clock = time.perf_counter
            for st, (fn, ins, out, free) in zip(self.plan.steps, self._steps):
                t0 = clock()
                if out.__class__ is int:
                    vals[out] = fn(*[vals[i] for i in ins])
                else:
                    vals[out[0]], vals[out[1]] = fn(*[vals[i] for i in ins])
                profile[st.kind] = profile.get(st.kind, 0.0) + clock() - t0
                for i in free:
                    vals[i] = None

    def run_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every value of the graph by its ONNX name, in ONNX layouts (floats NCHW, bits as
        packed NHWC words): for tests and debugging, nothing is released. Runs an unfused plan
        (built on first use from the model as given: a file is read again), so values that
        fusion never materialises are there too."""
        if self._unfused is None:
            from fractalc.backends.onnx.loader import load_model
            self._unfused = _plan.build(load_model(self._source), self.threads, self.isa, fuse=False)
        plan = self._unfused
        vals = [None] * plan.n_slots
        vals[0] = self._check_input(x)
        for st in plan.steps:  # the out-of-place ops: every value stays intact
            vals[st.out] = st.fn(*[vals[i] for i in st.ins])
        out = {}
        for name, slot in plan.names.items():
            v = vals[slot]
            if plan.kinds[slot] == "f4":
                v = v.transpose(0, 3, 1, 2)
            out[name] = np.ascontiguousarray(v)
        return out
