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
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


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
        pytest.skip("needs cmake and a C++ compiler (the package build needs them too)")
    r = subprocess.run(["sh", "backends/xnor/sanitize.sh", sys.executable], cwd=ROOT,
                       env=dict(os.environ, PATH=path), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"sanitizer build or kernel tests failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
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
    assert r.returncode == 0 and " passed" in r.stdout, f"runtime under ASan failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
