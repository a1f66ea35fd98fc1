//! commlib's node control services: with `ctrl_services=True` a commlib node serves the RPCs
//! `<node>.start` and `<node>.stop`, which take `{}` and answer `{"status": 0 | 1, "error":
//! ""}` (1 when the node is not in a state it can leave that way).

use std::time::Duration;

use busbar_core::Connection;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::names::node_name;
use crate::rpc::CommlibRpcClient;

/// The empty request of the control services.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ControlRequest {}

/// What a control service answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlReply {
    /// 0: done; 1: the node cannot make that transition now.
    #[serde(default)]
    pub status: i64,
    /// Why not, when `status` is 1.
    #[serde(default)]
    pub error: String,
}

/// Asks the commlib node `node` to stop (under the name commlib gives it: `a-b` is `a_b`).
pub async fn stop_node(conn: &Connection, node: &str, timeout: Duration) -> Result<ControlReply> {
    call(conn, &format!("{}.stop", node_name(node)), timeout).await
}

/// Asks the commlib node `node` to start (under the name commlib gives it).
pub async fn start_node(conn: &Connection, node: &str, timeout: Duration) -> Result<ControlReply> {
    call(conn, &format!("{}.start", node_name(node)), timeout).await
}

async fn call(conn: &Connection, name: &str, timeout: Duration) -> Result<ControlReply> {
    CommlibRpcClient::<ControlRequest, ControlReply>::new(conn, name)?
        .timeout(timeout)
        .call(&ControlRequest {})
        .await
}
