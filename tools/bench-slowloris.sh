#!/usr/bin/env bash
# An upload alone and under slowloris (issue 20), for docs/BENCHMARKS.md. Builds a Release tree in
# build-bench/, then, ROUNDS times, on the host board's limits and on the router board's limits
# (board/router/board.conf's pool sizes given as flags; the header budget and rate are the boards'
# common 2000 ms and 500 B/s):
#   1. one upload of SIZE bytes in 1 MiB fragments (bitsbench upload, fdatasync on), alone;
#   2. the same upload while TRICKLERS connections (bitsbench trickle) each send one header byte
#      every 1-3 s and reconnect when closed; the attack runs 3 s before the upload starts.
# The router board runs ROUTER_TRICKLERS (default 48) of them as well as TRICKLERS: with TRICKLERS
# they fill its max-connections (64), and the upload's connection gets in by taking a slow head's
# place (uv_server.cc, "The connection cap"). An upload that fails (503) or takes longer than 120 s shows as
# "failed" and stays out of the medians. With BASELINE_BITSD=path the same runs go against another
# bitsd binary too (e.g. one built from before the fix). Prints every run and the medians.
# Usage: tools/bench-slowloris.sh [ROUNDS] [SIZE_BYTES] [TRICKLERS] [ROUTER_TRICKLERS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SIZE=${2:-52428800}
TRICKLERS=${3:-500}
ROUTER_TRICKLERS=${4:-48}
tools/install-deps
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DBITSD_TESTS=OFF >/dev/null
cmake --build build-bench -j"$(nproc)" --target bitsd bitsbench >/dev/null
BIN=$PWD/build-bench/bin
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/bitsd-bench-slowloris.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

HOST=(--max-connections 2048 --request-slots 256 --read-buffers 32 --read-buffer-bytes 256K)
ROUTER=(--max-connections 64 --request-slots 16 --read-buffers 4 --read-buffer-bytes 64K --max-open-files 32)

start_bitsd() {  # binary, args...; sets PORT and BITSD_PID
  local bin=$1
  shift
  rm -rf "$WORK/root" "$WORK/state" "$WORK/ready"
  "$bin" --listen 127.0.0.1:0 --root "$WORK/root" --state "$WORK/state" --log-level warn "$@" \
    > "$WORK/ready" 2> "$WORK/err" &
  BITSD_PID=$!
  PIDS+=("$BITSD_PID")
  for _ in $(seq 100); do grep -q listening "$WORK/ready" 2>/dev/null && break; sleep 0.05; done
  PORT=$(sed -E 's/.*:([0-9]+)$/\1/' "$WORK/ready")
}
stop_bitsd() { kill "$BITSD_PID" 2>/dev/null || true; wait "$BITSD_PID" 2>/dev/null || true; }
upload() {  # port path; seconds, or "failed"
  local s
  s=$(timeout 120 "$BIN/bitsbench" upload --port "$1" --size "$SIZE" --fragment 1048576 --path "$2" 2>/dev/null |
      sed -n 's/.*seconds=\([0-9.]*\).*/\1/p') || true
  echo "${s:-failed}"
}
median() {
  grep -v failed | sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "-"; else print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'
}

run() {  # label tricklers binary board-args...
  local label=$1 count=$2 bin=$3
  shift 3
  start_bitsd "$bin" "$@"
  local alone attacked tpid
  alone=$(upload "$PORT" /alone.bin)
  "$BIN/bitsbench" trickle --port "$PORT" --count "$count" --seconds 300 > "$WORK/trickle" &
  tpid=$!
  PIDS+=("$tpid")
  sleep 3
  attacked=$(upload "$PORT" /attacked.bin)
  kill "$tpid" 2>/dev/null || true
  wait "$tpid" 2>/dev/null || true
  stop_bitsd
  echo "$alone" >> "$WORK/$label-alone"
  echo "$attacked" >> "$WORK/$label-attacked"
  echo "  $label: alone ${alone}, under $count tricklers ${attacked} (seconds)"
}

LABELS=(host router router-$TRICKLERS)
[ -n "${BASELINE_BITSD:-}" ] && LABELS+=(host-baseline router-baseline)
echo "upload of $SIZE bytes in 1 MiB fragments, fdatasync on; tricklers send 1 byte every 1-3 s"
for r in $(seq "$ROUNDS"); do
  echo "round $r:"
  run host "$TRICKLERS" "$BIN/bitsd" "${HOST[@]}"
  run router "$ROUTER_TRICKLERS" "$BIN/bitsd" "${ROUTER[@]}"
  run "router-$TRICKLERS" "$TRICKLERS" "$BIN/bitsd" "${ROUTER[@]}"
  if [ -n "${BASELINE_BITSD:-}" ]; then
    run host-baseline "$TRICKLERS" "$BASELINE_BITSD" "${HOST[@]}"
    run router-baseline "$ROUTER_TRICKLERS" "$BASELINE_BITSD" "${ROUTER[@]}"
  fi
done
echo "medians over $ROUNDS rounds (seconds; failed runs left out):"
for l in "${LABELS[@]}"; do
  f=$(grep -c failed "$WORK/$l-attacked" || true)
  echo "  $l: alone $(median < "$WORK/$l-alone"), under slowloris $(median < "$WORK/$l-attacked") ($f failed)"
done
