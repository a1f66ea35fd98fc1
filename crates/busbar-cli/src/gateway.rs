//! `busbar gateway`: a CSTBox-style rule-based gateway until Ctrl-C.

use std::path::PathBuf;

use anyhow::Context;
use busbar::gateway::{Builders, Gateway, GatewayConfig};

/// Options of `busbar gateway`.
#[derive(clap::Args)]
pub struct Args {
    /// The gateway's configuration: CSTBox's shape, with `events` (see docs/gateway.md), in
    /// JSON as CSTBox writes it or in YAML.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
    #[command(flatten)]
    metrics: crate::metrics::MetricsArgs,
}

/// Which counter of a gateway's a metric reads.
type Pick = fn(&busbar::gateway::GatewayStats) -> u64;

pub async fn run(args: Args) -> anyhow::Result<()> {
    let text = busbar::limits::read_bounded(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))?;
    let config =
        GatewayConfig::parse(&text).with_context(|| format!("{}", args.config.display()))?;
    let mut interrupts = crate::exit::Interrupts::new()?;
    let gateway = interrupts
        .before(async {
            Gateway::start(&config, &busbar::Registry::default(), &Builders::default())
                .await
                .with_context(|| format!("{}", args.config.display()))
        })
        .await?;
    let exported = args.metrics.start_bare("gateway").await?;
    if let Some(e) = &exported {
        let counters: [(&str, &str, Pick); 4] = [
            ("busbar_gateway_published_total", "Bus events published to the broker.", |s| {
                s.published
            }),
            ("busbar_gateway_unrouted_total", "Bus events no rule routed.", |s| s.unrouted),
            ("busbar_gateway_produced_total", "Broker messages turned into bus events.", |s| {
                s.produced
            }),
            (
                "busbar_gateway_failed_total",
                "Events or messages that could not be passed on.",
                |s| s.failed,
            ),
        ];
        for (name, help, pick) in counters {
            let reader = gateway.stats_reader();
            e.metrics().counter(name, help, &[], move || pick(&reader.read()))?;
        }
    }
    println!(
        "gateway running: {} <-> {}; Ctrl-C stops it",
        config.events.url,
        config.broker_url_redacted()
    );
    interrupts.next().await;
    let s = gateway.stats();
    println!(
        "published {}, unrouted {}, produced {}, failed {}",
        s.published, s.unrouted, s.produced, s.failed
    );
    Ok(())
}
