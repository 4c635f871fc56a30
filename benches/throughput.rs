//! Throughput baseline, in one run against one broker:
//!
//! (a) a raw rdkafka consume→produce pipe (at-least-once: offsets stored after delivery),
//! (b) the Tidewater scheduler running no-op in-process tasks with exactly-once delivery
//!     (one Kafka transaction per batch: outcomes, status events, offsets),
//! (c) the same with at-least-once delivery,
//!
//! and the ratios. All are measured the same way: the span between the first and the last
//! output record's timestamp (set when produced), so group joins and start-up are not
//! counted.
//!
//! ```sh
//! scripts/kafka.sh start
//! cargo bench --bench throughput     # TW_BENCH_TASKS=20000 by default
//! ```
//!
//! Under `cargo test` it runs as a smoke check with 300 tasks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::bootstrap;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, Message};
use tidewater::codec::Task;
use tidewater::config::Config;
use tidewater::executor::Handlers;
use tidewater::scheduler::Scheduler;
use tokio_util::sync::CancellationToken;

fn config(prefix: &str, delivery: &str) -> Config {
    common::config(
        prefix,
        3,
        &format!(
            r#"
            [scheduler]
            max_running = 1000
            delivery = "{delivery}"
            [tenants.bench.functions.noop]
            executor = {{ type = "inprocess", handler = "noop" }}
            concurrency = 1000
            on_success = "{prefix}.out"
            "#
        ),
    )
}

fn tasks(n: usize) -> Vec<Task> {
    (0..n)
        .map(|i| common::task(&format!("bench-{i}"), "noop", &format!("{{\"n\":{i}}}")))
        .collect()
}

/// Waits until `n` records are on `topic`; returns the seconds between the first and the
/// last record's timestamp (set by the producer when it sent them), so the reader's own
/// speed does not count.
fn span_of_output(topic: &str, n: usize, timeout: Duration) -> f64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", format!("{topic}.reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + timeout;
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    let mut seen = 0;
    while seen < n {
        assert!(
            Instant::now() < deadline,
            "only {seen} of {n} records on {topic}"
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let ts = m
                .timestamp()
                .to_millis()
                .expect("records carry a timestamp");
            first = first.min(ts);
            last = last.max(ts);
            seen += 1;
        }
    }
    ((last - first).max(1)) as f64 / 1000.0
}

async fn raw_pipe(config: Arc<Config>, input: String, output: String, stop: CancellationToken) {
    let consumer: StreamConsumer = tidewater::kafka::client_config(&config)
        .set("group.id", format!("{input}.pipe"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[&input]).unwrap();
    let producer = tidewater::kafka::producer(&config).unwrap();
    let mut pending: FuturesUnordered<
        futures_util::future::BoxFuture<'static, (String, i32, i64, bool)>,
    > = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some((topic, partition, offset, delivered)) = pending.next(), if !pending.is_empty() => {
                if delivered {
                    let _ = consumer.store_offset(&topic, partition, offset);
                }
            }
            msg = consumer.recv(), if pending.len() < 5000 => {
                let msg = msg.unwrap();
                let fut = producer
                    .send_result(
                        FutureRecord::to(&output)
                            .key(msg.key().unwrap_or_default())
                            .payload(msg.payload().unwrap_or_default()),
                    )
                    .map_err(|(e, _)| e)
                    .unwrap();
                let (topic, partition, offset) = (msg.topic().to_string(), msg.partition(), msg.offset());
                pending.push(Box::pin(async move { (topic, partition, offset, matches!(fut.await, Ok(Ok(_)))) }));
            }
        }
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this as a quick smoke
    // check of the same code paths with a small count.
    let n = common::count("TW_BENCH_TASKS", 20_000, 300);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let run = ulid::Ulid::new().to_string().to_lowercase();

    // (a) raw consume→produce pipe.
    let a_cfg = Arc::new(config(&format!("bench{run}a"), "at_least_once"));
    let (a_in, a_out) = (
        a_cfg.queue_topic("bench", "noop"),
        format!("bench{run}a.out"),
    );
    rt.block_on(common::load(&a_cfg, "bench", tasks(n)));
    let stop = CancellationToken::new();
    let pipe = rt.spawn(raw_pipe(a_cfg.clone(), a_in, a_out.clone(), stop.clone()));
    let raw_secs = span_of_output(&a_out, n, Duration::from_secs(600));
    stop.cancel();
    rt.block_on(pipe).unwrap();

    // (b) the scheduler on no-op tasks, exactly-once (transactions); (c) at-least-once.
    let sched_secs = scheduler_span(&rt, &format!("bench{run}b"), "exactly_once", n);
    let alo_secs = scheduler_span(&rt, &format!("bench{run}c"), "at_least_once", n);

    let raw_rate = n as f64 / raw_secs;
    let sched_rate = n as f64 / sched_secs;
    let alo_rate = n as f64 / alo_secs;
    println!("tasks: {n} (3 partitions, broker {})", bootstrap());
    println!("(a) raw rdkafka consume->produce pipe : {raw_rate:>10.0} tasks/s ({raw_secs:.2}s)");
    println!(
        "(b) tidewater, exactly-once (default): {sched_rate:>10.0} tasks/s ({sched_secs:.2}s)"
    );
    println!("(c) tidewater, at-least-once         : {alo_rate:>10.0} tasks/s ({alo_secs:.2}s)");
    println!(
        "ratio (b)/(a)                         : {:>10.2}",
        sched_rate / raw_rate
    );
    println!(
        "ratio (c)/(a)                         : {:>10.2}",
        alo_rate / raw_rate
    );
    println!(
        "ratio (b)/(c), cost of transactions   : {:>10.2}",
        sched_rate / alo_rate
    );
}

/// Loads `n` tasks under `prefix`, runs the scheduler with `delivery` until all their
/// outcomes are out, and returns the span of the outcomes' timestamps.
fn scheduler_span(rt: &tokio::runtime::Runtime, prefix: &str, delivery: &str, n: usize) -> f64 {
    let cfg = config(prefix, delivery);
    let out = format!("{prefix}.out");
    rt.block_on(common::load(&cfg, "bench", tasks(n)));
    let stop = CancellationToken::new();
    let sched = rt.spawn(Scheduler::new(cfg, Handlers::builtin()).run(stop.clone()));
    let secs = span_of_output(&out, n, Duration::from_secs(600));
    stop.cancel();
    rt.block_on(sched).unwrap().unwrap();
    secs
}
