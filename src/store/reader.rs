//! The API's read access: lookups of one task, listings, a task's history and logs.
//! Readers use connections of their own (SQLite in WAL mode lets them read while the
//! writer writes), from a small pool; the SQL of listings is built in [`super::query`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags, params};

use crate::types::TopicPartition;

use super::model::{
    HistoryEvent, LogEntry, QueuePartition, SchedulerSeen, TaskDetail, TaskPage, TaskView,
};
use super::query::{self, TaskFilter};
use super::{Result, columns, open_err, schema};

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
    /// A reader of the store at `path`, which a [`Writer`](super::Writer) has created.
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
        schema::configure(&conn)?;
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
                Some(prefix) => few_with_prefix(conn, prefix)?,
                None => false,
            };
            let sql = query::list_sql_hinted(filter, by_id);
            let mut stmt = conn.prepare_cached(&sql.text)?;
            let rows = stmt.query_map(
                rusqlite::params_from_iter(sql.params.iter()),
                columns::task_view,
            )?;
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
            let text = format!(
                "SELECT {} FROM tasks WHERE id = ?1 AND (?2 IS NULL OR tenant = ?2) \
                 ORDER BY tenant LIMIT 20",
                query::TASK_COLUMNS
            );
            let mut stmt = conn.prepare_cached(&text)?;
            let rows = stmt.query_map(params![id, tenant], columns::task_view)?;
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
                "SELECT status, attempt, at, error, reason, scheduler_id, epoch, redrive_id \
                 FROM history WHERE task_id = ? AND tenant = ? ORDER BY epoch, rank, seq",
            )?;
            let rows = stmt.query_map(params![task.id, task.tenant], |r| {
                let status: String = r.get(0)?;
                Ok((
                    status,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    columns::reason(r, 4)?,
                    r.get(5)?,
                    r.get::<_, i64>(6)?,
                    r.get(7)?,
                ))
            })?;
            let mut out = Vec::new();
            // Runs are numbered in epoch order: 0 for the first.
            let (mut run, mut last_epoch) = (0u32, None);
            for row in rows {
                let (status, attempt, at, error, reason, scheduler_id, epoch, redrive_id) = row?;
                if last_epoch.is_some_and(|e| e != epoch) {
                    run = run.saturating_add(1);
                }
                if last_epoch.is_none() && epoch != 0 {
                    // The first run's events are gone (compaction, retention): still count it.
                    run = 1;
                }
                last_epoch = Some(epoch);
                out.push(HistoryEvent {
                    status: columns::status(status)?,
                    attempt,
                    at,
                    error,
                    reason,
                    scheduler_id,
                    run,
                    redrive_id,
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
                "SELECT seq, attempt, at, stream, data, truncated, redrive_id FROM logs \
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
                        redrive_id: r.get(6)?,
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
    ) -> Result<HashMap<TopicPartition, u64>> {
        self.with(|conn| {
            let t = tenant_is(tenant);
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT queue_topic, queue_partition, count(*) FROM tasks \
                 WHERE status IN ('running', 'retrying') AND {t} \
                 AND queue_topic IS NOT NULL GROUP BY queue_topic, queue_partition"
            ))?;
            let rows = stmt.query_map(params![tenant], |r| {
                let tp = TopicPartition::new(r.get::<_, String>(0)?, r.get(1)?);
                Ok((tp, r.get::<_, i64>(2)?.max(0) as u64))
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// The schedulers that started tasks at or after `since` (ms), with the queue
    /// partitions they took them from, most recent first. Read off the tasks (their
    /// latest start and the scheduler of their latest event), through the start-time index.
    pub fn schedulers_since(&self, tenant: Option<&str>, since: i64) -> Result<Vec<SchedulerSeen>> {
        self.with(|conn| {
            let t = tenant_is(tenant);
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT scheduler_id, queue_topic, queue_partition, count(*), max(started_at) \
                 FROM tasks WHERE started_at >= ?2 AND {t} AND scheduler_id IS NOT NULL \
                 AND queue_topic IS NOT NULL AND queue_partition IS NOT NULL \
                 GROUP BY scheduler_id, queue_topic, queue_partition \
                 ORDER BY scheduler_id, queue_topic, queue_partition"
            ))?;
            let rows = stmt.query_map(params![tenant, since], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i32>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })?;
            let mut out: Vec<SchedulerSeen> = Vec::new();
            for row in rows {
                let (id, topic, partition, n, last) = row?;
                if out.last().is_none_or(|s| s.scheduler_id != id) {
                    out.push(SchedulerSeen {
                        scheduler_id: id,
                        tasks_started: 0,
                        last_started_at: last,
                        partitions: Vec::new(),
                    });
                }
                if let Some(s) = out.last_mut() {
                    s.tasks_started += u64::try_from(n).unwrap_or(0);
                    s.last_started_at = s.last_started_at.max(last);
                    s.partitions.push(QueuePartition { topic, partition });
                }
            }
            out.sort_by(|a, b| {
                b.last_started_at
                    .cmp(&a.last_started_at)
                    .then_with(|| a.scheduler_id.cmp(&b.scheduler_id))
            });
            Ok(out)
        })
    }

    /// Which of `ids` (of `tenant`) redrive `redrive_id` has already submitted, as far as
    /// the task records read so far tell.
    pub fn redriven(
        &self,
        redrive_id: &str,
        tenant: &str,
        ids: &[String],
    ) -> Result<std::collections::HashSet<String>> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT 1 FROM redriven WHERE redrive_id = ? AND tenant = ? AND task_id = ?",
            )?;
            let mut out = std::collections::HashSet::new();
            for id in ids {
                if stmt.exists(params![redrive_id, tenant, id])? {
                    out.insert(id.clone());
                }
            }
            Ok(out)
        })
    }

    /// How many tasks the store holds.
    pub fn count(&self) -> Result<u64> {
        self.with(|conn| {
            let n: i64 = conn.query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }
}

/// Whether at most [`ID_INDEX_MAX`] tasks have an id starting with `prefix`.
fn few_with_prefix(conn: &Connection, prefix: &str) -> Result<bool> {
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
    Ok(n <= ID_INDEX_MAX)
}

/// The condition on `tenant` for a query whose first parameter (`?1`) is the tenant, or
/// NULL for every tenant.
fn tenant_is(tenant: Option<&str>) -> &'static str {
    if tenant.is_some() {
        "tenant = ?1"
    } else {
        "?1 IS NULL"
    }
}
