//! [`MiningServer`]: the Mining Protocol server handler (spec 5) on SRI's `channels_sv2`.

use crate::block::{self, FoundBlock};
use crate::channel::{
    cap_at_network, Channel, ChannelOps, Connection, JobInfo, UpdateError, GROUP_CHANNEL_ID,
};
use crate::config::{ConfigError, MiningServerConfig};
use crate::keeper::{
    self, BlockEvent, BlockKeeper, Resolution, SubmitTrigger, TipOutcome, UnconfirmedBlocks,
};
use crate::share_math;
use crate::stats::{HashrateEstimator, MiningStats, WorkerStats, WorkerTable};
use crate::vardiff::ClassicVardiff;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::Instant;
use tower_stratum_core::extensions::WORKER_HASHRATE_TRACKING;
use tower_stratum_core::handler::Sv2MiningServerHandler;
use tower_stratum_core::session::{
    str0255, CloseReason, REQUIRES_FIXED_VERSION, REQUIRES_STANDARD_JOBS, REQUIRES_VERSION_ROLLING,
};
use tower_stratum_core::stratum_core::binary_sv2::{B032Owned, U256Owned};
use tower_stratum_core::stratum_core::bitcoin::consensus::deserialize;
use tower_stratum_core::stratum_core::bitcoin::hashes::Hash;
use tower_stratum_core::stratum_core::bitcoin::{Amount, BlockHash, Target, Transaction, TxOut};
use tower_stratum_core::stratum_core::channels_sv2::extranonce_manager::{
    ExtranonceAllocator, ExtranonceAllocatorError,
};
use tower_stratum_core::stratum_core::channels_sv2::server::error::{
    ExtendedChannelError, StandardChannelError,
};
use tower_stratum_core::stratum_core::channels_sv2::server::extended::ExtendedChannel;
use tower_stratum_core::stratum_core::channels_sv2::server::group::GroupChannel;
use tower_stratum_core::stratum_core::channels_sv2::server::share_accounting::{
    ShareValidationError, ShareValidationResult,
};
use tower_stratum_core::stratum_core::channels_sv2::server::standard::StandardChannel;
use tower_stratum_core::stratum_core::mining_sv2::{
    CloseChannelOwned, NewExtendedMiningJobOwned, OpenExtendedMiningChannelOwned,
    OpenExtendedMiningChannelSuccessOwned, OpenMiningChannelErrorOwned,
    OpenStandardMiningChannelOwned, OpenStandardMiningChannelSuccessOwned,
    SetCustomMiningJobErrorOwned, SetCustomMiningJobOwned,
    SetNewPrevHashOwned as MiningSetNewPrevHash, SetTargetOwned, SubmitSharesErrorOwned,
    SubmitSharesExtendedOwned, SubmitSharesStandardOwned, SubmitSharesSuccessOwned,
    UpdateChannelErrorOwned, UpdateChannelOwned,
    ERROR_CODE_OPEN_MINING_CHANNEL_CHANNEL_CAPACITY_EXHAUSTED,
    ERROR_CODE_OPEN_MINING_CHANNEL_EXTENDED_CHANNELS_NOT_SUPPORTED_FOR_STANDARD_JOBS,
    ERROR_CODE_OPEN_MINING_CHANNEL_MIN_EXTRANONCE_SIZE_TOO_LARGE,
    ERROR_CODE_SET_CUSTOM_MINING_JOB_JD_NOT_SUPPORTED, ERROR_CODE_SUBMIT_SHARES_INVALID_CHANNEL_ID,
    ERROR_CODE_SUBMIT_SHARES_INVALID_SHARE, ERROR_CODE_UPDATE_CHANNEL_INVALID_CHANNEL_ID,
    ERROR_CODE_VERSION_ROLLING_NOT_ALLOWED,
};
use tower_stratum_core::stratum_core::parsers_sv2::{MiningOwned, TemplateDistributionOwned};
use tower_stratum_core::stratum_core::template_distribution_sv2::{
    CoinbaseOutputConstraintsOwned, NewTemplateOwned, RequestTransactionDataOwned,
    SetNewPrevHashOwned as TdSetNewPrevHash, SubmitSolutionOwned,
};
use tower_stratum_core::{
    Action, Actions, ConnectionContext, ConnectionId, ExtensionSet, ExtensionSupport, SetupSupport,
    SiblingMessage, Sv2Message, TlvFields,
};
use tracing::{debug, error, info, warn};

/// Error code for failures that are the server's, not the client's (never expected: the
/// configuration is validated up front).
pub const ERROR_CODE_INTERNAL: &str = "internal-error";

/// `SubmitShares.Error` code for a share whose `user_identity` TLV (extension `0x0002`) is
/// longer than 32 bytes or not UTF-8 (spec 3.4.3: "the recipient MUST reject the message").
pub const ERROR_CODE_INVALID_USER_IDENTITY: &str = "invalid-user-identity";

/// Future templates kept while waiting for their `SetNewPrevHash` (the same bound as
/// `channels_sv2`'s per-channel future jobs).
const MAX_PENDING_FUTURE_TEMPLATES: usize = 16;

/// Templates with transactions whose prefetched transaction lists are kept (each at most a
/// block's worth, under 4 MB serialized).
const TEMPLATE_TRANSACTIONS_KEPT: usize = 4;

/// What the server reports to an [event sink](MiningServer::with_event_sink).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum MiningEvent {
    /// A share solved a block; `SubmitSolution` went to the template source.
    /// [`FoundBlock::block`] is `None` if the template has transactions not yet known.
    BlockFound(FoundBlock),
    /// The transactions of a found block arrived (`RequestTransactionData.Success`) and
    /// matched: [`FoundBlock::block`] is now the whole block.
    BlockCompleted(FoundBlock),
    /// Sent on every timer (see [`MiningServer`]'s "Time", every
    /// [`timer_period`](MiningServerConfig::timer_period)): the current [`MiningStats`].
    Stats(MiningStats),
    /// Sent on every timer while any worker is tracked, right after [`Stats`](Self::Stats):
    /// [`MiningServer::worker_stats`].
    Workers(Vec<WorkerStats>),
}

type EventSink = Box<dyn FnMut(MiningEvent) + Send>;

/// Parents (prev hashes) of the blocks found most recently: a second solution on one of them
/// is a share, not another block (see [`MiningServer`]'s "Blocks").
const SOLVED_PARENTS_KEPT: usize = 8;

/// Blocks submitted per parent at most (see [`MiningServer`]'s "Found blocks").
pub const MAX_BLOCKS_PER_PARENT: u32 = 4;

/// The chain as the template source described it.
#[derive(Debug, Default)]
struct ChainState {
    /// The last Template Distribution `SetNewPrevHash`.
    prev_hash: Option<TdSetNewPrevHash>,
    /// The template the channels' active jobs come from: the future template the last
    /// `SetNewPrevHash` activated, or a later non-future template.
    current_template: Option<NewTemplateOwned>,
    /// Future templates received since the last `SetNewPrevHash`, oldest first.
    pending_future: VecDeque<NewTemplateOwned>,
}

/// A Stratum V2 mining server handler (spec 5): standard, extended and group channels,
/// jobs from Template Distribution templates, share validation and accounting, vardiff, block
/// submission. Built on SRI's `channels_sv2` server channels and following SRI `pool_sv2`'s
/// channel manager, as a single-owner [`Sv2MiningServerHandler`].
///
/// # Wiring
/// - Templates arrive as sibling messages from a template source: Template Distribution
///   `NewTemplate`, `SetNewPrevHash`, `RequestTransactionData.Success/Error`. A solved block
///   goes back as `SubmitSolution` (and `RequestTransactionData` when transactions are needed)
///   with [`Action::ToSibling`].
/// - Time: the server asks the runtime for a wake-up with
///   [`poll_timeout`](Sv2MiningServerHandler::poll_timeout) every
///   [`timer_period`](MiningServerConfig::timer_period) (default 1 s) and does its periodic
///   work in [`on_timer`](Sv2MiningServerHandler::on_timer) (see "Time" below). A service
///   (`Sv2ServerService`) drives it; no ticker task or message is needed.
/// - Stats and found blocks: [`stats`](Self::stats) and [`found_blocks`](Self::found_blocks)
///   when you own the value, or an [event sink](Self::with_event_sink) once it is inside a
///   service.
///
/// # Time
/// The server's time is the `now` of [`on_timer`](Sv2MiningServerHandler::on_timer)
/// (monotonic; the runtime's clock, so tests with paused tokio time see virtual time); a
/// channel opened or a block found between two timers is dated by the last one. On each call
/// it
/// - closes a hashrate-estimate interval (server-wide and per worker);
/// - runs vardiff on every channel when
///   [`vardiff_period`](MiningServerConfig::vardiff_period) has passed since the last run (the
///   first call runs it), replying `SetTarget` (spec 5.3.21) to channels whose target changed;
/// - resubmits found blocks the template source has not confirmed, or abandons them (see
///   [`keeper`](crate::keeper));
/// - reports [`MiningEvent::Stats`], then [`MiningEvent::Workers`] while any worker is tracked;
/// - sets the next deadline to `now +`
///   [`timer_period`](MiningServerConfig::timer_period).
///
/// The server never reads a clock except once in [`new`](Self::new): the creation instant
/// (`std::time::Instant::now()`) is its first deadline, so a runtime calls `on_timer` as soon
/// as it serves the server (under paused tokio time, as soon as the runtime is idle). A caller
/// driving the handler by hand (sans IO) may call `on_timer` at any `now`; the work above is
/// done on every call, due or not.
///
/// # Channels and jobs (spec 5.2, as SRI's pool)
/// - Each connection has one group channel (id 1); its channels are numbered from 2. Unless
///   the client set `REQUIRES_STANDARD_JOBS`, every channel joins the group and new jobs are
///   broadcast once per connection as `NewExtendedMiningJob` on the group channel, followed by
///   `SetNewPrevHash` on the group channel. With `REQUIRES_STANDARD_JOBS`, each standard channel
///   gets its own `NewMiningJob` / `SetNewPrevHash`, and extended channels are refused with
///   `extended-channels-not-supported-for-standard-jobs`.
/// - A channel opened while a template and a chain tip are known first gets its own future job
///   (from the current template) and a `SetNewPrevHash` activating it (spec 5.3.15: the first
///   job after opening is a future job), then any future templates still waiting for their
///   prevhash. A channel opened before any template is open and idle; it gets jobs as soon as
///   templates arrive. (SRI's pool instead accepts no connection until it has a template and a
///   prevhash; SRI's own future template + prevhash bootstrap is used for the first job, but
///   from the *current* template, so a channel opened between a `NewTemplate` update and the
///   next block mines the freshest template, and future templates still awaiting their
///   `SetNewPrevHash` are passed on so that prevhash can activate them on the new channel too.)
/// - Extranonce prefixes come from one `ExtranonceAllocator` for all connections: unique
///   across connections and channels, released when a channel or connection closes. Extended
///   channels get the whole rollable space (`extranonce_size`), so every channel of a group
///   has the same full extranonce size (spec 5.2.3).
///
/// # Shares (spec 5.3.11-5.3.14)
/// Validation is `channels_sv2`'s: known job (`invalid-job-id`), job of an older chain tip
/// (`stale-share`), `ntime` within `[min_ntime, min_ntime + 2 h]` and version bits within the
/// BIP323 mask (`invalid-share`, `invalid-non-rollable-version-bit`), extranonce size
/// (`bad-extranonce-size`), duplicate (`duplicate-share`), channel target
/// (`difficulty-too-low`); an unknown channel gets `invalid-channel-id`. Accepted shares are
/// acknowledged every [`share_batch_size`](MiningServerConfig::share_batch_size) with
/// `SubmitShares.Success`, and at once when they solve a block. A channel whose duplicate set
/// reaches `channels_sv2`'s budget is closed with `CloseChannel` `share-budget-exhausted`.
/// Error codes are `mining_sv2`'s constants (spec 3.5 leaves codes to implementations; these
/// are the ones SRI and earlier spec revisions use).
///
/// # Blocks (spec 7.7)
/// A share whose hash meets the network target solves a block. Before the share is answered
/// and before `SubmitSolution` goes to the template source, the [block
/// keeper](Self::with_block_keeper) gets [`BlockEvent::Found`] synchronously (e.g. a
/// [`BlockStore`](crate::BlockStore) writes it durably). The block is then resubmitted until
/// the source's tip becomes it, it is stale, or
/// [`max_submit_attempts`](MiningServerConfig::max_submit_attempts) is reached (see
/// [`keeper`](crate::keeper)). At most [`MAX_BLOCKS_PER_PARENT`] blocks per parent: later
/// solutions on a parent this server already solved that often are accepted as shares and not
/// submitted (only one block per height can be in the chain); on regtest, where about every
/// other hash is a block, this keeps a miner's burst of solutions from becoming a burst of
/// kept blocks. More than one are submitted because Template Distribution has no answer to
/// `SubmitSolution`: a first solution the source refuses must not keep the next from trying.
///
/// # Targets
/// A channel's target is never harder than the network target of its current job (the
/// `nBits` of the chain tip), so a miner never throws away a hash that is a block: at open,
/// after vardiff and `UpdateChannel`, and on every `SetNewPrevHash` (with a `SetTarget` to
/// the channels it raised, before their new jobs). The client's `max_target` (spec 5.3.2) and
/// [`min_share_difficulty`](MiningServerConfig::min_share_difficulty) still bound it, and
/// [`cap_target_at_network`](MiningServerConfig::cap_target_at_network) turns it off. On
/// regtest (`nBits` `0x207fffff`) every share is therefore a block, and a miner that keeps
/// hashing a solved tip submits about every other hash until the new tip reaches it (mostly
/// `stale-share` rejections).
///
/// # Other messages
/// - `OpenStandardMiningChannel` / `OpenExtendedMiningChannel` errors: `invalid-nominal-hashrate`,
///   `max-target-out-of-range` (from `channels_sv2`), `min-extranonce-size-too-large`,
///   `channel-capacity-exhausted` (allocator full or
///   [`max_channels_per_connection`](MiningServerConfig::max_channels_per_connection) reached),
///   `extended-channels-not-supported-for-standard-jobs`.
/// - `UpdateChannel` (spec 5.3.7): new target from the nominal hashrate and `maximum_target`,
///   answered with `SetTarget`; `UpdateChannel.Error` `invalid-channel-id`,
///   `invalid-nominal-hashrate` or `max-target-out-of-range`.
/// - `CloseChannel` (spec 5.3.9): frees the channel and its extranonce prefix; on the group
///   channel id, closes every channel of the connection. No reply.
/// - `SetCustomMiningJob`: `SetCustomMiningJob.Error` `jd-not-supported` (no Job Declaration;
///   `REQUIRES_WORK_SELECTION` is refused at `SetupConnection`).
/// - Connection closed: all its channels and prefixes are freed.
pub struct MiningServer {
    config: MiningServerConfig,
    pub(crate) allocator: ExtranonceAllocator,
    connections: BTreeMap<ConnectionId, Connection>,
    chain: ChainState,
    found_blocks: Vec<FoundBlock>,
    /// Templates whose transactions were requested for a found block.
    awaiting_transactions: BTreeSet<u64>,
    /// Templates whose transactions were requested when they arrived (at most
    /// `TEMPLATE_TRANSACTIONS_KEPT`), and the lists that came back (as many).
    prefetching: BTreeSet<u64>,
    template_transactions: BTreeMap<u64, Vec<Vec<u8>>>,
    blocks_found: u64,
    shares_accepted: u64,
    shares_rejected: u64,
    hashrate: HashrateEstimator,
    workers: WorkerTable,
    last_tick: Option<Instant>,
    last_vardiff_run: Option<Instant>,
    /// When [`Sv2MiningServerHandler::on_timer`] is next due (`None`: `timer_period` is too
    /// long for an `Instant`, never).
    next_timer: Option<Instant>,
    event_sink: Option<EventSink>,
    keeper: Option<Box<dyn BlockKeeper>>,
    unconfirmed: UnconfirmedBlocks,
    /// Parents this server found blocks on, with how many (the last [`SOLVED_PARENTS_KEPT`]).
    solved_parents: VecDeque<([u8; 32], u32)>,
    templates_received: u64,
}

impl fmt::Debug for MiningServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MiningServer")
            .field("connections", &self.connections.len())
            .field("channels", &self.channel_count())
            .field("allocator", &self.allocator)
            .field("chain_tip", &self.chain.prev_hash.is_some())
            .field("blocks_found", &self.blocks_found)
            .field("shares_accepted", &self.shares_accepted)
            .field("shares_rejected", &self.shares_rejected)
            .field("event_sink", &self.event_sink.is_some())
            .field("block_keeper", &self.keeper.is_some())
            .field("unconfirmed_blocks", &self.unconfirmed.len())
            .finish_non_exhaustive()
    }
}

impl MiningServer {
    /// A server with `config`. Errors with [`ConfigError`] if the payout script is empty, the
    /// share rate or batch size is unusable, the extranonce layout does not fit, or the pool
    /// signature does not fit the coinbase `scriptSig`.
    pub fn new(config: MiningServerConfig) -> Result<Self, ConfigError> {
        let allocator = config.validate()?;
        let unconfirmed = UnconfirmedBlocks::new(
            config.max_unconfirmed_blocks,
            config.max_submit_attempts,
            config.resubmit_interval,
        );
        Ok(Self {
            hashrate: HashrateEstimator::new(config.hashrate_window),
            workers: WorkerTable::new(config.hashrate_window, config.max_tracked_workers),
            config,
            allocator,
            connections: BTreeMap::new(),
            chain: ChainState::default(),
            found_blocks: Vec::new(),
            awaiting_transactions: BTreeSet::new(),
            prefetching: BTreeSet::new(),
            template_transactions: BTreeMap::new(),
            blocks_found: 0,
            shares_accepted: 0,
            shares_rejected: 0,
            last_tick: None,
            last_vardiff_run: None,
            // The one clock read (see "Time"): due at once.
            next_timer: Some(Instant::now()),
            event_sink: None,
            keeper: None,
            unconfirmed,
            solved_parents: VecDeque::new(),
            templates_received: 0,
        })
    }

    /// Calls `sink` with every [`MiningEvent`] (found blocks, stats on each timer). The sink
    /// runs inside the handler, one event at a time: keep it short and non-blocking (e.g.
    /// `try_send` into a bounded channel).
    pub fn with_event_sink(mut self, sink: impl FnMut(MiningEvent) + Send + 'static) -> Self {
        self.event_sink = Some(Box::new(sink));
        self
    }

    /// Calls `keeper` with every [`BlockEvent`], synchronously: a found block reaches it
    /// before the share is answered and before `SubmitSolution` goes out (see
    /// [`keeper`](crate::keeper)), unlike the event sink, which may drop events. Typically a
    /// closure around a [`BlockStore`](crate::BlockStore).
    pub fn with_block_keeper(mut self, keeper: impl BlockKeeper) -> Self {
        self.keeper = Some(Box::new(keeper));
        self
    }

    /// The configuration in use.
    pub fn config(&self) -> &MiningServerConfig {
        &self.config
    }

    /// Current counters and the hashrate estimate (H/s).
    pub fn stats(&self) -> MiningStats {
        MiningStats {
            connections: self.connections.len(),
            channels: self.channel_count(),
            shares_accepted: self.shares_accepted,
            shares_rejected: self.shares_rejected,
            blocks_found: self.blocks_found,
            // Nobody can hash on our jobs without a channel: the window's average would keep
            // showing departed miners for a whole window.
            hashrate_estimate_hs: if self.channel_count() == 0 {
                0.0
            } else {
                self.hashrate.hashrate()
            },
            workers: self.workers.len(),
            templates_received: self.templates_received,
            unconfirmed_blocks: self.unconfirmed.len(),
        }
    }

    /// Accepted shares and hashrate per worker (user identity), sorted by user identity: the
    /// `user_identity` TLV of shares that carry one (extension `0x0002`, negotiated when
    /// [`worker_hashrate_tracking`](MiningServerConfig::worker_hashrate_tracking) is on), else
    /// the channel's `user_identity`. At most
    /// [`max_tracked_workers`](MiningServerConfig::max_tracked_workers) entries; workers with
    /// no accepted share for a whole [`hashrate_window`](MiningServerConfig::hashrate_window)
    /// are dropped.
    pub fn worker_stats(&self) -> Vec<WorkerStats> {
        self.workers.snapshot()
    }

    /// The most recent blocks found, oldest first (at most
    /// [`found_blocks_kept`](MiningServerConfig::found_blocks_kept); [`MiningStats::blocks_found`]
    /// counts all).
    pub fn found_blocks(&self) -> &[FoundBlock] {
        &self.found_blocks
    }

    /// The `CoinbaseOutputConstraints` (spec 7.1) a Template Distribution client should send
    /// for this server's coinbase output: its exact serialized size (bytes) and sigop cost.
    pub fn coinbase_output_constraints(&self) -> CoinbaseOutputConstraintsOwned {
        use tower_stratum_core::stratum_core::bitcoin::absolute::LockTime;
        use tower_stratum_core::stratum_core::bitcoin::transaction::Version;
        use tower_stratum_core::stratum_core::bitcoin::{
            OutPoint, ScriptBuf, Sequence, TxIn, Witness,
        };
        let outputs = self.reward_outputs(0);
        let size: usize = outputs.iter().map(TxOut::size).sum();
        let tx = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::from(vec![vec![0; 32]]),
            }],
            output: outputs,
        };
        CoinbaseOutputConstraintsOwned {
            coinbase_output_max_additional_size: u32::try_from(size).unwrap_or(u32::MAX),
            coinbase_output_max_additional_sigops: u16::try_from(tx.total_sigop_cost(|_| None))
                .unwrap_or(u16::MAX),
        }
    }

    /// The periodic work of [`on_timer`](Sv2MiningServerHandler::on_timer) at `now`
    /// (monotonic; see "Time" in [`MiningServer`]): hashrate intervals, vardiff when its period
    /// has passed (the first call runs it), resubmissions, [`MiningEvent::Stats`] and
    /// [`MiningEvent::Workers`]. Returns the `SetTarget`s (spec 5.3.21) and `SubmitSolution`s.
    fn run_timer(&mut self, now: Instant) -> Actions {
        let mut actions = Actions::none();
        self.last_tick = Some(now);
        self.hashrate.tick(now);
        self.workers.tick(now);
        let due = self
            .last_vardiff_run
            .is_none_or(|t| now.saturating_duration_since(t) >= self.config.vardiff_period);
        if self.config.vardiff && due {
            self.last_vardiff_run = Some(now);
            let cap = self.config.cap_target_at_network;
            for conn in self.connections.values_mut() {
                let id = conn.ctx.id;
                for (&channel_id, ch) in conn.standard.iter_mut() {
                    run_vardiff(id, channel_id, ch, now, cap, &mut actions);
                }
                for (&channel_id, ch) in conn.extended.iter_mut() {
                    run_vardiff(id, channel_id, ch, now, cap, &mut actions);
                }
            }
        }
        for (hash, attempts, resolution) in self.unconfirmed.on_tick(now) {
            match resolution {
                Resolution::Resubmit(solution, trigger) => {
                    self.keep(BlockEvent::Submitted {
                        hash,
                        attempt: attempts,
                        trigger,
                    });
                    actions.push(submit_solution(solution));
                }
                Resolution::Done => self.keep(BlockEvent::Abandoned { hash, attempts }),
            }
        }
        let stats = self.stats();
        self.emit(MiningEvent::Stats(stats));
        if self.event_sink.is_some() && self.workers.len() > 0 {
            let workers = self.workers.snapshot();
            self.emit(MiningEvent::Workers(workers));
        }
        actions
    }

    fn at_channel_limit(&self, id: ConnectionId) -> bool {
        self.connections
            .get(&id)
            .is_some_and(|c| c.channel_count() >= self.config.max_channels_per_connection)
    }

    fn channel_count(&self) -> usize {
        self.connections
            .values()
            .map(Connection::channel_count)
            .sum()
    }

    fn emit(&mut self, event: MiningEvent) {
        if let Some(sink) = self.event_sink.as_mut() {
            sink(event);
        }
    }

    /// Hands a block event to the keeper, synchronously, then logs it.
    fn keep(&mut self, event: BlockEvent<'_>) {
        if let Some(k) = self.keeper.as_mut() {
            k.on_block_event(&event);
        }
        keeper::log_event(&event);
    }

    /// The server's coinbase output: the whole `coinbase_tx_value_remaining` to the payout.
    fn reward_outputs(&self, value_sat: u64) -> Vec<TxOut> {
        vec![TxOut {
            value: Amount::from_sat(value_sat),
            script_pubkey: self.config.coinbase_output_script.clone(),
        }]
    }

    /// Applies the configured difficulty floor to a client's maximum target.
    fn clamp_max_target(&self, max_target: Target) -> Target {
        match self
            .config
            .min_share_difficulty
            .and_then(share_math::difficulty_to_target)
        {
            Some(floor) => max_target.min(floor),
            None => max_target,
        }
    }

    /// The connection's state, created if the service reported a message before
    /// `on_connection_added` (never expected).
    fn connection(&mut self, ctx: ConnectionContext) -> Option<&mut Connection> {
        if !self.connections.contains_key(&ctx.id) {
            let conn = self.new_connection(ctx)?;
            self.connections.insert(ctx.id, conn);
        }
        self.connections.get_mut(&ctx.id)
    }

    /// A connection with its group channel, caught up with the current chain state.
    fn new_connection(&self, ctx: ConnectionContext) -> Option<Connection> {
        let mut group = match GroupChannel::new_for_pool(
            GROUP_CHANNEL_ID,
            usize::from(self.config.extranonce_len),
            self.config.version_rolling,
            self.config.pool_signature.clone(),
        ) {
            Ok(g) => g,
            Err(e) => {
                error!(connection = %ctx.id, error = ?e, "cannot create the group channel");
                return None;
            }
        };
        // Bootstrap: the current template as a future job activated by the current tip, then
        // the future templates still waiting for their prevhash (SRI bootstraps the group
        // channel the same way at accept time).
        if let (Some(template), Some(prev)) = (&self.chain.current_template, &self.chain.prev_hash)
        {
            let (future, snph) = as_future(template, prev);
            let outputs = self.reward_outputs(template.coinbase_tx_value_remaining);
            if let Err(e) = group.on_new_template(future, outputs) {
                warn!(connection = %ctx.id, error = ?e, "group channel: current template refused");
            } else if let Err(e) = group.on_set_new_prev_hash(snph) {
                warn!(connection = %ctx.id, error = ?e, "group channel: chain tip refused");
            }
        }
        for template in &self.chain.pending_future {
            let outputs = self.reward_outputs(template.coinbase_tx_value_remaining);
            if let Err(e) = group.on_new_template(template.clone(), outputs) {
                warn!(connection = %ctx.id, error = ?e, "group channel: future template refused");
            }
        }
        Some(Connection {
            ctx,
            requires_standard_jobs: ctx.info.flags & REQUIRES_STANDARD_JOBS != 0,
            next_channel_id: GROUP_CHANNEL_ID + 1,
            group,
            standard: BTreeMap::new(),
            extended: BTreeMap::new(),
        })
    }

    fn open_standard(
        &mut self,
        ctx: ConnectionContext,
        msg: OpenStandardMiningChannelOwned,
    ) -> Actions {
        let request_id = msg.request_id;
        if self.at_channel_limit(ctx.id) {
            return open_error(
                request_id,
                ERROR_CODE_OPEN_MINING_CHANNEL_CHANNEL_CAPACITY_EXHAUSTED,
            );
        }
        let prefix = match self.allocator.allocate_standard() {
            Ok(p) => p,
            Err(e) => return open_error(request_id, allocation_error_code(&e)),
        };
        let max_target = self.clamp_max_target(Target::from_le_bytes(msg.max_target.to_array()));
        let config = self.config.clone();
        let outputs_for = |v: u64| self.reward_outputs(v);
        let current = self.current_job_source();
        let pending: Vec<NewTemplateOwned> = self.chain.pending_future.iter().cloned().collect();
        let pending_outputs: Vec<Vec<TxOut>> = pending
            .iter()
            .map(|t| outputs_for(t.coinbase_tx_value_remaining))
            .collect();
        let current_outputs = current
            .as_ref()
            .map(|(t, _)| outputs_for(t.coinbase_tx_value_remaining));
        let last_tick = self.last_tick;
        let network = self.network_target();
        let Some(conn) = self.connection(ctx) else {
            return open_error(request_id, ERROR_CODE_INTERNAL);
        };
        let Some(channel_id) = conn.allocate_channel_id() else {
            return open_error(
                request_id,
                ERROR_CODE_OPEN_MINING_CHANNEL_CHANNEL_CAPACITY_EXHAUSTED,
            );
        };
        let mut channel = match StandardChannel::new_for_pool(
            channel_id,
            msg.user_identity.as_utf8_or_hex(),
            prefix,
            max_target,
            msg.nominal_hash_rate,
            config.share_batch_size,
            config.shares_per_minute,
            config.pool_signature.clone(),
            config.max_past_jobs,
        ) {
            Ok(c) => c,
            Err(
                StandardChannelError::OpenChannelInvalidNominalHashrate(code)
                | StandardChannelError::OpenChannelInvalidMaxTarget(code),
            ) => return open_error(request_id, code),
            Err(e) => {
                error!(connection = %ctx.id, error = ?e, "cannot create a standard channel");
                return open_error(request_id, ERROR_CODE_INTERNAL);
            }
        };
        if let Some(network) = network.filter(|_| config.cap_target_at_network) {
            cap_at_network(&mut channel, network);
        }
        let prefix_bytes = channel.get_extranonce_prefix().to_vec();
        let Ok(extranonce_prefix) = B032Owned::try_from(prefix_bytes.clone()) else {
            return open_error(request_id, ERROR_CODE_INTERNAL);
        };
        let mut actions = Actions::reply(Sv2Message::Mining(
            MiningOwned::OpenStandardMiningChannelSuccess(OpenStandardMiningChannelSuccessOwned {
                request_id,
                channel_id,
                target: U256Owned::from(channel.get_target().to_le_bytes()),
                extranonce_prefix,
                group_channel_id: GROUP_CHANNEL_ID,
            }),
        ));
        // The channel's first job: the current template as a future job, then the tip.
        if let (Some((template, snph)), Some(outputs)) = (current, current_outputs) {
            let template_id = template.template_id;
            match channel.on_new_template(template, outputs) {
                Ok(()) => {
                    if let Some(job) = channel
                        .get_future_job_id_from_template_id(template_id)
                        .and_then(|id| channel.get_future_job(id))
                    {
                        let job_msg = job.get_job_message().clone();
                        let job_id = job_msg.job_id;
                        actions.push(Action::Reply(Sv2Message::Mining(
                            MiningOwned::NewMiningJob(job_msg),
                        )));
                        let mining_snph = mining_prev_hash(channel_id, job_id, &snph);
                        match channel.on_set_new_prev_hash(snph) {
                            Ok(()) => actions.push(Action::Reply(mining_snph)),
                            Err(e) => warn!(channel_id, error = ?e, "chain tip refused"),
                        }
                    }
                }
                Err(e) => warn!(channel_id, error = ?e, "current template refused"),
            }
        }
        // Future templates still waiting for their prevhash.
        if conn.requires_standard_jobs {
            for (template, outputs) in pending.into_iter().zip(pending_outputs) {
                let template_id = template.template_id;
                if let Err(e) = channel.on_new_template(template, outputs) {
                    warn!(channel_id, error = ?e, "future template refused");
                    continue;
                }
                if let Some(job) = channel
                    .get_future_job_id_from_template_id(template_id)
                    .and_then(|id| channel.get_future_job(id))
                {
                    actions.push(Action::Reply(Sv2Message::Mining(
                        MiningOwned::NewMiningJob(job.get_job_message().clone()),
                    )));
                }
            }
        } else {
            let was_empty = conn.group.is_empty();
            for template in &pending {
                let Some(job) = conn
                    .group
                    .get_future_job_id_from_template_id(template.template_id)
                    .and_then(|id| conn.group.get_future_job(id))
                    .cloned()
                else {
                    continue;
                };
                if was_empty {
                    actions.push(Action::Reply(new_extended_job(
                        job.get_job_message().clone(),
                    )));
                }
                if let Err(e) = channel.on_group_channel_job(job) {
                    warn!(channel_id, error = ?e, "group future job refused");
                }
            }
            if let Err(e) = conn.group.add_channel_id(channel_id, prefix_bytes.len()) {
                error!(channel_id, error = ?e, "cannot add the channel to its group");
            }
        }
        info!(
            connection = %ctx.id,
            channel_id,
            user = %channel.get_user_identity(),
            nominal_hash_rate = msg.nominal_hash_rate,
            "standard channel opened"
        );
        conn.standard.insert(
            channel_id,
            Channel {
                inner: channel,
                vardiff: ClassicVardiff::new(last_tick, config.vardiff_min_hashrate),
            },
        );
        actions
    }

    fn open_extended(
        &mut self,
        ctx: ConnectionContext,
        msg: OpenExtendedMiningChannelOwned,
    ) -> Actions {
        let request_id = msg.request_id;
        if ctx.info.flags & REQUIRES_STANDARD_JOBS != 0 {
            return open_error(
                request_id,
                ERROR_CODE_OPEN_MINING_CHANNEL_EXTENDED_CHANNELS_NOT_SUPPORTED_FOR_STANDARD_JOBS,
            );
        }
        if self.at_channel_limit(ctx.id) {
            return open_error(
                request_id,
                ERROR_CODE_OPEN_MINING_CHANNEL_CHANNEL_CAPACITY_EXHAUSTED,
            );
        }
        let prefix = match self
            .allocator
            .allocate_extended(usize::from(msg.min_extranonce_size))
        {
            Ok(p) => p,
            Err(e) => return open_error(request_id, allocation_error_code(&e)),
        };
        let rollable = u16::from(self.allocator.rollable_extranonce_size());
        let max_target = self.clamp_max_target(Target::from_le_bytes(msg.max_target.to_array()));
        let config = self.config.clone();
        let current = self.current_job_source();
        let current_outputs = current
            .as_ref()
            .map(|(t, _)| self.reward_outputs(t.coinbase_tx_value_remaining));
        let pending: Vec<u64> = self
            .chain
            .pending_future
            .iter()
            .map(|t| t.template_id)
            .collect();
        let last_tick = self.last_tick;
        let network = self.network_target();
        let Some(conn) = self.connection(ctx) else {
            return open_error(request_id, ERROR_CODE_INTERNAL);
        };
        let Some(channel_id) = conn.allocate_channel_id() else {
            return open_error(
                request_id,
                ERROR_CODE_OPEN_MINING_CHANNEL_CHANNEL_CAPACITY_EXHAUSTED,
            );
        };
        let mut channel = match ExtendedChannel::new_for_pool(
            channel_id,
            msg.user_identity.as_utf8_or_hex(),
            prefix,
            max_target,
            msg.nominal_hash_rate,
            config.version_rolling,
            rollable,
            config.share_batch_size,
            config.shares_per_minute,
            config.pool_signature.clone(),
            config.max_past_jobs,
        ) {
            Ok(c) => c,
            Err(
                ExtendedChannelError::OpenChannelInvalidNominalHashrate(code)
                | ExtendedChannelError::OpenChannelInvalidMaxTarget(code)
                | ExtendedChannelError::RequestedMinExtranonceSizeTooLarge(code),
            ) => return open_error(request_id, code),
            Err(e) => {
                error!(connection = %ctx.id, error = ?e, "cannot create an extended channel");
                return open_error(request_id, ERROR_CODE_INTERNAL);
            }
        };
        if let Some(network) = network.filter(|_| config.cap_target_at_network) {
            cap_at_network(&mut channel, network);
        }
        let Ok(extranonce_prefix) = B032Owned::try_from(channel.get_extranonce_prefix().to_vec())
        else {
            return open_error(request_id, ERROR_CODE_INTERNAL);
        };
        let mut actions = Actions::reply(Sv2Message::Mining(
            MiningOwned::OpenExtendedMiningChannelSuccess(OpenExtendedMiningChannelSuccessOwned {
                request_id,
                channel_id,
                target: U256Owned::from(channel.get_target().to_le_bytes()),
                extranonce_size: channel.get_rollable_extranonce_size(),
                extranonce_prefix,
                group_channel_id: GROUP_CHANNEL_ID,
            }),
        ));
        if let (Some((template, snph)), Some(outputs)) = (current, current_outputs) {
            let template_id = template.template_id;
            match channel.on_new_template(template, outputs) {
                Ok(()) => {
                    if let Some(job) = channel
                        .get_future_job_id_from_template_id(template_id)
                        .and_then(|id| channel.get_future_job(id))
                    {
                        let job_msg = job.get_job_message().clone();
                        let job_id = job_msg.job_id;
                        actions.push(Action::Reply(new_extended_job(job_msg)));
                        let mining_snph = mining_prev_hash(channel_id, job_id, &snph);
                        match channel.on_set_new_prev_hash(snph) {
                            Ok(()) => actions.push(Action::Reply(mining_snph)),
                            Err(e) => warn!(channel_id, error = ?e, "chain tip refused"),
                        }
                    }
                }
                Err(e) => warn!(channel_id, error = ?e, "current template refused"),
            }
        }
        let was_empty = conn.group.is_empty();
        for template_id in pending {
            let Some(job) = conn
                .group
                .get_future_job_id_from_template_id(template_id)
                .and_then(|id| conn.group.get_future_job(id))
                .cloned()
            else {
                continue;
            };
            if was_empty {
                actions.push(Action::Reply(new_extended_job(
                    job.get_job_message().clone(),
                )));
            }
            if let Err(e) = channel.on_group_channel_job(job) {
                warn!(channel_id, error = ?e, "group future job refused");
            }
        }
        if let Err(e) = conn
            .group
            .add_channel_id(channel_id, channel.get_full_extranonce_size())
        {
            error!(channel_id, error = ?e, "cannot add the channel to its group");
        }
        info!(
            connection = %ctx.id,
            channel_id,
            user = %channel.get_user_identity(),
            nominal_hash_rate = msg.nominal_hash_rate,
            extranonce_size = rollable,
            "extended channel opened"
        );
        conn.extended.insert(
            channel_id,
            Channel {
                inner: channel,
                vardiff: ClassicVardiff::new(last_tick, config.vardiff_min_hashrate),
            },
        );
        actions
    }

    /// The target of the current chain tip's `nBits`, if a tip is known.
    fn network_target(&self) -> Option<Target> {
        self.chain
            .prev_hash
            .as_ref()
            .map(|p| share_math::nbits_to_target(p.n_bits))
    }

    /// The current template re-flagged as future plus a Template Distribution
    /// `SetNewPrevHash` activating it, when both a template and a tip are known.
    fn current_job_source(&self) -> Option<(NewTemplateOwned, TdSetNewPrevHash)> {
        let template = self.chain.current_template.as_ref()?;
        let prev = self.chain.prev_hash.as_ref()?;
        Some(as_future(template, prev))
    }

    fn submit_standard(
        &mut self,
        ctx: ConnectionContext,
        share: SubmitSharesStandardOwned,
    ) -> Actions {
        let (channel_id, seq) = (share.channel_id, share.sequence_number);
        let header = HeaderParts {
            version: share.version,
            ntime: share.ntime,
            nonce: share.nonce,
        };
        let version_rolling = self.config.version_rolling;
        let ch = self
            .connections
            .get_mut(&ctx.id)
            .and_then(|c| c.standard.get_mut(&channel_id));
        let outcome = match ch {
            Some(ch) => {
                let job_id = share.job_id;
                pre_validate(ch, version_rolling, job_id, header.version).map(|work_before| {
                    let result = ch.inner.validate_share(share);
                    ShareOutcome::from_channel(&ch.inner, job_id, work_before, result)
                })
            }
            None => Err(ERROR_CODE_SUBMIT_SHARES_INVALID_CHANNEL_ID),
        };
        self.share_outcome(ctx, channel_id, seq, header, outcome, None)
    }

    fn submit_extended(
        &mut self,
        ctx: ConnectionContext,
        share: SubmitSharesExtendedOwned,
        worker: Option<&str>,
    ) -> Actions {
        let (channel_id, seq) = (share.channel_id, share.sequence_number);
        let header = HeaderParts {
            version: share.version,
            ntime: share.ntime,
            nonce: share.nonce,
        };
        let version_rolling = self.config.version_rolling;
        let ch = self
            .connections
            .get_mut(&ctx.id)
            .and_then(|c| c.extended.get_mut(&channel_id));
        let outcome = match ch {
            Some(ch) => {
                let job_id = share.job_id;
                pre_validate(ch, version_rolling, job_id, header.version).map(|work_before| {
                    let result = ch.inner.validate_share(share);
                    ShareOutcome::from_channel(&ch.inner, job_id, work_before, result)
                })
            }
            None => Err(ERROR_CODE_SUBMIT_SHARES_INVALID_CHANNEL_ID),
        };
        self.share_outcome(ctx, channel_id, seq, header, outcome, worker)
    }

    /// Finishes a share: a spec error code from the checks before validation, or the outcome
    /// of SRI's validation.
    fn share_outcome(
        &mut self,
        ctx: ConnectionContext,
        channel_id: u32,
        seq: u32,
        header: HeaderParts,
        outcome: Result<ShareOutcome, &'static str>,
        worker: Option<&str>,
    ) -> Actions {
        match outcome {
            Ok(outcome) => {
                if let ShareOutcome::Accepted { difficulty, .. }
                | ShareOutcome::Block { difficulty, .. } = outcome
                {
                    self.count_worker(ctx.id, channel_id, worker, difficulty);
                }
                self.finish_share(ctx, channel_id, seq, header, outcome, worker)
            }
            Err(code) => self.reject(channel_id, seq, code),
        }
    }

    /// Counts an accepted share for `worker`, else for the channel's `user_identity`.
    fn count_worker(
        &mut self,
        conn: ConnectionId,
        channel_id: u32,
        worker: Option<&str>,
        difficulty: f64,
    ) {
        let Self {
            connections,
            workers,
            ..
        } = self;
        let name = match worker {
            Some(w) => w,
            None => match connections
                .get(&conn)
                .and_then(|c| c.user_identity(channel_id))
            {
                Some(n) => n,
                None => return,
            },
        };
        workers.add(name, difficulty);
    }

    fn reject(&mut self, channel_id: u32, sequence_number: u32, code: &str) -> Actions {
        self.shares_rejected = self.shares_rejected.saturating_add(1);
        debug!(
            channel_id,
            sequence_number,
            error_code = code,
            "share rejected"
        );
        str0255(code)
            .map(|error_code| {
                Actions::reply(Sv2Message::Mining(MiningOwned::SubmitSharesError(
                    SubmitSharesErrorOwned {
                        channel_id,
                        sequence_number,
                        error_code,
                    },
                )))
            })
            .unwrap_or_default()
    }

    fn finish_share(
        &mut self,
        ctx: ConnectionContext,
        channel_id: u32,
        seq: u32,
        header: HeaderParts,
        outcome: ShareOutcome,
        worker: Option<&str>,
    ) -> Actions {
        match outcome {
            ShareOutcome::Accepted { difficulty, ack } => {
                self.shares_accepted = self.shares_accepted.saturating_add(1);
                self.hashrate.add(difficulty);
                ack.map(|s| Actions::reply(submit_success(channel_id, s)))
                    .unwrap_or_default()
            }
            ShareOutcome::Block {
                difficulty,
                ack,
                share_hash,
                template_id,
                coinbase,
                tip,
                job,
            } => {
                self.shares_accepted = self.shares_accepted.saturating_add(1);
                self.hashrate.add(difficulty);
                let mut actions = Actions::none();
                let parent = tip.map(|(p, _)| p);
                let redundant = parent.is_some_and(|p| {
                    self.solved_parents
                        .iter()
                        .any(|(q, n)| *q == p && *n >= MAX_BLOCKS_PER_PARENT)
                });
                match template_id {
                    Some(_) if redundant => {
                        debug!(
                            connection = %ctx.id,
                            channel_id,
                            hash = %BlockHash::from_byte_array(share_hash),
                            "another solution on a parent this server already solved {MAX_BLOCKS_PER_PARENT} times: a share, not another block"
                        );
                    }
                    Some(template_id) => {
                        if let Some(p) = parent {
                            match self.solved_parents.iter_mut().find(|(q, _)| *q == p) {
                                Some((_, n)) => *n += 1,
                                None => self.solved_parents.push_back((p, 1)),
                            }
                            while self.solved_parents.len() > SOLVED_PARENTS_KEPT {
                                self.solved_parents.pop_front();
                            }
                        }
                        let solution = coinbase.clone().try_into().ok().map(|coinbase_tx| {
                            SubmitSolutionOwned {
                                template_id,
                                version: header.version,
                                header_timestamp: header.ntime,
                                header_nonce: header.nonce,
                                coinbase_tx,
                            }
                        });
                        let user_identity = worker
                            .or_else(|| {
                                self.connections
                                    .get(&ctx.id)
                                    .and_then(|c| c.user_identity(channel_id))
                            })
                            .unwrap_or_default()
                            .to_owned();
                        let found = self.record_block(
                            ctx.id,
                            channel_id,
                            user_identity,
                            header,
                            job,
                            template_id,
                            share_hash,
                            coinbase,
                            tip,
                        );
                        // The keeper first: the block is kept before anything goes out.
                        if let Some(found) = &found {
                            self.keep(BlockEvent::Found(found));
                        }
                        let hash = BlockHash::from_byte_array(share_hash);
                        match solution {
                            Some(solution) => {
                                self.keep(BlockEvent::Submitted {
                                    hash,
                                    attempt: 1,
                                    trigger: SubmitTrigger::Found,
                                });
                                let height = found.as_ref().and_then(|f| f.height);
                                let pushed_out = self.unconfirmed.insert(
                                    hash,
                                    height,
                                    solution.clone(),
                                    self.last_tick,
                                );
                                for (hash, attempts) in pushed_out {
                                    self.keep(BlockEvent::Abandoned { hash, attempts });
                                }
                                actions.push(submit_solution(solution));
                            }
                            None => error!(template_id, "coinbase too large for SubmitSolution"),
                        }
                        if let Some(found) = found {
                            let needs_transactions = found.block.is_none();
                            self.emit(MiningEvent::BlockFound(found));
                            if needs_transactions {
                                actions.extend(self.transactions_for_found(template_id));
                            }
                        }
                    }
                    None => {}
                }
                actions.push(Action::Reply(submit_success(channel_id, ack)));
                actions
            }
            ShareOutcome::Rejected(code) => self.reject(channel_id, seq, code),
            ShareOutcome::BudgetExhausted => {
                // channels_sv2: the dedup cache is full; the channel must be closed.
                warn!(connection = %ctx.id, channel_id, "share dedup budget exhausted; closing the channel");
                self.shares_rejected = self.shares_rejected.saturating_add(1);
                if let Some(conn) = self.connections.get_mut(&ctx.id) {
                    conn.remove_channel(channel_id);
                }
                str0255("share-budget-exhausted")
                    .map(|reason_code| {
                        Actions::reply(Sv2Message::Mining(MiningOwned::CloseChannel(
                            CloseChannelOwned {
                                channel_id,
                                reason_code,
                            },
                        )))
                    })
                    .unwrap_or_default()
            }
        }
    }

    /// Keeps a found block (assembled if its template is empty) and counts it.
    #[allow(clippy::too_many_arguments)]
    fn record_block(
        &mut self,
        connection: ConnectionId,
        channel_id: u32,
        user_identity: String,
        parts: HeaderParts,
        job: Option<JobInfo>,
        template_id: u64,
        share_hash: [u8; 32],
        coinbase: Vec<u8>,
        tip: Option<([u8; 32], u32)>,
    ) -> Option<FoundBlock> {
        self.blocks_found = self.blocks_found.saturating_add(1);
        let hash = BlockHash::from_byte_array(share_hash);
        let (Some(job), Some((prev_hash, nbits))) = (job, tip) else {
            error!(%hash, "block found but its job or chain tip is gone; not kept");
            return None;
        };
        let coinbase_txid = match deserialize::<Transaction>(&coinbase) {
            Ok(tx) => tx.compute_txid().to_byte_array(),
            Err(e) => {
                error!(%hash, error = %e, "block found with an unparsable coinbase; not kept");
                return None;
            }
        };
        let merkle_root = share_math::merkle_root_from_txid(coinbase_txid, &job.merkle_path);
        let header = share_math::header_bytes(
            parts.version,
            &prev_hash,
            &merkle_root,
            parts.ntime,
            nbits,
            parts.nonce,
        );
        if share_math::header_hash(&header) != share_hash {
            error!(%hash, "reassembled header does not hash to the share hash");
        }
        let empty = job.merkle_path.is_empty();
        let found = FoundBlock {
            hash,
            height: block::bip34_height(&job.coinbase_prefix),
            template_id,
            connection,
            channel_id,
            user_identity,
            header,
            transaction_count: empty.then_some(0),
            block: empty.then(|| block::serialize_block(&header, &coinbase, &[])),
            coinbase_tx: coinbase,
        };
        info!(
            %hash,
            height = ?found.height,
            template_id,
            connection = %connection,
            channel_id,
            "block found"
        );
        if self.config.found_blocks_kept > 0 {
            let excess =
                (self.found_blocks.len() + 1).saturating_sub(self.config.found_blocks_kept);
            self.found_blocks.drain(..excess);
            self.found_blocks.push(found.clone());
        }
        Some(found)
    }

    fn on_new_template(&mut self, template: NewTemplateOwned) -> Actions {
        self.templates_received = self.templates_received.saturating_add(1);
        info!(
            template_id = template.template_id,
            future = template.future_template,
            value_sat = template.coinbase_tx_value_remaining,
            merkle_path_len = template.merkle_path.len(),
            "NewTemplate"
        );
        if template.future_template {
            let pending = &mut self.chain.pending_future;
            pending.retain(|t| t.template_id != template.template_id);
            pending.push_back(template.clone());
            while pending.len() > MAX_PENDING_FUTURE_TEMPLATES {
                pending.pop_front();
            }
        } else if self.chain.prev_hash.is_some() {
            self.chain.current_template = Some(template.clone());
        } else {
            warn!(
                template_id = template.template_id,
                "non-future template before any SetNewPrevHash; ignored"
            );
            return Actions::none();
        }
        let outputs = self.reward_outputs(template.coinbase_tx_value_remaining);
        let mut actions = Actions::none();
        for conn in self.connections.values_mut() {
            let id = conn.ctx.id;
            let group_job = match conn
                .group
                .on_new_template(template.clone(), outputs.clone())
            {
                Ok(()) => {
                    let job = if template.future_template {
                        conn.group
                            .get_future_job_id_from_template_id(template.template_id)
                            .and_then(|j| conn.group.get_future_job(j))
                    } else {
                        conn.group.get_active_job()
                    };
                    job.cloned()
                }
                Err(e) => {
                    warn!(connection = %id, error = ?e, "group channel refused the template");
                    None
                }
            };
            if let Some(job) = &group_job {
                if !conn.requires_standard_jobs && !conn.group.is_empty() {
                    actions.push(Action::SendTo(
                        id,
                        new_extended_job(job.get_job_message().clone()),
                    ));
                }
            }
            for (&channel_id, ch) in conn.standard.iter_mut() {
                if conn.requires_standard_jobs {
                    if let Err(e) = ch.inner.on_new_template(template.clone(), outputs.clone()) {
                        warn!(connection = %id, channel_id, error = ?e, "template refused");
                        continue;
                    }
                    let job = if template.future_template {
                        ch.inner
                            .get_future_job_id_from_template_id(template.template_id)
                            .and_then(|j| ch.inner.get_future_job(j))
                    } else {
                        ch.inner.get_active_job()
                    };
                    if let Some(job) = job {
                        actions.push(Action::SendTo(
                            id,
                            Sv2Message::Mining(MiningOwned::NewMiningJob(
                                job.get_job_message().clone(),
                            )),
                        ));
                    }
                } else if let Some(job) = &group_job {
                    if let Err(e) = ch.inner.on_group_channel_job(job.clone()) {
                        warn!(connection = %id, channel_id, error = ?e, "group job refused");
                    }
                }
            }
            if let Some(job) = &group_job {
                for (&channel_id, ch) in conn.extended.iter_mut() {
                    if let Err(e) = ch.inner.on_group_channel_job(job.clone()) {
                        warn!(connection = %id, channel_id, error = ?e, "group job refused");
                    }
                }
            }
        }
        actions
    }

    fn on_set_new_prev_hash(&mut self, snph: TdSetNewPrevHash) -> Actions {
        info!(
            template_id = snph.template_id,
            prev_hash = %BlockHash::from_byte_array(snph.prev_hash.to_array()),
            nbits = format_args!("{:#010x}", snph.n_bits),
            "SetNewPrevHash"
        );
        let pending = &mut self.chain.pending_future;
        if pending.is_empty() {
            warn!(
                template_id = snph.template_id,
                "SetNewPrevHash without a preceding future template; keeping the tip only"
            );
            self.chain.current_template = None;
        } else if let Some(pos) = pending
            .iter()
            .position(|t| t.template_id == snph.template_id)
        {
            self.chain.current_template = pending.remove(pos);
            pending.clear();
        } else {
            error!(
                template_id = snph.template_id,
                "SetNewPrevHash for an unknown future template; ignored"
            );
            return Actions::none();
        }
        self.chain.prev_hash = Some(snph.clone());
        let mut actions = self.on_source_tip(snph.prev_hash.to_array());
        let network = share_math::nbits_to_target(snph.n_bits);
        let cap = self.config.cap_target_at_network;
        for conn in self.connections.values_mut() {
            let id = conn.ctx.id;
            // Before the jobs of the new tip: no channel harder than its network target.
            for (&channel_id, ch) in conn.standard.iter_mut().filter(|_| cap) {
                if let Some(t) = cap_at_network(&mut ch.inner, network) {
                    actions.push(Action::SendTo(id, set_target(channel_id, t)));
                }
            }
            for (&channel_id, ch) in conn.extended.iter_mut().filter(|_| cap) {
                if let Some(t) = cap_at_network(&mut ch.inner, network) {
                    actions.push(Action::SendTo(id, set_target(channel_id, t)));
                }
            }
            match conn.group.on_set_new_prev_hash(snph.clone()) {
                Ok(()) => {
                    if !conn.requires_standard_jobs && !conn.group.is_empty() {
                        if let Some(job) = conn.group.get_active_job() {
                            actions.push(Action::SendTo(
                                id,
                                mining_prev_hash(GROUP_CHANNEL_ID, job.get_job_id(), &snph),
                            ));
                        }
                    }
                }
                Err(e) => warn!(connection = %id, error = ?e, "group channel refused the tip"),
            }
            for (&channel_id, ch) in conn.extended.iter_mut() {
                if let Err(e) = ch.inner.on_set_new_prev_hash(snph.clone()) {
                    warn!(connection = %id, channel_id, error = ?e, "channel refused the tip");
                }
            }
            for (&channel_id, ch) in conn.standard.iter_mut() {
                if let Err(e) = ch.inner.on_set_new_prev_hash(snph.clone()) {
                    warn!(connection = %id, channel_id, error = ?e, "channel refused the tip");
                    continue;
                }
                if conn.requires_standard_jobs {
                    if let Some(job) = ch.inner.get_active_job() {
                        actions.push(Action::SendTo(
                            id,
                            mining_prev_hash(channel_id, job.get_job_id(), &snph),
                        ));
                    }
                }
            }
        }
        actions
    }

    /// The template source's tip moved to `prev_hash`: confirms, stales or resubmits the
    /// unconfirmed blocks. The tip height is the BIP34 height of the template it activates
    /// minus one.
    fn on_source_tip(&mut self, prev_hash: [u8; 32]) -> Actions {
        let mut actions = Actions::none();
        if self.unconfirmed.len() == 0 {
            return actions;
        }
        let tip_height = self
            .chain
            .current_template
            .as_ref()
            .and_then(|t| block::bip34_height(t.coinbase_prefix.as_bytes()))
            .and_then(|h| h.checked_sub(1));
        for outcome in self
            .unconfirmed
            .on_tip(prev_hash, tip_height, self.last_tick)
        {
            match outcome {
                TipOutcome::Confirmed { hash, attempts } => {
                    self.keep(BlockEvent::Confirmed { hash, attempts })
                }
                TipOutcome::Stale {
                    hash,
                    tip_height,
                    tip_hash,
                    attempts,
                } => self.keep(BlockEvent::Stale {
                    hash,
                    tip_height,
                    tip_hash,
                    attempts,
                }),
                TipOutcome::Abandoned { hash, attempts } => {
                    self.keep(BlockEvent::Abandoned { hash, attempts })
                }
                TipOutcome::Resubmit {
                    hash,
                    attempt,
                    solution,
                } => {
                    self.keep(BlockEvent::Submitted {
                        hash,
                        attempt,
                        trigger: SubmitTrigger::TipWithoutBlock,
                    });
                    actions.push(submit_solution(solution));
                }
            }
        }
        actions
    }

    /// With `request_transaction_data`: asks for the transactions of a template that has any
    /// as soon as it arrives. A template source may answer `stale-template-id` once a
    /// solution moved its tip (this crate's embedded source does), which is when a found
    /// block would otherwise ask.
    fn prefetch_transactions(&mut self, template: &NewTemplateOwned) -> Actions {
        if !self.config.request_transaction_data || template.merkle_path.is_empty() {
            return Actions::none();
        }
        let template_id = template.template_id;
        if !self.prefetching.insert(template_id) {
            return Actions::none();
        }
        while self.prefetching.len() > TEMPLATE_TRANSACTIONS_KEPT {
            self.prefetching.pop_first();
        }
        request_transaction_data(template_id)
    }

    /// A block was found on `template_id` without its transactions: completes it from the
    /// prefetched list, or (with `request_transaction_data`) asks the template source.
    fn transactions_for_found(&mut self, template_id: u64) -> Actions {
        if let Some(txs) = self.template_transactions.remove(&template_id) {
            // Known since the template came: complete it at once (taken out and put back, not
            // copied: up to a block's worth of bytes).
            self.complete_found(template_id, &txs);
            self.template_transactions.insert(template_id, txs);
            return Actions::none();
        }
        if !self.config.request_transaction_data {
            return Actions::none();
        }
        self.awaiting_transactions.insert(template_id);
        // Bounded: only blocks still in `found_blocks` can be completed.
        while self.awaiting_transactions.len() > self.config.found_blocks_kept.max(1) {
            self.awaiting_transactions.pop_first();
        }
        request_transaction_data(template_id)
    }

    fn on_transaction_data(&mut self, template_id: u64, transactions: Vec<Vec<u8>>) {
        if self.awaiting_transactions.remove(&template_id) {
            self.complete_found(template_id, &transactions);
        }
        if self.prefetching.remove(&template_id) {
            debug!(
                template_id,
                "transaction data kept for when a block is found"
            );
            self.template_transactions.insert(template_id, transactions);
            while self.template_transactions.len() > TEMPLATE_TRANSACTIONS_KEPT {
                self.template_transactions.pop_first();
            }
        }
    }

    /// Completes the found blocks of `template_id` that wait for their transactions.
    fn complete_found(&mut self, template_id: u64, transactions: &[Vec<u8>]) {
        let mut completed = Vec::new();
        for found in self.found_blocks.iter_mut() {
            if found.template_id != template_id || found.block.is_some() {
                continue;
            }
            match block::complete_with_transactions(found, transactions) {
                Ok(()) => {
                    info!(hash = %found.hash, transactions = transactions.len(), "found block assembled");
                    // Reported, not enforced: the template source judges the block too.
                    if let Some(Err(e)) = found.validate() {
                        warn!(hash = %found.hash, error = %e, "assembled block fails validation");
                    }
                    completed.push(found.clone());
                }
                Err(e) => warn!(hash = %found.hash, error = %e, "cannot assemble the found block"),
            }
        }
        for found in completed {
            self.keep(BlockEvent::Completed(&found));
            self.emit(MiningEvent::BlockCompleted(found));
        }
    }
}

/// The header fields a share chose.
#[derive(Debug, Clone, Copy)]
struct HeaderParts {
    version: u32,
    ntime: u32,
    nonce: u32,
}

/// A validation result with what bookkeeping needs, read from the channel right after.
enum ShareOutcome {
    Accepted {
        difficulty: f64,
        ack: Option<SubmitSharesSuccessOwned>,
    },
    Block {
        difficulty: f64,
        ack: SubmitSharesSuccessOwned,
        share_hash: [u8; 32],
        template_id: Option<u64>,
        coinbase: Vec<u8>,
        /// `(prev_hash, nbits)` of the channel's chain tip.
        tip: Option<([u8; 32], u32)>,
        /// The solved job (read only for blocks: it allocates).
        job: Option<JobInfo>,
    },
    Rejected(&'static str),
    BudgetExhausted,
}

impl ShareOutcome {
    fn from_channel<C: ChannelOps>(
        channel: &C,
        job_id: u32,
        work_before: f64,
        result: Result<ShareValidationResult, ShareValidationError>,
    ) -> Self {
        let accounting = channel.accounting();
        let difficulty = accounting.get_share_work_sum() - work_before;
        let ack = || SubmitSharesSuccessOwned {
            channel_id: 0,
            last_sequence_number: accounting.get_last_share_sequence_number(),
            new_submits_accepted_count: accounting.get_last_batch_accepted(),
            new_shares_sum: accounting.get_last_batch_work_sum(),
        };
        match result {
            Ok(ShareValidationResult::Valid(_)) => ShareOutcome::Accepted {
                difficulty,
                ack: accounting.should_acknowledge().then(ack),
            },
            Ok(ShareValidationResult::BlockFound(hash, template_id, coinbase)) => {
                ShareOutcome::Block {
                    difficulty,
                    ack: ack(),
                    share_hash: hash.to_byte_array(),
                    template_id,
                    coinbase,
                    tip: channel
                        .chain_tip()
                        .map(|t| (t.prev_hash().to_array(), t.nbits())),
                    job: channel.job_info(job_id),
                }
            }
            Err(
                ShareValidationError::Invalid(code)
                | ShareValidationError::Stale(code)
                | ShareValidationError::InvalidJobId(code)
                | ShareValidationError::DoesNotMeetTarget(code)
                | ShareValidationError::VersionRollingNotAllowed(code)
                | ShareValidationError::DuplicateShare(code)
                | ShareValidationError::BadExtranonceSize(code),
            ) => ShareOutcome::Rejected(code),
            Err(ShareValidationError::SeenSharesBudgetExhausted) => ShareOutcome::BudgetExhausted,
            Err(e) => {
                error!(error = ?e, "share validation failed on the server side");
                ShareOutcome::Rejected(ERROR_CODE_SUBMIT_SHARES_INVALID_SHARE)
            }
        }
    }
}

fn submit_solution(solution: SubmitSolutionOwned) -> Action {
    Action::ToSibling(SiblingMessage::Sv2(Sv2Message::TemplateDistribution(
        TemplateDistributionOwned::SubmitSolution(solution),
    )))
}

fn submit_success(channel_id: u32, mut ack: SubmitSharesSuccessOwned) -> Sv2Message {
    ack.channel_id = channel_id;
    Sv2Message::Mining(MiningOwned::SubmitSharesSuccess(ack))
}

fn run_vardiff<C: ChannelOps>(
    connection: ConnectionId,
    channel_id: u32,
    ch: &mut Channel<C>,
    now: Instant,
    cap: bool,
    actions: &mut Actions,
) {
    let hashrate = ch.inner.nominal_hashrate();
    let target = ch.inner.target();
    let spm = ch.inner.shares_per_minute();
    let Some(new_hashrate) = ch.vardiff.try_vardiff(now, hashrate, &target, spm) else {
        ch.inner.set_stable_hashrate(true);
        return;
    };
    ch.inner.set_stable_hashrate(false);
    match ch.inner.update(new_hashrate, None) {
        Ok(()) => {
            if cap {
                cap_at_tip(&mut ch.inner);
            }
            let new_target = ch.inner.target();
            debug!(%connection, channel_id, hashrate = new_hashrate, "vardiff: new target");
            if new_target != target {
                actions.push(Action::SendTo(
                    connection,
                    set_target(channel_id, new_target),
                ));
            }
        }
        Err(UpdateError::Code(code)) => {
            warn!(%connection, channel_id, hashrate = new_hashrate, error_code = code, "vardiff update refused")
        }
        Err(UpdateError::Internal(e)) => {
            warn!(%connection, channel_id, hashrate = new_hashrate, error = %e, "vardiff update refused")
        }
    }
}

/// [`cap_at_network`] with the `nBits` of the channel's own chain tip.
fn cap_at_tip<C: ChannelOps>(ch: &mut C) {
    if let Some(nbits) = ch.chain_tip().map(|t| t.nbits()) {
        cap_at_network(ch, share_math::nbits_to_target(nbits));
    }
}

fn set_target(channel_id: u32, target: Target) -> Sv2Message {
    Sv2Message::Mining(MiningOwned::SetTarget(SetTargetOwned {
        channel_id,
        maximum_target: U256Owned::from(target.to_le_bytes()),
    }))
}

fn new_extended_job(job: NewExtendedMiningJobOwned) -> Sv2Message {
    Sv2Message::Mining(MiningOwned::NewExtendedMiningJob(job))
}

fn mining_prev_hash(channel_id: u32, job_id: u32, snph: &TdSetNewPrevHash) -> Sv2Message {
    Sv2Message::Mining(MiningOwned::SetNewPrevHash(MiningSetNewPrevHash {
        channel_id,
        job_id,
        prev_hash: snph.prev_hash.clone(),
        min_ntime: snph.header_timestamp,
        nbits: snph.n_bits,
    }))
}

fn open_error(request_id: u32, code: &str) -> Actions {
    str0255(code)
        .map(|error_code| {
            Actions::reply(Sv2Message::Mining(MiningOwned::OpenMiningChannelError(
                OpenMiningChannelErrorOwned {
                    request_id,
                    error_code,
                },
            )))
        })
        .unwrap_or_default()
}

/// SRI pool's mapping of allocator errors to `OpenMiningChannel.Error` codes.
fn allocation_error_code(e: &ExtranonceAllocatorError) -> &'static str {
    match e {
        ExtranonceAllocatorError::CapacityExhausted => {
            ERROR_CODE_OPEN_MINING_CHANNEL_CHANNEL_CAPACITY_EXHAUSTED
        }
        ExtranonceAllocatorError::InvalidRollableSize => {
            ERROR_CODE_OPEN_MINING_CHANNEL_MIN_EXTRANONCE_SIZE_TOO_LARGE
        }
        _ => ERROR_CODE_INTERNAL,
    }
}

/// `template` re-flagged as a future template, and a Template Distribution `SetNewPrevHash`
/// for it from the tip `prev` — to give a new channel its first (future) job and activate it.
fn as_future(
    template: &NewTemplateOwned,
    prev: &TdSetNewPrevHash,
) -> (NewTemplateOwned, TdSetNewPrevHash) {
    let mut future = template.clone();
    future.future_template = true;
    let mut snph = prev.clone();
    snph.template_id = template.template_id;
    (future, snph)
}

impl Sv2MiningServerHandler for MiningServer {
    fn setup_support(&self) -> Option<SetupSupport> {
        Some(if self.config.version_rolling {
            SetupSupport {
                supported_flags: REQUIRES_STANDARD_JOBS | REQUIRES_VERSION_ROLLING,
                success_flags: 0,
            }
        } else {
            SetupSupport {
                supported_flags: REQUIRES_STANDARD_JOBS,
                success_flags: REQUIRES_FIXED_VERSION,
            }
        })
    }

    /// Extension `0x0002` when
    /// [`worker_hashrate_tracking`](MiningServerConfig::worker_hashrate_tracking) is on
    /// (nothing required).
    fn extension_support(&self) -> ExtensionSupport {
        if self.config.worker_hashrate_tracking {
            ExtensionSupport::supporting(ExtensionSet::from_ids(&[WORKER_HASHRATE_TRACKING]))
        } else {
            ExtensionSupport::default()
        }
    }

    async fn on_connection_added(&mut self, ctx: ConnectionContext) -> Actions {
        if !ctx.info.extensions.is_empty() {
            debug!(connection = %ctx.id, extensions = %ctx.info.extensions, "extensions negotiated");
        }
        match self.new_connection(ctx) {
            Some(conn) => {
                self.connections.insert(ctx.id, conn);
                Actions::none()
            }
            None => Actions::close(ERROR_CODE_INTERNAL),
        }
    }

    async fn on_connection_removed(
        &mut self,
        ctx: ConnectionContext,
        reason: CloseReason,
    ) -> Actions {
        if let Some(conn) = self.connections.remove(&ctx.id) {
            debug!(connection = %ctx.id, channels = conn.channel_count(), %reason, "mining connection gone");
        }
        Actions::none()
    }

    async fn handle_open_standard_mining_channel(
        &mut self,
        ctx: ConnectionContext,
        msg: OpenStandardMiningChannelOwned,
    ) -> Actions {
        self.open_standard(ctx, msg)
    }

    async fn handle_open_extended_mining_channel(
        &mut self,
        ctx: ConnectionContext,
        msg: OpenExtendedMiningChannelOwned,
    ) -> Actions {
        self.open_extended(ctx, msg)
    }

    async fn handle_update_channel(
        &mut self,
        ctx: ConnectionContext,
        msg: UpdateChannelOwned,
    ) -> Actions {
        let channel_id = msg.channel_id;
        let max_target =
            self.clamp_max_target(Target::from_le_bytes(msg.maximum_target.to_array()));
        let cap = self.config.cap_target_at_network;
        let result = match self.connections.get_mut(&ctx.id) {
            Some(conn) => {
                if let Some(ch) = conn.standard.get_mut(&channel_id) {
                    let r = ch.inner.update(msg.nominal_hash_rate, Some(max_target));
                    if cap {
                        cap_at_tip(&mut ch.inner);
                    }
                    Some((r, ch.inner.target()))
                } else if let Some(ch) = conn.extended.get_mut(&channel_id) {
                    let r = ch.inner.update(msg.nominal_hash_rate, Some(max_target));
                    if cap {
                        cap_at_tip(&mut ch.inner);
                    }
                    Some((r, ch.inner.target()))
                } else {
                    None
                }
            }
            None => None,
        };
        let error = |code: &str| {
            str0255(code)
                .map(|error_code| {
                    Actions::reply(Sv2Message::Mining(MiningOwned::UpdateChannelError(
                        UpdateChannelErrorOwned {
                            channel_id,
                            error_code,
                        },
                    )))
                })
                .unwrap_or_default()
        };
        match result {
            None => error(ERROR_CODE_UPDATE_CHANNEL_INVALID_CHANNEL_ID),
            Some((Ok(()), target)) => Actions::reply(set_target(channel_id, target)),
            Some((Err(UpdateError::Code(code)), _)) => error(code),
            Some((Err(UpdateError::Internal(e)), _)) => {
                error!(channel_id, error = %e, "UpdateChannel failed");
                error(ERROR_CODE_INTERNAL)
            }
        }
    }

    async fn handle_close_channel(
        &mut self,
        ctx: ConnectionContext,
        msg: CloseChannelOwned,
    ) -> Actions {
        if let Some(conn) = self.connections.get_mut(&ctx.id) {
            if msg.channel_id == GROUP_CHANNEL_ID {
                // Spec 5.3.9: closing a group channel closes every channel in it.
                let ids: Vec<u32> = conn
                    .standard
                    .keys()
                    .chain(conn.extended.keys())
                    .copied()
                    .collect();
                for id in ids {
                    conn.remove_channel(id);
                }
            } else if conn.remove_channel(msg.channel_id) {
                debug!(connection = %ctx.id, channel_id = msg.channel_id, "channel closed by the client");
            }
        }
        Actions::none()
    }

    async fn handle_submit_shares_standard(
        &mut self,
        ctx: ConnectionContext,
        msg: SubmitSharesStandardOwned,
    ) -> Actions {
        self.submit_standard(ctx, msg)
    }

    async fn handle_submit_shares_extended(
        &mut self,
        ctx: ConnectionContext,
        msg: SubmitSharesExtendedOwned,
    ) -> Actions {
        self.submit_extended(ctx, msg, None)
    }

    /// Extension `0x0002`: the share counts for the worker in its `user_identity` TLV; a TLV
    /// over 32 bytes or not UTF-8 rejects the share with `invalid-user-identity` (spec 3.4.3).
    /// Fields only reach here on connections that negotiated the extension.
    async fn handle_submit_shares_extended_with_tlvs(
        &mut self,
        ctx: ConnectionContext,
        msg: SubmitSharesExtendedOwned,
        tlvs: TlvFields,
    ) -> Actions {
        match tlvs.user_identity_value() {
            None => self.submit_extended(ctx, msg, None),
            Some(Ok(worker)) => self.submit_extended(ctx, msg, Some(&worker)),
            Some(Err(e)) => {
                debug!(connection = %ctx.id, error = %e, "share with an invalid user_identity TLV");
                self.reject(
                    msg.channel_id,
                    msg.sequence_number,
                    ERROR_CODE_INVALID_USER_IDENTITY,
                )
            }
        }
    }

    async fn handle_set_custom_mining_job(
        &mut self,
        ctx: ConnectionContext,
        msg: SetCustomMiningJobOwned,
    ) -> Actions {
        let _ = ctx;
        str0255(ERROR_CODE_SET_CUSTOM_MINING_JOB_JD_NOT_SUPPORTED)
            .map(|error_code| {
                Actions::reply(Sv2Message::Mining(MiningOwned::SetCustomMiningJobError(
                    SetCustomMiningJobErrorOwned {
                        channel_id: msg.channel_id,
                        request_id: msg.request_id,
                        error_code,
                    },
                )))
            })
            .unwrap_or_default()
    }

    async fn handle_sibling_message(&mut self, msg: SiblingMessage) -> Actions {
        match msg {
            SiblingMessage::Sv2(Sv2Message::TemplateDistribution(td)) => match td {
                TemplateDistributionOwned::NewTemplate(t) => {
                    let prefetch = self.prefetch_transactions(&t);
                    let mut actions = self.on_new_template(t);
                    actions.extend(prefetch);
                    actions
                }
                TemplateDistributionOwned::SetNewPrevHash(p) => self.on_set_new_prev_hash(p),
                TemplateDistributionOwned::RequestTransactionDataSuccess(s) => {
                    let txs = s
                        .transaction_list
                        .into_inner()
                        .into_iter()
                        .map(|t| t.as_bytes().to_vec())
                        .collect();
                    self.on_transaction_data(s.template_id, txs);
                    Actions::none()
                }
                TemplateDistributionOwned::RequestTransactionDataError(e) => {
                    warn!(
                        template_id = e.template_id,
                        error_code = %e.error_code.as_utf8_or_hex(),
                        "template source refused RequestTransactionData"
                    );
                    self.awaiting_transactions.remove(&e.template_id);
                    self.prefetching.remove(&e.template_id);
                    Actions::none()
                }
                other => {
                    debug!(message = ?other, "sibling Template Distribution message ignored");
                    Actions::none()
                }
            },
            other => {
                debug!(message = ?other, "sibling message ignored");
                Actions::none()
            }
        }
    }

    async fn handle_sibling_closed(&mut self) -> Actions {
        warn!("template source gone: channels keep their current jobs, no new templates");
        Actions::none()
    }

    /// The next timer (see [`MiningServer`]'s "Time"): the stats are reported every
    /// [`timer_period`](MiningServerConfig::timer_period) even with no connection, so this is
    /// `None` only for a period too long to add to an `Instant`.
    fn poll_timeout(&self) -> Option<Instant> {
        self.next_timer
    }

    /// The periodic work at `now` (see [`MiningServer`]'s "Time"); the next deadline becomes
    /// `now + timer_period`. Returns the `SetTarget`s of vardiff and any resubmitted
    /// `SubmitSolution` (to the sibling).
    async fn on_timer(&mut self, now: Instant) -> Actions {
        self.next_timer = now.checked_add(self.config.timer_period);
        self.run_timer(now)
    }
}

/// The checks before SRI's validation, shared by standard and extended shares: counts the
/// submission for vardiff and refuses a changed version when version rolling is off. Returns
/// the channel's share work sum before this share.
fn pre_validate<C: ChannelOps>(
    ch: &mut Channel<C>,
    version_rolling: bool,
    job_id: u32,
    version: u32,
) -> Result<f64, &'static str> {
    ch.vardiff.add_share();
    if !version_rolling && ch.inner.job_version(job_id).is_some_and(|v| v != version) {
        return Err(ERROR_CODE_VERSION_ROLLING_NOT_ALLOWED);
    }
    Ok(ch.inner.accounting().get_share_work_sum())
}

/// `RequestTransactionData` for `template_id`, to the template source (the sibling).
fn request_transaction_data(template_id: u64) -> Actions {
    Action::ToSibling(SiblingMessage::Sv2(Sv2Message::TemplateDistribution(
        TemplateDistributionOwned::RequestTransactionData(RequestTransactionDataOwned {
            template_id,
        }),
    )))
    .into()
}
