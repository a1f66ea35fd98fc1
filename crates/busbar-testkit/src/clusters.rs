//! Brokers in groups on free loopback ports, for failover tests: a NATS cluster, a
//! RabbitMQ cluster, a Redis master with a replica watched by a Sentinel, and two Tansu
//! (Kafka) brokers sharing one PostgreSQL database. Each member is a [`BrokerProcess`]
//! of its own, so a test kills one by its pid as it would a single broker.

use std::fmt::Write as _;
use std::fs;
use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::postgres::PostgresServer;
use crate::process::{BrokerProcess, rabbitmq_node_name};
use crate::shared::BrokerKind;
use crate::{NatsConfig, READY_TIMEOUT, TestkitError, free_port};

/// How long a group may take to form (routes connected, a replica in sync, a Sentinel
/// aware of it).
const FORM_TIMEOUT: Duration = Duration::from_secs(20);

/// `size` nats-server processes routed to each other as one cluster (`busbar`), with
/// JetStream (each its own store), returned once each one announces the others to its
/// clients (JetStream may still be electing its leader for a moment). Connect with all their URLs in a
/// list (see [`server_list`]).
///
/// # Errors
///
/// Any error from starting a member, or [`TestkitError::Admin`] when the cluster does not
/// form within 20 s.
pub async fn nats_cluster(size: usize) -> Result<Vec<BrokerProcess>, TestkitError> {
    let route_ports: Vec<u16> = (0..size).map(|_| free_port()).collect::<Result<_, _>>()?;
    let mut nodes = Vec::with_capacity(size);
    for (i, port) in route_ports.iter().enumerate() {
        let routes: Vec<String> = route_ports
            .iter()
            .filter(|p| *p != port)
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect();
        let config = NatsConfig::new()
            .jetstream()
            .line(format!("server_name: busbar-{i}"))
            .line("cluster {")
            .line("  name: busbar")
            .line(format!("  listen: 127.0.0.1:{port}"))
            .line(format!("  routes: [{}]", routes.join(", ")))
            .line("}");
        nodes.push(BrokerProcess::nats_with_config(config).await?);
    }
    let deadline = Instant::now() + FORM_TIMEOUT;
    for node in &nodes {
        loop {
            let info = first_line(node.port()).await.unwrap_or_default();
            // Every member lists the client URLs of the others once routed to them.
            let others = nodes.iter().filter(|n| n.port() != node.port());
            if others.clone().all(|n| info.contains(&format!("127.0.0.1:{}", n.port()))) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(TestkitError::Admin {
                    action: "form a NATS cluster",
                    reason: format!("node {} never listed the others: {info}", node.port()),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(nodes)
}

/// `size` RabbitMQ nodes of their own (see [`BrokerProcess::rabbitmq`]) joined in one
/// cluster: each node after the first stops its application, joins the first and starts
/// again, with the `rabbitmqctl` of the installation (run as this user, so it shares the
/// nodes' Erlang cookie). Returned once every node runs as a member; queues declared then
/// are cluster-wide, and a quorum queue is replicated on every node.
///
/// # Errors
///
/// Any error from starting a node, or [`TestkitError::Admin`] when `rabbitmqctl` is
/// missing or a node does not join.
pub async fn rabbitmq_cluster(size: usize) -> Result<Vec<BrokerProcess>, TestkitError> {
    let mut nodes = Vec::with_capacity(size);
    for _ in 0..size {
        nodes.push(BrokerProcess::rabbitmq().await?);
    }
    let Some(first) = nodes.first() else { return Ok(nodes) };
    let seed = rabbitmq_node_name(first.port());
    for node in &nodes[1..] {
        let name = rabbitmq_node_name(node.port());
        for command in [&["stop_app"][..], &["join_cluster", &seed], &["start_app"]] {
            rabbitmqctl(&name, command).await?;
        }
    }
    // Every node lists all the others as running members.
    for node in &nodes {
        let name = rabbitmq_node_name(node.port());
        let status = rabbitmqctl(&name, &["cluster_status", "--formatter", "json"]).await?;
        let running = status.split("\"running_nodes\"").nth(1).unwrap_or_default();
        if let Some(missing) =
            nodes.iter().map(|n| rabbitmq_node_name(n.port())).find(|n| !running.contains(n))
        {
            return Err(TestkitError::Admin {
                action: "form a RabbitMQ cluster",
                reason: format!("{name} does not list {missing} as running: {status}"),
            });
        }
    }
    Ok(nodes)
}

/// Runs the installation's `rabbitmqctl -n NODE COMMAND...` and returns what it printed.
async fn rabbitmqctl(node: &str, command: &[&str]) -> Result<String, TestkitError> {
    // Debian's /usr/sbin/rabbitmqctl would switch to the rabbitmq user, whose Erlang cookie
    // the test's nodes do not have.
    let program = "/usr/lib/rabbitmq/bin/rabbitmqctl";
    let admin = |reason: String| TestkitError::Admin { action: "run rabbitmqctl", reason };
    let run = tokio::process::Command::new(program)
        .arg("-n")
        .arg(node)
        .args(command)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(FORM_TIMEOUT * 3, run)
        .await
        .map_err(|_| {
            admin(format!("{} on {node} took over {:?}", command.join(" "), FORM_TIMEOUT * 3))
        })?
        .map_err(|e| admin(format!("{program}: {e}")))?;
    if !out.status.success() {
        return Err(admin(format!(
            "{} on {node}: {}{}",
            command.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The URL of a server list: `SCHEME://127.0.0.1:P1,127.0.0.1:P2,...` for `brokers`, in
/// that order.
pub fn server_list(scheme: &str, brokers: &[&BrokerProcess]) -> String {
    let servers: Vec<String> = brokers.iter().map(|b| format!("127.0.0.1:{}", b.port())).collect();
    format!("{scheme}://{}", servers.join(","))
}

/// A Redis master, a replica of it, and a Sentinel watching them as the group
/// [`SENTINEL_GROUP`] (down after 500 ms, quorum 1), so that killing the master has the
/// replica promoted within a few seconds.
#[derive(Debug)]
pub struct SentinelGroup {
    /// The master at the start.
    pub master: BrokerProcess,
    /// Its replica, in sync when the group is returned.
    pub replica: BrokerProcess,
    /// The Sentinel (connect to it with `redis://127.0.0.1:PORT?sentinel=busbar`).
    pub sentinel: BrokerProcess,
}

/// The master group name the Sentinel of a [`SentinelGroup`] watches.
pub const SENTINEL_GROUP: &str = "busbar";

impl SentinelGroup {
    /// Starts the master, the replica (returned once its link to the master is up) and the
    /// Sentinel (returned once it knows the replica, which it must to promote it).
    ///
    /// # Errors
    ///
    /// Any error from starting a member, or [`TestkitError::Admin`] when the group does not
    /// form within 20 s.
    pub async fn start() -> Result<SentinelGroup, TestkitError> {
        let master = BrokerProcess::redis().await?;
        let replica = BrokerProcess::redis_with(
            vec!["--replicaof".into(), "127.0.0.1".into(), master.port().to_string().into()],
            false,
        )
        .await?;
        wait_for_reply(replica.port(), &["INFO", "replication"], "master_link_status:up").await?;
        let master_port = master.port();
        let sentinel = BrokerProcess::start("redis-server", BrokerKind::Redis, |dir, port| {
            let mut text = String::from("# generated by busbar-testkit\n");
            // Writing to a String cannot fail.
            let _ = writeln!(text, "port {port}\nbind 127.0.0.1\ndaemonize no");
            let _ = writeln!(text, "dir {}", dir.display());
            let _ = writeln!(text, "sentinel monitor {SENTINEL_GROUP} 127.0.0.1 {master_port} 1");
            let _ = writeln!(text, "sentinel down-after-milliseconds {SENTINEL_GROUP} 500");
            let _ = writeln!(text, "sentinel failover-timeout {SENTINEL_GROUP} 5000");
            // The Sentinel rewrites its configuration file: it lives in the scratch directory.
            let conf = dir.join("sentinel.conf");
            fs::write(&conf, text)
                .map_err(|source| TestkitError::Prepare { path: conf.clone(), source })?;
            Ok(vec![conf.into_os_string(), "--sentinel".into()])
        })
        .await?;
        let replica_port = replica.port().to_string();
        wait_for_reply(sentinel.port(), &["SENTINEL", "replicas", SENTINEL_GROUP], &replica_port)
            .await?;
        Ok(SentinelGroup { master, replica, sentinel })
    }
}

/// Two Tansu brokers storing in one PostgreSQL database (on a server of their own): one
/// Kafka cluster, every broker serving every partition from the shared tables, so a client
/// that loses one reads and writes the same log through the other. The schema is
/// busbar's `tansu-postgres.sql` (Tansu does not create its tables in PostgreSQL).
#[derive(Debug)]
pub struct TansuPair {
    /// The brokers, first the one a list should name first. Dropped before the database.
    pub brokers: Vec<BrokerProcess>,
    /// Kept running while the brokers are.
    _database: PostgresServer,
}

impl TansuPair {
    /// Starts the database server, loads the schema and starts both brokers on it.
    ///
    /// # Errors
    ///
    /// [`TestkitError::BinaryMissing`] without PostgreSQL 16 or a Tansu build with
    /// PostgreSQL storage; any error from loading the schema or starting a process.
    pub async fn start() -> Result<TansuPair, TestkitError> {
        let database = PostgresServer::start().await?;
        let schema = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tansu-postgres.sql");
        database.create_database("tansu", &schema).await?;
        // A loopback server of the test's own: no TLS.
        let storage = format!("{}?sslmode=disable", database.url("tansu"));
        let mut brokers = Vec::with_capacity(2);
        for _ in 0..2 {
            brokers.push(BrokerProcess::tansu_storing_in(&storage).await?);
        }
        Ok(TansuPair { brokers, _database: database })
    }
}

/// Waits until the reply of a Redis server on `port` to `command` contains `needle`.
async fn wait_for_reply(port: u16, command: &[&str], needle: &str) -> Result<(), TestkitError> {
    let deadline = Instant::now() + FORM_TIMEOUT;
    loop {
        let reply = redis_reply(port, command).await.unwrap_or_default();
        if reply.contains(needle) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(TestkitError::Admin {
                action: "form a Redis replication group",
                reason: format!(
                    "{} on port {port} never answered with {needle:?}",
                    command.join(" ")
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a Redis server answers `command` with, as text, read until it pauses: enough to
/// look for a word in (no RESP parsing).
async fn redis_reply(port: u16, command: &[&str]) -> std::io::Result<String> {
    let mut stream = connect(port).await?;
    let mut request = format!("*{}\r\n", command.len());
    for part in command {
        let _ = write!(request, "${}\r\n{part}\r\n", part.len());
    }
    stream.write_all(request.as_bytes()).await?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await
    {
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// The first line a server sends on connecting (a NATS server's `INFO {...}`).
async fn first_line(port: u16) -> std::io::Result<String> {
    let mut stream = connect(port).await?;
    let mut line = Vec::new();
    let mut buf = [0u8; 4096];
    while !line.contains(&b'\n') {
        match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => line.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

async fn connect(port: u16) -> std::io::Result<TcpStream> {
    match tokio::time::timeout(READY_TIMEOUT, TcpStream::connect((Ipv4Addr::LOCALHOST, port))).await
    {
        Ok(connected) => connected,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")),
    }
}
