//! Wall-clock time as Tidewater's records carry it, and this process's identity.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it, `i64::MAX` past 2262).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The default id of a scheduler, indexer or controller instance: `<hostname>-<pid>`.
pub fn default_instance_id() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "tidewater".into());
    format!("{host}-{}", std::process::id())
}
