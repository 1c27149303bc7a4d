#!/usr/bin/env bash
# A wrong-password flood against an authenticated upload (issue 20), for docs/BENCHMARKS.md. Builds a
# Release tree in build-bench/, a certificate (bitsctl gen-cert) and a users file (bitsctl user add,
# 100,000 PBKDF2 iterations, the default), then, ROUNDS times, against bitsd over https:
#   1. one upload of SIZE bytes in 4 MiB fragments (bitsclient bench) alone;
#   2. the same upload while FLOODERS TLS connections (a Python client, threads) send Pings with a new
#      wrong password each, keep-alive, reconnecting when a request takes more than 4 s.
# The uploading client signed in before the flood (a warm-up upload), as in the issue: what is
# measured is whether the flood can take the server away from someone already verified. Prints
# every run, the flood's answers (401: checked and wrong, 503: refused unchecked by the throttle) and
# bitsd's PBKDF2 count, and the medians. BASELINE_BITSD=path also runs each round against another
# binary (e.g. one built from an older commit); its flooded upload is cut off after 180 s.
# Usage: tools/bench-authflood.sh [ROUNDS] [SIZE_BYTES] [FLOODERS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SIZE=${2:-52428800}
FLOODERS=${3:-200}
tools/install-deps
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DBITSD_TESTS=OFF >/dev/null
cmake --build build-bench -j"$(nproc)" --target bitsd bitsctl bitsclient >/dev/null
BIN=$PWD/build-bench/bin
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/bitsd-bench-authflood.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
"$BIN/bitsctl" gen-cert --cn 127.0.0.1 --cert "$WORK/crt" --key "$WORK/key" >/dev/null
echo "bench-password" | "$BIN/bitsctl" user add bench --users-file "$WORK/users" --password-stdin >/dev/null

cat > "$WORK/flood.py" <<'EOF'
import base64, os, socket, ssl, sys, threading, time
port, n, seconds, ca, stopfile = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False
counts = {"sent": 0, "401": 0, "503": 0, "other": 0}
lock = threading.Lock()
end = [time.time() + seconds]
def count(k):
    with lock:
        counts[k] += 1
def run(i):
    k = 0
    while time.time() < end[0]:
        try:
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=4))
        except OSError:
            time.sleep(0.05)
            continue
        try:
            while time.time() < end[0]:
                k += 1
                cred = base64.b64encode(("bench:guess-%d-%d" % (i, k)).encode()).decode()
                s.sendall(("BITS_POST /x HTTP/1.1\r\nHost: b\r\nBITS-Packet-Type: Ping\r\n"
                           "Content-Length: 0\r\nAuthorization: Basic %s\r\n\r\n" % cred).encode())
                count("sent")
                buf = b""
                while b"\r\n\r\n" not in buf:
                    d = s.recv(4096)
                    if not d:
                        raise OSError("closed")
                    buf += d
                code = buf.split(b" ", 2)[1].decode()
                count(code if code in ("401", "503") else "other")
        except OSError:
            pass
        finally:
            s.close()
ts = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
for t in ts:
    t.start()
print("started", flush=True)
while time.time() < end[0] and not os.path.exists(stopfile):
    time.sleep(0.1)
end[0] = 0
for t in ts:
    t.join(6)
print("sent=%(sent)d 401=%(401)d 503=%(503)d other=%(other)d" % counts, flush=True)
EOF

start_bitsd() {  # name, binary; sets PORT_<name>, PID_<name>
  local name=$1 bin=$2
  rm -rf "$WORK/root-$name" "$WORK/state-$name"
  "$bin" --listen 127.0.0.1:0 --root "$WORK/root-$name" --state "$WORK/state-$name" --log-level info \
    --tls-cert "$WORK/crt" --tls-key "$WORK/key" --users-file "$WORK/users" \
    > "$WORK/ready-$name" 2> "$WORK/err-$name" &
  local pid=$!
  PIDS+=("$pid")
  eval "PID_$name=$pid"
  for _ in $(seq 400); do grep -q listening "$WORK/ready-$name" 2>/dev/null && break; sleep 0.05; done
  grep -q listening "$WORK/ready-$name" || { echo "bitsd ($name) did not start: $(cat "$WORK/err-$name")" >&2; exit 1; }
  eval "PORT_$name=$(sed -E 's/.*:([0-9]+)$/\1/' "$WORK/ready-$name")"
}
stop_bitsd() {  # name; then pbkdf2 NAME prints its PBKDF2 count (not in $(...): wait needs the parent)
  local pid
  eval "pid=\$PID_$1"
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
pbkdf2() { sed -n 's/.*password checks run (PBKDF2): \([0-9]*\).*/\1/p' "$WORK/err-$1" | tail -1; }
upload() {  # port, timeout seconds; prints seconds (or "timeout")
  timeout "$2" "$BIN/bitsclient" bench "https://127.0.0.1:$1/" --cacert "$WORK/crt" --sessions 1 --size "$SIZE" \
    --fragment-size 4M -u bench:bench-password | sed -n 's/^seconds=//p' || echo timeout
}
median() { grep -v timeout | sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "-"; else print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
one() {  # name, binary, cut-off seconds; prints "alone flooded ratio pbkdf2 flood-answers"
  local name=$1 bin=$2 cut=$3 port
  start_bitsd "$name" "$bin"
  eval "port=\$PORT_$name"
  "$BIN/bitsclient" bench "https://127.0.0.1:$port/" --cacert "$WORK/crt" --sessions 1 --size 4K \
    -u bench:bench-password >/dev/null  # signs in: the credentials are remembered
  local alone flooded
  alone=$(upload "$port" 120)
  rm -f "$WORK/stop"
  python3 "$WORK/flood.py" "$port" "$FLOODERS" $((cut + 30)) "$WORK/crt" "$WORK/stop" > "$WORK/flood-$name" &
  local fpid=$!
  PIDS+=("$fpid")
  for _ in $(seq 200); do grep -q started "$WORK/flood-$name" 2>/dev/null && break; sleep 0.05; done
  sleep 3  # every flooder connected and waiting on its first answer
  flooded=$(upload "$port" "$cut")
  touch "$WORK/stop"
  wait "$fpid" 2>/dev/null || true
  stop_bitsd "$name"
  local runs
  runs=$(pbkdf2 "$name")
  local ratio="-"
  [ "$flooded" != timeout ] && ratio=$(awk -v a="$flooded" -v b="$alone" 'BEGIN {printf "%.2f", a/b}')
  echo "$alone $flooded $ratio ${runs:-?} $(tail -1 "$WORK/flood-$name")"
}

for f in alone flooded ratio oalone oflooded; do : > "$WORK/$f"; done
for r in $(seq "$ROUNDS"); do
  read -r a f x p fl < <(one new "$BIN/bitsd" 120)
  echo "$a" >> "$WORK/alone"; echo "$f" >> "$WORK/flooded"; echo "$x" >> "$WORK/ratio"
  line="round $r: alone $a s, under $FLOODERS wrong-password connections $f s (x$x), PBKDF2 run $p, flood $fl"
  if [ -n "${BASELINE_BITSD:-}" ]; then
    read -r oa of ox op ofl < <(one old "$BASELINE_BITSD" 180)
    echo "$oa" >> "$WORK/oalone"; echo "$of" >> "$WORK/oflooded"
    line="$line | baseline binary: alone $oa s, flooded $of s (x$ox), PBKDF2 run $op, flood $ofl"
  fi
  echo "$line"
done
echo
echo "median over $ROUNDS rounds, one upload of $((SIZE / 1048576)) MiB over https in 4 MiB fragments, $FLOODERS flooders:"
echo "  this bitsd:       alone $(median < "$WORK/alone") s, under the flood $(median < "$WORK/flooded") s (x$(median < "$WORK/ratio"))"
if [ -n "${BASELINE_BITSD:-}" ]; then
  echo "  baseline binary:  alone $(median < "$WORK/oalone") s, under the flood $(median < "$WORK/oflooded") s"
fi
