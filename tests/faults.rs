//! The fault suite: real brokers fail under a running `tidewater` (exactly-once delivery)
//! and a `read_committed` consumer checks that every task has exactly one outcome, none
//! lost, and how long the run went without progress. Each test prints its row of
//! RELIABILITY.md (`cargo test --test faults -- --nocapture | grep '^| '`).
//!
//! The restarted brokers are the suite's own (`scripts/test.sh` starts them; a test
//! starts one that is not running): a single broker on 19392 and a three-node cluster on
//! 19192-19194, never the shared test broker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::faults::{self, Kafka, OutcomeWatch, report};
use common::serve::Serve;
use common::{SchedulerProcess, TestEnv, task};
use tidewater::names::metrics;

/// Longest a run may go without a new outcome while the cluster fails over or restarts
/// (broker shutdown, downtime and start included).
const MAX_STALL: Duration = Duration::from_secs(90);
/// Longest from the cluster serving again (or a failover) to the next new outcome.
const MAX_RESUME: Duration = Duration::from_secs(30);
const FINISH: Duration = Duration::from_secs(300);
const SETTLE: Duration = Duration::from_secs(5);

/// A paced workload: `rate` tasks per second of a function that runs a tiny command.
fn workload(kafka: &Kafka, name: &str, rate: u32, replication: u16) -> TestEnv {
    let env = TestEnv::on(
        &kafka.bootstrap(),
        name,
        &format!(
            r#"
            [scheduler]
            delivery = "exactly_once"

            [tenants.acme.functions.work]
            executor = {{ type = "command", program = "true" }}
            concurrency = 8
            rate = {rate}.0
            on_success = "{{prefix}}.done"
            "#
        ),
        3,
        replication,
    );
    env.init_topics();
    env
}

/// What a failed wait reports: the transactions open on the outcome topic (an open one
/// holds `read_committed` readers back), then the scheduler's threads and log.
fn stalled(s: &SchedulerProcess, kafka: &Kafka, env: &TestEnv) -> String {
    let topics = [
        env.topic("done"),
        env.status_topic(),
        "__consumer_offsets".into(),
    ];
    let open: String = topics
        .iter()
        .map(|t| {
            format!(
                "--- transactions open on {t} ---\n{}\n",
                kafka.open_transactions(t)
            )
        })
        .collect();
    format!(
        "{open}--- markers the broker skipped ---\n{}\n{}",
        kafka.skipped_markers(),
        s.diagnosis()
    )
}

/// `tidewater_transactions_total{result="<result>"}` of the scheduler, once it is not 0
/// (or when `timeout` is up).
fn transactions(s: &SchedulerProcess, result: &str, timeout: Duration) -> f64 {
    let url = s.metrics_url(Duration::from_secs(10));
    let deadline = Instant::now() + timeout;
    loop {
        let page = common::http_get(&url);
        let count: f64 = page
            .lines()
            .filter(|l| {
                l.starts_with(&format!("{}{{", metrics::TRANSACTIONS))
                    && l.contains(&format!("result=\"{result}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if count > 0.0 || Instant::now() >= deadline {
            return count;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn submit(env: &TestEnv, n: usize) {
    submit_ids(env, 0..n);
}

/// Tasks `f-<i>` for each `i` of `ids`.
fn submit_ids(env: &TestEnv, ids: std::ops::Range<usize>) {
    env.submit(
        "acme",
        ids.map(|i| task(&format!("f-{i}"), "work", "")).collect(),
    );
}

/// Checks a faulted run: `away` are the times the cluster could not serve (a single
/// broker from its stop until it was ready again), which no scheduler can shorten.
fn check(
    w: &faults::Watched,
    n: usize,
    resumed: Duration,
    away: &[(Instant, Instant)],
    s: &mut SchedulerProcess,
) {
    assert!(
        resumed < MAX_RESUME,
        "work resumed {:.1} s after the cluster could serve again (bound {MAX_RESUME:?})",
        resumed.as_secs_f64()
    );
    let dups = w.duplicates();
    assert!(dups.is_empty(), "outcomes seen more than once: {dups:?}");
    assert_eq!(w.counts.len(), n, "every task has its outcome");
    let gap = w.longest_gap_outside(away);
    assert!(
        gap < MAX_STALL,
        "the run went {:.1} s without a new outcome while the cluster could serve (bound {MAX_STALL:?})",
        gap.as_secs_f64()
    );
    assert!(
        s.is_running(),
        "the scheduler stays up through the faults\n{}",
        s.log_digest()
    );
}

#[test]
fn a_single_broker_restarted_three_times_loses_nothing_and_duplicates_nothing() {
    let (_lock, kafka) = faults::single();
    let env = workload(&kafka, "restart", 50, 1);
    let watch = OutcomeWatch::start(&kafka.bootstrap(), &env.topic("done"));
    let mut s = env.start_scheduler(0);
    let mut resumed = Duration::ZERO;
    // Work is submitted before each restart, so there is work left at every restart:
    // attempts go on while the broker is away (only publishing waits), and on a slow
    // machine a restart can outlast a backlog submitted once.
    let chunk = 1000;
    let mut n = 0;
    let mut away = Vec::new();
    for round in 0..3 {
        submit_ids(&env, n..n + chunk);
        n += chunk;
        watch.wait_for(n - chunk + 400, FINISH, || stalled(&s, &kafka, &env));
        let stopped = Instant::now();
        kafka.stop();
        std::thread::sleep(Duration::from_secs(10));
        kafka.start();
        away.push((stopped, Instant::now()));
        if round == 2 {
            // The transaction completing when the broker stopped may have a part without
            // its marker (RELIABILITY.md); it becomes readable with the same producer's
            // next marker on that partition, once work flows again. Work goes on, as it
            // does in service: a second wave at once after the last restart, before any
            // progress is awaited (the outcomes left to show may all sit behind such a
            // part, and then only more work brings them).
            let more = 300;
            submit_ids(&env, n..n + more);
            n += more;
        }
        resumed = resumed.max(watch.wait_for_progress(n, FINISH, || stalled(&s, &kafka, &env)));
    }
    let w = watch.finish(n, FINISH, SETTLE, || stalled(&s, &kafka, &env));
    report(
        "single broker stopped for 10 s and started, three times",
        n,
        "3 broker restarts",
        &w,
        resumed,
        "cargo test --test faults a_single_broker_restarted",
    );
    check(&w, n, resumed, &away, &mut s);
    // A restarting single broker can leave a transaction's part on the group's offsets
    // partition without its marker (RELIABILITY.md); the publisher, idle after the
    // faults, ends its lanes' parts: a scheduler given these partitions can read where
    // to start.
    let group = format!("{}.schedulers", env.prefix);
    let readable = faults::committed_offsets_readable(
        &kafka.bootstrap(),
        &group,
        &env.queue("acme"),
        Duration::from_secs(30),
    );
    assert!(
        readable.is_ok(),
        "the group's committed offsets stay pending: {readable:?}\n{}",
        stalled(&s, &kafka, &env)
    );
    // It did so, once per producer, after the faults.
    let healed = transactions(&s, "healed", Duration::from_secs(30));
    assert!(
        healed >= 2.0,
        "each lane commits the group's offsets again after the faults: {healed}\n{}",
        s.log_digest()
    );
    // The batches in flight at the restarts failed and were replayed, each after a
    // transaction that ended as aborted whatever the failed one had left open.
    let swept = transactions(&s, "swept", Duration::ZERO);
    // What the publisher did at the restarts, for whoever reads the run.
    for line in s
        .log_text()
        .lines()
        .filter(|l| l.contains("scheduler::publisher") && !l.contains(" DEBUG "))
    {
        eprintln!("publisher: {line}");
    }
    assert!(
        swept >= 1.0,
        "a failed batch is replayed only after a sweep: {swept}\n{}",
        s.log_digest()
    );
    // Producers rebuilt through the restarts keep their lane's transactional id, so a
    // partition left without a marker is ended by that producer's next one: the process
    // never used more ids than its two lanes.
    let ids = kafka.transactional_ids(&format!("{}.schedulers.", env.prefix));
    assert_eq!(
        ids.len(),
        2,
        "one transactional id per publisher lane: {ids:?}"
    );
}

/// The publisher alternates its two transactional producers batch by batch, and both
/// commit: seen in the broker's own log, where every transaction ends with a marker
/// naming its producer. With one status partition, every transaction (each carries a
/// status event) leaves a marker there.
#[test]
fn batches_alternate_between_the_two_transactional_producers() {
    let (_lock, kafka) = faults::single();
    let env = TestEnv::on(
        &kafka.bootstrap(),
        "lanes",
        r#"
        [scheduler]
        delivery = "exactly_once"

        [tenants.acme.functions.work]
        executor = { type = "command", program = "true" }
        on_success = "{prefix}.done"
        "#,
        1,
        1,
    );
    env.init_topics();
    let watch = OutcomeWatch::start(&kafka.bootstrap(), &env.topic("done"));
    let _s = env.start_scheduler(0);
    // Waves, each submitted after the one before has its outcomes: at least one
    // transaction each.
    let (waves, per_wave) = (6, 5);
    for wave in 0..waves {
        env.submit(
            "acme",
            (0..per_wave)
                .map(|i| task(&format!("w{wave}-{i}"), "work", ""))
                .collect(),
        );
        watch.wait_for((wave + 1) * per_wave, FINISH, String::new);
    }
    let w = watch.finish(waves * per_wave, FINISH, SETTLE, String::new);
    assert!(w.duplicates().is_empty());
    let markers = kafka.markers(&env.status_topic(), 0);
    assert!(
        markers.len() >= waves,
        "a transaction per wave at least: {markers:?}"
    );
    assert!(
        markers.iter().all(|m| m.commit),
        "every transaction committed: {markers:?}"
    );
    let producers: BTreeSet<i64> = markers.iter().map(|m| m.producer_id).collect();
    assert_eq!(producers.len(), 2, "two producers wrote: {markers:?}");
    for pair in markers.windows(2) {
        assert_ne!(
            pair[0].producer_id, pair[1].producer_id,
            "one producer ended two transactions in a row: {markers:?}"
        );
    }
}

#[test]
fn the_leader_of_a_queue_partition_and_the_transaction_coordinator_killed() {
    let (_lock, kafka) = faults::cluster();
    let n = 3000;
    let env = workload(&kafka, "leader", 50, 3);
    let watch = OutcomeWatch::start(&kafka.bootstrap(), &env.topic("done"));
    submit(&env, n);
    let mut s = env.start_scheduler(0);

    watch.wait_for(400, FINISH, || stalled(&s, &kafka, &env));
    let leader = kafka.leader(&env.queue("acme"), 0);
    kafka.node("kill", leader);
    let mut resumed = watch.wait_for_progress(n, FINISH, || stalled(&s, &kafka, &env));
    watch.wait_for(1000, FINISH, || stalled(&s, &kafka, &env));
    kafka.node("start", leader);
    kafka.script(&["wait-replicated"]);

    let txn_prefix = format!("{}.schedulers.", env.prefix);
    let coordinator = kafka.txn_coordinator(&txn_prefix, Duration::from_secs(30));
    watch.wait_for(1600, FINISH, || stalled(&s, &kafka, &env));
    kafka.node("kill", coordinator);
    resumed = resumed.max(watch.wait_for_progress(n, FINISH, || stalled(&s, &kafka, &env)));
    watch.wait_for(2200, FINISH, || stalled(&s, &kafka, &env));
    kafka.node("start", coordinator);
    kafka.script(&["wait-replicated"]);

    let w = watch.finish(n, FINISH, SETTLE, || stalled(&s, &kafka, &env));
    report(
        "three nodes: SIGKILL of a queue partition's leader, later of the transaction coordinator; each restarted",
        n,
        &format!("kill node {leader} (leader), kill node {coordinator} (coordinator)"),
        &w,
        resumed,
        "cargo test --test faults the_leader_of_a_queue_partition",
    );
    check(&w, n, resumed, &[], &mut s);
}

#[test]
fn a_rolling_restart_of_all_three_nodes() {
    let (_lock, kafka) = faults::cluster();
    let n = 3000;
    let env = workload(&kafka, "rolling", 40, 3);
    let watch = OutcomeWatch::start(&kafka.bootstrap(), &env.topic("done"));
    submit(&env, n);
    let mut s = env.start_scheduler(0);
    watch.wait_for(300, FINISH, || stalled(&s, &kafka, &env));
    let mut resumed = Duration::ZERO;
    for node in 1..=3 {
        kafka.node("stop", node);
        resumed = resumed.max(watch.wait_for_progress(n, FINISH, || stalled(&s, &kafka, &env)));
        kafka.node("start", node);
        kafka.script(&["wait-replicated"]);
    }
    let w = watch.finish(n, FINISH, SETTLE, || stalled(&s, &kafka, &env));
    report(
        "three nodes: rolling restart (stop, start, wait for full ISR, next)",
        n,
        "3 node restarts",
        &w,
        resumed,
        "cargo test --test faults a_rolling_restart",
    );
    check(&w, n, resumed, &[], &mut s);
}

#[test]
fn a_scheduler_paused_past_its_session_timeout_publishes_nothing_late() {
    // The shared test broker: nothing here restarts it.
    let n = 400;
    let env = TestEnv::new(
        "paused",
        r#"
        [scheduler]
        delivery = "exactly_once"
        rebalance_grace = "2s"

        [tenants.acme.functions.work]
        executor = { type = "command", program = "sleep", args = ["0.4"] }
        concurrency = 8
        on_success = "{prefix}.done"
        "#,
    );
    env.init_topics();
    let watch = OutcomeWatch::start(&env.bootstrap, &env.topic("done"));
    let mut a = env.start_scheduler(0);
    let mut b = env.start_scheduler(1);
    // Both members hold partitions before the work arrives.
    std::thread::sleep(Duration::from_secs(5));
    submit(&env, n);
    watch.wait_for(40, FINISH, || a.diagnosis());
    // Longer than the broker's session timeout (10 s) and the transaction timeout (10 s):
    // the group gives A's partitions to B, which runs A's unfinished tasks again.
    a.pause();
    let paused_at = Instant::now();
    std::thread::sleep(Duration::from_secs(25));
    a.resume();
    let resumed = watch.wait_for_progress(n, FINISH, || a.diagnosis());
    let w = watch.finish(n, FINISH, SETTLE, || {
        format!(
            "--- A ---\n{}\n--- B ---\n{}",
            a.log_digest(),
            b.log_digest()
        )
    });
    report(
        "a scheduler SIGSTOPped for 25 s (past the 10 s session timeout) while its tasks run, then SIGCONT",
        n,
        "1 pause of 25 s",
        &w,
        resumed,
        "cargo test --test faults a_scheduler_paused",
    );
    let dups = w.duplicates();
    assert!(
        dups.is_empty(),
        "the paused scheduler's late results became outcomes: {dups:?}\n--- A ---\n{}",
        a.log_digest()
    );
    assert_eq!(w.counts.len(), n, "every task has its outcome");
    assert!(
        a.is_running() && b.is_running(),
        "both schedulers keep working"
    );
    // The fault happened as intended: A learned that the group took its partitions.
    let log = a.log_text();
    assert!(
        log.contains("partitions lost"),
        "the paused scheduler lost its partitions\n{log}"
    );
    println!(
        "paused scheduler: {} outcome(s) dropped as fenced",
        log.matches("are dropped; it runs those tasks").count()
    );
    assert!(
        paused_at.elapsed() >= Duration::from_secs(25),
        "the pause lasted as long as intended"
    );
}

#[test]
fn run_waits_for_a_broker_that_is_down_at_start() {
    let (_lock, kafka) = faults::single();
    let n = 200;
    let env = workload(&kafka, "late", 200, 1);
    let watch = OutcomeWatch::start(&kafka.bootstrap(), &env.topic("done"));
    kafka.stop();
    let mut s = env.start_scheduler(0);
    std::thread::sleep(Duration::from_secs(12));
    assert!(
        s.is_running(),
        "run keeps waiting for the cluster\n{}",
        s.log_digest()
    );
    let log = s.log_text();
    assert!(
        log.matches("waiting for the Kafka cluster to answer")
            .count()
            >= 2,
        "a clear line every few seconds while it waits\n{log}"
    );
    kafka.start();
    submit(&env, n);
    let resumed = watch.wait_for_progress(n, FINISH, || stalled(&s, &kafka, &env));
    let w = watch.finish(n, FINISH, SETTLE, || stalled(&s, &kafka, &env));
    report(
        "the broker down when `tidewater run` starts, up 12 s later",
        n,
        "broker down at start",
        &w,
        resumed,
        "cargo test --test faults run_waits_for_a_broker",
    );
    check(&w, n, resumed, &[], &mut s);
}

/// Distinct succeeded task ids in `serve`'s index (paging through all of them).
fn indexed_succeeded(serve: &Serve, token: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut cursor = String::new();
    loop {
        let (code, body) = serve.get_raw(
            &format!("/v1/tasks?status=succeeded&limit=1000{cursor}"),
            Some(token),
        );
        assert_eq!(code, 200, "{body}");
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        for t in page["tasks"].as_array().unwrap() {
            ids.insert(t["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return ids,
        }
    }
}

#[test]
fn the_index_goes_unready_through_a_broker_restart_and_catches_up() {
    let (_lock, kafka) = faults::single();
    let env = TestEnv::on(
        &kafka.bootstrap(),
        "index",
        r#"
        [api]
        tokens = [{ token = "tok-admin", admin = true }]

        [scheduler]
        delivery = "exactly_once"

        [tenants.acme.functions.work]
        executor = { type = "command", program = "true" }
        concurrency = 8
        on_success = "{prefix}.done"
        "#,
        3,
        1,
    );
    env.init_topics();
    let serve = Serve::start(&env, &env.dir.path().join("store.db"), 0);
    let watch = OutcomeWatch::start(&kafka.bootstrap(), &env.topic("done"));
    let mut s = env.start_scheduler(0);
    submit(&env, 300);
    watch.wait_for(300, FINISH, || stalled(&s, &kafka, &env));

    let stopped = Instant::now();
    kafka.stop();
    let unready_after = serve.await_readyz(503, Duration::from_secs(60));
    kafka.start();
    let away = [(stopped, Instant::now())];
    env.submit(
        "acme",
        (300..500)
            .map(|i| task(&format!("f-{i}"), "work", ""))
            .collect(),
    );
    let ready_after = serve.await_readyz(200, FINISH);
    let w = watch.finish(500, FINISH, SETTLE, || stalled(&s, &kafka, &env));
    check(&w, 500, ready_after, &away, &mut s);

    // The index has every task, including those finished while it could not read.
    let deadline = Instant::now() + FINISH;
    let mut ids = indexed_succeeded(&serve, "tok-admin");
    while ids.len() < 500 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        ids = indexed_succeeded(&serve, "tok-admin");
    }
    assert_eq!(
        ids.len(),
        500,
        "the index has every task\n{}",
        serve.log_text()
    );
    println!(
        "| `tidewater serve`'s indexer through a broker restart (`/readyz` 503 {:.1} s after the stop began) | 500 | 1 broker restart | {} | {} | {:.1} s | {:.1} s (`/readyz` 200 again) | `cargo test --test faults the_index_goes_unready` |",
        unready_after.as_secs_f64(),
        500 - ids.len(),
        w.duplicates().len(),
        w.longest_gap.as_secs_f64(),
        ready_after.as_secs_f64()
    );
}
