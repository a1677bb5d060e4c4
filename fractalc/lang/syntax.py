"""Parse `.fr` text into an AST of frozen records (`fractalc.records`).

The syntax lives only in ``grammars/fractal.lark`` (LALR, strict). The parser is lark's
standalone parser generated from it (`fractalc.lang._parser_generated`, written by
scripts/gen_parser.py), so parsing imports neither lark nor its grammar loader. This module
maps the parse tree to the records below, every node carrying its `Loc`, and turns parse
errors into `SpecSyntaxError` with a human description of what was expected (never lark's
internal terminal names).
"""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Union

from fractalc import limits
from fractalc.errors import Loc, SpecSyntaxError, register_source
from fractalc.lang import _parser_generated as _lark
from fractalc.lang._parser_generated import Transformer, v_args
from fractalc.records import fields, record

# ----------------------------------------------------------------------------- AST


@record
class Var:
    name: str
    loc: Loc


@record
class Lit:
    """An int, float, bool or string literal."""

    value: Union[int, float, bool, str]
    loc: Loc


@record
class ListLit:
    items: tuple["Expr", ...]
    loc: Loc


@record
class If:
    cond: "Expr"
    then: "Expr"
    other: "Expr"
    loc: Loc


@record
class BinOp:
    """Arithmetic (+ - * / // %), comparison (== != < <= > >=), logic (and or) and `>>`."""

    op: str
    left: "Expr"
    right: "Expr"
    loc: Loc


@record
class Unary:
    op: str  # "-" or "not"
    operand: "Expr"
    loc: Loc


@record
class Arg:
    name: str | None  # None for a positional argument
    value: "Expr"
    loc: Loc


@record
class Index:
    """``target[args]``: binds parameters of a rule/primitive, or indexes a list."""

    target: "Expr"
    args: tuple[Arg, ...]
    loc: Loc


@record
class Call:
    """``target(args)``: applies a function to tensors, or calls a builtin on numbers."""

    target: "Expr"
    args: tuple[Arg, ...]
    loc: Loc


@record
class Scoped:
    """``expr @ "label{expr}"``: evaluate expr with node ids under the scope label."""

    expr: "Expr"
    label: tuple[Union[str, "Expr"], ...]
    loc: Loc


@record
class Let:
    """``let name = value in body``: `body` evaluated with `name` bound to `value`'s result (a
    tensor, function or value, computed once: both branches of a block can read one tensor)."""

    name: str
    value: "Expr"
    body: "Expr"
    loc: Loc


Expr = Union[Var, Lit, ListLit, If, BinOp, Unary, Index, Call, Scoped, Let]


def children(e: Expr) -> tuple:
    """The sub-expressions of `e`, in source order (interpolated scope labels included)."""
    if isinstance(e, ListLit):
        return e.items
    if isinstance(e, If):
        return (e.cond, e.then, e.other)
    if isinstance(e, BinOp):
        return (e.left, e.right)
    if isinstance(e, Unary):
        return (e.operand,)
    if isinstance(e, (Index, Call)):
        return (e.target,) + tuple(a.value for a in e.args)
    if isinstance(e, Scoped):
        return (e.expr,) + tuple(p for p in e.label if not isinstance(p, str))
    if isinstance(e, Let):
        return (e.value, e.body)
    return ()


@record
class Import:
    path: str
    loc: Loc


@record
class Param:
    name: str
    default: Expr
    choices: tuple[Expr, ...] | None
    loc: Loc


@record
class ParamDecl:
    name: str
    default: Expr | None
    loc: Loc


@record
class Rule:
    name: str
    params: tuple[ParamDecl, ...]
    tensors: tuple[str, ...]
    body: Expr
    loc: Loc


@record
class Def:
    """``def name(p1, p2) = body``: a function of values that gives a value (a number, boolean,
    string, list or function; never a tensor), called as ``name(a, b)``."""

    name: str
    params: tuple[str, ...]
    body: Expr
    loc: Loc


@record
class Section:
    name: str
    expr: Expr
    loc: Loc


@record
class Network:
    name: str
    input: tuple[Expr, Expr, Expr]
    sections: tuple[Section, ...]
    loc: Loc


@record
class Module:
    file: str
    imports: tuple[Import, ...]
    params: tuple[Param, ...]
    rules: tuple[Rule, ...]
    networks: tuple[Network, ...]
    defs: tuple[Def, ...] = ()


# ----------------------------------------------------------------------------- AST as data

_AST_TYPES = {c.__name__: c for c in (Var, Lit, ListLit, If, BinOp, Unary, Arg, Index, Call, Scoped,
                                       Let, Import, Param, ParamDecl, Rule, Def, Section, Network,
                                       Module)}


_FIELDS = {name: tuple(f.name for f in fields(cls)) for name, cls in _AST_TYPES.items()}


def ast_to_data(module: Module):
    """`module` as JSON-able data (for the parse cache): a node is ``[type name, *fields]``, a
    tuple ``{"t": [...]}``, a `Loc` ``["Loc", line, column]`` (its file is the module's).
    `ast_from_data` inverts it. Raises RecursionError past Python's recursion limit."""
    def enc(x):
        if isinstance(x, Loc):
            return ["Loc", x.line, x.column]
        if type(x).__name__ in _AST_TYPES and type(x) is _AST_TYPES[type(x).__name__]:
            return [type(x).__name__, *(enc(getattr(x, f)) for f in _FIELDS[type(x).__name__])]
        if isinstance(x, tuple):
            return {"t": [enc(v) for v in x]}
        if x is None or isinstance(x, (str, int, float)):  # bool is an int
            return x
        raise TypeError(f"not AST data: {type(x).__name__}")
    return enc(module)


def ast_from_data(data, file: str) -> Module:
    """The `Module` that `ast_to_data` gave `data` for, its positions in `file`. Builds only AST
    classes and plain values; anything else raises (TypeError, KeyError, ValueError)."""
    # Records are filled directly, as their own __init__ does, without its argument checks:
    # the library's ~2,300 nodes are decoded in every process that imports it.
    new = object.__new__
    plain = _PLAIN

    def dec(x):
        t = type(x)
        if t is list:
            if not x:
                raise ValueError("empty node")
            name = x[0]
            if name == "Loc":
                _, line, column = x
                if type(line) is not int or type(column) is not int:
                    raise ValueError("bad Loc")
                obj = new(Loc)
                obj.__dict__.update(file=file, line=line, column=column)
                return obj
            cls, names = _DECODE[name]
            if len(x) - 1 != len(names):
                raise ValueError(f"{name} takes {len(names)} fields, got {len(x) - 1}")
            values = [v if type(v) in plain else dec(v) for v in x[1:]]
            if cls is Module:
                values[0] = file
            obj = new(cls)
            obj.__dict__.update(zip(names, values))
            return obj
        if t is dict:
            (items,) = x.values() if len(x) == 1 and "t" in x else (None,)
            if type(items) is not list:
                raise ValueError("bad tuple")
            return tuple([v if type(v) in plain else dec(v) for v in items])
        if t in plain:
            return x
        raise TypeError(f"not AST data: {t.__name__}")
    out = dec(data)
    if not isinstance(out, Module):
        raise TypeError("not a module")
    return out


#: What `ast_from_data` reads: a node's class and fields by its name; the plain values.
_DECODE = {name: (cls, _FIELDS[name]) for name, cls in _AST_TYPES.items()}
_PLAIN = frozenset({str, int, float, bool, type(None)})


# ----------------------------------------------------------------------------- parser


def grammar_text() -> str:
    """The grammar, from the installed package (fractalc/grammars) or the source tree. (Parsing
    does not read it: the generated parser holds its tables.)"""
    from importlib import resources
    try:
        return resources.files("fractalc").joinpath("grammars/fractal.lark").read_text()
    except (FileNotFoundError, OSError):  # running from a source tree without install
        return (Path(__file__).resolve().parents[2] / "grammars" / "fractal.lark").read_text()


@functools.cache
def parser() -> "_lark.Lark":
    """The parser (the generated module's `Lark`), loaded once per process from its tables."""
    return _lark.Lark_StandAlone()


_TERMINAL_WORDS = {
    "NAME": "a name", "INT": "an integer", "FLOAT": "a number", "STRING": "a string",
    "CMP": "a comparison operator", "ADD_OP": "'+' or '-'", "MUL_OP": "'*' or '/'",
    "PIPE": "'>>'", "$END": "the end of the file",
}


def _describe(term: str) -> str:
    if term in _TERMINAL_WORDS:
        return _TERMINAL_WORDS[term]
    try:
        pattern = parser().get_terminal(term).pattern
    except KeyError:
        return term.lower()
    if isinstance(pattern, _lark.PatternStr):
        return f"'{pattern.value}'"
    keyword = re.fullmatch(r"([a-z]+)\(\?!.*\)", pattern.value)  # _PARAM: /param(?!...)/
    if keyword:
        return f"'{keyword.group(1)}'"
    return term.lower()


def _token_text(tok: _lark.Token) -> str:
    if tok.type == "$END":
        return "end of file"
    if tok.type in _TERMINAL_WORDS:  # "a name" -> "name 'paramw'"
        word = re.sub(r"^(a|an|the) ", "", _describe(tok.type))
        return f"{word} '{_short(tok)}'"
    return f"'{_short(tok)}'"


class _ToAst(Transformer):
    def __init__(self, file: str, line0: int = 0, col0: int = 0):
        super().__init__()
        self.file = file
        self.line0 = line0
        self.col0 = col0

    def _loc(self, meta_or_tok) -> Loc:
        line = getattr(meta_or_tok, "line", 1)
        col = getattr(meta_or_tok, "column", 1)
        # Interpolated labels are parsed separately; shift them back into the file.
        if line == 1:
            col += self.col0
        return Loc(self.file, line + self.line0, col)

    # --- items
    @v_args(meta=True)
    def start(self, meta, items):
        kinds = {Import: [], Param: [], Rule: [], Network: [], Def: []}
        for it in items:
            kinds[type(it)].append(it)
        return Module(self.file, *(tuple(kinds[k]) for k in (Import, Param, Rule, Network, Def)))

    @v_args(meta=True)
    def import_stmt(self, meta, children):
        return Import(str(children[0])[1:-1], self._loc(meta))

    @v_args(meta=True)
    def param_stmt(self, meta, children):
        name, default, choices = children
        return Param(str(name), default, choices, self._loc(name))

    def choices(self, children):
        return tuple(children)

    @v_args(meta=True)
    def rule_def(self, meta, children):
        name, params, *rest = children
        *tensors, body = rest
        return Rule(str(name), params or (), tuple(str(t) for t in tensors), body, self._loc(name))

    def rule_params(self, children):
        return tuple(children)

    @v_args(meta=True)
    def param_decl(self, meta, children):
        name, default = children
        return ParamDecl(str(name), default, self._loc(name))

    @v_args(meta=True)
    def def_def(self, meta, children):
        name, *rest = children
        *params, body = rest
        return Def(str(name), tuple(str(p) for p in params if p is not None), body, self._loc(name))

    @v_args(meta=True)
    def network_def(self, meta, children):
        name, inp, *sections = children
        return Network(str(name), inp, tuple(sections), self._loc(name))

    def input_decl(self, children):
        return tuple(children)

    @v_args(meta=True)
    def section(self, meta, children):
        name, expr = children
        return Section(str(name), expr, self._loc(name))

    # --- expressions
    @v_args(meta=True)
    def if_expr(self, meta, c):
        return If(c[0], c[1], c[2], self._loc(meta))

    @v_args(meta=True)
    def let_expr(self, meta, c):
        return Let(str(c[0]), c[1], c[2], self._loc(meta))

    def pipe(self, c):
        return BinOp(">>", c[0], c[2], self._loc(c[1]))

    def binop(self, c):
        return BinOp(str(c[1]), c[0], c[2], self._loc(c[1]))

    def compare(self, c):
        return BinOp(str(c[1]), c[0], c[2], self._loc(c[1]))

    @v_args(meta=True)
    def or_(self, meta, c):
        return BinOp("or", c[0], c[1], self._loc(meta))

    @v_args(meta=True)
    def and_(self, meta, c):
        return BinOp("and", c[0], c[1], self._loc(meta))

    @v_args(meta=True)
    def not_(self, meta, c):
        return Unary("not", c[0], self._loc(meta))

    @v_args(meta=True)
    def neg(self, meta, c):
        return Unary("-", c[0], self._loc(meta))

    @staticmethod
    def _args(children) -> tuple[Arg, ...]:
        out = []
        for a in children:
            if a is None:
                continue
            out.append(a if isinstance(a, Arg) else Arg(None, a, a.loc))
        return tuple(out)

    @v_args(meta=True)
    def index(self, meta, c):
        return Index(c[0], self._args(c[1:]), self._loc(meta))

    @v_args(meta=True)
    def call(self, meta, c):
        return Call(c[0], self._args(c[1:]), self._loc(meta))

    @v_args(meta=True)
    def kwarg(self, meta, c):
        return Arg(str(c[0]), c[1], self._loc(c[0]))

    @v_args(meta=True)
    def scoped(self, meta, c):
        tok = c[1]
        return Scoped(c[0], self._label(tok), self._loc(tok))

    def _label(self, tok) -> tuple:
        text = str(tok)[1:-1]
        parts: list = []
        pos = 0
        for m in re.finditer(r"\{([^{}]*)\}", text):
            if m.start() > pos:
                parts.append(text[pos:m.start()])
            sub_col = tok.column + 1 + m.start(1)
            parts.append(_parse_expr_text(m.group(1), self.file, tok.line - 1, sub_col - 1))
            pos = m.end()
        if pos < len(text):
            parts.append(text[pos:])
        if not parts:
            raise SpecSyntaxError('a scope label cannot be empty; write one such as @ "col{c}"',
                                  self._loc(tok))
        if any(isinstance(p, str) and not re.fullmatch(r"[A-Za-z0-9_]+", p) for p in parts):
            raise SpecSyntaxError("a scope label may only contain letters, digits, '_' and {expr}",
                                  self._loc(tok))
        return tuple(parts)

    @v_args(meta=True)
    def var(self, meta, c):
        return Var(str(c[0]), self._loc(meta))

    @v_args(meta=True)
    def int(self, meta, c):
        text = str(c[0]).lstrip("0") or "0"
        # Compare digits before converting: Python refuses to convert over 4,300 digits.
        if len(text) > 19 or int(text) >= limits.MAX_INT:
            raise SpecSyntaxError(f"integer {_short(c[0])} is too large (integers are 64-bit: "
                                  "below 2**63)", self._loc(meta))
        return Lit(int(text), self._loc(meta))

    @v_args(meta=True)
    def float(self, meta, c):
        v = float(c[0])
        if v == float("inf"):
            raise SpecSyntaxError(f"number {_short(c[0])} is too large to be a finite float",
                                  self._loc(meta))
        return Lit(v, self._loc(meta))

    @v_args(meta=True)
    def string(self, meta, c):
        return Lit(str(c[0])[1:-1], self._loc(meta))

    @v_args(meta=True)
    def true(self, meta, c):
        return Lit(True, self._loc(meta))

    @v_args(meta=True)
    def false(self, meta, c):
        return Lit(False, self._loc(meta))

    @v_args(meta=True)
    def list(self, meta, c):
        return ListLit(tuple(x for x in c if x is not None), self._loc(meta))


def _syntax_error(exc: _lark.UnexpectedInput, file: str, line0: int, col0: int) -> SpecSyntaxError:
    line = exc.line + line0 if exc.line > 0 else 1
    col = exc.column + (col0 if exc.line == 1 else 0) if exc.column > 0 else 1
    loc = Loc(file, line, col)
    if isinstance(exc, _lark.UnexpectedCharacters):
        ch = exc.char
        if ch == '"':
            return SpecSyntaxError('unterminated string: a string ends with \'"\' on the line '
                                   "where it starts", loc)
        if ch == "\ufeff":
            return SpecSyntaxError("a byte order mark (U+FEFF) in the middle of the text; "
                                   "remove it (one at the very start of a file is allowed)", loc)
        return SpecSyntaxError(f"unexpected character {ch!r}", loc)
    if isinstance(exc, _lark.UnexpectedToken):
        expected = sorted({_describe(t) for t in exc.accepts or exc.expected})
        got = _token_text(exc.token)
        msg = f"unexpected {got}"
        if expected:
            shown = ", ".join(expected[:8]) + (", ..." if len(expected) > 8 else "")
            msg += f"; expected {shown}"
        return SpecSyntaxError(msg, loc)
    if isinstance(exc, _lark.UnexpectedEOF):
        expected = sorted({_describe(t) for t in exc.expected})
        return SpecSyntaxError("unexpected end of file; expected " + ", ".join(expected), loc)
    return SpecSyntaxError(str(exc).splitlines()[0], loc)


def _short(text) -> str:
    text = str(text)
    return text if len(text) <= 24 else f"{text[:10]}...{text[-6:]} ({len(text)} characters)"


def _check_depth(tree: _lark.Tree, transformer: "_ToAst") -> None:
    """Refuse expressions nested deeper than `limits.MAX_EXPR_DEPTH`, before any recursive stage
    (the transformer, resolve, the evaluator, the formatter) walks them. Iterative."""
    stack = [(tree, 0, None)]  # (node, depth, the whole expression it is part of)
    while stack:
        node, depth, top = stack.pop()
        if top is None and node.data not in _STATEMENTS:
            top = node
        if depth > limits.MAX_EXPR_DEPTH:
            raise SpecSyntaxError(
                f"expression nested too deeply: more than {limits.MAX_EXPR_DEPTH} levels of "
                "lists, parentheses, operators or pipeline stages; name a part with a "
                "parameter or a rule", transformer._loc((top or node).meta))
        stack.extend((c, depth + 1, top) for c in node.children if isinstance(c, _lark.Tree))


_STATEMENTS = {"start", "import_stmt", "param_stmt", "choices", "rule_def", "rule_params",
               "param_decl", "def_def", "network_def", "input_decl", "section"}


def _transform(tree: _lark.Tree, transformer: "_ToAst"):
    _check_depth(tree, transformer)
    try:
        with limits.recursion_room():
            return transformer.transform(tree)
    except _lark.VisitError as exc:  # errors raised inside the transformer
        if isinstance(exc.orig_exc, SpecSyntaxError):
            raise exc.orig_exc from None
        raise


def _check_size(text: str, file: str) -> None:
    if len(text) > limits.MAX_SPEC_BYTES:
        raise SpecSyntaxError(f"{file}: spec text of {len(text):,} characters is over the limit of "
                              f"{limits.MAX_SPEC_BYTES:,}; split it into files that import each other")


def _parse_expr_text(text: str, file: str, line0: int = 0, col0: int = 0) -> Expr:
    _check_size(text, file)
    try:
        tree = parser().parse(text, start="expr")
    except _lark.UnexpectedInput as exc:
        raise _syntax_error(exc, file, line0, col0) from None
    return _transform(tree, _ToAst(file, line0, col0))


def parse_expr(text: str, file: str = "<expr>") -> Expr:
    """Parse one expression (used for ``--set name=EXPR`` values)."""
    register_source(file, text)
    return _parse_expr_text(text, file)


def parse(text: str, file: str = "<string>") -> Module:
    """Parse a whole `.fr` file. Raises `SpecSyntaxError` with a location.

    A UTF-8 byte order mark at the very start is skipped (editors on some systems write one);
    positions are counted after it, as an editor shows them."""
    if text.startswith("\ufeff"):
        text = text[1:]
    register_source(file, text)
    _check_size(text, file)
    try:
        tree = parser().parse(text, start="start")
    except _lark.UnexpectedInput as exc:
        raise _syntax_error(exc, file, 0, 0) from None
    return _transform(tree, _ToAst(file))


# A spec is text written by hand or by fractalc; the largest shipped one is a few kB.
MAX_SPEC_BYTES = limits.MAX_SPEC_BYTES  # bytes; the text limit of parse() in characters


def read_spec_bytes(path: str | Path) -> bytes:
    """The bytes of the spec file at `path`: a regular file (not a directory, FIFO, device or
    /proc file) of at most `MAX_SPEC_BYTES`; anything else raises `SpecSyntaxError`."""
    from fractalc.fileio import FileRefused, read_limited
    try:
        return read_limited(path, MAX_SPEC_BYTES)
    except FileRefused as exc:
        raise SpecSyntaxError(f"cannot read spec file {str(path)!r}: {exc.reason}") from None


def decode_spec(data: bytes, path: str | Path) -> str:
    """The text of spec bytes: UTF-8, line ends read as text-mode `open` reads them."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecSyntaxError(f"cannot read spec file {str(path)!r}: it is not UTF-8 text "
                              f"(invalid byte at offset {exc.start})") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_spec(path: str | Path) -> str:
    """The text of the spec file at `path` (`read_spec_bytes`, then `decode_spec`)."""
    return decode_spec(read_spec_bytes(path), path)


def _ast_salt() -> bytes:
    """What a cached AST depends on besides its text: this module's own bytes (a changed AST
    class or transformer is a different key) and the grammar the parser was generated from."""
    return Path(__file__).read_bytes() + _lark.GRAMMAR_SHA256.encode()


def parse_file(path: str | Path, data: bytes | None = None, *, cache: bool = False) -> Module:
    """Parse the spec file at `path` (`data`: its bytes, when the caller has read them with
    `read_spec_bytes`). The text must be UTF-8; line ends are read as text-mode `open` does.

    With `cache` (for the bundled library, which nearly every spec imports), the AST comes from
    the per-user parse cache when it holds this exact text (`parser_cache.parse_cached`).

    Only a file named ``*.fr`` is treated as a spec in errors: for any other file (something a
    hostile ``import`` pointed at) errors show neither its lines nor its tokens."""
    p = Path(path)
    text = decode_spec(read_spec_bytes(p) if data is None else data, p)
    if p.suffix == ".fr":
        if cache:
            from fractalc.lang.parser_cache import parse_cached
            # what parse() registers, so later stages' errors still show the file's lines
            register_source(str(p), text[1:] if text.startswith("\ufeff") else text)
            return parse_cached(str(p), text, lambda: parse(text, str(p)), salt=_ast_salt,
                                encode=ast_to_data, decode=ast_from_data)
        return parse(text, str(p))
    from fractalc.errors import forget_source
    try:
        return parse(text, str(p))
    except SpecSyntaxError as exc:
        raise SpecSyntaxError(f"{str(p)!r} is not a fractalc spec (its text is not shown: only "
                              "files named *.fr are)", exc.loc) from None
    finally:
        forget_source(str(p))
