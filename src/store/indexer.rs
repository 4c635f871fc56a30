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

use super::{Ingest, QueuedTask, Run, StoreError, Writer};
use crate::clock::now_ms;
use crate::codec;
use crate::config::Config;
use crate::health::Health;
use crate::kafka::{self, KafkaOpError};
use crate::kafka_stats::{self, KafkaStats};
use crate::names::{headers as h, metrics as m, topics};
use crate::types::TopicPartition;

/// The indexer's consumer: its librdkafka statistics are exported (`client="indexer"`).
type IndexerConsumer = BaseConsumer<KafkaStats>;

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
        what: &'static str,
        source: KafkaError,
    },
    /// The store's folder could not be created.
    #[error("cannot create the folder of the task store {path}: {source}")]
    Folder {
        path: String,
        source: std::io::Error,
    },
    /// The indexer thread could not start or died.
    #[error("indexer thread: {0}")]
    Thread(String),
}

/// The indexer's name in [`Health`] (`tidewater_ready{component="indexer"}`).
const HEALTH_COMPONENT: &str = "indexer";

/// What the indexer has done so far; shared with the API (`/readyz`).
#[derive(Debug, Default)]
pub struct IndexerStatus {
    ready: AtomicBool,
    behind: AtomicUsize,
    records: AtomicU64,
    failure: Mutex<Option<String>>,
    /// Why Kafka cannot be reached now (all brokers down), if it cannot.
    unreachable: Mutex<Option<String>>,
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

    /// Why the indexer cannot read Kafka now, if it cannot: the index falls behind until
    /// the cluster answers again (the indexer then catches up by itself).
    pub fn kafka_unreachable(&self) -> Option<String> {
        self.unreachable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_unreachable(&self, reason: Option<String>) {
        let mut current = self.unreachable.lock().unwrap_or_else(|p| p.into_inner());
        match (&*current, &reason) {
            (None, Some(r)) => {
                warn!(reason = %r, "indexer: Kafka cannot be reached; not ready until it can")
            }
            (Some(_), None) => info!("indexer: Kafka answers again"),
            _ => {}
        }
        *current = reason;
        drop(current);
        self.report();
    }

    /// Shows the readiness `/readyz` answers as `tidewater_ready{component="indexer"}` and
    /// on the metrics port's `/readyz`.
    fn report(&self) {
        let reason = self
            .failure()
            .or_else(|| {
                self.kafka_unreachable()
                    .map(|e| format!("cannot reach Kafka: {e}"))
            })
            .or_else(|| {
                (!self.is_ready()).then(|| {
                    format!(
                        "catching up: {} partitions behind",
                        self.partitions_behind()
                    )
                })
            });
        match reason {
            None => Health::global().ready(HEALTH_COMPONENT),
            Some(r) => Health::global().not_ready(HEALTH_COMPONENT, r),
        }
    }

    /// Why the indexer stopped, if it failed.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Whether a consumer error means no broker of the cluster can be reached.
fn is_cluster_gone(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown)
    )
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

/// The partitions being read and how far.
struct Reading {
    /// The topics read and what their records are.
    kinds: HashMap<String, Kind>,
    partitions: Vec<TopicPartition>,
    /// The next offset to read of each partition, as the store has it.
    next: HashMap<TopicPartition, i64>,
    /// Partitions not yet read up to the high watermark they had at start, with that
    /// watermark.
    behind: HashMap<TopicPartition, i64>,
    /// Partitions that reported their end since the last check, by number only (that is
    /// all the consumer tells).
    eof: HashSet<i32>,
    last_warn: Option<Instant>,
}

/// Records read and not yet written.
struct Batch {
    items: Vec<Ingest>,
    /// The next offset of each partition read, once the batch is written.
    pending: HashMap<TopicPartition, i64>,
    bytes: usize,
    /// When the first record (or end of partition) of the batch was read: a batch is
    /// written at the latest `indexer.batch_wait` later.
    first_at: Option<Instant>,
}

impl Batch {
    fn new(batch_size: usize) -> Self {
        Self {
            items: Vec::with_capacity(batch_size.min(10_000)),
            pending: HashMap::new(),
            bytes: 0,
            first_at: None,
        }
    }

    fn is_due(&self, batch_size: usize, batch_wait: Duration) -> bool {
        self.items.len() >= batch_size
            || self.bytes >= MAX_BATCH_BYTES
            || self.first_at.is_some_and(|t| t.elapsed() >= batch_wait)
    }
}

/// When the periodic work between batches was last done.
struct Upkeep {
    last_refresh: Instant,
    last_sweep: Option<Instant>,
    sweep_every: Duration,
    /// Planner statistics: refreshed once caught up, then every ten minutes.
    last_optimize: Option<Instant>,
    optimized_ready: bool,
}

impl Upkeep {
    fn new(retention: Duration) -> Self {
        Self {
            last_refresh: Instant::now(),
            last_sweep: None,
            sweep_every: (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60)),
            last_optimize: None,
            optimized_ready: false,
        }
    }
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
                    status.report();
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

    fn consumer(&self) -> Result<IndexerConsumer, IndexerError> {
        let mut cc = kafka::client_config(&self.config);
        let id = self
            .config
            .indexer
            .id
            .clone()
            .unwrap_or_else(crate::clock::default_instance_id);
        cc.set(
            "group.id",
            crate::names::topics::indexer_group(&self.config.topics.prefix, &id),
        );
        cc.set("enable.auto.commit", "false");
        cc.set("enable.auto.offset.store", "false");
        cc.set("enable.partition.eof", "true");
        kafka::set_default(&mut cc, "auto.offset.reset", "earliest");
        kafka::set_default(&mut cc, "isolation.level", "read_committed");
        kafka::set_default(&mut cc, "queued.max.messages.kbytes", "16384");
        kafka_stats::enable(&mut cc, &self.config);
        cc.create_with_context(KafkaStats::new(kafka_stats::Client::Indexer))
            .map_err(|source| {
                IndexerError::Kafka(KafkaOpError::Client {
                    what: "indexer consumer",
                    source,
                })
            })
    }

    /// Partitions of every topic the indexer reads; fails naming the missing topics.
    fn partitions(
        &self,
        consumer: &IndexerConsumer,
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
        consumer: &IndexerConsumer,
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
        let next = self.writer.offsets()?;
        let kinds = self.topics();
        let consumer = self.consumer()?;
        debug!("indexer: consumer created");
        let mut reading = self.start(&consumer, kinds, next)?;
        let (batch_size, batch_wait) = (
            self.config.indexer.batch_size.get(),
            self.config.indexer.batch_wait,
        );
        let mut batch = Batch::new(batch_size);
        let mut upkeep = Upkeep::new(self.config.indexer.retention);
        loop {
            let stopping = shutdown.is_cancelled();
            if !stopping {
                self.poll(&consumer, &mut reading, &mut batch);
            }
            if stopping || batch.is_due(batch_size, batch_wait) {
                self.write(&mut batch, &mut reading)?;
                if !reading.behind.is_empty() {
                    self.check_caught_up(&consumer, &mut reading);
                }
            }
            if stopping {
                info!(records = self.status.records(), "indexer stopped");
                return Ok(());
            }
            if batch.items.is_empty() {
                self.upkeep(&consumer, &mut reading, &mut upkeep)?;
            }
        }
    }

    /// Finds the partitions to read, notes how far behind they are and assigns them,
    /// each from the offset the store has consumed up to.
    fn start(
        &self,
        consumer: &IndexerConsumer,
        kinds: HashMap<String, Kind>,
        next: HashMap<TopicPartition, i64>,
    ) -> Result<Reading, IndexerError> {
        // Topics created a moment ago may not be in the metadata yet: give them a while.
        let deadline = Instant::now() + Duration::from_secs(15);
        let partitions = loop {
            match self.partitions(consumer, &kinds) {
                Err(IndexerError::Kafka(KafkaOpError::MissingTopics(_)))
                    if Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(500));
                }
                other => break other?,
            }
        };
        let behind = Self::behind(consumer, &partitions, &next)?;
        Self::assign(consumer, &partitions, &next)?;
        debug!(
            partitions = partitions.len(),
            "indexer: partitions assigned"
        );
        info!(
            store = %self.config.indexer.store.display(),
            partitions = partitions.len(),
            behind = behind.len(),
            resumed = !next.is_empty(),
            "indexer started"
        );
        self.status.behind.store(behind.len(), Ordering::Relaxed);
        if behind.is_empty() {
            self.status.ready.store(true, Ordering::Release);
        }
        self.status.report();
        Ok(Reading {
            kinds,
            partitions,
            next,
            behind,
            eof: HashSet::new(),
            last_warn: None,
        })
    }

    /// For readiness: the partitions whose high watermark now is past where the store
    /// has read them to, with that watermark.
    fn behind(
        consumer: &IndexerConsumer,
        partitions: &[TopicPartition],
        next: &HashMap<TopicPartition, i64>,
    ) -> Result<HashMap<TopicPartition, i64>, IndexerError> {
        let mut behind = HashMap::new();
        for tp in partitions {
            // A partition created a moment ago may have no leader yet: ask again a while.
            let deadline = Instant::now() + Duration::from_secs(15);
            let (low, high) = loop {
                match consumer.fetch_watermarks(&tp.topic, tp.partition, kafka::ADMIN_TIMEOUT) {
                    Ok(w) => break w,
                    Err(e) if Instant::now() < deadline => {
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
        Ok(behind)
    }

    /// Reads one record (or waits a little for one) into the batch.
    fn poll(&self, consumer: &IndexerConsumer, reading: &mut Reading, batch: &mut Batch) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => {
                if let Some(kind) = reading.kinds.get(msg.topic()) {
                    if let Some(item) = to_ingest(&self.config.topics.prefix, *kind, &msg) {
                        batch.items.push(item);
                        batch.bytes += msg.payload_len();
                    }
                }
                batch.pending.insert(
                    TopicPartition::new(msg.topic(), msg.partition()),
                    msg.offset().saturating_add(1),
                );
                batch.first_at.get_or_insert_with(Instant::now);
            }
            Some(Err(e)) if is_cluster_gone(&e) => {
                self.status.set_unreachable(Some(e.to_string()));
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                reading.eof.insert(p);
                batch.first_at.get_or_insert_with(Instant::now);
            }
            Some(Err(e))
                if reading
                    .last_warn
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(10)) =>
            {
                warn!(error = %e, "indexer consumer error");
                reading.last_warn = Some(Instant::now());
            }
            Some(Err(_)) | None => {}
        }
    }

    /// Writes the batch, if it holds anything, with the offsets it was read up to.
    fn write(&mut self, batch: &mut Batch, reading: &mut Reading) -> Result<(), IndexerError> {
        if !batch.items.is_empty() || !batch.pending.is_empty() {
            let offsets: Vec<(String, i32, i64)> = batch
                .pending
                .iter()
                .map(|(tp, o)| (tp.topic.to_string(), tp.partition, *o))
                .collect();
            let started = Instant::now();
            let stats = self.writer.apply(&batch.items, &offsets)?;
            histogram!(m::INDEXER_BATCH_SECONDS).record(started.elapsed().as_secs_f64());
            counter!(m::INDEXER_RECORDS, m::L_KIND => "task").increment(stats.tasks);
            counter!(m::INDEXER_RECORDS, m::L_KIND => "status").increment(stats.statuses);
            counter!(m::INDEXER_RECORDS, m::L_KIND => "log").increment(stats.logs);
            self.status
                .records
                .fetch_add(stats.tasks + stats.statuses + stats.logs, Ordering::Relaxed);
            debug!(records = batch.items.len(), took = ?started.elapsed(), "indexer batch written");
            reading.next.extend(batch.pending.drain());
            batch.items.clear();
            batch.bytes = 0;
        }
        batch.first_at = None;
        Ok(())
    }

    /// The work between batches, each when its time has come: follow partitions added
    /// to the topics, refresh the planner's statistics, delete what retention expired.
    fn upkeep(
        &mut self,
        consumer: &IndexerConsumer,
        reading: &mut Reading,
        upkeep: &mut Upkeep,
    ) -> Result<(), IndexerError> {
        // Every 30 s, and every 2 s while the cluster is away (to notice it is back).
        let refresh_every = if self.status.kafka_unreachable().is_some() {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(30)
        };
        if upkeep.last_refresh.elapsed() >= refresh_every {
            upkeep.last_refresh = Instant::now();
            let found = self.partitions(consumer, &reading.kinds);
            match &found {
                Err(IndexerError::Kafka(e @ KafkaOpError::Unreachable { .. })) => {
                    self.status.set_unreachable(Some(e.to_string()));
                }
                _ => self.status.set_unreachable(None),
            }
            match found {
                Ok(now) if now != reading.partitions => {
                    info!(
                        before = reading.partitions.len(),
                        after = now.len(),
                        "indexer: partitions changed"
                    );
                    Self::assign(consumer, &now, &reading.next)?;
                    reading.partitions = now;
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "indexer: cannot refresh partitions"),
            }
        }
        if (self.status.is_ready() && !upkeep.optimized_ready)
            || upkeep
                .last_optimize
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(600))
        {
            let started = Instant::now();
            self.writer.optimize()?;
            debug!(took = ?started.elapsed(), "indexer: planner statistics refreshed");
            upkeep.last_optimize = Some(Instant::now());
            upkeep.optimized_ready = self.status.is_ready();
        }
        if self.status.is_ready()
            && upkeep
                .last_sweep
                .is_none_or(|t| t.elapsed() >= upkeep.sweep_every)
        {
            upkeep.last_sweep = Some(Instant::now());
            let now = now_ms();
            let retention =
                i64::try_from(self.config.indexer.retention.as_millis()).unwrap_or(i64::MAX);
            let deleted = self
                .writer
                .sweep(now.saturating_sub(retention), now, 5000)?;
            if deleted > 0 {
                info!(
                    deleted,
                    "retention: deleted tasks that finished before the retention period"
                );
            }
        }
        Ok(())
    }

    /// Drops from `behind` the partitions now read up to their start high watermark. A
    /// partition that ends with a transaction marker reports end-of-partition one short of
    /// its high watermark; that counts as caught up too.
    fn check_caught_up(&self, consumer: &IndexerConsumer, reading: &mut Reading) {
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
        let Reading {
            behind, next, eof, ..
        } = reading;
        behind.retain(|tp, high| {
            let stored = next.get(tp).copied().unwrap_or(-1);
            let pos = positions.get(tp).copied().unwrap_or(-1).max(stored);
            !(pos >= *high || (eof.contains(&tp.partition) && pos >= high.saturating_sub(1)))
        });
        eof.clear();
        self.status.behind.store(behind.len(), Ordering::Relaxed);
        if behind.is_empty() && !self.status.is_ready() {
            info!(records = self.status.records(), "indexer caught up: ready");
            self.status.ready.store(true, Ordering::Release);
            self.status.report();
        }
    }
}

/// The `tw-redrive-id` header of a status or log record: the redrive whose run wrote it.
fn redrive_header(msg: &BorrowedMessage<'_>) -> Option<String> {
    msg.headers()?
        .iter()
        .find(|hd| hd.key == h::REDRIVE_ID)
        .and_then(|hd| hd.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_string)
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
            let (id, function, submitted_at, mut headers) =
                match codec::decode_task(value, content_type) {
                    Ok(task) => {
                        let id = if task.id.is_empty() {
                            fallback()
                        } else {
                            task.id
                        };
                        let at = task.submitted_at.unwrap_or(timestamp);
                        (id, task.function, at, task.headers)
                    }
                    Err(_) => {
                        counter!(m::INDEXER_RECORDS, m::L_KIND => "undecodable").increment(1);
                        (fallback(), String::new(), timestamp, Default::default())
                    }
                };
            let run = match headers.get(h::REDRIVE_ID) {
                Some(r) => Run::redrive(r, submitted_at),
                None => Run::default(),
            };
            Some(Ingest::Queued(QueuedTask {
                tenant,
                id,
                function,
                submitted_at,
                topic: msg.topic().to_string(),
                partition: msg.partition(),
                offset: msg.offset(),
                redrive_by: run
                    .redrive_id
                    .as_ref()
                    .and_then(|_| headers.remove(h::REDRIVE_BY)),
                run,
            }))
        }
        Kind::Status => {
            if value.is_empty() {
                return None;
            }
            match codec::decode_status(value) {
                Ok(ev) => {
                    let run = match redrive_header(msg) {
                        Some(r) => Run::redrive(&r, ev.submitted_at),
                        None => Run::default(),
                    };
                    Some(Ingest::Status(ev, run))
                }
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
                    redrive_id: redrive_header(msg),
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
