//! The scheduler: consumes the queue topics as a member of the scheduler group, queues
//! each task for its function, starts tasks by weighted fair queuing within each
//! function's concurrency and rate limits (no head-of-line blocking between functions,
//! even in one partition), publishes outcome and status events, and commits only offsets
//! whose work is done.
//!
//! Shape: a consumer thread ([`consumer`]) polls and forwards records; one async loop owns
//! the [`dispatch::Dispatcher`] and starts attempts and publications as tasks; the
//! [`offsets::OffsetTracker`] decides what may be committed.

pub mod consumer;
pub mod control;
pub mod dispatch;
pub mod offsets;
pub mod publisher;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::clock::{default_instance_id, now_ms};
use crate::codec::{self, Attempt, FailureReason, Outcome, OutcomeStatus, StatusEvent, TaskStatus};
use crate::config::{Config, Destination, FunctionConfig};
use crate::executor::{ExecError, Executor, ExecutorBuildError, Handlers, Invocation};
use crate::kafka::{self, KafkaOpError};
use crate::names::{headers as h, metrics as m, topics};
use consumer::{FromConsumer, GroupContext, Record, Shared};
use dispatch::{Dispatcher, Entry, FnId, FnLimits};
use offsets::{OffsetTracker, TopicPartition};
use publisher::{DeliveryCounter, DoneRef, OutRecord, Publisher, Unit};

/// Why the scheduler could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// A Kafka client or topic problem.
    #[error(transparent)]
    Kafka(#[from] KafkaOpError),
    /// A function's executor could not be built.
    #[error("function {tenant}/{function}: {source}")]
    Executor {
        /// Tenant.
        tenant: String,
        /// Function.
        function: String,
        /// The error.
        source: ExecutorBuildError,
    },
    /// Subscribing to the queue topics failed.
    #[error("cannot subscribe to {topics:?}: {source}")]
    Subscribe {
        /// Topics.
        topics: Vec<String>,
        /// The error.
        source: KafkaError,
    },
    /// The consumer hit an error it cannot recover from.
    #[error("fatal consumer error: {0}")]
    Fatal(KafkaError),
    /// A worker thread failed (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

/// What a run did, returned when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Tasks that reached an outcome in this run.
    pub completed: u64,
    /// Tasks abandoned at shutdown (not started, waiting to retry, or still running when
    /// the grace period ran out); their offsets stay uncommitted and they run again.
    pub abandoned: usize,
}

/// A scheduler process, ready to [`Scheduler::run`].
pub struct Scheduler {
    config: Arc<Config>,
    handlers: Handlers,
}

struct FunctionRt {
    id: FnId,
    name: String,
    tenant: String,
    cfg: FunctionConfig,
    executor: Executor,
    on_success: Option<String>,
    on_failure: String,
    max_payload: usize,
    labels: (String, String),
}

struct Ctx {
    config: Arc<Config>,
    scheduler_id: String,
    /// To the publisher: records that must become durable.
    outbox: std::sync::mpsc::Sender<Unit<Published>>,
    functions: HashMap<(String, String), Arc<FunctionRt>>,
    status_topic: String,
    /// Delay tiers and their topics, shortest first.
    delay_tiers: Vec<(Duration, String)>,
    /// Cancelled when the grace period is over: running work is abandoned.
    hard_stop: CancellationToken,
}

/// Memory a held task costs besides its payload and key (measured: about 1.5 KiB per
/// buffered task, see BENCHMARKS.md), so the byte limits bound real memory.
const TASK_OVERHEAD_BYTES: usize = 1536;

/// A task on its way through the dispatcher.
struct Job {
    record: Record,
    epoch: u64,
    f: Arc<FunctionRt>,
    outcome: Outcome,
    payload: Arc<Vec<u8>>,
    headers: Arc<BTreeMap<String, String>>,
}

/// What one attempt came to.
enum AttemptResult {
    Succeeded(Vec<u8>),
    Failed(ExecError),
    /// Older than the function's `max_event_age`: not run.
    Expired(Duration),
    /// Stopped on request while running (the attempt was cancelled).
    Stopped,
    /// Abandoned at hard stop.
    Abandoned,
}

impl Scheduler {
    /// A scheduler for a validated configuration, with handlers for `inprocess` functions.
    pub fn new(config: Config, handlers: Handlers) -> Self {
        Self {
            config: Arc::new(config),
            handlers,
        }
    }

    fn build_functions(
        &self,
        dispatcher: &mut Dispatcher<Box<Job>>,
    ) -> Result<HashMap<(String, String), Arc<FunctionRt>>, SchedulerError> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| SchedulerError::Executor {
                tenant: String::new(),
                function: String::new(),
                source: ExecutorBuildError::Http(e.to_string()),
            })?;
        let mut out = HashMap::new();
        for (tname, tenant) in &self.config.tenants {
            for (fname, f) in &tenant.functions {
                let executor =
                    Executor::build(&f.executor, &client, &self.handlers).map_err(|source| {
                        SchedulerError::Executor {
                            tenant: tname.clone(),
                            function: fname.clone(),
                            source,
                        }
                    })?;
                let burst = f.burst.map(|b| b.get()).unwrap_or_else(|| {
                    f.rate
                        .map_or(1, |r| u32::try_from(r.ceil() as u64).unwrap_or(u32::MAX))
                });
                let id = dispatcher.add_function(FnLimits {
                    concurrency: f.concurrency.get(),
                    rate: f.rate,
                    burst,
                    weight: f.weight,
                });
                out.insert(
                    (tname.clone(), fname.clone()),
                    Arc::new(FunctionRt {
                        id,
                        name: fname.clone(),
                        tenant: tname.clone(),
                        executor,
                        on_success: f.on_success.clone(),
                        on_failure: self.config.failure_destination(tname, fname),
                        max_payload: self.config.max_payload(f),
                        labels: (tname.clone(), fname.clone()),
                        cfg: f.clone(),
                    }),
                );
            }
        }
        Ok(out)
    }

    /// Runs until `shutdown` is cancelled, then stops fetching and starting tasks, lets
    /// running attempts finish within `scheduler.shutdown_grace`, commits what is done
    /// and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<RunSummary, SchedulerError> {
        let config = self.config.clone();
        let sc = &config.scheduler;
        let mut dispatcher: Dispatcher<Box<Job>> = Dispatcher::new(sc.max_running.get());
        let functions = self.build_functions(&mut dispatcher)?;
        {
            let c = config.clone();
            tokio::task::spawn_blocking(move || kafka::check_topics(&c))
                .await
                .map_err(|e| SchedulerError::Internal(e.to_string()))??;
        }
        let scheduler_id = sc.id.clone().unwrap_or_else(default_instance_id);
        let exactly_once = sc.delivery == crate::config::Delivery::ExactlyOnce;
        let producer = {
            let (c, id) = (config.clone(), scheduler_id.clone());
            tokio::task::spawn_blocking(move || publisher_producer(&c, &id, exactly_once))
                .await
                .map_err(|e| SchedulerError::Internal(e.to_string()))??
        };
        let shared = Arc::new(Shared {
            tracker: Mutex::new(OffsetTracker::new()),
            rebalance_grace: sc.rebalance_grace,
            exactly_once,
        });
        let (tx, mut rx) = mpsc::channel::<FromConsumer>(256);
        let consumer = Arc::new(self.consumer(&shared, tx.clone())?);
        let mut queues = config.queue_topics();
        queues.extend(config.delay_tiers().into_iter().map(|(_, t)| t));
        let topic_refs: Vec<&str> = queues.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topic_refs)
            .map_err(|source| SchedulerError::Subscribe {
                topics: queues.clone(),
                source,
            })?;
        let stop_polling = Arc::new(AtomicBool::new(false));
        let poller = {
            let (c, s, st) = (consumer.clone(), shared.clone(), stop_polling.clone());
            std::thread::Builder::new()
                .name("tw-consumer".into())
                .spawn(move || consumer::poll_loop(c, s, tx, st))
                .map_err(|e| SchedulerError::Internal(e.to_string()))?
        };
        info!(scheduler_id = %scheduler_id, group = %config.group_id(), topics = ?queues,
            delivery = ?sc.delivery, "scheduler started");

        let (outbox, outbox_rx) = std::sync::mpsc::channel::<Unit<Published>>();
        let (back_tx, mut back_rx) = mpsc::unbounded_channel::<Published>();
        let stop_publishing = Arc::new(AtomicBool::new(false));
        let abandon = Arc::new(AtomicBool::new(false));
        let producer_failed = Arc::new(AtomicBool::new(false));
        let publisher = {
            let p = Publisher {
                producer,
                exactly_once,
                rx: outbox_rx,
                back: back_tx,
                shared: shared.clone(),
                consumer: consumer.clone(),
                linger: sc.commit_interval.min(Duration::from_millis(100)),
                stop: stop_publishing.clone(),
                abandon: abandon.clone(),
                fatal: producer_failed.clone(),
            };
            std::thread::Builder::new()
                .name("tw-publisher".into())
                .spawn(move || p.run())
                .map_err(|e| SchedulerError::Internal(e.to_string()))?
        };
        let (stop_tx, mut stop_rx) = mpsc::unbounded_channel();
        let stop_reading = Arc::new(AtomicBool::new(false));
        let control_reader = {
            let (c, st) = (config.clone(), stop_reading.clone());
            std::thread::Builder::new()
                .name("tw-control".into())
                .spawn(move || control::read_loop(c, stop_tx, st))
                .map_err(|e| SchedulerError::Internal(e.to_string()))?
        };
        let hard_stop = CancellationToken::new();
        let ctx = Arc::new(Ctx {
            status_topic: topics::status(&config.topics.prefix),
            delay_tiers: config.delay_tiers(),
            config: config.clone(),
            scheduler_id,
            outbox,
            functions,
            hard_stop: hard_stop.clone(),
        });
        let mut lp = Loop {
            ctx: ctx.clone(),
            shared: shared.clone(),
            consumer: consumer.clone(),
            dispatcher,
            attempts: JoinSet::new(),
            stops: control::StopSet::new(100_000),
            finished: (sc.dedupe_window > 0).then(|| control::StopSet::new(sc.dedupe_window)),
            running_tokens: HashMap::new(),
            outstanding: 0,
            exactly_once,
            retries: BTreeMap::new(),
            retry_seq: 0,
            paused: std::collections::HashSet::new(),
            summary: RunSummary::default(),
            stopping: false,
        };
        let mut commit_tick = tokio::time::interval(sc.commit_interval);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut fatal = None;

        loop {
            let wakeup = lp.next_wakeup();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(done) = lp.attempts.join_next(), if !lp.attempts.is_empty() => lp.on_attempt(done),
                Some(back) = back_rx.recv() => lp.on_published(back),
                Some(req) = stop_rx.recv() => lp.on_stop(req),
                _ = commit_tick.tick() => {
                    lp.commit(CommitMode::Async);
                    lp.export_gauges();
                    if producer_failed.load(Ordering::Relaxed) {
                        fatal = Some(KafkaError::Canceled);
                        break;
                    }
                }
                _ = sleep_until(wakeup), if wakeup.is_some() => {}
                msg = rx.recv() => match msg {
                    Some(FromConsumer::Record(record, epoch)) => lp.on_record(*record, epoch),
                    Some(FromConsumer::Revoked(tps)) => lp.on_revoked(&tps),
                    Some(FromConsumer::Fatal(e)) => {
                        error!(error = %e, "fatal consumer error");
                        fatal = Some(e);
                        break;
                    }
                    None => {
                        fatal = Some(KafkaError::Canceled);
                        break;
                    }
                },
            }
            lp.dispatch();
            lp.backpressure();
        }

        // Drain: nothing new is fetched or started; running attempts get the grace period.
        lp.stopping = true;
        let grace = sc.shutdown_grace;
        let queued = lp
            .dispatcher
            .total()
            .count
            .saturating_sub(lp.attempts.len());
        info!(running = lp.attempts.len(), queued, grace = ?grace,
            "stopping: no new tasks are fetched or started; waiting for running tasks");
        let deadline = tokio::time::sleep(grace);
        tokio::pin!(deadline);
        while !(lp.attempts.is_empty() && lp.outstanding == 0) {
            tokio::select! {
                biased;
                Some(done) = lp.attempts.join_next(), if !lp.attempts.is_empty() => lp.on_attempt(done),
                Some(back) = back_rx.recv() => lp.on_published(back),
                _ = commit_tick.tick() => {
                    lp.commit(CommitMode::Async);
                    if producer_failed.load(Ordering::Relaxed) {
                        break;
                    }
                }
                _ = &mut deadline => {
                    warn!(running = lp.attempts.len(), publishing = lp.outstanding,
                        "grace period over; unfinished tasks will run again");
                    hard_stop.cancel();
                    abandon.store(true, Ordering::Relaxed);
                    lp.attempts.abort_all();
                    while lp.attempts.join_next().await.is_some() {}
                    // Cut off: the revoke on leaving the group must not wait for them.
                    shared.tracker().clear_busy();
                    break;
                }
            }
        }
        // Whatever is still held (queued, waiting to retry, cut off) runs again later.
        lp.summary.abandoned = lp.dispatcher.total().count;
        stop_publishing.store(true, Ordering::Relaxed);
        let _ = tokio::task::spawn_blocking(move || publisher.join()).await;
        // Final commit of everything done, before leaving the group (at-least-once; the
        // transactions have committed it in exactly-once mode).
        if !exactly_once {
            lp.commit_all();
        }
        stop_polling.store(true, Ordering::Relaxed);
        stop_reading.store(true, Ordering::Relaxed);
        drop(rx);
        let _ = tokio::task::spawn_blocking(move || {
            let _ = poller.join();
            let _ = control_reader.join();
        })
        .await;
        if let Some(e) = fatal {
            return Err(SchedulerError::Fatal(e));
        }
        info!(
            completed = lp.summary.completed,
            abandoned = lp.summary.abandoned,
            "scheduler stopped"
        );
        Ok(lp.summary)
    }

    fn consumer(
        &self,
        shared: &Arc<Shared>,
        tx: mpsc::Sender<FromConsumer>,
    ) -> Result<BaseConsumer<GroupContext>, SchedulerError> {
        let config = &self.config;
        let mut cc = kafka::client_config(config);
        cc.set("group.id", config.group_id());
        cc.set("enable.auto.commit", "false");
        kafka::set_default(&mut cc, "auto.offset.reset", "earliest");
        kafka::set_default(&mut cc, "isolation.level", "read_committed");
        // The KIP-848 group protocol: incremental rebalances driven by the broker, and the
        // range assignor spreads each topic's partitions over the members (queues and delay
        // topics alike), so an added scheduler takes a share of every queue. Session and
        // heartbeat timing are the broker's (`group.consumer.*`).
        kafka::set_default(&mut cc, "group.protocol", "consumer");
        if cc.get("group.protocol") == Some("consumer") {
            kafka::set_default(&mut cc, "group.remote.assignor", "range");
        } else {
            kafka::set_default(
                &mut cc,
                "partition.assignment.strategy",
                "cooperative-sticky",
            );
            kafka::set_default(&mut cc, "session.timeout.ms", "10000");
            kafka::set_default(&mut cc, "heartbeat.interval.ms", "1000");
        }
        kafka::set_default(&mut cc, "topic.metadata.refresh.interval.ms", "10000");
        // Pre-fetched records in librdkafka are memory too: keep them small; Tidewater
        // buffers what matters in its own bounded queues.
        kafka::set_default(&mut cc, "queued.max.messages.kbytes", "8192");
        kafka::set_default(&mut cc, "fetch.max.bytes", "8388608");
        let ctx = GroupContext {
            shared: shared.clone(),
            tx,
        };
        cc.create_with_context(ctx)
            .map_err(|source| KafkaOpError::Client {
                what: "consumer",
                source,
            })
            .map_err(SchedulerError::from)
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
    }
}

fn tpl_of(points: &[(TopicPartition, i64)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in points {
        let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    tpl
}

type AttemptDone = (Entry<Box<Job>>, AttemptResult, Instant);
/// What a publication was for.
enum Published {
    /// A task that ran.
    Task(Entry<Box<Job>>),
    /// Input that could not run.
    Reject { tp: TopicPartition, bytes: usize },
    /// A task moved to a delay topic.
    Moved(Entry<Box<Job>>),
}

/// (tenant, task id) of a task.
fn task_key(entry: &Entry<Box<Job>>) -> (String, String) {
    (
        entry.item.f.tenant.clone(),
        entry.item.outcome.task_id.clone(),
    )
}

/// The dispatcher loop's state.
struct Loop {
    /// Recent stop requests.
    stops: control::StopSet,
    /// Tasks that recently reached a terminal outcome here (`scheduler.dedupe_window`).
    finished: Option<control::StopSet>,
    /// Cancellation of each running attempt, by (tenant, task id).
    running_tokens: HashMap<(String, String), CancellationToken>,
    ctx: Arc<Ctx>,
    shared: Arc<Shared>,
    consumer: Arc<BaseConsumer<GroupContext>>,
    dispatcher: Dispatcher<Box<Job>>,
    attempts: JoinSet<AttemptDone>,
    /// Units handed to the publisher and not yet durable.
    outstanding: usize,
    exactly_once: bool,
    /// Tasks waiting out a retry backoff, by due time.
    retries: BTreeMap<(Instant, u64), Entry<Box<Job>>>,
    retry_seq: u64,
    paused: std::collections::HashSet<TopicPartition>,
    summary: RunSummary,
    stopping: bool,
}

impl Loop {
    fn next_wakeup(&mut self) -> Option<Instant> {
        let now = Instant::now();
        let retry = self.retries.keys().next().map(|(t, _)| *t);
        let rate = self.dispatcher.next_wakeup(now);
        match (retry, rate) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_record(&mut self, record: Record, epoch: u64) {
        match prepare(&self.ctx, record, epoch) {
            Prepared::Run(job, due) => {
                let entry = Entry {
                    function: job.f.id,
                    tp: job.record.tp(),
                    bytes: job.payload.len()
                        + job.record.key.as_ref().map_or(0, Vec::len)
                        + TASK_OVERHEAD_BYTES,
                    key: job.record.ordering_key(),
                    item: job,
                };
                let now = now_ms();
                match due.filter(|due| *due > now) {
                    None => self.dispatcher.push(entry),
                    Some(due) => {
                        let wait = Duration::from_millis(u64::try_from(due - now).unwrap_or(0));
                        let from_delay_topic =
                            self.ctx.delay_tiers.iter().any(|(_, t)| *t == entry.tp.0);
                        self.dispatcher.account(&entry);
                        if from_delay_topic {
                            // Back from its delay topic: it waits out the rest here, in
                            // the buffer (whose limit pauses the delay partition).
                            self.retry_seq += 1;
                            self.retries
                                .insert((Instant::now() + wait, self.retry_seq), entry);
                        } else {
                            self.defer(entry, due);
                        }
                    }
                }
            }
            Prepared::Skip(record, epoch) => {
                let tp = record.tp();
                self.dispatcher.hold(&tp, 0);
                self.send_unit(
                    Vec::new(),
                    DoneRef {
                        tp: tp.clone(),
                        offset: record.offset,
                        epoch,
                    },
                    Published::Reject { tp, bytes: 0 },
                );
            }
            Prepared::Reject {
                record,
                epoch,
                outcome,
                destination,
            } => {
                // Bad input never runs: its failure outcome goes straight out.
                let tp = record.tp();
                let bytes = record.value.len() + TASK_OVERHEAD_BYTES;
                self.dispatcher.hold(&tp, bytes);
                let offset = record.offset;
                let records = outcome_records(&self.ctx, &outcome, Some(&destination));
                self.send_unit(
                    records,
                    DoneRef {
                        tp: tp.clone(),
                        offset,
                        epoch,
                    },
                    Published::Reject { tp, bytes },
                );
            }
        }
    }

    fn dispatch(&mut self) {
        if self.stopping {
            return;
        }
        let now = Instant::now();
        // Retries that are due go back to the front of their function's queue.
        while let Some(first) = self.retries.first_key_value().map(|(k, _)| *k) {
            if first.0 > now {
                break;
            }
            if let Some(entry) = self.retries.remove(&first) {
                self.dispatcher.requeue(entry);
            }
        }
        let shared = self.shared.clone();
        let mut dropped = Vec::new();
        loop {
            let next = {
                let tracker = shared.tracker();
                self.dispatcher.next(
                    now,
                    |e| tracker.may_start(&e.tp, e.item.epoch),
                    &mut dropped,
                )
            };
            let Some(entry) = next else { break };
            let (tenant, id) = task_key(&entry);
            if self
                .finished
                .as_ref()
                .is_some_and(|f| f.contains(&tenant, &id))
            {
                // Already has its terminal outcome: an idempotent no-op, not a second run.
                debug!(task_id = %id, tenant = %tenant, "task already finished here; not run again");
                counter!(m::SKIPPED).increment(1);
                self.dispatcher.attempt_finished(entry.function);
                let done = DoneRef {
                    tp: entry.tp.clone(),
                    offset: entry.item.record.offset,
                    epoch: entry.item.epoch,
                };
                self.send_unit(Vec::new(), done, Published::Moved(entry));
                continue;
            }
            if self.is_stopped(&entry) {
                self.dispatcher.attempt_finished(entry.function);
                self.stop_task(entry);
                continue;
            }
            shared.tracker().mark_running(&entry.tp, entry.item.epoch);
            let cancel = CancellationToken::new();
            self.running_tokens.insert(task_key(&entry), cancel.clone());
            let ctx = self.ctx.clone();
            self.attempts.spawn(async move {
                let mut entry = entry;
                let started = Instant::now();
                let result = attempt(&ctx, &mut entry.item, cancel).await;
                (entry, result, started)
            });
        }
        if !dropped.is_empty() {
            debug!(
                dropped = dropped.len(),
                "queued tasks of revoked partitions dropped"
            );
        }
    }

    fn on_attempt(&mut self, done: Result<AttemptDone, tokio::task::JoinError>) {
        let (mut entry, result, _started) = match done {
            Ok(d) => d,
            Err(e) => {
                // Its slot and buffer are lost until restart; the offset stays uncommitted.
                error!(error = %e, "attempt worker panicked; its task will run again after a restart");
                return;
            }
        };
        self.dispatcher.attempt_finished(entry.function);
        self.running_tokens.remove(&task_key(&entry));
        self.shared
            .tracker()
            .unmark_running(&entry.tp, entry.item.epoch);
        let job = &mut entry.item;
        let current = self.shared.tracker().is_current(&entry.tp, job.epoch);
        if !current {
            // Revoked while running: the new owner runs it and publishes its outcome.
            self.dispatcher.task_finished(&entry);
            return;
        }
        let f = job.f.clone();
        let (lt, lf) = f.labels.clone();
        let attempt_no = job.outcome.attempts.len() as u32;
        match result {
            // Cut off at hard stop: stays accounted, so the summary counts it.
            AttemptResult::Abandoned => {}
            AttemptResult::Stopped => {
                job.outcome.status = OutcomeStatus::Stopped;
                job.outcome.error = Some("stopped on request while running".into());
                self.publish(entry, Some(f.on_failure.clone()));
            }
            AttemptResult::Expired(waited) => {
                job.outcome.status = OutcomeStatus::Expired;
                job.outcome.error = Some(format!(
                    "not run: waited {} since submission, over max_event_age {}",
                    humantime::format_duration(Duration::from_secs(waited.as_secs())),
                    humantime::format_duration(f.cfg.max_event_age.unwrap_or_default())
                ));
                self.publish(entry, Some(f.on_failure.clone()));
            }
            AttemptResult::Succeeded(result) => {
                job.outcome.status = OutcomeStatus::Succeeded;
                job.outcome.result = Some(result);
                self.publish(entry, f.on_success.clone());
            }
            AttemptResult::Failed(e) => {
                let message = e.to_string();
                let reason = match &e {
                    ExecError::Timeout(_) => FailureReason::Timeout,
                    ExecError::Failed {
                        retryable: false, ..
                    } => FailureReason::NonRetryable,
                    ExecError::Failed { .. } => FailureReason::Executor,
                };
                if !e.retryable() || attempt_no >= f.cfg.max_attempts.get() {
                    job.outcome.status = OutcomeStatus::Failed;
                    job.outcome.reason = Some(reason);
                    job.outcome.error = Some(message);
                    self.publish(entry, Some(f.on_failure.clone()));
                    return;
                }
                if self.stopping {
                    // Left accounted: counted as abandoned; runs again on the next owner.
                    return;
                }
                let delay = retry_delay(f.cfg.backoff, f.cfg.backoff_max, attempt_no + 1, jitter());
                debug!(task_id = %job.outcome.task_id, attempt = attempt_no, error = %message, retry_in = ?delay, "attempt failed; retrying");
                counter!(m::RETRIES, m::L_TENANT => lt, m::L_FUNCTION => lf).increment(1);
                let attempt_i32 = i32::try_from(attempt_no).unwrap_or(i32::MAX);
                send_status_nowait(
                    &self.ctx,
                    &status_event(
                        &self.ctx,
                        &job.outcome,
                        TaskStatus::Retrying,
                        attempt_i32,
                        Some(message),
                    ),
                );
                if entry.key.is_some() {
                    // Keyed: later tasks of the key wait behind it, so it waits here.
                    self.retry_seq += 1;
                    self.retries
                        .insert((Instant::now() + delay, self.retry_seq), entry);
                } else {
                    let due = now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                    self.defer(entry, due);
                }
            }
        }
    }

    fn publish(&mut self, mut entry: Entry<Box<Job>>, destination: Option<String>) {
        let job = &mut entry.item;
        job.outcome.finished_at = now_ms();
        job.outcome.payload = job.payload.as_ref().clone();
        let (lt, lf) = job.f.labels.clone();
        let label = job.outcome.status.as_str();
        if let Some(finished) = self.finished.as_mut() {
            finished.insert(&job.f.tenant, &job.outcome.task_id);
        }
        if let Some(reason) = job.outcome.reason {
            counter!(m::TASKS_FAILED, m::L_TENANT => lt.clone(), m::L_FUNCTION => lf.clone(), m::L_REASON => reason.as_str()).increment(1);
        }
        counter!(m::TASKS_COMPLETED, m::L_TENANT => lt, m::L_FUNCTION => lf, m::L_OUTCOME => label)
            .increment(1);
        let records = outcome_records(&self.ctx, &entry.item.outcome, destination.as_deref());
        let done = DoneRef {
            tp: entry.tp.clone(),
            offset: entry.item.record.offset,
            epoch: entry.item.epoch,
        };
        self.send_unit(records, done, Published::Task(entry));
    }

    fn is_stopped(&self, entry: &Entry<Box<Job>>) -> bool {
        let (tenant, id) = task_key(entry);
        self.stops.contains(&tenant, &id)
    }

    /// Ends a task that was asked to stop before it ran (again): outcome `stopped`.
    fn stop_task(&mut self, mut entry: Entry<Box<Job>>) {
        let job = &mut entry.item;
        job.outcome.status = OutcomeStatus::Stopped;
        job.outcome.error = Some("stopped on request before it ran".into());
        let destination = job.f.on_failure.clone();
        self.publish(entry, Some(destination));
    }

    /// A stop request: remembered for queued and delayed tasks; a running one is cancelled.
    fn on_stop(&mut self, req: codec::StopRequest) {
        self.stops.insert(&req.tenant, &req.task_id);
        if let Some(token) = self
            .running_tokens
            .get(&(req.tenant.clone(), req.task_id.clone()))
        {
            info!(task_id = %req.task_id, tenant = %req.tenant, by = %req.requested_by, "stopping a running task");
            token.cancel();
        }
    }

    /// Moves a task to the delay topic for its wait; its current record is then done.
    fn defer(&mut self, entry: Entry<Box<Job>>, due: i64) {
        let job = &entry.item;
        let wait = Duration::from_millis(u64::try_from(due - now_ms()).unwrap_or(0));
        let Some(topic) = tier_for(&self.ctx.delay_tiers, wait).map(str::to_string) else {
            return;
        };
        let delayed = codec::DelayedTask {
            task_id: job.outcome.task_id.clone(),
            tenant: job.f.tenant.clone(),
            function: job.f.name.clone(),
            payload: job.payload.as_ref().clone(),
            headers: job.headers.as_ref().clone(),
            submitted_at: job.outcome.submitted_at,
            due_at: due,
            attempts: job.outcome.attempts.clone(),
            origin: job.outcome.source.clone(),
            traceparent: job.record.traceparent.clone(),
        };
        let value = match codec::encode_delayed(&delayed) {
            Ok(v) => v,
            Err(e) => {
                error!(task_id = %delayed.task_id, error = %e, "cannot encode delayed task; it stays here");
                self.retry_seq += 1;
                self.retries
                    .insert((Instant::now() + wait, self.retry_seq), entry);
                return;
            }
        };
        let mut headers = vec![
            (h::CONTENT_TYPE, h::CONTENT_TYPE_AVRO.to_string()),
            (h::EVENT, h::EVENT_DELAYED.to_string()),
            (h::TASK_ID, delayed.task_id.clone()),
            (h::TENANT, delayed.tenant.clone()),
            (h::FUNCTION, delayed.function.clone()),
        ];
        if let Some(tp) = &delayed.traceparent {
            headers.push((h::TRACEPARENT, tp.clone()));
        }
        debug!(task_id = %delayed.task_id, topic = %topic, wait = ?wait, "task moved to a delay topic");
        let record = OutRecord {
            topic,
            key: delayed.task_id.clone(),
            value,
            headers,
        };
        let done = DoneRef {
            tp: entry.tp.clone(),
            offset: job.record.offset,
            epoch: job.epoch,
        };
        self.send_unit(vec![record], done, Published::Moved(entry));
    }

    fn send_unit(&mut self, records: Vec<OutRecord>, done: DoneRef, back: Published) {
        self.shared.tracker().publishing(&done.tp, done.epoch);
        self.outstanding += 1;
        let unit = Unit {
            records,
            done: Some(done),
            back: Some(back),
        };
        if self.ctx.outbox.send(unit).is_err() {
            error!("the publisher is gone; outcomes cannot be published");
        }
    }

    /// A unit is durable (its offset marked done by the publisher).
    fn on_published(&mut self, published: Published) {
        self.outstanding = self.outstanding.saturating_sub(1);
        match &published {
            Published::Task(entry) => {
                self.summary.completed += 1;
                self.dispatcher.task_finished(entry);
            }
            Published::Moved(entry) => self.dispatcher.task_finished(entry),
            Published::Reject { tp, bytes } => {
                self.summary.completed += 1;
                self.dispatcher.release(tp, *bytes);
            }
        }
    }

    fn on_revoked(&mut self, tps: &[TopicPartition]) {
        for tp in tps {
            let dropped = self.dispatcher.drop_partition(tp);
            let retrying: Vec<_> = self
                .retries
                .iter()
                .filter(|(_, e)| &e.tp == tp)
                .map(|(k, _)| *k)
                .collect();
            for k in retrying {
                if let Some(e) = self.retries.remove(&k) {
                    self.dispatcher.task_finished(&e);
                }
            }
            self.paused.remove(tp);
            if !dropped.is_empty() {
                debug!(topic = %tp.0, partition = tp.1, dropped = dropped.len(), "queued tasks of a revoked partition dropped");
            }
        }
    }

    /// Pauses partitions whose buffer (or the process's) is full; resumes them when it
    /// has drained to three quarters.
    fn backpressure(&mut self) {
        let sc = &self.ctx.config.scheduler;
        let total = self.dispatcher.total();
        let process_full =
            total.count >= sc.max_buffered.get() || total.bytes >= sc.max_buffered_bytes.get();
        let process_low = total.count * 4 <= sc.max_buffered.get() * 3
            && total.bytes * 4 <= sc.max_buffered_bytes.get() * 3;
        let assigned = self.shared.tracker().partitions();
        let mut pause = TopicPartitionList::new();
        let mut resume = TopicPartitionList::new();
        for tp in assigned {
            let b = self.dispatcher.buffered(&tp);
            let full = process_full
                || b.count >= sc.max_buffered_per_partition.get()
                || b.bytes >= sc.max_buffered_bytes_per_partition.get();
            let low = process_low
                && b.count * 4 <= sc.max_buffered_per_partition.get() * 3
                && b.bytes * 4 <= sc.max_buffered_bytes_per_partition.get() * 3;
            if full && !self.paused.contains(&tp) {
                let _ = pause.add_partition(&tp.0, tp.1);
                debug!(topic = %tp.0, partition = tp.1, buffered = b.count, bytes = b.bytes, "buffer full: pausing fetch");
                self.paused.insert(tp);
            } else if low && self.paused.contains(&tp) {
                let _ = resume.add_partition(&tp.0, tp.1);
                debug!(topic = %tp.0, partition = tp.1, buffered = b.count, "buffer drained: resuming fetch");
                self.paused.remove(&tp);
            }
        }
        if pause.count() > 0 {
            if let Err(e) = self.consumer.pause(&pause) {
                debug!(error = %e, "pause failed (partition revoked meanwhile?)");
            }
        }
        if resume.count() > 0 {
            if let Err(e) = self.consumer.resume(&resume) {
                debug!(error = %e, "resume failed (partition revoked meanwhile?)");
            }
        }
    }

    fn export_gauges(&self) {
        let total = self.dispatcher.total();
        gauge!(m::BUFFERED_TASKS).set(total.count as f64);
        gauge!(m::BUFFERED_BYTES).set(total.bytes as f64);
        gauge!(m::PARTITIONS_PAUSED).set(self.paused.len() as f64);
        for f in self.ctx.functions.values() {
            let (t, fname) = f.labels.clone();
            gauge!(m::TASKS_QUEUED, m::L_TENANT => t, m::L_FUNCTION => fname)
                .set(self.dispatcher.queued(f.id) as f64);
        }
    }

    fn commit(&self, mode: CommitMode) {
        if self.exactly_once {
            return;
        }
        let points = self.shared.tracker().commits();
        if points.is_empty() {
            return;
        }
        if let Err(e) = self.consumer.commit(&tpl_of(&points), mode) {
            debug!(error = %e, "offset commit not sent; retried at the next interval");
            self.shared
                .tracker()
                .forget_committed(points.iter().map(|(tp, _)| tp));
        }
    }

    fn commit_all(&self) {
        let points = self.shared.tracker().all_commit_points();
        if points.is_empty() {
            return;
        }
        if let Err(e) = self.consumer.commit(&tpl_of(&points), CommitMode::Sync) {
            warn!(error = %e, "final offset commit failed; finished tasks may run again");
        }
    }
}

/// Labels for a tenant and function, bounded to configured names.
fn labels(ctx: &Ctx, tenant: &str, function: &str) -> (String, String) {
    let t = if ctx.config.tenants.contains_key(tenant) {
        tenant.to_string()
    } else {
        m::UNKNOWN.to_string()
    };
    let f = if ctx
        .functions
        .contains_key(&(tenant.to_string(), function.to_string()))
    {
        function.to_string()
    } else {
        m::UNKNOWN.to_string()
    };
    (t, f)
}

/// What a fetched record turns into.
enum Prepared {
    /// A task to run, now or (with a time, ms) no earlier than then.
    Run(Box<Job>, Option<i64>),
    /// A record with nothing to do (logged): its offset is simply done.
    Skip(Record, u64),
    /// Input that can never run: a failed outcome for the destination.
    Reject {
        record: Record,
        epoch: u64,
        outcome: Box<Outcome>,
        destination: String,
    },
}

/// Decodes and checks a record: a job for its function, or a rejection with the reason.
fn prepare(ctx: &Ctx, record: Record, epoch: u64) -> Prepared {
    if ctx.delay_tiers.iter().any(|(_, t)| *t == record.topic) {
        return prepare_delayed(ctx, record, epoch);
    }
    let queue = topics::parse_queue(&ctx.config.topics.prefix, &record.topic);
    let tenant = queue
        .as_ref()
        .map(|q| q.tenant.clone())
        .unwrap_or_else(|| record.topic.clone());
    let record_time = record.timestamp_ms.unwrap_or_else(now_ms);
    let base = |task_id: String, function: &str, payload: Vec<u8>, headers, submitted_at| Outcome {
        task_id,
        tenant: tenant.clone(),
        function: function.to_string(),
        status: OutcomeStatus::Failed,
        reason: None,
        error: None,
        result: None,
        payload,
        task_headers: headers,
        attempts: Vec::new(),
        submitted_at,
        finished_at: 0,
        source: record.source(),
        traceparent: record.traceparent.clone(),
        scheduler_id: ctx.scheduler_id.clone(),
    };
    let reject = |mut outcome: Outcome,
                  reason: FailureReason,
                  error: String,
                  destination: String| {
        let (lt, lf) = labels(ctx, &outcome.tenant, &outcome.function);
        warn!(task_id = %outcome.task_id, tenant = %outcome.tenant, reason = reason.as_str(), error = %error, "task rejected");
        counter!(m::TASKS_FAILED, m::L_TENANT => lt.clone(), m::L_FUNCTION => lf.clone(), m::L_REASON => reason.as_str()).increment(1);
        counter!(m::TASKS_COMPLETED, m::L_TENANT => lt, m::L_FUNCTION => lf, m::L_OUTCOME => "failed").increment(1);
        outcome.reason = Some(reason);
        outcome.error = Some(error);
        outcome.finished_at = now_ms();
        (outcome, destination)
    };

    let task = match codec::decode_task(&record.value, record.content_type.as_deref()) {
        Ok(task) => task,
        Err(e) => {
            let (lt, lf) = labels(ctx, &tenant, "");
            counter!(m::TASKS_SUBMITTED, m::L_TENANT => lt, m::L_FUNCTION => lf).increment(1);
            let error = format!(
                "cannot decode task at {}[{}]@{}: {e}",
                record.topic, record.partition, record.offset
            );
            let (outcome, destination) = reject(
                base(
                    record.fallback_id(),
                    "",
                    record.value.clone(),
                    BTreeMap::new(),
                    record_time,
                ),
                FailureReason::Malformed,
                error,
                ctx.config.dead_letter(&tenant),
            );
            return Prepared::Reject {
                record,
                epoch,
                outcome: Box::new(outcome),
                destination,
            };
        }
    };
    let task_id = if task.id.is_empty() {
        record.fallback_id()
    } else {
        task.id.clone()
    };
    let submitted_at = task.submitted_at.unwrap_or(record_time);
    let (lt, lf) = labels(ctx, &tenant, &task.function);
    counter!(m::TASKS_SUBMITTED, m::L_TENANT => lt, m::L_FUNCTION => lf).increment(1);

    let mut refusal = None;
    if let Some(named) = task.tenant.as_deref().filter(|t| *t != tenant) {
        refusal = Some((
            FailureReason::TenantMismatch,
            format!(
                "task names tenant `{named}` but was submitted to the queue of tenant `{tenant}`"
            ),
            ctx.config.dead_letter(&tenant),
        ));
    } else if let Some(only) = queue
        .as_ref()
        .and_then(|q| q.function.as_deref())
        .filter(|only| *only != task.function)
    {
        refusal = Some((
            FailureReason::UnknownFunction,
            format!(
                "queue {} serves only function `{only}`, not `{}`",
                record.topic, task.function
            ),
            ctx.config.dead_letter(&tenant),
        ));
    }
    let f = ctx
        .functions
        .get(&(tenant.clone(), task.function.clone()))
        .cloned();
    if refusal.is_none() {
        match &f {
            None => {
                refusal = Some((
                    FailureReason::UnknownFunction,
                    format!("tenant `{tenant}` has no function `{}`", task.function),
                    ctx.config.dead_letter(&tenant),
                ));
            }
            Some(f) if task.payload.len() > f.max_payload => {
                refusal = Some((
                    FailureReason::PayloadTooLarge,
                    format!(
                        "payload of {} bytes is over the limit of {} bytes",
                        task.payload.len(),
                        f.max_payload
                    ),
                    f.on_failure.clone(),
                ));
            }
            Some(_) => {}
        }
    }
    let outcome = base(
        task_id,
        &task.function,
        Vec::new(),
        task.headers.clone(),
        submitted_at,
    );
    match (refusal, f) {
        (None, Some(f)) => Prepared::Run(
            Box::new(Job {
                record,
                epoch,
                f,
                outcome,
                payload: Arc::new(task.payload),
                headers: Arc::new(task.headers),
            }),
            task.not_before,
        ),
        (refusal, _) => {
            let (reason, error, destination) = refusal.unwrap_or_else(|| {
                (
                    FailureReason::UnknownFunction,
                    format!("tenant `{tenant}` has no function `{}`", task.function),
                    ctx.config.dead_letter(&tenant),
                )
            });
            let mut outcome = outcome;
            outcome.payload = task.payload;
            let (outcome, destination) = reject(outcome, reason, error, destination);
            Prepared::Reject {
                record,
                epoch,
                outcome: Box::new(outcome),
                destination,
            }
        }
    }
}

/// A task back from a delay topic.
fn prepare_delayed(ctx: &Ctx, record: Record, epoch: u64) -> Prepared {
    let d = match codec::decode_delayed(&record.value) {
        Ok(d) => d,
        Err(e) => {
            // Only Tidewater writes delay topics: this is not a user's task to dead-letter.
            error!(topic = %record.topic, partition = record.partition, offset = record.offset, error = %e,
                "undecodable record in a delay topic skipped");
            return Prepared::Skip(record, epoch);
        }
    };
    let outcome = Outcome {
        task_id: d.task_id.clone(),
        tenant: d.tenant.clone(),
        function: d.function.clone(),
        status: OutcomeStatus::Failed,
        reason: None,
        error: None,
        result: None,
        payload: Vec::new(),
        task_headers: d.headers.clone(),
        attempts: d.attempts,
        submitted_at: d.submitted_at,
        finished_at: 0,
        source: d.origin,
        traceparent: d.traceparent.clone(),
        scheduler_id: ctx.scheduler_id.clone(),
    };
    let Some(f) = ctx
        .functions
        .get(&(d.tenant.clone(), d.function.clone()))
        .cloned()
    else {
        let mut outcome = outcome;
        outcome.payload = d.payload;
        outcome.reason = Some(FailureReason::UnknownFunction);
        outcome.error = Some(format!(
            "tenant `{}` has no function `{}` any more",
            d.tenant, d.function
        ));
        outcome.finished_at = now_ms();
        let destination = ctx.config.dead_letter(&d.tenant);
        return Prepared::Reject {
            record,
            epoch,
            outcome: Box::new(outcome),
            destination,
        };
    };
    let mut record = record;
    record.traceparent = d.traceparent;
    Prepared::Run(
        Box::new(Job {
            record,
            epoch,
            f,
            outcome,
            payload: Arc::new(d.payload),
            headers: Arc::new(d.headers),
        }),
        Some(d.due_at),
    )
}

/// The delay topic for a wait: the longest tier not above it (the shortest for less).
fn tier_for(tiers: &[(Duration, String)], wait: Duration) -> Option<&str> {
    tiers
        .iter()
        .rev()
        .find(|(d, _)| *d <= wait)
        .or_else(|| tiers.first())
        .map(|(_, t)| t.as_str())
}

/// Runs one attempt of a job and records it in the job's outcome.
async fn attempt(ctx: &Ctx, job: &mut Job, cancel: CancellationToken) -> AttemptResult {
    let f = &job.f;
    let (lt, lf) = f.labels.clone();
    let attempt_no = job.outcome.attempts.len() as u32 + 1;
    let attempt_i32 = i32::try_from(attempt_no).unwrap_or(i32::MAX);
    let started_at = now_ms();
    if let Some(age) = f.cfg.max_event_age {
        let waited = Duration::from_millis(
            u64::try_from(started_at - job.outcome.submitted_at).unwrap_or(0),
        );
        if waited > age {
            return AttemptResult::Expired(waited);
        }
    }
    if attempt_no == 1 {
        histogram!(m::QUEUE_WAIT_SECONDS, m::L_TENANT => lt.clone(), m::L_FUNCTION => lf.clone())
            .record((started_at - job.outcome.submitted_at).max(0) as f64 / 1000.0);
    }
    send_status_nowait(
        ctx,
        &status_event(ctx, &job.outcome, TaskStatus::Running, attempt_i32, None),
    );
    let running = gauge!(m::TASKS_RUNNING, m::L_TENANT => lt.clone(), m::L_FUNCTION => lf.clone());
    running.increment(1.0);
    let inv = Invocation {
        task_id: job.outcome.task_id.clone(),
        tenant: f.tenant.clone(),
        function: f.name.clone(),
        attempt: attempt_no,
        payload: job.payload.clone(),
        traceparent: job.record.traceparent.clone(),
        headers: job.headers.clone(),
    };
    let clock = Instant::now();
    let (result, captured) = tokio::select! {
        r = f.executor.execute_captured(inv, f.cfg.timeout) => r,
        _ = ctx.hard_stop.cancelled() => {
            running.decrement(1.0);
            return AttemptResult::Abandoned;
        }
        // Dropping the execution aborts an HTTP call and kills a command's process.
        _ = cancel.cancelled() => {
            running.decrement(1.0);
            job.outcome.attempts.push(Attempt {
                attempt: attempt_i32,
                started_at,
                finished_at: now_ms(),
                error: Some("stopped on request".into()),
            });
            return AttemptResult::Stopped;
        }
    };
    running.decrement(1.0);
    histogram!(m::EXECUTION_SECONDS, m::L_TENANT => lt.clone(), m::L_FUNCTION => lf.clone())
        .record(clock.elapsed().as_secs_f64());
    let outcome_label = if result.is_ok() { "success" } else { "failure" };
    counter!(m::ATTEMPTS, m::L_TENANT => lt, m::L_FUNCTION => lf, m::L_RESULT => outcome_label)
        .increment(1);
    job.outcome.attempts.push(Attempt {
        attempt: attempt_i32,
        started_at,
        finished_at: now_ms(),
        error: result.as_ref().err().map(ToString::to_string),
    });
    send_logs(ctx, job, attempt_i32, captured);
    match result {
        Ok(r) => AttemptResult::Succeeded(r),
        Err(e) => AttemptResult::Failed(e),
    }
}

fn status_event(
    ctx: &Ctx,
    o: &Outcome,
    status: TaskStatus,
    attempt: i32,
    error: Option<String>,
) -> StatusEvent {
    StatusEvent {
        task_id: o.task_id.clone(),
        tenant: o.tenant.clone(),
        function: o.function.clone(),
        status,
        attempt,
        at: now_ms(),
        submitted_at: o.submitted_at,
        reason: o.reason,
        error,
        source: o.source.clone(),
        scheduler_id: ctx.scheduler_id.clone(),
    }
}

/// Publishes an attempt's captured output to `<prefix>.logs` (bounded by
/// `scheduler.max_log_bytes` per stream), in the next batch.
fn send_logs(ctx: &Ctx, job: &Job, attempt: i32, captured: Vec<crate::executor::Captured>) {
    let limit = ctx.config.scheduler.max_log_bytes.get();
    let topic = topics::logs(&ctx.config.topics.prefix);
    let records: Vec<OutRecord> = captured
        .into_iter()
        .filter_map(|c| {
            let truncated = c.truncated || c.data.len() > limit;
            let mut data = c.data;
            data.truncate(limit);
            let log = codec::TaskLog {
                task_id: job.outcome.task_id.clone(),
                tenant: job.f.tenant.clone(),
                function: job.f.name.clone(),
                attempt,
                at: now_ms(),
                stream: c.stream,
                data,
                truncated,
            };
            let value = codec::encode_task_log(&log).ok()?;
            Some(OutRecord {
                topic: topic.clone(),
                key: log.task_id.clone(),
                value,
                headers: vec![
                    (h::CONTENT_TYPE, h::CONTENT_TYPE_AVRO.to_string()),
                    (h::EVENT, h::EVENT_LOG.to_string()),
                    (h::TASK_ID, log.task_id.clone()),
                    (h::TENANT, log.tenant.clone()),
                ],
            })
        })
        .collect();
    if !records.is_empty() {
        let _ = ctx.outbox.send(Unit {
            records,
            done: None,
            back: None,
        });
    }
}

/// Publishes a non-terminal status event (in the next batch; no offset depends on it).
fn send_status_nowait(ctx: &Ctx, ev: &StatusEvent) {
    match status_record(ctx, ev) {
        Some(record) => {
            let unit = Unit {
                records: vec![record],
                done: None,
                back: None,
            };
            if ctx.outbox.send(unit).is_err() {
                debug!(task_id = %ev.task_id, "status event dropped: the publisher is gone");
            }
        }
        None => error!(task_id = %ev.task_id, "cannot encode status event"),
    }
}

fn status_record(ctx: &Ctx, ev: &StatusEvent) -> Option<OutRecord> {
    let value = codec::encode_status(ev).ok()?;
    Some(OutRecord {
        topic: ctx.status_topic.clone(),
        key: ev.task_id.clone(),
        value,
        headers: vec![
            (h::CONTENT_TYPE, h::CONTENT_TYPE_AVRO.to_string()),
            (h::EVENT, h::EVENT_STATUS.to_string()),
            (h::TASK_ID, ev.task_id.clone()),
            (h::TENANT, ev.tenant.clone()),
            (h::FUNCTION, ev.function.clone()),
        ],
    })
}

/// The records of a terminal outcome: the outcome event (to `destination`, when there is
/// one) and its status event.
fn outcome_records(ctx: &Ctx, o: &Outcome, destination: Option<&str>) -> Vec<OutRecord> {
    let status = match o.status {
        OutcomeStatus::Succeeded => TaskStatus::Succeeded,
        OutcomeStatus::Failed => TaskStatus::Failed,
        OutcomeStatus::Stopped => TaskStatus::Stopped,
        OutcomeStatus::Expired => TaskStatus::Expired,
    };
    let attempt = o.attempts.last().map_or(0, |a| a.attempt);
    let ev = status_event(ctx, o, status, attempt, o.error.clone());
    let mut records = Vec::with_capacity(2);
    let destination = destination.map(Destination::parse);
    if let Some(Destination::Function(function)) = destination {
        records.extend(compensation_record(ctx, o, function));
    }
    if let Some(Destination::Topic(topic)) = destination {
        match codec::encode_outcome(o) {
            Ok(value) => {
                let mut headers = vec![
                    (h::CONTENT_TYPE, h::CONTENT_TYPE_AVRO.to_string()),
                    (h::EVENT, h::EVENT_OUTCOME.to_string()),
                    (h::TASK_ID, o.task_id.clone()),
                    (h::TENANT, o.tenant.clone()),
                    (h::FUNCTION, o.function.clone()),
                ];
                if let Some(tp) = &o.traceparent {
                    headers.push((h::TRACEPARENT, tp.clone()));
                }
                records.push(OutRecord {
                    topic: topic.to_string(),
                    key: o.task_id.clone(),
                    value,
                    headers,
                });
            }
            Err(e) => error!(task_id = %o.task_id, error = %e, "cannot encode outcome"),
        }
    }
    records.extend(status_record(ctx, &ev));
    records
}

/// A `function:<name>` destination: the outcome event, as JSON, becomes the payload of a
/// new task of that function (same tenant), with id `<task id>.<function>`.
fn compensation_record(ctx: &Ctx, o: &Outcome, function: &str) -> Option<OutRecord> {
    let task = codec::Task {
        id: format!("{}.{function}", o.task_id),
        tenant: Some(o.tenant.clone()),
        function: function.to_string(),
        payload: codec::outcome_json(o).to_string().into_bytes(),
        headers: BTreeMap::from([
            (h::COMPENSATES.to_string(), o.task_id.clone()),
            (
                h::CONTENT_TYPE.to_string(),
                h::CONTENT_TYPE_JSON.to_string(),
            ),
        ]),
        submitted_at: Some(now_ms()),
        not_before: None,
    };
    let value = match codec::encode_task(&task) {
        Ok(v) => v,
        Err(e) => {
            error!(task_id = %o.task_id, error = %e, "cannot encode compensation task");
            return None;
        }
    };
    let mut headers = vec![(h::CONTENT_TYPE, h::CONTENT_TYPE_AVRO.to_string())];
    if let Some(tp) = &o.traceparent {
        headers.push((h::TRACEPARENT, tp.clone()));
    }
    Some(OutRecord {
        topic: ctx.config.queue_topic(&o.tenant, function),
        key: task.id,
        value,
        headers,
    })
}

/// The publisher's producer: transactional (and initialised) in exactly-once mode.
fn publisher_producer(
    config: &Config,
    scheduler_id: &str,
    exactly_once: bool,
) -> Result<BaseProducer<DeliveryCounter>, SchedulerError> {
    let mut cc = kafka::client_config(config);
    kafka::set_default(&mut cc, "enable.idempotence", "true");
    kafka::set_default(&mut cc, "acks", "all");
    kafka::set_default(&mut cc, "linger.ms", "5");
    kafka::set_default(&mut cc, "compression.type", "lz4");
    if exactly_once {
        kafka::set_default(&mut cc, "message.timeout.ms", "10000");
    }
    kafka::set_default(&mut cc, "message.timeout.ms", "60000");
    if exactly_once {
        // Unique per process; zombies are fenced through the consumer group generation
        // sent with each transaction's offsets.
        cc.set(
            "transactional.id",
            format!("{}.{scheduler_id}.{}", config.group_id(), ulid::Ulid::new()),
        );
        // After a crash, read_committed consumers wait for the open transaction to time
        // out: keep that short (transactions here last well under a second).
        kafka::set_default(&mut cc, "transaction.timeout.ms", "10000");
    }
    let producer: BaseProducer<DeliveryCounter> = cc
        .create_with_context(DeliveryCounter::default())
        .map_err(|source| KafkaOpError::Client {
            what: "producer",
            source,
        })?;
    if exactly_once {
        producer
            .init_transactions(Duration::from_secs(30))
            .map_err(SchedulerError::Fatal)?;
    }
    Ok(producer)
}

/// Delay before attempt `next` (2, 3, …): `backoff * 2^(next-2)`, capped, with jitter
/// between half and all of it.
pub fn retry_delay(base: Duration, cap: Duration, next: u32, jitter: f64) -> Duration {
    let exp = next.saturating_sub(2).min(30);
    let full = base.saturating_mul(1u32 << exp).min(cap);
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_i64(now_ms());
    (hasher.finish() % 10_000) as f64 / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_and_caps() {
        let b = Duration::from_millis(100);
        let cap = Duration::from_secs(1);
        assert_eq!(retry_delay(b, cap, 2, 1.0), Duration::from_millis(100));
        assert_eq!(retry_delay(b, cap, 3, 1.0), Duration::from_millis(200));
        assert_eq!(retry_delay(b, cap, 4, 1.0), Duration::from_millis(400));
        assert_eq!(retry_delay(b, cap, 10, 1.0), cap);
        assert_eq!(retry_delay(b, cap, 2, 0.0), Duration::from_millis(50));
        assert_eq!(retry_delay(b, cap, 60, 1.0), cap);
    }
}
