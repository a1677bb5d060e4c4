"""Binarization semantics against hand-made references: sign, ApproxSign, STE, binary conv, modes."""
from __future__ import annotations

import pytest

import torch
import torch.nn.functional as F  # noqa: E402

from fractalc.backends.torch import binarize as B  # noqa: E402
from fractalc.backends.torch import build_torch  # noqa: E402

from conftest import SPECS  # noqa: E402
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def hand_sign(x):
    return torch.where(x >= 0, 1.0, -1.0)


def test_sign_of_zero_is_plus_one():
    x = torch.tensor([-2.0, -0.0, 0.0, 1e-30, -1e-30, 3.0])
    assert B.sign(x).tolist() == [-1.0, 1.0, 1.0, 1.0, -1.0, 1.0]


def test_approxsign_gradient_matches_formula_on_grid():
    x = torch.linspace(-1.5, 1.5, 301, dtype=torch.float64, requires_grad=True)
    y = B.SignApproxSign.apply(x)
    assert torch.equal(y, hand_sign(x.detach()))
    y.sum().backward()
    xd = x.detach()
    want = torch.where((xd >= -1) & (xd < 0), 2 + 2 * xd,
                       torch.where((xd >= 0) & (xd < 1), 2 - 2 * xd, torch.zeros_like(xd)))
    assert torch.allclose(x.grad, want, atol=1e-12)
    assert x.grad[150] == 2.0  # x = 0: the peak


def test_ste_clips_outside_unit_interval():
    x = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.0001, 7.0], requires_grad=True)
    B.SignSTE.apply(x).backward(torch.full_like(x, 3.0))
    assert x.grad.tolist() == [0.0, 3.0, 3.0, 3.0, 3.0, 3.0, 0.0, 0.0]


def test_binary_weight_scale_and_gradient():
    w = torch.randn(4, 3, 3, 3) * 0.8
    w[0, 0, 0, 0] = 0.0
    w[1, 0, 0, 0] = 1.5  # |W| > 1: the STE blocks its gradient
    w.requires_grad_(True)
    wb = B.binary_weight(w)
    alpha = w.detach().abs().mean(dim=(1, 2, 3)).view(4, 1, 1, 1)
    assert torch.allclose(wb, alpha * hand_sign(w.detach()))
    g = torch.randn_like(wb)
    wb.backward(g)
    # alpha is detached: the gradient is alpha * g where |W| <= 1, 0 elsewhere.
    assert torch.allclose(w.grad, alpha * g * (w.detach().abs() <= 1))
    assert w.grad[1, 0, 0, 0] == 0


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1), (1, 0)])
def test_binary_conv_computes_with_pm_alpha_and_pm_one(stride, padding):
    torch.manual_seed(0)
    x = torch.randn(2, 5, 7, 7)
    x[0, :, 2, 3] = 0.0  # sign(0) = +1
    w = torch.randn(6, 5, 3, 3)
    got = B.binary_conv2d(x, w, stride, padding, False, "approxsign", "binary")
    alpha = w.abs().mean(dim=(1, 2, 3))
    ref = F.conv2d(hand_sign(x), hand_sign(w), stride=stride, padding=padding) * alpha.view(1, -1, 1, 1)
    assert torch.allclose(got, ref, atol=1e-5)
    # the +-1 conv itself is integer valued: got / alpha recovers exact integers
    ints = got / alpha.view(1, -1, 1, 1)
    assert torch.allclose(ints, ints.round(), atol=1e-4)


def test_binary_conv_one_padding():
    torch.manual_seed(1)
    x = torch.randn(1, 3, 5, 5)
    w = torch.randn(2, 3, 3, 3)
    got = B.binary_conv2d(x, w, 1, 1, True, "ste", "binary")
    padded = F.pad(hand_sign(x), (1, 1, 1, 1), value=1.0)
    ref = F.conv2d(padded, hand_sign(w)) * w.abs().mean(dim=(1, 2, 3)).view(1, -1, 1, 1)
    assert torch.allclose(got, ref, atol=1e-5)
    zero = B.binary_conv2d(x, w, 1, 1, False, "ste", "binary")
    assert not torch.allclose(got, zero)  # the border differs, the interior does not
    assert torch.allclose(got[..., 1:-1, 1:-1], zero[..., 1:-1, 1:-1])


def test_binary_conv_input_gradient_follows_grad_choice():
    torch.manual_seed(2)
    w = torch.randn(1, 1, 1, 1).abs()  # 1x1, positive: dy/dx = alpha * d sign(x)/dx
    x = torch.linspace(-1.5, 1.5, 31).view(1, 1, 1, 31)
    for grad, fn in (("approxsign", lambda t: torch.clamp(2 - 2 * t.abs(), min=0)),
                     ("ste", lambda t: (t.abs() <= 1).float())):
        xi = x.clone().requires_grad_(True)
        B.binary_conv2d(xi, w, 1, 0, False, grad, "binary").sum().backward()
        assert torch.allclose(xi.grad, w.abs().mean() * fn(x), atol=1e-6), grad


def test_fp_and_tanh_modes_are_float_convs():
    torch.manual_seed(3)
    x, w = torch.randn(2, 4, 6, 6), torch.randn(3, 4, 3, 3)
    assert torch.allclose(B.binary_conv2d(x, w, 1, 1, True, "ste", "fp"), F.conv2d(x, w, padding=1))
    assert torch.allclose(B.binary_conv2d(x, w, 2, 1, False, "ste", "tanh"),
                          F.conv2d(torch.tanh(x), w, stride=2, padding=1))


def test_mode_switch_without_rebuild_and_checkpoints_move_between_modes():
    torch.manual_seed(4)
    # train(): in eval the binary conv computes the deployed arithmetic with its BN folded in
    # (tests/test_torch_exact.py), so the BN module is not called there
    model = build_torch(SPECS / "rf_c3d4.fr", channels=4, size=6).train()
    conv = model.get_submodule("block.col3.conv1")
    bn = model.get_submodule("block.col3.bn1")
    x = torch.randn(2, 4, 6, 6)
    # rf_c3d4's column 3 is bn(bconv(x)) + x; read the conv output through a hook.
    seen = {}
    bn.register_forward_hook(lambda m, i, o: seen.__setitem__("conv_out", i[0]))
    ids_before = [id(p) for p in model.parameters()]
    for mode, ref in (("fp", F.conv2d(x, conv.weight, padding=1)),
                      ("tanh", F.conv2d(torch.tanh(x), conv.weight, padding=1)),
                      ("binary", F.conv2d(hand_sign(x), hand_sign(conv.weight), padding=1)
                       * conv.weight.abs().mean(dim=(1, 2, 3)).view(1, -1, 1, 1))):
        assert model.set_mode(mode) is model and model.mode == mode
        model(x)
        assert torch.allclose(seen["conv_out"], ref, atol=1e-5), mode
    assert ids_before == [id(p) for p in model.parameters()]
    with pytest.raises(ValueError):
        model.set_mode("ternary")
    fp = build_torch(SPECS / "rf_c3d4.fr", seed=9, channels=4, size=6).set_mode("fp")
    binary = build_torch(SPECS / "rf_c3d4.fr", seed=0, channels=4, size=6)
    binary.load_state_dict(fp.state_dict(), strict=True)
    assert binary.mode == "binary"


def test_full_precision_layers_ignore_the_mode():
    torch.manual_seed(5)
    fpnet = build_torch(SPECS / "fractalnet_cifar.fr", filters=[4, 4, 4, 4, 4]).eval()  # no binary conv at all
    x = torch.randn(2, 3, 32, 32)
    outs = [fpnet.set_mode(m)(x) for m in ("fp", "tanh", "binary")]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    # In a binary network, the full-precision stem gives the same output in every mode.
    net = build_torch(SPECS / "bireal_resnet18.fr", dataset="cifar10", width=8).eval()
    seen = []
    net.get_submodule("stem.conv1").register_forward_hook(lambda m, i, o: seen.append(o))
    for m in ("fp", "tanh", "binary"):
        net.set_mode(m)(x)
    assert torch.equal(seen[0], seen[1]) and torch.equal(seen[0], seen[2])
