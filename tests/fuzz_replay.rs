//! Replays the fuzz corpora on stable Rust: every file under `fuzz/seeds/<target>/` and
//! `fuzz/regressions/<target>/` goes through the same property the fuzz target checks
//! (`fuzz/src/lib.rs`). Crashes found by fuzzing are committed to `fuzz/regressions/`
//! once fixed, so they stay fixed. Fast: no broker, well under a second.

#[allow(dead_code, clippy::indexing_slicing)]
#[path = "../fuzz/src/lib.rs"]
mod checks;

use std::path::PathBuf;

/// A fuzz target's property.
type Check = fn(&[u8]);

const TARGETS: &[(&str, Check)] = &[
    ("task_record", checks::task_record),
    ("delayed_control", checks::delayed_control),
    ("config_file", checks::config_file),
    ("api_query", checks::api_query),
    ("api_body", checks::api_body),
    ("redrive_body", checks::redrive_body),
    ("commit_metadata", checks::commit_metadata),
];

#[test]
fn fuzz_corpora_replay_without_a_panic() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    for (target, check) in TARGETS {
        let mut seeds = 0;
        for corpus in ["seeds", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(corpus).join(target)) else {
                continue;
            };
            for entry in entries.flatten() {
                let bytes = std::fs::read(entry.path()).unwrap_or_default();
                let name = entry.path().display().to_string();
                let outcome = std::panic::catch_unwind(|| check(&bytes));
                assert!(outcome.is_ok(), "{target}: {name} panicked");
                seeds += 1;
            }
        }
        assert!(seeds > 0, "no seeds for fuzz target {target}");
        replayed += seeds;
    }
    assert!(replayed >= TARGETS.len());
}
