#!/usr/bin/env bash
# The host board's .deb, made by cpack from this build's binaries (the same CPack rules that
# `tools/package host` uses), checked without touching this machine's /etc:
#   - dpkg-deb --info/--contents: control fields, maintainer scripts, the expected files;
#   - the unpacked bitsd, started with the packaged config (paths moved to a temp dir), answers a Ping;
#   - postinst, run with DPKG_ROOT pointing at a scratch tree and stub user tools on PATH, creates
#     the bitsd group and user and gives an existing users file group bitsd and mode 0640.
#   deb_test.sh BUILD_DIR        exit 77 (skipped) when dpkg-deb is missing
set -euo pipefail
build=$1
command -v dpkg-deb >/dev/null || { echo "dpkg-deb is not installed: skipped"; exit 77; }
tmp=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fails=0
check() { local what=$1; shift; if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; fails=$((fails + 1)); fi; }

cpack --config "$build/CPackConfig.cmake" -G DEB -B "$tmp/cpack" -D CPACK_OUTPUT_FILE_PREFIX="$tmp/dist" >"$tmp/cpack.log" 2>&1 ||
  { cat "$tmp/cpack.log"; echo "FAIL: cpack"; exit 1; }
deb=$(find "$tmp/dist" -name 'bitsd_*.deb' | head -1)
[ -n "$deb" ] || { echo "FAIL: cpack made no .deb"; exit 1; }
arch=$(dpkg --print-architecture)
check "named bitsd_VERSION-host_$arch.deb" test "$(basename "$deb")" = "bitsd_$(sed -n 's/^project(bitsd VERSION \([0-9.]*\).*/\1/p' "$(dirname "$0")/../../CMakeLists.txt")-host_$arch.deb"

# --- control ----------------------------------------------------------------------------------------
dpkg-deb --info "$deb" >"$tmp/info"
field() { dpkg-deb --field "$deb" "$1"; }
check "Package: bitsd" test "$(field Package)" = bitsd
check "Architecture: $arch" test "$(field Architecture)" = "$arch"
check "Depends names libuv1 and passwd" bash -c '[[ "$0" == *libuv1* && "$0" == *passwd* ]]' "$(field Depends)"
check "Maintainer and Description set" test -n "$(field Maintainer)" -a -n "$(field Description)"
for s in postinst prerm postrm conffiles; do
  check "control archive has $s" grep -qE "^ +[0-9]+ bytes, +[0-9]+ lines .* $s( |$)" "$tmp/info"
done
dpkg-deb --ctrl-tarfile "$deb" | tar -x -C "$tmp" ./conffiles ./postinst
check "conffiles: bitsd.conf and the logrotate snippet" \
  bash -c 'grep -qx /etc/bitsd/bitsd.conf "$0" && grep -qx /etc/logrotate.d/bitsd "$0"' "$tmp/conffiles"

# --- contents ---------------------------------------------------------------------------------------
dpkg-deb --contents "$deb" | awk '{print $1, $6}' >"$tmp/contents"
for f in usr/sbin/bitsd usr/bin/bitsctl usr/bin/bitsclient lib/systemd/system/bitsd.service etc/bitsd/bitsd.conf \
         etc/logrotate.d/bitsd usr/share/man/man8/bitsd.8.gz usr/share/man/man5/bitsd.conf.5.gz \
         usr/share/man/man8/bitsctl.8.gz usr/share/man/man1/bitsclient.1.gz \
         usr/share/bash-completion/completions/bitsd usr/share/bash-completion/completions/bitsctl \
         usr/share/bash-completion/completions/bitsclient usr/share/doc/bitsd/README.md; do
  check "contains /$f" grep -q " \./$f\$" "$tmp/contents"
done
check "no file outside /etc /lib /usr" bash -c '! grep -vE " \./((etc|lib|usr)(/.*)?)?$" "$0"' "$tmp/contents"
check "binaries are executable" bash -c 'grep -E " \./usr/s?bin/" "$0" | grep -q "^-rwxr-xr-x"' "$tmp/contents"

fs="$tmp/fs"
dpkg-deb -x "$deb" "$fs"
unit="$fs/lib/systemd/system/bitsd.service"
check "the unit runs as user bitsd" grep -qx "User=bitsd" "$unit"
check "the unit starts /usr/sbin/bitsd with the packaged config" \
  grep -qx "ExecStart=/usr/sbin/bitsd --config /etc/bitsd/bitsd.conf" "$unit"
check "the unit may write /var/lib/bitsd" grep -q "^ReadWritePaths=/var/lib/bitsd/uploads /var/lib/bitsd/state" "$unit"
check "the config sets FHS root and state" \
  bash -c 'grep -qx "root = /var/lib/bitsd/uploads" "$0" && grep -qx "state = /var/lib/bitsd/state" "$0"' "$fs/etc/bitsd/bitsd.conf"
check "logrotate: /var/log/bitsd/*.log, SIGUSR1 after rotating" \
  bash -c 'grep -q "^/var/log/bitsd/\*.log {" "$0" && grep -q "kill --signal=USR1" "$0"' "$fs/etc/logrotate.d/bitsd"
check "man pages are gzip" gzip -t "$fs/usr/share/man/man8/bitsd.8.gz"

# --- the unpacked bitsd serves ----------------------------------------------------------------------
# The packaged config as the service reads it, with its paths moved into the temp dir.
sed -e "s|^root = /|root = $tmp/srv/|" -e "s|^state = /|state = $tmp/srv/|" "$fs/etc/bitsd/bitsd.conf" >"$tmp/bitsd.conf"
"$fs/usr/sbin/bitsd" --config "$tmp/bitsd.conf" --listen 127.0.0.1:0 >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 100); do
  grep -q "listening on" "$tmp/out" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
url=$(sed -n 's/^bitsd listening on //p' "$tmp/out")
check "the unpacked bitsd became ready" test -n "$url"
if [ -n "$url" ]; then
  check "it made the configured root and state" test -d "$tmp/srv/var/lib/bitsd/uploads" -a -d "$tmp/srv/var/lib/bitsd/state"
  if command -v curl >/dev/null; then
    curl -s -o /dev/null -D "$tmp/headers" -X BITS_POST -H "BITS-Packet-Type: Ping" "${url%/}/ping" || true
    check "Ping answered 200 with an Ack" bash -c 'grep -q "^HTTP/1.1 200" "$0" && grep -qi "^BITS-Packet-Type: Ack" "$0"' "$tmp/headers"
  fi
  kill -TERM "$pid"
  rc=0
  wait "$pid" || rc=$?
  pid=""
  check "it stopped with exit 0 on SIGTERM" test "$rc" -eq 0
else
  cat "$tmp/err"
fi

# --- postinst against a scratch root ----------------------------------------------------------------
root="$tmp/root"
stubs="$tmp/stubs"
mkdir -p "$root/etc/bitsd" "$stubs"
# Stand-ins for the tools that would change this machine's users and ownership: they log their
# arguments (install also makes the directory, without the owner).
for tool in groupadd useradd chgrp deb-systemd-helper deb-systemd-invoke systemctl; do
  printf '#!/bin/sh\necho "%s $*" >>"%s"\n' "$tool" "$tmp/calls" >"$stubs/$tool"
done
printf '#!/bin/sh\necho "getent $*" >>"%s"\nexit 2\n' "$tmp/calls" >"$stubs/getent"
printf '#!/bin/sh\necho "install $*" >>"%s"\nfor a; do d=$a; done\nwhile [ $# -gt 0 ]; do case $1 in -o|-g|-m) shift 2;; -d) shift;; *) mkdir -p "$1"; shift;; esac; done\n' \
  "$tmp/calls" >"$stubs/install"
chmod +x "$stubs"/*
echo "alice:pbkdf2-sha256:1000:x:y" >"$root/etc/bitsd/users"
chmod 0600 "$root/etc/bitsd/users"
rc=0
PATH="$stubs:$PATH" DPKG_ROOT="$root" sh "$tmp/postinst" configure >"$tmp/postinst.out" 2>&1 || rc=$?
check "postinst configure exits 0" test "$rc" -eq 0
check "postinst creates the system group bitsd" grep -qx "groupadd --system bitsd" "$tmp/calls"
check "postinst creates the system user bitsd in group bitsd" \
  grep -qE "^useradd --system --gid bitsd .*--shell /usr/sbin/nologin .* bitsd$" "$tmp/calls"
check "postinst makes root and state, owned by bitsd" \
  grep -qx "install -d -o bitsd -g bitsd -m 0750 $root/var/lib/bitsd/uploads $root/var/lib/bitsd/state" "$tmp/calls"
check "postinst makes /var/log/bitsd" test -d "$root/var/log/bitsd"
check "postinst gives the users file group bitsd" grep -qx "chgrp bitsd $root/etc/bitsd/users" "$tmp/calls"
check "postinst makes the users file 0640" test "$(stat -c %a "$root/etc/bitsd/users")" = 640
check "postinst leaves systemd alone under DPKG_ROOT" bash -c '! grep -qE "^(systemctl|deb-systemd)" "$0"' "$tmp/calls"

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
