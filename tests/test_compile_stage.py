"""`fractalc compile --stage expanded|collapsed|shaped`: the IR before and after join collapsing
and after shape inference; the default is today's output, byte for byte."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fractalc import compiler
from fractalc.cli import cli
from fractalc.cli import compile as compile_cmd
from fractalc.compiler import compile_spec
from fractalc.errors import FractalcError

from conftest import ALL_SPECS, BLOCK_SPECS, ROOT, spec_id

GOLDEN = ROOT / "tests" / "golden" / "ir"


def run(*args):
    r = CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.output


def test_the_cli_spells_the_compilers_stages():
    assert compile_cmd.STAGES == compiler.STAGES == ("expanded", "collapsed", "shaped")


@pytest.mark.parametrize("path", BLOCK_SPECS, ids=spec_id)
def test_shaped_is_the_default_and_matches_the_golden_files(path):
    golden = (GOLDEN / f"{path.stem}.txt").read_text()
    assert run("compile", path) == golden
    assert run("compile", path, "--stage", "shaped") == golden
    assert run("compile", path, "--stage", "shaped", "-t", "json") == run("compile", path, "-t", "json")


@pytest.mark.parametrize("path", ALL_SPECS, ids=spec_id)
def test_each_stage(path):
    c = compile_spec(path)
    nodes = {}
    for stage in compiler.STAGES:
        doc = json.loads(run("compile", path, "--stage", stage, "-t", "json"))
        nodes[stage] = {n["id"]: n for n in doc["nodes"]}
        listing = run("compile", path, "--stage", stage)
        assert listing.splitlines()[0] == f"graph {c.name}  # {len(doc['nodes'])} nodes"
    # expanded: the raw graph, as many nodes as compile_spec counts before collapsing
    assert len(nodes["expanded"]) == c.raw_nodes
    assert len(nodes["shaped"]) == len(c.graph)
    # collapsing removes joins only, and leaves no join whose only consumer is a join
    removed = set(nodes["expanded"]) - set(nodes["collapsed"])
    assert set(nodes["collapsed"]) <= set(nodes["expanded"])
    assert all(nodes["expanded"][n]["op"] == "Join" for n in removed)
    consumers: dict[str, list[str]] = {}
    for n in nodes["collapsed"].values():
        for i in n["inputs"]:
            consumers.setdefault(i, []).append(n["id"])
    for n in nodes["collapsed"].values():
        cs = consumers.get(n["id"], [])
        assert not (n["op"] == "Join" and len(cs) == 1 and nodes["collapsed"][cs[0]]["op"] == "Join"), n["id"]
    # expand sets every shape and collapsing keeps them: shaped only verifies the collapsed graph
    assert nodes["collapsed"] == nodes["shaped"]


def test_fractal_blocks_show_the_rewrite():
    """FractalNet's join collapsing is visible: the expanded F-c3d4 block has a join feeding a
    join, which the collapsed one merges into one join of three inputs."""
    exp = json.loads(run("compile", BLOCK_SPECS[0], "--stage", "expanded", "-t", "json"))["nodes"]
    col = json.loads(run("compile", BLOCK_SPECS[0], "--stage", "collapsed", "-t", "json"))["nodes"]
    assert len(exp) == len(col) + 1
    ops = {n["id"]: n["op"] for n in exp}
    assert any(n["op"] == "Join" and any(ops[i] == "Join" for i in n["inputs"]) for n in exp)
    assert max(len(n["inputs"]) for n in col if n["op"] == "Join") == 3


def test_stage_errors():
    with pytest.raises(FractalcError, match="IR targets"):
        CliRunner().invoke(cli, ["compile", str(BLOCK_SPECS[0]), "--stage", "expanded", "-t", "torch"],
                           catch_exceptions=False)
    with pytest.raises(FractalcError, match="column"):
        CliRunner().invoke(cli, ["compile", str(BLOCK_SPECS[0]), "--stage", "collapsed", "--column", "1"],
                           catch_exceptions=False)
    r = CliRunner().invoke(cli, ["compile", str(BLOCK_SPECS[0]), "--stage", "parsed"])
    assert r.exit_code == 2 and "parsed" in r.output
    with pytest.raises(ValueError, match="stage"):
        compile_spec(BLOCK_SPECS[0], stage="parsed")
    with pytest.raises(ValueError, match="shaped"):
        compile_spec(BLOCK_SPECS[0], stage="collapsed").with_column(1)
