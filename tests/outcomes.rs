//! Outcome delivery on a real broker: exactly one terminal outcome per task for
//! `read_committed` consumers, even when the scheduler is killed again and again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{TestEnv, task};

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
