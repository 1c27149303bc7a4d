#!/usr/bin/env bash
# Where the CPU goes in one upload (docs/BENCHMARKS.md, "Issue 18 at stop 25", item 3): ROUNDS times,
# for each FLAGS set, a fresh bitsd (Release, build-bench/) takes one upload of SIZE bytes in 8 MiB
# fragments from bitsbench; /proc/stat (all CPUs) and bitsd's /proc/PID/stat are read before and
# after. Prints per run: MiB/s, CPU-seconds per GiB spent by all CPUs together (user + system +
# softirq), the share of both vCPUs left idle, and bitsd's own user and system CPU-seconds per GiB
# (its user time is almost all SHA-256 when the digest is on).
#   tools/bench-cpu.sh [ROUNDS] [SIZE_BYTES] [FLAGS...]
# e.g. tools/bench-cpu.sh 3 2147483648 '--fdatasync off --digest off' '--fdatasync off'
# Environment: BENCH_DIR (scratch, default /var/tmp: on the disk measured).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SIZE=${2:-2147483648}
shift 2 2>/dev/null || shift $#
[ $# -gt 0 ] || set -- '--fdatasync off --digest off' '--fdatasync off'
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DBITSD_TESTS=OFF >/dev/null
cmake --build build-bench -j"$(nproc)" --target bitsd bitsbench >/dev/null
BIN=build-bench/bin
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bitsd-cpu.XXXXXX")
PID=""
trap '[ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT
TICK=$(getconf CLK_TCK)
cpu() { awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8, $5, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$((SIZE >> 20)) MiB in 8 MiB fragments per run, $ROUNDS rounds"
for r in $(seq "$ROUNDS"); do
  for flags in "$@"; do
    rm -rf "$WORK/root" "$WORK/state" "$WORK/ready"
    mkdir -p "$WORK/root"
    sync  # untimed: no run pays for the writeback of the one before
    # shellcheck disable=SC2086 # FLAGS is a word list
    "$BIN/bitsd" --listen 127.0.0.1:0 --root "$WORK/root" --state "$WORK/state" --log-level warn $flags \
      > "$WORK/ready" 2> "$WORK/bitsd.err" &
    PID=$!
    for _ in $(seq 200); do grep -q listening "$WORK/ready" 2>/dev/null && break; sleep 0.05; done
    grep -q listening "$WORK/ready" || { echo "bench-cpu: bitsd did not start:" >&2; cat "$WORK/bitsd.err" >&2; exit 1; }
    port=$(sed -E 's/.*:([0-9]+)$/\1/' "$WORK/ready")
    read -r busy1 idle1 all1 < <(cpu)
    mibps=$("$BIN/bitsbench" upload --port "$port" --size "$SIZE" --fragment 8388608 | sed -E 's/.*MiBps=([0-9.]+).*/\1/')
    read -r busy2 idle2 all2 < <(cpu)
    read -r -a st < "/proc/$PID/stat"
    kill -TERM "$PID"; wait "$PID" || true; PID=""
    awk -v r="$r" -v f="$flags" -v m="$mibps" -v b=$((busy2 - busy1)) -v i=$((idle2 - idle1)) -v a=$((all2 - all1)) \
        -v u="${st[13]}" -v s="${st[14]}" -v t="$TICK" -v g="$(awk -v s="$SIZE" 'BEGIN {print s / 1073741824}')" \
        'BEGIN {printf "round %d [%s]: %.1f MiB/s | all CPUs %.2f CPU-s/GiB, idle %.0f %% | bitsd user %.2f, system %.2f CPU-s/GiB\n",
                r, f, m, b / t / g, 100 * i / a, u / t / g, s / t / g}'
  done
done
