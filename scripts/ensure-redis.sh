#!/usr/bin/env bash
# Installs redis-server, redis-cli, redis-benchmark and redis-sentinel from the Debian packages
# when any of them is missing. Idempotent, and silent when they are all installed already. On a
# machine with systemd the packages also start a system redis on 6379 and a system sentinel on
# 26379; nothing here uses or touches them (the tests start their own on free ports).
set -euo pipefail

# Each tool, and the Debian package that ships it.
declare -A package_of=(
  [redis-server]=redis-server
  [redis-cli]=redis-tools
  [redis-benchmark]=redis-tools
  [redis-sentinel]=redis-sentinel
)

missing=()
packages=()
for tool in redis-server redis-cli redis-benchmark redis-sentinel; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    missing+=("$tool")
    # Each package once, however many of its tools are missing.
    if [[ " ${packages[*]} " != *" ${package_of[$tool]} "* ]]; then
      packages+=("${package_of[$tool]}")
    fi
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

as_root=()
if [[ $(id -u) -ne 0 ]]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "ensure-redis: missing ${missing[*]}; not root and no sudo, so install the" \
      "${packages[*]} packages yourself" >&2
    exit 1
  fi
  as_root=(sudo)
fi

echo "ensure-redis: missing ${missing[*]}; installing ${packages[*]} with apt-get" >&2
"${as_root[@]}" apt-get update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${packages[@]}"

for tool in "${missing[@]}"; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "ensure-redis: $tool is still missing after installing ${packages[*]}" >&2
    exit 1
  fi
done
