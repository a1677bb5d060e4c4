"""Training smoke test: a small binary RF network learns a fixed synthetic task on CPU."""
from __future__ import annotations

import pytest

import torch

from fractalc.backends.torch import build_torch  # noqa: E402

from conftest import SPECS  # noqa: E402
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def synthetic(n: int = 64, classes: int = 4, seed: int = 0):
    """Images = a class template (fixed random pattern) + noise: learnable, not trivial."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.randn(classes, 3, 32, 32, generator=g)
    y = torch.arange(n) % classes
    x = templates[y] + 0.5 * torch.randn(n, 3, 32, 32, generator=g)
    return x, y


def test_binary_rf_network_lowers_its_loss_in_30_steps():
    torch.manual_seed(0)
    model = build_torch(SPECS / "rf_c3d4_resnet21.fr", seed=0, dataset="cifar10", width=8, classes=4)
    assert model.mode == "binary" and model.training
    x, y = synthetic()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(30):
        idx = torch.arange(16) + 16 * (step % 4)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, (first, last)
