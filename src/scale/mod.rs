//! Scaling: queue lag measured from the scheduler group's committed offsets, a controller
//! with one leader elected through Kafka that adds partitions to backed-up queues and
//! computes the desired number of scheduler replicas, and a local supervisor that starts
//! and stops scheduler processes on one host to follow it. See `docs/scaling.md`.

pub mod controller;
pub mod lag;
pub mod supervisor;

use crate::config::ConfigError;
use crate::kafka::KafkaOpError;

/// Why the controller or the supervisor stopped.
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    /// A Kafka client failed.
    #[error(transparent)]
    Kafka(#[from] KafkaOpError),
    /// A Kafka call failed.
    #[error("{what}: {source}")]
    KafkaCall {
        /// What was being done.
        what: String,
        source: rdkafka::error::KafkaError,
    },
    /// The configuration cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A scheduler child process could not be started.
    #[error("cannot start a scheduler process ({program}): {source}")]
    Spawn {
        /// This program, which starts schedulers as copies of itself.
        program: String,
        source: std::io::Error,
    },
    /// The lag could not be read.
    #[error("cannot measure the lag: {0}")]
    Lag(String),
    /// A decision was about to be recorded by a controller that does not lead.
    #[error("this controller does not lead")]
    NotLeader,
    /// A decision could not be encoded.
    #[error("cannot encode a decision: {0}")]
    Encode(String),
    /// A blocking task panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Join(String),
}
