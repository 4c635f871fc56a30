//! Stop requests: every scheduler reads all of `<prefix>.control` (no consumer group) and
//! remembers recent stop requests, so a running task is cancelled and a queued or delayed
//! one is skipped when its turn comes.

use std::collections::{HashMap, VecDeque};
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

use super::worker::Signal;

/// How far back stop requests are read at start: a task delayed longer than this after
/// its stop request would still run.
pub const LOOKBACK: Duration = Duration::from_secs(24 * 3600);

/// Recent task ids of each tenant (stop requests, or tasks finished here), each with a
/// time (when the stop was requested), bounded: the oldest are forgotten first. Looking
/// one up allocates nothing; adding one allocates its id once (shared by the map and the
/// order), and a new tenant's name.
#[derive(Debug, Default)]
pub struct StopSet {
    ids: HashMap<Arc<str>, HashMap<Arc<str>, i64>>,
    order: VecDeque<(Arc<str>, Arc<str>)>,
    cap: usize,
}

impl StopSet {
    /// Remembers at most `cap` requests.
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            ..Default::default()
        }
    }

    /// Adds task `task_id` of `tenant`.
    pub fn insert(&mut self, tenant: &str, task_id: &str) {
        self.insert_at(tenant, task_id, i64::MIN);
    }

    /// Adds task `task_id` of `tenant` with time `at`; a task already there keeps the
    /// later of its times.
    pub fn insert_at(&mut self, tenant: &str, task_id: &str, at: i64) {
        let id: Arc<str> = match self.ids.get_mut(tenant) {
            Some(ids) => {
                if let Some(known) = ids.get_mut(task_id) {
                    *known = (*known).max(at);
                    return;
                }
                let id: Arc<str> = Arc::from(task_id);
                ids.insert(id.clone(), at);
                id
            }
            None => {
                let id: Arc<str> = Arc::from(task_id);
                self.ids
                    .insert(Arc::from(tenant), HashMap::from([(id.clone(), at)]));
                id
            }
        };
        let tenant = self
            .ids
            .get_key_value(tenant)
            .map_or_else(|| Arc::from(tenant), |(k, _)| k.clone());
        self.order.push_back((tenant, id));
        while self.order.len() > self.cap {
            if let Some((tenant, id)) = self.order.pop_front() {
                self.forget(&tenant, &id);
            }
        }
    }

    /// Forgets task `task_id` of `tenant` (its place in the order goes with the oldest).
    pub fn remove(&mut self, tenant: &str, task_id: &str) {
        self.forget(tenant, task_id);
    }

    fn forget(&mut self, tenant: &str, task_id: &str) {
        if let Some(ids) = self.ids.get_mut(tenant) {
            ids.remove(task_id);
            if ids.is_empty() {
                self.ids.remove(tenant);
            }
        }
    }

    /// Whether task `task_id` of `tenant` is in the set.
    pub fn contains(&self, tenant: &str, task_id: &str) -> bool {
        self.get(tenant, task_id).is_some()
    }

    /// The time task `task_id` of `tenant` was added with, when it is in the set.
    pub fn get(&self, tenant: &str, task_id: &str) -> Option<i64> {
        self.ids.get(tenant)?.get(task_id).copied()
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
