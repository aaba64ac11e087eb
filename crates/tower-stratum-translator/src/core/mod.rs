//! The translation state machine, sans-IO: every input (an Sv1 request, an upstream Mining
//! message, a tick) comes with the time, and every output is an [`Sv1Action`] — replies and
//! pushes to miners, and Sv2 messages for the upstream as `ToSibling(SiblingMessage::Sv2)`.

use crate::config::{ChannelMode, ExtranonceChange, TranslatorConfig};
use crate::stats::TranslatorStats;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower_stratum_core::share_math::{
    difficulty_to_target, nbits_to_target, target_to_difficulty, HASHES_PER_DIFFICULTY_1,
};
use tower_stratum_core::stratum_core::binary_sv2::{B032Owned, U256Owned};
use tower_stratum_core::stratum_core::mining_sv2::{
    CloseChannelOwned, NewExtendedMiningJobOwned, OpenExtendedMiningChannelOwned,
    OpenExtendedMiningChannelSuccessOwned, OpenMiningChannelErrorOwned, SetExtranoncePrefixOwned,
    SetGroupChannelOwned, SetNewPrevHashOwned, SetTargetOwned, SubmitSharesErrorOwned,
    SubmitSharesExtendedOwned, SubmitSharesSuccessOwned, UpdateChannelOwned,
};
use tower_stratum_core::stratum_core::parsers_sv2::MiningOwned;
use tower_stratum_core::{session::str0255, ConnectionId, SiblingMessage, Sv2Message, TlvFields};
use tower_stratum_mining::vardiff::ClassicVardiff;
use tower_stratum_sv1::work::{
    evaluate_share, floor_power_of_two, rolled_version, version_bits_within_mask,
    BIP320_VERSION_ROLLING_MASK,
};
use tower_stratum_sv1::{
    Authorize, Configure, ConfigureResult, ErrorCode, ExtensionResult, Id, Notify, PrevHash,
    Reconnect, Response, ServerMessage, SetExtranonce, Submit, Subscribe, SubscribeResult,
    Sv1Error, Target,
};
use tower_stratum_sv1_service::{Sv1Action, Sv1Actions, Sv1ConnectionContext};
use tracing::{debug, info, warn};

/// Local extranonce bytes per miner in aggregated mode: 2 bytes, 65 536 miners per channel.
pub const AGGREGATED_LOCAL_BYTES: usize = 2;
/// Jobs kept per channel for the current chain tip (older ones are stale).
const MAX_JOBS: usize = 32;
/// Future jobs kept per channel.
const MAX_FUTURE_JOBS: usize = 16;
/// Shares remembered per miner for duplicate detection (cleared on every new tip).
const MAX_SEEN: usize = 1 << 16;
/// Window of the hashrate estimate.
const HASHRATE_WINDOW: Duration = Duration::from_secs(300);
/// Fast convergence: shares meeting a miner's current target needed before its hashrate is
/// estimated from them (8 shares: about 35 % relative error).
const FAST_MIN_SHARES: u32 = 8;
/// Fast convergence: the share rate, as a multiple of `shares_per_minute`, at or above which
/// the translator jumps to the estimate instead of waiting for vardiff's window.
const FAST_FACTOR: f64 = 4.0;
/// Fast convergence: the shortest measuring time.
const FAST_MIN_TIME: Duration = Duration::from_secs(1);
/// Fast convergence, refinement: with at least this many shares (a ~25 % error) a smaller
/// excess, [`FAST_REFINE_FACTOR`], is enough (an estimate taken during a flood can be low).
const FAST_REFINE_SHARES: u32 = 16;
/// Fast convergence, refinement: the share-rate multiple with [`FAST_REFINE_SHARES`].
const FAST_REFINE_FACTOR: f64 = 1.6;
/// First-share search: the divisor of each step.
const SEARCH_STEP: f64 = 16.0;
/// Job numbers remembered per miner for jobs re-sent to it alone.
const MAX_ALIASES: usize = 8;

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
    version_rolling: bool,
    user_identity: String,
    worker_hashrate_tracking: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opening {
    Aggregated,
    Miner(ConnectionId),
}

/// A job as miners see it: `mining.notify` with its Sv1 job number.
#[derive(Debug)]
struct Job {
    num: u64,
    upstream_id: u32,
    notify: Notify,
    version_rolling_allowed: bool,
}

/// A future job before its `SetNewPrevHash`.
#[derive(Debug, Clone)]
struct FutureJob {
    upstream_id: u32,
    coinb1: Vec<u8>,
    coinb2: Vec<u8>,
    merkle_branch: Vec<[u8; 32]>,
    version: u32,
    version_rolling_allowed: bool,
}

#[derive(Debug, Clone, Copy)]
struct Tip {
    prev_hash: PrevHash,
    nbits: u32,
    min_ntime: u32,
}

#[derive(Debug)]
struct Channel {
    id: u32,
    group_id: u32,
    prefix: Vec<u8>,
    /// Bytes after the prefix: the miners' local bytes then extranonce2.
    extranonce_size: usize,
    /// extranonce2 size for miners on this channel.
    e2size: usize,
    target: Target,
    /// The lowest difficulty whose target is not easier than `target`.
    floor: f64,
    next_seq: u32,
    future: VecDeque<FutureJob>,
    jobs: VecDeque<Arc<Job>>,
    /// Sv1 job numbers below this one are stale.
    min_valid_job: u64,
    tip: Option<Tip>,
    version_rolling_allowed: bool,
    nominal_hashrate: f32,
    last_update: Instant,
    last_job_at: Instant,
    owner: Option<ConnectionId>,
}

impl Channel {
    fn local_len(&self) -> usize {
        self.extranonce_size.saturating_sub(self.e2size)
    }

    fn find_job(&self, num: u64) -> Option<Arc<Job>> {
        self.jobs.iter().rev().find(|j| j.num == num).cloned()
    }

    fn current_job(&self) -> Option<Arc<Job>> {
        self.jobs.back().cloned()
    }
}

#[derive(Debug)]
struct Miner {
    ctx: Sv1ConnectionContext,
    subscribe_id: Option<Id>,
    session_id: Option<String>,
    /// The subscription id answered to `mining.subscribe` (lower-case hex of the
    /// extranonce1 given then): the session id a reconnecting miner presents.
    session_key: String,
    subscribed: bool,
    authorized: bool,
    channel: Option<u32>,
    slot: Option<u16>,
    local: Vec<u8>,
    extranonce1: Vec<u8>,
    /// Announced with `mining.set_extranonce`; used from the next job sent.
    next_extranonce1: Option<Vec<u8>>,
    e2size: usize,
    extranonce_subscribed: bool,
    version_mask: u32,
    min_difficulty: Option<f64>,
    difficulty: f64,
    target: Target,
    /// The previous (easier or harder) target, valid for jobs numbered below `.1`.
    prev_target: Option<(Target, u64)>,
    hashrate: f32,
    vardiff: ClassicVardiff,
    /// Shares meeting the current target since `fast_since` (the last difficulty change or
    /// start of mining): the fast-convergence estimate.
    fast_shares: u32,
    fast_since: Instant,
    /// Whether the miner sent a share that passed the local checks (ends the first-share
    /// search).
    shared: bool,
    /// Jobs sent to this miner alone under another number (first-share search): (that
    /// number, the channel job's number). The last [`MAX_ALIASES`].
    aliases: VecDeque<(u64, u64)>,
    seen: HashSet<u64>,
    last_job_sent: Option<Instant>,
    /// Ready to receive jobs: subscribed, authorized, on a channel.
    closing: bool,
    /// Extension 0x0002 `user_identity` TLV with the `mining.authorize` username.
    worker: Option<TlvFields>,
}

impl Miner {
    fn ready(&self) -> bool {
        self.subscribed && self.authorized && self.channel.is_some() && !self.closing
    }
}

/// What a departed miner's session keeps during the resume grace period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    /// Aggregated mode: its local extranonce slot on the shared channel.
    Slot(u16),
    /// Per-miner mode: its upstream channel, left open (owner gone) so a resume gets the same
    /// extranonce1; closed upstream when the grace period ends.
    Channel(u32),
}

#[derive(Debug)]
struct Resumable {
    kept: Kept,
    difficulty: f64,
    hashrate: f32,
    expires: Instant,
}

#[derive(Debug)]
struct PendingShare {
    conn: ConnectionId,
    id: Id,
    sent: Instant,
    difficulty: f64,
}

/// Free-list allocator of aggregated-mode slots (local extranonce values).
#[derive(Debug, Default)]
struct Slots {
    next: u32,
    free: Vec<u16>,
    reserved: HashSet<u16>,
}

impl Slots {
    fn take(&mut self) -> Option<u16> {
        if let Some(s) = self.free.pop() {
            return Some(s);
        }
        while self.next <= u32::from(u16::MAX) {
            let s = self.next as u16;
            self.next += 1;
            if !self.reserved.contains(&s) {
                return Some(s);
            }
        }
        None
    }

    fn release(&mut self, s: u16) {
        self.reserved.remove(&s);
        self.free.push(s);
    }
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
/// ([`ClassicVardiff`], SRI's algorithm) then aims at `shares_per_minute`. A miner far faster
/// than its difficulty (an ASIC on a CPU-sized start) is caught up at the next tick instead of
/// in vardiff's 10x steps: once at least 8 shares meeting its current target came, over at
/// least 1 s, at 4x `shares_per_minute` or more (or at least 32 at 1.6x or more), its
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
    cfg: TranslatorConfig,
    upstream: Option<Upstream>,
    next_request_id: u32,
    opening: HashMap<u32, Opening>,
    channels: HashMap<u32, Channel>,
    aggregated: Option<u32>,
    miners: HashMap<ConnectionId, Miner>,
    slots: Slots,
    resumable: HashMap<String, Resumable>,
    pending: BTreeMap<(u32, u32), PendingShare>,
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

/// The worker part of an Sv1 username: after the first `.` of the usual `account.worker`
/// form (as SRI's `translator_sv2` does), else the whole name. The account is the channel's
/// `user_identity` already; the 32-byte `user_identity` TLV then names the worker, not a
/// truncated account shared by all its workers.
pub fn worker_name(username: &str) -> &str {
    match username.split_once('.') {
        Some((_, worker)) if !worker.is_empty() => worker,
        _ => username,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The lowest difficulty whose target is not easier than `target`.
fn floor_difficulty(target: &Target) -> f64 {
    let mut d = target_to_difficulty(target);
    if !d.is_finite() || d <= 0.0 {
        return f64::MAX;
    }
    let mut eps = 1e-12;
    for _ in 0..40 {
        match difficulty_to_target(d) {
            Some(t) if t <= *target => return d,
            _ => {}
        }
        d *= 1.0 + eps;
        eps *= 4.0;
    }
    d
}

/// Fast convergence: the miner's hashrate (H/s) from the shares that met its current target
/// since its difficulty last changed, when they came at least [`FAST_FACTOR`] times faster
/// than `shares_per_minute` (at least [`FAST_MIN_SHARES`] of them, over at least
/// [`FAST_MIN_TIME`]), or [`FAST_REFINE_FACTOR`] times faster with at least
/// [`FAST_REFINE_SHARES`]; `None` otherwise.
fn fast_estimate(m: &Miner, now: Instant, shares_per_minute: f32) -> Option<f32> {
    let elapsed = now.saturating_duration_since(m.fast_since);
    if m.fast_shares < FAST_MIN_SHARES || elapsed < FAST_MIN_TIME {
        return None;
    }
    let secs = elapsed.as_secs_f64();
    let ratio = f64::from(m.fast_shares) * 60.0 / secs / f64::from(shares_per_minute);
    let far = ratio >= FAST_FACTOR;
    let clearly = m.fast_shares >= FAST_REFINE_SHARES && ratio >= FAST_REFINE_FACTOR;
    if !(far || clearly) {
        return None;
    }
    let h = f64::from(m.fast_shares) * m.difficulty * HASHES_PER_DIFFICULTY_1 / secs;
    (h.is_finite() && h > 0.0).then_some(h as f32)
}

/// The Sv1 error for an upstream `SubmitShares.Error` code.
pub fn map_upstream_error(code: &str) -> Sv1Error {
    let c = match code {
        "stale-share" | "invalid-job-id" => ErrorCode::JobNotFound,
        "duplicate-share" => ErrorCode::DuplicateShare,
        "difficulty-too-low" => ErrorCode::LowDifficultyShare,
        "invalid-user-identity" | "unknown-user" | "unauthorized" => ErrorCode::UnauthorizedWorker,
        _ => ErrorCode::Other,
    };
    Sv1Error::new(c.code(), format!("{} (upstream: {code})", c.message()))
}

impl TranslatorCore {
    /// A core with no miner and no upstream, started at `now`.
    pub fn new(cfg: TranslatorConfig, now: Instant) -> Self {
        Self {
            cfg,
            upstream: None,
            next_request_id: 1,
            opening: HashMap::new(),
            channels: HashMap::new(),
            aggregated: None,
            miners: HashMap::new(),
            slots: Slots::default(),
            resumable: HashMap::new(),
            pending: BTreeMap::new(),
            next_job: 1,
            stats: TranslatorStats::default(),
            accepted_window: VecDeque::new(),
            started: now,
            last_open_retry: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &TranslatorConfig {
        &self.cfg
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

    /// Clamps a wanted difficulty to the configured bounds, the miner's minimum and the
    /// channel's floor; rounds to a power of two if configured.
    fn clamp_difficulty(&self, wanted: f64, miner_min: Option<f64>, floor: f64) -> f64 {
        let mut d = wanted.clamp(self.cfg.min_difficulty, self.cfg.max_difficulty);
        if let Some(m) = miner_min {
            d = d.max(m);
        }
        if self.cfg.power_of_two_difficulty {
            d = floor_power_of_two(d);
        }
        if d < floor {
            d = floor;
            if self.cfg.power_of_two_difficulty && d >= 1.0 {
                let p = floor_power_of_two(d);
                d = if p < floor { p * 2.0 } else { p };
            }
        }
        d
    }

    fn hashrate_to_difficulty(&self, h: f32) -> f64 {
        f64::from(h) * 60.0 / f64::from(self.cfg.shares_per_minute) / HASHES_PER_DIFFICULTY_1
    }

    fn difficulty_to_hashrate(&self, d: f64) -> f32 {
        (d * HASHES_PER_DIFFICULTY_1 * f64::from(self.cfg.shares_per_minute) / 60.0) as f32
    }

    fn open_channel(&mut self, opening: Opening, hashrate: f32) -> Option<Sv1Action> {
        let up = self.upstream.as_ref()?;
        let user_identity = str0255(&up.user_identity)?;
        let request_id = self.request_id();
        let local = match self.cfg.mode {
            ChannelMode::Aggregated => AGGREGATED_LOCAL_BYTES,
            ChannelMode::PerMiner => 0,
        };
        self.opening.insert(request_id, opening);
        info!(request_id, ?opening, "opening an upstream extended channel");
        Some(to_upstream(MiningOwned::OpenExtendedMiningChannel(
            OpenExtendedMiningChannelOwned {
                request_id,
                user_identity,
                nominal_hash_rate: hashrate,
                max_target: U256Owned::from([0xffu8; 32]),
                min_extranonce_size: (self.cfg.extranonce2_size + local) as u16,
            },
        )))
    }

    // ---------------------------------------------------------------- Sv1 side

    /// A miner connected.
    pub fn connection_added(&mut self, ctx: Sv1ConnectionContext, now: Instant) -> Sv1Actions {
        let (start, hashrate) = match self.cfg.start_difficulty {
            Some(d) => (d, self.difficulty_to_hashrate(d)),
            None => (
                self.hashrate_to_difficulty(self.cfg.nominal_hashrate),
                self.cfg.nominal_hashrate,
            ),
        };
        let difficulty = self.clamp_difficulty(start, None, 0.0);
        let target = difficulty_to_target(difficulty).unwrap_or(Target::MAX);
        self.miners.insert(
            ctx.id,
            Miner {
                ctx,
                subscribe_id: None,
                session_id: None,
                session_key: String::new(),
                subscribed: false,
                authorized: false,
                channel: None,
                slot: None,
                local: Vec::new(),
                extranonce1: Vec::new(),
                next_extranonce1: None,
                e2size: self.cfg.extranonce2_size,
                extranonce_subscribed: false,
                version_mask: 0,
                min_difficulty: None,
                difficulty,
                target,
                prev_target: None,
                hashrate,
                vardiff: ClassicVardiff::new(Some(now), 1.0),
                fast_shares: 0,
                fast_since: now,
                shared: false,
                aliases: VecDeque::new(),
                seen: HashSet::new(),
                last_job_sent: None,
                closing: false,
                worker: None,
            },
        );
        Sv1Actions::none()
    }

    /// A miner disconnected: frees its slot (kept for resumption within the grace period)
    /// and, per-miner, closes its upstream channel.
    pub fn connection_removed(&mut self, ctx: Sv1ConnectionContext, now: Instant) -> Sv1Actions {
        let mut out = Sv1Actions::none();
        let Some(m) = self.miners.remove(&ctx.id) else {
            return out;
        };
        let resumable = self.cfg.resume_grace > Duration::ZERO
            && m.subscribed
            && !m.closing
            && !m.session_key.is_empty();
        let keep = |kept| Resumable {
            kept,
            difficulty: m.difficulty,
            hashrate: m.hashrate,
            expires: now + self.cfg.resume_grace,
        };
        if let Some(slot) = m.slot {
            if resumable {
                self.slots.reserved.insert(slot);
                self.resumable
                    .insert(m.session_key.clone(), keep(Kept::Slot(slot)));
            } else {
                self.slots.release(slot);
            }
        }
        if self.cfg.mode == ChannelMode::PerMiner {
            self.opening.retain(|_, o| *o != Opening::Miner(ctx.id));
            if let Some(ch) = m.channel {
                // Nobody to answer any more: verdicts still in flight are dropped.
                self.pending.retain(|(c, _), _| *c != ch);
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
        self.pending.retain(|(c, _), _| *c != ch);
        str0255(reason).map(|reason_code| {
            to_upstream(MiningOwned::CloseChannel(CloseChannelOwned {
                channel_id: ch,
                reason_code,
            }))
        })
    }

    /// Per-miner mode: the channel kept for the session id the miner presented in
    /// `mining.subscribe`, if any and still open; the miner becomes its owner again with its
    /// previous difficulty and hashrate.
    fn resume_channel(&mut self, conn: ConnectionId, now: Instant) -> Option<u32> {
        let m = self.miners.get_mut(&conn)?;
        let sid = m.session_id.as_ref()?.to_ascii_lowercase();
        let r = self.resumable.get(&sid)?;
        let Kept::Channel(ch) = r.kept else {
            return None;
        };
        if r.expires <= now || !self.channels.contains_key(&ch) {
            return None;
        }
        let r = self.resumable.remove(&sid)?;
        m.hashrate = r.hashrate;
        m.difficulty = r.difficulty;
        if let Some(c) = self.channels.get_mut(&ch) {
            c.owner = Some(conn);
        }
        info!(connection = %conn, channel_id = ch, "session resumed");
        Some(ch)
    }

    /// `mining.configure` (BIP310): version rolling is granted as `miner mask AND BIP320 mask`
    /// only when the upstream allows it; `minimum-difficulty` and `subscribe-extranonce` are
    /// honoured; `info` is accepted.
    pub fn configure(&mut self, ctx: Sv1ConnectionContext, id: Id, msg: Configure) -> Sv1Actions {
        let allowed = self.version_rolling_permitted(ctx.id);
        let (min_d, max_d) = (self.cfg.min_difficulty, self.cfg.max_difficulty);
        let Some(m) = self.miners.get_mut(&ctx.id) else {
            return Sv1Actions::none();
        };
        let mut r = ConfigureResult::default();
        if let Some(vr) = msg.version_rolling {
            let requested = vr.mask.unwrap_or(u32::MAX);
            let granted = requested & BIP320_VERSION_ROLLING_MASK;
            let min_bits = vr.min_bit_count.unwrap_or(0);
            if !allowed {
                m.version_mask = 0;
                r.version_rolling = Some(ExtensionResult::Error(
                    "version rolling not allowed by the upstream".into(),
                ));
            } else if granted == 0 || granted.count_ones() < min_bits {
                m.version_mask = 0;
                r.version_rolling = Some(ExtensionResult::Rejected);
            } else {
                m.version_mask = granted;
                r.version_rolling = Some(ExtensionResult::Accepted);
                r.version_rolling_mask = Some(granted);
            }
        }
        if let Some(md) = msg.minimum_difficulty {
            match md.value {
                Some(v) if v.is_finite() && v > 0.0 => {
                    m.min_difficulty = Some(v.clamp(min_d, max_d));
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
        if self.cfg.require_version_rolling {
            // Setup requires it: the upstream either allows rolling on every job or refuses
            // the connection (and then nobody mines).
            return true;
        }
        let ch = match self.cfg.mode {
            ChannelMode::Aggregated => self.aggregated,
            ChannelMode::PerMiner => self.miners.get(&conn).and_then(|m| m.channel),
        };
        ch.and_then(|c| self.channels.get(&c))
            .is_some_and(|c| c.version_rolling_allowed && !c.jobs.is_empty())
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
        match self.cfg.mode {
            ChannelMode::Aggregated => match self.aggregated {
                Some(ch) => out.extend(self.assign_channel(ctx.id, ch, now)),
                None => {
                    // No channel and none opening (e.g. the upstream refused one): ask again.
                    if !self.opening.values().any(|o| *o == Opening::Aggregated) {
                        let h = self.total_hashrate();
                        if let Some(a) = self.open_channel(Opening::Aggregated, h) {
                            out.push(a);
                        }
                    }
                }
            },
            ChannelMode::PerMiner => {
                let h = m.hashrate;
                if let Some(ch) = self.resume_channel(ctx.id, now) {
                    out.extend(self.assign_channel(ctx.id, ch, now));
                } else if let Some(a) = self.open_channel(Opening::Miner(ctx.id), h) {
                    out.push(a);
                }
            }
        }
        out
    }

    /// Puts a miner on channel `ch`: allocates its local extranonce bytes; answers a pending
    /// subscribe, or announces the new extranonce1 to an already subscribed miner.
    fn assign_channel(&mut self, conn: ConnectionId, ch: u32, now: Instant) -> Sv1Actions {
        let mut out = Sv1Actions::none();
        let Some(c) = self.channels.get(&ch) else {
            return out;
        };
        let (prefix, local_len, e2size, floor) =
            (c.prefix.clone(), c.local_len(), c.e2size, c.floor);
        let Some(m) = self.miners.get_mut(&conn) else {
            return out;
        };
        // Local bytes: aggregated mode numbers miners; per-miner mode owns the channel.
        let mut resumed = None;
        if self.cfg.mode == ChannelMode::Aggregated && m.slot.is_none() {
            if let Some(sid) = m.session_id.as_ref().map(|s| s.to_ascii_lowercase()) {
                if self
                    .resumable
                    .get(&sid)
                    .is_some_and(|r| matches!(r.kept, Kept::Slot(_)))
                {
                    if let Some(r) = self.resumable.remove(&sid) {
                        if r.expires > now {
                            resumed = Some(r);
                        } else if let Kept::Slot(s) = r.kept {
                            self.slots.release(s);
                        }
                    }
                }
            }
            m.slot = match resumed.as_ref().map(|r| r.kept) {
                Some(Kept::Slot(s)) => Some(s),
                _ => self.slots.take(),
            };
            if m.slot.is_none() {
                warn!(connection = %conn, "no free extranonce slot on the aggregated channel");
                m.closing = true;
                if let Some(id) = m.subscribe_id.take() {
                    out.extend(Sv1Actions::from(send(
                        conn,
                        Response::error(id, Sv1Error::new(20, "Channel full")),
                    )));
                }
                out.push(Sv1Action::Disconnect(conn, "channel full".into()));
                return out;
            }
        }
        let mut local = vec![0u8; local_len];
        if let Some(s) = m.slot {
            let b = s.to_be_bytes();
            let n = local_len.min(2);
            local[..n].copy_from_slice(&b[2 - n..]);
        }
        let mut en1 = prefix;
        en1.extend_from_slice(&local);
        m.channel = Some(ch);
        m.local = local;
        if let Some(r) = &resumed {
            m.hashrate = r.hashrate;
            m.difficulty = r.difficulty;
            info!(connection = %conn, "session resumed");
        }
        // The difficulty must respect the channel floor.
        let d = m.difficulty;
        let mmin = m.min_difficulty;
        let nd = self.clamp_difficulty(d, mmin, floor);
        let Some(m) = self.miners.get_mut(&conn) else {
            return out;
        };
        if nd != m.difficulty {
            m.fast_shares = 0;
            m.fast_since = now;
        }
        m.difficulty = nd;
        m.target = difficulty_to_target(nd).unwrap_or(m.target);
        if let Some(id) = m.subscribe_id.take() {
            // First channel: answer the subscribe.
            m.extranonce1 = en1.clone();
            m.e2size = e2size;
            m.subscribed = true;
            let sid = hex(&en1);
            m.session_key = sid.clone();
            let r = SubscribeResult {
                subscriptions: vec![
                    ("mining.set_difficulty".into(), sid.clone()),
                    ("mining.notify".into(), sid),
                ],
                extranonce1: en1,
                extranonce2_size: e2size,
            };
            if let Some(a) = respond(conn, Response::ok(id, r.to_value())) {
                out.push(a);
            }
            if m.authorized {
                out.extend(self.start_mining(conn, now));
            }
        } else if m.subscribed && (m.extranonce1 != en1 || m.e2size != e2size) {
            // A new channel for a subscribed miner (upstream reconnect, prefix change).
            if m.extranonce_subscribed {
                out.push(send(
                    conn,
                    ServerMessage::SetExtranonce(SetExtranonce {
                        extranonce1: en1.clone(),
                        extranonce2_size: e2size,
                    }),
                ));
                m.next_extranonce1 = Some(en1);
                m.e2size = e2size;
                if m.authorized {
                    out.extend(self.start_mining(conn, now));
                }
            } else {
                m.closing = true;
                if self.cfg.extranonce_change == ExtranonceChange::Reconnect {
                    out.push(send(conn, ServerMessage::Reconnect(Reconnect::default())));
                }
                out.push(Sv1Action::Disconnect(
                    conn,
                    "extranonce1 changed; miner did not subscribe to extranonce".into(),
                ));
            }
        } else if m.subscribed && m.authorized {
            out.extend(self.start_mining(conn, now));
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
        if self.cfg.worker_hashrate_tracking {
            m.worker = Some(TlvFields::user_identity(worker_name(&msg.username)));
        }
        let first = !m.authorized;
        m.authorized = true;
        if first && m.subscribed {
            out.extend(self.start_mining(ctx.id, now));
        }
        out
    }

    /// Sends the miner its difficulty and the current job (clean).
    fn start_mining(&mut self, conn: ConnectionId, now: Instant) -> Sv1Actions {
        let mut out = Sv1Actions::none();
        let Some(m) = self.miners.get(&conn) else {
            return out;
        };
        if !m.ready() {
            return out;
        }
        out.push(send(conn, ServerMessage::SetDifficulty(m.difficulty)));
        let channel = m.channel;
        if let Some(m) = self.miners.get_mut(&conn) {
            m.fast_shares = 0;
            m.fast_since = now;
        }
        let job = channel
            .and_then(|c| self.channels.get(&c))
            .and_then(Channel::current_job);
        if let Some(job) = job {
            let mut n = job.notify.clone();
            n.clean_jobs = true;
            self.mark_job_sent(conn, now, true);
            out.push(send(conn, ServerMessage::Notify(n)));
        }
        out
    }

    /// The channel's current job again to this miner alone, under a new job number (miners
    /// ignore a job id they have), `clean_jobs` true; shares for it are checked against the
    /// channel job (see `aliases`).
    fn resend_current_job(&mut self, conn: ConnectionId, now: Instant) -> Option<Sv1Action> {
        let m = self.miners.get(&conn)?;
        let job = m
            .channel
            .and_then(|c| self.channels.get(&c))
            .and_then(Channel::current_job)?;
        let num = self.next_job;
        self.next_job += 1;
        let mut n = job.notify.clone();
        n.job_id = format!("{num:x}");
        n.clean_jobs = true;
        let m = self.miners.get_mut(&conn)?;
        if m.aliases.len() >= MAX_ALIASES {
            m.aliases.pop_front();
        }
        m.aliases.push_back((num, job.num));
        self.mark_job_sent(conn, now, true);
        Some(send(conn, ServerMessage::Notify(n)))
    }

    /// Bookkeeping when a job reaches a miner: the announced extranonce1 applies now.
    fn mark_job_sent(&mut self, conn: ConnectionId, now: Instant, clean: bool) {
        if let Some(m) = self.miners.get_mut(&conn) {
            if let Some(en1) = m.next_extranonce1.take() {
                m.local = en1
                    .get(en1.len().saturating_sub(m.local.len())..)
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default();
                m.extranonce1 = en1;
            }
            m.last_job_sent = Some(now);
            if clean {
                m.seen.clear();
            }
        }
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
        let (min_d, max_d) = (self.cfg.min_difficulty, self.cfg.max_difficulty);
        if let Some(m) = self.miners.get_mut(&ctx.id) {
            m.min_difficulty = Some(difficulty.clamp(min_d, max_d));
            m.hashrate =
                (difficulty * HASHES_PER_DIFFICULTY_1 * f64::from(self.cfg.shares_per_minute)
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
        let d = target_to_difficulty(&target);
        if !(d.is_finite() && d > 0.0) {
            return respond(ctx.id, Response::error(id, ErrorCode::Other))
                .map(Sv1Actions::from)
                .unwrap_or_default();
        }
        self.suggest_difficulty(ctx, id, d, now)
    }

    /// Sets a miner's difficulty to `wanted` (clamped); pushes `mining.set_difficulty` if it
    /// changed and the miner is mining.
    fn set_miner_difficulty(
        &mut self,
        conn: ConnectionId,
        wanted: f64,
        now: Instant,
    ) -> Sv1Actions {
        let Some(m) = self.miners.get(&conn) else {
            return Sv1Actions::none();
        };
        let floor = m
            .channel
            .and_then(|c| self.channels.get(&c))
            .map(|c| c.floor)
            .unwrap_or(0.0);
        let d = self.clamp_difficulty(wanted, m.min_difficulty, floor);
        let next_job = self.next_job;
        let Some(m) = self.miners.get_mut(&conn) else {
            return Sv1Actions::none();
        };
        if d == m.difficulty {
            return Sv1Actions::none();
        }
        let Some(target) = difficulty_to_target(d) else {
            return Sv1Actions::none();
        };
        // Jobs sent before the change may still be mined at the old difficulty.
        m.prev_target = Some((m.target, next_job));
        m.difficulty = d;
        m.target = target;
        m.fast_shares = 0;
        m.fast_since = now;
        debug!(connection = %conn, difficulty = d, "difficulty changed");
        if m.ready() {
            Sv1Actions::from(send(conn, ServerMessage::SetDifficulty(d)))
        } else {
            Sv1Actions::none()
        }
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
        let num = u64::from_str_radix(&share.job_id, 16).ok();
        // A job re-sent to this miner alone is its channel job under another number.
        let num = num.map(|n| {
            m.aliases
                .iter()
                .find(|(alias, _)| *alias == n)
                .map_or(n, |(_, original)| *original)
        });
        let job = match num.and_then(|n| ch.find_job(n)) {
            Some(j) => j,
            None => {
                let stale = num.is_some_and(|n| n < ch.min_valid_job);
                return local_reject(
                    self,
                    if stale { "stale" } else { "job-not-found" },
                    ErrorCode::JobNotFound.into(),
                );
            }
        };
        if share.extranonce2.len() != m.e2size {
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
            let mut h = DefaultHasher::new();
            (
                job.num,
                &share.extranonce2,
                share.ntime,
                share.nonce,
                share.version_bits,
            )
                .hash(&mut h);
            h.finish()
        };
        if m.seen.contains(&key) {
            return local_reject(self, "duplicate", ErrorCode::DuplicateShare.into());
        }
        let work = evaluate_share(&job.notify, &m.extranonce1, &share, mask);
        let target = match m.prev_target {
            Some((prev, below)) if job.num < below => prev.max(m.target),
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
        let upstream_job = job.upstream_id;
        if self.pending.len() >= self.cfg.max_pending_shares {
            return local_reject(self, "upstream-busy", Sv1Error::new(20, UPSTREAM_BUSY));
        }
        if let Some(m) = self.miners.get_mut(&conn) {
            if m.seen.len() >= MAX_SEEN {
                m.seen.clear();
            }
            m.seen.insert(key);
            m.vardiff.add_share();
            m.shared = true;
            if meets_current {
                m.fast_shares = m.fast_shares.saturating_add(1);
            }
        }
        let Some(ch) = self.channels.get_mut(&channel_id) else {
            return Sv1Actions::none();
        };
        let seq = ch.next_seq;
        ch.next_seq = ch.next_seq.wrapping_add(1);
        self.pending.insert(
            (channel_id, seq),
            PendingShare {
                conn,
                id,
                sent: now,
                difficulty,
            },
        );
        debug!(connection = %conn, channel_id, sequence_number = seq, "share forwarded upstream");
        let msg = Sv2Message::Mining(MiningOwned::SubmitSharesExtended(
            SubmitSharesExtendedOwned {
                channel_id,
                sequence_number: seq,
                job_id: upstream_job,
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
            version_rolling_required,
            user_identity,
            index,
            worker_hashrate_tracking,
            ..
        } = ev
        else {
            return self.upstream_disconnected("".into(), now);
        };
        info!(index, %user_identity, worker_hashrate_tracking, "upstream connected");
        self.stats.upstream_error = None;
        self.upstream = Some(Upstream {
            version_rolling: version_rolling_required,
            user_identity,
            worker_hashrate_tracking,
        });
        self.stats.worker_hashrate_tracking = worker_hashrate_tracking;
        self.stats.upstream_connected = true;
        self.stats.upstream_index = Some(index);
        let mut out = Sv1Actions::none();
        match self.cfg.mode {
            ChannelMode::Aggregated => {
                let h = self.total_hashrate();
                if let Some(a) = self.open_channel(Opening::Aggregated, h) {
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
                for (conn, h) in want {
                    if let Some(a) = self.open_channel(Opening::Miner(conn), h) {
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
        let s: f32 = self
            .miners
            .values()
            .filter(|m| m.subscribed)
            .map(|m| m.hashrate)
            .sum();
        s.max(self.cfg.nominal_hashrate)
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
        let mut out = Sv1Actions::none();
        for (_, p) in std::mem::take(&mut self.pending) {
            self.reject("upstream-unavailable");
            if let Some(a) = respond(
                p.conn,
                Response::error(p.id, Sv1Error::new(20, UPSTREAM_UNAVAILABLE)),
            ) {
                out.push(a);
            }
        }
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

    fn channel_opened(
        &mut self,
        m: OpenExtendedMiningChannelSuccessOwned,
        now: Instant,
    ) -> Sv1Actions {
        let Some(opening) = self.opening.remove(&m.request_id) else {
            debug!(
                request_id = m.request_id,
                "channel open answer for no request"
            );
            return Sv1Actions::none();
        };
        let prefix = m.extranonce_prefix.as_bytes().to_vec();
        let size = usize::from(m.extranonce_size);
        let local = match self.cfg.mode {
            ChannelMode::Aggregated => AGGREGATED_LOCAL_BYTES,
            ChannelMode::PerMiner => 0,
        };
        let e2size = self.cfg.extranonce2_size.min(size.saturating_sub(local));
        if e2size == 0 || prefix.len() + size > 32 {
            warn!(
                channel_id = m.channel_id,
                extranonce_size = size,
                "upstream channel unusable: too few extranonce bytes"
            );
            let mut out = Sv1Actions::none();
            if let Some(reason_code) = str0255("extranonce too small") {
                out.push(to_upstream(MiningOwned::CloseChannel(CloseChannelOwned {
                    channel_id: m.channel_id,
                    reason_code,
                })));
            }
            if let Opening::Miner(conn) = opening {
                out.push(Sv1Action::Disconnect(
                    conn,
                    "upstream extranonce too small".into(),
                ));
            }
            return out;
        }
        let target = Target::from_le_bytes(m.target.to_array());
        info!(
            channel_id = m.channel_id,
            group_channel_id = m.group_channel_id,
            extranonce_prefix = %hex(&prefix),
            extranonce_size = size,
            e2size,
            upstream_difficulty = target_to_difficulty(&target),
            "upstream channel open"
        );
        let owner = match opening {
            Opening::Miner(c) => {
                if !self.miners.contains_key(&c) {
                    // The miner left while the channel was opening.
                    let mut out = Sv1Actions::none();
                    if let Some(reason_code) = str0255("downstream disconnected") {
                        out.push(to_upstream(MiningOwned::CloseChannel(CloseChannelOwned {
                            channel_id: m.channel_id,
                            reason_code,
                        })));
                    }
                    return out;
                }
                Some(c)
            }
            Opening::Aggregated => None,
        };
        self.channels.insert(
            m.channel_id,
            Channel {
                id: m.channel_id,
                group_id: m.group_channel_id,
                prefix,
                extranonce_size: size,
                e2size,
                target,
                floor: floor_difficulty(&target),
                next_seq: 0,
                future: VecDeque::new(),
                jobs: VecDeque::new(),
                min_valid_job: self.next_job,
                tip: None,
                version_rolling_allowed: self.upstream.as_ref().is_some_and(|u| u.version_rolling),
                nominal_hashrate: 0.0,
                last_update: now,
                last_job_at: now,
                owner,
            },
        );
        let mut out = Sv1Actions::none();
        match owner {
            Some(conn) => out.extend(self.assign_channel(conn, m.channel_id, now)),
            None => {
                self.aggregated = Some(m.channel_id);
                let conns: Vec<ConnectionId> = self
                    .miners
                    .values()
                    .filter(|x| (x.subscribed || x.subscribe_id.is_some()) && !x.closing)
                    .map(|x| x.ctx.id)
                    .collect();
                for c in conns {
                    out.extend(self.assign_channel(c, m.channel_id, now));
                }
            }
        }
        if let Some(ch) = self.channels.get_mut(&m.channel_id) {
            ch.nominal_hashrate = 0.0;
        }
        out
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
        let mut out = Sv1Actions::none();
        let keys: Vec<(u32, u32)> = self
            .pending
            .range((channel_id, 0)..=(channel_id, u32::MAX))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(p) = self.pending.remove(&k) {
                self.reject("upstream-unavailable");
                if let Some(a) = respond(
                    p.conn,
                    Response::error(p.id, Sv1Error::new(20, UPSTREAM_UNAVAILABLE)),
                ) {
                    out.push(a);
                }
            }
        }
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
            let h = self.total_hashrate();
            if let Some(a) = self.open_channel(Opening::Aggregated, h) {
                out.push(a);
            }
        } else if let Some(owner) = ch.owner {
            let h = self.miners.get(&owner).map(|m| m.hashrate);
            if let Some(h) = h {
                if let Some(a) = self.open_channel(Opening::Miner(owner), h) {
                    out.push(a);
                }
            }
        }
        out
    }

    /// Channels a job or prev hash addressed to `channel_id` applies to: the channel itself,
    /// or every member of the group channel `channel_id`.
    fn affected(&self, channel_id: u32) -> Vec<u32> {
        if self.channels.contains_key(&channel_id) {
            return vec![channel_id];
        }
        let mut v: Vec<u32> = self
            .channels
            .values()
            .filter(|c| c.group_id == channel_id && c.group_id != 0)
            .map(|c| c.id)
            .collect();
        v.sort_unstable();
        v
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

    /// Issues `job` on `channel_id` to its ready miners (one multicast, encoded once).
    fn issue(&mut self, channel_id: u32, job: Arc<Job>, now: Instant) -> Sv1Actions {
        let conns = self.ready_miners(channel_id);
        let clean = job.notify.clean_jobs;
        if let Some(ch) = self.channels.get_mut(&channel_id) {
            let vr_changed = ch.version_rolling_allowed != job.version_rolling_allowed;
            ch.version_rolling_allowed = job.version_rolling_allowed;
            if clean {
                ch.jobs.clear();
                ch.min_valid_job = job.num;
            }
            ch.jobs.push_back(job.clone());
            while ch.jobs.len() > MAX_JOBS {
                ch.jobs.pop_front();
            }
            ch.last_job_at = now;
            let mut out = Sv1Actions::none();
            if vr_changed {
                // Tell miners holding a mask whether this job lets them roll.
                let allowed = job.version_rolling_allowed;
                for c in &conns {
                    if let Some(m) = self.miners.get(c) {
                        if m.version_mask != 0 {
                            out.push(send(
                                *c,
                                ServerMessage::SetVersionMask(if allowed {
                                    m.version_mask
                                } else {
                                    0
                                }),
                            ));
                        }
                    }
                }
            }
            let min_valid = ch.min_valid_job;
            for c in &conns {
                self.mark_job_sent(*c, now, clean);
                if let Some(m) = self.miners.get_mut(c) {
                    // Every job mined at the old difficulty is stale now.
                    if m.prev_target.is_some_and(|(_, below)| below <= min_valid) {
                        m.prev_target = None;
                    }
                }
            }
            if !conns.is_empty() {
                out.push(Sv1Action::Multicast(
                    conns,
                    ServerMessage::Notify(job.notify.clone()),
                ));
            }
            return out;
        }
        Sv1Actions::none()
    }

    fn new_job(&mut self, m: NewExtendedMiningJobOwned, now: Instant) -> Sv1Actions {
        let channels = self.affected(m.channel_id);
        if channels.is_empty() {
            debug!(channel_id = m.channel_id, "job for an unknown channel");
            return Sv1Actions::none();
        }
        let fj = FutureJob {
            upstream_id: m.job_id,
            coinb1: m.coinbase_tx_prefix.as_bytes().to_vec(),
            coinb2: m.coinbase_tx_suffix.as_bytes().to_vec(),
            merkle_branch: m.merkle_path.iter().map(|n| n.to_array()).collect(),
            version: m.version,
            version_rolling_allowed: m.version_rolling_allowed,
        };
        let min_ntime = m.min_ntime.clone().into_inner();
        let mut out = Sv1Actions::none();
        for c in channels {
            let Some(ch) = self.channels.get_mut(&c) else {
                continue;
            };
            match (min_ntime, ch.tip) {
                (None, _) => {
                    ch.future.retain(|f| f.upstream_id != fj.upstream_id);
                    ch.future.push_back(fj.clone());
                    while ch.future.len() > MAX_FUTURE_JOBS {
                        ch.future.pop_front();
                    }
                }
                (Some(ntime), Some(tip)) => {
                    let job = self.make_job(&fj, tip, ntime, false);
                    out.extend(self.issue(c, job, now));
                }
                (Some(_), None) => debug!(channel_id = c, "non-future job before any prev hash"),
            }
        }
        out
    }

    fn make_job(&mut self, f: &FutureJob, tip: Tip, ntime: u32, clean: bool) -> Arc<Job> {
        let num = self.next_job;
        self.next_job += 1;
        Arc::new(Job {
            num,
            upstream_id: f.upstream_id,
            version_rolling_allowed: f.version_rolling_allowed,
            notify: Notify {
                job_id: format!("{num:x}"),
                prev_hash: tip.prev_hash,
                coinb1: f.coinb1.clone(),
                coinb2: f.coinb2.clone(),
                merkle_branch: f.merkle_branch.clone(),
                version: f.version,
                nbits: tip.nbits,
                ntime,
                clean_jobs: clean,
            },
        })
    }

    fn new_prev_hash(&mut self, m: SetNewPrevHashOwned, now: Instant) -> Sv1Actions {
        let tip = Tip {
            prev_hash: PrevHash::from_header_bytes(m.prev_hash.to_array()),
            nbits: m.nbits,
            min_ntime: m.min_ntime,
        };
        let mut out = Sv1Actions::none();
        for c in self.affected(m.channel_id) {
            let Some(ch) = self.channels.get_mut(&c) else {
                continue;
            };
            ch.tip = Some(tip);
            let fj = ch
                .future
                .iter()
                .find(|f| f.upstream_id == m.job_id)
                .cloned();
            ch.future.clear();
            match fj {
                Some(fj) => {
                    let job = self.make_job(&fj, tip, tip.min_ntime, true);
                    out.extend(self.issue(c, job, now));
                }
                None => {
                    // A tip without its job: everything before is stale, nothing to mine.
                    debug!(
                        channel_id = c,
                        job_id = m.job_id,
                        "SetNewPrevHash for an unknown job"
                    );
                    ch.jobs.clear();
                    ch.min_valid_job = self.next_job;
                }
            }
        }
        out
    }

    fn set_target(&mut self, m: SetTargetOwned, now: Instant) -> Sv1Actions {
        let target = Target::from_le_bytes(m.maximum_target.to_array());
        let mut out = Sv1Actions::none();
        for c in self.affected(m.channel_id) {
            let Some(ch) = self.channels.get_mut(&c) else {
                continue;
            };
            ch.target = target;
            ch.floor = floor_difficulty(&target);
            info!(
                channel_id = c,
                upstream_difficulty = ch.floor,
                "upstream target changed"
            );
            let conns: Vec<(ConnectionId, f64)> = self
                .miners
                .values()
                .filter(|x| x.channel == Some(c))
                .map(|x| (x.ctx.id, self.hashrate_to_difficulty(x.hashrate)))
                .collect();
            for (conn, wanted) in conns {
                out.extend(self.set_miner_difficulty(conn, wanted, now));
            }
        }
        out
    }

    fn shares_accepted(&mut self, m: SubmitSharesSuccessOwned, now: Instant) -> Sv1Actions {
        let keys: Vec<(u32, u32)> = self
            .pending
            .range((m.channel_id, 0)..=(m.channel_id, m.last_sequence_number))
            .map(|(k, _)| *k)
            .collect();
        if keys.len() != m.new_submits_accepted_count as usize {
            debug!(
                channel_id = m.channel_id,
                pending = keys.len(),
                accepted = m.new_submits_accepted_count,
                "SubmitShares.Success count differs from the shares it covers"
            );
        }
        let mut out = Sv1Actions::none();
        for k in keys {
            let Some(p) = self.pending.remove(&k) else {
                continue;
            };
            self.stats.shares_accepted += 1;
            self.accepted_window.push_back((now, p.difficulty));
            debug!(connection = %p.conn, channel_id = k.0, sequence_number = k.1, "share accepted upstream");
            if let Some(a) = respond(p.conn, Response::ok(p.id, true)) {
                out.push(a);
            }
        }
        out
    }

    fn share_rejected(&mut self, m: SubmitSharesErrorOwned) -> Sv1Actions {
        let code = m.error_code.as_utf8_or_hex();
        let Some(p) = self.pending.remove(&(m.channel_id, m.sequence_number)) else {
            debug!(
                channel_id = m.channel_id,
                sequence_number = m.sequence_number,
                "error for no pending share"
            );
            return Sv1Actions::none();
        };
        info!(connection = %p.conn, channel_id = m.channel_id, sequence_number = m.sequence_number, error_code = %code, "share rejected upstream");
        self.reject(&format!("upstream:{code}"));
        respond(p.conn, Response::error(p.id, map_upstream_error(&code)))
            .map(Sv1Actions::from)
            .unwrap_or_default()
    }

    fn set_extranonce_prefix(&mut self, m: SetExtranoncePrefixOwned, now: Instant) -> Sv1Actions {
        let prefix = m.extranonce_prefix.as_bytes().to_vec();
        let Some(ch) = self.channels.get_mut(&m.channel_id) else {
            return Sv1Actions::none();
        };
        if prefix.len() + ch.extranonce_size > 32 {
            warn!(
                channel_id = m.channel_id,
                "SetExtranoncePrefix too long; ignored"
            );
            return Sv1Actions::none();
        }
        info!(channel_id = m.channel_id, extranonce_prefix = %hex(&prefix), "upstream extranonce prefix changed");
        ch.prefix = prefix;
        let conns: Vec<ConnectionId> = self
            .miners
            .values()
            .filter(|x| x.channel == Some(m.channel_id) && x.subscribed)
            .map(|x| x.ctx.id)
            .collect();
        let mut out = Sv1Actions::none();
        for c in conns {
            out.extend(self.assign_channel(c, m.channel_id, now));
        }
        out
    }

    fn set_group_channel(&mut self, m: SetGroupChannelOwned) -> Sv1Actions {
        for id in m.channel_ids.iter() {
            if let Some(ch) = self.channels.get_mut(id) {
                ch.group_id = m.group_channel_id;
            }
        }
        Sv1Actions::none()
    }

    // ---------------------------------------------------------------- time

    /// Periodic work (call about once a second): verdict timeouts, vardiff, `UpdateChannel`,
    /// keepalive jobs, expired resumable sessions, the hashrate estimate.
    pub fn tick(&mut self, now: Instant) -> Sv1Actions {
        let mut out = Sv1Actions::none();
        // Shares without a verdict.
        let timeout = self.cfg.submit_timeout;
        let expired: Vec<(u32, u32)> = self
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.sent) >= timeout)
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            if let Some(p) = self.pending.remove(&k) {
                self.reject("no-verdict");
                if let Some(a) =
                    respond(p.conn, Response::error(p.id, Sv1Error::new(20, NO_VERDICT)))
                {
                    out.push(a);
                }
            }
        }
        // Aggregated mode without a channel (refused or closed by the upstream) while miners
        // wait: ask again, at most every 10 s.
        if self.cfg.mode == ChannelMode::Aggregated
            && self.upstream.is_some()
            && self.aggregated.is_none()
            && self.opening.is_empty()
            && self.miners.values().any(|m| m.subscribed && !m.closing)
            && self
                .last_open_retry
                .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(10))
        {
            self.last_open_retry = Some(now);
            let h = self.total_hashrate();
            if let Some(a) = self.open_channel(Opening::Aggregated, h) {
                out.push(a);
            }
        }
        // Vardiff.
        if self.cfg.vardiff {
            let spm = self.cfg.shares_per_minute;
            let lowest = self.difficulty_to_hashrate(self.cfg.min_difficulty);
            let mut changes = Vec::new();
            for m in self.miners.values_mut() {
                if !m.ready() {
                    continue;
                }
                // No share yet, long after the last change: much slower than assumed.
                if let Some(every) = self.cfg.first_share_search {
                    if !m.shared
                        && m.last_job_sent.is_some()
                        && now.saturating_duration_since(m.fast_since) >= every
                    {
                        let h = (m.hashrate / SEARCH_STEP as f32).max(lowest);
                        debug!(connection = %m.ctx.id, hashrate = h, "no share yet: difficulty divided by 16");
                        m.hashrate = h;
                        m.vardiff.reset(now);
                        m.fast_since = now;
                        changes.push((m.ctx.id, h, true));
                        continue;
                    }
                }
                // Far above target: jump to the hashrate the shares show (a lower bound when
                // the share rate is bound by how fast shares get through, one verdict at a
                // time per Sv1 connection: then the jumps repeat, each a refinement).
                if let Some(h) = fast_estimate(m, now, spm) {
                    debug!(connection = %m.ctx.id, hashrate = h, shares = m.fast_shares, "shares far above target: difficulty from their rate");
                    m.hashrate = h;
                    m.vardiff.reset(now);
                    m.fast_shares = 0;
                    m.fast_since = now;
                    changes.push((m.ctx.id, h, true));
                    continue;
                }
                // Compare the realized share rate with what the current target was set for
                // (the difficulty may sit at a bound or the upstream floor).
                let expected =
                    (m.difficulty * HASHES_PER_DIFFICULTY_1 * f64::from(spm) / 60.0) as f32;
                if let Some(h) = m.vardiff.try_vardiff(now, expected, &m.target, spm) {
                    m.hashrate = h;
                    changes.push((m.ctx.id, h, false));
                }
            }
            for (conn, h, resend) in changes {
                let d = self.hashrate_to_difficulty(h);
                let set = self.set_miner_difficulty(conn, d, now);
                let lowered = !set.0.is_empty();
                out.extend(set);
                if resend && lowered {
                    // Sv1 miners apply a new difficulty from the next job (some mine a job at
                    // the harder of the difficulty it came with and the current one): the
                    // current job again, under a new id, makes it apply now. Used for the
                    // first-share search and the fast jump; a share the miner finds again on
                    // the re-sent job is caught as a duplicate (the key is the channel job).
                    if let Some(a) = self.resend_current_job(conn, now) {
                        out.push(a);
                    }
                }
            }
        }
        // UpdateChannel, debounced.
        let interval = self.cfg.update_channel_interval;
        let ids: Vec<u32> = self.channels.keys().copied().collect();
        for id in ids {
            let h = match self.channels.get(&id).and_then(|c| c.owner) {
                Some(owner) => self.miners.get(&owner).map(|m| m.hashrate).unwrap_or(0.0),
                None => self.total_hashrate(),
            };
            let Some(ch) = self.channels.get_mut(&id) else {
                continue;
            };
            if ch.nominal_hashrate == 0.0 {
                ch.nominal_hashrate = h;
                ch.last_update = now;
                continue;
            }
            let moved = (h - ch.nominal_hashrate).abs() > 0.2 * ch.nominal_hashrate;
            if moved && now.saturating_duration_since(ch.last_update) >= interval && h > 0.0 {
                ch.nominal_hashrate = h;
                ch.last_update = now;
                debug!(channel_id = id, hashrate = h, "UpdateChannel");
                out.push(to_upstream(MiningOwned::UpdateChannel(
                    UpdateChannelOwned {
                        channel_id: id,
                        nominal_hash_rate: h,
                        maximum_target: U256Owned::from([0xffu8; 32]),
                    },
                )));
            }
        }
        // Keepalive: the current job again under a new id.
        if let Some(k) = self.cfg.keepalive_interval {
            let stale: Vec<u32> = self
                .channels
                .values()
                .filter(|c| now.saturating_duration_since(c.last_job_at) >= k && !c.jobs.is_empty())
                .map(|c| c.id)
                .collect();
            for id in stale {
                let Some(cur) = self.channels.get(&id).and_then(Channel::current_job) else {
                    continue;
                };
                let num = self.next_job;
                self.next_job += 1;
                let mut notify = cur.notify.clone();
                notify.job_id = format!("{num:x}");
                notify.clean_jobs = false;
                let job = Arc::new(Job {
                    num,
                    upstream_id: cur.upstream_id,
                    notify,
                    version_rolling_allowed: cur.version_rolling_allowed,
                });
                out.extend(self.issue(id, job, now));
            }
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

#[cfg(test)]
mod worker_name_tests {
    use super::worker_name;

    #[test]
    fn worker_is_the_part_after_the_first_dot_else_the_whole_name() {
        assert_eq!(
            worker_name("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq.rig-07"),
            "rig-07"
        );
        assert_eq!(worker_name("acct.rig.a"), "rig.a");
        assert_eq!(worker_name("alice"), "alice");
        assert_eq!(worker_name("acct."), "acct.");
        assert_eq!(worker_name(".w"), "w");
    }
}
