//! Long-running commands (`bridge`, `tcp-bridge`) print their counters now and then.

use std::time::Duration;

/// Runs until Ctrl-C, calling `report` every `interval` seconds (never when it is 0 or not a
/// number of seconds) and once more at the end.
pub async fn every_until_ctrl_c(interval: f64, report: impl Fn()) {
    let interval = Duration::try_from_secs_f64(interval).unwrap_or(Duration::ZERO);
    let mut tick = (!interval.is_zero())
        .then(|| tokio::time::interval_at(tokio::time::Instant::now() + interval, interval));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = async {
                match tick.as_mut() {
                    Some(t) => { t.tick().await; }
                    None => std::future::pending::<()>().await,
                }
            } => report(),
        }
    }
    report();
}
