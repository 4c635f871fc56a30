//! The scheduler: consumes the queue topics as a member of the scheduler group, queues
//! each task for its function, starts tasks by weighted fair queuing within each
//! function's concurrency and rate limits (no head-of-line blocking between functions,
//! even in one partition), publishes outcome and status events, and commits only offsets
//! whose work is done.
//!
//! Shape: [`setup`] builds the functions, clients and threads. A consumer thread
//! ([`consumer`]) polls and forwards records; one async loop, the [`engine`], owns the
//! [`dispatch::Dispatcher`], decides with [`intake`] what each record is, runs
//! [`attempt`]s as tasks and builds the resulting [`records`]; a publisher thread
//! ([`publisher`]) makes them durable, and the [`offsets::OffsetTracker`] decides what may
//! be committed. Threads are [`worker::Worker`]s: stopped and joined through a handle.

mod attempt;
pub mod consumer;
pub mod control;
mod deliveries;
pub mod dispatch;
mod engine;
mod fn_metrics;
mod heal;
mod held;
mod intake;
pub mod offsets;
pub mod out_record;
pub mod publisher;
mod records;
mod retry_queue;
mod setup;
pub mod spill;
mod stall;
mod task_table;
mod txn_calls;
pub mod waiting;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;
use tokio_util::sync::CancellationToken;
use tracing::debug;

pub use attempt::retry_delay;

use crate::codec::{Attempt, FailureReason, OutcomeStatus, OutcomeView, Source, SourceView};
use crate::config::{Config, FunctionConfig};
use crate::executor::{Executor, ExecutorBuildError, Handlers};
use crate::kafka::KafkaOpError;
use crate::types::TpMap;
use consumer::Record;
use dispatch::FnId;
use engine::Published;
use offsets::TopicPartition;
use out_record::OutRecord;
use publisher::Unit;
use records::{Target, TaskRef};

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

impl Scheduler {
    /// A scheduler for a validated configuration, with handlers for `inprocess` functions.
    pub fn new(config: Config, handlers: Handlers) -> Self {
        Self {
            config: Arc::new(config),
            handlers,
        }
    }

    /// Runs until `shutdown` is cancelled, then stops fetching and starting tasks, lets
    /// running attempts finish within `scheduler.shutdown_grace`, commits what is done
    /// and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<RunSummary, SchedulerError> {
        let (engine, inputs, workers) =
            setup::start(self.config, &self.handlers, &shutdown).await?;
        engine.run(shutdown, inputs, workers).await
    }
}

/// A configured function, ready to run.
struct FunctionRt {
    id: FnId,
    name: String,
    tenant: String,
    cfg: FunctionConfig,
    executor: Executor,
    on_success: Option<Target>,
    on_failure: Target,
    max_payload: usize,
    /// The tenant's shared queue, when the function is on it (tasks read there may spill).
    shared_queue: Option<String>,
    /// Metric labels (tenant, function).
    labels: (String, String),
    /// Its per-task metrics.
    metrics: fn_metrics::FnMetrics,
}

/// The configured functions, by tenant and name (looked up without allocating). Built
/// once from the configuration and never grown by input, so its hash need not resist
/// chosen keys.
struct Functions(TpMap<String, TpMap<String, Arc<FunctionRt>>>);

impl Functions {
    fn get(&self, tenant: &str, function: &str) -> Option<&Arc<FunctionRt>> {
        self.0.get(tenant)?.get(function)
    }

    fn iter(&self) -> impl Iterator<Item = &Arc<FunctionRt>> {
        self.0.values().flat_map(TpMap::values)
    }
}

/// What every part of a run reads.
struct Ctx {
    config: Arc<Config>,
    scheduler_id: String,
    /// To the publisher: records that must become durable.
    outbox: std::sync::mpsc::Sender<Unit<Published>>,
    functions: Functions,
    status_topic: Arc<str>,
    /// The scheduler consumer group (named on traces).
    group_id: String,
    /// Delay tiers and their topics, shortest first.
    delay_tiers: Vec<(Duration, String)>,
    /// Cancelled when the grace period is over: running work is abandoned.
    hard_stop: CancellationToken,
}

impl Ctx {
    fn is_delay_topic(&self, topic: &str) -> bool {
        self.delay_tiers.iter().any(|(_, t)| t == topic)
    }

    /// Publishes records no offset depends on (status changes, logs) in the next batch.
    fn send_nowait(&self, records: Vec<OutRecord>) {
        if records.is_empty() {
            return;
        }
        let unit = Unit {
            records,
            done: None,
            back: None,
        };
        if self.outbox.send(unit).is_err() {
            debug!("records dropped: the publisher is gone");
        }
    }
}

/// Memory a held task costs besides its payload and key (measured: 440-490 bytes per
/// buffered task, see BENCHMARKS.md), so the byte limits bound real memory.
const TASK_OVERHEAD_BYTES: usize = 480;

/// A task on its way through the dispatcher. Only what its outcome cannot take from
/// elsewhere is held (tenant and function are its function's, payload and headers are
/// shared, its source is its record's): the outcome is built when it ends
/// ([`Job::outcome`]).
struct Job {
    record: Record,
    /// The assignment epoch of its partition when it was read.
    epoch: u64,
    f: Arc<FunctionRt>,
    /// The task's id.
    task_id: Box<str>,
    /// Submission time, ms.
    submitted_at: i64,
    /// Where the task was read first, when that is not its record (a task back from a
    /// delay topic).
    origin: Option<Box<Source>>,
    /// Its attempts so far.
    attempts: Vec<Attempt>,
    payload: Arc<Vec<u8>>,
    headers: Arc<BTreeMap<String, String>>,
    /// Its OpenTelemetry `process` span; ends with it.
    span: ProcessSpan,
}

/// How a task ended: the part of its outcome only the end decides.
struct End {
    status: OutcomeStatus,
    reason: Option<FailureReason>,
    error: Option<String>,
    result: Option<Vec<u8>>,
}

impl End {
    /// Ended with `status` and, for other than success, why.
    fn new(status: OutcomeStatus, error: impl Into<Option<String>>) -> Self {
        Self {
            status,
            reason: None,
            error: error.into(),
            result: None,
        }
    }
}

impl Job {
    /// Where the task was read from first.
    fn source(&self) -> SourceView<'_> {
        match &self.origin {
            Some(origin) => origin.view(),
            None => self.record.source(),
        }
    }

    /// Whether it was read from a delay topic (only such a task has an origin of its own:
    /// `intake::prepare_delayed`).
    fn is_back_from_delay(&self) -> bool {
        self.origin.is_some()
    }

    /// The trace context its events carry: its `process` span's with traces on, else the
    /// submitter's (for a task back from a delay topic: the delayed copy's, the same).
    fn traceparent(&self) -> Option<&str> {
        self.span.context().or(self.record.traceparent.as_deref())
    }

    /// The task, for its status events and logs.
    fn task(&self) -> TaskRef<'_> {
        TaskRef {
            task_id: &self.task_id,
            tenant: &self.f.tenant,
            function: &self.f.name,
            submitted_at: self.submitted_at,
            source: self.source(),
            task_headers: &self.headers,
        }
    }

    /// Its outcome, ended by `end` at `finished_at`, decided by `scheduler_id`: borrowed,
    /// nothing of the task copied.
    fn outcome<'a>(
        &'a self,
        end: &'a End,
        finished_at: i64,
        scheduler_id: &'a str,
    ) -> OutcomeView<'a> {
        OutcomeView {
            task_id: &self.task_id,
            tenant: &self.f.tenant,
            function: &self.f.name,
            status: end.status,
            reason: end.reason,
            error: end.error.as_deref(),
            result: end.result.as_deref(),
            payload: &self.payload,
            task_headers: &self.headers,
            attempts: &self.attempts,
            submitted_at: self.submitted_at,
            finished_at,
            source: self.source(),
            traceparent: self.traceparent(),
            scheduler_id,
        }
    }
}

/// What the dispatcher reads of a held task.
impl dispatch::Held for Job {
    fn function(&self) -> FnId {
        self.f.id
    }

    fn tp(&self) -> &TopicPartition {
        &self.record.tp
    }

    fn bytes(&self) -> usize {
        self.payload.len() + self.record.key.as_ref().map_or(0, |k| k.len()) + TASK_OVERHEAD_BYTES
    }

    fn key(&self) -> Option<&str> {
        self.record.ordering_key()
    }

    /// Read from a queue topic, not back from a delay topic.
    fn queued(&self) -> Option<waiting::Queued> {
        (!self.is_back_from_delay()).then_some(waiting::Queued {
            offset: self.record.offset,
            since_ms: self.submitted_at,
        })
    }
}

/// A task's `process` span and its trace context: boxed while traces are on, nothing
/// while they are off (inline, they would take 56 bytes of every held task).
struct ProcessSpan(Option<Box<(tracing::Span, Option<Box<str>>)>>);

impl ProcessSpan {
    /// `span`, whose trace context is `context`.
    fn new(span: tracing::Span, context: Option<String>) -> Self {
        Self((!span.is_disabled()).then(|| Box::new((span, context.map(String::into_boxed_str)))))
    }

    /// The span; a disabled one when traces are off.
    fn get(&self) -> &tracing::Span {
        static NONE: std::sync::LazyLock<tracing::Span> =
            std::sync::LazyLock::new(tracing::Span::none);
        self.0.as_deref().map_or(&NONE, |(span, _)| span)
    }

    /// The span's trace context (a `traceparent` value), with traces on.
    fn context(&self) -> Option<&str> {
        self.0
            .as_deref()
            .and_then(|(_, context)| context.as_deref())
    }
}

/// A task's headers, shared: tasks without any share one empty map instead of an
/// allocation each.
fn shared_headers(headers: BTreeMap<String, String>) -> Arc<BTreeMap<String, String>> {
    static NONE: std::sync::LazyLock<Arc<BTreeMap<String, String>>> =
        std::sync::LazyLock::new(|| Arc::new(BTreeMap::new()));
    if headers.is_empty() {
        NONE.clone()
    } else {
        Arc::new(headers)
    }
}
