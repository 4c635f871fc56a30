#!/usr/bin/env bash
# Draws BENCHMARKS.md's charts from the saved output of the throughput and latency benches.
#
#   scripts/kafka.sh start
#   cargo bench --bench throughput | tee target/bench-throughput.txt
#   cargo bench --bench latency    | tee target/bench-latency.txt
#   scripts/bench-chart.sh [THROUGHPUT_OUTPUT LATENCY_OUTPUT [OUT_DIR]]
#
# Defaults: target/bench-throughput.txt, target/bench-latency.txt, docs/benchmarks.
# matplotlib is installed on first use into a virtualenv under ~/.cache/tidewater.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
throughput="${1:-$root/target/bench-throughput.txt}"
latency="${2:-$root/target/bench-latency.txt}"
out="${3:-$root/docs/benchmarks}"
venv="${XDG_CACHE_HOME:-$HOME/.cache}/tidewater/chart-venv"

for f in "$throughput" "$latency"; do
  [[ -f "$f" ]] || { echo "bench-chart.sh: $f not found (see the usage at the top of this script)" >&2; exit 1; }
done
if ! "$venv/bin/python" -c "import matplotlib" >/dev/null 2>&1; then
  echo "bench-chart.sh: installing matplotlib into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet matplotlib
fi
exec "$venv/bin/python" "$root/scripts/bench-chart.py" "$throughput" "$latency" "$out"
