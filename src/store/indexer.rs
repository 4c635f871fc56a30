//! The indexer: reads the queue topics, the status topic and the logs topic from the
//! beginning and keeps the [store](super) up to date.
//!
//! Each replica reads every partition itself (manual assignment, no consumer-group
//! commits) and keeps the offsets it has consumed in its own store, in the same
//! transaction as the rows. Several replicas side by side each build their own store, and
//! a restarted replica continues exactly where its store stops. It runs on a thread of its
//! own: SQLite writes and librdkafka polls both block.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics::{counter, histogram};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Ingest, QueuedTask, StoreError, Writer};
use crate::clock::now_ms;
use crate::codec;
use crate::config::Config;
use crate::kafka::{self, KafkaOpError};
use crate::names::{headers as h, metrics as m, topics};
use crate::types::TopicPartition;

/// Why the indexer stopped.
#[derive(Debug, thiserror::Error)]
pub enum IndexerError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A Kafka client or topic problem.
    #[error(transparent)]
    Kafka(#[from] KafkaOpError),
    /// A consumer call failed.
    #[error("indexer consumer: cannot {what}: {source}")]
    Consumer {
        /// What it was doing.
        what: &'static str,
        /// The error.
        source: KafkaError,
    },
    /// The store's folder could not be created.
    #[error("cannot create the folder of the task store {path}: {source}")]
    Folder {
        /// The folder.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The indexer thread could not start or died.
    #[error("indexer thread: {0}")]
    Thread(String),
}

/// What the indexer has done so far; shared with the API (`/readyz`).
#[derive(Debug, Default)]
pub struct IndexerStatus {
    ready: AtomicBool,
    behind: AtomicUsize,
    records: AtomicU64,
    failure: Mutex<Option<String>>,
}

impl IndexerStatus {
    /// True once every partition has been read up to the high watermark it had when the
    /// indexer started.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Partitions not yet read up to their high watermark at start.
    pub fn partitions_behind(&self) -> usize {
        self.behind.load(Ordering::Relaxed)
    }

    /// Records indexed since start.
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Why the indexer stopped, if it failed.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Record bytes held in one batch at most (task logs can be large), besides
/// `indexer.batch_size`.
const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Queue,
    Status,
    Logs,
}

/// The indexer of one store.
pub struct Indexer {
    config: Arc<Config>,
    status: Arc<IndexerStatus>,
    writer: Writer,
}

impl Indexer {
    /// Opens (creating when missing) the store named by `config.indexer.store`.
    pub fn open(config: Arc<Config>) -> Result<Self, IndexerError> {
        let path = config.indexer.store.clone();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| IndexerError::Folder {
                path: parent.display().to_string(),
                source,
            })?;
        }
        let writer = Writer::open(&path)?;
        Ok(Self {
            config,
            status: Arc::new(IndexerStatus::default()),
            writer,
        })
    }

    /// Its progress, for readiness checks.
    pub fn status(&self) -> Arc<IndexerStatus> {
        self.status.clone()
    }

    /// Runs [`Indexer::run_blocking`] on a thread of its own.
    pub fn spawn(
        self,
        shutdown: CancellationToken,
    ) -> Result<std::thread::JoinHandle<Result<(), IndexerError>>, IndexerError> {
        std::thread::Builder::new()
            .name("tw-indexer".into())
            .spawn(move || {
                let status = self.status.clone();
                let out = self.run_blocking(shutdown);
                if let Err(e) = &out {
                    *status.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                }
                out
            })
            .map_err(|e| IndexerError::Thread(e.to_string()))
    }

    fn topics(&self) -> HashMap<String, Kind> {
        let prefix = &self.config.topics.prefix;
        let mut out: HashMap<String, Kind> = self
            .config
            .queue_topics()
            .into_iter()
            .map(|t| (t, Kind::Queue))
            .collect();
        out.insert(topics::status(prefix), Kind::Status);
        out.insert(topics::logs(prefix), Kind::Logs);
        out
    }

    fn consumer(&self) -> Result<BaseConsumer, IndexerError> {
        let mut cc = kafka::client_config(&self.config);
        let id = self
            .config
            .indexer
            .id
            .clone()
            .unwrap_or_else(crate::clock::default_instance_id);
        cc.set(
            "group.id",
            format!("{}.indexer.{id}", self.config.topics.prefix),
        );
        cc.set("enable.auto.commit", "false");
        cc.set("enable.auto.offset.store", "false");
        cc.set("enable.partition.eof", "true");
        kafka::set_default(&mut cc, "auto.offset.reset", "earliest");
        kafka::set_default(&mut cc, "isolation.level", "read_committed");
        kafka::set_default(&mut cc, "queued.max.messages.kbytes", "16384");
        cc.create().map_err(|source| {
            IndexerError::Kafka(KafkaOpError::Client {
                what: "indexer consumer",
                source,
            })
        })
    }

    /// Partitions of every topic the indexer reads; fails naming the missing topics.
    fn partitions(
        &self,
        consumer: &BaseConsumer,
        kinds: &HashMap<String, Kind>,
    ) -> Result<Vec<TopicPartition>, IndexerError> {
        let md = consumer
            .fetch_metadata(None, kafka::ADMIN_TIMEOUT)
            .map_err(|source| KafkaOpError::Unreachable {
                bootstrap: self.config.kafka.bootstrap_servers.clone(),
                timeout: kafka::ADMIN_TIMEOUT,
                source,
            })?;
        let mut out = Vec::new();
        let mut found = HashSet::new();
        for t in md.topics() {
            if kinds.contains_key(t.name()) && !t.partitions().is_empty() {
                found.insert(t.name().to_string());
                out.extend(
                    t.partitions()
                        .iter()
                        .map(|p| TopicPartition::new(t.name(), p.id())),
                );
            }
        }
        let mut missing: Vec<String> = kinds
            .keys()
            .filter(|t| !found.contains(*t))
            .cloned()
            .collect();
        if !missing.is_empty() {
            missing.sort();
            return Err(KafkaOpError::MissingTopics(missing).into());
        }
        out.sort();
        Ok(out)
    }

    fn assign(
        consumer: &BaseConsumer,
        partitions: &[TopicPartition],
        next: &HashMap<TopicPartition, i64>,
    ) -> Result<(), IndexerError> {
        let mut tpl = TopicPartitionList::new();
        for tp in partitions {
            let offset = next
                .get(tp)
                .map_or(Offset::Beginning, |o| Offset::Offset(*o));
            tpl.add_partition_offset(&tp.topic, tp.partition, offset)
                .map_err(|source| IndexerError::Consumer {
                    what: "build the assignment",
                    source,
                })?;
        }
        consumer
            .assign(&tpl)
            .map_err(|source| IndexerError::Consumer {
                what: "assign partitions",
                source,
            })
    }

    /// Indexes until `shutdown`, writing what it has read before it returns.
    pub fn run_blocking(mut self, shutdown: CancellationToken) -> Result<(), IndexerError> {
        let config = self.config.clone();
        let cfg = &config.indexer;
        let path = cfg.store.clone();
        let mut next = self.writer.offsets()?;
        let fresh = next.is_empty();
        let kinds = self.topics();
        let consumer = self.consumer()?;
        debug!("indexer: consumer created");
        // Topics created a moment ago may not be in the metadata yet: give them a while.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let mut partitions = loop {
            match self.partitions(&consumer, &kinds) {
                Err(IndexerError::Kafka(KafkaOpError::MissingTopics(_)))
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(500));
                }
                other => break other?,
            }
        };

        // Readiness: every partition read up to the high watermark it has now.
        let mut behind: HashMap<TopicPartition, i64> = HashMap::new();
        for tp in &partitions {
            // A partition created a moment ago may have no leader yet: ask again a while.
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            let (low, high) = loop {
                match consumer.fetch_watermarks(&tp.topic, tp.partition, kafka::ADMIN_TIMEOUT) {
                    Ok(w) => break w,
                    Err(e) if std::time::Instant::now() < deadline => {
                        debug!(topic = %tp.topic, partition = tp.partition, error = %e, "watermarks not available yet; retrying");
                        std::thread::sleep(Duration::from_millis(300));
                    }
                    Err(source) => {
                        return Err(IndexerError::Consumer {
                            what: "read high watermarks",
                            source,
                        });
                    }
                }
            };
            if high > next.get(tp).copied().unwrap_or(low).max(low) {
                behind.insert(tp.clone(), high);
            }
        }
        Self::assign(&consumer, &partitions, &next)?;
        debug!(
            partitions = partitions.len(),
            "indexer: partitions assigned"
        );
        info!(
            store = %path.display(),
            partitions = partitions.len(),
            behind = behind.len(),
            resumed = !fresh,
            "indexer started"
        );
        self.status.behind.store(behind.len(), Ordering::Relaxed);
        if behind.is_empty() {
            self.status.ready.store(true, Ordering::Release);
        }

        let batch_size = cfg.batch_size.get();
        let mut batch: Vec<Ingest> = Vec::with_capacity(batch_size.min(10_000));
        let mut pending: HashMap<TopicPartition, i64> = HashMap::new();
        let mut batch_bytes = 0usize;
        let mut first_at: Option<Instant> = None;
        let mut eof: HashSet<i32> = HashSet::new();
        let mut last_refresh = Instant::now();
        let mut last_sweep: Option<Instant> = None;
        // Planner statistics: refreshed once caught up, then every ten minutes.
        let mut last_optimize: Option<Instant> = None;
        let mut optimized_ready = false;
        let mut last_warn: Option<Instant> = None;
        let sweep_every =
            (cfg.retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let prefix = self.config.topics.prefix.clone();

        loop {
            let stopping = shutdown.is_cancelled();
            if !stopping {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(msg)) => {
                        let tp = TopicPartition::new(msg.topic(), msg.partition());
                        if let Some(kind) = kinds.get(&tp.topic) {
                            if let Some(item) = to_ingest(&prefix, *kind, &msg) {
                                batch.push(item);
                                batch_bytes += msg.payload_len();
                            }
                        }
                        pending.insert(tp, msg.offset() + 1);
                        first_at.get_or_insert_with(Instant::now);
                    }
                    Some(Err(KafkaError::PartitionEOF(p))) => {
                        eof.insert(p);
                        first_at.get_or_insert_with(Instant::now);
                    }
                    Some(Err(e))
                        if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) =>
                    {
                        warn!(error = %e, "indexer consumer error");
                        last_warn = Some(Instant::now());
                    }
                    Some(Err(_)) | None => {}
                }
            }
            let due = first_at.is_some_and(|t| t.elapsed() >= cfg.batch_wait);
            if batch.len() >= batch_size || batch_bytes >= MAX_BATCH_BYTES || due || stopping {
                if !batch.is_empty() || !pending.is_empty() {
                    let offsets: Vec<(String, i32, i64)> = pending
                        .iter()
                        .map(|(tp, o)| (tp.topic.clone(), tp.partition, *o))
                        .collect();
                    let started = Instant::now();
                    let stats = self.writer.apply(&batch, &offsets)?;
                    histogram!(m::INDEXER_BATCH_SECONDS).record(started.elapsed().as_secs_f64());
                    counter!(m::INDEXER_RECORDS, m::L_KIND => "task").increment(stats.tasks);
                    counter!(m::INDEXER_RECORDS, m::L_KIND => "status").increment(stats.statuses);
                    counter!(m::INDEXER_RECORDS, m::L_KIND => "log").increment(stats.logs);
                    self.status
                        .records
                        .fetch_add(stats.tasks + stats.statuses + stats.logs, Ordering::Relaxed);
                    debug!(records = batch.len(), took = ?started.elapsed(), "indexer batch written");
                    next.extend(pending.drain());
                    batch.clear();
                    batch_bytes = 0;
                }
                first_at = None;
                if !behind.is_empty() {
                    self.check_caught_up(&consumer, &mut behind, &next, &mut eof);
                }
            }
            if stopping {
                info!(records = self.status.records(), "indexer stopped");
                return Ok(());
            }
            if last_refresh.elapsed() >= Duration::from_secs(30) && batch.is_empty() {
                last_refresh = Instant::now();
                match self.partitions(&consumer, &kinds) {
                    Ok(now) if now != partitions => {
                        info!(
                            before = partitions.len(),
                            after = now.len(),
                            "indexer: partitions changed"
                        );
                        Self::assign(&consumer, &now, &next)?;
                        partitions = now;
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "indexer: cannot refresh partitions"),
                }
            }
            if batch.is_empty()
                && ((self.status.is_ready() && !optimized_ready)
                    || last_optimize.is_none_or(|t| t.elapsed() >= Duration::from_secs(600)))
            {
                let started = Instant::now();
                self.writer.optimize()?;
                debug!(took = ?started.elapsed(), "indexer: planner statistics refreshed");
                last_optimize = Some(Instant::now());
                optimized_ready = self.status.is_ready();
            }
            if self.status.is_ready()
                && batch.is_empty()
                && last_sweep.is_none_or(|t| t.elapsed() >= sweep_every)
            {
                last_sweep = Some(Instant::now());
                let now = now_ms();
                let cutoff = now
                    .saturating_sub(i64::try_from(cfg.retention.as_millis()).unwrap_or(i64::MAX));
                let deleted = self.writer.sweep(cutoff, now, 5000)?;
                if deleted > 0 {
                    info!(
                        deleted,
                        "retention: deleted tasks that finished before the retention period"
                    );
                }
            }
        }
    }

    /// Drops from `behind` the partitions now read up to their start high watermark. A
    /// partition that ends with a transaction marker reports end-of-partition one short of
    /// its high watermark; that counts as caught up too.
    fn check_caught_up(
        &self,
        consumer: &BaseConsumer,
        behind: &mut HashMap<TopicPartition, i64>,
        next: &HashMap<TopicPartition, i64>,
        eof: &mut HashSet<i32>,
    ) {
        let positions: HashMap<TopicPartition, i64> = consumer
            .position()
            .map(|tpl| {
                tpl.elements()
                    .iter()
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(o) => {
                            Some((TopicPartition::new(e.topic(), e.partition()), o))
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        behind.retain(|tp, high| {
            let stored = next.get(tp).copied().unwrap_or(-1);
            let pos = positions.get(tp).copied().unwrap_or(-1).max(stored);
            !(pos >= *high || (eof.contains(&tp.partition) && pos >= *high - 1))
        });
        eof.clear();
        self.status.behind.store(behind.len(), Ordering::Relaxed);
        if behind.is_empty() && !self.status.is_ready() {
            info!(records = self.status.records(), "indexer caught up: ready");
            self.status.ready.store(true, Ordering::Release);
        }
    }
}

/// The record as something to index; `None` for records that are skipped (compaction
/// tombstones, undecodable status or log records).
fn to_ingest(prefix: &str, kind: Kind, msg: &BorrowedMessage<'_>) -> Option<Ingest> {
    let value = msg.payload().unwrap_or_default();
    match kind {
        Kind::Queue => {
            let mut content_type = None;
            if let Some(hs) = msg.headers() {
                for hd in hs.iter() {
                    if hd.key.eq_ignore_ascii_case(h::CONTENT_TYPE) {
                        content_type = hd.value.and_then(|v| std::str::from_utf8(v).ok());
                    }
                }
            }
            let tenant = topics::parse_queue(prefix, msg.topic())
                .map(|q| q.tenant)
                .unwrap_or_else(|| msg.topic().to_string());
            let timestamp = msg.timestamp().to_millis().unwrap_or_else(now_ms);
            // The same id the scheduler gives it: the task's, else the key, else the
            // record's position.
            let fallback = || {
                msg.key()
                    .and_then(|k| std::str::from_utf8(k).ok())
                    .filter(|k| !k.is_empty())
                    .map(str::to_string)
                    .unwrap_or_else(|| {
                        format!("{}-{}-{}", msg.topic(), msg.partition(), msg.offset())
                    })
            };
            let (id, function, submitted_at) = match codec::decode_task(value, content_type) {
                Ok(task) => {
                    let id = if task.id.is_empty() {
                        fallback()
                    } else {
                        task.id
                    };
                    (id, task.function, task.submitted_at.unwrap_or(timestamp))
                }
                Err(_) => {
                    counter!(m::INDEXER_RECORDS, m::L_KIND => "undecodable").increment(1);
                    (fallback(), String::new(), timestamp)
                }
            };
            Some(Ingest::Queued(QueuedTask {
                tenant,
                id,
                function,
                submitted_at,
                topic: msg.topic().to_string(),
                partition: msg.partition(),
                offset: msg.offset(),
            }))
        }
        Kind::Status => {
            if value.is_empty() {
                return None;
            }
            match codec::decode_status(value) {
                Ok(ev) => Some(Ingest::Status(ev)),
                Err(e) => {
                    counter!(m::INDEXER_RECORDS, m::L_KIND => "undecodable").increment(1);
                    debug!(topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), error = %e, "status record skipped");
                    None
                }
            }
        }
        Kind::Logs => {
            if value.is_empty() {
                return None;
            }
            match codec::decode_task_log(value) {
                Ok(log) => Some(Ingest::Log {
                    log,
                    partition: msg.partition(),
                    offset: msg.offset(),
                }),
                Err(e) => {
                    counter!(m::INDEXER_RECORDS, m::L_KIND => "undecodable").increment(1);
                    debug!(topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), error = %e, "log record skipped");
                    None
                }
            }
        }
    }
}
