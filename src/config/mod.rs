//! Configuration: one TOML file, documented here where each field is declared.
//!
//! Unknown keys are rejected (`deny_unknown_fields`); every value is checked by
//! [`Config::validate`], whose errors name the field (`tenants.acme.functions.resize.timeout`)
//! and say why. `docs/configuration.md` is the reference for users and mirrors these files.
//!
//! One file per section: [`KafkaConfig`] (`[kafka]`) with its [`SecurityConfig`]
//! (`[kafka.security]`), [`TopicsConfig`] (`[topics]`), [`SchedulerConfig`]
//! (`[scheduler]`), [`TelemetryConfig`] (`[telemetry]`),
//! [`TenantConfig`] with its functions, executors and destinations (`[tenants.*]`),
//! [`ApiConfig`] (`[api]`), [`IndexerConfig`] (`[indexer]`) and [`ScaleConfig`]
//! (`[scale]`). Each checks itself; the components read them and this module depends on
//! none of the components.

mod api;
mod de;
mod indexer;
mod kafka;
mod scale;
mod scheduler;
mod security;
mod telemetry;
mod tenants;
mod topics;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub use api::{ApiConfig, Principal, ResolvedToken, TokenConfig};
pub use de::{check_name, check_topic};
pub use indexer::IndexerConfig;
pub use kafka::KafkaConfig;
pub use scale::{QueueScale, ScaleConfig};
pub use scheduler::{Delivery, SchedulerConfig};
pub use security::{
    SaslMechanism, Secret, SecurityConfig, SecurityProtocol, is_secret_property, load_certificates,
    load_private_key,
};
pub use telemetry::{LogFormat, TelemetryConfig};
pub use tenants::{Destination, ExecutorConfig, FunctionConfig, QueueMode, TenantConfig};
pub use topics::TopicsConfig;

use crate::names::topics as topic_names;
use de::invalid;

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path as it was given.
        path: String,
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
    pub api: ApiConfig,
    /// The indexer of `tidewater serve`.
    #[serde(default)]
    pub indexer: IndexerConfig,
    /// Lag measurement, partition expansion and replica scaling (`tidewater run
    /// --replicas`).
    #[serde(default)]
    pub scale: ScaleConfig,
}

impl Config {
    /// Parses TOML text, validates it and reads the secrets it names (the Kafka password
    /// from its environment variable or file).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text)?;
        config.validate()?;
        config.kafka.security.resolve()?;
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

    /// Checks every value that the types alone do not, section by section; the first
    /// value at fault is reported.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.kafka.validate()?;
        self.topics.validate()?;
        self.scheduler.validate()?;
        self.telemetry.validate()?;
        if self.tenants.is_empty() {
            return Err(invalid("tenants", "configure at least one tenant"));
        }
        self.api.validate(&self.tenants)?;
        self.indexer.validate()?;
        self.scale.validate(&self.queue_topics())?;
        for (name, tenant) in &self.tenants {
            tenant.validate(name)?;
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
            topic_names::function_queue(&self.topics.prefix, tenant, function)
        } else {
            topic_names::tenant_queue(&self.topics.prefix, tenant)
        }
    }

    /// Every queue topic the configuration implies: each tenant's shared queue and each
    /// function's own queue (its exclusive queue, or the overflow queue a function on the
    /// shared queue spills to while spilling is on).
    pub fn queue_topics(&self) -> Vec<String> {
        let prefix = &self.topics.prefix;
        let mut out = Vec::new();
        for (tname, tenant) in &self.tenants {
            out.push(topic_names::tenant_queue(prefix, tname));
            let spills = self.spills(tenant);
            for (fname, f) in &tenant.functions {
                if f.queue == QueueMode::Exclusive || spills {
                    out.push(topic_names::function_queue(prefix, tname, fname));
                }
            }
        }
        out
    }

    /// The overflow queue of a function on its tenant's shared queue, while spilling is
    /// on (`scheduler.spill_after`) and the function shares that queue with another
    /// function (alone on it, its backlog holds up nobody); `None` otherwise.
    pub fn overflow_topic(&self, tenant: &str, function: &str) -> Option<String> {
        let t = self.tenants.get(tenant)?;
        let f = t.functions.get(function)?;
        (f.queue == QueueMode::Shared && self.spills(t))
            .then(|| topic_names::function_queue(&self.topics.prefix, tenant, function))
    }

    /// Whether the functions of a tenant's shared queue spill: spilling is on and at
    /// least two functions share the queue.
    fn spills(&self, tenant: &TenantConfig) -> bool {
        self.scheduler.spill_threshold() > 0
            && tenant
                .functions
                .values()
                .filter(|f| f.queue == QueueMode::Shared)
                .count()
                >= 2
    }

    /// The failure destination for a tenant's tasks when no function decides.
    pub fn dead_letter(&self, tenant: &str) -> String {
        self.tenants
            .get(tenant)
            .and_then(|t| t.dead_letter.clone())
            .unwrap_or_else(|| topic_names::dead_letter(&self.topics.prefix, tenant))
    }

    /// The failure destination of a function.
    pub fn failure_destination(&self, tenant: &str, function: &str) -> String {
        self.function(tenant, function)
            .and_then(|f| f.on_failure.clone())
            .unwrap_or_else(|| self.dead_letter(tenant))
    }

    /// The dead-letter topics: each tenant's `dead_letter` topic and the `on_failure`
    /// topics of its functions, with the tenants whose failed tasks go there.
    pub fn dead_letter_topics(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (tname, tenant) in &self.tenants {
            let mut add = |topic: String| out.entry(topic).or_default().insert(tname.clone());
            add(self.dead_letter(tname));
            for f in tenant.functions.values() {
                if let Some(Destination::Topic(t)) = f.on_failure.as_deref().map(Destination::parse)
                {
                    add(t.to_string());
                }
            }
        }
        out
    }

    /// Every destination topic: dead letters, `on_success` and `on_failure` topics.
    pub fn destination_topics(&self) -> Vec<String> {
        let mut out = BTreeSet::new();
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
                Some((d, topic_names::delay(&self.topics.prefix, t)))
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
pub(crate) mod tests {
    use super::*;

    pub(crate) const GOOD: &str = r#"
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

    /// A configuration with two tenants, `acme` and `globex`, and `extra` after them.
    pub(crate) fn with_tenants(extra: &str) -> Result<Config, String> {
        const TENANTS: &str = r#"
        [tenants.acme.functions.f]
        executor = { type = "inprocess", handler = "echo" }
        [tenants.globex]
    "#;
        Config::from_toml(&format!("{TENANTS}\n{extra}")).map_err(|e| e.to_string())
    }

    /// The error that `text` is refused with.
    pub(crate) fn err(text: &str) -> String {
        match Config::from_toml(text) {
            Ok(_) => panic!("config accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    /// For each `(from, to, needle)`: [`GOOD`] with `from` replaced by `to` is refused
    /// with an error that contains `needle`.
    pub(crate) fn assert_names_field(cases: &[(&str, &str, &str)]) {
        for (from, to, needle) in cases {
            let text = GOOD.replace(from, to);
            assert_ne!(text, GOOD, "case {from} did not apply");
            let e = err(&text);
            assert!(e.contains(needle), "error for `{to}` lacks `{needle}`: {e}");
        }
    }

    /// For each `(extra, needle)`: [`with_tenants`]`(extra)` is refused with an error that
    /// contains `needle`.
    pub(crate) fn assert_extra_names_field(cases: &[(&str, &str)]) {
        for (extra, needle) in cases {
            let e = with_tenants(extra).expect_err(extra);
            assert!(e.contains(needle), "`{extra}`: {e}");
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
        assert_eq!(
            c.queue_topics(),
            vec!["tw.q.acme", "tw.q.acme.report"],
            "resize is alone on the shared queue: nothing to spill for"
        );
        assert_eq!(c.overflow_topic("acme", "resize"), None);
        assert_eq!(c.overflow_topic("acme", "report"), None, "exclusive");
        let two = Config::from_toml(&format!(
            "{GOOD}\n[tenants.acme.functions.thumb]\nexecutor = {{ type = \"command\", program = \"/bin/true\" }}"
        ))
        .unwrap();
        assert_eq!(
            two.queue_topics(),
            vec![
                "tw.q.acme",
                "tw.q.acme.report",
                "tw.q.acme.resize",
                "tw.q.acme.thumb"
            ],
            "two functions share the queue: each has an overflow queue"
        );
        assert_eq!(
            two.overflow_topic("acme", "resize").as_deref(),
            Some("tw.q.acme.resize")
        );
        assert_eq!(c.queue_topic("acme", "report"), "tw.q.acme.report");
        assert_eq!(c.queue_topic("acme", "resize"), "tw.q.acme");
        assert_eq!(c.failure_destination("acme", "resize"), "tw.dlq.acme");
        assert_eq!(c.destination_topics(), vec!["acme.resized", "tw.dlq.acme"]);
        let dl = |t: &str| c.dead_letter_topics().get(t).cloned().unwrap_or_default();
        assert_eq!(dl("tw.dlq.acme"), BTreeSet::from(["acme".to_string()]));
        assert!(dl("acme.resized").is_empty(), "a success destination");
    }

    #[test]
    fn dead_letter_topics_name_the_tenants_whose_failures_they_hold() {
        let c = Config::from_toml(
            r#"
            [tenants.acme]
            dead_letter = "shared.dead"
            [tenants.acme.functions.resize]
            executor = { type = "inprocess", handler = "echo" }
            on_failure = "acme.resize-failed"
            [tenants.acme.functions.undo]
            executor = { type = "inprocess", handler = "echo" }
            on_failure = "function:resize"
            [tenants.globex]
            dead_letter = "shared.dead"
            [tenants.globex.functions.other]
            executor = { type = "inprocess", handler = "echo" }
            [tenants.initech.functions.x]
            executor = { type = "inprocess", handler = "echo" }
            "#,
        )
        .unwrap();
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let dl = c.dead_letter_topics();
        assert_eq!(dl["shared.dead"], names(&["acme", "globex"]));
        assert_eq!(dl["acme.resize-failed"], names(&["acme"]));
        assert_eq!(dl["tw.dlq.initech"], names(&["initech"]));
        assert_eq!(dl.len(), 3, "{dl:?}");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = err(&GOOD.replace("concurrency = 4", "concurency = 4"));
        assert!(e.contains("concurency"), "{e}");
    }

    #[test]
    fn no_tenant_is_an_error() {
        assert!(err("").contains("tenants"));
    }

    #[test]
    fn publisher_timings_default_to_no_wait_and_are_bounded() {
        let c = Config::from_toml(GOOD).unwrap();
        assert_eq!(c.scheduler.publish_linger, std::time::Duration::ZERO);
        assert_eq!(c.scheduler.running_event_delay, std::time::Duration::ZERO);
        let with = |line: &str| format!("[scheduler]\n{line}\n{GOOD}");
        let c = Config::from_toml(&with(
            "publish_linger = \"20ms\"\nrunning_event_delay = \"50ms\"",
        ))
        .unwrap();
        assert_eq!(c.scheduler.publish_linger.as_millis(), 20);
        assert_eq!(c.scheduler.running_event_delay.as_millis(), 50);
        let e = err(&with("publish_linger = \"2s\""));
        assert!(
            e.contains("scheduler.publish_linger") && e.contains("at most 1s"),
            "{e}"
        );
        let e = err(&with("running_event_delay = \"2h\""));
        assert!(e.contains("scheduler.running_event_delay"), "{e}");
    }

    #[test]
    fn spilling_starts_early_by_default_with_exactly_once_and_at_half_the_buffer_without() {
        let threshold = |lines: &str| {
            Config::from_toml(&format!("[scheduler]\n{lines}\n{GOOD}"))
                .unwrap()
                .scheduler
                .spill_threshold()
        };
        assert_eq!(threshold(""), 100, "exactly-once is the default delivery");
        assert_eq!(threshold("delivery = \"at_least_once\""), 5_000);
        assert_eq!(
            threshold("max_buffered_per_partition = 40"),
            20,
            "half the buffer"
        );
        assert_eq!(threshold("spill_after = 0.5"), 5_000);
        assert_eq!(threshold("spill_after = 300"), 300);
        assert_eq!(threshold("spill_after = 0"), 0);
        let e = err(&format!("[scheduler]\nspill_after = -1\n{GOOD}"));
        assert!(e.contains("scheduler.spill_after"), "{e}");
    }

    #[test]
    fn the_held_partition_watch_defaults_to_two_minutes_and_can_be_turned_off() {
        let c = Config::from_toml(GOOD).unwrap();
        assert_eq!(c.scheduler.held_partition_after.as_secs(), 120);
        let with = |line: &str| format!("[scheduler]\n{line}\n{GOOD}");
        let c = Config::from_toml(&with("held_partition_after = \"0s\"")).unwrap();
        assert!(c.scheduler.held_partition_after.is_zero());
        let e = err(&with("held_partition_after = \"500ms\""));
        assert!(
            e.contains("scheduler.held_partition_after") && e.contains("at least 1s"),
            "{e}"
        );
    }
}
