//! Redrive from a dead-letter topic: which topics a caller may read, which offsets of
//! each partition a time or offset range covers, the cursor that carries what is left,
//! and which task a dead-letter record is about. Pure: the reading is
//! [`RecordReader::scan`](crate::api::records::RecordReader::scan).
//!
//! A dead-letter topic is a tenant's `dead_letter` topic or a function's `on_failure`
//! topic. A tenant token may read only those its tenant's failures go to, and takes only
//! its tenant's records from them (a topic may be shared); an admin token may read any,
//! and takes every tenant's records unless the request names one.
//!
//! Ranges are Kafka offsets, both ends inclusive: a time range is turned into offsets
//! with the broker's time index (the first record at or after `from_time`, up to the last
//! before the first at or after `to_time`), an offset range narrows it further. The end
//! of a partition is its last stable offset when the first page is read; later pages
//! read up to that end and no further, so failures that arrive meanwhile, such as those
//! of the redrive itself, are not read again.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use axum::http::StatusCode;

use crate::api::records::RawRecord;
use crate::api::{ApiError, ErrorCode};
use crate::codec;
use crate::config::Principal;
use crate::names::headers as h;
use crate::types::TaskKey;

/// The offsets of one partition still to read: `next` to `last`, both inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span {
    pub partition: i32,
    pub next: i64,
    pub last: i64,
}

impl Span {
    /// A span with something in it; `None` when `next` is past `last`.
    pub fn of(partition: i32, next: i64, last: i64) -> Option<Self> {
        (next <= last).then_some(Self {
            partition,
            next,
            last,
        })
    }
}

/// What bounds one partition's span before it is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bounds {
    /// The partition's first offset (low watermark).
    pub low: i64,
    /// One past its last stable offset (high watermark as `read_committed` sees it).
    pub high: i64,
    /// The request's first offset.
    pub from_offset: Option<i64>,
    /// The request's last offset.
    pub to_offset: Option<i64>,
    /// The first offset at or after `from_time` (`high` when there is none).
    pub from_time: Option<i64>,
    /// The first offset at or after `to_time` (`high` when there is none).
    pub to_time: Option<i64>,
}

/// The span of a partition that every bound allows, if any.
pub fn span(partition: i32, b: Bounds) -> Option<Span> {
    let next = [Some(b.low), b.from_offset, b.from_time]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(b.low);
    let last = [
        Some(b.high.saturating_sub(1)),
        b.to_offset,
        b.to_time.map(|o| o.saturating_sub(1)),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(b.high);
    Span::of(partition, next, last)
}

/// The cursor of what is left: `<partition>:<next>-<last>` per partition, joined by
/// commas; `None` when nothing is.
pub fn cursor(spans: &[Span]) -> Option<String> {
    (!spans.is_empty()).then(|| {
        spans
            .iter()
            .map(|s| format!("{}:{}-{}", s.partition, s.next, s.last))
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// A cursor that is not one [`cursor`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadCursor(String);

impl fmt::Display for BadCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not a dead-letter cursor (`<partition>:<next>-<last>`, joined by commas)",
            self.0
        )
    }
}

/// Reads a cursor [`cursor`] wrote. An offset too large for Kafka reads as the largest,
/// a span whose `next` is past its `last` as nothing, a partition named twice once.
pub fn parse_cursor(s: &str) -> Result<Vec<Span>, BadCursor> {
    let bad = || BadCursor(s.chars().take(100).collect());
    let mut out: BTreeMap<i32, Span> = BTreeMap::new();
    for part in s.split(',') {
        let (p, range) = part.split_once(':').ok_or_else(bad)?;
        let (next, last) = range.split_once('-').ok_or_else(bad)?;
        let partition = partition_number(p).ok_or_else(bad)?;
        let (next, last) = (digits(next).ok_or_else(bad)?, digits(last).ok_or_else(bad)?);
        if let Some(span) = Span::of(partition, next, last) {
            out.entry(partition).or_insert(span);
        }
    }
    Ok(out.into_values().collect())
}

/// A partition number as the API writes it: `0`, or 1 to 9 digits without a leading
/// zero (exactly what the specification's pattern allows).
pub fn partition_number(s: &str) -> Option<i32> {
    let plain = s == "0"
        || (!s.starts_with('0')
            && (1..=9).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_digit()));
    plain.then(|| s.parse().ok()).flatten()
}

/// 1 to 19 ASCII digits as a number, saturating at `i64::MAX`.
fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<i64>().unwrap_or(i64::MAX))
}

/// Whose records a caller takes from a dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Takes {
    /// Every tenant's (an admin token that names none).
    All,
    /// This tenant's only.
    Tenant(String),
}

impl Takes {
    /// Whether a record of `tenant` is taken.
    pub fn includes(&self, tenant: &str) -> bool {
        match self {
            Self::All => true,
            Self::Tenant(t) => t == tenant,
        }
    }
}

/// The 404 answer for a topic the caller may not read as a dead-letter topic, or a
/// partition it does not have.
pub fn unknown(parameter: &str, message: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::UnknownTopic, message).at(parameter)
}

/// Whose records `who` takes from `topic`, which `known` (the configuration's
/// dead-letter topics with their tenants) must list as a dead-letter topic of the
/// caller's tenant, or of `tenant` when it names one. Another tenant's topic answers as
/// a topic that does not exist.
pub fn takes(
    known: &BTreeMap<String, BTreeSet<String>>,
    who: &Principal,
    topic: &str,
    tenant: Option<&str>,
) -> Result<Takes, ApiError> {
    // Whose topics the caller may name, and whether it named a tenant it may not.
    let (whose, foreign) = match (who, tenant) {
        (Principal::Tenant(own), asked) => (Some(own.as_str()), asked.is_some_and(|a| a != own)),
        (Principal::Admin, asked) => (asked, false),
    };
    let allowed = !foreign
        && known
            .get(topic)
            .is_some_and(|ts| whose.is_none_or(|t| ts.contains(t)));
    if allowed {
        return Ok(whose.map_or(Takes::All, |t| Takes::Tenant(t.to_string())));
    }
    let listed: Vec<&str> = known
        .iter()
        .filter(|(_, ts)| whose.is_none_or(|t| ts.contains(t)))
        .map(|(k, _)| k.as_str())
        .take(20)
        .collect();
    let of = whose.map_or_else(String::new, |t| format!(" of tenant `{t}`"));
    Err(unknown(
        "dead_letter.topic",
        format!(
            "`{}` is not a dead-letter topic{of} (those are: {})",
            topic.chars().take(300).collect::<String>(),
            if listed.is_empty() {
                "none".to_string()
            } else {
                listed.join(", ")
            }
        ),
    ))
}

/// The task a dead-letter record is about: from the `tw-tenant` and `tw-task-id` headers
/// the scheduler writes on outcome events, else from the outcome event itself; `None` for
/// a record that names no task.
pub fn task_of(record: &RawRecord) -> Option<TaskKey> {
    let from_headers = record
        .header(h::TENANT)
        .zip(record.header(h::TASK_ID))
        .filter(|(t, id)| !t.is_empty() && !id.is_empty())
        .map(|(t, id)| TaskKey::new(t, id));
    from_headers.or_else(|| {
        codec::decode_outcome(&record.value)
            .ok()
            .filter(|o| !o.tenant.is_empty() && !o.task_id.is_empty())
            .map(|o| TaskKey::new(o.tenant, o.task_id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(low: i64, high: i64) -> Bounds {
        Bounds {
            low,
            high,
            ..Bounds::default()
        }
    }

    #[test]
    fn a_partition_is_read_from_its_first_to_its_last_stable_offset_by_default() {
        assert_eq!(span(0, b(0, 10)), Span::of(0, 0, 9));
        assert_eq!(
            span(3, b(4, 10)),
            Span::of(3, 4, 9),
            "compacted or deleted below 4"
        );
        assert_eq!(
            span(0, b(0, 0)),
            None,
            "empty: nothing to read, never waited for"
        );
        assert_eq!(span(0, b(7, 7)), None, "everything deleted");
    }

    #[test]
    fn offsets_and_times_each_narrow_the_span() {
        let offsets = Bounds {
            from_offset: Some(3),
            to_offset: Some(6),
            ..b(0, 10)
        };
        assert_eq!(span(0, offsets), Span::of(0, 3, 6));
        let beyond = Bounds {
            from_offset: Some(0),
            to_offset: Some(99),
            ..b(2, 10)
        };
        assert_eq!(span(0, beyond), Span::of(0, 2, 9), "clamped to what exists");
        let times = Bounds {
            from_time: Some(4),
            to_time: Some(8),
            ..b(0, 10)
        };
        assert_eq!(span(0, times), Span::of(0, 4, 7), "to_time is exclusive");
        let both = Bounds {
            from_offset: Some(5),
            to_offset: Some(9),
            ..times
        };
        assert_eq!(span(0, both), Span::of(0, 5, 7));
        let after_all = Bounds {
            from_time: Some(10),
            ..b(0, 10)
        };
        assert_eq!(span(0, after_all), None, "no record at or after from_time");
        let before_all = Bounds {
            to_time: Some(0),
            ..b(0, 10)
        };
        assert_eq!(
            span(0, before_all),
            None,
            "every record is at or after to_time"
        );
        let inverted = Bounds {
            from_offset: Some(7),
            to_offset: Some(3),
            ..b(0, 10)
        };
        assert_eq!(span(0, inverted), None);
    }

    #[test]
    fn the_cursor_carries_what_is_left_and_reads_back() {
        let spans = vec![Span::of(0, 15, 40).unwrap(), Span::of(2, 0, 0).unwrap()];
        let c = cursor(&spans).unwrap();
        assert_eq!(c, "0:15-40,2:0-0");
        assert_eq!(parse_cursor(&c).unwrap(), spans);
        assert_eq!(cursor(&[]), None);
        assert_eq!(
            parse_cursor("1:5-3,0:1-2,0:7-9").unwrap(),
            vec![Span::of(0, 1, 2).unwrap()],
            "empty spans dropped, a partition once"
        );
        assert_eq!(
            parse_cursor("0:9999999999999999999-9999999999999999999").unwrap(),
            vec![Span::of(0, i64::MAX, i64::MAX).unwrap()]
        );
        for bad in [
            "",
            "0",
            "0:1",
            "a:1-2",
            "0:-1-2",
            "0:1-2,",
            "99999999999:1-2",
            "1000000000:1-2",
            "01:1-2",
            "0:+1-2",
            "1.0.00.00",
        ] {
            assert!(parse_cursor(bad).is_err(), "{bad}");
        }
    }

    fn known() -> BTreeMap<String, BTreeSet<String>> {
        BTreeMap::from([
            (
                "shared.dead".to_string(),
                BTreeSet::from(["acme".to_string(), "globex".to_string()]),
            ),
            (
                "tw.dlq.acme".to_string(),
                BTreeSet::from(["acme".to_string()]),
            ),
            (
                "tw.dlq.globex".to_string(),
                BTreeSet::from(["globex".to_string()]),
            ),
        ])
    }

    #[test]
    fn a_tenant_reads_only_its_own_dead_letters_and_an_admin_any() {
        let acme = Principal::Tenant("acme".into());
        let k = known();
        assert_eq!(
            takes(&k, &acme, "tw.dlq.acme", None).unwrap(),
            Takes::Tenant("acme".into())
        );
        assert_eq!(
            takes(&k, &acme, "shared.dead", None).unwrap(),
            Takes::Tenant("acme".into()),
            "a shared topic: only acme's records"
        );
        let other = takes(&k, &acme, "tw.dlq.globex", None).unwrap_err();
        let missing = takes(&k, &acme, "tw.dlq.nope", None).unwrap_err();
        assert_eq!(other.status, StatusCode::NOT_FOUND);
        assert_eq!(other.code, ErrorCode::UnknownTopic);
        assert_eq!(other.parameter.as_deref(), Some("dead_letter.topic"));
        assert_eq!(
            other.message.replace("tw.dlq.globex", "X"),
            missing.message.replace("tw.dlq.nope", "X"),
            "another tenant's topic reads like one that does not exist"
        );
        let foreign = takes(&k, &acme, "tw.dlq.acme", Some("globex")).unwrap_err();
        assert!(!foreign.message.contains("globex"), "{}", foreign.message);
        assert!(takes(&k, &acme, "shared.dead", Some("globex")).is_err());
        assert_eq!(
            takes(&k, &acme, "tw.dlq.acme", Some("acme")).unwrap(),
            Takes::Tenant("acme".into())
        );
        assert!(takes(&k, &acme, "tw.q.acme", None).is_err(), "a queue");

        let admin = Principal::Admin;
        assert_eq!(takes(&k, &admin, "shared.dead", None).unwrap(), Takes::All);
        assert_eq!(
            takes(&k, &admin, "shared.dead", Some("globex")).unwrap(),
            Takes::Tenant("globex".into())
        );
        assert!(takes(&k, &admin, "tw.dlq.acme", Some("globex")).is_err());
        let e = takes(&k, &admin, "tw.status", None).unwrap_err();
        assert!(e.message.contains("tw.dlq.globex"), "{}", e.message);
        assert!(Takes::All.includes("x"));
        assert!(!Takes::Tenant("a".into()).includes("b"));
    }

    #[test]
    fn a_dead_letter_record_names_its_task_by_headers_or_by_its_outcome() {
        let rec = |headers: Vec<(&str, &str)>, value: Vec<u8>| RawRecord {
            key: None,
            value,
            headers: headers
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
            timestamp: None,
        };
        let by_headers = rec(vec![(h::TASK_ID, "order-1"), (h::TENANT, "acme")], vec![]);
        assert_eq!(task_of(&by_headers), Some(TaskKey::new("acme", "order-1")));
        let outcome = codec::Outcome {
            task_id: "order-2".into(),
            tenant: "globex".into(),
            function: "f".into(),
            status: codec::OutcomeStatus::Failed,
            reason: None,
            error: None,
            result: None,
            payload: Vec::new(),
            task_headers: BTreeMap::new(),
            attempts: Vec::new(),
            submitted_at: 1,
            finished_at: 2,
            source: codec::Source {
                topic: "tw.q.globex".into(),
                partition: 0,
                offset: 0,
            },
            traceparent: None,
            scheduler_id: "s".into(),
        };
        let value = codec::encode_outcome(&outcome).unwrap();
        assert_eq!(
            task_of(&rec(vec![], value)),
            Some(TaskKey::new("globex", "order-2"))
        );
        assert_eq!(
            task_of(&rec(vec![(h::TASK_ID, "x")], b"junk".to_vec())),
            None
        );
        assert_eq!(
            task_of(&rec(vec![(h::TASK_ID, ""), (h::TENANT, "a")], vec![])),
            None
        );
    }
}
