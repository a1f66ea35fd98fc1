//! The testkit's error type.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Why a testkit operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// The broker's executable is not installed (not on `PATH`, nor in the usual `sbin`
    /// directories).
    #[error("broker binary `{name}` not found on PATH or in /usr/local/sbin, /usr/sbin, /sbin")]
    BinaryMissing {
        /// The executable's file name, e.g. `mosquitto`.
        name: &'static str,
    },

    /// No free loopback port could be found.
    #[error("could not find a free port on 127.0.0.1: {source}")]
    FreePort {
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },

    /// The temporary directory, configuration file or log file could not be written.
    #[error("could not prepare {path}: {source}")]
    Prepare {
        /// The file or directory being created.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },

    /// The broker process could not be spawned.
    #[error("could not spawn `{program}`: {source}")]
    Spawn {
        /// The executable that was run.
        program: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },

    /// The broker was still running but did not accept TCP connections before the deadline.
    #[error(
        "{name} did not accept connections on 127.0.0.1:{port} within {waited:?}; log tail:\n{log_tail}"
    )]
    NotReady {
        /// The broker's executable name.
        name: &'static str,
        /// The port it was told to listen on.
        port: u16,
        /// How long readiness was awaited.
        waited: Duration,
        /// The last lines of the broker's stdout/stderr log.
        log_tail: String,
    },

    /// The broker exited before it accepted TCP connections.
    #[error(
        "{name} exited ({status}) before accepting connections on 127.0.0.1:{port}; log tail:\n{log_tail}"
    )]
    Exited {
        /// The broker's executable name.
        name: &'static str,
        /// The port it was told to listen on.
        port: u16,
        /// How the process ended.
        status: ExitStatus,
        /// The last lines of the broker's stdout/stderr log.
        log_tail: String,
    },

    /// Checking on, killing or reaping the broker process failed.
    #[error("could not {action} {name} (pid {pid}): {source}")]
    Control {
        /// The broker's executable name.
        name: &'static str,
        /// The process id.
        pid: u32,
        /// What was attempted, e.g. `kill`.
        action: &'static str,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },

    /// A test certificate could not be made.
    #[error("could not make a test certificate: {0}")]
    Certificate(String),

    /// A broker refused or failed an administrative request made to set a test up.
    #[error("could not {action}: {reason}")]
    Admin {
        /// What was attempted, e.g. `add a SCRAM user`.
        action: &'static str,
        /// Why it failed.
        reason: String,
    },
}
