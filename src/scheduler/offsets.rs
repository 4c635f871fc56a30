//! Per-partition offset tracking for out-of-order completion.
//!
//! Tasks of one partition may finish in any order. The offset committed for a partition is
//! the lowest offset not yet done (or one past the highest started when all are done), so
//! a crash re-delivers in-flight work and never skips any.

use std::collections::BTreeSet;

pub use crate::types::TopicPartition;
use crate::types::TpMap;

/// Offsets of one partition.
#[derive(Debug, Clone, Default)]
pub struct PartitionOffsets {
    /// Started and not yet done.
    pending: BTreeSet<i64>,
    /// One past the highest offset started.
    next: Option<i64>,
    /// The last commit point handed out by [`OffsetTracker::commits`].
    committed: Option<i64>,
    /// Incremented each time the partition is assigned, so completions of an earlier
    /// assignment are told apart.
    epoch: u64,
    /// Attempts running now.
    running: usize,
    /// Outcomes handed to the publisher and not yet durable.
    publishing: usize,
    /// Offsets whose outcome an earlier owner already committed (read from the commit
    /// metadata at assignment): they are skipped, not run again.
    skip: Vec<(i64, i64)>,
    /// The earlier owner's commit metadata could not be read at assignment: it is read
    /// before the partition's first record is started.
    skip_unread: bool,
    /// Being revoked: nothing new may start.
    revoking: bool,
}

/// Longest commit metadata written; brokers accept 4096 bytes by default
/// (`offset.metadata.max.bytes`).
pub const MAX_METADATA: usize = 4000;

/// Prefix of Tidewater's commit metadata.
const METADATA_PREFIX: &str = "tw1:";

/// Encodes the offsets done above a partition's commit point as ranges `a-b` or `a`,
/// comma-separated, after `tw1:`. They are the gaps between the offsets still pending.
/// Ranges that do not fit in [`MAX_METADATA`] are left out (those tasks would run again
/// after a crash).
pub fn encode_done_above(p: &PartitionOffsets) -> String {
    let mut out = String::from(METADATA_PREFIX);
    let Some(next) = p.next else {
        return String::new();
    };
    let mut iter = p.pending.iter().copied().peekable();
    let mut first = true;
    while let Some(o) = iter.next() {
        let end = iter.peek().copied().unwrap_or(next);
        if end > o + 1 {
            let (a, b) = (o + 1, end - 1);
            let part = if a == b {
                format!("{a}")
            } else {
                format!("{a}-{b}")
            };
            if out.len() + part.len() + 1 > MAX_METADATA {
                break;
            }
            if !first {
                out.push(',');
            }
            out.push_str(&part);
            first = false;
        }
    }
    if first { String::new() } else { out }
}

/// Reads ranges written by [`encode_done_above`]; anything else gives none.
pub fn decode_done_above(metadata: &str) -> Vec<(i64, i64)> {
    let Some(body) = metadata.strip_prefix(METADATA_PREFIX) else {
        return Vec::new();
    };
    body.split(',')
        .filter_map(|part| match part.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => {
                let a = part.parse().ok()?;
                Some((a, a))
            }
        })
        .collect()
}

impl PartitionOffsets {
    /// The offset to commit: the lowest pending offset, else one past the highest started.
    pub fn commit_point(&self) -> Option<i64> {
        self.pending.first().copied().or(self.next)
    }

    /// Number of started, unfinished offsets.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// Offsets of every assigned partition.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    parts: TpMap<TopicPartition, PartitionOffsets>,
    next_epoch: u64,
}

impl OffsetTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that a partition was assigned; returns its epoch.
    pub fn assign(&mut self, tp: TopicPartition) -> u64 {
        self.next_epoch += 1;
        let epoch = self.next_epoch;
        self.parts.insert(
            tp,
            PartitionOffsets {
                epoch,
                ..Default::default()
            },
        );
        epoch
    }

    /// Forgets a revoked partition; later completions for it are ignored.
    pub fn revoke(&mut self, tp: &TopicPartition) -> Option<PartitionOffsets> {
        self.parts.remove(tp)
    }

    /// Records that `offset` was fetched; returns the epoch to hand back with
    /// [`OffsetTracker::done`], or `None` when the partition is not assigned (a record
    /// fetched just before its partition was revoked: it belongs to the next owner).
    pub fn start(&mut self, tp: &TopicPartition, offset: i64) -> Option<u64> {
        let p = self.parts.get_mut(tp).filter(|p| !p.revoking)?;
        p.pending.insert(offset);
        let after = offset.saturating_add(1);
        p.next = Some(p.next.map_or(after, |n| n.max(after)));
        Some(p.epoch)
    }

    /// Records that `offset` is done. Returns false when the partition was revoked (or
    /// re-assigned) since the work started: the completion is then ignored.
    pub fn done(&mut self, tp: &TopicPartition, offset: i64, epoch: u64) -> bool {
        match self.parts.get_mut(tp) {
            Some(p) if p.epoch == epoch => p.pending.remove(&offset),
            _ => false,
        }
    }

    /// Commit points that moved since the last call, marked as handed out.
    pub fn commits(&mut self) -> Vec<(TopicPartition, i64)> {
        let mut out = Vec::new();
        for (tp, p) in &mut self.parts {
            if let Some(point) = p.commit_point() {
                if p.committed != Some(point) {
                    p.committed = Some(point);
                    out.push((tp.clone(), point));
                }
            }
        }
        out
    }

    /// Marks commit points as not handed out, after a commit that failed, so the next
    /// [`OffsetTracker::commits`] sends them again.
    pub fn forget_committed<'a>(&mut self, tps: impl IntoIterator<Item = &'a TopicPartition>) {
        for tp in tps {
            if let Some(p) = self.parts.get_mut(tp) {
                p.committed = None;
            }
        }
    }

    /// The current commit point of every partition with one (for a final commit).
    pub fn all_commit_points(&self) -> Vec<(TopicPartition, i64)> {
        self.parts
            .iter()
            .filter_map(|(tp, p)| p.commit_point().map(|o| (tp.clone(), o)))
            .collect()
    }

    /// The commit point of one partition.
    pub fn commit_point(&self, tp: &TopicPartition) -> Option<i64> {
        self.parts.get(tp).and_then(PartitionOffsets::commit_point)
    }

    /// Whether work of this partition and epoch may start now (assigned, not being revoked).
    pub fn may_start(&self, tp: &TopicPartition, epoch: u64) -> bool {
        self.parts
            .get(tp)
            .is_some_and(|p| p.epoch == epoch && !p.revoking)
    }

    /// Whether the partition is still assigned under this epoch.
    pub fn is_current(&self, tp: &TopicPartition, epoch: u64) -> bool {
        self.parts.get(tp).is_some_and(|p| p.epoch == epoch)
    }

    /// An attempt of this partition started.
    pub fn mark_running(&mut self, tp: &TopicPartition, epoch: u64) {
        if let Some(p) = self.parts.get_mut(tp).filter(|p| p.epoch == epoch) {
            p.running += 1;
        }
    }

    /// An attempt of this partition ended.
    pub fn unmark_running(&mut self, tp: &TopicPartition, epoch: u64) {
        if let Some(p) = self.parts.get_mut(tp).filter(|p| p.epoch == epoch) {
            p.running = p.running.saturating_sub(1);
        }
    }

    /// Forgets every running attempt and unpublished outcome (after they were abandoned at
    /// shutdown), so the final revoke does not wait for them.
    pub fn clear_busy(&mut self) {
        for p in self.parts.values_mut() {
            p.running = 0;
            p.publishing = 0;
        }
    }

    /// Marks partitions as being revoked: nothing new of them may start.
    pub fn begin_revoke<'a>(&mut self, tps: impl IntoIterator<Item = &'a TopicPartition>) {
        for tp in tps {
            if let Some(p) = self.parts.get_mut(tp) {
                p.revoking = true;
            }
        }
    }

    /// Attempts running and outcomes not yet durable in these partitions.
    pub fn busy_in<'a>(&self, tps: impl IntoIterator<Item = &'a TopicPartition>) -> usize {
        tps.into_iter()
            .filter_map(|tp| self.parts.get(tp))
            .map(|p| p.running + p.publishing)
            .sum()
    }

    /// An outcome of this partition was handed to the publisher.
    pub fn publishing(&mut self, tp: &TopicPartition, epoch: u64) {
        if let Some(p) = self.parts.get_mut(tp).filter(|p| p.epoch == epoch) {
            p.publishing += 1;
        }
    }

    /// An outcome of this partition is durable (or abandoned).
    pub fn published(&mut self, tp: &TopicPartition, epoch: u64) {
        if let Some(p) = self.parts.get_mut(tp).filter(|p| p.epoch == epoch) {
            p.publishing = p.publishing.saturating_sub(1);
        }
    }

    /// Sets the offsets to skip, from an earlier owner's commit metadata (read now).
    pub fn set_skip(&mut self, tp: &TopicPartition, ranges: Vec<(i64, i64)>) {
        if let Some(p) = self.parts.get_mut(tp) {
            p.skip = ranges;
            p.skip_unread = false;
        }
    }

    /// The earlier owner's commit metadata of `tp` could not be read yet: it must be,
    /// with [`OffsetTracker::set_skip`], before a record of `tp` starts.
    pub fn set_skip_unread(&mut self, tp: &TopicPartition) {
        if let Some(p) = self.parts.get_mut(tp) {
            p.skip_unread = true;
        }
    }

    /// Assigned partitions whose earlier owner's commit metadata is still to be read.
    pub fn skip_unread(&self) -> Vec<TopicPartition> {
        self.parts
            .iter()
            .filter(|(_, p)| p.skip_unread)
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// Whether `tp`'s earlier owner's commit metadata is still to be read.
    pub fn is_skip_unread(&self, tp: &TopicPartition) -> bool {
        self.parts.get(tp).is_some_and(|p| p.skip_unread)
    }

    /// Whether an earlier owner already committed this offset's outcome.
    pub fn should_skip(&self, tp: &TopicPartition, offset: i64) -> bool {
        self.parts
            .get(tp)
            .is_some_and(|p| p.skip.iter().any(|(a, b)| (*a..=*b).contains(&offset)))
    }

    /// For a transaction: every assigned partition's commit point, with the offsets done
    /// above it encoded as commit metadata (see [`encode_done_above`]).
    pub fn transaction_offsets(&self) -> Vec<(TopicPartition, i64, String)> {
        self.transaction_offsets_with(std::iter::empty())
    }

    /// [`OffsetTracker::transaction_offsets`] as they would be with `done` finished too,
    /// leaving the tracker as it is: a transaction that aborts must not have moved it.
    pub fn transaction_offsets_with<'a>(
        &self,
        done: impl IntoIterator<Item = (&'a TopicPartition, i64)>,
    ) -> Vec<(TopicPartition, i64, String)> {
        let mut by_tp: TpMap<&TopicPartition, Vec<i64>> = TpMap::default();
        for (tp, offset) in done {
            by_tp.entry(tp).or_default().push(offset);
        }
        self.parts
            .iter()
            .filter_map(|(tp, p)| {
                let (point, meta) = match by_tp.get(tp) {
                    None => (p.commit_point()?, encode_done_above(p)),
                    Some(offsets) => {
                        let mut after = p.clone();
                        for o in offsets {
                            after.pending.remove(o);
                        }
                        (after.commit_point()?, encode_done_above(&after))
                    }
                };
                Some((tp.clone(), point, meta))
            })
            .collect()
    }

    /// Assigned partitions, without copying them.
    pub fn assigned(&self) -> impl Iterator<Item = &TopicPartition> {
        self.parts.keys()
    }

    /// How many partitions are assigned.
    pub fn assigned_count(&self) -> usize {
        self.parts.len()
    }

    /// Assigned partitions.
    pub fn partitions(&self) -> Vec<TopicPartition> {
        self.parts.keys().cloned().collect()
    }

    /// Started, unfinished offsets across all partitions.
    pub fn pending(&self) -> usize {
        self.parts.values().map(PartitionOffsets::pending).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tp() -> TopicPartition {
        TopicPartition::new("q", 0)
    }

    #[test]
    fn commit_point_waits_for_the_lowest_unfinished_offset() {
        let mut t = OffsetTracker::new();
        let e = t.assign(tp());
        for o in 10..15 {
            t.start(&tp(), o).unwrap();
        }
        assert_eq!(t.commit_point(&tp()), Some(10));
        assert!(t.done(&tp(), 12, e));
        assert!(t.done(&tp(), 11, e));
        assert_eq!(t.commit_point(&tp()), Some(10));
        assert!(t.done(&tp(), 10, e));
        assert_eq!(t.commit_point(&tp()), Some(13));
        assert!(t.done(&tp(), 13, e));
        assert!(t.done(&tp(), 14, e));
        assert_eq!(t.commit_point(&tp()), Some(15));
        assert_eq!(t.commits(), vec![(tp(), 15)]);
        assert_eq!(
            t.commits(),
            vec![],
            "an unchanged point is not committed again"
        );
    }

    #[test]
    fn completions_of_a_revoked_assignment_are_ignored() {
        let mut t = OffsetTracker::new();
        let old = t.assign(tp());
        t.start(&tp(), 1).unwrap();
        t.revoke(&tp());
        assert!(!t.done(&tp(), 1, old));
        assert_eq!(t.start(&tp(), 2), None, "not assigned: not tracked");
        let new = t.assign(tp());
        t.start(&tp(), 1).unwrap();
        assert!(!t.done(&tp(), 1, old), "old epoch must not finish new work");
        assert_eq!(t.commit_point(&tp()), Some(1));
        assert!(t.done(&tp(), 1, new));
        assert_eq!(t.commit_point(&tp()), Some(2));
    }

    #[test]
    fn done_offsets_above_the_commit_point_round_trip_through_metadata() {
        let mut t = OffsetTracker::new();
        let e = t.assign(tp());
        for o in 100..120 {
            t.start(&tp(), o).unwrap();
        }
        for o in [101, 102, 103, 105, 110, 111, 119] {
            t.done(&tp(), o, e);
        }
        let (_, point, meta) = t.transaction_offsets().pop().unwrap();
        assert_eq!(point, 100);
        assert_eq!(meta, "tw1:101-103,105,110-111,119");
        assert_eq!(
            decode_done_above(&meta),
            vec![(101, 103), (105, 105), (110, 111), (119, 119)]
        );
        let mut next = OffsetTracker::new();
        next.assign(tp());
        next.set_skip(&tp(), decode_done_above(&meta));
        assert!(next.should_skip(&tp(), 102) && next.should_skip(&tp(), 119));
        assert!(!next.should_skip(&tp(), 100) && !next.should_skip(&tp(), 104));
        assert!(decode_done_above("something else").is_empty());
    }

    #[test]
    fn a_partition_stays_unread_until_its_previous_owners_list_is_set() {
        let other = TopicPartition::new("q", 1);
        let mut t = OffsetTracker::new();
        t.assign(tp());
        t.assign(other.clone());
        t.set_skip_unread(&tp());
        t.set_skip_unread(&other);
        assert!(t.is_skip_unread(&tp()));
        assert_eq!(t.skip_unread().len(), 2);
        // An empty list (nothing done above the commit point) counts as read.
        t.set_skip(&other, Vec::new());
        assert!(!t.is_skip_unread(&other));
        assert_eq!(t.skip_unread(), vec![tp()]);
        t.set_skip(&tp(), vec![(3, 4)]);
        assert!(t.skip_unread().is_empty() && t.should_skip(&tp(), 4));
        // A new assignment starts read; a revoked partition is not listed.
        t.set_skip_unread(&other);
        t.revoke(&other);
        assert!(t.skip_unread().is_empty());
        t.assign(other.clone());
        assert!(!t.is_skip_unread(&other));
    }

    #[test]
    fn offsets_for_a_transaction_do_not_move_the_tracker_until_it_commits() {
        let mut t = OffsetTracker::new();
        let e = t.assign(tp());
        for o in 0..5 {
            t.start(&tp(), o).unwrap();
        }
        let q = tp();
        let planned = t.transaction_offsets_with([(&q, 0), (&q, 2)]);
        assert_eq!(planned, vec![(tp(), 1, "tw1:2".to_string())]);
        assert_eq!(
            t.commit_point(&tp()),
            Some(0),
            "an aborted transaction leaves no trace"
        );
        t.done(&tp(), 0, e);
        t.done(&tp(), 2, e);
        assert_eq!(
            t.transaction_offsets(),
            planned,
            "the same once it committed"
        );
    }

    proptest! {
        /// Whatever order work finishes in, the commit point is the lowest unfinished
        /// offset: never past unfinished work, and at the end one past the last offset.
        #[test]
        fn any_completion_order_gives_the_right_commit_point(
            start in 0i64..1000,
            n in 1usize..200,
            order in proptest::collection::vec(any::<proptest::sample::Index>(), 200),
        ) {
            let mut t = OffsetTracker::new();
            let e = t.assign(tp());
            let mut pending: Vec<i64> = (start..start + n as i64).collect();
            for &o in &pending {
                t.start(&tp(), o).unwrap();
            }
            let mut done = BTreeSet::new();
            for idx in order.iter().take(n) {
                let o = pending.remove(idx.index(pending.len()));
                prop_assert!(t.done(&tp(), o, e));
                done.insert(o);
                let expected = (start..start + n as i64)
                    .find(|x| !done.contains(x))
                    .unwrap_or(start + n as i64);
                prop_assert_eq!(t.commit_point(&tp()), Some(expected));
            }
        }
    }
}
