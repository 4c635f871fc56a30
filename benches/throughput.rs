//! Throughput baseline, in one run against one broker:
//!
//! (a) a raw rdkafka consume→produce pipe (at-least-once: offsets stored after delivery),
//! (b) the Tidewater scheduler running no-op in-process tasks with exactly-once delivery
//!     (one Kafka transaction per batch: outcomes, status events, offsets),
//! (c) the same with at-least-once delivery,
//! (d) a raw *transactional* pipe: per input record it writes as many records as the
//!     scheduler does for a no-op task (the outcome and two status events), in
//!     transactions of about the scheduler's size (100 ms or 5,000 inputs) that also
//!     carry the consumed offsets: the floor for exactly-once,
//! (e) the same as (d) with, on every record, the five headers the scheduler writes on
//!     each record of a no-op task (content type, event kind, task id, tenant, function;
//!     values the input's payload, smaller than the scheduler's events): the floor for
//!     exactly-once with the scheduler's record layout,
//!
//! and the ratios. All are measured the same way: the span between the first and the last
//! output record's timestamp (set when produced), so group joins and start-up are not
//! counted. CPU per task is the process's CPU time (user + system, all threads, from
//! `/proc/self/stat`) while the variant runs, divided by the tasks; it includes the bench's
//! own reader of the output topic, the same for every variant. When the broker is the
//! local one of `scripts/kafka.sh` (or `TW_BENCH_BROKER_PID` names it), its CPU time over
//! the same stretch is shown beside it: on two cores shared by both, the sum per task is
//! what bounds the rate.
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

/// CPU time so far (user + system, all threads), in seconds: of this process, and of the
/// local broker when its process is known (see [`broker_pid`]). On a machine of two cores
/// shared by both, their sum per task is what bounds the rate.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    own: f64,
    broker: Option<f64>,
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, before: Cpu) -> Cpu {
        Cpu {
            own: self.own - before.own,
            broker: self.broker.zip(before.broker).map(|(a, b)| a - b),
        }
    }
}

fn cpu_seconds() -> Cpu {
    Cpu {
        own: process_cpu("self").unwrap_or(0.0),
        broker: broker_pid().and_then(|pid| process_cpu(&pid.to_string())),
    }
}

/// CPU seconds of process `pid` ("self" for this one), from `/proc/<pid>/stat`.
fn process_cpu(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_cpu(&stat).map(|(_, secs)| secs)
}

/// The command name and CPU seconds (user + system) of a `/proc/.../stat` line.
fn stat_cpu(stat: &str) -> Option<(&str, f64)> {
    // Fields after the command name, which is in parentheses and may hold spaces.
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(').map_or("?", |(_, n)| n);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    // utime and stime are fields 14 and 15 of the line (11 and 12 after the name).
    let hz = 100.0; // USER_HZ on Linux
    Some((name, (ticks(11)? + ticks(12)?) / hz))
}

/// The broker's process: `TW_BENCH_BROKER_PID`, else the pid file `scripts/kafka.sh`
/// keeps for the broker on the bootstrap port (none for a remote broker).
fn broker_pid() -> Option<u32> {
    if let Ok(pid) = std::env::var("TW_BENCH_BROKER_PID") {
        return pid.trim().parse().ok();
    }
    let server = bootstrap();
    let (host, port) = server.split(',').next()?.rsplit_once(':')?;
    if !matches!(host, "127.0.0.1" | "localhost") {
        return None;
    }
    let home = std::env::var("TW_KAFKA_HOME").ok().or_else(|| {
        let cache = std::env::var("XDG_CACHE_HOME")
            .ok()
            .or_else(|| std::env::var("HOME").ok().map(|h| format!("{h}/.cache")))?;
        Some(format!("{cache}/tidewater/kafka"))
    })?;
    let pid = std::fs::read_to_string(format!("{home}/broker-{port}/broker.pid")).ok()?;
    pid.trim().parse().ok()
}

/// Batches the publishers made durable so far in this process (transactions in
/// exactly-once mode), from the metrics recorder.
fn batches_made() -> f64 {
    let page = tidewater::telemetry::metrics_handle().unwrap().render();
    common::metric(&page, tidewater::names::metrics::TRANSACTIONS)
}

/// CPU seconds per thread name (threads of the same name summed), from
/// `/proc/self/task/*/stat`: where a variant's CPU goes (`TW_BENCH_THREADS=1`).
fn cpu_by_thread() -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in dir.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let Some((name, secs)) = stat_cpu(&stat) else {
            continue;
        };
        // Names like `rdk:broker123` differ by number only.
        let name: String = name.trim_end_matches(|c: char| c.is_ascii_digit()).into();
        *out.entry(name).or_default() += secs;
    }
    out
}

/// Prints how the CPU spent between `before` and now is shared among threads.
fn print_thread_cpu(before: &std::collections::BTreeMap<String, f64>) {
    if std::env::var("TW_BENCH_THREADS").is_err() {
        return;
    }
    for (name, secs) in cpu_by_thread() {
        let spent = secs - before.get(&name).copied().unwrap_or(0.0);
        if spent >= 0.01 {
            println!("    thread {name:<20} {spent:>7.2} s");
        }
    }
}

/// (d): consume, write [`common::RECORDS_PER_TASK`] records per input (one to `output`, the rest
/// to `status`), and commit them with the consumed offsets in one transaction per 100 ms
/// or 5,000 inputs, with the scheduler publisher's producer settings (no linger, 10 ms
/// retry backoff, deliveries served in 1 ms slices before the commit). With
/// `with_headers`, (e): each record also carries the scheduler's headers. Blocking; runs
/// until `stop`.
fn transactional_pipe(
    config: &Config,
    input: &str,
    output: &str,
    status: &str,
    stop: &CancellationToken,
    with_headers: bool,
) {
    use rdkafka::producer::{BaseProducer, Producer};
    let group = format!("{input}.txpipe");
    let consumer: BaseConsumer = tidewater::kafka::client_config(config)
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    consumer.subscribe(&[input]).unwrap();
    let producer: BaseProducer = tidewater::kafka::client_config(config)
        .set("transactional.id", format!("{group}.tx"))
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("retry.backoff.ms", "10")
        .set("compression.type", "lz4")
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    let mut open = false;
    let mut inputs = 0usize;
    let mut since = Instant::now();
    let mut next: std::collections::HashMap<(String, i32), i64> = Default::default();
    while !stop.is_cancelled() {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(5)) {
            if !open {
                producer.begin_transaction().unwrap();
                open = true;
                since = Instant::now();
            }
            common::send_task_records(
                &producer,
                (output, status),
                (m.key().unwrap_or_default(), m.payload().unwrap_or_default()),
                with_headers,
            );
            next.insert((m.topic().to_string(), m.partition()), m.offset() + 1);
            inputs += 1;
        }
        producer.poll(Duration::ZERO);
        if open && (inputs >= 5_000 || since.elapsed() >= Duration::from_millis(100)) {
            common::commit_with_offsets(&producer, &consumer, &next);
            open = false;
            inputs = 0;
        }
    }
    if open {
        let _ = producer.abort_transaction(Duration::from_secs(10));
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this as a quick smoke
    // check of the same code paths with a small count.
    let n = common::count("TW_BENCH_TASKS", 20_000, 300);
    // Which variants run (default all): e.g. TW_BENCH_VARIANTS=b for a profile of (b).
    let variants = std::env::var("TW_BENCH_VARIANTS").unwrap_or_else(|_| "adebc".into());
    let wants = |v: char| variants.contains(v);
    // The scheduler records its metrics as in production: into the Prometheus recorder.
    tidewater::telemetry::metrics_handle().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // With RUST_LOG set, the scheduler's log lines (e.g. the publisher's per-transaction
    // debug line) go to stderr.
    if std::env::var_os("RUST_LOG").is_some() {
        let telemetry = tidewater::config::TelemetryConfig::default();
        rt.block_on(async { tidewater::telemetry::init(&telemetry, "bench") })
            .unwrap();
    }
    let run = ulid::Ulid::new().to_string().to_lowercase();
    let rate = |secs: f64| n as f64 / secs;
    let us = |cpu: f64| cpu * 1e6 / n as f64;
    println!("tasks: {n} (3 partitions, broker {})", bootstrap());
    let line = |name: &str, (secs, cpu): (f64, Cpu)| {
        let broker = cpu.broker.map_or_else(String::new, |b| {
            format!(" + broker {:.1} = {:.1}", us(b), us(cpu.own + b))
        });
        println!(
            "{name:<38}: {:>10.0} tasks/s ({secs:.2}s) {:>8.1} CPU-us/task{broker}",
            rate(secs),
            us(cpu.own)
        );
        rate(secs)
    };

    // (a) raw consume->produce pipe.
    let raw = wants('a').then(|| {
        line(
            "(a) raw rdkafka consume->produce pipe",
            raw_pipe_span(&rt, &run, n),
        )
    });
    // (d) the raw transactional pipe writing what the scheduler writes.
    let txn = wants('d').then(|| {
        line(
            "(d) raw transactional pipe, 3 out/in",
            transactional_span(&rt, &run, n, false),
        )
    });
    // (e) the same with the headers the scheduler writes on each record.
    let txn_headers = wants('e').then(|| {
        line(
            "(e) raw transactional, 3 out + headers",
            transactional_span(&rt, &run, n, true),
        )
    });
    // (b) the scheduler on no-op tasks, exactly-once (transactions); (c) at-least-once.
    let eos = wants('b').then(|| {
        line(
            "(b) tidewater, exactly-once (default)",
            scheduler_span(&rt, &format!("bench{run}b"), "exactly_once", n),
        )
    });
    let alo = wants('c').then(|| {
        line(
            "(c) tidewater, at-least-once",
            scheduler_span(&rt, &format!("bench{run}c"), "at_least_once", n),
        )
    });
    let ratio = |name: &str, a: Option<f64>, b: Option<f64>| {
        if let (Some(a), Some(b)) = (a, b) {
            println!("{name:<38}: {:>10.2}", a / b);
        }
    };
    ratio("ratio (b)/(d), against the EOS floor", eos, txn);
    ratio(
        "ratio (b)/(e), against the floor + headers",
        eos,
        txn_headers,
    );
    ratio("ratio (d)/(a), cost of EOS and 3 out", txn, raw);
    ratio("ratio (e)/(d), cost of the headers", txn_headers, txn);
    ratio("ratio (b)/(a)", eos, raw);
    ratio("ratio (c)/(a)", alo, raw);
    ratio("ratio (b)/(c), cost of transactions", eos, alo);
}

/// (a): loads `n` tasks and runs the raw pipe over them; (span, CPU time).
fn raw_pipe_span(rt: &tokio::runtime::Runtime, run: &str, n: usize) -> (f64, Cpu) {
    let cfg = Arc::new(common::noop_config(
        &format!("bench{run}a"),
        "at_least_once",
    ));
    let (input, output) = (cfg.queue_topic("bench", "noop"), format!("bench{run}a.out"));
    rt.block_on(common::load(&cfg, "bench", tasks(n)));
    let stop = CancellationToken::new();
    let cpu0 = cpu_seconds();
    let pipe = rt.spawn(raw_pipe(cfg, input, output.clone(), stop.clone()));
    let secs = span_of_output(&output, n, Duration::from_secs(600));
    stop.cancel();
    rt.block_on(pipe).unwrap();
    (secs, cpu_seconds() - cpu0)
}

/// (d): loads `n` tasks and runs the transactional pipe over them; (span, CPU time).
fn transactional_span(
    rt: &tokio::runtime::Runtime,
    run: &str,
    n: usize,
    with_headers: bool,
) -> (f64, Cpu) {
    let name = if with_headers { "e" } else { "d" };
    let cfg = Arc::new(common::noop_config(
        &format!("bench{run}{name}"),
        "exactly_once",
    ));
    let (input, output) = (
        cfg.queue_topic("bench", "noop"),
        format!("bench{run}{name}.out"),
    );
    let status = tidewater::names::topics::status(&cfg.topics.prefix);
    rt.block_on(common::load(&cfg, "bench", tasks(n)));
    let stop = CancellationToken::new();
    let cpu0 = cpu_seconds();
    let pipe = std::thread::spawn({
        let (c, s, o) = (cfg.clone(), stop.clone(), output.clone());
        move || transactional_pipe(&c, &input, &o, &status, &s, with_headers)
    });
    let secs = span_of_output(&output, n, Duration::from_secs(600));
    stop.cancel();
    pipe.join().unwrap();
    (secs, cpu_seconds() - cpu0)
}

/// Loads `n` tasks under `prefix`, runs the scheduler with `delivery` until all their
/// outcomes are out, and returns the span of the outcomes' timestamps and the process CPU
/// seconds spent meanwhile.
fn scheduler_span(
    rt: &tokio::runtime::Runtime,
    prefix: &str,
    delivery: &str,
    n: usize,
) -> (f64, Cpu) {
    let cfg = common::noop_config(prefix, delivery);
    let out = format!("{prefix}.out");
    rt.block_on(common::load(&cfg, "bench", tasks(n)));
    let stop = CancellationToken::new();
    let threads0 = cpu_by_thread();
    let cpu0 = cpu_seconds();
    let sched = rt.spawn(Scheduler::new(cfg, Handlers::builtin()).run(stop.clone()));
    let batches0 = batches_made();
    let secs = span_of_output(&out, n, Duration::from_secs(600));
    // Before the scheduler's threads end.
    print_thread_cpu(&threads0);
    let batches = batches_made() - batches0;
    println!(
        "    {batches:.0} batches made durable ({:.0} tasks per batch)",
        n as f64 / batches.max(1.0)
    );
    stop.cancel();
    rt.block_on(sched).unwrap().unwrap();
    (secs, cpu_seconds() - cpu0)
}
