//! [`EmbeddedRegtestSource`]: a sans-IO regtest template source (see its docs).

use crate::check::{validate_decoded_block, BlockError};
use crate::mempool::{Mempool, MempoolConfig, Selection};
use crate::regtest::{
    bip34_coinbase_prefix, block_subsidy, coinbase_merkle_path, genesis, merkle_root_from_path,
    op_true_script, regtest_target, witness_commitment_output_for, MAX_BLOCK_SIGOPS_COST,
    MAX_BLOCK_WEIGHT, REGTEST_NBITS, WITNESS_RESERVED_VALUE,
};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tower_stratum_core::session::str0255;
use tower_stratum_core::stratum_core::bitcoin::{
    absolute::LockTime,
    block::{Header, Version as BlockVersion},
    consensus::{deserialize, serialize},
    hashes::Hash,
    script::PushBytesBuf,
    transaction::Version as TxVersion,
    Amount, Block, BlockHash, CompactTarget, OutPoint, ScriptBuf, Sequence, Transaction, TxIn,
    TxMerkleNode, TxOut, Witness,
};
use tower_stratum_core::stratum_core::parsers_sv2::TemplateDistributionOwned;
use tower_stratum_core::stratum_core::template_distribution_sv2::{
    NewTemplateOwned, RequestTransactionDataErrorOwned, RequestTransactionDataOwned,
    RequestTransactionDataSuccessOwned, SetNewPrevHashOwned, SubmitSolutionOwned,
};
use tower_stratum_core::Sv2Message;

/// `RequestTransactionData.Error` code for a template of an earlier tip (spec 7.6).
pub const ERROR_STALE_TEMPLATE_ID: &str = "stale-template-id";
/// `RequestTransactionData.Error` code for an unknown template (spec 7.6).
pub const ERROR_TEMPLATE_ID_NOT_FOUND: &str = "template-id-not-found";

/// Seconds a block timestamp may be ahead of the node's clock (`MAX_FUTURE_BLOCK_TIME`, 2 h).
const MAX_FUTURE_BLOCK_TIME: u32 = 2 * 60 * 60;

/// Number of previous blocks whose median timestamp a new block must exceed (BIP113).
const MEDIAN_TIME_SPAN: usize = 11;

/// The current time, passed into the sans-IO source.
///
/// `monotonic` drives timers (the simulated-block interval); `unix_time` (seconds since the
/// Unix epoch, wall clock) is block data only: `SetNewPrevHash.header_timestamp` and the
/// timestamp bounds of a solution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic instant, for timers.
    pub monotonic: Instant,
    /// Wall-clock time, seconds since 1970-01-01 UTC.
    pub unix_time: u32,
}

impl Now {
    /// A `Now` from its parts.
    pub fn new(monotonic: Instant, unix_time: u32) -> Self {
        Self {
            monotonic,
            unix_time,
        }
    }

    /// The process's clocks: `std::time::Instant::now()` and `SystemTime::now()` (0 if the
    /// clock is before 1970, saturated at `u32::MAX`). The tokio shells of this crate read
    /// tokio's clock instead, so paused-time tests drive them.
    pub fn system() -> Self {
        Self::new(Instant::now(), unix_time_now())
    }
}

/// Wall-clock seconds since the Unix epoch, saturated to `u32`.
pub(crate) fn unix_time_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

/// Configuration of an [`EmbeddedRegtestSource`]. Every field has a documented default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    /// Simulate another miner's block this long after the last tip change (the source mines
    /// a valid block itself and moves the tip). `Duration::ZERO` disables it. Default 600 s.
    pub tip_interval: Duration,
    /// Block header `version` of every template. Default `0x20000000` (BIP9 top bits, no
    /// deployment signalled).
    pub version: u32,
    /// Coinbase transaction `nVersion`. Default 2.
    pub coinbase_tx_version: u32,
    /// Coinbase transaction `nLockTime`. Default 0.
    pub coinbase_tx_locktime: u32,
    /// Coinbase input `nSequence`. Default `0xffffffff`.
    pub coinbase_tx_input_sequence: u32,
    /// `scriptPubKey` the simulated foreign blocks pay their subsidy to. Default `OP_TRUE`.
    pub simulated_payout_script: ScriptBuf,
    /// Templates kept per chain tip, for matching `SubmitSolution` and
    /// `RequestTransactionData` (oldest dropped first). Default 16.
    pub max_templates_per_tip: usize,
    /// Valid blocks the source mines at start, one second apart and ending one hour in the
    /// past, before issuing the first template. Default 0 (the first template builds on
    /// genesis). With 11 (the median-time-past span) the median time past starts an hour back,
    /// so miners that fix a job's ntime at the wall clock (SRI's `mining_device` uses now +
    /// 60 s) are not pushed below `min_ntime` when blocks come faster than one a second, as
    /// they do on regtest where nearly every share is a block.
    pub history_blocks: u32,
    /// The synthetic mempool: how fast transactions arrive, how many are kept, the weight kept
    /// free for the coinbase. Default [`MempoolConfig::default`]: no transactions are
    /// generated, so templates are coinbase-only. [`MempoolConfig::modest`] turns it on.
    pub mempool: MempoolConfig,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            tip_interval: Duration::from_secs(600),
            version: 0x2000_0000,
            coinbase_tx_version: 2,
            coinbase_tx_locktime: 0,
            coinbase_tx_input_sequence: u32::MAX,
            simulated_payout_script: op_true_script(),
            max_templates_per_tip: 16,
            history_blocks: 0,
            mempool: MempoolConfig::default(),
        }
    }
}

impl SourceConfig {
    /// Default configuration with `tip_interval` (`Duration::ZERO` disables simulated blocks).
    pub fn with_tip_interval(tip_interval: Duration) -> Self {
        Self {
            tip_interval,
            ..Self::default()
        }
    }
}

/// The chain tip the current templates build on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainTip {
    /// Height of the tip block (the genesis block is 0). Templates are for `height + 1`.
    pub height: u32,
    /// Hash of the tip block.
    pub hash: BlockHash,
    /// The tip block's header timestamp, Unix seconds.
    pub time: u32,
}

/// A template and the `SetNewPrevHash` that activates it: what a client needs to start mining
/// on a new tip (spec 7.3: the future `NewTemplate` first, then `SetNewPrevHash`).
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateUpdate {
    /// Height of the block this template builds.
    pub height: u32,
    /// `NewTemplate` with `future_template = true`.
    pub new_template: NewTemplateOwned,
    /// `SetNewPrevHash` with the same `template_id`. `prev_hash` and `target` are Sv2 `U256`s
    /// in internal (little-endian) byte order: `prev_hash` is the tip's hash as it appears in a
    /// header, i.e. the reverse of its displayed hex.
    pub set_new_prev_hash: SetNewPrevHashOwned,
}

impl TemplateUpdate {
    /// The template's id.
    pub fn template_id(&self) -> u64 {
        self.new_template.template_id
    }

    /// The two messages to send, in order: `NewTemplate`, then `SetNewPrevHash`.
    pub fn messages(&self) -> [Sv2Message; 2] {
        [
            Sv2Message::TemplateDistribution(TemplateDistributionOwned::NewTemplate(
                self.new_template.clone(),
            )),
            Sv2Message::TemplateDistribution(TemplateDistributionOwned::SetNewPrevHash(
                self.set_new_prev_hash.clone(),
            )),
        ]
    }
}

/// Where a new tip block came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockOrigin {
    /// A `SubmitSolution` for this template.
    Solution {
        /// The solved template's id.
        template_id: u64,
    },
    /// The source's simulation of another miner (the `tip_interval` elapsed).
    Simulated,
}

/// A valid block connected to the source's chain (its new tip, Bitcoin Core's "block connected"),
/// and the templates for the block after it. Not to be confused with the mining crate's
/// `FoundBlock` (a share that solved a block, before any chain has seen it).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectedBlock {
    /// The full block (header and transactions).
    pub block: Block,
    /// Its height.
    pub height: u32,
    /// Its hash.
    pub hash: BlockHash,
    /// Who mined it.
    pub origin: BlockOrigin,
    /// Templates on top of it, to send to every client.
    pub next: TemplateUpdate,
}

impl ConnectedBlock {
    /// The block's consensus serialization (what `submitblock` takes, as bytes).
    pub fn block_bytes(&self) -> Vec<u8> {
        serialize(&self.block)
    }
}

/// A Template Distribution message field could not be encoded (a length limit of an Sv2 type
/// was exceeded). Not expected with this source's templates; reported instead of panicking.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode {0} as an Sv2 field")]
pub struct EncodeError(pub &'static str);

/// Why a `SubmitSolution` was rejected. The tip does not move.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SolutionError {
    /// `template_id` was issued for an earlier tip (spec: `stale-template-id`).
    #[error("template {0} is for an earlier chain tip")]
    StaleTemplate(u64),
    /// `template_id` was never issued, or was dropped (`max_templates_per_tip`).
    #[error("unknown template {0}")]
    UnknownTemplate(u64),
    /// `coinbase_tx` is not one consensus-serialized transaction.
    #[error("cannot decode coinbase_tx: {0}")]
    CoinbaseDecode(String),
    /// The coinbase does not match the template (which field is named).
    #[error("coinbase does not match the template: {0}")]
    CoinbaseMismatch(&'static str),
    /// The outputs the client added (all but the template's trailing outputs) pay more than
    /// `coinbase_tx_value_remaining`.
    #[error("coinbase pays {paid} sat, template allows {allowed} sat")]
    ValueTooHigh {
        /// Sum of the coinbase outputs, satoshis.
        paid: u64,
        /// The template's `coinbase_tx_value_remaining`, satoshis.
        allowed: u64,
    },
    /// The header version is below 4 (as a signed 32-bit integer), which BIP34, BIP66 and
    /// BIP65 forbid.
    #[error("version {got:#010x} is below 4 (template {template:#010x})")]
    BadVersion {
        /// The solution's version.
        got: u32,
        /// The template's version.
        template: u32,
    },
    /// `header_timestamp` is not after the median of the last 11 blocks (BIP113).
    #[error("timestamp {time} is not after the median time past {median_time_past}")]
    TimeTooOld {
        /// The solution's timestamp, Unix seconds.
        time: u32,
        /// Median timestamp of the last 11 blocks, Unix seconds.
        median_time_past: u32,
    },
    /// `header_timestamp` is more than 2 hours ahead of `now`.
    #[error("timestamp {time} is more than 2 h ahead of {now}")]
    TimeTooNew {
        /// The solution's timestamp, Unix seconds.
        time: u32,
        /// The source's time, Unix seconds.
        now: u32,
    },
    /// The header hash does not meet the `nBits` target.
    #[error("block hash {0} does not meet the target")]
    InsufficientWork(BlockHash),
    /// The assembled block failed the independent checker.
    #[error("assembled block is invalid: {0}")]
    InvalidBlock(BlockError),
    /// The next template could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// A sans-IO regtest template source.
///
/// It keeps a chain of valid regtest blocks starting at the genesis block, hands out the
/// Template Distribution messages for the next block (spec 7.2 `NewTemplate` and 7.3
/// `SetNewPrevHash`), turns a `SubmitSolution` (7.7) into a full block, validates it, and moves
/// the tip. It never spawns, sleeps or reads a clock: every input carries a [`Now`], and
/// [`EmbeddedRegtestSource::poll_timeout`] says when it next wants [`on_tick`] (the simulated
/// blocks of other miners). The tokio shells are [`spawn_embedded_source`] (sibling of a mining
/// server) and [`TemplateDistributionServer`] (over the wire).
///
/// Transactions come from the source's synthetic [`Mempool`] ([`SourceConfig::mempool`]; off
/// by default, so templates are coinbase-only). Each new tip's template carries a fee-ordered
/// selection of it ([`Mempool::select`]: parents before children, within the block weight and
/// sigop limits less the coinbase's reservation): `merkle_path` is the coinbase's path over
/// their txids, `coinbase_tx_value_remaining` the subsidy plus their fees, and
/// `coinbase_tx_outputs` the single zero-value witness commitment output over their wtxids
/// (with no transactions: the empty path, the whole subsidy, the empty block's commitment).
/// Transactions that arrive between blocks go into the next tip's template; issued templates
/// never change. [`request_transaction_data`](Self::request_transaction_data) lists them.
/// Per spec 7.2 the template's outputs go last in the coinbase; the client (pool, JDC, solo
/// mining server) adds its payout outputs before them, worth up to
/// `coinbase_tx_value_remaining` satoshis.
///
/// `SetNewPrevHash.header_timestamp` is `now` (Unix seconds), or one second after the median
/// time past of the last 11 blocks if that is later (BIP113), so that rapid test blocks stay
/// valid. A solution's timestamp must exceed the median time past and be at most 2 h ahead of
/// `now` (consensus); the spec's stricter client-side rule (not before `header_timestamp`) is
/// not enforced.
///
/// Spec 7 says a Template Provider MUST attempt to broadcast the blocks mined on its work.
/// The lowest block version a node accepts once BIP34, BIP66 and BIP65 are active (from
/// height 1 on regtest).
const MIN_BLOCK_VERSION: i32 = 4;

/// This source has no network: every new tip is returned as a [`ConnectedBlock`] whose
/// [`block_bytes`](ConnectedBlock::block_bytes) the application can submit wherever it wants.
///
/// [`on_tick`]: EmbeddedRegtestSource::on_tick
/// [`spawn_embedded_source`]: crate::spawn_embedded_source
/// [`TemplateDistributionServer`]: crate::TemplateDistributionServer
///
/// # Example
///
/// ```
/// use std::time::{Duration, Instant};
/// use tower_stratum_template::{EmbeddedRegtestSource, Now, SourceConfig};
///
/// let t0 = Now::new(Instant::now(), 1_700_000_000);
/// let mut source = EmbeddedRegtestSource::new(SourceConfig::default(), t0)?;
/// let first = source.current().clone();
/// assert_eq!(first.height, 1);
/// assert!(first.new_template.future_template);
/// assert_eq!(first.new_template.coinbase_tx_value_remaining, 50 * 100_000_000);
///
/// // Ten minutes later another (simulated) miner finds block 1.
/// let later = Now::new(t0.monotonic + Duration::from_secs(600), t0.unix_time + 600);
/// assert_eq!(source.poll_timeout(), Some(later.monotonic));
/// let found = source.on_tick(later).expect("simulated block");
/// assert_eq!(found.height, 1);
/// assert_eq!(found.next.height, 2);
/// # Ok::<(), tower_stratum_template::EncodeError>(())
/// ```
#[derive(Debug)]
pub struct EmbeddedRegtestSource {
    config: SourceConfig,
    tip: ChainTip,
    /// Timestamps of the last (up to) 11 blocks, oldest first.
    recent_times: VecDeque<u32>,
    next_template_id: u64,
    /// First template id issued on the current tip; lower ids are stale.
    tip_first_template_id: u64,
    /// Templates issued on the current tip, by id.
    templates: BTreeMap<u64, IssuedTemplate>,
    current: TemplateUpdate,
    next_simulated_at: Option<Instant>,
    mempool: Mempool,
    next_mempool_at: Option<Instant>,
}

/// A template and the transactions (after the coinbase) its `merkle_path` commits to.
#[derive(Debug, Clone)]
struct IssuedTemplate {
    new_template: NewTemplateOwned,
    transactions: Vec<Transaction>,
}

impl EmbeddedRegtestSource {
    /// A source whose tip is the regtest genesis block; the first template is for height 1
    /// with the genesis hash as `prev_hash`. Template ids start at 1 and strictly increase.
    ///
    /// Errors only if a template field cannot be encoded (not expected).
    pub fn new(config: SourceConfig, now: Now) -> Result<Self, EncodeError> {
        let g = genesis();
        let tip = ChainTip {
            height: 0,
            hash: g.block_hash(),
            time: g.header.time,
        };
        let mut recent_times = VecDeque::with_capacity(MEDIAN_TIME_SPAN);
        recent_times.push_back(g.header.time);
        let empty = Selection::default();
        let first = build_template(
            &config,
            &tip,
            median_time_past(&recent_times),
            1,
            now,
            &empty,
        )?;
        let mut templates = BTreeMap::new();
        templates.insert(
            1,
            IssuedTemplate {
                new_template: first.new_template.clone(),
                transactions: Vec::new(),
            },
        );
        let next_simulated_at = simulated_deadline(&config, now);
        let next_mempool_at = mempool_deadline(&config.mempool, now);
        let history = config.history_blocks;
        let mempool = Mempool::new(config.mempool.clone());
        let mut source = Self {
            config,
            tip,
            recent_times,
            next_template_id: 2,
            tip_first_template_id: 1,
            templates,
            current: first,
            next_simulated_at,
            mempool,
            next_mempool_at,
        };
        let start = now.unix_time.saturating_sub(3600).saturating_sub(history);
        for i in 0..history {
            let height = source.tip.height.saturating_add(1);
            let at = Now::new(now.monotonic, start.saturating_add(i));
            match source.simulate_block(height, at) {
                Ok(block) => {
                    source.advance(block, height, BlockOrigin::Simulated, now)?;
                }
                Err(e) => {
                    tracing::warn!(height, error = %e, "cannot mine a history block");
                    break;
                }
            }
        }
        Ok(source)
    }

    /// The configuration.
    pub fn config(&self) -> &SourceConfig {
        &self.config
    }

    /// The chain tip the current templates build on.
    pub fn tip(&self) -> ChainTip {
        self.tip
    }

    /// The newest template and its `SetNewPrevHash`: what a client that just connected (or
    /// sent `CoinbaseOutputConstraints`) gets.
    pub fn current(&self) -> &TemplateUpdate {
        &self.current
    }

    /// A template issued on the current tip, if it is still kept.
    pub fn template(&self, template_id: u64) -> Option<&NewTemplateOwned> {
        self.templates.get(&template_id).map(|t| &t.new_template)
    }

    /// The transactions after the coinbase of a template issued on the current tip, in block
    /// order (the order its `merkle_path` commits to), if it is still kept.
    pub fn template_transactions(&self, template_id: u64) -> Option<&[Transaction]> {
        self.templates
            .get(&template_id)
            .map(|t| t.transactions.as_slice())
    }

    /// The synthetic mempool the templates select from.
    pub fn mempool(&self) -> &Mempool {
        &self.mempool
    }

    /// The mempool, to add transactions by hand ([`Mempool::insert`]). They go into the
    /// templates of the next tip (templates already issued do not change).
    pub fn mempool_mut(&mut self) -> &mut Mempool {
        &mut self.mempool
    }

    /// The answer to `RequestTransactionData` (spec 7.4-7.6). For a template of the current
    /// tip: `.Success` whose `transaction_list` holds the template's transactions after the
    /// coinbase, in block order, each consensus-serialized **with** its witness (BIP144; the
    /// legacy serialization for one without), and whose `excess_data` is the 32-byte witness
    /// reserved value the coinbase witness carries and the witness commitment assumes
    /// ([`WITNESS_RESERVED_VALUE`], all zero). For a template of an earlier tip: `.Error`
    /// with `stale-template-id`; otherwise `template-id-not-found` (the strings of SRI's
    /// `template_distribution_sv2` `ERROR_CODE_REQUEST_TRANSACTION_DATA_*`).
    ///
    /// Errors only if the list cannot be encoded (a transaction over 16 MiB, or more than
    /// 65535 of them: not with this source's mempool bounds).
    pub fn request_transaction_data(
        &self,
        request: &RequestTransactionDataOwned,
    ) -> Result<TemplateDistributionOwned, EncodeError> {
        let template_id = request.template_id;
        if let Some(t) = self.templates.get(&template_id) {
            let list = t
                .transactions
                .iter()
                .map(|tx| serialize(tx).try_into())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| EncodeError("transaction_list"))?;
            return Ok(TemplateDistributionOwned::RequestTransactionDataSuccess(
                RequestTransactionDataSuccessOwned {
                    template_id,
                    excess_data: WITNESS_RESERVED_VALUE
                        .to_vec()
                        .try_into()
                        .map_err(|_| EncodeError("excess_data"))?,
                    transaction_list: list
                        .try_into()
                        .map_err(|_| EncodeError("transaction_list"))?,
                },
            ));
        }
        let code = if self.is_stale(template_id) {
            ERROR_STALE_TEMPLATE_ID
        } else {
            ERROR_TEMPLATE_ID_NOT_FOUND
        };
        Ok(TemplateDistributionOwned::RequestTransactionDataError(
            RequestTransactionDataErrorOwned {
                template_id,
                error_code: str0255(code).ok_or(EncodeError("error_code"))?,
            },
        ))
    }

    /// Whether `template_id` was issued for an earlier tip.
    pub fn is_stale(&self, template_id: u64) -> bool {
        template_id < self.tip_first_template_id
    }

    /// Median timestamp of the last 11 blocks (BIP113), Unix seconds: a new block's timestamp
    /// must be greater.
    pub fn median_time_past(&self) -> u32 {
        median_time_past(&self.recent_times)
    }

    /// When [`Self::on_tick`] next has something to do (transactions to generate or a
    /// simulated block), or `None` if both are disabled.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.next_simulated_at, self.next_mempool_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Advances timers. When the mempool deadline has passed, generates
    /// [`txs_per_interval`](MempoolConfig::txs_per_interval) transactions (the deadline moves
    /// to `now + tx_interval`); they go into the templates of the next tip. When the
    /// simulated-block deadline has passed, mines a valid block paying
    /// `simulated_payout_script` with the current template's transactions (the other miner had
    /// the same work), makes it the tip and returns it with the next templates (which select
    /// from what arrived meanwhile); that deadline moves to `now + tip_interval`
    /// either way. Returns `None` when no block was made.
    pub fn on_tick(&mut self, now: Now) -> Option<ConnectedBlock> {
        if self.next_mempool_at.is_some_and(|due| now.monotonic >= due) {
            let added = self.mempool.generate(self.config.mempool.txs_per_interval);
            self.next_mempool_at = mempool_deadline(&self.config.mempool, now);
            tracing::debug!(
                added,
                mempool = self.mempool.len(),
                bytes = self.mempool.bytes(),
                "mempool transactions generated"
            );
        }
        let due = self.next_simulated_at?;
        if now.monotonic < due {
            return None;
        }
        self.next_simulated_at = simulated_deadline(&self.config, now);
        let height = self.tip.height.saturating_add(1);
        let block = match self.simulate_block(height, now) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(height, error = %e, "cannot build a simulated block");
                return None;
            }
        };
        match self.advance(block, height, BlockOrigin::Simulated, now) {
            Ok(found) => Some(found),
            Err(e) => {
                tracing::error!(height, error = %e, "cannot encode the next template");
                None
            }
        }
    }

    /// Handles `SubmitSolution` (spec 7.7): rebuilds the block from the template named by
    /// `template_id` (header: the solution's version, timestamp and nonce, the tip hash, the
    /// merkle root of the solution's `coinbase_tx` and the template's `merkle_path`,
    /// `nBits` 0x207fffff; transactions: that coinbase, then the template's), checks the
    /// coinbase against the
    /// template, the timestamp (after the median time past, at most 2 h ahead of `now`), the
    /// proof of work, and runs the independent [`check`](crate::check) validator. On success
    /// the block becomes the tip and the returned [`ConnectedBlock`] carries the next templates;
    /// on error nothing changes.
    pub fn on_submit_solution(
        &mut self,
        solution: SubmitSolutionOwned,
        now: Now,
    ) -> Result<ConnectedBlock, SolutionError> {
        let id = solution.template_id;
        let (template, transactions) = match self.templates.get(&id) {
            Some(t) => (&t.new_template, &t.transactions),
            None if self.is_stale(id) => return Err(SolutionError::StaleTemplate(id)),
            None => return Err(SolutionError::UnknownTemplate(id)),
        };
        let coinbase: Transaction = deserialize(solution.coinbase_tx.as_bytes())
            .map_err(|e| SolutionError::CoinbaseDecode(e.to_string()))?;
        check_coinbase(template, &coinbase)?;
        // As Bitcoin Core checks it: BIP34, BIP66 and BIP65 (active from height 1 on regtest)
        // require a version of at least 4; which other bits a miner rolled is not consensus
        // (BIP320's mask is what miners are granted, not what a node enforces).
        if (solution.version as i32) < MIN_BLOCK_VERSION {
            return Err(SolutionError::BadVersion {
                got: solution.version,
                template: template.version,
            });
        }
        let mtp = self.median_time_past();
        if solution.header_timestamp <= mtp {
            return Err(SolutionError::TimeTooOld {
                time: solution.header_timestamp,
                median_time_past: mtp,
            });
        }
        if solution.header_timestamp > now.unix_time.saturating_add(MAX_FUTURE_BLOCK_TIME) {
            return Err(SolutionError::TimeTooNew {
                time: solution.header_timestamp,
                now: now.unix_time,
            });
        }
        let path: Vec<[u8; 32]> = template
            .merkle_path
            .iter()
            .map(|h| h.as_bytes().try_into().unwrap_or([0u8; 32]))
            .collect();
        let root = merkle_root_from_path(
            TxMerkleNode::from_raw_hash(coinbase.compute_txid().to_raw_hash()),
            &path,
        );
        let header = Header {
            version: BlockVersion::from_consensus(solution.version as i32),
            prev_blockhash: self.tip.hash,
            merkle_root: root,
            time: solution.header_timestamp,
            bits: CompactTarget::from_consensus(REGTEST_NBITS),
            nonce: solution.header_nonce,
        };
        if header.validate_pow(regtest_target()).is_err() {
            return Err(SolutionError::InsufficientWork(header.block_hash()));
        }
        let mut txdata = Vec::with_capacity(1 + transactions.len());
        txdata.push(coinbase);
        txdata.extend(transactions.iter().cloned());
        let block = Block { header, txdata };
        let height = self.tip.height.saturating_add(1);
        validate_decoded_block(&block, height).map_err(SolutionError::InvalidBlock)?;
        Ok(self.advance(
            block,
            height,
            BlockOrigin::Solution { template_id: id },
            now,
        )?)
    }

    /// Makes `block` the tip and issues the first template on it.
    fn advance(
        &mut self,
        block: Block,
        height: u32,
        origin: BlockOrigin,
        now: Now,
    ) -> Result<ConnectedBlock, EncodeError> {
        let hash = block.block_hash();
        let tip = ChainTip {
            height,
            hash,
            time: block.header.time,
        };
        let mut times = self.recent_times.clone();
        times.push_back(tip.time);
        while times.len() > MEDIAN_TIME_SPAN {
            times.pop_front();
        }
        let id = self.next_template_id;
        // The block's transactions leave the mempool before the next selection.
        let mut mempool = self.mempool.clone();
        let confirmed = mempool.remove_confirmed(&block);
        let selection = self.select_from(&mempool);
        let next = build_template(
            &self.config,
            &tip,
            median_time_past(&times),
            id,
            now,
            &selection,
        )?;
        self.mempool = mempool;
        self.tip = tip;
        self.recent_times = times;
        self.next_template_id = id.saturating_add(1);
        self.tip_first_template_id = id;
        self.templates.clear();
        self.templates.insert(
            id,
            IssuedTemplate {
                new_template: next.new_template.clone(),
                transactions: selection.transactions,
            },
        );
        self.current = next.clone();
        self.next_simulated_at = simulated_deadline(&self.config, now);
        tracing::debug!(
            height,
            %hash,
            ?origin,
            next_template = id,
            confirmed,
            mempool = self.mempool.len(),
            "new chain tip"
        );
        Ok(ConnectedBlock {
            block,
            height,
            hash,
            origin,
            next,
        })
    }

    /// The fee-ordered selection for a block: the block weight and sigop limits less the
    /// coinbase's reservation ([`MempoolConfig::coinbase_reserved_weight`] and
    /// [`MempoolConfig::coinbase_reserved_sigops`]).
    fn select_from(&self, mempool: &Mempool) -> Selection {
        let c = &self.config.mempool;
        mempool.select(
            MAX_BLOCK_WEIGHT.saturating_sub(c.coinbase_reserved_weight),
            MAX_BLOCK_SIGOPS_COST.saturating_sub(c.coinbase_reserved_sigops),
        )
    }

    /// Mines a valid block at `height` with the current template's transactions (the other
    /// miner had the same work), paying the subsidy and their fees to
    /// `simulated_payout_script`.
    fn simulate_block(&self, height: u32, now: Now) -> Result<Block, SimulateError> {
        let transactions = self
            .templates
            .get(&self.current.template_id())
            .map(|t| t.transactions.clone())
            .unwrap_or_default();
        let fees = self
            .current
            .new_template
            .coinbase_tx_value_remaining
            .saturating_sub(block_subsidy(height));
        let selection = Selection {
            transactions,
            fees,
            weight: 0,
        };
        let mut script_sig = bip34_coinbase_prefix(height);
        let tag = PushBytesBuf::try_from(b"/simulated by tower-stratum/".to_vec())
            .map_err(|_| SimulateError("coinbase tag"))?;
        script_sig.extend(
            ScriptBuf::builder()
                .push_slice(tag)
                .into_script()
                .into_bytes(),
        );
        let coinbase = Transaction {
            version: TxVersion::non_standard(self.config.coinbase_tx_version as i32),
            lock_time: LockTime::from_consensus(self.config.coinbase_tx_locktime),
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: ScriptBuf::from_bytes(script_sig),
                sequence: Sequence(self.config.coinbase_tx_input_sequence),
                witness: Witness::from_slice(&[WITNESS_RESERVED_VALUE]),
            }],
            output: vec![
                TxOut {
                    value: Amount::from_sat(block_subsidy(height).saturating_add(selection.fees)),
                    script_pubkey: self.config.simulated_payout_script.clone(),
                },
                witness_commitment_output_for(&selection.transactions),
            ],
        };
        let path = coinbase_merkle_path(&selection.transactions);
        let mut header = Header {
            version: BlockVersion::from_consensus(self.config.version as i32),
            prev_blockhash: self.tip.hash,
            merkle_root: merkle_root_from_path(
                TxMerkleNode::from_raw_hash(coinbase.compute_txid().to_raw_hash()),
                &path,
            ),
            time: now.unix_time.max(self.median_time_past().saturating_add(1)),
            bits: CompactTarget::from_consensus(REGTEST_NBITS),
            nonce: 0,
        };
        let target = regtest_target();
        // About every second nonce meets the regtest target.
        while !target.is_met_by(header.block_hash()) {
            header.nonce = header
                .nonce
                .checked_add(1)
                .ok_or(SimulateError("nonce space exhausted"))?;
        }
        let mut txdata = Vec::with_capacity(1 + selection.transactions.len());
        txdata.push(coinbase);
        txdata.extend(selection.transactions);
        let block = Block { header, txdata };
        validate_decoded_block(&block, height)
            .map_err(|_| SimulateError("simulated block failed validation"))?;
        Ok(block)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SimulateError(&'static str);

fn simulated_deadline(config: &SourceConfig, now: Now) -> Option<Instant> {
    if config.tip_interval.is_zero() {
        None
    } else {
        now.monotonic.checked_add(config.tip_interval)
    }
}

fn mempool_deadline(config: &MempoolConfig, now: Now) -> Option<Instant> {
    if config.generates() {
        now.monotonic.checked_add(config.tx_interval)
    } else {
        None
    }
}

fn median_time_past(times: &VecDeque<u32>) -> u32 {
    let mut v: Vec<u32> = times.iter().copied().collect();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// The template for the block after `tip`, with id `template_id`, carrying `selection`: its
/// merkle path, the witness commitment over its wtxids, and the subsidy plus its fees as
/// `coinbase_tx_value_remaining`.
fn build_template(
    config: &SourceConfig,
    tip: &ChainTip,
    median_time_past: u32,
    template_id: u64,
    now: Now,
    selection: &Selection,
) -> Result<TemplateUpdate, EncodeError> {
    let height = tip.height.saturating_add(1);
    let outputs = serialize(&witness_commitment_output_for(&selection.transactions));
    let merkle_path: Vec<_> = coinbase_merkle_path(&selection.transactions)
        .into_iter()
        .map(Into::into)
        .collect();
    let new_template = NewTemplateOwned {
        template_id,
        future_template: true,
        version: config.version,
        coinbase_tx_version: config.coinbase_tx_version,
        coinbase_prefix: bip34_coinbase_prefix(height)
            .try_into()
            .map_err(|_| EncodeError("coinbase_prefix"))?,
        coinbase_tx_input_sequence: config.coinbase_tx_input_sequence,
        coinbase_tx_value_remaining: block_subsidy(height).saturating_add(selection.fees),
        coinbase_tx_outputs_count: 1,
        coinbase_tx_outputs: outputs
            .try_into()
            .map_err(|_| EncodeError("coinbase_tx_outputs"))?,
        coinbase_tx_locktime: config.coinbase_tx_locktime,
        merkle_path: merkle_path
            .try_into()
            .map_err(|_| EncodeError("merkle_path"))?,
    };
    let set_new_prev_hash = SetNewPrevHashOwned {
        template_id,
        prev_hash: tip.hash.to_byte_array().into(),
        header_timestamp: now.unix_time.max(median_time_past.saturating_add(1)),
        n_bits: REGTEST_NBITS,
        target: regtest_target().to_le_bytes().into(),
    };
    Ok(TemplateUpdate {
        height,
        new_template,
        set_new_prev_hash,
    })
}

/// Checks that `coinbase` is a coinbase built from `template` (spec 7.2/7.7).
fn check_coinbase(
    template: &NewTemplateOwned,
    coinbase: &Transaction,
) -> Result<(), SolutionError> {
    let mismatch = SolutionError::CoinbaseMismatch;
    if !coinbase.is_coinbase() || coinbase.input.len() != 1 {
        return Err(mismatch("not a coinbase"));
    }
    if coinbase.version.0 as u32 != template.coinbase_tx_version {
        return Err(mismatch("coinbase_tx_version"));
    }
    if coinbase.lock_time.to_consensus_u32() != template.coinbase_tx_locktime {
        return Err(mismatch("coinbase_tx_locktime"));
    }
    let input = &coinbase.input[0];
    if input.sequence.0 != template.coinbase_tx_input_sequence {
        return Err(mismatch("coinbase_tx_input_sequence"));
    }
    if !input
        .script_sig
        .as_bytes()
        .starts_with(template.coinbase_prefix.as_bytes())
    {
        return Err(mismatch("coinbase_prefix"));
    }
    if input.witness.len() != 1 || input.witness.iter().any(|w| w != WITNESS_RESERVED_VALUE) {
        // Spec 7.7: the coinbase is not stripped of its witness; 7.2: the reserved value is 0.
        return Err(mismatch("witness reserved value"));
    }
    let count = template.coinbase_tx_outputs_count as usize;
    if coinbase.output.len() < count {
        return Err(mismatch("coinbase_tx_outputs_count"));
    }
    let (added, from_template) = coinbase.output.split_at(coinbase.output.len() - count);
    let tail: Vec<u8> = from_template.iter().flat_map(serialize).collect();
    if tail != template.coinbase_tx_outputs.as_bytes() {
        return Err(mismatch("coinbase_tx_outputs"));
    }
    let sum = |outs: &[TxOut]| {
        outs.iter()
            .try_fold(0u64, |acc, o| acc.checked_add(o.value.to_sat()))
    };
    let paid = sum(added).unwrap_or(u64::MAX);
    let allowed = template.coinbase_tx_value_remaining;
    if paid > allowed {
        return Err(SolutionError::ValueTooHigh { paid, allowed });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::check::validate_block;
    use crate::regtest::{
        empty_block_witness_commitment_output, genesis_prev_hash_bytes, op_true_script,
    };
    use crate::solver::{payout_all, solve, Solved};

    const T0: u32 = 1_700_000_000;

    fn at(base: Instant, secs: u64) -> Now {
        Now::new(base + Duration::from_secs(secs), T0 + secs as u32)
    }

    fn solve_current(source: &EmbeddedRegtestSource, extranonce: &[u8]) -> Solved {
        let cur = source.current();
        let payout = payout_all(&cur.new_template, op_true_script());
        solve(
            &cur.new_template,
            &cur.set_new_prev_hash,
            &[payout],
            extranonce,
        )
        .unwrap()
    }

    #[test]
    fn first_template_builds_on_genesis() {
        let base = Instant::now();
        let source = EmbeddedRegtestSource::new(SourceConfig::default(), at(base, 0)).unwrap();
        let cur = source.current();
        assert_eq!(cur.height, 1);
        assert_eq!(cur.template_id(), 1);
        let nt = &cur.new_template;
        assert!(nt.future_template);
        assert_eq!(nt.version, 0x2000_0000);
        assert_eq!(nt.coinbase_prefix.as_bytes(), &[0x51, 0x00]);
        assert_eq!(nt.coinbase_tx_value_remaining, 5_000_000_000);
        assert_eq!(nt.coinbase_tx_outputs_count, 1);
        assert_eq!(
            nt.coinbase_tx_outputs.as_bytes(),
            serialize(&empty_block_witness_commitment_output()).as_slice()
        );
        assert!(nt.merkle_path.is_empty());
        let p = &cur.set_new_prev_hash;
        assert_eq!(p.template_id, 1);
        assert_eq!(p.prev_hash.as_bytes(), &genesis_prev_hash_bytes());
        assert_eq!(p.n_bits, 0x207f_ffff);
        assert_eq!(p.header_timestamp, T0);
        // Target 0x7fffff << 232, little-endian: the top bytes are last.
        let mut target = [0u8; 32];
        target[29] = 0xff;
        target[30] = 0xff;
        target[31] = 0x7f;
        assert_eq!(p.target.as_bytes(), &target);
    }

    #[test]
    fn mined_templates_are_valid_blocks_across_a_halving() {
        let base = Instant::now();
        let mut source = EmbeddedRegtestSource::new(SourceConfig::default(), at(base, 0)).unwrap();
        let mut prev = genesis().block_hash();
        for i in 0..160u32 {
            let height = i + 1;
            let solved = solve_current(&source, &height.to_le_bytes());
            // The independent checker accepts the solver's block...
            validate_block(&solved.block_bytes(), height).unwrap();
            let template_id = source.current().template_id();
            let found = source
                .on_submit_solution(solved.submit.clone(), at(base, u64::from(i)))
                .unwrap();
            // ...and the source rebuilt exactly that block.
            assert_eq!(found.block_bytes(), solved.block_bytes());
            assert_eq!(found.height, height);
            assert_eq!(found.origin, BlockOrigin::Solution { template_id });
            assert_eq!(found.block.header.prev_blockhash, prev);
            validate_block(&found.block_bytes(), height).unwrap();
            prev = found.hash;
            assert_eq!(source.tip().height, height);
            assert_eq!(found.next.height, height + 1);
            assert_eq!(
                found.next.set_new_prev_hash.prev_hash.as_bytes(),
                &found.hash.to_byte_array()
            );
            assert!(found.next.template_id() > template_id);
            assert_eq!(
                found.next.new_template.coinbase_tx_value_remaining,
                if height + 1 < 150 {
                    5_000_000_000
                } else {
                    2_500_000_000
                }
            );
        }
    }

    #[test]
    fn refuses_bad_solutions_without_moving_the_tip() {
        let base = Instant::now();
        let now = at(base, 0);
        let mut source = EmbeddedRegtestSource::new(SourceConfig::default(), now).unwrap();
        let good = solve_current(&source, b"x");
        let tip = source.tip();
        let cur = source.current().clone();

        let mut s = good.submit.clone();
        s.template_id = 99;
        assert_eq!(
            source.on_submit_solution(s, now),
            Err(SolutionError::UnknownTemplate(99))
        );

        // A nonce that misses the target.
        let mut s = good.submit.clone();
        loop {
            s.header_nonce = s.header_nonce.wrapping_add(1);
            let mut h = good.block.header;
            h.nonce = s.header_nonce;
            if !regtest_target().is_met_by(h.block_hash()) {
                break;
            }
        }
        assert!(matches!(
            source.on_submit_solution(s, now),
            Err(SolutionError::InsufficientWork(_))
        ));

        // Paying more than the template allows.
        let mut payout = payout_all(&cur.new_template, op_true_script());
        payout.value = Amount::from_sat(payout.value.to_sat() + 1);
        let greedy = solve(&cur.new_template, &cur.set_new_prev_hash, &[payout], b"x").unwrap();
        assert!(matches!(
            source.on_submit_solution(greedy.submit, now),
            Err(SolutionError::ValueTooHigh { .. })
        ));

        // Stripped witness (spec 7.7 forbids it).
        let mut cb = good.block.txdata[0].clone();
        cb.input[0].witness = Witness::new();
        let mut s = good.submit.clone();
        s.coinbase_tx = serialize(&cb).try_into().unwrap();
        assert_eq!(
            source.on_submit_solution(s, now),
            Err(SolutionError::CoinbaseMismatch("witness reserved value"))
        );

        // Another coinbase prefix (wrong height).
        let mut cb = good.block.txdata[0].clone();
        cb.input[0].script_sig = ScriptBuf::from_bytes(vec![0x52, 0x00, 0x01, 0x78]);
        let mut s = good.submit.clone();
        s.coinbase_tx = serialize(&cb).try_into().unwrap();
        assert_eq!(
            source.on_submit_solution(s, now),
            Err(SolutionError::CoinbaseMismatch("coinbase_prefix"))
        );

        // A version below 4 (a negative one too).
        for version in [3, 0x8000_0000] {
            let mut s = good.submit.clone();
            s.version = version;
            assert!(matches!(
                source.on_submit_solution(s, now),
                Err(SolutionError::BadVersion { .. })
            ));
        }

        // Timestamp not after the median time past (genesis time).
        let mut s = good.submit.clone();
        s.header_timestamp = genesis().header.time;
        assert!(matches!(
            source.on_submit_solution(s, now),
            Err(SolutionError::TimeTooOld { .. })
        ));

        // Garbage coinbase.
        let mut s = good.submit.clone();
        s.coinbase_tx = vec![1, 2, 3].try_into().unwrap();
        assert!(matches!(
            source.on_submit_solution(s, now),
            Err(SolutionError::CoinbaseDecode(_))
        ));

        assert_eq!(source.tip(), tip);
        assert_eq!(source.current(), &cur);
        // The good one still works, once.
        source.on_submit_solution(good.submit.clone(), now).unwrap();
        assert_eq!(
            source.on_submit_solution(good.submit, now),
            Err(SolutionError::StaleTemplate(1))
        );
    }

    #[test]
    fn simulated_blocks_follow_the_interval() {
        let base = Instant::now();
        let config = SourceConfig::with_tip_interval(Duration::from_secs(30));
        let mut source = EmbeddedRegtestSource::new(config, at(base, 0)).unwrap();
        assert_eq!(source.poll_timeout(), Some(base + Duration::from_secs(30)));
        assert!(source.on_tick(at(base, 29)).is_none());
        let found = source.on_tick(at(base, 30)).unwrap();
        assert_eq!(found.origin, BlockOrigin::Simulated);
        assert_eq!(found.height, 1);
        validate_block(&found.block_bytes(), 1).unwrap();
        assert_eq!(
            found.block.txdata[0].output[0].script_pubkey,
            op_true_script()
        );
        assert_eq!(source.poll_timeout(), Some(base + Duration::from_secs(60)));
        assert_eq!(source.current().height, 2);
        // A solution for the height-1 template is now stale.
        assert!(source.is_stale(1));

        // A mined block resets the interval.
        let solved = solve_current(&source, b"m");
        source
            .on_submit_solution(solved.submit, at(base, 45))
            .unwrap();
        assert_eq!(source.poll_timeout(), Some(base + Duration::from_secs(75)));
        let found = source.on_tick(at(base, 75)).unwrap();
        assert_eq!(found.height, 3);
        validate_block(&found.block_bytes(), 3).unwrap();
    }

    #[test]
    fn zero_interval_disables_simulated_blocks() {
        let base = Instant::now();
        let config = SourceConfig::with_tip_interval(Duration::ZERO);
        let mut source = EmbeddedRegtestSource::new(config, at(base, 0)).unwrap();
        assert_eq!(source.poll_timeout(), None);
        assert!(source.on_tick(at(base, 1_000_000)).is_none());
    }

    fn with_mempool(mempool: MempoolConfig, history_blocks: u32) -> SourceConfig {
        SourceConfig {
            tip_interval: Duration::ZERO,
            history_blocks,
            mempool,
            ..SourceConfig::default()
        }
    }

    fn one_second_mempool() -> MempoolConfig {
        MempoolConfig {
            tx_interval: Duration::from_secs(1),
            txs_per_interval: 8,
            ..MempoolConfig::default()
        }
    }

    fn txs_of(reply: TemplateDistributionOwned) -> (Vec<Transaction>, Vec<u8>) {
        match reply {
            TemplateDistributionOwned::RequestTransactionDataSuccess(s) => (
                s.transaction_list
                    .into_inner()
                    .into_iter()
                    .map(|t| deserialize(t.as_bytes()).unwrap())
                    .collect(),
                s.excess_data.as_bytes().to_vec(),
            ),
            other => panic!("expected RequestTransactionData.Success, got {other:?}"),
        }
    }

    fn error_code(reply: TemplateDistributionOwned) -> String {
        match reply {
            TemplateDistributionOwned::RequestTransactionDataError(e) => {
                String::from_utf8(e.error_code.as_bytes().to_vec()).unwrap()
            }
            other => panic!("expected RequestTransactionData.Error, got {other:?}"),
        }
    }

    fn rtd(template_id: u64) -> RequestTransactionDataOwned {
        RequestTransactionDataOwned { template_id }
    }

    #[test]
    fn templates_carry_the_mempool_and_solutions_make_full_valid_blocks() {
        let base = Instant::now();
        let mut source =
            EmbeddedRegtestSource::new(with_mempool(one_second_mempool(), 3), at(base, 0)).unwrap();
        // The first template was built before any transaction: coinbase-only.
        assert!(source.current().new_template.merkle_path.is_empty());
        assert_eq!(source.poll_timeout(), Some(base + Duration::from_secs(1)));
        assert!(source.on_tick(at(base, 1)).is_none());
        assert_eq!(source.mempool().len(), 8);
        assert_eq!(source.poll_timeout(), Some(base + Duration::from_secs(2)));
        // Templates already issued do not change; the next tip's template takes the mempool.
        let solved = solve_current(&source, b"a");
        let found = source
            .on_submit_solution(solved.submit, at(base, 1))
            .unwrap();
        assert_eq!(found.block.txdata.len(), 1);
        let cur = source.current().clone();
        let id = cur.template_id();
        let txs = source.template_transactions(id).unwrap().to_vec();
        assert_eq!(txs.len(), 8, "the whole mempool fits");
        let fees: u64 = txs
            .iter()
            .map(|t| source.mempool().get(&t.compute_txid()).unwrap().1)
            .sum();
        assert!(fees > 0);
        assert_eq!(
            cur.new_template.coinbase_tx_value_remaining,
            block_subsidy(cur.height) + fees
        );
        assert!(!cur.new_template.merkle_path.is_empty());
        assert_eq!(
            cur.new_template.coinbase_tx_outputs.as_bytes(),
            serialize(&witness_commitment_output_for(&txs)).as_slice()
        );
        assert!(txs
            .iter()
            .any(|t| t.compute_txid().to_raw_hash() != t.compute_wtxid().to_raw_hash()));

        // RequestTransactionData.Success: the same transactions, with witnesses, and the
        // witness reserved value as excess_data.
        let (listed, excess) = txs_of(source.request_transaction_data(&rtd(id)).unwrap());
        assert_eq!(listed, txs);
        assert_eq!(excess, WITNESS_RESERVED_VALUE);

        // A Pool builds the block from the template and the list; the source rebuilds the same.
        let payout = payout_all(&cur.new_template, op_true_script());
        let wrong = &listed[1..];
        assert_eq!(
            crate::solver::solve_with_transactions(
                &cur.new_template,
                &cur.set_new_prev_hash,
                std::slice::from_ref(&payout),
                b"b",
                wrong
            ),
            Err(crate::solver::SolverError::MerklePathMismatch)
        );
        assert_eq!(
            solve(
                &cur.new_template,
                &cur.set_new_prev_hash,
                std::slice::from_ref(&payout),
                b"b"
            ),
            Err(crate::solver::SolverError::NotEmpty)
        );
        let solved = crate::solver::solve_with_transactions(
            &cur.new_template,
            &cur.set_new_prev_hash,
            &[payout],
            b"b",
            &listed,
        )
        .unwrap();
        validate_block(&solved.block_bytes(), cur.height).unwrap();
        let found = source
            .on_submit_solution(solved.submit.clone(), at(base, 2))
            .unwrap();
        assert_eq!(found.block_bytes(), solved.block_bytes());
        assert_eq!(found.block.txdata.len(), 9);
        validate_block(&found.block_bytes(), found.height).unwrap();
        // Its transactions left the mempool; the next template has none of them.
        for t in &txs {
            assert!(!source.mempool().contains(&t.compute_txid()));
        }
        assert!(source.mempool().is_empty());
        assert!(source.current().new_template.merkle_path.is_empty());

        // The old template: stale. A never-issued one: not found.
        assert_eq!(
            error_code(source.request_transaction_data(&rtd(id)).unwrap()),
            ERROR_STALE_TEMPLATE_ID
        );
        assert_eq!(
            error_code(source.request_transaction_data(&rtd(1_000)).unwrap()),
            ERROR_TEMPLATE_ID_NOT_FOUND
        );
        // A coinbase-only template's list is empty.
        let (listed, excess) = txs_of(
            source
                .request_transaction_data(&rtd(source.current().template_id()))
                .unwrap(),
        );
        assert!(listed.is_empty());
        assert_eq!(excess, WITNESS_RESERVED_VALUE);
    }

    #[test]
    fn simulated_blocks_mine_the_mempool_and_it_stays_bounded() {
        let base = Instant::now();
        let config = SourceConfig {
            tip_interval: Duration::from_secs(30),
            history_blocks: 2,
            mempool: MempoolConfig {
                max_transactions: 20,
                ..one_second_mempool()
            },
            ..SourceConfig::default()
        };
        let mut source = EmbeddedRegtestSource::new(config, at(base, 0)).unwrap();
        let mut blocks_with_transactions = 0;
        let mut t = 0;
        while let Some(due) = source.poll_timeout() {
            t = due.duration_since(base).as_secs();
            if t > 200 {
                break;
            }
            if let Some(found) = source.on_tick(at(base, t)) {
                assert_eq!(found.origin, BlockOrigin::Simulated);
                validate_block(&found.block_bytes(), found.height).unwrap();
                if found.block.txdata.len() > 1 {
                    blocks_with_transactions += 1;
                    let fees: u64 = found.block.txdata[0]
                        .output
                        .iter()
                        .map(|o| o.value.to_sat())
                        .sum::<u64>()
                        - block_subsidy(found.height);
                    assert!(fees > 0, "the simulated miner takes the fees");
                }
                for tx in found.block.txdata.iter().skip(1) {
                    assert!(!source.mempool().contains(&tx.compute_txid()));
                }
                // The next template's list is the current selection, valid as a block.
                let id = found.next.template_id();
                let (listed, _) = txs_of(source.request_transaction_data(&rtd(id)).unwrap());
                assert_eq!(listed, source.template_transactions(id).unwrap());
            }
            assert!(source.mempool().len() <= 20);
            assert!(source.mempool().coin_count() <= source.config().mempool.max_coins);
        }
        assert!(t > 200);
        assert!(blocks_with_transactions >= 5, "{blocks_with_transactions}");
    }

    #[test]
    fn a_template_with_transactions_that_do_not_fit_leaves_them_for_later() {
        let base = Instant::now();
        let mut mempool = one_second_mempool();
        // Room for a few small transactions only.
        mempool.coinbase_reserved_weight = MAX_BLOCK_WEIGHT - 1_500;
        let mut source = EmbeddedRegtestSource::new(with_mempool(mempool, 3), at(base, 0)).unwrap();
        source.on_tick(at(base, 1));
        let before = source.mempool().len();
        let solved = solve_current(&source, b"w");
        source
            .on_submit_solution(solved.submit, at(base, 1))
            .unwrap();
        let txs = source
            .template_transactions(source.current().template_id())
            .unwrap();
        let weight: u64 = txs.iter().map(|t| t.weight().to_wu()).sum();
        assert!(!txs.is_empty() && weight <= 1_500);
        assert!(txs.len() < before);
        assert_eq!(source.mempool().len(), before);
    }

    #[test]
    fn history_blocks_put_the_median_time_past_an_hour_back() {
        let now = Now::new(Instant::now(), 1_800_000_000);
        let cfg = SourceConfig {
            history_blocks: 11,
            ..SourceConfig::default()
        };
        let source = EmbeddedRegtestSource::new(cfg, now).unwrap();
        assert_eq!(source.tip().height, 11);
        let mtp = source.median_time_past();
        assert!(mtp < now.unix_time - 3500, "median time past {mtp}");
        assert!(mtp > now.unix_time - 3700, "median time past {mtp}");
    }

    #[test]
    fn timestamps_stay_after_the_median_time_past() {
        // Many blocks within the same second: each header_timestamp must still exceed the
        // median of the last 11, and the blocks stay valid.
        let base = Instant::now();
        let now = at(base, 0);
        let mut source = EmbeddedRegtestSource::new(SourceConfig::default(), now).unwrap();
        for _ in 0..40 {
            let mtp = source.median_time_past();
            assert!(source.current().set_new_prev_hash.header_timestamp > mtp);
            let solved = solve_current(&source, b"t");
            source.on_submit_solution(solved.submit, now).unwrap();
        }
        assert!(source.current().set_new_prev_hash.header_timestamp < T0 + 7200);
    }
}
