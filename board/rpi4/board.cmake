# Build facts for board "rpi4" (read by tools/cross-test; settings live in board.conf).
set(BITSD_BOARD_TOOLCHAIN "${CMAKE_CURRENT_LIST_DIR}/../../toolchains/aarch64-linux-gnu.cmake")
set(BITSD_BOARD_DEBIAN_ARCH arm64)
set(BITSD_BOARD_TRIPLE aarch64-linux-gnu)
