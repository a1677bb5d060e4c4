"""Test support shared by the ONNX backend's tests and the native runtime's: exactly computable
weights and inputs, and every intermediate value of a torch network.

Dyadic data (`dyadic_state`, `dyadic_input`): every weight, BN parameter and input is a small
multiple of a power of two, binary-conv weights are +-2^-k per output channel (so alpha = mean
|W| is exact), float conv and linear weights are sparse in {-1, 0, 1} (no growth of fractional
bits), and BN variances are chosen so that float32(var + eps) is 1 or 4 (so 1/sqrt(var + eps)
is exact). Sums over such values are exact in float32 as long as they stay
small, so engines that compute in float32 in any order agree exactly; `torch_values` together
with a float64 run shows where that holds.
"""
from __future__ import annotations

import numpy as np

from fractalc import ir

from .weights import expected_keys


def exact_var(eps: float, target: float) -> np.float32:
    """A float32 var >= 0 with float32(var + float32(eps)) == target (a power of four)."""
    e = np.float32(eps)
    v = np.float32(target) - e
    for cand in (v, np.nextafter(v, np.float32(0)), np.nextafter(v, np.float32(np.inf))):
        if np.float32(cand + e) == np.float32(target) and cand >= 0:
            return np.float32(cand)
    raise ValueError(f"no float32 var gives var + {eps} == {target}")  # not for eps << target


def dyadic_state(g: ir.Graph, seed: int = 0, grain: int = 8) -> dict[str, np.ndarray]:
    """Exactly computable weights for every parameter of `g` (torch state_dict keys).

    BN means and shifts are multiples of 1/`grain` (a power of two): a coarse grain makes
    exact zeros before a sign frequent (testing sign(0) = +1), a fine one makes them rare
    (fewer near-ties where a network's arithmetic is inexact, e.g. a mean of 3 inputs).
    """
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for n in g.order():
        op = g.op(n)
        if isinstance(op, ir.BinaryConv):
            shape = expected_keys_for(g, n)[f"{n}.weight"]
            mag = 2.0 ** -rng.integers(1, 4, size=(shape[0], 1, 1, 1))
            out[f"{n}.weight"] = (rng.choice([-1.0, 1.0], size=shape) * mag).astype(np.float32)
        elif isinstance(op, (ir.Conv, ir.Linear)):
            # sparse weights in {-1, 0, 1}: no fractional bits added, about 4 terms per output
            for k, shape in expected_keys_for(g, n).items():
                fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
                keep = rng.random(shape) < min(1.0, 4.0 / fan_in)
                out[k] = (rng.choice([-1.0, 1.0], size=shape) * keep).astype(np.float32)
        elif isinstance(op, ir.BatchNorm):
            c = g.shape(n)[0]
            gamma = rng.choice([-2.0, -1.0, 0.0, 1.0, 2.0], size=c, p=[.1, .25, .05, .4, .2])
            target = rng.choice([1.0, 4.0], size=c)  # 1 / sqrt(var + eps) in {1, 1/2}
            out[f"{n}.weight"] = gamma.astype(np.float32)
            out[f"{n}.bias"] = (rng.integers(-grain // 2, grain // 2 + 1, size=c) / grain).astype(np.float32)
            out[f"{n}.running_mean"] = (rng.integers(-grain // 2, grain // 2 + 1, size=c) / grain).astype(np.float32)
            out[f"{n}.running_var"] = np.array([exact_var(op.eps, t) for t in target], np.float32)
            out[f"{n}.num_batches_tracked"] = np.array(0, np.int64)
    return out


def expected_keys_for(g: ir.Graph, n: str) -> dict[str, tuple[int, ...]]:
    prefix = n + "."
    return {k: s for k, s in expected_keys(g).items() if k.startswith(prefix) and "." not in k[len(prefix):]}


def dyadic_input(shape, seed: int = 0) -> np.ndarray:
    """Inputs that are multiples of 1/4 in [-1, 1]."""
    return (np.random.default_rng(seed).integers(-4, 5, size=shape) / 4.0).astype(np.float32)


def torch_model(g: ir.Graph, state: dict[str, np.ndarray]):
    """The torch backend's network of `g` with `state` loaded, eval and binary mode."""
    import torch

    from fractalc.backends.torch import from_graph
    model = from_graph(g, seed=0)
    sd = {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}
    model.load_state_dict(sd, strict=False)
    return model.eval().set_mode("binary")


def torch_values(g: ir.Graph, model, x: np.ndarray, dtype=None) -> dict[str, np.ndarray]:
    """The value of every IR node (by id) in the torch network's own forward, as numpy.

    Replays the network's precomputed steps with the backend's `run_step` (the forward's own
    code), and checks the replay reproduces ``model(x)``.
    """
    import copy

    import torch

    from fractalc.backends.torch.build import run_step
    from fractalc.backends.torch.plan import make_plan

    if dtype is not None:
        model = copy.deepcopy(model).to(dtype)
        # var + eps exactly as in float32 (where `dyadic_state` makes it a power of four)
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                v32 = (mod.running_var.float() + torch.tensor(mod.eps, dtype=torch.float32))
                mod.running_var.copy_(v32.to(dtype) - mod.eps)
    ids = [st.id for st in make_plan(g).steps]
    t = torch.from_numpy(np.asarray(x)).to(dtype or torch.float32)
    vals = []
    with torch.no_grad():
        exact = model._fc_roles()  # the roles its forward uses (by model.deployed_arithmetic)
        for (kind, layer, ins, args), ex in zip(model._fc_steps, exact):
            vals.append(run_step(kind, layer, [vals[i] for i in ins], args, t, None, model.mode, False, ex))
        final = model(t)
    if not torch.equal(final, vals[model._fc_output]):
        raise AssertionError("replaying the torch network's steps does not reproduce its forward")
    return {i: v.numpy() for i, v in zip(ids, vals)}
