//! Miners: Sv1 sessions (subscribe, authorize, configure), their place on an upstream
//! channel (extranonce1 = the channel's extranonce_prefix, then the miner's local bytes:
//! an aggregated-mode slot number), the jobs sent to them, duplicate detection, and session
//! resumption within the grace period.

use super::channels::UpstreamChannel;
use super::{respond, send, TranslatorCore};
use crate::config::{ChannelMode, ExtranonceChange};
use std::collections::{HashSet, VecDeque};
use std::time::Instant;
use tower_stratum_core::share_math::difficulty_to_target;
use tower_stratum_core::{ConnectionId, TlvFields};
use tower_stratum_mining::vardiff::ClassicVardiff;
use tower_stratum_sv1::work::BIP320_VERSION_ROLLING_MASK;
use tower_stratum_sv1::{
    ExtensionResult, Id, Reconnect, Response, ServerMessage, SetExtranonce, SubscribeResult,
    Sv1Error, Target,
};
use tower_stratum_sv1::{Sv1Action, Sv1Actions, Sv1ConnectionContext};
use tracing::{info, warn};

/// Shares remembered per miner for duplicate detection (cleared on every clean job).
const MAX_SEEN: usize = 1 << 16;
/// Job numbers remembered per miner for jobs re-sent to it alone.
const MAX_ALIASES: usize = 8;

/// Lower-case hex of `bytes`.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|x| format!("{x:02x}")).collect()
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

/// A miner's local extranonce bytes on a channel giving `local_len` of them: its slot
/// number big-endian in the last (up to) 2 bytes' place from the left (`slot` 0x0102 with 3
/// bytes: `01 02 00`), zeros without a slot (per-miner mode).
pub(super) fn local_extranonce(slot: Option<u16>, local_len: usize) -> Vec<u8> {
    let mut local = vec![0u8; local_len];
    if let Some(s) = slot {
        let b = s.to_be_bytes();
        let n = local_len.min(2);
        local[..n].copy_from_slice(&b[2 - n..]);
    }
    local
}

/// BIP310 `version-rolling`: the mask granted for the miner's `requested` one (all bits when
/// it sent none) with at least `min_bit_count` bits, when the upstream `allowed` rolling:
/// `requested AND` the BIP320 mask (0 when refused), and the answer.
pub(super) fn grant_version_rolling(
    requested: Option<u32>,
    min_bit_count: Option<u32>,
    allowed: bool,
) -> (u32, ExtensionResult) {
    let granted = requested.unwrap_or(u32::MAX) & BIP320_VERSION_ROLLING_MASK;
    if !allowed {
        (
            0,
            ExtensionResult::Error("version rolling not allowed by the upstream".into()),
        )
    } else if granted == 0 || granted.count_ones() < min_bit_count.unwrap_or(0) {
        (0, ExtensionResult::Rejected)
    } else {
        (granted, ExtensionResult::Accepted)
    }
}

/// One Sv1 connection.
#[derive(Debug)]
pub(super) struct Miner {
    pub(super) ctx: Sv1ConnectionContext,
    /// The `mining.subscribe` waiting for a channel.
    pub(super) subscribe_id: Option<Id>,
    /// The session id the miner presented in `mining.subscribe` (to resume).
    pub(super) session_id: Option<String>,
    /// The subscription id answered to `mining.subscribe` (lower-case hex of the
    /// extranonce1 given then): the session id a reconnecting miner presents.
    pub(super) session_key: String,
    pub(super) subscribed: bool,
    pub(super) authorized: bool,
    pub(super) channel: Option<u32>,
    /// Aggregated mode: its slot on the shared channel.
    pub(super) slot: Option<u16>,
    /// Local extranonce bytes (between the channel's prefix and extranonce2).
    pub(super) local: Vec<u8>,
    pub(super) extranonce1: Vec<u8>,
    /// Announced with `mining.set_extranonce`; used from the next job sent.
    pub(super) next_extranonce1: Option<Vec<u8>>,
    pub(super) extranonce2_size: usize,
    pub(super) extranonce_subscribed: bool,
    /// The BIP320 version bits granted by `mining.configure`.
    pub(super) version_mask: u32,
    /// `mining.suggest_difficulty` or `minimum-difficulty`: never go below.
    pub(super) min_difficulty: Option<f64>,
    pub(super) difficulty: f64,
    pub(super) target: Target,
    /// The previous (easier or harder) target, valid for jobs numbered below `.1`.
    pub(super) prev_target: Option<(Target, u64)>,
    /// Estimated hashrate, H/s.
    pub(super) hashrate: f32,
    pub(super) vardiff: ClassicVardiff,
    /// Shares meeting the current target since `fast_since` (the last difficulty change or
    /// start of mining): the fast-convergence estimate.
    pub(super) fast_shares: u32,
    pub(super) fast_since: Instant,
    /// Whether the miner sent a share that passed the local checks (ends the first-share
    /// search).
    pub(super) shared: bool,
    /// Jobs sent to this miner alone under another number (first-share search): (that
    /// number, the channel job's number). The last [`MAX_ALIASES`].
    aliases: VecDeque<(u64, u64)>,
    seen: HashSet<u64>,
    pub(super) last_job_sent: Option<Instant>,
    /// Being disconnected: no more jobs.
    pub(super) closing: bool,
    /// Extension 0x0002 `user_identity` TLV with the `mining.authorize` username.
    pub(super) worker: Option<TlvFields>,
}

impl Miner {
    /// A miner just connected at `now`, starting at `difficulty` (target `target`) for
    /// `hashrate` (H/s), with `extranonce2_size` bytes of extranonce2 until a channel says.
    pub(super) fn new(
        ctx: Sv1ConnectionContext,
        extranonce2_size: usize,
        difficulty: f64,
        hashrate: f32,
        now: Instant,
    ) -> Self {
        Self {
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
            extranonce2_size,
            extranonce_subscribed: false,
            version_mask: 0,
            min_difficulty: None,
            difficulty,
            target: difficulty_to_target(difficulty).unwrap_or(Target::MAX),
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
        }
    }

    /// Ready to receive jobs: subscribed, authorized, on a channel, not closing.
    pub(super) fn ready(&self) -> bool {
        self.subscribed && self.authorized && self.channel.is_some() && !self.closing
    }

    /// The channel job number a share's job `number` stands for (a job re-sent to this miner
    /// alone is its channel job under another number).
    pub(super) fn resolve_alias(&self, number: u64) -> u64 {
        self.aliases
            .iter()
            .find(|(alias, _)| *alias == number)
            .map_or(number, |(_, original)| *original)
    }

    /// Channel job `original` was re-sent to this miner as `alias`.
    fn add_alias(&mut self, alias: u64, original: u64) {
        if self.aliases.len() >= MAX_ALIASES {
            self.aliases.pop_front();
        }
        self.aliases.push_back((alias, original));
    }

    /// Whether a share with this key was already forwarded since the last clean job.
    pub(super) fn is_duplicate(&self, key: u64) -> bool {
        self.seen.contains(&key)
    }

    /// Remembers a forwarded share's key (at most [`MAX_SEEN`]; then they start over).
    pub(super) fn remember_share(&mut self, key: u64) {
        if self.seen.len() >= MAX_SEEN {
            self.seen.clear();
        }
        self.seen.insert(key);
    }

    /// A job reached the miner at `now`: an announced extranonce1 applies from now on; a
    /// clean job makes every earlier share unrepeatable.
    pub(super) fn job_sent(&mut self, now: Instant, clean: bool) {
        if let Some(extranonce1) = self.next_extranonce1.take() {
            self.local = extranonce1
                .get(extranonce1.len().saturating_sub(self.local.len())..)
                .map(<[u8]>::to_vec)
                .unwrap_or_default();
            self.extranonce1 = extranonce1;
        }
        self.last_job_sent = Some(now);
        if clean {
            self.seen.clear();
        }
    }
}

/// What a departed miner's session keeps during the resume grace period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kept {
    /// Aggregated mode: its local extranonce slot on the shared channel.
    Slot(u16),
    /// Per-miner mode: its upstream channel, left open (owner gone) so a resume gets the same
    /// extranonce1; closed upstream when the grace period ends.
    Channel(u32),
}

/// A departed miner's session, resumable until `expires`.
#[derive(Debug)]
pub(super) struct Resumable {
    pub(super) kept: Kept,
    pub(super) difficulty: f64,
    pub(super) hashrate: f32,
    pub(super) expires: Instant,
}

/// Free-list allocator of aggregated-mode slots (local extranonce values).
#[derive(Debug, Default)]
pub(super) struct Slots {
    next: u32,
    free: Vec<u16>,
    /// Slots kept for resumable sessions: not handed out.
    reserved: HashSet<u16>,
}

impl Slots {
    /// A free slot (freed ones first), `None` when all 65 536 are taken.
    pub(super) fn take(&mut self) -> Option<u16> {
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

    /// Keeps `s` (taken) for a resumable session.
    pub(super) fn reserve(&mut self, s: u16) {
        self.reserved.insert(s);
    }

    /// `s` is free again.
    pub(super) fn release(&mut self, s: u16) {
        self.reserved.remove(&s);
        self.free.push(s);
    }
}

impl TranslatorCore {
    /// Per-miner mode: the channel kept for the session id the miner presented in
    /// `mining.subscribe`, if any and still open; the miner becomes its owner again with its
    /// previous difficulty and hashrate.
    pub(super) fn resume_channel(&mut self, conn: ConnectionId, now: Instant) -> Option<u32> {
        let m = self.miners.get_mut(&conn)?;
        let session_id = m.session_id.as_ref()?.to_ascii_lowercase();
        let r = self.resumable.get(&session_id)?;
        let Kept::Channel(ch) = r.kept else {
            return None;
        };
        if r.expires <= now || !self.channels.contains_key(&ch) {
            return None;
        }
        let r = self.resumable.remove(&session_id)?;
        m.hashrate = r.hashrate;
        m.difficulty = r.difficulty;
        if let Some(c) = self.channels.get_mut(&ch) {
            c.owner = Some(conn);
        }
        info!(connection = %conn, channel_id = ch, "session resumed");
        Some(ch)
    }

    /// Aggregated mode: the resumable session the miner presented, if it kept a slot and is
    /// not expired (an expired one frees its slot).
    fn resume_slot(&mut self, session_id: Option<String>, now: Instant) -> Option<Resumable> {
        let session_id = session_id?.to_ascii_lowercase();
        if !self
            .resumable
            .get(&session_id)
            .is_some_and(|r| matches!(r.kept, Kept::Slot(_)))
        {
            return None;
        }
        let r = self.resumable.remove(&session_id)?;
        if r.expires > now {
            return Some(r);
        }
        if let Kept::Slot(s) = r.kept {
            self.slots.release(s);
        }
        None
    }

    /// Puts a miner on channel `ch`: allocates its local extranonce bytes; answers a pending
    /// subscribe, or announces the new extranonce1 to an already subscribed miner.
    pub(super) fn assign_channel(
        &mut self,
        conn: ConnectionId,
        ch: u32,
        now: Instant,
    ) -> Sv1Actions {
        let mut out = Sv1Actions::none();
        let Some(c) = self.channels.get(&ch) else {
            return out;
        };
        let (prefix, local_len, extranonce2_size, floor) = (
            c.extranonce_prefix().to_vec(),
            c.local_len(),
            c.extranonce2_size,
            c.floor,
        );
        let Some(m) = self.miners.get(&conn) else {
            return out;
        };
        // Local bytes: aggregated mode numbers miners; per-miner mode owns the channel.
        let mut resumed = None;
        if self.config.mode == ChannelMode::Aggregated && m.slot.is_none() {
            let session_id = m.session_id.clone();
            resumed = self.resume_slot(session_id, now);
            let slot = match resumed.as_ref().map(|r| r.kept) {
                Some(Kept::Slot(s)) => Some(s),
                _ => self.slots.take(),
            };
            let Some(m) = self.miners.get_mut(&conn) else {
                return out;
            };
            m.slot = slot;
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
        let Some(m) = self.miners.get_mut(&conn) else {
            return out;
        };
        let local = local_extranonce(m.slot, local_len);
        let mut extranonce1 = prefix;
        extranonce1.extend_from_slice(&local);
        m.channel = Some(ch);
        m.local = local;
        if let Some(r) = &resumed {
            m.hashrate = r.hashrate;
            m.difficulty = r.difficulty;
            info!(connection = %conn, "session resumed");
        }
        // The difficulty must respect the channel floor.
        let difficulty = super::difficulty::clamp_difficulty(
            &self.config,
            m.difficulty,
            m.min_difficulty,
            floor,
        );
        if difficulty != m.difficulty {
            m.fast_shares = 0;
            m.fast_since = now;
        }
        m.difficulty = difficulty;
        m.target = difficulty_to_target(difficulty).unwrap_or(m.target);
        if let Some(id) = m.subscribe_id.take() {
            // First channel: answer the subscribe.
            m.extranonce1 = extranonce1.clone();
            m.extranonce2_size = extranonce2_size;
            m.subscribed = true;
            let session_key = hex(&extranonce1);
            m.session_key = session_key.clone();
            let r = SubscribeResult {
                subscriptions: vec![
                    ("mining.set_difficulty".into(), session_key.clone()),
                    ("mining.notify".into(), session_key),
                ],
                extranonce1,
                extranonce2_size,
            };
            if let Some(a) = respond(conn, Response::ok(id, r.to_value())) {
                out.push(a);
            }
            if m.authorized {
                out.extend(self.start_mining(conn, now));
            }
        } else if m.subscribed
            && (m.extranonce1 != extranonce1 || m.extranonce2_size != extranonce2_size)
        {
            // A new channel for a subscribed miner (upstream reconnect, prefix change).
            if m.extranonce_subscribed {
                out.push(send(
                    conn,
                    ServerMessage::SetExtranonce(SetExtranonce {
                        extranonce1: extranonce1.clone(),
                        extranonce2_size,
                    }),
                ));
                m.next_extranonce1 = Some(extranonce1);
                m.extranonce2_size = extranonce2_size;
                if m.authorized {
                    out.extend(self.start_mining(conn, now));
                }
            } else {
                m.closing = true;
                if self.config.extranonce_change == ExtranonceChange::Reconnect {
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

    /// Sends the miner its difficulty and the current job (clean).
    pub(super) fn start_mining(&mut self, conn: ConnectionId, now: Instant) -> Sv1Actions {
        let mut out = Sv1Actions::none();
        let Some(m) = self.miners.get_mut(&conn) else {
            return out;
        };
        if !m.ready() {
            return out;
        }
        out.push(send(conn, ServerMessage::SetDifficulty(m.difficulty)));
        m.fast_shares = 0;
        m.fast_since = now;
        let job = m
            .channel
            .and_then(|c| self.channels.get(&c))
            .and_then(UpstreamChannel::current_job);
        if let Some(job) = job {
            let mut notify = job.notify;
            notify.clean_jobs = true;
            self.mark_job_sent(conn, now, true);
            out.push(send(conn, ServerMessage::Notify(notify)));
        }
        out
    }

    /// The channel's current job again to this miner alone, under a new job number (miners
    /// ignore a job id they have), `clean_jobs` true; shares for it are checked against the
    /// channel job (see [`Miner::resolve_alias`]).
    pub(super) fn resend_current_job(
        &mut self,
        conn: ConnectionId,
        now: Instant,
    ) -> Option<Sv1Action> {
        let m = self.miners.get(&conn)?;
        let job = m
            .channel
            .and_then(|c| self.channels.get(&c))
            .and_then(UpstreamChannel::current_job)?;
        let number = self.next_job;
        self.next_job += 1;
        let mut notify = job.notify;
        notify.job_id = format!("{number:x}");
        notify.clean_jobs = true;
        self.miners.get_mut(&conn)?.add_alias(number, job.number);
        self.mark_job_sent(conn, now, true);
        Some(send(conn, ServerMessage::Notify(notify)))
    }

    /// Bookkeeping when a job reaches a miner (see [`Miner::job_sent`]).
    pub(super) fn mark_job_sent(&mut self, conn: ConnectionId, now: Instant, clean: bool) {
        if let Some(m) = self.miners.get_mut(&conn) {
            m.job_sent(now, clean);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn miner(now: Instant) -> Miner {
        Miner::new(
            Sv1ConnectionContext {
                id: ConnectionId(1),
                peer: None,
            },
            4,
            1.0,
            1e6,
            now,
        )
    }

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

    #[test]
    fn slots_are_unique_reused_when_released_and_skip_reserved_ones() {
        let mut s = Slots::default();
        assert_eq!((s.take(), s.take()), (Some(0), Some(1)));
        s.release(0);
        assert_eq!(s.take(), Some(0), "a released slot first");
        // A resumable session's slot is not handed out again until released.
        let mut s = Slots::default();
        s.reserve(0);
        assert_eq!(s.take(), Some(1));
        let mut s = Slots::default();
        let all: HashSet<u16> = (0..=u16::MAX).map(|_| s.take().unwrap()).collect();
        assert_eq!(all.len(), 65_536);
        assert_eq!(s.take(), None, "full");
    }

    #[test]
    fn local_extranonce_is_the_slot_big_endian_then_zeros() {
        assert_eq!(local_extranonce(Some(0x0102), 3), vec![0x01, 0x02, 0x00]);
        assert_eq!(local_extranonce(Some(0x0102), 2), vec![0x01, 0x02]);
        assert_eq!(local_extranonce(Some(0x0102), 1), vec![0x02]);
        assert_eq!(local_extranonce(None, 2), vec![0, 0]);
        assert!(local_extranonce(Some(7), 0).is_empty());
    }

    #[test]
    fn version_rolling_is_granted_within_bip320_only_when_the_upstream_allows_it() {
        let (mask, r) = grant_version_rolling(Some(0xffff_ffff), Some(2), true);
        assert_eq!(
            (mask, r),
            (BIP320_VERSION_ROLLING_MASK, ExtensionResult::Accepted)
        );
        let (mask, r) = grant_version_rolling(Some(0x0000_6000), None, true);
        assert_eq!((mask, r), (0x0000_6000, ExtensionResult::Accepted));
        let (mask, r) = grant_version_rolling(Some(0x0000_6000), Some(3), true);
        assert_eq!((mask, r), (0, ExtensionResult::Rejected), "too few bits");
        let (mask, r) = grant_version_rolling(Some(0x0000_0001), None, true);
        assert_eq!((mask, r), (0, ExtensionResult::Rejected), "outside BIP320");
        let (mask, r) = grant_version_rolling(None, None, false);
        assert_eq!(mask, 0);
        assert!(matches!(r, ExtensionResult::Error(_)));
    }

    #[test]
    fn an_announced_extranonce1_applies_from_the_next_job_and_clean_jobs_forget_shares() {
        let now = Instant::now();
        let mut m = miner(now);
        m.extranonce1 = vec![0xaa, 0x00, 0x01];
        m.local = vec![0x00, 0x01];
        m.next_extranonce1 = Some(vec![0xbb, 0xcc, 0x00, 0x01]);
        m.remember_share(42);
        m.job_sent(now, false);
        assert_eq!(m.extranonce1, vec![0xbb, 0xcc, 0x00, 0x01]);
        assert_eq!(
            m.local,
            vec![0x00, 0x01],
            "the local bytes are the last ones"
        );
        assert!(m.is_duplicate(42), "not clean: still a duplicate");
        m.job_sent(now, true);
        assert!(!m.is_duplicate(42));
        assert_eq!(m.last_job_sent, Some(now));
    }

    #[test]
    fn a_resent_job_number_stands_for_its_channel_job_and_only_the_last_aliases_are_kept() {
        let mut m = miner(Instant::now());
        for i in 0..(MAX_ALIASES as u64 + 1) {
            m.add_alias(100 + i, 10);
        }
        assert_eq!(m.resolve_alias(100), 100, "the oldest alias is forgotten");
        assert_eq!(m.resolve_alias(101), 10);
        assert_eq!(m.resolve_alias(55), 55, "not an alias");
    }

    #[test]
    fn a_miner_is_ready_only_subscribed_authorized_on_a_channel_and_not_closing() {
        let mut m = miner(Instant::now());
        assert!(!m.ready());
        m.subscribed = true;
        m.authorized = true;
        assert!(!m.ready(), "no channel");
        m.channel = Some(1);
        assert!(m.ready());
        m.closing = true;
        assert!(!m.ready());
    }
}
