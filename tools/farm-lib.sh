# Shell functions shared by tools/farm-demo and tools/bench-farm.sh (sourced, not run): a 3-member
# etcd cluster and bitsd farm nodes on 127.0.0.1, 127.0.0.2 and 127.0.0.3 of one machine. Linux
# routes all of 127.0.0.0/8 to the loopback interface, so each address can have its own listener on
# the same port, as three machines of a LAN would. Needs etcd (Debian: etcd-server), curl, python3.
# Every process started here is remembered by PID in $FARM_DIR/pids; farm_stop ends exactly those.

FARM_ADDRS=(127.0.0.1 127.0.0.2 127.0.0.3)
FARM_PIDS=()  # FARM_PIDS[N]: bitsd node N's PID

# farm_ports N: N distinct TCP ports, each free on all three addresses (all held open while chosen).
farm_ports() {
  python3 - "$1" "${FARM_ADDRS[@]}" <<'EOF'
import socket, sys
want, addrs = int(sys.argv[1]), sys.argv[2:]
held, ports = [], []
while len(ports) < want:
    s = socket.socket()
    s.bind((addrs[0], 0))
    port = s.getsockname()[1]
    group = [s]
    try:
        for a in addrs[1:]:
            t = socket.socket()
            group.append(t)
            t.bind((a, port))
    except OSError:
        for t in group: t.close()
        continue
    held += group
    ports.append(port)
print(" ".join(map(str, ports)))
EOF
}

# farm_remember PID COMM LABEL: records a process this script started and the program it runs
# (its /proc/PID/comm once it has exec'd), so that a later `stop` from another shell never signals
# a PID the system has given to something else meanwhile.
farm_remember() { echo "$1 $2 $3" >> "$FARM_DIR/pids"; }

# farm_alive PID [COMM]: the process exists, is not a zombie, and (if given) runs COMM.
farm_alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ] || return 1
  [ -z "${2:-}" ] || [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]
}

# farm_etcd_start: a new 3-member cluster, members m1..m3 on the three addresses, data in
# $FARM_DIR/etcd/mN, logs in $FARM_DIR/etcd/mN.log. Sets FARM_ETCD (the client URLs, comma-separated,
# as --farm-etcd wants them). Waits until every member says it is healthy (at most 30 s).
farm_etcd_start() {
  local ports i name url peers="" cluster="" token
  read -r -a ports <<< "$(farm_ports 6)"
  token="bitsd-farm-$$-$RANDOM"
  mkdir -p "$FARM_DIR/etcd"
  FARM_ETCD=""
  for i in 0 1 2; do
    cluster+="${cluster:+,}m$((i + 1))=http://${FARM_ADDRS[i]}:${ports[i + 3]}"
  done
  for i in 0 1 2; do
    name=m$((i + 1))
    url="http://${FARM_ADDRS[i]}:${ports[i]}"
    peers="http://${FARM_ADDRS[i]}:${ports[i + 3]}"
    etcd --name "$name" --data-dir "$FARM_DIR/etcd/$name" \
      --listen-client-urls "$url" --advertise-client-urls "$url" \
      --listen-peer-urls "$peers" --initial-advertise-peer-urls "$peers" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "$token" \
      --logger zap --log-outputs stderr > "$FARM_DIR/etcd/$name.log" 2>&1 &
    farm_remember $! etcd "etcd-$name"
    FARM_ETCD+="${FARM_ETCD:+,}$url"
  done
  local deadline=$((SECONDS + 30)) u
  for u in ${FARM_ETCD//,/ }; do
    until curl -fsS --max-time 1 "$u/health" 2>/dev/null | grep -q '"health":"true"'; do
      if [ "$SECONDS" -ge "$deadline" ]; then
        echo "farm: etcd at $u is not healthy after 30 s; its log: $FARM_DIR/etcd/" >&2
        return 1
      fi
      sleep 0.2
    done
  done
}

# farm_node_start N PORT EXTRA...: bitsd node N (1..3) on ${FARM_ADDRS[N-1]}:PORT, host-id and
# farm peer URL that address and port (the port is part of the host-id because the reply URL and
# BITS-Host-Id are built from it, and the nodes do not listen on port 80), in the farm named $FARM_NAME on $FARM_ETCD (no farm when FARM_ETCD is empty), uploads in
# $FARM_DIR/nN/uploads, state in $FARM_DIR/nN/state, stderr in $FARM_DIR/nN/bitsd.log. Waits for
# its ready line (at most 30 s). Sets FARM_PIDS[N], FARM_ARGV (the command line it ran) and
# FARM_COMM (the program name the kernel shows for it).
farm_node_start() {
  local n=$1 port=$2 addr=${FARM_ADDRS[$1 - 1]} dir="$FARM_DIR/n$1"
  shift 2
  local farm=()
  [ -n "${FARM_ETCD:-}" ] && farm=(--farm-etcd "$FARM_ETCD" --farm-name "${FARM_NAME:-default}"
                                   --farm-peer-url "http://$addr:$port")
  mkdir -p "$dir/uploads"
  : > "$dir/ready"
  FARM_ARGV=("${BITSD:-build/bin/bitsd}" --listen "$addr:$port" --host-id "$addr:$port" "${farm[@]}"
             --root "$dir/uploads" --state "$dir/state" "$@")
  FARM_COMM=$(basename "${FARM_ARGV[0]}" | cut -c1-15)
  "${FARM_ARGV[@]}" > "$dir/ready" 2> "$dir/bitsd.log" &
  FARM_PIDS[n]=$!
  farm_remember $! "$FARM_COMM" "bitsd-n$n"
  local deadline=$((SECONDS + 30))
  until grep -q listening "$dir/ready" 2>/dev/null; do
    if ! farm_alive "${FARM_PIDS[n]}" || [ "$SECONDS" -ge "$deadline" ]; then
      echo "farm: bitsd node $n did not start; the end of $dir/bitsd.log:" >&2
      tail -n 5 "$dir/bitsd.log" >&2
      return 1
    fi
    sleep 0.1
  done
}

# farm_stop: SIGTERM to every process recorded in $FARM_DIR/pids that still runs the program it was
# started as (newest first), then SIGKILL to any still there after 10 s. Only those PIDs, never a
# name. Reaps them when they are this shell's children.
farm_stop() {
  [ -f "$FARM_DIR/pids" ] || return 0
  local pid comm left=() deadline
  while read -r pid comm _; do
    farm_alive "$pid" "$comm" && kill -TERM "$pid" 2>/dev/null && left+=("$pid")
  done < <(tac "$FARM_DIR/pids")
  deadline=$((SECONDS + 10))
  for pid in "${left[@]}"; do
    while farm_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    farm_alive "$pid" && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
  done
  rm -f "$FARM_DIR/pids"
}

# farm_wait_nodes COUNT: waits (at most 30 s) until COUNT nodes of farm $FARM_NAME have their
# liveness key in etcd (P node/<host-id>), i.e. hold a lease and take uploads.
farm_wait_nodes() {
  local deadline=$((SECONDS + 30)) have
  while :; do
    have=$(etcdctl --endpoints "$FARM_ETCD" get --prefix --keys-only "/bitsd/${FARM_NAME:-default}/node/" 2>/dev/null | grep -c . || true)
    [ "$have" -ge "$1" ] && return 0
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "farm: only $have of $1 nodes of farm ${FARM_NAME:-default} are live in etcd after 30 s" >&2
      return 1
    fi
    sleep 0.2
  done
}
