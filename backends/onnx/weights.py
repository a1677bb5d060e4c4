"""Weights for the ONNX backend: a state_dict file, or a seeded initialisation.

Keys follow the project's torch state_dict convention (the parameters of IR node ``a.b.conv1``
are ``a.b.conv1.weight`` ...). `expected_keys` lists what a graph needs; `check_state` refuses
a mismatch with a `ModelError` naming the missing, unexpected and wrong-shape keys.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from fractalc import ir
from fractalc.ir import ops
from fractalc.errors import BackendUnavailable, ModelError

# BatchNorm's step counter is part of a torch state_dict but means nothing at inference.
_OPTIONAL = ("num_batches_tracked",)


def expected_keys(g: ir.Graph) -> dict[str, tuple[int, ...]]:
    """state_dict key -> shape for every parameter and buffer the graph's nodes use (their
    op-table tensors)."""
    return {f"{n}.{t.name}": tuple(t.shape) for n in g.order() for t in ops.tensors(g, n)}


def _listing(keys, limit=5) -> str:
    keys = list(keys)
    more = f" (and {len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_state(state: dict, g: ir.Graph, source: str, allow_extra: bool = False) -> dict[str, np.ndarray]:
    """Validate `state` against `g`; return float32 numpy arrays for exactly the expected keys."""
    want = expected_keys(g)
    optional = {k for k in state if k.rsplit(".", 1)[-1] in _OPTIONAL}
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want and k not in optional]
    wrong = [f"{k} is {tuple(np.shape(state[k]))}, expected {want[k]}"
             for k in want if k in state and tuple(np.shape(state[k])) != want[k]]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if extra and not allow_extra:
        problems.append(f"unexpected keys: {_listing(extra)}")
    if wrong:
        problems.append(f"wrong shapes: {_listing(wrong, 3)}")
    if problems:
        raise ModelError(f"weights {source} do not fit network {g.name!r}: " + "; ".join(problems),
                         hint="the keys follow the IR ids (see `fractalc compile SPEC` for them)")
    out = {}
    for k in want:
        a = np.asarray(state[k], dtype=np.float32)
        if not np.all(np.isfinite(a)):
            raise ModelError(f"weights {source}: {k} contains NaN or infinite values")
        out[k] = a
    return out


def load_state_file(path: str | Path) -> dict[str, np.ndarray]:
    """Read a torch state_dict (``torch.save(model.state_dict(), path)``) as numpy arrays."""
    try:
        import torch
    except ImportError:
        raise BackendUnavailable("reading --weights needs torch", hint="pip install 'fractalc[torch]'") from None
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"weights file {str(p)!r} does not exist")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or unsafe pickle content
        raise ModelError(f"cannot read weights {str(p)!r}: not a torch state_dict file, or it "
                         f"holds objects other than tensors (torch.load(weights_only=True) "
                         f"raised {type(exc).__name__})",
                         hint="save it with torch.save(model.state_dict(), path)") from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise ModelError(f"weights {str(p)!r} hold a {type(obj).__name__}, not a state_dict "
                         "(a dict of tensors)", hint="save model.state_dict(), not the model")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelError(f"weights {str(p)!r}: values of {_listing(bad)} are not tensors "
                         "(a checkpoint wrapping a state_dict?)", hint="save model.state_dict() itself")
    return {k: v.detach().to(torch.float32).numpy() if v.is_floating_point() else v.numpy()
            for k, v in obj.items()}


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
        state = load_state_file(path)
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        return check_state(state, compiled.graph, repr(str(path)), allow_extra=column), f"sha256:{digest}"
    seed = 0 if seed is None else seed
    state = seeded_state(compiled, seed)
    return check_state(state, compiled.graph, f"from seed {seed}", allow_extra=True), f"seed:{seed}"
