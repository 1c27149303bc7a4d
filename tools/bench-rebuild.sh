#!/usr/bin/env bash
# Issue 16's regression check: the engine rebuild must not cost throughput, memory or allocations.
# Builds bitsd at BASE (default 7cb670c, the last commit before the rebuild) and at the working tree,
# both Release, then ROUNDS times, alternating which server goes first, measures each side by side
# with the SAME client binaries (BASE's bitsbench and bitsclient), fdatasync off so the CPU path is
# what is measured:
#   plain MiB/s   one SIZE-byte upload in 8 MiB fragments over http (bitsbench upload), digest on
#   peak RSS      bitsd's VmHWM at the end of that upload
#   tls MiB/s     one SIZE-byte upload in 1 MiB fragments over https (bitsclient bench, ChaCha20)
#   allocs/frag   every malloc/calloc/realloc of the whole bitsd process (tools/malloc_count.c,
#                 LD_PRELOAD), counted over an upload of 136 one-MiB fragments minus one of 8, / 128:
#                 the steady per-fragment cost, with start-up, session creation, the handshake and the
#                 commit cancelled out; plain (bitsbench) and TLS (bitsclient bench)
# Prints every round and the medians. Usage: tools/bench-rebuild.sh [ROUNDS] [SIZE_BYTES] [BASE]
# NEW_CMAKE_FLAGS adds CMake flags to the new build (in build-bench-new/ then): e.g.
# NEW_CMAKE_FLAGS=-DBITSD_SHA256=mbedtls keeps BASE's SHA-256, so that only the rebuild differs.
# SERVER_FLAGS adds flags to both servers (e.g. "--digest off").
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SIZE=${2:-268435456}
BASE=${3:-7cb670c}
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/bitsd-bench-rebuild.XXXXXX")
trap 'pkill -P $$ bitsd 2>/dev/null || true; rm -rf "$WORK"' EXIT
# BASE's sources live beside its build tree (CMake ties a build tree to one source path).
rm -rf build-bench-base/src
mkdir -p build-bench-base/src
git archive "$BASE" | tar -x -C build-bench-base/src
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
cmake -S build-bench-base/src -B build-bench-base/build -DCMAKE_BUILD_TYPE=Release -DBITSD_TESTS=OFF "${launcher[@]}" >/dev/null
cmake --build build-bench-base/build -j"$(nproc)" --target bitsd bitsbench bitsclient bitsctl >/dev/null
NEW=build-bench
[ -n "${NEW_CMAKE_FLAGS:-}" ] && NEW=build-bench-new
# shellcheck disable=SC2086
cmake -S . -B "$NEW" -DCMAKE_BUILD_TYPE=Release -DBITSD_TESTS=OFF "${launcher[@]}" ${NEW_CMAKE_FLAGS:-} >/dev/null
cmake --build "$NEW" -j"$(nproc)" --target bitsd >/dev/null
cc -O2 -shared -fPIC -o "$WORK/malloc_count.so" tools/malloc_count.c
CLIENT=$PWD/build-bench-base/build/bin
declare -A SERVER=([base]=$PWD/build-bench-base/build/bin/bitsd [new]=$PWD/$NEW/bin/bitsd)
"$CLIENT/bitsctl" gen-cert --cn 127.0.0.1 --cert "$WORK/c.crt" --key "$WORK/c.key" >/dev/null
CHACHA=TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256

start() {  # side, plain|tls, extra env..., sets PID PORT
  local side=$1 mode=$2
  shift 2
  local tls=()
  [ "$mode" = tls ] && tls=(--tls-cert "$WORK/c.crt" --tls-key "$WORK/c.key")
  rm -rf "$WORK/root" "$WORK/state"
  : > "$WORK/ready"  # empty before the start, so the wait below never reads the last run's port
  mkdir -p "$WORK/root"
  env "$@" "${SERVER[$side]}" --listen 127.0.0.1:0 --root "$WORK/root" --state "$WORK/state" --log-level warn \
    --fdatasync off ${SERVER_FLAGS:-} "${tls[@]}" > "$WORK/ready" 2> "$WORK/err" &
  PID=$!
  for _ in $(seq 200); do grep -q listening "$WORK/ready" 2>/dev/null && break; sleep 0.05; done
  PORT=$(sed -E 's/.*:([0-9]+)$/\1/' "$WORK/ready")
}
stop() { kill -TERM "$PID"; wait "$PID" || true; }
field() { sed -E "s/.*$1=([0-9.]+).*/\1/"; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
plain_up() { "$CLIENT/bitsbench" upload --port "$PORT" --size "$1" --fragment "$2" --path "/p$RANDOM.bin"; }
tls_up() {
  "$CLIENT/bitsclient" bench "https://127.0.0.1:$PORT/" --sessions 1 --size "$1" --fragment-size "$2" \
    --insecure --tls-suite "$CHACHA"
}
allocs() {  # side, plain|tls, fragments -> the process's allocation count
  local out=$WORK/count
  rm -f "$out"
  start "$1" "$2" LD_PRELOAD="$WORK/malloc_count.so" MALLOC_COUNT_FILE="$out"
  if [ "$2" = plain ]; then plain_up $(($3 * 1048576)) 1048576 >/dev/null; else tls_up $(($3 * 1048576)) 1M >/dev/null; fi
  stop
  cat "$out"
}

for s in base new; do for f in mib hwm tls ap at; do : > "$WORK/$s.$f"; done; done
for r in $(seq "$ROUNDS"); do
  order="base new"
  [ $((r % 2)) = 0 ] && order="new base"
  line="round $r:"
  for s in $order; do
    sync
    start "$s" plain
    mib=$(plain_up "$SIZE" 8388608 | field MiBps)
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
    stop
    sync
    start "$s" tls
    tls=$(tls_up "$SIZE" 1M | sed -n 's/^throughput_mib_s=//p')
    stop
    ap=$(awk -v a="$(allocs "$s" plain 8)" -v b="$(allocs "$s" plain 136)" 'BEGIN {printf "%.2f", (b-a)/128}')
    at=$(awk -v a="$(allocs "$s" tls 8)" -v b="$(allocs "$s" tls 136)" 'BEGIN {printf "%.2f", (b-a)/128}')
    echo "$mib" >> "$WORK/$s.mib"; echo "$hwm" >> "$WORK/$s.hwm"; echo "$tls" >> "$WORK/$s.tls"
    echo "$ap" >> "$WORK/$s.ap"; echo "$at" >> "$WORK/$s.at"
    line="$line | $s: plain $mib MiB/s, RSS $hwm KiB, tls $tls MiB/s, allocs/frag plain $ap tls $at"
  done
  echo "$line"
done
echo
echo "medians of $ROUNDS rounds${NEW_CMAKE_FLAGS:+ (new built with $NEW_CMAKE_FLAGS)}${SERVER_FLAGS:+ (servers run with $SERVER_FLAGS)} ($(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs), base $BASE vs $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty'):"
printf '%-28s %12s %12s %8s\n' "" "base" "new" "new/base"
for f in "mib:plain MiB/s (8 MiB frags)" "hwm:peak RSS KiB" "tls:https MiB/s (1 MiB frags)" "ap:allocs per fragment, http" "at:allocs per fragment, https"; do
  k=${f%%:*}; name=${f#*:}
  b=$(median < "$WORK/base.$k"); n=$(median < "$WORK/new.$k")
  printf '%-28s %12s %12s %8s\n' "$name" "$b" "$n" "$(awk -v a="$n" -v b="$b" 'BEGIN {if (b == 0) print "-"; else printf "%.2f", a/b}')"
done
