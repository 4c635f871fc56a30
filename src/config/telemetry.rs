//! `[telemetry]`: the log format, where `/metrics` is served, and how often the Kafka
//! clients report their statistics.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::de::{de_duration, invalid};

/// Log format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (default).
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Logs and metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `human` or `json`. Default `human`. The `RUST_LOG` variable sets levels.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Address of the Prometheus `/metrics` endpoint of `tidewater run`, or `off`.
    /// Default `127.0.0.1:9464`. Port 0 picks a free port (logged at start).
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: String,
    /// How often the scheduler's consumer and producer and the indexer's consumer hand
    /// librdkafka's statistics to the `tidewater_kafka_*` metrics (librdkafka's
    /// `statistics.interval.ms`). `0s` turns them off. Default `15s`.
    #[serde(
        default = "default_kafka_statistics_interval",
        deserialize_with = "de_duration"
    )]
    pub kafka_statistics_interval: Duration,
}

fn default_metrics_listen() -> String {
    "127.0.0.1:9464".into()
}

fn default_kafka_statistics_interval() -> Duration {
    Duration::from_secs(15)
}

/// Shortest statistics interval accepted (other than off).
const MIN_STATISTICS_INTERVAL: Duration = Duration::from_millis(100);
/// Longest statistics interval librdkafka accepts.
const MAX_STATISTICS_INTERVAL: Duration = Duration::from_secs(86_400);

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Human,
            metrics_listen: default_metrics_listen(),
            kafka_statistics_interval: default_kafka_statistics_interval(),
        }
    }
}

impl TelemetryConfig {
    /// The parsed metrics address; `None` when metrics are `off`.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.metrics_listen.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        self.metrics_listen.parse().map(Some).map_err(|e| {
            invalid(
                "telemetry.metrics_listen",
                format!(
                    "`{}` is not `host:port` or `off` ({e})",
                    self.metrics_listen
                ),
            )
        })
    }

    /// Checks what the types alone do not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let every = self.kafka_statistics_interval;
        if !every.is_zero() && !(MIN_STATISTICS_INTERVAL..=MAX_STATISTICS_INTERVAL).contains(&every)
        {
            return Err(invalid(
                "telemetry.kafka_statistics_interval",
                "must be \"0s\" (off) or from 100ms to 24h",
            ));
        }
        self.metrics_addr().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::with_tenants;

    fn interval(v: &str) -> Result<std::time::Duration, String> {
        with_tenants(&format!("[telemetry]\nkafka_statistics_interval = \"{v}\""))
            .map(|c| c.telemetry.kafka_statistics_interval)
    }

    #[test]
    fn the_statistics_interval_is_off_or_within_librdkafkas_range() {
        assert_eq!(
            with_tenants("")
                .unwrap()
                .telemetry
                .kafka_statistics_interval
                .as_secs(),
            15
        );
        assert!(interval("0s").unwrap().is_zero());
        assert_eq!(interval("2s").unwrap().as_millis(), 2000);
        for bad in ["10ms", "2d"] {
            let e = interval(bad).unwrap_err();
            assert!(
                e.contains("telemetry.kafka_statistics_interval"),
                "{bad}: {e}"
            );
        }
    }
}
