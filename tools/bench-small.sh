#!/usr/bin/env bash
# Small uploads against nginx's WebDAV (docs/BENCHMARKS.md, "Small uploads"; issue 18 item 4).
# Builds a Release tree in build-bench/, then, ROUNDS times, side by side, CLIENTS keep-alive
# connections for SECONDS each run:
#   nginx      Debian's nginx-light (its WebDAV module), `dav_methods PUT`, access log off: PUTs of
#              64 KiB, a new file per request; load from tools/bitsload put (and, if wrk is
#              installed, from wrk with the same 64 KiB PUT to a new file name each time)
#   bitsd off  bitsd --fdatasync off: whole BITS uploads of 64 KiB (Create-Session, one Fragment,
#              Close-Session: three requests each), a new file each; load from tools/bitsload bits
#   bitsd      bitsd with its defaults (fdatasync on: data and journal synced before each Ack)
# Neither nginx nor bitsd --fdatasync off syncs anything; both write each file into place by a
# rename or link. Prints every round, then medians, uploads per second and the ratio to nginx.
#   tools/bench-small.sh [ROUNDS] [SECONDS] [CLIENTS]     (default 3 rounds, 10 s, 50 clients)
# Needs nginx-light (and optionally wrk): apt-get install nginx-light wrk. Environment: BENCH_DIR;
# BENCH_BEFORE=/path/to/bitsd adds that binary with --fdatasync off to every round (a before/after);
# BENCH_TUNED="FLAGS" adds bitsd --fdatasync off FLAGS (e.g. "--thread-pool 4") to every round.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECONDS_EACH=${2:-10}
CLIENTS=${3:-50}
SIZE=65536
command -v nginx >/dev/null || { echo "bench-small: needs nginx (apt-get install nginx-light)" >&2; exit 1; }
nginx -V 2>&1 | grep -q http_dav_module || { echo "bench-small: this nginx has no WebDAV module" >&2; exit 1; }
tools/install-deps
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DBITSD_TESTS=OFF >/dev/null
cmake --build build-bench -j"$(nproc)" --target bitsd bitsload >/dev/null
BIN=$PWD/build-bench/bin
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bitsd-small.XXXXXX")
chmod 755 "$WORK"
PID=""
trap '[ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

start_nginx() {  # sets PID and PORT
  rm -rf "$WORK/www" "$WORK/nginx"
  mkdir -p "$WORK/www/dav" "$WORK/nginx/body"
  chown -R www-data "$WORK/www" "$WORK/nginx" 2>/dev/null || true
  PORT=$(free_port)
  cat > "$WORK/nginx.conf" <<EOF
user www-data;
worker_processes auto;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 10000000;
  client_max_body_size 16m;
  client_body_temp_path $WORK/nginx/body;
  server {
    listen 127.0.0.1:$PORT;
    root $WORK/www;
    location /dav/ { dav_methods PUT; create_full_put_path on; }
  }
}
EOF
  nginx -c "$WORK/nginx.conf" &
  PID=$!
  wait_port "$PORT"
}
start_bitsd() {  # args: extra flags; sets PID and PORT (BITSD: the binary)
  rm -rf "$WORK/root" "$WORK/state"
  mkdir -p "$WORK/root/small"
  "${BITSD:-$BIN/bitsd}" --listen 127.0.0.1:0 --root "$WORK/root" --state "$WORK/state" --log-level warn "$@" \
    > "$WORK/ready" 2> "$WORK/bitsd.err" &
  PID=$!
  for _ in $(seq 100); do grep -q listening "$WORK/ready" 2>/dev/null && break; sleep 0.05; done
  PORT=$(sed -E 's/.*:([0-9]+)$/\1/' "$WORK/ready")
}
stop() { kill -TERM "$PID"; wait "$PID" || true; PID=""; rm -rf "$WORK/www" "$WORK/root" "$WORK/state"; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
ups() { sed -E 's/.*uploads_per_s=([0-9.]+).*/\1/'; }

cat > "$WORK/put.lua" <<EOF
-- wrk: a PUT of $SIZE bytes to a new file each time (per thread: its id and a counter)
local n = 0
local threads = 0
function setup(thread) thread:set("id", threads); threads = threads + 1 end
function init(args) body = string.rep("x", $SIZE) end
function request() n = n + 1; return wrk.format("PUT", "/dav/w" .. id .. "-" .. n .. ".bin", nil, body) end
EOF
HAVE_WRK=0
command -v wrk >/dev/null && HAVE_WRK=1

echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$(nginx -v 2>&1); $CLIENTS clients, $((SIZE / 1024)) KiB per upload, $SECONDS_EACH s per run"
for f in nginx wrk off on roff ron before tuned; do : > "$WORK/r_$f"; done
for r in $(seq "$ROUNDS"); do
  start_nginx
  ngx=$("$BIN/bitsload" put --port "$PORT" --clients "$CLIENTS" --seconds "$SECONDS_EACH" --size "$SIZE" | ups)
  stop
  w="-"
  if [ "$HAVE_WRK" = 1 ]; then
    start_nginx
    w=$(wrk -t2 -c"$CLIENTS" -d"${SECONDS_EACH}s" -s "$WORK/put.lua" "http://127.0.0.1:$PORT/" | sed -n 's/^Requests\/sec: *//p')
    stop
    echo "$w" >> "$WORK/r_wrk"
  fi
  start_bitsd --fdatasync off
  off=$("$BIN/bitsload" bits --port "$PORT" --clients "$CLIENTS" --seconds "$SECONDS_EACH" --size "$SIZE" | ups)
  stop
  b="-"
  if [ -n "${BENCH_BEFORE:-}" ]; then
    BITSD=$BENCH_BEFORE start_bitsd --fdatasync off
    b=$("$BIN/bitsload" bits --port "$PORT" --clients "$CLIENTS" --seconds "$SECONDS_EACH" --size "$SIZE" | ups)
    stop
    echo "$b" >> "$WORK/r_before"
  fi
  t="-"
  if [ -n "${BENCH_TUNED:-}" ]; then
    # shellcheck disable=SC2086 # BENCH_TUNED is a word list
    start_bitsd --fdatasync off $BENCH_TUNED
    t=$("$BIN/bitsload" bits --port "$PORT" --clients "$CLIENTS" --seconds "$SECONDS_EACH" --size "$SIZE" | ups)
    stop
    echo "$t" >> "$WORK/r_tuned"
  fi
  start_bitsd
  on=$("$BIN/bitsload" bits --port "$PORT" --clients "$CLIENTS" --seconds "$SECONDS_EACH" --size "$SIZE" | ups)
  stop
  echo "$ngx" >> "$WORK/r_nginx"; echo "$off" >> "$WORK/r_off"; echo "$on" >> "$WORK/r_on"
  echo "$(ratio "$off" "$ngx")" >> "$WORK/r_roff"; echo "$(ratio "$on" "$ngx")" >> "$WORK/r_ron"
  echo "round $r: nginx PUT $ngx/s (wrk: $w/s) | bitsd --fdatasync off $off uploads/s (x$(ratio "$off" "$ngx")) | bitsd defaults $on uploads/s (x$(ratio "$on" "$ngx")) | before, --fdatasync off $b uploads/s | --fdatasync off ${BENCH_TUNED:-(no BENCH_TUNED)} $t uploads/s"
done

echo
echo "median over $ROUNDS rounds; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| server | uploads of 64 KiB per second | requests per second | ratio to nginx |"
echo "|---|---|---|---|"
echo "| nginx WebDAV PUT (bitsload) | $(median < "$WORK/r_nginx") | $(median < "$WORK/r_nginx") | 1.00 |"
[ "$HAVE_WRK" = 1 ] && echo "| nginx WebDAV PUT (wrk) | $(median < "$WORK/r_wrk") | $(median < "$WORK/r_wrk") | |"
echo "| bitsd --fdatasync off | $(median < "$WORK/r_off") | $(awk -v a="$(median < "$WORK/r_off")" 'BEGIN {print 3*a}') | $(median < "$WORK/r_roff") |"
[ -n "${BENCH_BEFORE:-}" ] && echo "| $BENCH_BEFORE --fdatasync off | $(median < "$WORK/r_before") | $(awk -v a="$(median < "$WORK/r_before")" 'BEGIN {print 3*a}') | $(ratio "$(median < "$WORK/r_before")" "$(median < "$WORK/r_nginx")") |"
[ -n "${BENCH_TUNED:-}" ] && echo "| bitsd --fdatasync off $BENCH_TUNED | $(median < "$WORK/r_tuned") | $(awk -v a="$(median < "$WORK/r_tuned")" 'BEGIN {print 3*a}') | $(ratio "$(median < "$WORK/r_tuned")" "$(median < "$WORK/r_nginx")") |"
echo "| bitsd defaults (durable) | $(median < "$WORK/r_on") | $(awk -v a="$(median < "$WORK/r_on")" 'BEGIN {print 3*a}') | $(median < "$WORK/r_ron") |"
