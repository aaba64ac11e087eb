//! Translator configuration, with documented defaults.

use std::time::Duration;
use tower_stratum_codec::AuthorityPublicKey;

/// How miners map onto upstream channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelMode {
    /// One upstream extended channel for every miner: each miner's extranonce1 is the
    /// channel's `extranonce_prefix` plus local bytes unique to the miner (2 bytes: up to
    /// 65 536 miners per channel).
    Aggregated,
    /// One upstream extended channel per miner (opened at `mining.subscribe`, closed with
    /// `CloseChannel` when the miner leaves). Group-channel jobs apply to every member channel.
    PerMiner,
}

/// What a miner that did not subscribe to extranonce changes gets when its extranonce1 must
/// change (upstream `SetExtranoncePrefix`, or a new upstream channel after a reconnect).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtranonceChange {
    /// `client.reconnect` (same host and port), then the connection is closed.
    Reconnect,
    /// The connection is closed.
    Close,
}

/// The translation policy: the sans-IO core's configuration
/// ([`TranslatorCore`](crate::TranslatorCore)).
#[derive(Debug, Clone)]
pub struct TranslatorConfig {
    /// Channel mode. Default [`ChannelMode::Aggregated`].
    pub mode: ChannelMode,
    /// `extranonce2_size` given to miners, bytes (1..=8). Default 4. Reduced when the
    /// upstream grants fewer extranonce bytes than needed.
    pub extranonce2_size: usize,
    /// Hashrate assumed for a new miner, H/s: its first difficulty, and the
    /// `nominal_hash_rate` of the channels opened for it. Default 100 000 H/s (10^5).
    pub nominal_hashrate: f32,
    /// Shares per minute per miner that vardiff aims at. Default 10.
    pub shares_per_minute: f32,
    /// Share difficulty of a new miner until it sends `mining.suggest_difficulty` (then the
    /// suggestion, within the bounds) or vardiff moves it. Sv1 difficulty: 1 means 2^32
    /// hashes per share on average, so a miner of `h` H/s at difficulty `d` sends `h * 60 /
    /// (d * 2^32)` shares per minute. `None`: the difficulty of [`nominal_hashrate`]
    /// at [`shares_per_minute`] (about 0.0014 with the defaults: CPU miners and tests).
    /// Default `None`. `translator-proxy` sets 16384 by default (about 11.7 TH/s at 10
    /// shares/min: a start suited to ASICs; a miner far faster than its start is caught up
    /// within seconds, see [`TranslatorCore`](crate::TranslatorCore) "Difficulty").
    ///
    /// [`nominal_hashrate`]: Self::nominal_hashrate
    /// [`shares_per_minute`]: Self::shares_per_minute
    pub start_difficulty: Option<f64>,
    /// Until a miner sends its first share, divide its difficulty by 16 every this long (not
    /// below the bounds and the upstream floor), so a miner far slower than its start (a CPU
    /// miner on an ASIC-sized [`start_difficulty`](Self::start_difficulty)) finds its range
    /// within seconds instead of minutes of vardiff steps; one that lands too low is caught
    /// up by the fast path at its first shares. `None` disables. Default `None`;
    /// `translator-proxy` sets 3 s with its ASIC start.
    pub first_share_search: Option<Duration>,
    /// Lowest share difficulty given to a miner (vardiff, `mining.suggest_difficulty`).
    /// Default 1e-8. A miner is never given a difficulty below its channel's upstream
    /// difficulty, whatever this says: every share the translator accepts locally must be
    /// acceptable upstream.
    pub min_difficulty: f64,
    /// Highest share difficulty given to a miner. Default 1e15.
    pub max_difficulty: f64,
    /// Per-miner vardiff. Default `true`.
    pub vardiff: bool,
    /// Round difficulties >= 1 down to a power of two (some firmware mishandles fractional
    /// difficulties), never below the upstream difficulty. Default `false`.
    pub power_of_two_difficulty: bool,
    /// Set `REQUIRES_VERSION_ROLLING` in `SetupConnection`, so the upstream either allows
    /// version rolling on every job or refuses the connection. With `false`, version rolling
    /// is granted to miners only once the channel's jobs allow it. Default `true`.
    pub require_version_rolling: bool,
    /// A share forwarded upstream without a verdict (`SubmitShares.Success`/`.Error`) within
    /// this long is answered `[20, "No verdict from upstream"]`. Default 60 s.
    pub submit_timeout: Duration,
    /// At most this many shares forwarded upstream and awaiting a verdict, over all miners.
    /// A share beyond it is answered at once `[20, "Upstream busy"]` (counted as
    /// `upstream-busy`), never queued without bound nor silently dropped. The translator sizes
    /// its upstream outbound queue and sibling queues above this bound, so a burst never
    /// overflows them (which would drop the upstream connection as a slow peer). Default 4096.
    pub max_pending_shares: usize,
    /// Miners without `mining.extranonce.subscribe` when their extranonce1 must change.
    /// Default [`ExtranonceChange::Reconnect`].
    pub extranonce_change: ExtranonceChange,
    /// A miner that reconnects with its previous session id (the subscription id it was
    /// given: the hex of its first extranonce1) in `mining.subscribe` within this long gets
    /// the same extranonce1, its difficulty and at once the last job. Aggregated mode keeps
    /// the miner's extranonce slot reserved; per-miner mode keeps its upstream channel open
    /// for the period (then sends `CloseChannel`), so a departed miner holds one upstream
    /// channel for at most this long. `Duration::ZERO` disables (and per-miner channels close
    /// at once). Default 60 s.
    pub resume_grace: Duration,
    /// At most one `UpdateChannel` per channel per this interval, sent when the channel's
    /// hashrate estimate moved by more than 20 %. Default 60 s.
    pub update_channel_interval: Duration,
    /// A miner that got no new job for this long gets the current job again under a new job
    /// id (some firmware reconnects when jobs stop). `None` disables. Default 120 s.
    pub keepalive_interval: Option<Duration>,
    /// Request extension `0x0002` (Worker-Specific Hashrate Tracking) from the upstream with
    /// `RequestExtensions` (extension `0x0001`). When the upstream negotiates it, every
    /// `SubmitSharesExtended` carries the miner's Sv1 worker name ([`crate::worker_name`] of its
    /// `mining.authorize` username: the part after the first `.` of `account.worker`, else the
    /// whole name; cut to 32 bytes at a character boundary) as the `user_identity` TLV, so the
    /// pool sees per-worker hashrate even on an aggregated channel. An upstream that refuses
    /// or ignores the request gets no TLV (one reply timeout,
    /// `ClientConfig::extensions_timeout`, if it ignores it). Default `true`.
    pub worker_hashrate_tracking: bool,
}

impl Default for TranslatorConfig {
    fn default() -> Self {
        Self {
            mode: ChannelMode::Aggregated,
            extranonce2_size: 4,
            nominal_hashrate: 100_000.0,
            shares_per_minute: 10.0,
            start_difficulty: None,
            first_share_search: None,
            min_difficulty: 1e-8,
            max_difficulty: 1e15,
            vardiff: true,
            power_of_two_difficulty: false,
            require_version_rolling: true,
            submit_timeout: Duration::from_secs(60),
            max_pending_shares: 4096,
            extranonce_change: ExtranonceChange::Reconnect,
            resume_grace: Duration::from_secs(60),
            update_channel_interval: Duration::from_secs(60),
            keepalive_interval: Some(Duration::from_secs(120)),
            worker_hashrate_tracking: true,
        }
    }
}

/// Why a configuration is unusable.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `extranonce2_size` outside 1..=8.
    #[error("extranonce2_size must be 1..=8, got {0}")]
    Extranonce2Size(usize),
    /// A non-positive or non-finite rate, hashrate or difficulty bound.
    #[error("{0} must be a positive finite number")]
    NotPositive(&'static str),
    /// `min_difficulty > max_difficulty`.
    #[error("min_difficulty is above max_difficulty")]
    DifficultyBounds,
    /// No upstream configured.
    #[error("at least one upstream is required")]
    NoUpstream,
}

impl TranslatorConfig {
    /// Checks the bounds.
    ///
    /// # Errors
    /// The first [`ConfigError`] found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=8).contains(&self.extranonce2_size) {
            return Err(ConfigError::Extranonce2Size(self.extranonce2_size));
        }
        let pos = |v: f64| v.is_finite() && v > 0.0;
        if !pos(f64::from(self.nominal_hashrate)) {
            return Err(ConfigError::NotPositive("nominal_hashrate"));
        }
        if !pos(f64::from(self.shares_per_minute)) {
            return Err(ConfigError::NotPositive("shares_per_minute"));
        }
        if self.start_difficulty.is_some_and(|d| !pos(d)) {
            return Err(ConfigError::NotPositive("start_difficulty"));
        }
        if self.max_pending_shares == 0 {
            return Err(ConfigError::NotPositive("max_pending_shares"));
        }
        if !pos(self.min_difficulty) {
            return Err(ConfigError::NotPositive("min_difficulty"));
        }
        if !pos(self.max_difficulty) {
            return Err(ConfigError::NotPositive("max_difficulty"));
        }
        if self.min_difficulty > self.max_difficulty {
            return Err(ConfigError::DifficultyBounds);
        }
        Ok(())
    }
}

/// One upstream Sv2 pool (or proxy) with its Mining Protocol endpoint.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// `host:port`.
    pub address: String,
    /// The pool's authority public key (Noise NX). `None`: ENCRYPTED BUT NOT AUTHENTICATED.
    pub authority_key: Option<AuthorityPublicKey>,
    /// `user_identity` of the channels opened on it (the pool account / payout address).
    pub user_identity: String,
}
