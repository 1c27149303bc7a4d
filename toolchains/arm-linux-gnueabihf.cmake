# Cross toolchain for 32-bit ARMv7 Linux with hard float (Debian armhf)
# with Debian's cross compiler and multiarch libraries:
#   cmake -S . -B build-x -DCMAKE_TOOLCHAIN_FILE=toolchains/arm-linux-gnueabihf.cmake
# or let tools/cross-test BOARD do everything. Details in debian-cross.cmake.
set(BITSD_TARGET_TRIPLE "arm-linux-gnueabihf" CACHE STRING "GNU target triple")
set(CMAKE_SYSTEM_PROCESSOR arm)
set(BITSD_QEMU_NAME qemu-arm)
set(BITSD_DEBIAN_ARCH armhf)  # multiarch name of the target's packages
include(${CMAKE_CURRENT_LIST_DIR}/debian-cross.cmake)
