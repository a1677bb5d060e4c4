"""Hostile or careless inputs other than specs (issue #12): training configs, weights files and
space files are refused with a message naming the problem, never read from a device, never a
traceback, never hours of work."""
from __future__ import annotations

import pytest
import torch

from fractalc.errors import FractalcError, ModelError
from fractalc.training.checkpoint import fit_state_dict, load_state_dict
from fractalc.training.config import load_config
from fractalc.variants import MAX_SPACE_POINTS, SpaceError, load_space

NET = "network n {\n  input [3, 8, 8]\n  body = %s\n}\n"


@pytest.mark.parametrize("path,fragment", [("/dev/zero", "device"), ("/proc/self/environ", "/proc")])
def test_training_config_from_a_device_is_refused(path, fragment):
    with pytest.raises(FractalcError, match=fragment):
        load_config(path, has_dense=False)


def test_training_config_that_is_not_utf8(tmp_path):
    p = tmp_path / "c.toml"
    p.write_bytes(b'recipe = "\xff"\n')
    with pytest.raises(FractalcError, match="cannot read training config"):
        load_config(p, has_dense=False)


@pytest.mark.parametrize("path,fragment", [("/dev/zero", "device"), ("/proc/self/environ", "/proc")])
def test_weights_from_a_device_are_refused(path, fragment):
    with pytest.raises(ModelError, match=fragment):
        load_state_dict(path)


def _model():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))


def test_weights_that_do_not_fit_name_their_keys():
    sd = _model().state_dict()
    sd.pop("0.bias")
    sd["extra"] = torch.zeros(1)
    sd["0.weight"] = torch.zeros(4, 3, 5, 5)
    with pytest.raises(ModelError) as info:
        fit_state_dict(_model(), sd, "w.pt")
    msg = info.value.message
    assert "1 missing: 0.bias" in msg and "1 unexpected: extra" in msg
    assert "1 mis-shaped: 0.weight (4x3x5x5, the network has 4x3x3x3)" in msg


def test_weights_that_fit_are_loaded():
    src, dst = _model(), _model()
    fit_state_dict(dst, src.state_dict(), "w.pt")
    assert torch.equal(dst[0].weight, src[0].weight)


def test_eval_names_the_keys_for_every_engine(tmp_path, capsys):
    from fractalc.cli import main
    spec = tmp_path / "s.fr"
    spec.write_text("network n {\n  input [3, 8, 8]\n  body = conv[8] >> bn >> gap >> linear[10]\n}\n")
    w = tmp_path / "w.pt"
    torch.save({"nope": torch.zeros(2)}, w)
    for engine in ("torch", "onnxruntime"):
        with pytest.raises(SystemExit) as info:
            main(["eval", str(spec), "--weights", str(w), "--data", "digits", "--engine", engine])
        err = capsys.readouterr().err
        assert info.value.code == 1
        assert f"weights '{w}' do not fit this network" in err and "unexpected: nope" in err, err
        assert "body.conv1.weight" in err and "Traceback" not in err


def test_space_with_too_many_points_is_refused_before_any_compile(tmp_path):
    cols = list(range(2, 2 + MAX_SPACE_POINTS // 4 + 1))
    (tmp_path / "s.toml").write_text(
        'name = "x"\n[[space]]\nfamily = ["RF", "F", "DF", "DRF"]\n'
        f"columns = {cols}\nblocks = [[1, 1, 1, 1]]\n"
        'budget = { baseline = "b.fr" }\n')
    with pytest.raises(SpaceError, match=f"over the limit of {MAX_SPACE_POINTS:,}"):
        load_space(tmp_path / "s.toml")
