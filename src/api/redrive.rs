//! `POST /v1/tasks/redrive`: sends failed, expired and stopped tasks through again once
//! their cause is fixed.
//!
//! A redrive selects tasks with the filters of `GET /v1/tasks` (a page at a time, with
//! its cursor) or by id, reads each task's record back from its queue topic, and writes
//! the same task (id, function, payload, headers, key, trace context) to its function's
//! queue, with a new submission time and the `tw-redrive-*` task headers. The scheduler
//! runs it as a new run of the same task; the index shows that run's attempts next to the
//! earlier ones.
//!
//! Idempotent by redrive id: a task a redrive id has submitted is skipped when the same
//! id comes again, as the index tells (it reads the redriven records back) and, until the
//! index has read them, as this process remembers.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use rdkafka::producer::FutureRecord;
use serde::{Deserialize, Serialize};

use super::records::RawRecord;
use super::{ApiError, ApiState, blocking, present};
use crate::clock::now_ms;
use crate::codec::{self, TaskStatus};
use crate::config::{Principal, check_name};
use crate::kafka;
use crate::names::headers as h;
use crate::store::Lookup;
use crate::store::model::{QueuePosition, TaskView, rfc3339};
use crate::store::query::TaskFilter;
use crate::submit::SubmitError;
use crate::types::TaskKey;

/// The statuses a task can be redriven from.
pub const REDRIVABLE: [TaskStatus; 3] =
    [TaskStatus::Failed, TaskStatus::Expired, TaskStatus::Stopped];

/// Most ids one request may name.
pub const MAX_IDS: usize = 1000;

/// Longest redrive id, in characters.
pub const MAX_REDRIVE_ID: usize = 64;

/// The body of `POST /v1/tasks/redrive`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    /// Names the redrive; the same id again never submits a task twice. A new ULID when
    /// left out (the answer carries it: pass it back to resume).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub redrive_id: Option<String>,
    /// These tasks (with `tenant` when an admin token must say whose).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "not_null"
    )]
    pub ids: Option<Vec<String>>,
    /// The tasks `GET /v1/tasks` lists with these parameters (except `cursor` and
    /// `limit`); `status` defaults to `failed,expired,stopped`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "not_null"
    )]
    pub filter: Option<BTreeMap<String, String>>,
    /// The tenant of the `ids`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub tenant: Option<String>,
    /// Continue a `filter` selection after the previous answer's `next_cursor`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub cursor: Option<String>,
    /// Tasks of a `filter` selection per request, 1 to 1000 (default 100).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole_number"
    )]
    pub limit: Option<u32>,
    /// Only say what would be submitted.
    #[serde(default)]
    pub dry_run: bool,
}

/// An optional field that, when present, must not be `null` (the specification has no
/// `null` for it).
fn not_null<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A whole number, written as JSON likes (`248` or `248.0`); not `null`.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    let whole = n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= f64::from(u32::MAX))
            .map(|f| f as u64)
    });
    whole
        .and_then(|v| u32::try_from(v).ok())
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("`{n}` is not a whole number of tasks")))
}

/// What happened to one selected task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedriveAction {
    /// Written to its queue again.
    Submitted,
    /// Would be written (a dry run).
    WouldSubmit,
    /// Left as it is (`reason` says why).
    Skipped,
}

/// Why a selected task was not redriven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Its status is not `failed`, `expired` or `stopped` (it may be running again).
    NotRedrivable,
    /// This redrive id has already submitted it.
    AlreadyRedriven,
    /// No such task (or one of another tenant).
    NotFound,
    /// Several tenants use the id; pass `tenant`.
    Ambiguous,
    /// The queue topic no longer holds its record.
    RecordGone,
    /// Its record is not a task (it failed `malformed`).
    Undecodable,
    /// Its function is not configured (any more).
    UnknownFunction,
    /// Kafka did not acknowledge it; the same redrive id again retries it.
    NotAcknowledged,
}

impl SkipReason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotRedrivable => "not_redrivable",
            Self::AlreadyRedriven => "already_redriven",
            Self::NotFound => "not_found",
            Self::Ambiguous => "ambiguous",
            Self::RecordGone => "record_gone",
            Self::Undecodable => "undecodable",
            Self::UnknownFunction => "unknown_function",
            Self::NotAcknowledged => "not_acknowledged",
        }
    }
}

/// One selected task in the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedriveItem {
    pub id: String,
    pub tenant: Option<String>,
    pub function: Option<String>,
    /// Its status when selected.
    pub status: Option<TaskStatus>,
    pub action: RedriveAction,
    pub reason: Option<SkipReason>,
    /// More about a skip, for people.
    pub detail: Option<String>,
    /// Where it was written (submitted) or would go (dry run).
    pub topic: Option<String>,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
}

/// The answer of `POST /v1/tasks/redrive`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedriveReport {
    pub redrive_id: String,
    pub dry_run: bool,
    /// Tasks submitted (or, in a dry run, that would be).
    pub submitted: u32,
    /// Tasks skipped.
    pub skipped: u32,
    pub tasks: Vec<RedriveItem>,
    /// Pass as `cursor`, with the same `redrive_id` and `filter`, for the next page;
    /// `null` on the last page (and for `ids`).
    pub next_cursor: Option<String>,
}

/// Whether `s` can name a redrive: 1 to 64 letters, digits, `.`, `_`, `-` or `:`.
pub fn valid_redrive_id(s: &str) -> bool {
    (1..=MAX_REDRIVE_ID).contains(&s.chars().count())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
}

/// Reads the `filter` of a request into the list filter, with the redrivable statuses
/// when none are named; refuses statuses that cannot be redriven.
pub fn selection(
    filter: &BTreeMap<String, String>,
    cursor: Option<&str>,
    limit: Option<u32>,
    now: i64,
) -> Result<TaskFilter, ApiError> {
    let mut params: Vec<(String, String)> = Vec::new();
    for (k, v) in filter {
        if k == "cursor" || k == "limit" {
            return Err(ApiError::bad(
                &format!("filter.{k}"),
                format!("give `{k}` beside `filter`, not in it"),
            ));
        }
        params.push((k.clone(), v.clone()));
    }
    if let Some(c) = cursor {
        params.push(("cursor".into(), c.to_string()));
    }
    if let Some(l) = limit {
        params.push(("limit".into(), l.to_string()));
    }
    let mut f = TaskFilter::from_params(&params, now).map_err(|e| {
        let at = if e.parameter == "cursor" || e.parameter == "limit" {
            e.parameter.clone()
        } else {
            format!("filter.{}", e.parameter)
        };
        ApiError::bad(&at, e.to_string())
    })?;
    if f.statuses.is_empty() {
        f.statuses = REDRIVABLE.to_vec();
    } else if let Some(s) = f.statuses.iter().find(|s| !REDRIVABLE.contains(s)) {
        return Err(ApiError::bad(
            "filter.status",
            format!(
                "`{}` tasks cannot be redriven; only failed, expired and stopped ones",
                s.as_str()
            ),
        ));
    }
    Ok(f)
}

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

fn skipped(task: &TaskView, reason: SkipReason, detail: Option<String>) -> RedriveItem {
    RedriveItem {
        id: task.id.clone(),
        tenant: Some(task.tenant.clone()),
        function: Some(task.function.clone()),
        status: Some(task.status),
        action: RedriveAction::Skipped,
        reason: Some(reason),
        detail,
        topic: None,
        partition: None,
        offset: None,
    }
}

/// `POST /v1/tasks/redrive`.
pub async fn redrive(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Json<RedriveRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let who = s.auth(&headers)?;
    let Json(req) = body?;
    let redrive_id = match req.redrive_id {
        Some(r) if !valid_redrive_id(&r) => {
            return Err(ApiError::bad(
                "redrive_id",
                format!("must be 1 to {MAX_REDRIVE_ID} letters, digits, `.`, `_`, `-` or `:`"),
            ));
        }
        Some(r) => r,
        None => ulid::Ulid::new().to_string(),
    };
    let now = now_ms();
    let (found, missing, next_cursor) = match (&req.ids, &req.filter) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(ApiError::bad("ids", "give either `ids` or `filter`"));
        }
        (Some(ids), None) => {
            if req.cursor.is_some() || req.limit.is_some() {
                return Err(ApiError::bad(
                    "cursor",
                    "`cursor` and `limit` go with `filter`, not with `ids`",
                ));
            }
            let (found, missing) = by_ids(&s, &who, ids, req.tenant.as_deref()).await?;
            (found, missing, None)
        }
        (None, Some(filter)) => {
            if req.tenant.is_some() {
                return Err(ApiError::bad(
                    "tenant",
                    "with `filter`, name the tenant in `filter.tenant`",
                ));
            }
            let mut f = selection(filter, req.cursor.as_deref(), req.limit, now)?;
            f.scope = who.scope().map(str::to_string);
            let reader = s.reader.clone();
            let page = blocking(move || reader.list(&f)).await?;
            (page.tasks, Vec::new(), page.next_cursor)
        }
    };
    let stamp = Stamp {
        redrive_id: redrive_id.clone(),
        by: who.name().to_string(),
        at: now,
    };
    // One redrive at a time: a retry racing its original waits for it, then skips.
    let mut recent = s.recent_redrives.lock().await;
    let mut items = missing;
    let mut chosen = Vec::new();
    let mut by_tenant: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in &found {
        by_tenant
            .entry(t.tenant.clone())
            .or_default()
            .push(t.id.clone());
    }
    let mut indexed: HashSet<TaskKey> = HashSet::new();
    for (tenant, ids) in by_tenant {
        let reader = s.reader.clone();
        let (rid, tn) = (redrive_id.clone(), tenant.clone());
        let done = blocking(move || reader.redriven(&rid, &tn, &ids)).await?;
        indexed.extend(done.into_iter().map(|id| TaskKey::new(&tenant, &id)));
    }
    for t in found {
        let key = TaskKey::new(&t.tenant, &t.id);
        let already = indexed.contains(&key) || recent.contains(&redrive_id, &key);
        match precheck(&t, already) {
            Some(reason) => items.push(skipped(&t, reason, None)),
            None => chosen.push(t),
        }
    }
    let positions: Vec<QueuePosition> = chosen.iter().filter_map(|t| t.queue.clone()).collect();
    let records = s.records.clone();
    let mut raw = tokio::task::spawn_blocking(move || records.read(&positions))
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(|e| ApiError::unavailable("Kafka did not return the task records", &e))?;
    let mut pending = Vec::new();
    for t in chosen {
        let Some(pos) = t.queue.clone() else {
            items.push(skipped(&t, SkipReason::RecordGone, None));
            continue;
        };
        let Some(record) = raw.remove(&pos).flatten() else {
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
        let task = redriven_task(original, &t.id, &t.tenant, &pos, &stamp);
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
        pending.push((t, topic, key, value, record_headers(&record)));
    }
    for (t, topic, key, value, hdrs) in pending {
        let mut item = RedriveItem {
            id: t.id.clone(),
            tenant: Some(t.tenant.clone()),
            function: Some(t.function.clone()),
            status: Some(t.status),
            action: RedriveAction::WouldSubmit,
            reason: None,
            detail: None,
            topic: Some(topic.clone()),
            partition: None,
            offset: None,
        };
        if !req.dry_run {
            let record = FutureRecord::to(&topic)
                .key(&key)
                .payload(&value)
                .headers(kafka::headers(hdrs.iter().map(|(k, v)| (*k, v.as_str()))));
            match s.producer.send(record, Duration::from_secs(30)).await {
                Ok(d) => {
                    recent.insert(&redrive_id, TaskKey::new(&t.tenant, &t.id));
                    item.action = RedriveAction::Submitted;
                    item.partition = Some(d.partition);
                    item.offset = Some(d.offset);
                    tracing::info!(task_id = %t.id, tenant = %t.tenant, redrive_id = %redrive_id, by = %stamp.by, topic = %topic, "task redriven");
                }
                Err((e, _)) => {
                    tracing::warn!(task_id = %t.id, tenant = %t.tenant, error = %e, "redrive: Kafka did not acknowledge the task");
                    item.action = RedriveAction::Skipped;
                    item.reason = Some(SkipReason::NotAcknowledged);
                    item.topic = None;
                }
            }
        }
        items.push(item);
    }
    drop(recent);
    let submitted = items
        .iter()
        .filter(|i| i.action != RedriveAction::Skipped)
        .count();
    let skipped_n = items.len() - submitted;
    Ok(Json(RedriveReport {
        redrive_id,
        dry_run: req.dry_run,
        submitted: u32::try_from(submitted).unwrap_or(u32::MAX),
        skipped: u32::try_from(skipped_n).unwrap_or(u32::MAX),
        tasks: items,
        next_cursor,
    })
    .into_response())
}

/// The tasks `ids` name that the caller may see, and an item for each that it cannot.
async fn by_ids(
    s: &ApiState,
    who: &Principal,
    ids: &[String],
    tenant: Option<&str>,
) -> Result<(Vec<TaskView>, Vec<RedriveItem>), ApiError> {
    if ids.is_empty() || ids.len() > MAX_IDS {
        return Err(ApiError::bad(
            "ids",
            format!("name 1 to {MAX_IDS} task ids"),
        ));
    }
    if let Some(t) = tenant {
        check_name(t).map_err(|m| ApiError::bad("tenant", format!("not a tenant name: {m}")))?;
    }
    let scope = match (who, tenant) {
        (Principal::Tenant(own), Some(asked)) if asked != own => {
            // Another tenant's tasks are not there for this token.
            let items = ids
                .iter()
                .map(|id| missing(id, SkipReason::NotFound))
                .collect();
            return Ok((Vec::new(), items));
        }
        (Principal::Tenant(own), _) => Some(own.clone()),
        (Principal::Admin, asked) => asked.map(str::to_string),
    };
    let reader = s.reader.clone();
    let wanted: Vec<String> = {
        let mut seen = HashSet::new();
        ids.iter()
            .filter(|i| seen.insert(i.as_str()))
            .cloned()
            .collect()
    };
    let lookups = blocking(move || {
        wanted
            .into_iter()
            .map(|id| reader.get(scope.as_deref(), &id).map(|l| (id, l)))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    let mut found = Vec::new();
    let mut items = Vec::new();
    for (id, lookup) in lookups {
        match lookup {
            Lookup::Found(t) => found.push(*t),
            Lookup::NotFound => items.push(missing(&id, SkipReason::NotFound)),
            Lookup::Ambiguous(_) => items.push(missing(&id, SkipReason::Ambiguous)),
        }
    }
    Ok((found, items))
}

fn missing(id: &str, reason: SkipReason) -> RedriveItem {
    RedriveItem {
        id: id.to_string(),
        tenant: None,
        function: None,
        status: None,
        action: RedriveAction::Skipped,
        reason: Some(reason),
        detail: None,
        topic: None,
        partition: None,
        offset: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Task;

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
    fn the_selection_is_the_list_filter_limited_to_redrivable_statuses() {
        let f = |pairs: &[(&str, &str)]| {
            let m: BTreeMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            selection(&m, None, Some(5), 1_000_000)
        };
        let all = f(&[("function", "resize")]).unwrap();
        assert_eq!(all.statuses, REDRIVABLE.to_vec());
        assert_eq!(all.function.as_deref(), Some("resize"));
        assert_eq!(all.limit, 5);
        let one = f(&[("status", "expired"), ("id_prefix", "order-")]).unwrap();
        assert_eq!(one.statuses, vec![TaskStatus::Expired]);
        let e = f(&[("status", "failed,succeeded")]).unwrap_err();
        assert_eq!(e.parameter.as_deref(), Some("filter.status"));
        let e = f(&[("bogus", "1")]).unwrap_err();
        assert_eq!(e.parameter.as_deref(), Some("filter.bogus"));
        let e = f(&[("cursor", "1..")]).unwrap_err();
        assert_eq!(e.parameter.as_deref(), Some("filter.cursor"));
        let nulls: Result<RedriveRequest, _> =
            serde_json::from_str(r#"{"filter": {}, "limit": null}"#);
        assert!(nulls.is_err(), "null is not a limit");
        let whole: RedriveRequest =
            serde_json::from_str(r#"{"filter": {}, "limit": 248.0}"#).unwrap();
        assert_eq!(whole.limit, Some(248));
        for bad in ["2.5", "-1", "1e12", "\"5\""] {
            let r: Result<RedriveRequest, _> =
                serde_json::from_str(&format!(r#"{{"filter": {{}}, "limit": {bad}}}"#));
            assert!(r.is_err(), "{bad}");
        }
        assert_eq!(e.parameter.as_deref(), Some("filter.cursor"));
        let m = BTreeMap::new();
        let e = selection(&m, Some("nope"), None, 0).unwrap_err();
        assert_eq!(e.parameter.as_deref(), Some("cursor"));
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
    fn skip_reasons_have_their_wire_names() {
        for r in [
            SkipReason::NotRedrivable,
            SkipReason::AlreadyRedriven,
            SkipReason::NotFound,
            SkipReason::Ambiguous,
            SkipReason::RecordGone,
            SkipReason::Undecodable,
            SkipReason::UnknownFunction,
            SkipReason::NotAcknowledged,
        ] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
            assert!(
                include_str!("../../docs/openapi.yaml").contains(r.as_str()),
                "{r:?} is documented"
            );
        }
    }

    #[test]
    fn redrive_ids_are_short_plain_names() {
        assert!(valid_redrive_id("01JDXK3V7Q9M2E8ZB4T6W0C5RA"));
        assert!(valid_redrive_id("fix-2026.11:resize_1"));
        for bad in ["", "a b", "é", "a/b", &"x".repeat(65)] {
            assert!(!valid_redrive_id(bad), "{bad}");
        }
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
