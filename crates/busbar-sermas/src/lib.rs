//! The SERMAS dialect: join a SERMAS platform's MQTT bus from busbar.
//!
//! SERMAS names its topics with templates such as `app/:appId/dialogue/messages/:sessionId`,
//! stamps payloads with who sent them (`appId`, `clientId`, `userId`, `sessionId`, `source`,
//! `ts`), logs clients in with a JWT as the MQTT user name (the password varies by client:
//! `none`, `mqtt`, `sermas`), and runs over MQTT 5 on secure WebSockets where browsers and
//! robots connect. This crate gives:
//!
//! * [`TopicTemplate`]: filling `:placeholders` from values or from a payload (a leftover one
//!   is an error, as on the platform), and subscriptions with `+` for the unset ones;
//! * [`SermasClient`]: publishing stamped payloads at QoS 1 to filled templates, and
//!   subscriptions that never deliver the client's own publishes (MQTT 5 noLocal, refused
//!   rather than ignored where the connection has none), optionally kept to one session.
//!
//! The login and the WebSocket transport come from busbar's configuration:
//!
//! ```yaml
//! brokers:
//!   sermas:
//!     transport: ws
//!     host: sermas.example.com
//!     port: 443
//!     path: /mqtt
//!     tls: {}
//!     token: {oidc: {}, as: username, with: sermas}
//! ```

#![forbid(unsafe_code)]

pub mod catalogue;
mod client;
mod error;
mod template;
mod token;

pub use client::{Received, SermasClient, SermasContext, SermasSubscription};
pub use error::{Result, SermasError};
pub use template::{Params, TopicTemplate, params};
pub use token::SermasTokenProvider;
