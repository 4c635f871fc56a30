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
    /// Where OpenTelemetry traces go: the base URL of an OTLP/HTTP receiver, such as
    /// `http://127.0.0.1:4318` (spans are sent to `<url>/v1/traces`; a URL that already
    /// ends in `/v1/traces` is used as it is). Unset (default): no traces, at no cost.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// OTLP protocol: `http/protobuf` (the only one; the default).
    #[serde(default = "default_otlp_protocol")]
    pub otlp_protocol: String,
    /// Share of new traces recorded, 0.0 to 1.0 (default 1.0). A task that continues a
    /// submitter's trace follows the submitter's sampling decision instead.
    #[serde(default = "default_sample_ratio")]
    pub trace_sample_ratio: f64,
    /// `service.name` of the spans. Default `tidewater-<component>`: `tidewater-scheduler`,
    /// `tidewater-api`, `tidewater-submit`, `tidewater-events`.
    #[serde(default)]
    pub service_name: Option<String>,
    /// How often the scheduler's consumer and producer and the indexer's consumer hand
    /// librdkafka's statistics to the `tidewater_kafka_*` metrics (librdkafka's
    /// `statistics.interval.ms`). `0s` turns them off. Default `15s`.
    #[serde(
        default = "default_kafka_statistics_interval",
        deserialize_with = "de_duration"
    )]
    pub kafka_statistics_interval: Duration,
}

/// The one OTLP protocol Tidewater speaks.
pub const OTLP_HTTP_PROTOBUF: &str = "http/protobuf";

fn default_otlp_protocol() -> String {
    OTLP_HTTP_PROTOBUF.into()
}

fn default_sample_ratio() -> f64 {
    1.0
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
            otlp_endpoint: None,
            otlp_protocol: default_otlp_protocol(),
            trace_sample_ratio: default_sample_ratio(),
            service_name: None,
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

    /// The URL spans are sent to, when traces are on.
    pub fn otlp_traces_url(&self) -> Option<String> {
        let base = self.otlp_endpoint.as_deref()?.trim().trim_end_matches('/');
        Some(if base.ends_with("/v1/traces") {
            base.to_string()
        } else {
            format!("{base}/v1/traces")
        })
    }

    /// Checks what the types alone do not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.metrics_addr()?;
        if self.otlp_protocol != OTLP_HTTP_PROTOBUF {
            return Err(invalid(
                "telemetry.otlp_protocol",
                format!(
                    "`{}` is not supported: use `{OTLP_HTTP_PROTOBUF}` and the receiver's \
                     OTLP/HTTP port (usually 4318)",
                    self.otlp_protocol
                ),
            ));
        }
        if let Some(url) = self.otlp_traces_url() {
            match reqwest::Url::parse(&url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                    if !u.username().is_empty() || u.password().is_some() {
                        return Err(invalid(
                            "telemetry.otlp_endpoint",
                            "must not carry credentials".to_string(),
                        ));
                    }
                }
                _ => {
                    return Err(invalid(
                        "telemetry.otlp_endpoint",
                        "is not an http:// or https:// URL such as `http://127.0.0.1:4318`"
                            .to_string(),
                    ));
                }
            }
        }
        if !(0.0..=1.0).contains(&self.trace_sample_ratio) {
            return Err(invalid(
                "telemetry.trace_sample_ratio",
                format!("{} is not between 0.0 and 1.0", self.trace_sample_ratio),
            ));
        }
        if self
            .service_name
            .as_deref()
            .is_some_and(|s| s.trim().is_empty())
        {
            return Err(invalid(
                "telemetry.service_name",
                "must not be empty".to_string(),
            ));
        }
        let every = self.kafka_statistics_interval;
        if !every.is_zero() && !(MIN_STATISTICS_INTERVAL..=MAX_STATISTICS_INTERVAL).contains(&every)
        {
            return Err(invalid(
                "telemetry.kafka_statistics_interval",
                "must be \"0s\" (off) or from 100ms to 24h",
            ));
        }
        Ok(())
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
