//! Redrive on a real broker, with a real scheduler and `tidewater serve`: a function that
//! fails until a marker file exists dead-letters its tasks; once "fixed", a redrive from
//! the CLI and from the API sends them through again, keeping ids and payloads, and
//! their new runs show next to the old ones. The same redrive id never runs a task
//! twice, a stopped task runs when redriven, and a tenant's token sees only its tenant.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::serve::{Serve, block};
use common::{TestEnv, task};
use tidewater::api::{RedriveAction, RedriveReport, RedriveRequest, SkipReason};
use tidewater::client::ApiClient;
use tidewater::codec::TaskStatus;
use tidewater::names::headers as h;
use tidewater::store::model::TaskDetail;

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
    let env = TestEnv::with_partitions("redrive", &body(&marker), 1);
    env.init_topics();
    let _scheduler = env.start_scheduler(0);
    let serve = Serve::start(&env, &env.dir.path().join("index.db"), 0);
    let acme = serve.client("tok-acme");
    let globex = serve.client("tok-globex");
    let admin = serve.client("tok-admin");

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
        wait_for(id, || status_is(&acme, id, TaskStatus::Failed));
    }
    wait_for("g-1", || status_is(&admin, "g-1", TaskStatus::Failed));

    let cli = |args: &[&str]| {
        let mut all = vec![
            "tasks", "redrive", "--api", &serve.url, "--token", "tok-acme",
        ];
        all.extend_from_slice(args);
        let out = env.cli(&all);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reports: Vec<RedriveReport> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
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
    assert_eq!(detail(&acme, "order-1").task.status, TaskStatus::Failed);

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
        wait_for(id, || status_is(&acme, id, TaskStatus::Succeeded));
    }

    // The new run sits beside the old one; the record kept its payload and headers.
    let d = detail(&acme, "order-1");
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
        status_is(&acme, "order-9", TaskStatus::Failed)
    });
    let fix2 = || RedriveRequest {
        redrive_id: Some("fix-2".into()),
        ..ids(&["order-9"])
    };
    let first = redrive(&acme, fix2());
    assert_eq!(first.tasks[0].action, RedriveAction::Submitted, "{first:?}");
    let again = redrive(&acme, fix2());
    assert_eq!(
        again.tasks[0].reason,
        Some(SkipReason::AlreadyRedriven),
        "{again:?}"
    );
    wait_for("the second failure", || {
        status_is(&acme, "order-9", TaskStatus::Failed)
            .filter(|d| d.task.redrive_id.as_deref() == Some("fix-2"))
    });
    let later = redrive(&acme, fix2());
    assert_eq!(
        later.tasks[0].reason,
        Some(SkipReason::AlreadyRedriven),
        "{later:?}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let d = detail(&acme, "order-9");
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
    let r = redrive(&globex, ids(&["order-1"]));
    assert_eq!(r.tasks[0].reason, Some(SkipReason::NotFound));
    let r = redrive(
        &acme,
        RedriveRequest {
            filter: Some([("tenant".to_string(), "globex".to_string())].into()),
            dry_run: true,
            ..RedriveRequest::default()
        },
    );
    assert!(r.tasks.is_empty(), "{r:?}");
    let r = redrive(
        &admin,
        RedriveRequest {
            tenant: Some("globex".into()),
            dry_run: true,
            ..ids(&["g-1"])
        },
    );
    assert_eq!(r.tasks[0].action, RedriveAction::WouldSubmit, "{r:?}");

    // Not failed: left alone.
    let r = redrive(&acme, ids(&["order-2", "nope"]));
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
        status_is(&acme, "later-1", TaskStatus::Queued)
    });
    block(acme.stop("later-1", None)).unwrap();
    wait_for("later-1 stopped", || {
        status_is(&acme, "later-1", TaskStatus::Stopped)
    });
    let r = redrive(&acme, ids(&["later-1"]));
    assert_eq!(r.tasks[0].action, RedriveAction::Submitted, "{r:?}");
    let d = wait_for("later-1 succeeded", || {
        status_is(&acme, "later-1", TaskStatus::Succeeded)
    });
    assert_eq!(d.attempt_history.last().map(|a| a.run), Some(1));
    serve.stop();
}
