"""The kernels under AddressSanitizer + UndefinedBehaviorSanitizer (issue 5, Safety).

Builds the ASan+UBSan extension with backends/xnor/sanitize.sh (which also runs the kernel
tests against it), then runs the runtime's fuzz loop and the block specs' exactness tests with
that build loaded (FRACTALC_XNOR_LIB), so every out-of-bounds access or undefined operation the
whole-model executor can provoke in native code aborts the child and fails this test.
Incremental after the first build (seconds); the first build takes about a minute.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import OPT_OUT, ROOT

pytestmark = pytest.mark.slow

MIN_KERNEL_TESTS = 50  # tests/test_xnor_kernels.py: 57 with the portable path alone, 105 with avx2 + avx512
BAD = ("failed", "error", "errors", "skipped", "xfailed", "xpassed")


def _summary(out: str) -> dict[str, int]:
    """The counts in pytest's last summary line ("105 passed, 2 skipped in 7.9s")."""
    lines = [l for l in out.splitlines() if re.search(r"\d+ (passed|failed|error)", l)]
    assert lines, f"no pytest summary in the output:\n{out[-3000:]}"
    return {k: int(n) for n, k in re.findall(r"(\d+) (\w+)", lines[-1])}


def _all_passed(out: str, at_least: int, what: str) -> None:
    counts = _summary(out)
    bad = {k: v for k, v in counts.items() if k in BAD and v}
    assert not bad and counts.get("passed", 0) >= at_least, \
        f"{what}: {counts} (want >= {at_least} passed, none failed, skipped or in error)\n{out[-3000:]}"


def test_summary_parser():
    assert _summary("....\n105 passed in 7.92s\n") == {"passed": 105}
    assert _summary("x\n3 failed, 100 passed, 2 skipped in 1.00s") == {"failed": 3, "passed": 100, "skipped": 2}
    with pytest.raises(AssertionError):
        _all_passed("102 passed, 1 skipped in 3s", 100, "kernels")
    with pytest.raises(AssertionError):
        _all_passed("7 passed in 3s", 100, "kernels")
    with pytest.raises(AssertionError):
        _all_passed("1 error in 3s", 0, "kernels")
    _all_passed("101 passed in 3s", 100, "kernels")
    _all_passed("3 passed, 25 deselected, 1 warning in 9.1s", 3, "specs")


def _runtime_libs() -> str:
    cxx = os.environ.get("CXX", "c++")
    libs = []
    for lib in ("libasan.so", "libubsan.so"):
        p = subprocess.run([cxx, f"-print-file-name={lib}"], capture_output=True, text=True).stdout.strip()
        libs.append(p)
    return " ".join(libs)


def test_kernels_and_runtime_under_sanitizers():
    # cmake/ninja may live in the venv (pip packages), as for the package build itself
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    if shutil.which("cmake", path=path) is None or shutil.which(os.environ.get("CXX", "c++"), path=path) is None:
        if os.environ.get(OPT_OUT) == "1":
            pytest.skip("needs cmake and a C++ compiler (the package build needs them too)")
        pytest.fail(f"needs cmake and a C++ compiler (the package build needs them too; {OPT_OUT}=1 skips)")
    r = subprocess.run(["sh", "backends/xnor/sanitize.sh", sys.executable], cwd=ROOT,
                       env=dict(os.environ, PATH=path), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"sanitizer build or kernel tests failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    _all_passed(r.stdout, MIN_KERNEL_TESTS, "kernel tests under ASan + UBSan")  # ran, not skipped
    lib = glob.glob(str(ROOT / "build" / "sanitize" / "_xnor*.so"))
    assert lib, "sanitize.sh built no extension"
    env = dict(os.environ, LD_PRELOAD=_runtime_libs(), FRACTALC_XNOR_LIB=lib[0],
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
               UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1", FRACTALC_FUZZ_EXAMPLES="150")
    r = subprocess.run([sys.executable, "tests/test_runtime_fuzz.py", "--child"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0 and "fuzz:" in r.stdout, f"fuzz under ASan failed:\n{r.stderr[-6000:]}"
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "tests/test_runtime_specs.py", "-k",
                        "test_spec_exact and (f_c3d4 or rf_c3d4 or drf_c3d4) and not resnet and not densenet"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"runtime under ASan failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    _all_passed(r.stdout, 3, "block specs' exactness under ASan + UBSan")  # f_c3d4, rf_c3d4, drf_c3d4
