//! The task index: an embedded SQLite store that holds the current state of every task,
//! every status event it went through and its captured output, fed by the
//! [`indexer`] and read by the query API.
//!
//! The store is a view of Kafka. It also keeps the offsets it has consumed, written in the
//! same transaction as the rows, so after a restart it continues exactly where it stopped;
//! deleted, it is rebuilt from the topics. Statuses never go backwards, whatever order the
//! records of the queue, status and log topics arrive in: each status has a lifecycle
//! rank, and the highest rank wins (see [`status_rank`]).
//!
//! [`Writer`] is used by one thread only (the indexer's). [`Reader`] is shared by the
//! API's request handlers; its calls block, so async code runs them with
//! `spawn_blocking`.

pub mod indexer;
pub mod model;
pub mod query;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::codec::{FailureReason, LogStream, StatusEvent, TaskLog, TaskStatus};
use model::{HistoryEvent, LogEntry, MinuteCounts, QueuePosition, TaskDetail, TaskPage, TaskView};
use query::TaskFilter;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be opened or set up.
    #[error("cannot open the task store {path}: {source}")]
    Open {
        /// The file.
        path: String,
        /// The error.
        source: rusqlite::Error,
    },
    /// The file was written by a newer Tidewater.
    #[error(
        "the task store {path} has schema version {found}, newer than this build's {expected}; use a newer tidewater or delete the file to rebuild it"
    )]
    Version {
        /// The file.
        path: String,
        /// Its version.
        found: i64,
        /// Ours.
        expected: i64,
    },
    /// A statement failed.
    #[error("task store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A row holds a value this build does not know (written by another version).
    #[error("task store: unexpected {what} `{value}` in a stored row")]
    Corrupt {
        /// Which column.
        what: &'static str,
        /// The value.
        value: String,
    },
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Version of the table layout below; bumped on every incompatible change.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS tasks (
    tenant          TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    function        TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    status_rank     BLOB    NOT NULL,
    status_at       INTEGER NOT NULL,
    submitted_at    INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER,
    attempts        INTEGER NOT NULL,
    error           TEXT,
    error_rank      BLOB,
    reason          TEXT,
    scheduler_id    TEXT,
    queued_seen     INTEGER NOT NULL,
    queue_topic     TEXT,
    queue_partition INTEGER,
    queue_offset    INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS tasks_id ON tasks (id, tenant);
CREATE INDEX IF NOT EXISTS tasks_submitted ON tasks (submitted_at, id, tenant);
CREATE INDEX IF NOT EXISTS tasks_tenant_submitted ON tasks (tenant, submitted_at, id);
CREATE INDEX IF NOT EXISTS tasks_tenant_status ON tasks (tenant, status, submitted_at, id);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status, submitted_at, id);
CREATE INDEX IF NOT EXISTS tasks_tenant_function ON tasks (tenant, function, submitted_at, id);
CREATE INDEX IF NOT EXISTS tasks_started ON tasks (started_at) WHERE started_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS history (
    seq          INTEGER PRIMARY KEY,
    tenant       TEXT    NOT NULL,
    task_id      TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    rank         BLOB    NOT NULL,
    attempt      INTEGER NOT NULL,
    at           INTEGER NOT NULL,
    error        TEXT,
    reason       TEXT,
    scheduler_id TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS history_task ON history (task_id, tenant);

CREATE TABLE IF NOT EXISTS logs (
    seq       INTEGER PRIMARY KEY,
    tenant    TEXT    NOT NULL,
    task_id   TEXT    NOT NULL,
    function  TEXT    NOT NULL,
    attempt   INTEGER NOT NULL,
    at        INTEGER NOT NULL,
    stream    TEXT    NOT NULL,
    data      BLOB    NOT NULL,
    truncated INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_task ON logs (task_id, tenant, seq);
CREATE INDEX IF NOT EXISTS logs_at ON logs (at);

CREATE TABLE IF NOT EXISTS offsets (
    topic       TEXT    NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS retired (
    tenant          TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    queue_topic     TEXT,
    queue_partition INTEGER,
    queue_offset    INTEGER,
    retired_at      INTEGER NOT NULL,
    PRIMARY KEY (id, tenant)
) WITHOUT ROWID;
"#;

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "cache_size", -32_000i64)?;
    Ok(())
}

/// The lifecycle rank of a status event: a later stage of the lifecycle always has a
/// higher rank, whatever the order the events are read in.
///
/// - `queued` ranks lowest;
/// - `running` and `retrying` rank by attempt, `running` before `retrying` of the same
///   attempt, then by event time;
/// - a final status (`succeeded`, `failed`, `stopped`, `expired`) outranks everything
///   else; between two final statuses (a task run twice) the later event wins.
pub fn status_rank(status: TaskStatus, attempt: i32, at: i64) -> [i64; 4] {
    let code = |s: TaskStatus| {
        query::ALL_STATUSES
            .iter()
            .position(|x| *x == s)
            .unwrap_or(0) as i64
    };
    match status {
        TaskStatus::Queued => [0, 0, 0, at],
        TaskStatus::Running => [1, i64::from(attempt), 0, at],
        TaskStatus::Retrying => [1, i64::from(attempt), 1, at],
        s => [2, at, i64::from(attempt), code(s)],
    }
}

/// The rank as bytes that sort like the rank (big-endian, sign bit flipped).
fn rank_bytes(r: [i64; 4]) -> Vec<u8> {
    r.iter()
        .flat_map(|v| ((*v as u64) ^ (1 << 63)).to_be_bytes())
        .collect()
}

fn rank_from_bytes(b: &[u8]) -> Option<[i64; 4]> {
    if b.len() != 32 {
        return None;
    }
    let mut out = [0i64; 4];
    for (i, slot) in out.iter_mut().enumerate() {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i * 8..i * 8 + 8]);
        *slot = (u64::from_be_bytes(w) ^ (1 << 63)) as i64;
    }
    Some(out)
}

fn parse_reason(s: &str) -> Option<FailureReason> {
    use FailureReason::*;
    [
        Executor,
        Timeout,
        NonRetryable,
        Malformed,
        UnknownFunction,
        PayloadTooLarge,
        TenantMismatch,
    ]
    .into_iter()
    .find(|r| r.as_str() == s)
}

/// A task record read from a queue topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedTask {
    /// Tenant of the queue topic.
    pub tenant: String,
    /// Task id (or the fallback id of an undecodable record).
    pub id: String,
    /// Function (empty for an undecodable record).
    pub function: String,
    /// The task's `submitted_at`, else the record timestamp.
    pub submitted_at: i64,
    /// Queue topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// Something to index.
#[derive(Debug, Clone)]
pub enum Ingest {
    /// A task record from a queue topic.
    Queued(QueuedTask),
    /// A status event.
    Status(StatusEvent),
    /// Captured output, with its position in the logs topic (which orders a task's logs).
    Log {
        /// The record.
        log: TaskLog,
        /// Partition of the logs topic.
        partition: i32,
        /// Offset.
        offset: i64,
    },
}

/// The current state of a task as the writer merges it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    function: String,
    status: TaskStatus,
    rank: [i64; 4],
    status_at: i64,
    submitted_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    attempts: i32,
    error: Option<String>,
    error_rank: Option<[i64; 4]>,
    reason: Option<FailureReason>,
    scheduler_id: Option<String>,
    queued_seen: bool,
    queue: Option<(String, i32, i64)>,
}

impl Row {
    fn from_queued(q: &QueuedTask) -> Self {
        Row {
            function: q.function.clone(),
            status: TaskStatus::Queued,
            rank: status_rank(TaskStatus::Queued, 0, q.submitted_at),
            status_at: q.submitted_at,
            submitted_at: q.submitted_at,
            started_at: None,
            finished_at: None,
            attempts: 0,
            error: None,
            error_rank: None,
            reason: None,
            scheduler_id: None,
            queued_seen: true,
            queue: Some((q.topic.clone(), q.partition, q.offset)),
        }
    }

    fn from_status(ev: &StatusEvent) -> Self {
        let mut row = Row {
            function: ev.function.clone(),
            status: TaskStatus::Queued,
            rank: [-1, 0, 0, 0],
            status_at: ev.submitted_at,
            submitted_at: ev.submitted_at,
            started_at: None,
            finished_at: None,
            attempts: 0,
            error: None,
            error_rank: None,
            reason: None,
            scheduler_id: None,
            queued_seen: false,
            queue: Some((
                ev.source.topic.clone(),
                ev.source.partition,
                ev.source.offset,
            )),
        };
        row.apply_status(ev);
        row
    }

    /// The queue record is the authority on submission time, function and position; of
    /// two records with the same id, the later submission wins.
    fn apply_queued(&mut self, q: &QueuedTask) {
        let pos = (q.topic.clone(), q.partition, q.offset);
        let newer = !self.queued_seen
            || (q.submitted_at, &pos) > (self.submitted_at, self.queue.as_ref().unwrap_or(&pos));
        if newer {
            self.function = q.function.clone();
            self.submitted_at = q.submitted_at;
            self.queue = Some(pos);
            self.queued_seen = true;
        }
    }

    fn apply_status(&mut self, ev: &StatusEvent) {
        let rank = status_rank(ev.status, ev.attempt, ev.at);
        if !self.queued_seen {
            self.submitted_at = ev.submitted_at;
            if self.function.is_empty() {
                self.function = ev.function.clone();
            }
            if self.queue.is_none() {
                self.queue = Some((
                    ev.source.topic.clone(),
                    ev.source.partition,
                    ev.source.offset,
                ));
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

/// The single writer of a store: the indexer's.
pub struct Writer {
    conn: Connection,
    path: PathBuf,
}

fn open_err(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Open {
        path: path.display().to_string(),
        source,
    }
}

/// Counts of what one [`Writer::apply`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Task records applied.
    pub tasks: u64,
    /// Status events applied.
    pub statuses: u64,
    /// Log chunks stored.
    pub logs: u64,
    /// Task records skipped because their task was already deleted by retention.
    pub skipped: u64,
}

impl Writer {
    /// Opens (creating when missing) the store at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).map_err(open_err(path))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err(path))?;
        configure(&conn).map_err(open_err(path))?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(open_err(path))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Version {
                path: path.display().to_string(),
                found: version,
                expected: SCHEMA_VERSION,
            });
        }
        conn.execute_batch(SCHEMA).map_err(open_err(path))?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(open_err(path))?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Consumed offsets: the next offset to read, per topic and partition.
    pub fn offsets(&self) -> Result<HashMap<(String, i32), i64>> {
        let mut stmt = self
            .conn
            .prepare("SELECT topic, partition, next_offset FROM offsets")?;
        let rows = stmt.query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Applies a batch of records and records the consumed offsets, in one transaction.
    pub fn apply(
        &mut self,
        batch: &[Ingest],
        offsets: &[(String, i32, i64)],
    ) -> Result<ApplyStats> {
        let mut stats = ApplyStats::default();
        let tx = self.conn.transaction()?;
        {
            let any_retired: bool =
                tx.query_row("SELECT EXISTS (SELECT 1 FROM retired)", [], |r| r.get(0))?;
            let mut load = tx.prepare_cached(
                "SELECT function, status, status_rank, status_at, submitted_at, started_at, \
                 finished_at, attempts, error, error_rank, reason, scheduler_id, queued_seen, \
                 queue_topic, queue_partition, queue_offset FROM tasks WHERE id = ? AND tenant = ?",
            )?;
            let mut insert_history = tx.prepare_cached(
                "INSERT INTO history (tenant, task_id, status, rank, attempt, at, error, reason, \
                 scheduler_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )?;
            let mut insert_log = tx.prepare_cached(
                "INSERT OR REPLACE INTO logs (seq, tenant, task_id, function, attempt, at, stream, \
                 data, truncated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )?;
            let mut retired = tx.prepare_cached(
                "SELECT queue_topic, queue_partition, queue_offset FROM retired \
                 WHERE id = ? AND tenant = ?",
            )?;
            let mut unretire =
                tx.prepare_cached("DELETE FROM retired WHERE id = ? AND tenant = ?")?;
            // Rows touched by this batch, merged in memory and written once at the end.
            let mut rows: HashMap<(String, String), Option<Row>> = HashMap::new();
            let mut get = |tenant: &str, id: &str| -> Result<Option<Row>> {
                let key = (tenant.to_string(), id.to_string());
                if let Some(r) = rows.get(&key) {
                    return Ok(r.clone());
                }
                let row = load
                    .query_row(params![id, tenant], read_row)
                    .optional()?
                    .transpose()?;
                rows.insert(key, row.clone());
                Ok(row)
            };
            let mut changed: HashMap<(String, String), Row> = HashMap::new();
            for item in batch {
                match item {
                    Ingest::Queued(q) => {
                        let key = (q.tenant.clone(), q.id.clone());
                        let current = match changed.get(&key) {
                            Some(r) => Some(r.clone()),
                            None => get(&q.tenant, &q.id)?,
                        };
                        let row = match current {
                            Some(mut r) => {
                                r.apply_queued(q);
                                r
                            }
                            None => {
                                if any_retired {
                                    let pos: Option<(Option<String>, Option<i32>, Option<i64>)> =
                                        retired
                                            .query_row(params![q.id, q.tenant], |r| {
                                                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                                            })
                                            .optional()?;
                                    if let Some(pos) = pos {
                                        if pos
                                            == (
                                                Some(q.topic.clone()),
                                                Some(q.partition),
                                                Some(q.offset),
                                            )
                                        {
                                            // The record of a task already deleted by
                                            // retention, read late: not a new task.
                                            unretire.execute(params![q.id, q.tenant])?;
                                            stats.skipped += 1;
                                            continue;
                                        }
                                    }
                                }
                                Row::from_queued(q)
                            }
                        };
                        changed.insert(key, row);
                        stats.tasks += 1;
                    }
                    Ingest::Status(ev) => {
                        let key = (ev.tenant.clone(), ev.task_id.clone());
                        let current = match changed.get(&key) {
                            Some(r) => Some(r.clone()),
                            None => get(&ev.tenant, &ev.task_id)?,
                        };
                        let row = match current {
                            Some(mut r) => {
                                r.apply_status(ev);
                                r
                            }
                            None => Row::from_status(ev),
                        };
                        changed.insert(key, row);
                        insert_history.execute(params![
                            ev.tenant,
                            ev.task_id,
                            ev.status.as_str(),
                            rank_bytes(status_rank(ev.status, ev.attempt, ev.at)),
                            ev.attempt,
                            ev.at,
                            ev.error,
                            ev.reason.map(FailureReason::as_str),
                            ev.scheduler_id,
                        ])?;
                        stats.statuses += 1;
                    }
                    Ingest::Log {
                        log,
                        partition,
                        offset,
                    } => {
                        insert_log.execute(params![
                            log_seq(*partition, *offset),
                            log.tenant,
                            log.task_id,
                            log.function,
                            log.attempt,
                            log.at,
                            log.stream.as_str(),
                            log.data,
                            log.truncated,
                        ])?;
                        stats.logs += 1;
                    }
                }
            }
            let mut upsert = tx.prepare_cached(
                "INSERT INTO tasks (tenant, id, function, status, status_rank, status_at, \
                 submitted_at, started_at, finished_at, attempts, error, error_rank, reason, \
                 scheduler_id, queued_seen, queue_topic, queue_partition, queue_offset) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (id, tenant) DO UPDATE SET function = excluded.function, \
                 status = excluded.status, status_rank = excluded.status_rank, \
                 status_at = excluded.status_at, submitted_at = excluded.submitted_at, \
                 started_at = excluded.started_at, finished_at = excluded.finished_at, \
                 attempts = excluded.attempts, error = excluded.error, \
                 error_rank = excluded.error_rank, reason = excluded.reason, \
                 scheduler_id = excluded.scheduler_id, queued_seen = excluded.queued_seen, \
                 queue_topic = excluded.queue_topic, queue_partition = excluded.queue_partition, \
                 queue_offset = excluded.queue_offset",
            )?;
            for ((tenant, id), r) in &changed {
                let (qt, qp, qo) = match &r.queue {
                    Some((t, p, o)) => (Some(t.as_str()), Some(*p), Some(*o)),
                    None => (None, None, None),
                };
                upsert.execute(params![
                    tenant,
                    id,
                    r.function,
                    r.status.as_str(),
                    rank_bytes(r.rank),
                    r.status_at,
                    r.submitted_at,
                    r.started_at,
                    r.finished_at,
                    r.attempts,
                    r.error,
                    r.error_rank.map(rank_bytes),
                    r.reason.map(FailureReason::as_str),
                    r.scheduler_id,
                    r.queued_seen,
                    qt,
                    qp,
                    qo,
                ])?;
            }
            let mut off = tx.prepare_cached(
                "INSERT INTO offsets (topic, partition, next_offset) VALUES (?, ?, ?) \
                 ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
            )?;
            for (topic, partition, next) in offsets {
                off.execute(params![topic, partition, next])?;
            }
        }
        tx.commit()?;
        Ok(stats)
    }

    /// Refreshes the statistics the query planner uses to pick indexes (a bounded,
    /// sampled `ANALYZE`).
    pub fn optimize(&mut self) -> Result<()> {
        self.conn
            .execute_batch("PRAGMA analysis_limit = 2000; ANALYZE;")?;
        Ok(())
    }

    /// Deletes tasks that finished before `cutoff` (ms), with their history and logs, in
    /// transactions of at most `chunk` tasks; also logs and history older than `cutoff`
    /// that belong to no task. Returns how many tasks were deleted.
    pub fn sweep(&mut self, cutoff: i64, now: i64, chunk: usize) -> Result<u64> {
        let mut deleted = 0u64;
        let consumed = self.offsets()?;
        loop {
            let tx = self.conn.transaction()?;
            let victims: Vec<Victim> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT tenant, id, queued_seen, queue_topic, queue_partition, queue_offset \
                     FROM tasks WHERE finished_at < ? LIMIT ?",
                )?;
                let rows = stmt.query_map(params![cutoff, chunk as i64], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            if victims.is_empty() {
                tx.commit()?;
                break;
            }
            {
                let mut del_task =
                    tx.prepare_cached("DELETE FROM tasks WHERE id = ? AND tenant = ?")?;
                let mut del_hist =
                    tx.prepare_cached("DELETE FROM history WHERE task_id = ? AND tenant = ?")?;
                let mut del_logs =
                    tx.prepare_cached("DELETE FROM logs WHERE task_id = ? AND tenant = ?")?;
                let mut retire = tx.prepare_cached(
                    "INSERT OR REPLACE INTO retired (tenant, id, queue_topic, queue_partition, \
                     queue_offset, retired_at) VALUES (?, ?, ?, ?, ?, ?)",
                )?;
                for (tenant, id, queued_seen, qt, qp, qo) in &victims {
                    del_task.execute(params![id, tenant])?;
                    del_hist.execute(params![id, tenant])?;
                    del_logs.execute(params![id, tenant])?;
                    // Its task record has not been read yet: remember the task, so that
                    // record does not bring it back as queued.
                    if let (false, Some(t), Some(p), Some(o)) = (queued_seen, qt, qp, qo) {
                        let read_past = consumed.get(&(t.clone(), *p)).is_some_and(|next| next > o);
                        if !read_past {
                            retire.execute(params![tenant, id, t, p, o, now])?;
                        }
                    }
                }
            }
            tx.commit()?;
            deleted += victims.len() as u64;
            if victims.len() < chunk {
                break;
            }
        }
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM retired WHERE retired_at < ?", params![cutoff])?;
        tx.execute(
            "DELETE FROM logs WHERE at < ? AND NOT EXISTS \
             (SELECT 1 FROM tasks t WHERE t.id = logs.task_id AND t.tenant = logs.tenant)",
            params![cutoff],
        )?;
        tx.commit()?;
        Ok(deleted)
    }
}

/// A task deleted by retention: tenant, id, whether its task record was read, and its
/// queue position.
type Victim = (
    String,
    String,
    bool,
    Option<String>,
    Option<i32>,
    Option<i64>,
);

/// The position of a log record in the logs topic as one sortable number.
fn log_seq(partition: i32, offset: i64) -> i64 {
    (i64::from(partition) << 40) | (offset & ((1 << 40) - 1))
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Row>> {
    let status: String = r.get(1)?;
    let rank: Vec<u8> = r.get(2)?;
    let error_rank: Option<Vec<u8>> = r.get(9)?;
    let reason: Option<String> = r.get(10)?;
    let qt: Option<String> = r.get(13)?;
    let qp: Option<i32> = r.get(14)?;
    let qo: Option<i64> = r.get(15)?;
    let Ok(status) = status.parse::<TaskStatus>() else {
        return Ok(Err(StoreError::Corrupt {
            what: "status",
            value: status,
        }));
    };
    let Some(rank) = rank_from_bytes(&rank) else {
        return Ok(Err(StoreError::Corrupt {
            what: "status rank",
            value: format!("{} bytes", rank.len()),
        }));
    };
    Ok(Ok(Row {
        function: r.get(0)?,
        status,
        rank,
        status_at: r.get(3)?,
        submitted_at: r.get(4)?,
        started_at: r.get(5)?,
        finished_at: r.get(6)?,
        attempts: r.get(7)?,
        error: r.get(8)?,
        error_rank: error_rank.as_deref().and_then(rank_from_bytes),
        reason: reason.as_deref().and_then(parse_reason),
        scheduler_id: r.get(11)?,
        queued_seen: r.get(12)?,
        queue: match (qt, qp, qo) {
            (Some(t), Some(p), Some(o)) => Some((t, p, o)),
            _ => None,
        },
    }))
}

/// Reads a row selected with [`query::TASK_COLUMNS`].
fn task_view(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<TaskView>> {
    let status: String = r.get(3)?;
    let reason: Option<String> = r.get(10)?;
    let Ok(status) = status.parse::<TaskStatus>() else {
        return Ok(Err(StoreError::Corrupt {
            what: "status",
            value: status,
        }));
    };
    let qt: Option<String> = r.get(12)?;
    let qp: Option<i32> = r.get(13)?;
    let qo: Option<i64> = r.get(14)?;
    Ok(Ok(TaskView {
        id: r.get(0)?,
        tenant: r.get(1)?,
        function: r.get(2)?,
        status,
        submitted_at: r.get(4)?,
        started_at: r.get(5)?,
        finished_at: r.get(6)?,
        updated_at: r.get(7)?,
        attempts: r.get(8)?,
        error: r.get(9)?,
        reason: reason.as_deref().and_then(parse_reason),
        scheduler_id: r.get(11)?,
        queue: match (qt, qp, qo) {
            (Some(topic), Some(partition), Some(offset)) => Some(QueuePosition {
                topic,
                partition,
                offset,
            }),
            _ => None,
        },
    }))
}

/// Read access for the API: a small pool of connections, each used by one call at a time.
pub struct Reader {
    path: PathBuf,
    pool: Mutex<Vec<Connection>>,
}

/// Up to this many tasks with an id prefix, a listing reads them by id and sorts them.
const ID_INDEX_MAX: i64 = 10_000;

/// Connections kept open for reuse.
const POOL_SIZE: usize = 8;

/// Tasks that match one id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// None (or none the caller may see).
    NotFound,
    /// Exactly one.
    Found(Box<TaskView>),
    /// Several tenants use the id (only possible without a tenant scope).
    Ambiguous(Vec<String>),
}

impl Reader {
    /// A reader of the store at `path`, which a [`Writer`] has created.
    pub fn open(path: &Path) -> Result<Self> {
        let reader = Self {
            path: path.to_path_buf(),
            pool: Mutex::new(Vec::new()),
        };
        let conn = reader.connect().map_err(open_err(path))?;
        reader.put(conn);
        Ok(reader)
    }

    fn connect(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&conn)?;
        conn.pragma_update(None, "query_only", true)?;
        Ok(conn)
    }

    fn put(&self, conn: Connection) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL_SIZE {
            pool.push(conn);
        }
    }

    /// Runs `f` with a connection of the pool.
    pub fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => self.connect()?,
        };
        let out = f(&conn);
        self.put(conn);
        out
    }

    /// One page of tasks.
    pub fn list(&self, filter: &TaskFilter) -> Result<TaskPage> {
        self.with(|conn| {
            // A selective id prefix is best served by the id index (then sorted); an
            // unselective one by walking the tasks newest first until the page is full.
            let by_id = match &filter.id_prefix {
                Some(prefix) => {
                    let upper = query::prefix_upper_bound(prefix);
                    let text = format!(
                        "SELECT count(*) FROM (SELECT 1 FROM tasks INDEXED BY tasks_id \
                         WHERE id >= ?1{} LIMIT {})",
                        if upper.is_some() { " AND id < ?2" } else { "" },
                        ID_INDEX_MAX + 1
                    );
                    let mut stmt = conn.prepare_cached(&text)?;
                    let n: i64 = match &upper {
                        Some(u) => stmt.query_row(params![prefix, u], |r| r.get(0))?,
                        None => stmt.query_row(params![prefix], |r| r.get(0))?,
                    };
                    n <= ID_INDEX_MAX
                }
                None => false,
            };
            let sql = query::list_sql_hinted(filter, by_id);
            let mut stmt = conn.prepare_cached(&sql.text)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(sql.params.iter()), task_view)?;
            let mut tasks = Vec::new();
            for r in rows {
                tasks.push(r??);
            }
            let limit = filter.limit as usize;
            let next_cursor = if tasks.len() > limit {
                tasks.truncate(limit);
                tasks.last().map(|t| {
                    query::Cursor {
                        submitted_at: t.submitted_at,
                        id: t.id.clone(),
                        tenant: t.tenant.clone(),
                    }
                    .encode()
                })
            } else {
                None
            };
            Ok(TaskPage { tasks, next_cursor })
        })
    }

    /// The task with this id, limited to `tenant` when given.
    pub fn get(&self, tenant: Option<&str>, id: &str) -> Result<Lookup> {
        self.with(|conn| {
            let text = format!("SELECT {} FROM tasks WHERE id = ?1 AND (?2 IS NULL OR tenant = ?2) ORDER BY tenant LIMIT 20", query::TASK_COLUMNS);
            let mut stmt = conn.prepare_cached(&text)?;
            let rows = stmt.query_map(params![id, tenant], task_view)?;
            let mut found = Vec::new();
            for r in rows {
                found.push(r??);
            }
            Ok(match found.len() {
                0 => Lookup::NotFound,
                1 => Lookup::Found(Box::new(found.remove(0))),
                _ => Lookup::Ambiguous(found.into_iter().map(|t| t.tenant).collect()),
            })
        })
    }

    /// A task with its status events, in lifecycle order.
    pub fn detail(&self, task: TaskView) -> Result<TaskDetail> {
        let events = self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT status, attempt, at, error, reason, scheduler_id FROM history \
                 WHERE task_id = ? AND tenant = ? ORDER BY rank, seq",
            )?;
            let rows = stmt.query_map(params![task.id, task.tenant], |r| {
                let status: String = r.get(0)?;
                let reason: Option<String> = r.get(4)?;
                Ok((status, reason, r.get(1)?, r.get(2)?, r.get(3)?, r.get(5)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (status, reason, attempt, at, error, scheduler_id) = row?;
                let status = status
                    .parse::<TaskStatus>()
                    .map_err(|_| StoreError::Corrupt {
                        what: "status",
                        value: status.clone(),
                    })?;
                out.push(HistoryEvent {
                    status,
                    attempt,
                    at,
                    error,
                    reason: reason.as_deref().and_then(parse_reason),
                    scheduler_id,
                });
            }
            Ok(out)
        })?;
        Ok(TaskDetail::new(task, events))
    }

    /// Up to `limit` log chunks of a task after position `after`, oldest first.
    pub fn logs(
        &self,
        tenant: &str,
        id: &str,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<LogEntry>> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, attempt, at, stream, data, truncated FROM logs \
                 WHERE task_id = ? AND tenant = ? AND seq > ? ORDER BY seq LIMIT ?",
            )?;
            let rows = stmt.query_map(
                params![id, tenant, after.unwrap_or(-1), i64::from(limit)],
                |r| {
                    let data: Vec<u8> = r.get(4)?;
                    Ok(LogEntry {
                        seq: r.get(0)?,
                        attempt: r.get(1)?,
                        at: r.get(2)?,
                        stream: r.get(3)?,
                        data: crate::codec::text(&data),
                        truncated: r.get(5)?,
                    })
                },
            )?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Tasks running now (started, not finished), per queue topic and partition.
    pub fn running_by_partition(
        &self,
        tenant: Option<&str>,
    ) -> Result<HashMap<(String, i32), u64>> {
        self.with(|conn| {
            let t = if tenant.is_some() {
                "tenant = ?1"
            } else {
                "?1 IS NULL"
            };
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT queue_topic, queue_partition, count(*) FROM tasks \
                 WHERE status IN ('running', 'retrying') AND {t} \
                 AND queue_topic IS NOT NULL GROUP BY queue_topic, queue_partition"
            ))?;
            let rows = stmt.query_map(params![tenant], |r| {
                Ok(((r.get(0)?, r.get(1)?), r.get::<_, i64>(2)?.max(0) as u64))
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Per queue topic, task counts for each of the last `minutes` minutes (see
    /// [`MinuteCounts`]); the last entry is the current, partial minute.
    pub fn activity(
        &self,
        tenant: Option<&str>,
        now: i64,
        minutes: u32,
    ) -> Result<HashMap<String, Vec<MinuteCounts>>> {
        let (start, end) = query::minute_window(now, minutes);
        let n = minutes as usize;
        #[derive(Default, Clone)]
        struct Acc {
            base_queued: i64,
            base_running: i64,
            submitted: Vec<i64>,
            started: Vec<i64>,
            left_unstarted: Vec<i64>,
            finished_started: Vec<i64>,
            completed: Vec<i64>,
            failed: Vec<i64>,
        }
        let fresh = || Acc {
            submitted: vec![0; n],
            started: vec![0; n],
            left_unstarted: vec![0; n],
            finished_started: vec![0; n],
            completed: vec![0; n],
            failed: vec![0; n],
            ..Acc::default()
        };
        let mut acc: HashMap<String, Acc> = HashMap::new();
        let bucket = |b: i64| usize::try_from(b).ok().filter(|b| *b < n);
        self.with(|conn| {
            // A literal `tenant = ?` (not `?3 IS NULL OR …`) lets SQLite use the tenant
            // indexes; both forms keep the same parameters.
            let t = if tenant.is_some() {
                "AND tenant = ?3 AND queue_topic IS NOT NULL"
            } else {
                "AND ?3 IS NULL AND queue_topic IS NOT NULL"
            };
            let mut q = conn.prepare_cached(&format!(
                "SELECT queue_topic, (submitted_at - ?1) / 60000 AS b, count(*) FROM tasks \
                 WHERE submitted_at >= ?1 AND submitted_at < ?2 {t} GROUP BY queue_topic, b"
            ))?;
            let mut rows = q.query(params![start, end, tenant])?;
            while let Some(r) = rows.next()? {
                if let Some(b) = bucket(r.get(1)?) {
                    acc.entry(r.get(0)?).or_insert_with(fresh).submitted[b] +=
                        r.get::<_, i64>(2)?;
                }
            }
            let mut q = conn.prepare_cached(&format!(
                "SELECT queue_topic, (started_at - ?1) / 60000 AS b, count(*), \
                 sum(submitted_at < ?1) FROM tasks INDEXED BY tasks_started \
                 WHERE started_at >= ?1 AND started_at < ?2 {t} GROUP BY queue_topic, b"
            ))?;
            let mut rows = q.query(params![start, end, tenant])?;
            while let Some(r) = rows.next()? {
                let a = acc.entry(r.get(0)?).or_insert_with(fresh);
                a.base_queued += r.get::<_, i64>(3)?;
                if let Some(b) = bucket(r.get(1)?) {
                    a.started[b] += r.get::<_, i64>(2)?;
                }
            }
            let mut q = conn.prepare_cached(&format!(
                "SELECT queue_topic, (finished_at - ?1) / 60000 AS b, \
                 sum(status IN ('succeeded', 'failed')), sum(status = 'failed'), \
                 sum(started_at IS NULL), sum(started_at IS NOT NULL), \
                 sum(started_at IS NULL AND submitted_at < ?1), \
                 sum(started_at IS NOT NULL AND started_at < ?1) FROM tasks INDEXED BY tasks_finished \
                 WHERE finished_at >= ?1 AND finished_at < ?2 {t} GROUP BY queue_topic, b"
            ))?;
            let mut rows = q.query(params![start, end, tenant])?;
            while let Some(r) = rows.next()? {
                let a = acc.entry(r.get(0)?).or_insert_with(fresh);
                a.base_queued += r.get::<_, i64>(6)?;
                a.base_running += r.get::<_, i64>(7)?;
                if let Some(b) = bucket(r.get(1)?) {
                    a.completed[b] += r.get::<_, i64>(2)?;
                    a.failed[b] += r.get::<_, i64>(3)?;
                    a.left_unstarted[b] += r.get::<_, i64>(4)?;
                    a.finished_started[b] += r.get::<_, i64>(5)?;
                }
            }
            let mut q = conn.prepare_cached(&format!(
                "SELECT queue_topic, count(*) FROM tasks \
                 WHERE status = 'queued' AND submitted_at < ?1 AND ?2 = ?2 {t} GROUP BY queue_topic"
            ))?;
            let mut rows = q.query(params![start, end, tenant])?;
            while let Some(r) = rows.next()? {
                acc.entry(r.get(0)?).or_insert_with(fresh).base_queued += r.get::<_, i64>(1)?;
            }
            let mut q = conn.prepare_cached(&format!(
                "SELECT queue_topic, count(*) FROM tasks \
                 WHERE status IN ('running', 'retrying') AND started_at < ?1 AND ?2 = ?2 {t} \
                 GROUP BY queue_topic"
            ))?;
            let mut rows = q.query(params![start, end, tenant])?;
            while let Some(r) = rows.next()? {
                acc.entry(r.get(0)?).or_insert_with(fresh).base_running += r.get::<_, i64>(1)?;
            }
            Ok(())
        })?;
        let clamp = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(acc
            .into_iter()
            .map(|(topic, a)| {
                let mut queued = a.base_queued;
                let mut running = a.base_running;
                let counts = (0..n)
                    .map(|b| {
                        queued += a.submitted[b] - a.started[b] - a.left_unstarted[b];
                        running += a.started[b] - a.finished_started[b];
                        MinuteCounts {
                            minute: start + b as i64 * 60_000,
                            submitted: clamp(a.submitted[b]),
                            completed: clamp(a.completed[b]),
                            failed: clamp(a.failed[b]),
                            queued: clamp(queued),
                            running: clamp(running),
                        }
                    })
                    .collect();
                (topic, counts)
            })
            .collect())
    }

    /// How many tasks the store holds.
    pub fn count(&self) -> Result<u64> {
        self.with(|conn| {
            let n: i64 = conn.query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }
}

/// The stream name stored for a log chunk.
pub fn stream_str(s: LogStream) -> &'static str {
    s.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Source;

    fn ev(id: &str, status: TaskStatus, attempt: i32, at: i64) -> StatusEvent {
        StatusEvent {
            task_id: id.into(),
            tenant: "acme".into(),
            function: "f".into(),
            status,
            attempt,
            at,
            submitted_at: 100,
            reason: (status == TaskStatus::Failed).then_some(FailureReason::Executor),
            error: matches!(status, TaskStatus::Retrying | TaskStatus::Failed)
                .then(|| format!("error of attempt {attempt}")),
            source: Source {
                topic: "tw.q.acme".into(),
                partition: 1,
                offset: 7,
            },
            scheduler_id: "s1".into(),
        }
    }

    fn queued(id: &str, submitted_at: i64) -> QueuedTask {
        QueuedTask {
            tenant: "acme".into(),
            id: id.into(),
            function: "f".into(),
            submitted_at,
            topic: "tw.q.acme".into(),
            partition: 1,
            offset: 7,
        }
    }

    fn lifecycle() -> Vec<Ingest> {
        vec![
            Ingest::Queued(queued("t", 100)),
            Ingest::Status(ev("t", TaskStatus::Running, 1, 110)),
            Ingest::Status(ev("t", TaskStatus::Retrying, 1, 120)),
            Ingest::Status(ev("t", TaskStatus::Running, 2, 130)),
            Ingest::Status(ev("t", TaskStatus::Failed, 2, 140)),
        ]
    }

    fn store() -> (tempfile::TempDir, Writer, Reader) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.db");
        let w = Writer::open(&path).unwrap();
        let r = Reader::open(&path).unwrap();
        (dir, w, r)
    }

    fn get(r: &Reader, id: &str) -> TaskView {
        match r.get(Some("acme"), id).unwrap() {
            Lookup::Found(t) => *t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ranks_follow_the_lifecycle() {
        let r = |s, a, at| status_rank(s, a, at);
        assert!(r(TaskStatus::Queued, 0, 999) < r(TaskStatus::Running, 1, 1));
        assert!(r(TaskStatus::Running, 1, 5) < r(TaskStatus::Retrying, 1, 5));
        assert!(r(TaskStatus::Retrying, 1, 9) < r(TaskStatus::Running, 2, 1));
        assert!(r(TaskStatus::Running, 9, 9) < r(TaskStatus::Succeeded, 1, 1));
        assert!(r(TaskStatus::Succeeded, 1, 1) < r(TaskStatus::Failed, 1, 2));
        for a in [
            r(TaskStatus::Running, 3, -5),
            r(TaskStatus::Failed, 0, i64::MAX),
        ] {
            let b = rank_bytes(a);
            assert_eq!(rank_from_bytes(&b), Some(a));
        }
        let mut pairs = [
            r(TaskStatus::Queued, 0, -1),
            r(TaskStatus::Running, 1, 0),
            r(TaskStatus::Running, 2, -3),
            r(TaskStatus::Succeeded, 2, 100),
        ];
        let by_bytes = {
            let mut v = pairs.to_vec();
            v.sort_by_key(|k| rank_bytes(*k));
            v
        };
        pairs.sort();
        assert_eq!(by_bytes, pairs.to_vec());
    }

    #[test]
    fn every_arrival_order_gives_the_same_task() {
        let items = lifecycle();
        let mut answers = Vec::new();
        // All rotations and the reverse, one record per batch and all in one batch.
        let mut orders: Vec<Vec<Ingest>> = (0..items.len())
            .map(|k| {
                let mut v = items.clone();
                v.rotate_left(k);
                v
            })
            .collect();
        orders.push(items.iter().rev().cloned().collect());
        for order in orders {
            for one_batch in [true, false] {
                let (_d, mut w, r) = store();
                if one_batch {
                    w.apply(&order, &[]).unwrap();
                } else {
                    for item in &order {
                        w.apply(std::slice::from_ref(item), &[]).unwrap();
                    }
                }
                let t = get(&r, "t");
                let detail = r.detail(t.clone()).unwrap();
                answers.push((t, detail));
            }
        }
        let (t, detail) = &answers[0];
        assert_eq!(t.status, TaskStatus::Failed);
        assert_eq!(t.submitted_at, 100);
        assert_eq!(t.started_at, Some(110));
        assert_eq!(t.finished_at, Some(140));
        assert_eq!(t.attempts, 2);
        assert_eq!(t.error.as_deref(), Some("error of attempt 2"));
        assert_eq!(t.reason, Some(FailureReason::Executor));
        assert_eq!(detail.attempt_history.len(), 2);
        assert_eq!(detail.attempt_history[0].result, Some(TaskStatus::Retrying));
        assert_eq!(detail.attempt_history[1].finished_at, Some(140));
        assert_eq!(detail.events.len(), 4);
        for a in &answers {
            assert_eq!(a, &answers[0]);
        }
    }

    #[test]
    fn a_late_task_record_does_not_regress_the_status() {
        let (_d, mut w, r) = store();
        w.apply(
            &[Ingest::Status(ev("t", TaskStatus::Succeeded, 1, 150))],
            &[],
        )
        .unwrap();
        assert_eq!(get(&r, "t").status, TaskStatus::Succeeded);
        w.apply(&[Ingest::Queued(queued("t", 90))], &[]).unwrap();
        let t = get(&r, "t");
        assert_eq!(t.status, TaskStatus::Succeeded);
        assert_eq!(
            t.submitted_at, 90,
            "the task record sets the submission time"
        );
        w.apply(&[Ingest::Status(ev("t", TaskStatus::Running, 1, 110))], &[])
            .unwrap();
        let t = get(&r, "t");
        assert_eq!(t.status, TaskStatus::Succeeded);
        assert_eq!(t.started_at, Some(110));
    }

    #[test]
    fn offsets_are_kept_with_the_rows() {
        let (_d, mut w, _r) = store();
        w.apply(
            &lifecycle(),
            &[("tw.q.acme".into(), 1, 8), ("tw.status".into(), 0, 4)],
        )
        .unwrap();
        w.apply(&[], &[("tw.q.acme".into(), 1, 9)]).unwrap();
        let o = w.offsets().unwrap();
        assert_eq!(o[&("tw.q.acme".to_string(), 1)], 9);
        assert_eq!(o[&("tw.status".to_string(), 0)], 4);
    }

    #[test]
    fn retention_deletes_finished_tasks_and_ignores_their_late_records() {
        let (_d, mut w, r) = store();
        // "old" finished at 140 and its task record has not been read yet; "new" is
        // still running.
        w.apply(
            &[
                Ingest::Status(ev("old", TaskStatus::Succeeded, 1, 140)),
                Ingest::Queued(queued("new", 100)),
                Ingest::Status(ev("new", TaskStatus::Running, 1, 150)),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(w.sweep(1000, 2000, 1).unwrap(), 1);
        assert_eq!(r.get(Some("acme"), "old").unwrap(), Lookup::NotFound);
        assert_eq!(get(&r, "new").status, TaskStatus::Running);
        // The late task record of "old" does not bring it back.
        let stats = w.apply(&[Ingest::Queued(queued("old", 100))], &[]).unwrap();
        assert_eq!(stats.skipped, 1);
        assert_eq!(r.get(Some("acme"), "old").unwrap(), Lookup::NotFound);
    }

    #[test]
    fn lists_page_without_skipping_or_repeating() {
        let (_d, mut w, r) = store();
        let items: Vec<Ingest> = (0..50)
            .map(|i| Ingest::Queued(queued(&format!("id-{:02}", i % 25), 1000 + (i / 25))))
            .collect();
        // Same submission time for ids in pairs of tenants to exercise the tie-break.
        let mut items2 = items.clone();
        for it in &mut items2 {
            if let Ingest::Queued(q) = it {
                q.tenant = "globex".into();
                q.submitted_at = 1000;
            }
        }
        w.apply(&items, &[]).unwrap();
        w.apply(&items2, &[]).unwrap();
        let mut seen = Vec::new();
        let mut filter = TaskFilter {
            limit: 7,
            ..TaskFilter::default()
        };
        loop {
            let page = r.list(&filter).unwrap();
            seen.extend(page.tasks.iter().map(|t| (t.tenant.clone(), t.id.clone())));
            match page.next_cursor {
                Some(c) => filter.cursor = Some(query::Cursor::decode(&c).unwrap()),
                None => break,
            }
        }
        assert_eq!(seen.len(), 50);
        let unique: std::collections::BTreeSet<_> = seen.iter().cloned().collect();
        assert_eq!(unique.len(), 50);
    }

    #[test]
    fn per_minute_counts_follow_each_task() {
        let (_d, mut w, r) = store();
        let t = 1_764_340_020_000; // a whole minute
        let now = t + 30_000;
        let status = |id: &str, s, attempt, at, sub| {
            let mut e = ev(id, s, attempt, at);
            e.submitted_at = sub;
            Ingest::Status(e)
        };
        w.apply(
            &[
                // a: queued since long before the window.
                Ingest::Queued(queued("a", t - 600_000)),
                // b: submitted in minute 0, started in minute 1, succeeded in minute 2.
                Ingest::Queued(queued("b", t - 115_000)),
                status("b", TaskStatus::Running, 1, t - 55_000, t - 115_000),
                status("b", TaskStatus::Succeeded, 1, t + 5_000, t - 115_000),
                // c: running since before the window, failed in minute 1.
                status("c", TaskStatus::Running, 1, t - 180_000, t - 300_000),
                status("c", TaskStatus::Failed, 1, t - 30_000, t - 300_000),
                // d: submitted and rejected in minute 2, never started.
                Ingest::Queued(queued("d", t + 10_000)),
                status("d", TaskStatus::Failed, 0, t + 20_000, t + 10_000),
            ],
            &[],
        )
        .unwrap();
        let act = r.activity(Some("acme"), now, 3).unwrap();
        let got: Vec<(u64, u64, u64, u64, u64)> = act["tw.q.acme"]
            .iter()
            .map(|m| (m.submitted, m.completed, m.failed, m.queued, m.running))
            .collect();
        assert_eq!(
            got,
            vec![(1, 0, 0, 2, 1), (0, 1, 1, 1, 1), (1, 2, 1, 1, 0)],
            "(submitted, completed, failed, queued, running) per minute"
        );
        assert_eq!(act["tw.q.acme"][0].minute, t - 120_000);
        assert_eq!(r.activity(None, now, 3).unwrap(), act);
        assert!(r.activity(Some("globex"), now, 3).unwrap().is_empty());
        let running = r.running_by_partition(Some("acme")).unwrap();
        assert!(running.is_empty(), "{running:?}");
    }

    #[test]
    fn id_prefixes_read_through_the_id_index_when_selective() {
        let (_d, mut w, r) = store();
        let items: Vec<Ingest> = (0..300)
            .map(|i| Ingest::Queued(queued(&format!("{}-{i:03}", ["a", "b"][i % 2]), i as i64)))
            .collect();
        w.apply(&items, &[]).unwrap();
        w.optimize().unwrap();
        let page = r
            .list(&TaskFilter {
                scope: Some("acme".into()),
                id_prefix: Some("b-1".into()),
                limit: 10,
                ..TaskFilter::default()
            })
            .unwrap();
        let ids: Vec<&str> = page.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "b-199", "b-197", "b-195", "b-193", "b-191", "b-189", "b-187", "b-185", "b-183",
                "b-181"
            ]
        );
        assert!(page.next_cursor.is_some());
    }

    #[test]
    fn queries_use_an_index() {
        let (_d, _w, r) = store();
        let plan = |f: &TaskFilter| -> String {
            let sql = query::list_sql(f);
            r.with(|c| {
                let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {}", sql.text))?;
                let rows = stmt.query_map(rusqlite::params_from_iter(sql.params.iter()), |r| {
                    r.get::<_, String>(3)
                })?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?.join("; "))
            })
            .unwrap()
        };
        let scoped = TaskFilter {
            scope: Some("acme".into()),
            cursor: Some(query::Cursor {
                submitted_at: 5,
                id: "x".into(),
                tenant: "acme".into(),
            }),
            ..TaskFilter::default()
        };
        let p = plan(&scoped);
        assert!(p.contains("USING INDEX tasks_tenant_submitted"), "{p}");
        assert!(!p.contains("TEMP B-TREE"), "{p}");
        let p = plan(&TaskFilter::default());
        assert!(p.contains("USING INDEX tasks_submitted"), "{p}");
        assert!(!p.contains("TEMP B-TREE"), "{p}");
    }
}
