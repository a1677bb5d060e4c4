"""CLI tests for every core command (check, stats, params, compile, --version, --help)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from fractalc import __version__
from fractalc.cli import cli

from conftest import ROOT, SPECS


def run(*args):
    r = CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)
    return r


def test_version_and_help():
    r = run("--version")
    assert r.exit_code == 0 and __version__ in r.output
    top = run("--help")
    assert top.exit_code == 0
    for name in cli.commands:
        assert name in top.output
        h = run(name, "--help")
        assert h.exit_code == 0 and "Usage:" in h.output


def test_check():
    r = run("check", SPECS / "rf_c3d4.fr", "--set", "columns=4")
    assert r.exit_code == 0
    assert r.output.startswith("ok: rf_c3d4: ") and "depth 8" in r.output


def test_stats_table_and_json_agree():
    table = run("stats", SPECS / "bireal_resnet18.fr")
    assert table.exit_code == 0
    doc = json.loads(run("stats", SPECS / "bireal_resnet18.fr", "--json").output)
    p, f = doc["params"], doc["flops"]
    assert p["bits"] == 32 * p["float"] + p["binary"]
    assert p["mib"] == pytest.approx(p["bits"] / 8 / 2**20)
    assert p["mbit"] == pytest.approx(p["bits"] / 1e6)
    assert f["total"] == pytest.approx(f["float_mults"] + f["binary_mults"] / 64)
    assert doc["depth"] == 18
    assert sum(l["binary_params"] for l in doc["layers"]) == p["binary"]
    assert sum(l["float_params"] for l in doc["layers"]) == p["float"]
    assert sum(l["bn_params"] for l in doc["layers"]) == p["bn"]
    assert {"id", "op"} <= set(doc["layers"][0])
    assert f"{p['bits']:,} bits" in table.output
    assert f"{p['mbit']:.3f} Mbit" in table.output
    assert "depth      : 18" in table.output
    assert "stage4.block4.conv1" in table.output


def test_stats_set_overrides():
    a = json.loads(run("stats", SPECS / "rf_c3d4_resnet21.fr", "--json", "--no-layers").output)
    b = json.loads(run("stats", SPECS / "rf_c3d4_resnet21.fr", "--json", "--no-layers",
                       "--set", "width=41", "--set", "dataset=cifar100").output)
    assert "layers" not in a
    assert b["overrides"] == {"width": "41", "dataset": "cifar100"}
    assert b["params"]["bits"] < a["params"]["bits"]


def test_params_lists_values_and_choices():
    r = run("params", SPECS / "bireal_resnet18.fr", "--set", "dataset=cifar10")
    assert r.exit_code == 0
    rows = {line.split("=")[0].strip(): line.split("=", 1)[1].split("#")[0].strip()
            for line in r.output.splitlines()}
    assert rows["dataset"] == '"cifar10"' and rows["classes"] == "10" and rows["size"] == "32"
    assert "choices: imagenet, cifar10, cifar100" in r.output


def test_compile_ir_and_json(tmp_path):
    out = tmp_path / "m.ir"
    r = run("compile", SPECS / "f_c3d4.fr", "-o", out)
    assert r.exit_code == 0 and out.read_text().startswith("graph f_c3d4")
    j = json.loads(run("compile", SPECS / "f_c3d4.fr", "--target", "json").output)
    assert j["graph"] == "f_c3d4" and len(j["nodes"]) == 18
    assert not list(tmp_path.glob(".*.tmp"))  # no temp files left behind


def test_compile_unknown_target_and_option(capsys):
    from fractalc.cli import main
    with pytest.raises(SystemExit) as e:
        main(["compile", str(SPECS / "f_c3d4.fr"), "--target", "nope"])
    assert e.value.code == 1 and "unknown target 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["compile", str(SPECS / "f_c3d4.fr"), "--seed", "3"])
    assert e.value.code == 1 and "takes no --seed" in capsys.readouterr().err


def test_python_dash_m_and_console_script():
    r = subprocess.run([sys.executable, "-m", "fractalc", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and __version__ in r.stdout
    exe = ROOT / ".venv" / "bin" / "fractalc"
    if exe.exists():  # the console script of the project venv (make test installs it)
        r = subprocess.run([str(exe), "check", str(SPECS / "f_c3d4.fr")], capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.startswith("ok: f_c3d4")


def test_import_does_not_pull_torch_or_onnx():
    code = ("import sys, fractalc, fractalc.cli, fractalc.compiler, fractalc.cost;"
            "from fractalc.compiler import compile_spec; compile_spec(%r);"
            "bad=[m for m in sys.modules if m.split('.')[0] in ('torch','onnx','onnxruntime')];"
            "print(bad); sys.exit(1 if bad else 0)" % str(SPECS / "rf_c3d4.fr"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
