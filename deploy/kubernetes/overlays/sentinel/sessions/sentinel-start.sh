#!/bin/sh
# Starts one Redis Sentinel of the group: writes its sentinel.conf (Sentinel rewrites that file
# as it learns, so it lives on a writable volume) and starts redis-sentinel with it. It watches
# the master the other sentinels name, or, before any knows one, pod 0 of the servers. Names,
# not IPs, throughout (resolve-hostnames, announce-hostnames): pods keep their DNS names across
# restarts, not their IPs.
#
# Environment:
#   REDIS_PASSWORD        the servers' password; also this sentinel's own (requirepass)
#   ANNOUNCE_HOSTNAME     the name this sentinel is reached by (default: `hostname -f`)
#   REDIS_SENTINELS       HOST:PORT of the sentinels, space separated, to ask for the master
#   REDIS_MASTER_POD      pod 0 of the servers as POD.SERVICE (e.g. redis-sessions-0.redis-sessions);
#                         completed with this pod's domain, it is the first master
#   REDIS_MASTER          "HOST PORT" of the first master, instead of REDIS_MASTER_POD
#   SENTINEL_MASTER_NAME  the group's name (mymaster)
#   SENTINEL_QUORUM       sentinels that must agree the master is down (2)
#   SENTINEL_CONFIG       where to write sentinel.conf (/data/sentinel.conf)
# Extra arguments go to redis-sentinel after the file (the offline check passes --port).
set -eu

: "${REDIS_PASSWORD:?REDIS_PASSWORD must be set (the redis-auth Secret)}"
announce=${ANNOUNCE_HOSTNAME:-$(hostname -f)}
name=${SENTINEL_MASTER_NAME:-mymaster}
conf=${SENTINEL_CONFIG:-/data/sentinel.conf}

master=""
for sentinel in ${REDIS_SENTINELS:-}; do
  [ "${sentinel%:*}" = "$announce" ] && continue
  master=$(REDISCLI_AUTH=$REDIS_PASSWORD redis-cli -h "${sentinel%:*}" -p "${sentinel##*:}" \
    sentinel get-master-addr-by-name "$name" 2>/dev/null |
    tr -d '\r' | awk 'NF == 1 { a[n++] = $1 } END { if (n == 2) print a[0], a[1] }') || true
  [ -n "$master" ] && break
done
if [ -z "$master" ]; then
  # This pod's domain (NAMESPACE.svc.cluster.local): its name less the pod and Service labels.
  domain=${announce#*.}
  domain=${domain#*.}
  master=${REDIS_MASTER:-"${REDIS_MASTER_POD:?set REDIS_MASTER_POD or REDIS_MASTER}.$domain 6379"}
fi
echo "sentinel-start.sh: watching $name at $master"

cat >"$conf" <<CONF
port 26379
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip "$announce"
requirepass "$REDIS_PASSWORD"
sentinel monitor $name $master ${SENTINEL_QUORUM:-2}
sentinel auth-pass $name "$REDIS_PASSWORD"
sentinel down-after-milliseconds $name 5000
sentinel failover-timeout $name 60000
sentinel parallel-syncs $name 1
CONF
exec redis-sentinel "$conf" "$@"
