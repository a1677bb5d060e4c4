"""A small reader for the DOT text fractalc writes (tests only): one statement per line,
identifiers double-quoted. Independent of the graphviz package, so the tests check the text
itself."""
from __future__ import annotations

import re
from dataclasses import dataclass

_STR = r'"((?:[^"\\]|\\.)*)"'
_NODE = re.compile(rf'^\s*{_STR}(?: \[(.*)\])?$')
_EDGE = re.compile(rf'^\s*{_STR} -> {_STR}(?: \[(.*)\])?$')
_ATTR = re.compile(r'([A-Za-z_]+)=("(?:[^"\\]|\\.)*"|[^\s\]"]+)')


def _unquote(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s)


def _unescape_label(s: str) -> str:
    """An escString: backslash n, l or r ends a line (centred, left, right), backslash-x is x."""
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) in "nlr" else m.group(1), s)


def attrs(text: str | None) -> dict[str, str]:
    out = {}
    for k, v in _ATTR.findall(text or ""):
        out[k] = _unescape_label(v[1:-1]) if v.startswith('"') else v
    return out


@dataclass
class Dot:
    nodes: dict[str, dict[str, str]]       # id -> attributes (first declaration)
    edges: list[tuple[str, str, dict]]     # in order, invisible ones included

    def ir_nodes(self) -> dict[str, dict[str, str]]:
        return {k: a for k, a in self.nodes.items() if a.get("class") not in ("legend", None)}

    def ir_edges(self) -> list[tuple[str, str, dict]]:
        ids = self.ir_nodes()
        return [e for e in self.edges if e[0] in ids and e[1] in ids and e[2].get("style") != "invis"]

    def count(self, cls: str) -> int:
        return sum(1 for a in self.ir_nodes().values() if a.get("class") == cls)


def parse(text: str) -> Dot:
    nodes: dict[str, dict[str, str]] = {}
    edges = []
    for line in text.splitlines():
        m = _EDGE.match(line)
        if m:
            edges.append((_unquote(m.group(1)), _unquote(m.group(2)), attrs(m.group(3))))
            continue
        m = _NODE.match(line)
        if m:
            nodes.setdefault(_unquote(m.group(1)), attrs(m.group(2)))
    return Dot(nodes, edges)


# ------------------------------------------------------------------------------------------
# The tests. References: the IR's own node list and input tuples, closed-form counts of the
# reference doc (joins of F-c4d8: fan-ins 2, 3, 2, 4), architecture facts of the specs.

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fractalc import ir
from fractalc.backends.graphviz import Options, find_runs, render, to_dot
from fractalc.backends.graphviz.output import write
from fractalc.cli import cli
from fractalc.compiler import compile_spec
from fractalc.errors import BackendUnavailable, FractalcError

from conftest import BLOCK_SPECS, ROOT, SPECS, spec_id

GOLDEN = ROOT / "tests" / "golden" / "render"
NETWORK_GOLDEN = SPECS / "bireal_resnet18.fr"
FULL = Options(level="block")           # every IR node drawn, nothing folded
_CACHE: dict = {}


def graph(path: Path, **sets) -> ir.Graph:
    key = (str(path), tuple(sorted(sets.items())))
    if key not in _CACHE:
        _CACHE[key] = compile_spec(path, {k: str(v) for k, v in sets.items()}).graph
    return _CACHE[key]


def dot_of(path: Path, options: Options = Options(), **sets) -> Dot:
    return parse(to_dot(graph(path, **sets), options))


@pytest.mark.parametrize("path", BLOCK_SPECS + [NETWORK_GOLDEN], ids=spec_id)
def test_dot_matches_golden(path):
    """Golden DOT text (regenerate with FRACTALC_UPDATE_GOLDEN=1 and review the diff)."""
    text = to_dot(graph(path))
    golden = GOLDEN / f"{path.stem}.dot"
    if os.environ.get("FRACTALC_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_cli_prints_the_same_dot():
    r = CliRunner().invoke(cli, ["render", str(SPECS / "rf_c3d4.fr")], catch_exceptions=False)
    assert r.exit_code == 0
    assert r.output == (GOLDEN / "rf_c3d4.dot").read_text()


def test_dot_is_byte_identical_across_processes(tmp_path):
    """Same spec, same bytes, whatever the hash seed of the process."""
    outs = []
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = tmp_path / f"d{seed}.dot"
        subprocess.run([sys.executable, "-m", "fractalc", "render", str(SPECS / "drf_c2d2_densenet51.fr"),
                        "--depth", "3", "-o", str(out)], env=env, check=True, capture_output=True)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] and len(outs[0]) > 1000


COUNT_SPECS = BLOCK_SPECS + [SPECS / n for n in ("rf_c3d4_resnet21.fr", "bireal_resnet18.fr",
                                                  "drf_c2d2_densenet51.fr", "fractalnet_cifar.fr")]


@pytest.mark.parametrize("path", COUNT_SPECS, ids=spec_id)
def test_full_depth_draws_every_ir_node_and_edge(path):
    g = graph(path)
    d = dot_of(path, FULL)
    for kind in (ir.Conv, ir.BinaryConv, ir.Join, ir.Add, ir.Concat):
        assert d.count(kind.__name__) == g.count(kind), kind.__name__
    assert set(d.ir_nodes()) == set(g.order())
    for n, a in d.ir_nodes().items():
        assert a["class"] == ir.op_name(g.op(n))
    drawn = sorted((t, h) for t, h, _ in d.ir_edges())
    expected = sorted((u, v) for v in g.order() for u in g.inputs(v))
    assert drawn == expected


@pytest.mark.parametrize("path", COUNT_SPECS[3:], ids=spec_id)
def test_network_level_unfolded_at_full_depth_draws_every_node(path):
    g = graph(path)
    d = dot_of(path, Options(level="network", depth=99, fold=False))
    for kind in (ir.Conv, ir.BinaryConv, ir.Join, ir.Add, ir.Concat):
        assert d.count(kind.__name__) == g.count(kind), kind.__name__


def test_join_fan_in_is_drawn():
    """F-c4d8 has 4 joins after collapsing, with fan-ins 2, 3, 2, 4 (reference doc, section 2)."""
    d = dot_of(SPECS / "f_c3d4.fr", FULL, columns=4)
    joins = [n for n, a in d.ir_nodes().items() if a["class"] == "Join"]
    fan_in = sorted(sum(1 for _, h, _ in d.ir_edges() if h == j) for j in joins)
    assert fan_in == [2, 2, 3, 4]
    assert sorted(d.nodes[j]["label"] for j in joins) == ["join 2", "join 2", "join 3", "join 4"]


def test_residual_shortcuts_are_dashed_and_come_from_the_unit_input():
    g = graph(SPECS / "rf_c3d4.fr")
    d = dot_of(SPECS / "rf_c3d4.fr", FULL)
    adds = list(g.nodes(ir.Add))
    assert len(adds) == 7
    for a in adds:
        into = [(t, at) for t, h, at in d.ir_edges() if h == a]
        short = [(t, at) for t, at in into if at.get("class") == "shortcut"]
        assert len(into) == 2 and len(short) == 1
        tail, at = short[0]
        assert at["style"] == "dashed" and at["constraint"] == "false"
        # out = BN(conv(z)) + z: the shortcut's tail is what feeds the conv of the other branch.
        (bn,) = [t for t, _ in into if t != tail]
        (conv,) = [t for t, h, _ in d.ir_edges() if h == bn]
        (z,) = [t for t, h, _ in d.ir_edges() if h == conv]
        assert tail == z


def test_bireal_downsampling_shortcut_is_the_projection_branch():
    d = dot_of(SPECS / "bireal_resnet18.fr", FULL)
    short = [(t, h) for t, h, a in d.ir_edges() if a.get("class") == "shortcut" and h.startswith("stage2.block1.")]
    assert short == [("stage2.block1.bn2", "stage2.block1.add1")]
    assert d.nodes["stage2.block1.conv2"]["class"] == "Conv"  # the fp 1x1 conv feeding bn2


def test_dense_concat_reads_the_stack():
    d = dot_of(SPECS / "drf_c3d4.fr", FULL)
    into = {t: a["class"] for t, h, a in d.ir_edges() if h == "block.concat1"}
    assert into == {"input": "stack", "block.join3": "data"}
    assert d.nodes["block.concat1"]["shape"] == "cylinder"
    assert d.nodes["block.concat1"]["label"].endswith("96x56x56")  # 64 + growth 32


def test_kinds_have_distinct_colours_and_shapes_and_a_legend():
    d = dot_of(SPECS / "bireal_resnet18.fr", FULL)
    text = to_dot(graph(SPECS / "drf_c3d4.fr"))
    dd = parse(text)
    styles = {}
    for dot in (d, dd):
        for a in dot.ir_nodes().values():
            styles.setdefault(a["class"], (a["shape"], a["fillcolor"]))
    kinds = ["BinaryConv", "Conv", "BatchNorm", "Pool", "Linear", "Join", "Add", "Concat"]
    assert len({styles[k][0] for k in kinds}) == len(kinds)
    assert len({styles[k][1] for k in kinds}) == len(kinds)
    legend = [a for a in dd.nodes.values() if a.get("class") == "legend" and a.get("label")]
    assert {a["label"] for a in legend} >= {"binary conv", "batch norm", "join (mean)", "residual add",
                                              "concat (stack)", "shortcut", "feature stack"}
    assert "legend" not in parse(to_dot(graph(SPECS / "drf_c3d4.fr"), Options(legend=False))).nodes.__repr__()


def test_columns_are_aligned_deepest_first():
    d = dot_of(SPECS / "rf_c3d4.fr", FULL, columns=4)
    flat = [(t, h) for t, h, a in d.edges if a.get("style") == "invis" and not t.startswith("legend/")]
    assert flat == [("block.col1.conv1", "block.col2.conv1"), ("block.col2.conv1", "block.col3.conv1"),
                    ("block.col3.conv1", "block.col4.conv1")]
    assert d.nodes["block.col3.conv1"]["group"] == "block.col3"


def test_levels_pick_block_for_blocks_and_network_for_networks():
    assert all(a["class"] != "scope" for a in dot_of(SPECS / "rf_c3d4.fr").ir_nodes().values())
    d = dot_of(SPECS / "rf_c3d4_resnet21.fr", Options(depth=2))  # boxes (the compact default: test_render_network)
    scopes = [n for n, a in d.ir_nodes().items() if a["class"] == "scope"]
    assert scopes == [f"stage{i}.block1" for i in range(1, 5)]
    assert d.count("Conv") == 4  # stem conv and the three transitions' 1x1 convs stay visible


def test_repeated_blocks_are_drawn_once_with_their_count():
    """Bi-Real-18: stage1 = 4 identical blocks, stages 2-4 = a downsampling block + 3 identical."""
    assert [len(r.scopes) for r in find_runs(graph(SPECS / "bireal_resnet18.fr"))] == [4, 3, 3, 3]
    d = dot_of(SPECS / "bireal_resnet18.fr", Options(level="network", depth=99))
    assert graph(SPECS / "bireal_resnet18.fr").count(ir.BinaryConv) == 16
    assert d.count("BinaryConv") == 16 - 3 - 2 - 2 - 2
    boxes = dot_of(SPECS / "bireal_resnet18.fr", Options(depth=2)).ir_nodes()
    assert boxes["stage1.block1"]["label"].startswith("block1-block4 x 4\n")
    assert boxes["stage3.block2"]["label"].startswith("block2-block4 x 3\n")
    assert boxes["stage3.block2"]["label"].endswith("\n256x14x14")
    # RF-c3d4 ResNet41 (blocks 1, 3, 3, 2): one drawn block per stage, 7 binary convs each.
    d41 = dot_of(SPECS / "rf_c3d4_resnet41.fr", Options(level="network", depth=99))
    assert d41.count("BinaryConv") == 4 * 7 and graph(SPECS / "rf_c3d4_resnet41.fr").count(ir.BinaryConv) == 9 * 7


def test_depth_one_collapses_every_stage_into_a_box_with_its_shape():
    d = dot_of(SPECS / "bireal_resnet18.fr", Options(depth=1))
    chain = ["input", "stem", "stage1", "stage2", "stage3", "stage4", "head", "output"]
    assert list(d.ir_nodes()) == chain
    assert [(t, h) for t, h, _ in d.ir_edges()] == list(zip(chain, chain[1:]))
    shapes = {n: d.nodes[n]["label"].rsplit("\n", 1)[-1] for n in chain[1:-1]}
    assert shapes == {"stem": "64x56x56", "stage1": "64x56x56", "stage2": "128x28x28",
                      "stage3": "256x14x14", "stage4": "512x7x7", "head": "1000"}


def test_rankdir_and_bad_options():
    assert "rankdir=LR" in to_dot(graph(SPECS / "rf_c3d4.fr"), Options(rankdir="LR"))
    with pytest.raises(FractalcError, match="depth"):
        to_dot(graph(SPECS / "rf_c3d4.fr"), Options(depth=0))
    with pytest.raises(FractalcError, match="level"):
        to_dot(graph(SPECS / "rf_c3d4.fr"), Options(level="stage"))


def test_annotate_cost_gives_closed_form_block_cost():
    """RF-c3d4 on 64x56x56: 7 binary 3x3 convs 64->64 and 7 BNs.
    bits = 7*64*64*9 + 32*7*2*64 = 286720; FLOPs = 7*64*64*9*56*56/64 = 12644352."""
    d = dot_of(SPECS / "rf_c3d4.fr", Options(annotate=("cost",)))
    text = to_dot(graph(SPECS / "rf_c3d4.fr"), Options(annotate=("cost",)))
    assert 'label="block\\l0.287 Mbit, 12.6M FLOPs\\l"' in text
    assert "0.287 Mbit, 12.6M FLOPs total" in text
    net = dot_of(SPECS / "bireal_resnet18.fr", Options(depth=2, annotate=("cost",)))
    # stage1's 4 folded blocks: 4 x (64*64*9 binary bits + 32*2*64 BN bits) = 163840 bits
    assert "\n0.164 Mbit, " in net.nodes["stage1.block1"]["label"]
    assert d.nodes


def test_every_id_is_written_quoted():
    text = to_dot(graph(SPECS / "bireal_resnet18.fr"), FULL)
    for n in graph(SPECS / "bireal_resnet18.fr").order():
        assert f'\t"{n}" [' in text
    assert '"input" -> "stem.conv1"' in text


# --- output files ------------------------------------------------------------------------

def _run_cli(args, path_env):
    env = dict(os.environ, PATH=str(path_env))
    return subprocess.run([sys.executable, "-m", "fractalc", *map(str, args)], env=env,
                          capture_output=True, text=True)


def test_missing_dot_is_a_clear_error(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(BackendUnavailable) as e:
        render(graph(SPECS / "rf_c3d4.fr"), tmp_path / "x.svg")
    assert "`graphviz`" in e.value.format() and "dot" in e.value.message
    r = _run_cli(["render", SPECS / "rf_c3d4.fr", "-o", tmp_path / "x.png"], empty)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "apt-get install graphviz" in r.stderr
    assert not (tmp_path / "x.png").exists()
    # .dot needs no dot program
    r = _run_cli(["render", SPECS / "rf_c3d4.fr", "-o", tmp_path / "x.dot"], empty)
    assert r.returncode == 0 and (tmp_path / "x.dot").read_text() == (GOLDEN / "rf_c3d4.dot").read_text()


def _fake_dot(bindir: Path, script: str) -> None:
    bindir.mkdir(exist_ok=True)
    exe = bindir / "dot"
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(0o755)


def test_failing_render_leaves_the_old_file_intact(tmp_path, monkeypatch):
    out = tmp_path / "fig.svg"
    out.write_text("old picture")
    _fake_dot(tmp_path / "bin", "cat >/dev/null\nprintf '<svg partial'\necho 'dot: out of memory' >&2\nexit 1\n")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(FractalcError, match="out of memory"):
        write(to_dot(graph(SPECS / "rf_c3d4.fr")), out)
    assert out.read_text() == "old picture"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "fig.svg"]  # no temp file left
    # a successful render replaces it in one step, with exactly what dot printed
    _fake_dot(tmp_path / "bin", 'cat >/dev/null\nprintf "NEW-%s" "$1"\n')
    write(to_dot(graph(SPECS / "rf_c3d4.fr")), out)
    assert out.read_text() == "NEW--Tsvg"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "fig.svg"]


def test_bad_extension_is_refused_before_compiling(tmp_path):
    r = CliRunner().invoke(cli, ["render", str(SPECS / "rf_c3d4.fr"), "-o", str(tmp_path / "x.jpg")])
    assert r.exit_code != 0 and isinstance(r.exception, FractalcError)
    assert ".svg" in str(r.exception)
    assert not (tmp_path / "x.jpg").exists()


def test_cli_options_and_sets(tmp_path):
    out = tmp_path / "c4.dot"
    r = CliRunner().invoke(cli, ["render", str(SPECS / "rf_c3d4.fr"), "--set", "columns=4", "-o", str(out),
                                 "--rankdir", "LR", "--annotate", "cost"], catch_exceptions=False)
    assert r.exit_code == 0
    d = parse(out.read_text())
    assert d.count("BinaryConv") == 2 ** 4 - 1
    assert "rf_c3d4 (columns=4)" in out.read_text() and "rankdir=LR" in out.read_text()


def test_a_block_is_a_box_or_drawn_with_all_its_columns():
    """At depth 3 the cut would fall on colN scopes; columns are expanded with their block."""
    g = graph(SPECS / "rf_c3d4_resnet21.fr")
    d3 = dot_of(SPECS / "rf_c3d4_resnet21.fr", Options(depth=3))
    assert d3.count("scope") == 0 and d3.count("BinaryConv") == g.count(ir.BinaryConv) == 28
    d2 = dot_of(SPECS / "rf_c3d4_resnet21.fr", Options(depth=2))
    assert d2.count("BinaryConv") == 0 and d2.count("scope") == 4
