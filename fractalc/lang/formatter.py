"""The canonical printer: a parsed spec (AST) back to `.fr` text, comments kept.

Contracts (tested in tests/test_fmt.py):
- ``parse(format_source(text)) == parse(text)`` ignoring source locations (`normalize`), for
  every spec; `format_module` gives the same guarantee for any well-formed AST.
- Idempotent: formatting formatted text changes nothing.
- Every comment of the input is in the output, once, in source order. A comment sits before
  the item (or network section) it was written above, or after it on the same line. The one
  move: a comment written *inside* a multi-line item (between the lines of an expression) is
  placed just before that item, since expressions are re-broken.

Layout: items stay in source order; blank lines between items and between comments are kept
(runs collapse to one); 4-space indentation; lines aim at `WIDTH` columns: an expression that
does not fit is broken at `if/else if/else`, at call arguments (aligned after the open bracket)
and before `>>`; network section names are padded so their `=` align; trailing comments of
consecutive lines are aligned two spaces after the longest code. Operators get one space on
each side, keyword arguments none (``conv[c, k=7, s=2]``); parentheses are printed exactly
where the grammar needs them (and around an `if` used as a condition or `then` branch).
"""
from __future__ import annotations

import bisect
import functools
from typing import Any, Callable

from fractalc import limits
from fractalc.lang import syntax as S
from fractalc.errors import FractalcError, Loc
from fractalc.records import field, fields, is_record, record, replace

WIDTH = 100
INDENT = "    "

# Binding strength, loosest first: the grammar's expr -> pipe -> or -> and -> not -> compare ->
# sum -> product -> unary -> postfix -> atom.
_IF, _PIPE, _OR, _AND, _NOT, _CMP, _SUM, _PROD, _NEG, _POSTFIX, _ATOM = range(11)
_BIN = {">>": _PIPE, "or": _OR, "and": _AND, "+": _SUM, "-": _SUM,
        "*": _PROD, "/": _PROD, "//": _PROD, "%": _PROD}
_CMP_OPS = {"==", "!=", "<", "<=", ">", ">="}


def _level(e) -> int:
    if isinstance(e, (S.If, S.Let)):
        return _IF
    if isinstance(e, S.BinOp):
        return _CMP if e.op in _CMP_OPS else _BIN[e.op]
    if isinstance(e, S.Unary):
        return _NOT if e.op == "not" else _NEG
    if isinstance(e, (S.Index, S.Call, S.Scoped)):
        return _POSTFIX
    return _ATOM


def _operand_levels(e: S.BinOp) -> tuple[int, int]:
    if e.op in _CMP_OPS:  # comparisons do not chain: both sides are sums
        return _SUM, _SUM
    lv = _BIN[e.op]
    return lv, lv + 1  # left-associative


def _lit(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        text = repr(v)
        if not any(ch in text for ch in ".e") or text.startswith("-"):
            raise FractalcError(f"the number {text} has no .fr spelling")
        return text
    if '"' in v or "\n" in v:
        raise FractalcError(f"the string {v!r} has no .fr spelling (no quotes or newlines in strings)")
    return f'"{v}"'


def _label(parts) -> str:
    return '"' + "".join(p if isinstance(p, str) else "{" + expr_text(p) + "}" for p in parts) + '"'


def _arg(a: S.Arg) -> str:
    return (f"{a.name}=" if a.name is not None else "") + expr_text(a.value)


def expr_text(e, min_level: int = _IF) -> str:
    """One-line text of an expression, parenthesised if it binds looser than `min_level`."""
    text = _flat(e)
    return f"({text})" if _level(e) < min_level else text


def _flat(e) -> str:
    if isinstance(e, S.Var):
        return e.name
    if isinstance(e, S.Lit):
        return _lit(e.value)
    if isinstance(e, S.ListLit):
        return "[" + ", ".join(expr_text(x) for x in e.items) + "]"
    if isinstance(e, S.If):
        return (f"if {expr_text(e.cond, _PIPE)} then {expr_text(e.then, _PIPE)} "
                f"else {expr_text(e.other)}")
    if isinstance(e, S.Let):
        return f"let {e.name} = {expr_text(e.value)} in {expr_text(e.body)}"
    if isinstance(e, S.BinOp):
        lo, ro = _operand_levels(e)
        return f"{expr_text(e.left, lo)} {e.op} {expr_text(e.right, ro)}"
    if isinstance(e, S.Unary):
        if e.op == "not":
            return "not " + expr_text(e.operand, _NOT)
        return "-" + expr_text(e.operand, _NEG)
    if isinstance(e, S.Index):
        return expr_text(e.target, _POSTFIX) + "[" + ", ".join(_arg(a) for a in e.args) + "]"
    if isinstance(e, S.Call):
        return expr_text(e.target, _POSTFIX) + "(" + ", ".join(_arg(a) for a in e.args) + ")"
    if isinstance(e, S.Scoped):
        return expr_text(e.expr, _POSTFIX) + " @ " + _label(e.label)
    raise TypeError(f"not an expression: {e!r}")


def _glue(head: str, lines: list[str]) -> list[str]:
    return [head + lines[0]] + lines[1:]


def render_expr(e, col: int, min_level: int = _IF) -> list[str]:
    """Lines of `e` printed from column `col`: the first line carries no indentation (the caller
    has written `col` characters before it), later lines carry their full indentation."""
    flat = expr_text(e, min_level)
    if col + len(flat) <= WIDTH or _level(e) < min_level:
        return [flat]
    pad = " " * col
    if isinstance(e, S.If):
        lines: list[str] = []
        first = True
        while isinstance(e, S.If):
            head = ("" if first else "else ") + f"if {expr_text(e.cond, _PIPE)} then "
            seg = _glue(head, render_expr(e.then, col + len(head), _PIPE))
            lines += seg if first else _glue(pad, seg)
            first = False
            e = e.other
        return lines + _glue(pad + "else ", render_expr(e, col + 5))
    if isinstance(e, S.Let):  # let x = value in / body, the body under the `let`
        head = f"let {e.name} = "
        lines = _glue(head, render_expr(e.value, col + len(head)))
        lines[-1] += " in"
        return lines + _glue(pad, render_expr(e.body, col))
    if isinstance(e, (S.Call, S.Index)) and e.args:
        opening, closing = ("(", ")") if isinstance(e, S.Call) else ("[", "]")
        head = expr_text(e.target, _POSTFIX) + opening
        inner = col + len(head)
        lines = []
        for k, a in enumerate(e.args):
            name = f"{a.name}=" if a.name is not None else ""
            seg = _glue(name, render_expr(a.value, inner + len(name)))
            seg[-1] += closing if k == len(e.args) - 1 else ","
            lines += _glue(head, seg) if k == 0 else _glue(" " * inner, seg)
        return lines
    if isinstance(e, S.BinOp) and e.op == ">>":
        parts = []
        while isinstance(e, S.BinOp) and e.op == ">>":
            parts.append(e.right)
            e = e.left
        lines = render_expr(e, col, _PIPE)
        for r in reversed(parts):  # fill each line, then continue on the next one with `>>`
            step = " >> " + expr_text(r, _PIPE + 1)
            used = len(lines[-1]) + (col if len(lines) == 1 else 0)
            if used + len(step) <= WIDTH:
                lines[-1] += step
            else:
                lines += _glue(pad + ">> ", render_expr(r, col + 3, _PIPE + 1))
        return lines
    return [flat]


# ----------------------------------------------------------------------------- items


@record(frozen=False)
class _Slot:
    """Comments and blank line around one printed unit (an item, a section, a brace)."""

    leading: list[tuple[str, bool]] = field(default_factory=list)  # (comment, blank line before)
    blank: bool = False  # a blank line before the unit's code (or its first comment)
    trailing: str | None = None  # comment after the unit's last line


@record(frozen=False)
class _Item:
    node: Any  # S.Import | S.Param | S.Rule | S.Network
    slot: _Slot = field(default_factory=_Slot)
    parts: list[_Slot] = field(default_factory=list)  # network: input, sections..., closing brace


@record(frozen=False)
class _Line:
    code: str
    comment: str | None = None  # a trailing comment (aligned with its neighbours)


def _rule_head(r: S.Rule) -> str:
    params = ""
    if r.params:
        params = "[" + ", ".join(p.name + ("" if p.default is None else "=" + expr_text(p.default))
                                 for p in r.params) + "]"
    return f"rule {r.name}{params}({', '.join(r.tensors)}) ="


def _def_head(d: S.Def) -> str:
    return f"def {d.name}({', '.join(d.params)}) ="


def _item_code(node) -> list[str]:
    if isinstance(node, S.Import):
        return [f'import {_lit(node.path)}']
    if isinstance(node, S.Param):
        head = f"param {node.name} = "
        lines = _glue(head, render_expr(node.default, len(head)))
        if node.choices is not None:
            lines[-1] += " choices(" + ", ".join(expr_text(c) for c in node.choices) + ")"
        return lines
    if isinstance(node, (S.Rule, S.Def)):
        head = _rule_head(node) if isinstance(node, S.Rule) else _def_head(node)
        one = head + " " + expr_text(node.body)
        if len(one) <= WIDTH:
            return [one]
        return [head] + _glue(INDENT, render_expr(node.body, len(INDENT)))
    raise TypeError(node)


def _comment_lines(slot: _Slot, indent: str, out: list[_Line | None]) -> None:
    for text, blank in slot.leading:
        if blank:
            out.append(None)
        out.append(_Line(indent + text))


def _emit_slot(slot: _Slot, indent: str, code: list[str], out: list, first: bool) -> None:
    if slot.leading:
        if slot.leading[0][1] and not first:
            out.append(None)
        rest = _Slot([(t, b) for t, b in slot.leading[1:]])
        out.append(_Line(indent + slot.leading[0][0]))
        _comment_lines(rest, indent, out)
        if slot.blank:
            out.append(None)
    elif slot.blank and not first:
        out.append(None)
    lines = [_Line(indent + c if c else c) for c in code]
    lines[-1].comment = slot.trailing
    out.extend(lines)


def _emit_item(item: _Item, out: list, first: bool) -> None:
    node = item.node
    if not isinstance(node, S.Network):
        _emit_slot(item.slot, "", _item_code(node), out, first)
        return
    _emit_slot(item.slot, "", [f"network {node.name} {{"], out, first)
    inp = "input [" + ", ".join(expr_text(x) for x in node.input) + "]"
    _emit_slot(item.parts[0], INDENT, [inp], out, True)
    width = max(len(s.name) for s in node.sections)
    for sec, slot in zip(node.sections, item.parts[1:-1]):
        head = f"{sec.name:<{width}} = "
        _emit_slot(slot, INDENT, _glue(head, render_expr(sec.expr, len(INDENT) + len(head))), out, False)
    close = item.parts[-1]
    _comment_lines(close, INDENT, out)
    out.append(_Line("}", close.trailing))


def _render_lines(lines: list[_Line | None]) -> str:
    """Join lines; collapse blank runs; align the trailing comments of consecutive lines."""
    text: list[str] = []
    i = 0
    while i < len(lines):
        ln = lines[i]
        if ln is None:
            if text and text[-1] != "":
                text.append("")
            i += 1
            continue
        if ln.comment is None:
            text.append(ln.code.rstrip())
            i += 1
            continue
        j = i
        while j < len(lines) and lines[j] is not None and lines[j].comment is not None:
            j += 1
        col = max(len(lines[k].code.rstrip()) for k in range(i, j)) + 2
        for k in range(i, j):
            text.append(f"{lines[k].code.rstrip():<{col}}{lines[k].comment}")
        i = j
    while text and text[-1] == "":
        text.pop()
    return "\n".join(text) + "\n" if text else ""


# ----------------------------------------------------------------------------- documents


@functools.cache
def _full_lexer():
    """The grammar's own lexer, keeping the ignored tokens (comments, whitespace); built once,
    since building it costs far more than lexing a spec."""
    from copy import copy

    from fractalc.lang._parser_generated import BasicLexer

    # What lark's own `Lark.lex(dont_ignore=True)` does, but once: the parser's lexer
    # configuration (`Lark.lexer_conf`) with no ignored terminals.
    conf = copy(S.parser().lexer_conf)
    conf.ignore = ()
    return BasicLexer(conf)


def _tokens(text: str) -> list:
    """Every token of `text` but whitespace, comments included, in order (a leading byte order
    mark skipped, as `syntax.parse` does)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    from fractalc.lang._parser_generated import LexerThread
    stream = LexerThread.from_text(_full_lexer(), text).lex(None)
    return [t for t in stream if t.type != "WS"]


def _source_order(module: S.Module) -> list:
    items = [*module.imports, *module.params, *module.rules, *module.defs, *module.networks]
    return sorted(items, key=lambda n: (n.loc.line, n.loc.column))  # stable for equal locs


class Document:
    """A spec ready to print: its items in source order with their comments and blank lines.

    Build one with `Document.parse(text)` (comments and blank lines from the source) or
    `Document.of_module(module)` (no comments; a blank line between kinds of item). Edit it with
    `set_param` / `map_imports`, then `render()`.
    """

    def __init__(self, items: list[_Item], header: list[str] | None = None,
                 footer: list[tuple[str, bool]] | None = None, file: str = "<string>"):
        self.items = items
        self.header = list(header or [])
        self.footer = list(footer or [])
        self.file = file

    # --- construction
    @classmethod
    def of_module(cls, module: S.Module) -> "Document":
        items = []
        prev = None
        for node in _source_order(module):
            kind = type(node)
            blank = prev is not None and (kind is not prev or kind is S.Network)
            items.append(cls._new_item(node, blank))
            prev = kind
        return cls(items, file=module.file)

    @staticmethod
    def _new_item(node, blank: bool = False) -> _Item:
        parts = []
        if isinstance(node, S.Network):
            parts = [_Slot() for _ in range(len(node.sections) + 2)]
        return _Item(node, _Slot(blank=blank), parts)

    @classmethod
    def parse(cls, text: str, file: str = "<string>") -> "Document":
        module = S.parse(text, file)
        tokens = _tokens(text)
        code = [t for t in tokens if t.type != "COMMENT"]
        at = {(t.line, t.column): k for k, t in enumerate(code)}

        def start_of(node) -> int:
            # An import's location is its keyword; the others' is the name after the keyword.
            k = at[(node.loc.line, node.loc.column)]
            return k if isinstance(node, S.Import) else k - 1

        nodes = _source_order(module)
        starts = [start_of(n) for n in nodes]
        items = [cls._new_item(n) for n in nodes]
        # Every printed unit ("slot") begins at a code token; a token belongs to the last slot
        # that begins at or before it.
        slot_starts: list[int] = []
        slot_of: list[_Slot] = []
        for idx, (node, item, s) in enumerate(zip(nodes, items, starts)):
            slot_starts.append(s)
            slot_of.append(item.slot)
            if isinstance(node, S.Network):
                end = starts[idx + 1] if idx + 1 < len(starts) else len(code)
                firsts = [s + 3] + [at[(x.loc.line, x.loc.column)] for x in node.sections] + [end - 1]
                slot_starts += firsts
                slot_of += item.parts
        slot_last = [nxt - 1 for nxt in slot_starts[1:]] + [len(code) - 1]

        def slot_index(tok: int) -> int:
            return bisect.bisect_right(slot_starts, tok) - 1

        footer: list[tuple[str, bool]] = []
        prev_line = 0  # the last source line holding something already placed
        ci = 0  # next code token
        for t in tokens:
            if t.type != "COMMENT":
                k = ci
                ci += 1
                si = slot_index(k)
                if slot_starts[si] == k:
                    slot_of[si].blank = t.line - prev_line > 1 and prev_line > 0
                prev_line = t.line
                continue
            text_c = str(t).rstrip()
            trailing = ci > 0 and code[ci - 1].line == t.line
            blank = prev_line > 0 and t.line - prev_line > 1
            prev_line = t.line
            if trailing:
                si = slot_index(ci - 1)
                if slot_last[si] == ci - 1 and slot_of[si].trailing is None:
                    slot_of[si].trailing = text_c
                else:  # inside a multi-line unit: move it before that unit
                    slot_of[si].leading.append((text_c, False))
            elif ci >= len(code):
                footer.append((text_c, blank))
            else:
                si = slot_index(ci)
                if slot_starts[si] == ci:
                    slot_of[si].leading.append((text_c, blank))
                else:
                    slot_of[si].leading.append((text_c, False))
        return cls(items, footer=footer, file=file)

    # --- edits
    def module(self) -> S.Module:
        nodes = [it.node for it in self.items]
        return S.Module(self.file, *(tuple(n for n in nodes if isinstance(n, k))
                                     for k in (S.Import, S.Param, S.Rule, S.Network, S.Def)))

    def set_param(self, name: str, value: S.Expr) -> None:
        """Give parameter `name` the default `value`: in place where this file declares it,
        else as a new declaration after this file's last parameter (a re-declaration of a
        library parameter, which the language allows)."""
        for it in self.items:
            if isinstance(it.node, S.Param) and it.node.name == name:
                it.node = replace(it.node, default=value)
                return
        at = max((k for k, it in enumerate(self.items) if isinstance(it.node, (S.Param, S.Import))),
                 default=-1)
        loc = Loc(self.file, 0, 0)
        self.items.insert(at + 1, self._new_item(S.Param(name, value, None, loc),
                                                 blank=at >= 0 and isinstance(self.items[at].node, S.Import)))

    def map_imports(self, fn: Callable[[str], str]) -> None:
        for it in self.items:
            if isinstance(it.node, S.Import):
                it.node = replace(it.node, path=fn(it.node.path))

    # --- output
    def render(self) -> str:
        with limits.recursion_room():  # expressions nest up to limits.MAX_EXPR_DEPTH levels
            return self._render()

    def _render(self) -> str:
        out: list[_Line | None] = [_Line(h) for h in self.header]
        if self.header and self.items:
            out.append(None)
        for k, it in enumerate(self.items):
            _emit_item(it, out, first=(k == 0 and not self.header))
        for text, blank in self.footer:
            if blank:
                out.append(None)
            out.append(_Line(text))
        return _render_lines(out)


def format_source(text: str, file: str = "<string>") -> str:
    """The canonical form of spec text (raises `SpecSyntaxError` if it does not parse)."""
    return Document.parse(text, file).render()


def format_module(module: S.Module) -> str:
    """Spec text for an AST (no comments)."""
    return Document.of_module(module).render()


def comments_of(text: str) -> list[str]:
    """The comments of spec text, in order (what `fmt` must keep)."""
    return [str(t).rstrip() for t in _tokens(text) if t.type == "COMMENT"]


def normalize(x):
    """An AST with source locations (and file names) removed, literal types made explicit, so
    two parses of equivalent text compare equal."""
    if isinstance(x, S.Lit):
        return ("Lit", type(x.value).__name__, x.value)
    if is_record(x) and not isinstance(x, type):
        return (type(x).__name__,) + tuple(normalize(getattr(x, f.name)) for f in fields(x)
                                           if f.name not in ("loc", "file"))
    if isinstance(x, tuple):
        return tuple(normalize(v) for v in x)
    return x


def check_round_trip(before: str, after: str, file: str) -> None:
    """Refuse a formatting that changed the meaning or lost a comment (a formatter bug)."""
    with limits.recursion_room():
        same = normalize(S.parse(before, file)) == normalize(S.parse(after, file + " (formatted)"))
    if not same:
        raise FractalcError(f"fmt would change the meaning of {file}; leaving it untouched "
                            "(a fractalc bug, please report)")
    if comments_of(before) != comments_of(after):
        raise FractalcError(f"fmt would lose or reorder comments of {file}; leaving it untouched "
                            "(a fractalc bug, please report)")
