//! The task query API of `tidewater serve` on a real broker: the indexer reads what was
//! produced to the queue, status and log topics, and every filter of the API answers
//! exactly what the test's own ground truth says.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use common::TestEnv;
use common::serve::{Serve, block};
use reqwest::{Method, StatusCode};
use tidewater::api::{ErrorBody, SubmitRequest};
use tidewater::client::{ApiClient, ClientError};
use tidewater::clock::now_ms;
use tidewater::codec::{
    self, FailureReason, LogStream, Source, StatusEvent, Task, TaskLog, TaskStatus,
};
use tidewater::names::{headers as h, topics};
use tidewater::store::model::{TaskDetail, TaskView, rfc3339};

const ADMIN: &str = "tok-admin";
const ACME: &str = "tok-acme";
const GLOBEX: &str = "tok-globex";
const WAIT: Duration = Duration::from_secs(90);

const BODY: &str = r#"
[api]
tokens = [
  { token = "tok-acme", tenant = "acme" },
  { token = "tok-globex", tenant = "globex" },
  { token = "tok-admin", admin = true },
]
[tenants.acme.functions.resize]
executor = { type = "inprocess", handler = "echo" }
[tenants.acme.functions.report]
executor = { type = "inprocess", handler = "echo" }
queue = "exclusive"
[tenants.globex.functions.notify]
executor = { type = "inprocess", handler = "echo" }
"#;

/// A task as the test knows it to be.
#[derive(Debug, Clone)]
struct Truth {
    id: String,
    tenant: String,
    function: String,
    status: TaskStatus,
    submitted_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    attempts: i32,
}

/// Deterministic pseudo-random numbers.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

const MIN: i64 = 60_000;

/// Builds the world: tasks spread over 50 hours before `t_end`, with every outcome, in
/// two tenants and three functions, with ids of three shapes. Each task sits at
/// `t0 + i·10 min + 1..5 min`, so no submission time is within a minute of a whole
/// 10-minute step from `t0` (relative filters are tested at such steps).
fn world(prefix: &str, t0: i64, n: usize) -> Vec<(Truth, Vec<StatusEvent>)> {
    let mut rng = Lcg(42);
    let mut out = Vec::new();
    for i in 0..n {
        let (tenant, function) = match rng.next(3) {
            0 => ("acme", "resize"),
            1 => ("acme", "report"),
            _ => ("globex", "notify"),
        };
        let id_prefix = ["order-", "invoice-", "ord"][rng.next(3) as usize];
        let id = format!("{id_prefix}{i:04}");
        // Every 7th task shares the previous task's submission time: ties break by id.
        let slot = if i % 7 == 6 { i - 1 } else { i } as i64;
        let submitted = t0 + slot * 10 * MIN + MIN + (slot * 7919 % 4) * MIN;
        let source = Source {
            topic: if function == "report" {
                topics::function_queue(prefix, tenant, function)
            } else {
                topics::tenant_queue(prefix, tenant)
            },
            partition: 0,
            offset: 0,
        };
        let ev = |status, attempt, at, error: Option<&str>, reason| StatusEvent {
            task_id: id.clone(),
            tenant: tenant.into(),
            function: function.into(),
            status,
            attempt,
            at,
            submitted_at: submitted,
            reason,
            error: error.map(str::to_string),
            source: source.clone(),
            scheduler_id: format!("sched-{}", attempt % 2),
        };
        let s1 = submitted + 30_000 + rng.next(60) as i64 * 1000;
        let (status, events) = match rng.next(6) {
            0 => (TaskStatus::Queued, vec![]),
            1 => (
                TaskStatus::Running,
                vec![ev(TaskStatus::Running, 1, s1, None, None)],
            ),
            2 => (
                TaskStatus::Retrying,
                vec![
                    ev(TaskStatus::Running, 1, s1, None, None),
                    ev(TaskStatus::Retrying, 1, s1 + MIN, Some("boom 1"), None),
                ],
            ),
            3 => (
                TaskStatus::Succeeded,
                vec![
                    ev(TaskStatus::Running, 1, s1, None, None),
                    ev(TaskStatus::Succeeded, 1, s1 + 2 * MIN, None, None),
                ],
            ),
            4 => (
                TaskStatus::Failed,
                vec![
                    ev(TaskStatus::Running, 1, s1, None, None),
                    ev(TaskStatus::Retrying, 1, s1 + MIN, Some("boom 1"), None),
                    ev(TaskStatus::Running, 2, s1 + 2 * MIN, None, None),
                    ev(
                        TaskStatus::Failed,
                        2,
                        s1 + 3 * MIN,
                        Some("boom 2"),
                        Some(FailureReason::Executor),
                    ),
                ],
            ),
            _ => (
                TaskStatus::Failed,
                vec![ev(
                    TaskStatus::Failed,
                    0,
                    s1,
                    Some("no such function"),
                    Some(FailureReason::UnknownFunction),
                )],
            ),
        };
        let started_at = events
            .iter()
            .filter(|e| e.status == TaskStatus::Running)
            .map(|e| e.at)
            .min();
        let finished_at = events
            .iter()
            .filter(|e| matches!(e.status, TaskStatus::Succeeded | TaskStatus::Failed))
            .map(|e| e.at)
            .max();
        let attempts = events.iter().map(|e| e.attempt).max().unwrap_or(0);
        out.push((
            Truth {
                id,
                tenant: tenant.into(),
                function: function.into(),
                status,
                submitted_at: submitted,
                started_at,
                finished_at,
                attempts,
            },
            events,
        ));
    }
    out
}

/// Produces the task records (Avro, with their `submitted_at`) and the status events.
/// Status events go first, so the indexer meets many a final status before the task
/// record that it must not overwrite.
fn produce(env: &TestEnv, world: &[(Truth, Vec<StatusEvent>)]) {
    let status_topic = env.status_topic();
    let statuses: Vec<(String, Vec<u8>)> = world
        .iter()
        .flat_map(|(_, evs)| evs.iter())
        .map(|e| (e.task_id.clone(), codec::encode_status(e).unwrap()))
        .collect();
    let recs: Vec<common::RawRecord<'_>> = statuses
        .iter()
        .map(|(k, v)| {
            (
                Some(k.as_str()),
                v.clone(),
                vec![
                    (h::CONTENT_TYPE, h::CONTENT_TYPE_AVRO),
                    (h::EVENT, h::EVENT_STATUS),
                ],
            )
        })
        .collect();
    env.produce_raw(&status_topic, &recs);
    let mut by_topic: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    for (t, _) in world {
        let task = Task {
            id: t.id.clone(),
            tenant: Some(t.tenant.clone()),
            function: t.function.clone(),
            payload: b"{}".to_vec(),
            headers: BTreeMap::new(),
            submitted_at: Some(t.submitted_at),
            not_before: None,
        };
        by_topic
            .entry(env.config.queue_topic(&t.tenant, &t.function))
            .or_default()
            .push((t.id.clone(), codec::encode_task(&task).unwrap()));
    }
    for (topic, records) in &by_topic {
        let recs: Vec<common::RawRecord<'_>> = records
            .iter()
            .map(|(k, v)| {
                (
                    Some(k.as_str()),
                    v.clone(),
                    vec![(h::CONTENT_TYPE, h::CONTENT_TYPE_AVRO)],
                )
            })
            .collect();
        env.produce_raw(topic, &recs);
    }
}

/// Every page of a query, followed by cursor; fails on a repeated task.
fn all_pages(c: &ApiClient, params: &[(&str, String)], limit: u32) -> Vec<TaskView> {
    let mut params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    params.push(("limit".into(), limit.to_string()));
    let mut out: Vec<TaskView> = Vec::new();
    loop {
        let page = block(c.list(&params)).unwrap();
        assert!(page.tasks.len() <= limit as usize);
        out.extend(page.tasks);
        match page.next_cursor {
            Some(cur) => {
                params.retain(|(k, _)| k != "cursor");
                params.push(("cursor".into(), cur));
            }
            None => break,
        }
    }
    let keys: BTreeSet<_> = out.iter().map(|t| (&t.tenant, &t.id)).collect();
    assert_eq!(keys.len(), out.len(), "a task was repeated across pages");
    out
}

/// Tenant, id in the API's order (newest submitted first, then id, then tenant,
/// descending).
fn expected(world: &[Truth], keep: impl Fn(&Truth) -> bool) -> Vec<(String, String)> {
    let mut v: Vec<&Truth> = world.iter().filter(|t| keep(t)).collect();
    v.sort_by(|a, b| (b.submitted_at, &b.id, &b.tenant).cmp(&(a.submitted_at, &a.id, &a.tenant)));
    v.into_iter()
        .map(|t| (t.tenant.clone(), t.id.clone()))
        .collect()
}

fn keys(v: &[TaskView]) -> Vec<(String, String)> {
    v.iter().map(|t| (t.tenant.clone(), t.id.clone())).collect()
}

fn in_range(v: Option<i64>, after: Option<i64>, before: Option<i64>) -> bool {
    v.is_some_and(|v| after.is_none_or(|a| v >= a) && before.is_none_or(|b| v < b))
}

/// The answers compared across restarts and rebuilds.
fn snapshot(c: &ApiClient, truth: &[Truth]) -> (Vec<TaskView>, Vec<TaskDetail>) {
    let list = all_pages(c, &[], 1000);
    let details = truth
        .iter()
        .step_by(17)
        .map(|t| block(c.get(&t.id, Some(&t.tenant))).unwrap())
        .collect();
    (list, details)
}

#[test]
fn every_filter_matches_the_ground_truth_and_survives_a_rebuild() {
    let env = TestEnv::new("qfilter", BODY);
    env.init_topics();
    let now = now_ms();
    let t0 = now - 50 * 60 * MIN;
    let w = world(&env.prefix, t0, 300);
    produce(&env, &w);
    let truth: Vec<Truth> = w.iter().map(|(t, _)| t.clone()).collect();
    // Every outcome is present.
    for s in [
        TaskStatus::Queued,
        TaskStatus::Running,
        TaskStatus::Retrying,
        TaskStatus::Succeeded,
        TaskStatus::Failed,
    ] {
        assert!(
            truth.iter().filter(|t| t.status == s).count() >= 20,
            "{s:?}"
        );
    }

    let store = env.dir.path().join("index.db");
    let serve = Serve::start(&env, &store, 0);
    let admin = serve.client(ADMIN);
    let acme = serve.client(ACME);

    // Each task's fields.
    let listed = all_pages(&admin, &[], 1000);
    assert_eq!(
        keys(&listed),
        expected(&truth, |_| true),
        "order and content"
    );
    let by_key: BTreeMap<_, _> = listed.iter().map(|t| ((&t.tenant, &t.id), t)).collect();
    for t in &truth {
        let got = by_key[&(&t.tenant, &t.id)];
        assert_eq!(got.status, t.status, "{}", t.id);
        assert_eq!(got.function, t.function);
        assert_eq!(got.submitted_at, t.submitted_at);
        assert_eq!(got.started_at, t.started_at, "{}", t.id);
        assert_eq!(got.finished_at, t.finished_at, "{}", t.id);
        assert_eq!(got.attempts, t.attempts);
    }

    // (description, token, params, predicate)
    let r = |ms: i64| rfc3339(ms);
    let mid = t0 + 20 * 60 * MIN;
    let late = t0 + 35 * 60 * MIN;
    type Pred = Box<dyn Fn(&Truth) -> bool>;
    type Case<'a> = (&'a str, &'a ApiClient, Vec<(&'a str, String)>, Pred);
    let cases: Vec<Case<'_>> = vec![
        (
            "tenant token sees its own",
            &acme,
            vec![],
            Box::new(|t| t.tenant == "acme"),
        ),
        (
            "failed",
            &admin,
            vec![("status", "failed".into())],
            Box::new(|t| t.status == TaskStatus::Failed),
        ),
        (
            "several statuses",
            &admin,
            vec![("status", "queued,retrying".into())],
            Box::new(|t| matches!(t.status, TaskStatus::Queued | TaskStatus::Retrying)),
        ),
        (
            "tenant parameter",
            &admin,
            vec![("tenant", "globex".into())],
            Box::new(|t| t.tenant == "globex"),
        ),
        (
            "function",
            &admin,
            vec![("function", "report".into())],
            Box::new(|t| t.function == "report"),
        ),
        (
            "id prefix",
            &admin,
            vec![("id_prefix", "order-".into())],
            Box::new(|t| t.id.starts_with("order-")),
        ),
        (
            "shorter id prefix",
            &admin,
            vec![("id_prefix", "ord".into())],
            Box::new(|t| t.id.starts_with("ord")),
        ),
        (
            "submitted range",
            &admin,
            vec![("submitted_after", r(mid)), ("submitted_before", r(late))],
            Box::new(move |t| in_range(Some(t.submitted_at), Some(mid), Some(late))),
        ),
        (
            "submitted, relative",
            &admin,
            vec![("submitted_after", "25h".into())],
            Box::new(move |t| t.submitted_at >= now - 25 * 60 * MIN),
        ),
        (
            "started after",
            &admin,
            vec![("started_after", r(mid))],
            Box::new(move |t| in_range(t.started_at, Some(mid), None)),
        ),
        (
            "started before",
            &admin,
            vec![("started_before", r(mid))],
            Box::new(move |t| in_range(t.started_at, None, Some(mid))),
        ),
        (
            "finished range",
            &admin,
            vec![("finished_after", r(mid)), ("finished_before", r(late))],
            Box::new(move |t| in_range(t.finished_at, Some(mid), Some(late))),
        ),
        (
            "everything combined",
            &acme,
            vec![
                ("status", "failed,succeeded".into()),
                ("function", "resize".into()),
                ("id_prefix", "ord".into()),
                ("submitted_after", r(t0 + 5 * 60 * MIN)),
                ("finished_before", r(late)),
            ],
            Box::new(move |t| {
                t.tenant == "acme"
                    && matches!(t.status, TaskStatus::Failed | TaskStatus::Succeeded)
                    && t.function == "resize"
                    && t.id.starts_with("ord")
                    && t.submitted_at >= t0 + 5 * 60 * MIN
                    && in_range(t.finished_at, None, Some(late))
            }),
        ),
        (
            "a tenant token asking for another tenant gets nothing",
            &acme,
            vec![("tenant", "globex".into())],
            Box::new(|_| false),
        ),
        (
            "nothing matches",
            &admin,
            vec![("id_prefix", "zzz".into())],
            Box::new(|_| false),
        ),
    ];
    for (what, client, params, keep) in &cases {
        let want = expected(&truth, keep);
        assert!(
            !want.is_empty() || what.contains("nothing"),
            "case `{what}` selects nothing"
        );
        for limit in [1000, 13] {
            let got = all_pages(client, params, limit);
            assert_eq!(keys(&got), want, "case `{what}`, pages of {limit}");
        }
    }

    // One task's history.
    let failed = truth
        .iter()
        .find(|t| t.status == TaskStatus::Failed && t.attempts == 2)
        .unwrap();
    let d = block(admin.get(&failed.id, None)).unwrap();
    assert_eq!(d.events.len(), 4);
    assert_eq!(d.attempt_history.len(), 2);
    assert_eq!(d.attempt_history[0].result, Some(TaskStatus::Retrying));
    assert_eq!(d.attempt_history[0].error.as_deref(), Some("boom 1"));
    assert_eq!(d.attempt_history[1].result, Some(TaskStatus::Failed));
    assert_eq!(d.task.error.as_deref(), Some("boom 2"));
    assert_eq!(d.task.reason, Some(FailureReason::Executor));
    assert_eq!(
        d.attempt_history[1].scheduler_id.as_deref(),
        Some("sched-0")
    );

    // Restart on the same store: it continues from its offsets. Then delete the store
    // and rebuild from Kafka: the same answers both times.
    let before = snapshot(&admin, &truth);
    serve.stop();
    let serve = Serve::start(&env, &store, 1);
    assert!(
        serve.log_text().contains("resumed=true"),
        "{}",
        serve.log_text()
    );
    assert_eq!(
        snapshot(&serve.client(ADMIN), &truth),
        before,
        "after restart"
    );
    serve.stop();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", store.display()));
    }
    let serve = Serve::start(&env, &store, 2);
    assert!(serve.log_text().contains("resumed=false"));
    assert_eq!(
        snapshot(&serve.client(ADMIN), &truth),
        before,
        "after rebuild"
    );
}

#[test]
fn pages_neither_skip_nor_repeat_while_new_tasks_arrive() {
    let env = TestEnv::new("qpage", BODY);
    env.init_topics();
    let now = now_ms();
    let w = world(&env.prefix, now - 50 * 60 * MIN, 120);
    produce(&env, &w);
    let truth: Vec<Truth> = w.iter().map(|(t, _)| t.clone()).collect();
    let serve = Serve::start(&env, &env.dir.path().join("index.db"), 0);
    let admin = serve.client(ADMIN);
    let want = expected(&truth, |_| true);

    let mut params = vec![("limit".to_string(), "10".to_string())];
    let mut got: Vec<TaskView> = Vec::new();
    let mut round = 0;
    loop {
        let page = block(admin.list(&params)).unwrap();
        got.extend(page.tasks);
        // New tasks keep arriving between pages, newer than everything listed so far.
        let fresh: Vec<Task> = (0..5)
            .map(|i| Task {
                id: format!("fresh-{round}-{i}"),
                tenant: None,
                function: "resize".into(),
                payload: vec![],
                headers: BTreeMap::new(),
                submitted_at: Some(now_ms()),
                not_before: None,
            })
            .collect();
        env.submit("acme", fresh);
        round += 1;
        match page.next_cursor {
            Some(c) => {
                params.retain(|(k, _)| k != "cursor");
                params.push(("cursor".into(), c));
            }
            None => break,
        }
    }
    assert!(round >= 12);
    assert_eq!(keys(&got), want, "the listing started before the new tasks");
    // The new tasks were indexed meanwhile: they lead a fresh listing.
    let deadline = Instant::now() + WAIT;
    loop {
        let first = all_pages(&admin, &[("id_prefix", "fresh-".into())], 1000);
        if first.len() == round * 5 {
            assert!(first.iter().all(|t| t.status == TaskStatus::Queued));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} fresh tasks",
            first.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn api_error(e: ClientError) -> (StatusCode, Option<String>, String) {
    match e {
        ClientError::Api {
            status,
            parameter,
            message,
        } => (status, parameter, message),
        other => panic!("not an API error: {other}"),
    }
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn tenants_are_isolated_and_bad_requests_are_named() {
    let env = TestEnv::new("qauth", BODY);
    env.init_topics();
    let now = now_ms();
    let task = |id: &str| Task {
        id: id.into(),
        tenant: None,
        function: String::new(),
        payload: vec![],
        headers: BTreeMap::new(),
        submitted_at: Some(now),
        not_before: None,
    };
    let mut a = task("shared-id");
    a.function = "resize".into();
    let mut g = task("shared-id");
    g.function = "notify".into();
    let mut g2 = task("globex-only");
    g2.function = "notify".into();
    env.submit("acme", vec![a]);
    env.submit("globex", vec![g, g2]);
    let logs_topic = topics::logs(&env.prefix);
    let log = TaskLog {
        task_id: "globex-only".into(),
        tenant: "globex".into(),
        function: "notify".into(),
        attempt: 1,
        at: now,
        stream: LogStream::Stdout,
        data: b"secret output".to_vec(),
        truncated: false,
    };
    env.produce_raw(
        &logs_topic,
        &[(
            Some("globex-only"),
            codec::encode_task_log(&log).unwrap(),
            vec![],
        )],
    );
    let serve = Serve::start(&env, &env.dir.path().join("index.db"), 0);
    let admin = serve.client(ADMIN);
    let acme = serve.client(ACME);
    let globex = serve.client(GLOBEX);

    // Same id in two tenants: each tenant sees its own; admin must say which.
    assert_eq!(
        block(acme.get("shared-id", None)).unwrap().task.function,
        "resize"
    );
    assert_eq!(
        block(globex.get("shared-id", None)).unwrap().task.function,
        "notify"
    );
    let (status, param, _) = api_error(block(admin.get("shared-id", None)).unwrap_err());
    assert_eq!(
        (status, param.as_deref()),
        (StatusCode::CONFLICT, Some("tenant"))
    );
    assert_eq!(
        block(admin.get("shared-id", Some("globex")))
            .unwrap()
            .task
            .tenant,
        "globex"
    );

    // Another tenant's task is 404, like a task that does not exist.
    for (id, tenant) in [
        ("globex-only", None),
        ("globex-only", Some("globex")),
        ("nope", None),
    ] {
        let e = api_error(block(acme.get(id, tenant)).unwrap_err());
        assert_eq!(e.0, StatusCode::NOT_FOUND, "{id}");
        let e = api_error(block(acme.logs(id, tenant)).unwrap_err());
        assert_eq!(e.0, StatusCode::NOT_FOUND, "{id}");
        let e = api_error(block(acme.stop(id, tenant)).unwrap_err());
        assert_eq!(e.0, StatusCode::NOT_FOUND, "{id}");
    }
    // The owner sees its logs.
    let logs = block(globex.logs("globex-only", None)).unwrap();
    assert_eq!(logs.logs.len(), 1);
    assert_eq!(logs.logs[0].data, "secret output");
    // Lists are scoped.
    let listed = all_pages(&acme, &[], 100);
    assert_eq!(
        keys(&listed),
        vec![("acme".to_string(), "shared-id".to_string())]
    );
    assert!(all_pages(&acme, &[("tenant", "globex".into())], 100).is_empty());
    assert_eq!(all_pages(&admin, &[], 100).len(), 3);
    // Queues are scoped.
    let q = block(acme.queues(Some(5))).unwrap();
    assert!(!q.queues.is_empty());
    assert!(q.queues.iter().all(|q| q.tenant == "acme"), "{q:?}");
    // Submitting for another tenant is refused with 403 (the tenant named is the
    // caller's own choice, so nothing leaks).
    let req = SubmitRequest {
        tenant: Some("globex".into()),
        function: "notify".into(),
        id: None,
        payload: serde_json::json!("x"),
        headers: BTreeMap::new(),
    };
    let e = api_error(block(acme.submit(&req)).unwrap_err());
    assert_eq!(
        (e.0, e.1.as_deref()),
        (StatusCode::FORBIDDEN, Some("tenant"))
    );

    // No token, a wrong token: 401 on every /v1 route.
    let anon = ApiClient::new(&serve.url, None).unwrap();
    let wrong = ApiClient::new(&serve.url, Some("tok-wrong".into())).unwrap();
    for c in [&anon, &wrong] {
        for (method, path) in [
            (Method::GET, vec!["v1", "tasks"]),
            (Method::POST, vec!["v1", "tasks"]),
            (Method::GET, vec!["v1", "tasks", "shared-id"]),
            (Method::GET, vec!["v1", "tasks", "shared-id", "logs"]),
            (Method::POST, vec!["v1", "tasks", "shared-id", "stop"]),
            (Method::GET, vec!["v1", "queues"]),
        ] {
            let body = (method == Method::POST).then(|| b"{}".to_vec());
            let (status, _) = block(c.raw(method.clone(), c.url(&path, &[]), body)).unwrap();
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path:?}");
        }
    }
    // Health needs no token.
    let (status, _) = block(anon.raw(Method::GET, anon.url(&["healthz"], &[]), None)).unwrap();
    assert_eq!(status, StatusCode::OK);

    // Malformed queries: 400 naming the parameter.
    let long = "x".repeat(201);
    for (k, v) in [
        ("limit", "0"),
        ("limit", "1001"),
        ("limit", "many"),
        ("status", "exploded"),
        ("submitted_after", "yesterday"),
        ("finished_before", "2026-01-01"),
        ("id_prefix", long.as_str()),
        ("cursor", "not-a-cursor"),
        ("colour", "blue"),
    ] {
        let url = admin.url(&["v1", "tasks"], &[(k.to_string(), v.to_string())]);
        let (status, body) = block(admin.raw(Method::GET, url, None)).unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{k}={v}");
        let err: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(err.parameter.as_deref(), Some(k), "{k}={v}: {}", err.error);
        assert!(!err.error.is_empty());
    }
    for (path, k, v) in [
        (vec!["v1", "queues"], "minutes", "0"),
        (vec!["v1", "tasks", "shared-id", "logs"], "limit", "-1"),
    ] {
        let url = acme.url(&path, &[(k.to_string(), v.to_string())]);
        let (status, body) = block(acme.raw(Method::GET, url, None)).unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path:?} {k}={v}");
        let err: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(err.parameter.as_deref(), Some(k));
    }
    // A body that is not a task.
    let url = acme.url(&["v1", "tasks"], &[]);
    let (status, body) =
        block(acme.raw(Method::POST, url, Some(br#"{"fn":"resize"}"#.to_vec()))).unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let err: ErrorBody = serde_json::from_slice(&body).unwrap();
    assert_eq!(err.parameter.as_deref(), Some("body"), "{}", err.error);
}

#[test]
fn a_produced_task_is_queued_before_any_scheduler_and_can_be_submitted_and_stopped() {
    let env = TestEnv::new("qqueued", BODY);
    env.init_topics();
    let serve = Serve::start(&env, &env.dir.path().join("index.db"), 0);
    let acme = serve.client(ACME);

    // Produced by any Kafka client, read by no scheduler: queued.
    let q = env.queue("acme");
    env.produce_raw(
        &q,
        &[
            (
                Some("k1"),
                br#"{"id":"json-1","function":"resize","payload":"x"}"#.to_vec(),
                vec![],
            ),
            (Some("junk-key"), b"\x01\x02 not a task".to_vec(), vec![]),
        ],
    );
    let t = wait_for("json-1", || block(acme.get("json-1", None)).ok());
    assert_eq!(t.task.status, TaskStatus::Queued);
    assert_eq!(t.task.function, "resize");
    assert!(t.events.is_empty());
    // An undecodable record is listed under its key, as the scheduler will name it.
    let junk = wait_for("junk", || block(acme.get("junk-key", None)).ok());
    assert_eq!(junk.task.status, TaskStatus::Queued);
    assert_eq!(junk.task.function, "");

    // Submitted through the API.
    let req = SubmitRequest {
        tenant: None,
        function: "report".into(),
        id: Some("api-1".into()),
        payload: serde_json::json!({"w": 1}),
        headers: BTreeMap::new(),
    };
    let sub = block(acme.submit(&req)).unwrap();
    assert_eq!(
        sub.topic,
        topics::function_queue(&env.prefix, "acme", "report")
    );
    let t = wait_for("api-1", || block(acme.get("api-1", None)).ok());
    assert_eq!(t.task.status, TaskStatus::Queued);
    assert_eq!(t.task.queue.as_ref().unwrap().topic, sub.topic);
    let unknown = SubmitRequest {
        function: "nope".into(),
        ..req.clone()
    };
    let e = api_error(block(acme.submit(&unknown)).unwrap_err());
    assert_eq!(
        (e.0, e.1.as_deref()),
        (StatusCode::NOT_FOUND, Some("function"))
    );

    // The same through the command line.
    let run = |token: &str, args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tidewater"))
            .arg("--config")
            .arg(&env.config_path)
            .args(args)
            .env("TW_API_URL", &serve.url)
            .env("TW_API_TOKEN", token)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = run(
        ACME,
        &["tasks", "list", "--status", "queued", "--output", "json"],
    );
    assert!(ok, "{stderr}");
    let page: tidewater::store::model::TaskPage = serde_json::from_str(&stdout).unwrap();
    let ids: BTreeSet<&str> = page.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, BTreeSet::from(["json-1", "junk-key", "api-1"]));
    let (ok, stdout, stderr) = run(ACME, &["tasks", "list", "--prefix", "api-", "--limit", "5"]);
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("ID ") && lines[0].contains("STATUS"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("api-1 ") && lines[1].contains("queued"),
        "{stdout}"
    );
    let (ok, stdout, stderr) = run(ACME, &["tasks", "get", "api-1"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("status     queued"), "{stdout}");
    let (ok, stdout, stderr) = run(ACME, &["queues", "--minutes", "5"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&env.queue("acme")), "{stdout}");
    let (ok, _, stderr) = run(GLOBEX, &["tasks", "get", "api-1"]);
    assert!(!ok && stderr.contains("404"), "{stderr}");
    let (ok, _, stderr) = run("nope", &["tasks", "list"]);
    assert!(!ok && stderr.contains("401"), "{stderr}");

    // Stop: recorded on the control topic.
    let stop = block(acme.stop("api-1", None)).unwrap();
    assert_eq!(stop.topic, topics::control(&env.prefix));
    let recs = env.read(&stop.topic, 1, WAIT);
    assert_eq!(recs.len(), 1);
    let (hs, value) = &recs[0];
    assert!(hs.iter().any(|(k, v)| k == h::EVENT && v == h::EVENT_STOP));
    let req = codec::decode_stop_request(value).unwrap();
    assert_eq!(
        (req.task_id.as_str(), req.tenant.as_str()),
        ("api-1", "acme")
    );
    assert_eq!(req.requested_by, "acme");

    // The queue overview counts them.
    let q = block(acme.queues(Some(3))).unwrap();
    let shared = q
        .queues
        .iter()
        .find(|x| x.topic == env.queue("acme"))
        .unwrap();
    assert_eq!(shared.backlog, 2, "nothing committed by a scheduler yet");
    assert_eq!(shared.per_minute.len(), 3);
    let last = shared.per_minute.last().unwrap();
    assert!(last.queued >= 2, "{shared:?}");
}

/// An exactly-once scheduler under load always has a transaction open on its group's
/// offsets; the queue overview answers with the last stable ones instead of waiting.
#[test]
fn the_queue_overview_answers_while_a_transaction_holds_the_group_offsets() {
    let env = TestEnv::with_partitions("qpend", BODY, 1);
    env.init_topics();
    let queue = env.queue("acme");
    let tasks = (0..6)
        .map(|i| {
            let mut t = common::task(&format!("p-{i}"), "resize", "x");
            t.submitted_at = Some(now_ms());
            t
        })
        .collect();
    env.submit("acme", tasks);
    let owner = common::GroupTransactions::new("qpend", &env.config.group_id());
    owner.begin();
    owner.add_offset(&queue, 2, "tw1:");
    owner.commit();
    // The next transaction stays open: offset 5 is pending.
    owner.begin();
    owner.add_offset(&queue, 5, "tw1:");

    let serve = Serve::start(&env, &env.dir.path().join("index.db"), 0);
    let acme = serve.client(ACME);
    let partition = |q: &tidewater::store::model::QueuesOverview| {
        let shared = q.queues.iter().find(|x| x.topic == queue).unwrap();
        assert_eq!(shared.partitions.len(), 1, "{shared:?}");
        shared.partitions[0].clone()
    };
    let q = block(acme.queues(Some(5))).unwrap();
    let p = partition(&q);
    assert_eq!(
        (p.high_watermark, p.committed, p.backlog),
        (6, Some(2), 4),
        "the last stable offset, while offset 5 is pending: {p:?}"
    );
    owner.commit();
    let p = wait_for("the committed offset 5", || {
        let p = partition(&block(acme.queues(Some(5))).unwrap());
        (p.committed == Some(5)).then_some(p)
    });
    // The commit marker takes an offset of its own only on the offsets topic, not here.
    assert_eq!((p.high_watermark, p.backlog), (6, 1), "{p:?}");
}

/// Records deleted from the head of a queue (retention, `kafka-delete-records`): the
/// overview counts the backlog from the low watermark until the group commits.
#[test]
fn the_queue_overview_counts_from_the_low_watermark_after_records_are_deleted() {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let env = TestEnv::with_partitions("qlow", BODY, 1);
    env.init_topics();
    let queue = env.queue("acme");
    env.submit(
        "acme",
        (0..10)
            .map(|i| common::task(&format!("d-{i}"), "resize", "x"))
            .collect(),
    );
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &env.bootstrap)
        .create()
        .unwrap();
    let mut before = rdkafka::TopicPartitionList::new();
    before
        .add_partition_offset(&queue, 0, rdkafka::Offset::Offset(4))
        .unwrap();
    let deleted = block(admin.delete_records(&before, &AdminOptions::new())).unwrap();
    assert_eq!(
        deleted.elements()[0].offset(),
        rdkafka::Offset::Offset(4),
        "{deleted:?}"
    );

    let serve = Serve::start(&env, &env.dir.path().join("index.db"), 0);
    let acme = serve.client(ACME);
    let q = block(acme.queues(Some(5))).unwrap();
    let shared = q.queues.iter().find(|x| x.topic == queue).unwrap();
    let p = &shared.partitions[0];
    assert_eq!(
        (p.low_watermark, p.high_watermark, p.committed, p.backlog),
        (4, 10, None, 6),
        "{p:?}"
    );
    // Once the group commits, from its offset.
    let owner = common::GroupTransactions::new("qlow", &env.config.group_id());
    owner.begin();
    owner.add_offset(&queue, 7, "tw1:");
    owner.commit();
    let p = wait_for("the committed offset 7", || {
        let q = block(acme.queues(Some(5))).unwrap();
        let shared = q.queues.iter().find(|x| x.topic == queue).unwrap();
        let p = shared.partitions[0].clone();
        (p.committed == Some(7)).then_some(p)
    });
    assert_eq!((p.low_watermark, p.backlog), (4, 3), "{p:?}");
}

#[test]
fn transactional_status_events_are_read_and_the_index_gets_ready() {
    use rdkafka::producer::{BaseRecord, Producer};
    let env = TestEnv::new("qtxn", BODY);
    env.init_topics();
    // Status events written in Kafka transactions end each partition with a commit
    // marker, one offset past the last record.
    let producer = common::transactional_producer("txn");
    let now = now_ms();
    let source = Source {
        topic: env.queue("acme"),
        partition: 0,
        offset: 0,
    };
    for round in 0..2 {
        producer.begin_transaction().unwrap();
        for i in 0..10 {
            let ev = StatusEvent {
                task_id: format!("txn-{round}-{i}"),
                tenant: "acme".into(),
                function: "resize".into(),
                status: TaskStatus::Succeeded,
                attempt: 1,
                at: now,
                submitted_at: now - 1000,
                reason: None,
                error: None,
                source: source.clone(),
                scheduler_id: "s".into(),
            };
            let value = codec::encode_status(&ev).unwrap();
            producer
                .send(
                    BaseRecord::<str, [u8]>::to(&env.status_topic())
                        .key(&ev.task_id)
                        .payload(&value),
                )
                .map_err(|(e, _)| e)
                .unwrap();
        }
        producer
            .commit_transaction(Duration::from_secs(30))
            .unwrap();
    }
    // `Serve::start` waits for /readyz.
    let serve = Serve::start(&env, &env.dir.path().join("index.db"), 0);
    let listed = all_pages(&serve.client(ACME), &[("status", "succeeded".into())], 100);
    assert_eq!(listed.len(), 20);
}

#[test]
fn statuses_from_a_real_scheduler_reach_the_api() {
    let env = TestEnv::new(
        "qe2e",
        r#"
[api]
tokens = [{ token = "tok-acme", tenant = "acme" }]
[tenants.acme.functions.ok]
executor = { type = "command", program = "sh", args = ["-c", "echo out-$TW_TASK_ID; cat"] }
[tenants.acme.functions.flaky]
executor = { type = "command", program = "sh", args = ["-c", "echo \"oops $TW_ATTEMPT\" >&2; exit 1"] }
max_attempts = 2
backoff = "50ms"
"#,
    );
    env.init_topics();
    let serve = Serve::start(&env, &env.dir.path().join("index.db"), 0);
    let acme = serve.client(ACME);
    for (id, f) in [("ok-1", "ok"), ("ok-2", "ok"), ("bad-1", "flaky")] {
        let req = SubmitRequest {
            tenant: None,
            function: f.into(),
            id: Some(id.into()),
            payload: serde_json::json!("payload"),
            headers: BTreeMap::new(),
        };
        block(acme.submit(&req)).unwrap();
    }
    // Queued before the scheduler starts.
    let t = wait_for("ok-1", || block(acme.get("ok-1", None)).ok());
    assert_eq!(t.task.status, TaskStatus::Queued);

    let _scheduler = env.start_scheduler(0);
    let done = |id: &str| {
        wait_for(id, || {
            block(acme.get(id, None))
                .ok()
                .filter(|d| matches!(d.task.status, TaskStatus::Succeeded | TaskStatus::Failed))
        })
    };
    for id in ["ok-1", "ok-2"] {
        let d = done(id);
        assert_eq!(d.task.status, TaskStatus::Succeeded);
        assert_eq!(d.task.attempts, 1);
        assert!(d.task.started_at.is_some() && d.task.finished_at.is_some());
        assert!(d.task.scheduler_id.is_some());
        assert_eq!(d.attempt_history.len(), 1);
    }
    let d = done("bad-1");
    assert_eq!(d.task.status, TaskStatus::Failed);
    assert_eq!(d.task.reason, Some(FailureReason::Executor));
    assert_eq!(d.task.attempts, 2);
    assert_eq!(d.attempt_history.len(), 2, "{d:?}");
    assert_eq!(d.attempt_history[0].result, Some(TaskStatus::Retrying));
    assert!(d.task.error.as_deref().unwrap().contains("oops 2"), "{d:?}");

    let failed = all_pages(&acme, &[("status", "failed".into())], 10);
    assert_eq!(
        keys(&failed),
        vec![("acme".to_string(), "bad-1".to_string())]
    );
    // The scheduler commits what is done: no backlog left, three completions counted.
    let q = wait_for("backlog 0", || {
        block(acme.queues(Some(5)))
            .ok()
            .filter(|q| q.queues.iter().all(|x| x.backlog == 0))
    });
    let shared = &q.queues[0];
    let completed: u64 = shared.per_minute.iter().map(|m| m.completed).sum();
    let failed: u64 = shared.per_minute.iter().map(|m| m.failed).sum();
    let submitted: u64 = shared.per_minute.iter().map(|m| m.submitted).sum();
    assert_eq!((submitted, completed, failed), (3, 3, 1), "{shared:?}");
    let last = shared.per_minute.last().unwrap();
    assert_eq!((last.queued, last.running), (0, 0));
    // The CLI lists the scheduler at work and where its tasks came from.
    let id = done("ok-1").task.scheduler_id.unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tidewater"))
        .arg("--config")
        .arg(&env.config_path)
        .args(["queues", "--minutes", "5"])
        .env("TW_API_URL", &serve.url)
        .env("TW_API_TOKEN", ACME)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = stdout
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("no row for scheduler {id}:\n{stdout}"));
    assert!(row.contains(&format!("{}[", env.queue("acme"))), "{row}");
}

/// Requests found to crash or confuse the API, each answered as `docs/openapi.yaml` says:
/// one JSON error shape with a code, the right status, and the process still serving.
#[test]
fn hostile_requests_get_documented_json_answers() {
    let env = TestEnv::new("qhostile", BODY);
    env.init_topics();
    let serve = Serve::start(&env, &env.dir.path().join("index.db"), 0);
    let acme = serve.client(ACME);
    let raw = |method: Method, path_and_query: &str, body: Option<Vec<u8>>| {
        let url = reqwest::Url::parse(&format!("{}{path_and_query}", serve.url)).unwrap();
        let (status, body) = block(acme.raw(method, url, body)).unwrap();
        let err = serde_json::from_slice::<ErrorBody>(&body).ok();
        (status, err)
    };
    let expect =
        |method: Method, path: &str, body: Option<Vec<u8>>, want: StatusCode, code: &str| {
            let (status, err) = raw(method.clone(), path, body);
            assert_eq!(status, want, "{method} {path}");
            let err = err.unwrap_or_else(|| panic!("{method} {path}: not the JSON error shape"));
            assert_eq!(
                serde_json::to_value(err.code).unwrap(),
                code,
                "{method} {path}"
            );
            assert!(!err.error.is_empty());
            err
        };
    // Multi-byte text in a time parameter once panicked the parser (no answer at all).
    let err = expect(
        Method::GET,
        "/v1/tasks?submitted_after=%C3%A9%C3%A9%C3%A9%C3%A9a",
        None,
        StatusCode::BAD_REQUEST,
        "invalid_parameter",
    );
    assert_eq!(err.parameter.as_deref(), Some("submitted_after"));
    // An empty range is valid and matches nothing.
    let (status, _) = raw(
        Method::GET,
        "/v1/tasks?submitted_after=24h&submitted_before=24h",
        None,
    );
    assert_eq!(status, StatusCode::OK);
    let err = expect(
        Method::GET,
        "/v1/tasks?status=failed,,",
        None,
        StatusCode::BAD_REQUEST,
        "invalid_parameter",
    );
    assert_eq!(err.parameter.as_deref(), Some("status"));
    let err = expect(
        Method::GET,
        "/v1/tasks/%FF%FE",
        None,
        StatusCode::BAD_REQUEST,
        "invalid_parameter",
    );
    assert_eq!(err.parameter.as_deref(), Some("id"));
    expect(
        Method::POST,
        "/v1/tasks/x/stop?colour=red",
        None,
        StatusCode::BAD_REQUEST,
        "invalid_parameter",
    );
    expect(
        Method::PATCH,
        "/v1/tasks",
        None,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    expect(
        Method::GET,
        "/v1/nothing",
        None,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let long = format!(
        "/v1/tasks?id_prefix={}",
        "x".repeat(tidewater::api::MAX_URI_BYTES)
    );
    expect(
        Method::GET,
        &long,
        None,
        StatusCode::URI_TOO_LONG,
        "uri_too_long",
    );
    // Payload sizes: over the function's limit (256 KiB by default) is refused at once,
    // a body over the API's limit too; neither is a server fault.
    let submit = |payload_len: usize| {
        serde_json::to_vec(&serde_json::json!({
            "function": "resize",
            "payload": "p".repeat(payload_len),
        }))
        .unwrap()
    };
    for len in [300 * 1024, 2 * 1024 * 1024, 3 * 1024 * 1024] {
        let err = expect(
            Method::POST,
            "/v1/tasks",
            Some(submit(len)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        );
        assert!(err.parameter.is_some(), "{len}");
    }
    expect(
        Method::POST,
        "/v1/tasks",
        Some(br#"{"function":"nope"}"#.to_vec()),
        StatusCode::NOT_FOUND,
        "unknown_function",
    );
    let err = expect(
        Method::POST,
        "/v1/tasks",
        Some(br#"{"function":""}"#.to_vec()),
        StatusCode::BAD_REQUEST,
        "invalid_parameter",
    );
    assert_eq!(err.parameter.as_deref(), Some("function"));
    // `null` is not in the specification for `tenant` or `id` (found by Schemathesis).
    for body in [
        br#"{"function":"resize","tenant":null}"#.to_vec(),
        br#"{"function":"resize","id":null}"#.to_vec(),
    ] {
        expect(
            Method::POST,
            "/v1/tasks",
            Some(body),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        );
    }
    // Still serving.
    let (status, _) = raw(Method::GET, "/v1/tasks", None);
    assert_eq!(status, StatusCode::OK);
    serve.stop();
}
