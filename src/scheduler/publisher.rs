//! The publisher: makes outcomes durable, on a thread of its own.
//!
//! Units (the records a finished task produces, with the offset it completes) are
//! gathered into batches. With `delivery = "exactly_once"` each batch is one Kafka
//! transaction holding the outcome events, the status events and the consumer offsets
//! (with the offsets done above each partition's commit point in the commit metadata, so
//! whoever owns the partition next skips them): a `read_committed` consumer sees exactly
//! one terminal outcome per task. With `at_least_once`, records are produced and flushed,
//! and the scheduler commits offsets on its own cadence.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use metrics::counter;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{debug, error, warn};

use super::consumer::{GroupContext, Shared};
use super::offsets::TopicPartition;
use super::worker::Signal;
use crate::names::metrics as m;

/// One record to produce.
#[derive(Debug, Clone)]
pub struct OutRecord {
    pub topic: String,
    /// The task id, so a task's records share a partition (and compaction keeps its last).
    pub key: String,
    pub value: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

/// The offset a unit completes.
#[derive(Debug, Clone)]
pub struct DoneRef {
    pub tp: TopicPartition,
    pub offset: i64,
    /// The partition's assignment epoch, so a unit of an earlier assignment completes
    /// nothing in the current one.
    pub epoch: u64,
}

/// What the publisher tells the engine.
#[derive(Debug)]
pub enum FromPublisher<T> {
    /// A unit is durable: its token comes back.
    Durable(T),
    /// The producer failed for good (fenced by a newer instance, or a fatal error).
    Failed(KafkaError),
}

/// Records that must become durable together, and what to hand back once they are.
pub struct Unit<T> {
    /// Records, produced in order.
    pub records: Vec<OutRecord>,
    /// The offset completed when they are durable.
    pub done: Option<DoneRef>,
    /// Handed back to the scheduler loop afterwards.
    pub back: Option<T>,
}

/// Counts failed deliveries (at-least-once mode resends the batch).
#[derive(Default)]
pub struct DeliveryCounter {
    failed: AtomicUsize,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        if let Err((e, _)) = result {
            debug!(error = %e, "delivery failed");
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Why a batch could not be made durable this time.
enum BatchError {
    /// Try the same batch again (after aborting the transaction).
    Retry(KafkaError),
    /// The producer is unusable (fenced by a newer instance, or a fatal error).
    Fatal(KafkaError),
}

fn classify(e: KafkaError) -> BatchError {
    let fatal = match &e {
        KafkaError::Transaction(t) => t.is_fatal(),
        other => matches!(
            other.rdkafka_error_code(),
            Some(rdkafka::types::RDKafkaErrorCode::Fatal)
        ),
    };
    if fatal {
        BatchError::Fatal(e)
    } else {
        BatchError::Retry(e)
    }
}

/// The publisher's moving parts.
pub struct Publisher<T> {
    /// The producer (transactional in exactly-once mode).
    pub producer: BaseProducer<DeliveryCounter>,
    /// Whether batches are transactions.
    pub exactly_once: bool,
    /// Units in.
    pub rx: mpsc::Receiver<Unit<T>>,
    /// Durable units' tokens, and a failure, out.
    pub back: tokio::sync::mpsc::UnboundedSender<FromPublisher<T>>,
    /// Offsets and assignments.
    pub shared: Arc<Shared>,
    /// For the group metadata sent with each transaction's offsets.
    pub consumer: Arc<BaseConsumer<GroupContext>>,
    /// Longest a unit waits for its batch.
    pub linger: Duration,
}

/// Largest batch, in units (a task makes about two: its running status, then its
/// outcome): large enough that the per-batch round trip is not the bottleneck.
const MAX_BATCH: usize = 20_000;
/// Timeout of transaction calls.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

impl<T: Send + 'static> Publisher<T> {
    /// Runs until stopped (and drained) or abandoned.
    pub fn run(self, signal: Signal) {
        loop {
            if signal.is_abandoned() {
                return;
            }
            let first = match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(u) => u,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if signal.is_stopping() {
                        return;
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = vec![first];
            let deadline = Instant::now() + self.linger;
            while batch.len() < MAX_BATCH {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match self.rx.recv_timeout(left) {
                    Ok(u) => batch.push(u),
                    Err(_) => break,
                }
            }
            let mut backoff = Duration::from_millis(100);
            loop {
                if signal.is_abandoned() {
                    if self.exactly_once {
                        let _ = self.producer.abort_transaction(Duration::from_secs(5));
                    }
                    return;
                }
                let result = if self.exactly_once {
                    self.transact(&batch)
                } else {
                    self.produce(&batch)
                };
                match result {
                    Ok(()) => break,
                    Err(BatchError::Fatal(e)) => {
                        error!(error = %e, "the producer failed for good (fenced by a newer scheduler?); stopping");
                        counter!(m::TRANSACTIONS, m::L_RESULT => "fatal").increment(1);
                        let _ = self.back.send(FromPublisher::Failed(e));
                        return;
                    }
                    Err(BatchError::Retry(e)) => {
                        warn!(error = %e, units = batch.len(), retry_in = ?backoff, "batch not durable; retrying");
                        counter!(m::TRANSACTIONS, m::L_RESULT => "retry").increment(1);
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
            for unit in batch {
                if let Some(d) = &unit.done {
                    self.shared.published(&d.tp, d.epoch);
                }
                if let Some(back) = unit.back {
                    let _ = self.back.send(FromPublisher::Durable(back));
                }
            }
        }
    }

    fn send_all(&self, batch: &[Unit<T>]) -> Result<(), KafkaError> {
        for unit in batch {
            for r in &unit.records {
                let headers = r.headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
                    h.insert(Header {
                        key: k,
                        value: Some(v.as_bytes()),
                    })
                });
                let mut record = BaseRecord::to(&r.topic)
                    .key(&r.key)
                    .payload(&r.value)
                    .headers(headers);
                loop {
                    match self.producer.send(record) {
                        Ok(()) => break,
                        Err((
                            KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull,
                            ),
                            rec,
                        )) => {
                            record = rec;
                            self.producer.poll(Duration::from_millis(50));
                        }
                        Err((e, _)) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }

    fn mark_done(&self, batch: &[Unit<T>]) {
        let mut tracker = self.shared.tracker();
        for unit in batch {
            if let Some(d) = &unit.done {
                tracker.done(&d.tp, d.offset, d.epoch);
            }
        }
    }

    fn transact(&self, batch: &[Unit<T>]) -> Result<(), BatchError> {
        let attempt = || -> Result<(), KafkaError> {
            self.producer.begin_transaction()?;
            self.send_all(batch)?;
            // Done now: the offsets sent below include them, atomically with their
            // outcomes. If this transaction aborts, the same batch is sent again.
            self.mark_done(batch);
            let offsets = self.shared.tracker().transaction_offsets();
            if !offsets.is_empty() {
                let mut tpl = TopicPartitionList::new();
                for (tp, point, meta) in &offsets {
                    let mut e = tpl.add_partition(&tp.topic, tp.partition);
                    e.set_offset(Offset::Offset(*point))?;
                    e.set_metadata(meta.as_str());
                }
                if let Some(group) = self.consumer.group_metadata() {
                    self.producer
                        .send_offsets_to_transaction(&tpl, &group, TXN_TIMEOUT)?;
                }
            }
            self.producer.commit_transaction(TXN_TIMEOUT)?;
            Ok(())
        };
        match attempt() {
            Ok(()) => {
                counter!(m::TRANSACTIONS, m::L_RESULT => "committed").increment(1);
                Ok(())
            }
            Err(e) => {
                let class = classify(e);
                if let BatchError::Retry(_) = &class {
                    let _ = self.producer.abort_transaction(TXN_TIMEOUT);
                }
                Err(class)
            }
        }
    }

    fn produce(&self, batch: &[Unit<T>]) -> Result<(), BatchError> {
        let before = self.producer.context().failed.load(Ordering::Relaxed);
        self.send_all(batch).map_err(classify)?;
        self.producer.flush(TXN_TIMEOUT).map_err(classify)?;
        let failed = self.producer.context().failed.load(Ordering::Relaxed) - before;
        if failed > 0 {
            // Which ones is not known: send the batch again (at-least-once allows it).
            return Err(BatchError::Retry(KafkaError::MessageProduction(
                rdkafka::types::RDKafkaErrorCode::MessageTimedOut,
            )));
        }
        self.mark_done(batch);
        Ok(())
    }
}
