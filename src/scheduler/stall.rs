//! When the publisher cannot make outcomes durable: reported after a while, on `/readyz`
//! and in the log, and the engine told to stop fetching meanwhile.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use tracing::{debug, info, warn};

use super::consumer::Shared;
use crate::health::Health;

/// After this long without a durable batch the process reports itself not ready.
pub const STALL_AFTER: Duration = Duration::from_secs(10);
/// How often a stalled publisher says so.
const STALL_LOG_EVERY: Duration = Duration::from_secs(5);
/// The component name in `/readyz` and `tidewater_ready`.
const COMPONENT: &str = "publisher";

/// Since when the current batch has not become durable, and when that was last said.
pub struct Stall {
    since: Cell<Option<Instant>>,
    logged: Cell<Option<Instant>>,
    /// Whether a call failed since [`Stall::take_fault`] was last asked.
    fault: Cell<bool>,
    /// Tells the engine to stop fetching while outcomes cannot be made durable.
    shared: Arc<Shared>,
}

impl Stall {
    /// A publisher starting: ready until a call fails for long enough.
    pub fn new(shared: Arc<Shared>) -> Self {
        Health::global().ready(COMPONENT);
        Self {
            since: Cell::new(None),
            logged: Cell::new(None),
            fault: Cell::new(false),
            shared,
        }
    }

    /// A call failed: report it once the stall is long enough, every few seconds.
    pub fn failed(&self, what: &str, e: &KafkaError) {
        self.fault.set(true);
        let now = Instant::now();
        let since = self.since.get().unwrap_or(now);
        self.since.set(Some(since));
        let stalled = now.duration_since(since);
        if stalled < STALL_AFTER {
            debug!(error = %e, call = what, "not durable yet; trying again");
            return;
        }
        if self
            .logged
            .get()
            .is_some_and(|at| now.duration_since(at) < STALL_LOG_EVERY)
        {
            return;
        }
        self.logged.set(Some(now));
        let reason = format!("no durable batch for {}s ({what}: {e})", stalled.as_secs());
        warn!(error = %e, call = what, stalled_for = ?Duration::from_secs(stalled.as_secs()),
            "outcomes are not durable; still trying (is the Kafka cluster reachable?)");
        Health::global().not_ready(COMPONENT, reason);
        self.shared.set_stalled(true);
    }

    /// A batch became durable.
    pub fn durable(&self) {
        if let Some(since) = self.since.take() {
            if self.logged.take().is_some() {
                info!(after = ?since.elapsed(), "outcomes are durable again");
            }
        }
        Health::global().ready(COMPONENT);
        self.shared.set_stalled(false);
    }

    /// Whether a call failed since this was last asked.
    pub fn take_fault(&self) -> bool {
        self.fault.replace(false)
    }
}
