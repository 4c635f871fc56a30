//! Reading a redrive request: its redrive id, and which source selects its tasks. Pure:
//! no store, no Kafka.

use std::collections::BTreeMap;

use super::model::RedriveRequest;
use super::{MAX_IDS, MAX_REDRIVE_ID, REDRIVABLE};
use crate::api::ApiError;
use crate::config::check_name;
use crate::store::query::TaskFilter;

/// Where the tasks of one request come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// These ids (deduplicated, in the order given), of `tenant` when named.
    Ids {
        ids: Vec<String>,
        tenant: Option<String>,
    },
    /// A page of the task list.
    Filter(TaskFilter),
}

/// Whether `s` can name a redrive: 1 to 64 letters, digits, `.`, `_`, `-` or `:`.
pub fn valid_redrive_id(s: &str) -> bool {
    (1..=MAX_REDRIVE_ID).contains(&s.chars().count())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
}

/// The redrive id a request names, or a new ULID.
pub fn redrive_id(given: Option<&str>) -> Result<String, ApiError> {
    match given {
        Some(r) if !valid_redrive_id(r) => Err(ApiError::bad(
            "redrive_id",
            format!("must be 1 to {MAX_REDRIVE_ID} letters, digits, `.`, `_`, `-` or `:`"),
        )),
        Some(r) => Ok(r.to_string()),
        None => Ok(ulid::Ulid::new().to_string()),
    }
}

/// The source a request selects its tasks from; `now` (ms) anchors relative times.
pub fn source(req: &RedriveRequest, now: i64) -> Result<Source, ApiError> {
    match (&req.ids, &req.filter) {
        (Some(_), Some(_)) | (None, None) => {
            Err(ApiError::bad("ids", "give either `ids` or `filter`"))
        }
        (Some(ids), None) => {
            if req.cursor.is_some() || req.limit.is_some() {
                return Err(ApiError::bad(
                    "cursor",
                    "`cursor` and `limit` go with `filter`, not with `ids`",
                ));
            }
            if ids.is_empty() || ids.len() > MAX_IDS {
                return Err(ApiError::bad(
                    "ids",
                    format!("name 1 to {MAX_IDS} task ids"),
                ));
            }
            if let Some(t) = &req.tenant {
                check_name(t)
                    .map_err(|m| ApiError::bad("tenant", format!("not a tenant name: {m}")))?;
            }
            let mut seen = std::collections::HashSet::new();
            Ok(Source::Ids {
                ids: ids
                    .iter()
                    .filter(|i| seen.insert(i.as_str()))
                    .cloned()
                    .collect(),
                tenant: req.tenant.clone(),
            })
        }
        (None, Some(filter)) => {
            if req.tenant.is_some() {
                return Err(ApiError::bad(
                    "tenant",
                    "with `filter`, name the tenant in `filter.tenant`",
                ));
            }
            selection(filter, req.cursor.as_deref(), req.limit, now).map(Source::Filter)
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::TaskStatus;

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
        let m = BTreeMap::new();
        let e = selection(&m, Some("nope"), None, 0).unwrap_err();
        assert_eq!(e.parameter.as_deref(), Some("cursor"));
    }

    #[test]
    fn a_request_names_exactly_one_source() {
        let at = |r: RedriveRequest| source(&r, 0).unwrap_err().parameter;
        assert_eq!(at(RedriveRequest::default()).as_deref(), Some("ids"));
        let ids = |v: &[&str]| RedriveRequest {
            ids: Some(v.iter().map(|s| s.to_string()).collect()),
            ..RedriveRequest::default()
        };
        let both = RedriveRequest {
            filter: Some(BTreeMap::new()),
            ..ids(&["a"])
        };
        assert_eq!(at(both).as_deref(), Some("ids"));
        assert_eq!(at(ids(&[])).as_deref(), Some("ids"));
        let paged = RedriveRequest {
            limit: Some(5),
            ..ids(&["a"])
        };
        assert_eq!(at(paged).as_deref(), Some("cursor"));
        let bad_tenant = RedriveRequest {
            tenant: Some("a b".into()),
            ..ids(&["a"])
        };
        assert_eq!(at(bad_tenant).as_deref(), Some("tenant"));
        let filtered_tenant = RedriveRequest {
            filter: Some(BTreeMap::new()),
            tenant: Some("acme".into()),
            ..RedriveRequest::default()
        };
        assert_eq!(at(filtered_tenant).as_deref(), Some("tenant"));
        assert_eq!(
            source(&ids(&["b", "a", "b"]), 0).unwrap(),
            Source::Ids {
                ids: vec!["b".into(), "a".into()],
                tenant: None
            }
        );
    }

    #[test]
    fn redrive_ids_are_short_plain_names() {
        assert!(valid_redrive_id("01JDXK3V7Q9M2E8ZB4T6W0C5RA"));
        assert!(valid_redrive_id("fix-2026.11:resize_1"));
        for bad in ["", "a b", "é", "a/b", &"x".repeat(65)] {
            assert!(!valid_redrive_id(bad), "{bad}");
        }
        assert_eq!(redrive_id(Some("r-1")).unwrap(), "r-1");
        assert!(valid_redrive_id(&redrive_id(None).unwrap()));
        let e = redrive_id(Some("a b")).unwrap_err();
        assert_eq!(e.parameter.as_deref(), Some("redrive_id"));
    }
}
