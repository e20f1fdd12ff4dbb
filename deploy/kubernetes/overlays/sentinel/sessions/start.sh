#!/bin/sh
# Starts one Redis server of the Sentinel-managed group: a replica of the master the sentinels
# name; before any sentinel knows one (the very first start), pod 0 is the master and the others
# its replicas. Every server is known by its stable DNS name (the pod's name under the headless
# Service), not its IP, so a restart with a new IP changes nothing the sentinels keep.
#
# Environment:
#   REDIS_PASSWORD        requirepass and masterauth (the redis-auth Secret)
#   POD_NAME              the pod's name (downward API); its ordinal is the number at the end
#   ANNOUNCE_HOSTNAME     the name this server is reached by (default: `hostname -f`)
#   REDIS_SENTINELS       HOST:PORT of the sentinels to ask for the master, space separated
#   SENTINEL_MASTER_NAME  the group's name at the sentinels (mymaster)
#   REDIS_MASTER          "HOST PORT" of the first master (default: pod 0's name, port 6379)
#   REDIS_CONFIG          the config file (default: redis.conf beside this script)
#   REDIS_DATA_DIR        the data directory, the PersistentVolume (default: /data)
# Extra arguments go to redis-server after the file (the offline check passes --port, --bind).
set -eu

: "${REDIS_PASSWORD:?REDIS_PASSWORD must be set (the redis-auth Secret)}"
: "${POD_NAME:?POD_NAME must be the pod name (the downward API field metadata.name)}"
case $REDIS_PASSWORD in
  *[\"\\]* | *"
"*)
    echo "start.sh: the password must not contain double quotes, backslashes or newlines" >&2
    exit 1
    ;;
esac
announce=${ANNOUNCE_HOSTNAME:-$(hostname -f)}
config=${REDIS_CONFIG:-$(dirname "$0")/redis.conf}

master=""
for sentinel in ${REDIS_SENTINELS:-}; do
  master=$(REDISCLI_AUTH=$REDIS_PASSWORD redis-cli -h "${sentinel%:*}" -p "${sentinel##*:}" \
    sentinel get-master-addr-by-name "${SENTINEL_MASTER_NAME:-mymaster}" 2>/dev/null |
    tr -d '\r' | awk 'NF == 1 { a[n++] = $1 } END { if (n == 2) print a[0], a[1] }') || true
  [ -n "$master" ] && break
done
if [ -z "$master" ]; then
  if [ "${POD_NAME##*-}" = 0 ]; then
    master="$announce 6379"
  else
    # Pod 0's name under the same Service: this pod's name with ordinal 0.
    master=${REDIS_MASTER:-"${POD_NAME%-*}-0.${announce#*.} 6379"}
  fi
fi

role=""
if [ "${master% *}" != "$announce" ]; then
  role="--replicaof $master"
  echo "start.sh: starting as a replica of $master"
else
  echo "start.sh: starting as the master"
fi
# shellcheck disable=SC2086 # --replicaof HOST PORT are three arguments
exec redis-server "$config" --dir "${REDIS_DATA_DIR:-/data}" \
  --replica-announce-ip "$announce" $role "$@" - <<CONF
requirepass "$REDIS_PASSWORD"
masterauth "$REDIS_PASSWORD"
CONF
