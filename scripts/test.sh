#!/usr/bin/env bash
# Runs Tidewater's whole test suite against a real Apache Kafka broker.
#
#   scripts/test.sh [extra cargo test arguments]
#
# Uses the broker named by TW_BOOTSTRAP_SERVERS when set; otherwise starts the local
# broker (scripts/kafka.sh) unless it is already running. The fault suite
# (tests/faults.rs) restarts brokers of its own: a single broker on TW_FAULT_KAFKA_PORT
# (19392) and a three-node cluster on TW_CLUSTER_KAFKA_PORT (19192-19194). The tests of a
# secured cluster (tests/security.rs) use the secured broker (TW_KAFKA_SECURITY=1
# scripts/kafka.sh), unless TW_SECURE_DIR names one already (TW_SECURE=0 skips them).
# All are started here, side by side. Runs every test target (tests/fuzz_replay.rs
# replays the fuzz corpora among them); beside them, the fault suite, then Schemathesis
# against docs/openapi.yaml and a live `serve` (scripts/schemathesis.sh), the client
# examples in Python and Node (scripts/examples.sh) and the web console in headless
# Chromium (scripts/console-test.sh); then stops the brokers it started. A failing step
# does not stop the others; the exit status is non-zero if any of them failed.
# TW_FAULTS=0 skips the fault suite.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export TW_KAFKA_PORT="${TW_KAFKA_PORT:-19092}"

export TW_FAULT_KAFKA_PORT="${TW_FAULT_KAFKA_PORT:-19392}"
export TW_CLUSTER_KAFKA_PORT="${TW_CLUSTER_KAFKA_PORT:-19192}"
fault_kafka() { TW_KAFKA_PORT=$TW_FAULT_KAFKA_PORT scripts/kafka.sh "$@"; }
cluster_kafka() { TW_KAFKA_NODES=3 TW_KAFKA_PORT=$TW_CLUSTER_KAFKA_PORT scripts/kafka.sh "$@"; }

started=0
fault_started=0
secure_started=0
# The secured broker has its own ports and state (scripts/kafka/secure.sh).
secure_kafka() { env -u TW_KAFKA_PORT -u TW_KAFKA_CONTROLLER_PORT TW_KAFKA_SECURITY=1 scripts/kafka.sh "$@"; }
cleanup() {
  if [[ $started == 1 ]]; then
    scripts/kafka.sh stop || true
  fi
  if [[ $fault_started == 1 ]]; then
    fault_kafka stop || true
    cluster_kafka stop || true
  fi
  if [[ $secure_started == 1 ]]; then
    secure_kafka stop || true
  fi
}
# At the very end: each failed test's name and the first lines of its message, from the
# output of every cargo test run here (CI shows the end of a long output).
logs_dir="$(mktemp -d)"
recap() {
  local failures
  failures="$(awk '
    /^---- .* stdout ----$/ { name = $2; n = 0; print "--- " name; next }
    name != "" && (/^stack backtrace:/ || /^failures:$/ || /^note: /) { name = "" }
    name != "" && NF > 0 && n < 6 { print "    " substr($0, 1, 300); n++ }
  ' "$logs_dir"/*.log 2>/dev/null || true)"
  if [[ -n "$failures" ]]; then
    echo "===== test.sh: failed tests (their whole messages are above) ====="
    echo "$failures"
  fi
  rm -rf "$logs_dir"
}
trap 'cleanup; recap' EXIT

if [[ -n "${TW_BOOTSTRAP_SERVERS:-}" ]]; then
  echo "test.sh: using the broker at TW_BOOTSTRAP_SERVERS=$TW_BOOTSTRAP_SERVERS" >&2
else
  export TW_BOOTSTRAP_SERVERS="127.0.0.1:$TW_KAFKA_PORT"
  if scripts/kafka.sh status >/dev/null 2>&1; then
    echo "test.sh: using the running local broker at $TW_BOOTSTRAP_SERVERS" >&2
  else
    # On CI, start from empty broker storage: topics left by earlier runs only slow the
    # broker's start (each test makes its own topics).
    if [[ "${CI:-}" == "true" ]]; then
      scripts/kafka.sh reset >/dev/null 2>&1 || true
    fi
    scripts/kafka.sh start >/dev/null
    started=1
  fi
fi

# The fault suite's brokers and the secured broker, started side by side (each waits for
# its own readiness).
pids=()
if ! { fault_kafka status && cluster_kafka status; } >/dev/null 2>&1; then
  if [[ "${CI:-}" == "true" ]]; then
    fault_kafka reset >/dev/null 2>&1 || true
    cluster_kafka reset >/dev/null 2>&1 || true
  fi
  fault_started=1
  fault_kafka start >/dev/null &
  pids+=($!)
  cluster_kafka start >/dev/null &
  pids+=($!)
fi
secure=0
if [[ -z "${TW_SECURE_DIR:-}" && "${TW_SECURE:-1}" != 0 ]]; then
  secure=1
  if secure_kafka status >/dev/null 2>&1; then
    echo "test.sh: using the running secured broker" >&2
  else
    if [[ "${CI:-}" == "true" ]]; then
      secure_kafka reset >/dev/null 2>&1 || true
    fi
    secure_started=1
    secure_kafka start >/dev/null &
    pids+=($!)
  fi
fi
for pid in "${pids[@]}"; do
  wait "$pid" || { echo "test.sh: a broker of the test suite did not start (see scripts/kafka.sh's output above)" >&2; exit 1; }
done
if [[ $secure == 1 ]]; then
  while IFS='=' read -r key value; do
    export "$key=$value"
  done < <(secure_kafka env)
fi

status=0
# Build every target first (and the binary the scripts below run), so the steps that follow
# can run side by side without building.
cargo test --no-run --all-targets "$@"
export TW_BIN="${TW_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/tidewater}"

# Two lanes, side by side on the brokers started above (every test has a topic prefix and
# group of its own): the fault suite, which spends most of its time waiting for brokers
# to stop and start, then the API, example and console checks; and every other test target.
# The side lane's output is printed when both are done.
side_log="$(mktemp)"
side() {
  local rc=0
  if [[ "${TW_FAULTS:-1}" != 0 ]]; then
    cargo test --no-fail-fast --test faults 2>&1 | tee "$logs_dir/faults.log" || rc=$?
  fi
  # The API against its specification, with a live `serve` (a few minutes at most;
  # TW_SCHEMATHESIS_SECONDS bounds it, 0 skips it).
  if [[ "${TW_SCHEMATHESIS_SECONDS:-120}" != 0 ]]; then
    scripts/schemathesis.sh || rc=$?
  fi
  # The client examples (examples/python, examples/node) with a scheduler of their own
  # (TW_EXAMPLES=0 skips them).
  if [[ "${TW_EXAMPLES:-1}" != 0 ]]; then
    scripts/examples.sh || rc=$?
  fi
  # The web console in a real browser (headless Chromium driven by Playwright), with a
  # scheduler and `serve` of its own (TW_CONSOLE_TEST=0 skips it).
  if [[ "${TW_CONSOLE_TEST:-1}" != 0 ]]; then
    scripts/console-test.sh || rc=$?
  fi
  return "$rc"
}
if (( $# > 0 )); then
  # Arguments for cargo test (a filter, `--test NAME`, `-- --nocapture`): one cargo test
  # with them (the targets they name, or cargo's default ones), then the script checks.
  cargo test --no-fail-fast "$@" 2>&1 | tee "$logs_dir/tests.log" || status=$?
  TW_FAULTS=0 side || status=$?
  exit "$status"
fi
side >"$side_log" 2>&1 &
side_pid=$!

targets=(--lib --bins --benches --examples)
for t in tests/*.rs; do
  name="$(basename "$t" .rs)"
  [[ $name == faults ]] || targets+=(--test "$name")
done
cargo test --no-fail-fast "${targets[@]}" 2>&1 | tee "$logs_dir/tests.log" || status=$?

echo "test.sh: waiting for the fault suite, Schemathesis, the examples and the console test" >&2
side_status=0
wait "$side_pid" || side_status=$?
echo "===== fault suite, Schemathesis, examples, console ====="
cat "$side_log"
rm -f "$side_log"
[[ $side_status == 0 ]] || status=$side_status
exit "$status"
