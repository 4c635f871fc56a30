//! `tidewater tasks redrive`: sends failed, expired or stopped tasks through again with
//! `POST /v1/tasks/redrive` (by id, by the filters of `tasks list`, or read from a
//! dead-letter topic over a time or offset range), one page at a time, printing progress
//! as it goes. An interrupted redrive is resumed with the redrive id and cursor it
//! printed: the same redrive id never submits a task twice.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Result, bail};
use clap::Args;
use tidewater::api::redrive::{DeadLetterRange, MAX_IDS, OffsetRange};
use tidewater::api::{RedriveAction, RedriveItem, RedriveReport, RedriveRequest};
use tidewater::clock::now_ms;
use tidewater::store::query::parse_time;

use super::tasks::{ApiArgs, FilterArgs, Output, client, table};

#[derive(Args)]
pub struct RedriveArgs {
    /// These task ids (repeatable, or separated by commas); without ids, the tasks the
    /// filters below select (or `--dead-letter-topic` names). With `--tenant`: the ids'
    /// tenant, for admin tokens.
    #[arg(long = "id", value_delimiter = ',')]
    ids: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Read the tasks from this dead-letter topic (a tenant's `dead_letter` or a
    /// function's `on_failure` topic): those whose failures it holds in the range that
    /// `--from-time`, `--to-time` and `--offsets` give (default: all of it). With
    /// `--tenant`: only that tenant's records (admin tokens).
    #[arg(long, value_name = "TOPIC", conflicts_with = "ids")]
    dead_letter_topic: Option<String>,
    /// From the first record at or after this time: RFC 3339, or a duration back from now.
    #[arg(long, value_name = "TIME", requires = "dead_letter_topic")]
    from_time: Option<String>,
    /// Up to the last record before this time: RFC 3339, or a duration back from now.
    #[arg(long, value_name = "TIME", requires = "dead_letter_topic")]
    to_time: Option<String>,
    /// Only these partitions and offsets: `P:FIRST-LAST` (both inclusive), `P:FIRST-`,
    /// `P:-LAST`, or `P` for all of partition P; repeatable, or separated by commas.
    #[arg(
        long,
        value_name = "P:FIRST-LAST",
        value_delimiter = ',',
        value_parser = parse_offsets,
        requires = "dead_letter_topic"
    )]
    offsets: Vec<(i32, OffsetRange)>,
    /// Name of the redrive (default: a new ULID, printed). Pass it again to resume or
    /// retry: tasks it already submitted are skipped.
    #[arg(long)]
    redrive_id: Option<String>,
    /// Resume a filtered or dead-letter redrive after this cursor (printed on
    /// interruption).
    #[arg(long)]
    cursor: Option<String>,
    /// Tasks (or dead-letter records) per request, 1 to 1000.
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

/// Reads `P`, `P:FIRST-LAST`, `P:FIRST-` or `P:-LAST`: a partition and its offsets, both
/// inclusive.
pub fn parse_offsets(s: &str) -> Result<(i32, OffsetRange), String> {
    let wrong = || format!("`{s}` is not `P:FIRST-LAST` (a partition and offsets, both inclusive)");
    let number = |v: &str| v.parse::<i64>().ok().filter(|n| *n >= 0);
    let (p, range) = s.split_once(':').unwrap_or((s, "-"));
    let partition: i32 = p.parse().ok().filter(|p| *p >= 0).ok_or_else(wrong)?;
    let (first, last) = range.split_once('-').ok_or_else(wrong)?;
    let bound = |v: &str| match v {
        "" => Ok(None),
        v => number(v).map(Some).ok_or_else(wrong),
    };
    let r = OffsetRange {
        from_offset: bound(first)?,
        to_offset: bound(last)?,
    };
    if let (Some(a), Some(b)) = (r.from_offset, r.to_offset) {
        if a > b {
            return Err(format!(
                "in `{s}` the first offset {a} is after the last {b}"
            ));
        }
    }
    Ok((partition, r))
}

impl RedriveArgs {
    /// The first requests of the redrive: one per chunk of ids, or the first page of a
    /// filter or dead-letter range (its next pages follow the answers' cursors).
    fn first_requests(&self) -> Result<Vec<RedriveRequest>> {
        let base = RedriveRequest {
            redrive_id: self.redrive_id.clone(),
            dry_run: self.dry_run,
            ..RedriveRequest::default()
        };
        let filters = self.filter.params();
        let beyond_tenant = filters.iter().any(|(k, _)| k != "tenant");
        if let Some(topic) = &self.dead_letter_topic {
            if beyond_tenant {
                bail!(
                    "--dead-letter-topic reads its tasks from the topic: leave out the filters (except --tenant)"
                );
            }
            return Ok(vec![RedriveRequest {
                dead_letter: Some(self.dead_letter(topic)?),
                tenant: self.filter.tenant.clone(),
                cursor: self.cursor.clone(),
                limit: Some(self.page_size),
                ..base
            }]);
        }
        if self.ids.is_empty() {
            return Ok(vec![RedriveRequest {
                filter: Some(filters.into_iter().collect::<BTreeMap<_, _>>()),
                cursor: self.cursor.clone(),
                limit: Some(self.page_size),
                ..base
            }]);
        }
        if beyond_tenant || self.cursor.is_some() {
            bail!("--id selects tasks by id: leave out the filters (except --tenant) and --cursor");
        }
        Ok(self
            .ids
            .chunks(MAX_IDS)
            .map(|chunk| RedriveRequest {
                ids: Some(chunk.to_vec()),
                tenant: self.filter.tenant.clone(),
                ..base.clone()
            })
            .collect())
    }

    /// The dead-letter range the arguments give, checked as far as the command can.
    fn dead_letter(&self, topic: &str) -> Result<DeadLetterRange> {
        let now = now_ms();
        let time = |flag: &str, v: &Option<String>| -> Result<Option<i64>> {
            v.as_deref()
                .map(|t| parse_time(t, now).map_err(|e| anyhow::anyhow!("{flag}: {e}")))
                .transpose()
        };
        let from = time("--from-time", &self.from_time)?;
        let to = time("--to-time", &self.to_time)?;
        if let (Some(f), Some(t)) = (from, to) {
            if f >= t {
                bail!("--from-time must be before --to-time");
            }
        }
        let mut partitions = BTreeMap::new();
        for (p, r) in &self.offsets {
            if partitions.insert(p.to_string(), *r).is_some() {
                bail!("--offsets names partition {p} twice");
            }
        }
        Ok(DeadLetterRange {
            topic: topic.to_string(),
            from_time: self.from_time.clone(),
            to_time: self.to_time.clone(),
            partitions: (!partitions.is_empty()).then_some(partitions),
        })
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
        let read = report
            .dead_letter
            .as_ref()
            .map(|d| {
                format!(
                    "read {} records of {} ({} passed over), ",
                    d.records, d.topic, d.passed_over
                )
            })
            .unwrap_or_default();
        eprintln!(
            "redrive {}: page {}: {read}{verb} {}, skipped {} (total {verb} {}, skipped {})",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_name_a_partition_and_an_inclusive_range() {
        let r = |a: Option<i64>, b: Option<i64>| OffsetRange {
            from_offset: a,
            to_offset: b,
        };
        assert_eq!(parse_offsets("0:3-7"), Ok((0, r(Some(3), Some(7)))));
        assert_eq!(parse_offsets("2:5-"), Ok((2, r(Some(5), None))));
        assert_eq!(parse_offsets("2:-5"), Ok((2, r(None, Some(5)))));
        assert_eq!(parse_offsets("4"), Ok((4, r(None, None))));
        assert_eq!(parse_offsets("1:4-4"), Ok((1, r(Some(4), Some(4)))));
        let e = parse_offsets("0:7-3").unwrap_err();
        assert!(e.contains("first offset 7 is after the last 3"), "{e}");
        for bad in [
            "", "x", "-1:0-1", "0:1", "0:a-2", "0:1-2-3", "0:-1-2", ":1-2",
        ] {
            assert!(parse_offsets(bad).is_err(), "{bad}");
        }
    }
}
