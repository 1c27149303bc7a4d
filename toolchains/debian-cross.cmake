# Shared body of the Debian cross toolchain files. The including file sets BITSD_TARGET_TRIPLE,
# CMAKE_SYSTEM_PROCESSOR and BITSD_QEMU_NAME first. Compiler, sysroot and emulator only: project
# flags live in CMakeLists.txt (STYLE.md §2).
#
# What a machine needs (tools/cross-test installs it):
#   dpkg --add-architecture <arch> && apt-get update
#   apt-get install g++-<triple> qemu-user libstdc++6:<arch> libuv1-dev:<arch> \
#                   libmbedtls-dev:<arch> nettle-dev:<arch> libgtest-dev:<arch>
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_TRY_COMPILE_PLATFORM_VARIABLES BITSD_TARGET_TRIPLE BITSD_QEMU_NAME)

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
# (under /usr/<triple>) are different builds, and mixing one's ld.so with the other's libc.so.6
# hangs in pthread_create. So when the multiarch libc and libstdc++ are installed, qemu runs
# without -L (the host file system is the sysroot); otherwise it uses the cross runtime.
find_program(BITSD_QEMU ${BITSD_QEMU_NAME})
if(BITSD_QEMU)
  if(EXISTS /lib/${BITSD_TARGET_TRIPLE}/libc.so.6 AND EXISTS /usr/lib/${BITSD_TARGET_TRIPLE}/libstdc++.so.6)
    set(CMAKE_CROSSCOMPILING_EMULATOR ${BITSD_QEMU})
  else()
    set(CMAKE_CROSSCOMPILING_EMULATOR ${BITSD_QEMU} -L /usr/${BITSD_TARGET_TRIPLE})
  endif()
endif()
