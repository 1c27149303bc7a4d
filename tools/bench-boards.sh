#!/usr/bin/env bash
# Per-board budgets for docs/BENCHMARKS.md: stripped binary size for each link mode (and, for
# static and shared, also built with -DBITSD_TLS=OFF), RSS idle and with 100 uploads in flight, and
# stack high-water. Foreign boards run under qemu-user.
#   tools/bench-boards.sh [BOARD...]          (default: host rpi4 router)
#
# How memory is measured under qemu-user: qemu maps the guest into its own address space, so
# /proc/PID/smaps of the qemu process holds both. A 64-bit guest runs with guest_base 0 (all of its
# mappings lie below 0x100000000000, qemu's own lie far above); a 32-bit guest is placed at
# -B 0x100000000000 and owns the 4 GiB from there. Only mappings in the guest's range are summed:
#   rss      every resident page of the guest (its binary, libraries, heap, pools, stacks). qemu
#            touches more of a library's text than a native run would, so this overstates file pages.
#   anon     the anonymous part only: heap, pools, .bss, stacks (what bitsd itself allocates).
#   stack    the most resident pages in any one thread stack (the 8 MiB stack mappings), main thread
#            included (which also holds argv and the environment): a page-granular high-water mark.
# On the host board the same figures come from bitsd's own smaps, natively.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/board-facts.sh
boards=("$@")
[ ${#boards[@]} -gt 0 ] || boards=(host rpi4 router)

cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DBITSD_TESTS=OFF >/dev/null
cmake --build build-bench -j"$(nproc)" --target bitsbench >/dev/null
bench=build-bench/bin/bitsbench
stackBytes=$(( $(ulimit -s) * 1024 ))

# guest_sums PID LO HI -> "rss_kib anon_kib stack_kib"
guest_sums() {
  awk -v lo="$2" -v hi="$3" -v stk="$stackBytes" '
    function hex(s,   i, c, v) { v = 0; s = tolower(s); for (i = 1; i <= length(s); i++) { c = index("0123456789abcdef", substr(s, i, 1)) - 1; v = v * 16 + c } return v }
    /^[0-9a-f]+-[0-9a-f]+ / { split($1, r, "-"); a = hex(r[1]); b = hex(r[2]); inside = (a >= lo && a < hi); size = b - a; name = $6; next }
    inside && /^Rss:/ { rss += $2; if ((name == "" || name == "[stack]") && (size == stk || name == "[stack]") && $2 > st) st = $2 }
    inside && /^Anonymous:/ { anon += $2 }
    END { printf "%d %d %d\n", rss, anon, st }' "/proc/$1/smaps"
}

printf '%-8s %-8s %12s %12s %12s %12s | %10s %10s %10s | %10s %10s | %8s\n' board arch shared static full \
  static_notls idle_rss idle_anon idle_notls act_rss act_anon stack
for board in "${boards[@]}"; do
  triple=$(board_fact "$board" BITSD_BOARD_TOOLCHAIN)
  emu=(); lo=0; hi=$((1 << 62)); arch=$(uname -m); strip=strip
  tc=()
  if [ -n "$triple" ]; then
    tools/cross-deps "$triple" >/dev/null
    tc=(-DCMAKE_TOOLCHAIN_FILE="toolchains/$triple.cmake")
    qemu=$(toolchain_fact "$triple" BITSD_QEMU_NAME)
    arch=${triple%%-*}
    strip=$triple-strip
  fi
  sizes=()
  for variant in shared static full static-notls shared-notls; do
    link=${variant%-notls}
    tlsOpt=-DBITSD_TLS=ON
    [ "$variant" = "$link" ] || tlsOpt=-DBITSD_TLS=OFF
    dir="build-budget-$board-$variant"
    cmake --no-warn-unused-cli -S . -B "$dir" "${tc[@]}" -DBITSD_BOARD="$board" -DBITSD_TESTS=OFF -DCMAKE_BUILD_TYPE=Release \
          -DBITSD_LINK=$link $tlsOpt >/dev/null
    cmake --build "$dir" -j"$(nproc)" --target bitsd >/dev/null 2>&1
    $strip -o "$dir/bitsd.stripped" "$dir/bin/bitsd"
    sizes+=("$(stat -c %s "$dir/bitsd.stripped")")
  done
  bin="build-budget-$board-shared/bin/bitsd"
  if [ -n "$triple" ]; then
    if file -L "$bin" | grep -q "ELF 32-bit"; then
      lo=$((0x100000000000)); hi=$((lo + (1 << 32))); emu=("$qemu" -B 0x100000000000)
    else
      lo=0; hi=$((0x100000000000)); emu=("$qemu")
    fi
  fi
  # Idle RSS of the build without TLS (no libmbedtls/libmbedx509 mapped).
  tmp=$(mktemp -d)
  "${emu[@]}" "build-budget-$board-shared-notls/bin/bitsd" --listen 127.0.0.1:0 --root "$tmp/r" --state "$tmp/s" \
    >"$tmp/out" 2>"$tmp/err" &
  pid=$!
  for _ in $(seq 200); do grep -q "listening on" "$tmp/out" && break; sleep 0.05; done
  sleep 1
  read -r idleNoTls _ _ < <(guest_sums "$pid" "$lo" "$hi")
  kill -TERM "$pid"; wait "$pid" || true
  rm -rf "$tmp"
  tmp=$(mktemp -d)
  # Enough connections for 100 uploads on every board (the router's default is 64).
  "${emu[@]}" "$bin" --listen 127.0.0.1:0 --root "$tmp/r" --state "$tmp/s" --max-connections 128 \
    --max-sessions 256 --fdatasync off >"$tmp/out" 2>"$tmp/err" &
  pid=$!
  for _ in $(seq 200); do grep -q "listening on" "$tmp/out" && break; sleep 0.05; done
  port=$(sed -nE 's/.*127\.0\.0\.1:([0-9]+).*/\1/p' "$tmp/out")
  [ -n "$port" ] || { echo "bench-boards: $board: bitsd did not start" >&2; cat "$tmp/err" >&2; exit 1; }
  sleep 1
  read -r idleRss idleAnon _ < <(guest_sums "$pid" "$lo" "$hi")
  "$bench" active --port "$port" --count 100 --fragment 262144 --hold-file "$tmp/go" >"$tmp/act" &
  bpid=$!
  for _ in $(seq 1200); do grep -q "^active" "$tmp/act" && break; sleep 0.1; done
  grep -q "^active 100" "$tmp/act" || { echo "bench-boards: $board: uploads did not start" >&2; exit 1; }
  sleep 1
  read -r actRss actAnon _ < <(guest_sums "$pid" "$lo" "$hi")
  touch "$tmp/go"
  wait "$bpid" || { echo "bench-boards: $board: $(cat "$tmp/act")" >&2; exit 1; }
  read -r _ _ stack < <(guest_sums "$pid" "$lo" "$hi")
  kill -TERM "$pid"; wait "$pid" || true
  rm -rf "$tmp"
  printf '%-8s %-8s %12s %12s %12s %12s | %7s KiB %6s KiB %6s KiB | %7s KiB %6s KiB | %4s KiB\n' "$board" "$arch" \
    "${sizes[0]}" "${sizes[1]}" "${sizes[2]}" "${sizes[3]}" "$idleRss" "$idleAnon" "$idleNoTls" "$actRss" "$actAnon" "$stack"
done
