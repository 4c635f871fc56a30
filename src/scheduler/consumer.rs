//! The scheduler's Kafka consumer, on a thread of its own.
//!
//! The thread polls without pause, so rebalance callbacks run and the group never drops
//! the member, however long tasks run; backpressure pauses partitions instead of
//! stopping the poll. Records go to the dispatcher through a small bounded channel. On
//! revoke, the callback stops new work of the revoked partitions, gives their running
//! attempts a bounded grace period, commits what is done, and only then lets them go.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use metrics::counter;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::offsets::{OffsetTracker, TopicPartition};
use super::worker::Signal;
use crate::codec::SourceView;
use crate::kafka_stats::KafkaStats;
use crate::names::{headers as h, metrics as m};
use crate::types::TpSet;

/// A fetched record, owned, with what the scheduler needs from it.
#[derive(Debug, Clone)]
pub struct Record {
    /// Topic (its name shared by every record of it, see [`Topics`]) and partition.
    pub tp: TopicPartition,
    /// Offset.
    pub offset: i64,
    /// Key (boxed slices, not vectors: a held task keeps its record).
    pub key: Option<Box<[u8]>>,
    /// Value.
    pub value: Box<[u8]>,
    /// `content-type` header.
    pub content_type: Option<Box<str>>,
    /// `traceparent` header.
    pub traceparent: Option<Box<str>>,
    /// `tracestate` header (boxed: rarely set, and held with every task).
    pub tracestate: Option<Box<str>>,
    /// Whether the key is an ordering key (`tw-ordered: true`).
    pub ordered: bool,
    /// Record timestamp, ms; negative when it has none (see [`Record::timestamp`]; not an
    /// `Option`, which would take 8 more bytes of every held task).
    pub timestamp_ms: i64,
}

impl Record {
    /// Copies what is needed out of a consumed message of partition `tp`.
    pub fn from_message<M: Message>(msg: &M, tp: TopicPartition) -> Self {
        let mut content_type = None;
        let mut traceparent = None;
        let mut tracestate = None;
        let mut ordered = false;
        if let Some(hs) = msg.headers() {
            for hd in hs.iter() {
                let value = hd.value.and_then(|v| std::str::from_utf8(v).ok());
                if hd.key.eq_ignore_ascii_case(h::CONTENT_TYPE) {
                    content_type = value.map(Box::from);
                } else if hd.key.eq_ignore_ascii_case(h::TRACEPARENT) {
                    traceparent = value.map(Box::from);
                } else if hd.key.eq_ignore_ascii_case(h::TRACESTATE) {
                    tracestate = value.map(Box::from);
                } else if hd.key.eq_ignore_ascii_case(h::ORDERED) {
                    ordered = value.is_some_and(|v| v.eq_ignore_ascii_case("true"));
                }
            }
        }
        Record {
            tp,
            offset: msg.offset(),
            key: msg.key().map(Box::from),
            value: msg.payload().map(Box::from).unwrap_or_default(),
            content_type,
            traceparent,
            tracestate,
            ordered,
            timestamp_ms: msg.timestamp().to_millis().unwrap_or(-1),
        }
    }

    /// Its timestamp, ms, when it has one.
    pub fn timestamp(&self) -> Option<i64> {
        (self.timestamp_ms >= 0).then_some(self.timestamp_ms)
    }

    /// Where it was read from.
    pub fn source(&self) -> SourceView<'_> {
        SourceView {
            topic: &self.tp.topic,
            partition: self.tp.partition,
            offset: self.offset,
        }
    }

    /// Its key, when it is non-empty UTF-8.
    fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
            .filter(|k| !k.is_empty())
    }

    /// The ordering key, when the record is marked ordered and has a UTF-8 key.
    pub fn ordering_key(&self) -> Option<&str> {
        self.key_str().filter(|_| self.ordered)
    }

    /// The task id when the submitter chose none: the record key, else its position.
    pub fn fallback_id(&self) -> String {
        self.key_str().map_or_else(
            || format!("{}-{}-{}", self.tp.topic, self.tp.partition, self.offset),
            str::to_string,
        )
    }
}

/// What the consumer thread tells the dispatcher.
#[derive(Debug)]
pub enum FromConsumer {
    /// A record, with the epoch of its partition's assignment.
    Record(Box<Record>, u64),
    /// Partitions were revoked (their running work had its grace; what was done is
    /// committed): drop what is queued of them.
    Revoked(Vec<TopicPartition>),
    /// The consumer cannot go on.
    Fatal(KafkaError),
}

/// State shared by the consumer thread, its callbacks, the engine and the publisher.
pub struct Shared {
    tracker: Mutex<OffsetTracker>,
    /// Signalled whenever a partition may have stopped being busy (an attempt ended, an
    /// outcome became durable) while a revoke waits, so it waits without polling.
    less_busy: Condvar,
    /// How many wait on `less_busy`; changed and read with `tracker` locked, so a change
    /// of the tracker either precedes a waiter's check or sees the waiter. Nobody waits
    /// outside a revoke: the per-task path then skips the wake-up (a system call).
    waiters: AtomicUsize,
    /// Set while outcomes cannot be made durable (the cluster is away, an ACL is
    /// missing): the engine then fetches nothing new.
    stalled: AtomicBool,
    /// Set once the engine is stopping with no attempt left: outcomes the publisher
    /// holds back (see `publisher::hold`) go back unpublished.
    give_up_held: AtomicBool,
    /// Grace for running attempts of revoked partitions.
    pub rebalance_grace: Duration,
    /// Offsets are committed in the publisher's transactions, never by the consumer.
    pub exactly_once: bool,
}

impl Shared {
    /// State for a consumer of the scheduler group.
    pub fn new(rebalance_grace: Duration, exactly_once: bool) -> Self {
        Self {
            tracker: Mutex::new(OffsetTracker::new()),
            less_busy: Condvar::new(),
            waiters: AtomicUsize::new(0),
            stalled: AtomicBool::new(false),
            give_up_held: AtomicBool::new(false),
            rebalance_grace,
            exactly_once,
        }
    }

    /// Locks the tracker (a panic elsewhere leaves it consistent: each method is a step).
    pub fn tracker(&self) -> MutexGuard<'_, OffsetTracker> {
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether outcomes cannot be made durable now.
    pub fn is_stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed)
    }

    /// Outcomes cannot be made durable (`true`), or can again.
    pub fn set_stalled(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::Relaxed);
    }

    /// The engine is stopping and nothing runs: held-back outcomes are given up.
    pub fn give_up_held(&self) {
        self.give_up_held.store(true, Ordering::Relaxed);
    }

    /// Whether held-back outcomes are given up.
    pub fn is_giving_up_held(&self) -> bool {
        self.give_up_held.load(Ordering::Relaxed)
    }

    /// An attempt of `tp` (assignment `epoch`) is no longer running; whether the
    /// partition is still assigned under that epoch.
    pub fn attempt_ended(&self, tp: &TopicPartition, epoch: u64) -> bool {
        self.changing(|t| {
            t.unmark_running(tp, epoch);
            t.is_current(tp, epoch)
        })
    }

    /// These outcomes (partition, assignment epoch) are durable.
    pub fn published<'a>(&self, done: impl IntoIterator<Item = (&'a TopicPartition, u64)>) {
        self.changing(|t| {
            for (tp, epoch) in done {
                t.published(tp, epoch);
            }
        });
    }

    /// Nothing counts as busy any more (work cut off at hard stop).
    pub fn clear_busy(&self) {
        self.changing(OffsetTracker::clear_busy);
    }

    /// Applies a change that may leave partitions less busy, waking a waiting revoke.
    fn changing<R>(&self, change: impl FnOnce(&mut OffsetTracker) -> R) -> R {
        let mut tracker = self.tracker();
        let out = change(&mut tracker);
        let waiters = self.waiters.load(Ordering::Relaxed);
        drop(tracker);
        if waiters > 0 {
            self.less_busy.notify_all();
        }
        out
    }

    /// Waits up to `grace` until no attempt or publication of `tps` is in flight;
    /// returns how many still are.
    fn wait_until_idle(&self, tps: &[TopicPartition], grace: Duration) -> usize {
        let deadline = Instant::now() + grace;
        let mut tracker = self.tracker();
        self.waiters.fetch_add(1, Ordering::Relaxed);
        let busy = loop {
            let busy = tracker.busy_in(tps);
            let left = deadline.saturating_duration_since(Instant::now());
            if busy == 0 || left.is_zero() {
                break busy;
            }
            tracker = match self.less_busy.wait_timeout(tracker, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        };
        self.waiters.fetch_sub(1, Ordering::Relaxed);
        busy
    }
}

/// The consumer's context: keeps the tracker in step with rebalances.
pub struct GroupContext {
    /// Shared state.
    pub shared: Arc<Shared>,
    /// To the dispatcher.
    pub tx: mpsc::Sender<FromConsumer>,
    /// librdkafka's statistics of this consumer, exported as metrics.
    pub stats: KafkaStats,
}

impl ClientContext for GroupContext {
    fn stats_raw(&self, statistics: &[u8]) {
        self.stats.record(statistics);
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let tps: Vec<TopicPartition> = tpl
            .elements()
            .iter()
            .map(|e| TopicPartition::new(e.topic(), e.partition()))
            .collect();
        if consumer.assignment_lost() {
            // The session timed out: the group has already given these partitions to
            // another member. Nothing of them may be committed or published from here.
            counter!(m::REBALANCES, m::L_KIND => "lost").increment(1);
            warn!(
                partitions = tps.len(),
                "partitions lost (the session timed out); their unfinished tasks run on the new owner"
            );
            {
                let mut tracker = self.shared.tracker();
                for tp in &tps {
                    tracker.revoke(tp);
                }
            }
            let _ = self.tx.try_send(FromConsumer::Revoked(tps));
            return;
        }
        counter!(m::REBALANCES, m::L_KIND => "revoke").increment(1);
        self.shared.tracker().begin_revoke(&tps);
        // Running attempts, and outcomes on their way to Kafka (whose transaction also
        // commits the offsets in exactly-once mode).
        let busy = self.shared.tracker().busy_in(&tps);
        if busy > 0 {
            info!(partitions = tps.len(), busy, grace = ?self.shared.rebalance_grace,
                "partitions revoked: letting running tasks finish");
        }
        let busy = self
            .shared
            .wait_until_idle(&tps, self.shared.rebalance_grace);
        if busy > 0 {
            warn!(
                busy,
                "rebalance grace over; unfinished tasks will run again on the new owner"
            );
        }
        let mut commit = TopicPartitionList::new();
        {
            let mut tracker = self.shared.tracker();
            for tp in &tps {
                if let Some(point) = tracker.commit_point(tp) {
                    let _ =
                        commit.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(point));
                }
                tracker.revoke(tp);
            }
        }
        // Counted by `commit_callback`, which librdkafka calls for this commit too. In
        // exactly-once mode the publisher's transactions have committed them already.
        if commit.count() > 0 && !self.shared.exactly_once {
            if let Err(e) = consumer.commit(&commit, CommitMode::Sync) {
                warn!(error = %e, "commit on revoke failed; finished tasks may run again");
            }
        }
        // Best effort: queued tasks of these partitions are also refused at dispatch.
        let _ = self.tx.try_send(FromConsumer::Revoked(tps));
        info!(partitions = tpl.count(), "partitions revoked");
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            counter!(m::REBALANCES, m::L_KIND => "assign").increment(1);
            // Outcomes the previous owner committed above its commit point are listed in
            // the commit metadata: they are skipped, not run again.
            let committed = if self.shared.exactly_once && tpl.count() > 0 {
                match consumer.committed_offsets((*tpl).clone(), COMMITTED_READ) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        warn!(error = %e, "cannot read the committed offsets yet (an open transaction of the previous owner holds them until it ends); they are read again before the first task of these partitions starts");
                        None
                    }
                }
            } else {
                None
            };
            let mut tracker = self.shared.tracker();
            for e in tpl.elements() {
                let tp = TopicPartition::new(e.topic(), e.partition());
                tracker.assign(tp.clone());
                if self.shared.exactly_once {
                    tracker.set_skip_unread(&tp);
                }
            }
            if let Some(c) = committed {
                apply_skips(&mut tracker, &c);
            }
            info!(
                partitions = ?tpl.elements().iter().map(|e| format!("{}[{}]", e.topic(), e.partition())).collect::<Vec<_>>(),
                "partitions assigned"
            );
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => counter!(m::OFFSET_COMMITS, m::L_RESULT => "ok").increment(1),
            Err(e) => {
                counter!(m::OFFSET_COMMITS, m::L_RESULT => "error").increment(1);
                debug!(error = %e, partitions = offsets.count(), "offset commit failed; retried at the next interval");
            }
        }
    }
}

/// How long one read of the committed offsets may take.
const COMMITTED_READ: Duration = Duration::from_secs(10);

/// Pause between reads of the committed offsets that failed.
const UNREAD_PAUSE: Duration = Duration::from_millis(500);

/// Sets, for each partition of `committed` (the group's committed offsets as read with
/// `require_stable`), the offsets the previous owner listed as done above its commit
/// point. A partition whose entry carries an error stays unread.
fn apply_skips(tracker: &mut OffsetTracker, committed: &TopicPartitionList) {
    for e in committed.elements() {
        if e.error().is_err() {
            continue;
        }
        let tp = TopicPartition::new(e.topic(), e.partition());
        let ranges = super::offsets::decode_done_above(e.metadata());
        if !ranges.is_empty() {
            debug!(
                topic = e.topic(),
                partition = e.partition(),
                ranges = ranges.len(),
                "skipping outcomes committed by the previous owner"
            );
        }
        tracker.set_skip(&tp, ranges);
    }
}

/// Reads the committed offsets of the partitions whose previous owner's list of done
/// tasks is still unknown, until it is known or the scheduler stops (false). librdkafka
/// starts fetching a partition only once its committed offset is stable (no transaction
/// holds it pending), so when its first record is here the read answers; running its
/// tasks without the list would run finished ones again.
fn read_unread_skips<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    shared: &Shared,
    signal: &Signal,
) -> bool {
    let mut attempt = 0u32;
    loop {
        let unread = shared.tracker().skip_unread();
        if unread.is_empty() {
            return true;
        }
        if signal.is_stopping() {
            return false;
        }
        let mut tpl = TopicPartitionList::new();
        for tp in &unread {
            tpl.add_partition(&tp.topic, tp.partition);
        }
        attempt += 1;
        match consumer.committed_offsets(tpl, COMMITTED_READ) {
            Ok(c) => {
                let mut tracker = shared.tracker();
                apply_skips(&mut tracker, &c);
                let left = tracker.skip_unread().len();
                drop(tracker);
                if left == 0 {
                    info!(partitions = unread.len(), attempt, "committed offsets read");
                } else {
                    warn!(
                        partitions = left,
                        attempt,
                        "cannot read the committed offsets of some partitions; no task of these partitions starts until they are read"
                    );
                    std::thread::sleep(UNREAD_PAUSE);
                }
            }
            Err(e) => {
                warn!(error = %e, partitions = unread.len(), attempt,
                    "cannot read the committed offsets; no task of these partitions starts until they are read");
                std::thread::sleep(UNREAD_PAUSE);
            }
        }
    }
}

/// Whether a consumer error ends the scheduler.
pub fn is_fatal(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::Fatal
                | C::InvalidGroupId
                | C::GroupAuthorizationFailed
                | C::TopicAuthorizationFailed
        )
    )
}

/// Polls until told to stop or the engine goes away; then closes the consumer (which
/// revokes its partitions through the callback above).
pub fn poll_loop(
    consumer: Arc<BaseConsumer<GroupContext>>,
    shared: Arc<Shared>,
    tx: mpsc::Sender<FromConsumer>,
    signal: Signal,
) {
    // librdkafka reports a broker that is away many times a second: say so every few
    // seconds, with how many reports were folded into the line.
    let mut last_warn: Option<Instant> = None;
    let mut folded = 0u64;
    let mut topics = Topics::default();
    while !signal.is_stopping() {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) if !forward(&msg, (&shared, &mut topics), &tx, (&consumer, &signal)) => {
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) if is_fatal(&e) => {
                let _ = tx.blocking_send(FromConsumer::Fatal(e));
                break;
            }
            Some(Err(e)) => {
                if last_warn.is_some_and(|at| at.elapsed() < Duration::from_secs(5)) {
                    folded += 1;
                } else {
                    warn!(error = %e, repeated = folded, "consumer error (librdkafka retries by itself)");
                    last_warn = Some(Instant::now());
                    folded = 0;
                }
            }
            None => {}
        }
    }
    consumer.unsubscribe();
    // Serve the revoke that unsubscribing triggers, so what is done gets committed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && consumer.assignment().is_ok_and(|a| a.count() > 0) {
        let _ = consumer.poll(Duration::from_millis(50));
    }
}

/// The names of the topics the consumer reads, each allocated once: every record and
/// every held task of a topic shares its name. Bounded by the subscription (queue and
/// delay topics).
#[derive(Default)]
pub struct Topics(TpSet<Arc<str>>);

impl Topics {
    /// The shared name `topic`.
    pub fn get(&mut self, topic: &str) -> Arc<str> {
        if let Some(t) = self.0.get(topic) {
            return t.clone();
        }
        let t: Arc<str> = Arc::from(topic);
        self.0.insert(t.clone());
        t
    }
}

fn forward(
    msg: &BorrowedMessage<'_>,
    (shared, topics): (&Shared, &mut Topics),
    tx: &mpsc::Sender<FromConsumer>,
    (consumer, signal): (&BaseConsumer<GroupContext>, &Signal),
) -> bool {
    let tp = TopicPartition::new(topics.get(msg.topic()), msg.partition());
    let epoch = {
        let mut tracker = shared.tracker();
        if tracker.is_skip_unread(&tp) {
            drop(tracker);
            if !read_unread_skips(consumer, shared, signal) {
                return false;
            }
            tracker = shared.tracker();
        }
        // Untracked (revoked under our feet): the next owner reads it.
        let Some(epoch) = tracker.start(&tp, msg.offset()) else {
            return true;
        };
        // Its outcome was committed by the previous owner: done already.
        if tracker.should_skip(&tp, msg.offset()) {
            tracker.done(&tp, msg.offset(), epoch);
            counter!(m::SKIPPED).increment(1);
            return true;
        }
        epoch
    };
    let record = Record::from_message(msg, tp);
    hand_over(tx, FromConsumer::Record(Box::new(record), epoch))
}

/// Free slots the consumer thread waits for when the engine's channel is full.
const ROOM: usize = 64;

/// Hands `msg` to the engine; false when the engine is gone. When the channel is full
/// (the engine is behind), the thread waits until [`ROOM`] slots are free, not one:
/// waiting for one woke this thread, through a futex call on the engine's side, for every
/// record the engine took.
fn hand_over(tx: &mpsc::Sender<FromConsumer>, msg: FromConsumer) -> bool {
    let msg = match tx.try_send(msg) {
        Ok(()) => return true,
        Err(mpsc::error::TrySendError::Closed(_)) => return false,
        Err(mpsc::error::TrySendError::Full(msg)) => msg,
    };
    match block_on(tx.reserve_many(ROOM.min(tx.max_capacity()))) {
        Ok(mut permits) => match permits.next() {
            Some(permit) => {
                // The other permits go back to the channel when dropped.
                permit.send(msg);
                true
            }
            None => tx.blocking_send(msg).is_ok(),
        },
        Err(_) => false,
    }
}

/// Runs a future to completion on this (non-runtime) thread, parking between polls.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revoked(n: i32) -> FromConsumer {
        FromConsumer::Revoked(vec![TopicPartition::new("q", n)])
    }

    fn partition_of(m: Option<FromConsumer>) -> Option<i32> {
        match m {
            Some(FromConsumer::Revoked(tps)) => tps.first().map(|tp| tp.partition),
            _ => None,
        }
    }

    #[test]
    fn a_waiting_revoke_wakes_when_the_last_attempt_ends_and_the_last_outcome_is_durable() {
        // A grace far longer than the test: returning idle means it was woken.
        const GRACE: Duration = Duration::from_secs(120);
        let shared = Arc::new(Shared::new(GRACE, true));
        let tp = TopicPartition::new("q", 0);
        let epoch = {
            let mut t = shared.tracker();
            let epoch = t.assign(tp.clone());
            t.mark_running(&tp, epoch);
            t.publishing(&tp, epoch);
            epoch
        };
        let waiter = {
            let (shared, tp) = (shared.clone(), tp.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                (shared.wait_until_idle(&[tp], GRACE), started.elapsed())
            })
        };
        // The waiter registers under the tracker's lock; wait until it has.
        while shared.waiters.load(Ordering::Relaxed) == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(shared.attempt_ended(&tp, epoch), "still assigned");
        shared.published([(&tp, epoch)]);
        let (busy, waited) = waiter.join().unwrap_or((usize::MAX, GRACE));
        assert_eq!(busy, 0);
        assert!(waited < GRACE, "woken, not timed out");
        assert_eq!(shared.waiters.load(Ordering::Relaxed), 0);
        assert!(
            !shared.attempt_ended(&tp, epoch + 1),
            "another epoch is not current"
        );
    }

    #[test]
    fn records_of_one_topic_share_its_name() {
        let mut topics = Topics::default();
        let a = topics.get("tw.q.acme");
        let b = topics.get("tw.q.acme");
        let other = topics.get("tw.q.other");
        assert!(Arc::ptr_eq(&a, &b), "one allocation per topic");
        assert_eq!(&*other, "tw.q.other");
        assert!(!Arc::ptr_eq(&a, &other));
    }

    #[test]
    fn a_full_channel_takes_the_message_once_there_is_room_and_keeps_the_order() {
        let (tx, mut rx) = mpsc::channel(4);
        for n in 0..4 {
            assert!(hand_over(&tx, revoked(n)));
        }
        let sender = std::thread::spawn(move || hand_over(&tx, revoked(4)));
        // The sender waits for room for the whole channel (its capacity is below ROOM).
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(partition_of(rx.blocking_recv()));
        }
        assert!(sender.join().unwrap_or(false));
        assert_eq!(got, (0..5).map(Some).collect::<Vec<_>>());
    }

    #[test]
    fn a_closed_channel_refuses_the_message_full_or_not() {
        let (tx, rx) = mpsc::channel(1);
        assert!(hand_over(&tx, revoked(0)));
        let sender = std::thread::spawn(move || hand_over(&tx, revoked(1)));
        std::thread::sleep(Duration::from_millis(50));
        drop(rx);
        assert!(!sender.join().unwrap_or(true), "the engine is gone");
    }
}
