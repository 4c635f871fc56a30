//! Scaling figures, against one broker, with the real binary:
//!
//! (a) drain time of a fixed backlog of I/O-bound tasks (`sleep 0.05`, 4 at a time per
//!     process) with 1, 2 and 4 scheduler processes (`tidewater run --replicas N`), on a
//!     queue of 4 partitions, and the speedup over one process. The processes start and
//!     join first; the backlog is submitted then, and the figure is the span between the
//!     first and the last outcome record's timestamp;
//! (b) reaction time: with `--replicas auto` (one process to start with, a low
//!     `lag_per_replica`), from the submission of a backlog that crosses the threshold to
//!     the first task completed by a process the supervisor added (the first status
//!     event of a second scheduler id);
//! (c) a lag read (what `/v1/queues` and the controller do each time): the watermarks and
//!     the group's committed offsets of every partition of a queue of
//!     `TW_BENCH_PARTITIONS` partitions (300 by default), median of 5 reads, against a
//!     baseline in the same run that asks for each partition's watermarks in a request
//!     of its own (`fetch_watermarks`, as Tidewater did before).
//!
//! ```sh
//! scripts/kafka.sh start
//! cargo bench --bench scale      # TW_BENCH_TASKS=1200 by default
//! ```
//!
//! Under `cargo test` it runs as a smoke check with 80 tasks and 1 and 2 processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common.rs"]
mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::Message;
use tidewater::codec;
use tidewater::config::Config;

/// Time given to scheduler processes to start and join their group.
const JOIN: Duration = Duration::from_secs(8);

struct World {
    prefix: String,
    config: Config,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// A configuration file for the processes of one run; `extra` goes before the tenants.
fn world(name: &str, extra: &str) -> World {
    let prefix = common::prefix(name);
    let body = format!(
        r#"
[scheduler]
shutdown_grace = "5s"
{extra}
[tenants.bench.functions.io]
executor = {{ type = "command", program = "sleep", args = ["0.05"] }}
concurrency = 4
on_success = "{prefix}.out"
"#
    );
    let text = common::config_text(&prefix, 4, &body);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tidewater.toml");
    std::fs::write(&path, &text).unwrap();
    let config = Config::from_toml(&text).unwrap();
    World {
        prefix,
        config,
        path,
        _dir: dir,
    }
}

fn submit(rt: &tokio::runtime::Runtime, w: &World, n: usize) {
    let tasks = (0..n)
        .map(|i| common::task(&format!("b-{i}"), "io", ""))
        .collect();
    rt.block_on(common::submit_all(
        &common::submitter(&w.config),
        "bench",
        tasks,
    ));
}

fn supervisor(w: &World, replicas: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tidewater"))
        .arg("--config")
        .arg(&w.path)
        .args(["run", "--replicas", replicas])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn stop(mut c: Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = c.wait();
}

/// Reads `topic` from the start (read_committed) until `n` records; returns their
/// timestamps (ms) and values.
fn read(topic: &str, n: usize, timeout: Duration) -> Vec<(i64, Vec<u8>)> {
    let consumer = common::reader_from_start(topic);
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let ts = m.timestamp().to_millis().unwrap_or(0);
            out.push((ts, m.payload().unwrap_or_default().to_vec()));
        }
    }
    assert_eq!(out.len(), n, "only {} of {n} records on {topic}", out.len());
    out
}

fn drain_seconds(rt: &tokio::runtime::Runtime, n: usize, replicas: u32) -> f64 {
    let w = world(&format!("r{replicas}"), "");
    rt.block_on(tidewater::kafka::init_topics(&w.config))
        .unwrap();
    let sup = supervisor(&w, &replicas.to_string());
    // Let every process join the group first: the figure is the drain, not the joins.
    std::thread::sleep(JOIN);
    submit(rt, &w, n);
    let outs = read(&format!("{}.out", w.prefix), n, Duration::from_secs(600));
    stop(sup);
    let first = outs.iter().map(|(t, _)| *t).min().unwrap();
    let last = outs.iter().map(|(t, _)| *t).max().unwrap();
    (last - first) as f64 / 1000.0
}

/// Seconds from the backlog's submission to the first task finished by an added process.
fn reaction_seconds(rt: &tokio::runtime::Runtime, n: usize) -> f64 {
    let w = world(
        "react",
        "[scale]\nlag_interval = \"1s\"\nlag_per_replica = 20\nmin_replicas = 1\nmax_replicas = 2\nexpand_partitions = false\n",
    );
    rt.block_on(tidewater::kafka::init_topics(&w.config))
        .unwrap();
    let sup = supervisor(&w, "auto");
    // Let the first process join its group before the backlog arrives.
    std::thread::sleep(JOIN);
    let submitted = tidewater::clock::now_ms();
    submit(rt, &w, n);
    read(&format!("{}.out", w.prefix), n, Duration::from_secs(600));
    stop(sup);
    // Status events: the scheduler that ran each attempt, and when it finished it.
    let status = tidewater::names::topics::status(&w.prefix);
    let events: Vec<codec::StatusEvent> = read(&status, 2 * n, Duration::from_secs(60))
        .into_iter()
        .filter_map(|(_, v)| codec::decode_status(&v).ok())
        .collect();
    let mut first_by: BTreeMap<String, i64> = BTreeMap::new();
    for e in &events {
        let t = first_by.entry(e.scheduler_id.clone()).or_insert(e.at);
        *t = (*t).min(e.at);
    }
    let mut starts: Vec<i64> = first_by.values().copied().collect();
    starts.sort();
    assert!(
        starts.len() >= 2,
        "no added process completed a task: {first_by:?}"
    );
    let added_first = events
        .iter()
        .filter(|e| {
            first_by[&e.scheduler_id] > starts[0] && e.status == codec::TaskStatus::Succeeded
        })
        .map(|e| e.at)
        .min()
        .unwrap();
    (added_first - submitted) as f64 / 1000.0
}

fn main() {
    let measuring = common::measuring();
    let n = common::count("TW_BENCH_TASKS", 1200, 80);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let counts: &[u32] = if measuring { &[1, 2, 4] } else { &[1, 2] };
    let mut base = None;
    println!("scale: drain of {n} tasks (sleep 0.05, 4 at a time per process), 4 partitions");
    for &r in counts {
        let secs = drain_seconds(&rt, n, r);
        let b = *base.get_or_insert(secs);
        println!(
            "  {r} process(es): {secs:6.2} s  {:7.0} tasks/s  speedup {:.2}x",
            n as f64 / secs.max(1e-3),
            b / secs.max(1e-3)
        );
    }
    // A backlog one process needs about five seconds for, so an added process (spawned
    // after a lag sample, then joining the group) gets tasks before it is gone.
    let react = reaction_seconds(&rt, n.max(400));
    println!(
        "scale: reaction, backlog submitted -> first task done by an added process: {react:.1} s"
    );
    let partitions = common::count("TW_BENCH_PARTITIONS", 300, 12);
    lag_read(&rt, i32::try_from(partitions).unwrap());
}

/// (c): one lag read of a queue of `partitions` partitions, batched and per partition.
fn lag_read(rt: &tokio::runtime::Runtime, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::Consumer;
    let w = world("lag", "");
    let topic = format!("{}.q.lagread", w.prefix);
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", common::bootstrap())
        .create()
        .unwrap();
    let created = rt
        .block_on(admin.create_topics(
            &[NewTopic::new(
                &topic,
                partitions,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        ))
        .unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let timeout = Duration::from_secs(30);
    let reader = tidewater::scale::lag::GroupReader::stable(&w.config).unwrap();
    let topics = [topic.clone()];
    // Metadata of a new topic takes a moment to reach every client.
    let deadline = Instant::now() + timeout;
    while reader.read(&topics, timeout).map_or(0, |m| m.len()) != partitions as usize {
        assert!(
            Instant::now() < deadline,
            "the new topic never had its partitions"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let baseline = tidewater::scale::lag::group_reader(&w.config).unwrap();
    let median = |f: &dyn Fn() -> usize| {
        let mut times: Vec<f64> = (0..5)
            .map(|_| {
                let t0 = Instant::now();
                assert_eq!(f(), partitions as usize);
                t0.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        times[2]
    };
    let per_partition = median(&|| {
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            baseline.fetch_watermarks(&topic, p, timeout).unwrap();
            tpl.add_partition(&topic, p);
        }
        baseline.committed_offsets(tpl, timeout).unwrap().count()
    });
    let batched = median(&|| reader.read(&topics, timeout).unwrap().len());
    println!(
        "scale: lag read of {partitions} partitions: {batched:.1} ms (per-partition requests: {per_partition:.1} ms, {:.1}x)",
        per_partition / batched.max(1e-3)
    );
}
