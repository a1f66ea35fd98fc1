//! A REST proxy service: a node on the bus that turns RPC requests into HTTP calls and
//! answers with the HTTP response's status, headers and body.
//!
//! Requests and responses have the shape of commlib-py's REST proxy (`RESTProxyMessage`:
//! `host`, `port`, `ssl`, `base_url`, `path`, `verb`, `query_params`, `path_params`,
//! `body_params`, `headers`; answered with `data`, `headers`, `status_code`), so commlib
//! clients written for it work unchanged, over commlib's wire ([`Wire::Commlib`]) or busbar's
//! own RPC ([`Wire::Busbar`]). What it does beyond that, and where it differs, is in
//! [`RestRequest`] and [`RestResponse`]: every HTTP method, `path_params` filled in, JSON
//! bodies, binary answers in base64, a deadline, an allow-list of hosts, and failures of the
//! proxy itself reported as such rather than lost.

#![forbid(unsafe_code)]

mod message;
mod proxy;
mod service;

pub use message::{RestRequest, RestResponse};
pub use proxy::{ProxyError, ProxyErrorKind, RestProxy, RestProxyOptions};
pub use service::{RestProxyService, Wire};

/// The service name commlib's REST proxy answers on.
pub const COMMLIB_NAME: &str = "proxy.rest";
/// The default service topic on busbar's own wire.
pub const BUSBAR_TOPIC: &str = "proxy/rest";
