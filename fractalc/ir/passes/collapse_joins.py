"""collapse_joins: merge adjacent joins of the same kind.

Rewrite rule: a join J whose only consumer is a join K of a collapsible kind (and which feeds K
once) is removed; J's inputs take J's place in K's input list, in order. Per kind:

- mean (`ir.Join`) into mean: K then averages all of its inputs with equal weight. This is
  FractalNet's definition of the join (mean(mean(a, b), c) becomes mean(a, b, c), which
  weights the inputs differently: a definition, not a rewrite that keeps the function).
- max (`ir.MaxJoin`) into max: max(max(a, b), c) = max(a, b, c), exactly.
- fixed weights (`ir.WeightedJoin`, learn false) into fixed weights: the weights multiply
  through, v * (w1 a + w2 b) + u c = (v w1) a + (v w2) b + u c, the same function (the products
  are computed in float64 and rounded once to the stored float; only the float32 rounding
  order of the sum can differ).
- learnable weights never collapse, in either role: merging would change the parameters
  (n1 + n2 learned floats become n1 + n2 - 1, and products of two learned weights become
  one) and so what training can reach and where it starts; the spec asked for two joins,
  each with its own weights.
- different kinds never merge (a mean into a max, a fixed into a mean, ...).

Applied until no such pair remains, so the pass is idempotent.
Requires: a graph from `expand`. Ensures: no collapsible join has a join of its kind as its
only consumer.
"""
from __future__ import annotations

from fractalc import ir


def _kind(op) -> str | None:
    """The collapse class of a join op, or None (learnable weights, or not a join)."""
    if isinstance(op, ir.Join):
        return "mean"
    if isinstance(op, ir.MaxJoin):
        return "max"
    if isinstance(op, ir.WeightedJoin) and not op.learn:
        return "weighted"
    return None


def collapse_joins(graph: ir.Graph) -> ir.Graph:
    g = graph.copy()
    changed = True
    while changed:
        changed = False
        for j in [n for n in g.order() if _kind(g.op(n)) is not None]:
            consumers = g.consumers(j)
            if len(consumers) != 1:
                continue
            k = consumers[0]
            kind = _kind(g.op(j))
            if _kind(g.op(k)) != kind or g.inputs(k).count(j) != 1:
                continue
            new_inputs: list[str] = []
            weights: list[float] = []
            jw, kw = g.op(j), g.op(k)
            for i, src in enumerate(g.inputs(k)):
                if src == j:
                    new_inputs.extend(g.inputs(j))
                    if kind == "weighted":
                        weights.extend(float(kw.weights[i]) * float(w) for w in jw.weights)
                else:
                    new_inputs.append(src)
                    if kind == "weighted":
                        weights.append(float(kw.weights[i]))
            g.remove(j)
            g.set_inputs(k, tuple(new_inputs))
            if kind == "weighted":
                g.set_op(k, ir.WeightedJoin(tuple(weights), False))
            changed = True
    return g
