"""Write a diagram in the format named by the file extension (.dot, .svg, .png, .pdf).

.dot needs nothing else; the others run Graphviz's `dot` program (Debian package `graphviz`).
The bytes are produced in full before anything is written, then `atomic_write` replaces the
target in one step, so a failing render never touches an existing file.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from fractalc.errors import BackendUnavailable, FractalcError
from fractalc.fileio import atomic_write

FORMATS = ("dot", "svg", "png", "pdf")


def format_of(path: str | Path) -> str:
    ext = Path(path).suffix.lower().lstrip(".")
    if ext == "gv":
        return "dot"
    if ext not in FORMATS:
        raise FractalcError(f"cannot tell the output format of {str(path)!r}: use one of the "
                            f"extensions {', '.join('.' + f for f in FORMATS)}")
    return ext


def run_dot(dot_text: str, fmt: str) -> bytes:
    """Lay out and draw DOT text with `dot -T<fmt>`; the image bytes."""
    exe = shutil.which("dot")
    if exe is None:
        raise BackendUnavailable(
            f"writing .{fmt} needs Graphviz's `dot` program, which is not on PATH",
            hint="install the Debian package `graphviz` (apt-get install graphviz), "
                 "or write DOT text instead (-o diagram.dot)")
    try:
        proc = subprocess.run([exe, f"-T{fmt}"], input=dot_text.encode(), capture_output=True,
                              timeout=600)
    except subprocess.TimeoutExpired:
        raise FractalcError("`dot` took longer than 10 minutes; try a smaller --depth") from None
    if proc.returncode != 0 or not proc.stdout:
        err = proc.stderr.decode(errors="replace").strip() or f"exit status {proc.returncode}"
        raise FractalcError(f"`dot -T{fmt}` failed: {err}")
    return proc.stdout


def write(dot_text: str, path: str | Path) -> None:
    fmt = format_of(path)
    data = dot_text.encode() if fmt == "dot" else run_dot(dot_text, fmt)
    atomic_write(path, data)
