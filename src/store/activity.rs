//! Per-minute task counts of each queue (`GET /v1/queues`): submitted, completed and
//! failed in each minute, and queued and running at the end of each.
//!
//! The counts come from the current rows of `tasks`, not from the history: each query
//! below counts tasks by the minute one of their times falls in, and what was queued or
//! running when the window opens. Queued and running at the end of each minute then
//! follow by adding up, minute by minute.

use std::collections::HashMap;

use rusqlite::params;

use super::model::MinuteCounts;
use super::{Reader, Result, query};

/// What a count adds to.
#[derive(Debug, Clone, Copy)]
enum Count {
    /// Per minute: tasks submitted.
    Submitted,
    /// Per minute: tasks whose first attempt started.
    Started,
    /// Per minute: tasks that ended without ever starting.
    EndedUnstarted,
    /// Per minute: tasks that ended after starting.
    EndedStarted,
    /// Per minute: tasks that succeeded or failed.
    Completed,
    /// Per minute: tasks that failed.
    Failed,
    /// Tasks queued when the window opens.
    QueuedBefore,
    /// Tasks running when the window opens.
    RunningBefore,
}

/// One query: its rows are a queue topic, a minute of the window (or `NULL` for counts
/// at its start) and then one column for each of `counts`. `?1` and `?2` are the start
/// and end of the window; `{t}` stands for the tenant condition (with `?3`).
struct Measure {
    sql: &'static str,
    counts: &'static [Count],
}

const MEASURES: [Measure; 5] = [
    Measure {
        sql: "SELECT queue_topic, (submitted_at - ?1) / 60000 AS b, count(*) FROM tasks \
              WHERE submitted_at >= ?1 AND submitted_at < ?2 {t} GROUP BY queue_topic, b",
        counts: &[Count::Submitted],
    },
    Measure {
        sql: "SELECT queue_topic, (started_at - ?1) / 60000 AS b, count(*), \
              sum(submitted_at < ?1) FROM tasks INDEXED BY tasks_started \
              WHERE started_at >= ?1 AND started_at < ?2 {t} GROUP BY queue_topic, b",
        counts: &[Count::Started, Count::QueuedBefore],
    },
    Measure {
        sql: "SELECT queue_topic, (finished_at - ?1) / 60000 AS b, \
              sum(status IN ('succeeded', 'failed')), sum(status = 'failed'), \
              sum(started_at IS NULL), sum(started_at IS NOT NULL), \
              sum(started_at IS NULL AND submitted_at < ?1), \
              sum(started_at IS NOT NULL AND started_at < ?1) FROM tasks INDEXED BY tasks_finished \
              WHERE finished_at >= ?1 AND finished_at < ?2 {t} GROUP BY queue_topic, b",
        counts: &[
            Count::Completed,
            Count::Failed,
            Count::EndedUnstarted,
            Count::EndedStarted,
            Count::QueuedBefore,
            Count::RunningBefore,
        ],
    },
    Measure {
        sql: "SELECT queue_topic, NULL, count(*) FROM tasks \
              WHERE status = 'queued' AND submitted_at < ?1 AND ?2 = ?2 {t} GROUP BY queue_topic",
        counts: &[Count::QueuedBefore],
    },
    Measure {
        sql: "SELECT queue_topic, NULL, count(*) FROM tasks \
              WHERE status IN ('running', 'retrying') AND started_at < ?1 AND ?2 = ?2 {t} \
              GROUP BY queue_topic",
        counts: &[Count::RunningBefore],
    },
];

/// The counts of one minute of one queue.
#[derive(Debug, Default, Clone, Copy)]
struct Minute {
    submitted: i64,
    started: i64,
    ended_unstarted: i64,
    ended_started: i64,
    completed: i64,
    failed: i64,
}

/// The counts of one queue.
#[derive(Debug, Default)]
struct Queue {
    queued_before: i64,
    running_before: i64,
    minutes: Vec<Minute>,
}

impl Queue {
    /// Adds `n` to `count`, of the minute `minute` for a per-minute count (none when that
    /// minute is outside the window).
    fn add(&mut self, count: Count, minute: Option<i64>, n: i64) {
        let m = minute
            .and_then(|b| usize::try_from(b).ok())
            .and_then(|b| self.minutes.get_mut(b));
        match (count, m) {
            (Count::QueuedBefore, _) => self.queued_before += n,
            (Count::RunningBefore, _) => self.running_before += n,
            (_, None) => {}
            (Count::Submitted, Some(m)) => m.submitted += n,
            (Count::Started, Some(m)) => m.started += n,
            (Count::EndedUnstarted, Some(m)) => m.ended_unstarted += n,
            (Count::EndedStarted, Some(m)) => m.ended_started += n,
            (Count::Completed, Some(m)) => m.completed += n,
            (Count::Failed, Some(m)) => m.failed += n,
        }
    }

    /// The counts of each minute, from the window's `start`.
    fn per_minute(&self, start: i64) -> Vec<MinuteCounts> {
        let clamp = |v: i64| u64::try_from(v).unwrap_or(0);
        let mut queued = self.queued_before;
        let mut running = self.running_before;
        (0i64..)
            .zip(&self.minutes)
            .map(|(b, m)| {
                queued += m.submitted - m.started - m.ended_unstarted;
                running += m.started - m.ended_started;
                MinuteCounts {
                    minute: start + b * 60_000,
                    submitted: clamp(m.submitted),
                    completed: clamp(m.completed),
                    failed: clamp(m.failed),
                    queued: clamp(queued),
                    running: clamp(running),
                }
            })
            .collect()
    }
}

impl Reader {
    /// Per queue topic, task counts for each of the last `minutes` minutes (see
    /// [`MinuteCounts`]); the last entry is the current, partial minute.
    pub fn activity(
        &self,
        tenant: Option<&str>,
        now: i64,
        minutes: u32,
    ) -> Result<HashMap<String, Vec<MinuteCounts>>> {
        let (start, end) = query::minute_window(now, minutes);
        let fresh = || Queue {
            minutes: vec![Minute::default(); minutes as usize],
            ..Queue::default()
        };
        let mut queues: HashMap<String, Queue> = HashMap::new();
        self.with(|conn| {
            // A literal `tenant = ?` (not `?3 IS NULL OR …`) lets SQLite use the tenant
            // indexes; both forms keep the same parameters.
            let t = if tenant.is_some() {
                "AND tenant = ?3 AND queue_topic IS NOT NULL"
            } else {
                "AND ?3 IS NULL AND queue_topic IS NOT NULL"
            };
            for measure in &MEASURES {
                let mut q = conn.prepare_cached(&measure.sql.replace("{t}", t))?;
                let mut rows = q.query(params![start, end, tenant])?;
                while let Some(r) = rows.next()? {
                    let queue = queues.entry(r.get(0)?).or_insert_with(fresh);
                    let minute: Option<i64> = r.get(1)?;
                    for (i, count) in measure.counts.iter().enumerate() {
                        queue.add(*count, minute, r.get(i + 2)?);
                    }
                }
            }
            Ok(())
        })?;
        Ok(queues
            .into_iter()
            .map(|(topic, q)| (topic, q.per_minute(start)))
            .collect())
    }
}
