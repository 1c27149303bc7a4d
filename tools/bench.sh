#!/usr/bin/env bash
# Reproduces the figures in docs/BENCHMARKS.md. Builds a Release tree in build-bench/, then, ROUNDS
# times, measures side by side in the same run:
#   1. the raw socket-to-file baseline (bitsbench raw) and bitsd with fdatasync off, one 1 GiB upload
#      in 8 MiB fragments each; bitsd's peak RSS (VmHWM) during its upload;
#   2. bitsd with fdatasync on (the default), same upload;
#   2b. bitsd with fdatasync off and digest off (no SHA-256), same upload;
#   3. bitsd's RSS growth per idle keep-alive connection with 1,000 open.
# Prints every run and the medians. Usage: tools/bench.sh [ROUNDS] [SIZE_BYTES]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SIZE=${2:-1073741824}
FRAG=$((8 * 1024 * 1024))
tools/install-deps
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DBITSD_TESTS=OFF >/dev/null
cmake --build build-bench -j"$(nproc)" --target bitsd bitsbench >/dev/null
BIN=build-bench/bin
# The baseline reads with the same buffer size as bitsd on the host board.
RBUF=$(awk -F= '/^read-buffer-bytes/ {v=$2; gsub(/ /, "", v); m=1; if (v ~ /K$/) m=1024; if (v ~ /M$/) m=1048576; sub(/[KM]$/, "", v); print v*m}' board/host/board.conf)
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/bitsd-bench.XXXXXX")
trap 'pkill -P $$ bitsd 2>/dev/null || true; rm -rf "$WORK"' EXIT

start_bitsd() {  # args...: extra flags; sets PID and PORT
  rm -rf "$WORK/root" "$WORK/state"
  "$BIN/bitsd" --listen 127.0.0.1:0 --root "$WORK/root" --state "$WORK/state" --log-level warn "$@" \
    > "$WORK/ready" 2> "$WORK/bitsd.err" &
  PID=$!
  for _ in $(seq 100); do grep -q listening "$WORK/ready" 2>/dev/null && break; sleep 0.05; done
  PORT=$(sed -E 's/.*:([0-9]+)$/\1/' "$WORK/ready")
}
stop_bitsd() { kill -TERM "$PID"; wait "$PID" || true; }
field() { sed -E "s/.*$1=([0-9.]+).*/\1/"; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

: > "$WORK/raw"; : > "$WORK/nosync"; : > "$WORK/sync"; : > "$WORK/hwm"; : > "$WORK/ratio"; : > "$WORK/nodig"; : > "$WORK/ratio2"
for r in $(seq "$ROUNDS"); do
  raw=$("$BIN/bitsbench" raw --size "$SIZE" --buffer "$RBUF" --out "$WORK/raw.bin" | field MiBps); rm -f "$WORK/raw.bin"
  start_bitsd --fdatasync off
  nosync=$("$BIN/bitsbench" upload --port "$PORT" --size "$SIZE" --fragment "$FRAG" | field MiBps)
  hwm=$(awk '/VmHWM/ {print $2}' /proc/$PID/status)
  stop_bitsd
  start_bitsd --fdatasync on
  sync=$("$BIN/bitsbench" upload --port "$PORT" --size "$SIZE" --fragment "$FRAG" | field MiBps)
  stop_bitsd
  start_bitsd --fdatasync off --digest off
  nodig=$("$BIN/bitsbench" upload --port "$PORT" --size "$SIZE" --fragment "$FRAG" | field MiBps)
  stop_bitsd
  ratio=$(awk -v a="$nosync" -v b="$raw" 'BEGIN {printf "%.2f", a/b}')
  ratio2=$(awk -v a="$nodig" -v b="$raw" 'BEGIN {printf "%.2f", a/b}')
  echo "$nodig" >> "$WORK/nodig"; echo "$ratio2" >> "$WORK/ratio2"
  echo "round $r: raw baseline $raw MiB/s | bitsd fdatasync off $nosync MiB/s (ratio $ratio, peak RSS $hwm KiB) | bitsd fdatasync on $sync MiB/s | bitsd fdatasync off, digest off $nodig MiB/s (ratio $ratio2)"
  echo "$raw" >> "$WORK/raw"; echo "$nosync" >> "$WORK/nosync"; echo "$sync" >> "$WORK/sync"
  echo "$hwm" >> "$WORK/hwm"; echo "$ratio" >> "$WORK/ratio"
done

: > "$WORK/idle"
for r in $(seq "$ROUNDS"); do
  start_bitsd
  line=$("$BIN/bitsbench" idle --port "$PORT" --count 1000 --pid "$PID")
  stop_bitsd
  echo "round $r idle: $line"
  echo "$line" | field bytes_per_connection >> "$WORK/idle"
done

echo
echo "median over $ROUNDS rounds, $((SIZE / 1048576)) MiB upload in $((FRAG / 1048576)) MiB fragments, $((RBUF / 1024)) KiB reads:"
echo "  raw socket-to-file baseline:  $(median < "$WORK/raw") MiB/s"
echo "  bitsd, fdatasync off:         $(median < "$WORK/nosync") MiB/s  (ratio to baseline $(median < "$WORK/ratio"))"
echo "  bitsd, fdatasync on:          $(median < "$WORK/sync") MiB/s"
echo "  bitsd, fdatasync+digest off:  $(median < "$WORK/nodig") MiB/s  (ratio to baseline $(median < "$WORK/ratio2"))"
echo "  bitsd peak RSS (VmHWM):       $(median < "$WORK/hwm") KiB"
echo "  RSS per idle connection:      $(median < "$WORK/idle") bytes (1000 keep-alive connections)"
