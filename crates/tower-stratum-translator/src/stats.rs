//! What the translator reports.

use std::collections::BTreeMap;

/// A snapshot of the translator's counters, published after every tick (about once a
/// second).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TranslatorStats {
    /// Sv1 connections.
    pub connections: usize,
    /// Miners that subscribed and authorized.
    pub miners: usize,
    /// Open upstream channels.
    pub channels: usize,
    /// Whether an upstream connection is established.
    pub upstream_connected: bool,
    /// Which upstream (index in the configured list) is in use, if connected.
    pub upstream_index: Option<usize>,
    /// Hashrate estimate from the shares the upstream accepted over the last 5 minutes
    /// (or since start), H/s.
    pub hashrate: f64,
    /// Shares the upstream accepted (each answered `true` to its miner).
    pub shares_accepted: u64,
    /// Shares rejected, by reason: local checks (`job-not-found`, `stale`, `duplicate`,
    /// `low-difficulty`, `bad-extranonce2-size`, `version-bits`, `upstream-unavailable`,
    /// `upstream-busy`, `no-verdict`) and upstream errors (`upstream:<spec error code>`).
    pub shares_rejected: BTreeMap<String, u64>,
    /// Shares forwarded upstream and still awaiting a verdict.
    pub shares_pending: usize,
    /// Blocks found (shares that met the network target, as far as the translator can tell).
    pub blocks_found: u64,
    /// Whether the current upstream negotiated extension `0x0002` (Worker-Specific Hashrate
    /// Tracking): shares then carry each miner's worker name.
    pub worker_hashrate_tracking: bool,
    /// While no upstream is connected: why the last attempt to reach one failed (TCP connect,
    /// Noise handshake or certificate check, SetupConnection), e.g. `handshake failed:
    /// responder certificate rejected: …`. `None` while connected or before any failure.
    pub upstream_error: Option<String>,
}

impl TranslatorStats {
    /// Every rejection, summed.
    pub fn rejected_total(&self) -> u64 {
        self.shares_rejected.values().sum()
    }

    /// The reasons as `reason=count` pairs separated by spaces (for status lines).
    pub fn rejected_by_reason(&self) -> String {
        self.shares_rejected
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}
