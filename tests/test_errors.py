"""Bad specs: every one gets `file:line:col: message`, the line, a caret, exit 1, no traceback."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from fractalc.cli import main

NET = "network n {\n  input [8, 16, 16]\n  body = %s\n}\n"

# (name, spec text, expected line, expected column, message fragment)
BAD = [
    ("missing_paren", "rule f(z) = join(z, z\n" + NET % "f", 2, 1, "unexpected"),
    ("bad_character", "param w = 8 $\n" + NET % "relu", 1, 13, "unexpected character '$'"),
    ("missing_equals", "param w 8\n" + NET % "relu", 1, 9, "expected '='"),
    ("unknown_rule", NET % "resblock[8]", 3, 10, "unknown name 'resblock'"),
    ("unknown_name_suggest", "param width = 8\n" + NET % "conv[widht]", 4, 15, "did you mean 'width'"),
    ("unknown_in_rule", "rule f(z) = conv[8](y)\n" + NET % "f", 1, 21, "unknown name 'y'"),
    ("wrong_tensor_arity", "rule f(a, b) = a + b\nrule g(z) = f(z)\n" + NET % "g", 2, 13,
     "takes 2 tensor arguments"),
    ("too_many_params", "rule f[c](z) = conv[c](z)\n" + NET % "f[8, 3]", 4, 10, "takes at most 1 parameter"),
    ("unknown_keyword", NET % "conv[8, kernel=3]", 3, 18, "has no parameter 'kernel'"),
    ("missing_required", NET % "conv", 3, 10, "needs its parameter 'out'"),
    ("unknown_param_set", "param w = 8\n" + NET % "conv[w]", 0, 0, "unknown parameter"),
    ("join_channel_mismatch", "rule f(z) = join(conv[8](z), conv[4](z))\n" + NET % "f", 1, 13,
     "channel mismatch at join"),
    ("add_channel_mismatch", "rule f(z) = conv[16](z) + z\n" + NET % "f", 1, 25, "channel mismatch at add"),
    ("concat_spatial_mismatch", "rule f(z) = concat(z, conv[8, s=2](z))\n" + NET % "f", 1, 13,
     "spatial size mismatch at concat"),
    ("zero_channels", NET % "conv[0]", 3, 10, "output channels must be positive"),
    ("negative_channels", "param w = -4\n" + NET % "bconv[w]", 4, 10, "must be positive"),
    ("zero_input", "network n {\n  input [3, 0, 16]\n  body = relu\n}\n", 2, 13, "must be positive"),
    ("kernel_too_big", NET % "conv[8, k=33, p=0]", 3, 10, "empty"),
    ("zero_stride", NET % "conv[8, s=0]", 3, 10, "stride must be positive"),
    ("no_base_case", "rule f[C](z) = join(f[C - 1](z), z)\n" + NET % "f[3]", 1, 6, "without a base case"),
    ("mutual_no_base", "rule f(z) = g(z)\nrule g(z) = f(z)\n" + NET % "f", 1, 6, "without a base case"),
    ("never_reaches_base", "rule f[C](z) = if C == 0 then z else f[C + 1](z)\n" + NET % "f[1]", 1, 38,
     "nest deeper than"),
    ("explosion", "rule f[C](z) = if C == 1 then relu(z) else join(f[C-1](f[C-1](z)), relu(z))\n"
     + NET % "f[40]", 1, 49, "expansion refused"),
    ("repeat_explosion", NET % "relu * 1000000", 3, 15, "expansion refused"),
    ("duplicate_rule", "rule f(z) = z\nrule f(z) = relu(z)\n" + NET % "f", 2, 6, "defined twice"),
    ("duplicate_param", "param w = 1\nparam w = 2\n" + NET % "relu", 2, 7, "defined twice"),
    ("choices_violation", 'param d = "x" choices("a", "b")\n' + NET % "relu", 1, 7, "must be one of"),
    ("if_not_bool", "rule f(z) = if 3 then z else relu(z)\n" + NET % "f", 1, 16, "must be true or false"),
    ("section_not_function", NET % "3", 3, 10, "must be a function"),
    ("int_param_is_float", NET % "conv[8.5]", 3, 10, "must be an integer"),
    ("call_an_integer", "param w = 3\nrule f(z) = w(z)\n" + NET % "f", 2, 13, "cannot call"),
    ("rule_returns_int", "rule f(z) = 3\n" + NET % "f", 1, 13, "must produce a tensor"),
    ("division_by_zero", "param w = 8 // 0\n" + NET % "conv[w]", 1, 13, "division by zero"),
    ("missing_import", 'import "nope.fr"\n' + NET % "relu", 1, 1, "no such file"),
    ("no_network", "rule f(z) = z\n", 0, 0, "defines no network"),
    ("slice_out_of_range", NET % "slice[4, 12]", 3, 10, "out of range"),
    ("named_tensor_arg", "rule f(z) = conv[8](x=z)\n" + NET % "f", 1, 21, "cannot be named"),
    ("list_index_range", "param b = [1, 2]\n" + NET % "relu * b[5]", 4, 19, "out of range"),
    ("bad_pad_mode", NET % 'bconv[8, pad="two"]', 3, 10, "padding must be"),
    ("param_cycle", "param a = b\nparam b = a\n" + NET % "relu", 1, 7, "cycle"),
    ("builtin_as_rule_name", "rule conv(z) = z\n" + NET % "relu", 1, 6, "builtin primitive"),
    ("linear_then_conv", NET % "linear[10] >> conv[8]", 3, 21, "needs a CxHxW input"),
]

INTERNAL = re.compile(r"\b(NAME|INT|FLOAT|STRING|LSQB|RSQB|LPAR|RPAR|\$END|__ANON\w*|ADD_OP|MUL_OP|CMP)\b")


def test_there_are_at_least_25_bad_specs():
    assert len(BAD) >= 25
    assert len({b[0] for b in BAD}) == len(BAD)


def _run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code, capsys.readouterr().err


@pytest.mark.parametrize("name,text,line,col,fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_spec(tmp_path, capsys, name, text, line, col, fragment):
    path = tmp_path / f"{name}.fr"
    path.write_text(text)
    args = ["check", str(path)]
    if name == "unknown_param_set":
        args += ["--set", "widht=3"]
    code, err = _run(args, capsys)
    assert code == 1, err
    assert "Traceback" not in err
    assert fragment in err, err
    assert not INTERNAL.search(err), f"internal token name leaked: {err}"
    if line:
        first = err.splitlines()[0]
        assert first.startswith(f"{path}:{line}:{col}: "), err
        lines = err.splitlines()
        src = text.splitlines()[line - 1].expandtabs(1)
        assert lines[1] == "    " + src
        assert lines[2] == "    " + " " * (col - 1) + "^"


def test_size_guard_is_fast_for_any_columns(capsys):
    # c60 would be 2^60 nodes; a billion columns nests a billion calls: both refused at once.
    # (how fast: benchmarks/bench_guard.py; no wall-clock assertion in a unit test)
    for cols in ("60", "1000", "1000000000"):
        code, err = _run(["check", "specs/rf_c3d4.fr", "--set", f"columns={cols}"], capsys)
        assert code == 1 and "expansion refused" in err


def test_size_guard_limit_is_configurable(capsys):
    code, err = _run(["check", "specs/rf_c3d4.fr", "--max-nodes", "20"], capsys)
    assert code == 1 and "more than 20 nodes" in err
    main(["check", "specs/rf_c3d4.fr", "--max-nodes", "26"])  # 26 raw nodes: accepted
    assert capsys.readouterr().out.startswith("ok: rf_c3d4: 25 nodes (26 before collapsing joins)")


def test_bad_set_values(capsys):
    code, err = _run(["check", "specs/bireal_resnet18.fr", "--set", "dataset=mnist"], capsys)
    assert code == 1 and "must be one of" in err and "cifar100" in err
    code, err = _run(["check", "specs/bireal_resnet18.fr", "--set", "width"], capsys)
    assert code == 1 and "NAME=VALUE" in err
    code, err = _run(["check", "specs/bireal_resnet18.fr", "--set", "width=(3"], capsys)
    assert code == 1 and "--set width" in err
    code, err = _run(["check", "specs/bireal_resnet18.fr", "--set", 'width="wide"'], capsys)
    assert code == 1 and "takes a number" in err


def test_missing_file_is_clean(capsys):
    code, err = _run(["check", "does/not/exist.fr"], capsys)
    assert code == 1 and "no such file" in err and "Traceback" not in err


def test_subprocess_no_traceback(tmp_path):
    path = tmp_path / "bad.fr"
    path.write_text(BAD[0][1])
    r = subprocess.run([sys.executable, "-m", "fractalc", "check", str(path)], capture_output=True, text=True)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and f"{path}:2:1:" in r.stderr
