"""Closed-form counts of the four families at C = 2..5, against the compiled block specs.

References (sofar-reference.md, section 2-4), derived independently of the implementation:
- convs per block: 2^C - 1; column j (1 = deepest) holds 2^(C-j) convs; depth 2^(C-1);
- joins after collapsing: 2^(C-2); fan-in multiset FI(2) = {2},
  FI(C) = FI(C-1) + (FI(C-1) - {C-1}) + {C} (the outer copy's last join merges into the new one);
- residual adds: RF 2^C - 1 (every conv), DRF 2^C - 1 - C (all but the first conv of each
  column), F and DF none; dense units: one concat of 2 inputs (stack + new features).
"""
from __future__ import annotations

from collections import Counter

import pytest

from fractalc import ir
from fractalc.compiler import compile_spec
from fractalc.cost import depth
from fractalc.ir.passes import collapse_joins

from conftest import SPECS


def fan_ins(C: int) -> Counter:
    if C < 2:
        return Counter()
    fi = Counter({2: 1})
    for c in range(3, C + 1):
        outer = fi.copy()
        outer[c - 1] -= 1
        fi = fi + outer + Counter({c: 1})
    return +fi


FAMILIES = {  # family: (rule, residual adds as a function of C, concats)
    "F": ("F", lambda C: 0, 0),
    "RF": ("RF", lambda C: 2**C - 1, 0),
    "DF": ("dense[DF[{C}, 32], 32] #", lambda C: 0, 1),
    "DRF": ("dense[DRF[{C}, 32], 32] #", lambda C: 2**C - 1 - C, 1),
}


def compile_family(family: str, C: int, tmp_path):
    """F/RF/DRF through the shipped Figure-1 specs; DF through a one-line spec on the library."""
    shipped = {"F": "f_c3d4.fr", "RF": "rf_c3d4.fr", "DRF": "drf_c3d4.fr"}
    if family in shipped:
        return compile_spec(SPECS / shipped[family], {"columns": str(C)})
    path = tmp_path / "df.fr"
    path.write_text(f'import "{SPECS / "lib" / "sofar.fr"}"\nparam order = "bn-conv"\n'
                    f"network df {{\n  input [64, 8, 8]\n  block = dense[DF[{C}, 32], 32]\n}}\n")
    return compile_spec(path)


@pytest.mark.parametrize("C", [2, 3, 4, 5])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_block_counts(family, C, tmp_path):
    _, adds, concats = FAMILIES[family]
    g = compile_family(family, C, tmp_path).graph
    assert g.count(ir.BinaryConv) == 2**C - 1
    assert depth(g) == 2 ** (C - 1)
    joins = list(g.nodes(ir.Join))
    assert len(joins) == 2 ** (C - 2)
    assert Counter(len(g.inputs(j)) for j in joins) == fan_ins(C)
    assert g.count(ir.Add) == adds(C)
    concat_nodes = list(g.nodes(ir.Concat))
    assert len(concat_nodes) == concats
    assert all(len(g.inputs(n)) == 2 for n in concat_nodes)
    per_col = Counter(n.split(".")[1] for n in g.nodes(ir.BinaryConv))
    assert per_col == {f"col{j}": 2 ** (C - j) for j in range(1, C + 1)}


def test_fan_in_reference_matches_the_paper():
    assert sorted(fan_ins(3).elements()) == [2, 3]
    assert sorted(fan_ins(4).elements()) == [2, 2, 3, 4]


@pytest.mark.parametrize("C", [2, 3, 4, 5])
def test_collapse_joins_is_idempotent_and_shrinks(C):
    c = compile_spec(SPECS / "f_c3d4.fr", {"columns": str(C)})
    once = c.graph
    twice = collapse_joins(once)
    assert [(n, once.inputs(n)) for n in once.order()] == [(n, twice.inputs(n)) for n in twice.order()]
    # Before collapsing, a C-column fractal has 2^(C-1) - 1 binary joins.
    assert c.raw_nodes - len(once) == (2 ** (C - 1) - 1) - 2 ** (C - 2)


@pytest.mark.parametrize("stack_bn,bns", [("shared", 1), ("own", 3)])
def test_drf_first_conv_of_each_column_reads_the_stack(stack_bn, bns):
    g = compile_spec(SPECS / "drf_c3d4.fr", {"stack_bn": stack_bn}).graph
    stack = g.input_id
    readers = [n for n in g.nodes(ir.BatchNorm) if g.inputs(n) == (stack,)]
    # order "bn-conv": the 64-channel stack goes through one BN shared by the three column
    # heads (the default reading), or one BN per column head (stack_bn = "own")
    assert len(readers) == bns
    heads = [n for n in g.nodes(ir.BinaryConv) if g.inputs(n)[0] in readers]
    assert sorted(heads) == [f"block.col{c}.conv1" for c in (1, 2, 3)]
    assert g.shape(g.output_id) == (64 + 32, 56, 56)
