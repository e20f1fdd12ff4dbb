#!/usr/bin/env bash
# End-to-end load benchmark: redis-benchmark straight at a Redis Cluster (cluster-aware mode),
# through respgate in front of that cluster, through twemproxy (nutcracker) in front of
# standalone redis-servers as an outside reference proxy, and, given PREDIXY_BIN, through predixy
# in front of the same cluster as respgate, all in the same run, alternating the targets over
# several rounds and reporting medians.
#
# Usage: bash benches/load.sh    (every case: about 9 minutes on 2 cores, more with predixy)
#        CASES="set get" bash benches/load.sh
#        PREDIXY_BIN=/path/to/predixy bash benches/load.sh
#
# Cases (CASES, any of these words, in any order; they always run in the order listed):
#   set, get   SET and GET of VALUE_SIZE-byte values, CLIENTS clients, at each of PIPELINES
#   mset       MSET of 10 keys, at each of MSET_PIPELINES. Direct, redis-benchmark --cluster gives
#              the 10 keys one hash tag (a single-slot MSET); through a proxy the keys carry no tag,
#              so the proxy splits the MSET by slot (respgate, predixy) or by server (twemproxy)
#   cN         GET, pipeline 1, with N concurrent clients (c1000, c10000, ...)
#   big        GET of BIG_VALUE_SIZE-byte values (100 KB) over BIG_KEYS keys written first
#   idle       IDLE_CLIENTS idle connections to each proxy: its RSS before, with them open, and
#              IDLE_SETTLE_S seconds after they closed, IDLE_CYCLES times; it runs before the load
#              cases (benches/idle_clients.py holds the connections)
#
# Environment (all optional):
#   CASES="set get mset c1000 c10000 big idle"
#   TARGETS="direct proxy twemproxy"   any of them; "proxy" is respgate. With PREDIXY_BIN the
#                         default adds "predixy", and TARGETS may name it.
#   ROUNDS=3              runs per target and case, target order rotated each round; medians shown
#   REQUESTS=400000       requests per run (-n) for set and get at pipeline 1
#   PIPELINED_REQUESTS=1000000  requests per run for set and get at pipeline depths above 1
#   MANY_REQUESTS=200000  requests per run for the cN cases
#   CLIENTS=50            clients (-c) for set, get, mset and big
#   KEYSPACE=100000       random key range (-r) for set, get, mset and cN
#   VALUE_SIZE=3          value size in bytes (-d) for set and mset
#   PIPELINES="1 16"      pipeline depths (-P) for set and get
#   MSET_PIPELINES="1 16" pipeline depths (-P) for mset
#   MSET_REQUESTS=100000  MSET requests per run (each sets 10 keys) at pipeline 1
#   MSET_PIPELINED_REQUESTS=300000  MSET requests per run at pipeline depths above 1
#   BIG_VALUE_SIZE=102400 BIG_KEYS=1000 BIG_REQUESTS=50000   the big case
#   IDLE_CLIENTS=10000 IDLE_SETTLE_S=10 IDLE_CYCLES=2        the idle case
#   IDLE_PING=1           each idle connection is served one PING first; 0 sends nothing
#   BENCH_TIMEOUT=300     seconds before one redis-benchmark run is abandoned
#   PROXY_BIN=path        benchmark this respgate binary instead of building target/release/respgate
#   PREDIXY_BIN=path      a predixy binary (joyieldInc/predixy, built outside this repository, see
#                         benches/RESULTS.md): adds the target "predixy", run with WorkerThreads 1
#                         in front of the same cluster as respgate, reading from masters only
#                         (as respgate does by default). Without it no predixy figures are taken,
#                         and the CSV's predixy_* columns hold NA.
#   KEEP_DATA_ON_FAILURE=1  keep the temporary directory (node logs, proxy logs) after a failure
#   RESPGATE_*            passed on to respgate, which reads them as configuration overrides (so
#                         no other variable here may start with RESPGATE_). The script sets
#                         RESPGATE_SERVER__MAX_CLIENTS=20000 and RESPGATE_SERVER__BACKLOG=1024
#                         unless given, as it gives the redis-servers --maxclients 20000 and
#                         --tcp-backlog 1024, so that 10,000 clients fit and queue alike everywhere.
#                         It also sets RESPGATE_SERVER__THREADS=1 unless given: on a 2-core machine
#                         whose cores the client and six redis-servers keep busy, one worker
#                         thread costs the least CPU per request (benches/RESULTS.md), and
#                         twemproxy is single-threaded too. RESPGATE_SERVER__THREADS=0 runs one
#                         worker per core, respgate's default.
#
# It starts a Redis Cluster of 3 masters + 3 replicas, and for twemproxy 3 standalone masters
# each with one replica (so that writes cost the same replication work behind both proxies), all
# on free loopback ports with their data in a temporary directory. It starts respgate in front of
# the cluster and nutcracker (hash fnv1a_64, ketama, server_connections 1) in front of the
# standalone masters (every server and both proxies with a listen backlog of 1024 and room for
# 20,000 clients), and predixy if asked for (its listen backlog is fixed at 511, and it has no
# client limit), checks that each proxy routes correctly, and runs the cases. For each proxy run it
# records the proxy's CPU time (utime+stime from /proc) per million requests and its resident
# memory after the run and at peak (sampled every 0.2 s). Results: tables on stdout, one CSV row
# per case in target/bench/load-<date>.csv, every single run in target/bench/load-<date>-runs.csv,
# the idle case in target/bench/load-<date>-idle.csv. Everything it started is stopped, by pid,
# when it exits.
set -euo pipefail
# shellcheck source=benches/predixy_conf.sh
source "$(dirname "${BASH_SOURCE[0]}")/predixy_conf.sh"

CASES=${CASES:-set get mset c1000 c10000 big idle}
PREDIXY_BIN=${PREDIXY_BIN:-}
if [[ -n $PREDIXY_BIN ]]; then
    TARGETS=${TARGETS:-direct proxy twemproxy predixy}
else
    TARGETS=${TARGETS:-direct proxy twemproxy}
fi
ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-400000}
PIPELINED_REQUESTS=${PIPELINED_REQUESTS:-1000000}
MANY_REQUESTS=${MANY_REQUESTS:-200000}
CLIENTS=${CLIENTS:-50}
KEYSPACE=${KEYSPACE:-100000}
VALUE_SIZE=${VALUE_SIZE:-3}
PIPELINES=${PIPELINES:-1 16}
MSET_PIPELINES=${MSET_PIPELINES:-1 16}
MSET_REQUESTS=${MSET_REQUESTS:-100000}
MSET_PIPELINED_REQUESTS=${MSET_PIPELINED_REQUESTS:-300000}
BIG_VALUE_SIZE=${BIG_VALUE_SIZE:-102400}
BIG_KEYS=${BIG_KEYS:-1000}
BIG_REQUESTS=${BIG_REQUESTS:-50000}
IDLE_CLIENTS=${IDLE_CLIENTS:-10000}
IDLE_SETTLE_S=${IDLE_SETTLE_S:-10}
IDLE_CYCLES=${IDLE_CYCLES:-2}
IDLE_PING=${IDLE_PING:-1}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-300}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT_DIR=$TARGET_DIR/bench
STAMP=$(date +%Y%m%d-%H%M%S)
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
# The work tree's revision at the start ("-dirty": tracked files had uncommitted changes).
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)
if [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]]; then REV=$REV-dirty; fi
NODES=6       # cluster: 3 masters, 3 replicas
TWEM_NODES=6  # twemproxy's servers: 3 standalone masters, each with a replica

log() { printf '[load.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

want() { [[ " $TARGETS " == *" $1 "* ]]; }
want_case() { [[ " $CASES " == *" $1 "* ]]; }

for n in REQUESTS PIPELINED_REQUESTS MANY_REQUESTS CLIENTS KEYSPACE VALUE_SIZE ROUNDS MSET_REQUESTS \
         MSET_PIPELINED_REQUESTS BIG_VALUE_SIZE BIG_KEYS BIG_REQUESTS IDLE_CLIENTS IDLE_SETTLE_S IDLE_CYCLES BENCH_TIMEOUT; do
    [[ ${!n} =~ ^[1-9][0-9]*$ ]] || die "$n must be a positive integer, got '${!n}'"
done
for p in $PIPELINES; do [[ $p =~ ^[1-9][0-9]*$ ]] || die "PIPELINES holds '$p'"; done
for p in $MSET_PIPELINES; do [[ $p =~ ^[1-9][0-9]*$ ]] || die "MSET_PIPELINES holds '$p'"; done
[[ $IDLE_PING == 0 || $IDLE_PING == 1 ]] || die "IDLE_PING must be 0 or 1, got '$IDLE_PING'"
for t in $TARGETS; do
    [[ $t == direct || $t == proxy || $t == twemproxy || $t == predixy ]] \
        || die "TARGETS may hold 'direct', 'proxy', 'twemproxy' and 'predixy', got '$t'"
done
if want predixy; then
    [[ -n $PREDIXY_BIN ]] || die "TARGETS names predixy: set PREDIXY_BIN to a predixy binary"
    [[ -x $PREDIXY_BIN ]] || die "PREDIXY_BIN=$PREDIXY_BIN is not an executable"
fi
MANY=()   # client counts of the cN cases
for c in $CASES; do
    case $c in
        set | get | mset | big | idle) ;;
        c[1-9]*) [[ $c =~ ^c[1-9][0-9]*$ ]] || die "bad case '$c'"; MANY+=("${c#c}") ;;
        *) die "CASES may hold set, get, mset, cN (c1000, ...), big and idle, got '$c'" ;;
    esac
done

# --- cleanup: everything we start is recorded here and stopped by pid -------------------------
PIDS=()        # redis-server processes
PROXY_PID=
TWEM_PID=
PREDIXY_PID=
BENCH_PID=
SAMPLER_PID=
IDLE_PID=
DATA_DIR=
# alive PID: the process exists and has not exited (an exited child stays a zombie until waited
# for, and kill -0 would still succeed on it).
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
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "$BENCH_PID" "$SAMPLER_PID" "$IDLE_PID"; do
        if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; fi
    done
    # The proxies first, so that they do not log the nodes going away; then the nodes together.
    if [[ -n $PROXY_PID ]]; then stop_pids "$PROXY_PID"; fi
    if [[ -n $TWEM_PID ]]; then stop_pids "$TWEM_PID"; fi
    if [[ -n $PREDIXY_PID ]]; then stop_pids "$PREDIXY_PID"; fi
    if ((${#PIDS[@]})); then stop_pids "${PIDS[@]}"; fi
    if [[ -n $DATA_DIR && -s $DATA_DIR/respgate.log ]]; then
        mkdir -p "$OUT_DIR" && cp "$DATA_DIR/respgate.log" "$OUT_DIR/load-$STAMP-respgate.log" \
            && log "respgate logged something: $OUT_DIR/load-$STAMP-respgate.log"
    fi
    if [[ -n $DATA_DIR && -d $DATA_DIR ]]; then
        if [[ $rc -ne 0 && -n ${KEEP_DATA_ON_FAILURE:-} ]]; then
            log "kept $DATA_DIR for inspection"
        else
            rm -rf "$DATA_DIR"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- tools -------------------------------------------------------------------------------------
apt_install() {
    log "installing $*"
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}
if [[ -f $ROOT/scripts/ensure-redis.sh ]]; then
    bash "$ROOT/scripts/ensure-redis.sh"
elif ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    apt_install redis-server redis-tools
fi
if want twemproxy && ! command -v nutcracker >/dev/null; then apt_install nutcracker; fi
for tool in redis-server redis-cli redis-benchmark ss timeout awk python3; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
if want twemproxy; then command -v nutcracker >/dev/null || die "nutcracker not found"; fi
CLK_TCK=$(getconf CLK_TCK)

# Open files: 10,000 clients take 10,000 descriptors in redis-benchmark, in the proxy and, for
# the idle case, in the Python holder; redis-server wants maxclients + 32. Raise the limit as far
# as this shell may; the processes started below inherit it.
most_clients=$((IDLE_CLIENTS > CLIENTS ? IDLE_CLIENTS : CLIENTS))
for n in "${MANY[@]}"; do ((n > most_clients)) && most_clients=$n; done
if (($(ulimit -Hn) < 65536)); then ulimit -Hn 65536 2>/dev/null || true; fi
ulimit -n "$(ulimit -Hn)"
((most_clients + 200 <= $(ulimit -n))) \
    || die "open-file limit $(ulimit -n) is too low for $most_clients clients"
MAXCLIENTS=$((most_clients * 2 > 20000 ? most_clients * 2 : 20000))
# Listen backlog of every server and proxy: respgate's default, given to redis-server (default
# 511) and nutcracker (default 512) too, so that 10,000 clients connecting at once queue alike.
BACKLOG=1024

BIN=${PROXY_BIN:-}
if want proxy && [[ -z $BIN ]]; then
    log "building respgate (release)"
    (cd "$ROOT" && cargo build --release --bin respgate)
    BIN=$TARGET_DIR/release/respgate
fi
if want proxy; then [[ -x $BIN ]] || die "$BIN is not an executable"; fi

# --- ports ---------------------------------------------------------------------------------------
# Cluster node ports base..base+5, respgate on base+10, twemproxy on base+11 (its stats on
# base+12), predixy on base+13, the cluster bus ports (cluster-port) on base+20..base+25,
# twemproxy's redis-servers on base+30..base+35. All below 32768, where Linux starts handing out
# ephemeral ports to outgoing connections (net.ipv4.ip_local_port_range), so a busy machine
# cannot take one mid-start.
port_busy() { ss -Hltn "sport = :$1" | grep -q .; }
BASE=
for _ in $(seq 30); do
    candidate=$((10000 + RANDOM % 22000))
    ok=1
    for p in $(seq "$candidate" $((candidate + NODES - 1))) $(seq $((candidate + 10)) $((candidate + 13))) \
             $(seq $((candidate + 20)) $((candidate + 20 + NODES - 1))) \
             $(seq $((candidate + 30)) $((candidate + 30 + TWEM_NODES - 1))); do
        if port_busy "$p"; then ok=0; break; fi
    done
    if [[ $ok -eq 1 ]]; then BASE=$candidate; break; fi
done
[[ -n $BASE ]] || die "no free block of ports found"
mapfile -t NODE_PORTS < <(seq "$BASE" $((BASE + NODES - 1)))
mapfile -t TWEM_NODE_PORTS < <(seq $((BASE + 30)) $((BASE + 30 + TWEM_NODES - 1)))
PROXY_PORT=$((BASE + 10))
TWEM_PORT=$((BASE + 11))
TWEM_STATS_PORT=$((BASE + 12))
PREDIXY_PORT=$((BASE + 13))
BUS_OFFSET=20

# wait_until SECONDS DESCRIPTION COMMAND...: poll every 0.1 s.
wait_until() {
    local secs=$1 what=$2; shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out after ${secs}s waiting for $what"
        sleep 0.1
    done
}
pong() { [[ $(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null) == PONG ]]; }

# start_redis PORT ARGS...: one redis-server on 127.0.0.1:PORT with its files in DATA_DIR/PORT.
start_redis() {
    local p=$1; shift
    mkdir -p "$DATA_DIR/$p"
    redis-server --port "$p" --bind 127.0.0.1 --protected-mode no --daemonize no \
        --dir "$DATA_DIR/$p" --logfile "$DATA_DIR/$p/redis.log" --maxclients "$MAXCLIENTS" \
        --tcp-backlog "$BACKLOG" --save '' --appendonly no "$@" &
    PIDS+=($!)
}
# wait_redis PORT PID: until it answers PING; dies if it exited.
wait_redis() {
    local p=$1 pid=$2
    node_up() { alive "$pid" || return 0; pong "$p"; }
    wait_until 20 "redis on port $p" node_up
    alive "$pid" || { tail -n 20 "$DATA_DIR/$p/redis.log" >&2; die "redis on port $p exited"; }
}

# --- cluster -------------------------------------------------------------------------------------
DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/respgate-load.XXXXXX")
log "starting $NODES cluster nodes on 127.0.0.1:${NODE_PORTS[0]}-${NODE_PORTS[-1]} (data in $DATA_DIR)"
for p in "${NODE_PORTS[@]}"; do
    start_redis "$p" --cluster-enabled yes --cluster-config-file "$DATA_DIR/$p/nodes.conf" \
        --cluster-port $((p + BUS_OFFSET)) --cluster-node-timeout 5000
done
for i in "${!NODE_PORTS[@]}"; do wait_redis "${NODE_PORTS[i]}" "${PIDS[i]}"; done

seeds=()
for p in "${NODE_PORTS[@]}"; do seeds+=("127.0.0.1:$p"); done
log "creating the cluster (3 masters, 3 replicas)"
redis-cli --cluster create "${seeds[@]}" --cluster-replicas 1 --cluster-yes \
    >"$DATA_DIR/cluster-create.log" 2>&1 \
    || { cat "$DATA_DIR/cluster-create.log" >&2; die "redis-cli --cluster create failed"; }

cluster_ok() {
    local p info
    for p in "${NODE_PORTS[@]}"; do
        info=$(redis-cli -h 127.0.0.1 -p "$p" cluster info 2>/dev/null | tr -d '\r')
        grep -qx 'cluster_state:ok' <<<"$info" || return 1
        grep -qx "cluster_known_nodes:$NODES" <<<"$info" || return 1
        grep -qx 'cluster_slots_ok:16384' <<<"$info" || return 1
    done
}
wait_until 60 "cluster_state:ok on every node" cluster_ok
# The node redis-benchmark --cluster learns the topology from (any node would do).
DIRECT_PORT=${NODE_PORTS[0]}
log "cluster is up"

# --- twemproxy's servers -----------------------------------------------------------------------
if want twemproxy; then
    half=$((TWEM_NODES / 2))
    log "starting $half standalone redis masters and $half replicas for twemproxy on" \
        "127.0.0.1:${TWEM_NODE_PORTS[0]}-${TWEM_NODE_PORTS[-1]}"
    first=${#PIDS[@]}
    for i in "${!TWEM_NODE_PORTS[@]}"; do
        if ((i < half)); then
            start_redis "${TWEM_NODE_PORTS[i]}"
        else
            start_redis "${TWEM_NODE_PORTS[i]}" --replicaof 127.0.0.1 "${TWEM_NODE_PORTS[i - half]}"
        fi
    done
    for i in "${!TWEM_NODE_PORTS[@]}"; do wait_redis "${TWEM_NODE_PORTS[i]}" "${PIDS[first + i]}"; done
    replicas_up() {
        local i
        for ((i = half; i < TWEM_NODES; i++)); do
            redis-cli -h 127.0.0.1 -p "${TWEM_NODE_PORTS[i]}" info replication 2>/dev/null \
                | tr -d '\r' | grep -qx 'master_link_status:up' || return 1
        done
    }
    wait_until 30 "twemproxy's replicas to sync" replicas_up
    TWEM_CONF=$DATA_DIR/nutcracker.yml
    {
        echo "bench:"
        echo "  listen: 127.0.0.1:$TWEM_PORT"
        echo "  hash: fnv1a_64"
        echo "  distribution: ketama"
        echo "  redis: true"
        echo "  server_connections: 1"
        echo "  preconnect: true"
        echo "  auto_eject_hosts: false"
        echo "  backlog: $BACKLOG"
        echo "  servers:"
        for ((i = 0; i < half; i++)); do echo "   - 127.0.0.1:${TWEM_NODE_PORTS[i]}:1 s$i"; done
    } >"$TWEM_CONF"
    nutcracker --test-conf --conf-file "$TWEM_CONF" >"$DATA_DIR/nutcracker-test.log" 2>&1 \
        || { cat "$DATA_DIR/nutcracker-test.log" >&2; die "nutcracker rejects $TWEM_CONF"; }
    log "starting twemproxy (nutcracker) on 127.0.0.1:$TWEM_PORT"
    nutcracker --conf-file "$TWEM_CONF" --output "$DATA_DIR/nutcracker.log" \
        --pid-file "$DATA_DIR/nutcracker.pid" --stats-addr 127.0.0.1 --stats-port "$TWEM_STATS_PORT" \
        >"$DATA_DIR/nutcracker.out" 2>&1 &
    TWEM_PID=$!
    twem_up() { alive "$TWEM_PID" || return 0; pong "$TWEM_PORT"; }
    wait_until 30 "twemproxy to answer PING" twem_up
    alive "$TWEM_PID" || { tail -n 20 "$DATA_DIR/nutcracker.out" "$DATA_DIR/nutcracker.log" >&2
                           die "nutcracker exited"; }
    log "checking that twemproxy routes correctly"
    checks=200
    for i in $(seq "$checks"); do echo "SET load-check:$i t$i"; done \
        | redis-cli -h 127.0.0.1 -p "$TWEM_PORT" >/dev/null 2>&1 || true
    for i in $(seq "$checks"); do echo "GET load-check:$i"; done \
        | redis-cli -h 127.0.0.1 -p "$TWEM_PORT" >"$DATA_DIR/check-twem.out" 2>&1 || true
    [[ $(seq "$checks" | sed 's/^/t/') == "$(cat "$DATA_DIR/check-twem.out")" ]] \
        || { head -n 5 "$DATA_DIR/check-twem.out" >&2; die "GET through twemproxy does not return what was SET"; }
    for ((i = 0; i < half; i++)); do
        keys=$(redis-cli -h 127.0.0.1 -p "${TWEM_NODE_PORTS[i]}" dbsize)
        ((keys > 0)) || die "twemproxy put no key on 127.0.0.1:${TWEM_NODE_PORTS[i]}"
    done
fi

# check_routing NAME PORT: a benchmark of a proxy that answers errors quickly would be
# meaningless, so prove that writes through the proxy in front of the cluster land in the
# cluster and that reads through it see what was written directly.
check_routing() {
    local name=$1 port=$2 checks=200 got i
    log "checking that $name routes correctly"
    for i in $(seq "$checks"); do echo "SET load-check:$name:$i v$i"; done \
        | redis-cli -h 127.0.0.1 -p "$port" >"$DATA_DIR/check-set.out" 2>&1 || true
    got=$(grep -cx 'OK' "$DATA_DIR/check-set.out" || true)
    [[ $got -eq $checks ]] || { head -n 5 "$DATA_DIR/check-set.out" >&2
        die "only $got of $checks SETs through $name answered OK"; }
    # redis-cli -c follows redirects and says so on stdout ("-> Redirected to slot ...").
    for i in $(seq "$checks"); do echo "GET load-check:$name:$i"; done \
        | redis-cli -c -h 127.0.0.1 -p "$DIRECT_PORT" 2>&1 | grep -v '^-> Redirected' \
        >"$DATA_DIR/check-direct.out" || true
    for i in $(seq "$checks"); do echo "SET load-check:$name:$i w$i"; done \
        | redis-cli -c -h 127.0.0.1 -p "$DIRECT_PORT" >/dev/null 2>&1 || true
    for i in $(seq "$checks"); do echo "GET load-check:$name:$i"; done \
        | redis-cli -h 127.0.0.1 -p "$port" >"$DATA_DIR/check-proxy.out" 2>&1 || true
    [[ $(seq "$checks" | sed 's/^/v/') == "$(cat "$DATA_DIR/check-direct.out")" ]] \
        || die "values written through $name do not read back from the cluster"
    [[ $(seq "$checks" | sed 's/^/w/') == "$(cat "$DATA_DIR/check-proxy.out")" ]] \
        || { head -n 5 "$DATA_DIR/check-proxy.out" >&2
             die "GET through $name does not return what was written to the cluster"; }
    # The mset case's MSET spans slots: the proxy must split it, not refuse it (CROSSSLOT).
    local mset=()
    for i in $(seq 10); do mset+=("load-check:$name:m$i" "m$i"); done
    got=$(redis-cli -h 127.0.0.1 -p "$port" mset "${mset[@]}" 2>&1 || true)
    [[ $got == OK ]] || die "MSET of 10 keys through $name answered '$got'"
    for i in $(seq 10); do echo "GET load-check:$name:m$i"; done \
        | redis-cli -c -h 127.0.0.1 -p "$DIRECT_PORT" 2>&1 | grep -v '^-> Redirected' \
        >"$DATA_DIR/check-mset.out" || true
    [[ $(seq 10 | sed 's/^/m/') == "$(cat "$DATA_DIR/check-mset.out")" ]] \
        || die "an MSET through $name does not read back from the cluster"
}

# --- respgate ------------------------------------------------------------------------------------
if want proxy; then
    log "starting respgate on 127.0.0.1:$PROXY_PORT"
    RESPGATE_SERVER__MAX_CLIENTS=${RESPGATE_SERVER__MAX_CLIENTS:-$MAXCLIENTS} \
        RESPGATE_SERVER__BACKLOG=${RESPGATE_SERVER__BACKLOG:-$BACKLOG} \
        RESPGATE_SERVER__THREADS=${RESPGATE_SERVER__THREADS:-1} \
        RUST_LOG=warn NO_COLOR=1 "$BIN" --listen "127.0.0.1:$PROXY_PORT" \
        --cluster "$(IFS=,; echo "${seeds[*]}")" >"$DATA_DIR/respgate.log" 2>&1 &
    PROXY_PID=$!
    proxy_up() { alive "$PROXY_PID" || return 0; pong "$PROXY_PORT"; }
    wait_until 30 "respgate to answer PING" proxy_up
    alive "$PROXY_PID" \
        || { tail -n 50 "$DATA_DIR/respgate.log" >&2; die "respgate exited during start-up"; }
    check_routing respgate "$PROXY_PORT"
fi

# --- predixy -------------------------------------------------------------------------------------
# One worker thread, like respgate here and twemproxy; reads on masters only, as respgate does by
# default (MasterReadPriority 100, no replica reads); no Authority section, which predixy takes as
# one password-less admin user, so that no command is refused (redis-benchmark's CONFIG GET too).
# Its log is quiet but for notices and errors, which go to a file.
if want predixy; then
    PREDIXY_CONF=$DATA_DIR/predixy.conf
    predixy_conf respgate-load "127.0.0.1:$PREDIXY_PORT" "$DATA_DIR/predixy.log" "${seeds[@]}" >"$PREDIXY_CONF"
    log "starting predixy $("$PREDIXY_BIN" --version 2>&1 | sed -n 's/.*predixy-//p') on 127.0.0.1:$PREDIXY_PORT"
    "$PREDIXY_BIN" "$PREDIXY_CONF" >"$DATA_DIR/predixy.out" 2>&1 </dev/null &
    PREDIXY_PID=$!
    # predixy answers PING itself before it has learnt the slot map, so wait for a write to land.
    predixy_up() {
        alive "$PREDIXY_PID" || return 0
        [[ $(redis-cli -h 127.0.0.1 -p "$PREDIXY_PORT" set load-check:predixy-up 1 2>/dev/null) == OK ]]
    }
    wait_until 30 "predixy to accept a SET" predixy_up
    alive "$PREDIXY_PID" || { tail -n 50 "$DATA_DIR/predixy.out" "$DATA_DIR/predixy.log" >&2
                              die "predixy exited during start-up"; }
    check_routing predixy "$PREDIXY_PORT"
fi

# --- measurements ------------------------------------------------------------------------------
# cpu_ticks PID: utime + stime (fields 14 and 15 of /proc/PID/stat), in clock ticks. The command
# name (field 2) may hold spaces, so count fields from after its closing parenthesis.
cpu_ticks() {
    local stat rest f
    stat=$(<"/proc/$1/stat")
    rest=${stat##*) }
    read -ra f <<<"$rest"
    echo $((f[11] + f[12]))
}
# rss_kib PID: VmRSS from /proc/PID/status, in KiB.
rss_kib() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status"; }
hwm_kib() { awk '$1 == "VmHWM:" { print $2 }' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN { if (k == "NA" || k == "") print "NA"; else printf "%.1f", k / 1024 }'; }
# sample_peak PID FILE: writes the largest VmRSS seen to FILE, every 0.2 s, while PID lives.
sample_peak() {
    local max=0 v
    while v=$(rss_kib "$1" 2>/dev/null) && [[ -n $v ]]; do
        if ((v > max)); then max=$v; echo "$max" >"$2"; fi
        sleep 0.2
    done
}
# keyspace_stats PORT...: "hits misses" summed over the servers' INFO stats.
keyspace_stats() {
    local p
    for p in "$@"; do redis-cli -h 127.0.0.1 -p "$p" info stats 2>/dev/null; done | tr -d '\r' \
        | awk -F: '$1 == "keyspace_hits" { h += $2 } $1 == "keyspace_misses" { m += $2 }
                   END { print h + 0, m + 0 }'
}

# The proxies' memory with no client yet (after the routing checks' clients left).
sleep 1
RSS_START_PROXY=NA RSS_START_TWEM=NA RSS_START_PREDIXY=NA
if want proxy; then RSS_START_PROXY=$(rss_kib "$PROXY_PID"); fi
if want twemproxy; then RSS_START_TWEM=$(rss_kib "$TWEM_PID"); fi
if want predixy; then RSS_START_PREDIXY=$(rss_kib "$PREDIXY_PID"); fi

# median: of the numbers on stdin ("NA" when there are none).
median() {
    sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "NA"; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# parse_csv FILE TEST: prints "rps p50 p99" from redis-benchmark --csv output, finding the
# columns by the header's names rather than by position.
parse_csv() {
    awk -F'","' -v test="$2" '
        { gsub(/^"|"\r?$/, "") }
        $1 == "test" { for (i = 1; i <= NF; i++) col[$i] = i; next }
        $1 == test && ("rps" in col) {
            print $col["rps"], $col["p50_latency_ms"], $col["p99_latency_ms"]; found = 1; exit }
        END { if (!found) exit 1 }' "$1"
}

# target_args TARGET: redis-benchmark's address arguments for a target.
target_args() {
    case $1 in
        direct) echo "--cluster -h 127.0.0.1 -p $DIRECT_PORT" ;;
        proxy) echo "-h 127.0.0.1 -p $PROXY_PORT" ;;
        twemproxy) echo "-h 127.0.0.1 -p $TWEM_PORT" ;;
        predixy) echo "-h 127.0.0.1 -p $PREDIXY_PORT" ;;
    esac
}
target_pid() {
    case $1 in
        proxy) echo "$PROXY_PID" ;;
        twemproxy) echo "$TWEM_PID" ;;
        predixy) echo "$PREDIXY_PID" ;;
        *) echo "" ;;
    esac
}
# target_port TARGET: the port a proxy target listens on.
target_port() {
    case $1 in proxy) echo "$PROXY_PORT" ;; twemproxy) echo "$TWEM_PORT" ;; predixy) echo "$PREDIXY_PORT" ;; esac
}
target_servers() {
    case $1 in twemproxy) echo "${TWEM_NODE_PORTS[*]}" ;; *) echo "${NODE_PORTS[*]}" ;; esac
}
# check_alive TARGET: dies with the proxy's log if the target's proxy exited.
check_alive() {
    local pid
    pid=$(target_pid "$1")
    [[ -z $pid ]] || alive "$pid" && return 0
    case $1 in
        proxy) tail -n 50 "$DATA_DIR/respgate.log" >&2 ;;
        twemproxy) tail -n 50 "$DATA_DIR/nutcracker.out" "$DATA_DIR/nutcracker.log" >&2 ;;
        predixy) tail -n 50 "$DATA_DIR/predixy.out" "$DATA_DIR/predixy.log" >&2 ;;
    esac
    die "$1 exited during a run"
}

# run_bench TARGET TITLE REQUESTS ARGS...: one redis-benchmark run of REQUESTS requests; TITLE is
# the test's name in redis-benchmark's CSV ("SET", "MSET (10 keys)"). Sets RUN to "rps p50 p99
# cpu_s_per_1m rss_kib peak_rss_kib miss_pct" ("NA" where it does not apply) and returns non-zero
# if the run failed or timed out. Called without a subshell so that `die` and the trap see
# everything it started.
RUN=
run_bench() {
    local target=$1 title=$2 n=$3; shift 3
    local out=$DATA_DIR/bench.out err=$DATA_DIR/bench.err peak=$DATA_DIR/peak
    local pid before after rc=0 parsed cpu=NA rss=NA peak_rss=NA miss=NA ks_before ks_after
    local -a servers addr
    read -ra addr <<<"$(target_args "$target")"
    read -ra servers <<<"$(target_servers "$target")"
    pid=$(target_pid "$target")
    RUN=
    [[ $title != GET ]] || ks_before=$(keyspace_stats "${servers[@]}")
    if [[ -n $pid ]]; then
        before=$(cpu_ticks "$pid")
        rm -f "$peak"
        sample_peak "$pid" "$peak" &
        SAMPLER_PID=$!
    fi
    # In the background and waited for, so that a signal reaches the trap at once.
    timeout "$BENCH_TIMEOUT" redis-benchmark "${addr[@]}" -n "$n" "$@" -q --csv \
        >"$out" 2>"$err" </dev/null &
    BENCH_PID=$!
    wait "$BENCH_PID" || rc=$?
    BENCH_PID=
    check_alive "$target"
    if [[ -n $pid ]]; then
        after=$(cpu_ticks "$pid")
        rss=$(rss_kib "$pid")
        kill "$SAMPLER_PID" 2>/dev/null || true
        wait "$SAMPLER_PID" 2>/dev/null || true
        SAMPLER_PID=
        peak_rss=$(cat "$peak" 2>/dev/null || echo 0)
        ((peak_rss >= rss)) || peak_rss=$rss
        cpu=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$n" \
            'BEGIN { printf "%.3f", t / hz / (n / 1e6) }')
    fi
    if [[ $title == GET ]]; then
        ks_after=$(keyspace_stats "${servers[@]}")
        miss=$(awk -v b="$ks_before" -v a="$ks_after" 'BEGIN { split(b, x, " "); split(a, y, " ")
            h = y[1] - x[1]; m = y[2] - x[2]; if (h + m == 0) print "NA"; else printf "%.1f", 100 * m / (h + m) }')
    fi
    if [[ $rc -ne 0 ]]; then
        if [[ $rc -eq 124 ]]; then
            log "$target $title: timed out after ${BENCH_TIMEOUT}s"
        else
            log "$target $title: redis-benchmark exited with $rc"
        fi
        tail -n 5 "$err" "$out" >&2 || true
        return 1
    fi
    # Error replies make redis-benchmark exit non-zero, but say so explicitly in case a version
    # does not. ("Could not fetch server CONFIG" is not one: that is only its pre-run CONFIG GET,
    # which twemproxy does not support.)
    if grep -q 'Error from server' "$err" "$out"; then
        log "$target $title: redis-benchmark got error replies:"
        grep -h 'Error from server' "$err" "$out" | sort | uniq -c | head -n 5 >&2
        return 1
    fi
    if ! parsed=$(parse_csv "$out" "$title"); then
        log "$target $title: no result line in:"
        cat "$out" "$err" >&2
        return 1
    fi
    RUN="$parsed $cpu $rss $peak_rss $miss"
}

# prefill TARGET REQUESTS ARGS...: an unmeasured redis-benchmark run that writes data.
prefill() {
    local target=$1 n=$2 rc=0; shift 2
    local -a addr
    read -ra addr <<<"$(target_args "$target")"
    timeout "$BENCH_TIMEOUT" redis-benchmark "${addr[@]}" -n "$n" "$@" -q \
        >"$DATA_DIR/prefill.out" 2>&1 </dev/null &
    BENCH_PID=$!
    wait "$BENCH_PID" || rc=$?
    BENCH_PID=
    check_alive "$target"
    if ((rc)) || grep -q 'Error from server' "$DATA_DIR/prefill.out"; then
        tail -n 5 "$DATA_DIR/prefill.out" >&2
        die "$target: writing the data for a case failed"
    fi
}

mkdir -p "$OUT_DIR"
CSV=$OUT_DIR/load-$STAMP.csv
RUNS_CSV=$OUT_DIR/load-$STAMP-runs.csv
IDLE_CSV=$OUT_DIR/load-$STAMP-idle.csv
echo "case,target,round,requests,rps,p50_ms,p99_ms,proxy_cpu_s_per_1m,proxy_rss_kib,proxy_peak_rss_kib,get_miss_pct" >"$RUNS_CSV"

# Each case: "name;title;requests;clients;keyspace;value_bytes;redis-benchmark arguments".
SPECS=()
for p in $PIPELINES; do
    n=$REQUESTS
    ((p == 1)) || n=$PIPELINED_REQUESTS
    for t in set get; do
        want_case "$t" || continue
        SPECS+=("${t^^} P$p;${t^^};$n;$CLIENTS;$KEYSPACE;$VALUE_SIZE;-t $t -P $p -c $CLIENTS -r $KEYSPACE -d $VALUE_SIZE")
    done
done
if want_case mset; then
    for p in $MSET_PIPELINES; do
        n=$MSET_REQUESTS
        ((p == 1)) || n=$MSET_PIPELINED_REQUESTS
        SPECS+=("MSET10 P$p;MSET (10 keys);$n;$CLIENTS;$KEYSPACE;$VALUE_SIZE;-t mset -P $p -c $CLIENTS -r $KEYSPACE -d $VALUE_SIZE")
    done
fi
for c in "${MANY[@]}"; do
    SPECS+=("GET P1 c$c;GET;$MANY_REQUESTS;$c;$KEYSPACE;$VALUE_SIZE;-t get -P 1 -c $c -r $KEYSPACE -d $VALUE_SIZE")
done
BIG_NAME="GET $((BIG_VALUE_SIZE / 1024))KB P1"
if want_case big; then
    SPECS+=("$BIG_NAME;GET;$BIG_REQUESTS;$CLIENTS;$BIG_KEYS;$BIG_VALUE_SIZE;-t get -P 1 -c $CLIENTS -r $BIG_KEYS")
fi

FAILED=0
# --- idle connections ----------------------------------------------------------------------------
# idle_case TARGET CYCLE: IDLE_CLIENTS connections, each served one PING and then idle. Appends a
# row to IDLE_CSV. RSS is read after the holder reports every connection open plus 1 s, and
# IDLE_SETTLE_S seconds after the holder closed them all. A second cycle tells memory the
# allocator kept for reuse (its RSS with the clients open is no higher than the first's) from
# memory lost (it climbs again).
idle_case() {
    local target=$1 cycle=$2 pid port before open after out=$DATA_DIR/idle.out rc=0 line secs per returned
    pid=$(target_pid "$target")
    port=$(target_port "$target")
    before=$(rss_kib "$pid")
    log "idle: $IDLE_CLIENTS connections to $target, cycle $cycle/$IDLE_CYCLES"
    # Remove the last cycle's output first: the holder truncates it only once it runs.
    rm -f "$out" "$DATA_DIR/idle.err"
    local ping=()
    [[ $IDLE_PING == 1 ]] || ping=(--no-ping)
    python3 "$ROOT/benches/idle_clients.py" --port "$port" --clients "$IDLE_CLIENTS" "${ping[@]}" \
        --hold-s "$BENCH_TIMEOUT" >"$out" 2>"$DATA_DIR/idle.err" </dev/null &
    IDLE_PID=$!
    holder_ready() { grep -q '^ready' "$out" || ! alive "$IDLE_PID"; }
    wait_until "$BENCH_TIMEOUT" "$IDLE_CLIENTS idle connections to $target" holder_ready
    check_alive "$target"
    line=$(grep '^ready' "$out" || true)
    [[ -n $line ]] || { cat "$DATA_DIR/idle.err" >&2; die "the idle-connection holder failed"; }
    sleep 1
    open=$(rss_kib "$pid")
    log "idle: $line; $target has $(ss -Htn state established "sport = :$port" | wc -l) established client connections"
    kill -USR1 "$IDLE_PID"
    wait "$IDLE_PID" || rc=$?
    IDLE_PID=
    if ((rc)); then
        log "idle: not every connection to $target answered PING:"
        cat "$DATA_DIR/idle.err" >&2
        FAILED=$((FAILED + 1))
    fi
    # RSS each second while the proxy settles, for the log: memory may come back in steps.
    local series=() i
    for ((i = 0; i < IDLE_SETTLE_S; i++)); do series+=("$(mib "$(rss_kib "$pid")")"); sleep 1; done
    check_alive "$target"
    after=$(rss_kib "$pid")
    log "idle: $target RSS (MiB) each second after the close: ${series[*]} $(mib "$after")"
    log "idle: $IDLE_SETTLE_S s after closing, $target holds $(ss -Htn "sport = :$port" | wc -l) client sockets"
    secs=$(sed -n 's/.* seconds=\([0-9.]*\).*/\1/p' <<<"$line")
    per=$(awk -v o="$open" -v b="$before" -v n="$IDLE_CLIENTS" 'BEGIN { printf "%.2f", (o - b) / n }')
    returned=$(awk -v o="$open" -v b="$before" -v a="$after" \
        'BEGIN { if (o <= b) print "NA"; else printf "%.0f", 100 * (o - a) / (o - b) }')
    echo "$STARTED,$REV,$target,$cycle,$IDLE_CLIENTS,$before,$open,$after,$per,$returned,$secs" >>"$IDLE_CSV"
}
# First, while the proxies have served no load yet, so that what the load cases leave behind
# (buffers the allocator keeps) does not blur the per-connection figure.
if want_case idle; then
    echo "date,git_rev,target,cycle,clients,rss_before_kib,rss_open_kib,rss_after_kib,kib_per_connection,returned_pct,connect_s" >"$IDLE_CSV"
    for t in proxy twemproxy predixy; do
        want "$t" || continue
        for cycle in $(seq "$IDLE_CYCLES"); do idle_case "$t" "$cycle"; done
    done
fi

# The targets that run, in a fixed order that each round rotates.
ACTIVE=()
for t in direct proxy twemproxy predixy; do if want "$t"; then ACTIVE+=("$t"); fi; done
for spec in "${SPECS[@]}"; do
    IFS=';' read -r name title n clients keyspace value args <<<"$spec"
    read -ra bench_args <<<"$args"
    if [[ $name == "$BIG_NAME" ]]; then
        # Write every key of the big keyspace first, with enough random draws that few are missed
        # (the runs' get_miss_pct column says how many). redis-benchmark --cluster gives each
        # master's clients their own hash tag, so direct keys are per master: 3 x BIG_KEYS.
        for t in "${ACTIVE[@]}"; do
            # predixy reads the same cluster, under the same key names, as respgate.
            if [[ $t == predixy ]] && want proxy; then continue; fi
            per=$((BIG_KEYS * 6))
            [[ $t != direct ]] || per=$((per * 3))
            log "$name: writing $BIG_KEYS values of $BIG_VALUE_SIZE bytes through $t ($per SETs)"
            prefill "$t" "$per" -t set -P 16 -c "$CLIENTS" -r "$BIG_KEYS" -d "$BIG_VALUE_SIZE"
        done
    fi
    for r in $(seq "$ROUNDS"); do
        # Rotate the order every round so that no target always runs on a warmer machine.
        order=()
        for i in "${!ACTIVE[@]}"; do order+=("${ACTIVE[(i + r - 1) % ${#ACTIVE[@]}]}"); done
        for t in "${order[@]}"; do
            log "$name: $t round $r/$ROUNDS"
            if run_bench "$t" "$title" "$n" "${bench_args[@]}"; then
                read -r rps p50 p99 cpu rss peak miss <<<"$RUN"
                echo "$name,$t,$r,$n,$rps,$p50,$p99,$cpu,$rss,$peak,$miss" >>"$RUNS_CSV"
            else
                FAILED=$((FAILED + 1))
                echo "$name,$t,$r,$n,NA,NA,NA,NA,NA,NA,NA" >>"$RUNS_CSV"
            fi
        done
    done
done

# The proxies' memory once the load has stopped: does it come back?
RSS_END_PROXY=NA RSS_END_TWEM=NA RSS_END_PREDIXY=NA
if ((${#SPECS[@]})); then
    sleep "$IDLE_SETTLE_S"
    if want proxy; then RSS_END_PROXY=$(rss_kib "$PROXY_PID"); fi
    if want twemproxy; then RSS_END_TWEM=$(rss_kib "$TWEM_PID"); fi
    if want predixy; then RSS_END_PREDIXY=$(rss_kib "$PREDIXY_PID"); fi
fi

# --- report ------------------------------------------------------------------------------------
# median_of CASE TARGET FIELD: median over the rounds of one column of the runs file.
median_of() {
    awk -F',' -v c="$1" -v t="$2" -v f="$3" \
        'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
         $1 == c && $2 == t && $col[f] != "NA" { print $col[f] }' "$RUNS_CSV" | median
}
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "NA" || b == "NA" || b == 0) print "NA";
                                     else printf "%.2f", a / b }'
}
fmt() { awk -v v="$1" -v d="${2:-0}" 'BEGIN { if (v == "NA") print v; else printf "%.*f", d, v }'; }

HEADER="case,direct_rps,proxy_rps,proxy_over_direct,proxy_cpu_s_per_1m_req,direct_p50_ms,direct_p99_ms,proxy_p50_ms,proxy_p99_ms,proxy_rss_mib"
HEADER+=",proxy_peak_rss_mib,twem_rps,twem_over_direct,twem_cpu_s_per_1m_req,twem_p50_ms,twem_p99_ms,twem_rss_mib,twem_peak_rss_mib"
# Last, so that the columns before them stay where they were before predixy joined; NA when it
# did not run.
HEADER+=",predixy_rps,predixy_over_direct,predixy_cpu_s_per_1m_req,predixy_p50_ms,predixy_p99_ms,predixy_rss_mib,predixy_peak_rss_mib"
echo "date,git_rev,requests,clients,keyspace,value_bytes,rounds,$HEADER" >"$CSV"
ROWS="$HEADER"
SHORT=
for spec in "${SPECS[@]}"; do
    IFS=';' read -r name title n clients keyspace value args <<<"$spec"
    d_rps=$(median_of "$name" direct rps)
    row="$name,$(fmt "$d_rps")"
    for t in proxy twemproxy predixy; do
        rps=$(median_of "$name" "$t" rps)
        cols="$(fmt "$rps"),$(ratio "$rps" "$d_rps"),$(fmt "$(median_of "$name" "$t" proxy_cpu_s_per_1m)" 2)"
        if [[ $t == proxy ]]; then
            cols+=",$(fmt "$(median_of "$name" direct p50_ms)" 3),$(fmt "$(median_of "$name" direct p99_ms)" 3)"
        fi
        cols+=",$(fmt "$(median_of "$name" "$t" p50_ms)" 3),$(fmt "$(median_of "$name" "$t" p99_ms)" 3)"
        cols+=",$(mib "$(median_of "$name" "$t" proxy_rss_kib)"),$(mib "$(median_of "$name" "$t" proxy_peak_rss_kib)")"
        row+=",$cols"
    done
    ROWS+=$'\n'"$row"
    echo "$STARTED,$REV,$n,$clients,$keyspace,$value,$ROUNDS,$row" >>"$CSV"
    SHORT+=$(awk -v n="$n" -v r="$d_rps" -v c="$name" \
        'BEGIN { if (r != "NA" && r > 0 && n / r < 5) printf "%s %.2f s, ", c, n / r }')
done

# table COLUMN...: the named columns of ROWS, aligned.
table() {
    awk -F',' -v want="$*" 'BEGIN { n = split(want, w, " ") }
        NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i }
        { line = ""; for (j = 1; j <= n; j++) line = line (j > 1 ? "," : "") $col[w[j]]; print line }' \
        <<<"$ROWS" | { column -s, -t 2>/dev/null || tr ',' '\t'; }
}

echo
echo "respgate load benchmark  $STARTED  rev $REV  $(nproc) cores  load average $LOAD_AT_START at start, $(cut -d' ' -f1-3 /proc/loadavg) at end"
echo "rounds=$ROUNDS (medians); clients=$CLIENTS keyspace=$KEYSPACE value=${VALUE_SIZE}B; requests per run: $REQUESTS set/get P1, $PIPELINED_REQUESTS pipelined, $MSET_REQUESTS MSET P1, $MSET_PIPELINED_REQUESTS MSET pipelined, $MANY_REQUESTS cN, $BIG_REQUESTS big"
if want proxy; then echo "respgate binary: $BIN  (server.threads=${RESPGATE_SERVER__THREADS:-1})"; fi
echo "proxy = respgate in front of the cluster; twem = twemproxy $(nutcracker --version 2>&1 | sed -n 's/.*nutcracker-//p' | head -n 1) in front of 3 standalone masters"
# The predixy columns only when it ran, so that a run without it prints what it always did.
RATE_COLS=(proxy_rps proxy_over_direct twem_rps twem_over_direct)
LATENCY_COLS=(direct_p50_ms direct_p99_ms proxy_p50_ms proxy_p99_ms twem_p50_ms twem_p99_ms)
CPU_COLS=(proxy_cpu_s_per_1m_req twem_cpu_s_per_1m_req)
RSS_COLS=(proxy_rss_mib proxy_peak_rss_mib twem_rss_mib twem_peak_rss_mib)
if want predixy; then
    echo "predixy = predixy $("$PREDIXY_BIN" --version 2>&1 | sed -n 's/.*predixy-//p') ($PREDIXY_BIN, WorkerThreads 1) in front of the same cluster as respgate"
    RATE_COLS+=(predixy_rps predixy_over_direct)
    LATENCY_COLS+=(predixy_p50_ms predixy_p99_ms)
    CPU_COLS+=(predixy_cpu_s_per_1m_req)
    RSS_COLS+=(predixy_rss_mib predixy_peak_rss_mib)
fi
echo
echo "Throughput and latency"
table case direct_rps "${RATE_COLS[@]}" "${LATENCY_COLS[@]}"
echo
echo "Proxy cost (CPU seconds per million requests; RSS after the case's runs and peak during them)"
table case "${CPU_COLS[@]}" "${RSS_COLS[@]}"
misses=$(awk -F',' 'NR > 1 && $11 != "NA" && $11 + 0 > 5 {
                      printf "%s%s %s round %s: %s%%", sep, $1, $2, $3, $11; sep = ", " }' "$RUNS_CSV")
if [[ -n $misses ]]; then
    echo
    echo "note: GET runs that found no value for more than 5% of keys: $misses"
fi
# redis-benchmark --cluster runs one thread per master, and a thread whose clients are done only
# notices the end on its next 250 ms timer tick, so a direct run's time is rounded up by as much
# as 250 ms. Say so when that is a noticeable part of the run.
if [[ -n $SHORT ]]; then
    echo
    echo "note: short direct runs (${SHORT%, })."
    echo "      redis-benchmark --cluster ends a run on a 250 ms timer tick, so direct rps may be"
    echo "      understated by up to 0.25 s / run time: raise the requests for runs of 5 s or more."
fi
if want_case idle && { want proxy || want twemproxy || want predixy; }; then
    echo
    if [[ $IDLE_PING == 1 ]]; then served="each served one PING, then idle"; else served="nothing sent"; fi
    echo "Idle connections ($IDLE_CLIENTS, $served; RSS in MiB)"
    awk -F',' -v s="$IDLE_SETTLE_S" '
        NR == 1 { print "target,cycle,rss_before,rss_open,rss_" s "s_after_close,kib_per_connection,returned_pct,connect_s"; next }
        { printf "%s,%s,%.1f,%.1f,%.1f,%s,%s,%s\n", ($3 == "proxy" ? "respgate" : $3), $4, $6 / 1024,
                 $7 / 1024, $8 / 1024, $9, $10, $11 }' "$IDLE_CSV" | { column -s, -t 2>/dev/null || tr ',' '\t'; }
fi
if want proxy || want twemproxy || want predixy; then
    echo
    echo "RSS in MiB: with no client yet, at peak (VmHWM), and ${IDLE_SETTLE_S} s after the last load case"
fi
if want proxy; then
    echo "  respgate   $(mib "$RSS_START_PROXY")  $(mib "$(hwm_kib "$PROXY_PID")")  $(mib "$RSS_END_PROXY")"
fi
if want twemproxy; then
    echo "  twemproxy  $(mib "$RSS_START_TWEM")  $(mib "$(hwm_kib "$TWEM_PID")")  $(mib "$RSS_END_TWEM")"
fi
if want predixy; then
    echo "  predixy    $(mib "$RSS_START_PREDIXY")  $(mib "$(hwm_kib "$PREDIXY_PID")")  $(mib "$RSS_END_PREDIXY")"
fi
echo
echo "CSV: $CSV"
echo "runs: $RUNS_CSV"
if want_case idle; then echo "idle: $IDLE_CSV"; fi
if ((FAILED)); then die "$FAILED run(s) failed; see the log above"; fi
