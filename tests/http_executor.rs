//! The `http` executor against a real HTTP server on 127.0.0.1, through the real binary
//! and a real Kafka broker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::{TestEnv, task};
use tidewater::codec::{FailureReason, OutcomeStatus};

#[derive(Default)]
struct Seen {
    /// (task id header, idempotency key header, attempt header) per request.
    requests: Mutex<Vec<(String, String, String)>>,
    fail_calls: AtomicUsize,
}

fn header(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Starts the function server on its own runtime thread; returns its address.
fn start_server(seen: Arc<Seen>) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let s1 = seen.clone();
            let s2 = seen.clone();
            let app = axum::Router::new()
                .route(
                    "/ok",
                    post(move |h: HeaderMap, body: Bytes| {
                        let seen = s1.clone();
                        async move {
                            seen.requests.lock().unwrap().push((
                                header(&h, "tw-task-id"),
                                header(&h, "idempotency-key"),
                                header(&h, "tw-attempt"),
                            ));
                            format!("ok:{}", String::from_utf8_lossy(&body))
                        }
                    }),
                )
                .route(
                    "/fail",
                    post(move || {
                        let seen = s2.clone();
                        async move {
                            seen.fail_calls.fetch_add(1, Ordering::SeqCst);
                            (StatusCode::SERVICE_UNAVAILABLE, "try later")
                        }
                    }),
                )
                .route(
                    "/bad",
                    post(|| async { (StatusCode::UNPROCESSABLE_ENTITY, "bad order") }),
                )
                .route(
                    "/hang",
                    post(|| async {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        "too late"
                    }),
                );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

#[test]
fn http_functions_succeed_fail_and_time_out() {
    let seen = Arc::new(Seen::default());
    let addr = start_server(seen.clone());
    let env = TestEnv::new(
        "http",
        &format!(
            r#"
            [tenants.shop.functions.ok]
            executor = {{ type = "http", url = "http://{addr}/ok" }}
            on_success = "{{prefix}}.done"

            [tenants.shop.functions.unavailable]
            executor = {{ type = "http", url = "http://{addr}/fail" }}
            max_attempts = 2
            backoff = "50ms"

            [tenants.shop.functions.rejects]
            executor = {{ type = "http", url = "http://{addr}/bad" }}
            max_attempts = 4

            [tenants.shop.functions.hangs]
            executor = {{ type = "http", url = "http://{addr}/hang" }}
            timeout = "300ms"
            max_attempts = 1
            "#
        ),
    );
    env.init_topics();
    let mut tasks: Vec<_> = (0..10)
        .map(|i| task(&format!("ok-{i}"), "ok", &format!("body {i}")))
        .collect();
    tasks.push(task("u-1", "unavailable", "x"));
    tasks.push(task("r-1", "rejects", "x"));
    tasks.push(task("h-1", "hangs", "x"));
    env.submit("shop", tasks);
    let _s = env.start_scheduler(0);

    let done = env.outcomes(&env.topic("done"), 10, Duration::from_secs(90));
    assert_eq!(done.len(), 10);
    for o in &done {
        assert_eq!(o.status, OutcomeStatus::Succeeded);
        let i = o.task_id.strip_prefix("ok-").unwrap();
        assert_eq!(
            o.result.as_deref().unwrap(),
            format!("ok:body {i}").as_bytes()
        );
    }
    let requests = seen.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 10);
    for (id, key, attempt) in requests {
        assert!(id.starts_with("ok-"));
        assert_eq!(id, key, "the task id is the idempotency key");
        assert_eq!(attempt, "1");
    }

    let failed = env.outcomes(&env.dlq("shop"), 3, Duration::from_secs(90));
    let by_id: BTreeMap<_, _> = failed.iter().map(|o| (o.task_id.as_str(), o)).collect();
    let u = by_id["u-1"];
    assert_eq!(u.reason, Some(FailureReason::Executor));
    assert_eq!(u.attempts.len(), 2);
    assert!(u.error.as_deref().unwrap().contains("HTTP 503: try later"));
    assert_eq!(seen.fail_calls.load(Ordering::SeqCst), 2);
    let r = by_id["r-1"];
    assert_eq!(r.reason, Some(FailureReason::NonRetryable), "4xx is final");
    assert_eq!(r.attempts.len(), 1);
    assert!(r.error.as_deref().unwrap().contains("HTTP 422"));
    let h = by_id["h-1"];
    assert_eq!(h.reason, Some(FailureReason::Timeout));
    let a = &h.attempts[0];
    assert!(
        a.finished_at - a.started_at < 5_000,
        "the call was aborted at the timeout"
    );
}
