"""IR -> block diagrams (DOT, and SVG / PNG / PDF through Graphviz's `dot`).

`to_dot(graph, options)` returns deterministic DOT text whose node ids are the IR ids (always
double-quoted; a collapsed scope's box is its scope path, e.g. ``stage2.block1``); every node
carries ``class`` = its IR op name ("scope" for a collapsed scope, "legend" for the legend).
`render(graph, path, options)` writes the format named by the file extension, atomically.
Importing this package imports neither graphviz nor torch.
"""
from __future__ import annotations

from pathlib import Path

from .output import FORMATS, format_of, write
from .scene import Options, build, find_runs, pick_level


def to_dot(graph, options: Options | None = None, *, title: str | None = None) -> str:
    options = options or Options()
    scene = build(graph, options, title)
    cost_of = None
    if "cost" in options.annotate:
        from fractalc.cost import layer_cost
        cost_of = {n: layer_cost(graph, n) for n in graph.order()}
    from .emit import to_dot as _emit
    return _emit(scene, cost_of)


def render(graph, path: str | Path, options: Options | None = None, *, title: str | None = None) -> None:
    """Draw an IR graph into `path` (format from the extension)."""
    format_of(path)  # refuse a bad extension before any work
    write(to_dot(graph, options, title=title), path)


__all__ = ["FORMATS", "Options", "build", "find_runs", "pick_level", "render", "to_dot", "write"]
