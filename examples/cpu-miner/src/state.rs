//! The miner's Mining Protocol state (spec 5), sans-IO: channel, jobs, chain tip, target. Each
//! method takes one message (and the time it arrived) and updates the state; the handler shell
//! ([`crate::handler`]) publishes [`MinerState::work`] to the hashing threads when
//! [`MinerState::take_changed`] says the work changed. Nothing here reads the clock, spawns or
//! does IO.
//!
//! Rules implemented (spec 5.3):
//! - A job is for us when its `channel_id` is our channel or the group channel our channel
//!   belongs to (`group_channel_id` of the open success, or a later `SetGroupChannel`).
//! - A future job (no `min_ntime`) waits for the `SetNewPrevHash` naming its `job_id`; that
//!   message activates it, supplies `min_ntime`, and drops every other job (they are stale).
//! - A non-future job is mined at once on the current chain tip, from its own `min_ntime`.
//! - `SetTarget` replaces the target and keeps the search position (no unit is hashed twice);
//!   `SetExtranoncePrefix` applies to jobs received after it.
//! - Standard channels roll the BIP320 version bits of every job (spec: the general purpose
//!   bits of `NewMiningJob.version` may be freely manipulated); extended jobs only when
//!   `version_rolling_allowed`.

use crate::work::{MerkleSource, ShareKind, Work, BIP320_VERSION_MASK};
use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;
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
    next_request_id: u32,
    pending_request: Option<u32>,
    channel: Option<Channel>,
    jobs: VecDeque<Job>,
    tip: Option<Tip>,
    /// `job_id` of the job being mined.
    active: Option<u32>,
    tip_epoch: u64,
    next_unit: Arc<AtomicU64>,
    changed: bool,
}

impl MinerState {
    /// A state with no connection.
    pub fn new(request: ChannelRequest) -> Self {
        Self {
            request,
            next_request_id: 1,
            pending_request: None,
            channel: None,
            jobs: VecDeque::new(),
            tip: None,
            active: None,
            tip_epoch: 0,
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

    /// A new search space (another job, tip, channel or extranonce): fresh unit counter.
    fn new_search_space(&mut self) {
        self.next_unit = Arc::new(AtomicU64::new(0));
        self.changed = true;
    }

    /// A new chain tip or connection: shares found before are stale from now on.
    fn new_tip_epoch(&mut self) {
        self.active = None;
        self.tip_epoch += 1;
        self.new_search_space();
    }

    fn is_ours(&self, channel_id: u32) -> bool {
        self.channel
            .as_ref()
            .is_some_and(|c| c.id == channel_id || (c.group_id != 0 && c.group_id == channel_id))
    }

    /// The upstream connection is established: forget everything and return the channel-open
    /// request to send.
    pub fn connected(&mut self) -> Sv2Message {
        self.reset();
        self.open_request()
    }

    /// The open request for a new channel (also after `CloseChannel`).
    fn open_request(&mut self) -> Sv2Message {
        let request_id = self.next_request_id;
        self.next_request_id = self.next_request_id.wrapping_add(1);
        self.pending_request = Some(request_id);
        let user_identity = self.request.user_identity.clone();
        let max_target = U256Owned::from([0xffu8; 32]);
        match self.request.mode {
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
        if self.pending_request != Some(request_id) || self.request.mode != mode {
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
            // A non-future job: mine it now on the current tip (spec 5.3.x NewMiningJob).
            self.new_search_space();
            self.active = Some(id);
        }
    }

    /// `NewMiningJob` (standard channels).
    pub fn new_mining_job(&mut self, m: &NewMiningJobOwned, now: Instant) -> Result<(), Ignored> {
        if !self.is_ours(m.channel_id) {
            return Err(Ignored::OtherChannel(m.channel_id));
        }
        let job = Job {
            id: m.job_id,
            version: m.version,
            version_mask: BIP320_VERSION_MASK,
            min_ntime: m.min_ntime.clone().into_inner(),
            received: now,
            merkle: MerkleSource::Fixed(m.merkle_root.to_array()),
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
        let job = Job {
            id: m.job_id,
            version: m.version,
            version_mask: if m.version_rolling_allowed {
                BIP320_VERSION_MASK
            } else {
                0
            },
            min_ntime: m.min_ntime.clone().into_inner(),
            received: now,
            merkle: MerkleSource::Coinbase {
                prefix,
                suffix: m.coinbase_tx_suffix.as_bytes().to_vec(),
                path: m.merkle_path.iter().map(|n| n.to_array()).collect(),
                rollable: ch.extranonce_size,
            },
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
                self.active = Some(job_id);
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
            self.changed = true;
        }
        Ok(())
    }

    /// `SetExtranoncePrefix`: applies to jobs received after it (spec 5.3.x).
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
            share_kind: match self.request.mode {
                ChannelMode::Standard => ShareKind::Standard,
                ChannelMode::Extended => ShareKind::Extended,
            },
            version: job.version,
            version_mask: job.version_mask,
            prev_hash: tip.prev_hash,
            nbits: tip.nbits,
            min_ntime,
            min_ntime_received: job.received,
            target: ch.target,
            merkle: job.merkle.clone(),
            next_unit: self.next_unit.clone(),
        })
    }

    /// The epoch of the current search space (see [`Work::tip_epoch`]).
    pub fn tip_epoch(&self) -> u64 {
        self.tip_epoch
    }
}
