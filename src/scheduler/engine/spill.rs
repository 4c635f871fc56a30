//! The engine's side of spilling ([`crate::scheduler::spill`]): forwarding a task to its
//! function's overflow queue in the unit that completes its shared-queue offset, and
//! re-evaluating which functions spill.

use std::time::Instant;

use metrics::{counter, gauge};
use tracing::{error, info};

use super::super::dispatch::Held;
use super::super::out_record::{OutRecord, Place};
use super::super::records::{redrive_of, status_event, status_record};
use super::super::spill::{Change, Overflow};
use super::{Engine, Published, done_ref};
use crate::codec::{SourceView, TaskStatus};
use crate::names::{headers as h, metrics as m};
use crate::otel;

use super::super::Job;

impl Engine {
    /// Forwards `entry` when its function spills (or starts to now); else hands it back.
    pub(super) fn spill_or_keep(&mut self, entry: Box<Job>) -> Option<Box<Job>> {
        let f = entry.f.clone();
        if f.shared_queue.as_deref() != Some(&*entry.record.tp.topic) {
            return Some(entry);
        }
        let held = self.dispatcher.held_by(&entry.record.tp, f.id);
        let key_held = entry
            .key()
            .is_some_and(|k| self.dispatcher.key_held(&entry.record.tp, k));
        let Some((overflow, change)) = self.spill.route(f.id, held, key_held) else {
            return Some(entry);
        };
        let overflow = overflow.clone();
        if change.is_some() {
            info!(tenant = %f.tenant, function = %f.name, held, overflow = %overflow.topic,
                "function spills: its further tasks from the shared queue go to its overflow queue");
            gauge!(m::FUNCTION_SPILLING, m::L_TENANT => f.labels.0.clone(), m::L_FUNCTION => f.labels.1.clone())
                .set(1.0);
        }
        counter!(m::TASKS_SPILLED, m::L_TENANT => f.labels.0.clone(), m::L_FUNCTION => f.labels.1.clone())
            .increment(1);
        self.forward(entry, &overflow);
        None
    }

    /// The task's record, as read, to the overflow queue, with a `queued` status event
    /// naming where it waits now; durable together with its shared offset.
    fn forward(&mut self, job: Box<Job>, overflow: &Overflow) {
        let partition = overflow.partition_for(job.record.tp.partition);
        let record = &job.record;
        let key = record
            .key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
            .unwrap_or(&job.task_id);
        let content_type = record.content_type.as_deref();
        let traceparent = job.traceparent();
        let from = format!(
            "{}/{}/{}",
            record.tp.topic, record.tp.partition, record.offset
        );
        let room = [content_type, traceparent, Some(&from)]
            .into_iter()
            .flatten()
            .map(str::len)
            .fold(0, usize::saturating_add);
        let topic = overflow.topic.as_str().into();
        let mut forwarded = OutRecord::new(topic, record.value.to_vec(), key, room);
        forwarded
            .header_opt(h::CONTENT_TYPE, content_type)
            .header_opt(h::TRACEPARENT, traceparent);
        if record.ordered {
            forwarded.fixed(h::ORDERED, "true");
        }
        forwarded.header(h::SPILLED_FROM, &from);
        let mut records = vec![forwarded.placed(Place {
            partition,
            timestamp: record.timestamp(),
        })];
        let mut waiting = job.task();
        waiting.source = SourceView {
            topic: &overflow.topic,
            partition,
            offset: -1,
        };
        let ev = status_event(&self.ctx, &waiting, TaskStatus::Queued, 0, (None, None));
        records.extend(status_record(&self.ctx, &ev, redrive_of(&waiting)));
        otel::finish_process(job.span.get(), "spilled", None);
        self.dispatcher.account(&job);
        let done = done_ref(&job);
        self.send_unit(records, done, Published::Forwarded(job));
    }

    /// A forwarded task's unit is durable, or was given up with its partition.
    pub(super) fn on_forwarded(&mut self, entry: &Job) {
        self.dispatcher.unaccount(entry);
        self.spill.forwarded(entry.f.id, Instant::now());
    }

    /// Ends spilling for the functions whose backlog is gone (called on the commit tick).
    pub(super) fn review_spill(&mut self) {
        if !self.spill.any() {
            self.spill_active
                .store(false, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        self.spill_active
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let seen = match self.spill_seen.lock() {
            Ok(s) => s.clone(),
            Err(_) => {
                error!("the overflow watcher failed; spilling functions keep spilling");
                return;
            }
        };
        let shared: Vec<(usize, String)> = self
            .ctx
            .functions
            .iter()
            .filter_map(|f| f.shared_queue.clone().map(|q| (f.id, q)))
            .collect();
        let held = |id: usize| {
            shared
                .iter()
                .filter(|(f, _)| *f == id)
                .map(|(_, q)| self.dispatcher.held_from(id, |tp| *tp.topic == **q))
                .sum()
        };
        for change in self.spill.review(held, seen.as_ref()) {
            let Change::Stopped(id) = change else {
                continue;
            };
            if let Some(f) = self.ctx.functions.iter().find(|f| f.id == id) {
                info!(tenant = %f.tenant, function = %f.name,
                    "function stops spilling: its overflow queue is drained");
                gauge!(m::FUNCTION_SPILLING, m::L_TENANT => f.labels.0.clone(), m::L_FUNCTION => f.labels.1.clone())
                    .set(0.0);
            }
        }
    }
}
