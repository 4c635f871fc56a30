//! `[scale]`: lag sampling, partition expansion and the desired number of scheduler
//! replicas (`tidewater run --replicas`). See `docs/scaling.md`.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::de::{de_duration, invalid, nz32};

/// Settings of one queue topic for the controller.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueScale {
    /// Partition cap of this queue. Default `scale.max_partitions`.
    #[serde(default)]
    pub max_partitions: Option<NonZeroU32>,
    /// Producers put ordering keys (`tw-ordered`) on this queue's tasks. Such a queue is
    /// never expanded unless `scale.expand_ordered` is true. Default false.
    #[serde(default)]
    pub ordered: bool,
}

/// The `[scale]` section: lag sampling, partition expansion, desired replicas.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleConfig {
    /// How often the controller samples the lag. Default `5s`.
    #[serde(default = "d_interval", deserialize_with = "de_duration")]
    pub lag_interval: Duration,
    /// Add partitions to queues whose lag per partition stays above `threshold`.
    /// Default true.
    #[serde(default = "d_true")]
    pub expand_partitions: bool,
    /// Lag per partition (tasks) above which a queue counts as backed up. Default 1000.
    #[serde(default = "d_threshold")]
    pub threshold: u64,
    /// How long the lag per partition must stay above `threshold` before partitions are
    /// added. Default `60s`.
    #[serde(default = "d_window", deserialize_with = "de_duration")]
    pub window: Duration,
    /// Least time between two expansions of one queue. Default `5m`.
    #[serde(default = "d_cooldown", deserialize_with = "de_duration")]
    pub cooldown: Duration,
    /// Partition cap of every queue (expansion doubles the count up to it). Default 12.
    #[serde(default = "d_max_partitions")]
    pub max_partitions: NonZeroU32,
    /// Also expand queues marked `ordered` (ordering keys may then move to another
    /// partition; see docs/scaling.md). Default false.
    #[serde(default)]
    pub expand_ordered: bool,
    /// Per-queue settings, by queue topic name (`[scale.queues."tw.q.acme"]`).
    #[serde(default)]
    pub queues: BTreeMap<String, QueueScale>,
    /// Lag (tasks) one scheduler replica is expected to absorb. Default 1000.
    #[serde(default = "d_lag_per_replica")]
    pub lag_per_replica: u64,
    /// Fewest desired replicas. Default 1.
    #[serde(default = "d_min_replicas")]
    pub min_replicas: u32,
    /// Most desired replicas (also capped by the total number of queue partitions).
    /// Default 8.
    #[serde(default = "d_max_replicas")]
    pub max_replicas: u32,
    /// Scale in only after the lower recommendation held this long. Default `5m`.
    #[serde(default = "d_scale_in_after", deserialize_with = "de_duration")]
    pub scale_in_after: Duration,
}

fn d_interval() -> Duration {
    Duration::from_secs(5)
}
fn d_true() -> bool {
    true
}
fn d_threshold() -> u64 {
    1000
}
fn d_window() -> Duration {
    Duration::from_secs(60)
}
fn d_cooldown() -> Duration {
    Duration::from_secs(300)
}
fn d_max_partitions() -> NonZeroU32 {
    nz32(12)
}
fn d_lag_per_replica() -> u64 {
    1000
}
fn d_min_replicas() -> u32 {
    1
}
fn d_max_replicas() -> u32 {
    8
}
fn d_scale_in_after() -> Duration {
    Duration::from_secs(300)
}

impl Default for ScaleConfig {
    fn default() -> Self {
        Self {
            lag_interval: d_interval(),
            expand_partitions: d_true(),
            threshold: d_threshold(),
            window: d_window(),
            cooldown: d_cooldown(),
            max_partitions: d_max_partitions(),
            expand_ordered: false,
            queues: BTreeMap::new(),
            lag_per_replica: d_lag_per_replica(),
            min_replicas: d_min_replicas(),
            max_replicas: d_max_replicas(),
            scale_in_after: d_scale_in_after(),
        }
    }
}

impl ScaleConfig {
    /// Checks what the types alone do not; `queue_topics` are the configured queues.
    pub fn validate(&self, queue_topics: &[String]) -> Result<(), ConfigError> {
        let field = |k: &str| format!("scale.{k}");
        if self.lag_interval < Duration::from_millis(100) {
            return Err(invalid(field("lag_interval"), "must be at least 100ms"));
        }
        if self.threshold == 0 {
            return Err(invalid(field("threshold"), "must be more than 0"));
        }
        if self.lag_per_replica == 0 {
            return Err(invalid(field("lag_per_replica"), "must be more than 0"));
        }
        if self.max_replicas == 0 {
            return Err(invalid(field("max_replicas"), "must be more than 0"));
        }
        if self.min_replicas > self.max_replicas {
            return Err(invalid(
                field("min_replicas"),
                "must not exceed `max_replicas`",
            ));
        }
        for name in self.queues.keys() {
            if !queue_topics.contains(name) {
                return Err(invalid(
                    format!("scale.queues.\"{name}\""),
                    format!(
                        "is not a configured queue topic (queues: {})",
                        queue_topics.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The partition cap of a queue.
    pub fn max_partitions_of(&self, topic: &str) -> u32 {
        self.queues
            .get(topic)
            .and_then(|q| q.max_partitions)
            .unwrap_or(self.max_partitions)
            .get()
    }

    /// Whether the controller may add partitions to a queue.
    pub fn may_expand(&self, topic: &str) -> bool {
        self.expand_partitions
            && (self.expand_ordered || !self.queues.get(topic).is_some_and(|q| q.ordered))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::Config;
    use crate::config::tests::{GOOD, err};

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
}
