"""Scale a spec's width to a baseline's budget, and generate families of fractal variants.

Scaling (`solve`): the largest value v >= 1 of an integer parameter (default `width`, else
`growth`) whose cost does not exceed a budget on the chosen metric(s): ``params`` = parameter
bits, ``flops`` = FLOPs (fractalc.cost), ``both`` = both. The search assumes the cost grows
strictly with the parameter and checks it at every value it visits (a `ScaleError` otherwise):
it starts at the spec's own value, brackets the answer by doubling (or halving), then bisects,
so it compiles O(log v) times; it always visits v and v + 1, so the boundary is exact. It
refuses when even v = 1 exceeds the budget.

Generating (`generate`): a declarative TOML space (`load_space`, format in README.md and
examples/spaces/) of SoFAr networks: family F / RF (binary ResNets) or DF / DRF (binary
DenseNets), columns, blocks per stage, join (only "mean": every join of the IR is an
equal-weight mean), dataset, and a budget (baseline spec + metric). Each point becomes a plain,
formatted `.fr` spec importing the shared library (specs/lib, found beside the baseline) by a
path relative to the output directory, its width scaled to the budget, its header recording the
space (name and sha256), the point, the budget, the hashes of the baseline and the library,
and the fractalc version. Points that fail (shape clash, size guard, budget too small) are
reported and skipped. Everything is deterministic: same space and library, same bytes.
"""
from __future__ import annotations

import hashlib
import itertools
import os
import tempfile
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from .version import __version__
from .errors import FractalcError

METRICS = {"params": ("bits",), "flops": ("flops",), "both": ("bits", "flops")}
_UNIT = {"bits": "bits", "flops": "FLOPs"}
DEFAULT_LIMIT = 1 << 20  # the largest value the search will try


class ScaleError(FractalcError):
    """The budget cannot be met, or the cost does not grow with the scaled parameter."""


class SpaceError(FractalcError):
    """A malformed generation space (TOML)."""


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
    from .cost import cost
    j = cost(graph).to_json(per_layer=False)
    p, f = j["params"], j["flops"]
    return Measure(p["bits"], f["total"], j["depth"], p["float"], p["binary"], f["binary_mac_share"])


def _compile(path, overrides, network, max_nodes):
    from .compiler import compile_spec
    return compile_spec(path, overrides, network=network, max_nodes=max_nodes)


class _Recompiler:
    """`compile_spec` of one spec under many overrides, parsing and resolving its files once.

    Parsing is about two thirds of a compile, and a search compiles the same files ten times
    or more: the spec is loaded once and `compile_spec` gets the loaded `Spec`."""

    def __init__(self, path):
        from .resolve import load
        self.spec = load(path)

    def graph(self, overrides, network, max_nodes):
        from .compiler import compile_spec
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
        return [k for k in METRICS[self.metric] if getattr(m, k) > _get(self.budget, k)]

    def to_json(self) -> dict:
        budget = self.budget.to_json() if isinstance(self.budget, Measure) else dict(self.budget)
        return {"spec": self.spec, "param": self.param, "value": self.value, "metric": self.metric,
                "cost": self.cost.to_json(), "budget": budget, "baseline": self.baseline,
                "next": {"value": self.value + 1, "cost": self.next.to_json(),
                         "exceeds": self.exceeded(self.next)},
                "compiles": len(self.visited), "visited": sorted(self.visited)}


def _get(budget, key: str) -> float:
    return getattr(budget, key) if isinstance(budget, Measure) else budget[key]


def _relabel(exc: FractalcError, prefix: str, file_map: Mapping[str, str] | None = None) -> FractalcError:
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
    from .expand import eval_params
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
        _get(budget, k)  # a KeyError here is a caller bug, not a user error

    seen: dict[int, Measure] = {}

    def show(m: Measure) -> str:
        return ", ".join(f"{getattr(m, k):,.0f} {_UNIT[k]}" for k in keys)

    def probe(v: int) -> bool:
        if v not in seen:
            try:
                seen[v] = measure(compiler.graph({**overrides, param: str(v)}, network, max_nodes))
            except FractalcError as exc:
                raise _relabel(exc, f"with {param}={v}: ") from None
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
        return all(getattr(seen[v], k) <= _get(budget, k) for k in keys)

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
            over = [k for k in keys if getattr(seen[1], k) > _get(budget, k)]
            raise ScaleError(
                f"even {param}=1 exceeds the budget: {spec_str} costs {show(seen[1])} there, the "
                "budget is " + ", ".join(f"{_get(budget, k):,.0f} {_UNIT[k]}" for k in keys)
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


# ----------------------------------------------------------------------------- writing specs


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
    from .fileio import atomic_write
    from .resolve import load
    what = {"params": "parameter bits", "flops": "FLOPs", "both": "parameter bits and FLOPs"}[res.metric]
    base = Path(res.baseline).name if res.baseline else "the given budget"
    b = res.budget
    sets = "".join(f" --set {k}={v}" for k, v in overrides.items())
    header = [f"# Scaled by fractalc {__version__}: {res.param} = {res.value} is the largest value whose {what}",
              f"# fit the budget of {one_line(base)} ({_get(b, 'bits'):,} bits, {_get(b, 'flops'):.4e} FLOPs)."
              if isinstance(b, Measure) else f"# fit the budget {one_line(str(dict(b)))}.",
              f"# From {one_line(Path(res.spec).name)} (sha256 {load(res.spec).sha256}){one_line(sets)}.",
              ""]
    atomic_write(out, rewrite_spec(res.spec, out, {**overrides, res.param: str(res.value)}, header))



def rewrite_spec(spec: str | Path, out: str | Path, values: Mapping[str, str],
                 header: list[str] | None = None) -> str:
    """The text of `spec` (formatted, comments kept) with parameter defaults set to `values`
    (``--set``-style expression text), its imports made relative to `out`'s directory."""
    from .expand import override_expr
    from .formatter import Document
    from .resolve import LIBRARY, load
    from .syntax import read_spec
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


# ----------------------------------------------------------------------------- spaces

FAMILIES = {"F": "resnet", "RF": "resnet", "DF": "dense", "DRF": "dense"}
JOINS = ("mean",)
DATASETS = ("imagenet", "cifar10", "cifar100")
# BinaryDenseNet28's stem and transition reductions (reference section 5), for DF / DRF.
DENSE_DEFAULTS = {"stem_width": 64, "reductions": [2.7, 2.7, 2.2]}
_SPACE_KEYS = {"family", "columns", "blocks", "join", "dataset", "budget", "reductions",
               "stem_width", "start", "transitions"}
_TOP_KEYS = {"name", "description", "space", "metric"}
MAX_SPACE_BYTES = 1 << 20  # a space is a short hand-written TOML file
MAX_SPACE_POINTS = 2_000  # generate compiles each point ~10 times (~1 s a point)


@dataclass(frozen=True)
class Point:
    family: str
    columns: int
    blocks: tuple[int, ...]
    join: str
    dataset: str
    baseline: Path
    metric: str
    stem_width: int
    reductions: tuple[float, ...]
    start: int
    transitions: tuple[int, ...] = ()  # DF / DRF: fixed transition widths (empty: by reductions)

    @property
    def kind(self) -> str:
        return FAMILIES[self.family]

    @property
    def param(self) -> str:
        return "width" if self.kind == "resnet" else "growth"

    @property
    def depth(self) -> int:
        """1 stem + units x 2^(C-1) + transitions + 1 classifier (reference section 5)."""
        return 1 + sum(self.blocks) * 2 ** (self.columns - 1) + (len(self.blocks) - 1) + 1

    def base_name(self) -> str:
        net = "resnet" if self.kind == "resnet" else "densenet"
        name = f"{self.family.lower()}_c{self.columns}d{2 ** (self.columns - 1)}_{net}{self.depth}"
        return name if self.dataset == "imagenet" else f"{name}_{self.dataset}"

    def describe(self) -> str:
        return (f"family={self.family} columns={self.columns} blocks={list(self.blocks)} "
                f"join={self.join} dataset={self.dataset}")


@dataclass
class Space:
    file: Path
    sha256: str
    name: str
    points: list[tuple[str, Point]]  # (variant name, point), in generation order
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (point, reason)


def _list(table: dict, key: str, where: str, default=None) -> list:
    v = table.get(key, default)
    if v is None:
        raise SpaceError(f"{where}: missing `{key}`")
    return v if isinstance(v, list) else [v]


def _int(v, what: str, where: str, lo: int = 1) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise SpaceError(f"{where}: {what} must be an integer >= {lo}, got {v!r}")
    return v


def load_space(path: str | Path) -> Space:
    """Read and check a TOML space; expand it into named points (see README.md)."""
    from .fileio import FileRefused, read_limited
    path = Path(path)
    try:
        raw = read_limited(path, MAX_SPACE_BYTES)
    except FileRefused as exc:
        raise SpaceError(f"cannot read space file {str(path)!r}: {exc.reason}") from None
    try:
        doc = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpaceError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise SpaceError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; a space file has "
                         + ", ".join(sorted(_TOP_KEYS)))
    tables = doc.get("space")
    if isinstance(tables, dict):
        tables = [tables]
    if not tables or not isinstance(tables, list):
        raise SpaceError(f"{path}: no [space] or [[space]] table")
    top_metric = doc.get("metric", "params")
    points: list[Point] = []
    for n, t in enumerate(tables, 1):
        where = f"{path}: space {n}"
        if not isinstance(t, dict):
            raise SpaceError(f"{where}: expected a table")
        unknown = set(t) - _SPACE_KEYS
        if unknown:
            raise SpaceError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: "
                             + ", ".join(sorted(_SPACE_KEYS)))
        fams = _list(t, "family", where)
        for f in fams:
            if f not in FAMILIES:
                raise SpaceError(f"{where}: unknown family {f!r}; choose from {', '.join(FAMILIES)}")
        cols = [_int(c, "columns", where) for c in _list(t, "columns", where)]
        blocks = _list(t, "blocks", where)
        if blocks and all(isinstance(b, int) for b in blocks):
            blocks = [blocks]  # one blocks list given without the outer brackets
        blocks = [tuple(_int(b, "a blocks entry", where) for b in (bl if isinstance(bl, list) else [bl]))
                  for bl in blocks]
        if any(not bl for bl in blocks):
            raise SpaceError(f"{where}: a blocks list needs at least one stage")
        joins = _list(t, "join", where, ["mean"])
        for j in joins:
            if j not in JOINS:
                raise SpaceError(f"{where}: join {j!r} is not supported: every join in the IR is an "
                                 "element-wise mean with equal weights (join = \"mean\")")
        datasets = _list(t, "dataset", where, ["imagenet"])
        for d in datasets:
            if d not in DATASETS:
                raise SpaceError(f"{where}: unknown dataset {d!r}; choose from {', '.join(DATASETS)}")
        budget = t.get("budget")
        if isinstance(budget, str):
            budget = {"baseline": budget}
        if not isinstance(budget, dict) or "baseline" not in budget:
            raise SpaceError(f"{where}: needs budget = {{ baseline = \"spec.fr\", metric = \"params\" }}")
        extra = set(budget) - {"baseline", "metric"}
        if extra:
            raise SpaceError(f"{where}: unknown budget key(s) {', '.join(sorted(extra))}; allowed: baseline, metric")
        metric = budget.get("metric", top_metric)
        if metric not in METRICS:
            raise SpaceError(f"{where}: unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
        bases = budget["baseline"]
        if isinstance(bases, str):
            bases = {f: bases for f in FAMILIES}
        if not isinstance(bases, dict):
            raise SpaceError(f"{where}: budget.baseline must be a spec path or a table family -> path")
        stem = _int(t.get("stem_width", DENSE_DEFAULTS["stem_width"]), "stem_width", where)
        red = t.get("reductions")
        trans = t.get("transitions")
        start = _int(t.get("start", 32), "start", where)
        count = len(fams) * len(cols) * len(blocks) * len(datasets) * len(joins)
        if len(points) + count > MAX_SPACE_POINTS:
            # each point compiles a network about ten times: refuse before starting
            raise SpaceError(f"{where}: the space has {len(points) + count:,} points so far, over "
                             f"the limit of {MAX_SPACE_POINTS:,}; split it into several space files")
        for fam, c, bl, d, j in itertools.product(fams, cols, blocks, datasets, joins):
            if fam not in bases:
                raise SpaceError(f"{where}: budget.baseline names no baseline for family {fam}")
            base = (path.parent / bases[fam]).resolve()
            if not base.is_file():
                raise SpaceError(f"{where}: baseline spec {bases[fam]!r} not found (paths are relative "
                                 "to the space file)")
            reds: tuple[float, ...] = ()
            if FAMILIES[fam] == "dense":
                r = red if red is not None else (DENSE_DEFAULTS["reductions"] if len(bl) == 4 else None)
                if r is None or not isinstance(r, list) or len(r) != len(bl) - 1 or \
                        not all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in r):
                    raise SpaceError(f"{where}: dense families with {len(bl)} stages need "
                                     f"reductions = a list of {len(bl) - 1} positive numbers")
                reds = tuple(float(x) for x in r)
                if trans is not None:
                    if not isinstance(trans, list) or len(trans) != len(bl) - 1:
                        raise SpaceError(f"{where}: dense families with {len(bl)} stages need "
                                         f"transitions = a list of {len(bl) - 1} channel counts")
                    tws = tuple(_int(x, "a transitions entry", where) for x in trans)
            points.append(Point(fam, c, bl, j, d, base, metric, stem, reds, start,
                                tws if FAMILIES[fam] == "dense" and trans is not None else ()))
    unique = list(dict.fromkeys(points))
    groups: dict[str, int] = {}
    for p in unique:
        groups[p.base_name()] = groups.get(p.base_name(), 0) + 1
    named: list[tuple[str, Point]] = []
    used: set[str] = set()
    for p in unique:
        name = p.base_name()
        if groups[name] > 1:  # the same family/columns/depth with another split or budget
            name += "_b" + "_".join(map(str, p.blocks))
        k, base = 2, name
        while name in used:
            name = f"{base}_{k}"
            k += 1
        used.add(name)
        named.append((name, p))
    return Space(path, hashlib.sha256(raw).hexdigest(), str(doc.get("name", path.stem)), named)


# ----------------------------------------------------------------------------- generation


def _sha(paths) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).name.encode() + b"\0" + Path(p).read_bytes() + b"\0")
    return h.hexdigest()


def _floats(xs) -> str:
    return "[" + ", ".join(repr(x) for x in xs) + "]"


def spec_text(name: str, p: Point, value: int, lib: str, header: list[str]) -> str:
    """The unformatted text of one variant (imports `lib`common.fr and `lib`sofar.fr: `lib` is
    ``fractalc:`` for the bundled library, else a directory path ending in ``/``)."""
    lines = [*header, f'import "{lib}common.fr"', f'import "{lib}sofar.fr"', "",
             f'param dataset = "{p.dataset}"']
    n = len(p.blocks)
    if p.kind == "resnet":
        lines += [f"param width = {value}", f"param columns = {p.columns}",
                  f"param blocks = {list(p.blocks)}", "", f"network {name} {{",
                  "    input [3, size, size]", "    stem = stem[width]"]
        for s in range(n):
            w = "width" if s == 0 else f"{2 ** s} * width"
            if s:
                lines.append(f"    trans{s} = down[{w}]")
            lines.append(f"    stage{s + 1} = {p.family}[columns, {w}] * blocks[{s}]")
        lines += ["    head = head[classes]", "}"]
    else:
        lines += [f"param growth = {value}", f"param columns = {p.columns}",
                  f"param blocks = {list(p.blocks)}", f"param reductions = {_floats(p.reductions)}",
                  f"param stem_width = {p.stem_width}", 'param order = "bn-conv"']
        if p.transitions:
            lines.append(f"param transitions = {list(p.transitions)}")
        lines += ["",
                  f"network {name} {{", "    input [3, size, size]", "    stem = stem[stem_width]"]
        for s in range(n):
            if s:
                w = f", w=transitions[{s - 1}]" if p.transitions else ""
                lines.append(f"    trans{s} = transition[reductions[{s - 1}]{w}]")
            lines.append(f"    stage{s + 1} = dense[{p.family}[columns, growth], growth] * blocks[{s}]")
        lines += ["    head = bn >> relu >> head[classes]", "}"]
    return "\n".join(lines) + "\n"


@dataclass
class Variant:
    name: str
    point: Point
    file: Path
    result: ScaleResult
    baseline_name: str

    def row(self) -> dict:
        m = self.result.cost
        return {"name": self.name, "family": self.point.family, "columns": self.point.columns,
                "blocks": "-".join(map(str, self.point.blocks)), "join": self.point.join,
                "dataset": self.point.dataset, "depth": m.depth, "param": self.result.param,
                "width": self.result.value, "float_params": m.float_params,
                "binary_params": m.binary_params, "bits": m.bits, "mbit": round(m.mbit, 6),
                "flops": m.flops, "binary_mac_share": round(m.binary_mac_share, 6),
                "metric": self.point.metric, "baseline": self.baseline_name,
                "budget_bits": self.result.budget.bits, "budget_flops": self.result.budget.flops,
                "file": self.file.name}


@dataclass
class Generated:
    space: Space
    out: Path
    variants: list[Variant]
    skipped: list[tuple[str, str, str]]  # (name, point, reason)
    baselines: dict[str, Measure]  # "spec.fr (dataset)" -> cost

    def to_json(self) -> dict:
        return {"space": self.space.file.name, "space_sha256": self.space.sha256,
                "fractalc": __version__, "variants": [v.row() for v in self.variants],
                "skipped": [{"name": n, "point": p, "reason": r} for n, p, r in self.skipped],
                "baselines": [{"name": k, **m.to_json()} for k, m in self.baselines.items()]}


COLUMNS = ["name", "family", "columns", "blocks", "join", "dataset", "depth", "param", "width",
           "float_params", "binary_params", "bits", "mbit", "flops", "binary_mac_share", "metric",
           "baseline", "budget_bits", "budget_flops", "file"]


def generate(space_path: str | Path, out: str | Path, *, max_nodes: int = 100_000,
             log=None) -> Generated:
    """Write one scaled spec per valid point of the space into `out` (created if needed)."""
    from .fileio import atomic_write, unlink_on_sigterm
    from .formatter import check_round_trip, format_source
    space = load_space(space_path)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FractalcError(f"cannot create output directory {str(out)!r}: {exc.strerror}") from None
    budgets: dict[tuple[Path, str], Measure] = {}
    baselines: dict[str, Measure] = {}
    variants: list[Variant] = []
    skipped: list[tuple[str, str, str]] = []
    for name, p in space.points:
        lib_dir = p.baseline.parent / "lib"
        lib_files = [lib_dir / "common.fr", lib_dir / "sofar.fr"]
        final = out / f"{name}.fr"
        try:
            missing = [str(f) for f in lib_files if not f.is_file()]
            if missing:
                raise SpaceError(f"the spec library is not beside the baseline: {', '.join(missing)} missing")
            key = (p.baseline, p.dataset)
            if key not in budgets:
                from .resolve import load
                has_ds = "dataset" in load(p.baseline).params
                budgets[key] = budget_of(p.baseline, {"dataset": p.dataset} if has_ds else {},
                                         max_nodes=max_nodes)
                baselines[f"{p.baseline.stem} ({p.dataset})"] = budgets[key]
            budget = budgets[key]
            # the bundled library by name (the variant works wherever it is moved), another
            # library beside the baseline by a path relative to the output directory
            from .resolve import LIBRARY, allowed_imports, library_dir
            lib = (LIBRARY if lib_dir.resolve() == library_dir().resolve()
                   else import_path(Path(os.path.relpath(lib_dir, out.resolve())).as_posix() + "/", SpaceError))
            header = _header(space, name, p, budget, lib_files)
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".fr", dir=out)
            os.close(fd)
            try:
                with unlink_on_sigterm(tmp):  # a killed generate leaves no hidden spec behind
                    Path(tmp).write_text(spec_text(name, p, p.start, lib, []))
                    try:
                        # the variant imports the library beside the baseline, wherever that is
                        with allowed_imports([lib_dir]):
                            res = solve(tmp, budget, metric=p.metric, param=p.param,
                                        max_nodes=max_nodes, baseline=p.baseline.name)
                    except FractalcError as exc:
                        raise _relabel(exc, "", {tmp: final.name, str(Path(tmp)): final.name}) from None
            finally:
                os.unlink(tmp)
            raw = spec_text(name, p, res.value, lib, header)
            text = format_source(raw, str(final))
            check_round_trip(raw, text, str(final))
            atomic_write(final, text)
            res.spec = str(final)
        except FractalcError as exc:  # shape clash, size guard, budget: skip the point
            if final.exists():  # a stale variant from an earlier run would mislead
                final.unlink()
            reason = _short_reason(exc, lib_dir)
            skipped.append((name, p.describe(), reason))
            if log:
                log(f"skipped {name}: {reason}")
            continue
        variants.append(Variant(name, p, final, res, p.baseline.name))
        if log:
            log(f"wrote {final} ({res.param} = {res.value})")
    return Generated(space, out, variants, skipped, baselines)


def _short_reason(exc: FractalcError, lib_dir: Path) -> str:
    """The first line of the error, a library file named `lib/x.fr` (not by a path that
    depends on the output directory), so reports are the same wherever they are made."""
    if exc.loc is not None:
        f = Path(os.path.normpath(os.path.abspath(exc.loc.file)))
        try:
            short = (Path("lib") / f.relative_to(lib_dir.resolve())).as_posix()
        except ValueError:
            short = f.name
        exc = _relabel(exc, "", {exc.loc.file: short})
    return exc.format().splitlines()[0]


def _header(space: Space, name: str, p: Point, budget: Measure, lib_files) -> list[str]:
    metric = {"params": "parameter bits", "flops": "FLOPs", "both": "parameter bits and FLOPs"}[p.metric]
    # one_line: file names and the space's name are user text inside comments
    return [
        f"# {name}: {p.family}-c{p.columns}d{2 ** (p.columns - 1)} "
        f"{'ResNet' if p.kind == 'resnet' else 'DenseNet'}{p.depth}, generated by fractalc {__version__}.",
        f"# Its {p.param} is the largest whose {metric} fit the budget of {one_line(p.baseline.name)}.",
        "# Do not edit: change the space and run `fractalc generate` again.",
        f"# space: {one_line(space.file.name)} ({one_line(space.name)}), sha256 {space.sha256}",
        f"# point: {p.describe()}",
        f"# budget: {one_line(p.baseline.name)} with dataset={p.dataset}: {budget.bits:,} bits, "
        f"{budget.flops:,.0f} FLOPs; metric {p.metric}",
        f"# baseline sha256 {_sha([p.baseline])}",
        f"# library: {', '.join(f.name for f in lib_files)}, sha256 {_sha(lib_files)}",
        "",
    ]


# ----------------------------------------------------------------------------- reports


def table(gen: Generated) -> str:
    head = ["name", "depth", "param", "width", "Mbit", "FLOPs", "binary MACs", "budget"]
    rows = []
    for v in gen.variants:
        r = v.row()
        rows.append([r["name"], str(r["depth"]), r["param"], str(r["width"]), f"{r['mbit']:.2f}",
                     f"{r['flops']:.3e}", f"{100 * r['binary_mac_share']:.1f} %",
                     f"{r['metric']} of {v.point.baseline.stem}"])
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]
    right = {1, 3, 4, 5, 6}

    def fmt(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    for k, m in gen.baselines.items():
        lines.append(f"baseline {k}: {m.mbit:.2f} Mbit, {m.flops:.3e} FLOPs, depth {m.depth}")
    for n, p, reason in gen.skipped:
        lines.append(f"skipped {n} ({p}): {reason}")
    lines.append(f"{len(gen.variants)} variants written to {gen.out}, {len(gen.skipped)} skipped")
    return "\n".join(lines) + "\n"


def csv_text(gen: Generated) -> str:
    import csv
    import io
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for v in gen.variants:
        w.writerow(v.row())
    return buf.getvalue()


# Families that cost the same (F and RF, DF and DRF: residual adds are free) land on the same
# point: the first of each pair is drawn as a large hollow marker, the second as a small filled
# one inside it, so both stay visible.
_PLOT_STYLE = {
    "F": dict(marker="s", s=150, facecolors="none", edgecolors="tab:blue", linewidths=1.6),
    "RF": dict(marker="o", s=34, color="tab:orange"),
    "DF": dict(marker="^", s=190, facecolors="none", edgecolors="tab:green", linewidths=1.6),
    "DRF": dict(marker="D", s=30, color="tab:red"),
}


def _plot_label(vs: list[Variant]) -> str:
    """One label for the variants drawn on one point: "F/RF-c3d4 resnet21 (53)"."""
    fams = "/".join(dict.fromkeys(v.point.family for v in vs))
    rests = dict.fromkeys(v.name.split("_", 1)[1].replace("_", " ") for v in vs)
    values = "/".join(dict.fromkeys(str(v.result.value) for v in vs))
    return f"{fams}-{' = '.join(rests)} ({values})"


def plot(gen: Generated, path: str | Path) -> None:
    """Mbit against FLOPs for every variant, each baseline marked and its budget drawn as a line
    (vertical: parameter bits, horizontal: FLOPs); labels are moved apart by adjustText so none
    overlaps (matplotlib, deterministic, written atomically)."""
    import io

    from .fileio import atomic_write
    fig, _ax, _texts = pareto_figure(gen)  # BackendUnavailable without matplotlib / adjustText
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None}, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def pareto_figure(gen: Generated):
    """The figure of `plot`: (figure, axes, the variants' label texts)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from adjustText import adjust_text
    except ImportError:
        from .errors import BackendUnavailable
        raise BackendUnavailable("--plot needs matplotlib and adjustText: "
                                 "pip install 'matplotlib>=3.7' 'adjustText>=1.2'") from None
    fig, ax = plt.subplots(figsize=(10, 7.5), dpi=100)
    groups: dict[tuple[float, float], list[Variant]] = {}  # variants that cost the same
    for fam, style in _PLOT_STYLE.items():
        vs = [v for v in gen.variants if v.point.family == fam]
        if vs:
            ax.scatter([v.result.cost.mbit for v in vs], [v.result.cost.flops for v in vs],
                       label=fam, zorder=3, **style)
        for v in vs:
            groups.setdefault((v.result.cost.mbit, v.result.cost.flops), []).append(v)
    # each baseline: a star and its budget as a line, by the metric its variants were scaled to
    # (dashed vertical: parameter bits; dotted horizontal: FLOPs), named in the legend
    metrics: dict[str, set[str]] = {}
    for v in gen.variants:
        metrics.setdefault(f"{v.point.baseline.stem} ({v.point.dataset})", set()).add(v.point.metric)
    colours = ["black", "tab:purple", "tab:brown", "tab:olive", "tab:cyan", "tab:pink", "tab:gray"]
    for n, (k, m) in enumerate(gen.baselines.items()):
        c = colours[n % len(colours)]
        used = metrics.get(k, set())
        ax.scatter([m.mbit], [m.flops], marker="*", s=260, color=c, edgecolors="white", zorder=5,
                   label=f"{k}: {m.mbit:.2f} Mbit, {m.flops:.3g} FLOPs")
        if used & {"params", "both"}:
            ax.axvline(m.mbit, color=c, linestyle="--", linewidth=1, zorder=1)
        if used & {"flops", "both"}:
            ax.axhline(m.flops, color=c, linestyle=":", linewidth=1, zorder=1)
    ax.set_xlabel("parameters (Mbit); dashed line: a baseline's parameter budget")
    ax.set_ylabel("FLOPs (float mults + binary mults / 64); dotted line: a FLOPs budget")
    ax.set_title(f"{gen.space.name}: variants scaled to their budgets")
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.15, y=0.1)
    if gen.variants or gen.baselines:
        ax.legend(title="family / baseline (star) and its budget", loc="upper center",
                  bbox_to_anchor=(0.5, -0.09), ncol=2, fontsize=8, title_fontsize=8, frameon=False)
    fig.tight_layout()
    texts, xs, ys = [], [], []
    for (x, y), vs in groups.items():
        texts.append(ax.text(x, y, _plot_label(vs), fontsize=7, zorder=4,
                             bbox=dict(facecolor="white", edgecolor="none", alpha=0.8, pad=0.5)))
        xs.append(x)
        ys.append(y)
    for m in gen.baselines.values():  # labels keep off the stars too
        xs.append(m.mbit)
        ys.append(m.flops)
    if texts:
        # every marker as a box of 24 x 24 pixels (data coordinates) for the labels to avoid;
        # a fixed number of iterations (adjustText's default is a time limit: not deterministic)
        from matplotlib.transforms import Bbox
        to_data = ax.transData.inverted()
        boxes = [Bbox(to_data.transform([(px - 12, py - 12), (px + 12, py + 12)]))
                 for px, py in ax.transData.transform(list(zip(xs, ys)))]
        adjust_text(texts, x=xs, y=ys, objects=boxes, ax=ax, expand=(1.1, 1.3),
                    ensure_inside_axes=True, iter_lim=500, time_lim=None,
                    arrowprops=dict(arrowstyle="-", color="0.5", linewidth=0.5))
    return fig, ax, texts
