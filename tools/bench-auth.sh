#!/usr/bin/env bash
# What Basic authentication costs an upload (issue 7), for docs/BENCHMARKS.md. Builds a Release tree
# in build-bench/, writes a users file (bitsctl user add, 100,000 PBKDF2 iterations), then, ROUNDS
# times, in the same round and over plain http (so that only authentication differs):
#   1. 8 uploads at once of SIZE bytes each in 256 KiB fragments (many requests: each carries the
#      Authorization header), fdatasync on, against a bitsd without users-file (the baseline) and
#      one with users-file; throughput, fragment p50/p99 and the ratio;
#   2. cold start: on a freshly started server, 8 uploads of 1 MiB at once with the same
#      credentials (one client's parallel connections), seconds until all are done; their first
#      requests all need the password checked;
#   3. optionally (BASELINE_BITSD=path), both against another bitsd binary with authentication,
#      e.g. one built from an older commit, to compare two implementations side by side.
# Before each measured run, one small authenticated upload warms the server's memory of the
# credentials, so what is measured is the steady cost per request (the one PBKDF2 a client pays
# first, ~50-100 ms here, is not in the figures). Prints every run and the medians.
# Usage: tools/bench-auth.sh [ROUNDS] [SIZE_BYTES]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SIZE=${2:-33554432}
tools/install-deps
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DBITSD_TESTS=OFF >/dev/null
cmake --build build-bench -j"$(nproc)" --target bitsd bitsctl bitsclient >/dev/null
BIN=$PWD/build-bench/bin
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/bitsd-bench-auth.XXXXXX")
trap 'pkill -P $$ bitsd 2>/dev/null || true; rm -rf "$WORK"' EXIT
echo "bench-password" | "$BIN/bitsctl" user add bench --users-file "$WORK/users" --password-stdin >/dev/null

start_bitsd() {  # name, binary, extra args...; sets PORT_<name>
  local name=$1 bin=$2
  shift 2
  rm -rf "$WORK/root-$name" "$WORK/state-$name"
  "$bin" --listen 127.0.0.1:0 --root "$WORK/root-$name" --state "$WORK/state-$name" --log-level warn \
    "$@" > "$WORK/ready-$name" 2> "$WORK/err-$name" &
  for _ in $(seq 100); do grep -q listening "$WORK/ready-$name" 2>/dev/null && break; sleep 0.05; done
  eval "PORT_$name=$(sed -E 's/.*:([0-9]+)$/\1/' "$WORK/ready-$name")"
}
stop_all() { pkill -P $$ bitsd 2>/dev/null || true; wait 2>/dev/null || true; }
cold() {  # port; seconds for 8 x 1 MiB uploads with the same credentials on a fresh server
  "$BIN/bitsclient" bench "http://127.0.0.1:$1/" --sessions 8 --size 1M --fragment-size 256K \
    -u bench:bench-password | sed -n 's/^seconds=//p'
}
fmt() { echo "$1 MiB/s, p50 $2 ms, p99 $3 ms"; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
bench() {  # port, extra...; prints "MiB/s p50 p99"
  local port=$1
  shift
  "$BIN/bitsclient" bench "http://127.0.0.1:$port/" --sessions 1 --size 4K "$@" >/dev/null  # warm-up
  "$BIN/bitsclient" bench "http://127.0.0.1:$port/" --sessions 8 --size "$SIZE" --fragment-size 256K "$@" |
    awk -F= '/^throughput_mib_s=/{t=$2} /^fragment_p50_ms=/{a=$2} /^fragment_p99_ms=/{b=$2} END {print t, a, b}'
}

AUTH=(--users-file "$WORK/users" --allow-basic-over-http)
for f in none auth old ra ro cold coldold; do : > "$WORK/$f"; done
for r in $(seq "$ROUNDS"); do
  start_bitsd none "$BIN/bitsd"
  start_bitsd auth "$BIN/bitsd" "${AUTH[@]}"
  [ -n "${BASELINE_BITSD:-}" ] && start_bitsd old "$BASELINE_BITSD" "${AUTH[@]}"
  c=$(cold "$PORT_auth")
  echo "$c" >> "$WORK/cold"
  if [ -n "${BASELINE_BITSD:-}" ]; then
    co=$(cold "$PORT_old")
    echo "$co" >> "$WORK/coldold"
  fi
  n=$(bench "$PORT_none")
  a=$(bench "$PORT_auth" -u bench:bench-password)
  line="round $r: no auth $(fmt $n) | Basic $(fmt $a)"
  echo "$n" >> "$WORK/none"; echo "$a" >> "$WORK/auth"
  ra=$(awk -v a="${a%% *}" -v b="${n%% *}" 'BEGIN {printf "%.2f", a/b}')
  echo "$ra" >> "$WORK/ra"
  line="$line (x$ra) | cold 8 x 1 MiB ${c} s"
  if [ -n "${BASELINE_BITSD:-}" ]; then
    line="$line, baseline binary ${co} s"
    o=$(bench "$PORT_old" -u bench:bench-password)
    echo "$o" >> "$WORK/old"
    ro=$(awk -v a="${o%% *}" -v b="${n%% *}" 'BEGIN {printf "%.2f", a/b}')
    echo "$ro" >> "$WORK/ro"
    line="$line | baseline binary with Basic $(fmt $o) (x$ro)"
  fi
  stop_all
  echo "$line"
done

col() { awk -v c="$1" '{print $c}' "$2" | median; }
echo
echo "median over $ROUNDS rounds, 8 uploads of $((SIZE / 1048576)) MiB at once, 256 KiB fragments, fdatasync on:"
echo "  no authentication:  $(col 1 "$WORK/none") MiB/s, fragment p50 $(col 2 "$WORK/none") ms, p99 $(col 3 "$WORK/none") ms"
echo "  Basic:              $(col 1 "$WORK/auth") MiB/s, fragment p50 $(col 2 "$WORK/auth") ms, p99 $(col 3 "$WORK/auth") ms  (x$(median < "$WORK/ra") of no auth)"
if [ -n "${BASELINE_BITSD:-}" ]; then
  echo "  baseline binary:    $(col 1 "$WORK/old") MiB/s, fragment p50 $(col 2 "$WORK/old") ms, p99 $(col 3 "$WORK/old") ms  (x$(median < "$WORK/ro") of no auth)"
fi
echo "cold start, 8 uploads of 1 MiB at once with the same credentials on a fresh server:"
echo "  this bitsd:         $(median < "$WORK/cold") s"
if [ -n "${BASELINE_BITSD:-}" ]; then
  echo "  baseline binary:    $(median < "$WORK/coldold") s"
fi
