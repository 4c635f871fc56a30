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
//!
//! The files, in the order a record goes through them:
//!
//! - `indexer`: reads the topics and hands batches of [`Ingest`] to the writer;
//! - `writer`: one transaction per batch: load the rows the batch touches, merge, store;
//! - `row`: the merge itself, which decides a task's row from what was read (no I/O);
//! - `columns`: how ranks, statuses, reasons and queue positions sit in the columns;
//! - `schema`: the tables, the connection settings and the schema-version check;
//! - `retention`: deletes tasks that finished before the retention period;
//! - `reader`: the API's lookups and listings (the SQL of listings is built in `query`);
//! - `activity`: per-minute task counts of each queue;
//! - `model`: the JSON bodies the API answers with.

mod activity;
mod columns;
pub mod indexer;
pub mod model;
pub mod query;
mod reader;
mod retention;
mod row;
mod schema;
mod time_param;
mod writer;

#[cfg(test)]
mod tests;

use std::path::Path;

use crate::codec::{LogStream, StatusEvent, TaskLog};
use crate::types::TaskKey;
use model::QueuePosition;

pub use reader::{Lookup, Reader};
pub use row::status_rank;
pub use writer::{ApplyStats, Writer};

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be opened or set up.
    #[error("cannot open the task store {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    /// The file was written by a newer Tidewater.
    #[error(
        "the task store {path} has schema version {found}, newer than this build's {expected}; use a newer tidewater or delete the file to rebuild it"
    )]
    Version {
        path: String,
        /// The version the file was written with.
        found: i64,
        /// The newest version this build reads.
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
        value: String,
    },
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Names the file in an error of opening or setting it up.
fn open_err(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Open {
        path: path.display().to_string(),
        source,
    }
}

/// Which run of a task a record belongs to. A task runs once per task record; a
/// redrive submits another record of the same task, whose status events and logs carry
/// the redrive's id. The runs of a task are ordered by their epoch: 0 for records of no
/// redrive, the redriven record's submission time for a redrive. A later run's status
/// always replaces an earlier run's, whatever order the topics are read in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Run {
    /// 0, or the submission time of the redriven task record.
    pub epoch: i64,
    /// The redrive (`tw-redrive-id`), for a redriven run.
    pub redrive_id: Option<String>,
}

impl Run {
    /// The run of a redrive whose record was submitted at `submitted_at`.
    pub fn redrive(redrive_id: &str, submitted_at: i64) -> Self {
        Self {
            epoch: submitted_at,
            redrive_id: Some(redrive_id.to_string()),
        }
    }
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
    /// Where the record sits: of two records with the same id and submission time, the
    /// later position wins.
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The run it starts: a redrive's, or the first.
    pub run: Run,
    /// Who asked for the redrive (`tw-redrive-by`), for a redriven record.
    pub redrive_by: Option<String>,
}

impl QueuedTask {
    fn key(&self) -> TaskKey {
        TaskKey::new(&self.tenant, &self.id)
    }

    fn position(&self) -> QueuePosition {
        QueuePosition {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
        }
    }
}

/// Something to index.
#[derive(Debug, Clone)]
pub enum Ingest {
    /// A task record from a queue topic.
    Queued(QueuedTask),
    /// A status event, and the run it belongs to.
    Status(StatusEvent, Run),
    /// Captured output, with its position in the logs topic (which orders a task's logs).
    Log {
        log: TaskLog,
        /// The redrive of the run it belongs to, if any.
        redrive_id: Option<String>,
        /// Partition of the logs topic.
        partition: i32,
        /// Offset in that partition.
        offset: i64,
    },
}

impl Ingest {
    /// The task whose row the record changes; `None` for logs, which are kept apart.
    fn task_key(&self) -> Option<TaskKey> {
        match self {
            Ingest::Queued(q) => Some(q.key()),
            Ingest::Status(ev, _) => Some(status_key(ev)),
            Ingest::Log { .. } => None,
        }
    }
}

fn status_key(ev: &StatusEvent) -> TaskKey {
    TaskKey::new(&ev.tenant, &ev.task_id)
}

/// The stream name stored for a log chunk.
pub fn stream_str(s: LogStream) -> &'static str {
    s.as_str()
}
