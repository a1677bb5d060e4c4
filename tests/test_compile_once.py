"""One compile per command: `fractalc compile --column N` extracts the column once, whatever
the target, and the target's output equals that of the column's graph handed over directly.

Reference: the target function called with `compile_spec(...).with_column(N)` in process."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from fractalc.cli import cli
from fractalc.compiler import compile_spec
from fractalc.ir.passes import extract_column as ec

from conftest import SPECS


@pytest.fixture()
def counted(monkeypatch):
    calls = []
    real = ec.extract_column

    def counting(graph, column):
        calls.append(column)
        return real(graph, column)
    monkeypatch.setattr(ec, "extract_column", counting)
    return calls


@pytest.mark.parametrize("target", ["ir", "json", "torch"])
def test_compile_column_extracts_once(target, counted, tmp_path):
    spec = SPECS / "f_c3d4.fr"
    r = CliRunner().invoke(cli, ["compile", str(spec), "--column", "2", "--target", target],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert counted == [2]
    from fractalc.cli.targets import emit
    ref = emit(target, compile_spec(spec).with_column(2), None, {"column": 2, "seed": None, "weights": None})
    assert r.output == ref


def test_compile_column_onnx_extracts_once(counted, tmp_path):
    import onnx  # noqa: F401  (a dependency of make test: a missing one fails, never skips)
    import torch  # noqa: F401
    out = tmp_path / "m.onnx"
    r = CliRunner().invoke(cli, ["compile", str(SPECS / "f_c3d4.fr"), "--column", "1", "--target", "onnx",
                                 "-o", str(out), "--set", "channels=4", "--set", "size=6"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert counted == [1]
    import onnx
    m = onnx.load(str(out))
    assert {p.key: p.value for p in m.metadata_props}.get("fractalc.column") == "1"


def test_with_column_is_idempotent_and_refuses_another_column():
    c = compile_spec(SPECS / "f_c3d4.fr")
    one = c.with_column(1)
    assert one.column == 1 and c.column is None and c.with_column(None) is c
    assert one.with_column(1) is one
    assert len(one.graph) < len(c.graph)
    with pytest.raises(ValueError, match="already column 1"):
        one.with_column(2)
