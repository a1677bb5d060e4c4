"""Training and evaluation: loss goes down, exact resume, DDP ranks in sync, engines agree,
corrupt checkpoints refused. Small spec, digits data (offline), a few steps each."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from fractalc.compiler import compile_spec
from fractalc.errors import ModelError

from conftest import SPECS

TINY = """import "{lib}"
param width = 8
network tiny {{
    input [1, 16, 16]
    stem   = conv[width] >> bn
    stage1 = RF[2, width]
    trans1 = down[2 * width]
    stage2 = RF[2, 2 * width]
    head   = gap >> linear[10]
}}
"""

CONFIG = """recipe = "two-stage"
batch_size = 32
max_steps_per_epoch = {steps}
[[stages]]
epochs = {e1}
lr = 0.003
[[stages]]
epochs = {e2}
lr = 0.001
"""


@pytest.fixture()
def tiny(tmp_path):
    p = tmp_path / "tiny.fr"
    p.write_text(TINY.format(lib=SPECS / "lib" / "sofar.fr"))
    return p


def cfg(tmp_path, steps=5, e1=1, e2=1, name="train.toml"):
    p = tmp_path / name
    p.write_text(CONFIG.format(steps=steps, e1=e1, e2=e2))
    return p


def run_train(spec, out, config, *extra):
    from fractalc.training.loop import train
    return train(str(spec), "digits", out, config=str(config), progress=False, export=False, **dict(extra))


def test_thirty_steps_lower_the_loss(tiny, tmp_path):
    from fractalc.training.data import load_data
    from fractalc.training.loop import build_model, evaluate
    c = compile_spec(tiny)
    ds = load_data("digits", (1, 16, 16))
    before = evaluate(build_model(c, seed=0), ds.test_x, ds.test_y)["loss"]
    s = run_train(tiny, tmp_path / "run", cfg(tmp_path, steps=30, e1=1, e2=0))
    after = s["final"]["test_loss"]
    assert after < before * 0.8, (before, after)
    assert s["final"]["loss"] < before


def _weights(path):
    from fractalc.training.checkpoint import load_state_dict
    return load_state_dict(path)


def test_resume_gives_the_same_weights(tiny, tmp_path):
    config = cfg(tmp_path, steps=4, e1=2, e2=1)
    run_train(tiny, tmp_path / "full", config)
    s = run_train(tiny, tmp_path / "cut", config, ("stop_after", 2))
    assert s["stopped_early"] and s["epochs"] == 2
    from fractalc.training.loop import train
    train(str(tiny), "digits", tmp_path / "cut", config=str(config), resume=True, progress=False, export=False)
    a, b = _weights(tmp_path / "full" / "model.safetensors"), _weights(tmp_path / "cut" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    lines_full = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    lines_cut = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert len(lines_full) == len(lines_cut) == 3


MID_CONFIG = """recipe = "two-stage"
batch_size = 32
max_steps_per_epoch = 3
drop_path = 0.3
[[stages]]
epochs = 3
lr = 0.003
[[stages]]
epochs = 2
lr = 0.002
"""


@pytest.fixture()
def recording_train(monkeypatch):
    """train() in process, returning its summary and a digest of every training batch the model
    saw (the data order, augmentation included), in order."""
    import hashlib

    from fractalc.training import loop
    seen: list[str] = []
    build = loop.build_model

    def build_and_watch(*a, **k):
        model = build(*a, **k)

        def hook(mod, args):
            if mod.training:
                seen.append(hashlib.sha256(args[0].detach().numpy().tobytes()).hexdigest()[:16])
        model.register_forward_pre_hook(hook)
        return model

    monkeypatch.setattr(loop, "build_model", build_and_watch)

    def run(spec, out, config, **kw):
        seen.clear()
        s = loop.train(str(spec), "digits", out, config=str(config), progress=False, export=False, **kw)
        return s, list(seen)
    return run


def _rows(out):
    import json
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("time")
    return rows


@pytest.mark.parametrize("stop", [1, 4], ids=["inside-stage1", "inside-stage2"])
def test_resume_inside_a_stage_is_bit_identical(tiny, tmp_path, recording_train, one_torch_thread, stop):
    """Stopped after epoch 1 of a 3-epoch stage, or after epoch 1 of stage 2, and resumed: the
    same weights, metrics and data order as the uninterrupted run. Adam's moments, the cosine
    schedule's position and the RNG of drop-path (p = 0.3) are all restored, or they differ."""
    config = tmp_path / "mid.toml"
    config.write_text(MID_CONFIG)
    _, full_order = recording_train(tiny, tmp_path / "full", config)
    s, first = recording_train(tiny, tmp_path / "cut", config, stop_after=stop)
    assert s["stopped_early"] and s["epochs"] == stop
    _, rest = recording_train(tiny, tmp_path / "cut", config, resume=True)
    assert len(full_order) == 5 * 3
    assert first + rest == full_order  # the same batches in the same order
    a, b = _weights(tmp_path / "full" / "model.safetensors"), _weights(tmp_path / "cut" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    full, cut = _rows(tmp_path / "full"), _rows(tmp_path / "cut")
    assert len(full) == 5 and full == cut  # losses, accuracies and learning rates, exactly
    assert len({r["lr"] for r in full if r["stage"] == 1}) == 3  # the cosine schedule moves


def test_corrupt_checkpoint_is_refused_and_kept(tiny, tmp_path):
    config = cfg(tmp_path, steps=2, e1=2, e2=0)
    run_train(tiny, tmp_path / "run", config, ("stop_after", 2))
    ck = tmp_path / "run" / "checkpoint.pt"
    assert (tmp_path / "run" / "checkpoint.prev.pt").exists()
    data = ck.read_bytes()
    ck.write_bytes(data[: len(data) // 2])
    from fractalc.training.loop import train
    with pytest.raises(ModelError, match="corrupt or truncated"):
        train(str(tiny), "digits", tmp_path / "run", config=str(config), resume=True, progress=False, export=False)
    assert ck.read_bytes() == data[: len(data) // 2]  # the refusal wrote nothing
    prev = tmp_path / "run" / "checkpoint.prev.pt"
    train(str(tiny), "digits", tmp_path / "run", config=str(config), resume_from=str(prev),
          progress=False, export=False)
    assert ck.stat().st_size > len(data) // 2


def test_torchrun_two_ranks_stay_in_sync(tiny, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                        "--master_port=29731", "-m", "fractalc", "train", str(tiny), "--data", "digits",
                        "--config", str(cfg(tmp_path, steps=3, e1=1, e2=1)), "--out", str(out),
                        "--no-export", "--save-all-ranks", "--quiet"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _weights(out / "weights.rank0.safetensors"), _weights(out / "weights.rank1.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (out / "metrics.jsonl").read_text().count("\n") == 2  # rank 0 alone logs


def test_eval_engines_agree_on_logits(tiny, tmp_path):
    """`fractalc eval`'s engines (fractalc.training.evaluate.predict): the logits of onnxruntime
    and the XNOR runtime equal torch's within float rounding on the whole test split of trained
    weights (not only the argmax), and bit for bit on exactly computable (dyadic) weights and
    inputs, where every engine's float arithmetic is exact."""
    import numpy as np

    from fractalc.backends.onnx import testing
    from fractalc.cli.targets import TARGETS
    from fractalc.training.data import load_data
    from fractalc.training.evaluate import ENGINES, predict
    assert {"onnx", "onnx-xnor"} <= set(TARGETS) and ENGINES == ("torch", "onnxruntime", "xnor")
    c = compile_spec(tiny)
    run_train(tiny, tmp_path / "run", cfg(tmp_path, steps=5, e1=1, e2=1))
    trained = str(tmp_path / "run" / "model.safetensors")
    x = load_data("digits", (1, 16, 16)).test_x
    ref = predict(c, trained, x, "torch")
    assert ref.shape == (len(x), 10) and np.ptp(ref) > 0.1
    for engine in ("onnxruntime", "xnor"):
        got = predict(c, trained, x, engine)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max(), err_msg=engine)
        assert (got.argmax(1) == ref.argmax(1)).all(), engine
    state = testing.dyadic_state(c.graph, seed=1)
    exact = tmp_path / "dyadic.pt"
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, exact)
    xd = torch.from_numpy(testing.dyadic_input((64, 1, 16, 16), seed=2))
    ref = predict(c, str(exact), xd, "torch")
    assert np.ptp(ref) > 1.0
    for engine in ("onnxruntime", "xnor"):
        got = predict(c, str(exact), xd, engine)
        assert got.dtype == ref.dtype and np.array_equal(got, ref), (engine, np.abs(got - ref).max())


def test_config_errors(tmp_path):
    from fractalc.errors import FractalcError
    from fractalc.training.config import load_config
    bad = tmp_path / "bad.toml"
    bad.write_text("recipe = 'two-stage'\nbatchsize = 3\n")
    with pytest.raises(FractalcError, match="unknown key 'batchsize'"):
        load_config(bad, has_dense=False)
    assert load_config(None, has_dense=True).init == "glorot"
    assert [s.mode for s in load_config(None, has_dense=False).stages] == ["tanh", "binary"]
