//! Findings told as soon as they are confirmed, while the verify (or the
//! writer's rolling read-back) goes on: what `--on-finding` and
//! `--stop-on-finding` act on. A verify re-reads the findings a watch
//! wants at once, on its checking threads, instead of after the last read.

use std::sync::Arc;

use super::Finding;

/// Told about persistent findings the moment they are confirmed.
/// Called from the checking threads: keep it quick (start work elsewhere).
pub trait FindingWatch: Send + Sync {
    /// Confirm this finding of `source` now? (Those it does not want are
    /// re-read at the end of the verify, as always.)
    fn wants(&self, finding: &Finding, source: &'static str) -> bool;
    /// A finding whose second read returned the same bytes (`persistent`),
    /// found by `source` (`verify`, `interval_verify`, `rolling_verify`,
    /// `disruption_verify`).
    fn confirmed(&self, finding: &Finding, source: &'static str);
}

/// A watch in the options of a verify or a write (which are `Clone` and
/// `Debug`), with the name of the check it watches.
#[derive(Clone)]
pub struct Watcher {
    watch: Arc<dyn FindingWatch>,
    source: &'static str,
}

impl Watcher {
    pub fn new(watch: Arc<dyn FindingWatch>, source: &'static str) -> Watcher {
        Watcher { watch, source }
    }

    /// The same watch, for another check.
    pub fn for_source(&self, source: &'static str) -> Watcher {
        Watcher {
            watch: Arc::clone(&self.watch),
            source,
        }
    }

    pub fn wants(&self, finding: &Finding) -> bool {
        self.watch.wants(finding, self.source)
    }

    pub fn confirmed(&self, finding: &Finding) {
        self.watch.confirmed(finding, self.source);
    }
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Watcher({})", self.source)
    }
}
