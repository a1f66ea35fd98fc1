//! `redis://`, `rediss://`: busbar's Redis transport, on redis-rs 1.x with RESP3.
//!
//! # How busbar maps onto Redis
//!
//! * **Pub/sub.** A busbar topic is the Redis channel of the same name. A filter without
//!   wildcards is a `SUBSCRIBE`; one with `+` or `#` a `PSUBSCRIBE` glob
//!   ([`busbar_core::topic::redis_subscription`]). Globs match more than the filter (Redis `*`
//!   crosses `/`), so every message from a pattern is checked again with the filter before it
//!   is delivered: `+` and `#` keep their exact MQTT meaning. Pub/sub is at most once
//!   (`max_qos` is `AtMostOnce`): Redis keeps nothing for a client that is away.
//! * **Queue groups** (and so load-balanced RPC servers). Each `(group, filter)` has a Redis
//!   list; members `BLMPOP` from it, so each message goes to exactly one member. Groups are
//!   registered in the set `busbar:groups` and announced on the channel `busbar:ctl`; every
//!   connection keeps the registry in memory and, when publishing, `RPUSH`es a copy to the
//!   list of each group whose filter matches (next to the `PUBLISH` for plain subscribers),
//!   in the same pipeline. Each pipeline first reads the registry's generation
//!   (`busbar:groups:generation`, counted up by every join and registration): when it is
//!   newer than the cache, a notice is still on its way, so the registry is read again and
//!   the batch's publishes are sent to what they missed, and a group joined or a durable
//!   subscription made just before a publish on another connection still gets it.
//! * **Durable subscriptions** (`SubscribeOptions::durable`). A stream
//!   `busbar:durable:<name>:<filter>` in the same registry (its entry ends in `\0durable`),
//!   which publishers `XADD` to as they `RPUSH` to group lists, read in the consumer group
//!   `busbar` by every connection subscribed under the name, one entry to one of them, and
//!   acknowledged (`XACK`, `XDEL`) on hand-over or by each message's receipt. It stays
//!   registered when its readers leave, until `Connection::remove_durable`.
//! * **Request/reply.** A request is published like any message (so it reaches an RPC
//!   server's queue group list) with a reply topic `_busbar/inbox/<id>` (`<id>`: 128 random
//!   bits in hex, so no other client can guess it) that is a list per connection
//!   (`busbar:_busbar/inbox/<id>`, expiring after 60 s unread), read by one `BLMPOP` loop on
//!   a connection of its own, and a correlation id of 16 random bytes in the envelope that
//!   ties the reply to its request. The number of receivers Redis reports for the `PUBLISH`,
//!   plus the group lists reached, tells whether anybody listens: a request nobody can
//!   receive fails at once with `NoResponders`. A reply that finds no request waiting (it
//!   gave up) is counted in `late_replies` on the requesting connection.
//! * **What Redis lacks**: retained messages (refused with `Unsupported`), last will
//!   (`capabilities().last_will` is false; a last will given at connect is refused with `Unsupported`, one set with `last_will_if_supported` is left out), no-local
//!   subscriptions (refused). Expiry travels in the envelope and is enforced on delivery.
//!
//! # The envelope
//!
//! Redis messages are bare byte strings. Headers, reply topic, correlation id, expiry and (on
//! lists, which carry no channel name) the topic travel in a small binary envelope in front of
//! the payload; a message without them goes out as its bare payload:
//!
//! ```text
//! "\0BBR" 0x01 flags [ttl_ms u64] [reply_to u16+str] [correlation u16+bytes]
//!                    [headers u16 count, (u16+name, u32+value)*] [topic u16+str] payload
//! ```
//!
//! (flags bits 0x01..0x10 in that order, integers big-endian). A bare payload that begins
//! with the magic is wrapped with no fields, so decoding is never ambiguous.
//!
//! # Connections
//!
//! One multiplexed RESP3 connection per transport carries commands and subscriptions; a
//! supervisor task repairs it with jittered exponential backoff (100 ms to 5 s) and then
//! re-subscribes every channel and pattern and re-joins every queue group before reporting
//! `Reconnected`. Blocking list reads (the reply inbox, each queue group) each have a
//! connection of their own, since a blocked command would hold up everything pipelined
//! behind it. Publishes go through a bounded queue (`?publish_queue=`, `?publish_overflow=`)
//! to a forwarder that pipelines whatever accumulated while the previous batch was on the
//! wire. While the server is unreachable, publishes and requests fail at once with errors of
//! kind `NotConnected` (Redis would not keep them anyway).
//!
//! Connecting fails with a `ConnectError` whose kind says why: `InvalidUrl`, `Refused`
//! (the server refused the user name, password or token), `Tls`, `Unreachable`, `TimedOut`,
//! `Config` (an unreadable TLS file), `Credentials` (the token provider gave no token),
//! `Unsupported` (a last will that is required).
//!
//! Tokens (`ConnectOptions::token`) are presented as the password (or user name, per
//! `TokenPlacement`); before expiry a fresh one is fetched and the live connection is
//! re-authenticated with `AUTH`, which keeps its subscriptions; reconnects use the newest.
//!
//! `rediss://` uses rustls with the ring provider, which is installed as the process-wide
//! default if none is (redis-rs takes its provider from there); `?ca=` names a PEM CA file,
//! `?cert=` and `?key=` a client certificate.

#![forbid(unsafe_code)]

mod envelope;
mod settings;
mod tls;
mod transport;

pub use settings::{Settings, TlsSettings};
pub use transport::RedisTransport;

use std::sync::Arc;

use busbar_core::error::ConnectError;
use busbar_core::transport::{BoxFuture, ConnectOptions};
use busbar_core::{Connection, Connector};

/// Connects `redis://`, `rediss://` and `redis+unix://` (or `unix://`) URLs.
#[derive(Debug, Default, Clone, Copy)]
pub struct RedisConnector;

impl Connector for RedisConnector {
    fn schemes(&self) -> &[&'static str] {
        &["redis", "rediss", "redis+unix", "unix"]
    }

    fn connect(
        &self,
        url: &str,
        options: ConnectOptions,
    ) -> BoxFuture<'static, Result<Connection, ConnectError>> {
        let url = url.to_owned();
        Box::pin(async move {
            Ok(Connection::new(Arc::new(RedisTransport::connect(&url, options).await?)))
        })
    }
}
