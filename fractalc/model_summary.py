"""`fractalc.summary`: a network's per-layer table and totals, like `larq.models.summary`.

    s = fractalc.summary("rf_c3d4_resnet21")     # prints the table
    s.bits, s.binary_macs, s.float_macs, s.depth
    s.to_json()                                   # the document of `fractalc stats --json`

(The module is `fractalc.model_summary`, not `fractalc.summary`: importing a submodule of that
name would replace the function `fractalc.summary` on the package.)

Takes a model name or spec path (compiled with `**params` overriding spec parameters), a
resolved `Spec`, a `Compiled`, a shaped IR `Graph`, or a torch network made by
`fractalc.build_torch` (it keeps its `Compiled` as ``model.fractalc_compiled``); torch is never
imported here.

Every number comes from the cost model (fractalc.cost), the same as `fractalc stats`: bits =
32 x float parameters + binary parameters; memory = bits / 8 bytes (BN running statistics are
buffers, reported apart); MACs are the multiplications of convolutions and linear layers
(binary ones are XNOR-popcounts); FLOPs = float MACs + binary MACs / 64.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fractalc.cost import Cost, LayerCost, cost


@dataclass(frozen=True)
class LayerSummary:
    """One row: a node with parameters or multiplications (its IR id, op and output shape)."""

    id: str
    op: str
    shape: tuple[int, ...]
    binary_params: int
    float_params: int
    bits: int
    memory_bytes: float  # bits / 8
    binary_macs: int
    float_macs: int
    flops: float


@dataclass(frozen=True)
class Summary:
    """What `summary` returns: the rows (`layers`, only nodes with parameters or MACs) and
    the totals over every node. `cost` is the underlying `fractalc.cost.Cost`; `text` is the
    printed table. `to_json()` is the document of `fractalc stats --json` (per layer too)."""

    name: str
    layers: tuple[LayerSummary, ...]
    float_params: int
    binary_params: int
    bn_params: int  # BN scale and shift, included in float_params
    bn_buffers: int  # BN running mean and variance: buffers, not parameters
    bits: int
    binary_macs: int
    float_macs: int
    flops: float
    depth: int
    cost: Cost
    text: str

    @property
    def params(self) -> int:
        return self.float_params + self.binary_params

    @property
    def mbit(self) -> float:
        return self.bits / 1e6

    @property
    def memory_bytes(self) -> float:
        return self.bits / 8

    @property
    def mib(self) -> float:
        return self.bits / 8 / 2**20

    def to_json(self, per_layer: bool = True) -> dict:
        return {"network": self.name, **self.cost.to_json(per_layer=per_layer)}


def _row(l: LayerCost) -> LayerSummary:
    return LayerSummary(l.id, l.op, l.shape, l.binary_params, l.float_params, l.bits, l.bits / 8,
                        l.binary_mults, l.float_mults, l.flops)


def _kib(bits: float) -> str:
    return f"{bits / 8 / 1024:,.2f}"


def table(rows: tuple[LayerSummary, ...], co: Cost) -> str:
    """The per-layer part of the summary: larq's columns (1-bit and 32-bit parameters, memory,
    1-bit and 32-bit MACs) for `rows`, then a total row over every node of `co`."""
    w = max([len(r.id) for r in rows] + [5])
    head = (f"{'layer':<{w}}  {'op':<10} {'output':>12} {'1-bit params':>13} {'32-bit params':>13} "
            f"{'memory KiB':>11} {'1-bit MACs':>14} {'32-bit MACs':>13}")
    rule = "-" * len(head)
    lines = [head, rule]
    for r in rows:
        lines.append(f"{r.id:<{w}}  {r.op:<10} {'x'.join(map(str, r.shape)):>12} {r.binary_params:>13,} "
                     f"{r.float_params:>13,} {_kib(r.bits):>11} {r.binary_macs:>14,} {r.float_macs:>13,}")
    lines.append(rule)
    lines.append(f"{'total':<{w}}  {'':<10} {'':>12} {co.total('binary_params'):>13,} "
                 f"{co.total('float_params'):>13,} {_kib(co.bits):>11} "
                 f"{co.total('binary_mults'):>14,} {co.total('float_mults'):>13,}")
    lines.append(rule)
    return "\n".join(lines) + "\n"


def _compiled(obj: Any, network, column, max_nodes, allow_import, params):
    """The `Compiled` (or a shaped `Graph`) that `obj` stands for."""
    from fractalc import ir
    from fractalc.compiler import Compiled, compile_spec, value_overrides
    from fractalc.lang.resolve import Spec

    kept = getattr(obj, "fractalc_compiled", None)  # a torch network from fractalc.build_torch
    if isinstance(kept, Compiled):
        obj = kept
    if isinstance(obj, (Compiled, ir.Graph)):
        if params or network is not None or max_nodes is not None or allow_import:
            raise TypeError("summary: spec parameters and compile options apply to a spec or "
                            "a name, not to a compiled network")
        if isinstance(obj, Compiled):
            if obj.stage != "shaped":
                raise ValueError(f"summary: needs the shaped graph, not the {obj.stage} one")
            return obj.with_column(column)
        if column is not None:
            from fractalc.ir.passes.extract_column import extract_column
            return extract_column(obj, column)
        return obj
    if isinstance(obj, (str, Path, Spec)):
        source = obj
        if not isinstance(obj, Spec):
            from fractalc.registry import resolve_spec
            source, network = resolve_spec(obj, network)
        kw = {} if max_nodes is None else {"max_nodes": max_nodes}
        c = compile_spec(source, value_overrides(params), network=network,
                         allow_import=allow_import, **kw)
        return c.with_column(column)
    raise TypeError(f"summary: expected a model name, a spec path, a Spec, a Compiled, an IR "
                    f"graph or a network from fractalc.build_torch; got {type(obj).__name__}"
                    + (" (a torch module not built by fractalc.build_torch carries no graph)"
                       if hasattr(obj, "state_dict") else ""))


def summary(model: Any, *, network: str | None = None, column: int | None = None,
            max_nodes: int | None = None, allow_import=None,
            print_fn: Callable[[str], Any] | None = print, layers: bool = True,
            **params) -> Summary:
    """Print `model`'s per-layer table with bits, memory and MACs (binary and float) and its
    totals, and return them as a `Summary`.

    `model`: a model name (`fractalc list`) or spec path, a `Spec`, a `Compiled`, a shaped IR
    graph, or a network from `fractalc.build_torch`. For a name or a spec, `params` override
    spec parameters (Python values: ``width=41``, ``dataset="cifar100"``) and `network`,
    `max_nodes`, `allow_import` are `compile_spec`'s; `column` takes one fractal column
    (1 = deepest), as `--column` does. `print_fn` receives the text (None: print nothing);
    `layers=False` prints the totals only."""
    from types import SimpleNamespace

    from fractalc.report import stats_table

    c = _compiled(model, network, column, max_nodes, allow_import, params)
    graph = getattr(c, "graph", c)
    co = cost(graph)
    rows = tuple(_row(l) for l in co.layers
                 if l.float_params or l.binary_params or l.float_mults or l.binary_mults)
    named = c if hasattr(c, "spec") else SimpleNamespace(  # a bare graph: no spec to name
        name=graph.name, overrides={}, spec=SimpleNamespace(main="IR graph"))
    head, _, footer = stats_table(named, co, layers=False).partition("\n")
    text = head + "\n" + (table(rows, co) if layers else "") + footer
    if print_fn is not None:
        print_fn(text.rstrip("\n"))
    return Summary(graph.name, rows, co.total("float_params"), co.total("binary_params"),
                   co.total("bn_params"), co.total("bn_buffers"), co.bits,
                   co.total("binary_mults"), co.total("float_mults"), co.flops, co.depth, co, text)
