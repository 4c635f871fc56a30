//! The dispatcher: per-function ready queues, weighted fair queuing across functions,
//! per-function concurrency and rate limits, ordering keys, and buffer accounting.
//!
//! Pure data structure, no I/O and no clock of its own: callers pass `now`, so tests run
//! it with any timeline. A function at its concurrency or rate limit is skipped; it never
//! holds up another function, even one whose tasks sit in the same partition.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::offsets::TopicPartition;
use super::waiting::{Queued, Waiting};
use crate::types::{TpMap, slot_for};

/// Index of a function in the dispatcher.
pub type FnId = usize;

/// Limits of one function.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FnLimits {
    /// Attempts running at once.
    pub concurrency: u32,
    /// Attempts started per second; `None` for no rate limit.
    pub rate: Option<f64>,
    /// Attempts that may start at once after an idle period (token bucket size).
    pub burst: u32,
    /// Share of the process's slots when functions compete (relative, > 0).
    pub weight: f64,
}

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate,
            burst,
            tokens: burst,
            last: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        }
        self.last = Some(now);
    }

    /// Whether a token is available now (without taking it).
    pub fn ready(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= 1.0
    }

    /// Takes a token; false when none is available.
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next token will be available.
    pub fn next_available(&mut self, now: Instant) -> Instant {
        self.refill(now);
        if self.tokens >= 1.0 || self.rate <= 0.0 {
            return now;
        }
        now + Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
    }
}

/// What the dispatcher needs to know of a task it holds. Read from the task itself, so a
/// held task costs its queue slot and nothing more here; every answer must stay the same
/// while the task is held (the accounting releases what it added).
pub trait Held {
    /// Its function.
    fn function(&self) -> FnId;
    /// Its partition.
    fn tp(&self) -> &TopicPartition;
    /// Bytes it holds in memory (accounted until it finishes).
    fn bytes(&self) -> usize;
    /// Its ordering key: tasks with the same key (per partition) run one at a time, in
    /// the order they arrived.
    fn key(&self) -> Option<&str>;
    /// Set for a task read from a queue topic: it counts as waiting (for the age of the
    /// oldest waiting task) from [`Dispatcher::push`] until it is handed out.
    fn queued(&self) -> Option<Queued>;
}

impl<T: Held + ?Sized> Held for Box<T> {
    fn function(&self) -> FnId {
        (**self).function()
    }
    fn tp(&self) -> &TopicPartition {
        (**self).tp()
    }
    fn bytes(&self) -> usize {
        (**self).bytes()
    }
    fn key(&self) -> Option<&str> {
        (**self).key()
    }
    fn queued(&self) -> Option<Queued> {
        (**self).queued()
    }
}

#[derive(Debug)]
struct FnQueue<T> {
    limits: FnLimits,
    ready: VecDeque<T>,
    running: u32,
    bucket: Option<TokenBucket>,
    /// Virtual finish time for weighted fair queuing.
    vtime: f64,
}

/// Tasks and bytes buffered for one partition (queued, running, waiting to retry).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Buffered {
    /// Tasks.
    pub count: usize,
    /// Bytes.
    pub bytes: usize,
}

/// The dispatcher.
#[derive(Debug)]
pub struct Dispatcher<T> {
    functions: Vec<FnQueue<T>>,
    /// Per partition, keys whose head task is queued or running, with the tasks waiting
    /// behind it.
    keys: TpMap<TopicPartition, HashMap<Box<str>, VecDeque<T>>>,
    partitions: TpMap<TopicPartition, Buffered>,
    /// Tasks held per partition and function (indexed by [`FnId`]).
    by_function: TpMap<TopicPartition, Vec<usize>>,
    total: Buffered,
    running: usize,
    max_running: usize,
    /// Virtual time of the last dispatch.
    vclock: f64,
    /// Tasks of queue partitions pushed and not handed out yet.
    waiting: Waiting,
}

impl<T: Held> Dispatcher<T> {
    /// A dispatcher handing out at most `max_running` slots at once.
    pub fn new(max_running: usize) -> Self {
        Self {
            functions: Vec::new(),
            keys: TpMap::default(),
            partitions: TpMap::default(),
            by_function: TpMap::default(),
            total: Buffered::default(),
            running: 0,
            max_running: max_running.max(1),
            vclock: 0.0,
            waiting: Waiting::default(),
        }
    }

    /// Adds a function; returns its id.
    pub fn add_function(&mut self, limits: FnLimits) -> FnId {
        self.functions.push(FnQueue {
            bucket: limits.rate.map(|r| TokenBucket::new(r, limits.burst)),
            limits,
            ready: VecDeque::new(),
            running: 0,
            vtime: 0.0,
        });
        self.functions.len() - 1
    }

    fn count_function(&mut self, tp: &TopicPartition, f: FnId, held: bool) {
        if held {
            let Some(counts) = slot_for(&mut self.by_function, tp) else {
                return;
            };
            if counts.len() <= f {
                counts.resize(f + 1, 0);
            }
            if let Some(c) = counts.get_mut(f) {
                *c += 1;
            }
        } else if let Some(c) = self.by_function.get_mut(tp).and_then(|c| c.get_mut(f)) {
            *c = c.saturating_sub(1);
        }
    }

    /// Accepts a fetched task, read at `read_ms` (ms since the epoch). It waits behind
    /// earlier tasks with the same key.
    pub fn push(&mut self, entry: T, read_ms: i64) {
        let tp = entry.tp();
        if let Some(q) = entry.queued() {
            self.waiting.add(tp, q, read_ms);
        }
        self.hold(tp, entry.bytes());
        self.count_function(tp, entry.function(), true);
        if let Some(key) = entry.key() {
            if let Some(keys) = slot_for(&mut self.keys, tp) {
                if let Some(waiting) = keys.get_mut(key) {
                    waiting.push_back(entry);
                    return;
                }
                keys.insert(key.into(), VecDeque::new());
            }
        }
        self.enqueue(entry, false);
    }

    /// Queues a task for its function: at the back, or at the front (the next of a key,
    /// older than anything queued after it).
    fn enqueue(&mut self, entry: T, at_front: bool) {
        let vclock = self.vclock;
        if let Some(f) = self.functions.get_mut(entry.function()) {
            if f.ready.is_empty() && f.running == 0 {
                // A function that was idle starts at the current virtual time: it gets its
                // fair share from now on, no credit for the time it had nothing to do.
                f.vtime = f.vtime.max(vclock);
            }
            if at_front {
                f.ready.push_front(entry);
            } else {
                f.ready.push_back(entry);
            }
        }
    }

    /// Accounts a task held outside the queues (waiting for its time) until
    /// [`Dispatcher::requeue`] or [`Dispatcher::task_finished`]. Keys are not held.
    pub fn account(&mut self, entry: &(impl Held + ?Sized)) {
        self.hold(entry.tp(), entry.bytes());
        self.count_function(entry.tp(), entry.function(), true);
    }

    /// Releases what [`Dispatcher::account`] accounted for a task that never entered the
    /// queues (forwarded elsewhere); keys are not touched.
    pub fn unaccount(&mut self, entry: &(impl Held + ?Sized)) {
        self.release(entry.tp(), entry.bytes());
        self.count_function(entry.tp(), entry.function(), false);
    }

    /// Tasks of function `f` held from partition `tp`.
    pub fn held_by(&self, tp: &TopicPartition, f: FnId) -> usize {
        self.by_function
            .get(tp)
            .and_then(|c| c.get(f))
            .copied()
            .unwrap_or(0)
    }

    /// Tasks of function `f` held from the partitions `pick` chooses.
    pub fn held_from(&self, f: FnId, pick: impl Fn(&TopicPartition) -> bool) -> usize {
        self.by_function
            .iter()
            .filter(|(tp, _)| pick(tp))
            .filter_map(|(_, c)| c.get(f))
            .sum()
    }

    /// Whether a task with ordering key `key` of partition `tp` is held (queued or running).
    pub fn key_held(&self, tp: &TopicPartition, key: &str) -> bool {
        self.keys.get(tp).is_some_and(|keys| keys.contains_key(key))
    }

    /// Accounts memory held for a partition outside any queue (input that cannot run,
    /// on its way to a failure destination).
    pub fn hold(&mut self, tp: &TopicPartition, bytes: usize) {
        if let Some(b) = slot_for(&mut self.partitions, tp) {
            b.count += 1;
            b.bytes += bytes;
        }
        self.total.count += 1;
        self.total.bytes += bytes;
    }

    /// Releases what [`Dispatcher::hold`] accounted.
    pub fn release(&mut self, tp: &TopicPartition, bytes: usize) {
        if let Some(b) = self.partitions.get_mut(tp) {
            b.count = b.count.saturating_sub(1);
            b.bytes = b.bytes.saturating_sub(bytes);
        }
        self.total.count = self.total.count.saturating_sub(1);
        self.total.bytes = self.total.bytes.saturating_sub(bytes);
    }

    /// Puts a task back at the front of its function's queue (a retry that is due). Its
    /// key stays held, so tasks behind it with the same key keep waiting.
    pub fn requeue(&mut self, entry: T) {
        if let Some(f) = self.functions.get_mut(entry.function()) {
            f.ready.push_front(entry);
        }
    }

    fn eligible(&mut self, id: FnId, now: Instant) -> bool {
        let Some(f) = self.functions.get_mut(id) else {
            return false;
        };
        !f.ready.is_empty()
            && f.running < f.limits.concurrency
            && f.bucket.as_mut().is_none_or(|b| b.ready(now))
    }

    /// The next task to start, chosen by weighted fair queuing among functions that have
    /// a task, a free concurrency slot and a rate token. `accept` may refuse the task at
    /// the head of a queue (its partition was revoked): it is then dropped and accounted as
    /// finished, and returned in `dropped`.
    pub fn next(
        &mut self,
        now: Instant,
        mut accept: impl FnMut(&T) -> bool,
        dropped: &mut Vec<T>,
    ) -> Option<T> {
        loop {
            if self.running >= self.max_running {
                return None;
            }
            let mut best: Option<(f64, FnId)> = None;
            for id in 0..self.functions.len() {
                if self.eligible(id, now) {
                    let v = self.functions[id].vtime;
                    if best.is_none_or(|(bv, _)| v < bv) {
                        best = Some((v, id));
                    }
                }
            }
            let (_, id) = best?;
            let entry = self.functions[id].ready.pop_front()?;
            if let Some(q) = entry.queued() {
                self.waiting.remove(entry.tp(), q);
            }
            if !accept(&entry) {
                self.forget(&entry);
                dropped.push(entry);
                continue;
            }
            let f = &mut self.functions[id];
            if let Some(b) = f.bucket.as_mut() {
                b.take(now);
            }
            f.running += 1;
            self.vclock = f.vtime;
            f.vtime += 1.0 / f.limits.weight.max(1e-6);
            self.running += 1;
            return Some(entry);
        }
    }

    /// An attempt of function `id` ended: its slot is free.
    pub fn attempt_finished(&mut self, id: FnId) {
        if let Some(f) = self.functions.get_mut(id) {
            f.running = f.running.saturating_sub(1);
        }
        self.running = self.running.saturating_sub(1);
    }

    /// A task is done for good (outcome published, or abandoned): its memory is released
    /// and the next task with its key may run.
    pub fn task_finished(&mut self, entry: &(impl Held + ?Sized)) {
        self.forget(entry);
    }

    fn forget(&mut self, entry: &(impl Held + ?Sized)) {
        let tp = entry.tp();
        self.release(tp, entry.bytes());
        self.count_function(tp, entry.function(), false);
        let Some(key) = entry.key() else { return };
        let Some(keys) = self.keys.get_mut(tp) else {
            return;
        };
        match keys.get_mut(key).and_then(VecDeque::pop_front) {
            // The next task of the key is older than anything queued after it.
            Some(next) => self.enqueue(next, true),
            None => {
                keys.remove(key);
                if keys.is_empty() {
                    self.keys.remove(tp);
                }
            }
        }
    }

    /// Removes every queued task of a partition (revoked); returns them. Running tasks
    /// and tasks waiting to retry are the caller's to finish or abandon.
    pub fn drop_partition(&mut self, tp: &TopicPartition) -> Vec<T> {
        self.waiting.drop_partition(tp);
        let mut out = Vec::new();
        for f in &mut self.functions {
            let (gone, keep): (VecDeque<_>, VecDeque<_>) =
                f.ready.drain(..).partition(|e| e.tp() == tp);
            f.ready = keep;
            out.extend(gone);
        }
        if let Some(keys) = self.keys.remove(tp) {
            out.extend(keys.into_values().flatten());
        }
        for e in &out {
            self.release(tp, e.bytes());
            self.count_function(tp, e.function(), false);
        }
        out
    }

    /// Forgets a partition's accounting (after it was revoked and drained).
    pub fn forget_partition(&mut self, tp: &TopicPartition) {
        self.by_function.remove(tp);
        self.waiting.drop_partition(tp);
        if let Some(b) = self.partitions.remove(tp) {
            self.total.count = self.total.count.saturating_sub(b.count);
            self.total.bytes = self.total.bytes.saturating_sub(b.bytes);
        }
    }

    /// Earliest time a rate-limited function with queued tasks gets a token, when that is
    /// what holds it back.
    pub fn next_wakeup(&mut self, now: Instant) -> Option<Instant> {
        let mut at: Option<Instant> = None;
        for f in &mut self.functions {
            if f.ready.is_empty() || f.running >= f.limits.concurrency {
                continue;
            }
            if let Some(b) = f.bucket.as_mut() {
                let t = b.next_available(now);
                if t > now {
                    at = Some(at.map_or(t, |a| a.min(t)));
                }
            }
        }
        at
    }

    /// What each partition that holds something holds.
    pub fn partition_buffers(&self) -> impl Iterator<Item = (&TopicPartition, &Buffered)> {
        self.partitions.iter()
    }

    /// What one partition holds.
    pub fn buffered(&self, tp: &TopicPartition) -> Buffered {
        self.partitions.get(tp).copied().unwrap_or_default()
    }

    /// What the process holds.
    pub fn total(&self) -> Buffered {
        self.total
    }

    /// Attempts running now.
    pub fn running(&self) -> usize {
        self.running
    }

    /// Tasks queued (not running) for a function.
    pub fn queued(&self, id: FnId) -> usize {
        self.functions.get(id).map_or(0, |f| f.ready.len())
    }

    /// The tasks of queue partitions that wait to be handed out (the oldest task's age).
    pub fn waiting(&mut self) -> &mut Waiting {
        &mut self.waiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits(concurrency: u32, weight: f64) -> FnLimits {
        FnLimits {
            concurrency,
            rate: None,
            burst: 1,
            weight,
        }
    }

    /// A test task: `item` names it.
    #[derive(Debug, PartialEq)]
    struct Entry {
        item: i64,
        function: FnId,
        tp: TopicPartition,
        key: Option<String>,
    }

    impl Held for Entry {
        fn function(&self) -> FnId {
            self.function
        }
        fn tp(&self) -> &TopicPartition {
            &self.tp
        }
        fn bytes(&self) -> usize {
            10
        }
        fn key(&self) -> Option<&str> {
            self.key.as_deref()
        }
        fn queued(&self) -> Option<Queued> {
            Some(Queued {
                offset: self.item,
                since_ms: 1000 * self.item,
            })
        }
    }

    fn entry(function: FnId, offset: i64, key: Option<&str>) -> Entry {
        Entry {
            item: offset,
            function,
            tp: TopicPartition::new("q", 0),
            key: key.map(str::to_string),
        }
    }

    fn next(d: &mut Dispatcher<Entry>, now: Instant) -> Option<Entry> {
        d.next(now, |_| true, &mut Vec::new())
    }

    #[test]
    fn a_function_at_its_limit_does_not_block_the_others() {
        let mut d = Dispatcher::new(100);
        let a = d.add_function(limits(1, 1.0));
        let b = d.add_function(limits(32, 1.0));
        // A's tasks first, as in a shared FIFO queue.
        for o in 0..10 {
            d.push(entry(a, o, None), 0);
        }
        for o in 10..20 {
            d.push(entry(b, o, None), 0);
        }
        let now = Instant::now();
        let mut started = Vec::new();
        while let Some(e) = next(&mut d, now) {
            started.push((e.function, e.item));
        }
        assert_eq!(started.iter().filter(|(f, _)| *f == a).count(), 1);
        assert_eq!(started.iter().filter(|(f, _)| *f == b).count(), 10);
    }

    #[test]
    fn weights_share_the_slots() {
        let mut d = Dispatcher::new(4);
        let a = d.add_function(limits(100, 3.0));
        let b = d.add_function(limits(100, 1.0));
        for o in 0..1000 {
            d.push(entry(a, o, None), 0);
            d.push(entry(b, 10_000 + o, None), 0);
        }
        let now = Instant::now();
        let mut count = [0usize; 2];
        for _ in 0..400 {
            let e = next(&mut d, now).unwrap();
            count[e.function] += 1;
            d.attempt_finished(e.function);
            d.task_finished(&e);
        }
        assert!((295..=305).contains(&count[a]), "{count:?}");
        assert!((95..=105).contains(&count[b]), "{count:?}");
    }

    #[test]
    fn an_idle_function_gets_no_credit_for_its_idle_time() {
        let mut d = Dispatcher::new(1);
        let a = d.add_function(limits(10, 1.0));
        let b = d.add_function(limits(10, 1.0));
        let now = Instant::now();
        for o in 0..100 {
            d.push(entry(a, o, None), 0);
        }
        for _ in 0..50 {
            let e = next(&mut d, now).unwrap();
            d.attempt_finished(e.function);
            d.task_finished(&e);
        }
        for o in 0..10 {
            d.push(entry(b, 1000 + o, None), 0);
        }
        // From now on they alternate; B does not get 50 turns in a row.
        let mut seq = Vec::new();
        for _ in 0..10 {
            let e = next(&mut d, now).unwrap();
            seq.push(e.function);
            d.attempt_finished(e.function);
            d.task_finished(&e);
        }
        assert!(seq.iter().filter(|f| **f == a).count() >= 4, "{seq:?}");
    }

    #[test]
    fn rate_limit_spaces_starts_and_reports_the_wakeup() {
        let mut d = Dispatcher::new(100);
        let f = d.add_function(FnLimits {
            concurrency: 100,
            rate: Some(10.0),
            burst: 2,
            weight: 1.0,
        });
        for o in 0..10 {
            d.push(entry(f, o, None), 0);
        }
        let t0 = Instant::now();
        assert!(next(&mut d, t0).is_some());
        assert!(next(&mut d, t0).is_some());
        assert!(next(&mut d, t0).is_none(), "burst of 2 used up");
        let wake = d.next_wakeup(t0).unwrap();
        assert_eq!(wake - t0, Duration::from_millis(100));
        assert!(next(&mut d, t0 + Duration::from_millis(99)).is_none());
        assert!(next(&mut d, t0 + Duration::from_millis(100)).is_some());
    }

    #[test]
    fn same_key_runs_one_at_a_time_in_order() {
        let mut d = Dispatcher::new(100);
        let f = d.add_function(limits(10, 1.0));
        let g = d.add_function(limits(10, 1.0));
        d.push(entry(f, 0, Some("k")), 0);
        d.push(entry(g, 1, Some("k")), 0);
        d.push(entry(f, 2, Some("other")), 0);
        d.push(entry(f, 3, Some("k")), 0);
        let now = Instant::now();
        let first = next(&mut d, now).unwrap();
        let second = next(&mut d, now).unwrap();
        assert_eq!((first.item, second.item), (0, 2));
        assert!(next(&mut d, now).is_none(), "1 and 3 wait for 0");
        d.attempt_finished(first.function);
        d.task_finished(&first);
        let third = next(&mut d, now).unwrap();
        assert_eq!(third.item, 1, "the key's next task, of another function");
        assert!(next(&mut d, now).is_none());
        d.attempt_finished(third.function);
        d.task_finished(&third);
        assert_eq!(next(&mut d, now).unwrap().item, 3);
    }

    #[test]
    fn buffers_are_accounted_per_partition_and_released() {
        let mut d = Dispatcher::new(100);
        let f = d.add_function(limits(1, 1.0));
        for o in 0..5 {
            d.push(entry(f, o, None), 0);
        }
        assert_eq!(
            d.buffered(&TopicPartition::new("q", 0)),
            Buffered {
                count: 5,
                bytes: 50
            }
        );
        let e = next(&mut d, Instant::now()).unwrap();
        d.attempt_finished(f);
        d.task_finished(&e);
        assert_eq!(
            d.total(),
            Buffered {
                count: 4,
                bytes: 40
            }
        );
        let dropped = d.drop_partition(&TopicPartition::new("q", 0));
        let dropped: Vec<i64> = dropped.iter().map(|e| e.item).collect();
        assert_eq!(dropped, vec![1, 2, 3, 4]);
        assert_eq!(d.total(), Buffered::default());
    }

    #[test]
    fn tasks_wait_until_they_are_handed_out_behind_limits_and_keys() {
        let mut d = Dispatcher::new(100);
        let f = d.add_function(limits(1, 1.0));
        let tp = TopicPartition::new("q", 0);
        d.push(entry(f, 0, Some("k")), 0);
        d.push(entry(f, 1, Some("k")), 0);
        d.push(entry(f, 2, None), 0);
        assert_eq!(d.waiting().len(), 3);
        assert_eq!(
            d.waiting().oldest_age(&tp, 10_000),
            10.0,
            "offset 0, submitted at 0"
        );
        let first = next(&mut d, Instant::now()).unwrap();
        assert_eq!(first.item, 0);
        // Offset 1 waits behind its key, offset 2 behind the concurrency limit.
        assert_eq!(d.waiting().len(), 2);
        assert_eq!(d.waiting().oldest_age(&tp, 10_000), 9.0);
        // A retry that is due goes back to the queue: it has started once, it does not wait.
        d.attempt_finished(f);
        d.requeue(first);
        assert_eq!(d.waiting().len(), 2);
        let retried = next(&mut d, Instant::now()).unwrap();
        assert_eq!(retried.item, 0);
        d.drop_partition(&tp);
        assert_eq!(d.waiting().len(), 0);
        assert_eq!(d.waiting().oldest_age(&tp, 10_000), 0.0);
    }

    #[test]
    fn refused_entries_are_dropped_and_released() {
        let mut d = Dispatcher::new(100);
        let f = d.add_function(limits(10, 1.0));
        d.push(entry(f, 0, Some("k")), 0);
        d.push(entry(f, 1, Some("k")), 0);
        let mut dropped = Vec::new();
        assert!(
            d.next(Instant::now(), |e| e.item != 0, &mut dropped)
                .is_some()
        );
        assert_eq!(dropped.len(), 1);
        assert_eq!(d.total().count, 1);
    }

    proptest! {
        /// Whatever the mix of functions, limits, keys and completion order: no function
        /// ever exceeds its concurrency, the process never exceeds its slots, tasks of one
        /// key never overlap and start in arrival order, and every task runs exactly once.
        #[test]
        fn limits_and_key_order_hold_under_any_schedule(
            concurrency in proptest::collection::vec(1u32..4, 1..4),
            max_running in 1usize..6,
            tasks in proptest::collection::vec((0usize..4, proptest::option::of(0u8..3)), 1..60),
            finish_order in proptest::collection::vec(any::<proptest::sample::Index>(), 200),
        ) {
            let mut d = Dispatcher::new(max_running);
            let ids: Vec<FnId> = concurrency.iter().map(|c| d.add_function(limits(*c, 1.0))).collect();
            for (i, (f, key)) in tasks.iter().enumerate() {
                let f = ids[f % ids.len()];
                d.push(entry(f, i as i64, key.map(|k| format!("k{k}")).as_deref()), 0);
            }
            let now = Instant::now();
            let mut running: Vec<Entry> = Vec::new();
            let mut started = Vec::new();
            let mut picks = finish_order.iter();
            loop {
                while let Some(e) = next(&mut d, now) {
                    running.push(e);
                }
                prop_assert!(running.len() <= max_running);
                for (n, c) in concurrency.iter().enumerate() {
                    prop_assert!(running.iter().filter(|e| e.function == ids[n]).count() <= *c as usize);
                }
                let mut keys: Vec<&String> = running.iter().filter_map(|e| e.key.as_ref()).collect();
                let before = keys.len();
                keys.sort();
                keys.dedup();
                prop_assert_eq!(before, keys.len(), "two tasks of one key at once");
                if running.is_empty() {
                    break;
                }
                let idx = picks.next().map_or(0, |i| i.index(running.len()));
                let e = running.remove(idx);
                started.push((e.key.clone(), e.item));
                d.attempt_finished(e.function);
                d.task_finished(&e);
            }
            prop_assert_eq!(started.len(), tasks.len(), "every task runs exactly once");
            for k in 0..3u8 {
                let key = Some(format!("k{k}"));
                let order: Vec<i64> = started.iter().filter(|(kk, _)| *kk == key).map(|(_, i)| *i).collect();
                let mut sorted = order.clone();
                sorted.sort();
                prop_assert_eq!(order, sorted, "key order broken");
            }
            prop_assert_eq!(d.total(), Buffered::default());
            prop_assert_eq!(d.waiting().len(), 0, "every task stopped waiting when it started");
        }
    }

    #[test]
    fn holdings_are_counted_per_partition_and_function() {
        let t0 = Instant::now();
        let mut d = Dispatcher::new(10);
        let a = d.add_function(limits(1, 1.0));
        let b = d.add_function(limits(1, 1.0));
        let tp = TopicPartition::new("q", 0);
        d.push(entry(a, 1, Some("k")), 0);
        d.push(entry(a, 2, None), 0);
        d.push(entry(b, 3, None), 0);
        assert_eq!(d.held_by(&tp, a), 2);
        assert_eq!(d.held_by(&tp, b), 1);
        assert_eq!(d.held_from(a, |t| &*t.topic == "q"), 2);
        assert_eq!(d.held_from(a, |t| &*t.topic == "other"), 0);
        assert!(d.key_held(&tp, "k"));
        assert!(!d.key_held(&tp, "other"));
        // A task accounted outside the queues, then released without touching keys.
        let outside = entry(a, 4, Some("k"));
        d.account(&outside);
        assert_eq!(d.held_by(&tp, a), 3);
        d.unaccount(&outside);
        assert_eq!(d.held_by(&tp, a), 2);
        assert!(d.key_held(&tp, "k"), "the key's own task still holds it");
        let first = next(&mut d, t0).unwrap();
        d.task_finished(&first);
        d.attempt_finished(first.function);
        assert_eq!(
            d.held_by(&tp, first.function),
            if first.function == a { 1 } else { 0 }
        );
        d.drop_partition(&tp);
        assert_eq!(d.held_by(&tp, a), 0);
        assert_eq!(d.held_by(&tp, b), 0);
    }
}
