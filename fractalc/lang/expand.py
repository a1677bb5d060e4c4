"""Evaluate a resolved spec into an IR graph.

One evaluator, two builders:

- `CountBuilder` runs the spec on shapes only, memoising rule calls by (rule, arguments, input
  shapes), so the node count of even a c60 fractal is known in microseconds: the size guard
  refuses an explosion before a single node is built.
- `GraphBuilder` builds the networkx graph with stable path ids: a network section opens a scope
  (``stage2``), ``f * n`` opens ``block1..blockN``, ``expr @ "col{c}"`` opens ``col3``, and
  each primitive gets ``<stem><k>`` numbered per scope (``conv2``). Rule calls open no scope.

Values are ints, floats, bools, strings, tuples (lists), tensors, functions (rules and
primitives with bound parameters, compositions ``f >> g`` and repetitions ``f * n``) and defs
(``def w(c, r) = ...``: called on values, give a value; memoised by the counting pass like rule
calls, so a def recursion is bounded by the same step budget and nesting limit).
"""
from __future__ import annotations

import math
import operator
import re
from typing import Any


from fractalc import ir, limits
from fractalc.ir import shapes
from fractalc.lang import syntax as S
from fractalc.errors import Loc, ShapeError, SizeGuardError, SpecError
from fractalc.records import record
from fractalc.ir.prims import BUILTINS, PRIMS, REQUIRED, PrimSpec, id_stem, make_op
from fractalc.lang.resolve import Spec, suggest, param_names

DEFAULT_MAX_NODES = 100_000
DEFAULT_MAX_NESTING = 256
_LABEL = re.compile(r"[A-Za-z0-9_]+")


# ----------------------------------------------------------------------------- values


@record
class Tensor:
    id: str | None  # None while counting
    shape: tuple[int, ...]


@record
class RuleFn:
    rule: S.Rule
    bound: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self):
        return self.rule.name


@record
class PrimFn:
    prim: PrimSpec
    bound: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self):
        return self.prim.name


@record
class Compose:
    fns: tuple


@record
class Repeat:
    fn: Any
    n: int


@record
class Builtin:
    name: str


@record
class DefFn:
    """A `def`: called with parentheses on values, gives a value."""

    defn: S.Def

    @property
    def name(self):
        return self.defn.name


FUNCS = (RuleFn, PrimFn, Compose, Repeat)


def describe(v) -> str:
    if isinstance(v, bool):
        return f"a boolean ({str(v).lower()})"
    if isinstance(v, int):
        return f"an integer ({v})"
    if isinstance(v, float):
        return f"a number ({v:g})"
    if isinstance(v, str):
        return f'a string ("{v}")'
    if isinstance(v, tuple):
        return "a list"
    if isinstance(v, Tensor):
        return "a tensor (" + "x".join(map(str, v.shape)) + ")"
    if isinstance(v, (RuleFn, PrimFn)):
        return f"the function '{v.name}'"
    if isinstance(v, FUNCS):
        return "a function"
    if isinstance(v, Builtin):
        return f"the builtin '{v.name}'"
    if isinstance(v, DefFn):
        return f"the def '{v.name}'"
    return type(v).__name__


# ----------------------------------------------------------------------------- builders


class CountBuilder:
    """Counts nodes and tracks shapes; builds nothing."""

    counting = True

    def __init__(self, max_nodes: int):
        self.count = 0
        self.max_nodes = max_nodes

    def add_nodes(self, n: int, loc: Loc | None):
        self.count += n
        if self.count > self.max_nodes:
            raise SizeGuardError(
                f"expansion refused: the network would have more than {self.max_nodes:,} nodes "
                f"(at least {self.count:,} counted so far)", loc,
                hint="lower the columns/blocks parameters, or raise the limit with --max-nodes")

    def node(self, stem: str, op: ir.Op, inputs: list[Tensor], loc: Loc | None) -> Tensor:
        shape = shapes.infer(op, [t.shape for t in inputs], None, loc)
        self.add_nodes(1, loc)
        return Tensor(None, shape)

    def push(self, name: str):
        pass

    def pop(self):
        pass


class GraphBuilder:
    """Builds an `ir.Graph` with path ids."""

    counting = False

    def __init__(self, name: str, max_nodes: int):
        self.graph = ir.Graph(name)
        self.scope: list[str] = []
        self.counters: dict[tuple[str, ...], dict[str, int]] = {}
        self.max_nodes = max_nodes

    def new_id(self, stem: str) -> str:
        counters = self.counters.setdefault(tuple(self.scope), {})
        counters[stem] = counters.get(stem, 0) + 1
        return ".".join(self.scope + [f"{stem}{counters[stem]}"])

    def node(self, stem: str, op: ir.Op, inputs: list[Tensor], loc: Loc | None,
             node_id: str | None = None) -> Tensor:
        names = shapes.InputNames(len(inputs), [t.id for t in inputs])
        shape = shapes.infer(op, [t.shape for t in inputs], names, loc)
        if len(self.graph) >= self.max_nodes:
            raise SizeGuardError(f"expansion refused: more than {self.max_nodes:,} nodes", loc)
        nid = node_id or self.new_id(stem)
        self.graph.add(nid, op, tuple(t.id for t in inputs), loc)
        self.graph.set_shape(nid, shape)
        return Tensor(nid, shape)

    def push(self, name: str):
        self.scope.append(name)

    def pop(self):
        self.scope.pop()


# ----------------------------------------------------------------------------- evaluator


class Evaluator:
    """Evaluates expressions with a builder (counting or graph).

    Work is bounded: `steps` counts the expressions an unmemoised evaluation would evaluate,
    plus one per repetition. The counting pass adds the steps of a memoised rule call, or of
    the remaining repetitions of a fixed point, without doing them, so it predicts the graph
    pass's steps and refuses an expansion over `max_steps` before any node is built.
    """

    def __init__(self, spec: Spec, params: dict[str, Any], builder, max_nesting: int = DEFAULT_MAX_NESTING,
                 max_steps: int = limits.max_steps(DEFAULT_MAX_NODES)):
        self.spec = spec
        self.params = params
        self.b = builder
        self.max_nesting = max_nesting
        self.max_steps = max_steps
        self.steps = 0
        self.depth = 0
        self.memo: dict = {}
        self.globals: dict = {}  # lookup's values of the spec's rules, defs, primitives, builtins
        self.where: list[str] = []  # the rule calls and repetitions being evaluated, outermost first

    # --- helpers
    def fail(self, msg: str, loc: Loc, hint: str | None = None):
        raise SpecError(msg, loc, hint)

    def add_steps(self, n: int, loc: Loc | None, what: str | None = None):
        self.steps += n
        if self.steps > self.max_steps:
            self.too_long(loc, what)

    def too_long(self, loc: Loc | None, what: str | None = None):
        what = what or (self.where[-1] if self.where else "this expression")
        if self.where and self.where[0] != what:
            what += f", within {self.where[0]}"
        raise SizeGuardError(
            f"expansion refused: evaluating it takes more than {self.max_steps:,} steps "
            f"(in {what})", loc,
            hint="a repetition or recursion that makes few nodes can still be too much work; "
                 f"lower its count, or raise --max-nodes (it allows {limits.STEPS_PER_NODE} steps "
                 "per node)")

    def number(self, v, loc: Loc):
        """`v`, checked to be a 64-bit integer or a finite float (see `limits`)."""
        if isinstance(v, bool):
            return v
        if isinstance(v, int):
            if not -limits.MAX_INT < v < limits.MAX_INT:
                self.fail(f"integer result {float(v):.4g} is too large (integers are 64-bit: "
                          "below 2**63 in magnitude)", loc)
        elif isinstance(v, float):
            if not math.isfinite(v):
                self.fail(f"the result is not a finite number ({v})", loc)
        elif isinstance(v, complex):
            self.fail("the result is not a real number (a negative number to a fractional power)", loc)
        return v

    def lookup(self, name: str, env: dict, loc: Loc):
        if name in env:
            return env[name]
        if name in self.params:
            return self.params[name]
        # A rule, def, primitive or builtin is the same value at every use (the spec does not
        # change): made once per name (records are immutable).
        got = self.globals.get(name)
        if got is not None:
            return got
        if name in self.spec.rules:
            got = RuleFn(self.spec.rules[name])
        elif name in self.spec.defs:
            got = DefFn(self.spec.defs[name])
        elif name in PRIMS:
            got = PrimFn(PRIMS[name])
        elif name in BUILTINS:
            got = Builtin(name)
        if got is not None:
            self.globals[name] = got
            return got
        self.fail(f"unknown name '{name}'" + suggest(name, list(env) + list(self.params) + list(self.spec.rules)
                                                     + list(self.spec.defs)), loc)

    def want_int(self, v, what: str, loc: Loc) -> int:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
            self.fail(f"{what} must be an integer, got {describe(v)}", loc)
        return int(v)

    # --- expressions
    def eval(self, e, env: dict):
        self.steps += 1
        if self.steps > self.max_steps:
            self.too_long(e.loc)
        return _EVAL[type(e)](self, e, env)  # eval_<kind>, looked up once per class

    def eval_Var(self, e: S.Var, env):
        name = e.name
        if name in env:  # the common case, without a call to lookup
            return env[name]
        return self.lookup(name, env, e.loc)

    def eval_Lit(self, e: S.Lit, env):
        return e.value

    def eval_ListLit(self, e: S.ListLit, env):
        return tuple(self.eval(x, env) for x in e.items)

    def eval_Let(self, e: S.Let, env):
        v = self.eval(e.value, env)
        inner = dict(env)
        inner[e.name] = v
        return self.eval(e.body, inner)

    def eval_If(self, e: S.If, env):
        c = self.eval(e.cond, env)
        if not isinstance(c, bool):
            self.fail(f"the condition of 'if' must be true or false, got {describe(c)}", e.cond.loc)
        return self.eval(e.then if c else e.other, env)

    def eval_Unary(self, e: S.Unary, env):
        v = self.eval(e.operand, env)
        if e.op == "not":
            if not isinstance(v, bool):
                self.fail(f"'not' needs true or false, got {describe(v)}", e.loc)
            return not v
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self.fail(f"cannot negate {describe(v)}", e.loc)
        return -v

    def eval_BinOp(self, e: S.BinOp, env):
        op = e.op
        if op in ("and", "or"):
            left = self.eval(e.left, env)
            if not isinstance(left, bool):
                self.fail(f"'{op}' needs true or false, got {describe(left)}", e.left.loc)
            if (op == "and" and not left) or (op == "or" and left):
                return left
            right = self.eval(e.right, env)
            if not isinstance(right, bool):
                self.fail(f"'{op}' needs true or false, got {describe(right)}", e.right.loc)
            return right
        a = self.eval(e.left, env)
        b = self.eval(e.right, env)
        if op == ">>":
            if isinstance(a, Tensor):
                return self.apply(self.want_fn(b, e.right.loc), [a], e.loc)
            return Compose((self.want_fn(a, e.left.loc), self.want_fn(b, e.right.loc)))
        if op == "+" and isinstance(a, Tensor) and isinstance(b, Tensor):
            return self.prim_node("add", {}, [a, b], e.loc)
        if op == "*" and (isinstance(a, FUNCS) or isinstance(b, FUNCS)):
            fn, n = (a, b) if isinstance(a, FUNCS) else (b, a)
            n = self.want_int(n, "a repeat count", e.loc)
            if n < 0:
                self.fail(f"a repeat count cannot be negative, got {n}", e.loc)
            return Repeat(fn, n)
        if op in ("==", "!="):
            same = a == b and isinstance(a, str) == isinstance(b, str)
            return same if op == "==" else not same
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
        if op in ("<", "<=", ">", ">="):
            if not (numeric or (isinstance(a, str) and isinstance(b, str))):
                self.fail(f"cannot compare {describe(a)} with {describe(b)}", e.loc)
            return _COMPARE[op](a, b)
        if not numeric:
            self.fail(f"'{op}' cannot combine {describe(a)} and {describe(b)}", e.loc)
        if op in ("/", "//", "%") and b == 0:
            self.fail("division by zero", e.loc)
        try:
            v = _ARITH[op](a, b)
        except OverflowError:
            self.fail(f"the result of '{op}' is too large", e.loc)
        return self.number(v, e.loc)

    def want_fn(self, v, loc):
        if not isinstance(v, FUNCS):
            self.fail(f"expected a function (a rule or primitive such as bn, conv[64]), got {describe(v)}", loc)
        return v

    def eval_Index(self, e: S.Index, env):
        target = self.eval(e.target, env)
        if isinstance(target, tuple):
            if len(e.args) != 1 or e.args[0].name is not None:
                self.fail("a list is indexed with one position, as in blocks[0]", e.loc)
            i = self.want_int(self.eval(e.args[0].value, env), "a list index", e.args[0].loc)
            if not -len(target) <= i < len(target):
                self.fail(f"index {i} is out of range for a list of {len(target)}", e.args[0].loc)
            return target[i]
        if isinstance(target, (RuleFn, PrimFn)):
            return self.bind(target, [(a.name, self.eval(a.value, env), a.loc) for a in e.args], e.loc)
        if isinstance(target, DefFn):
            self.fail(f"def '{target.name}' is called with parentheses, as in {target.name}(...)", e.loc)
        self.fail(f"cannot bind parameters of {describe(target)}", e.loc)

    def bind(self, fn, args, loc):
        callee = fn.rule if isinstance(fn, RuleFn) else fn.prim
        names = param_names(callee)
        bound = dict(fn.bound)
        free = [n for n in names if n not in bound]
        kind = "rule" if isinstance(fn, RuleFn) else "primitive"
        for name, value, aloc in args:
            if name is None:
                if not free:
                    self.fail(f"{kind} '{fn.name}' takes no more parameters (has: {', '.join(names) or 'none'})", aloc)
                name = free.pop(0)
            elif name not in names:
                self.fail(f"{kind} '{fn.name}' has no parameter '{name}'" + suggest(name, names)
                          + f"; its parameters: {', '.join(names) or 'none'}", aloc)
            elif name in bound:
                self.fail(f"parameter '{name}' of '{fn.name}' is given twice", aloc)
            else:
                free.remove(name)
            bound[name] = value
        ordered = tuple((n, bound[n]) for n in names if n in bound)
        return type(fn)(callee, ordered)

    def eval_Call(self, e: S.Call, env):
        target = self.eval(e.target, env)
        if isinstance(target, Builtin):
            if any(a.name for a in e.args):
                self.fail(f"builtin '{target.name}' takes no named arguments", e.loc)
            return self.builtin(target.name, [self.eval(a.value, env) for a in e.args], e.loc)
        if isinstance(target, DefFn):
            if any(a.name for a in e.args):
                self.fail(f"arguments of def '{target.name}' are positional", e.loc)
            return self.call_def(target.defn, [self.eval(a.value, env) for a in e.args], e.loc)
        if not isinstance(target, FUNCS):
            hidden = ""
            if isinstance(e.target, S.Var) and e.target.name in BUILTINS:
                hidden = f" (the parameter '{e.target.name}' hides the builtin {e.target.name}())"
            self.fail(f"cannot call {describe(target)}{hidden}", e.loc)
        tensors = []
        for a in e.args:
            if a.name is not None:
                self.fail("tensor arguments cannot be named; bind parameters with [name=...]", a.loc)
            v = self.eval(a.value, env)
            if not isinstance(v, Tensor):
                self.fail(f"functions are applied to tensors, got {describe(v)}; bind parameters "
                          "with square brackets, as in conv[64](z)", a.loc)
            tensors.append(v)
        return self.apply(target, tensors, e.loc)

    def eval_Scoped(self, e: S.Scoped, env):
        label = ""
        for part in e.label:
            if isinstance(part, str):
                label += part
            else:
                v = self.eval(part, env)
                if isinstance(v, bool) or not isinstance(v, (int, str)):
                    self.fail(f"a scope label interpolates integers or strings, got {describe(v)}", part.loc)
                if not _LABEL.fullmatch(str(v)):
                    # ids are dotted paths: a '.' or an empty part would change their structure
                    self.fail(f"a scope label part must be letters, digits or '_', got {describe(v)}",
                              part.loc)
                label += str(v)
        self.b.push(label)
        try:
            return self.eval(e.expr, env)
        finally:
            self.b.pop()

    def call_def(self, d: S.Def, args: list, loc: Loc):
        """The value of def `d` on `args`. Nests like a rule call (the nesting limit applies);
        the counting pass memoises it by its arguments and adds a repeated call's steps without
        doing them, so an exponential recursion is refused from its predicted step count."""
        if len(args) != len(d.params):
            self.fail(f"def '{d.name}' takes {len(d.params)} argument{'s' if len(d.params) != 1 else ''}"
                      f" ({', '.join(d.params) or 'none'}), got {len(args)}", loc)
        key = None
        if self.b.counting:
            key = ("def", d.name, _typed(tuple(args)))
            try:
                hash(key)
            except TypeError:
                key = None
            if key is not None and key in self.memo:
                n, steps, value = self.memo[key]
                self.b.add_nodes(n, loc)
                self.add_steps(steps, loc, f"def '{d.name}'")
                return value
        if self.depth >= self.max_nesting:
            raise SizeGuardError(
                f"expansion refused: calls nest deeper than {self.max_nesting} levels (at def "
                f"'{d.name}'); a recursion this deep would explode or never reach its base case",
                loc, hint="check the recursive step moves toward the base case")
        self.depth += 1
        before = getattr(self.b, "count", 0)
        steps = self.steps
        self.where.append(f"def '{d.name}'")
        try:
            out = self.eval(d.body, dict(zip(d.params, args)))
        finally:
            self.depth -= 1
            self.where.pop()
        if isinstance(out, Tensor):
            self.fail(f"def '{d.name}' must give a value (a number, boolean, string, list or "
                      f"function), but its body gives {describe(out)}; write a rule to make "
                      "tensors", d.body.loc)
        if key is not None:
            self.memo[key] = (self.b.count - before, self.steps - steps, out)
        return out

    # --- builtins
    def builtin(self, name: str, args: list, loc: Loc):
        try:
            return self.number(self._builtin(name, args, loc), loc)
        except OverflowError:
            self.fail(f"the result of {name}() is too large", loc)

    def _builtin(self, name: str, args: list, loc: Loc):
        def nums(n):
            if len(args) != n and not (n == -1 and args):
                self.fail(f"{name}() takes {n if n > 0 else 'one or more'} argument{'s' if n != 1 else ''}, got {len(args)}", loc)
            for a in args:
                if isinstance(a, bool) or not isinstance(a, (int, float)):
                    self.fail(f"{name}() needs numbers, got {describe(a)}", loc)
            return args
        if name in ("channels", "height", "width"):
            if len(args) != 1 or not isinstance(args[0], Tensor) or len(args[0].shape) != 3:
                self.fail(f"{name}() takes one CxHxW tensor", loc)
            return args[0].shape[("channels", "height", "width").index(name)]
        if name == "len":
            if len(args) != 1 or not isinstance(args[0], tuple):
                self.fail("len() takes one list", loc)
            return len(args[0])
        if name == "round":  # half away from zero, the convention of the papers' width tables
            (x,) = nums(1)
            return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)
        if name == "round_even":  # half to even (Python's round, larq's width formulas)
            (x,) = nums(1)
            return int(round(x))
        if name in ("floor", "ceil", "int"):
            (x,) = nums(1)
            return {"floor": math.floor, "ceil": math.ceil, "int": int}[name](x)
        if name == "abs":
            (x,) = nums(1)
            return abs(x)
        if name == "pow":
            a, b = nums(2)
            if a == 0 and b < 0:
                self.fail("pow(0, negative) divides by zero", loc)
            if abs(a) > 1 and b > 64 and b * math.log2(abs(a)) > 64:
                # refused before computing: pow(10, 100000000) would take minutes
                self.fail(f"pow() result is too large: about 2**{b * math.log2(abs(a)):.4g}", loc)
            return a ** b
        return {"min": min, "max": max}[name](nums(-1))

    # --- application
    def apply(self, fn, tensors: list[Tensor], loc: Loc):
        if isinstance(fn, Compose):
            out = None
            for f in fn.fns:
                self._need_one(tensors, "a composition f >> g", loc)
                out = self.apply(f, tensors, loc)
                tensors = [out]
            return out
        if isinstance(fn, Repeat):
            self._need_one(tensors, "a repetition f * n", loc)
            what = f"a repetition of {fn.n:,}"
            self.add_steps(fn.n, loc, what)  # each repetition is a step, whatever it makes
            self.where.append(what)
            try:
                return self._repeat(fn, tensors[0], loc, what)
            finally:
                self.where.pop()
        if isinstance(fn, PrimFn):
            return self.apply_prim(fn, tensors, loc)
        return self.apply_rule(fn, tensors, loc)

    def _repeat(self, fn: Repeat, x: Tensor, loc: Loc, what: str):
        for i in range(1, fn.n + 1):
            f = fn.fn
            if isinstance(f, RuleFn) and "i" in param_names(f.rule) and "i" not in dict(f.bound):
                f = RuleFn(f.rule, f.bound + (("i", i),))
            nodes = self.b.count if self.b.counting else len(self.b.graph)
            steps = self.steps
            self.b.push(f"block{i}")
            try:
                y = self.apply(f, [x], loc)
            finally:
                self.b.pop()
            rest = fn.n - i
            if f is fn.fn and rest:
                # A fixed point: every further repetition does the same work. The counting pass
                # needs the same shape; the graph pass, that nothing was built and the input
                # came back (the remaining repetitions would change nothing).
                if self.b.counting and y.shape == x.shape:
                    self.b.add_nodes((self.b.count - nodes) * rest, loc)
                    self.add_steps((self.steps - steps) * rest, loc, what)
                    return y
                if not self.b.counting and y == x and len(self.b.graph) == nodes:
                    self.add_steps((self.steps - steps) * rest, loc, what)
                    return y
            x = y
        return x

    def _need_one(self, tensors, what, loc):
        if len(tensors) != 1:
            self.fail(f"{what} takes exactly one tensor, got {len(tensors)}", loc)

    def apply_prim(self, fn: PrimFn, tensors: list[Tensor], loc: Loc):
        p = fn.prim
        if p.tensors == -1 and len(tensors) < 2:
            self.fail(f"'{p.name}' needs at least 2 tensors, got {len(tensors)}", loc)
        if p.tensors >= 0 and len(tensors) != p.tensors:
            self.fail(f"'{p.name}' takes {p.tensors} tensor argument{'s' if p.tensors != 1 else ''}, got {len(tensors)}", loc)
        bound = dict(fn.bound)
        args = {}
        for name, typ, default in p.params:
            if name in bound:
                v = bound[name]
                args[name] = self.check_type(v, typ, f"parameter '{name}' of '{p.name}'", loc)
            elif default is REQUIRED:
                self.fail(f"'{p.name}' needs its parameter '{name}', as in {p.name}[{name}=...]", loc)
            else:
                args[name] = default
        problem = p.check(args) if p.check else None
        if problem:
            self.fail(problem, loc)
        return self.prim_node(p.name, args, tensors, loc)

    def prim_node(self, name: str, args: dict, tensors: list[Tensor], loc: Loc):
        op = make_op(name, args)
        if op is None:
            return tensors[0]
        return self.b.node(id_stem(name), op, tensors, loc)

    def check_type(self, v, typ: str, what: str, loc: Loc):
        if typ == "int":
            return self.want_int(v, what, loc)
        if typ == "num":
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                self.fail(f"{what} must be a number, got {describe(v)}", loc)
            return v
        if typ == "bool":
            if not isinstance(v, bool):
                self.fail(f"{what} must be true or false, got {describe(v)}", loc)
            return v
        if typ == "nums":  # a list of numbers, or None (the parameter's "not given")
            if v is None:
                return v
            if not isinstance(v, tuple) or any(isinstance(x, bool) or not isinstance(x, (int, float))
                                               for x in v):
                self.fail(f"{what} must be a list of numbers, got {describe(v)}", loc)
            return tuple(float(x) for x in v)
        if not isinstance(v, str):
            self.fail(f"{what} must be a string, got {describe(v)}", loc)
        return v

    def apply_rule(self, fn: RuleFn, tensors: list[Tensor], loc: Loc):
        rule = fn.rule
        if len(tensors) != len(rule.tensors):
            self.fail(f"rule '{rule.name}' takes {len(rule.tensors)} tensor argument"
                      f"{'s' if len(rule.tensors) != 1 else ''} ({', '.join(rule.tensors)}), got {len(tensors)}", loc)
        env = dict(fn.bound)
        for p in rule.params:
            if p.name not in env:
                if p.default is None:
                    self.fail(f"rule '{rule.name}' needs its parameter '{p.name}', as in "
                              f"{rule.name}[{p.name}=...]", loc)
                env[p.name] = self.eval(p.default, {k: env[k] for k in env})
        key = None
        if self.b.counting:
            try:
                key = (rule.name, tuple(env.items()), tuple(t.shape for t in tensors))
                hash(key)
            except TypeError:
                key = None
            if key is not None and key in self.memo:
                n, steps, shape = self.memo[key]
                self.b.add_nodes(n, loc)
                self.add_steps(steps, loc, f"rule '{rule.name}'")
                return Tensor(None, shape)
        env.update(zip(rule.tensors, tensors))
        if self.depth >= self.max_nesting:
            args = ", ".join(f"{k}={v}" for k, v in fn.bound if isinstance(v, (int, float, str)))
            raise SizeGuardError(
                f"expansion refused: rule calls nest deeper than {self.max_nesting} levels "
                f"(at {rule.name}[{args}]); a recursion this deep would explode or never reach "
                "its base case", loc, hint="check the recursive step moves toward the base case, "
                "or lower the columns parameter")
        self.depth += 1
        before = getattr(self.b, "count", 0)
        steps = self.steps
        self.where.append(f"rule '{rule.name}'")
        try:
            out = self.eval(rule.body, env)
        finally:
            self.depth -= 1
            self.where.pop()
        if not isinstance(out, Tensor):
            self.fail(f"rule '{rule.name}' must produce a tensor, but its body gives {describe(out)}", rule.body.loc)
        if key is not None:
            self.memo[key] = (self.b.count - before, self.steps - steps, out.shape)
        return out


_EVAL = {kind: getattr(Evaluator, "eval_" + kind.__name__)
         for kind in (S.Var, S.Lit, S.ListLit, S.If, S.BinOp, S.Unary, S.Index, S.Call, S.Scoped, S.Let)}
_COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
          "//": operator.floordiv, "%": operator.mod}


def _typed(v):
    """`v` as a memo key that tells 1, 1.0 and true apart (Python's == does not)."""
    if isinstance(v, tuple):
        return ("list", tuple(_typed(x) for x in v))
    return (type(v).__name__, v)


# ----------------------------------------------------------------------------- entry points


def eval_params(spec: Spec, overrides: dict[str, str] | None = None) -> dict[str, Any]:
    """Evaluate every parameter: defaults (lazily, in dependency order) and ``--set`` overrides.

    Override values are spec expressions (``width=41``, ``dataset="cifar100"``, or a bare word
    ``dataset=cifar100`` taken as a string, ``blocks=[2,2,3,2]``).
    """
    overrides = dict(overrides or {})
    for name in overrides:
        if name not in spec.params:
            known = ", ".join(sorted(spec.params)) or "none"
            raise SpecError(f"unknown parameter '{name}'" + suggest(name, spec.params)
                            + f"; {spec.main} has: {known}")
    values: dict[str, Any] = {}
    active: list[str] = []
    override_exprs = {k: override_expr(k, v, spec) for k, v in overrides.items()}

    class LazyParams(dict):
        def __missing__(self, key):
            if key not in spec.params:
                raise KeyError(key)
            return get(key)

        def __contains__(self, key):
            return key in spec.params

    lazy = LazyParams()
    ev = Evaluator(spec, lazy, CountBuilder(0))

    def get(name: str):
        if name in values:
            return values[name]
        prm = spec.params[name]
        if name in active:
            cycle = " -> ".join(active[active.index(name):] + [name])
            raise SpecError(f"parameters depend on each other in a cycle: {cycle}", prm.loc)
        active.append(name)
        try:
            expr = override_exprs.get(name, prm.default)
            v = ev.eval(expr, {})
            if isinstance(v, (Tensor,)):
                raise SpecError(f"parameter '{name}' must be a value, not {describe(v)}", expr.loc)
            if prm.choices is not None:
                allowed = [ev.eval(c, {}) for c in prm.choices]
                if v not in allowed:
                    where = expr.loc if name in override_exprs else prm.loc
                    raise SpecError(f"parameter '{name}' must be one of "
                                    + ", ".join(_show(a) for a in allowed) + f"; got {_show(v)}", where)
            default = ev.eval(prm.default, {}) if name in override_exprs else v
            if name in override_exprs and _kind(v) != _kind(default):
                raise SpecError(f"parameter '{name}' takes {_kind(default)}, got {describe(v)}", expr.loc)
        finally:
            active.pop()
        values[name] = v
        return v

    for name in spec.params:
        get(name)
    return {name: values[name] for name in spec.params}


def _kind(v) -> str:
    if isinstance(v, bool):
        return "true or false"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, tuple):
        return "a list"
    return "a function"


def _show(v) -> str:
    return f'"{v}"' if isinstance(v, str) else str(v)


def override_expr(name: str, text: str, spec: Spec):
    import re
    src = f"--set {name}"
    text = text.strip()
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text) and text not in spec.params \
            and text not in spec.rules and text not in ("true", "false"):
        text = f'"{text}"'  # a bare word is a string: --set dataset=cifar100
    if re.fullmatch(r"-?[0-9.eE+-]+(,-?[0-9.eE+-]+)+", text):
        text = f"[{text}]"  # --set blocks=2,2,3,2
    if not text:
        raise SpecError(f"--set {name}= needs a value")
    return S.parse_expr(text, src)


def _run(spec: Spec, params: dict, builder, network: S.Network | None, max_nesting: int,
         max_steps: int):
    net = network or spec.network
    ev = Evaluator(spec, params, builder, max_nesting, max_steps)
    dims = [ev.want_int(ev.eval(e, {}), "an input dimension", e.loc) for e in net.input]
    for d, e in zip(dims, net.input):
        if d <= 0:
            raise ShapeError(f"input dimensions must be positive, got {dims}", e.loc)
        if d > limits.MAX_DIM:
            raise ShapeError(f"input dimension {d:,} is over the limit of {limits.MAX_DIM:,}", e.loc)
    if math.prod(dims) > limits.MAX_TENSOR_ELEMENTS:
        raise ShapeError(f"input {'x'.join(map(str, dims))} has {math.prod(dims):,} elements per "
                         f"sample, over the limit of {limits.MAX_TENSOR_ELEMENTS:,}", net.input[0].loc)
    if isinstance(builder, GraphBuilder):
        x = builder.node("input", ir.Input(tuple(dims)), [], net.loc, node_id="input")
    else:
        x = builder.node("input", ir.Input(tuple(dims)), [], net.loc)
    for sec in net.sections:
        builder.push(sec.name)
        try:
            f = ev.eval(sec.expr, {})
            if not isinstance(f, FUNCS):
                ev.fail(f"section '{sec.name}' must be a function of the running tensor "
                        f"(such as bn >> relu, or stage[64] * 2), got {describe(f)}", sec.expr.loc)
            x = ev.apply(f, [x], sec.expr.loc)
        finally:
            builder.pop()
    if isinstance(builder, GraphBuilder):
        builder.node("output", ir.Output(), [x], net.loc, node_id="output")
    else:
        builder.node("output", ir.Output(), [x], net.loc)
    return builder


def estimate_nodes(spec: Spec, params: dict, network: S.Network | None = None,
                   max_nodes: int = DEFAULT_MAX_NODES, max_nesting: int = DEFAULT_MAX_NESTING,
                   max_steps: int | None = None) -> int:
    """Node count of the expansion, computed on shapes only. Raises `SizeGuardError` past
    `max_nodes` nodes or `max_steps` evaluation steps (default `limits.max_steps(max_nodes)`);
    fast for any parameter values: memoised rule calls and fixed-point
    repetitions are multiplied, not repeated."""
    max_steps = max_steps or limits.max_steps(max_nodes)
    with limits.recursion_room():
        b = _run(spec, params, CountBuilder(max_nodes), network, max_nesting, max_steps)
    return b.count


#: Nodes (and their share of steps) a graph may have to be built without the counting pass
#: first: building that many is as cheap as counting them, so nothing explodes.
SMALL_GRAPH_NODES = 4096


def expand(spec: Spec, params: dict, network: S.Network | None = None,
           max_nodes: int = DEFAULT_MAX_NODES, max_nesting: int = DEFAULT_MAX_NESTING,
           max_steps: int | None = None) -> ir.Graph:
    """Build the IR graph; nothing explodes. A graph of up to `SMALL_GRAPH_NODES` nodes and
    its steps is built at once (every shipped spec: the counting pass cost ~5 ms of a short
    command); past that, the attempt is dropped and the size guard (`estimate_nodes`) runs
    first, as for any larger budget, so its refusals and messages are the same. The graph
    and every other error are the same either way: both passes evaluate in the same order."""
    max_steps = max_steps or limits.max_steps(max_nodes)
    net = network or spec.network
    small = SMALL_GRAPH_NODES
    if max_nodes > small and max_steps > limits.max_steps(small):
        try:
            with limits.recursion_room():
                b = _run(spec, params, GraphBuilder(net.name, small), net, max_nesting,
                         limits.max_steps(small))
            return _live(b.graph)
        except SizeGuardError:
            pass  # larger than a small graph: count it first
    try:
        estimate_nodes(spec, params, network, max_nodes, max_nesting, max_steps)
    except ShapeError:
        pass  # re-raised below by the graph builder, with node ids in the message
    with limits.recursion_room():
        b = _run(spec, params, GraphBuilder(net.name, max_nodes), net, max_nesting, max_steps)
    return _live(b.graph)


def _live(g: ir.Graph) -> ir.Graph:
    # Values a spec computes but never uses (e.g. channels(conv[8](z))) leave dead nodes.
    live = g.ancestors(g.output_id) | {g.output_id}
    for n in [n for n in g if n not in live]:
        g.remove(n)
    return g
