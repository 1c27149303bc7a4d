#!/usr/bin/env bash
# The access log's cost on the one-upload benchmark (docs/BENCHMARKS.md, tools/bench.sh): one upload
# of SIZE bytes in FRAG-byte fragments to bitsd with fdatasync off (so that the log's CPU cost is not
# hidden behind the disk), the access log off and on (--access-log FILE, text), side by side in each
# round, ROUNDS rounds; prints every run and the medians.
# Usage: tools/bench-accesslog.sh [ROUNDS] [SIZE_BYTES] [FRAG_BYTES]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
SIZE=${2:-1073741824}
FRAG=${3:-$((8 * 1024 * 1024))}
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DBITSD_TESTS=OFF >/dev/null
cmake --build build-bench -j2 --target bitsd bitsbench >/dev/null
BIN=build-bench/bin
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/bitsd-bench-accesslog.XXXXXX")
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT

start_bitsd() {  # args...: extra flags; sets PID and PORT
  rm -rf "$WORK/root" "$WORK/state"
  "$BIN/bitsd" --listen 127.0.0.1:0 --root "$WORK/root" --state "$WORK/state" --log-level warn --fdatasync off "$@" \
    > "$WORK/ready" 2> "$WORK/bitsd.err" &
  PID=$!
  for _ in $(seq 600); do grep -q listening "$WORK/ready" 2>/dev/null && break; sleep 0.05; done
  PORT=$(sed -E 's/.*:([0-9]+)$/\1/' "$WORK/ready")
}
stop_bitsd() { kill -TERM "$PID"; wait "$PID" || true; PID=; }
field() { sed -E "s/.*$1=([0-9.]+).*/\1/"; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

: > "$WORK/off"; : > "$WORK/on"
for r in $(seq "$ROUNDS"); do
  # Alternate which goes first, so that neither always runs behind the other's writeback.
  if [ $((r % 2)) -eq 1 ]; then
    start_bitsd
    off=$("$BIN/bitsbench" upload --port "$PORT" --size "$SIZE" --fragment "$FRAG" | field MiBps)
    stop_bitsd
  fi
  rm -f "$WORK/access.log"
  start_bitsd --access-log "$WORK/access.log"
  on=$("$BIN/bitsbench" upload --port "$PORT" --size "$SIZE" --fragment "$FRAG" | field MiBps)
  stop_bitsd
  if [ $((r % 2)) -eq 0 ]; then
    start_bitsd
    off=$("$BIN/bitsbench" upload --port "$PORT" --size "$SIZE" --fragment "$FRAG" | field MiBps)
    stop_bitsd
  fi
  lines=$(wc -l < "$WORK/access.log")
  echo "round $r: access log off $off MiB/s | access log on $on MiB/s ($lines lines)"
  echo "$off" >> "$WORK/off"; echo "$on" >> "$WORK/on"
done
moff=$(median < "$WORK/off"); mon=$(median < "$WORK/on")
echo "median over $ROUNDS rounds ($SIZE bytes in $FRAG-byte fragments, fdatasync off):" \
     "access log off $moff MiB/s, on $mon MiB/s (on/off $(awk -v a="$mon" -v b="$moff" 'BEGIN {printf "%.3f", a/b}'))"
