"""`fractalc train` / `eval` train and evaluate the graph the command line asked for: the
--network, --set, --max-nodes and --column it compiled, never the file's first network again.

Reference: the selected network's own graph (its output classes, its parameter names and
shapes, as `compile_spec(..., network=...)` and the torch backend give them)."""
from __future__ import annotations

import json

import pytest

import torch

from fractalc.backends.torch import from_graph
from fractalc.compiler import compile_spec  # noqa: E402
from fractalc.training.checkpoint import load_state_dict

from conftest import SPECS  # noqa: E402
from conftest import run_main

# Two networks of different input size, width and class count; `first` comes first, so a
# command that forgets --network trains it.
TWO = """import "{lib}"
param width = 4
network first {{
    input [1, 8, 8]
    stem  = conv[width] >> bn
    block = RF[2, width]
    head  = gap >> linear[10]
}}
network second {{
    input [1, 12, 12]
    stem  = conv[2 * width] >> bn
    block = RF[2, 2 * width]
    head  = gap >> linear[13]
}}
"""

CONFIG = """recipe = "two-stage"
batch_size = 16
max_steps_per_epoch = 2
[[stages]]
epochs = 1
lr = 0.003
[[stages]]
epochs = 0
lr = 0.001
"""


@pytest.fixture()
def two(tmp_path):
    p = tmp_path / "two.fr"
    p.write_text(TWO.format(lib=SPECS / "lib" / "sofar.fr"))
    c = tmp_path / "train.toml"
    c.write_text(CONFIG)
    return p, c



def _shapes(sd):
    return {k: tuple(v.shape) for k, v in sd.items()}


def test_train_and_eval_use_the_chosen_network_and_sets(two, tmp_path, capsys, one_torch_thread):
    spec, config = two
    out = tmp_path / "run"
    rc, stdout, err = run_main(capsys, "train", spec, "--network", "second", "--set", "width=3",
                            "--data", "digits", "--config", config, "--out", out, "--quiet")
    assert rc == 0, err
    assert json.loads(stdout)["epoch"] == 1
    want = compile_spec(spec, {"width": "3"}, network="second").graph
    ref = _shapes(from_graph(want).state_dict())
    got = _shapes(load_state_dict(out / "model.safetensors"))
    assert got == ref
    head = [k for k in got if k.startswith("head.") and k.endswith("weight")]
    assert [got[k][0] for k in head] == [13]  # second's 13 classes, not first's 10
    assert got["stem.conv1.weight"] == (6, 1, 3, 3)  # width=3 survived: 2 * width channels
    summary = json.loads((out / "summary.json").read_text())
    assert summary["network"] == "second" and summary["overrides"] == {"width": "3"}
    # The exports are of the same graph, straight from the training's compile.
    import onnx
    for name in ("model.onnx", "model.xnor.onnx"):
        m = onnx.load(str(out / name))
        dims = [d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim]
        ins = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
        assert dims[-1] == 13 and ins[-3:] == [1, 12, 12], name
    rc, stdout, err = run_main(capsys, "eval", spec, "--network", "second", "--set", "width=3",
                            "--weights", out / "model.safetensors", "--data", "digits", "--json")
    assert rc == 0, err
    r = json.loads(stdout)
    assert r["engine"] == "torch" and r["n"] > 0 and 0 <= r["top1"] <= 1
    # The same weights do not fit `first` (the default network): the network is not ignored.
    rc, _, err = run_main(capsys, "eval", spec, "--set", "width=3", "--weights", out / "model.safetensors",
                       "--data", "digits")
    assert rc == 1 and "do not fit" in err


def test_train_honours_max_nodes(two, tmp_path, capsys):
    spec, config = two
    out = tmp_path / "run"
    n = len(compile_spec(spec, network="second").graph)
    rc, _, err = run_main(capsys, "train", spec, "--network", "second", "--max-nodes", n // 2,
                       "--data", "digits", "--config", config, "--out", out, "--quiet", "--no-export")
    assert rc == 1 and "expansion refused" in err, err
    assert not out.exists()


def test_train_and_eval_a_column(two, tmp_path, capsys, one_torch_thread):
    """--column trains the plain column network (its keys are a subset of the full one's), and
    eval --column evaluates a full network's weights on one column."""
    spec, config = two
    full = compile_spec(spec, network="second")
    col = _shapes(from_graph(full.with_column(1).graph).state_dict())
    out = tmp_path / "col"
    rc, _, err = run_main(capsys, "train", spec, "--network", "second", "--column", "1", "--data", "digits",
                       "--config", config, "--out", out, "--quiet", "--no-export")
    assert rc == 0, err
    got = _shapes(load_state_dict(out / "model.safetensors"))
    assert got == col and set(col) < set(_shapes(from_graph(full.graph).state_dict()))
    assert json.loads((out / "summary.json").read_text())["column"] == 1
    weights = tmp_path / "full.pt"
    torch.save(from_graph(full.graph, seed=1).state_dict(), weights)
    rc, stdout, err = run_main(capsys, "eval", spec, "--network", "second", "--column", "1",
                            "--weights", weights, "--data", "digits", "--json")
    assert rc == 0, err
    assert json.loads(stdout)["n"] > 0


def test_library_train_takes_a_compiled_spec_and_refuses_sets_with_it(two, tmp_path):
    from fractalc.training.loop import train
    spec, config = two
    c = compile_spec(spec, network="second")
    with pytest.raises(TypeError, match="compiled already"):
        train(c, "digits", tmp_path / "x", config=str(config), sets={"width": "3"})


def test_build_torch_takes_a_compiled_spec_as_it_is(two):
    from fractalc.backends.torch import build_torch
    spec, _ = two
    c = compile_spec(spec, {"width": "3"}, network="second")
    a, b = build_torch(c, seed=2).state_dict(), from_graph(c.graph, seed=2).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(TypeError, match="compiled already"):
        build_torch(c, width=4)
