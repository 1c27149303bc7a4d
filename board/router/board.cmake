# Build facts for board "router" (read by tools/cross-test and tools/package): a little-endian MIPS
# router running OpenWrt, whose services are procd init scripts.
set(BITSD_BOARD_TOOLCHAIN mipsel-linux-gnu)
set(BITSD_BOARD_SERVICE procd)
# OpenWrt's libc is musl, not glibc: the packaged binary carries everything it needs.
set(BITSD_BOARD_LINK full)
