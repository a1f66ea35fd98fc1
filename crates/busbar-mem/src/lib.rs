//! `mem://`: busbar's in-process transport.
//!
//! Every connection to the same bus shares one router: a topic trie of subscriptions, the
//! retained-message store and the reply inboxes. Publishing matches the topic once, hands the
//! message to each matching subscription's delivery queue and never serialises a typed value.
//! It implements the whole transport contract and is the reference the conformance suite is
//! checked against: where a broker transport behaves differently from `mem://`, the broker
//! transport is wrong (or says so in its capabilities).
//!
//! * `mem://` is the process-wide default bus; `mem://NAME` a separate named bus.
//! * [`MemBus::new`] makes a private bus (tests use one each, so they cannot interfere).
//! * `?serialize=always` makes a connection serialise typed payloads as brokers must.

#![forbid(unsafe_code)]

mod bus;
mod connector;
mod routes;
mod session;

pub use bus::MemBus;
pub use connector::{MemConnector, MemOptions};
pub use session::MemTransport;
