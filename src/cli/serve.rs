//! `tidewater serve`: the indexer and the task query API (`docs/openapi.yaml`) until
//! SIGTERM or Ctrl-C.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use tidewater::config::Config;
use tidewater::telemetry;

use super::start_metrics_and_signals;

#[derive(Args)]
pub struct ServeArgs {
    /// Override `api.listen` (`host:port`; port 0 picks a free one).
    #[arg(long)]
    listen: Option<String>,
    /// Override `indexer.store` (the SQLite file of the index).
    #[arg(long)]
    store: Option<PathBuf>,
    /// Override `telemetry.metrics_listen` (`host:port`, or `off`).
    #[arg(long)]
    metrics_listen: Option<String>,
}

/// `tidewater serve`: the indexer and the API until SIGTERM or Ctrl-C.
pub async fn serve(mut config: Config, args: &ServeArgs) -> Result<()> {
    if let Some(l) = &args.listen {
        config.api.listen = l.clone();
    }
    if let Some(s) = &args.store {
        config.indexer.store = s.clone();
    }
    if let Some(m) = &args.metrics_listen {
        config.telemetry.metrics_listen = m.clone();
    }
    config.validate()?;
    telemetry::init(&config.telemetry, "api")?;
    let shutdown = start_metrics_and_signals(&config).await?;
    let addr = config.api.listen_addr()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    tracing::info!(address = %bound, store = %config.indexer.store.display(), "API listening");
    println!("serving the task API at http://{bound}");
    std::io::stdout().flush()?;
    tidewater::api::run(Arc::new(config), listener, shutdown).await?;
    Ok(())
}
