"""`import "fractalc:..."`: the spec library bundled with the package (specs/lib in the tree)."""
from __future__ import annotations

import shutil

import pytest

from fractalc import ir
from fractalc.compiler import compile_spec
from fractalc.errors import SpecError
from fractalc.lang.resolve import library_dir

from conftest import SPECS

NET = "\nnetwork mine {\n    input [64, 8, 8]\n    b = RF[3, 64]\n}\n"


def test_library_import_equals_the_relative_one(tmp_path):
    assert library_dir().resolve() == (SPECS / "lib").resolve()  # the source tree's library
    (tmp_path / "mine.fr").write_text('import "fractalc:sofar.fr"\n' + NET)
    by_name = compile_spec(tmp_path / "mine.fr")
    # the relative import from a copy of the tree's library (nothing is written into specs/)
    shutil.copytree(SPECS / "lib", tmp_path / "rel" / "lib")
    beside = tmp_path / "rel" / "mine_relative.fr"
    beside.write_text('import "lib/sofar.fr"\n' + NET)
    relative = compile_spec(beside)
    assert sorted(by_name.graph) == sorted(relative.graph)
    # RF with 3 columns: 2^3 - 1 = 7 binary convs, each with its residual add, 2 joins
    g = by_name.graph
    assert (len(list(g.nodes(ir.BinaryConv))), len(list(g.nodes(ir.Add))), len(list(g.nodes(ir.Join)))) == (7, 7, 2)
    assert g.shape("output") == (64, 8, 8)


def test_missing_library_file_is_a_located_error(tmp_path):
    (tmp_path / "bad.fr").write_text('import "fractalc:sofa.fr"\n' + NET)
    with pytest.raises(SpecError) as e:
        compile_spec(tmp_path / "bad.fr")
    msg = e.value.format()
    assert f"{tmp_path / 'bad.fr'}:1:1" in msg
    assert "no library file fractalc:sofa.fr" in msg and "fractalc:sofar.fr" in msg
