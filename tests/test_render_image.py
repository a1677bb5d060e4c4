"""Rendered images (need Graphviz's `dot`; skipped only where it is absent, CI has it).

The SVG is checked as a picture: it parses as XML, every IR node is drawn (graphviz writes a
node's id as its <title>), and the fractal's columns come out deepest first, left to right.
"""
from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET

import pytest

from fractalc.backends.graphviz import Options, render
from fractalc.compiler import compile_spec

from conftest import BLOCK_SPECS, SPECS, spec_id

pytestmark = [pytest.mark.needs_dot,
              pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")]

SVG = "{http://www.w3.org/2000/svg}"


def svg_nodes(path) -> dict[str, float]:
    """Node title -> x of its first text (the node's centre in a TB layout)."""
    root = ET.parse(path).getroot()
    out = {}
    for g in root.iter(SVG + "g"):
        if "node" in (g.get("class") or "").split():
            title = g.find(SVG + "title").text
            text = next(g.iter(SVG + "text"), None)
            out[title] = float(text.get("x")) if text is not None else float("nan")
    return out


@pytest.mark.parametrize("path", BLOCK_SPECS + [SPECS / "rf_c3d4_resnet21.fr"], ids=spec_id)
def test_svg_is_xml_and_draws_every_node(path, tmp_path):
    g = compile_spec(path).graph
    out = tmp_path / "x.svg"
    render(g, out, Options(level="block"))
    nodes = svg_nodes(out)
    assert set(g.order()) <= set(nodes)


@pytest.mark.parametrize("path", BLOCK_SPECS, ids=spec_id)
@pytest.mark.parametrize("columns", [3, 4])
def test_columns_are_drawn_deepest_first(path, columns, tmp_path):
    g = compile_spec(path, {"columns": str(columns)}).graph
    out = tmp_path / "x.svg"
    render(g, out)
    x = svg_nodes(out)
    heads = [min((n for n in g.order() if f".col{c}." in n), key=g.order().index) for c in range(1, columns + 1)]
    xs = [x[h] for h in heads]
    assert xs == sorted(xs) and len(set(xs)) == columns


def test_png_pdf_and_atomic_overwrite(tmp_path):
    g = compile_spec(SPECS / "bireal_resnet18.fr").graph
    for ext, magic in (("png", b"\x89PNG"), ("pdf", b"%PDF")):
        out = tmp_path / f"x.{ext}"
        out.write_bytes(b"old")
        render(g, out)
        assert out.read_bytes().startswith(magic)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pdf", "x.png"]
