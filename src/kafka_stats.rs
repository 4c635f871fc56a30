//! The Kafka clients' own health, from librdkafka's statistics: round-trip time to each
//! broker, what waits in a producer's queue, and how far a consumer's fetching is behind
//! each partition it reads.
//!
//! librdkafka emits a JSON document every `statistics.interval.ms`
//! (`telemetry.kafka_statistics_interval`) on the thread that polls the client. It is
//! parsed here into the few numbers Tidewater exports, with serde ignoring the rest; no
//! work is done per record. Only clients that are polled all the time get statistics
//! ([`enable`]): an unpolled client would queue every document.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::ConsumerContext;
use serde::Deserialize;

use crate::config::Config;
use crate::names::metrics as m;

/// Which client of the process the statistics are about (the `client` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// The scheduler's consumer of the queue and delay topics.
    Consumer,
    /// The scheduler's producer of outcomes, status events and delayed tasks.
    Producer,
    /// The consumer of the indexer of `tidewater serve`.
    Indexer,
}

impl Client {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Client::Consumer => "consumer",
            Client::Producer => "producer",
            Client::Indexer => "indexer",
        }
    }
}

/// Sets librdkafka's `statistics.interval.ms` from `telemetry.kafka_statistics_interval`,
/// unless the raw `kafka.properties` set it or the interval is 0 (off). Only for a client
/// whose context hands the statistics to [`KafkaStats::record`] and that is polled.
pub fn enable(cc: &mut ClientConfig, config: &Config) {
    let every = config.telemetry.kafka_statistics_interval;
    if !every.is_zero() {
        crate::kafka::set_default(cc, "statistics.interval.ms", &every.as_millis().to_string());
    }
}

/// What one statistics document says, reduced to what is exported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Round-trip time per broker (`host:port`): average and 99th percentile, seconds.
    /// Brokers without a request in the interval are left out.
    pub rtt: Vec<(String, f64, f64)>,
    /// A producer's queue: messages and bytes. `None` for a consumer.
    pub queue: Option<(u64, u64)>,
    /// Fetch lag per partition being fetched: (topic, partition, records).
    pub fetch_lag: Vec<(String, i32, i64)>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Raw {
    #[serde(rename = "type")]
    kind: String,
    msg_cnt: u64,
    msg_size: u64,
    brokers: HashMap<String, RawBroker>,
    topics: HashMap<String, RawTopic>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawBroker {
    nodeid: i32,
    nodename: String,
    source: String,
    rtt: RawWindow,
}

/// A rolling window; librdkafka's times are in microseconds.
#[derive(Deserialize, Default)]
#[serde(default)]
struct RawWindow {
    avg: i64,
    p99: i64,
    cnt: i64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawTopic {
    partitions: HashMap<String, RawPartition>,
}

#[derive(Deserialize)]
#[serde(default)]
struct RawPartition {
    fetch_state: String,
    hi_offset: i64,
    ls_offset: i64,
    app_offset: i64,
}

impl Default for RawPartition {
    fn default() -> Self {
        Self {
            fetch_state: String::new(),
            hi_offset: -1,
            ls_offset: -1,
            app_offset: -1,
        }
    }
}

const MICROS: f64 = 1e6;

/// Reads one statistics document. Brokers: only those learned from the cluster's metadata
/// (not the bootstrap entries or librdkafka's internal and logical ones). Partitions:
/// only real ones (not librdkafka's unassigned `-1`) in the `active` fetch state whose
/// offsets are known. The fetch lag is the end offset (the last stable offset, which a
/// `read_committed` consumer reads up to; the high watermark when that is unknown) minus
/// the offset after the last record handed to the application, never below 0.
pub fn parse(json: &[u8]) -> Result<Snapshot, serde_json::Error> {
    let raw: Raw = serde_json::from_slice(json)?;
    let mut rtt: Vec<(String, f64, f64)> = raw
        .brokers
        .into_values()
        .filter(|b| b.source == "learned" && b.nodeid >= 0 && b.rtt.cnt > 0)
        .map(|b| {
            let (avg, p99) = (b.rtt.avg as f64 / MICROS, b.rtt.p99 as f64 / MICROS);
            (b.nodename, avg, p99)
        })
        .collect();
    rtt.sort_by(|a, b| a.0.cmp(&b.0));
    let mut fetch_lag = Vec::new();
    for (topic, t) in raw.topics {
        for (key, p) in t.partitions {
            let Ok(partition) = key.parse::<i32>() else {
                continue;
            };
            let end = if p.ls_offset >= 0 {
                p.ls_offset
            } else {
                p.hi_offset
            };
            if partition < 0 || p.fetch_state != "active" || end < 0 || p.app_offset < 0 {
                continue;
            }
            fetch_lag.push((topic.clone(), partition, (end - p.app_offset).max(0)));
        }
    }
    fetch_lag.sort();
    Ok(Snapshot {
        rtt,
        queue: (raw.kind == "producer").then_some((raw.msg_cnt, raw.msg_size)),
        fetch_lag,
    })
}

/// Exports the statistics of one client; usable as a client context by itself, or from
/// another context's `stats_raw`.
#[derive(Debug)]
pub struct KafkaStats {
    client: Client,
    /// Partitions whose fetch lag was exported, so one that stops being fetched (revoked)
    /// is set to 0 rather than keeping its last value. Bounded by the partitions of the
    /// topics the client reads.
    exported: Mutex<HashSet<(String, i32)>>,
}

impl KafkaStats {
    /// Statistics of `client`.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            exported: Mutex::new(HashSet::new()),
        }
    }

    /// Parses a statistics document and sets the gauges; a document that does not parse
    /// is logged at debug level and skipped.
    pub fn record(&self, json: &[u8]) {
        match parse(json) {
            Ok(s) => self.export(&s),
            Err(e) => {
                tracing::debug!(client = self.client.as_str(), error = %e, "librdkafka statistics not understood")
            }
        }
    }

    fn export(&self, s: &Snapshot) {
        let client = self.client.as_str();
        for (broker, avg, p99) in &s.rtt {
            for (stat, v) in [("avg", avg), ("p99", p99)] {
                ::metrics::gauge!(m::KAFKA_BROKER_RTT, m::L_CLIENT => client, m::L_BROKER => broker.clone(), m::L_STAT => stat)
                    .set(*v);
            }
        }
        if let Some((msgs, bytes)) = s.queue {
            ::metrics::gauge!(m::KAFKA_PRODUCER_QUEUE_MESSAGES, m::L_CLIENT => client)
                .set(msgs as f64);
            ::metrics::gauge!(m::KAFKA_PRODUCER_QUEUE_BYTES, m::L_CLIENT => client)
                .set(bytes as f64);
        }
        let now: HashSet<(String, i32)> = s
            .fetch_lag
            .iter()
            .map(|(t, p, _)| (t.clone(), *p))
            .collect();
        let mut exported = self.exported.lock().unwrap_or_else(|p| p.into_inner());
        let gone = exported.difference(&now).map(|(t, p)| (t.clone(), *p, 0));
        for (topic, partition, lag) in gone.chain(s.fetch_lag.iter().cloned()) {
            ::metrics::gauge!(m::KAFKA_CONSUMER_FETCH_LAG, m::L_CLIENT => client, m::L_TOPIC => topic, m::L_PARTITION => partition.to_string())
                .set(lag as f64);
        }
        *exported = now;
    }
}

impl ClientContext for KafkaStats {
    fn stats_raw(&self, statistics: &[u8]) {
        self.record(statistics);
    }
}

impl ConsumerContext for KafkaStats {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A consumer's document, trimmed from librdkafka 2.12 output: a learned broker, a
    /// bootstrap entry, the logical coordinator, and partitions being fetched, stopped
    /// and unassigned.
    const CONSUMER: &str = r#"{
      "name": "rdkafka#consumer-1", "type": "consumer", "ts": 1, "time": 2,
      "msg_cnt": 0, "msg_size": 0, "extra_field_from_a_newer_version": [1, 2],
      "brokers": {
        "127.0.0.1:19592/1": { "name": "127.0.0.1:19592/1", "nodeid": 1,
          "nodename": "127.0.0.1:19592", "source": "learned", "state": "UP",
          "rtt": { "min": 200, "max": 4000, "avg": 1500, "p99": 3500, "cnt": 12 } },
        "127.0.0.1:19592/bootstrap": { "nodeid": -1, "nodename": "127.0.0.1:19592",
          "source": "configured", "rtt": { "avg": 900, "p99": 900, "cnt": 1 } },
        "GroupCoordinator": { "nodeid": -1, "nodename": "127.0.0.1:19592",
          "source": "logical", "rtt": { "avg": 0, "p99": 0, "cnt": 0 } },
        "127.0.0.1:19593/2": { "nodeid": 2, "nodename": "127.0.0.1:19593",
          "source": "learned", "rtt": { "avg": 0, "p99": 0, "cnt": 0 } }
      },
      "topics": {
        "tw.q.shop": { "topic": "tw.q.shop", "partitions": {
          "0": { "partition": 0, "fetch_state": "active", "hi_offset": 120,
                 "ls_offset": 118, "app_offset": 100, "consumer_lag": 118 },
          "1": { "partition": 1, "fetch_state": "active", "hi_offset": 7,
                 "ls_offset": -1, "app_offset": 7 },
          "2": { "partition": 2, "fetch_state": "stopped", "hi_offset": 50,
                 "ls_offset": 50, "app_offset": 10 },
          "3": { "partition": 3, "fetch_state": "active", "hi_offset": 50,
                 "ls_offset": 50, "app_offset": -1001 },
          "-1": { "partition": -1, "fetch_state": "none", "hi_offset": -1,
                  "ls_offset": -1, "app_offset": -1 }
        } }
      },
      "cgrp": { "state": "up" }
    }"#;

    #[test]
    fn a_consumers_statistics_give_rtt_per_broker_and_fetch_lag_per_fetched_partition() {
        let s = parse(CONSUMER.as_bytes()).unwrap();
        assert_eq!(s.rtt, vec![("127.0.0.1:19592".to_string(), 0.0015, 0.0035)]);
        assert_eq!(s.queue, None, "a consumer has no producer queue");
        assert_eq!(
            s.fetch_lag,
            vec![
                ("tw.q.shop".to_string(), 0, 18),
                ("tw.q.shop".to_string(), 1, 0)
            ]
        );
    }

    #[test]
    fn a_producers_statistics_give_its_queue() {
        let s = parse(br#"{"type": "producer", "msg_cnt": 3, "msg_size": 4096}"#).unwrap();
        assert_eq!(s.queue, Some((3, 4096)));
        assert!(s.rtt.is_empty() && s.fetch_lag.is_empty());
    }

    #[test]
    fn what_is_not_statistics_is_an_error_not_a_panic() {
        assert!(parse(b"not json").is_err());
        assert!(parse(br#"{"brokers": 5}"#).is_err());
        assert_eq!(parse(b"{}").unwrap(), Snapshot::default());
    }

    #[test]
    fn the_interval_is_set_unless_off_or_given_as_a_raw_property() {
        let mut config = crate::config::tests::with_tenants("").unwrap();
        let mut cc = ClientConfig::new();
        enable(&mut cc, &config);
        assert_eq!(cc.get("statistics.interval.ms"), Some("15000"));
        let mut cc = ClientConfig::new();
        cc.set("statistics.interval.ms", "500");
        enable(&mut cc, &config);
        assert_eq!(cc.get("statistics.interval.ms"), Some("500"));
        config.telemetry.kafka_statistics_interval = std::time::Duration::ZERO;
        let mut cc = ClientConfig::new();
        enable(&mut cc, &config);
        assert_eq!(cc.get("statistics.interval.ms"), None);
    }
}
