//! Logs (`tracing`, human or JSON) and the Prometheus `/metrics` endpoint.

use std::net::SocketAddr;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::config::LogFormat;
use crate::names::metrics as m;

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The metrics recorder could not be installed.
    #[error("cannot install the metrics recorder: {0}")]
    Recorder(String),
    /// The metrics address could not be bound.
    #[error("cannot listen for /metrics on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// Installs the global `tracing` subscriber. Levels come from `RUST_LOG` (default `info`).
/// Calling it again is harmless.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn metrics_handle() -> Result<PrometheusHandle, TelemetryError> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), m::DURATION_BUCKETS)
                .map_err(|e| e.to_string())?
                .install_recorder()
                .map_err(|e| e.to_string())?;
            m::describe();
            // Histograms keep raw samples until upkeep folds them: without a scrape
            // they would grow with every task, so fold them on a timer.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("tw-metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .map_err(|e| e.to_string())?;
            Ok(handle)
        })
        .clone()
        .map_err(TelemetryError::Recorder)
}

/// Serves `/metrics` (Prometheus text format), `/healthz` (the process answers) and
/// `/readyz` (every component makes progress: 200, else 503 with the reasons) until
/// `shutdown`; returns the bound address (useful with port 0).
pub async fn serve_metrics(
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> Result<SocketAddr, TelemetryError> {
    let handle = metrics_handle()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| TelemetryError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| TelemetryError::Bind { addr, source })?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let handle = handle.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        handle.render(),
                    )
                }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route("/readyz", axum::routing::get(readyz));
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok(bound)
}

async fn readyz() -> (axum::http::StatusCode, String) {
    match crate::health::Health::global().check() {
        Ok(()) => (axum::http::StatusCode::OK, "ready\n".into()),
        Err(failing) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            failing
                .iter()
                .map(|(component, reason)| format!("{component}: {reason}\n"))
                .collect(),
        ),
    }
}
