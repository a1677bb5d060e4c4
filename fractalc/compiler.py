"""The front half of the pipeline in one call: parse -> resolve -> expand -> passes.

`compile_spec` is what the CLI and every backend start from; backends read the IR only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from . import expand as _expand
from . import ir, passes
from .resolve import Spec, load


@dataclass
class Compiled:
    """A compiled spec: the resolved spec, the parameter values and the verified IR."""

    spec: Spec
    params: dict[str, Any]
    overrides: dict[str, str]
    graph: ir.Graph
    raw_nodes: int = 0  # nodes before collapse_joins
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.graph.name


def compile_spec(path: str | Path, overrides: dict[str, str] | None = None, *,
                 network: str | None = None, max_nodes: int = _expand.DEFAULT_MAX_NODES,
                 allow_import: Iterable[str | Path] | None = None) -> Compiled:
    """Compile a `.fr` file to a verified IR graph. Raises `FractalcError` on bad input.

    The spec may import files from its own folder, the bundled library and the folders in
    `allow_import` (see `resolve.load`)."""
    spec = load(path, allow_import=allow_import)
    params = _expand.eval_params(spec, overrides)
    net = spec.select(network)
    raw = _expand.expand(spec, params, net, max_nodes=max_nodes)
    graph = passes.run_default(raw)
    return Compiled(spec, params, dict(overrides or {}), graph, raw_nodes=len(raw))
