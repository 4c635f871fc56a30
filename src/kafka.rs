//! Kafka clients: configuration shared by every client, the producer, and topic creation.

use std::collections::BTreeMap;
use std::time::Duration;

use std::sync::Mutex;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::config::Config;
use crate::names::topics;

/// A Kafka operation that failed, with what it was about.
#[derive(Debug, thiserror::Error)]
pub enum KafkaOpError {
    /// A client could not be created (bad property, unreachable library state).
    #[error("cannot create Kafka {what}: {source}")]
    Client {
        /// Which client.
        what: &'static str,
        /// The error.
        source: KafkaError,
    },
    /// The cluster did not answer a metadata request.
    #[error("Kafka at {bootstrap} did not answer a metadata request within {timeout:?}: {source}")]
    Unreachable {
        /// Bootstrap servers.
        bootstrap: String,
        /// How long we waited.
        timeout: Duration,
        /// The error.
        source: KafkaError,
    },
    /// The cluster refused this client's credentials, or TLS with it failed: waiting does
    /// not help.
    #[error("Kafka at {bootstrap} refused the connection ({identity}): {reason}")]
    Refused {
        /// Bootstrap servers.
        bootstrap: String,
        /// Who the client tried to be, e.g. `SASL SCRAM-SHA-512 as user "alice"`.
        identity: String,
        /// What failed and what to check, from librdkafka's report.
        reason: String,
        /// librdkafka's error code (`Authentication`, `SSL`…).
        code: RDKafkaErrorCode,
    },
    /// Topics the configuration needs are missing.
    #[error("topics missing on the cluster, or not visible to this principal: {}; create them with `tidewater topics init`, or grant the ACLs `tidewater acl` lists", .0.join(", "))]
    MissingTopics(Vec<String>),
    /// Creating a topic failed.
    #[error("cannot create topic {topic}: {code}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// Kafka's error code.
        code: RDKafkaErrorCode,
    },
    /// Another admin request failed.
    #[error("Kafka admin request failed: {0}")]
    Admin(KafkaError),
    /// Producing a record failed.
    #[error("cannot produce to {topic}: {source}")]
    Produce {
        /// The topic.
        topic: String,
        /// The error.
        source: KafkaError,
    },
}

/// How long admin and metadata calls wait.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// The base configuration of every client: bootstrap servers, the `[kafka.security]`
/// settings (with the password) and the raw properties. Never print it.
pub fn client_config(config: &Config) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &config.kafka.bootstrap_servers);
    for (k, v) in config.kafka.security.client_properties() {
        cc.set(k, v);
    }
    for (k, v) in &config.kafka.properties {
        cc.set(k, v);
    }
    cc
}

/// The producer used for tasks, outcome and status events: idempotent, acks=all.
pub fn producer(config: &Config) -> Result<FutureProducer, KafkaOpError> {
    let mut cc = client_config(config);
    set_default(&mut cc, "enable.idempotence", "true");
    set_default(&mut cc, "acks", "all");
    set_default(&mut cc, "linger.ms", "5");
    set_default(&mut cc, "compression.type", "lz4");
    set_default(&mut cc, "message.timeout.ms", "60000");
    cc.create().map_err(|source| KafkaOpError::Client {
        what: "producer",
        source,
    })
}

/// Sets `key` unless the user's pass-through properties already did.
pub fn set_default(cc: &mut ClientConfig, key: &str, value: &str) {
    if cc.get(key).is_none() {
        cc.set(key, value);
    }
}

/// Builds record headers from name/value pairs.
pub fn headers<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> OwnedHeaders {
    pairs
        .into_iter()
        .fold(OwnedHeaders::new(), |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value),
            })
        })
}

/// Produces one record and waits for its delivery.
pub async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    value: &[u8],
    headers: OwnedHeaders,
) -> Result<(), KafkaOpError> {
    let record = FutureRecord::to(topic)
        .key(key)
        .payload(value)
        .headers(headers);
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map(|_| ())
        .map_err(|(source, _)| KafkaOpError::Produce {
            topic: topic.to_string(),
            source,
        })
}

/// A client context that keeps the first authentication or TLS failure librdkafka
/// reports, so that a metadata request that times out can say why.
#[derive(Default)]
pub struct RefusalRecorder {
    refused: Mutex<Option<(RDKafkaErrorCode, String)>>,
}

impl RefusalRecorder {
    /// The first refusal seen, if any.
    pub fn refusal(&self) -> Option<(RDKafkaErrorCode, String)> {
        self.refused.lock().ok().and_then(|r| r.clone())
    }

    fn record(&self, code: RDKafkaErrorCode, reason: &str) {
        if let Ok(mut r) = self.refused.lock() {
            r.get_or_insert_with(|| (code, reason.to_string()));
        }
    }
}

impl ClientContext for RefusalRecorder {
    // librdkafka reports a failed login or handshake in its log at once, from its own
    // threads; the error event waits for a poll.
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        let code = if log_message.contains("SASL authentication error")
            || log_message.contains("Authentication failed")
        {
            Some(RDKafkaErrorCode::Authentication)
        } else if log_message.contains("SSL handshake failed") {
            Some(RDKafkaErrorCode::SSL)
        } else {
            None
        };
        if let Some(code) = code {
            self.record(code, log_message);
        }
        DefaultClientContext.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(code) = error.rdkafka_error_code().filter(|c| is_refusal_code(*c)) {
            self.record(code, reason);
        }
        DefaultClientContext.error(error, reason);
    }
}

impl rdkafka::consumer::ConsumerContext for RefusalRecorder {}

/// Error codes that mean the cluster refused this client (credentials, TLS, ACLs on the
/// cluster itself).
fn is_refusal_code(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::Authentication
            | C::SaslAuthenticationFailed
            | C::SSL
            | C::ClusterAuthorizationFailed
            | C::UnsupportedSASLMechanism
            | C::IllegalSASLState
    )
}

/// The error of a refused connection: what failed, for whom, and what to check.
fn refused(config: &Config, code: RDKafkaErrorCode, detail: &str) -> KafkaOpError {
    let security = &config.kafka.security;
    let hint = match code {
        RDKafkaErrorCode::SSL => {
            "TLS failed; check kafka.security.ca_file (it must hold the CA that signed the brokers' certificates) and, for mutual TLS, cert_file and key_file"
        }
        RDKafkaErrorCode::ClusterAuthorizationFailed => "the principal lacks an ACL on the cluster",
        _ => "authentication failed; check kafka.security.username and the password",
    };
    KafkaOpError::Refused {
        bootstrap: config.kafka.bootstrap_servers.clone(),
        identity: security.identity(),
        reason: format!("{hint} ({detail})"),
        code,
    }
}

/// Topics that exist on the cluster, with their partition counts.
pub fn existing_topics(config: &Config) -> Result<BTreeMap<String, usize>, KafkaOpError> {
    existing_topics_within(config, ADMIN_TIMEOUT)
}

/// [`existing_topics`], waiting at most `timeout` for the cluster to answer.
pub fn existing_topics_within(
    config: &Config,
    timeout: Duration,
) -> Result<BTreeMap<String, usize>, KafkaOpError> {
    let consumer: BaseConsumer<RefusalRecorder> = client_config(config)
        .create_with_context(RefusalRecorder::default())
        .map_err(|source| KafkaOpError::Client {
            what: "metadata client",
            source,
        })?;
    // Asked in short rounds, so that a refusal (reported beside the request, which only
    // times out) ends the wait within a round.
    let deadline = std::time::Instant::now() + timeout;
    let md = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match consumer.fetch_metadata(None, left.min(Duration::from_secs(2))) {
            Ok(md) => break md,
            Err(source) => {
                // Serves pending error events to the context.
                let _ = consumer.poll(Duration::ZERO);
                if let Some((code, detail)) = consumer.context().refusal() {
                    return Err(refused(config, code, &detail));
                }
                if left <= Duration::from_secs(2) {
                    return Err(KafkaOpError::Unreachable {
                        bootstrap: config.kafka.bootstrap_servers.clone(),
                        timeout,
                        source,
                    });
                }
            }
        }
    };
    Ok(md
        .topics()
        .iter()
        .map(|t| (t.name().to_string(), t.partitions().len()))
        .collect())
}

/// Whether a failed request was refused for the client's credentials (a wrong password, a
/// certificate the broker does not accept, or one the client does not trust): waiting
/// does not help.
pub fn is_auth_error(e: &KafkaOpError) -> bool {
    let source = match e {
        KafkaOpError::Refused { .. } => return true,
        KafkaOpError::Unreachable { source, .. }
        | KafkaOpError::Admin(source)
        | KafkaOpError::Client { source, .. }
        | KafkaOpError::Produce { source, .. } => source,
        _ => return false,
    };
    source.rdkafka_error_code().is_some_and(is_refusal_code)
}

/// How often a denied write to the same topic is logged again.
const DENIED_LOG_EVERY: Duration = Duration::from_secs(5);

/// Whether the cluster refused this principal access to a topic (an ACL is missing).
pub fn topic_denied(e: &KafkaError) -> bool {
    e.rdkafka_error_code() == Some(RDKafkaErrorCode::TopicAuthorizationFailed)
}

/// Logs, at most every few seconds per topic, that the cluster refused to let this
/// principal write to `topic` (a missing WRITE ACL): the records wait, uncommitted, and
/// are sent again until the ACL is granted.
pub fn report_denied_write(e: &KafkaError, topic: &str) {
    if !topic_denied(e) {
        return;
    }
    static LAST: Mutex<BTreeMap<String, std::time::Instant>> = Mutex::new(BTreeMap::new());
    let Ok(mut last) = LAST.lock() else { return };
    let now = std::time::Instant::now();
    if last
        .get(topic)
        .is_some_and(|at| now.duration_since(*at) < DENIED_LOG_EVERY)
    {
        return;
    }
    last.insert(topic.to_string(), now);
    tracing::error!(
        topic,
        operation = "WRITE",
        "Kafka denied WRITE on topic {topic}: the principal lacks that ACL (see `tidewater acl`); outcomes wait, uncommitted, and are sent again until it is granted"
    );
}

/// One topic the configuration implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Name.
    pub name: String,
    /// Partitions.
    pub partitions: i32,
    /// Topic-level configuration.
    pub config: Vec<(&'static str, &'static str)>,
}

/// Every topic the configuration implies: queues, status, destinations.
pub fn topic_specs(config: &Config) -> Vec<TopicSpec> {
    let partitions = i32::try_from(config.topics.partitions.get()).unwrap_or(i32::MAX);
    let mut specs: Vec<TopicSpec> = config
        .queue_topics()
        .into_iter()
        .map(|name| TopicSpec {
            name,
            partitions,
            config: vec![],
        })
        .collect();
    specs.extend(config.delay_tiers().into_iter().map(|(_, name)| TopicSpec {
        name,
        partitions,
        config: vec![],
    }));
    specs.push(TopicSpec {
        name: topics::status(&config.topics.prefix),
        partitions,
        config: vec![("cleanup.policy", "compact")],
    });
    // Captured output (read by the indexer of `tidewater serve`) and stop requests.
    specs.push(TopicSpec {
        name: topics::logs(&config.topics.prefix),
        partitions,
        config: vec![],
    });
    specs.push(TopicSpec {
        name: topics::control(&config.topics.prefix),
        partitions,
        config: vec![],
    });
    // The controllers' election and decision log: one partition, so one leader.
    specs.push(TopicSpec {
        name: topics::controller(&config.topics.prefix),
        partitions: 1,
        config: vec![],
    });
    specs.extend(
        config
            .destination_topics()
            .into_iter()
            .map(|name| TopicSpec {
                name,
                partitions,
                config: vec![],
            }),
    );
    specs
}

/// What `topics init` did to each topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicState {
    /// Created now.
    Created,
    /// Already there, with this many partitions.
    Existed(usize),
}

/// How many times [`init_topics`] asks for the topics still missing when the cluster does
/// not answer in time (creating a topic is idempotent here: one that exists is left alone).
const CREATE_ATTEMPTS: u32 = 4;

/// Whether a failed topic creation is worth asking again: the cluster did not answer in
/// time, or the controller moved. A refusal (policy, ACL, bad setting) is not.
pub fn create_worth_retrying(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::OperationTimedOut | C::RequestTimedOut | C::NotController | C::BrokerTransportFailure
    )
}

/// What a topic's creation result says about it, on the given attempt: `Ok(true)` created
/// (by this call: on a later attempt, "already exists" means an earlier attempt that timed
/// out created it), `Ok(false)` was already there, `Err` failed with this code.
pub fn creation_outcome(
    result: Result<(), RDKafkaErrorCode>,
    attempt: u32,
) -> Result<bool, RDKafkaErrorCode> {
    match result {
        Ok(()) => Ok(true),
        Err(RDKafkaErrorCode::TopicAlreadyExists) => Ok(attempt > 1),
        Err(code) => Err(code),
    }
}

/// Creates every topic the configuration implies that does not exist yet. Safe to re-run.
/// When the cluster does not answer in time, looks again at what exists and asks for the
/// rest, up to [`CREATE_ATTEMPTS`] times.
pub async fn init_topics(config: &Config) -> Result<Vec<(TopicSpec, TopicState)>, KafkaOpError> {
    let existing = existing_topics(config)?;
    let admin: AdminClient<DefaultClientContext> =
        client_config(config)
            .create()
            .map_err(|source| KafkaOpError::Client {
                what: "admin client",
                source,
            })?;
    let replication = i32::from(config.topics.replication_factor.get());
    let specs = topic_specs(config);
    // Answered by this call: created by it, or found already there (missing from the
    // metadata read first, which can lag a creation of a moment ago).
    let mut created = std::collections::BTreeSet::new();
    let mut already = std::collections::BTreeSet::new();
    let opts = AdminOptions::new()
        .operation_timeout(Some(ADMIN_TIMEOUT))
        .request_timeout(Some(ADMIN_TIMEOUT * 2));
    for attempt in 1..=CREATE_ATTEMPTS {
        let missing: Vec<&TopicSpec> = specs
            .iter()
            .filter(|s| {
                !existing.contains_key(&s.name)
                    && !created.contains(&s.name)
                    && !already.contains(&s.name)
            })
            .collect();
        if missing.is_empty() {
            break;
        }
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|s| {
                s.config.iter().fold(
                    NewTopic::new(&s.name, s.partitions, TopicReplication::Fixed(replication)),
                    |t, (k, v)| t.set(k, v),
                )
            })
            .collect();
        let last = attempt == CREATE_ATTEMPTS;
        // Asked again, a topic an unanswered request created comes back "already
        // exists", which `creation_outcome` counts as created from the second attempt.
        let results = match admin.create_topics(&new_topics, &opts).await {
            Ok(results) => results,
            Err(KafkaError::AdminOp(code)) if !last && create_worth_retrying(code) => {
                retry_note(attempt, missing.len(), code);
                continue;
            }
            Err(e) => return Err(KafkaOpError::Admin(e)),
        };
        let mut retry = None;
        for r in results {
            let (topic, result) = match r {
                Ok(name) => (name, Ok(())),
                Err((name, code)) => (name, Err(code)),
            };
            match creation_outcome(result, attempt) {
                Ok(true) => {
                    created.insert(topic);
                }
                Ok(false) => {
                    already.insert(topic);
                }
                Err(code) if !last && create_worth_retrying(code) => retry = Some(code),
                Err(code) => return Err(KafkaOpError::CreateTopic { topic, code }),
            }
        }
        if let Some(code) = retry {
            retry_note(attempt, missing.len(), code);
        }
    }
    // Done means usable: a producer started right after must find every topic, so the
    // ones created are waited for in the metadata (which also gives the partition counts
    // of the ones found already there).
    let existing = if created.is_empty() && already.is_empty() {
        existing
    } else {
        let asked: Vec<String> = created.iter().chain(&already).cloned().collect();
        match wait_visible(config, &asked, ADMIN_TIMEOUT) {
            Ok(existing) => existing,
            Err(KafkaOpError::MissingTopics(missing)) => {
                tracing::warn!(
                    "created, but not yet in the cluster's metadata after {ADMIN_TIMEOUT:?}: {}",
                    missing.join(", ")
                );
                existing_topics(config)?
            }
            Err(e) => return Err(e),
        }
    };
    let mut report = Vec::with_capacity(specs.len());
    for s in specs {
        let state = if created.contains(&s.name) {
            TopicState::Created
        } else {
            TopicState::Existed(
                existing
                    .get(&s.name)
                    .copied()
                    .unwrap_or_else(|| usize::try_from(s.partitions).unwrap_or(0)),
            )
        };
        report.push((s, state));
    }
    Ok(report)
}

fn retry_note(attempt: u32, missing: usize, code: RDKafkaErrorCode) {
    tracing::warn!(
        attempt,
        of = CREATE_ATTEMPTS,
        "creating {missing} topic(s): {code}; looking at what exists and asking again"
    );
}

/// Fails with the list of topics the scheduler needs that do not exist (all but the
/// controller topic, which only `tidewater run --replicas` uses and checks itself).
/// Topics created a moment ago may take a moment to appear in the metadata: missing ones
/// are looked for again for up to 10 s.
pub fn check_topics(config: &Config) -> Result<(), KafkaOpError> {
    let controller = topics::controller(&config.topics.prefix);
    let needed: Vec<String> = topic_specs(config)
        .into_iter()
        .map(|s| s.name)
        .filter(|n| *n != controller)
        .collect();
    wait_visible(config, &needed, Duration::from_secs(10)).map(|_| ())
}

/// Reads the cluster's topics until every one of `names` is in them, for up to `within`;
/// fails with the ones still missing then. A topic created a moment ago reaches every
/// broker's metadata a moment later.
fn wait_visible(
    config: &Config,
    names: &[String],
    within: Duration,
) -> Result<BTreeMap<String, usize>, KafkaOpError> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let existing = existing_topics(config)?;
        let missing: Vec<String> = names
            .iter()
            .filter(|n| !existing.contains_key(*n))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(existing);
        }
        if std::time::Instant::now() >= deadline {
            return Err(KafkaOpError::MissingTopics(missing));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_already_there_on_the_first_attempt_existed_and_on_a_later_one_was_ours() {
        assert_eq!(creation_outcome(Ok(()), 1), Ok(true));
        assert_eq!(
            creation_outcome(Err(RDKafkaErrorCode::TopicAlreadyExists), 1),
            Ok(false)
        );
        assert_eq!(
            creation_outcome(Err(RDKafkaErrorCode::TopicAlreadyExists), 2),
            Ok(true)
        );
        assert_eq!(
            creation_outcome(Err(RDKafkaErrorCode::PolicyViolation), 1),
            Err(RDKafkaErrorCode::PolicyViolation)
        );
    }

    #[test]
    fn only_an_unanswered_or_misdirected_creation_is_asked_again() {
        assert!(create_worth_retrying(RDKafkaErrorCode::OperationTimedOut));
        assert!(create_worth_retrying(RDKafkaErrorCode::RequestTimedOut));
        assert!(create_worth_retrying(RDKafkaErrorCode::NotController));
        assert!(!create_worth_retrying(
            RDKafkaErrorCode::TopicAuthorizationFailed
        ));
        assert!(!create_worth_retrying(
            RDKafkaErrorCode::InvalidReplicationFactor
        ));
        assert!(!create_worth_retrying(RDKafkaErrorCode::PolicyViolation));
    }
}
