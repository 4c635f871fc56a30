//! The local supervisor of `tidewater run --replicas`: starts and stops scheduler
//! processes (this binary, plain `tidewater run`) on one host to follow a target count.
//!
//! - Stopping is graceful: SIGTERM, then the process drains; SIGKILL only if it has not
//!   exited `stop_timeout` later.
//! - A process that exits on its own is restarted, with a backoff doubling from 1 s up to
//!   30 s while processes keep exiting within 30 s of their start.
//! - No orphans: children get SIGTERM when the supervisor exits normally; each child also
//!   asks the kernel (`PR_SET_PDEATHSIG`, see [`adopt_parent_death_signal`]) to send it
//!   SIGTERM if the supervisor dies without doing so (kill -9).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::ScaleError;
use crate::names::{env, metrics as m};

/// How the supervisor starts one scheduler process.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// The program (normally `std::env::current_exe()`).
    pub program: OsString,
    /// Its arguments; `--metrics-listen <address>` is added per child (see `metrics`).
    pub args: Vec<OsString>,
    /// Where the children serve metrics, so a static Prometheus configuration finds
    /// them: `Some(base)` with a port gives the child in slot `k` the port
    /// `base + 1 + k`; a base port of 0 gives each a free port; `None` turns them off.
    pub metrics: Option<SocketAddr>,
}

impl ChildSpec {
    /// The `--metrics-listen` value of the child in `slot`.
    pub fn metrics_listen(&self, slot: usize) -> String {
        match self.metrics {
            None => "off".into(),
            Some(base) if base.port() == 0 => SocketAddr::new(base.ip(), 0).to_string(),
            Some(base) => {
                let port = u16::try_from(slot)
                    .ok()
                    .and_then(|k| base.port().checked_add(1)?.checked_add(k))
                    .unwrap_or(0);
                SocketAddr::new(base.ip(), port).to_string()
            }
        }
    }
}

/// The lowest slot no child holds: a replacement takes the slot (and metrics port) of
/// the process it replaces, so scrape targets stay the same across restarts.
pub fn free_slot(used: impl IntoIterator<Item = usize>) -> usize {
    let used: std::collections::BTreeSet<usize> = used.into_iter().collect();
    (0..).find(|k| !used.contains(k)).unwrap_or(used.len())
}

/// The count to follow.
pub enum Target {
    /// A fixed count.
    Pinned(u32),
    /// The controller's desired count, capped.
    Auto {
        /// The desired count.
        desired: watch::Receiver<u32>,
        /// Most processes to run.
        max: u32,
    },
}

impl Target {
    fn get(&self) -> u32 {
        match self {
            Target::Pinned(n) => *n,
            Target::Auto { desired, max } => (*desired.borrow()).min(*max),
        }
    }
}

struct Running {
    child: Child,
    pid: u32,
    slot: usize,
    started: Instant,
}

struct Stopping {
    child: Child,
    pid: u32,
    /// Held until the process is gone: its metrics port is still bound.
    slot: usize,
    deadline: Instant,
}

const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const TICK: Duration = Duration::from_millis(250);

/// Called first thing by a scheduler process started by a supervisor (the
/// [`env::SUPERVISOR_PID`] variable is set): asks the kernel to send SIGTERM when the
/// supervisor dies, and exits at once if it already has. Returns whether it applied.
pub fn adopt_parent_death_signal() -> bool {
    let Some(parent) = std::env::var(env::SUPERVISOR_PID)
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
    else {
        return false;
    };
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM) {
        warn!(error = %e, "cannot set the parent-death signal");
        return false;
    }
    // The supervisor may have died between fork and prctl.
    if nix::unistd::getppid().as_raw() != parent {
        std::process::exit(1);
    }
    true
}

/// Runs scheduler processes following `target` until `shutdown`, then stops them all.
/// `stop_timeout` is how long a stopped process may drain before SIGKILL.
pub async fn supervise(
    spec: ChildSpec,
    mut target: Target,
    stop_timeout: Duration,
    shutdown: CancellationToken,
) -> Result<(), ScaleError> {
    let mut running: Vec<Running> = Vec::new();
    let mut stopping: Vec<Stopping> = Vec::new();
    let mut backoff = BACKOFF_MIN;
    let mut next_start = Instant::now();
    let mut last_target = None;
    loop {
        // Reap processes that exited on their own: restart them (with backoff).
        let mut i = 0;
        while i < running.len() {
            match running[i].child.try_wait() {
                Ok(Some(status)) => {
                    let r = running.swap_remove(i);
                    let lived = r.started.elapsed();
                    backoff = if lived > BACKOFF_MAX {
                        BACKOFF_MIN
                    } else {
                        (backoff * 2).min(BACKOFF_MAX)
                    };
                    next_start = Instant::now() + backoff;
                    ::metrics::counter!(m::REPLICA_RESTARTS).increment(1);
                    warn!(pid = r.pid, %status, lived_ms = lived.as_millis() as u64, backoff_ms = backoff.as_millis() as u64, "scheduler process exited; restarting it");
                }
                Ok(None) => i += 1,
                Err(e) => {
                    warn!(pid = running[i].pid, error = %e, "cannot check a scheduler process");
                    i += 1;
                }
            }
        }
        reap_stopping(&mut stopping);
        if shutdown.is_cancelled() {
            break;
        }
        let want = usize::try_from(target.get()).unwrap_or(usize::MAX);
        if last_target != Some(want) {
            info!(replicas = want, running = running.len(), "replica target");
            last_target = Some(want);
        }
        while running.len() < want && Instant::now() >= next_start {
            let slot = free_slot(
                running
                    .iter()
                    .map(|r| r.slot)
                    .chain(stopping.iter().map(|s| s.slot)),
            );
            match start(&spec, slot) {
                Ok(r) => {
                    info!(pid = r.pid, slot, metrics = %spec.metrics_listen(slot), "scheduler process started");
                    running.push(r);
                }
                Err(e) => {
                    warn!(error = %e, "cannot start a scheduler process");
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    next_start = Instant::now() + backoff;
                    break;
                }
            }
        }
        while running.len() > want {
            // The newest goes first: the oldest hold the longest-warmed assignments.
            let Some(r) = running.pop() else { break };
            info!(pid = r.pid, "stopping a scheduler process (scale in)");
            stopping.push(terminate(r, stop_timeout));
        }
        ::metrics::gauge!(m::REPLICAS).set(running.len() as f64);
        let desired_changed = async {
            match &mut target {
                Target::Auto { desired, .. } => {
                    if desired.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                Target::Pinned(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = desired_changed => {}
            _ = shutdown.cancelled() => {}
        }
    }
    info!(running = running.len(), "stopping all scheduler processes");
    for r in running.drain(..) {
        stopping.push(terminate(r, stop_timeout));
    }
    ::metrics::gauge!(m::REPLICAS).set(0.0);
    while !stopping.is_empty() {
        reap_stopping(&mut stopping);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn start(spec: &ChildSpec, slot: usize) -> Result<Running, ScaleError> {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .arg("--metrics-listen")
        .arg(spec.metrics_listen(slot))
        .env(env::SUPERVISOR_PID, std::process::id().to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|source| ScaleError::Spawn {
        program: spec.program.to_string_lossy().into_owned(),
        source,
    })?;
    let pid = child.id().unwrap_or(0);
    Ok(Running {
        child,
        pid,
        slot,
        started: Instant::now(),
    })
}

fn terminate(r: Running, timeout: Duration) -> Stopping {
    if let Ok(pid) = i32::try_from(r.pid) {
        if let Err(e) = kill(Pid::from_raw(pid), Signal::SIGTERM) {
            warn!(pid = r.pid, error = %e, "cannot signal a scheduler process");
        }
    }
    Stopping {
        child: r.child,
        pid: r.pid,
        slot: r.slot,
        deadline: Instant::now() + timeout,
    }
}

fn reap_stopping(stopping: &mut Vec<Stopping>) {
    stopping.retain_mut(|s| match s.child.try_wait() {
        Ok(Some(status)) => {
            info!(pid = s.pid, %status, "scheduler process stopped");
            false
        }
        Ok(None) => {
            if Instant::now() > s.deadline {
                warn!(
                    pid = s.pid,
                    "scheduler process did not stop in time: killing it"
                );
                let _ = s.child.start_kill();
                s.deadline = Instant::now() + Duration::from_secs(5);
            }
            true
        }
        Err(_) => false,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_get_the_lowest_free_slot_and_a_port_above_the_base() {
        assert_eq!(free_slot([]), 0);
        assert_eq!(
            free_slot([0, 1, 3]),
            2,
            "a replacement takes the freed slot"
        );
        assert_eq!(free_slot([1, 0]), 2);
        let spec = |metrics: Option<&str>| ChildSpec {
            program: "tidewater".into(),
            args: Vec::new(),
            metrics: metrics.map(|m| m.parse().unwrap()),
        };
        let fixed = spec(Some("0.0.0.0:9464"));
        assert_eq!(fixed.metrics_listen(0), "0.0.0.0:9465");
        assert_eq!(fixed.metrics_listen(3), "0.0.0.0:9468");
        assert_eq!(spec(Some("127.0.0.1:0")).metrics_listen(2), "127.0.0.1:0");
        assert_eq!(spec(None).metrics_listen(0), "off");
        assert_eq!(
            spec(Some("127.0.0.1:65535")).metrics_listen(0),
            "127.0.0.1:0",
            "no port past 65535"
        );
    }
}
