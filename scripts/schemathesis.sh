#!/usr/bin/env bash
# Tests the task API against its specification: Schemathesis (from PyPI) generates
# requests from docs/openapi.yaml and sends them to a live `tidewater serve`, with every
# check on (no 5xx, no undocumented status, no schema violation, no valid request
# refused, no invalid one accepted). Bounded in time; called by scripts/test.sh.
#
#   scripts/schemathesis.sh            # needs TW_BOOTSTRAP_SERVERS (a running broker)
#
# TW_SCHEMATHESIS_SECONDS bounds the run (default 120); TW_SCHEMATHESIS_VENV is where
# Schemathesis is installed (default ~/.cache/tidewater/schemathesis).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
: "${TW_BOOTSTRAP_SERVERS:?set TW_BOOTSTRAP_SERVERS to a running broker}"
seconds="${TW_SCHEMATHESIS_SECONDS:-120}"
venv="${TW_SCHEMATHESIS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/tidewater/schemathesis}"
version="4.32.5"

if [[ ! -x "$venv/bin/schemathesis" ]] || ! "$venv/bin/schemathesis" --version | grep -q "$version"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==$version"
fi

# TW_BIN names a built binary; else it is built here.
if [[ -z "${TW_BIN:-}" ]]; then
  cargo build -q --bin tidewater
fi
bin="${TW_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/tidewater}"

work="$(mktemp -d)"
serve_pid=""
cleanup() {
  [[ -n $serve_pid ]] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

prefix="st$(date +%s)$$"
cat >"$work/tidewater.toml" <<TOML
[kafka]
bootstrap_servers = "$TW_BOOTSTRAP_SERVERS"
[topics]
prefix = "$prefix"
partitions = 1
[api]
tokens = [{ token = "tok-acme", tenant = "acme" }]
[tenants.acme.functions.resize]
executor = { type = "inprocess", handler = "echo" }
TOML

"$bin" --config "$work/tidewater.toml" topics init >/dev/null
"$bin" --config "$work/tidewater.toml" serve --listen 127.0.0.1:0 --metrics-listen off \
  --store "$work/index.db" >"$work/serve.out" 2>"$work/serve.log" &
serve_pid=$!
url=""
for _ in $(seq 1 100); do
  url="$(grep -o 'http://[0-9.:]*' "$work/serve.out" | head -1 || true)"
  [[ -n $url ]] && curl -fsS "$url/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
[[ -n $url ]] || { cat "$work/serve.log" >&2; echo "schemathesis.sh: serve did not start" >&2; exit 1; }

status=0
"$venv/bin/schemathesis" run docs/openapi.yaml \
  --url "$url" \
  -H "Authorization: Bearer tok-acme" \
  --checks all \
  --max-time "$seconds" \
  --workers 2 \
  --seed "${TW_SCHEMATHESIS_SEED:-$RANDOM}" \
  --no-color \
  --suppress-health-check all || status=$?
if ! kill -0 "$serve_pid" 2>/dev/null; then
  echo "schemathesis.sh: tidewater serve exited during the run" >&2
  tail -50 "$work/serve.log" >&2
  status=1
fi
if grep -q "panicked" "$work/serve.log"; then
  echo "schemathesis.sh: tidewater serve logged a panic" >&2
  grep -m5 "panicked" "$work/serve.log" >&2
  status=1
fi
exit "$status"
