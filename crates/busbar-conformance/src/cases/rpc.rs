//! Request/reply and RPC.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use busbar_core::Topic;
use busbar_core::error::RequestErrorKind;
use busbar_core::message::Message;
use busbar_core::patterns::rpc::RpcServer;
use busbar_core::patterns::{RpcClient, RpcError};
use tokio::sync::Notify;

use super::{connect, ensure, prefix};
use crate::{Harness, TestResult};

/// A request nobody answers fails with `Timeout` once its deadline passes, not before.
pub async fn request_deadline(h: Arc<impl Harness>) -> TestResult {
    let p = prefix("deadline");
    let conn = connect(&*h).await?;
    // Someone listens, so the transport cannot answer "no responders"; nobody replies.
    let _silent = conn.subscribe(&format!("{p}/svc")).await?;
    let deadline = Duration::from_millis(200);
    let started = tokio::time::Instant::now();
    let err = conn
        .request(Message::new(Topic::new(format!("{p}/svc"))?, &b"{}"[..]), deadline)
        .await
        .err()
        .ok_or("a request without a reply succeeded")?;
    ensure(err.kind() == RequestErrorKind::TimedOut, || format!("wrong error: {err}"))?;
    ensure(started.elapsed() >= deadline, || {
        format!("gave up after {:?}, before the deadline", started.elapsed())
    })?;
    ensure(conn.stats().timeouts >= 1, || "timeout not counted".into())?;
    Ok(())
}

/// A request to a topic nobody serves fails fast with `NoResponders` where the transport can
/// tell, else with `Timeout`.
pub async fn request_without_responder(h: Arc<impl Harness>) -> TestResult {
    let p = prefix("noresponder");
    let conn = connect(&*h).await?;
    let client = RpcClient::<u32, u32>::new(&conn, &format!("{p}/nobody"))?
        .timeout(Duration::from_millis(300));
    let err = client.call(1).await.err().ok_or("a call with no server succeeded")?;
    let expected = if conn.capabilities().no_responders {
        RequestErrorKind::NoResponders
    } else {
        RequestErrorKind::TimedOut
    };
    ensure(err.kind() == expected, || format!("wrong error: {err}"))?;
    Ok(())
}

/// 1,000 concurrent calls on one client, shared by many tasks: every caller gets its own
/// reply.
pub async fn rpc_concurrency(h: Arc<impl Harness>) -> TestResult {
    const CALLS: u64 = 1_000;
    let p = prefix("rpc-concurrency");
    let server_conn = connect(&*h).await?;
    let topic = format!("{p}/square");
    let _server = RpcServer::builder(&server_conn, &topic)
        .concurrency(64)
        .serve(|n: u64| async move { Ok::<_, RpcError>(n * n) })
        .await?;
    let conn = connect(&*h).await?;
    let client = RpcClient::<u64, u64>::new(&conn, &topic)?.timeout(Duration::from_secs(20));
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..CALLS {
        let client = client.clone();
        calls.spawn(async move { (n, client.call(n).await) });
    }
    let mut done = 0;
    while let Some(joined) = calls.join_next().await {
        let (n, reply) = joined?;
        let reply = reply.map_err(|e| format!("call {n}: {e}"))?;
        ensure(reply == n * n, || format!("call {n} got {reply}, someone else's reply"))?;
        done += 1;
    }
    ensure(done == CALLS, || format!("{done} of {CALLS} calls finished"))?;
    Ok(())
}

/// A server runs at most `concurrency` handlers at once; the rest wait their turn and are
/// still answered.
pub async fn rpc_concurrency_limit(h: Arc<impl Harness>) -> TestResult {
    const LIMIT: usize = 3;
    let p = prefix("rpc-limit");
    let conn = connect(&*h).await?;
    let topic = format!("{p}/busy");
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let _server = {
        let (running, peak) = (running.clone(), peak.clone());
        RpcServer::builder(&conn, &topic)
            .concurrency(LIMIT)
            .serve(move |n: u32| {
                let (running, peak) = (running.clone(), peak.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    // Hold the slot long enough for the other calls to pile up.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, RpcError>(n)
                }
            })
            .await?
    };
    let client = RpcClient::<u32, u32>::new(&conn, &topic)?;
    let calls: Vec<_> = (0..30u32)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move { client.call(n).await.map(|r| (n, r)) })
        })
        .collect();
    for c in calls {
        let (n, r) = c.await??;
        ensure(n == r, || format!("call {n} got {r}"))?;
    }
    let peak = peak.load(Ordering::SeqCst);
    ensure(peak <= LIMIT, || format!("{peak} handlers ran at once with a limit of {LIMIT}"))?;
    ensure(peak == LIMIT, || {
        format!("the limit was never reached (peak {peak}): calls were serialised")
    })?;
    Ok(())
}

/// Handler errors, panics and undecodable requests come back as typed error replies.
pub async fn rpc_error_replies(h: Arc<impl Harness>) -> TestResult {
    let p = prefix("rpc-errors");
    let conn = connect(&*h).await?;
    let topic = format!("{p}/sqrt");
    let _server = RpcServer::spawn(&conn, &topic, |x: f64| async move {
        if x == 999.0 {
            panic!("deliberate panic in a handler");
        }
        if x < 0.0 {
            return Err(RpcError::invalid_argument(format!("cannot take the square root of {x}")));
        }
        Ok(x.sqrt())
    })
    .await?;
    let client = RpcClient::<f64, f64>::new(&conn, &topic)?;
    ensure(client.call(16.0).await? == 4.0, || "wrong result".into())?;
    let e = super::remote_error(client.call(-1.0).await)?;
    ensure(e.code == RpcError::INVALID_ARGUMENT && e.message.contains("-1"), || format!("{e:?}"))?;
    let e = super::remote_error(client.call(999.0).await)
        .map_err(|e| format!("a panic must come back as an internal error: {e}"))?;
    ensure(e.code == RpcError::INTERNAL, || format!("{e:?}"))?;
    let bad = conn
        .request(
            Message::new(Topic::new(&topic)?, &b"\"not a number\""[..]),
            Duration::from_secs(5),
        )
        .await?;
    ensure(bad.headers.get("busbar-status") == Some("error"), || {
        "bad request not flagged as an error".into()
    })?;
    let raw = RpcClient::<String, f64>::new(&conn, &topic)?;
    let e = super::remote_error(raw.call("x".into()).await)?;
    ensure(e.code == RpcError::BAD_REQUEST, || format!("{e:?}"))?;
    Ok(())
}

/// A call dropped by its caller does not disturb later calls: each reply still reaches its
/// own caller.
pub async fn rpc_cancel_on_drop(h: Arc<impl Harness>) -> TestResult {
    let p = prefix("rpc-cancel");
    let conn = connect(&*h).await?;
    let topic = format!("{p}/echo");
    let release = Arc::new(Notify::new());
    let started = Arc::new(Notify::new());
    let _server = {
        let (release, started) = (release.clone(), started.clone());
        RpcServer::spawn(&conn, &topic, move |n: u32| {
            let (release, started) = (release.clone(), started.clone());
            async move {
                if n == 1 {
                    started.notify_one();
                    release.notified().await;
                }
                Ok::<_, RpcError>(n)
            }
        })
        .await?
    };
    let client = RpcClient::<u32, u32>::new(&conn, &topic)?;
    {
        let slow = client.call(1);
        tokio::pin!(slow);
        tokio::select! {
            _ = &mut slow => return Err("the slow call finished before it was released".into()),
            _ = started.notified() => {}
        }
        // Dropping `slow` here cancels the call.
    }
    release.notify_one();
    for n in 2..20 {
        let got = client.call(n).await?;
        ensure(got == n, || format!("call {n} got {got}: a canceled call's reply leaked"))?;
    }
    Ok(())
}

/// Several server instances of one service share its calls (where queue groups exist).
pub async fn rpc_load_balanced(h: Arc<impl Harness>) -> TestResult {
    const CALLS: usize = 100;
    let p = prefix("rpc-balance");
    let topic = format!("{p}/work");
    let mut servers = Vec::new();
    let counts: Vec<Arc<AtomicUsize>> = (0..2).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    for count in &counts {
        let c = connect(&*h).await?;
        let count = count.clone();
        let server = RpcServer::spawn(&c, &topic, move |n: u32| {
            let count = count.clone();
            async move {
                count.fetch_add(1, Ordering::Relaxed);
                Ok::<_, RpcError>(n)
            }
        })
        .await?;
        servers.push((c, server));
    }
    let conn = connect(&*h).await?;
    let client = RpcClient::<u32, u32>::new(&conn, &topic)?;
    for n in 0..CALLS as u32 {
        ensure(client.call(n).await? == n, || "wrong reply".into())?;
    }
    let handled: Vec<usize> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    if conn.capabilities().queue_groups {
        ensure(handled.iter().sum::<usize>() == CALLS, || {
            format!("calls handled {handled:?}: some handled twice")
        })?;
        ensure(handled.iter().all(|c| *c > 0), || {
            format!("one server did all the work: {handled:?}")
        })?;
    }
    Ok(())
}

/// Replies cannot be forged by guessing: what ties a reply to its request (the correlation
/// id, or on transports without one the reply subject's last token) is 128 random bits,
/// different for every request and every connection, and a reply that guesses it (a
/// counter, zeros, the real one with one bit flipped) is not taken for the real one.
pub async fn replies_cannot_be_forged(h: Arc<impl Harness>) -> TestResult {
    let p = prefix("forged");
    let service = Topic::new(format!("{p}/svc"))?;
    let server = connect(&*h).await?;
    let mut requests = server.subscribe(service.as_str()).await?;
    let clients = [connect(&*h).await?, connect(&*h).await?];
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    for (round, client) in [&clients[0], &clients[0], &clients[1]].into_iter().enumerate() {
        let asking = client.request(Message::new(service.clone(), &b"?"[..]), super::WAIT);
        let answering = async {
            let request = super::next(&mut requests, "the request").await?;
            let (secret, forgeries) = forgeries(&request)?;
            for forged in forgeries {
                server.publish(forged).await.map_err(|e| e.to_string())?;
            }
            secrets.push(secret);
            let real = Message::reply(&request, &b"real"[..]).ok_or("no reply topic")?;
            server.publish(real).await.map_err(|e| e.to_string())
        };
        let (reply, answered) = tokio::join!(asking, answering);
        answered?;
        let reply = reply.map_err(|e| format!("request {round}: {e}"))?;
        ensure(reply.payload.to_bytes()?.as_ref() == b"real", || {
            format!("request {round} took a forged reply")
        })?;
    }
    for (i, secret) in secrets.iter().enumerate() {
        ensure(secret.len() >= 16, || {
            format!("request {i} is tied to its reply by {} bytes: {secret:?}", secret.len())
        })?;
    }
    // Different for every request, and not a counter (whose values share their first bytes).
    ensure(secrets[0][..8] != secrets[1][..8] && secrets[1][..8] != secrets[2][..8], || {
        format!("requests are tied to replies by guessable values: {secrets:?}")
    })?;
    Ok(())
}

/// What ties `request`'s reply to it, and replies that guess it wrongly.
fn forgeries(request: &Message) -> Result<(Vec<u8>, Vec<Message>), String> {
    let reply = |topic: Topic, correlation: Option<&[u8]>| {
        let mut m = Message::new(topic, &b"forged"[..]);
        m.correlation_id = correlation.map(bytes::Bytes::copy_from_slice);
        m
    };
    let inbox = request.reply_to.clone().ok_or("a request without a reply topic")?;
    if let Some(id) = &request.correlation_id {
        let mut flipped = id.to_vec();
        flipped[0] ^= 1;
        let guesses = [&b"1"[..], &b"0"[..], &[0u8; 16][..], &flipped[..]];
        let forged = guesses.iter().map(|g| reply(inbox.clone(), Some(g))).collect();
        return Ok((id.to_vec(), forged));
    }
    // No correlation id: the reply topic's last token is the secret; the hex form holds
    // 128 bits in 32 characters.
    let name = inbox.as_str();
    let cut = name.rfind(['/', '.']).ok_or("a reply topic with one token")? + 1;
    let (base, token) = name.split_at(cut);
    let mut flipped = token.as_bytes().to_vec();
    flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).map_err(|e| e.to_string())?;
    let mut forged = Vec::new();
    for guess in ["1", "0", "00000000000000000000000000000000", &flipped] {
        forged.push(reply(Topic::new(format!("{base}{guess}")).map_err(|e| e.to_string())?, None));
    }
    let secret = hex_or_raw(token);
    Ok((secret, forged))
}

/// The bytes a token stands for: decoded when it is hex, else as written.
fn hex_or_raw(token: &str) -> Vec<u8> {
    let hex = token.len().is_multiple_of(2) && token.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex {
        return token.as_bytes().to_vec();
    }
    (0..token.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&token[i..i + 2], 16).ok())
        .collect()
}
