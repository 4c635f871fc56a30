//! One attempt of a task: check its age, run its executor within the function's timeout,
//! record the attempt with the task, and publish the `running` status and the
//! captured output on the way. Also the delay before the next attempt.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::fn_metrics::AttemptEnd;
use super::records::{log_records, redrive_of, status_event, status_record};
use super::{Ctx, Job};
use crate::clock::now_ms;
use crate::codec::{Attempt, TaskStatus};
use crate::executor::{ExecError, Invocation};
use crate::otel;

/// What one attempt came to.
pub(super) enum AttemptResult {
    Succeeded(Vec<u8>),
    Failed(ExecError),
    /// Older than the function's `max_event_age`: not run.
    Expired(Duration),
    /// Stopped on request while running (the attempt was cancelled).
    Stopped,
    /// Abandoned at hard stop.
    Abandoned,
}

/// Runs one attempt of a job and records it in the job's attempts.
pub(super) async fn attempt(ctx: &Ctx, job: &mut Job, cancel: CancellationToken) -> AttemptResult {
    let f = job.f.clone();
    let fm = &f.metrics;
    let attempt_no = job.attempts.len() as u32 + 1;
    let attempt_i32 = i32::try_from(attempt_no).unwrap_or(i32::MAX);
    let started_at = now_ms();
    if let Some(age) = f.cfg.max_event_age {
        let waited =
            Duration::from_millis(u64::try_from(started_at - job.submitted_at).unwrap_or(0));
        if waited > age {
            return AttemptResult::Expired(waited);
        }
    }
    if attempt_no == 1 {
        fm.queue_wait
            .record((started_at - job.submitted_at).max(0) as f64 / 1000.0);
    }
    // The `running` status event, stamped with the attempt's start.
    let announce = |job: &Job| {
        let task = job.task();
        let mut ev = status_event(ctx, &task, TaskStatus::Running, attempt_i32, (None, None));
        ev.at = started_at;
        ctx.send_nowait(
            status_record(ctx, &ev, redrive_of(&task))
                .into_iter()
                .collect(),
        );
    };
    let delay = ctx.config.scheduler.running_event_delay;
    let mut announced = delay.is_zero();
    if announced {
        announce(job);
    }
    let running = &fm.running;
    running.increment(1.0);
    let span = otel::attempt_span(job.span.get(), &f.name, attempt_no);
    let inv = Invocation {
        task_id: job.task_id.to_string(),
        tenant: f.tenant.clone(),
        function: f.name.clone(),
        attempt: attempt_no,
        payload: job.payload.clone(),
        // With traces on, the function continues the attempt's span; else the submitter's.
        traceparent: otel::context_headers(&span)
            .map(|(tp, _)| tp)
            .or_else(|| job.record.traceparent.as_deref().map(str::to_string)),
        tracestate: job.record.tracestate.as_deref().map(str::to_string),
        headers: job.headers.clone(),
        span: span.clone(),
    };
    let clock = Instant::now();
    let execution = f.executor.execute_captured(inv, f.cfg.timeout);
    tokio::pin!(execution);
    // Only with a delay: an attempt that ends before it has no `running` event.
    let announce_at = (!announced).then(|| tokio::time::sleep(delay));
    tokio::pin!(announce_at);
    let (result, captured) = loop {
        tokio::select! {
            r = &mut execution => break r,
            () = async {
                if let Some(at) = announce_at.as_mut().as_pin_mut() {
                    at.await;
                }
            }, if !announced => {
                announce(job);
                announced = true;
            }
            _ = ctx.hard_stop.cancelled() => {
                running.decrement(1.0);
                return AttemptResult::Abandoned;
            }
            // Dropping the execution aborts an HTTP call and kills a command's process.
            _ = cancel.cancelled() => {
                running.decrement(1.0);
                otel::finish_attempt(&span, "stopped");
                fm.execution.record(clock.elapsed().as_secs_f64());
                fm.attempt(AttemptEnd::Stopped).increment(1);
                job.attempts.push(Attempt {
                    attempt: attempt_i32,
                    started_at,
                    finished_at: now_ms(),
                    error: Some("stopped on request".into()),
                });
                return AttemptResult::Stopped;
            }
        }
    };
    running.decrement(1.0);
    fm.execution.record(clock.elapsed().as_secs_f64());
    let outcome_label = if result.is_ok() { "success" } else { "failure" };
    otel::finish_attempt(
        &span,
        match &result {
            Err(ExecError::Timeout(_)) => "timeout",
            _ => outcome_label,
        },
    );
    fm.attempt(if result.is_ok() {
        AttemptEnd::Success
    } else {
        AttemptEnd::Failure
    })
    .increment(1);
    job.attempts.push(Attempt {
        attempt: attempt_i32,
        started_at,
        finished_at: now_ms(),
        error: result.as_ref().err().map(ToString::to_string),
    });
    if !captured.is_empty() {
        ctx.send_nowait(log_records(ctx, &job.task(), attempt_i32, captured));
    }
    match result {
        Ok(r) => AttemptResult::Succeeded(r),
        Err(e) => AttemptResult::Failed(e),
    }
}

/// Delay before attempt `next` (2, 3, …): `backoff * 2^(next-2)`, capped, with jitter
/// between half and all of it.
pub fn retry_delay(base: Duration, cap: Duration, next: u32, jitter: f64) -> Duration {
    let exp = next.saturating_sub(2).min(30);
    let full = base.saturating_mul(1u32 << exp).min(cap);
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A number in [0, 1) that differs between calls and processes (not for secrets).
pub(super) fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_i64(now_ms());
    (hasher.finish() % 10_000) as f64 / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_and_caps() {
        let b = Duration::from_millis(100);
        let cap = Duration::from_secs(1);
        assert_eq!(retry_delay(b, cap, 2, 1.0), Duration::from_millis(100));
        assert_eq!(retry_delay(b, cap, 3, 1.0), Duration::from_millis(200));
        assert_eq!(retry_delay(b, cap, 4, 1.0), Duration::from_millis(400));
        assert_eq!(retry_delay(b, cap, 10, 1.0), cap);
        assert_eq!(retry_delay(b, cap, 2, 0.0), Duration::from_millis(50));
        assert_eq!(retry_delay(b, cap, 60, 1.0), cap);
    }

    #[test]
    fn jitter_stays_in_its_range() {
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }
}
