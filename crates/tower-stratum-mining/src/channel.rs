//! Per-connection state (its group channel and its standard and extended channels) and the
//! operations shared by both channel kinds.

use crate::vardiff::ClassicVardiff;
use std::collections::BTreeMap;
use tower_stratum_core::stratum_core::bitcoin::Target;
use tower_stratum_core::stratum_core::channels_sv2::chain_tip::ChainTip;
use tower_stratum_core::stratum_core::channels_sv2::server::error::{
    ExtendedChannelError, StandardChannelError,
};
use tower_stratum_core::stratum_core::channels_sv2::server::extended::ExtendedChannel;
use tower_stratum_core::stratum_core::channels_sv2::server::group::GroupChannel;
use tower_stratum_core::stratum_core::channels_sv2::server::jobs::JobOrigin;
use tower_stratum_core::stratum_core::channels_sv2::server::share_accounting::ShareAccounting;
use tower_stratum_core::stratum_core::channels_sv2::server::standard::StandardChannel;
use tower_stratum_core::ConnectionContext;

/// Channel id of every connection's group channel. Channel ids share one namespace with group
/// ids per connection (spec 5.2.3), so channels are numbered from 2.
pub(crate) const GROUP_CHANNEL_ID: u32 = 1;

/// A channel and its vardiff state.
#[derive(Debug)]
pub(crate) struct Channel<C> {
    pub(crate) inner: C,
    pub(crate) vardiff: ClassicVardiff,
}

/// One Mining connection: its group channel and its channels.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) ctx: ConnectionContext,
    /// `SetupConnection` flag `REQUIRES_STANDARD_JOBS`: standard channels get `NewMiningJob`s
    /// of their own instead of group-channel `NewExtendedMiningJob`s; extended channels are
    /// refused.
    pub(crate) requires_standard_jobs: bool,
    pub(crate) next_channel_id: u32,
    pub(crate) group: GroupChannel,
    pub(crate) standard: BTreeMap<u32, Channel<StandardChannel>>,
    pub(crate) extended: BTreeMap<u32, Channel<ExtendedChannel>>,
}

impl Connection {
    pub(crate) fn channel_count(&self) -> usize {
        self.standard.len() + self.extended.len()
    }

    /// A fresh channel id, or `None` once the `u32` space is used up.
    pub(crate) fn allocate_channel_id(&mut self) -> Option<u32> {
        let id = self.next_channel_id;
        self.next_channel_id = id.checked_add(1)?;
        Some(id)
    }

    /// The `user_identity` a channel was opened with.
    pub(crate) fn user_identity(&self, channel_id: u32) -> Option<&str> {
        match self.extended.get(&channel_id) {
            Some(ch) => Some(ch.inner.get_user_identity()),
            None => self
                .standard
                .get(&channel_id)
                .map(|ch| ch.inner.get_user_identity()),
        }
    }

    /// Removes a channel of either kind (and its group membership); whether it existed.
    pub(crate) fn remove_channel(&mut self, channel_id: u32) -> bool {
        self.group.remove_channel_id(channel_id);
        self.standard.remove(&channel_id).is_some() || self.extended.remove(&channel_id).is_some()
    }
}

/// Makes `ch`'s target no harder than `network` (the target of `nBits` of its current job):
/// a hash that meets the network target is a block, so a channel must never make the miner
/// throw it away. The client's `max_target` still bounds it (spec 5.3.2: the easiest target
/// the device accepts): a client that asks for a harder target than the network's gets it.
/// Returns the new target if it changed.
pub(crate) fn cap_at_network<C: ChannelOps>(ch: &mut C, network: Target) -> Option<Target> {
    let capped = network.min(ch.requested_max_target());
    if ch.target() < capped {
        ch.force_target(capped);
        Some(ch.target())
    } else {
        None
    }
}

/// What share bookkeeping and block assembly need from a job.
#[derive(Debug, Clone)]
pub(crate) struct JobInfo {
    pub(crate) merkle_path: Vec<[u8; 32]>,
    pub(crate) coinbase_prefix: Vec<u8>,
}

/// Why `update_channel` failed: a protocol error code, or an internal error.
pub(crate) enum UpdateError {
    Code(&'static str),
    Internal(String),
}

/// The operations vardiff, `UpdateChannel` and block bookkeeping need, over both channel kinds.
pub(crate) trait ChannelOps {
    fn target(&self) -> Target;
    fn nominal_hashrate(&self) -> f32;
    fn shares_per_minute(&self) -> f32;
    fn set_stable_hashrate(&mut self, stable: bool);
    fn update(&mut self, hashrate: f32, max_target: Option<Target>) -> Result<(), UpdateError>;
    /// Sets the target of jobs created from now on (ignored if zero).
    fn force_target(&mut self, target: Target);
    /// The client's `max_target` (its `OpenChannel` / last `UpdateChannel`, after the
    /// server's difficulty floor).
    fn requested_max_target(&self) -> Target;
    fn accounting(&self) -> &ShareAccounting;
    fn chain_tip(&self) -> Option<&ChainTip>;
    /// The active or past job `job_id` (the jobs a share can still be accepted for).
    fn job_info(&self, job_id: u32) -> Option<JobInfo>;
    /// The version of the active or past job `job_id` (no allocation).
    fn job_version(&self, job_id: u32) -> Option<u32>;
}

/// The [`ChannelOps`] methods that read the same on SRI's standard and extended channels.
macro_rules! channel_ops_common {
    ($channel:ident, $error:ident) => {
        fn target(&self) -> Target {
            *self.get_target()
        }
        fn nominal_hashrate(&self) -> f32 {
            self.get_nominal_hashrate()
        }
        fn shares_per_minute(&self) -> f32 {
            self.get_shares_per_minute()
        }
        fn set_stable_hashrate(&mut self, stable: bool) {
            $channel::set_stable_hashrate(self, stable)
        }
        fn update(&mut self, hashrate: f32, max_target: Option<Target>) -> Result<(), UpdateError> {
            self.update_channel(hashrate, max_target)
                .map_err(|e| match e {
                    $error::UpdateChannelInvalidNominalHashrate(c)
                    | $error::UpdateChannelInvalidMaxTarget(c) => UpdateError::Code(c),
                    other => UpdateError::Internal(format!("{other:?}")),
                })
        }
        fn force_target(&mut self, target: Target) {
            let _ = self.set_target(target);
        }
        fn requested_max_target(&self) -> Target {
            *self.get_requested_max_target()
        }
        fn accounting(&self) -> &ShareAccounting {
            self.get_share_accounting()
        }
        fn chain_tip(&self) -> Option<&ChainTip> {
            self.get_chain_tip()
        }
        fn job_version(&self, job_id: u32) -> Option<u32> {
            self.get_active_job()
                .filter(|j| j.get_job_id() == job_id)
                .or_else(|| self.get_past_job(job_id))
                .map(|j| j.get_version())
        }
    };
}

impl ChannelOps for StandardChannel {
    channel_ops_common!(StandardChannel, StandardChannelError);
    fn job_info(&self, job_id: u32) -> Option<JobInfo> {
        let job = self
            .get_active_job()
            .filter(|j| j.get_job_id() == job_id)
            .or_else(|| self.get_past_job(job_id))?;
        let template = job.get_template();
        Some(JobInfo {
            merkle_path: template.merkle_path.iter().map(|n| n.to_array()).collect(),
            coinbase_prefix: template.coinbase_prefix.as_bytes().to_vec(),
        })
    }
}

impl ChannelOps for ExtendedChannel {
    channel_ops_common!(ExtendedChannel, ExtendedChannelError);
    fn job_info(&self, job_id: u32) -> Option<JobInfo> {
        let job = self
            .get_active_job()
            .filter(|j| j.get_job_id() == job_id)
            .or_else(|| self.get_past_job(job_id))?;
        let coinbase_prefix = match job.get_origin() {
            JobOrigin::NewTemplate(t) => t.coinbase_prefix.as_bytes().to_vec(),
            JobOrigin::SetCustomMiningJob(c) => c.coinbase_prefix.as_bytes().to_vec(),
        };
        Some(JobInfo {
            merkle_path: job.get_merkle_path().iter().map(|n| n.to_array()).collect(),
            coinbase_prefix,
        })
    }
}
