//! Unit tests of the dispatcher (`dispatch.rs`).

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
