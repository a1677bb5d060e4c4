"""Compile targets: name -> "module:function" that writes the artifact.

Each function has the signature ``emit(compiled, output: str | None, options: dict) -> str | None``
and returns text for standard output when `output` is None (targets that write binary files
require -o). Modules are imported only when their target is used, so `import fractalc` and
commands that need no backend never import torch or onnx. ``options`` holds the compile
command's generic options (seed, weights, column, ...); a target refuses options it does not
understand with a `FractalcError`.
"""
from __future__ import annotations

import importlib

from fractalc.errors import FractalcError

TARGETS: dict[str, tuple[str, str]] = {
    "ir": ("fractalc.ir.printer:emit_ir", "readable IR listing (one line per node)"),
    "json": ("fractalc.ir.printer:emit_json", "the IR as JSON"),
    "onnx": ("fractalc.backends.onnx.emit:emit_onnx", "ONNX, standard ops (opset 17; needs -o)"),
    "onnx-xnor": ("fractalc.backends.onnx.emit:emit_onnx_xnor", "ONNX with binary convs lowered to ai.fractalc XNOR ops (needs -o)"),
    "torch": ("fractalc.backends.torch:emit_source", "standalone PyTorch source (.py), needs only torch"),
    "torch-state": ("fractalc.backends.torch:emit_state", "initialised torch state_dict (.pt; -o required)"),
}


def emit(target: str, compiled, output: str | None, options: dict):
    if target not in TARGETS:
        raise FractalcError(f"unknown target {target!r}; choose from: {', '.join(TARGETS)}")
    path, _ = TARGETS[target]
    module, func = path.split(":")
    try:
        fn = getattr(importlib.import_module(module), func)
    except ImportError as exc:
        raise FractalcError(f"target {target!r} needs a package that is not installed: {exc.name}",
                            hint="install the extras: pip install 'fractalc[all]'") from None
    return fn(compiled, output, options)
