"""The front half of the pipeline in one call: parse -> resolve -> expand -> passes.

`compile_spec` is what the CLI and every backend start from; backends read the IR only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from fractalc.lang import expand as _expand
from fractalc import ir
from fractalc.ir import passes
from fractalc.lang.resolve import Spec, load
from fractalc.records import field, record, replace


@record(frozen=False)
class Compiled:
    """A compiled spec: the resolved spec, the parameter values and the verified IR.

    `column` is the fractal column `graph` was reduced to (`with_column`), None for the whole
    network; targets that take a column option see it is already applied.

    `stage` is the pipeline step `graph` comes from (`STAGES`): "shaped", the verified graph
    every backend reads, unless `compile_spec` was asked for an earlier one."""

    spec: Spec
    params: dict[str, Any]
    overrides: dict[str, str]
    graph: ir.Graph
    raw_nodes: int = 0  # nodes before collapse_joins
    extra: dict = field(default_factory=dict)
    column: int | None = None
    stage: str = "shaped"

    @property
    def name(self) -> str:
        return self.graph.name

    def with_column(self, column: int | None) -> "Compiled":
        """This compile reduced to fractal `column` (1 = deepest; None: unchanged). The
        extraction runs once; asking again for the column already taken returns self."""
        if column is None or column == self.column:
            return self
        if self.stage != "shaped":
            raise ValueError(f"a column is taken from the shaped graph, not the {self.stage} one")
        if self.column is not None:
            raise ValueError(f"graph is already column {self.column}; compile again for column {column}")
        from fractalc.ir.passes.extract_column import extract_column  # verifies its result
        return replace(self, graph=extract_column(self.graph, column), column=column)


def spec_value(value: Any) -> str:
    """A Python value as spec expression text (what ``--set NAME=VALUE`` takes): numbers as
    they are, strings quoted, lists and tuples as spec lists, booleans as true / false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if '"' in value or "\n" in value:  # spec strings have no escapes (grammars/fractal.lark)
            raise ValueError(f"a spec string cannot hold a quote or a newline: {value!r}")
        return '"' + value + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(spec_value(v) for v in value) + "]"
    if isinstance(value, (int, float)):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"a spec number must be finite, not {value!r}")
        return repr(value)
    raise TypeError(f"a spec parameter value must be a number, string, bool or list, "
                    f"not {type(value).__name__}")


def value_overrides(params: dict[str, Any]) -> dict[str, str]:
    """Python-valued parameter overrides (``width=41``, ``dataset="cifar100"``) as the text
    overrides `compile_spec` takes."""
    return {k: spec_value(v) for k, v in params.items()}


#: The steps of the pipeline whose graph `compile_spec(stage=...)` returns, in order:
#: "expanded", the graph `expand` builds (every rule and repetition inlined, a Join per
#: fractal join); "collapsed", after `collapse_joins` merged adjacent joins (FractalNet's
#: definition, the rewrite the paper's figures rely on); "shaped", after shape inference (only
#: where a node lacks a shape) and `verify`: the graph every target and backend reads.
STAGES = ("expanded", "collapsed", "shaped")


def compile_spec(source: "str | Path | Spec", overrides: dict[str, str] | None = None, *,
                 network: str | None = None, max_nodes: int = _expand.DEFAULT_MAX_NODES,
                 allow_import: Iterable[str | Path] | None = None,
                 file: str | Path | None = None, stage: str = "shaped") -> Compiled:
    """Compile a spec to a verified IR graph. Raises `FractalcError` on bad input.

    `source` is one of: a path of a `.fr` file; the text of a spec, when `file` names it (as
    errors show it; relative imports start from its folder); or a `Spec` that `resolve.load`
    returned (compiled without reading or parsing anything again, so one parse serves several
    networks or parameter sets).

    The spec may import files from its own folder, the bundled library and the folders in
    `allow_import` (see `resolve.load`).

    `stage` (one of `STAGES`) stops the pipeline early: the graph of "expanded" or "collapsed"
    is the pass's output as it is, not verified (for looking at the rewrite; targets and
    backends take only "shaped", the default). Paths only: model names are resolved by
    `fractalc.registry.resolve_spec` (the CLI and `fractalc.build_torch` do)."""
    if stage not in STAGES:
        raise ValueError(f"compile_spec: stage must be one of {', '.join(STAGES)}, not {stage!r}")
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
    if stage == "expanded":
        graph = raw
    elif stage == "collapsed":
        graph = passes.collapse_joins(raw)
    else:
        graph = passes.run_default(raw)
    return Compiled(spec, params, dict(overrides or {}), graph, raw_nodes=len(raw), stage=stage)
