#!/usr/bin/env bash
# Tests the web console in a real browser: headless Chromium (Debian's package) driven by
# Playwright (playwright-core from npm), against a running broker, a scheduler and
# `tidewater serve` started here with a topic prefix of their own. The function `flaky`
# fails until a marker file exists; the browser test signs in, filters, reads logs, stops
# a delayed task, "fixes" the function and redrives. Called by scripts/test.sh.
#
#   scripts/console-test.sh              # needs TW_BOOTSTRAP_SERVERS (a running broker)
#   TW_CONSOLE_SCREENSHOTS=docs/console scripts/console-test.sh   # also save screenshots
#
# Environment (all optional):
#   TW_BOOTSTRAP_SERVERS  the broker                         (default 127.0.0.1:19092)
#   TW_BIN                the tidewater binary, not built here (default target/debug/tidewater)
#   TW_CHROMIUM           the browser                        (default /usr/bin/chromium)
# The test's packages go to tests/console/node_modules (ignored by git).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bootstrap="${TW_BOOTSTRAP_SERVERS:-127.0.0.1:19092}"
bin="${TW_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/tidewater}"
export TW_CHROMIUM="${TW_CHROMIUM:-/usr/bin/chromium}"

say() { printf 'console-test.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
[[ -x "$bin" ]] || die "no tidewater binary at $bin (cargo build --bin tidewater, or set TW_BIN)"
[[ -x "$TW_CHROMIUM" ]] || die "no browser at $TW_CHROMIUM (apt-get install chromium; scripts/install-deps.sh)"
command -v node >/dev/null && command -v npm >/dev/null || die "node and npm are required"

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# npm's own node_modules/.package-lock.json never equals package-lock.json (it leaves the
# root package out), so a copy of the lock file installed last says whether to install.
stamp=tests/console/node_modules/.installed-package-lock.json
if ! cmp -s tests/console/package-lock.json "$stamp" 2>/dev/null; then
  say "installing playwright-core into tests/console/node_modules"
  (cd tests/console && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  cp tests/console/package-lock.json "$stamp"
fi

prefix="twcon$(date +%s)$RANDOM"
marker="$work/fixed"
admin="admin-$RANDOM$RANDOM"
acme="acme-$RANDOM$RANDOM"
globex="globex-$RANDOM$RANDOM"
config="$work/tidewater.toml"
cat >"$config" <<TOML
[kafka]
bootstrap_servers = "$bootstrap"
[topics]
prefix = "$prefix"
partitions = 2
[scheduler]
id = "$prefix-scheduler"
group_id = "$prefix.schedulers"
shutdown_grace = "2s"
[indexer]
store = "$work/index.db"
batch_wait = "100ms"
[api]
listen = "127.0.0.1:0"
tokens = [
  { token = "$admin", admin = true },
  { token = "$acme", tenant = "acme" },
  { token = "$globex", tenant = "globex" },
]
[tenants.acme.functions.flaky]
executor = { type = "command", program = "sh", args = ["-c", "if [ -e '$marker' ]; then printf 'fixed: '; cat; else echo \"broken on attempt \$TW_ATTEMPT\" >&2; exit 1; fi"] }
max_attempts = 2
backoff = "200ms"
[tenants.acme.functions.echo]
executor = { type = "inprocess", handler = "echo" }
[tenants.globex.functions.other]
executor = { type = "inprocess", handler = "fail" }
max_attempts = 1
TOML

"$bin" --config "$config" topics init >/dev/null || die "topics init failed on $bootstrap"
"$bin" --config "$config" run --metrics-listen off >"$work/scheduler.log" 2>&1 &
pids+=($!)
"$bin" --config "$config" serve --metrics-listen off >"$work/serve.out" 2>"$work/serve.log" &
pids+=($!)
url=""
for _ in $(seq 1 300); do
  url="$(grep -o 'http://[0-9.:]*' "$work/serve.out" | head -1 || true)"
  [[ -n $url ]] && curl -fsS "$url/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
[[ -n $url ]] && curl -fsS "$url/readyz" >/dev/null 2>&1 || { tail -20 "$work/serve.log" >&2; die "serve did not start"; }
for _ in $(seq 1 600); do
  grep -q "partitions assigned" "$work/scheduler.log" && break
  sleep 0.1
done
grep -q "partitions assigned" "$work/scheduler.log" || { tail -20 "$work/scheduler.log" >&2; die "the scheduler got no partitions"; }
say "serve at $url, topic prefix $prefix"

post() { curl -fsS -X POST -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' -d "$1" "$url/v1/tasks" >/dev/null; }
for i in 1 2 3 4; do post "{\"tenant\":\"acme\",\"function\":\"flaky\",\"id\":\"flaky-$i\",\"payload\":\"order $i\"}"; done
for i in 1 2 3; do post "{\"tenant\":\"acme\",\"function\":\"echo\",\"id\":\"echo-$i\",\"payload\":\"hello $i\"}"; done
post '{"tenant":"globex","function":"other","id":"globex-1","payload":"x"}'
"$bin" --config "$config" submit -t acme -f flaky --id later-1 --delay 90s -p 'later' >/dev/null

# Wait until the four flaky tasks have failed for good.
for _ in $(seq 1 300); do
  n="$(curl -fsS -H "Authorization: Bearer $admin" "$url/v1/tasks?function=flaky&status=failed" | grep -o '"id":"flaky-' | wc -l || true)"
  [[ $n == 4 ]] && break
  sleep 0.3
done
[[ $n == 4 ]] || die "the flaky tasks did not fail in time ($n of 4)"

status=0
TW_CONSOLE_URL="$url" TW_CONSOLE_ADMIN_TOKEN="$admin" TW_CONSOLE_OTHER_TOKEN="$globex" \
  TW_CONSOLE_MARKER="$marker" TW_CONSOLE_SCHEDULER_ID="$prefix-scheduler" TW_CONSOLE_ARTIFACTS="${TW_CONSOLE_ARTIFACTS:-/tmp}" \
  TW_CONSOLE_SCREENSHOTS="${TW_CONSOLE_SCREENSHOTS:-}" \
  node tests/console/console.test.mjs || status=$?
for pid in "${pids[@]}"; do
  kill -0 "$pid" 2>/dev/null || { say "a tidewater process exited during the test"; status=1; }
done
if grep -q "$admin\|$globex" "$work/serve.log" "$work/scheduler.log"; then
  say "a token appeared in a log"
  status=1
fi
if [[ $status != 0 ]]; then
  say "last lines of serve's log:"; tail -n 20 "$work/serve.log" >&2
  say "last lines of the scheduler's log:"; tail -n 20 "$work/scheduler.log" >&2
fi
exit "$status"
