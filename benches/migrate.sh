#!/usr/bin/env bash
# Moving a prefix between backends online (respgate migrate): how fast keys move, and what the
# clients of the proxy see meanwhile. A Redis Cluster of 3 masters is the source, a standalone
# server the target; respgate fronts both with migrations on. benches/migrate.py loads the
# keys, runs a client that reads and writes through the proxy (its p50 and p99 before and
# during each move), and starts and watches each migration with `respgate migrate`.
#
# Usage: bash benches/migrate.sh            (about two minutes)
#
# Environment (all optional):
#   PROXY_BIN=path        this respgate binary instead of building target/release/respgate
#   SMALL_KEYS=1000000    small keys (16-byte strings) moved in the first run
#   BIG_KEYS=20           big keys (hashes) moved in the second run
#   BIG_FIELDS=50000      fields of each big hash (about 40 bytes each)
#   MAX_KEYS_PER_S=0      --max-keys-per-s for both runs (0: no limit)
#   RESPGATE_*            passed on to respgate
#
# Everything it started is stopped, by pid, when it exits; the data lives in a temporary
# directory removed then.
set -euo pipefail

SMALL_KEYS=${SMALL_KEYS:-1000000}
BIG_KEYS=${BIG_KEYS:-20}
BIG_FIELDS=${BIG_FIELDS:-50000}
MAX_KEYS_PER_S=${MAX_KEYS_PER_S:-0}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
NODES=3

log() { printf '[migrate.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for n in SMALL_KEYS BIG_KEYS BIG_FIELDS; do
    [[ ${!n} =~ ^[1-9][0-9]*$ ]] || die "$n must be a positive integer, got '${!n}'"
done
[[ $MAX_KEYS_PER_S =~ ^[0-9]+$ ]] || die "MAX_KEYS_PER_S must be a count, got '$MAX_KEYS_PER_S'"

BENCH_NAME=migrate
# shellcheck source=benches/cluster.sh
source "$ROOT/benches/cluster.sh"
bash "$ROOT/scripts/ensure-python.sh" >&2
PYTHON=$ROOT/.venv-tests/bin/python

# The target on base+11, the admin endpoint on base+12 (inside the block cluster.sh checked).
TARGET_PORT=$((PROXY_PORT + 1))
ADMIN_PORT=$((PROXY_PORT + 2))
for p in "$TARGET_PORT" "$ADMIN_PORT"; do port_busy "$p" && die "port $p is taken"; done
mkdir -p "$DATA_DIR/target"
redis-server --port "$TARGET_PORT" --bind 127.0.0.1 --protected-mode no --daemonize no \
    --dir "$DATA_DIR/target" --logfile "$DATA_DIR/target/redis.log" --save '' --appendonly no &
PIDS+=($!)
wait_until 20 "the target on port $TARGET_PORT" pong "$TARGET_PORT"

TOKEN="bench-token-$RANDOM$RANDOM$RANDOM"
echo "$TOKEN" >"$DATA_DIR/admin-token"
cat >"$DATA_DIR/respgate.toml" <<TOML
[server]
listen = "127.0.0.1:$PROXY_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
admin_token_file = "$DATA_DIR/admin-token"
threads = 1

[backends.main]
seeds = [$(printf '"%s",' "${seeds[@]}" | sed 's/,$//')]

[backends.archive]
kind = "standalone"
address = "127.0.0.1:$TARGET_PORT"

[routing]
default = "main"

[migration]
enabled = true
TOML

log "starting respgate ($BIN) on 127.0.0.1:$PROXY_PORT, admin on $ADMIN_PORT"
RUST_LOG=info NO_COLOR=1 "$BIN" --config "$DATA_DIR/respgate.toml" >>"$DATA_DIR/respgate.log" 2>&1 &
PROXY_PID=$!
proxy_up() { alive "$PROXY_PID" || return 0; pong "$PROXY_PORT"; }
wait_until 30 "respgate to answer PING" proxy_up
alive "$PROXY_PID" || { tail -n 50 "$DATA_DIR/respgate.log" >&2; die "respgate exited during start-up"; }
sleep 1
echo "respgate $BIN ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)), source: cluster of $NODES masters, target: standalone; $SMALL_KEYS small keys, $BIG_KEYS hashes of $BIG_FIELDS fields"
RESPGATE_ADMIN_TOKEN=$TOKEN "$PYTHON" "$ROOT/benches/migrate.py" --port "$PROXY_PORT" \
    --admin "127.0.0.1:$ADMIN_PORT" --bin "$BIN" --pid "$PROXY_PID" \
    --source "$(IFS=,; echo "${NODE_PORTS[*]}")" --target "$TARGET_PORT" \
    --small-keys "$SMALL_KEYS" --big-keys "$BIG_KEYS" --big-fields "$BIG_FIELDS" \
    --max-keys-per-s "$MAX_KEYS_PER_S" </dev/null &
CLIENT_PID=$!
wait "$CLIENT_PID" || { CLIENT_PID=; tail -n 30 "$DATA_DIR/respgate.log" >&2; die "the benchmark client failed"; }
CLIENT_PID=
alive "$PROXY_PID" || { tail -n 50 "$DATA_DIR/respgate.log" >&2; die "respgate exited"; }
log "respgate's migration log:"
grep -E "migration" "$DATA_DIR/respgate.log" | tail -n 12 >&2 || true
