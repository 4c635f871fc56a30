//! Reading a redrive request: its redrive id, and which source selects its tasks. Pure:
//! no store, no Kafka.

use std::collections::BTreeMap;

use super::dead_letter::{Span, parse_cursor, partition_number};
use super::model::{DeadLetterRange, OffsetRange, RedriveRequest};
use super::{MAX_IDS, MAX_REDRIVE_ID, REDRIVABLE};
use crate::api::ApiError;
use crate::config::check_name;
use crate::store::query::TaskFilter;
use crate::store::query::parse_time;

/// Records of a dead-letter range read per request when `limit` is left out.
pub const DEFAULT_RECORDS: u32 = 100;

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
    /// A page of a dead-letter topic's records.
    DeadLetter(DeadLetterSource),
}

/// A dead-letter range as a request gives it, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterSource {
    pub topic: String,
    /// Only this tenant's records (`tenant` of the request).
    pub tenant: Option<String>,
    /// `from_time`, ms.
    pub from_time: Option<i64>,
    /// `to_time`, ms.
    pub to_time: Option<i64>,
    /// The partitions named, with their first and last offsets; `None` for every one.
    pub partitions: Option<BTreeMap<i32, OffsetRange>>,
    /// What is left to read, from a cursor; `None` on the first page.
    pub cursor: Option<Vec<Span>>,
    /// Records to read.
    pub limit: usize,
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
    let named = [
        req.ids.is_some(),
        req.filter.is_some(),
        req.dead_letter.is_some(),
    ];
    if named.iter().filter(|n| **n).count() != 1 {
        return Err(ApiError::bad(
            "ids",
            "give one of `ids`, `filter` and `dead_letter`",
        ));
    }
    if let Some(t) = &req.tenant {
        check_name(t).map_err(|m| ApiError::bad("tenant", format!("not a tenant name: {m}")))?;
    }
    if let Some(d) = &req.dead_letter {
        return dead_letter(d, req, now).map(Source::DeadLetter);
    }
    if let Some(filter) = &req.filter {
        if req.tenant.is_some() {
            return Err(ApiError::bad(
                "tenant",
                "with `filter`, name the tenant in `filter.tenant`",
            ));
        }
        return selection(filter, req.cursor.as_deref(), req.limit, now).map(Source::Filter);
    }
    let ids = req.ids.as_deref().unwrap_or_default();
    if req.cursor.is_some() || req.limit.is_some() {
        return Err(ApiError::bad(
            "cursor",
            "`cursor` and `limit` go with `filter` or `dead_letter`, not with `ids`",
        ));
    }
    if ids.is_empty() || ids.len() > MAX_IDS {
        return Err(ApiError::bad(
            "ids",
            format!("name 1 to {MAX_IDS} task ids"),
        ));
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

/// Checks a dead-letter range: its topic name, times, partition numbers and cursor.
fn dead_letter(
    d: &DeadLetterRange,
    req: &RedriveRequest,
    now: i64,
) -> Result<DeadLetterSource, ApiError> {
    let topic_chars = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !(1..=249).contains(&d.topic.len()) || !d.topic.chars().all(topic_chars) {
        return Err(ApiError::bad(
            "dead_letter.topic",
            "a topic name is 1 to 249 characters of a-z A-Z 0-9 . _ -",
        ));
    }
    let time = |v: &Option<String>, at: &str| {
        v.as_deref()
            .map(|t| parse_time(t, now))
            .transpose()
            .map_err(|m| ApiError::bad(at, m))
    };
    let partitions = match &d.partitions {
        None => None,
        Some(named) => {
            let mut out = BTreeMap::new();
            for (p, r) in named {
                let n = partition_number(p).ok_or_else(|| {
                    ApiError::bad(
                        "dead_letter.partitions",
                        format!("`{p}` is not a partition number"),
                    )
                })?;
                out.insert(n, *r);
            }
            Some(out)
        }
    };
    let cursor = req
        .cursor
        .as_deref()
        .map(parse_cursor)
        .transpose()
        .map_err(|e| ApiError::bad("cursor", e.to_string()))?;
    let limit = req.limit.unwrap_or(DEFAULT_RECORDS);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad("limit", "must be from 1 to 1000"));
    }
    Ok(DeadLetterSource {
        topic: d.topic.clone(),
        tenant: req.tenant.clone(),
        from_time: time(&d.from_time, "dead_letter.from_time")?,
        to_time: time(&d.to_time, "dead_letter.to_time")?,
        partitions,
        cursor,
        limit: usize::try_from(limit).unwrap_or(usize::MAX),
    })
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
        let dl = RedriveRequest {
            dead_letter: Some(DeadLetterRange {
                topic: "tw.dlq.acme".into(),
                ..DeadLetterRange::default()
            }),
            ..RedriveRequest::default()
        };
        let with_ids = RedriveRequest {
            ids: Some(vec!["a".into()]),
            ..dl.clone()
        };
        assert_eq!(at(with_ids).as_deref(), Some("ids"));
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
    fn a_dead_letter_range_is_checked_before_anything_is_read() {
        let req = |d: DeadLetterRange| RedriveRequest {
            dead_letter: Some(d),
            ..RedriveRequest::default()
        };
        let topic = |t: &str| DeadLetterRange {
            topic: t.into(),
            ..DeadLetterRange::default()
        };
        let Source::DeadLetter(d) = source(&req(topic("tw.dlq.acme")), 0).unwrap() else {
            panic!("a dead-letter source")
        };
        assert_eq!(
            (d.topic.as_str(), d.partitions, d.cursor, d.limit),
            ("tw.dlq.acme", None, None, 100)
        );
        let full = RedriveRequest {
            tenant: Some("acme".into()),
            cursor: Some("0:5-9".into()),
            limit: Some(7),
            ..req(DeadLetterRange {
                from_time: Some("2026-11-30T10:00:00Z".into()),
                to_time: Some("1h".into()),
                partitions: Some(BTreeMap::from([(
                    "3".to_string(),
                    OffsetRange {
                        from_offset: Some(1),
                        to_offset: None,
                    },
                )])),
                ..topic("tw.dlq.acme")
            })
        };
        let Source::DeadLetter(d) = source(&full, 7_200_000).unwrap() else {
            panic!("a dead-letter source")
        };
        assert_eq!(d.tenant.as_deref(), Some("acme"));
        assert_eq!(d.from_time, Some(1_796_032_800_000));
        assert_eq!(d.to_time, Some(3_600_000));
        assert_eq!(
            d.partitions,
            Some(BTreeMap::from([(
                3,
                OffsetRange {
                    from_offset: Some(1),
                    to_offset: None
                }
            )]))
        );
        assert_eq!(d.cursor, Some(vec![Span::of(0, 5, 9).unwrap()]));
        assert_eq!(d.limit, 7);

        let at = |r: RedriveRequest| source(&r, 0).unwrap_err().parameter.unwrap_or_default();
        assert_eq!(at(req(topic("a b"))), "dead_letter.topic");
        let bad_time = DeadLetterRange {
            to_time: Some("yesterday".into()),
            ..topic("t")
        };
        assert_eq!(at(req(bad_time)), "dead_letter.to_time");
        for p in ["01", "-1", "x", "1000000000", ""] {
            let bad_partition = DeadLetterRange {
                partitions: Some(BTreeMap::from([(p.to_string(), OffsetRange::default())])),
                ..topic("t")
            };
            assert_eq!(at(req(bad_partition)), "dead_letter.partitions", "{p}");
        }
        let filter_cursor = RedriveRequest {
            cursor: Some("5.00.00".into()),
            ..req(topic("t"))
        };
        assert_eq!(at(filter_cursor), "cursor");
        let too_many = RedriveRequest {
            limit: Some(1001),
            ..req(topic("t"))
        };
        assert_eq!(at(too_many), "limit");
        assert_eq!(partition_number("0"), Some(0));
        assert_eq!(partition_number("999999999"), Some(999_999_999));
        assert_eq!(partition_number("2147483647"), None, "ten digits");
        let dots = source(&req(topic("..")), 0).unwrap();
        assert!(
            matches!(dots, Source::DeadLetter(_)),
            "a name no topic has is left to the topic check (404)"
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
