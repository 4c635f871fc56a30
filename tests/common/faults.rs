//! Fault injection for the fault suite: brokers started by `scripts/kafka.sh` on ports
//! of their own (so restarting them never disturbs the shared test broker), and a
//! `read_committed` watcher that records when each outcome became visible.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::Message;

use super::reader_on;

/// Reads `group`'s committed offsets of `topic`'s partitions as a `read_committed`
/// consumer does when it is given partitions (`require_stable`): Kafka answers
/// `UNSTABLE_OFFSET_COMMIT` while an offset of the group is pending in a transaction part
/// without a marker, and librdkafka asks again until `timeout`. The error when that
/// happens.
pub fn committed_offsets_readable(
    bootstrap: &str,
    group: &str,
    topic: &str,
    timeout: Duration,
) -> Result<(), String> {
    use rdkafka::consumer::Consumer;
    let consumer = super::read_committed_consumer(bootstrap, group);
    let tpl = super::all_partitions(&consumer, topic, rdkafka::Offset::Invalid)
        .map_err(|e| e.to_string())?;
    consumer
        .committed_offsets(tpl, timeout)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// One of the fault suite's Kafka deployments, driven through `scripts/kafka.sh`.
pub struct Kafka {
    nodes: u32,
    port: u16,
}

/// The single broker the fault suite restarts (`TW_FAULT_KAFKA_PORT`, default 19392).
pub fn single() -> (MutexGuard<'static, ()>, Kafka) {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let k = Kafka {
        nodes: 1,
        port: port_from("TW_FAULT_KAFKA_PORT", 19392),
    };
    k.up();
    (guard, k)
}

/// The three-node cluster (`TW_CLUSTER_KAFKA_PORT`, default 19192..19194).
pub fn cluster() -> (MutexGuard<'static, ()>, Kafka) {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let k = Kafka {
        nodes: 3,
        port: port_from("TW_CLUSTER_KAFKA_PORT", 19192),
    };
    k.up();
    (guard, k)
}

fn port_from(var: &str, default: u16) -> u16 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Kafka {
    /// `host:port,…` of every node.
    pub fn bootstrap(&self) -> String {
        (0..self.nodes)
            .map(|i| format!("127.0.0.1:{}", self.port + i as u16))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Runs `scripts/kafka.sh <args>` for this deployment; returns its stdout.
    pub fn script(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "scripts/kafka.sh {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs `scripts/kafka.sh <args>` for this deployment, whatever its exit status.
    fn run(&self, args: &[&str]) -> std::process::Output {
        let script: PathBuf = [env!("CARGO_MANIFEST_DIR"), "scripts", "kafka.sh"]
            .iter()
            .collect();
        // A node restarted under a test's load, while the other suites' brokers run on
        // the same cores, can take longer than a fresh start: these tests are about what
        // the scheduler loses or repeats, not how fast a broker comes back.
        let timeout = std::env::var("TW_KAFKA_START_TIMEOUT").unwrap_or_else(|_| "300".into());
        Command::new(script)
            .args(args)
            .env("TW_KAFKA_NODES", self.nodes.to_string())
            .env("TW_KAFKA_PORT", self.port.to_string())
            .env("TW_KAFKA_START_TIMEOUT", timeout)
            .output()
            .unwrap()
    }

    /// The transactions open on `topic` (`scripts/kafka.sh open-transactions`), or why
    /// that could not be asked.
    pub fn open_transactions(&self, topic: &str) -> String {
        let out = self.run(&["open-transactions", topic]);
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() {
            return format!(
                "(not known: {})",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        if text.is_empty() { "none".into() } else { text }
    }

    /// The broker log's lines where a transaction coordinator skipped the markers of
    /// partitions without a leader (Kafka takes them for deleted), which leaves their part
    /// of the transaction open until the producer's next marker there (RELIABILITY.md).
    pub fn skipped_markers(&self) -> String {
        // One log per node; `logs` names the single broker's.
        let out = self.run(&["logs"]);
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let Ok(log) = std::fs::read_to_string(&path) else {
            return format!("(no broker log at {path:?})");
        };
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("Couldn't find leader endpoint"))
            .collect();
        if lines.is_empty() {
            "none".into()
        } else {
            lines.join("\n")
        }
    }

    /// The transaction markers in the single broker's log of `topic`'s `partition`, in
    /// offset order (read off its segment files, `scripts/kafka.sh data-dir`).
    pub fn markers(&self, topic: &str, partition: i32) -> Vec<super::segments::Marker> {
        let data = PathBuf::from(self.script(&["data-dir"]));
        super::segments::markers(&data.join(format!("{topic}-{partition}")))
    }

    /// Starts whatever is not running (every node), and waits until all serve.
    pub fn up(&self) {
        self.script(&["start"]);
        if self.nodes > 1 {
            self.script(&["wait-replicated"]);
        }
    }

    /// Stops the single broker (SIGTERM).
    pub fn stop(&self) {
        self.script(&["stop"]);
    }

    /// Starts the single broker and waits until it answers.
    pub fn start(&self) {
        self.script(&["start"]);
    }

    /// Sends `command` (`kill`, `stop`, `start`, `pause`, `resume`) to node `n`.
    pub fn node(&self, command: &str, n: u32) {
        self.script(&[command, &n.to_string()]);
    }

    /// The node leading `topic`'s `partition`. The lookup is asked again when it fails:
    /// its admin client gives up after 8 s, which a busy two-core machine (three nodes
    /// and the test suite) can exceed.
    pub fn leader(&self, topic: &str, partition: i32) -> u32 {
        let args = ["leader", topic, &partition.to_string()];
        let mut failures = Vec::new();
        for _ in 0..4 {
            let out = self.run(&args);
            let text = String::from_utf8_lossy(&out.stdout);
            if let (true, Ok(node)) = (out.status.success(), text.trim().parse()) {
                return node;
            }
            failures.push(String::from_utf8_lossy(&out.stderr).into_owned());
            std::thread::sleep(Duration::from_secs(2));
        }
        panic!(
            "scripts/kafka.sh {args:?} failed 4 times:\n{}",
            failures.join("\n")
        );
    }

    /// `scripts/kafka.sh txn-coordinator PREFIX`: the node coordinating each
    /// transactional id that starts with `prefix`, or the script's error output (it fails
    /// when there is none).
    fn coordinators(&self, prefix: &str) -> Result<Vec<(u32, String)>, String> {
        let out = self.run(&["txn-coordinator", prefix]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                Some((words.next()?.parse().ok()?, words.next()?.to_string()))
            })
            .collect())
    }

    /// The transactional ids that start with `prefix`, as the cluster lists them.
    pub fn transactional_ids(&self, prefix: &str) -> Vec<String> {
        match self.coordinators(prefix) {
            Ok(pairs) => pairs.into_iter().map(|(_, id)| id).collect(),
            Err(e) => panic!("scripts/kafka.sh txn-coordinator {prefix}: {e}"),
        }
    }

    /// The node coordinating the first transactional id that starts with `prefix`,
    /// waiting for one to exist.
    pub fn txn_coordinator(&self, prefix: &str, timeout: Duration) -> u32 {
        let deadline = Instant::now() + timeout;
        loop {
            let listed = self.coordinators(prefix);
            if let Some((node, _)) = listed.as_ref().ok().and_then(|p| p.first()) {
                return *node;
            }
            assert!(
                Instant::now() < deadline,
                "no transactional id starts with {prefix}: {}",
                listed.err().unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Watches an outcome topic with a `read_committed` consumer and records when each
/// task's outcome became visible.
pub struct OutcomeWatch {
    stop: Arc<AtomicBool>,
    distinct: Arc<AtomicUsize>,
    handle: Option<JoinHandle<Watched>>,
}

/// What an [`OutcomeWatch`] saw.
#[derive(Debug, Default)]
pub struct Watched {
    /// Outcome records per task id.
    pub counts: BTreeMap<String, usize>,
    /// The longest time between two new tasks' outcomes, from the first to the last.
    pub longest_gap: Duration,
    /// Every such time of a second or more: (previous outcome, next outcome).
    pub gaps: Vec<(Instant, Instant)>,
}

impl Watched {
    /// The longest time between two new tasks' outcomes, not counting the times in
    /// `away` (when the cluster could not serve: a broker stopped until it was ready).
    pub fn longest_gap_outside(&self, away: &[(Instant, Instant)]) -> Duration {
        self.gaps
            .iter()
            .map(|&(from, to)| {
                let overlap: Duration = away
                    .iter()
                    .map(|&(a, b)| b.min(to).saturating_duration_since(a.max(from)))
                    .sum();
                (to - from).saturating_sub(overlap)
            })
            .max()
            .unwrap_or_default()
    }

    /// Task ids with more than one outcome.
    pub fn duplicates(&self) -> Vec<(&String, &usize)> {
        self.counts.iter().filter(|(_, c)| **c > 1).collect()
    }
}

impl OutcomeWatch {
    pub fn start(bootstrap: &str, topic: &str) -> Self {
        let consumer = reader_on(bootstrap, topic);
        let stop = Arc::new(AtomicBool::new(false));
        let distinct = Arc::new(AtomicUsize::new(0));
        let (s, d) = (stop.clone(), distinct.clone());
        let handle = std::thread::spawn(move || {
            let mut w = Watched::default();
            let mut last_new: Option<Instant> = None;
            while !s.load(Ordering::Relaxed) {
                let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
                    continue;
                };
                let o = tidewater::codec::decode_outcome(m.payload().unwrap_or_default()).unwrap();
                let c = w.counts.entry(o.task_id).or_default();
                *c += 1;
                if *c == 1 {
                    let now = Instant::now();
                    if let Some(prev) = last_new {
                        w.longest_gap = w.longest_gap.max(now - prev);
                        if now - prev >= Duration::from_secs(1) {
                            w.gaps.push((prev, now));
                        }
                    }
                    last_new = Some(now);
                    d.store(w.counts.len(), Ordering::Relaxed);
                }
            }
            w
        });
        Self {
            stop,
            distinct,
            handle: Some(handle),
        }
    }

    /// Tasks with an outcome so far.
    pub fn distinct(&self) -> usize {
        self.distinct.load(Ordering::Relaxed)
    }

    /// Waits until `n` tasks have an outcome (panicking with `context()` after
    /// `timeout`).
    pub fn wait_for(&self, n: usize, timeout: Duration, context: impl Fn() -> String) {
        let deadline = Instant::now() + timeout;
        while self.distinct() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} outcomes after {timeout:?}\n{}",
                self.distinct(),
                context()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until a new task's outcome shows (or all `n` have); returns how long that took.
    pub fn wait_for_progress(
        &self,
        n: usize,
        timeout: Duration,
        context: impl Fn() -> String,
    ) -> Duration {
        let started = Instant::now();
        let before = self.distinct();
        while self.distinct() == before && before < n {
            assert!(
                started.elapsed() < timeout,
                "no new outcome within {timeout:?} ({before} of {n})\n{}",
                context()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        started.elapsed()
    }

    /// Waits for `n` distinct outcomes, then `settle` more for late duplicates, and
    /// returns what was seen.
    pub fn finish(
        mut self,
        n: usize,
        timeout: Duration,
        settle: Duration,
        context: impl Fn() -> String,
    ) -> Watched {
        self.wait_for(n, timeout, context);
        std::thread::sleep(settle);
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for OutcomeWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One row of RELIABILITY.md, printed by each fault test (`cargo test --test faults --
/// --nocapture | grep '^| '` collects the table). `resumed` is the longest time from the
/// cluster being able to serve again to the next new outcome.
pub fn report(
    fault: &str,
    tasks: usize,
    faults: &str,
    w: &Watched,
    resumed: Duration,
    command: &str,
) {
    let lost = tasks.saturating_sub(w.counts.len());
    println!(
        "| {fault} | {tasks} | {faults} | {lost} | {} | {:.1} s | {:.1} s | `{command}` |",
        w.duplicates().len(),
        w.longest_gap.as_secs_f64(),
        resumed.as_secs_f64()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_is_counted_without_the_time_the_cluster_was_away() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let w = Watched {
            counts: BTreeMap::new(),
            longest_gap: Duration::from_secs(100),
            gaps: vec![(at(0), at(100)), (at(200), at(230))],
        };
        // No time away: the longest gap as it was.
        assert_eq!(w.longest_gap_outside(&[]), Duration::from_secs(100));
        // Away from 5 to 80 (inside the first gap): 25 s of it were the scheduler's.
        assert_eq!(
            w.longest_gap_outside(&[(at(5), at(80))]),
            Duration::from_secs(30)
        );
        // Away from 90 to 210, overlapping both gaps' edges: 90 and 20 left.
        assert_eq!(
            w.longest_gap_outside(&[(at(90), at(210))]),
            Duration::from_secs(90)
        );
    }
}
