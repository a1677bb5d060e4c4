"""Issue 14, joins as parameters: `fractal[..., j=...]` with `join` (mean), `maxjoin`,
`join[weights=[...]]` and `join[learn=true]`, through every backend.

References: closed-form node counts of the fractal expansion; torch's own ops (torch.maximum,
w0 * a + w1 * b) for the torch backend; onnxruntime for the standard ONNX; torch eval for the
lowered model run by the native runtime and the reference executor.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fractalc import ir
from fractalc.compiler import compile_spec
from fractalc.cost import cost
from fractalc.errors import FractalcError
from fractalc.ir.passes.collapse_joins import collapse_joins
from fractalc.lang import expand as E
from fractalc.lang.resolve import load

JOINS = {"mean": "join", "max": "maxjoin", "fixed": "join[weights=[0.25, 0.75]]",
         "learn": "join[learn=true]"}
KIND = {"mean": ir.Join, "max": ir.MaxJoin, "fixed": ir.WeightedJoin, "learn": ir.WeightedJoin}


def fractal_spec(tmp_path, j: str, columns: int, unit: str = "conv[8, k=1]", name="f.fr"):
    p = tmp_path / name
    p.write_text('import "fractalc:sofar.fr"\n'
                 f"network n {{\n  input [8, 5, 5]\n  body = fractal[{columns}, {unit}, j={j}]\n"
                 "  head = gap >> linear[3]\n}\n")
    return p


def uncollapsed(path):
    spec = load(path)
    return E.expand(spec, E.eval_params(spec))


# ----------------------------------------------------------------------------- counts


@pytest.mark.parametrize("kind", JOINS)
@pytest.mark.parametrize("columns", [1, 2, 3, 4, 5])
def test_fractal_node_counts_in_closed_form(tmp_path, kind, columns):
    """A fractal of C columns has 2^C - 1 units and 2^(C-1) - 1 two-input joins; collapsing
    leaves 2^(C-2) joins (C >= 2) for mean, max and fixed weights; learnable joins stay."""
    path = fractal_spec(tmp_path, JOINS[kind], columns)
    g = uncollapsed(path)
    units = 2 ** columns - 1
    joins = 2 ** (columns - 1) - 1
    assert g.count(ir.Conv) == units
    assert g.count(KIND[kind]) == joins
    assert sum(g.count(k) for k in (ir.Join, ir.MaxJoin, ir.WeightedJoin)) == joins
    c = compile_spec(path)
    after = c.graph.count(KIND[kind])
    if kind == "learn" or columns == 1:
        assert after == joins
    else:
        assert after == 2 ** (columns - 2)
    # every input of the network's joins counted once: inputs = units' share of the joins
    assert sum(len(c.graph.inputs(n)) for n in c.graph.nodes(KIND[kind])) == (
        joins + after if kind != "learn" else 2 * joins)


def test_learnable_join_parameters_and_fixed_join_mults(tmp_path):
    c = compile_spec(fractal_spec(tmp_path, JOINS["learn"], 3))
    g = c.graph
    per_join = {n: len(g.inputs(n)) for n in g.nodes(ir.WeightedJoin)}
    base = compile_spec(fractal_spec(tmp_path, JOINS["mean"], 3, name="m.fr"))
    assert cost(g).total("float_params") - cost(base.graph).total("float_params") == sum(per_join.values())
    f = compile_spec(fractal_spec(tmp_path, JOINS["fixed"], 3, name="w.fr"))
    (m,) = [n for n in f.graph.nodes(ir.WeightedJoin) if len(f.graph.inputs(n)) == 3]
    # a weighted join multiplies every input element once: 3 inputs x 8x5x5
    assert cost(f.graph).total("float_mults") - cost(base.graph).total("float_mults") == 3 * 200 + 2 * 200


# ----------------------------------------------------------------------------- collapse


def test_fixed_weights_multiply_through_and_keep_the_function(tmp_path):
    path = fractal_spec(tmp_path, "join[weights=[0.5, 2.0]]", 3)
    before = uncollapsed(path)
    after = collapse_joins(before)
    weights = sorted(after.op(n).weights for n in after.nodes(ir.WeightedJoin))
    # the inner join (weights 0.5, 2) feeding the outer one as input 0 (weight 0.5)
    assert (0.25, 1.0, 2.0) in weights and (0.5, 2.0) in weights
    from fractalc.backends.torch import from_graph
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    m1 = from_graph(before, seed=2).double().eval()
    m2 = from_graph(after, seed=2).double().eval()
    m2.load_state_dict(m1.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(m1(x), m2(x), rtol=1e-12, atol=1e-12)


def test_max_of_max_collapses_exactly_and_mean_collapse_is_unchanged(tmp_path):
    from fractalc.backends.torch import from_graph
    path = fractal_spec(tmp_path, "maxjoin", 4)
    before, after = uncollapsed(path), collapse_joins(uncollapsed(path))
    assert after.count(ir.MaxJoin) < before.count(ir.MaxJoin)
    x = torch.randn(2, 8, 5, 5)
    m1, m2 = from_graph(before, seed=1).eval(), from_graph(after, seed=1).eval()
    with torch.no_grad():
        assert torch.equal(m1(x), m2(x))
    # the mean join's collapse: the same graph as the pass before issue 14 (copied below)
    for cols in (2, 3, 4, 5):
        mean = uncollapsed(fractal_spec(tmp_path, "join", cols, name=f"m{cols}.fr"))
        got, ref = collapse_joins(mean), _mean_collapse_before_issue_14(mean)
        assert [(n, got.op(n), got.inputs(n)) for n in got.order()] == \
            [(n, ref.op(n), ref.inputs(n)) for n in ref.order()]


def _mean_collapse_before_issue_14(graph):
    """fractalc/ir/passes/collapse_joins.py as it was (commit 3f7c628), verbatim."""
    g = graph.copy()
    changed = True
    while changed:
        changed = False
        for j in list(g.nodes(ir.Join)):
            consumers = g.consumers(j)
            if len(consumers) != 1:
                continue
            k = consumers[0]
            if not isinstance(g.op(k), ir.Join) or g.inputs(k).count(j) != 1:
                continue
            new_inputs = []
            for src in g.inputs(k):
                new_inputs.extend(g.inputs(j) if src == j else [src])
            g.remove(j)
            g.set_inputs(k, tuple(new_inputs))
            changed = True
    return g


def test_learnable_and_mixed_joins_do_not_collapse(tmp_path):
    g = uncollapsed(fractal_spec(tmp_path, "join[learn=true]", 4))
    assert collapse_joins(g).count(ir.WeightedJoin) == g.count(ir.WeightedJoin)
    p = tmp_path / "mix.fr"
    p.write_text("network n {\n  input [4, 3, 3]\n  body = mixed\n}\n"
                 "rule mixed(z) = maxjoin(join(conv[4](z), conv[4](z)), conv[4](z))\n")
    g = uncollapsed(p)
    assert collapse_joins(g).count(ir.Join) == 1


# ----------------------------------------------------------------------------- language errors


@pytest.mark.parametrize("j,fragment", [
    ("join[weights=[1, 2, 3]]", "join has 3 weights for 2 inputs"),
    ("join[weights=[1]]", "one weight per input"),
    ("join[weights=[1, 2], learn=true]", "not both"),
    ('join[weights="a"]', "must be a list of numbers"),
    ("join[weights=[1, true]]", "must be a list of numbers"),
])
def test_bad_joins_are_positioned_errors(tmp_path, j, fragment):
    with pytest.raises(FractalcError, match=fragment) as info:
        compile_spec(fractal_spec(tmp_path, j, 2))
    assert info.value.loc is not None and info.value.loc.line > 0


def test_a_rule_is_a_join_too(tmp_path):
    p = tmp_path / "cat.fr"
    p.write_text('import "fractalc:sofar.fr"\nrule catjoin(a, b) = concat(a, b) >> conv[8, k=1]\n'
                 "network n {\n  input [8, 5, 5]\n  body = fractal[3, conv[8, k=1], j=catjoin]\n}\n")
    g = compile_spec(p).graph
    assert g.count(ir.Concat) == 3 and g.count(ir.Conv) == 7 + 3 and g.count(ir.Join) == 0


def test_default_join_graph_is_unchanged_by_the_parameter(tmp_path):
    a = compile_spec(fractal_spec(tmp_path, "join", 3))
    p = tmp_path / "d.fr"
    p.write_text('import "fractalc:sofar.fr"\n'
                 "network n {\n  input [8, 5, 5]\n  body = fractal[3, conv[8, k=1]]\n  head = gap >> linear[3]\n}\n")
    b = compile_spec(p)
    assert [(n, a.graph.op(n), a.graph.inputs(n)) for n in a.graph.order()] == \
        [(n, b.graph.op(n), b.graph.inputs(n)) for n in b.graph.order()]


# ----------------------------------------------------------------------------- torch


def two_branch(tmp_path, j):
    p = tmp_path / "t.fr"
    p.write_text(f"rule r(z) = {j}(conv[4](z), conv[4, k=1](z))\n"
                 "network n {\n  input [3, 6, 6]\n  body = r\n}\n")
    return compile_spec(p)


@pytest.mark.parametrize("kind", ["max", "fixed", "learn"])
def test_torch_forward_equals_torch_ops(tmp_path, kind):
    from fractalc.backends.torch import from_graph
    c = two_branch(tmp_path, JOINS[kind])
    m = from_graph(c.graph, seed=4).eval()
    sd = m.state_dict()
    x = torch.randn(2, 3, 6, 6)
    a = F.conv2d(x, sd["body.conv1.weight"], padding=1)
    b = F.conv2d(x, sd["body.conv2.weight"])
    if kind == "max":
        want = torch.maximum(a, b)
    elif kind == "fixed":
        want = 0.25 * a + 0.75 * b
    else:
        w = sd["body.join1.weight"]
        assert w.shape == (2,) and torch.equal(w, torch.tensor([0.5, 0.5]))
        want = w[0] * a + w[1] * b
    with torch.no_grad():
        got = m(x)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_learnable_join_weights_train(tmp_path):
    from fractalc.backends.torch import from_graph
    c = two_branch(tmp_path, JOINS["learn"])
    m = from_graph(c.graph, seed=0).train()
    w = dict(m.named_parameters())["body.join1.weight"]
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    x = torch.randn(4, 3, 6, 6)
    loss = m(x).square().mean()
    loss.backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    before = w.detach().clone()
    opt.step()
    assert not torch.equal(before, w.detach())


@pytest.mark.parametrize("kind", ["max", "fixed", "learn"])
def test_emitted_source_equals_the_built_network(tmp_path, kind):
    from fractalc.backends.torch import from_graph
    from fractalc.backends.torch.source import source
    c = two_branch(tmp_path, JOINS[kind])
    text = source(c.graph, c, seed=5)
    ns: dict = {}
    exec(compile(text, "gen.py", "exec"), ns)
    gen = ns["N"](seed=5).eval()
    lib = from_graph(c.graph, seed=5).eval()
    assert gen.state_dict().keys() == lib.state_dict().keys()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        assert torch.equal(gen(x), lib(x))


# ----------------------------------------------------------------------------- ONNX and runtime


def _state(model):
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kind", ["max", "fixed", "learn"])
def test_standard_onnx_equals_torch_in_onnxruntime(tmp_path, kind):
    import onnxruntime as ort

    from fractalc.backends.onnx import export
    from fractalc.backends.torch import from_graph
    c = compile_spec(fractal_spec(tmp_path, JOINS[kind], 3, unit="conv[8] >> bn >> relu"))
    m = from_graph(c.graph, seed=3).eval()
    if kind == "learn":  # trained-looking, unequal weights
        with torch.no_grad():
            for n in c.graph.nodes(ir.WeightedJoin):
                m.get_submodule(n).weight.copy_(torch.tensor([0.3, -1.25]))
    proto = export.to_onnx(c, _state(m), "test")
    types = {nd.op_type for nd in proto.graph.node}
    assert ("Max" in types) == (kind == "max") and ("Mul" in types) == (kind != "max")
    x = np.random.default_rng(1).standard_normal((2, 8, 5, 5)).astype(np.float32)
    (got,) = ort.InferenceSession(proto.SerializeToString(),
                                  providers=["CPUExecutionProvider"]).run(None, {"input": x})
    with torch.no_grad():
        want = m(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["max", "fixed", "learn"])
@pytest.mark.parametrize("engine", ["auto", "executor"])
def test_lowered_model_runs_as_torch_eval(tmp_path, kind, engine):
    """Binary units joined by each join kind: the onnx-xnor model, run by the runtime (the
    native engine where it has the ops, else the executor; and the executor itself), gives
    torch's eval output."""
    from fractalc.backends.onnx import lower
    from fractalc.backends.torch import from_graph
    from fractalc.runtime import Session
    c = compile_spec(fractal_spec(tmp_path, JOINS[kind], 3, unit="bn >> bconv[8] >> bn"))
    m = from_graph(c.graph, seed=7).eval()
    proto = lower.to_onnx_xnor(c, _state(m), "test")
    s = Session(proto.SerializeToString(), threads=1, engine=engine)
    if engine == "auto" and kind != "max":
        assert s.engine == "native"
    x = np.random.default_rng(2).standard_normal((2, 8, 5, 5)).astype(np.float32)
    with torch.no_grad():
        want = m(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(s.run(x), want, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- diagram


def test_diagram_draws_each_join_kind_with_its_table_style(tmp_path):
    from fractalc.backends.graphviz import Options, to_dot
    from fractalc.ir import ops
    for kind in ("max", "fixed", "learn"):
        c = compile_spec(fractal_spec(tmp_path, JOINS[kind], 3, name=f"{kind}.fr"))
        dot = to_dot(c.graph, Options(level="block"))
        style = ops.of(KIND[kind]).style
        assert style["fillcolor"] in dot and ops.of(KIND[kind]).legend in dot
