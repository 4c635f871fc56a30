//! `tidewater tasks …` and `tidewater queues`: the commands that talk to the task query
//! API of `tidewater serve`.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use tidewater::client::ApiClient;
use tidewater::codec::TaskStatus;
use tidewater::config::Config;
use tidewater::store::model::{TaskDetail, TaskLogs, TaskView, rfc3339};

use super::parse_pair;

/// How answers are printed.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// The API's JSON, for scripts.
    Json,
}

#[derive(Args)]
pub struct ApiArgs {
    /// Base URL of the API of `tidewater serve`. Default: `http://` + `api.listen` of the
    /// configuration.
    #[arg(long = "api", env = "TW_API_URL")]
    url: Option<String>,
    /// API token (Bearer).
    #[arg(long, env = "TW_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub(super) output: Output,
}

#[derive(Subcommand)]
pub enum TasksCommand {
    /// List tasks, newest submitted first, filtered and paginated.
    List(ListArgs),
    /// Show one task with its attempts and status events.
    Get(IdArgs),
    /// Print the captured output of a task.
    Logs(IdArgs),
    /// Ask the schedulers to stop a task (recorded on <prefix>.control).
    Stop(IdArgs),
    /// Send failed, expired or stopped tasks through again (by id, by the filters of
    /// `list`, or read from a dead-letter topic over a time or offset range), page by
    /// page, resumable; `--dry-run` only shows what would go.
    Redrive(Box<super::redrive::RedriveArgs>),
}

/// The filters of `GET /v1/tasks`, which `tasks list` and `tasks redrive` share.
#[derive(Args)]
pub struct FilterArgs {
    /// Only these statuses (queued, running, retrying, succeeded, failed, stopped,
    /// expired; a redrive takes failed, expired and stopped, all three by default); repeat
    /// or separate with commas.
    #[arg(long, value_delimiter = ',')]
    pub(super) status: Vec<String>,
    /// Submitted at or after: RFC 3339, or a duration back from now (`24h`).
    #[arg(long)]
    since: Option<String>,
    /// Submitted before: RFC 3339, or a duration back from now.
    #[arg(long)]
    until: Option<String>,
    /// Ids starting with this.
    #[arg(long)]
    prefix: Option<String>,
    /// Only this tenant (an admin token sees all tenants; a tenant token only its own).
    #[arg(long)]
    pub(super) tenant: Option<String>,
    /// Only this function.
    #[arg(long)]
    function: Option<String>,
    /// Any other query parameter of GET /v1/tasks, e.g. `finished_after=2h`; repeatable.
    #[arg(long = "param", value_parser = parse_pair)]
    params: Vec<(String, String)>,
}

impl FilterArgs {
    /// The filters given, as the query parameters of `GET /v1/tasks`.
    pub(super) fn params(&self) -> Vec<(String, String)> {
        let mut params: Vec<(String, String)> = Vec::new();
        if !self.status.is_empty() {
            params.push(("status".into(), self.status.join(",")));
        }
        let opt = [
            ("submitted_after", &self.since),
            ("submitted_before", &self.until),
            ("id_prefix", &self.prefix),
            ("tenant", &self.tenant),
            ("function", &self.function),
        ];
        for (k, v) in opt {
            if let Some(v) = v {
                params.push((k.into(), v.clone()));
            }
        }
        params.extend(self.params.iter().cloned());
        params
    }
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// Page size, 1 to 1000.
    #[arg(long)]
    limit: Option<u32>,
    /// Continue from the cursor printed after a previous page.
    #[arg(long)]
    cursor: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct IdArgs {
    /// Task id.
    id: String,
    /// The task's tenant, when several tenants use the same id (admin tokens).
    #[arg(long)]
    tenant: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct QueuesArgs {
    /// Minutes of per-minute counts to fetch (1 to 1440).
    #[arg(long, default_value_t = 60)]
    minutes: u32,
    #[command(flatten)]
    api: ApiArgs,
}

pub(super) fn client(config_path: &Path, api: &ApiArgs) -> Result<ApiClient> {
    let url = match &api.url {
        Some(u) => u.clone(),
        None => {
            let config = Config::load(config_path).with_context(|| {
                format!(
                    "no --api URL (or TW_API_URL) given, and the configuration {} cannot be read for `api.listen`",
                    config_path.display()
                )
            })?;
            let addr = config.api.listen_addr()?;
            let host = if addr.ip().is_unspecified() {
                if addr.is_ipv4() {
                    "127.0.0.1".to_string()
                } else {
                    "[::1]".to_string()
                }
            } else if addr.is_ipv6() {
                format!("[{}]", addr.ip())
            } else {
                addr.ip().to_string()
            };
            format!("http://{host}:{}", addr.port())
        }
    };
    Ok(ApiClient::new(&url, api.token.clone())?)
}

pub(super) fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

/// Prints rows as aligned columns; the last column is not padded.
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut out = std::io::stdout().lock();
    let line = |cells: Vec<&str>| -> String {
        let last = cells.len().saturating_sub(1);
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c.to_string()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for r in rows {
        writeln!(out, "{}", line(r.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

fn when(ms: Option<i64>) -> String {
    ms.map(rfc3339).unwrap_or_else(|| "-".into())
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        format!("{}…", flat.chars().take(max).collect::<String>())
    } else {
        flat
    }
}

fn task_row(t: &TaskView) -> Vec<String> {
    let detail = match (&t.reason, &t.error) {
        (Some(r), Some(e)) => format!("{}: {}", r.as_str(), one_line(e, 80)),
        (Some(r), None) => r.as_str().to_string(),
        (None, Some(e)) if t.status != TaskStatus::Succeeded => one_line(e, 80),
        _ => String::new(),
    };
    vec![
        t.id.clone(),
        t.tenant.clone(),
        if t.function.is_empty() {
            "-".into()
        } else {
            t.function.clone()
        },
        t.status.as_str().to_string(),
        rfc3339(t.submitted_at),
        t.attempts.to_string(),
        when(t.finished_at),
        detail,
    ]
}

/// `tidewater tasks …`.
pub async fn tasks(config_path: &Path, cmd: &TasksCommand) -> Result<()> {
    match cmd {
        TasksCommand::List(a) => {
            let c = client(config_path, &a.api)?;
            let mut params = a.filter.params();
            if let Some(c) = &a.cursor {
                params.push(("cursor".into(), c.clone()));
            }
            if let Some(l) = a.limit {
                params.push(("limit".into(), l.to_string()));
            }
            let page = c.list(&params).await?;
            if a.api.output == Output::Json {
                return print_json(&page);
            }
            let rows: Vec<Vec<String>> = page.tasks.iter().map(task_row).collect();
            table(
                &[
                    "ID",
                    "TENANT",
                    "FUNCTION",
                    "STATUS",
                    "SUBMITTED",
                    "ATTEMPTS",
                    "FINISHED",
                    "ERROR",
                ],
                &rows,
            )?;
            if let Some(cursor) = &page.next_cursor {
                eprintln!("more: add --cursor {cursor}");
            }
            Ok(())
        }
        TasksCommand::Get(a) => {
            let d = client(config_path, &a.api)?
                .get(&a.id, a.tenant.as_deref())
                .await?;
            answer(a.api.output, &d, print_detail)
        }
        TasksCommand::Logs(a) => {
            let logs = client(config_path, &a.api)?
                .logs(&a.id, a.tenant.as_deref())
                .await?;
            answer(a.api.output, &logs, print_logs)
        }
        TasksCommand::Redrive(a) => super::redrive::redrive(config_path, a).await,
        TasksCommand::Stop(a) => {
            let r = client(config_path, &a.api)?
                .stop(&a.id, a.tenant.as_deref())
                .await?;
            answer(a.api.output, &r, |r| {
                println!(
                    "stop requested for {} ({}) on {}: {}",
                    r.task_id, r.tenant, r.topic, r.note
                );
                Ok(())
            })
        }
    }
}

/// Prints an answer of the API as its JSON, or for people with `human`.
fn answer<T: serde::Serialize>(
    output: Output,
    v: &T,
    human: impl FnOnce(&T) -> Result<()>,
) -> Result<()> {
    match output {
        Output::Json => print_json(v),
        Output::Table => human(v),
    }
}

fn print_logs(logs: &TaskLogs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if logs.logs.is_empty() {
        eprintln!("no output captured for task {}", logs.task_id);
    }
    for l in &logs.logs {
        let run = l
            .redrive_id
            .as_deref()
            .map(|r| format!(" of redrive {r}"))
            .unwrap_or_default();
        writeln!(
            out,
            "--- attempt {}{run} {} at {}{}",
            l.attempt,
            l.stream,
            rfc3339(l.at),
            if l.truncated { " (truncated)" } else { "" }
        )?;
        write!(out, "{}", l.data)?;
        if !l.data.ends_with('\n') {
            writeln!(out)?;
        }
    }
    Ok(())
}

fn print_detail(d: &TaskDetail) -> Result<()> {
    let t = &d.task;
    let mut out = std::io::stdout().lock();
    let fields = [
        ("id", t.id.clone()),
        ("tenant", t.tenant.clone()),
        ("function", t.function.clone()),
        ("status", t.status.as_str().to_string()),
        ("submitted", rfc3339(t.submitted_at)),
        ("started", when(t.started_at)),
        ("finished", when(t.finished_at)),
        ("updated", rfc3339(t.updated_at)),
        ("attempts", t.attempts.to_string()),
        (
            "reason",
            t.reason
                .map(|r| r.as_str().to_string())
                .unwrap_or_else(|| "-".into()),
        ),
        ("error", t.error.clone().unwrap_or_else(|| "-".into())),
        (
            "scheduler",
            t.scheduler_id.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "redrive",
            t.redrive_id.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "queue",
            t.queue
                .as_ref()
                .map(|q| format!("{}[{}]@{}", q.topic, q.partition, q.offset))
                .unwrap_or_else(|| "-".into()),
        ),
    ];
    for (k, v) in fields {
        writeln!(out, "{k:<10} {v}")?;
    }
    drop(out);
    if !d.attempt_history.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = d
            .attempt_history
            .iter()
            .map(|a| {
                vec![
                    match &a.redrive_id {
                        Some(r) => format!("{} ({r})", a.run),
                        None => a.run.to_string(),
                    },
                    a.attempt.to_string(),
                    when(a.started_at),
                    when(a.finished_at),
                    a.result
                        .map(TaskStatus::as_str)
                        .unwrap_or("running")
                        .to_string(),
                    a.scheduler_id.clone().unwrap_or_else(|| "-".into()),
                    a.error
                        .as_deref()
                        .map(|e| one_line(e, 100))
                        .unwrap_or_default(),
                ]
            })
            .collect();
        table(
            &[
                "RUN",
                "ATTEMPT",
                "STARTED",
                "FINISHED",
                "RESULT",
                "SCHEDULER",
                "ERROR",
            ],
            &rows,
        )?;
    }
    Ok(())
}

/// `tidewater queues`.
pub async fn queues(config_path: &Path, args: &QueuesArgs) -> Result<()> {
    if !(1..=1440).contains(&args.minutes) {
        bail!("--minutes must be from 1 to 1440");
    }
    let c = client(config_path, &args.api)?;
    let q = c.queues(Some(args.minutes)).await?;
    if args.api.output == Output::Json {
        return print_json(&q);
    }
    let mut rows = Vec::new();
    for queue in &q.queues {
        let sum = |f: fn(&tidewater::store::model::MinuteCounts) -> u64| -> u64 {
            queue.per_minute.iter().map(f).sum()
        };
        let last = queue.per_minute.last();
        let name = match queue.kind {
            tidewater::store::model::QueueKind::Overflow => format!("{} (overflow)", queue.topic),
            _ => queue.topic.clone(),
        };
        rows.push(vec![
            name,
            "all".into(),
            queue.backlog.to_string(),
            queue.running.to_string(),
            last.map_or(0, |m| m.queued).to_string(),
            sum(|m| m.submitted).to_string(),
            sum(|m| m.completed).to_string(),
            sum(|m| m.failed).to_string(),
        ]);
        for p in &queue.partitions {
            rows.push(vec![
                String::new(),
                p.partition.to_string(),
                p.backlog.to_string(),
                p.running.to_string(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]);
        }
    }
    table(
        &[
            "QUEUE",
            "PARTITION",
            "BACKLOG",
            "RUNNING",
            "QUEUED",
            &format!("SUBMITTED/{}m", args.minutes),
            &format!("COMPLETED/{}m", args.minutes),
            &format!("FAILED/{}m", args.minutes),
        ],
        &rows,
    )?;
    eprintln!(
        "backlog: records not yet committed by the scheduler group {} (a partition whose last record is a transaction marker shows 1)",
        q.group_id
    );
    if !q.schedulers.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = q
            .schedulers
            .iter()
            .map(|s| {
                let parts: Vec<String> = s
                    .partitions
                    .iter()
                    .map(|p| format!("{}[{}]", p.topic, p.partition))
                    .collect();
                vec![
                    s.scheduler_id.clone(),
                    s.tasks_started.to_string(),
                    rfc3339(s.last_started_at),
                    parts.join(" "),
                ]
            })
            .collect();
        table(
            &[
                "SCHEDULER",
                &format!("STARTED/{}m", args.minutes),
                "LAST START",
                "PARTITIONS",
            ],
            &rows,
        )?;
    }
    Ok(())
}
