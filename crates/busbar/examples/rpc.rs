//! An RPC service and 100 concurrent calls through one shared client.
//!
//! `cargo run -p busbar --example rpc`

use busbar::{RpcClient, RpcError, RpcServer};

#[tokio::main]
async fn main() -> busbar::Result<()> {
    let conn = busbar::connect("mem://").await?;
    let server = RpcServer::builder(&conn, "math/square")
        .concurrency(8)
        .serve(|n: i64| async move {
            n.checked_mul(n).ok_or_else(|| RpcError::invalid_argument(format!("{n}² overflows")))
        })
        .await?;
    let client = RpcClient::<i64, i64>::new(&conn, "math/square")?;
    let calls: Vec<_> = (0..100)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move { client.call(n).await })
        })
        .collect();
    let mut sum = 0;
    for c in calls {
        // A task that panicked is a bug in this example: say so and stop.
        let Ok(outcome) = c.await else { panic!("a call task panicked") };
        sum += outcome?;
    }
    println!("sum of squares 0..100 = {sum}");
    match client.call(i64::MAX).await {
        Err(e) => match e.remote_error() {
            Some(remote) => println!("error reply: {} ({})", remote.message, remote.code),
            None => println!("the call failed: {e}"),
        },
        Ok(v) => println!("unexpected: {v}"),
    }
    server.stop(std::time::Duration::from_secs(1)).await;
    Ok(())
}
