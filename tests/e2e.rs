//! End-to-end: tasks travel from a queue topic through the real `tidewater run` binary to
//! their destination topics on a real Kafka broker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{TestEnv, task};
use tidewater::codec::{FailureReason, OutcomeStatus, TaskStatus};

const WAIT: Duration = Duration::from_secs(90);

#[test]
fn command_executor_runs_every_task_once_with_its_result() {
    let env = TestEnv::new(
        "cmd",
        r#"
        [tenants.acme.functions.greet]
        executor = { type = "command", program = "sh", args = ["-c", "printf '%s|%s|' \"$TW_TASK_ID\" \"$TW_ATTEMPT\"; cat"] }
        concurrency = 8
        on_success = "{prefix}.done"
        "#,
    );
    env.init_topics();
    let n = 40;
    let tasks = (0..n)
        .map(|i| task(&format!("order-{i}"), "greet", &format!("hello {i}")))
        .collect();
    env.submit("acme", tasks);
    let _s = env.start_scheduler(0);

    let outcomes = env.outcomes(&env.topic("done"), n, WAIT);
    assert_eq!(outcomes.len(), n, "expected {n} success outcomes");
    let mut ids = BTreeSet::new();
    for o in &outcomes {
        assert_eq!(o.status, OutcomeStatus::Succeeded);
        assert_eq!(o.tenant, "acme");
        assert_eq!(o.function, "greet");
        assert_eq!(o.attempts.len(), 1, "{o:?}");
        let i = o.task_id.strip_prefix("order-").unwrap();
        assert_eq!(
            String::from_utf8(o.result.clone().unwrap()).unwrap(),
            format!("order-{i}|1|hello {i}")
        );
        assert_eq!(o.payload, format!("hello {i}").into_bytes());
        assert_eq!(o.source.topic, env.queue("acme"));
        ids.insert(o.task_id.clone());
    }
    assert_eq!(ids.len(), n, "each task exactly once");

    // The status topic tells the same story: running, then succeeded, for every task.
    let statuses = env.statuses(2 * n, WAIT);
    let mut last: BTreeMap<String, TaskStatus> = BTreeMap::new();
    for s in &statuses {
        last.insert(s.task_id.clone(), s.status);
    }
    assert_eq!(last.len(), n);
    assert!(
        last.values().all(|s| *s == TaskStatus::Succeeded),
        "{last:?}"
    );
}

#[test]
fn failing_function_reaches_the_failure_destination_with_every_attempt() {
    let env = TestEnv::new(
        "fail",
        r#"
        [tenants.acme.functions.flaky]
        executor = { type = "command", program = "sh", args = ["-c", "echo \"oops on attempt $TW_ATTEMPT\" >&2; exit 1"] }
        max_attempts = 3
        backoff = "100ms"
        on_failure = "{prefix}.failed"

        [tenants.acme.functions.final]
        executor = { type = "command", program = "sh", args = ["-c", "echo refused >&2; exit 9"], non_retryable_exit_codes = [9] }
        max_attempts = 5

        [tenants.acme.functions.slow]
        executor = { type = "command", program = "sleep", args = ["30"] }
        timeout = "300ms"
        max_attempts = 1
        "#,
    );
    env.init_topics();
    env.submit(
        "acme",
        vec![
            task("f-1", "flaky", "a"),
            task("f-2", "flaky", "b"),
            task("x-1", "final", "c"),
            task("s-1", "slow", "d"),
        ],
    );
    let _s = env.start_scheduler(0);

    let failed = env.outcomes(&env.topic("failed"), 2, WAIT);
    assert_eq!(failed.len(), 2);
    for o in &failed {
        assert_eq!(o.status, OutcomeStatus::Failed);
        assert_eq!(o.reason, Some(FailureReason::Executor));
        assert_eq!(o.attempts.len(), 3, "{o:?}");
        for (i, a) in o.attempts.iter().enumerate() {
            assert_eq!(a.attempt, i as i32 + 1);
            let err = a.error.as_deref().unwrap();
            assert!(err.contains(&format!("oops on attempt {}", i + 1)), "{err}");
        }
        // Backoff: attempts are spaced out.
        assert!(o.attempts[1].started_at >= o.attempts[0].finished_at + 40);
        assert!(o.error.as_deref().unwrap().contains("exit code 1"));
    }

    // Without on_failure, failures go to the tenant's dead-letter topic.
    let dlq = env.outcomes(&env.dlq("acme"), 2, WAIT);
    let by_id: BTreeMap<_, _> = dlq.iter().map(|o| (o.task_id.as_str(), o)).collect();
    let x = by_id["x-1"];
    assert_eq!(x.reason, Some(FailureReason::NonRetryable));
    assert_eq!(x.attempts.len(), 1, "a non-retryable exit code is final");
    assert!(x.error.as_deref().unwrap().contains("refused"));
    let s = by_id["s-1"];
    assert_eq!(s.reason, Some(FailureReason::Timeout));
    assert!(s.error.as_deref().unwrap().contains("timed out"));
}

#[test]
fn bad_input_fails_with_a_reason_and_tasks_behind_it_still_run() {
    let env = TestEnv::new(
        "bad",
        r#"
        [tenants.acme.functions.echo]
        executor = { type = "inprocess", handler = "echo" }
        on_success = "{prefix}.done"
        max_payload_bytes = 100
        "#,
    );
    env.init_topics();
    let q = env.queue("acme");
    let json = ("content-type", "application/json");
    // Everything on one partition, in this order: bad records sit between good ones.
    env.produce_raw(
        &q,
        &[
            (
                Some("k"),
                br#"{"id":"good-1","function":"echo","payload":"one"}"#.to_vec(),
                vec![json],
            ),
            (Some("k"), b"\x01\x02 not a task".to_vec(), vec![]),
            (
                Some("k"),
                br#"{"id":"good-2","function":"echo","payload":"two"}"#.to_vec(),
                vec![],
            ),
            (
                Some("k"),
                br#"{"id":"unknown-1","function":"nope","payload":"x"}"#.to_vec(),
                vec![json],
            ),
            (
                Some("k"),
                br#"{"id":"good-3","function":"echo","payload":"three"}"#.to_vec(),
                vec![json],
            ),
            (
                Some("k"),
                format!(
                    r#"{{"id":"big-1","function":"echo","payload":"{}"}}"#,
                    "x".repeat(500)
                )
                .into_bytes(),
                vec![json],
            ),
            (
                Some("k"),
                br#"{"id":"wrong-tenant","tenant":"other","function":"echo"}"#.to_vec(),
                vec![json],
            ),
            (
                Some("k"),
                br#"{"id":"good-4","function":"echo","payload":"four"}"#.to_vec(),
                vec![("content-type", "application/json")],
            ),
            (Some("k"), b"{\"function\": ".to_vec(), vec![json]),
            (
                Some("k"),
                br#"{"id":"good-5","function":"echo","payload":{"n":5}}"#.to_vec(),
                vec![],
            ),
        ],
    );
    let _s = env.start_scheduler(0);

    let done = env.outcomes(&env.topic("done"), 5, WAIT);
    let results: BTreeMap<String, String> = done
        .iter()
        .map(|o| {
            (
                o.task_id.clone(),
                String::from_utf8(o.result.clone().unwrap()).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        results,
        BTreeMap::from([
            ("good-1".to_string(), "one".to_string()),
            ("good-2".to_string(), "two".to_string()),
            ("good-3".to_string(), "three".to_string()),
            ("good-4".to_string(), "four".to_string()),
            ("good-5".to_string(), r#"{"n":5}"#.to_string()),
        ])
    );

    let failed = env.outcomes(&env.dlq("acme"), 5, WAIT);
    assert_eq!(failed.len(), 5, "{failed:#?}");
    let reasons: BTreeMap<i64, (FailureReason, String, Vec<u8>)> = failed
        .iter()
        .map(|o| {
            assert_eq!(o.status, OutcomeStatus::Failed);
            assert!(o.attempts.is_empty(), "bad input never runs");
            (
                o.source.offset,
                (o.reason.unwrap(), o.task_id.clone(), o.payload.clone()),
            )
        })
        .collect();
    let offsets: Vec<i64> = reasons.keys().copied().collect();
    let first = offsets[0];
    assert_eq!(
        offsets,
        vec![first, first + 2, first + 4, first + 5, first + 7]
    );
    let r = |i: usize| &reasons[&offsets[i]];
    assert_eq!(r(0).0, FailureReason::Malformed);
    assert_eq!(r(0).1, "k", "undecodable input is named by its key");
    assert_eq!(
        r(0).2,
        b"\x01\x02 not a task",
        "the raw value is kept, not lost"
    );
    assert_eq!(r(1).0, FailureReason::UnknownFunction);
    assert_eq!(r(1).1, "unknown-1");
    assert_eq!(r(2).0, FailureReason::PayloadTooLarge);
    assert_eq!(r(2).1, "big-1");
    assert_eq!(r(3).0, FailureReason::TenantMismatch);
    assert_eq!(r(4).0, FailureReason::Malformed);
    let err = failed
        .iter()
        .find(|o| o.reason == Some(FailureReason::PayloadTooLarge))
        .unwrap()
        .error
        .clone()
        .unwrap();
    assert!(
        err.contains("500 bytes") && err.contains("100 bytes"),
        "{err}"
    );
}

#[test]
fn stopping_and_killing_the_scheduler_mid_run_loses_no_task() {
    let env = TestEnv::new(
        "restart",
        r#"
        [scheduler]
        shutdown_grace = "20s"
        commit_interval = "200ms"

        [tenants.acme.functions.work]
        executor = { type = "command", program = "sh", args = ["-c", "sleep 0.05; cat"] }
        concurrency = 6
        on_success = "{prefix}.done"
        "#,
    );
    env.init_topics();
    let n = 300;
    env.submit(
        "acme",
        (0..n)
            .map(|i| task(&format!("w-{i}"), "work", &i.to_string()))
            .collect(),
    );

    // First run: stopped with SIGTERM part-way; it must drain and exit 0.
    let mut first = env.start_scheduler(0);
    let seen = env.outcomes(&env.topic("done"), 60, WAIT);
    assert!(
        seen.len() >= 60,
        "first run made no progress:\n{}",
        first.log_text()
    );
    let status = first.terminate(Duration::from_secs(60));
    assert!(
        status.success(),
        "SIGTERM must exit 0, got {status:?}\n{}",
        first.log_text()
    );
    let after_first = env
        .outcomes(&env.topic("done"), n, Duration::from_secs(3))
        .len();
    assert!(
        after_first < n,
        "the first run finished everything; the test needs a bigger backlog"
    );

    // Second run: killed with SIGKILL part-way, no chance to commit.
    let mut second = env.start_scheduler(1);
    let target = after_first + 40;
    let seen = env.outcomes(&env.topic("done"), target, WAIT);
    assert!(
        seen.len() >= target,
        "second run made no progress:\n{}",
        second.log_text()
    );
    second.kill9();

    // Third run completes the rest.
    let third = env.start_scheduler(2);
    let deadline = std::time::Instant::now() + WAIT;
    let mut ids = BTreeSet::new();
    let mut total = 0;
    while std::time::Instant::now() < deadline {
        let all = env.outcomes(&env.topic("done"), usize::MAX, Duration::from_secs(3));
        total = all.len();
        ids = all.iter().map(|o| o.task_id.clone()).collect();
        if ids.len() == n {
            break;
        }
    }
    assert_eq!(
        ids.len(),
        n,
        "every task needs a success outcome\n{}",
        third.log_text()
    );
    // At-least-once: re-runs are bounded by what was in flight or uncommitted when the
    // second scheduler was killed (concurrency 6, commits every 200 ms).
    let duplicates = total - n;
    assert!(
        duplicates <= 100,
        "{duplicates} duplicate outcomes is more than in-flight work explains"
    );
}

#[test]
fn each_attempts_output_is_published_to_the_log_topic() {
    let env = TestEnv::new(
        "logs",
        r#"
        [scheduler]
        max_log_bytes = 64

        [tenants.acme.functions.chatty]
        executor = { type = "command", program = "sh", args = ["-c", "echo \"out of $TW_TASK_ID\"; echo \"err of $TW_TASK_ID\" >&2; head -c 500 /dev/zero | tr '\\0' x >&2"] }
        on_success = "{prefix}.done"
        "#,
    );
    env.init_topics();
    env.submit("acme", vec![task("talk-1", "chatty", "")]);
    let _s = env.start_scheduler(0);
    assert_eq!(env.outcomes(&env.topic("done"), 1, WAIT).len(), 1);

    let logs: Vec<tidewater::codec::TaskLog> = env
        .read(&tidewater::names::topics::logs(&env.prefix), 2, WAIT)
        .into_iter()
        .map(|(_, v)| tidewater::codec::decode_task_log(&v).unwrap())
        .collect();
    assert_eq!(logs.len(), 2, "{logs:?}");
    let out = logs
        .iter()
        .find(|l| l.stream == tidewater::codec::LogStream::Stdout)
        .unwrap();
    assert_eq!(out.task_id, "talk-1");
    assert_eq!(out.attempt, 1);
    assert_eq!(out.data, b"out of talk-1\n");
    assert!(!out.truncated);
    let err = logs
        .iter()
        .find(|l| l.stream == tidewater::codec::LogStream::Stderr)
        .unwrap();
    assert!(err.data.starts_with(b"err of talk-1\n"));
    assert_eq!(err.data.len(), 64, "bounded by max_log_bytes");
    assert!(err.truncated);
}

/// A scheduler killed mid-transaction leaves its offsets pending until the broker ends that
/// transaction; the next owner reads the previous owner's list of finished tasks only then.
#[test]
fn a_new_owner_waits_out_an_open_transaction_on_its_offsets_and_skips_finished_tasks() {
    let env = TestEnv::with_partitions(
        "takeover",
        r#"
        [scheduler]
        delivery = "exactly_once"

        [tenants.acme.functions.work]
        executor = { type = "command", program = "cat" }
        concurrency = 4
        on_success = "{prefix}.done"
        "#,
        1,
    );
    env.init_topics();
    let n = 20;
    env.submit(
        "acme",
        (0..n)
            .map(|i| task(&format!("k-{i:02}"), "work", "x"))
            .collect(),
    );
    // The previous owner: a transactional producer of the scheduler group.
    let queue = env.queue("acme");
    let previous = common::GroupTransactions::new("previous", &env.config.group_id());
    // Its last commit: tasks 0-4 done, and 7, 9 and 10 above them.
    previous.begin();
    previous.add_offset(&queue, 5, "tw1:7,9-10");
    previous.commit();
    // Its next transaction, open when it died: it would have moved the offset to 12.
    previous.begin();
    previous.add_offset(&queue, 12, "tw1:15");

    let s = env.start_scheduler(0);
    let deadline = Instant::now() + WAIT;
    while !s
        .log_text()
        .contains("cannot read the committed offsets yet")
    {
        assert!(
            Instant::now() < deadline,
            "the new owner never reported the offsets held by an open transaction:\n{}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        env.outcomes(&env.topic("done"), 1, Duration::from_secs(3))
            .is_empty(),
        "a task ran while the committed offsets were pending"
    );
    previous.abort();

    let want: BTreeSet<String> = (5..n)
        .filter(|i| ![7, 9, 10].contains(i))
        .map(|i| format!("k-{i:02}"))
        .collect();
    let ids = env.outcome_ids(&env.topic("done"), want.len(), WAIT);
    assert_eq!(ids, want, "{}", s.log_text());
    // Nothing more comes: no task the previous owner finished runs again.
    std::thread::sleep(Duration::from_secs(3));
    let all = env.outcomes(&env.topic("done"), usize::MAX, Duration::from_secs(3));
    assert_eq!(all.len(), want.len(), "{}", s.log_text());
    assert!(
        s.log_text().contains("committed offsets read"),
        "{}",
        s.log_text()
    );
}

/// Slow and fast tasks alternating in one partition (`n` of each), the slow function's
/// settings in `slow`: with the slow ones waiting, each finished fast task is a range of
/// its own above the commit point, more than the commit metadata takes.
fn slow_and_fast(
    name: &str,
    slow: &str,
    n: usize,
    spill_after: Option<usize>,
) -> (TestEnv, BTreeSet<String>) {
    let spill_after = spill_after.map_or_else(String::new, |n| format!("spill_after = {n}"));
    let env = TestEnv::with_partitions(
        name,
        &format!(
            r#"
            [scheduler]
            delivery = "exactly_once"
            {spill_after}
            shutdown_grace = "60s"

            [tenants.acme.functions.slow]
            {slow}
            concurrency = 1
            on_success = "{{prefix}}.done"

            [tenants.acme.functions.fast]
            executor = {{ type = "command", program = "true" }}
            concurrency = 16
            on_success = "{{prefix}}.done"
            "#
        ),
        1,
    );
    env.init_topics();
    let tasks: Vec<_> = (0..n)
        .flat_map(|i| {
            [
                task(&format!("s-{i:04}"), "slow", "x"),
                task(&format!("f-{i:04}"), "fast", "x"),
            ]
        })
        .collect();
    let ids: BTreeSet<String> = tasks.iter().map(|t| t.id.clone()).collect();
    env.submit("acme", tasks);
    (env, ids)
}

/// A file whose existence keeps the slow function's tasks running.
struct Gate {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl Gate {
    fn closed() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("closed");
        std::fs::write(&path, "").unwrap();
        Self { _dir: dir, path }
    }

    /// A function executor whose tasks run until the gate opens.
    fn executor(&self) -> String {
        format!(
            r#"executor = {{ type = "command", program = "sh", args = ["-c", "while [ -e '{}' ]; do sleep 0.1; done"] }}"#,
            self.path.display()
        )
    }

    fn open(&self) {
        std::fs::remove_file(&self.path).unwrap();
    }
}

/// Waits until `s` holds outcomes back, and checks that some, not all, are out then.
fn wait_until_held(env: &TestEnv, s: &common::SchedulerProcess, n: usize) {
    let deadline = Instant::now() + WAIT;
    while !s.log_text().contains("outcomes held back") {
        assert!(
            Instant::now() < deadline,
            "nothing was held back:\n{}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let published = env
        .outcomes(&env.topic("done"), n, Duration::from_secs(5))
        .len();
    assert!(
        published > 100 && published < n,
        "{published} fast outcomes published (all {n} cannot fit)"
    );
}

/// Fast tasks finishing far above a slow one make more ranges of finished offsets than a
/// partition's commit metadata takes. Their outcomes wait until they fit; none is left
/// out of the metadata, so after `kill -9` none runs again.
#[test]
fn outcomes_that_would_not_fit_the_commit_metadata_wait_and_a_kill_duplicates_none() {
    let gate = Gate::closed();
    let n = 1500;
    let (env, ids) = slow_and_fast("metafit", &gate.executor(), n, Some(0));
    let mut first = env.start_scheduler(0);
    wait_until_held(&env, &first, n);
    first.kill9();
    // The slow function is fast now: everything finishes, each task once.
    gate.open();
    let second = env.start_scheduler(1);
    env.assert_one_outcome_each(&env.topic("done"), &ids, Duration::from_secs(180), || {
        second.log_digest()
    });
}

/// The same slow and fast functions with the default `spill_after` (100 tasks with
/// exactly-once): the slow function's backlog goes to its overflow queue instead of
/// waiting between finished tasks, so the list of finished offsets stays short and no
/// fast outcome waits for room in the commit metadata.
#[test]
fn by_default_a_slow_backlog_spills_before_fast_outcomes_wait_for_the_commit_metadata() {
    let gate = Gate::closed();
    let n = 1500;
    let (env, ids) = slow_and_fast("metaspill", &gate.executor(), n, None);
    let s = env.start_scheduler(0);
    let fast: BTreeSet<String> = ids
        .iter()
        .filter(|i| i.starts_with("f-"))
        .cloned()
        .collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let out: BTreeSet<String> = env
            .outcomes(&env.topic("done"), usize::MAX, Duration::from_secs(2))
            .into_iter()
            .map(|o| o.task_id)
            .collect();
        assert!(
            !out.iter().any(|i| i.starts_with("s-")),
            "a gated slow task finished"
        );
        if out == fast {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} fast outcomes while the slow function holds its first task\n{}",
            out.len(),
            s.log_digest()
        );
    }
    let log = s.log_text();
    assert!(log.contains("function spills"), "{}", s.log_digest());
    assert!(!log.contains("outcomes held back"), "{}", s.log_digest());
    // Open the gate: the slow tasks run, from memory and from the overflow queue, once.
    gate.open();
    env.assert_one_outcome_each(&env.topic("done"), &ids, Duration::from_secs(180), || {
        s.log_digest()
    });
}

/// A scheduler stopping with outcomes held back and nothing running does not wait out
/// its shutdown grace for tasks that will not run: the held tasks run again on the next
/// scheduler, once each.
#[test]
fn a_stop_gives_held_back_outcomes_up_and_they_run_again_once() {
    let n = 1500;
    // One slow task a minute: the others wait for the rate, none running.
    let (env, ids) = slow_and_fast(
        "metastop",
        r#"executor = { type = "command", program = "true" }
            rate = 0.016"#,
        n,
        Some(0),
    );
    let mut first = env.start_scheduler(0);
    wait_until_held(&env, &first, n);
    let stopping = Instant::now();
    let status = first.terminate(Duration::from_secs(90));
    assert!(status.success(), "{status:?}\n{}", first.log_text());
    assert!(
        stopping.elapsed() < Duration::from_secs(30),
        "the stop took {:?} (grace 60 s)\n{}",
        stopping.elapsed(),
        first.log_text()
    );
    assert!(
        first
            .log_text()
            .contains("outcomes held back are not published"),
        "{}",
        first.log_text()
    );
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    std::fs::write(&env.config_path, text.replace("rate = 0.016", "")).unwrap();
    let second = env.start_scheduler(1);
    env.assert_one_outcome_each(&env.topic("done"), &ids, Duration::from_secs(180), || {
        second.log_digest()
    });
}
