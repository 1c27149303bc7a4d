#!/usr/bin/env bash
# bitsd's memory (docs/BENCHMARKS.md, "Memory"; issue 18 item 5). Builds a Release tree in
# build-bench/, then, ROUNDS times, a fresh bitsd with its defaults each round:
#   1. idle RSS (VmRSS after one Ping: the baseline, the process itself);
#   2. peak RSS (VmHWM) over one 256 MiB upload in 8 MiB fragments from tools/bits_upload.py, a
#      plain Python socket client (no code shared with bitsd);
#   3. 1,000 idle keep-alive connections, each after one Ping (bitsbench idle): RSS growth / 1,000;
#   4. RSS once those 1,000 are closed (closing must not touch request slots).
# Prints every round, then medians.  tools/bench-memory.sh [ROUNDS] [SIZE_BYTES]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SIZE=${2:-268435456}
FRAG=$((8 * 1024 * 1024))
tools/install-deps
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DBITSD_TESTS=OFF >/dev/null
cmake --build build-bench -j"$(nproc)" --target bitsd bitsbench >/dev/null
BIN=$PWD/build-bench/bin
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bitsd-memory.XXXXXX")
PID=""
trap '[ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT

kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
fds() { ls "/proc/$1/fd" | wc -l; }

echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "transparent huge pages: $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo unknown)"
for f in idle hwm mibps conn closed; do : > "$WORK/r_$f"; done
for r in $(seq "$ROUNDS"); do
  rm -rf "$WORK/root" "$WORK/state"
  # Emptied here, not only by bitsd's redirection (done in the background child): the wait below
  # could otherwise see the last round's line and read its port (or none).
  : > "$WORK/ready"
  "$BIN/bitsd" --listen 127.0.0.1:0 --root "$WORK/root" --state "$WORK/state" --log-level warn \
    > "$WORK/ready" 2> "$WORK/bitsd.err" &
  PID=$!
  for _ in $(seq 100); do grep -q listening "$WORK/ready" 2>/dev/null && break; sleep 0.05; done
  PORT=$(sed -E 's/.*:([0-9]+)$/\1/' "$WORK/ready")
  # One Ping (bitsbench idle with one connection), then the idle RSS.
  "$BIN/bitsbench" idle --port "$PORT" --count 1 --pid "$PID" >/dev/null
  idle=$(kib "$PID" VmRSS)
  up=$(python3 tools/bits_upload.py --port "$PORT" --size "$SIZE" --fragment "$FRAG" --pid "$PID")
  hwm=$(echo "$up" | sed -E 's/.*vmhwm_kib=([0-9]+).*/\1/')
  mibps=$(echo "$up" | sed -E 's/.*MiBps=([0-9.]+).*/\1/')
  base=$(fds "$PID")
  conn=$("$BIN/bitsbench" idle --port "$PORT" --count 1000 --pid "$PID" | sed -E 's/.*bytes_per_connection=([0-9]+).*/\1/')
  open=$(kib "$PID" VmRSS)
  for _ in $(seq 200); do [ "$(fds "$PID")" -le "$base" ] && break; sleep 0.05; done
  closed=$(kib "$PID" VmRSS)
  kill -TERM "$PID"; wait "$PID" || true; PID=""
  echo "round $r: idle $idle KiB | peak over $((SIZE / 1048576)) MiB from Python ($mibps MiB/s) $hwm KiB | idle connection $conn bytes | RSS with 1,000 open $open KiB, after closing them $closed KiB"
  echo "$idle" >> "$WORK/r_idle"; echo "$hwm" >> "$WORK/r_hwm"; echo "$mibps" >> "$WORK/r_mibps"
  echo "$conn" >> "$WORK/r_conn"; echo "$((closed - open))" >> "$WORK/r_closed"
done

echo
echo "median over $ROUNDS rounds, bitsd defaults (host board); load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| figure | median | target (issue 18) |"
echo "|---|---|---|"
echo "| idle RSS after one Ping (baseline) | $(median < "$WORK/r_idle") KiB | |"
echo "| peak RSS (VmHWM), $((SIZE / 1048576)) MiB in $((FRAG / 1048576)) MiB fragments from tools/bits_upload.py | $(median < "$WORK/r_hwm") KiB | <= 8192 KiB |"
echo "| RSS per idle keep-alive connection (1,000 open) | $(median < "$WORK/r_conn") bytes | <= 512 bytes |"
echo "| RSS change when those 1,000 close | $(median < "$WORK/r_closed") KiB | |"
