//! The share arithmetic this crate relies on, in one place so tests can check it against
//! known-answer vectors (`tests/vectors.rs`): difficulty <-> target, `nBits` -> target, block
//! header bytes and hash, coinbase merkle root.
//!
//! # Conventions
//! - A **target** is a 256-bit number ([`Target`]); a header hash meets it when the hash, read
//!   as a little-endian number, is `<=` it (spec 5.3.21 `SetTarget`, Bitcoin's rule). On the
//!   Sv2 wire targets are `U256` in little-endian byte order (`Target::to_le_bytes`).
//! - **Difficulty** is relative to the difficulty-1 target `0xffff << 208`
//!   ([`DIFF1_TARGET`]): `difficulty = DIFF1_TARGET / target`. It is the unit of
//!   `SubmitShares.Success.new_shares_sum` (spec 5.3.13).
//! - Hashes (`[u8; 32]`) are in **internal byte order** (the order `sha256d` produces and the
//!   header stores), not the reversed display order block explorers use.
//! - `prev_hash` and `merkle_root` fields of Sv2 messages (`U256`) are in header byte order.

use crate::stratum_core::bitcoin::hashes::{sha256d, Hash, HashEngine};
use crate::stratum_core::bitcoin::{CompactTarget, Target};
use crate::stratum_core::channels_sv2::merkle_root::{
    merkle_root_from_path, merkle_root_from_path_,
};

/// The difficulty-1 target, `0x00000000ffff0000…0000` (`0xffff << 208`): Bitcoin's
/// `MAX_ATTAINABLE_MAINNET` target and the pool "diff1".
pub const DIFF1_TARGET: Target = Target::MAX_ATTAINABLE_MAINNET;

/// Expected number of header hashes per share of difficulty 1: `2^256 / (0xffff << 208)` =
/// `2^48 / 65535` ≈ 4 295 032 833. Multiply by a share's difficulty to get the work it proves,
/// in hashes.
pub const HASHES_PER_DIFFICULTY_1: f64 = 281_474_976_710_656.0 / 65_535.0;

/// The share difficulty of `target`: `DIFF1_TARGET / target` (a float; `INFINITY` for a zero
/// target). Same as SRI's `Target::difficulty_float`, which `channels_sv2` uses for
/// `new_shares_sum`.
pub fn target_to_difficulty(target: &Target) -> f64 {
    target.difficulty_float()
}

/// The target of a share difficulty: `floor(DIFF1_TARGET / difficulty)`, in exact integer
/// arithmetic on the `f64`'s shortest decimal representation (what `{}` prints), so a
/// configured `0.001` means exactly 1/1000; saturated to the maximum target `2^256 - 1` for
/// tiny difficulties.
///
/// Returns `None` when `difficulty` is not finite and positive, or so large that the target
/// would be zero (no hash could meet it).
pub fn difficulty_to_target(difficulty: f64) -> Option<Target> {
    if !(difficulty.is_finite() && difficulty > 0.0) {
        return None;
    }
    // Shortest round-trip decimal: "d.ddddde<exp>" -> mantissa digits M, difficulty = M * 10^e.
    let repr = format!("{difficulty:e}");
    let (digits, exp) = repr.split_once('e')?;
    let exp: i64 = exp.parse().ok()?;
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    let mantissa: u64 = format!("{int_part}{frac_part}").parse().ok()?;
    let e = exp - frac_part.len() as i64;
    if mantissa == 0 {
        return None;
    }
    // N = 0xffff * 2^208, as 64-bit limbs (little-endian), with room to grow.
    let mut n = BigUint::from_u64(0xffff);
    n.shl_words_bits(208);
    if e >= 0 {
        for _ in 0..e {
            n.div_small(10);
            if n.is_zero() {
                return None;
            }
        }
    } else {
        for _ in 0..(-e) {
            n.mul_small(10);
            if n.bits() > 256 + 64 {
                return Some(Target::from_be_bytes([0xff; 32]));
            }
        }
    }
    n.div_small(mantissa);
    if n.bits() > 256 {
        return Some(Target::from_be_bytes([0xff; 32]));
    }
    let target = Target::from_be_bytes(n.to_be_bytes_32());
    (target != Target::ZERO).then_some(target)
}

/// A minimal unsigned big integer (little-endian 64-bit limbs) for [`difficulty_to_target`].
struct BigUint(Vec<u64>);

impl BigUint {
    fn from_u64(v: u64) -> Self {
        Self(vec![v])
    }

    fn shl_words_bits(&mut self, bits: usize) {
        let words = bits / 64;
        let rest = (bits % 64) as u32;
        let mut out = vec![0u64; words];
        let mut carry = 0u64;
        for &limb in &self.0 {
            if rest == 0 {
                out.push(limb);
            } else {
                out.push((limb << rest) | carry);
                carry = limb >> (64 - rest);
            }
        }
        if carry != 0 {
            out.push(carry);
        }
        self.0 = out;
    }

    fn mul_small(&mut self, m: u64) {
        let mut carry = 0u128;
        for limb in self.0.iter_mut() {
            let v = u128::from(*limb) * u128::from(m) + carry;
            *limb = v as u64;
            carry = v >> 64;
        }
        if carry != 0 {
            self.0.push(carry as u64);
        }
    }

    fn div_small(&mut self, d: u64) {
        let mut rem = 0u128;
        for limb in self.0.iter_mut().rev() {
            let cur = (rem << 64) | u128::from(*limb);
            *limb = (cur / u128::from(d)) as u64;
            rem = cur % u128::from(d);
        }
        while self.0.len() > 1 && self.0.last() == Some(&0) {
            self.0.pop();
        }
    }

    fn is_zero(&self) -> bool {
        self.0.iter().all(|l| *l == 0)
    }

    fn bits(&self) -> usize {
        match self.0.iter().rposition(|l| *l != 0) {
            Some(i) => i * 64 + (64 - self.0[i].leading_zeros() as usize),
            None => 0,
        }
    }

    /// The low 256 bits, big-endian.
    fn to_be_bytes_32(&self) -> [u8; 32] {
        let mut be = [0u8; 32];
        for (i, limb) in self.0.iter().take(4).enumerate() {
            be[32 - 8 * (i + 1)..32 - 8 * i].copy_from_slice(&limb.to_be_bytes());
        }
        be
    }
}

/// The target a compact `nBits` encodes (the network target of a block header).
pub fn nbits_to_target(nbits: u32) -> Target {
    Target::from_compact(CompactTarget::from_consensus(nbits))
}

/// Expected header hashes to find one hash meeting `target`: `2^256 / (target + 1)`, as `f64`.
pub fn expected_hashes(target: &Target) -> f64 {
    // 2^256 / (t + 1) ~= 2^256 / t for every target a channel can have (t >= 1).
    let t = target_to_f64(target);
    if t <= 0.0 {
        return f64::INFINITY;
    }
    2f64.powi(256) / (t + 1.0)
}

fn target_to_f64(target: &Target) -> f64 {
    target
        .to_be_bytes()
        .iter()
        .fold(0.0f64, |acc, b| acc * 256.0 + f64::from(*b))
}

/// The 80-byte block header: `version`, `prev_hash`, `merkle_root`, `ntime`, `nbits`, `nonce`,
/// integers little-endian, hashes in header (internal) byte order.
pub fn header_bytes(
    version: u32,
    prev_hash: &[u8; 32],
    merkle_root: &[u8; 32],
    ntime: u32,
    nbits: u32,
    nonce: u32,
) -> [u8; 80] {
    let mut h = [0u8; 80];
    h[0..4].copy_from_slice(&version.to_le_bytes());
    h[4..36].copy_from_slice(prev_hash);
    h[36..68].copy_from_slice(merkle_root);
    h[68..72].copy_from_slice(&ntime.to_le_bytes());
    h[72..76].copy_from_slice(&nbits.to_le_bytes());
    h[76..80].copy_from_slice(&nonce.to_le_bytes());
    h
}

/// `sha256d(header)`, internal byte order (reverse it for the displayed block hash).
pub fn header_hash(header: &[u8; 80]) -> [u8; 32] {
    sha256d::Hash::hash(header).to_byte_array()
}

/// Whether `hash` (internal byte order, read as a little-endian number) is `<= target`.
pub fn hash_meets_target(hash: &[u8; 32], target: &Target) -> bool {
    Target::from_le_bytes(*hash) <= *target
}

/// The difficulty a hash proves: `DIFF1_TARGET / hash` (as a number, little-endian).
pub fn hash_difficulty(hash: &[u8; 32]) -> f64 {
    target_to_difficulty(&Target::from_le_bytes(*hash))
}

/// Merkle root of a job's coinbase and merkle path, as miners compute it (spec 5.3.16):
/// `coinbase = coinbase_tx_prefix || extranonce || coinbase_tx_suffix` (for an extended
/// channel `extranonce` is `extranonce_prefix || extranonce`, for a standard one just
/// `extranonce_prefix`), its txid, then folded with each `merkle_path` node (deepest first).
///
/// Returns `None` if the assembled bytes are not a coinbase transaction (one input spending
/// the null outpoint). Uses `channels_sv2::merkle_root::merkle_root_from_path`, the function
/// its share validation uses.
pub fn merkle_root(
    coinbase_tx_prefix: &[u8],
    extranonce: &[u8],
    coinbase_tx_suffix: &[u8],
    merkle_path: &[[u8; 32]],
) -> Option<[u8; 32]> {
    merkle_root_from_path(
        coinbase_tx_prefix,
        coinbase_tx_suffix,
        extranonce,
        merkle_path,
    )
}

/// Merkle root from a coinbase txid (internal byte order) and a merkle path: the fold of
/// [`merkle_root`] without the coinbase parsing. An empty path returns the txid.
pub fn merkle_root_from_txid(coinbase_txid: [u8; 32], merkle_path: &[[u8; 32]]) -> [u8; 32] {
    merkle_root_from_path_(coinbase_txid, merkle_path)
}

/// Merkle root of a full transaction list (txids, internal byte order; the coinbase first), as
/// in a block header: pairs hashed with `sha256d`, an odd last node paired with itself.
/// Returns `None` for an empty list.
pub fn merkle_root_of_txids(txids: &[[u8; 32]]) -> Option<[u8; 32]> {
    let mut level: Vec<[u8; 32]> = txids.to_vec();
    if level.is_empty() {
        return None;
    }
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        for pair in level.chunks(2) {
            let left = pair[0];
            let right = pair.get(1).copied().unwrap_or(left);
            let mut engine = sha256d::Hash::engine();
            engine.input(&left);
            engine.input(&right);
            next.push(sha256d::Hash::from_engine(engine).to_byte_array());
        }
        level = next;
    }
    level.first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn difficulty_one_is_diff1() {
        assert_eq!(difficulty_to_target(1.0), Some(DIFF1_TARGET));
        assert_eq!(target_to_difficulty(&DIFF1_TARGET), 1.0);
    }

    #[test]
    fn tiny_difficulty_saturates_and_huge_is_none() {
        let max = Target::from_be_bytes([0xff; 32]);
        assert_eq!(difficulty_to_target(1e-30), Some(max));
        assert_eq!(difficulty_to_target(f64::MIN_POSITIVE), Some(max));
        assert_eq!(difficulty_to_target(1e80), None);
        assert_eq!(difficulty_to_target(0.0), None);
        assert_eq!(difficulty_to_target(-1.0), None);
        assert_eq!(difficulty_to_target(f64::NAN), None);
    }

    #[test]
    fn merkle_of_one_txid_is_the_txid() {
        assert_eq!(merkle_root_of_txids(&[[7; 32]]), Some([7; 32]));
        assert_eq!(merkle_root_of_txids(&[]), None);
        // Two leaves: the path form and the list form agree.
        let a = [1u8; 32];
        let b = [2u8; 32];
        assert_eq!(
            merkle_root_of_txids(&[a, b]),
            Some(merkle_root_from_txid(a, &[b]))
        );
    }

    #[test]
    fn expected_hashes_of_diff1() {
        let h = expected_hashes(&DIFF1_TARGET);
        assert!((h / HASHES_PER_DIFFICULTY_1 - 1.0).abs() < 1e-9, "{h}");
    }
}

/// A hashrate in hashes per second (H/s) that displays with an SI prefix and two decimals:
/// `17.93 MH/s`, `0.00 H/s`. Negative, `-0.0` and NaN estimates (no shares yet) display as
/// `0.00 H/s`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Hashrate(pub f64);

impl std::fmt::Display for Hashrate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const UNITS: [&str; 7] = ["H/s", "kH/s", "MH/s", "GH/s", "TH/s", "PH/s", "EH/s"];
        let mut v = if self.0 > 0.0 { self.0 } else { 0.0 };
        let mut i = 0;
        while v >= 1000.0 && i + 1 < UNITS.len() {
            v /= 1000.0;
            i += 1;
        }
        write!(f, "{v:.2} {}", UNITS[i])
    }
}

#[cfg(test)]
mod hashrate_display_tests {
    use super::Hashrate;

    #[test]
    fn hashrate_displays_with_si_prefix_and_clamps_non_positive() {
        assert_eq!(Hashrate(17_930_000.0).to_string(), "17.93 MH/s");
        assert_eq!(Hashrate(999.0).to_string(), "999.00 H/s");
        assert_eq!(Hashrate(1.5e21).to_string(), "1500.00 EH/s");
        assert_eq!(Hashrate(-0.0).to_string(), "0.00 H/s");
        assert_eq!(Hashrate(f64::NAN).to_string(), "0.00 H/s");
    }
}
