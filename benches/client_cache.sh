#!/usr/bin/env bash
# Client-side caching through respgate: reads of a hot set with redis-py 8's cache (RESP3,
# CLIENT TRACKING) against the same reads without it, while a writer changes the hot set
# through the proxy; then the proxy's memory per tracked key. benches/client_cache.py runs the
# clients (from the virtual environment of scripts/ensure-python.sh).
#
# Usage: bash benches/client_cache.sh        (about a minute)
#        PROXY_BIN=/tmp/respgate-x bash benches/client_cache.sh
#
# Environment (all optional):
#   PROXY_BIN=path        this respgate binary instead of building target/release/respgate
#   HOT=1000              keys in the hot set
#   READS=100000          reads per run
#   WRITES_PER_S=20       writes to random hot keys per second during the reads
#   MEMORY_KEYS=100000    distinct keys one reader caches for the memory figure
#   RESPGATE_*            passed on to respgate; RESPGATE_SERVER__THREADS=1 unless given
#
# It starts a Redis Cluster of 3 masters (no replicas) on free loopback ports with its data in a
# temporary directory and respgate in front of it (announcing 7.4.0 in HELLO, which redis-py 8
# needs to cache); everything it started is stopped, by pid, when it exits.
set -euo pipefail

HOT=${HOT:-1000}
READS=${READS:-100000}
WRITES_PER_S=${WRITES_PER_S:-20}
MEMORY_KEYS=${MEMORY_KEYS:-100000}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
NODES=3

log() { printf '[client_cache.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for n in HOT READS WRITES_PER_S MEMORY_KEYS; do
    [[ ${!n} =~ ^[1-9][0-9]*$ ]] || die "$n must be a positive integer, got '${!n}'"
done

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
bash "$ROOT/scripts/ensure-python.sh" >&2
PYTHON=$ROOT/.venv-tests/bin/python
for tool in redis-server redis-cli ss; do command -v "$tool" >/dev/null || die "$tool not found"; done

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

DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/respgate-client-cache.XXXXXX")
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

log "starting respgate ($BIN) on 127.0.0.1:$PROXY_PORT"
RESPGATE_SERVER__THREADS=${RESPGATE_SERVER__THREADS:-1} RESPGATE_TRACKING__ANNOUNCE_VERSION=7.4.0 \
    RUST_LOG=warn NO_COLOR=1 "$BIN" \
    --listen "127.0.0.1:$PROXY_PORT" --cluster "$(IFS=,; echo "${seeds[*]}")" \
    >>"$DATA_DIR/respgate.log" 2>&1 &
PROXY_PID=$!
proxy_up() { alive "$PROXY_PID" || return 0; pong "$PROXY_PORT"; }
wait_until 30 "respgate to answer PING" proxy_up
alive "$PROXY_PID" || { tail -n 50 "$DATA_DIR/respgate.log" >&2; die "respgate exited during start-up"; }
sleep 1
echo "respgate $BIN ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)), $HOT hot keys, $READS reads per run, $WRITES_PER_S writes/s"
"$PYTHON" "$ROOT/benches/client_cache.py" --port "$PROXY_PORT" --pid "$PROXY_PID" \
    --nodes "$(IFS=,; echo "${NODE_PORTS[*]}")" --hot "$HOT" --reads "$READS" \
    --writes-per-s "$WRITES_PER_S" --memory-keys "$MEMORY_KEYS" </dev/null &
CLIENT_PID=$!
wait "$CLIENT_PID" || { CLIENT_PID=; die "the clients failed"; }
CLIENT_PID=
alive "$PROXY_PID" || { tail -n 50 "$DATA_DIR/respgate.log" >&2; die "respgate exited"; }
if grep -q . "$DATA_DIR/respgate.log"; then
    log "respgate logged:"
    tail -n 20 "$DATA_DIR/respgate.log" >&2
fi
