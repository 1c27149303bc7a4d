#!/usr/bin/env bash
# TLS figures for docs/BENCHMARKS.md (issue 7). Builds a Release tree in build-bench/, makes a
# certificate with bitsctl gen-cert, then, ROUNDS times, in the same round:
#   1. throughput of one SIZE-byte upload (bitsclient bench, 1 MiB fragments, fdatasync off and
#      digest off so the transport is what is measured) over plain http, over https with
#      ChaCha20-Poly1305, and over https with AES-128-GCM; ratios to plain http; and ChaCha20 again
#      with a small board's TLS sizes (tls-buffer-bytes 4K, tls-record-bytes 4K, as board/router);
#   2. full TLS handshakes per second (new connection + handshake + Ping) against plain connect+Ping;
#   3. bitsd's RSS growth per idle TLS connection (200 connections, each after a handshake and a Ping)
#      against the same for plain connections;
#   4. the ceiling: mbedTLS's ChaCha20-Poly1305 and AES-128-GCM alone on one core (bitsbench cipher).
# Uploads alternate their order between rounds and each starts after a sync, with the previous
# upload's file deleted. Prints every run and the medians. Usage: tools/bench-tls.sh [ROUNDS] [SIZE_BYTES]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SIZE=${2:-268435456}
tools/install-deps
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DBITSD_TESTS=OFF >/dev/null
cmake --build build-bench -j"$(nproc)" --target bitsd bitsctl bitsclient bitsbench >/dev/null
BIN=$PWD/build-bench/bin
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/bitsd-bench-tls.XXXXXX")
trap 'pkill -P $$ bitsd 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$BIN/bitsctl" gen-cert --cn 127.0.0.1 --cert "$WORK/c.crt" --key "$WORK/c.key" >/dev/null
CHACHA=TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256
AES=TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256

start_bitsd() {  # name, extra args...; sets PID_<name> and PORT_<name>
  local name=$1
  shift
  rm -rf "$WORK/root-$name" "$WORK/state-$name"
  mkdir -p "$WORK/root-$name"
  "$BIN/bitsd" --listen 127.0.0.1:0 --root "$WORK/root-$name" --state "$WORK/state-$name" --log-level warn \
    --fdatasync off --digest off "$@" > "$WORK/ready-$name" 2> "$WORK/err-$name" &
  eval "PID_$name=$!"
  for _ in $(seq 100); do grep -q listening "$WORK/ready-$name" 2>/dev/null && break; sleep 0.05; done
  eval "PORT_$name=$(sed -E 's/.*:([0-9]+)$/\1/' "$WORK/ready-$name")"
}
stop_all() { pkill -P $$ bitsd 2>/dev/null || true; wait 2>/dev/null || true; }
val() { sed -n "s/^$1=//p"; }
field() { sed -E "s/.*$1=([0-9.]+).*/\1/"; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
up() {  # scheme, port, extra...
  local scheme=$1 port=$2
  shift 2
  # Each upload starts with no dirty pages from the one before (fdatasync is off, so an earlier
  # upload's writeback would otherwise slow whichever runs next), and its file is deleted after.
  sync
  "$BIN/bitsclient" bench "$scheme://127.0.0.1:$port/" --sessions 1 --size "$SIZE" --fragment-size 1M "$@" | val throughput_mib_s
  rm -f "$WORK"/root-*/bench-*.bin
}

for f in plain chacha aes small rs rc ra hs hp tlsmem plainmem cc ca; do : > "$WORK/$f"; done
for r in $(seq "$ROUNDS"); do
  start_bitsd plain
  start_bitsd tls --tls-cert "$WORK/c.crt" --tls-key "$WORK/c.key"
  start_bitsd small --tls-cert "$WORK/c.crt" --tls-key "$WORK/c.key" --tls-buffer-bytes 4K --tls-record-bytes 4K
  # The four uploads run in one order in odd rounds and in the reverse order in even ones.
  if [ $((r % 2)) = 1 ]; then
    p=$(up http "$PORT_plain")
    c=$(up https "$PORT_tls" --insecure --tls-suite "$CHACHA")
    a=$(up https "$PORT_tls" --insecure --tls-suite "$AES")
    s=$(up https "$PORT_small" --insecure --tls-suite "$CHACHA")
  else
    s=$(up https "$PORT_small" --insecure --tls-suite "$CHACHA")
    a=$(up https "$PORT_tls" --insecure --tls-suite "$AES")
    c=$(up https "$PORT_tls" --insecure --tls-suite "$CHACHA")
    p=$(up http "$PORT_plain")
  fi
  hs=$("$BIN/bitsbench" tls-handshakes --port "$PORT_tls" --plain-port "$PORT_plain" --count 300)
  stop_all
  start_bitsd plain
  start_bitsd tls --tls-cert "$WORK/c.crt" --tls-key "$WORK/c.key"
  tm=$("$BIN/bitsbench" tls-idle --port "$PORT_tls" --count 200 --pid "$PID_tls" | field bytes_per_connection)
  pm=$("$BIN/bitsbench" idle --port "$PORT_plain" --count 200 --pid "$PID_plain" | field bytes_per_connection)
  stop_all
  ci=$("$BIN/bitsbench" cipher --size 268435456)
  rc=$(awk -v a="$c" -v b="$p" 'BEGIN {printf "%.2f", a/b}')
  ra=$(awk -v a="$a" -v b="$p" 'BEGIN {printf "%.2f", a/b}')
  rs=$(awk -v a="$s" -v b="$c" 'BEGIN {printf "%.2f", a/b}')
  echo "round $r: plain $p MiB/s | https ChaCha20-Poly1305 $c MiB/s (x$rc) | https AES-128-GCM $a MiB/s (x$ra) | ChaCha20 with 4K TLS buffers $s MiB/s (x$rs of 64K) | $hs | RSS per idle connection: TLS $tm B, plain $pm B | $ci"
  echo "$p" >> "$WORK/plain"; echo "$c" >> "$WORK/chacha"; echo "$a" >> "$WORK/aes"; echo "$rc" >> "$WORK/rc"; echo "$ra" >> "$WORK/ra"
  echo "$s" >> "$WORK/small"; echo "$rs" >> "$WORK/rs"
  echo "$hs" | field tls_per_second >> "$WORK/hs"; echo "$hs" | field plain_connects_per_second >> "$WORK/hp"
  echo "$tm" >> "$WORK/tlsmem"; echo "$pm" >> "$WORK/plainmem"
  echo "$ci" | field chacha20_poly1305_MiBps >> "$WORK/cc"; echo "$ci" | field aes_128_gcm_MiBps >> "$WORK/ca"
done

echo
echo "median over $ROUNDS rounds, one $((SIZE / 1048576)) MiB upload, 1 MiB fragments, fdatasync and digest off:"
echo "  plain http:                 $(median < "$WORK/plain") MiB/s"
echo "  https ChaCha20-Poly1305:    $(median < "$WORK/chacha") MiB/s  (x$(median < "$WORK/rc") of plain)"
echo "  https AES-128-GCM:          $(median < "$WORK/aes") MiB/s  (x$(median < "$WORK/ra") of plain)"
echo "  ChaCha20, 4K TLS buffers:   $(median < "$WORK/small") MiB/s  (x$(median < "$WORK/rs") of the 64K default)"
echo "  TLS handshakes per second:  $(median < "$WORK/hs")  (plain connect+Ping per second: $(median < "$WORK/hp"))"
echo "  RSS per idle connection:    TLS $(median < "$WORK/tlsmem") bytes, plain $(median < "$WORK/plainmem") bytes"
echo "  mbedTLS alone, one core:    ChaCha20-Poly1305 $(median < "$WORK/cc") MiB/s, AES-128-GCM $(median < "$WORK/ca") MiB/s"
