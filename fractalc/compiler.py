"""The front half of the pipeline in one call: parse -> resolve -> expand -> passes.

`compile_spec` is what the CLI and every backend start from; backends read the IR only.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

from fractalc.lang import expand as _expand
from fractalc import ir
from fractalc.ir import passes
from fractalc.lang.resolve import Spec, load


@dataclass
class Compiled:
    """A compiled spec: the resolved spec, the parameter values and the verified IR.

    `column` is the fractal column `graph` was reduced to (`with_column`), None for the whole
    network; targets that take a column option see it is already applied."""

    spec: Spec
    params: dict[str, Any]
    overrides: dict[str, str]
    graph: ir.Graph
    raw_nodes: int = 0  # nodes before collapse_joins
    extra: dict = field(default_factory=dict)
    column: int | None = None

    @property
    def name(self) -> str:
        return self.graph.name

    def with_column(self, column: int | None) -> "Compiled":
        """This compile reduced to fractal `column` (1 = deepest; None: unchanged). The
        extraction runs once; asking again for the column already taken returns self."""
        if column is None or column == self.column:
            return self
        if self.column is not None:
            raise ValueError(f"graph is already column {self.column}; compile again for column {column}")
        from fractalc.ir.passes.extract_column import extract_column  # verifies its result
        return replace(self, graph=extract_column(self.graph, column), column=column)


def compile_spec(source: "str | Path | Spec", overrides: dict[str, str] | None = None, *,
                 network: str | None = None, max_nodes: int = _expand.DEFAULT_MAX_NODES,
                 allow_import: Iterable[str | Path] | None = None,
                 file: str | Path | None = None) -> Compiled:
    """Compile a spec to a verified IR graph. Raises `FractalcError` on bad input.

    `source` is one of: a path of a `.fr` file; the text of a spec, when `file` names it (as
    errors show it; relative imports start from its folder); or a `Spec` that `resolve.load`
    returned (compiled without reading or parsing anything again, so one parse serves several
    networks or parameter sets).

    The spec may import files from its own folder, the bundled library and the folders in
    `allow_import` (see `resolve.load`)."""
    if isinstance(source, Spec):
        if file is not None:
            raise TypeError("compile_spec: `file` names spec text; a Spec has its own name")
        spec = source
    elif file is not None:
        if not isinstance(source, str):
            raise TypeError("compile_spec: with `file`, `source` must be the spec text (str)")
        spec = load(file, allow_import=allow_import, text=source)
    elif isinstance(source, (str, Path)):
        spec = load(source, allow_import=allow_import)
    else:
        raise TypeError(f"compile_spec: expected a path, spec text with file=..., or a Spec; "
                        f"got {type(source).__name__}")
    params = _expand.eval_params(spec, overrides)
    net = spec.select(network)
    raw = _expand.expand(spec, params, net, max_nodes=max_nodes)
    graph = passes.run_default(raw)
    return Compiled(spec, params, dict(overrides or {}), graph, raw_nodes=len(raw))
