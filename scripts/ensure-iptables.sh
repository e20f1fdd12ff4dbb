#!/usr/bin/env bash
# Installs iptables from the Debian package when it is missing. Idempotent, and silent when it is
# installed already. The packet-drop tests (tests/packet_drop.rs) drop a node's packets on the
# loopback interface with it, as a network partition would; they need root.
set -euo pipefail

if command -v iptables >/dev/null 2>&1; then
  exit 0
fi

as_root=()
if [[ $(id -u) -ne 0 ]]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "ensure-iptables: iptables is missing; not root and no sudo, so install the" \
      "iptables package yourself" >&2
    exit 1
  fi
  as_root=(sudo)
fi

echo "ensure-iptables: iptables is missing; installing it with apt-get" >&2
"${as_root[@]}" apt-get update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y iptables

if ! command -v iptables >/dev/null 2>&1; then
  echo "ensure-iptables: iptables is still missing after installing it" >&2
  exit 1
fi
