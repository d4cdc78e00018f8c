//! SIGINT/SIGTERM: stop writing cleanly (finish the IOs in flight, flush,
//! close the manifest) instead of dying mid-burst. A signal fires the
//! process-wide [`StopToken`]; the writer checks only the token it is given,
//! so tests stop it without signals and runs without one never stop.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// A request to stop, shared by whoever may ask (a signal handler, a test)
/// and the phase that checks it: clones share one flag. A new token fires
/// only when someone holding a clone calls [`StopToken::stop`].
#[derive(Clone, Debug, Default)]
pub struct StopToken(Arc<AtomicBool>);

impl StopToken {
    pub fn new() -> StopToken {
        StopToken::default()
    }

    /// Ask every holder of this token to stop.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn stop_requested(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The token SIGINT and SIGTERM fire (once [`install`] has run).
fn process_token() -> &'static StopToken {
    static TOKEN: OnceLock<StopToken> = OnceLock::new();
    TOKEN.get_or_init(StopToken::new)
}

/// Route SIGINT and SIGTERM to the process-wide stop token, and return it.
/// A second signal while stopping ends the process at once (the usual
/// double Ctrl-C) with status 128 + its number; the manifest's journal
/// covers the writes then in flight.
pub fn install() -> StopToken {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(install_handlers);
    process_token().clone()
}

fn install_handlers() {
    let flag = &process_token().0;
    // Order matters: the shutdown check runs first, so only a signal that
    // finds the flag already set (the second one) ends the process, with
    // the shell's status for that signal: 130 for SIGINT, 143 for SIGTERM.
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register_conditional_shutdown(
            signal,
            128 + signal,
            Arc::clone(flag),
        );
        let _ = signal_hook::flag::register(signal, Arc::clone(flag));
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

/// Print a line for people: stdout, or stderr when stdout is the report;
/// after the calling thread's line prefix, if it has one.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::signals::say_line(format_args!($($arg)*))
    };
}

thread_local! {
    static LINE_PREFIX: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Start every line this thread prints with `say!` with `prefix` (a run
/// over many targets names the target of each line).
pub fn set_line_prefix(prefix: String) {
    LINE_PREFIX.with(|p| *p.borrow_mut() = prefix);
}

/// The body of [`say!`].
pub fn say_line(line: std::fmt::Arguments<'_>) {
    LINE_PREFIX.with(|prefix| {
        let prefix = prefix.borrow();
        if human_goes_to_stderr() {
            eprintln!("{prefix}{line}");
        } else {
            println!("{prefix}{line}");
        }
    });
}

/// Whether the process was asked to stop (by a signal or `request_stop`).
pub fn stop_requested() -> bool {
    process_token().stop_requested()
}

/// Ask a running phase to stop (as a signal would).
pub fn request_stop() {
    process_token().stop();
}
