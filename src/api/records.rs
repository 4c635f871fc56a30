//! Reading task records back from their queue topics by position: the payload and
//! headers of a task for `GET /v1/tasks/{id}/record`, and the task a redrive re-submits.
//! The index keeps where each task record sits, not the record itself; Kafka keeps it
//! for the queue topic's retention.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiState, ErrorCode, Params, task_id};
use crate::codec;
use crate::config::Config;
use crate::kafka::{self, KafkaOpError};
use crate::names::headers as h;
use crate::store::model::{QueuePosition, ms};

/// How long one position may take to read, or a range go without a record.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Most payload bytes an answer shows as text.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Most payload bytes an answer shows as hex.
pub const MAX_HEX_BYTES: usize = 16 * 1024;

/// A record as read from a queue topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    /// Record headers, in order; a header without a value reads as empty.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Record timestamp, ms.
    pub timestamp: Option<i64>,
}

impl RawRecord {
    /// The first header of this name, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The task in it, as the scheduler reads it.
    pub fn task(&self) -> Result<codec::Task, codec::CodecError> {
        codec::decode_task(&self.value, self.header(h::CONTENT_TYPE))
    }

    /// A copy of a record the consumer read.
    pub(crate) fn of(m: &BorrowedMessage<'_>) -> Self {
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|hd| (hd.key.to_string(), hd.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().unwrap_or_default().to_vec(),
            headers,
            timestamp: m.timestamp().to_millis(),
        }
    }
}

/// Reads records by position, or ranges of them (dead-letter redrives), with one
/// consumer of its own that joins no group and commits nothing (`read_committed`; the
/// end of a partition is reported, so a read never waits past it).
pub struct RecordReader {
    consumer: Mutex<BaseConsumer>,
}

impl RecordReader {
    /// A reader on the configuration's cluster.
    pub fn new(config: &Config) -> Result<Self, KafkaOpError> {
        let mut cc = kafka::client_config(config);
        // Never joins or commits: the group id only satisfies the client.
        cc.set(
            "group.id",
            crate::names::topics::record_readers_group(&config.topics.prefix),
        );
        cc.set("enable.auto.commit", "false");
        cc.set("enable.auto.offset.store", "false");
        cc.set("enable.partition.eof", "true");
        kafka::set_default(&mut cc, "isolation.level", "read_committed");
        let consumer: BaseConsumer = cc.create().map_err(|source| KafkaOpError::Client {
            what: "record reader",
            source,
        })?;
        Ok(Self {
            consumer: Mutex::new(consumer),
        })
    }

    /// The records at `positions`: `None` for a position Kafka no longer (or never)
    /// holds a committed record at. Blocking.
    pub fn read(
        &self,
        positions: &[QueuePosition],
    ) -> Result<HashMap<QueuePosition, Option<RawRecord>>, ReadError> {
        let consumer = self.consumer();
        let mut sorted: Vec<&QueuePosition> = positions.iter().collect();
        sorted.sort();
        sorted.dedup();
        let mut marks: HashMap<(String, i32), (i64, i64)> = HashMap::new();
        let mut out = HashMap::new();
        for pos in sorted {
            let tp = (pos.topic.clone(), pos.partition);
            let (low, high) = match marks.get(&tp) {
                Some(m) => *m,
                None => {
                    let m = consumer
                        .fetch_watermarks(&pos.topic, pos.partition, READ_TIMEOUT)
                        .map_err(|e| ReadError::of("watermarks", &pos.topic, &e))?;
                    marks.insert(tp, m);
                    m
                }
            };
            let found = if pos.offset < low || pos.offset >= high {
                None
            } else {
                read_one(&consumer, pos)?
            };
            out.insert(pos.clone(), found);
        }
        let _ = consumer.unassign();
        Ok(out)
    }

    /// The consumer, for one caller at a time; a caller leaves nothing assigned.
    pub(crate) fn consumer(&self) -> std::sync::MutexGuard<'_, BaseConsumer> {
        self.consumer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Why records could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Kafka did not answer in time, or failed.
    #[error("reading records: {0}")]
    Unanswered(String),
    /// The server's Kafka principal may not read the topic: asking again will not help.
    #[error("Kafka refused to let this server read `{0}`")]
    Denied(String),
}

impl ReadError {
    /// The error of `what` on `topic`: [`ReadError::Denied`] when Kafka refused the
    /// topic, else [`ReadError::Unanswered`].
    pub fn of(what: &str, topic: &str, e: &KafkaError) -> Self {
        if kafka::topic_denied(e) {
            Self::Denied(topic.to_string())
        } else {
            Self::Unanswered(format!("{what} of {topic}: {e}"))
        }
    }

    /// The API's answer: 403 naming the topic when refused (the server's ACLs must
    /// change), else 503 (`what` failed; try again).
    pub fn answer(self, what: &str) -> ApiError {
        match self {
            Self::Denied(topic) => ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                format!(
                    "this server's Kafka principal may not read `{topic}`: grant it READ on \
                     the topic (`tidewater acl --role serve` prints the ACLs it needs)"
                ),
            ),
            e @ Self::Unanswered(_) => ApiError::unavailable(what, &e),
        }
    }
}

fn read_one(consumer: &BaseConsumer, pos: &QueuePosition) -> Result<Option<RawRecord>, ReadError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&pos.topic, pos.partition, Offset::Offset(pos.offset))
        .map_err(|e| ReadError::of("assign", &pos.topic, &e))?;
    consumer
        .assign(&tpl)
        .map_err(|e| ReadError::of("assign", &pos.topic, &e))?;
    let deadline = Instant::now() + READ_TIMEOUT;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) if m.topic() == pos.topic && m.partition() == pos.partition => {
                if m.offset() < pos.offset {
                    continue;
                }
                if m.offset() > pos.offset {
                    // Compacted away, or part of an aborted transaction.
                    return Ok(None);
                }
                return Ok(Some(RawRecord::of(&m)));
            }
            // The end, before the offset: it was part of an aborted transaction.
            Some(Err(KafkaError::PartitionEOF(p))) if p == pos.partition => return Ok(None),
            Some(Ok(_)) | None => {}
            Some(Err(e)) if kafka::topic_denied(&e) => {
                return Err(ReadError::Denied(pos.topic.clone()));
            }
            Some(Err(e)) => tracing::debug!(error = %e, "record reader"),
        }
    }
    Err(ReadError::Unanswered(format!(
        "no answer for {}[{}]@{} within {READ_TIMEOUT:?}",
        pos.topic, pos.partition, pos.offset
    )))
}

/// A payload as the API shows it: text when it is UTF-8, hex of its start always.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadView {
    /// Its size in bytes.
    pub size: usize,
    /// The payload as text, when it is valid UTF-8 (its first [`MAX_TEXT_BYTES`]).
    pub text: Option<String>,
    /// Its first [`MAX_HEX_BYTES`] bytes as lower-case hex.
    pub hex: String,
    /// Whether `text` or `hex` stop short of the whole payload.
    pub truncated: bool,
}

impl PayloadView {
    /// The view of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let text = std::str::from_utf8(bytes).ok().map(|t| {
            let mut end = t.len().min(MAX_TEXT_BYTES);
            while !t.is_char_boundary(end) {
                end -= 1;
            }
            t.get(..end).unwrap_or_default().to_string()
        });
        let hex: String = bytes
            .iter()
            .take(MAX_HEX_BYTES)
            .map(|b| format!("{b:02x}"))
            .collect();
        Self {
            size: bytes.len(),
            truncated: bytes.len() > MAX_HEX_BYTES
                || text.as_ref().is_some_and(|t| t.len() < bytes.len()),
            text,
            hex,
        }
    }
}

/// The task as decoded from its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecodedTask {
    pub function: String,
    /// Task headers (carried to the outcome event).
    pub headers: BTreeMap<String, String>,
    #[serde(with = "ms::opt")]
    pub submitted_at: Option<i64>,
    #[serde(with = "ms::opt")]
    pub not_before: Option<i64>,
}

/// The answer of `GET /v1/tasks/{id}/record`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub task_id: String,
    pub tenant: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Record timestamp.
    #[serde(with = "ms::opt")]
    pub timestamp: Option<i64>,
    /// Record key as text (bytes that are not UTF-8 replaced).
    pub key: Option<String>,
    /// Record headers as text.
    pub headers: BTreeMap<String, String>,
    /// The task, or `null` when the record is not a task.
    pub task: Option<DecodedTask>,
    /// Why the record is not a task, when it is not.
    pub decode_error: Option<String>,
    /// The task's payload; the whole record value when it is not a task.
    pub payload: PayloadView,
}

/// `GET /v1/tasks/{id}/record`.
pub async fn task_record(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    q: Params,
) -> Result<Response, ApiError> {
    let id = task_id(id)?;
    let (_, task) = s.caller_and_task(&headers, &id, q).await?;
    let Some(pos) = task.queue.clone() else {
        return Err(record_gone(&id));
    };
    let reader = s.records.clone();
    let want = pos.clone();
    let mut found = tokio::task::spawn_blocking(move || reader.read(&[want]))
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(|e| e.answer("Kafka did not return the task record"))?;
    let Some(record) = found.remove(&pos).flatten() else {
        return Err(record_gone(&id));
    };
    let (decoded, decode_error, payload) = match record.task() {
        Ok(t) => (
            Some(DecodedTask {
                function: t.function,
                headers: t.headers,
                submitted_at: t.submitted_at,
                not_before: t.not_before,
            }),
            None,
            PayloadView::of(&t.payload),
        ),
        Err(e) => (None, Some(e.to_string()), PayloadView::of(&record.value)),
    };
    Ok(Json(TaskRecord {
        task_id: task.id,
        tenant: task.tenant,
        topic: pos.topic,
        partition: pos.partition,
        offset: pos.offset,
        timestamp: record.timestamp,
        key: record
            .key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned()),
        headers: record
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect(),
        task: decoded,
        decode_error,
        payload,
    })
    .into_response())
}

fn record_gone(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::RecordGone,
        format!("the queue topic no longer holds the record of task `{id}`"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::RDKafkaErrorCode;

    #[test]
    fn a_refused_topic_answers_403_naming_it_and_silence_503() {
        let refused = KafkaError::MetadataFetch(RDKafkaErrorCode::TopicAuthorizationFailed);
        let e = ReadError::of("watermarks", "tw.dlq.acme", &refused);
        assert!(
            matches!(&e, ReadError::Denied(t) if t == "tw.dlq.acme"),
            "{e:?}"
        );
        let a = e.answer("Kafka did not return the records");
        assert_eq!(
            (a.status, a.code),
            (StatusCode::FORBIDDEN, ErrorCode::Forbidden)
        );
        assert!(a.message.contains("`tw.dlq.acme`"), "{}", a.message);
        assert!(a.message.contains("READ"), "{}", a.message);

        let slow = KafkaError::MetadataFetch(RDKafkaErrorCode::OperationTimedOut);
        let e = ReadError::of("watermarks", "tw.dlq.acme", &slow);
        assert!(matches!(e, ReadError::Unanswered(_)), "{e:?}");
        let a = e.answer("Kafka did not return the records");
        assert_eq!(
            (a.status, a.code),
            (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable)
        );
        assert!(
            !a.message.contains("OperationTimedOut"),
            "details stay in the log"
        );
    }

    #[test]
    fn payloads_show_as_text_when_they_are_text_and_always_as_hex() {
        let v = PayloadView::of(b"hi\n");
        assert_eq!(
            (v.size, v.text.as_deref(), v.hex.as_str(), v.truncated),
            (3, Some("hi\n"), "68690a", false)
        );
        let v = PayloadView::of(&[0xff, 0x00]);
        assert_eq!((v.text, v.hex.as_str()), (None, "ff00"));
        let big = "é".repeat(MAX_TEXT_BYTES);
        let v = PayloadView::of(big.as_bytes());
        assert!(v.truncated);
        assert!(v.text.as_ref().is_some_and(|t| t.len() <= MAX_TEXT_BYTES));
        assert_eq!(v.hex.len(), MAX_HEX_BYTES * 2);
    }
}
