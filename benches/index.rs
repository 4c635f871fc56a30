//! Task index benchmark:
//!
//! (a) ingest rate of the store itself: task records and status events applied through
//!     `store::Writer::apply` (the indexer's write path, without Kafka), in batches of
//!     5,000, until the store holds N tasks;
//! (b) query latency on that store of N tasks: filtered pages of 100, as the API runs
//!     them (`store::Reader::list`);
//! (c) indexing rate from Kafka: status events pre-loaded into a 3-partition status
//!     topic, read, decoded and written by the real indexer, timed from its start until
//!     it reports ready (caught up).
//!
//! ```sh
//! scripts/kafka.sh start
//! cargo bench --bench index     # TW_BENCH_INDEX_TASKS=1000000, TW_BENCH_INDEX_EVENTS=200000
//! ```
//!
//! Under `cargo test` it runs as a smoke check with 2,000 tasks and 2,000 events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tidewater::codec::{self, FailureReason, Source, StatusEvent, TaskStatus};
use tidewater::store::indexer::Indexer;
use tidewater::store::query::{Cursor, TaskFilter, TimeRange};
use tidewater::store::{Ingest, QueuedTask, Reader, Run, Writer};
use tokio_util::sync::CancellationToken;

const TENANTS: [&str; 4] = ["acme", "globex", "initech", "umbrella"];
const FUNCTIONS: [&str; 5] = ["resize", "report", "notify", "bill", "sync"];
const DAY: i64 = 86_400_000;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

fn status(
    id: &str,
    tenant: &str,
    function: &str,
    status: TaskStatus,
    attempt: i32,
    at: i64,
    submitted_at: i64,
) -> StatusEvent {
    StatusEvent {
        task_id: id.into(),
        tenant: tenant.into(),
        function: function.into(),
        status,
        attempt,
        at,
        submitted_at,
        reason: (status == TaskStatus::Failed).then_some(FailureReason::Executor),
        error: (status == TaskStatus::Failed).then(|| "exit code 1: boom".into()),
        source: Source {
            topic: format!("tw.q.{tenant}"),
            partition: 0,
            offset: 0,
        },
        scheduler_id: "bench".into(),
    }
}

/// The records of task `i`: its task record, then 0 to 2 status events. 70% succeed,
/// 10% fail, 10% are queued, 5% running, 5% retrying; submitted over the last 7 days.
fn task_records(i: usize, n: usize, now: i64, rng: &mut Lcg) -> Vec<Ingest> {
    let tenant = TENANTS[rng.next(4) as usize];
    let function = FUNCTIONS[rng.next(5) as usize];
    let id = format!(
        "{}-{i:08}",
        ["order", "invoice", "job"][rng.next(3) as usize]
    );
    let submitted = now - 7 * DAY + i as i64 * (7 * DAY / n.max(1) as i64);
    let mut out = vec![Ingest::Queued(QueuedTask {
        tenant: tenant.into(),
        id: id.clone(),
        function: function.into(),
        submitted_at: submitted,
        topic: format!("tw.q.{tenant}"),
        partition: (i % 6) as i32,
        offset: i as i64,
        run: Run::default(),
        redrive_by: None,
    })];
    let roll = rng.next(100);
    let s = |st, a, at| {
        Ingest::Status(
            status(&id, tenant, function, st, a, at, submitted),
            Run::default(),
        )
    };
    match roll {
        0..70 => {
            out.push(s(TaskStatus::Running, 1, submitted + 100));
            out.push(s(TaskStatus::Succeeded, 1, submitted + 900));
        }
        70..80 => {
            out.push(s(TaskStatus::Running, 1, submitted + 100));
            out.push(s(TaskStatus::Failed, 1, submitted + 900));
        }
        80..90 => {}
        90..95 => out.push(s(TaskStatus::Running, 1, submitted + 100)),
        _ => {
            out.push(s(TaskStatus::Running, 1, submitted + 100));
            out.push(s(TaskStatus::Retrying, 1, submitted + 900));
        }
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this as a quick smoke
    // check.
    let measuring = common::measuring();
    let n = common::count("TW_BENCH_INDEX_TASKS", 1_000_000, 2_000);
    let events = common::count("TW_BENCH_INDEX_EVENTS", 200_000, 2_000);
    let dir = tempfile::tempdir().unwrap();
    let now = tidewater::clock::now_ms();

    // (a) ingest through the store's write path.
    let path = dir.path().join("bench.db");
    let mut writer = Writer::open(&path).unwrap();
    let mut rng = Lcg(7);
    let mut batch = Vec::with_capacity(5_100);
    let (mut statuses, mut records) = (0u64, 0u64);
    let started = Instant::now();
    let mut last_report = Instant::now();
    for i in 0..n {
        batch.extend(task_records(i, n, now, &mut rng));
        if batch.len() >= 5_000 || i + 1 == n {
            statuses += batch
                .iter()
                .filter(|b| matches!(b, Ingest::Status(..)))
                .count() as u64;
            records += batch.len() as u64;
            writer
                .apply(&batch, &[("tw.status".into(), 0, i as i64)])
                .unwrap();
            batch.clear();
            if measuring && last_report.elapsed() > Duration::from_secs(10) {
                last_report = Instant::now();
                eprintln!("  … {} tasks stored", i + 1);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    // What the indexer does once it has caught up.
    let t = Instant::now();
    writer.optimize().unwrap();
    let analyze = t.elapsed();
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(format!("{}-wal", path.display()))
            .map(|m| m.len())
            .unwrap_or(0);
    println!(
        "(a) store ingest: {n} tasks, {records} records ({statuses} status events) in {secs:.1}s: \
         {:.0} records/s, {:.0} status events/s; store {:.0} MiB; planner statistics {:.0} ms",
        records as f64 / secs,
        statuses as f64 / secs,
        size as f64 / (1024.0 * 1024.0),
        analyze.as_secs_f64() * 1e3
    );
    drop(writer);

    // (b) query latency at n tasks.
    let reader = Reader::open(&path).unwrap();
    assert_eq!(reader.count().unwrap(), n as u64);
    let page = |f: TaskFilter| TaskFilter { limit: 100, ..f };
    let second_page = {
        let first = reader
            .list(&page(TaskFilter {
                scope: Some("acme".into()),
                ..TaskFilter::default()
            }))
            .unwrap();
        first.next_cursor.map(|c| Cursor::decode(&c).unwrap())
    };
    let last_day = TimeRange {
        after: Some(now - DAY),
        before: None,
    };
    let queries: Vec<(&str, TaskFilter)> = vec![
        (
            "tenant, newest first",
            page(TaskFilter {
                scope: Some("acme".into()),
                ..TaskFilter::default()
            }),
        ),
        (
            "tenant, second page (cursor)",
            page(TaskFilter {
                scope: Some("acme".into()),
                cursor: second_page,
                ..TaskFilter::default()
            }),
        ),
        (
            "tenant + status=failed",
            page(TaskFilter {
                scope: Some("acme".into()),
                statuses: vec![TaskStatus::Failed],
                ..TaskFilter::default()
            }),
        ),
        (
            "tenant + status=failed + finished in the last 24h",
            page(TaskFilter {
                scope: Some("acme".into()),
                statuses: vec![TaskStatus::Failed],
                finished: last_day,
                ..TaskFilter::default()
            }),
        ),
        (
            "tenant + function + status=succeeded,failed + submitted in the last 24h",
            page(TaskFilter {
                scope: Some("acme".into()),
                function: Some("report".into()),
                statuses: vec![TaskStatus::Succeeded, TaskStatus::Failed],
                submitted: last_day,
                ..TaskFilter::default()
            }),
        ),
        (
            "tenant + id_prefix",
            page(TaskFilter {
                scope: Some("acme".into()),
                id_prefix: Some("invoice-0012".into()),
                ..TaskFilter::default()
            }),
        ),
        (
            "admin, all tenants, status=queued,retrying",
            page(TaskFilter {
                statuses: vec![TaskStatus::Queued, TaskStatus::Retrying],
                ..TaskFilter::default()
            }),
        ),
        (
            "admin, id_prefix, no match",
            page(TaskFilter {
                id_prefix: Some("zzz".into()),
                ..TaskFilter::default()
            }),
        ),
    ];
    let runs = if measuring { 50 } else { 3 };
    println!("(b) query latency at {n} tasks, page of 100, {runs} runs each:");
    for (what, filter) in &queries {
        let mut times = Vec::with_capacity(runs);
        let mut rows = 0;
        for _ in 0..runs {
            let t = Instant::now();
            rows = reader.list(filter).unwrap().tasks.len();
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "    {what:<72} {rows:>3} rows  p50 {:>8.2} ms  p99 {:>8.2} ms",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3
        );
    }
    let t = Instant::now();
    let activity = reader.activity(Some("acme"), now, 60).unwrap();
    println!(
        "    per-minute activity of one tenant, last 60 minutes: {:.2} ms ({} queues)",
        t.elapsed().as_secs_f64() * 1e3,
        activity.len()
    );

    // (c) from Kafka through the real indexer.
    let prefix = common::prefix("idx");
    let config = Arc::new(common::config(
        &prefix,
        3,
        &format!(
            r#"
            [indexer]
            store = "{}"
            [tenants.acme.functions.resize]
            executor = {{ type = "inprocess", handler = "noop" }}
            "#,
            dir.path().join("kafka.db").display()
        ),
    ));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(tidewater::kafka::init_topics(&config)).unwrap();
    let producer: rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext> =
        tidewater::kafka::client_config(&config)
            .set("linger.ms", "20")
            .set("compression.type", "lz4")
            .create()
            .unwrap();
    let topic = tidewater::names::topics::status(&prefix);
    let mut rng = Lcg(11);
    for i in 0..events {
        let id = format!("task-{:08}", i / 2);
        let st = if i % 2 == 0 {
            TaskStatus::Running
        } else if rng.next(10) == 0 {
            TaskStatus::Failed
        } else {
            TaskStatus::Succeeded
        };
        let ev = status(&id, "acme", "resize", st, 1, now + i as i64, now);
        let value = codec::encode_status(&ev).unwrap();
        let mut rec = rdkafka::producer::BaseRecord::<str, [u8]>::to(&topic)
            .key(&id)
            .payload(&value);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(60)).unwrap();
    let indexer = Indexer::open(config.clone()).unwrap();
    let status = indexer.status();
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let thread = indexer.spawn(shutdown.clone()).unwrap();
    while !status.is_ready() {
        assert!(status.failure().is_none(), "{:?}", status.failure());
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "indexer too slow"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let secs = started.elapsed().as_secs_f64();
    shutdown.cancel();
    thread.join().unwrap().unwrap();
    assert_eq!(status.records(), events as u64);
    println!(
        "(c) from Kafka: {events} status events read, decoded and indexed in {secs:.2}s: {:.0} status events/s (from indexer start to ready)",
        events as f64 / secs
    );
}
