//! Spill: a function whose tasks fill more than their share of a shared partition's
//! buffer has its further tasks from that queue forwarded to its overflow queue
//! (`<prefix>.q.<tenant>.<function>`), in the same transaction that advances the shared
//! partition, instead of being held. The other functions of the partition keep flowing;
//! the spilling function runs from its overflow queue with the same limits.
//!
//! [`Spill`] decides, without I/O: when a function starts spilling (its tasks held from
//! one shared partition reach `scheduler.spill_after`), which tasks go (a task whose
//! ordering key still has a task held here stays, so a key's tasks never overtake each
//! other), and when spilling stops (hysteresis: the function holds fewer than half the
//! threshold from shared partitions, none of its forwarded records is still on its way,
//! and a look at its overflow queue taken after the last forward became durable shows it
//! drained). [`watch`] takes that look on a thread of its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info};

use super::dispatch::FnId;
use super::worker::Signal;
use crate::config::Config;
use crate::kafka;
use crate::scale::lag::{self, TRAILING_MARKERS};

/// A function's overflow queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overflow {
    /// Topic.
    pub topic: String,
    /// Its partitions.
    pub partitions: i32,
}

impl Overflow {
    /// The overflow partition for tasks from shared partition `from`: fixed per shared
    /// partition, so the tasks of one key (all in one shared partition) stay in order.
    pub fn partition_for(&self, from: i32) -> i32 {
        from.rem_euclid(self.partitions.max(1))
    }
}

#[derive(Debug, Default)]
struct FnSpill {
    overflow: Option<Overflow>,
    spilling: bool,
    /// Forwarded records not yet durable.
    in_flight: usize,
    /// When the last forwarded record became durable.
    last_durable: Option<Instant>,
}

/// The overflow backlog last seen: (when the look started, backlog per overflow topic).
pub type Seen = Arc<Mutex<Option<(Instant, HashMap<String, u64>)>>>;

/// What changed when spilling was re-evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The function started spilling.
    Started(FnId),
    /// The function stopped spilling.
    Stopped(FnId),
}

/// Spill decisions of one scheduler.
#[derive(Debug)]
pub struct Spill {
    after: usize,
    functions: Vec<FnSpill>,
}

impl Spill {
    /// `after`: tasks of one function held from one shared partition before it spills
    /// (0: never). `overflows[id]`: each function's overflow queue, if it has one.
    pub fn new(after: usize, overflows: Vec<Option<Overflow>>) -> Self {
        Self {
            after,
            functions: overflows
                .into_iter()
                .map(|overflow| FnSpill {
                    overflow,
                    ..FnSpill::default()
                })
                .collect(),
        }
    }

    /// Where a task of `f` just read from a shared partition goes: `Some(overflow)` to
    /// forward it. `held_here`: tasks of `f` held from that partition; `key_held`: its
    /// ordering key has a task held from that partition.
    pub fn route(
        &mut self,
        f: FnId,
        held_here: usize,
        key_held: bool,
    ) -> Option<(&Overflow, Option<Change>)> {
        let after = self.after;
        let s = self.functions.get_mut(f)?;
        let overflow = s.overflow.as_ref()?;
        if after == 0 || key_held {
            return None;
        }
        let mut change = None;
        if !s.spilling {
            if held_here < after {
                return None;
            }
            s.spilling = true;
            change = Some(Change::Started(f));
        }
        s.in_flight += 1;
        Some((overflow, change))
    }

    /// A forwarded record of `f` is durable (or was given up with its partition).
    pub fn forwarded(&mut self, f: FnId, now: Instant) {
        if let Some(s) = self.functions.get_mut(f) {
            s.in_flight = s.in_flight.saturating_sub(1);
            s.last_durable = Some(now);
        }
    }

    /// Re-evaluates the spilling functions: `held(f)` is what `f` holds from shared
    /// partitions now; `seen` the last look at the overflow queues.
    pub fn review(
        &mut self,
        held: impl Fn(FnId) -> usize,
        seen: Option<&(Instant, HashMap<String, u64>)>,
    ) -> Vec<Change> {
        let low = self.after / 2;
        let mut out = Vec::new();
        for (id, s) in self.functions.iter_mut().enumerate() {
            let Some(overflow) = s.overflow.as_ref().filter(|_| s.spilling) else {
                continue;
            };
            let drained = seen.is_some_and(|(at, backlog)| {
                s.last_durable.is_none_or(|d| *at > d)
                    && backlog.get(&overflow.topic).is_some_and(|b| *b == 0)
            });
            if s.in_flight == 0 && held(id) < low.max(1) && drained {
                s.spilling = false;
                out.push(Change::Stopped(id));
            }
        }
        out
    }

    /// Whether `f` spills now.
    pub fn spilling(&self, f: FnId) -> bool {
        self.functions.get(f).is_some_and(|s| s.spilling)
    }

    /// The overflow topics, when any function has one.
    pub fn topics(&self) -> Vec<String> {
        self.functions
            .iter()
            .filter_map(|s| s.overflow.as_ref().map(|o| o.topic.clone()))
            .collect()
    }

    /// Whether any function spills now (the watcher looks only then).
    pub fn any(&self) -> bool {
        self.functions.iter().any(|s| s.spilling)
    }
}

/// How often the overflow queues are looked at while a function spills.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Looks at the overflow queues' backlogs (the scheduler group's committed offsets
/// against the high watermarks) while `active` says a function spills, and leaves the
/// result in `seen`. With exactly-once delivery every transaction leaves a marker, which
/// takes an offset and is no task: a partition whose backlog is no more than
/// [`TRAILING_MARKERS`] is read from the group's offset to tell markers from tasks. With
/// at-least-once nothing is discounted.
pub fn watch(
    config: Arc<Config>,
    topics: Vec<String>,
    exactly_once: bool,
    active: Arc<std::sync::atomic::AtomicBool>,
    seen: Seen,
    signal: Signal,
) {
    let reader = match lag::GroupReader::exact(&config) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "overflow queues cannot be watched; spilling functions keep spilling");
            return;
        }
    };
    let tail = if exactly_once {
        match tail_reader(&config) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(error = %e, "overflow queues cannot be read; spilling functions keep spilling");
                return;
            }
        }
    } else {
        None
    };
    while signal.sleep(LOOK_EVERY) {
        if !active.load(std::sync::atomic::Ordering::Relaxed) {
            continue;
        }
        let started = Instant::now();
        match reader.read(&topics, Duration::from_secs(5)) {
            Ok(marks) => {
                let mut backlog: HashMap<String, u64> = HashMap::new();
                for m in &marks {
                    let raw = m.backlog();
                    let b = match &tail {
                        Some(tail) if (1..=TRAILING_MARKERS).contains(&raw) => {
                            let from = m.committed.unwrap_or(m.low).max(m.low);
                            match has_records(tail, &m.topic, m.partition, from) {
                                Some(false) => 0,
                                // A task waits, or the read did not finish: not drained.
                                Some(true) | None => u64::try_from(raw).unwrap_or(1),
                            }
                        }
                        _ => u64::try_from(raw).unwrap_or(0),
                    };
                    *backlog.entry(m.topic.clone()).or_default() += b;
                }
                debug!(?backlog, "overflow backlog");
                if let Ok(mut s) = seen.lock() {
                    *s = Some((started, backlog));
                }
            }
            Err(e) => info!(error = %e, "cannot read the overflow queues' backlog; will retry"),
        }
    }
}

/// A `read_committed` consumer that is only ever assigned partitions (it never joins
/// the group nor commits), and reports reaching a partition's end.
pub fn tail_reader(config: &Config) -> Result<BaseConsumer, KafkaError> {
    let mut cc = kafka::client_config(config);
    cc.set("group.id", format!("{}.overflow-look", config.group_id()));
    cc.set("enable.auto.commit", "false");
    cc.set("isolation.level", "read_committed");
    cc.set("enable.partition.eof", "true");
    cc.set("auto.offset.reset", "earliest");
    cc.create()
}

/// Whether a task (a record, not a marker) waits in `topic`'s `partition` at or after
/// `from`, read as the scheduler reads it; `None` when the read did not end in time.
pub fn has_records(tail: &BaseConsumer, topic: &str, partition: i32, from: i64) -> Option<bool> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from))
        .ok()?;
    tail.assign(&tpl).ok()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let found = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break None;
        }
        match tail.poll(left) {
            Some(Ok(_)) => break Some(true),
            Some(Err(KafkaError::PartitionEOF(_))) => break Some(false),
            Some(Err(e)) => {
                debug!(error = %e, topic, partition, "cannot read an overflow partition's tail");
                break None;
            }
            None => {}
        }
    };
    let _ = tail.unassign();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spill(after: usize) -> Spill {
        let o = Overflow {
            topic: "tw.q.t.slow".into(),
            partitions: 3,
        };
        Spill::new(after, vec![Some(o), None])
    }

    fn seen(at: Instant, backlog: u64) -> (Instant, HashMap<String, u64>) {
        (at, HashMap::from([("tw.q.t.slow".to_string(), backlog)]))
    }

    #[test]
    fn a_function_spills_once_it_holds_its_share() {
        let mut s = spill(10);
        assert!(s.route(0, 9, false).is_none(), "below the threshold: held");
        let (o, change) = s.route(0, 10, false).unwrap();
        assert_eq!(o.topic, "tw.q.t.slow");
        assert_eq!(change, Some(Change::Started(0)));
        // Once spilling, every further task goes, however few are held.
        let (_, change) = s.route(0, 0, false).unwrap();
        assert_eq!(change, None);
        assert!(s.spilling(0));
        assert!(
            s.route(1, 1000, false).is_none(),
            "no overflow queue: never"
        );
    }

    #[test]
    fn a_key_with_a_task_held_here_stays() {
        let mut s = spill(10);
        assert!(s.route(0, 50, true).is_none());
        assert!(s.route(0, 50, false).is_some());
        assert!(s.route(0, 50, true).is_none(), "even while spilling");
    }

    #[test]
    fn zero_turns_spilling_off() {
        let mut s = spill(0);
        assert!(s.route(0, 1_000_000, false).is_none());
    }

    #[test]
    fn spilling_stops_only_when_drained_after_the_last_forward() {
        let t0 = Instant::now();
        let mut s = spill(10);
        s.route(0, 10, false).unwrap();
        s.route(0, 10, false).unwrap();
        // Forwards still on their way.
        assert!(s.review(|_| 0, Some(&seen(t0, 0))).is_empty());
        let t1 = t0 + Duration::from_secs(1);
        s.forwarded(0, t1);
        s.forwarded(0, t1);
        // A look taken before the last forward was durable proves nothing.
        assert!(s.review(|_| 0, Some(&seen(t0, 0))).is_empty());
        let t2 = t1 + Duration::from_secs(1);
        // Backlog left in the overflow queue: keep spilling.
        assert!(s.review(|_| 0, Some(&seen(t2, 3))).is_empty());
        // Still holding many from shared partitions: keep spilling (no flapping).
        assert!(s.review(|_| 5, Some(&seen(t2, 0))).is_empty());
        assert_eq!(
            s.review(|_| 4, Some(&seen(t2, 0))),
            vec![Change::Stopped(0)]
        );
        assert!(!s.spilling(0));
        assert!(s.route(0, 9, false).is_none(), "back to holding");
    }

    #[test]
    fn no_look_no_stop() {
        let mut s = spill(10);
        s.route(0, 10, false).unwrap();
        s.forwarded(0, Instant::now());
        assert!(s.review(|_| 0, None).is_empty());
    }

    #[test]
    fn overflow_partitions_follow_the_shared_partition() {
        let o = Overflow {
            topic: "x".into(),
            partitions: 3,
        };
        assert_eq!(o.partition_for(0), 0);
        assert_eq!(o.partition_for(4), 1);
        let one = Overflow {
            topic: "x".into(),
            partitions: 0,
        };
        assert_eq!(one.partition_for(7), 0);
    }
}
