#!/usr/bin/env bash
# Runs the client examples (examples/python, examples/node) against a running broker and a
# scheduler started here, and checks them: every submitted task gets an outcome with the
# expected status, and every failed task is written to the example's dead-letter log.
# Called by scripts/test.sh.
#
#   scripts/examples.sh
#
# Environment (all optional):
#   TW_BOOTSTRAP_SERVERS  the broker                        (default 127.0.0.1:19092)
#   TW_BIN                the tidewater binary, not built here (default target/debug/tidewater)
#   TW_EXAMPLES_CACHE     where the Python virtual environment is kept
#                         (default ${XDG_CACHE_HOME:-$HOME/.cache}/tidewater/examples)
# The Node example's packages go to examples/node/node_modules (ignored by git).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bootstrap="${TW_BOOTSTRAP_SERVERS:-127.0.0.1:19092}"
bin="${TW_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/tidewater}"
cache="${TW_EXAMPLES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tidewater/examples}"
count=8

say() { printf 'examples.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
[[ -x "$bin" ]] || die "no tidewater binary at $bin (cargo build --bin tidewater, or set TW_BIN)"
for tool in python3 node npm; do
  command -v "$tool" >/dev/null || die "$tool is required (scripts/install-deps.sh)"
done

work="$(mktemp -d)"
scheduler_pid=""
cleanup() {
  if [[ -n $scheduler_pid ]] && kill -0 "$scheduler_pid" 2>/dev/null; then
    kill -TERM "$scheduler_pid" 2>/dev/null || true
    wait "$scheduler_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Dependencies: a virtual environment outside the repository, node_modules from the lock file.
venv="$cache/venv"
if ! cmp -s examples/python/requirements.txt "$venv/requirements.txt" 2>/dev/null; then
  say "installing the Python example's packages into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r examples/python/requirements.txt
  cp examples/python/requirements.txt "$venv/requirements.txt"
fi
# npm's node_modules/.package-lock.json leaves the root package out, so it never equals
# package-lock.json: a copy of the lock file installed last says whether to install.
stamp=examples/node/node_modules/.installed-package-lock.json
if ! cmp -s examples/node/package-lock.json "$stamp" 2>/dev/null; then
  say "installing the Node example's packages into examples/node/node_modules"
  (cd examples/node && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  cp examples/node/package-lock.json "$stamp"
fi

# An isolated setup: topics with a prefix of their own, a function that succeeds and one
# that fails (tried twice, then dead-lettered).
prefix="twex$(date +%s)$RANDOM"
config="$work/tidewater.toml"
cat >"$config" <<TOML
[kafka]
bootstrap_servers = "$bootstrap"
[topics]
prefix = "$prefix"
partitions = 3
[scheduler]
group_id = "$prefix.schedulers"
shutdown_grace = "5s"
[tenants.shop.functions.echo]
executor = { type = "inprocess", handler = "echo" }
on_success = "$prefix.shop.done"
[tenants.shop.functions.fail]
executor = { type = "inprocess", handler = "fail" }
max_attempts = 2
backoff = "200ms"
TOML
queue="$prefix.q.shop"
outcomes="$prefix.shop.done,$prefix.dlq.shop"

"$bin" --config "$config" topics init >/dev/null || die "topics init failed on $bootstrap"
"$bin" --config "$config" run --metrics-listen off >"$work/scheduler.log" 2>&1 &
scheduler_pid=$!
for _ in $(seq 1 600); do
  grep -q "partitions assigned" "$work/scheduler.log" && break
  kill -0 "$scheduler_pid" 2>/dev/null || { tail -n 20 "$work/scheduler.log" >&2; die "the scheduler exited"; }
  sleep 0.1
done
grep -q "partitions assigned" "$work/scheduler.log" || die "the scheduler got no partitions in 60 s"
say "scheduler running on $bootstrap, topic prefix $prefix"

# Every failed task of $1 (submit's expectations) is in the dead-letter log $2, once.
acted_on() {
  python3 - "$1" "$2" <<'PY'
import json, sys
want = {e["id"] for e in map(json.loads, open(sys.argv[1])) if e["expect"] == "failed"}
got = [e["task_id"] for e in map(json.loads, open(sys.argv[2]))]
if sorted(got) != sorted(want):
    sys.exit(f"dead-letter log {sorted(got)} != the failed tasks {sorted(want)}")
PY
}

# run_example NAME SUBMIT... -- OUTCOMES...: submits, consumes, checks.
run_example() {
  local name="$1" expect="$work/$1-expect.jsonl" log="$work/$1-dead-letters.jsonl"
  shift
  local submit=() consume=()
  while [[ $1 != -- ]]; do submit+=("$1"); shift; done
  shift
  consume=("$@")
  say "$name: submitting $count tasks to $queue"
  "${submit[@]}" --bootstrap "$bootstrap" --topic "$queue" --ok-function echo \
    --fail-function fail --count "$count" --id-prefix "$prefix-$name" >"$expect" || return 1
  say "$name: consuming outcomes from $outcomes"
  "${consume[@]}" --bootstrap "$bootstrap" --topics "$outcomes" --group "$prefix.$name-outcomes" \
    --expect "$expect" --dead-letter-log "$log" --timeout 90 || return 1
  acted_on "$expect" "$log"
}

status=0
run_example python "$venv/bin/python" examples/python/submit.py -- \
  "$venv/bin/python" examples/python/outcomes.py || { say "the Python example failed"; status=1; }
run_example node node examples/node/submit.js -- \
  node examples/node/outcomes.js || { say "the Node example failed"; status=1; }

if ! kill -0 "$scheduler_pid" 2>/dev/null; then
  say "the scheduler exited during the run"
  status=1
fi
if [[ $status != 0 ]]; then
  say "last lines of the scheduler's log:"
  tail -n 20 "$work/scheduler.log" >&2
else
  say "ok: both examples got every outcome and acted on every failure"
fi
exit "$status"
