"""The extract_column pass: one fractal column as a plain network with unchanged ids."""
from __future__ import annotations

import pytest

from fractalc import ir
from fractalc.errors import FractalcError
from fractalc.compiler import compile_spec
from fractalc.cost import depth
from fractalc.ir.passes import run_default, verify
from fractalc.ir.passes.extract_column import column_of, columns, extract_column

from conftest import SPECS


def test_column_of():
    assert column_of("stage2.block1.col3.conv1") == 3
    assert column_of("block.col12.add1") == 12
    assert column_of("block.join1") == 0
    assert column_of("colx.conv") == 0
    assert column_of("a.col2.b.col1.c") == 1  # the innermost scope wins


@pytest.mark.parametrize("C", [2, 3, 4])
def test_rf_block_columns_have_closed_form_sizes(C):
    g = compile_spec(SPECS / "rf_c3d4.fr", {"columns": str(C), "size": "8"}).graph
    assert columns(g) == tuple(range(1, C + 1))
    for k in range(1, C + 1):
        col = extract_column(g, k)
        verify(col)
        assert col.count(ir.Join) == 0
        convs = list(col.nodes(ir.BinaryConv))
        assert len(convs) == 2 ** (C - k)  # column k is 2^(C-k) units deep
        assert all(column_of(n) == k for n in convs)
        assert depth(col) == 2 ** (C - k)
        assert set(col) <= set(g)  # ids unchanged
        for n in col:  # every surviving node keeps its op
            assert col.op(n) == g.op(n)


def test_dense_network_column_keeps_concats_and_transitions():
    g = compile_spec(SPECS / "drf_c2d2_densenet51.fr", {"dataset": "cifar10"}).graph
    col = extract_column(g, 1)
    assert col.count(ir.Join) == 0
    assert col.count(ir.Concat) == g.count(ir.Concat)
    assert col.count(ir.Conv) == g.count(ir.Conv)
    assert col.shape(col.output_id) == g.shape(g.output_id)
    assert all(column_of(n) in (0, 1) for n in col)


def test_missing_column_is_an_error_naming_the_join():
    g = compile_spec(SPECS / "rf_c3d4.fr", {"size": "8"}).graph
    with pytest.raises(FractalcError, match="has no column 4; its joins take columns 1, 2, 3"):
        extract_column(g, 4)
    with pytest.raises(FractalcError, match="positive"):
        extract_column(g, 0)
    # A network whose blocks have different column counts: a block without column 3 has a
    # join on column 3's path with no column-3 input.
    h = ir.Graph("mixed")
    x = h.add("input", ir.Input((2, 4, 4)))
    a = h.add("b1.col1.conv1", ir.Conv(2, 1), (x,))
    b = h.add("b1.col3.conv1", ir.Conv(2, 1), (x,))
    j = h.add("b1.join1", ir.Join(), (a, b))
    c = h.add("b2.col1.conv1", ir.Conv(2, 1), (j,))
    d = h.add("b2.col2.conv1", ir.Conv(2, 1), (j,))
    k = h.add("b2.join1", ir.Join(), (c, d))
    h.add("output", ir.Output(), (k,))
    h = run_default(h)
    with pytest.raises(FractalcError, match=r"join 'b2.join1' has no input from column 3 \(its inputs come from columns 1, 2\)"):
        extract_column(h, 3)
    assert [n for n in extract_column(h, 1).order()] == ["input", "b1.col1.conv1", "b2.col1.conv1", "output"]


def test_graph_without_joins_is_unchanged():
    g = compile_spec(SPECS / "bireal_resnet18.fr", {"dataset": "cifar10"}).graph
    col = extract_column(g, 1)
    assert col is not g and col.order() == g.order()


def test_state_dict_of_full_model_loads_into_column_model():
    import torch
    from fractalc.backends.torch import from_graph
    g = compile_spec(SPECS / "rf_c3d4_resnet21.fr", {"dataset": "cifar10", "width": "8"}).graph
    full = from_graph(g, seed=1)
    for k in (1, 3):
        col = from_graph(extract_column(g, k), seed=2)
        res = col.load_state_dict(full.state_dict(), strict=False)
        assert res.missing_keys == []
        assert sorted(res.unexpected_keys) == sorted(set(full.state_dict()) - set(col.state_dict()))
        assert all(torch.equal(v, full.state_dict()[n]) for n, v in col.state_dict().items())
