"""Standard ONNX nodes the executor has no numpy path for, run by onnxruntime one node at a time.

Each such node becomes a tiny ONNX model (the node, its initializers, and Transposes that take
and give the executor's channels-last 4-D layout), loaded once into an onnxruntime session. The
float convolutions of the lowered graphs (stems, transitions) go this way: onnxruntime's MLAS
convolution is several times faster than anything numpy offers (measured in bench_models.py).
"""
from __future__ import annotations

import numpy as np

from fractalc.errors import ModelError


def _session(model, threads: int):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    # onnxruntime's workers spin after each op by default; between our kernel calls that
    # steals the cores from the XNOR threads (measured: 24 ms instead of 7 ms per model)
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _model(node, inits, in_ranks, out_4d, opset, chain=()):
    """One node (or `node` followed by the single-input `chain` nodes, each reading the
    previous one's output) as a model taking and giving channels-last 4-D tensors."""
    from onnx import TensorProto, helper
    nodes, inputs = [], []
    renamed = []
    for i, (name, rank) in enumerate(zip(node.input, in_ranks)):
        if rank is None:  # an initializer, or an omitted optional input
            renamed.append(name)
            continue
        feed = f"in{i}"
        if rank == "nchw":
            inputs.append(helper.make_tensor_value_info(feed, TensorProto.FLOAT, ["N", "C", "H", "W"]))
            renamed.append(feed)
        elif rank == 4:
            inputs.append(helper.make_tensor_value_info(feed, TensorProto.FLOAT, ["N", "H", "W", "C"]))
            nodes.append(helper.make_node("Transpose", [feed], [f"t{i}"], perm=[0, 3, 1, 2]))
            renamed.append(f"t{i}")
        else:
            inputs.append(helper.make_tensor_value_info(feed, TensorProto.FLOAT, None))
            renamed.append(feed)
    last = "y0"
    core = helper.make_node(node.op_type, renamed, [last], domain=node.domain, name="node")
    core.attribute.extend(node.attribute)
    nodes.append(core)
    for k, nd in enumerate(chain):
        nxt = helper.make_node(nd.op_type, [last] + list(nd.input[1:]), [f"y{k + 1}"], domain=nd.domain,
                               name=f"node{k + 1}")
        nxt.attribute.extend(nd.attribute)
        nodes.append(nxt)
        last = f"y{k + 1}"
    if out_4d:
        nodes.append(helper.make_node("Transpose", [last], ["y"], perm=[0, 2, 3, 1]))
    else:
        nodes.append(helper.make_node("Identity", [last], ["y"]))
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    g = helper.make_graph(nodes, "n", inputs, [out], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def make(node, inits, in_shapes, opset: int, threads: int, chain=()):
    """A closure running `node` on channels-last inputs, and its output's logical shape tail.

    `in_shapes[i]` is the logical (NCHW, batch-less) shape of runtime input i, or None where
    the input is an initializer (in `inits`). Raises ModelError where onnxruntime refuses the
    node or its output is not a float32 tensor with the batch first.
    """
    # ("nchw", shape): a 4-D input given NCHW (not transposed)
    ranks = [None if s is None else "nchw" if s[0] == "nchw" else len(s) + 1 for s in in_shapes]
    in_shapes = [s[1] if s is not None and s[0] == "nchw" else s for s in in_shapes]

    def probe(sess, batch, out4):
        feeds = {}
        for i, s in enumerate(in_shapes):
            if s is None:
                continue
            shape = (batch,) + tuple(s)
            if ranks[i] == 4:
                shape = (batch, s[1], s[2], s[0])
            feeds[f"in{i}"] = np.zeros(shape, np.float32)
        y = sess.run(None, feeds)[0]
        return y

    # guess the output rank (4-D in, 4-D out for nearly every op), prove it on a batch of 2
    ops_ = [node.op_type] + [n.op_type for n in chain]
    guess4 = any(r in (4, "nchw") for r in ranks) and not {"Flatten", "Gemm", "MatMul", "Reshape"} & set(ops_)
    try:
        sess = _session(_model(node, inits, ranks, guess4, opset, chain), threads)
        y = probe(sess, 2, guess4)
        if (y.ndim == 4) != guess4:
            sess = _session(_model(node, inits, ranks, not guess4, opset, chain), threads)
            y = probe(sess, 2, not guess4)
    except ModelError:
        raise
    except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidGraph...)
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{node.op_type} node {node.name!r}: onnxruntime refuses it: {first}") from None
    if not (isinstance(y, np.ndarray) and y.dtype == np.float32 and y.ndim >= 1 and y.shape[0] == 2):
        raise ModelError(f"{node.op_type} node {node.name!r}: the native runtime needs a float32 "
                         f"output with the batch first, got {getattr(y, 'dtype', '?')} {getattr(y, 'shape', '?')}")
    # stored channels-last: the logical (NCHW) shape tail is (C, H, W)
    tail = tuple(int(d) for d in (y.shape[1:] if y.ndim != 4 else (y.shape[3], y.shape[1], y.shape[2])))
    names = [f"in{i}" for i, s in enumerate(in_shapes) if s is not None]
    run = sess.run

    def f(*xs):
        return run(None, dict(zip(names, xs)))[0]
    return f, tail


def whole(proto, input_name: str, input_shape, threads: int):
    """A model with no ai.fractalc operator (the standard ``onnx`` flavour, or a float network)
    in one onnxruntime session: NCHW in, the graph output out, and its shape tail."""
    try:
        sess = _session(proto, threads)
        y = sess.run(None, {input_name: np.zeros((2,) + tuple(input_shape), np.float32)})[0]
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"onnxruntime refuses the model: {first}") from None
    if not (isinstance(y, np.ndarray) and y.dtype == np.float32 and y.ndim >= 1 and y.shape[0] == 2):
        raise ModelError(f"the model's output must be float32 with the batch first, got "
                         f"{getattr(y, 'dtype', '?')} {getattr(y, 'shape', '?')}")
    run = sess.run
    return (lambda x: run(None, {input_name: x})[0]), tuple(int(d) for d in y.shape[1:])
