//! One load-generator Sv1 miner's state, sans-IO: extranonce, version-rolling mask, the job in
//! force, the share target, a share finder that produces shares without real mining, and the
//! classification of the proxy's answers.
//!
//! How shares stay cheap: the miner asks for the lowest difficulty (`mining.suggest_difficulty`,
//! see [`crate::spec::Sv1Spec`]) and the proxies under test are configured with their easiest
//! share target, so nearly every hash is a share. [`Sv1Miner::next_share`] tries consecutive
//! nonces with `sha256d` until the header hash meets the share target. On regtest the network
//! target (`nBits` 0x207fffff, about 2^255) is met by about half of all hashes and such a share
//! is a block (the upstream would change the chain tip and every job would go stale), so while
//! the share target is easier than the network target the finder also skips hashes that meet
//! the network target. A share that misses the target after `max_hashes` tries is sent anyway
//! and counted as "below target": a truthful proxy rejects it, and the report shows it.
//!
//! Sv1 rules followed: `mining.set_difficulty` applies from the next `mining.notify` on (until
//! then shares must meet the harder of the old and new targets, so they are valid under either
//! reading); `mining.set_extranonce` applies from the next `mining.notify`; every
//! `mining.notify` replaces the job mined (the newest job is always mined, `clean_jobs` or not).
//! With version rolling granted, each share rolls the version bits under the granted mask by one
//! (BIP320 style counter) and sends them as `mining.submit`'s sixth param. The nonce runs
//! through all 2^32 values, then extranonce2 moves by one, so no share repeats.

use std::collections::VecDeque;
use tokio::time::Instant;
use tower_stratum_sv1::work::{
    coinbase_txid, difficulty_to_target, extranonce2_from_counter, hash_meets_target, header_bytes,
    header_hash, merkle_root, nbits_to_target, next_rolled_version, rolled_version, DIFF1_TARGET,
};
use tower_stratum_sv1::{Notify, Response, SetExtranonce, Submit, Target};

/// Longest rejection message kept in an error key, characters (keys stay few and short).
const MAX_REASON_CHARS: usize = 60;

/// The job being mined, with everything a share needs precomputed.
#[derive(Debug, Clone)]
struct Active {
    notify: Notify,
    /// The extranonce1 in force when the job arrived.
    extranonce1: Vec<u8>,
    /// The current extranonce2 (`extranonce2_size` bytes).
    extranonce2: Vec<u8>,
    merkle_root: [u8; 32],
    network_target: Target,
}

/// A share found by [`Sv1Miner::next_share`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// The `mining.submit` params.
    pub(crate) submit: Submit,
    /// Header hashes computed to find it.
    pub(crate) hashes: u32,
    /// Whether its hash meets the share target (false: the search budget ran out and the last
    /// nonce tried is sent anyway, so the proxy's rejection shows the mismatch).
    pub(crate) meets_target: bool,
    /// Whether its hash also meets the network target (a block).
    pub(crate) is_block: bool,
}

/// One Sv1 miner: see the module docs.
#[derive(Debug, Clone)]
pub(crate) struct Sv1Miner {
    username: String,
    extranonce1: Vec<u8>,
    extranonce2_size: usize,
    /// From `mining.set_extranonce`, applied with the next job.
    next_extranonce: Option<(Vec<u8>, usize)>,
    /// Granted version-rolling mask; 0 = no version rolling (no sixth submit param).
    version_mask: u32,
    /// The version bits rolled so far (only the bits under `version_mask` matter).
    rolled: u32,
    job: Option<Active>,
    /// Share target of the jobs received so far (`None` before the first job).
    target: Option<Target>,
    /// From `mining.set_difficulty`, applied with the next job.
    next_target: Option<Target>,
    /// Last difficulty the proxy set (`None`: none yet, difficulty 1 assumed).
    difficulty: Option<f64>,
    nonce: u64,
    extranonce2_counter: u64,
    avoid_blocks: bool,
}

impl Sv1Miner {
    /// A miner after `mining.subscribe`: `extranonce1` and `extranonce2_size` from its result,
    /// the granted `version_mask` from `mining.configure` (0: none), `username` for
    /// `mining.submit`. `avoid_blocks`: skip hashes that meet the network target while the
    /// share target allows it. The share target starts at difficulty 1, as Sv1 miners assume
    /// until `mining.set_difficulty`.
    pub(crate) fn new(
        username: String,
        extranonce1: Vec<u8>,
        extranonce2_size: usize,
        version_mask: u32,
        avoid_blocks: bool,
    ) -> Self {
        Self {
            username,
            extranonce1,
            extranonce2_size,
            next_extranonce: None,
            version_mask,
            rolled: 0,
            job: None,
            target: None,
            next_target: None,
            difficulty: None,
            nonce: 0,
            extranonce2_counter: 0,
            avoid_blocks,
        }
    }

    /// Whether a job is there to mine.
    pub(crate) fn has_work(&self) -> bool {
        self.job.is_some()
    }

    /// The last difficulty the proxy set with `mining.set_difficulty`.
    pub(crate) fn difficulty(&self) -> Option<f64> {
        self.difficulty
    }

    /// The target shares are searched against: the harder of the one in force and a pending
    /// one (valid under either reading of when `mining.set_difficulty` applies); difficulty 1
    /// if the proxy never set one.
    fn search_target(&self) -> Target {
        match (self.target, self.next_target) {
            (Some(t), Some(next)) => t.min(next),
            (Some(t), None) | (None, Some(t)) => t,
            (None, None) => DIFF1_TARGET,
        }
    }

    /// `mining.set_difficulty(difficulty)`. A difficulty whose target would be zero is
    /// ignored (no hash could meet it); tiny difficulties saturate at the maximum target.
    pub(crate) fn set_difficulty(&mut self, difficulty: f64) {
        if let Some(t) = difficulty_to_target(difficulty) {
            self.difficulty = Some(difficulty);
            self.next_target = Some(t);
        }
    }

    /// `mining.set_extranonce`: applied with the next job.
    pub(crate) fn set_extranonce(&mut self, s: &SetExtranonce) {
        self.next_extranonce = Some((s.extranonce1.clone(), s.extranonce2_size));
    }

    /// `mining.set_version_mask(mask)`: shares roll only the bits of the new mask from now on.
    pub(crate) fn set_version_mask(&mut self, mask: u32) {
        if self.version_mask != 0 {
            self.version_mask = mask;
        }
    }

    /// `mining.notify`: mine this job from now on (pending difficulty and extranonce apply).
    pub(crate) fn notify(&mut self, notify: Notify) {
        match self.next_target.take() {
            Some(t) => self.target = Some(t),
            None if self.target.is_none() => self.target = Some(DIFF1_TARGET),
            None => {}
        }
        if let Some((e1, size)) = self.next_extranonce.take() {
            self.extranonce1 = e1;
            self.extranonce2_size = size;
        }
        let extranonce2 = extranonce2_from_counter(self.extranonce2_counter, self.extranonce2_size);
        let merkle_root = merkle_root(
            coinbase_txid(
                &notify.coinb1,
                &self.extranonce1,
                &extranonce2,
                &notify.coinb2,
            ),
            &notify.merkle_branch,
        );
        self.job = Some(Active {
            network_target: nbits_to_target(notify.nbits),
            extranonce1: self.extranonce1.clone(),
            extranonce2,
            merkle_root,
            notify,
        });
    }

    /// After all 2^32 nonces: the next extranonce2 and its merkle root.
    fn roll_extranonce2(&mut self) {
        self.nonce = 0;
        self.extranonce2_counter = self.extranonce2_counter.wrapping_add(1);
        let Some(job) = self.job.as_mut() else {
            return;
        };
        job.extranonce2 = extranonce2_from_counter(self.extranonce2_counter, job.extranonce2.len());
        job.merkle_root = merkle_root(
            coinbase_txid(
                &job.notify.coinb1,
                &job.extranonce1,
                &job.extranonce2,
                &job.notify.coinb2,
            ),
            &job.notify.merkle_branch,
        );
    }

    /// The next share: rolls the version bits (if granted), then tries up to `max_hashes`
    /// nonces (at least one) and returns the first whose hash meets the share target (and,
    /// while avoidable, not the network target); if none does, the last one tried with
    /// `meets_target: false`. `None` without a job.
    pub(crate) fn next_share(&mut self, max_hashes: u32) -> Option<Found> {
        self.job.as_ref()?;
        let target = self.search_target();
        let version_bits = (self.version_mask != 0).then(|| {
            self.rolled = next_rolled_version(self.rolled, self.version_mask);
            self.rolled & self.version_mask
        });
        let mut last = None;
        for hashes in 1..=max_hashes.max(1) {
            if self.nonce > u64::from(u32::MAX) {
                self.roll_extranonce2();
            }
            let nonce = self.nonce as u32;
            self.nonce += 1;
            let job = self.job.as_ref()?;
            let n = &job.notify;
            let version = rolled_version(n.version, version_bits, self.version_mask);
            let header = header_bytes(
                version,
                &n.prev_hash.to_header_bytes(),
                &job.merkle_root,
                n.ntime,
                n.nbits,
                nonce,
            );
            let hash = header_hash(&header);
            let meets_target = hash_meets_target(&hash, &target);
            let is_block = hash_meets_target(&hash, &job.network_target);
            let can_avoid = self.avoid_blocks && target > job.network_target;
            if meets_target && !(is_block && can_avoid) {
                return Some(Found {
                    submit: self.submit(job, nonce, version_bits),
                    hashes,
                    meets_target: true,
                    is_block,
                });
            }
            if hashes == max_hashes.max(1) {
                last = Some(Found {
                    submit: self.submit(job, nonce, version_bits),
                    hashes,
                    meets_target: false,
                    is_block,
                });
            }
        }
        last
    }

    fn submit(&self, job: &Active, nonce: u32, version_bits: Option<u32>) -> Submit {
        Submit {
            worker_name: self.username.clone(),
            job_id: job.notify.job_id.clone(),
            extranonce2: job.extranonce2.clone(),
            ntime: job.notify.ntime,
            nonce,
            version_bits,
        }
    }
}

/// Shares submitted and not yet answered: `(request id, sent at)`, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Pending(VecDeque<(u64, Instant)>);

impl Pending {
    /// An empty set with room for `n` shares.
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self(VecDeque::with_capacity(n))
    }

    /// Records a share sent with request id `id` at `at`.
    pub(crate) fn push(&mut self, id: u64, at: Instant) {
        self.0.push_back((id, at));
    }

    /// Removes the share with request id `id` and returns when it was sent; `None` if no share
    /// with that id is pending (answers normally come in order, so the front is checked first).
    pub(crate) fn take(&mut self, id: u64) -> Option<Instant> {
        let pos = if self.0.front().is_some_and(|(i, _)| *i == id) {
            0
        } else {
            self.0.iter().position(|(i, _)| *i == id)?
        };
        self.0.remove(pos).map(|(_, at)| at)
    }

    /// Shares still unanswered.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether every share has been answered.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a proxy's answer to `mining.submit` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// `result: true`, no error.
    Accepted,
    /// Rejected, with the key it is counted under in the report's errors
    /// (`rejected: <code> <message>` or `rejected: result false, no error`).
    Rejected(String),
}

/// Classifies the answer to a `mining.submit` (every error form the lenient codec reads; the
/// message is cut to [`MAX_REASON_CHARS`] characters).
pub(crate) fn verdict(r: &Response) -> Verdict {
    match r.bool_result() {
        Ok(true) => Verdict::Accepted,
        Ok(false) => Verdict::Rejected("rejected: result false, no error".to_owned()),
        Err(e) => {
            let message: String = e.message.chars().take(MAX_REASON_CHARS).collect();
            Verdict::Rejected(format!("rejected: {} {}", e.code, message.trim()))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::time::Duration;
    use tower_stratum_sv1::work::{evaluate_share, PrevHash};
    use tower_stratum_sv1::{Id, ServerMessage, Sv1Error};

    const REGTEST_NBITS: u32 = 0x207f_ffff;

    /// 2^256 - 1 (`Target::MAX` is the mainnet difficulty-1 target).
    fn easiest() -> Target {
        Target::from_be_bytes([0xff; 32])
    }

    fn notify(job_id: &str, nbits: u32) -> Notify {
        Notify {
            job_id: job_id.into(),
            prev_hash: PrevHash::from_header_bytes([7u8; 32]),
            coinb1: vec![1, 0, 0, 0, 1, 0xaa],
            coinb2: vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0],
            merkle_branch: vec![[0x33; 32], [0x44; 32]],
            version: 0x2000_0000,
            nbits,
            ntime: 0x6500_0000,
            clean_jobs: true,
        }
    }

    fn miner(mask: u32) -> Sv1Miner {
        Sv1Miner::new("w.1".into(), vec![0xde, 0xad, 0xbe, 0xef], 4, mask, true)
    }

    #[test]
    fn shares_meet_the_easiest_target_and_are_not_blocks() {
        let mut m = miner(0x1fff_e000);
        assert!(m.next_share(8).is_none(), "no job, no share");
        m.set_difficulty(1e-12); // saturates at the maximum target
        m.notify(notify("a1", REGTEST_NBITS));
        let mut hashes = 0;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let f = m.next_share(64).unwrap();
            assert!(f.meets_target && !f.is_block);
            hashes += f.hashes;
            let s = &f.submit;
            assert_eq!((s.worker_name.as_str(), s.job_id.as_str()), ("w.1", "a1"));
            assert_eq!(s.extranonce2.len(), 4);
            let bits = s.version_bits.unwrap();
            assert_eq!(bits & !0x1fff_e000, 0, "rolled bits stay under the mask");
            assert!(seen.insert((bits, s.nonce)), "no share repeats");
            // The proxy's view: the same hash, not a block.
            let work = evaluate_share(
                &notify("a1", REGTEST_NBITS),
                &[0xde, 0xad, 0xbe, 0xef],
                s,
                0x1fff_e000,
            );
            assert!(!work.meets(&nbits_to_target(REGTEST_NBITS)));
        }
        // About two hashes per share (half of all hashes are regtest blocks).
        assert!((200..=800).contains(&hashes), "{hashes}");
    }

    #[test]
    fn without_version_rolling_no_sixth_param() {
        let mut m = miner(0);
        m.set_difficulty(1e-12);
        m.notify(notify("b", REGTEST_NBITS));
        let f = m.next_share(64).unwrap();
        assert_eq!(f.submit.version_bits, None);
        m.set_version_mask(0x1fff_e000); // never granted: still none
        assert_eq!(m.next_share(64).unwrap().submit.version_bits, None);
    }

    #[test]
    fn a_share_missing_the_target_is_sent_and_flagged() {
        let mut m = miner(0);
        // No set_difficulty: difficulty 1, about 2^32 hashes per share.
        m.notify(notify("c", REGTEST_NBITS));
        let f = m.next_share(3).unwrap();
        assert!(!f.meets_target);
        assert_eq!(f.hashes, 3);
    }

    #[test]
    fn set_difficulty_applies_with_the_next_job_and_the_harder_target_meanwhile() {
        let mut m = miner(0);
        m.set_difficulty(1e-12);
        m.notify(notify("d", REGTEST_NBITS));
        assert_eq!(m.target, Some(easiest()));
        // Harder difficulty pending: shares meet it already.
        m.set_difficulty(1e-9);
        let hard = difficulty_to_target(1e-9).unwrap();
        assert_eq!(m.search_target(), hard);
        assert_eq!(m.target, Some(easiest()));
        m.notify(notify("e", REGTEST_NBITS));
        assert_eq!(m.target, Some(hard));
        assert_eq!(m.difficulty(), Some(1e-9));
        // Easier pending: the harder (in force) one is still used until the next job.
        m.set_difficulty(1e-12);
        assert_eq!(m.search_target(), hard);
        // A difficulty whose target is zero is ignored.
        m.set_difficulty(1e300);
        assert_eq!(m.difficulty(), Some(1e-12));
    }

    #[test]
    fn set_extranonce_applies_with_the_next_job() {
        let mut m = miner(0);
        m.set_difficulty(1e-12);
        m.notify(notify("f", REGTEST_NBITS));
        m.set_extranonce(&SetExtranonce {
            extranonce1: vec![1, 2],
            extranonce2_size: 6,
        });
        assert_eq!(m.next_share(64).unwrap().submit.extranonce2.len(), 4);
        m.notify(notify("g", REGTEST_NBITS));
        let f = m.next_share(64).unwrap();
        assert_eq!(f.submit.extranonce2.len(), 6);
        let work = evaluate_share(&notify("g", REGTEST_NBITS), &[1, 2], &f.submit, 0);
        assert!(work.meets(&easiest()));
    }

    #[test]
    fn extranonce2_rolls_after_the_last_nonce() {
        let mut m = miner(0);
        m.set_difficulty(1e-12);
        m.notify(notify("h", REGTEST_NBITS));
        m.nonce = u64::from(u32::MAX) + 1;
        let f = m.next_share(64).unwrap();
        assert_eq!(f.submit.extranonce2, vec![1, 0, 0, 0]);
        let work = evaluate_share(
            &notify("h", REGTEST_NBITS),
            &[0xde, 0xad, 0xbe, 0xef],
            &f.submit,
            0,
        );
        assert!(!work.meets(&nbits_to_target(REGTEST_NBITS)));
    }

    #[test]
    fn pending_takes_by_id_in_any_order() {
        let t0 = Instant::now();
        let mut p = Pending::with_capacity(4);
        for i in 10..14 {
            p.push(i, t0 + Duration::from_millis(i));
        }
        assert_eq!(p.take(10), Some(t0 + Duration::from_millis(10)));
        assert_eq!(p.take(12), Some(t0 + Duration::from_millis(12)));
        assert_eq!(p.take(12), None, "answered once");
        assert_eq!(p.take(99), None);
        assert_eq!(p.len(), 2);
        assert_eq!(p.take(13), Some(t0 + Duration::from_millis(13)));
        assert_eq!(p.take(11), Some(t0 + Duration::from_millis(11)));
        assert!(p.is_empty());
    }

    fn response(line: &str) -> Response {
        match ServerMessage::parse_line(line.as_bytes()).unwrap() {
            ServerMessage::Response(r) => r,
            other => panic!("not a response: {other:?}"),
        }
    }

    #[test]
    fn verdicts_in_every_error_form() {
        assert_eq!(
            verdict(&response(r#"{"id":5,"result":true,"error":null}"#)),
            Verdict::Accepted
        );
        assert_eq!(
            verdict(&response(
                r#"{"id":5,"result":null,"error":[23,"Low difficulty share",null]}"#,
            )),
            Verdict::Rejected("rejected: 23 Low difficulty share".into())
        );
        assert_eq!(
            verdict(&response(r#"{"id":5,"result":false,"error":null}"#)),
            Verdict::Rejected("rejected: result false, no error".into())
        );
        assert_eq!(
            verdict(&response(
                r#"{"id":5,"result":false,"reject-reason":"Stale"}"#
            )),
            Verdict::Rejected("rejected: 20 Stale".into())
        );
        assert_eq!(
            verdict(&response(
                r#"{"id":5,"result":null,"error":{"code":21,"message":"Job not found"}}"#
            )),
            Verdict::Rejected("rejected: 21 Job not found".into())
        );
        let long = "x".repeat(500);
        let Verdict::Rejected(k) = verdict(&Response::error(
            Id::from(5u64),
            Sv1Error::new(20, long.as_str()),
        )) else {
            panic!()
        };
        assert_eq!(k.len(), "rejected: 20 ".len() + MAX_REASON_CHARS);
    }
}
