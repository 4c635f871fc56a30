#!/usr/bin/env bash
# Runs Tidewater for real on this machine: a local Apache Kafka, the scheduler with
# examples/demo.toml, and a small workload where tasks succeed, fail and dead-letter.
#
#   scripts/demo.sh          run the demo, then keep the scheduler running (Ctrl-C stops it)
#   scripts/demo.sh --exit   run the demo and stop everything it started
#
# Needs Java 17+ and Maven for the broker (jars come from Maven Central on first use) and
# Rust to build tidewater.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
exit_after=0
[[ "${1:-}" == "--exit" ]] && exit_after=1

config="examples/demo.toml"
export TW_KAFKA_PORT=19092
export TW_BOOTSTRAP_SERVERS="127.0.0.1:$TW_KAFKA_PORT"
state="${XDG_CACHE_HOME:-$HOME/.cache}/tidewater/demo"
mkdir -p "$state"
log="$state/scheduler.log"
bin="$root/target/debug/tidewater"
tw() { "$bin" --config "$config" "$@"; }

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

scheduler_pid=""
serve_pid=""
kafka_started=0
cleanup() {
  if [[ -n "$serve_pid" ]] && kill -0 "$serve_pid" 2>/dev/null; then
    kill -TERM "$serve_pid" 2>/dev/null || true
    wait "$serve_pid" 2>/dev/null || true
  fi
  if [[ -n "$scheduler_pid" ]] && kill -0 "$scheduler_pid" 2>/dev/null; then
    kill -TERM "$scheduler_pid" 2>/dev/null || true
    wait "$scheduler_pid" 2>/dev/null || true
  fi
  if [[ $kafka_started == 1 ]]; then scripts/kafka.sh stop || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "Starting Apache Kafka on $TW_BOOTSTRAP_SERVERS"
if scripts/kafka.sh status >/dev/null 2>&1; then
  echo "already running"
else
  scripts/kafka.sh start >/dev/null
  kafka_started=1
fi

step "Building tidewater"
cargo build --quiet --bin tidewater

step "Creating topics (safe to re-run)"
tw topics init

step "Starting the scheduler (log: $log)"
metrics_port=9464
if (exec 3<>"/dev/tcp/127.0.0.1/$metrics_port") 2>/dev/null; then
  metrics_port=0
fi
"$bin" --config "$config" run --metrics-listen "127.0.0.1:$metrics_port" >"$log" 2>&1 &
scheduler_pid=$!
for _ in $(seq 1 100); do
  grep -q "metrics at" "$log" && break
  sleep 0.1
done
metrics_url="$(sed -n 's/.*metrics at \(http[^ ]*\).*/\1/p' "$log" | head -n1)"

step "Starting the task query API (tidewater serve; log: $state/serve.log)"
"$bin" --config "$config" serve --listen 127.0.0.1:0 --metrics-listen off >"$state/serve.out" 2>"$state/serve.log" &
serve_pid=$!
for _ in $(seq 1 100); do
  grep -q "serving the task API at" "$state/serve.out" 2>/dev/null && break
  sleep 0.1
done
api_url="$(sed -n 's/.*serving the task API at \(http[^ ]*\).*/\1/p' "$state/serve.out" | head -n1)"
echo "API at $api_url"

step "Submitting the demo workload"
run_id="$(date +%s)"
tw submit -t shop -f shout    --id "shout-$run_id"    -p "hello tidewater {n}" -n 20
tw submit -t shop -f checksum --id "checksum-$run_id" -p "payload {n}"         -n 10
tw submit -t shop -f picky    --id "picky-$run_id"    -p "order {n}"           -n 20
tw submit -t shop -f broken   --id "broken-$run_id"   -p "never works"
tw submit -t shop -f ghost    --id "ghost-$run_id"    -p "no such function" --allow-unknown
expected=$((20 + 10 + 20 + 1 + 1))

step "Waiting for outcomes"
for _ in $(seq 1 120); do
  done_count=$(curl -fsS "$metrics_url" 2>/dev/null \
    | awk '/^tidewater_tasks_completed_total/ {s += $NF} END {print s + 0}')
  printf '\r%s of %s tasks finished' "$done_count" "$expected"
  [[ "$done_count" -ge "$expected" ]] && break
  sleep 0.5
done
echo

step "Successes on demo.shop.done (first 5)"
tw events demo.shop.done --idle 2s --brief | grep -- "-$run_id" | head -n 5

step "Failures on demo.shop.failed and on the dead-letter topic demo.dlq.shop"
{ tw events demo.shop.failed --idle 2s --brief; tw events demo.dlq.shop --idle 2s --brief; } \
  | grep -- "-$run_id"

step "Asking the query API (tenant token): failed tasks of this run"
for _ in $(seq 1 50); do
  curl -fsS "$api_url/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
sleep 1
tw tasks list --api "$api_url" --token demo-shop-token --status failed --prefix "picky-$run_id" || true
tw tasks get --api "$api_url" --token demo-shop-token "broken-$run_id" | head -n 20 || true

step "Counters from $metrics_url"
curl -fsS "$metrics_url" | grep -E '^tidewater_tasks_(completed|failed)_total' | sort

cat <<INFO

Where to look:
  metrics          $metrics_url
  web console      $api_url/   (sign in with demo-shop-token)
  task API         $api_url   (tokens in $config; docs/openapi.yaml)
  failed tasks     target/debug/tidewater -c $config tasks list --api $api_url --token demo-shop-token --status failed
  redrive them     target/debug/tidewater -c $config tasks redrive --api $api_url --token demo-shop-token --function broken --dry-run
  scheduler log    $log
  broker log       $(scripts/kafka.sh logs)
  outcomes         target/debug/tidewater -c $config events demo.shop.done
  status events    target/debug/tidewater -c $config events demo.status
  submit more      target/debug/tidewater -c $config submit -t shop -f shout -p hi
INFO

if [[ $exit_after == 1 ]]; then
  step "Stopping"
  exit 0
fi
echo
echo "The scheduler keeps running; press Ctrl-C to stop it (and the broker, if this script started it)."
wait "$scheduler_pid"
