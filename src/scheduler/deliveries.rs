//! Serves a producer's delivery reports on a thread of its own while a transactional
//! call waits for them.
//!
//! rust-rdkafka's producers get delivery reports as events that the application polls.
//! librdkafka's `commit_transaction` and `abort_transaction` first wait until every
//! message sent is delivered or failed, and a report waiting in the event queue counts as
//! not yet delivered: called on the thread that also polls, they can only wait out their
//! timeout whenever reports are pending (after a broker restart, every purged or timed-out
//! message has one). librdkafka's error says as much: "the event queue must be polled for
//! delivery report events in a separate thread". This is that thread. It polls only while
//! such a call runs ([`DeliveryPoller::during`]); the rest of the time the publisher serves
//! the reports itself, as it waits for a batch's deliveries, without a second thread
//! contending for them.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::producer::{BaseProducer, Producer};
use tracing::error;

use super::publisher::DeliveryCounter;

/// How long a thread waiting for deliveries naps between looks at the event queue.
pub const NAP: Duration = Duration::from_micros(200);

/// Most reports served in one call: a bound on the time it takes, not a limit on what
/// is served (the next call goes on).
const MOST_AT_ONCE: usize = 64;

/// Serves the delivery reports waiting in `producer`'s event queue, if any, without
/// waiting. Waiting is done by napping ([`NAP`]) between calls: rust-rdkafka's `poll` with
/// a timeout rounds what is left of it below 1 ms down to no wait and spins through that
/// last millisecond, a busy thread on two cores shared with the broker.
///
/// One `poll` serves one event (the records of one produce request); a batch's records go
/// in several requests, so this serves on while the count of records in flight falls.
pub fn serve_waiting(producer: &BaseProducer<DeliveryCounter>) {
    serve_while_falling(
        || producer.poll(Duration::ZERO),
        || producer.in_flight_count(),
    );
}

/// Calls `serve` (serves one event) again while each call lowers `in_flight` (records
/// not yet reported), at most [`MOST_AT_ONCE`] times: a call that lowers nothing found
/// nothing waiting.
fn serve_while_falling(mut serve: impl FnMut(), in_flight: impl Fn() -> i32) {
    let mut before = in_flight();
    for _ in 0..MOST_AT_ONCE {
        serve();
        let now = in_flight();
        if now >= before {
            return;
        }
        before = now;
    }
}

/// What the thread is told.
#[derive(Default)]
struct State {
    /// A call that waits for delivery reports is running.
    busy: bool,
    /// The producer is being replaced or the publisher ends.
    stop: bool,
}

/// A thread serving one producer's delivery reports on demand, until dropped.
pub struct DeliveryPoller {
    state: Arc<(Mutex<State>, Condvar)>,
    handle: Option<JoinHandle<()>>,
}

impl DeliveryPoller {
    /// Starts the thread for `producer`; `None` (logged) when no thread can be started,
    /// and the calls then serve the reports between their attempts, as before.
    pub fn start(producer: &Arc<BaseProducer<DeliveryCounter>>) -> Option<Self> {
        let state = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let spawned = std::thread::Builder::new()
            .name("tw-deliveries".into())
            .spawn({
                let (producer, state) = (producer.clone(), state.clone());
                move || serve(&producer, &state)
            });
        match spawned {
            Ok(handle) => Some(Self {
                state,
                handle: Some(handle),
            }),
            Err(e) => {
                error!(error = %e, "cannot start the delivery report thread; transactional calls serve them between attempts");
                None
            }
        }
    }

    /// Runs `call` while the thread serves delivery reports.
    pub fn during<R>(&self, call: impl FnOnce() -> R) -> R {
        self.set(|s| s.busy = true);
        let r = call();
        self.set(|s| s.busy = false);
        r
    }

    fn set(&self, change: impl FnOnce(&mut State)) {
        let (lock, wake) = &*self.state;
        change(&mut lock.lock().unwrap_or_else(PoisonError::into_inner));
        wake.notify_all();
    }
}

fn serve(producer: &BaseProducer<DeliveryCounter>, state: &(Mutex<State>, Condvar)) {
    let (lock, wake) = state;
    loop {
        {
            let mut s = lock.lock().unwrap_or_else(PoisonError::into_inner);
            while !s.busy && !s.stop {
                s = wake.wait(s).unwrap_or_else(PoisonError::into_inner);
            }
            if s.stop {
                return;
            }
        }
        serve_waiting(producer);
        std::thread::sleep(NAP);
    }
}

impl Drop for DeliveryPoller {
    fn drop(&mut self) {
        self.set(|s| s.stop = true);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// Reports waiting as events of `per_event` records each; serving takes one event.
    struct Waiting {
        events: Cell<i32>,
        per_event: i32,
        served: Cell<usize>,
    }

    impl Waiting {
        fn new(events: i32, per_event: i32) -> Self {
            Self {
                events: Cell::new(events),
                per_event,
                served: Cell::new(0),
            }
        }

        fn run(&self) {
            serve_while_falling(
                || {
                    self.served.set(self.served.get() + 1);
                    self.events.set((self.events.get() - 1).max(0));
                },
                || self.events.get() * self.per_event,
            );
        }
    }

    #[test]
    fn one_call_serves_the_reports_of_every_produce_request_waiting() {
        // A batch over four partitions: four produce requests, four events.
        let w = Waiting::new(4, 10);
        w.run();
        assert_eq!(w.events.get(), 0, "reports left waiting");
        // The last look finds nothing more.
        assert_eq!(w.served.get(), 5);
    }

    #[test]
    fn with_nothing_waiting_one_look_is_all() {
        let w = Waiting::new(0, 10);
        w.run();
        assert_eq!(w.served.get(), 1);
    }

    #[test]
    fn one_call_is_bounded() {
        let w = Waiting::new(1000, 1);
        w.run();
        assert_eq!(w.served.get(), MOST_AT_ONCE);
        assert_eq!(w.events.get(), 1000 - MOST_AT_ONCE as i32);
    }
}
