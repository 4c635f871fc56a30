//! Spill, through the real binary against a real broker: a slow function whose backlog
//! outgrows its share of a shared partition's buffer moves to its overflow queue, and the
//! other function of the partition keeps flowing; across a `kill -9` every task still has
//! exactly one outcome; ordering keys keep their order across the spill; and a function
//! whose backlog is gone stops spilling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::HeaderMap;
use axum::routing::post;
use common::{TestEnv, metric, task};
use tidewater::codec::{Encoding, Outcome, OutcomeStatus};
use tidewater::names::headers as h;

/// Calls the function server received: (task id, payload, when).
type Calls = Arc<Mutex<Vec<(String, String, Instant)>>>;

/// `POST /sleep/<ms>`: waits that long, records the call and succeeds.
fn start_functions(calls: Calls) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/sleep/{ms}",
                post(move |Path(ms): Path<u64>, h: HeaderMap, body: Bytes| {
                    let calls = calls.clone();
                    async move {
                        let id = h
                            .get(h::TASK_ID)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        let payload = String::from_utf8_lossy(&body).into_owned();
                        calls.lock().unwrap().push((id, payload, Instant::now()));
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        "ok"
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

/// One single-partition env: slow `a` (concurrency `a_conc`, `a_ms` per task) and fast
/// `b`, both on the tenant's shared queue, a buffer of 100 tasks per partition.
fn env(name: &str, addr: SocketAddr, a_conc: u32, a_ms: u64, extra: &str) -> TestEnv {
    let e = TestEnv::with_partitions(
        name,
        &format!(
            r#"
            [scheduler]
            max_buffered_per_partition = 100
            {extra}
            [tenants.shop.functions.a]
            executor = {{ type = "http", url = "http://{addr}/sleep/{a_ms}" }}
            concurrency = {a_conc}
            on_success = "{{prefix}}.done"
            [tenants.shop.functions.b]
            executor = {{ type = "http", url = "http://{addr}/sleep/10" }}
            concurrency = 32
            on_success = "{{prefix}}.done"
            "#
        ),
        1,
    );
    e.init_topics();
    e
}

/// A and B interleaved: `a` tasks of A, `b` of B.
fn interleaved(a: usize, b: usize) -> Vec<tidewater::codec::Task> {
    let mut out = Vec::new();
    for i in 0..a.max(b) {
        if i < a {
            out.push(task(&format!("a-{i:04}"), "a", "x"));
        }
        if i < b {
            out.push(task(&format!("b-{i:04}"), "b", "x"));
        }
    }
    out
}

fn by_id(outcomes: Vec<Outcome>) -> BTreeMap<String, Vec<Outcome>> {
    let mut m: BTreeMap<String, Vec<Outcome>> = BTreeMap::new();
    for o in outcomes {
        m.entry(o.task_id.clone()).or_default().push(o);
    }
    m
}

/// The value of `name` for function `a` of tenant `shop` on a metrics page.
fn of_a(page: &str, name: &str) -> f64 {
    metric(page, &format!("{name}{{tenant=\"shop\",function=\"a\"}}"))
}

/// Waits until the scheduler's metrics page satisfies `pred`.
fn metrics_until(url: &str, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        let page = common::http_get(url);
        if pred(&page) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not seen within {timeout:?}:\n{page}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_slow_backlog_spills_and_the_other_function_keeps_flowing() {
    let calls: Calls = Arc::default();
    let addr = start_functions(calls.clone());
    let env = env(
        "spill",
        addr,
        1,
        100,
        "[api]\ntokens = [{ token = \"tok\", admin = true }]",
    );
    env.submit("shop", interleaved(300, 300));
    let mut s = env.start_scheduler(0);
    let metrics = s.metrics_url(Duration::from_secs(30));

    // Every task gets exactly one outcome; B's all arrive long before A's backlog is done.
    let done = env.topic("done");
    let outcomes = by_id(env.outcomes(&done, 600, Duration::from_secs(150)));
    assert_eq!(outcomes.len(), 600, "every task has an outcome");
    assert!(outcomes.values().all(|o| o.len() == 1), "and only one");
    assert!(
        outcomes
            .values()
            .all(|o| o[0].status == OutcomeStatus::Succeeded)
    );

    // Isolation: B's last task started before A's 100th (A runs one at a time, 100 ms
    // each: held behind A's backlog, B would wait for A's buffer share to drain).
    let calls = calls.lock().unwrap().clone();
    let a_starts: Vec<Instant> = calls
        .iter()
        .filter(|(id, _, _)| id.starts_with("a-"))
        .map(|(_, _, at)| *at)
        .collect();
    let b_last = calls
        .iter()
        .filter(|(id, _, _)| id.starts_with("b-"))
        .map(|(_, _, at)| *at)
        .max()
        .unwrap();
    assert!(a_starts.len() >= 300);
    assert!(
        b_last < a_starts[99],
        "B's last task started {:?} after A's 100th",
        b_last.duration_since(a_starts[99])
    );

    // The spilled tasks ran from A's overflow queue; B never spilled.
    let overflow = env.config.overflow_topic("shop", "a").unwrap();
    let spilled: Vec<&Outcome> = outcomes
        .values()
        .map(|o| &o[0])
        .filter(|o| o.source.topic == overflow)
        .collect();
    assert!(
        spilled.len() > 100,
        "A's backlog spilled: {}",
        spilled.len()
    );
    // (B may spill for a moment too when a burst of its tasks fills half the buffer.)
    let page = common::http_get(&metrics);
    assert_eq!(
        of_a(&page, "tidewater_tasks_spilled_total"),
        spilled.len() as f64,
        "the counter counts what ran from the overflow queue"
    );
    // A spilled task keeps its submission time (its queue wait counts from the start).
    let first = outcomes["a-0000"][0].submitted_at;
    assert!(spilled.iter().all(|o| o.submitted_at - first < 30_000));

    // `tasks get` names the queue a spilled task waited in.
    let store = env.dir.path().join("store.db");
    let serve = common::serve::Serve::start(&env, &store, 0);
    let spilled_id = spilled[0].task_id.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let detail = common::serve::block(serve.client("tok").get(&spilled_id, Some("shop"))).ok();
        let topic = detail.and_then(|d| d.task.queue).map(|q| q.topic);
        if topic.as_deref() == Some(overflow.as_str()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tasks get shows {topic:?} for {spilled_id}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    serve.stop();

    // The backlog is gone: A stops spilling, and a new task of A stays on the shared queue.
    metrics_until(
        &metrics,
        "A no longer spilling",
        Duration::from_secs(30),
        |p| of_a(p, "tidewater_function_spilling") == 0.0,
    );
    env.submit("shop", vec![task("a-late", "a", "x")]);
    let late = env
        .outcomes(&done, 601, Duration::from_secs(60))
        .into_iter()
        .find(|o| o.task_id == "a-late")
        .expect("an outcome for the late task");
    assert_eq!(
        late.source.topic,
        env.queue("shop"),
        "read from the shared queue"
    );
    s.terminate(Duration::from_secs(30));
}

#[test]
fn kill_9_while_spilling_leaves_exactly_one_outcome_per_task() {
    let calls: Calls = Arc::default();
    let addr = start_functions(calls);
    let env = env("spillkill", addr, 2, 50, "");
    let tasks = interleaved(400, 100);
    let ids: BTreeSet<String> = tasks.iter().map(|t| t.id.clone()).collect();
    env.submit("shop", tasks);
    let mut first = env.start_scheduler(0);
    let metrics = first.metrics_url(Duration::from_secs(30));
    metrics_until(&metrics, "spilling", Duration::from_secs(60), |p| {
        metric(p, "tidewater_tasks_spilled_total") >= 20.0
    });
    first.kill9();
    let mut second = env.start_scheduler(1);
    env.assert_one_outcome_each(&env.topic("done"), &ids, Duration::from_secs(180), || {
        second.log_digest()
    });
    second.terminate(Duration::from_secs(30));
}

#[test]
fn ordering_keys_keep_their_order_across_a_spill() {
    let calls: Calls = Arc::default();
    let addr = start_functions(calls.clone());
    let env = env("spillorder", addr, 4, 20, "");
    // Keyed tasks of A (`k<key>:<seq>`): keys k0-k4 have 5 tasks before a block of
    // unkeyed A tasks that makes A spill; after it come 55 more of k0-k4 and 55 of the
    // new keys k5-k9, then B's tasks. k0-k4 still have tasks held when their later ones
    // arrive, so those stay behind them; k5-k9 have none held, so they go to the
    // overflow queue, and their later tasks follow.
    let queue = env.queue("shop");
    let keyed = |keys: std::ops::Range<u32>, seqs: std::ops::Range<u32>| {
        let mut out = Vec::new();
        for seq in seqs {
            for k in keys.clone() {
                let t = task(&format!("a-k{k}-{seq:03}"), "a", &format!("k{k}:{seq}"));
                let value = tidewater::codec::encode_task_as(&t, Encoding::Json).unwrap();
                out.push((Some(format!("k{k}")), value, true));
            }
        }
        out
    };
    let mut records = keyed(0..5, 0..5);
    for i in 0..150 {
        let t = task(&format!("a-u-{i:03}"), "a", "u:0");
        let value = tidewater::codec::encode_task_as(&t, Encoding::Json).unwrap();
        records.push((None, value, false));
    }
    records.extend(keyed(0..5, 5..60));
    records.extend(keyed(5..10, 0..55));
    let raw: Vec<common::RawRecord<'_>> = records
        .iter()
        .map(|(key, value, ordered)| {
            let mut headers = vec![(h::CONTENT_TYPE, h::CONTENT_TYPE_JSON)];
            if *ordered {
                headers.push((h::ORDERED, "true"));
            }
            (key.as_deref(), value.clone(), headers)
        })
        .collect();
    env.produce_raw(&queue, &raw);
    env.submit("shop", interleaved(0, 100));
    let mut s = env.start_scheduler(0);
    let done = env.topic("done");
    let outcomes = by_id(env.outcomes(&done, 825, Duration::from_secs(150)));
    assert_eq!(outcomes.len(), 825);
    assert!(outcomes.values().all(|o| o.len() == 1));
    let overflow = env.config.overflow_topic("shop", "a").unwrap();
    let spilled_keyed = outcomes
        .values()
        .filter(|o| o[0].source.topic == overflow && o[0].task_id.starts_with("a-k"))
        .count();
    assert!(spilled_keyed > 0, "keyed tasks must cross the spill");
    // Per key, the function saw the sequence numbers in order.
    let calls = calls.lock().unwrap().clone();
    let mut per_key: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (_, payload, _) in calls.iter().filter(|(id, _, _)| id.starts_with("a-k")) {
        let (k, seq) = payload.split_once(':').unwrap();
        per_key
            .entry(k.to_string())
            .or_default()
            .push(seq.parse().unwrap());
    }
    assert_eq!(per_key.len(), 10);
    for (k, seqs) in per_key {
        let n = if k.as_str() < "k5" { 60 } else { 55 };
        assert_eq!(seqs, (0..n).collect::<Vec<u32>>(), "key {k} out of order");
    }

    s.terminate(Duration::from_secs(30));
}

/// With two transactional producers taking turns, an overflow partition can end in two
/// commit markers (each producer's marker lands after the other's records): the watcher
/// that decides when spilling stops reads them as markers, not as tasks waiting.
#[test]
fn trailing_markers_of_two_producers_are_no_backlog() {
    use rdkafka::producer::{BaseRecord, Producer};
    use tidewater::scheduler::spill;
    let env = env("look", "127.0.0.1:9".parse().unwrap(), 1, 1, "");
    let topic = env.config.overflow_topic("shop", "a").unwrap();
    let (first, second) = (
        common::transactional_producer("look"),
        common::transactional_producer("look"),
    );
    for (p, key) in [(&first, "t-1"), (&second, "t-2")] {
        p.begin_transaction().unwrap();
        p.send(BaseRecord::to(&topic).partition(0).key(key).payload("x"))
            .map_err(|(e, _)| e)
            .unwrap();
        p.flush(Duration::from_secs(10)).unwrap();
    }
    // Offsets: 0 and 1 the two records, 2 and 3 the two markers.
    first.commit_transaction(Duration::from_secs(10)).unwrap();
    second.commit_transaction(Duration::from_secs(10)).unwrap();

    let tail = spill::tail_reader(&env.config).unwrap();
    use rdkafka::consumer::Consumer;
    let (_, high) = tail
        .fetch_watermarks(&topic, 0, Duration::from_secs(10))
        .unwrap();
    assert_eq!(high, 4, "two records, then both markers");
    assert_eq!(
        spill::has_records(&tail, &topic, 0, 2),
        Some(false),
        "two markers after the last record: nothing waits"
    );
    assert_eq!(spill::has_records(&tail, &topic, 0, 1), Some(true));
    assert_eq!(spill::has_records(&tail, &topic, 0, 0), Some(true));
}
