//! A worker thread and the handle that stops and joins it.
//!
//! The scheduler runs its Kafka clients on threads of their own (librdkafka's calls
//! block). Each is started through [`Worker::spawn`] and told to stop through its handle:
//! first [`Worker::stop`] (finish what is queued, then exit), and at hard stop
//! [`Worker::abandon`] (exit at once). The thread reads its [`Signal`] between steps.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::error;

/// Levels of a [`Signal`]; it starts at 0, running.
const STOPPING: u8 = 1;
const ABANDONED: u8 = 2;

/// What a worker thread has been told; cheap to clone and check.
#[derive(Debug, Clone, Default)]
pub struct Signal(Arc<AtomicU8>);

impl Signal {
    /// Told to stop: finish what is queued, take nothing new, exit.
    pub fn is_stopping(&self) -> bool {
        self.0.load(Ordering::Relaxed) >= STOPPING
    }

    /// Told to exit at once, leaving unfinished work to the next owner.
    pub fn is_abandoned(&self) -> bool {
        self.0.load(Ordering::Relaxed) >= ABANDONED
    }

    /// Sleeps for `period`, looking at the signal every 100 ms; `false` as soon as it
    /// says stop (the caller then ends), `true` once the period has passed.
    pub fn sleep(&self, period: Duration) -> bool {
        let until = Instant::now() + period;
        while Instant::now() < until {
            if self.is_stopping() {
                return false;
            }
            std::thread::sleep(
                Duration::from_millis(100).min(until.saturating_duration_since(Instant::now())),
            );
        }
        !self.is_stopping()
    }

    fn raise(&self, level: u8) {
        self.0.fetch_max(level, Ordering::Relaxed);
    }
}

/// A running worker thread.
#[derive(Debug)]
pub struct Worker {
    name: &'static str,
    signal: Signal,
    handle: JoinHandle<()>,
}

impl Worker {
    /// Starts `body` on a thread called `name`, handing it the signal to watch.
    pub fn spawn(
        name: &'static str,
        body: impl FnOnce(Signal) + Send + 'static,
    ) -> std::io::Result<Self> {
        let signal = Signal::default();
        let theirs = signal.clone();
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(theirs))?;
        Ok(Self {
            name,
            signal,
            handle,
        })
    }

    /// Asks the thread to finish what is queued and exit.
    pub fn stop(&self) {
        self.signal.raise(STOPPING);
    }

    /// Asks the thread to exit at once.
    pub fn abandon(&self) {
        self.signal.raise(ABANDONED);
    }

    /// Waits for the thread to end, off the async runtime; a panic in it is logged.
    pub async fn join(self) {
        let name = self.name;
        let joined = tokio::task::spawn_blocking(move || self.handle.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            error!(thread = name, "worker thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_worker_sees_stop_then_abandon_and_is_joined() {
        let (tx, rx) = std::sync::mpsc::channel();
        let w = Worker::spawn("tw-test", move |signal| {
            while !signal.is_stopping() {
                std::thread::yield_now();
            }
            let _ = tx.send(signal.is_abandoned());
        })
        .unwrap();
        w.stop();
        assert_eq!(rx.recv().ok(), Some(false), "stop is not abandon");
        w.join().await;
    }

    #[test]
    fn abandon_implies_stopping_and_never_goes_back() {
        let s = Signal::default();
        assert!(!s.is_stopping());
        s.raise(ABANDONED);
        s.raise(STOPPING);
        assert!(s.is_stopping() && s.is_abandoned());
    }

    #[test]
    fn a_sleep_lasts_its_period_unless_told_to_stop() {
        let s = Signal::default();
        let started = Instant::now();
        assert!(s.sleep(Duration::from_millis(150)));
        assert!(started.elapsed() >= Duration::from_millis(150));

        let theirs = s.clone();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            theirs.raise(STOPPING);
        });
        let started = Instant::now();
        assert!(!s.sleep(Duration::from_secs(60)), "a stop ends the sleep");
        assert!(started.elapsed() < Duration::from_secs(30));
        stopper.join().unwrap();
        assert!(!s.sleep(Duration::ZERO), "stopped stays stopped");
    }
}
