//! One load-generator channel, sans-IO: the library's
//! [`tower_stratum_mining::MinerChannel`] (channel open, jobs, future jobs, chain
//! tip, target, extranonce prefix: the spec 5.3 rules are listed there) plus a share finder that
//! produces shares the server must accept without real mining.
//!
//! How shares stay valid and cheap: the channel is opened with `max_target` = 2^256 - 1 and a
//! tiny `nominal_hash_rate`, so the server gives its easiest target (on `pool_sv2` and
//! `MiningServer`, 2^256 - 1: every hash is a share). [`Channel::next_share`] tries
//! consecutive nonces with `sha256d` until the header hash meets the channel target. On regtest
//! the network target (`nBits` 0x207fffff, about 2^255) is met by about half of all hashes,
//! and a share that meets it is a block: the server would submit it and every job would go
//! stale. So while the channel target is easier than the network target, the finder also skips
//! hashes that meet the network target (about two hashes per share); once the channel target is
//! as hard as the network's, every share is a block and is reported as such.
//!
//! The version is never rolled. The nonce runs through all 2^32 values per job, then the
//! extranonce (extended) or ntime (standard) moves by one, so no share repeats.

use crate::msgs::{OpenRequest, Share};
use std::time::Instant;
use tower_stratum_core::stratum_core::bitcoin::Target;
use tower_stratum_core::stratum_core::parsers_sv2::MiningOwned;
use tower_stratum_core::Sv2Message;
use tower_stratum_mining::miner_channel::{
    ChannelMode, ChannelRequest, ChannelWork, Ignored, JobMerkle, MinerChannel,
};
use tower_stratum_mining::share_math;

/// Which channel type a connection opens (spec 5.2).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ChannelKind {
    /// `OpenStandardMiningChannel`: the server gives the merkle root.
    Standard,
    /// `OpenExtendedMiningChannel`: the client completes the coinbase with its extranonce.
    Extended,
}

impl std::fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChannelKind::Standard => "standard",
            ChannelKind::Extended => "extended",
        })
    }
}

/// The job being searched, on the current tip.
#[derive(Debug, Clone)]
struct Active {
    tip_epoch: u64,
    job_id: u32,
    version: u32,
    ntime: u32,
    prev_hash: [u8; 32],
    nbits: u32,
    network_target: Target,
    target: Target,
    merkle: JobMerkle,
    merkle_root: [u8; 32],
    /// The rollable extranonce of an extended channel (`None`: standard channel).
    extranonce: Option<Vec<u8>>,
}

/// What a server message did to the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Update {
    /// The message was for this channel and is applied.
    Applied,
    /// Not a message for this channel.
    Ignored,
    /// A message this channel cannot use (e.g. a coinbase that does not parse).
    Malformed(&'static str),
    /// `CloseChannel` for this channel, with its reason code.
    Closed(String),
    /// `OpenMiningChannel.Error` for our open request, with its error code.
    Refused(String),
}

/// A share found by [`Channel::next_share`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// The share.
    pub(crate) share: Share,
    /// Header hashes computed to find it.
    pub(crate) hashes: u32,
    /// Whether its hash meets the channel target (false: the search budget ran out and the best
    /// effort is sent anyway, so the server's rejection shows the mismatch).
    pub(crate) meets_target: bool,
    /// Whether its hash also meets the network target (a block).
    pub(crate) is_block: bool,
}

/// One channel: see the module docs.
#[derive(Debug)]
pub(crate) struct Channel {
    miner: MinerChannel,
    active: Option<Active>,
    /// Next nonce; above `u32::MAX` the extranonce or ntime rolls.
    nonce: u64,
    /// Counter written into the rollable extranonce (little-endian).
    extranonce_counter: u64,
    avoid_blocks: bool,
}

fn le_target(bytes: [u8; 32]) -> Target {
    Target::from_le_bytes(bytes)
}

impl Channel {
    /// A channel to open as `req` asks, or `None` if its `user_identity` does not fit a
    /// `STR0_255`. `avoid_blocks`: skip hashes that meet the network target while the channel
    /// target allows it.
    pub(crate) fn new(req: &OpenRequest, avoid_blocks: bool) -> Option<Self> {
        let mode = match req.kind {
            ChannelKind::Standard => ChannelMode::Standard,
            ChannelKind::Extended => ChannelMode::Extended,
        };
        Some(Self {
            miner: MinerChannel::new(ChannelRequest {
                mode,
                user_identity: tower_stratum_core::session::str0255(&req.user_identity)?,
                nominal_hash_rate: req.nominal_hash_rate,
                min_extranonce_size: req.min_extranonce_size,
            }),
            active: None,
            nonce: 0,
            extranonce_counter: 0,
            avoid_blocks,
        })
    }

    /// The connection is set up (`success_flags` from `SetupConnection.Success`): the
    /// channel-open request to send.
    pub(crate) fn open(&mut self, success_flags: u32) -> Sv2Message {
        let m = self.miner.connected(success_flags);
        self.refresh();
        m
    }

    /// The server-assigned `channel_id` (0 until open).
    pub(crate) fn id(&self) -> u32 {
        self.miner.channel_id().unwrap_or(0)
    }

    /// Whether a job is active on a known chain tip (shares can be produced).
    pub(crate) fn has_work(&self) -> bool {
        self.active.is_some()
    }

    /// Applies one server-to-client Mining message, received now.
    pub(crate) fn on_message(&mut self, m: &MiningOwned) -> Update {
        let now = Instant::now();
        let ch = &mut self.miner;
        let r = match m {
            MiningOwned::OpenStandardMiningChannelSuccess(s) => ch.open_standard_success(s),
            MiningOwned::OpenExtendedMiningChannelSuccess(s) => ch.open_extended_success(s),
            MiningOwned::OpenMiningChannelError(e) => {
                return if ch.open_error(e.request_id) {
                    Update::Refused(e.error_code.as_utf8_or_hex())
                } else {
                    Update::Ignored
                };
            }
            MiningOwned::NewMiningJob(j) => ch.new_mining_job(j, now),
            MiningOwned::NewExtendedMiningJob(j) => ch.new_extended_mining_job(j, now),
            MiningOwned::SetNewPrevHash(p) => ch.set_new_prev_hash(p, now),
            MiningOwned::SetTarget(t) => ch.set_target(t),
            MiningOwned::SetExtranoncePrefix(e) => ch.set_extranonce_prefix(e),
            MiningOwned::SetGroupChannel(g) => ch.set_group_channel(g),
            MiningOwned::CloseChannel(c) => {
                return match ch.close_channel(c) {
                    Ok(_) => {
                        self.refresh();
                        Update::Closed(c.reason_code.as_utf8_or_hex())
                    }
                    Err(_) => Update::Ignored,
                };
            }
            _ => return Update::Ignored,
        };
        let update = match r {
            Ok(()) => Update::Applied,
            // The tip is taken; nothing to mine until a job for it arrives.
            Err(Ignored::UnknownJob(_)) => Update::Applied,
            Err(Ignored::OtherChannel(_) | Ignored::UnexpectedOpen) => Update::Ignored,
            Err(Ignored::Malformed(what)) => Update::Malformed(what),
        };
        match self.refresh() {
            Some(what) => Update::Malformed(what),
            None => update,
        }
    }

    /// Follows the channel's work after a change: a new job (or tip) starts a new search, a new
    /// target for the same job keeps the search position. Returns what was wrong with a job
    /// that cannot be searched.
    fn refresh(&mut self) -> Option<&'static str> {
        if !self.miner.take_changed() {
            return None;
        }
        let Some(w) = self.miner.work() else {
            self.active = None;
            return None;
        };
        if let Some(a) = self
            .active
            .as_mut()
            .filter(|a| (a.tip_epoch, a.job_id) == (w.tip_epoch, w.job_id))
        {
            a.target = le_target(w.target);
            return None;
        }
        self.activate(w)
    }

    fn activate(&mut self, w: ChannelWork) -> Option<&'static str> {
        let extranonce = match (&w.mode, &w.merkle) {
            (ChannelMode::Extended, JobMerkle::Coinbase { rollable, .. }) => {
                Some(self.rollable_extranonce(*rollable))
            }
            _ => None,
        };
        let Some(merkle_root) = merkle_root(&w.merkle, extranonce.as_deref()) else {
            self.active = None;
            return Some("coinbase does not parse");
        };
        self.active = Some(Active {
            tip_epoch: w.tip_epoch,
            job_id: w.job_id,
            version: w.version,
            ntime: w.min_ntime,
            prev_hash: w.prev_hash,
            nbits: w.nbits,
            network_target: share_math::nbits_to_target(w.nbits),
            target: le_target(w.target),
            merkle: w.merkle,
            merkle_root,
            extranonce,
        });
        None
    }

    fn rollable_extranonce(&self, size: usize) -> Vec<u8> {
        let mut e = vec![0u8; size];
        for (b, c) in e.iter_mut().zip(self.extranonce_counter.to_le_bytes()) {
            *b = c;
        }
        e
    }

    /// After all 2^32 nonces: a new extranonce (extended) or ntime + 1 (standard).
    fn roll(&mut self) {
        self.nonce = 0;
        self.extranonce_counter = self.extranonce_counter.wrapping_add(1);
        let size = self
            .active
            .as_ref()
            .and_then(|a| a.extranonce.as_ref())
            .map_or(0, Vec::len);
        let extranonce = self.rollable_extranonce(size);
        let Some(active) = self.active.as_mut() else {
            return;
        };
        match &mut active.extranonce {
            Some(e) if !e.is_empty() => {
                if let Some(root) = merkle_root(&active.merkle, Some(&extranonce)) {
                    active.merkle_root = root;
                    *e = extranonce;
                }
            }
            _ => active.ntime = active.ntime.wrapping_add(1),
        }
    }

    /// The next share: tries up to `max_hashes` nonces (at least one) and returns the first
    /// whose hash meets the channel target (and, while avoidable, not the network target); if
    /// none does, the last one tried with `meets_target: false`. `None` without work.
    pub(crate) fn next_share(&mut self, max_hashes: u32) -> Option<Found> {
        self.active.as_ref()?;
        let channel_id = self.id();
        let mut last = None;
        for hashes in 1..=max_hashes.max(1) {
            if self.nonce > u64::from(u32::MAX) {
                self.roll();
            }
            let nonce = self.nonce as u32;
            self.nonce += 1;
            let active = self.active.as_ref()?;
            let header = share_math::header_bytes(
                active.version,
                &active.prev_hash,
                &active.merkle_root,
                active.ntime,
                active.nbits,
                nonce,
            );
            let hash = share_math::header_hash(&header);
            let meets_target = share_math::hash_meets_target(&hash, &active.target);
            let is_block = share_math::hash_meets_target(&hash, &active.network_target);
            let can_avoid = self.avoid_blocks && active.target > active.network_target;
            let found = Found {
                share: Share {
                    channel_id,
                    job_id: active.job_id,
                    nonce,
                    ntime: active.ntime,
                    version: active.version,
                    extranonce: active.extranonce.clone(),
                },
                hashes,
                meets_target,
                is_block,
            };
            if meets_target && !(is_block && can_avoid) {
                return Some(found);
            }
            last = Some(Found {
                meets_target: false,
                ..found
            });
        }
        last
    }
}

/// The header merkle root of `merkle` with the rollable `extranonce` (extended channels).
fn merkle_root(merkle: &JobMerkle, extranonce: Option<&[u8]>) -> Option<[u8; 32]> {
    match merkle {
        JobMerkle::Fixed(r) => Some(*r),
        JobMerkle::Coinbase {
            prefix,
            suffix,
            path,
            ..
        } => share_math::merkle_root(prefix, extranonce.unwrap_or_default(), suffix, path),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use tower_stratum_core::stratum_core::binary_sv2::{
        B032Owned, B064KOwned, Seq0255Owned, Sv2OptionOwned, U256Owned,
    };
    use tower_stratum_core::stratum_core::mining_sv2::{
        NewExtendedMiningJobOwned, NewMiningJobOwned, OpenExtendedMiningChannelSuccessOwned,
        OpenStandardMiningChannelSuccessOwned, SetNewPrevHashOwned, SetTargetOwned,
    };

    const REGTEST_NBITS: u32 = 0x207f_ffff;

    fn opened(kind: ChannelKind) -> (Channel, u32) {
        let mut ch = Channel::new(
            &OpenRequest {
                kind,
                user_identity: "load.0".into(),
                nominal_hash_rate: 1.0,
                min_extranonce_size: 8,
            },
            true,
        )
        .unwrap();
        let request_id = match ch.open(0) {
            Sv2Message::Mining(MiningOwned::OpenStandardMiningChannel(m)) => m.request_id,
            Sv2Message::Mining(MiningOwned::OpenExtendedMiningChannel(m)) => m.request_id,
            other => panic!("not an open: {other}"),
        };
        (ch, request_id)
    }

    fn standard_channel(target: [u8; 32]) -> Channel {
        let (mut ch, request_id) = opened(ChannelKind::Standard);
        let success =
            MiningOwned::OpenStandardMiningChannelSuccess(OpenStandardMiningChannelSuccessOwned {
                request_id,
                channel_id: 7,
                target: U256Owned::from(target),
                extranonce_prefix: B032Owned::try_from(vec![1, 2, 3, 4]).unwrap(),
                group_channel_id: 1,
            });
        assert_eq!(ch.on_message(&success), Update::Applied);
        ch
    }

    fn prev_hash(channel_id: u32, job_id: u32) -> MiningOwned {
        MiningOwned::SetNewPrevHash(SetNewPrevHashOwned {
            channel_id,
            job_id,
            prev_hash: U256Owned::from([0x11; 32]),
            min_ntime: 1_700_000_000,
            nbits: REGTEST_NBITS,
        })
    }

    fn header_hash_of(ch: &Channel, f: &Found, root: [u8; 32]) -> [u8; 32] {
        let active = ch.active.as_ref().unwrap();
        share_math::header_hash(&share_math::header_bytes(
            f.share.version,
            &active.prev_hash,
            &root,
            f.share.ntime,
            active.nbits,
            f.share.nonce,
        ))
    }

    #[test]
    fn standard_shares_meet_the_channel_target_but_are_not_blocks() {
        let mut ch = standard_channel([0xff; 32]);
        assert_eq!(ch.next_share(16), None, "no work before a job and a tip");
        let job = MiningOwned::NewMiningJob(NewMiningJobOwned {
            channel_id: 7,
            job_id: 3,
            min_ntime: Sv2OptionOwned::new(None),
            version: 0x2000_0000,
            merkle_root: U256Owned::from([0x22; 32]),
        });
        assert_eq!(ch.on_message(&job), Update::Applied);
        assert!(!ch.has_work(), "a future job waits for its SetNewPrevHash");
        assert_eq!(ch.on_message(&prev_hash(1, 3)), Update::Applied); // via the group channel
        assert!(ch.has_work());
        let network = share_math::nbits_to_target(REGTEST_NBITS);
        let mut nonces = std::collections::HashSet::new();
        let mut hashes = 0u64;
        for _ in 0..200 {
            let f = ch.next_share(64).unwrap();
            assert!(f.meets_target && !f.is_block);
            assert_eq!((f.share.job_id, f.share.ntime), (3, 1_700_000_000));
            let h = header_hash_of(&ch, &f, [0x22; 32]);
            assert!(!share_math::hash_meets_target(&h, &network));
            assert!(nonces.insert(f.share.nonce), "nonce repeated");
            hashes += u64::from(f.hashes);
        }
        // about two hashes per share (half of all hashes are regtest blocks)
        assert!(
            (250..=600).contains(&hashes),
            "{hashes} hashes for 200 shares"
        );
    }

    #[test]
    fn a_hard_target_makes_every_share_a_block_and_an_exhausted_search_says_so() {
        let mut ch = standard_channel([0xff; 32]);
        ch.on_message(&MiningOwned::NewMiningJob(NewMiningJobOwned {
            channel_id: 7,
            job_id: 1,
            min_ntime: Sv2OptionOwned::new(None),
            version: 0x2000_0000,
            merkle_root: U256Owned::from([0x22; 32]),
        }));
        ch.on_message(&prev_hash(7, 1));
        // SetTarget to 2^252: harder than regtest's network target, so shares are blocks
        let mut t = [0u8; 32];
        t[31] = 0x0f;
        t[..31].fill(0xff);
        ch.on_message(&MiningOwned::SetTarget(SetTargetOwned {
            channel_id: 7,
            maximum_target: U256Owned::from(t),
        }));
        let f = ch.next_share(10_000).unwrap();
        assert!(f.meets_target && f.is_block);
        // target 0: nothing meets it, the search gives up after its budget
        ch.on_message(&MiningOwned::SetTarget(SetTargetOwned {
            channel_id: 7,
            maximum_target: U256Owned::from([0u8; 32]),
        }));
        let f = ch.next_share(5).unwrap();
        assert_eq!((f.meets_target, f.hashes), (false, 5));
    }

    #[test]
    fn jobs_for_other_channels_are_ignored_and_close_is_reported() {
        let mut ch = standard_channel([0xff; 32]);
        assert_eq!(ch.on_message(&prev_hash(99, 1)), Update::Ignored);
        let close = MiningOwned::CloseChannel(
            tower_stratum_core::stratum_core::mining_sv2::CloseChannelOwned {
                channel_id: 7,
                reason_code: tower_stratum_core::session::str0255("bye").unwrap(),
            },
        );
        assert_eq!(ch.on_message(&close), Update::Closed("bye".into()));
    }

    /// A minimal coinbase (one null-outpoint input, one output) split around 12 extranonce
    /// bytes in its scriptSig.
    fn coinbase_parts() -> (Vec<u8>, Vec<u8>) {
        let mut prefix = vec![2, 0, 0, 0, 1];
        prefix.extend_from_slice(&[0u8; 32]);
        prefix.extend_from_slice(&[0xff; 4]);
        prefix.push(16); // scriptSig: 4 bytes + 12 extranonce bytes
        prefix.extend_from_slice(&[0x03, 0x01, 0x00, 0x00]);
        let mut suffix = vec![0xff; 4]; // sequence
        suffix.push(1); // one output
        suffix.extend_from_slice(&50_0000_0000u64.to_le_bytes());
        suffix.extend_from_slice(&[1, 0x51]);
        suffix.extend_from_slice(&[0, 0, 0, 0]); // lock time
        (prefix, suffix)
    }

    #[test]
    fn extended_shares_use_the_coinbase_with_our_extranonce() {
        let (mut ch, request_id) = opened(ChannelKind::Extended);
        let success =
            MiningOwned::OpenExtendedMiningChannelSuccess(OpenExtendedMiningChannelSuccessOwned {
                request_id,
                channel_id: 9,
                target: U256Owned::from([0xff; 32]),
                extranonce_size: 8,
                extranonce_prefix: B032Owned::try_from(vec![0xaa, 0xbb, 0xcc, 0xdd]).unwrap(),
                group_channel_id: 1,
            });
        assert_eq!(ch.on_message(&success), Update::Applied);
        let (prefix, suffix) = coinbase_parts();
        let path = vec![[0x33u8; 32]];
        let job = MiningOwned::NewExtendedMiningJob(NewExtendedMiningJobOwned {
            channel_id: 9,
            job_id: 5,
            min_ntime: Sv2OptionOwned::new(None),
            version: 0x2000_0000,
            version_rolling_allowed: true,
            merkle_path: Seq0255Owned::new(path.iter().map(|n| U256Owned::from(*n)).collect())
                .unwrap(),
            coinbase_tx_prefix: B064KOwned::try_from(prefix.clone()).unwrap(),
            coinbase_tx_suffix: B064KOwned::try_from(suffix.clone()).unwrap(),
        });
        assert_eq!(ch.on_message(&job), Update::Applied);
        assert_eq!(ch.on_message(&prev_hash(9, 5)), Update::Applied);
        let f = ch.next_share(64).unwrap();
        let extranonce = f.share.extranonce.clone().unwrap();
        assert_eq!(extranonce, vec![0u8; 8]);
        let mut full = vec![0xaa, 0xbb, 0xcc, 0xdd];
        full.extend_from_slice(&extranonce);
        let root = share_math::merkle_root(&prefix, &full, &suffix, &path).unwrap();
        let h = header_hash_of(&ch, &f, root);
        assert!(f.meets_target && !f.is_block);
        assert!(!share_math::hash_meets_target(
            &h,
            &share_math::nbits_to_target(REGTEST_NBITS)
        ));
        // rolling past the last nonce moves the extranonce, and shares stay valid
        ch.nonce = u64::from(u32::MAX) + 1;
        let f2 = ch.next_share(64).unwrap();
        assert_eq!(f2.share.extranonce.unwrap()[0], 1);
        assert!(f2.meets_target);
    }
}
