#!/usr/bin/env bash
# Makes the Python virtual environment the integration tests use (tests/clients.rs runs
# tests/clients/python/*.py with it): .venv-tests/ in the repository (gitignored), with the
# pinned packages of tests/clients/python/requirements.txt. Installs python3 and python3-venv
# with apt-get when python3 is missing or cannot make a virtual environment. Idempotent, and silent when the environment is
# already up to date: it is rebuilt only when requirements.txt changed since it was made.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv=.venv-tests
requirements=tests/clients/python/requirements.txt
# A copy of the requirements the environment was built from: equal means nothing to do.
stamp=$venv/requirements.installed

if [[ -x $venv/bin/python ]] && cmp -s "$requirements" "$stamp" && "$venv/bin/python" -c 'import redis' 2>/dev/null; then
  exit 0
fi

python_ready() {
  command -v python3 >/dev/null 2>&1 && python3 -c 'import venv, ensurepip' >/dev/null 2>&1
}

if ! python_ready; then
  as_root=()
  if [[ $(id -u) -ne 0 ]]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "ensure-python: python3 with venv support is missing; not root and no sudo, so install" \
        "the python3 and python3-venv packages yourself" >&2
      exit 1
    fi
    as_root=(sudo)
  fi
  echo "ensure-python: installing python3 and python3-venv with apt-get" >&2
  "${as_root[@]}" apt-get update
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y python3 python3-venv
  if ! python_ready; then
    echo "ensure-python: python3 still cannot make a virtual environment after installing" \
      "python3 and python3-venv" >&2
    exit 1
  fi
fi

echo "ensure-python: making $venv with $(python3 --version) and the packages of $requirements" >&2
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$requirements"
cp "$requirements" "$stamp"
