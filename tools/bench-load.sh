#!/usr/bin/env bash
# Load and chaos figures for docs/BENCHMARKS.md, driven by `bitsclient bench` (issue 6). Builds a
# Release tree in build-bench/, then, ROUNDS times, in the same round:
#   1. baseline: one upload of TOTAL bytes (bitsclient bench --sessions 1) against bitsd with its
#      defaults (fdatasync on);
#   2. the same TOTAL split over 8 and over 32 concurrent uploads (one connection each): aggregate
#      throughput, its ratio to the baseline, and Fragment latency p50/p99 (request sent -> Ack);
#   3. chaos: 8 uploads while bitsclient cuts connections mid-fragment, stalls requests, and
#      SIGKILLs and restarts bitsd 3 times; throughput, ratio to (2)'s 8 uploads, and how many of the
#      8 files arrived byte-identical.
# Prints every run and the medians. Usage: tools/bench-load.sh [ROUNDS] [TOTAL_BYTES]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
TOTAL=${2:-268435456}
FRAG=1M
tools/install-deps
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DBITSD_TESTS=OFF >/dev/null
cmake --build build-bench -j"$(nproc)" --target bitsd bitsclient >/dev/null
BIN=$PWD/build-bench/bin
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/bitsd-bench-load.XXXXXX")
SERVER=""
cleanup() {
  [ -n "$SERVER" ] && kill -TERM "$SERVER" 2>/dev/null || true
  pkill -P $$ bitsd 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

start_bitsd() {  # sets SERVER and PORT; fixed port so that a restart comes back on it
  rm -rf "$WORK/root" "$WORK/state"
  mkdir -p "$WORK/root"
  "$BIN/bitsd" --listen 127.0.0.1:0 --root "$WORK/root" --state "$WORK/state" --log-level warn \
    > "$WORK/ready" 2> "$WORK/bitsd.err" &
  SERVER=$!
  for _ in $(seq 100); do grep -q listening "$WORK/ready" 2>/dev/null && break; sleep 0.05; done
  PORT=$(sed -E 's/.*:([0-9]+)$/\1/' "$WORK/ready")
}
stop_bitsd() { kill -TERM "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; SERVER=""; }
val() { sed -n "s/^$1=//p"; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
bench() {  # sessions, extra args...; prints bitsclient's figures
  local n=$1
  shift
  "$BIN/bitsclient" bench "http://127.0.0.1:$PORT/" --sessions "$n" --size $((TOTAL / n)) \
    --fragment-size "$FRAG" --verify-root "$WORK/root" "$@"
}

for f in one eight thirty eightp50 eightp99 thirtyp50 thirtyp99 r8 r32 chaos rchaos ok; do : > "$WORK/$f"; done
for r in $(seq "$ROUNDS"); do
  start_bitsd; out1=$(bench 1); stop_bitsd
  start_bitsd; out8=$(bench 8); stop_bitsd
  start_bitsd; out32=$(bench 32); stop_bitsd
  start_bitsd
  restart="$BIN/bitsd --listen 127.0.0.1:$PORT --root $WORK/root --state $WORK/state --log-level warn"
  outc=$(bench 8 --chaos --kill-pid "$SERVER" --restart-cmd "$restart" --kills 3 --kill-every-ms 300:1500 || true)
  wait "$SERVER" 2>/dev/null || true  # the first server was SIGKILLed
  SERVER=$(echo "$outc" | val server_pid)
  stop_bitsd
  t1=$(echo "$out1" | val throughput_mib_s); t8=$(echo "$out8" | val throughput_mib_s)
  t32=$(echo "$out32" | val throughput_mib_s); tc=$(echo "$outc" | val throughput_mib_s)
  r8=$(awk -v a="$t8" -v b="$t1" 'BEGIN {printf "%.2f", a/b}')
  r32=$(awk -v a="$t32" -v b="$t1" 'BEGIN {printf "%.2f", a/b}')
  rc=$(awk -v a="$tc" -v b="$t8" 'BEGIN {printf "%.2f", a/b}')
  echo "round $r: 1 upload $t1 MiB/s | 8 uploads $t8 MiB/s (x$r8, p50 $(echo "$out8" | val fragment_p50_ms) ms, p99 $(echo "$out8" | val fragment_p99_ms) ms)" \
       "| 32 uploads $t32 MiB/s (x$r32, p50 $(echo "$out32" | val fragment_p50_ms) ms, p99 $(echo "$out32" | val fragment_p99_ms) ms)" \
       "| chaos 8 uploads $tc MiB/s (x$rc of 8 without chaos; cuts $(echo "$outc" | val cuts), pauses $(echo "$outc" | val pauses), kills $(echo "$outc" | val kills), retries $(echo "$outc" | val retries), verified $(echo "$outc" | val verified)/8)"
  echo "$t1" >> "$WORK/one"; echo "$t8" >> "$WORK/eight"; echo "$t32" >> "$WORK/thirty"
  echo "$r8" >> "$WORK/r8"; echo "$r32" >> "$WORK/r32"; echo "$tc" >> "$WORK/chaos"; echo "$rc" >> "$WORK/rchaos"
  echo "$out8" | val fragment_p50_ms >> "$WORK/eightp50"; echo "$out8" | val fragment_p99_ms >> "$WORK/eightp99"
  echo "$out32" | val fragment_p50_ms >> "$WORK/thirtyp50"; echo "$out32" | val fragment_p99_ms >> "$WORK/thirtyp99"
  echo "$outc" | val verified >> "$WORK/ok"
done

echo
echo "median over $ROUNDS rounds, $((TOTAL / 1048576)) MiB in total per run, $FRAG fragments, bitsd defaults (fdatasync on):"
echo "  1 upload (baseline):   $(median < "$WORK/one") MiB/s"
echo "  8 uploads at once:     $(median < "$WORK/eight") MiB/s  (x$(median < "$WORK/r8")), fragment p50 $(median < "$WORK/eightp50") ms, p99 $(median < "$WORK/eightp99") ms"
echo "  32 uploads at once:    $(median < "$WORK/thirty") MiB/s  (x$(median < "$WORK/r32")), fragment p50 $(median < "$WORK/thirtyp50") ms, p99 $(median < "$WORK/thirtyp99") ms"
echo "  8 uploads, chaos:      $(median < "$WORK/chaos") MiB/s  (x$(median < "$WORK/rchaos") of 8 without chaos), files intact: $(median < "$WORK/ok")/8"
