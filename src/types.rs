//! Small value types shared by the scheduler, the indexer and the controller.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

/// A partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic's name, shared: every task held from a partition refers to it, so a
    /// clone is a count, not a copy.
    pub topic: Arc<str>,
    /// The partition's index.
    pub partition: i32,
}

impl TopicPartition {
    /// The partition `partition` of `topic`.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

/// The hasher of the scheduler's tables keyed by partition, topic name or configured
/// function. Their keys are the subscription's topics and the configuration's functions,
/// not chosen by whoever produces tasks, so a fast
/// non-cryptographic hash (foldhash, seeded per table) serves them instead of SipHash;
/// tables keyed by what submitters choose (task ids, record keys) keep SipHash.
pub type TpHasher = foldhash::fast::RandomState;

/// A table keyed by partition, topic name or configured function (see [`TpHasher`]).
pub type TpMap<K, V> = HashMap<K, V, TpHasher>;

/// A set of partitions or topic names (see [`TpHasher`]).
pub type TpSet<K> = HashSet<K, TpHasher>;

/// The value kept for `tp` in `map`, a default one inserted first when there is none
/// (always `Some`). Unlike `map.entry(tp.clone())`, the partition's name is counted up
/// only when it is inserted: this is on the path of every task.
pub fn slot_for<'a, V: Default>(
    map: &'a mut TpMap<TopicPartition, V>,
    tp: &TopicPartition,
) -> Option<&'a mut V> {
    if !map.contains_key(tp) {
        map.insert(tp.clone(), V::default());
    }
    map.get_mut(tp)
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// A task's identity: ids are chosen by submitters, so they are unique per tenant only.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskKey {
    /// The tenant that owns the task.
    pub tenant: String,
    /// The task's id.
    pub id: String,
}

impl TaskKey {
    /// The key of task `id` of `tenant`.
    pub fn new(tenant: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            tenant: tenant.into(),
            id: id.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_partition_displays_as_topic_slash_partition() {
        assert_eq!(
            TopicPartition::new("tw.q.acme", 3).to_string(),
            "tw.q.acme/3"
        );
    }

    #[test]
    fn task_keys_of_different_tenants_differ() {
        assert_ne!(TaskKey::new("a", "1"), TaskKey::new("b", "1"));
        assert_eq!(TaskKey::new("a", "1"), TaskKey::new("a", "1"));
    }
}
