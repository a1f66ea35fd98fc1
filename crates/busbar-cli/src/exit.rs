//! Exit codes, documented in `busbar --help`:
//!
//! * 0: done;
//! * 1: an error (connection, configuration, input), described in one line;
//! * 2: the command line is wrong (clap's own code), or asks a `--profile` for something its
//!   wire has no place for;
//! * 3: a deadline passed (`sub --timeout` with fewer messages than `--count`, `call` without
//!   an answer);
//! * 4: the remote side answered with an error (`call` to a service that failed);
//! * 5: messages were lost on the way (`sub` whose subscription dropped messages because it
//!   read slower than they came).

/// An error that ends the program with a particular exit code.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// A deadline passed.
pub const TIMEOUT: u8 = 3;
/// The remote side failed.
pub const REMOTE: u8 = 4;
/// Messages were lost.
pub const LOST: u8 = 5;

pub fn with(code: u8, message: impl Into<String>) -> anyhow::Error {
    Exit { code, message: message.into() }.into()
}

/// Requests to stop: Ctrl-C presses (SIGINT) and, on Unix, termination requests (SIGTERM,
/// what systemd, container runtimes and `kill` send), counted from the moment this is made:
/// one that comes while the command is busy elsewhere (between two turns of its loop) is
/// kept until it is asked for, never lost. (A fresh `tokio::signal::ctrl_c()` per turn would
/// miss those, and once tokio handles the signal, a missed press does nothing at all.) Every
/// long-running command stops gracefully on either, as it does on Ctrl-C.
pub struct Interrupts {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Interrupts {
    pub fn new() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Interrupts {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Interrupts {})
    }

    /// The next press (or termination request).
    pub async fn next(&mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => {}
                _ = self.terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
