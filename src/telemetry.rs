//! Logs (`tracing`, human or JSON), OpenTelemetry traces ([`crate::otel`]) and the
//! Prometheus `/metrics` endpoint.

use std::net::SocketAddr;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{FilterExt as _, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{LogFormat, TelemetryConfig};
use crate::names::metrics as m;

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The metrics recorder could not be installed.
    #[error("cannot install the metrics recorder: {0}")]
    Recorder(String),
    /// Traces were asked for but cannot be sent.
    #[error(transparent)]
    Traces(#[from] crate::otel::TraceError),
    /// The metrics address could not be bound.
    #[error("cannot listen for /metrics on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// Installs the global `tracing` subscriber: logs to stderr (levels from `RUST_LOG`,
/// default `info`) and, when `telemetry.otlp_endpoint` is set, OpenTelemetry spans.
/// `component` names the process in the traces' default service name (`scheduler`,
/// `api`, ...). Call it inside the async runtime, and [`crate::otel::shutdown`] at the
/// end. Calling it again is harmless.
pub fn init(cfg: &TelemetryConfig, component: &str) -> Result<(), TelemetryError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Spans meant for traces stay out of the log lines.
    let logged = filter.and(filter_fn(|meta| meta.target() != crate::otel::TARGET));
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let fmt = match cfg.log_format {
        LogFormat::Human => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let traces = crate::otel::tracer(cfg, component)?.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_level(false)
            .with_target(false)
            .with_filter(filter_fn(|meta| meta.target() == crate::otel::TARGET))
    });
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(logged))
        .with(traces)
        .try_init();
    Ok(())
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
