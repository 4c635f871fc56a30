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
//! Failures follow librdkafka's error classes ([`class_of`]): a retriable error repeats
//! the same call (a timed-out commit or abort is resumed, never interleaved with a new
//! transaction); an abortable one aborts the transaction and replays the batch; a fatal
//! one (or fencing) drops the producer, builds a new one and replays. Offsets are marked
//! done only once their transaction committed, and before each attempt units of
//! partitions that went to another scheduler are dropped: their new owner runs them.
//! A batch that stays not durable makes the process not ready (`/readyz`) and is logged
//! every few seconds until the cluster answers again.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use metrics::counter;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{debug, error, info, warn};

use super::consumer::{GroupContext, Shared};
use super::deliveries::{self, DeliveryPoller};
use super::offsets::TopicPartition;
use super::out_record::OutRecord;
use super::worker::Signal;
use crate::health::Health;
use crate::kafka_stats::{Client, KafkaStats};
use crate::names::metrics as m;

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

/// How a failed Kafka call is handled, by librdkafka's error classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Call the same operation again (a timeout, a coordinator moving).
    Retry,
    /// Abort the transaction and replay the batch.
    Abort,
    /// The producer is unusable: build a new one and replay.
    Fatal,
}

/// The class of a failed call.
pub fn class_of(e: &KafkaError) -> Class {
    use rdkafka::types::RDKafkaErrorCode as C;
    match e {
        KafkaError::Transaction(t) if t.is_fatal() => Class::Fatal,
        KafkaError::Transaction(t) if t.txn_requires_abort() => Class::Abort,
        KafkaError::Transaction(t) if t.is_retriable() => Class::Retry,
        other => match other.rdkafka_error_code() {
            Some(C::Fatal | C::ProducerFenced | C::InvalidProducerEpoch) => Class::Fatal,
            _ => Class::Abort,
        },
    }
}

/// Why a batch is not durable (yet).
#[derive(Debug)]
enum TxnError {
    /// Aborted (or to be resent): replay the batch.
    Abort(KafkaError),
    /// The producer is unusable.
    Fatal(KafkaError),
    /// The publisher was told to exit at once.
    Abandoned,
}

fn txn_error(e: KafkaError) -> TxnError {
    match class_of(&e) {
        Class::Fatal => TxnError::Fatal(e),
        Class::Retry | Class::Abort => TxnError::Abort(e),
    }
}

/// Calls `init_transactions` until it succeeds, fails other than by timing out (a
/// coordinator that is loading or moving times out and is asked again: the same call
/// resumes where it was), or `retrying` returns false for a timed-out call.
pub fn init_transactions(
    producer: &BaseProducer<DeliveryCounter>,
    mut retrying: impl FnMut(&KafkaError) -> bool,
) -> Result<(), KafkaError> {
    loop {
        match producer.init_transactions(CALL_TIMEOUT) {
            Ok(()) => return Ok(()),
            Err(e) if class_of(&e) == Class::Retry && retrying(&e) => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Longest a transactional call that may block without end is waited for: three times
/// the timeout it is given.
const WATCHDOG: Duration = Duration::from_secs(15);

/// Makes `call` on a helper thread and waits at most [`WATCHDOG`] for it.
///
/// librdkafka 2.12's `send_offsets_to_transaction` waits for its internal request without
/// a deadline, and was seen to wait for minutes when a broker stopped at the wrong moment
/// (the fault suite's rolling restart). Its transaction has committed nothing then, so
/// giving the producer up is safe: the call answers as a fatal error, the publisher builds
/// a new producer and replays the batch, and the coordinator aborts the abandoned
/// transaction when it times out. The stuck thread keeps the old producer alive until the
/// call returns.
fn watched(
    producer: &Arc<BaseProducer<DeliveryCounter>>,
    what: &'static str,
    call: impl FnOnce(&BaseProducer<DeliveryCounter>) -> Result<(), KafkaError> + Send + 'static,
) -> Result<(), KafkaError> {
    let p = producer.clone();
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("tw-txn-call".into())
        .spawn(move || {
            let _ = tx.send(call(&p));
        });
    if let Err(e) = spawned {
        error!(error = %e, call = what, "cannot start a thread for a transactional call");
        return Err(KafkaError::MessageProduction(
            rdkafka::types::RDKafkaErrorCode::Fatal,
        ));
    }
    rx.recv_timeout(WATCHDOG).unwrap_or_else(|_| {
        error!(call = what, waited = ?WATCHDOG, "a transactional call did not return; replacing the producer");
        Err(KafkaError::MessageProduction(
            rdkafka::types::RDKafkaErrorCode::Fatal,
        ))
    })
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
}

/// Largest batch, in units (a task makes about two: its running status, then its
/// outcome): large enough that the per-batch round trip is not the bottleneck.
const MAX_BATCH: usize = 20_000;
/// Timeout of one transactional call; a timed-out call is made again.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a retriable call is made again, and what its last error then becomes.
type Limit = (Duration, fn(KafkaError) -> TxnError);

/// Longest an abort is retried before the producer is replaced.
const ABORT_LIMIT: Duration = Duration::from_secs(10);
/// Longest `send_offsets_to_transaction` is retried before the transaction is aborted.
const OFFSETS_LIMIT: Duration = Duration::from_secs(15);
/// After this long without a durable batch the process reports itself not ready.
pub const STALL_AFTER: Duration = Duration::from_secs(10);
/// How often a stalled publisher says so.
const STALL_LOG_EVERY: Duration = Duration::from_secs(5);
/// The component name in `/readyz` and `tidewater_ready`.
const COMPONENT: &str = "publisher";

/// Since when the current batch has not become durable, and when that was last said.
struct Stall {
    since: Cell<Option<Instant>>,
    logged: Cell<Option<Instant>>,
    /// Tells the engine to stop fetching while outcomes cannot be made durable.
    shared: Arc<Shared>,
}

impl Stall {
    fn new(shared: Arc<Shared>) -> Self {
        Self {
            since: Cell::new(None),
            logged: Cell::new(None),
            shared,
        }
    }

    /// A call failed: report it once the stall is long enough, every few seconds.
    fn failed(&self, what: &str, e: &KafkaError) {
        let now = Instant::now();
        let since = self.since.get().unwrap_or(now);
        self.since.set(Some(since));
        let stalled = now.duration_since(since);
        if stalled < STALL_AFTER {
            debug!(error = %e, call = what, "not durable yet; trying again");
            return;
        }
        if self
            .logged
            .get()
            .is_some_and(|at| now.duration_since(at) < STALL_LOG_EVERY)
        {
            return;
        }
        self.logged.set(Some(now));
        let reason = format!("no durable batch for {}s ({what}: {e})", stalled.as_secs());
        warn!(error = %e, call = what, stalled_for = ?Duration::from_secs(stalled.as_secs()),
            "outcomes are not durable; still trying (is the Kafka cluster reachable?)");
        Health::global().not_ready(COMPONENT, reason);
        self.shared.set_stalled(true);
    }

    /// A batch became durable.
    fn durable(&self) {
        if let Some(since) = self.since.take() {
            if self.logged.take().is_some() {
                info!(after = ?since.elapsed(), "outcomes are durable again");
            }
        }
        Health::global().ready(COMPONENT);
        self.shared.set_stalled(false);
    }
}

impl<T: Send + 'static> Publisher<T> {
    /// Runs until stopped (and drained) or abandoned.
    pub fn run(mut self, signal: Signal) {
        self.lane.start_deliveries();
        if let Some(spare) = &mut self.spare {
            spare.start_deliveries();
        }
        let stall = Stall::new(self.shared.clone());
        Health::global().ready(COMPONENT);
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
                    // Idle: serve the producer's events (its statistics), which would
                    // otherwise wait in its queue until the next batch.
                    self.lane.producer.poll(Duration::ZERO);
                    if let Some(spare) = &self.spare {
                        spare.producer.poll(Duration::ZERO);
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let batch = &mut self.gather(first);
            if !self.make_durable(batch, &signal, &stall) {
                return;
            }
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
    /// [`deliveries::serve_waiting`]): this looks, serves a waiting report and naps.
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
                self.transact(batch, signal, stall)
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
                Err(TxnError::Fatal(e)) if self.exactly_once => {
                    counter!(m::TRANSACTIONS, m::L_RESULT => "fatal").increment(1);
                    warn!(error = %e, "the transactional producer failed; building a new one and replaying the batch");
                    stall.failed("transaction", &e);
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
                Err(TxnError::Abort(e)) => e,
            };
            counter!(m::TRANSACTIONS, m::L_RESULT => "retry").increment(1);
            debug!(error = %e, units = batch.len(), retry_in = ?backoff, "batch not durable; replaying it");
            stall.failed("batch", &e);
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
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
                loop {
                    match self.lane.producer.send(record) {
                        Ok(()) => break,
                        Err((
                            KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull,
                            ),
                            rec,
                        )) => {
                            record = rec;
                            self.lane.producer.poll(Duration::from_millis(50));
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

    /// One transaction for the batch; aborted (and resolved) on an abortable error.
    fn transact(&self, batch: &[Unit<T>], signal: &Signal, stall: &Stall) -> Result<(), TxnError> {
        match self.transact_once(batch, signal, stall) {
            Err(TxnError::Abort(e)) => {
                // An abort that fails other than by timing out, or keeps timing out once
                // the cluster is back, leaves the producer unusable: a new one replays the
                // batch (what this one sent is aborted, by the coordinator at the latest
                // when the transaction times out).
                self.again(
                    "abort_transaction",
                    (signal, stall),
                    Some((ABORT_LIMIT, TxnError::Fatal)),
                    || {
                        // An abort waits for the delivery reports of what was sent (and
                        // purged): they are served while it runs.
                        self.lane.producer.poll(Duration::ZERO);
                        self.serving_reports(|| self.lane.producer.abort_transaction(CALL_TIMEOUT))
                    },
                )
                .map_err(|a| match a {
                    TxnError::Abort(a) => TxnError::Fatal(a),
                    other => other,
                })?;
                Err(TxnError::Abort(e))
            }
            other => other,
        }
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
            tracker.transaction_offsets_with(done.iter().map(|d| (&d.tp, d.offset)))
        };
        if !offsets.is_empty() {
            let Some(group) = group else {
                return Err(TxnError::Abort(KafkaError::Canceled));
            };
            let mut tpl = TopicPartitionList::new();
            for (tp, point, meta) in &offsets {
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
            )?;
        }
        let sent = Instant::now();
        // Wait for the batch's deliveries here, serving their reports, so the commit's own
        // flush has nothing left to wait for.
        if let Err(e) = self.deliver_all(CALL_TIMEOUT) {
            debug!(error = %e, "deliveries still pending before the commit");
        }
        let delivered = Instant::now();
        // A commit that timed out may still succeed: it is resumed until it resolves,
        // never given up for a replay that could publish the batch twice.
        self.again("commit_transaction", (signal, stall), None, || {
            self.serving_reports(|| self.lane.producer.commit_transaction(CALL_TIMEOUT))
        })?;
        // Where a batch's time goes: sending includes the wait for the previous
        // transaction's markers (`CONCURRENT_TRANSACTIONS` retries of the offsets).
        debug!(units = batch.len(), send_and_offsets = ?sent - began, deliver = ?delivered - sent,
            commit = ?delivered.elapsed(), "transaction committed");
        if !offsets.is_empty() {
            // The group's offsets were committed with the transaction.
            counter!(m::OFFSET_COMMITS, m::L_RESULT => "ok").increment(1);
        }
        self.mark_done(batch);
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode as C;

    #[test]
    fn produce_errors_are_classed_fatal_only_when_the_producer_is_gone() {
        assert_eq!(
            class_of(&KafkaError::MessageProduction(C::Fatal)),
            Class::Fatal
        );
        assert_eq!(
            class_of(&KafkaError::MessageProduction(C::ProducerFenced)),
            Class::Fatal
        );
        assert_eq!(
            class_of(&KafkaError::MessageProduction(C::MessageTimedOut)),
            Class::Abort
        );
        assert_eq!(class_of(&KafkaError::Canceled), Class::Abort);
    }
}
