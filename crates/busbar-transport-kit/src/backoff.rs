//! How long a transport waits before trying again (a reconnect, a token fetch).

use std::time::Duration;

/// The first retry waits up to this long.
pub const MIN: Duration = Duration::from_millis(100);
/// No retry waits longer than this.
pub const MAX: Duration = Duration::from_secs(5);

/// The delay before retry number `attempt` (0 for the first): 100 ms doubling to 5 s, each
/// delay a random point between half and all of that, so that clients cut off together do
/// not all come back at the same instant.
pub fn backoff(attempt: u32) -> Duration {
    let exp = MIN.saturating_mul(1u32 << attempt.min(6)).min(MAX);
    let jitter = (uuid::Uuid::new_v4().as_u128() % 1000) as u32;
    exp / 2 + exp / 2 * jitter / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_a_bound_with_jitter() {
        for attempt in 0..40 {
            let d = backoff(attempt);
            let exp = MIN.saturating_mul(1u32 << attempt.min(6)).min(MAX);
            assert!(d >= exp / 2 && d <= exp, "attempt {attempt}: {d:?}");
        }
        assert!(backoff(100) <= MAX);
        let spread: std::collections::HashSet<_> = (0..50).map(|_| backoff(3)).collect();
        assert!(spread.len() > 1, "no jitter");
    }
}
