"""The IR: a closed set of node kinds and the graph that holds them.

A graph is a networkx DiGraph whose node keys are stable path ids (``stage2.block1.col3.conv2``),
used unchanged as torch module paths, ONNX node names and DOT ids. Each node has attributes:

- ``op``: one of the frozen dataclasses below (what the node computes);
- ``inputs``: the ordered tuple of input node ids (order matters for concat; an id may repeat);
- ``loc``: the spec `Loc` that created it (for errors), or None;
- ``seq``: creation order, used to make every traversal deterministic;
- ``shape``: ``(C, H, W)`` (or ``(F,)`` after a linear layer), set by `passes.infer_shapes`.

Edges mirror ``inputs`` (one edge per distinct input); ``inputs`` is the source of truth.
Tensors are NCHW without the batch dimension.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Iterator, Union

import networkx as nx

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Input:
    """The network input, shape (channels, height, width)."""

    shape: Shape


@dataclass(frozen=True)
class Conv:
    """Full-precision 2-D convolution (weights out x in/groups x k x k)."""

    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    bias: bool = False


@dataclass(frozen=True)
class BinaryConv:
    """Binary convolution: conv(binarize(x), alpha * sign(W)).

    The node binarizes its own input (sign in binary mode; tanh / identity in the torch
    backend's pre-training modes), so a Sign node before it is never needed. ``padding_mode``
    is "zero" (exactly torch's zero padding of sign(x)) or "one" (pad with +1). ``grad`` is the
    backward of the input binarizer when training: "approxsign" (Bi-Real) or "ste" (identity
    where |x| <= 1).
    """

    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0
    padding_mode: str = "zero"
    grad: str = "approxsign"


@dataclass(frozen=True)
class BatchNorm:
    """Per-channel batch normalisation: scale and shift (learned), mean and variance (buffers)."""

    eps: float = 1e-5


@dataclass(frozen=True)
class Activation:
    """Element-wise activation: relu, tanh, sign (sign(0) = +1) or identity."""

    fn: str


@dataclass(frozen=True)
class Pool:
    """max / avg pooling; ``global_`` pools the whole spatial extent to 1x1."""

    kind: str
    kernel: int = 0
    stride: int = 0
    padding: int = 0
    global_: bool = False


@dataclass(frozen=True)
class Linear:
    """Fully connected layer on the flattened input."""

    out_features: int
    bias: bool = True


@dataclass(frozen=True)
class Join:
    """Element-wise mean of all inputs, equal weights (FractalNet's join)."""


@dataclass(frozen=True)
class Add:
    """Element-wise sum (residual shortcut)."""


@dataclass(frozen=True)
class Concat:
    """Concatenation along channels, in input order (dense connectivity)."""


@dataclass(frozen=True)
class Slice:
    """Channels [start, stop) of the input."""

    start: int
    stop: int


@dataclass(frozen=True)
class Dropout:
    """Dropout with probability p in training, identity in evaluation."""

    p: float


@dataclass(frozen=True)
class Output:
    """The network output (identity)."""


Op = Union[Input, Conv, BinaryConv, BatchNorm, Activation, Pool, Linear, Join, Add, Concat,
           Slice, Dropout, Output]
# The closed set of kinds is the op table (`fractalc.ir.ops.OPS`): these built-in kinds, plus any
# registered with `ops.register`. What each kind means to shapes, costs and backends is there.


def op_name(op: Op) -> str:
    return type(op).__name__


def op_attrs(op: Op) -> dict:
    return {f.name: getattr(op, f.name) for f in fields(op)}


class Graph:
    """An IR graph: a thin, deterministic wrapper over `networkx.DiGraph`."""

    def __init__(self, name: str = "net", g: nx.DiGraph | None = None):
        self.name = name
        self.g = g if g is not None else nx.DiGraph()
        self._seq = max((d["seq"] for _, d in self.g.nodes(data=True)), default=-1) + 1

    # --- construction
    def add(self, node_id: str, op: Op, inputs: tuple[str, ...] = (), loc=None) -> str:
        if node_id in self.g:
            raise ValueError(f"duplicate node id {node_id!r}")
        self.g.add_node(node_id, op=op, inputs=tuple(inputs), loc=loc, seq=self._seq)
        self._seq += 1
        for src in dict.fromkeys(inputs):
            self.g.add_edge(src, node_id)
        return node_id

    def set_inputs(self, node_id: str, inputs: tuple[str, ...]) -> None:
        for src in list(self.g.predecessors(node_id)):
            self.g.remove_edge(src, node_id)
        self.g.nodes[node_id]["inputs"] = tuple(inputs)
        for src in dict.fromkeys(inputs):
            self.g.add_edge(src, node_id)

    def remove(self, node_id: str) -> None:
        self.g.remove_node(node_id)

    def copy(self) -> "Graph":
        return Graph(self.name, self.g.copy())

    # --- queries
    def __contains__(self, node_id: str) -> bool:
        return node_id in self.g

    def __len__(self) -> int:
        return self.g.number_of_nodes()

    def op(self, node_id: str) -> Op:
        return self.g.nodes[node_id]["op"]

    def inputs(self, node_id: str) -> tuple[str, ...]:
        return self.g.nodes[node_id]["inputs"]

    def loc(self, node_id: str):
        return self.g.nodes[node_id]["loc"]

    def shape(self, node_id: str) -> Shape:
        return self.g.nodes[node_id]["shape"]

    def consumers(self, node_id: str) -> list[str]:
        """Distinct consumers, in creation order."""
        return sorted(self.g.successors(node_id), key=lambda n: self.g.nodes[n]["seq"])

    def order(self) -> list[str]:
        """Deterministic topological order (ties broken by creation order)."""
        seq = nx.get_node_attributes(self.g, "seq")
        return list(nx.lexicographical_topological_sort(self.g, key=lambda n: seq[n]))

    def nodes(self, kind: type | tuple[type, ...] | None = None) -> Iterator[str]:
        for n in self.order():
            if kind is None or isinstance(self.op(n), kind):
                yield n

    def count(self, kind: type | tuple[type, ...]) -> int:
        return sum(1 for _, d in self.g.nodes(data=True) if isinstance(d["op"], kind))

    @property
    def input_id(self) -> str:
        return next(n for n in self.nodes(Input))

    @property
    def output_id(self) -> str:
        return next(n for n in self.nodes(Output))
