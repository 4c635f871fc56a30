//! The `tidewater` command: thin wrapper over the library.

mod cli_tasks;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use tidewater::codec::{self, Encoding, Task};
use tidewater::config::Config;
use tidewater::executor::Handlers;
use tidewater::kafka::{self, TopicState};
use tidewater::names::headers as h;
use tidewater::scale;
use tidewater::scheduler::Scheduler;
use tidewater::submit::Submitter;
use tidewater::telemetry;
use tokio_util::sync::CancellationToken;

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
    Run(RunArgs),
    /// Create or inspect the topics the configuration implies.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Submit one task, or many with --count.
    Submit(SubmitArgs),
    /// Check a configuration file without connecting to Kafka.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print the records of a topic (outcomes, status events, tasks) as JSON lines.
    Events(EventsArgs),
    /// Run the indexer and the task query API (docs/openapi.yaml) until SIGTERM or Ctrl-C.
    Serve(cli_tasks::ServeArgs),
    /// Query, inspect and stop tasks through the API of `tidewater serve`.
    #[command(subcommand)]
    Tasks(cli_tasks::TasksCommand),
    /// Show queue backlogs and recent task counts through the API of `tidewater serve`.
    Queues(cli_tasks::QueuesArgs),
}

#[derive(Args)]
struct RunArgs {
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

#[derive(Subcommand)]
enum TopicsCommand {
    /// Create every queue, status and destination topic that does not exist yet.
    /// Safe to re-run: existing topics are left as they are.
    Init {
        /// Only list what would be created.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate FILE: exit 0 when it is usable, else print the field at fault and exit 1.
    Check {
        /// The file to check.
        file: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Avro, single-object encoding (schemas/task.avsc).
    Avro,
    /// JSON ({"id", "function", "payload", "headers"}).
    Json,
}

#[derive(Args)]
struct SubmitArgs {
    /// Tenant that owns the function.
    #[arg(short, long)]
    tenant: String,
    /// Function to run.
    #[arg(short, long)]
    function: String,
    /// Task id (default: a new ULID). With --count, ids are `<id>-<n>`.
    #[arg(long)]
    id: Option<String>,
    /// Payload text. With --count, the text {{n}} is replaced by each task's number (from 0).
    #[arg(short, long, conflicts_with = "payload_file")]
    payload: Option<String>,
    /// Read the payload from a file (`-` for stdin).
    #[arg(long)]
    payload_file: Option<PathBuf>,
    /// Header `name=value` carried to the outcome event; repeatable.
    #[arg(long = "header", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Number of tasks to submit.
    #[arg(short = 'n', long, default_value_t = 1)]
    count: u64,
    /// Record encoding.
    #[arg(long, value_enum, default_value_t = Format::Avro)]
    format: Format,
    /// Submit even if the function is not configured (it will fail as unknown_function).
    #[arg(long)]
    allow_unknown: bool,
    /// Run no earlier than this long from now (e.g. 30s, 5m); the task waits in a delay topic.
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "at")]
    delay: Option<Duration>,
    /// Run no earlier than this time (RFC 3339, e.g. 2026-12-01T09:00:00Z).
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    at: Option<std::time::SystemTime>,
}

#[derive(Args)]
struct EventsArgs {
    /// Topic to read (an outcome destination, <prefix>.status, a queue).
    topic: String,
    /// Stop after this many records.
    #[arg(long)]
    max: Option<u64>,
    /// Stop when no record arrived for this long.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    idle: Duration,
    /// One short line per record (task id, status, function, result or error) instead of JSON.
    #[arg(long)]
    brief: bool,
}

/// One line for people: `task_id  status  function  result|error`.
fn brief_line(v: &serde_json::Value) -> String {
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("");
    let id = [s("task_id"), s("id")]
        .into_iter()
        .find(|x| !x.is_empty())
        .unwrap_or("-");
    let status = match s("kind") {
        "task" => "queued",
        _ => s("status"),
    };
    let detail = match (s("error"), s("reason")) {
        ("", _) => s("result").trim_end().replace('\n', " "),
        (e, r) => format!("{r}: {e}"),
    };
    format!("{id}  {status}  {}  {detail}", s("function"))
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{s}` is not `name=value`"))
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
    match rt.block_on(dispatch(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Config(ConfigCommand::Check { file }) => {
            let config = Config::load(file)?;
            // The binary knows only the built-in handlers: a name it lacks would stop
            // `tidewater run` at start, so say so now.
            let handlers = Handlers::builtin();
            for (tname, tenant) in &config.tenants {
                for (fname, f) in &tenant.functions {
                    if let tidewater::config::ExecutorConfig::Inprocess { handler } = &f.executor {
                        if handlers.get(handler).is_none() {
                            bail!(
                                "invalid `tenants.{tname}.functions.{fname}.executor.handler`: no in-process handler `{handler}` in this binary (built in: noop, echo, fail)"
                            );
                        }
                    }
                }
            }
            let functions: usize = config.tenants.values().map(|t| t.functions.len()).sum();
            println!(
                "{}: ok ({} tenants, {} functions, {} topics)",
                file.display(),
                config.tenants.len(),
                functions,
                kafka::topic_specs(&config).len()
            );
            Ok(())
        }
        Command::Run(args) => {
            let mut config = load(&cli)?;
            if let Some(l) = &args.metrics_listen {
                config.telemetry.metrics_listen = l.clone();
                config.validate()?;
            }
            match args.replicas {
                None => run(config).await,
                Some(replicas) => {
                    if let Some(max) = args.max_replicas {
                        if max == 0 {
                            bail!("--max-replicas must be at least 1");
                        }
                        config.scale.max_replicas = max;
                        config.scale.min_replicas = config.scale.min_replicas.min(max);
                    }
                    supervise(config, &cli, replicas).await
                }
            }
        }
        Command::Topics(TopicsCommand::Init { dry_run }) => {
            let config = load(&cli)?;
            telemetry::init_logging(config.telemetry.log_format);
            topics_init(&config, *dry_run).await
        }
        Command::Submit(args) => {
            let config = load(&cli)?;
            telemetry::init_logging(config.telemetry.log_format);
            submit(config, args).await
        }
        Command::Events(args) => {
            let config = load(&cli)?;
            telemetry::init_logging(config.telemetry.log_format);
            events(&config, args)
        }
        Command::Serve(args) => cli_tasks::serve(load(&cli)?, args).await,
        Command::Tasks(cmd) => cli_tasks::tasks(&cli.config, cmd).await,
        Command::Queues(args) => cli_tasks::queues(&cli.config, args).await,
    }
}

/// `tidewater run --replicas`: the controller in this process, schedulers as children.
async fn supervise(config: Config, cli: &Cli, replicas: Replicas) -> Result<()> {
    telemetry::init_logging(config.telemetry.log_format);
    let shutdown = CancellationToken::new();
    if let Some(addr) = config.telemetry.metrics_addr()? {
        let bound = telemetry::serve_metrics(addr, shutdown.clone()).await?;
        tracing::info!(address = %bound, "metrics at http://{bound}/metrics");
    }
    handle_signals(shutdown.clone());
    let mut args: Vec<std::ffi::OsString> = vec!["--config".into(), cli.config.clone().into()];
    if let Some(b) = &cli.bootstrap_servers {
        args.extend(["--bootstrap-servers".into(), b.into()]);
    }
    // Children are plain in-process schedulers; their metrics on a free port each.
    args.extend([
        "run".into(),
        "--metrics-listen".into(),
        "127.0.0.1:0".into(),
    ]);
    let spec = scale::supervisor::ChildSpec {
        program: std::env::current_exe()
            .context("cannot find this program to start schedulers")?
            .into(),
        args,
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

/// SIGTERM or Ctrl-C cancels `shutdown` (drain); a second one exits at once.
pub(crate) fn handle_signals(shutdown: CancellationToken) {
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

async fn run(config: Config) -> Result<()> {
    telemetry::init_logging(config.telemetry.log_format);
    // Started by a supervisor: stop with it, even if it is killed.
    scale::supervisor::adopt_parent_death_signal();
    let shutdown = CancellationToken::new();
    if let Some(addr) = config.telemetry.metrics_addr()? {
        let bound = telemetry::serve_metrics(addr, shutdown.clone()).await?;
        tracing::info!(address = %bound, "metrics at http://{bound}/metrics");
    }
    handle_signals(shutdown.clone());
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

async fn topics_init(config: &Config, dry_run: bool) -> Result<()> {
    if dry_run {
        let existing = {
            let c = config.clone();
            tokio::task::spawn_blocking(move || kafka::existing_topics(&c)).await??
        };
        for spec in kafka::topic_specs(config) {
            let state = if existing.contains_key(&spec.name) {
                "exists"
            } else {
                "would create"
            };
            println!(
                "{:<14} {} ({} partitions)",
                state, spec.name, spec.partitions
            );
        }
        return Ok(());
    }
    let report = kafka::init_topics(config).await?;
    let mut created = 0;
    for (spec, state) in &report {
        match state {
            TopicState::Created => {
                created += 1;
                println!("created  {} ({} partitions)", spec.name, spec.partitions);
            }
            TopicState::Existed(n) => println!("exists   {} ({n} partitions)", spec.name),
        }
    }
    println!(
        "{created} created, {} already there",
        report.len() - created
    );
    Ok(())
}

async fn submit(config: Config, args: &SubmitArgs) -> Result<()> {
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    let payload: String = match (&args.payload, &args.payload_file) {
        (Some(p), _) => p.clone(),
        (None, Some(path)) if path.as_os_str() == "-" => {
            std::io::read_to_string(std::io::stdin()).context("reading the payload from stdin")?
        }
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the payload from {}", path.display()))?,
        (None, None) => String::new(),
    };
    let encoding = match args.format {
        Format::Avro => Encoding::Avro,
        Format::Json => Encoding::Json,
    };
    let config = Arc::new(config);
    let submitter = Submitter::new(config.clone(), encoding)?.allow_unknown(args.allow_unknown);
    let topic = submitter.topic_for(&args.tenant, &args.function)?;
    let headers: std::collections::BTreeMap<String, String> =
        args.headers.iter().cloned().collect();
    let not_before = match (args.delay, args.at) {
        (Some(d), _) => {
            Some(tidewater::clock::now_ms() + i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        }
        (None, Some(t)) => Some(
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .context("--at is before 1970")?,
        ),
        (None, None) => None,
    };
    let make = |n: u64| Task {
        id: match (&args.id, args.count) {
            (Some(id), 1) => id.clone(),
            (Some(id), _) => format!("{id}-{n}"),
            (None, _) => ulid::Ulid::new().to_string(),
        },
        tenant: Some(args.tenant.clone()),
        function: args.function.clone(),
        payload: payload.replace("{n}", &n.to_string()).into_bytes(),
        headers: headers.clone(),
        submitted_at: Some(tidewater::clock::now_ms()),
        not_before,
    };
    if args.count == 1 {
        let task = make(0);
        let (partition, offset) = submitter.submit(&args.tenant, &task).await?;
        println!("submitted {} to {topic}[{partition}]@{offset}", task.id);
        return Ok(());
    }
    let started = Instant::now();
    let total = args.count;
    let tty = std::io::stderr().is_terminal();
    let mut last_print = Instant::now();
    let report = submitter
        .submit_many(&args.tenant, (0..total).map(make), |r| {
            let done = r.submitted + r.failed;
            if done < total
                && last_print.elapsed() < Duration::from_millis(if tty { 100 } else { 2000 })
            {
                return;
            }
            last_print = Instant::now();
            let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-3);
            let width = 30usize;
            let filled = usize::try_from(done * width as u64 / total).unwrap_or(width);
            let line = format!(
                "[{}{}] {done}/{total} ({:.0}%) {rate:.0} tasks/s{}",
                "#".repeat(filled),
                "-".repeat(width - filled.min(width)),
                done as f64 * 100.0 / total as f64,
                if r.failed > 0 {
                    format!(", {} failed", r.failed)
                } else {
                    String::new()
                },
            );
            let mut err = std::io::stderr();
            if tty {
                let _ = write!(err, "\r{line}");
                if done == total {
                    let _ = writeln!(err);
                }
            } else {
                let _ = writeln!(err, "{line}");
            }
        })
        .await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "submitted {} tasks to {topic} in {secs:.2}s ({:.0} tasks/s); {} failed",
        report.submitted,
        report.submitted as f64 / secs.max(1e-3),
        report.failed
    );
    if report.failed > 0 {
        bail!("{} tasks were not acknowledged by Kafka", report.failed);
    }
    Ok(())
}

/// Renders one record as JSON: outcome and status events decoded, tasks decoded, anything
/// else as text.
fn record_json(msg: &rdkafka::message::BorrowedMessage<'_>) -> serde_json::Value {
    let value = msg.payload().unwrap_or_default();
    let mut event = None;
    let mut content_type = None;
    if let Some(hs) = msg.headers() {
        for hd in hs.iter() {
            let v = hd.value.and_then(|v| std::str::from_utf8(v).ok());
            if hd.key == h::EVENT {
                event = v;
            } else if hd.key == h::CONTENT_TYPE {
                content_type = v;
            }
        }
    }
    let text = |b: &[u8]| serde_json::Value::String(codec::text(b));
    let mut out = match event {
        Some(h::EVENT_OUTCOME) => match codec::decode_outcome(value) {
            Ok(o) => {
                let mut v = codec::outcome_json(&o);
                v["kind"] = "outcome".into();
                v
            }
            Err(e) => serde_json::json!({"kind": "undecodable", "error": e.to_string()}),
        },
        Some(h::EVENT_STATUS) => match codec::decode_status(value) {
            Ok(s) => {
                let mut v = serde_json::to_value(&s).unwrap_or_default();
                v["kind"] = "status".into();
                v
            }
            Err(e) => serde_json::json!({"kind": "undecodable", "error": e.to_string()}),
        },
        _ => match codec::decode_task(value, content_type) {
            Ok(t) => {
                let payload = text(&t.payload);
                let mut v = serde_json::to_value(&t).unwrap_or_default();
                v["payload"] = payload;
                v["kind"] = "task".into();
                v
            }
            Err(_) => serde_json::json!({"kind": "raw", "value": codec::text(value)}),
        },
    };
    out["_topic"] = msg.topic().into();
    out["_partition"] = msg.partition().into();
    out["_offset"] = msg.offset().into();
    out
}

fn events(config: &Config, args: &EventsArgs) -> Result<()> {
    let mut cc = kafka::client_config(config);
    cc.set("group.id", format!("{}.events-cli", config.topics.prefix));
    cc.set("enable.auto.commit", "false");
    cc.set("isolation.level", "read_committed");
    let consumer: BaseConsumer = cc.create()?;
    let md = consumer.fetch_metadata(Some(&args.topic), kafka::ADMIN_TIMEOUT)?;
    let partitions: Vec<i32> = md
        .topics()
        .first()
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        bail!("topic {} does not exist", args.topic);
    }
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(&args.topic, p, rdkafka::Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut seen = 0u64;
    let mut last = Instant::now();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    while args.max.is_none_or(|m| seen < m) && last.elapsed() < args.idle {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(msg)) => {
                seen += 1;
                last = Instant::now();
                let json = record_json(&msg);
                let line = if args.brief {
                    brief_line(&json)
                } else {
                    json.to_string()
                };
                if let Err(e) = writeln!(out, "{line}") {
                    // The reader went away (`| head`): that is the end, not an error.
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        return Ok(());
                    }
                    return Err(e.into());
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            None => {}
        }
    }
    Ok(())
}
