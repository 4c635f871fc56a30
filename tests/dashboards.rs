//! The Grafana dashboards and the alert rules, proven against a real Prometheus.
//!
//! A Prometheus of its own (on 127.0.0.1, data in a temp dir, 1 s scrapes) scrapes a
//! `tidewater run` scheduler, `tidewater serve` and a `tidewater run --replicas 2`
//! supervisor with its two scheduler processes (static targets: their ports follow the
//! supervisor's) while a workload runs with successes, failures, retries, stops, a
//! re-delivered task, a crashed scheduler process and a backlog. Then every panel query
//! and every template-variable query of every dashboard is evaluated through Prometheus'
//! HTTP API, the way Grafana would send it, and must parse and return data; every metric
//! of `names::metrics::ALL` must have been scraped; and the alert rules, loaded by that
//! Prometheus, must evaluate without error. The rules' own unit tests run with `promtool`.
//!
//! Needs `prometheus` and `promtool` on PATH (`scripts/install-deps.sh` installs them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::serve::{Serve, block};
use common::{TestEnv, children_of, task};
use serde_json::Value;
use tidewater::names::metrics as m;

const WAIT: Duration = Duration::from_secs(120);
/// Prometheus' scrape and rule evaluation interval.
const SCRAPE: Duration = Duration::from_secs(1);
/// Grafana's `$__rate_interval` for these queries: max(step + scrape interval, 4 × scrape
/// interval), with the step below.
const RATE_INTERVAL: &str = "4s";
/// The step of the range queries (Grafana's `$__interval`).
const STEP: &str = "2s";

/// Metrics the workload cannot make appear, and why.
const NOT_IN_THIS_WORKLOAD: &[(&str, &str)] = &[
    (
        m::PRODUCER_RESTARTS,
        "a transactional producer is rebuilt only after a fatal error or fencing: a broker fault (tests/faults.rs)",
    ),
    (
        m::RECORDS_SKIPPED,
        "counted only for undecodable records on the control or delay topics (tests/hostile.rs)",
    ),
    (
        m::API_PANICS,
        "counted only when an API handler panics, a bug (tests/query_api.rs provokes one)",
    ),
    (
        m::OUTCOMES_FENCED,
        "an outcome is fenced only when a scheduler loses its partitions while it publishes (session timeout): a fault (tests/faults.rs)",
    ),
];

const CONFIG: &str = r#"
[scheduler]
shutdown_grace = "5s"
rebalance_grace = "5s"
commit_interval = "500ms"
[scale]
lag_interval = "1s"
threshold = 4
window = "2s"
cooldown = "4s"
max_partitions = 3
lag_per_replica = 10
min_replicas = 1
max_replicas = 2
[api]
tokens = [{ token = "tok-admin", admin = true }]
[tenants.shop.functions.ok]
executor = { type = "inprocess", handler = "echo" }
on_success = "{prefix}.done"
[tenants.shop.functions.flaky]
executor = { type = "inprocess", handler = "fail" }
max_attempts = 2
backoff = "100ms"
[tenants.shop.functions.hold]
executor = { type = "command", program = "sleep", args = ["60"] }
concurrency = 1
timeout = "120s"
[tenants.shop.functions.slow]
executor = { type = "command", program = "sleep", args = ["2"] }
queue = "exclusive"
concurrency = 1
timeout = "60s"
max_attempts = 1
"#;

const OK_TASKS: usize = 30;
const FLAKY_TASKS: usize = 5;
const SLOW_TASKS: usize = 60;
/// Tasks that run for a minute, to be stopped: more than the partitions of the queue, so
/// that (with a concurrency of 1) one runs and another waits behind it.
const HOLD_TASKS: usize = 4;

/// The dashboards' rules and queries, as files.
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn dashboards() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo().join("dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
            out.push((
                path.file_name().unwrap().to_string_lossy().into_owned(),
                json,
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// `promtool check rules` and `promtool test rules` on dashboards/alerts.yml, and
/// `promtool check config` on the compose stack's Prometheus configuration (with the
/// rules where compose mounts them).
#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = tempfile::tempdir().unwrap();
    let compose = std::fs::read_to_string(repo().join("deploy/prometheus.yml"))
        .unwrap()
        .replace(
            "/etc/prometheus/alerts.yml",
            &repo().join("dashboards/alerts.yml").display().to_string(),
        );
    let compose_path = dir.path().join("prometheus.yml");
    std::fs::write(&compose_path, compose).unwrap();
    let compose_path = compose_path.display().to_string();
    for args in [
        ["check", "rules", "dashboards/alerts.yml"],
        ["test", "rules", "dashboards/alerts_test.yml"],
        ["check", "config", compose_path.as_str()],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(repo())
            .output()
            .unwrap_or_else(|e| {
                panic!("promtool not found ({e}): run scripts/install-deps.sh (Debian package `prometheus`)")
            });
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The shape every dashboard keeps: a unique uid, unique panel ids on a 24-column grid,
/// a one-line question per panel, and only metric names that Tidewater defines, with a
/// panel for each.
#[test]
fn every_panel_says_which_question_it_answers_and_uses_known_metrics() {
    let boards = dashboards();
    assert!(boards.len() >= 4, "overview, queues, function, scaling");
    let mut uids = BTreeSet::new();
    let known: BTreeSet<String> = m::ALL
        .iter()
        .flat_map(|n| {
            ["", "_bucket", "_sum", "_count"]
                .iter()
                .map(move |s| format!("{n}{s}"))
        })
        .collect();
    let mut used = BTreeSet::new();
    for (file, d) in &boards {
        assert!(
            uids.insert(d["uid"].as_str().unwrap().to_string()),
            "{file}: uid repeated"
        );
        let mut ids = BTreeSet::new();
        for p in panels(d) {
            let title = p["title"].as_str().unwrap_or_default();
            assert!(
                ids.insert(p["id"].as_u64().unwrap()),
                "{file}: {title:?}: panel id repeated"
            );
            let pos = &p["gridPos"];
            assert!(
                pos["x"].as_u64().unwrap() + pos["w"].as_u64().unwrap() <= 24,
                "{file}: {title:?} is wider than the grid"
            );
            if p["type"] == "row" {
                continue;
            }
            let desc = p["description"].as_str().unwrap_or_default();
            assert!(
                desc.ends_with('?') || desc.contains("? ("),
                "{file}: panel {title:?} has no question as its description: {desc:?}"
            );
            assert!(!desc.contains('\n'), "{file}: {title:?}: one line only");
            for t in p["targets"].as_array().unwrap() {
                for name in metric_names(t["expr"].as_str().unwrap()) {
                    assert!(
                        known.contains(&name),
                        "{file}: {title:?} uses unknown metric {name}"
                    );
                    used.insert(name);
                }
            }
        }
    }
    let unused: Vec<_> = m::ALL
        .iter()
        .filter(|n| {
            !used.iter().any(|u| {
                u.strip_prefix(**n)
                    .is_some_and(|s| ["", "_bucket", "_sum", "_count"].contains(&s))
            })
        })
        .collect();
    assert!(unused.is_empty(), "metrics no panel shows: {unused:?}");
}

fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("tidewater_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// A free port on 127.0.0.1 whose next `extra` ports are free too.
fn free_ports(extra: u16) -> u16 {
    for _ in 0..200 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = l.local_addr().unwrap().port();
        if base.checked_add(extra).is_none() {
            continue;
        }
        let rest: Vec<_> = (1..=extra)
            .map(|k| TcpListener::bind(("127.0.0.1", base + k)))
            .collect();
        if rest.iter().all(Result::is_ok) {
            return base;
        }
    }
    panic!("no {} free consecutive ports", extra + 1)
}

/// A Prometheus server of this test; killed when dropped.
struct Prometheus {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, jobs: &[(&str, Vec<String>)]) -> Self {
        let port = free_ports(0);
        let rules = dir.join("alerts.yml");
        std::fs::copy(repo().join("dashboards/alerts.yml"), &rules).unwrap();
        let mut config = format!(
            "global:\n  scrape_interval: {s}s\n  scrape_timeout: {s}s\n  evaluation_interval: {s}s\nrule_files:\n  - {rules}\nscrape_configs:\n",
            s = SCRAPE.as_secs(),
            rules = rules.display()
        );
        for (job, targets) in jobs {
            let list: Vec<_> = targets.iter().map(|t| format!("\"{t}\"")).collect();
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: [{}]\n",
                list.join(", ")
            ));
        }
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, &config).unwrap();
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=1h")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("prometheus not found ({e}): run scripts/install-deps.sh (Debian package `prometheus`)")
            });
        let p = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !p.get_text("/-/ready").is_some_and(|t| t.contains("Ready")) {
            assert!(
                Instant::now() < deadline,
                "Prometheus not ready:\n{}",
                p.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn get_text(&self, path: &str) -> Option<String> {
        block(async {
            reqwest::get(format!("{}{path}", self.url))
                .await
                .ok()?
                .text()
                .await
                .ok()
        })
    }

    /// GET an API path with query parameters: `Ok(data)` or `Err(error text)`.
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.url), params).unwrap();
        let text = block(async { reqwest::get(url).await.unwrap().text().await.unwrap() });
        let body: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(format!("{}: {}", body["errorType"], body["error"]))
        }
    }

    /// Instant query: its result vector.
    fn query(&self, expr: &str) -> Vec<Value> {
        self.api("/api/v1/query", &[("query", expr)])
            .unwrap_or_else(|e| panic!("{expr}: {e}"))["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Every metric name scraped so far.
    fn names(&self) -> BTreeSet<String> {
        self.api("/api/v1/label/__name__/values", &[])
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- prometheus log ---\n{}", self.log_text());
        }
    }
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Series the workload must have produced at some point, beyond the metric names (a
/// crashed scheduler process takes its series with it: they go stale).
const WORKLOAD_SERIES: &[&str] = &[
    r#"tidewater_tasks_completed_total{outcome="succeeded"}"#,
    r#"tidewater_tasks_completed_total{outcome="failed"}"#,
    r#"tidewater_tasks_completed_total{outcome="stopped"}"#,
    r#"tidewater_task_attempts_total{result="failure"}"#,
    r#"tidewater_task_attempts_total{result="stopped"}"#,
    r#"tidewater_task_retries_total"#,
    r#"tidewater_partition_expansions_total{result="ok"}"#,
    r#"tidewater_replica_restarts_total"#,
    r#"tidewater_ready{component="indexer"}"#,
    r#"tidewater_queue_lag_total"#,
    r#"tidewater_tasks_running{function="slow"}"#,
    // Failed after their retry, and stopped: to the tenant's dead-letter topic.
    r#"tidewater_tasks_dead_lettered_total{function="flaky"}"#,
    r#"tidewater_tasks_dead_lettered_total{function="hold"}"#,
    // Slow tasks queue up behind a concurrency of 1.
    r#"tidewater_queue_oldest_task_age_seconds{topic=~".*slow"}"#,
    // librdkafka's statistics of every kind of client.
    r#"tidewater_kafka_broker_rtt_seconds{client="consumer"}"#,
    r#"tidewater_kafka_broker_rtt_seconds{client="producer"}"#,
    r#"tidewater_kafka_broker_rtt_seconds{client="indexer"}"#,
];

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let started = Instant::now();
    let env = TestEnv::with_partitions("dash", CONFIG, 2);
    env.init_topics();

    let scheduler_port = free_ports(0);
    let serve_port = free_ports(0);
    // The supervisor's port, then one per slot.
    let supervisor_port = free_ports(2);
    let at = |p: u16| format!("127.0.0.1:{p}");
    let prom_dir = tempfile::tempdir().unwrap();
    let prom = Prometheus::start(
        prom_dir.path(),
        &[
            ("scheduler", vec![at(scheduler_port)]),
            ("serve", vec![at(serve_port)]),
            ("supervisor", vec![at(supervisor_port)]),
            (
                "supervised",
                vec![at(supervisor_port + 1), at(supervisor_port + 2)],
            ),
        ],
    );
    let t0 = now_s();

    let serve = Serve::start_with_metrics(&env, &env.dir.path().join("store"), 0, &at(serve_port));
    let mut scheduler = env.start_run(0, &["--metrics-listen", &at(scheduler_port)]);
    let mut supervisor = env.start_run(
        1,
        &["--replicas", "2", "--metrics-listen", &at(supervisor_port)],
    );

    // The workload: successes, failures with a retry each, a backlog of slow tasks.
    submit_wave(&env, "first");
    env.submit(
        "shop",
        (0..SLOW_TASKS)
            .map(|i| task(&format!("slow-{i}"), "slow", ""))
            .collect(),
    );
    let done = env.outcome_ids(&env.topic("done"), OK_TASKS, WAIT);
    assert_eq!(done.len(), OK_TASKS, "successes");
    // A task submitted again after it finished is skipped, not run twice.
    let resubmit = || {
        env.submit(
            "shop",
            (0..5)
                .map(|i| task(&format!("first-ok-{i}"), "ok", "hello"))
                .collect(),
        )
    };
    resubmit();

    env.submit(
        "shop",
        (0..HOLD_TASKS)
            .map(|i| task(&format!("hold-{i}"), "hold", ""))
            .collect(),
    );
    // Stop a running task, then another one that has not ended (queued behind it, or
    // running), through the API.
    let admin = serve.client("tok-admin");
    let mut stopped = Vec::new();
    let deadline = Instant::now() + WAIT;
    for status in ["running", "queued,running"] {
        let before = stopped.len();
        while stopped.len() == before {
            assert!(Instant::now() < deadline, "no {status} task to stop");
            let page = block(admin.list(&[
                ("status".into(), status.into()),
                ("function".into(), "hold".into()),
            ]))
            .unwrap();
            match page.tasks.iter().find(|t| !stopped.contains(&t.id)) {
                Some(t) if block(admin.stop(&t.id, None)).is_ok() => stopped.push(t.id.clone()),
                _ => std::thread::sleep(Duration::from_millis(300)),
            }
        }
    }

    // Counted and scraped before a scheduler crashes: it may be the one that ran them.
    // (A function's series exist from the scheduler's start, at 0: wait for a count.)
    let deadline = Instant::now() + WAIT;
    // That includes the failures: the flaky tasks' retries come back from the delay topic
    // within a fetch (100 ms), so the process that ran their first attempts often runs
    // the second as well.
    for series in [
        r#"tidewater_task_attempts_total{result="stopped"}"#,
        r#"tidewater_tasks_completed_total{outcome="stopped"}"#,
        r#"tidewater_tasks_dead_lettered_total{function="hold"}"#,
        r#"tidewater_task_attempts_total{result="failure"}"#,
        r#"tidewater_task_retries_total"#,
        r#"tidewater_tasks_completed_total{outcome="failed"}"#,
        r#"tidewater_tasks_dead_lettered_total{function="flaky"}"#,
    ] {
        while prom.query(&format!("{series} > 0")).is_empty() {
            assert!(
                Instant::now() < deadline,
                "stopped {stopped:?}, but {series} is not scraped above 0"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    // A scheduler process under the supervisor crashes and is restarted.
    let children = {
        let deadline = Instant::now() + WAIT;
        loop {
            let c = children_of(supervisor.pid());
            if c.len() == 2 {
                break c;
            }
            assert!(
                Instant::now() < deadline,
                "the supervisor runs {} schedulers",
                c.len()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // The programs it runs (each in a process group of its own) outlive it: end them too.
    let crashed = children[0];
    let orphans = children_of(crashed);
    for pid in std::iter::once(crashed).chain(orphans) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }

    // Every metric (but the exceptions) and every kind of event has been scraped.
    let expected: BTreeSet<&str> = m::ALL
        .iter()
        .copied()
        .filter(|n| !NOT_IN_THIS_WORKLOAD.iter().any(|(e, _)| e == n))
        .collect();
    let deadline = Instant::now() + WAIT;
    let mut resubmitted = Instant::now();
    let (missing_metrics, missing_series) = loop {
        let names = prom.names();
        let missing_metrics: Vec<&str> = expected
            .iter()
            .copied()
            .filter(|n| !names.contains(*n) && !names.contains(&format!("{n}_bucket")))
            .collect();
        let missing_series: Vec<&str> = WORKLOAD_SERIES
            .iter()
            .copied()
            .filter(|s| {
                prom.query(&format!("max_over_time({s}[1h]) > 0"))
                    .is_empty()
            })
            .collect();
        if (missing_metrics.is_empty() && missing_series.is_empty()) || Instant::now() > deadline {
            break (missing_metrics, missing_series);
        }
        // Only the scheduler that ran a task knows it finished: if the partition moved
        // (the group was still forming), the copy ran again there. Its next copy is
        // skipped.
        if missing_metrics.contains(&m::SKIPPED) && resubmitted.elapsed() > Duration::from_secs(10)
        {
            resubmit();
            resubmitted = Instant::now();
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let targets = prom.api("/api/v1/targets", &[]).unwrap();
    let down: Vec<String> = targets["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["health"] != "up")
        .map(|t| format!("{} ({})", t["scrapeUrl"], t["lastError"]))
        .collect();
    assert!(
        missing_metrics.is_empty() && missing_series.is_empty(),
        "never scraped: metrics {missing_metrics:?}, series {missing_series:?}; targets not up: {down:?}"
    );
    for (name, why) in NOT_IN_THIS_WORKLOAD {
        eprintln!("not expected in this workload: {name}: {why}");
    }
    // A series' first scrape already holds its first events, so rates (and the
    // percentiles made from them) need events after it: a second wave, while the slow
    // tasks keep completing.
    submit_wave(&env, "again");
    let done = env.outcome_ids(&env.topic("done"), 2 * OK_TASKS, WAIT);
    assert_eq!(done.len(), 2 * OK_TASKS, "successes of both waves");
    std::thread::sleep(SCRAPE * 5);
    let t1 = now_s();

    // Every query of every dashboard, as Grafana sends it.
    let mut failures = Vec::new();
    let mut evaluated = 0;
    for (file, d) in dashboards() {
        let vars = variables(&d);
        for v in d["templating"]["list"].as_array().unwrap() {
            if v["type"] != "query" {
                continue;
            }
            let q = v["query"]["query"]
                .as_str()
                .unwrap_or_else(|| v["query"].as_str().unwrap());
            let q = substitute(q, &vars, t1 - t0);
            evaluated += 1;
            match label_values(&prom, &q, t0, t1) {
                Ok(values) if values.is_empty() => failures.push(format!(
                    "{file}: variable {}: `{q}` has no values",
                    v["name"]
                )),
                Ok(_) => {}
                Err(e) => failures.push(format!("{file}: variable {}: `{q}`: {e}", v["name"])),
            }
        }
        for p in panels(&d) {
            let Some(targets) = p["targets"].as_array() else {
                continue;
            };
            for t in targets {
                let expr = substitute(t["expr"].as_str().unwrap(), &vars, t1 - t0);
                evaluated += 1;
                let (start, end) = (format!("{t0:.3}"), format!("{t1:.3}"));
                let result = prom.api(
                    "/api/v1/query_range",
                    &[
                        ("query", &expr),
                        ("start", &start),
                        ("end", &end),
                        ("step", STEP),
                    ],
                );
                let title = p["title"].as_str().unwrap_or_default();
                match result {
                    Err(e) => failures.push(format!("{file}: {title:?}: `{expr}`: {e}")),
                    Ok(data) => {
                        let series = data["result"].as_array().cloned().unwrap_or_default();
                        let has_value = series.iter().any(|s| {
                            s["values"].as_array().is_some_and(|vs| {
                                vs.iter().any(|v| {
                                    v[1].as_str()
                                        .is_some_and(|x| x.parse::<f64>().is_ok_and(f64::is_finite))
                                })
                            })
                        });
                        if !has_value {
                            failures.push(format!(
                                "{file}: {title:?}: `{expr}` returned {} series and no number",
                                series.len()
                            ));
                        }
                    }
                }
            }
        }
    }

    // The alert rules, loaded by the same Prometheus, evaluate against the real series.
    let rules = prom.api("/api/v1/rules", &[]).unwrap();
    let mut rule_count = 0;
    for g in rules["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            rule_count += 1;
            if r["health"] != "ok" {
                failures.push(format!(
                    "alert {}: {} {}",
                    r["name"], r["health"], r["lastError"]
                ));
            }
        }
    }
    assert!(rule_count >= 9, "alert rules loaded: {rule_count}");

    // SIGTERM: the schedulers cancel running attempts (and their processes) and drain.
    supervisor.terminate(Duration::from_secs(60));
    scheduler.terminate(Duration::from_secs(60));
    drop(serve);
    eprintln!(
        "{evaluated} dashboard queries and {rule_count} alert rules evaluated against {} s of scrapes; test took {:?}",
        (t1 - t0).round(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} failing:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Tasks that succeed and tasks that fail after a retry, with ids starting `wave`.
fn submit_wave(env: &TestEnv, wave: &str) {
    let mut tasks: Vec<_> = (0..OK_TASKS)
        .map(|i| task(&format!("{wave}-ok-{i}"), "ok", "hello"))
        .collect();
    tasks.extend((0..FLAKY_TASKS).map(|i| task(&format!("{wave}-flaky-{i}"), "flaky", "")));
    env.submit("shop", tasks);
}

/// Template variables with the value Grafana uses by default: "All" (their `allValue`).
fn variables(d: &Value) -> BTreeMap<String, String> {
    d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            assert_eq!(v["includeAll"], true, "variable {} without All", v["name"]);
            (
                v["name"].as_str().unwrap().to_string(),
                v["allValue"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The query with the dashboard's variables and Grafana's interval variables replaced;
/// any `$` left over is a variable the dashboard does not define.
fn substitute(q: &str, vars: &BTreeMap<String, String>, range_s: f64) -> String {
    let range = format!("{}s", range_s.ceil() as u64);
    let mut out = q
        .replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__interval", STEP)
        .replace("$__range", &range);
    for (name, value) in vars {
        out = out
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    assert!(!out.contains('$'), "unknown variable in `{q}`");
    out
}

/// Grafana's `label_values(metric, label)` and `label_values(label)`, through the series
/// API over the test's time range.
fn label_values(prom: &Prometheus, q: &str, t0: f64, t1: f64) -> Result<BTreeSet<String>, String> {
    let inner = q
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("not a label_values() query: {q}"))?;
    let (start, end) = (format!("{t0:.3}"), format!("{t1:.3}"));
    let (selector, label) = match inner.rsplit_once(',') {
        Some((s, l)) => (s.trim(), l.trim()),
        None => ("", inner.trim()),
    };
    let data = if selector.is_empty() {
        prom.api(
            &format!("/api/v1/label/{label}/values"),
            &[("start", &start), ("end", &end)],
        )?
    } else {
        prom.api(
            "/api/v1/series",
            &[("match[]", selector), ("start", &start), ("end", &end)],
        )?
    };
    Ok(data
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| {
            if selector.is_empty() {
                v.as_str().map(String::from)
            } else {
                v[label].as_str().map(String::from)
            }
        })
        .collect())
}
