//! What the task index answers with: the JSON bodies of the query API, shared by the
//! server and the client. Times are RFC 3339 strings in UTC with milliseconds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::codec::{FailureReason, TaskStatus};

/// Milliseconds since the epoch as RFC 3339 (`2026-11-28T15:04:05.123Z`).
pub fn rfc3339(ms: i64) -> String {
    let t = if ms >= 0 {
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.unsigned_abs())
    } else {
        std::time::UNIX_EPOCH
    };
    humantime::format_rfc3339_millis(t).to_string()
}

/// Serde of milliseconds as RFC 3339 strings.
pub mod ms {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Parses an RFC 3339 time to milliseconds since the epoch.
    pub fn parse(s: &str) -> Option<i64> {
        let t = humantime::parse_rfc3339_weak(s).ok()?;
        let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
        i64::try_from(d.as_millis()).ok()
    }

    pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(*v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not an RFC 3339 time")))
    }

    /// The same for optional times (`null` when absent).
    pub mod opt {
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(v: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(ms) => s.serialize_str(&super::super::rfc3339(*ms)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
            match Option::<String>::deserialize(d)? {
                None => Ok(None),
                Some(s) => super::parse(&s).map(Some).ok_or_else(|| {
                    serde::de::Error::custom(format!("`{s}` is not an RFC 3339 time"))
                }),
            }
        }
    }
}

/// Where a task's record sits in its queue topic. Positions order by topic, partition,
/// then offset: of two records of one task, the store keeps the later.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QueuePosition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// The current state of one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskView {
    pub id: String,
    /// Tenant (from the queue topic).
    pub tenant: String,
    /// Function (empty for a record that could not be decoded).
    pub function: String,
    pub status: TaskStatus,
    #[serde(with = "ms")]
    pub submitted_at: i64,
    /// Start of the first attempt.
    #[serde(with = "ms::opt")]
    pub started_at: Option<i64>,
    /// When the task reached its terminal status.
    #[serde(with = "ms::opt")]
    pub finished_at: Option<i64>,
    /// Time of the event that set the current status.
    #[serde(with = "ms")]
    pub updated_at: i64,
    /// Highest attempt number seen (0 before the first attempt).
    pub attempts: i32,
    /// The latest error.
    pub error: Option<String>,
    /// Why it failed, for failed tasks.
    pub reason: Option<FailureReason>,
    /// The scheduler that sent the current status.
    pub scheduler_id: Option<String>,
    /// Where the task record is, when known.
    pub queue: Option<QueuePosition>,
    /// The redrive whose run this is; `null` for a task never redriven.
    #[serde(default)]
    pub redrive_id: Option<String>,
}

/// A page of tasks, newest submitted first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPage {
    pub tasks: Vec<TaskView>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// One status event of a task, as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// The status it announced.
    pub status: TaskStatus,
    /// Attempt it belongs to.
    pub attempt: i32,
    /// When it happened.
    #[serde(with = "ms")]
    pub at: i64,
    /// The error, if any.
    pub error: Option<String>,
    /// The failure reason, if any.
    pub reason: Option<FailureReason>,
    /// The scheduler that sent it.
    pub scheduler_id: String,
    /// The run it belongs to: 0 for the first, 1 for the first redrive, and so on.
    #[serde(default)]
    pub run: u32,
    /// The redrive of that run; `null` for the first run.
    #[serde(default)]
    pub redrive_id: Option<String>,
}

/// One execution attempt, put together from the status events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptView {
    /// The run it belongs to: 0 for the first, 1 for the first redrive, and so on.
    #[serde(default)]
    pub run: u32,
    /// The redrive of that run; `null` for the first run.
    #[serde(default)]
    pub redrive_id: Option<String>,
    /// Attempt number within its run, from 1.
    pub attempt: i32,
    /// When it started (its `running` event).
    #[serde(with = "ms::opt")]
    pub started_at: Option<i64>,
    /// When it ended (its `retrying` or terminal event).
    #[serde(with = "ms::opt")]
    pub finished_at: Option<i64>,
    /// How it ended: `retrying`, `succeeded`, `failed`…; `null` while it runs.
    pub result: Option<TaskStatus>,
    pub error: Option<String>,
    /// The scheduler that ran it.
    pub scheduler_id: Option<String>,
}

/// One task with its whole history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDetail {
    /// The current state.
    #[serde(flatten)]
    pub task: TaskView,
    /// Every attempt of every run, oldest run first.
    pub attempt_history: Vec<AttemptView>,
    /// Every status event, run by run, each run in lifecycle order.
    pub events: Vec<HistoryEvent>,
}

impl TaskDetail {
    /// Builds the per-attempt view from events sorted by run, then in lifecycle order.
    pub fn new(task: TaskView, events: Vec<HistoryEvent>) -> Self {
        let mut attempts: BTreeMap<(u32, i32), AttemptView> = BTreeMap::new();
        for e in &events {
            if e.attempt < 1 {
                continue;
            }
            let a = attempts
                .entry((e.run, e.attempt))
                .or_insert_with(|| AttemptView {
                    run: e.run,
                    redrive_id: e.redrive_id.clone(),
                    attempt: e.attempt,
                    started_at: None,
                    finished_at: None,
                    result: None,
                    error: None,
                    scheduler_id: None,
                });
            match e.status {
                TaskStatus::Running => {
                    a.started_at = Some(a.started_at.map_or(e.at, |s| s.min(e.at)));
                }
                TaskStatus::Queued => {}
                other => {
                    a.finished_at = Some(e.at);
                    a.result = Some(other);
                }
            }
            if e.error.is_some() {
                a.error = e.error.clone();
            }
            a.scheduler_id = Some(e.scheduler_id.clone());
        }
        Self {
            task,
            attempt_history: attempts.into_values().collect(),
            events,
        }
    }
}

/// A chunk of captured output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Position in the task's log; pass as `after` to read on.
    pub seq: i64,
    pub attempt: i32,
    /// When it was captured.
    #[serde(with = "ms")]
    pub at: i64,
    /// `stdout`, `stderr` or `http_response`.
    pub stream: String,
    /// The output as text; bytes that are not UTF-8 are replaced.
    pub data: String,
    /// Output beyond this chunk was dropped.
    pub truncated: bool,
    /// The redrive of the run it belongs to; `null` for the first run.
    #[serde(default)]
    pub redrive_id: Option<String>,
}

/// A task's captured output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLogs {
    pub task_id: String,
    pub tenant: String,
    /// The chunks, oldest first.
    pub logs: Vec<LogEntry>,
    /// Pass as `after` to read more; `null` when there is no more now.
    pub next_after: Option<i64>,
}

/// Task counts of one minute of one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinuteCounts {
    /// Start of the minute.
    #[serde(with = "ms")]
    pub minute: i64,
    /// Tasks submitted in that minute.
    pub submitted: u64,
    /// Tasks that succeeded or failed in that minute.
    pub completed: u64,
    /// Tasks that failed in that minute.
    pub failed: u64,
    /// Tasks waiting (submitted, not started or finished) at the end of the minute.
    pub queued: u64,
    /// Tasks started and not finished (running or waiting to retry) at the end of the
    /// minute.
    pub running: u64,
}

/// Backlog of one partition of a queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionBacklog {
    pub partition: i32,
    /// Offset of the next record to be written.
    pub high_watermark: i64,
    /// Offset of the first record still in the topic.
    pub low_watermark: i64,
    /// The scheduler group's last stable committed offset (one pending in an open
    /// transaction counts once it commits); `null` when it has committed none.
    pub committed: Option<i64>,
    /// Records not yet committed by the schedulers (`high_watermark − committed`, or
    /// `high_watermark − low_watermark` without a commit).
    pub backlog: i64,
    /// Tasks of this partition running now, according to the index.
    pub running: u64,
}

/// What a queue topic is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueKind {
    /// A tenant's queue, shared by its functions.
    Shared,
    /// An exclusive function's own queue.
    Exclusive,
    /// Where a function on the shared queue spills its backlog.
    Overflow,
}

/// One queue topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueView {
    pub topic: String,
    /// Tenant that owns it.
    pub tenant: String,
    /// The function of an exclusive or overflow queue; `null` for a tenant's shared queue.
    pub function: Option<String>,
    /// What the queue is for.
    pub kind: QueueKind,
    /// Sum of the partitions' backlogs.
    pub backlog: i64,
    /// Tasks running now.
    pub running: u64,
    /// Per partition.
    pub partitions: Vec<PartitionBacklog>,
    /// Per minute, oldest first; the last minute is the current, partial one.
    pub per_minute: Vec<MinuteCounts>,
}

/// The answer of `GET /v1/queues`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuesOverview {
    /// When it was computed.
    #[serde(with = "ms")]
    pub generated_at: i64,
    /// The scheduler group whose offsets the backlogs are measured against.
    pub group_id: String,
    pub queues: Vec<QueueView>,
    /// The schedulers that started tasks in the window, most recent first, with the
    /// queue partitions they took them from (as the tasks' events tell: a scheduler that
    /// started nothing in the window is not listed).
    #[serde(default)]
    pub schedulers: Vec<SchedulerSeen>,
}

/// A scheduler seen starting tasks, in [`QueuesOverview`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulerSeen {
    /// Its `scheduler.id`.
    pub scheduler_id: String,
    /// Tasks it started in the window (each task counted once, by its latest start).
    pub tasks_started: u64,
    /// Its latest task start.
    #[serde(with = "ms")]
    pub last_started_at: i64,
    /// The queue partitions those tasks were read from.
    pub partitions: Vec<QueuePartition>,
}

/// A queue topic's partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuePartition {
    /// Queue topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
}
