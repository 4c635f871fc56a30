//! The commands of `tidewater`, one module each, and what they share: how a long-running
//! command (run, serve, the supervisor) starts its metrics endpoint and signal handlers,
//! and how `name=value` arguments are read.

pub mod acl;
pub mod check;
pub mod events;
pub mod redrive;
pub mod run;
pub mod serve;
pub mod submit;
pub mod tasks;
pub mod topics;

use anyhow::Result;
use tidewater::config::Config;
use tidewater::telemetry;
use tokio_util::sync::CancellationToken;

/// Starts `/metrics` (unless `telemetry.metrics_listen` is `off`) and the signal
/// handlers of a long-running command. The token is its root shutdown: the first SIGTERM
/// or Ctrl-C cancels it (drain), a second one exits at once; cancelling it also stops
/// the metrics endpoint.
pub async fn start_metrics_and_signals(config: &Config) -> Result<CancellationToken> {
    let shutdown = CancellationToken::new();
    if let Some(addr) = config.telemetry.metrics_addr()? {
        let bound = telemetry::serve_metrics(addr, shutdown.clone()).await?;
        tracing::info!(address = %bound, "metrics at http://{bound}/metrics");
    }
    handle_signals(shutdown.clone());
    Ok(shutdown)
}

/// SIGTERM or Ctrl-C cancels `shutdown` (drain); a second one exits at once.
fn handle_signals(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()),
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("signal received: draining (send another to exit at once)");
        shutdown.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::warn!("second signal: exiting without draining");
        std::process::exit(130);
    });
}

/// Reads a `name=value` argument (`submit --header`, `tasks list --param`); the name
/// must not be empty, the value may.
pub fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{s}` is not `name=value`"))
}

#[cfg(test)]
mod tests {
    use super::parse_pair;

    #[test]
    fn pairs_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_pair("a=b=c"),
            Ok(("a".to_string(), "b=c".to_string()))
        );
        assert_eq!(parse_pair("a="), Ok(("a".to_string(), String::new())));
        assert!(parse_pair("=b").is_err());
        assert!(parse_pair("ab").is_err());
    }
}
