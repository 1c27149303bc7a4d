#!/usr/bin/env bash
# Side-by-side single uploads of several bitsd variants (docs/BENCHMARKS.md, "Issue 18 at the end of
# stop 24"): each round runs every variant once, in the order given, each on a fresh bitsd with
# fresh root and state directories, one upload of SIZE bytes in 8 MiB fragments from
# build-bench/bin/bitsbench; then prints each variant's rounds, median, and ratio to the first
# variant's median.
#   tools/bench-ab.sh ROUNDS SIZE_BYTES 'LABEL|BINARY|FLAGS|ENV' ...
# e.g. tools/bench-ab.sh 5 1073741824 'off|build-bench/bin/bitsd|--fdatasync off --digest off|' \
#                                      'on|build-bench/bin/bitsd|--fdatasync off|'
# BINARY is any bitsd build (an older commit's, a branch's); ENV is NAME=VALUE pairs for it, or
# empty. Environment: BENCH_DIR (scratch, default /var/tmp: it must be on the disk measured);
# BENCH_SMALL_SECONDS=S makes each run small uploads instead (tools/bitsload bits: 50 clients,
# whole 64 KiB uploads for S seconds, in uploads per second; SIZE_BYTES is then ignored). On a
# tmpfs (BENCH_DIR=/dev/shm) that compares the CPU paths without the file system's drift as it
# fills with small files (docs/BENCHMARKS.md, "Small uploads").
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 3 ] || { echo "usage: tools/bench-ab.sh ROUNDS SIZE_BYTES 'LABEL|BINARY|FLAGS|ENV' ..." >&2; exit 2; }
ROUNDS=$1
SIZE=$2
shift 2
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DBITSD_TESTS=OFF >/dev/null
cmake --build build-bench -j"$(nproc)" --target bitsbench bitsload >/dev/null
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bitsd-ab.XXXXXX")
PID=""
trap '[ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
one() {  # BINARY FLAGS ENV: one run, prints MiB/s (or uploads/s)
  rm -rf "$WORK/root" "$WORK/state" "$WORK/ready"
  sync  # untimed: no run pays for the writeback of what the one before left dirty, nor for the
        # discards of its deleted files (a file system mounted with `discard`, as this machine's is)
  mkdir -p "$WORK/root/small"
  # shellcheck disable=SC2086 # FLAGS and ENV are word lists
  env $3 "$1" --listen 127.0.0.1:0 --root "$WORK/root" --state "$WORK/state" --log-level warn $2 \
    > "$WORK/ready" 2> "$WORK/bitsd.err" &
  PID=$!
  for _ in $(seq 200); do grep -q listening "$WORK/ready" 2>/dev/null && break; sleep 0.05; done
  grep -q listening "$WORK/ready" || { echo "bench-ab: $1 did not start:" >&2; cat "$WORK/bitsd.err" >&2; exit 1; }
  local port
  port=$(sed -E 's/.*:([0-9]+)$/\1/' "$WORK/ready")
  if [ -n "${BENCH_SMALL_SECONDS:-}" ]; then
    build-bench/bin/bitsload bits --port "$port" --clients 50 --seconds "$BENCH_SMALL_SECONDS" --size 65536 |
      sed -E 's/.*uploads_per_s=([0-9.]+).*/\1/'
  else
    build-bench/bin/bitsbench upload --port "$port" --size "$SIZE" --fragment 8388608 | sed -E 's/.*MiBps=([0-9.]+).*/\1/'
  fi
  kill -TERM "$PID"
  wait "$PID" || true
  PID=""
}
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "${BENCH_SMALL_SECONDS:-}" ]; then
  UNIT="uploads/s"
  echo "50 clients of whole 64 KiB uploads, ${BENCH_SMALL_SECONDS} s per run, $ROUNDS rounds, scratch $WORK"
else
  UNIT="MiB/s"
  echo "$((SIZE >> 20)) MiB in 8 MiB fragments, one connection, $ROUNDS rounds, scratch $WORK"
fi
n=0
for v in "$@"; do : > "$WORK/r$n"; n=$((n + 1)); done
for r in $(seq "$ROUNDS"); do
  line="round $r:"
  i=0
  for v in "$@"; do
    IFS='|' read -r label bin flags envs <<< "$v"
    x=$(one "$bin" "$flags" "$envs")
    echo "$x" >> "$WORK/r$i"
    line="$line $label $x"
    i=$((i + 1))
  done
  echo "$line $UNIT"
done
echo
echo "| variant | median $UNIT | rounds | ratio to $(IFS='|' read -r l _ <<< "$1"; echo "$l") |"
echo "|---|---:|---|---:|"
first=$(median < "$WORK/r0")
i=0
for v in "$@"; do
  IFS='|' read -r label bin flags envs <<< "$v"
  m=$(median < "$WORK/r$i")
  echo "| $label (\`$flags\`) | $m | $(paste -sd/ "$WORK/r$i") | $(awk -v a="$m" -v b="$first" 'BEGIN {printf "%.2f", a / b}') |"
  i=$((i + 1))
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
