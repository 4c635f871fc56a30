//! `[scheduler]`: limits, delivery guarantee and timing of `tidewater run`.

use std::num::NonZeroUsize;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::de::{de_duration, invalid, nz};

/// The scheduler process (`tidewater run`): its limits, delivery and timing.
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
    /// When one function holds this many tasks from one shared partition, its further
    /// tasks from the shared queue are forwarded to its overflow queue
    /// `<prefix>.q.<tenant>.<function>` instead of held, so that it cannot fill the
    /// partition's buffer and hold up the other functions. A number up to 1.0 is a share
    /// of `max_buffered_per_partition`; above 1, a count of tasks; 0 turns spilling off.
    /// Default: [`EXACTLY_ONCE_SPILL_AFTER`] tasks (or half the buffer if less) with
    /// exactly-once delivery (each task waiting between finished ones can take a range of
    /// the commit metadata, which holds a few hundred), half the buffer with at-least-once.
    #[serde(default)]
    pub spill_after: Option<f64>,
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
    /// How often finished offsets are committed (at-least-once). Default `100ms`.
    #[serde(default = "default_commit_interval", deserialize_with = "de_duration")]
    pub commit_interval: Duration,
    /// How long the publisher waits for more finished tasks after the first one before it
    /// makes a batch durable (one transaction in exactly-once mode). `0s` (default): no
    /// wait; a batch is what finished while the previous batch was being made durable, so
    /// batches grow with load and a lone task is published at once. A longer linger makes
    /// fewer, larger transactions at low load at the cost of latency. At most `1s`.
    #[serde(default, deserialize_with = "de_duration")]
    pub publish_linger: Duration,
    /// How long an attempt runs before its `running` status event is published. `0s`
    /// (default): at once, for every attempt. Longer: an attempt that ends sooner has no
    /// `running` event (its start is in the outcome and the terminal status event), which
    /// saves a third of the records a short task writes; a longer one announces itself
    /// this late, with its real start time. At most `1h`.
    #[serde(default, deserialize_with = "de_duration")]
    pub running_event_delay: Duration,
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
    /// How long a partition of a topic the configuration implies may stay held by an open
    /// transaction (its last stable offset below its end, and not moving) before the
    /// scheduler reports it: a warning naming the partition and offset, and the gauge
    /// `tidewater_partitions_held`. `read_committed` readers (schedulers, consumers of
    /// outcomes, the indexer) wait at that offset until the transaction ends. `0s` turns
    /// the watch off. Default `2m` (longer than any client's default transaction timeout,
    /// after which Kafka aborts an open transaction by itself).
    #[serde(
        default = "default_held_partition_after",
        deserialize_with = "de_duration"
    )]
    pub held_partition_after: Duration,
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
/// The default `spill_after` with exactly-once delivery, in tasks: well below the few
/// hundred ranges of finished offsets that fit in a partition's commit metadata, so a
/// slow function's backlog spills before the outcomes of faster functions above it must
/// wait for room there.
pub const EXACTLY_ONCE_SPILL_AFTER: usize = 100;

/// The default `spill_after` with at-least-once delivery, and the most of the buffer the
/// exactly-once default takes (a function must spill before the buffer is full: a full
/// buffer pauses the partition, and no further task would be read to spill).
const DEFAULT_SHARE: f64 = 0.5;
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
    nz(256 * 1024)
}
fn default_held_partition_after() -> Duration {
    Duration::from_secs(120)
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
            spill_after: None,
            max_buffered_bytes_per_partition: default_max_buffered_bytes_per_partition(),
            max_buffered: default_max_buffered(),
            max_buffered_bytes: default_max_buffered_bytes(),
            rebalance_grace: default_rebalance_grace(),
            delivery: Delivery::default(),
            commit_interval: default_commit_interval(),
            publish_linger: Duration::ZERO,
            running_event_delay: Duration::ZERO,
            shutdown_grace: default_grace(),
            max_payload_bytes: default_max_payload(),
            held_partition_after: default_held_partition_after(),
        }
    }
}

impl SchedulerConfig {
    /// Tasks of one function held from one shared partition before it spills (0: never).
    pub fn spill_threshold(&self) -> usize {
        let max = self.max_buffered_per_partition.get();
        let share = |after: f64| ((max as f64 * after).ceil() as usize).clamp(1, max);
        let after = match (self.spill_after, self.delivery) {
            (Some(after), _) => after,
            (None, Delivery::ExactlyOnce) => {
                return EXACTLY_ONCE_SPILL_AFTER.min(share(DEFAULT_SHARE));
            }
            (None, Delivery::AtLeastOnce) => DEFAULT_SHARE,
        };
        if after <= 0.0 {
            0
        } else if after <= 1.0 {
            share(after)
        } else {
            (after.round() as usize).min(max)
        }
    }

    /// Checks what the types alone do not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.commit_interval.is_zero() {
            return Err(invalid("scheduler.commit_interval", "must be more than 0"));
        }
        if self.publish_linger > Duration::from_secs(1) {
            return Err(invalid("scheduler.publish_linger", "must be at most 1s"));
        }
        if self.running_event_delay > Duration::from_secs(3600) {
            return Err(invalid(
                "scheduler.running_event_delay",
                "must be at most 1h",
            ));
        }
        if !self.held_partition_after.is_zero()
            && self.held_partition_after < Duration::from_secs(1)
        {
            return Err(invalid(
                "scheduler.held_partition_after",
                "must be 0s (off) or at least 1s",
            ));
        }
        if self
            .spill_after
            .is_some_and(|after| !after.is_finite() || after < 0.0)
        {
            return Err(invalid(
                "scheduler.spill_after",
                "must be 0 (off), a share up to 1.0, or a count of tasks",
            ));
        }
        if let Some(id) = &self.id {
            if id.trim().is_empty() {
                return Err(invalid("scheduler.id", "must not be empty"));
            }
        }
        Ok(())
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
