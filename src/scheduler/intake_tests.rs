//! What intake makes of records, without a broker.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::codec::{DelayedTask, Source, Task};
use crate::config::Config;
use crate::executor::Handlers;
use crate::names::headers as h;
use crate::scheduler::dispatch::Dispatcher;
use crate::scheduler::setup::build_functions;
use crate::scheduler::{Ctx, Job};
use crate::types::TopicPartition;

const CONFIG: &str = r#"
    [kafka]
    bootstrap_servers = "127.0.0.1:1"

    [tenants.acme]
    dead_letter = "acme.dead"

    [tenants.acme.functions.echo]
    executor = { type = "command", program = "/bin/cat" }
    max_payload_bytes = 8
    on_failure = "function:undo"

    [tenants.acme.functions.undo]
    executor = { type = "command", program = "/bin/cat" }

    [tenants.acme.functions.solo]
    executor = { type = "command", program = "/bin/cat" }
    queue = "exclusive"
"#;

fn ctx() -> Ctx {
    let config = Config::from_toml(CONFIG).unwrap();
    let mut dispatcher: Dispatcher<Box<Job>> = Dispatcher::new(10);
    let functions = build_functions(&config, &Handlers::default(), &mut dispatcher).unwrap();
    let (outbox, _) = std::sync::mpsc::channel();
    Ctx {
        status_topic: "tw.status".into(),
        group_id: "tw.schedulers".into(),
        delay_tiers: config.delay_tiers(),
        config: Arc::new(config),
        scheduler_id: "s1".into(),
        outbox,
        functions,
        hard_stop: CancellationToken::new(),
    }
}

fn record(topic: &str, value: Vec<u8>, content_type: Option<&str>) -> Record {
    Record {
        tp: TopicPartition::new(topic, 2),
        offset: 40,
        key: Some(Box::from(&b"k1"[..])),
        value: value.into(),
        content_type: content_type.map(Box::from),
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        tracestate: None,
        ordered: false,
        timestamp_ms: 1_000,
    }
}

fn task(function: &str, payload: &[u8]) -> Task {
    Task {
        id: "t1".into(),
        tenant: None,
        function: function.into(),
        payload: payload.to_vec(),
        headers: BTreeMap::from([("a".to_string(), "b".to_string())]),
        submitted_at: Some(900),
        not_before: None,
    }
}

fn task_record(topic: &str, t: &Task) -> Record {
    record(
        topic,
        codec::encode_task(t).unwrap(),
        Some(h::CONTENT_TYPE_AVRO),
    )
}

/// The rejection's reason, error and destination, or a panic naming what came instead.
fn rejected(p: Prepared) -> (Outcome, Target) {
    match p {
        Prepared::Reject {
            outcome,
            destination,
            ..
        } => (*outcome, destination),
        Prepared::Run(job, _) => panic!("ran {}", job.task_id),
        Prepared::Skip(r, _) => panic!("skipped offset {}", r.offset),
    }
}

#[test]
fn a_task_for_a_known_function_runs_with_its_fields() {
    let ctx = ctx();
    let mut t = task("echo", b"hi");
    t.not_before = Some(5_000);
    match prepare(&ctx, task_record("tw.q.acme", &t), 7) {
        Prepared::Run(job, due) => {
            assert_eq!(due, Some(5_000));
            assert_eq!(job.epoch, 7);
            assert_eq!(job.f.name, "echo");
            assert_eq!(&*job.task_id, "t1");
            assert_eq!(job.submitted_at, 900);
            assert_eq!(job.source().offset, 40);
            assert!(job.traceparent().is_some());
            assert_eq!(job.payload.as_slice(), b"hi");
            assert_eq!(job.headers.get("a").map(String::as_str), Some("b"));
        }
        _ => panic!("not run"),
    }
}

#[test]
fn a_task_without_id_or_time_takes_them_from_its_record() {
    let ctx = ctx();
    let mut t = task("echo", b"hi");
    t.id = String::new();
    t.submitted_at = None;
    let Prepared::Run(job, _) = prepare(&ctx, task_record("tw.q.acme", &t), 0) else {
        panic!("not run");
    };
    assert_eq!(&*job.task_id, "k1", "the record key");
    assert_eq!(job.submitted_at, 1_000, "the record time");
}

#[test]
fn undecodable_input_fails_to_the_dead_letter_topic_with_its_bytes() {
    let ctx = ctx();
    let (o, dest) = rejected(prepare(
        &ctx,
        record("tw.q.acme", b"\xff\x00garbage".to_vec(), None),
        0,
    ));
    assert_eq!(o.reason, Some(FailureReason::Malformed));
    assert!(o.error.as_deref().unwrap_or("").contains("tw.q.acme[2]@40"));
    assert_eq!(o.payload, b"\xff\x00garbage");
    assert_eq!(o.task_id, "k1");
    assert_eq!(dest, Target::Topic("acme.dead".into()));
    assert!(o.finished_at > 0);
}

#[test]
fn unknown_function_tenant_mismatch_and_wrong_exclusive_queue_are_refused() {
    let ctx = ctx();
    let (o, dest) = rejected(prepare(
        &ctx,
        task_record("tw.q.acme", &task("nope", b"")),
        0,
    ));
    assert_eq!(o.reason, Some(FailureReason::UnknownFunction));
    assert_eq!(dest, Target::Topic("acme.dead".into()));

    let mut other = task("echo", b"");
    other.tenant = Some("globex".into());
    let (o, _) = rejected(prepare(&ctx, task_record("tw.q.acme", &other), 0));
    assert_eq!(o.reason, Some(FailureReason::TenantMismatch));

    let (o, _) = rejected(prepare(
        &ctx,
        task_record("tw.q.acme.solo", &task("echo", b"")),
        0,
    ));
    assert_eq!(o.reason, Some(FailureReason::UnknownFunction));
    assert!(
        o.error
            .as_deref()
            .unwrap_or("")
            .contains("serves only function `solo`")
    );
}

#[test]
fn an_oversized_payload_fails_to_the_functions_own_destination() {
    let ctx = ctx();
    let (o, dest) = rejected(prepare(
        &ctx,
        task_record("tw.q.acme", &task("echo", b"123456789")),
        0,
    ));
    assert_eq!(o.reason, Some(FailureReason::PayloadTooLarge));
    assert_eq!(dest, Target::Function("undo".into()));
    assert_eq!(o.payload, b"123456789", "the payload goes with the failure");
}

#[test]
fn a_delayed_task_comes_back_with_its_attempts_and_due_time() {
    let ctx = ctx();
    let delay_topic = ctx.delay_tiers[0].1.clone();
    let d = DelayedTask {
        task_id: "t9".into(),
        tenant: "acme".into(),
        function: "echo".into(),
        payload: b"p".to_vec(),
        headers: BTreeMap::new(),
        submitted_at: 10,
        due_at: 99_000,
        attempts: vec![codec::Attempt {
            attempt: 1,
            started_at: 11,
            finished_at: 12,
            error: Some("boom".into()),
        }],
        origin: Source {
            topic: "tw.q.acme".into(),
            partition: 0,
            offset: 3,
        },
        traceparent: None,
    };
    let r = record(&delay_topic, codec::encode_delayed(&d).unwrap(), None);
    let Prepared::Run(job, due) = prepare(&ctx, r, 0) else {
        panic!("not run");
    };
    assert_eq!(due, Some(99_000));
    assert_eq!(job.attempts.len(), 1);
    assert_eq!(
        job.source().topic,
        "tw.q.acme",
        "where the task came from first"
    );
    assert_eq!(
        job.record.traceparent, None,
        "the delayed copy's trace context"
    );

    let gone = DelayedTask {
        function: "removed".into(),
        ..d
    };
    let r = record(&delay_topic, codec::encode_delayed(&gone).unwrap(), None);
    let (o, _) = rejected(prepare(&ctx, r, 0));
    assert_eq!(o.reason, Some(FailureReason::UnknownFunction));
}

#[test]
fn an_undecodable_delay_record_is_skipped_not_dead_lettered() {
    let ctx = ctx();
    let delay_topic = ctx.delay_tiers[0].1.clone();
    assert!(matches!(
        prepare(&ctx, record(&delay_topic, b"junk".to_vec(), None), 3),
        Prepared::Skip(_, 3)
    ));
}

#[test]
fn labels_are_bounded_to_configured_names() {
    let ctx = ctx();
    assert_eq!(labels(&ctx, "acme", "echo"), ("acme".into(), "echo".into()));
    assert_eq!(
        labels(&ctx, "evil", "x"),
        (m::UNKNOWN.to_string(), m::UNKNOWN.to_string())
    );
}

#[test]
fn delay_tiers_cover_short_and_long_waits() {
    let ctx = ctx();
    assert!(ctx.is_delay_topic(&ctx.delay_tiers[0].1));
    assert!(!ctx.is_delay_topic("tw.q.acme"));
    assert!(ctx.delay_tiers[0].0 <= Duration::from_secs(1));
}

#[test]
fn a_held_task_fits_the_allocators_224_byte_class() {
    // Every task held in the buffers is one boxed `Job` (the dispatcher's queues hold the
    // box alone): mimalloc serves 224 bytes from its 224-byte class and anything just
    // above it from the 256-byte one. Its outcome is built only when it ends.
    let size = std::mem::size_of::<Job>();
    assert!(size <= 224, "a Job is {size} bytes");
}

#[test]
fn tasks_without_headers_share_one_empty_map() {
    let a = shared_headers(BTreeMap::new());
    let b = shared_headers(BTreeMap::new());
    assert!(Arc::ptr_eq(&a, &b));
    let with = shared_headers(BTreeMap::from([("k".to_string(), "v".to_string())]));
    assert_eq!(with.get("k").map(String::as_str), Some("v"));
}
