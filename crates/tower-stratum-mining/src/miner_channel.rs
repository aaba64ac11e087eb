//! The miner's side of one Mining Protocol channel (spec 5), sans-IO: the channel open, jobs,
//! future jobs, the chain tip, targets, the extranonce prefix and version rolling. Every
//! downstream of a pool (a miner, a proxy's upstream channel, a load generator) follows the same
//! rules, so they live here once. Each method takes one message (and, where it matters, the
//! monotonic time it arrived) and updates the state; [`MinerChannel::work`] is what to mine now.
//! Nothing here reads the clock, spawns or does IO.
//!
//! Rules implemented (spec 5.2, 5.3):
//! - A job is for us when its `channel_id` is our channel or the group channel our channel
//!   belongs to (`group_channel_id` of the open success, or a later `SetGroupChannel`, 5.3.22).
//! - A future job (no `min_ntime`) waits for the `SetNewPrevHash` naming its `job_id`; that
//!   message activates it, supplies `min_ntime`, and drops every other job (5.3.17).
//! - A non-future job is mined at once on the current chain tip, from its own `min_ntime`
//!   (5.3.15, 5.3.16).
//! - `SetTarget` (5.3.21) applies to future jobs and jobs received later; a job received with
//!   `min_ntime` set keeps the target it was received under.
//! - `SetExtranoncePrefix` (5.3.10) applies to jobs received after it.
//! - Version rolling: the BIP320 bits of every standard job (5.3.15) and of extended jobs with
//!   `version_rolling_allowed` (5.3.16); none at all if the upstream set
//!   `REQUIRES_FIXED_VERSION` in `SetupConnection.Success` (5.3.1).
//! - A standard-mode miner opens an extended channel instead when the upstream set
//!   `REQUIRES_EXTENDED_CHANNELS` (5.3.1).
//! - `CloseChannel` for our channel (or its group) forgets it and yields a new open request.
//! - Every non-future job of the current tip stays known by `job_id` ([`MinerChannel::job`],
//!   with the extranonce_prefix it came under) until the next `SetNewPrevHash`, so a share
//!   found on an earlier job of the tip can still be checked.
//! - A proxy that opens many channels on one connection numbers the open requests itself and
//!   builds each channel from its open success ([`MinerChannel::extended_opened`]).
//!
//! At most [`MAX_JOBS`] jobs are kept (oldest dropped first), so a server flooding jobs cannot
//! grow it.

use std::collections::VecDeque;
use std::time::Instant;
use tower_stratum_core::session::{REQUIRES_EXTENDED_CHANNELS, REQUIRES_FIXED_VERSION};
use tower_stratum_core::stratum_core::binary_sv2::{Str0255Owned, U256Owned};
use tower_stratum_core::stratum_core::mining_sv2::{
    CloseChannelOwned, NewExtendedMiningJobOwned, NewMiningJobOwned,
    OpenExtendedMiningChannelOwned, OpenExtendedMiningChannelSuccessOwned,
    OpenStandardMiningChannelOwned, OpenStandardMiningChannelSuccessOwned,
    SetExtranoncePrefixOwned, SetGroupChannelOwned, SetNewPrevHashOwned, SetTargetOwned,
};
use tower_stratum_core::stratum_core::parsers_sv2::MiningOwned;
use tower_stratum_core::Sv2Message;

/// Jobs kept per channel (future and current); older ones are dropped first.
pub const MAX_JOBS: usize = 64;

/// The header version bits a miner may roll (BIP320): `0x1fffe000`.
pub const BIP320_VERSION_MASK: u32 = 0x1fff_e000;

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
    /// `tower_stratum_core::session::str0255`.
    pub user_identity: Str0255Owned,
    /// `nominal_hash_rate`, hashes per second; the upstream derives the initial target from it.
    pub nominal_hash_rate: f32,
    /// Extended channels: `min_extranonce_size`, bytes of extranonce the miner rolls.
    pub min_extranonce_size: u16,
}

/// Where a job's merkle root comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobMerkle {
    /// A standard job: the upstream fixed the merkle root (internal byte order).
    Fixed([u8; 32]),
    /// An extended job (on an extended channel, or a group-channel job on a standard channel):
    /// coinbase = `prefix` (coinbase_tx_prefix + the channel's extranonce_prefix) + the
    /// miner-owned extranonce of `rollable` bytes + `suffix`. An Sv1 job has the same shape:
    /// `prefix` = coinb1 + extranonce1, extranonce2 of `rollable` bytes, `suffix` = coinb2.
    Coinbase {
        /// `coinbase_tx_prefix` followed by `extranonce_prefix`.
        prefix: Vec<u8>,
        /// `coinbase_tx_suffix`.
        suffix: Vec<u8>,
        /// Merkle path, deepest first, internal byte order.
        path: Vec<[u8; 32]>,
        /// Size of the miner-owned extranonce, bytes (0 for a standard channel).
        rollable: usize,
    },
}

/// What to mine now: one job on one chain tip ([`MinerChannel::work`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelWork {
    /// Increases with every chain-tip, channel or connection change: a share found on work of
    /// an older epoch is stale and should not be submitted.
    pub tip_epoch: u64,
    /// The channel shares are submitted on (ours, also for group-channel jobs).
    pub channel_id: u32,
    /// The job's `job_id`.
    pub job_id: u32,
    /// The channel type open: `SubmitShares.Standard` or `.Extended`.
    pub mode: ChannelMode,
    /// The job's version.
    pub version: u32,
    /// Version bits the miner may roll: [`BIP320_VERSION_MASK`] or 0.
    pub version_mask: u32,
    /// From SetNewPrevHash (internal byte order).
    pub prev_hash: [u8; 32],
    /// From SetNewPrevHash: the network target in compact form.
    pub nbits: u32,
    /// Smallest ntime allowed (SetNewPrevHash's, or a non-future job's), unix seconds.
    pub min_ntime: u32,
    /// When the message that supplied `min_ntime` arrived (monotonic clock).
    pub min_ntime_received: Instant,
    /// The share target, little-endian (as `U256` on the wire).
    pub target: [u8; 32],
    /// Where the merkle root comes from.
    pub merkle: JobMerkle,
}

/// Why a message was not applied (for the log; none of these is fatal).
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
    merkle: JobMerkle,
    /// The target of a job received with `min_ntime` set (fixed, spec 5.3.21); `None` for a
    /// future job, which follows the channel's target.
    target: Option<[u8; 32]>,
    /// The channel's extranonce_prefix when the job arrived (the end of an extended job's
    /// coinbase `prefix`, spec 5.3.10).
    extranonce_prefix: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Tip {
    prev_hash: [u8; 32],
    nbits: u32,
}

/// One miner-side channel: see the module docs.
#[derive(Debug)]
pub struct MinerChannel {
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
    changed: bool,
}

impl MinerChannel {
    /// A channel not yet opened, on no connection.
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
            changed: true,
        }
    }

    /// An extended channel opened by the caller: `m` answers an `OpenExtendedMiningChannel`
    /// the caller sent itself on a connection set up with `success_flags` (from
    /// `SetupConnection.Success`). For a proxy that opens many channels on one connection and
    /// numbers their requests itself; [`Self::connected`] would number them from 1 for each.
    /// `request.mode` is ignored (the channel is extended). Errors with
    /// [`Ignored::Malformed`] as [`Self::open_extended_success`].
    pub fn extended_opened(
        request: ChannelRequest,
        success_flags: u32,
        m: &OpenExtendedMiningChannelSuccessOwned,
    ) -> Result<Self, Ignored> {
        let mut ch = Self::new(request);
        ch.fixed_version = success_flags & REQUIRES_FIXED_VERSION != 0;
        ch.open_mode = ChannelMode::Extended;
        ch.pending_request = Some(m.request_id);
        ch.open_extended_success(m)?;
        Ok(ch)
    }

    /// The channel type asked for.
    pub fn mode(&self) -> ChannelMode {
        self.request.mode
    }

    /// The channel type opened on the current connection.
    pub fn open_mode(&self) -> ChannelMode {
        self.open_mode
    }

    /// Our channel id, once open.
    pub fn channel_id(&self) -> Option<u32> {
        self.channel.as_ref().map(|c| c.id)
    }

    /// Whether a message naming `channel_id` is for this channel: it is our open channel's id
    /// or the id of the group channel it belongs to (spec 5.3.22).
    pub fn is_for_channel(&self, channel_id: u32) -> bool {
        self.is_ours(channel_id)
    }

    /// The channel's maximum target (from the open success or the latest `SetTarget`),
    /// little-endian as `U256` on the wire; `None` before the channel is open. Jobs received
    /// with `min_ntime` set keep the target they came under ([`ChannelWork::target`]).
    pub fn target(&self) -> Option<[u8; 32]> {
        self.channel.as_ref().map(|c| c.target)
    }

    /// The channel's current extranonce_prefix (from the open success or the latest
    /// `SetExtranoncePrefix`), the bytes as sent; `None` before the channel is open.
    pub fn extranonce_prefix(&self) -> Option<&[u8]> {
        self.channel
            .as_ref()
            .map(|c| c.extranonce_prefix.as_slice())
    }

    /// Extended channels: the miner-owned extranonce size granted (`extranonce_size` of the
    /// open success), bytes; 0 for a standard channel, `None` before the channel is open.
    pub fn extranonce_size(&self) -> Option<usize> {
        self.channel.as_ref().map(|c| c.extranonce_size)
    }

    /// Whether the work changed since the last call (then read [`Self::work`] again).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// The epoch of the current work (see [`ChannelWork::tip_epoch`]).
    pub fn tip_epoch(&self) -> u64 {
        self.tip_epoch
    }

    /// The `job_id` being mined, if any.
    pub fn active_job(&self) -> Option<u32> {
        self.active
    }

    fn reset(&mut self) {
        self.pending_request = None;
        self.channel = None;
        self.jobs.clear();
        self.tip = None;
        self.new_tip_epoch();
    }

    /// A new chain tip, channel or connection: nothing active, earlier work is stale.
    fn new_tip_epoch(&mut self) {
        self.active = None;
        self.tip_epoch += 1;
        self.changed = true;
    }

    fn activate(&mut self, job_id: u32) {
        if self.jobs.iter().any(|j| j.id == job_id) {
            self.active = Some(job_id);
            self.changed = true;
        }
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

    /// `OpenExtendedMiningChannel.Success`. Errors with [`Ignored::Malformed`] if the prefix
    /// and the miner's extranonce do not fit the 32 bytes of `SubmitSharesExtended.extranonce`.
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

    /// `OpenMiningChannel.Error` for `request_id`: returns whether it answered our request.
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

    /// `NewMiningJob` (standard channels), received at `now`.
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
            merkle: JobMerkle::Fixed(m.merkle_root.to_array()),
            target: self.job_target(min_ntime),
            extranonce_prefix: self
                .channel
                .as_ref()
                .map(|c| c.extranonce_prefix.clone())
                .unwrap_or_default(),
        };
        self.store_job(job);
        Ok(())
    }

    /// `NewExtendedMiningJob` (extended channels, and group channels of standard ones),
    /// received at `now`.
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
        let merkle = JobMerkle::Coinbase {
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
            extranonce_prefix: ch.extranonce_prefix.clone(),
        };
        self.store_job(job);
        Ok(())
    }

    /// `SetNewPrevHash` (Mining Protocol), received at `now`: activates the named future job
    /// and drops the others. Errors with [`Ignored::UnknownJob`] (the tip is still taken) if
    /// the job is not known.
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

    /// `SetTarget`: a new maximum target for our channel (or its group).
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
    pub fn work(&self) -> Option<ChannelWork> {
        self.job(self.active?)
    }

    /// Job `job_id` as work on the current chain tip, whether active or not: for checking a
    /// share found on an earlier job of this tip. `None` for a future job (no
    /// `SetNewPrevHash` activated it), before a chain tip, or for a job no longer kept (every
    /// other job is dropped by `SetNewPrevHash`; at most [`MAX_JOBS`] are kept).
    pub fn job(&self, job_id: u32) -> Option<ChannelWork> {
        let ch = self.channel.as_ref()?;
        let tip = self.tip.as_ref()?;
        let job = self.jobs.iter().find(|j| j.id == job_id)?;
        let min_ntime = job.min_ntime?;
        Some(ChannelWork {
            tip_epoch: self.tip_epoch,
            channel_id: ch.id,
            job_id: job.id,
            mode: self.open_mode,
            version: job.version,
            version_mask: job.version_mask,
            prev_hash: tip.prev_hash,
            nbits: tip.nbits,
            min_ntime,
            min_ntime_received: job.received,
            target: job.target.unwrap_or(ch.target),
            merkle: job.merkle.clone(),
        })
    }

    /// The extranonce_prefix job `job_id` was received under (spec 5.3.10: a
    /// `SetExtranoncePrefix` applies to jobs received after it): the last bytes of an extended
    /// job's [`JobMerkle::Coinbase`] `prefix`, after `coinbase_tx_prefix`. `None` if the job is
    /// not kept.
    pub fn job_extranonce_prefix(&self, job_id: u32) -> Option<&[u8]> {
        self.jobs
            .iter()
            .find(|j| j.id == job_id)
            .map(|j| j.extranonce_prefix.as_slice())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use tower_stratum_core::stratum_core::binary_sv2::{
        B032Owned, Seq0255Owned, Seq064KOwned, Sv2OptionOwned,
    };

    fn open(ch: &mut MinerChannel) {
        let Sv2Message::Mining(MiningOwned::OpenStandardMiningChannel(m)) = ch.connected(0) else {
            panic!("expected an OpenStandardMiningChannel");
        };
        ch.open_standard_success(&OpenStandardMiningChannelSuccessOwned {
            request_id: m.request_id,
            channel_id: 7,
            target: U256Owned::from([0x11; 32]),
            extranonce_prefix: B032Owned::try_from(vec![0xaa; 4]).unwrap(),
            group_channel_id: 0,
        })
        .unwrap();
    }

    fn future_job(job_id: u32) -> NewMiningJobOwned {
        NewMiningJobOwned {
            channel_id: 7,
            job_id,
            min_ntime: Sv2OptionOwned::new(None),
            version: 0x2000_0000,
            merkle_root: U256Owned::from([job_id as u8; 32]),
        }
    }

    #[test]
    fn a_flood_of_jobs_keeps_at_most_max_jobs_and_the_newest_still_activates() {
        let now = Instant::now();
        let mut ch = MinerChannel::new(ChannelRequest {
            mode: ChannelMode::Standard,
            user_identity: tower_stratum_core::session::str0255("w").unwrap(),
            nominal_hash_rate: 1e6,
            min_extranonce_size: 0,
        });
        open(&mut ch);
        for id in 0..10_000 {
            ch.new_mining_job(&future_job(id), now).unwrap();
        }
        assert_eq!(ch.jobs.len(), MAX_JOBS);
        let snph = |job_id| SetNewPrevHashOwned {
            channel_id: 7,
            job_id,
            prev_hash: U256Owned::from([9; 32]),
            min_ntime: 1_000,
            nbits: 0x207f_ffff,
        };
        assert_eq!(
            ch.set_new_prev_hash(&snph(0), now),
            Err(Ignored::UnknownJob(0)),
            "the oldest were dropped"
        );
        ch.new_mining_job(&future_job(9_999), now).unwrap();
        ch.set_new_prev_hash(&snph(9_999), now).unwrap();
        let w = ch.work().unwrap();
        assert_eq!(
            (w.job_id, w.nbits, w.min_ntime),
            (9_999, 0x207f_ffff, 1_000)
        );
        assert_eq!(w.version_mask, BIP320_VERSION_MASK);
    }

    fn extended_request() -> ChannelRequest {
        ChannelRequest {
            mode: ChannelMode::Extended,
            user_identity: tower_stratum_core::session::str0255("proxy").unwrap(),
            nominal_hash_rate: 1e12,
            min_extranonce_size: 8,
        }
    }

    fn extended_success(
        request_id: u32,
        channel_id: u32,
        group: u32,
    ) -> OpenExtendedMiningChannelSuccessOwned {
        OpenExtendedMiningChannelSuccessOwned {
            request_id,
            channel_id,
            target: U256Owned::from([0x22; 32]),
            extranonce_size: 8,
            extranonce_prefix: B032Owned::try_from(vec![0xe1, 0xe2]).unwrap(),
            group_channel_id: group,
        }
    }

    fn extended_job(
        channel_id: u32,
        job_id: u32,
        min_ntime: Option<u32>,
        rolling: bool,
    ) -> NewExtendedMiningJobOwned {
        NewExtendedMiningJobOwned {
            channel_id,
            job_id,
            min_ntime: Sv2OptionOwned::new(min_ntime),
            version: 0x2000_0000,
            version_rolling_allowed: rolling,
            merkle_path: Seq0255Owned::new(vec![]).unwrap(),
            coinbase_tx_prefix: vec![0xc0, 0xc1, 0xc2].try_into().unwrap(),
            coinbase_tx_suffix: vec![0x5f].try_into().unwrap(),
        }
    }

    fn prev_hash(channel_id: u32, job_id: u32) -> SetNewPrevHashOwned {
        SetNewPrevHashOwned {
            channel_id,
            job_id,
            prev_hash: U256Owned::from([3; 32]),
            min_ntime: 500,
            nbits: 0x1d00_ffff,
        }
    }

    #[test]
    fn a_channel_opened_by_the_caller_is_built_from_its_open_success() {
        let ch = MinerChannel::extended_opened(extended_request(), 0, &extended_success(41, 9, 0))
            .unwrap();
        assert_eq!(ch.channel_id(), Some(9));
        assert_eq!(ch.open_mode(), ChannelMode::Extended);
        assert_eq!(ch.target(), Some([0x22; 32]));
        assert_eq!(ch.extranonce_prefix(), Some(&[0xe1, 0xe2][..]));
        assert_eq!(ch.extranonce_size(), Some(8));
        let mut too_long = extended_success(1, 9, 0);
        too_long.extranonce_prefix = B032Owned::try_from(vec![0; 25]).unwrap();
        assert!(matches!(
            MinerChannel::extended_opened(extended_request(), 0, &too_long),
            Err(Ignored::Malformed(_))
        ));
    }

    #[test]
    fn group_channel_jobs_and_tips_reach_a_member_and_other_channels_do_not() {
        let now = Instant::now();
        let mut ch =
            MinerChannel::extended_opened(extended_request(), 0, &extended_success(1, 9, 100))
                .unwrap();
        assert!(ch.is_for_channel(9) && ch.is_for_channel(100));
        assert!(!ch.is_for_channel(101));
        assert_eq!(
            ch.new_extended_mining_job(&extended_job(101, 1, None, true), now),
            Err(Ignored::OtherChannel(101))
        );
        ch.new_extended_mining_job(&extended_job(100, 2, None, true), now)
            .unwrap();
        assert_eq!(
            ch.job(2),
            None,
            "a future job is not work before its SetNewPrevHash"
        );
        ch.set_new_prev_hash(&prev_hash(100, 2), now).unwrap();
        let w = ch.work().unwrap();
        assert_eq!((w.channel_id, w.job_id, w.min_ntime), (9, 2, 500));
        // A later SetGroupChannel moves it to another group.
        ch.set_group_channel(&SetGroupChannelOwned {
            group_channel_id: 200,
            channel_ids: Seq064KOwned::new(vec![9]).unwrap(),
        })
        .unwrap();
        assert!(ch.is_for_channel(200) && !ch.is_for_channel(100));
    }

    #[test]
    fn earlier_jobs_of_the_tip_stay_looked_up_until_the_next_set_new_prev_hash() {
        let now = Instant::now();
        let mut ch =
            MinerChannel::extended_opened(extended_request(), 0, &extended_success(1, 9, 0))
                .unwrap();
        ch.new_extended_mining_job(&extended_job(9, 1, None, true), now)
            .unwrap();
        ch.set_new_prev_hash(&prev_hash(9, 1), now).unwrap();
        ch.new_extended_mining_job(&extended_job(9, 2, Some(777), false), now)
            .unwrap();
        assert_eq!(
            ch.active_job(),
            Some(2),
            "a non-future job is mined at once"
        );
        let old = ch.job(1).unwrap();
        assert_eq!(
            (old.min_ntime, old.version_mask),
            (500, BIP320_VERSION_MASK)
        );
        let new = ch.job(2).unwrap();
        assert_eq!((new.min_ntime, new.version_mask), (777, 0));
        assert_eq!(new.prev_hash, [3; 32]);
        ch.new_extended_mining_job(&extended_job(9, 3, None, true), now)
            .unwrap();
        ch.set_new_prev_hash(&prev_hash(9, 3), now).unwrap();
        assert_eq!((ch.job(1), ch.job(2)), (None, None));
        assert!(ch.job(3).is_some());
    }

    #[test]
    fn a_job_keeps_the_extranonce_prefix_it_was_received_under() {
        let now = Instant::now();
        let mut ch =
            MinerChannel::extended_opened(extended_request(), 0, &extended_success(1, 9, 0))
                .unwrap();
        ch.new_extended_mining_job(&extended_job(9, 1, None, true), now)
            .unwrap();
        ch.set_extranonce_prefix(&SetExtranoncePrefixOwned {
            channel_id: 9,
            extranonce_prefix: B032Owned::try_from(vec![0xf0, 0xf1, 0xf2]).unwrap(),
        })
        .unwrap();
        ch.new_extended_mining_job(&extended_job(9, 2, None, true), now)
            .unwrap();
        assert_eq!(ch.extranonce_prefix(), Some(&[0xf0, 0xf1, 0xf2][..]));
        assert_eq!(ch.job_extranonce_prefix(1), Some(&[0xe1, 0xe2][..]));
        assert_eq!(ch.job_extranonce_prefix(2), Some(&[0xf0, 0xf1, 0xf2][..]));
        ch.set_new_prev_hash(&prev_hash(9, 1), now).unwrap();
        let JobMerkle::Coinbase {
            prefix, rollable, ..
        } = ch.work().unwrap().merkle
        else {
            panic!("an extended job");
        };
        assert_eq!(prefix, vec![0xc0, 0xc1, 0xc2, 0xe1, 0xe2]);
        assert_eq!(rollable, 8);
    }

    #[test]
    fn set_target_changes_the_channel_target_and_fixed_version_forbids_rolling() {
        let now = Instant::now();
        let mut ch = MinerChannel::extended_opened(
            extended_request(),
            REQUIRES_FIXED_VERSION,
            &extended_success(1, 9, 0),
        )
        .unwrap();
        ch.set_target(&SetTargetOwned {
            channel_id: 9,
            maximum_target: U256Owned::from([0x05; 32]),
        })
        .unwrap();
        assert_eq!(ch.target(), Some([0x05; 32]));
        ch.new_extended_mining_job(&extended_job(9, 1, None, true), now)
            .unwrap();
        ch.set_new_prev_hash(&prev_hash(9, 1), now).unwrap();
        assert_eq!(ch.work().unwrap().version_mask, 0);
    }
}
