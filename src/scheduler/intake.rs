//! Intake: what a fetched record is. A task for one of our functions (to run now or at
//! its time), a record with nothing to do, or input that can never run and becomes a
//! `failed` outcome with the reason. Decisions only: no Kafka call, no clock but the
//! record's own times and `now_ms` for the rejection's finish time.

use std::collections::BTreeMap;
use std::sync::Arc;

use metrics::counter;
use tracing::{error, warn};

use super::consumer::Record;
use super::records::Target;
use super::{Ctx, FunctionRt, Job, ProcessSpan, shared_headers};
use crate::clock::now_ms;
use crate::codec::{self, FailureReason, Outcome, OutcomeStatus};
use crate::names::{metrics as m, topics};
use crate::otel;

/// What a fetched record turns into.
pub(super) enum Prepared {
    /// A task to run, now or (with a time, ms) no earlier than then.
    Run(Box<Job>, Option<i64>),
    /// A record with nothing to do (logged): its offset is simply done.
    Skip(Record, u64),
    /// Input that can never run: a failed outcome for the destination.
    Reject {
        record: Record,
        epoch: u64,
        outcome: Box<Outcome>,
        destination: Target,
    },
}

/// Why a task cannot run, and where its failure goes.
struct Refusal {
    reason: FailureReason,
    error: String,
    destination: Target,
}

/// Metric labels for a tenant and function, bounded to configured names.
pub(super) fn labels(ctx: &Ctx, tenant: &str, function: &str) -> (String, String) {
    let t = if ctx.config.tenants.contains_key(tenant) {
        tenant.to_string()
    } else {
        m::UNKNOWN.to_string()
    };
    let f = if ctx.functions.get(tenant, function).is_some() {
        function.to_string()
    } else {
        m::UNKNOWN.to_string()
    };
    (t, f)
}

/// Decodes and checks a record: a job for its function, or a rejection with the reason.
pub(super) fn prepare(ctx: &Ctx, record: Record, epoch: u64) -> Prepared {
    if ctx.is_delay_topic(&record.tp.topic) {
        return prepare_delayed(ctx, record, epoch);
    }
    let queue = topics::parse_queue(&ctx.config.topics.prefix, &record.tp.topic);
    let tenant = queue
        .as_ref()
        .map(|q| q.tenant.clone())
        .unwrap_or_else(|| record.tp.topic.to_string());
    let record_time = record.timestamp().unwrap_or_else(now_ms);
    let task = match codec::decode_task(&record.value, record.content_type.as_deref()) {
        Ok(task) => task,
        Err(e) => {
            let (lt, lf) = labels(ctx, &tenant, "");
            counter!(m::TASKS_SUBMITTED, m::L_TENANT => lt, m::L_FUNCTION => lf).increment(1);
            let mut outcome = new_outcome(&record, &tenant, record.fallback_id(), "");
            outcome.payload = record.value.to_vec();
            outcome.submitted_at = record_time;
            let refusal = Refusal {
                reason: FailureReason::Malformed,
                error: format!(
                    "cannot decode task at {}[{}]@{}: {e}",
                    record.tp.topic, record.tp.partition, record.offset
                ),
                destination: dead_letter(ctx, &tenant),
            };
            return reject(ctx, record, epoch, outcome, refusal);
        }
    };
    let task_id = if task.id.is_empty() {
        record.fallback_id()
    } else {
        task.id.clone()
    };
    let f = ctx.functions.get(&tenant, &task.function).cloned();
    if let Some(f) = &f {
        f.metrics.submitted.increment(1);
    } else {
        let (lt, lf) = labels(ctx, &tenant, &task.function);
        counter!(m::TASKS_SUBMITTED, m::L_TENANT => lt, m::L_FUNCTION => lf).increment(1);
    }

    let only = queue.as_ref().and_then(|q| q.function.as_deref());
    let submitted_at = task.submitted_at.unwrap_or(record_time);
    let refused = refusal(ctx, &record, &tenant, only, &task, f.as_deref());
    match (refused, f) {
        (None, Some(f)) => {
            let not_before = task.not_before;
            let held = Held {
                task_id,
                submitted_at,
                origin: None,
                attempts: Vec::new(),
                payload: task.payload,
                headers: task.headers,
            };
            Prepared::Run(job(ctx, (record, epoch), f, held), not_before)
        }
        (refused, _) => {
            let refusal = refused.unwrap_or_else(|| unknown_function(ctx, &tenant, &task.function));
            let mut outcome = new_outcome(&record, &tenant, task_id, &task.function);
            outcome.task_headers = task.headers;
            outcome.submitted_at = submitted_at;
            outcome.payload = task.payload;
            reject(ctx, record, epoch, outcome, refusal)
        }
    }
}

/// What a job holds of its task besides its record and function.
struct Held {
    task_id: String,
    submitted_at: i64,
    origin: Option<Box<codec::Source>>,
    attempts: Vec<codec::Attempt>,
    payload: Vec<u8>,
    headers: BTreeMap<String, String>,
}

/// A job for a task of `f`, with its `process` span (whose trace context its events
/// carry, with traces on).
fn job(ctx: &Ctx, (record, epoch): (Record, u64), f: Arc<FunctionRt>, held: Held) -> Box<Job> {
    let (span, traceparent) = process_span(ctx, &record, (&held.task_id, &f.tenant, &f.name));
    Box::new(Job {
        span: ProcessSpan::new(span, traceparent),
        record,
        epoch,
        f,
        task_id: held.task_id.into_boxed_str(),
        submitted_at: held.submitted_at,
        origin: held.origin,
        attempts: held.attempts,
        payload: Arc::new(held.payload),
        headers: shared_headers(held.headers),
    })
}

/// Why a decoded task cannot run on this queue, if it cannot.
fn refusal(
    ctx: &Ctx,
    record: &Record,
    tenant: &str,
    only: Option<&str>,
    task: &codec::Task,
    f: Option<&FunctionRt>,
) -> Option<Refusal> {
    if let Some(named) = task.tenant.as_deref().filter(|t| *t != tenant) {
        return Some(Refusal {
            reason: FailureReason::TenantMismatch,
            error: format!(
                "task names tenant `{named}` but was submitted to the queue of tenant `{tenant}`"
            ),
            destination: dead_letter(ctx, tenant),
        });
    }
    if let Some(only) = only.filter(|only| *only != task.function) {
        return Some(Refusal {
            reason: FailureReason::UnknownFunction,
            error: format!(
                "queue {} serves only function `{only}`, not `{}`",
                record.tp.topic, task.function
            ),
            destination: dead_letter(ctx, tenant),
        });
    }
    let Some(f) = f else {
        return Some(unknown_function(ctx, tenant, &task.function));
    };
    (task.payload.len() > f.max_payload).then(|| Refusal {
        reason: FailureReason::PayloadTooLarge,
        error: format!(
            "payload of {} bytes is over the limit of {} bytes",
            task.payload.len(),
            f.max_payload
        ),
        destination: f.on_failure.clone(),
    })
}

fn unknown_function(ctx: &Ctx, tenant: &str, function: &str) -> Refusal {
    Refusal {
        reason: FailureReason::UnknownFunction,
        error: format!("tenant `{tenant}` has no function `{function}`"),
        destination: dead_letter(ctx, tenant),
    }
}

fn dead_letter(ctx: &Ctx, tenant: &str) -> Target {
    Target::parse(&ctx.config.dead_letter(tenant))
}

/// The task's OpenTelemetry `process` span, continuing the record's trace context. With
/// traces on, the task's events (outcome, status, delayed copies) carry the span's context
/// instead of the submitter's, so a consumer of them continues this trace.
fn process_span(
    ctx: &Ctx,
    record: &Record,
    (task_id, tenant, function): (&str, &str, &str),
) -> (tracing::Span, Option<String>) {
    if !otel::enabled() {
        return (tracing::Span::none(), None);
    }
    let consumed = otel::Consumed {
        topic: &record.tp.topic,
        partition: record.tp.partition,
        offset: record.offset,
        group: &ctx.group_id,
        traceparent: record.traceparent.as_deref(),
        tracestate: record.tracestate.as_deref(),
    };
    let span = otel::process_span(&consumed, task_id, tenant, function);
    let traceparent = otel::context_headers(&span).map(|(traceparent, _)| traceparent);
    (span, traceparent)
}

/// The outcome a task starts with: failed until an attempt says otherwise.
fn new_outcome(record: &Record, tenant: &str, task_id: String, function: &str) -> Outcome {
    Outcome {
        task_id,
        tenant: tenant.to_string(),
        function: function.to_string(),
        status: OutcomeStatus::Failed,
        reason: None,
        error: None,
        result: None,
        payload: Vec::new(),
        task_headers: BTreeMap::new(),
        attempts: Vec::new(),
        submitted_at: 0,
        finished_at: 0,
        source: record.source().to_source(),
        traceparent: record.traceparent.as_deref().map(str::to_string),
        // Set when it is published (`Engine::publish`): not held per queued task.
        scheduler_id: String::new(),
    }
}

/// Input that can never run: logged, counted, and a failed outcome with the reason.
fn reject(
    ctx: &Ctx,
    record: Record,
    epoch: u64,
    mut outcome: Outcome,
    refusal: Refusal,
) -> Prepared {
    let Refusal {
        reason,
        error,
        destination,
    } = refusal;
    let (span, traceparent) = process_span(
        ctx,
        &record,
        (&outcome.task_id, &outcome.tenant, &outcome.function),
    );
    if traceparent.is_some() {
        outcome.traceparent = traceparent;
    }
    otel::finish_process(&span, "failed", Some(reason.as_str()));
    let (lt, lf) = labels(ctx, &outcome.tenant, &outcome.function);
    warn!(task_id = %outcome.task_id, tenant = %outcome.tenant, reason = reason.as_str(), error = %error, "task rejected");
    counter!(m::TASKS_FAILED, m::L_TENANT => lt.clone(), m::L_FUNCTION => lf.clone(), m::L_REASON => reason.as_str()).increment(1);
    counter!(m::TASKS_COMPLETED, m::L_TENANT => lt, m::L_FUNCTION => lf, m::L_OUTCOME => "failed")
        .increment(1);
    outcome.reason = Some(reason);
    outcome.error = Some(error);
    outcome.finished_at = now_ms();
    Prepared::Reject {
        record,
        epoch,
        outcome: Box::new(outcome),
        destination,
    }
}

/// A task back from a delay topic.
pub(super) fn prepare_delayed(ctx: &Ctx, record: Record, epoch: u64) -> Prepared {
    let d = match codec::decode_delayed(&record.value) {
        Ok(d) => d,
        Err(e) => {
            // Only Tidewater writes delay topics: this is not a user's task to dead-letter.
            counter!(m::RECORDS_SKIPPED, m::L_KIND => "delayed").increment(1);
            error!(topic = %record.tp.topic, partition = record.tp.partition, offset = record.offset, error = %e,
                "undecodable record in a delay topic skipped");
            return Prepared::Skip(record, epoch);
        }
    };
    let Some(f) = ctx.functions.get(&d.tenant, &d.function).cloned() else {
        let mut outcome = new_outcome(&record, &d.tenant, d.task_id.clone(), &d.function);
        outcome.task_headers = d.headers;
        outcome.attempts = d.attempts;
        outcome.submitted_at = d.submitted_at;
        outcome.source = d.origin;
        outcome.traceparent = d.traceparent;
        outcome.payload = d.payload;
        outcome.reason = Some(FailureReason::UnknownFunction);
        outcome.error = Some(format!(
            "tenant `{}` has no function `{}` any more",
            d.tenant, d.function
        ));
        outcome.finished_at = now_ms();
        return Prepared::Reject {
            record,
            epoch,
            outcome: Box::new(outcome),
            destination: dead_letter(ctx, &d.tenant),
        };
    };
    let mut record = record;
    // The delayed copy carries the task's trace context (its events', its span's parent).
    record.traceparent = d.traceparent.map(String::into_boxed_str);
    let held = Held {
        task_id: d.task_id,
        submitted_at: d.submitted_at,
        origin: Some(Box::new(d.origin)),
        attempts: d.attempts,
        payload: d.payload,
        headers: d.headers,
    };
    Prepared::Run(job(ctx, (record, epoch), f, held), Some(d.due_at))
}

#[cfg(test)]
#[path = "intake_tests.rs"]
mod tests;
