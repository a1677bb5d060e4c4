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

# Kinds only the compact network drawing has, and how its small unit nodes look.
EXTRA_STYLES = {"chain": {"shape": "box", "fillcolor": "#f7f7f7", "style": "filled,rounded"}}
EXTRA_LEGEND = {"chain": "stem / transition / head (its layers)"}
COMPACT_LEGEND = {"BinaryConv": "binary conv unit (with its BN)",
                  "Conv": "full-precision conv unit (with its BN)",
                  "BatchNorm": "BN shared by several convs", "Join": "join (mean), fan-in"}
SMALL = {"width": "0.32", "height": "0.2", "fixedsize": "true", "fontsize": "8"}
SMALL_GLYPH = {"width": "0.24", "height": "0.24", "fixedsize": "true", "fontsize": "8"}


def _style(kind: str) -> dict:
    return dict(EXTRA_STYLES[kind] if kind in EXTRA_STYLES else NODE_STYLES[kind])


def _legend_text(kind: str, compact: bool) -> str:
    if compact and kind in COMPACT_LEGEND:
        return COMPACT_LEGEND[kind]
    return EXTRA_LEGEND[kind] if kind in EXTRA_LEGEND else LEGEND_TEXT[kind]


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
        if cost_of is not None and it.kind in ("scope", "chain"):
            label += "\n" + _cost_text(it.members, cost_of)
        attrs = _style(it.kind)
        attrs.setdefault("style", "filled")
        if it.small:
            glyph = it.kind in ("Join", "Add", "Concat")
            attrs.update(SMALL_GLYPH if glyph else SMALL)
            if it.kind == "BatchNorm" or it.kind == "Slice":
                attrs.update(width="0.4")
            if it.kind == "Join" and scene.rankdir in ("LR", "RL"):
                attrs["orientation"] = "90" if scene.rankdir == "LR" else "270"  # funnel along the flow
            if it.kind == "Join" and scene.rankdir == "BT":
                attrs["orientation"] = "180"
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

    if scene.lane_heads:
        # The lanes start side by side (TB) or one under another (LR), in order: an invisible
        # anchor outside every cluster before each lane's first item, the anchors on one rank
        # (dot keeps the order of a rank's nodes reliably only outside clusters).
        # A head outside every cluster is its own anchor.
        prefix = _legend_prefix(scene).replace("legend/", "lane/")
        rank = Digraph()
        rank.attr("graph", rank="same")
        anchors = []
        for k, head in enumerate(scene.lane_heads):
            if scene.items[head].parent is None:
                anchors.append(head)
                continue
            anchors.append(f"{prefix}{k}")
            rank.node(anchors[-1], "", _attributes={"shape": "point", "style": "invis", "width": "0"})
            root.edge(anchors[-1], head, style="invis", weight="10")
        for a, b in zip(anchors, anchors[1:]):
            rank.edge(a, b, style="invis", weight="10")
        root.subgraph(rank)

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
    rows = [k for k in [*NODE_STYLES, *EXTRA_STYLES] if k in kinds and k not in ("Input", "Output")]
    rows += [k for k in EDGE_STYLES if k in edge_kinds]
    if scene.compact:
        _grid_legend(leg, Digraph, prefix, rows)
        root.subgraph(leg)
        return
    samples = []
    for kind in rows:
        sample, text = prefix + kind, prefix + kind + "/text"
        row = Digraph()
        row.attr("graph", rank="same")
        if kind in NODE_STYLES or kind in EXTRA_STYLES:
            attrs = _style(kind)
            attrs.setdefault("style", "filled")
            row.node(sample, "", _attributes={"class": "legend", "width": "0.45", "height": "0.25",
                                              "fixedsize": "true", **attrs})
            row.node(text, _label(_legend_text(kind, False)),
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


def _grid_legend(leg, Digraph, prefix: str, rows: list[str], per_row: int = 3) -> None:
    """The compact legend: one plaintext node, a table of a colour swatch (its shape named)
    and the kind's text, `per_row` entries a row; edge kinds show their line style in words."""
    cells = []
    for kind in rows:
        if kind in EDGE_STYLES:
            st = EDGE_STYLES[kind]
            colour = st.get("color", "#000000")
            line = {"dashed": "- - -", "bold": "━━━"}.get(st.get("style", ""), "───")
            cells.append(f'<TD><FONT COLOR="{colour}">{line}</FONT></TD>'
                         f'<TD ALIGN="LEFT">{_html(EDGE_LEGEND_TEXT[kind])}</TD>')
            continue
        st = _style(kind)
        fill = st.get("fillcolor", "#ffffff")
        cells.append(f'<TD BGCOLOR="{fill}" BORDER="1" COLOR="#555555" WIDTH="18" HEIGHT="10" FIXEDSIZE="TRUE"></TD>'
                     f'<TD ALIGN="LEFT">{_html(_legend_text(kind, True))} '
                     f'<FONT POINT-SIZE="8" COLOR="#666666">({_html(st.get("shape", "box"))})</FONT></TD>')
    trs = ["<TR>" + "".join(cells[k:k + per_row]) + "</TR>" for k in range(0, len(cells), per_row)]
    table = ('<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="3" CELLPADDING="1">'
             + "".join(trs) + "</TABLE>>")
    leg.node(prefix + "table", table, _attributes={"class": "legend", "shape": "plaintext",
                                                   "style": "", "fontsize": "9"})


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
