"""Scene -> DOT text, built with the `graphviz` Python package.

Every identifier is written double-quoted, exactly as the IR id: the package's own quoting
leaves plain words bare and reads a colon in an edge end as a port, while scope labels may
hold any character. Output is deterministic: items, clusters and links come in the scene's
order, attributes in a fixed order.
"""
from __future__ import annotations

from fractalc.errors import BackendUnavailable

from .scene import Scene
from .style import EDGE_LEGEND_TEXT, EDGE_STYLES, LEGEND_TEXT, NODE_STYLES, si

FONT = "Helvetica"


def _quote(identifier: str) -> str:
    return '"' + identifier.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _label(text: str) -> str:
    """Plain text -> a DOT escString: backslashes literal, newlines as centred line breaks."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _left_label(text: str) -> str:
    """Like `_label`, with every line left-justified (multi-line cluster titles)."""
    return text.replace("\\", "\\\\").replace("\n", "\\l") + "\\l"


def _digraph_class():
    try:
        import graphviz
    except ImportError:
        raise BackendUnavailable("rendering needs the Python package 'graphviz'",
                                 hint="pip install 'fractalc[render]'") from None

    class Digraph(graphviz.Digraph):
        _quote = staticmethod(_quote)
        _quote_edge = staticmethod(_quote)

    return Digraph


def _cost_text(ids, cost_of) -> str:
    bits = sum(cost_of[n].bits for n in ids)
    flops = sum(cost_of[n].flops for n in ids)
    return f"{bits / 1e6:.3g} Mbit, {si(flops)} FLOPs"


def _legend_prefix(scene: Scene) -> str:
    prefix = "legend/"
    while any(i.startswith(prefix) for i in scene.items):
        prefix = "_" + prefix
    return prefix


def to_dot(scene: Scene, cost_of=None) -> str:
    """DOT source of a scene. ``cost_of`` (IR id -> fractalc.cost.LayerCost) adds per-scope cost."""
    Digraph = _digraph_class()
    root = Digraph(scene.title)
    title = scene.title
    if cost_of is not None:
        title += f"\n{_cost_text(list(cost_of), cost_of)} total"
    root.attr("graph", label=_label(title), labelloc="t", fontname=FONT, fontsize="14",
              rankdir=scene.rankdir, newrank="true", nodesep="0.25", ranksep="0.3")
    root.attr("node", fontname=FONT, fontsize="10", style="filled", height="0.3", margin="0.08,0.03")
    root.attr("edge", fontname=FONT, fontsize="9", arrowsize="0.6")

    # Clusters are nested subgraph objects; items are declared inside their innermost cluster.
    subs = {None: root}
    for cid, cl in scene.clusters.items():
        label = cl.label
        if cost_of is not None and not cl.label.startswith("col"):
            label += "\n" + _cost_text(cl.members, cost_of)
        sub = Digraph("cluster_" + cid)
        sub.attr("graph", label=_left_label(label), id="scope/" + cid, style="rounded,filled",
                 fillcolor="#fafafa" if cl.parent is None else "#f2f2f2", color="#999999",
                 fontsize="11", labeljust="l")
        subs[cid] = sub
    for it in scene.items.values():
        label = it.label
        if cost_of is not None and it.kind == "scope":
            label += "\n" + _cost_text(it.members, cost_of)
        attrs = dict(NODE_STYLES[it.kind])
        attrs.setdefault("style", "filled")
        if it.group is not None:
            attrs["group"] = it.group
        subs[it.parent].node(it.id, _label(label),
                             _attributes={"class": it.kind, "tooltip": _label(it.tooltip), **attrs})
    # A subgraph is copied into its parent when added: add inner clusters first, siblings in order.
    pos = {c: i for i, c in enumerate(scene.clusters)}
    for cid in sorted(pos, key=lambda c: (-c.count("."), pos[c])):
        cl = scene.clusters[cid]
        subs[cl.parent].subgraph(subs[cid])

    for ln in scene.links:
        attrs = dict(EDGE_STYLES[ln.kind])
        if not ln.constraint:
            attrs["constraint"] = "false"
        root.edge(ln.tail, ln.head, _attributes={"class": ln.kind, **attrs})

    for heads in scene.column_ranks:
        rank = Digraph()
        rank.attr("graph", rank="same")
        for a, b in zip(heads, heads[1:]):
            rank.edge(a, b, style="invis")
        root.subgraph(rank)

    if scene.legend:
        _legend(root, Digraph, scene)
    return root.source


def _legend(root, Digraph, scene: Scene) -> None:
    """One row per kind drawn: a small blank sample of the node (or edge) and its name."""
    kinds = {it.kind for it in scene.items.values()}
    edge_kinds = {ln.kind for ln in scene.links} - {"data"}
    prefix = _legend_prefix(scene)
    leg = Digraph("cluster_" + prefix)
    leg.attr("graph", label="legend", id=prefix, style="rounded", color="#bbbbbb", fontsize="11")
    leg.attr("node", fontsize="10")
    rows = [k for k in NODE_STYLES if k in kinds and k not in ("Input", "Output")]
    rows += [k for k in EDGE_STYLES if k in edge_kinds]
    samples = []
    for kind in rows:
        sample, text = prefix + kind, prefix + kind + "/text"
        row = Digraph()
        row.attr("graph", rank="same")
        if kind in NODE_STYLES:
            attrs = dict(NODE_STYLES[kind])
            attrs.setdefault("style", "filled")
            row.node(sample, "", _attributes={"class": "legend", "width": "0.45", "height": "0.25",
                                              "fixedsize": "true", **attrs})
            row.node(text, _label(LEGEND_TEXT[kind]),
                     _attributes={"class": "legend", "shape": "plaintext", "style": ""})
            row.edge(sample, text, style="invis")
        else:
            row.node(sample, "", _attributes={"class": "legend", "shape": "point", "width": "0.03"})
            row.node(text, _label(EDGE_LEGEND_TEXT[kind]),
                     _attributes={"class": "legend", "shape": "plaintext", "style": ""})
            row.edge(sample, text, _attributes={"class": "legend", "minlen": "1", **EDGE_STYLES[kind]})
        leg.subgraph(row)
        samples.append(sample)
    for a, b in zip(samples, samples[1:]):  # rows top to bottom, in legend order
        leg.edge(a, b, style="invis")
    root.subgraph(leg)
