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

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Human,
            metrics_listen: default_metrics_listen(),
            otlp_endpoint: None,
            otlp_protocol: default_otlp_protocol(),
            trace_sample_ratio: default_sample_ratio(),
            service_name: None,
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
        Ok(())
    }
}
