//! Hashing threads: plain OS threads (never tokio tasks: hashing would starve the runtime)
//! fed the current [`Work`] through a `tokio::sync::watch` channel and returning
//! [`FoundShare`]s through a bounded `tokio::sync::mpsc` channel.
//!
//! Each thread takes a unit (one header template, 2^32 nonces) from the work's shared counter
//! and scans it in batches of [`BATCH`] nonces; between batches it checks whether the work
//! changed (new job, tip, target) and switches at once. A candidate from the engine is checked
//! again with the reference sha256d against the full target before it becomes a share.

use crate::sha256d::{meets_target, sha256d, top_word, Engine, Midstate};
use crate::stats::Stats;
use crate::work::{NextUnit, ShareKind, Work};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::debug;

/// Nonces scanned between two checks for new work: 2^16 (about 4 ms at 18 MH/s).
pub const BATCH: u32 = 1 << 16;

/// The current work, `None` while there is nothing to mine.
pub type WorkReceiver = watch::Receiver<Option<Arc<Work>>>;

/// A share found by a hashing thread: everything a SubmitShares message needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundShare {
    /// [`Work::tip_epoch`] of the work it was found on (stale check).
    pub tip_epoch: u64,
    /// Channel to submit on.
    pub channel_id: u32,
    /// Job it solves.
    pub job_id: u32,
    /// Standard or extended submit.
    pub share_kind: ShareKind,
    /// Header nonce.
    pub nonce: u32,
    /// Header ntime.
    pub ntime: u32,
    /// Full header version (rolled).
    pub version: u32,
    /// Miner-owned extranonce (extended channels; empty otherwise).
    pub extranonce: Vec<u8>,
    /// The share's sha256d, internal byte order.
    pub hash: [u8; 32],
}

/// Starts `threads` hashing threads named `hasher-<i>`. They run until `work` or `shares`
/// is closed (the sender of `work` dropped, or the receiver of `shares`).
///
/// `runtime` is used to wait for work while there is none (`Handle::block_on`, from these
/// non-runtime threads).
pub fn spawn(
    threads: usize,
    engine: Engine,
    work: &WorkReceiver,
    shares: mpsc::Sender<FoundShare>,
    stats: Arc<Stats>,
    runtime: tokio::runtime::Handle,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    (0..threads.max(1))
        .map(|i| {
            let hasher = Hasher {
                engine,
                work: work.clone(),
                shares: shares.clone(),
                stats: stats.clone(),
                runtime: runtime.clone(),
            };
            std::thread::Builder::new()
                .name(format!("hasher-{i}"))
                .spawn(move || hasher.run())
        })
        .collect()
}

struct Hasher {
    engine: Engine,
    work: WorkReceiver,
    shares: mpsc::Sender<FoundShare>,
    stats: Arc<Stats>,
    runtime: tokio::runtime::Handle,
}

/// How long a thread that found a block waits for the new tip's work before mining on.
const AFTER_BLOCK_PAUSE: Duration = Duration::from_secs(5);

/// Why a thread stops working on a work.
enum Switch {
    /// The work changed: take the new one.
    NewWork,
    /// A channel closed: the thread ends.
    Exit,
}

impl Hasher {
    fn run(mut self) {
        loop {
            let current = self.work.borrow_and_update().clone();
            let switch = match current {
                Some(w) => self.mine(&w),
                None => self.wait_for_change(),
            };
            if let Switch::Exit = switch {
                return;
            }
        }
    }

    fn wait_for_change(&mut self) -> Switch {
        match self.runtime.block_on(self.work.changed()) {
            Ok(()) => Switch::NewWork,
            Err(_) => Switch::Exit,
        }
    }

    /// Like [`Self::wait_for_change`], but after `limit` without a change the same work is
    /// taken up again (its unit counter continues, so nothing is hashed twice).
    fn wait_for_change_at_most(&mut self, limit: Duration) -> Switch {
        let work = &mut self.work;
        // The timer is created inside the runtime (`block_on`), which it needs.
        match self
            .runtime
            .block_on(async move { tokio::time::timeout(limit, work.changed()).await })
        {
            Ok(Ok(())) | Err(_) => Switch::NewWork,
            Ok(Err(_)) => Switch::Exit,
        }
    }

    fn changed(&self) -> Option<Switch> {
        match self.work.has_changed() {
            Ok(false) => None,
            Ok(true) => Some(Switch::NewWork),
            Err(_) => Some(Switch::Exit),
        }
    }

    fn mine(&mut self, work: &Work) -> Switch {
        let max_top = top_word(&work.target);
        let mut candidates = Vec::new();
        loop {
            let unit = match work.take_unit(Instant::now()) {
                NextUnit::Ready(u) => u,
                NextUnit::NotBefore(wait) => {
                    debug!(
                        ?wait,
                        "search space exhausted at the allowed ntime; waiting"
                    );
                    let until = Instant::now() + wait;
                    while Instant::now() < until {
                        if let Some(s) = self.changed() {
                            return s;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    continue;
                }
            };
            let midstate = Midstate::new(&unit.header);
            let mut start: u64 = 0;
            while start < 1 << 32 {
                if let Some(s) = self.changed() {
                    return s;
                }
                candidates.clear();
                let n = self
                    .engine
                    .scan(&midstate, start as u32, BATCH, max_top, &mut candidates);
                self.stats.hashes.fetch_add(n, Ordering::Relaxed);
                for &nonce in &candidates {
                    let mut header = unit.header;
                    header[76..80].copy_from_slice(&nonce.to_le_bytes());
                    let hash = sha256d(&header);
                    if !meets_target(&hash, &work.target) {
                        continue;
                    }
                    let share = FoundShare {
                        tip_epoch: work.tip_epoch,
                        channel_id: work.channel_id,
                        job_id: work.job_id,
                        share_kind: work.share_kind,
                        nonce,
                        ntime: unit.ntime,
                        version: unit.version,
                        extranonce: unit.extranonce.clone(),
                        hash,
                    };
                    if self.shares.blocking_send(share).is_err() {
                        return Switch::Exit;
                    }
                    // A block: the tip is about to move, so more shares on it would be stale
                    // (on regtest every other hash is a block). Wait for the new work, but not
                    // forever: if the block is refused the tip stays, and mining resumes.
                    let network = tower_stratum::mining::share_math::nbits_to_target(work.nbits)
                        .to_le_bytes();
                    if meets_target(&hash, &network) {
                        return self.wait_for_change_at_most(AFTER_BLOCK_PAUSE);
                    }
                }
                start += u64::from(BATCH);
            }
        }
    }
}
