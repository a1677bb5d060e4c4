"""Atomic file output: write to a temporary file beside the target, then rename.

A crash or a refused input never leaves a half-written artifact, and an existing file is
replaced in one step.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import FractalcError


def atomic_write(path: str | Path, data: bytes | str) -> None:
    path = Path(path)
    if isinstance(data, str):
        data = data.encode()
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FractalcError(f"cannot write {str(path)!r}: directory {str(parent)!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
