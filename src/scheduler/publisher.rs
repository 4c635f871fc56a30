//! The publisher: makes outcomes durable, on a thread of its own.
//!
//! Units (the records a finished task produces, with the offset it completes) are
//! gathered into batches. With `delivery = "exactly_once"` each batch is one Kafka
//! transaction holding the outcome events, the status events and the consumer offsets
//! (with the offsets done above each partition's commit point in the commit metadata, so
//! whoever owns the partition next skips them): a `read_committed` consumer sees exactly
//! one terminal outcome per task. Batches alternate between two transactional producers
//! ([`LANES`]), one transaction at a time. With `at_least_once`, records are produced and flushed,
//! and the scheduler commits offsets on its own cadence.
//!
//! Failures follow librdkafka's error classes ([`class_of`](super::txn_calls::class_of)): a retriable error repeats
//! the same call (a timed-out commit or abort is resumed, never interleaved with a new
//! transaction); an abortable one aborts the transaction and replays the batch; a fatal
//! one (or fencing) drops the producer, builds a new one and replays. Offsets are marked
//! done only once their transaction committed, and before each attempt units of
//! partitions that went to another scheduler are dropped: their new owner runs them.
//! A batch that stays not durable makes the process not ready (`/readyz`) and is logged
//! every few seconds until the cluster answers again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use metrics::counter;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{debug, error, info, warn};

use super::consumer::{GroupContext, Shared};
use super::deliveries::{self, DeliveryPoller};
use super::heal::{self, Healer};
use super::offsets::TopicPartition;
use super::out_record::OutRecord;
use super::stall::Stall;
use super::txn_calls::{
    CALL_TIMEOUT, Class, OffsetsBeforeAndAfter, TxnError, class_of, init_transactions, txn_error,
    watched,
};
use super::worker::Signal;
use crate::kafka_stats::{Client, KafkaStats};
use crate::names::metrics as m;

mod healing;
mod hold;
mod sweep;
pub use hold::HeldBack;
pub use sweep::{Marks, Sweeper};

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
    /// Units are durable: their tokens come back, a batch at a time.
    Durable(Vec<T>),
    /// A unit was not published: its partition went to another scheduler, which runs
    /// the task again.
    Fenced(T),
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

/// Counts failed deliveries (at-least-once mode resends the batch) and exports the
/// producer's librdkafka statistics.
pub struct DeliveryCounter {
    failed: AtomicUsize,
    stats: KafkaStats,
}

impl DeliveryCounter {
    /// A context for a producer whose statistics are exported as `client`.
    pub fn new(client: Client) -> Self {
        Self {
            failed: AtomicUsize::new(0),
            stats: KafkaStats::new(client),
        }
    }
}

impl ClientContext for DeliveryCounter {
    fn stats_raw(&self, statistics: &[u8]) {
        self.stats.record(statistics);
    }
}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        if let Err((e, msg)) = result {
            crate::kafka::report_denied_write(e, rdkafka::Message::topic(msg));
            debug!(error = %e, "delivery failed");
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Builds a new producer for a lane (transactional, with the lane's transactional id, not
/// yet initialised, in exactly-once mode).
pub type ProducerFactory =
    Box<dyn Fn(usize) -> Result<BaseProducer<DeliveryCounter>, KafkaError> + Send>;

/// One of the publisher's producers, and the thread serving its delivery reports while a
/// commit or an abort waits for them.
pub struct Lane {
    /// Shared with a watched call's helper thread (see [`watched`]).
    producer: Arc<BaseProducer<DeliveryCounter>>,
    /// Which lane: a producer rebuilt after a failure is built for the same one (and so
    /// keeps its transactional id).
    index: usize,
    deliveries: Option<DeliveryPoller>,
}

impl Lane {
    /// Lane `index` with its (initialised, in exactly-once mode) producer.
    pub fn new(producer: BaseProducer<DeliveryCounter>, index: usize) -> Self {
        Self {
            producer: Arc::new(producer),
            index,
            deliveries: None,
        }
    }

    fn start_deliveries(&mut self) {
        self.deliveries = DeliveryPoller::start(&self.producer);
    }
}

/// Lanes in exactly-once mode. A transaction that follows another of the same
/// transactional id waits until the coordinator has written the previous one's markers
/// (its offsets are refused with `CONCURRENT_TRANSACTIONS` until then, 10-15 ms a batch on
/// a local broker); alternating two producers leaves each that time while the other's
/// transaction runs. Transactions still run one at a time, in order: each group offset
/// is sent after the previous transaction's, and the group coordinator keeps the offset
/// appended last, in whatever order the two producers' markers land.
pub const LANES: usize = 2;

/// The publisher's moving parts.
pub struct Publisher<T> {
    /// The producer the next batch goes to (transactional in exactly-once mode).
    pub lane: Lane,
    /// The other producer in exactly-once mode; batches alternate between the two.
    pub spare: Option<Lane>,
    /// Builds the next producer of a lane after a fatal error.
    pub factory: ProducerFactory,
    /// Whether batches are transactions.
    pub exactly_once: bool,
    /// Units in.
    pub rx: mpsc::Receiver<Unit<T>>,
    /// Durable (or fenced) units' tokens, and a failure, out.
    pub back: tokio::sync::mpsc::UnboundedSender<FromPublisher<T>>,
    /// Offsets and assignments.
    pub shared: Arc<Shared>,
    /// For the group metadata sent with each transaction's offsets.
    pub consumer: Arc<BaseConsumer<GroupContext>>,
    /// How long a batch waits for more units after its first (`scheduler.publish_linger`).
    pub linger: Duration,
    /// Ends what the broker left open of the lanes' transactions on the group's offsets
    /// partition, after a fault (exactly-once mode).
    pub healer: Healer,
    /// Ends, as aborted, what a failed transaction left open before its batch is
    /// replayed (exactly-once mode).
    pub sweeper: Sweeper,
    /// Units whose offsets do not fit the commit metadata yet (exactly-once mode).
    pub held: HeldBack<T>,
}

/// Largest batch, in units (a task makes about two: its running status, then its
/// outcome): large enough that the per-batch round trip is not the bottleneck.
const MAX_BATCH: usize = 20_000;
/// How long a retriable call is made again, and what its last error then becomes.
type Limit = (Duration, fn(KafkaError) -> TxnError);

/// Longest an abort is retried before the producer is replaced.
const ABORT_LIMIT: Duration = Duration::from_secs(10);
/// Longest `send_offsets_to_transaction` is retried before the transaction is aborted.
const OFFSETS_LIMIT: Duration = Duration::from_secs(15);
impl<T: Send + 'static> Publisher<T> {
    /// Runs until stopped (and drained) or abandoned.
    pub fn run(mut self, signal: Signal) {
        self.lane.start_deliveries();
        if let Some(spare) = &mut self.spare {
            spare.start_deliveries();
        }
        let stall = Stall::new(self.shared.clone());
        loop {
            if signal.is_abandoned() {
                return;
            }
            let first = match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(u) => Some(u),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if signal.is_stopping() {
                        return;
                    }
                    // Idle: serve the producer's events (its statistics), which would
                    // otherwise wait in its queue until the next batch.
                    self.lane.producer.poll(Duration::ZERO);
                    if let Some(spare) = &self.spare {
                        spare.producer.poll(Duration::ZERO);
                    }
                    if self.exactly_once {
                        self.maybe_heal(&signal, &stall);
                    }
                    if self.held.is_empty() {
                        continue;
                    }
                    // What was held back may fit now (offsets done without a unit: tasks
                    // skipped at intake, partitions revoked).
                    None
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let batch = &mut match first {
                Some(first) => self.gather(first),
                None => Vec::new(),
            };
            if self.exactly_once {
                self.hold_back(batch);
                if batch.is_empty() {
                    continue;
                }
            }
            if !self.make_durable(batch, &signal, &stall) {
                return;
            }
            // Idle is counted from the end of the last batch.
            self.healer.last_unit = Instant::now();
            if let Some(spare) = &mut self.spare {
                std::mem::swap(&mut self.lane, spare);
            }
            self.shared.published(
                batch
                    .iter()
                    .filter_map(|u| u.done.as_ref().map(|d| (&d.tp, d.epoch))),
            );
            let durable: Vec<T> = batch.drain(..).filter_map(|u| u.back).collect();
            if !durable.is_empty() {
                let _ = self.back.send(FromPublisher::Durable(durable));
            }
        }
    }

    /// Leaves in `batch` (after what was held back before) the units whose offsets fit
    /// the commit metadata; the rest wait in [`Publisher::held`]. Once the engine has
    /// stopped with nothing running, held units go back to it unpublished: the tasks
    /// below them will not finish here, and they run again on the next owner.
    fn hold_back(&mut self, batch: &mut Vec<Unit<T>>) {
        self.held.admit(batch, &self.shared.tracker());
        if !self.held.is_empty() && self.shared.is_giving_up_held() {
            let units = self.held.take_all();
            info!(
                units = units.len(),
                "stopping: outcomes held back are not published; those tasks run again"
            );
            for unit in units {
                if let Some(back) = unit.back {
                    let _ = self.back.send(FromPublisher::Fenced(back));
                }
            }
        }
    }

    /// The next batch: `first` and what else is waiting now (what finished while the
    /// previous batch was being made durable), then what comes within the linger, if any.
    /// So batches follow the load: a lone unit goes out at once, and under load each
    /// batch holds what arrived during the previous one's round trip.
    fn gather(&self, first: Unit<T>) -> Vec<Unit<T>> {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match self.rx.try_recv() {
                Ok(u) => batch.push(u),
                Err(_) => break,
            }
        }
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
        batch
    }

    /// Waits until every record sent is delivered (or failed), serving delivery reports
    /// as they come. rust-rdkafka's `flush` with a timeout polls in 100 ms slices that last
    /// their whole length (up to 100 ms more per batch), and shorter slices spin (see
    /// [`deliveries::serve_waiting`]): this looks, serves the waiting reports and naps.
    fn deliver_all(&self, timeout: Duration) -> Result<(), KafkaError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.lane.producer.flush(Duration::ZERO) {
                Ok(()) => return Ok(()),
                Err(KafkaError::Flush(rdkafka::types::RDKafkaErrorCode::OperationTimedOut)) => {
                    if Instant::now() >= deadline {
                        return Err(KafkaError::Flush(
                            rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
                        ));
                    }
                    deliveries::serve_waiting(&self.lane.producer);
                    std::thread::sleep(deliveries::NAP);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Tries until the batch is durable; false when abandoned or failed for good.
    fn make_durable(&mut self, batch: &mut Vec<Unit<T>>, signal: &Signal, stall: &Stall) -> bool {
        let mut backoff = Duration::from_millis(100);
        loop {
            if signal.is_abandoned() {
                return false;
            }
            let result = if self.exactly_once {
                self.drop_fenced(batch);
                self.sweep(signal, stall)
                    .and_then(|()| self.transact(batch, signal, stall))
            } else {
                self.produce(batch)
            };
            let e = match result {
                Ok(()) => {
                    counter!(m::TRANSACTIONS, m::L_RESULT => "committed").increment(1);
                    stall.durable();
                    return true;
                }
                Err(TxnError::Abandoned) => return false,
                Err(TxnError::Unsettled(e, offsets)) => {
                    counter!(m::TRANSACTIONS, m::L_RESULT => "fatal").increment(1);
                    warn!(error = %e, "the transactional producer failed while committing; settling the transaction with a new one");
                    stall.failed("transaction", &e);
                    if !self.rebuild(signal, stall) {
                        return false;
                    }
                    if self.settled_committed(&offsets) {
                        info!(
                            units = batch.len(),
                            "the transaction had committed: its batch is not replayed"
                        );
                        counter!(m::TRANSACTIONS, m::L_RESULT => "committed").increment(1);
                        counter!(m::OFFSET_COMMITS, m::L_RESULT => "ok").increment(1);
                        self.healer.committed(offsets.0);
                        self.mark_done(batch);
                        stall.durable();
                        return true;
                    }
                    self.sweeper.failed(records_of(batch));
                    continue;
                }
                Err(TxnError::Fatal(e)) if self.exactly_once => {
                    counter!(m::TRANSACTIONS, m::L_RESULT => "fatal").increment(1);
                    warn!(error = %e, "the transactional producer failed; building a new one and replaying the batch");
                    stall.failed("transaction", &e);
                    self.sweeper.failed(records_of(batch));
                    if !self.rebuild(signal, stall) {
                        return false;
                    }
                    continue;
                }
                Err(TxnError::Fatal(e)) => {
                    error!(error = %e, "the producer failed for good; stopping");
                    counter!(m::TRANSACTIONS, m::L_RESULT => "fatal").increment(1);
                    let _ = self.back.send(FromPublisher::Failed(e));
                    return false;
                }
                Err(TxnError::Abort(e)) => {
                    // An abort of its own (a partition revoked mid-transaction) with the
                    // cluster answering needs no sweep; one after a Kafka error does.
                    if self.exactly_once && !matches!(e, KafkaError::Canceled) {
                        self.sweeper.failed(records_of(batch));
                    }
                    e
                }
            };
            counter!(m::TRANSACTIONS, m::L_RESULT => "retry").increment(1);
            debug!(error = %e, units = batch.len(), retry_in = ?backoff, "batch not durable; replaying it");
            stall.failed("batch", &e);
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Whether a transaction whose commit ended without an answer committed, read from
    /// the group once a new producer of the lane has settled it (see
    /// [`heal::committed_by`]); `false` when the group cannot be read.
    fn settled_committed(&self, (ours, before): &OffsetsBeforeAndAfter) -> bool {
        if ours.is_empty() {
            return false;
        }
        let partitions: Vec<TopicPartition> = ours.iter().map(|(tp, _, _)| tp.clone()).collect();
        match (self.healer.group_offsets)(&partitions) {
            Ok(group) => heal::committed_by(ours, before, &group),
            Err(e) => {
                warn!(error = %e, "cannot read the group's offsets to settle a transaction; replaying its batch");
                false
            }
        }
    }

    /// Hands back, unpublished, the units of partitions this scheduler no longer owns.
    fn drop_fenced(&self, batch: &mut Vec<Unit<T>>) {
        let current = |u: &Unit<T>, tracker: &super::offsets::OffsetTracker| {
            u.done
                .as_ref()
                .is_none_or(|d| tracker.is_current(&d.tp, d.epoch))
        };
        let (keep, gone): (Vec<_>, Vec<_>) = {
            let tracker = self.shared.tracker();
            // Almost always all are current: then nothing moves.
            if batch.iter().all(|u| current(u, &tracker)) {
                return;
            }
            batch.drain(..).partition(|u| current(u, &tracker))
        };
        *batch = keep;
        if !gone.is_empty() {
            warn!(
                units = gone.len(),
                "outcomes of partitions now owned by another scheduler are dropped; it runs those tasks"
            );
        }
        for unit in gone {
            counter!(m::OUTCOMES_FENCED).increment(1);
            if let Some(back) = unit.back {
                let _ = self.back.send(FromPublisher::Fenced(back));
            }
        }
    }

    /// Builds a new transactional producer, trying until it works or the publisher is
    /// abandoned.
    fn rebuild(&mut self, signal: &Signal, stall: &Stall) -> bool {
        counter!(m::PRODUCER_RESTARTS).increment(1);
        let mut backoff = Duration::from_millis(500);
        loop {
            if signal.is_abandoned() {
                return false;
            }
            let initialised = (self.factory)(self.lane.index).and_then(|p| {
                init_transactions(&p, |e| {
                    stall.failed("init_transactions", e);
                    !signal.is_abandoned()
                })
                .map(|()| p)
            });
            match initialised {
                Ok(p) => {
                    // The old lane's delivery thread ends as the old lane is dropped.
                    self.lane = Lane::new(p, self.lane.index);
                    self.lane.start_deliveries();
                    info!(lane = self.lane.index, "new transactional producer ready");
                    return true;
                }
                Err(e) => {
                    stall.failed("new producer", &e);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Makes one call, repeating it while its error is retriable: for at most `limit`
    /// (then the last error is returned as `give_up`), or with no limit.
    fn again<R>(
        &self,
        what: &'static str,
        (signal, stall): (&Signal, &Stall),
        limit: Option<Limit>,
        op: impl Fn() -> Result<R, KafkaError>,
    ) -> Result<R, TxnError> {
        let started = Instant::now();
        loop {
            match op() {
                Ok(r) => return Ok(r),
                Err(e) => match class_of(&e) {
                    Class::Retry => {
                        if signal.is_abandoned() {
                            return Err(TxnError::Abandoned);
                        }
                        if let Some((limit, give_up)) = limit {
                            if started.elapsed() >= limit {
                                return Err(give_up(e));
                            }
                        }
                        stall.failed(what, &e);
                        // Serve delivery reports: a commit's flush cannot finish while
                        // they wait in the event queue ("the event queue must be polled").
                        self.lane.producer.poll(Duration::from_millis(100));
                    }
                    Class::Abort => return Err(TxnError::Abort(e)),
                    Class::Fatal => return Err(TxnError::Fatal(e)),
                },
            }
        }
    }

    /// Makes a call that waits for delivery reports while another thread serves them.
    fn serving_reports<R>(&self, call: impl FnOnce() -> R) -> R {
        match &self.lane.deliveries {
            Some(d) => d.during(call),
            None => call(),
        }
    }

    fn send_all(&self, batch: &[Unit<T>]) -> Result<(), KafkaError> {
        for unit in batch {
            for r in &unit.records {
                let empty = OwnedHeaders::new_with_capacity(r.header_count());
                let headers = r.headers().fold(empty, |h, (key, value)| {
                    h.insert(Header {
                        key,
                        value: Some(value),
                    })
                });
                let mut record = BaseRecord::to(&r.topic)
                    .key(r.key())
                    .payload(r.value())
                    .headers(headers);
                if let Some(place) = r.place {
                    record = record.partition(place.partition);
                    if let Some(ts) = place.timestamp {
                        record = record.timestamp(ts);
                    }
                }
                self.send_record(record)?;
            }
        }
        Ok(())
    }

    /// Sends a record, waiting while the producer's queue is full.
    fn send_record(&self, mut record: BaseRecord<'_, [u8], [u8]>) -> Result<(), KafkaError> {
        loop {
            match self.lane.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    rec,
                )) => {
                    record = rec;
                    self.lane.producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    fn mark_done(&self, batch: &[Unit<T>]) {
        let mut tracker = self.shared.tracker();
        for unit in batch {
            if let Some(d) = &unit.done {
                tracker.done(&d.tp, d.offset, d.epoch);
            }
        }
    }

    /// One transaction for the batch; aborted (and resolved) on an abortable error.
    fn transact(&self, batch: &[Unit<T>], signal: &Signal, stall: &Stall) -> Result<(), TxnError> {
        self.in_transaction(signal, stall, || self.transact_once(batch, signal, stall))
    }

    /// Runs `body` (a transaction, from its beginning to its commit); aborts the
    /// transaction (and resolves the abort) when it fails with an abortable error.
    fn in_transaction<R>(
        &self,
        signal: &Signal,
        stall: &Stall,
        body: impl FnOnce() -> Result<R, TxnError>,
    ) -> Result<R, TxnError> {
        match body() {
            Err(TxnError::Abort(e)) => {
                self.abort(signal, stall)?;
                Err(TxnError::Abort(e))
            }
            other => other,
        }
    }

    /// Aborts the transaction. An abort that fails other than by timing out, or keeps
    /// timing out once the cluster is back, leaves the producer unusable: a new one
    /// replays the batch (what this one sent is aborted, by the coordinator at the latest
    /// when the transaction times out).
    fn abort(&self, signal: &Signal, stall: &Stall) -> Result<(), TxnError> {
        self.again(
            "abort_transaction",
            (signal, stall),
            Some((ABORT_LIMIT, TxnError::Fatal)),
            || {
                // An abort waits for the delivery reports of what was sent (and purged):
                // they are served while it runs.
                self.lane.producer.poll(Duration::ZERO);
                self.serving_reports(|| self.lane.producer.abort_transaction(CALL_TIMEOUT))
            },
        )
        .map_err(|a| match a {
            TxnError::Abort(a) => TxnError::Fatal(a),
            other => other,
        })
    }

    fn transact_once(
        &self,
        batch: &[Unit<T>],
        signal: &Signal,
        stall: &Stall,
    ) -> Result<(), TxnError> {
        // The group generation as of now: if the partitions are lost after this point, the
        // offsets below are refused and the transaction aborts.
        let group = self.consumer.group_metadata();
        let began = Instant::now();
        self.lane.producer.begin_transaction().map_err(txn_error)?;
        self.send_all(batch).map_err(|e| match class_of(&e) {
            Class::Fatal => TxnError::Fatal(e),
            _ => TxnError::Abort(e),
        })?;
        let done: Vec<&DoneRef> = batch.iter().filter_map(|u| u.done.as_ref()).collect();
        let offsets = {
            let tracker = self.shared.tracker();
            if let Some(d) = done.iter().find(|d| !tracker.is_current(&d.tp, d.epoch)) {
                debug!(partition = %d.tp, "partition revoked during the transaction; replaying without it");
                return Err(TxnError::Abort(KafkaError::Canceled));
            }
            // As if the batch were done: the tracker itself changes only after the commit.
            (
                tracker.transaction_offsets_with(done.iter().map(|d| (&d.tp, d.offset))),
                tracker.transaction_offsets(),
            )
        };
        let (offsets, before) = offsets;
        if !offsets.is_empty() {
            let Some(group) = group else {
                return Err(TxnError::Abort(KafkaError::Canceled));
            };
            self.send_offsets(&offsets, group, signal, stall)?;
        }
        let sent = Instant::now();
        // Wait for the batch's deliveries here, serving their reports, so the commit's own
        // flush has nothing left to wait for.
        if let Err(e) = self.deliver_all(CALL_TIMEOUT) {
            debug!(error = %e, "deliveries still pending before the commit");
        }
        let delivered = Instant::now();
        match self.commit(signal, stall) {
            Err(TxnError::Fatal(e)) => {
                // The commit was asked for: the coordinator may have completed it.
                return Err(TxnError::Unsettled(e, Box::new((offsets, before))));
            }
            other => other?,
        }
        // Where a batch's time goes: sending includes the wait for the previous
        // transaction's markers (`CONCURRENT_TRANSACTIONS` retries of the offsets).
        debug!(units = batch.len(), send_and_offsets = ?sent - began, deliver = ?delivered - sent,
            commit = ?delivered.elapsed(), "transaction committed");
        if !offsets.is_empty() {
            // The group's offsets were committed with the transaction.
            counter!(m::OFFSET_COMMITS, m::L_RESULT => "ok").increment(1);
            self.healer.committed(offsets);
        }
        self.mark_done(batch);
        Ok(())
    }

    /// Adds the group's `offsets` (partition, offset, commit metadata) to the transaction.
    fn send_offsets(
        &self,
        offsets: &[(TopicPartition, i64, String)],
        group: ConsumerGroupMetadata,
        signal: &Signal,
        stall: &Stall,
    ) -> Result<(), TxnError> {
        let mut tpl = TopicPartitionList::new();
        for (tp, point, meta) in offsets {
            let mut e = tpl.add_partition(&tp.topic, tp.partition);
            e.set_offset(Offset::Offset(*point)).map_err(txn_error)?;
            e.set_metadata(meta.as_str());
        }
        // Nothing is committed yet: after a while, abort and replay instead.
        let args = Arc::new((tpl, group));
        self.again(
            "send_offsets_to_transaction",
            (signal, stall),
            Some((OFFSETS_LIMIT, TxnError::Abort)),
            || {
                let args = args.clone();
                watched(
                    &self.lane.producer,
                    "send_offsets_to_transaction",
                    move |p| p.send_offsets_to_transaction(&args.0, &args.1, CALL_TIMEOUT),
                )
            },
        )
    }

    /// Commits the transaction. A commit that timed out may still succeed: it is resumed
    /// until it resolves, never given up for a replay that could publish a batch twice.
    fn commit(&self, signal: &Signal, stall: &Stall) -> Result<(), TxnError> {
        self.again("commit_transaction", (signal, stall), None, || {
            self.serving_reports(|| self.lane.producer.commit_transaction(CALL_TIMEOUT))
        })
    }

    fn produce(&self, batch: &[Unit<T>]) -> Result<(), TxnError> {
        let before = self.lane.producer.context().failed.load(Ordering::Relaxed);
        self.send_all(batch).map_err(txn_error)?;
        self.deliver_all(CALL_TIMEOUT).map_err(txn_error)?;
        let failed = self.lane.producer.context().failed.load(Ordering::Relaxed) - before;
        if failed > 0 {
            // Which ones is not known: send the batch again (at-least-once allows it).
            return Err(TxnError::Abort(KafkaError::MessageProduction(
                rdkafka::types::RDKafkaErrorCode::MessageTimedOut,
            )));
        }
        self.mark_done(batch);
        Ok(())
    }
}

/// The records of a batch.
fn records_of<T>(batch: &[Unit<T>]) -> impl Iterator<Item = &OutRecord> {
    batch.iter().flat_map(|u| &u.records)
}
