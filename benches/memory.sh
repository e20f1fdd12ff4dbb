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

BENCH_NAME=memory
# shellcheck source=benches/cluster.sh
source "$ROOT/benches/cluster.sh"

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
