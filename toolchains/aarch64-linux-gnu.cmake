# Cross toolchain for 64-bit ARM Linux (Raspberry Pi 4 class; Debian arm64)
# with Debian's cross compiler and multiarch libraries:
#   cmake -S . -B build-x -DCMAKE_TOOLCHAIN_FILE=toolchains/aarch64-linux-gnu.cmake
# or let tools/cross-test BOARD do everything. Details in debian-cross.cmake.
set(BITSD_TARGET_TRIPLE "aarch64-linux-gnu" CACHE STRING "GNU target triple")
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(BITSD_QEMU_NAME qemu-aarch64)
set(BITSD_DEBIAN_ARCH arm64)  # multiarch name of the target's packages
include(${CMAKE_CURRENT_LIST_DIR}/debian-cross.cmake)
