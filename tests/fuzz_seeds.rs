//! Writes the seed corpora of the fuzz targets (`fuzz/seeds/<target>/`) from the same
//! records, files and requests the tests use. Run after a schema or format change:
//!
//!     cargo test --test fuzz_seeds -- --ignored
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use tidewater::codec::{self, Attempt, DelayedTask, Encoding, Source, StopRequest, Task};

fn dir(target: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    std::fs::write(dir(target).join(name), bytes).unwrap();
}

/// The tests' task, with every optional field set and a binary payload.
fn task() -> Task {
    let mut t = common::task("order-1", "resize", "");
    t.tenant = Some("acme".into());
    t.payload = vec![0, 1, 2, 255];
    t.headers = [("k".to_string(), "v".to_string())].into();
    t.submitted_at = Some(1_700_000_000_000);
    t.not_before = Some(1_700_000_005_000);
    t
}

#[test]
#[ignore = "writes fuzz/seeds; run by hand"]
fn write_fuzz_seeds() {
    // task_record: a header selector byte, then the value.
    let avro = codec::encode_task_as(&task(), Encoding::Avro).unwrap();
    let mut text = task();
    text.payload = b"{\"w\":100}".to_vec();
    let json = codec::encode_task_as(&text, Encoding::Json).unwrap();
    let bare = avro.get(10..).unwrap().to_vec();
    for (name, header, value) in [
        ("avro-single-object", 2u8, avro.clone()),
        ("avro-sniffed", 0, avro.clone()),
        ("avro-bare", 3, bare),
        ("json", 1, json.clone()),
        ("json-sniffed", 0, json),
        (
            "json-minimal",
            0,
            br#" {"function":"f","payload":"x","headers":{"h":"v"}}"#.to_vec(),
        ),
        ("junk", 0, b"\x01\x02 not a task".to_vec()),
        ("odd-content-type", 4, b"text/plain\0{}".to_vec()),
    ] {
        let mut seed = vec![header];
        seed.extend_from_slice(&value);
        write("task_record", name, &seed);
    }
    // delayed_control: selector byte, then the record.
    let delayed = DelayedTask {
        task_id: "order-1".into(),
        tenant: "acme".into(),
        function: "resize".into(),
        payload: b"x".to_vec(),
        headers: BTreeMap::new(),
        submitted_at: 1,
        due_at: 2,
        attempts: vec![Attempt {
            attempt: 1,
            started_at: 1,
            finished_at: 2,
            error: Some("boom".into()),
        }],
        origin: Source {
            topic: "tw.q.acme".into(),
            partition: 0,
            offset: 7,
        },
        traceparent: None,
    };
    let stop = StopRequest {
        task_id: "order-1".into(),
        tenant: "acme".into(),
        requested_at: 5,
        requested_by: "acme".into(),
    };
    for (name, which, value) in [
        ("delayed", 0u8, codec::encode_delayed(&delayed).unwrap()),
        ("stop", 1, codec::encode_stop_request(&stop).unwrap()),
    ] {
        let mut seed = vec![which];
        seed.extend_from_slice(&value);
        write("delayed_control", name, &seed);
    }
    // config_file: the shipped configurations.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for (name, path) in [
        ("demo", "examples/demo.toml"),
        ("deploy", "deploy/tidewater.toml"),
    ] {
        write(
            "config_file",
            name,
            &std::fs::read(root.join(path)).unwrap(),
        );
    }
    // api_query: query strings of the API tests.
    for (i, q) in [
        "status=failed,%20succeeded&submitted_after=24h&id_prefix=order-&function=resize&limit=1000",
        "submitted_after=2025-11-28T15:26:40%2B01:00&submitted_before=1h%2030m",
        "finished_after=2025-11-28T14:26:40.5Z&cursor=1700000000000.61636d65.6f726465722d31",
        "submitted_after=%C3%A9%C3%A9%C3%A9%C3%A9a",
        "status=failed,,&tenant=acme",
    ]
    .iter()
    .enumerate()
    {
        write("api_query", &format!("query-{i}"), q.as_bytes());
    }
    // api_body: submission bodies.
    for (i, b) in [
        r#"{"function":"report","id":"api-1","payload":{"w":1}}"#,
        r#"{"tenant":"acme","function":"resize","payload":"x","headers":{"k":"v"}}"#,
        r#"{"fn":"resize"}"#,
    ]
    .iter()
    .enumerate()
    {
        write("api_body", &format!("body-{i}"), b.as_bytes());
    }
    // commit_metadata: what the tracker writes.
    for (i, m) in ["tw1:102-119", "tw1:5,7-9,12", "tw1:", "something else"]
        .iter()
        .enumerate()
    {
        write("commit_metadata", &format!("meta-{i}"), m.as_bytes());
    }
}
