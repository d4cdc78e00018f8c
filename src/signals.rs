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
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(install_handlers);
}

fn install_handlers() {
    // Order matters: the shutdown check runs first, so only a signal that
    // finds the flag already set (the second one) ends the process.
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(flag()));
        let _ = signal_hook::flag::register(signal, Arc::clone(flag()));
    }
}

/// Human-readable progress lines go to stderr while stdout carries the
/// JSON report (`--json -`).
pub fn human_to_stderr(yes: bool) {
    HUMAN_TO_STDERR.store(yes, Ordering::Relaxed);
}

pub fn human_goes_to_stderr() -> bool {
    HUMAN_TO_STDERR.load(Ordering::Relaxed)
}

static HUMAN_TO_STDERR: AtomicBool = AtomicBool::new(false);

/// Print a line for people: stdout, or stderr when stdout is the report.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        if $crate::signals::human_goes_to_stderr() {
            eprintln!($($arg)*);
        } else {
            println!($($arg)*);
        }
    };
}

pub fn stop_requested() -> bool {
    flag().load(Ordering::Relaxed)
}

/// Ask a running phase to stop (as a signal would).
pub fn request_stop() {
    flag().store(true, Ordering::Relaxed);
}
