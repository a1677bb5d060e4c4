"""Shared fixtures: paths and a compile helper."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
ALL_SPECS = sorted(SPECS.glob("*.fr"))
BLOCK_SPECS = [SPECS / n for n in ("f_c3d4.fr", "rf_c3d4.fr", "drf_c3d4.fr")]


def spec_id(p: Path) -> str:
    return p.stem


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture
def one_torch_thread():
    """torch on one intra-op thread for the test (restored after): the machine's 2 cores are
    shared, and one thread is several times faster than contended ones here."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
