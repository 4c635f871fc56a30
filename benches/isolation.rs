//! Isolation between functions that share a partition, and memory per held task, in one
//! run against one broker.
//!
//! ```sh
//! scripts/kafka.sh start
//! cargo bench --bench isolation        # TW_BENCH_SCALE=0.1 for a shorter run
//! ```
//!
//! **Isolation.** Two functions of one tenant share a single-partition queue. A is slow
//! (concurrency 1, 200 ms per task, 500 tasks); B is busy (concurrency 32, 10 ms per
//! task, 2,000 tasks). The queue interleaves them, one A task before every four B tasks.
//! Each run first waits for one warm-up B task to finish, so group joins and start-up
//! are not counted, then submits the whole batch at once. B's latency per task is
//! submit→start: the start of its first attempt minus its `submitted_at` (the record
//! timestamp set by the producer). Four runs, each with its own topics and group:
//!
//! - Tidewater, B alone (the same B tasks, no A), then Tidewater, B with A. Handlers run
//!   in-process (`tokio::time::sleep`); B's start times come from its outcome events.
//! - The control: a FIFO consumer, B alone, then B with A. It models the common
//!   "consume in order, run, commit" loop: records are taken strictly in offset order,
//!   at most 32 tasks run at once, and a record whose function is at its concurrency
//!   limit (A: 1, B: 32) is not passed: the loop waits for a slot before it looks at the
//!   next record. It publishes nothing and commits nothing, so it is cheaper per task
//!   than the scheduler; it shows the head-of-line blocking that per-function queues
//!   avoid. It records each B task's start time itself.
//!
//! The figure is B's p99 with A divided by B's p99 alone, for each consumer. 1.0 means A
//! does not slow B at all.
//!
//! **Over the buffer.** The same two Tidewater runs again with `max_buffered_per_partition`
//! at a tenth of A's task count, so A's backlog is ten times the partition's buffer: A
//! spills to its overflow queue (`scheduler.spill_after`, half the buffer) and B keeps
//! flowing. Both runs use that buffer, so B alone may spill its own bursts too. Every run
//! sets `spill_after = 0.5`, so the figures compare with those from before exactly-once
//! delivery spilled at 100 tasks by default (the first runs then measure the per-function
//! queues alone, with A's whole backlog in memory).
//!
//! **Memory.** Resident memory (VmRSS) of a fresh process of this bench running the
//! scheduler in-process, so nothing measured before skews the heap. The parent creates
//! the topics and loads the queue; the child notes its RSS before it starts the
//! scheduler and waits until the scheduler holds the tasks (its own gauges say so) and
//! RSS has stopped growing for three samples 500 ms apart. Three children:
//!
//! - idle: the scheduler on an empty queue (its fixed cost: clients, threads, buffers);
//! - buffered: 100,000 tasks of one function that never finishes (concurrency 1, its
//!   handler sleeps for an hour), with `max_buffered_per_partition` and `max_buffered`
//!   at 200,000, so all of them are fetched and held queued;
//! - in flight: 10,000 tasks running at once (concurrency and `max_running` 10,000),
//!   each handler sleeping for an hour.
//!
//! Bytes per task = (delta of the scenario − delta of the idle scheduler) / tasks.
//!
//! Throughput against a raw consume→produce pipe is `cargo bench --bench throughput`.
//!
//! `TW_BENCH_SCALE` multiplies every task count. Under `cargo test` (no `--bench`
//! argument) it runs as a smoke check with small counts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bootstrap, metric, submit_all, submitter, task};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tidewater::clock::now_ms;
use tidewater::codec::{self, Task};
use tidewater::config::Config;
use tidewater::executor::Handlers;
use tidewater::scheduler::Scheduler;
use tidewater::scheduler::consumer::Record;
use tidewater::types::TopicPartition;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const TENANT: &str = "bench";
const A_SLEEP: Duration = Duration::from_millis(200);
const B_SLEEP: Duration = Duration::from_millis(10);
const A_CONCURRENCY: usize = 1;
const B_CONCURRENCY: usize = 32;
/// Environment of a memory child: which scenario, its topic prefix, its task count.
const CHILD_KIND: &str = "TW_BENCH_ISOLATION_CHILD";
const CHILD_PREFIX: &str = "TW_BENCH_ISOLATION_PREFIX";
const CHILD_TASKS: &str = "TW_BENCH_ISOLATION_TASKS";
/// Milliseconds between RSS samples in a memory child (500, shorter in the smoke check).
const CHILD_POLL_MS: &str = "TW_BENCH_ISOLATION_POLL_MS";

/// Shutdown is short: `shutdown_grace` cuts off handlers that never finish, and
/// `rebalance_grace` is short too, because attempts cut off at shutdown still count as
/// running when the consumer gives up its partitions, so that revoke waits out
/// `rebalance_grace` as well.
fn config(prefix: &str, scheduler: &str, functions: &str) -> Config {
    let body = format!(
        r#"
        [scheduler]
        shutdown_grace = "1s"
        rebalance_grace = "1s"
        {scheduler}
        {functions}
        "#
    );
    common::config(prefix, 1, &body)
}

/// A consumer of partition 0 of `topic`, from the beginning (no group membership).
fn reader(topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", format!("{topic}.reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    consumer
}

// ---------------------------------------------------------------------------------------
// Isolation

#[derive(Clone, Copy)]
struct Load {
    a: usize,
    b: usize,
}

/// The batch: B's tasks, with one A task before every four when `with_a`.
fn batch(load: Load, with_a: bool) -> Vec<Task> {
    let mut tasks = Vec::new();
    let mut a = 0;
    for i in 0..load.b {
        if with_a && i % 4 == 0 && a < load.a {
            tasks.push(task(&format!("a-{a}"), "a", ""));
            a += 1;
        }
        tasks.push(task(&format!("b-{i}"), "b", ""));
    }
    while with_a && a < load.a {
        tasks.push(task(&format!("a-{a}"), "a", ""));
        a += 1;
    }
    tasks
}

/// B's submit→start latencies (ms), and how many A tasks had started by the time the
/// last B task started.
struct Run {
    b_latency_ms: Vec<i64>,
    a_started_before_last_b: usize,
}

fn isolation_config(prefix: &str, scheduler: &str) -> Config {
    config(
        prefix,
        scheduler,
        r#"
        [tenants.bench.functions.a]
        executor = { type = "inprocess", handler = "slow" }
        concurrency = 1
        on_success = "{prefix}.done"
        [tenants.bench.functions.b]
        executor = { type = "inprocess", handler = "busy" }
        concurrency = 32
        on_success = "{prefix}.done"
        "#,
    )
}

async fn tidewater_run(load: Load, with_a: bool, scheduler: &str, timeout: Duration) -> Run {
    let prefix = common::prefix(if with_a { "twab" } else { "twb" });
    let cfg = isolation_config(&prefix, scheduler);
    tidewater::kafka::init_topics(&cfg).await.unwrap();
    let mut handlers = Handlers::new();
    handlers.register("slow", |_| async {
        tokio::time::sleep(A_SLEEP).await;
        Ok(Vec::new())
    });
    handlers.register("busy", |_| async {
        tokio::time::sleep(B_SLEEP).await;
        Ok(Vec::new())
    });
    let stop = CancellationToken::new();
    let scheduler = tokio::spawn(Scheduler::new(cfg.clone(), handlers).run(stop.clone()));
    let outcomes = reader(&format!("{prefix}.done"));
    let next_outcome = async |deadline: Instant| {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, outcomes.recv())
            .await
            .expect("timed out waiting for outcomes")
            .unwrap();
        codec::decode_outcome(msg.payload().unwrap_or_default()).unwrap()
    };

    // One producer for the warm-up and the batch: a new producer's first records wait
    // for its connection and producer id, which is not the consumer's latency.
    let producer = submitter(&cfg);
    // Warm-up: once this has run, the scheduler has joined its group and runs tasks.
    submit_all(&producer, TENANT, vec![task("warm", "b", "")]).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while next_outcome(deadline).await.task_id != "warm" {}

    submit_all(&producer, TENANT, batch(load, with_a)).await;
    let deadline = Instant::now() + timeout;
    let (mut b_latency_ms, mut b_starts, mut a_starts) = (Vec::new(), Vec::new(), Vec::new());
    while b_latency_ms.len() < load.b {
        let o = next_outcome(deadline).await;
        let started = o.attempts.first().expect("an attempt").started_at;
        match o.function.as_str() {
            "b" => {
                b_latency_ms.push(started - o.submitted_at);
                b_starts.push(started);
            }
            _ => a_starts.push(started),
        }
    }
    stop.cancel();
    scheduler.await.unwrap().unwrap();
    // A's outcomes published after B's last one still count if A started before it.
    let last_b = b_starts.iter().copied().max().unwrap_or(0);
    let mut a_started_before_last_b = a_starts.iter().filter(|s| **s <= last_b).count();
    if with_a {
        while let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_secs(2), outcomes.recv()).await
        {
            let o = codec::decode_outcome(msg.payload().unwrap_or_default()).unwrap();
            if o.function == "a" && o.attempts.first().is_some_and(|a| a.started_at <= last_b) {
                a_started_before_last_b += 1;
            }
        }
    }
    Run {
        b_latency_ms,
        a_started_before_last_b,
    }
}

/// The control: strict offset order, at most 32 tasks at once, and never past a record
/// whose function is at its concurrency limit. Sends (task id, function, latency ms) for
/// each task it starts.
async fn fifo_consumer(topic: String, started: mpsc::UnboundedSender<(String, String, i64)>) {
    let consumer = reader(&topic);
    let limit = |f: &str| {
        if f == "a" {
            A_CONCURRENCY
        } else {
            B_CONCURRENCY
        }
    };
    let mut running: JoinSet<usize> = JoinSet::new();
    let mut per_fn = [0usize; 2];
    loop {
        let msg = consumer.recv().await.unwrap();
        let record = Record::from_message(&msg, TopicPartition::new(msg.topic(), msg.partition()));
        let t = codec::decode_task(&record.value, record.content_type.as_deref()).unwrap();
        let f = usize::from(t.function != "a");
        // Head-of-line: wait here until this record may start.
        while per_fn[f] >= limit(&t.function) || per_fn.iter().sum::<usize>() >= B_CONCURRENCY {
            let done = running.join_next().await.unwrap().unwrap();
            per_fn[done] -= 1;
        }
        let submitted_at = t.submitted_at.or(record.timestamp()).unwrap_or_else(now_ms);
        let _ = started.send((t.id, t.function, now_ms() - submitted_at));
        per_fn[f] += 1;
        let sleep = if f == 0 { A_SLEEP } else { B_SLEEP };
        running.spawn(async move {
            tokio::time::sleep(sleep).await;
            f
        });
        while let Some(Ok(done)) = running.try_join_next() {
            per_fn[done] -= 1;
        }
    }
}

async fn fifo_run(load: Load, with_a: bool, timeout: Duration) -> Run {
    let prefix = common::prefix(if with_a { "fifoab" } else { "fifob" });
    let cfg = isolation_config(&prefix, "");
    tidewater::kafka::init_topics(&cfg).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = tokio::spawn(fifo_consumer(cfg.queue_topic(TENANT, "b"), tx));
    let mut next_start = async |deadline: Instant| {
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(left, rx.recv())
            .await
            .expect("timed out waiting for the FIFO consumer")
            .expect("FIFO consumer stopped")
    };

    // One producer for the warm-up and the batch: a new producer's first records wait
    // for its connection and producer id, which is not the consumer's latency.
    let producer = submitter(&cfg);
    submit_all(&producer, TENANT, vec![task("warm", "b", "")]).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while next_start(deadline).await.0 != "warm" {}

    submit_all(&producer, TENANT, batch(load, with_a)).await;
    let deadline = Instant::now() + timeout;
    let (mut b_latency_ms, mut a_started_before_last_b) = (Vec::new(), 0);
    while b_latency_ms.len() < load.b {
        let (_, function, latency) = next_start(deadline).await;
        if function == "b" {
            b_latency_ms.push(latency);
        } else {
            a_started_before_last_b += 1;
        }
    }
    consumer.abort();
    let _ = consumer.await;
    Run {
        b_latency_ms,
        a_started_before_last_b,
    }
}

/// Nearest-rank percentile.
fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Stats {
    p50: i64,
    p99: i64,
    max: i64,
}

fn stats(run: &Run) -> Stats {
    let mut v = run.b_latency_ms.clone();
    v.sort_unstable();
    Stats {
        p50: percentile(&v, 50.0),
        p99: percentile(&v, 99.0),
        max: v.last().copied().unwrap_or(0),
    }
}

// ---------------------------------------------------------------------------------------
// Memory

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Idle,
    Buffered,
    InFlight,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Buffered => "buffered",
            Self::InFlight => "inflight",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "idle" => Self::Idle,
            "buffered" => Self::Buffered,
            "inflight" => Self::InFlight,
            other => panic!("unknown memory scenario {other}"),
        }
    }
}

fn memory_config(prefix: &str, scenario: Scenario, n: usize) -> Config {
    let (scheduler, concurrency) = match scenario {
        Scenario::Idle | Scenario::Buffered => (
            "max_buffered_per_partition = 200000\nmax_buffered = 200000\n\
             max_buffered_bytes_per_partition = 1073741824\nmax_buffered_bytes = 1073741824"
                .to_string(),
            1,
        ),
        Scenario::InFlight => (format!("max_running = {}", n.max(1)), n.max(1)),
    };
    config(
        prefix,
        &scheduler,
        &format!(
            r#"
            [tenants.bench.functions.hold]
            executor = {{ type = "inprocess", handler = "hold" }}
            concurrency = {concurrency}
            timeout = "2h"
            "#
        ),
    )
}

/// A memory child: runs the scheduler on a queue the parent loaded, prints one line
/// `memory baseline=… settled=… peak=… held=… accounted=… settled_in_ms=… stable=…`.
fn memory_child(scenario: Scenario) {
    let prefix = std::env::var(CHILD_PREFIX).unwrap();
    let n: usize = std::env::var(CHILD_TASKS).unwrap().parse().unwrap();
    let poll = Duration::from_millis(std::env::var(CHILD_POLL_MS).unwrap().parse().unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let metrics = tidewater::telemetry::metrics_handle().unwrap();
    let cfg = memory_config(&prefix, scenario, n);
    let mut handlers = Handlers::new();
    handlers.register("hold", |_| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(Vec::new())
    });
    std::thread::sleep(poll);
    let baseline = common::vm_rss("self");
    let stop = CancellationToken::new();
    let scheduler = rt.spawn(Scheduler::new(cfg, handlers).run(stop.clone()));

    let started = Instant::now();
    let timeout = Duration::from_secs(300);
    let (mut peak, mut rss, mut calm, mut held, mut accounted) = (0u64, 0u64, 0, 0.0, 0.0);
    let mut stable = false;
    while started.elapsed() < timeout {
        std::thread::sleep(poll);
        // Rendering also drains the recorder's histogram samples.
        let page = metrics.render();
        rss = common::vm_rss("self");
        held = match scenario {
            Scenario::Idle => metric(&page, "tidewater_rebalances_total"),
            Scenario::Buffered => metric(&page, "tidewater_buffered_tasks"),
            // Running, and accounted in the buffer gauges (exported every second).
            Scenario::InFlight => metric(&page, "tidewater_tasks_running")
                .min(metric(&page, "tidewater_buffered_tasks")),
        };
        accounted = metric(&page, "tidewater_buffered_bytes");
        let target = if scenario == Scenario::Idle {
            1.0
        } else {
            n as f64
        };
        // Settled: no new peak (beyond 256 KiB of noise) for three samples in a row.
        if rss > peak + 256 * 1024 {
            calm = 0;
        } else {
            calm += 1;
        }
        peak = peak.max(rss);
        if held >= target && calm >= 3 {
            stable = true;
            break;
        }
        if held < target {
            calm = 0;
        }
    }
    let settled_in = started.elapsed();
    println!(
        "memory baseline={baseline} settled={rss} peak={peak} held={held} accounted={accounted} settled_in_ms={} stable={stable}",
        settled_in.as_millis()
    );
    stop.cancel();
    let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), scheduler).await });
    rt.shutdown_timeout(Duration::from_secs(1));
}

struct Memory {
    tasks: usize,
    baseline: u64,
    settled: u64,
    peak: u64,
    held: f64,
    accounted: f64,
    settled_in_ms: u64,
    stable: bool,
}

impl Memory {
    fn delta(&self) -> i64 {
        self.settled as i64 - self.baseline as i64
    }
}

/// Creates the topics, loads `n` tasks, then runs the scenario in a fresh process.
fn memory_run(rt: &tokio::runtime::Runtime, scenario: Scenario, n: usize, poll_ms: u64) -> Memory {
    let prefix = common::prefix(&format!("mem{}", scenario.name()));
    let cfg = memory_config(&prefix, scenario, n);
    let tasks = (0..n)
        .map(|i| task(&format!("m-{i}"), "hold", &format!("{{\"n\":{i}}}")))
        .collect();
    rt.block_on(common::load(&cfg, TENANT, tasks));
    let out = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_KIND, scenario.name())
        .env(CHILD_PREFIX, &prefix)
        .env(CHILD_TASKS, n.to_string())
        .env(CHILD_POLL_MS, poll_ms.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "memory child {} failed: {text}",
        scenario.name()
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("memory "))
        .unwrap_or_else(|| panic!("no result from memory child: {text}"));
    let field = |name: &str| -> String {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {line}"))
            .to_string()
    };
    Memory {
        tasks: n,
        baseline: field("baseline").parse().unwrap(),
        settled: field("settled").parse().unwrap(),
        peak: field("peak").parse().unwrap(),
        held: field("held").parse().unwrap(),
        accounted: field("accounted").parse().unwrap(),
        settled_in_ms: field("settled_in_ms").parse().unwrap(),
        stable: field("stable") == "true",
    }
}

// ---------------------------------------------------------------------------------------

fn mib(b: i64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn main() {
    if let Ok(kind) = std::env::var(CHILD_KIND) {
        memory_child(Scenario::parse(&kind));
        return;
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this as a quick smoke
    // check of the same code paths with small counts.
    let measuring = common::measuring();
    let scale: f64 = std::env::var("TW_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let scaled = |full: usize, smoke: usize| {
        let base = if measuring { full } else { smoke };
        ((base as f64 * scale).round() as usize).max(1)
    };
    let load = Load {
        a: scaled(500, 5),
        b: scaled(2_000, 40),
    };
    let buffered_n = scaled(100_000, 2_000);
    let inflight_n = scaled(10_000, 200);
    // The FIFO control with A needs about a × 200 ms.
    let timeout = Duration::from_secs(120) + A_SLEEP * (2 * load.a as u32);
    let rt = tokio::runtime::Runtime::new().unwrap();

    // TW_BENCH_PARTS (default "isolation,memory") picks what runs.
    let parts = std::env::var("TW_BENCH_PARTS").unwrap_or_else(|_| "isolation,memory".into());
    if parts.contains("isolation") {
        // Spilling at half the buffer (the default before exactly-once spilled at 100
        // tasks): A's backlog stays in memory, and the figure is the per-function queues'.
        let half = "spill_after = 0.5";
        let tw_alone = rt.block_on(tidewater_run(load, false, half, timeout));
        let tw_with_a = rt.block_on(tidewater_run(load, true, half, timeout));
        // A's backlog ten times the partition's buffer: it spills to its overflow queue.
        let over = format!(
            "max_buffered_per_partition = {}\n{half}",
            (load.a / 10).max(2)
        );
        let tw_over_alone = rt.block_on(tidewater_run(load, false, &over, timeout));
        let tw_over_with_a = rt.block_on(tidewater_run(load, true, &over, timeout));
        let fifo_alone = rt.block_on(fifo_run(load, false, timeout));
        let fifo_with_a = rt.block_on(fifo_run(load, true, timeout));

        println!(
            "isolation: one partition (broker {}){}",
            bootstrap(),
            if measuring {
                ""
            } else {
                " [smoke: small counts]"
            }
        );
        println!(
            "  A: {} tasks, concurrency {A_CONCURRENCY}, {} ms each | B: {} tasks, concurrency {B_CONCURRENCY}, {} ms each | 1 A per 4 B",
            load.a,
            A_SLEEP.as_millis(),
            load.b,
            B_SLEEP.as_millis()
        );
        println!(
            "  {:<26} {:>9} {:>9} {:>9} {:>14} {:>22}",
            "B submit->start (ms)", "p50", "p99", "max", "p99 / alone", "A started before B done"
        );
        let row = |name: &str, run: &Run, alone: Option<&Stats>| {
            let s = stats(run);
            let ratio = alone.map_or("1.00 (base)".to_string(), |a| {
                format!("{:.2}", s.p99 as f64 / a.p99.max(1) as f64)
            });
            let a = alone.map_or("-".to_string(), |_| {
                format!("{} of {}", run.a_started_before_last_b, load.a)
            });
            println!(
                "  {name:<26} {:>9} {:>9} {:>9} {ratio:>14} {a:>22}",
                s.p50, s.p99, s.max
            );
        };
        let (tw_base, fifo_base) = (stats(&tw_alone), stats(&fifo_alone));
        row("tidewater, B alone", &tw_alone, None);
        row("tidewater, B with A", &tw_with_a, Some(&tw_base));
        let over_base = stats(&tw_over_alone);
        row("tidewater over-buffer, B", &tw_over_alone, None);
        row(
            "tidewater over-buffer, +A",
            &tw_over_with_a,
            Some(&over_base),
        );
        row("FIFO consumer, B alone", &fifo_alone, None);
        row("FIFO consumer, B with A", &fifo_with_a, Some(&fifo_base));
        println!(
            "  FIFO with A against tidewater alone: p99 ratio {:.2}",
            stats(&fifo_with_a).p99 as f64 / tw_base.p99.max(1) as f64
        );
    }
    if parts.contains("memory") {
        let poll_ms = if measuring { 500 } else { 200 };
        let idle = memory_run(&rt, Scenario::Idle, 0, poll_ms);
        let buffered = memory_run(&rt, Scenario::Buffered, buffered_n, poll_ms);
        let inflight = memory_run(&rt, Scenario::InFlight, inflight_n, poll_ms);

        println!("memory: VmRSS of a fresh bench process running the scheduler (1 partition)");
        println!(
            "  {:<22} {:>8} {:>12} {:>12} {:>12} {:>12} {:>14} {:>18} {:>9}",
            "scenario",
            "tasks",
            "baseline",
            "settled",
            "peak",
            "delta",
            "bytes/task",
            "accounted/task",
            "settled"
        );
        for (name, m) in [
            ("idle scheduler", &idle),
            ("buffered (blocked fn)", &buffered),
            ("in flight", &inflight),
        ] {
            let per_task = if m.tasks == 0 {
                "-".to_string()
            } else {
                format!("{:.0}", (m.delta() - idle.delta()) as f64 / m.tasks as f64)
            };
            let accounted = if m.tasks == 0 {
                "-".to_string()
            } else {
                format!("{:.0}", m.accounted / m.tasks as f64)
            };
            println!(
                "  {name:<22} {:>8} {:>12} {:>12} {:>12} {:>12} {per_task:>14} {accounted:>18} {:>8.1}s{}",
                m.tasks,
                mib(m.baseline as i64),
                mib(m.settled as i64),
                mib(m.peak as i64),
                mib(m.delta()),
                m.settled_in_ms as f64 / 1000.0,
                if m.stable {
                    String::new()
                } else {
                    format!(" NOT SETTLED (held {})", m.held)
                }
            );
        }
        println!(
            "  bytes/task = (delta - idle delta) / tasks; accounted/task = tidewater_buffered_bytes / tasks"
        );
        println!("throughput against a raw consume->produce pipe: cargo bench --bench throughput");
    }
}
