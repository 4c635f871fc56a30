//! Wire formats: the task, outcome and status records (Avro schemas in `schemas/`), and the
//! JSON form of a task for simple clients.
//!
//! Avro records are written with Avro's single-object encoding (`C3 01`, the schema's
//! 8-byte CRC-64-AVRO fingerprint, then the binary datum) and the header
//! `content-type: application/avro`. Tasks are read in that form, as a bare binary datum,
//! or as JSON; the `content-type` header decides, and without one a value starting with `{`
//! is JSON.
//!
//! The module is split along concerns: `schema` holds the schemas, their fingerprints and
//! the single-object framing; `task` reads and writes tasks (Avro and JSON); `records` the
//! outcome, status, delayed-task, log and control records; `json` renders records for
//! people.
//!
//! Every decoder here reads bytes from anyone who can produce to a topic: no byte-index
//! slicing, no indexing and no unchecked arithmetic (the lints below enforce it), no
//! `unwrap` on decoded data. Fuzzed by `fuzz/` (`task_record`, `delayed_control`).

#![deny(
    clippy::string_slice,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

mod binary;
mod json;
mod read;
mod records;
mod schema;
mod task;

pub use json::{outcome_json, text};
pub use records::{
    Attempt, DelayedTask, FailureReason, LogStream, Outcome, OutcomeStatus, OutcomeView, Source,
    SourceView, StatusEvent, StatusView, StopRequest, TaskLog, TaskStatus, UnknownStatus,
    decode_delayed, decode_outcome, decode_status, decode_stop_request, decode_task_log,
    encode_delayed, encode_outcome, encode_outcome_view, encode_status, encode_status_view,
    encode_stop_request, encode_task_log,
};
pub use schema::{
    DELAYED_SCHEMA, OUTCOME_SCHEMA, STATUS_SCHEMA, STOP_REQUEST_SCHEMA, TASK_LOG_SCHEMA,
    TASK_SCHEMA, canonical_form, fingerprint,
};
pub use task::{Encoding, JsonTask, Task, decode_task, encode_task, encode_task_as};

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

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod tests;
