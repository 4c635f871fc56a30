//! Tidewater: a Kafka-native asynchronous task scheduler.
//!
//! Producers submit tasks to queue topics; schedulers in one consumer group run them
//! through executors within per-function limits and publish outcome and status events.
//! See `README.md` and `docs/` for the user's view; this crate is also usable as a library
//! (embed a [`scheduler::Scheduler`] with your own in-process handlers).

pub mod acl;
pub mod api;
pub mod client;
pub mod clock;
pub mod codec;
pub mod config;
pub mod executor;
pub mod health;
pub mod kafka;
pub mod kafka_stats;
pub mod names;
pub mod otel;
pub mod scale;
pub mod scheduler;
pub mod store;
pub mod submit;
pub mod telemetry;
pub mod types;
