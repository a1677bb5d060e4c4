"""Loading fractalc ONNX files with clear errors: the entry point for every consumer.

`load_model` accepts a path, bytes or a ModelProto and returns a ModelProto that passed
``onnx.checker.check_model(full_check=True)`` with the ``ai.fractalc`` schemas registered and
whose ``ai.fractalc`` nodes passed `ops.check_node`. Anything else raises `ModelError`.
"""
from __future__ import annotations

from pathlib import Path

from fractalc.errors import ModelError

from . import ops

MAX_MODEL_BYTES = 2 << 30  # protobuf's limit for one message: no valid model is larger


def load_model(model, check: bool = True):
    import onnx
    from google.protobuf.message import DecodeError

    what = "model"
    if isinstance(model, onnx.ModelProto):
        proto = model
    else:
        if isinstance(model, (bytes, bytearray)):
            data = bytes(model)
        else:
            what = repr(str(model))
            p = Path(model)
            if not p.exists():
                raise ModelError(f"ONNX file {what} does not exist")
            # a regular file only: a device (/dev/zero) or a FIFO would be read forever
            from fractalc.fileio import FileRefused, read_limited
            try:
                data = read_limited(p, MAX_MODEL_BYTES)
            except FileRefused as exc:
                raise ModelError(f"cannot read ONNX file {what}: {exc.reason}") from None
        try:
            proto = onnx.load_model_from_string(data)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise ModelError(f"{what} is not an ONNX model (truncated or another format): {exc}") from None
        # protobuf accepts many byte strings as an (almost) empty message
        if not proto.graph.node or not proto.opset_import or proto.ir_version <= 0:
            raise ModelError(f"{what} is not an ONNX model (truncated or another format): "
                             "no graph nodes or opset")
    if check:
        check_fractalc_nodes(proto, what)
        ops.register()
        try:
            onnx.checker.check_model(proto, full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ops.OpError) as exc:
            # (an OpError comes from our schemas' shape inference: types and shapes of inputs)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{what} is not a valid ONNX model: {first}") from None
    return proto


def check_fractalc_nodes(proto, what: str = "model") -> None:
    versions = {o.domain: o.version for o in proto.opset_import}
    nodes = [n for n in proto.graph.node if n.domain == ops.DOMAIN]
    if nodes and versions.get(ops.DOMAIN) != ops.VERSION:
        raise ModelError(f"{what} uses {ops.DOMAIN} version {versions.get(ops.DOMAIN)}; "
                         f"this fractalc implements version {ops.VERSION}")
    for n in nodes:
        try:
            ops.check_node(n)
        except ops.OpError as exc:
            raise ModelError(f"{what}: {exc}") from None
