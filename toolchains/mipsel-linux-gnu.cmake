# Cross toolchain for little-endian 32-bit MIPS Linux (router class; Debian mipsel)
# with Debian's cross compiler and multiarch libraries:
#   cmake -S . -B build-x -DCMAKE_TOOLCHAIN_FILE=toolchains/mipsel-linux-gnu.cmake
# or let tools/cross-test BOARD do everything. Details in debian-cross.cmake.
set(BITSD_TARGET_TRIPLE "mipsel-linux-gnu" CACHE STRING "GNU target triple")
set(CMAKE_SYSTEM_PROCESSOR mipsel)
set(BITSD_QEMU_NAME qemu-mipsel)
set(BITSD_DEBIAN_ARCH mipsel)  # multiarch name of the target's packages
include(${CMAKE_CURRENT_LIST_DIR}/debian-cross.cmake)
