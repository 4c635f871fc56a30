//! Stop requests: every scheduler reads all of `<prefix>.control` (no consumer group) and
//! remembers recent stop requests, so a running task is cancelled and a queued or delayed
//! one is skipped when its turn comes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use metrics::counter;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::codec::{self, StopRequest};
use crate::config::Config;
use crate::kafka;
use crate::names::metrics as m;

use super::task_table::TaskTable;
use super::worker::Signal;

/// How far back stop requests are read at start: a task delayed longer than this after
/// its stop request would still run.
pub const LOOKBACK: Duration = Duration::from_secs(24 * 3600);

/// Recent task ids of each tenant (stop requests, or tasks finished here), each with a
/// time (when the stop was requested), bounded: the oldest are forgotten first, without
/// hashing anything again. Looking one up allocates nothing; adding one allocates its key.
#[derive(Debug)]
pub struct StopSet {
    /// Per task: its sequence number (its place in `order`) and its time.
    table: TaskTable<(u64, i64)>,
    /// Hash and sequence number of each entry, oldest first.
    order: VecDeque<(u64, u64)>,
    next_seq: u64,
    cap: usize,
}

impl StopSet {
    /// Remembers at most `cap` requests.
    pub fn new(cap: usize) -> Self {
        Self {
            table: TaskTable::default(),
            order: VecDeque::new(),
            next_seq: 0,
            cap: cap.max(1),
        }
    }

    /// Adds task `task_id` of `tenant`.
    pub fn insert(&mut self, tenant: &str, task_id: &str) {
        self.insert_at(tenant, task_id, i64::MIN);
    }

    /// Adds task `task_id` of `tenant` with time `at`; a task already there keeps the
    /// later of its times.
    pub fn insert_at(&mut self, tenant: &str, task_id: &str, at: i64) {
        let seq = self.next_seq;
        let (known, hash, new) = self.table.get_or_insert_with(tenant, task_id, || (seq, at));
        if !new {
            known.1 = known.1.max(at);
            return;
        }
        self.next_seq = seq.wrapping_add(1);
        self.order.push_back((hash, seq));
        while self.order.len() > self.cap {
            if let Some((hash, seq)) = self.order.pop_front() {
                self.table.remove_by_hash(hash, |(s, _)| *s == seq);
            }
        }
    }

    /// Forgets task `task_id` of `tenant` (its place in the order goes with the oldest).
    pub fn remove(&mut self, tenant: &str, task_id: &str) {
        self.table.remove(tenant, task_id);
    }

    /// Whether task `task_id` of `tenant` is in the set.
    pub fn contains(&self, tenant: &str, task_id: &str) -> bool {
        self.get(tenant, task_id).is_some()
    }

    /// The time task `task_id` of `tenant` was added with, when it is in the set.
    pub fn get(&self, tenant: &str, task_id: &str) -> Option<i64> {
        self.table.get(tenant, task_id).map(|(_, at)| *at)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

/// Reads the control topic until told to stop, forwarding stop requests.
pub fn read_loop(config: Arc<Config>, tx: mpsc::UnboundedSender<StopRequest>, signal: Signal) {
    let topic = crate::names::topics::control(&config.topics.prefix);
    let mut cc = kafka::client_config(&config);
    // Never joins or commits: the group id only satisfies the client.
    cc.set(
        "group.id",
        crate::names::topics::control_readers_group(&config.topics.prefix),
    );
    cc.set("enable.auto.commit", "false");
    kafka::set_default(&mut cc, "isolation.level", "read_committed");
    let consumer: BaseConsumer = match cc.create() {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "cannot read stop requests");
            return;
        }
    };
    let partitions = match consumer.fetch_metadata(Some(&topic), kafka::ADMIN_TIMEOUT) {
        Ok(md) => md
            .topics()
            .first()
            .map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
            .unwrap_or_default(),
        Err(e) => {
            warn!(error = %e, topic = %topic, "cannot read stop requests");
            return;
        }
    };
    if partitions.is_empty() {
        warn!(topic = %topic, "no control topic: stop requests are not heard (run `tidewater topics init`)");
        return;
    }
    let since = crate::clock::now_ms() - i64::try_from(LOOKBACK.as_millis()).unwrap_or(0);
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        let _ = tpl.add_partition_offset(&topic, *p, Offset::Offset(since));
    }
    let start = consumer
        .offsets_for_times(tpl, kafka::ADMIN_TIMEOUT)
        .unwrap_or_else(|_| {
            let mut all = TopicPartitionList::new();
            for p in &partitions {
                let _ = all.add_partition_offset(&topic, *p, Offset::Beginning);
            }
            all
        });
    let mut assign = TopicPartitionList::new();
    for e in start.elements() {
        // No record after the time: start at the end.
        let offset = match e.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            _ => Offset::End,
        };
        let _ = assign.add_partition_offset(e.topic(), e.partition(), offset);
    }
    if let Err(e) = consumer.assign(&assign) {
        warn!(error = %e, "cannot read stop requests");
        return;
    }
    while !signal.is_stopping() {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(msg)) => match codec::decode_stop_request(msg.payload().unwrap_or_default()) {
                Ok(req) => {
                    debug!(task_id = %req.task_id, tenant = %req.tenant, by = %req.requested_by, "stop request");
                    if tx.send(req).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    counter!(m::RECORDS_SKIPPED, m::L_KIND => "control").increment(1);
                    warn!(error = %e, offset = msg.offset(), "undecodable stop request skipped")
                }
            },
            Some(Err(e)) => debug!(error = %e, "control consumer error"),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stop_set_is_bounded_and_scoped_by_tenant() {
        let mut s = StopSet::new(2);
        s.insert("a", "1");
        s.insert("a", "2");
        assert!(s.contains("a", "1") && !s.contains("b", "1"));
        s.insert("a", "3");
        assert!(!s.contains("a", "1"), "the oldest is forgotten");
        assert!(s.contains("a", "2") && s.contains("a", "3"));
        s.insert("a", "3");
        s.insert("b", "9");
        assert!(s.contains("a", "3") && s.contains("b", "9"));
        assert!(!s.contains("a", "2"), "the oldest goes first");
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn a_removed_entry_leaves_the_bound_intact() {
        let mut s = StopSet::new(2);
        s.insert("t", "1");
        s.remove("t", "1");
        s.insert("t", "2");
        s.insert("t", "3");
        s.insert("t", "4");
        assert!(!s.contains("t", "2") && s.contains("t", "3") && s.contains("t", "4"));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn a_stop_keeps_its_latest_time() {
        let mut s = StopSet::new(4);
        s.insert_at("a", "1", 50);
        s.insert_at("a", "1", 40);
        assert_eq!(s.get("a", "1"), Some(50));
        s.insert_at("a", "1", 60);
        assert_eq!(s.get("a", "1"), Some(60));
        assert_eq!(s.get("a", "2"), None);
    }
}
