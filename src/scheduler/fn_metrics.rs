//! A function's per-task metrics, registered once when the scheduler starts.
//!
//! Recording through `counter!(name, labels…)` looks the series up on every call: it
//! builds and hashes the label set and allocates its strings. A task records about ten
//! series on its way, so the handles are looked up once per function and kept here;
//! recording is then an atomic operation. They belong to the metrics recorder installed
//! when the scheduler starts (none: they record nothing).

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use crate::codec::{FailureReason, OutcomeStatus};
use crate::names::metrics as m;

/// Every outcome, in the order of [`outcome_index`].
const OUTCOMES: [OutcomeStatus; 4] = [
    OutcomeStatus::Succeeded,
    OutcomeStatus::Failed,
    OutcomeStatus::Stopped,
    OutcomeStatus::Expired,
];

/// Every failure reason, in the order of [`reason_index`].
const REASONS: [FailureReason; 7] = [
    FailureReason::Executor,
    FailureReason::Timeout,
    FailureReason::NonRetryable,
    FailureReason::Malformed,
    FailureReason::UnknownFunction,
    FailureReason::PayloadTooLarge,
    FailureReason::TenantMismatch,
];

fn outcome_index(o: OutcomeStatus) -> usize {
    usize::from(o.index())
}

fn reason_index(r: FailureReason) -> usize {
    usize::from(r.index())
}

/// How an attempt ended, as the `result` label of `tidewater_attempts_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AttemptEnd {
    Success,
    Failure,
    Stopped,
}

/// The series of one tenant's function.
pub(super) struct FnMetrics {
    pub submitted: Counter,
    pub queue_wait: Histogram,
    pub running: Gauge,
    pub execution: Histogram,
    pub retries: Counter,
    attempts: [Counter; 3],
    completed: [Counter; 4],
    failed: [Counter; 7],
}

impl FnMetrics {
    /// Looks up the series of `tenant`'s `function` in the current recorder.
    pub fn register(tenant: &str, function: &str) -> Self {
        let (t, f) = (tenant.to_string(), function.to_string());
        let attempt = |result: &'static str| counter!(m::ATTEMPTS, m::L_TENANT => t.clone(), m::L_FUNCTION => f.clone(), m::L_RESULT => result);
        Self {
            submitted: counter!(m::TASKS_SUBMITTED, m::L_TENANT => t.clone(), m::L_FUNCTION => f.clone()),
            queue_wait: histogram!(m::QUEUE_WAIT_SECONDS, m::L_TENANT => t.clone(), m::L_FUNCTION => f.clone()),
            running: gauge!(m::TASKS_RUNNING, m::L_TENANT => t.clone(), m::L_FUNCTION => f.clone()),
            execution: histogram!(m::EXECUTION_SECONDS, m::L_TENANT => t.clone(), m::L_FUNCTION => f.clone()),
            retries: counter!(m::RETRIES, m::L_TENANT => t.clone(), m::L_FUNCTION => f.clone()),
            attempts: [attempt("success"), attempt("failure"), attempt("stopped")],
            completed: OUTCOMES.map(|o| {
                counter!(m::TASKS_COMPLETED, m::L_TENANT => t.clone(), m::L_FUNCTION => f.clone(), m::L_OUTCOME => o.as_str())
            }),
            failed: REASONS.map(|r| {
                counter!(m::TASKS_FAILED, m::L_TENANT => t.clone(), m::L_FUNCTION => f.clone(), m::L_REASON => r.as_str())
            }),
        }
    }

    /// `tidewater_attempts_total{result}`.
    pub fn attempt(&self, end: AttemptEnd) -> &Counter {
        &self.attempts[end as usize]
    }

    /// A task reached its outcome: `tidewater_tasks_completed_total{outcome}`, and for a
    /// failure `tidewater_tasks_failed_total{reason}`.
    pub fn finished(&self, outcome: OutcomeStatus, reason: Option<FailureReason>) {
        if let Some(reason) = reason {
            self.failed[reason_index(reason)].increment(1);
        }
        self.completed[outcome_index(outcome)].increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_and_reason_has_its_own_series() {
        for (i, o) in OUTCOMES.iter().enumerate() {
            assert_eq!(outcome_index(*o), i);
        }
        for (i, r) in REASONS.iter().enumerate() {
            assert_eq!(reason_index(*r), i);
        }
        assert_eq!(AttemptEnd::Success as usize, 0);
        assert_eq!(AttemptEnd::Failure as usize, 1);
        assert_eq!(AttemptEnd::Stopped as usize, 2);
    }
}
