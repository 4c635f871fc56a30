//! Reading one page of a dead-letter range from Kafka: the topic's partitions, the
//! offsets its time range starts and ends at, and the records of each partition's span
//! in turn, assigned and sought (never subscribed), up to the page's limit. A span ends
//! at its last offset, at the end of the partition, or at a record past it; a partition
//! with nothing in range is never assigned. Blocking: called on a blocking thread.

use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::dead_letter::{Bounds, Span, span, task_of};
use super::model::OffsetRange;
use super::request::DeadLetterSource;
use crate::api::records::{READ_TIMEOUT, RawRecord, ReadError, RecordReader};
use crate::kafka::topic_denied;
use crate::types::TaskKey;

/// One record read: where it sits and the task it names, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    pub partition: i32,
    pub offset: i64,
    pub task: Option<TaskKey>,
}

/// A page read, and what is left of the range after it.
#[derive(Debug, Default)]
pub struct Page {
    pub records: Vec<Scanned>,
    pub left: Vec<Span>,
}

/// Why a page could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The cluster has no such topic.
    #[error("the topic `{0}` does not exist")]
    NoTopic(String),
    /// The topic has no such partition.
    #[error("the topic `{topic}` has no partition {partition}")]
    NoPartition { topic: String, partition: i32 },
    /// Kafka did not answer in time, or refused.
    #[error(transparent)]
    Read(#[from] ReadError),
}

fn read_error(what: &str, topic: &str, e: KafkaError) -> ScanError {
    ScanError::Read(ReadError::of(what, topic, &e))
}

/// Reads the next page of `d`: from its cursor, or on the first page from the spans its
/// bounds give each partition.
pub fn page(reader: &RecordReader, d: &DeadLetterSource) -> Result<Page, ScanError> {
    let consumer = reader.consumer();
    let partitions = partitions(&consumer, &d.topic)?;
    let check = |p: i32| {
        if partitions.contains(&p) {
            Ok(())
        } else {
            Err(ScanError::NoPartition {
                topic: d.topic.clone(),
                partition: p,
            })
        }
    };
    let spans = match (&d.cursor, &d.partitions) {
        (Some(left), _) => {
            for s in left {
                check(s.partition)?;
            }
            left.clone()
        }
        (None, Some(named)) => {
            for p in named.keys() {
                check(*p)?;
            }
            plan(&consumer, d, named.iter().map(|(p, r)| (*p, *r)))?
        }
        (None, None) => plan(
            &consumer,
            d,
            partitions.iter().map(|p| (*p, OffsetRange::default())),
        )?,
    };
    let page = scan(&consumer, &d.topic, spans, d.limit);
    let _ = consumer.unassign();
    page
}

/// The partitions of `topic`.
fn partitions(consumer: &BaseConsumer, topic: &str) -> Result<Vec<i32>, ScanError> {
    let md = consumer
        .fetch_metadata(Some(topic), READ_TIMEOUT)
        .map_err(|e| read_error("metadata", topic, e))?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Err(ScanError::NoTopic(topic.to_string()));
    };
    match t.error().map(RDKafkaErrorCode::from) {
        None => Ok(t.partitions().iter().map(|p| p.id()).collect()),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {
            Err(ScanError::NoTopic(topic.to_string()))
        }
        Some(RDKafkaErrorCode::TopicAuthorizationFailed) => {
            Err(ScanError::Read(ReadError::Denied(topic.to_string())))
        }
        Some(e) => Err(ScanError::Read(ReadError::Unanswered(format!(
            "metadata of {topic}: {e}"
        )))),
    }
}

/// The first page's spans: each partition's watermarks, narrowed by the request's
/// offsets and by the offsets its times fall at.
fn plan(
    consumer: &BaseConsumer,
    d: &DeadLetterSource,
    partitions: impl Iterator<Item = (i32, OffsetRange)>,
) -> Result<Vec<Span>, ScanError> {
    let partitions: Vec<(i32, OffsetRange)> = partitions.collect();
    let ids: Vec<i32> = partitions.iter().map(|(p, _)| *p).collect();
    let from = at_times(consumer, &d.topic, &ids, d.from_time)?;
    let to = at_times(consumer, &d.topic, &ids, d.to_time)?;
    let mut out = Vec::new();
    for (i, (p, offsets)) in partitions.into_iter().enumerate() {
        let (low, high) = consumer
            .fetch_watermarks(&d.topic, p, READ_TIMEOUT)
            .map_err(|e| read_error("watermarks", &d.topic, e))?;
        let at = |v: &Option<Vec<Option<i64>>>| {
            v.as_ref()
                .map(|v| v.get(i).copied().flatten().unwrap_or(high))
        };
        let bounds = Bounds {
            low,
            high,
            from_offset: offsets.from_offset,
            to_offset: offsets.to_offset,
            from_time: at(&from),
            to_time: at(&to),
        };
        out.extend(span(p, bounds));
    }
    Ok(out)
}

/// For each partition in `ids`, the first offset at or after `time` (`None` where no
/// record is); `None` when no time is given.
fn at_times(
    consumer: &BaseConsumer,
    topic: &str,
    ids: &[i32],
    time: Option<i64>,
) -> Result<Option<Vec<Option<i64>>>, ScanError> {
    let Some(ms) = time else {
        return Ok(None);
    };
    let mut tpl = TopicPartitionList::new();
    for p in ids {
        tpl.add_partition_offset(topic, *p, Offset::Offset(ms.max(0)))
            .map_err(|e| read_error("time index", topic, e))?;
    }
    let found = consumer
        .offsets_for_times(tpl, READ_TIMEOUT)
        .map_err(|e| read_error("time index", topic, e))?;
    let mut out = Vec::with_capacity(ids.len());
    for p in ids {
        let offset = found
            .find_partition(topic, *p)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        out.push(offset);
    }
    Ok(Some(out))
}

/// Reads the spans in turn until `limit` records are read; what is not read is left.
fn scan(
    consumer: &BaseConsumer,
    topic: &str,
    spans: Vec<Span>,
    limit: usize,
) -> Result<Page, ScanError> {
    let mut page = Page::default();
    for s in spans {
        if page.records.len() >= limit {
            page.left.push(s);
            continue;
        }
        let (low, high) = consumer
            .fetch_watermarks(topic, s.partition, READ_TIMEOUT)
            .map_err(|e| read_error("watermarks", topic, e))?;
        let Some(s) = Span::of(
            s.partition,
            s.next.max(low),
            s.last.min(high.saturating_sub(1)),
        ) else {
            continue;
        };
        let room = limit - page.records.len();
        let (records, next) = read_span(consumer, topic, s, room)?;
        page.records.extend(records);
        page.left
            .extend(next.and_then(|n| Span::of(s.partition, n, s.last)));
    }
    Ok(page)
}

/// Reads up to `room` records of one span; the offset to go on from when it stopped for
/// room, `None` when the span is done.
fn read_span(
    consumer: &BaseConsumer,
    topic: &str,
    s: Span,
    room: usize,
) -> Result<(Vec<Scanned>, Option<i64>), ScanError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, s.partition, Offset::Offset(s.next))
        .map_err(|e| read_error("assign", topic, e))?;
    consumer
        .assign(&tpl)
        .map_err(|e| read_error("assign", topic, e))?;
    let mut out = Vec::new();
    let mut deadline = Instant::now() + READ_TIMEOUT;
    while Instant::now() < deadline {
        match consumer.poll(std::time::Duration::from_millis(200)) {
            Some(Ok(m)) if m.topic() == topic && m.partition() == s.partition => {
                if m.offset() < s.next {
                    continue;
                }
                if m.offset() > s.last {
                    return Ok((out, None));
                }
                out.push(Scanned {
                    partition: s.partition,
                    offset: m.offset(),
                    task: task_of(&RawRecord::of(&m)),
                });
                if m.offset() == s.last {
                    return Ok((out, None));
                }
                if out.len() >= room {
                    return Ok((out, Some(m.offset().saturating_add(1))));
                }
                deadline = Instant::now() + READ_TIMEOUT;
            }
            Some(Err(KafkaError::PartitionEOF(p))) if p == s.partition => return Ok((out, None)),
            Some(Ok(_)) | None => {}
            Some(Err(e)) if topic_denied(&e) => {
                return Err(ScanError::Read(ReadError::Denied(topic.to_string())));
            }
            Some(Err(e)) => tracing::debug!(error = %e, "dead-letter reader"),
        }
    }
    Err(ScanError::Read(ReadError::Unanswered(format!(
        "no record of {topic}[{}] from offset {} within {READ_TIMEOUT:?}",
        s.partition, s.next
    ))))
}
