//! Long-running commands (`bridge`, `tcp-bridge`) print their counters now and then.

use std::time::Duration;

/// Runs until Ctrl-C (counted by `interrupts`, made before the command said it was ready),
/// calling `report` every `interval` (never when it is zero) and once more at the end.
pub async fn every_until_ctrl_c(
    interval: Duration,
    interrupts: &mut crate::exit::Interrupts,
    report: impl Fn(),
) {
    // Zero, or longer than the clock can count: only the report at the end.
    let mut tick = (!interval.is_zero())
        .then(|| tokio::time::Instant::now().checked_add(interval))
        .flatten()
        .map(|first| tokio::time::interval_at(first, interval));
    loop {
        tokio::select! {
            () = interrupts.next() => break,
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
