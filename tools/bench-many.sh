#!/usr/bin/env bash
# Many clients against the durable limit (docs/BENCHMARKS.md, "Many clients"; issue 18 item 4).
# Builds a Release tree in build-bench/, then, ROUNDS times, for N in 1, 8 and 32, side by side:
#   limit N   tools/durable_limit --conns N: N raw TCP senders on 127.0.0.1, each TOTAL/N bytes in
#             8 MiB fragments; a receiver thread per connection write()s each read to its own file,
#             fdatasync()s it at every fragment's end and answers 1 byte (no HTTP, BITS, journal or
#             digest; each sender waits for the answer, as a BITS client waits for its Ack)
#   bitsd N   bitsd with its defaults (fdatasync and digest on, the host board's settings), a fresh
#             one per run; `bitsclient bench --sessions N`: N uploads of TOTAL/N bytes in 8 MiB
#             fragments at once, one connection each, every file compared with what was sent
# Prints every round, then medians and the ratios issue 18 asks for: bitsd N / bitsd 1 (>= 1) and
# bitsd N / limit N (>= 0.8).
#   tools/bench-many.sh [ROUNDS] [TOTAL_BYTES]      (default 3 rounds, 1 GiB per run)
# Environment: BENCH_DIR (scratch directory, default /var/tmp: it must be on the disk measured).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
TOTAL=${2:-1073741824}
FRAG=$((8 * 1024 * 1024))
tools/install-deps
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DBITSD_TESTS=OFF >/dev/null
cmake --build build-bench -j"$(nproc)" --target bitsd bitsclient durable_limit >/dev/null
BIN=$PWD/build-bench/bin
RBUF=$(awk -F= '/^read-buffer-bytes/ {v=$2; gsub(/ /, "", v); m=1; if (v ~ /K$/) m=1024; if (v ~ /M$/) m=1048576; sub(/[KM]$/, "", v); print v*m}' board/host/board.conf)
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bitsd-many.XXXXXX")
PID=""
trap '[ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT

start_bitsd() {  # sets PID and PORT
  rm -rf "$WORK/root" "$WORK/state"
  mkdir -p "$WORK/root"
  "$BIN/bitsd" --listen 127.0.0.1:0 --root "$WORK/root" --state "$WORK/state" --log-level warn \
    > "$WORK/ready" 2> "$WORK/bitsd.err" &
  PID=$!
  for _ in $(seq 100); do grep -q listening "$WORK/ready" 2>/dev/null && break; sleep 0.05; done
  PORT=$(sed -E 's/.*:([0-9]+)$/\1/' "$WORK/ready")
}
stop_bitsd() { kill -TERM "$PID"; wait "$PID" || true; PID=""; rm -rf "$WORK/root" "$WORK/state"; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
# bitsclient bench first writes the data it sends to a temporary file: in RAM (as the limit's
# senders hold theirs), not on the disk under test, where its writeback would compete with the
# uploads it measures (a 1 GiB file cost one upload half its throughput on this machine).
SENDTMP=/tmp
[ -d /dev/shm ] && [ -w /dev/shm ] && SENDTMP=/dev/shm
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }

echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for n in 1 8 32; do : > "$WORK/limit$n"; : > "$WORK/bitsd$n"; : > "$WORK/rl$n"; : > "$WORK/rs$n"; done
for r in $(seq "$ROUNDS"); do
  line="round $r:"
  for n in 1 8 32; do
    # Untimed, before every run: the last run's files go and what it left dirty is written back, so
    # that no run pays for another's writeback or (a file system mounted with `discard`) discards.
    rm -rf "$WORK/root" "$WORK/state"
    sync
    lim=$("$BIN/durable_limit" --dir "$WORK" --conns "$n" --size $((TOTAL / n)) --fragment "$FRAG" --buffer "$RBUF" |
          sed -E 's/.*MiBps=([0-9.]+).*/\1/')
    sync  # (durable_limit removed its files)
    start_bitsd
    out=$(TMPDIR=$SENDTMP "$BIN/bitsclient" bench "http://127.0.0.1:$PORT/" --sessions "$n" --size $((TOTAL / n)) \
          --fragment-size "$FRAG" --verify-root "$WORK/root")
    stop_bitsd
    got=$(echo "$out" | sed -n 's/^throughput_mib_s=//p')
    echo "$lim" >> "$WORK/limit$n"; echo "$got" >> "$WORK/bitsd$n"
    echo "$(ratio "$got" "$lim")" >> "$WORK/rl$n"
    line="$line | N=$n limit $lim MiB/s, bitsd $got MiB/s (x$(ratio "$got" "$lim") of the limit)"
  done
  for n in 8 32; do
    echo "$(ratio "$(sed -n "${r}p" "$WORK/bitsd$n")" "$(sed -n "${r}p" "$WORK/bitsd1")")" >> "$WORK/rs$n"
  done
  echo "$line"
done

echo
echo "median over $ROUNDS rounds, $((TOTAL / 1048576)) MiB per run in $((FRAG / 1048576)) MiB fragments, bitsd defaults (fdatasync on, digest on); load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '| %-9s | %-16s | %-16s | %-18s | %-20s |\n' uploads "durable limit" "bitsd defaults" "bitsd / limit" "bitsd / 1 upload"
printf '|%s|%s|%s|%s|%s|\n' ----------- ------------------ ------------------ -------------------- ----------------------
for n in 1 8 32; do
  single="-"
  [ "$n" -gt 1 ] && single="$(median < "$WORK/rs$n")"
  printf '| %-9s | %-16s | %-16s | %-18s | %-20s |\n' "$n" "$(median < "$WORK/limit$n") MiB/s" "$(median < "$WORK/bitsd$n") MiB/s" \
    "$(median < "$WORK/rl$n")" "$single"
done
