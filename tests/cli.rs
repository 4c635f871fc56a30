//! The `tidewater` command as a user runs it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::TestEnv;

fn tidewater(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tidewater"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn config_check_names_the_field_at_fault() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"
[tenants.acme.functions.f]
executor = { type = "command", program = "cat" }
"#;
    let path = dir.path().join("c.toml");
    std::fs::write(&path, good).unwrap();
    let out = tidewater(&["config", "check", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 tenants, 1 functions"));

    let cases = [
        ("concurrency = 0", "concurrency"),
        ("timeout = \"0s\"", "tenants.acme.functions.f.timeout"),
        ("timeout = \"later\"", "timeout"),
        ("max_attempts = -1", "max_attempts"),
        ("colour = \"blue\"", "colour"),
        (
            "on_failure = \"has space\"",
            "tenants.acme.functions.f.on_failure",
        ),
        ("queue = \"mine\"", "queue"),
    ];
    for (line, needle) in cases {
        std::fs::write(&path, format!("{good}{line}\n")).unwrap();
        let out = tidewater(&["config", "check", path.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "`{line}` was accepted");
        assert!(
            err.contains(needle),
            "error for `{line}` does not name `{needle}`: {err}"
        );
    }
    let out = tidewater(&["config", "check", "/nonexistent.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.toml"));
}

#[test]
fn help_explains_every_command() {
    let out = tidewater(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["run", "topics", "submit", "config", "events"] {
        assert!(text.contains(cmd), "--help lacks {cmd}:\n{text}");
    }
    let out = tidewater(&["submit", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("--count") && text.contains("--payload"),
        "{text}"
    );
}

#[test]
fn topics_init_is_safe_to_rerun_and_submit_reports_progress() {
    let env = TestEnv::new(
        "cli",
        r#"
        [tenants.acme.functions.f]
        executor = { type = "inprocess", handler = "echo" }
        queue = "exclusive"
        on_success = "{prefix}.done"
        "#,
    );
    let out = env.cli(&["topics", "init"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Queues, status, logs, control and destinations.
    assert!(text.contains("12 created, 0 already there"), "{text}");
    assert!(
        text.contains(&format!("created  {}.q.acme.f", env.prefix)),
        "{text}"
    );
    let out = env.cli(&["topics", "init"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("0 created, 12 already there"), "{text}");

    let out = env.cli(&[
        "submit", "-t", "acme", "-f", "f", "-p", "n={n}", "--count", "2500",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("submitted 2500 tasks to") && stdout.contains("0 failed"),
        "{stdout}"
    );
    assert!(
        stderr.contains("2500/2500 (100%)"),
        "no progress shown: {stderr}"
    );
    // They really are on the exclusive queue.
    let records = env.read(
        &format!("{}.q.acme.f", env.prefix),
        2500,
        Duration::from_secs(30),
    );
    assert_eq!(records.len(), 2500);

    let out = env.cli(&["submit", "-t", "acme", "-f", "missing", "-p", "x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no function `missing`"));
    let out = env.cli(&["submit", "-t", "nobody", "-f", "f"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("tenant `nobody`"));
}

#[test]
fn run_refuses_to_start_without_its_topics() {
    let env = TestEnv::new(
        "notopics",
        r#"
        [tenants.acme.functions.f]
        executor = { type = "inprocess", handler = "echo" }
        "#,
    );
    let out = env.cli(&["run"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tidewater topics init") && err.contains(&env.queue("acme")),
        "{err}"
    );
}

#[test]
fn events_shows_what_an_open_transaction_holds_back_only_when_asked() {
    use rdkafka::producer::{BaseRecord, Producer};
    let env = TestEnv::new(
        "cliopen",
        r#"
        [tenants.acme.functions.f]
        executor = { type = "inprocess", handler = "echo" }
        on_success = "{prefix}.done"
        "#,
    );
    let out = env.cli(&["topics", "init"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = env.topic("done");
    let producer = common::transactional_producer("cliopen");
    producer.begin_transaction().unwrap();
    producer
        .send(
            BaseRecord::<str, str>::to(&done)
                .key("held-1")
                .payload("held back")
                .partition(0),
        )
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();

    let lines = |args: &[&str]| common::json_lines::<serde_json::Value>(&env.cli(args));
    // A read_committed reader stops before the open transaction's record.
    let committed = lines(&["events", &done, "--idle", "3s"]);
    assert!(committed.is_empty(), "{committed:?}");
    // Asked for, the open transaction's record is shown, with where it is.
    let all = lines(&["events", &done, "--idle", "3s", "--uncommitted"]);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["value"], "held back", "{all:?}");
    assert_eq!(all[0]["_partition"], 0);
    assert_eq!(all[0]["_offset"], 0);

    producer
        .commit_transaction(Duration::from_secs(30))
        .unwrap();
    let committed = lines(&["events", &done, "--idle", "3s"]);
    assert_eq!(committed.len(), 1, "{committed:?}");
}
