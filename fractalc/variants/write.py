"""Writing specs: a scaled copy of a spec (`write_scaled`, `rewrite_spec`) with its parameter
defaults rewritten in place, comments and layout kept, and a header saying where it came from."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from fractalc.version import __version__
from fractalc.errors import FractalcError
from fractalc.variants.solver import Measure, ScaleResult, metric_value


def one_line(text: str) -> str:
    """`text` safe inside a ``#`` comment of a written spec: every character that some reader
    takes as a line end (``\\n``, ``\\r``, ``\\f``, ``\\v``, ``\\x1c``, ``\\x85``, ``\\u2028``...) or
    that is not printable becomes a backslash escape, so user text (a space's name, file
    names, --set values) can never start a live line of spec."""
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def import_path(path: str, error=FractalcError) -> str:
    """`path` as the text of an `import "..."`: a spec string has no escapes, so a path with a
    double quote or a non-printable character cannot be written; raises `error` then."""
    if '"' in path or not all(c.isprintable() for c in path):
        raise error(f"cannot write an import of {path!r}: a spec string cannot hold a double "
                    "quote or a control character; use another directory name")
    return path


def write_scaled(res: ScaleResult, out: str | Path, overrides: Mapping[str, str]) -> None:
    """Write `res.spec` to `out` (atomically, formatted, comments kept) with the found value and
    every override as parameter defaults, under a header saying how it was made."""
    from fractalc.fileio import atomic_write
    from fractalc.lang.resolve import load
    what = {"params": "parameter bits", "flops": "FLOPs", "both": "parameter bits and FLOPs"}[res.metric]
    base = Path(res.baseline).name if res.baseline else "the given budget"
    b = res.budget
    sets = "".join(f" --set {k}={v}" for k, v in overrides.items())
    header = [f"# Scaled by fractalc {__version__}: {res.param} = {res.value} is the largest value whose {what}",
              f"# fit the budget of {one_line(base)} ({metric_value(b, 'bits'):,} bits, {metric_value(b, 'flops'):.4e} FLOPs)."
              if isinstance(b, Measure) else f"# fit the budget {one_line(str(dict(b)))}.",
              f"# From {one_line(Path(res.spec).name)} (sha256 {load(res.spec).sha256}){one_line(sets)}.",
              ""]
    atomic_write(out, rewrite_spec(res.spec, out, {**overrides, res.param: str(res.value)}, header))


def rewrite_spec(spec: str | Path, out: str | Path, values: Mapping[str, str],
                 header: list[str] | None = None) -> str:
    """The text of `spec` (formatted, comments kept) with parameter defaults set to `values`
    (``--set``-style expression text), its imports made relative to `out`'s directory."""
    from fractalc.lang.expand import override_expr
    from fractalc.lang.formatter import Document
    from fractalc.lang.resolve import LIBRARY, load
    from fractalc.lang.syntax import read_spec
    spec = Path(spec)
    s = load(spec)
    doc = Document.parse(read_spec(spec), str(spec))
    for name, text in values.items():
        doc.set_param(name, override_expr(name, text, s))
    src_dir = spec.resolve().parent
    out_dir = Path(out).resolve().parent
    doc.map_imports(lambda p: p if p.startswith(LIBRARY) else
                    import_path(Path(os.path.relpath(src_dir / p, out_dir)).as_posix()))
    doc.header = list(header or [])
    return doc.render()
