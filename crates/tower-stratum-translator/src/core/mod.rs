//! The translation state machine, sans-IO: every input (an Sv1 request, an upstream Mining
//! message, a tick) comes with the time, and every output is an [`Sv1Action`] — replies and
//! pushes to miners, and Sv2 messages for the upstream as `ToSibling(SiblingMessage::Sv2)`.
//!
//! [`TranslatorCore`] and its public methods are here; each concern has its module:
//! `miners` (Sv1 sessions, extranonce1 slots, resume), `channels` (upstream channels and
//! their jobs, on [`MinerChannel`](tower_stratum_mining::miner_channel::MinerChannel)),
//! `pending` (shares awaiting the upstream's verdict) and `difficulty` (bounds, vardiff,
//! `UpdateChannel`).

mod channels;
mod difficulty;
mod miners;
mod pending;

use self::channels::UpstreamChannel;
use self::difficulty::{clamp_difficulty, difficulty_to_hashrate, hashrate_to_difficulty};
pub use self::miners::worker_name;
use self::miners::{grant_version_rolling, Kept, Miner, Resumable, Slots};
pub use self::pending::map_upstream_error;
use self::pending::{PendingShare, PendingShares};
use crate::config::{ChannelMode, TranslatorConfig};
use crate::stats::TranslatorStats;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};
use tower_stratum_core::share_math::{
    nbits_to_target, target_to_difficulty, HASHES_PER_DIFFICULTY_1,
};
use tower_stratum_core::stratum_core::binary_sv2::{B032Owned, U256Owned};
use tower_stratum_core::stratum_core::mining_sv2::{
    CloseChannelOwned, OpenExtendedMiningChannelOwned, OpenMiningChannelErrorOwned,
    SubmitSharesExtendedOwned,
};
use tower_stratum_core::stratum_core::parsers_sv2::MiningOwned;
use tower_stratum_core::{session::str0255, ConnectionId, SiblingMessage, Sv2Message, TlvFields};
use tower_stratum_sv1::work::{evaluate_share, rolled_version, version_bits_within_mask};
use tower_stratum_sv1::{
    Authorize, Configure, ConfigureResult, ErrorCode, ExtensionResult, Id, Response, ServerMessage,
    Submit, Subscribe, Sv1Error, Target,
};
use tower_stratum_sv1::{Sv1Action, Sv1Actions, Sv1ConnectionContext};
use tracing::{debug, info, warn};

/// Local extranonce bytes per miner in aggregated mode: 2 bytes, 65 536 miners per channel.
pub const AGGREGATED_LOCAL_BYTES: usize = 2;
/// Window of the hashrate estimate.
const HASHRATE_WINDOW: Duration = Duration::from_secs(300);
/// Message of the error-20 answer to a share the upstream could not receive.
pub const UPSTREAM_UNAVAILABLE: &str = "Upstream unavailable";
/// Message of the error-20 answer to a share beyond `max_pending_shares`.
pub const UPSTREAM_BUSY: &str = "Upstream busy";
/// Message of the error-20 answer to a share without an upstream verdict in time.
pub const NO_VERDICT: &str = "No verdict from upstream";
/// Message of the error-20 answer to a share with the wrong extranonce2 length.
pub const BAD_EXTRANONCE2: &str = "Invalid extranonce2 size";
/// Message of the error-20 answer to a share with version bits outside the granted mask.
pub const BAD_VERSION_BITS: &str = "Version bits outside the granted mask";

/// The translator's sibling event from the upstream side (see
/// [`TranslatorSv2Handler`](crate::TranslatorSv2Handler)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpstreamEvent {
    /// The upstream Mining connection finished `SetupConnection`.
    Connected {
        /// `SetupConnection.Success.flags`.
        success_flags: u32,
        /// Whether we sent `REQUIRES_VERSION_ROLLING` (then every job allows rolling).
        version_rolling_required: bool,
        /// The `user_identity` for channels on this upstream.
        user_identity: String,
        /// Index of the upstream in the configured list.
        index: usize,
        /// Whether the connection negotiated extension `0x0002`: shares then carry the
        /// miner's worker name as a `user_identity` TLV.
        worker_hashrate_tracking: bool,
    },
    /// The upstream connection is gone (channels with it).
    Disconnected {
        /// Why.
        reason: String,
    },
    /// An attempt to reach the upstream failed (TCP connect, Noise handshake or certificate
    /// check, SetupConnection): shown in [`TranslatorStats::upstream_error`] until an upstream
    /// connects.
    Failed {
        /// Why (the `CloseReason` as text).
        reason: String,
    },
}

#[derive(Debug, Clone)]
struct Upstream {
    /// `SetupConnection.Success.flags` (`REQUIRES_FIXED_VERSION` forbids version rolling).
    success_flags: u32,
    version_rolling: bool,
    user_identity: String,
    worker_hashrate_tracking: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opening {
    Aggregated,
    Miner(ConnectionId),
}

/// The Sv1 -> Sv2 translation state: miners, upstream channels, jobs, pending shares.
///
/// # Truthful results
///
/// A `mining.submit` is answered `true` only after the upstream's `SubmitShares.Success`
/// covering it. Before forwarding, local checks answer at once: unknown job or stale after a
/// new tip (21), duplicate (22), below the miner's difficulty (23), wrong extranonce2 length
/// or version bits outside the granted mask (20). Upstream errors map to Sv1 codes
/// (`stale-share`/`invalid-job-id` 21, `duplicate-share` 22, `difficulty-too-low` 23,
/// `invalid-user-identity`/`unknown-user` 24, others 20). A share the upstream never answers
/// within `submit_timeout`, or that is in flight when the upstream connection drops, gets 20;
/// so does one arriving while `max_pending_shares` already await a verdict (`Upstream busy`).
/// The cost: one upstream round trip per share before the miner hears back.
///
/// Every miner's difficulty is at least its channel's upstream difficulty (the target is
/// never easier than the channel's), so every share that passes the local checks is one the
/// upstream should accept.
///
/// # Difficulty
///
/// A miner starts at its `mining.suggest_difficulty` (or `mining.configure`'s
/// `minimum-difficulty`) when it sends one, which is then also its lowest difficulty (as
/// ckpool does); otherwise at [`TranslatorConfig::start_difficulty`]. Vardiff
/// ([`ClassicVardiff`](tower_stratum_mining::vardiff::ClassicVardiff), SRI's algorithm)
/// then aims at `shares_per_minute`. A miner far faster than its difficulty (an ASIC on a
/// CPU-sized start) is caught up at the next tick instead of in vardiff's 10x steps: once at least 8 shares meeting its current target came, over at
/// least 1 s, at 4x `shares_per_minute` or more (or at least 16 at 1.6x or more), its
/// hashrate is estimated from them (`shares * difficulty * 2^32 / seconds`) and its
/// difficulty set for that hashrate at once.
/// With [`TranslatorConfig::first_share_search`], a miner far slower than its start is found
/// as fast: until its first share its difficulty is divided by 16 at each period.
///
/// # Extranonce layout
///
/// Full coinbase = `coinbase_tx_prefix || extranonce_prefix || local || extranonce2 ||
/// coinbase_tx_suffix`. Miners get `coinb1 = coinbase_tx_prefix`, `extranonce1 =
/// extranonce_prefix || local`, `coinb2 = coinbase_tx_suffix`; `SubmitSharesExtended.extranonce
/// = local || extranonce2`. Aggregated: `local` is 2 bytes unique to the miner (then zeros up
/// to the granted size); per-miner: zeros.
#[derive(Debug)]
pub struct TranslatorCore {
    config: TranslatorConfig,
    upstream: Option<Upstream>,
    next_request_id: u32,
    opening: HashMap<u32, Opening>,
    channels: HashMap<u32, UpstreamChannel>,
    aggregated: Option<u32>,
    miners: HashMap<ConnectionId, Miner>,
    slots: Slots,
    resumable: HashMap<String, Resumable>,
    pending: PendingShares,
    next_job: u64,
    stats: TranslatorStats,
    accepted_window: VecDeque<(Instant, f64)>,
    started: Instant,
    last_open_retry: Option<Instant>,
}

fn to_upstream(m: MiningOwned) -> Sv1Action {
    Sv1Action::ToSibling(SiblingMessage::Sv2(Sv2Message::Mining(m)))
}

fn send(conn: ConnectionId, m: impl Into<ServerMessage>) -> Sv1Action {
    Sv1Action::SendTo(conn, m.into())
}

/// A response to `id`, unless `id` is `null` (a notification is never answered).
fn respond(conn: ConnectionId, r: Response) -> Option<Sv1Action> {
    (!r.id.is_null()).then(|| send(conn, ServerMessage::Response(r)))
}

impl TranslatorCore {
    /// A core with no miner and no upstream, started at `now`.
    pub fn new(config: TranslatorConfig, now: Instant) -> Self {
        Self {
            config,
            upstream: None,
            next_request_id: 1,
            opening: HashMap::new(),
            channels: HashMap::new(),
            aggregated: None,
            miners: HashMap::new(),
            slots: Slots::default(),
            resumable: HashMap::new(),
            pending: PendingShares::default(),
            next_job: 1,
            stats: TranslatorStats::default(),
            accepted_window: VecDeque::new(),
            started: now,
            last_open_retry: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &TranslatorConfig {
        &self.config
    }

    fn reject(&mut self, reason: &str) {
        *self
            .stats
            .shares_rejected
            .entry(reason.to_string())
            .or_insert(0) += 1;
    }

    fn request_id(&mut self) -> u32 {
        let r = self.next_request_id;
        self.next_request_id = self.next_request_id.wrapping_add(1).max(1);
        r
    }

    /// Local extranonce bytes per miner: [`AGGREGATED_LOCAL_BYTES`] aggregated, none
    /// per-miner (the miner owns the channel).
    fn local_bytes(&self) -> usize {
        match self.config.mode {
            ChannelMode::Aggregated => AGGREGATED_LOCAL_BYTES,
            ChannelMode::PerMiner => 0,
        }
    }

    /// `OpenExtendedMiningChannel` for `opening` at `hashrate` (H/s), asking for the
    /// miners' local bytes plus extranonce2.
    fn open_channel(&mut self, opening: Opening, hashrate: f32) -> Option<Sv1Action> {
        let up = self.upstream.as_ref()?;
        let user_identity = str0255(&up.user_identity)?;
        let request_id = self.request_id();
        let local = self.local_bytes();
        self.opening.insert(request_id, opening);
        info!(request_id, ?opening, "opening an upstream extended channel");
        Some(to_upstream(MiningOwned::OpenExtendedMiningChannel(
            OpenExtendedMiningChannelOwned {
                request_id,
                user_identity,
                nominal_hash_rate: hashrate,
                max_target: U256Owned::from([0xffu8; 32]),
                min_extranonce_size: (self.config.extranonce2_size + local) as u16,
            },
        )))
    }

    // ---------------------------------------------------------------- Sv1 side

    /// A miner connected.
    pub fn connection_added(&mut self, ctx: Sv1ConnectionContext, now: Instant) -> Sv1Actions {
        let (start, hashrate) = match self.config.start_difficulty {
            Some(d) => (d, difficulty_to_hashrate(&self.config, d)),
            None => (
                hashrate_to_difficulty(&self.config, self.config.nominal_hashrate),
                self.config.nominal_hashrate,
            ),
        };
        let difficulty = clamp_difficulty(&self.config, start, None, 0.0);
        let miner = Miner::new(ctx, self.config.extranonce2_size, difficulty, hashrate, now);
        self.miners.insert(ctx.id, miner);
        Sv1Actions::none()
    }

    /// A miner disconnected: frees its slot (kept for resumption within the grace period)
    /// and, per-miner, closes its upstream channel.
    pub fn connection_removed(&mut self, ctx: Sv1ConnectionContext, now: Instant) -> Sv1Actions {
        let mut out = Sv1Actions::none();
        let Some(m) = self.miners.remove(&ctx.id) else {
            return out;
        };
        let resumable = self.config.resume_grace > Duration::ZERO
            && m.subscribed
            && !m.closing
            && !m.session_key.is_empty();
        let keep = |kept| Resumable {
            kept,
            difficulty: m.difficulty,
            hashrate: m.hashrate,
            expires: now + self.config.resume_grace,
        };
        if let Some(slot) = m.slot {
            if resumable {
                self.slots.reserve(slot);
                self.resumable
                    .insert(m.session_key.clone(), keep(Kept::Slot(slot)));
            } else {
                self.slots.release(slot);
            }
        }
        if self.config.mode == ChannelMode::PerMiner {
            self.opening.retain(|_, o| *o != Opening::Miner(ctx.id));
            if let Some(ch) = m.channel {
                // Nobody to answer any more: verdicts still in flight are dropped.
                self.pending.take_channel(ch);
                if resumable && self.channels.contains_key(&ch) {
                    debug!(connection = %ctx.id, channel_id = ch, "channel kept for resume");
                    self.resumable
                        .insert(m.session_key.clone(), keep(Kept::Channel(ch)));
                } else {
                    if let Some(a) = self.close_channel(ch, "downstream disconnected") {
                        out.push(a);
                    }
                }
            }
        }
        out
    }

    /// Forgets channel `ch` and closes it upstream.
    fn close_channel(&mut self, ch: u32, reason: &str) -> Option<Sv1Action> {
        self.channels.remove(&ch);
        self.pending.take_channel(ch);
        str0255(reason).map(|reason_code| {
            to_upstream(MiningOwned::CloseChannel(CloseChannelOwned {
                channel_id: ch,
                reason_code,
            }))
        })
    }

    /// `mining.configure` (BIP310): version rolling is granted as `miner mask AND BIP320 mask`
    /// only when the upstream allows it; `minimum-difficulty` and `subscribe-extranonce` are
    /// honoured; `info` is accepted.
    pub fn configure(&mut self, ctx: Sv1ConnectionContext, id: Id, msg: Configure) -> Sv1Actions {
        let allowed = self.version_rolling_permitted(ctx.id);
        let (min_difficulty, max_difficulty) =
            (self.config.min_difficulty, self.config.max_difficulty);
        let Some(m) = self.miners.get_mut(&ctx.id) else {
            return Sv1Actions::none();
        };
        let mut r = ConfigureResult::default();
        if let Some(version_rolling) = msg.version_rolling {
            let (granted, answer) =
                grant_version_rolling(version_rolling.mask, version_rolling.min_bit_count, allowed);
            m.version_mask = granted;
            if answer == ExtensionResult::Accepted {
                r.version_rolling_mask = Some(granted);
            }
            r.version_rolling = Some(answer);
        }
        if let Some(minimum_difficulty) = msg.minimum_difficulty {
            match minimum_difficulty.value {
                Some(v) if v.is_finite() && v > 0.0 => {
                    m.min_difficulty = Some(v.clamp(min_difficulty, max_difficulty));
                    r.minimum_difficulty = Some(ExtensionResult::Accepted);
                }
                _ => r.minimum_difficulty = Some(ExtensionResult::Rejected),
            }
        }
        if msg.subscribe_extranonce {
            m.extranonce_subscribed = true;
            r.subscribe_extranonce = Some(ExtensionResult::Accepted);
        }
        if msg.info.is_some() {
            r.info = Some(ExtensionResult::Accepted);
        }
        debug!(connection = %ctx.id, mask = m.version_mask, "mining.configure");
        respond(ctx.id, Response::ok(id, r.to_value()))
            .map(Sv1Actions::from)
            .unwrap_or_default()
    }

    fn version_rolling_permitted(&self, conn: ConnectionId) -> bool {
        if self.config.require_version_rolling {
            // Setup requires it: the upstream either allows rolling on every job or refuses
            // the connection (and then nobody mines).
            return true;
        }
        let ch = match self.config.mode {
            ChannelMode::Aggregated => self.aggregated,
            ChannelMode::PerMiner => self.miners.get(&conn).and_then(|m| m.channel),
        };
        ch.and_then(|c| self.channels.get(&c))
            .is_some_and(|c| c.version_rolling_allowed && c.has_jobs())
    }

    /// `mining.extranonce.subscribe`: the miner accepts `mining.set_extranonce`.
    pub fn extranonce_subscribe(&mut self, ctx: Sv1ConnectionContext, id: Id) -> Sv1Actions {
        if let Some(m) = self.miners.get_mut(&ctx.id) {
            m.extranonce_subscribed = true;
        }
        respond(ctx.id, Response::ok(id, true))
            .map(Sv1Actions::from)
            .unwrap_or_default()
    }

    /// `mining.subscribe`: answered once the miner has a channel (at once in aggregated mode
    /// when the upstream channel is open; per-miner when its own channel opens).
    pub fn subscribe(
        &mut self,
        ctx: Sv1ConnectionContext,
        id: Id,
        msg: Subscribe,
        now: Instant,
    ) -> Sv1Actions {
        let Some(m) = self.miners.get_mut(&ctx.id) else {
            return Sv1Actions::none();
        };
        m.subscribe_id = Some(id);
        m.session_id = msg.session_id;
        let mut out = Sv1Actions::none();
        match self.config.mode {
            ChannelMode::Aggregated => match self.aggregated {
                Some(ch) => out.extend(self.assign_channel(ctx.id, ch, now)),
                None => {
                    // No channel and none opening (e.g. the upstream refused one): ask again.
                    if !self.opening.values().any(|o| *o == Opening::Aggregated) {
                        let hashrate = self.total_hashrate();
                        if let Some(a) = self.open_channel(Opening::Aggregated, hashrate) {
                            out.push(a);
                        }
                    }
                }
            },
            ChannelMode::PerMiner => {
                let hashrate = m.hashrate;
                if let Some(ch) = self.resume_channel(ctx.id, now) {
                    out.extend(self.assign_channel(ctx.id, ch, now));
                } else if let Some(a) = self.open_channel(Opening::Miner(ctx.id), hashrate) {
                    out.push(a);
                }
            }
        }
        out
    }

    /// `mining.authorize`: every worker is accepted (the upstream account is the channel's
    /// `user_identity`); jobs start once the miner is also subscribed.
    pub fn authorize(
        &mut self,
        ctx: Sv1ConnectionContext,
        id: Id,
        msg: Authorize,
        now: Instant,
    ) -> Sv1Actions {
        let mut out = Sv1Actions::none();
        let Some(m) = self.miners.get_mut(&ctx.id) else {
            return out;
        };
        debug!(connection = %ctx.id, worker = %msg.username, "mining.authorize");
        if let Some(a) = respond(ctx.id, Response::ok(id, true)) {
            out.push(a);
        }
        if self.config.worker_hashrate_tracking {
            m.worker = Some(TlvFields::user_identity(worker_name(&msg.username)));
        }
        let first = !m.authorized;
        m.authorized = true;
        if first && m.subscribed {
            out.extend(self.start_mining(ctx.id, now));
        }
        out
    }

    /// `mining.suggest_difficulty`: honoured within the configured bounds and never below
    /// the channel's upstream difficulty; answered `true`.
    pub fn suggest_difficulty(
        &mut self,
        ctx: Sv1ConnectionContext,
        id: Id,
        difficulty: f64,
        now: Instant,
    ) -> Sv1Actions {
        let mut out: Sv1Actions = respond(ctx.id, Response::ok(id, true))
            .map(Sv1Actions::from)
            .unwrap_or_default();
        let (min_d, max_d) = (self.config.min_difficulty, self.config.max_difficulty);
        if let Some(m) = self.miners.get_mut(&ctx.id) {
            m.min_difficulty = Some(difficulty.clamp(min_d, max_d));
            m.hashrate =
                (difficulty * HASHES_PER_DIFFICULTY_1 * f64::from(self.config.shares_per_minute)
                    / 60.0) as f32;
            m.vardiff.reset(now);
        }
        out.extend(self.set_miner_difficulty(ctx.id, difficulty, now));
        out
    }

    /// `mining.suggest_target`: as `mining.suggest_difficulty` with the target's difficulty.
    pub fn suggest_target(
        &mut self,
        ctx: Sv1ConnectionContext,
        id: Id,
        target: Target,
        now: Instant,
    ) -> Sv1Actions {
        let difficulty = target_to_difficulty(&target);
        if !(difficulty.is_finite() && difficulty > 0.0) {
            return respond(ctx.id, Response::error(id, ErrorCode::Other))
                .map(Sv1Actions::from)
                .unwrap_or_default();
        }
        self.suggest_difficulty(ctx, id, difficulty, now)
    }

    /// `mining.submit`: the local checks, then `SubmitSharesExtended` upstream; the miner is
    /// answered when the verdict arrives (see the type docs).
    pub fn submit(
        &mut self,
        ctx: Sv1ConnectionContext,
        id: Id,
        share: Submit,
        now: Instant,
    ) -> Sv1Actions {
        let conn = ctx.id;
        let local_reject = |core: &mut Self, reason: &str, err: Sv1Error| {
            core.reject(reason);
            debug!(connection = %conn, reason, "share rejected locally");
            respond(conn, Response::error(id.clone(), err))
                .map(Sv1Actions::from)
                .unwrap_or_default()
        };
        let Some(m) = self.miners.get(&conn) else {
            return Sv1Actions::none();
        };
        let Some(ch) = m.channel.and_then(|c| self.channels.get(&c)) else {
            return local_reject(
                self,
                "upstream-unavailable",
                Sv1Error::new(20, UPSTREAM_UNAVAILABLE),
            );
        };
        // A job re-sent to this miner alone is its channel job under another number.
        let number = u64::from_str_radix(&share.job_id, 16)
            .ok()
            .map(|n| m.resolve_alias(n));
        let job = match number.and_then(|n| ch.find_job(n)) {
            Some(j) => j,
            None => {
                let stale = number.is_some_and(|n| n < ch.min_valid_job);
                return local_reject(
                    self,
                    if stale { "stale" } else { "job-not-found" },
                    ErrorCode::JobNotFound.into(),
                );
            }
        };
        if share.extranonce2.len() != m.extranonce2_size {
            return local_reject(
                self,
                "bad-extranonce2-size",
                Sv1Error::new(20, BAD_EXTRANONCE2),
            );
        }
        let mask = if job.version_rolling_allowed {
            m.version_mask
        } else {
            0
        };
        if let Some(bits) = share.version_bits {
            // Bits outside the mask must be clear, or (a miner sending its whole rolled
            // version) equal to the job's.
            let outside = bits & !mask;
            if !version_bits_within_mask(bits, mask) && outside != job.notify.version & !mask {
                return local_reject(self, "version-bits", Sv1Error::new(20, BAD_VERSION_BITS));
            }
        }
        let key = {
            let mut hasher = DefaultHasher::new();
            (
                job.number,
                &share.extranonce2,
                share.ntime,
                share.nonce,
                share.version_bits,
            )
                .hash(&mut hasher);
            hasher.finish()
        };
        if m.is_duplicate(key) {
            return local_reject(self, "duplicate", ErrorCode::DuplicateShare.into());
        }
        let work = evaluate_share(&job.notify, &m.extranonce1, &share, mask);
        let target = match m.prev_target {
            Some((prev, below)) if job.number < below => prev.max(m.target),
            _ => m.target,
        };
        if !work.meets(&target) {
            return local_reject(self, "low-difficulty", ErrorCode::LowDifficultyShare.into());
        }
        let meets_current = work.meets(&m.target);
        if work.meets(&nbits_to_target(job.notify.nbits)) {
            self.stats.blocks_found += 1;
            info!(connection = %conn, hash = %work.hash_display_hex(), "share meets the network target");
        }
        let mut extranonce = m.local.clone();
        extranonce.extend_from_slice(&share.extranonce2);
        // Extension 0x0002, only when the upstream negotiated it.
        let worker = match &self.upstream {
            Some(u) if u.worker_hashrate_tracking => m.worker.clone(),
            _ => None,
        };
        let difficulty = m.difficulty;
        let channel_id = ch.id;
        let Ok(extranonce) = B032Owned::try_from(extranonce) else {
            return local_reject(
                self,
                "bad-extranonce2-size",
                Sv1Error::new(20, BAD_EXTRANONCE2),
            );
        };
        let version = rolled_version(job.notify.version, share.version_bits, mask);
        let upstream_job_id = job.upstream_job_id;
        if self.pending.len() >= self.config.max_pending_shares {
            return local_reject(self, "upstream-busy", Sv1Error::new(20, UPSTREAM_BUSY));
        }
        if let Some(m) = self.miners.get_mut(&conn) {
            m.remember_share(key);
            m.vardiff.add_share();
            m.shared = true;
            if meets_current {
                m.fast_shares = m.fast_shares.saturating_add(1);
            }
        }
        let Some(ch) = self.channels.get_mut(&channel_id) else {
            return Sv1Actions::none();
        };
        let sequence_number = ch.next_sequence_number;
        ch.next_sequence_number = ch.next_sequence_number.wrapping_add(1);
        self.pending.insert(
            channel_id,
            sequence_number,
            PendingShare {
                conn,
                id,
                sent: now,
                difficulty,
            },
        );
        debug!(connection = %conn, channel_id, sequence_number, "share forwarded upstream");
        let msg = Sv2Message::Mining(MiningOwned::SubmitSharesExtended(
            SubmitSharesExtendedOwned {
                channel_id,
                sequence_number,
                job_id: upstream_job_id,
                nonce: share.nonce,
                ntime: share.ntime,
                version,
                extranonce,
            },
        ));
        let msg = match worker {
            Some(t) => msg.with_tlvs(t),
            None => msg,
        };
        Sv1Action::ToSibling(SiblingMessage::Sv2(msg)).into()
    }

    // ---------------------------------------------------------------- upstream side

    /// The upstream connection is set up: open the aggregated channel, or one channel per
    /// subscribed miner.
    pub fn upstream_connected(&mut self, ev: UpstreamEvent, now: Instant) -> Sv1Actions {
        let UpstreamEvent::Connected {
            success_flags,
            version_rolling_required,
            user_identity,
            index,
            worker_hashrate_tracking,
        } = ev
        else {
            return self.upstream_disconnected("".into(), now);
        };
        info!(index, %user_identity, worker_hashrate_tracking, "upstream connected");
        self.stats.upstream_error = None;
        self.upstream = Some(Upstream {
            success_flags,
            version_rolling: version_rolling_required,
            user_identity,
            worker_hashrate_tracking,
        });
        self.stats.worker_hashrate_tracking = worker_hashrate_tracking;
        self.stats.upstream_connected = true;
        self.stats.upstream_index = Some(index);
        let mut out = Sv1Actions::none();
        match self.config.mode {
            ChannelMode::Aggregated => {
                let hashrate = self.total_hashrate();
                if let Some(a) = self.open_channel(Opening::Aggregated, hashrate) {
                    out.push(a);
                }
            }
            ChannelMode::PerMiner => {
                let want: Vec<(ConnectionId, f32)> = self
                    .miners
                    .values()
                    .filter(|m| (m.subscribed || m.subscribe_id.is_some()) && !m.closing)
                    .map(|m| (m.ctx.id, m.hashrate))
                    .collect();
                for (conn, hashrate) in want {
                    if let Some(a) = self.open_channel(Opening::Miner(conn), hashrate) {
                        out.push(a);
                    }
                }
            }
        }
        out
    }

    /// An attempt to reach the upstream failed: remembered for the stats while it is down.
    pub fn upstream_failed(&mut self, reason: String) -> Sv1Actions {
        if !self.stats.upstream_connected {
            self.stats.upstream_error = Some(reason);
        }
        Sv1Actions::none()
    }

    fn total_hashrate(&self) -> f32 {
        let sum: f32 = self
            .miners
            .values()
            .filter(|m| m.subscribed)
            .map(|m| m.hashrate)
            .sum();
        sum.max(self.config.nominal_hashrate)
    }

    /// The upstream connection is gone: channels and jobs are dropped; shares in flight are
    /// answered `[20, "Upstream unavailable"]`; miners stay connected and get a new
    /// extranonce1 (or a reconnect) when a channel opens again.
    pub fn upstream_disconnected(&mut self, reason: String, _now: Instant) -> Sv1Actions {
        if self.upstream.is_some() {
            warn!(%reason, "upstream disconnected");
        }
        self.upstream = None;
        self.stats.upstream_connected = false;
        self.stats.worker_hashrate_tracking = false;
        self.stats.upstream_index = None;
        self.opening.clear();
        self.channels.clear();
        // Kept channels are gone with the connection; kept slots stay valid.
        self.resumable
            .retain(|_, r| !matches!(r.kept, Kept::Channel(_)));
        self.aggregated = None;
        let in_flight = self.pending.take_all();
        let out = self.answer_unavailable(in_flight, "upstream-unavailable", UPSTREAM_UNAVAILABLE);
        for m in self.miners.values_mut() {
            m.channel = None;
        }
        out
    }

    /// A Mining Protocol message from the upstream.
    pub fn upstream_message(&mut self, msg: MiningOwned, now: Instant) -> Sv1Actions {
        match msg {
            MiningOwned::OpenExtendedMiningChannelSuccess(m) => self.channel_opened(m, now),
            MiningOwned::OpenMiningChannelError(m) => self.channel_refused(m),
            MiningOwned::NewExtendedMiningJob(m) => self.new_job(m, now),
            MiningOwned::SetNewPrevHash(m) => self.new_prev_hash(m, now),
            MiningOwned::SetTarget(m) => self.set_target(m, now),
            MiningOwned::SubmitSharesSuccess(m) => self.shares_accepted(m, now),
            MiningOwned::SubmitSharesError(m) => self.share_rejected(m),
            MiningOwned::SetExtranoncePrefix(m) => self.set_extranonce_prefix(m, now),
            MiningOwned::SetGroupChannel(m) => self.set_group_channel(m),
            MiningOwned::CloseChannel(m) => self.channel_closed(m.channel_id),
            MiningOwned::UpdateChannelError(m) => {
                warn!(channel_id = m.channel_id, error_code = %m.error_code.as_utf8_or_hex(), "UpdateChannel refused");
                Sv1Actions::none()
            }
            other => {
                debug!(message = ?std::mem::discriminant(&other), "upstream message ignored");
                Sv1Actions::none()
            }
        }
    }

    fn channel_refused(&mut self, m: OpenMiningChannelErrorOwned) -> Sv1Actions {
        let Some(opening) = self.opening.remove(&m.request_id) else {
            return Sv1Actions::none();
        };
        let code = m.error_code.as_utf8_or_hex();
        warn!(request_id = m.request_id, error_code = %code, "upstream refused the channel");
        let conns: Vec<ConnectionId> = match opening {
            Opening::Miner(c) => vec![c],
            Opening::Aggregated => self
                .miners
                .values()
                .filter(|x| x.subscribe_id.is_some())
                .map(|x| x.ctx.id)
                .collect(),
        };
        let mut out = Sv1Actions::none();
        for c in conns {
            if let Some(m) = self.miners.get_mut(&c) {
                if let Some(id) = m.subscribe_id.take() {
                    if let Some(a) = respond(
                        c,
                        Response::error(
                            id,
                            Sv1Error::new(20, format!("Upstream refused the channel: {code}")),
                        ),
                    ) {
                        out.push(a);
                    }
                }
                m.closing = true;
                out.push(Sv1Action::Disconnect(
                    c,
                    format!("upstream refused the channel: {code}"),
                ));
            }
        }
        out
    }

    fn channel_closed(&mut self, channel_id: u32) -> Sv1Actions {
        let Some(ch) = self.channels.remove(&channel_id) else {
            return Sv1Actions::none();
        };
        warn!(channel_id, "upstream closed the channel");
        self.resumable
            .retain(|_, r| r.kept != Kept::Channel(channel_id));
        let in_flight = self.pending.take_channel(channel_id);
        let mut out =
            self.answer_unavailable(in_flight, "upstream-unavailable", UPSTREAM_UNAVAILABLE);
        let affected: Vec<ConnectionId> = self
            .miners
            .values()
            .filter(|m| m.channel == Some(channel_id))
            .map(|m| m.ctx.id)
            .collect();
        for c in &affected {
            if let Some(m) = self.miners.get_mut(c) {
                m.channel = None;
            }
        }
        if self.aggregated == Some(channel_id) {
            self.aggregated = None;
            let hashrate = self.total_hashrate();
            if let Some(a) = self.open_channel(Opening::Aggregated, hashrate) {
                out.push(a);
            }
        } else if let Some(owner) = ch.owner {
            if let Some(hashrate) = self.miners.get(&owner).map(|m| m.hashrate) {
                if let Some(a) = self.open_channel(Opening::Miner(owner), hashrate) {
                    out.push(a);
                }
            }
        }
        out
    }

    fn ready_miners(&self, channel_id: u32) -> Vec<ConnectionId> {
        let mut v: Vec<ConnectionId> = self
            .miners
            .values()
            .filter(|m| m.channel == Some(channel_id) && m.ready())
            .map(|m| m.ctx.id)
            .collect();
        v.sort_unstable();
        v
    }

    /// Periodic work (call about once a second): verdict timeouts, vardiff, `UpdateChannel`,
    /// keepalive jobs, expired resumable sessions, the hashrate estimate.
    pub fn tick(&mut self, now: Instant) -> Sv1Actions {
        // Shares without a verdict.
        let mut out = self.verdict_timeouts(now);
        // Aggregated mode without a channel (refused or closed by the upstream) while miners
        // wait: ask again, at most every 10 s.
        if self.config.mode == ChannelMode::Aggregated
            && self.upstream.is_some()
            && self.aggregated.is_none()
            && self.opening.is_empty()
            && self.miners.values().any(|m| m.subscribed && !m.closing)
            && self
                .last_open_retry
                .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(10))
        {
            self.last_open_retry = Some(now);
            let hashrate = self.total_hashrate();
            if let Some(a) = self.open_channel(Opening::Aggregated, hashrate) {
                out.push(a);
            }
        }
        if self.config.vardiff {
            out.extend(self.vardiff_tick(now));
        }
        out.extend(self.update_channels(now));
        // Keepalive: the current job again under a new id.
        if let Some(interval) = self.config.keepalive_interval {
            out.extend(self.keepalive(interval, now));
        }
        // Resumable sessions.
        let expired: Vec<String> = self
            .resumable
            .iter()
            .filter(|(_, r)| r.expires <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            match self.resumable.remove(&k).map(|r| r.kept) {
                Some(Kept::Slot(s)) => self.slots.release(s),
                Some(Kept::Channel(ch)) => {
                    debug!(
                        channel_id = ch,
                        "resume grace over: closing the kept channel"
                    );
                    if let Some(a) = self.close_channel(ch, "downstream disconnected") {
                        out.push(a);
                    }
                }
                None => {}
            }
        }
        // Hashrate window.
        while self
            .accepted_window
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > HASHRATE_WINDOW)
        {
            self.accepted_window.pop_front();
        }
        out
    }

    /// The counters at `now`.
    pub fn stats(&self, now: Instant) -> TranslatorStats {
        let mut s = self.stats.clone();
        s.connections = self.miners.len();
        s.miners = self.miners.values().filter(|m| m.ready()).count();
        s.channels = self.channels.len();
        s.shares_pending = self.pending.len();
        let window = now
            .saturating_duration_since(self.started)
            .min(HASHRATE_WINDOW)
            .as_secs_f64()
            .max(1.0);
        let work: f64 = self.accepted_window.iter().map(|(_, d)| d).sum();
        s.hashrate = work * HASHES_PER_DIFFICULTY_1 / window;
        s
    }
}
