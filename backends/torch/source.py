"""IR -> a standalone, readable PyTorch source file (target ``torch``).

Layout of the emitted file: a header docstring (network, spec, overrides, usage), the imports,
the torch-only runtime copied from binarize.py, drop_path.py and runtime.py (module docstrings
and imports removed), then one nn.Module class named after the network whose ``__init__``
lists its layers (path = IR id, creation and initialisation in the plan's order) and whose
``forward`` is straight-line code, one line per IR node, calling the same functions as
`build.run_step`. So the file needs only torch, and gives the same state_dict keys, initial
weights and outputs as `build.GraphNetwork` for the same seed. The text depends only on the
graph, the spec's hash and name, the overrides and the seed: same inputs, same bytes.
"""
from __future__ import annotations

import ast
import builtins
import keyword
import re
from pathlib import Path

from fractalc import ir
from fractalc.ir import ops
from fractalc.version import __version__

from .plan import RUNTIME_LAYERS, Plan, Step, make_plan

_RUNTIME_FILES = ("binarize.py", "drop_path.py", "runtime.py", "floatexact.py")
_IMPORTS = """\
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
"""


def _runtime_text() -> str:
    """The runtime modules' code without their docstrings and imports."""
    here = Path(__file__).resolve().parent
    chunks = []
    for name in _RUNTIME_FILES:
        text = (here / name).read_text()
        tree = ast.parse(text)
        lines = text.splitlines()
        skip: set[int] = set()
        for node in tree.body:
            is_doc = (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                      and isinstance(node.value.value, str) and node is tree.body[0])
            if is_doc or isinstance(node, (ast.Import, ast.ImportFrom)):
                skip.update(range(node.lineno - 1, node.end_lineno))
        body = "\n".join(l for i, l in enumerate(lines) if i not in skip).strip("\n")
        chunks.append(f"# ---- runtime: fractalc backends/torch/{name} " + "-" * max(0, 60 - len(name)) + "\n\n" + body)
    return "\n\n\n".join(chunks) + "\n"


def _names_defined(text: str) -> set[str]:
    tree = ast.parse(text)
    out = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, ast.Assign):
            out.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            out.update((a.asname or a.name).split(".")[0] for a in node.names)
    return out


class _Namespace:
    """Stable, valid, collision-free local names derived from node ids (torch.fx style)."""

    def __init__(self, reserved: set[str]):
        self.used = set(reserved)

    def name(self, node_id: str) -> str:
        base = re.sub(r"\W", "_", node_id.replace(".", "_"))
        if not base or base[0].isdigit():
            base = "v_" + base
        if keyword.iskeyword(base) or base in self.used:
            base += "_"
        cand, k = base, 1
        while cand in self.used:
            cand, k = f"{base}{k}", k + 1
        self.used.add(cand)
        return cand


def _module_expr(path: str) -> str:
    first, *rest = path.split(".")
    head = f"self.{first}" if first.isidentifier() and not keyword.iskeyword(first) else f"getattr(self, {first!r})"
    return head + "".join(f"[{s!r}]" for s in rest)


def _layer_expr(st: Step) -> str:
    cls, args, kwargs = st.layer
    parts = [cls if cls in RUNTIME_LAYERS else f"nn.{cls}"] + [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs]
    return f"new_layer({', '.join(parts)})"


def _line(st: Step, var: str, ins: list[str]) -> str:
    k, a = st.kind, st.args
    x0 = ins[0] if ins else ""
    if k == "input":
        rhs = "x"
    elif k == "conv" or (k == "bn" and not a):
        rhs = f"{_module_expr(st.id)}({x0})"
    elif k == "bn":
        rhs = f"batchnorm_noscale({_module_expr(st.id)}, {x0})"
    elif k == "bconv":
        rhs = (f"binary_conv2d({x0}, {_module_expr(st.id)}.weight, {', '.join(map(repr, a[:4]))}, mode"
               + "".join(f", {v!r}" for v in a[4:]) + ")")
    elif k == "blurpool":
        rhs = f"blur_pool({x0}, {a[0]!r})"
    elif k == "act":
        rhs = f"activation({x0}, {a[0]!r})"
    elif k == "pool":
        rhs = f"pool2d({x0}, {', '.join(map(repr, a))})"
    elif k == "linear":
        rhs = f"{_module_expr(st.id)}(torch.flatten({x0}, 1))"
    elif k == "join":
        rhs = f"join({_tuple(ins)}, {a[0]!r}, dp)"
    elif k == "add":
        rhs = " + ".join(ins)
    elif k == "concat":
        rhs = f"torch.cat({_tuple(ins)}, 1)"
    elif k == "slice":
        rhs = f"{x0}[:, {a[0]}:{a[1]}]"
    elif k == "dropout":
        rhs = f"F.dropout({x0}, {a[0]!r}, self.training)"
    elif k == "output":
        rhs = x0
    else:  # an op registered in the op table: its hook writes the expression
        rhs = ops.hook(ops.by_name(k).kind, "torch.source", "torch source")(st, ins)
    if st.exact:
        rhs = _exact_rhs(st, rhs, ins)
    return f"{var} = {rhs}"


def _exact_rhs(st: Step, rhs: str, ins: list[str]) -> str:
    """The line of a step with an `exact` role (build.run_step's eval + binary branch)."""
    role = st.exact
    x0 = ins[0]
    eval_binary = "deployed(mode, self.training)"
    if role[0] in ("float", "ffolded"):  # the engine's float arithmetic: float32 values only
        cond = f"{eval_binary} and {x0}.dtype == torch.float32"
        if role[0] == "ffolded":
            return f"{x0} if {cond} else {rhs}"
        layer = _module_expr(st.id) if st.layer else "None"
        bn = _module_expr(role[1]) if role[1] else "None"
        call = f"deployed_float({st.kind!r}, {layer}, {_tuple(ins)}, {st.args!r}, {bn}, {role[2]!r})"
        return f"{call} if {cond} else {rhs}"
    if role[0] == "conv":
        assert rhs.endswith(")"), rhs
        bn = _module_expr(role[1]) if role[1] else "None"
        return rhs[:-1] + f", exact=({bn}, {role[2]!r}, {role[3]!r}) if not self.training else None)"
    if role[0] == "folded":
        return f"{x0} if {eval_binary} else {rhs}"
    return f"deployed_sign_bn({rhs}, {x0}, {_module_expr(st.id)}, {role[1]!r}) if {eval_binary} else {rhs}"


def _tuple(items: list[str]) -> str:
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def _shape(s) -> str:
    return "x".join(map(str, s))


def _doc(text: str) -> str:
    """`text` to embed in a generated docstring: user text (--set values, the spec's file name)
    must neither end the string (a quote), start an escape (a backslash) nor break the line, so
    quotes, backslashes and non-printable characters become escapes that read back as the
    original text in ``__doc__``."""
    out = []
    for c in text:
        if c in "\\\"":
            out.append("\\" + c)
        elif c.isprintable() or c == " ":
            out.append(c)
        else:
            out.append(c.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def render(plan: Plan, *, spec_name: str, spec_sha256: str, overrides: dict, seed: int,
           column: int | None) -> str:
    runtime = _runtime_text()
    reserved = (_names_defined(_IMPORTS + runtime) | set(dir(builtins)) | {"self", "x", "dp", "mode"})
    ns = _Namespace(reserved)
    var = [ns.name(st.id) for st in plan.steps]
    sets = _doc(" ".join(f"--set {k}={v}" for k, v in sorted(overrides.items())))
    col = f" --column {column}" if column is not None else ""
    n_params = sum(1 for _ in plan.layers)
    cls = plan.class_name
    out = [f'''"""{cls}: the network {_doc(repr(plan.name))} as a standalone PyTorch module (needs only torch).

Generated by fractalc {__version__}: fractalc compile {_doc(spec_name)} --target torch{col} --seed {seed}{(' ' + sets) if sets else ''}
Spec sha256: {spec_sha256}
Input: N x {_shape(plan.input_shape)}; output: N x {_shape(plan.output_shape)}; {n_params} layers with parameters.

    model = {cls}(seed={seed})  # mode "binary"; see {cls}.__doc__
    model.set_mode("tanh")  # "fp" | "tanh" | "binary": no rebuild, same parameters
    model.set_drop_path(True, p=0.15, global_ratio=0.5)  # joins, in train() only

state_dict keys are the fractalc IR ids (+ .weight, .bias, ...), so checkpoints are
interchangeable with fractalc.build_torch. Do not edit: regenerate from the spec.
"""''', _IMPORTS, "", runtime, ""]
    out.append(f'''class {cls}(NetworkControls, nn.Module):
    """{_doc(plan.name)}: a fractalc network (binary convs: {"yes" if plan.has_binary else "none"}).

    Args:
        seed: seeds the initial weights (same seed, same weights as fractalc.build_torch).
        mode: "fp" (binary convs are float convs on their raw input), "tanh" (float convs on
            tanh of the input) or "binary" (sign(x) conv alpha*sign(W)); switch later with
            set_mode(). Full-precision layers are the same in every mode.
        drop_path: FractalNet drop-path at the joins in train() mode; None means on only for
            networks without binary convs. drop_prob: local drop probability;
            global_ratio: share of batches with global drop-path (one column everywhere).
    """

    network_name = {plan.name!r}
    input_shape = {plan.input_shape!r}  # (C, H, W), without the batch dimension
    output_shape = {plan.output_shape!r}

    def __init__(self, seed: int = {seed}, mode: str = "binary", drop_path: bool | None = None,
                 drop_prob: float = 0.15, global_ratio: float = 0.5):
        super().__init__()
        layers = [''')
    for st in plan.layers:
        out.append(f"            ({st.id!r}, {_layer_expr(st)}),")
    out.append(f'''        ]
        for path, layer in layers:
            attach(self, path, layer)
        init_parameters(layers, seed)
        self._fc_columns = {plan.columns!r}
        self._fc_setup(mode, drop_path, drop_prob, global_ratio, has_binary={plan.has_binary!r})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dp = self._fc_drop_state(x)
        mode = self._fc_mode''')
    for i, st in enumerate(plan.steps):
        out.append("        " + _line(st, var[i], [var[j] for j in st.inputs]))
    out.append(f"        return {var[plan.output]}")
    return "\n".join(out) + "\n"


def source(graph, compiled, *, seed: int = 0, column: int | None = None) -> str:
    """The emitted source text for `graph` (the compiled graph, or its extracted column)."""
    return render(make_plan(graph), spec_name=Path(compiled.spec.main).name,
                  spec_sha256=compiled.spec.sha256, overrides=compiled.overrides,
                  seed=seed, column=column)


# the source lines of issue 14's primitives: the calls their "torch.forward" hooks make (build.py)
def _channel_line(fn):
    return lambda st, ins: f"{fn(st)}({ins[0]}, {_module_expr(st.id)})"


ops.set_hook(ir.RSign, "torch.source", _channel_line(lambda st: "rsign"))
ops.set_hook(ir.Shift, "torch.source", _channel_line(lambda st: "channel_shift"))
ops.set_hook(ir.Scale, "torch.source", _channel_line(lambda st: "channel_scale"))
ops.set_hook(ir.PReLU, "torch.source", _channel_line(lambda st: "rprelu" if st.args[0] else "prelu"))
ops.set_hook(ir.Mul, "torch.source", lambda st, ins: f"{ins[0]} * {ins[1]}")


# issue 14's joins: the calls of their "torch.forward" hooks (build.py)
def _weighted_join_line(st, ins):
    weights = f"{_module_expr(st.id)}.weight" if st.layer is not None else repr(st.args[0])
    return f"weighted_join({_tuple(ins)}, {weights})"


ops.set_hook(ir.WeightedJoin, "torch.source", _weighted_join_line)
ops.set_hook(ir.MaxJoin, "torch.source", lambda st, ins: f"max_join({_tuple(ins)})")
