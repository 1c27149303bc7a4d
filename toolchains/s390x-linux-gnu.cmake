# Cross toolchain for IBM Z (Debian s390x): the big-endian target that proves byte-order independence
# with Debian's cross compiler and multiarch libraries:
#   cmake -S . -B build-x -DCMAKE_TOOLCHAIN_FILE=toolchains/s390x-linux-gnu.cmake
# or let tools/cross-test BOARD do everything. Details in debian-cross.cmake.
set(BITSD_TARGET_TRIPLE "s390x-linux-gnu" CACHE STRING "GNU target triple")
set(CMAKE_SYSTEM_PROCESSOR s390x)
set(BITSD_QEMU_NAME qemu-s390x)
set(BITSD_DEBIAN_ARCH s390x)  # multiarch name of the target's packages
include(${CMAKE_CURRENT_LIST_DIR}/debian-cross.cmake)
