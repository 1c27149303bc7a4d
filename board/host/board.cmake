# Build facts for board "host" (the default; read by tools/cross-test and tools/package): the
# native compiler, and a Debian-like OS with systemd.
set(BITSD_BOARD_TOOLCHAIN "")
set(BITSD_BOARD_SERVICE systemd)
