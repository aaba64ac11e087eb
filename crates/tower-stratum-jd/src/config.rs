//! [`JobDeclarationServerConfig`]: the pool's required coinbase outputs and the server's
//! limits, with documented defaults.

use std::time::Duration;
use tower_stratum_core::stratum_core::bitcoin::{Amount, ScriptBuf, TxOut};

/// Default [`token_lifetime`](JobDeclarationServerConfig::token_lifetime): 10 minutes.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(600);
/// Default [`missing_transactions_timeout`](JobDeclarationServerConfig::missing_transactions_timeout):
/// 60 seconds.
pub const DEFAULT_MISSING_TRANSACTIONS_TIMEOUT: Duration = Duration::from_secs(60);

/// What a [`JobDeclarationServer`](crate::JobDeclarationServer) requires of declared jobs and
/// how much state it keeps. Build it with [`new`](Self::new) (the pool payout script has no
/// sensible default) and adjust the public fields.
///
/// ```
/// use std::time::Duration;
/// use tower_stratum_core::stratum_core::bitcoin::ScriptBuf;
/// use tower_stratum_jd::JobDeclarationServerConfig;
///
/// let mut config = JobDeclarationServerConfig::new(ScriptBuf::from_bytes(vec![0x51]));
/// config.token_lifetime = Duration::from_secs(60);
/// assert_eq!(config.max_tokens_per_connection, 16);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobDeclarationServerConfig {
    /// Locking script of the **pool payout output** (spec 6.4.3): the first output of
    /// `AllocateMiningJobToken.Success.coinbase_outputs` (sent with 0 sats). A declared
    /// coinbase must pay it at least [`min_pool_payout`](Self::min_pool_payout), in any
    /// position.
    pub pool_payout_script: ScriptBuf,
    /// Further 0-value outputs the JDS imposes (spec 6.4.3: "JDS MAY add more 0 value
    /// outputs"), e.g. `OP_RETURN` scripts; sent after the payout output. A declared coinbase
    /// must contain an output with each of these scripts (any value, any position). Default:
    /// none.
    pub additional_outputs: Vec<ScriptBuf>,
    /// The least a declared coinbase must pay to the pool payout output (spec 6.4.3: "JDC MUST
    /// allocate sats into the pool payout output ... JDS and Pool SHOULD reject custom jobs
    /// that fail to do so"). Default: 1 sat (any non-zero amount).
    pub min_pool_payout: Amount,
    /// How long an allocated `mining_job_token` stays valid for `DeclareMiningJob`, counted
    /// from the first [`on_timer`](tower_stratum_core::handler::Sv2JobDeclarationServerHandler::on_timer)
    /// after it was issued. Default: [`DEFAULT_TOKEN_LIFETIME`] (10 minutes).
    pub token_lifetime: Duration,
    /// Most unused tokens one connection holds; allocating one more retires its oldest.
    /// Default: 16.
    pub max_tokens_per_connection: usize,
    /// Most unused tokens held by all connections together; a connection asking for one more
    /// is closed (the spec has no `AllocateMiningJobToken.Error`). Default: 4096.
    pub max_tokens: usize,
    /// Largest declared coinbase, in bytes of its full serialization (with BIP141 witness and
    /// the extranonce). Larger: `invalid-coinbase-tx`. Default: 10,000.
    pub max_coinbase_size: usize,
    /// Most transactions one declaration may ask for with `ProvideMissingTransactions`; more
    /// unknown wtxids than this: `DeclareMiningJob.Error` `missing-txs` at once (nothing
    /// kept). Default: 8,192 (about two full mainnet blocks' worth of transactions).
    pub max_missing_transactions: usize,
    /// How long a declaration waits for `ProvideMissingTransactions.Success` before it is
    /// refused with `missing-txs`. Default: [`DEFAULT_MISSING_TRANSACTIONS_TIMEOUT`] (60 s).
    pub missing_transactions_timeout: Duration,
    /// Most declarations one connection may have waiting for
    /// `ProvideMissingTransactions.Success`; one more is refused with `internal-error`.
    /// Default: 4.
    pub max_pending_per_connection: usize,
    /// Most declarations waiting for `ProvideMissingTransactions.Success` on all connections
    /// together; one more is refused with `internal-error`. Default: 256.
    pub max_pending: usize,
    /// Most accepted jobs kept per connection for `PushSolution` (spec 6.4.9: the most recent
    /// one MUST be kept, older ones MAY); one more retires the connection's oldest. Default: 8.
    pub max_jobs_per_connection: usize,
    /// Most accepted jobs kept on all connections together; one more retires the oldest job of
    /// any connection. Default: 1024.
    pub max_jobs: usize,
}

impl JobDeclarationServerConfig {
    /// The defaults above, paying the pool at `pool_payout_script`.
    pub fn new(pool_payout_script: ScriptBuf) -> Self {
        Self {
            pool_payout_script,
            additional_outputs: Vec::new(),
            min_pool_payout: Amount::from_sat(1),
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            max_tokens_per_connection: 16,
            max_tokens: 4096,
            max_coinbase_size: 10_000,
            max_missing_transactions: 8192,
            missing_transactions_timeout: DEFAULT_MISSING_TRANSACTIONS_TIMEOUT,
            max_pending_per_connection: 4,
            max_pending: 256,
            max_jobs_per_connection: 8,
            max_jobs: 1024,
        }
    }

    /// The outputs of `AllocateMiningJobToken.Success.coinbase_outputs` (spec 6.4.3): the pool
    /// payout output first, then [`additional_outputs`](Self::additional_outputs), all with 0
    /// sats.
    pub fn coinbase_outputs(&self) -> Vec<TxOut> {
        std::iter::once(&self.pool_payout_script)
            .chain(&self.additional_outputs)
            .map(|script| TxOut {
                value: Amount::ZERO,
                script_pubkey: script.clone(),
            })
            .collect()
    }
}
