//! Tasks waiting out a retry backoff in the engine: a queue ordered by due time.

use std::collections::BTreeMap;
use std::time::Instant;

/// Items waiting until a time, in due order (ties in insertion order).
pub(crate) struct RetryQueue<T> {
    due: BTreeMap<(Instant, u64), T>,
    seq: u64,
}

impl<T> Default for RetryQueue<T> {
    fn default() -> Self {
        Self {
            due: BTreeMap::new(),
            seq: 0,
        }
    }
}

impl<T> RetryQueue<T> {
    /// Holds `item` until `at`.
    pub fn push(&mut self, at: Instant, item: T) {
        self.seq += 1;
        self.due.insert((at, self.seq), item);
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.due.len()
    }

    /// When the first item is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.keys().next().map(|(at, _)| *at)
    }

    /// The first item due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        let (&key, _) = self.due.first_key_value()?;
        if key.0 > now {
            return None;
        }
        self.due.remove(&key)
    }

    /// Takes out every item `pred` picks.
    pub fn take_where(&mut self, pred: impl Fn(&T) -> bool) -> Vec<T> {
        let keys: Vec<_> = self
            .due
            .iter()
            .filter(|(_, item)| pred(item))
            .map(|(k, _)| *k)
            .collect();
        keys.iter().filter_map(|k| self.due.remove(k)).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_retry_queue_hands_out_what_is_due_in_order() {
        let t0 = Instant::now();
        let mut q = RetryQueue::default();
        q.push(t0 + Duration::from_secs(2), "late");
        q.push(t0 + Duration::from_secs(1), "first");
        q.push(t0 + Duration::from_secs(1), "second");
        assert_eq!(q.next_due(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(q.pop_due(t0), None, "nothing is due yet");
        let now = t0 + Duration::from_secs(1);
        assert_eq!(q.pop_due(now), Some("first"));
        assert_eq!(q.pop_due(now), Some("second"), "ties keep insertion order");
        assert_eq!(q.pop_due(now), None);
        assert_eq!(q.take_where(|s| *s == "late"), vec!["late"]);
        assert_eq!(q.next_due(), None);
    }
}
