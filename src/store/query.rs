//! Building task queries: the filters of `GET /v1/tasks`, checked and turned into one SQL
//! statement with keyset pagination. Pure: no database, no clock (the caller passes
//! `now`).
//!
//! Parameters come from anyone with a token: no byte-index slicing, no indexing and no
//! unchecked arithmetic here (the lints below enforce it).

#![deny(
    clippy::string_slice,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::time::Duration;

use rusqlite::types::Value;

use crate::codec::TaskStatus;

/// Page size when none is asked for.
pub const DEFAULT_LIMIT: u32 = 100;
/// Largest page size.
pub const MAX_LIMIT: u32 = 1000;
/// Longest `id_prefix`, in characters.
pub const MAX_PREFIX: usize = 200;

/// A query parameter that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{parameter}`: {message}")]
pub struct ParamError {
    pub parameter: String,
    /// Why it is rejected.
    pub message: String,
}

fn bad(parameter: &str, message: impl Into<String>) -> ParamError {
    ParamError {
        parameter: parameter.to_string(),
        message: message.into(),
    }
}

/// Every status, in lifecycle order.
pub const ALL_STATUSES: [TaskStatus; 7] = [
    TaskStatus::Queued,
    TaskStatus::Running,
    TaskStatus::Retrying,
    TaskStatus::Succeeded,
    TaskStatus::Failed,
    TaskStatus::Stopped,
    TaskStatus::Expired,
];

pub use super::time_param::parse_time;

/// A time range: `after` inclusive, `before` exclusive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    /// At or after, ms.
    pub after: Option<i64>,
    /// Strictly before, ms.
    pub before: Option<i64>,
}

/// The position after the last task of a page: the key listings are ordered by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub submitted_at: i64,
    pub id: String,
    /// Breaks ties between tenants that use the same id.
    pub tenant: String,
}

impl Cursor {
    /// The form handed to clients: `<submitted_at>.<tenant as hex>.<id as hex>`. Opaque to
    /// them; any string of that form is a valid position (`docs/openapi.yaml` gives the
    /// pattern), so a cursor is never refused for what it points at.
    pub fn encode(&self) -> String {
        format!(
            "{}.{}.{}",
            self.submitted_at,
            hex(self.tenant.as_bytes()),
            hex(self.id.as_bytes())
        )
    }

    /// Reads what [`Cursor::encode`] wrote. Bytes that are not UTF-8 are replaced (the
    /// position is then between real ids, which is still a position).
    pub fn decode(s: &str) -> Result<Self, ParamError> {
        let invalid = || bad("cursor", "not a cursor returned by this API");
        let mut parts = s.split('.');
        let (Some(at), Some(tenant), Some(id), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        // Up to 19 digits, as an i64 writes itself; a value past its range is the
        // position at its end. The length of the rest is bounded by the request's.
        let digits = at.strip_prefix('-').unwrap_or(at);
        if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let wide: i128 = at.parse().map_err(|_| invalid())?;
        let submitted_at =
            i64::try_from(wide).unwrap_or(if wide < 0 { i64::MIN } else { i64::MAX });
        Ok(Self {
            submitted_at,
            tenant: unhex(tenant).ok_or_else(invalid)?,
            id: unhex(id).ok_or_else(invalid)?,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lower-case hex pairs to text, lossily.
fn unhex(s: &str) -> Option<String> {
    let digit = |b: u8| match b {
        b'0'..=b'9' => b.checked_sub(b'0'),
        b'a'..=b'f' => b.checked_sub(b'a')?.checked_add(10),
        _ => None,
    };
    let bytes = s
        .as_bytes()
        .chunks(2)
        .map(|pair| match *pair {
            [hi, lo] => Some(digit(hi)?.checked_mul(16)?.checked_add(digit(lo)?)?),
            _ => None,
        })
        .collect::<Option<Vec<u8>>>()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// What `GET /v1/tasks` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only this tenant's tasks (set from the token; not a user parameter).
    pub scope: Option<String>,
    /// Only this tenant's tasks (the `tenant` parameter).
    pub tenant: Option<String>,
    /// Any of these statuses; empty for all.
    pub statuses: Vec<TaskStatus>,
    /// Only this function.
    pub function: Option<String>,
    /// Ids starting with this.
    pub id_prefix: Option<String>,
    pub submitted: TimeRange,
    /// Start of the first attempt.
    pub started: TimeRange,
    /// When the task reached its terminal status.
    pub finished: TimeRange,
    /// Continue after this task.
    pub cursor: Option<Cursor>,
    pub limit: u32,
}

impl Default for TaskFilter {
    fn default() -> Self {
        Self {
            scope: None,
            tenant: None,
            statuses: Vec::new(),
            function: None,
            id_prefix: None,
            submitted: TimeRange::default(),
            started: TimeRange::default(),
            finished: TimeRange::default(),
            cursor: None,
            limit: DEFAULT_LIMIT,
        }
    }
}

/// The query parameters `GET /v1/tasks` understands.
pub const LIST_PARAMS: &[&str] = &[
    "status",
    "tenant",
    "function",
    "id_prefix",
    "submitted_after",
    "submitted_before",
    "started_after",
    "started_before",
    "finished_after",
    "finished_before",
    "cursor",
    "limit",
];

impl TaskFilter {
    /// Reads the query parameters of `GET /v1/tasks`. Unknown or repeated parameters,
    /// bad values and empty ranges are errors that name the parameter.
    pub fn from_params(params: &[(String, String)], now_ms: i64) -> Result<Self, ParamError> {
        let mut f = TaskFilter::default();
        let mut seen = std::collections::BTreeSet::new();
        for (k, v) in params {
            if !LIST_PARAMS.contains(&k.as_str()) {
                return Err(bad(
                    k,
                    format!("unknown parameter (known: {})", LIST_PARAMS.join(", ")),
                ));
            }
            if !seen.insert(k.as_str()) {
                return Err(bad(k, "given more than once"));
            }
            let time = |v: &str| parse_time(v, now_ms).map_err(|m| bad(k, m));
            match k.as_str() {
                "status" => {
                    for s in v.split(',').map(|s| s.trim_matches(' ')) {
                        if s.is_empty() {
                            return Err(bad(k, "empty status between commas"));
                        }
                        let st = s.parse::<TaskStatus>().map_err(|_| {
                            bad(
                                k,
                                format!(
                                    "unknown status `{s}` (known: {})",
                                    ALL_STATUSES.map(TaskStatus::as_str).join(", ")
                                ),
                            )
                        })?;
                        if !f.statuses.contains(&st) {
                            f.statuses.push(st);
                        }
                    }
                    if f.statuses.is_empty() {
                        return Err(bad(k, "name at least one status"));
                    }
                }
                "tenant" | "function" => {
                    crate::config::check_name(v).map_err(|m| bad(k, m))?;
                    if k == "tenant" {
                        f.tenant = Some(v.clone());
                    } else {
                        f.function = Some(v.clone());
                    }
                }
                "id_prefix" => f.id_prefix = Some(non_empty(k, v, MAX_PREFIX)?),
                "submitted_after" => f.submitted.after = Some(time(v)?),
                "submitted_before" => f.submitted.before = Some(time(v)?),
                "started_after" => f.started.after = Some(time(v)?),
                "started_before" => f.started.before = Some(time(v)?),
                "finished_after" => f.finished.after = Some(time(v)?),
                "finished_before" => f.finished.before = Some(time(v)?),
                "cursor" => f.cursor = Some(Cursor::decode(v)?),
                "limit" => {
                    f.limit = v
                        .trim()
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            bad(k, format!("must be a whole number from 1 to {MAX_LIMIT}"))
                        })?;
                }
                _ => {}
            }
        }
        // A range whose end is not after its start is valid and matches nothing.
        Ok(f)
    }
}

fn non_empty(k: &str, v: &str, max: usize) -> Result<String, ParamError> {
    if v.is_empty() {
        return Err(bad(k, "must not be empty"));
    }
    if v.chars().count() > max {
        return Err(bad(k, format!("must be at most {max} characters")));
    }
    Ok(v.to_string())
}

/// The smallest string greater than every string that starts with `prefix` (byte order,
/// which for UTF-8 is code point order); `None` when there is none.
pub fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = u32::from(last).saturating_add(1);
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// An SQL statement and its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Sql {
    /// The text, with `?` placeholders.
    pub text: String,
    /// The values, in order.
    pub params: Vec<Value>,
}

/// The columns of a task row, in the order [`crate::store`] reads them.
pub const TASK_COLUMNS: &str = "id, tenant, function, status, submitted_at, started_at, \
     finished_at, status_at, attempts, error, reason, scheduler_id, queue_topic, \
     queue_partition, queue_offset, redrive_id";

/// One page of tasks matching `f`, newest submitted first, ties broken by id then tenant
/// (both descending). Fetches `limit + 1` rows so the caller knows whether a next page
/// exists.
///
/// Several statuses become one ordered, limited branch per status, merged with `UNION
/// ALL`: each branch walks its `(…, status, submitted_at, id)` index newest first and stops
/// after `limit + 1` rows, where `status IN (…)` would have to sort every matching task.
pub fn list_sql(f: &TaskFilter) -> Sql {
    list_sql_hinted(f, false)
}

/// [`list_sql`], reading through the id index when `by_id` (for a selective id prefix).
pub fn list_sql_hinted(f: &TaskFilter, by_id: bool) -> Sql {
    let fixed_tenant = f.scope.is_some() || f.tenant.is_some();
    let order = if fixed_tenant {
        " ORDER BY submitted_at DESC, id DESC"
    } else {
        " ORDER BY submitted_at DESC, id DESC, tenant DESC"
    };
    let limit = Value::Integer(i64::from(f.limit).saturating_add(1));
    match f.statuses.as_slice() {
        [] | [_] => {
            let one = f.statuses.first().copied();
            let (mut text, mut params) = branch(f, one, fixed_tenant, by_id);
            text.push_str(order);
            text.push_str(" LIMIT ?");
            params.push(limit);
            Sql { text, params }
        }
        many => {
            let mut parts = Vec::new();
            let mut params = Vec::new();
            for s in many {
                let (text, p) = branch(f, Some(*s), fixed_tenant, by_id);
                parts.push(format!("SELECT * FROM ({text}{order} LIMIT ?)"));
                params.extend(p);
                params.push(limit.clone());
            }
            let text = format!(
                "SELECT {TASK_COLUMNS} FROM ({}){order} LIMIT ?",
                parts.join(" UNION ALL ")
            );
            params.push(limit);
            Sql { text, params }
        }
    }
}

/// `SELECT … FROM tasks WHERE …` for one status (or any).
fn branch(
    f: &TaskFilter,
    status: Option<TaskStatus>,
    fixed_tenant: bool,
    by_id: bool,
) -> (String, Vec<Value>) {
    let mut conds: Vec<String> = Vec::new();
    let mut params: Vec<Value> = Vec::new();
    for t in [&f.scope, &f.tenant].into_iter().flatten() {
        conds.push("tenant = ?".into());
        params.push(Value::Text(t.clone()));
    }
    if let Some(s) = status {
        conds.push("status = ?".into());
        params.push(Value::Text(s.as_str().into()));
    }
    if let Some(func) = &f.function {
        conds.push("function = ?".into());
        params.push(Value::Text(func.clone()));
    }
    if let Some(p) = &f.id_prefix {
        conds.push("id >= ?".into());
        params.push(Value::Text(p.clone()));
        if let Some(upper) = prefix_upper_bound(p) {
            conds.push("id < ?".into());
            params.push(Value::Text(upper));
        }
    }
    for (col, r) in [
        ("submitted_at", f.submitted),
        ("started_at", f.started),
        ("finished_at", f.finished),
    ] {
        if let Some(a) = r.after {
            conds.push(format!("{col} >= ?"));
            params.push(Value::Integer(a));
        }
        if let Some(b) = r.before {
            conds.push(format!("{col} < ?"));
            params.push(Value::Integer(b));
        }
    }
    if let Some(c) = &f.cursor {
        if fixed_tenant {
            conds.push("(submitted_at, id) < (?, ?)".into());
            params.push(Value::Integer(c.submitted_at));
            params.push(Value::Text(c.id.clone()));
        } else {
            conds.push("(submitted_at, id, tenant) < (?, ?, ?)".into());
            params.push(Value::Integer(c.submitted_at));
            params.push(Value::Text(c.id.clone()));
            params.push(Value::Text(c.tenant.clone()));
        }
    }
    let mut text = format!("SELECT {TASK_COLUMNS} FROM tasks");
    if by_id {
        text.push_str(" INDEXED BY tasks_id");
    }
    if !conds.is_empty() {
        text.push_str(" WHERE ");
        text.push_str(&conds.join(" AND "));
    }
    (text, params)
}

/// Minute buckets `[start, end)` covering the last `minutes` minutes up to and including
/// the current, partial minute.
pub fn minute_window(now_ms: i64, minutes: u32) -> (i64, i64) {
    let end = now_ms
        .div_euclid(60_000)
        .saturating_mul(60_000)
        .saturating_add(60_000);
    (
        end.saturating_sub(i64::from(minutes).saturating_mul(60_000)),
        end,
    )
}

/// A duration in humantime's short form (`1h 30m`).
pub fn short_duration(ms: i64) -> String {
    humantime::format_duration(Duration::from_millis(ms.unsigned_abs())).to_string()
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_340_000_000; // 2025-11-28T14:26:40Z

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn err(pairs: &[(&str, &str)]) -> ParamError {
        TaskFilter::from_params(&params(pairs), NOW).unwrap_err()
    }

    #[test]
    fn times_are_rfc3339_or_relative() {
        assert_eq!(parse_time("24h", NOW), Ok(NOW - 86_400_000));
        assert_eq!(parse_time("1h 30m", NOW), Ok(NOW - 5_400_000));
        assert_eq!(parse_time("2025-11-28T14:26:40Z", NOW), Ok(NOW));
        assert_eq!(parse_time("2025-11-28T14:26:40.5Z", NOW), Ok(NOW + 500));
        assert_eq!(parse_time("2025-11-28T15:26:40+01:00", NOW), Ok(NOW));
        assert_eq!(parse_time("2025-11-28T13:26:40-01:00", NOW), Ok(NOW));
        assert!(parse_time("2025-11-28T14:26:40", NOW).is_err(), "no zone");
        assert!(parse_time("yesterday", NOW).is_err());
        assert!(parse_time("2025-13-01T00:00:00Z", NOW).is_err());
    }

    #[test]
    fn params_are_checked_and_named() {
        let f = TaskFilter::from_params(
            &params(&[
                ("status", "failed, succeeded,failed"),
                ("submitted_after", "24h"),
                ("id_prefix", "order-"),
                ("function", "resize"),
                ("limit", "1000"),
            ]),
            NOW,
        )
        .unwrap();
        assert_eq!(f.statuses, vec![TaskStatus::Failed, TaskStatus::Succeeded]);
        assert_eq!(f.submitted.after, Some(NOW - 86_400_000));
        assert_eq!(f.limit, 1000);
        for (pairs, param) in [
            (vec![("status", "done")], "status"),
            (vec![("status", ",")], "status"),
            (vec![("limit", "0")], "limit"),
            (vec![("limit", "1001")], "limit"),
            (vec![("limit", "ten")], "limit"),
            (vec![("submitted_after", "last tuesday")], "submitted_after"),
            (vec![("started_before", "2025-11-28")], "started_before"),
            (vec![("id_prefix", "")], "id_prefix"),
            (vec![("cursor", "zz")], "cursor"),
            (vec![("cursor", "7b7d")], "cursor"),
            (vec![("cursor", "1.6.61")], "cursor"),
            (vec![("cursor", "1.61.61.")], "cursor"),
            (vec![("cursor", "é.61.61")], "cursor"),
            (vec![("colour", "red")], "colour"),
            (vec![("limit", "5"), ("limit", "6")], "limit"),
            (vec![("status", "failed,,")], "status"),
            (vec![("status", "failed, ,queued")], "status"),
            (vec![("submitted_after", "%C3%A9ééééa")], "submitted_after"),
            (vec![("submitted_after", "ééééa")], "submitted_after"),
            (vec![("function", "")], "function"),
            (vec![("tenant", "Acme")], "tenant"),
        ] {
            assert_eq!(err(&pairs).parameter, param, "{pairs:?}");
        }
        // An empty or reversed range is valid and matches nothing.
        for (after, before) in [("24h", "24h"), ("1h", "2h")] {
            let f = TaskFilter::from_params(
                &params(&[("finished_after", after), ("finished_before", before)]),
                NOW,
            )
            .unwrap();
            assert!(f.finished.after >= f.finished.before);
        }
        let long = "é".repeat(MAX_PREFIX + 1);
        assert_eq!(err(&[("id_prefix", &long)]).parameter, "id_prefix");
        assert!(
            TaskFilter::from_params(&params(&[("id_prefix", &"x".repeat(MAX_PREFIX))]), NOW)
                .is_ok()
        );
    }

    #[test]
    fn cursors_round_trip() {
        let c = Cursor {
            submitted_at: -5,
            id: "a\"b,é".into(),
            tenant: "acme".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        // Whatever task ends a page, its cursor is accepted back (found by fuzzing: a
        // long id or an extreme time made a cursor the API then refused).
        for c in [
            Cursor {
                submitted_at: i64::MAX,
                id: "x".repeat(5_000),
                tenant: "acme".into(),
            },
            Cursor {
                submitted_at: i64::MIN,
                id: "\u{FFFD}".repeat(100),
                tenant: "\u{FFFD}".repeat(64),
            },
        ] {
            assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        }
        // Past the range of the time: the end of it.
        let far = Cursor::decode("9999999999999999999.61.62").unwrap();
        assert_eq!(far.submitted_at, i64::MAX);
        let crash = include_str!("../../fuzz/regressions/api_query/cursor-lossy-tenant");
        let c = Cursor::decode(crash.trim_end()).unwrap();
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn prefix_bounds_cover_exactly_the_prefix() {
        assert_eq!(prefix_upper_bound("order-").as_deref(), Some("order."));
        assert_eq!(prefix_upper_bound("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_upper_bound("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);
        let upper = prefix_upper_bound("ab").unwrap();
        for s in ["ab", "ab\u{10FFFF}\u{10FFFF}", "abzzz"] {
            assert!(s >= "ab" && s < upper.as_str(), "{s}");
        }
        for s in ["aa\u{10FFFF}", "ac", "b"] {
            assert!(!(s >= "ab" && s < upper.as_str()), "{s}");
        }
    }

    #[test]
    fn sql_combines_every_filter() {
        let f = TaskFilter {
            scope: Some("acme".into()),
            statuses: vec![TaskStatus::Failed],
            function: Some("resize".into()),
            id_prefix: Some("order-".into()),
            submitted: TimeRange {
                after: Some(10),
                before: Some(20),
            },
            finished: TimeRange {
                after: Some(15),
                before: None,
            },
            cursor: Some(Cursor {
                submitted_at: 19,
                id: "order-9".into(),
                tenant: "acme".into(),
            }),
            limit: 50,
            ..TaskFilter::default()
        };
        let sql = list_sql(&f);
        assert_eq!(
            sql.text,
            format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE tenant = ? AND status = ? \
                 AND function = ? AND id >= ? AND id < ? AND submitted_at >= ? \
                 AND submitted_at < ? AND finished_at >= ? AND (submitted_at, id) < (?, ?) \
                 ORDER BY submitted_at DESC, id DESC LIMIT ?"
            )
        );
        assert_eq!(
            sql.params,
            vec![
                Value::Text("acme".into()),
                Value::Text("failed".into()),
                Value::Text("resize".into()),
                Value::Text("order-".into()),
                Value::Text("order.".into()),
                Value::Integer(10),
                Value::Integer(20),
                Value::Integer(15),
                Value::Integer(19),
                Value::Text("order-9".into()),
                Value::Integer(51),
            ]
        );
    }

    #[test]
    fn several_statuses_are_merged_branches() {
        let f = TaskFilter {
            scope: Some("acme".into()),
            statuses: vec![TaskStatus::Failed, TaskStatus::Queued],
            limit: 5,
            ..TaskFilter::default()
        };
        let sql = list_sql(&f);
        let branch = |s: &str| {
            let _ = s;
            format!(
                "SELECT * FROM (SELECT {TASK_COLUMNS} FROM tasks WHERE tenant = ? AND status = ? \
                 ORDER BY submitted_at DESC, id DESC LIMIT ?)"
            )
        };
        assert_eq!(
            sql.text,
            format!(
                "SELECT {TASK_COLUMNS} FROM ({} UNION ALL {}) ORDER BY submitted_at DESC, id DESC LIMIT ?",
                branch("failed"),
                branch("queued")
            )
        );
        let t = |s: &str| Value::Text(s.into());
        assert_eq!(
            sql.params,
            vec![
                t("acme"),
                t("failed"),
                Value::Integer(6),
                t("acme"),
                t("queued"),
                Value::Integer(6),
                Value::Integer(6),
            ]
        );
    }

    #[test]
    fn sql_without_a_tenant_orders_by_tenant_too() {
        let f = TaskFilter {
            cursor: Some(Cursor {
                submitted_at: 1,
                id: "x".into(),
                tenant: "b".into(),
            }),
            ..TaskFilter::default()
        };
        let sql = list_sql(&f);
        assert!(sql.text.contains("(submitted_at, id, tenant) < (?, ?, ?)"));
        assert!(
            sql.text
                .ends_with("ORDER BY submitted_at DESC, id DESC, tenant DESC LIMIT ?")
        );
        assert_eq!(sql.params.last(), Some(&Value::Integer(101)));
        let plain = list_sql(&TaskFilter::default());
        assert_eq!(
            plain.text,
            format!(
                "SELECT {TASK_COLUMNS} FROM tasks ORDER BY submitted_at DESC, id DESC, tenant DESC LIMIT ?"
            )
        );
    }

    #[test]
    fn minute_window_ends_after_the_current_minute() {
        let (start, end) = minute_window(NOW, 60);
        assert_eq!(end % 60_000, 0);
        assert!(end > NOW && end - NOW <= 60_000);
        assert_eq!(end - start, 3_600_000);
    }
}
