# CMake toolchain file for a cross build to 64-bit ARM Linux with Debian's cross compiler
# (apt-get install g++-aarch64-linux-gnu). Used by cross_aarch64.sh; by hand:
#   cmake -S . -B build/aarch64 -G Ninja -DCMAKE_TOOLCHAIN_FILE=backends/xnor/tools/aarch64-linux-gnu.cmake \
#         -DFRACTALC_PYTHON=OFF -DCMAKE_EXE_LINKER_FLAGS=-static
#   cmake --build build/aarch64 --target fractalc-run fractalc_rt_static
# Executables linked with -static run under qemu-user without a sysroot (qemu-aarch64 PROGRAM);
# dynamic ones need `qemu-aarch64 -L /usr/aarch64-linux-gnu PROGRAM`.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(FRACTALC_CROSS_PREFIX "aarch64-linux-gnu-" CACHE STRING "prefix of the cross compiler's tools")
set(CMAKE_C_COMPILER ${FRACTALC_CROSS_PREFIX}gcc)
set(CMAKE_CXX_COMPILER ${FRACTALC_CROSS_PREFIX}g++)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
find_program(FRACTALC_QEMU qemu-aarch64)
if(FRACTALC_QEMU)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${FRACTALC_QEMU})
endif()
