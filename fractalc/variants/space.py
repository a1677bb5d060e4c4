"""Generation spaces: a declarative TOML file (`load_space`; format in README.md and
examples/spaces/) of SoFAr networks: family F / RF (binary ResNets) or DF / DRF (binary
DenseNets), columns, blocks per stage, join, dataset, and a budget (baseline spec + metric).
A hostile file is refused with a message (size and point-count limits, unknown keys)."""
from __future__ import annotations

import hashlib
import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from fractalc.errors import FractalcError
from fractalc.lang.resolve import LIBRARY, import_roots, library_dir
from fractalc.variants.solver import METRICS


class SpaceError(FractalcError):
    """A malformed generation space (TOML)."""


FAMILIES = {"F": "resnet", "RF": "resnet", "DF": "dense", "DRF": "dense"}
#: The network a ResNet family's fractal is built into: "bireal" (SoFAr's binary ResNets: Bi-Real's
#: unit, stem and transitions), "quicknet" (QuickNet's unit, stem, transitions and head) or
#: "reactnet" (ReActNet's RSign/RPReLU unit in Bi-Real's layout). Library file of each.
BASES = {"bireal": (), "quicknet": ("quicknet.fr",), "reactnet": ("reactnet.fr",)}
JOINS = ("mean",)
DATASETS = ("imagenet", "cifar10", "cifar100")
# BinaryDenseNet28's stem and transition reductions (reference section 5), for DF / DRF.
DENSE_DEFAULTS = {"stem_width": 64, "reductions": [2.7, 2.7, 2.2]}
_SPACE_KEYS = {"base", "library", "family", "columns", "blocks", "join", "dataset", "budget", "reductions",
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
    base: str = "bireal"  # F / RF: the network the fractal goes into (BASES)
    library: Path | None = None  # the spec library's folder (None: "lib" beside the baseline)

    @property
    def kind(self) -> str:
        return FAMILIES[self.family]

    @property
    def param(self) -> str:
        return "width" if self.kind == "resnet" else "growth"

    @property
    def depth(self) -> int:
        """1 stem + units x 2^(C-1) + transitions + 1 classifier (reference section 5);
        QuickNet's stem has 3 convs."""
        stem = 3 if self.base == "quicknet" else 1
        return stem + sum(self.blocks) * 2 ** (self.columns - 1) + (len(self.blocks) - 1) + 1

    @property
    def library_dir(self) -> Path:
        return self.library if self.library is not None else self.baseline.parent / "lib"

    @property
    def library_files(self) -> list[Path]:
        return [self.library_dir / f for f in ("common.fr", "sofar.fr", *BASES[self.base])]

    def base_name(self) -> str:
        net = ("resnet" if self.base == "bireal" else self.base) if self.kind == "resnet" else "densenet"
        name = f"{self.family.lower()}_c{self.columns}d{2 ** (self.columns - 1)}_{net}{self.depth}"
        return name if self.dataset == "imagenet" else f"{name}_{self.dataset}"

    def describe(self) -> str:
        base = f" base={self.base}" if self.base != "bireal" else ""
        return (f"family={self.family}{base} columns={self.columns} blocks={list(self.blocks)} "
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


def _confined(space: Path, rel: str, where: str, what: str) -> Path:
    """`rel` (relative to the space file), symlinks resolved, if it lies under the folders a
    spec next to the space file could import from: the space file's folder and below, the
    bundled library, --allow-import folders. A space file may come from someone else: it must
    not make fractalc read (and quote in an error) a file elsewhere."""
    roots = import_roots(space)
    try:
        real = (space.parent / rel).resolve()
    except (OSError, RuntimeError) as exc:
        raise SpaceError(f"{where}: {what} {rel!r}: {getattr(exc, 'strerror', None) or exc}") from None
    if not any(real.is_relative_to(r) for r in roots):
        raise SpaceError(f"{where}: {what} {rel!r} is outside the folders this space may read "
                         f"({', '.join(repr(str(r)) for r in roots)})",
                         hint="name a shipped model instead (fractalc list), or allow the folder "
                              "with --allow-import DIR")
    return real


def _baseline(space: Path, value, where: str) -> Path:
    """A budget baseline: a shipped model's name (`fractalc list`), or a `.fr` file confined as
    `_confined` says."""
    if not isinstance(value, str) or not value:
        raise SpaceError(f"{where}: a baseline must be a spec path or a model name")
    from fractalc import registry
    if "/" not in value and not value.endswith(".fr"):
        table = registry.entries()
        if value in table:
            if table[value].network != registry.network_names(table[value].path.read_text())[0]:
                raise SpaceError(f"{where}: baseline model {value!r} is not the first network of "
                                 f"{table[value].relpath}; the budget compiles a file's first network")
            return table[value].path.resolve()
    if not value.endswith(".fr"):
        raise SpaceError(f"{where}: baseline {value!r} is neither a model name (fractalc list) nor "
                         "a .fr spec path")
    base = _confined(space, value, where, "baseline spec")
    if not base.is_file():
        raise SpaceError(f"{where}: baseline spec {value!r} not found (paths are relative to the space file)")
    return base


def load_space(path: str | Path) -> Space:
    """Read and check a TOML space; expand it into named points (see README.md)."""
    from fractalc.fileio import FileRefused, read_limited
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
        base_net = t.get("base", "bireal")
        if base_net not in BASES:
            raise SpaceError(f"{where}: unknown base {base_net!r}; choose from {', '.join(BASES)}")
        if base_net != "bireal" and any(FAMILIES[f] != "resnet" for f in fams):
            raise SpaceError(f"{where}: base = {base_net!r} applies to the F and RF families only")
        library = t.get("library")
        if library is not None:
            if not isinstance(library, str):
                raise SpaceError(f"{where}: library must be a folder path (relative to the space file) "
                                 "or \"fractalc:\" (the bundled library)")
            if library == LIBRARY:
                library = library_dir().resolve()
            else:
                library = _confined(path, library, where, "library folder")
                if not library.is_dir():
                    raise SpaceError(f"{where}: library folder {t['library']!r} not found (paths are "
                                     "relative to the space file)")
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
            base = _baseline(path, bases[fam], where)
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
                                tws if FAMILIES[fam] == "dense" and trans is not None else (),
                                base_net, library))
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
