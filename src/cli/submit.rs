//! `tidewater submit`: produces tasks to a function's queue topic.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use tidewater::codec::{Encoding, Task};
use tidewater::config::Config;
use tidewater::submit::Submitter;

use super::parse_pair;

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// Avro, single-object encoding (schemas/task.avsc).
    Avro,
    /// JSON ({"id", "function", "payload", "headers"}).
    Json,
}

#[derive(Args)]
pub struct SubmitArgs {
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
    #[arg(long = "header", value_parser = parse_pair)]
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

/// `tidewater submit`: one task, or `--count` tasks with a progress line.
pub async fn submit(config: Config, args: &SubmitArgs) -> Result<()> {
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
