#!/bin/sh
# Builds the XNOR kernels with AddressSanitizer + UndefinedBehaviorSanitizer and runs the kernel
# tests against that build (the installed extension is left alone). Usage, from the repository
# root: backends/xnor/sanitize.sh [python]   (default: .venv/bin/python)
set -eu
PY=${1:-.venv/bin/python}
BUILD=build/sanitize
# One build at a time in build/sanitize: the suite runs this script and sanitize_engine.sh /
# sanitize.sh, and several people's suites may run at once (two ninjas in one build directory
# corrupt its log). The lock is released when the script exits.
mkdir -p build
exec 9>build/sanitize.lock
if command -v flock >/dev/null 2>&1; then flock 9; fi
NB_DIR=$("$PY" -m nanobind --cmake_dir)
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFRACTALC_SANITIZE=ON \
  -Dnanobind_DIR="$NB_DIR" -DPython_EXECUTABLE="$(command -v "$PY" || echo "$PY")" >/dev/null
cmake --build "$BUILD" >/dev/null
LIB=$(ls "$BUILD"/_xnor*.so)
# Python itself is not instrumented: preload the runtime, and skip leak checks (CPython keeps
# allocations alive at exit by design).
ASAN_RT=$(${CXX:-c++} -print-file-name=libasan.so)
UBSAN_RT=$(${CXX:-c++} -print-file-name=libubsan.so)
LD_PRELOAD="$ASAN_RT $UBSAN_RT" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 FRACTALC_XNOR_LIB="$LIB" \
  "$PY" -m pytest -q -p no:cacheprovider tests/test_xnor_kernels.py
