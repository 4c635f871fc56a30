//! The engine: one async loop that owns the [`Dispatcher`], turns records into queued
//! tasks, starts attempts, decides what each attempt's result means (outcome, retry,
//! delay), hands records to the publisher and applies backpressure.
//!
//! The loop has two phases. Running: records, stop requests, attempt results and
//! publications all come in. Draining (after shutdown, or when the consumer failed):
//! nothing new is fetched or started; running attempts get `scheduler.shutdown_grace`,
//! then they are cut off and run again on the next owner.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use metrics::counter;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::attempt::{AttemptResult, attempt, jitter, retry_delay};
use super::consumer::{FromConsumer, GroupContext, Record, Shared};
use super::control::StopSet;
use super::dispatch::{Dispatcher, Held};
use super::intake::{Prepared, prepare};
use super::offsets::TopicPartition;
use super::out_record::OutRecord;
use super::publisher::{DoneRef, FromPublisher, Unit};
use super::records::{
    Target, delay_record, finished_id, outcome_records, redrive_of, status_event, status_record,
    stop_applies, tier_for,
};
use super::retry_queue::RetryQueue;
use super::spill::{Seen, Spill};
use super::task_table::TaskTable;
use super::worker::Worker;
use super::{Ctx, End, Job, RunSummary, SchedulerError, TASK_OVERHEAD_BYTES};
use crate::clock::now_ms;
use crate::codec::{self, FailureReason, OutcomeStatus, TaskStatus};
use crate::executor::ExecError;
use crate::names::metrics as m;
use crate::types::TpSet;

mod backpressure;
mod gauges;

/// What a publication was for.
pub(super) enum Published {
    /// A task that ran.
    Task(Box<Job>),
    /// Input that could not run.
    Reject { tp: TopicPartition, bytes: usize },
    /// A task moved to a delay topic (or skipped): its record here is done.
    Moved(Box<Job>),
    /// A task forwarded to its function's overflow queue (it never entered the queues).
    Forwarded(Box<Job>),
}

/// What flows into the engine.
pub(super) struct Inputs {
    pub records: mpsc::Receiver<FromConsumer>,
    pub published: mpsc::UnboundedReceiver<FromPublisher<Published>>,
    pub stops: mpsc::UnboundedReceiver<codec::StopRequest>,
}

/// The threads the engine stops when it is done.
pub(super) struct Workers {
    pub consumer: Worker,
    pub publisher: Worker,
    pub control: Worker,
    /// Watches the overflow queues while a function spills (when any function can).
    pub spill: Option<Worker>,
    /// Watches for partitions held by open transactions (unless turned off).
    pub held: Option<Worker>,
}

mod spill;

type AttemptDone = (Box<Job>, AttemptResult);

/// Most records, or ended attempts, the loop takes in one turn before it dispatches.
const INPUT_BATCH: usize = 256;

/// Most rounds of starting attempts in one dispatch (see [`Engine::dispatch`]).
const DISPATCH_ROUNDS: usize = 4;

/// The engine's state.
pub(super) struct Engine {
    pub ctx: Arc<Ctx>,
    pub shared: Arc<Shared>,
    pub consumer: Arc<BaseConsumer<GroupContext>>,
    pub dispatcher: Dispatcher<Box<Job>>,
    attempts: JoinSet<AttemptDone>,
    /// Recent stop requests.
    stops: StopSet,
    /// Tasks that recently reached a terminal outcome here (`scheduler.dedupe_window`).
    finished: Option<StopSet>,
    /// Cancellation of each running attempt.
    running_tokens: TaskTable<CancellationToken>,
    /// Units handed to the publisher and not yet durable.
    outstanding: usize,
    exactly_once: bool,
    /// Tasks waiting out a retry backoff here (keyed tasks, and tasks back from a delay
    /// topic before their time).
    retries: RetryQueue<Box<Job>>,
    paused: TpSet<TopicPartition>,
    /// Fetching is paused because outcomes cannot be made durable.
    fetch_held: bool,
    summary: RunSummary,
    draining: bool,
    spill: Spill,
    /// The overflow watcher's last look, and whether it should look.
    spill_seen: Seen,
    spill_active: Arc<AtomicBool>,
}

fn done_ref(entry: &Job) -> DoneRef {
    DoneRef {
        tp: entry.record.tp.clone(),
        offset: entry.record.offset,
        epoch: entry.epoch,
    }
}

/// Drops the record's bytes once the task is decoded and staying here: only forwarding it
/// to an overflow queue needs them, and a held task should cost its payload once.
fn forget_record_value(entry: &mut Job) {
    entry.record.value = Box::default();
    entry.record.content_type = None;
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
    }
}

impl Engine {
    pub fn new(
        ctx: Arc<Ctx>,
        shared: Arc<Shared>,
        consumer: Arc<BaseConsumer<GroupContext>>,
        dispatcher: Dispatcher<Box<Job>>,
        spill: (Spill, Seen, Arc<AtomicBool>),
    ) -> Self {
        let sc = &ctx.config.scheduler;
        let finished = (sc.dedupe_window > 0).then(|| StopSet::new(sc.dedupe_window));
        Self {
            exactly_once: shared.exactly_once,
            ctx,
            shared,
            consumer,
            dispatcher,
            attempts: JoinSet::new(),
            stops: StopSet::new(100_000),
            finished,
            running_tokens: TaskTable::default(),
            outstanding: 0,
            retries: RetryQueue::default(),
            paused: TpSet::default(),
            fetch_held: false,
            summary: RunSummary::default(),
            draining: false,
            spill: spill.0,
            spill_seen: spill.1,
            spill_active: spill.2,
        }
    }

    /// Runs until `shutdown` (then drains) or a failure, stops the workers and returns
    /// what the run did.
    pub async fn run(
        mut self,
        shutdown: CancellationToken,
        mut inputs: Inputs,
        workers: Workers,
    ) -> Result<RunSummary, SchedulerError> {
        let sc = self.ctx.config.scheduler.clone();
        let mut commit_tick = tokio::time::interval(sc.commit_interval);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut fatal = None;
        let mut deadline = None;
        loop {
            if self.draining && self.attempts.is_empty() {
                if self.outstanding == 0 {
                    break;
                }
                // Outcomes held back for the commit metadata wait for tasks below them
                // that will not run now.
                self.shared.give_up_held();
            }
            let wakeup = if self.draining {
                deadline
            } else {
                self.next_wakeup()
            };
            let running = !self.draining;
            tokio::select! {
                biased;
                _ = shutdown.cancelled(), if running => deadline = Some(self.drain(sc.shutdown_grace)),
                Some(done) = self.attempts.join_next(), if !self.attempts.is_empty() => {
                    self.on_attempt(done);
                    // Every attempt that has ended, before the next dispatch.
                    for _ in 1..INPUT_BATCH {
                        let Some(done) = self.attempts.try_join_next() else { break };
                        self.on_attempt(done);
                    }
                }
                Some(msg) = inputs.published.recv() => match msg {
                    FromPublisher::Durable(units) => {
                        for p in units {
                            self.on_published(p);
                        }
                    }
                    FromPublisher::Fenced(p) => self.on_fenced(p),
                    FromPublisher::Failed(e) => {
                        fatal = Some(e);
                        break;
                    }
                },
                Some(req) = inputs.stops.recv(), if running => self.on_stop(req),
                _ = commit_tick.tick() => {
                    self.commit(CommitMode::Async);
                    if running {
                        self.export_gauges();
                        self.review_spill();
                    }
                }
                _ = sleep_until(wakeup), if wakeup.is_some() => {
                    if self.draining && deadline.is_some_and(|d| d <= Instant::now()) {
                        self.hard_stop(&workers.publisher).await;
                        break;
                    }
                }
                msg = inputs.records.recv(), if running => {
                    // What the consumer has handed over, in order, before the next
                    // dispatch: one dispatch and one backpressure check per batch.
                    let mut next = msg;
                    for taken in 1.. {
                        match next {
                            Some(FromConsumer::Record(record, epoch)) => self.on_record(*record, epoch),
                            Some(FromConsumer::Revoked(tps)) => self.on_revoked(&tps),
                            Some(FromConsumer::Fatal(e)) => {
                                error!(error = %e, "fatal consumer error");
                                fatal = Some(e);
                                deadline = Some(self.drain(sc.shutdown_grace));
                                break;
                            }
                            None => {
                                fatal = Some(KafkaError::Canceled);
                                deadline = Some(self.drain(sc.shutdown_grace));
                                break;
                            }
                        }
                        if taken >= INPUT_BATCH {
                            break;
                        }
                        // Empty or closed: a closed channel is seen by the next `recv`.
                        let Ok(m) = inputs.records.try_recv() else { break };
                        next = Some(m);
                    }
                }
            }
            if !self.draining {
                self.dispatch();
                self.backpressure();
            }
        }
        self.finish(inputs, workers, fatal).await
    }

    /// Enters the draining phase; returns when the grace period ends.
    fn drain(&mut self, grace: Duration) -> Instant {
        self.draining = true;
        let queued = self
            .dispatcher
            .total()
            .count
            .saturating_sub(self.attempts.len());
        info!(running = self.attempts.len(), queued, grace = ?grace,
            "stopping: no new tasks are fetched or started; waiting for running tasks");
        Instant::now() + grace
    }

    /// The grace period is over: running attempts and unpublished outcomes are cut off.
    async fn hard_stop(&mut self, publisher: &Worker) {
        warn!(
            running = self.attempts.len(),
            publishing = self.outstanding,
            "grace period over; unfinished tasks will run again"
        );
        self.ctx.hard_stop.cancel();
        publisher.abandon();
        self.attempts.abort_all();
        while self.attempts.join_next().await.is_some() {}
        // Cut off: the revoke on leaving the group must not wait for them.
        self.shared.clear_busy();
    }

    /// Stops the workers in order: the publisher finishes its batch, what is done is
    /// committed, then the consumer leaves the group.
    async fn finish(
        mut self,
        inputs: Inputs,
        workers: Workers,
        fatal: Option<KafkaError>,
    ) -> Result<RunSummary, SchedulerError> {
        // Whatever is still held (queued, waiting to retry, cut off) runs again later.
        self.summary.abandoned = self.dispatcher.total().count;
        workers.publisher.stop();
        workers.publisher.join().await;
        // Final commit of everything done, before leaving the group (at-least-once; the
        // transactions have committed it in exactly-once mode).
        if !self.exactly_once {
            self.commit_all();
        }
        workers.consumer.stop();
        workers.control.stop();
        for w in [&workers.spill, &workers.held].into_iter().flatten() {
            w.stop();
        }
        // The consumer thread may wait on a full channel: closing it lets it go.
        drop(inputs);
        workers.consumer.join().await;
        workers.control.join().await;
        for w in [workers.spill, workers.held].into_iter().flatten() {
            w.join().await;
        }
        if let Some(e) = fatal {
            return Err(SchedulerError::Fatal(e));
        }
        info!(
            completed = self.summary.completed,
            abandoned = self.summary.abandoned,
            "scheduler stopped"
        );
        Ok(self.summary)
    }

    fn next_wakeup(&mut self) -> Option<Instant> {
        let retry = self.retries.next_due();
        let rate = self.dispatcher.next_wakeup(Instant::now());
        match (retry, rate) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_record(&mut self, record: Record, epoch: u64) {
        match prepare(&self.ctx, record, epoch) {
            Prepared::Run(job, due) => self.accept(job, due),
            Prepared::Skip(record, epoch) => {
                let tp = record.tp.clone();
                self.dispatcher.hold(&tp, 0);
                let done = DoneRef {
                    tp: tp.clone(),
                    offset: record.offset,
                    epoch,
                };
                self.send_unit(Vec::new(), done, Published::Reject { tp, bytes: 0 });
            }
            Prepared::Reject {
                record,
                epoch,
                outcome,
                destination,
            } => {
                // Bad input never runs: its failure outcome goes straight out.
                let tp = record.tp.clone();
                let bytes = record.value.len() + TASK_OVERHEAD_BYTES;
                self.dispatcher.hold(&tp, bytes);
                let mut outcome = outcome;
                outcome.scheduler_id.clone_from(&self.ctx.scheduler_id);
                let records = outcome_records(&self.ctx, &outcome.view(), Some(&destination));
                let done = DoneRef {
                    tp: tp.clone(),
                    offset: record.offset,
                    epoch,
                };
                self.send_unit(records, done, Published::Reject { tp, bytes });
            }
        }
    }

    /// Queues a task to run now, or holds or delays it until `due` (ms).
    fn accept(&mut self, entry: Box<Job>, due: Option<i64>) {
        let now = now_ms();
        let Some(due) = due.filter(|due| *due > now) else {
            if let Some(mut entry) = self.spill_or_keep(entry) {
                forget_record_value(&mut entry);
                self.dispatcher.push(entry, now);
            }
            return;
        };
        let mut entry = entry;
        forget_record_value(&mut entry);
        let wait = Duration::from_millis(u64::try_from(due - now).unwrap_or(0));
        self.dispatcher.account(&entry);
        if entry.is_back_from_delay() {
            // Back from its delay topic: it waits out the rest here, in the buffer (whose
            // limit pauses the delay partition).
            self.retries.push(Instant::now() + wait, entry);
        } else {
            self.defer(entry, due);
        }
    }

    /// Starts what may start. Attempts that end at their first poll are handled here,
    /// which frees their slots for another round (a few rounds at most: the loop also
    /// has records and publications to take in).
    fn dispatch(&mut self) {
        let mut ended = Vec::new();
        for _ in 0..DISPATCH_ROUNDS {
            self.dispatch_round(&mut ended);
            if ended.is_empty() {
                break;
            }
            for done in ended.drain(..) {
                self.on_attempt(Ok(done));
            }
        }
    }

    fn dispatch_round(&mut self, ended: &mut Vec<AttemptDone>) {
        let now = Instant::now();
        // Retries that are due go back to the front of their function's queue.
        while let Some(entry) = self.retries.pop_due(now) {
            self.dispatcher.requeue(entry);
        }
        let shared = self.shared.clone();
        let mut dropped = Vec::new();
        loop {
            let next = {
                let tracker = shared.tracker();
                self.dispatcher.next(
                    now,
                    |e| tracker.may_start(&e.record.tp, e.epoch),
                    &mut dropped,
                )
            };
            let Some(entry) = next else { break };
            if self
                .finished
                .as_ref()
                .is_some_and(|f| f.contains(&entry.f.tenant, &finished_id(&entry.task())))
            {
                // Already has its terminal outcome: an idempotent no-op, not a second run.
                debug!(task_id = %entry.task_id, tenant = %entry.f.tenant, "task already finished here; not run again");
                counter!(m::SKIPPED).increment(1);
                self.dispatcher.attempt_finished(entry.f.id);
                let done = done_ref(&entry);
                self.send_unit(Vec::new(), done, Published::Moved(entry));
                continue;
            }
            if self
                .stops
                .get(&entry.f.tenant, &entry.task_id)
                .is_some_and(|at| stop_applies(&entry.task(), at))
            {
                self.dispatcher.attempt_finished(entry.f.id);
                self.stop_task(entry);
                continue;
            }
            shared.tracker().mark_running(&entry.record.tp, entry.epoch);
            let cancel = CancellationToken::new();
            self.running_tokens
                .insert(&entry.f.tenant, &entry.task_id, cancel.clone());
            let ctx = self.ctx.clone();
            let mut run: Pin<Box<dyn Future<Output = AttemptDone> + Send>> = Box::pin(async move {
                let mut entry = entry;
                let result = attempt(&ctx, &mut entry, cancel).await;
                (entry, result)
            });
            // A first poll here: an attempt that ends without waiting (an in-process
            // handler that returns at once) needs no task of its own. One that waits is
            // spawned, and the runtime polls it again at once with a waker that wakes it.
            match run.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(done) => ended.push(done),
                Poll::Pending => {
                    self.attempts.spawn(run);
                }
            }
        }
        if !dropped.is_empty() {
            debug!(
                dropped = dropped.len(),
                "queued tasks of revoked partitions dropped"
            );
        }
    }

    fn on_attempt(&mut self, done: Result<AttemptDone, tokio::task::JoinError>) {
        let (entry, result) = match done {
            Ok(d) => d,
            Err(e) => {
                // Its slot and buffer are lost until restart; the offset stays uncommitted.
                error!(error = %e, "attempt worker panicked; its task will run again after a restart");
                return;
            }
        };
        self.dispatcher.attempt_finished(entry.f.id);
        self.running_tokens.remove(&entry.f.tenant, &entry.task_id);
        if !self.shared.attempt_ended(&entry.record.tp, entry.epoch) {
            // Revoked while running: the new owner runs it and publishes its outcome.
            self.dispatcher.task_finished(&entry);
            return;
        }
        let f = entry.f.clone();
        match result {
            // Cut off at hard stop: stays accounted, so the summary counts it.
            AttemptResult::Abandoned => {}
            AttemptResult::Stopped => {
                let end = End::new(
                    OutcomeStatus::Stopped,
                    "stopped on request while running".to_string(),
                );
                self.publish(entry, end, Some(f.on_failure.clone()));
            }
            AttemptResult::Expired(waited) => {
                let error = format!(
                    "not run: waited {} since submission, over max_event_age {}",
                    humantime::format_duration(Duration::from_secs(waited.as_secs())),
                    humantime::format_duration(f.cfg.max_event_age.unwrap_or_default())
                );
                let end = End::new(OutcomeStatus::Expired, error);
                self.publish(entry, end, Some(f.on_failure.clone()));
            }
            AttemptResult::Succeeded(result) => {
                let end = End {
                    result: Some(result),
                    ..End::new(OutcomeStatus::Succeeded, None)
                };
                self.publish(entry, end, f.on_success.clone());
            }
            AttemptResult::Failed(e) => self.on_failure(entry, e),
        }
    }

    /// A failed attempt: the final failure, or a retry after a backoff.
    fn on_failure(&mut self, job: Box<Job>, e: ExecError) {
        let f = job.f.clone();
        let attempt_no = job.attempts.len() as u32;
        let message = e.to_string();
        let reason = match &e {
            ExecError::Timeout(_) => FailureReason::Timeout,
            ExecError::Failed {
                retryable: false, ..
            } => FailureReason::NonRetryable,
            ExecError::Failed { .. } => FailureReason::Executor,
        };
        if !e.retryable() || attempt_no >= f.cfg.max_attempts.get() {
            let end = End {
                reason: Some(reason),
                ..End::new(OutcomeStatus::Failed, message)
            };
            self.publish(job, end, Some(f.on_failure.clone()));
            return;
        }
        if self.draining {
            // Left accounted: counted as abandoned; runs again on the next owner.
            return;
        }
        let delay = retry_delay(f.cfg.backoff, f.cfg.backoff_max, attempt_no + 1, jitter());
        debug!(task_id = %job.task_id, attempt = attempt_no, error = %message, retry_in = ?delay, "attempt failed; retrying");
        f.metrics.retries.increment(1);
        let attempt_i32 = i32::try_from(attempt_no).unwrap_or(i32::MAX);
        let task = job.task();
        let ev = status_event(
            &self.ctx,
            &task,
            TaskStatus::Retrying,
            attempt_i32,
            (None, Some(message.as_str())),
        );
        self.ctx.send_nowait(
            status_record(&self.ctx, &ev, redrive_of(&task))
                .into_iter()
                .collect(),
        );
        if job.key().is_some() {
            // Keyed: later tasks of the key wait behind it, so it waits here.
            self.retries.push(Instant::now() + delay, job);
        } else {
            let due = now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            self.defer(job, due);
        }
    }

    fn publish(&mut self, job: Box<Job>, end: End, destination: Option<Target>) {
        let outcome = job.outcome(&end, now_ms(), &self.ctx.scheduler_id);
        crate::otel::finish_process(
            job.span.get(),
            outcome.status.as_str(),
            outcome.reason.map(|r| r.as_str()),
        );
        if let Some(finished) = self.finished.as_mut() {
            finished.insert(&job.f.tenant, &finished_id(&job.task()));
        }
        job.f.metrics.finished(outcome.status, outcome.reason);
        let records = outcome_records(&self.ctx, &outcome, destination.as_ref());
        let done = done_ref(&job);
        self.send_unit(records, done, Published::Task(job));
    }

    /// Ends a task that was asked to stop before it ran (again): outcome `stopped`.
    fn stop_task(&mut self, entry: Box<Job>) {
        let end = End::new(
            OutcomeStatus::Stopped,
            "stopped on request before it ran".to_string(),
        );
        let destination = entry.f.on_failure.clone();
        self.publish(entry, end, Some(destination));
    }

    /// A stop request: remembered for queued and delayed tasks; a running one is cancelled.
    fn on_stop(&mut self, req: codec::StopRequest) {
        self.stops
            .insert_at(&req.tenant, &req.task_id, req.requested_at);
        if let Some(token) = self.running_tokens.get(&req.tenant, &req.task_id) {
            info!(task_id = %req.task_id, tenant = %req.tenant, by = %req.requested_by, "stopping a running task");
            token.cancel();
        }
    }

    /// Moves a task to the delay topic for its wait; its current record is then done.
    fn defer(&mut self, job: Box<Job>, due: i64) {
        let wait = Duration::from_millis(u64::try_from(due - now_ms()).unwrap_or(0));
        let Some(topic) = tier_for(&self.ctx.delay_tiers, wait).map(str::to_string) else {
            return;
        };
        let delayed = codec::DelayedTask {
            task_id: job.task_id.to_string(),
            tenant: job.f.tenant.clone(),
            function: job.f.name.clone(),
            payload: job.payload.as_ref().clone(),
            headers: job.headers.as_ref().clone(),
            submitted_at: job.submitted_at,
            due_at: due,
            attempts: job.attempts.clone(),
            origin: job.source().to_source(),
            traceparent: job.traceparent().map(str::to_string),
        };
        match delay_record(&topic, &delayed) {
            Ok(record) => {
                debug!(task_id = %delayed.task_id, topic = %record.topic, wait = ?wait, "task moved to a delay topic");
                crate::otel::finish_process(job.span.get(), "delayed", None);
                let done = done_ref(&job);
                self.send_unit(vec![record], done, Published::Moved(job));
            }
            Err(e) => {
                error!(task_id = %delayed.task_id, error = %e, "cannot encode delayed task; it stays here");
                self.retries.push(Instant::now() + wait, job);
            }
        }
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
            Published::Forwarded(entry) => self.on_forwarded(entry),
            Published::Reject { tp, bytes } => {
                self.summary.completed += 1;
                self.dispatcher.release(tp, *bytes);
            }
        }
    }

    /// A unit was not published because its partition went to another scheduler: its
    /// buffer is released, and the task may run here again if the partition comes back.
    fn on_fenced(&mut self, published: Published) {
        self.outstanding = self.outstanding.saturating_sub(1);
        match published {
            Published::Task(entry) | Published::Moved(entry) => {
                if let Some(finished) = self.finished.as_mut() {
                    finished.remove(&entry.f.tenant, &finished_id(&entry.task()));
                }
                self.dispatcher.task_finished(&entry);
            }
            Published::Reject { tp, bytes } => self.dispatcher.release(&tp, bytes),
            Published::Forwarded(entry) => self.on_forwarded(&entry),
        }
    }

    fn on_revoked(&mut self, tps: &[TopicPartition]) {
        // librdkafka keeps a partition's pause across rebalances: one forgotten here while
        // still paused there would never be fetched again if it came back.
        let mut unpause = TopicPartitionList::new();
        for tp in tps {
            let dropped = self.dispatcher.drop_partition(tp);
            for e in self.retries.take_where(|e| &e.record.tp == tp) {
                self.dispatcher.task_finished(&e);
            }
            if self.paused.remove(tp) {
                let _ = unpause.add_partition(&tp.topic, tp.partition);
            }
            if !dropped.is_empty() {
                debug!(topic = %tp.topic, partition = tp.partition, dropped = dropped.len(), "queued tasks of a revoked partition dropped");
            }
        }
        if unpause.count() > 0 {
            if let Err(e) = self.consumer.resume(&unpause) {
                debug!(error = %e, "clearing the pause of revoked partitions failed");
            }
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

fn tpl_of(points: &[(TopicPartition, i64)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (tp, offset) in points {
        let _ = tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*offset));
    }
    tpl
}
