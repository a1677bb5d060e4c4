#!/bin/sh
# The standalone engine under AddressSanitizer + UndefinedBehaviorSanitizer: builds the loader
# fuzzer (backends/xnor/tools/fuzz_loader.cpp, linked with the sanitized libfractalc_rt) in
# build/sanitize, writes seed models with the normal build, and fuzzes the loader and the C API
# with each. Usage, from the repository root:
#   backends/xnor/sanitize_engine.sh [python] [iterations]   (default: .venv/bin/python 1500)
# Prints one "fuzz: ... OK" line per seed model; exits non-zero on any sanitizer report.
set -eu
PY=${1:-.venv/bin/python}
ITERS=${2:-1500}
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
cmake --build "$BUILD" --target fuzz_loader >/dev/null
SEEDS="$BUILD/engine-seeds"
mkdir -p "$SEEDS"
# one interpreter for the three seeds (each start imports the compiler)
"$PY" - "$SEEDS" <<'PYEOF'
import sys
from fractalc.backends.xnor.engine import main
d = sys.argv[1]
main(["--spec", "specs/bireal_resnet18.fr", "--set", 'dataset="cifar10"', "--set", "size=16", "-o", f"{d}/bireal_cifar.frt"])
main(["--spec", "specs/binary_densenet28.fr", "--set", 'dataset="cifar10"', "--set", "size=16", "-o", f"{d}/densenet_cifar.frt"])
main(["--spec", "specs/rf_c3d4.fr", "--set", "size=8", "-o", f"{d}/rf_c3d4.frt"])
# issue 14's op types 40..43: grouped, depthwise and dilated convs (binary and float), Max, GlobalMaxPool
with open(f"{d}/ops2.fr", "w") as f:
    f.write('import "fractalc:common.fr"\n'
            'rule mj[c](z) = maxjoin(z >> bn >> bconv[c, groups=2], z >> bn >> bconv[c, dilation=2])\n'
            'network ops2 {\n    input [3, 8, 8]\n'
            '    a = conv[16] >> bn >> relu >> conv[16, k=3, groups=16] >> bn\n    b = mj[64]\n'
            '    c = bn >> bconv[64, groups=4, dilation=2] >> bn >> gmp >> linear[10]\n}\n')
main(["--spec", f"{d}/ops2.fr", "-o", f"{d}/ops2.frt"])
PYEOF
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS UBSAN_OPTIONS
seed=1
for m in "$SEEDS"/*.frt; do
  "$BUILD/fuzz_loader" "$m" "$ITERS" "$seed"
  seed=$((seed + 1))
done
