//! Wire formats: the task, outcome and status records (Avro schemas in `schemas/`), and the
//! JSON form of a task for simple clients.
//!
//! Avro records are written with Avro's single-object encoding (`C3 01`, the schema's
//! 8-byte CRC-64-AVRO fingerprint, then the binary datum) and the header
//! `content-type: application/avro`. Tasks are read in that form, as a bare binary datum,
//! or as JSON; the `content-type` header decides, and without one a value starting with `{`
//! is JSON.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use serde::{Deserialize, Serialize};

use crate::names::headers;

/// Avro schema of a task (`schemas/task.avsc`).
pub const TASK_SCHEMA: &str = include_str!("../schemas/task.avsc");
/// Avro schema of an outcome event (`schemas/outcome.avsc`).
pub const OUTCOME_SCHEMA: &str = include_str!("../schemas/outcome.avsc");
/// Avro schema of a status event (`schemas/status.avsc`).
pub const STATUS_SCHEMA: &str = include_str!("../schemas/status.avsc");
/// Avro schema of a task in a delay topic (`schemas/delayed.avsc`).
pub const DELAYED_SCHEMA: &str = include_str!("../schemas/delayed.avsc");

const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];

/// Why a record could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The record value is empty.
    #[error("empty record value")]
    Empty,
    /// JSON that is not a task.
    #[error("invalid JSON task: {0}")]
    Json(#[from] serde_json::Error),
    /// Bytes that are not an Avro record of the expected schema.
    #[error("invalid Avro {what}: {detail}")]
    Avro {
        /// Which record.
        what: &'static str,
        /// The decoder's message.
        detail: String,
    },
    /// Single-object encoding with a fingerprint of another schema.
    #[error("Avro single-object record with unknown schema fingerprint {0}")]
    UnknownFingerprint(String),
    /// A content type Tidewater does not read.
    #[error("unsupported content-type `{0}` (use application/json or application/avro)")]
    ContentType(String),
    /// A required field is empty.
    #[error("task field `{0}` is missing or empty")]
    MissingField(&'static str),
}

/// One invocation of a function, as read from a queue topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Task id; empty when the submitter chose none (the scheduler then derives one).
    pub id: String,
    /// Tenant, when the submitter named it.
    pub tenant: Option<String>,
    /// Function name.
    pub function: String,
    /// Input of the function.
    #[serde(with = "apache_avro::serde::bytes")]
    pub payload: Vec<u8>,
    /// Free-form metadata.
    pub headers: BTreeMap<String, String>,
    /// Submission time, milliseconds since the epoch.
    pub submitted_at: Option<i64>,
    /// Run no earlier than this, milliseconds since the epoch.
    pub not_before: Option<i64>,
}

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

struct Schemas {
    delayed: Schema,
    delayed_fp: [u8; 8],
    task: Schema,
    task_fp: [u8; 8],
    outcome: Schema,
    outcome_fp: [u8; 8],
    status: Schema,
    status_fp: [u8; 8],
}

/// The schema's Parsing Canonical Form as the Avro specification defines it.
///
/// apache-avro keeps a logical type's base as `{"type":"long"}` where the specification
/// (and the Java implementation) reduce it to `"long"`; the fingerprint must match what
/// other languages compute, so primitives are reduced here.
pub fn canonical_form(schema: &Schema) -> String {
    let mut canon = schema.canonical_form();
    for p in [
        "null", "boolean", "int", "long", "float", "double", "bytes", "string",
    ] {
        canon = canon.replace(&format!("{{\"type\":\"{p}\"}}"), &format!("\"{p}\""));
    }
    canon
}

/// CRC-64-AVRO (Rabin) fingerprint of the canonical form, little-endian, as written in
/// the single-object encoding header.
pub fn fingerprint(schema: &Schema) -> [u8; 8] {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    let mut table = [0u64; 256];
    for (i, slot) in table.iter_mut().enumerate() {
        let mut fp = i as u64;
        for _ in 0..8 {
            fp = (fp >> 1) ^ (EMPTY & (fp & 1).wrapping_neg());
        }
        *slot = fp;
    }
    let mut fp = EMPTY;
    for b in canonical_form(schema).bytes() {
        fp = (fp >> 8) ^ table[((fp ^ u64::from(b)) & 0xff) as usize];
    }
    fp.to_le_bytes()
}

fn schemas() -> Result<&'static Schemas, CodecError> {
    static SCHEMAS: OnceLock<Result<Schemas, String>> = OnceLock::new();
    SCHEMAS
        .get_or_init(|| {
            let parse = |s: &str| Schema::parse_str(s).map_err(|e| e.to_string());
            let task = parse(TASK_SCHEMA)?;
            let outcome = parse(OUTCOME_SCHEMA)?;
            let status = parse(STATUS_SCHEMA)?;
            let delayed = parse(DELAYED_SCHEMA)?;
            Ok(Schemas {
                delayed_fp: fingerprint(&delayed),
                delayed,
                task_fp: fingerprint(&task),
                outcome_fp: fingerprint(&outcome),
                status_fp: fingerprint(&status),
                task,
                outcome,
                status,
            })
        })
        .as_ref()
        .map_err(|e| CodecError::Avro {
            what: "schema",
            detail: e.clone(),
        })
}

fn avro_err(what: &'static str) -> impl Fn(apache_avro::Error) -> CodecError {
    move |e| CodecError::Avro {
        what,
        detail: e.to_string(),
    }
}

fn encode<T: Serialize>(
    what: &'static str,
    schema: &Schema,
    fp: &[u8; 8],
    value: &T,
) -> Result<Vec<u8>, CodecError> {
    let writer = GenericDatumWriter::builder(schema)
        .human_readable(false)
        .build()
        .map_err(avro_err(what))?;
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&SINGLE_OBJECT_MAGIC);
    out.extend_from_slice(fp);
    writer.write_ser(&mut out, value).map_err(avro_err(what))?;
    Ok(out)
}

fn decode<T: serde::de::DeserializeOwned>(
    what: &'static str,
    schema: &Schema,
    fp: &[u8; 8],
    bytes: &[u8],
) -> Result<T, CodecError> {
    if bytes.is_empty() {
        return Err(CodecError::Empty);
    }
    let mut body = bytes;
    if bytes.len() >= 10 && bytes[..2] == SINGLE_OBJECT_MAGIC {
        if &bytes[2..10] != fp {
            return Err(CodecError::UnknownFingerprint(hex(&bytes[2..10])));
        }
        body = &bytes[10..];
    }
    let reader = GenericDatumReader::builder(schema)
        .human_readable(false)
        .build()
        .map_err(avro_err(what))?;
    let value: T = reader.read_deser(&mut body).map_err(avro_err(what))?;
    if !body.is_empty() {
        return Err(CodecError::Avro {
            what,
            detail: format!("{} trailing bytes after the record", body.len()),
        });
    }
    Ok(value)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Encodes a task as Avro (single-object encoding).
pub fn encode_task(task: &Task) -> Result<Vec<u8>, CodecError> {
    let s = schemas()?;
    encode("task", &s.task, &s.task_fp, task)
}

/// Encodes an outcome event as Avro (single-object encoding).
pub fn encode_outcome(outcome: &Outcome) -> Result<Vec<u8>, CodecError> {
    let s = schemas()?;
    encode("outcome", &s.outcome, &s.outcome_fp, outcome)
}

/// Decodes an outcome event.
pub fn decode_outcome(bytes: &[u8]) -> Result<Outcome, CodecError> {
    let s = schemas()?;
    decode("outcome", &s.outcome, &s.outcome_fp, bytes)
}

/// Encodes a status event as Avro (single-object encoding).
pub fn encode_status(event: &StatusEvent) -> Result<Vec<u8>, CodecError> {
    let s = schemas()?;
    encode("status event", &s.status, &s.status_fp, event)
}

/// Encodes a delayed task as Avro (single-object encoding).
pub fn encode_delayed(task: &DelayedTask) -> Result<Vec<u8>, CodecError> {
    let s = schemas()?;
    encode("delayed task", &s.delayed, &s.delayed_fp, task)
}

/// Decodes a delayed task.
pub fn decode_delayed(bytes: &[u8]) -> Result<DelayedTask, CodecError> {
    let s = schemas()?;
    decode("delayed task", &s.delayed, &s.delayed_fp, bytes)
}

/// Decodes a status event.
pub fn decode_status(bytes: &[u8]) -> Result<StatusEvent, CodecError> {
    let s = schemas()?;
    decode("status event", &s.status, &s.status_fp, bytes)
}

/// The JSON form of a task, for clients without Avro.
///
/// ```json
/// {"id": "order-42", "function": "resize", "payload": {"w": 100}, "headers": {"k": "v"}}
/// ```
/// `id`, `tenant`, `payload`, `headers` and `submitted_at` may be left out. A string
/// payload is passed to the function as its UTF-8 bytes; any other JSON value as its JSON
/// text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonTask {
    /// Task id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Function.
    pub function: String,
    /// Payload.
    #[serde(default)]
    pub payload: serde_json::Value,
    /// Headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Submission time, ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<i64>,
    /// Run no earlier than this, ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<i64>,
}

impl From<JsonTask> for Task {
    fn from(j: JsonTask) -> Self {
        let payload = match j.payload {
            serde_json::Value::Null => Vec::new(),
            serde_json::Value::String(s) => s.into_bytes(),
            other => other.to_string().into_bytes(),
        };
        Task {
            id: j.id.unwrap_or_default(),
            tenant: j.tenant,
            function: j.function,
            payload,
            headers: j.headers,
            submitted_at: j.submitted_at,
            not_before: j.not_before,
        }
    }
}

/// How a task record is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// Avro single-object encoding (default for Tidewater's own clients).
    #[default]
    Avro,
    /// JSON ([`JsonTask`]).
    Json,
}

impl Encoding {
    /// The `content-type` header value.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Avro => headers::CONTENT_TYPE_AVRO,
            Self::Json => headers::CONTENT_TYPE_JSON,
        }
    }
}

/// Decodes a task record, by its `content-type` header or, without one, by its first byte.
pub fn decode_task(bytes: &[u8], content_type: Option<&str>) -> Result<Task, CodecError> {
    if bytes.is_empty() {
        return Err(CodecError::Empty);
    }
    let encoding = match content_type.map(|c| c.split(';').next().unwrap_or("").trim()) {
        Some(c) if c.eq_ignore_ascii_case(headers::CONTENT_TYPE_JSON) => Encoding::Json,
        Some(c)
            if c.eq_ignore_ascii_case(headers::CONTENT_TYPE_AVRO)
                || c.eq_ignore_ascii_case("avro/binary") =>
        {
            Encoding::Avro
        }
        Some(other) => return Err(CodecError::ContentType(other.to_string())),
        // A bare Avro task starts with the id's length, a zig-zag varint: `{` (0x7b) would
        // be a negative length, so it can only be JSON.
        None if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') => Encoding::Json,
        None => Encoding::Avro,
    };
    let avro = |bytes: &[u8]| -> Result<Task, CodecError> {
        let s = schemas()?;
        decode("task", &s.task, &s.task_fp, bytes)
    };
    let task: Task = match encoding {
        Encoding::Json => match serde_json::from_slice::<JsonTask>(bytes) {
            Ok(j) => j.into(),
            // Sniffed, not declared: a bare Avro task whose id starts with `{` looks like
            // JSON at first sight.
            Err(e) if content_type.is_none() => avro(bytes).map_err(|_| CodecError::Json(e))?,
            Err(e) => return Err(e.into()),
        },
        Encoding::Avro => avro(bytes)?,
    };
    if task.function.is_empty() {
        return Err(CodecError::MissingField("function"));
    }
    Ok(task)
}

/// Encodes a task in the given encoding.
pub fn encode_task_as(task: &Task, encoding: Encoding) -> Result<Vec<u8>, CodecError> {
    match encoding {
        Encoding::Avro => encode_task(task),
        Encoding::Json => {
            let payload = match std::str::from_utf8(&task.payload) {
                Ok(text) => serde_json::from_str(text)
                    .unwrap_or_else(|_| serde_json::Value::String(text.to_string())),
                Err(_) => {
                    return Err(CodecError::Avro {
                        what: "task",
                        detail: "a binary payload cannot be sent as JSON; use Avro".into(),
                    });
                }
            };
            let j = JsonTask {
                id: (!task.id.is_empty()).then(|| task.id.clone()),
                tenant: task.tenant.clone(),
                function: task.function.clone(),
                payload,
                headers: task.headers.clone(),
                submitted_at: task.submitted_at,
                not_before: task.not_before,
            };
            Ok(serde_json::to_vec(&j)?)
        }
    }
}

/// An outcome as JSON, for people and for compensation tasks: `payload` and `result` as
/// text (binary data rendered lossily), everything else as in the Avro record.
pub fn outcome_json(o: &Outcome) -> serde_json::Value {
    let mut v = serde_json::to_value(o).unwrap_or_default();
    v["payload"] = serde_json::Value::String(text(&o.payload));
    v["result"] = o.result.as_deref().map_or(serde_json::Value::Null, |r| {
        serde_json::Value::String(text(r))
    });
    v
}

/// Renders bytes for people: the UTF-8 text, or a lossy rendering for binary data.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Avro schema of a captured-output record (`schemas/tasklog.avsc`).
pub const TASK_LOG_SCHEMA: &str = include_str!("../schemas/tasklog.avsc");
/// Avro schema of a stop request (`schemas/control.avsc`).
pub const STOP_REQUEST_SCHEMA: &str = include_str!("../schemas/control.avsc");

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

struct ExtraSchemas {
    task_log: Schema,
    task_log_fp: [u8; 8],
    stop: Schema,
    stop_fp: [u8; 8],
}

fn extra_schemas() -> Result<&'static ExtraSchemas, CodecError> {
    static SCHEMAS: OnceLock<Result<ExtraSchemas, String>> = OnceLock::new();
    SCHEMAS
        .get_or_init(|| {
            let parse = |s: &str| Schema::parse_str(s).map_err(|e| e.to_string());
            let task_log = parse(TASK_LOG_SCHEMA)?;
            let stop = parse(STOP_REQUEST_SCHEMA)?;
            Ok(ExtraSchemas {
                task_log_fp: fingerprint(&task_log),
                stop_fp: fingerprint(&stop),
                task_log,
                stop,
            })
        })
        .as_ref()
        .map_err(|e| CodecError::Avro {
            what: "schema",
            detail: e.clone(),
        })
}

/// Encodes captured output as Avro (single-object encoding).
pub fn encode_task_log(log: &TaskLog) -> Result<Vec<u8>, CodecError> {
    let s = extra_schemas()?;
    encode("task log", &s.task_log, &s.task_log_fp, log)
}

/// Decodes captured output.
pub fn decode_task_log(bytes: &[u8]) -> Result<TaskLog, CodecError> {
    let s = extra_schemas()?;
    decode("task log", &s.task_log, &s.task_log_fp, bytes)
}

/// Encodes a stop request as Avro (single-object encoding).
pub fn encode_stop_request(req: &StopRequest) -> Result<Vec<u8>, CodecError> {
    let s = extra_schemas()?;
    encode("stop request", &s.stop, &s.stop_fp, req)
}

/// Decodes a stop request.
pub fn decode_stop_request(bytes: &[u8]) -> Result<StopRequest, CodecError> {
    let s = extra_schemas()?;
    decode("stop request", &s.stop, &s.stop_fp, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Task {
        Task {
            id: "order-1".into(),
            tenant: Some("acme".into()),
            function: "resize".into(),
            payload: vec![0, 1, 2, 255],
            headers: [("k".to_string(), "v".to_string())].into(),
            submitted_at: Some(1_700_000_000_000),
            not_before: Some(1_700_000_005_000),
        }
    }

    fn outcome() -> Outcome {
        Outcome {
            task_id: "order-1".into(),
            tenant: "acme".into(),
            function: "resize".into(),
            status: OutcomeStatus::Failed,
            reason: Some(FailureReason::Timeout),
            error: Some("timed out after 5s".into()),
            result: None,
            payload: b"{}".to_vec(),
            task_headers: BTreeMap::new(),
            attempts: vec![Attempt {
                attempt: 1,
                started_at: 1,
                finished_at: 2,
                error: Some("boom".into()),
            }],
            submitted_at: 1,
            finished_at: 3,
            source: Source {
                topic: "tw.q.acme".into(),
                partition: 2,
                offset: 7,
            },
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            scheduler_id: "s1".into(),
        }
    }

    #[test]
    fn task_round_trips_through_avro() {
        let bytes = encode_task(&task()).unwrap();
        assert_eq!(&bytes[..2], &SINGLE_OBJECT_MAGIC);
        assert_eq!(decode_task(&bytes, None).unwrap(), task());
        assert_eq!(
            decode_task(&bytes, Some("application/avro")).unwrap(),
            task()
        );
        // A bare datum, without the single-object header, is read too.
        assert_eq!(decode_task(&bytes[10..], None).unwrap(), task());
    }

    #[test]
    fn outcome_and_status_round_trip() {
        let o = outcome();
        assert_eq!(decode_outcome(&encode_outcome(&o).unwrap()).unwrap(), o);
        let mut ok = o.clone();
        ok.status = OutcomeStatus::Succeeded;
        ok.reason = None;
        ok.error = None;
        ok.result = Some(b"done".to_vec());
        ok.traceparent = None;
        assert_eq!(decode_outcome(&encode_outcome(&ok).unwrap()).unwrap(), ok);
        let s = StatusEvent {
            task_id: "t".into(),
            tenant: "acme".into(),
            function: "f".into(),
            status: TaskStatus::Running,
            attempt: 1,
            at: 5,
            submitted_at: 4,
            reason: None,
            error: None,
            source: o.source.clone(),
            scheduler_id: "s".into(),
        };
        assert_eq!(decode_status(&encode_status(&s).unwrap()).unwrap(), s);
        let d = DelayedTask {
            task_id: "t".into(),
            tenant: "acme".into(),
            function: "f".into(),
            payload: vec![1, 2],
            headers: BTreeMap::new(),
            submitted_at: 1,
            due_at: 2,
            attempts: o.attempts.clone(),
            origin: o.source.clone(),
            traceparent: None,
        };
        assert_eq!(decode_delayed(&encode_delayed(&d).unwrap()).unwrap(), d);
        let mut stopped = o.clone();
        stopped.status = OutcomeStatus::Stopped;
        assert_eq!(
            decode_outcome(&encode_outcome(&stopped).unwrap()).unwrap(),
            stopped
        );
    }

    /// Fingerprints computed by the Java reference implementation
    /// (`SchemaNormalization.parsingFingerprint64`, Avro 1.12.0) for `schemas/*.avsc`,
    /// written little-endian. They change whenever a schema changes: recompute them then.
    #[test]
    fn fingerprints_match_the_reference_implementation() {
        let hex = |s: &str| {
            let schema = Schema::parse_str(s).unwrap();
            super::hex(&fingerprint(&schema))
        };
        assert_eq!(hex(TASK_SCHEMA), "2f368cdf800033fb");
        assert_eq!(hex(OUTCOME_SCHEMA), "7e867ae6eb17a7a2");
        assert_eq!(hex(STATUS_SCHEMA), "2e87fd9edfb935b5");
        assert_eq!(hex(DELAYED_SCHEMA), "f681d02b485e9137");
        assert_eq!(hex(TASK_LOG_SCHEMA), "8f30ed70f240d57a");
        assert_eq!(hex(STOP_REQUEST_SCHEMA), "9fcd69d21d6cbd18");
    }

    #[test]
    fn task_log_and_stop_request_round_trip() {
        let log = TaskLog {
            task_id: "order-1".into(),
            tenant: "acme".into(),
            function: "report".into(),
            attempt: 2,
            at: 1_700_000_000_123,
            stream: LogStream::HttpResponse,
            data: vec![0, 159, 146, 150, b'x'],
            truncated: true,
        };
        let bytes = encode_task_log(&log).unwrap();
        assert_eq!(&bytes[..2], &SINGLE_OBJECT_MAGIC);
        assert_eq!(decode_task_log(&bytes).unwrap(), log);
        let stop = StopRequest {
            task_id: "order-1".into(),
            tenant: "acme".into(),
            requested_at: 5,
            requested_by: "acme".into(),
        };
        assert_eq!(
            decode_stop_request(&encode_stop_request(&stop).unwrap()).unwrap(),
            stop
        );
        // Each schema's records are told apart by their fingerprint.
        assert!(matches!(
            decode_task_log(&encode_stop_request(&stop).unwrap()),
            Err(CodecError::UnknownFingerprint(_))
        ));
    }

    #[test]
    fn a_record_of_another_schema_is_rejected() {
        let bytes = encode_outcome(&outcome()).unwrap();
        assert!(matches!(
            decode_task(&bytes, None),
            Err(CodecError::UnknownFingerprint(_))
        ));
    }

    #[test]
    fn json_tasks_decode() {
        let t = decode_task(
            br#" {"id":"a","function":"f","payload":{"x":1},"headers":{"h":"v"}}"#,
            None,
        )
        .unwrap();
        assert_eq!(t.id, "a");
        assert_eq!(t.payload, br#"{"x":1}"#);
        let t = decode_task(
            br#"{"function":"f","payload":"hello"}"#,
            Some("application/json"),
        )
        .unwrap();
        assert_eq!(t.id, "");
        assert_eq!(t.payload, b"hello");
        assert!(decode_task(br#"{"function":"f","extra":1}"#, None).is_err());
        assert!(decode_task(br#"{"function":""}"#, None).is_err());
        assert!(decode_task(b"not a task", None).is_err());
        assert!(decode_task(b"{}", Some("text/plain")).is_err());
        assert!(matches!(decode_task(b"", None), Err(CodecError::Empty)));
    }

    #[test]
    fn json_encoding_round_trips() {
        let mut t = task();
        t.payload = br#"{"w":100}"#.to_vec();
        let bytes = encode_task_as(&t, Encoding::Json).unwrap();
        assert_eq!(decode_task(&bytes, None).unwrap(), t);
        t.payload = b"plain text".to_vec();
        let bytes = encode_task_as(&t, Encoding::Json).unwrap();
        assert_eq!(decode_task(&bytes, None).unwrap(), t);
    }

    /// Every status; the match fails to compile when a status is added and not listed.
    fn every_status() -> [TaskStatus; 7] {
        let all = [
            TaskStatus::Queued,
            TaskStatus::Running,
            TaskStatus::Succeeded,
            TaskStatus::Failed,
            TaskStatus::Retrying,
            TaskStatus::Stopped,
            TaskStatus::Expired,
        ];
        for s in all {
            match s {
                TaskStatus::Queued
                | TaskStatus::Running
                | TaskStatus::Succeeded
                | TaskStatus::Failed
                | TaskStatus::Retrying
                | TaskStatus::Stopped
                | TaskStatus::Expired => {}
            }
        }
        all
    }

    #[test]
    fn status_names_round_trip_and_match_the_wire_names() {
        for s in every_status() {
            assert_eq!(s.as_str().parse::<TaskStatus>(), Ok(s));
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str()),
                "the JSON and Avro name of {s:?}"
            );
        }
    }

    #[test]
    fn unknown_status_names_are_errors() {
        for name in ["", "done", "Queued", " running", "succeeded "] {
            assert_eq!(
                name.parse::<TaskStatus>(),
                Err(UnknownStatus(name.to_string()))
            );
        }
        assert_eq!(
            "done".parse::<TaskStatus>().unwrap_err().to_string(),
            "unknown task status `done`"
        );
    }

    #[test]
    fn terminal_statuses_are_the_final_ones() {
        let terminal: Vec<TaskStatus> = every_status()
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [
                TaskStatus::Succeeded,
                TaskStatus::Failed,
                TaskStatus::Stopped,
                TaskStatus::Expired
            ]
        );
    }
}
