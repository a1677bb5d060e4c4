"""One error hierarchy for the whole compiler.

Every error a user can cause is a `FractalcError`. Errors that stem from a spec carry a `Loc`;
`format()` renders them as ``file:line:col: message`` followed by the offending source line and
a caret, which is what the CLI prints (never a traceback).
"""
from __future__ import annotations

from fractalc.records import record

# Source text of every file the parser has read, so errors can show the offending line.
_SOURCES: dict[str, str] = {}


def register_source(path: str, text: str) -> None:
    _SOURCES[path] = text


def forget_source(path: str) -> None:
    """Never show lines of `path` again (a file that is not a spec: its text stays private)."""
    _SOURCES.pop(path, None)


def source_line(text: str, line: int) -> str | None:
    """Line `line` (1-based) of `text` as the parser counts lines: only ``\n`` ends a line
    (``str.splitlines`` also splits at ``\f``, ``\v``, ``\x1c``... and would show another
    line than the position names)."""
    lines = text.split("\n")
    if not 1 <= line <= len(lines):
        return None
    return lines[line - 1].removesuffix("\r")


def printable(text: str) -> str:
    """`text` with every control or invisible character replaced by ``?`` (one column each,
    so a caret below stays aligned): a spec line cannot send escape sequences to a terminal."""
    return "".join(c if c.isprintable() or c == " " else "?" for c in text)


@record
class Loc:
    """A position in a spec file (1-based line and column)."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


_WIDTH = 100  # longest source excerpt shown under a message


class FractalcError(Exception):
    """Base of every error fractalc reports to a user."""

    def __init__(self, message: str, loc: Loc | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.loc = loc
        self.hint = hint

    def format(self) -> str:
        # file names and messages may quote spec text: no control characters to the terminal
        head = "\n".join(printable(part) for part in
                         (f"{self.loc}: {self.message}" if self.loc else f"error: {self.message}").split("\n"))
        lines = [head]
        if self.loc is not None:
            text = _SOURCES.get(self.loc.file)
            line = source_line(text, self.loc.line) if text is not None else None
            if line is not None:
                # a tab is one column for the parser: show it as one space
                shown = printable(line.replace("\t", " "))
                col = max(self.loc.column - 1, 0)
                if len(shown) > _WIDTH:  # a window around the column, marked by "..."
                    start = min(max(col - _WIDTH // 2, 0), len(shown) - _WIDTH)
                    end = start + _WIDTH
                    shown = ("..." if start else "") + shown[start:end] + ("..." if end < len(shown) else "")
                    col = col - start + (3 if start else 0)
                lines.append("    " + shown)
                lines.append("    " + " " * col + "^")
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)

    def __str__(self) -> str:  # so pytest and logs show the located message
        return self.format()


class SpecSyntaxError(FractalcError):
    """The text does not follow grammars/fractal.lark."""


class SpecError(FractalcError):
    """A well-formed spec that means something invalid (names, arity, types, values)."""


class ShapeError(FractalcError):
    """Tensor shapes do not fit together (join/add mismatch, sizes <= 0, ...)."""


class SizeGuardError(FractalcError):
    """The expansion would exceed the configured node limit."""


class ModelError(FractalcError):
    """A malformed model file or input (weights, ONNX graphs, arrays)."""


class BackendUnavailable(FractalcError):
    """An optional dependency (torch, onnx, graphviz, the native runtime) is missing."""


class FractalcWarning(UserWarning):
    """Something a user should know that does not stop the command (the CLI prints it as
    ``warning: message`` on stderr): e.g. weights saved from another spec text."""
