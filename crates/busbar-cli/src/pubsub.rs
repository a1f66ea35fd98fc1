//! `busbar pub` and `busbar sub`.

use anyhow::Context;
use busbar::{Message, QoS, SubscribeOptions, Topic, TopicFilter};

use crate::exit;
use crate::message::{Body, check_rate, parse_header, parse_qos};
use crate::output::{Arrival, Style};
use crate::patience::Patience;
use crate::profile::{Dialect, Profile, USAGE, json_body};
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
    /// Delivery guarantee: 0, 1 or 2 (busbar and celine profiles). Default: the broker's
    /// best up to 1 (at most once on Redis and NATS, which can give no more). A QoS the
    /// broker cannot give is refused (exit 2) unless --downgrade-qos is given.
    #[arg(long, value_parser = parse_qos)]
    qos: Option<QoS>,
    /// Send at the broker's best QoS when --qos asks for more than it can give (said on
    /// stderr), instead of refusing.
    #[arg(long, requires = "qos")]
    downgrade_qos: bool,
    /// Keep as the topic's retained message (where the broker has them).
    #[arg(long)]
    retain: bool,
    /// A header NAME=VALUE (repeatable).
    #[arg(long = "header", short = 'H', value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Start a trace (W3C `traceparent` header, see docs/tracing.md): each message is a
    /// span of it; its id is printed on stderr.
    #[arg(long)]
    trace: bool,
    /// How long to keep a message (and to keep trying to connect) while the broker is out of
    /// reach (`30s`, `2m`), before giving up with an error; the same on every broker.
    #[arg(long, default_value = "30s", value_parser = crate::message::positive_duration)]
    patience: std::time::Duration,
    #[command(flatten)]
    dialect: Dialect,
    #[command(flatten)]
    target: Target,
}

pub async fn publish(args: PubArgs) -> anyhow::Result<()> {
    let dialect = &args.dialect;
    let profile = dialect.profile;
    // What each profile's wire cannot carry is refused before anything is sent.
    if profile != Profile::Busbar && !args.headers.is_empty() {
        return Err(dialect.refuse("--header"));
    }
    if profile != Profile::Busbar && args.trace {
        return Err(dialect.refuse("--trace"));
    }
    let trace = args.trace.then(busbar::trace::TraceContext::new_root);
    if let Some(trace) = &trace {
        eprintln!("busbar pub: trace {}", trace.trace_id());
    }
    if matches!(profile, Profile::Commlib | Profile::Sermas) {
        if args.qos.is_some() {
            return Err(dialect.refuse("--qos"));
        }
        if args.retain {
            return Err(dialect.refuse("--retain"));
        }
    }
    let bodies = args.body.read(true)?;
    let pause = check_rate(args.rate)?;
    let patience = Patience::new(args.patience);
    let conn = patience.connect(&args.target).await?;
    let qos = kept_qos(args.qos, args.downgrade_qos, &conn)?;
    let mut watch = patience.watch(&conn);
    let sender = Sender::new(&args, conn)?;
    let mut tick = pause.map(tokio::time::interval);
    for _ in 0..args.count {
        for body in &bodies {
            if let Some(t) = tick.as_mut() {
                t.tick().await;
            }
            watch
                .publish(|| sender.send(&args, qos, trace, body))
                .await
                .with_context(|| format!("publishing to {}", args.topic))?;
        }
    }
    watch.settle().await;
    sender.connection().close().await.context("closing the connection")?;
    Ok(())
}

/// Publishes in one profile's way.
enum Sender {
    Busbar(busbar::Connection, Topic),
    Commlib(busbar::Connection, busbar_commlib::CommlibPublisher<serde_json::Value>),
    Celine(busbar_celine::CelineBroker),
    Sermas(busbar::Connection, busbar_sermas::SermasClient),
}

/// The QoS to publish with: the one asked for, when `conn` can give it; the broker's best
/// when it cannot and the user said to downgrade (noted on stderr); a usage error otherwise,
/// before anything is sent. `None`: the broker's best up to QoS 1.
fn kept_qos(
    asked: Option<QoS>,
    downgrade: bool,
    conn: &busbar::Connection,
) -> anyhow::Result<Option<QoS>> {
    let max = conn.capabilities().max_qos;
    match asked {
        Some(qos) if qos > max => {
            let (asked_n, max_n) = (qos as u8, max as u8);
            if downgrade {
                eprintln!(
                    "busbar: note: {} gives at most QoS {max_n}; publishing at QoS {max_n} \
                     instead of {asked_n} (--downgrade-qos)",
                    conn.kind()
                );
                Ok(Some(max))
            } else {
                Err(exit::with(
                    USAGE,
                    format!(
                        "--qos {asked_n} cannot be kept on {}: it gives at most QoS {max_n}; \
                         drop --qos for its best, or add --downgrade-qos to publish at QoS \
                         {max_n} knowingly",
                        conn.kind()
                    ),
                ))
            }
        }
        other => Ok(other),
    }
}

impl Sender {
    fn new(args: &PubArgs, conn: busbar::Connection) -> anyhow::Result<Sender> {
        let name = &args.topic;
        Ok(match args.dialect.profile {
            Profile::Busbar => {
                let topic = Topic::new(name).with_context(|| format!("topic {name:?}"))?;
                Sender::Busbar(conn, topic)
            }
            Profile::Commlib => {
                let publisher = busbar_commlib::CommlibPublisher::new(&conn, name)?;
                Sender::Commlib(conn, publisher)
            }
            Profile::Celine => Sender::Celine(busbar_celine::CelineBroker::new(&conn)),
            Profile::Sermas => {
                // The template is checked here, before anything is sent.
                busbar_sermas::TopicTemplate::new(name)?;
                let client = busbar_sermas::SermasClient::new(&conn, args.dialect.sermas()?);
                Sender::Sermas(conn, client)
            }
        })
    }

    fn connection(&self) -> &busbar::Connection {
        match self {
            Sender::Busbar(c, _) | Sender::Commlib(c, _) | Sender::Sermas(c, _) => c,
            Sender::Celine(broker) => broker.connection(),
        }
    }

    async fn send(
        &self,
        args: &PubArgs,
        qos: Option<QoS>,
        trace: Option<busbar::trace::TraceContext>,
        body: &[u8],
    ) -> anyhow::Result<()> {
        let profile = args.dialect.profile;
        match self {
            Sender::Busbar(conn, topic) => {
                let mut m = Message::new(topic.clone(), body.to_vec());
                m.qos = qos;
                m.retain = args.retain;
                for (k, v) in &args.headers {
                    m = m.with_header(k.clone(), v.clone());
                }
                if let Some(trace) = trace {
                    m = trace.child().stamp(m);
                }
                conn.publish(m).await?;
            }
            Sender::Commlib(_, publisher) => publisher.publish(&json_body(body, profile)?).await?,
            Sender::Celine(broker) => {
                let options = busbar_celine::PublishOptions {
                    qos,
                    retain: args.retain,
                    ..busbar_celine::PublishOptions::default()
                };
                broker.publish(&args.topic, &json_body(body, profile)?, options).await?;
            }
            Sender::Sermas(_, client) => {
                let params = busbar_sermas::Params::default();
                client.publish(&args.topic, &params, &json_body(body, profile)?).await?;
            }
        }
        Ok(())
    }
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
    /// Give up after this long (`30s`, `2m`; exit code 3 when `--count` was not reached).
    #[arg(long, value_parser = crate::message::positive_duration)]
    timeout: Option<std::time::Duration>,
    /// One JSON object per message instead of `topic  payload` lines: topic, payload (text,
    /// or a dialect's JSON value; `payload_hex` for bytes that are not text), qos, retain,
    /// headers, received_at.
    #[arg(long, conflicts_with_all = ["format", "raw"])]
    json: bool,
    /// Each message through a template: {topic}, {payload}, {hex}, {qos}, {retain}, {time},
    /// {unix}, {header:NAME}, {headers}, {json}; {{ and }} for braces, \n and \t.
    #[arg(long, value_name = "TEMPLATE", value_parser = crate::output::Template::parse, conflicts_with = "raw")]
    format: Option<crate::output::Template>,
    /// The payload alone, as it came, one message per line.
    #[arg(long)]
    raw: bool,
    /// Where reading starts, on brokers that keep a log (Kafka): `now` (the default),
    /// `earliest` (everything kept), a time such as `2026-12-06T15:00:00Z` (UTC), or an age
    /// such as `30s`, `10m`, `2h`, `1d` (that long ago). Refused on other brokers.
    #[arg(long, value_name = "WHEN", value_parser = crate::message::start_at)]
    start: Option<busbar::StartAt>,
    /// A durable subscription of this name: the broker keeps what is published while no
    /// `sub --durable NAME` reads it, and the next one gets it, each message acknowledged
    /// once printed (AMQP: a durable queue; NATS: a JetStream stream; Kafka: a consumer
    /// group; MQTT: a shared subscription in a persistent session, so connect with
    /// `?session_expiry=SECONDS` and the same `--client-id` each time). Subscribers with
    /// the same name share the messages. Refused where the broker keeps nothing.
    #[arg(long, value_name = "NAME")]
    durable: Option<String>,
    /// Share the messages with the other subscribers of this queue group (each message to
    /// one of them).
    #[arg(long, value_name = "NAME", conflicts_with = "durable")]
    group: Option<String>,
    /// The QoS to subscribe with: 0, 1 or 2 (MQTT; default: the transport's own). One the
    /// broker cannot give is refused (exit 2).
    #[arg(long, value_parser = parse_qos)]
    qos: Option<QoS>,
    #[command(flatten)]
    metrics: crate::metrics::MetricsArgs,
    #[command(flatten)]
    dialect: Dialect,
    #[command(flatten)]
    target: Target,
}

/// What a subscription gives: busbar messages, or a dialect's JSON bodies.
enum Arrived {
    Message(Message),
    Json { topic: String, payload: serde_json::Value },
}

/// A dialect's subscription: JSON bodies with their topics.
trait DialectSubscription: Send + 'static {
    /// The next body; `None` once the subscription ended, an error for a body that does
    /// not decode (that one only).
    fn next_json(
        &mut self,
    ) -> impl Future<Output = Option<anyhow::Result<(String, serde_json::Value)>>> + Send;
}

impl DialectSubscription for busbar_commlib::CommlibSubscriber<serde_json::Value> {
    async fn next_json(&mut self) -> Option<anyhow::Result<(String, serde_json::Value)>> {
        let r = self.recv().await?;
        Some(r.map(|r| (r.topic.as_str().to_owned(), r.value)).map_err(anyhow::Error::from))
    }
}

impl DialectSubscription for busbar_celine::CelineSubscription {
    async fn next_json(&mut self) -> Option<anyhow::Result<(String, serde_json::Value)>> {
        self.recv().await.map(|r| Ok((r.topic.as_str().to_owned(), r.payload)))
    }
}

impl DialectSubscription for busbar_sermas::SermasSubscription {
    async fn next_json(&mut self) -> Option<anyhow::Result<(String, serde_json::Value)>> {
        self.recv().await.map(|r| Ok((r.topic.as_str().to_owned(), r.payload)))
    }
}

fn dialect_stream(
    sub: impl DialectSubscription,
) -> futures_util::stream::BoxStream<'static, anyhow::Result<Arrived>> {
    use futures_util::StreamExt;
    futures_util::stream::unfold(sub, |mut sub| async move {
        let item = sub.next_json().await?;
        Some((item.map(|(topic, payload)| Arrived::Json { topic, payload }), sub))
    })
    .boxed()
}

/// The subscriptions of every filter, in one stream.
/// The subscriptions' merged stream; with the busbar profile, each filter's queue is also
/// put in `queues` (for the metrics).
async fn arrivals(
    args: &SubArgs,
    conn: &busbar::Connection,
    queues: &mut Vec<(String, busbar::transport::DropCounter)>,
) -> anyhow::Result<futures_util::stream::BoxStream<'static, anyhow::Result<Arrived>>> {
    use futures_util::StreamExt;
    let mut streams: Vec<futures_util::stream::BoxStream<'static, anyhow::Result<Arrived>>> =
        Vec::new();
    if !matches!(args.dialect.profile, Profile::Busbar) {
        let busbar_only = [
            ("--start", args.start.is_some_and(|s| s != busbar::StartAt::Now)),
            ("--durable", args.durable.is_some()),
            ("--group", args.group.is_some()),
            ("--qos", args.qos.is_some()),
        ];
        if let Some((flag, _)) = busbar_only.iter().find(|(_, given)| *given) {
            return Err(crate::exit::with(
                USAGE,
                format!("{flag} is not part of the dialect profiles"),
            ));
        }
    }
    for f in &args.filters {
        match args.dialect.profile {
            Profile::Busbar => {
                let filter = TopicFilter::new(f).with_context(|| format!("filter {f:?}"))?;
                let mut options =
                    SubscribeOptions::from(filter).start(args.start.unwrap_or_default());
                if let Some(name) = &args.durable {
                    options = options.durable(name);
                    // Printed is done with: what was received but not yet printed when the
                    // command ends comes again to the next reader.
                    if conn.capabilities().acknowledgements {
                        options = options.acknowledge(busbar::Acknowledge::OnRead);
                    }
                }
                if let Some(group) = &args.group {
                    options = options.queue_group(group);
                }
                if let Some(qos) = args.qos {
                    let max = conn.capabilities().max_qos;
                    if qos > max {
                        return Err(crate::exit::with(
                            USAGE,
                            format!(
                                "--qos {} cannot be kept on {}: it gives at most QoS {}",
                                qos as u8,
                                conn.kind(),
                                max as u8
                            ),
                        ));
                    }
                    options = options.qos(qos);
                }
                let sub = conn.subscribe_with(options).await?;
                queues.push((f.clone(), sub.drop_counter()));
                streams.push(sub.map(|m| Ok(Arrived::Message(m))).boxed());
            }
            Profile::Commlib => {
                let sub =
                    busbar_commlib::CommlibSubscriber::<serde_json::Value>::new(conn, f).await?;
                streams.push(dialect_stream(sub));
            }
            Profile::Celine => {
                let sub = busbar_celine::CelineBroker::new(conn).subscribe(&[f.as_str()]).await?;
                streams.push(dialect_stream(sub));
            }
            Profile::Sermas => {
                let client = busbar_sermas::SermasClient::new(conn, args.dialect.sermas()?);
                let sub = client.subscribe(f, &busbar_sermas::Params::default()).await?;
                streams.push(dialect_stream(sub));
            }
        }
    }
    Ok(futures_util::stream::select_all(streams).boxed())
}

pub async fn subscribe(args: SubArgs) -> anyhow::Result<()> {
    let deadline = args.timeout.and_then(crate::message::deadline_in);
    let mut interrupts = exit::Interrupts::new()?;
    let conn = interrupts.before(args.target.connect()).await?;
    let mut events = conn.events();
    let mut queues = Vec::new();
    let mut all = interrupts.before(arrivals(&args, &conn, &mut queues)).await?;
    let exported = args.metrics.start("sub", &conn).await?;
    if let Some(exported) = &exported {
        for (filter, queue) in queues {
            exported.queue(&filter, queue)?;
        }
    }
    // On standard error, so that standard output holds messages only: scripts and tests
    // wait for this line before publishing.
    eprintln!("busbar sub: listening on {}", args.filters.join(", "));
    let style = match (&args.format, args.json, args.raw) {
        (Some(template), ..) => Style::Format(template.clone()),
        (None, true, _) => Style::Json,
        (None, false, true) => Style::Raw,
        (None, false, false) => Style::Lines,
    };
    let mut out = std::io::stdout();
    let mut received = 0u64;
    let ended = loop {
        if args.count.is_some_and(|c| received >= c) {
            break Ok(());
        }
        use futures_util::StreamExt;
        let until = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let next = tokio::select! {
            m = all.next() => m,
            Some(event) = events.next() => {
                report_event(&event, args.json);
                continue;
            }
            // Stopping a subscriber that runs until stopped is how it is done; one asked
            // for a count was interrupted short of it.
            () = interrupts.next() => match args.count {
                None => break Ok(()),
                Some(count) => break Err(exit::with(
                    exit::INTERRUPTED,
                    format!("interrupted after {received} of {count} messages"),
                )),
            },
            () = until => {
                if args.count.is_none() {
                    break Ok(());
                }
                break Err(exit::with(
                    exit::TIMEOUT,
                    format!(
                        "{received} of {} messages within the timeout",
                        args.count.unwrap_or_default()
                    ),
                ));
            }
        };
        let at = std::time::SystemTime::now();
        let printed = match &next {
            None => break Err(anyhow::anyhow!("the connection closed")),
            Some(Ok(Arrived::Message(message))) => style.print(&Arrival::of_message(message, at)?),
            Some(Ok(Arrived::Json { topic, payload })) => {
                style.print(&Arrival::of_json(topic, payload, at))
            }
            // One body that does not decode: said, and the next one waited for.
            Some(Err(e)) => {
                eprintln!("busbar sub: {e:#}");
                continue;
            }
        };
        // Whoever reads standard output has gone (`| head`): the command is done.
        if std::io::Write::write_all(&mut out, &printed)
            .and_then(|()| std::io::Write::flush(&mut out))
            .is_err()
        {
            break Ok(());
        }
        received += 1;
    };
    // A goodbye to the broker, so that what was acknowledged (a durable subscription's
    // printed messages) is done with there, and nothing more is sent to a reader that is
    // gone.
    // (A subscriber publishes nothing, so a close can leave nothing of its own unconfirmed.)
    drop(all);
    let _ = conn.close().await;
    // The summary: what the subscriptions dropped is said, and makes the exit status say it
    // too, whatever else ended the command.
    let dropped = conn.stats().dropped;
    if dropped > 0 {
        eprintln!(
            "busbar sub: {received} messages received, {dropped} dropped (the subscription read \
             slower than they came)"
        );
        if ended.is_ok() {
            return Err(exit::with(exit::LOST, format!("{dropped} messages were dropped")));
        }
    }
    ended
}

/// Says, as it happens, that the connection was lost and to which server it came back (on
/// standard error), and that a subscription dropped messages (on standard error, and as a
/// JSON record on standard output under `--json`).
fn report_event(event: &busbar::ConnectionEvent, json: bool) {
    use busbar::ConnectionEvent as E;
    use std::io::Write as _;
    // Notes only: a closed standard error must not end the subscriber.
    let note = |text: String| {
        let _ = writeln!(std::io::stderr(), "busbar sub: {text}");
    };
    let (filter, dropped) = match event {
        E::Disconnected { reason } => {
            return note(format!("connection lost ({reason}); reconnecting"));
        }
        E::Reconnected { server } => return note(format!("reconnected to {server}")),
        E::SlowConsumer { filter, dropped } => (filter, dropped),
        _ => return,
    };
    if *dropped == 0 {
        // Under `Block` nothing is dropped: the broker is held back instead.
        eprintln!("busbar sub: {filter}: reading slower than messages come; the broker waits");
        return;
    }
    eprintln!(
        "busbar sub: {filter}: messages dropped, {dropped} so far (this subscriber reads slower \
         than they come)"
    );
    if json {
        println!("{}", serde_json::json!({"dropped": dropped, "filter": filter}));
    }
}
