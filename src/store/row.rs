//! The merge of a task's row: what the store knows of a task after the records read so
//! far from the queue, status and log topics, whatever order they arrive in.
//!
//! Pure: the [writer](super::Writer) loads the rows and retired positions a batch
//! touches, [`merge`] decides, the writer stores what it decided. No SQLite, no clock.

use std::collections::HashMap;

use crate::codec::{FailureReason, StatusEvent, TaskStatus};
use crate::types::TaskKey;

use super::columns::Rank;
use super::model::{QueuePosition, TaskView};
use super::{ApplyStats, Ingest, QueuedTask, Run, status_key};

/// The lifecycle rank of a status event: a later stage of the lifecycle always has a
/// higher rank, whatever the order the events are read in.
///
/// - `queued` ranks lowest;
/// - `running` and `retrying` rank by attempt, `running` before `retrying` of the same
///   attempt, then by event time;
/// - a final status (`succeeded`, `failed`, `stopped`, `expired`) outranks everything
///   else; between two final statuses (a task run twice) the later event wins.
pub fn status_rank(status: TaskStatus, attempt: i32, at: i64) -> [i64; 4] {
    match status {
        TaskStatus::Queued => [0, 0, 0, at],
        TaskStatus::Running => [1, i64::from(attempt), 0, at],
        TaskStatus::Retrying => [1, i64::from(attempt), 1, at],
        s => [2, at, i64::from(attempt), final_code(s)],
    }
}

/// The last tie-break between final statuses of the same time and attempt. Stored in the
/// rank columns: these numbers must not change.
fn final_code(s: TaskStatus) -> i64 {
    match s {
        TaskStatus::Queued => 0,
        TaskStatus::Running => 1,
        TaskStatus::Retrying => 2,
        TaskStatus::Succeeded => 3,
        TaskStatus::Failed => 4,
        TaskStatus::Stopped => 5,
        TaskStatus::Expired => 6,
    }
}

/// The current state of a task, as stored in its row of `tasks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Row {
    pub function: String,
    pub status: TaskStatus,
    /// Rank of the event that set `status`; only a higher one replaces it.
    pub rank: Rank,
    pub status_at: i64,
    pub submitted_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub attempts: i32,
    pub error: Option<String>,
    /// Rank of the event that set `error`.
    pub error_rank: Option<Rank>,
    pub reason: Option<FailureReason>,
    pub scheduler_id: Option<String>,
    /// Whether the task record itself has been read; until then the status events stand
    /// in for it.
    pub queued_seen: bool,
    pub queue: Option<QueuePosition>,
    /// The run the row describes (see [`Run`]): 0 for the first, a redrive's epoch after.
    pub epoch: i64,
    /// The redrive of that run.
    pub redrive_id: Option<String>,
}

/// Where the status event says the task record sits.
fn source_position(ev: &StatusEvent) -> QueuePosition {
    QueuePosition {
        topic: ev.source.topic.clone(),
        partition: ev.source.partition,
        offset: ev.source.offset,
    }
}

impl Row {
    fn empty(function: &str, submitted_at: i64, run: &Run) -> Self {
        Row {
            function: function.to_string(),
            status: TaskStatus::Queued,
            rank: [-1, 0, 0, 0],
            status_at: submitted_at,
            submitted_at,
            started_at: None,
            finished_at: None,
            attempts: 0,
            error: None,
            error_rank: None,
            reason: None,
            scheduler_id: None,
            queued_seen: false,
            queue: None,
            epoch: run.epoch,
            redrive_id: run.redrive_id.clone(),
        }
    }

    /// The row of a stored task: its view, the ranks of its status and error, and
    /// whether its task record was read.
    pub fn from_view(
        v: TaskView,
        rank: Rank,
        error_rank: Option<Rank>,
        queued_seen: bool,
        epoch: i64,
    ) -> Self {
        Row {
            function: v.function,
            status: v.status,
            rank,
            status_at: v.updated_at,
            submitted_at: v.submitted_at,
            started_at: v.started_at,
            finished_at: v.finished_at,
            attempts: v.attempts,
            error: v.error,
            error_rank,
            reason: v.reason,
            scheduler_id: v.scheduler_id,
            queued_seen,
            queue: v.queue,
            epoch,
            redrive_id: v.redrive_id,
        }
    }

    fn from_queued(q: &QueuedTask) -> Self {
        Row {
            rank: status_rank(TaskStatus::Queued, 0, q.submitted_at),
            queued_seen: true,
            queue: Some(q.position()),
            ..Row::empty(&q.function, q.submitted_at, &q.run)
        }
    }

    fn from_status(ev: &StatusEvent, run: &Run) -> Self {
        let mut row = Row {
            queue: Some(source_position(ev)),
            ..Row::empty(&ev.function, ev.submitted_at, run)
        };
        row.apply_status(ev, run);
        row
    }

    /// Whether a record of `run` speaks for the run this row describes. A later run
    /// starts afresh: the row then describes that run only (its status, times, attempts
    /// and error), while the earlier runs' events stay in the history.
    fn enter_run(&mut self, run: &Run) -> bool {
        if run.epoch < self.epoch {
            return false;
        }
        if run.epoch > self.epoch {
            self.epoch = run.epoch;
            self.redrive_id = run.redrive_id.clone();
            self.status = TaskStatus::Queued;
            self.rank = [-1, 0, 0, 0];
            self.started_at = None;
            self.finished_at = None;
            self.attempts = 0;
            self.error = None;
            self.error_rank = None;
            self.reason = None;
            self.scheduler_id = None;
        }
        true
    }

    /// The queue record is the authority on submission time, function and position; of
    /// two records with the same id, the later submission wins.
    fn apply_queued(&mut self, q: &QueuedTask) {
        if self.enter_run(&q.run) {
            let rank = status_rank(TaskStatus::Queued, 0, q.submitted_at);
            if rank > self.rank {
                self.rank = rank;
                self.status = TaskStatus::Queued;
                self.status_at = q.submitted_at;
            }
        }
        let pos = q.position();
        let newer = !self.queued_seen
            || (q.submitted_at, &pos) > (self.submitted_at, self.queue.as_ref().unwrap_or(&pos));
        if newer {
            self.function = q.function.clone();
            self.submitted_at = q.submitted_at;
            self.queue = Some(pos);
            self.queued_seen = true;
        }
    }

    fn apply_status(&mut self, ev: &StatusEvent, run: &Run) {
        if !self.enter_run(run) {
            // An earlier run's event: kept in the history only.
            return;
        }
        let rank = status_rank(ev.status, ev.attempt, ev.at);
        if !self.queued_seen {
            self.submitted_at = ev.submitted_at;
            if self.function.is_empty() {
                self.function = ev.function.clone();
            }
            if self.queue.is_none() {
                self.queue = Some(source_position(ev));
            }
        }
        if rank > self.rank {
            self.rank = rank;
            self.status = ev.status;
            self.status_at = ev.at;
            self.reason = ev.reason;
            self.scheduler_id = Some(ev.scheduler_id.clone());
            self.finished_at = ev.status.is_terminal().then_some(ev.at);
        }
        if ev.status == TaskStatus::Running {
            self.started_at = Some(self.started_at.map_or(ev.at, |s| s.min(ev.at)));
        }
        self.attempts = self.attempts.max(ev.attempt);
        if let Some(e) = &ev.error {
            if self.error_rank.is_none_or(|r| rank >= r) {
                self.error = Some(e.clone());
                self.error_rank = Some(rank);
            }
        }
    }
}

/// What the store holds of the tasks a batch touches, before the batch.
#[derive(Debug, Default)]
pub(super) struct Stored {
    /// The rows of the tasks that have one.
    pub rows: HashMap<TaskKey, Row>,
    /// Tasks retention deleted before their task record was read, by the position of that
    /// record; only for tasks without a row whose first record in the batch is a task
    /// record.
    pub retired: HashMap<TaskKey, QueuePosition>,
}

/// What a batch changes.
#[derive(Debug, Default)]
pub(super) struct Merged {
    /// The new rows of the tasks the batch changed.
    pub changed: HashMap<TaskKey, Row>,
    /// Retired tasks whose task record the batch brought: forget them.
    pub unretire: Vec<TaskKey>,
    pub stats: ApplyStats,
}

/// Merges a batch, in order, into the rows the store holds. Status events and logs are
/// also appended as they are (history and logs tables); that is the writer's part.
pub(super) fn merge(batch: &[Ingest], stored: Stored) -> Merged {
    let Stored {
        rows: mut before,
        mut retired,
    } = stored;
    let mut out = Merged::default();
    for item in batch {
        match item {
            Ingest::Queued(q) => {
                let key = q.key();
                let current = out.changed.remove(&key).or_else(|| before.remove(&key));
                let row = match current {
                    Some(mut r) => {
                        r.apply_queued(q);
                        r
                    }
                    None if retired.get(&key) == Some(&q.position()) => {
                        // The record of a task already deleted by retention, read late:
                        // not a new task.
                        retired.remove(&key);
                        out.unretire.push(key);
                        out.stats.skipped += 1;
                        continue;
                    }
                    None => Row::from_queued(q),
                };
                out.changed.insert(key, row);
                out.stats.tasks += 1;
            }
            Ingest::Status(ev, run) => {
                let key = status_key(ev);
                let current = out.changed.remove(&key).or_else(|| before.remove(&key));
                let row = match current {
                    Some(mut r) => {
                        r.apply_status(ev, run);
                        r
                    }
                    None => Row::from_status(ev, run),
                };
                out.changed.insert(key, row);
                out.stats.statuses += 1;
            }
            Ingest::Log { .. } => out.stats.logs += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{ev, queued};

    fn merged(batch: &[Ingest]) -> Merged {
        merge(batch, Stored::default())
    }

    fn row(batch: &[Ingest], id: &str) -> Row {
        merged(batch).changed[&TaskKey::new("acme", id)].clone()
    }

    fn status(s: TaskStatus, attempt: i32, at: i64) -> Ingest {
        Ingest::Status(ev("t", s, attempt, at), Run::default())
    }

    /// An event of the run of redrive `r1`, submitted at 1000.
    fn redriven(s: TaskStatus, attempt: i32, at: i64) -> Ingest {
        let mut e = ev("t", s, attempt, at);
        e.submitted_at = 1000;
        Ingest::Status(e, Run::redrive("r1", 1000))
    }

    fn redrive_record() -> Ingest {
        let mut q = queued("t", 1000);
        q.offset = 9;
        q.run = Run::redrive("r1", 1000);
        Ingest::Queued(q)
    }

    #[test]
    fn a_redriven_run_replaces_the_earlier_one_in_every_order() {
        let first = [
            Ingest::Queued(queued("t", 100)),
            status(TaskStatus::Running, 1, 110),
            status(TaskStatus::Failed, 1, 140),
        ];
        let second = [
            redrive_record(),
            redriven(TaskStatus::Running, 1, 1010),
            redriven(TaskStatus::Retrying, 1, 1020),
            redriven(TaskStatus::Running, 2, 1030),
            redriven(TaskStatus::Succeeded, 2, 1040),
        ];
        let items: Vec<Ingest> = first.iter().chain(second.iter()).cloned().collect();
        let expected = row(&items, "t");
        assert_eq!(expected.status, TaskStatus::Succeeded);
        assert_eq!(
            (expected.epoch, expected.redrive_id.as_deref()),
            (1000, Some("r1"))
        );
        assert_eq!(
            (expected.started_at, expected.finished_at),
            (Some(1010), Some(1040))
        );
        assert_eq!(expected.attempts, 2);
        assert_eq!(expected.error.as_deref(), Some("error of attempt 1"));
        assert_eq!(expected.reason, None, "the first run's reason is gone");
        assert_eq!(expected.submitted_at, 1000);
        assert_eq!(expected.queue.as_ref().map(|q| q.offset), Some(9));
        for k in 0..items.len() {
            let mut order = items.clone();
            order.rotate_left(k);
            assert_eq!(row(&order, "t"), expected, "rotated by {k}");
            order.reverse();
            assert_eq!(row(&order, "t"), expected, "rotated by {k}, reversed");
        }
    }

    #[test]
    fn a_redriven_task_is_queued_until_its_run_starts() {
        let r = row(
            &[
                Ingest::Queued(queued("t", 100)),
                status(TaskStatus::Failed, 1, 140),
                redrive_record(),
            ],
            "t",
        );
        assert_eq!(r.status, TaskStatus::Queued);
        assert_eq!(
            (r.finished_at, r.attempts, r.error.as_deref()),
            (None, 0, None)
        );
        // A late event of the first run does not bring its status back.
        let late = row(
            &[
                Ingest::Queued(queued("t", 100)),
                redrive_record(),
                status(TaskStatus::Failed, 1, 140),
            ],
            "t",
        );
        assert_eq!(late, r);
    }

    #[test]
    fn a_lifecycle_merges_to_its_last_stage() {
        let r = row(
            &[
                Ingest::Queued(queued("t", 100)),
                status(TaskStatus::Running, 1, 110),
                status(TaskStatus::Retrying, 1, 120),
                status(TaskStatus::Running, 2, 130),
                status(TaskStatus::Succeeded, 2, 140),
            ],
            "t",
        );
        assert_eq!(r.status, TaskStatus::Succeeded);
        assert_eq!(r.rank, status_rank(TaskStatus::Succeeded, 2, 140));
        assert_eq!((r.status_at, r.submitted_at), (140, 100));
        assert_eq!((r.started_at, r.finished_at), (Some(110), Some(140)));
        assert_eq!(r.attempts, 2);
        assert_eq!(r.error.as_deref(), Some("error of attempt 1"));
        assert!(r.queued_seen);
    }

    #[test]
    fn events_merge_to_the_same_row_in_every_order() {
        let items = [
            Ingest::Queued(queued("t", 100)),
            status(TaskStatus::Running, 1, 110),
            status(TaskStatus::Retrying, 1, 120),
            status(TaskStatus::Running, 2, 130),
            status(TaskStatus::Failed, 2, 140),
        ];
        let expected = row(&items, "t");
        for k in 0..items.len() {
            let mut order = items.to_vec();
            order.rotate_left(k);
            assert_eq!(row(&order, "t"), expected, "rotated by {k}");
            order.reverse();
            assert_eq!(row(&order, "t"), expected, "rotated by {k}, reversed");
        }
        assert_eq!(expected.error.as_deref(), Some("error of attempt 2"));
        assert_eq!(expected.reason, Some(FailureReason::Executor));
    }

    #[test]
    fn status_events_stand_in_for_the_task_record_until_it_is_read() {
        let before = row(&[status(TaskStatus::Running, 1, 110)], "t");
        assert!(!before.queued_seen);
        assert_eq!(before.submitted_at, 100, "the event's submission time");
        assert_eq!(before.queue.as_ref().map(|q| q.offset), Some(7));
        let mut late = queued("t", 90);
        late.offset = 3;
        let after = row(
            &[status(TaskStatus::Running, 1, 110), Ingest::Queued(late)],
            "t",
        );
        assert_eq!(after.status, TaskStatus::Running, "no step back to queued");
        assert_eq!(after.submitted_at, 90, "the task record's submission time");
        assert_eq!(after.queue.as_ref().map(|q| q.offset), Some(3));
    }

    #[test]
    fn of_two_task_records_with_one_id_the_later_submission_wins() {
        let mut other = queued("t", 200);
        other.function = "g".into();
        for batch in [
            [
                Ingest::Queued(queued("t", 100)),
                Ingest::Queued(other.clone()),
            ],
            [
                Ingest::Queued(other.clone()),
                Ingest::Queued(queued("t", 100)),
            ],
        ] {
            let r = row(&batch, "t");
            assert_eq!((r.function.as_str(), r.submitted_at), ("g", 200));
        }
    }

    #[test]
    fn an_error_is_replaced_only_by_one_of_a_later_stage() {
        let r = row(
            &[
                status(TaskStatus::Retrying, 2, 120),
                status(TaskStatus::Retrying, 1, 150),
            ],
            "t",
        );
        assert_eq!(r.error.as_deref(), Some("error of attempt 2"));
        assert_eq!(
            r.error_rank,
            Some(status_rank(TaskStatus::Retrying, 2, 120))
        );
    }

    #[test]
    fn the_late_task_record_of_a_retired_task_is_skipped_once() {
        let key = TaskKey::new("acme", "t");
        let q = queued("t", 100);
        let stored = || Stored {
            rows: HashMap::new(),
            retired: HashMap::from([(key.clone(), q.position())]),
        };
        let m = merge(
            &[Ingest::Queued(q.clone()), Ingest::Queued(q.clone())],
            stored(),
        );
        assert_eq!(m.unretire, std::slice::from_ref(&key));
        assert_eq!((m.stats.skipped, m.stats.tasks), (1, 1));
        assert!(
            m.changed.contains_key(&key),
            "a second record is a new task"
        );

        let mut elsewhere = q.clone();
        elsewhere.offset += 1;
        let m = merge(&[Ingest::Queued(elsewhere)], stored());
        assert!(m.unretire.is_empty());
        assert_eq!((m.stats.skipped, m.stats.tasks), (0, 1));
    }

    #[test]
    fn stored_rows_are_merged_and_untouched_ones_left_out() {
        let stored = Stored {
            rows: HashMap::from([
                (
                    TaskKey::new("acme", "t"),
                    row(&[Ingest::Queued(queued("t", 100))], "t"),
                ),
                (
                    TaskKey::new("acme", "u"),
                    row(&[Ingest::Queued(queued("u", 100))], "u"),
                ),
            ]),
            retired: HashMap::new(),
        };
        let m = merge(&[status(TaskStatus::Running, 1, 110)], stored);
        assert_eq!(m.changed.len(), 1);
        let r = &m.changed[&TaskKey::new("acme", "t")];
        assert_eq!((r.status, r.submitted_at), (TaskStatus::Running, 100));
        assert_eq!(m.stats.statuses, 1);
    }

    #[test]
    fn final_statuses_outrank_the_rest_and_the_later_one_wins() {
        use TaskStatus::*;
        for (lower, higher) in [
            ((Retrying, 9, 900), (Expired, 0, 1)),
            ((Stopped, 1, 5), (Succeeded, 1, 6)),
            ((Succeeded, 1, 5), (Stopped, 1, 5)),
        ] {
            assert!(
                status_rank(lower.0, lower.1, lower.2) < status_rank(higher.0, higher.1, higher.2),
                "{lower:?} < {higher:?}"
            );
        }
    }
}
