//! [`JobDeclarationServer`]: the Job Declarator Server handler (spec 6.1, 6.4).

use crate::coinbase::{self, DeclaredCoinbase};
use crate::config::JobDeclarationServerConfig;
use crate::node::{ChainTip, JdNode};
use crate::reject::Rejection;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;
use tower_stratum_core::handler::{SetupSupport, Sv2JobDeclarationServerHandler};
use tower_stratum_core::message::JobDeclarationOwned;
use tower_stratum_core::share_math;
use tower_stratum_core::stratum_core::bitcoin::block::{Header, Version};
use tower_stratum_core::stratum_core::bitcoin::consensus::{deserialize, serialize};
use tower_stratum_core::stratum_core::bitcoin::hashes::Hash;
use tower_stratum_core::stratum_core::bitcoin::{
    Block, BlockHash, CompactTarget, Transaction, TxMerkleNode, Weight, Wtxid,
};
use tower_stratum_core::stratum_core::job_declaration_sv2::{
    AllocateMiningJobTokenOwned, AllocateMiningJobTokenSuccessOwned, DeclareMiningJobOwned,
    DeclareMiningJobSuccessOwned, ProvideMissingTransactionsOwned,
    ProvideMissingTransactionsSuccessOwned, PushSolutionOwned,
};
use tower_stratum_core::{
    Action, Actions, CloseReason, ConnectionContext, ConnectionId, Sv2Message,
};
use tracing::{debug, info, warn};

/// Consensus block weight limit (BIP141), in weight units.
const MAX_BLOCK_WEIGHT: u64 = Weight::MAX_BLOCK.to_wu();

/// The most transactions a declared job can list: a block full of the smallest possible
/// transactions (60 bytes, 240 WU). Longer lists are refused with `invalid-job` before any
/// look-up.
pub const MAX_DECLARED_TRANSACTIONS: usize =
    (MAX_BLOCK_WEIGHT / Weight::MIN_TRANSACTION.to_wu()) as usize;

/// `SetupConnection.flags` bit 0 of the Job Declaration Protocol (spec 6.4.1): the JDC agrees
/// to reveal the template's txdata via `DeclareMiningJob` and `ProvideMissingTransactions`.
pub const DECLARE_TX_DATA: u32 = 1;

/// Why a [`JobDeclarationServer`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The required outputs do not fit `AllocateMiningJobToken.Success.coinbase_outputs`
    /// (`B0_64K`).
    #[error("the required coinbase outputs take {size} bytes, more than 65535")]
    CoinbaseOutputsTooLarge {
        /// Their consensus serialization, in bytes.
        size: usize,
    },
    /// A limit that must be at least 1 is 0.
    #[error("{0} must be at least 1")]
    ZeroLimit(&'static str),
}

/// What a deadline in the timer table belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Deadline {
    /// An allocated token expires.
    Token(u64),
    /// A declaration stops waiting for `ProvideMissingTransactions.Success`.
    Pending(ConnectionId, u32),
}

#[derive(Debug)]
struct TokenEntry {
    connection: ConnectionId,
    /// `None` until the first `on_timer` after allocation stamps it.
    expires_at: Option<Instant>,
}

/// A declaration whose transactions are not all known yet.
#[derive(Debug)]
struct PartialJob {
    request_id: u32,
    version: u32,
    coinbase_tx_prefix: Vec<u8>,
    coinbase_tx_suffix: Vec<u8>,
    coinbase: DeclaredCoinbase,
    tip: ChainTip,
    wtxids: Vec<Wtxid>,
    transactions: Vec<Option<Arc<Transaction>>>,
}

#[derive(Debug)]
struct Pending {
    job: PartialJob,
    /// Positions asked for in `ProvideMissingTransactions`, in that order.
    missing: Vec<u16>,
    deadline: Option<Instant>,
}

/// A job the server accepted with `DeclareMiningJob.Success`, kept for `PushSolution`.
#[derive(Debug, Clone)]
pub struct DeclaredJob {
    token: u64,
    sequence: u64,
    request_id: u32,
    version: u32,
    coinbase_tx_prefix: Vec<u8>,
    coinbase_tx_suffix: Vec<u8>,
    extranonce_len: usize,
    prev_hash: BlockHash,
    height: u64,
    transactions: Vec<Arc<Transaction>>,
    merkle_path: Vec<[u8; 32]>,
}

impl DeclaredJob {
    /// The `new_mining_job_token` sent in `DeclareMiningJob.Success` (8 bytes, a little-endian
    /// counter; spec 6.4.5: the token the JDC uses in `SetCustomMiningJob`).
    pub fn token(&self) -> [u8; 8] {
        self.token.to_le_bytes()
    }
    /// The `request_id` of the `DeclareMiningJob`.
    pub fn request_id(&self) -> u32 {
        self.request_id
    }
    /// The declared header `version`.
    pub fn version(&self) -> u32 {
        self.version
    }
    /// The chain tip the job builds on (the node's tip when it was accepted).
    pub fn prev_hash(&self) -> BlockHash {
        self.prev_hash
    }
    /// The block height (the coinbase's BIP34 height).
    pub fn height(&self) -> u64 {
        self.height
    }
    /// The extranonce length the coinbase leaves room for, in bytes.
    pub fn extranonce_len(&self) -> usize {
        self.extranonce_len
    }
    /// The declared transactions, in block order (the coinbase excluded).
    pub fn transactions(&self) -> &[Arc<Transaction>] {
        &self.transactions
    }
}

#[derive(Debug, Default)]
struct Connection {
    /// Unused tokens, oldest first.
    tokens: VecDeque<u64>,
    pending: HashMap<u32, Pending>,
    /// Accepted jobs, oldest first.
    jobs: VecDeque<DeclaredJob>,
}

/// A Job Declarator Server (spec 6.1) in Full-Template mode (spec 6.3.2), as a
/// [`Sv2JobDeclarationServerHandler`], over a [`JdNode`] for the mempool, the chain tip and
/// block submission.
///
/// # Messages
/// - `AllocateMiningJobToken` (spec 6.4.2) → `AllocateMiningJobToken.Success` (6.4.3) with a
///   fresh 8-byte `mining_job_token` bound to the connection, valid for one
///   `DeclareMiningJob` within [`token_lifetime`](JobDeclarationServerConfig::token_lifetime),
///   and `coinbase_outputs` = the pool payout output then the additional outputs, 0 sats each
///   ([`JobDeclarationServerConfig::coinbase_outputs`]). Past
///   [`max_tokens_per_connection`](JobDeclarationServerConfig::max_tokens_per_connection)
///   the connection's oldest token is retired; past
///   [`max_tokens`](JobDeclarationServerConfig::max_tokens) the connection is closed.
/// - `DeclareMiningJob` (6.4.4): the token must be one this connection was given, unused and
///   unexpired (`invalid-mining-job-token`); it is used up, whatever the outcome. Then the
///   coinbase (`coinbase_tx_prefix || extranonce || coinbase_tx_suffix`) must be one
///   coinbase input (`invalid-coinbase-tx-input`) in a transaction of at most
///   [`max_coinbase_size`](JobDeclarationServerConfig::max_coinbase_size) bytes paying the
///   required outputs (`invalid-coinbase-tx`); its BIP34 height must be one more than the
///   node's tip height (`stale-chain-tip`); the list must have at most [`MAX_DECLARED_TRANSACTIONS`] distinct
///   wtxids (`invalid-job`). Wtxids the node's mempool does not have are asked for with
///   `ProvideMissingTransactions` (6.4.7), at most
///   [`max_missing_transactions`](JobDeclarationServerConfig::max_missing_transactions) of
///   them (more: `missing-txs`). With every transaction known, the block weight must fit
///   4,000,000 WU and the witness commitment must match (`invalid-job`); the reply is
///   `DeclareMiningJob.Success` (6.4.5) with a new token for the declared job.
/// - `ProvideMissingTransactions.Success` (6.4.8): the transactions must be exactly those asked
///   for, in order, each with the declared wtxid (`missing-txs`), none a coinbase
///   (`invalid-job`), and the tip must not have moved (`stale-chain-tip`); then the checks of
///   a complete job above. An answer to nothing pending is logged and ignored. No answer within
///   [`missing_transactions_timeout`](JobDeclarationServerConfig::missing_transactions_timeout):
///   `missing-txs`.
/// - `PushSolution` (6.4.9): the block is rebuilt from the connection's most recent accepted
///   job whose tip is the solution's `prev_hash` and whose header hash meets the solution's
///   `nbits` (the most recent first; spec: "JDS MUST attempt ... its most recently sent
///   `DeclareMiningJob.Success`", older ones MAY): coinbase prefix + `extranonce` + suffix, the
///   declared transactions in order, `version`/`ntime`/`nbits`/`nonce` from the solution, and
///   passed to [`JdNode::submit_block`]. A solution matching no kept job is logged and ignored
///   (the spec defines no reply). `prev_hash` is read in internal byte order (the bytes of the
///   header field, as in `SetNewPrevHash`), and so are the wtxids of `wtxid_list`.
///
/// Error codes are `job_declaration_sv2`'s `ERROR_CODE_DECLARE_MINING_JOB_*` strings (the
/// spec itself no longer lists any); `error_details` carries a human-readable reason.
///
/// # Time
/// The server never reads a clock except once in [`new`](Self::new). A token's lifetime (and a
/// declaration's wait for missing transactions) starts at the first
/// [`on_timer`](Sv2JobDeclarationServerHandler::on_timer) after it was issued: while anything
/// is unstamped, [`poll_timeout`](Sv2JobDeclarationServerHandler::poll_timeout) returns the
/// last `now` (a past deadline, so the runtime calls `on_timer` at once); otherwise the
/// earliest expiry, or `None` with nothing to expire. `on_timer(now)` stamps, then expires
/// what is due (`<= now`).
///
/// # State
/// Owned, per connection, freed in `on_connection_removed` (tokens, pending declarations and
/// accepted jobs of the connection).
#[derive(Debug)]
pub struct JobDeclarationServer<N: JdNode> {
    config: JobDeclarationServerConfig,
    node: N,
    coinbase_outputs: Vec<u8>,
    now: Instant,
    next_id: u64,
    tokens: HashMap<u64, TokenEntry>,
    connections: HashMap<ConnectionId, Connection>,
    deadlines: BTreeSet<(Instant, Deadline)>,
    unstamped: BTreeSet<Deadline>,
    pending_count: usize,
    job_count: usize,
}

fn token_bytes(id: u64) -> Option<tower_stratum_core::stratum_core::binary_sv2::B0255Owned> {
    id.to_le_bytes().to_vec().try_into().ok()
}

fn token_id(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

fn jd(m: JobDeclarationOwned) -> Sv2Message {
    Sv2Message::JobDeclaration(m)
}

impl<N: JdNode> JobDeclarationServer<N> {
    /// A server with `config` over `node`. Reads the clock once (`Instant::now()`, the `now`
    /// until the first `on_timer`).
    ///
    /// Errors: [`ConfigError::CoinbaseOutputsTooLarge`] if the required outputs do not fit in
    /// 65,535 bytes, [`ConfigError::ZeroLimit`] if a `max_*` limit is 0.
    pub fn new(config: JobDeclarationServerConfig, node: N) -> Result<Self, ConfigError> {
        let limits = [
            (
                "max_tokens_per_connection",
                config.max_tokens_per_connection,
            ),
            ("max_tokens", config.max_tokens),
            (
                "max_pending_per_connection",
                config.max_pending_per_connection,
            ),
            ("max_pending", config.max_pending),
            ("max_jobs_per_connection", config.max_jobs_per_connection),
            ("max_jobs", config.max_jobs),
        ];
        if let Some((name, _)) = limits.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::ZeroLimit(name));
        }
        let coinbase_outputs = serialize(&config.coinbase_outputs());
        if coinbase_outputs.len() > usize::from(u16::MAX) {
            return Err(ConfigError::CoinbaseOutputsTooLarge {
                size: coinbase_outputs.len(),
            });
        }
        Ok(Self {
            config,
            node,
            coinbase_outputs,
            now: Instant::now(),
            next_id: 1,
            tokens: HashMap::new(),
            connections: HashMap::new(),
            deadlines: BTreeSet::new(),
            unstamped: BTreeSet::new(),
            pending_count: 0,
            job_count: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &JobDeclarationServerConfig {
        &self.config
    }

    /// The node.
    pub fn node(&self) -> &N {
        &self.node
    }

    /// The node, mutably (e.g. to feed a [`MemoryNode`](crate::MemoryNode)'s mempool).
    pub fn node_mut(&mut self) -> &mut N {
        &mut self.node
    }

    /// Allocated, unused, unexpired tokens, all connections together.
    pub fn live_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// Declarations waiting for `ProvideMissingTransactions.Success`, all connections together.
    pub fn pending_declarations(&self) -> usize {
        self.pending_count
    }

    /// The jobs accepted on `connection` and still kept, oldest first.
    pub fn declared_jobs(&self, connection: ConnectionId) -> impl Iterator<Item = &DeclaredJob> {
        self.connections
            .get(&connection)
            .into_iter()
            .flat_map(|c| c.jobs.iter())
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn remove_token(&mut self, id: u64) {
        if let Some(t) = self.tokens.remove(&id) {
            if let Some(at) = t.expires_at {
                self.deadlines.remove(&(at, Deadline::Token(id)));
            } else {
                self.unstamped.remove(&Deadline::Token(id));
            }
            if let Some(c) = self.connections.get_mut(&t.connection) {
                c.tokens.retain(|x| *x != id);
            }
        }
    }

    fn remove_pending(&mut self, connection: ConnectionId, request_id: u32) -> Option<Pending> {
        let p = self
            .connections
            .get_mut(&connection)?
            .pending
            .remove(&request_id)?;
        self.pending_count -= 1;
        let key = Deadline::Pending(connection, request_id);
        match p.deadline {
            Some(at) => self.deadlines.remove(&(at, key)),
            None => self.unstamped.remove(&key),
        };
        Some(p)
    }

    fn allocate(&mut self, ctx: ConnectionContext, msg: AllocateMiningJobTokenOwned) -> Actions {
        let conn = self.connections.entry(ctx.id).or_default();
        let oldest = (conn.tokens.len() >= self.config.max_tokens_per_connection)
            .then(|| conn.tokens.front().copied())
            .flatten();
        if let Some(old) = oldest {
            debug!(connection = %ctx.id, token = old, "token limit of the connection: oldest token retired");
            self.remove_token(old);
        } else if self.tokens.len() >= self.config.max_tokens {
            warn!(connection = %ctx.id, live = self.tokens.len(), "token limit of the server reached");
            return Actions::close("too many mining job tokens allocated");
        }
        let id = self.next_id();
        let (Some(mining_job_token), Ok(coinbase_outputs)) =
            (token_bytes(id), self.coinbase_outputs.clone().try_into())
        else {
            return Actions::close("cannot encode AllocateMiningJobToken.Success");
        };
        self.tokens.insert(
            id,
            TokenEntry {
                connection: ctx.id,
                expires_at: None,
            },
        );
        self.unstamped.insert(Deadline::Token(id));
        self.connections
            .entry(ctx.id)
            .or_default()
            .tokens
            .push_back(id);
        debug!(
            connection = %ctx.id,
            request_id = msg.request_id,
            user_identifier = %msg.user_identifier.as_utf8_or_hex(),
            token = id,
            "mining job token allocated"
        );
        Actions::reply(jd(JobDeclarationOwned::AllocateMiningJobTokenSuccess(
            AllocateMiningJobTokenSuccessOwned {
                request_id: msg.request_id,
                mining_job_token,
                coinbase_outputs,
            },
        )))
    }

    /// Checks and uses up the token of a declaration.
    fn take_token(&mut self, ctx: ConnectionContext, token: &[u8]) -> Result<(), Rejection> {
        let id = token_id(token)
            .ok_or_else(|| Rejection::invalid_token("not a token of this server".into()))?;
        let entry = self.tokens.get(&id).ok_or_else(|| {
            Rejection::invalid_token("unknown, already used or expired token".into())
        })?;
        if entry.connection != ctx.id {
            return Err(Rejection::invalid_token(
                "token allocated to another connection".into(),
            ));
        }
        let expired = entry.expires_at.is_some_and(|at| at <= self.now);
        self.remove_token(id);
        if expired {
            return Err(Rejection::invalid_token("expired token".into()));
        }
        Ok(())
    }

    /// `DeclareMiningJob` up to its reply: `ProvideMissingTransactions` (the declaration now
    /// waits) or `DeclareMiningJob.Success` (the job is stored), or the rejection.
    fn declare(
        &mut self,
        ctx: ConnectionContext,
        msg: DeclareMiningJobOwned,
    ) -> Result<Sv2Message, Rejection> {
        self.take_token(ctx, msg.mining_job_token.as_bytes())?;
        let tip = self
            .node
            .chain_tip()
            .ok_or_else(|| Rejection::stale_chain_tip("the node knows no chain tip".into()))?;
        let prefix = msg.coinbase_tx_prefix.as_bytes();
        let suffix = msg.coinbase_tx_suffix.as_bytes();
        let coinbase = coinbase::parse(prefix, suffix, self.config.max_coinbase_size)?;
        coinbase::check_required_outputs(&coinbase.tx, &self.config)?;
        check_height(&coinbase, &tip)?;

        let list = msg.wtxid_list.as_slice();
        if list.len() > MAX_DECLARED_TRANSACTIONS {
            return Err(Rejection::invalid_job(format!(
                "{} transactions declared, a block holds at most {MAX_DECLARED_TRANSACTIONS}",
                list.len()
            )));
        }
        let wtxids: Vec<Wtxid> = list
            .iter()
            .map(|w| Wtxid::from_byte_array(w.to_array()))
            .collect();
        let mut seen = HashSet::with_capacity(wtxids.len());
        if let Some(dup) = wtxids.iter().find(|w| !seen.insert(**w)) {
            return Err(Rejection::invalid_job(format!(
                "wtxid {dup} declared more than once"
            )));
        }
        let transactions: Vec<Option<Arc<Transaction>>> =
            wtxids.iter().map(|w| self.node.transaction(w)).collect();
        let missing: Vec<u16> = transactions
            .iter()
            .enumerate()
            .filter(|(_, t)| t.is_none())
            // At most 65,535 positions (the list is a SEQ0_64K, and at most
            // MAX_DECLARED_TRANSACTIONS long).
            .filter_map(|(i, _)| u16::try_from(i).ok())
            .collect();
        let job = PartialJob {
            request_id: msg.request_id,
            version: msg.version,
            coinbase_tx_prefix: prefix.to_vec(),
            coinbase_tx_suffix: suffix.to_vec(),
            coinbase,
            tip,
            wtxids,
            transactions,
        };
        if missing.is_empty() {
            return self.accept(ctx, job);
        }
        if missing.len() > self.config.max_missing_transactions {
            return Err(Rejection::missing_txs(format!(
                "{} declared transactions unknown, at most {} are asked for",
                missing.len(),
                self.config.max_missing_transactions
            )));
        }
        let conn = self.connections.entry(ctx.id).or_default();
        if conn.pending.contains_key(&msg.request_id) {
            return Err(Rejection::internal_error(format!(
                "request_id {} is already waiting for ProvideMissingTransactions.Success",
                msg.request_id
            )));
        }
        if conn.pending.len() >= self.config.max_pending_per_connection
            || self.pending_count >= self.config.max_pending
        {
            return Err(Rejection::internal_error(
                "too many declarations waiting for ProvideMissingTransactions.Success".into(),
            ));
        }
        let unknown_tx_position_list = missing
            .clone()
            .try_into()
            .map_err(|_| Rejection::internal_error("cannot encode positions".into()))?;
        debug!(
            connection = %ctx.id,
            request_id = msg.request_id,
            missing = missing.len(),
            "asking for missing transactions"
        );
        conn.pending.insert(
            msg.request_id,
            Pending {
                job,
                missing,
                deadline: None,
            },
        );
        self.pending_count += 1;
        self.unstamped
            .insert(Deadline::Pending(ctx.id, msg.request_id));
        Ok(jd(JobDeclarationOwned::ProvideMissingTransactions(
            ProvideMissingTransactionsOwned {
                request_id: msg.request_id,
                unknown_tx_position_list,
            },
        )))
    }

    fn provided(
        &mut self,
        ctx: ConnectionContext,
        pending: Pending,
        msg: ProvideMissingTransactionsSuccessOwned,
    ) -> Result<Sv2Message, Rejection> {
        let Pending {
            mut job, missing, ..
        } = pending;
        let list = msg.transaction_list.as_slice();
        if list.len() != missing.len() {
            return Err(Rejection::missing_txs(format!(
                "{} transactions provided, {} were asked for",
                list.len(),
                missing.len()
            )));
        }
        for (pos, raw) in missing.iter().zip(list) {
            let i = usize::from(*pos);
            let tx: Transaction = deserialize(raw.as_bytes()).map_err(|_| {
                Rejection::missing_txs(format!("transaction at position {i} does not decode"))
            })?;
            if tx.compute_wtxid() != job.wtxids[i] {
                return Err(Rejection::missing_txs(format!(
                    "transaction at position {i} has wtxid {}, {} was declared",
                    tx.compute_wtxid(),
                    job.wtxids[i]
                )));
            }
            if tx.is_coinbase() {
                return Err(Rejection::invalid_job(format!(
                    "transaction at position {i} is a coinbase"
                )));
            }
            job.transactions[i] = Some(Arc::new(tx));
        }
        if self.node.chain_tip() != Some(job.tip) {
            return Err(Rejection::stale_chain_tip(
                "the chain tip moved while waiting for the missing transactions".into(),
            ));
        }
        self.accept(ctx, job)
    }

    /// The checks of a complete job, then stores it and returns `DeclareMiningJob.Success`.
    fn accept(&mut self, ctx: ConnectionContext, job: PartialJob) -> Result<Sv2Message, Rejection> {
        let transactions: Vec<Arc<Transaction>> = job.transactions.into_iter().flatten().collect();
        if transactions.len() != job.wtxids.len() {
            return Err(Rejection::internal_error(
                "a transaction went missing".into(),
            ));
        }
        let cb = &job.coinbase.tx;
        // Header, the transaction count and every transaction, BIP141 weight.
        let count_len = serialize(&tower_stratum_core::stratum_core::bitcoin::VarInt(
            transactions.len() as u64 + 1,
        ))
        .len() as u64;
        let weight = transactions
            .iter()
            .fold((80 + count_len) * 4 + cb.weight().to_wu(), |acc, t| {
                acc.saturating_add(t.weight().to_wu())
            });
        if weight > MAX_BLOCK_WEIGHT {
            return Err(Rejection::invalid_job(format!(
                "the block would weigh {weight} WU, more than {MAX_BLOCK_WEIGHT}"
            )));
        }
        let any_witness = transactions
            .iter()
            .any(|t| t.input.iter().any(|i| !i.witness.is_empty()));
        coinbase::check_witness_commitment(cb, &job.wtxids, any_witness)?;
        let txids: Vec<[u8; 32]> = transactions
            .iter()
            .map(|t| t.compute_txid().to_byte_array())
            .collect();
        let merkle_path = coinbase::merkle_path(&txids);

        let token = self.next_id();
        let Some(new_mining_job_token) = token_bytes(token) else {
            return Err(Rejection::internal_error("cannot encode the token".into()));
        };
        let declared = DeclaredJob {
            token,
            sequence: token,
            request_id: job.request_id,
            version: job.version,
            coinbase_tx_prefix: job.coinbase_tx_prefix,
            coinbase_tx_suffix: job.coinbase_tx_suffix,
            extranonce_len: job.coinbase.extranonce_len,
            prev_hash: job.tip.hash,
            height: job.coinbase.height,
            transactions,
            merkle_path,
        };
        info!(
            connection = %ctx.id,
            request_id = job.request_id,
            height = declared.height,
            transactions = declared.transactions.len(),
            weight,
            "job declared"
        );
        self.store_job(ctx.id, declared);
        Ok(jd(JobDeclarationOwned::DeclareMiningJobSuccess(
            DeclareMiningJobSuccessOwned {
                request_id: job.request_id,
                new_mining_job_token,
            },
        )))
    }

    fn store_job(&mut self, connection: ConnectionId, job: DeclaredJob) {
        let per_connection = self.config.max_jobs_per_connection;
        let conn = self.connections.entry(connection).or_default();
        conn.jobs.push_back(job);
        self.job_count += 1;
        if conn.jobs.len() > per_connection {
            conn.jobs.pop_front();
            self.job_count -= 1;
        }
        while self.job_count > self.config.max_jobs {
            let oldest = self
                .connections
                .iter()
                .filter_map(|(id, c)| c.jobs.front().map(|j| (j.sequence, *id)))
                .min();
            let Some((_, id)) = oldest else { break };
            if let Some(c) = self.connections.get_mut(&id) {
                c.jobs.pop_front();
                self.job_count -= 1;
            }
        }
    }

    fn push_solution(&mut self, ctx: ConnectionContext, msg: PushSolutionOwned) {
        let prev_hash = BlockHash::from_byte_array(msg.prev_hash.to_array());
        let extranonce = msg.extranonce.as_bytes();
        let Some(conn) = self.connections.get(&ctx.id) else {
            warn!(connection = %ctx.id, "PushSolution without any declared job: ignored");
            return;
        };
        let target = share_math::nbits_to_target(msg.nbits);
        let mut found = None;
        for job in conn.jobs.iter().rev().filter(|j| j.prev_hash == prev_hash) {
            let Some(block) = assemble(job, &msg, extranonce) else {
                continue;
            };
            let hash = block.block_hash().to_byte_array();
            if share_math::hash_meets_target(&hash, &target) {
                found = Some((job.request_id, block));
                break;
            }
        }
        let Some((request_id, block)) = found else {
            warn!(
                connection = %ctx.id,
                %prev_hash,
                jobs = conn.jobs.len(),
                "PushSolution matches no declared job: ignored"
            );
            return;
        };
        let hash = block.block_hash();
        match self.node.submit_block(block) {
            Ok(()) => info!(connection = %ctx.id, request_id, %hash, "block pushed to the node"),
            Err(error) => {
                warn!(connection = %ctx.id, request_id, %hash, %error, "node refused the block")
            }
        }
    }

    fn drop_connection(&mut self, id: ConnectionId) {
        let Some(conn) = self.connections.remove(&id) else {
            return;
        };
        for t in conn.tokens {
            if let Some(e) = self.tokens.remove(&t) {
                match e.expires_at {
                    Some(at) => self.deadlines.remove(&(at, Deadline::Token(t))),
                    None => self.unstamped.remove(&Deadline::Token(t)),
                };
            }
        }
        for (rid, p) in conn.pending {
            let key = Deadline::Pending(id, rid);
            match p.deadline {
                Some(at) => self.deadlines.remove(&(at, key)),
                None => self.unstamped.remove(&key),
            };
            self.pending_count -= 1;
        }
        self.job_count -= conn.jobs.len();
    }

    fn timer(&mut self, now: Instant) -> Actions {
        self.now = now;
        for d in std::mem::take(&mut self.unstamped) {
            let at = match d {
                Deadline::Token(id) => {
                    let at = now.checked_add(self.config.token_lifetime);
                    if let Some(t) = self.tokens.get_mut(&id) {
                        t.expires_at = at;
                    }
                    at
                }
                Deadline::Pending(c, rid) => {
                    let at = now.checked_add(self.config.missing_transactions_timeout);
                    if let Some(p) = self
                        .connections
                        .get_mut(&c)
                        .and_then(|c| c.pending.get_mut(&rid))
                    {
                        p.deadline = at;
                    }
                    at
                }
            };
            // An instant too far to represent never expires.
            if let Some(at) = at {
                self.deadlines.insert((at, d));
            }
        }
        let mut actions = Actions::none();
        while let Some(&(at, d)) = self.deadlines.first() {
            if at > now {
                break;
            }
            match d {
                Deadline::Token(id) => {
                    debug!(token = id, "mining job token expired");
                    self.remove_token(id);
                }
                Deadline::Pending(c, rid) => {
                    self.remove_pending(c, rid);
                    info!(connection = %c, request_id = rid, "no ProvideMissingTransactions.Success in time");
                    let r = Rejection::missing_txs(
                        "ProvideMissingTransactions.Success not received in time".into(),
                    );
                    if let Some(m) = r.message(rid) {
                        actions.push(Action::SendTo(c, m));
                    }
                }
            }
            // Removing an entry above removes its deadline; make sure of progress anyway.
            self.deadlines.remove(&(at, d));
        }
        actions
    }
}

/// The job's height must be the one after the tip's (`stale-chain-tip`).
fn check_height(cb: &DeclaredCoinbase, tip: &ChainTip) -> Result<(), Rejection> {
    if Some(cb.height) != tip.height.checked_add(1) {
        return Err(Rejection::stale_chain_tip(format!(
            "coinbase height {} does not build on the tip at height {}",
            cb.height, tip.height
        )));
    }
    Ok(())
}

/// The block of `job` completed by `sol`: `None` if the coinbase with this extranonce is not a
/// transaction.
fn assemble(job: &DeclaredJob, sol: &PushSolutionOwned, extranonce: &[u8]) -> Option<Block> {
    let mut raw = Vec::with_capacity(
        job.coinbase_tx_prefix.len() + extranonce.len() + job.coinbase_tx_suffix.len(),
    );
    raw.extend_from_slice(&job.coinbase_tx_prefix);
    raw.extend_from_slice(extranonce);
    raw.extend_from_slice(&job.coinbase_tx_suffix);
    let coinbase: Transaction = deserialize(&raw).ok()?;
    let root = share_math::merkle_root_from_txid(
        coinbase.compute_txid().to_byte_array(),
        &job.merkle_path,
    );
    let header = Header {
        version: Version::from_consensus(sol.version as i32),
        prev_blockhash: job.prev_hash,
        merkle_root: TxMerkleNode::from_byte_array(root),
        time: sol.ntime,
        bits: CompactTarget::from_consensus(sol.nbits),
        nonce: sol.nonce,
    };
    let mut txdata = Vec::with_capacity(job.transactions.len() + 1);
    txdata.push(coinbase);
    txdata.extend(job.transactions.iter().map(|t| Transaction::clone(t)));
    Some(Block { header, txdata })
}

impl<N: JdNode> Sv2JobDeclarationServerHandler for JobDeclarationServer<N> {
    /// Accepts `SetupConnection` for `protocol = 1` with or without [`DECLARE_TX_DATA`]
    /// (without it a JDC works in Coinbase-only mode, spec 6.3.1, and only allocates tokens;
    /// a `DeclareMiningJob` it sends anyway is handled like any other). No success flags.
    fn setup_support(&self) -> Option<SetupSupport> {
        Some(SetupSupport {
            supported_flags: DECLARE_TX_DATA,
            success_flags: 0,
        })
    }

    async fn on_connection_removed(
        &mut self,
        ctx: ConnectionContext,
        reason: CloseReason,
    ) -> Actions {
        debug!(connection = %ctx.id, ?reason, "job declaration connection gone: its tokens and jobs dropped");
        self.drop_connection(ctx.id);
        Actions::none()
    }

    /// See [`JobDeclarationServer`]'s "Time".
    fn poll_timeout(&self) -> Option<Instant> {
        if self.unstamped.is_empty() {
            self.deadlines.first().map(|(at, _)| *at)
        } else {
            Some(self.now)
        }
    }

    /// Stamps what was issued since the last call, expires tokens and waits that are due;
    /// a declaration that waited too long gets `DeclareMiningJob.Error` `missing-txs`.
    async fn on_timer(&mut self, now: Instant) -> Actions {
        self.timer(now)
    }

    async fn handle_allocate_mining_job_token(
        &mut self,
        ctx: ConnectionContext,
        msg: AllocateMiningJobTokenOwned,
    ) -> Actions {
        self.allocate(ctx, msg)
    }

    async fn handle_declare_mining_job(
        &mut self,
        ctx: ConnectionContext,
        msg: DeclareMiningJobOwned,
    ) -> Actions {
        let request_id = msg.request_id;
        answer(ctx, request_id, self.declare(ctx, msg))
    }

    async fn handle_provide_missing_transactions_success(
        &mut self,
        ctx: ConnectionContext,
        msg: ProvideMissingTransactionsSuccessOwned,
    ) -> Actions {
        let request_id = msg.request_id;
        let Some(pending) = self.remove_pending(ctx.id, request_id) else {
            debug!(connection = %ctx.id, request_id, "ProvideMissingTransactions.Success for nothing pending: ignored");
            return Actions::none();
        };
        answer(ctx, request_id, self.provided(ctx, pending, msg))
    }

    async fn handle_push_solution(
        &mut self,
        ctx: ConnectionContext,
        msg: PushSolutionOwned,
    ) -> Actions {
        self.push_solution(ctx, msg);
        Actions::none()
    }
}

/// The reply to a declaration step: its message, or the `DeclareMiningJob.Error` of a refusal
/// (logged with its code and details).
fn answer(
    ctx: ConnectionContext,
    request_id: u32,
    result: Result<Sv2Message, Rejection>,
) -> Actions {
    match result {
        Ok(m) => Actions::reply(m),
        Err(r) => {
            info!(connection = %ctx.id, request_id, code = r.code, details = %r.details, "DeclareMiningJob refused");
            r.message(request_id)
                .map(Actions::reply)
                .unwrap_or_default()
        }
    }
}
