"""Clean streams: every command's machine output (JSON, `-` outputs) is standard output alone,
parsed here with json.loads; progress, labels and notes go to standard error. Also `--json` on
check and params, `fmt --diff`, and generate's progress bar (stderr, only on a terminal,
`--quiet` turns it off).

Reference: `json.loads` of the whole stdout (one object, nothing before or after), the
commands' own table output for the same values, and difflib for `fmt --diff`."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from fractalc.cli import cli

from conftest import SPECS

RF = str(SPECS / "rf_c3d4.fr")
SMALL = ["--set", "size=8", "--set", "channels=8"]


def run(*args, code=0):
    """(stdout, stderr) of `fractalc ARGS` in-process, stdout and stderr kept apart."""
    r = CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)
    assert r.exit_code == code, r.stderr
    return r.stdout, r.stderr


def one_json(stdout: str):
    doc = json.loads(stdout)  # the whole of stdout: a stray label or progress line fails here
    assert isinstance(doc, (dict, list))
    return doc


def test_check_json():
    out, _ = run("check", RF, "--json", *SMALL)
    doc = one_json(out)
    text, _ = run("check", RF, *SMALL)
    assert doc["ok"] and doc["network"] == "rf_c3d4" and doc["output"] == [8, 8, 8]
    assert f"{doc['nodes']} nodes ({doc['raw_nodes']} before collapsing joins), depth {doc['depth']}" in text


def test_params_json():
    out, _ = run("params", SPECS / "binary_densenet28.fr", "--json", "--set", "dataset=cifar10")
    doc = one_json(out)
    rows = {r["name"]: r for r in doc["params"]}
    assert rows["dataset"]["value"] == "cifar10" and rows["dataset"]["set"] is True
    assert rows["dataset"]["choices"] == ["imagenet", "cifar10", "cifar100"]
    assert rows["size"]["value"] == 32 and rows["size"]["set"] is False  # follows dataset
    table, _ = run("params", SPECS / "binary_densenet28.fr", "--set", "dataset=cifar10")
    assert [line.split()[0] for line in table.splitlines()] == list(rows)


def test_stats_scale_compile_json():
    assert one_json(run("stats", RF, "--json", *SMALL)[0])["network"] == "rf_c3d4"
    doc = one_json(run("scale", SPECS / "rf_c4d8_resnet37.fr", "--budget-of", SPECS / "bireal_resnet18.fr",
                       "--json")[0])
    assert doc["value"] == 41
    ir = one_json(run("compile", RF, "-t", "json", *SMALL)[0])
    assert ir


def test_fmt_json_and_diff(tmp_path):
    import difflib
    good = (SPECS / "rf_c3d4.fr").read_text()
    bad = good.replace("param columns = 3", "param columns   =  3")
    assert bad != good
    f = tmp_path / "x.fr"
    f.write_text(bad)
    out, err = run("fmt", "--diff", f, code=1)
    want = "".join(difflib.unified_diff(bad.splitlines(True), good.splitlines(True),
                                        fromfile=f"a/{f}", tofile=f"b/{f}"))
    assert out == want and "-param columns   =  3\n+param columns = 3\n" in out
    assert "1 file would be reformatted" in err and f.read_text() == bad  # nothing written
    doc = one_json(run("fmt", "--diff", "--json", f, code=1)[0])
    assert doc == {"mode": "diff", "changed": [str(f)], "unchanged": 0, "diffs": {str(f): want}}
    doc = one_json(run("fmt", "--check", "--json", f, SPECS / "rf_c3d4.fr", code=1)[0])
    assert doc["changed"] == [str(f)] and doc["unchanged"] == 1
    doc = one_json(run("fmt", "--json", f)[0])
    assert doc["mode"] == "write" and doc["changed"] == [str(f)] and f.read_text() == good
    out, _ = run("fmt", "--diff", f)  # formatted now: no diff, exit 0
    assert out == ""


SPACE = f"""
name = "tiny"
[[space]]
family = ["RF"]
columns = [2]
blocks = [[1, 1, 1, 1]]
dataset = ["cifar10"]
budget = {{ baseline = "bireal_resnet18" }}
[[space]]
family = ["F"]
columns = [4]
blocks = [[1, 1, 1, 1]]
budget = {{ baseline = "rf_c3d4" }}
"""


def test_generate_dash_outputs_and_progress(tmp_path):
    space = tmp_path / "s.toml"
    space.write_text(SPACE)
    out, err = run("generate", space, "-o", tmp_path / "a", "--json", "-")
    doc = one_json(out)
    assert [v["name"] for v in doc["variants"]] == ["rf_c2d2_resnet13_cifar10"]
    assert "wrote" in err and "skipped f_c4d8_resnet37" in err
    out, err = run("generate", space, "-o", tmp_path / "b", "--csv", "-", "--quiet")
    assert out.splitlines()[0].startswith("name,") and len(out.splitlines()) == 2
    assert "wrote" not in err and "skipped f_c4d8_resnet37" in err  # --quiet keeps the skips
    from fractalc.errors import FractalcError
    with pytest.raises(FractalcError, match="only one of --csv and --json"):
        run("generate", space, "-o", tmp_path / "c", "--csv", "-", "--json", "-")


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("tty,quiet", [(True, False), (False, False), (True, True)])
def test_generate_progress_bar_only_on_a_terminal(tty, quiet, monkeypatch):
    from fractalc.cli.generate import _Progress
    err = _Terminal() if tty else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with _Progress(enabled=not quiet) as bar:
        for i, name in enumerate(["a", "b", "c"]):
            bar.update(i, 3, name)
            bar.write(f"wrote {name}")
        bar.update(3, 3, "")
    text = err.getvalue()
    assert text.count("wrote") == 3
    assert ("3/3" in text) == (tty and not quiet), text  # the bar: on a terminal, not --quiet


def test_train_json_alone_on_stdout_off_a_terminal(tmp_path):
    """Off a terminal (a pipe), `train` used to print its epoch labels on stdout before the
    JSON; a real process, so nothing can bypass the check."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('recipe = "two-stage"\nbatch_size = 16\nmax_steps_per_epoch = 2\nthreads = 1\n'
                   "[[stages]]\nepochs = 1\n[[stages]]\nepochs = 1\n")
    spec = tmp_path / "s.fr"
    spec.write_text(f'import "{SPECS}/lib/sofar.fr"\nnetwork n {{\n    input [1, 8, 8]\n'
                    "    stem = conv[4] >> bn\n    block = RF[2, 4]\n    head = gap >> linear[10]\n}\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "fractalc", "train", str(spec), "--data", "digits",
                        "--config", str(cfg), "--out", str(tmp_path / "run"), "--no-export"],
                       capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = one_json(r.stdout)
    assert doc["epoch"] == 2 and 0 <= doc["top1"] <= 1
    assert "stage 1 (tanh) epoch 1/1" in r.stderr and "epoch 2: loss" in r.stderr
    r = subprocess.run([sys.executable, "-m", "fractalc", "eval", str(spec), "--data", "digits", "--json",
                        "--weights", str(tmp_path / "run" / "model.safetensors")],
                       capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert one_json(r.stdout)["top1"] == doc["top1"]  # the same weights, the same test split


def test_every_command_is_audited():
    """A new command must be added to this file's checks (or here with why it prints no
    result): the list is the CLI's own."""
    printing_json = {"check", "stats", "params", "scale", "compile", "fmt", "generate", "train", "eval"}
    no_result = {"render": "writes a drawing (DOT text on stdout without -o, `wrote` on stderr)",
                 "run": "writes an .npy file; `wrote` goes to stderr",
                 "bench": "timings table; --json writes a file"}
    others = {"list", "compare"}  # issue 17's other half: their own tests check their --json
    assert set(cli.commands) - others == printing_json | set(no_result), sorted(cli.commands)


def test_compile_writes_nothing_but_the_artifact_to_stdout(tmp_path):
    out, err = run("compile", RF, *SMALL, "-t", "torch-state", "-o", tmp_path / "w.safetensors")
    assert out == "" and "wrote" in err
    out, _ = run("render", RF, *SMALL)
    assert out.startswith("digraph") or out.startswith("strict digraph") or "digraph" in out.splitlines()[0]

