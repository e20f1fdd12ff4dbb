#!/usr/bin/env bash
# Runs Redis's own test suite (tests/test_helper.tcl of a Redis source tree) through respgate,
# as an external server in cluster mode, in front of a fresh 3-master, 3-replica cluster, and
# prints a table of passed, failed and errored tests per unit. By hand, not in CI: it takes
# about 15 minutes.
#
#   REDIS_SRC=/path/to/redis-7.0.15 bash scripts/redis-suite.sh [unit ...]
#
# REDIS_SRC is a Redis source tree at the version the cluster runs (Debian 12's is 7.0.15):
#   git clone --depth 1 --branch 7.0.15 https://github.com/redis/redis
# No build is needed: the tree's tests run against the installed redis-server.
#
# SUITE_SKIPS=0 runs every test. By default the tests below are skipped: each differs for a
# reason the README names, and fails by throwing, which ends the rest of its unit unrun.
#
# Each unit runs on its own (a unit's failure cannot abort the next), against the same proxy and
# cluster; between units, a script or function still running on a node is killed straight on
# the node, as Redis's suite gives every unit a fresh server. Logs, one per unit, and the table
# land in target/redis-suite/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

units=("$@")
if [[ ${#units[@]} -eq 0 ]]; then
  units=(dump protocol keyspace scan info-command type/string type/incr type/list type/list-2
    type/list-3 type/set type/zset type/hash type/stream type/stream-cgroups sort expire other
    multi quit pubsub slowlog scripting functions introspection introspection-2 bitops bitfield
    geo hyperloglog lazyfree pause tracking)
fi
# The tags Redis's suite itself skips against an external server, and those that need a
# server the test starts or debugs.
tags="-slow -needs:debug -needs:repl -needs:save -needs:pfdebug -needs:config-maxmemory"
tags+=" -needs:config-resetstat -needs:reset -needs:latency -needs:local-process"

skips=(
  # A script or function that touches a key it did not declare, on a master that does not own
  # it: "Script attempted to access a non local key in a cluster node", as in Redis Cluster
  # (the suite's --cluster-mode assumes one node with every slot).
  "Script read key with expiration set"
  "Script del key with expiration set"
  "FUNCTION - test fcall_ro with read only commands"
  "Script check unpack with massive arguments"
  # PING is the proxy's own command: it answers PONG while one master is busy with a script,
  # and the test stops before it kills the script.
  "Timedout read-only scripts can be killed by SCRIPT KILL"
  "Timedout read-only scripts can be killed by SCRIPT KILL even when use pcall"
  "Timedout script does not cause a false dead client"
  "Timedout script link is still usable after Lua returns"
  "Timedout scripts and unblocked command"
  "Timedout scripts that modified data can't be killed by SCRIPT KILL"
  "SHUTDOWN NOSAVE can kill a timedout script anyway"
  "FUNCTION - test function kill"
  "FUNCTION - test script kill not working on function"
  "FUNCTION - test function kill not working on eval"
  # CONFIG GET shows one master's settings and CONFIG SET gives every node the same value: one
  # node's port cannot be every node's.
  "CONFIG sanity"
  # An endless script makes only its own master busy: a transaction on another master runs,
  # and the script the test meant to kill afterwards is still running when the next test
  # sends CONFIG SET to every node.
  "MULTI and script timeout"
  "EXEC and script timeout"
  "MULTI-EXEC body and script timeout"
  "just EXEC and script timeout"
  # ACL SETUSER is refused: the proxy's users are set in its configuration.
  "Script ACL check"
  # FCALL counts as a write for a WRITE pause: the proxy does not know a function's flags
  # (README); the pause in this test lasts 100 minutes.
  "Test RO scripts are not blocked by pause RO"
  # CLIENT PAUSE inside MULTI is refused (README); a proxy's pause holds its clients, not the
  # nodes' expiry.
  "Test both active and passive expires are skipped during client pause"
  "Test that client pause starts at the end of a transaction"
  # MONITOR is refused: the proxy cannot show the nodes' command streams.
  "MONITOR can log executed commands"
  "MONITOR can log commands issued by the scripting engine"
  "MONITOR can log commands issued by functions"
  "MONITOR supports redacting command arguments"
  "MONITOR correctly handles multi-exec cases"
  # Keys a script reads are not tracked (README, "Client-side caching"): the proxy cannot
  # tell whether a script calls a read-only command; the test waits for their invalidation.
  "Tracking only occurs for scripts when a command calls a read-only command"
  # The node's invalidation of a key it evicts while serving a command comes on the proxy's
  # watcher connection, and reaches the client after that command's reply (README).
  "Tracking invalidation message of eviction keys should be before response"
)
skip_args=()
if [[ "${SUITE_SKIPS:-1}" != 0 ]]; then
  for test in "${skips[@]}"; do skip_args+=(--skiptest "$test"); done
fi

src="${REDIS_SRC:-}"
if [[ -z "$src" || ! -f "$src/tests/test_helper.tcl" ]]; then
  echo "redis-suite: set REDIS_SRC to a Redis source tree (tests/test_helper.tcl in it), e.g." >&2
  echo "  git clone --depth 1 --branch 7.0.15 https://github.com/redis/redis" >&2
  exit 2
fi
bash scripts/ensure-redis.sh
if ! command -v tclsh >/dev/null; then
  apt-get install -y tcl >/dev/null || {
    echo "redis-suite: tclsh is missing; install it with: apt-get install tcl" >&2
    exit 2
  }
fi
# The suite calls the tools by their place in the source tree.
mkdir -p "$src/src"
for tool in redis-server redis-cli redis-benchmark; do
  [[ -x "$src/src/$tool" ]] || ln -sf "$(command -v "$tool")" "$src/src/$tool"
done
cargo build --release --bin respgate

out="$PWD/target/redis-suite"
rm -rf "$out"
mkdir -p "$out"
pids=()
stop_all() {
  if [[ ${#pids[@]} -gt 0 ]]; then
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
trap stop_all EXIT

# A free port whose cluster bus port (+10000) is free too, both below Linux's ephemeral range
# (32768 and up), where an outgoing connection may hold a port nobody listens on, so that no
# bind can fail on one (the proxy's own outgoing connections among them).
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 2768))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null &&
      ! (exec 3<>"/dev/tcp/127.0.0.1/$((port + 10000))") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
}

ports=()
for _ in 1 2 3 4 5 6; do
  port="$(free_port)"
  ports+=("$port")
  mkdir -p "$out/$port"
  redis-server --port "$port" --bind 127.0.0.1 --protected-mode no --cluster-enabled yes \
    --cluster-config-file nodes.conf --cluster-node-timeout 5000 --appendonly no --save "" \
    --enable-debug-command yes --dir "$out/$port" --logfile "$out/$port/redis.log" \
    </dev/null >/dev/null 2>&1 &
  pids+=("$!")
done
for port in "${ports[@]}"; do
  for _ in $(seq 100); do
    [[ "$(redis-cli -p "$port" ping 2>/dev/null)" == PONG ]] && continue 2
    sleep 0.1
  done
  echo "redis-suite: redis-server on $port did not start; see $out/$port/redis.log" >&2
  exit 1
done
addrs=()
for port in "${ports[@]}"; do addrs+=("127.0.0.1:$port"); done
redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes \
  >"$out/create.log" 2>&1
for port in "${ports[@]}"; do
  for _ in $(seq 300); do
    [[ "$(redis-cli -p "$port" cluster info 2>/dev/null)" == *cluster_state:ok* ]] && continue 2
    sleep 0.1
  done
  echo "redis-suite: node $port is not cluster_state:ok after 30 s" >&2
  exit 1
done

proxy_port="$(free_port)"
cat >"$out/respgate.toml" <<CONF
[server]
listen = "127.0.0.1:$proxy_port"
allow_admin_commands = true

[backends.default]
seeds = ["${addrs[0]}", "${addrs[1]}", "${addrs[2]}"]
CONF
target/release/respgate --config "$out/respgate.toml" >"$out/respgate.log" 2>&1 &
pids+=("$!")
for _ in $(seq 100); do
  [[ "$(redis-cli -p "$proxy_port" ping 2>/dev/null)" == PONG ]] && break
  sleep 0.1
done

# Ends any script or function still running on a node, straight on the node.
calm_nodes() {
  for port in "${ports[@]}"; do
    redis-cli -p "$port" script kill >/dev/null 2>&1 || true
    redis-cli -p "$port" function kill >/dev/null 2>&1 || true
  done
}

printf '%-18s %6s %6s %6s %6s  %s\n' unit passed failed errors skipped end >"$out/table.txt"
total_ok=0
total_err=0
total_exc=0
total_skipped=0
for unit in "${units[@]}"; do
  calm_nodes
  log="$out/$(echo "$unit" | tr / -).log"
  status=0
  (cd "$src" && timeout 900 ./runtest --host 127.0.0.1 --port "$proxy_port" --cluster-mode \
    --tags "$tags" --single "unit/$unit" --clients 1 --timeout 120 "${skip_args[@]}") >"$log" 2>&1 ||
    status=$?
  # Without the terminal's colours, so the lines can be counted.
  sed -i 's/\x1b\[[0-9;]*m//g' "$log"
  ok=$(grep -c '^\[ok\]' "$log" || true)
  err=$(grep -c '^\[err\]' "$log" || true)
  exc=$(grep -c '^\[exception\]' "$log" || true)
  skipped=$(grep -c '^\[skip\]' "$log" || true)
  end=completed
  if [[ "$status" -eq 124 ]] || grep -q '^\[TIMEOUT\]' "$log"; then
    end="timed out"
  elif ! grep -q 'All tests passed\|tests failed' "$log"; then
    end="ended early"
  fi
  printf '%-18s %6d %6d %6d %6d  %s\n' "$unit" "$ok" "$err" "$exc" "$skipped" "$end" >>"$out/table.txt"
  total_ok=$((total_ok + ok))
  total_err=$((total_err + err))
  total_exc=$((total_exc + exc))
  total_skipped=$((total_skipped + skipped))
  if ! kill -0 "${pids[-1]}" 2>/dev/null; then
    echo "redis-suite: respgate exited during unit $unit; see $out/respgate.log" >&2
    cat "$out/table.txt"
    exit 1
  fi
done
printf '%-18s %6d %6d %6d %6d\n' total "$total_ok" "$total_err" "$total_exc" "$total_skipped" \
  >>"$out/table.txt"
cat "$out/table.txt"
