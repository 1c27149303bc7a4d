# Build facts for board "rpi4" (read by tools/cross-test and tools/package; settings live in
# board.conf): which toolchain builds it, and which service manager starts it.
set(BITSD_BOARD_TOOLCHAIN aarch64-linux-gnu)
set(BITSD_BOARD_SERVICE systemd)
# Raspberry Pi OS is Debian: the .deb depends on its libuv1 and libmbedcrypto7.
set(BITSD_BOARD_LINK shared)
