# Cross toolchain for 64-bit ARM Linux (e.g. Raspberry Pi 4), using Debian's cross compiler and
# multiarch libraries:
#   apt-get install gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user
#   dpkg --add-architecture arm64 && apt-get update
#   apt-get install libuv1-dev:arm64 libmbedtls-dev:arm64 libgtest-dev:arm64
#   cmake -S . -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=toolchains/aarch64-linux-gnu.cmake
# Compiler and sysroot only: project flags live in CMakeLists.txt (STYLE.md §2).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(BITSD_TARGET_TRIPLE "aarch64-linux-gnu" CACHE STRING "GNU target triple")
set(CMAKE_TRY_COMPILE_PLATFORM_VARIABLES BITSD_TARGET_TRIPLE)

find_program(CMAKE_C_COMPILER ${BITSD_TARGET_TRIPLE}-gcc REQUIRED)
find_program(CMAKE_CXX_COMPILER ${BITSD_TARGET_TRIPLE}-g++ REQUIRED)

# Debian multiarch: target libraries under /usr/lib/<triple>, headers under /usr/include.
set(CMAKE_FIND_ROOT_PATH /usr/${BITSD_TARGET_TRIPLE})
set(CMAKE_LIBRARY_ARCHITECTURE ${BITSD_TARGET_TRIPLE})
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/${BITSD_TARGET_TRIPLE}/pkgconfig:/usr/share/pkgconfig")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)

# ctest runs target binaries under qemu-user. The sysroot must hold one consistent glibc: the
# multiarch libc6:<arch> that the -dev packages pull in (under /) and Debian's libc6-<arch>-cross
# (under /usr/<triple>) are different builds, and mixing their ld.so and libc.so.6 hangs in
# pthread_create. So (with libstdc++6:<arch> installed too) run without -L (the host file system is the sysroot) whenever the multiarch libc is installed.
find_program(BITSD_QEMU qemu-aarch64)
if(BITSD_QEMU)
  if(EXISTS /lib/${BITSD_TARGET_TRIPLE}/libc.so.6 AND EXISTS /usr/lib/${BITSD_TARGET_TRIPLE}/libstdc++.so.6)
    set(CMAKE_CROSSCOMPILING_EMULATOR ${BITSD_QEMU})  # the host file system is the sysroot
  else()
    set(CMAKE_CROSSCOMPILING_EMULATOR ${BITSD_QEMU} -L /usr/${BITSD_TARGET_TRIPLE})
  endif()
endif()
