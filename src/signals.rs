//! SIGINT/SIGTERM: stop writing cleanly (finish the IOs in flight, flush,
//! close the manifest) instead of dying mid-burst.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

fn flag() -> &'static Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Route SIGINT and SIGTERM to the stop flag. A second signal of the same
/// kind while stopping ends the process at once (the usual double Ctrl-C).
pub fn install() {
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(flag()));
        let _ = signal_hook::flag::register(signal, Arc::clone(flag()));
    }
}

pub fn stop_requested() -> bool {
    flag().load(Ordering::Relaxed)
}

/// Ask a running phase to stop (as a signal would).
pub fn request_stop() {
    flag().store(true, Ordering::Relaxed);
}
