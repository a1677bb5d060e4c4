"""The PyTorch backend: trainable binary fractal networks from any spec.

Library API:
- `build_torch(spec, seed=0, max_nodes=..., **params)`: compile a spec (or take a `Compiled`)
  and build the network;
- `from_graph(graph, seed=0, **options)`: the network of an IR graph;
- `emit_source` / `emit_state`: the ``torch`` and ``torch-state`` compile targets.

Module paths equal IR ids (state_dict key of node ``a.b.conv1``: ``a.b.conv1.weight``); see
plan.py, build.py, source.py, and binarize.py / drop_path.py / runtime.py for the semantics.
Importing this package does not import torch; building a network does.
"""
from __future__ import annotations

from typing import Any


def _expr(value: Any) -> str:
    """A Python value as spec expression text for an override."""
    if isinstance(value, bool):
        raise TypeError("boolean spec parameters are not supported")
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_expr(v) for v in value) + "]"
    return repr(value)


def build_torch(spec, *, seed: int = 0, max_nodes: int | None = None, **params):
    """The network (a `GraphNetwork`, mode "binary", seeded with `seed`) of `spec`: a .fr path
    or a resolved `Spec`, compiled with `params` overriding its parameters, or a `Compiled`,
    built as it is (nothing is compiled again, so `params` and `max_nodes` must be absent)."""
    from fractalc.compiler import Compiled, compile_spec

    if isinstance(spec, Compiled):
        if params or max_nodes is not None:
            raise TypeError("build_torch: parameters apply to a spec; this one is compiled already")
        return from_graph(spec.graph, seed=seed)
    kw = {} if max_nodes is None else {"max_nodes": max_nodes}
    compiled = compile_spec(spec, {k: _expr(v) for k, v in params.items()}, **kw)
    return from_graph(compiled.graph, seed=seed)


def from_graph(graph, *, seed: int = 0, **options):
    """The network of a verified IR graph; `options` go to `GraphNetwork` (mode, drop_path,
    drop_prob, global_ratio)."""
    from fractalc.cost import refuse_if_too_large

    from .build import GraphNetwork
    from .plan import make_plan

    refuse_if_too_large(graph, f"building {graph.name!r} in torch")
    return GraphNetwork(make_plan(graph), seed=seed, **options)


def _graph(compiled, options: dict, target: str):
    from fractalc.ir.passes.extract_column import extract_column

    known = {"seed", "weights", "column"}
    extra = sorted(k for k, v in options.items() if v is not None and k not in known)
    if extra:
        from fractalc.errors import FractalcError
        raise FractalcError(f"target {target!r} does not take option(s) {', '.join(extra)}")
    g = compiled.graph
    column = options.get("column")
    if column is not None and getattr(compiled, "column", None) != column:  # not yet extracted
        g = extract_column(g, column)
    return g


def emit_source(compiled, output, options: dict):
    """Target ``torch``: the standalone Python source (text)."""
    from fractalc.cost import refuse_if_too_large
    from fractalc.errors import FractalcError

    from .source import source

    if options.get("weights"):
        raise FractalcError("target 'torch' writes source only and takes no --weights",
                            hint="use --target torch-state to write a state_dict")
    g = _graph(compiled, options, "torch")
    # the emitted module allocates its parameters when instantiated: refuse here, with the
    # byte count, rather than hand out source that can only fail in torch's allocator
    refuse_if_too_large(g, f"the torch source of {g.name!r}")
    return source(g, compiled, seed=options.get("seed") or 0, column=options.get("column"))


def emit_state(compiled, output, options: dict):
    """Target ``torch-state``: the initialised state_dict written to `output`: safetensors
    with provenance when `output` ends in ``.safetensors``, else ``torch.save`` format. With
    ``--weights FILE`` (.safetensors or a .pt state_dict) the state is FILE's (a full model's
    weights load into a ``--column`` model: its extra keys are ignored; missing, mis-shaped
    and, without a column, unexpected keys are refused by name)."""
    import io

    import torch

    from fractalc import weights_file
    from fractalc.errors import FractalcError
    from fractalc.ir import ops
    from fractalc.fileio import atomic_write

    if not output:
        raise FractalcError("target 'torch-state' writes a binary file: give -o FILE.pt or -o FILE.safetensors")
    g = _graph(compiled, options, "torch-state")
    params = [(f"{n}.{t.name}", tuple(t.shape), t.role) for n in g.order() for t in ops.tensors(g, n)]
    model = from_graph(g, seed=options.get("seed") or 0)
    if options.get("weights"):
        w = weights_file.read(options["weights"])
        own = model.state_dict()
        weights_file.check_fit({k: tuple(v.shape) for k, v in own.items()},
                               {k: tuple(v.shape) for k, v in w.tensors.items()},
                               repr(str(options["weights"])), g.name,
                               allow_extra=options.get("column") is not None)
        weights_file.check_provenance(w, compiled, params)
        model.load_state_dict({k: v for k, v in w.torch().items() if k in own})
    if str(output).endswith(weights_file.SUFFIX):
        column = options.get("column")
        c = compiled if column is None or getattr(compiled, "column", None) == column else compiled.with_column(column)
        weights_file.write(output, model.state_dict(), weights_file.provenance(c, params))
        return None
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    atomic_write(output, buf.getvalue())
    return None
