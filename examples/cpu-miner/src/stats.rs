//! Counters shared by the hashing threads, the submitter and the handler: plain atomics in an
//! `Arc` (no locks), read by the periodic report.

use std::sync::atomic::{AtomicU64, Ordering};

/// Miner counters. Every field only grows.
#[derive(Debug, Default)]
pub struct Stats {
    /// sha256d computations, all threads.
    pub hashes: AtomicU64,
    /// Shares sent upstream (`SubmitShares.Standard` / `.Extended`; Sv1: `mining.submit`).
    pub submitted: AtomicU64,
    /// Shares the upstream acknowledged: sum of `SubmitShares.Success.new_submits_accepted_count`
    /// (Sv1: `mining.submit` answered `true`).
    pub accepted: AtomicU64,
    /// `SubmitShares.Error` messages received (Sv1: `mining.submit` answered with an error or
    /// `false`).
    pub rejected: AtomicU64,
    /// Shares found on work that was replaced (new chain tip or connection; Sv1 also
    /// `clean_jobs`, a narrower version mask or a higher difficulty) before they could be
    /// sent; not submitted.
    pub stale: AtomicU64,
}

/// A copy of [`Stats`] at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// See [`Stats::hashes`].
    pub hashes: u64,
    /// See [`Stats::submitted`].
    pub submitted: u64,
    /// See [`Stats::accepted`].
    pub accepted: u64,
    /// See [`Stats::rejected`].
    pub rejected: u64,
    /// See [`Stats::stale`].
    pub stale: u64,
}

impl Stats {
    /// Reads every counter (each one atomically; together they are only approximately
    /// simultaneous).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            hashes: self.hashes.load(Ordering::Relaxed),
            submitted: self.submitted.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
        }
    }
}

impl std::fmt::Display for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "shares submitted={} accepted={} rejected={} stale={}",
            self.submitted, self.accepted, self.rejected, self.stale
        )
    }
}

/// `h` hashes per second as a human-readable string with its unit (`17.93 MH/s`).
pub fn human_rate(h: f64) -> String {
    tower_stratum::mining::share_math::Hashrate(h).to_string()
}
