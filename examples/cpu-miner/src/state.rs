//! The miner's Mining Protocol state (spec 5), sans-IO: channel, jobs, chain tip, target. Each
//! method takes one message (and the time it arrived) and updates the state; the handler shell
//! ([`crate::handler`]) publishes [`MinerState::work`] to the hashing threads when
//! [`MinerState::take_changed`] says the work changed. Nothing here reads the clock, spawns or
//! does IO.
//!
//! Rules implemented (spec 5.2, 5.3):
//! - A job is for us when its `channel_id` is our channel or the group channel our channel
//!   belongs to (`group_channel_id` of the open success, or a later `SetGroupChannel`, 5.3.22).
//! - A future job (no `min_ntime`) waits for the `SetNewPrevHash` naming its `job_id`; that
//!   message activates it, supplies `min_ntime`, and drops every other job (5.3.17).
//! - A non-future job is mined at once on the current chain tip, from its own `min_ntime`
//!   (5.3.15, 5.3.16).
//! - `SetTarget` (5.3.21) applies to future jobs and jobs received later; a job received
//!   with `min_ntime` set keeps the target it was received under. A new target keeps the
//!   search position (no unit is hashed twice).
//! - `SetExtranoncePrefix` (5.3.10) applies to jobs received after it.
//! - Version rolling: the BIP320 bits of every standard job (5.3.15) and of extended jobs with
//!   `version_rolling_allowed` (5.3.16); none at all if the upstream set
//!   `REQUIRES_FIXED_VERSION` in `SetupConnection.Success` (5.3.1).
//! - A standard-mode miner opens an extended channel instead when the upstream set
//!   `REQUIRES_EXTENDED_CHANNELS` (5.3.1).

use crate::work::{MerkleSource, ShareKind, Work, BIP320_VERSION_MASK};
use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;
use tower_stratum::session::{REQUIRES_EXTENDED_CHANNELS, REQUIRES_FIXED_VERSION};
use tower_stratum::stratum_core::binary_sv2::{Str0255Owned, U256Owned};
use tower_stratum::stratum_core::mining_sv2::{
    CloseChannelOwned, NewExtendedMiningJobOwned, NewMiningJobOwned,
    OpenExtendedMiningChannelOwned, OpenExtendedMiningChannelSuccessOwned,
    OpenStandardMiningChannelOwned, OpenStandardMiningChannelSuccessOwned,
    SetExtranoncePrefixOwned, SetGroupChannelOwned, SetNewPrevHashOwned, SetTargetOwned,
};
use tower_stratum::stratum_core::parsers_sv2::MiningOwned;
use tower_stratum::Sv2Message;

/// Jobs kept per channel (future and current); older ones are dropped first.
const MAX_JOBS: usize = 64;

/// Which channel type the miner opens (spec 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelMode {
    /// `OpenStandardMiningChannel`: the upstream fixes the merkle root (or sends group-channel
    /// extended jobs, whose coinbase the miner completes with its extranonce_prefix).
    Standard,
    /// `OpenExtendedMiningChannel`: the miner rolls its own extranonce in the coinbase.
    Extended,
}

/// What the miner asks for when it opens its channel.
#[derive(Debug, Clone)]
pub struct ChannelRequest {
    /// Channel type.
    pub mode: ChannelMode,
    /// `user_identity` (account/worker name at the pool); build it with
    /// `tower_stratum::session::str0255`.
    pub user_identity: Str0255Owned,
    /// `nominal_hash_rate`, hashes per second; the upstream derives the initial target from it.
    pub nominal_hash_rate: f32,
    /// Extended channels: `min_extranonce_size`, bytes of extranonce the miner rolls.
    pub min_extranonce_size: u16,
}

#[derive(Debug, Clone)]
struct Channel {
    id: u32,
    group_id: u32,
    target: [u8; 32],
    extranonce_prefix: Vec<u8>,
    /// Miner-owned extranonce size (extended channels), bytes.
    extranonce_size: usize,
}

#[derive(Debug, Clone)]
struct Job {
    id: u32,
    version: u32,
    version_mask: u32,
    /// `None` = future job.
    min_ntime: Option<u32>,
    received: Instant,
    merkle: MerkleSource,
    /// The target of a job received with `min_ntime` set (fixed, spec 5.3.21); `None` for a
    /// future job, which follows the channel's target.
    target: Option<[u8; 32]>,
}

#[derive(Debug, Clone)]
struct Tip {
    prev_hash: [u8; 32],
    nbits: u32,
}

/// Outcome of a message that the miner cannot use, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    /// The message names a channel that is neither ours nor our group's.
    OtherChannel(u32),
    /// A channel-open answer that does not match our pending request (or comes when none is
    /// pending / the channel type differs).
    UnexpectedOpen,
    /// `SetNewPrevHash` for a job we do not have (we mine nothing until a job for the new tip
    /// arrives).
    UnknownJob(u32),
    /// A field has an impossible value (e.g. an extranonce prefix over 32 bytes).
    Malformed(&'static str),
}

/// The miner's protocol state: see the module docs.
#[derive(Debug)]
pub struct MinerState {
    request: ChannelRequest,
    /// Channel type opened on this connection (the requested one, unless the upstream
    /// requires extended channels).
    open_mode: ChannelMode,
    /// `SetupConnection.Success` had `REQUIRES_FIXED_VERSION`: never roll the version.
    fixed_version: bool,
    next_request_id: u32,
    pending_request: Option<u32>,
    channel: Option<Channel>,
    jobs: VecDeque<Job>,
    tip: Option<Tip>,
    /// `job_id` of the job being mined.
    active: Option<u32>,
    tip_epoch: u64,
    /// Unit counter of every search space mined on the current tip: a job whose header space
    /// equals an earlier one's (same version and merkle source; e.g. a template resent
    /// unchanged) continues where that one stopped instead of hashing the same headers again.
    spaces: Vec<(SearchSpace, Arc<AtomicU64>)>,
    /// Unit counter of the active job.
    next_unit: Arc<AtomicU64>,
    changed: bool,
}

/// What makes two jobs' headers identical on one chain tip.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SearchSpace {
    version: u32,
    version_mask: u32,
    merkle: MerkleSource,
}

impl MinerState {
    /// A state with no connection.
    pub fn new(request: ChannelRequest) -> Self {
        Self {
            open_mode: request.mode,
            fixed_version: false,
            request,
            next_request_id: 1,
            pending_request: None,
            channel: None,
            jobs: VecDeque::new(),
            tip: None,
            active: None,
            tip_epoch: 0,
            spaces: Vec::new(),
            next_unit: Arc::new(AtomicU64::new(0)),
            changed: true,
        }
    }

    /// The channel type this miner opens.
    pub fn mode(&self) -> ChannelMode {
        self.request.mode
    }

    /// Our channel id, once open.
    pub fn channel_id(&self) -> Option<u32> {
        self.channel.as_ref().map(|c| c.id)
    }

    /// Whether the work changed since the last call (then publish [`Self::work`]).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    fn reset(&mut self) {
        self.pending_request = None;
        self.channel = None;
        self.jobs.clear();
        self.tip = None;
        self.new_tip_epoch();
    }

    /// A new chain tip, channel or connection: nothing active, shares found before are stale
    /// from now on, every search space is new.
    fn new_tip_epoch(&mut self) {
        self.active = None;
        self.tip_epoch += 1;
        self.spaces.clear();
        self.changed = true;
    }

    /// Mines `job_id` from now on, continuing the unit counter of an identical search space.
    fn activate(&mut self, job_id: u32) {
        let Some(job) = self.jobs.iter().find(|j| j.id == job_id) else {
            return;
        };
        let space = SearchSpace {
            version: job.version,
            version_mask: job.version_mask,
            merkle: job.merkle.clone(),
        };
        let counter = match self.spaces.iter().find(|(s, _)| *s == space) {
            Some((_, c)) => c.clone(),
            None => {
                let c = Arc::new(AtomicU64::new(0));
                self.spaces.push((space, c.clone()));
                if self.spaces.len() > MAX_JOBS {
                    self.spaces.remove(0);
                }
                c
            }
        };
        self.next_unit = counter;
        self.active = Some(job_id);
        self.changed = true;
    }

    fn is_ours(&self, channel_id: u32) -> bool {
        self.channel
            .as_ref()
            .is_some_and(|c| c.id == channel_id || (c.group_id != 0 && c.group_id == channel_id))
    }

    /// The upstream connection is established with `success_flags` (from
    /// `SetupConnection.Success`): forget everything and return the channel-open request to
    /// send.
    pub fn connected(&mut self, success_flags: u32) -> Sv2Message {
        self.reset();
        self.fixed_version = success_flags & REQUIRES_FIXED_VERSION != 0;
        self.open_mode = if success_flags & REQUIRES_EXTENDED_CHANNELS != 0 {
            ChannelMode::Extended
        } else {
            self.request.mode
        };
        self.open_request()
    }

    /// The channel type opened on the current connection.
    pub fn open_mode(&self) -> ChannelMode {
        self.open_mode
    }

    /// The open request for a new channel (also after `CloseChannel`).
    fn open_request(&mut self) -> Sv2Message {
        let request_id = self.next_request_id;
        self.next_request_id = self.next_request_id.wrapping_add(1);
        self.pending_request = Some(request_id);
        let user_identity = self.request.user_identity.clone();
        let max_target = U256Owned::from([0xffu8; 32]);
        match self.open_mode {
            ChannelMode::Standard => Sv2Message::Mining(MiningOwned::OpenStandardMiningChannel(
                OpenStandardMiningChannelOwned {
                    request_id,
                    user_identity,
                    nominal_hash_rate: self.request.nominal_hash_rate,
                    max_target,
                },
            )),
            ChannelMode::Extended => Sv2Message::Mining(MiningOwned::OpenExtendedMiningChannel(
                OpenExtendedMiningChannelOwned {
                    request_id,
                    user_identity,
                    nominal_hash_rate: self.request.nominal_hash_rate,
                    max_target,
                    min_extranonce_size: self.request.min_extranonce_size,
                },
            )),
        }
    }

    /// The upstream connection is gone: nothing to mine until the next `connected`.
    pub fn disconnected(&mut self) {
        self.reset();
    }

    fn take_pending(&mut self, request_id: u32, mode: ChannelMode) -> Result<(), Ignored> {
        if self.pending_request != Some(request_id) || self.open_mode != mode {
            return Err(Ignored::UnexpectedOpen);
        }
        self.pending_request = None;
        Ok(())
    }

    /// `OpenStandardMiningChannel.Success`.
    pub fn open_standard_success(
        &mut self,
        m: &OpenStandardMiningChannelSuccessOwned,
    ) -> Result<(), Ignored> {
        self.take_pending(m.request_id, ChannelMode::Standard)?;
        self.channel = Some(Channel {
            id: m.channel_id,
            group_id: m.group_channel_id,
            target: m.target.to_array(),
            extranonce_prefix: m.extranonce_prefix.as_bytes().to_vec(),
            extranonce_size: 0,
        });
        self.new_tip_epoch();
        Ok(())
    }

    /// `OpenExtendedMiningChannel.Success`.
    pub fn open_extended_success(
        &mut self,
        m: &OpenExtendedMiningChannelSuccessOwned,
    ) -> Result<(), Ignored> {
        self.take_pending(m.request_id, ChannelMode::Extended)?;
        let prefix = m.extranonce_prefix.as_bytes().to_vec();
        if prefix.len() + usize::from(m.extranonce_size) > 32 {
            return Err(Ignored::Malformed(
                "extranonce_prefix + extranonce_size > 32",
            ));
        }
        self.channel = Some(Channel {
            id: m.channel_id,
            group_id: m.group_channel_id,
            target: m.target.to_array(),
            extranonce_prefix: prefix,
            extranonce_size: usize::from(m.extranonce_size),
        });
        self.new_tip_epoch();
        Ok(())
    }

    /// `OpenMiningChannel.Error` for our request: returns whether it was ours.
    pub fn open_error(&mut self, request_id: u32) -> bool {
        if self.pending_request == Some(request_id) {
            self.pending_request = None;
            true
        } else {
            false
        }
    }

    fn store_job(&mut self, job: Job) {
        self.jobs.retain(|j| j.id != job.id);
        let immediate = job.min_ntime.is_some();
        let id = job.id;
        self.jobs.push_back(job);
        while self.jobs.len() > MAX_JOBS {
            self.jobs.pop_front();
        }
        if immediate && self.tip.is_some() {
            // A non-future job: mine it now on the current tip (spec 5.3.15).
            self.activate(id);
        }
    }

    fn version_mask(&self, allowed_by_job: bool) -> u32 {
        if allowed_by_job && !self.fixed_version {
            BIP320_VERSION_MASK
        } else {
            0
        }
    }

    /// A job received with `min_ntime` set keeps the channel's current target.
    fn job_target(&self, min_ntime: Option<u32>) -> Option<[u8; 32]> {
        min_ntime.and(self.channel.as_ref().map(|c| c.target))
    }

    /// `NewMiningJob` (standard channels).
    pub fn new_mining_job(&mut self, m: &NewMiningJobOwned, now: Instant) -> Result<(), Ignored> {
        if !self.is_ours(m.channel_id) {
            return Err(Ignored::OtherChannel(m.channel_id));
        }
        let min_ntime = m.min_ntime.clone().into_inner();
        let job = Job {
            id: m.job_id,
            version: m.version,
            version_mask: self.version_mask(true),
            min_ntime,
            received: now,
            merkle: MerkleSource::Fixed(m.merkle_root.to_array()),
            target: self.job_target(min_ntime),
        };
        self.store_job(job);
        Ok(())
    }

    /// `NewExtendedMiningJob` (extended channels, and group channels of standard ones).
    pub fn new_extended_mining_job(
        &mut self,
        m: &NewExtendedMiningJobOwned,
        now: Instant,
    ) -> Result<(), Ignored> {
        if !self.is_ours(m.channel_id) {
            return Err(Ignored::OtherChannel(m.channel_id));
        }
        let Some(ch) = &self.channel else {
            return Err(Ignored::OtherChannel(m.channel_id));
        };
        let mut prefix = m.coinbase_tx_prefix.as_bytes().to_vec();
        prefix.extend_from_slice(&ch.extranonce_prefix);
        let merkle = MerkleSource::Coinbase {
            prefix,
            suffix: m.coinbase_tx_suffix.as_bytes().to_vec(),
            path: m.merkle_path.iter().map(|n| n.to_array()).collect(),
            rollable: ch.extranonce_size,
        };
        let min_ntime = m.min_ntime.clone().into_inner();
        let job = Job {
            id: m.job_id,
            version: m.version,
            version_mask: self.version_mask(m.version_rolling_allowed),
            min_ntime,
            received: now,
            merkle,
            target: self.job_target(min_ntime),
        };
        self.store_job(job);
        Ok(())
    }

    /// `SetNewPrevHash` (Mining Protocol): activates the named future job, drops the others.
    pub fn set_new_prev_hash(
        &mut self,
        m: &SetNewPrevHashOwned,
        now: Instant,
    ) -> Result<(), Ignored> {
        if !self.is_ours(m.channel_id) {
            return Err(Ignored::OtherChannel(m.channel_id));
        }
        self.tip = Some(Tip {
            prev_hash: m.prev_hash.to_array(),
            nbits: m.nbits,
        });
        self.new_tip_epoch();
        let job_id = m.job_id;
        self.jobs.retain(|j| j.id == job_id);
        match self.jobs.front_mut() {
            Some(job) => {
                job.min_ntime = Some(m.min_ntime);
                job.received = now;
                self.activate(job_id);
                Ok(())
            }
            None => Err(Ignored::UnknownJob(job_id)),
        }
    }

    /// `SetTarget`: new maximum target for our channel (or its group).
    pub fn set_target(&mut self, m: &SetTargetOwned) -> Result<(), Ignored> {
        if !self.is_ours(m.channel_id) {
            return Err(Ignored::OtherChannel(m.channel_id));
        }
        if let Some(ch) = &mut self.channel {
            ch.target = m.maximum_target.to_array();
        }
        let active_follows_channel = self
            .jobs
            .iter()
            .any(|j| Some(j.id) == self.active && j.target.is_none());
        if active_follows_channel {
            self.changed = true;
        }
        Ok(())
    }

    /// `SetExtranoncePrefix`: applies to jobs received after it (spec 5.3.10).
    pub fn set_extranonce_prefix(&mut self, m: &SetExtranoncePrefixOwned) -> Result<(), Ignored> {
        let Some(ch) = self.channel.as_mut().filter(|c| c.id == m.channel_id) else {
            return Err(Ignored::OtherChannel(m.channel_id));
        };
        let prefix = m.extranonce_prefix.as_bytes().to_vec();
        if prefix.len() + ch.extranonce_size > 32 {
            return Err(Ignored::Malformed(
                "extranonce_prefix + extranonce_size > 32",
            ));
        }
        ch.extranonce_prefix = prefix;
        Ok(())
    }

    /// `SetGroupChannel`: our channel joins `group_channel_id` if it is listed.
    pub fn set_group_channel(&mut self, m: &SetGroupChannelOwned) -> Result<(), Ignored> {
        let Some(ch) = self.channel.as_mut() else {
            return Err(Ignored::OtherChannel(m.group_channel_id));
        };
        if m.channel_ids.iter().any(|id| *id == ch.id) {
            ch.group_id = m.group_channel_id;
            Ok(())
        } else {
            Err(Ignored::OtherChannel(m.group_channel_id))
        }
    }

    /// `CloseChannel` for our channel (or its group): stop mining and return the request that
    /// opens a new one.
    pub fn close_channel(&mut self, m: &CloseChannelOwned) -> Result<Sv2Message, Ignored> {
        if !self.is_ours(m.channel_id) {
            return Err(Ignored::OtherChannel(m.channel_id));
        }
        self.reset();
        Ok(self.open_request())
    }

    /// The work to mine now, if any: needs a channel, a chain tip and an active job.
    pub fn work(&self) -> Option<Work> {
        let ch = self.channel.as_ref()?;
        let tip = self.tip.as_ref()?;
        let job = self.jobs.iter().find(|j| Some(j.id) == self.active)?;
        let min_ntime = job.min_ntime?;
        Some(Work {
            tip_epoch: self.tip_epoch,
            channel_id: ch.id,
            job_id: job.id,
            share_kind: match self.open_mode {
                ChannelMode::Standard => ShareKind::Standard,
                ChannelMode::Extended => ShareKind::Extended,
            },
            version: job.version,
            version_mask: job.version_mask,
            prev_hash: tip.prev_hash,
            nbits: tip.nbits,
            min_ntime,
            min_ntime_received: job.received,
            target: job.target.unwrap_or(ch.target),
            merkle: job.merkle.clone(),
            next_unit: self.next_unit.clone(),
        })
    }

    /// The epoch of the current search space (see [`Work::tip_epoch`]).
    pub fn tip_epoch(&self) -> u64 {
        self.tip_epoch
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::sync::atomic::Ordering;
    use tower_stratum::stratum_core::binary_sv2::{
        B032Owned, B064KOwned, Seq0255Owned, Seq064KOwned, Sv2OptionOwned,
    };

    fn state(mode: ChannelMode) -> MinerState {
        MinerState::new(ChannelRequest {
            mode,
            user_identity: tower_stratum::session::str0255("w").unwrap(),
            nominal_hash_rate: 1e6,
            min_extranonce_size: 4,
        })
    }

    fn u256(b: u8) -> U256Owned {
        U256Owned::from([b; 32])
    }

    fn request_id(open: &Sv2Message) -> u32 {
        match open {
            Sv2Message::Mining(MiningOwned::OpenStandardMiningChannel(m)) => m.request_id,
            Sv2Message::Mining(MiningOwned::OpenExtendedMiningChannel(m)) => m.request_id,
            other => panic!("not an open: {other}"),
        }
    }

    fn open_standard(s: &mut MinerState, channel_id: u32, group: u32) {
        let rid = request_id(&s.connected(0));
        s.open_standard_success(&OpenStandardMiningChannelSuccessOwned {
            request_id: rid,
            channel_id,
            target: u256(0x11),
            extranonce_prefix: B032Owned::try_from(vec![0xaa; 8]).unwrap(),
            group_channel_id: group,
        })
        .unwrap();
    }

    fn open_extended(s: &mut MinerState, channel_id: u32) {
        let rid = request_id(&s.connected(0));
        s.open_extended_success(&OpenExtendedMiningChannelSuccessOwned {
            request_id: rid,
            channel_id,
            target: u256(0x22),
            extranonce_size: 6,
            extranonce_prefix: B032Owned::try_from(vec![0xbb; 4]).unwrap(),
            group_channel_id: 0,
        })
        .unwrap();
    }

    fn job(channel_id: u32, job_id: u32, min_ntime: Option<u32>, root: u8) -> NewMiningJobOwned {
        NewMiningJobOwned {
            channel_id,
            job_id,
            min_ntime: Sv2OptionOwned::new(min_ntime),
            version: 0x2000_0000,
            merkle_root: u256(root),
        }
    }

    fn ext_job(channel_id: u32, job_id: u32, rolling: bool) -> NewExtendedMiningJobOwned {
        NewExtendedMiningJobOwned {
            channel_id,
            job_id,
            min_ntime: Sv2OptionOwned::new(None),
            version: 0x2000_0000,
            version_rolling_allowed: rolling,
            merkle_path: Seq0255Owned::new(vec![u256(0x33)]).unwrap(),
            coinbase_tx_prefix: B064KOwned::try_from(vec![1, 2, 3]).unwrap(),
            coinbase_tx_suffix: B064KOwned::try_from(vec![4, 5]).unwrap(),
        }
    }

    fn snph(channel_id: u32, job_id: u32, prev: u8) -> SetNewPrevHashOwned {
        SetNewPrevHashOwned {
            channel_id,
            job_id,
            prev_hash: u256(prev),
            min_ntime: 1_000,
            nbits: 0x1d00_ffff,
        }
    }

    #[test]
    fn future_job_waits_for_its_set_new_prev_hash() {
        let now = Instant::now();
        let mut s = state(ChannelMode::Standard);
        open_standard(&mut s, 7, 0);
        s.new_mining_job(&job(7, 1, None, 0x01), now).unwrap();
        s.new_mining_job(&job(7, 2, None, 0x02), now).unwrap();
        assert!(s.work().is_none(), "future jobs are not mined");
        assert!(s.take_changed());
        s.set_new_prev_hash(&snph(7, 2, 0x99), now).unwrap();
        assert!(s.take_changed());
        let w = s.work().unwrap();
        assert_eq!((w.channel_id, w.job_id, w.min_ntime), (7, 2, 1_000));
        assert_eq!(w.prev_hash, [0x99; 32]);
        assert_eq!(w.target, [0x11; 32]);
        assert_eq!(w.merkle, MerkleSource::Fixed([0x02; 32]));
        assert_eq!(w.share_kind, ShareKind::Standard);
        assert_eq!(w.version_mask, BIP320_VERSION_MASK);
        // Job 1 was dropped: a SetNewPrevHash naming it finds nothing.
        assert_eq!(
            s.set_new_prev_hash(&snph(7, 1, 0x98), now),
            Err(Ignored::UnknownJob(1))
        );
        assert!(s.work().is_none());
    }

    #[test]
    fn new_tip_makes_old_shares_stale_and_non_future_jobs_start_at_once() {
        let now = Instant::now();
        let mut s = state(ChannelMode::Standard);
        open_standard(&mut s, 7, 0);
        s.new_mining_job(&job(7, 1, None, 0x01), now).unwrap();
        s.set_new_prev_hash(&snph(7, 1, 0x99), now).unwrap();
        let epoch = s.work().unwrap().tip_epoch;
        s.new_mining_job(&job(7, 2, Some(1_005), 0x02), now)
            .unwrap();
        let w = s.work().unwrap();
        assert_eq!((w.job_id, w.min_ntime, w.tip_epoch), (2, 1_005, epoch));
        s.new_mining_job(&job(7, 3, None, 0x03), now).unwrap();
        s.set_new_prev_hash(&snph(7, 3, 0x98), now).unwrap();
        assert!(s.work().unwrap().tip_epoch > epoch);
    }

    #[test]
    fn identical_job_continues_the_unit_counter() {
        let now = Instant::now();
        let mut s = state(ChannelMode::Standard);
        open_standard(&mut s, 7, 0);
        s.new_mining_job(&job(7, 1, None, 0x01), now).unwrap();
        s.set_new_prev_hash(&snph(7, 1, 0x99), now).unwrap();
        let w1 = s.work().unwrap();
        w1.next_unit.store(5, Ordering::Relaxed);
        s.new_mining_job(&job(7, 2, Some(1_000), 0x01), now)
            .unwrap();
        assert_eq!(s.work().unwrap().next_unit.load(Ordering::Relaxed), 5);
        s.new_mining_job(&job(7, 3, Some(1_000), 0x02), now)
            .unwrap();
        assert_eq!(s.work().unwrap().next_unit.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn set_target_applies_to_future_jobs_only_and_keeps_the_search_position() {
        let now = Instant::now();
        let target = |b| SetTargetOwned {
            channel_id: 7,
            maximum_target: u256(b),
        };
        let mut s = state(ChannelMode::Standard);
        open_standard(&mut s, 7, 0);
        s.new_mining_job(&job(7, 1, None, 0x01), now).unwrap();
        s.set_new_prev_hash(&snph(7, 1, 0x99), now).unwrap();
        // Job 2 arrives with min_ntime set: its target is fixed at 0x11 (spec 5.3.21).
        s.new_mining_job(&job(7, 2, Some(1_000), 0x02), now)
            .unwrap();
        s.take_changed();
        s.set_target(&target(0x44)).unwrap();
        assert!(!s.take_changed());
        assert_eq!(s.work().unwrap().target, [0x11; 32]);
        // A future job activated later follows the channel target, and later changes of it.
        s.new_mining_job(&job(7, 3, None, 0x03), now).unwrap();
        s.set_new_prev_hash(&snph(7, 3, 0x98), now).unwrap();
        let w = s.work().unwrap();
        assert_eq!(w.target, [0x44; 32]);
        w.next_unit.store(9, Ordering::Relaxed);
        s.take_changed();
        s.set_target(&target(0x55)).unwrap();
        assert!(s.take_changed());
        let w = s.work().unwrap();
        assert_eq!(w.target, [0x55; 32]);
        assert_eq!(w.next_unit.load(Ordering::Relaxed), 9);
        assert_eq!(
            s.set_target(&SetTargetOwned {
                channel_id: 8,
                maximum_target: u256(0x66),
            }),
            Err(Ignored::OtherChannel(8))
        );
    }

    #[test]
    fn upstream_setup_flags_fix_the_version_or_require_extended_channels() {
        let now = Instant::now();
        let mut s = state(ChannelMode::Standard);
        let open = s.connected(REQUIRES_FIXED_VERSION);
        s.open_standard_success(&OpenStandardMiningChannelSuccessOwned {
            request_id: request_id(&open),
            channel_id: 7,
            target: u256(0x11),
            extranonce_prefix: B032Owned::try_from(vec![]).unwrap(),
            group_channel_id: 0,
        })
        .unwrap();
        s.new_mining_job(&job(7, 1, None, 0x01), now).unwrap();
        s.set_new_prev_hash(&snph(7, 1, 0x99), now).unwrap();
        assert_eq!(s.work().unwrap().version_mask, 0);

        let open = s.connected(REQUIRES_EXTENDED_CHANNELS);
        assert!(matches!(
            open,
            Sv2Message::Mining(MiningOwned::OpenExtendedMiningChannel(_))
        ));
        assert_eq!(s.open_mode(), ChannelMode::Extended);
        s.open_extended_success(&OpenExtendedMiningChannelSuccessOwned {
            request_id: request_id(&open),
            channel_id: 9,
            target: u256(0x22),
            extranonce_size: 4,
            extranonce_prefix: B032Owned::try_from(vec![1]).unwrap(),
            group_channel_id: 0,
        })
        .unwrap();
        s.new_extended_mining_job(&ext_job(9, 1, true), now)
            .unwrap();
        s.set_new_prev_hash(&snph(9, 1, 0x99), now).unwrap();
        let w = s.work().unwrap();
        assert_eq!(w.share_kind, ShareKind::Extended);
        assert_eq!(w.version_mask, BIP320_VERSION_MASK);
    }

    #[test]
    fn group_channel_extended_job_on_a_standard_channel() {
        let now = Instant::now();
        let mut s = state(ChannelMode::Standard);
        open_standard(&mut s, 7, 0);
        // Not in a group yet: a job on channel 3 is not ours.
        assert_eq!(
            s.new_extended_mining_job(&ext_job(3, 1, true), now),
            Err(Ignored::OtherChannel(3))
        );
        s.set_group_channel(&SetGroupChannelOwned {
            group_channel_id: 3,
            channel_ids: Seq064KOwned::new(vec![5, 7]).unwrap(),
        })
        .unwrap();
        s.new_extended_mining_job(&ext_job(3, 1, false), now)
            .unwrap();
        s.set_new_prev_hash(&snph(3, 1, 0x99), now).unwrap();
        let w = s.work().unwrap();
        assert_eq!((w.channel_id, w.job_id), (7, 1), "shares go on our channel");
        assert_eq!(w.share_kind, ShareKind::Standard);
        assert_eq!(w.version_mask, 0, "version rolling not allowed by the job");
        let mut prefix = vec![1, 2, 3];
        prefix.extend_from_slice(&[0xaa; 8]);
        assert_eq!(
            w.merkle,
            MerkleSource::Coinbase {
                prefix,
                suffix: vec![4, 5],
                path: vec![[0x33; 32]],
                rollable: 0
            }
        );
    }

    #[test]
    fn extended_channel_rolls_its_extranonce_and_prefix_changes_apply_to_later_jobs() {
        let now = Instant::now();
        let mut s = state(ChannelMode::Extended);
        open_extended(&mut s, 9);
        s.new_extended_mining_job(&ext_job(9, 1, true), now)
            .unwrap();
        s.set_new_prev_hash(&snph(9, 1, 0x99), now).unwrap();
        let w = s.work().unwrap();
        assert_eq!(w.share_kind, ShareKind::Extended);
        assert_eq!(w.version_mask, BIP320_VERSION_MASK);
        let MerkleSource::Coinbase {
            prefix, rollable, ..
        } = &w.merkle
        else {
            panic!()
        };
        assert_eq!((&prefix[3..], *rollable), (&[0xbb; 4][..], 6));
        s.set_extranonce_prefix(&SetExtranoncePrefixOwned {
            channel_id: 9,
            extranonce_prefix: B032Owned::try_from(vec![0xcc; 2]).unwrap(),
        })
        .unwrap();
        assert_eq!(s.work().unwrap().merkle, w.merkle, "current job unchanged");
        s.new_extended_mining_job(&ext_job(9, 2, true), now)
            .unwrap();
        s.set_new_prev_hash(&snph(9, 2, 0x98), now).unwrap();
        let MerkleSource::Coinbase { prefix, .. } = s.work().unwrap().merkle else {
            panic!()
        };
        assert_eq!(&prefix[3..], &[0xcc; 2]);
        // A prefix that leaves no room for the 6 miner bytes is refused.
        assert!(s
            .set_extranonce_prefix(&SetExtranoncePrefixOwned {
                channel_id: 9,
                extranonce_prefix: B032Owned::try_from(vec![0; 27]).unwrap(),
            })
            .is_err());
    }

    #[test]
    fn open_answers_must_match_the_pending_request_and_disconnect_stops_mining() {
        let now = Instant::now();
        let mut s = state(ChannelMode::Standard);
        let rid = request_id(&s.connected(0));
        let ok = OpenStandardMiningChannelSuccessOwned {
            request_id: rid + 1,
            channel_id: 1,
            target: u256(0x11),
            extranonce_prefix: B032Owned::try_from(vec![]).unwrap(),
            group_channel_id: 0,
        };
        assert_eq!(s.open_standard_success(&ok), Err(Ignored::UnexpectedOpen));
        let ok = OpenStandardMiningChannelSuccessOwned {
            request_id: rid,
            ..ok
        };
        s.open_standard_success(&ok).unwrap();
        assert_eq!(s.open_standard_success(&ok), Err(Ignored::UnexpectedOpen));
        s.new_mining_job(&job(1, 1, None, 1), now).unwrap();
        s.set_new_prev_hash(&snph(1, 1, 2), now).unwrap();
        let epoch = s.tip_epoch();
        assert!(s.work().is_some());
        s.disconnected();
        assert!(s.work().is_none());
        assert!(s.tip_epoch() > epoch);
        assert!(s.new_mining_job(&job(1, 2, None, 1), now).is_err());
    }

    #[test]
    fn close_channel_reopens() {
        let mut s = state(ChannelMode::Extended);
        open_extended(&mut s, 9);
        let reopen = s
            .close_channel(&CloseChannelOwned {
                channel_id: 9,
                reason_code: tower_stratum::session::str0255("bye").unwrap(),
            })
            .unwrap();
        assert!(matches!(
            reopen,
            Sv2Message::Mining(MiningOwned::OpenExtendedMiningChannel(_))
        ));
        assert_eq!(s.channel_id(), None);
    }
}
