//! Direct Avro binary writers for the two records the scheduler writes for every task:
//! the status event and the outcome. The generic serde path of `apache-avro` looks every
//! field up by name and allocates as it goes; these write the same bytes straight into
//! the output (the tests compare them with `apache-avro`'s, value for value).
//!
//! Avro binary encoding (specification, "Binary Encoding"): `int` and `long` are
//! zig-zag variable-length integers, `string` and `bytes` a length then the bytes, an
//! enum its symbol's index, a union the branch index then the value, a map or an array
//! blocks of a count then the items, ended by a count of zero, a record its fields in
//! schema order.

use std::collections::BTreeMap;

use super::records::{Attempt, OutcomeView, SourceView, StatusView, TaskStatus};

/// Appends a zig-zag variable-length `long`.
pub(super) fn long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Appends a length: a `long` (Avro lengths and counts are longs).
fn len(out: &mut Vec<u8>, n: usize) {
    long(out, i64::try_from(n).unwrap_or(i64::MAX));
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    len(out, b.len());
    out.extend_from_slice(b);
}

fn string(out: &mut Vec<u8>, s: &str) {
    bytes(out, s.as_bytes());
}

/// A `["null", T]` union: branch 0 for none, branch 1 and the value for some.
fn optional<T>(out: &mut Vec<u8>, v: Option<T>, write: impl FnOnce(&mut Vec<u8>, T)) {
    match v {
        None => long(out, 0),
        Some(v) => {
            long(out, 1);
            write(out, v);
        }
    }
}

fn string_map(out: &mut Vec<u8>, m: &BTreeMap<String, String>) {
    if !m.is_empty() {
        len(out, m.len());
        for (k, v) in m {
            string(out, k);
            string(out, v);
        }
    }
    long(out, 0);
}

fn source(out: &mut Vec<u8>, s: SourceView<'_>) {
    string(out, s.topic);
    long(out, i64::from(s.partition));
    long(out, s.offset);
}

fn attempt(out: &mut Vec<u8>, a: &Attempt) {
    long(out, i64::from(a.attempt));
    long(out, a.started_at);
    long(out, a.finished_at);
    optional(out, a.error.as_deref(), string);
}

/// The index of a symbol of `schemas/status.avsc`'s `TaskStatus`.
fn task_status(s: TaskStatus) -> i64 {
    match s {
        TaskStatus::Queued => 0,
        TaskStatus::Running => 1,
        TaskStatus::Succeeded => 2,
        TaskStatus::Failed => 3,
        TaskStatus::Retrying => 4,
        TaskStatus::Stopped => 5,
        TaskStatus::Expired => 6,
    }
}

/// Appends a status event's datum (`schemas/status.avsc`).
pub(super) fn status_event(out: &mut Vec<u8>, e: &StatusView<'_>) {
    string(out, e.task_id);
    string(out, e.tenant);
    string(out, e.function);
    long(out, task_status(e.status));
    long(out, i64::from(e.attempt));
    long(out, e.at);
    long(out, e.submitted_at);
    optional(out, e.reason, |o, r| long(o, i64::from(r.index())));
    optional(out, e.error, string);
    source(out, e.source);
    string(out, e.scheduler_id);
}

/// Appends an outcome's datum (`schemas/outcome.avsc`).
pub(super) fn outcome(out: &mut Vec<u8>, o: &OutcomeView<'_>) {
    string(out, o.task_id);
    string(out, o.tenant);
    string(out, o.function);
    long(out, i64::from(o.status.index()));
    optional(out, o.reason, |w, r| long(w, i64::from(r.index())));
    optional(out, o.error, string);
    optional(out, o.result, bytes);
    bytes(out, o.payload);
    string_map(out, o.task_headers);
    if !o.attempts.is_empty() {
        len(out, o.attempts.len());
        for a in o.attempts {
            attempt(out, a);
        }
    }
    long(out, 0);
    long(out, o.submitted_at);
    long(out, o.finished_at);
    source(out, o.source);
    optional(out, o.traceparent, string);
    string(out, o.scheduler_id);
}
