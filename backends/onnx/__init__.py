"""ONNX backend: IR -> ONNX, standard (``onnx``) and XNOR-lowered (``onnx-xnor``) flavours.

- `to_onnx(compiled, state)` / `to_onnx_xnor(compiled, state)`: ModelProtos from an IR and a
  numpy state dict (torch state_dict keys);
- `build(compiled, options, flavour)`: the same with weights resolved from --weights / --seed;
- `load_model(path)`: read and validate a fractalc ONNX file (clear `ModelError`s);
- `run_reference(model, x)`: the numpy reference executor of the ``ai.fractalc`` ops.

Importing this package imports neither torch nor onnx; the functions do when called.
"""
from __future__ import annotations


def to_onnx(*args, **kwargs):
    from .export import to_onnx as f
    return f(*args, **kwargs)


def to_onnx_xnor(*args, **kwargs):
    from .lower import to_onnx_xnor as f
    return f(*args, **kwargs)


def build(*args, **kwargs):
    from .emit import build as f
    return f(*args, **kwargs)


def load_model(*args, **kwargs):
    from .loader import load_model as f
    return f(*args, **kwargs)


def run_reference(*args, **kwargs):
    from .reference import run_reference as f
    return f(*args, **kwargs)
