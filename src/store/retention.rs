//! Retention: deletes the tasks that finished before the retention period, with their
//! history and logs, in transactions of bounded size so the readers are never held up
//! for long.
//!
//! A task can finish before its task record is read (the status topic runs ahead of a
//! lagging queue partition). Deleted then, it would come back as queued when that record
//! arrives; so its record's position is kept in `retired` until the record is read or
//! the retention period has passed again.

use std::collections::HashMap;

use rusqlite::{Transaction, params};

use crate::types::{TaskKey, TopicPartition};

use super::model::QueuePosition;
use super::{Result, Writer, columns};

/// A task retention deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Victim {
    key: TaskKey,
    /// Whether its task record has been read.
    queued_seen: bool,
    queue: Option<QueuePosition>,
}

impl Victim {
    /// The position of its task record when that record is still to be read: not read
    /// with the task, and not behind the offsets consumed so far.
    fn unread_record(&self, consumed: &HashMap<TopicPartition, i64>) -> Option<&QueuePosition> {
        let pos = self.queue.as_ref().filter(|_| !self.queued_seen)?;
        let tp = TopicPartition::new(pos.topic.clone(), pos.partition);
        let read_past = consumed.get(&tp).is_some_and(|next| *next > pos.offset);
        (!read_past).then_some(pos)
    }
}

impl Writer {
    /// Deletes tasks that finished before `cutoff` (ms), with their history and logs, in
    /// transactions of at most `chunk` tasks; also logs and history older than `cutoff`
    /// that belong to no task. Returns how many tasks were deleted.
    pub fn sweep(&mut self, cutoff: i64, now: i64, chunk: usize) -> Result<u64> {
        let mut deleted = 0u64;
        let consumed = self.offsets()?;
        loop {
            let tx = self.conn.transaction()?;
            let victims = victims(&tx, cutoff, chunk)?;
            delete(&tx, &victims, &consumed, now)?;
            tx.commit()?;
            deleted += victims.len() as u64;
            if victims.is_empty() || victims.len() < chunk {
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

/// Up to `chunk` tasks that finished before `cutoff`.
fn victims(tx: &Transaction<'_>, cutoff: i64, chunk: usize) -> Result<Vec<Victim>> {
    let mut stmt = tx.prepare_cached(
        "SELECT tenant, id, queued_seen, queue_topic, queue_partition, queue_offset \
         FROM tasks WHERE finished_at < ? LIMIT ?",
    )?;
    let rows = stmt.query_map(params![cutoff, chunk as i64], |r| {
        Ok(Victim {
            key: TaskKey::new(r.get::<_, String>(0)?, r.get::<_, String>(1)?),
            queued_seen: r.get(2)?,
            queue: columns::queue(r, 3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Deletes the tasks with their history and logs, and remembers those whose task record
/// is still to be read.
fn delete(
    tx: &Transaction<'_>,
    victims: &[Victim],
    consumed: &HashMap<TopicPartition, i64>,
    now: i64,
) -> Result<()> {
    let mut del_task = tx.prepare_cached("DELETE FROM tasks WHERE id = ? AND tenant = ?")?;
    let mut del_hist = tx.prepare_cached("DELETE FROM history WHERE task_id = ? AND tenant = ?")?;
    let mut del_logs = tx.prepare_cached("DELETE FROM logs WHERE task_id = ? AND tenant = ?")?;
    let mut del_redriven =
        tx.prepare_cached("DELETE FROM redriven WHERE task_id = ? AND tenant = ?")?;
    let mut retire = tx.prepare_cached(
        "INSERT OR REPLACE INTO retired (tenant, id, queue_topic, queue_partition, \
         queue_offset, retired_at) VALUES (?, ?, ?, ?, ?, ?)",
    )?;
    for v in victims {
        let TaskKey { tenant, id } = &v.key;
        del_task.execute(params![id, tenant])?;
        del_hist.execute(params![id, tenant])?;
        del_logs.execute(params![id, tenant])?;
        del_redriven.execute(params![id, tenant])?;
        if let Some(pos) = v.unread_record(consumed) {
            retire.execute(params![
                tenant,
                id,
                pos.topic,
                pos.partition,
                pos.offset,
                now
            ])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn victim(queued_seen: bool, offset: i64) -> Victim {
        Victim {
            key: TaskKey::new("acme", "t"),
            queued_seen,
            queue: Some(QueuePosition {
                topic: "tw.q.acme".into(),
                partition: 1,
                offset,
            }),
        }
    }

    #[test]
    fn only_a_record_still_to_be_read_is_remembered() {
        let consumed = HashMap::from([(TopicPartition::new("tw.q.acme", 1), 8)]);
        assert_eq!(
            victim(false, 8).unread_record(&consumed).map(|p| p.offset),
            Some(8),
            "the next offset to read"
        );
        assert_eq!(
            victim(false, 7).unread_record(&consumed),
            None,
            "read already"
        );
        assert_eq!(
            victim(true, 9).unread_record(&consumed),
            None,
            "read with the task"
        );
        assert_eq!(
            victim(false, 0)
                .unread_record(&HashMap::new())
                .map(|p| p.offset),
            Some(0),
            "nothing of its partition consumed yet"
        );
        let nowhere = Victim {
            queue: None,
            ..victim(false, 0)
        };
        assert_eq!(nowhere.unread_record(&HashMap::new()), None);
    }
}
