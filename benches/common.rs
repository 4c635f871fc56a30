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
