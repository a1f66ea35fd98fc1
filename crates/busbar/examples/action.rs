//! A preemptable action: feedback, then a cancel.
//!
//! `cargo run -p busbar --example action`

use std::sync::Arc;
use std::time::Duration;

use busbar::{ActionClient, ActionError, ActionServer, GoalContext, RpcError};

async fn navigate(waypoints: u32, ctx: Arc<GoalContext<u32>>) -> Result<String, ActionError> {
    for wp in 1..=waypoints {
        tokio::select! {
            _ = ctx.cancelled() => return Err(ActionError::Canceled),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        ctx.feedback(wp).await.map_err(|e| RpcError::internal(e.to_string()))?;
    }
    Ok(format!("arrived after {waypoints} waypoints"))
}

#[tokio::main]
async fn main() -> busbar::Result<()> {
    let conn = busbar::connect("mem://").await?;
    let _server = ActionServer::builder::<u32>(&conn, "robot/navigate").serve(navigate).await?;
    let client = ActionClient::<u32, u32, String>::new(&conn, "robot/navigate").await?;

    let mut goal = client.send_goal(3).await?;
    while let Some(wp) = goal.feedback().await {
        println!("reached waypoint {wp}");
    }
    println!("{}", goal.result().await?);

    let mut goal = client.send_goal(100).await?;
    goal.feedback().await;
    goal.cancel().await?;
    while let Some(status) = goal.status_changed().await {
        println!("status {status:?}");
    }
    println!("result: {:?}", goal.result().await.err());
    Ok(())
}
