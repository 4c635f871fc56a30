//! `tidewater tasks redrive`: sends failed, expired or stopped tasks through again with
//! `POST /v1/tasks/redrive`, one page at a time, printing progress as it goes. An
//! interrupted redrive is resumed with the redrive id and cursor it printed: the same
//! redrive id never submits a task twice.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Result, bail};
use clap::Args;
use tidewater::api::redrive::MAX_IDS;
use tidewater::api::{RedriveAction, RedriveItem, RedriveReport, RedriveRequest};

use super::parse_pair;
use super::tasks::{ApiArgs, Output, client, table};

#[derive(Args)]
pub struct RedriveArgs {
    /// These task ids (repeatable, or separated by commas); without ids, the tasks the
    /// filters below select.
    #[arg(long = "id", value_delimiter = ',')]
    ids: Vec<String>,
    /// Only these statuses: failed, expired, stopped (default: all three).
    #[arg(long, value_delimiter = ',')]
    status: Vec<String>,
    /// Submitted at or after: RFC 3339, or a duration back from now (`24h`).
    #[arg(long)]
    since: Option<String>,
    /// Submitted before: RFC 3339, or a duration back from now.
    #[arg(long)]
    until: Option<String>,
    /// Ids starting with this.
    #[arg(long)]
    prefix: Option<String>,
    /// Only this tenant (with `--id`: the tenant of the ids, for admin tokens).
    #[arg(long)]
    tenant: Option<String>,
    /// Only this function.
    #[arg(long)]
    function: Option<String>,
    /// Any other parameter of GET /v1/tasks, e.g. `finished_after=2h`; repeatable.
    #[arg(long = "param", value_parser = parse_pair)]
    params: Vec<(String, String)>,
    /// Name of the redrive (default: a new ULID, printed). Pass it again to resume or
    /// retry: tasks it already submitted are skipped.
    #[arg(long)]
    redrive_id: Option<String>,
    /// Resume a filtered redrive after this cursor (printed on interruption).
    #[arg(long)]
    cursor: Option<String>,
    /// Tasks per request, 1 to 1000.
    #[arg(long, default_value_t = 100)]
    page_size: u32,
    /// Stop after this many pages.
    #[arg(long)]
    max_pages: Option<u32>,
    /// Only show what would be submitted.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    api: ApiArgs,
}

impl RedriveArgs {
    fn filter(&self) -> BTreeMap<String, String> {
        let mut f = BTreeMap::new();
        if !self.status.is_empty() {
            f.insert("status".to_string(), self.status.join(","));
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
                f.insert(k.to_string(), v.clone());
            }
        }
        f.extend(self.params.iter().cloned());
        f
    }

    /// The first requests of the redrive: one per chunk of ids, or the first page of a
    /// filter (its next pages follow the answers' cursors).
    fn first_requests(&self) -> Result<Vec<RedriveRequest>> {
        let base = RedriveRequest {
            redrive_id: self.redrive_id.clone(),
            dry_run: self.dry_run,
            ..RedriveRequest::default()
        };
        if self.ids.is_empty() {
            return Ok(vec![RedriveRequest {
                filter: Some(self.filter()),
                cursor: self.cursor.clone(),
                limit: Some(self.page_size),
                ..base
            }]);
        }
        let filtered = self.status.len()
            + usize::from(self.since.is_some())
            + usize::from(self.until.is_some())
            + usize::from(self.prefix.is_some())
            + usize::from(self.function.is_some())
            + self.params.len();
        if filtered > 0 || self.cursor.is_some() {
            bail!("--id selects tasks by id: leave out the filters and --cursor");
        }
        Ok(self
            .ids
            .chunks(MAX_IDS)
            .map(|chunk| RedriveRequest {
                ids: Some(chunk.to_vec()),
                tenant: self.tenant.clone(),
                ..base.clone()
            })
            .collect())
    }
}

fn item_row(i: &RedriveItem) -> Vec<String> {
    let action = match i.action {
        RedriveAction::Submitted => "submitted",
        RedriveAction::WouldSubmit => "would submit",
        RedriveAction::Skipped => "skipped",
    };
    let why = match (i.reason, &i.detail) {
        (Some(r), Some(d)) => format!("{}: {d}", r.as_str()),
        (Some(r), None) => r.as_str().to_string(),
        (None, _) => i.topic.clone().unwrap_or_default(),
    };
    vec![
        i.id.clone(),
        i.tenant.clone().unwrap_or_else(|| "-".into()),
        i.function.clone().unwrap_or_else(|| "-".into()),
        i.status
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|| "-".into()),
        action.to_string(),
        why,
    ]
}

/// Totals over the pages of a redrive.
#[derive(Default)]
struct Totals {
    pages: u32,
    submitted: u64,
    skipped: u64,
}

impl Totals {
    fn add(&mut self, r: &RedriveReport) {
        self.pages += 1;
        self.submitted += u64::from(r.submitted);
        self.skipped += u64::from(r.skipped);
    }
}

/// `tidewater tasks redrive`.
pub async fn redrive(config_path: &Path, a: &RedriveArgs) -> Result<()> {
    if !(1..=1000).contains(&a.page_size) {
        bail!("--page-size must be from 1 to 1000");
    }
    let c = client(config_path, &a.api)?;
    let mut queue = a.first_requests()?;
    queue.reverse();
    let mut totals = Totals::default();
    let mut redrive_id = a.redrive_id.clone();
    let verb = if a.dry_run {
        "would submit"
    } else {
        "submitted"
    };
    while let Some(mut req) = queue.pop() {
        if a.max_pages.is_some_and(|m| totals.pages >= m) {
            if let Some(cursor) = &req.cursor {
                eprintln!(
                    "stopped after {} pages; resume with: --redrive-id {} --cursor {cursor}",
                    totals.pages,
                    redrive_id.as_deref().unwrap_or("-")
                );
            }
            break;
        }
        req.redrive_id = redrive_id.clone();
        let report = match c.redrive(&req).await {
            Ok(r) => r,
            Err(e) => {
                if let (Some(id), Some(cursor)) = (&redrive_id, &req.cursor) {
                    eprintln!("interrupted; resume with: --redrive-id {id} --cursor {cursor}");
                } else if let Some(id) = &redrive_id {
                    eprintln!(
                        "interrupted; retry with: --redrive-id {id} (tasks already submitted are skipped)"
                    );
                }
                return Err(e.into());
            }
        };
        if redrive_id.is_none() {
            eprintln!("redrive {}", report.redrive_id);
            redrive_id = Some(report.redrive_id.clone());
        }
        totals.add(&report);
        match a.api.output {
            Output::Json => {
                let mut out = std::io::stdout().lock();
                serde_json::to_writer(&mut out, &report)?;
                writeln!(out)?;
            }
            Output::Table => {
                if !report.tasks.is_empty() {
                    let rows: Vec<Vec<String>> = report.tasks.iter().map(item_row).collect();
                    table(
                        &[
                            "ID",
                            "TENANT",
                            "FUNCTION",
                            "STATUS",
                            "ACTION",
                            "TOPIC / REASON",
                        ],
                        &rows,
                    )?;
                }
            }
        }
        eprintln!(
            "redrive {}: page {}: {verb} {}, skipped {} (total {verb} {}, skipped {})",
            report.redrive_id,
            totals.pages,
            report.submitted,
            report.skipped,
            totals.submitted,
            totals.skipped
        );
        if let Some(next) = report.next_cursor {
            req.cursor = Some(next);
            queue.push(req);
        }
    }
    Ok(())
}
