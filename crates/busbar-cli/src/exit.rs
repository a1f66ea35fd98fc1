//! Exit codes, one table for every command (also in `busbar --help` and the README):
//!
//! * 0: done; a command that runs until it is stopped (`serve`, `monitor`, `bridge`,
//!   `gateway`, `tcp-bridge`, `rest-proxy`, `sub` without `--count`) stopped by Ctrl-C or
//!   SIGTERM, having finished what it had in hand;
//! * 1: an error (connection, configuration, input), described in one line;
//! * 2: the command line is wrong (clap's own code), or asks a `--profile` for something its
//!   wire has no place for;
//! * 3: a deadline passed (`sub --timeout` with fewer messages than `--count`, `call`
//!   without an answer: on MQTT, which cannot tell that nobody serves, that too);
//! * 4: the remote side answered with an error (`call` to a service that failed, an action
//!   aborted);
//! * 5: messages were lost on the way (`sub` whose subscription dropped messages because it
//!   read slower than they came);
//! * 6: nobody serves what was called, where the broker can tell at once (NATS, Redis,
//!   AMQP, the in-process bus);
//! * 130: interrupted by Ctrl-C before a command that ends by itself was done (`sub
//!   --count` short of its count; `pub`, `call` and `bench` end by the signal itself, which
//!   a shell reports as 130, or 143 for SIGTERM).

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
/// Nobody serves what was called.
pub const NOBODY: u8 = 6;
/// Interrupted before done.
pub const INTERRUPTED: u8 = 130;

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

    /// Runs a step of a command's start (connecting, subscribing), which a press or a
    /// termination request ends: the command exits 130, interrupted before it was done,
    /// instead of finishing a start (a connect's patience, a broker that does not answer)
    /// that nobody waits for any more.
    pub async fn before<T>(
        &mut self,
        step: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        tokio::select! {
            done = step => done,
            () = self.next() => Err(with(INTERRUPTED, "interrupted while starting")),
        }
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
