use std::collections::BTreeMap;

use apache_avro::Schema;

use super::schema::{self, SINGLE_OBJECT_MAGIC};
use super::*;

fn task() -> Task {
    Task {
        id: "order-1".into(),
        tenant: Some("acme".into()),
        function: "resize".into(),
        payload: vec![0, 1, 2, 255],
        headers: [("k".to_string(), "v".to_string())].into(),
        submitted_at: Some(1_700_000_000_000),
        not_before: Some(1_700_000_005_000),
    }
}

fn outcome() -> Outcome {
    Outcome {
        task_id: "order-1".into(),
        tenant: "acme".into(),
        function: "resize".into(),
        status: OutcomeStatus::Failed,
        reason: Some(FailureReason::Timeout),
        error: Some("timed out after 5s".into()),
        result: None,
        payload: b"{}".to_vec(),
        task_headers: BTreeMap::new(),
        attempts: vec![Attempt {
            attempt: 1,
            started_at: 1,
            finished_at: 2,
            error: Some("boom".into()),
        }],
        submitted_at: 1,
        finished_at: 3,
        source: Source {
            topic: "tw.q.acme".into(),
            partition: 2,
            offset: 7,
        },
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        scheduler_id: "s1".into(),
    }
}

#[test]
fn task_round_trips_through_avro() {
    let bytes = encode_task(&task()).unwrap();
    assert_eq!(&bytes[..2], &SINGLE_OBJECT_MAGIC);
    assert_eq!(decode_task(&bytes, None).unwrap(), task());
    assert_eq!(
        decode_task(&bytes, Some("application/avro")).unwrap(),
        task()
    );
    // A bare datum, without the single-object header, is read too.
    assert_eq!(decode_task(&bytes[10..], None).unwrap(), task());
}

#[test]
fn outcome_and_status_round_trip() {
    let o = outcome();
    assert_eq!(decode_outcome(&encode_outcome(&o).unwrap()).unwrap(), o);
    let mut ok = o.clone();
    ok.status = OutcomeStatus::Succeeded;
    ok.reason = None;
    ok.error = None;
    ok.result = Some(b"done".to_vec());
    ok.traceparent = None;
    assert_eq!(decode_outcome(&encode_outcome(&ok).unwrap()).unwrap(), ok);
    let s = StatusEvent {
        task_id: "t".into(),
        tenant: "acme".into(),
        function: "f".into(),
        status: TaskStatus::Running,
        attempt: 1,
        at: 5,
        submitted_at: 4,
        reason: None,
        error: None,
        source: o.source.clone(),
        scheduler_id: "s".into(),
    };
    assert_eq!(decode_status(&encode_status(&s).unwrap()).unwrap(), s);
    let d = DelayedTask {
        task_id: "t".into(),
        tenant: "acme".into(),
        function: "f".into(),
        payload: vec![1, 2],
        headers: BTreeMap::new(),
        submitted_at: 1,
        due_at: 2,
        attempts: o.attempts.clone(),
        origin: o.source.clone(),
        traceparent: None,
    };
    assert_eq!(decode_delayed(&encode_delayed(&d).unwrap()).unwrap(), d);
    let mut stopped = o.clone();
    stopped.status = OutcomeStatus::Stopped;
    assert_eq!(
        decode_outcome(&encode_outcome(&stopped).unwrap()).unwrap(),
        stopped
    );
}

/// Fingerprints computed by the Java reference implementation
/// (`SchemaNormalization.parsingFingerprint64`, Avro 1.12.0) for `schemas/*.avsc`,
/// written little-endian. They change whenever a schema changes: recompute them then.
#[test]
fn fingerprints_match_the_reference_implementation() {
    let hex = |s: &str| {
        let schema = Schema::parse_str(s).unwrap();
        schema::hex(&fingerprint(&schema))
    };
    assert_eq!(hex(TASK_SCHEMA), "2f368cdf800033fb");
    assert_eq!(hex(OUTCOME_SCHEMA), "7e867ae6eb17a7a2");
    assert_eq!(hex(STATUS_SCHEMA), "2e87fd9edfb935b5");
    assert_eq!(hex(DELAYED_SCHEMA), "f681d02b485e9137");
    assert_eq!(hex(TASK_LOG_SCHEMA), "8f30ed70f240d57a");
    assert_eq!(hex(STOP_REQUEST_SCHEMA), "9fcd69d21d6cbd18");
}

#[test]
fn task_log_and_stop_request_round_trip() {
    let log = TaskLog {
        task_id: "order-1".into(),
        tenant: "acme".into(),
        function: "report".into(),
        attempt: 2,
        at: 1_700_000_000_123,
        stream: LogStream::HttpResponse,
        data: vec![0, 159, 146, 150, b'x'],
        truncated: true,
    };
    let bytes = encode_task_log(&log).unwrap();
    assert_eq!(&bytes[..2], &SINGLE_OBJECT_MAGIC);
    assert_eq!(decode_task_log(&bytes).unwrap(), log);
    let stop = StopRequest {
        task_id: "order-1".into(),
        tenant: "acme".into(),
        requested_at: 5,
        requested_by: "acme".into(),
    };
    assert_eq!(
        decode_stop_request(&encode_stop_request(&stop).unwrap()).unwrap(),
        stop
    );
    // Each schema's records are told apart by their fingerprint.
    assert!(matches!(
        decode_task_log(&encode_stop_request(&stop).unwrap()),
        Err(CodecError::UnknownFingerprint(_))
    ));
}

#[test]
fn a_record_of_another_schema_is_rejected() {
    let bytes = encode_outcome(&outcome()).unwrap();
    assert!(matches!(
        decode_task(&bytes, None),
        Err(CodecError::UnknownFingerprint(_))
    ));
}

#[test]
fn json_tasks_decode() {
    let t = decode_task(
        br#" {"id":"a","function":"f","payload":{"x":1},"headers":{"h":"v"}}"#,
        None,
    )
    .unwrap();
    assert_eq!(t.id, "a");
    assert_eq!(t.payload, br#"{"x":1}"#);
    let t = decode_task(
        br#"{"function":"f","payload":"hello"}"#,
        Some("application/json"),
    )
    .unwrap();
    assert_eq!(t.id, "");
    assert_eq!(t.payload, b"hello");
    assert!(decode_task(br#"{"function":"f","extra":1}"#, None).is_err());
    assert!(decode_task(br#"{"function":""}"#, None).is_err());
    assert!(decode_task(b"not a task", None).is_err());
    assert!(decode_task(b"{}", Some("text/plain")).is_err());
    assert!(matches!(decode_task(b"", None), Err(CodecError::Empty)));
}

#[test]
fn json_encoding_round_trips() {
    let mut t = task();
    t.payload = br#"{"w":100}"#.to_vec();
    let bytes = encode_task_as(&t, Encoding::Json).unwrap();
    assert_eq!(decode_task(&bytes, None).unwrap(), t);
    t.payload = b"plain text".to_vec();
    let bytes = encode_task_as(&t, Encoding::Json).unwrap();
    assert_eq!(decode_task(&bytes, None).unwrap(), t);
}

/// Every status; the match fails to compile when a status is added and not listed.
fn every_status() -> [TaskStatus; 7] {
    let all = [
        TaskStatus::Queued,
        TaskStatus::Running,
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::Retrying,
        TaskStatus::Stopped,
        TaskStatus::Expired,
    ];
    for s in all {
        match s {
            TaskStatus::Queued
            | TaskStatus::Running
            | TaskStatus::Succeeded
            | TaskStatus::Failed
            | TaskStatus::Retrying
            | TaskStatus::Stopped
            | TaskStatus::Expired => {}
        }
    }
    all
}

#[test]
fn status_names_round_trip_and_match_the_wire_names() {
    for s in every_status() {
        assert_eq!(s.as_str().parse::<TaskStatus>(), Ok(s));
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            format!("\"{}\"", s.as_str()),
            "the JSON and Avro name of {s:?}"
        );
    }
}

#[test]
fn unknown_status_names_are_errors() {
    for name in ["", "done", "Queued", " running", "succeeded "] {
        assert_eq!(
            name.parse::<TaskStatus>(),
            Err(UnknownStatus(name.to_string()))
        );
    }
    assert_eq!(
        "done".parse::<TaskStatus>().unwrap_err().to_string(),
        "unknown task status `done`"
    );
}

#[test]
fn terminal_statuses_are_the_final_ones() {
    let terminal: Vec<TaskStatus> = every_status()
        .into_iter()
        .filter(|s| s.is_terminal())
        .collect();
    assert_eq!(
        terminal,
        [
            TaskStatus::Succeeded,
            TaskStatus::Failed,
            TaskStatus::Stopped,
            TaskStatus::Expired
        ]
    );
}

/// Status events and outcomes of every shape: each enum symbol, null and set unions,
/// empty and several map entries and attempts, negative and large numbers, non-ASCII.
fn shapes() -> (Vec<StatusEvent>, Vec<Outcome>) {
    let statuses = every_status();
    let reasons = [
        None,
        Some(FailureReason::Executor),
        Some(FailureReason::Timeout),
        Some(FailureReason::NonRetryable),
        Some(FailureReason::Malformed),
        Some(FailureReason::UnknownFunction),
        Some(FailureReason::PayloadTooLarge),
        Some(FailureReason::TenantMismatch),
    ];
    let numbers = [
        0,
        1,
        -1,
        63,
        64,
        -65,
        8191,
        1_764_340_000_000,
        i64::MAX,
        i64::MIN,
    ];
    let mut events = Vec::new();
    for (i, status) in statuses.iter().enumerate() {
        for (j, reason) in reasons.iter().enumerate() {
            let n = numbers[(i + j) % numbers.len()];
            events.push(StatusEvent {
                task_id: format!("tâche-{i}-{j}"),
                tenant: "acme".into(),
                function: if j % 2 == 0 {
                    "f".into()
                } else {
                    String::new()
                },
                status: *status,
                attempt: i32::try_from(n % 1_000_000).unwrap_or(0),
                at: n,
                submitted_at: numbers[j % numbers.len()],
                reason: *reason,
                error: (j % 3 == 1).then(|| "x".repeat(200 * j)),
                source: Source {
                    topic: "tw.q.acme".into(),
                    partition: i32::try_from(j).unwrap_or(0) * 1000,
                    offset: n,
                },
                scheduler_id: "s-1".into(),
            });
        }
    }
    let kinds = [
        OutcomeStatus::Succeeded,
        OutcomeStatus::Failed,
        OutcomeStatus::Stopped,
        OutcomeStatus::Expired,
    ];
    let mut outcomes = Vec::new();
    for (i, status) in kinds.iter().enumerate() {
        for (j, reason) in reasons.iter().enumerate() {
            let mut o = outcome();
            o.status = *status;
            o.reason = *reason;
            o.error = (j % 2 == 0).then(|| format!("error {j} ✗"));
            o.result = (i % 2 == 0).then(|| vec![0xff; 300 * j]);
            o.payload = vec![u8::try_from(j).unwrap_or(0); 70 * i];
            o.task_headers = (0..j).map(|k| (format!("h{k}"), "ü".repeat(k))).collect();
            o.attempts = (0..j % 4)
                .map(|k| Attempt {
                    attempt: i32::try_from(k).unwrap_or(0) + 1,
                    started_at: numbers[k],
                    finished_at: numbers[(k + j) % numbers.len()],
                    error: (k % 2 == 1).then(|| "boom".to_string()),
                })
                .collect();
            o.submitted_at = numbers[j % numbers.len()];
            o.finished_at = numbers[(i + 3) % numbers.len()];
            o.traceparent = (j % 3 != 0).then(|| o.traceparent.clone().unwrap_or_default());
            outcomes.push(o);
        }
    }
    (events, outcomes)
}

#[test]
fn direct_writers_write_what_the_generic_avro_writer_writes() {
    let s = super::schema::schemas().unwrap();
    let (events, outcomes) = shapes();
    for e in &events {
        let generic = super::schema::encode("status event", &s.status, e).unwrap();
        let direct = encode_status(e).unwrap();
        assert_eq!(direct, generic, "{e:?}");
        assert_eq!(&decode_status(&direct).unwrap(), e);
    }
    for o in &outcomes {
        let generic = super::schema::encode("outcome", &s.outcome, o).unwrap();
        let direct = encode_outcome(o).unwrap();
        assert_eq!(direct, generic, "{o:?}");
        assert_eq!(&decode_outcome(&direct).unwrap(), o);
    }
}

/// Tasks of every shape the schema allows: with and without the optional fields, empty
/// and multi-byte strings, large payloads and many headers.
fn task_shapes() -> Vec<Task> {
    let mut shapes = vec![
        task(),
        Task {
            id: String::new(),
            tenant: None,
            function: "f".into(),
            payload: Vec::new(),
            headers: BTreeMap::new(),
            submitted_at: None,
            not_before: None,
        },
        Task {
            id: "ünïcødé-✓".into(),
            tenant: Some(String::new()),
            function: "naïve".into(),
            payload: vec![0xff; 70_000],
            headers: (0..300).map(|i| (format!("k{i}"), "v".repeat(i))).collect(),
            submitted_at: Some(i64::MIN),
            not_before: Some(i64::MAX),
        },
    ];
    shapes.push(Task {
        submitted_at: Some(-1),
        not_before: Some(0),
        ..task()
    });
    shapes
}

/// What `apache-avro`'s serde path makes of `bytes` as a task.
fn reference(bytes: &[u8]) -> Result<Task, CodecError> {
    let s = schema::schemas()?;
    schema::decode("task", &s.task, bytes)
}

#[test]
fn the_direct_task_reader_reads_what_the_generic_avro_reader_reads() {
    for t in task_shapes() {
        let bytes = encode_task(&t).unwrap();
        assert_eq!(reference(&bytes).unwrap(), t);
        assert_eq!(decode_task(&bytes, None).unwrap(), t);
        assert_eq!(decode_task(&bytes, Some("application/avro")).unwrap(), t);
        // A bare datum, without the single-object header.
        let bare = &bytes[10..];
        assert_eq!(decode_task(bare, Some("avro/binary")).unwrap(), t);
    }
}

#[test]
fn a_map_in_blocks_with_byte_sizes_reads_as_one_map() {
    // id "a", tenant null, function "f", payload empty, headers in two blocks (the
    // second with a negative count and its size in bytes), no times.
    let mut datum = vec![2, b'a', 0, 2, b'f', 0];
    datum.extend([2, 2, b'x', 2, b'1']); // 1 entry: x = 1
    datum.extend([3, 8, 2, b'y', 2, b'2']); // -2 entries, 8 bytes: y = 2, z = 3
    datum.extend([2, b'z', 2, b'3']);
    datum.extend([0, 0, 0]);
    let got = decode_task(&datum, Some("application/avro")).unwrap();
    assert_eq!(reference(&datum).unwrap(), got);
    let headers: Vec<_> = got
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(headers, [("x", "1"), ("y", "2"), ("z", "3")]);
}

/// Both readers agree on `bytes`: the same task, or both refuse it.
fn agree(bytes: &[u8]) {
    let direct = decode_task(bytes, Some("application/avro"));
    let generic = reference(bytes).and_then(|t| {
        if t.function.is_empty() {
            Err(CodecError::MissingField("function"))
        } else {
            Ok(t)
        }
    });
    match (&direct, &generic) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "input {bytes:?}"),
        (Err(_), Err(_)) => {}
        _ => panic!("readers disagree on {bytes:?}: direct {direct:?}, generic {generic:?}"),
    }
}

#[test]
fn on_truncated_mutated_and_random_bytes_both_readers_agree() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for t in task_shapes().into_iter().take(2).chain([task()]) {
        let bytes = encode_task(&t).unwrap();
        for cut in 0..bytes.len().min(200) {
            agree(&bytes[..cut]);
        }
        for _ in 0..3_000 {
            let mut m = bytes.clone();
            for _ in 0..1 + next() % 3 {
                let i = (next() as usize) % m.len();
                m[i] = next() as u8;
            }
            agree(&m);
            agree(&m[10..]);
        }
    }
    for _ in 0..20_000 {
        let len = (next() % 40) as usize;
        let random: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        agree(&random);
    }
    // Lengths and counts far beyond the input.
    agree(&[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    agree(&[2, b'a', 0, 2, b'f', 0, 0xfe, 0xff, 0xff, 0xff, 0x0f]);
    agree(&[
        2, b'a', 0, 2, b'f', 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
    ]);
}
