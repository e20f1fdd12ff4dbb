#!/usr/bin/env bash
# The one command that starts the demo: a local Redis Cluster of 3 masters and 3 replicas on
# 127.0.0.1:7000-7005 (DEMO_BASE_PORT=7100 moves it to 7100-7105), data and logs in target/demo/,
# and respgate in front of it on 127.0.0.1:6380 (DEMO_PROXY_PORT moves it), in the foreground.
#
#   ./scripts/demo.sh two-clusters   two clusters, on 7000-7005 and 7100-7105, and respgate with
#                                     config/examples/two-clusters.toml: keys starting with
#                                     "archive:" on the second cluster, the rest on the first
#   ./scripts/demo.sh sentinel       the cluster on 7000-7005, a master on 6390 with a replica on
#                                     6391 watched as "mymaster" by three redis-sentinel on
#                                     26379-26381, and respgate with config/examples/sentinel.toml:
#                                     keys starting with "session:" on the Sentinel group, the
#                                     rest on the cluster. Try a failover with
#                                     redis-cli -p 26379 sentinel failover mymaster
#
# Ctrl-C stops respgate, then the redis-server and redis-sentinel processes this script started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

mode="${1:-one-cluster}"
case "$mode" in
  one-cluster | two-clusters | sentinel) ;;
  *)
    echo "usage: $0 [two-clusters | sentinel]" >&2
    exit 2
    ;;
esac
base_port="${DEMO_BASE_PORT:-7000}"
proxy_port="${DEMO_PROXY_PORT:-6380}"
data_dir="$PWD/target/demo"
bases=("$base_port")
if [[ "$mode" == two-clusters ]]; then
  # The ports config/examples/two-clusters.toml names.
  bases=(7000 7100)
  proxy_port=6380
fi
# The Sentinel group of the sentinel mode: master first, then its replica; the sentinels' ports.
group_ports=()
sentinel_ports=()
if [[ "$mode" == sentinel ]]; then
  # The ports config/examples/sentinel.toml names (the group's data nodes are the sentinels' to
  # name, so any free ports would do; these are easy to remember).
  bases=(7000)
  proxy_port=6380
  group_ports=(6390 6391)
  sentinel_ports=(26379 26380 26381)
fi
ports=()
for base in "${bases[@]}"; do
  for offset in 0 1 2 3 4 5; do
    ports+=("$((base + offset))")
  done
done
pids=()
proxy_pid=

# Stops respgate, then the redis processes this script started, by the pids it recorded.
stop_all() {
  if [[ -n "$proxy_pid" ]]; then
    kill -TERM "$proxy_pid" 2>/dev/null || true
    wait "$proxy_pid" 2>/dev/null || true
  fi
  if [[ ${#pids[@]} -gt 0 ]]; then
    echo "Stopping redis processes ${pids[*]}" >&2
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

bash scripts/ensure-redis.sh
cargo build --release

for port in "${ports[@]}" "${group_ports[@]}" "${sentinel_ports[@]}" "$proxy_port"; do
  if in_use "$port"; then
    echo "demo: port $port on 127.0.0.1 is already in use; stop what uses it, or set" \
      "DEMO_BASE_PORT / DEMO_PROXY_PORT" >&2
    exit 1
  fi
done
for port in "${ports[@]}"; do
  if in_use "$((port + 10000))"; then
    echo "demo: cluster bus port $((port + 10000)) on 127.0.0.1 is already in use;" \
      "set DEMO_BASE_PORT to move the cluster" >&2
    exit 1
  fi
done

for port in "${ports[@]}"; do
  # A fresh node each time: an old nodes.conf would make redis-cli --cluster create refuse it.
  rm -rf "${data_dir:?}/$port"
  mkdir -p "$data_dir/$port"
  redis-server --port "$port" --bind 127.0.0.1 --protected-mode no --daemonize no \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000 \
    --appendonly no --save "" --dir "$data_dir/$port" --logfile "$data_dir/$port/redis.log" \
    </dev/null >/dev/null 2>>"$data_dir/$port/stderr.log" &
  pids+=("$!")
done

for i in "${!ports[@]}"; do
  port="${ports[$i]}"
  for _ in $(seq 100); do
    if [[ "$(redis-cli -p "$port" ping 2>/dev/null)" == PONG ]]; then
      continue 2
    fi
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  echo "demo: redis-server on port $port did not start; its logs:" >&2
  tail -n 20 "$data_dir/$port/redis.log" "$data_dir/$port/stderr.log" >&2 || true
  exit 1
done

for base in "${bases[@]}"; do
  addrs=()
  for offset in 0 1 2 3 4 5; do
    addrs+=("127.0.0.1:$((base + offset))")
  done
  echo "Creating a cluster (3 masters, 3 replicas) on ${addrs[*]}"
  if ! redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes \
    >"$data_dir/create-$base.log" 2>&1; then
    echo "demo: redis-cli --cluster create failed:" >&2
    cat "$data_dir/create-$base.log" >&2
    exit 1
  fi
done

for port in "${ports[@]}"; do
  for _ in $(seq 300); do
    info="$(redis-cli -p "$port" cluster info 2>/dev/null || true)"
    if [[ "$info" == *cluster_state:ok* ]]; then
      continue 2
    fi
    sleep 0.1
  done
  echo "demo: node $port does not report cluster_state:ok after 30 s; see $data_dir/$port/redis.log" >&2
  exit 1
done

# Waits until the process on `port` answers PING, or exits naming its log.
await_ping() {
  local port="$1" pid="$2" log="$3"
  for _ in $(seq 100); do
    if [[ "$(redis-cli -p "$port" ping 2>/dev/null)" == PONG ]]; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  echo "demo: the process on port $port did not start; its log:" >&2
  tail -n 20 "$log" >&2 || true
  exit 1
}

if [[ "$mode" == sentinel ]]; then
  master="${group_ports[0]}"
  for port in "${group_ports[@]}"; do
    rm -rf "${data_dir:?}/$port"
    mkdir -p "$data_dir/$port"
    replica_of=()
    if [[ "$port" != "$master" ]]; then
      replica_of=(--replicaof 127.0.0.1 "$master")
    fi
    redis-server --port "$port" --bind 127.0.0.1 --protected-mode no --daemonize no \
      --appendonly no --save "" --dir "$data_dir/$port" --logfile "$data_dir/$port/redis.log" \
      "${replica_of[@]}" </dev/null >/dev/null 2>>"$data_dir/$port/stderr.log" &
    pids+=("$!")
    await_ping "$port" "$!" "$data_dir/$port/redis.log"
  done
  for port in "${sentinel_ports[@]}"; do
    # Each sentinel its own config file: a sentinel rewrites it as it learns the group.
    dir="$data_dir/sentinel-$port"
    rm -rf "${dir:?}"
    mkdir -p "$dir"
    cat >"$dir/sentinel.conf" <<CONF
port $port
bind 127.0.0.1
daemonize no
dir "$dir"
logfile "$dir/sentinel.log"
sentinel monitor mymaster 127.0.0.1 $master 2
sentinel down-after-milliseconds mymaster 2000
sentinel failover-timeout mymaster 10000
CONF
    redis-sentinel "$dir/sentinel.conf" </dev/null >/dev/null 2>>"$dir/stderr.log" &
    pids+=("$!")
    await_ping "$port" "$!" "$dir/sentinel.log"
  done
  echo "Sentinel group: master 127.0.0.1:$master, replica 127.0.0.1:${group_ports[1]}," \
    "sentinels on ${sentinel_ports[*]}"
fi

seeds="127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
echo "Proxy on 127.0.0.1:$proxy_port — connect with: redis-cli -p $proxy_port"
echo "(Ctrl-C stops the proxy and the redis processes; their logs are in $data_dir)"
# In the background and waited for, so that INT or TERM reach the traps above at once instead of
# after respgate exits; the script still ends when respgate does, with its exit status.
if [[ "$mode" == two-clusters ]]; then
  echo "Keys starting with archive: live on the cluster at 7100, the rest on the one at 7000"
  # Migrations on, with the admin endpoint on 9090 and a fresh token: move a prefix between the
  # two clusters online (the README's "Moving data between backends").
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$data_dir/admin-token"
  echo "Move a prefix online: export RESPGATE_ADMIN_TOKEN=\$(cat $data_dir/admin-token); then"
  echo "  target/release/respgate migrate --admin 127.0.0.1:9090 start --prefix user: --to archive"
  RESPGATE_SERVER__ADMIN_LISTEN=127.0.0.1:9090 \
    RESPGATE_SERVER__ADMIN_TOKEN_FILE="$data_dir/admin-token" \
    RESPGATE_MIGRATION__ENABLED=true \
    target/release/respgate --config config/examples/two-clusters.toml &
elif [[ "$mode" == sentinel ]]; then
  echo "Keys starting with session: live on the Sentinel group (mymaster), the rest on the cluster" \
    "at 7000; fail it over with: redis-cli -p 26379 sentinel failover mymaster"
  target/release/respgate --config config/examples/sentinel.toml &
else
  target/release/respgate --listen "127.0.0.1:$proxy_port" --cluster "$seeds" &
fi
proxy_pid=$!
wait "$proxy_pid"
