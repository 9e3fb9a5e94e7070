//! Crash points: `MURPHY_CRASH_AT=<point>` makes murphy SIGKILL itself at that point, so tests
//! can prove recovery from a kill -9 between any two steps, not just where a timer lands.
//!
//! Points: `stage-exited:<stage>` (commands done, outputs not yet stored),
//! `objects-stored:<stage>` (objects synced, record not written), `record-written:<stage>`
//! (record written, success not journalled), `objects-shared:<stage>` (objects uploaded to the
//! shared store, its record not), and `journal-append:<n>` (the n-th journal
//! append of this process is torn in half). The variable never reaches stages.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

fn target() -> Option<&'static str> {
    static TARGET: OnceLock<Option<String>> = OnceLock::new();
    TARGET
        .get_or_init(|| std::env::var("MURPHY_CRASH_AT").ok())
        .as_deref()
}

/// Dies by SIGKILL if `point` (with `stage`) is the one asked for.
pub fn at(point: &str, stage: &str) {
    if let Some(target) = target()
        && target.split_once(':') == Some((point, stage))
    {
        die();
    }
}

/// Counts journal appends; `true` when this one is to be torn.
pub fn tear_journal_append() -> bool {
    static APPENDS: AtomicU64 = AtomicU64::new(0);
    let Some(n) = target()
        .and_then(|t| t.strip_prefix("journal-append:"))
        .and_then(|n| n.parse::<u64>().ok())
    else {
        return false;
    };
    APPENDS.fetch_add(1, Ordering::SeqCst) + 1 == n
}

pub fn die() -> ! {
    // SAFETY: kill and getpid have no preconditions; SIGKILL cannot be caught.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    unreachable!("SIGKILL is not survivable")
}
