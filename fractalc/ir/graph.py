"""The IR: a closed set of node kinds and the graph that holds them.

A graph is a DAG whose node keys are stable path ids (``stage2.block1.col3.conv2``), used
unchanged as torch module paths, ONNX node names and DOT ids. Each node has attributes:

- ``op``: one of the frozen records below (what the node computes; `fractalc.records`);
- ``inputs``: the ordered tuple of input node ids (order matters for concat; an id may repeat);
- ``loc``: the spec `Loc` that created it (for errors), or None;
- ``seq``: creation order, used to make every traversal deterministic;
- ``shape``: ``(C, H, W)`` (or ``(F,)`` after a linear layer), set by `passes.infer_shapes`.

Edges mirror ``inputs`` (one edge per distinct input); ``inputs`` is the source of truth.
Tensors are NCHW without the batch dimension.

`Graph` keeps its own adjacency (ordered dicts) and implements the three algorithms the compiler
needs (deterministic topological order, ancestors, descendants) rather than wrapping a networkx
DiGraph: importing networkx costs 100-230 ms, more than parsing and compiling a spec, and every
short command (`check`, `stats`) would pay it. `Graph.to_networkx()` gives the same DAG as a
`networkx.DiGraph` (same node keys and attributes) for analyses and for users; the graphviz
backend uses it.
"""
from __future__ import annotations

from fractalc.records import field, fields, record
import heapq
from typing import Iterator, Union

Shape = tuple[int, ...]


@record
class Input:
    """The network input, shape (channels, height, width)."""

    shape: Shape


@record
class Conv:
    """Full-precision 2-D convolution (weights out x in/groups x k x k)."""

    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    bias: bool = False
    dilation: int = field(default=1, metadata={"omit_default": True})


def _opt(default):
    """A field added after the IR format settled: listed only when it differs from its default
    (so listings and golden files of specs that do not use it are unchanged)."""
    return field(default=default, metadata={"omit_default": True})


@record
class BinaryConv:
    """Binary convolution: conv(binarize(x), alpha * sign(W)).

    The node binarizes its own input (sign in binary mode; tanh / identity in the torch
    backend's pre-training modes), so a Sign node before it is never needed. ``padding_mode``
    is "zero" (exactly torch's zero padding of sign(x)) or "one" (pad with +1). ``grad`` is the
    backward of the input binarizer when training: "approxsign" (Bi-Real) or "ste" (identity
    where |x| <= 1). ``groups`` splits input and output channels into that many groups
    (weights out x in/groups x k x k; depthwise: groups = channels); ``dilation`` spaces the
    kernel taps. ``binary_input=False`` keeps the input float: conv(x, alpha * sign(W)) (binary
    parameters, float multiplications; BinaryAlexNet's first layer).
    """

    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0
    padding_mode: str = "zero"
    grad: str = "approxsign"
    groups: int = _opt(1)
    dilation: int = _opt(1)
    binary_input: bool = _opt(True)


@record
class BatchNorm:
    """Per-channel batch normalisation: scale and shift (learned), mean and variance (buffers).
    ``scale=False``: no scale (gamma fixed at 1, as XNOR-Net's BNs)."""

    eps: float = 1e-5
    scale: bool = _opt(True)


@record
class Activation:
    """Element-wise activation: relu, tanh, sign (sign(0) = +1) or identity."""

    fn: str


@record
class Pool:
    """max / avg pooling; ``global_`` pools the whole spatial extent to 1x1."""

    kind: str
    kernel: int = 0
    stride: int = 0
    padding: int = 0
    global_: bool = False


@record
class BlurPool:
    """QuickNet's fixed blur pool: a depthwise 3x3 conv with the constant kernel
    [[1,2,1],[2,4,2],[1,2,1]]/16, zero padding 1, stride ``stride``."""

    stride: int = 2


@record
class Linear:
    """Fully connected layer on the flattened input."""

    out_features: int
    bias: bool = True


@record
class Join:
    """Element-wise mean of all inputs, equal weights (FractalNet's join)."""


@record
class WeightedJoin:
    """Element-wise weighted sum of the inputs, ``w[0] * x[0] + w[1] * x[1] + ...`` summed in
    input order (the weights are used as given: weights 1/n are the mean). Fixed ``weights``
    (one per input), or with ``learn`` (and no ``weights``) learnable weights: the node's
    ``weight`` tensor, one float per input, initialised to 1/n each."""

    weights: tuple[float, ...] = ()
    learn: bool = False


@record
class MaxJoin:
    """Element-wise maximum of all inputs."""


@record
class Add:
    """Element-wise sum (residual shortcut)."""


@record
class Concat:
    """Concatenation along channels, in input order (dense connectivity)."""


@record
class Slice:
    """Channels [start, stop) of the input."""

    start: int
    stop: int


@record
class Dropout:
    """Dropout with probability p in training, identity in evaluation."""

    p: float


@record
class RSign:
    """ReActNet's RSign threshold: x - t per channel (t learned). Its output is meant for a
    binary conv, which binarizes it: sign(x - t); lowered, it folds into ``PackBits``."""


@record
class Shift:
    """Learned per-channel bias: x + b."""


@record
class Scale:
    """Learned per-channel multiplier: x * s."""


@record
class PReLU:
    """Per-channel PReLU (x where x >= 0, else a * x, a learned); with ``shifts``, ReActNet's
    RPReLU: (PReLU(x + b1)) + b2, b1 and b2 learned per channel."""

    shifts: bool = False


@record
class Mul:
    """Element-wise product of two tensors of one shape, or of a CxHxW tensor and a per-channel
    Cx1x1 one (broadcast over H and W: Real-to-Binary's gating)."""


@record
class Output:
    """The network output (identity)."""


Op = Union[Input, Conv, BinaryConv, BatchNorm, Activation, Pool, BlurPool, Linear, Join, WeightedJoin, MaxJoin, Add, Concat,
           Slice, Dropout, Output]
# The closed set of kinds is the op table (`fractalc.ir.ops.OPS`): these built-in kinds, plus any
# registered with `ops.register`. What each kind means to shapes, costs and backends is there.


def op_name(op: Op) -> str:
    return type(op).__name__


def op_attrs(op: Op) -> dict:
    """The op's fields by name; a field marked ``omit_default`` is left out at its default."""
    return {f.name: getattr(op, f.name) for f in fields(op)
            if not (f.metadata.get("omit_default") and getattr(op, f.name) == f.default)}


class CycleError(ValueError):
    """The graph has a cycle (raised by `Graph.order`)."""


class Graph:
    """An IR graph: nodes with attributes, edges mirroring each node's ``inputs``.

    Every traversal is deterministic (creation order breaks ties). Node attributes are read
    through the methods below; `set_shape`, `set_inputs` and `set_op` are the only in-place edits
    besides `add` and `remove`.
    """

    def __init__(self, name: str = "net"):
        self.name = name
        self._attrs: dict[str, dict] = {}
        self._succ: dict[str, dict[str, None]] = {}  # ordered sets
        self._pred: dict[str, dict[str, None]] = {}
        self._seq = 0
        # `order()`'s last answer, until an edit changes the nodes or edges (compiling and
        # costing a spec ask for it about eight times)
        self._order: list[str] | None = None

    # --- construction
    def add(self, node_id: str, op: Op, inputs: tuple[str, ...] = (), loc=None) -> str:
        if node_id in self._attrs:
            raise ValueError(f"duplicate node id {node_id!r}")
        missing = [s for s in inputs if s not in self._attrs]
        if missing:
            raise ValueError(f"node {node_id!r}: unknown input {missing[0]!r}")
        self._attrs[node_id] = {"op": op, "inputs": tuple(inputs), "loc": loc, "seq": self._seq}
        self._order = None
        self._succ[node_id], self._pred[node_id] = {}, {}
        self._seq += 1
        for src in dict.fromkeys(inputs):
            self._succ[src][node_id] = None
            self._pred[node_id][src] = None
        return node_id

    def set_inputs(self, node_id: str, inputs: tuple[str, ...]) -> None:
        self._order = None
        for src in self._pred[node_id]:
            del self._succ[src][node_id]
        self._pred[node_id] = {}
        self._attrs[node_id]["inputs"] = tuple(inputs)
        for src in dict.fromkeys(inputs):
            self._succ[src][node_id] = None
            self._pred[node_id][src] = None

    def set_op(self, node_id: str, op: Op) -> None:
        """Replace a node's op (its inputs, edges, id and position stay)."""
        self._attrs[node_id]["op"] = op

    def set_shape(self, node_id: str, shape: Shape | None) -> None:
        """Set (or with None, forget) a node's shape."""
        if shape is None:
            self._attrs[node_id].pop("shape", None)
        else:
            self._attrs[node_id]["shape"] = shape

    def remove(self, node_id: str) -> None:
        """Remove a node and its edges (consumers keep it in ``inputs``: callers rewire them)."""
        self._order = None
        for src in self._pred.pop(node_id):
            del self._succ[src][node_id]
        for dst in self._succ.pop(node_id):
            del self._pred[dst][node_id]
        del self._attrs[node_id]

    def copy(self) -> "Graph":
        g = Graph(self.name)
        g._attrs = {n: dict(a) for n, a in self._attrs.items()}
        g._succ = {n: dict(s) for n, s in self._succ.items()}
        g._pred = {n: dict(p) for n, p in self._pred.items()}
        g._seq = self._seq
        return g

    # --- queries
    def __contains__(self, node_id: str) -> bool:
        return node_id in self._attrs

    def __len__(self) -> int:
        return len(self._attrs)

    def __iter__(self) -> Iterator[str]:
        """Node ids in creation order (not necessarily topological: see `order`)."""
        return iter(self._attrs)

    def attrs(self, node_id: str) -> dict:
        """A copy of the node's attributes (op, inputs, loc, seq and, once inferred, shape)."""
        return dict(self._attrs[node_id])

    def op(self, node_id: str) -> Op:
        return self._attrs[node_id]["op"]

    def inputs(self, node_id: str) -> tuple[str, ...]:
        return self._attrs[node_id]["inputs"]

    def loc(self, node_id: str):
        return self._attrs[node_id]["loc"]

    def shape(self, node_id: str) -> Shape:
        return self._attrs[node_id]["shape"]

    def has_shape(self, node_id: str) -> bool:
        return "shape" in self._attrs[node_id]

    def predecessors(self, node_id: str) -> list[str]:
        """Distinct inputs, in the order they first appear."""
        return list(self._pred[node_id])

    def consumers(self, node_id: str) -> list[str]:
        """Distinct consumers, in creation order."""
        return sorted(self._succ[node_id], key=lambda n: self._attrs[n]["seq"])

    def order(self) -> list[str]:
        """Deterministic topological order: of the nodes whose inputs are all placed, the one
        created first comes next (networkx's lexicographical_topological_sort keyed by creation
        order). Raises `CycleError` if there is none."""
        if self._order is None:
            self._order = self._topological()
        return list(self._order)  # the caller's own list

    def _topological(self) -> list[str]:
        seq = {n: a["seq"] for n, a in self._attrs.items()}
        indeg = {n: len(p) for n, p in self._pred.items()}
        ready = [(seq[n], n) for n, d in indeg.items() if d == 0]
        heapq.heapify(ready)
        out = []
        while ready:
            _, n = heapq.heappop(ready)
            out.append(n)
            for m in self._succ[n]:
                indeg[m] -= 1
                if indeg[m] == 0:
                    heapq.heappush(ready, (seq[m], m))
        if len(out) != len(self._attrs):
            raise CycleError(f"graph {self.name!r} has a cycle")
        return out

    def ancestors(self, node_id: str) -> set[str]:
        """Every node with a path to `node_id` (not itself)."""
        return self._reach(node_id, self._pred)

    def descendants(self, node_id: str) -> set[str]:
        """Every node reachable from `node_id` (not itself)."""
        return self._reach(node_id, self._succ)

    @staticmethod
    def _reach(start: str, adj: dict[str, dict[str, None]]) -> set[str]:
        seen: set[str] = set()
        stack = list(adj[start])
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.add(n)
                stack.extend(adj[n])
        return seen

    def to_networkx(self):
        """The graph as a `networkx.DiGraph`: same node keys, attributes (copied) and edges,
        nodes inserted in creation order. Imports networkx."""
        import networkx as nx

        d = nx.DiGraph(name=self.name)
        for n, a in self._attrs.items():
            d.add_node(n, **a)
        d.add_edges_from((u, v) for u, vs in self._succ.items() for v in vs)
        return d

    def nodes(self, kind: type | tuple[type, ...] | None = None) -> Iterator[str]:
        for n in self.order():
            if kind is None or isinstance(self.op(n), kind):
                yield n

    def count(self, kind: type | tuple[type, ...]) -> int:
        return sum(1 for a in self._attrs.values() if isinstance(a["op"], kind))
    @property
    def input_id(self) -> str:
        return next(n for n in self.nodes(Input))

    @property
    def output_id(self) -> str:
        return next(n for n in self.nodes(Output))
