#!/bin/sh
# Cross-builds the native runtime for 64-bit ARM Linux (AArch64, NEON kernels) with Debian's
# g++-aarch64-linux-gnu, statically linked so qemu-user runs the programs without a sysroot:
#   BUILD/fractalc-run      the standalone engine's command-line program
#   BUILD/run_model         examples/c/run_model.c against the static libfractalc_rt.a
#   BUILD/xnor_check        the kernel test driver (backends/xnor/tools/xnor_check.cpp)
#   BUILD/libfractalc_rt.a  the C library (API: backends/xnor/include/fractalc_rt.h)
# Usage, from the repository root: backends/xnor/tools/cross_aarch64.sh [BUILD]  (default
# build/aarch64). Prints BUILD. The build is skipped when BUILD/.stamp holds the hash of every
# input (sources, headers, tools, CMakeLists.txt, the C example, this script); otherwise ninja
# rebuilds what changed. Run the results with qemu-aarch64 (apt-get install qemu-user), e.g.
#   qemu-aarch64 build/aarch64/fractalc-run model.frt x.npy y.npy --isa neon
set -eu
BUILD=${1:-build/aarch64}
CROSS=${FRACTALC_CROSS_PREFIX:-aarch64-linux-gnu-}
for tool in "${CROSS}g++" "${CROSS}gcc" cmake ninja sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "cross_aarch64.sh: $tool not found (apt-get install g++-aarch64-linux-gnu cmake ninja-build)" >&2
    exit 3
  }
done
mkdir -p "$BUILD"
# one build at a time in BUILD (several test suites may run at once)
exec 9>"$BUILD.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi
HASH=$( (for f in CMakeLists.txt examples/c/run_model.c "$0" backends/xnor/src/* backends/xnor/include/* \
                 backends/xnor/tools/*.cpp backends/xnor/tools/*.cmake; do
           printf '%s\n' "$f"; cat "$f"; done; echo "$CROSS") | sha256sum | cut -d' ' -f1)
if [ -f "$BUILD/.stamp" ] && [ "$(cat "$BUILD/.stamp")" = "$HASH" ] && [ -x "$BUILD/fractalc-run" ] \
   && [ -x "$BUILD/run_model" ] && [ -x "$BUILD/xnor_check" ]; then
  echo "$BUILD"
  exit 0
fi
rm -f "$BUILD/.stamp"
if [ ! -f "$BUILD/build.ninja" ]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_TOOLCHAIN_FILE="$(pwd)/backends/xnor/tools/aarch64-linux-gnu.cmake" \
    -DFRACTALC_CROSS_PREFIX="$CROSS" -DFRACTALC_PYTHON=OFF -DCMAKE_EXE_LINKER_FLAGS=-static >/dev/null
fi
cmake --build "$BUILD" --target fractalc_rt_static fractalc-run >/dev/null
"${CROSS}g++" -std=c++20 -O2 -Wall -Wextra -static -Ibackends/xnor/src -Ibackends/xnor/include \
  backends/xnor/tools/xnor_check.cpp "$BUILD/libfractalc_rt.a" -lpthread -o "$BUILD/xnor_check"
"${CROSS}gcc" -std=c11 -Wall -Werror -O1 -static examples/c/run_model.c -Ibackends/xnor/include \
  "$BUILD/libfractalc_rt.a" -lstdc++ -lpthread -lm -o "$BUILD/run_model"
echo "$HASH" > "$BUILD/.stamp"
echo "$BUILD"
