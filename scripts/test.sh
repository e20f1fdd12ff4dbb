#!/usr/bin/env bash
# Runs every check, the same way locally and in CI (.ci/run): formatting, clippy, a build of every
# target, unit and integration tests (the latter against real redis-server clusters), doc tests.
# Uses cargo-nextest when installed (profile `ci` when CI=true, see .config/nextest.toml), else
# cargo test. Then runs a subset of the integration tests again with Valkey as the data nodes
# (RESPGATE_TEST_SERVER, see tests/common/mod.rs). Exits non-zero if any step fails; each test
# step runs every test before failing, and the Valkey run happens even when the main run failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The integration test binaries that run against Valkey too: the proxy's commands, keyspace and
# Pub/Sub, failover, Sentinel and standalone backends, INFO, the wire, the client libraries,
# own connections, and the parity tests whose proxy and Valkey agree. Left out: parity_blocked,
# parity_client_list, parity_multi and parity_pause, which compare replies the proxy makes itself
# the way Redis 7.0 does (CLIENT LIST fields, MULTI and WATCH errors, CLIENT PAUSE and UNBLOCK
# argument errors) with a server that words them as Valkey 8 does. VALKEY_SKIP is left out too:
# it failed once in six runs against Valkey (its node's failover and the proxy's new subscription
# took over 20 s), not yet understood.
VALKEY_SKIP=subscriptions_survive_the_failover_of_their_node
VALKEY_TESTS=(
  proxy multikey keyspace pubsub notifications wire info failover sentinel standalone clients
  handshakes own_connection parity_busy parity_client_reply parity_errorstats parity_functions
  parity_publish parity_randomkey parity_slowlog
)

step() {
  printf '\n==> %s\n' "$*"
}

step "redis-server, redis-cli, redis-benchmark"
bash scripts/ensure-redis.sh
redis-server --version

step "iptables, for the packet-drop tests (tests/packet_drop.rs)"
bash scripts/ensure-iptables.sh
iptables --version

step "python3 and the pinned redis-py the integration tests drive (.venv-tests)"
bash scripts/ensure-python.sh
.venv-tests/bin/python -c 'import redis, sys; print("redis-py", redis.__version__, "on Python", sys.version.split()[0])'

step "valkey-server for the run against Valkey (the version scripts/ensure-valkey.sh pins)"
valkey_server=$(bash scripts/ensure-valkey.sh)
"$valkey_server" --version
valkey_version=$("$valkey_server" --version | sed -n 's/^Valkey server v=\([^ ]*\).*/\1/p')

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

# Doc tests before the test runs, so the test runners' summaries are the last things printed.
step "cargo test --doc"
cargo test --doc

# The runs that failed, named again at the end, below the last runner summary.
failed=()
valkey_args=()
for test in "${VALKEY_TESTS[@]}"; do
  valkey_args+=(--test "$test")
done
if cargo nextest --version >/dev/null 2>&1; then
  profile=default
  if [[ "${CI:-}" == "true" ]]; then
    profile=ci
  fi
  step "cargo nextest run --profile $profile --no-fail-fast"
  cargo nextest run --profile "$profile" --no-fail-fast || failed+=("the main run")
  step "integration tests against Valkey $valkey_version: ${VALKEY_TESTS[*]}"
  RESPGATE_TEST_SERVER=$valkey_server cargo nextest run --profile "$profile" --no-fail-fast \
    "${valkey_args[@]}" -- --skip "$VALKEY_SKIP" || failed+=("the run against Valkey")
else
  # As .config/nextest.toml does: each integration test starts its own Redis Cluster.
  step "cargo test --no-fail-fast (cargo-nextest is not installed)"
  cargo test --no-fail-fast -- --test-threads 4 || failed+=("the main run")
  step "integration tests against Valkey $valkey_version: ${VALKEY_TESTS[*]}"
  RESPGATE_TEST_SERVER=$valkey_server cargo test --no-fail-fast "${valkey_args[@]}" \
    -- --test-threads 4 --skip "$VALKEY_SKIP" || failed+=("the run against Valkey")
fi
if [[ ${#failed[@]} -gt 0 ]]; then
  printf '\ntest.sh: failed: %s\n' "${failed[*]}" >&2
  exit 1
fi
