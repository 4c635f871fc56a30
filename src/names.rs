//! Every Kafka topic name, header name and metric name Tidewater uses, defined once.
//!
//! Code elsewhere never spells a topic, header or metric name as a literal: it calls into
//! this module, so a rename is one edit and `/metrics` documents itself through
//! [`metrics::describe`].

/// Topic names. `prefix` is the configured topic prefix (default `tw`).
pub mod topics {
    /// Separator between the parts of a topic name.
    pub const SEP: char = '.';

    /// The shared queue of a tenant: `<prefix>.q.<tenant>`.
    pub fn tenant_queue(prefix: &str, tenant: &str) -> String {
        format!("{prefix}.q.{tenant}")
    }

    /// The exclusive queue of one function: `<prefix>.q.<tenant>.<function>`.
    pub fn function_queue(prefix: &str, tenant: &str, function: &str) -> String {
        format!("{prefix}.q.{tenant}.{function}")
    }

    /// A delay topic: tasks waiting `tier` (a duration like `10s`) for a retry or their
    /// `not_before` time: `<prefix>.delay.<tier>`.
    pub fn delay(prefix: &str, tier: &str) -> String {
        format!("{prefix}.delay.{tier}")
    }

    /// The compacted topic with the latest lifecycle event of every task.
    pub fn status(prefix: &str) -> String {
        format!("{prefix}.status")
    }

    /// Captured output of task executions: `<prefix>.logs`, keyed by task id.
    pub fn logs(prefix: &str) -> String {
        format!("{prefix}.logs")
    }

    /// Commands to all schedulers (stop requests): `<prefix>.control`, keyed by task id.
    pub fn control(prefix: &str) -> String {
        format!("{prefix}.control")
    }

    /// The controller's decision log and election topic: `<prefix>.controller`, one
    /// partition; the member of [`controller_group`] that owns it leads.
    pub fn controller(prefix: &str) -> String {
        format!("{prefix}.controller")
    }

    /// The consumer group of the controllers: `<prefix>.controllers`.
    pub fn controller_group(prefix: &str) -> String {
        format!("{prefix}.controllers")
    }

    /// The group id of the schedulers' stop-request readers (never joined or committed):
    /// `<prefix>.control-readers`.
    pub fn control_readers_group(prefix: &str) -> String {
        format!("{prefix}.control-readers")
    }

    /// The group id of the record readers of `tidewater serve`, which read task records
    /// back by position (never joined or committed): `<prefix>.record-readers`.
    pub fn record_readers_group(prefix: &str) -> String {
        format!("{prefix}.record-readers")
    }

    /// What every indexer group id starts with: `<prefix>.indexer.`.
    pub fn indexer_group_prefix(prefix: &str) -> String {
        format!("{prefix}.indexer.")
    }

    /// The group id of one indexer: `<prefix>.indexer.<id>`.
    pub fn indexer_group(prefix: &str, id: &str) -> String {
        format!("{}{id}", indexer_group_prefix(prefix))
    }

    /// The transactional id of the controller leader's producer (fences a deposed leader).
    pub fn controller_transactional_id(prefix: &str) -> String {
        format!("{prefix}.controller-leader")
    }

    /// The default failure destination of a tenant: `<prefix>.dlq.<tenant>`.
    pub fn dead_letter(prefix: &str, tenant: &str) -> String {
        format!("{prefix}.dlq.{tenant}")
    }

    /// What a queue topic name says about its owner.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct QueueTopic {
        /// The tenant that owns the queue.
        pub tenant: String,
        /// `Some` for an exclusive queue of one function.
        pub function: Option<String>,
    }

    /// Parses `<prefix>.q.<tenant>[.<function>]`; `None` for any other topic.
    pub fn parse_queue(prefix: &str, topic: &str) -> Option<QueueTopic> {
        let rest = topic.strip_prefix(prefix)?.strip_prefix(".q.")?;
        let mut parts = rest.split(SEP);
        let tenant = parts.next().filter(|t| !t.is_empty())?.to_string();
        let function = match parts.next() {
            Some(f) if !f.is_empty() => Some(f.to_string()),
            Some(_) => return None,
            None => None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(QueueTopic { tenant, function })
    }
}

/// Kafka record header names.
pub mod headers {
    /// Encoding of the record value: [`CONTENT_TYPE_JSON`] or [`CONTENT_TYPE_AVRO`].
    pub const CONTENT_TYPE: &str = "content-type";
    /// Value of [`CONTENT_TYPE`] for JSON tasks.
    pub const CONTENT_TYPE_JSON: &str = "application/json";
    /// Value of [`CONTENT_TYPE`] for Avro records (binary, optionally single-object encoded).
    pub const CONTENT_TYPE_AVRO: &str = "application/avro";
    /// W3C trace context of the task, passed on to executors and outcome events.
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C trace state that goes with [`TRACEPARENT`].
    pub const TRACESTATE: &str = "tracestate";
    /// Task id, on outcome and status events and on executor requests.
    pub const TASK_ID: &str = "tw-task-id";
    /// Tenant, on outcome and status events.
    pub const TENANT: &str = "tw-tenant";
    /// Function name, on outcome and status events.
    pub const FUNCTION: &str = "tw-function";
    /// Attempt number (1-based), on executor requests.
    pub const ATTEMPT: &str = "tw-attempt";
    /// Kind of Tidewater record: [`EVENT_OUTCOME`] or [`EVENT_STATUS`].
    pub const EVENT: &str = "tw-event";
    /// Value of [`EVENT`] on outcome events.
    pub const EVENT_OUTCOME: &str = "outcome";
    /// Value of [`EVENT`] on status events.
    pub const EVENT_STATUS: &str = "status";
    /// Value of [`EVENT`] on tasks in delay topics.
    pub const EVENT_DELAYED: &str = "delayed";
    /// On a compensation task: the id of the task whose outcome it handles.
    pub const COMPENSATES: &str = "tw-compensates";
    /// Value of [`EVENT`] on captured-output records (`<prefix>.logs`).
    pub const EVENT_LOG: &str = "log";
    /// Value of [`EVENT`] on stop requests (`<prefix>.control`).
    pub const EVENT_STOP: &str = "stop";
    /// Value of [`EVENT`] on the empty records of a transaction the publisher aborts on
    /// purpose after a failed one, to end what that one left open (never seen by
    /// `read_committed` readers; RELIABILITY.md).
    pub const EVENT_SWEEP: &str = "sweep";
    /// `true` marks the record key as an ordering key: tasks with the same key (in one
    /// partition) run one at a time, in offset order.
    pub const ORDERED: &str = "tw-ordered";
    /// On a task forwarded to its function's overflow queue: where it was read,
    /// `<topic>/<partition>/<offset>`.
    pub const SPILLED_FROM: &str = "tw-spilled-from";
    /// Idempotency key sent to HTTP executors (the task id).
    pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
    /// The redrive that re-submitted a task: a task header of the redriven task (carried
    /// to its outcome event), and a record header of the status, log and outcome records
    /// of that run, so the indexer tells the run apart from earlier ones.
    pub const REDRIVE_ID: &str = "tw-redrive-id";
    /// Task header of a redriven task: who asked for the redrive (`admin` or a tenant).
    pub const REDRIVE_BY: &str = "tw-redrive-by";
    /// Task header of a redriven task: when the redrive was asked for (RFC 3339).
    pub const REDRIVE_AT: &str = "tw-redrive-at";
    /// Task header of a redriven task: the queue record it was re-submitted from
    /// (`<topic>[<partition>]@<offset>`).
    pub const REDRIVE_FROM: &str = "tw-redrive-from";
    /// Every task header a redrive sets: replaced, never accumulated, on a second redrive.
    pub const REDRIVE_ALL: &[&str] = &[REDRIVE_ID, REDRIVE_BY, REDRIVE_AT, REDRIVE_FROM];
}

/// Environment variables set for `command` executors.
pub mod env {
    /// The task id, also the idempotency key.
    pub const TASK_ID: &str = "TW_TASK_ID";
    /// The attempt number, 1-based.
    pub const ATTEMPT: &str = "TW_ATTEMPT";
    /// The tenant.
    pub const TENANT: &str = "TW_TENANT";
    /// The function.
    pub const FUNCTION: &str = "TW_FUNCTION";
    /// The W3C trace context, when the task carries one.
    pub const TRACEPARENT: &str = "TRACEPARENT";
    /// Set by the local supervisor on the scheduler processes it starts: its own pid.
    /// Such a process asks the kernel to stop it when the supervisor dies.
    pub const SUPERVISOR_PID: &str = "TW_SUPERVISOR_PID";
}

/// Prometheus metric names and labels.
pub mod metrics {
    /// Counter: tasks read from queue topics (submitted by producers), by tenant and function.
    pub const TASKS_SUBMITTED: &str = "tidewater_tasks_submitted_total";
    /// Counter: tasks that reached a terminal outcome, by tenant, function and outcome.
    pub const TASKS_COMPLETED: &str = "tidewater_tasks_completed_total";
    /// Counter: tasks that ended failed, by tenant, function and reason.
    pub const TASKS_FAILED: &str = "tidewater_tasks_failed_total";
    /// Gauge: tasks executing now, by tenant and function.
    pub const TASKS_RUNNING: &str = "tidewater_tasks_running";
    /// Counter: executor attempts, by tenant, function and result.
    pub const ATTEMPTS: &str = "tidewater_task_attempts_total";
    /// Histogram: seconds one execution attempt took, by tenant and function.
    pub const EXECUTION_SECONDS: &str = "tidewater_task_execution_seconds";
    /// Histogram: seconds from submission (the task's `submitted_at`, else the record
    /// timestamp) to the first attempt's start.
    pub const QUEUE_WAIT_SECONDS: &str = "tidewater_task_queue_wait_seconds";
    /// Counter: offset commits of the scheduler group, by result.
    pub const OFFSET_COMMITS: &str = "tidewater_offset_commits_total";
    /// Counter: consumer-group rebalances seen by this scheduler, by kind (assign/revoke).
    pub const REBALANCES: &str = "tidewater_rebalances_total";
    /// Counter: records the indexer of `tidewater serve` applied to its store, by kind
    /// (`task`, `status`, `log`, `undecodable`).
    pub const INDEXER_RECORDS: &str = "tidewater_indexer_records_total";
    /// Histogram: seconds one indexer batch took to write (one SQLite transaction).
    pub const INDEXER_BATCH_SECONDS: &str = "tidewater_indexer_batch_seconds";
    /// Gauge: tasks waiting in this scheduler's ready queues, by tenant and function.
    pub const TASKS_QUEUED: &str = "tidewater_tasks_queued";
    /// Gauge: tasks held in memory by this scheduler (queued, running, waiting to retry).
    pub const BUFFERED_TASKS: &str = "tidewater_buffered_tasks";
    /// Gauge: payload bytes held in memory by this scheduler.
    pub const BUFFERED_BYTES: &str = "tidewater_buffered_bytes";
    /// Gauge: partitions whose fetching is paused because their buffer is full.
    pub const PARTITIONS_PAUSED: &str = "tidewater_partitions_paused";
    /// Counter: retries scheduled, by tenant and function.
    pub const RETRIES: &str = "tidewater_task_retries_total";
    /// Counter: publisher batches, by result (`committed`, `retry`, `fatal`).
    pub const TRANSACTIONS: &str = "tidewater_transactions_total";
    /// Counter: re-delivered records skipped because their outcome was already committed.
    pub const SKIPPED: &str = "tidewater_tasks_skipped_total";
    /// Counter: records of Tidewater's own topics that could not be decoded and were
    /// skipped (a task record that cannot be decoded fails to the dead-letter topic
    /// instead), by kind (`control`, `delayed`).
    pub const RECORDS_SKIPPED: &str = "tidewater_records_skipped_total";
    /// Gauge: tasks this scheduler holds until their time (a retry's backoff, or
    /// `not_before` read back from a delay topic).
    pub const TASKS_DELAYED: &str = "tidewater_tasks_delayed";
    /// Counter: tasks forwarded from a shared queue to their function's overflow queue,
    /// by tenant and function.
    pub const TASKS_SPILLED: &str = "tidewater_tasks_spilled_total";
    /// Gauge: 1 while a function spills in this scheduler, else 0; by tenant and function.
    pub const FUNCTION_SPILLING: &str = "tidewater_function_spilling";
    /// Gauge: 1 when a component of this process makes progress, 0 when it cannot (for
    /// example, no durable batch while the cluster is away), by component.
    pub const READY: &str = "tidewater_ready";
    /// Counter: transactional producers rebuilt after a fatal error or fencing.
    pub const PRODUCER_RESTARTS: &str = "tidewater_producer_restarts_total";
    /// Counter: finished tasks whose outcome was not published because their partition
    /// had gone to another scheduler (the new owner runs them).
    pub const OUTCOMES_FENCED: &str = "tidewater_outcomes_fenced_total";
    /// Gauge: partitions of a topic the configuration implies held by a transaction left
    /// open longer than `scheduler.held_partition_after`, by topic.
    pub const PARTITIONS_HELD: &str = "tidewater_partitions_held";
    /// Gauge: lag of the scheduler group per queue partition (high watermark minus
    /// committed offset), by topic and partition.
    pub const QUEUE_LAG: &str = "tidewater_queue_lag";
    /// Gauge: lag of the scheduler group per queue topic (sum over its partitions).
    pub const QUEUE_LAG_TOTAL: &str = "tidewater_queue_lag_total";
    /// Gauge: partitions of each queue topic, as last seen by the controller.
    pub const QUEUE_PARTITIONS: &str = "tidewater_queue_partitions";
    /// Gauge: scheduler replicas the controller recommends.
    pub const DESIRED_REPLICAS: &str = "tidewater_desired_replicas";
    /// Gauge: scheduler processes the local supervisor runs now.
    pub const REPLICAS: &str = "tidewater_replicas";
    /// Counter: partition expansions decided by the controller leader, by topic and result.
    pub const PARTITION_EXPANSIONS: &str = "tidewater_partition_expansions_total";
    /// Gauge: 1 while this process is the controller leader, else 0.
    pub const CONTROLLER_LEADER: &str = "tidewater_controller_leader";
    /// Gauge: the fencing term of the current leadership of this process (0 when not leading).
    pub const CONTROLLER_TERM: &str = "tidewater_controller_term";
    /// Counter: scheduler processes the supervisor restarted after a crash.
    pub const REPLICA_RESTARTS: &str = "tidewater_replica_restarts_total";
    /// Counter: API requests whose handler panicked (answered 500, connection kept).
    pub const API_PANICS: &str = "tidewater_api_panics_total";

    /// Gauge: the concurrency limit of each function in this scheduler (most attempts it
    /// runs at once), by tenant and function.
    pub const CONCURRENCY_LIMIT: &str = "tidewater_function_concurrency_limit";

    /// Counter: failed, expired and stopped tasks whose outcome went to a failure
    /// destination, by tenant, function and destination (the topic, or `function:<name>`
    /// for a compensation function).
    pub const DEAD_LETTERED: &str = "tidewater_tasks_dead_lettered_total";
    /// Gauge: per assigned queue partition, seconds since the submission of its oldest task
    /// not started, as far as this scheduler knows, by topic and partition (the rules are
    /// in `scheduler::waiting`).
    pub const OLDEST_TASK_AGE: &str = "tidewater_queue_oldest_task_age_seconds";
    /// Gauge: round-trip time to a broker as a Kafka client of this process sees it
    /// (librdkafka statistics), by client, broker and stat (`avg`, `p99`).
    pub const KAFKA_BROKER_RTT: &str = "tidewater_kafka_broker_rtt_seconds";
    /// Gauge: messages waiting in a producer's queue (librdkafka `msg_cnt`), by client.
    pub const KAFKA_PRODUCER_QUEUE_MESSAGES: &str = "tidewater_kafka_producer_queue_messages";
    /// Gauge: bytes waiting in a producer's queue (librdkafka `msg_size`), by client.
    pub const KAFKA_PRODUCER_QUEUE_BYTES: &str = "tidewater_kafka_producer_queue_bytes";
    /// Gauge: records of a partition past the last one librdkafka handed to this process,
    /// by client, topic and partition.
    pub const KAFKA_CONSUMER_FETCH_LAG: &str = "tidewater_kafka_consumer_fetch_lag";

    /// Every metric above: the README's metrics table must list exactly these (tested).
    pub const ALL: &[&str] = &[
        TASKS_SUBMITTED,
        TASKS_COMPLETED,
        TASKS_FAILED,
        TASKS_RUNNING,
        ATTEMPTS,
        EXECUTION_SECONDS,
        QUEUE_WAIT_SECONDS,
        OFFSET_COMMITS,
        REBALANCES,
        INDEXER_RECORDS,
        INDEXER_BATCH_SECONDS,
        TASKS_QUEUED,
        BUFFERED_TASKS,
        BUFFERED_BYTES,
        PARTITIONS_PAUSED,
        RETRIES,
        TRANSACTIONS,
        SKIPPED,
        TASKS_DELAYED,
        TASKS_SPILLED,
        FUNCTION_SPILLING,
        READY,
        PRODUCER_RESTARTS,
        OUTCOMES_FENCED,
        PARTITIONS_HELD,
        QUEUE_LAG,
        QUEUE_LAG_TOTAL,
        QUEUE_PARTITIONS,
        DESIRED_REPLICAS,
        REPLICAS,
        PARTITION_EXPANSIONS,
        CONTROLLER_LEADER,
        CONTROLLER_TERM,
        REPLICA_RESTARTS,
        CONCURRENCY_LIMIT,
        API_PANICS,
        RECORDS_SKIPPED,
        DEAD_LETTERED,
        OLDEST_TASK_AGE,
        KAFKA_BROKER_RTT,
        KAFKA_PRODUCER_QUEUE_MESSAGES,
        KAFKA_PRODUCER_QUEUE_BYTES,
        KAFKA_CONSUMER_FETCH_LAG,
    ];

    /// Label: tenant name.
    pub const L_TENANT: &str = "tenant";
    /// Label: function name (`_unknown` for names not in the config).
    pub const L_FUNCTION: &str = "function";
    /// Label: terminal outcome (`succeeded`, `failed`).
    pub const L_OUTCOME: &str = "outcome";
    /// Label: failure reason, a small fixed set (see `FailureReason`).
    pub const L_REASON: &str = "reason";
    /// Label: result of an operation (`ok`, `error`, `success`, `failure`).
    pub const L_RESULT: &str = "result";
    /// Label: rebalance kind.
    pub const L_KIND: &str = "kind";
    /// Label: a part of the process (`publisher`, `consumer`, `indexer`).
    pub const L_COMPONENT: &str = "component";
    /// Label: topic name (topics of the configuration: a bounded set).
    pub const L_TOPIC: &str = "topic";
    /// Label: partition number.
    pub const L_PARTITION: &str = "partition";
    /// Label: where an outcome went (a topic name from the configuration, or
    /// `function:<name>`).
    pub const L_DESTINATION: &str = "destination";
    /// Label: which Kafka client of the process (`consumer`, `producer`, `indexer`).
    pub const L_CLIENT: &str = "client";
    /// Label: a broker, as `host:port` (the brokers of the cluster: a bounded set).
    pub const L_BROKER: &str = "broker";
    /// Label: which statistic of a window (`avg`, `p99`).
    pub const L_STAT: &str = "stat";

    /// Label value used for a function or tenant name that is not configured, so input
    /// cannot create unbounded label sets.
    pub const UNKNOWN: &str = "_unknown";

    /// Bucket bounds (seconds) for the duration histograms.
    pub const DURATION_BUCKETS: &[f64] = &[
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        300.0, 900.0,
    ];

    /// Registers the help text of every metric with the installed recorder.
    pub fn describe() {
        use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
        describe_counter!(
            TASKS_SUBMITTED,
            "Tasks read from queue topics by this scheduler."
        );
        describe_counter!(
            TASKS_COMPLETED,
            "Tasks that reached a terminal outcome (outcome=succeeded|failed)."
        );
        describe_counter!(
            TASKS_FAILED,
            "Tasks that ended failed, by reason (executor, timeout, non_retryable, malformed, unknown_function, payload_too_large, tenant_mismatch)."
        );
        describe_gauge!(TASKS_RUNNING, "Tasks executing now.");
        describe_gauge!(
            CONCURRENCY_LIMIT,
            "Concurrency limit of the function in this scheduler: most attempts at once."
        );
        describe_counter!(ATTEMPTS, "Executor attempts (result=success|failure).");
        describe_histogram!(
            EXECUTION_SECONDS,
            Unit::Seconds,
            "Duration of one execution attempt."
        );
        describe_histogram!(
            QUEUE_WAIT_SECONDS,
            Unit::Seconds,
            "Time from a task's submission to the start of its first attempt."
        );
        describe_counter!(
            RECORDS_SKIPPED,
            "Undecodable records of Tidewater's own control and delay topics, skipped (kind=control|delayed)."
        );
        describe_gauge!(
            TASKS_DELAYED,
            "Tasks held until their time: a retry's backoff, or not_before."
        );
        describe_gauge!(
            READY,
            "1 when the component (publisher, consumer, indexer) makes progress, 0 when it cannot."
        );
        describe_counter!(
            PRODUCER_RESTARTS,
            "Transactional producers rebuilt after a fatal error or fencing."
        );
        describe_counter!(
            OUTCOMES_FENCED,
            "Outcomes not published because their partition went to another scheduler."
        );
        describe_counter!(
            OFFSET_COMMITS,
            "Offset commits of the scheduler group (result=ok|error)."
        );
        describe_counter!(
            REBALANCES,
            "Consumer-group rebalances (kind=assign|revoke)."
        );
        describe_counter!(
            INDEXER_RECORDS,
            "Records applied to the task index (kind=task|status|log|undecodable)."
        );
        describe_histogram!(
            INDEXER_BATCH_SECONDS,
            Unit::Seconds,
            "Duration of one indexer batch write."
        );
        describe_gauge!(
            TASKS_QUEUED,
            "Tasks waiting in this scheduler's ready queues."
        );
        describe_gauge!(
            BUFFERED_TASKS,
            "Tasks held in memory (queued, running, waiting to retry)."
        );
        describe_gauge!(BUFFERED_BYTES, Unit::Bytes, "Payload bytes held in memory.");
        describe_counter!(
            TASKS_SPILLED,
            "Tasks forwarded from a shared queue to their function's overflow queue."
        );
        describe_gauge!(
            FUNCTION_SPILLING,
            "1 while the function spills to its overflow queue in this scheduler."
        );
        describe_gauge!(
            PARTITIONS_HELD,
            "Partitions whose read_committed readers a transaction left open holds back."
        );
        describe_gauge!(
            PARTITIONS_PAUSED,
            "Partitions whose fetching is paused because a buffer is full."
        );
        describe_counter!(RETRIES, "Retries scheduled after a failed attempt.");
        describe_counter!(
            TRANSACTIONS,
            "Publisher batches (one Kafka transaction each in exactly-once mode), by result."
        );
        describe_gauge!(
            QUEUE_LAG,
            "Scheduler group lag per queue partition: tasks not yet committed (transaction markers excluded)."
        );
        describe_gauge!(QUEUE_LAG_TOTAL, "Scheduler group lag per queue topic.");
        describe_gauge!(QUEUE_PARTITIONS, "Partitions of each queue topic.");
        describe_gauge!(
            DESIRED_REPLICAS,
            "Scheduler replicas recommended by the controller from the total lag."
        );
        describe_gauge!(REPLICAS, "Scheduler processes run by the local supervisor.");
        describe_counter!(
            PARTITION_EXPANSIONS,
            "Partition expansions decided by the controller leader (result=ok|error)."
        );
        describe_gauge!(
            CONTROLLER_LEADER,
            "1 while this process leads the controllers, else 0."
        );
        describe_gauge!(
            CONTROLLER_TERM,
            "Fencing term of this process's leadership (0 when not leading)."
        );
        describe_counter!(
            REPLICA_RESTARTS,
            "Scheduler processes restarted by the supervisor after they exited unexpectedly."
        );
        describe_counter!(
            SKIPPED,
            "Re-delivered records skipped because their outcome was already committed."
        );
        describe_counter!(
            API_PANICS,
            "API requests whose handler panicked; each was answered 500."
        );
        describe_counter!(
            DEAD_LETTERED,
            "Failed, expired and stopped tasks whose outcome went to a failure destination (a topic, or function:<name>)."
        );
        describe_gauge!(
            OLDEST_TASK_AGE,
            Unit::Seconds,
            "Per assigned queue partition: time since the submission of its oldest task not started (0 when none waits)."
        );
        describe_gauge!(
            KAFKA_BROKER_RTT,
            Unit::Seconds,
            "Round-trip time to each broker seen by a Kafka client (librdkafka statistics; stat=avg|p99)."
        );
        describe_gauge!(
            KAFKA_PRODUCER_QUEUE_MESSAGES,
            "Messages waiting in a producer's queue (librdkafka msg_cnt)."
        );
        describe_gauge!(
            KAFKA_PRODUCER_QUEUE_BYTES,
            Unit::Bytes,
            "Bytes waiting in a producer's queue (librdkafka msg_size)."
        );
        describe_gauge!(
            KAFKA_CONSUMER_FETCH_LAG,
            "Records of a partition past the last one librdkafka handed to this process (librdkafka statistics)."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::topics::*;

    #[test]
    fn queue_topics_round_trip() {
        assert_eq!(
            parse_queue("tw", &tenant_queue("tw", "acme")),
            Some(QueueTopic {
                tenant: "acme".into(),
                function: None
            })
        );
        assert_eq!(
            parse_queue("tw", &function_queue("tw", "acme", "resize")),
            Some(QueueTopic {
                tenant: "acme".into(),
                function: Some("resize".into())
            })
        );
        assert_eq!(parse_queue("tw", "tw.status"), None);
        assert_eq!(parse_queue("tw", "tw.q."), None);
        assert_eq!(parse_queue("tw", "tw.q.a.b.c"), None);
        assert_eq!(parse_queue("tw", "other.q.acme"), None);
    }
}

#[cfg(test)]
mod readme_tests {
    use std::collections::BTreeSet;

    /// The README's metrics table lists every metric the code defines, and nothing else.
    #[test]
    fn the_readme_metrics_table_lists_exactly_the_metrics() {
        let readme = include_str!("../README.md");
        let listed: BTreeSet<String> = readme
            .lines()
            .filter_map(|l| l.strip_prefix("| `tidewater_"))
            .filter_map(|rest| rest.split('`').next())
            .map(|name| format!("tidewater_{name}"))
            .collect();
        let defined: BTreeSet<String> = super::metrics::ALL
            .iter()
            .map(|m| (*m).to_string())
            .collect();
        let missing: Vec<_> = defined.difference(&listed).collect();
        let extra: Vec<_> = listed.difference(&defined).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "README metrics table: missing {missing:?}, not emitted {extra:?}"
        );
    }
}
