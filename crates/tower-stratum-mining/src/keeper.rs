//! Found blocks are never lost: the synchronous [`BlockKeeper`] hook, the [`BlockEvent`]s it
//! receives, and the table of blocks the template source has not confirmed yet, which the
//! server resubmits until they are confirmed, stale, or out of attempts.
//!
//! # Order
//! When a share solves a block, [`MiningServer`](crate::MiningServer) calls the keeper with
//! [`BlockEvent::Found`] **inside the handler, before** it answers the share and before its
//! `SubmitSolution` (spec 7.7) goes to the template source: the actions a handler returns are
//! executed only after it returns, so a keeper that writes the block durably (see
//! [`BlockStore`](crate::BlockStore)) has it on disk before anything else happens. A keeper that
//! fails (full disk) must not stop the server: it logs and returns; the block is still
//! submitted.
//!
//! # Confirmation (spec 7.3, 7.7)
//! Template Distribution does not answer `SubmitSolution`. A block counts as
//! - **confirmed** when the template source sends a `SetNewPrevHash` whose `prev_hash` is the
//!   block hash (its tip became the block);
//! - **stale** when the source's new tip is at or past the block's height with another hash
//!   (the tip height is the BIP34 height of the template the `SetNewPrevHash` activates, minus
//!   one);
//! - **abandoned** after [`max_submit_attempts`](crate::MiningServerConfig::max_submit_attempts)
//!   attempts without either (e.g. a template provider restarted since, which no longer knows
//!   the template id): the block stays on disk for a hand submission.
//!
//! Until then it is resubmitted on the server's timer (first after
//! [`resubmit_interval`](crate::MiningServerConfig::resubmit_interval), doubling up to
//! [`MAX_RESUBMIT_INTERVAL`]) and at once when the source announces a tip below the block's
//! height that is not the block: that is what a template source that (re)connected or
//! restarted sends first.

use crate::block::FoundBlock;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tower_stratum_core::stratum_core::bitcoin::hashes::Hash;
use tower_stratum_core::stratum_core::bitcoin::BlockHash;
use tower_stratum_core::stratum_core::template_distribution_sv2::SubmitSolutionOwned;
use tracing::{error, info, warn};

/// Longest wait between two resubmissions of an unconfirmed block.
pub const MAX_RESUBMIT_INTERVAL: Duration = Duration::from_secs(300);

/// Why a `SubmitSolution` was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubmitTrigger {
    /// The share that solved the block (attempt 1).
    Found,
    /// A resubmission on the server's timer: no confirmation since the last attempt.
    Retry,
    /// The template source announced a tip below the block's height that is not the block:
    /// it does not have it (it reconnected, restarted, or lost the first `SubmitSolution`).
    TipWithoutBlock,
}

impl SubmitTrigger {
    /// A short name for logs and records: `found`, `retry`, `tip-without-block`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Found => "found",
            Self::Retry => "retry",
            Self::TipWithoutBlock => "tip-without-block",
        }
    }
}

/// What the server tells its [`BlockKeeper`], synchronously, in this order for one block:
/// `Found`, `Submitted` (attempt 1), possibly `Completed`, more `Submitted`, then at most one
/// of `Confirmed`, `Stale`, `Abandoned`.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum BlockEvent<'a> {
    /// A share solved a block. Called before the share is answered and before the first
    /// `SubmitSolution` goes out. [`FoundBlock::block`] is `None` when the template has
    /// transactions not known yet ([`Completed`](Self::Completed) follows if they arrive).
    Found(&'a FoundBlock),
    /// The template's transactions arrived (`RequestTransactionData.Success`) and matched:
    /// [`FoundBlock::block`] is now the whole block.
    Completed(&'a FoundBlock),
    /// A `SubmitSolution` for the block goes to the template source with this call's actions.
    /// The source does not answer it; `Confirmed` or `Stale` follow from its `SetNewPrevHash`.
    Submitted {
        /// The block.
        hash: BlockHash,
        /// 1 for the first submission.
        attempt: u32,
        /// Why it was sent.
        trigger: SubmitTrigger,
    },
    /// The template source's tip is the block (`SetNewPrevHash.prev_hash` = its hash).
    Confirmed {
        /// The block.
        hash: BlockHash,
        /// Submissions sent.
        attempts: u32,
    },
    /// The template source's tip reached the block's height with another hash. At the
    /// block's height that means another block won (or the source never accepted ours); past
    /// it, the block may still be an ancestor of that tip if the source accepted it while this
    /// server was not connected: check the node.
    Stale {
        /// The block.
        hash: BlockHash,
        /// The source's tip height.
        tip_height: u64,
        /// The source's tip.
        tip_hash: BlockHash,
        /// Submissions sent.
        attempts: u32,
    },
    /// No confirmation after the last allowed attempt, or pushed out of the bounded table by
    /// newer blocks: no more submissions. The kept block can be submitted by hand.
    Abandoned {
        /// The block.
        hash: BlockHash,
        /// Submissions sent.
        attempts: u32,
    },
}

/// Receives every [`BlockEvent`] synchronously inside the mining server's handler (see the
/// module docs for the order). Implemented for closures `FnMut(&BlockEvent<'_>)`.
///
/// It runs on the server's task: it may block briefly (a few `fsync`s), but must never panic
/// and never wait on the network. Failures are the keeper's to log; the server carries on.
pub trait BlockKeeper: Send + 'static {
    /// Called with each event.
    fn on_block_event(&mut self, event: &BlockEvent<'_>);
}

impl<F: FnMut(&BlockEvent<'_>) + Send + 'static> BlockKeeper for F {
    fn on_block_event(&mut self, event: &BlockEvent<'_>) {
        self(event)
    }
}

/// A block waiting for confirmation.
#[derive(Debug)]
struct Unconfirmed {
    hash: BlockHash,
    height: Option<u64>,
    solution: SubmitSolutionOwned,
    attempts: u32,
    /// When the next tick resubmits it (`None` until a tick gave the server a time).
    next_attempt: Option<Instant>,
}

/// What to do with one block after an update.
#[derive(Debug)]
pub(crate) enum Resolution {
    Resubmit(SubmitSolutionOwned, SubmitTrigger),
    Done,
}

/// The bounded table of unconfirmed blocks (oldest first).
#[derive(Debug)]
pub(crate) struct UnconfirmedBlocks {
    blocks: VecDeque<Unconfirmed>,
    max_blocks: usize,
    max_attempts: u32,
    interval: Duration,
}

impl UnconfirmedBlocks {
    pub(crate) fn new(max_blocks: usize, max_attempts: u32, interval: Duration) -> Self {
        Self {
            blocks: VecDeque::new(),
            max_blocks,
            max_attempts: max_attempts.max(1),
            interval,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.blocks.len()
    }

    fn delay(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(16);
        self.interval
            .saturating_mul(1u32 << doublings)
            .min(MAX_RESUBMIT_INTERVAL)
    }

    /// Adds a block just submitted once (attempt 1). Returns the blocks pushed out of the
    /// table (abandoned), with their attempt counts.
    pub(crate) fn insert(
        &mut self,
        hash: BlockHash,
        height: Option<u64>,
        solution: SubmitSolutionOwned,
        now: Option<Instant>,
    ) -> Vec<(BlockHash, u32)> {
        let mut out = Vec::new();
        if self.max_blocks == 0 {
            return out;
        }
        while self.blocks.len() >= self.max_blocks {
            if let Some(b) = self.blocks.pop_front() {
                out.push((b.hash, b.attempts));
            }
        }
        let next_attempt = now.map(|t| t + self.delay(1));
        self.blocks.push_back(Unconfirmed {
            hash,
            height,
            solution,
            attempts: 1,
            next_attempt,
        });
        out
    }

    /// Ticks at `now`: the blocks due for a resubmission (attempt count incremented) and the
    /// blocks out of attempts (removed), as `(hash, attempts, resolution)`.
    pub(crate) fn on_tick(&mut self, now: Instant) -> Vec<(BlockHash, u32, Resolution)> {
        let mut out = Vec::new();
        let max = self.max_attempts;
        let mut keep = VecDeque::with_capacity(self.blocks.len());
        while let Some(mut b) = self.blocks.pop_front() {
            let due = match b.next_attempt {
                None => {
                    b.next_attempt = Some(now + self.delay(b.attempts));
                    false
                }
                Some(t) => now >= t,
            };
            if !due {
                keep.push_back(b);
                continue;
            }
            if b.attempts >= max {
                out.push((b.hash, b.attempts, Resolution::Done));
                continue;
            }
            b.attempts += 1;
            b.next_attempt = Some(now + self.delay(b.attempts));
            out.push((
                b.hash,
                b.attempts,
                Resolution::Resubmit(b.solution.clone(), SubmitTrigger::Retry),
            ));
            keep.push_back(b);
        }
        self.blocks = keep;
        out
    }

    /// The template source's new tip: `prev_hash` (internal byte order) at `tip_height` (if
    /// known). Returns per block: confirmed / stale (removed, as [`BlockEvent`]s to report) or
    /// a resubmission now (the tip is below the block and is not it).
    pub(crate) fn on_tip(
        &mut self,
        prev_hash: [u8; 32],
        tip_height: Option<u64>,
        now: Option<Instant>,
    ) -> Vec<TipOutcome> {
        let tip_hash = BlockHash::from_byte_array(prev_hash);
        let mut out = Vec::new();
        let mut keep = VecDeque::with_capacity(self.blocks.len());
        let max = self.max_attempts;
        while let Some(mut b) = self.blocks.pop_front() {
            if b.hash == tip_hash {
                out.push(TipOutcome::Confirmed {
                    hash: b.hash,
                    attempts: b.attempts,
                });
                continue;
            }
            match (tip_height, b.height) {
                (Some(tip), Some(h)) if tip >= h => {
                    out.push(TipOutcome::Stale {
                        hash: b.hash,
                        tip_height: tip,
                        tip_hash,
                        attempts: b.attempts,
                    });
                    continue;
                }
                _ => {}
            }
            if b.attempts >= max {
                out.push(TipOutcome::Abandoned {
                    hash: b.hash,
                    attempts: b.attempts,
                });
                continue;
            }
            b.attempts += 1;
            b.next_attempt = now.map(|t| t + self.delay(b.attempts));
            out.push(TipOutcome::Resubmit {
                hash: b.hash,
                attempt: b.attempts,
                solution: b.solution.clone(),
            });
            keep.push_back(b);
        }
        self.blocks = keep;
        out
    }
}

/// What a new tip means for one unconfirmed block.
#[derive(Debug)]
pub(crate) enum TipOutcome {
    Confirmed {
        hash: BlockHash,
        attempts: u32,
    },
    Stale {
        hash: BlockHash,
        tip_height: u64,
        tip_hash: BlockHash,
        attempts: u32,
    },
    Abandoned {
        hash: BlockHash,
        attempts: u32,
    },
    Resubmit {
        hash: BlockHash,
        attempt: u32,
        solution: SubmitSolutionOwned,
    },
}

/// Logs an event the way the server reports it (the keeper gets it too).
pub(crate) fn log_event(event: &BlockEvent<'_>) {
    match event {
        BlockEvent::Found(_) | BlockEvent::Completed(_) => {}
        BlockEvent::Submitted {
            hash,
            attempt,
            trigger,
        } => {
            if *attempt > 1 {
                info!(%hash, attempt, trigger = trigger.as_str(), "resubmitting an unconfirmed block (SubmitSolution)");
            }
        }
        BlockEvent::Confirmed { hash, attempts } => {
            info!(%hash, attempts, "block confirmed: the template source's tip is now this block")
        }
        BlockEvent::Stale {
            hash,
            tip_height,
            tip_hash,
            attempts,
        } => warn!(
            %hash, tip_height, %tip_hash, attempts,
            "block stale: the template source's tip reached its height with another block \
             (if the tip is past its height, the source may have taken it while we were not \
             connected: check the node)"
        ),
        BlockEvent::Abandoned { hash, attempts } => error!(
            %hash, attempts,
            "block NOT confirmed by the template source after {attempts} submissions; no more \
             retries. It is kept on disk: submit it by hand (`solo-mining-server blocks submit`, \
             or bitcoin-cli submitblock with the .block file's hex)"
        ),
    }
}
