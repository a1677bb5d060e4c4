"""Figure 2: network-level drawings show every (folded) fractal block as its columns, one small
node per unit, joins and shortcuts visible, and fit a page. References: the IR (convs, joins
and their fan-ins, adds per block), closed-form counts of the fractal (2^C - 1 convs, 2^(C-2)
joins after collapsing, fan-ins 2, 3 for c3), the PNG's own size."""
from __future__ import annotations

import shutil
import struct

import pytest

from fractalc import ir
from fractalc.backends.graphviz import Options, render, to_dot
from fractalc.compiler import compile_spec

from conftest import SPECS
from test_render import parse

_G: dict = {}


def graph(name: str, **sets):
    key = (name, tuple(sorted(sets.items())))
    if key not in _G:
        _G[key] = compile_spec(SPECS / f"{name}.fr", {k: str(v) for k, v in sets.items()}).graph
    return _G[key]


def nodes_in(d, prefix: str, cls: str):
    return [n for n, a in d.ir_nodes().items() if a.get("class") == cls and n.startswith(prefix + ".")]


@pytest.mark.parametrize("name,columns", [("rf_c3d4_resnet21", 3), ("rf_c4d8_resnet37", 4),
                                          ("rf_c5d16_resnet69", 5)])
def test_rf_blocks_are_drawn_as_their_columns(name, columns):
    g = graph(name)
    d = parse(to_dot(g))  # the network-level default
    assert d.count("scope") == 0
    for st in range(1, 5):
        blk = f"stage{st}.block1"
        convs = nodes_in(d, blk, "BinaryConv")
        assert len(convs) == 2 ** columns - 1                     # one small node per unit
        assert all(d.nodes[c]["fixedsize"] == "true" for c in convs)
        assert nodes_in(d, blk, "BatchNorm") == []                # each BN drawn in its unit
        joins = nodes_in(d, blk, "Join")
        assert len(joins) == 2 ** (columns - 2)
        assert sorted(d.nodes[j]["label"] for j in joins) == sorted(
            str(len(g.inputs(j))) for j in g.nodes(ir.Join) if j.startswith(blk + "."))
        adds = nodes_in(d, blk, "Add")
        assert len(adds) == 2 ** columns - 1
        shortcuts = [h for t, h, a in d.ir_edges() if a.get("class") == "shortcut" and h in adds]
        assert sorted(shortcuts) == sorted(adds)                  # every residual add, dashed
    # stem, transitions and head: one node each, its layers listed in order
    chains = {n: a["label"] for n, a in d.ir_nodes().items() if a.get("class") == "chain"}
    assert set(chains) == {"stem", "trans1", "trans2", "trans3", "head"}
    assert chains["trans1"].startswith("trans1: avgpool 2x2 > conv 1x1, ")


def test_drf_blocks_show_the_shared_stack_bn_and_the_stack():
    g = graph("drf_c2d2_densenet51")
    d = parse(to_dot(g))
    for st in range(1, 5):
        blk = f"stage{st}.block1"
        (bn,) = nodes_in(d, blk, "BatchNorm")                      # the one shared BN
        heads = [h for t, h, _ in d.ir_edges() if t == bn]
        assert sorted(heads) == [f"{blk}.col1.conv1", f"{blk}.col2.conv1"]
        assert len(nodes_in(d, blk, "BinaryConv")) == 3 and len(nodes_in(d, blk, "Join")) == 1
        (cat,) = nodes_in(d, blk, "Concat")
        assert any(h == cat and a.get("class") == "stack" for _, h, a in d.ir_edges())


def test_full_layers_and_boxes_stay_available():
    g = graph("rf_c3d4_resnet21")
    assert parse(to_dot(g, Options(depth=2))).count("scope") == 4
    assert parse(to_dot(g, Options(compact=False))).count("scope") == 4
    full = parse(to_dot(g, Options(level="network", depth=99, fold=False)))
    assert full.count("BatchNorm") == g.count(ir.BatchNorm)


def test_lr_joins_point_along_the_flow_and_legend_is_one_table():
    d = parse(to_dot(graph("rf_c3d4_resnet21"), Options(rankdir="LR")))
    joins = [a for a in d.ir_nodes().values() if a.get("class") == "Join"]
    assert joins and all(a.get("orientation") == "90" for a in joins)
    tb = parse(to_dot(graph("rf_c3d4_resnet21")))
    assert all("orientation" not in a for a in tb.ir_nodes().values())
    legend = [n for n, a in tb.nodes.items() if a.get("class") == "legend"]
    assert len(legend) == 1


def _png_size(path) -> tuple[int, int]:
    w, h = struct.unpack(">II", path.read_bytes()[16:24])
    return w, h


@pytest.mark.needs_dot
@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
@pytest.mark.parametrize("name", ["rf_c3d4_resnet21", "rf_c5d16_resnet69", "drf_c2d2_densenet51",
                                  "rf_c4d8_resnet77"])
@pytest.mark.parametrize("rankdir", ["TB", "LR"])
def test_network_fits_a_page(name, rankdir, tmp_path):
    out = tmp_path / "n.png"
    render(graph(name), out, Options(rankdir=rankdir))
    w, h = _png_size(out)
    assert max(w, h) / min(w, h) <= 2.0, (w, h)                   # not a strip
    if rankdir == "LR":
        assert w >= h                                             # landscape
    # the unwrapped drawing would be a strip: the lanes are what makes it fit
    d = parse(to_dot(graph(name), Options(rankdir=rankdir)))
    assert any(a.get("constraint") == "false" and a.get("class") == "data" for _, _, a in d.edges)
