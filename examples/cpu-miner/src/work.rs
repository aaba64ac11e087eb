//! What the hashing threads mine on: a [`Work`] (one job on one chain tip, with the channel's
//! target) split into *units* of 2^32 nonces, each with its own header template.
//!
//! Byte orders follow Sv2 (spec 5.3): `prev_hash`, `merkle_root`, merkle path nodes and
//! targets are `U256` values whose bytes are in Bitcoin's internal order (the order they take
//! in the header; a target is a little-endian 256-bit number). `version`, `ntime`, `nbits` and
//! `nonce` are `u32` values, serialised little-endian in the header.
//!
//! The search space of a work is walked as a counter: unit `u` selects a BIP320 version
//! ([`version_for`]), then an extranonce (extended jobs: the miner-owned bytes after
//! `extranonce_prefix`, see [`extranonce_for`]), then an ntime offset. The offset only grows
//! once every version and extranonce was used, and never beyond the seconds elapsed since the
//! message that supplied `min_ntime` (spec 5.3.11: a share's ntime is at most `min_ntime` plus
//! the seconds since that message arrived).

use crate::sha256d::sha256d;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower_stratum::stratum_core::bitcoin::consensus::deserialize;
use tower_stratum::stratum_core::bitcoin::Transaction;

/// The BIP320 general-purpose version bits a miner may roll (`0x1fffe000`, 16 bits).
pub use tower_stratum::mining::miner_channel::BIP320_VERSION_MASK;

/// Serialises an 80-byte block header (the share math of `tower-stratum-mining`, so miner and
/// server build headers with the same code): `prev_hash` and `merkle_root` in internal byte
/// order (as in Sv2 `U256` fields), the `u32` fields little-endian.
pub use tower_stratum::mining::share_math::header_bytes as build_header;

/// The txid of a coinbase assembled from an extended job (spec 5.3.16): `sha256d` of its
/// bytes. The spec requires `coinbase_tx_prefix`/`coinbase_tx_suffix` to be stripped of the
/// BIP141 fields already; if the bytes still parse as a transaction *with* witness data
/// (marker, flag, witness), the txid of its witness-stripped serialisation is returned
/// instead, which is what the upstream will compute for the block.
pub fn coinbase_txid(coinbase: &[u8]) -> [u8; 32] {
    match deserialize::<Transaction>(coinbase) {
        Ok(tx) if tx.input.iter().any(|i| !i.witness.is_empty()) => {
            *AsRef::<[u8; 32]>::as_ref(&tx.compute_txid())
        }
        _ => sha256d(coinbase),
    }
}

/// Folds a merkle path (nodes in internal byte order, deepest first, as in
/// `NewExtendedMiningJob.merkle_path`) onto a leaf: `root = sha256d(root || node)` per node
/// (`tower-stratum-mining`'s share math).
pub use tower_stratum::mining::share_math::merkle_root_from_txid as merkle_root_from_path;

/// `k`-th version of the BIP320 rolling sequence: the bits of `base` under `mask` are read as
/// a counter (`mask`'s bits, low to high), `k` is added (wrapping within the mask) and the
/// result written back; bits outside `mask` stay those of `base`. `k = 0` gives `base`.
pub fn version_for(base: u32, mask: u32, k: u64) -> u32 {
    // gather
    let mut counter: u64 = 0;
    let mut bit = 0;
    for i in 0..32 {
        if mask & (1 << i) != 0 {
            if base & (1 << i) != 0 {
                counter |= 1 << bit;
            }
            bit += 1;
        }
    }
    let width = mask.count_ones();
    let counter = if width >= 64 {
        counter.wrapping_add(k)
    } else {
        counter.wrapping_add(k) & ((1u64 << width) - 1)
    };
    // scatter
    let mut v = base & !mask;
    let mut bit = 0;
    for i in 0..32 {
        if mask & (1 << i) != 0 {
            if counter & (1 << bit) != 0 {
                v |= 1 << i;
            }
            bit += 1;
        }
    }
    v
}

/// The `k`-th miner-owned extranonce of `len` bytes: `k` little-endian, zero-padded (bytes
/// beyond 8 are always zero).
pub fn extranonce_for(k: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    for (i, b) in k.to_le_bytes().iter().take(len).enumerate() {
        v[i] = *b;
    }
    v
}

/// Where a job's merkle root comes from: the library's
/// [`JobMerkle`](tower_stratum::mining::miner_channel::JobMerkle), which Sv1 jobs fill too
/// (`prefix` = coinb1 + extranonce1, extranonce2 of `rollable` bytes, `suffix` = coinb2).
pub use tower_stratum::mining::miner_channel::JobMerkle as MerkleSource;

/// Which submit message a share of this work goes in: Sv2 `SubmitShares.Standard` /
/// `SubmitShares.Extended` (spec 5.3.11/5.3.12) or Sv1 `mining.submit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareKind {
    /// `SubmitShares.Standard` (standard channel).
    Standard,
    /// `SubmitShares.Extended` with the miner-owned extranonce (extended channel).
    Extended,
    /// Sv1 `mining.submit` (see [`crate::sv1`]): the miner-owned extranonce is extranonce2,
    /// and [`Work::job_id`] is a local number the Sv1 session maps back to the Sv1 job id.
    Sv1,
}

/// One job on one chain tip, ready to hash: immutable, shared by every hashing thread.
#[derive(Debug)]
pub struct Work {
    /// Increases with every chain-tip or connection change; a share whose `tip_epoch` is not
    /// the current work's is stale and is not submitted.
    pub tip_epoch: u64,
    /// The channel shares are submitted on (ours, also for group-channel jobs); 0 in Sv1 mode.
    pub channel_id: u32,
    /// The job being mined (Sv2 `job_id`; in Sv1 mode a local number per `mining.notify`).
    pub job_id: u32,
    /// Which submit message the shares use.
    pub share_kind: ShareKind,
    /// The job's version.
    pub version: u32,
    /// Version bits the miner may roll (0 = none). Sv2: [`BIP320_VERSION_MASK`]; Sv1: the
    /// mask granted by `mining.configure` or `mining.set_version_mask`.
    pub version_mask: u32,
    /// From SetNewPrevHash (internal byte order; Sv1's word-swapped prevhash converted).
    pub prev_hash: [u8; 32],
    /// From SetNewPrevHash (Sv1: `mining.notify`'s nbits).
    pub nbits: u32,
    /// Smallest ntime allowed (SetNewPrevHash's, or a non-future job's; Sv1: the notify's).
    pub min_ntime: u32,
    /// When the message that supplied `min_ntime` arrived (monotonic clock).
    pub min_ntime_received: Instant,
    /// The share target, little-endian (Sv2: the channel's; Sv1: from `mining.set_difficulty`).
    pub target: [u8; 32],
    /// Where the merkle root comes from.
    pub merkle: MerkleSource,
    /// Next unit to hand out; shared across republications of the same search space (a new
    /// target keeps it, so no unit is hashed twice).
    pub next_unit: Arc<AtomicU64>,
}

/// One unit: a header template whose 2^32 nonces are hashed by one thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// The header with nonce 0.
    pub header: [u8; 80],
    /// Its version (rolled).
    pub version: u32,
    /// Its ntime.
    pub ntime: u32,
    /// The miner-owned extranonce (empty for standard channels).
    pub extranonce: Vec<u8>,
}

/// Result of asking for a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextUnit {
    /// Hash this.
    Ready(Unit),
    /// The search space at the allowed ntime is exhausted; ntime may advance after this long.
    NotBefore(Duration),
}

impl Work {
    /// Number of distinct versions the work allows.
    fn versions(&self) -> u64 {
        1u64 << self.version_mask.count_ones().min(63)
    }

    /// Number of distinct miner-owned extranonces (capped at 2^40: more is never reached).
    fn extranonces(&self) -> u64 {
        match &self.merkle {
            MerkleSource::Fixed(_) => 1,
            MerkleSource::Coinbase { rollable, .. } => 1u64 << (8 * (*rollable).min(5)),
        }
    }

    /// Takes the next unit from the shared counter (each unit is handed out once) and builds
    /// its header at time `now`.
    pub fn take_unit(&self, now: Instant) -> NextUnit {
        let u = self.next_unit.fetch_add(1, Ordering::Relaxed);
        match self.unit(u, now) {
            NextUnit::NotBefore(d) => {
                // Give the unit back for later (best effort: another thread may have taken a
                // later one meanwhile; that one then waits too).
                let _ = self.next_unit.compare_exchange(
                    u.wrapping_add(1),
                    u,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                NextUnit::NotBefore(d)
            }
            other => other,
        }
    }

    /// Unit number `u` at time `now`.
    pub fn unit(&self, u: u64, now: Instant) -> NextUnit {
        let versions = self.versions();
        let extranonces = self.extranonces();
        let version = version_for(self.version, self.version_mask, u % versions);
        let rest = u / versions;
        let e = rest % extranonces;
        let ntime_offset = rest / extranonces;
        let elapsed = now.saturating_duration_since(self.min_ntime_received);
        if ntime_offset > elapsed.as_secs() {
            let wait = Duration::from_secs(ntime_offset).saturating_sub(elapsed);
            return NextUnit::NotBefore(wait);
        }
        let ntime = self
            .min_ntime
            .wrapping_add(u32::try_from(ntime_offset).unwrap_or(u32::MAX));
        let (merkle_root, extranonce) = match &self.merkle {
            MerkleSource::Fixed(root) => (*root, Vec::new()),
            MerkleSource::Coinbase {
                prefix,
                suffix,
                path,
                rollable,
            } => {
                let extranonce = extranonce_for(e, *rollable);
                let mut coinbase =
                    Vec::with_capacity(prefix.len() + extranonce.len() + suffix.len());
                coinbase.extend_from_slice(prefix);
                coinbase.extend_from_slice(&extranonce);
                coinbase.extend_from_slice(suffix);
                (
                    merkle_root_from_path(coinbase_txid(&coinbase), path),
                    extranonce,
                )
            }
        };
        NextUnit::Ready(Unit {
            header: build_header(version, &self.prev_hash, &merkle_root, ntime, self.nbits, 0),
            version,
            ntime,
            extranonce,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn version_rolling_walks_the_mask_as_a_counter() {
        assert_eq!(version_for(0x2000_0004, 0x00ff_ff00, 0), 0x2000_0004);
        assert_eq!(version_for(0x2000_0004, 0x00ff_ff00, 1), 0x2000_0104);
        assert_eq!(version_for(0x2000_0004, 0x00ff_ff00, 4), 0x2000_0404);
        // BIP320: bits 13..=28; the top bits (29..31) are never touched.
        assert_eq!(
            version_for(0x2000_0000, BIP320_VERSION_MASK, 1),
            0x2000_2000
        );
        assert_eq!(
            version_for(0x2000_0000, BIP320_VERSION_MASK, 0xffff),
            0x3fff_e000
        );
        assert_eq!(
            version_for(0x2000_0000, BIP320_VERSION_MASK, 0x1_0000),
            0x2000_0000
        );
        assert_eq!(version_for(0x2000_0000, 0, 12345), 0x2000_0000);
    }

    #[test]
    fn unit_counter_walks_versions_then_extranonces_then_ntime() {
        let now = Instant::now();
        let w = Work {
            tip_epoch: 1,
            channel_id: 1,
            job_id: 1,
            share_kind: ShareKind::Standard,
            version: 0x2000_0000,
            version_mask: 0x0000_6000, // 2 bits: 4 versions
            prev_hash: [0; 32],
            nbits: 0x1d00ffff,
            min_ntime: 1000,
            min_ntime_received: now,
            target: [0xff; 32],
            merkle: MerkleSource::Fixed([1; 32]),
            next_unit: Arc::new(AtomicU64::new(0)),
        };
        let NextUnit::Ready(u3) = w.unit(3, now) else {
            panic!()
        };
        assert_eq!((u3.version, u3.ntime), (0x2000_6000, 1000));
        // Unit 4: versions exhausted, no extranonce: ntime + 1, allowed only after 1 s.
        assert_eq!(w.unit(4, now), NextUnit::NotBefore(Duration::from_secs(1)));
        let NextUnit::Ready(u4) = w.unit(4, now + Duration::from_secs(1)) else {
            panic!()
        };
        assert_eq!((u4.version, u4.ntime), (0x2000_0000, 1001));
    }
}
