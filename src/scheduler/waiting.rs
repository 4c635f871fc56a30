//! How long the oldest task of each queue partition has waited to start.
//!
//! A task counts as waiting from the moment this scheduler reads it from a queue topic
//! until its first attempt starts (or it is dropped, stopped or skipped): it sits in a
//! function's ready queue, waiting for a slot, a rate token or an earlier task with its
//! ordering key. Ages count from submission: the task's `submitted_at`, else the record
//! timestamp, as for the queue-wait histogram. Per partition, [`Waiting::oldest_age`] is:
//!
//! 1. the age of the waiting task with the lowest offset (the first record past the
//!    commit point that has not started), when any waits. Records not read yet come
//!    after it in the partition, so it is the partition's oldest;
//! 2. else, when the last task read from the partition was read less than
//!    [`READING_WINDOW_MS`] ago, that task's age. The scheduler is then working through
//!    the partition as fast as it reads (through a backlog, after a restart); the oldest
//!    task not started is the next record, not read yet and submitted just after it;
//! 3. else 0: nothing of the partition waits here, and nothing arrived lately.
//!
//! Not covered: a partition paused while every task it buffered is running or waiting
//! for a retry reads 0 (the backlog metrics show what waits in Kafka), and tasks read
//! back from a delay topic (retries, `not_before`) are not counted.
//!
//! Cost: one ordered-map insert and remove per task, and a lookup of the first entry per
//! partition at each export. Memory is bounded by the scheduler's buffer limits.

use std::collections::BTreeMap;

use super::offsets::TopicPartition;
use crate::names::metrics as m;
use crate::types::{TpMap, TpSet, slot_for};

/// How recently a task must have been read from a partition for its age to stand for
/// the tasks not read yet (rule 2 of the module documentation).
pub const READING_WINDOW_MS: i64 = 1000;

/// A task read from a queue partition that has not started: its offset and when it was
/// submitted (ms since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queued {
    /// Offset of its record.
    pub offset: i64,
    /// Submission time, ms.
    pub since_ms: i64,
}

/// The last task read from a partition: when it was submitted and when it was read, ms.
#[derive(Debug, Clone, Copy)]
struct Last {
    since_ms: i64,
    read_ms: i64,
}

/// One partition: its waiting tasks by offset (submission time), and the last task read.
#[derive(Debug, Default)]
struct Part {
    waiting: BTreeMap<i64, i64>,
    last: Option<Last>,
}

/// The waiting tasks of every queue partition.
#[derive(Debug, Default)]
pub struct Waiting {
    parts: TpMap<TopicPartition, Part>,
    /// Partitions whose gauge has been set, so one that is no longer assigned is set to 0
    /// once instead of keeping its last value.
    exported: TpSet<TopicPartition>,
}

impl Waiting {
    /// A task of `tp` was read at `read_ms` and waits.
    pub fn add(&mut self, tp: &TopicPartition, q: Queued, read_ms: i64) {
        let Some(part) = slot_for(&mut self.parts, tp) else {
            return;
        };
        part.waiting.insert(q.offset, q.since_ms);
        part.last = Some(Last {
            since_ms: q.since_ms,
            read_ms,
        });
    }

    /// A task of `tp` no longer waits (it started, or it was dropped).
    pub fn remove(&mut self, tp: &TopicPartition, q: Queued) {
        if let Some(part) = self.parts.get_mut(tp) {
            part.waiting.remove(&q.offset);
        }
    }

    /// Forgets a partition (revoked).
    pub fn drop_partition(&mut self, tp: &TopicPartition) {
        self.parts.remove(tp);
    }

    /// Tasks waiting in all partitions.
    pub fn len(&self) -> usize {
        self.parts.values().map(|p| p.waiting.len()).sum()
    }

    /// Whether no task waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Seconds the oldest task of `tp` not started has waited at `now_ms`, by the rules of
    /// the module documentation; never negative.
    pub fn oldest_age(&self, tp: &TopicPartition, now_ms: i64) -> f64 {
        let Some(part) = self.parts.get(tp) else {
            return 0.0;
        };
        let since = match part.waiting.first_key_value() {
            Some((_, since)) => *since,
            None => match part.last {
                Some(last) if now_ms.saturating_sub(last.read_ms) < READING_WINDOW_MS => {
                    last.since_ms
                }
                _ => return 0.0,
            },
        };
        now_ms.saturating_sub(since).max(0) as f64 / 1000.0
    }

    /// Sets `tidewater_queue_oldest_task_age_seconds` for every assigned queue partition,
    /// and to 0 for those exported before that are no longer assigned.
    pub fn export(&mut self, assigned: Vec<TopicPartition>, now_ms: i64) {
        let now: TpSet<TopicPartition> = assigned.into_iter().collect();
        for tp in self.exported.difference(&now) {
            set_gauge(tp, 0.0);
        }
        for tp in &now {
            set_gauge(tp, self.oldest_age(tp, now_ms));
        }
        self.exported = now;
    }
}

fn set_gauge(tp: &TopicPartition, age: f64) {
    ::metrics::gauge!(m::OLDEST_TASK_AGE, m::L_TOPIC => tp.topic.clone(), m::L_PARTITION => tp.partition.to_string())
        .set(age);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("tw.q.shop", p)
    }

    /// A task at `offset`, submitted at `since_ms`.
    fn q(offset: i64, since_ms: i64) -> Queued {
        Queued { offset, since_ms }
    }

    /// When the tests' tasks are read: at 5 s.
    const READ: i64 = 5_000;

    #[test]
    fn the_oldest_is_the_first_record_not_started_and_its_age_counts_from_submission() {
        let mut w = Waiting::default();
        assert_eq!(w.oldest_age(&tp(0), 10_000), 0.0, "nothing read");
        w.add(&tp(0), q(12, 4_000), READ);
        w.add(&tp(0), q(10, 1_000), READ);
        w.add(&tp(0), q(11, 500), READ);
        w.add(&tp(1), q(3, 9_000), READ);
        // By offset, not by the earliest time: offset 10 is the first not started.
        assert_eq!(w.oldest_age(&tp(0), 10_000), 9.0);
        assert_eq!(w.oldest_age(&tp(1), 10_000), 1.0);
        w.remove(&tp(0), q(10, 1_000));
        assert_eq!(w.oldest_age(&tp(0), 10_000), 9.5);
        w.remove(&tp(0), q(11, 500));
        w.remove(&tp(0), q(12, 4_000));
        assert_eq!(w.oldest_age(&tp(0), 10_000), 0.0, "all started long ago");
        assert_eq!(w.len(), 1);
        w.drop_partition(&tp(1));
        assert!(w.is_empty());
        assert_eq!(w.oldest_age(&tp(1), 10_000), 0.0);
    }

    #[test]
    fn while_a_partition_is_read_through_the_last_task_read_stands_for_the_next_ones() {
        let mut w = Waiting::default();
        // A backlog submitted at 0 s, read and started at once from 5 s on: nothing waits
        // in memory, but the next records (not read yet) are as old as the last one read.
        w.add(&tp(0), q(7, 0), READ);
        w.remove(&tp(0), q(7, 0));
        assert_eq!(w.oldest_age(&tp(0), 5_500), 5.5);
        // Nothing read for a second: nothing is known to wait.
        assert_eq!(w.oldest_age(&tp(0), 5_000 + READING_WINDOW_MS), 0.0);
        // A task waiting in memory comes first.
        w.add(&tp(0), q(8, 2_000), READ);
        assert_eq!(w.oldest_age(&tp(0), 5_500), 3.5);
    }

    #[test]
    fn a_submission_time_in_the_future_is_not_a_negative_age() {
        let mut w = Waiting::default();
        w.add(&tp(0), q(0, 20_000), READ);
        assert_eq!(w.oldest_age(&tp(0), 10_000), 0.0);
        w.remove(&tp(0), q(7, 0));
        assert_eq!(w.len(), 1, "removing what is not there changes nothing");
    }

    #[test]
    fn partitions_no_longer_assigned_stop_being_exported() {
        let mut w = Waiting::default();
        w.export(vec![tp(0), tp(1)], 0);
        assert_eq!(w.exported.len(), 2);
        w.export(vec![tp(1)], 0);
        assert_eq!(w.exported, TpSet::from_iter([tp(1)]));
    }
}
