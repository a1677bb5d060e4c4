"""The binary-network zoo as specs: `fractalc stats --json` gives exactly the parameter and MAC
counts of `larq.models.summary` for every larq-zoo network and ReActNet-18 at 224x224.

Reference numbers (binary params, float params, binary MACs, float MACs) are larq's own, with
their provenance in docs/zoo-reference.md section 2.1: `larq.models.summary` of the zoo models
(larq 0.14.0, larq-zoo 2.4.0), agreeing with the totals published in larq/docs (commit 0d3dbbb)
and the models' docstrings; ReActNet-18 has no larq model and is derived from its torch source
(liuzechun/ReActNet resnet/2_step2/birealnet.py). larq's convention: BN = 2 floats per channel,
biases counted, a MAC is binary only when input and kernel are both 1-bit.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fractalc.cli import main

ROOT = Path(__file__).resolve().parent.parent

#: network -> (spec file, binary params, float params, binary MACs, float MACs)
ZOO = {
    "xnornet": ("specs/zoo/xnornet.fr", 58_236_928, 4_150_176, 1_025_744_896, 113_379_328),
    "binary_alexnet": ("specs/zoo/binary_alexnet.fr", 61_827_776, 20_944, 768_512_000, 72_855_552),
    "bireal_resnet18": ("specs/bireal_resnet18.fr", 10_985_472, 704_040, 1_676_279_808, 137_793_536),
    "binary_resnet_e18": ("specs/zoo/binary_resnet_e18.fr", 10_985_472, 704_168, 1_676_279_808, 137_793_536),
    "binary_densenet28": ("specs/binary_densenet28.fr", 4_202_496, 929_000, 3_587_383_296, 202_484_224),
    "binary_densenet37": ("specs/binary_densenet37.fr", 7_593_984, 1_108_264, 4_506_808_320, 199_738_368),
    "binary_densenet37_dilated": ("specs/zoo/binary_densenet37_dilated.fr", 7_593_984, 1_108_264,
                                  7_774_470_144, 452_625_408),
    "binary_densenet45": ("specs/zoo/binary_densenet45.fr", 12_349_440, 1_540_072, 6_430_556_160, 244_103_424),
    "real_to_binary": ("specs/zoo/real_to_binary.fr", 10_985_472, 1_001_448, 1_676_279_808, 138_087_936),
    "reactnet18": ("specs/zoo/reactnet18.fr", 10_985_472, 718_952, 1_676_279_808, 137_793_536),
    "quicknet_small": ("specs/zoo/quicknet.fr", 11_980_800, 674_888, 1_156_055_040, 15_941_120),
    "quicknet": ("specs/zoo/quicknet.fr", 12_533_760, 700_328, 1_849_688_064, 29_651_712),
    "quicknet_large": ("specs/zoo/quicknet.fr", 22_634_496, 707_752, 3_699_376_128, 29_651_712),
}


def _stats(path: str, capsys, network: str) -> dict:
    main(["stats", str(ROOT / path), "--network", network, "--json", "--no-layers"])  # exits only on error
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_stats_equal_larq_summary(name, capsys):
    path, binary, floats, bmacs, fmacs = ZOO[name]
    d = _stats(path, capsys, name)
    assert d["network"] == name
    got = (d["params"]["binary"], d["params"]["float"], d["flops"]["binary_mults"], d["flops"]["float_mults"])
    assert got == (binary, floats, bmacs, fmacs)
    # larq's memory: bits = binary + 32 x float
    assert d["params"]["bits"] == binary + 32 * floats


def _bits(path: str, capsys, *args) -> int:
    main(["stats", str(ROOT / path), *args, "--json", "--no-layers"])
    return json.loads(capsys.readouterr().out)["params"]["bits"]


def test_rf_quicknet_is_the_widest_within_quicknets_budget(capsys):
    """The fractal on the zoo: RF-c3d4 QuickNet's width is the largest whose parameter bits fit
    QuickNet's (what `fractalc scale --budget-of` solves), checked by compiling both sides."""
    budget = _bits("specs/zoo/quicknet.fr", capsys)
    spec = "specs/zoo/rf_c3d4_quicknet.fr"
    assert _bits(spec, capsys) <= budget < _bits(spec, capsys, "--set", "width=55")


def test_rf_reactnet_is_the_widest_within_reactnets_budget(capsys):
    budget = _bits("specs/zoo/reactnet18.fr", capsys)
    spec = "specs/zoo/rf_c3d4_reactnet21.fr"
    assert _bits(spec, capsys) <= budget < _bits(spec, capsys, "--set", "width=54")
