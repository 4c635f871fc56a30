//! OpenTelemetry traces from a real run: an OTLP/HTTP receiver in this process decodes
//! the spans (`opentelemetry-proto` types) that the real binary exports while it runs
//! tasks against a real broker and a real HTTP function, and while `serve` takes a task
//! and `events` reads an outcome. The trace of one task must hold together: submitter →
//! scheduler `process` span → attempt spans → HTTP client span → the function's
//! `traceparent`, and the outcome event's `traceparent` continues it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::serve::{Serve, block};
use common::{TestEnv, task};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use tidewater::codec::Encoding;
use tidewater::names::headers as h;

/// One received span, flattened.
#[derive(Debug, Clone)]
struct SpanSeen {
    service: String,
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    kind: SpanKind,
    attrs: BTreeMap<String, String>,
    error: bool,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

fn decode(body: &[u8]) -> Vec<SpanSeen> {
    let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                let attrs = s
                    .attributes
                    .iter()
                    .map(|kv| {
                        (
                            kv.key.clone(),
                            text(kv.value.as_ref().and_then(|v| v.value.as_ref())),
                        )
                    })
                    .collect();
                out.push(SpanSeen {
                    service: service.clone(),
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent: hex(&s.parent_span_id),
                    name: s.name.clone(),
                    kind: SpanKind::try_from(s.kind).unwrap_or(SpanKind::Unspecified),
                    attrs,
                    error: s.status.as_ref().is_some_and(|st| st.code == 2),
                });
            }
        }
    }
    out
}

#[derive(Default)]
struct World {
    spans: Mutex<Vec<SpanSeen>>,
    /// (task id, traceparent) of every call the function received.
    calls: Mutex<Vec<(String, String)>>,
    flaky_calls: AtomicUsize,
}

impl World {
    /// Waits until `pred` holds over the spans received so far.
    fn spans_until(&self, what: &str, pred: impl Fn(&[SpanSeen]) -> bool) -> Vec<SpanSeen> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let spans = self.spans.lock().unwrap().clone();
            if pred(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within 60 s; spans received:\n{spans:#?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn header(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The OTLP receiver (`POST /v1/traces`) and the HTTP function (`/f`: the first call of a
/// task whose id starts with `flaky` answers 503), on one server of their own.
fn start_servers(world: Arc<World>) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let w1 = world.clone();
            let w2 = world.clone();
            let app = axum::Router::new()
                .route(
                    "/v1/traces",
                    post(move |h: HeaderMap, body: Bytes| {
                        let world = w1.clone();
                        async move {
                            assert_eq!(header(&h, "content-type"), "application/x-protobuf");
                            world.spans.lock().unwrap().extend(decode(&body));
                            StatusCode::OK
                        }
                    }),
                )
                .route(
                    "/f",
                    post(move |h: HeaderMap| {
                        let world = w2.clone();
                        async move {
                            let id = header(&h, h::TASK_ID);
                            world
                                .calls
                                .lock()
                                .unwrap()
                                .push((id.clone(), header(&h, h::TRACEPARENT)));
                            if id.starts_with("flaky")
                                && world.flaky_calls.fetch_add(1, Ordering::SeqCst) == 0
                            {
                                return (StatusCode::SERVICE_UNAVAILABLE, "not yet");
                            }
                            (StatusCode::OK, "done")
                        }
                    }),
                );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

/// The spans of one trace as an indented tree (printed by the test; the README shows one).
fn tree(spans: &[SpanSeen], trace: &str) -> String {
    fn walk(spans: &[&SpanSeen], parent: &str, depth: usize, out: &mut String) {
        for s in spans.iter().filter(|s| s.parent == parent) {
            let detail: Vec<String> = [
                "tidewater.attempt",
                "tidewater.attempt.result",
                "tidewater.outcome",
                "http.response.status_code",
            ]
            .iter()
            .filter_map(|k| s.attrs.get(*k).map(|v| format!("{k}={v}")))
            .collect();
            out.push_str(&format!(
                "{}{} [{}] {:?} {}\n",
                "  ".repeat(depth),
                s.name,
                s.service,
                s.kind,
                detail.join(" ")
            ));
            walk(spans, &s.span_id, depth + 1, out);
        }
    }
    let of_trace: Vec<&SpanSeen> = spans.iter().filter(|s| s.trace_id == trace).collect();
    let mut out = String::new();
    let roots: Vec<&str> = of_trace
        .iter()
        .map(|s| s.parent.as_str())
        .filter(|p| !of_trace.iter().any(|s| s.span_id == *p))
        .collect();
    for root in roots.iter().collect::<std::collections::BTreeSet<_>>() {
        out.push_str(&format!("(remote parent {root})\n"));
        walk(&of_trace, root, 1, &mut out);
    }
    out
}

/// `00-<trace>-<span>-<flags>` → (trace, span).
fn parts(traceparent: &str) -> (String, String) {
    let p: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(p.len(), 4, "not a traceparent: {traceparent:?}");
    (p[1].to_string(), p[2].to_string())
}

fn one<'a>(spans: &'a [SpanSeen], what: &str, pred: impl Fn(&SpanSeen) -> bool) -> &'a SpanSeen {
    let found: Vec<&SpanSeen> = spans.iter().filter(|s| pred(s)).collect();
    assert_eq!(found.len(), 1, "{what}: {found:#?}");
    found[0]
}

const SUBMITTER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SUBMITTER_SPAN: &str = "00f067aa0ba902b7";

#[test]
fn a_task_is_one_trace_from_submitter_to_outcome_consumer() {
    let world = Arc::new(World::default());
    let addr = start_servers(world.clone());
    let env = TestEnv::new(
        "traces",
        &format!(
            // The first lines belong to the env's own `[telemetry]` table.
            r#"
            otlp_endpoint = "http://{addr}"
            [api]
            tokens = [{{ token = "tok-shop", tenant = "shop" }}]
            [tenants.shop.functions.f]
            executor = {{ type = "http", url = "http://{addr}/f" }}
            on_success = "{{prefix}}.done"
            max_attempts = 3
            backoff = "50ms"
            "#
        ),
    );
    env.init_topics();
    let queue = env.config.queue_topic("shop", "f");
    // A submitter that traces: its record carries its span's context.
    let traceparent = format!("00-{SUBMITTER_TRACE}-{SUBMITTER_SPAN}-01");
    let flaky =
        tidewater::codec::encode_task_as(&task("flaky-1", "f", "x"), Encoding::Json).unwrap();
    env.produce_raw(
        &queue,
        &[(
            Some("flaky-1"),
            flaky,
            vec![
                (h::CONTENT_TYPE, h::CONTENT_TYPE_JSON),
                (h::TRACEPARENT, traceparent.as_str()),
                (h::TRACESTATE, "vendor=abc"),
            ],
        )],
    );
    // One without trace context starts a trace of its own.
    env.submit("shop", vec![task("plain-1", "f", "y")]);
    let mut scheduler = env.start_scheduler(0);

    // The outcome event continues the task's trace.
    let done = env.read(&env.topic("done"), 2, Duration::from_secs(90));
    let outcome_tp: BTreeMap<String, String> = done
        .iter()
        .map(|(headers, _)| {
            let get = |k: &str| {
                headers
                    .iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            (get(h::TASK_ID), get(h::TRACEPARENT))
        })
        .collect();
    let (flaky_trace, flaky_parent) = parts(&outcome_tp["flaky-1"]);
    assert_eq!(
        flaky_trace, SUBMITTER_TRACE,
        "outcome event in the submitter's trace"
    );

    let spans = world.spans_until("the process and attempt spans of both tasks", |s| {
        s.iter().filter(|s| s.name.starts_with("attempt ")).count() >= 3
            && s.iter().filter(|s| s.kind == SpanKind::Consumer).count() >= 3
            && s.iter().filter(|s| s.kind == SpanKind::Client).count() >= 3
    });
    // flaky-1 is read twice: from its queue, and (after its first attempt failed) from
    // the delay topic it waited in. Each read is a `process` span; the second continues
    // the first through the delayed record's context.
    let first = one(&spans, "process span of flaky-1 from its queue", |s| {
        s.name == format!("process {queue}") && s.attrs["tidewater.task.id"] == "flaky-1"
    });
    assert_eq!(first.service, "tidewater-scheduler");
    assert_eq!(first.kind, SpanKind::Consumer);
    assert_eq!(first.trace_id, SUBMITTER_TRACE);
    assert_eq!(
        first.parent, SUBMITTER_SPAN,
        "child of the submitter's span"
    );
    for (k, v) in [
        ("messaging.system", "kafka"),
        ("messaging.operation.type", "process"),
        ("messaging.destination.name", queue.as_str()),
        (
            "messaging.consumer.group.name",
            env.config.group_id().as_str(),
        ),
        ("tidewater.outcome", "delayed"),
    ] {
        assert_eq!(first.attrs.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert!(
        first
            .attrs
            .contains_key("messaging.destination.partition.id")
    );
    assert!(first.attrs.contains_key("messaging.kafka.offset"));
    let second = one(
        &spans,
        "process span of flaky-1 from the delay topic",
        |s| s.kind == SpanKind::Consumer && s.parent == first.span_id,
    );
    assert_eq!(second.trace_id, SUBMITTER_TRACE);
    assert!(second.attrs["messaging.destination.name"].contains(".delay."));
    assert_eq!(second.attrs["tidewater.outcome"], "succeeded");
    assert_eq!(
        flaky_parent, second.span_id,
        "the outcome names the last process span"
    );

    // One attempt under each process span; the first failed.
    let attempt_under = |process: &SpanSeen| {
        one(&spans, "the attempt of a process span", |s| {
            s.name == "attempt f" && s.parent == process.span_id
        })
        .clone()
    };
    let attempts = [attempt_under(first), attempt_under(second)];
    assert_eq!(attempts[0].attrs["tidewater.attempt"], "1");
    assert_eq!(attempts[0].attrs["tidewater.attempt.result"], "failure");
    assert!(attempts[0].error);
    assert_eq!(attempts[1].attrs["tidewater.attempt"], "2");
    assert_eq!(attempts[1].attrs["tidewater.attempt.result"], "success");
    assert!(!attempts[1].error);

    // Each HTTP call is a client span under its attempt, and the function received that
    // client span's context.
    let calls = world.calls.lock().unwrap().clone();
    let flaky_calls: Vec<&(String, String)> =
        calls.iter().filter(|(id, _)| id == "flaky-1").collect();
    assert_eq!(flaky_calls.len(), 2);
    for (attempt, (_, tp)) in attempts.iter().zip(flaky_calls) {
        let client = one(&spans, "client span of an attempt", |s| {
            s.kind == SpanKind::Client && s.parent == attempt.span_id
        });
        assert_eq!(client.attrs["http.request.method"], "POST");
        assert!(client.attrs["url.full"].ends_with("/f"));
        let (trace, span) = parts(tp);
        assert_eq!(trace, SUBMITTER_TRACE);
        assert_eq!(
            span, client.span_id,
            "the function continues the client span"
        );
    }

    // The task without context: a new trace, the same shape.
    let plain = one(&spans, "process span of plain-1", |s| {
        s.attrs.get("tidewater.task.id").map(String::as_str) == Some("plain-1")
            && s.kind == SpanKind::Consumer
    });
    assert!(plain.parent.is_empty(), "a root span: {plain:#?}");
    assert_ne!(plain.trace_id, SUBMITTER_TRACE);
    assert_eq!(parts(&outcome_tp["plain-1"]).0, plain.trace_id);

    // The outcome consumer (`tidewater events`) continues the trace from the event.
    let out = env.cli(&["events", &env.topic("done"), "--max", "2", "--idle", "10s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spans = world.spans_until("the events command's spans", |s| {
        s.iter().any(|s| s.service == "tidewater-events")
    });
    let consumed = one(&spans, "the consumer span of flaky-1's outcome", |s| {
        s.service == "tidewater-events" && s.parent == second.span_id
    });
    assert_eq!(consumed.trace_id, SUBMITTER_TRACE);
    assert_eq!(consumed.kind, SpanKind::Consumer);
    println!("{}", tree(&spans, SUBMITTER_TRACE));

    // `serve` traces its requests: a task submitted through the API continues the
    // caller's trace, through a server span and a producer span, into the scheduler.
    let store = env.dir.path().join("store.db");
    let serve = Serve::start(&env, &store, 0);
    let api_trace = "0af7651916cd43dd8448eb211c80319c";
    let api_parent = "b7ad6b7169203331";
    let status = block(async {
        reqwest::Client::new()
            .post(format!("{}/v1/tasks", serve.url))
            .bearer_auth("tok-shop")
            .header(h::TRACEPARENT, format!("00-{api_trace}-{api_parent}-01"))
            .header("content-type", "application/json")
            .body(r#"{"id": "api-1", "function": "f", "payload": "z"}"#)
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status.as_u16(), 202);
    let spans = world.spans_until("the API's and the scheduler's spans of api-1", |s| {
        let of = |kind: SpanKind| s.iter().any(|s| s.kind == kind && s.trace_id == api_trace);
        of(SpanKind::Server) && of(SpanKind::Producer) && of(SpanKind::Consumer)
    });
    let server = one(&spans, "the API's server span", |s| {
        s.kind == SpanKind::Server && s.trace_id == api_trace
    });
    assert_eq!(server.service, "tidewater-api");
    assert_eq!(server.parent, api_parent);
    assert_eq!(server.name, "POST /v1/tasks");
    assert_eq!(server.attrs["http.response.status_code"], "202");
    let send = one(&spans, "the API's producer span", |s| {
        s.kind == SpanKind::Producer && s.trace_id == api_trace
    });
    assert_eq!(send.parent, server.span_id);
    let processed = one(&spans, "the scheduler's span of api-1", |s| {
        s.kind == SpanKind::Consumer
            && s.trace_id == api_trace
            && s.service == "tidewater-scheduler"
    });
    assert_eq!(processed.parent, send.span_id);
    println!("{}", tree(&spans, api_trace));
    serve.stop();
    scheduler.terminate(Duration::from_secs(30));
}

#[test]
fn bad_trace_settings_are_refused_by_config_check() {
    let dir = tempfile::tempdir().unwrap();
    for (setting, field) in [
        (
            "otlp_endpoint = \"localhost:4318\"",
            "telemetry.otlp_endpoint",
        ),
        (
            "otlp_endpoint = \"http://user:secret@collector:4318\"",
            "telemetry.otlp_endpoint",
        ),
        ("otlp_protocol = \"grpc\"", "telemetry.otlp_protocol"),
        ("trace_sample_ratio = 1.5", "telemetry.trace_sample_ratio"),
    ] {
        let path = dir.path().join("t.toml");
        std::fs::write(&path, format!("[telemetry]\n{setting}\n")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidewater"))
            .env_remove("TW_BOOTSTRAP_SERVERS")
            .args(["config", "check"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{setting} accepted");
        assert!(err.contains(field), "{setting}: {err}");
        assert!(
            !err.contains("secret"),
            "a credential is never echoed: {err}"
        );
    }
}
