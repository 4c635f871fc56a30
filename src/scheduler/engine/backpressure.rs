//! Backpressure: fetching from a partition pauses while its buffer (or the process's) is
//! full, and resumes once it has drained to three quarters.

use rdkafka::TopicPartitionList;
use rdkafka::consumer::Consumer;
use tracing::{debug, info, warn};

use super::Engine;
use crate::scheduler::dispatch::Buffered;
use crate::scheduler::offsets::TopicPartition;

impl Engine {
    /// Pauses partitions whose buffer (or the process's) is full; resumes them when it
    /// has drained to three quarters.
    pub(super) fn backpressure(&mut self) {
        let sc = &self.ctx.config.scheduler;
        let total = self.dispatcher.total();
        // While outcomes cannot be made durable, nothing new is fetched: what is held
        // waits, and what is in Kafka stays there.
        let stalled = self.shared.is_stalled();
        if stalled != self.fetch_held {
            self.fetch_held = stalled;
            if stalled {
                warn!("outcomes cannot be made durable: fetching paused until they can");
            } else {
                info!("outcomes are durable again: fetching resumes");
            }
        }
        let process_full = stalled
            || total.count >= sc.max_buffered.get()
            || total.bytes >= sc.max_buffered_bytes.get();
        let process_low = !stalled
            && total.count * 4 <= sc.max_buffered.get() * 3
            && total.bytes * 4 <= sc.max_buffered_bytes.get() * 3;
        let per_full = |b: Buffered| {
            b.count >= sc.max_buffered_per_partition.get()
                || b.bytes >= sc.max_buffered_bytes_per_partition.get()
        };
        let per_low = |b: Buffered| {
            b.count * 4 <= sc.max_buffered_per_partition.get() * 3
                && b.bytes * 4 <= sc.max_buffered_bytes_per_partition.get() * 3
        };
        // Called after every event: look only where something can change, and allocate
        // only for a change.
        let mut to_pause: Vec<TopicPartition> = Vec::new();
        if process_full {
            let tracker = self.shared.tracker();
            if self.paused.len() < tracker.assigned_count() {
                to_pause.extend(
                    tracker
                        .assigned()
                        .filter(|tp| !self.paused.contains(*tp))
                        .cloned(),
                );
            }
        } else {
            to_pause.extend(
                self.dispatcher
                    .partition_buffers()
                    .filter(|(tp, b)| per_full(**b) && !self.paused.contains(*tp))
                    .map(|(tp, _)| tp.clone()),
            );
        }
        let to_resume: Vec<TopicPartition> = if process_low && !self.paused.is_empty() {
            self.paused
                .iter()
                .filter(|tp| per_low(self.dispatcher.buffered(tp)))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        if !to_pause.is_empty() {
            let mut pause = TopicPartitionList::with_capacity(to_pause.len());
            for tp in to_pause {
                let b = self.dispatcher.buffered(&tp);
                let _ = pause.add_partition(&tp.topic, tp.partition);
                debug!(topic = %tp.topic, partition = tp.partition, buffered = b.count, bytes = b.bytes, "buffer full: pausing fetch");
                self.paused.insert(tp);
            }
            if let Err(e) = self.consumer.pause(&pause) {
                debug!(error = %e, "pause failed (partition revoked meanwhile?)");
            }
        }
        if !to_resume.is_empty() {
            let mut resume = TopicPartitionList::with_capacity(to_resume.len());
            for tp in to_resume {
                let _ = resume.add_partition(&tp.topic, tp.partition);
                debug!(topic = %tp.topic, partition = tp.partition, buffered = self.dispatcher.buffered(&tp).count, "buffer drained: resuming fetch");
                self.paused.remove(&tp);
            }
            if let Err(e) = self.consumer.resume(&resume) {
                debug!(error = %e, "resume failed (partition revoked meanwhile?)");
            }
        }
    }
}
