# Sourced by the tools that cross-build: reads the build facts that board/<board>/board.cmake and
# toolchains/<triple>.cmake set with plain `set(NAME value)` lines, so the shell scripts and CMake
# share one source of truth.
#   board_fact BOARD NAME        e.g. board_fact rpi4 BITSD_BOARD_TOOLCHAIN   -> aarch64-linux-gnu
#   toolchain_fact TRIPLE NAME   e.g. toolchain_fact aarch64-linux-gnu BITSD_QEMU_NAME -> qemu-aarch64
_cmake_set_value() {  # file name
  sed -nE "s/^set\\($2 \"?([^ \")]*)\"?\\).*/\\1/p" "$1" | head -n 1
}
board_fact() { _cmake_set_value "board/$1/board.cmake" "$2"; }
toolchain_fact() { _cmake_set_value "toolchains/$1.cmake" "$2"; }
