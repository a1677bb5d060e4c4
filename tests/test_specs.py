"""Every shipped spec parses, expands, verifies and costs; depth equals the depth in its name."""
from __future__ import annotations

import re

import pytest

from fractalc import ir
from fractalc.compiler import compile_spec
from fractalc.cost import cost
from fractalc.ir.passes import verify

from conftest import ALL_SPECS, BLOCK_SPECS, spec_id

# Depth in each model's name (Bi-Real 18/34, RF 21/37/69/41/77/149, BinaryDenseNet 28/37 and
# 51/69, DRF 51/69/97/133, F 21, DF 51), and the blocks' longest column (c3d4 -> 4).
NAMED_DEPTH = {p: int(m.group(1)) for p in ALL_SPECS
               if (m := re.search(r"(?:resnet|densenet)(\d+)$", p.stem))}
# SoFAr's BinaryDenseNet51/69(32) are BinaryDenseNet28/37 with each 64-growth layer counted as two
# convs of 32 that read the same stack (layers = "halves"): the name counts those convs (stem +
# binary convs + 3 transitions + classifier), the longest path is the authors' depth.
LONGEST_PATH = {"binary_densenet51": 28, "binary_densenet69": 37}


def check_named_depth(path, g, co):
    if path.stem in LONGEST_PATH:
        assert co.depth == LONGEST_PATH[path.stem]
        assert 1 + len(list(g.nodes(ir.BinaryConv))) + 3 + 1 == NAMED_DEPTH[path]
    else:
        assert co.depth == NAMED_DEPTH[path]


def test_every_expected_spec_ships():
    names = {p.stem for p in ALL_SPECS}
    expected = {
        "f_c3d4", "rf_c3d4", "drf_c3d4", "fractalnet_cifar", "bireal_resnet18", "bireal_resnet34",
        "rf_c3d4_resnet21", "rf_c4d8_resnet37", "rf_c5d16_resnet69", "rf_c3d4_resnet41",
        "rf_c4d8_resnet77", "rf_c5d16_resnet149", "f_c3d4_resnet21", "binary_densenet28",
        "binary_densenet37", "binary_densenet51", "binary_densenet69", "drf_c2d2_densenet51",
        "drf_c2d2_densenet69", "df_c2d2_densenet51", "drf_c3d4_densenet97", "drf_c3d4_densenet133"}
    assert expected <= names


@pytest.mark.parametrize("path", ALL_SPECS, ids=spec_id)
def test_spec_compiles_verifies_and_costs(path):
    c = compile_spec(path)
    verify(c.graph)
    co = cost(c.graph)
    assert co.bits > 0 and co.flops > 0
    assert len(co.layers) == len(c.graph)
    if path in NAMED_DEPTH:
        check_named_depth(path, c.graph, co)
        classes = c.params.get("classes")
        assert c.graph.shape(c.graph.output_id) == (classes,)


@pytest.mark.parametrize("path", [p for p in ALL_SPECS if p in NAMED_DEPTH and "fractalnet" not in p.stem],
                         ids=spec_id)
@pytest.mark.parametrize("dataset,size,classes", [("cifar10", 32, 10), ("cifar100", 32, 100)])
def test_dataset_switches_input_stem_and_classes(path, dataset, size, classes):
    c = compile_spec(path, {"dataset": dataset})
    g = c.graph
    assert g.shape(g.input_id) == (3, size, size)
    assert g.shape(g.output_id) == (classes,)
    assert not any(n.startswith("stem.pool") for n in g.nodes(ir.Pool))  # no stem max-pool on CIFAR
    assert g.op("stem.conv1").kernel == 3 and g.op("stem.conv1").stride == 1
    check_named_depth(path, g, cost(g))


@pytest.mark.parametrize("path", BLOCK_SPECS, ids=spec_id)
@pytest.mark.parametrize("columns,depth", [(2, 2), (3, 4), (4, 8), (5, 16)])
def test_blocks_take_columns_channels_size(path, columns, depth):
    c = compile_spec(path, {"columns": str(columns), "channels": "32", "size": "28"})
    g = c.graph
    assert g.shape(g.input_id) == (32, 28, 28)
    assert cost(g).depth == depth


def test_full_precision_layers_stay_full_precision():
    g = compile_spec(ALL_SPECS[0].parent / "rf_c3d4_resnet21.fr").graph
    assert isinstance(g.op("stem.conv1"), ir.Conv)
    assert all(isinstance(g.op(n), ir.Conv) for n in g.nodes((ir.Conv, ir.BinaryConv)) if n.startswith("trans"))
    assert all(isinstance(g.op(n), ir.BinaryConv) for n in g.nodes((ir.Conv, ir.BinaryConv)) if n.startswith("stage"))


def test_ids_are_paths():
    g = compile_spec(ALL_SPECS[0].parent / "rf_c4d8_resnet37.fr").graph
    assert "stage2.block1.col3.conv2" in g
    assert "stage2.block1.col4.conv1" in g
    assert "head.fc1" in g and "stem.conv1" in g


def test_reads_last_option_reads_only_the_previous_unit():
    path = ALL_SPECS[0].parent / "drf_c2d2_densenet51.fr"
    stack = compile_spec(path)
    last = compile_spec(path, {"reads": "last"})
    assert last.graph.count(ir.Slice) == sum(b - 1 for b in last.params["blocks"])
    assert cost(last.graph).flops < cost(stack.graph).flops
    assert stack.graph.count(ir.Slice) == 0


def test_blocks_split_is_a_parameter():
    path = ALL_SPECS[0].parent / "rf_c3d4_resnet41.fr"
    assert cost(compile_spec(path, {"blocks": "[1,3,3,2]"}).graph).depth == 41


def test_deterministic_ir():
    from fractalc.ir.printer import format_ir, ir_to_json
    a = compile_spec(ALL_SPECS[0].parent / "drf_c2d2_densenet51.fr")
    b = compile_spec(ALL_SPECS[0].parent / "drf_c2d2_densenet51.fr")
    assert format_ir(a.graph) == format_ir(b.graph)
    assert ir_to_json(a.graph) == ir_to_json(b.graph)
