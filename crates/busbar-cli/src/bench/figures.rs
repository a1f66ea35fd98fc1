//! What one measurement found, how runs are combined, and how it is printed.

use std::time::{Duration, Instant};

use serde::Serialize;

/// One measurement of one side (busbar, or the raw client it is compared with).
#[derive(Serialize, Default, Clone)]
pub(super) struct Figures {
    /// Messages received per second (pub/sub, all subscribers together) or calls per second.
    pub(super) msgs_per_s: f64,
    /// Messages published and never received (per subscriber, summed), or calls that failed.
    pub(super) lost: u64,
    /// Messages received more than once.
    pub(super) duplicated: u64,
    /// Messages received after a later one from the same publisher.
    pub(super) out_of_order: u64,
    /// Latency percentiles: publish to receipt (pub/sub) or call to reply (RPC).
    pub(super) p50_us: f64,
    pub(super) p99_us: f64,
    pub(super) elapsed_s: f64,
    pub(super) received: u64,
}

impl Figures {
    /// Pub/sub figures from what the subscribers tallied, `elapsed` from the first publish
    /// to the last arrival.
    pub(super) fn from_tallies(tallies: Vec<Tally>, elapsed: Duration) -> Figures {
        let elapsed = elapsed.as_secs_f64().max(1e-9);
        let mut latencies = Vec::new();
        let mut f = Figures { elapsed_s: elapsed, ..Figures::default() };
        for t in tallies {
            f.received += t.received;
            f.lost += t.lost();
            f.duplicated += t.duplicated;
            f.out_of_order += t.out_of_order;
            latencies.extend(t.latencies_ns);
        }
        f.msgs_per_s = f.received as f64 / elapsed;
        (f.p50_us, f.p99_us) = percentiles_ns(&mut latencies);
        f
    }

    /// RPC figures: `latencies` of the calls that were answered, `failed` the others.
    pub(super) fn from_calls(mut latencies: Vec<u64>, failed: u64, elapsed: Duration) -> Figures {
        let elapsed = elapsed.as_secs_f64().max(1e-9);
        let received = latencies.len() as u64;
        let (p50_us, p99_us) = percentiles_ns(&mut latencies);
        Figures {
            msgs_per_s: received as f64 / elapsed,
            lost: failed,
            p50_us,
            p99_us,
            elapsed_s: elapsed,
            received,
            ..Figures::default()
        }
    }
}

/// Pub/sub figures from the subscribers' tasks, each ending with its tally and the time of
/// its last arrival; `started` is when the first publish went.
pub(super) async fn gather_tallies(
    receiving: Vec<tokio::task::JoinHandle<(Tally, Instant)>>,
    started: Instant,
) -> anyhow::Result<Figures> {
    let (mut tallies, mut last) = (Vec::new(), started);
    for r in receiving {
        let (tally, at) = r.await?;
        last = last.max(at);
        tallies.push(tally);
    }
    Ok(Figures::from_tallies(tallies, last.saturating_duration_since(started)))
}

/// RPC figures from the callers' tasks, each ending with its latencies (ns) and failures;
/// `started` is when the first call went.
pub(super) async fn gather_calls(
    callers: Vec<tokio::task::JoinHandle<(Vec<u64>, u64)>>,
    started: Instant,
) -> anyhow::Result<Figures> {
    let (mut latencies, mut failed) = (Vec::new(), 0);
    for c in callers {
        let (l, f) = c.await?;
        latencies.extend(l);
        failed += f;
    }
    Ok(Figures::from_calls(latencies, failed, started.elapsed()))
}

/// The 50th and 99th percentiles of `samples` (nanoseconds), in microseconds.
fn percentiles_ns(samples: &mut [u64]) -> (f64, f64) {
    samples.sort_unstable();
    let pct = |p: f64| {
        let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples.get(i).map_or(0.0, |ns| *ns as f64 / 1e3)
    };
    (pct(0.50), pct(0.99))
}

/// The median of every figure over several runs; loss, duplicates and disorder from the
/// worst run, so none is ever hidden by a good one.
pub(super) fn median(runs: &[Figures]) -> Figures {
    let mid = |f: fn(&Figures) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let worst = |f: fn(&Figures) -> u64| runs.iter().map(f).max().unwrap_or(0);
    Figures {
        msgs_per_s: mid(|f| f.msgs_per_s),
        lost: worst(|f| f.lost),
        duplicated: worst(|f| f.duplicated),
        out_of_order: worst(|f| f.out_of_order),
        p50_us: mid(|f| f.p50_us),
        p99_us: mid(|f| f.p99_us),
        elapsed_s: mid(|f| f.elapsed_s),
        received: runs.iter().map(|f| f.received).min().unwrap_or(0),
    }
}

/// What one subscriber received, by publisher and sequence number.
pub(super) struct Tally {
    /// Per publisher: which sequence numbers arrived.
    seen: Vec<Vec<bool>>,
    /// Per publisher: the highest sequence number so far.
    highest: Vec<Option<u32>>,
    pub(super) received: u64,
    pub(super) duplicated: u64,
    pub(super) out_of_order: u64,
    distinct: u64,
    expected: u64,
    pub(super) latencies_ns: Vec<u64>,
}

impl Tally {
    /// For `per_publisher[i]` messages from publisher `i`.
    pub(super) fn new(per_publisher: &[u64]) -> Tally {
        Tally {
            seen: per_publisher.iter().map(|n| vec![false; *n as usize]).collect(),
            highest: vec![None; per_publisher.len()],
            received: 0,
            duplicated: 0,
            out_of_order: 0,
            distinct: 0,
            expected: per_publisher.iter().sum(),
            latencies_ns: Vec::with_capacity(per_publisher.iter().sum::<u64>() as usize),
        }
    }

    /// True once every expected message arrived.
    pub(super) fn complete(&self) -> bool {
        self.distinct >= self.expected
    }

    /// One arrival; a frame that names no publisher or sequence of this run is ignored.
    pub(super) fn record(&mut self, frame: Frame, latency_ns: u64) {
        let (p, s) = (frame.publisher as usize, frame.sequence);
        let Some(slot) = self.seen.get_mut(p).and_then(|v| v.get_mut(s as usize)) else {
            return;
        };
        self.received += 1;
        if *slot {
            self.duplicated += 1;
            return;
        }
        *slot = true;
        self.distinct += 1;
        self.latencies_ns.push(latency_ns);
        match &mut self.highest[p] {
            Some(h) if *h > s => self.out_of_order += 1,
            h => *h = Some(s),
        }
    }

    fn lost(&self) -> u64 {
        self.expected - self.distinct
    }
}

/// What every pub/sub payload starts with: who published it, its number, and when (in
/// nanoseconds since the run began; publishers and subscribers share one clock, being in
/// one process).
#[derive(Clone, Copy)]
pub(super) struct Frame {
    pub(super) publisher: u32,
    pub(super) sequence: u32,
    pub(super) sent_ns: u64,
}

/// Bytes of the frame at the head of each payload: payloads are at least this long.
pub(super) const FRAME: usize = 16;

impl Frame {
    /// A payload of `size` bytes (at least [`FRAME`]) starting with this frame.
    pub(super) fn payload(self, size: usize) -> Vec<u8> {
        let mut p = vec![0x5a; size.max(FRAME)];
        p[0..4].copy_from_slice(&self.publisher.to_be_bytes());
        p[4..8].copy_from_slice(&self.sequence.to_be_bytes());
        p[8..16].copy_from_slice(&self.sent_ns.to_be_bytes());
        p
    }

    /// The frame at the head of `payload`, if it has one.
    pub(super) fn read(payload: &[u8]) -> Option<Frame> {
        let u32_at = |i: usize| payload.get(i..i + 4)?.try_into().ok().map(u32::from_be_bytes);
        let sent = payload.get(8..16)?.try_into().ok().map(u64::from_be_bytes)?;
        Some(Frame { publisher: u32_at(0)?, sequence: u32_at(4)?, sent_ns: sent })
    }
}

/// Splits `count` messages among `publishers`: the first ones take the remainder.
pub(super) fn shares(count: u64, publishers: usize) -> Vec<u64> {
    let n = publishers as u64;
    (0..n).map(|i| count / n + u64::from(i < count % n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_counts_loss_duplicates_and_disorder() {
        let mut t = Tally::new(&[3, 2]);
        let f = |publisher, sequence| Frame { publisher, sequence, sent_ns: 0 };
        for (p, s) in [(0, 0), (0, 2), (0, 1), (1, 0), (1, 0), (7, 0), (0, 9)] {
            t.record(f(p, s), 10);
        }
        assert_eq!((t.received, t.duplicated, t.out_of_order, t.lost()), (5, 1, 1, 1));
        assert!(!t.complete());
        t.record(f(1, 1), 10);
        assert!(t.complete());
    }

    #[test]
    fn a_frame_reads_back() {
        let frame = Frame { publisher: 3, sequence: 70_000, sent_ns: 123_456_789 };
        let read = Frame::read(&frame.payload(100)).expect("frame");
        assert_eq!((read.publisher, read.sequence, read.sent_ns), (3, 70_000, 123_456_789));
        assert!(Frame::read(&[1, 2, 3]).is_none());
        assert_eq!(shares(10, 3), vec![4, 3, 3]);
    }
}
