//! Latency under an open-loop load: tasks arrive at a fixed rate whatever the scheduler
//! does (a closed loop would slow its arrivals down with the scheduler and hide the
//! queueing), at 10%, 50% and 80% of the maximum rate measured first in the same run, for
//! exactly-once and at-least-once delivery.
//!
//! Per task, from the outcome event: **submit→start** (the first attempt's start minus the
//! task's `submitted_at`, the instant the producer was due to send it), and
//! **submit→visible** (when a `read_committed` consumer of the outcome topic received the
//! outcome, minus `submitted_at`). All clocks are this host's. HDR histograms, p50 / p99 /
//! p99.9.
//!
//! ```sh
//! scripts/kafka.sh start
//! cargo bench --bench latency        # TW_BENCH_SECONDS=10 per load by default
//! ```
//!
//! Under `cargo test` it runs as a smoke check: one short, slow load.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common.rs"]
mod common;

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tidewater::clock::now_ms;
use tidewater::codec::{self, Encoding};
use tidewater::config::Config;
use tidewater::executor::Handlers;
use tidewater::names::headers as h;
use tidewater::scheduler::Scheduler;
use tokio_util::sync::CancellationToken;

/// A `read_committed` reader of `topic` from its beginning.
fn reader(config: &Config, topic: &str) -> StreamConsumer {
    let c: StreamConsumer = tidewater::kafka::client_config(config)
        .set("group.id", format!("{topic}.latency"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "5")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    c
}

/// Latencies of one load.
struct Measured {
    rate: f64,
    sent: usize,
    start: Histogram<u64>,
    visible: Histogram<u64>,
}

/// Runs the scheduler with `delivery` under `rate` tasks/s for `secs`; waits for every
/// outcome.
async fn open_loop(delivery: &str, rate: f64, secs: f64) -> Measured {
    let prefix = common::prefix("lat");
    let cfg = common::noop_config(&prefix, delivery);
    common::load(&cfg, "bench", Vec::new()).await;
    let out = format!("{prefix}.out");
    let queue = cfg.queue_topic("bench", "noop");
    let stop = CancellationToken::new();
    let sched = tokio::spawn(Scheduler::new(cfg.clone(), Handlers::builtin()).run(stop.clone()));
    let outcomes = reader(&cfg, &out);
    let producer: FutureProducer = tidewater::kafka::producer(&cfg).unwrap();
    // Warm-up: the scheduler has joined its group once this task's outcome is out.
    let warm = common::task("warm", "noop", "");
    send(&producer, &queue, &warm, now_ms()).await;
    while next_outcome(&outcomes).await.0.task_id != "warm" {}

    let total = ((rate * secs).round() as usize).max(1);
    let begin = Instant::now();
    let begin_ms = now_ms();
    let sender = {
        let (producer, queue) = (producer.clone(), queue.clone());
        tokio::spawn(async move {
            let mut sent = 0usize;
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            while sent < total {
                tick.tick().await;
                // Every task due by now goes, stamped with the instant it was due.
                let due = ((begin.elapsed().as_secs_f64() * rate) as usize + 1).min(total);
                while sent < due {
                    let at = begin_ms + (sent as f64 * 1000.0 / rate) as i64;
                    let t = common::task(&format!("t-{sent}"), "noop", "{}");
                    send(&producer, &queue, &t, at).await;
                    sent += 1;
                }
            }
            sent
        })
    };
    let mut start = Histogram::<u64>::new(3).unwrap();
    let mut visible = Histogram::<u64>::new(3).unwrap();
    let mut seen = 0usize;
    while seen < total {
        let (o, received) = next_outcome(&outcomes).await;
        if o.task_id == "warm" {
            continue;
        }
        let started = o.attempts.first().map_or(o.finished_at, |a| a.started_at);
        start.saturating_record(u64::try_from(started - o.submitted_at).unwrap_or(0));
        visible.saturating_record(u64::try_from(received - o.submitted_at).unwrap_or(0));
        seen += 1;
    }
    let sent = sender.await.unwrap();
    stop.cancel();
    sched.await.unwrap().unwrap();
    Measured {
        rate,
        sent,
        start,
        visible,
    }
}

/// Sends a task without waiting for its acknowledgement (open loop); `at` is its
/// `submitted_at`.
async fn send(producer: &FutureProducer, queue: &str, task: &codec::Task, at: i64) {
    let mut task = task.clone();
    task.submitted_at = Some(at);
    let value = codec::encode_task_as(&task, Encoding::Avro).unwrap();
    let headers = tidewater::kafka::headers([(h::CONTENT_TYPE, h::CONTENT_TYPE_AVRO)]);
    let mut record = FutureRecord::to(queue)
        .key(&task.id)
        .payload(&value)
        .headers(headers);
    loop {
        match producer.send_result(record) {
            // Acknowledgements are not awaited: the load does not slow down with Kafka.
            Ok(_delivery) => return,
            Err((_, r)) => {
                record = r;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

/// The next record of `c` within 2 minutes. A consumer error is skipped: right after the
/// topic is created the broker may still answer "unknown topic" for a moment.
async fn next_record(c: &StreamConsumer) -> rdkafka::message::BorrowedMessage<'_> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        match tokio::time::timeout_at(deadline, c.recv()).await {
            Ok(Ok(msg)) => return msg,
            Ok(Err(e)) => eprintln!("reader: {e} (retrying)"),
            Err(_) => panic!("timed out waiting for outcomes"),
        }
    }
}

/// The next outcome and when it was received (ms).
async fn next_outcome(c: &StreamConsumer) -> (codec::Outcome, i64) {
    let msg = next_record(c).await;
    let received = now_ms();
    (
        codec::decode_outcome(msg.payload().unwrap_or_default()).unwrap(),
        received,
    )
}

/// Tasks per second the scheduler sustains on a preloaded backlog of `n`.
async fn max_rate(delivery: &str, n: usize) -> f64 {
    let prefix = common::prefix("max");
    let cfg = common::noop_config(&prefix, delivery);
    let tasks = (0..n)
        .map(|i| common::task(&format!("m-{i}"), "noop", "{}"))
        .collect();
    common::load(&cfg, "bench", tasks).await;
    let outcomes = reader(&cfg, &format!("{prefix}.out"));
    let stop = CancellationToken::new();
    let sched = tokio::spawn(Scheduler::new(cfg, Handlers::builtin()).run(stop.clone()));
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for _ in 0..n {
        let msg = next_record(&outcomes).await;
        let ts = msg.timestamp().to_millis().unwrap_or_else(now_ms);
        first = first.min(ts);
        last = last.max(ts);
    }
    stop.cancel();
    sched.await.unwrap().unwrap();
    n as f64 / ((last - first).max(1) as f64 / 1000.0)
}

fn main() {
    let measuring = common::measuring();
    let secs: f64 = std::env::var("TW_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if measuring { 10.0 } else { 1.0 });
    // The scheduler records its metrics as in production: into the Prometheus recorder.
    tidewater::telemetry::metrics_handle().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!(
        "latency: open-loop load, no-op tasks, 3 partitions (broker {}){}",
        common::bootstrap(),
        if measuring { "" } else { " [smoke]" }
    );
    println!(
        "  {:<14} {:>6} {:>9} {:>8} | {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8}",
        "delivery",
        "load",
        "tasks/s",
        "tasks",
        "start50",
        "start99",
        "start999",
        "vis50",
        "vis99",
        "vis999"
    );
    // TW_BENCH_DELIVERY and TW_BENCH_LOADS (labels, e.g. "1000/s") narrow the run.
    let only = |var: &str, what: &str| {
        std::env::var(var).map_or(true, |v| v.split(',').any(|x| x == what))
    };
    for delivery in ["exactly_once", "at_least_once"] {
        if !only("TW_BENCH_DELIVERY", delivery) {
            continue;
        }
        let needs_max = measuring
            && ["10%", "50%", "80%"]
                .iter()
                .any(|l| only("TW_BENCH_LOADS", l));
        let max = if needs_max {
            rt.block_on(max_rate(
                delivery,
                common::count("TW_BENCH_TASKS", 30_000, 300),
            ))
        } else {
            500.0
        };
        // Shares of the maximum, and the fixed rate of 1,000 tasks/s.
        let loads: &[(f64, &str)] = if measuring {
            &[(0.1, "10%"), (0.5, "50%"), (0.8, "80%"), (0.0, "1000/s")]
        } else {
            &[(0.1, "10%")]
        };
        for (share, label) in loads.iter().filter(|(_, l)| only("TW_BENCH_LOADS", l)) {
            let rate = if *share > 0.0 { max * share } else { 1000.0 };
            let m = rt.block_on(open_loop(delivery, rate, secs));
            let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p);
            println!(
                "  {:<14} {:>6} {:>9.0} {:>8} | {:>6}ms {:>6}ms {:>6}ms | {:>6}ms {:>6}ms {:>6}ms",
                delivery,
                label,
                m.rate,
                m.sent,
                q(&m.start, 0.5),
                q(&m.start, 0.99),
                q(&m.start, 0.999),
                q(&m.visible, 0.5),
                q(&m.visible, 0.99),
                q(&m.visible, 0.999),
            );
        }
        if needs_max {
            println!("  ({delivery}: maximum measured {max:.0} tasks/s on a preloaded backlog)");
        }
    }
}
