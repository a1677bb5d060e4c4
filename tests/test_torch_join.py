"""Joins: equal-weight mean (hand-checked) and FractalNet drop-path (local, global, eval)."""
from __future__ import annotations

import pytest

import torch

from fractalc.backends.torch import from_graph  # noqa: E402
from fractalc.backends.torch.drop_path import DropPathState, join  # noqa: E402
from fractalc.compiler import compile_spec  # noqa: E402
from fractalc.ir.passes.extract_column import extract_column  # noqa: E402

from conftest import SPECS  # noqa: E402
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def test_collapsed_join_averages_with_equal_weights():
    """F-c3d4 in fp mode with every conv = c * identity (centre tap only) and BN in eval with
    fresh statistics (y = x / sqrt(1 + eps)): the block's output has a closed form."""
    c = compile_spec(SPECS / "f_c3d4.fr", {"channels": "3", "size": "5"})
    model = from_graph(c.graph, mode="fp").eval()
    factors = {"col1.conv1": 2.0, "col1.conv2": 3.0, "col2.conv1": 5.0, "col1.conv3": 7.0,
               "col1.conv4": 11.0, "col2.conv2": 13.0, "col3.conv1": 17.0}
    with torch.no_grad():
        for name, f in factors.items():
            w = model.get_submodule("block." + name).weight
            w.zero_()
            for i in range(3):
                w[i, i, 1, 1] = f
    s = 1 / (1 + 1e-5) ** 0.5
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    model.double()
    u = {k: s * v for k, v in factors.items()}  # each unit multiplies by c * s
    join1 = (u["col1.conv1"] * u["col1.conv2"] + u["col2.conv1"]) / 2
    join3 = (u["col1.conv3"] * u["col1.conv4"] * join1 + u["col2.conv2"] * join1 + u["col3.conv1"]) / 3
    assert torch.allclose(model(x), join3 * x, rtol=1e-12)
    assert [len(c.graph.inputs(j)) for j in ("block.join1", "block.join3")] == [2, 3]


def test_join_without_drop_path_is_the_mean():
    xs = [torch.full((1, 2), float(v)) for v in (1, 2, 6)]
    assert torch.equal(join(xs, (1, 2, 3), None), torch.full((1, 2), 3.0))


def test_local_drop_path_never_drops_every_input():
    torch.manual_seed(0)
    xs = [torch.full((2, 1), float(10 ** i)) for i in range(3)]  # subsets have distinct means
    local = DropPathState(torch.tensor(False), torch.tensor(1), 1.0)  # p = 1: all dropped, one rescued
    seen = set()
    for _ in range(60):
        out = join(xs, (1, 2, 3), local)
        assert torch.isfinite(out).all()
        seen.add(out[0, 0].item())
    assert seen == {1.0, 10.0, 100.0}  # exactly one input survives, each of them sometimes
    half = DropPathState(torch.tensor(False), torch.tensor(1), 0.5)
    subsets = {1.0, 10.0, 100.0, 5.5, 50.5, 55.0, 37.0}
    for _ in range(100):
        v = join(xs, (1, 2, 3), half)[0, 0].item()
        assert any(abs(v - m) < 1e-4 for m in subsets), v  # the mean of a non-empty subset


def test_global_drop_path_keeps_one_column_and_others_when_absent():
    xs = [torch.full((1,), float(10 ** i)) for i in range(3)]
    for col, want in ((1, 1.0), (2, 10.0), (3, 100.0)):
        st = DropPathState(torch.tensor(True), torch.tensor(col), 0.15)
        assert join(xs, (1, 2, 3), st).item() == want
    # This join has no input from column 3: it keeps all its inputs (it lies off the path).
    st = DropPathState(torch.tensor(True), torch.tensor(3), 0.15)
    assert join(xs[:2], (1, 2), st).item() == pytest.approx(5.5)


def _f_network():
    return compile_spec(SPECS / "f_c3d4_resnet21.fr", {"dataset": "cifar10", "width": "4"})


def test_global_drop_path_picks_one_column_for_the_whole_network():
    c = _f_network()
    full = from_graph(c.graph, seed=1, mode="fp", drop_path=True, global_ratio=1.0).train()
    columns = {}
    for k in (1, 2, 3):
        m = from_graph(extract_column(c.graph, k), mode="fp").train()
        missing, _ = m.load_state_dict(full.state_dict(), strict=False)
        assert not missing
        columns[k] = m
    x = torch.randn(4, 3, 32, 32)
    refs = {k: m(x) for k, m in columns.items()}
    picked = []
    torch.manual_seed(0)
    for _ in range(12):
        y = full(x)
        match = [k for k, r in refs.items() if torch.allclose(y, r, atol=1e-5)]
        assert len(match) == 1, "output is not a single column's network"
        picked.append(match[0])
    assert len(set(picked)) > 1  # the column is drawn per batch


def test_drop_path_acts_only_in_train_mode_and_defaults():
    c = _f_network()
    assert from_graph(c.graph)._fc_drop_path is False  # binary network: off by default
    fn = compile_spec(SPECS / "fractalnet_cifar.fr", {"filters": "[4, 4, 4, 4, 4]"})
    assert from_graph(fn.graph)._fc_drop_path is True  # full-precision fractal: on
    on = from_graph(c.graph, seed=2, drop_path=True, drop_prob=0.9).eval()
    off = from_graph(c.graph, seed=2, drop_path=False).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(0)
    a = on(x)
    torch.manual_seed(1)
    assert torch.equal(a, on(x)) and torch.equal(a, off(x))
    on.train()
    outs = {tuple(on(x).flatten()[:8].tolist()) for _ in range(4)}
    assert len(outs) > 1  # training with drop-path is random
    with pytest.raises(ValueError):
        on.set_drop_path(True, p=1.5)
