#!/usr/bin/env bash
# Installs redis-server, redis-cli and redis-benchmark from the Debian packages when any of them is
# missing. Idempotent, and silent when they are all installed already. On a machine with systemd
# the package also starts a system redis on 6379; nothing here uses or touches it.
set -euo pipefail

missing=()
for tool in redis-server redis-cli redis-benchmark; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

as_root=()
if [[ $(id -u) -ne 0 ]]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "ensure-redis: missing ${missing[*]}; not root and no sudo, so install the" \
      "redis-server and redis-tools packages yourself" >&2
    exit 1
  fi
  as_root=(sudo)
fi

echo "ensure-redis: missing ${missing[*]}; installing redis-server and redis-tools with apt-get" >&2
"${as_root[@]}" apt-get update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server redis-tools

for tool in redis-server redis-cli redis-benchmark; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "ensure-redis: $tool is still missing after installing redis-server and redis-tools" >&2
    exit 1
  fi
done
