"""Property tests over random well-formed specs (hypothesis).

A random expression tree over one tensor is rendered as one rule per subtree; an independent
model of the tree predicts the counts, which the compiled graph must match:
nodes (also the size guard's shape-only estimate), convs, adds, joins before collapsing,
depth; collapse_joins is idempotent and preserves sum(fan-in - 1) over joins.
"""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fractalc.lang import expand
from fractalc import ir
from fractalc.compiler import compile_spec
from fractalc.cost import depth
from fractalc.ir.passes import collapse_joins
from fractalc.lang.resolve import load

LEAVES = {  # leaf: (body, nodes, convs, depth)
    "bconv": ("z >> bconv[8]", 1, 1, 1),
    "conv": ("z >> conv[8]", 1, 1, 1),
    "bn": ("bn(z)", 1, 0, 0),
    "relu": ("relu(z)", 1, 0, 0),
    "unit": ("z >> bconv[8] >> bn", 2, 1, 1),
}

trees = st.recursive(
    st.sampled_from(sorted(LEAVES)),
    lambda kids: st.one_of(
        st.tuples(st.just("seq"), kids, kids),
        st.tuples(st.just("join"), st.lists(kids, min_size=2, max_size=3)),
        st.tuples(st.just("add"), kids, kids),
        st.tuples(st.just("res"), kids),
    ),
    max_leaves=10,
)


def render(tree) -> tuple[str, dict]:
    """Spec text and the predicted counts {nodes, convs, adds, joins, depth, join_excess}."""
    rules: list[str] = []

    def go(t) -> tuple[str, dict]:
        name = f"r{len(rules)}"
        rules.append("")
        slot = len(rules) - 1
        if isinstance(t, str):
            body, n, c, d = LEAVES[t]
            stats = dict(nodes=n, convs=c, adds=0, joins=0, depth=d, join_excess=0)
        else:
            kind, *args = t
            subs = [go(a) for a in (args[0] if kind == "join" else args)]
            s = {k: sum(x[1][k] for x in subs) for k in ("nodes", "convs", "adds", "joins", "join_excess")}
            names = [x[0] for x in subs]
            if kind == "seq":
                body = f"{names[1]}({names[0]}(z))"
                s["depth"] = subs[0][1]["depth"] + subs[1][1]["depth"]
            else:
                s["depth"] = max(x[1]["depth"] for x in subs)
                s["nodes"] += 1
                if kind == "join":
                    body = "join(" + ", ".join(f"{n}(z)" for n in names) + ")"
                    s["joins"] += 1
                    s["join_excess"] += len(names) - 1
                elif kind == "add":
                    body = f"{names[0]}(z) + {names[1]}(z)"
                    s["adds"] += 1
                else:
                    body = f"{names[0]}(z) + z"
                    s["adds"] += 1
            stats = s
        rules[slot] = f"rule {name}(z) = {body}"
        return name, stats

    root, stats = go(tree)
    stats = dict(stats, nodes=stats["nodes"] + 2)  # input and output
    text = "\n".join(rules) + f"\nnetwork rand {{\n  input [8, 6, 6]\n  body = {root}\n}}\n"
    return text, stats


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=trees)
def test_random_specs_expand_to_predicted_counts(tree, tmp_path):
    text, want = render(tree)
    path = tmp_path / "rand.fr"
    path.write_text(text)
    spec = load(path)
    params = expand.eval_params(spec)
    assert expand.estimate_nodes(spec, params) == want["nodes"]
    raw = expand.expand(spec, params)
    assert len(raw) == want["nodes"]
    assert raw.count(ir.Join) == want["joins"]
    c = compile_spec(path)
    g = c.graph
    assert g.count((ir.Conv, ir.BinaryConv)) == want["convs"]
    assert g.count(ir.Add) == want["adds"]
    assert depth(g) == want["depth"]
    assert sum(len(g.inputs(j)) - 1 for j in g.nodes(ir.Join)) == want["join_excess"]
    again = collapse_joins(g)
    assert [(n, again.inputs(n)) for n in again.order()] == [(n, g.inputs(n)) for n in g.order()]
    for j in g.nodes(ir.Join):  # nothing left to collapse
        cons = g.consumers(j)
        assert not (len(cons) == 1 and isinstance(g.op(cons[0]), ir.Join) and g.inputs(cons[0]).count(j) == 1)


@settings(max_examples=40, deadline=None)
@given(C=st.integers(1, 40), width=st.integers(1, 64))
def test_size_guard_estimate_is_exact_or_refuses(C, width):
    from fractalc.errors import SizeGuardError
    from conftest import SPECS
    spec = load(SPECS / "rf_c3d4.fr")
    params = expand.eval_params(spec, {"columns": str(C), "channels": str(width), "size": "4"})
    nodes = 2 + 3 * (2**C - 1) + (2 ** (C - 1) - 1)  # input/output, conv+bn+add per unit, raw joins
    if nodes > 100_000:
        try:
            expand.estimate_nodes(spec, params)
        except SizeGuardError:
            return
        raise AssertionError("size guard did not refuse")
    assert expand.estimate_nodes(spec, params) == nodes
