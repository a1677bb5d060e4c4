"""Hostile and careless specs (issue #12): bounded work, no tracebacks, messages that name the
real problem. Every case is refused with a `FractalcError` carrying a position (or a clean size
error), or accepted where the program is valid; the CLI exits 1 without a traceback.

A hang would be a failure too: `no_hang` turns one into an exception after a generous 30 s
(a safety net, not a timing assertion; every case here takes milliseconds to a second).
"""
from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from fractalc import limits
from fractalc.compiler import compile_spec
from fractalc.errors import FractalcError, ShapeError, SizeGuardError, SpecError, SpecSyntaxError
from fractalc.lang.formatter import format_source
from fractalc.lang.syntax import parse
from conftest import no_hang

NET = "network n {\n  input [3, 8, 8]\n  body = %s\n}\n"



def compile_text(tmp_path: Path, text: str, name: str = "s.fr", **kw):
    p = tmp_path / name
    p.write_text(text)
    with no_hang():
        return compile_spec(p, **kw)


def refused(tmp_path, text, exc=FractalcError, **kw) -> FractalcError:
    with pytest.raises(exc) as info:
        compile_text(tmp_path, text, **kw)
    return info.value


# ----------------------------------------------------------------------------- bounded work

WORK = [
    # (name, spec, line, fragment): each would run for hours or forever without the step budget
    ("identity_repeat", NET % "identity * 1000000000", 3, "a repetition of 1,000,000,000"),
    ("rule_returning_input", "rule f(z) = z\n" + NET % "f * 1000000000", 4,
     "a repetition of 1,000,000,000"),
    ("double_recursion_to_input",
     "rule f[n](z) = if n == 0 then z else f[n - 1](f[n - 1](z))\n" + NET % "f[40]", 1, "rule 'f'"),
    ("repeat_in_a_repeat", NET % "(identity * 100000) * 100000", 3, "a repetition of 100,000"),
    ("i_bound_repeat", "rule f[i](z) = if i < 0 then bn(z) else z\n" + NET % "f * 2000000", 4,
     "a repetition of 2,000,000"),
]


@pytest.mark.parametrize("name,text,line,fragment", WORK, ids=[w[0] for w in WORK])
def test_work_without_nodes_is_refused_by_the_step_budget(tmp_path, name, text, line, fragment):
    err = refused(tmp_path, text, SizeGuardError)
    assert "steps" in err.message and fragment in err.message
    assert err.loc is not None and err.loc.line == line


def test_step_budget_follows_max_nodes(tmp_path):
    # each repetition evaluates a rule taking the repetition index (no shortcut): ~5 steps
    text = "rule f[i](z) = if i < 0 then bn(z) else z\n" + NET % "f * 30000"
    err = refused(tmp_path, text, SizeGuardError, max_nodes=100)
    assert f"{limits.max_steps(100):,} steps" in err.message
    g = compile_text(tmp_path, text, max_nodes=100_000).graph  # 1,000,000 steps: enough
    assert len(g) == 2  # input and output: every repetition returned its input


def test_guard_estimate_does_not_iterate_repeat_counts(tmp_path):
    """The counting pass multiplies a fixed point's cost: 300,000 repetitions of a 3-node block
    are refused by the node limit after one iteration, with the whole predicted count."""
    err = refused(tmp_path, NET % "(bn >> relu >> relu) * 300000", SizeGuardError)
    assert "more than 100,000 nodes (at least 900,001 counted" in err.message


def test_repeat_of_identity_within_budget_builds_one_node(tmp_path):
    g = compile_text(tmp_path, NET % "(identity * 50000) >> bn").graph
    assert [n for n in g.order() if n not in ("input", "output")] == ["body.bn1"]


def test_only_a_small_graph_is_built_without_counting_it_first(tmp_path, monkeypatch):
    """A graph over `expand.SMALL_GRAPH_NODES` nodes is counted before it is built (the
    counting pass runs); a small one is built at once. Both give the closed-form count."""
    from fractalc.lang import expand
    calls = []
    counting = expand.estimate_nodes
    monkeypatch.setattr(expand, "estimate_nodes", lambda *a, **k: calls.append(1) or counting(*a, **k))
    blocks = expand.SMALL_GRAPH_NODES // 2 + 10  # two nodes a block: just over the small size
    assert len(compile_text(tmp_path, NET % f"(bn >> relu) * {blocks}").graph) == 2 * blocks + 2
    assert calls == [1]
    assert len(compile_text(tmp_path, NET % "(bn >> relu) * 100").graph) == 202 and calls == [1]


@pytest.mark.parametrize("name", ["rf_c3d4_resnet21", "drf_c3d4_densenet97", "fractalnet_cifar"])
def test_a_graph_is_the_same_built_at_once_or_after_counting(name, monkeypatch):
    from fractalc.ir.printer import format_ir
    from fractalc.lang import expand
    spec = Path(__file__).resolve().parent.parent / "specs" / f"{name}.fr"
    at_once = format_ir(compile_spec(spec).graph)
    monkeypatch.setattr(expand, "SMALL_GRAPH_NODES", 1)  # every graph counted first
    assert format_ir(compile_spec(spec).graph) == at_once


def test_set_a_huge_block_count_is_refused(tmp_path):
    p = tmp_path / "b.fr"
    p.write_text("param blocks = [1, 1]\n" + NET % "(bn >> relu) * blocks[1]")
    with no_hang(), pytest.raises(SizeGuardError, match="1,000,000,000"):
        compile_spec(p, {"blocks": "[6, 1000000000]"})


@pytest.mark.parametrize("expr,fragment", [
    ("pow(10, 100000000)", "pow() result is too large"),
    ("pow(0, -1)", "divides by zero"),
    ("pow(-8, 0.5)", "not a real number"),
    ("pow(1.5, 100000)", "too large"),
    ("1e300 * 1e300", "not a finite number"),
    ("9223372036854775807 * 2", "too large"),
    ("round(1e300)", "too large"),
    ("int(1e300) * 1", "too large"),
    ("floor(1e300)", "too large"),
])
def test_numbers_stay_64_bit_and_finite(tmp_path, expr, fragment):
    err = refused(tmp_path, f"param w = {expr}\n" + NET % "bn", SpecError)
    assert fragment in err.message
    assert err.loc.line == 1


@pytest.mark.parametrize("literal,fragment", [
    ("100000000000000000000", "too large (integers are 64-bit"),
    ("9" * 5000, "5000 characters"),  # over Python's int-conversion limit of 4300 digits
    ("1e400", "too large to be a finite float"),
])
def test_huge_literals_are_positioned_errors(tmp_path, literal, fragment):
    err = refused(tmp_path, f"param w = int({literal})\n" + NET % "bn", SpecSyntaxError)
    assert fragment in err.message
    assert (err.loc.line, err.loc.column) == (1, 15)


def test_largest_64_bit_integer_is_accepted(tmp_path):
    c = compile_text(tmp_path, f"param w = {2**63 - 1}\n" + NET % "bn")
    assert c.params["w"] == 2**63 - 1


def test_big_spec_file_is_refused_before_parsing(tmp_path):
    body = "".join(f"param p{i} = {i}\n" for i in range(40_000))  # ~600 KB
    err = refused(tmp_path, body + NET % "bn", FractalcError)
    assert f"{limits.MAX_SPEC_BYTES:,}" in err.message


def test_big_spec_text_is_refused_by_the_parser():
    with pytest.raises(SpecSyntaxError, match="over the limit"):
        parse("#" * (limits.MAX_SPEC_BYTES + 1) + "\n" + NET % "bn", "big.fr")


# ----------------------------------------------------------------------------- no tracebacks

DEEP = limits.MAX_EXPR_DEPTH


@pytest.mark.parametrize("name,text", [
    ("nested_lists", "param x = " + "[" * 10_000 + "]" * 10_000 + "\n" + NET % "bn"),
    ("unary_minus", "param x = " + "-" * 10_000 + "1\n" + NET % "bn"),
    ("sum_20000", "param x = " + " + ".join(["1"] * 20_000) + "\n" + NET % "bn"),
    ("pipe_20000", NET % " >> ".join(["relu"] * 20_000)),
    ("not_chain", "param x = " + "not " * 10_000 + "true\n" + NET % "bn"),
])
def test_deep_nesting_is_a_positioned_error(tmp_path, name, text):
    err = refused(tmp_path, text, SpecSyntaxError)
    assert "nested too deeply" in err.message
    # at the start of the whole expression, shown in a window of the 80,000-character line
    assert (err.loc.line, err.loc.column) == ((3, 10) if name.startswith("pipe") else (1, 11))
    shown = err.format().splitlines()
    assert len(shown[1]) < 120 and shown[2].index("^") == shown[1].index(text.splitlines()[err.loc.line - 1][err.loc.column - 1:][:6])
    with pytest.raises(SpecSyntaxError, match="nested too deeply"):
        format_source(text, "deep.fr")


def test_parentheses_add_no_nesting(tmp_path):
    c = compile_text(tmp_path, "param x = " + "(" * 10_000 + "1" + ")" * 10_000 + "\n" + NET % "bn")
    assert c.params["x"] == 1


def test_nesting_up_to_the_limit_works_everywhere(tmp_path):
    """Just under the limit, every recursive stage (transformer, checks, evaluator, formatter,
    graph builder) copes: no RecursionError."""
    n = DEEP - 10
    text = ("param x = " + "[" * n + "]" * n + "\nparam y = " + " + ".join(["1"] * n)
            + "\nparam z = " + "-" * n + "1\n" + NET % " >> ".join(["relu"] * n))
    c = compile_text(tmp_path, text)
    assert c.params["y"] == n and c.params["z"] == (-1) ** n
    assert len(c.graph) == n + 2
    assert parse(format_source(text, "deep.fr"), "deep2.fr")  # formats and re-parses


@pytest.mark.parametrize("label_param,fragment", [
    ('"a.b"', 'a string ("a.b")'),
    ('""', 'a string ("")'),
    ("-1", "an integer (-1)"),
])
def test_interpolated_scope_labels_must_be_identifier_characters(tmp_path, label_param, fragment):
    text = f"param s = {label_param}\nrule f(z) = bn(z) @ \"x{{s}}\"\n" + NET % "f"
    err = refused(tmp_path, text, SpecError)
    assert "scope label part" in err.message and fragment in err.message
    assert (err.loc.line, err.loc.column) == (2, 24)


def test_empty_scope_label_is_named(tmp_path):
    err = refused(tmp_path, 'rule f(z) = bn(z) @ ""\n' + NET % "f", SpecSyntaxError)
    assert "cannot be empty" in err.message and (err.loc.line, err.loc.column) == (1, 21)


@pytest.mark.parametrize("dims,fragment", [
    ("[8, 100000000000000000000, 16]", "too large"),
    ("[8, pow(10, 12), 16]", "over the limit of 2,147,483,647"),
    ("[100000, 100000, 1000]", "elements per sample"),
])
def test_huge_input_shapes_are_refused(tmp_path, dims, fragment):
    err = refused(tmp_path, f"network n {{\n  input {dims}\n  body = bn\n}}\n")
    assert fragment in err.message and err.loc is not None and err.loc.line == 2


def test_huge_width_is_refused_by_shape_or_by_the_backend_with_its_byte_count(tmp_path):
    err = refused(tmp_path, NET % "conv[100000000]", ShapeError)
    assert "6,400,000,000 elements" in err.message
    # 1x1 spatial: the shapes are fine, the weights are not
    text = "network n {\n  input [3, 1, 1]\n  body = conv[100000000] >> conv[16]\n}\n"
    c = compile_text(tmp_path, text)
    from fractalc.backends.torch import from_graph
    with pytest.raises(SizeGuardError) as info:
        from_graph(c.graph)
    need = 4 * (3 * 9 * 100_000_000 + 100_000_000 * 16 * 9)
    assert f"{need:,} bytes" in info.value.message
    # the same for the emitted source (its module would fail in torch's allocator) and ONNX
    from fractalc.backends.onnx.emit import build
    from fractalc.backends.torch import emit_source
    with pytest.raises(SizeGuardError, match=f"{need:,} bytes"):
        emit_source(c, None, {})
    with pytest.raises(SizeGuardError, match=f"{need:,} bytes"):
        build(c, {"seed": 0}, "onnx")


# ----------------------------------------------------------------------------- messages

def test_keywords_are_whole_words(tmp_path):
    err = refused(tmp_path, "paramw = 8\n" + NET % "bn", SpecSyntaxError)
    assert "unexpected name 'paramw'" in err.message and "'param'" in err.message
    # names that start with a keyword are names
    text = ("param order = 1\nparam iffy = 2\nparam notes = 3\nparam truth = 4\n"
            "rule ruler(z) = bn(z)\nnetwork networks {\n  input [3, 8, 8]\n"
            "  inputs = ruler\n}\n")
    c = compile_text(tmp_path, text)
    assert c.params == {"order": 1, "iffy": 2, "notes": 3, "truth": 4}


def test_fmt_refuses_glued_keyword_without_crashing():
    with pytest.raises(SpecSyntaxError, match="unexpected name 'paramw'"):
        format_source("paramw = 8\n" + NET % "bn", "p.fr")


def test_terminating_mutual_recursion_is_accepted(tmp_path):
    text = ("rule f[n](z) = g[n - 1](z)\nrule g[n](z) = if n <= 0 then z else f[n](bn(z))\n"
            + NET % "f[3]")
    g = compile_text(tmp_path, text).graph
    assert sum(1 for n in g.order() if n.endswith(("bn1", "bn2", "bn3"))) == 2  # f3->g2->f2->g1->f1->g0


def test_mutual_recursion_without_any_base_case_is_refused(tmp_path):
    text = "rule f[n](z) = g[n - 1](z)\nrule g[n](z) = f[n](bn(z))\n" + NET % "f[3]"
    err = refused(tmp_path, text, SpecError)
    assert "without a base case" in err.message and (err.loc.line, err.loc.column) == (1, 6)


def test_unterminated_string(tmp_path):
    err = refused(tmp_path, 'param s = "abc\n' + NET % "bn", SpecSyntaxError)
    assert "unterminated string" in err.message and (err.loc.line, err.loc.column) == (1, 11)


def test_byte_order_mark_at_start_is_skipped_and_positions_stay_right(tmp_path):
    p = tmp_path / "bom.fr"
    p.write_bytes(b"\xef\xbb\xbf" + (NET % "bn >> nope").encode())
    with pytest.raises(SpecError) as info:
        compile_spec(p)
    assert (info.value.loc.line, info.value.loc.column) == (3, 16)
    assert "unknown name 'nope'" in info.value.message
    assert format_source("\ufeff" + NET % "bn", "bom.fr") == format_source(NET % "bn", "b.fr")


def test_byte_order_mark_inside_is_named(tmp_path):
    err = refused(tmp_path, NET % "bn \ufeff>> relu", SpecSyntaxError)
    assert "byte order mark" in err.message


def test_parameter_named_like_a_primitive(tmp_path):
    err = refused(tmp_path, "param bn = 3\n" + NET % "bn", SpecError)
    assert "name of the primitive 'bn'" in err.message and (err.loc.line, err.loc.column) == (1, 7)


def test_parameter_named_like_a_rule(tmp_path):
    err = refused(tmp_path, "param f = 3\nrule f(z) = z\n" + NET % "f", SpecError)
    assert "name of the rule" in err.message and err.loc.line == 1


def test_parameter_hiding_a_builtin_says_so_when_called(tmp_path):
    text = "param width = 8\nrule f(z) = conv[width(z)](z)\n" + NET % "f"
    err = refused(tmp_path, text, SpecError)
    assert "the parameter 'width' hides the builtin width()" in err.message


# ----------------------------------------------------------------------------- the CLI

@pytest.mark.parametrize("command,text", [
    ("check", NET % "identity * 1000000000"),
    ("check", "param w = pow(0, -1)\n" + NET % "bn"),
    ("check", "param x = " + "[" * 10_000 + "]" * 10_000 + "\n" + NET % "bn"),
    ("fmt", "param x = " + "[" * 10_000 + "]" * 10_000 + "\n" + NET % "bn"),
    ("fmt", "param w = int(1e400)\n" + NET % "bn"),
    ("fmt", "paramw = 8\n" + NET % "bn"),
])
def test_cli_exits_1_without_traceback(tmp_path, command, text):
    p = tmp_path / "s.fr"
    p.write_text(text)
    r = subprocess.run([sys.executable, "-m", "fractalc", command, str(p)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    assert r.stderr.startswith(f"{p}:")


# ----------------------------------------------------------------------------- fuzz

SPECS = Path(__file__).resolve().parent.parent / "specs"
JUNK = ["[", "]", "(", ")", "{", "}", ",", "=", "*", ">>", "@", '"', "#", "\n", "if", "then",
        "else", "1000000000", "-", "0", "param", "rule", "\ufeff", "\f", "\t", ".", "9" * 30,
        "1e400", "pow(10, 99999)", "identity * ", "z", "join(", "@ \"{c}\""]


def _mutants(n: int, seed: int):
    rnd = random.Random(seed)
    sources = [p.read_text() for p in sorted(SPECS.glob("*.fr"))]
    for _ in range(n):
        text = rnd.choice(sources)
        for _ in range(rnd.randint(1, 4)):
            i = rnd.randrange(len(text) + 1)
            j = min(len(text), i + rnd.randint(0, 12))
            op = rnd.random()
            if op < 0.4:
                text = text[:i] + rnd.choice(JUNK) + text[j:]
            elif op < 0.7:
                text = text[:i] + text[j:]
            else:
                text = text[:i] + text[i:j] * rnd.randint(2, 50) + text[j:]
        yield text


def test_fuzz_front_end_and_formatter_raise_only_fractalc_errors(tmp_path):
    """Mutated shipped specs: parse, format (and re-parse the output), compile with a small node
    limit. Anything but a `FractalcError` (or success) is a bug; a hang trips `no_hang`."""
    (tmp_path / "lib").symlink_to(SPECS / "lib")
    outcomes = {"ok": 0, "refused": 0}
    for k, text in enumerate(_mutants(300, seed=12)):
        p = tmp_path / f"m{k}.fr"
        p.write_text(text)
        with no_hang():
            try:
                formatted = format_source(text, str(p))
                parse(formatted, "formatted.fr")
                compile_spec(p, max_nodes=2_000)
                outcomes["ok"] += 1
            except FractalcError as exc:
                exc.format()  # rendering the message must not fail either
                outcomes["refused"] += 1
    assert outcomes["ok"] > 0 and outcomes["refused"] > 0, outcomes


def test_long_lines_are_shown_as_a_window_around_the_caret(tmp_path):
    text = "param x = " + " + ".join(["1"] * 100) + " + nope + " + " + ".join(["2"] * 100) + "\n" + NET % "bn"
    err = refused(tmp_path, text, SpecError)
    head, line, caret = err.format().splitlines()[:3]
    assert line.startswith("    ...") and line.endswith("...") and len(line) < 120
    assert line[caret.index("^"):].startswith("nope")


def test_error_headline_prints_no_control_characters(tmp_path):
    p = tmp_path / "ev\x1b[31mil.fr"
    p.write_text(NET % "nope")
    with pytest.raises(SpecError) as info:
        compile_spec(p)
    head = info.value.format().splitlines()[0]
    assert "\x1b" not in head and "ev?[31mil.fr:3:10: unknown name 'nope'" in head
