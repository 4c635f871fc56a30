//! Submitting tasks: what `tidewater submit` does, usable from Rust programs too.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::codec::{self, CodecError, Encoding, Task};
use crate::config::Config;
use crate::kafka::{self, KafkaOpError};
use crate::names::headers as h;
use crate::otel;

/// Why a task was not submitted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The tenant is not configured.
    #[error("tenant `{0}` is not in the configuration")]
    UnknownTenant(String),
    /// The function is not configured for the tenant.
    #[error(
        "tenant `{tenant}` has no function `{function}` (pass --allow-unknown to submit anyway; it will fail with reason unknown_function)"
    )]
    UnknownFunction {
        /// Tenant.
        tenant: String,
        /// Function.
        function: String,
    },
    /// The task could not be encoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Kafka refused or did not acknowledge the record.
    #[error(transparent)]
    Kafka(#[from] KafkaOpError),
}

/// Produces tasks to their queue topics.
pub struct Submitter {
    producer: FutureProducer,
    config: Arc<Config>,
    encoding: Encoding,
    allow_unknown: bool,
}

/// Totals of a bulk submission.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubmitReport {
    /// Acknowledged by Kafka.
    pub submitted: u64,
    /// Refused or not acknowledged.
    pub failed: u64,
}

/// Records awaiting acknowledgement at once during a bulk submission.
const MAX_OUTSTANDING: usize = 10_000;

impl Submitter {
    /// A submitter writing `encoding` records.
    pub fn new(config: Arc<Config>, encoding: Encoding) -> Result<Self, KafkaOpError> {
        Ok(Self {
            producer: kafka::producer(&config)?,
            config,
            encoding,
            allow_unknown: false,
        })
    }

    /// Allows functions missing from the configuration (useful to test dead letters).
    pub fn allow_unknown(mut self, yes: bool) -> Self {
        self.allow_unknown = yes;
        self
    }

    /// The queue topic of a tenant's function.
    pub fn topic_for(&self, tenant: &str, function: &str) -> Result<String, SubmitError> {
        let t = self
            .config
            .tenants
            .get(tenant)
            .ok_or_else(|| SubmitError::UnknownTenant(tenant.to_string()))?;
        if !self.allow_unknown && !t.functions.contains_key(function) {
            return Err(SubmitError::UnknownFunction {
                tenant: tenant.to_string(),
                function: function.to_string(),
            });
        }
        Ok(self.config.queue_topic(tenant, function))
    }

    fn encode(&self, tenant: &str, task: &Task) -> Result<(String, Vec<u8>), SubmitError> {
        let topic = self.topic_for(tenant, &task.function)?;
        Ok((topic, codec::encode_task_as(task, self.encoding)?))
    }

    /// The record's headers: its content type and, with traces on, the context of a
    /// producer `send` span (a child of the current span, such as an API request's), which
    /// the scheduler's `process` span continues.
    fn headers(&self, topic: &str, task: &Task) -> (OwnedHeaders, tracing::Span) {
        let span = otel::send_span(topic, &task.id);
        let mut pairs = vec![(h::CONTENT_TYPE, self.encoding.content_type().to_string())];
        if let Some((traceparent, tracestate)) = otel::context_headers(&span) {
            pairs.push((h::TRACEPARENT, traceparent));
            pairs.extend(tracestate.map(|ts| (h::TRACESTATE, ts)));
        }
        let headers = kafka::headers(pairs.iter().map(|(k, v)| (*k, v.as_str())));
        (headers, span)
    }

    /// Submits one task and waits for Kafka's acknowledgement; returns (partition, offset).
    pub async fn submit(&self, tenant: &str, task: &Task) -> Result<(i32, i64), SubmitError> {
        let (topic, value) = self.encode(tenant, task)?;
        let (headers, _span) = self.headers(&topic, task);
        let record = FutureRecord::to(&topic)
            .key(&task.id)
            .payload(&value)
            .headers(headers);
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|d| (d.partition, d.offset))
            .map_err(|(source, _)| {
                SubmitError::Kafka(KafkaOpError::Produce {
                    topic: topic.clone(),
                    source,
                })
            })
    }

    /// Submits many tasks with bounded memory, calling `progress` as acknowledgements
    /// arrive. Fails fast on a task that cannot be encoded or routed; Kafka refusals are
    /// counted in the report.
    pub async fn submit_many(
        &self,
        tenant: &str,
        tasks: impl IntoIterator<Item = Task>,
        mut progress: impl FnMut(SubmitReport),
    ) -> Result<SubmitReport, SubmitError> {
        let mut report = SubmitReport::default();
        let mut outstanding = FuturesUnordered::new();
        let mut first_error: Option<String> = None;
        let mut tally = |r: Result<Result<_, _>, _>, report: &mut SubmitReport| match r {
            Ok(Ok(_)) => report.submitted += 1,
            Ok(Err((e, _))) => {
                report.failed += 1;
                first_error.get_or_insert_with(|| format!("{e}"));
            }
            Err(_) => report.failed += 1,
        };
        for task in tasks {
            let (topic, value) = self.encode(tenant, &task)?;
            let (headers, _span) = self.headers(&topic, &task);
            let mut record = FutureRecord::to(&topic)
                .key(&task.id)
                .payload(&value)
                .headers(headers);
            loop {
                match self.producer.send_result(record) {
                    Ok(fut) => {
                        outstanding.push(fut);
                        break;
                    }
                    // Local queue full: wait for acknowledgements, then try again.
                    Err((_, r)) => {
                        record = r;
                        match outstanding.next().await {
                            Some(res) => {
                                tally(res, &mut report);
                                progress(report);
                            }
                            None => tokio::time::sleep(Duration::from_millis(10)).await,
                        }
                    }
                }
            }
            while outstanding.len() >= MAX_OUTSTANDING {
                if let Some(res) = outstanding.next().await {
                    tally(res, &mut report);
                    progress(report);
                }
            }
        }
        while let Some(res) = outstanding.next().await {
            tally(res, &mut report);
            if (report.submitted + report.failed) % 1000 == 0 {
                progress(report);
            }
        }
        progress(report);
        if let Some(e) = first_error {
            tracing::warn!(failed = report.failed, first_error = %e, "some tasks were not acknowledged");
        }
        Ok(report)
    }

    /// Waits until every queued record is delivered.
    pub fn flush(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
    }
}
