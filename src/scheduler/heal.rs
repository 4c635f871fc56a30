//! Ending the parts of the publisher's transactions that the broker left open on the
//! group's offsets partition.
//!
//! Kafka's transaction coordinator skips the commit or abort marker of a partition that
//! has no leader (`TransactionMarkerChannelManager` takes it for deleted). A single broker
//! restarting is fenced by its own controller for a moment while it starts (its previous
//! registration's session runs out), with every partition leaderless: a transaction that
//! was completing when it stopped can then be completed with no marker on some of its
//! partitions. Such a part stays open until the same producer writes its next marker
//! there (RELIABILITY.md).
//!
//! On the group's offsets partition that part's offsets stay *pending*, and librdkafka's
//! consumer asks for its committed offsets with `require_stable` (`read_committed`) and,
//! while an offset is pending, asks again without end and without a word. A scheduler that
//! gets its partitions again after the restart then fetches nothing, so its producers —
//! the only ones whose next marker ends that part — have nothing to commit.
//!
//! So after a fault, once the publisher has been idle for [`IDLE_BEFORE`], each lane
//! commits one transaction that carries only the group's offsets of the partitions
//! assigned to this scheduler, at the values in force: for each, the later of what this
//! process last committed there and what the group has committed (read without
//! `require_stable`). Its marker ends the lane's open part, and the offsets it commits
//! move nothing back: a part the coordinator committed holds this process's last commit
//! (the same value), and a part it aborted is superseded by the values before it.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use crate::types::{TopicPartition, TpMap};

/// The offsets (with their commit metadata) committed for partitions of the group.
pub type Committed = TpMap<TopicPartition, (i64, String)>;

/// Reads what the group has committed for partitions, without `require_stable` (so a
/// pending transactional offset does not hold the answer back); the error says why not.
pub type GroupOffsets = Box<dyn Fn(&[TopicPartition]) -> Result<Committed, String> + Send>;

/// The publisher's part: what it committed, and when to heal.
pub struct Healer {
    /// Reads the group's committed offsets.
    pub group_offsets: GroupOffsets,
    /// The offsets of the publisher's last committed transaction, per partition: those of
    /// partitions since revoked are kept (a later assignment may need them).
    pub committed: RefCell<Committed>,
    /// When to heal.
    pub due: Due,
    /// When the publisher's last batch ended.
    pub last_unit: Instant,
}

impl Healer {
    /// A healer reading the group's offsets with `group_offsets`.
    pub fn new(group_offsets: GroupOffsets) -> Self {
        Self {
            group_offsets,
            committed: RefCell::default(),
            due: Due::default(),
            last_unit: Instant::now(),
        }
    }

    /// A transaction committed `offsets`.
    pub fn committed(&self, offsets: impl IntoIterator<Item = (TopicPartition, i64, String)>) {
        self.committed
            .borrow_mut()
            .extend(offsets.into_iter().map(|(tp, o, m)| (tp, (o, m))));
    }
}

/// How long the publisher is idle after a fault before its lanes end their open parts.
pub const IDLE_BEFORE: Duration = Duration::from_secs(5);
/// How long after a failed attempt the next one is made.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// The offsets to commit for the `assigned` partitions: for each, the later of `ours`
/// (this process's last commit) and `group` (what the group has committed), with that
/// commit's metadata; partitions known to neither are left out.
pub fn offsets(
    assigned: &[TopicPartition],
    ours: &Committed,
    group: &Committed,
) -> Vec<(TopicPartition, i64, String)> {
    let mut out: Vec<_> = assigned
        .iter()
        .filter_map(|tp| {
            // On equal offsets ours wins: the last of equals is the max.
            let later = [group.get(tp), ours.get(tp)]
                .into_iter()
                .flatten()
                .max_by_key(|(offset, _)| *offset)?;
            Some((tp.clone(), later.0, later.1.clone()))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Whether a transaction whose commit ended without an answer (the producer failed or
/// was fenced while committing) did commit, judged once its fate is settled (a new
/// producer with its transactional id is ready) from what the group has committed since.
/// `ours` are the offsets it carried, `before` those in force without it. Only a yes is
/// certain: the group holds exactly its offsets and metadata on every partition, and the
/// transaction changed at least one of them. Anything else (equal to before, a partition
/// missing, the group unread) is a no, and the batch is replayed: a duplicate at worst,
/// never a loss.
pub fn committed_by(
    ours: &[(TopicPartition, i64, String)],
    before: &[(TopicPartition, i64, String)],
    group: &Committed,
) -> bool {
    let changed = ours.iter().any(|(tp, o, m)| {
        before
            .iter()
            .find(|(b, _, _)| b == tp)
            .is_none_or(|(_, bo, bm)| (bo, bm) != (o, m))
    });
    changed
        && ours
            .iter()
            .all(|(tp, o, m)| group.get(tp).is_some_and(|(go, gm)| go == o && gm == m))
}

/// When the lanes' open parts are to be ended: after a fault, once idle long enough.
#[derive(Debug, Default)]
pub struct Due {
    /// Since when a fault has not been followed by a heal (`None`: nothing to heal).
    fault: Option<Instant>,
    /// No attempt before this (after a failed one).
    not_before: Option<Instant>,
}

impl Due {
    /// A Kafka call failed at `now`: the broker may have left parts open.
    pub fn fault(&mut self, now: Instant) {
        self.fault.get_or_insert(now);
    }

    /// Whether to heal now, the last batch having ended at `last_unit`.
    pub fn is_due(&self, now: Instant, last_unit: Instant) -> bool {
        self.fault.is_some()
            && now.saturating_duration_since(last_unit) >= IDLE_BEFORE
            && self.not_before.is_none_or(|t| now >= t)
    }

    /// The heal worked (or there was nothing to heal): no more until the next fault.
    pub fn healed(&mut self) {
        self.fault = None;
        self.not_before = None;
    }

    /// The attempt at `now` failed: try again after [`RETRY_AFTER`].
    pub fn failed(&mut self, now: Instant) {
        self.not_before = Some(now + RETRY_AFTER);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("q", p)
    }

    fn list(entries: &[(i32, i64, &str)]) -> Vec<(TopicPartition, i64, String)> {
        entries
            .iter()
            .map(|(p, o, m)| (tp(*p), *o, m.to_string()))
            .collect()
    }

    #[test]
    fn a_commit_without_an_answer_counts_as_committed_only_when_the_group_holds_it() {
        let before = list(&[(0, 10, ""), (1, 5, "7")]);
        let ours = list(&[(0, 20, ""), (1, 5, "7")]);
        // The group holds exactly what the transaction carried: it committed.
        assert!(committed_by(
            &ours,
            &before,
            &committed(&[(0, 20, ""), (1, 5, "7")])
        ));
        // It holds what was in force before: aborted.
        assert!(!committed_by(
            &ours,
            &before,
            &committed(&[(0, 10, ""), (1, 5, "7")])
        ));
        // A partition unread: not certain.
        assert!(!committed_by(&ours, &before, &committed(&[(0, 20, "")])));
        // Only the metadata (tasks done above the point) moved: it tells too.
        let ours_meta = list(&[(0, 10, "12,13"), (1, 5, "7")]);
        assert!(committed_by(
            &ours_meta,
            &before,
            &committed(&[(0, 10, "12,13"), (1, 5, "7")])
        ));
        assert!(!committed_by(
            &ours_meta,
            &before,
            &committed(&[(0, 10, ""), (1, 5, "7")])
        ));
    }

    #[test]
    fn a_transaction_that_changed_no_offset_is_never_taken_for_committed() {
        // Its offsets equal those before it: the group cannot tell, so the batch is
        // replayed (a duplicate at worst, never a loss).
        let before = list(&[(0, 10, "")]);
        assert!(!committed_by(&before, &before, &committed(&[(0, 10, "")])));
        assert!(!committed_by(&[], &before, &committed(&[(0, 10, "")])));
    }

    fn committed(entries: &[(i32, i64, &str)]) -> Committed {
        entries
            .iter()
            .map(|(p, o, m)| (tp(*p), (*o, m.to_string())))
            .collect()
    }

    #[test]
    fn each_assigned_partition_gets_the_later_commit_with_its_metadata() {
        let ours = committed(&[
            (0, 120, "ours0"),
            (1, 40, "ours1"),
            (3, 7, "ours3"),
            (5, 30, "ours5"),
        ]);
        let group = committed(&[
            (0, 100, "group0"),
            (1, 55, "group1"),
            (2, 9, "group2"),
            (5, 30, "group5"),
        ]);
        let assigned = [tp(0), tp(1), tp(2), tp(4), tp(5)];
        assert_eq!(
            offsets(&assigned, &ours, &group),
            vec![
                (tp(0), 120, "ours0".to_string()),
                (tp(1), 55, "group1".to_string()),
                (tp(2), 9, "group2".to_string()),
                (tp(5), 30, "ours5".to_string()),
            ],
            "partition 3 is not assigned, partition 4 was never committed; on equal offsets \
             this process's last commit (its metadata) is kept"
        );
    }

    #[test]
    fn nothing_to_commit_without_assigned_partitions_or_commits() {
        let ours = committed(&[(0, 1, "")]);
        assert!(offsets(&[], &ours, &Committed::default()).is_empty());
        assert!(offsets(&[tp(1)], &ours, &Committed::default()).is_empty());
    }

    #[test]
    fn due_after_a_fault_once_idle_and_not_again_until_the_next_fault() {
        let t0 = Instant::now();
        let mut due = Due::default();
        assert!(
            !due.is_due(t0 + Duration::from_secs(60), t0),
            "no fault yet"
        );
        due.fault(t0);
        assert!(
            !due.is_due(t0 + Duration::from_secs(4), t0),
            "not idle long enough"
        );
        assert!(due.is_due(t0 + IDLE_BEFORE, t0));
        assert!(
            !due.is_due(t0 + Duration::from_secs(10), t0 + Duration::from_secs(6)),
            "a unit arrived since"
        );
        due.healed();
        assert!(!due.is_due(t0 + Duration::from_secs(60), t0));
    }

    #[test]
    fn a_failed_attempt_waits_before_the_next() {
        let t0 = Instant::now();
        let mut due = Due::default();
        due.fault(t0);
        let at = t0 + IDLE_BEFORE;
        assert!(due.is_due(at, t0));
        due.failed(at);
        assert!(!due.is_due(at + Duration::from_secs(29), t0));
        assert!(due.is_due(at + RETRY_AFTER, t0));
        // A later fault keeps the first one's time.
        due.fault(at + Duration::from_secs(1));
        assert!(due.is_due(at + RETRY_AFTER, t0));
    }
}
