//! Typed interfaces from ApiGear ObjectAPI modules.
//!
//! * [`module`]: reads and checks `apigear.module/1.0` documents (YAML or JSON).
//! * [`codegen`]: turns modules into Rust: structs, enums, and per interface a trait, a
//!   service adapter and a client adapter ([`build`] for build scripts, `busbar gen` on the
//!   command line).
//! * [`runtime`]: what the generated adapters run on: the ApiGear MQTT mapping
//!   (`{module}/{Interface}/prop|set|sig|rpc/{member}`, retained properties, JSON array
//!   arguments, MQTT 5 response topic and correlation data) over any busbar connection.

#![forbid(unsafe_code)]

pub mod build;
pub mod codegen;
pub mod module;
pub mod runtime;

/// serde, for the generated code (which names it through this crate, so that users need not
/// depend on it themselves).
pub use serde;
/// serde_json, for the generated code.
pub use serde_json;
