//! The proxy on the bus: an RPC service on busbar's wire or commlib's.

use busbar_commlib::{CommlibError, CommlibRpcService};
use busbar_core::Connection;
use busbar_core::patterns::{RpcError, RpcServer};
use serde_json::Value;

use crate::message::RestRequest;
use crate::proxy::{ProxyError, ProxyErrorKind, RestProxy};

/// Which RPC wire the service answers on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// busbar's RPC. The proxy's own failures are error replies (codes `invalid_argument`,
    /// `permission_denied`, `unavailable`, `deadline_exceeded`), so a caller tells them apart
    /// from the server's answers by the reply alone.
    Busbar,
    /// commlib-py's RPC (on MQTT, Redis or AMQP), for commlib's clients. commlib has no
    /// error replies: the proxy's own failures are answers with a 4xx/5xx status and
    /// `error` set.
    Commlib,
}

/// A running REST proxy service. Stops when dropped.
pub struct RestProxyService {
    server: Server,
}

enum Server {
    Busbar(RpcServer),
    Commlib(CommlibRpcService),
}

impl std::fmt::Debug for RestProxyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RestProxyService")
    }
}

impl RestProxyService {
    /// Serves `name` on `conn` (a busbar topic, or a commlib service name such as
    /// [`COMMLIB_NAME`](crate::COMMLIB_NAME)) with `proxy`. The errors are those of setting
    /// up the service (a name the wire refuses, a subscription the broker refuses). Requests are served as they
    /// come, each in a task of its own, so one slow server does not hold up the others.
    pub async fn spawn(
        conn: &Connection,
        name: &str,
        proxy: RestProxy,
        wire: Wire,
    ) -> Result<Self, CommlibError> {
        let server = match wire {
            Wire::Busbar => Server::Busbar(
                RpcServer::spawn(conn, name, move |request: Value| {
                    let proxy = proxy.clone();
                    async move {
                        let request = parse(request).map_err(to_rpc_error)?;
                        proxy.call(&request).await.map_err(to_rpc_error)
                    }
                })
                .await?,
            ),
            Wire::Commlib => Server::Commlib(
                CommlibRpcService::spawn(conn, name, move |request: Value| {
                    let proxy = proxy.clone();
                    async move {
                        let result = match parse(request) {
                            Ok(request) => proxy.call(&request).await,
                            Err(e) => Err(e),
                        };
                        result.unwrap_or_else(|e| e.to_response())
                    }
                })
                .await?,
            ),
        };
        Ok(RestProxyService { server })
    }
}

impl RestProxyService {
    /// Stops taking requests; on busbar's wire, calls in flight are given up to `drain` to
    /// finish and answer.
    pub async fn stop(self, drain: std::time::Duration) {
        match self.server {
            Server::Busbar(server) => {
                server.stop(drain).await;
            }
            Server::Commlib(service) => drop(service),
        }
    }
}

/// A request, or a 400 that says which field is wrong.
fn parse(request: Value) -> Result<RestRequest, ProxyError> {
    serde_json::from_value(request).map_err(|e| ProxyError {
        kind: ProxyErrorKind::BadRequest,
        message: format!("not a REST proxy request: {e}"),
    })
}

fn to_rpc_error(e: ProxyError) -> RpcError {
    let code = match e.kind {
        ProxyErrorKind::BadRequest => RpcError::INVALID_ARGUMENT,
        ProxyErrorKind::NotAllowed => "permission_denied",
        ProxyErrorKind::Unreachable => RpcError::UNAVAILABLE,
        ProxyErrorKind::Timeout => "deadline_exceeded",
    };
    RpcError::new(code, e.message)
}

/// REST proxy requests from callers: a request or an error, never a panic, whatever JSON
/// (or non-JSON) a caller sends.
#[cfg(test)]
mod fuzz {
    use busbar_testkit::fuzz::Fuzz;

    use super::*;

    #[test]
    fn fuzz_request() {
        let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/request");
        Fuzz::new("rest_proxy_request", corpus)
            .dictionary(&["{id}", "\"path_params\"", "\"json\"", "%", "@", "\"verb\"", "65536"])
            .run(|input| {
                let Ok(value) = serde_json::from_slice::<Value>(input) else { return };
                if let Ok(request) = parse(value) {
                    let _ = request.method();
                    let _ = request.url();
                    let _ = request.to_http();
                }
            });
    }
}
