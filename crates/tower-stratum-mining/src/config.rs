//! [`MiningServerConfig`]: payout, pool tag, share rate, extranonce layout, vardiff and
//! bookkeeping knobs, with documented units and defaults; [`ConfigError`] for the invalid ones.

use std::time::Duration;
use tower_stratum_core::stratum_core::bitcoin::ScriptBuf;
use tower_stratum_core::stratum_core::channels_sv2::extranonce_manager::{
    bytes_needed, ExtranonceAllocator,
};
use tower_stratum_core::stratum_core::channels_sv2::server::group::GroupChannel;
use tower_stratum_core::stratum_core::channels_sv2::MAX_EXTRANONCE_LEN;

/// Configuration of a [`MiningServer`](crate::MiningServer).
///
/// `Default` gives SRI pool_sv2's defaults (6 shares per minute, acknowledge every share, a
/// 20-byte extended extranonce split as 1 server-id byte + 3 channel-index bytes + 16 rollable
/// bytes, vardiff every 60 s) **except the payout**: [`coinbase_output_script`] is empty by
/// default and [`MiningServer::new`](crate::MiningServer::new) refuses it, because a block
/// paying to an empty script is spendable by anyone.
///
/// [`coinbase_output_script`]: MiningServerConfig::coinbase_output_script
#[derive(Debug, Clone, PartialEq)]
pub struct MiningServerConfig {
    /// The `scriptPubKey` every block reward goes to: the single coinbase output this server
    /// adds to each template, valued at the template's `coinbase_tx_value_remaining` (satoshis,
    /// subsidy plus fees). Template outputs (e.g. the BIP141 witness commitment) follow it.
    /// Default: empty (refused by `MiningServer::new`).
    pub coinbase_output_script: ScriptBuf,
    /// Pool signature placed in the coinbase `scriptSig` as `Sv2/<pool_signature>//` (SRI's
    /// `JobFactory` tag). Bytes count against the 100-byte `scriptSig` budget together with the
    /// template's `coinbase_prefix` (up to 8 bytes) and the extranonce. Default: `"tower-stratum"`.
    pub pool_signature: String,
    /// Vardiff goal and initial-target basis: expected accepted shares per minute per channel
    /// (must be finite and > 0). The initial target of a channel is derived from the client's
    /// `nominal_hash_rate` (H/s) and this rate. Default: `6.0`.
    pub shares_per_minute: f32,
    /// Accepted shares per `SubmitShares.Success` (spec 5.3.13 batching; `>= 1`). A share that
    /// finds a block is always acknowledged at once. Default: `1` (every share).
    pub share_batch_size: usize,
    /// Full extended extranonce length in bytes (`<= 32`): `extranonce_prefix` plus the
    /// rollable `extranonce` of extended channels, and the `extranonce_prefix` length of
    /// standard channels (spec 5.1.2.1, 5.2.3: all channels of a group share this size).
    /// Default: `20`.
    pub extranonce_len: u8,
    /// Static bytes at the start of every `extranonce_prefix` this server assigns (SRI's
    /// `server_id`): give each server behind one payout a different value so their search
    /// spaces never overlap. Default: `[0x00]`.
    pub server_id: Vec<u8>,
    /// Maximum number of channels (standard plus extended, all connections) open at once. The
    /// per-channel index takes `ceil(log256(max_channels))` bytes of the extranonce and the
    /// allocation bitmap `max_channels / 8` bytes of memory. Default: `16_777_216` (3 bytes,
    /// 2 MiB), as SRI's pool.
    pub max_channels: u32,
    /// Maximum number of channels one connection may have open at once; further
    /// `OpenStandardMiningChannel` / `OpenExtendedMiningChannel` get `OpenMiningChannel.Error`
    /// `channel-capacity-exhausted`, so one client cannot take every extranonce prefix.
    /// Default: `10_000`.
    pub max_channels_per_connection: usize,
    /// Whether miners may roll the BIP323 general-purpose version bits (mask `0x1fffffe0`,
    /// `channels_sv2::VERSION_ROLLING_MASK`; spec 5.1). `true`: the `SetupConnection` flag
    /// `REQUIRES_VERSION_ROLLING` is honoured and extended jobs set `version_rolling_allowed`.
    /// `false`: that flag is refused (`unsupported-feature-flags`), `SetupConnection.Success`
    /// carries `REQUIRES_FIXED_VERSION`, extended jobs clear `version_rolling_allowed`, and a
    /// share whose version differs from its job's is rejected with
    /// `version-rolling-not-allowed`. Default: `true`.
    pub version_rolling: bool,
    /// Past jobs kept per channel under the current chain tip, for late shares (`None`: SRI's
    /// default, 16). Default: `None`.
    pub max_past_jobs: Option<usize>,
    /// Lowest share difficulty (difficulty 1 = target `0xffff << 208`) any channel is given, or
    /// `None` for no floor. A channel's target is the easier of vardiff's and the client's
    /// `max_target`, then clamped to at most the target of this difficulty. Without a floor a
    /// client announcing `nominal_hash_rate = 0` gets the maximum target (every hash is a
    /// share) until vardiff reacts. The floor also bounds the network-target cap (see
    /// [`MiningServer`](crate::MiningServer)'s "Targets"): it is the operator's explicit
    /// choice, like a client's `max_target`. Default: `None`.
    pub min_share_difficulty: Option<f64>,
    /// Whether a channel's target is raised to the network target of its current job when
    /// vardiff (or the client) would make it harder, so that a hash that solves a block is
    /// always a share (see [`MiningServer`](crate::MiningServer)'s "Targets"). Turn it off only
    /// where throwing block hashes away is acceptable, e.g. a regtest demo: on regtest about
    /// every other hash is a block, so with the cap a fast miner submits about every other
    /// hash and blocks come as fast as the template source can move its tip. Default: `true`.
    pub cap_target_at_network: bool,
    /// Whether vardiff runs (SRI's classic algorithm; see [`vardiff`](crate::vardiff)). Default:
    /// `true`.
    pub vardiff: bool,
    /// Period of the server's timer (see [`MiningServer`](crate::MiningServer)'s "Time"): how
    /// often the runtime calls its `on_timer`, which closes a hashrate interval, runs vardiff
    /// when due, resubmits unconfirmed blocks and reports
    /// [`MiningEvent::Stats`](crate::MiningEvent::Stats). The resolution of every other period
    /// here. Must be > 0. Default: 1 s.
    pub timer_period: Duration,
    /// How often vardiff re-evaluates every channel, measured on the `now` passed to the
    /// server's `on_timer` (so in steps of [`timer_period`](Self::timer_period)). Default:
    /// 60 s (SRI's period).
    pub vardiff_period: Duration,
    /// Lowest hashrate (H/s) vardiff may assign a channel. Default: `1.0` (SRI's).
    pub vardiff_min_hashrate: f32,
    /// Window of the hashrate estimate in [`MiningStats`](crate::MiningStats), measured on the
    /// timers' `now`. Default: 600 s.
    pub hashrate_window: Duration,
    /// How many [`FoundBlock`](crate::FoundBlock)s
    /// [`found_blocks`](crate::MiningServer::found_blocks) keeps (oldest dropped first; the
    /// counter keeps counting). Default: `16`.
    pub found_blocks_kept: usize,
    /// Whether to ask the template source for a block's transactions
    /// (`RequestTransactionData`, spec 7.4) when a share solves a template that has any, so the
    /// full block can be kept in [`FoundBlock::block`](crate::FoundBlock::block). The template
    /// source (Bitcoin Core) assembles and broadcasts the block from `SubmitSolution` either
    /// way. Also asked as soon as a template with transactions arrives (the lists of the 4
    /// newest such templates are kept), because a source may answer `stale-template-id` once
    /// a solution moved its tip. Default: `true`.
    pub request_transaction_data: bool,
    /// Whether to offer extension `0x0002` (Worker-Specific Hashrate Tracking) in Extensions
    /// Negotiation (extension `0x0001`): a client that requests it (typically a proxy
    /// aggregating many Sv1 workers on one extended channel) then appends each worker's
    /// `user_identity` TLV to its `SubmitSharesExtended`, and
    /// [`worker_stats`](crate::MiningServer::worker_stats) tracks each worker. Per-worker
    /// accounting by channel `user_identity` happens either way. Default: `true`.
    pub worker_hashrate_tracking: bool,
    /// Most workers (distinct user identities) tracked at once by
    /// [`worker_stats`](crate::MiningServer::worker_stats); shares of further identities are
    /// accepted and counted in [`MiningStats`](crate::MiningStats) but not per worker, until
    /// idle workers are forgotten. Bounds the memory a client sending many identities can
    /// take. Default: `4096`.
    pub max_tracked_workers: usize,
    /// Wait before the first resubmission of a found block the template source has not
    /// confirmed (no `SetNewPrevHash` with the block as `prev_hash`); each later wait doubles,
    /// up to [`MAX_RESUBMIT_INTERVAL`](crate::keeper::MAX_RESUBMIT_INTERVAL). Measured on the
    /// timers' `now`. See [`keeper`](crate::keeper). Default: 10 s.
    pub resubmit_interval: Duration,
    /// Most `SubmitSolution`s per found block (the first included) before it is reported
    /// [`Abandoned`](crate::BlockEvent::Abandoned) (`>= 1`). Default: `12` (about 35 minutes
    /// with the default interval).
    pub max_submit_attempts: u32,
    /// Most unconfirmed blocks tracked for resubmission; a further block pushes the oldest out
    /// (reported abandoned). `0` disables resubmission. Default: `64`.
    pub max_unconfirmed_blocks: usize,
}

impl Default for MiningServerConfig {
    fn default() -> Self {
        Self {
            coinbase_output_script: ScriptBuf::new(),
            pool_signature: "tower-stratum".to_owned(),
            shares_per_minute: 6.0,
            share_batch_size: 1,
            extranonce_len: 20,
            server_id: vec![0x00],
            max_channels: 16_777_216,
            max_channels_per_connection: 10_000,
            version_rolling: true,
            max_past_jobs: None,
            min_share_difficulty: None,
            cap_target_at_network: true,
            vardiff: true,
            timer_period: Duration::from_secs(1),
            vardiff_period: Duration::from_secs(60),
            vardiff_min_hashrate: 1.0,
            hashrate_window: Duration::from_secs(600),
            found_blocks_kept: 16,
            request_transaction_data: true,
            worker_hashrate_tracking: true,
            max_tracked_workers: 4096,
            resubmit_interval: Duration::from_secs(10),
            max_submit_attempts: 12,
            max_unconfirmed_blocks: 64,
        }
    }
}

/// Why a [`MiningServerConfig`] cannot be used (returned by
/// [`MiningServer::new`](crate::MiningServer::new)). Every variant is a configuration mistake
/// to fix before starting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `coinbase_output_script` is empty: the reward would be spendable by anyone.
    #[error("coinbase_output_script is empty (set the payout scriptPubKey)")]
    MissingCoinbaseOutputScript,
    /// `shares_per_minute` is not finite and positive.
    #[error("shares_per_minute must be finite and > 0, got {0}")]
    InvalidSharesPerMinute(f32),
    /// `share_batch_size` is 0 (no share would ever be acknowledged).
    #[error("share_batch_size must be >= 1")]
    ZeroShareBatchSize,
    /// The extranonce layout does not fit: `extranonce_len` above 32, or `server_id` plus the
    /// channel-index bytes longer than `extranonce_len`, or `max_channels` is 0.
    #[error("invalid extranonce layout: {0}")]
    ExtranonceLayout(String),
    /// The pool signature, the worst-case template `coinbase_prefix` (8 bytes) and the full
    /// extranonce do not fit the 100-byte coinbase `scriptSig`.
    #[error(
        "pool_signature ({0} bytes) and extranonce_len do not fit the 100-byte coinbase scriptSig"
    )]
    ScriptSigTooLarge(usize),
    /// `min_share_difficulty` is not finite and positive.
    #[error("min_share_difficulty must be finite and > 0, got {0}")]
    InvalidMinShareDifficulty(f64),
    /// `timer_period`, `vardiff_period`, `hashrate_window` or `resubmit_interval` is zero.
    #[error("{0} must be > 0")]
    ZeroDuration(&'static str),
}

impl MiningServerConfig {
    /// Checks every field and builds the extranonce allocator.
    pub(crate) fn validate(&self) -> Result<ExtranonceAllocator, ConfigError> {
        if self.coinbase_output_script.is_empty() {
            return Err(ConfigError::MissingCoinbaseOutputScript);
        }
        if !(self.shares_per_minute.is_finite() && self.shares_per_minute > 0.0) {
            return Err(ConfigError::InvalidSharesPerMinute(self.shares_per_minute));
        }
        if self.share_batch_size == 0 {
            return Err(ConfigError::ZeroShareBatchSize);
        }
        if let Some(d) = self.min_share_difficulty {
            if !(d.is_finite() && d > 0.0) {
                return Err(ConfigError::InvalidMinShareDifficulty(d));
            }
        }
        if self.timer_period.is_zero() {
            // A zero period would call the timer again at once, forever.
            return Err(ConfigError::ZeroDuration("timer_period"));
        }
        if self.vardiff_period.is_zero() {
            return Err(ConfigError::ZeroDuration("vardiff_period"));
        }
        if self.hashrate_window.is_zero() {
            return Err(ConfigError::ZeroDuration("hashrate_window"));
        }
        if self.resubmit_interval.is_zero() {
            return Err(ConfigError::ZeroDuration("resubmit_interval"));
        }
        if self.extranonce_len > MAX_EXTRANONCE_LEN {
            return Err(ConfigError::ExtranonceLayout(format!(
                "extranonce_len {} > {MAX_EXTRANONCE_LEN}",
                self.extranonce_len
            )));
        }
        if self.max_channels == 0 {
            return Err(ConfigError::ExtranonceLayout("max_channels is 0".into()));
        }
        let needed = self.server_id.len() + usize::from(bytes_needed(self.max_channels));
        if needed > usize::from(self.extranonce_len) {
            return Err(ConfigError::ExtranonceLayout(format!(
                "server_id ({} bytes) + channel index ({} bytes) > extranonce_len {}",
                self.server_id.len(),
                bytes_needed(self.max_channels),
                self.extranonce_len
            )));
        }
        let allocator = ExtranonceAllocator::new(
            self.server_id.clone(),
            self.extranonce_len,
            self.max_channels,
        )
        .map_err(|e| ConfigError::ExtranonceLayout(e.to_string()))?;
        // The group channel runs the same scriptSig budget check every channel constructor
        // runs (worst-case 8-byte coinbase_prefix + tag + full extranonce), so a config that
        // passes here never fails a channel open on it.
        GroupChannel::new_for_pool(
            0,
            usize::from(self.extranonce_len),
            self.version_rolling,
            self.pool_signature.clone(),
        )
        .map_err(|_| ConfigError::ScriptSigTooLarge(self.pool_signature.len()))?;
        Ok(allocator)
    }
}
