//! Scaling on a real broker with the real binary: the controller adds partitions to a
//! backed-up queue and the supervisor follows the desired replica count out and back in,
//! with exactly one outcome per task across the change; and controller failover.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{TestEnv, children_of, http_get, metric, task};
use tidewater::codec::OutcomeStatus;
use tidewater::names::topics;
use tidewater::scale::controller::Decision;

fn partitions(env: &TestEnv, topic: &str) -> usize {
    tidewater::kafka::existing_topics(&env.config).unwrap()[topic]
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn decisions(env: &TestEnv, wait: Duration) -> Vec<Decision> {
    env.read(&topics::controller(&env.prefix), usize::MAX, wait)
        .into_iter()
        .map(|(_, v)| serde_json::from_slice(&v).unwrap())
        .collect()
}

/// Terms never go down, leaders' terms strictly increase, and every decision carries the
/// term of the leader that announced itself last.
fn assert_fenced(log: &[Decision]) {
    let mut current = None;
    for d in log {
        match d {
            Decision::Leader { term, .. } => {
                assert!(
                    current.is_none_or(|c| *term > c),
                    "leader term {term} after {current:?}: {log:#?}"
                );
                current = Some(*term);
            }
            other => assert_eq!(
                Some(other.term()),
                current,
                "decision from another term interleaved: {log:#?}"
            ),
        }
    }
}

const SCALE: &str = r#"
[scheduler]
shutdown_grace = "5s"
rebalance_grace = "5s"
[scale]
lag_interval = "1s"
threshold = 40
window = "2s"
cooldown = "4s"
max_partitions = 4
lag_per_replica = 100
min_replicas = 1
max_replicas = 3
scale_in_after = "8s"
[tenants.acme.functions.work]
executor = { type = "command", program = "sleep", args = ["0.1"] }
concurrency = 8
on_success = "{prefix}.done"
"#;

#[test]
fn a_backlog_adds_partitions_and_replicas_then_scales_in_without_losing_a_task() {
    let env = TestEnv::with_partitions("scale", SCALE, 1);
    env.init_topics();
    let queue = env.queue("acme");
    assert_eq!(partitions(&env, &queue), 1);
    let first: Vec<_> = (0..1500)
        .map(|i| task(&format!("a-{i}"), "work", ""))
        .collect();
    env.submit("acme", first);

    let started = Instant::now();
    let mut sup = env.start_run(0, &["--replicas", "auto", "--max-replicas", "3"]);
    let pid = sup.pid();
    wait_until(
        "the first scheduler process",
        Duration::from_secs(20),
        || children_of(pid).len() == 1,
    );
    wait_until(
        "the queue to reach 4 partitions",
        Duration::from_secs(60),
        || partitions(&env, &queue) == 4,
    );
    eprintln!("4 partitions after {:?}", started.elapsed());
    // Tasks submitted after the expansion spread over the new partitions.
    let second: Vec<_> = (0..1500)
        .map(|i| task(&format!("b-{i}"), "work", ""))
        .collect();
    env.submit("acme", second);
    let mut most = 0;
    wait_until("more scheduler processes", Duration::from_secs(30), || {
        most = most.max(children_of(pid).len());
        most >= 2
    });
    eprintln!("{most} scheduler processes after {:?}", started.elapsed());

    let outcomes = env.outcomes(&env.topic("done"), 3000, Duration::from_secs(150));
    eprintln!("backlog drained after {:?}", started.elapsed());
    let ids: BTreeSet<&str> = outcomes.iter().map(|o| o.task_id.as_str()).collect();
    assert_eq!(outcomes.len(), 3000, "outcomes: {}", outcomes.len());
    assert_eq!(ids.len(), 3000, "a task has two outcomes");
    assert!(
        outcomes
            .iter()
            .all(|o| o.status == OutcomeStatus::Succeeded)
    );
    for i in 0..1500 {
        assert!(ids.contains(format!("a-{i}").as_str()));
        assert!(ids.contains(format!("b-{i}").as_str()));
    }

    wait_until("scale-in to one process", Duration::from_secs(60), || {
        children_of(pid).len() == 1
    });
    eprintln!("scaled in after {:?}", started.elapsed());
    // Nothing more arrived: exactly one outcome per task.
    let again = env.outcomes(&env.topic("done"), 3001, Duration::from_secs(3));
    assert_eq!(again.len(), 3000, "duplicate outcomes after scale-in");

    let log = decisions(&env, Duration::from_secs(3));
    assert_fenced(&log);
    assert!(
        log.iter()
            .any(|d| matches!(d, Decision::Expand { to: 4, .. }))
    );
    assert!(
        log.iter()
            .any(|d| matches!(d, Decision::Replicas { desired, .. } if *desired >= 2))
    );

    let children = children_of(pid);
    sup.terminate(Duration::from_secs(40));
    // The supervisor stopped its children before it exited.
    for c in children {
        assert!(
            !std::path::Path::new(&format!("/proc/{c}")).exists()
                || std::fs::read_to_string(format!("/proc/{c}/stat"))
                    .is_ok_and(|s| s.contains(") Z")),
            "scheduler process {c} outlived its supervisor"
        );
    }
}

#[test]
fn controller_failover_after_kill_9_keeps_one_leader_at_a_time() {
    let env = TestEnv::with_partitions(
        "failover",
        r#"
[scale]
lag_interval = "500ms"
[tenants.acme.functions.work]
executor = { type = "inprocess", handler = "noop" }
"#,
        1,
    );
    env.init_topics();
    let mut a = env.start_run(0, &["--replicas", "0"]);
    std::thread::sleep(Duration::from_millis(500));
    let mut b = env.start_run(1, &["--replicas", "0"]);

    let mut log = Vec::new();
    wait_until("a first leader", Duration::from_secs(40), || {
        log = decisions(&env, Duration::from_secs(1));
        log.iter().any(|d| matches!(d, Decision::Leader { .. }))
    });
    let Some(Decision::Leader {
        pid: first_pid,
        term: first_term,
        ..
    }) = log
        .iter()
        .find(|d| matches!(d, Decision::Leader { .. }))
        .cloned()
    else {
        unreachable!()
    };
    let (leader, survivor) = if first_pid == a.pid() as u32 {
        (&mut a, &mut b)
    } else {
        assert_eq!(first_pid, b.pid() as u32, "leader is neither process");
        (&mut b, &mut a)
    };
    let survivor_pid = survivor.pid() as u32;
    let page = http_get(&survivor.metrics_url(Duration::from_secs(10)));
    assert_eq!(metric(&page, "tidewater_controller_leader"), 0.0);

    let killed = Instant::now();
    leader.kill9();
    wait_until(
        "the other controller to lead",
        Duration::from_secs(45),
        || {
            log = decisions(&env, Duration::from_secs(1));
            log.iter()
                .any(|d| matches!(d, Decision::Leader { pid, .. } if *pid == survivor_pid))
        },
    );
    eprintln!("new leader {:?} after kill -9", killed.elapsed());
    let new_term = log
        .iter()
        .filter_map(|d| match d {
            Decision::Leader { pid, term, .. } if *pid == survivor_pid => Some(*term),
            _ => None,
        })
        .max()
        .unwrap();
    assert!(new_term > first_term);
    // The new leader records its decisions under its own term.
    wait_until(
        "a decision of the new leader",
        Duration::from_secs(10),
        || {
            log = decisions(&env, Duration::from_secs(1));
            log.iter()
                .any(|d| !matches!(d, Decision::Leader { .. }) && d.term() == new_term)
        },
    );
    assert_fenced(&log);
    let page = http_get(&survivor.metrics_url(Duration::from_secs(10)));
    assert_eq!(metric(&page, "tidewater_controller_leader"), 1.0);
    assert_eq!(metric(&page, "tidewater_controller_term"), new_term as f64);
    assert!(
        page.contains("tidewater_queue_lag_total{topic=\""),
        "{page}"
    );
    survivor.terminate(Duration::from_secs(30));
}

#[test]
fn tasks_submitted_across_an_expansion_have_exactly_one_outcome() {
    let env = TestEnv::with_partitions(
        "expandonce",
        r#"
[scheduler]
shutdown_grace = "5s"
rebalance_grace = "5s"
[scale]
lag_interval = "500ms"
threshold = 40
window = "1s"
cooldown = "2s"
max_partitions = 3
[tenants.acme.functions.work]
executor = { type = "command", program = "sleep", args = ["0.1"] }
concurrency = 4
on_success = "{prefix}.done"
"#,
        1,
    );
    env.init_topics();
    let queue = env.queue("acme");
    let batch = |b: usize| -> Vec<_> {
        (0..50)
            .map(|i| task(&format!("t-{b}-{i}"), "work", ""))
            .collect()
    };
    // Slow enough work (at most 40 tasks/s per process) that the backlog outlives both
    // expansions whatever else runs on the machine.
    for b in 0..8 {
        env.submit("acme", batch(b));
    }
    // Two processes pinned: the second has nothing to do until partitions are added,
    // then the group moves partitions between them while tasks keep arriving.
    let _sup = env.start_run(0, &["--replicas", "2"]);
    let mut b = 8;
    let started = Instant::now();
    while partitions(&env, &queue) < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no expansion to 3 partitions"
        );
        env.submit("acme", batch(b));
        b += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    // Keep submitting while the schedulers pick the new partitions up.
    for _ in 0..6 {
        env.submit("acme", batch(b));
        b += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    let want = b * 50;
    let outcomes = env.outcomes(&env.topic("done"), want, Duration::from_secs(120));
    assert_eq!(outcomes.len(), want, "tasks without an outcome");
    // Anything beyond one outcome per task would be there by now.
    let outcomes = env.outcomes(&env.topic("done"), want + 1, Duration::from_secs(3));
    let ids: BTreeSet<&str> = outcomes.iter().map(|o| o.task_id.as_str()).collect();
    assert_eq!(ids.len(), want, "tasks without an outcome");
    assert_eq!(outcomes.len(), want, "tasks with two outcomes");
    let log = decisions(&env, Duration::from_secs(2));
    assert_fenced(&log);
    assert!(
        log.iter()
            .any(|d| matches!(d, Decision::Expand { from: 2, to: 3, .. }))
    );
}

#[test]
fn crashed_replicas_are_restarted_and_a_killed_supervisor_leaves_no_orphans() {
    let env = TestEnv::with_partitions(
        "supervise",
        r#"
[scheduler]
shutdown_grace = "2s"
[tenants.acme.functions.work]
executor = { type = "inprocess", handler = "noop" }
"#,
        2,
    );
    env.init_topics();
    let mut sup = env.start_run(0, &["--replicas", "2"]);
    let pid = sup.pid();
    let mut first = Vec::new();
    wait_until("two scheduler processes", Duration::from_secs(20), || {
        first = children_of(pid);
        first.len() == 2
    });
    // A replica that dies is replaced (after the restart backoff).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let mut now = Vec::new();
    wait_until("a replacement process", Duration::from_secs(20), || {
        now = children_of(pid);
        now.len() == 2 && !now.contains(&first[0])
    });
    // kill -9 of the supervisor: its children stop on their own (parent-death signal).
    sup.kill9();
    let gone = |c: i32| {
        std::fs::read_to_string(format!("/proc/{c}/stat")).map_or(true, |s| s.contains(") Z "))
    };
    wait_until(
        "the orphaned schedulers to exit",
        Duration::from_secs(30),
        || now.iter().all(|c| gone(*c)),
    );
}

#[test]
fn a_queue_declared_ordered_keeps_its_partitions_while_others_expand() {
    let env = TestEnv::with_partitions(
        "ordexp",
        r#"
[scheduler]
shutdown_grace = "5s"
[scale]
lag_interval = "500ms"
threshold = 20
window = "1s"
cooldown = "2s"
max_partitions = 2
[scale.queues."{prefix}.q.acme"]
ordered = true
[tenants.acme.functions.work]
executor = { type = "command", program = "sleep", args = ["0.1"] }
concurrency = 2
[tenants.globex.functions.work]
executor = { type = "command", program = "sleep", args = ["0.1"] }
concurrency = 2
"#,
        1,
    );
    env.init_topics();
    let backlog = |tenant: &str| -> Vec<_> {
        (0..300)
            .map(|i| task(&format!("{tenant}-{i}"), "work", ""))
            .collect()
    };
    env.submit("acme", backlog("acme"));
    env.submit("globex", backlog("globex"));
    let _sup = env.start_run(0, &["--replicas", "1"]);

    // The same backlog on both: the undeclared queue grows, the ordered one does not
    // (a key may move to a new partition, so its order would not hold).
    let globex = env.queue("globex");
    wait_until(
        "the globex queue to expand",
        Duration::from_secs(60),
        || partitions(&env, &globex) == 2,
    );
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        partitions(&env, &env.queue("acme")),
        1,
        "an ordered queue was expanded"
    );
    let log = decisions(&env, Duration::from_secs(2));
    assert!(
        !log.iter()
            .any(|d| matches!(d, Decision::Expand { topic, .. } if *topic == env.queue("acme"))),
        "a decision expanded the ordered queue: {log:?}"
    );
}
