//! Kafka clients: configuration shared by every client, the producer, and topic creation.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
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
    /// Topics the configuration needs are missing.
    #[error("topics missing on the cluster: {}; create them with `tidewater topics init`", .0.join(", "))]
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

/// The base configuration of every client: bootstrap servers and the raw properties.
pub fn client_config(config: &Config) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &config.kafka.bootstrap_servers);
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

/// Topics that exist on the cluster, with their partition counts.
pub fn existing_topics(config: &Config) -> Result<BTreeMap<String, usize>, KafkaOpError> {
    existing_topics_within(config, ADMIN_TIMEOUT)
}

/// [`existing_topics`], waiting at most `timeout` for the cluster to answer.
pub fn existing_topics_within(
    config: &Config,
    timeout: Duration,
) -> Result<BTreeMap<String, usize>, KafkaOpError> {
    let consumer: BaseConsumer =
        client_config(config)
            .create()
            .map_err(|source| KafkaOpError::Client {
                what: "metadata client",
                source,
            })?;
    let md =
        consumer
            .fetch_metadata(None, timeout)
            .map_err(|source| KafkaOpError::Unreachable {
                bootstrap: config.kafka.bootstrap_servers.clone(),
                timeout,
                source,
            })?;
    Ok(md
        .topics()
        .iter()
        .map(|t| (t.name().to_string(), t.partitions().len()))
        .collect())
}

/// Whether a failed request was refused for the client's credentials (a wrong password, a
/// certificate the broker does not accept): waiting does not help.
pub fn is_auth_error(e: &KafkaOpError) -> bool {
    use RDKafkaErrorCode as C;
    let source = match e {
        KafkaOpError::Unreachable { source, .. }
        | KafkaOpError::Admin(source)
        | KafkaOpError::Client { source, .. }
        | KafkaOpError::Produce { source, .. } => source,
        _ => return false,
    };
    matches!(
        source.rdkafka_error_code(),
        Some(C::Authentication | C::SaslAuthenticationFailed | C::SSL)
    )
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

/// Creates every topic the configuration implies that does not exist yet. Safe to re-run.
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
    let missing: Vec<&TopicSpec> = specs
        .iter()
        .filter(|s| !existing.contains_key(&s.name))
        .collect();
    let new_topics: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|s| {
            s.config.iter().fold(
                NewTopic::new(&s.name, s.partitions, TopicReplication::Fixed(replication)),
                |t, (k, v)| t.set(k, v),
            )
        })
        .collect();
    let mut created = std::collections::BTreeSet::new();
    if !new_topics.is_empty() {
        let opts = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
        let results = admin
            .create_topics(&new_topics, &opts)
            .await
            .map_err(KafkaOpError::Admin)?;
        for r in results {
            match r {
                Ok(name) => {
                    created.insert(name);
                }
                // Created by someone else in the meantime: fine.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => return Err(KafkaOpError::CreateTopic { topic, code }),
            }
        }
    }
    Ok(specs
        .into_iter()
        .map(|s| {
            let state = match existing.get(&s.name) {
                Some(n) => TopicState::Existed(*n),
                None => TopicState::Created,
            };
            (s, state)
        })
        .collect())
}

/// Fails with the list of topics the scheduler needs that do not exist (all but the
/// controller topic, which only `tidewater run --replicas` uses and checks itself).
/// Topics created a moment ago may take a moment to appear in the metadata: missing ones
/// are looked for again for up to 10 s.
pub fn check_topics(config: &Config) -> Result<(), KafkaOpError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let controller = topics::controller(&config.topics.prefix);
    loop {
        let existing = existing_topics(config)?;
        let missing: Vec<String> = topic_specs(config)
            .into_iter()
            .map(|s| s.name)
            .filter(|n| *n != controller && !existing.contains_key(n))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(KafkaOpError::MissingTopics(missing));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
