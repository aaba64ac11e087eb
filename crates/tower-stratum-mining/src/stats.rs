//! [`MiningStats`] for a status line, and the tick-driven hashrate estimator behind it.

use crate::share_math::HASHES_PER_DIFFICULTY_1;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A snapshot of the server for a status line
/// ([`MiningServer::stats`](crate::MiningServer::stats)).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MiningStats {
    /// Established Mining connections.
    pub connections: usize,
    /// Open standard plus extended channels (group channels not counted).
    pub channels: usize,
    /// Shares accepted since start (including block solutions).
    pub shares_accepted: u64,
    /// Shares rejected since start (every `SubmitShares.Error` sent).
    pub shares_rejected: u64,
    /// Blocks found since start.
    pub blocks_found: u64,
    /// Estimated hashrate of all channels, in hashes per second (H/s): the work proven by
    /// accepted shares (difficulty × 2^48/65535 hashes each) over the last
    /// [`hashrate_window`](crate::MiningServerConfig::hashrate_window) of ticks, divided by the
    /// time covered. `0.0` until two ticks have passed.
    pub hashrate_estimate_hs: f64,
}

/// Work (in difficulty units) accumulated per tick interval, over a sliding window.
#[derive(Debug, Clone)]
pub(crate) struct HashrateEstimator {
    window: Duration,
    /// Difficulty accepted since the last tick.
    pending: f64,
    /// `(tick time, difficulty accepted in the interval ending then)`, oldest first.
    buckets: VecDeque<(Instant, f64)>,
    /// The tick that opened the oldest bucket's interval.
    start: Option<Instant>,
}

impl HashrateEstimator {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            pending: 0.0,
            buckets: VecDeque::new(),
            start: None,
        }
    }

    /// Counts an accepted share of `difficulty`.
    pub(crate) fn add(&mut self, difficulty: f64) {
        if difficulty.is_finite() && difficulty > 0.0 {
            self.pending += difficulty;
        }
    }

    /// Closes the current interval at `now` and drops intervals older than the window.
    pub(crate) fn tick(&mut self, now: Instant) {
        if self.start.is_none() {
            self.start = Some(now);
            self.pending = 0.0; // shares before the first tick have no time base
            return;
        }
        self.buckets
            .push_back((now, std::mem::take(&mut self.pending)));
        while let Some(&(t, _)) = self.buckets.front() {
            if now.saturating_duration_since(t) >= self.window && self.buckets.len() > 1 {
                self.buckets.pop_front();
                self.start = Some(t);
            } else {
                break;
            }
        }
    }

    /// H/s over the retained intervals.
    pub(crate) fn hashrate(&self) -> f64 {
        let (Some(start), Some(&(end, _))) = (self.start, self.buckets.back()) else {
            return 0.0;
        };
        let secs = end.saturating_duration_since(start).as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        let difficulty: f64 = self.buckets.iter().map(|(_, d)| d).sum();
        difficulty * HASHES_PER_DIFFICULTY_1 / secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashrate_over_the_window() {
        let t0 = Instant::now();
        let mut e = HashrateEstimator::new(Duration::from_secs(10));
        assert_eq!(e.hashrate(), 0.0);
        e.tick(t0);
        for s in 1..=20u64 {
            e.add(1.0);
            e.tick(t0 + Duration::from_secs(s));
        }
        // One difficulty-1 share per second.
        let h = e.hashrate();
        assert!((h / HASHES_PER_DIFFICULTY_1 - 1.0).abs() < 1e-9, "{h}");
        // Quiet for a whole window: the estimate decays to zero.
        for s in 21..=40u64 {
            e.tick(t0 + Duration::from_secs(s));
        }
        assert_eq!(e.hashrate(), 0.0);
    }
}
