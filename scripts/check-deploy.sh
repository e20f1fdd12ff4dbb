#!/usr/bin/env bash
# Checks deploy/kubernetes offline, with no Kubernetes cluster, and fails loudly on any problem:
# 1. every overlay (and the optional ServiceMonitor component) renders with the real kustomize
#    (`kubectl kustomize`, pinned: scripts/ensure-deploy-tools.sh);
# 2. every rendered object validates against the Kubernetes 1.37 schemas, and the objects fit
#    together (scripts/check_deploy.py says what is checked);
# 3. every overlay's respgate config, with the environment its Deployment gives the pod, passes
#    `respgate --check-config`;
# 4. the Redis Cluster's redis.conf and start.sh, as rendered into the ConfigMap, start six real
#    redis-server processes (on 127.0.0.1, with a test password); the rendered bootstrap.sh forms
#    a cluster of them, and a second run changes nothing; respgate, with the base overlay's
#    config and Secrets, serves through that cluster; nodes restarted with new IPs (one, then
#    all at once and a bootstrap run) come back as the same cluster;
# 5. the Sentinel overlay's servers and sentinel start from their rendered scripts and configs,
#    and respgate with that overlay's config routes "session:" keys to the sentinels' master.
# Every process it starts is stopped on exit, by pid.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD

bash scripts/ensure-deploy-tools.sh
bash scripts/ensure-redis.sh
kubectl=$repo/.venv-deploy/bin/kubectl
python=$repo/.venv-deploy/bin/python
cargo build --quiet --bin respgate
respgate=${CARGO_TARGET_DIR:-$repo/target}/debug/respgate

work=$(mktemp -d)
pids=()
# Stops what this script started: SIGTERM, then SIGKILL for whatever is still there after 10 s
# (redis-server refuses SIGTERM while it writes a replica's first AOF).
cleanup() {
  local pid left
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for _ in $(seq 50); do
    left=0
    for pid in "${pids[@]}"; do
      kill -0 "$pid" 2>/dev/null && left=1
    done
    [[ $left -eq 0 ]] && break
    sleep 0.2
  done
  for pid in "${pids[@]}"; do
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "check-deploy: FAILED: $*" >&2
  exit 1
}
step() {
  echo "check-deploy: $*"
}

# --- 1-3: render, validate, check-config ---------------------------------------------------
# A copy, with passwords made the way an operator makes them (make-secrets.sh), so the check
# never reads or writes the real ones.
cp -r deploy/kubernetes "$work/kubernetes"
rm -f "$work"/kubernetes/base/secrets/{redis-password,respgate-password}
sh "$work/kubernetes/make-secrets.sh" >/dev/null
# The ServiceMonitor component is in no overlay: render it on top of the load balancer one.
mkdir "$work/kubernetes/overlays/check-servicemonitor"
cat >"$work/kubernetes/overlays/check-servicemonitor/kustomization.yaml" <<'EOF'
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../loadbalancer
components:
  - ../../components/servicemonitor
EOF

overlays=()
for dir in "$work"/kubernetes/overlays/*/; do
  overlays+=("$(basename "$dir")")
done
for overlay in "${overlays[@]}"; do
  out=$work/out/$overlay
  mkdir -p "$out"
  "$kubectl" kustomize "$work/kubernetes/overlays/$overlay" >"$out/rendered.yaml" ||
    fail "overlay $overlay does not render"
  "$python" scripts/check_deploy.py "$out/rendered.yaml" "$out" ||
    fail "overlay $overlay: rendered objects are invalid"
  # Only the pod's environment: nothing from this shell may change what is checked.
  mapfile -t pod_env <"$out/respgate.env"
  env -i "PATH=$PATH" "${pod_env[@]}" "$respgate" --check-config "$out/respgate.toml" ||
    fail "overlay $overlay: respgate --check-config rejects its config"
  step "overlay $overlay: renders, validates, respgate config accepted"
done
[[ ${#overlays[@]} -ge 5 ]] || fail "expected at least 5 overlays, found ${overlays[*]}"

# The checks above can fail: each of these breakages of a rendered overlay must be rejected.
expect_rejected() {
  local what=$1 script=$2 broken=$work/broken
  rm -rf "$broken"
  mkdir -p "$broken"
  sed -E "$script" "$work/out/loadbalancer/rendered.yaml" >"$broken/rendered.yaml"
  cmp -s "$broken/rendered.yaml" "$work/out/loadbalancer/rendered.yaml" &&
    fail "self-check '$what': the edit changed nothing"
  if "$python" scripts/check_deploy.py "$broken/rendered.yaml" "$broken" 2>/dev/null; then
    fail "self-check: $what was not rejected"
  fi
}
expect_rejected "an unknown field" 's/^(  *)podManagementPolicy: Parallel/&\n\1podManagementPolicies: Parallel/'
expect_rejected "a bootstrap size unlike the StatefulSet's" '/REDIS_CLUSTER_SIZE/{n;s/"6"/"5"/}'
expect_rejected "a seed naming no pod" 's/redis-cluster-5\.redis-cluster:6379/redis-cluster-6.redis-cluster:6379/'
expect_rejected "a missing Secret" '/secretKeyRef:/,/name:/s/name: respgate-auth$/name: respgate-auth-typo/'
expect_rejected "a Service selecting the bootstrap Job" 's/app.kubernetes.io\/component: server$/app.kubernetes.io\/component: bootstrap/'
step "the checks reject a broken render (unknown field, wrong size, bad seed, missing Secret, bad selector)"

# --- helpers for the live checks --------------------------------------------------------------
# Prints N ports P, each free on 127.0.0.1 with P + 10000 free too (the cluster bus port).
# 12768..20000 and their buses 22768..30000: below Linux's ephemeral ports (32768 and up), which
# outgoing connections may hold, and beside the ranges tests/common hands out.
free_ports() {
  "$python" - "$1" <<'EOF'
import random, socket, sys

def free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False

found = []
while len(found) < int(sys.argv[1]):
    p = random.randrange(12768, 20000)
    if p not in found and free(p) and free(p + 10000):
        found.append(p)
print(" ".join(map(str, found)))
EOF
}
# Waits up to 20 s for HOST PORT to answer PING (with REDISCLI_AUTH from the environment).
wait_ping() {
  for _ in $(seq 100); do
    [[ $(redis-cli -h "$1" -p "$2" ping 2>/dev/null) == PONG ]] && return 0
    sleep 0.2
  done
  fail "nothing answered PING on $1:$2"
}
# Waits up to 20 s for COMMAND to print something matching REGEX.
wait_for() {
  local regex=$1
  shift
  for _ in $(seq 100); do
    "$@" 2>/dev/null | grep -qE "$regex" && return 0
    sleep 0.2
  done
  fail "'$*' never printed $regex; last: $("$@" 2>&1 | head -5)"
}
# The one rendered ConfigMap directory whose name starts with PREFIX, in overlay OVERLAY.
config_map() {
  local dirs=("$work/out/$1/configmaps/$2"-*)
  [[ ${#dirs[@]} -eq 1 && -d ${dirs[0]} ]] || fail "no single ConfigMap $2-* in overlay $1"
  echo "${dirs[0]}"
}

# The rendered redis-auth password, as respgate's pod gets it.
env_value() {
  grep "^$2=" "$work/out/$1/respgate.env" | cut -d= -f2- || fail "overlay $1 sets no $2"
}
password=$(env_value loadbalancer RESPGATE_BACKENDS__DEFAULT__PASSWORD)
export REDISCLI_AUTH=$password

# --- 4: the Redis Cluster ----------------------------------------------------------------------
config=$(config_map loadbalancer redis-cluster-config)
bootstrap=$(config_map loadbalancer redis-cluster-bootstrap)/bootstrap.sh
read -ra ports <<<"$(free_ports 6)"
nodes=""
for port in "${ports[@]}"; do
  dir=$work/redis-$port
  mkdir -p "$dir"
  # What the pod gets: POD_IP from the downward API, the password from the Secret; a temporary
  # data directory for the PersistentVolume. The extra arguments move it to a free loopback port.
  POD_IP=127.0.0.1 REDIS_PASSWORD=$password REDIS_DATA_DIR=$dir sh "$config/start.sh" \
    --bind 127.0.0.1 --port "$port" --logfile "$dir/redis.log" >"$dir/start.log" 2>&1 &
  pids+=($!)
  nodes="$nodes 127.0.0.1:$port"
done
for port in "${ports[@]}"; do
  wait_ping 127.0.0.1 "$port"
  [[ $(redis-cli -p "$port" config get cluster-announce-ip | tail -1) == 127.0.0.1 ]] ||
    fail "node $port: cluster-announce-ip is not the POD_IP given"
  [[ $(redis-cli -p "$port" config get appendonly | tail -1) == yes ]] ||
    fail "node $port: redis.conf was not applied (appendonly)"
  env -u REDISCLI_AUTH redis-cli -p "$port" ping 2>&1 | grep -q NOAUTH ||
    fail "node $port: answers without the password"
done
step "redis.conf and start.sh: 6 redis-server nodes started with the rendered config"

# What must not change when bootstrap.sh runs again: ids, addresses, roles, masters, epochs,
# slots, as every node sees them.
cluster_state() {
  for port in "${ports[@]}"; do
    redis-cli -p "$port" cluster nodes | awk '{ $5 = $6 = ""; $8 = ""; print }' | sort
    redis-cli -p "$port" cluster info | tr -d '\r' | grep -E '^cluster_(current_epoch|my_epoch|size|known_nodes|slots_assigned)'
  done
}
run_bootstrap() {
  REDIS_NODES=$nodes BOOTSTRAP_TIMEOUT_S=60 sh "$bootstrap" >"$work/bootstrap-$1.log" 2>&1 ||
    fail "bootstrap run $1 failed: $(cat "$work/bootstrap-$1.log")"
}
run_bootstrap 1
grep -q "no cluster yet: creating it" "$work/bootstrap-1.log" ||
  fail "the first bootstrap run did not create the cluster: $(cat "$work/bootstrap-1.log")"
for port in "${ports[@]}"; do
  wait_for '^cluster_state:ok' redis-cli -p "$port" cluster info
done
masters=$(redis-cli -p "${ports[0]}" cluster nodes | awk '$3 ~ /master/ && NF > 8' | wc -l)
replicas=$(redis-cli -p "${ports[0]}" cluster nodes | grep -c slave || true)
[[ $masters -eq 3 && $replicas -eq 3 ]] || fail "expected 3 masters and 3 replicas, got $masters and $replicas"
before=$(cluster_state)
run_bootstrap 2
grep -q "the cluster is formed already; not creating it" "$work/bootstrap-2.log" ||
  fail "the second bootstrap run did not see the formed cluster: $(cat "$work/bootstrap-2.log")"
if grep -qE "no cluster yet|introducing" "$work/bootstrap-2.log"; then
  fail "the second bootstrap run changed the cluster: $(cat "$work/bootstrap-2.log")"
fi
after=$(cluster_state)
[[ $before == "$after" ]] || fail "the cluster changed on the second bootstrap run:
$(diff <(echo "$before") <(echo "$after"))"
step "bootstrap.sh: formed a 3+3 cluster, and a second run changed nothing"

# respgate with the base config and its pod's environment, moved to loopback: the listen and
# admin addresses, and the seeds (the pods' DNS names mean nothing here).
read -r proxy_port admin_port <<<"$(free_ports 2)"
cluster_seed=127.0.0.1:${ports[0]}
start_respgate() {
  local overlay=$1
  shift
  mapfile -t pod_env <"$work/out/$overlay/respgate.env"
  env -i "PATH=$PATH" "${pod_env[@]}" RESPGATE_SERVER__ADMIN_LISTEN="127.0.0.1:$admin_port" "$@" \
    "$respgate" --config "$work/out/$overlay/respgate.toml" --listen "127.0.0.1:$proxy_port" \
    --cluster "$cluster_seed" >"$work/respgate-$overlay.log" 2>&1 &
  respgate_pid=$!
  pids+=("$respgate_pid")
  for _ in $(seq 100); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin_port/ready") == 200 ]] &&
      return 0
    sleep 0.2
  done
  fail "respgate ($overlay overlay) never became ready: $(tail -20 "$work/respgate-$overlay.log")"
}
client_password=$(env_value loadbalancer RESPGATE_SERVER__PASSWORD)
proxy() {
  REDISCLI_AUTH=$client_password redis-cli -p "$proxy_port" "$@"
}
start_respgate loadbalancer
env -u REDISCLI_AUTH redis-cli -p "$proxy_port" get k 2>&1 | grep -q NOAUTH ||
  fail "respgate serves clients without the respgate-auth password"
[[ $(proxy set deploy:greeting hello) == OK && $(proxy get deploy:greeting) == hello ]] ||
  fail "respgate with the base config does not serve SET/GET: $(cat "$work/respgate-loadbalancer.log")"
proxy cluster slots | grep -qx redis.example.com ||
  fail "respgate does not announce the load balancer address of the overlay"
kill "$respgate_pid"
wait "$respgate_pid" 2>/dev/null || true
step "respgate: the loadbalancer overlay's config and Secrets serve through the cluster"

# Pods restart with new IPs. Here a new IP is another loopback address, 127.0.0.2 and then
# 127.0.0.3, with the node's data directory kept, as its PersistentVolume is.
declare -A node_pid
for i in "${!ports[@]}"; do
  node_pid[${ports[$i]}]=${pids[$i]}
done
# SHUTDOWN (which saves nodes.conf and the AOF, as SIGTERM does in a pod), repeated while
# Redis refuses it (it does while it writes a replica's first AOF), for up to 20 s.
stop_node() {
  local pid=${node_pid[$2]}
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    redis-cli -h "$1" -p "$2" shutdown >/dev/null 2>&1 || true
    sleep 0.2
  done
  kill -0 "$pid" 2>/dev/null && fail "node $1:$2 did not shut down"
  wait "$pid" 2>/dev/null || true
}
start_node() {
  local ip=$1 port=$2 dir=$work/redis-$2
  POD_IP=$ip REDIS_PASSWORD=$password REDIS_DATA_DIR=$dir sh "$config/start.sh" \
    --bind "$ip" --port "$port" --logfile "$dir/redis.log" >>"$dir/start.log" 2>&1 &
  node_pid[$port]=$!
  pids+=($!)
}
# Who is who: ids, masters, slots (not addresses).
cluster_roles() {
  redis-cli -h "$1" -p "$2" cluster nodes | awk '{ $2 = $3 = $5 = $6 = $7 = $8 = ""; print }' | sort
}
roles=$(cluster_roles 127.0.0.1 "${ports[0]}")
id0=$(redis-cli -p "${ports[0]}" cluster myid)
# One pod: the others learn its new address from its pings; nothing is rewritten.
stop_node 127.0.0.1 "${ports[0]}"
start_node 127.0.0.2 "${ports[0]}"
wait_ping 127.0.0.2 "${ports[0]}"
for port in "${ports[@]:1}"; do
  wait_for "^$id0 127\.0\.0\.2:${ports[0]}@" redis-cli -p "$port" cluster nodes
done
wait_for '^cluster_state:ok' redis-cli -h 127.0.0.2 -p "${ports[0]}" cluster info
# Every pod at once: no node can reach another at the address it knows; bootstrap.sh
# introduces them (CLUSTER MEET).
stop_node 127.0.0.2 "${ports[0]}"
for port in "${ports[@]:1}"; do
  stop_node 127.0.0.1 "$port"
done
for port in "${ports[@]}"; do
  start_node 127.0.0.3 "$port"
done
nodes=""
for port in "${ports[@]}"; do
  wait_ping 127.0.0.3 "$port"
  nodes="$nodes 127.0.0.3:$port"
done
run_bootstrap 3
grep -q "introducing it (CLUSTER MEET)" "$work/bootstrap-3.log" ||
  fail "bootstrap did not introduce the restarted nodes: $(cat "$work/bootstrap-3.log")"
for port in "${ports[@]}"; do
  wait_for '^cluster_state:ok' redis-cli -h 127.0.0.3 -p "$port" cluster info
done
[[ $(cluster_roles 127.0.0.3 "${ports[0]}") == "$roles" ]] ||
  fail "the cluster's nodes, roles or slots changed across the restarts"
cluster_seed=127.0.0.3:${ports[0]}
step "start.sh and bootstrap.sh: nodes restarted with new IPs, one and then all, rejoin as themselves"

# --- 5: the Sentinel group ---------------------------------------------------------------------
sessions=$(config_map sentinel redis-sessions-config)
read -r master_port replica_port sentinel_port <<<"$(free_ports 3)"
mkdir -p "$work/sessions-0" "$work/sessions-1" "$work/sentinel-0"
# Pod 0, with no sentinel yet: the master. Each server is "reached by" a loopback address of
# its own, as each pod is by its DNS name.
POD_NAME=redis-sessions-0 ANNOUNCE_HOSTNAME=127.0.0.1 REDIS_PASSWORD=$password \
  REDIS_DATA_DIR=$work/sessions-0 sh "$sessions/start.sh" --bind 127.0.0.1 --port "$master_port" \
  --logfile "$work/sessions-0/redis.log" >"$work/sessions-0/start.log" 2>&1 &
pids+=($!)
POD_NAME=redis-sessions-1 ANNOUNCE_HOSTNAME=127.0.0.2 REDIS_MASTER="127.0.0.1 $master_port" \
  REDIS_PASSWORD=$password REDIS_DATA_DIR=$work/sessions-1 sh "$sessions/start.sh" \
  --bind 127.0.0.2 --port "$replica_port" --logfile "$work/sessions-1/redis.log" \
  >"$work/sessions-1/start.log" 2>&1 &
pids+=($!)
ANNOUNCE_HOSTNAME=127.0.0.1 REDIS_MASTER="127.0.0.1 $master_port" SENTINEL_QUORUM=1 \
  SENTINEL_CONFIG=$work/sentinel-0/sentinel.conf REDIS_PASSWORD=$password \
  sh "$sessions/sentinel-start.sh" --bind 127.0.0.1 --port "$sentinel_port" \
  --logfile "$work/sentinel-0/sentinel.log" >"$work/sentinel-0/start.log" 2>&1 &
pids+=($!)
wait_ping 127.0.0.1 "$master_port"
wait_ping 127.0.0.2 "$replica_port"
wait_ping 127.0.0.1 "$sentinel_port"
wait_for '^master_link_status:up' redis-cli -h 127.0.0.2 -p "$replica_port" info replication
wait_for "^$master_port\$" redis-cli -p "$sentinel_port" sentinel get-master-addr-by-name mymaster
wait_for '^127\.0\.0\.2$' redis-cli -p "$sentinel_port" sentinel replicas mymaster
step "sentinel overlay: master, replica and sentinel started from the rendered scripts"

start_respgate sentinel RESPGATE_BACKENDS__SESSIONS__SENTINELS="127.0.0.1:$sentinel_port"
[[ $(proxy set session:42 alive) == OK ]] || fail "respgate (sentinel overlay) refused SET"
[[ $(redis-cli -p "$master_port" get session:42) == alive ]] ||
  fail "session:42 is not on the sentinels' master"
[[ $(proxy set other:42 x) == OK && $(redis-cli -p "$master_port" exists other:42) == 0 ]] ||
  fail "other:42 went to the sentinel group, not to the cluster"
step "respgate: the sentinel overlay's config routes session: keys to the sentinels' master"

echo "check-deploy: all checks passed (${#overlays[@]} renders: every overlay and the ServiceMonitor component)"
