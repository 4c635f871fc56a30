//! `POST /v1/tasks/redrive`: sends failed, expired and stopped tasks through again once
//! their cause is fixed.
//!
//! A redrive selects tasks with the filters of `GET /v1/tasks` (a page at a time, with
//! its cursor), by id, or as the tasks whose failures a dead-letter topic holds over a
//! time or offset range (a page of records at a time, with its cursor; see
//! [`dead_letter`]), reads each task's record back from its queue topic, and writes
//! the same task (id, function, payload, headers, key, trace context) to its function's
//! queue, with a new submission time and the `tw-redrive-*` task headers. The scheduler
//! runs it as a new run of the same task; the index shows that run's attempts next to the
//! earlier ones.
//!
//! Idempotent by redrive id: a task a redrive id has submitted is skipped when the same
//! id comes again, as the index tells (it reads the redriven records back) and, until the
//! index has read them, as this process remembers.
//!
//! The parts: [`model`] is the wire format, [`request`] reads a request into a
//! [`Source`](request::Source) (pure), [`dead_letter`] decides what a dead-letter range
//! covers and who may read it (pure), [`scan`] reads such a range from Kafka, [`select`]
//! finds the tasks a source names in the index, and [`run`] decides per task and writes.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiState};
use crate::clock::now_ms;
use crate::codec::TaskStatus;

pub mod dead_letter;
pub mod model;
pub mod request;
pub mod run;
pub mod scan;
pub mod select;

pub use model::{
    DeadLetterPage, DeadLetterRange, OffsetRange, RedriveAction, RedriveItem, RedriveReport,
    RedriveRequest, SkipReason,
};
pub use request::valid_redrive_id;
pub use run::RecentRedrives;

/// The statuses a task can be redriven from.
pub const REDRIVABLE: [TaskStatus; 3] =
    [TaskStatus::Failed, TaskStatus::Expired, TaskStatus::Stopped];

/// Most ids one request may name.
pub const MAX_IDS: usize = 1000;

/// Longest redrive id, in characters.
pub const MAX_REDRIVE_ID: usize = 64;

/// `POST /v1/tasks/redrive`.
pub async fn redrive(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Json<RedriveRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let who = s.auth(&headers)?;
    let Json(req) = body?;
    let redrive_id = request::redrive_id(req.redrive_id.as_deref())?;
    let now = now_ms();
    let source = request::source(&req, now)?;
    let selected = select::select(&s, &who, source).await?;
    let stamp = run::Stamp {
        redrive_id: redrive_id.clone(),
        by: who.name().to_string(),
        at: now,
    };
    let items = run::run(&s, &stamp, selected.found, selected.missing, req.dry_run).await?;
    let mut report = RedriveReport::new(redrive_id, req.dry_run, items, selected.next_cursor);
    report.dead_letter = selected.dead_letter;
    Ok(Json(report).into_response())
}
