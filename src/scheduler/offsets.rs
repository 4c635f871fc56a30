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
/// Ranges that do not fit in [`MAX_METADATA`] would be left out (those tasks would run
/// again after a crash): [`OffsetTracker::admit`] keeps every transaction within it.
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

/// Whether commit metadata of `len` bytes is written whole by [`encode_done_above`].
fn fits(len: usize) -> bool {
    len < MAX_METADATA
}

/// Decimal digits of an offset.
fn digits(n: i64) -> usize {
    let mut d = 1 + usize::from(n < 0);
    let mut n = n.unsigned_abs();
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// Length of [`encode_done_above`]'s output, followed as offsets are marked done one by
/// one without encoding them.
#[derive(Debug, Clone, Copy, Default)]
struct MetaLen {
    ranges: usize,
    /// The ranges' characters, without the commas between them.
    chars: usize,
}

impl MetaLen {
    fn of(p: &PartitionOffsets) -> Self {
        let mut len = Self::default();
        let Some(next) = p.next else {
            return len;
        };
        let mut iter = p.pending.iter().copied().peekable();
        while let Some(o) = iter.next() {
            len.add(o, iter.peek().copied().unwrap_or(next));
        }
        len
    }

    /// Bytes written.
    fn encoded(self) -> usize {
        match self.ranges {
            0 => 0,
            r => METADATA_PREFIX.len() + self.chars + r - 1,
        }
    }

    fn cost(a: i64, b: i64) -> usize {
        if a == b {
            digits(a)
        } else {
            digits(a) + 1 + digits(b)
        }
    }

    /// Counts the range between pending offset `o` and the next one (or the partition's
    /// `end`, one past the highest started), if any.
    fn add(&mut self, o: i64, end: i64) {
        if end > o + 1 {
            self.ranges += 1;
            self.chars += Self::cost(o + 1, end - 1);
        }
    }

    fn sub(&mut self, o: i64, end: i64) {
        if end > o + 1 {
            self.ranges = self.ranges.saturating_sub(1);
            self.chars = self.chars.saturating_sub(Self::cost(o + 1, end - 1));
        }
    }
}

/// Marks pending offset `o` of `p` done, keeping `len` in step.
fn remove_pending(p: &mut PartitionOffsets, len: &mut MetaLen, o: i64) {
    let Some(next) = p.next else { return };
    if !p.pending.remove(&o) {
        return;
    }
    let after = p.pending.range(o + 1..).next().copied().unwrap_or(next);
    len.sub(o, after);
    // Below the lowest pending offset nothing is encoded: the commit point moves up.
    if let Some(prev) = p.pending.range(..o).next_back().copied() {
        len.sub(prev, o);
        len.add(prev, after);
    }
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

    /// Which of `candidates` (offsets a batch would complete, in the batch's order; `None`
    /// completes nothing) can go in one transaction with every partition's list of
    /// offsets done above its commit point still fitting its commit metadata
    /// ([`MAX_METADATA`]). Without this, what did not fit would run again after a crash.
    /// A candidate is refused only when it would make the list longer than fits: the
    /// lowest pending offset of a partition always goes (it shortens the list), so what
    /// is refused goes in a later batch, once the offsets below it are done. Candidates of
    /// partitions not assigned under their epoch are admitted (the publisher drops them).
    pub fn admit<'a>(
        &self,
        candidates: impl IntoIterator<Item = Option<(&'a TopicPartition, i64, u64)>> + Clone,
    ) -> Vec<bool> {
        // Partitions whose list would not fit with all their candidates done: only they
        // are followed candidate by candidate.
        let mut by_tp: TpMap<&TopicPartition, PartitionOffsets> = TpMap::default();
        for (tp, offset, epoch) in candidates.clone().into_iter().flatten() {
            if let Some(p) = self.parts.get(tp).filter(|p| p.epoch == epoch) {
                by_tp
                    .entry(tp)
                    .or_insert_with(|| p.clone())
                    .pending
                    .remove(&offset);
            }
        }
        let mut tight: TpMap<&TopicPartition, (PartitionOffsets, MetaLen)> = TpMap::default();
        for (tp, after) in by_tp {
            if !fits(MetaLen::of(&after).encoded()) {
                if let Some(p) = self.parts.get(tp) {
                    tight.insert(tp, (p.clone(), MetaLen::of(p)));
                }
            }
        }
        candidates
            .into_iter()
            .map(|c| {
                let Some((tp, offset, epoch)) = c else {
                    return true;
                };
                let Some((p, len)) = tight.get_mut(tp).filter(|(p, _)| p.epoch == epoch) else {
                    return true;
                };
                let mut after = *len;
                let was = p.pending.contains(&offset);
                remove_pending(p, &mut after, offset);
                if fits(after.encoded()) || after.encoded() <= len.encoded() {
                    *len = after;
                    true
                } else {
                    if was {
                        p.pending.insert(offset);
                    }
                    false
                }
            })
            .collect()
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

    /// A partition with offsets `0..n` started and none done.
    fn started(n: i64) -> (OffsetTracker, u64) {
        let mut t = OffsetTracker::new();
        let e = t.assign(tp());
        for o in 0..n {
            t.start(&tp(), o).unwrap();
        }
        (t, e)
    }

    #[test]
    fn a_batch_is_cut_where_the_done_list_would_not_fit_the_commit_metadata() {
        // Every other offset done: each is a range of its own, about 6 bytes.
        let (t, e) = started(100_000);
        let q = tp();
        let candidates: Vec<_> = (0..2_000).map(|i| Some((&q, 50_001 + 2 * i, e))).collect();
        let admitted = t.admit(candidates.iter().copied());
        let n = admitted.iter().filter(|a| **a).count();
        assert!(n > 500 && n < 2_000, "{n} admitted");
        // Admitted first, refused after: in order, the batch is cut at the limit.
        assert!(admitted[..n].iter().all(|a| *a) && admitted[n..].iter().all(|a| !*a));
        // The admitted offsets, done, encode whole: a new owner would skip each of them.
        let done: Vec<_> = candidates[..n]
            .iter()
            .flatten()
            .map(|(q, o, _)| (*q, *o))
            .collect();
        let (_, _, meta) = t
            .transaction_offsets_with(done.iter().copied())
            .pop()
            .unwrap();
        assert!(meta.len() < MAX_METADATA);
        assert_eq!(decode_done_above(&meta).len(), n);
        // A None candidate completes nothing and always goes; so does one that shortens
        // the list (the partition's lowest pending offset), wherever it is in the batch.
        let mut more = candidates.clone();
        more.push(None);
        more.push(Some((&q, 0, e)));
        let admitted = t.admit(more.iter().copied());
        assert!(admitted[admitted.len() - 2] && admitted[admitted.len() - 1]);
    }

    #[test]
    fn what_was_refused_fits_once_the_offsets_below_it_are_done() {
        let (mut t, e) = started(10_000);
        let q = tp();
        let high: Vec<_> = (0..1_000).map(|i| Some((&q, 5_001 + 2 * i, e))).collect();
        let first = t.admit(high.iter().copied());
        for (c, a) in high.iter().zip(&first) {
            if let (Some((_, o, _)), true) = (c, a) {
                t.done(&tp(), *o, e);
            }
        }
        let refused: Vec<_> = high
            .iter()
            .zip(&first)
            .filter(|(_, a)| !**a)
            .map(|(c, _)| *c)
            .collect();
        assert!(!refused.is_empty());
        assert!(t.admit(refused.iter().copied()).iter().all(|a| !*a));
        // The offsets below finish: the commit point moves past the admitted ranges.
        for o in 0..6_000 {
            t.done(&tp(), o, e);
        }
        assert!(t.admit(refused.iter().copied()).iter().all(|a| *a));
    }

    #[test]
    fn candidates_of_another_assignment_do_not_count() {
        let (t, e) = started(100_000);
        let q = tp();
        let stale: Vec<_> = (0..2_000)
            .map(|i| Some((&q, 50_001 + 2 * i, e + 1)))
            .collect();
        assert!(t.admit(stale.iter().copied()).iter().all(|a| *a));
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

        /// The length followed offset by offset is the length of the encoding.
        #[test]
        fn the_followed_length_is_the_encodings(
            start in 0i64..100_000,
            n in 1usize..300,
            order in proptest::collection::vec(any::<proptest::sample::Index>(), 300),
        ) {
            let mut t = OffsetTracker::new();
            t.assign(tp());
            for o in start..start + n as i64 {
                t.start(&tp(), o).unwrap();
            }
            let mut p = t.parts.get(&tp()).unwrap().clone();
            let mut len = MetaLen::of(&p);
            let mut pending: Vec<i64> = (start..start + n as i64).collect();
            for idx in order.iter().take(n) {
                let o = pending.remove(idx.index(pending.len()));
                remove_pending(&mut p, &mut len, o);
                prop_assert_eq!(len.encoded(), encode_done_above(&p).len());
                prop_assert_eq!(len.encoded(), MetaLen::of(&p).encoded());
            }
        }
    }
}
