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
- ``compact`` (the default at network level when no ``depth`` is given: Figure 2): every block
  (``stageK.blockM``, and any scope holding fractal columns) is drawn with one small node per
  unit: a conv absorbs the BN / activation / dropout of its unit (before or after it); joins,
  residual adds, concats and a BN shared by several convs (the DRF stack BN) stay small nodes
  of their own, so the columns, joins and shortcuts of Figure 1 show. A top-level scope without
  sub-scopes (stem, transition, head) is one node that lists its layers. The stages are laid
  out in lanes (side by side in TB, one under the other in LR) chosen so that the whole network
  fits a page: about 1.4 times as long along the data flow as across it.

Edge kinds: the shortcut input of an Add (an input that is an ancestor of another input of the
same Add, else its last input) is a "shortcut"; the stack input of a Concat (an ancestor of
another input) is the "stack"; everything else is "data".
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field, replace

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
    compact: bool | None = None

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
    small: bool = False         # a compact unit / glyph (network-level Figure 2)


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
    compact: bool = False
    lane_heads: list[str] = field(default_factory=list)   # first item of each lane, in order


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
    special = {u for u in ins if any(w != u and w in g.descendants(u) for w in ins)}
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
    compact = (opts.compact if opts.compact is not None else opts.depth is None) and level == "network"
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

    chains: set[str] = set()
    absorb: dict[str, str] = {}
    block_of: dict[str, tuple[str, ...]] = {}
    if compact:
        chains, block_of, absorb = _compact_plan(g, order, by_scope, {n for n in order if resolve(n) == n})

    def item_id(n: str) -> str:
        s = segs(n)
        if compact:
            if s[0] in chains:
                return s[0]
            if n in block_of:
                return absorb.get(n, n)
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
    blocks_drawn = set(block_of.values())
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
                label = head + times
                if compact and scope in blocks_drawn:
                    one = by_scope[scope]
                    label += f": {_count_text(g, one)}\n{fmt_shape(g.shape(_exit_node(g, members_of(scope))))}"
                clusters[cid] = Cluster(cid, label, ".".join(outer[k - 1]) if k else None,
                                        members_of(scope))
        if iid in items:
            if iid != n and n not in items[iid].members:
                items[iid].members.append(n)
                items[iid].tooltip += f" + {n}"
            continue
        if compact and iid in chains:
            ids = by_scope[(iid,)]
            steps = " > ".join(op_summary(g.op(m), len(g.inputs(m))) for m in ids
                               if not isinstance(g.op(m), (ir.Input, ir.Output)))
            shape = fmt_shape(g.shape(_exit_node(g, ids)))
            items[iid] = Item(iid, "chain", f"{iid}: {steps}\n{shape}", f"{iid} | {steps} | {shape}",
                              None, list(ids))
            continue
        parent = ".".join(outer[-1]) if outer else None
        name = ".".join(s[len(outer[-1]) if outer else 0:])   # colN.convK inside a column
        cols = [k for k in range(1, len(s)) if _COLUMN.match(s[k - 1])]
        group = ".".join(s[:cols[-1]]) if cols else None
        if compact and iid in block_of:
            op = g.op(iid)
            summary = op_summary(op, len(g.inputs(iid)))
            shape = fmt_shape(g.shape(iid))
            if isinstance(op, ir.Join):
                label = str(len(g.inputs(iid)))    # its fan-in
            elif isinstance(op, ir.Add):
                label = "+"
            elif isinstance(op, (ir.BatchNorm, ir.Slice)):
                label = summary
            else:
                label = ""                           # a unit: the legend and tooltip say what
            items[iid] = Item(iid, kind_of(op), label, f"{iid} | {summary} | {shape}", parent,
                              [n] if n == iid else [n, iid], group, small=True)
            if n != iid:
                items[iid].tooltip = f"{n} + {items[iid].tooltip}"
        elif iid == n:
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

    lane_heads: list[str] = []
    if compact:
        links, lane_heads = _lanes(items, links, opts.rankdir, clusters)
    return Scene(title or g.name, level, opts.rankdir, items, clusters, links, column_ranks,
                 tuple(opts.annotate), opts.legend, compact, lane_heads)


# --- compact network drawing (Figure 2) -----------------------------------------------------

_ABSORBED = (ir.BatchNorm, ir.Activation, ir.Dropout)
_UNITS = (ir.Conv, ir.BinaryConv)


def _compact_plan(g: ir.Graph, order: list[str], by_scope, visible: set[str]):
    """(chain scopes, node -> its block, node -> the conv it is drawn in)."""
    tops = list(dict.fromkeys(segs(n)[0] for n in order if len(segs(n)) > 1))
    nested = {s[0] for s in by_scope if len(s) >= 2}
    chains = {t for t in tops if t not in nested}
    blocks: set[tuple[str, ...]] = set()
    for s in by_scope:
        if len(s) == 2 and s[0] not in chains:
            blocks.add(s)
        if _COLUMN.match(s[-1]) and len(s) >= 2:
            blocks.add(s[:-1])
    block_of: dict[str, tuple[str, ...]] = {}
    for n in order:
        s = segs(n)
        inside = [s[:k] for k in range(len(s) - 1, 0, -1) if s[:k] in blocks]
        if inside and n in visible:
            block_of[n] = inside[-1]     # the outermost block: a fractal inside a block is drawn in it
    absorb: dict[str, str] = {}

    def target(n: str) -> str:
        return absorb.get(n, n)

    def unit(n: str, m: str) -> bool:
        return m in block_of and block_of[m] == block_of[n] and isinstance(g.op(m), _UNITS)

    for n in order:                      # after the conv: conv > BN / activation / dropout
        if n in block_of and isinstance(g.op(n), _ABSORBED) and len(g.inputs(n)) == 1:
            u = g.inputs(n)[0]
            if u in block_of and g.consumers(u) == [n] and unit(n, target(u)):
                absorb[n] = target(u)
    for n in reversed(order):            # before the conv: BN / activation > conv
        if n in block_of and n not in absorb and isinstance(g.op(n), _ABSORBED):
            cons = g.consumers(n)
            if len(cons) == 1 and cons[0] in block_of and unit(n, target(cons[0])):
                absorb[n] = target(cons[0])
    return chains, block_of, absorb


# Rough drawn sizes (inches, measured on dot's drawings) for choosing the lanes, per rankdir
# family: along the data flow per rank of small nodes, across per fractal column (with its
# shortcut arcs) plus a margin; a chain node is as wide as its text (_CHAR per character).
_SIZES = {"TB": dict(rank=0.5, chain=0.65, column=0.9, margin=0.6),
          "LR": dict(rank=0.55, chain=0.3, column=0.55, margin=0.6)}
_CHAR = 0.075
PAGE_RATIO = 1.4    # the drawing's length along the flow / across it (portrait TB, landscape LR)


def _partitions(n: int):
    """Every split of range(n) into contiguous non-empty runs."""
    for cuts in itertools.product((False, True), repeat=n - 1):
        runs, cur = [], [0]
        for k, cut in enumerate(cuts, 1):
            if cut:
                runs.append(cur)
                cur = []
            cur.append(k)
        runs.append(cur)
        yield runs


def _lanes(items: dict[str, Item], links: list[Link], rankdir: str,
           clusters: dict[str, Cluster]) -> tuple[list[Link], list[str]]:
    """Group the top-level scopes into lanes (a stage with the scopes before it; the last
    scopes join the last lane) so the drawing fits a page; links between lanes stop
    constraining the ranks, and each lane's first item is returned to start on one rank."""
    top = lambda iid: segs(iid)[0]
    segs_order = list(dict.fromkeys(top(i) for i in items))
    groups: list[list[str]] = []
    pending: list[str] = []
    for t in segs_order:
        pending.append(t)
        if t.startswith("stage"):
            groups.append(pending)
            pending = []
    if pending:
        if groups:
            groups[-1] += pending
        else:
            groups.append(pending)
    if len(groups) < 2:
        return links, []
    gi = {t: k for k, grp in enumerate(groups) for t in grp}
    # per group: ranks along the flow (longest path of constraining links) and width across
    dg = nx.DiGraph()
    dg.add_nodes_from(items)
    dg.add_edges_from((ln.tail, ln.head) for ln in links if ln.constraint and gi[top(ln.tail)] == gi[top(ln.head)])
    size = _SIZES["LR" if rankdir in ("LR", "RL") else "TB"]
    along = [0.0] * len(groups)
    across = [0.0] * len(groups)
    for k in range(len(groups)):
        mine = [i for i in items if gi[top(i)] == k]
        sub = dg.subgraph(mine)
        length = {i: 0.0 for i in mine}
        for i in nx.topological_sort(sub):
            text = max(map(len, items[i].label.split("\n"))) * _CHAR
            if items[i].kind == "chain":
                here = size["chain"] + (text if rankdir in ("LR", "RL") else 0.0)
            else:
                here = size["rank"]
            length[i] = here + max((length[p] for p in sub.predecessors(i)), default=0.0)
        along[k] = max(length.values(), default=0.0)
        if rankdir in ("LR", "RL"):   # blocks side by side along the flow: at least their titles
            titles = sum(max(map(len, c.label.split("\n"))) * _CHAR + 0.3
                         for cid, c in clusters.items() if c.parent and gi.get(top(cid)) == k)
            along[k] = max(along[k], titles)
        cols = {items[i].group for i in mine if items[i].group}
        wide = [max(len(cols), 1) * size["column"] + size["margin"]]
        if rankdir not in ("LR", "RL"):
            wide += [max(map(len, items[i].label.split("\n"))) * _CHAR for i in mine if items[i].kind == "chain"]
        across[k] = max(wide)

    def misfit(lanes) -> tuple[float, int]:
        length = max(sum(along[k] for k in ln) for ln in lanes)
        width = sum(max(across[k] for k in ln) for ln in lanes) + 0.3 * (len(lanes) - 1)
        return abs(math.log(length / width / PAGE_RATIO)), len(lanes)

    best = min(_partitions(len(groups)), key=misfit) if len(groups) <= 12 else [list(range(len(groups)))]
    if len(best) == 1:
        return links, []
    lane = {t: j for j, ln in enumerate(best) for k in ln for t in groups[k]}
    out = [replace(ln, constraint=False) if lane[top(ln.tail)] != lane[top(ln.head)] else ln for ln in links]
    heads = []
    for j in range(len(best)):
        heads.append(next(i for i in items if lane[top(i)] == j))
    return out, heads
