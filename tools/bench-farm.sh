#!/usr/bin/env bash
# A bitsd farm against a single node (docs/BENCHMARKS.md, "Farm"; issue 17 item 7), side by side in
# one run on this machine. Builds a Release tree in build-bench/, starts one 3-member etcd cluster on
# 127.0.0.1-3 (data in BENCH_DIR) for the whole run, then ROUNDS times:
#   (a) small uploads with a reply: CLIENTS keep-alive connections for SECONDS, each repeating whole
#       BITS uploads of SIZE bytes (Create-Session, one Fragment, Close-Session; bitsload bits), every
#       one handed to an application (notify-type value; a minimal asyncio app that answers a 32-byte
#       reply at once), bitsd with its defaults (fdatasync on):
#         single      one bitsd, no farm
#         farm, 1     a 3-node farm, all clients on node 1: the same work plus the etcd round trips
#                     (the session owner at Create-Session, the claim and the "ended" record)
#         farm, 3     the same farm, the clients spread over the three nodes (same machine: the
#                     nodes share its cores, so this is not a scaling figure)
#   (b) one upload of BIG bytes in FRAG fragments (bitsbench upload) to a 3-node farm with
#       FWD_FLAGS (default --fdatasync off: the network path, not the disk):
#         direct      Create-Session and every fragment to node 1, the session's owner
#         forwarded   Create-Session to node 1, every fragment to node 2, which streams it to node 1
#       and node 2's peak RSS (VmHWM) after forwarding BIG bytes.
# Prints every round, then medians and ratios as Markdown tables.
#   tools/bench-farm.sh [ROUNDS] [SECONDS] [CLIENTS]    (default 3 rounds, 10 s, 16 clients)
# Environment: SIZE (default 65536), BIG (default 1 GiB), FRAG (default 8 MiB), FWD_FLAGS, BENCH_DIR
# (default /var/tmp: etcd and bitsd sync to a real disk), LEASE (--farm-lease-seconds, default 10),
# BENCH_BIN (a directory with bitsd, bitsload and bitsbench to use instead of building build-bench/).
# Needs etcd-server, etcd-client and python3 (installed with apt-get when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECONDS_EACH=${2:-10}
CLIENTS=${3:-16}
SIZE=${SIZE:-65536}
BIG=${BIG:-1073741824}
FRAG=${FRAG:-8388608}
LEASE=${LEASE:-10}
read -r -a FWD <<< "${FWD_FLAGS:---fdatasync off}"
# shellcheck source=tools/farm-lib.sh
. tools/farm-lib.sh

tools/install-deps
missing=()
for p in etcd-server etcd-client python3; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ -z "${BENCH_BIN:-}" ]; then
  cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DBITSD_TESTS=OFF >/dev/null
  cmake --build build-bench -j"$(nproc)" --target bitsd bitsload bitsbench >/dev/null
fi
BIN=${BENCH_BIN:-$PWD/build-bench/bin}
BITSD=${BITSD:-$BIN/bitsd}
FARM_DIR=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bitsd-bench-farm.XXXXXX")
trap 'farm_stop; rm -rf "$FARM_DIR"' EXIT

# The application: reads each POST's body, answers 200 with a 32-byte reply. asyncio, so that it
# is not what limits the upload rate.
cat > "$FARM_DIR/app.py" <<'EOF'
import asyncio, sys
REPLY = b"x" * 32
async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(REPLY), REPLY))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=1024)
    print("app listening on http://127.0.0.1:%d/app" % server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
EOF
python3 "$FARM_DIR/app.py" > "$FARM_DIR/app.ready" 2> "$FARM_DIR/app.log" &
farm_remember $! python3 app
for _ in $(seq 100); do grep -q listening "$FARM_DIR/app.ready" && break; sleep 0.05; done
APP_URL=$(sed -n 's/^app listening on //p' "$FARM_DIR/app.ready")

farm_etcd_start
ETCD=$FARM_ETCD
ETCD_PIDS=()
while read -r pid _ label; do
  if [[ $label == etcd-* ]]; then ETCD_PIDS+=("$pid"); fi
done < "$FARM_DIR/pids"
read -r PORT <<< "$(farm_ports 1)"
RUN=0

start_nodes() {  # start_nodes COUNT FLAGS...: COUNT=1: one bitsd without a farm; 3: a new farm
  local count=$1 n
  shift
  RUN=$((RUN + 1))
  rm -rf "$FARM_DIR"/n?
  if [ "$count" = 1 ]; then FARM_ETCD=""; else FARM_ETCD=$ETCD; FARM_NAME=bench-$RUN; fi
  for n in $(seq "$count"); do
    mkdir -p "$FARM_DIR/n$n/uploads/small"
    if [ "$count" = 1 ]; then
      farm_node_start "$n" "$PORT" --log-level warn "$@"
    else
      farm_node_start "$n" "$PORT" --log-level warn --farm-lease-seconds "$LEASE" "$@"
    fi
  done
  [ "$count" = 1 ] || farm_wait_nodes "$count"
}
stop_nodes() {
  local n
  for n in 1 2 3; do
    [ -n "${FARM_PIDS[n]:-}" ] && farm_alive "${FARM_PIDS[n]}" && kill -TERM "${FARM_PIDS[n]}"
    [ -n "${FARM_PIDS[n]:-}" ] && { wait "${FARM_PIDS[n]}" || true; }
    FARM_PIDS[n]=""
  done
}
small() {  # small HOSTS: uploads per second of bitsload against the running nodes
  local out
  if ! out=$("$BIN/bitsload" bits --port "$PORT" --hosts "$1" --clients "$CLIENTS" --seconds "$SECONDS_EACH" --size "$SIZE" 2>&1); then
    echo "bench-farm: bitsload failed: $out" >&2
    tail -n 5 "$FARM_DIR"/n?/bitsd.log >&2
    exit 1
  fi
  sed -E 's/.*uploads_per_s=([0-9.]+).*/\1/' <<< "$out"
}
big() {  # big BITSBENCH-ARGS...: MiB/s of one upload of BIG bytes
  local out
  if ! out=$("$BIN/bitsbench" upload --port "$PORT" --size "$BIG" --fragment "$FRAG" --path /big.bin "$@" 2>&1); then
    echo "bench-farm: bitsbench upload $* failed: $out" >&2
    tail -n 5 "$FARM_DIR"/n?/bitsd.log >&2
    exit 1
  fi
  sed -E 's/.*MiBps=([0-9.]+).*/\1/' <<< "$out"
}
cpu_ticks() {  # cpu_ticks PID...: user+system clock ticks those processes have used so far
  local pid t=0 st
  for pid in "$@"; do
    st=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    st=${st##*) }
    read -r -a f <<< "$st"
    t=$((t + f[11] + f[12]))
  done
  echo "$t"
}
per_upload_ms() {  # per_upload_ms TICKS UPLOADS_PER_S: CPU milliseconds per upload over one run
  awk -v t="$1" -v r="$2" -v s="$SECONDS_EACH" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", 1000 * t / hz / (r * s)}'
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }

NOTIFY=(--notify-type value --notify-url "$APP_URL" --max-notifications 256 --max-sessions-per-user 0)
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$(etcd --version | head -n 1), 3 members on 127.0.0.1-3, data in ${BENCH_DIR:-/var/tmp}; lease $LEASE s"
echo "(a) $CLIENTS clients, $((SIZE / 1024)) KiB uploads with a reply, $SECONDS_EACH s per run; (b) $((BIG / 1048576)) MiB in $((FRAG / 1048576)) MiB fragments, bitsd ${FWD[*]}"
for f in single farm1 farm3 r1 r3 direct fwd rf hwm c_single c_farm c_etcd; do : > "$FARM_DIR/r_$f"; done
for r in $(seq "$ROUNDS"); do
  start_nodes 1 "${NOTIFY[@]}"
  b0=$(cpu_ticks "${FARM_PIDS[1]}")
  single=$(small 127.0.0.1)
  c_single=$(per_upload_ms $(($(cpu_ticks "${FARM_PIDS[1]}") - b0)) "$single")
  stop_nodes
  start_nodes 3 "${NOTIFY[@]}"
  b0=$(cpu_ticks "${FARM_PIDS[@]}"); e0=$(cpu_ticks "${ETCD_PIDS[@]}")
  farm1=$(small 127.0.0.1)
  c_farm=$(per_upload_ms $(($(cpu_ticks "${FARM_PIDS[@]}") - b0)) "$farm1")
  c_etcd=$(per_upload_ms $(($(cpu_ticks "${ETCD_PIDS[@]}") - e0)) "$farm1")
  farm3=$(small 127.0.0.1,127.0.0.2,127.0.0.3)
  stop_nodes
  start_nodes 3 "${FWD[@]}"
  direct=$(big --host 127.0.0.1)
  rm -f "$FARM_DIR/n1/uploads/big.bin"
  fwd=$(big --host 127.0.0.1 --fragment-host 127.0.0.2)
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/${FARM_PIDS[2]}/status")
  stop_nodes
  echo "$single" >> "$FARM_DIR/r_single"; echo "$farm1" >> "$FARM_DIR/r_farm1"; echo "$farm3" >> "$FARM_DIR/r_farm3"
  ratio "$farm1" "$single" >> "$FARM_DIR/r_r1"; echo >> "$FARM_DIR/r_r1"
  ratio "$farm3" "$single" >> "$FARM_DIR/r_r3"; echo >> "$FARM_DIR/r_r3"
  echo "$c_single" >> "$FARM_DIR/r_c_single"; echo "$c_farm" >> "$FARM_DIR/r_c_farm"; echo "$c_etcd" >> "$FARM_DIR/r_c_etcd"
  echo "$direct" >> "$FARM_DIR/r_direct"; echo "$fwd" >> "$FARM_DIR/r_fwd"; echo "$hwm" >> "$FARM_DIR/r_hwm"
  ratio "$fwd" "$direct" >> "$FARM_DIR/r_rf"; echo >> "$FARM_DIR/r_rf"
  echo "round $r: single $single uploads/s | farm, node 1 $farm1 (x$(ratio "$farm1" "$single")) | farm, 3 nodes $farm3 (x$(ratio "$farm3" "$single")) | CPU ms per upload: single bitsd $c_single, farm (node 1) bitsd nodes $c_farm + etcd $c_etcd | direct $direct MiB/s | forwarded $fwd MiB/s (x$(ratio "$fwd" "$direct"), forwarder peak RSS $hwm KiB)"
done

echo
echo "median over $ROUNDS rounds; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| $((SIZE / 1024)) KiB uploads with a reply, $CLIENTS clients | uploads per second | ratio to single |"
echo "|---|---|---|"
echo "| single node (no farm) | $(median < "$FARM_DIR/r_single") | 1.00 |"
echo "| farm of 3, all clients on one node | $(median < "$FARM_DIR/r_farm1") | $(median < "$FARM_DIR/r_r1") |"
echo "| farm of 3, clients spread over the nodes | $(median < "$FARM_DIR/r_farm3") | $(median < "$FARM_DIR/r_r3") |"
echo "CPU milliseconds per upload (all clients on node 1): single bitsd $(median < "$FARM_DIR/r_c_single");" \
     "farm: the three bitsd nodes $(median < "$FARM_DIR/r_c_farm"), the three etcd members $(median < "$FARM_DIR/r_c_etcd")"
echo
echo "| $((BIG / 1048576)) MiB upload, $((FRAG / 1048576)) MiB fragments | MiB/s | ratio to direct |"
echo "|---|---|---|"
echo "| fragments to the owner node (direct) | $(median < "$FARM_DIR/r_direct") | 1.00 |"
echo "| fragments to another node (forwarded) | $(median < "$FARM_DIR/r_fwd") | $(median < "$FARM_DIR/r_rf") |"
echo "forwarding node's peak RSS (VmHWM): $(median < "$FARM_DIR/r_hwm") KiB"
# What one etcd write costs on this machine's disk: each member's WAL fsyncs and backend commits
# over the whole run (the etcd round trips of (a) wait for a majority of these).
for u in ${ETCD//,/ }; do
  curl -fsS --max-time 2 "$u/metrics" 2>/dev/null | awk -v u="$u" '
    /^etcd_disk_wal_fsync_duration_seconds_sum/ {ws = $2} /^etcd_disk_wal_fsync_duration_seconds_count/ {wc = $2}
    /^etcd_disk_backend_commit_duration_seconds_sum/ {bs = $2} /^etcd_disk_backend_commit_duration_seconds_count/ {bc = $2}
    /^etcd_server_is_leader/ {l = $2}
    END {if (wc > 0) printf "etcd %s%s: %d WAL fsyncs, mean %.2f ms; %d backend commits, mean %.2f ms\n", u, (l == 1 ? " (leader)" : ""), wc, 1000 * ws / wc, bc, (bc > 0 ? 1000 * bs / bc : 0)}' || true
done
