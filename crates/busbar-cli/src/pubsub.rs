//! `busbar pub` and `busbar sub`.

use std::time::Duration;

use anyhow::Context;
use busbar::{Message, QoS, SubscribeOptions, Topic, TopicFilter};

use crate::exit;
use crate::message::{Body, check_rate, parse_header, parse_qos, render};
use crate::target::Target;

/// Options of `busbar pub`.
#[derive(clap::Args)]
pub struct PubArgs {
    /// The topic, e.g. plant/boiler/temperature.
    topic: String,
    #[command(flatten)]
    body: Body,
    /// Send the message(s) this many times.
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// At most this many messages per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Delivery guarantee: 0, 1 or 2.
    #[arg(long, default_value = "1", value_parser = parse_qos)]
    qos: QoS,
    /// Keep as the topic's retained message (where the broker has them).
    #[arg(long)]
    retain: bool,
    /// A header NAME=VALUE (repeatable).
    #[arg(long = "header", short = 'H', value_parser = parse_header)]
    headers: Vec<(String, String)>,
    #[command(flatten)]
    target: Target,
}

pub async fn publish(args: PubArgs) -> anyhow::Result<()> {
    let topic = Topic::new(&args.topic).with_context(|| format!("topic {:?}", args.topic))?;
    let bodies = args.body.read()?;
    let pause = check_rate(args.rate)?;
    let conn = args.target.connect().await?;
    let mut tick = pause.map(tokio::time::interval);
    for _ in 0..args.count {
        for body in &bodies {
            if let Some(t) = tick.as_mut() {
                t.tick().await;
            }
            let mut m = Message::new(topic.clone(), body.clone()).with_qos(args.qos);
            m.retain = args.retain;
            for (k, v) in &args.headers {
                m = m.with_header(k.clone(), v.clone());
            }
            conn.publish(m).await.with_context(|| format!("publishing to {topic}"))?;
        }
    }
    conn.close().await.context("closing the connection")?;
    Ok(())
}

/// Options of `busbar sub`.
#[derive(clap::Args)]
pub struct SubArgs {
    /// Topic filters (`+` one level, `#` the rest).
    #[arg(required = true)]
    filters: Vec<String>,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Give up after this many seconds (exit code 3 when `--count` was not reached).
    #[arg(long)]
    timeout: Option<f64>,
    /// One JSON object per message instead of `topic  payload` lines.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: Target,
}

pub async fn subscribe(args: SubArgs) -> anyhow::Result<()> {
    let conn = args.target.connect().await?;
    let mut subs = Vec::new();
    for f in &args.filters {
        let filter = TopicFilter::new(f).with_context(|| format!("filter {f:?}"))?;
        subs.push(conn.subscribe_with(SubscribeOptions::new(filter)).await?);
    }
    // On standard error, so that standard output holds messages only: scripts and tests
    // wait for this line before publishing.
    eprintln!("busbar sub: listening on {}", args.filters.join(", "));
    let mut all = futures_util::stream::select_all(subs);
    let deadline = match args.timeout {
        Some(t) => Some(
            tokio::time::Instant::now() + Duration::try_from_secs_f64(t).context("--timeout")?,
        ),
        None => None,
    };
    let mut received = 0u64;
    loop {
        if args.count.is_some_and(|c| received >= c) {
            return Ok(());
        }
        use futures_util::StreamExt;
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, all.next()).await {
                Ok(m) => m,
                Err(_) if args.count.is_none() => return Ok(()),
                Err(_) => {
                    return Err(exit::with(
                        exit::TIMEOUT,
                        format!(
                            "{received} of {} messages within the timeout",
                            args.count.unwrap_or_default()
                        ),
                    ));
                }
            },
            None => all.next().await,
        };
        let Some(message) = next else {
            anyhow::bail!("the connection closed");
        };
        println!("{}", render(&message, args.json)?);
        received += 1;
    }
}
