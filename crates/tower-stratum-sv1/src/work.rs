//! Sv1 share math: from a `mining.notify`, the connection's extranonce1 and a `mining.submit`
//! to the coinbase, merkle root, 80-byte header, its hash and the share's difficulty.
//!
//! # Conventions
//!
//! - **Hashes** (`[u8; 32]`) are in internal byte order: what `sha256d` outputs and the header
//!   stores. Block explorers display them reversed ([`display_hex`]).
//! - **prevhash** on the Sv1 wire is word-swapped: the header-order bytes with each 4-byte word
//!   byte-reversed ([`PrevHash`]).
//! - **Merkle branch** nodes are sent in internal order and used as-is.
//! - `version`, `nbits`, `ntime`, `nonce`, `version_bits` are `u32`s written as 8 big-endian hex
//!   digits on the wire and stored little-endian in the header.
//! - **Target** is a 256-bit number; a hash meets it when the hash, read as a little-endian
//!   number, is `<=` it. **Difficulty** is `DIFF1_TARGET / target` with
//!   [`DIFF1_TARGET`] = `0x00000000ffff0000…` (`0xffff << 208`); `mining.set_difficulty`
//!   carries difficulty, `mining.suggest_target` a target.
//!
//! Difficulty/target conversions, `nBits` and header hashing are the functions the Sv2 mining
//! server uses (`tower_stratum_core::share_math`), re-exported here so both protocols share
//! one implementation.

use crate::client_to_server::Submit;
use crate::hex::{self, Hex};
use crate::server_to_client::Notify;
use crate::Target;
use serde::{Serialize, Serializer};
use std::fmt;
pub use tower_stratum_core::share_math::{
    difficulty_to_target, hash_difficulty, hash_meets_target, header_bytes, header_hash,
    nbits_to_target, target_to_difficulty, DIFF1_TARGET,
};
use tower_stratum_core::stratum_core::bitcoin::hashes::{sha256d, Hash, HashEngine};

/// The BIP320 general-purpose version bits (`0x1fffe000`): the bits miners may roll. SRI's
/// sv1_api uses the wider BIP323 mask `0x1fffffe0`.
pub const BIP320_VERSION_ROLLING_MASK: u32 = 0x1fff_e000;

/// A previous-block hash, stored in header (internal) byte order.
///
/// Sv1 writes it word-swapped ("Stratum order"): the 32 header bytes with each 4-byte word
/// byte-reversed; equivalently the display hash with the order of its 4-byte words reversed.
/// Serializes (and `Display`s) as that Stratum hex; `Debug` shows the display hash.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PrevHash([u8; 32]);

fn swap_words(b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (o, i) in out.chunks_exact_mut(4).zip(b.chunks_exact(4)) {
        o.copy_from_slice(&[i[3], i[2], i[1], i[0]]);
    }
    out
}

impl PrevHash {
    /// From the 32 bytes the header stores (e.g. an Sv2 `SetNewPrevHash.prev_hash`).
    pub fn from_header_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes the header stores.
    pub fn to_header_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// From the word-swapped Stratum hex (64 digits, either case); `None` otherwise.
    pub fn from_stratum_hex(s: &str) -> Option<Self> {
        hex::decode_32(s).map(|b| Self(swap_words(&b)))
    }

    /// The word-swapped Stratum hex (64 lower-case digits).
    pub fn to_stratum_hex(&self) -> String {
        hex::encode(&swap_words(&self.0))
    }

    /// From the display (block explorer) hex; `None` unless 64 hex digits.
    pub fn from_display_hex(s: &str) -> Option<Self> {
        let mut b = hex::decode_32(s)?;
        b.reverse();
        Some(Self(b))
    }

    /// The display (block explorer) hex.
    pub fn to_display_hex(&self) -> String {
        display_hex(&self.0)
    }
}

impl fmt::Display for PrevHash {
    /// The Stratum (word-swapped) hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Hex(&swap_words(&self.0)).fmt(f)
    }
}

impl fmt::Debug for PrevHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrevHash({})", self.to_display_hex())
    }
}

impl Serialize for PrevHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Hex(&swap_words(&self.0)).serialize(s)
    }
}

/// A hash (internal byte order) as display hex: byte-reversed, as block explorers show it.
pub fn display_hex(hash: &[u8; 32]) -> String {
    let mut b = *hash;
    b.reverse();
    hex::encode(&b)
}

/// The coinbase transaction: `coinb1 || extranonce1 || extranonce2 || coinb2`.
pub fn coinbase(coinb1: &[u8], extranonce1: &[u8], extranonce2: &[u8], coinb2: &[u8]) -> Vec<u8> {
    let mut c =
        Vec::with_capacity(coinb1.len() + extranonce1.len() + extranonce2.len() + coinb2.len());
    c.extend_from_slice(coinb1);
    c.extend_from_slice(extranonce1);
    c.extend_from_slice(extranonce2);
    c.extend_from_slice(coinb2);
    c
}

/// The coinbase txid, `sha256d(coinb1 || extranonce1 || extranonce2 || coinb2)` in internal
/// byte order, without assembling the coinbase. Sv1 coinbases are non-witness serializations,
/// so this is the txid the merkle tree uses.
pub fn coinbase_txid(
    coinb1: &[u8],
    extranonce1: &[u8],
    extranonce2: &[u8],
    coinb2: &[u8],
) -> [u8; 32] {
    let mut e = sha256d::Hash::engine();
    e.input(coinb1);
    e.input(extranonce1);
    e.input(extranonce2);
    e.input(coinb2);
    sha256d::Hash::from_engine(e).to_byte_array()
}

/// The merkle root from the coinbase txid and the job's merkle branch (deepest first): each
/// step is `node = sha256d(node || branch[i])`. An empty branch gives the txid. Internal byte
/// order throughout.
pub fn merkle_root(coinbase_txid: [u8; 32], merkle_branch: &[[u8; 32]]) -> [u8; 32] {
    tower_stratum_core::share_math::merkle_root_from_txid(coinbase_txid, merkle_branch)
}

/// The header version of a share: `(job_version & !mask) | (version_bits & mask)` (BIP310);
/// `job_version` when the miner sent no version bits.
pub fn rolled_version(job_version: u32, version_bits: Option<u32>, mask: u32) -> u32 {
    match version_bits {
        Some(bits) => (job_version & !mask) | (bits & mask),
        None => job_version,
    }
}

/// Whether a share's `version_bits` stay inside the granted `mask` (`bits & !mask == 0`). A
/// server rejects a share that sets bits outside it.
pub fn version_bits_within_mask(version_bits: u32, mask: u32) -> bool {
    version_bits & !mask == 0
}

/// The next version a miner tries when rolling: the bits under `mask` counted up by one as a
/// single counter (carrying across gaps in the mask), the other bits unchanged. Wraps to all
/// masked bits clear after all set. (ESP-Miner's `increment_bitmask`.)
pub fn next_rolled_version(version: u32, mask: u32) -> u32 {
    let counted = (version | !mask).wrapping_add(1) & mask;
    (version & !mask) | counted
}

/// An extranonce2 of `size` bytes from a counter: little-endian, zero-padded (or truncated to
/// `size` bytes). How ESP-Miner and most miners generate it.
pub fn extranonce2_from_counter(counter: u64, size: usize) -> Vec<u8> {
    let le = counter.to_le_bytes();
    let mut v = vec![0u8; size];
    let n = size.min(le.len());
    v[..n].copy_from_slice(&le[..n]);
    v
}

/// The 80-byte block header: `version`, `prev_hash`, `merkle_root`, `ntime`, `nbits`, `nonce`
/// (integers little-endian, hashes in internal order).
pub fn block_header(
    version: u32,
    prev_hash: &PrevHash,
    merkle_root: &[u8; 32],
    ntime: u32,
    nbits: u32,
    nonce: u32,
) -> [u8; 80] {
    header_bytes(version, &prev_hash.0, merkle_root, ntime, nbits, nonce)
}

/// What a share proves: its header and hash.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ShareWork {
    /// The merkle root, internal byte order.
    pub merkle_root: [u8; 32],
    /// The 80-byte header.
    pub header: [u8; 80],
    /// `sha256d(header)`, internal byte order.
    pub hash: [u8; 32],
}

impl ShareWork {
    /// The share's difficulty: `DIFF1_TARGET / hash` (hash read as a little-endian number).
    pub fn difficulty(&self) -> f64 {
        hash_difficulty(&self.hash)
    }

    /// Whether the hash meets `target` (a share target, or the network target of
    /// [`nbits_to_target`] for a block).
    pub fn meets(&self, target: &Target) -> bool {
        hash_meets_target(&self.hash, target)
    }

    /// The hash as display (block explorer) hex.
    pub fn hash_display_hex(&self) -> String {
        display_hex(&self.hash)
    }
}

impl fmt::Debug for ShareWork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShareWork")
            .field("hash", &self.hash_display_hex())
            .field("header", &hex::encode(&self.header))
            .finish()
    }
}

/// Recomputes a submitted share: coinbase txid from `notify`'s `coinb1`/`coinb2`, the
/// connection's `extranonce1` and the submit's `extranonce2`; merkle root; header with the
/// submit's `ntime`, `nonce` and version ([`rolled_version`] under `version_mask`; pass `0`
/// when version rolling was not granted); its hash.
///
/// Checks nothing (job id, extranonce2 length, version bits outside the mask, ntime range are
/// the caller's policy); it only computes. No allocation.
pub fn evaluate_share(
    notify: &Notify,
    extranonce1: &[u8],
    submit: &Submit,
    version_mask: u32,
) -> ShareWork {
    let txid = coinbase_txid(
        &notify.coinb1,
        extranonce1,
        &submit.extranonce2,
        &notify.coinb2,
    );
    let merkle_root = merkle_root(txid, &notify.merkle_branch);
    let version = rolled_version(notify.version, submit.version_bits, version_mask);
    let header = block_header(
        version,
        &notify.prev_hash,
        &merkle_root,
        submit.ntime,
        notify.nbits,
        submit.nonce,
    );
    ShareWork {
        merkle_root,
        header,
        hash: header_hash(&header),
    }
}

/// A difficulty rounded down to an integer power of two when it is at least 1 (`3.9` -> 2,
/// `100000` -> 65536), unchanged below 1 or when not finite. Some firmware mishandles
/// fractional difficulties; SRI's translator applies the same rule (a policy, not protocol).
pub fn floor_power_of_two(difficulty: f64) -> f64 {
    if !(difficulty.is_finite() && difficulty >= 1.0) {
        return difficulty;
    }
    if difficulty >= 2f64.powi(63) {
        return 2f64.powi(63);
    }
    let n = difficulty as u64;
    (1u64 << (63 - n.leading_zeros())) as f64
}

/// A target as 64 lower-case hex digits, big-endian (as `mining.suggest_target` writes it).
pub fn target_to_hex(target: &Target) -> String {
    hex::encode(&target.to_be_bytes())
}
