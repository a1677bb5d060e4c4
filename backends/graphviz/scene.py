"""What a diagram shows, decided from the IR alone (no graphviz here): the drawn nodes, the
clusters they sit in, the edges between them.

Scopes are the dotted prefixes of node ids (``stage2``, ``stage2.block1``,
``stage2.block1.col3``); each becomes a cluster. Three rewrites make a network readable:

- ``depth``: a node whose id has more than ``depth`` segments is drawn as the box of its scope
  at that depth (``stage2.block1.col3.conv1`` -> box ``stage2.block1`` at depth 2). A fractal
  column is never a box of its own: a collapsed column would feed itself through the joins
  between its layers, so once a block is expanded its columns are drawn in full.
- ``fold``: consecutive sibling scopes named ``<stem><k>``, ``<stem><k+1>``, ... with identical
  structure (same relative ids, same ops, same internal wiring) are drawn once, as the first of
  the run, labelled "x N"; edges out of the run leave from the representative.
- columns: sibling scopes named ``colN`` are ordered deepest first (col1 leftmost in TB) by
  putting the first node of each column on one rank, chained by invisible edges.

Edge kinds: the shortcut input of an Add (an input that is an ancestor of another input of the
same Add, else its last input) is a "shortcut"; the stack input of a Concat (an ancestor of
another input) is the "stack"; everything else is "data".
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import networkx as nx

from fractalc import ir
from fractalc.errors import FractalcError

from .style import fmt_shape, kind_of, op_summary

LEVELS = ("auto", "block", "network")
RANKDIRS = ("TB", "LR", "BT", "RL")
ANNOTATIONS = ("cost",)
_NUMBERED = re.compile(r"^(.*?)(\d+)$")
_COLUMN = re.compile(r"^col(\d+)$")


@dataclass(frozen=True)
class Options:
    """Rendering options. ``level`` "auto" picks "network" when the graph has two or more
    top-level scopes (stem, stages, head, ...), else "block". ``depth`` None means: full at
    block level, 2 (stages and their blocks) at network level. ``fold`` None means: fold
    repeated blocks at network level only."""

    level: str = "auto"
    depth: int | None = None
    rankdir: str = "TB"
    annotate: tuple[str, ...] = ()
    fold: bool | None = None
    legend: bool = True

    def check(self) -> None:
        if self.level not in LEVELS:
            raise FractalcError(f"unknown level {self.level!r}; choose from: {', '.join(LEVELS)}")
        if self.rankdir not in RANKDIRS:
            raise FractalcError(f"unknown rankdir {self.rankdir!r}; choose from: {', '.join(RANKDIRS)}")
        if self.depth is not None and self.depth < 1:
            raise FractalcError(f"--depth must be at least 1, got {self.depth}")
        for a in self.annotate:
            if a not in ANNOTATIONS:
                raise FractalcError(f"unknown annotation {a!r}; choose from: {', '.join(ANNOTATIONS)}")


@dataclass
class Item:
    """One drawn node: an IR node, or a collapsed scope (kind "scope")."""

    id: str
    kind: str
    label: str
    tooltip: str
    parent: str | None          # innermost cluster (scope path) it is drawn in
    members: list[str] = field(default_factory=list)   # IR ids it stands for, copies included
    group: str | None = None    # its fractal column (scope path), drawn as one straight line


@dataclass
class Cluster:
    id: str                     # scope path
    label: str
    parent: str | None
    members: list[str] = field(default_factory=list)   # IR ids inside, copies included


@dataclass(frozen=True)
class Link:
    tail: str
    head: str
    kind: str                   # "data" | "shortcut" | "stack"
    constraint: bool = True


@dataclass
class Scene:
    title: str
    level: str
    rankdir: str
    items: dict[str, Item]                  # in drawing order
    clusters: dict[str, Cluster]            # outer before inner
    links: list[Link]
    column_ranks: list[list[str]]           # item ids to put on one rank, left to right
    annotate: tuple[str, ...] = ()
    legend: bool = True


def segs(node_id: str) -> tuple[str, ...]:
    return tuple(node_id.split("."))


def pick_level(g: ir.Graph) -> str:
    tops = {segs(n)[0] for n in g.order() if len(segs(n)) > 1}
    return "network" if len(tops) >= 2 else "block"


# --- repeated blocks ----------------------------------------------------------------------

def _members_by_scope(order: list[str]) -> dict[tuple[str, ...], list[str]]:
    out: dict[tuple[str, ...], list[str]] = {}
    for n in order:
        s = segs(n)
        for k in range(1, len(s)):
            out.setdefault(s[:k], []).append(n)
    return out


def _signature(g: ir.Graph, scope: tuple[str, ...], ids: list[str]):
    local = set(ids)
    ext: dict[str, int] = {}
    sig = []
    for n in ids:
        ins = []
        for u in g.inputs(n):
            ins.append(("in", segs(u)[len(scope):]) if u in local else ("ext", ext.setdefault(u, len(ext))))
        sig.append((segs(n)[len(scope):], g.op(n), tuple(ins)))
    return tuple(sig)


@dataclass
class Run:
    scopes: list[tuple[str, ...]]   # the repeated sibling scopes, first = representative


def find_runs(g: ir.Graph) -> list[Run]:
    """Maximal runs (length >= 2) of consecutive, identically built sibling scopes."""
    order = g.order()
    by_scope = _members_by_scope(order)
    children: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for scope in by_scope:  # insertion order = order of first node
        children.setdefault(scope[:-1], []).append(scope)
    runs: list[Run] = []
    hidden: set[tuple[str, ...]] = set()
    for parent in sorted(children, key=len):
        if any(parent[:k] in hidden for k in range(1, len(parent) + 1)):
            continue
        kids = children[parent]
        i = 0
        while i < len(kids):
            m = _NUMBERED.match(kids[i][-1])
            j = i + 1
            if m:
                stem, num = m.group(1), int(m.group(2))
                sig = _signature(g, kids[i], by_scope[kids[i]])
                while j < len(kids):
                    mj = _NUMBERED.match(kids[j][-1])
                    if not mj or mj.group(1) != stem or int(mj.group(2)) != num + (j - i):
                        break
                    if _signature(g, kids[j], by_scope[kids[j]]) != sig:
                        break
                    j += 1
            if j - i >= 2:
                runs.append(Run(kids[i:j]))
                hidden.update(kids[i + 1:j])
            i = max(j, i + 1)
    return runs


# --- building the scene -------------------------------------------------------------------

def _edge_kinds(g: ir.Graph, n: str) -> list[tuple[str, str, bool]]:
    """(input, kind, constraint) per input occurrence of node n."""
    op = g.op(n)
    ins = g.inputs(n)
    if not isinstance(op, (ir.Add, ir.Concat)) or len(ins) < 2:
        return [(u, "data", True) for u in ins]
    special = {u for u in ins if any(w != u and nx.has_path(g.g, u, w) for w in ins)}
    if isinstance(op, ir.Add):
        if special:
            return [(u, "shortcut", False) if u in special else (u, "data", True) for u in ins]
        return [(u, "shortcut" if k == len(ins) - 1 else "data", True) for k, u in enumerate(ins)]
    return [(u, "stack", False) if u in special else (u, "data", True) for u in ins]


def _exit_node(g: ir.Graph, ids: list[str]) -> str:
    """The node whose tensor leaves a scope (the last one consumed outside it)."""
    local = set(ids)
    exits = [n for n in ids if any(c not in local for c in g.consumers(n))]
    return (exits or ids)[-1]


def _count_text(g: ir.Graph, ids: list[str]) -> str:
    names = (("BinaryConv", "bconv"), ("Conv", "conv"), ("Linear", "linear"), ("Join", "join"),
             ("Add", "add"), ("Concat", "concat"), ("Pool", "pool"))
    counts: dict[str, int] = {}
    for n in ids:
        counts[kind_of(g.op(n))] = counts.get(kind_of(g.op(n)), 0) + 1
    parts = [f"{counts[k]} {label}" for k, label in names if counts.get(k)]
    return ", ".join(parts) or f"{len(ids)} nodes"


def build(g: ir.Graph, opts: Options, title: str | None = None) -> Scene:
    opts.check()
    level = pick_level(g) if opts.level == "auto" else opts.level
    depth = opts.depth if opts.depth is not None else (None if level == "block" else 2)
    fold = opts.fold if opts.fold is not None else (level == "network")

    order = g.order()
    by_scope = _members_by_scope(order)

    # Repeated blocks: hidden copies map onto the representative's node with the same path.
    rep: dict[str, str] = {n: n for n in order}
    run_of: dict[str, int] = {}                  # IR id -> run index (representative + copies)
    run_label: dict[tuple[str, ...], tuple[str, int, list[str]]] = {}
    runs = find_runs(g) if fold else []
    for r_i, run in enumerate(runs):
        first = run.scopes[0]
        every: list[str] = []
        for scope in run.scopes:
            for n in by_scope[scope]:
                run_of[n] = r_i
                every.append(n)
                if scope != first:
                    rep[n] = ".".join(first + segs(n)[len(scope):])
        last = run.scopes[-1][-1]
        run_label[first] = (f"{first[-1]}-{last}", len(run.scopes), every)

    def resolve(n: str) -> str:
        while rep[n] != n:
            n = rep[n]
        return n

    def item_id(n: str) -> str:
        s = segs(n)
        if depth is None or len(s) <= depth or any(_COLUMN.match(x) for x in s[:depth]):
            return n
        return ".".join(s[:depth])

    def members_of(scope: tuple[str, ...]) -> list[str]:
        return run_label[scope][2] if scope in run_label else by_scope[scope]

    def scope_name(scope: tuple[str, ...]) -> tuple[str, str]:
        """(label head, times suffix) for a scope, with its run if it represents one."""
        if scope in run_label:
            text, times, _ = run_label[scope]
            return text, f" x {times}"
        return scope[-1], ""

    def cluster_scopes(s: tuple[str, ...]) -> list[tuple[str, ...]]:
        """The enclosing scopes drawn as clusters: all but fractal columns, which are drawn as
        aligned columns instead (clusters would let dot reorder them)."""
        return [s[:k] for k in range(1, len(s)) if not _COLUMN.match(s[k - 1])]

    visible = [n for n in order if resolve(n) == n]
    items: dict[str, Item] = {}
    clusters: dict[str, Cluster] = {}
    for n in visible:
        iid = item_id(n)
        s = segs(iid)
        outer = cluster_scopes(s)
        for k, scope in enumerate(outer):
            cid = ".".join(scope)
            if cid not in clusters:
                head, times = scope_name(scope)
                clusters[cid] = Cluster(cid, head + times, ".".join(outer[k - 1]) if k else None,
                                        members_of(scope))
        if iid in items:
            continue
        parent = ".".join(outer[-1]) if outer else None
        name = ".".join(s[len(outer[-1]) if outer else 0:])   # colN.convK inside a column
        cols = [k for k in range(1, len(s)) if _COLUMN.match(s[k - 1])]
        group = ".".join(s[:cols[-1]]) if cols else None
        if iid == n:
            op = g.op(n)
            summary = op_summary(op, len(g.inputs(n)))
            shape = fmt_shape(g.shape(n))
            if isinstance(op, (ir.Add, ir.Join)):
                label = summary                      # small glyph; the id is in the tooltip
            elif isinstance(op, (ir.Input, ir.Output)):
                label = f"{name}\n{shape}"
            else:
                label = f"{name}\n{summary}\n{shape}"
            items[iid] = Item(iid, kind_of(op), label, f"{n} | {summary} | {shape}", parent, [n], group)
        else:
            head, times = scope_name(s)
            if name != s[-1]:
                head = name[: len(name) - len(s[-1])] + head
            ids = members_of(s)
            one = by_scope[s]           # a single copy, for the per-block summary
            shape = fmt_shape(g.shape(_exit_node(g, ids)))
            label = f"{head}{times}\n{_count_text(g, one)}\n{shape}"
            items[iid] = Item(iid, "scope", label, f"{iid} | {len(ids)} nodes | {shape}", parent, ids,
                              group)

    links: list[Link] = []
    seen: set[tuple[str, str]] = set()
    for v in order:
        for u, kind, constraint in _edge_kinds(g, v):
            ru, rv = run_of.get(u), run_of.get(v)
            if ru is not None and ru == rv and (resolve(u) != u or resolve(v) != v):
                continue                         # inside a folded run: drawn once, in the representative
            tail, head = item_id(resolve(u)), item_id(resolve(v))
            if tail == head:
                continue
            if items[tail].kind == "scope" or items[head].kind == "scope":
                if (tail, head) in seen:
                    continue
                seen.add((tail, head))
                if items[head].kind == "scope":
                    kind, constraint = "data", True
            links.append(Link(tail, head, kind, constraint))

    # Columns deepest first: the first item of each colN scope (or the colN box) on one rank.
    heads: dict[str | None, dict[int, str]] = {}
    for iid, it in items.items():
        s = segs(iid)
        for k in range(len(s), 0, -1):
            m = _COLUMN.match(s[k - 1])
            if m and (k < len(s) or it.kind == "scope"):
                parent = ".".join(s[:k - 1]) or None
                heads.setdefault(parent, {}).setdefault(int(m.group(1)), iid)
                break
    column_ranks = [[cols[c] for c in sorted(cols)] for cols in heads.values() if len(cols) >= 2]

    return Scene(title or g.name, level, opts.rankdir, items, clusters, links, column_ranks,
                 tuple(opts.annotate), opts.legend)
