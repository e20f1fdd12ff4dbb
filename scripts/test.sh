#!/usr/bin/env bash
# Runs every check, the same way locally and in CI (.ci/run): formatting, clippy, a build of every
# target, unit and integration tests (the latter against real redis-server clusters), doc tests.
# Uses cargo-nextest when installed (profile `ci` when CI=true, see .config/nextest.toml), else
# cargo test. Exits non-zero if any step fails; the test step runs every test before failing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() {
  printf '\n==> %s\n' "$*"
}

step "redis-server, redis-cli, redis-benchmark"
bash scripts/ensure-redis.sh
redis-server --version

step "python3 and the pinned redis-py the integration tests drive (.venv-tests)"
bash scripts/ensure-python.sh
.venv-tests/bin/python -c 'import redis, sys; print("redis-py", redis.__version__, "on Python", sys.version.split()[0])'

step "Node.js and the pinned ioredis and node-redis the integration tests drive (.node-tests)"
bash scripts/ensure-node.sh
(cd tests/clients/node && ../../../.node-tests/node -e \
  'const p = (n) => require(n + "/package.json").version;
   console.log("ioredis", p("ioredis"), "node-redis", p("redis"), "on Node.js", process.version)')

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "cargo build --all-targets"
cargo build --all-targets

step "deploy/: every Kubernetes overlay rendered, validated and run offline (scripts/check-deploy.sh)"
bash scripts/check-deploy.sh

# Doc tests before the main run, so the test runner's summary is the last thing printed.
step "cargo test --doc"
cargo test --doc

if cargo nextest --version >/dev/null 2>&1; then
  profile=default
  if [[ "${CI:-}" == "true" ]]; then
    profile=ci
  fi
  step "cargo nextest run --profile $profile --no-fail-fast"
  cargo nextest run --profile "$profile" --no-fail-fast
else
  # As .config/nextest.toml does: each integration test starts its own Redis Cluster.
  step "cargo test --no-fail-fast (cargo-nextest is not installed)"
  cargo test --no-fail-fast -- --test-threads 4
fi

