//! Peers in other languages, run as child processes for interop tests.
//!
//! A peer is a script that prints `@@ <json>` lines for the test (anything else on its
//! standard output, such as a library's log lines, is skipped) and reads lines from its
//! standard input when it waits for a go. Its first line of its own is `"READY"`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// How long a peer may stay silent before the test fails.
pub const PEER_SILENCE: Duration = Duration::from_secs(20);

/// The Python of a virtual environment at `venv` (relative paths are taken from the
/// workspace's `target/`), or the one named by the environment variable `var`; `None`, with
/// the test skipped (or failed when brokers are required), when there is none.
pub fn python(test: &str, var: &str, venv: &str) -> Option<PathBuf> {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target").join(venv).join("bin/python")
    });
    if path.exists() {
        return Some(path);
    }
    crate::skip(
        test,
        &format!("no Python environment at {} (scripts/test-all makes it)", path.display()),
    );
    None
}

/// A peer process; killed when dropped.
pub struct Peer {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// What it was started as, for failure messages.
    what: String,
}

impl Peer {
    /// Runs `program` with `args` and `env`, and waits for its `"READY"`.
    pub async fn start(program: &Path, args: &[String], env: &[(&str, &str)]) -> Peer {
        let mut child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the peer {}: {e}", program.display()));
        let stdout = child.stdout.take().expect("the peer's standard output");
        let what = format!("{args:?}");
        let mut peer = Peer { child, lines: BufReader::new(stdout).lines(), what };
        let started = std::time::Instant::now();
        let ready = peer.next().await;
        eprintln!("peer {} ready after {:?}", peer.what, started.elapsed());
        assert_eq!(ready, Value::from("READY"), "peer {} did not start", peer.what);
        peer
    }

    /// What the peer was started as.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The next line the peer printed for the test, probes (`{"probe": ...}`) aside.
    pub async fn next(&mut self) -> Value {
        loop {
            let v = self.next_line().await;
            if v.get("probe").is_none() {
                return v;
            }
        }
    }

    /// The next line the peer printed for the test, probes included.
    pub async fn next_line(&mut self) -> Value {
        loop {
            let line = tokio::time::timeout(PEER_SILENCE, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("peer {} did not answer in time", self.what))
                .expect("the peer's output")
                .unwrap_or_else(|| panic!("peer {} ended early", self.what));
            // Ours start at the mark, which a fragment of a library's logging may precede.
            let ours = line.find("@@ ").map(|at| &line[at + 3..]);
            if let Some(v) = ours.and_then(|l| serde_json::from_str(l).ok()) {
                return v;
            }
        }
    }

    /// Sends probes with `probe` until the peer reports one (`{"probe": true}`): its
    /// subscription is then in place.
    pub async fn wait_subscribed<F, Fut>(&mut self, mut probe: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        for _ in 0..50 {
            probe().await;
            let heard = tokio::time::timeout(Duration::from_millis(200), async {
                while self.next_line().await.get("probe").is_none() {}
            });
            if heard.await.is_ok() {
                return;
            }
        }
        panic!("peer {} never reported a probe", self.what);
    }

    /// Writes a line to the peer's standard input (a go).
    pub async fn go(&mut self) {
        let stdin = self.child.stdin.as_mut().expect("the peer's standard input");
        stdin.write_all(b"go\n").await.expect("tell the peer to go");
        stdin.flush().await.expect("flush");
    }

    /// Writes `command` to the peer's standard input as one JSON line.
    pub async fn send(&mut self, command: &Value) {
        let stdin = self.child.stdin.as_mut().expect("the peer's standard input");
        let mut line = command.to_string().into_bytes();
        line.push(b'\n');
        stdin.write_all(&line).await.expect("write to the peer");
        stdin.flush().await.expect("flush");
    }

    /// Waits for the peer to end on its own, successfully.
    pub async fn finished(mut self) {
        let status = tokio::time::timeout(PEER_SILENCE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("peer {} did not end in time", self.what))
            .expect("the peer's exit status");
        assert!(status.success(), "peer {} failed: {status}", self.what);
    }
}
