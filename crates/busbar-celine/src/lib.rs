//! The CELINE digital-twin dialect: talk to CELINE's event brokers and apps from busbar.
//!
//! CELINE's services publish JSON objects over MQTT 3.1.1 through the `MqttBroker` of
//! `celine-sdk`, under a topic prefix (usually `celine/dt`), and log in with an OIDC access
//! token as the MQTT user name and the password `jwt`. This crate reproduces what travels:
//!
//! * [`DtEvent`]: the event envelope (`@type`, `@context`, `id`, `source`, `timestamp`,
//!   `payload`, `metadata`, `correlation_id` when set), and [`to_event`], the digital twin's
//!   reading of arriving JSON as events;
//! * [`CelineBroker`]: publishing with CELINE's payload enrichment (`created`,
//!   `correlation_id`, never overwriting the caller's keys), `publish_event` with CELINE's
//!   topic derivation, subscriptions that deliver non-JSON payloads as `{"_raw": text}`, and
//!   CELINE's counters.
//!
//! Connection, login and prefix come from busbar's configuration: CELINE's own
//! `brokers.yaml` loads as it is (`busbar::Config`, `docs/configuration.md`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use busbar_celine::{CelineBroker, DtEvent, EventSource};
//!
//! let conn = busbar::Config::load("config/brokers.yaml")?.connect(None).await?;
//! let broker = CelineBroker::new(&conn);
//! let event = DtEvent::new(
//!     "dt.ev-charging.readiness-computed",
//!     EventSource::domain("ev-charging"),
//!     serde_json::json!({"community_id": "rec-folgaria", "ready": true}),
//! );
//! broker.publish_event(&event, None).await?; // dt/ev-charging/readiness-computed/rec-folgaria
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod broker;
mod error;
mod event;

pub use broker::{
    CelineBroker, CelineStats, CelineSubscription, PublishOptions, Received, SubscriptionStats,
};
pub use error::{CelineError, Result};
pub use event::{DEFAULT_CONTEXT, DtEvent, EventSource, SubscriptionInfo, to_event};

/// Now, as CELINE's Python writes times (`2026-11-23T07:16:45.985532+00:00`).
pub fn now() -> String {
    busbar_core::time::iso8601_micros(std::time::SystemTime::now())
}
