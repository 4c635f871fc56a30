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
#[path = "dispatch_tests.rs"]
mod tests;
