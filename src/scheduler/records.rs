//! The records a task produces: status events, outcome events, compensation tasks,
//! captured logs and delayed copies. Building only: the engine hands them to the
//! publisher.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use metrics::counter;
use tracing::error;

use super::Ctx;
use super::intake::labels;
use super::out_record::OutRecord;
use crate::clock::now_ms;
use crate::codec::{
    self, FailureReason, OutcomeStatus, OutcomeView, SourceView, StatusView, TaskStatus,
};
use crate::config::Destination;
use crate::executor::Captured;
use crate::names::{headers as h, metrics as m, topics};

/// Where an outcome goes, parsed once from the function's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// The outcome event is written to this topic.
    Topic(Arc<str>),
    /// The outcome event becomes the payload of a new task of this function (same
    /// tenant): compensation.
    Function(String),
}

impl Target {
    /// Parses a destination as configured (`<topic>` or `function:<name>`).
    pub(crate) fn parse(s: &str) -> Self {
        match Destination::parse(s) {
            Destination::Topic(t) => Target::Topic(t.into()),
            Destination::Function(f) => Target::Function(f.to_string()),
        }
    }

    /// As configured: the topic, or `function:<name>` (a metric label).
    pub(crate) fn label(&self) -> String {
        match self {
            Target::Topic(t) => t.to_string(),
            Target::Function(f) => format!("function:{f}"),
        }
    }
}

/// Who a record is about: the headers every record Tidewater writes about a task carries
/// (besides content type and event kind), those that are known.
#[derive(Debug, Clone, Copy, Default)]
struct About<'a> {
    task_id: &'a str,
    tenant: &'a str,
    function: Option<&'a str>,
    traceparent: Option<&'a str>,
    /// The redrive of the run, when the task was redriven: the indexer tells the runs of
    /// one task apart by it.
    redrive: Option<&'a str>,
}

/// A record about a task, keyed by its id: content type, event kind, task id and tenant,
/// then the function, trace context and redrive where there are.
fn task_record(topic: Arc<str>, value: Vec<u8>, event: &'static str, a: About<'_>) -> OutRecord {
    let room = [Some(a.tenant), a.function, a.traceparent, a.redrive]
        .into_iter()
        .flatten()
        .map(str::len)
        .fold(0, usize::saturating_add);
    let mut r = OutRecord::new(topic, value, a.task_id, room);
    r.fixed(h::CONTENT_TYPE, h::CONTENT_TYPE_AVRO)
        .fixed(h::EVENT, event)
        .key_header(h::TASK_ID)
        .header(h::TENANT, a.tenant)
        .header_opt(h::FUNCTION, a.function)
        .header_opt(h::TRACEPARENT, a.traceparent)
        .header_opt(h::REDRIVE_ID, a.redrive);
    r
}

/// What a task's records say about it, borrowed: from a held job (whose outcome is built
/// only when it ends) or from an outcome.
#[derive(Debug, Clone, Copy)]
pub(super) struct TaskRef<'a> {
    pub task_id: &'a str,
    pub tenant: &'a str,
    pub function: &'a str,
    pub submitted_at: i64,
    pub source: SourceView<'a>,
    pub task_headers: &'a BTreeMap<String, String>,
}

impl<'a> TaskRef<'a> {
    /// The task of an outcome.
    pub(super) fn of(o: &OutcomeView<'a>) -> Self {
        Self {
            task_id: o.task_id,
            tenant: o.tenant,
            function: o.function,
            submitted_at: o.submitted_at,
            source: o.source,
            task_headers: o.task_headers,
        }
    }
}

/// The redrive a task's run belongs to (its `tw-redrive-id` task header), if any.
pub(super) fn redrive_of<'a>(t: &TaskRef<'a>) -> Option<&'a str> {
    t.task_headers.get(h::REDRIVE_ID).map(String::as_str)
}

/// The id a task's run is remembered by once it finished here (`scheduler.dedupe_window`):
/// the task id, and for a redriven run the task id and redrive, so a redrive runs a task
/// that finished here before, and the same redrive delivered twice runs it once.
pub(super) fn finished_id<'a>(t: &TaskRef<'a>) -> Cow<'a, str> {
    match redrive_of(t) {
        Some(r) => Cow::Owned(format!("{}\u{1f}{r}", t.task_id)),
        None => Cow::Borrowed(t.task_id),
    }
}

/// Whether a stop request made at `requested_at` applies to this run of the task: always,
/// except to a redriven run submitted after the request (the redrive came later).
pub(super) fn stop_applies(t: &TaskRef<'_>, requested_at: i64) -> bool {
    redrive_of(t).is_none() || t.submitted_at <= requested_at
}

/// A status event for a task at `status`, stamped now (borrowed from the task).
pub(super) fn status_event<'a>(
    ctx: &'a Ctx,
    t: &TaskRef<'a>,
    status: TaskStatus,
    attempt: i32,
    (reason, error): (Option<FailureReason>, Option<&'a str>),
) -> StatusView<'a> {
    StatusView {
        task_id: t.task_id,
        tenant: t.tenant,
        function: t.function,
        status,
        attempt,
        at: now_ms(),
        submitted_at: t.submitted_at,
        reason,
        error,
        source: t.source,
        scheduler_id: &ctx.scheduler_id,
    }
}

/// The `<prefix>.status` record of a status event of a run of `redrive` (if redriven).
pub(super) fn status_record(
    ctx: &Ctx,
    ev: &StatusView<'_>,
    redrive: Option<&str>,
) -> Option<OutRecord> {
    let value = match codec::encode_status_view(ev) {
        Ok(v) => v,
        Err(e) => {
            error!(task_id = %ev.task_id, error = %e, "cannot encode status event");
            return None;
        }
    };
    Some(task_record(
        ctx.status_topic.clone(),
        value,
        h::EVENT_STATUS,
        About {
            task_id: ev.task_id,
            tenant: ev.tenant,
            function: Some(ev.function),
            traceparent: None,
            redrive,
        },
    ))
}

/// The records of a terminal outcome: the outcome event (to `destination`, when there is
/// one) and its status event.
pub(super) fn outcome_records(
    ctx: &Ctx,
    o: &OutcomeView<'_>,
    destination: Option<&Target>,
) -> Vec<OutRecord> {
    let status = match o.status {
        OutcomeStatus::Succeeded => TaskStatus::Succeeded,
        OutcomeStatus::Failed => TaskStatus::Failed,
        OutcomeStatus::Stopped => TaskStatus::Stopped,
        OutcomeStatus::Expired => TaskStatus::Expired,
    };
    let attempt = o.attempts.last().map_or(0, |a| a.attempt);
    let task = TaskRef::of(o);
    let ev = status_event(ctx, &task, status, attempt, (o.reason, o.error));
    let mut records = Vec::with_capacity(2);
    match destination {
        Some(Target::Function(function)) => records.extend(compensation_record(ctx, o, function)),
        Some(Target::Topic(topic)) => match codec::encode_outcome_view(o) {
            Ok(value) => records.push(task_record(
                topic.clone(),
                value,
                h::EVENT_OUTCOME,
                About {
                    task_id: o.task_id,
                    tenant: o.tenant,
                    function: Some(o.function),
                    traceparent: o.traceparent,
                    redrive: redrive_of(&task),
                },
            )),
            Err(e) => error!(task_id = %o.task_id, error = %e, "cannot encode outcome"),
        },
        None => {}
    }
    if let Some(d) = destination.filter(|_| !records.is_empty()) {
        count_dead_letter(ctx, o, d);
    }
    records.extend(status_record(ctx, &ev, redrive_of(&task)));
    records
}

/// Counts an outcome other than `succeeded` that goes to a destination, by tenant,
/// function and destination. Destinations come from the configuration; a tenant that is
/// not configured (a foreign record in a delay topic) has its destination labelled
/// `_unknown` too, so input cannot create series.
fn count_dead_letter(ctx: &Ctx, o: &OutcomeView<'_>, destination: &Target) {
    if o.status == OutcomeStatus::Succeeded {
        return;
    }
    let (tenant, function) = labels(ctx, o.tenant, o.function);
    let destination = if tenant == m::UNKNOWN {
        m::UNKNOWN.to_string()
    } else {
        destination.label()
    };
    counter!(m::DEAD_LETTERED, m::L_TENANT => tenant, m::L_FUNCTION => function, m::L_DESTINATION => destination)
        .increment(1);
}

/// A `function:<name>` destination: the outcome event, as JSON, becomes the payload of a
/// new task of that function (same tenant), with id `<task id>.<function>`.
fn compensation_record(ctx: &Ctx, o: &OutcomeView<'_>, function: &str) -> Option<OutRecord> {
    let task = codec::Task {
        id: format!("{}.{function}", o.task_id),
        tenant: Some(o.tenant.to_string()),
        function: function.to_string(),
        payload: codec::outcome_json(&o.to_outcome())
            .to_string()
            .into_bytes(),
        headers: BTreeMap::from([
            (h::COMPENSATES.to_string(), o.task_id.to_string()),
            (
                h::CONTENT_TYPE.to_string(),
                h::CONTENT_TYPE_JSON.to_string(),
            ),
        ]),
        submitted_at: Some(now_ms()),
        not_before: None,
    };
    let value = match codec::encode_task(&task) {
        Ok(v) => v,
        Err(e) => {
            error!(task_id = %o.task_id, error = %e, "cannot encode compensation task");
            return None;
        }
    };
    // A task for a queue, like any submitter's: only its content type and trace context.
    let traceparent = o.traceparent;
    let topic = ctx.config.queue_topic(o.tenant, function).into();
    let mut r = OutRecord::new(topic, value, &task.id, traceparent.map_or(0, str::len));
    r.fixed(h::CONTENT_TYPE, h::CONTENT_TYPE_AVRO)
        .header_opt(h::TRACEPARENT, traceparent);
    Some(r)
}

/// `<prefix>.logs` records of an attempt's captured output, each stream cut to
/// `scheduler.max_log_bytes`.
pub(super) fn log_records(
    ctx: &Ctx,
    t: &TaskRef<'_>,
    attempt: i32,
    captured: Vec<Captured>,
) -> Vec<OutRecord> {
    let limit = ctx.config.scheduler.max_log_bytes.get();
    let topic: Arc<str> = topics::logs(&ctx.config.topics.prefix).into();
    captured
        .into_iter()
        .filter_map(|c| {
            let truncated = c.truncated || c.data.len() > limit;
            let mut data = c.data;
            data.truncate(limit);
            let log = codec::TaskLog {
                task_id: t.task_id.to_string(),
                tenant: t.tenant.to_string(),
                function: t.function.to_string(),
                attempt,
                at: now_ms(),
                stream: c.stream,
                data,
                truncated,
            };
            let value = codec::encode_task_log(&log).ok()?;
            Some(task_record(
                topic.clone(),
                value,
                h::EVENT_LOG,
                About {
                    task_id: &log.task_id,
                    tenant: &log.tenant,
                    redrive: redrive_of(t),
                    ..About::default()
                },
            ))
        })
        .collect()
}

/// The record that parks a task on the delay topic `topic` until `delayed.due_at`.
pub(super) fn delay_record(
    topic: &str,
    delayed: &codec::DelayedTask,
) -> Result<OutRecord, codec::CodecError> {
    Ok(task_record(
        topic.into(),
        codec::encode_delayed(delayed)?,
        h::EVENT_DELAYED,
        About {
            task_id: &delayed.task_id,
            tenant: &delayed.tenant,
            function: Some(&delayed.function),
            traceparent: delayed.traceparent.as_deref(),
            redrive: None,
        },
    ))
}

/// The delay topic for a wait: the longest tier not above it (the shortest for less).
pub(super) fn tier_for(tiers: &[(Duration, String)], wait: Duration) -> Option<&str> {
    tiers
        .iter()
        .rev()
        .find(|(d, _)| *d <= wait)
        .or_else(|| tiers.first())
        .map(|(_, t)| t.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_once_into_topics_or_functions() {
        assert_eq!(
            Target::parse("tw.dlq.acme"),
            Target::Topic("tw.dlq.acme".into())
        );
        assert_eq!(
            Target::parse("function:undo"),
            Target::Function("undo".into())
        );
        for configured in ["tw.dlq.acme", "function:undo"] {
            assert_eq!(Target::parse(configured).label(), configured);
        }
    }

    #[test]
    fn a_wait_goes_to_the_longest_tier_not_above_it() {
        let tiers = vec![
            (Duration::from_secs(1), "d1s".to_string()),
            (Duration::from_secs(10), "d10s".to_string()),
            (Duration::from_secs(60), "d1m".to_string()),
        ];
        assert_eq!(tier_for(&tiers, Duration::from_millis(10)), Some("d1s"));
        assert_eq!(tier_for(&tiers, Duration::from_secs(10)), Some("d10s"));
        assert_eq!(tier_for(&tiers, Duration::from_secs(59)), Some("d10s"));
        assert_eq!(tier_for(&tiers, Duration::from_secs(3600)), Some("d1m"));
        assert_eq!(tier_for(&[], Duration::from_secs(1)), None);
    }

    fn outcome(headers: &[(&str, &str)], submitted_at: i64) -> codec::Outcome {
        codec::Outcome {
            task_id: "t1".into(),
            tenant: "acme".into(),
            function: "f".into(),
            status: OutcomeStatus::Failed,
            reason: None,
            error: None,
            result: None,
            payload: Vec::new(),
            task_headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            attempts: Vec::new(),
            submitted_at,
            finished_at: 0,
            source: codec::Source {
                topic: "q".into(),
                partition: 0,
                offset: 0,
            },
            traceparent: None,
            scheduler_id: "s".into(),
        }
    }

    #[test]
    fn a_redriven_run_is_remembered_apart_and_outlives_earlier_stops() {
        let (first, redriven, other) = (
            outcome(&[], 100),
            outcome(&[(h::REDRIVE_ID, "r1")], 500),
            outcome(&[(h::REDRIVE_ID, "r2")], 500),
        );
        let (first, redriven, other) = (
            TaskRef::of(&first.view()),
            TaskRef::of(&redriven.view()),
            TaskRef::of(&other.view()),
        );
        assert_eq!(finished_id(&first), "t1");
        assert_eq!(finished_id(&redriven), "t1\u{1f}r1");
        assert_ne!(finished_id(&redriven), finished_id(&other));
        assert!(stop_applies(&first, 50), "a first run obeys any stop");
        assert!(!stop_applies(&redriven, 400), "stopped before the redrive");
        assert!(stop_applies(&redriven, 600), "stopped after the redrive");
        assert_eq!(redrive_of(&redriven), Some("r1"));
    }

    #[test]
    fn headers_carry_function_trace_and_redrive_only_when_known() {
        let about = About {
            task_id: "t1",
            tenant: "acme",
            function: Some("f"),
            traceparent: Some("00-ab"),
            redrive: Some("r1"),
        };
        let with = task_record("out".into(), b"v".to_vec(), h::EVENT_OUTCOME, about);
        let names: Vec<_> = with.headers().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                h::CONTENT_TYPE,
                h::EVENT,
                h::TASK_ID,
                h::TENANT,
                h::FUNCTION,
                h::TRACEPARENT,
                h::REDRIVE_ID
            ]
        );
        assert_eq!(with.header_str(h::EVENT), Some(h::EVENT_OUTCOME));
        assert_eq!(with.header_str(h::TASK_ID), Some("t1"));
        assert_eq!(with.header_str(h::FUNCTION), Some("f"));
        assert_eq!(with.header_str(h::TRACEPARENT), Some("00-ab"));
        assert_eq!(with.header_str(h::REDRIVE_ID), Some("r1"));
        assert_eq!((with.key(), with.value()), (&b"t1"[..], &b"v"[..]));
        let about = About {
            task_id: "t1",
            tenant: "acme",
            ..About::default()
        };
        let without = task_record("logs".into(), Vec::new(), h::EVENT_LOG, about);
        assert_eq!(without.header_count(), 4);
        assert_eq!(without.header_str(h::TENANT), Some("acme"));
        assert_eq!(without.header_str(h::FUNCTION), None);
    }
}
