//! Serves a producer's delivery reports on a thread of its own.
//!
//! rust-rdkafka's producers get delivery reports as events that the application polls.
//! librdkafka's `commit_transaction` and `abort_transaction` first wait until every
//! message sent is delivered or failed, and a report waiting in the event queue counts as
//! not yet delivered: called on the thread that also polls, they can only wait out their
//! timeout whenever reports are pending (after a broker restart, every purged or timed-out
//! message has one). librdkafka's answer says as much: "the event queue must be polled
//! for delivery report events in a separate thread". This is that thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::producer::BaseProducer;
use tracing::error;

use super::publisher::DeliveryCounter;

/// How long one poll waits for an event; also how long stopping can take.
const POLL: Duration = Duration::from_millis(50);

/// A thread polling one producer until dropped.
pub struct DeliveryPoller {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl DeliveryPoller {
    /// Starts polling `producer`; `None` (logged) when no thread can be started, and the
    /// publisher then serves the reports itself between its calls, as before.
    pub fn start(producer: &Arc<BaseProducer<DeliveryCounter>>) -> Option<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let spawned = std::thread::Builder::new()
            .name("tw-deliveries".into())
            .spawn({
                let (producer, stop) = (producer.clone(), stop.clone());
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        producer.poll(POLL);
                    }
                }
            });
        match spawned {
            Ok(handle) => Some(Self {
                stop,
                handle: Some(handle),
            }),
            Err(e) => {
                error!(error = %e, "cannot start the delivery report thread; the publisher serves them itself");
                None
            }
        }
    }
}

impl Drop for DeliveryPoller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}
