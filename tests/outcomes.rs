//! Outcome delivery on a real broker: exactly one terminal outcome per task for
//! `read_committed` consumers, even when the scheduler is killed again and again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{TestEnv, reader_on, task};
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use tidewater::codec::TaskStatus;

const WAIT: Duration = Duration::from_secs(180);

#[test]
fn killing_the_scheduler_repeatedly_never_duplicates_an_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs.log");
    let env = TestEnv::new(
        "eos",
        &format!(
            r#"
            [scheduler]
            delivery = "exactly_once"

            [tenants.acme.functions.work]
            # Logs each execution, then takes 0-40 ms: completions come out of order.
            executor = {{ type = "command", program = "sh", args = ["-c", "echo \"$TW_TASK_ID\" >> {}; sleep 0.0$(( $(od -An -N1 -tu1 /dev/urandom) % 5 ))"] }}
            concurrency = 16
            on_success = "{{prefix}}.done"
            "#,
            runs.display()
        ),
    );
    env.init_topics();
    let n = 3000;
    env.submit(
        "acme",
        (0..n)
            .map(|i| task(&format!("e-{i}"), "work", ""))
            .collect(),
    );

    // Three runs killed with SIGKILL part-way, then one that finishes.
    let mut run = 0;
    for target in [400, 1200, 2000] {
        let mut s = env.start_scheduler(run);
        run += 1;
        let deadline = Instant::now() + WAIT;
        loop {
            let executed = std::fs::read_to_string(&runs)
                .map(|t| t.lines().count())
                .unwrap_or(0);
            if executed >= target {
                break;
            }
            assert!(
                Instant::now() < deadline && s.is_running(),
                "run {run} stalled or exited\n{}",
                s.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s.kill9();
    }
    let last = env.start_scheduler(run);

    let deadline = Instant::now() + WAIT;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    while Instant::now() < deadline {
        counts.clear();
        for o in env.outcomes(&env.topic("done"), usize::MAX, Duration::from_secs(3)) {
            *counts.entry(o.task_id).or_default() += 1;
        }
        if counts.len() == n {
            break;
        }
    }
    assert_eq!(
        counts.len(),
        n,
        "every task has its outcome\n{}",
        last.log_text()
    );
    let doubled: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        doubled.is_empty(),
        "outcomes seen more than once: {doubled:?}"
    );

    // Executions were repeated (the kills cut work off): that is at-least-once execution,
    // and the outcomes above are still exactly once.
    let executions = std::fs::read_to_string(&runs).unwrap().lines().count();
    assert!(executions >= n);
    eprintln!(
        "{n} tasks, {executions} executions, {} outcomes",
        counts.values().sum::<usize>()
    );

    // The status topic's terminal events are exactly once too.
    let mut terminal: BTreeMap<String, usize> = BTreeMap::new();
    for s in env.statuses(usize::MAX, Duration::from_secs(5)) {
        if s.status == tidewater::codec::TaskStatus::Succeeded {
            *terminal.entry(s.task_id).or_default() += 1;
        }
    }
    assert_eq!(terminal.len(), n);
    assert!(
        terminal.values().all(|c| *c == 1),
        "a task has two terminal status events"
    );
}

fn now_ms() -> i64 {
    tidewater::clock::now_ms()
}

#[test]
fn a_failing_task_is_retried_through_a_delay_topic_without_blocking_its_partition() {
    let env = TestEnv::with_partitions(
        "retry",
        r#"
        [tenants.acme.functions.flaky]
        # Fails on attempts 1 and 2, succeeds on 3.
        executor = { type = "command", program = "sh", args = ["-c", "[ \"$TW_ATTEMPT\" -ge 3 ] || { echo \"not yet ($TW_ATTEMPT)\" >&2; exit 1; }; echo done"] }
        max_attempts = 5
        backoff = "1s"
        on_success = "{prefix}.done"

        [tenants.acme.functions.quick]
        executor = { type = "inprocess", handler = "echo" }
        on_success = "{prefix}.done"
        "#,
        1,
    );
    env.init_topics();
    let mut tasks = vec![task("flaky-1", "flaky", "x")];
    tasks.extend((0..50).map(|i| task(&format!("q-{i}"), "quick", "y")));
    env.submit("acme", tasks);
    let _s = env.start_scheduler(0);

    let done = env.outcomes(&env.topic("done"), 51, WAIT);
    assert_eq!(done.len(), 51);
    let flaky: Vec<_> = done.iter().filter(|o| o.task_id == "flaky-1").collect();
    assert_eq!(flaky.len(), 1, "one success outcome");
    let a = &flaky[0].attempts;
    assert_eq!(a.len(), 3, "{a:?}");
    assert!(a[0].error.as_deref().unwrap().contains("not yet (1)"));
    assert!(a[1].error.as_deref().unwrap().contains("not yet (2)"));
    assert!(a[2].error.is_none());
    let gap1 = a[1].started_at - a[0].finished_at;
    let gap2 = a[2].started_at - a[1].finished_at;
    // backoff 1s, then 2s, each with jitter between half and all of it (the upper bounds
    // leave room for a busy machine).
    assert!((450..=3000).contains(&gap1), "first gap {gap1} ms");
    assert!((950..=5000).contains(&gap2), "second gap {gap2} ms");
    assert!(gap2 >= gap1, "gaps grow: {gap1} then {gap2}");
    // The tasks behind it in the same partition did not wait for its retries.
    let quick_last = done
        .iter()
        .filter(|o| o.function == "quick")
        .map(|o| o.finished_at)
        .max()
        .unwrap();
    assert!(
        quick_last < a[1].started_at,
        "quick tasks waited behind the retrying one"
    );
    // It went through a delay topic: its status history says retrying twice.
    let retrying = env
        .statuses(usize::MAX, Duration::from_secs(3))
        .into_iter()
        .filter(|s| s.task_id == "flaky-1" && s.status == tidewater::codec::TaskStatus::Retrying)
        .count();
    assert_eq!(retrying, 2);
    let delayed = env.read(&env.topic("delay.1s"), 2, Duration::from_secs(10));
    assert_eq!(
        delayed.len(),
        2,
        "both retries waited in the 1s delay topic"
    );
}

#[test]
fn a_failure_sent_to_a_function_runs_the_compensation() {
    let env = TestEnv::new(
        "comp",
        r#"
        [tenants.shop.functions.charge]
        executor = { type = "command", program = "sh", args = ["-c", "echo card declined >&2; exit 3"] }
        max_attempts = 1
        on_failure = "function:refund"

        [tenants.shop.functions.refund]
        executor = { type = "command", program = "cat" }
        on_success = "{prefix}.refunds"
        "#,
    );
    env.init_topics();
    env.submit("shop", vec![task("order-7", "charge", r#"{"amount": 42}"#)]);
    let _s = env.start_scheduler(0);

    let refunds = env.outcomes(&env.topic("refunds"), 1, WAIT);
    assert_eq!(refunds.len(), 1);
    let r = &refunds[0];
    assert_eq!(r.task_id, "order-7.refund");
    assert_eq!(
        r.task_headers.get("tw-compensates").map(String::as_str),
        Some("order-7")
    );
    // The refund function received the failure event as its payload (JSON).
    let event: serde_json::Value = serde_json::from_slice(r.result.as_deref().unwrap()).unwrap();
    assert_eq!(event["task_id"], "order-7");
    assert_eq!(event["status"], "failed");
    assert_eq!(event["payload"], r#"{"amount": 42}"#);
    assert!(event["error"].as_str().unwrap().contains("card declined"));
}

#[test]
fn delayed_tasks_run_no_earlier_than_asked_and_old_ones_expire() {
    let env = TestEnv::new(
        "delay",
        r#"
        [tenants.acme.functions.later]
        executor = { type = "inprocess", handler = "echo" }
        on_success = "{prefix}.done"

        [tenants.acme.functions.fresh]
        executor = { type = "inprocess", handler = "echo" }
        # Room for the scheduler's start on a loaded machine; "old" is a minute old.
        max_event_age = "10s"
        on_success = "{prefix}.done"
        "#,
    );
    env.init_topics();
    let _s = env.start_scheduler(0);
    // Times are asked of a running scheduler (its start on a loaded machine is not what
    // this measures): a first task's outcome says it is.
    env.submit("acme", vec![task("warm-up", "fresh", "w")]);
    env.outcomes(&env.topic("done"), 1, WAIT);
    let now = now_ms();
    let mut t3 = task("in-3s", "later", "a");
    t3.not_before = Some(now + 3_000);
    let mut t12 = task("in-12s", "later", "b");
    t12.not_before = Some(now + 12_000);
    let mut old = task("old", "fresh", "c");
    old.submitted_at = Some(now - 60_000);
    let young = task("young", "fresh", "d");
    env.submit("acme", vec![t3, t12, old, young]);

    let done = env.outcomes(&env.topic("done"), 4, WAIT);
    let by: std::collections::BTreeMap<_, _> =
        done.iter().map(|o| (o.task_id.as_str(), o)).collect();
    // Tolerance: not before the time asked, and at most 3 s after it.
    for (id, at) in [("in-3s", now + 3_000), ("in-12s", now + 12_000)] {
        let started = by[id].attempts[0].started_at;
        eprintln!("{id} started {} ms after its time", started - at);
        assert!(started >= at, "{id} started {} ms early", at - started);
        assert!(
            started <= at + 3_000,
            "{id} started {} ms late",
            started - at
        );
    }
    assert!(by.contains_key("young"));
    let expired = env.outcomes(&env.dlq("acme"), 1, WAIT);
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].task_id, "old");
    assert_eq!(expired[0].status, tidewater::codec::OutcomeStatus::Expired);
    assert!(expired[0].attempts.is_empty(), "an expired task never runs");
}

/// Produces a stop request the way `tidewater tasks stop` (through the API) does.
fn request_stop(env: &TestEnv, tenant: &str, task_id: &str) {
    let req = tidewater::codec::StopRequest {
        task_id: task_id.into(),
        tenant: tenant.into(),
        requested_at: now_ms(),
        requested_by: "test".into(),
    };
    let value = tidewater::codec::encode_stop_request(&req).unwrap();
    let topic = tidewater::names::topics::control(&env.prefix);
    env.produce_raw(
        &topic,
        &[(
            Some(task_id),
            value,
            vec![("content-type", "application/avro")],
        )],
    );
}

#[test]
fn stop_requests_cancel_a_running_task_and_skip_a_delayed_one() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("sleep.pid");
    let env = TestEnv::new(
        "stop",
        &format!(
            r#"
            [tenants.acme.functions.slow]
            executor = {{ type = "command", program = "sh", args = ["-c", "sleep 60 & echo $! > {}; wait"] }}
            timeout = "120s"
            max_attempts = 1
            on_failure = "{{prefix}}.stopped"
            "#,
            pidfile.display()
        ),
    );
    env.init_topics();
    env.submit("acme", vec![task("run-1", "slow", "")]);
    let s = env.start_scheduler(0);

    // Wait until run-1 is running; give the running scheduler a task due in 8 s; then
    // stop both.
    let deadline = Instant::now() + WAIT;
    while !pidfile.exists() {
        assert!(Instant::now() < deadline, "never started\n{}", s.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut later = task("later-1", "slow", "");
    later.not_before = Some(now_ms() + 8_000);
    env.submit("acme", vec![later]);
    let asked = now_ms();
    request_stop(&env, "acme", "run-1");
    request_stop(&env, "acme", "later-1");

    let stopped = env.outcomes(&env.topic("stopped"), 2, WAIT);
    let by: BTreeMap<_, _> = stopped.iter().map(|o| (o.task_id.as_str(), o)).collect();
    let run = by["run-1"];
    assert_eq!(run.status, tidewater::codec::OutcomeStatus::Stopped);
    assert_eq!(run.attempts.len(), 1, "it was running");
    assert!(
        run.finished_at - asked < 5_000,
        "the stop took {} ms",
        run.finished_at - asked
    );
    let later = by["later-1"];
    assert_eq!(later.status, tidewater::codec::OutcomeStatus::Stopped);
    assert!(
        later.attempts.is_empty(),
        "a delayed task stopped before its time never runs"
    );
    // The running program and its children are gone.
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z "),
        "the stopped task's process survived"
    );
}

#[test]
fn a_task_id_that_already_finished_is_not_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs.log");
    let env = TestEnv::with_partitions(
        "dedupe",
        &format!(
            r#"
            [tenants.acme.functions.once]
            executor = {{ type = "command", program = "sh", args = ["-c", "echo \"$TW_TASK_ID\" >> {}"] }}
            on_success = "{{prefix}}.done"
            "#,
            runs.display()
        ),
        1,
    );
    env.init_topics();
    env.submit("acme", vec![task("pay-1", "once", "a")]);
    let _s = env.start_scheduler(0);
    assert_eq!(env.outcomes(&env.topic("done"), 1, WAIT).len(), 1);
    // The same id submitted again, then a new one to know when the queue got past it.
    env.submit(
        "acme",
        vec![task("pay-1", "once", "a"), task("pay-2", "once", "b")],
    );
    let done = env.outcomes(&env.topic("done"), 2, WAIT);
    assert_eq!(done.len(), 2);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        env.outcomes(&env.topic("done"), usize::MAX, Duration::from_secs(2))
            .len(),
        2
    );
    let executions = std::fs::read_to_string(&runs).unwrap();
    assert_eq!(executions, "pay-1\npay-2\n", "pay-1 ran once");
}

#[test]
fn with_a_running_event_delay_only_longer_attempts_announce_themselves() {
    let env = TestEnv::with_partitions(
        "runev",
        r#"
        [scheduler]
        running_event_delay = "1s"

        [tenants.acme.functions.quick]
        executor = { type = "command", program = "true" }
        on_success = "{prefix}.done"

        [tenants.acme.functions.slow]
        executor = { type = "command", program = "sleep", args = ["3"] }
        on_success = "{prefix}.done"
        "#,
        1,
    );
    env.init_topics();
    env.submit(
        "acme",
        vec![task("quick-1", "quick", ""), task("slow-1", "slow", "")],
    );
    let _s = env.start_scheduler(0);
    let done = env.outcomes(&env.topic("done"), 2, WAIT);
    assert_eq!(done.len(), 2);
    let slow = done.iter().find(|o| o.task_id == "slow-1").unwrap();
    // Each terminal status event is published with its outcome: all are in by now.
    let events = env.statuses(usize::MAX, Duration::from_secs(3));
    let of = |id: &str| -> Vec<TaskStatus> {
        events
            .iter()
            .filter(|e| e.task_id == id)
            .map(|e| e.status)
            .collect()
    };
    assert!(
        of("quick-1").contains(&TaskStatus::Succeeded),
        "{:?}",
        of("quick-1")
    );
    assert!(
        !of("quick-1").contains(&TaskStatus::Running),
        "an attempt shorter than the delay publishes no running event: {:?}",
        of("quick-1")
    );
    let running: Vec<_> = events
        .iter()
        .filter(|e| e.task_id == "slow-1" && e.status == TaskStatus::Running)
        .collect();
    assert_eq!(running.len(), 1, "{events:?}");
    assert_eq!(
        running[0].at, slow.attempts[0].started_at,
        "the late running event carries the attempt's real start"
    );
}

#[test]
fn publish_linger_holds_a_batch_open_for_what_finishes_next() {
    let env = TestEnv::with_partitions(
        "linger",
        r#"
        [scheduler]
        delivery = "exactly_once"
        publish_linger = "1s"

        [tenants.acme.functions.quick]
        executor = { type = "command", program = "true" }
        on_success = "{prefix}.done"
        "#,
        1,
    );
    env.init_topics();
    env.submit("acme", vec![task("lone-1", "quick", "")]);
    let _s = env.start_scheduler(0);
    let done = env.outcomes(&env.topic("done"), 1, WAIT);
    assert_eq!(done.len(), 1);
    // The task's first record (its running event) opened the batch; the outcome, a few
    // milliseconds later, joined it; the batch was sent when the linger ended.
    let reader = reader_on(&env.bootstrap, &env.topic("done"));
    let deadline = Instant::now() + WAIT;
    let sent_at = loop {
        assert!(Instant::now() < deadline, "the outcome was not read again");
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(200)) {
            break m.timestamp().to_millis().unwrap();
        }
    };
    reader.unsubscribe();
    let started = done[0].attempts[0].started_at;
    assert!(
        sent_at >= started + 950,
        "the outcome was sent {} ms after the attempt started, within the 1 s linger",
        sent_at - started
    );
    let statuses = env.statuses(usize::MAX, Duration::from_secs(2));
    assert!(
        statuses
            .iter()
            .any(|e| e.task_id == "lone-1" && e.status == TaskStatus::Running),
        "{statuses:?}"
    );
}
