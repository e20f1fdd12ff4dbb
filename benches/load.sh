#!/usr/bin/env bash
# End-to-end load benchmark: redis-benchmark straight at a Redis Cluster (cluster-aware mode)
# against redis-benchmark through respgate, on the same throwaway cluster, in the same run.
#
# Usage: bash benches/load.sh
#
# Environment (all optional):
#   REQUESTS=200000    requests per redis-benchmark run (-n)
#   CLIENTS=50         parallel connections (-c)
#   KEYSPACE=100000    random key range (-r)
#   VALUE_SIZE=3       value size in bytes (-d)
#   ROUNDS=3           runs per target and case; the table shows the median
#   PIPELINES="1 16"   pipeline depths (-P); each gives a SET case and a GET case
#   TARGETS="direct proxy"  set TARGETS=direct to measure the cluster alone (skips building respgate)
#   BENCH_TIMEOUT=300  seconds before one redis-benchmark run is abandoned
#   PROXY_BIN=path     benchmark this binary instead of building target/release/respgate
#   KEEP_DATA_ON_FAILURE=1  keep the temporary directory (node logs, respgate.log) after a failure
#   RESPGATE_*         passed on to respgate, which reads them as configuration overrides
#                      (so no other variable here may start with RESPGATE_)
#
# It starts 3 masters + 3 replicas on free loopback ports with their data in a temporary
# directory, creates the cluster, starts target/release/respgate in front of it, and for each case
# alternates direct and proxy runs. It records respgate's CPU time (utime+stime from /proc) per
# million requests and its resident memory. Results: a table on stdout, the same as CSV in
# target/bench/load-<date>.csv, and every single run in target/bench/load-<date>-runs.csv.
# Everything it started is stopped, by pid, when it exits.
set -euo pipefail

REQUESTS=${REQUESTS:-200000}
CLIENTS=${CLIENTS:-50}
KEYSPACE=${KEYSPACE:-100000}
VALUE_SIZE=${VALUE_SIZE:-3}
ROUNDS=${ROUNDS:-3}
PIPELINES=${PIPELINES:-1 16}
TARGETS=${TARGETS:-direct proxy}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-300}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT_DIR=$TARGET_DIR/bench
STAMP=$(date +%Y%m%d-%H%M%S)
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
NODES=6

log() { printf '[load.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

want() { [[ " $TARGETS " == *" $1 "* ]]; }

for n in REQUESTS CLIENTS KEYSPACE VALUE_SIZE ROUNDS BENCH_TIMEOUT; do
    [[ ${!n} =~ ^[1-9][0-9]*$ ]] || die "$n must be a positive integer, got '${!n}'"
done
for t in $TARGETS; do
    [[ $t == direct || $t == proxy ]] || die "TARGETS may hold 'direct' and 'proxy', got '$t'"
done

# --- cleanup: everything we start is recorded here and stopped by pid -------------------------
PIDS=()        # redis-server processes
PROXY_PID=
BENCH_PID=
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
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $BENCH_PID ]]; then kill "$BENCH_PID" 2>/dev/null || true; fi
    # The proxy first, so that it does not log the nodes going away; then the nodes together.
    if [[ -n $PROXY_PID ]]; then stop_pids "$PROXY_PID"; fi
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
if [[ -f $ROOT/scripts/ensure-redis.sh ]]; then
    bash "$ROOT/scripts/ensure-redis.sh"
elif ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    log "installing redis-server and redis-tools"
    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server redis-tools
fi
for tool in redis-server redis-cli redis-benchmark ss timeout awk; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
CLK_TCK=$(getconf CLK_TCK)

BIN=${PROXY_BIN:-}
if want proxy && [[ -z $BIN ]]; then
    log "building respgate (release)"
    (cd "$ROOT" && cargo build --release --bin respgate)
    BIN=$TARGET_DIR/release/respgate
fi
if want proxy; then [[ -x $BIN ]] || die "$BIN is not an executable"; fi

# --- ports ---------------------------------------------------------------------------------------
# Node ports base..base+5, the proxy on base+10, the cluster bus ports (cluster-port) on
# base+20..base+25. All below 32768, where Linux starts handing out ephemeral ports to outgoing
# connections (net.ipv4.ip_local_port_range), so a busy machine cannot take one mid-start.
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
BUS_OFFSET=20

# --- cluster -------------------------------------------------------------------------------------
DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/respgate-load.XXXXXX")
log "starting $NODES redis nodes on 127.0.0.1:${NODE_PORTS[0]}-${NODE_PORTS[-1]} (data in $DATA_DIR)"
for p in "${NODE_PORTS[@]}"; do
    mkdir -p "$DATA_DIR/$p"
    redis-server --port "$p" --bind 127.0.0.1 --protected-mode no --daemonize no \
        --dir "$DATA_DIR/$p" --logfile "$DATA_DIR/$p/redis.log" \
        --cluster-enabled yes --cluster-config-file "$DATA_DIR/$p/nodes.conf" \
        --cluster-port $((p + BUS_OFFSET)) --cluster-node-timeout 5000 --save '' --appendonly no &
    PIDS+=($!)
done

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
for i in "${!NODE_PORTS[@]}"; do
    p=${NODE_PORTS[i]}
    node_up() { alive "${PIDS[i]}" || return 0; pong "$p"; }
    wait_until 20 "redis on port $p" node_up
    alive "${PIDS[i]}" || { tail -n 20 "$DATA_DIR/$p/redis.log" >&2; die "redis on port $p exited"; }
done

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

# --- proxy -------------------------------------------------------------------------------------
if want proxy; then
    log "starting respgate on 127.0.0.1:$PROXY_PORT"
    RUST_LOG=warn NO_COLOR=1 "$BIN" --listen "127.0.0.1:$PROXY_PORT" \
        --cluster "$(IFS=,; echo "${seeds[*]}")" >"$DATA_DIR/respgate.log" 2>&1 &
    PROXY_PID=$!
    proxy_up() { alive "$PROXY_PID" || return 0; pong "$PROXY_PORT"; }
    wait_until 30 "respgate to answer PING" proxy_up
    alive "$PROXY_PID" \
        || { tail -n 50 "$DATA_DIR/respgate.log" >&2; die "respgate exited during start-up"; }

    # A benchmark of a proxy that answers errors quickly would be meaningless: prove that writes
    # through it land in the cluster and that reads through it see what was written directly.
    log "checking that respgate routes correctly"
    checks=200
    for i in $(seq "$checks"); do echo "SET load-check:$i v$i"; done \
        | redis-cli -h 127.0.0.1 -p "$PROXY_PORT" >"$DATA_DIR/check-set.out" 2>&1 || true
    got=$(grep -cx 'OK' "$DATA_DIR/check-set.out" || true)
    [[ $got -eq $checks ]] || { head -n 5 "$DATA_DIR/check-set.out" >&2
        die "only $got of $checks SETs through respgate answered OK"; }
    # redis-cli -c follows redirects and says so on stdout ("-> Redirected to slot ...").
    for i in $(seq "$checks"); do echo "GET load-check:$i"; done \
        | redis-cli -c -h 127.0.0.1 -p "$DIRECT_PORT" 2>&1 | grep -v '^-> Redirected' \
        >"$DATA_DIR/check-direct.out" || true
    for i in $(seq "$checks"); do echo "SET load-check:$i w$i"; done \
        | redis-cli -c -h 127.0.0.1 -p "$DIRECT_PORT" >/dev/null 2>&1 || true
    for i in $(seq "$checks"); do echo "GET load-check:$i"; done \
        | redis-cli -h 127.0.0.1 -p "$PROXY_PORT" >"$DATA_DIR/check-proxy.out" 2>&1 || true
    [[ $(seq "$checks" | sed 's/^/v/') == "$(cat "$DATA_DIR/check-direct.out")" ]] \
        || die "values written through respgate do not read back from the cluster"
    [[ $(seq "$checks" | sed 's/^/w/') == "$(cat "$DATA_DIR/check-proxy.out")" ]] \
        || { head -n 5 "$DATA_DIR/check-proxy.out" >&2
             die "GET through respgate does not return what was written to the cluster"; }
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

# median: of the numbers on stdin ("NA" when there are none).
median() {
    sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "NA"; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# parse_csv FILE TEST: prints "rps p50 p99" from redis-benchmark --csv output, finding the
# columns by the header's names rather than by position.
parse_csv() {
    awk -F',' -v test="$2" '
        { for (i = 1; i <= NF; i++) { gsub(/^"|"\r?$|"$/, "", $i) } }
        $1 == "test" { for (i = 1; i <= NF; i++) col[$i] = i; next }
        $1 == test && ("rps" in col) {
            print $col["rps"], $col["p50_latency_ms"], $col["p99_latency_ms"]; found = 1; exit }
        END { if (!found) exit 1 }' "$1"
}

# run_bench TARGET TEST PIPELINE: one redis-benchmark run. Sets RUN to "rps p50 p99 cpu_s_per_1m
# rss_kib" (the last two "NA" for direct runs) and returns non-zero if the run failed or timed out.
# Called without a subshell so that `die` and the trap see everything it started.
RUN=
run_bench() {
    local target=$1 test=$2 pipeline=$3 out err before after rc=0 parsed cpu rss
    local args=(-t "$test" -P "$pipeline" -c "$CLIENTS" -n "$REQUESTS" -r "$KEYSPACE"
                -d "$VALUE_SIZE" -q --csv)
    RUN=
    out=$DATA_DIR/bench.out err=$DATA_DIR/bench.err
    if [[ $target == direct ]]; then
        args=(--cluster -h 127.0.0.1 -p "$DIRECT_PORT" "${args[@]}")
    else
        args=(-h 127.0.0.1 -p "$PROXY_PORT" "${args[@]}")
        before=$(cpu_ticks "$PROXY_PID")
    fi
    # In the background and waited for, so that a signal reaches the trap at once.
    timeout "$BENCH_TIMEOUT" redis-benchmark "${args[@]}" >"$out" 2>"$err" </dev/null &
    BENCH_PID=$!
    wait "$BENCH_PID" || rc=$?
    BENCH_PID=
    if [[ $target == proxy ]]; then
        alive "$PROXY_PID" \
            || { tail -n 50 "$DATA_DIR/respgate.log" >&2; die "respgate exited during a run"; }
        after=$(cpu_ticks "$PROXY_PID")
        cpu=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$REQUESTS" \
            'BEGIN { printf "%.3f", t / hz / (n / 1e6) }')
        rss=$(rss_kib "$PROXY_PID")
    else
        cpu=NA rss=NA
    fi
    if [[ $rc -ne 0 ]]; then
        if [[ $rc -eq 124 ]]; then
            log "$target $test -P $pipeline: timed out after ${BENCH_TIMEOUT}s"
        else
            log "$target $test -P $pipeline: redis-benchmark exited with $rc"
        fi
        tail -n 5 "$err" "$out" >&2 || true
        return 1
    fi
    # Error replies make redis-benchmark exit non-zero, but say so explicitly in case a version
    # does not. ("failed to fetch CONFIG" is not one: that is only its pre-run CONFIG GET.)
    if grep -q 'Error from server' "$err" "$out"; then
        log "$target $test -P $pipeline: redis-benchmark got error replies:"
        grep -h 'Error from server' "$err" "$out" | sort | uniq -c | head -n 5 >&2
        return 1
    fi
    if ! parsed=$(parse_csv "$out" "${test^^}"); then
        log "$target $test -P $pipeline: no result line in:"
        cat "$out" >&2
        return 1
    fi
    RUN="$parsed $cpu $rss"
}

mkdir -p "$OUT_DIR"
CSV=$OUT_DIR/load-$STAMP.csv
RUNS_CSV=$OUT_DIR/load-$STAMP-runs.csv
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)
if [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]]; then REV=$REV-dirty; fi
echo "case,target,round,rps,p50_ms,p99_ms,proxy_cpu_s_per_1m,proxy_rss_kib" >"$RUNS_CSV"

CASES=()
for p in $PIPELINES; do CASES+=("set $p" "get $p"); done

FAILED=0
for c in "${CASES[@]}"; do
    read -r test pipeline <<<"$c"
    name="${test^^} P$pipeline"
    for r in $(seq "$ROUNDS"); do
        # Swap the order every round so that neither target always runs on a warmer machine.
        if ((r % 2)); then order="direct proxy"; else order="proxy direct"; fi
        for t in $order; do
            want "$t" || continue
            log "$name: $t round $r/$ROUNDS"
            if run_bench "$t" "$test" "$pipeline"; then
                read -r rps p50 p99 cpu rss <<<"$RUN"
                echo "$name,$t,$r,$rps,$p50,$p99,$cpu,$rss" >>"$RUNS_CSV"
            else
                FAILED=$((FAILED + 1))
                echo "$name,$t,$r,NA,NA,NA,NA,NA" >>"$RUNS_CSV"
            fi
        done
    done
done

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
echo "date,git_rev,requests,clients,keyspace,value_bytes,rounds,$HEADER" >"$CSV"
TABLE="$HEADER"
for c in "${CASES[@]}"; do
    read -r test pipeline <<<"$c"
    name="${test^^} P$pipeline"
    d_rps=$(median_of "$name" direct rps) p_rps=$(median_of "$name" proxy rps)
    rss=$(median_of "$name" proxy proxy_rss_kib)
    [[ $rss == NA ]] || rss=$(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }')
    row="$name,$(fmt "$d_rps"),$(fmt "$p_rps"),$(ratio "$p_rps" "$d_rps")"
    row+=",$(fmt "$(median_of "$name" proxy proxy_cpu_s_per_1m)" 2)"
    row+=",$(fmt "$(median_of "$name" direct p50_ms)" 3),$(fmt "$(median_of "$name" direct p99_ms)" 3)"
    row+=",$(fmt "$(median_of "$name" proxy p50_ms)" 3),$(fmt "$(median_of "$name" proxy p99_ms)" 3)"
    row+=",$rss"
    TABLE+=$'\n'"$row"
    echo "$STARTED,$REV,$REQUESTS,$CLIENTS,$KEYSPACE,$VALUE_SIZE,$ROUNDS,$row" >>"$CSV"
done

echo
echo "respgate load benchmark  $STARTED  rev $REV  $(nproc) cores"
echo "requests=$REQUESTS clients=$CLIENTS keyspace=$KEYSPACE value=${VALUE_SIZE}B rounds=$ROUNDS (medians)"
echo
column -s, -t <<<"$TABLE" 2>/dev/null || tr ',' '\t' <<<"$TABLE"
# redis-benchmark --cluster runs one thread per master, and a thread whose clients are done only
# notices the end on its next 250 ms timer tick, so a direct run's time is rounded up by as much
# as 250 ms. Say so when that is a noticeable part of the run.
short=$(awk -F',' -v n="$REQUESTS" 'NR > 1 && $2 != "NA" && n / $2 < 5 {
            printf "%s%s %.2f s", sep, $1, n / $2; sep = ", " }' <<<"$TABLE")
if [[ -n $short ]]; then
    echo
    echo "note: short direct runs ($short)."
    echo "      redis-benchmark --cluster ends a run on a 250 ms timer tick, so direct rps may be"
    echo "      understated by up to 0.25 s / run time: raise REQUESTS for runs of 5 s or more."
fi
if want proxy; then
    echo
    echo "respgate peak RSS (VmHWM): $(awk -v k="$(hwm_kib "$PROXY_PID")" 'BEGIN { printf "%.1f", k / 1024 }') MiB"
fi
echo
echo "CSV: $CSV"
echo "runs: $RUNS_CSV"
if ((FAILED)); then die "$FAILED run(s) failed; see the log above"; fi
