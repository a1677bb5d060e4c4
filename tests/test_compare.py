"""`fractalc compare A B`: two specs' costs side by side; the ratios and per-stage numbers are
checked against `fractalc stats --json` of each spec."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from fractalc.cli import cli
from fractalc.errors import FractalcError

from conftest import SPECS

A = SPECS / "rf_c3d4_resnet21.fr"
B = SPECS / "bireal_resnet18.fr"


def run(*args):
    r = CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.output


def stats(path, *sets):
    args = ["stats", path, "--json"]
    for s in sets:
        args += ["--set", s]
    return json.loads(run(*args))


def expected(st: dict) -> dict:
    p, f = st["params"], st["flops"]
    return {"bits": p["bits"], "float_params": p["float"], "binary_params": p["binary"],
            "flops": f["total"], "float_macs": f["float_mults"], "binary_macs": f["binary_mults"],
            "depth": st["depth"]}


def per_stage(st: dict) -> dict:
    out: dict[str, dict] = {}
    for l in st["layers"]:
        s = out.setdefault(l["id"].split(".")[0], {"bits": 0, "flops": 0.0})
        s["bits"] += l["bits"]
        s["flops"] += l["flops"]
    return {k: v for k, v in out.items() if v["bits"] or v["flops"]}


def test_json_ratios_are_the_two_stats_ratios():
    doc = json.loads(run("compare", A, B, "--json"))
    sa, sb = expected(stats(A)), expected(stats(B))
    for key, want in sa.items():
        assert doc["a"][key] == pytest.approx(want), key
        assert doc["b"][key] == pytest.approx(sb[key]), key
        assert doc["ratio"][key] == pytest.approx(sb[key] / want), key
    assert doc["a"]["network"] == "rf_c3d4_resnet21" and doc["b"]["network"] == "bireal_resnet18"
    assert doc["a"]["mbit"] == pytest.approx(sa["bits"] / 1e6)


def test_per_stage_numbers_are_the_layers_grouped_by_top_level_scope():
    doc = json.loads(run("compare", A, B, "--json"))
    pa, pb = per_stage(stats(A)), per_stage(stats(B))
    names = [s["stage"] for s in doc["stages"]]
    assert names == list(dict.fromkeys([*pa, *pb]))
    assert names[:2] == ["stem", "stage1"] and "trans1" in names and names[-1] == "head"
    for s in doc["stages"]:
        for side, ref in (("a", pa), ("b", pb)):
            want = ref.get(s["stage"], {"bits": 0, "flops": 0.0})
            assert s[side]["bits"] == want["bits"]
            assert s[side]["flops"] == pytest.approx(want["flops"])
    assert sum(s["a"]["bits"] for s in doc["stages"]) == doc["a"]["bits"]
    assert sum(s["b"]["flops"] for s in doc["stages"]) == pytest.approx(doc["b"]["flops"])


def test_names_and_per_side_overrides():
    by_name = json.loads(run("compare", "rf_c3d4_resnet21", "rf_c3d4_resnet21", "--set-b", "width=41", "--json"))
    by_path = json.loads(run("compare", A, A, "--set-b", "width=41", "--json"))
    assert by_name["ratio"] == by_path["ratio"] and by_name["stages"] == by_path["stages"]
    sa, sb = expected(stats(A)), expected(stats(A, "width=41"))
    assert by_name["ratio"]["bits"] == pytest.approx(sb["bits"] / sa["bits"])
    assert by_name["b"]["overrides"] == {"width": "41"} and by_name["a"]["overrides"] == {}
    both = json.loads(run("compare", A, A, "--set", "dataset=cifar10", "--set-a", "width=32", "--json"))
    assert both["a"]["overrides"] == {"dataset": "cifar10", "width": "32"}
    assert both["b"]["overrides"] == {"dataset": "cifar10"}
    assert both["b"]["bits"] == expected(stats(A, "dataset=cifar10"))["bits"]


def test_the_table_shows_both_sides_and_the_ratios():
    out = run("compare", "rf_c3d4_resnet21", "bireal_resnet18")
    doc = json.loads(run("compare", A, B, "--json"))
    rows = {l.split("  ")[0].strip(): l for l in out.splitlines() if l and not l.startswith(("A =", "B ="))}
    assert f"{doc['a']['bits']:,}" in rows["bits"] and f"{doc['b']['bits']:,}" in rows["bits"]
    assert rows["bits"].split()[-1] == f"{doc['ratio']['bits']:.4f}"
    assert rows["depth"].split()[-3:] == ["21", "18", f"{18 / 21:.4f}"]
    for label in ("float params", "binary params", "FLOPs", "float MACs", "binary MACs", "Mbit"):
        assert label in rows
    assert any(l.startswith("stage4 ") for l in out.splitlines())


def test_a_zero_denominator_has_no_ratio():
    doc = json.loads(run("compare", SPECS / "f_c3d4.fr", A, "--json"))
    assert doc["a"]["float_macs"] == 0 and doc["ratio"]["float_macs"] is None
    assert "-" in next(l for l in run("compare", SPECS / "f_c3d4.fr", A).splitlines()
                       if l.startswith("float MACs")).split()[-1]


def test_plot_is_written_atomically_and_json_stays_alone_on_stdout(tmp_path):
    out = tmp_path / "cmp.png"
    r = subprocess.run([sys.executable, "-m", "fractalc", "compare", "rf_c3d4_resnet21", "bireal_resnet18",
                        "--json", "--plot", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    json.loads(r.stdout)  # the JSON alone
    assert f"wrote {out}" in r.stderr
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmp.png"]  # no temporary file left
    run("compare", A, B, "--plot", tmp_path / "again.png")
    assert (tmp_path / "again.png").read_bytes() == data  # deterministic
    run("compare", A, B, "--plot", tmp_path / "cmp.svg")
    assert b"<svg" in (tmp_path / "cmp.svg").read_bytes()[:1000]


def test_a_bad_plot_extension_is_refused_before_compiling(tmp_path):
    with pytest.raises(FractalcError, match="extension"):
        CliRunner().invoke(cli, ["compare", "nosuch_a", "nosuch_b", "--plot", str(tmp_path / "x.jpg")],
                           catch_exceptions=False)
    assert not list(tmp_path.iterdir())


def test_an_unknown_name_names_close_ones():
    r = subprocess.run([sys.executable, "-m", "fractalc", "compare", "rf_c3d4_resnet21", "bireal_resnet19"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "did you mean bireal_resnet18" in r.stderr
