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

BENCH_NAME=client-cache
# shellcheck source=benches/cluster.sh
source "$ROOT/benches/cluster.sh"
bash "$ROOT/scripts/ensure-python.sh" >&2
PYTHON=$ROOT/.venv-tests/bin/python

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
