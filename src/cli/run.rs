//! `tidewater run`: the scheduler, in this process or (`--replicas`) as supervised child
//! processes that follow the scaling controller.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use tidewater::config::Config;
use tidewater::executor::Handlers;
use tidewater::scale;
use tidewater::scheduler::Scheduler;
use tidewater::telemetry;

use super::start_metrics_and_signals;

#[derive(Args)]
pub struct RunArgs {
    /// Override `telemetry.metrics_listen` (`host:port`, or `off`).
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Supervise scheduler processes on this host instead of scheduling in-process:
    /// `auto` follows the controller's desired count (see docs/scaling.md), a number pins
    /// it (0 runs the controller alone). This process runs the controller role.
    #[arg(long, value_parser = parse_replicas)]
    replicas: Option<Replicas>,
    /// With --replicas auto: most scheduler processes to run (overrides
    /// `scale.max_replicas`).
    #[arg(long, requires = "replicas")]
    max_replicas: Option<u32>,
}

#[derive(Clone, Copy)]
enum Replicas {
    Auto,
    Pinned(u32),
}

fn parse_replicas(s: &str) -> Result<Replicas, String> {
    if s == "auto" {
        return Ok(Replicas::Auto);
    }
    s.parse()
        .map(Replicas::Pinned)
        .map_err(|_| format!("`{s}` is not `auto` or a number of replicas"))
}

/// `tidewater run`: the scheduler in this process, or with `--replicas` the controller
/// and scheduler processes under it. `config_path` and `bootstrap_servers` are passed on
/// to those processes.
pub async fn run(
    mut config: Config,
    args: &RunArgs,
    config_path: &Path,
    bootstrap_servers: Option<&str>,
) -> Result<()> {
    if let Some(l) = &args.metrics_listen {
        config.telemetry.metrics_listen = l.clone();
        config.validate()?;
    }
    match args.replicas {
        None => run_scheduler(config).await,
        Some(replicas) => {
            if let Some(max) = args.max_replicas {
                if max == 0 {
                    bail!("--max-replicas must be at least 1");
                }
                config.scale.max_replicas = max;
                config.scale.min_replicas = config.scale.min_replicas.min(max);
            }
            supervise(config, config_path, bootstrap_servers, replicas).await
        }
    }
}

/// `tidewater run --replicas`: the controller in this process, schedulers as children.
async fn supervise(
    config: Config,
    config_path: &Path,
    bootstrap_servers: Option<&str>,
    replicas: Replicas,
) -> Result<()> {
    telemetry::init(&config.telemetry, "supervisor")?;
    let shutdown = start_metrics_and_signals(&config).await?;
    let mut args: Vec<std::ffi::OsString> = vec!["--config".into(), config_path.into()];
    if let Some(b) = bootstrap_servers {
        args.extend(["--bootstrap-servers".into(), b.into()]);
    }
    // Children are plain in-process schedulers, each with its metrics on the port after
    // the supervisor's plus its slot (see ChildSpec::metrics).
    args.push("run".into());
    let spec = scale::supervisor::ChildSpec {
        program: std::env::current_exe()
            .context("cannot find this program to start schedulers")?
            .into(),
        args,
        metrics: config.telemetry.metrics_addr()?,
    };
    let stop_timeout = config.scheduler.shutdown_grace + Duration::from_secs(15);
    let max = config.scale.max_replicas;
    let controller = scale::controller::start(Arc::new(config), shutdown.clone())?;
    let target = match replicas {
        Replicas::Pinned(n) => scale::supervisor::Target::Pinned(n),
        Replicas::Auto => scale::supervisor::Target::Auto {
            desired: controller.desired.clone(),
            max,
        },
    };
    let supervised =
        scale::supervisor::supervise(spec, target, stop_timeout, shutdown.clone()).await;
    shutdown.cancel();
    let stopped = tokio::task::spawn_blocking(move || controller.join()).await?;
    supervised?;
    stopped?;
    Ok(())
}

/// `tidewater run`: one scheduler in this process.
async fn run_scheduler(config: Config) -> Result<()> {
    telemetry::init(&config.telemetry, "scheduler")?;
    // Started by a supervisor: stop with it, even if it is killed.
    scale::supervisor::adopt_parent_death_signal();
    let shutdown = start_metrics_and_signals(&config).await?;
    let summary = Scheduler::new(config, Handlers::builtin())
        .run(shutdown.clone())
        .await?;
    shutdown.cancel();
    if summary.abandoned > 0 {
        tracing::warn!(
            abandoned = summary.abandoned,
            "tasks still running at the end of the grace period will run again"
        );
    }
    Ok(())
}
