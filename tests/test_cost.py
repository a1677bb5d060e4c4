"""The cost model against the published calibration points and hand counts."""
from __future__ import annotations

import pytest

from fractalc.compiler import compile_spec
from fractalc.cost import cost

from conftest import SPECS


def within(value, published, rel=0.01):
    return abs(value - published) / published <= rel


def test_bireal18_flops_published():
    co = cost(compile_spec(SPECS / "bireal_resnet18.fr").graph)
    assert within(co.flops, 1.63e8)


@pytest.mark.parametrize("spec,flops,mib", [("binary_densenet28.fr", 2.58e8, 4.04),
                                            ("binary_densenet37.fr", 2.70e8, 5.13)])
def test_binary_densenet_published(spec, flops, mib):
    j = cost(compile_spec(SPECS / spec).graph).to_json(per_layer=False)
    assert within(j["flops"]["total"], flops)
    assert within(j["params"]["mib"], mib)


def test_bireal18_hand_count():
    """Independent count of Bi-Real ResNet18 (ImageNet): layer by layer from the architecture."""
    binary = 4 * 64 * 64 * 9 + (64 * 128 * 9 + 3 * 128 * 128 * 9) \
        + (128 * 256 * 9 + 3 * 256 * 256 * 9) + (256 * 512 * 9 + 3 * 512 * 512 * 9)
    downs = 64 * 128 + 128 * 256 + 256 * 512
    bn_channels = 64 + 4 * (64 + 128 + 256 + 512) + (128 + 256 + 512)
    floats = 7 * 7 * 3 * 64 + downs + 512 * 1000 + 1000 + 2 * bn_channels
    bin_mults = 4 * 64 * 64 * 9 * 56 * 56 + sum(
        (c // 2) * c * 9 * s * s + 3 * c * c * 9 * s * s for c, s in [(128, 28), (256, 14), (512, 7)])
    fp_mults = 7 * 7 * 3 * 64 * 112 * 112 + 64 * 128 * 28 * 28 + 128 * 256 * 14 * 14 \
        + 256 * 512 * 7 * 7 + 512 * 1000
    j = cost(compile_spec(SPECS / "bireal_resnet18.fr").graph).to_json(per_layer=False)
    assert j["params"]["binary"] == binary
    assert j["params"]["float"] == floats
    assert j["params"]["bn"] == 2 * bn_channels
    assert j["params"]["bits"] == 32 * floats + binary
    assert j["params"]["mib"] == (32 * floats + binary) / 8 / 2**20
    assert j["flops"]["binary_mults"] == bin_mults
    assert j["flops"]["float_mults"] == fp_mults
    assert j["flops"]["total"] == fp_mults + bin_mults / 64
    assert j["depth"] == 18


def test_rf_block_hand_count():
    # c3d4 block, 64 channels at 56x56: 7 binary 3x3 convs, 7 BNs.
    j = cost(compile_spec(SPECS / "rf_c3d4.fr").graph).to_json()
    assert j["params"]["binary"] == 7 * 64 * 64 * 9
    assert j["params"]["float"] == j["params"]["bn"] == 7 * 2 * 64
    assert j["flops"]["binary_mults"] == 7 * 64 * 64 * 9 * 56 * 56
    assert j["flops"]["float_mults"] == 0
    convs = [l for l in j["layers"] if l["op"] == "BinaryConv"]
    assert len(convs) == 7 and all(l["binary_params"] == 64 * 64 * 9 for l in convs)


@pytest.mark.parametrize("spec,width", [("rf_c3d4_resnet21.fr", 53), ("rf_c4d8_resnet37.fr", 41),
                                        ("rf_c5d16_resnet69.fr", 31)])
def test_published_widths_are_the_widest_within_budget(spec, width):
    budget = cost(compile_spec(SPECS / "bireal_resnet18.fr").graph).bits
    assert cost(compile_spec(SPECS / spec, {"width": str(width)}).graph).bits <= budget
    assert cost(compile_spec(SPECS / spec, {"width": str(width + 1)}).graph).bits > budget


# Grouped convolutions and conv biases: no shipped spec uses either, so they get their own spec.
GROUPED = """network grouped {
    input [8, 10, 12]
    a = conv[12, k=3, groups=4, bias=true] >> bn
    b = conv[6, k=1, s=2, p=0, groups=2] >> relu
    c = conv[4, k=3, groups=1, bias=true]
    head = gap >> linear[5]
}
"""


def test_grouped_conv_and_bias_hand_count(tmp_path):
    p = tmp_path / "grouped.fr"
    p.write_text(GROUPED)
    j = cost(compile_spec(p).graph).to_json()
    layers = {l["id"]: l for l in j["layers"]}
    # weights = out x (in / groups) x k x k, plus `out` biases; mults = weights x output pixels
    assert layers["a.conv1"]["float_params"] == 12 * (8 // 4) * 3 * 3 + 12 == 228
    assert layers["a.conv1"]["float_mults"] == 12 * 2 * 9 * 10 * 12
    assert layers["b.conv1"]["float_params"] == 6 * (12 // 2) * 1 * 1 == 36  # no bias
    assert layers["b.conv1"]["float_mults"] == 36 * 5 * 6  # stride 2: 10x12 -> 5x6
    assert layers["c.conv1"]["float_params"] == 4 * 6 * 9 + 4 == 220
    assert layers["c.conv1"]["float_mults"] == 4 * 6 * 9 * 5 * 6
    assert layers["head.fc1"]["float_params"] == 4 * 5 + 5
    assert j["params"]["float"] == 228 + 2 * 12 + 36 + 220 + 25
    assert j["params"]["binary"] == 0 and j["params"]["bn"] == 24
    assert j["flops"]["float_mults"] == 25920 + 1080 + 6480 + 20


def test_grouped_conv_and_bias_match_torch(tmp_path):
    """The cost model's float parameters, layer by layer, are torch's parameter count of the
    built module (biases included, grouped weights out x in/groups x k x k)."""
    from fractalc.backends.torch import from_graph  # torch: a dependency of `make test`
    p = tmp_path / "grouped.fr"
    p.write_text(GROUPED)
    g = compile_spec(p).graph
    model = from_graph(g, seed=0)
    per_module = {name: sum(q.numel() for q in m.parameters(recurse=False))
                  for name, m in model.named_modules()}
    co = cost(g)
    counted = 0
    for layer in co.layers:
        if layer.float_params or layer.binary_params:
            assert layer.float_params + layer.binary_params == per_module[layer.id], layer.id
            counted += 1
    assert counted == 5
    assert co.total("float_params") == sum(q.numel() for q in model.parameters())
    assert dict(model.named_parameters())["a.conv1.weight"].shape == (12, 2, 3, 3)
