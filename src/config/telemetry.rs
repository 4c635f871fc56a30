//! `[telemetry]`: the log format and where `/metrics` is served.

use std::net::SocketAddr;

use serde::Deserialize;

use super::ConfigError;
use super::de::invalid;

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
}

fn default_metrics_listen() -> String {
    "127.0.0.1:9464".into()
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Human,
            metrics_listen: default_metrics_listen(),
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
        self.metrics_addr().map(|_| ())
    }
}
