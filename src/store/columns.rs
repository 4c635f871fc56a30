//! How values sit in the columns of the store and are read back: ranks as bytes that sort
//! like the ranks (so SQLite can order by them), statuses and failure reasons by name,
//! and a queue position as three nullable columns. Rows of `tasks` are read here too,
//! for the reader and the writer alike.

use crate::codec::{FailureReason, TaskStatus};

use super::model::{QueuePosition, TaskView};
use super::{Result, StoreError};

/// A lifecycle rank, see [`super::status_rank`].
pub(super) type Rank = [i64; 4];

/// The rank as bytes that sort like the rank (big-endian, sign bit flipped).
pub(super) fn rank_bytes(r: Rank) -> Vec<u8> {
    r.iter()
        .flat_map(|v| ((*v as u64) ^ (1 << 63)).to_be_bytes())
        .collect()
}

/// Reads what [`rank_bytes`] wrote; `None` for bytes of another length.
pub(super) fn rank_from_bytes(b: &[u8]) -> Option<Rank> {
    if b.len() != 32 {
        return None;
    }
    let mut out = [0i64; 4];
    for (slot, w) in out.iter_mut().zip(b.chunks_exact(8)) {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        *slot = (u64::from_be_bytes(word) ^ (1 << 63)) as i64;
    }
    Some(out)
}

/// The rank stored in a row, or why it cannot be read.
pub(super) fn rank(b: &[u8]) -> Result<Rank> {
    rank_from_bytes(b).ok_or_else(|| StoreError::Corrupt {
        what: "status rank",
        value: format!("{} bytes", b.len()),
    })
}

/// The status stored in a row, or why it cannot be read.
pub(super) fn status(name: String) -> Result<TaskStatus> {
    name.parse().map_err(|_| StoreError::Corrupt {
        what: "status",
        value: name,
    })
}

/// The failure reason in column `idx`; a name this build does not know reads as none.
pub(super) fn reason(r: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Option<FailureReason>> {
    let name: Option<String> = r.get(idx)?;
    Ok(name.as_deref().and_then(parse_reason))
}

/// The serde name, which is also [`FailureReason::as_str`]'s (see the test below).
fn parse_reason(s: &str) -> Option<FailureReason> {
    use serde::Deserialize;
    use serde::de::IntoDeserializer;
    let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> = s.into_deserializer();
    FailureReason::deserialize(de).ok()
}

/// The queue position in columns `first` (topic), `first + 1` (partition) and
/// `first + 2` (offset); `None` unless all three are set.
pub(super) fn queue(
    r: &rusqlite::Row<'_>,
    first: usize,
) -> rusqlite::Result<Option<QueuePosition>> {
    let topic: Option<String> = r.get(first)?;
    let partition: Option<i32> = r.get(first + 1)?;
    let offset: Option<i64> = r.get(first + 2)?;
    Ok(match (topic, partition, offset) {
        (Some(topic), Some(partition), Some(offset)) => Some(QueuePosition {
            topic,
            partition,
            offset,
        }),
        _ => None,
    })
}

/// A queue position as the values of its three columns.
pub(super) fn queue_values(q: Option<&QueuePosition>) -> (Option<&str>, Option<i32>, Option<i64>) {
    (
        q.map(|q| q.topic.as_str()),
        q.map(|q| q.partition),
        q.map(|q| q.offset),
    )
}

/// Reads a row selected with [`super::query::TASK_COLUMNS`] (which other columns may
/// follow).
pub(super) fn task_view(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<TaskView>> {
    let status = match status(r.get(3)?) {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
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
        reason: reason(r, 10)?,
        scheduler_id: r.get(11)?,
        queue: queue(r, 12)?,
        redrive_id: r.get(15)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_back_by_their_names() {
        for name in "executor timeout non_retryable malformed unknown_function payload_too_large \
                     tenant_mismatch"
            .split_whitespace()
        {
            assert_eq!(parse_reason(name).map(FailureReason::as_str), Some(name));
        }
        assert_eq!(parse_reason("Executor"), None);
        assert_eq!(parse_reason(""), None);
    }

    #[test]
    fn ranks_read_back_from_their_bytes_only() {
        let r = [-1, 0, i64::MIN, i64::MAX];
        assert_eq!(rank(&rank_bytes(r)).ok(), Some(r));
        assert!(matches!(
            rank(&[0; 31]),
            Err(StoreError::Corrupt {
                what: "status rank",
                ..
            })
        ));
    }
}
