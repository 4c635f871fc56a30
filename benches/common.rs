//! What the benchmarks share, with each other and with the integration tests (whose
//! helpers, `tests/common`, are included here): the broker, a configuration per run,
//! tasks and loading them, reading a topic back, resident memory and metrics. Each bench
//! includes this file with `#[path = "common.rs"] mod common;`.
// Each bench uses a part of this.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod tests_common;

use std::sync::Arc;

use tidewater::codec::Encoding;
use tidewater::config::Config;
use tidewater::submit::Submitter;

/// The allocator of the `tidewater` binary, so the benches measure what runs.
#[global_allocator]
static ALLOCATOR: tidewater_alloc::Allocator = tidewater_alloc::Allocator;

pub use tests_common::{bootstrap, metric, reader_from_start, submit_all, task, vm_rss};

/// Whether this is a measurement: `cargo bench` passes `--bench`. Without it (under
/// `cargo test --all-targets`) each bench runs as a smoke check of the same code paths
/// with small counts.
pub fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// A count: the variable `name` when set, else `full` when measuring, `smoke` otherwise.
pub fn count(name: &str, full: usize, smoke: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if measuring() { full } else { smoke })
}

/// A fresh topic prefix (and so fresh topics and groups) for one run: `bench<name><ulid>`.
pub fn prefix(name: &str) -> String {
    format!(
        "bench{name}{}",
        ulid::Ulid::new().to_string().to_lowercase()
    )
}

/// Configuration text for the bench broker: topics under `prefix` with `partitions`
/// partitions each, no metrics endpoint, then `body` with `{prefix}` replaced.
pub fn config_text(prefix: &str, partitions: u32, body: &str) -> String {
    format!(
        r#"
[kafka]
bootstrap_servers = "{}"
[topics]
prefix = "{prefix}"
partitions = {partitions}
[telemetry]
metrics_listen = "off"
{}
"#,
        bootstrap(),
        body.replace("{prefix}", prefix)
    )
}

/// [`config_text`], parsed; a bench whose configuration is refused stops with the text.
pub fn config(prefix: &str, partitions: u32, body: &str) -> Config {
    let text = config_text(prefix, partitions, body);
    Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// A submitter of Avro tasks.
pub fn submitter(config: &Config) -> Submitter {
    Submitter::new(Arc::new(config.clone()), Encoding::Avro).unwrap()
}

/// Creates the topics of `config` and loads `tasks` into `tenant`'s queues.
pub async fn load(config: &Config, tenant: &str, tasks: Vec<tidewater::codec::Task>) {
    tidewater::kafka::init_topics(config).await.unwrap();
    if !tasks.is_empty() {
        submit_all(&submitter(config), tenant, tasks).await;
    }
}

/// The throughput and latency benches' world: tenant `bench` with one in-process `noop`
/// function (concurrency and `max_running` 1000) whose outcomes go to `<prefix>.out`, on
/// 3 partitions, with `delivery` (`exactly_once` or `at_least_once`).
///
/// `TW_BENCH_SCHEDULER` adds settings to `[scheduler]` (e.g. `publish_linger = "100ms"`).
pub fn noop_config(prefix: &str, delivery: &str) -> Config {
    let extra = std::env::var("TW_BENCH_SCHEDULER").unwrap_or_default();
    config(
        prefix,
        3,
        &format!(
            r#"
            [scheduler]
            max_running = 1000
            delivery = "{delivery}"
            {extra}
            [tenants.bench.functions.noop]
            executor = {{ type = "inprocess", handler = "noop" }}
            concurrency = 1000
            on_success = "{{prefix}}.out"
            "#
        ),
    )
}

/// Records the scheduler writes per no-op task: the outcome and two status events.
pub const RECORDS_PER_TASK: usize = 3;

/// The raw transactional pipes' work per input: [`RECORDS_PER_TASK`] copies of it, the
/// first to `output`, the others to `status`; `with_headers`: each with the headers the
/// scheduler writes on each record of a no-op task. Waits (serving deliveries) while
/// librdkafka's queue is full. Inside an open transaction.
pub fn send_task_records(
    producer: &rdkafka::producer::BaseProducer,
    (output, status): (&str, &str),
    (key, payload): (&[u8], &[u8]),
    with_headers: bool,
) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseRecord, Producer};
    use tidewater::names::headers as h;
    for i in 0..RECORDS_PER_TASK {
        let topic = if i == 0 { output } else { status };
        let mut rec = BaseRecord::<[u8], [u8]>::to(topic)
            .key(key)
            .payload(payload);
        if with_headers {
            let event = if i == 0 {
                h::EVENT_OUTCOME
            } else {
                h::EVENT_STATUS
            };
            let headers = [
                (h::CONTENT_TYPE, h::CONTENT_TYPE_AVRO.as_bytes()),
                (h::EVENT, event.as_bytes()),
                (h::TASK_ID, key),
                (h::TENANT, b"bench".as_slice()),
                (h::FUNCTION, b"noop".as_slice()),
            ];
            let hs = headers.iter().fold(
                OwnedHeaders::new_with_capacity(headers.len()),
                |hs, (k, v)| {
                    hs.insert(Header {
                        key: k,
                        value: Some(*v),
                    })
                },
            );
            rec = rec.headers(hs);
        }
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    producer.poll(std::time::Duration::from_millis(1));
                }
            }
        }
    }
}

/// Commits the open transaction of `producer` with `next` (the next offset to read, per
/// topic and partition) as `consumer`'s group's offsets, once every record sent is
/// delivered: the delivery reports are served in 1 ms slices (rust-rdkafka's `flush` waits
/// in 100 ms ones), so the commit has nothing left to wait for.
pub fn commit_with_offsets(
    producer: &rdkafka::producer::BaseProducer,
    consumer: &rdkafka::consumer::BaseConsumer,
    next: &std::collections::HashMap<(String, i32), i64>,
) {
    use rdkafka::consumer::Consumer;
    use rdkafka::producer::Producer;
    use std::time::Duration;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for ((t, p), o) in next {
        tpl.add_partition_offset(t, *p, rdkafka::Offset::Offset(*o))
            .unwrap();
    }
    let meta = consumer.group_metadata().unwrap();
    producer
        .send_offsets_to_transaction(&tpl, &meta, Duration::from_secs(30))
        .unwrap();
    while producer.in_flight_count() > 0 {
        producer.poll(Duration::from_millis(1));
    }
    producer
        .commit_transaction(Duration::from_secs(30))
        .unwrap();
}
