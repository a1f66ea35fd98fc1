//! The plumbing every busbar transport shares, written once.
//!
//! A transport crate keeps only what is its broker's own (its settings keys, its connection
//! supervisor, how it routes and what it sends); everything that means the same on every
//! broker lives here, so it means the same everywhere:
//!
//! * [`delivery`]: handing a message to a subscription's bounded queue, and what counts as
//!   `delivered`, `dropped` and a slow consumer under each overflow policy ([`Meter`]).
//! * [`fanout`]: the local subscriptions one broker subscription feeds, and the pick of one
//!   queue-group member ([`Fanout`]).
//! * [`inbox`]: requests waiting for their replies: unguessable correlation ids, one
//!   deadline, and who counts `requests`, `timeouts` and `late_replies` ([`Inbox`]).
//! * [`endpoint`]: broker URLs parsed into one typed [`Endpoint`] with typed parameter
//!   getters, and the one way a URL is shown without its secrets.
//! * [`login`]: user name and password, tokens placed in them, and the task that refreshes
//!   tokens before they expire.
//! * [`lifecycle`]: open until closed once, the token every task of a connection stops
//!   on, and the supervisor task a close waits for ([`Lifecycle`], [`Supervisor`]).
//! * [`publish_queue`]: the queue that lets publishes under a drop policy never wait.
//! * [`servers`]: server lists: which server a connection tries next, and how long it
//!   waits first ([`Servers`]).
//! * [`acks`]: acknowledgements of received messages on their way to the broker, which
//!   closing waits for ([`AcksInFlight`]).
//! * [`backoff`]: the delays between reconnect attempts.
//!
//! This crate is for transport authors; applications never need it (the `busbar` facade does
//! not re-export it).

#![forbid(unsafe_code)]

pub mod acks;
pub mod backoff;
pub mod delivery;
pub mod durable;
pub mod endpoint;
pub mod fanout;
pub mod ids;
pub mod inbox;
pub mod lifecycle;
pub mod login;
pub mod publish_queue;
pub mod servers;

pub use acks::AcksInFlight;
pub use delivery::{Meter, Offer, Target};
pub use endpoint::{Endpoint, Params, Server};
pub use fanout::Fanout;
pub use ids::CorrelationId;
pub use inbox::Inbox;
pub use lifecycle::{Lifecycle, Supervisor};
pub use login::Login;
pub use publish_queue::PublishQueue;
pub use servers::{Retry, ServerOrder, Servers};

/// Locks `m`, going on if a panic poisoned it: transports hold these locks only around
/// plain bookkeeping that a panic cannot leave half done, and a poisoned lock must not take
/// a connection down with it.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
