//! The Sv1 mining state, sans-IO: the connection's extranonce1 and extranonce2 size, the
//! version-rolling mask, the share difficulty and the recent jobs. Each method takes one
//! server message (and the time it arrived) and updates the state; the session
//! ([`super::session`]) publishes [`Sv1State::work`] to the hashing threads when
//! [`Sv1State::take_changed`] says the work changed, and turns found shares into
//! `mining.submit` with [`Sv1State::prepare_submit`]. Nothing here reads the clock, spawns or
//! does IO.
//!
//! Rules implemented:
//! - **Jobs** (`mining.notify`): the newest job is mined at once. `clean_jobs = true` abandons
//!   every earlier job: the work is replaced immediately and shares found on the old jobs are
//!   stale (never submitted). With `clean_jobs = false` earlier jobs stay valid: shares already
//!   found on them are still submitted.
//! - **Coinbase**: `coinb1 || extranonce1 || extranonce2 || coinb2`, extranonce2 of exactly
//!   the `extranonce2_size` bytes the server gave (any size, 0 included); merkle root from
//!   the branches; the header from the notify's version, prevhash (Sv1 word order converted
//!   to header order by [`tower_stratum::sv1::PrevHash`]), ntime and nbits.
//! - **Extranonce** (`mining.set_extranonce`): the new extranonce1 and extranonce2 size apply
//!   to jobs received after it (NiceHash's definition); each job keeps the values it was
//!   received under, and its shares are submitted with them.
//! - **Difficulty** (`mining.set_difficulty`): share target = `DIFF1_TARGET / difficulty`
//!   (difficulty 1 until the server sets one). Servers differ on whether a new difficulty
//!   applies to the current job at once or from the next `mining.notify`; a job is therefore
//!   mined at the *harder* of the target it was received under and the current one, so every
//!   submitted share meets both readings.
//! - **Version rolling** (BIP310/BIP320): the miner requests [`REQUESTED_VERSION_MASK`]; the
//!   mask it rolls is the granted mask (or `mining.set_version_mask`'s) ANDed with the
//!   requested one; 0 (refused, or no `mining.configure` answer) means no rolling, and shares
//!   then have no version-bits param. `mining.set_version_mask` applies at once.

use crate::miner::FoundShare;
use crate::work::{MerkleSource, ShareKind, Work};
use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;
use tower_stratum::sv1::work::{
    difficulty_to_target, evaluate_share, hash_meets_target, BIP320_VERSION_ROLLING_MASK,
    DIFF1_TARGET,
};
use tower_stratum::sv1::{Notify, Submit, Target};

/// The version-rolling mask requested in `mining.configure`: BIP320's 16 general-purpose bits
/// (`0x1fffe000`).
pub const REQUESTED_VERSION_MASK: u32 = BIP320_VERSION_ROLLING_MASK;

/// `version-rolling.min-bit-count` requested in `mining.configure`: the miner can work with
/// any mask (it rolls the extranonce2 and ntime too), so it asks for little.
pub const MIN_BIT_COUNT: u32 = 2;

/// Largest extranonce2 size accepted from a server, bytes. A coinbase scriptSig holds at most
/// 100 bytes, so no valid job has more; a larger size is refused rather than allocated.
pub const MAX_EXTRANONCE2_SIZE: usize = 64;

/// Jobs kept for submitting shares found on earlier (not cleaned) jobs; oldest dropped first.
const MAX_JOBS: usize = 64;

#[derive(Debug, Clone)]
struct Job {
    /// Local number, [`Work::job_id`] of its work.
    local_id: u32,
    notify: Notify,
    /// The extranonce1 and extranonce2 size in force when the job arrived.
    extranonce1: Vec<u8>,
    extranonce2_size: usize,
    /// The share target in force when the job arrived.
    target: Target,
    received: Instant,
    epoch: u64,
    next_unit: Arc<AtomicU64>,
}

/// Why a found share is not submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsubmittable {
    /// Its job was abandoned (`clean_jobs`, a new connection) or forgotten: the share is stale.
    Stale,
    /// Its version rolls bits the current mask (after `mining.set_version_mask`) no longer
    /// allows.
    VersionMaskChanged,
    /// It does not meet its job's target any more (the difficulty rose since it was found).
    BelowTarget,
    /// Recomputing it with `tower-stratum-sv1`'s share math (coinbase, merkle root, header,
    /// hash) does not give the hash the hashing thread found: a bug, never sent.
    Mismatch,
}

/// The Sv1 mining state of one connection: see the module docs.
#[derive(Debug)]
pub struct Sv1State {
    version_mask: u32,
    extranonce1: Vec<u8>,
    extranonce2_size: usize,
    difficulty: f64,
    target: Target,
    jobs: VecDeque<Job>,
    /// `local_id` of the job being mined.
    active: Option<u32>,
    epoch: u64,
    next_local_id: u32,
    changed: bool,
}

impl Default for Sv1State {
    fn default() -> Self {
        Self::new()
    }
}

impl Sv1State {
    /// A state with no connection: nothing to mine.
    pub fn new() -> Self {
        Self {
            version_mask: 0,
            extranonce1: Vec::new(),
            extranonce2_size: 0,
            difficulty: 1.0,
            target: DIFF1_TARGET,
            jobs: VecDeque::new(),
            active: None,
            epoch: 0,
            next_local_id: 1,
            changed: true,
        }
    }

    /// A new connection (or none): forget the jobs, the extranonce, the mask and the
    /// difficulty (back to 1); shares found before are stale from now on.
    pub fn connected(&mut self) {
        self.version_mask = 0;
        self.extranonce1.clear();
        self.extranonce2_size = 0;
        self.difficulty = 1.0;
        self.target = DIFF1_TARGET;
        self.abandon_jobs();
    }

    fn abandon_jobs(&mut self) {
        self.jobs.clear();
        self.active = None;
        self.epoch += 1;
        self.changed = true;
    }

    /// The `mining.configure` answer: `granted` is the granted version-rolling mask (`None`:
    /// refused, not answered or no mask). Returns the mask the miner rolls:
    /// `granted & REQUESTED_VERSION_MASK`.
    pub fn configured(&mut self, granted: Option<u32>) -> u32 {
        self.set_mask(granted.unwrap_or(0))
    }

    fn set_mask(&mut self, mask: u32) -> u32 {
        let mask = mask & REQUESTED_VERSION_MASK;
        if mask != self.version_mask {
            self.version_mask = mask;
            self.changed |= self.active.is_some();
        }
        mask
    }

    /// `mining.set_version_mask(mask)`: rolls `mask & REQUESTED_VERSION_MASK` from now on,
    /// also on the current job. Returns that mask.
    pub fn set_version_mask(&mut self, mask: u32) -> u32 {
        self.set_mask(mask)
    }

    /// The `mining.subscribe` result: the connection's extranonce1 and extranonce2 size
    /// (bytes). Returns `false` (and changes nothing) when the size is above
    /// [`MAX_EXTRANONCE2_SIZE`].
    pub fn subscribed(&mut self, extranonce1: Vec<u8>, extranonce2_size: usize) -> bool {
        if extranonce2_size > MAX_EXTRANONCE2_SIZE {
            return false;
        }
        self.extranonce1 = extranonce1;
        self.extranonce2_size = extranonce2_size;
        true
    }

    /// `mining.set_extranonce`: applies to jobs received after it. Returns `false` (and
    /// changes nothing) when the size is above [`MAX_EXTRANONCE2_SIZE`].
    pub fn set_extranonce(&mut self, extranonce1: Vec<u8>, extranonce2_size: usize) -> bool {
        self.subscribed(extranonce1, extranonce2_size)
    }

    /// `mining.set_difficulty(difficulty)`. Returns `false` (and changes nothing) when the
    /// difficulty has no target (not finite and positive, or so large the target is zero).
    pub fn set_difficulty(&mut self, difficulty: f64) -> bool {
        let Some(target) = difficulty_to_target(difficulty) else {
            return false;
        };
        self.difficulty = difficulty;
        let before = self.active_target();
        self.target = target;
        if self.active_target() != before {
            self.changed = true;
        }
        true
    }

    /// `mining.notify`, received at `now`: mined at once; `clean_jobs` abandons the others.
    /// Returns the job's local number ([`Work::job_id`]).
    pub fn notify(&mut self, notify: Notify, now: Instant) -> u32 {
        if notify.clean_jobs {
            self.abandon_jobs();
        }
        let local_id = self.next_local_id;
        self.next_local_id = self.next_local_id.wrapping_add(1).max(1);
        self.jobs.push_back(Job {
            local_id,
            notify,
            extranonce1: self.extranonce1.clone(),
            extranonce2_size: self.extranonce2_size,
            target: self.target,
            received: now,
            epoch: self.epoch,
            next_unit: Arc::new(AtomicU64::new(0)),
        });
        while self.jobs.len() > MAX_JOBS {
            self.jobs.pop_front();
        }
        self.active = Some(local_id);
        self.changed = true;
        local_id
    }

    /// Whether the work changed since the last call (then publish [`Self::work`]).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// The rolled version-rolling mask (0: none).
    pub fn version_mask(&self) -> u32 {
        self.version_mask
    }

    /// The current share difficulty (1 until `mining.set_difficulty`).
    pub fn difficulty(&self) -> f64 {
        self.difficulty
    }

    /// The extranonce1 and extranonce2 size for the next job.
    pub fn extranonce(&self) -> (&[u8], usize) {
        (&self.extranonce1, self.extranonce2_size)
    }

    /// Increases whenever the jobs are abandoned (`clean_jobs`, connection); see
    /// [`Work::tip_epoch`].
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The Sv1 job id of local job `local_id`, if it is still known.
    pub fn job_id(&self, local_id: u32) -> Option<&str> {
        self.job(local_id).map(|j| j.notify.job_id.as_str())
    }

    fn job(&self, local_id: u32) -> Option<&Job> {
        self.jobs.iter().rev().find(|j| j.local_id == local_id)
    }

    fn job_target(&self, job: &Job) -> Target {
        job.target.min(self.target)
    }

    /// The target the active job is mined at, if there is one.
    fn active_target(&self) -> Option<Target> {
        self.job(self.active?).map(|j| self.job_target(j))
    }

    /// The work to mine now, if any: the newest job with the connection's extranonce and
    /// mask, at the harder of its own and the current target.
    pub fn work(&self) -> Option<Work> {
        let job = self.job(self.active?)?;
        let n = &job.notify;
        let mut prefix = Vec::with_capacity(n.coinb1.len() + job.extranonce1.len());
        prefix.extend_from_slice(&n.coinb1);
        prefix.extend_from_slice(&job.extranonce1);
        Some(Work {
            tip_epoch: job.epoch,
            channel_id: 0,
            job_id: job.local_id,
            share_kind: ShareKind::Sv1,
            version: n.version,
            version_mask: self.version_mask,
            prev_hash: n.prev_hash.to_header_bytes(),
            nbits: n.nbits,
            min_ntime: n.ntime,
            min_ntime_received: job.received,
            target: self.job_target(job).to_le_bytes(),
            merkle: MerkleSource::Coinbase {
                prefix,
                suffix: n.coinb2.clone(),
                path: n.merkle_branch.clone(),
                rollable: job.extranonce2_size,
            },
            next_unit: job.next_unit.clone(),
        })
    }

    /// The `mining.submit` of a share found by a hashing thread, for `worker`: job id,
    /// extranonce2, ntime, nonce, and the version bits (`version & mask`, BIP310) when
    /// rolling. The share is first recomputed with `tower-stratum-sv1`'s share math
    /// ([`evaluate_share`]) from the job, its extranonce1 and the submit, and must give the
    /// same hash and meet the job's current target.
    ///
    /// # Errors
    /// [`Unsubmittable`]: say why the share is not sent.
    pub fn prepare_submit(
        &self,
        share: &FoundShare,
        worker: &str,
    ) -> Result<Submit, Unsubmittable> {
        let job = self
            .job(share.job_id)
            .filter(|j| j.epoch == self.epoch && share.tip_epoch == self.epoch)
            .ok_or(Unsubmittable::Stale)?;
        if (share.version ^ job.notify.version) & !self.version_mask != 0 {
            return Err(Unsubmittable::VersionMaskChanged);
        }
        let submit = Submit {
            worker_name: worker.to_string(),
            job_id: job.notify.job_id.clone(),
            extranonce2: share.extranonce.clone(),
            ntime: share.ntime,
            nonce: share.nonce,
            version_bits: (self.version_mask != 0).then_some(share.version & self.version_mask),
        };
        let recomputed = evaluate_share(&job.notify, &job.extranonce1, &submit, self.version_mask);
        if recomputed.hash != share.hash || submit.extranonce2.len() != job.extranonce2_size {
            return Err(Unsubmittable::Mismatch);
        }
        if !hash_meets_target(&share.hash, &self.job_target(job)) {
            return Err(Unsubmittable::BelowTarget);
        }
        Ok(submit)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::sha256d::sha256d;
    use crate::work::NextUnit;
    use tower_stratum::sv1::PrevHash;

    fn notify(job_id: &str, clean_jobs: bool) -> Notify {
        Notify {
            job_id: job_id.into(),
            prev_hash: PrevHash::from_header_bytes([7; 32]),
            coinb1: vec![1, 2, 3],
            coinb2: vec![4, 5],
            merkle_branch: vec![[9; 32], [8; 32]],
            version: 0x2000_0000,
            nbits: 0x1d00_ffff,
            ntime: 0x6000_0000,
            clean_jobs,
        }
    }

    /// Subscribed, at a difficulty whose target every hash meets.
    fn subscribed(extranonce2_size: usize) -> Sv1State {
        let mut s = Sv1State::new();
        s.connected();
        assert!(s.subscribed(vec![0xe1, 0xe2], extranonce2_size));
        assert!(s.set_difficulty(1e-12));
        s
    }

    /// The share a hashing thread would find on unit `u` of `w` with `nonce` (any hash: the
    /// target is checked separately).
    fn share(w: &Work, u: u64, nonce: u32) -> FoundShare {
        let NextUnit::Ready(unit) = w.unit(u, w.min_ntime_received) else {
            panic!("unit {u} not ready")
        };
        let mut header = unit.header;
        header[76..80].copy_from_slice(&nonce.to_le_bytes());
        FoundShare {
            tip_epoch: w.tip_epoch,
            channel_id: w.channel_id,
            job_id: w.job_id,
            share_kind: w.share_kind,
            nonce,
            ntime: unit.ntime,
            version: unit.version,
            extranonce: unit.extranonce,
            hash: sha256d(&header),
        }
    }

    #[test]
    fn notify_becomes_work_with_the_connection_extranonce() {
        let now = Instant::now();
        let mut s = subscribed(3);
        assert!(s.work().is_none());
        s.notify(notify("a", true), now);
        assert!(s.take_changed());
        let w = s.work().unwrap();
        assert_eq!(w.share_kind, ShareKind::Sv1);
        assert_eq!(
            (w.version, w.nbits, w.min_ntime),
            (0x2000_0000, 0x1d00_ffff, 0x6000_0000)
        );
        assert_eq!(w.prev_hash, [7; 32]);
        assert_eq!(w.version_mask, 0);
        assert_eq!(w.target, [0xff; 32]);
        assert_eq!(
            w.merkle,
            MerkleSource::Coinbase {
                prefix: vec![1, 2, 3, 0xe1, 0xe2],
                suffix: vec![4, 5],
                path: vec![[9; 32], [8; 32]],
                rollable: 3,
            }
        );
        assert_eq!(s.job_id(w.job_id), Some("a"));
    }

    #[test]
    fn extranonce2_of_any_size_is_respected() {
        for size in [0usize, 1, 4, 8, 12, MAX_EXTRANONCE2_SIZE] {
            let mut s = subscribed(size);
            s.notify(notify("a", true), Instant::now());
            let w = s.work().unwrap();
            // Unit 1 without version rolling: the next extranonce2 (or ntime + 1 for size 0).
            let u = if size == 0 { 0 } else { 1 };
            let found = share(&w, u, 42);
            assert_eq!(found.extranonce.len(), size);
            let submit = s.prepare_submit(&found, "w").unwrap();
            assert_eq!(submit.extranonce2.len(), size, "size {size}");
            assert_eq!(submit.version_bits, None);
        }
        let mut s = Sv1State::new();
        assert!(!s.subscribed(vec![1], MAX_EXTRANONCE2_SIZE + 1));
        assert!(!s.set_extranonce(vec![1], usize::MAX));
    }

    #[test]
    fn clean_jobs_abandons_earlier_jobs_and_their_shares() {
        let now = Instant::now();
        let mut s = subscribed(4);
        s.notify(notify("a", true), now);
        let wa = s.work().unwrap();
        let on_a = share(&wa, 0, 1);
        // Not clean: job b is mined, shares of a are still submitted.
        s.notify(notify("b", false), now);
        let wb = s.work().unwrap();
        assert_eq!(s.job_id(wb.job_id), Some("b"));
        assert_eq!(wb.tip_epoch, wa.tip_epoch);
        assert_eq!(s.prepare_submit(&on_a, "w").unwrap().job_id, "a");
        // Clean: a and b are abandoned at once.
        s.notify(notify("c", true), now);
        let wc = s.work().unwrap();
        assert!(wc.tip_epoch > wb.tip_epoch);
        assert_eq!(s.prepare_submit(&on_a, "w"), Err(Unsubmittable::Stale));
        assert_eq!(
            s.prepare_submit(&share(&wb, 0, 1), "w"),
            Err(Unsubmittable::Stale)
        );
        assert_eq!(
            s.prepare_submit(&share(&wc, 0, 1), "w").unwrap().job_id,
            "c"
        );
        // A new connection abandons everything.
        s.connected();
        assert!(s.work().is_none());
        assert_eq!(
            s.prepare_submit(&share(&wc, 0, 1), "w"),
            Err(Unsubmittable::Stale)
        );
    }

    #[test]
    fn set_extranonce_applies_from_the_next_job() {
        let now = Instant::now();
        let mut s = subscribed(4);
        s.notify(notify("a", true), now);
        assert!(s.set_extranonce(vec![0xaa; 3], 6));
        let wa = s.work().unwrap();
        let MerkleSource::Coinbase {
            prefix, rollable, ..
        } = &wa.merkle
        else {
            panic!()
        };
        assert_eq!((&prefix[3..], *rollable), (&[0xe1, 0xe2][..], 4));
        // Shares of a keep a's extranonce1 and size.
        let on_a = share(&wa, 1, 5);
        assert_eq!(s.prepare_submit(&on_a, "w").unwrap().extranonce2.len(), 4);
        s.notify(notify("b", true), now);
        let wb = s.work().unwrap();
        let MerkleSource::Coinbase {
            prefix, rollable, ..
        } = &wb.merkle
        else {
            panic!()
        };
        assert_eq!((&prefix[3..], *rollable), (&[0xaa; 3][..], 6));
        let submit = s.prepare_submit(&share(&wb, 1, 5), "w").unwrap();
        assert_eq!(submit.extranonce2, vec![1, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn difficulty_gives_the_target_and_the_harder_one_wins() {
        let now = Instant::now();
        let mut s = subscribed(4);
        assert!(s.set_difficulty(4.0));
        s.notify(notify("a", true), now);
        let t4 = difficulty_to_target(4.0).unwrap();
        assert_eq!(s.work().unwrap().target, t4.to_le_bytes());
        s.take_changed();
        // Easier: job a keeps its own (harder) target; the next job gets the easier one.
        assert!(s.set_difficulty(2.0));
        assert!(!s.take_changed());
        assert_eq!(s.work().unwrap().target, t4.to_le_bytes());
        s.notify(notify("b", false), now);
        let t2 = difficulty_to_target(2.0).unwrap();
        assert_eq!(s.work().unwrap().target, t2.to_le_bytes());
        // Harder: applies at once.
        assert!(s.set_difficulty(8.0));
        assert!(s.take_changed());
        let t8 = difficulty_to_target(8.0).unwrap();
        assert_eq!(s.work().unwrap().target, t8.to_le_bytes());
        assert!(!s.set_difficulty(f64::INFINITY));
        assert_eq!(s.difficulty(), 8.0);
    }

    #[test]
    fn a_share_below_the_current_target_is_not_sent() {
        let mut s = subscribed(4);
        assert!(s.set_difficulty(1.0));
        s.notify(notify("a", true), Instant::now());
        let w = s.work().unwrap();
        assert_eq!(w.target, DIFF1_TARGET.to_le_bytes());
        // Find a nonce whose hash does not meet difficulty 1 (almost all of them).
        let low = (0..)
            .map(|n| share(&w, 0, n))
            .find(|f| !hash_meets_target(&f.hash, &DIFF1_TARGET))
            .unwrap();
        assert_eq!(s.prepare_submit(&low, "w"), Err(Unsubmittable::BelowTarget));
    }

    #[test]
    fn version_rolling_uses_the_granted_mask_and_set_version_mask() {
        let now = Instant::now();
        let mut s = subscribed(4);
        // Granted wider than requested: only the requested bits are rolled.
        assert_eq!(s.configured(Some(0xffff_ffff)), REQUESTED_VERSION_MASK);
        assert_eq!(s.configured(Some(0x0fff_e000)), 0x0fff_e000);
        s.notify(notify("a", true), now);
        let w = s.work().unwrap();
        assert_eq!(w.version_mask, 0x0fff_e000);
        let rolled = share(&w, 1, 9);
        assert_eq!(rolled.version, 0x2000_2000);
        let submit = s.prepare_submit(&rolled, "w").unwrap();
        assert_eq!(submit.version_bits, Some(0x0000_2000));
        assert_eq!(share(&w, 0, 9).version, 0x2000_0000);
        assert_eq!(
            s.prepare_submit(&share(&w, 0, 9), "w")
                .unwrap()
                .version_bits,
            Some(0)
        );
        // A narrower mask applies at once: the rolled share is no longer valid.
        s.take_changed();
        assert_eq!(s.set_version_mask(0x0fff_0000), 0x0fff_0000);
        assert!(s.take_changed());
        assert_eq!(s.work().unwrap().version_mask, 0x0fff_0000);
        assert_eq!(
            s.prepare_submit(&rolled, "w"),
            Err(Unsubmittable::VersionMaskChanged)
        );
        let w2 = s.work().unwrap();
        assert_eq!(share(&w2, 1, 9).version, 0x2001_0000);
        // Refused: no rolling, no 6th param.
        assert_eq!(s.configured(None), 0);
        assert_eq!(
            s.prepare_submit(&share(&s.work().unwrap(), 0, 9), "w")
                .unwrap()
                .version_bits,
            None
        );
    }

    #[test]
    fn a_share_that_does_not_recompute_is_never_sent() {
        let mut s = subscribed(4);
        s.notify(notify("a", true), Instant::now());
        let w = s.work().unwrap();
        let mut bad = share(&w, 0, 1);
        bad.nonce ^= 1;
        assert_eq!(s.prepare_submit(&bad, "w"), Err(Unsubmittable::Mismatch));
    }
}
