//! Readiness of this process: each component that can lose contact with Kafka says
//! whether it is making progress. `/readyz` on the metrics port answers 200 when every
//! component is ready and 503 with the reasons otherwise; the gauge
//! `tidewater_ready{component}` shows the same to Prometheus.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use metrics::gauge;

use crate::names::metrics as m;

/// The process's components and why those not ready are not.
#[derive(Debug, Default)]
pub struct Health {
    /// Component name → `None` when ready, else the reason.
    states: Mutex<BTreeMap<&'static str, Option<String>>>,
}

impl Health {
    /// The process-wide registry.
    pub fn global() -> &'static Health {
        static HEALTH: OnceLock<Health> = OnceLock::new();
        HEALTH.get_or_init(Health::default)
    }

    /// `component` is making progress.
    pub fn ready(&self, component: &'static str) {
        self.set(component, None);
    }

    /// `component` cannot make progress, for `reason` (shown by `/readyz`; it must not
    /// carry a secret).
    pub fn not_ready(&self, component: &'static str, reason: impl Into<String>) {
        self.set(component, Some(reason.into()));
    }

    fn set(&self, component: &'static str, state: Option<String>) {
        gauge!(m::READY, m::L_COMPONENT => component).set(if state.is_none() { 1.0 } else { 0.0 });
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        states.insert(component, state);
    }

    /// `Ok` when every registered component is ready, else each one that is not, with
    /// its reason.
    pub fn check(&self) -> Result<(), Vec<(&'static str, String)>> {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let failing: Vec<_> = states
            .iter()
            .filter_map(|(c, s)| s.as_ref().map(|r| (*c, r.clone())))
            .collect();
        if failing.is_empty() {
            Ok(())
        } else {
            Err(failing)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_component_is() {
        let h = Health::default();
        assert!(h.check().is_ok(), "nothing registered is ready");
        h.ready("consumer");
        h.not_ready("publisher", "no durable batch for 12s");
        let failing = h.check().unwrap_err();
        assert_eq!(
            failing,
            vec![("publisher", "no durable batch for 12s".to_string())]
        );
        h.ready("publisher");
        assert!(h.check().is_ok());
    }
}
