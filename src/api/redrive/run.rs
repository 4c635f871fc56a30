//! Sending the selected tasks through again: which to leave as they are, the task and
//! record a redrive writes, and the writing itself, once per task and redrive id.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use rdkafka::producer::FutureRecord;

use super::REDRIVABLE;
use super::model::{RedriveAction, RedriveItem, SkipReason};
use crate::api::records::RawRecord;
use crate::api::{ApiError, ApiState, blocking};
use crate::codec;
use crate::kafka;
use crate::names::headers as h;
use crate::store::model::{QueuePosition, TaskView, rfc3339};
use crate::submit::SubmitError;
use crate::types::TaskKey;

/// Why a task found by the selection is left as it is, before its record is read.
pub fn precheck(task: &TaskView, already: bool) -> Option<SkipReason> {
    if !REDRIVABLE.contains(&task.status) {
        Some(SkipReason::NotRedrivable)
    } else if already {
        Some(SkipReason::AlreadyRedriven)
    } else {
        None
    }
}

/// Who redrives, when, and as which redrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub redrive_id: String,
    pub by: String,
    pub at: i64,
}

/// The task a redrive writes: the original's id, function, payload and headers, the
/// redrive's task headers (replacing those of an earlier redrive), submitted now.
pub fn redriven_task(
    mut task: codec::Task,
    id: &str,
    tenant: &str,
    from: &QueuePosition,
    stamp: &Stamp,
) -> codec::Task {
    task.headers
        .retain(|k, _| !h::REDRIVE_ALL.contains(&k.as_str()));
    task.headers
        .insert(h::REDRIVE_ID.into(), stamp.redrive_id.clone());
    task.headers.insert(h::REDRIVE_BY.into(), stamp.by.clone());
    task.headers.insert(h::REDRIVE_AT.into(), rfc3339(stamp.at));
    task.headers.insert(
        h::REDRIVE_FROM.into(),
        format!("{}[{}]@{}", from.topic, from.partition, from.offset),
    );
    task.id = id.to_string();
    task.tenant = Some(tenant.to_string());
    task.submitted_at = Some(stamp.at);
    task.not_before = None;
    task
}

/// The record headers of a redriven record: Avro, and the original's trace context and
/// ordering flag.
pub fn record_headers(original: &RawRecord) -> Vec<(&'static str, String)> {
    let mut out = vec![(h::CONTENT_TYPE, h::CONTENT_TYPE_AVRO.to_string())];
    for name in [h::TRACEPARENT, h::ORDERED] {
        if let Some(v) = original.header(name) {
            out.push((name, v.to_string()));
        }
    }
    out
}

/// Tasks recent redrives of this process submitted, until the index has read them back:
/// bounded, the oldest redrive forgotten first.
#[derive(Debug, Default)]
pub struct RecentRedrives {
    by_id: HashMap<String, HashSet<TaskKey>>,
    order: VecDeque<String>,
}

/// Redrive ids [`RecentRedrives`] remembers.
const RECENT_REDRIVES: usize = 256;

impl RecentRedrives {
    /// Whether redrive `redrive_id` submitted `key` here.
    pub fn contains(&self, redrive_id: &str, key: &TaskKey) -> bool {
        self.by_id.get(redrive_id).is_some_and(|s| s.contains(key))
    }

    /// Remembers that redrive `redrive_id` submitted `key`.
    pub fn insert(&mut self, redrive_id: &str, key: TaskKey) {
        if !self.by_id.contains_key(redrive_id) {
            self.order.push_back(redrive_id.to_string());
            while self.order.len() > RECENT_REDRIVES {
                if let Some(old) = self.order.pop_front() {
                    self.by_id.remove(&old);
                }
            }
        }
        self.by_id
            .entry(redrive_id.to_string())
            .or_default()
            .insert(key);
    }
}

/// The item of a found task, before anything is done with it.
fn item(task: &TaskView, action: RedriveAction) -> RedriveItem {
    RedriveItem {
        tenant: Some(task.tenant.clone()),
        function: Some(task.function.clone()),
        status: Some(task.status),
        action,
        reason: None,
        ..RedriveItem::missing(&task.id, SkipReason::NotFound)
    }
}

fn skipped(task: &TaskView, reason: SkipReason, detail: Option<String>) -> RedriveItem {
    RedriveItem {
        reason: Some(reason),
        detail,
        ..item(task, RedriveAction::Skipped)
    }
}

/// A task ready to be written again.
struct Pending {
    task: TaskView,
    topic: String,
    key: Vec<u8>,
    value: Vec<u8>,
    headers: Vec<(&'static str, String)>,
}

/// Redrives `found` (or, with `dry_run`, says what would go): an item for each, after
/// `items` (those the selection did not find).
pub async fn run(
    s: &ApiState,
    stamp: &Stamp,
    found: Vec<TaskView>,
    mut items: Vec<RedriveItem>,
    dry_run: bool,
) -> Result<Vec<RedriveItem>, ApiError> {
    // One redrive at a time: a retry racing its original waits for it, then skips.
    let mut recent = s.recent_redrives.lock().await;
    let indexed = indexed_redriven(s, &stamp.redrive_id, &found).await?;
    let mut chosen = Vec::new();
    for t in found {
        let key = TaskKey::new(&t.tenant, &t.id);
        let already = indexed.contains(&key) || recent.contains(&stamp.redrive_id, &key);
        match precheck(&t, already) {
            Some(reason) => items.push(skipped(&t, reason, None)),
            None => chosen.push(t),
        }
    }
    for p in prepare(s, stamp, chosen, &mut items).await? {
        let mut it = item(&p.task, RedriveAction::WouldSubmit);
        it.topic = Some(p.topic.clone());
        if !dry_run {
            let record = FutureRecord::to(&p.topic)
                .key(&p.key)
                .payload(&p.value)
                .headers(kafka::headers(
                    p.headers.iter().map(|(k, v)| (*k, v.as_str())),
                ));
            let (t, rid) = (&p.task, &stamp.redrive_id);
            match s.producer.send(record, Duration::from_secs(30)).await {
                Ok(d) => {
                    recent.insert(rid, TaskKey::new(&t.tenant, &t.id));
                    it.action = RedriveAction::Submitted;
                    it.partition = Some(d.partition);
                    it.offset = Some(d.offset);
                    tracing::info!(task_id = %t.id, tenant = %t.tenant, redrive_id = %rid, by = %stamp.by, topic = %p.topic, "task redriven");
                }
                Err((e, _)) => {
                    tracing::warn!(task_id = %t.id, tenant = %t.tenant, error = %e, "redrive: Kafka did not acknowledge the task");
                    it.action = RedriveAction::Skipped;
                    it.reason = Some(SkipReason::NotAcknowledged);
                    it.topic = None;
                }
            }
        }
        items.push(it);
    }
    Ok(items)
}

/// The tasks of `found` that the index has seen redriven by `redrive_id`.
async fn indexed_redriven(
    s: &ApiState,
    redrive_id: &str,
    found: &[TaskView],
) -> Result<HashSet<TaskKey>, ApiError> {
    let mut by_tenant: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in found {
        by_tenant
            .entry(t.tenant.clone())
            .or_default()
            .push(t.id.clone());
    }
    let mut indexed = HashSet::new();
    for (tenant, ids) in by_tenant {
        let reader = s.reader.clone();
        let (rid, tn) = (redrive_id.to_string(), tenant.clone());
        let done = blocking(move || reader.redriven(&rid, &tn, &ids)).await?;
        indexed.extend(done.into_iter().map(|id| TaskKey::new(&tenant, &id)));
    }
    Ok(indexed)
}

/// Reads the records of `chosen` back and builds what each redrive writes; a task that
/// cannot go gets an item in `items` instead.
async fn prepare(
    s: &ApiState,
    stamp: &Stamp,
    chosen: Vec<TaskView>,
    items: &mut Vec<RedriveItem>,
) -> Result<Vec<Pending>, ApiError> {
    let positions: Vec<QueuePosition> = chosen.iter().filter_map(|t| t.queue.clone()).collect();
    let records = s.records.clone();
    let mut raw = tokio::task::spawn_blocking(move || records.read(&positions))
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(|e| e.answer("Kafka did not return the task records"))?;
    let mut pending = Vec::new();
    for t in chosen {
        let Some((pos, record)) = t
            .queue
            .clone()
            .and_then(|pos| raw.remove(&pos).flatten().map(|r| (pos, r)))
        else {
            items.push(skipped(&t, SkipReason::RecordGone, None));
            continue;
        };
        let original = match record.task() {
            Ok(task) => task,
            Err(e) => {
                items.push(skipped(&t, SkipReason::Undecodable, Some(e.to_string())));
                continue;
            }
        };
        let task = redriven_task(original, &t.id, &t.tenant, &pos, stamp);
        let topic = match s.submitter.topic_for(&t.tenant, &task.function) {
            Ok(topic) => topic,
            Err(e @ (SubmitError::UnknownFunction { .. } | SubmitError::UnknownTenant(_))) => {
                items.push(skipped(
                    &t,
                    SkipReason::UnknownFunction,
                    Some(e.to_string()),
                ));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let value = codec::encode_task(&task).map_err(|e| ApiError::internal(&e))?;
        let key = record
            .key
            .clone()
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| t.id.clone().into_bytes());
        pending.push(Pending {
            headers: record_headers(&record),
            task: t,
            topic,
            key,
            value,
        });
    }
    Ok(pending)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Task, TaskStatus};

    fn view(status: TaskStatus) -> TaskView {
        TaskView {
            id: "t1".into(),
            tenant: "acme".into(),
            function: "f".into(),
            status,
            submitted_at: 1,
            started_at: None,
            finished_at: None,
            updated_at: 1,
            attempts: 1,
            error: None,
            reason: None,
            scheduler_id: None,
            queue: None,
            redrive_id: None,
        }
    }

    #[test]
    fn only_ended_unsuccessful_tasks_are_redriven_once_per_redrive() {
        for s in REDRIVABLE {
            assert_eq!(precheck(&view(s), false), None);
            assert_eq!(precheck(&view(s), true), Some(SkipReason::AlreadyRedriven));
        }
        for s in [
            TaskStatus::Queued,
            TaskStatus::Running,
            TaskStatus::Retrying,
            TaskStatus::Succeeded,
        ] {
            assert_eq!(precheck(&view(s), false), Some(SkipReason::NotRedrivable));
        }
    }

    #[test]
    fn a_skipped_task_says_what_it_was_and_why() {
        let i = skipped(&view(TaskStatus::Failed), SkipReason::RecordGone, None);
        assert_eq!(
            (i.id.as_str(), i.tenant.as_deref(), i.function.as_deref()),
            ("t1", Some("acme"), Some("f"))
        );
        assert_eq!(
            (i.status, i.action, i.reason),
            (
                Some(TaskStatus::Failed),
                RedriveAction::Skipped,
                Some(SkipReason::RecordGone)
            )
        );
        let w = item(&view(TaskStatus::Failed), RedriveAction::WouldSubmit);
        assert_eq!(
            (w.action, w.reason, w.topic),
            (RedriveAction::WouldSubmit, None, None)
        );
    }

    #[test]
    fn a_redriven_task_keeps_what_it_was_and_says_which_redrive_sent_it() {
        let original = Task {
            id: String::new(),
            tenant: None,
            function: "resize".into(),
            payload: b"{\"w\":1}".to_vec(),
            headers: BTreeMap::from([
                ("origin".to_string(), "web".to_string()),
                (h::REDRIVE_ID.to_string(), "older".to_string()),
                (h::REDRIVE_FROM.to_string(), "x".to_string()),
            ]),
            submitted_at: Some(5),
            not_before: Some(99),
        };
        let from = QueuePosition {
            topic: "tw.q.acme".into(),
            partition: 2,
            offset: 41,
        };
        let stamp = Stamp {
            redrive_id: "r-1".into(),
            by: "admin".into(),
            at: 1_764_340_000_000,
        };
        let t = redriven_task(original.clone(), "order-7", "acme", &from, &stamp);
        assert_eq!(t.id, "order-7");
        assert_eq!(t.tenant.as_deref(), Some("acme"));
        assert_eq!(
            (t.function.as_str(), &t.payload),
            ("resize", &original.payload)
        );
        assert_eq!((t.submitted_at, t.not_before), (Some(stamp.at), None));
        assert_eq!(t.headers["origin"], "web");
        assert_eq!(t.headers[h::REDRIVE_ID], "r-1");
        assert_eq!(t.headers[h::REDRIVE_BY], "admin");
        assert_eq!(t.headers[h::REDRIVE_AT], "2025-11-28T14:26:40.000Z");
        assert_eq!(t.headers[h::REDRIVE_FROM], "tw.q.acme[2]@41");
        assert_eq!(t.headers.len(), 5);
    }

    #[test]
    fn recent_redrives_remember_what_they_sent_and_forget_the_oldest() {
        let mut r = RecentRedrives::default();
        let k = TaskKey::new("acme", "t1");
        r.insert("r1", k.clone());
        assert!(r.contains("r1", &k));
        assert!(!r.contains("r2", &k));
        assert!(!r.contains("r1", &TaskKey::new("globex", "t1")));
        for i in 0..RECENT_REDRIVES {
            r.insert(&format!("other-{i}"), k.clone());
        }
        assert!(!r.contains("r1", &k), "the oldest redrive is forgotten");
        assert!(r.contains("other-1", &k));
    }

    #[test]
    fn redriven_records_keep_trace_context_and_ordering() {
        let raw = RawRecord {
            key: Some(b"k".to_vec()),
            value: Vec::new(),
            headers: vec![
                (h::TRACEPARENT.into(), b"00-abc".to_vec()),
                (h::ORDERED.into(), b"true".to_vec()),
                (h::CONTENT_TYPE.into(), b"application/json".to_vec()),
                ("x-other".into(), b"1".to_vec()),
            ],
            timestamp: None,
        };
        let hs = record_headers(&raw);
        assert_eq!(
            hs,
            vec![
                (h::CONTENT_TYPE, h::CONTENT_TYPE_AVRO.to_string()),
                (h::TRACEPARENT, "00-abc".to_string()),
                (h::ORDERED, "true".to_string()),
            ]
        );
    }
}
