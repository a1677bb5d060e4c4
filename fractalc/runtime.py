"""The native runtime's public API: run an ``onnx-xnor`` model on the CPU with the XNOR kernels.

    from fractalc.runtime import Session
    y = Session("model.onnx", threads=2).run(x)      # x: float32 (N, C, H, W)

`Session` loads and validates the whole model once (every node's attributes, initializer
dtypes and sizes, weight packing, static shapes): a malformed model raises `ModelError`, never
crashes. `run` checks the input's dtype and shape and returns the graph output (float32).
Binary convolutions and bit packing run in the native kernels (ISA chosen at run time,
``FRACTALC_ISA`` or `isa` forces one); the float ops run in numpy, float convolutions in
onnxruntime. Results are identical for any thread count and ISA. A model without ai.fractalc
operators (the standard ``onnx`` flavour) runs too, as one onnxruntime session.

Importing this module imports neither torch, onnx nor the native extension.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


class Session:
    """A loaded model. `threads`: kernel and onnxruntime threads (default: all CPUs, or
    ``$FRACTALC_THREADS``); `isa`: ``"portable"|"avx2"|"avx512"`` (default ``$FRACTALC_ISA`` or
    the best this CPU runs)."""

    def __init__(self, model: "str | Path | bytes", threads: int | None = None, isa: str | None = None):
        from fractalc.backends.xnor.executor import Executor
        self._ex = Executor(str(model) if isinstance(model, Path) else model, threads=threads, isa=isa)

    @property
    def threads(self) -> int:
        return self._ex.threads

    @property
    def isa(self) -> str:
        return self._ex.isa

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) the model takes (any batch N)."""
        return self._ex.input_shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The output's shape without the batch."""
        return self._ex.output_shape

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self._ex.metadata)

    def op_counts(self) -> dict[str, int]:
        """Number of plan steps per operator kind."""
        return dict(self._ex.plan.counts)

    def run(self, x: np.ndarray, profile: dict | None = None) -> np.ndarray:
        """Run on float32 ``x`` of shape ``(N,) + input_shape``; `profile` (a dict) collects
        the seconds spent per operator kind."""
        return self._ex.run(x, profile)


def run(model, x: np.ndarray, threads: int | None = None, isa: str | None = None) -> np.ndarray:
    """One-shot `Session(model, threads, isa).run(x)`."""
    return Session(model, threads, isa).run(x)
