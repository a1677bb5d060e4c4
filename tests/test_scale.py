"""`fractalc scale`: the largest width within a budget, exact at the boundary, in few compiles.

Oracles: a brute-force scan of every value (costs from compile_spec + cost, independently of
the solver), the paper's published widths, and specs built to break the solver's assumption.
"""
from __future__ import annotations

import json
import math
from functools import cache

import pytest
from click.testing import CliRunner

from fractalc.cli import cli, main
from fractalc.compiler import compile_spec
from fractalc.cost import cost
from fractalc.lang.formatter import comments_of, format_source
from fractalc.variants import ScaleError, budget_of, solve

from conftest import SPECS

BLOCK = SPECS / "rf_c3d4.fr"  # param channels = 64
BIREAL18 = SPECS / "bireal_resnet18.fr"


def run(*args):
    return CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)


@cache
def scan(v: int) -> tuple[int, float]:
    c = cost(compile_spec(BLOCK, {"channels": str(v)}).graph)
    return c.bits, c.flops


def brute(budget: dict, keys) -> int:
    fits = [v for v in range(1, 41) if all(scan(v)[k] <= budget[n] for k, n in keys)]
    assert fits and max(fits) < 40, "the budget must fall inside the scanned range"
    return max(fits)


@pytest.mark.parametrize("k", [1, 20, 33])
@pytest.mark.parametrize("delta", [-1, 0, 1])
@pytest.mark.parametrize("start", [None, "1", "21"])  # None: the spec's 64 (search goes down)
def test_exact_against_a_brute_force_scan(k, delta, start):
    budget = {"bits": scan(k)[0] + delta}
    if budget["bits"] < scan(1)[0]:
        with pytest.raises(ScaleError, match="even channels=1 exceeds the budget"):
            solve(BLOCK, budget, param="channels", overrides={"channels": start} if start else None)
        return
    want = brute(budget, [(0, "bits")])
    res = solve(BLOCK, budget, param="channels", overrides={"channels": start} if start else None)
    assert res.value == want
    assert res.cost.bits == scan(want)[0] <= budget["bits"] < res.next.bits == scan(want + 1)[0]
    # a bounded search: doubling/halving then bisection, never a scan
    assert len(res.visited) <= 2 * math.ceil(math.log2(64)) + 3


@pytest.mark.parametrize("kb, kf", [(10, 30), (30, 10), (25, 26)])
def test_both_metrics_against_a_brute_force_scan(kb, kf):
    budget = {"bits": scan(kb)[0], "flops": scan(kf)[1] + 0.5}
    want = brute(budget, [(0, "bits"), (1, "flops")])
    assert want == min(kb, kf)
    assert solve(BLOCK, budget, metric="both", param="channels").value == want
    assert solve(BLOCK, {"flops": budget["flops"]}, metric="flops", param="channels").value == kf


@pytest.mark.parametrize("spec, width", [("rf_c3d4_resnet21.fr", 53), ("rf_c4d8_resnet37.fr", 41),
                                         ("rf_c5d16_resnet69.fr", 31)])
def test_published_widths(spec, width):
    r = run("scale", SPECS / spec, "--budget-of", BIREAL18, "--metric", "params", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert (doc["param"], doc["value"]) == ("width", width)
    base = cost(compile_spec(BIREAL18).graph)
    at = cost(compile_spec(SPECS / spec, {"width": str(width)}).graph)
    above = cost(compile_spec(SPECS / spec, {"width": str(width + 1)}).graph)
    assert at.bits <= base.bits < above.bits
    assert doc["cost"]["bits"] == at.bits and doc["budget"]["bits"] == base.bits
    assert doc["cost"]["flops"] == at.flops and doc["budget"]["flops"] == base.flops
    assert doc["next"]["value"] == width + 1 and doc["next"]["cost"]["bits"] == above.bits
    assert doc["compiles"] <= 12


def test_growth_is_the_default_for_densenets():
    res = solve(SPECS / "drf_c2d2_densenet51.fr", budget_of(SPECS / "binary_densenet51.fr"))
    assert res.param == "growth"
    base = cost(compile_spec(SPECS / "binary_densenet51.fr").graph).bits
    below = cost(compile_spec(SPECS / "drf_c2d2_densenet51.fr", {"growth": str(res.value)}).graph).bits
    above = cost(compile_spec(SPECS / "drf_c2d2_densenet51.fr", {"growth": str(res.value + 1)}).graph).bits
    assert below <= base < above


def test_table_output_shows_both_costs():
    r = run("scale", SPECS / "rf_c3d4_resnet21.fr", "--budget-of", BIREAL18)
    assert r.exit_code == 0
    base = cost(compile_spec(BIREAL18).graph)
    assert "width = 53" in r.output and "width=54" in r.output and "exceeds: params" in r.output
    assert f"{base.bits:,}" in r.output and f"{base.flops:.4e}" in r.output


def test_refuses_when_even_one_exceeds_the_budget(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["scale", str(SPECS / "rf_c4d8_resnet37.fr"), "--budget-of", str(BLOCK)])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "even width=1 exceeds the budget" in err and "Traceback" not in err


def _spec(tmp_path, body: str):
    p = tmp_path / "odd.fr"
    p.write_text(f"param width = 8\nnetwork odd {{\n    input [16, 8, 8]\n    body = {body}\n}}\n")
    return p


@pytest.mark.parametrize("body", ["conv[max(1, 64 - width)]",   # cost falls as width grows
                                  "conv[16]",                     # cost ignores width
                                  "conv[if width < 20 then width else 2]"])  # grows, then falls
def test_cost_that_does_not_grow_is_a_clear_error(tmp_path, body):
    p = _spec(tmp_path, body)
    with pytest.raises(ScaleError, match="do not grow with width"):
        solve(p, {"bits": 10**9})


def test_falling_cost_is_caught_while_searching_downwards(tmp_path):
    p = _spec(tmp_path, "conv[max(1, 64 - width)]")
    at8 = cost(compile_spec(p).graph).bits
    with pytest.raises(ScaleError, match="do not grow with width: width=4 costs"):
        solve(p, {"bits": at8 - 1})  # 8 does not fit, so the search halves to 4


def test_monotonicity_error_through_the_cli(tmp_path, capsys):
    p = _spec(tmp_path, "conv[max(1, 64 - width)]")
    with pytest.raises(SystemExit) as exc:
        main(["scale", str(p), "--budget-of", str(BLOCK), "--metric", "flops"])
    assert exc.value.code == 1
    assert "do not grow with width" in capsys.readouterr().err


def test_parameter_errors(tmp_path):
    with pytest.raises(ScaleError, match="not an integer"):
        solve(BIREAL18, {"bits": 1e9}, param="dataset")
    with pytest.raises(ScaleError, match="no parameter 'nope'"):
        solve(BIREAL18, {"bits": 1e9}, param="nope")
    p = tmp_path / "plain.fr"
    p.write_text("param depth = 2\nnetwork plain {\n    input [3, 8, 8]\n    body = conv[8] * depth\n}\n")
    with pytest.raises(ScaleError, match="no `width` or `growth`.*depth"):
        solve(p, {"bits": 1e9})


def test_write_gives_a_compiling_formatted_spec_elsewhere(tmp_path):
    out = tmp_path / "deep" / "rf_c3.fr"
    out.parent.mkdir()
    src = SPECS / "rf_c4d8_resnet37.fr"
    r = run("scale", src, "--budget-of", BIREAL18, "--set", "columns=3", "--write", out, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    value = doc["value"]
    assert value == 53 and doc["written"] == str(out)  # c3 within Bi-Real18: RF-c3d4 ResNet21's width
    text = out.read_text()
    assert format_source(text, str(out)) == text
    assert set(comments_of(src.read_text())) <= set(comments_of(text))
    c = compile_spec(out)  # imports rebased onto the new directory; defaults carry the result
    assert (c.params["width"], c.params["columns"]) == (53, 3)
    assert cost(c.graph).bits == cost(compile_spec(src, {"columns": "3", "width": "53"}).graph).bits


def test_budget_set_and_write_a_library_parameter(tmp_path):
    out = tmp_path / "cifar.fr"
    src = SPECS / "rf_c3d4_resnet21.fr"
    r = run("scale", src, "--budget-of", BIREAL18, "--set", "dataset=cifar10",
            "--budget-set", "dataset=cifar10", "--write", out, "--json")
    assert r.exit_code == 0, r.output
    value = json.loads(r.stdout)["value"]
    base = cost(compile_spec(BIREAL18, {"dataset": "cifar10"}).graph).bits
    assert cost(compile_spec(src, {"dataset": "cifar10", "width": str(value)}).graph).bits <= base
    assert cost(compile_spec(src, {"dataset": "cifar10", "width": str(value + 1)}).graph).bits > base
    c = compile_spec(out)  # `dataset` lives in lib/common.fr: the written spec re-declares it
    assert (c.params["dataset"], c.params["width"]) == ("cifar10", value)
    assert 'param dataset = "cifar10"' in out.read_text()
