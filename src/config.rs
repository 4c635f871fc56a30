//! Configuration: one TOML file, documented here where each field is declared.
//!
//! Unknown keys are rejected (`deny_unknown_fields`); every value is checked by
//! [`Config::validate`], whose errors name the field (`tenants.acme.functions.resize.timeout`)
//! and say why. `docs/configuration.md` is the reference for users and mirrors this file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::{NonZeroU16, NonZeroU32, NonZeroUsize};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::names::topics;

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type.
    #[error(transparent)]
    Parse(#[from] toml::de::Error),
    /// A value is well-formed but not acceptable.
    #[error("invalid `{field}`: {reason}")]
    Invalid {
        /// Dotted path of the field.
        field: String,
        /// Why it is rejected.
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The whole configuration of a Tidewater process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How to reach Kafka.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// Topic naming and creation.
    #[serde(default)]
    pub topics: TopicsConfig,
    /// The scheduler (`tidewater run`).
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    /// Logs and metrics.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Tenants by name; each owns a shared queue and its functions.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
    /// The task query API of `tidewater serve`.
    #[serde(default)]
    pub api: crate::api::ApiConfig,
    /// The indexer of `tidewater serve`.
    #[serde(default)]
    pub indexer: crate::api::IndexerConfig,
    /// Lag measurement, partition expansion and replica scaling (`tidewater run
    /// --replicas`).
    #[serde(default)]
    pub scale: crate::scale::ScaleConfig,
}

/// Kafka connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list. Default `127.0.0.1:9092`.
    #[serde(default = "default_bootstrap")]
    pub bootstrap_servers: String,
    /// Raw librdkafka properties applied to every client (SASL, timeouts…), e.g.
    /// `"sasl.mechanism" = "PLAIN"`. Default empty. This build has no TLS support:
    /// `security.protocol` `SSL` and `SASL_SSL` are rejected.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_bootstrap() -> String {
    "127.0.0.1:9092".into()
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: default_bootstrap(),
            properties: BTreeMap::new(),
        }
    }
}

/// Topic naming and creation by `tidewater topics init`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsConfig {
    /// Prefix of every Tidewater topic and of the scheduler group. Default `tw`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Partitions of each topic created by `topics init` (queues, status, destinations).
    /// Default 3.
    #[serde(default = "default_partitions")]
    pub partitions: NonZeroU32,
    /// Replication factor of created topics. Default 1 (set 3 on a production cluster).
    #[serde(default = "default_replication")]
    pub replication_factor: NonZeroU16,
    /// Delay tiers: one topic `<prefix>.delay.<tier>` each, for retries and delayed tasks.
    /// A task waiting `d` goes to the longest tier not above `d`. Default
    /// `["1s", "10s", "1m", "10m"]`.
    #[serde(default = "default_delay_tiers")]
    pub delay_tiers: Vec<String>,
}

fn default_delay_tiers() -> Vec<String> {
    ["1s", "10s", "1m", "10m"].map(String::from).to_vec()
}

fn default_prefix() -> String {
    "tw".into()
}
fn default_partitions() -> NonZeroU32 {
    NonZeroU32::new(3).unwrap_or(NonZeroU32::MIN)
}
fn default_replication() -> NonZeroU16 {
    NonZeroU16::MIN
}

impl Default for TopicsConfig {
    fn default() -> Self {
        Self {
            prefix: default_prefix(),
            partitions: default_partitions(),
            replication_factor: default_replication(),
            delay_tiers: default_delay_tiers(),
        }
    }
}

/// The scheduler.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Identifies this process in status events. Default `<hostname>-<pid>`.
    #[serde(default)]
    pub id: Option<String>,
    /// Consumer group of the schedulers. Default `<prefix>.schedulers`.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Attempts running at once in this process, across all functions; when functions
    /// compete for them, they are shared by `weight`. Default 256.
    #[serde(default = "default_max_running")]
    pub max_running: NonZeroUsize,
    /// Tasks held in memory per partition (queued, running, waiting to retry) before
    /// fetching from that partition pauses. Default 10000.
    #[serde(default = "default_max_buffered_per_partition")]
    pub max_buffered_per_partition: NonZeroUsize,
    /// Payload bytes held per partition before fetching from it pauses. Default 33554432
    /// (32 MiB).
    #[serde(default = "default_max_buffered_bytes_per_partition")]
    pub max_buffered_bytes_per_partition: NonZeroUsize,
    /// Tasks held in memory by the whole process before all fetching pauses.
    /// Default 100000.
    #[serde(default = "default_max_buffered")]
    pub max_buffered: NonZeroUsize,
    /// Payload bytes held by the whole process before all fetching pauses. Default
    /// 268435456 (256 MiB).
    #[serde(default = "default_max_buffered_bytes")]
    pub max_buffered_bytes: NonZeroUsize,
    /// `exactly_once` (default): outcome events, status events and consumer offsets are
    /// written in one Kafka transaction per batch, so `read_committed` consumers see
    /// exactly one terminal outcome per task. `at_least_once`: records are produced and
    /// offsets committed separately (faster; a crash may publish an outcome twice).
    #[serde(default)]
    pub delivery: Delivery,
    /// When a partition is revoked, how long its running attempts may take to finish
    /// before the partition is released (what is done is committed first). Default `10s`.
    #[serde(default = "default_rebalance_grace", deserialize_with = "de_duration")]
    pub rebalance_grace: Duration,
    /// How often finished offsets are committed (at-least-once), and the longest a
    /// finished task waits for its transaction (exactly-once). Default `100ms`.
    #[serde(default = "default_commit_interval", deserialize_with = "de_duration")]
    pub commit_interval: Duration,
    /// On shutdown, how long running tasks may take to finish before they are abandoned
    /// (and re-delivered to the next owner). Default `30s`.
    #[serde(default = "default_grace", deserialize_with = "de_duration")]
    pub shutdown_grace: Duration,
    /// Task ids (per tenant) of tasks that reached a terminal outcome in this process,
    /// remembered so that the same id delivered again (re-submitted, or re-delivered) is
    /// not run again: it is skipped without a second outcome. 0 turns this off.
    /// Default 100000.
    #[serde(default = "default_dedupe_window")]
    pub dedupe_window: usize,
    /// Captured output published to `<prefix>.logs` per attempt and stream (command
    /// stdout and stderr, HTTP status and body), in bytes; the rest is marked truncated.
    /// Default 65536.
    #[serde(default = "default_max_log_bytes")]
    pub max_log_bytes: NonZeroUsize,
    /// Largest task payload accepted, in bytes, unless a function sets its own.
    /// Default 262144 (256 KiB).
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: NonZeroUsize,
}

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}
fn default_dedupe_window() -> usize {
    100_000
}
fn default_max_log_bytes() -> NonZeroUsize {
    nz(64 * 1024)
}
fn default_max_running() -> NonZeroUsize {
    nz(256)
}
fn default_max_buffered_per_partition() -> NonZeroUsize {
    nz(10_000)
}
fn default_max_buffered_bytes_per_partition() -> NonZeroUsize {
    nz(32 * 1024 * 1024)
}
fn default_max_buffered() -> NonZeroUsize {
    nz(100_000)
}
fn default_max_buffered_bytes() -> NonZeroUsize {
    nz(256 * 1024 * 1024)
}
fn default_rebalance_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_commit_interval() -> Duration {
    Duration::from_millis(100)
}
fn default_grace() -> Duration {
    Duration::from_secs(30)
}
fn default_max_payload() -> NonZeroUsize {
    NonZeroUsize::new(256 * 1024).unwrap_or(NonZeroUsize::MIN)
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            id: None,
            group_id: None,
            max_running: default_max_running(),
            max_log_bytes: default_max_log_bytes(),
            dedupe_window: default_dedupe_window(),
            max_buffered_per_partition: default_max_buffered_per_partition(),
            max_buffered_bytes_per_partition: default_max_buffered_bytes_per_partition(),
            max_buffered: default_max_buffered(),
            max_buffered_bytes: default_max_buffered_bytes(),
            rebalance_grace: default_rebalance_grace(),
            delivery: Delivery::default(),
            commit_interval: default_commit_interval(),
            shutdown_grace: default_grace(),
            max_payload_bytes: default_max_payload(),
        }
    }
}

/// How outcomes are delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// One transaction per batch: outcomes, status events and offsets together.
    #[default]
    ExactlyOnce,
    /// Produce, then commit offsets: a crash may repeat an outcome.
    AtLeastOnce,
}

/// Log format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (default).
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Logs and metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `human` or `json`. Default `human`. The `RUST_LOG` variable sets levels.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Address of the Prometheus `/metrics` endpoint of `tidewater run`, or `off`.
    /// Default `127.0.0.1:9464`. Port 0 picks a free port (logged at start).
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: String,
}

fn default_metrics_listen() -> String {
    "127.0.0.1:9464".into()
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Human,
            metrics_listen: default_metrics_listen(),
        }
    }
}

impl TelemetryConfig {
    /// The parsed metrics address; `None` when metrics are `off`.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.metrics_listen.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        self.metrics_listen.parse().map(Some).map_err(|e| {
            invalid(
                "telemetry.metrics_listen",
                format!(
                    "`{}` is not `host:port` or `off` ({e})",
                    self.metrics_listen
                ),
            )
        })
    }
}

/// A tenant.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Failure destination for this tenant's tasks that name no known function or cannot
    /// be decoded, and for functions without `on_failure`. Default `<prefix>.dlq.<tenant>`.
    #[serde(default)]
    pub dead_letter: Option<String>,
    /// Functions by name.
    #[serde(default)]
    pub functions: BTreeMap<String, FunctionConfig>,
}

/// Which queue a function's tasks travel on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueMode {
    /// The tenant's shared queue `<prefix>.q.<tenant>` (default).
    #[default]
    Shared,
    /// A queue of its own, `<prefix>.q.<tenant>.<function>`.
    Exclusive,
}

/// A function: what runs a task and with which limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionConfig {
    /// What runs the task.
    pub executor: ExecutorConfig,
    /// Tasks of this function running at once in one scheduler process. Default 10.
    #[serde(default = "default_concurrency")]
    pub concurrency: NonZeroU32,
    /// Attempts started per second by one scheduler process (token bucket). Default none
    /// (no rate limit).
    #[serde(default)]
    pub rate: Option<f64>,
    /// Attempts that may start at once after an idle period, with `rate`. Default: the
    /// rate rounded up (one second's worth), at least 1.
    #[serde(default)]
    pub burst: Option<NonZeroU32>,
    /// Share of the process's `max_running` slots when functions compete for them
    /// (relative to other functions' weights). Default 1.
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// Longest one attempt may run before it is cancelled and counted failed. Default `60s`.
    #[serde(default = "default_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Attempts before a task ends failed (1 = no retry). Default 3.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: NonZeroU32,
    /// Wait before the second attempt; doubles each attempt up to `backoff_max`. Default `1s`.
    #[serde(default = "default_backoff", deserialize_with = "de_duration")]
    pub backoff: Duration,
    /// Longest wait between attempts. Default `60s`.
    #[serde(default = "default_backoff_max", deserialize_with = "de_duration")]
    pub backoff_max: Duration,
    /// `shared` (default) or `exclusive`.
    #[serde(default)]
    pub queue: QueueMode,
    /// Topic that receives the outcome event of each successful task. Default none.
    #[serde(default)]
    pub on_success: Option<String>,
    /// Topic that receives the outcome event of each failed task.
    /// Default the tenant's dead-letter topic.
    #[serde(default)]
    pub on_failure: Option<String>,
    /// Largest payload accepted, in bytes. Default `scheduler.max_payload_bytes`.
    #[serde(default)]
    pub max_payload_bytes: Option<NonZeroUsize>,
    /// A task older than this (since submission) when its turn comes is not run: it ends
    /// `expired` on the failure destination. Default none (tasks never expire).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub max_event_age: Option<Duration>,
}

fn default_weight() -> f64 {
    1.0
}
fn default_concurrency() -> NonZeroU32 {
    NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN)
}
fn default_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_attempts() -> NonZeroU32 {
    NonZeroU32::new(3).unwrap_or(NonZeroU32::MIN)
}
fn default_backoff() -> Duration {
    Duration::from_secs(1)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(60)
}

/// What runs a task.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ExecutorConfig {
    /// POST the payload to `url`; a 2xx answer is success and its body the result.
    Http {
        /// `http://` or `https://` URL.
        url: String,
        /// Extra request headers. Default none.
        #[serde(default)]
        headers: BTreeMap<String, String>,
        /// Treat 4xx answers (except 408 and 429) as final: no further attempts. Default true.
        #[serde(default = "default_true")]
        non_retryable_4xx: bool,
    },
    /// Run `program` with `args` (no shell), the payload on stdin; exit 0 is success and
    /// stdout the result.
    Command {
        /// Program path or name looked up in `PATH`.
        program: String,
        /// Arguments, passed as they are.
        #[serde(default)]
        args: Vec<String>,
        /// Extra environment variables. Default none.
        #[serde(default)]
        env: BTreeMap<String, String>,
        /// Bytes of stdout (and of stderr) kept per attempt. Default 65536.
        #[serde(default = "default_max_output")]
        max_output_bytes: NonZeroUsize,
        /// Exit codes that make a failure final: no further attempts. Default none.
        #[serde(default)]
        non_retryable_exit_codes: Vec<i32>,
    },
    /// A handler registered in this process (`noop`, `echo` and `fail` are built in;
    /// programs embedding Tidewater register their own).
    Inprocess {
        /// Name of the registered handler.
        handler: String,
    },
}

fn default_true() -> bool {
    true
}
fn default_max_output() -> NonZeroUsize {
    NonZeroUsize::new(64 * 1024).unwrap_or(NonZeroUsize::MIN)
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

pub(crate) fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "`{s}` is not a duration like \"500ms\", \"30s\" or \"5m\" ({e})"
        ))
    })
}

/// Where an outcome goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination<'a> {
    /// A topic.
    Topic(&'a str),
    /// `function:<name>`: the outcome event becomes a new task of that function of the
    /// same tenant (compensation).
    Function(&'a str),
}

impl<'a> Destination<'a> {
    /// Reads `function:<name>` or a topic name.
    pub fn parse(s: &'a str) -> Self {
        match s.strip_prefix("function:") {
            Some(name) => Destination::Function(name),
            None => Destination::Topic(s),
        }
    }
}

/// A tenant or function name: lowercase letters, digits, `_` and `-`, 1 to 64 characters,
/// starting with a letter or digit. Names become parts of topic names, so `.` is excluded.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !first_ok
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return Err(format!(
            "`{name}` must use only a-z, 0-9, `_` and `-`, and start with a letter or digit"
        ));
    }
    Ok(())
}

/// A Kafka topic name: 1 to 249 characters of `a-zA-Z0-9._-`, not `.` or `..`.
pub fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > 249 {
        return Err("a topic name must be 1 to 249 characters".into());
    }
    if topic == "." || topic == ".." {
        return Err("`.` and `..` are not topic names".into());
    }
    if !topic
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
    {
        return Err(format!(
            "`{topic}` is not a valid topic name (allowed: a-z A-Z 0-9 . _ -)"
        ));
    }
    Ok(())
}

impl Config {
    /// Parses TOML text and validates it.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Checks every value that the types alone do not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err(invalid("kafka.bootstrap_servers", "must not be empty"));
        }
        for key in self.kafka.properties.keys() {
            if matches!(
                key.as_str(),
                "bootstrap.servers" | "group.id" | "enable.auto.commit"
            ) {
                return Err(invalid(
                    format!("kafka.properties.\"{key}\""),
                    "is set by Tidewater itself; use the dedicated setting",
                ));
            }
        }
        if let Some(proto) = self.kafka.properties.get("security.protocol") {
            if proto.to_ascii_uppercase().contains("SSL") {
                return Err(invalid(
                    "kafka.properties.\"security.protocol\"",
                    format!(
                        "`{proto}` needs TLS, which this build of Tidewater does not include yet; use PLAINTEXT or SASL_PLAINTEXT"
                    ),
                ));
            }
        }
        let p = &self.topics.prefix;
        if p.is_empty()
            || p.len() > 100
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
            || p.starts_with('.')
            || p.ends_with('.')
        {
            return Err(invalid(
                "topics.prefix",
                format!(
                    "`{p}` must be 1 to 100 characters of a-z A-Z 0-9 . _ - and not start or end with `.`"
                ),
            ));
        }
        let mut previous = Duration::ZERO;
        for tier in &self.topics.delay_tiers {
            let d = humantime::parse_duration(tier).map_err(|e| {
                invalid(
                    "topics.delay_tiers",
                    format!("`{tier}` is not a duration ({e})"),
                )
            })?;
            if d <= previous {
                return Err(invalid(
                    "topics.delay_tiers",
                    "must be durations above 0, shortest first",
                ));
            }
            check_topic(tier).map_err(|r| invalid("topics.delay_tiers", r))?;
            previous = d;
        }
        if self.topics.delay_tiers.is_empty() {
            return Err(invalid("topics.delay_tiers", "configure at least one tier"));
        }
        if self.scheduler.commit_interval.is_zero() {
            return Err(invalid("scheduler.commit_interval", "must be more than 0"));
        }
        if let Some(id) = &self.scheduler.id {
            if id.trim().is_empty() {
                return Err(invalid("scheduler.id", "must not be empty"));
            }
        }
        self.telemetry.metrics_addr()?;
        if self.tenants.is_empty() {
            return Err(invalid("tenants", "configure at least one tenant"));
        }
        self.api.validate(&self.tenants)?;
        self.indexer.validate()?;
        self.scale.validate(&self.queue_topics())?;
        for (tname, tenant) in &self.tenants {
            check_name(tname).map_err(|r| invalid(format!("tenants.{tname}"), r))?;
            if let Some(dlq) = &tenant.dead_letter {
                check_topic(dlq).map_err(|r| invalid(format!("tenants.{tname}.dead_letter"), r))?;
            }
            for (fname, f) in &tenant.functions {
                let field = |k: &str| format!("tenants.{tname}.functions.{fname}.{k}");
                check_name(fname)
                    .map_err(|r| invalid(format!("tenants.{tname}.functions.{fname}"), r))?;
                if f.timeout.is_zero() {
                    return Err(invalid(field("timeout"), "must be more than 0"));
                }
                if let Some(rate) = f.rate {
                    if !(rate.is_finite() && rate > 0.0) {
                        return Err(invalid(
                            field("rate"),
                            "must be a number of tasks per second above 0",
                        ));
                    }
                }
                if f.burst.is_some() && f.rate.is_none() {
                    return Err(invalid(field("burst"), "only applies together with `rate`"));
                }
                if !(f.weight.is_finite() && f.weight > 0.0) {
                    return Err(invalid(field("weight"), "must be a number above 0"));
                }
                if f.backoff_max < f.backoff {
                    return Err(invalid(field("backoff_max"), "must be at least `backoff`"));
                }
                for (k, dest) in [("on_success", &f.on_success), ("on_failure", &f.on_failure)] {
                    match dest.as_deref().map(Destination::parse) {
                        Some(Destination::Function(name)) => {
                            if !tenant.functions.contains_key(name) {
                                return Err(invalid(
                                    field(k),
                                    format!("tenant `{tname}` has no function `{name}`"),
                                ));
                            }
                            if name == fname {
                                return Err(invalid(
                                    field(k),
                                    "a function cannot be its own destination",
                                ));
                            }
                        }
                        Some(Destination::Topic(topic)) => {
                            check_topic(topic).map_err(|r| invalid(field(k), r))?;
                        }
                        None => {}
                    }
                }
                if f.max_event_age.is_some_and(|a| a.is_zero()) {
                    return Err(invalid(field("max_event_age"), "must be more than 0"));
                }
                match &f.executor {
                    ExecutorConfig::Http { url, headers, .. } => {
                        let u = reqwest::Url::parse(url).map_err(|e| {
                            invalid(field("executor.url"), format!("`{url}` is not a URL ({e})"))
                        })?;
                        if u.scheme() == "https" {
                            return Err(invalid(
                                field("executor.url"),
                                format!(
                                    "`{url}`: https is not supported by this build yet; use http:// (e.g. through a local TLS-terminating proxy)"
                                ),
                            ));
                        }
                        if u.scheme() != "http" {
                            return Err(invalid(
                                field("executor.url"),
                                format!("`{url}` must be an http:// URL"),
                            ));
                        }
                        if u.host_str().is_none() {
                            return Err(invalid(
                                field("executor.url"),
                                format!("`{url}` has no host"),
                            ));
                        }
                        for (name, value) in headers {
                            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                                return Err(invalid(
                                    field("executor.headers"),
                                    format!("`{name}` is not a valid header name"),
                                ));
                            }
                            if reqwest::header::HeaderValue::from_str(value).is_err() {
                                return Err(invalid(
                                    field(&format!("executor.headers.{name}")),
                                    "is not a valid header value",
                                ));
                            }
                        }
                    }
                    ExecutorConfig::Command { program, .. } => {
                        if program.trim().is_empty() {
                            return Err(invalid(field("executor.program"), "must not be empty"));
                        }
                    }
                    ExecutorConfig::Inprocess { handler } => {
                        if handler.trim().is_empty() {
                            return Err(invalid(field("executor.handler"), "must not be empty"));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The scheduler consumer group.
    pub fn group_id(&self) -> String {
        self.scheduler
            .group_id
            .clone()
            .unwrap_or_else(|| format!("{}.schedulers", self.topics.prefix))
    }

    /// The queue topic of a function.
    pub fn queue_topic(&self, tenant: &str, function: &str) -> String {
        let exclusive = self
            .function(tenant, function)
            .is_some_and(|f| f.queue == QueueMode::Exclusive);
        if exclusive {
            topics::function_queue(&self.topics.prefix, tenant, function)
        } else {
            topics::tenant_queue(&self.topics.prefix, tenant)
        }
    }

    /// Every queue topic the configuration implies: each tenant's shared queue and each
    /// exclusive function queue.
    pub fn queue_topics(&self) -> Vec<String> {
        let prefix = &self.topics.prefix;
        let mut out = Vec::new();
        for (tname, tenant) in &self.tenants {
            out.push(topics::tenant_queue(prefix, tname));
            for (fname, f) in &tenant.functions {
                if f.queue == QueueMode::Exclusive {
                    out.push(topics::function_queue(prefix, tname, fname));
                }
            }
        }
        out
    }

    /// The failure destination for a tenant's tasks when no function decides.
    pub fn dead_letter(&self, tenant: &str) -> String {
        self.tenants
            .get(tenant)
            .and_then(|t| t.dead_letter.clone())
            .unwrap_or_else(|| topics::dead_letter(&self.topics.prefix, tenant))
    }

    /// The failure destination of a function.
    pub fn failure_destination(&self, tenant: &str, function: &str) -> String {
        self.function(tenant, function)
            .and_then(|f| f.on_failure.clone())
            .unwrap_or_else(|| self.dead_letter(tenant))
    }

    /// Every destination topic: dead letters, `on_success` and `on_failure` topics.
    pub fn destination_topics(&self) -> Vec<String> {
        let mut out = std::collections::BTreeSet::new();
        for (tname, tenant) in &self.tenants {
            out.insert(self.dead_letter(tname));
            for f in tenant.functions.values() {
                for dest in [&f.on_success, &f.on_failure].into_iter().flatten() {
                    if let Destination::Topic(t) = Destination::parse(dest) {
                        out.insert(t.to_string());
                    }
                }
            }
        }
        out.into_iter().collect()
    }

    /// The delay tiers, parsed, with their topics, shortest first.
    pub fn delay_tiers(&self) -> Vec<(Duration, String)> {
        self.topics
            .delay_tiers
            .iter()
            .filter_map(|t| {
                let d = humantime::parse_duration(t).ok()?;
                Some((d, topics::delay(&self.topics.prefix, t)))
            })
            .collect()
    }

    /// A function's configuration.
    pub fn function(&self, tenant: &str, function: &str) -> Option<&FunctionConfig> {
        self.tenants.get(tenant)?.functions.get(function)
    }

    /// Largest payload a function accepts.
    pub fn max_payload(&self, f: &FunctionConfig) -> usize {
        f.max_payload_bytes
            .unwrap_or(self.scheduler.max_payload_bytes)
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [kafka]
        bootstrap_servers = "127.0.0.1:19092"
        [kafka.properties]
        "client.rack" = "a"

        [tenants.acme.functions.resize]
        executor = { type = "http", url = "http://127.0.0.1:8080/resize" }
        concurrency = 4
        timeout = "5s"
        on_success = "acme.resized"

        [tenants.acme.functions.report]
        executor = { type = "command", program = "/bin/cat" }
        queue = "exclusive"
    "#;

    fn err(text: &str) -> String {
        match Config::from_toml(text) {
            Ok(_) => panic!("config accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn good_config_parses_with_defaults() {
        let c = Config::from_toml(GOOD).unwrap();
        assert_eq!(c.topics.prefix, "tw");
        assert_eq!(c.group_id(), "tw.schedulers");
        let f = c.function("acme", "resize").unwrap();
        assert_eq!(f.concurrency.get(), 4);
        assert_eq!(f.timeout, Duration::from_secs(5));
        assert_eq!(f.max_attempts.get(), 3);
        assert_eq!(c.queue_topics(), vec!["tw.q.acme", "tw.q.acme.report"]);
        assert_eq!(c.queue_topic("acme", "report"), "tw.q.acme.report");
        assert_eq!(c.queue_topic("acme", "resize"), "tw.q.acme");
        assert_eq!(c.failure_destination("acme", "resize"), "tw.dlq.acme");
        assert_eq!(c.destination_topics(), vec!["acme.resized", "tw.dlq.acme"]);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = err(&GOOD.replace("concurrency = 4", "concurency = 4"));
        assert!(e.contains("concurency"), "{e}");
    }

    #[test]
    fn invalid_values_name_their_field() {
        let cases = [
            ("concurrency = 4", "concurrency = 0", "concurrency"),
            ("timeout = \"5s\"", "timeout = \"soon\"", "timeout"),
            (
                "timeout = \"5s\"",
                "timeout = \"0s\"",
                "functions.resize.timeout",
            ),
            (
                "url = \"http://127.0.0.1:8080/resize\"",
                "url = \"ftp://x\"",
                "functions.resize.executor.url",
            ),
            (
                "on_success = \"acme.resized\"",
                "on_success = \"bad topic\"",
                "functions.resize.on_success",
            ),
            ("queue = \"exclusive\"", "queue = \"private\"", "queue"),
            (
                "program = \"/bin/cat\"",
                "program = \"\"",
                "functions.report.executor.program",
            ),
            ("type = \"http\"", "type = \"grpc\"", "grpc"),
            (
                "tenants.acme.functions.resize]",
                "tenants.Acme.functions.resize]",
                "tenants.Acme",
            ),
            (
                "\"client.rack\" = \"a\"",
                "\"group.id\" = \"x\"",
                "kafka.properties.\"group.id\"",
            ),
        ];
        for (from, to, needle) in cases {
            let text = GOOD.replace(from, to);
            assert_ne!(text, GOOD, "case {from} did not apply");
            let e = err(&text);
            assert!(e.contains(needle), "error for `{to}` lacks `{needle}`: {e}");
        }
    }

    #[test]
    fn scale_section_is_checked() {
        let c = Config::from_toml(GOOD).unwrap();
        assert_eq!(c.scale.lag_interval, Duration::from_secs(5));
        assert!(c.scale.may_expand("tw.q.acme"));
        let text = format!("{GOOD}\n[scale]\nmin_replicas = 9\nmax_replicas = 2\n");
        assert!(err(&text).contains("scale.min_replicas"));
        let text = format!("{GOOD}\n[scale.queues.\"tw.q.nope\"]\nordered = true\n");
        assert!(err(&text).contains("scale.queues.\"tw.q.nope\""));
        let text =
            format!("{GOOD}\n[scale.queues.\"tw.q.acme\"]\nordered = true\nmax_partitions = 6\n");
        let c = Config::from_toml(&text).unwrap();
        assert!(!c.scale.may_expand("tw.q.acme"));
        assert_eq!(c.scale.max_partitions_of("tw.q.acme"), 6);
        assert_eq!(c.scale.max_partitions_of("tw.q.acme.report"), 12);
    }

    #[test]
    fn no_tenant_is_an_error() {
        assert!(err("").contains("tenants"));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("acme-1_x").is_ok());
        assert!(check_name("a.b").is_err());
        assert!(check_name("-a").is_err());
        assert!(check_name("").is_err());
        assert!(check_topic("orders.done-1").is_ok());
        assert!(check_topic("a:b").is_err());
        assert_eq!(
            Destination::parse("function:undo"),
            Destination::Function("undo")
        );
        assert_eq!(Destination::parse("t.x"), Destination::Topic("t.x"));
    }
}
