#!/usr/bin/env bash
# Recovery benchmark for docs/BENCHMARKS.md: bitsd's start-up with a journal holding N sessions
# (default 100,000), for open sessions (each with an in-progress file to check and trim) and for
# closed ones (tombstones only). bitsd reports its own replay and total recovery times on stderr;
# the baselines, measured in the same round, are one plain read of the same journal file and one
# readdir + fstatat pass over the in-progress files (what checking them costs the file system).
# Usage: tools/bench-recovery.sh [ROUNDS] [SESSIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
N=${2:-100000}
tools/install-deps
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DBITSD_TESTS=OFF >/dev/null
cmake --build build-bench -j"$(nproc)" --target bitsd bitsbench >/dev/null
BIN=build-bench/bin
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/bitsd-recovery.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
for kind in open closed; do
  open=$([ $kind = open ] && echo 1 || echo 0)
  : > "$WORK/replay"; : > "$WORK/total"; : > "$WORK/read"; : > "$WORK/rss"; : > "$WORK/restore"; : > "$WORK/files"; : > "$WORK/scan"
  for r in $(seq "$ROUNDS"); do
    rm -rf "$WORK/state" "$WORK/root"; mkdir -p "$WORK/root/uploads"
    gen=$("$BIN/bitsbench" gen-journal --state "$WORK/state" --sessions "$N" --open "$open")
    sync; read_ms=$("$BIN/bitsbench" read --file "$WORK/state/journal" | sed -E 's/.*ms=([0-9.]+).*/\1/')
    scan_ms=$("$BIN/bitsbench" scan --dir "$WORK/state/partial" | sed -E 's/.*ms=([0-9.]+).*/\1/')
    "$BIN/bitsd" --listen 127.0.0.1:0 --root "$WORK/root" --state "$WORK/state" --max-sessions $((N + 16)) \
      --max-path-bytes 64 --max-open-files 64 > "$WORK/ready" 2> "$WORK/err" &
    pid=$!
    for _ in $(seq 600); do grep -q listening "$WORK/ready" 2>/dev/null && break; sleep 0.05; done
    rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
    kill -TERM $pid; wait $pid || true
    line=$(grep 'recovered' "$WORK/err")
    replay=$(echo "$line" | sed -E 's/.*replay ([0-9.]+) ms.*/\1/')
    restore=$(echo "$line" | sed -E 's/.*restore ([0-9.]+) ms.*/\1/')
    files=$(echo "$line" | sed -E 's/.*files ([0-9.]+) ms.*/\1/')
    total=$(echo "$line" | sed -E 's/.*total ([0-9.]+) ms.*/\1/')
    echo "$kind round $r: $gen | baseline read ${read_ms} ms, scan ${scan_ms} ms | bitsd replay ${replay} ms, restore ${restore} ms, files ${files} ms, total ${total} ms | RSS after ${rss} KiB"
    echo "$read_ms" >> "$WORK/read"; echo "$replay" >> "$WORK/replay"; echo "$total" >> "$WORK/total"; echo "$rss" >> "$WORK/rss"
    echo "$restore" >> "$WORK/restore"; echo "$files" >> "$WORK/files"; echo "$scan_ms" >> "$WORK/scan"
  done
  echo "$kind, median of $ROUNDS: baseline read $(median < "$WORK/read") ms, scan $(median < "$WORK/scan") ms | replay $(median < "$WORK/replay") ms, restore $(median < "$WORK/restore") ms, files $(median < "$WORK/files") ms, total $(median < "$WORK/total") ms | RSS $(median < "$WORK/rss") KiB"
done
