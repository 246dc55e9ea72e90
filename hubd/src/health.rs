//! Readiness as a latch: hubd is ready once every component it waits for (the
//! store, each slot supervisor) has reported in, and stays ready after that.
//! Liveness is answered by the API task itself: if it answers, it is alive.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// Components still to report before the hub is ready.
#[derive(Debug)]
pub struct Readiness {
    pending: Mutex<BTreeSet<String>>,
}

impl Readiness {
    /// Waits for each of `components` (e.g. `store`, `slot 3`).
    pub fn new(components: impl IntoIterator<Item = String>) -> Readiness {
        Readiness {
            pending: Mutex::new(components.into_iter().collect()),
        }
    }

    /// `component` has started.
    pub fn report(&self, component: &str) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.remove(component) && pending.is_empty() {
            tracing::info!("hub ready");
        }
    }

    /// Components that have not reported yet; empty once ready.
    pub fn pending(&self) -> Vec<String> {
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.iter().cloned().collect()
    }

    /// Whether every component has reported.
    pub fn is_ready(&self) -> bool {
        self.pending().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latches_once_every_component_reported() {
        let r = Readiness::new(["store".to_owned(), "slot 1".to_owned()]);
        assert!(!r.is_ready());
        r.report("store");
        r.report("unknown");
        assert_eq!(r.pending(), vec!["slot 1".to_owned()]);
        r.report("slot 1");
        assert!(r.is_ready());
        r.report("slot 1");
        assert!(r.is_ready());
    }
}
