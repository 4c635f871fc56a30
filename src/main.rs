//! The `tidewater` command: thin wrapper over the library. The commands live in `cli/`,
//! one module each; this file reads the arguments and hands each command its
//! configuration.

mod cli;

/// Records are allocated by the engine and freed by the publisher thread; mimalloc's
/// per-thread free lists handle that at a fraction of glibc malloc's cost (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tidewater_alloc::Allocator = tidewater_alloc::Allocator;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tidewater::config::Config;
use tidewater::telemetry;

use cli::check::ConfigCommand;
use cli::topics::TopicsCommand;

/// Tidewater: a Kafka-native asynchronous task scheduler.
///
/// Producers submit tasks to queue topics (<prefix>.q.<tenant>); `tidewater run` consumes
/// them as a member of the scheduler consumer group, runs each through its function's
/// executor and publishes outcome events to the function's destinations and status events
/// to <prefix>.status.
#[derive(Parser)]
#[command(name = "tidewater", version, propagate_version = true)]
struct Cli {
    /// Configuration file (TOML; see docs/configuration.md).
    #[arg(
        short,
        long,
        global = true,
        env = "TW_CONFIG",
        default_value = "tidewater.toml"
    )]
    config: PathBuf,
    /// Override `kafka.bootstrap_servers` from the configuration.
    #[arg(long, global = true, env = "TW_BOOTSTRAP_SERVERS")]
    bootstrap_servers: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the scheduler until SIGTERM or Ctrl-C (a second signal exits at once).
    Run(cli::run::RunArgs),
    /// Create or inspect the topics the configuration implies.
    #[command(subcommand)]
    Topics(cli::topics::TopicsCommand),
    /// Submit one task, or many with --count.
    Submit(cli::submit::SubmitArgs),
    /// Check a configuration file without connecting to Kafka.
    #[command(subcommand)]
    Config(cli::check::ConfigCommand),
    /// Print the records of a topic (outcomes, status events, tasks) as JSON lines.
    Events(cli::events::EventsArgs),
    /// Run the indexer and the task query API (docs/openapi.yaml) until SIGTERM or Ctrl-C.
    Serve(cli::serve::ServeArgs),
    /// Query, inspect and stop tasks through the API of `tidewater serve`.
    #[command(subcommand)]
    Tasks(cli::tasks::TasksCommand),
    /// Show queue backlogs and recent task counts through the API of `tidewater serve`.
    Queues(cli::tasks::QueuesArgs),
    /// Print the least-privilege Kafka ACLs of a role for a principal (docs/security.md).
    Acl(cli::acl::AclArgs),
}

fn load(cli: &Cli) -> Result<Config> {
    let mut config = Config::load(&cli.config)
        .with_context(|| format!("configuration {}", cli.config.display()))?;
    if let Some(b) = &cli.bootstrap_servers {
        config.kafka.bootstrap_servers = b.clone();
    }
    Ok(config)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(dispatch(cli));
    // Outside the runtime's threads: the last spans are sent on the runtime.
    tidewater::otel::shutdown();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Config(ConfigCommand::Check { file }) => cli::check::check(file),
        Command::Run(args) => {
            let bootstrap = cli.bootstrap_servers.as_deref();
            cli::run::run(load(&cli)?, args, &cli.config, bootstrap).await
        }
        Command::Topics(TopicsCommand::Init { dry_run }) => {
            let config = load(&cli)?;
            telemetry::init(&config.telemetry, "topics")?;
            cli::topics::init(&config, *dry_run).await
        }
        Command::Submit(args) => {
            let config = load(&cli)?;
            telemetry::init(&config.telemetry, "submit")?;
            cli::submit::submit(config, args).await
        }
        Command::Events(args) => {
            let config = load(&cli)?;
            telemetry::init(&config.telemetry, "events")?;
            cli::events::events(config, args.clone()).await
        }
        Command::Serve(args) => cli::serve::serve(load(&cli)?, args).await,
        Command::Tasks(cmd) => cli::tasks::tasks(&cli.config, cmd).await,
        Command::Queues(args) => cli::tasks::queues(&cli.config, args).await,
        Command::Acl(args) => cli::acl::print(&load(&cli)?, args),
    }
}
