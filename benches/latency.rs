//! Latency under an open-loop load: tasks arrive at a fixed rate whatever the scheduler
//! does (a closed loop would slow its arrivals down with the scheduler and hide the
//! queueing), at 10%, 50% and 80% of the maximum rate measured first in the same run, for
//! exactly-once and at-least-once delivery.
//!
//! Per task, from the outcome event: **submit→start** (the first attempt's start minus the
//! task's `submitted_at`, the instant the producer was due to send it), and
//! **submit→visible** (when a `read_committed` consumer of the outcome topic received the
//! outcome, minus `submitted_at`). All clocks are this host's. HDR histograms, p50 / p99 /
//! p99.9. `gen-late`: how late the load generator handed a task over at worst; above a few
//! milliseconds the load was not offered as asked.
//!
//! The maximum: the rate of the middle 80% of the outcomes of a preloaded backlog of
//! `TW_BENCH_TASKS` (100,000) no-op tasks, by the outcome records' timestamps.
//!
//! The baseline, in the same run and under the same load: **raw pipe**, a raw
//! transactional consume→produce pipe that writes what the scheduler writes per no-op task
//! (three records with its headers) in transactions committed back to back. Its
//! submit→received is the floor of submit→start, its submit→visible the floor of
//! submit→visible (see [`raw_pipe`]).
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
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::producer::{BaseProducer, FutureProducer, FutureRecord, Producer};
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

/// An empty histogram of latencies in milliseconds, 3 significant digits, up to an hour.
/// Its range is fixed up front: `saturating_record` clamps to the current range of an
/// auto-resizing histogram without growing it, which misfiled everything above about 2 s.
fn latencies() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000, 3).unwrap()
}

/// Records `now - since` (ms) in `h`; a negative difference as 0.
fn record_since(h: &mut Histogram<u64>, since: i64, now: i64) {
    h.saturating_record(u64::try_from(now - since).unwrap_or(0));
}

/// When the task in `payload` (Avro) was due: its `submitted_at`, else `now`.
fn submitted_at(payload: &[u8], now: i64) -> i64 {
    codec::decode_task(payload, Some(h::CONTENT_TYPE_AVRO))
        .unwrap()
        .submitted_at
        .unwrap_or(now)
}

/// Latencies of one load.
struct Measured {
    rate: f64,
    sent: usize,
    /// How late the load generator handed a task over, at worst (ms): above a
    /// few milliseconds the load was not offered as asked, and the latencies include the
    /// generator's own queueing.
    behind: i64,
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
    let mut sched =
        tokio::spawn(Scheduler::new(cfg.clone(), Handlers::builtin()).run(stop.clone()));
    let outcomes = reader(&cfg, &out);
    let producer: FutureProducer = tidewater::kafka::producer(&cfg).unwrap();
    // Warm-up: the scheduler has joined its group once this task's outcome is out.
    let warm = common::task("warm", "noop", "");
    send(&producer, &queue, &warm, now_ms()).await;
    while next_outcome(&outcomes).await.0.task_id != "warm" {}

    let total = ((rate * secs).round() as usize).max(1);
    let sender = generate(producer, queue, rate, total);
    let mut start = latencies();
    let mut visible = latencies();
    let mut seen = 0usize;
    while seen < total {
        let (o, received) = tokio::select! {
            r = next_outcome(&outcomes) => r,
            r = &mut sched => panic!("the scheduler stopped: {r:?}"),
        };
        if o.task_id == "warm" {
            continue;
        }
        let started = o.attempts.first().map_or(o.finished_at, |a| a.started_at);
        record_since(&mut start, o.submitted_at, started);
        record_since(&mut visible, o.submitted_at, received);
        seen += 1;
    }
    let (sent, behind) = sender.await.unwrap();
    stop.cancel();
    sched.await.unwrap().unwrap();
    Measured {
        rate,
        sent,
        behind,
        start,
        visible,
    }
}

/// The open-loop load: `total` tasks to `queue` at `rate` a second, each stamped with the
/// instant it was due; the task gives how many were sent, once all are acknowledged, and
/// how late it handed a task to the producer at worst (ms).
fn generate(
    producer: FutureProducer,
    queue: String,
    rate: f64,
    total: usize,
) -> tokio::task::JoinHandle<(usize, i64)> {
    let begin = Instant::now();
    let begin_ms = now_ms();
    tokio::spawn(async move {
        let mut sent = 0usize;
        let mut behind = 0i64;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        while sent < total {
            tick.tick().await;
            // Every task due by now goes, stamped with the instant it was due.
            let due = ((begin.elapsed().as_secs_f64() * rate) as usize + 1).min(total);
            while sent < due {
                let at = begin_ms + (sent as f64 * 1000.0 / rate) as i64;
                let t = common::task(&format!("t-{sent}"), "noop", "{}");
                send(&producer, &queue, &t, at).await;
                behind = behind.max(now_ms() - at);
                sent += 1;
            }
        }
        // Dropping a producer purges what it has not sent yet: every task goes out first.
        tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(60)))
            .await
            .unwrap()
            .unwrap();
        (sent, behind)
    })
}

/// The baseline: a raw transactional pipe under the same open-loop load. A consumer thread
/// with the scheduler's consumer settings records submit→received (in `start`) and hands
/// each record to a producer thread, which writes [`common::RECORDS_PER_TASK`] copies of
/// it with the scheduler's headers (as throughput's (e)) in transactions that carry the
/// offsets, each committed as soon as the previous one is, with the publisher's producer
/// settings; a `read_committed` reader of its output gives submit→visible. No scheduler
/// can do the same work sooner on the same machine.
async fn raw_pipe(rate: f64, secs: f64) -> Measured {
    use std::sync::Arc;
    use std::sync::mpsc as smpsc;
    let prefix = common::prefix("latpipe");
    let cfg = common::noop_config(&prefix, "exactly_once");
    common::load(&cfg, "bench", Vec::new()).await;
    let queue = cfg.queue_topic("bench", "noop");
    let out = format!("{prefix}.out");
    let status = tidewater::names::topics::status(&cfg.topics.prefix);
    let consumer: Arc<BaseConsumer> = Arc::new(
        tidewater::kafka::client_config(&cfg)
            .set("group.id", format!("{prefix}.pipe"))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("group.protocol", "consumer")
            .set("group.remote.assignor", "range")
            .set("fetch.wait.max.ms", "100")
            .set("fetch.queue.backoff.ms", "100")
            .set("queued.max.messages.kbytes", "8192")
            .create()
            .unwrap(),
    );
    consumer.subscribe(&[&queue]).unwrap();
    let producer: BaseProducer = tidewater::kafka::client_config(&cfg)
        .set("transactional.id", format!("{prefix}.pipe.tx"))
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("compression.type", "lz4")
        .set("retry.backoff.ms", "10")
        .set("transaction.timeout.ms", "10000")
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = {
        let stop = stop.clone();
        move || stop.load(std::sync::atomic::Ordering::Relaxed)
    };
    // Record: topic, partition, offset, key, payload.
    type Input = (String, i32, i64, Vec<u8>, Vec<u8>);
    let (tx, rx) = smpsc::sync_channel::<Input>(10_000);
    let received = std::thread::spawn({
        let (consumer, stopped) = (consumer.clone(), stopped.clone());
        move || {
            let mut start = latencies();
            while !stopped() {
                let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
                    continue;
                };
                let now = now_ms();
                let payload = m.payload().unwrap_or_default();
                if m.key() != Some(b"warm".as_slice()) {
                    record_since(&mut start, submitted_at(payload, now), now);
                }
                let input = (
                    m.topic().to_string(),
                    m.partition(),
                    m.offset(),
                    m.key().unwrap_or_default().to_vec(),
                    payload.to_vec(),
                );
                if tx.send(input).is_err() {
                    break;
                }
            }
            start
        }
    });
    let writer = std::thread::spawn(move || {
        let mut next = std::collections::HashMap::<(String, i32), i64>::new();
        while !stopped() {
            let Ok(first) = rx.recv_timeout(Duration::from_millis(100)) else {
                continue;
            };
            producer.begin_transaction().unwrap();
            for (topic, partition, offset, key, payload) in
                std::iter::once(first).chain(rx.try_iter())
            {
                common::send_task_records(&producer, (&out, &status), (&key, &payload), true);
                next.insert((topic, partition), offset + 1);
            }
            common::commit_with_offsets(&producer, &consumer, &next);
        }
    });
    let outcomes = reader(&cfg, &format!("{prefix}.out"));
    let submitter: FutureProducer = tidewater::kafka::producer(&cfg).unwrap();
    // Warm-up: the pipe has its partitions and its transactions work once this is out.
    send(
        &submitter,
        &queue,
        &common::task("warm", "noop", ""),
        now_ms(),
    )
    .await;
    while next_record(&outcomes).await.key() != Some(b"warm".as_slice()) {}
    let total = ((rate * secs).round() as usize).max(1);
    let sender = generate(submitter, queue, rate, total);
    let mut visible = latencies();
    while (visible.len() as usize) < total {
        let m = next_record(&outcomes).await;
        let now = now_ms();
        let at = submitted_at(m.payload().unwrap_or_default(), now);
        record_since(&mut visible, at, now);
    }
    let (sent, behind) = sender.await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let start = tokio::task::spawn_blocking(move || {
        writer.join().unwrap();
        received.join().unwrap()
    })
    .await
    .unwrap();
    Measured {
        rate,
        sent,
        behind,
        start,
        visible,
    }
}

/// Prints one line of the table (`visible` as `-` where it was not measured), with how
/// late the load generator was at worst.
fn row(what: &str, load: &str, m: &Measured) {
    let q = |h: &Histogram<u64>, p: f64| {
        if h.is_empty() {
            "-".to_string()
        } else {
            format!("{}ms", h.value_at_quantile(p))
        }
    };
    println!(
        "  {:<14} {:>6} {:>9.0} {:>8} | {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} | {:>6}ms",
        what,
        load,
        m.rate,
        m.sent,
        q(&m.start, 0.5),
        q(&m.start, 0.99),
        q(&m.start, 0.999),
        q(&m.visible, 0.5),
        q(&m.visible, 0.99),
        q(&m.visible, 0.999),
        m.behind,
    );
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
            Err(_) => panic!("timed out waiting for outcomes: {}", positions(c)),
        }
    }
}

/// Where `c` stands in each assigned partition against its high watermark, to tell a
/// stalled reader from a stalled writer.
fn positions(c: &StreamConsumer) -> String {
    let Ok(tpl) = c.position() else {
        return "no position".to_string();
    };
    tpl.elements()
        .iter()
        .map(|e| {
            let high = c
                .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(5))
                .map_or(-1, |(_, h)| h);
            format!(
                "{}-{} at {:?} of {high}",
                e.topic(),
                e.partition(),
                e.offset()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
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

/// Tasks per second the scheduler sustains on a preloaded backlog of `n`: the rate of the
/// middle 80% of the outcomes, by their timestamps, so neither the scheduler's start (the
/// group join, the first fetch) nor the first and last batches' steps count.
async fn max_rate(delivery: &str, n: usize) -> f64 {
    let n = n.max(100);
    let prefix = common::prefix("max");
    let cfg = common::noop_config(&prefix, delivery);
    let tasks = (0..n)
        .map(|i| common::task(&format!("m-{i}"), "noop", "{}"))
        .collect();
    common::load(&cfg, "bench", tasks).await;
    let outcomes = reader(&cfg, &format!("{prefix}.out"));
    let stop = CancellationToken::new();
    let sched = tokio::spawn(Scheduler::new(cfg, Handlers::builtin()).run(stop.clone()));
    let mut stamps = Vec::with_capacity(n);
    for _ in 0..n {
        let msg = next_record(&outcomes).await;
        stamps.push(msg.timestamp().to_millis().unwrap_or_else(now_ms));
    }
    stop.cancel();
    sched.await.unwrap().unwrap();
    stamps.sort_unstable();
    // n ≥ 100: the two are apart and within range.
    let (from, to) = (n / 10, n * 9 / 10);
    (to - from) as f64 / ((stamps[to] - stamps[from]).max(1) as f64 / 1000.0)
}

fn main() {
    let measuring = common::measuring();
    let secs: f64 = std::env::var("TW_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if measuring { 10.0 } else { 1.0 });
    // The scheduler records its metrics as in production: into the Prometheus recorder.
    tidewater::telemetry::metrics_handle().unwrap();
    // RUST_LOG=warn (for example) shows the scheduler's own log on stderr.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!(
        "latency: open-loop load, no-op tasks, 3 partitions (broker {}){}",
        common::bootstrap(),
        if measuring { "" } else { " [smoke]" }
    );
    println!(
        "  {:<14} {:>6} {:>9} {:>8} | {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} | {:>8}",
        "delivery",
        "load",
        "tasks/s",
        "tasks",
        "start50",
        "start99",
        "start999",
        "vis50",
        "vis99",
        "vis999",
        "gen-late"
    );
    // TW_BENCH_DELIVERY and TW_BENCH_LOADS (labels, e.g. "1000/s") narrow the run;
    // TW_BENCH_RAW=0 leaves out the raw pipe.
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
                common::count("TW_BENCH_TASKS", 100_000, 300),
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
            row(delivery, label, &m);
            // The baseline under the same load, right after (exactly-once's loads).
            if delivery == "exactly_once" && only("TW_BENCH_RAW", "1") {
                row("raw_pipe", label, &rt.block_on(raw_pipe(rate, secs)));
            }
        }
        if needs_max {
            println!("  ({delivery}: maximum measured {max:.0} tasks/s on a preloaded backlog)");
        }
    }
}
