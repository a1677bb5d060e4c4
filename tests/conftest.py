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
