# Build facts for board "host" (the default): native compiler, no toolchain file.
set(BITSD_BOARD_TOOLCHAIN "")
set(BITSD_BOARD_DEBIAN_ARCH "")
set(BITSD_BOARD_TRIPLE "")
