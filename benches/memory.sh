#!/usr/bin/env bash
# Memory of respgate around clients that stop reading: its RSS before, at peak (sampled every
# 0.2 s) and SETTLE_S seconds after the proxy closed the client at its output limit.
#
# Usage: bash benches/memory.sh        (about 1-2 minutes)
#        PROXY_BIN=/tmp/respgate-x bash benches/memory.sh
#
# Scenarios (benches/memory_clients.py runs the clients and reads /proc/<pid>/status):
#   nonreader   a client pipelines NONREADER_REQUESTS `GET bigkey` of a NONREADER_VALUE_KIB value
#               and reads nothing (server.client_output_limit_normal should close it)
#   subscriber  a subscriber stops reading while SUBSCRIBER_MESSAGES messages of
#               SUBSCRIBER_VALUE_KIB are published to its channel through the proxy
#               (server.client_output_limit_pubsub should close it); publishing stops when it is
#               closed or after LIMIT_S seconds
#
# Environment (all optional):
#   PROXY_BIN=path              this respgate binary instead of building target/release/respgate
#   NONREADER_REQUESTS=20000 NONREADER_VALUE_KIB=1024
#   SUBSCRIBER_MESSAGES=100000 SUBSCRIBER_VALUE_KIB=10
#   LIMIT_S=60                  longest wait for the proxy to close a client
#   SETTLE_S=15                 seconds after the close before RSS is read again
#   RESPGATE_*                  passed on to respgate; RESPGATE_SERVER__THREADS=1 unless given,
#                               as in benches/load.sh
#
# It starts a Redis Cluster of 3 masters (no replicas) on free loopback ports with its data in a
# temporary directory, and a fresh respgate in front of it for each scenario; everything it started is stopped, by pid,
# when it exits. Output: one line per scenario on stdout, RSS in MiB.
set -euo pipefail

NONREADER_REQUESTS=${NONREADER_REQUESTS:-20000}
NONREADER_VALUE_KIB=${NONREADER_VALUE_KIB:-1024}
SUBSCRIBER_MESSAGES=${SUBSCRIBER_MESSAGES:-100000}
SUBSCRIBER_VALUE_KIB=${SUBSCRIBER_VALUE_KIB:-10}
LIMIT_S=${LIMIT_S:-60}
SETTLE_S=${SETTLE_S:-15}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
NODES=3

log() { printf '[memory.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for n in NONREADER_REQUESTS NONREADER_VALUE_KIB SUBSCRIBER_MESSAGES SUBSCRIBER_VALUE_KIB LIMIT_S SETTLE_S; do
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

DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/respgate-memory.XXXXXX")
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

# start_proxy: a fresh respgate for each scenario, so that one's memory does not blur the next.
start_proxy() {
    log "starting respgate ($BIN) on 127.0.0.1:$PROXY_PORT"
    RESPGATE_SERVER__THREADS=${RESPGATE_SERVER__THREADS:-1} RUST_LOG=warn NO_COLOR=1 "$BIN" \
        --listen "127.0.0.1:$PROXY_PORT" --cluster "$(IFS=,; echo "${seeds[*]}")" \
        >>"$DATA_DIR/respgate.log" 2>&1 &
    PROXY_PID=$!
    proxy_up() { alive "$PROXY_PID" || return 0; pong "$PROXY_PORT"; }
    wait_until 30 "respgate to answer PING" proxy_up
    alive "$PROXY_PID" || { tail -n 50 "$DATA_DIR/respgate.log" >&2; die "respgate exited during start-up"; }
    sleep 1
    echo "respgate $BIN: RSS $(rss) MiB with no client yet, $(awk '$1 == "Threads:" { print $2 }' "/proc/$PROXY_PID/status") threads"
}
stop_proxy() {
    echo "respgate peak RSS (VmHWM) $(awk '$1 == "VmHWM:" { printf "%.1f", $2 / 1024 }' "/proc/$PROXY_PID/status") MiB"
    stop_pids "$PROXY_PID"
    PROXY_PID=
}
rss() { awk '$1 == "VmRSS:" { printf "%.1f", $2 / 1024 }' "/proc/$PROXY_PID/status"; }

# scenario NAME REQUESTS VALUE_KIB: one run of memory_clients.py; prints its line in MiB.
scenario() {
    local name=$1 n=$2 kib=$3 out=$DATA_DIR/$1.out line
    python3 "$ROOT/benches/memory_clients.py" "$name" --port "$PROXY_PORT" --pid "$PROXY_PID" \
        --requests "$n" --value-kib "$kib" --limit-s "$LIMIT_S" --settle-s "$SETTLE_S" \
        >"$out" 2>"$DATA_DIR/$name.err" </dev/null &
    CLIENT_PID=$!
    wait "$CLIENT_PID" || { CLIENT_PID=; cat "$DATA_DIR/$name.err" >&2; die "$name: the client failed"; }
    CLIENT_PID=
    alive "$PROXY_PID" || { tail -n 50 "$DATA_DIR/respgate.log" >&2; die "respgate exited during $name"; }
    line=$(grep '^result' "$out") || die "$name: no result"
    awk -v s="$SETTLE_S" '{
        for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        printf "%-10s before %.1f  peak %.1f  %ss after the close %.1f MiB  closed=%s after %s s, %s sent; RSS each second after: %s\n",
            v["scenario"], v["before_kib"] / 1024, v["peak_kib"] / 1024, s, v["after_kib"] / 1024,
            v["closed"], v["close_s"], v["sent"], v["series"] }' <<<"$line"
}

start_proxy
log "nonreader: $NONREADER_REQUESTS GET of a ${NONREADER_VALUE_KIB} KiB value, nothing read"
scenario nonreader "$NONREADER_REQUESTS" "$NONREADER_VALUE_KIB"
stop_proxy
start_proxy
log "subscriber: $SUBSCRIBER_MESSAGES messages of ${SUBSCRIBER_VALUE_KIB} KiB, nothing read"
scenario subscriber "$SUBSCRIBER_MESSAGES" "$SUBSCRIBER_VALUE_KIB"
stop_proxy
if grep -q . "$DATA_DIR/respgate.log"; then
    log "respgate logged:"
    tail -n 20 "$DATA_DIR/respgate.log" >&2
fi
