#!/bin/sh
# Starts one node of the Redis Cluster StatefulSet: redis-server with redis.conf, announcing the
# pod's IP, with the password read from the environment (the redis-auth Secret).
#
# Environment:
#   POD_IP          the pod's IP (downward API status.podIP), announced to clients and peers
#   REDIS_PASSWORD  the password, both requirepass (clients) and masterauth (replication)
#   REDIS_CONFIG    the config file (default: redis.conf beside this script)
#   REDIS_DATA_DIR  the data directory, the PersistentVolume (default: /data)
# Extra arguments go to redis-server after the file and override it (the offline check passes
# --port and --bind to run it outside a pod).
set -eu

: "${POD_IP:?POD_IP must be the pod IP (the downward API field status.podIP)}"
: "${REDIS_PASSWORD:?REDIS_PASSWORD must be set (the redis-auth Secret)}"
case $REDIS_PASSWORD in
  *[\"\\]* | *"
"*)
    echo "start.sh: the password must not contain double quotes, backslashes or newlines" >&2
    exit 1
    ;;
esac
config=${REDIS_CONFIG:-$(dirname "$0")/redis.conf}

# "-" as the last argument makes redis-server read more configuration from standard input:
# the file first, then standard input, then the other arguments. exec keeps redis-server the
# container's main process, so it receives SIGTERM itself and shuts down cleanly.
exec redis-server "$config" --dir "${REDIS_DATA_DIR:-/data}" \
  --cluster-announce-ip "$POD_IP" "$@" - <<CONF
requirepass "$REDIS_PASSWORD"
masterauth "$REDIS_PASSWORD"
CONF
