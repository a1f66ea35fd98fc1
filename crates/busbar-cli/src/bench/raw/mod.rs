//! `--compare`: the same run through the broker's own client crate, with no busbar in
//! between (for `mem://`, bare tokio channels), in the same process right after busbar's,
//! so the ratio holds whatever the machine is doing that hour. Payloads carry the same
//! frames and are tallied the same way.

mod amqp;
#[cfg(feature = "kafka")]
mod kafka;
mod mem;
mod mqtt;
mod nats;
mod redis;

use anyhow::bail;

use super::Args;
use super::figures::Figures;

/// The raw client's pub/sub run at `size` bytes against `url`.
pub(super) async fn pubsub(args: &Args, url: &str, size: usize) -> anyhow::Result<Figures> {
    match Server::parse(url)? {
        Raw::Mem => mem::pubsub(args, size).await,
        Raw::Amqp => amqp::pubsub(args, url, size).await,
        #[cfg(feature = "kafka")]
        Raw::Kafka(s) => kafka::pubsub(args, &s, size).await,
        Raw::Mqtt(s) => mqtt::pubsub(args, &s, size).await,
        Raw::Nats(s) => nats::pubsub(args, &s, size).await,
        Raw::Redis(s) => redis::pubsub(args, &s, size).await,
    }
}

/// The raw client's request/reply at `size` bytes against `url`.
pub(super) async fn rpc(args: &Args, url: &str, size: usize) -> anyhow::Result<Figures> {
    match Server::parse(url)? {
        Raw::Mem => mem::rpc(args, size).await,
        Raw::Amqp => amqp::rpc(args, url, size).await,
        #[cfg(feature = "kafka")]
        Raw::Kafka(s) => kafka::rpc(args, &s, size).await,
        Raw::Mqtt(s) => mqtt::rpc(args, &s, size).await,
        Raw::Nats(s) => nats::rpc(args, &s, size).await,
        Raw::Redis(_) => bail!(
            "--compare has no raw RPC on Redis: the redis crate has no request/reply of its \
             own to compare with (compare pub/sub, or use --pattern pubsub)"
        ),
    }
}

/// The first server of a URL, as the raw clients take it.
pub(super) struct Server {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) user: Option<(String, String)>,
}

enum Raw {
    Mem,
    /// lapin takes the URL as it is.
    Amqp,
    #[cfg(feature = "kafka")]
    Kafka(Server),
    Mqtt(Server),
    Nats(Server),
    Redis(Server),
}

impl Server {
    /// Which raw client to use for `url`, and its first server; anything the raw clients
    /// here do not cover is refused, naming why.
    fn parse(url: &str) -> anyhow::Result<Raw> {
        let (scheme, rest) = url.split_once("://").unwrap_or((url, ""));
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = authority.split('/').next().unwrap_or("");
        let (user, hosts) = match authority.rsplit_once('@') {
            Some((user, hosts)) => {
                let (name, pass) = user.split_once(':').unwrap_or((user, ""));
                (Some((name.to_owned(), pass.to_owned())), hosts)
            }
            None => (None, authority),
        };
        let first = hosts.split(',').next().unwrap_or("");
        let server = |default_port: u16| -> anyhow::Result<Server> {
            let (host, port) = match first.rsplit_once(':') {
                Some((h, p)) => {
                    (h, p.parse().map_err(|_| anyhow::anyhow!("bad port in {first:?}"))?)
                }
                None => (first, default_port),
            };
            let host = if host.is_empty() { "127.0.0.1" } else { host };
            Ok(Server { host: host.to_owned(), port, user: user.clone() })
        };
        Ok(match scheme.to_ascii_lowercase().as_str() {
            "mem" => Raw::Mem,
            // busbar's own parameters mean nothing to lapin.
            "amqp" if !query.is_empty() => bail!(
                "--compare hands the URL to lapin, which does not know busbar's ?parameters; \
                 drop them to compare"
            ),
            "amqp" => Raw::Amqp,
            "mqtt" if query.contains("version=3") || query.contains("version=4") => {
                bail!("--compare runs rumqttc's MQTT 5 client; drop ?version= to compare on MQTT 5")
            }
            "mqtt" => Raw::Mqtt(server(1883)?),
            "nats" => Raw::Nats(server(4222)?),
            "redis" => Raw::Redis(server(6379)?),
            #[cfg(feature = "kafka")]
            "kafka" => Raw::Kafka(server(9092)?),
            other => bail!(
                "--compare has no raw client for {other}:// here (it covers mem, mqtt, amqp, nats, \
                 redis and kafka over plain TCP)"
            ),
        })
    }
}

/// A topic name for a raw run, apart from busbar's.
pub(super) fn raw_name(separator: char) -> String {
    let run = super::run_number();
    format!("bench{separator}raw{separator}{}{separator}{run}", std::process::id())
}
