//! Tasks: the Avro record, the JSON form for simple clients, and the sniffing that tells
//! them apart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::CodecError;
use super::read;
use super::schema::{all_read, datum, encode, schemas};
use crate::names::headers;

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

/// Encodes a task as Avro (single-object encoding).
pub fn encode_task(task: &Task) -> Result<Vec<u8>, CodecError> {
    let s = schemas()?;
    encode("task", &s.task, task)
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
        let (task, rest) = read::task(datum(&s.task, bytes)?).map_err(|e| CodecError::Avro {
            what: "task",
            detail: e.to_string(),
        })?;
        all_read("task", rest)?;
        Ok(task)
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
