//! `busbar rest-proxy`: an RPC service that makes HTTP calls for its callers.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use busbar_rest_proxy::{RestProxy, RestProxyOptions, RestProxyService, Wire};

use crate::profile::{Dialect, Profile};
use crate::target::Target;

/// Options of `busbar rest-proxy`.
#[derive(clap::Args)]
pub struct Args {
    /// The service name (default `proxy.rest` with the commlib profile, as commlib's proxy;
    /// `proxy/rest` otherwise).
    #[arg(long)]
    name: Option<String>,
    /// A host the proxy may call, `HOST` or `HOST:PORT` (repeatable). One of `--allow` and
    /// `--allow-any` is needed: a proxy anyone on the bus can use reaches whatever its
    /// machine reaches.
    #[arg(long = "allow", value_name = "HOST[:PORT]", required_unless_present = "allow_any")]
    allow: Vec<String>,
    /// Let the proxy call any host.
    #[arg(long, conflicts_with = "allow")]
    allow_any: bool,
    /// How long one HTTP call may take (`10s`).
    #[arg(long, default_value = "10s", value_parser = crate::message::positive_duration)]
    timeout: Duration,
    /// PEM file of the certificate authorities for https calls (default: the system's).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    #[command(flatten)]
    metrics: crate::metrics::MetricsArgs,
    #[command(flatten)]
    dialect: Dialect,
    #[command(flatten)]
    target: Target,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let wire = match args.dialect.profile {
        Profile::Busbar => Wire::Busbar,
        Profile::Commlib => Wire::Commlib,
        Profile::Celine | Profile::Sermas => return Err(args.dialect.refuse("RPC")),
    };
    let options =
        RestProxyOptions { timeout: args.timeout, allow: args.allow.clone(), ..Default::default() };
    let (options, https) = match options.clone().https(args.ca.clone()) {
        Ok(with_tls) => (with_tls, String::new()),
        // A given CA that cannot be read is an error; a system without roots only loses https.
        Err(e) if args.ca.is_some() => return Err(e).context("--ca"),
        Err(e) => (options, format!(" (https calls are off: {e})")),
    };
    let name = args.name.clone().unwrap_or_else(|| {
        match wire {
            Wire::Commlib => busbar_rest_proxy::COMMLIB_NAME,
            Wire::Busbar => busbar_rest_proxy::BUSBAR_TOPIC,
        }
        .to_owned()
    });
    let mut interrupts = crate::exit::Interrupts::new()?;
    let conn = interrupts.before(args.target.connect()).await?;
    let service = RestProxyService::spawn(&conn, &name, RestProxy::new(options), wire)
        .await
        .with_context(|| format!("serving {name}"))?;
    let _exported = args.metrics.start("rest-proxy", &conn).await?;
    eprintln!(
        "busbar rest-proxy: answering {name} ({}) on {}{https}; Ctrl-C stops it",
        args.dialect.profile,
        args.target.describe()?
    );
    interrupts.next().await;
    service.stop(Duration::from_secs(5)).await;
    conn.close().await.context("closing the connection")?;
    Ok(())
}
