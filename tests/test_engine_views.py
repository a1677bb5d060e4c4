"""Dense blocks' concats in place in the standalone engine (src/engine_plan.cpp, find_views).

A Concat's float input is written by its producer straight into its channel slice of the
Concat's output (strided rows) when the producer can (an affine XnorConv without a fused Add, a
mean join, or another Concat) and every other reader can read strided rows (PackBits); a chain of Concats nests
into one buffer. Checked: the decisions on a network built to hit each rule (an input used
twice, one read by two Concats, one read by a float op, nested Concats, the model input), the
shipped dense network's blocks, and that the outputs are byte-identical to the reference
executor (backends/onnx/reference.py) on every ISA path, 1 and 2 threads, batch 1 and 3.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import SPECS, random_input, random_state, small_overrides
from fractalc.backends.onnx import lower, reference
from fractalc.backends.xnor.engine import Engine, write_engine_file
from fractalc.backends.xnor.kernels import available_isas
from fractalc.compiler import compile_spec

VIEWS = """import "fractalc:common.fr"
rule layer[k](z) = concat(z, z >> bn >> bconv[k])
rule twice(z) = concat(z, z)
rule halves[k](z) = concat(z, concat(z >> bn >> bconv[k], z >> bn >> bconv[k]))
rule shared[k](z) = let y = z >> bn >> bconv[k] in concat(z, y) + concat(y, z)
rule floatread[k](z) = let y = z >> bn >> bconv[k] in concat(z, y) + concat(z, y >> relu)
rule joined[k](z) = let y = z >> bn in concat(z, join(y >> bconv[k], y >> bconv[k], y >> bconv[k]))
network views {
    input [16, 8, 8]
    a = layer[16] * 3
    b = twice
    c = halves[16] * 2
    d = shared[16]
    e = floatread[16]
    g = joined[16] * 2
    h = bn >> bconv[32] >> bn >> gap >> linear[10]
}
"""

# The Concats of VIEWS in order, and whether each is wholly in place:
EXPECTED = [
    "Concat",            # a, layer 1: its first input is the model's input (copied)
    "Concat(in place)",  # a, layer 2: the previous Concat's output and the conv's, in place
    "Concat(in place)",  # a, layer 3 (its output feeds `twice`: copied there, so its own buffer)
    "Concat",            # b: the same input twice
    "Concat(in place)",  # c, halves 1: the inner Concat ...
    "Concat(in place)",  #    ... and the outer one (its first input is twice's output)
    "Concat(in place)",  # c, halves 2 (inner)
    "Concat(in place)",  #    ... and outer
    "Concat", "Concat",  # d: y and z are each read by two Concats: own buffers, copied into both
    "Concat", "Concat",  # e: y is also read by a Relu (and z as in d): copied
    "Concat(in place)",  # g, 1: z, e's Add (the engine's join op), and the mean join write in place
    "Concat(in place)",  # g, 2
]


def _same_bytes(got, want, what):
    assert got.shape == want.shape and np.array_equal(got.view(np.uint32), want.view(np.uint32)), \
        f"{what}: {int((got.view(np.uint32) != want.view(np.uint32)).sum())} outputs differ from the reference"


def _check(model, x, kinds_check):
    data = write_engine_file(model)
    want = reference.run_reference(model, x)
    for isa in available_isas():
        for threads in (1, 2):
            e = Engine(data, threads=threads, isa=isa)
            kinds_check(e.kinds)
            _same_bytes(e.run(x), want, f"{isa}, {threads} threads, batch {x.shape[0]}")


@pytest.mark.parametrize("batch", [1, 3])
def test_views_rules_and_bytes(tmp_path, batch):
    path = tmp_path / "views.fr"
    path.write_text(VIEWS)
    c = compile_spec(path)
    model = lower.to_onnx_xnor(c, random_state(c), "views")
    _check(model, random_input(c, batch=batch),
           lambda kinds: _concats_are(kinds, EXPECTED))


def _concats_are(kinds, want):
    assert [k for k in kinds if k.startswith("Concat")] == want


def test_dense_blocks_share_one_buffer():
    """BinaryDenseNet28: every Concat is in place but the first block's first (its first input is
    the stem's pooled output, written by the conv with its pool fused: copied once; a transition's
    1x1 conv writes into the next block's buffer); the planned arena is smaller than the values
    stored apart; the bytes are the reference's."""
    path = SPECS / "binary_densenet28.fr"
    c = compile_spec(path, small_overrides(path))
    model = lower.to_onnx_xnor(c, random_state(c), "bdn28")
    blocks = [6, 6, 6, 5]  # the spec's `blocks`

    def kinds_check(kinds):
        _concats_are(kinds, ["Concat"] + ["Concat(in place)"] * (sum(blocks) - 1))

    _check(model, random_input(c, batch=2), kinds_check)
    planned, apart = Engine(write_engine_file(model), threads=1).arena_bytes(2)
    assert planned < apart


def test_dense_residual_fractal_joins_in_place():
    """DRF-c3d4 DenseNet97 (its units' top mean joins write into the stack): as above."""
    path = SPECS / "drf_c3d4_densenet97.fr"
    c = compile_spec(path, small_overrides(path))
    model = lower.to_onnx_xnor(c, random_state(c), "drf97")
    blocks = [6, 6, 6, 5]
    _check(model, random_input(c, batch=2),
           lambda kinds: _concats_are(kinds, ["Concat"] + ["Concat(in place)"] * (sum(blocks) - 1)))
