#!/usr/bin/env bash
# Memory of idle client connections, plain and TLS, on one respgate serving both listeners: its
# RSS before, with IDLE_CLIENTS connections open (each served one PING, then idle), and
# SETTLE_S seconds after they closed; plain first, then TLS, CYCLES times each.
#
# Usage: bash benches/tls_memory.sh        (about two minutes)
#        PROXY_BIN=/tmp/respgate-x bash benches/tls_memory.sh
#
# Environment (all optional):
#   PROXY_BIN=path      this respgate binary instead of building target/release/respgate
#   IDLE_CLIENTS=10000  connections held at once
#   CYCLES=2            rounds per mode: a second round shows memory the allocator kept
#   SETTLE_S=15         seconds after the close before RSS is read again
#   MODES="plain tls"   which listeners to measure; MODES=plain configures no TLS listener at
#                       all (for a binary without TLS, as a baseline)
#   RESPGATE_*          passed on to respgate; RESPGATE_SERVER__THREADS=1 unless given, as in
#                       benches/load.sh
#
# It makes a CA and a certificate for 127.0.0.1 with openssl (EC P-256), starts one standalone
# redis-server as the backend, and respgate with a plain and a TLS listener, all on free
# loopback ports, with their files in a temporary directory; benches/idle_clients.py holds the
# connections (--tls-ca for TLS). Everything it started is stopped, by pid, when it exits.
# Output: one line per mode and cycle on stdout, RSS in KiB, and KiB per connection.
set -euo pipefail

IDLE_CLIENTS=${IDLE_CLIENTS:-10000}
CYCLES=${CYCLES:-2}
SETTLE_S=${SETTLE_S:-15}
MODES=${MODES:-plain tls}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

log() { printf '[tls_memory.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for n in IDLE_CLIENTS CYCLES SETTLE_S; do
    [[ ${!n} =~ ^[1-9][0-9]*$ ]] || die "$n must be a positive integer, got '${!n}'"
done
for mode in $MODES; do
    [[ $mode == plain || $mode == tls ]] || die "MODES may hold plain and tls, got '$mode'"
done

PIDS=()
HOLDER_PID=
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
    if [[ -n $HOLDER_PID ]]; then stop_pids "$HOLDER_PID"; fi
    if ((${#PIDS[@]})); then stop_pids "${PIDS[@]}"; fi
    if [[ -n $DATA_DIR && -d $DATA_DIR ]]; then rm -rf "$DATA_DIR"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -f $ROOT/scripts/ensure-redis.sh ]]; then bash "$ROOT/scripts/ensure-redis.sh"; fi
for tool in redis-server redis-cli openssl ss python3; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y $tool)"
done

BIN=${PROXY_BIN:-}
if [[ -z $BIN ]]; then
    log "building respgate (release)"
    (cd "$ROOT" && cargo build --release --bin respgate)
    BIN=$TARGET_DIR/release/respgate
fi
[[ -x $BIN ]] || die "$BIN is not an executable"

# Three free ports below 32768, where Linux starts handing out ephemeral ports.
port_busy() { ss -Hltn "sport = :$1" | grep -q .; }
BASE=
for _ in $(seq 30); do
    candidate=$((10000 + RANDOM % 22000))
    if ! port_busy "$candidate" && ! port_busy $((candidate + 1)) && ! port_busy $((candidate + 2)); then
        BASE=$candidate
        break
    fi
done
[[ -n $BASE ]] || die "no free block of ports found"
REDIS_PORT=$BASE PLAIN_PORT=$((BASE + 1)) TLS_PORT=$((BASE + 2))

wait_until() {
    local secs=$1 what=$2; shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out after ${secs}s waiting for $what"
        sleep 0.1
    done
}
rss_kib() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status"; }

DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/respgate-tls-memory.XXXXXX")
log "making a CA and a certificate for 127.0.0.1"
(
    cd "$DATA_DIR"
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
    openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca
    openssl req "${ec[@]}" -keyout server.key -out server.csr -subj /CN=127.0.0.1
    printf 'subjectAltName=IP:127.0.0.1\n' >san.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
        -out server.pem -days 2 -extfile san.ext
) >"$DATA_DIR/openssl.log" 2>&1 || { cat "$DATA_DIR/openssl.log" >&2; die "openssl failed"; }

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize no --save '' \
    --appendonly no --dir "$DATA_DIR" --logfile "$DATA_DIR/redis.log" &
PIDS+=($!)
wait_until 20 "redis on port $REDIS_PORT" redis-cli -p "$REDIS_PORT" ping

# The holder and the proxy both need a descriptor per connection.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
{
    printf '[server]\nlisten = "127.0.0.1:%s"\nmax_clients = %s\n' "$PLAIN_PORT" $((IDLE_CLIENTS + 100))
    if [[ " $MODES " == *" tls "* ]]; then
        printf '[server.tls]\nlisten = "127.0.0.1:%s"\ncert_file = "%s"\nkey_file = "%s"\n' \
            "$TLS_PORT" "$DATA_DIR/server.pem" "$DATA_DIR/server.key"
    fi
    printf '[backends.default]\nkind = "standalone"\naddress = "127.0.0.1:%s"\n' "$REDIS_PORT"
} >"$DATA_DIR/respgate.toml"
RESPGATE_SERVER__THREADS=${RESPGATE_SERVER__THREADS:-1} \
    "$BIN" --config "$DATA_DIR/respgate.toml" 2>"$DATA_DIR/respgate.log" &
PROXY_PID=$!
PIDS+=("$PROXY_PID")
wait_until 20 "respgate on port $PLAIN_PORT" redis-cli -p "$PLAIN_PORT" ping

# idle MODE CYCLE: IDLE_CLIENTS connections through MODE's listener; prints one line.
idle() {
    local mode=$1 cycle=$2 port=$PLAIN_PORT tls=() out=$DATA_DIR/holder.out before open after
    if [[ $mode == tls ]]; then port=$TLS_PORT tls=(--tls-ca "$DATA_DIR/ca.pem"); fi
    before=$(rss_kib "$PROXY_PID")
    python3 "$ROOT/benches/idle_clients.py" --port "$port" --clients "$IDLE_CLIENTS" "${tls[@]}" \
        --hold-s 300 >"$out" 2>"$DATA_DIR/holder.err" </dev/null &
    HOLDER_PID=$!
    holder_ready() { grep -q '^ready' "$out" || ! alive "$HOLDER_PID"; }
    wait_until 300 "$IDLE_CLIENTS $mode connections" holder_ready
    holder_failed() {
        cat "$out" "$DATA_DIR/holder.err" >&2
        die "the holder failed ($1)"
    }
    grep -q '^ready' "$out" || holder_failed "it ended before opening every connection"
    sleep 1
    open=$(rss_kib "$PROXY_PID")
    kill -USR1 "$HOLDER_PID"
    local rc=0
    wait "$HOLDER_PID" || rc=$?
    ((rc == 0)) || holder_failed "exit status $rc"
    HOLDER_PID=
    sleep "$SETTLE_S"
    after=$(rss_kib "$PROXY_PID")
    printf '%-5s cycle=%s clients=%s rss_before_kib=%s rss_open_kib=%s rss_after_kib=%s kib_per_connection=%s (%s)\n' \
        "$mode" "$cycle" "$IDLE_CLIENTS" "$before" "$open" "$after" \
        "$(awk -v o="$open" -v b="$before" -v n="$IDLE_CLIENTS" 'BEGIN { printf "%.2f", (o - b) / n }')" \
        "$(head -1 "$out")"
}

for mode in $MODES; do
    for cycle in $(seq "$CYCLES"); do
        log "$mode: $IDLE_CLIENTS idle connections, cycle $cycle/$CYCLES"
        idle "$mode" "$cycle"
    done
done
