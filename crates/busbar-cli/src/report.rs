//! Long-running commands (`bridge`, `tcp-bridge`) print their counters now and then.

use std::time::Duration;

/// Runs until Ctrl-C (counted by `interrupts`, made before the command said it was ready), calling `report` every `interval` seconds (never when it is 0 or not a
/// number of seconds) and once more at the end.
pub async fn every_until_ctrl_c(
    interval: f64,
    interrupts: &mut crate::exit::Interrupts,
    report: impl Fn(),
) {
    let interval = Duration::try_from_secs_f64(interval).unwrap_or(Duration::ZERO);
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
