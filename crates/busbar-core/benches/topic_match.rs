//! Dispatch cost of [`TopicTrie`] versus the number of subscriptions.
//!
//! The point of the trie is that finding the subscribers of a message costs the same with
//! one subscription as with a hundred thousand unrelated ones. This bench stores `n`
//! filters, exactly one of which matches the probe topic, and reports nanoseconds per
//! dispatch (one `for_each_match` call) for n = 1, 1k and 100k. A linear scan with
//! `TopicFilter::matches_str` is timed alongside to show what the trie avoids.
//!
//! Run with `cargo bench -p busbar-core --bench topic_match`. No external harness: timing
//! uses `std::time::Instant`, which is precise enough at these iteration counts.

use std::hint::black_box;
use std::time::Instant;

use busbar_core::topic::{TopicFilter, TopicTrie};

/// The topic every dispatch looks up.
const PROBE_TOPIC: &str = "probe/dev/temp";
/// A topic that matches nothing, to time the miss path too.
const MISS_TOPIC: &str = "site/unknown/humidity";

/// `n` filters: one that matches [`PROBE_TOPIC`] and `n - 1` of assorted shapes (literal,
/// `+` in the middle and at the root, trailing `#`) that never match it.
fn filters(n: usize) -> Vec<TopicFilter> {
    let mut out = Vec::with_capacity(n);
    out.push(TopicFilter::new("probe/+/temp").expect("valid"));
    for i in 1..n {
        let s = match i % 4 {
            0 => format!("site/{i}/temp"),
            1 => format!("site/{i}/+"),
            2 => format!("+/{i}/status"),
            _ => format!("fleet/{i}/#"),
        };
        out.push(TopicFilter::new(s).expect("valid"));
    }
    out
}

/// Nanoseconds per call of `dispatch`, and the matches it found per call.
fn time(iterations: usize, mut dispatch: impl FnMut() -> usize) -> (f64, usize) {
    // Warm up caches and branch predictors.
    for _ in 0..iterations / 10 + 1 {
        black_box(dispatch());
    }
    let start = Instant::now();
    let mut matches = 0;
    for _ in 0..iterations {
        matches += dispatch();
    }
    let elapsed = start.elapsed();
    let per_call = elapsed.as_nanos() as f64 / iterations as f64;
    (per_call, matches / iterations)
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` this runs as a quick
    // smoke test of the same code (a debug build timing millions of dispatches would only
    // slow the test suite down).
    let scale = if std::env::args().any(|a| a == "--bench") { 1 } else { 1_000 };
    println!(
        "{:>13}  {:>16}  {:>9}  {:>16}  {:>19}",
        "subscriptions", "trie ns/dispatch", "matches", "trie miss ns", "linear ns/dispatch"
    );
    for n in [1, 1_000, 100_000] {
        let filters = filters(n);
        let mut trie = TopicTrie::new();
        for (i, f) in filters.iter().enumerate() {
            trie.insert(f, i);
        }

        let (trie_ns, trie_matches) = time(2_000_000 / scale, || {
            let mut hits = 0;
            trie.for_each_match(black_box(PROBE_TOPIC), |v| {
                black_box(v);
                hits += 1;
            });
            hits
        });
        let (miss_ns, _) = time(2_000_000 / scale, || {
            let mut hits = 0;
            trie.for_each_match(black_box(MISS_TOPIC), |_| hits += 1);
            hits
        });
        // Keep the linear scan to roughly the same total work at every size.
        let linear_iterations = (20_000_000 / n / scale).clamp(2, 2_000_000);
        let (linear_ns, linear_matches) = time(linear_iterations, || {
            filters.iter().filter(|f| f.matches_str(black_box(PROBE_TOPIC))).count()
        });
        assert_eq!(trie_matches, 1);
        assert_eq!(linear_matches, 1);
        println!("{n:>13}  {trie_ns:>16.1}  {trie_matches:>9}  {miss_ns:>16.1}  {linear_ns:>19.1}");
    }
}
