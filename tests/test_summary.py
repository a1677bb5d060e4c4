"""`fractalc.summary` (fractalc/model_summary.py): the per-layer table and totals of a name, a
spec, a compiled graph or a torch network, against the cost model and `fractalc stats --json`."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import fractalc
from fractalc.cli import cli
from fractalc.compiler import compile_spec
from fractalc.cost import cost
from fractalc.model_summary import Summary

from conftest import SPECS

RF21 = SPECS / "rf_c3d4_resnet21.fr"


def quiet(model, **kw):
    return fractalc.summary(model, print_fn=None, **kw)


def check_totals(s: Summary, graph):
    co = cost(graph)
    assert s.float_params == co.total("float_params")
    assert s.binary_params == co.total("binary_params")
    assert s.bn_params == co.total("bn_params") and s.bn_buffers == co.total("bn_buffers")
    assert s.bits == co.bits == 32 * s.float_params + s.binary_params
    assert s.float_macs == co.total("float_mults") and s.binary_macs == co.total("binary_mults")
    assert s.flops == pytest.approx(co.flops) == s.float_macs + s.binary_macs / 64
    assert s.depth == co.depth
    assert s.memory_bytes == s.bits / 8 and s.mbit == s.bits / 1e6
    # the rows: the layers with parameters or MACs, which carry every parameter and MAC
    want = [l for l in co.layers if l.float_params or l.binary_params or l.float_mults or l.binary_mults]
    assert [r.id for r in s.layers] == [l.id for l in want]
    assert sum(r.bits for r in s.layers) == s.bits
    assert sum(r.binary_macs for r in s.layers) == s.binary_macs
    assert sum(r.float_macs for r in s.layers) == s.float_macs
    for r, l in zip(s.layers, want):
        assert (r.binary_params, r.float_params, r.bits, r.binary_macs, r.float_macs) == \
            (l.binary_params, l.float_params, l.bits, l.binary_mults, l.float_mults)
        assert r.memory_bytes == r.bits / 8


@pytest.mark.parametrize("name", ["rf_c3d4_resnet21", "bireal_resnet18", "drf_c3d4", "fractalnet_cifar"])
def test_totals_equal_the_cost_model(name):
    s = quiet(name)
    check_totals(s, compile_spec(fractalc.registry.get(name).path).graph)
    assert s.name == name


def test_every_kind_of_input_gives_the_same_numbers():
    c = compile_spec(RF21, {"width": "41"})
    ref = quiet(c)
    check_totals(ref, c.graph)
    for other in (quiet("rf_c3d4_resnet21", width=41), quiet(RF21, width=41), quiet(str(RF21), width=41),
                  quiet(c.graph), quiet(c.spec, width=41)):
        assert other.layers == ref.layers
        assert (other.bits, other.flops, other.depth) == (ref.bits, ref.flops, ref.depth)
    assert ref.bits != quiet("rf_c3d4_resnet21").bits


def test_column_and_network_options():
    s = quiet("rf_c3d4", column=1)
    check_totals(s, compile_spec(SPECS / "rf_c3d4.fr").with_column(1).graph)
    g = compile_spec(SPECS / "rf_c3d4.fr").graph
    assert quiet(g, column=1).bits == s.bits
    with pytest.raises(fractalc.registry.ModelNameError):
        quiet("rf_c3d4", network="other")
    with pytest.raises(TypeError):
        quiet(compile_spec(SPECS / "rf_c3d4.fr"), channels=8)
    with pytest.raises(ValueError, match="shaped"):
        quiet(compile_spec(SPECS / "rf_c3d4.fr", stage="expanded"))


def test_it_prints_the_table_and_to_json_is_stats_json(capsys):
    s = fractalc.summary("bireal_resnet18")
    out = capsys.readouterr().out
    assert out == s.text.rstrip("\n") + "\n"
    head = next(l for l in out.splitlines() if l.startswith("layer"))
    assert head.split() == ["layer", "op", "output", "1-bit", "params", "32-bit", "params", "memory",
                            "KiB", "1-bit", "MACs", "32-bit", "MACs"]
    for r in s.layers:
        assert any(l.startswith(r.id + " ") for l in out.splitlines())
    total = next(l for l in out.splitlines() if l.startswith("total "))
    assert total.split() == ["total", f"{s.binary_params:,}", f"{s.float_params:,}",
                             f"{s.bits / 8 / 1024:,.2f}", f"{s.binary_macs:,}", f"{s.float_macs:,}"]
    assert f"{s.bits:,} bits" in out and "depth      : 18" in out
    stats = json.loads(CliRunner().invoke(cli, ["stats", str(SPECS / "bireal_resnet18.fr"), "--json"]).output)
    doc = s.to_json()
    for key in ("network", "params", "flops", "depth", "layers"):
        assert doc[key] == stats[key], key
    assert fractalc.summary("bireal_resnet18", print_fn=None).bits == s.bits
    assert capsys.readouterr().out == ""
    lines = []
    short = fractalc.summary("bireal_resnet18", layers=False, print_fn=lines.append)
    assert "1-bit MACs" not in lines[0] and "parameters :" in lines[0] and short.layers == s.layers


def test_the_package_function_stays_a_function():
    quiet("rf_c3d4")
    assert callable(fractalc.summary) and fractalc.summary.__module__ == "fractalc"


def test_a_torch_network_from_build_torch_is_summarised():
    import torch

    m = fractalc.build_torch("rf_c3d4_resnet21", width=8, dataset="cifar10")
    s = quiet(m)
    ref = quiet("rf_c3d4_resnet21", width=8, dataset="cifar10")
    assert s.layers == ref.layers and s.bits == ref.bits
    # the float32 parameters torch holds: every float and binary (latent) parameter
    n = sum(p.numel() for p in m.parameters())
    assert n == s.float_params + s.binary_params
    with pytest.raises(TypeError, match="not built by fractalc.build_torch"):
        quiet(torch.nn.Linear(2, 2))
