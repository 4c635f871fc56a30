//! Redrive on a real broker, with a real scheduler and `tidewater serve`: a function that
//! fails until a marker file exists dead-letters its tasks; once "fixed", a redrive from
//! the CLI and from the API sends them through again, keeping ids and payloads, and
//! their new runs show next to the old ones. The same redrive id never runs a task
//! twice, a stopped task runs when redriven, and a tenant's token sees only its tenant.
//! A redrive can also read its tasks from a dead-letter topic over an offset or time
//! range: exactly the tasks whose failures lie in the range run again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::serve::{Serve, block};
use common::{SchedulerProcess, TestEnv, reader_on, task};
use rdkafka::consumer::Consumer;
use rdkafka::message::{Headers, Message};
use reqwest::StatusCode;
use tidewater::api::redrive::DeadLetterRange;
use tidewater::api::{RedriveAction, RedriveReport, RedriveRequest, SkipReason};
use tidewater::client::{ApiClient, ClientError};
use tidewater::codec::TaskStatus;
use tidewater::names::headers as h;
use tidewater::store::model::{TaskDetail, rfc3339};

const WAIT: Duration = Duration::from_secs(90);

fn body(marker: &std::path::Path) -> String {
    format!(
        r#"
[scheduler]
commit_interval = "50ms"
[indexer]
batch_wait = "50ms"
[api]
tokens = [
  {{ token = "tok-acme", tenant = "acme" }},
  {{ token = "tok-globex", tenant = "globex" }},
  {{ token = "tok-admin", admin = true }},
]
[tenants.acme.functions.flaky]
executor = {{ type = "command", program = "sh", args = ["-c", "if [ -e '{m}' ]; then printf 'fixed:'; cat; else echo \"broken on attempt $TW_ATTEMPT\" >&2; exit 1; fi"] }}
max_attempts = 2
backoff = "100ms"
[tenants.globex.functions.other]
executor = {{ type = "inprocess", handler = "fail" }}
max_attempts = 1
"#,
        m = marker.display()
    )
}

/// A scheduler and `tidewater serve` on a topic prefix of their own (one partition per
/// topic), with a client for each token of [`body`].
struct World {
    acme: ApiClient,
    globex: ApiClient,
    admin: ApiClient,
    serve: Serve,
    _scheduler: SchedulerProcess,
    env: TestEnv,
}

impl World {
    fn start(name: &str, body: &str) -> Self {
        let env = TestEnv::with_partitions(name, body, 1);
        env.init_topics();
        let scheduler = env.start_scheduler(0);
        let serve = Serve::start(&env, &env.dir.path().join("index.db"), 0);
        Self {
            acme: serve.client("tok-acme"),
            globex: serve.client("tok-globex"),
            admin: serve.client("tok-admin"),
            serve,
            _scheduler: scheduler,
            env,
        }
    }

    /// `tidewater tasks redrive <args…>` against this world's API, as tenant acme.
    fn redrive_cli(&self, args: &[&str]) -> std::process::Output {
        let base = [
            "tasks",
            "redrive",
            "--api",
            &self.serve.url,
            "--token",
            "tok-acme",
        ];
        self.env.cli(&[&base[..], args].concat())
    }
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn detail(c: &ApiClient, id: &str) -> TaskDetail {
    block(c.get(id, None)).unwrap()
}

fn status_is(c: &ApiClient, id: &str, want: TaskStatus) -> Option<TaskDetail> {
    block(c.get(id, None))
        .ok()
        .filter(|d| d.task.status == want)
}

fn redrive(c: &ApiClient, req: RedriveRequest) -> RedriveReport {
    block(c.redrive(&req)).unwrap()
}

fn ids(ids: &[&str]) -> RedriveRequest {
    RedriveRequest {
        ids: Some(ids.iter().map(|s| s.to_string()).collect()),
        ..RedriveRequest::default()
    }
}

#[test]
fn dead_letters_are_redriven_from_the_cli_and_the_api_once_per_redrive() {
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("fixed");
    let w = World::start("redrive", &body(&marker));
    let (acme, globex, admin, env) = (&w.acme, &w.globex, &w.admin, &w.env);

    let names: Vec<String> = (1..=5).map(|i| format!("order-{i}")).collect();
    env.submit(
        "acme",
        names
            .iter()
            .map(|id| {
                let mut t = task(id, "flaky", &format!("payload of {id}"));
                t.headers.insert("origin".into(), "web".into());
                t
            })
            .collect(),
    );
    env.submit("globex", vec![task("g-1", "other", "x")]);
    for id in &names {
        wait_for(id, || status_is(acme, id, TaskStatus::Failed));
    }
    wait_for("g-1", || status_is(admin, "g-1", TaskStatus::Failed));

    let cli = |args: &[&str]| {
        let out = w.redrive_cli(args);
        let reports: Vec<RedriveReport> = common::json_lines(&out);
        (reports, String::from_utf8_lossy(&out.stderr).into_owned())
    };

    // A dry run shows what would go and changes nothing.
    let (dry, _) = cli(&["--function", "flaky", "--dry-run", "-o", "json"]);
    let would: usize = dry.iter().map(|r| r.submitted as usize).sum();
    assert_eq!(would, 5, "{dry:?}");
    assert!(
        dry[0]
            .tasks
            .iter()
            .all(|t| t.action == RedriveAction::WouldSubmit)
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(detail(acme, "order-1").task.status, TaskStatus::Failed);

    // Fixed: the CLI redrives page by page, with progress.
    std::fs::write(&marker, b"").unwrap();
    let (pages, progress) = cli(&[
        "--function",
        "flaky",
        "--status",
        "failed",
        "--redrive-id",
        "fix-1",
        "--page-size",
        "2",
        "-o",
        "json",
    ]);
    assert_eq!(pages.len(), 3, "5 tasks in pages of 2: {progress}");
    assert_eq!(pages.iter().map(|r| r.submitted).sum::<u32>(), 5);
    assert!(progress.contains("page 3"), "{progress}");
    for id in &names {
        wait_for(id, || status_is(acme, id, TaskStatus::Succeeded));
    }

    // The new run sits beside the old one; the record kept its payload and headers.
    let d = detail(acme, "order-1");
    assert_eq!(d.task.redrive_id.as_deref(), Some("fix-1"));
    let runs: Vec<(u32, i32, Option<TaskStatus>)> = d
        .attempt_history
        .iter()
        .map(|a| (a.run, a.attempt, a.result))
        .collect();
    assert_eq!(
        runs,
        vec![
            (0, 1, Some(TaskStatus::Retrying)),
            (0, 2, Some(TaskStatus::Failed)),
            (1, 1, Some(TaskStatus::Succeeded)),
        ],
        "{d:#?}"
    );
    let logs = block(acme.logs("order-1", None)).unwrap();
    assert!(
        logs.logs
            .iter()
            .any(|l| l.redrive_id.is_none() && l.data.contains("broken"))
    );
    assert!(
        logs.logs
            .iter()
            .any(|l| l.redrive_id.as_deref() == Some("fix-1")
                && l.data == "fixed:payload of order-1")
    );
    let rec = block(acme.record("order-1", None)).unwrap();
    assert_eq!(rec.payload.text.as_deref(), Some("payload of order-1"));
    let th = rec.task.unwrap().headers;
    assert_eq!(th["origin"], "web");
    assert_eq!(th[h::REDRIVE_ID], "fix-1");
    assert_eq!(th[h::REDRIVE_BY], "acme");

    // Broken again: a redrive by the API fails again, and the same redrive id, retried
    // at once and later, does not run the task again.
    std::fs::remove_file(&marker).unwrap();
    env.submit("acme", vec![task("order-9", "flaky", "nine")]);
    wait_for("order-9 failed", || {
        status_is(acme, "order-9", TaskStatus::Failed)
    });
    let fix2 = || RedriveRequest {
        redrive_id: Some("fix-2".into()),
        ..ids(&["order-9"])
    };
    let first = redrive(acme, fix2());
    assert_eq!(first.tasks[0].action, RedriveAction::Submitted, "{first:?}");
    let again = redrive(acme, fix2());
    assert_eq!(
        again.tasks[0].reason,
        Some(SkipReason::AlreadyRedriven),
        "{again:?}"
    );
    wait_for("the second failure", || {
        status_is(acme, "order-9", TaskStatus::Failed)
            .filter(|d| d.task.redrive_id.as_deref() == Some("fix-2"))
    });
    let later = redrive(acme, fix2());
    assert_eq!(
        later.tasks[0].reason,
        Some(SkipReason::AlreadyRedriven),
        "{later:?}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let d = detail(acme, "order-9");
    assert_eq!(
        d.attempt_history.iter().map(|a| a.run).max(),
        Some(1),
        "{d:#?}"
    );
    assert_eq!(
        d.attempt_history.len(),
        4,
        "two attempts in each of two runs"
    );

    // Tenants: another tenant's task is not there for this token, nor in a filter.
    let r = redrive(globex, ids(&["order-1"]));
    assert_eq!(r.tasks[0].reason, Some(SkipReason::NotFound));
    let r = redrive(
        acme,
        RedriveRequest {
            filter: Some([("tenant".to_string(), "globex".to_string())].into()),
            dry_run: true,
            ..RedriveRequest::default()
        },
    );
    assert!(r.tasks.is_empty(), "{r:?}");
    let r = redrive(
        admin,
        RedriveRequest {
            tenant: Some("globex".into()),
            dry_run: true,
            ..ids(&["g-1"])
        },
    );
    assert_eq!(r.tasks[0].action, RedriveAction::WouldSubmit, "{r:?}");

    // Not failed: left alone.
    let r = redrive(acme, ids(&["order-2", "nope"]));
    assert_eq!(r.tasks.len(), 2);
    assert!(
        r.tasks
            .iter()
            .any(|t| t.reason == Some(SkipReason::NotRedrivable))
    );
    assert!(
        r.tasks
            .iter()
            .any(|t| t.reason == Some(SkipReason::NotFound))
    );

    // A stopped task runs when redriven after its stop.
    std::fs::write(&marker, b"").unwrap();
    let mut delayed = task("later-1", "flaky", "late");
    delayed.not_before = Some(tidewater::clock::now_ms() + 3000);
    env.submit("acme", vec![delayed]);
    wait_for("later-1 queued", || {
        status_is(acme, "later-1", TaskStatus::Queued)
    });
    block(acme.stop("later-1", None)).unwrap();
    wait_for("later-1 stopped", || {
        status_is(acme, "later-1", TaskStatus::Stopped)
    });
    let r = redrive(acme, ids(&["later-1"]));
    assert_eq!(r.tasks[0].action, RedriveAction::Submitted, "{r:?}");
    let d = wait_for("later-1 succeeded", || {
        status_is(acme, "later-1", TaskStatus::Succeeded)
    });
    assert_eq!(d.attempt_history.last().map(|a| a.run), Some(1));
    w.serve.stop();
}

/// One record of a dead-letter topic, as a person looking at the topic sees it.
#[derive(Debug, Clone)]
struct DeadLetter {
    offset: i64,
    timestamp: i64,
    tenant: String,
    task_id: String,
}

/// Every committed record of `topic` (one partition), with its offset and time.
fn dead_letters(env: &TestEnv, topic: &str, want: usize) -> Vec<DeadLetter> {
    let consumer = reader_on(&env.bootstrap, topic);
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT;
    while out.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let header = |name: &str| {
                m.headers()
                    .and_then(|hs| hs.iter().find(|hd| hd.key == name))
                    .and_then(|hd| hd.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default()
            };
            out.push(DeadLetter {
                offset: m.offset(),
                timestamp: m.timestamp().to_millis().unwrap(),
                tenant: header(h::TENANT),
                task_id: header(h::TASK_ID),
            });
        }
    }
    consumer.unassign().unwrap();
    assert_eq!(out.len(), want, "{out:?}");
    out
}

fn ids_of(reports: &[RedriveReport], action: RedriveAction) -> BTreeSet<String> {
    reports
        .iter()
        .flat_map(|r| &r.tasks)
        .filter(|t| t.action == action)
        .map(|t| t.id.clone())
        .collect()
}

fn api_error(r: Result<RedriveReport, ClientError>) -> (StatusCode, Option<String>, String) {
    match r {
        Err(ClientError::Api {
            status,
            parameter,
            message,
            ..
        }) => (status, parameter, message),
        other => panic!("expected an error answer, got {other:?}"),
    }
}

#[test]
fn a_dead_letter_range_by_offsets_or_by_time_redrives_exactly_its_tasks() {
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("fixed");
    // Both tenants' failures share one dead-letter topic.
    let shared = body(&marker)
        .replace("max_attempts = 2", "max_attempts = 1")
        .replace(
            "[tenants.acme.functions.flaky]",
            "[tenants.acme]\ndead_letter = \"{prefix}.dead\"\n[tenants.acme.functions.flaky]",
        )
        .replace(
            "[tenants.globex.functions.other]",
            "[tenants.globex]\ndead_letter = \"{prefix}.dead\"\n[tenants.globex.functions.other]",
        );
    let w = World::start("redrive-dl", &shared);
    let (acme, globex, admin, env) = (&w.acme, &w.globex, &w.admin, &w.env);
    let topic = env.topic("dead");

    // Two batches of failures, the second after `between`.
    let first: Vec<String> = (1..=4).map(|i| format!("dl-{i}")).collect();
    let second: Vec<String> = (5..=7).map(|i| format!("dl-{i}")).collect();
    let fail_all = |ids: &[String]| {
        env.submit(
            "acme",
            ids.iter()
                .map(|id| task(id, "flaky", &format!("payload of {id}")))
                .collect(),
        );
        for id in ids {
            wait_for(id, || status_is(acme, id, TaskStatus::Failed));
        }
    };
    fail_all(&first);
    env.submit("globex", vec![task("g-1", "other", "x")]);
    wait_for("g-1", || status_is(admin, "g-1", TaskStatus::Failed));
    std::thread::sleep(Duration::from_millis(1500));
    let between = tidewater::clock::now_ms();
    std::thread::sleep(Duration::from_millis(500));
    fail_all(&second);
    let dlq = dead_letters(env, &topic, 8);
    assert!(dlq.iter().all(|d| !d.task_id.is_empty()), "{dlq:?}");

    // An offset range: the second to the fifth record, whatever they are.
    let (from, to) = (dlq[1].offset, dlq[4].offset);
    let in_range: BTreeSet<String> = dlq[1..=4]
        .iter()
        .filter(|d| d.tenant == "acme")
        .map(|d| d.task_id.clone())
        .collect();
    let range = format!("0:{from}-{to}");
    let cli = |args: &[&str]| {
        w.redrive_cli(&[&["--dead-letter-topic", &topic, "-o", "json"], args].concat())
    };
    let reports = |out: &std::process::Output| -> Vec<RedriveReport> { common::json_lines(out) };

    // A dry run names exactly the range's tasks of this tenant, and runs nothing.
    let dry = reports(&cli(&["--offsets", &range, "--dry-run"]));
    assert_eq!(
        ids_of(&dry, RedriveAction::WouldSubmit),
        in_range,
        "{dry:?}"
    );
    let dl = dry[0].dead_letter.as_ref().unwrap();
    let others = dlq[1..=4].iter().filter(|d| d.tenant != "acme").count();
    assert_eq!((dl.records, dl.passed_over), (4, others as u32), "{dl:?}");

    // Fixed: the same range, two records a page, runs exactly those tasks again.
    std::fs::write(&marker, b"").unwrap();
    let run = cli(&[
        "--offsets",
        &range,
        "--redrive-id",
        "dl-fix-1",
        "--page-size",
        "2",
    ]);
    let pages = reports(&run);
    assert_eq!(pages.len(), 2, "4 records in pages of 2: {pages:?}");
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("read 2 records of"),
        "progress names what was read"
    );
    assert_eq!(ids_of(&pages, RedriveAction::Submitted), in_range);
    for id in &in_range {
        let d = wait_for(id, || status_is(acme, id, TaskStatus::Succeeded));
        assert_eq!(d.task.redrive_id.as_deref(), Some("dl-fix-1"));
    }
    for d in dlq.iter().filter(|d| d.tenant == "acme") {
        if !in_range.contains(&d.task_id) {
            assert_eq!(
                detail(acme, &d.task_id).task.status,
                TaskStatus::Failed,
                "{} is outside the range",
                d.task_id
            );
        }
    }

    // The same redrive again submits nothing (each task is done, or already redriven by
    // it), and nothing runs twice.
    let again = reports(&cli(&["--offsets", &range, "--redrive-id", "dl-fix-1"]));
    assert!(
        ids_of(&again, RedriveAction::Submitted).is_empty(),
        "{again:?}"
    );
    assert_eq!(ids_of(&again, RedriveAction::Skipped), in_range);
    assert!(
        again.iter().flat_map(|r| &r.tasks).all(|t| matches!(
            t.reason,
            Some(SkipReason::AlreadyRedriven | SkipReason::NotRedrivable)
        )),
        "{again:?}"
    );

    // A time range through the API: the failures from `between` on.
    let by_time = RedriveRequest {
        redrive_id: Some("dl-fix-2".into()),
        dead_letter: Some(DeadLetterRange {
            topic: topic.clone(),
            from_time: Some(rfc3339(between)),
            ..DeadLetterRange::default()
        }),
        ..RedriveRequest::default()
    };
    let late: BTreeSet<String> = dlq
        .iter()
        .filter(|d| d.timestamp >= between)
        .map(|d| d.task_id.clone())
        .collect();
    assert_eq!(late, second.iter().cloned().collect());
    let dry = redrive(
        acme,
        RedriveRequest {
            dry_run: true,
            ..by_time.clone()
        },
    );
    let r = redrive(acme, by_time.clone());
    let went = ids_of(std::slice::from_ref(&r), RedriveAction::Submitted);
    let at_once = redrive(acme, by_time.clone());
    assert!(
        ids_of(std::slice::from_ref(&at_once), RedriveAction::Submitted).is_empty(),
        "the same request at once submits nothing again: {at_once:?}"
    );
    assert_eq!(
        ids_of(std::slice::from_ref(&dry), RedriveAction::WouldSubmit),
        went
    );
    assert_eq!(went, &late - &in_range, "{r:?}");
    for id in &late {
        wait_for(id, || status_is(acme, id, TaskStatus::Succeeded));
    }
    for d in &dlq {
        if d.tenant == "acme" && !in_range.contains(&d.task_id) && !late.contains(&d.task_id) {
            assert_eq!(detail(acme, &d.task_id).task.status, TaskStatus::Failed);
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    for id in went.iter().chain(&in_range) {
        let d = detail(acme, id);
        assert_eq!(
            d.attempt_history.iter().map(|a| a.run).collect::<Vec<_>>(),
            vec![0, 1],
            "{id} ran once more: {d:#?}"
        );
    }

    // Tenants: globex sees only its own record of the shared topic; an admin sees all.
    let whole = |dry_run: bool| RedriveRequest {
        dry_run,
        dead_letter: Some(DeadLetterRange {
            topic: topic.clone(),
            ..DeadLetterRange::default()
        }),
        ..RedriveRequest::default()
    };
    let g = redrive(globex, whole(true));
    assert_eq!(
        g.tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        vec!["g-1"]
    );
    assert_eq!(g.dead_letter.unwrap().passed_over, 7);
    let a = redrive(admin, whole(true));
    assert_eq!(a.tasks.len(), 8, "{a:?}");
    let (status, _, _) = api_error(block(acme.redrive(&RedriveRequest {
        tenant: Some("globex".into()),
        ..whole(true)
    })));
    assert_eq!(status, StatusCode::NOT_FOUND, "acme's token names globex");

    // What cannot be read answers clearly.
    let (status, parameter, message) = api_error(block(acme.redrive(&RedriveRequest {
        dead_letter: Some(DeadLetterRange {
            topic: env.queue("acme"),
            ..DeadLetterRange::default()
        }),
        ..RedriveRequest::default()
    })));
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(parameter.as_deref(), Some("dead_letter.topic"));
    assert!(
        message.contains(&topic),
        "names the topics it may read: {message}"
    );
    let (status, parameter, _) = api_error(block(acme.redrive(&RedriveRequest {
        dead_letter: Some(DeadLetterRange {
            topic: topic.clone(),
            partitions: Some([("5".to_string(), Default::default())].into()),
            ..DeadLetterRange::default()
        }),
        ..RedriveRequest::default()
    })));
    assert_eq!(
        (status, parameter.as_deref()),
        (StatusCode::NOT_FOUND, Some("dead_letter.partitions"))
    );
    let (status, parameter, _) = api_error(block(acme.redrive(&RedriveRequest {
        dead_letter: Some(DeadLetterRange {
            topic: topic.clone(),
            from_time: Some("last tuesday".into()),
            ..DeadLetterRange::default()
        }),
        ..RedriveRequest::default()
    })));
    assert_eq!(
        (status, parameter.as_deref()),
        (StatusCode::BAD_REQUEST, Some("dead_letter.from_time"))
    );
    let inverted = cli(&["--offsets", &format!("0:{to}-{from}")]);
    assert!(!inverted.status.success());
    assert!(
        String::from_utf8_lossy(&inverted.stderr).contains("is after the last"),
        "{}",
        String::from_utf8_lossy(&inverted.stderr)
    );
    let unknown = w.redrive_cli(&["--dead-letter-topic", "nope"]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("is not a dead-letter topic"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    w.serve.stop();
}
