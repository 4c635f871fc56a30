#!/usr/bin/env bash
# Coverage-guided fuzzing of everything Tidewater reads from outside (cargo-fuzz,
# libFuzzer, nightly Rust). The properties live in fuzz/src/lib.rs; the corpora grow in
# fuzz/corpus/<target>/ (not committed), seeded from fuzz/seeds/<target>/.
#
#   scripts/fuzz.sh list                     the targets
#   scripts/fuzz.sh run TARGET [SECONDS [RUNS]]  fuzz one target (default 60 s; at most RUNS executions)
#   scripts/fuzz.sh all [SECONDS]            fuzz every target in turn
#   scripts/fuzz.sh goal                     every target until 10 million executions
#                                            or one hour, whichever comes first
#   scripts/fuzz.sh replay                   run every seed and regression once
#
# A crash leaves its input in fuzz/artifacts/<target>/; once fixed, copy it to
# fuzz/regressions/<target>/ so that tests/fuzz_replay.rs keeps it fixed (that test
# replays both corpora on stable Rust in every `cargo test`). Record long runs in
# FUZZING.md.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/fuzz"
targets=(task_record delayed_control config_file api_query api_body redrive_body commit_metadata)
# No sanitizer: Tidewater forbids unsafe code, so the panics are what is looked for,
# and a build without a sanitizer runs several times faster. Debug assertions stay on
# (the cargo-fuzz default), so integer overflow panics too.
fuzz=(cargo +nightly fuzz)
opts=(--sanitizer none)

run() {
  local target=$1 seconds=$2 runs=${3:--1}
  mkdir -p "corpus/$target"
  "${fuzz[@]}" run "${opts[@]}" "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -runs="$runs" -max_len=65536 -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1
}

case "${1:-}" in
  list) printf '%s\n' "${targets[@]}" ;;
  run) run "${2:?target}" "${3:-60}" "${4:--1}" ;;
  all) for t in "${targets[@]}"; do run "$t" "${2:-60}"; done ;;
  goal) for t in "${targets[@]}"; do run "$t" 3600 10000000; done ;;
  replay)
    for t in "${targets[@]}"; do
      dirs=("seeds/$t")
      [[ -d "regressions/$t" ]] && dirs+=("regressions/$t")
      "${fuzz[@]}" run "${opts[@]}" "$t" "${dirs[@]}" -- -runs=0
    done
    ;;
  *) sed -n '2,17p' "$0" >&2; exit 2 ;;
esac
