//! The progress bar: on standard error, and only when that is a terminal (never in a log
//! or a pipe, and never with `--json` or `--csv`, whose output is for machines).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

/// Drawn 20 times over a run.
pub(super) struct Progress {
    what: &'static str,
    total: u64,
    step: u64,
    done: AtomicU64,
    shown: bool,
}

impl Progress {
    pub(super) fn new(what: &'static str, total: u64, for_machines: bool) -> Self {
        let shown = !for_machines && std::io::stderr().is_terminal();
        Progress { what, total, step: (total / 20).max(1), done: AtomicU64::new(0), shown }
    }

    /// One more done (from any task).
    pub(super) fn tick(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if !self.shown || (!done.is_multiple_of(self.step) && done != self.total) {
            return;
        }
        let filled = (done * 20 / self.total.max(1)) as usize;
        eprint!(
            "\r[{}{}] {done}/{} {}",
            "#".repeat(filled.min(20)),
            " ".repeat(20 - filled.min(20)),
            self.total,
            self.what
        );
    }

    pub(super) fn finish(&self) {
        if self.shown {
            eprintln!();
        }
    }
}
