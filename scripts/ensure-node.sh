#!/usr/bin/env bash
# Makes what the Node.js client tests need (tests/clients.rs runs tests/clients/node/*.mjs):
#   - .node-tests/node, a link to a Node.js of at least version 20 (the pinned ioredis and
#     node-redis require it): the one on PATH when it is recent enough; else, as Debian 12's
#     nodejs package is version 18, Node.js $NODE_VERSION from the npm registry's
#     node-linux-<arch> package, installed with the npm at hand (apt-get installs nodejs and npm
#     first when npm is missing);
#   - tests/clients/node/node_modules, by `npm ci` from the committed package-lock.json.
# Idempotent, and silent when already up to date: `npm ci` runs again only when package-lock.json
# changed since it last ran (a copy is kept as the stamp) or node_modules is gone.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The oldest Node.js major version the pinned packages support (their `engines`).
NODE_MIN_MAJOR=20
# The Node.js installed from the npm registry when the machine has none recent enough.
NODE_VERSION=20.20.2

dir=.node-tests
packages=tests/clients/node
lock=$packages/package-lock.json
stamp=$dir/package-lock.installed

major_of() {
  "$1" --version 2>/dev/null | sed -n 's/^v\([0-9]*\)\..*/\1/p'
}

recent_enough() {
  local major
  major=$(major_of "$1")
  [[ -n $major && $major -ge $NODE_MIN_MAJOR ]]
}

if [[ -x $dir/node ]] && recent_enough "$dir/node" && cmp -s "$lock" "$stamp" \
  && [[ -d $packages/node_modules ]]; then
  exit 0
fi

as_root=()
if [[ $(id -u) -ne 0 ]]; then
  as_root=(sudo)
fi

apt_install() {
  if [[ ${#as_root[@]} -gt 0 ]] && ! command -v sudo >/dev/null 2>&1; then
    echo "ensure-node: $* missing; not root and no sudo, so install the Debian packages" \
      "$* yourself" >&2
    exit 1
  fi
  echo "ensure-node: installing $* with apt-get" >&2
  "${as_root[@]}" apt-get update
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}

if ! command -v npm >/dev/null 2>&1; then
  apt_install nodejs npm
fi

mkdir -p "$dir"
system_node=$(command -v node || command -v nodejs || true)
if [[ -n $system_node ]] && recent_enough "$system_node"; then
  ln -sfn "$system_node" "$dir/node"
elif ! recent_enough "$dir/node"; then
  case $(uname -m) in
    x86_64) arch=x64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *)
      echo "ensure-node: no Node.js >= $NODE_MIN_MAJOR here and no packaged one for $(uname -m);" \
        "install Node.js $NODE_MIN_MAJOR or later yourself" >&2
      exit 1
      ;;
  esac
  echo "ensure-node: Node.js ${system_node:+$(major_of "$system_node") }is older than" \
    "$NODE_MIN_MAJOR: installing node-linux-$arch@$NODE_VERSION from the npm registry" >&2
  npm install --prefix "$dir/toolchain" --no-save --no-audit --no-fund --loglevel=error \
    "node-linux-$arch@$NODE_VERSION"
  ln -sfn "$PWD/$dir/toolchain/node_modules/node-linux-$arch/bin/node" "$dir/node"
  if ! recent_enough "$dir/node"; then
    echo "ensure-node: $dir/node does not run after installing node-linux-$arch" >&2
    exit 1
  fi
fi

echo "ensure-node: installing the packages of $lock with npm ci" >&2
# The chosen Node.js first on PATH, so npm and any install script run on it.
PATH="$(dirname "$(readlink -f "$dir/node")"):$PATH" \
  npm ci --prefix "$packages" --no-audit --no-fund --loglevel=error
cp "$lock" "$stamp"
