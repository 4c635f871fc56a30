//! The scheduler: consumes the queue topics as a member of the scheduler group, runs each
//! task through its function's executor within the function's limits, publishes the
//! outcome and status events, and commits offsets that are done.

pub mod offsets;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics::{counter, gauge, histogram};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::codec::{
    self, Attempt, FailureReason, Outcome, OutcomeStatus, Source, StatusEvent, Task, TaskStatus,
};
use crate::config::{Config, FunctionConfig};
use crate::executor::{ExecError, Executor, ExecutorBuildError, Handlers, Invocation};
use crate::kafka::{self, KafkaOpError};
use crate::names::{headers as h, metrics as m, topics};
use offsets::{OffsetTracker, TopicPartition};

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
    /// Tasks still running when the shutdown grace period ran out (re-delivered later).
    pub abandoned: usize,
}

/// A scheduler process, ready to [`Scheduler::run`].
pub struct Scheduler {
    config: Arc<Config>,
    handlers: Handlers,
}

struct FunctionRt {
    cfg: FunctionConfig,
    executor: Executor,
    slots: Arc<Semaphore>,
    on_success: Option<String>,
    on_failure: String,
    max_payload: usize,
}

struct Ctx {
    config: Arc<Config>,
    scheduler_id: String,
    producer: FutureProducer,
    functions: HashMap<(String, String), Arc<FunctionRt>>,
    status_topic: String,
    /// Cancelled when shutdown starts: tasks not yet running are abandoned (their offsets
    /// stay uncommitted, so the next owner runs them); running ones may finish.
    stopping: CancellationToken,
    /// Cancelled when the grace period is over: all pending work is abandoned.
    hard_stop: CancellationToken,
}

/// The consumer's context: keeps the offset tracker in step with rebalances and commits
/// what is done before a partition goes.
struct GroupContext {
    tracker: Arc<Mutex<OffsetTracker>>,
}

fn lock(tracker: &Mutex<OffsetTracker>) -> MutexGuard<'_, OffsetTracker> {
    // A panic while holding the lock leaves consistent data (each method is one step).
    tracker.lock().unwrap_or_else(|p| p.into_inner())
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            counter!(m::REBALANCES, m::L_KIND => "revoke").increment(1);
            let mut commit = TopicPartitionList::new();
            {
                let mut tracker = lock(&self.tracker);
                for e in tpl.elements() {
                    let tp = (e.topic().to_string(), e.partition());
                    if let Some(point) = tracker.commit_point(&tp) {
                        let _ = commit.add_partition_offset(&tp.0, tp.1, Offset::Offset(point));
                    }
                    if let Some(p) = tracker.revoke(&tp) {
                        if p.pending() > 0 {
                            warn!(topic = %tp.0, partition = tp.1, in_flight = p.pending(),
                                "partition revoked with tasks in flight; they will run again on the new owner");
                        }
                    }
                }
            }
            // Counted by `commit_callback`, which librdkafka calls for this commit too.
            if commit.count() > 0 {
                if let Err(e) = consumer.commit(&commit, CommitMode::Sync) {
                    warn!(error = %e, "commit on revoke failed");
                }
            }
            info!(partitions = tpl.count(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            counter!(m::REBALANCES, m::L_KIND => "assign").increment(1);
            let mut tracker = lock(&self.tracker);
            for e in tpl.elements() {
                tracker.assign((e.topic().to_string(), e.partition()));
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

/// A fetched record, owned, with what the scheduler needs from it.
struct Record {
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    content_type: Option<String>,
    traceparent: Option<String>,
    timestamp_ms: Option<i64>,
}

impl Record {
    fn from_message(msg: &BorrowedMessage<'_>) -> Self {
        let mut content_type = None;
        let mut traceparent = None;
        if let Some(hs) = msg.headers() {
            for hd in hs.iter() {
                let value = hd.value.and_then(|v| std::str::from_utf8(v).ok());
                if hd.key.eq_ignore_ascii_case(h::CONTENT_TYPE) {
                    content_type = value.map(str::to_string);
                } else if hd.key.eq_ignore_ascii_case(h::TRACEPARENT) {
                    traceparent = value.map(str::to_string);
                }
            }
        }
        Record {
            topic: msg.topic().to_string(),
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(<[u8]>::to_vec),
            value: msg.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            content_type,
            traceparent,
            timestamp_ms: msg.timestamp().to_millis(),
        }
    }

    fn source(&self) -> Source {
        Source {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
        }
    }

    /// The task id when the submitter chose none: the record key, else its position.
    fn fallback_id(&self) -> String {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}-{}-{}", self.topic, self.partition, self.offset))
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The default scheduler id: `<hostname>-<pid>`.
pub fn default_scheduler_id() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "tidewater".into());
    format!("{host}-{}", std::process::id())
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
                out.insert(
                    (tname.clone(), fname.clone()),
                    Arc::new(FunctionRt {
                        executor,
                        slots: Arc::new(Semaphore::new(
                            usize::try_from(f.concurrency.get()).unwrap_or(usize::MAX),
                        )),
                        on_success: f.on_success.clone(),
                        on_failure: self.config.failure_destination(tname, fname),
                        max_payload: self.config.max_payload(f),
                        cfg: f.clone(),
                    }),
                );
            }
        }
        Ok(out)
    }

    /// Runs until `shutdown` is cancelled, then stops fetching, lets running tasks finish
    /// within `scheduler.shutdown_grace`, commits what is done and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<RunSummary, SchedulerError> {
        let config = self.config.clone();
        let functions = self.build_functions()?;
        {
            let c = config.clone();
            tokio::task::spawn_blocking(move || kafka::check_topics(&c))
                .await
                .map_err(|e| SchedulerError::Internal(e.to_string()))??;
        }
        let scheduler_id = config
            .scheduler
            .id
            .clone()
            .unwrap_or_else(default_scheduler_id);
        let producer = kafka::producer(&config)?;
        let tracker = Arc::new(Mutex::new(OffsetTracker::new()));
        let consumer = self.consumer(&tracker)?;
        let queues = config.queue_topics();
        let topic_refs: Vec<&str> = queues.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topic_refs)
            .map_err(|source| SchedulerError::Subscribe {
                topics: queues.clone(),
                source,
            })?;
        info!(scheduler_id = %scheduler_id, group = %config.group_id(), topics = ?queues, "scheduler started");

        let hard_stop = CancellationToken::new();
        let ctx = Arc::new(Ctx {
            status_topic: topics::status(&config.topics.prefix),
            config: config.clone(),
            scheduler_id,
            producer,
            functions,
            stopping: shutdown.clone(),
            hard_stop: hard_stop.clone(),
        });
        let max_in_flight = config.scheduler.max_in_flight.get();
        let mut tasks: JoinSet<Option<(TopicPartition, i64, u64)>> = JoinSet::new();
        let mut commit_tick = tokio::time::interval(config.scheduler.commit_interval);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut summary = RunSummary::default();

        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                    finish(&tracker, joined, &mut summary);
                }
                _ = commit_tick.tick() => commit(&consumer, &tracker, CommitMode::Async),
                msg = consumer.recv(), if tasks.len() < max_in_flight => match msg {
                    Ok(msg) => {
                        let record = Record::from_message(&msg);
                        drop(msg);
                        let tp = (record.topic.clone(), record.partition);
                        let epoch = lock(&tracker).start(&tp, record.offset);
                        let ctx = ctx.clone();
                        tasks.spawn(async move {
                            let offset = record.offset;
                            process(&ctx, record).await.then_some((tp, offset, epoch))
                        });
                    }
                    Err(e) => {
                        if is_fatal(&e) {
                            error!(error = %e, "fatal consumer error");
                            hard_stop.cancel();
                            tasks.abort_all();
                            return Err(SchedulerError::Fatal(e));
                        }
                        warn!(error = %e, "consumer error (retrying)");
                    }
                },
            }
        }

        let grace = config.scheduler.shutdown_grace;
        info!(in_flight = tasks.len(), grace = ?grace, "stopping: no new tasks are fetched or started; waiting for running tasks");
        let deadline = tokio::time::sleep(grace);
        tokio::pin!(deadline);
        while !tasks.is_empty() {
            tokio::select! {
                biased;
                Some(joined) = tasks.join_next() => finish(&tracker, joined, &mut summary),
                _ = commit_tick.tick() => commit(&consumer, &tracker, CommitMode::Async),
                _ = &mut deadline => {
                    summary.abandoned = tasks.len();
                    warn!(abandoned = tasks.len(), "grace period over; unfinished tasks will be re-delivered");
                    hard_stop.cancel();
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
        // Final commit of everything done, synchronously, before leaving the group.
        let points = lock(&tracker).all_commit_points();
        if !points.is_empty() {
            let tpl = tpl_of(&points);
            if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                warn!(error = %e, "final offset commit failed; finished tasks may run again");
            }
        }
        consumer.unsubscribe();
        let _ = tokio::task::spawn_blocking(move || {
            use rdkafka::producer::Producer;
            let _ = ctx.producer.flush(Duration::from_secs(10));
        })
        .await;
        info!(
            completed = summary.completed,
            abandoned = summary.abandoned,
            "scheduler stopped"
        );
        Ok(summary)
    }

    fn consumer(
        &self,
        tracker: &Arc<Mutex<OffsetTracker>>,
    ) -> Result<StreamConsumer<GroupContext>, SchedulerError> {
        let config = &self.config;
        let mut cc = kafka::client_config(config);
        cc.set("group.id", config.group_id());
        cc.set("enable.auto.commit", "false");
        kafka::set_default(&mut cc, "auto.offset.reset", "earliest");
        kafka::set_default(&mut cc, "isolation.level", "read_committed");
        kafka::set_default(
            &mut cc,
            "partition.assignment.strategy",
            "cooperative-sticky",
        );
        kafka::set_default(&mut cc, "session.timeout.ms", "10000");
        kafka::set_default(&mut cc, "heartbeat.interval.ms", "1000");
        kafka::set_default(&mut cc, "topic.metadata.refresh.interval.ms", "10000");
        kafka::set_default(&mut cc, "queued.max.messages.kbytes", "16384");
        let ctx = GroupContext {
            tracker: tracker.clone(),
        };
        cc.create_with_context(ctx)
            .map_err(|source| KafkaOpError::Client {
                what: "consumer",
                source,
            })
            .map_err(SchedulerError::from)
    }
}

fn is_fatal(e: &KafkaError) -> bool {
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

fn tpl_of(points: &[(TopicPartition, i64)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in points {
        let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    tpl
}

fn commit(
    consumer: &StreamConsumer<GroupContext>,
    tracker: &Mutex<OffsetTracker>,
    mode: CommitMode,
) {
    let points = lock(tracker).commits();
    if points.is_empty() {
        return;
    }
    if let Err(e) = consumer.commit(&tpl_of(&points), mode) {
        debug!(error = %e, "offset commit not sent; retried at the next interval");
        lock(tracker).forget_committed(points.iter().map(|(tp, _)| tp));
    }
}

fn finish(
    tracker: &Mutex<OffsetTracker>,
    joined: Result<Option<(TopicPartition, i64, u64)>, tokio::task::JoinError>,
    summary: &mut RunSummary,
) {
    match joined {
        Ok(Some((tp, offset, epoch))) => {
            summary.completed += 1;
            lock(tracker).done(&tp, offset, epoch);
        }
        // Abandoned at shutdown: the offset stays uncommitted and the task runs again.
        Ok(None) => {}
        Err(e) if e.is_cancelled() => {}
        Err(e) => error!(error = %e, "task worker panicked; its offset stays uncommitted"),
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

/// Handles one record to its outcome. Returns false when the work was abandoned at
/// shutdown (the offset must then stay uncommitted).
async fn process(ctx: &Ctx, record: Record) -> bool {
    let queue = topics::parse_queue(&ctx.config.topics.prefix, &record.topic);
    let tenant = queue
        .as_ref()
        .map(|q| q.tenant.clone())
        .unwrap_or_else(|| record.topic.clone());
    let submitted_at = record.timestamp_ms.unwrap_or_else(now_ms);

    let task = match codec::decode_task(&record.value, record.content_type.as_deref()) {
        Ok(task) => task,
        Err(e) => {
            let (lt, lf) = labels(ctx, &tenant, "");
            counter!(m::TASKS_SUBMITTED, m::L_TENANT => lt, m::L_FUNCTION => lf).increment(1);
            let id = record.fallback_id();
            let payload = record.value.clone();
            return reject(
                ctx,
                &record,
                Rejected {
                    task_id: id,
                    tenant: &tenant,
                    function: "",
                    payload,
                    headers: Default::default(),
                    submitted_at,
                    reason: FailureReason::Malformed,
                    error: format!(
                        "cannot decode task at {}[{}]@{}: {e}",
                        record.topic, record.partition, record.offset
                    ),
                    destination: ctx.config.dead_letter(&tenant),
                },
            )
            .await;
        }
    };
    let task_id = if task.id.is_empty() {
        record.fallback_id()
    } else {
        task.id.clone()
    };
    let submitted_at = task.submitted_at.unwrap_or(submitted_at);
    let (lt, lf) = labels(ctx, &tenant, &task.function);
    counter!(m::TASKS_SUBMITTED, m::L_TENANT => lt, m::L_FUNCTION => lf).increment(1);

    let reject_with = |reason: FailureReason, error: String, destination: String| Rejected {
        task_id: task_id.clone(),
        tenant: &tenant,
        function: &task.function,
        payload: task.payload.clone(),
        headers: task.headers.clone(),
        submitted_at,
        reason,
        error,
        destination,
    };
    if let Some(named) = task.tenant.as_deref().filter(|t| *t != tenant) {
        let r = reject_with(
            FailureReason::TenantMismatch,
            format!(
                "task names tenant `{named}` but was submitted to the queue of tenant `{tenant}`"
            ),
            ctx.config.dead_letter(&tenant),
        );
        return reject(ctx, &record, r).await;
    }
    if let Some(only) = queue.as_ref().and_then(|q| q.function.as_deref()) {
        if only != task.function {
            let r = reject_with(
                FailureReason::UnknownFunction,
                format!(
                    "queue {} serves only function `{only}`, not `{}`",
                    record.topic, task.function
                ),
                ctx.config.dead_letter(&tenant),
            );
            return reject(ctx, &record, r).await;
        }
    }
    let Some(f) = ctx
        .functions
        .get(&(tenant.clone(), task.function.clone()))
        .cloned()
    else {
        let r = reject_with(
            FailureReason::UnknownFunction,
            format!("tenant `{tenant}` has no function `{}`", task.function),
            ctx.config.dead_letter(&tenant),
        );
        return reject(ctx, &record, r).await;
    };
    if task.payload.len() > f.max_payload {
        let r = reject_with(
            FailureReason::PayloadTooLarge,
            format!(
                "payload of {} bytes is over the limit of {} bytes",
                task.payload.len(),
                f.max_payload
            ),
            f.on_failure.clone(),
        );
        return reject(ctx, &record, r).await;
    }
    run_task(ctx, &record, &f, task, task_id, tenant, submitted_at).await
}

struct Rejected<'a> {
    task_id: String,
    tenant: &'a str,
    function: &'a str,
    payload: Vec<u8>,
    headers: std::collections::BTreeMap<String, String>,
    submitted_at: i64,
    reason: FailureReason,
    error: String,
    destination: String,
}

/// Input that can never run: a failed outcome with the reason, straight to the destination.
async fn reject(ctx: &Ctx, record: &Record, r: Rejected<'_>) -> bool {
    warn!(task_id = %r.task_id, tenant = r.tenant, reason = r.reason.as_str(), error = %r.error, "task rejected");
    let (lt, lf) = labels(ctx, r.tenant, r.function);
    counter!(m::TASKS_FAILED, m::L_TENANT => lt.clone(), m::L_FUNCTION => lf.clone(), m::L_REASON => r.reason.as_str()).increment(1);
    counter!(m::TASKS_COMPLETED, m::L_TENANT => lt, m::L_FUNCTION => lf, m::L_OUTCOME => "failed")
        .increment(1);
    let now = now_ms();
    let outcome = Outcome {
        task_id: r.task_id,
        tenant: r.tenant.to_string(),
        function: r.function.to_string(),
        status: OutcomeStatus::Failed,
        reason: Some(r.reason),
        error: Some(r.error),
        result: None,
        payload: r.payload,
        task_headers: r.headers,
        attempts: vec![],
        submitted_at: r.submitted_at,
        finished_at: now,
        source: record.source(),
        traceparent: record.traceparent.clone(),
        scheduler_id: ctx.scheduler_id.clone(),
    };
    publish_outcome(ctx, &outcome, Some(&r.destination)).await
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

fn status_headers(ev: &StatusEvent) -> rdkafka::message::OwnedHeaders {
    kafka::headers([
        (h::CONTENT_TYPE, h::CONTENT_TYPE_AVRO),
        (h::EVENT, h::EVENT_STATUS),
        (h::TASK_ID, ev.task_id.as_str()),
        (h::TENANT, ev.tenant.as_str()),
        (h::FUNCTION, ev.function.as_str()),
    ])
}

/// Publishes a status event without waiting for its delivery (non-terminal events).
fn send_status_nowait(ctx: &Ctx, ev: &StatusEvent) {
    let value = match codec::encode_status(ev) {
        Ok(v) => v,
        Err(e) => {
            error!(task_id = %ev.task_id, error = %e, "cannot encode status event");
            return;
        }
    };
    let headers = status_headers(ev);
    let record = rdkafka::producer::FutureRecord::to(&ctx.status_topic)
        .key(&ev.task_id)
        .payload(&value)
        .headers(headers);
    if let Err((e, _)) = ctx.producer.send_result(record) {
        warn!(task_id = %ev.task_id, error = %e, "status event not queued");
    }
}

/// Publishes a terminal outcome (to `destination`, when there is one) and its status
/// event, retrying until Kafka takes them. Returns false when abandoned at hard stop.
async fn publish_outcome(ctx: &Ctx, o: &Outcome, destination: Option<&str>) -> bool {
    let status = match o.status {
        OutcomeStatus::Succeeded => TaskStatus::Succeeded,
        OutcomeStatus::Failed => TaskStatus::Failed,
    };
    let attempt = o.attempts.last().map_or(0, |a| a.attempt);
    let ev = status_event(ctx, o, status, attempt, o.error.clone());
    let (outcome_bytes, status_bytes) = match (codec::encode_outcome(o), codec::encode_status(&ev))
    {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            // Our own records always encode; this is a bug, not input. Keep the offset.
            error!(task_id = %o.task_id, error = %e, "cannot encode outcome; task left uncommitted");
            return false;
        }
    };
    let mut backoff = Duration::from_millis(200);
    loop {
        let outcome_send = async {
            match destination {
                Some(topic) => {
                    let mut pairs = vec![
                        (h::CONTENT_TYPE, h::CONTENT_TYPE_AVRO),
                        (h::EVENT, h::EVENT_OUTCOME),
                        (h::TASK_ID, o.task_id.as_str()),
                        (h::TENANT, o.tenant.as_str()),
                        (h::FUNCTION, o.function.as_str()),
                    ];
                    if let Some(tp) = &o.traceparent {
                        pairs.push((h::TRACEPARENT, tp.as_str()));
                    }
                    kafka::send(
                        &ctx.producer,
                        topic,
                        &o.task_id,
                        &outcome_bytes,
                        kafka::headers(pairs),
                    )
                    .await
                }
                None => Ok(()),
            }
        };
        let status_send = kafka::send(
            &ctx.producer,
            &ctx.status_topic,
            &o.task_id,
            &status_bytes,
            status_headers(&ev),
        );
        let sent = tokio::select! {
            r = async { tokio::join!(outcome_send, status_send) } => r,
            _ = ctx.hard_stop.cancelled() => return false,
        };
        match sent {
            (Ok(()), Ok(())) => return true,
            (Err(e), _) | (_, Err(e)) => {
                warn!(task_id = %o.task_id, error = %e, retry_in = ?backoff, "cannot publish outcome; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = ctx.hard_stop.cancelled() => return false,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
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

#[allow(clippy::too_many_arguments)]
async fn run_task(
    ctx: &Ctx,
    record: &Record,
    f: &FunctionRt,
    task: Task,
    task_id: String,
    tenant: String,
    submitted_at: i64,
) -> bool {
    let (lt, lf) = labels(ctx, &tenant, &task.function);
    let payload = Arc::new(task.payload);
    let task_headers = Arc::new(task.headers);
    let traceparent = record.traceparent.clone();
    let mut outcome = Outcome {
        task_id: task_id.clone(),
        tenant: tenant.clone(),
        function: task.function.clone(),
        status: OutcomeStatus::Failed,
        reason: None,
        error: None,
        result: None,
        payload: Vec::new(),
        task_headers: task_headers.as_ref().clone(),
        attempts: Vec::new(),
        submitted_at,
        finished_at: 0,
        source: record.source(),
        traceparent: traceparent.clone(),
        scheduler_id: ctx.scheduler_id.clone(),
    };
    let max_attempts = f.cfg.max_attempts.get();
    let mut attempt = 1u32;
    loop {
        let permit = tokio::select! {
            biased;
            _ = ctx.stopping.cancelled() => return false,
            p = f.slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return false,
            },
        };
        let started_at = now_ms();
        if attempt == 1 {
            histogram!(m::QUEUE_WAIT_SECONDS, m::L_TENANT => lt.clone(), m::L_FUNCTION => lf.clone())
                .record((started_at - submitted_at).max(0) as f64 / 1000.0);
        }
        let attempt_i32 = i32::try_from(attempt).unwrap_or(i32::MAX);
        send_status_nowait(
            ctx,
            &status_event(ctx, &outcome, TaskStatus::Running, attempt_i32, None),
        );
        let running =
            gauge!(m::TASKS_RUNNING, m::L_TENANT => lt.clone(), m::L_FUNCTION => lf.clone());
        running.increment(1.0);
        let inv = Invocation {
            task_id: task_id.clone(),
            tenant: tenant.clone(),
            function: task.function.clone(),
            attempt,
            payload: payload.clone(),
            traceparent: traceparent.clone(),
            headers: task_headers.clone(),
        };
        let clock = std::time::Instant::now();
        let result = tokio::select! {
            r = f.executor.execute(inv, f.cfg.timeout) => r,
            _ = ctx.hard_stop.cancelled() => {
                running.decrement(1.0);
                return false;
            }
        };
        running.decrement(1.0);
        drop(permit);
        histogram!(m::EXECUTION_SECONDS, m::L_TENANT => lt.clone(), m::L_FUNCTION => lf.clone())
            .record(clock.elapsed().as_secs_f64());
        let finished_at = now_ms();
        match result {
            Ok(result) => {
                counter!(m::ATTEMPTS, m::L_TENANT => lt.clone(), m::L_FUNCTION => lf.clone(), m::L_RESULT => "success").increment(1);
                outcome.attempts.push(Attempt {
                    attempt: attempt_i32,
                    started_at,
                    finished_at,
                    error: None,
                });
                outcome.status = OutcomeStatus::Succeeded;
                outcome.result = Some(result);
                break;
            }
            Err(e) => {
                counter!(m::ATTEMPTS, m::L_TENANT => lt.clone(), m::L_FUNCTION => lf.clone(), m::L_RESULT => "failure").increment(1);
                let message = e.to_string();
                outcome.attempts.push(Attempt {
                    attempt: attempt_i32,
                    started_at,
                    finished_at,
                    error: Some(message.clone()),
                });
                let reason = match &e {
                    ExecError::Timeout(_) => FailureReason::Timeout,
                    ExecError::Failed {
                        retryable: false, ..
                    } => FailureReason::NonRetryable,
                    ExecError::Failed { .. } => FailureReason::Executor,
                };
                if !e.retryable() || attempt >= max_attempts {
                    outcome.reason = Some(reason);
                    outcome.error = Some(message);
                    break;
                }
                let delay = retry_delay(f.cfg.backoff, f.cfg.backoff_max, attempt + 1, jitter());
                debug!(task_id = %task_id, attempt, error = %message, retry_in = ?delay, "attempt failed; retrying");
                send_status_nowait(
                    ctx,
                    &status_event(
                        ctx,
                        &outcome,
                        TaskStatus::Retrying,
                        attempt_i32,
                        Some(message),
                    ),
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = ctx.stopping.cancelled() => return false,
                }
                attempt += 1;
            }
        }
    }
    outcome.finished_at = now_ms();
    let destination = match outcome.status {
        OutcomeStatus::Succeeded => f.on_success.as_deref(),
        OutcomeStatus::Failed => {
            outcome.payload = payload.as_ref().clone();
            Some(f.on_failure.as_str())
        }
    };
    if outcome.status == OutcomeStatus::Succeeded {
        // Compensation needs the input too.
        outcome.payload = payload.as_ref().clone();
    }
    let label = match outcome.status {
        OutcomeStatus::Succeeded => "succeeded",
        OutcomeStatus::Failed => "failed",
    };
    if let Some(reason) = outcome.reason {
        counter!(m::TASKS_FAILED, m::L_TENANT => lt.clone(), m::L_FUNCTION => lf.clone(), m::L_REASON => reason.as_str()).increment(1);
    }
    counter!(m::TASKS_COMPLETED, m::L_TENANT => lt, m::L_FUNCTION => lf, m::L_OUTCOME => label)
        .increment(1);
    debug!(task_id = %task_id, outcome = label, attempts = outcome.attempts.len(), "task finished");
    publish_outcome(ctx, &outcome, destination).await
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
