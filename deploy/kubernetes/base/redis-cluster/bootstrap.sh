#!/bin/sh
# Forms the Redis Cluster once, and does nothing on a cluster that is already formed. Run by the
# redis-cluster-bootstrap Job; scripts/check-deploy.sh runs this same file against six local
# redis-server processes, twice, and checks that the second run changes nothing.
#
# 1. Waits until REDIS_CLUSTER_SIZE nodes answer PING.
# 2. Asks each node CLUSTER INFO. A node that knows no slot assignment and no other node is
#    fresh; any other is part of a cluster.
#    - every node fresh: redis-cli --cluster create (REDIS_REPLICAS_PER_MASTER replicas each);
#    - none fresh: the cluster exists; nothing is created. A node whose current address no
#      other node knows (every pod restarted with a new IP at once) is introduced with
#      CLUSTER MEET, which lets the cluster find it again; nothing else changes;
#    - some fresh beside a formed cluster (the StatefulSet was scaled up): they are reported,
#      not joined: adding nodes moves slots, a step an operator takes (deploy/README.md,
#      "Scaling out");
#    - otherwise (nodes that met but own no slot: an interrupted create) it stops with an error.
# 3. Waits until every node reports cluster_state:ok and all agree on the roles.
#
# Environment:
#   REDIS_NODES               HOST:PORT of every node, space separated; when empty, the IPs the
#                             headless Service REDIS_SERVICE resolves to, with REDIS_PORT
#   REDIS_SERVICE             the StatefulSet's headless Service (publishNotReadyAddresses)
#   REDIS_PORT                the nodes' port (6379)
#   REDIS_CLUSTER_SIZE        nodes to wait for (6: 3 masters and 3 replicas)
#   REDIS_REPLICAS_PER_MASTER replicas of each master (1)
#   REDISCLI_AUTH             the nodes' password; redis-cli reads it from the environment
#   BOOTSTRAP_TIMEOUT_S       give up (exit 1) after this many seconds (600)
set -eu

size=${REDIS_CLUSTER_SIZE:-6}
replicas=${REDIS_REPLICAS_PER_MASTER:-1}
deadline=$(($(date +%s) + ${BOOTSTRAP_TIMEOUT_S:-600}))

log() { echo "bootstrap: $*"; }
die() {
  echo "bootstrap: $*" >&2
  exit 1
}
wait_or_die() {
  [ "$(date +%s)" -lt "$deadline" ] || die "gave up: $1"
  sleep 2
}

# redis-cli against one HOST:PORT.
cli() {
  node=$1
  shift
  redis-cli -h "${node%:*}" -p "${node##*:}" "$@"
}

# One field of a node's CLUSTER INFO, empty when the node does not answer.
info_field() {
  cli "$1" cluster info 2>/dev/null | tr -d '\r' | awk -F: -v k="$2" '$1 == k { print $2 }'
}

# Every node's address, one per word.
list_nodes() {
  if [ -n "${REDIS_NODES:-}" ]; then
    echo "$REDIS_NODES"
  else
    : "${REDIS_SERVICE:?set REDIS_NODES or REDIS_SERVICE}"
    getent ahostsv4 "$REDIS_SERVICE" | awk -v port="${REDIS_PORT:-6379}" '{ print $1 ":" port }' |
      sort -u | tr '\n' ' '
  fi
}

# 1. Every node up.
while :; do
  nodes=$(list_nodes || true)
  count=$(echo "$nodes" | wc -w)
  answering=0
  for node in $nodes; do
    if [ "$(cli "$node" ping 2>/dev/null)" = PONG ]; then
      answering=$((answering + 1))
    fi
  done
  if [ "$count" -ge "$size" ] && [ "$answering" -eq "$count" ]; then
    break
  fi
  log "waiting for $size nodes to answer ($count found, $answering answering)"
  wait_or_die "fewer than $size nodes answered"
done
log "nodes: $nodes"

# 2. Formed, fresh, or neither.
fresh=""
members=""
stray=""
for node in $nodes; do
  slots=$(info_field "$node" cluster_slots_assigned)
  known=$(info_field "$node" cluster_known_nodes)
  if [ "${slots:-0}" -gt 0 ]; then
    members="$members $node"
  elif [ "${known:-1}" -le 1 ]; then
    fresh="$fresh $node"
  else
    stray="$stray $node"
  fi
done

if [ -n "$stray" ]; then
  die "these nodes know other nodes but no slot is assigned:$stray. An earlier create was" \
    "interrupted: check with redis-cli --cluster check, then repair (redis-cli --cluster fix)" \
    "or reset those nodes (CLUSTER RESET HARD, which erases them) and run this again"
elif [ -z "$members" ]; then
  log "no cluster yet: creating it with $replicas replica(s) per master"
  # shellcheck disable=SC2086 # one argument per node
  redis-cli --cluster create $nodes --cluster-replicas "$replicas" --cluster-yes
  members=$nodes
else
  log "the cluster is formed already; not creating it"
  # A node's own view holds every address the cluster knows.
  first=${members# }
  first=${first%% *}
  known_addresses=$(cli "$first" cluster nodes | awk '{ split($2, a, "@"); print a[1] }')
  for node in $members; do
    if ! echo "$known_addresses" | grep -qxF "$node"; then
      log "$node is in the cluster under another address: introducing it (CLUSTER MEET)"
      cli "$first" cluster meet "${node%:*}" "${node##*:}" >/dev/null
    fi
  done
  if [ -n "$fresh" ]; then
    log "not in the cluster yet:$fresh. To add them, see deploy/README.md, \"Scaling out\"" \
      "(redis-cli --cluster add-node, then --cluster rebalance --cluster-use-empty-masters)"
  fi
fi

# 3. Healthy everywhere.
for node in $members; do
  until [ "$(info_field "$node" cluster_state)" = ok ]; do
    log "waiting for cluster_state:ok on $node"
    wait_or_die "$node did not report cluster_state:ok"
  done
done
# Every node's view of who is master and who replicates whom, the same on all: right after a
# create, gossip takes a moment to tell every node which nodes became replicas.
view() {
  cli "$1" cluster nodes | awk '{ flags = $3; sub(/myself,/, "", flags); print $1, flags, $4 }' |
    sort
}
until
  first=${members# }
  reference=$(view "${first%% *}")
  agreed=yes
  for node in $members; do
    [ "$(view "$node")" = "$reference" ] || agreed=no
  done
  [ "$agreed" = yes ]
do
  log "waiting for every node to agree on the roles"
  wait_or_die "the nodes do not agree on the roles"
done
log "cluster_state:ok on every node, and every node agrees on the roles"
first=${members# }
cli "${first%% *}" cluster nodes | sed 's/^/bootstrap: /'
