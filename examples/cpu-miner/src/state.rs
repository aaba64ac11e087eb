//! The miner's Mining Protocol state (spec 5), sans-IO: the library's `MinerChannel`
//! ([`tower_stratum::mining::MinerChannel`]: channel, jobs, future jobs, chain tip,
//! target, extranonce prefix, version rolling; the rules are listed there) plus what only a
//! hashing miner needs: a unit counter per search space, so a job whose headers equal an
//! earlier one's on the same tip (same version, version mask and merkle source; e.g. a
//! template resent unchanged, or a new target) continues where that one stopped instead of
//! hashing the same headers again. The handler shell ([`crate::handler`]) publishes
//! [`MinerState::work`] to the hashing threads when [`MinerState::take_changed`] says the work
//! changed. Nothing here reads the clock, spawns or does IO.

use crate::work::{ShareKind, Work};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;
use tower_stratum::mining::miner_channel::MAX_JOBS;
pub use tower_stratum::mining::miner_channel::{ChannelMode, ChannelRequest, Ignored};
use tower_stratum::mining::miner_channel::{ChannelWork, JobMerkle, MinerChannel};
use tower_stratum::stratum_core::mining_sv2::{
    CloseChannelOwned, NewExtendedMiningJobOwned, NewMiningJobOwned,
    OpenExtendedMiningChannelSuccessOwned, OpenStandardMiningChannelSuccessOwned,
    SetExtranoncePrefixOwned, SetGroupChannelOwned, SetNewPrevHashOwned, SetTargetOwned,
};
use tower_stratum::Sv2Message;

/// What makes two jobs' headers identical on one chain tip.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SearchSpace {
    version: u32,
    version_mask: u32,
    merkle: JobMerkle,
}

/// The miner's protocol state: see the module docs.
#[derive(Debug)]
pub struct MinerState {
    channel: MinerChannel,
    /// Unit counter of every search space mined on the current tip epoch.
    spaces: Vec<(SearchSpace, Arc<AtomicU64>)>,
    /// The tip epoch `spaces` belong to.
    spaces_epoch: u64,
    /// Unit counter of the active job.
    next_unit: Arc<AtomicU64>,
    changed: bool,
}

impl MinerState {
    /// A state with no connection.
    pub fn new(request: ChannelRequest) -> Self {
        Self {
            channel: MinerChannel::new(request),
            spaces: Vec::new(),
            spaces_epoch: 0,
            next_unit: Arc::new(AtomicU64::new(0)),
            changed: true,
        }
    }

    /// The channel type this miner opens.
    pub fn mode(&self) -> ChannelMode {
        self.channel.mode()
    }

    /// Our channel id, once open.
    pub fn channel_id(&self) -> Option<u32> {
        self.channel.channel_id()
    }

    /// Whether the work changed since the last call (then publish [`Self::work`]).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// After every change of the channel: pick the unit counter of the (new) active job's
    /// search space, continuing an identical one's on the same tip.
    fn sync<T>(&mut self, r: T) -> T {
        if !self.channel.take_changed() {
            return r;
        }
        self.changed = true;
        if self.channel.tip_epoch() != self.spaces_epoch {
            self.spaces.clear();
            self.spaces_epoch = self.channel.tip_epoch();
        }
        if let Some(w) = self.channel.work() {
            let space = SearchSpace {
                version: w.version,
                version_mask: w.version_mask,
                merkle: w.merkle,
            };
            self.next_unit = match self.spaces.iter().find(|(s, _)| *s == space) {
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
        }
        r
    }

    /// The upstream connection is established with `success_flags` (from
    /// `SetupConnection.Success`): forget everything and return the channel-open request to
    /// send.
    pub fn connected(&mut self, success_flags: u32) -> Sv2Message {
        let r = self.channel.connected(success_flags);
        self.sync(r)
    }

    /// The channel type opened on the current connection.
    pub fn open_mode(&self) -> ChannelMode {
        self.channel.open_mode()
    }

    /// The upstream connection is gone: nothing to mine until the next `connected`.
    pub fn disconnected(&mut self) {
        self.channel.disconnected();
        self.sync(())
    }

    /// `OpenStandardMiningChannel.Success`.
    pub fn open_standard_success(
        &mut self,
        m: &OpenStandardMiningChannelSuccessOwned,
    ) -> Result<(), Ignored> {
        let r = self.channel.open_standard_success(m);
        self.sync(r)
    }

    /// `OpenExtendedMiningChannel.Success`.
    pub fn open_extended_success(
        &mut self,
        m: &OpenExtendedMiningChannelSuccessOwned,
    ) -> Result<(), Ignored> {
        let r = self.channel.open_extended_success(m);
        self.sync(r)
    }

    /// `OpenMiningChannel.Error` for our request: returns whether it was ours.
    pub fn open_error(&mut self, request_id: u32) -> bool {
        let r = self.channel.open_error(request_id);
        self.sync(r)
    }

    /// `NewMiningJob` (standard channels).
    pub fn new_mining_job(&mut self, m: &NewMiningJobOwned, now: Instant) -> Result<(), Ignored> {
        let r = self.channel.new_mining_job(m, now);
        self.sync(r)
    }

    /// `NewExtendedMiningJob` (extended channels, and group channels of standard ones).
    pub fn new_extended_mining_job(
        &mut self,
        m: &NewExtendedMiningJobOwned,
        now: Instant,
    ) -> Result<(), Ignored> {
        let r = self.channel.new_extended_mining_job(m, now);
        self.sync(r)
    }

    /// `SetNewPrevHash` (Mining Protocol): activates the named future job, drops the others.
    pub fn set_new_prev_hash(
        &mut self,
        m: &SetNewPrevHashOwned,
        now: Instant,
    ) -> Result<(), Ignored> {
        let r = self.channel.set_new_prev_hash(m, now);
        self.sync(r)
    }

    /// `SetTarget`: new maximum target for our channel (or its group). A new target keeps the
    /// search position (no unit is hashed twice).
    pub fn set_target(&mut self, m: &SetTargetOwned) -> Result<(), Ignored> {
        let r = self.channel.set_target(m);
        self.sync(r)
    }

    /// `SetExtranoncePrefix`: applies to jobs received after it (spec 5.3.10).
    pub fn set_extranonce_prefix(&mut self, m: &SetExtranoncePrefixOwned) -> Result<(), Ignored> {
        let r = self.channel.set_extranonce_prefix(m);
        self.sync(r)
    }

    /// `SetGroupChannel`: our channel joins `group_channel_id` if it is listed.
    pub fn set_group_channel(&mut self, m: &SetGroupChannelOwned) -> Result<(), Ignored> {
        let r = self.channel.set_group_channel(m);
        self.sync(r)
    }

    /// `CloseChannel` for our channel (or its group): stop mining and return the request that
    /// opens a new one.
    pub fn close_channel(&mut self, m: &CloseChannelOwned) -> Result<Sv2Message, Ignored> {
        let r = self.channel.close_channel(m);
        self.sync(r)
    }

    /// The work to mine now, if any: needs a channel, a chain tip and an active job.
    pub fn work(&self) -> Option<Work> {
        let ChannelWork {
            tip_epoch,
            channel_id,
            job_id,
            mode,
            version,
            version_mask,
            prev_hash,
            nbits,
            min_ntime,
            min_ntime_received,
            target,
            merkle,
        } = self.channel.work()?;
        Some(Work {
            tip_epoch,
            channel_id,
            job_id,
            share_kind: match mode {
                ChannelMode::Standard => ShareKind::Standard,
                ChannelMode::Extended => ShareKind::Extended,
            },
            version,
            version_mask,
            prev_hash,
            nbits,
            min_ntime,
            min_ntime_received,
            target,
            merkle,
            next_unit: self.next_unit.clone(),
        })
    }

    /// The epoch of the current search space (see [`Work::tip_epoch`]).
    pub fn tip_epoch(&self) -> u64 {
        self.channel.tip_epoch()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::work::{MerkleSource, BIP320_VERSION_MASK};
    use std::sync::atomic::Ordering;
    use tower_stratum::session::{REQUIRES_EXTENDED_CHANNELS, REQUIRES_FIXED_VERSION};
    use tower_stratum::stratum_core::binary_sv2::U256Owned;
    use tower_stratum::stratum_core::binary_sv2::{
        B032Owned, B064KOwned, Seq0255Owned, Seq064KOwned, Sv2OptionOwned,
    };
    use tower_stratum::stratum_core::parsers_sv2::MiningOwned;

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
