//! Tests of the store through its writer and reader, on a file in a temporary folder:
//! arrival orders, retention, paging, per-minute counts and query plans. The merge
//! alone is tested in `row`.

use super::columns::{rank_bytes, rank_from_bytes};
use super::model::TaskView;
use super::query::{self, TaskFilter};
use super::*;
use crate::codec::{FailureReason, Source, StatusEvent, TaskStatus};
use crate::types::TopicPartition;

pub(super) fn ev(id: &str, status: TaskStatus, attempt: i32, at: i64) -> StatusEvent {
    StatusEvent {
        task_id: id.into(),
        tenant: "acme".into(),
        function: "f".into(),
        status,
        attempt,
        at,
        submitted_at: 100,
        reason: (status == TaskStatus::Failed).then_some(FailureReason::Executor),
        error: matches!(status, TaskStatus::Retrying | TaskStatus::Failed)
            .then(|| format!("error of attempt {attempt}")),
        source: Source {
            topic: "tw.q.acme".into(),
            partition: 1,
            offset: 7,
        },
        scheduler_id: "s1".into(),
    }
}

pub(super) fn queued(id: &str, submitted_at: i64) -> QueuedTask {
    QueuedTask {
        tenant: "acme".into(),
        id: id.into(),
        function: "f".into(),
        submitted_at,
        topic: "tw.q.acme".into(),
        partition: 1,
        offset: 7,
        run: Run::default(),
        redrive_by: None,
    }
}

fn lifecycle() -> Vec<Ingest> {
    vec![
        Ingest::Queued(queued("t", 100)),
        Ingest::Status(ev("t", TaskStatus::Running, 1, 110), Run::default()),
        Ingest::Status(ev("t", TaskStatus::Retrying, 1, 120), Run::default()),
        Ingest::Status(ev("t", TaskStatus::Running, 2, 130), Run::default()),
        Ingest::Status(ev("t", TaskStatus::Failed, 2, 140), Run::default()),
    ]
}

fn store() -> (tempfile::TempDir, Writer, Reader) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let w = Writer::open(&path).unwrap();
    let r = Reader::open(&path).unwrap();
    (dir, w, r)
}

fn get(r: &Reader, id: &str) -> TaskView {
    match r.get(Some("acme"), id).unwrap() {
        Lookup::Found(t) => *t,
        other => panic!("{other:?}"),
    }
}

#[test]
fn ranks_follow_the_lifecycle() {
    let r = |s, a, at| status_rank(s, a, at);
    assert!(r(TaskStatus::Queued, 0, 999) < r(TaskStatus::Running, 1, 1));
    assert!(r(TaskStatus::Running, 1, 5) < r(TaskStatus::Retrying, 1, 5));
    assert!(r(TaskStatus::Retrying, 1, 9) < r(TaskStatus::Running, 2, 1));
    assert!(r(TaskStatus::Running, 9, 9) < r(TaskStatus::Succeeded, 1, 1));
    assert!(r(TaskStatus::Succeeded, 1, 1) < r(TaskStatus::Failed, 1, 2));
    for a in [
        r(TaskStatus::Running, 3, -5),
        r(TaskStatus::Failed, 0, i64::MAX),
    ] {
        let b = rank_bytes(a);
        assert_eq!(rank_from_bytes(&b), Some(a));
    }
    let mut pairs = [
        r(TaskStatus::Queued, 0, -1),
        r(TaskStatus::Running, 1, 0),
        r(TaskStatus::Running, 2, -3),
        r(TaskStatus::Succeeded, 2, 100),
    ];
    let by_bytes = {
        let mut v = pairs.to_vec();
        v.sort_by_key(|k| rank_bytes(*k));
        v
    };
    pairs.sort();
    assert_eq!(by_bytes, pairs.to_vec());
}

#[test]
fn every_arrival_order_gives_the_same_task() {
    let items = lifecycle();
    let mut answers = Vec::new();
    // All rotations and the reverse, one record per batch and all in one batch.
    let mut orders: Vec<Vec<Ingest>> = (0..items.len())
        .map(|k| {
            let mut v = items.clone();
            v.rotate_left(k);
            v
        })
        .collect();
    orders.push(items.iter().rev().cloned().collect());
    for order in orders {
        for one_batch in [true, false] {
            let (_d, mut w, r) = store();
            if one_batch {
                w.apply(&order, &[]).unwrap();
            } else {
                for item in &order {
                    w.apply(std::slice::from_ref(item), &[]).unwrap();
                }
            }
            let t = get(&r, "t");
            let detail = r.detail(t.clone()).unwrap();
            answers.push((t, detail));
        }
    }
    let (t, detail) = &answers[0];
    assert_eq!(t.status, TaskStatus::Failed);
    assert_eq!(t.submitted_at, 100);
    assert_eq!(t.started_at, Some(110));
    assert_eq!(t.finished_at, Some(140));
    assert_eq!(t.attempts, 2);
    assert_eq!(t.error.as_deref(), Some("error of attempt 2"));
    assert_eq!(t.reason, Some(FailureReason::Executor));
    assert_eq!(detail.attempt_history.len(), 2);
    assert_eq!(detail.attempt_history[0].result, Some(TaskStatus::Retrying));
    assert_eq!(detail.attempt_history[1].finished_at, Some(140));
    assert_eq!(detail.events.len(), 4);
    for a in &answers {
        assert_eq!(a, &answers[0]);
    }
}

#[test]
fn a_late_task_record_does_not_regress_the_status() {
    let (_d, mut w, r) = store();
    w.apply(
        &[Ingest::Status(
            ev("t", TaskStatus::Succeeded, 1, 150),
            Run::default(),
        )],
        &[],
    )
    .unwrap();
    assert_eq!(get(&r, "t").status, TaskStatus::Succeeded);
    w.apply(&[Ingest::Queued(queued("t", 90))], &[]).unwrap();
    let t = get(&r, "t");
    assert_eq!(t.status, TaskStatus::Succeeded);
    assert_eq!(
        t.submitted_at, 90,
        "the task record sets the submission time"
    );
    w.apply(
        &[Ingest::Status(
            ev("t", TaskStatus::Running, 1, 110),
            Run::default(),
        )],
        &[],
    )
    .unwrap();
    let t = get(&r, "t");
    assert_eq!(t.status, TaskStatus::Succeeded);
    assert_eq!(t.started_at, Some(110));
}

#[test]
fn offsets_are_kept_with_the_rows() {
    let (_d, mut w, _r) = store();
    w.apply(
        &lifecycle(),
        &[("tw.q.acme".into(), 1, 8), ("tw.status".into(), 0, 4)],
    )
    .unwrap();
    w.apply(&[], &[("tw.q.acme".into(), 1, 9)]).unwrap();
    let o = w.offsets().unwrap();
    assert_eq!(o[&TopicPartition::new("tw.q.acme", 1)], 9);
    assert_eq!(o[&TopicPartition::new("tw.status", 0)], 4);
}

#[test]
fn retention_deletes_finished_tasks_and_ignores_their_late_records() {
    let (_d, mut w, r) = store();
    // "old" finished at 140 and its task record has not been read yet; "new" is
    // still running.
    w.apply(
        &[
            Ingest::Status(ev("old", TaskStatus::Succeeded, 1, 140), Run::default()),
            Ingest::Queued(queued("new", 100)),
            Ingest::Status(ev("new", TaskStatus::Running, 1, 150), Run::default()),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(w.sweep(1000, 2000, 1).unwrap(), 1);
    assert_eq!(r.get(Some("acme"), "old").unwrap(), Lookup::NotFound);
    assert_eq!(get(&r, "new").status, TaskStatus::Running);
    // The late task record of "old" does not bring it back.
    let stats = w.apply(&[Ingest::Queued(queued("old", 100))], &[]).unwrap();
    assert_eq!(stats.skipped, 1);
    assert_eq!(r.get(Some("acme"), "old").unwrap(), Lookup::NotFound);
}

#[test]
fn lists_page_without_skipping_or_repeating() {
    let (_d, mut w, r) = store();
    let items: Vec<Ingest> = (0..50)
        .map(|i| Ingest::Queued(queued(&format!("id-{:02}", i % 25), 1000 + (i / 25))))
        .collect();
    // Same submission time for ids in pairs of tenants to exercise the tie-break.
    let mut items2 = items.clone();
    for it in &mut items2 {
        if let Ingest::Queued(q) = it {
            q.tenant = "globex".into();
            q.submitted_at = 1000;
        }
    }
    w.apply(&items, &[]).unwrap();
    w.apply(&items2, &[]).unwrap();
    let mut seen = Vec::new();
    let mut filter = TaskFilter {
        limit: 7,
        ..TaskFilter::default()
    };
    loop {
        let page = r.list(&filter).unwrap();
        seen.extend(page.tasks.iter().map(|t| (t.tenant.clone(), t.id.clone())));
        match page.next_cursor {
            Some(c) => filter.cursor = Some(query::Cursor::decode(&c).unwrap()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 50);
    let unique: std::collections::BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), 50);
}

#[test]
fn per_minute_counts_follow_each_task() {
    let (_d, mut w, r) = store();
    let t = 1_764_340_020_000; // a whole minute
    let now = t + 30_000;
    let status = |id: &str, s, attempt, at, sub| {
        let mut e = ev(id, s, attempt, at);
        e.submitted_at = sub;
        Ingest::Status(e, Run::default())
    };
    w.apply(
        &[
            // a: queued since long before the window.
            Ingest::Queued(queued("a", t - 600_000)),
            // b: submitted in minute 0, started in minute 1, succeeded in minute 2.
            Ingest::Queued(queued("b", t - 115_000)),
            status("b", TaskStatus::Running, 1, t - 55_000, t - 115_000),
            status("b", TaskStatus::Succeeded, 1, t + 5_000, t - 115_000),
            // c: running since before the window, failed in minute 1.
            status("c", TaskStatus::Running, 1, t - 180_000, t - 300_000),
            status("c", TaskStatus::Failed, 1, t - 30_000, t - 300_000),
            // d: submitted and rejected in minute 2, never started.
            Ingest::Queued(queued("d", t + 10_000)),
            status("d", TaskStatus::Failed, 0, t + 20_000, t + 10_000),
        ],
        &[],
    )
    .unwrap();
    let act = r.activity(Some("acme"), now, 3).unwrap();
    let got: Vec<(u64, u64, u64, u64, u64)> = act["tw.q.acme"]
        .iter()
        .map(|m| (m.submitted, m.completed, m.failed, m.queued, m.running))
        .collect();
    assert_eq!(
        got,
        vec![(1, 0, 0, 2, 1), (0, 1, 1, 1, 1), (1, 2, 1, 1, 0)],
        "(submitted, completed, failed, queued, running) per minute"
    );
    assert_eq!(act["tw.q.acme"][0].minute, t - 120_000);
    assert_eq!(r.activity(None, now, 3).unwrap(), act);
    assert!(r.activity(Some("globex"), now, 3).unwrap().is_empty());
    let running = r.running_by_partition(Some("acme")).unwrap();
    assert!(running.is_empty(), "{running:?}");
}

#[test]
fn id_prefixes_read_through_the_id_index_when_selective() {
    let (_d, mut w, r) = store();
    let items: Vec<Ingest> = (0..300)
        .map(|i| Ingest::Queued(queued(&format!("{}-{i:03}", ["a", "b"][i % 2]), i as i64)))
        .collect();
    w.apply(&items, &[]).unwrap();
    w.optimize().unwrap();
    let page = r
        .list(&TaskFilter {
            scope: Some("acme".into()),
            id_prefix: Some("b-1".into()),
            limit: 10,
            ..TaskFilter::default()
        })
        .unwrap();
    let ids: Vec<&str> = page.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "b-199", "b-197", "b-195", "b-193", "b-191", "b-189", "b-187", "b-185", "b-183",
            "b-181"
        ]
    );
    assert!(page.next_cursor.is_some());
}

#[test]
fn queries_use_an_index() {
    let (_d, _w, r) = store();
    let plan = |f: &TaskFilter| -> String {
        let sql = query::list_sql(f);
        r.with(|c| {
            let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {}", sql.text))?;
            let rows = stmt.query_map(rusqlite::params_from_iter(sql.params.iter()), |r| {
                r.get::<_, String>(3)
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?.join("; "))
        })
        .unwrap()
    };
    let scoped = TaskFilter {
        scope: Some("acme".into()),
        cursor: Some(query::Cursor {
            submitted_at: 5,
            id: "x".into(),
            tenant: "acme".into(),
        }),
        ..TaskFilter::default()
    };
    let p = plan(&scoped);
    assert!(p.contains("USING INDEX tasks_tenant_submitted"), "{p}");
    assert!(!p.contains("TEMP B-TREE"), "{p}");
    let p = plan(&TaskFilter::default());
    assert!(p.contains("USING INDEX tasks_submitted"), "{p}");
    assert!(!p.contains("TEMP B-TREE"), "{p}");
}

#[test]
fn schedulers_are_listed_with_the_partitions_they_started_tasks_from() {
    let (_d, mut w, r) = store();
    let t = 1_764_340_020_000;
    let on = |id: &str, sched: &str, partition: i32, at: i64| {
        let mut e = ev(id, TaskStatus::Running, 1, at);
        e.scheduler_id = sched.into();
        e.source.partition = partition;
        Ingest::Status(e, Run::default())
    };
    w.apply(
        &[
            on("a", "s1", 0, t - 50_000),
            on("b", "s1", 1, t - 40_000),
            on("c", "s2", 2, t - 10_000),
            // Started before the window: not counted.
            on("d", "s3", 0, t - 900_000),
        ],
        &[],
    )
    .unwrap();
    let seen = r.schedulers_since(None, t - 60_000).unwrap();
    let got: Vec<(&str, u64, i64, Vec<i32>)> = seen
        .iter()
        .map(|s| {
            (
                s.scheduler_id.as_str(),
                s.tasks_started,
                s.last_started_at,
                s.partitions.iter().map(|p| p.partition).collect(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("s2", 1, t - 10_000, vec![2]),
            ("s1", 2, t - 40_000, vec![0, 1]),
        ],
        "most recent first, each with its partitions"
    );
    assert!(
        seen.iter()
            .all(|s| s.partitions.iter().all(|p| p.topic == "tw.q.acme"))
    );
    assert!(
        r.schedulers_since(Some("globex"), t - 60_000)
            .unwrap()
            .is_empty()
    );
}
