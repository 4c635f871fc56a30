#!/usr/bin/env bash
# Runs Tidewater's whole test suite against a real Apache Kafka broker.
#
#   scripts/test.sh [extra cargo test arguments]
#
# Uses the broker named by TW_BOOTSTRAP_SERVERS when set; otherwise starts the local
# broker (scripts/kafka.sh) unless it is already running. Runs every test target
# (tests/fuzz_replay.rs replays the fuzz corpora among them), then Schemathesis against
# docs/openapi.yaml and a live `serve` (scripts/schemathesis.sh), and stops the broker
# it started.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export TW_KAFKA_PORT="${TW_KAFKA_PORT:-19092}"

started=0
cleanup() {
  if [[ $started == 1 ]]; then
    scripts/kafka.sh stop || true
  fi
}
trap cleanup EXIT

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

cargo test --all-targets "$@"

# The API against its specification, with a live `serve` on the same broker (a few
# minutes at most; TW_SCHEMATHESIS_SECONDS bounds it, 0 skips it).
if [[ "${TW_SCHEMATHESIS_SECONDS:-120}" != 0 ]]; then
  scripts/schemathesis.sh
fi
