"""Checkpoints: written atomically after every epoch, validated when read.

A checkpoint is a dict saved with ``torch.save``: ``format`` ("fractalc-checkpoint"),
``version``, ``spec_sha256``, ``overrides``, ``config``, ``stage`` and ``epoch`` (epochs done in
that stage), ``model`` (state_dict), ``optimizer``, ``scheduler``, ``rng`` (torch RNG state) and
``history`` (the metrics rows so far). Writing goes to a temp file that is renamed over the
old checkpoint, which is first kept as ``<name>.prev.pt``; a corrupt or truncated file is
refused with a message and never overwritten by the refusal.

Final weights are not checkpoints: `save_weights` writes them as safetensors with their
provenance (fractalc.weights_file), `load_state_dict` / `load_weights` read them back (and
plain .pt state_dicts and checkpoints); `fit_state_dict` names the keys that do not fit.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from .. import weights_file
from ..errors import ModelError
from ..fileio import atomic_write

FORMAT = weights_file.CHECKPOINT_FORMAT
VERSION = 1
REQUIRED = ("format", "version", "spec_sha256", "config", "stage", "epoch", "model", "optimizer",
            "rng", "history")


def save(path: str | Path, ckpt: dict) -> None:
    path = Path(path)
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **ckpt}, buf)
    if path.exists():
        os.replace(path, path.with_suffix(".prev.pt"))
    atomic_write(path, buf.getvalue())


def _torch_load(path: Path, what: str):
    """`torch.load(weights_only=True)` of a regular file: a FIFO, device, /proc file or a file
    larger than any network fractalc builds is refused (`ModelError`) before torch reads it."""
    from ..fileio import FileRefused, read_limited
    try:
        data = read_limited(path, weights_file.max_weights_bytes())  # weights + optimizer state
    except FileRefused as exc:
        raise ModelError(f"cannot read {what} {str(path)!r}: {exc.reason}") from None
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def load(path: str | Path, spec_sha256: str | None = None) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"no checkpoint at {path}")
    try:
        ckpt = _torch_load(path, "checkpoint")
    except ModelError:
        raise
    except Exception as exc:  # truncated zip, garbage, wrong pickle: all the same to a user
        prev = path.with_suffix(".prev.pt")
        hint = f"the previous checkpoint is kept at {prev}" if prev.exists() else None
        raise ModelError(f"checkpoint {path} is corrupt or truncated ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:120]})", hint=hint) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ModelError(f"{path} is not a fractalc checkpoint")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise ModelError(f"checkpoint {path} lacks {', '.join(missing)}")
    if ckpt["version"] != VERSION:
        raise ModelError(f"checkpoint {path} has version {ckpt['version']}, this fractalc reads {VERSION}")
    if spec_sha256 is not None and ckpt["spec_sha256"] != spec_sha256:
        raise ModelError(f"checkpoint {path} was made from a different spec text "
                         f"(sha256 {ckpt['spec_sha256'][:12]}..., this spec {spec_sha256[:12]}...)")
    return ckpt


def load_state_dict(path: str | Path) -> dict:
    """Model weights (a torch state_dict) from a .safetensors file, a plain state_dict file or
    a checkpoint (`fractalc.weights_file.read`: size-limited, ``weights_only=True``)."""
    return weights_file.read(path).torch()


def load_weights(path: str | Path, compiled=None) -> dict:
    """`load_state_dict`, and when `compiled` is given, a `FractalcWarning` if the file's
    provenance (spec sha256, overrides, network, parameter roles) differs from it."""
    w = weights_file.read(path)
    if compiled is not None:
        from ..backends.onnx.weights import parameter_list
        weights_file.check_provenance(w, compiled, parameter_list(compiled.graph))
    return w.torch()


def save_weights(path: str | Path, model_or_state, compiled, **extra) -> None:
    """Write a model's weights (or a state_dict) as safetensors with the provenance of
    `compiled` (spec name and sha256, overrides, network, column, fractalc version, the
    graph's parameter list) and `extra` metadata, atomically."""
    from ..backends.onnx.weights import provenance
    sd = model_or_state.state_dict() if hasattr(model_or_state, "state_dict") else model_or_state
    weights_file.write(path, sd, provenance(compiled, **extra))


def fit_state_dict(model, sd: dict, source: str) -> None:
    """Load `sd` into `model`, or raise `ModelError` naming the missing, unexpected and
    mis-shaped keys (torch's own message names none of them past its first line)."""
    own = model.state_dict()
    weights_file.check_fit({k: tuple(v.shape) for k, v in own.items()},
                           {k: tuple(v.shape) for k, v in sd.items()}, source)
    model.load_state_dict(sd)
