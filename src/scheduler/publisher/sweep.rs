//! Ending, as aborted, what a failed transaction left of itself in the log, before its
//! batch is replayed.
//!
//! A transaction that failed is aborted (by the producer, by the new producer that
//! replaces it, or by the coordinator when it times out), and its batch is replayed by
//! the same lane, whose producers keep the lane's transactional id. Kafka's coordinator
//! skips the marker of a partition that has no leader (a single broker restarting has
//! none for a moment, see [`heal`](super::super::heal)): the aborted part then stays open,
//! and the next marker of the same producer id on that partition decides its fate. The
//! replay's commit would be that marker, and would publish the aborted records beside the
//! replayed ones: two outcomes for one task.
//!
//! So before the replay, the lane runs a transaction that writes one empty record (header
//! `tw-event: sweep`) with each key of the failed batch, to the same topics (so to the
//! same partitions), and aborts it: its abort marker ends any part left open there as
//! aborted. Then it checks that every partition of those topics has its last stable offset
//! past what the sweep wrote, and sweeps again (up to [`ROUNDS`] times) where not.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::counter;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};
use tracing::{debug, info, warn};

use super::{OutRecord, Publisher, TxnError, txn_error};
use crate::names::{headers as h, metrics as m};
use crate::scheduler::stall::Stall;
use crate::scheduler::txn_calls::CALL_TIMEOUT;
use crate::scheduler::worker::Signal;

/// Per partition of the given topics: (topic, partition, last stable offset, end); the
/// error says why not.
pub type Marks =
    Box<dyn Fn(&[String], &Signal) -> Result<Vec<(String, i32, i64, i64)>, String> + Send>;

/// How many sweeps are made before the batch is replayed anyway.
pub const ROUNDS: u32 = 3;
/// How long, after a sweep, the stable offsets are given to move past it.
pub const SETTLE: Duration = Duration::from_secs(5);
/// How often they are looked at meanwhile.
pub const LOOK_EVERY: Duration = Duration::from_millis(250);

/// Where a sweep writes: a failed batch's record destination, by key or by partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub topic: Arc<str>,
    pub key: Box<[u8]>,
    /// The explicit partition of a placed record; `None` goes by key, as the record did.
    pub partition: Option<i32>,
}

/// The targets of a failed batch's records: one per topic and key (or explicit
/// partition), in order of first appearance.
pub fn targets<'a>(records: impl IntoIterator<Item = &'a OutRecord>) -> Vec<Target> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for r in records {
        let partition = r.place.map(|p| p.partition);
        // A placed record's key does not choose its partition: one per partition is enough.
        let key: Box<[u8]> = if partition.is_some() {
            Box::default()
        } else {
            r.key().into()
        };
        let t = Target {
            topic: r.topic.clone(),
            key,
            partition,
        };
        if seen.insert(t.clone()) {
            out.push(t);
        }
    }
    out
}

/// The distinct topics of `targets`, sorted.
pub fn topics(targets: &[Target]) -> Vec<String> {
    let mut t: Vec<String> = targets.iter().map(|t| t.topic.to_string()).collect();
    t.sort();
    t.dedup();
    t
}

/// The partitions whose last stable offset in `now` has not reached their end in
/// `before` (read once the sweep's records were written, before its abort): something
/// there is still open from before the sweep's marker. A partition missing from `now` is
/// counted open (not known).
pub fn still_open(
    before: &[(String, i32, i64, i64)],
    now: &[(String, i32, i64, i64)],
) -> Vec<(String, i32)> {
    before
        .iter()
        .filter(|(topic, partition, _, end)| {
            !now.iter()
                .any(|(t, p, stable, _)| t == topic && p == partition && stable >= end)
        })
        .map(|(t, p, _, _)| (t.clone(), *p))
        .collect()
}

/// The sweep owed by a lane: the targets of its failed transaction, until swept.
pub struct Sweeper {
    /// Reads the partitions' stable offsets and ends.
    pub marks: Marks,
    pending: Option<Vec<Target>>,
}

impl Sweeper {
    /// A sweeper reading stable offsets with `marks`, owing nothing.
    pub fn new(marks: Marks) -> Self {
        Self {
            marks,
            pending: None,
        }
    }

    /// A transaction of these records failed and its batch is to be replayed: a sweep is
    /// owed (already owed after an earlier failure of the same batch, whose records are a
    /// superset: the batch only loses units between attempts).
    pub fn failed<'a>(&mut self, records: impl IntoIterator<Item = &'a OutRecord>) {
        if self.pending.is_none() {
            self.pending = Some(targets(records));
        }
    }

    /// What is owed, if anything.
    pub fn pending(&self) -> Option<&[Target]> {
        self.pending.as_deref()
    }

    /// The sweep is done (or given up).
    pub fn swept(&mut self) {
        self.pending = None;
    }
}

impl<T: Send + 'static> Publisher<T> {
    /// Runs the sweep owed after a failed transaction, if any (see the module's text).
    pub(super) fn sweep(&mut self, signal: &Signal, stall: &Stall) -> Result<(), TxnError> {
        let Some(targets) = self.sweeper.pending() else {
            return Ok(());
        };
        let topics = topics(targets);
        for round in 1..=ROUNDS {
            let before = self.in_transaction(signal, stall, || {
                self.lane.producer.begin_transaction().map_err(txn_error)?;
                for t in targets {
                    let mut record = BaseRecord::to(&t.topic)
                        .key(&*t.key)
                        .payload(&[][..])
                        .headers(OwnedHeaders::new_with_capacity(1).insert(Header {
                            key: h::EVENT,
                            value: Some(h::EVENT_SWEEP),
                        }));
                    if let Some(p) = t.partition {
                        record = record.partition(p);
                    }
                    self.send_record(record).map_err(txn_error)?;
                }
                self.deliver_all(CALL_TIMEOUT).map_err(txn_error)?;
                // The ends now lie past everything written before the sweep's marker.
                (self.sweeper.marks)(&topics, signal).map_err(|e| {
                    debug!(error = %e, "cannot read the stable offsets to sweep");
                    TxnError::Abort(KafkaError::Canceled)
                })
            })?;
            self.abort(signal, stall)?;
            counter!(m::TRANSACTIONS, m::L_RESULT => "swept").increment(1);
            let deadline = Instant::now() + SETTLE;
            let open = loop {
                let open = match (self.sweeper.marks)(&topics, signal) {
                    Ok(now) => still_open(&before, &now),
                    Err(_) => still_open(&before, &[]),
                };
                // Not `signal.sleep`: a stopping publisher still makes its batches durable.
                if open.is_empty() || Instant::now() >= deadline || signal.is_abandoned() {
                    break open;
                }
                std::thread::sleep(LOOK_EVERY);
            };
            if open.is_empty() {
                info!(
                    round,
                    partitions = before.len(),
                    "what a failed transaction wrote is aborted; replaying its batch"
                );
                break;
            }
            if round == ROUNDS {
                warn!(partitions = ?open, waited = ?SETTLE, rounds = round,
                    "a transaction is still open on these partitions after sweeping: if it is this \
                     producer's failed one, its records may become visible beside the replay");
            }
        }
        self.sweeper.swept();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::out_record::Place;

    fn rec(topic: &str, key: &str) -> OutRecord {
        OutRecord::new(topic.into(), b"v".to_vec(), key, 0)
    }

    #[test]
    fn a_failed_batch_is_swept_once_per_topic_and_key_or_partition() {
        let placed = |p| {
            rec("q", "x").placed(Place {
                partition: p,
                timestamp: None,
            })
        };
        let records = [
            rec("status", "a"),
            rec("done", "a"),
            rec("status", "a"),
            rec("status", "b"),
            placed(2),
            rec("q", "y").placed(Place {
                partition: 2,
                timestamp: Some(5),
            }),
            placed(0),
        ];
        let t = targets(&records);
        let shown: Vec<(&str, &[u8], Option<i32>)> = t
            .iter()
            .map(|t| (&*t.topic, &*t.key, t.partition))
            .collect();
        assert_eq!(
            shown,
            [
                ("status", &b"a"[..], None),
                ("done", &b"a"[..], None),
                ("status", &b"b"[..], None),
                ("q", &b""[..], Some(2)),
                ("q", &b""[..], Some(0)),
            ]
        );
        assert_eq!(topics(&t), ["done", "q", "status"]);
    }

    #[test]
    fn a_partition_is_open_until_its_stable_offset_reaches_the_end_before_the_abort() {
        let before = [
            ("s".to_string(), 0, 10, 15),
            ("s".to_string(), 1, 7, 7),
            ("d".to_string(), 0, 3, 9),
        ];
        let now = [
            // Past the sweep: the abort marker (offset 15) moved it to 16.
            ("s".to_string(), 0, 16, 16),
            // Held where it was.
            ("s".to_string(), 1, 6, 8),
        ];
        // d-0 was not read: not known to be closed.
        assert_eq!(
            still_open(&before, &now),
            [("s".to_string(), 1), ("d".to_string(), 0)]
        );
        let all_past = [
            ("s".to_string(), 0, 15, 16),
            ("s".to_string(), 1, 7, 8),
            ("d".to_string(), 0, 9, 10),
        ];
        assert!(still_open(&before, &all_past).is_empty());
    }

    #[test]
    fn a_sweep_is_owed_from_the_first_failure_until_swept() {
        let mut s = Sweeper::new(Box::new(|_, _| Ok(Vec::new())));
        assert!(s.pending().is_none());
        s.failed(&[rec("status", "a"), rec("status", "b")]);
        // A later failure of the same (smaller) batch keeps what is owed.
        s.failed(&[rec("status", "a")]);
        assert_eq!(s.pending().map(<[Target]>::len), Some(2));
        s.swept();
        assert!(s.pending().is_none());
        s.failed(&[rec("done", "c")]);
        assert_eq!(s.pending().map(<[Target]>::len), Some(1));
    }
}
