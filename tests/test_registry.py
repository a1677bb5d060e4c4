"""Models by name (fractalc.registry): the shipped specs addressable by network name from
Python and every SPEC argument, `fractalc list`, `fractalc.list_models` and `build_torch`."""
from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
import tomllib

import pytest
from click.testing import CliRunner

import fractalc
from fractalc import registry
from fractalc.cli import cli
from fractalc.compiler import compile_spec
from fractalc.errors import FractalcError
from fractalc.ir.printer import format_ir
from fractalc.lang.expand import eval_params
from fractalc.lang.resolve import load

from conftest import ROOT, SPECS


def run(*args):
    return CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)


def shipped_files():
    return sorted(p for p in SPECS.rglob("*.fr") if "lib" not in p.relative_to(SPECS).parts)


# ------------------------------------------------------------------ the names and where they are


def test_the_shipped_spec_folder_is_the_source_trees_specs():
    assert registry.specs_dir().resolve() == SPECS.resolve()


def test_every_network_of_every_shipped_spec_is_one_name():
    """The cheap scan finds exactly the networks the parser finds (the independent reference),
    file by file; and no name is defined twice."""
    want = {}
    for p in shipped_files():
        nets = list(load(p).networks)
        assert registry.network_names(p.read_text()) == nets, p
        for n in nets:
            assert n not in want, f"{n} defined by {want[n]} and {p}"
            want[n] = p
    table = registry.entries()
    assert {n: e.path.resolve() for n, e in table.items()} == {n: p.resolve() for n, p in want.items()}
    assert all(e.network == n for n, e in table.items())
    assert "rf_c3d4_resnet21" in table and table["rf_c3d4_resnet21"].relpath == "rf_c3d4_resnet21.fr"


def test_network_names_skips_comments_and_strings():
    text = ('# network commented {\nparam s = "network quoted"\nrule r(x) = x  # network late\n'
            'network one {\n input [1, 2, 2]\n a = r\n}\nnetwork\ttwo{\n input [1, 2, 2]\n a = r\n}\n'
            'param mynetwork = 1\n')
    assert registry.network_names(text) == ["one", "two"]


NET = "network {name} {{\n    input [8, 4, 4]\n    a = conv[8]\n}}\n"


def test_subfolders_several_networks_per_file_and_the_library_skipped(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "inlib.fr").write_text(NET.format(name="in_lib"))
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "two.fr").write_text(NET.format(name="zoo_a") + NET.format(name="zoo_b"))
    (tmp_path / "top.fr").write_text(NET.format(name="top"))
    table = registry.entries(tmp_path)
    assert list(table) == ["top", "zoo_a", "zoo_b"]
    assert table["zoo_b"].relpath == "zoo/two.fr" and table["zoo_b"].network == "zoo_b"
    for n in table:  # each name compiles to its own network of the file
        assert compile_spec(table[n].path, network=table[n].network).name == n


def test_a_name_defined_twice_is_refused(tmp_path):
    (tmp_path / "a.fr").write_text(NET.format(name="same"))
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "b.fr").write_text(NET.format(name="same"))
    with pytest.raises(registry.ModelNameError, match="a.fr and zoo/b.fr"):
        registry.entries(tmp_path)


def test_list_models_is_sorted_and_filters_with_wildcards():
    names = fractalc.list_models()
    assert names == sorted(registry.entries()) and len(names) == len(set(names))
    for pattern in ("rf_*", "*densenet*", "nothing*"):
        assert fractalc.list_models(pattern) == [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    assert "rf_c3d4_resnet21" in fractalc.list_models("rf_*")


def test_family():
    assert registry.family("rf_c3d4_resnet21") == "RF"
    assert registry.family("drf_c2d2_densenet51") == "DRF"
    assert registry.family("f_c3d4") == "F"
    assert registry.family("bireal_resnet18") == "bireal_resnet"
    assert registry.family("fractalnet_cifar") == "fractalnet"
    assert registry.family("quicknet_large") == registry.family("quicknet") == "quicknet"
    assert registry.family("binary_densenet37_dilated") == "binary_densenet"
    assert registry.family("reactnet18") == "reactnet"


# ----------------------------------------------------------------------------- resolving


def test_resolve_a_name_a_path_and_an_unknown_name(tmp_path):
    path, net = registry.resolve_spec("rf_c3d4_resnet21")
    assert path.resolve() == (SPECS / "rf_c3d4_resnet21.fr").resolve() and net == "rf_c3d4_resnet21"
    p = SPECS / "rf_c3d4.fr"
    assert registry.resolve_spec(p) == (p, None)
    assert registry.resolve_spec(str(p), "x") == (str(p), "x")  # a path keeps its --network
    # a missing path stays a path: reading it reports the missing file as before
    assert registry.resolve_spec("nosuch/rf_c3d4.fr") == ("nosuch/rf_c3d4.fr", None)
    with pytest.raises(registry.ModelNameError) as e:
        registry.resolve_spec("rf_c3d4_resnt21")
    assert "rf_c3d4_resnet21" in e.value.message and "fractalc list" in e.value.hint
    with pytest.raises(registry.ModelNameError, match="names another"):
        registry.resolve_spec("rf_c3d4", "other")
    assert isinstance(e.value, FractalcError)


def test_compile_spec_takes_paths_not_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FractalcError, match="cannot read spec file"):
        compile_spec("rf_c3d4")


def test_a_name_resolves_to_the_same_graph_as_its_path_in_every_command():
    by_path = run("compile", SPECS / "rf_c3d4_resnet21.fr", "--set", "width=41")
    by_name = run("compile", "rf_c3d4_resnet21", "--set", "width=41")
    assert by_path.exit_code == by_name.exit_code == 0
    assert by_name.output == by_path.output == format_ir(
        compile_spec(SPECS / "rf_c3d4_resnet21.fr", {"width": "41"}).graph)
    for cmd in (["check"], ["stats", "--no-layers"], ["params"], ["render"]):
        a = run(*cmd, "bireal_resnet18")
        b = run(*cmd, SPECS / "bireal_resnet18.fr")
        assert a.exit_code == b.exit_code == 0, (cmd, a.output)
        assert a.output == b.output.replace(str(SPECS / "bireal_resnet18.fr"), str(registry.get("bireal_resnet18").path))
    s = run("scale", "rf_c3d4_resnet21", "--budget-of", "bireal_resnet18", "--json")
    t = run("scale", SPECS / "rf_c3d4_resnet21.fr", "--budget-of", SPECS / "bireal_resnet18.fr", "--json")
    assert s.exit_code == t.exit_code == 0
    assert json.loads(s.output)["value"] == json.loads(t.output)["value"]


def test_an_existing_path_wins_over_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rf_c3d4").write_text(NET.format(name="mine"))
    r = run("check", "rf_c3d4")
    assert r.exit_code == 0 and r.output.startswith("ok: mine:")


def test_an_unknown_name_is_a_clear_error_with_close_names():
    r = subprocess.run([sys.executable, "-m", "fractalc", "stats", "rf_c3d4_resnt21"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and r.stdout == ""
    assert "no spec file or model named 'rf_c3d4_resnt21'" in r.stderr
    assert "did you mean rf_c3d4_resnet21" in r.stderr and "fractalc list" in r.stderr
    with pytest.raises(registry.ModelNameError, match="names another"):
        run("check", "rf_c3d4", "--network", "other")


def test_resolving_a_name_imports_neither_lark_nor_torch():
    code = ("import sys, fractalc.registry as r; p, n = r.resolve_spec('rf_c3d4_resnet21'); "
            "assert n == 'rf_c3d4_resnet21'; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('lark', 'torch', 'onnx')]; "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_the_wheel_maps_the_specs_into_the_package():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["scikit-build"]
    assert tool["wheel"]["packages"]["fractalc/specs"] == "specs"


# ----------------------------------------------------------------------------- fractalc list


def test_list_json_equals_stats_json_of_each_file():
    r = run("list", "--json")
    assert r.exit_code == 0
    rows = json.loads(r.output)  # stdout holds the JSON alone
    assert [m["name"] for m in rows] == fractalc.list_models()
    for m in rows:
        spec = registry.specs_dir() / m["spec"]
        st = json.loads(run("stats", spec, "--network", m["network"], "--json", "--no-layers").output)
        assert st["network"] == m["name"]
        assert m["bits"] == st["params"]["bits"]
        assert m["mbit"] == pytest.approx(st["params"]["mbit"])
        assert m["float_params"] == st["params"]["float"]
        assert m["binary_params"] == st["params"]["binary"]
        assert m["flops"] == pytest.approx(st["flops"]["total"])
        assert m["depth"] == st["depth"]
        values = eval_params(load(spec), {})
        assert m["dataset"] == values.get("dataset")
        if m["width_param"] is not None:
            assert m["width_param"] in registry.WIDTH_PARAMS
            assert m["width"] == compile_spec(spec, network=m["network"]).params[m["width_param"]]


def test_list_table_and_pattern():
    r = run("list")
    assert r.exit_code == 0
    lines = r.output.splitlines()
    assert lines[0].split() == ["name", "family", "dataset", "depth", "width", "Mbit", "FLOPs"]
    row = next(l for l in lines if l.startswith("rf_c3d4_resnet21 "))
    info = registry.describe("rf_c3d4_resnet21")
    assert row.split() == ["rf_c3d4_resnet21", "RF", "imagenet", "21", "53", f"{info.mbit:.3f}",
                           f"{info.flops:.4e}"]
    only = run("list", "bireal_*", "--json")
    assert [m["name"] for m in json.loads(only.output)] == fractalc.list_models("bireal_*")
    none = run("list", "zzz*", "--json")
    assert none.exit_code == 0 and json.loads(none.output) == []


# ----------------------------------------------------------------------------- build_torch


def test_build_torch_by_name_equals_by_path_with_every_option():
    import torch

    a = fractalc.build_torch("rf_c3d4_resnet21", seed=3, width=8, dataset="cifar10")
    b = fractalc.build_torch(SPECS / "rf_c3d4_resnet21.fr", seed=3, width=8, dataset="cifar10")
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    c = a.fractalc_compiled
    want = compile_spec(SPECS / "rf_c3d4_resnet21.fr", {"width": "8", "dataset": '"cifar10"'})
    assert format_ir(c.graph) == format_ir(want.graph) and c.params["width"] == 8
    assert a(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    # column, network, max_nodes
    col = fractalc.build_torch("rf_c3d4", column=1, channels=8)
    assert col.fractalc_compiled.column == 1
    assert format_ir(col.fractalc_compiled.graph) == format_ir(
        compile_spec(SPECS / "rf_c3d4.fr", {"channels": "8"}).with_column(1).graph)
    with pytest.raises(FractalcError):
        fractalc.build_torch("rf_c3d4_resnet21", max_nodes=10)
    with pytest.raises(registry.ModelNameError):
        fractalc.build_torch("rf_c3d4", network="other")
    with pytest.raises(registry.ModelNameError, match="did you mean"):
        fractalc.build_torch("rf_c3d4_resnt21")
    compiled = compile_spec(SPECS / "f_c3d4.fr", {"channels": "8"})
    assert fractalc.build_torch(compiled).fractalc_compiled is compiled
    with pytest.raises(TypeError):
        fractalc.build_torch(compiled, channels=4)


def test_bench_takes_a_model_name(tmp_path):
    """`fractalc bench NAME` benchmarks the shipped spec (here only the native engine, one
    tiny run); an unknown name is refused with the suggestion."""
    out = tmp_path / "b.json"
    exe = [sys.executable, "-m", "fractalc"]
    r = subprocess.run([*exe, "bench", "rf_c3d4", "--set", "channels=8", "--set", "size=8", "--engines",
                        "fractalc", "--repeats", "1", "--threads", "1", "--json", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert doc["results"][0]["model"] == "rf_c3d4" and doc["target"] == "rf_c3d4"
    r = subprocess.run([*exe, "bench", "rf_c3d4_resnt21"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 1 and "rf_c3d4_resnet21" in r.stderr
