"""Issue 14, language: `def` (functions of values), `let` (sharing a tensor or a value), and
`round_even` beside `round`.

References: Python's own arithmetic (round, math.floor, closed-form recursions), node counts
counted by hand, and the parser itself for the formatter's round trip. Errors must be
`FractalcError`s with a file:line:col position; hostile recursions must be refused quickly.
"""
from __future__ import annotations

import math
from fractions import Fraction

import pytest

from fractalc import ir
from fractalc.compiler import compile_spec
from fractalc.errors import FractalcError, SizeGuardError, SpecError
from fractalc.lang import formatter as F
from fractalc.lang import syntax as S
from conftest import no_hang

NET = "network n {\n  input [8, 4, 4]\n  body = %s\n}\n"



def compile_text(tmp_path, text, **kw):
    p = tmp_path / "s.fr"
    p.write_text(text)
    with no_hang():
        return compile_spec(p, **kw)


def conv_widths(c) -> list[int]:
    return [c.graph.op(n).out_channels for n in c.graph.nodes(ir.Conv)]


def value(tmp_path, expr: str, prelude: str = "") -> int:
    """The integer `expr` evaluates to, read back as the width of a conv."""
    c = compile_text(tmp_path, prelude + NET % f"conv[{expr}, k=1]")
    (w,) = conv_widths(c)
    return w


# ----------------------------------------------------------------------------- def


def test_def_names_a_width_formula(tmp_path):
    # larq-style widths: round(c / r / 32) * 32, as a def and as the inlined formula
    prelude = "def width(c, r) = round_even(c / r / 32) * 32\n"
    for c, r in [(256, 2), (416, 2), (320, 2.5), (736, 1.4)]:
        assert value(tmp_path, f"width({c}, {r})", prelude) == round(c / r / 32) * 32


def test_def_hides_the_width_builtin_as_a_parameter_may(tmp_path):
    text = "def width(c, r) = c // r\n" + NET % "conv[width(64, 2), k=1]"
    assert conv_widths(compile_text(tmp_path, text)) == [32]


@pytest.mark.parametrize("n", [0, 1, 5, 12])
def test_recursive_def_with_base_case(tmp_path, n):
    prelude = "def fact(n) = if n <= 1 then 1 else n * fact(n - 1)\n"
    assert value(tmp_path, f"fact({n}) % 997 + 1", prelude) == math.factorial(n) % 997 + 1


def test_mutually_recursive_defs_and_lists(tmp_path):
    prelude = ("def even(n) = if n == 0 then true else odd(n - 1)\n"
               "def odd(n) = if n == 0 then false else even(n - 1)\n"
               "def pick(xs, i) = xs[i]\n")
    assert value(tmp_path, "if even(10) then pick([3, 5, 7], 2) else 1", prelude) == 7
    assert value(tmp_path, "if odd(10) then 2 else pick([3, 5, 7], -1)", prelude) == 7


def test_def_reads_tensor_sizes_and_parameters(tmp_path):
    text = ("param ratio = 4\n"
            "def squeeze(z) = max(channels(z) // ratio, 1)\n"
            "rule se(z) = z >> conv[squeeze(z), k=1]\n" + NET % "se")
    assert conv_widths(compile_text(tmp_path, text)) == [2]


def test_def_may_return_a_function(tmp_path):
    text = "def unit(c) = conv[c, k=1] >> bn\n" + NET % "unit(16)"
    c = compile_text(tmp_path, text)
    assert conv_widths(c) == [16] and c.graph.count(ir.BatchNorm) == 1


def test_def_without_arguments(tmp_path):
    assert value(tmp_path, "base() * 2", "def base() = 24\n") == 48


# ----------------------------------------------------------------------------- let


def test_let_shares_one_tensor_between_branches(tmp_path):
    # without let, `z >> bn` written twice would make two BNs
    text = "rule r(z) = let y = z >> bn in conv[8](y) + conv[8, k=1](y)\n" + NET % "r"
    g = compile_text(tmp_path, text).graph
    assert g.count(ir.BatchNorm) == 1
    (bn,) = g.nodes(ir.BatchNorm)
    assert len(g.consumers(bn)) == 2 and g.count(ir.Conv) == 2


def test_let_binds_values_and_functions_and_nests(tmp_path):
    assert value(tmp_path, "let a = 3 in let b = a * 4 in a + b") == 15
    text = "rule r(z) = let f = conv[8, k=1] >> bn in f(f(z))\n" + NET % "r"
    g = compile_text(tmp_path, text).graph
    assert g.count(ir.Conv) == 2 and g.count(ir.BatchNorm) == 2


def test_let_shadows_and_does_not_leak(tmp_path):
    assert value(tmp_path, "let c = 4 in (let c = 6 in c) + c") == 10
    err = pytest.raises(SpecError, compile_text, tmp_path, NET % "conv[(let q = 3 in q) + q]").value
    assert "unknown name 'q'" in err.message and err.loc.line == 3


# ----------------------------------------------------------------------------- rounding


@pytest.mark.parametrize("x", ["0.5", "1.5", "2.5", "-0.5", "-1.5", "-2.5", "3.4999", "7.5", "12.5"])
def test_round_modes(tmp_path, x):
    fx = float(x)
    away = int(math.floor(abs(fx) + 0.5)) * (1 if fx >= 0 else -1)
    even = round(Fraction(x))  # exact half to even on the decimal value, Python's rule
    assert value(tmp_path, f"round({x}) + 100") == away + 100
    assert value(tmp_path, f"round_even({x}) + 100") == even + 100


# ----------------------------------------------------------------------------- errors


ERRORS = [
    # (spec, fragment, line, column)
    ("def w(c) = c + 2\n" + NET % "conv[w(bn)]", "'+' cannot combine the function 'bn'", 1, 14),
    ("def w(z) = z * 2\nrule r(z) = conv[w(z)](z)\n" + NET % "r", "'*' cannot combine a tensor", 1, 14),
    ("def w(z) = z\nrule r(z) = conv[w(z)](z)\n" + NET % "r", "def 'w' must give a value", 1, 12),
    ("rule r(z) = conv[z](z)\n" + NET % "r", "must be an integer, got a tensor", 1, 13),
    ("def t(z) = bn(z)\nrule r(z) = t(z)\n" + NET % "r", "def 't' must give a value", 1, 12),
    ("def w(c, r) = c / r\n" + NET % "conv[w(3)]", "def 'w' takes 2 arguments (c, r), got 1", 4, 15),
    ("def w(c) = c\n" + NET % "conv[w(c=3)]", "arguments of def 'w' are positional", 4, 17),
    ("def w(c) = c\n" + NET % "conv[w[3]]", "def 'w' is called with parentheses", 4, 15),
    ("def widht(c) = c\n" + NET % "conv[width(8)]", "", 0, 0),  # width() is the builtin: no error here
    ("def f(n) = f(n - 1)\n" + NET % "conv[f(3)]", "def 'f' recurses without a base case", 1, 5),
    ("def f(n) = g(n)\ndef g(n) = f(n) + 1\n" + NET % "conv[f(3)]",
     "recurses without a base case", 1, 5),
    ("def width_of(c) = c\n" + NET % "conv[widht_of(8)]", "did you mean 'width_of'", 4, 15),
    ("def a(c) = c\ndef a(d) = d\n" + NET % "bn", "def 'a' is defined twice", 2, 5),
    ("def bn(c) = c\n" + NET % "relu", "def name 'bn' is a builtin primitive", 1, 5),
    ("rule q(z) = z\ndef q(c) = c\n" + NET % "relu", "def 'q' has the name of the rule", 2, 5),
    ("def q(c, c) = c\n" + NET % "relu", "def 'q' declares 'c' twice", 1, 5),
    ("param p = 1\ndef p(c) = c\n" + NET % "relu", "parameter 'p' has the name of the def", 1, 7),
]


@pytest.mark.parametrize("text,fragment,line,col", ERRORS)
def test_errors_are_positioned(tmp_path, text, fragment, line, col):
    if not fragment:
        with pytest.raises(FractalcError, match="CxHxW"):  # the builtin, called on a number
            compile_text(tmp_path, text)
        return
    with pytest.raises(FractalcError) as info:
        compile_text(tmp_path, text)
    err = info.value
    assert fragment in err.message, err.message
    assert (err.loc.line, err.loc.column) == (line, col), (err.loc, err.message)
    assert err.loc.file.endswith("s.fr")


# ----------------------------------------------------------------------------- bounded work


def test_exponential_def_recursion_is_refused_from_its_predicted_steps(tmp_path):
    text = "def f(n) = if n == 0 then 1 else f(n - 1) + f(n - 1)\n" + NET % "conv[f(60)]"
    with pytest.raises(SizeGuardError, match="steps .*def 'f'"):
        compile_text(tmp_path, text)


def test_a_def_recursion_that_never_reaches_its_base_case_is_refused(tmp_path):
    text = "def f(n) = if n == 0 then 1 else f(n + 1)\n" + NET % "conv[f(1)]"
    with pytest.raises(SizeGuardError, match="nest deeper than"):
        compile_text(tmp_path, text)


def test_exponential_lists_are_refused(tmp_path):
    text = ("def f(n) = if n == 0 then [1] else [f(n - 1), f(n - 1)]\n"
            "def depth(x, n) = if n == 0 then 1 else depth(x[0], n - 1) + 1\n"
            + NET % "conv[depth(f(70), 70)]")
    with pytest.raises(SizeGuardError, match="steps"):
        compile_text(tmp_path, text)


def test_def_memo_tells_numbers_and_booleans_apart(tmp_path):
    # 1 == true in Python: a memo keyed by plain values would answer f(true) with f(1)
    text = "def f(x) = if x == true then 5 else 7\n" + NET % "conv[f(1) + f(true) + f(1.0)]"
    # the language compares 1 and true as equal (==), so every call gives 5
    assert conv_widths(compile_text(tmp_path, text)) == [15]
    text = "def f(x) = pow(2, x)\n" + NET % "conv[int(f(3) + f(3.0))]"
    assert conv_widths(compile_text(tmp_path, text)) == [16]


# ----------------------------------------------------------------------------- formatter

FMT_CASES = [
    "def width(c, r) = round_even(c / r / 32) * 32  # named\n" + NET % "conv[width(64, 1)]",
    "def k() = 3\nrule r(z) = let y = z >> bn in conv[k()](y) + (let q = 2 in conv[q](y))\n" + NET % "r",
    "rule r(z) = conv[if true then (let u = 4 in u) else 5](z)\n" + NET % "r",
    ("rule long[c](z) = let yyyyyyyyyyyyyyyyyyyyyyyyy = z >> bn >> relu >> bconv[c] >> bn >> relu >> "
     "bconv[c] >> bn in let w = yyyyyyyyyyyyyyyyyyyyyyyyy >> conv[c] in join(w, yyyyyyyyyyyyyyyyyyyyyyyyy "
     ">> conv[c] >> bn >> relu >> conv[c] >> bn >> relu >> conv[c] >> bn)\n" + NET % "long[8]"),
    "def f(n) = if n <= 1 then [1, 2] else [let a = n in a, f(n - 1)[0]]\n" + NET % "conv[f(3)[1]]",
]


@pytest.mark.parametrize("text", FMT_CASES)
def test_fmt_round_trips_and_is_idempotent(text):
    out = F.format_source(text)
    assert F.normalize(S.parse(out)) == F.normalize(S.parse(text))
    assert F.format_source(out) == out
    assert F.comments_of(out) == F.comments_of(text)
    assert F.normalize(S.parse(F.format_module(S.parse(text)))) == F.normalize(S.parse(text))


def test_fmt_breaks_a_long_let_after_in():
    out = F.format_source(FMT_CASES[3])
    lines = out.splitlines()
    assert any(l.strip().startswith("let yyyy") and l.endswith(" in") for l in lines)
    assert all(len(l) <= F.WIDTH for l in lines)


def test_keywords_def_let_in_are_whole_words(tmp_path):
    text = "param define = 2\nparam lettuce = 3\nparam inner = 4\n" + NET % "conv[define * lettuce * inner, k=1]"
    assert conv_widths(compile_text(tmp_path, text)) == [24]
