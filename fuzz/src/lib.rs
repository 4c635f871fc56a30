//! The properties the fuzz targets check, one function per target. The targets in
//! `fuzz_targets/` run them under libFuzzer (`scripts/fuzz.sh`); `tests/fuzz_replay.rs`
//! replays the seed and regression corpora through them on stable Rust in every test run.
//!
//! Each function takes any bytes and panics only when Tidewater breaks a property.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tidewater::api::SubmitRequest;
use tidewater::api::redrive::request::{self, Source};
use tidewater::api::redrive::{MAX_IDS, RedriveRequest};
use tidewater::codec::{self, Encoding, JsonTask};
use tidewater::config::Config;
use tidewater::scheduler::offsets::{MAX_METADATA, OffsetTracker, decode_done_above};
use tidewater::store::query::{self, Cursor, TaskFilter};
use tidewater::types::TopicPartition;

/// A fixed "now" for the query parameters, so runs reproduce.
const NOW_MS: i64 = 1_764_340_000_000;

/// A task record as the scheduler and the indexer read it: any bytes, with any
/// `content-type` header or none (single-object Avro, bare Avro and JSON all reach the
/// decoder this way). A decoded task encodes and decodes again to itself.
///
/// Input: one selector byte (no header, JSON, Avro, `avro/binary`, or another header
/// whose text runs to the first NUL byte), then the record value.
pub fn task_record(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let (content_type, value) = match which % 5 {
        0 => (None, rest),
        1 => (Some("application/json; charset=utf-8"), rest),
        2 => (Some("application/avro"), rest),
        3 => (Some("avro/binary"), rest),
        _ => {
            let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            let (header, value) = rest.split_at(end);
            let Ok(header) = std::str::from_utf8(header) else {
                return;
            };
            (Some(header), value.get(1..).unwrap_or_default())
        }
    };
    if let Ok(task) = codec::decode_task(value, content_type) {
        assert!(!task.function.is_empty());
        let avro = codec::encode_task_as(&task, Encoding::Avro).expect("a decoded task encodes");
        let again = codec::decode_task(&avro, None).expect("an encoded task decodes");
        assert_eq!(again, task);
        let _ = codec::encode_task_as(&task, Encoding::Json);
    }
}

/// Records of the delay topics and the control topic, and the other records Tidewater
/// reads back (status, outcome, captured output): any bytes decode or are refused, and
/// a delayed task or stop request that decodes encodes to the same record.
///
/// Input: one selector byte, then the record value.
pub fn delayed_control(data: &[u8]) {
    let Some((&which, value)) = data.split_first() else {
        return;
    };
    match which % 5 {
        0 => {
            if let Ok(d) = codec::decode_delayed(value) {
                let bytes = codec::encode_delayed(&d).expect("encodes");
                assert_eq!(codec::decode_delayed(&bytes).expect("decodes"), d);
            }
        }
        1 => {
            if let Ok(s) = codec::decode_stop_request(value) {
                let bytes = codec::encode_stop_request(&s).expect("encodes");
                assert_eq!(codec::decode_stop_request(&bytes).expect("decodes"), s);
            }
        }
        2 => {
            let _ = codec::decode_status(value);
        }
        3 => {
            if let Ok(o) = codec::decode_outcome(value) {
                let _ = codec::outcome_json(&o);
            }
        }
        _ => {
            let _ = codec::decode_task_log(value);
        }
    }
}

/// The configuration file: any text parses and validates, or is refused with an error;
/// what the processes derive from a valid one does not panic either.
pub fn config_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::from_toml(text) {
        let _ = config.queue_topics();
        let _ = config.group_id();
        let _ = config.api.resolve_tokens();
    }
}

/// The query string of `GET /v1/tasks` as the API reads it: URL decoding (as axum's
/// `Query` does), then the filter and the SQL it builds; and the whole input as one time
/// parameter and as a cursor.
pub fn api_query(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = query::parse_time(s, NOW_MS);
        if let Ok(c) = Cursor::decode(s) {
            // An accepted cursor is a position that encodes again.
            let again = Cursor::decode(&c.encode()).expect("an encoded cursor decodes");
            assert_eq!(again, c);
        }
    }
    let Ok(params) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(data) else {
        return;
    };
    if let Ok(filter) = TaskFilter::from_params(&params, NOW_MS) {
        let _ = query::list_sql(&filter);
        let _ = query::list_sql_hinted(&filter, true);
    }
}

/// The body of `POST /v1/tasks` and the task it becomes on a queue topic.
pub fn api_body(data: &[u8]) {
    if let Ok(req) = serde_json::from_slice::<SubmitRequest>(data) {
        let task: codec::Task = JsonTask {
            id: req.id,
            tenant: req.tenant,
            function: req.function,
            payload: req.payload,
            headers: req.headers,
            submitted_at: Some(0),
            not_before: None,
        }
        .into();
        let _ = codec::encode_task_as(&task, Encoding::Avro);
        let _ = codec::encode_task_as(&task, Encoding::Json);
    }
}

/// The body of `POST /v1/tasks/redrive` (also what `tidewater tasks redrive` sends):
/// refused with a parameter error or read into one source of tasks, within its bounds;
/// a redrive id is accepted exactly when it is valid; an accepted body sent again as the
/// CLI serialises it reads back the same.
pub fn redrive_body(data: &[u8]) {
    let Ok(req) = serde_json::from_slice::<RedriveRequest>(data) else {
        return;
    };
    let id = request::redrive_id(req.redrive_id.as_deref());
    assert_eq!(
        id.is_ok(),
        req.redrive_id
            .as_deref()
            .is_none_or(tidewater::api::redrive::valid_redrive_id)
    );
    let Ok(source) = request::source(&req, NOW_MS) else {
        return;
    };
    match &source {
        Source::Ids { ids, .. } => {
            assert!(!ids.is_empty() && ids.len() <= MAX_IDS, "{} ids", ids.len());
            let unique: std::collections::HashSet<&String> = ids.iter().collect();
            assert_eq!(unique.len(), ids.len(), "ids repeat: {ids:?}");
        }
        Source::DeadLetter(d) => {
            assert!((1..=1000).contains(&d.limit), "limit {}", d.limit);
            assert!(
                !d.topic.is_empty() && d.topic.len() <= 249,
                "topic {:?}",
                d.topic
            );
        }
        Source::Filter(_) => {}
    }
    let again: RedriveRequest = serde_json::from_slice(&serde_json::to_vec(&req).unwrap())
        .unwrap_or_else(|e| panic!("an accepted request does not read back: {e}"));
    assert_eq!(
        serde_json::to_value(&again).unwrap(),
        serde_json::to_value(&req).unwrap()
    );
    assert_eq!(request::source(&again, NOW_MS).ok(), Some(source));
}

/// The offset tracker's commit metadata: any text decodes without panicking, and what a
/// tracker writes after any sequence of starts and completions reads back as the offsets
/// done above its commit point: never one that is not done, all of them while they fit.
///
/// Input: the text up to the first NUL byte, then pairs of bytes (gap to the next offset
/// started, whether it finished).
pub fn commit_metadata(data: &[u8]) {
    let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let (text, steps) = data.split_at(end);
    let _ = decode_done_above(&String::from_utf8_lossy(text));
    let tp = TopicPartition::new("q", 0);
    let mut tracker = OffsetTracker::new();
    let epoch = tracker.assign(tp.clone());
    let mut next = 0i64;
    let mut done = Vec::new();
    let mut started = Vec::new();
    for step in steps.chunks_exact(2).take(512) {
        let (gap, finish) = (step[0], step[1] & 1 == 1);
        next += i64::from(gap % 4) + 1;
        if tracker.start(&tp, next).is_some() {
            started.push(next);
            if finish {
                tracker.done(&tp, next, epoch);
                done.push(next);
            }
        }
    }
    for (t, commit, metadata) in tracker.transaction_offsets() {
        assert_eq!(t, tp);
        let decoded: Vec<i64> = decode_done_above(&metadata)
            .iter()
            .flat_map(|&(a, b)| a..=b)
            .filter(|o| started.contains(o))
            .collect();
        let expected: Vec<i64> = done.iter().copied().filter(|o| *o >= commit).collect();
        assert!(decoded.iter().all(|o| expected.contains(o)), "{metadata:?}");
        if metadata.len() < MAX_METADATA / 2 {
            assert_eq!(decoded, expected, "metadata {metadata:?}");
        }
    }
}
