"""`fractalc fmt`: the canonical printer round-trips the AST, is idempotent and keeps comments.

The oracle is the parser itself: parse(print(x)) must equal x (locations ignored, literal types
compared), for every shipped spec, for random expressions and modules (hypothesis), and for
random comment placements.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from fractalc.lang import formatter as F
from fractalc.lang import syntax as S
from fractalc.cli import cli, main
from fractalc.errors import Loc

from conftest import SPECS

ALL = sorted(SPECS.glob("*.fr")) + sorted((SPECS / "lib").glob("*.fr"))
L = Loc("<gen>", 1, 1)


def run(*args):
    return CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)


@pytest.mark.parametrize("path", ALL, ids=lambda p: str(p.relative_to(SPECS)))
def test_shipped_specs_round_trip(path: Path):
    text = path.read_text()
    out = F.format_source(text, str(path))
    assert F.normalize(S.parse(out, "out")) == F.normalize(S.parse(text, str(path)))
    assert F.comments_of(out) == F.comments_of(text)
    assert F.format_source(out, "out") == out  # idempotent
    assert all(len(line) <= F.WIDTH or "#" in line for line in out.splitlines())


def test_layout_of_a_messy_spec():
    text = ('# head\nimport   "lib/sofar.fr"\nparam  a=3# why three\nparam bb = [1,2 ,3]  # list\n'
            'rule r[c,s=1](z)=z>>bconv[c,s=s]>>bn\n'
            'network n {input[8,4,4]\n  # the body\n x=r[a]\n  long_name = r[ 2*a ] @ "col{a+1}"\n}\n')
    assert F.format_source(text) == (
        '# head\nimport "lib/sofar.fr"\n'
        'param a = 3           # why three\nparam bb = [1, 2, 3]  # list\n'
        'rule r[c, s=1](z) = z >> bconv[c, s=s] >> bn\n'
        'network n {\n    input [8, 4, 4]\n    # the body\n    x         = r[a]\n'
        '    long_name = r[2 * a] @ "col{a + 1}"\n}\n')


def test_long_expressions_break_and_parenthesise():
    e = S.parse_expr("if a then (if b then c else d) else join(f(x), g(x)) >> (h >> k) - -1")
    assert F.expr_text(e) == "if a then (if b then c else d) else join(f(x), g(x)) >> (h >> k) - -1"
    long = S.parse_expr("join(" + ", ".join(f"branch_{i}[c, k=3](zzzzzz)" for i in range(6)) + ")")
    lines = F.render_expr(long, 10)
    assert len(lines) == 6 and all(len(l) <= F.WIDTH for l in lines)
    assert lines[1].startswith(" " * 15 + "branch_1")  # aligned after "join("
    assert F.normalize(S.parse_expr("\n".join(lines))) == F.normalize(long)


def test_comments_inside_an_expression_move_before_the_item():
    text = "rule r(z) =\n    # inner\n    z >> bn  # tail\nnetwork n {\n    input [1, 2, 2]\n    s = r  # sec\n}\n"
    out = F.format_source(text)
    assert out.splitlines()[:2] == ["# inner", "rule r(z) = z >> bn  # tail"]
    assert F.comments_of(out) == ["# inner", "# tail", "# sec"]


def test_blank_lines_are_kept_but_collapsed():
    text = "# a\n\n\n\nparam x = 1\nparam y = 2\n\n\nparam z = 3\n\n# end\n"
    assert F.format_source(text) == "# a\n\nparam x = 1\nparam y = 2\n\nparam z = 3\n\n# end\n"


# ----------------------------------------------------------------------------- hypothesis

NAMES = st.sampled_from(["a", "b", "width", "C", "z", "f_1", "Stage2", "_x"])
LITS = st.one_of(
    st.integers(0, 10**6).map(lambda v: S.Lit(v, L)),
    st.floats(0, 1e6, allow_nan=False, allow_infinity=False).map(lambda v: S.Lit(v, L)),
    st.booleans().map(lambda v: S.Lit(v, L)),
    st.text("abc-_ xyz", max_size=6).map(lambda v: S.Lit(v, L)),
)
ATOMS = st.one_of(NAMES.map(lambda n: S.Var(n, L)), LITS)
OPS = [">>", "or", "and", "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "//", "%"]


def _args(kids):
    return st.lists(st.tuples(st.one_of(st.none(), NAMES), kids), max_size=3).map(
        lambda xs: tuple(S.Arg(n, v, L) for n, v in xs))


def _label(kids):
    part = st.one_of(st.sampled_from(["col", "x_1", "B"]), kids)

    def merge(parts):  # the parser never yields two adjacent text parts
        out = []
        for p in parts:
            if out and isinstance(p, str) and isinstance(out[-1], str):
                out[-1] += p
            else:
                out.append(p)
        return tuple(out)

    return st.lists(part, min_size=1, max_size=3).map(merge)


def _exprs(max_leaves: int):
    return st.recursive(ATOMS, _compound, max_leaves=max_leaves)


def _compound(kids):
    return st.one_of(
        st.builds(lambda op, l, r: S.BinOp(op, l, r, L), st.sampled_from(OPS), kids, kids),
        st.builds(lambda op, x: S.Unary(op, x, L), st.sampled_from(["-", "not"]), kids),
        st.builds(lambda c, t, o: S.If(c, t, o, L), kids, kids, kids),
        st.builds(lambda xs: S.ListLit(tuple(xs), L), st.lists(kids, max_size=3)),
        st.builds(lambda t, a: S.Index(t, a, L), kids, _args(kids)),
        st.builds(lambda t, a: S.Call(t, a, L), kids, _args(kids)),
        st.builds(lambda e, lab: S.Scoped(e, lab, L), kids, _label(kids)),
    )


def _no_string_in_labels(e, in_label=False) -> bool:
    if isinstance(e, S.Lit):
        return not (in_label and isinstance(e.value, str))
    if isinstance(e, S.Scoped):
        if in_label:  # a label inside a label would need quotes inside quotes
            return False
        return _no_string_in_labels(e.expr, in_label) and all(
            isinstance(p, str) or _no_string_in_labels(p, True) for p in e.label)
    return all(_no_string_in_labels(c, in_label) for c in S.children(e))


# A scope label is one string token: no string literal (or inner label) can appear inside it.
GOOD_EXPRS = _exprs(14).filter(_no_string_in_labels)
SMALL_EXPRS = _exprs(4).filter(_no_string_in_labels)  # keeps random modules quick


@settings(max_examples=300, deadline=None)
@given(GOOD_EXPRS, st.sampled_from([24, 60, 100]))
def test_random_expressions_round_trip(e, width):
    old = F.WIDTH
    F.WIDTH = width  # narrow widths exercise every line-breaking rule
    try:
        lines = F.render_expr(e, 4)
    finally:
        F.WIDTH = old
    assert F.normalize(S.parse_expr("\n".join(lines))) == F.normalize(e)
    assert F.normalize(S.parse_expr(F.expr_text(e))) == F.normalize(e)


MODULES = st.builds(
    lambda imps, prms, rules, nets: S.Module("<gen>", tuple(imps), tuple(prms), tuple(rules), tuple(nets)),
    st.lists(st.sampled_from(["lib/sofar.fr", "a/b.fr"]).map(lambda p: S.Import(p, L)), max_size=2),
    st.lists(st.builds(lambda n, d, ch: S.Param(n, d, ch, L), NAMES, SMALL_EXPRS,
                       st.one_of(st.none(), st.lists(SMALL_EXPRS, min_size=1, max_size=3).map(tuple))),
             max_size=3),
    st.lists(st.builds(
        lambda n, ps, ts, body: S.Rule(n, tuple(ps), tuple(ts), body, L), NAMES,
        st.lists(st.builds(lambda n, d: S.ParamDecl(n, d, L), NAMES, st.one_of(st.none(), SMALL_EXPRS)),
                 max_size=3),
        st.lists(NAMES, min_size=1, max_size=2), SMALL_EXPRS), max_size=3),
    st.lists(st.builds(
        lambda n, inp, secs: S.Network(n, tuple(inp), tuple(secs), L), NAMES,
        st.lists(SMALL_EXPRS, min_size=3, max_size=3),
        st.lists(st.builds(lambda n, e: S.Section(n, e, L), NAMES, SMALL_EXPRS), min_size=1, max_size=3)),
        max_size=2),
)


@settings(max_examples=100, deadline=None)
@given(MODULES)
def test_random_modules_round_trip(m):
    text = F.format_module(m)
    assert F.normalize(S.parse(text)) == F.normalize(m)
    assert F.format_source(text) == text


@settings(max_examples=80, deadline=None)
@given(MODULES, st.lists(st.tuples(st.integers(0, 200), st.booleans()), max_size=8))
def test_random_comments_are_kept_in_order(m, spots):
    lines = F.format_module(m).splitlines()
    if not lines:
        return
    for k, (at, trailing) in enumerate(spots):
        i = at % len(lines)
        if trailing and "#" not in lines[i]:
            lines[i] += f"  # t{k}"
        elif not trailing:
            lines.insert(i, f"# c{k}")
    text = "\n".join(lines) + "\n"
    out = F.format_source(text)
    assert F.normalize(S.parse(out)) == F.normalize(m)
    assert F.comments_of(out) == F.comments_of(text)
    assert F.format_source(out) == out


# ----------------------------------------------------------------------------- CLI


def test_cli_fmt_check_and_rewrite(tmp_path):
    messy = tmp_path / "m.fr"
    messy.write_text('import "lib/x.fr"  # keep me\nparam w=3\nnetwork n {input [1,2,2]\ns=conv[w]}\n')
    tidy = tmp_path / "t.fr"
    tidy.write_text(F.format_source(messy.read_text()))
    before = messy.read_text()
    r = run("fmt", "--check", tmp_path)
    assert r.exit_code == 1 and f"would reformat {messy}" in r.output and str(tidy) not in r.output
    assert messy.read_text() == before  # --check changes nothing
    r = run("fmt", messy, tidy)
    assert r.exit_code == 0 and f"reformatted {messy}" in r.output
    assert messy.read_text() == tidy.read_text() and "# keep me" in messy.read_text()
    assert run("fmt", "--check", messy, tidy).exit_code == 0


def test_check_exit_status_through_main(tmp_path, capsys):
    f = tmp_path / "m.fr"
    f.write_text("param w=3\n")
    with pytest.raises(SystemExit) as exc:
        main(["fmt", "--check", str(f)])
    assert exc.value.code == 1 and f"would reformat {f}" in capsys.readouterr().out
    main(["fmt", str(f)])  # rewrites and returns normally (status 0)
    assert f.read_text() == "param w = 3\n"
    main(["fmt", "--check", str(f)])


def test_cli_fmt_reports_syntax_errors_with_location(tmp_path, capsys):
    bad = tmp_path / "bad.fr"
    bad.write_text("param x = \n")
    with pytest.raises(SystemExit) as exc:
        main(["fmt", str(bad)])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert f"{bad}:2:1" in err or f"{bad}:1:" in err
    assert bad.read_text() == "param x = \n"


def test_cli_fmt_check_over_the_shipped_specs_lists_only_changed_files():
    r = run("fmt", "--check", SPECS)
    changed = {ln.split("would reformat ", 1)[1] for ln in r.output.splitlines() if ln.startswith("would reformat")}
    expect = {str(p) for p in ALL if F.format_source(p.read_text(), str(p)) != p.read_text()}
    assert changed == expect
    assert r.exit_code == (1 if expect else 0)


def test_keywords_used_as_names_keep_their_comments():
    text = "# lead\nparam rule = 3\nnetwork n {\n input [1,2,2]\n param = conv[rule]  # c\n}\n"
    out = F.format_source(text)
    assert out == "# lead\nparam rule = 3\nnetwork n {\n    input [1, 2, 2]\n    param = conv[rule]  # c\n}\n"
    assert F.normalize(S.parse(out)) == F.normalize(S.parse(text))
