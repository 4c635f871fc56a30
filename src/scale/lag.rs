//! Lag of the scheduler group: per queue partition, the group's committed offset against
//! the high watermark. Shared by the controller (metrics, decisions) and by `/v1/queues`.
//!
//! Transaction markers: schedulers write transactionally (compensation tasks and delayed
//! tasks re-entering a queue are produced inside the scheduler's transactions), and every
//! commit or abort marker takes an offset of its own. When a partition is fully consumed
//! after a transaction, the high watermark sits past the last record by one marker, or by
//! two when the publisher's two transactional producers both wrote there last (one's
//! marker can land after the other's records). Tidewater treats a difference of up to
//! [`TRAILING_MARKERS`] as 0: [`effective_lag`]. The cost is that a partition with one or
//! two waiting tasks reads as empty, which no scaling decision depends on (thresholds are
//! far above that).

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;
use crate::kafka::{self, KafkaOpError};

/// One queue partition's marks: low and high watermark, and the group's committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMarks {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Low watermark (first offset still stored).
    pub low: i64,
    /// High watermark (offset of the next record).
    pub high: i64,
    /// The scheduler group's committed offset; `None` before its first commit.
    pub committed: Option<i64>,
}

impl PartitionMarks {
    /// Records between the group's position and the high watermark, markers included
    /// (the raw backlog; what `/v1/queues` reports).
    pub fn backlog(&self) -> i64 {
        let from = self.committed.unwrap_or(self.low).max(self.low);
        (self.high - from).max(0)
    }

    /// The lag used for metrics and scaling: [`PartitionMarks::backlog`] with a trailing
    /// transaction marker discounted (see the module documentation).
    pub fn lag(&self) -> u64 {
        effective_lag(self.backlog())
    }
}

/// The most transaction markers that can follow a partition's last record: one per
/// publisher lane.
pub const TRAILING_MARKERS: i64 = crate::scheduler::publisher::LANES as i64;

/// A raw backlog of up to [`TRAILING_MARKERS`] is what trailing commit markers leave:
/// count it as 0.
pub fn effective_lag(backlog: i64) -> u64 {
    if backlog <= TRAILING_MARKERS {
        0
    } else {
        u64::try_from(backlog).unwrap_or(0)
    }
}

/// A consumer with the scheduler group id that never subscribes: it only reads that
/// group's committed offsets and the watermarks. It reads `read_committed`, so librdkafka
/// asks for the committed offsets with `require_stable`: an answer waits until no
/// transaction holds one of them pending.
pub fn group_reader(config: &Config) -> Result<BaseConsumer, KafkaOpError> {
    reader(config, None)
}

/// A [`group_reader`] that reads `read_uncommitted`: the committed offsets it reads are
/// the group's last stable ones, never held back by an offset still pending in a
/// transaction (no `require_stable`).
pub fn stable_group_reader(config: &Config) -> Result<BaseConsumer, KafkaOpError> {
    reader(config, Some("read_uncommitted"))
}

fn reader(config: &Config, isolation: Option<&str>) -> Result<BaseConsumer, KafkaOpError> {
    let mut cc = kafka::client_config(config);
    cc.set("group.id", config.group_id());
    cc.set("enable.auto.commit", "false");
    if let Some(level) = isolation {
        cc.set("isolation.level", level);
    }
    cc.create().map_err(|source| KafkaOpError::Client {
        what: "group offset reader",
        source,
    })
}

/// Reads the scheduler group's [`PartitionMarks`]: watermarks `read_committed` (the high
/// mark is the last stable offset, so records of a transaction still open are not
/// backlog) and committed offsets either exactly or as last stable.
pub struct GroupReader {
    marks: BaseConsumer,
    /// A second client for the committed offsets, when they are read as last stable.
    stable: Option<BaseConsumer>,
}

impl GroupReader {
    /// Committed offsets read with `require_stable`: exact, but the read waits while a
    /// transaction holds one pending (up to the timeout given to [`GroupReader::read`]).
    pub fn exact(config: &Config) -> Result<Self, KafkaOpError> {
        Ok(Self {
            marks: group_reader(config)?,
            stable: None,
        })
    }

    /// Committed offsets read as the group's last stable ones: the read answers at once
    /// while an exactly-once scheduler's transaction holds newer offsets pending (they
    /// count when it commits). For overviews and scaling, which must answer under load.
    pub fn stable(config: &Config) -> Result<Self, KafkaOpError> {
        Ok(Self {
            marks: group_reader(config)?,
            stable: Some(stable_group_reader(config)?),
        })
    }

    /// Per partition of `topics`: low and high watermark and the group's committed
    /// offset. Blocking; errors are messages naming what failed.
    pub fn read(
        &self,
        topics: &[String],
        timeout: Duration,
    ) -> Result<Vec<PartitionMarks>, String> {
        group_offsets(
            &self.marks,
            self.stable.as_ref().unwrap_or(&self.marks),
            topics,
            timeout,
        )
    }
}

/// The partitions of `topics`, their watermarks in two requests for all of them
/// (`offsets_for_times` at "earliest" and "latest", which librdkafka batches per broker;
/// one request per partition took seconds at a few hundred partitions), and the group's
/// committed offsets from `committed_reader`.
fn group_offsets(
    consumer: &BaseConsumer,
    committed_reader: &BaseConsumer,
    topics: &[String],
    timeout: Duration,
) -> Result<Vec<PartitionMarks>, String> {
    let mut out = Vec::new();
    for topic in topics {
        let md = consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| format!("cannot read the partitions of {topic}: {e}"))?;
        for t in md.topics() {
            for p in t.partitions() {
                out.push(PartitionMarks {
                    topic: topic.clone(),
                    partition: p.id(),
                    low: 0,
                    high: 0,
                    committed: None,
                });
            }
        }
    }
    if out.is_empty() {
        return Ok(out);
    }
    // Answers list partitions in no promised order: each goes back to its position.
    let position: std::collections::HashMap<(&str, i32), usize> = out
        .iter()
        .enumerate()
        .map(|(i, m)| ((m.topic.as_str(), m.partition), i))
        .collect();
    let ask = |at: Offset| {
        let mut tpl = TopicPartitionList::new();
        for m in &out {
            tpl.add_partition_offset(&m.topic, m.partition, at)
                .map_err(|e| format!("cannot ask for {}[{}]: {e}", m.topic, m.partition))?;
        }
        Ok::<_, String>(tpl)
    };
    // One watermark of every partition, in `out`'s order.
    let watermarks = |at: Offset, which: &str| {
        let answer = consumer
            .offsets_for_times(ask(at)?, timeout)
            .map_err(|e| format!("cannot read the {which} watermarks: {e}"))?;
        let mut marks = vec![None; out.len()];
        for e in answer.elements() {
            let Some(&i) = position.get(&(e.topic(), e.partition())) else {
                continue;
            };
            e.error().map_err(|err| {
                format!(
                    "cannot read the {which} watermark of {}[{}]: {err}",
                    e.topic(),
                    e.partition()
                )
            })?;
            if let Offset::Offset(o) = e.offset() {
                marks[i] = Some(o);
            }
        }
        Ok::<_, String>(marks)
    };
    let lows = watermarks(Offset::Beginning, "low")?;
    let highs = watermarks(Offset::End, "high")?;
    let mut committed = vec![None; out.len()];
    let answer = committed_reader
        .committed_offsets(ask(Offset::Invalid)?, timeout)
        .map_err(|e| format!("cannot read the scheduler group's offsets: {e}"))?;
    for e in answer.elements() {
        if let (Some(&i), Offset::Offset(o)) =
            (position.get(&(e.topic(), e.partition())), e.offset())
        {
            committed[i] = Some(o);
        }
    }
    for ((m, (low, high)), committed) in out
        .iter_mut()
        .zip(lows.into_iter().zip(highs))
        .zip(committed)
    {
        let (Some(low), Some(high)) = (low, high) else {
            return Err(format!("no watermarks for {}[{}]", m.topic, m.partition));
        };
        (m.low, m.high, m.committed) = (low, high, committed);
    }
    Ok(out)
}

/// Lag of one queue topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicLag {
    /// Topic.
    pub topic: String,
    /// Lag per partition, by partition number.
    pub partitions: Vec<(i32, u64)>,
}

impl TopicLag {
    /// Sum over the partitions.
    pub fn total(&self) -> u64 {
        self.partitions.iter().map(|(_, l)| l).sum()
    }

    /// Mean lag per partition (0 for a topic without partitions).
    pub fn per_partition(&self) -> u64 {
        match u64::try_from(self.partitions.len()) {
            Ok(0) | Err(_) => 0,
            Ok(n) => self.total() / n,
        }
    }
}

/// Groups marks by topic, in the order of `topics`.
pub fn by_topic(topics: &[String], marks: &[PartitionMarks]) -> Vec<TopicLag> {
    topics
        .iter()
        .map(|t| TopicLag {
            topic: t.clone(),
            partitions: marks
                .iter()
                .filter(|m| m.topic == *t)
                .map(|m| (m.partition, m.lag()))
                .collect(),
        })
        .collect()
}

/// Exports `tidewater_queue_lag{topic,partition}` and `tidewater_queue_lag_total{topic}`.
pub fn export(lags: &[TopicLag]) {
    use crate::names::metrics as m;
    for t in lags {
        for (p, lag) in &t.partitions {
            ::metrics::gauge!(m::QUEUE_LAG, m::L_TOPIC => t.topic.clone(), m::L_PARTITION => p.to_string())
                .set(*lag as f64);
        }
        ::metrics::gauge!(m::QUEUE_LAG_TOTAL, m::L_TOPIC => t.topic.clone()).set(t.total() as f64);
        ::metrics::gauge!(m::QUEUE_PARTITIONS, m::L_TOPIC => t.topic.clone())
            .set(t.partitions.len() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks(p: i32, low: i64, high: i64, committed: Option<i64>) -> PartitionMarks {
        PartitionMarks {
            topic: "q".into(),
            partition: p,
            low,
            high,
            committed,
        }
    }

    #[test]
    fn a_trailing_marker_is_not_lag() {
        assert_eq!(marks(0, 0, 11, Some(10)).lag(), 0);
        assert_eq!(marks(0, 0, 12, Some(10)).lag(), 0, "one marker per lane");
        assert_eq!(marks(0, 0, 13, Some(10)).lag(), 3);
        assert_eq!(marks(0, 0, 10, Some(10)).lag(), 0);
        assert_eq!(marks(0, 0, 15, Some(10)).lag(), 5);
        // Never committed: everything stored counts, from the low watermark.
        assert_eq!(marks(0, 3, 10, None).lag(), 7);
        // Committed below the low watermark (retention deleted records).
        assert_eq!(marks(0, 8, 10, Some(2)).backlog(), 2);
    }

    #[test]
    fn topics_sum_their_partitions() {
        let all = [marks(0, 0, 100, Some(0)), marks(1, 0, 51, Some(50))];
        let lags = by_topic(&["q".to_string(), "r".to_string()], &all);
        assert_eq!(lags[0].total(), 100);
        assert_eq!(lags[0].per_partition(), 50);
        assert_eq!(lags[1].total(), 0);
        assert_eq!(lags[1].per_partition(), 0);
    }
}
