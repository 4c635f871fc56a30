//! Outcome, status, delayed-task, captured-output and stop-request records, and the
//! status and reason vocabularies they share.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::CodecError;
use super::binary;
use super::schema::{decode, encode, framed, schemas};

/// Terminal status of an outcome event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    /// The function succeeded.
    Succeeded,
    /// The task failed for good.
    Failed,
    /// Stopped on request.
    Stopped,
    /// Older than its function's `max_event_age` when its turn came; never ran.
    Expired,
}

impl OutcomeStatus {
    /// Its symbol's position in the schema's enum (what Avro writes).
    pub fn index(self) -> u8 {
        match self {
            Self::Succeeded => 0,
            Self::Failed => 1,
            Self::Stopped => 2,
            Self::Expired => 3,
        }
    }

    /// The label value (same as the Avro symbol).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
            Self::Expired => "expired",
        }
    }
}

/// Why a task failed. A small fixed set: also a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The executor reported failure on the last attempt.
    Executor,
    /// The last attempt ran over the function's timeout.
    Timeout,
    /// The executor reported a failure that must not be retried (HTTP 4xx, listed exit code).
    NonRetryable,
    /// The record could not be decoded as a task.
    Malformed,
    /// The task names a function the tenant does not have.
    UnknownFunction,
    /// The payload is larger than the function accepts.
    PayloadTooLarge,
    /// The task names a tenant other than its queue's.
    TenantMismatch,
}

impl FailureReason {
    /// Its symbol's position in the schemas' enum (what Avro writes).
    pub fn index(self) -> u8 {
        match self {
            Self::Executor => 0,
            Self::Timeout => 1,
            Self::NonRetryable => 2,
            Self::Malformed => 3,
            Self::UnknownFunction => 4,
            Self::PayloadTooLarge => 5,
            Self::TenantMismatch => 6,
        }
    }

    /// The label value (same as the Avro symbol).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Executor => "executor",
            Self::Timeout => "timeout",
            Self::NonRetryable => "non_retryable",
            Self::Malformed => "malformed",
            Self::UnknownFunction => "unknown_function",
            Self::PayloadTooLarge => "payload_too_large",
            Self::TenantMismatch => "tenant_mismatch",
        }
    }
}

/// Lifecycle status of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// In a queue topic, not yet started.
    Queued,
    /// An attempt is running.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Failed for good.
    Failed,
    /// An attempt failed; another will follow.
    Retrying,
    /// Stopped on request.
    Stopped,
    /// Older than its function's max event age; never ran.
    Expired,
}

impl TaskStatus {
    /// The name used in the store, the API and the Avro schema.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Retrying => "retrying",
            Self::Stopped => "stopped",
            Self::Expired => "expired",
        }
    }

    /// Whether nothing follows this status: the task will not run again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Stopped | Self::Expired
        )
    }
}

/// A status name that is not one of [`TaskStatus`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown task status `{0}`")]
pub struct UnknownStatus(pub String);

impl std::str::FromStr for TaskStatus {
    type Err = UnknownStatus;

    /// Reads what [`TaskStatus::as_str`] writes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "retrying" => Self::Retrying,
            "stopped" => Self::Stopped,
            "expired" => Self::Expired,
            _ => return Err(UnknownStatus(s.to_string())),
        })
    }
}

/// One execution attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1-based attempt number.
    pub attempt: i32,
    /// Start, milliseconds since the epoch.
    pub started_at: i64,
    /// End, milliseconds since the epoch.
    pub finished_at: i64,
    /// The error, when the attempt failed.
    pub error: Option<String>,
}

/// Where a task was read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Queue topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// A [`Source`] borrowed from wherever its parts are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceView<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

impl Source {
    /// The source as a [`SourceView`].
    pub fn view(&self) -> SourceView<'_> {
        SourceView {
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
        }
    }
}

impl SourceView<'_> {
    /// An owned copy.
    pub fn to_source(self) -> Source {
        Source {
            topic: self.topic.to_string(),
            partition: self.partition,
            offset: self.offset,
        }
    }
}

/// The terminal outcome of a task (`schemas/outcome.avsc`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Task id.
    pub task_id: String,
    /// Tenant.
    pub tenant: String,
    /// Function named by the task (empty for undecodable input).
    pub function: String,
    /// Terminal status.
    pub status: OutcomeStatus,
    /// Why it failed.
    pub reason: Option<FailureReason>,
    /// The last error.
    pub error: Option<String>,
    /// The function's result.
    #[serde(with = "apache_avro::serde::bytes_opt")]
    pub result: Option<Vec<u8>>,
    /// The task's payload (the raw record value for undecodable input).
    #[serde(with = "apache_avro::serde::bytes")]
    pub payload: Vec<u8>,
    /// The task's headers.
    pub task_headers: BTreeMap<String, String>,
    /// Every attempt.
    pub attempts: Vec<Attempt>,
    /// Submission time, ms.
    pub submitted_at: i64,
    /// Outcome time, ms.
    pub finished_at: i64,
    /// Where the task was read from.
    pub source: Source,
    /// W3C trace context of the task.
    pub traceparent: Option<String>,
    /// The deciding scheduler.
    pub scheduler_id: String,
}

/// An outcome event borrowing its strings and bytes: what the scheduler encodes when a
/// task ends, without copying the task's payload, headers and attempts into an
/// [`Outcome`] first (see [`encode_outcome_view`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutcomeView<'a> {
    pub task_id: &'a str,
    pub tenant: &'a str,
    pub function: &'a str,
    pub status: OutcomeStatus,
    pub reason: Option<FailureReason>,
    pub error: Option<&'a str>,
    pub result: Option<&'a [u8]>,
    pub payload: &'a [u8],
    pub task_headers: &'a BTreeMap<String, String>,
    pub attempts: &'a [Attempt],
    pub submitted_at: i64,
    pub finished_at: i64,
    pub source: SourceView<'a>,
    pub traceparent: Option<&'a str>,
    pub scheduler_id: &'a str,
}

impl Outcome {
    /// The outcome as an [`OutcomeView`].
    pub fn view(&self) -> OutcomeView<'_> {
        OutcomeView {
            task_id: &self.task_id,
            tenant: &self.tenant,
            function: &self.function,
            status: self.status,
            reason: self.reason,
            error: self.error.as_deref(),
            result: self.result.as_deref(),
            payload: &self.payload,
            task_headers: &self.task_headers,
            attempts: &self.attempts,
            submitted_at: self.submitted_at,
            finished_at: self.finished_at,
            source: self.source.view(),
            traceparent: self.traceparent.as_deref(),
            scheduler_id: &self.scheduler_id,
        }
    }
}

impl OutcomeView<'_> {
    /// An owned copy.
    pub fn to_outcome(&self) -> Outcome {
        Outcome {
            task_id: self.task_id.to_string(),
            tenant: self.tenant.to_string(),
            function: self.function.to_string(),
            status: self.status,
            reason: self.reason,
            error: self.error.map(str::to_string),
            result: self.result.map(<[u8]>::to_vec),
            payload: self.payload.to_vec(),
            task_headers: self.task_headers.clone(),
            attempts: self.attempts.to_vec(),
            submitted_at: self.submitted_at,
            finished_at: self.finished_at,
            source: self.source.to_source(),
            traceparent: self.traceparent.map(str::to_string),
            scheduler_id: self.scheduler_id.to_string(),
        }
    }
}

/// A lifecycle event (`schemas/status.avsc`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusEvent {
    /// Task id.
    pub task_id: String,
    /// Tenant.
    pub tenant: String,
    /// Function.
    pub function: String,
    /// New status.
    pub status: TaskStatus,
    /// Attempt the event belongs to (0 before the first).
    pub attempt: i32,
    /// When it happened, ms.
    pub at: i64,
    /// Submission time, ms.
    pub submitted_at: i64,
    /// Why it failed.
    pub reason: Option<FailureReason>,
    /// The error.
    pub error: Option<String>,
    /// Where the task was read from.
    pub source: Source,
    /// The scheduler that emitted it.
    pub scheduler_id: String,
}

/// A status event borrowed from what it describes, for writing it without copying its
/// strings (see [`encode_status_view`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusView<'a> {
    pub task_id: &'a str,
    pub tenant: &'a str,
    pub function: &'a str,
    pub status: TaskStatus,
    pub attempt: i32,
    pub at: i64,
    pub submitted_at: i64,
    pub reason: Option<FailureReason>,
    pub error: Option<&'a str>,
    pub source: SourceView<'a>,
    pub scheduler_id: &'a str,
}

impl StatusEvent {
    /// The event as a [`StatusView`].
    pub fn view(&self) -> StatusView<'_> {
        StatusView {
            task_id: &self.task_id,
            tenant: &self.tenant,
            function: &self.function,
            status: self.status,
            attempt: self.attempt,
            at: self.at,
            submitted_at: self.submitted_at,
            reason: self.reason,
            error: self.error.as_deref(),
            source: self.source.view(),
            scheduler_id: &self.scheduler_id,
        }
    }
}

/// A task waiting in a delay topic (`schemas/delayed.avsc`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelayedTask {
    /// Task id.
    pub task_id: String,
    /// Tenant.
    pub tenant: String,
    /// Function.
    pub function: String,
    /// Payload.
    #[serde(with = "apache_avro::serde::bytes")]
    pub payload: Vec<u8>,
    /// Headers.
    pub headers: BTreeMap<String, String>,
    /// Submission time, ms.
    pub submitted_at: i64,
    /// When it may run, ms.
    pub due_at: i64,
    /// Attempts so far.
    pub attempts: Vec<Attempt>,
    /// The queue record it came from.
    pub origin: Source,
    /// W3C trace context.
    pub traceparent: Option<String>,
}

/// Encodes an outcome event as Avro (single-object encoding).
pub fn encode_outcome(outcome: &Outcome) -> Result<Vec<u8>, CodecError> {
    encode_outcome_view(&outcome.view())
}

/// Encodes an outcome event given as an [`OutcomeView`]: the same bytes as
/// [`encode_outcome`] of the outcome it views.
pub fn encode_outcome_view(outcome: &OutcomeView<'_>) -> Result<Vec<u8>, CodecError> {
    let s = schemas()?;
    let hint = [
        outcome.payload.len(),
        outcome.result.map_or(0, <[u8]>::len),
        outcome.error.map_or(0, str::len),
    ]
    .into_iter()
    .fold(160, usize::saturating_add);
    Ok(framed(&s.outcome, hint, |out| {
        binary::outcome(out, outcome)
    }))
}

/// Decodes an outcome event.
pub fn decode_outcome(bytes: &[u8]) -> Result<Outcome, CodecError> {
    let s = schemas()?;
    decode("outcome", &s.outcome, bytes)
}

/// Encodes a status event as Avro (single-object encoding).
pub fn encode_status(event: &StatusEvent) -> Result<Vec<u8>, CodecError> {
    encode_status_view(&event.view())
}

/// Encodes a status event given as a [`StatusView`]: the same bytes as
/// [`encode_status`] of the event it views.
pub fn encode_status_view(event: &StatusView<'_>) -> Result<Vec<u8>, CodecError> {
    let s = schemas()?;
    let hint = event.error.map_or(0, str::len).saturating_add(128);
    Ok(framed(&s.status, hint, |out| {
        binary::status_event(out, event)
    }))
}

/// Encodes a delayed task as Avro (single-object encoding).
pub fn encode_delayed(task: &DelayedTask) -> Result<Vec<u8>, CodecError> {
    let s = schemas()?;
    encode("delayed task", &s.delayed, task)
}

/// Decodes a delayed task.
pub fn decode_delayed(bytes: &[u8]) -> Result<DelayedTask, CodecError> {
    let s = schemas()?;
    decode("delayed task", &s.delayed, bytes)
}

/// Decodes a status event.
pub fn decode_status(bytes: &[u8]) -> Result<StatusEvent, CodecError> {
    let s = schemas()?;
    decode("status event", &s.status, bytes)
}

/// Which output a [`TaskLog`] chunk comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    /// A program's standard output.
    Stdout,
    /// A program's standard error.
    Stderr,
    /// The body of an HTTP function's answer.
    HttpResponse,
}

impl LogStream {
    /// The Avro symbol.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::HttpResponse => "http_response",
        }
    }
}

/// Captured output of one attempt (`schemas/tasklog.avsc`), on `<prefix>.logs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLog {
    /// Task id.
    pub task_id: String,
    /// Tenant.
    pub tenant: String,
    /// Function.
    pub function: String,
    /// Attempt the output belongs to (1-based).
    pub attempt: i32,
    /// When it was captured, ms.
    pub at: i64,
    /// Which output.
    pub stream: LogStream,
    /// The bytes.
    #[serde(with = "apache_avro::serde::bytes")]
    pub data: Vec<u8>,
    /// Output beyond this chunk was dropped.
    pub truncated: bool,
}

/// A request to stop a task (`schemas/control.avsc`), on `<prefix>.control`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopRequest {
    /// Task id.
    pub task_id: String,
    /// Tenant that owns the task.
    pub tenant: String,
    /// When it was requested, ms.
    pub requested_at: i64,
    /// Who asked.
    pub requested_by: String,
}

/// Encodes captured output as Avro (single-object encoding).
pub fn encode_task_log(log: &TaskLog) -> Result<Vec<u8>, CodecError> {
    let s = schemas()?;
    encode("task log", &s.task_log, log)
}

/// Decodes captured output.
pub fn decode_task_log(bytes: &[u8]) -> Result<TaskLog, CodecError> {
    let s = schemas()?;
    decode("task log", &s.task_log, bytes)
}

/// Encodes a stop request as Avro (single-object encoding).
pub fn encode_stop_request(req: &StopRequest) -> Result<Vec<u8>, CodecError> {
    let s = schemas()?;
    encode("stop request", &s.stop, req)
}

/// Decodes a stop request.
pub fn decode_stop_request(bytes: &[u8]) -> Result<StopRequest, CodecError> {
    let s = schemas()?;
    decode("stop request", &s.stop, bytes)
}
