//! A PostgreSQL server of a test's own: two Tansu brokers storing in one database form one
//! Kafka cluster. Tansu 0.6's queries need PostgreSQL 16 or later (a subquery in `FROM`
//! without an alias), newer than what Debian 12 packages, so the server is the build the
//! PyPI package `pgserver` ships (PostgreSQL 16.2), which `scripts/test-all` installs in
//! `target/pg-venv`; `$BUSBAR_POSTGRES_BIN` names another `bin` directory.
//!
//! The server listens on a free loopback port, trusts loopback connections, and lives in a
//! temporary directory removed with it. PostgreSQL refuses to run as root: as root, it runs
//! as `nobody` (through `setpriv`).

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::process::{ScratchDir, kill_and_reap, log_tail};
use crate::{READY_TIMEOUT, TestkitError, free_port};

/// A running PostgreSQL server, killed (by its pid) and its files removed when dropped.
#[derive(Debug)]
pub struct PostgresServer {
    child: Child,
    port: u16,
    bin: PathBuf,
    // Dropped last: the server is gone before its files are.
    _dir: ScratchDir,
}

impl PostgresServer {
    /// Makes a database cluster in a temporary directory and starts the server on it,
    /// returned once it accepts connections.
    ///
    /// # Errors
    ///
    /// [`TestkitError::BinaryMissing`] without the binaries; [`TestkitError::Admin`] when
    /// `initdb` fails; any error from starting or waiting for the server.
    pub async fn start() -> Result<PostgresServer, TestkitError> {
        let bin = binaries()?;
        let dir = ScratchDir::new("postgres")?;
        let data = dir.path().join("data");
        let as_root = is_root();
        if as_root {
            // `nobody` writes the cluster and the server's socket here.
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777))
                .map_err(|source| TestkitError::Prepare { path: dir.path().into(), source })?;
        }
        let initdb = unprivileged(as_root, &bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|source| TestkitError::Spawn { program: bin.join("initdb"), source })?;
        if !initdb.status.success() {
            return Err(TestkitError::Admin {
                action: "make a PostgreSQL database cluster",
                reason: String::from_utf8_lossy(&initdb.stderr).trim().to_owned(),
            });
        }
        let port = free_port()?;
        let log_path = dir.path().join("postgres.log");
        let log = fs::File::create(&log_path)
            .map_err(|source| TestkitError::Prepare { path: log_path.clone(), source })?;
        let log_err = log
            .try_clone()
            .map_err(|source| TestkitError::Prepare { path: log_path.clone(), source })?;
        let child = unprivileged(as_root, &bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-k")
            .arg(dir.path())
            // The server is never killed in these tests, only its clients.
            .args(["-c", "fsync=off"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| TestkitError::Spawn { program: bin.join("postgres"), source })?;
        let mut server = PostgresServer { child, port, bin, _dir: dir };
        server.wait_ready(&log_path).await?;
        Ok(server)
    }

    /// The URL of database `name` on this server, as a client gives it.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates database `name` and runs the SQL file `schema` in it (stopping at its first
    /// error).
    ///
    /// # Errors
    ///
    /// [`TestkitError::Admin`] with psql's message.
    pub async fn create_database(&self, name: &str, schema: &Path) -> Result<(), TestkitError> {
        self.psql("postgres", &["-c", &format!("create database {name}")]).await?;
        let file = schema.to_string_lossy();
        self.psql(name, &["-q", "-v", "ON_ERROR_STOP=1", "-f", &file]).await
    }

    async fn psql(&self, database: &str, args: &[&str]) -> Result<(), TestkitError> {
        let output = Command::new(self.bin.join("psql"))
            .arg(self.url(database))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|source| TestkitError::Spawn { program: self.bin.join("psql"), source })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(TestkitError::Admin {
                action: "set up a PostgreSQL database",
                reason: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }

    async fn wait_ready(&mut self, log_path: &Path) -> Result<(), TestkitError> {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(TestkitError::Exited {
                    name: "postgres",
                    port: self.port,
                    status,
                    log_tail: log_tail(log_path),
                });
            }
            let connect = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(250), connect).await {
                return Ok(());
            }
            if started.elapsed() >= READY_TIMEOUT {
                return Err(TestkitError::NotReady {
                    name: "postgres",
                    port: self.port,
                    waited: started.elapsed(),
                    log_tail: log_tail(log_path),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// `program` as a command, run as `nobody` when this process is root.
fn unprivileged(as_root: bool, program: &Path) -> Command {
    if as_root {
        let mut command = Command::new("setpriv");
        command.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The `bin` directory with `initdb`, `postgres` and `psql`.
fn binaries() -> Result<PathBuf, TestkitError> {
    if let Some(dir) = std::env::var_os("BUSBAR_POSTGRES_BIN").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/pg-venv/lib");
    fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .map(|python| python.path().join("site-packages/pgserver/pginstall/bin"))
        .find(|bin| bin.join("postgres").is_file())
        .ok_or(TestkitError::BinaryMissing { name: "postgres 16 (pgserver, by scripts/test-all)" })
}
