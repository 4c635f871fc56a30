//! The engine's gauges, set at every commit tick: what the scheduler holds in memory,
//! each function's queue and limit, and the age of the oldest waiting task of each
//! assigned queue partition.

use metrics::gauge;

use super::Engine;
use crate::clock::now_ms;
use crate::names::metrics as m;

impl Engine {
    pub(super) fn export_gauges(&mut self) {
        let total = self.dispatcher.total();
        gauge!(m::BUFFERED_TASKS).set(total.count as f64);
        gauge!(m::BUFFERED_BYTES).set(total.bytes as f64);
        gauge!(m::PARTITIONS_PAUSED).set(self.paused.len() as f64);
        gauge!(m::TASKS_DELAYED).set(self.retries.len() as f64);
        for f in self.ctx.functions.iter() {
            let (t, fname) = f.labels.clone();
            gauge!(m::CONCURRENCY_LIMIT, m::L_TENANT => t.clone(), m::L_FUNCTION => fname.clone())
                .set(f64::from(f.cfg.concurrency.get()));
            gauge!(m::TASKS_QUEUED, m::L_TENANT => t, m::L_FUNCTION => fname)
                .set(self.dispatcher.queued(f.id) as f64);
        }
        let mut queues = self.shared.tracker().partitions();
        queues.retain(|tp| !self.ctx.is_delay_topic(&tp.topic));
        self.dispatcher.waiting().export(queues, now_ms());
    }
}
