"""Weights for the ONNX backend: a state_dict file, or a seeded initialisation.

Keys follow the project's torch state_dict convention (the parameters of IR node ``a.b.conv1``
are ``a.b.conv1.weight`` ...). `expected_keys` lists what a graph needs; `check_state` refuses
a mismatch with a `ModelError` naming the missing, unexpected and mis-shaped keys. Files are
read by `fractalc.weights_file` (.safetensors without torch; .pt state_dicts with
``torch.load(weights_only=True)``), whose provenance is checked against the compiled spec.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fractalc import ir, weights_file
from fractalc.ir import ops
from fractalc.errors import BackendUnavailable, ModelError

# BatchNorm's step counter is part of a torch state_dict but means nothing at inference.
_OPTIONAL = ("num_batches_tracked",)


def expected_keys(g: ir.Graph) -> dict[str, tuple[int, ...]]:
    """state_dict key -> shape for every parameter and buffer the graph's nodes use (their
    op-table tensors; "fixed" ones are constants of the op, not state)."""
    return {f"{n}.{t.name}": tuple(t.shape) for n in g.order() for t in ops.tensors(g, n)
            if t.role != "fixed"}


def parameter_list(g: ir.Graph) -> list[tuple[str, tuple[int, ...], str]]:
    """(state_dict key, shape, role) of every parameter and buffer of `g`, in graph order:
    the ``parameters`` provenance entry of a weights file (see fractalc.weights_file)."""
    return [(f"{n}.{t.name}", tuple(t.shape), t.role) for n in g.order() for t in ops.tensors(g, n)]


def provenance(compiled, **extra) -> dict[str, str]:
    """safetensors metadata for weights of `compiled` (see fractalc.weights_file.provenance)."""
    return weights_file.provenance(compiled, parameter_list(compiled.graph), **extra)


def check_state(state: dict, g: ir.Graph, source: str, allow_extra: bool = False) -> dict[str, np.ndarray]:
    """Validate `state` against `g`; return float32 numpy arrays for exactly the expected keys."""
    want = expected_keys(g)
    weights_file.check_fit(want, {k: tuple(np.shape(v)) for k, v in state.items()}, source, g.name,
                           allow_extra=allow_extra, optional=_OPTIONAL)
    out = {}
    for k in want:
        a = np.asarray(state[k], dtype=np.float32)
        if not np.all(np.isfinite(a)):
            raise ModelError(f"weights {source}: {k} contains NaN or infinite values")
        out[k] = a
    return out


def load_state_file(path: str | Path) -> dict[str, np.ndarray]:
    """Read a weights file (.safetensors, a torch state_dict or a fractalc checkpoint) as
    numpy arrays (fractalc.weights_file.read)."""
    return weights_file.read(path).tensors


def seeded_state(compiled, seed: int) -> dict[str, np.ndarray]:
    """The torch backend's seeded initialisation of `compiled.graph`, as numpy arrays."""
    try:
        from fractalc.backends.torch import from_graph
        model = from_graph(compiled.graph, seed=seed)
    except ImportError as exc:
        raise BackendUnavailable(f"initialising weights from a seed needs the torch backend ({exc.name})",
                                 hint="pass --weights, or pip install 'fractalc[torch]'") from None
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def resolve(compiled, options: dict) -> tuple[dict[str, np.ndarray], str]:
    """(validated state, description for metadata) from the compile options."""
    path, seed = options.get("weights"), options.get("seed")
    column = options.get("column") is not None
    if path is not None:
        if seed is not None:
            raise ModelError("give either --weights or --seed, not both")
        w = weights_file.read(path)
        state = check_state(w.tensors, compiled.graph, repr(str(path)), allow_extra=column)
        weights_file.check_provenance(w, compiled, parameter_list(compiled.graph))
        return state, f"sha256:{w.sha256}"
    seed = 0 if seed is None else seed
    state = seeded_state(compiled, seed)
    return check_state(state, compiled.graph, f"from seed {seed}", allow_extra=True), f"seed:{seed}"
