#!/usr/bin/env bash
# The durable path against its limit (docs/BENCHMARKS.md, "Durable uploads at the limit"): one upload
# of SIZE bytes in 8 MiB fragments over one keep-alive connection, side by side in one run, ROUNDS
# times:
#   limit            tools/durable_limit: raw TCP into a file, fdatasync per fragment, 1-byte answer
#                    (no HTTP, no BITS, no journal, no digest; the sender waits for each answer)
#   limit+writeback  the same with sync_file_range writeback of every 1 MiB as it arrives
#   defaults         bitsd as installed: fdatasync on, digest on (Nettle's SHA-256), writeback-bytes 1M
#   no writeback     bitsd --writeback-bytes 0 (the kernel writes back when it likes)
#   digest off       bitsd --digest off
#   mbedTLS hash     bitsd built with -DBITSD_SHA256=mbedtls (the SHA-256 before issue 18)
#   before           the same with --writeback-bytes 0: bitsd as it was before issue 18
#   nosync           bitsd --fdatasync off                  (digest cost, issue 18 item 3: this ...
#   nosync digest off bitsd --fdatasync off --digest off    ... against this)
#   raw no sync      durable_limit --sync off: the raw receiver, no fdatasync, no hash
#   raw no sync hash durable_limit --sync off --hash thread: the same with a SHA-256 of the upload on
#                    a thread of its own, back to back: the ceiling for item 3 (printed last)
# The sender for bitsd is tools/bitsbench upload. Builds Release trees in build-bench/ and
# build-bench-mbedsha/ (bitsd only). Prints bench-sha's comparison of the SHA-256 libraries first,
# then every round, then a table of medians and ratios.
#   tools/bench-durable.sh [ROUNDS] [SIZE_BYTES]
# Environment: BENCH_DIR (scratch directory, default /var/tmp: it must be on the disk measured),
# BENCH_VARIANTS (space-separated subset of: limit limitwb before defaults nowriteback digestoff mbedsha
# nosync nosyncnodigest rawnosync rawnosynchash; the default is all of them).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SIZE=${2:-536870912}
FRAG=$((8 * 1024 * 1024))
VARIANTS=${BENCH_VARIANTS:-"limit limitwb before defaults nowriteback digestoff mbedsha nosync nosyncnodigest rawnosync rawnosynchash"}
has() { [[ " $VARIANTS " == *" $1 "* ]]; }
tools/install-deps
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DBITSD_TESTS=OFF >/dev/null
cmake --build build-bench -j"$(nproc)" --target bitsd bitsbench durable_limit bench-sha >/dev/null
if has mbedsha || has before; then
  cmake -S . -B build-bench-mbedsha -DCMAKE_BUILD_TYPE=Release -DBITSD_TESTS=OFF -DBITSD_SHA256=mbedtls >/dev/null
  cmake --build build-bench-mbedsha -j"$(nproc)" --target bitsd >/dev/null
fi
BIN=build-bench/bin
# The limit reads with the same buffer size as bitsd on the host board.
RBUF=$(awk -F= '/^read-buffer-bytes/ {v=$2; gsub(/ /, "", v); m=1; if (v ~ /K$/) m=1024; if (v ~ /M$/) m=1048576; sub(/[KM]$/, "", v); print v*m}' board/host/board.conf)
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bitsd-durable.XXXXXX")
PID=""
trap '[ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT

start_bitsd() {  # BINARY args...: sets PID and PORT
  local bin=$1; shift
  # The old ready file goes first: the redirection below truncates it only once the child runs.
  rm -rf "$WORK/root" "$WORK/state" "$WORK/ready"
  "$bin" --listen 127.0.0.1:0 --root "$WORK/root" --state "$WORK/state" --log-level warn "$@" \
    > "$WORK/ready" 2> "$WORK/bitsd.err" &
  PID=$!
  for _ in $(seq 600); do grep -q listening "$WORK/ready" 2>/dev/null && break; sleep 0.05; done
  grep -q listening "$WORK/ready" || { echo "bench-durable: bitsd did not start:" >&2; cat "$WORK/bitsd.err" >&2; exit 1; }
  PORT=$(sed -E 's/.*:([0-9]+)$/\1/' "$WORK/ready")
}
stop_bitsd() { kill -TERM "$PID"; wait "$PID" || true; PID=""; }
# Before every run, untimed: delete the last run's files and write back what it left dirty (a run
# with fdatasync off leaves up to GiBs), so that no run pays for another's writeback, nor (on a
# file system mounted with `discard`, as this machine's is) for the discards of its deleted files.
settle() { rm -rf "$WORK/root" "$WORK/state"; sync; }
field() { sed -E "s/.*$1=([0-9.]+).*/\1/"; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
upload() {  # BINARY args...: one upload, prints MiB/s
  start_bitsd "$@"
  "$BIN/bitsbench" upload --port "$PORT" --size "$SIZE" --fragment "$FRAG" | field MiBps
  stop_bitsd
}
run() {  # VARIANT: prints MiB/s
  settle
  case $1 in
    limit) "$BIN/durable_limit" --dir "$WORK" --size "$SIZE" --fragment "$FRAG" --buffer "$RBUF" | field MiBps ;;
    limitwb) "$BIN/durable_limit" --dir "$WORK" --size "$SIZE" --fragment "$FRAG" --buffer "$RBUF" --writeback 1048576 | field MiBps ;;
    rawnosync) "$BIN/durable_limit" --dir "$WORK" --size "$SIZE" --fragment "$FRAG" --buffer "$RBUF" --sync off | field MiBps ;;
    rawnosynchash) "$BIN/durable_limit" --dir "$WORK" --size "$SIZE" --fragment "$FRAG" --buffer "$RBUF" --sync off --hash thread | field MiBps ;;
    defaults) upload "$BIN/bitsd" ;;
    nowriteback) upload "$BIN/bitsd" --writeback-bytes 0 ;;
    digestoff) upload "$BIN/bitsd" --digest off ;;
    mbedsha) upload build-bench-mbedsha/bin/bitsd ;;
    before) upload build-bench-mbedsha/bin/bitsd --writeback-bytes 0 ;;
    nosync) upload "$BIN/bitsd" --fdatasync off ;;
    nosyncnodigest) upload "$BIN/bitsd" --fdatasync off --digest off ;;
  esac
}
label() {
  case $1 in
    limit) echo "durable limit (raw: write, fdatasync per fragment, 1-byte answer)" ;;
    limitwb) echo "durable limit + writeback of every 1 MiB (sync_file_range)" ;;
    rawnosync) echo "raw receiver, no fdatasync, no hash" ;;
    rawnosynchash) echo "raw receiver, no fdatasync, SHA-256 on a thread of its own" ;;
    defaults) echo "bitsd defaults (fdatasync on, digest on: $("$BIN/bitsd" --version | sed -n 's/^sha256: //p'))" ;;
    digestoff) echo "bitsd --digest off" ;;
    nowriteback) echo "bitsd --writeback-bytes 0" ;;
    mbedsha) echo "bitsd defaults, old hash ($(build-bench-mbedsha/bin/bitsd --version | sed -n 's/^sha256: //p'))" ;;
    before) echo "bitsd before issue 18 (old hash, --writeback-bytes 0)" ;;
    nosync) echo "bitsd --fdatasync off" ;;
    nosyncnodigest) echo "bitsd --fdatasync off --digest off" ;;
  esac
}

echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
# The hash libraries alone first (tools/bench_sha.cc): what the digest can cost at most.
"$BIN/bench-sha" --size 268435456 --rounds 3
echo "$((SIZE / 1048576)) MiB in $((FRAG / 1048576)) MiB fragments, one connection, $((RBUF / 1024)) KiB reads, scratch $WORK"
for r in $(seq "$ROUNDS"); do
  line="round $r:"
  for v in $VARIANTS; do
    x=$(run "$v")
    [ -n "$x" ] || { echo "bench-durable: $v gave no figure" >&2; exit 1; }
    echo "$x" >> "$WORK/$v.res"
    line+=" $v $x"
  done
  echo "$line MiB/s (load $(cut -d' ' -f1 /proc/loadavg))"
done

echo
printf '| %-66s | %s | %-9s | %s |\n' "median of $ROUNDS rounds" "MiB/s" "rounds" "ratio"
printf '|%s|---:|---|---:|\n' "$(printf -- '-%.0s' $(seq 68))"
lim=""; has limit && lim=$(median < "$WORK/limit.res")
nosyncnodig=""; has nosyncnodigest && nosyncnodig=$(median < "$WORK/nosyncnodigest.res")
for v in $VARIANTS; do
  m=$(median < "$WORK/$v.res")
  rounds=$(paste -sd/ "$WORK/$v.res")
  ratio="-"
  case $v in
    limit) ratio="1.00" ;;
    rawnosynchash) has rawnosync && ratio=$(awk -v a="$m" -v b="$(median < "$WORK/rawnosync.res")" 'BEGIN {printf "%.2f of raw no hash", a/b}') ;;
    rawnosync) ratio="-" ;;
    nosync | nosyncnodigest) [ -n "$nosyncnodig" ] && ratio=$(awk -v a="$m" -v b="$nosyncnodig" 'BEGIN {printf "%.2f of digest off", a/b}') ;;
    *) [ -n "$lim" ] && ratio=$(awk -v a="$m" -v b="$lim" 'BEGIN {printf "%.2f", a/b}') ;;
  esac
  printf '| %-66s | %s | %s | %s |\n' "$(label "$v")" "$m" "$rounds" "$ratio"
done
# Item 3's ceiling: the raw hashed receiver against bitsd without the digest. A server's digest cost
# cannot be lower than 1 - this (the hash alone cannot go faster than the raw hashed receiver).
if has rawnosynchash && [ -n "$nosyncnodig" ]; then
  awk -v a="$(median < "$WORK/rawnosynchash.res")" -v b="$nosyncnodig" \
    'BEGIN {printf "item 3 ceiling: the raw hashed receiver is %.2f of bitsd --fdatasync off --digest off\n", a/b}'
fi
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
