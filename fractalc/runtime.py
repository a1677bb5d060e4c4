"""The native runtime's public API: run an ``onnx-xnor`` model on the CPU with the XNOR kernels.

    from fractalc.runtime import Session
    y = Session("model.onnx", threads=2).run(x)      # x: float32 (N, C, H, W)

`Session` loads and validates the whole model once (every node's attributes, initializer
dtypes and sizes, weight packing, static shapes): a malformed model raises `ModelError`, never
crashes. `run` checks the input's dtype and shape and returns the graph output (float32).

Two engines behind one API (``Session.engine`` says which runs):
- ``"native"``: the standalone C++ engine (backends/xnor/engine.py, include/fractalc_rt.h):
  the model is lowered to its file format (or given as an ``.frt`` engine file, memory-mapped)
  and every operator runs natively, float ones included; no onnxruntime at inference;
- ``"executor"``: the planner/executor (backends/xnor/plan.py): XNOR kernels plus numpy and
  onnxruntime for float ops. The fallback, for graphs with an operator (or a form of one) the
  native engine lacks, e.g. the standard ``onnx`` flavour, which runs as one onnxruntime session.
``engine="auto"`` (default) picks the native engine whenever it runs the whole model.
Binary convolutions and bit packing run in the native kernels either way (ISA chosen at run
time, ``FRACTALC_ISA`` or `isa` forces one). Results are identical for any thread count and
ISA.

Importing this module imports neither torch, onnx nor the native extension.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


class Session:
    """A loaded model (an onnx-xnor file, path or bytes, or an ``.frt`` engine file). `threads`:
    kernel (and onnxruntime) threads (default: all CPUs, or ``$FRACTALC_THREADS``); `isa`:
    ``"portable"|"avx2"|"avx512"`` (default ``$FRACTALC_ISA`` or the best this CPU runs);
    `engine`: ``"auto"|"native"|"executor"`` (see the module doc)."""

    def __init__(self, model: "str | Path | bytes", threads: int | None = None, isa: str | None = None,
                 engine: str = "auto"):
        from fractalc.backends.xnor import engine as native
        from fractalc.errors import FractalcError
        if engine not in ("auto", "native", "executor"):
            raise FractalcError(f"engine must be auto, native or executor, got {engine!r}")
        src = str(model) if isinstance(model, Path) else model
        self._en = self._ex = None
        if engine != "executor":
            try:
                self._en = native.Engine(src, threads=threads, isa=isa)
            except Exception:
                # auto: anything the native engine refuses goes to the executor, which runs it or
                # raises its own (documented) error for a malformed model
                if engine == "native" or native.is_engine_file(src):
                    raise
        if self._en is None:
            from fractalc.backends.xnor.executor import Executor
            self._ex = Executor(src, threads=threads, isa=isa)
        self._run = (self._en or self._ex).run

    @property
    def engine(self) -> str:
        """``"native"`` (the standalone C++ engine) or ``"executor"`` (the planner fallback)."""
        return "native" if self._en is not None else "executor"

    @property
    def threads(self) -> int:
        return (self._en or self._ex).threads

    @property
    def isa(self) -> str:
        return (self._en or self._ex).isa

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) the model takes (any batch N)."""
        return (self._en or self._ex).input_shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The output's shape without the batch."""
        return (self._en or self._ex).output_shape

    @property
    def metadata(self) -> dict[str, str]:
        return dict((self._en or self._ex).metadata)

    def op_counts(self) -> dict[str, int]:
        """Number of plan steps (native: engine ops) per operator kind."""
        return self._en.op_counts() if self._en is not None else dict(self._ex.plan.counts)

    def run(self, x: np.ndarray, profile: dict | None = None) -> np.ndarray:
        """Run on float32 ``x`` of shape ``(N,) + input_shape``; `profile` (a dict) collects
        the seconds spent per operator kind."""
        return self._run(x, profile)


def run(model, x: np.ndarray, threads: int | None = None, isa: str | None = None) -> np.ndarray:
    """One-shot `Session(model, threads, isa).run(x)`."""
    return Session(model, threads, isa).run(x)
