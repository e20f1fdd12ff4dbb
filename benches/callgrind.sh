#!/usr/bin/env bash
# Instructions per request: respgate, with one worker thread, under valgrind's callgrind, in front
# of a Redis Cluster of 3 masters, driven by redis-benchmark with fixed request counts. A count
# of instructions does not depend on how busy the machine is, so unlike benches/load.sh's timings
# it can be compared between two commits on any machine, and a regression in the request path
# shows in review.
#
# Usage: bash benches/callgrind.sh                    (about 2 minutes on 2 cores)
#        CASES="get1 get16" bash benches/callgrind.sh
#
# Comparing two commits: build each one's release binary and run the script with PROXY_BIN of
# each, on the same machine (the count depends a little on the compiler, glibc and redis-tools):
#     git worktree add /tmp/before BASE
#     (cd /tmp/before && CARGO_TARGET_DIR=/tmp/before/target cargo build --release --bin respgate)
#     PROXY_BIN=/tmp/before/target/release/respgate bash benches/callgrind.sh
#     PROXY_BIN=target/release/respgate bash benches/callgrind.sh
# Figures within the min-max spread of each other are the same (see "Repeatable" below).
#
# Cases (CASES, any of these words; they run in this order):
#   get1    GET, pipeline 1        get16   GET, pipeline 16
#   set1    SET, pipeline 1        mset1   MSET of 10 keys across slots, pipeline 1 (split by slot)
#
# Environment (all optional):
#   CASES="get1 get16 set1 mset1"
#   REQUESTS=4000         requests in the shorter measured run of a case; the longer has 3 times as
#                         many (MSET: half as many, each is 10 keys)
#   CLIENTS=1             redis-benchmark clients (-c). One client makes the path of each request
#                         the same from run to run; more clients make the proxy's batching (how
#                         many requests one read brings) depend on timing, and the count with it.
#   KEYSPACE=1000         random key range (-r); the GET cases read keys written beforehand
#   REPEATS=3             measurements per case; the table shows their median, min and max
#   PREDIXY_BIN=path      measure predixy (joyieldInc/predixy, built outside this repository,
#                         see benches/RESULTS.md) instead of respgate, in front of the same kind
#                         of cluster, with WorkerThreads 1 and reads from masters (as load.sh runs
#                         it): the instruction count respgate is compared with
#   PROXY_BIN=path        measure this respgate binary instead of building target/release/respgate
#                         (the release profile keeps line tables, so callgrind_annotate can name
#                         source lines)
#   CALLGRIND_KEEP=1      keep the callgrind.out files (one per measured run, named
#                         callgrind.out.CASE-REQUESTS-REPEAT) in target/bench/callgrind-<date>/ for
#                         callgrind_annotate: `callgrind_annotate FILE | head -n 60` lists the
#                         functions by their own instructions, --inclusive=yes with their callees'
#   RESPGATE_*            passed on to respgate as configuration overrides; the script sets
#                         RESPGATE_SERVER__THREADS=1 unless given
#
# Repeatable: respgate starts once, under callgrind, and each case first runs once to warm up
# (connections to the nodes open, buffers grown). A measurement is then a run of N and a run of
# 3N requests, each between a zeroing and a dump of callgrind's counters (callgrind_control).
# Each run also counts its fixed costs (redis-benchmark's connection and its CONFIG GET, the
# proxy's timers, about 35,000 instructions a second when idle); the difference of the two runs
# over 2N requests leaves them out, so the figure is the steady state's instructions per request.
# What remains varies with timing (how much one read brings, which wake-ups coincide), by up to
# about 2% between measurements: the table gives the median of REPEATS measurements and their
# min and max, and a change smaller than that spread is no change.
#
# Results: a table on stdout and target/bench/callgrind-<date>.csv. Everything it starts (the
# redis-servers, respgate under valgrind) is stopped by pid when it exits.
set -euo pipefail
# shellcheck source=benches/predixy_conf.sh
source "$(dirname "${BASH_SOURCE[0]}")/predixy_conf.sh"

CASES=${CASES:-get1 get16 set1 mset1}
REQUESTS=${REQUESTS:-4000}
CLIENTS=${CLIENTS:-1}
KEYSPACE=${KEYSPACE:-1000}
REPEATS=${REPEATS:-3}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT_DIR=$TARGET_DIR/bench
STAMP=$(date +%Y%m%d-%H%M%S)
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
# The work tree's revision ("-dirty": tracked files had uncommitted changes); with PROXY_BIN it
# says nothing of the binary, whose path the output names too.
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)
if [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]]; then REV=$REV-dirty; fi
NODES=3

log() { printf '[callgrind.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for n in REQUESTS CLIENTS KEYSPACE REPEATS; do
    [[ ${!n} =~ ^[1-9][0-9]*$ ]] || die "$n must be a positive integer, got '${!n}'"
done
for c in $CASES; do
    case $c in get1 | get16 | set1 | mset1) ;; *) die "CASES may hold get1, get16, set1 and mset1, got '$c'" ;; esac
done
want_case() { [[ " $CASES " == *" $1 "* ]]; }

# --- cleanup: everything started is recorded here and stopped by pid -----------------------------
PIDS=()      # redis-server processes
PROXY_PID=   # valgrind, which runs respgate in its own process
BENCH_PID=
DATA_DIR=
alive() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ $state != Z* ]]
}
# stop_pids SECONDS PID...: SIGTERM, up to SECONDS to exit, then SIGKILL.
stop_pids() {
    local secs=$1 pid; shift
    for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        for _ in $(seq $((secs * 10))); do alive "$pid" || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $BENCH_PID ]]; then kill "$BENCH_PID" 2>/dev/null || true; fi
    # Under valgrind respgate's drain and callgrind's final dump take a while.
    if [[ -n $PROXY_PID ]]; then stop_pids 20 "$PROXY_PID"; fi
    if ((${#PIDS[@]})); then stop_pids 5 "${PIDS[@]}"; fi
    if [[ -n $DATA_DIR && -d $DATA_DIR ]]; then
        if [[ $rc -ne 0 ]]; then tail -n 20 "$DATA_DIR/respgate.log" >&2 2>/dev/null || true; fi
        rm -rf "$DATA_DIR"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- tools -------------------------------------------------------------------------------------
if [[ -f $ROOT/scripts/ensure-redis.sh ]]; then bash "$ROOT/scripts/ensure-redis.sh"; fi
if ! command -v valgrind >/dev/null || ! command -v callgrind_control >/dev/null; then
    log "installing valgrind"
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y valgrind
fi
for tool in redis-server redis-cli redis-benchmark valgrind callgrind_control ss timeout awk; do
    command -v "$tool" >/dev/null || die "$tool not found"
done

PREDIXY_BIN=${PREDIXY_BIN:-}
BIN=${PROXY_BIN:-}
if [[ -n $PREDIXY_BIN ]]; then
    BIN=$PREDIXY_BIN
elif [[ -z $BIN ]]; then
    log "building respgate (release)"
    (cd "$ROOT" && cargo build --release --bin respgate)
    BIN=$TARGET_DIR/release/respgate
fi
[[ -x $BIN ]] || die "$BIN is not an executable"

# --- cluster -------------------------------------------------------------------------------------
# Node ports base..base+2, their bus ports base+20..base+22, respgate on base+10; below 32768,
# where Linux hands out ephemeral ports.
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

DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/respgate-callgrind.XXXXXX")
log "starting $NODES cluster nodes on 127.0.0.1:${NODE_PORTS[0]}-${NODE_PORTS[-1]}"
for p in "${NODE_PORTS[@]}"; do
    mkdir -p "$DATA_DIR/$p"
    redis-server --port "$p" --bind 127.0.0.1 --protected-mode no --daemonize no \
        --dir "$DATA_DIR/$p" --logfile "$DATA_DIR/$p/redis.log" --save '' --appendonly no \
        --cluster-enabled yes --cluster-config-file "$DATA_DIR/$p/nodes.conf" \
        --cluster-port $((p + 20)) --cluster-node-timeout 5000 &
    PIDS+=($!)
done
for i in "${!NODE_PORTS[@]}"; do
    node_up() { alive "${PIDS[i]}" || return 0; pong "${NODE_PORTS[i]}"; }
    wait_until 20 "redis on port ${NODE_PORTS[i]}" node_up
    alive "${PIDS[i]}" || die "redis on port ${NODE_PORTS[i]} exited"
done
seeds=()
for p in "${NODE_PORTS[@]}"; do seeds+=("127.0.0.1:$p"); done
redis-cli --cluster create "${seeds[@]}" --cluster-replicas 0 --cluster-yes \
    >"$DATA_DIR/cluster-create.log" 2>&1 \
    || { cat "$DATA_DIR/cluster-create.log" >&2; die "redis-cli --cluster create failed"; }
cluster_ok() {
    local p info
    for p in "${NODE_PORTS[@]}"; do
        info=$(redis-cli -h 127.0.0.1 -p "$p" cluster info 2>/dev/null | tr -d '\r')
        grep -qx 'cluster_state:ok' <<<"$info" || return 1
        grep -qx "cluster_known_nodes:$NODES" <<<"$info" || return 1
    done
}
wait_until 60 "cluster_state:ok on every node" cluster_ok

# --- respgate under callgrind ----------------------------------------------------------------------
# Counting starts at once but every measured figure comes from a run between a zeroing and a dump,
# so start-up is never counted. The drain is short so that the process exits soon after SIGTERM.
log "starting $(basename "$BIN") under callgrind on 127.0.0.1:$PROXY_PORT ($BIN)"
if [[ -n $PREDIXY_BIN ]]; then
    # As benches/load.sh runs it (benches/predixy_conf.sh): one worker, reads from masters.
    predixy_conf respgate-callgrind "127.0.0.1:$PROXY_PORT" "$DATA_DIR/predixy.log" "${seeds[@]}" >"$DATA_DIR/predixy.conf"
    valgrind --tool=callgrind --callgrind-out-file="$DATA_DIR/callgrind.out.%p" \
        "$BIN" "$DATA_DIR/predixy.conf" >"$DATA_DIR/respgate.log" 2>&1 </dev/null &
else
    RESPGATE_SERVER__THREADS=${RESPGATE_SERVER__THREADS:-1} \
        RESPGATE_SERVER__SHUTDOWN_DELAY_MS=${RESPGATE_SERVER__SHUTDOWN_DELAY_MS:-0} \
        RESPGATE_SERVER__SHUTDOWN_TIMEOUT_MS=${RESPGATE_SERVER__SHUTDOWN_TIMEOUT_MS:-2000} \
        RUST_LOG=warn NO_COLOR=1 valgrind --tool=callgrind \
        --callgrind-out-file="$DATA_DIR/callgrind.out.%p" \
        "$BIN" --listen "127.0.0.1:$PROXY_PORT" --cluster "$(IFS=,; echo "${seeds[*]}")" \
        >"$DATA_DIR/respgate.log" 2>&1 </dev/null &
fi
PROXY_PID=$!
proxy_up() { alive "$PROXY_PID" || return 0; pong "$PROXY_PORT"; }
wait_until 120 "respgate under callgrind to answer PING" proxy_up
alive "$PROXY_PID" || die "respgate under callgrind exited during start-up"
# A count of a proxy that answers errors would be meaningless: prove a write lands in the cluster.
# (predixy answers PING before it has learnt the slot map: the SET is waited for.)
set_ok() { alive "$PROXY_PID" || return 0; [[ $(redis-cli -h 127.0.0.1 -p "$PROXY_PORT" set callgrind-check v 2>&1) == OK ]]; }
wait_until 60 "a SET through the proxy to answer OK" set_ok
alive "$PROXY_PID" || die "the proxy under callgrind exited during start-up"
[[ $(redis-cli -c -h 127.0.0.1 -p "${NODE_PORTS[0]}" get callgrind-check 2>&1 | tail -n 1) == v ]] \
    || die "a SET through respgate does not read back from the cluster"

# bench REQUESTS ARGS...: one redis-benchmark run through respgate; dies on a failure or an
# error reply (a proxy answering errors would make the count meaningless).
bench() {
    local n=$1 rc=0; shift
    timeout 600 redis-benchmark -h 127.0.0.1 -p "$PROXY_PORT" -n "$n" -c "$CLIENTS" "$@" -q \
        >"$DATA_DIR/bench.out" 2>&1 </dev/null &
    BENCH_PID=$!
    wait "$BENCH_PID" || rc=$?
    BENCH_PID=
    if ((rc)) || grep -q 'Error from server' "$DATA_DIR/bench.out"; then
        tail -n 5 "$DATA_DIR/bench.out" >&2
        die "redis-benchmark $* failed (exit $rc)"
    fi
    alive "$PROXY_PID" || die "respgate exited during a run"
}
# control OPTION: callgrind_control OPTION on respgate's valgrind (through valgrind's gdbserver,
# which vgdb reaches even while respgate waits in epoll_wait).
control() {
    callgrind_control "$1" "$PROXY_PID" >"$DATA_DIR/control.out" 2>&1 \
        || { cat "$DATA_DIR/control.out" >&2; die "callgrind_control $1 $PROXY_PID failed"; }
}
# The dumps callgrind has written so far, in order (callgrind.out.PID.N for N = 1, 2, ...).
DUMPS=0
# measure REQUESTS ARGS...: zeroes the counters, runs, dumps them. Sets IR to the run's
# instruction count and DUMP to the file. Called without a subshell, so that `die` and the trap
# see everything it started.
IR=''
DUMP=''
measure() {
    control --zero
    bench "$@"
    control --dump
    DUMPS=$((DUMPS + 1))
    DUMP=$DATA_DIR/callgrind.out.$PROXY_PID.$DUMPS
    wait_until 30 "callgrind's dump $DUMP" test -s "$DUMP"
    IR=$(awk '$1 == "summary:" || $1 == "totals:" { print $2; exit }' "$DUMP")
    [[ $IR =~ ^[0-9]+$ ]] || die "no instruction total in $DUMP"
}

log "writing $KEYSPACE keys for the GET cases"
bench $((KEYSPACE * 10)) -t set -P 16 -r "$KEYSPACE" -d 3

# Each case: "name;key;requests of the shorter run;redis-benchmark arguments".
SPECS=()
if want_case get1; then SPECS+=("GET P1;get1;$REQUESTS;-t get -P 1 -r $KEYSPACE"); fi
if want_case get16; then SPECS+=("GET P16;get16;$REQUESTS;-t get -P 16 -r $KEYSPACE"); fi
if want_case set1; then SPECS+=("SET P1;set1;$REQUESTS;-t set -P 1 -r $KEYSPACE -d 3"); fi
if want_case mset1; then SPECS+=("MSET10 P1;mset1;$((REQUESTS / 2));-t mset -P 1 -r $KEYSPACE -d 3"); fi

mkdir -p "$OUT_DIR"
CSV=$OUT_DIR/callgrind-$STAMP.csv
echo "date,git_rev,case,clients,requests_short,requests_long,repeats,ir_per_request,ir_per_request_min,ir_per_request_max" >"$CSV"
ROWS="case,Ir per request,min,max"
KEEP=$OUT_DIR/callgrind-$STAMP
for spec in "${SPECS[@]}"; do
    IFS=';' read -r name key n args <<<"$spec"
    read -ra bench_args <<<"$args"
    long=$((n * 3))
    log "$name: a warm-up run of $n requests, then $REPEATS pairs of runs of $n and $long, counted"
    bench "$n" "${bench_args[@]}"
    pers=()
    for r in $(seq "$REPEATS"); do
        measure "$n" "${bench_args[@]}"
        ir_short=$IR short_file=$DUMP
        measure "$long" "${bench_args[@]}"
        ir_long=$IR long_file=$DUMP
        pers+=("$(awk -v a="$ir_short" -v b="$ir_long" -v n="$n" -v l="$long" \
            'BEGIN { printf "%.0f", (b - a) / (l - n) }')")
        if [[ -n ${CALLGRIND_KEEP:-} ]]; then
            mkdir -p "$KEEP"
            cp "$short_file" "$KEEP/callgrind.out.$key-$n-$r"
            cp "$long_file" "$KEEP/callgrind.out.$key-$long-$r"
        fi
    done
    read -r median min max < <(printf '%s\n' "${pers[@]}" | sort -n \
        | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)], v[1], v[NR] }')
    log "$name: ${pers[*]} instructions per request"
    echo "$STARTED,$REV,$name,$CLIENTS,$n,$long,$REPEATS,$median,$min,$max" >>"$CSV"
    ROWS+=$'\n'"$name,$median,$min,$max"
done

echo
if [[ -n $PREDIXY_BIN ]]; then
    echo "predixy instructions per request (callgrind)  $STARTED  (respgate rev $REV)"
    echo "binary: $BIN  (WorkerThreads 1)"
else
    echo "respgate instructions per request (callgrind)  $STARTED  rev $REV"
    echo "binary: $BIN  (server.threads=${RESPGATE_SERVER__THREADS:-1})"
fi
echo "$CLIENTS client(s), keyspace $KEYSPACE, 3-byte values; median, min and max of $REPEATS measurements"
echo
{ column -s, -t 2>/dev/null || tr ',' '\t'; } <<<"$ROWS"
echo
echo "CSV: $CSV"
if [[ -n ${CALLGRIND_KEEP:-} ]]; then echo "callgrind.out files: $KEEP"; fi
