//! `busbar call` and `busbar serve`.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use busbar::error::RequestErrorKind;
use busbar::header;
use busbar::{Message, SubscribeOptions, Topic, TopicFilter};
use tokio::io::AsyncWriteExt;

use crate::exit;
use crate::message::{Body, parse_header, positive_duration};
use crate::profile::{Dialect, Profile, json_body};
use crate::target::Target;

/// Options of `busbar call`.
#[derive(clap::Args)]
pub struct CallArgs {
    /// The service's topic.
    topic: String,
    #[command(flatten)]
    body: Body,
    /// How long to wait for the answer (`5s`, `500ms`; exit code 3 without one).
    #[arg(long, default_value = "5s", value_parser = positive_duration)]
    timeout: Duration,
    /// A header NAME=VALUE (repeatable).
    #[arg(long = "header", short = 'H', value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// The answer as one JSON line: `{"result": ...}` (a JSON answer as its value, other
    /// text as a string, other bytes as `result_hex`), or `{"error": ...}` for an error
    /// answer (exit code 4 still).
    #[arg(long)]
    json: bool,
    /// Start a trace (W3C `traceparent` header, see docs/tracing.md) that the service and
    /// any bridge on the way continue; its id is printed on stderr.
    #[arg(long)]
    trace: bool,
    #[command(flatten)]
    dialect: Dialect,
    #[command(flatten)]
    target: Target,
}

/// `call --json`'s line for an answer (`key` is `result` or `error`).
fn json_answer(key: &str, bytes: &[u8]) -> String {
    let mut line = serde_json::Map::new();
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            let value = serde_json::from_str(text).unwrap_or_else(|_| text.into());
            line.insert(key.into(), value);
        }
        Err(_) => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            line.insert(format!("{key}_hex"), hex.into());
        }
    }
    serde_json::Value::Object(line).to_string()
}

pub async fn call(args: CallArgs) -> anyhow::Result<()> {
    if args.trace && args.dialect.profile != Profile::Busbar {
        return Err(args.dialect.refuse("--trace"));
    }
    match args.dialect.profile {
        Profile::Busbar => {}
        Profile::Commlib => return call_commlib(args).await,
        Profile::Celine | Profile::Sermas => return Err(args.dialect.refuse("RPC")),
    }
    let topic = Topic::new(&args.topic).with_context(|| format!("topic {:?}", args.topic))?;
    let timeout = args.timeout;
    let body = args.body.read(false)?.into_iter().next().unwrap_or_default();
    // One deadline for the whole call, connecting included.
    let deadline = tokio::time::Instant::now() + timeout;
    let conn = args.target.connect_within(timeout).await?;
    let timeout = deadline.saturating_duration_since(tokio::time::Instant::now());
    let mut request = Message::new(topic.clone(), body);
    for (k, v) in &args.headers {
        request = request.with_header(k.clone(), v.clone());
    }
    if args.trace {
        let trace = busbar::trace::TraceContext::new_root();
        eprintln!("busbar call: trace {}", trace.trace_id());
        request = trace.stamp(request);
    }
    let reply = match conn.request(request, timeout).await {
        Ok(reply) => reply,
        Err(e) if e.kind() == RequestErrorKind::TimedOut => {
            return Err(exit::with(
                exit::TIMEOUT,
                format!("no answer from {topic} within {:?}", args.timeout),
            ));
        }
        Err(e) if e.kind() == RequestErrorKind::NoResponders => {
            return Err(exit::with(exit::NOBODY, format!("nobody serves {topic}")));
        }
        Err(e) => return Err(e).with_context(|| format!("calling {topic}")),
    };
    let bytes = reply.payload.to_bytes().context("the answer")?;
    let failed = reply.headers.get(header::STATUS) == Some(header::STATUS_ERROR);
    if args.json {
        println!("{}", json_answer(if failed { "error" } else { "result" }, &bytes));
    }
    if failed {
        let text = String::from_utf8_lossy(&bytes);
        return Err(exit::with(exit::REMOTE, format!("{topic} answered with an error: {text}")));
    }
    if args.json {
        return Ok(());
    }
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)?;
    if !bytes.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// `call --profile commlib`: commlib's RPC, with a JSON request and answer.
async fn call_commlib(args: CallArgs) -> anyhow::Result<()> {
    if !args.headers.is_empty() {
        return Err(args.dialect.refuse("--header"));
    }
    let timeout = args.timeout;
    let body = args.body.read(false)?.into_iter().next().unwrap_or_default();
    let request = json_body(&body, Profile::Commlib)?;
    let deadline = tokio::time::Instant::now() + timeout;
    let conn = args.target.connect_within(timeout).await?;
    let client = busbar_commlib::CommlibRpcClient::<serde_json::Value, serde_json::Value>::new(
        &conn,
        &args.topic,
    )?
    .timeout(deadline.saturating_duration_since(tokio::time::Instant::now()));
    match client.call(&request).await {
        Ok(answer) if args.json => {
            println!("{}", serde_json::json!({ "result": answer }));
            Ok(())
        }
        Ok(answer) => {
            println!("{answer}");
            Ok(())
        }
        Err(busbar_commlib::CommlibError::Timeout { .. }) => Err(exit::with(
            exit::TIMEOUT,
            format!("no answer from {} within {timeout:?}{}", args.topic, node_hint(&args.topic)),
        )),
        Err(e) => Err(e).with_context(|| format!("calling {}", args.topic)),
    }
}

/// For a call to a commlib node's control service under a name with `-`: commlib renames
/// its nodes (`a-b` serves `a_b.stop`), so the name to call instead.
fn node_hint(topic: &str) -> String {
    let Some((node, service)) = topic.rsplit_once('.') else { return String::new() };
    let renamed = busbar_commlib::names::node_name(node);
    if renamed == node || !matches!(service, "start" | "stop") {
        return String::new();
    }
    format!(
        " (commlib renames node {node:?} to {renamed:?}: its control service is {renamed}.{service})"
    )
}

/// Options of `busbar serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// The topic to serve.
    topic: String,
    /// Run this shell command per request: the request on its standard input, its standard
    /// output the answer; a non-zero exit is an error answer with its standard error.
    /// Without it, every request is answered with itself (an echo service).
    #[arg(long, value_name = "COMMAND")]
    exec: Option<String>,
    /// Stop after answering this many requests.
    #[arg(long)]
    count: Option<u64>,
    #[command(flatten)]
    metrics: crate::metrics::MetricsArgs,
    #[command(flatten)]
    dialect: Dialect,
    #[command(flatten)]
    target: Target,
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut interrupts = exit::Interrupts::new()?;
    match args.dialect.profile {
        Profile::Busbar => {}
        Profile::Commlib => return serve_commlib(args, interrupts).await,
        Profile::Celine | Profile::Sermas => return Err(args.dialect.refuse("RPC")),
    }
    let filter =
        TopicFilter::new(&args.topic).with_context(|| format!("topic {:?}", args.topic))?;
    let conn = interrupts.before(args.target.connect()).await?;
    // Several `busbar serve` on one topic share the requests where the broker can.
    let mut options = SubscribeOptions::from(filter);
    if conn.capabilities().queue_groups {
        options = options.queue_group("busbar-serve");
    }
    let mut requests = conn.subscribe_with(options).await?;
    let exported = args.metrics.start("serve", &conn).await?;
    let (answered_total, failed_total) = match &exported {
        Some(e) => (
            Some(e.counter("busbar_serve_answered_total", "Requests answered.")?),
            Some(e.counter(
                "busbar_serve_unanswered_total",
                "Requests not answered: reply topic refused or reply not sent.",
            )?),
        ),
        None => (None, None),
    };
    eprintln!(
        "busbar serve: answering {} with {}",
        args.topic,
        args.exec.as_deref().map_or("an echo".to_owned(), |c| format!("`{c}`"))
    );
    let mut answered = 0u64;
    while args.count.is_none_or(|c| answered < c) {
        let sleep_or_stop = tokio::select! {
            m = requests.recv() => m,
            () = interrupts.next() => None,
        };
        let Some(request) = sleep_or_stop else { break };
        let Some(reply_to) = request.reply_to.clone() else { continue };
        // The reply topic came off the wire: one the broker would refuse is never answered
        // (nor run through the command), and a reply that fails never ends the service.
        if let Err(e) = conn.check_destination(&reply_to) {
            say(&format!("a request to {} refused: its reply topic: {e}", request.topic));
            crate::metrics::bump(&failed_total);
            continue;
        }
        // A traced request is answered in a span of its trace, and the reply carries it.
        let reply_sent = busbar::trace::handle(&request, async {
            let body = request.payload.to_bytes().unwrap_or_default();
            let (answer, failed) = match &args.exec {
                None => (body.to_vec(), false),
                Some(command) => run(command, &body).await,
            };
            let mut reply = Message::new(reply_to, answer);
            reply.correlation_id = request.correlation_id.clone();
            reply.qos = request.qos;
            if failed {
                reply = reply.with_header(header::STATUS, header::STATUS_ERROR);
            }
            conn.publish(reply).await
        });
        match reply_sent.await {
            Ok(()) => {
                answered += 1;
                crate::metrics::bump(&answered_total);
            }
            Err(e) if e.kind() == busbar::error::PublishErrorKind::Closed => {
                return Err(e).context("answering");
            }
            Err(e) => {
                say(&format!("a reply to {} not sent: {e}", request.topic));
                crate::metrics::bump(&failed_total);
            }
        }
    }
    // Sends the last answers before the process ends.
    conn.close().await.context("closing the connection")?;
    Ok(())
}

/// A line on standard error that never ends the service (`eprintln!` panics when standard
/// error is closed).
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "busbar serve: {line}");
}

/// `serve --profile commlib`: a commlib RPC service. commlib has no error answers, so a
/// failing command is answered with `{"error": ...}`; an answer that is not JSON is sent as
/// a JSON string.
async fn serve_commlib(args: ServeArgs, mut interrupts: exit::Interrupts) -> anyhow::Result<()> {
    let conn = interrupts.before(args.target.connect()).await?;
    let exec = args.exec.clone();
    let service = busbar_commlib::CommlibRpcService::spawn(
        &conn,
        &args.topic,
        move |request: serde_json::Value| {
            let exec = exec.clone();
            async move {
                let Some(command) = exec else { return request };
                match run(&command, request.to_string().as_bytes()).await {
                    (out, false) => serde_json::from_slice(&out).unwrap_or_else(|_| {
                        serde_json::Value::from(String::from_utf8_lossy(&out).trim_end())
                    }),
                    (err, true) => serde_json::from_slice(&err).unwrap_or_default(),
                }
            }
        },
    )
    .await?;
    eprintln!(
        "busbar serve: answering {} (commlib) with {}",
        args.topic,
        args.exec.as_deref().map_or("an echo".to_owned(), |c| format!("`{c}`"))
    );
    let mut answered = service.answered();
    tokio::select! {
        _ = answered.wait_for(|n| args.count.is_some_and(|c| *n >= c)) => {}
        () = interrupts.next() => {}
    }
    // Answers are counted once handed to the connection: closing sends them.
    conn.close().await.context("closing the connection")?;
    Ok(())
}

/// Runs `command` with `input`; its output, or its error output and true when it failed.
async fn run(command: &str, input: &[u8]) -> (Vec<u8>, bool) {
    let child = tokio::process::Command::new("sh")
        .args(["-c", command])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return (error_body(&format!("cannot run `{command}`: {e}")), true),
    };
    // The request goes in while the answer comes out: a command that answers as it reads
    // (`cat`) would otherwise fill its output pipe while we still write, and both would wait.
    let stdin = child.stdin.take();
    let input = input.to_vec();
    let feed = async move {
        if let Some(mut stdin) = stdin {
            let _ = stdin.write_all(&input).await;
        }
    };
    let (_, output) = tokio::join!(feed, child.wait_with_output());
    match output {
        Ok(out) if out.status.success() => (out.stdout, false),
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            (error_body(&format!("`{command}` failed ({}): {err}", out.status)), true)
        }
        Err(e) => (error_body(&format!("`{command}` failed: {e}")), true),
    }
}

/// An error answer in the shape busbar's RPC clients read (commlib's see `error` too).
fn error_body(message: &str) -> Vec<u8> {
    serde_json::to_vec(
        &serde_json::json!({"code": "internal", "message": message, "error": message}),
    )
    .unwrap_or_default()
}
