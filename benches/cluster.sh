# Sourced by the benchmarks that need a Redis Cluster and respgate on free loopback ports
# (benches/memory.sh, benches/client_cache.sh): everything they start is stopped, by pid, when
# the benchmark exits, and its data lives in a temporary directory removed then.
#
# The benchmark sets before sourcing: ROOT, TARGET_DIR, NODES (masters, no replicas),
# BENCH_NAME (names the temporary directory), and log and die. After it: BIN (respgate, built
# unless PROXY_BIN names one), NODE_PORTS, PROXY_PORT (free, for respgate), seeds, DATA_DIR,
# PIDS (the nodes), PROXY_PID and CLIENT_PID (set by the benchmark, stopped at exit), and the
# functions alive, stop_pids, wait_until and pong. The cluster answers cluster_state:ok.

PIDS=()
PROXY_PID=
CLIENT_PID=
DATA_DIR=
alive() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ $state != Z* ]]
}
# stop_pids PID...: SIGTERM, up to 5 s to exit, then SIGKILL.
stop_pids() {
    local pid
    for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $CLIENT_PID ]]; then stop_pids "$CLIENT_PID"; fi
    if [[ -n $PROXY_PID ]]; then stop_pids "$PROXY_PID"; fi
    if ((${#PIDS[@]})); then stop_pids "${PIDS[@]}"; fi
    if [[ -n $DATA_DIR && -d $DATA_DIR ]]; then rm -rf "$DATA_DIR"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -f $ROOT/scripts/ensure-redis.sh ]]; then bash "$ROOT/scripts/ensure-redis.sh"; fi
for tool in redis-server redis-cli ss python3; do command -v "$tool" >/dev/null || die "$tool not found"; done

BIN=${PROXY_BIN:-}
if [[ -z $BIN ]]; then
    log "building respgate (release)"
    (cd "$ROOT" && cargo build --release --bin respgate)
    BIN=$TARGET_DIR/release/respgate
fi
[[ -x $BIN ]] || die "$BIN is not an executable"

# Node ports base..base+2, their bus ports base+20..base+22, respgate on base+10; all below
# 32768, where Linux starts handing out ephemeral ports.
port_busy() { ss -Hltn "sport = :$1" | grep -q .; }
BASE=
for _ in $(seq 30); do
    candidate=$((10000 + RANDOM % 22000))
    ok=1
    for p in $(seq "$candidate" $((candidate + NODES - 1))) $((candidate + 10)) \
             $(seq $((candidate + 20)) $((candidate + 20 + NODES - 1))); do
        if port_busy "$p"; then ok=0; break; fi
    done
    if [[ $ok -eq 1 ]]; then BASE=$candidate; break; fi
done
[[ -n $BASE ]] || die "no free block of ports found"
mapfile -t NODE_PORTS < <(seq "$BASE" $((BASE + NODES - 1)))
PROXY_PORT=$((BASE + 10))

wait_until() {
    local secs=$1 what=$2; shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out after ${secs}s waiting for $what"
        sleep 0.1
    done
}
pong() { [[ $(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null) == PONG ]]; }

DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/respgate-$BENCH_NAME.XXXXXX")
log "starting $NODES cluster nodes on 127.0.0.1:${NODE_PORTS[0]}-${NODE_PORTS[-1]}"
for p in "${NODE_PORTS[@]}"; do
    mkdir -p "$DATA_DIR/$p"
    redis-server --port "$p" --bind 127.0.0.1 --protected-mode no --daemonize no \
        --dir "$DATA_DIR/$p" --logfile "$DATA_DIR/$p/redis.log" --save '' --appendonly no \
        --cluster-enabled yes --cluster-config-file "$DATA_DIR/$p/nodes.conf" \
        --cluster-port $((p + 20)) --cluster-node-timeout 5000 &
    PIDS+=($!)
done
for p in "${NODE_PORTS[@]}"; do wait_until 20 "redis on port $p" pong "$p"; done
seeds=()
for p in "${NODE_PORTS[@]}"; do seeds+=("127.0.0.1:$p"); done
redis-cli --cluster create "${seeds[@]}" --cluster-replicas 0 --cluster-yes \
    >"$DATA_DIR/cluster-create.log" 2>&1 \
    || { cat "$DATA_DIR/cluster-create.log" >&2; die "redis-cli --cluster create failed"; }
cluster_ok() {
    local p
    for p in "${NODE_PORTS[@]}"; do
        redis-cli -h 127.0.0.1 -p "$p" cluster info 2>/dev/null | tr -d '\r' \
            | grep -qx 'cluster_state:ok' || return 1
    done
}
wait_until 60 "cluster_state:ok on every node" cluster_ok

