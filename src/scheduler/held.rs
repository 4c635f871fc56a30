//! Partitions held by a transaction left open. A `read_committed` reader stops at a
//! partition's last stable offset: the first offset of the oldest transaction still open
//! there. A producer that dies mid-transaction has it aborted by Kafka after its
//! transaction timeout, but some are never ended: a producer with a long timeout, or a
//! part of a transaction whose marker Kafka skipped while the partition had no leader
//! (a single broker restarting, RELIABILITY.md). Every reader of the partition then
//! waits without an error: schedulers on a queue, consumers of outcomes, the indexer.
//!
//! [`HeldWatch`] decides, without I/O, when a partition counts as held: its last stable
//! offset is below its end and has not moved for `scheduler.held_partition_after`.
//! [`watch`] looks at every partition of every topic the configuration implies, reports
//! each held partition once as a warning, and keeps `tidewater_partitions_held` per topic.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::gauge;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use super::worker::Signal;
use crate::config::Config;
use crate::kafka;
use crate::names::metrics as m;

/// What changed for a partition at a look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Its last stable offset `stable` has stayed below its end `end` for at least the
    /// watch's `after`: reported once.
    Held { stable: i64, end: i64 },
    /// It moved on (or caught up with its end) after it was reported held at `stable`.
    Released { stable: i64 },
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    stable: i64,
    since: Instant,
    reported: bool,
}

/// Per partition, the last stable offset seen below the end and since when.
#[derive(Debug)]
pub struct HeldWatch {
    after: Duration,
    seen: HashMap<(String, i32), Seen>,
}

impl HeldWatch {
    /// A partition counts as held once its last stable offset stayed the same, below the
    /// end, for `after`.
    pub fn new(after: Duration) -> Self {
        Self {
            after,
            seen: HashMap::new(),
        }
    }

    /// Takes in a look at `topic[partition]`, made at `now`: its last stable offset and
    /// its end (high watermark).
    pub fn observe(
        &mut self,
        (topic, partition): (&str, i32),
        stable: i64,
        end: i64,
        now: Instant,
    ) -> Option<Change> {
        let key = (topic.to_owned(), partition);
        if stable >= end {
            return self
                .seen
                .remove(&key)
                .filter(|s| s.reported)
                .map(|s| Change::Released { stable: s.stable });
        }
        match self.seen.get_mut(&key) {
            Some(s) if s.stable == stable => {
                if !s.reported && now.saturating_duration_since(s.since) >= self.after {
                    s.reported = true;
                    return Some(Change::Held { stable, end });
                }
                None
            }
            Some(s) => {
                let was = *s;
                *s = Seen {
                    stable,
                    since: now,
                    reported: false,
                };
                was.reported
                    .then_some(Change::Released { stable: was.stable })
            }
            None => {
                self.seen.insert(
                    key,
                    Seen {
                        stable,
                        since: now,
                        reported: false,
                    },
                );
                None
            }
        }
    }

    /// Partitions of `topic` reported held and not released since.
    pub fn held(&self, topic: &str) -> usize {
        self.seen
            .iter()
            .filter(|((t, _), s)| t == topic && s.reported)
            .count()
    }
}

/// How often [`watch`] looks: four times per `after`, between 1 s and 30 s.
pub fn look_every(after: Duration) -> Duration {
    (after / 4).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

fn reader(config: &Config, isolation: &str) -> Result<BaseConsumer, KafkaError> {
    let mut cc = kafka::client_config(config);
    // Never joins or commits: the group id only satisfies the client.
    cc.set("group.id", config.group_id());
    cc.set("enable.auto.commit", "false");
    cc.set("isolation.level", isolation);
    cc.create()
}

/// A `read_committed` and a `read_uncommitted` reader, for [`look`].
pub fn readers(config: &Config) -> Result<(BaseConsumer, BaseConsumer), KafkaError> {
    Ok((
        reader(config, "read_committed")?,
        reader(config, "read_uncommitted")?,
    ))
}

/// Looks at every partition of every topic the configuration implies each
/// [`look_every`]`(after)` until `signal` stops it. Blocking.
pub fn watch(config: Arc<Config>, after: Duration, signal: Signal) {
    let (stable_reader, end_reader) = match readers(&config) {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "partitions held by open transactions cannot be watched");
            return;
        }
    };
    let topics: Vec<String> = kafka::topic_specs(&config)
        .into_iter()
        .map(|t| t.name)
        .collect();
    for t in &topics {
        gauge!(m::PARTITIONS_HELD, m::L_TOPIC => t.clone()).set(0.0);
    }
    let mut held = HeldWatch::new(after);
    let every = look_every(after);
    while signal.sleep(every) {
        let marks = match look(&stable_reader, &end_reader, &topics, &signal) {
            Ok(m) => m,
            Err(e) => {
                // The cluster being away is reported by the consumer and the publisher.
                debug!(error = %e, "cannot look for held partitions");
                continue;
            }
        };
        let now = Instant::now();
        for (topic, partition, stable, end) in marks {
            match held.observe((&topic, partition), stable, end, now) {
                Some(Change::Held { stable, end }) => warn!(
                    topic = %topic,
                    partition,
                    offset = stable,
                    end,
                    held_for_at_least = ?after,
                    "partition held by a transaction left open: read_committed readers wait at this offset until it ends. \
                     `tidewater events {topic} --uncommitted` shows what it holds; `kafka-transactions.sh find-hanging` \
                     finds it; `kafka-transactions.sh abort` ends it but drops its records"
                ),
                Some(Change::Released { stable }) => {
                    info!(topic = %topic, partition, offset = stable, "held partition moved on");
                }
                None => {}
            }
        }
        for topic in &topics {
            gauge!(m::PARTITIONS_HELD, m::L_TOPIC => topic.clone()).set(held.held(topic) as f64);
        }
    }
}

/// Per partition of `topics`: (topic, partition, last stable offset, end), in two
/// requests per leader (the readers' isolation levels decide which end each reads).
/// Each call waits 3 s at most, and none starts once `signal` stops the watch, so a
/// scheduler stopping while the cluster is away is not held up here.
pub fn look(
    stable_reader: &BaseConsumer,
    end_reader: &BaseConsumer,
    topics: &[String],
    signal: &Signal,
) -> Result<Vec<(String, i32, i64, i64)>, KafkaError> {
    let timeout = Duration::from_secs(3);
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        if signal.is_stopping() {
            return Ok(Vec::new());
        }
        let md = end_reader.fetch_metadata(Some(topic), timeout)?;
        for t in md.topics().iter().filter(|t| t.error().is_none()) {
            for p in t.partitions() {
                // `End` as the time asks for the latest offset.
                tpl.add_partition_offset(topic, p.id(), Offset::End)?;
            }
        }
    }
    if tpl.count() == 0 || signal.is_stopping() {
        return Ok(Vec::new());
    }
    // The stable offsets first: read after them, no end is below its stable offset.
    let stable = stable_reader.offsets_for_times(tpl.clone(), timeout)?;
    let end = end_reader.offsets_for_times(tpl, timeout)?;
    let end = end.elements();
    let ends: HashMap<(&str, i32), i64> = end
        .iter()
        .filter(|e| e.error().is_ok())
        .filter_map(|e| Some(((e.topic(), e.partition()), e.offset().to_raw()?)))
        .collect();
    let stable = stable.elements();
    Ok(stable
        .iter()
        .filter(|e| e.error().is_ok())
        .filter_map(|e| {
            let s = e.offset().to_raw()?;
            let end = *ends.get(&(e.topic(), e.partition()))?;
            (s >= 0 && end >= 0).then(|| (e.topic().to_owned(), e.partition(), s, end))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_secs(60);

    #[test]
    fn a_partition_is_held_once_its_stable_offset_stays_below_the_end_for_the_time() {
        let t0 = Instant::now();
        let mut w = HeldWatch::new(AFTER);
        let p = ("q", 0);
        assert_eq!(w.observe(p, 10, 15, t0), None);
        assert_eq!(w.observe(p, 10, 20, t0 + Duration::from_secs(59)), None);
        assert_eq!(
            w.observe(p, 10, 25, t0 + AFTER),
            Some(Change::Held {
                stable: 10,
                end: 25
            })
        );
        assert_eq!(w.held("q"), 1);
        // Reported once.
        assert_eq!(w.observe(p, 10, 25, t0 + 2 * AFTER), None);
        assert_eq!(w.held("q"), 1);
        assert_eq!(w.held("other"), 0);
    }

    #[test]
    fn a_moving_stable_offset_is_never_held() {
        let t0 = Instant::now();
        let mut w = HeldWatch::new(AFTER);
        // Under steady transactional load the stable offset is below the end at every
        // look, but moves.
        for i in 0..10u32 {
            let at = t0 + AFTER * i;
            let o = i64::from(i) * 100;
            assert_eq!(w.observe(("q", 1), o, o + 50, at), None);
        }
        assert_eq!(w.held("q"), 0);
    }

    #[test]
    fn a_held_partition_is_released_when_it_moves_or_catches_up() {
        let t0 = Instant::now();
        let mut w = HeldWatch::new(AFTER);
        let p = ("q", 2);
        w.observe(p, 5, 9, t0);
        assert!(matches!(
            w.observe(p, 5, 9, t0 + AFTER),
            Some(Change::Held { .. })
        ));
        assert_eq!(
            w.observe(p, 7, 9, t0 + AFTER * 2),
            Some(Change::Released { stable: 5 })
        );
        assert_eq!(w.held("q"), 0);
        // Held again at the new offset only after the time passed anew.
        assert_eq!(w.observe(p, 7, 9, t0 + AFTER * 2 + AFTER / 2), None);
        assert!(matches!(
            w.observe(p, 7, 9, t0 + AFTER * 3),
            Some(Change::Held { stable: 7, .. })
        ));
        assert_eq!(
            w.observe(p, 9, 9, t0 + AFTER * 4),
            Some(Change::Released { stable: 7 })
        );
        assert_eq!(w.held("q"), 0);
    }

    #[test]
    fn a_caught_up_partition_that_was_not_reported_is_simply_forgotten() {
        let t0 = Instant::now();
        let mut w = HeldWatch::new(AFTER);
        w.observe(("q", 0), 3, 4, t0);
        assert_eq!(w.observe(("q", 0), 4, 4, t0 + AFTER * 5), None);
        // Starts over: not held at once on the next gap.
        assert_eq!(w.observe(("q", 0), 4, 6, t0 + AFTER * 6), None);
    }

    #[test]
    fn looks_are_four_per_period_within_bounds() {
        assert_eq!(look_every(AFTER * 2), Duration::from_secs(30));
        assert_eq!(look_every(Duration::from_secs(2)), Duration::from_secs(1));
        assert_eq!(look_every(Duration::from_secs(20)), Duration::from_secs(5));
    }
}
