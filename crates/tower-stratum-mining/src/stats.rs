//! [`MiningStats`] for a status line, and the tick-driven hashrate estimator behind it.

use crate::share_math::HASHES_PER_DIFFICULTY_1;
use std::collections::{HashMap, VecDeque};
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
    /// [`hashrate_window`](crate::MiningServerConfig::hashrate_window) of server timers, divided
    /// by the time covered. `0.0` until two timers have passed, and `0.0` while no channel is open
    /// (a departed miner's work no longer counts).
    pub hashrate_estimate_hs: f64,
    /// Workers (user identities) with accepted shares in the last hashrate window; see
    /// [`MiningServer::worker_stats`](crate::MiningServer::worker_stats).
    pub workers: usize,
    /// `NewTemplate` messages received from the template source since start: `0` means
    /// channels have no job yet.
    pub templates_received: u64,
    /// Found blocks the template source has not confirmed yet (being resubmitted; see
    /// [`keeper`](crate::keeper)).
    pub unconfirmed_blocks: usize,
}

/// Accepted work of one worker, for per-worker hashrate (extension `0x0002`, Worker-Specific
/// Hashrate Tracking; [`MiningServer::worker_stats`](crate::MiningServer::worker_stats)).
///
/// A worker is a user identity: the `user_identity` TLV of the shares that carry one (a
/// proxy's Sv1 worker name), else the `user_identity` of the channel the share was submitted
/// on (`OpenStandardMiningChannel` / `OpenExtendedMiningChannel`).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerStats {
    /// The user identity (UTF-8, at most 32 bytes when it comes from the TLV).
    pub user_identity: String,
    /// Shares accepted from it since it was first seen (a worker idle for a whole
    /// [`hashrate_window`](crate::MiningServerConfig::hashrate_window) is forgotten, and its
    /// count starts again from zero when it comes back).
    pub shares_accepted: u64,
    /// Its estimated hashrate, hashes per second (H/s): the difficulty of its accepted shares
    /// (× 2^48/65535 hashes each) over the last hashrate window (ten buckets of a tenth of the
    /// window each), divided by the time covered. `0.0` until a server timer has passed.
    pub hashrate_estimate_hs: f64,
}

/// Buckets per hashrate window in [`WorkerTable`].
const WORKER_BUCKETS: usize = 10;

#[derive(Debug, Clone)]
struct WorkerEntry {
    shares_accepted: u64,
    /// Difficulty accepted per bucket; `current` is being filled.
    work: [f64; WORKER_BUCKETS],
}

impl WorkerEntry {
    fn credit(&mut self, bucket: usize, difficulty: f64) {
        self.shares_accepted = self.shares_accepted.saturating_add(1);
        if difficulty.is_finite() && difficulty > 0.0 {
            if let Some(w) = self.work.get_mut(bucket) {
                *w += difficulty;
            }
        }
    }
}

/// Accepted work per worker over a sliding window of [`WORKER_BUCKETS`] buckets, advanced by
/// the server's timer (time passed in; the table reads no clock). Bounded: at most `max` workers; shares of further
/// identities are counted in `untracked` only. Idle workers are dropped.
#[derive(Debug, Clone)]
pub(crate) struct WorkerTable {
    bucket: Duration,
    max: usize,
    workers: HashMap<String, WorkerEntry>,
    current: usize,
    /// Start of the current bucket (set by the first tick).
    current_start: Option<Instant>,
    /// Full buckets behind the current one with a time base (< WORKER_BUCKETS).
    full: usize,
    last_tick: Option<Instant>,
    pub(crate) untracked_shares: u64,
}

impl WorkerTable {
    pub(crate) fn new(window: Duration, max: usize) -> Self {
        let bucket = (window / WORKER_BUCKETS as u32).max(Duration::from_millis(1));
        Self {
            bucket,
            max,
            workers: HashMap::new(),
            current: 0,
            current_start: None,
            full: 0,
            last_tick: None,
            untracked_shares: 0,
        }
    }

    /// Counts an accepted share of `difficulty` for `user_identity`.
    pub(crate) fn add(&mut self, user_identity: &str, difficulty: f64) {
        let current = self.current;
        if let Some(e) = self.workers.get_mut(user_identity) {
            e.credit(current, difficulty);
            return;
        }
        if self.workers.len() >= self.max {
            self.untracked_shares = self.untracked_shares.saturating_add(1);
            return;
        }
        let mut e = WorkerEntry {
            shares_accepted: 0,
            work: [0.0; WORKER_BUCKETS],
        };
        e.credit(current, difficulty);
        self.workers.insert(user_identity.to_owned(), e);
    }

    /// Advances to `now`: closes the buckets that ended and forgets workers with no work in
    /// the whole window.
    pub(crate) fn tick(&mut self, now: Instant) {
        self.last_tick = Some(now);
        let Some(mut start) = self.current_start else {
            // Shares before the first tick have no time base (as the global estimate).
            self.current_start = Some(now);
            for e in self.workers.values_mut() {
                e.work = [0.0; WORKER_BUCKETS];
            }
            return;
        };
        let mut rotated = 0;
        while now.saturating_duration_since(start) >= self.bucket {
            start += self.bucket;
            rotated += 1;
            if rotated > WORKER_BUCKETS {
                // A gap longer than the window: everything is old.
                start = now;
                break;
            }
        }
        if rotated == 0 {
            return;
        }
        self.current_start = Some(start);
        for _ in 0..rotated.min(WORKER_BUCKETS) {
            self.current = (self.current + 1) % WORKER_BUCKETS;
            let i = self.current;
            for e in self.workers.values_mut() {
                if let Some(w) = e.work.get_mut(i) {
                    *w = 0.0;
                }
            }
        }
        self.full = (self.full + rotated).min(WORKER_BUCKETS - 1);
        self.workers.retain(|_, e| e.work.iter().any(|w| *w > 0.0));
    }

    pub(crate) fn len(&self) -> usize {
        self.workers.len()
    }

    /// Every tracked worker, sorted by user identity.
    pub(crate) fn snapshot(&self) -> Vec<WorkerStats> {
        let secs = match (self.current_start, self.last_tick) {
            (Some(start), Some(now)) => (self.bucket * self.full as u32
                + now.saturating_duration_since(start))
            .as_secs_f64(),
            _ => 0.0,
        };
        let mut v: Vec<WorkerStats> = self
            .workers
            .iter()
            .map(|(name, e)| WorkerStats {
                user_identity: name.clone(),
                shares_accepted: e.shares_accepted,
                hashrate_estimate_hs: if secs > 0.0 {
                    e.work.iter().sum::<f64>() * HASHES_PER_DIFFICULTY_1 / secs
                } else {
                    0.0
                },
            })
            .collect();
        v.sort_by(|a, b| a.user_identity.cmp(&b.user_identity));
        v
    }
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

    #[test]
    fn worker_hashrate_over_the_window_bounded_and_forgotten_when_idle() {
        let t0 = Instant::now();
        let mut w = WorkerTable::new(Duration::from_secs(10), 2);
        w.tick(t0);
        for s in 1..=20u64 {
            w.add("alice", 1.0);
            w.add("bob", 2.0);
            w.add("carol", 1.0); // over the cap of 2: not tracked
            w.tick(t0 + Duration::from_secs(s));
        }
        let snap = w.snapshot();
        assert_eq!(
            snap.iter()
                .map(|s| s.user_identity.as_str())
                .collect::<Vec<_>>(),
            ["alice", "bob"]
        );
        assert_eq!(snap[0].shares_accepted, 20);
        assert_eq!(w.untracked_shares, 20);
        // About one difficulty-1 share per second for alice, two for bob (the current,
        // partly filled bucket counts with the time it covers).
        let rel = |s: &WorkerStats| s.hashrate_estimate_hs / HASHES_PER_DIFFICULTY_1;
        assert!((rel(&snap[0]) - 1.0).abs() < 0.15, "{snap:?}");
        assert!((rel(&snap[1]) - 2.0).abs() < 0.3, "{snap:?}");
        // Idle for a whole window: forgotten.
        for s in 21..=32u64 {
            w.tick(t0 + Duration::from_secs(s));
        }
        assert!(w.snapshot().is_empty());
        // A long gap does not loop forever and leaves nothing behind.
        w.add("alice", 1.0);
        w.tick(t0 + Duration::from_secs(100_000));
        assert!(w.snapshot().is_empty());
    }
}
