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


def load(path: str | Path, spec_sha256: str | None = None) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
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
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"no weights file at {path}") from None
    except Exception as exc:
        raise ModelError(f"weights file {path} is corrupt or not a torch state_dict "
                         f"({type(exc).__name__})") from None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path} holds no state_dict")
    return obj
