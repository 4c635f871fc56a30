//! The tasks a request selects, looked up in the index: by id, or a page of the task
//! list. What the caller may not see is never found (another tenant's id reads as a task
//! that does not exist).

use super::model::{RedriveItem, SkipReason};
use super::request::Source;
use crate::api::{ApiError, ApiState, blocking};
use crate::config::Principal;
use crate::store::Lookup;
use crate::store::model::TaskView;

/// The tasks found, an item for each named one that was not, and the cursor of the next
/// page.
#[derive(Debug, Default)]
pub struct Selected {
    pub found: Vec<TaskView>,
    pub missing: Vec<RedriveItem>,
    pub next_cursor: Option<String>,
}

/// The tasks `source` selects for `who`.
pub async fn select(s: &ApiState, who: &Principal, source: Source) -> Result<Selected, ApiError> {
    match source {
        Source::Ids { ids, tenant } => by_ids(s, who, ids, tenant.as_deref()).await,
        Source::Filter(mut f) => {
            f.scope = who.scope().map(str::to_string);
            let reader = s.reader.clone();
            let page = blocking(move || reader.list(&f)).await?;
            Ok(Selected {
                found: page.tasks,
                missing: Vec::new(),
                next_cursor: page.next_cursor,
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
    let reader = s.reader.clone();
    let lookups = blocking(move || {
        ids.into_iter()
            .map(|id| reader.get(scope.as_deref(), &id).map(|l| (id, l)))
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
