//! Helpers for the integration tests: they talk to a real Kafka broker (started by
//! `scripts/test.sh`, or any broker named by `TW_BOOTSTRAP_SERVERS`) and run the real
//! `tidewater` binary. Each test uses its own topic prefix and consumer group.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use tidewater::codec::{self, Encoding, Outcome, StatusEvent, Task};
use tidewater::config::Config;
use tidewater::names::headers as h;
use tidewater::submit::Submitter;

pub mod faults;
pub mod segments;
pub mod serve;

/// A record to produce: key, value, headers.
pub type RawRecord<'a> = (Option<&'a str>, Vec<u8>, Vec<(&'a str, &'a str)>);
/// A record read back: headers and value.
pub type ReadRecord = (Vec<(String, String)>, Vec<u8>);

/// The broker under test.
pub fn bootstrap() -> String {
    std::env::var("TW_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

/// A random lowercase suffix, so tests never share topics or groups.
pub fn unique(name: &str) -> String {
    format!("t{}{}", name, ulid::Ulid::new().to_string().to_lowercase())
}

/// One test's world: a config file with its own prefix, in its own temp dir.
pub struct TestEnv {
    pub prefix: String,
    /// The cluster this env's config and readers talk to.
    pub bootstrap: String,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub config: Config,
}

impl TestEnv {
    /// `body` is TOML with `[scheduler]` settings (optional) and `[tenants…]` tables.
    pub fn new(name: &str, body: &str) -> Self {
        Self::with_partitions(name, body, 3)
    }

    /// Like [`TestEnv::new`], with `partitions` partitions per created topic.
    pub fn with_partitions(name: &str, body: &str, partitions: u32) -> Self {
        Self::on(&bootstrap(), name, body, partitions, 1)
    }

    /// An env on the cluster at `bootstrap`, whose topics have `partitions` partitions
    /// and `replication` replicas.
    pub fn on(bootstrap: &str, name: &str, body: &str, partitions: u32, replication: u16) -> Self {
        let prefix = unique(name);
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[kafka]\nbootstrap_servers = \"{bootstrap}\"\n[topics]\nprefix = \"{prefix}\"\npartitions = {partitions}\nreplication_factor = {replication}\n[telemetry]\nmetrics_listen = \"127.0.0.1:0\"\n{body}\n"
        );
        let text = text.replace("{prefix}", &prefix);
        let config_path = dir.path().join("tidewater.toml");
        std::fs::write(&config_path, &text).unwrap();
        let config = Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let env = Self {
            prefix,
            bootstrap: bootstrap.to_string(),
            dir,
            config_path,
            config,
        };
        env.wait_for_kafka();
        env
    }

    fn wait_for_kafka(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match tidewater::kafka::existing_topics(&self.config) {
                Ok(_) => return,
                Err(e) if Instant::now() > deadline => panic!(
                    "no Kafka broker at {}: {e}\nStart one with `scripts/kafka.sh start`, or run the suite with `scripts/test.sh`.",
                    self.bootstrap
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }

    /// `tidewater topics init`, through the binary.
    pub fn init_topics(&self) {
        let out = self.cli(&["topics", "init"]);
        assert!(
            out.status.success(),
            "topics init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs the binary with this env's config and waits for it.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_tidewater"))
            // The env's config names its cluster; the suite's own TW_BOOTSTRAP_SERVERS
            // (the shared broker) must not override it.
            .env_remove("TW_BOOTSTRAP_SERVERS")
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    }

    /// Starts `tidewater run`; its log goes to `<dir>/scheduler-<n>.log`.
    pub fn start_scheduler(&self, n: usize) -> SchedulerProcess {
        self.start_run(n, &[])
    }

    /// Starts `tidewater run <extra…>` (e.g. `--replicas auto`); its log (and that of
    /// any scheduler it supervises) goes to `<dir>/scheduler-<n>.log`.
    pub fn start_run(&self, n: usize, extra: &[&str]) -> SchedulerProcess {
        let log = self.dir.path().join(format!("scheduler-{n}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tidewater"))
            // The env's config names its cluster; the suite's own TW_BOOTSTRAP_SERVERS
            // (the shared broker) must not override it.
            .env_remove("TW_BOOTSTRAP_SERVERS")
            .arg("--config")
            .arg(&self.config_path)
            .arg("run")
            .args(extra)
            .env("RUST_LOG", "info,tidewater=debug")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        SchedulerProcess {
            child: Some(child),
            log,
        }
    }

    pub fn queue(&self, tenant: &str) -> String {
        tidewater::names::topics::tenant_queue(&self.prefix, tenant)
    }

    pub fn status_topic(&self) -> String {
        tidewater::names::topics::status(&self.prefix)
    }

    pub fn dlq(&self, tenant: &str) -> String {
        tidewater::names::topics::dead_letter(&self.prefix, tenant)
    }

    pub fn topic(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.prefix)
    }

    pub fn producer(&self) -> ThreadedProducer<DefaultProducerContext> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("linger.ms", "5")
            .create()
            .unwrap()
    }

    /// Produces raw records in order (one partition when the topic has one) and flushes.
    pub fn produce_raw(&self, topic: &str, records: &[RawRecord<'_>]) {
        let p = self.producer();
        for (key, value, headers) in records {
            let hs = headers.iter().fold(OwnedHeaders::new(), |acc, (k, v)| {
                acc.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                })
            });
            let mut rec = BaseRecord::<str, [u8]>::to(topic)
                .payload(value)
                .headers(hs);
            if let Some(k) = key {
                rec = rec.key(k);
            }
            p.send(rec).map_err(|(e, _)| e).unwrap();
        }
        p.flush(Duration::from_secs(30)).unwrap();
    }

    /// Submits tasks through the library's submitter (Avro), all to `tenant`.
    pub fn submit(&self, tenant: &str, tasks: Vec<Task>) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let config = Arc::new(self.config.clone());
        let s = Submitter::new(config, Encoding::Avro)
            .unwrap()
            .allow_unknown(true);
        rt.block_on(submit_all(&s, tenant, tasks));
    }

    /// Reads a topic from the beginning (read_committed) until `want` records or `timeout`.
    pub fn read(&self, topic: &str, want: usize, timeout: Duration) -> Vec<ReadRecord> {
        let consumer = reader_on(&self.bootstrap, topic);
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < want && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                let hs = m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|hd| {
                                (
                                    hd.key.to_string(),
                                    String::from_utf8_lossy(hd.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((hs, m.payload().unwrap_or_default().to_vec()));
            }
        }
        out
    }

    /// Outcome events on a destination topic, decoded; waits for `want` of them.
    /// Reads `topic` (`read_committed`) until every task of `ids` has an outcome or
    /// `within` has passed, then asserts that each has one and none has two; `context`
    /// (a log, say) is shown on failure.
    pub fn assert_one_outcome_each(
        &self,
        topic: &str,
        ids: &BTreeSet<String>,
        within: Duration,
        context: impl Fn() -> String,
    ) {
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            count = BTreeMap::new();
            for o in self.outcomes(topic, usize::MAX, Duration::from_secs(3)) {
                *count.entry(o.task_id).or_default() += 1;
            }
            if count.len() == ids.len() {
                break;
            }
        }
        let seen: BTreeSet<String> = count.keys().cloned().collect();
        assert_eq!(&seen, ids, "every task has an outcome\n{}", context());
        let doubled: Vec<&String> = count
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, _)| id)
            .collect();
        assert!(
            doubled.is_empty(),
            "{} tasks have two outcomes: {:?}\n{}",
            doubled.len(),
            doubled.iter().take(10).collect::<Vec<_>>(),
            context()
        );
    }

    pub fn outcomes(&self, topic: &str, want: usize, timeout: Duration) -> Vec<Outcome> {
        self.read(topic, want, timeout)
            .into_iter()
            .map(|(hs, v)| {
                assert!(
                    hs.iter()
                        .any(|(k, val)| k == h::EVENT && val == h::EVENT_OUTCOME),
                    "record without the outcome header on {topic}"
                );
                codec::decode_outcome(&v).unwrap()
            })
            .collect()
    }

    /// Distinct task ids with an outcome on `topic`, read again until there are `n` of
    /// them or `timeout` passes.
    pub fn outcome_ids(&self, topic: &str, n: usize, timeout: Duration) -> BTreeSet<String> {
        let deadline = Instant::now() + timeout;
        let mut ids = BTreeSet::new();
        while ids.len() < n && Instant::now() < deadline {
            ids = self
                .outcomes(topic, usize::MAX, Duration::from_secs(2))
                .into_iter()
                .map(|o| o.task_id)
                .collect();
        }
        ids
    }

    /// Status events, decoded.
    pub fn statuses(&self, want: usize, timeout: Duration) -> Vec<StatusEvent> {
        self.read(&self.status_topic(), want, timeout)
            .into_iter()
            .map(|(_, v)| codec::decode_status(&v).unwrap())
            .collect()
    }
}

/// Submits `tasks` to `tenant` and checks that Kafka acknowledged every one.
pub async fn submit_all(submitter: &Submitter, tenant: &str, tasks: Vec<Task>) {
    let n = tasks.len() as u64;
    let r = submitter.submit_many(tenant, tasks, |_| {}).await.unwrap();
    assert_eq!(r.submitted, n, "not every task was acknowledged");
}

/// A consumer of every partition of `topic` from its beginning, outside any group, that
/// sees only committed records.
pub fn reader_from_start(topic: &str) -> BaseConsumer {
    reader_on(&bootstrap(), topic)
}

/// [`reader_from_start`] on the cluster at `bootstrap`.
pub fn reader_on(bootstrap: &str, topic: &str) -> BaseConsumer {
    let consumer = read_committed_consumer(bootstrap, &unique("reader"));
    let tpl = all_partitions(&consumer, topic, rdkafka::Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    consumer
}

/// A transactional producer on the shared test broker, with a transactional id of its
/// own (`name` and a unique suffix), initialised.
pub fn transactional_producer(name: &str) -> ThreadedProducer<DefaultProducerContext> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("transactional.id", unique(name))
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    producer
}

/// A transactional producer that commits offsets for a consumer group the way a scheduler
/// of that group does: the previous owner of a partition, or one whose transaction is open.
pub struct GroupTransactions {
    producer: rdkafka::producer::BaseProducer,
    group: rdkafka::consumer::ConsumerGroupMetadata,
}

impl GroupTransactions {
    /// For the consumer group `group_id`, with a transaction timeout long enough that only
    /// the test ends a transaction it leaves open.
    pub fn new(name: &str, group_id: &str) -> Self {
        let reader: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("group.id", group_id)
            .create()
            .unwrap();
        let group = reader.group_metadata().unwrap();
        let producer: rdkafka::producer::BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("transactional.id", unique(name))
            .set("transaction.timeout.ms", "300000")
            .create()
            .unwrap();
        producer.init_transactions(Duration::from_secs(30)).unwrap();
        Self { producer, group }
    }

    pub fn begin(&self) {
        self.producer.begin_transaction().unwrap();
    }

    /// Adds partition 0 of `topic` at `offset`, with `metadata`, to the open transaction.
    pub fn add_offset(&self, topic: &str, offset: i64, metadata: &str) {
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, rdkafka::Offset::Offset(offset))
            .unwrap();
        tpl.find_partition(topic, 0).unwrap().set_metadata(metadata);
        self.producer
            .send_offsets_to_transaction(&tpl, &self.group, Duration::from_secs(30))
            .unwrap();
    }

    pub fn commit(&self) {
        self.producer
            .commit_transaction(Duration::from_secs(30))
            .unwrap();
    }

    pub fn abort(&self) {
        self.producer
            .abort_transaction(Duration::from_secs(30))
            .unwrap();
    }
}

/// The JSON lines a command printed, each as `T`; the command must have succeeded.
pub fn json_lines<T: serde::de::DeserializeOwned>(out: &std::process::Output) -> Vec<T> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A `read_committed` consumer of `group` that commits nothing by itself.
pub fn read_committed_consumer(bootstrap: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap()
}

/// Every partition of `topic`, each at `offset`.
pub fn all_partitions(
    consumer: &BaseConsumer,
    topic: &str,
    offset: rdkafka::Offset,
) -> Result<rdkafka::TopicPartitionList, rdkafka::error::KafkaError> {
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), offset)?;
    }
    Ok(tpl)
}

/// Processes whose parent is `pid` (from /proc).
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces, so split after the last `)`.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// Resident memory, in bytes, of process `pid` (`self` for this one), from /proc.
pub fn vm_rss(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// GET a URL on 127.0.0.1 with a bare HTTP/1.0 request; returns the body.
pub fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET /{path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// Sum of a metric's samples (all label sets) in a Prometheus text page.
pub fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A task with an id, function and text payload.
pub fn task(id: &str, function: &str, payload: &str) -> Task {
    Task {
        id: id.to_string(),
        tenant: None,
        function: function.to_string(),
        payload: payload.as_bytes().to_vec(),
        headers: BTreeMap::new(),
        submitted_at: None,
        not_before: None,
    }
}

/// A running `tidewater run`; killed when dropped.
pub struct SchedulerProcess {
    child: Option<Child>,
    pub log: PathBuf,
}

impl SchedulerProcess {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait(timeout)
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = self.wait(Duration::from_secs(10));
    }

    /// SIGSTOP: the process freezes, as on a paused machine.
    pub fn pause(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    /// SIGCONT after [`SchedulerProcess::pause`].
    pub fn resume(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "scheduler did not exit within {timeout:?}\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The `/metrics` address the scheduler logged at start.
    pub fn metrics_url(&self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log_text();
            if let Some(url) = log
                .split_whitespace()
                .find(|w| w.starts_with("http://") && w.ends_with("/metrics"))
            {
                return url.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no metrics address in the log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Resident memory of the process, in bytes, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        vm_rss(&self.pid().to_string())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The end of the log without its DEBUG lines: what a failure message can hold
    /// (CI shows only the start of a long one; the whole log is printed on drop).
    pub fn log_digest(&self) -> String {
        log_digest(&self.log_text(), 60)
    }

    /// What a stall report needs: the log digest and where every thread of the process
    /// is (through gdb, when installed), to tell a wait on Kafka from a stuck call.
    pub fn diagnosis(&self) -> String {
        format!(
            "{}\n--- threads of pid {} ---\n{}",
            self.log_digest(),
            self.pid(),
            thread_stacks(self.pid())
        )
    }
}

/// One line per thread of `pid`: its name and its innermost function names (gdb).
pub fn thread_stacks(pid: i32) -> String {
    let out = Command::new("timeout")
        .args(["60", "gdb", "-nx", "-batch", "-p", &pid.to_string()])
        .args(["-ex", "set pagination off", "-ex", "thread apply all bt 25"])
        .stdin(Stdio::null())
        .output();
    let Ok(out) = out else {
        return "(gdb not available)".into();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = Vec::new();
    let mut current: Option<(String, Vec<String>)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Thread ") {
            if let Some((name, frames)) = current.take() {
                lines.push(format!("{name}: {}", frames.join(" < ")));
            }
            let name = rest.split('"').nth(1).unwrap_or(rest).to_string();
            current = Some((name, Vec::new()));
        } else if let Some(frame) = line.strip_prefix('#') {
            // "#3  0x00… in name (args) at file:line", or "#1  name (args) …" when inlined.
            let rest = frame
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .trim_start();
            let rest = match rest.split_once(" in ") {
                Some((addr, f)) if addr.starts_with("0x") => f,
                _ => rest,
            };
            let name = rest.split(" (").next().unwrap_or(rest);
            let plumbing = [
                "__",
                "futex",
                "pthread_cond",
                "cnd_",
                "syscall",
                "start_thread",
                "clone",
            ];
            if let Some((_, frames)) = current.as_mut() {
                if frames.len() < 12
                    && !plumbing
                        .iter()
                        .any(|p| name.starts_with(p) || name.contains(p))
                {
                    frames.push(name.to_string());
                }
            }
        }
    }
    if let Some((name, frames)) = current.take() {
        lines.push(format!("{name}: {}", frames.join(" < ")));
    }
    if lines.is_empty() {
        format!(
            "(no stacks: {})",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    } else {
        lines.join("\n")
    }
}

/// The last `keep` lines of `text` that are not DEBUG or TRACE, and how many were left out.
pub fn log_digest(text: &str, keep: usize) -> String {
    let quiet = |l: &&str| !(l.contains(" DEBUG ") || l.contains(" TRACE "));
    let total = text.lines().count();
    let kept: Vec<&str> = text.lines().filter(quiet).collect();
    let from = kept.len().saturating_sub(keep);
    format!(
        "--- the last {} of {total} log lines (DEBUG left out) ---\n{}",
        kept.len() - from,
        kept[from..].join("\n")
    )
}

impl Drop for SchedulerProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            if std::thread::panicking() {
                eprintln!(
                    "--- scheduler log {} ---\n{}",
                    self.log.display(),
                    self.log_text()
                );
            }
        }
    }
}
