"""Top-1 / top-5 on a data set's test split with torch, onnxruntime or the XNOR runtime.

All engines get the same normalised test tensors; ONNX engines run a model exported from the
same weights (the ONNX backend's `build`, given the compiled graph), so their predictions
can be compared with torch's.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import FractalcError
from .checkpoint import fit_state_dict, load_weights
from .data import load_data

ENGINES = ("torch", "onnxruntime", "xnor")


def _topk(logits: np.ndarray, y: np.ndarray) -> dict:
    k = min(5, logits.shape[1])
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return {"top1": float((top[:, 0] == y).mean()), "top5": float((top == y[:, None]).any(1).mean()),
            "n": int(len(y))}


def predict(compiled, weights: str, x: torch.Tensor, engine: str, mode: str = "binary",
            batch: int = 256) -> np.ndarray:
    """Logits of `x` (N x C x H x W) from `engine` with `weights` (.safetensors, a checkpoint
    or a state_dict; a `FractalcWarning` when their provenance differs from `compiled`)."""
    from .loop import build_model
    sd = load_weights(weights, compiled)
    model = build_model(compiled, seed=0)
    if getattr(compiled, "column", None) is not None:
        # A column keeps the full network's ids: the weights' extra keys are exactly the
        # dropped branches (see extract_column); missing keys are still refused.
        own = model.state_dict()
        sd = {k: v for k, v in sd.items() if k in own}
    fit_state_dict(model, sd, repr(str(weights)))  # every engine: name the keys that do not fit
    if engine == "torch":
        model.set_mode(mode)
        model.eval()
        # As training's validation computes it (binary layers as deployed, float layers in
        # torch's order), so `eval --engine torch` reports the number `train` logged; the
        # engine's exact float arithmetic, emulated op by op, is many times slower (the
        # deployed bytes come from `--engine xnor`).
        model.deployed_arithmetic = "binary"
        with torch.no_grad():
            return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)]).numpy()
    if engine not in ENGINES:
        raise FractalcError(f"engine must be one of {', '.join(ENGINES)}")
    from ..backends.onnx.emit import build
    from ..fileio import atomic_write
    from ..weights_file import write
    with tempfile.TemporaryDirectory() as tmp:
        sd_path = Path(tmp) / "weights.safetensors"
        write(sd_path, sd)  # checked above; no provenance, so no second warning
        flavour = "onnx" if engine == "onnxruntime" else "onnx-xnor"
        model_path = str(Path(tmp) / "model.onnx")
        options = {"weights": str(sd_path), "seed": None, "column": getattr(compiled, "column", None)}
        atomic_write(model_path, build(compiled, options, flavour).SerializeToString(deterministic=True))
        xs = x.numpy().astype(np.float32)
        if engine == "onnxruntime":
            import onnxruntime as ort
            sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            return np.concatenate([sess.run(None, {name: xs[i:i + batch]})[0] for i in range(0, len(xs), batch)])
        from ..runtime import Session
        sess = Session(model_path)
        return np.concatenate([sess.run(xs[i:i + batch]) for i in range(0, len(xs), batch)])


def evaluate_engine(compiled, weights: str, data: str, engine: str, mode: str = "binary") -> dict:
    g = compiled.graph
    ds = load_data(data, tuple(g.shape(g.input_id)))
    logits = predict(compiled, weights, ds.test_x, engine, mode)
    return {"engine": engine, **_topk(logits, ds.test_y.numpy())}
