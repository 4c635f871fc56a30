//! `[topics]`: how Tidewater names its topics and creates them (`tidewater topics init`).

use std::num::{NonZeroU16, NonZeroU32};
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::de::{check_topic, invalid, nz32};

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
    nz32(3)
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

impl TopicsConfig {
    /// Checks what the types alone do not: a prefix that makes valid topic names, and
    /// delay tiers that are durations, shortest first.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let p = &self.prefix;
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
        for tier in &self.delay_tiers {
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
        if self.delay_tiers.is_empty() {
            return Err(invalid("topics.delay_tiers", "configure at least one tier"));
        }
        Ok(())
    }
}
