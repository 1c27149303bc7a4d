#!/usr/bin/env bash
# Upload throughput over https against the size of bitsd's ciphertext read buffer
# (tls-buffer-bytes), for docs/BENCHMARKS.md. Builds a Release tree in build-bench/, starts one
# https bitsd per size side by side (fdatasync and digest off), then, ROUNDS times, one SIZE-byte
# upload to each with ChaCha20-Poly1305 (bitsclient bench, 1 MiB fragments), in one order in odd
# rounds and the reverse in even ones, each after a sync with the previous upload's file deleted.
# Prints every round, the medians and each size's ratio to the largest.
# Usage: tools/bench-tls-buffers.sh [ROUNDS] [SIZE_BYTES] [BUFFER_SIZES...]   (default 4K 16K 64K)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
SIZE=${2:-134217728}
shift $(($# < 2 ? $# : 2))
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(4K 16K 64K)
tools/install-deps
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DBITSD_TESTS=OFF >/dev/null
cmake --build build-bench -j"$(nproc)" --target bitsd bitsctl bitsclient >/dev/null
BIN=$PWD/build-bench/bin
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/bitsd-bench-tlsbuf.XXXXXX")
trap 'pkill -P $$ bitsd 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$BIN/bitsctl" gen-cert --cn 127.0.0.1 --cert "$WORK/c.crt" --key "$WORK/c.key" >/dev/null
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

declare -A PORT
for sz in "${SIZES[@]}"; do
  mkdir -p "$WORK/root-$sz"
  "$BIN/bitsd" --listen 127.0.0.1:0 --root "$WORK/root-$sz" --state "$WORK/state-$sz" --log-level warn \
    --fdatasync off --digest off --tls-cert "$WORK/c.crt" --tls-key "$WORK/c.key" --tls-buffer-bytes "$sz" \
    > "$WORK/ready-$sz" 2> "$WORK/err-$sz" &
  for _ in $(seq 100); do grep -q listening "$WORK/ready-$sz" 2>/dev/null && break; sleep 0.05; done
  PORT[$sz]=$(sed -E 's/.*:([0-9]+)$/\1/' "$WORK/ready-$sz")
  : > "$WORK/t-$sz"
done

for r in $(seq "$ROUNDS"); do
  order=("${SIZES[@]}")
  if [ $((r % 2)) = 0 ]; then
    order=()
    for ((i = ${#SIZES[@]} - 1; i >= 0; i--)); do order+=("${SIZES[$i]}"); done
  fi
  line="round $r:"
  for sz in "${order[@]}"; do
    sync
    t=$("$BIN/bitsclient" bench "https://127.0.0.1:${PORT[$sz]}/" --insecure --sessions 1 --size "$SIZE" \
          --fragment-size 1M --tls-suite TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256 | sed -n 's/^throughput_mib_s=//p')
    rm -f "$WORK/root-$sz"/bench-*.bin
    echo "$t" >> "$WORK/t-$sz"
    line="$line $sz=$t MiB/s"
  done
  echo "$line"
done

echo
echo "median over $ROUNDS rounds, one $((SIZE / 1048576)) MiB upload each, ChaCha20-Poly1305:"
last=${SIZES[${#SIZES[@]} - 1]}
ref=$(median < "$WORK/t-$last")
for sz in "${SIZES[@]}"; do
  m=$(median < "$WORK/t-$sz")
  echo "  tls-buffer-bytes $sz: $m MiB/s  (x$(awk -v a="$m" -v b="$ref" 'BEGIN {printf "%.2f", a/b}') of $last)"
done
