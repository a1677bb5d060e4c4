"""The engine's model loader and C API fuzzed under AddressSanitizer + UndefinedBehaviorSanitizer
(backends/xnor/sanitize_engine.sh: tools/fuzz_loader.cpp on four seed models (the fourth has
issue 14's grouped / dilated convs, Max and GlobalMaxPool, engine op types 40..43): byte flips,
truncation, growth, structured edits of the tables with the checksum recomputed). Every
mutated file must load or fail with an error code and a message; a loaded one must run. Any
sanitizer report aborts the script, and every seed's summary line must be there."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow
ITERATIONS = 300


@pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("ninja") is None, reason="needs cmake and ninja")
def test_loader_fuzz_under_sanitizers():
    py = Path(sys.executable)
    r = subprocess.run(["sh", "backends/xnor/sanitize_engine.sh", str(py), str(ITERATIONS)], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    lines = re.findall(r"fuzz: (\d+) cases, (\d+) rejected with an error, (\d+) accepted, (\d+) run: OK", out)
    assert len(lines) == 4, out[-4000:]
    for cases, rejected, accepted, ran in (tuple(map(int, l)) for l in lines):
        assert cases == ITERATIONS and rejected + accepted == cases
        assert rejected >= cases // 2 and accepted >= 1 and ran >= 1
