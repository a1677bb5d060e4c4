"""Every spec through the torch backend: forward, backward, parameter counts vs the cost model.

ImageNet specs run at CIFAR size (``dataset=cifar10``: same structure, 32x32 input) and block
specs at 8x8, to keep the sweep fast on a small CPU; Bi-Real-18 also runs once at 224x224.
"""
from __future__ import annotations

import pytest

import torch

from fractalc.backends.torch import build_torch, from_graph  # noqa: E402
from fractalc.compiler import compile_spec  # noqa: E402
from fractalc.cost import cost  # noqa: E402

from conftest import ALL_SPECS, SPECS, spec_id  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_overrides(path) -> dict[str, str]:
    params = compile_spec(path).params
    return {"dataset": "cifar10"} if "dataset" in params else {"size": "8"}


def check_network(c, batch: int = 2):
    torch.manual_seed(0)
    # drop-path off: a dropped path legitimately gets zero gradient (tested on its own).
    model = from_graph(c.graph, seed=0, drop_path=False).train()
    x = torch.randn(batch, *c.graph.shape(c.graph.input_id))
    y = model(x)
    assert tuple(y.shape) == (batch, *c.graph.shape(c.graph.output_id))
    assert torch.isfinite(y).all()
    (y.float() ** 2).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient reaches {name}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient at {name}"
        assert p.grad.abs().sum() > 0, f"zero gradient at {name}"
    # Parameter counts: the cost model's float (conv, linear, BN scale and shift) + binary
    # parameters; BN running statistics are buffers on both sides.
    co = cost(c.graph)
    float_params = sum(p.numel() for n, p in model.named_parameters() if not _is_binary(c.graph, n))
    binary_params = sum(p.numel() for n, p in model.named_parameters() if _is_binary(c.graph, n))
    assert float_params == co.total("float_params")
    assert binary_params == co.total("binary_params")
    bn_buffers = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert bn_buffers == co.total("bn_buffers")
    return model


def _is_binary(g, param_name: str) -> bool:
    from fractalc import ir
    return isinstance(g.op(param_name.rsplit(".", 1)[0]), ir.BinaryConv)


@pytest.mark.parametrize("path", ALL_SPECS, ids=spec_id)
def test_every_spec_forward_backward_and_counts(path):
    check_network(compile_spec(path, small_overrides(path)))


def test_bireal18_at_imagenet_size():
    c = compile_spec(SPECS / "bireal_resnet18.fr")
    assert c.graph.shape(c.graph.input_id) == (3, 224, 224)
    check_network(c, batch=1)


def test_state_dict_keys_are_ir_ids():
    c = compile_spec(SPECS / "rf_c3d4.fr", {"size": "8"})
    model = from_graph(c.graph)
    from fractalc import ir
    expected = []
    for n in c.graph.order():
        op = c.graph.op(n)
        if isinstance(op, (ir.Conv, ir.BinaryConv)):
            expected += [f"{n}.weight"] + ([f"{n}.bias"] if getattr(op, "bias", False) else [])
        elif isinstance(op, ir.BatchNorm):
            expected += [f"{n}.{k}" for k in ("weight", "bias", "running_mean", "running_var",
                                               "num_batches_tracked")]
    assert sorted(model.state_dict()) == sorted(expected)
    assert model.get_submodule("block.col2.conv1").weight.shape == (64, 64, 3, 3)


def test_build_torch_params_override_and_seed():
    a = build_torch(SPECS / "rf_c3d4.fr", seed=3, channels=8, size=8)
    b = build_torch(SPECS / "rf_c3d4.fr", seed=3, channels=8, size=8)
    c = build_torch(SPECS / "rf_c3d4.fr", seed=4, channels=8, size=8)
    assert a.get_submodule("block.col1.conv1").weight.shape == (8, 8, 3, 3)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])
    assert not torch.equal(a.state_dict()["block.col1.conv1.weight"],
                           c.state_dict()["block.col1.conv1.weight"])


def test_building_does_not_touch_the_global_rng():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    build_torch(SPECS / "rf_c3d4.fr", channels=8, size=8)
    assert torch.equal(before, torch.get_rng_state())


@pytest.mark.parametrize("order", ["conv-bn", "conv-relu-bn", "bn-conv", "bn-relu-conv"])
def test_layer_orders(order):
    c = compile_spec(SPECS / "rf_c3d4_resnet21.fr", {"dataset": "cifar10", "width": "8", "order": f'"{order}"'})
    check_network(c)
