"""Golden text of the printed IR for the three Figure-1 blocks (torch-style expect files).

Regenerate after an intended change with FRACTALC_UPDATE_GOLDEN=1 and review the diff.
"""
from __future__ import annotations

import os

import pytest

from fractalc.compiler import compile_spec
from fractalc.ir.printer import format_ir

from conftest import BLOCK_SPECS, ROOT, spec_id

GOLDEN = ROOT / "tests" / "golden" / "ir"


@pytest.mark.parametrize("path", BLOCK_SPECS, ids=spec_id)
def test_ir_listing_matches_golden(path):
    text = format_ir(compile_spec(path).graph)
    golden = GOLDEN / f"{path.stem}.txt"
    if os.environ.get("FRACTALC_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()
