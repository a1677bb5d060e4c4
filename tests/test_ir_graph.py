"""The IR graph's own algorithms against networkx (the independent reference): the
deterministic topological order, ancestors, descendants, cycle detection, and the language's
strongly-connected-components check of recursive rules."""
from __future__ import annotations

import random

import networkx as nx
import pytest

from fractalc import ir
from fractalc.lang.resolve import rule_cycles


def _random_dag(rng: random.Random, n: int) -> ir.Graph:
    g = ir.Graph("r")
    ids = []
    for k in range(n):
        # ids not in creation order, so ordering by id and by creation differ
        nid = f"n{rng.randrange(10**6)}_{k}"
        ins = tuple(rng.sample(ids, min(len(ids), rng.randrange(0, 4)))) if ids else ()
        if ins and rng.random() < 0.2:
            ins = ins + (ins[0],)  # a repeated input: one edge
        g.add(nid, ir.Add() if ins else ir.Input((1, 1, 1)), ins)
        ids.append(nid)
    return g


@pytest.mark.parametrize("seed", range(30))
def test_order_ancestors_descendants_match_networkx(seed):
    rng = random.Random(seed)
    g = _random_dag(rng, rng.randrange(1, 60))
    d = g.to_networkx()
    seq = nx.get_node_attributes(d, "seq")
    assert g.order() == list(nx.lexicographical_topological_sort(d, key=lambda n: seq[n]))
    for n in rng.sample(list(g), min(len(g), 5)):
        assert g.ancestors(n) == nx.ancestors(d, n)
        assert g.descendants(n) == nx.descendants(d, n)
        assert g.predecessors(n) == list(dict.fromkeys(g.inputs(n)))
        assert set(g.consumers(n)) == set(d.successors(n))
    # removing a node keeps the adjacency consistent with networkx's
    if len(g) > 2:
        victim = g.order()[-1]
        g.remove(victim)
        d.remove_node(victim)
        assert sorted(g.to_networkx().edges) == sorted(d.edges)


@pytest.mark.parametrize("seed", range(10))
def test_order_follows_every_edit(seed):
    """`order` is kept between calls: after each add, remove or set_inputs it must still be
    networkx's order of the edited graph, and a caller editing the returned list changes
    nothing."""
    rng = random.Random(seed)
    g = _random_dag(rng, rng.randrange(5, 40))

    def reference():
        d = g.to_networkx()
        seq = nx.get_node_attributes(d, "seq")
        return list(nx.lexicographical_topological_sort(d, key=lambda n: seq[n]))

    for step in range(12):
        first = g.order()
        assert first == reference()
        first.reverse()
        assert g.order() == reference()
        nodes = g.order()
        edit = rng.choice(["add", "remove", "rewire"])
        if edit == "add" or len(nodes) < 3:
            g.add(f"new{step}", ir.Add(), tuple(rng.sample(nodes, min(2, len(nodes)))))
        elif edit == "remove":
            victim = nodes[-1]  # a sink: nothing consumes it
            g.remove(victim)
        else:  # a node rewired to inputs created before it: still a DAG
            i = rng.randrange(1, len(nodes))
            before = [n for n in nodes if g.attrs(n)["seq"] < g.attrs(nodes[i])["seq"]]
            if before:
                g.set_inputs(nodes[i], tuple(rng.sample(before, min(2, len(before)))))


def test_copy_is_independent_and_cycles_are_found():
    g = ir.Graph("c")
    g.add("a", ir.Input((1, 1, 1)))
    g.add("b", ir.Add(), ("a",))
    g.add("c", ir.Add(), ("b",))
    h = g.copy()
    h.set_inputs("b", ("c",))  # b <- c <- b: a cycle in the copy only
    assert g.order() == ["a", "b", "c"]
    with pytest.raises(ir.CycleError):
        h.order()
    with pytest.raises(ValueError, match="unknown input"):
        g.add("d", ir.Add(), ("nope",))


@pytest.mark.parametrize("seed", range(40))
def test_rule_cycles_match_networkx_sccs(seed):
    rng = random.Random(seed)
    names = [f"r{k}" for k in range(rng.randrange(1, 25))]
    calls = {a: sorted(rng.sample(names, rng.randrange(0, 3))) for a in names}
    d = nx.DiGraph()
    d.add_nodes_from(names)
    d.add_edges_from((a, b) for a, bs in calls.items() for b in bs)
    want = {frozenset(c) for c in nx.strongly_connected_components(d)
            if len(c) > 1 or d.has_edge(next(iter(c)), next(iter(c)))}
    got = rule_cycles(calls)
    assert {frozenset(c) for c in got} == want and len(got) == len(want)


def test_rule_cycles_are_iterative():
    """A chain of 50,000 rules calling each other in a ring: no recursion limit."""
    n = 50_000
    calls = {f"r{k}": [f"r{(k + 1) % n}"] for k in range(n)}
    (comp,) = rule_cycles(calls)
    assert len(comp) == n


def test_check_and_stats_do_not_import_networkx():
    """The compile path runs on the IR's own adjacency: short commands do not pay networkx's
    import (the start-up budget of benchmarks/bench_startup.py)."""
    import subprocess
    import sys
    from pathlib import Path
    spec = Path(__file__).resolve().parent.parent / "specs" / "rf_c3d4.fr"
    code = ("import sys, contextlib, io\nfrom fractalc.cli import main\n"
            "for cmd in (['check'], ['stats', '--no-layers']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        main([*cmd, sys.argv[1]])\n"
            "print(sorted(m for m in ('networkx', 'torch', 'onnx', 'numpy') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code, str(spec)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
