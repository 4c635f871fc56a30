//! Holding back outcomes whose offsets would not fit the commit metadata.
//!
//! In exactly-once mode each transaction commits, per partition, the lowest offset not
//! done and, in the commit metadata, the offsets done above it, so that whoever owns the
//! partition next skips them instead of running them again. Brokers take 4 KiB of
//! metadata (`offset.metadata.max.bytes`): a few hundred ranges. Tasks that finish out of
//! order far above a slow one (a slow and a fast function sharing a partition) can make
//! more ranges than that. Rather than leave some out (those tasks would run again after
//! a crash, with a second outcome), the units that would not fit wait here, unpublished,
//! until the offsets below them are done ([`OffsetTracker::admit`]). A held task has
//! finished but its outcome is not out: after a crash it runs again and has one outcome.

use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::Unit;
use crate::scheduler::offsets::OffsetTracker;

/// How often holding is reported while it lasts.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Units held back from earlier batches, in the order they came.
pub struct HeldBack<T> {
    units: Vec<Unit<T>>,
    reported: Option<Instant>,
}

impl<T> Default for HeldBack<T> {
    fn default() -> Self {
        Self {
            units: Vec::new(),
            reported: None,
        }
    }
}

impl<T> HeldBack<T> {
    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// Makes `batch` the held units and then `batch`'s own, less what must wait (kept
    /// here, in order).
    pub fn admit(&mut self, batch: &mut Vec<Unit<T>>, tracker: &OffsetTracker) {
        let mut all = std::mem::take(&mut self.units);
        all.append(batch);
        let admitted = tracker.admit(
            all.iter()
                .map(|u| u.done.as_ref().map(|d| (&d.tp, d.offset, d.epoch))),
        );
        if admitted.iter().all(|a| *a) {
            *batch = all;
            if self.reported.take().is_some() {
                info!("no outcome is held back any more");
            }
            return;
        }
        for (unit, go) in all.into_iter().zip(admitted) {
            if go {
                batch.push(unit);
            } else {
                self.units.push(unit);
            }
        }
        if self.reported.is_none_or(|at| at.elapsed() >= REPORT_EVERY) {
            self.reported = Some(Instant::now());
            warn!(
                held = self.units.len(),
                "outcomes held back: the tasks finished above a partition's lowest unfinished one fill its commit metadata; they are published as the tasks below them finish"
            );
        }
    }

    /// Everything held, to be handed back unpublished (the scheduler stops, and the tasks
    /// below them will not run here).
    pub fn take_all(&mut self) -> Vec<Unit<T>> {
        self.reported = None;
        std::mem::take(&mut self.units)
    }
}
