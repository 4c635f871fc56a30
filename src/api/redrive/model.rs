//! What `POST /v1/tasks/redrive` reads and answers, as on the wire.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::codec::TaskStatus;

/// The body of `POST /v1/tasks/redrive`. Every field may be left out; none may be `null`
/// (the specification has no `null` for them).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedriveRequest {
    /// Names the redrive; the same id again never submits a task twice. A new ULID when
    /// left out (the answer carries it: pass it back to resume).
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "given")]
    pub redrive_id: Option<String>,
    /// These tasks (with `tenant` when an admin token must say whose).
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "given")]
    pub ids: Option<Vec<String>>,
    /// The tasks `GET /v1/tasks` lists with these parameters (except `cursor` and
    /// `limit`); `status` defaults to `failed,expired,stopped`.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "given")]
    pub filter: Option<BTreeMap<String, String>>,
    /// The tenant of the `ids`.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "given")]
    pub tenant: Option<String>,
    /// Continue a `filter` selection after the previous answer's `next_cursor`.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "given")]
    pub cursor: Option<String>,
    /// Tasks of a `filter` selection, or records of a `dead_letter` range, per request,
    /// 1 to 1000 (default 100).
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "whole")]
    pub limit: Option<u32>,
    /// The tasks whose failures a dead-letter topic holds over a time or offset range.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "given")]
    pub dead_letter: Option<DeadLetterRange>,
    /// Only say what would be submitted.
    pub dry_run: bool,
}

/// A range of a dead-letter topic: every partition whole, unless times or offsets narrow
/// it (each bound that is given narrows it further).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterRange {
    /// A tenant's `dead_letter` topic or a function's `on_failure` topic.
    pub topic: String,
    /// From the first record at or after this time (RFC 3339, or a duration back from
    /// now).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "given"
    )]
    pub from_time: Option<String>,
    /// Up to the last record before the first one at or after this time.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "given"
    )]
    pub to_time: Option<String>,
    /// Only these partitions (by number), each with its offsets. Default every partition.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "given"
    )]
    pub partitions: Option<BTreeMap<String, OffsetRange>>,
}

/// Offsets of one partition, both inclusive; a bound left out does not narrow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OffsetRange {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "whole")]
    pub from_offset: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "whole")]
    pub to_offset: Option<i64>,
}

/// An optional field that, when present, must not be `null`.
fn given<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A whole number, not negative, written as JSON likes (`248` or `248.0`), that fits
/// `T`; not `null`.
fn whole<'de, D: serde::Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Option<T>, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    let whole = n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 18_446_744_073_709_551_616.0)
            .map(|f| f as u64)
    });
    whole
        .and_then(|v| T::try_from(v).ok())
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("`{n}` is not a whole number in range")))
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

impl RedriveItem {
    /// A task left as it is without being found: only its id is known.
    pub fn missing(id: &str, reason: SkipReason) -> Self {
        Self {
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
    /// Pass as `cursor`, with the same `redrive_id` and `filter` (or `dead_letter`), for
    /// the next page; `null` on the last page (and for `ids`).
    pub next_cursor: Option<String>,
    /// What this page read of a dead-letter topic (only for `dead_letter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetterPage>,
}

/// What one page read of a dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterPage {
    pub topic: String,
    /// Records read.
    pub records: u32,
    /// Records read that name no task, or a task of another tenant than the caller's
    /// (or than `tenant`): left out of `tasks`.
    pub passed_over: u32,
}

impl RedriveReport {
    /// The answer for these items, counted.
    pub fn new(
        redrive_id: String,
        dry_run: bool,
        tasks: Vec<RedriveItem>,
        next_cursor: Option<String>,
    ) -> Self {
        let submitted = tasks
            .iter()
            .filter(|i| i.action != RedriveAction::Skipped)
            .count();
        let skipped = tasks.len() - submitted;
        Self {
            redrive_id,
            dry_run,
            submitted: u32::try_from(submitted).unwrap_or(u32::MAX),
            skipped: u32::try_from(skipped).unwrap_or(u32::MAX),
            tasks,
            next_cursor,
            dead_letter: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_fields_are_left_out_or_given_never_null() {
        let nulls: Result<RedriveRequest, _> =
            serde_json::from_str(r#"{"filter": {}, "limit": null}"#);
        assert!(nulls.is_err(), "null is not a limit");
        for field in [
            "redrive_id",
            "ids",
            "filter",
            "tenant",
            "cursor",
            "dead_letter",
        ] {
            let r: Result<RedriveRequest, _> =
                serde_json::from_str(&format!(r#"{{"{field}": null}}"#));
            assert!(r.is_err(), "{field}: null");
        }
        let whole: RedriveRequest =
            serde_json::from_str(r#"{"filter": {}, "limit": 248.0}"#).unwrap();
        assert_eq!(whole.limit, Some(248));
        for bad in ["2.5", "-1", "1e12", "\"5\""] {
            let r: Result<RedriveRequest, _> =
                serde_json::from_str(&format!(r#"{{"filter": {{}}, "limit": {bad}}}"#));
            assert!(r.is_err(), "{bad}");
        }
        let empty = serde_json::to_string(&RedriveRequest::default()).unwrap();
        assert_eq!(empty, r#"{"dry_run":false}"#);
    }

    #[test]
    fn a_dead_letter_range_names_its_topic_and_whole_offsets() {
        let r: RedriveRequest = serde_json::from_str(
            r#"{"dead_letter": {"topic": "tw.dlq.acme", "from_time": "1h",
                "partitions": {"0": {"from_offset": 3, "to_offset": 7.0}, "2": {}}}}"#,
        )
        .unwrap();
        let d = r.dead_letter.unwrap();
        assert_eq!(d.topic, "tw.dlq.acme");
        assert_eq!((d.from_time.as_deref(), d.to_time), (Some("1h"), None));
        let p = d.partitions.unwrap();
        assert_eq!((p["0"].from_offset, p["0"].to_offset), (Some(3), Some(7)));
        assert_eq!(p["2"], OffsetRange::default());
        for bad in [
            r#"{"dead_letter": {}}"#,
            r#"{"dead_letter": {"topic": null}}"#,
            r#"{"dead_letter": {"topic": "t", "to_time": null}}"#,
            r#"{"dead_letter": {"topic": "t", "partitions": {"0": {"from_offset": -1}}}}"#,
            r#"{"dead_letter": {"topic": "t", "partitions": {"0": {"to_offset": 1e19}}}}"#,
            r#"{"dead_letter": {"topic": "t", "partitions": {"0": {"offset": 1}}}}"#,
            r#"{"dead_letter": {"topic": "t", "bogus": 1}}"#,
        ] {
            assert!(
                serde_json::from_str::<RedriveRequest>(bad).is_err(),
                "{bad}"
            );
        }
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
                include_str!("../../../docs/openapi.yaml").contains(r.as_str()),
                "{r:?} is documented"
            );
        }
    }

    #[test]
    fn a_report_counts_what_went_and_what_stayed() {
        let mut went = RedriveItem::missing("a", SkipReason::NotFound);
        went.action = RedriveAction::Submitted;
        went.reason = None;
        let r = RedriveReport::new(
            "r".into(),
            false,
            vec![went, RedriveItem::missing("b", SkipReason::NotFound)],
            None,
        );
        assert_eq!((r.submitted, r.skipped), (1, 1));
    }
}
