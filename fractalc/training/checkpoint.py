"""Checkpoints: written atomically after every epoch, validated when read.

A checkpoint is a dict saved with ``torch.save``: ``format`` ("fractalc-checkpoint"),
``version``, ``spec_sha256``, ``overrides``, ``config``, ``stage`` and ``epoch`` (epochs done in
that stage), ``model`` (state_dict), ``optimizer``, ``scheduler``, ``rng`` (torch RNG state) and
``history`` (the metrics rows so far). Writing goes to a temp file that is renamed over the
old checkpoint, which is first kept as ``<name>.prev.pt``; a corrupt or truncated file is
refused with a message and never overwritten by the refusal.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from ..errors import ModelError
from ..fileio import atomic_write

FORMAT = "fractalc-checkpoint"
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
    from ..limits import max_model_bytes
    try:
        data = read_limited(path, 2 * max_model_bytes() + (64 << 20))  # weights + optimizer state
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
    """Model weights from a checkpoint or a plain state_dict file."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"no weights file at {path}")
    try:
        obj = _torch_load(path, "weights file")
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"weights file {path} is corrupt or not a torch state_dict "
                         f"({type(exc).__name__})") from None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path} holds no state_dict")
    return obj


def fit_state_dict(model, sd: dict, source: str) -> None:
    """Load `sd` into `model`, or raise `ModelError` naming the missing, unexpected and
    mis-shaped keys (torch's own message names none of them past its first line)."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shaped = [f"{k} ({'x'.join(map(str, sd[k].shape))}, the network has "
              f"{'x'.join(map(str, own[k].shape))})"
              for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shaped:
        def some(keys):
            return ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
        parts = [f"{len(keys)} {what}: {some(keys)}" for what, keys in
                 (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shaped)) if keys]
        raise ModelError(f"{source} does not fit this network: " + "; ".join(parts))
    model.load_state_dict(sd)
