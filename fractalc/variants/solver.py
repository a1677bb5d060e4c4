"""Scaling (`solve`): the largest value v >= 1 of an integer parameter (default `width`, else
`growth`) whose cost does not exceed a budget on the chosen metric(s): ``params`` = parameter
bits, ``flops`` = FLOPs (fractalc.cost), ``both`` = both. The search assumes the cost grows
strictly with the parameter and checks it at every value it visits (a `ScaleError` otherwise):
it starts at the spec's own value, brackets the answer by doubling (or halving), then bisects,
so it compiles O(log v) times; it always visits v and v + 1, so the boundary is exact. It
refuses when even v = 1 exceeds the budget.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from fractalc.errors import FractalcError
from fractalc.records import replace


METRICS = {"params": ("bits",), "flops": ("flops",), "both": ("bits", "flops")}
_UNIT = {"bits": "bits", "flops": "FLOPs"}
DEFAULT_LIMIT = 1 << 20  # the largest value the search will try


class ScaleError(FractalcError):
    """The budget cannot be met, or the cost does not grow with the scaled parameter."""


# ----------------------------------------------------------------------------- costs


@dataclass(frozen=True)
class Measure:
    """The headline costs of one compiled network."""

    bits: int
    flops: float
    depth: int
    float_params: int
    binary_params: int
    binary_mac_share: float

    @property
    def mbit(self) -> float:
        return self.bits / 1e6

    def to_json(self) -> dict:
        return {"bits": self.bits, "mbit": self.mbit, "flops": self.flops, "depth": self.depth,
                "float_params": self.float_params, "binary_params": self.binary_params,
                "binary_mac_share": self.binary_mac_share}


def measure(graph) -> Measure:
    from fractalc.cost import cost
    j = cost(graph).to_json(per_layer=False)
    p, f = j["params"], j["flops"]
    return Measure(p["bits"], f["total"], j["depth"], p["float"], p["binary"], f["binary_mac_share"])


def _compile(path, overrides, network, max_nodes):
    from fractalc.compiler import compile_spec
    return compile_spec(path, overrides, network=network, max_nodes=max_nodes)


class _Recompiler:
    """`compile_spec` of one spec under many overrides, parsing and resolving its files once.

    Parsing is about two thirds of a compile, and a search compiles the same files ten times
    or more: the spec is loaded once and `compile_spec` gets the loaded `Spec`."""

    def __init__(self, path):
        from fractalc.lang.resolve import load
        self.spec = load(path)

    def graph(self, overrides, network, max_nodes):
        from fractalc.compiler import compile_spec
        return compile_spec(self.spec, overrides, network=network, max_nodes=max_nodes).graph


def budget_of(baseline: str | Path, overrides: Mapping[str, str] | None = None, *,
              network: str | None = None, max_nodes: int = 100_000) -> Measure:
    """The cost of a baseline spec: the budget a scaled spec must fit."""
    return measure(_compile(baseline, dict(overrides or {}), network, max_nodes).graph)


def default_param(params: Mapping[str, Any]) -> str:
    for name in ("width", "growth"):
        if name in params:
            return name
    ints = sorted(k for k, v in params.items() if isinstance(v, int) and not isinstance(v, bool))
    raise ScaleError("the spec has no `width` or `growth` parameter; name the one to scale with "
                     "--param" + (f" (its integer parameters: {', '.join(ints)})" if ints else ""))


@dataclass
class ScaleResult:
    spec: str
    param: str
    metric: str
    value: int
    cost: Measure
    budget: Measure | Mapping[str, float]
    next: Measure  # the cost at value + 1, which exceeds the budget
    visited: list[int]
    baseline: str | None = None

    def exceeded(self, m: Measure) -> list[str]:
        return [k for k in METRICS[self.metric] if getattr(m, k) > metric_value(self.budget, k)]

    def to_json(self) -> dict:
        budget = self.budget.to_json() if isinstance(self.budget, Measure) else dict(self.budget)
        return {"spec": self.spec, "param": self.param, "value": self.value, "metric": self.metric,
                "cost": self.cost.to_json(), "budget": budget, "baseline": self.baseline,
                "next": {"value": self.value + 1, "cost": self.next.to_json(),
                         "exceeds": self.exceeded(self.next)},
                "compiles": len(self.visited), "visited": sorted(self.visited)}


def metric_value(budget, key: str) -> float:
    return getattr(budget, key) if isinstance(budget, Measure) else budget[key]


def relabel(exc: FractalcError, prefix: str, file_map: Mapping[str, str] | None = None) -> FractalcError:
    """The same error with `prefix` on its message and file names replaced by `file_map`."""
    loc, msg = exc.loc, exc.message
    for old, new in (file_map or {}).items():
        msg = msg.replace(old, new)
        if loc is not None and loc.file == old:
            loc = replace(loc, file=new)
    return type(exc)(f"{prefix}{msg}", loc, exc.hint)


def solve(spec: str | Path, budget: Measure | Mapping[str, float], *, metric: str = "params",
          param: str | None = None, overrides: Mapping[str, str] | None = None,
          network: str | None = None, max_nodes: int = 100_000, limit: int = DEFAULT_LIMIT,
          baseline: str | None = None) -> ScaleResult:
    """The largest value of `param` whose cost fits `budget` on `metric` (see the module doc).

    `budget` is a baseline's `Measure` or a mapping with the metric's keys (``bits``,
    ``flops``). Raises `ScaleError` when even 1 does not fit, when the cost is not strictly
    increasing at the visited values, or when `limit` still fits.
    """
    from fractalc.lang.expand import eval_params
    if metric not in METRICS:
        raise ScaleError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    keys = METRICS[metric]
    overrides = dict(overrides or {})
    spec_str = str(spec)
    compiler = _Recompiler(spec)
    values = eval_params(compiler.spec, overrides)
    param = param or default_param(values)
    if param not in values:
        raise ScaleError(f"{spec_str} has no parameter {param!r}; it has: {', '.join(sorted(values))}")
    start = values[param]
    if not isinstance(start, int) or isinstance(start, bool):
        raise ScaleError(f"parameter {param!r} of {spec_str} is not an integer (it is {start!r}); "
                         "only integer parameters can be scaled")
    start = min(max(start, 1), limit)
    for k in keys:
        metric_value(budget, k)  # a KeyError here is a caller bug, not a user error

    seen: dict[int, Measure] = {}

    def show(m: Measure) -> str:
        return ", ".join(f"{getattr(m, k):,.0f} {_UNIT[k]}" for k in keys)

    def probe(v: int) -> bool:
        if v not in seen:
            try:
                seen[v] = measure(compiler.graph({**overrides, param: str(v)}, network, max_nodes))
            except FractalcError as exc:
                raise relabel(exc, f"with {param}={v}: ") from None
            order = sorted(seen)
            i = order.index(v)
            for a, b in zip(order[max(i - 1, 0):], order[max(i - 1, 0) + 1:i + 2]):
                flat = [k for k in keys if getattr(seen[b], k) <= getattr(seen[a], k)]
                if flat:
                    k = flat[0]
                    raise ScaleError(
                        f"the {_UNIT[k]} of {spec_str} do not grow with {param}: {param}={a} costs "
                        f"{getattr(seen[a], k):,.0f}, {param}={b} costs {getattr(seen[b], k):,.0f}; "
                        f"scaling needs a cost that increases with the parameter",
                        hint="scale a parameter that sets the channel counts (--param)")
        return all(getattr(seen[v], k) <= metric_value(budget, k) for k in keys)

    # Exponential bracketing from the spec's own value: up by doubling while it fits, down by
    # halving while it does not (so small values, which a spec may not even allow, are only
    # compiled when the answer is small).
    lo: int | None = None
    hi: int | None = None
    if probe(start):
        lo = start
    else:
        hi = start
    while hi is None:
        v = min(lo * 2, limit)
        if v == lo:
            raise ScaleError(f"{spec_str} still fits the budget at {param}={limit:,}, the largest "
                             "value tried; is the budget meant for this spec?")
        if probe(v):
            lo = v
        else:
            hi = v
    while lo is None:
        if hi == 1:
            over = [k for k in keys if getattr(seen[1], k) > metric_value(budget, k)]
            raise ScaleError(
                f"even {param}=1 exceeds the budget: {spec_str} costs {show(seen[1])} there, the "
                "budget is " + ", ".join(f"{metric_value(budget, k):,.0f} {_UNIT[k]}" for k in keys)
                + f" ({' and '.join(_UNIT[k] for k in over)} over)")
        v = hi // 2
        if probe(v):
            lo = v
        else:
            hi = v
    while hi - lo > 1:  # bisection: lo fits, hi does not
        mid = (lo + hi) // 2
        if probe(mid):
            lo = mid
        else:
            hi = mid
    return ScaleResult(spec_str, param, metric, lo, seen[lo], budget, seen[hi], sorted(seen),
                       baseline=baseline)


def scale_table(res: ScaleResult) -> str:
    """The answer, and the costs at it, one above it and of the budget (compared ones starred)."""
    keys = METRICS[res.metric]
    p = res.param
    base = Path(res.baseline).name if res.baseline else "budget"
    rows = [(f"{p}={res.value}", res.cost, "fits"),
            (f"{p}={res.value + 1}", res.next, "exceeds: " + ", ".join(
                {"bits": "params", "flops": "flops"}[k] for k in res.exceeded(res.next)))]
    if isinstance(res.budget, Measure):
        rows.append(("budget", res.budget, base))
    w = max(len(r[0]) for r in rows)
    lines = [f"{Path(res.spec).name}: {p} = {res.value}, the largest value within the budget of "
             f"{base} (metric: {res.metric})",
             f"  {'':<{w}}  {'bits':>14}  {'Mbit':>9}  {'FLOPs':>11}  {'depth':>5}"]
    for label, m, note in rows:
        star = ["*" if k in keys else " " for k in ("bits", "flops")]
        lines.append(f"  {label:<{w}}  {m.bits:>13,}{star[0]}  {m.mbit:>9.3f}  {m.flops:>10.4e}{star[1]}  "
                     f"{m.depth:>5}  {note}")
    lines.append(f"  (* = compared; {len(res.visited)} compiles: {p} = " + ", ".join(map(str, res.visited)) + ")")
    return "\n".join(lines) + "\n"
