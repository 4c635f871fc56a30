//! The store's single writer, the indexer's. A batch of records and the offsets they were
//! read up to go in one transaction, in three steps: [load](load) what the store holds of
//! the tasks the batch touches, [merge](super::row::merge) the batch into it (no I/O),
//! [save](save) the result with the batch's status events and logs.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::codec::FailureReason;
use crate::types::{TaskKey, TopicPartition};

use super::columns::{self, rank_bytes};
use super::query::TASK_COLUMNS;
use super::row::{self, Merged, Row, Stored, status_rank};
use super::{Ingest, Result, schema};

/// The single writer of a store: the indexer's.
pub struct Writer {
    pub(super) conn: Connection,
    path: PathBuf,
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
        Ok(Self {
            conn: schema::open_writer(path)?,
            path: path.to_path_buf(),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Consumed offsets: the next offset to read, per topic and partition.
    pub fn offsets(&self) -> Result<HashMap<TopicPartition, i64>> {
        let mut stmt = self
            .conn
            .prepare("SELECT topic, partition, next_offset FROM offsets")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                TopicPartition::new(r.get::<_, String>(0)?, r.get(1)?),
                r.get(2)?,
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Applies a batch of records and records the consumed offsets (topic, partition,
    /// next offset), in one transaction.
    pub fn apply(
        &mut self,
        batch: &[Ingest],
        offsets: &[(String, i32, i64)],
    ) -> Result<ApplyStats> {
        let tx = self.conn.transaction()?;
        let stored = load(&tx, batch)?;
        let merged = row::merge(batch, stored);
        save(&tx, batch, &merged, offsets)?;
        tx.commit()?;
        Ok(merged.stats)
    }

    /// Refreshes the statistics the query planner uses to pick indexes (a bounded,
    /// sampled `ANALYZE`).
    pub fn optimize(&mut self) -> Result<()> {
        self.conn
            .execute_batch("PRAGMA analysis_limit = 2000; ANALYZE;")?;
        Ok(())
    }
}

/// What the store holds of the tasks `batch` touches: their rows, and for each task with
/// no row whose first record in the batch is its task record, whether retention deleted
/// it before that record was read.
fn load(tx: &Transaction<'_>, batch: &[Ingest]) -> Result<Stored> {
    let mut select = tx.prepare_cached(&format!(
        "SELECT {TASK_COLUMNS}, status_rank, error_rank, queued_seen, run_epoch FROM tasks \
         WHERE id = ? AND tenant = ?"
    ))?;
    let mut stored = Stored::default();
    let mut seen: HashSet<TaskKey> = HashSet::new();
    let mut first_queued_without_row = Vec::new();
    for item in batch {
        let Some(key) = item.task_key() else {
            continue;
        };
        if seen.contains(&key) {
            continue;
        }
        seen.insert(key.clone());
        let row = select
            .query_row(params![key.id, key.tenant], read_row)
            .optional()?
            .transpose()?;
        match row {
            Some(row) => {
                stored.rows.insert(key, row);
            }
            None if matches!(item, Ingest::Queued(_)) => first_queued_without_row.push(key),
            None => {}
        }
    }
    if first_queued_without_row.is_empty()
        || !tx.query_row("SELECT EXISTS (SELECT 1 FROM retired)", [], |r| r.get(0))?
    {
        return Ok(stored);
    }
    let mut retired = tx.prepare_cached(
        "SELECT queue_topic, queue_partition, queue_offset FROM retired \
         WHERE id = ? AND tenant = ?",
    )?;
    for key in first_queued_without_row {
        let pos = retired
            .query_row(params![key.id, key.tenant], |r| columns::queue(r, 0))
            .optional()?
            .flatten();
        if let Some(pos) = pos {
            stored.retired.insert(key, pos);
        }
    }
    Ok(stored)
}

/// Reads a row selected by [`load`]: a task's view, then what the merge needs besides.
fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Row>> {
    let view = match columns::task_view(r)? {
        Ok(view) => view,
        Err(e) => return Ok(Err(e)),
    };
    let rank = match columns::rank(&r.get::<_, Vec<u8>>(TASK_COLUMN_COUNT)?) {
        Ok(rank) => rank,
        Err(e) => return Ok(Err(e)),
    };
    let error_rank: Option<Vec<u8>> = r.get(TASK_COLUMN_COUNT + 1)?;
    Ok(Ok(Row::from_view(
        view,
        rank,
        error_rank.as_deref().and_then(columns::rank_from_bytes),
        r.get(TASK_COLUMN_COUNT + 2)?,
        r.get(TASK_COLUMN_COUNT + 3)?,
    )))
}

/// Writes what [`row::merge`] decided, appends the batch's status events and logs, and
/// records the offsets.
fn save(
    tx: &Transaction<'_>,
    batch: &[Ingest],
    merged: &Merged,
    offsets: &[(String, i32, i64)],
) -> Result<()> {
    append(tx, batch)?;
    let mut unretire = tx.prepare_cached("DELETE FROM retired WHERE id = ? AND tenant = ?")?;
    for key in &merged.unretire {
        unretire.execute(params![key.id, key.tenant])?;
    }
    upsert(tx, &merged.changed)?;
    let mut off = tx.prepare_cached(
        "INSERT INTO offsets (topic, partition, next_offset) VALUES (?, ?, ?) \
         ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
    )?;
    for (topic, partition, next) in offsets {
        off.execute(params![topic, partition, next])?;
    }
    Ok(())
}

/// Appends the status events (in batch order, which orders events of the same rank), the
/// log chunks of a batch, and which tasks each redrive submitted.
fn append(tx: &Transaction<'_>, batch: &[Ingest]) -> Result<()> {
    let mut insert_history = tx.prepare_cached(
        "INSERT INTO history (tenant, task_id, status, rank, attempt, at, error, reason, \
         scheduler_id, epoch, redrive_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?;
    let mut insert_log = tx.prepare_cached(
        "INSERT OR REPLACE INTO logs (seq, tenant, task_id, function, attempt, at, stream, \
         data, truncated, redrive_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?;
    let mut insert_redriven = tx.prepare_cached(
        "INSERT OR IGNORE INTO redriven (redrive_id, tenant, task_id, submitted_at, \
         redrive_by, queue_topic, queue_partition, queue_offset) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )?;
    for item in batch {
        match item {
            Ingest::Queued(q) => {
                if let Some(redrive) = &q.run.redrive_id {
                    insert_redriven.execute(params![
                        redrive,
                        q.tenant,
                        q.id,
                        q.submitted_at,
                        q.redrive_by,
                        q.topic,
                        q.partition,
                        q.offset,
                    ])?;
                }
            }
            Ingest::Status(ev, run) => {
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
                    run.epoch,
                    run.redrive_id,
                ])?;
            }
            Ingest::Log {
                log,
                redrive_id,
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
                    redrive_id,
                ])?;
            }
        }
    }
    Ok(())
}

/// Inserts or replaces the rows of `tasks`.
fn upsert(tx: &Transaction<'_>, rows: &HashMap<TaskKey, Row>) -> Result<()> {
    let mut upsert = tx.prepare_cached(
        "INSERT INTO tasks (tenant, id, function, status, status_rank, status_at, \
         submitted_at, started_at, finished_at, attempts, error, error_rank, reason, \
         scheduler_id, queued_seen, queue_topic, queue_partition, queue_offset, run_epoch, \
         redrive_id) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (id, tenant) DO UPDATE SET function = excluded.function, \
         status = excluded.status, status_rank = excluded.status_rank, \
         status_at = excluded.status_at, submitted_at = excluded.submitted_at, \
         started_at = excluded.started_at, finished_at = excluded.finished_at, \
         attempts = excluded.attempts, error = excluded.error, \
         error_rank = excluded.error_rank, reason = excluded.reason, \
         scheduler_id = excluded.scheduler_id, queued_seen = excluded.queued_seen, \
         queue_topic = excluded.queue_topic, queue_partition = excluded.queue_partition, \
         queue_offset = excluded.queue_offset, run_epoch = excluded.run_epoch, \
         redrive_id = excluded.redrive_id",
    )?;
    for (key, r) in rows {
        let (qt, qp, qo) = columns::queue_values(r.queue.as_ref());
        upsert.execute(params![
            key.tenant,
            key.id,
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
            r.epoch,
            r.redrive_id,
        ])?;
    }
    Ok(())
}

/// How many columns [`TASK_COLUMNS`] names: the columns [`load`] selects after them
/// follow from here.
const TASK_COLUMN_COUNT: usize = 16;

/// The position of a log record in the logs topic as one sortable number.
fn log_seq(partition: i32, offset: i64) -> i64 {
    (i64::from(partition) << 40) | (offset & ((1 << 40) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_merge_columns_follow_the_task_columns() {
        assert_eq!(TASK_COLUMNS.split(',').count(), TASK_COLUMN_COUNT);
    }

    #[test]
    fn log_positions_sort_by_partition_then_offset() {
        assert!(log_seq(0, (1 << 40) - 1) < log_seq(1, 0));
        assert!(log_seq(1, 5) < log_seq(1, 6));
    }
}
