//! The tasks a request selects, looked up in the index: by id, a page of the task list,
//! or the tasks a page of a dead-letter range names. What the caller may not see is never
//! found (another tenant's id reads as a task that does not exist).

use std::collections::HashSet;

use super::dead_letter;
use super::model::{DeadLetterPage, RedriveItem, SkipReason};
use super::request::{DeadLetterSource, Source};
use super::scan::{self, ScanError};
use crate::api::{ApiError, ApiState, blocking};
use crate::config::Principal;
use crate::store::Lookup;
use crate::store::model::TaskView;
use crate::types::TaskKey;

/// The tasks found, an item for each named one that was not, and the cursor of the next
/// page.
#[derive(Debug, Default)]
pub struct Selected {
    pub found: Vec<TaskView>,
    pub missing: Vec<RedriveItem>,
    pub next_cursor: Option<String>,
    /// What was read of a dead-letter topic.
    pub dead_letter: Option<DeadLetterPage>,
}

/// The tasks `source` selects for `who`.
pub async fn select(s: &ApiState, who: &Principal, source: Source) -> Result<Selected, ApiError> {
    match source {
        Source::Ids { ids, tenant } => by_ids(s, who, ids, tenant.as_deref()).await,
        Source::DeadLetter(d) => dead_letters(s, who, d).await,
        Source::Filter(mut f) => {
            f.scope = who.scope().map(str::to_string);
            let reader = s.reader.clone();
            let page = blocking(move || reader.list(&f)).await?;
            Ok(Selected {
                found: page.tasks,
                next_cursor: page.next_cursor,
                ..Selected::default()
            })
        }
    }
}

/// The tasks `ids` name that the caller may see, and an item for each that it cannot.
pub async fn by_ids(
    s: &ApiState,
    who: &Principal,
    ids: Vec<String>,
    tenant: Option<&str>,
) -> Result<Selected, ApiError> {
    let scope = match (who, tenant) {
        (Principal::Tenant(own), Some(asked)) if asked != own => {
            // Another tenant's tasks are not there for this token.
            let missing = ids
                .iter()
                .map(|id| RedriveItem::missing(id, SkipReason::NotFound))
                .collect();
            return Ok(Selected {
                missing,
                ..Selected::default()
            });
        }
        (Principal::Tenant(own), _) => Some(own.clone()),
        (Principal::Admin, asked) => asked.map(str::to_string),
    };
    lookup(s, ids.into_iter().map(|id| (scope.clone(), id)).collect()).await
}

/// The tasks a page of a dead-letter range names that the caller takes, and the cursor
/// of what is left of the range.
async fn dead_letters(
    s: &ApiState,
    who: &Principal,
    d: DeadLetterSource,
) -> Result<Selected, ApiError> {
    let takes = dead_letter::takes(
        &s.config.dead_letter_topics(),
        who,
        &d.topic,
        d.tenant.as_deref(),
    )?;
    let records = s.records.clone();
    let topic = d.topic.clone();
    let page = tokio::task::spawn_blocking(move || scan::page(&records, &d))
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(|e| match e {
            ScanError::NoTopic(_) => dead_letter::unknown("dead_letter.topic", e.to_string()),
            ScanError::NoPartition { .. } => {
                dead_letter::unknown("dead_letter.partitions", e.to_string())
            }
            ScanError::Read(e) => e.answer("Kafka did not return the dead-letter records"),
        })?;
    let read = page.records.len();
    let taken: Vec<TaskKey> = page
        .records
        .into_iter()
        .filter_map(|r| r.task)
        .filter(|k| takes.includes(&k.tenant))
        .collect();
    let passed_over = read - taken.len();
    // A task whose failures the page holds several times goes once.
    let mut seen = HashSet::new();
    let wanted: Vec<(Option<String>, String)> = taken
        .into_iter()
        .filter(|k| seen.insert(k.clone()))
        .map(|k| (Some(k.tenant), k.id))
        .collect();
    let mut out = lookup(s, wanted).await?;
    out.next_cursor = dead_letter::cursor(&page.left);
    out.dead_letter = Some(DeadLetterPage {
        topic,
        records: page_count(read),
        passed_over: page_count(passed_over),
    });
    Ok(out)
}

fn page_count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Looks each `(scope, id)` up: the task of that id, of the scope's tenant when there is
/// one.
async fn lookup(s: &ApiState, wanted: Vec<(Option<String>, String)>) -> Result<Selected, ApiError> {
    let reader = s.reader.clone();
    let lookups = blocking(move || {
        wanted
            .into_iter()
            .map(|(scope, id)| reader.get(scope.as_deref(), &id).map(|l| (id, l)))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    let mut out = Selected::default();
    for (id, lookup) in lookups {
        match lookup {
            Lookup::Found(t) => out.found.push(*t),
            Lookup::NotFound => out
                .missing
                .push(RedriveItem::missing(&id, SkipReason::NotFound)),
            Lookup::Ambiguous(_) => out
                .missing
                .push(RedriveItem::missing(&id, SkipReason::Ambiguous)),
        }
    }
    Ok(out)
}
