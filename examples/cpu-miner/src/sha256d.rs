//! Double SHA-256 of 80-byte block headers, specialised for scanning nonces.
//!
//! A header is hashed as two 64-byte SHA-256 blocks. The first block (version, prev_hash and
//! the first 28 bytes of the merkle root) does not depend on the nonce, so its compression
//! result (the *midstate*) is computed once per header template ([`Midstate::new`]). Per nonce
//! only the second block (last 4 merkle-root bytes, ntime, nbits, nonce and padding) and the
//! second SHA-256 over the 32-byte digest remain: two compressions instead of three.
//!
//! Two engines implement the scan:
//! - [`Engine::ShaNi`] (x86_64 with the SHA extensions, detected at run time): hashes
//!   [`SHA_NI_LANES`] nonces at once with their instruction streams interleaved, so the
//!   `sha256rnds2` latency chains of independent nonces overlap. It also skips work whose
//!   result is known in advance: the first two rounds of the second block (they only see the
//!   merkle tail and ntime) are done once per header, and the last two rounds of the second
//!   SHA-256 are not run, because the most significant 32 bits of the hash (as a little-endian
//!   256-bit number) are already final after round 62.
//! - [`Engine::Portable`]: `sha2::compress256` (which itself uses SHA-NI or the ARMv8 SHA
//!   instructions when present, one block at a time), for every other CPU.
//!
//! Both report *candidates*: nonces whose hash has its top 32 bits at most a bound. The caller
//! then recomputes the full hash with [`sha256d`] and compares it with the whole target, so a
//! bug in an engine can cost shares but can never submit an invalid one.

use sha2::digest::generic_array::typenum::U64;
use sha2::digest::generic_array::GenericArray;
use sha2::{Digest, Sha256};

/// SHA-256 initial hash value (FIPS 180-4, 5.3.3).
pub const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// SHA-256 round constants (FIPS 180-4, 4.2.2).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// How many nonces the SHA-NI engine hashes together.
pub const SHA_NI_LANES: usize = 4;

/// `sha256(sha256(data))`, as the 32 digest bytes (Bitcoin's internal byte order: a block
/// hash read as a little-endian 256-bit number).
pub fn sha256d(data: &[u8]) -> [u8; 32] {
    Sha256::digest(Sha256::digest(data)).into()
}

/// Whether `hash` (internal byte order, read as a little-endian 256-bit number) is at most
/// `target` (also little-endian, as Sv2 `U256` targets are): the share condition.
pub fn meets_target(hash: &[u8; 32], target: &[u8; 32]) -> bool {
    for i in (0..32).rev() {
        match hash[i].cmp(&target[i]) {
            std::cmp::Ordering::Less => return true,
            std::cmp::Ordering::Greater => return false,
            std::cmp::Ordering::Equal => {}
        }
    }
    true
}

/// The most significant 32 bits of a little-endian 256-bit `target` (its bytes 28..32): the
/// bound for [`Engine::scan`].
pub fn top_word(target: &[u8; 32]) -> u32 {
    u32::from_le_bytes([target[28], target[29], target[30], target[31]])
}

/// The nonce-independent part of an 80-byte header: the SHA-256 state after its first 64
/// bytes, and the first three big-endian words of the second block (merkle root bytes 28..32,
/// ntime, nbits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Midstate {
    state: [u32; 8],
    tail: [u32; 3],
}

impl Midstate {
    /// Computes the midstate of `header` (its nonce bytes 76..80 are ignored).
    pub fn new(header: &[u8; 80]) -> Self {
        let mut state = IV;
        let mut block = GenericArray::<u8, U64>::default();
        block.copy_from_slice(&header[..64]);
        sha2::compress256(&mut state, std::slice::from_ref(&block));
        let word =
            |i: usize| u32::from_be_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        Self {
            state,
            tail: [word(64), word(68), word(72)],
        }
    }
}

/// A sha256d nonce-scanning implementation, chosen once per process ([`Engine::detect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// x86_64 SHA extensions, [`SHA_NI_LANES`] interleaved nonces. Only constructed by
    /// [`Engine::detect`] on a CPU that has them.
    ShaNi(ShaNiToken),
    /// `sha2::compress256`, one nonce at a time.
    Portable,
}

/// Proof that the running CPU supports the instructions of [`Engine::ShaNi`]: only
/// [`Engine::detect`] can create one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShaNiToken(());

impl Engine {
    /// The fastest engine this CPU supports.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("sha")
                && std::arch::is_x86_feature_detected!("sse2")
                && std::arch::is_x86_feature_detected!("ssse3")
                && std::arch::is_x86_feature_detected!("sse4.1")
            {
                return Engine::ShaNi(ShaNiToken(()));
            }
        }
        Engine::Portable
    }

    /// A short name for logs: `sha-ni-x4` or `portable`.
    pub fn name(&self) -> &'static str {
        match self {
            Engine::ShaNi(_) => "sha-ni-x4",
            Engine::Portable => "portable",
        }
    }

    /// Hashes the header of `midstate` with every nonce in `start .. start + count` (wrapping
    /// at 2^32; `count` should be a multiple of [`SHA_NI_LANES`] for full speed) and appends to
    /// `candidates` each nonce whose sha256d, read as a little-endian 256-bit number, has its
    /// most significant 32 bits at most `max_top` (use [`top_word`] of the target). Returns
    /// the number of hashes computed (`count`).
    pub fn scan(
        &self,
        midstate: &Midstate,
        start: u32,
        count: u32,
        max_top: u32,
        candidates: &mut Vec<u32>,
    ) -> u64 {
        match self {
            #[cfg(target_arch = "x86_64")]
            Engine::ShaNi(_) => {
                // SAFETY: `scan` is a `#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]`
                // function without other preconditions; an `Engine::ShaNi` only exists when
                // `Engine::detect` found all four features on this CPU (the token field is
                // private, so no other code can build one).
                #[allow(unsafe_code)]
                unsafe {
                    x86::scan(midstate, start, count, max_top, candidates)
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            Engine::ShaNi(_) => portable_scan(midstate, start, count, max_top, candidates),
            Engine::Portable => portable_scan(midstate, start, count, max_top, candidates),
        }
        u64::from(count)
    }
}

/// The second-block template of the first SHA-256: 16 header bytes, padding, length 640 bits.
fn first_second_block(midstate: &Midstate) -> GenericArray<u8, U64> {
    let mut b = GenericArray::<u8, U64>::default();
    for (i, w) in midstate.tail.iter().enumerate() {
        b[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
    }
    b[16] = 0x80;
    b[56..64].copy_from_slice(&640u64.to_be_bytes());
    b
}

fn portable_scan(
    midstate: &Midstate,
    start: u32,
    count: u32,
    max_top: u32,
    candidates: &mut Vec<u32>,
) {
    let mut block1 = first_second_block(midstate);
    let mut block2 = GenericArray::<u8, U64>::default();
    block2[32] = 0x80;
    block2[56..64].copy_from_slice(&256u64.to_be_bytes());
    for i in 0..count {
        let nonce = start.wrapping_add(i);
        block1[12..16].copy_from_slice(&nonce.to_le_bytes());
        let mut s1 = midstate.state;
        sha2::compress256(&mut s1, std::slice::from_ref(&block1));
        for (j, w) in s1.iter().enumerate() {
            block2[j * 4..j * 4 + 4].copy_from_slice(&w.to_be_bytes());
        }
        let mut s2 = IV;
        sha2::compress256(&mut s2, std::slice::from_ref(&block2));
        if s2[7].swap_bytes() <= max_top {
            candidates.push(nonce);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The SHA-NI kernel. No `unsafe` in here: since Rust 1.87 the `std::arch` intrinsics
    //! used are safe to call from functions that enable their target features.
    //!
    //! Register layout is the usual one for `sha256rnds2`: the eight state words live in two
    //! registers, ABEF (lanes 3..0 = A, B, E, F) and CDGH (lanes 3..0 = C, D, G, H); a
    //! message register holds four schedule words W[i..i+4] with W[i] in lane 0.

    use super::{Midstate, IV, K, SHA_NI_LANES as L};
    use std::arch::x86_64::*;

    /// `(ABEF, CDGH)` registers of a state.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn load_state(s: &[u32; 8]) -> (__m128i, __m128i) {
        let w = |i: usize| s[i] as i32;
        (
            _mm_set_epi32(w(0), w(1), w(4), w(5)),
            _mm_set_epi32(w(2), w(3), w(6), w(7)),
        )
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn words(w0: u32, w1: u32, w2: u32, w3: u32) -> __m128i {
        _mm_set_epi32(w3 as i32, w2 as i32, w1 as i32, w0 as i32)
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn k4(g: usize) -> __m128i {
        words(K[4 * g], K[4 * g + 1], K[4 * g + 2], K[4 * g + 3])
    }

    /// W[i+16..i+20] from W[i..i+4] (a), W[i+4..] (b), W[i+8..] (c), W[i+12..] (d).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn schedule(a: __m128i, b: __m128i, c: __m128i, d: __m128i) -> __m128i {
        let t = _mm_add_epi32(_mm_sha256msg1_epu32(a, b), _mm_alignr_epi8::<4>(d, c));
        _mm_sha256msg2_epu32(t, d)
    }

    /// Four rounds (group `$g`) on every lane with message registers `$m`; then, if
    /// `$sched`, replaces `$m` with the schedule words 16 positions later.
    macro_rules! group {
        ($abef:ident, $cdgh:ident, $g:expr, $m:ident, $b:ident, $c:ident, $d:ident, $sched:expr) => {{
            let k = k4($g);
            for l in 0..L {
                let msg = _mm_add_epi32($m[l], k);
                $cdgh[l] = _mm_sha256rnds2_epu32($cdgh[l], $abef[l], msg);
                $abef[l] =
                    _mm_sha256rnds2_epu32($abef[l], $cdgh[l], _mm_shuffle_epi32::<0x0e>(msg));
            }
            if $sched {
                for l in 0..L {
                    $m[l] = schedule($m[l], $b[l], $c[l], $d[l]);
                }
            }
        }};
    }

    /// Rounds of groups 1..=14 (message rotation m0..m3), shared by both hashes.
    macro_rules! middle_groups {
        ($abef:ident, $cdgh:ident, $m0:ident, $m1:ident, $m2:ident, $m3:ident) => {{
            group!($abef, $cdgh, 1, $m1, $m2, $m3, $m0, true);
            group!($abef, $cdgh, 2, $m2, $m3, $m0, $m1, true);
            group!($abef, $cdgh, 3, $m3, $m0, $m1, $m2, true);
            group!($abef, $cdgh, 4, $m0, $m1, $m2, $m3, true);
            group!($abef, $cdgh, 5, $m1, $m2, $m3, $m0, true);
            group!($abef, $cdgh, 6, $m2, $m3, $m0, $m1, true);
            group!($abef, $cdgh, 7, $m3, $m0, $m1, $m2, true);
            group!($abef, $cdgh, 8, $m0, $m1, $m2, $m3, true);
            group!($abef, $cdgh, 9, $m1, $m2, $m3, $m0, true);
            group!($abef, $cdgh, 10, $m2, $m3, $m0, $m1, true);
            group!($abef, $cdgh, 11, $m3, $m0, $m1, $m2, true);
            group!($abef, $cdgh, 12, $m0, $m1, $m2, $m3, false);
            group!($abef, $cdgh, 13, $m1, $m2, $m3, $m0, false);
            group!($abef, $cdgh, 14, $m2, $m3, $m0, $m1, false);
        }};
    }

    /// See [`super::Engine::scan`].
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) fn scan(
        midstate: &Midstate,
        start: u32,
        count: u32,
        max_top: u32,
        candidates: &mut Vec<u32>,
    ) {
        let (ms_abef, ms_cdgh) = load_state(&midstate.state);
        let [t0, t1, t2] = midstate.tail;
        // Rounds 0 and 1 of the second block see W0 (merkle tail) and W1 (ntime) only.
        let after01 = _mm_sha256rnds2_epu32(
            ms_cdgh,
            ms_abef,
            _mm_add_epi32(words(t0, t1, 0, 0), words(K[0], K[1], 0, 0)),
        );
        let w2k = t2.wrapping_add(K[2]);
        // Constant message words of the first hash's second block.
        let pad1_m1 = words(0x8000_0000, 0, 0, 0);
        let pad1_m3 = words(0, 0, 0, 640);
        // And of the second hash's only block (W8..W15).
        let pad2_m2 = words(0x8000_0000, 0, 0, 0);
        let pad2_m3 = words(0, 0, 0, 256);
        let (iv_abef, iv_cdgh) = load_state(&IV);
        let iv7 = IV[7];

        let full = count - count % L as u32;
        let mut i = 0u32;
        while i < full {
            let base = start.wrapping_add(i);
            // ---- first SHA-256, second block ----
            let mut abef = [ms_abef; L];
            let mut cdgh = [after01; L];
            let mut m0 = [pad1_m1; L];
            let mut m1 = [pad1_m1; L];
            let mut m2 = [_mm_setzero_si128(); L];
            let mut m3 = [pad1_m3; L];
            for l in 0..L {
                let w3 = base.wrapping_add(l as u32).swap_bytes();
                // Rounds 2 and 3 (W2 = nbits, W3 = nonce).
                let msg23 = words(w2k, w3.wrapping_add(K[3]), 0, 0);
                abef[l] = _mm_sha256rnds2_epu32(ms_abef, after01, msg23);
                m0[l] = words(t0, t1, t2, w3);
            }
            for l in 0..L {
                m0[l] = schedule(m0[l], m1[l], m2[l], m3[l]);
            }
            middle_groups!(abef, cdgh, m0, m1, m2, m3);
            group!(abef, cdgh, 15, m3, m0, m1, m2, false);
            // ---- second SHA-256 over the 32-byte digest ----
            for l in 0..L {
                let a = _mm_add_epi32(abef[l], ms_abef);
                let c = _mm_add_epi32(cdgh[l], ms_cdgh);
                // W0..3 = A B C D, W4..7 = E F G H of the first digest.
                m0[l] = _mm_shuffle_epi32::<0xb1>(_mm_unpackhi_epi64(a, c));
                m1[l] = _mm_shuffle_epi32::<0xb1>(_mm_unpacklo_epi64(a, c));
                m2[l] = pad2_m2;
                m3[l] = pad2_m3;
                abef[l] = iv_abef;
                cdgh[l] = iv_cdgh;
            }
            group!(abef, cdgh, 0, m0, m1, m2, m3, true);
            middle_groups!(abef, cdgh, m0, m1, m2, m3);
            // Group 15, first half only: rounds 60 and 61. The new ABEF's F lane is then the
            // final H word (h after round 63 = f after round 61), so rounds 62-63 are skipped.
            let k = k4(15);
            for l in 0..L {
                let msg = _mm_add_epi32(m3[l], k);
                let after61 = _mm_sha256rnds2_epu32(cdgh[l], abef[l], msg);
                let h7 = (_mm_cvtsi128_si32(after61) as u32).wrapping_add(iv7);
                if h7.swap_bytes() <= max_top {
                    candidates.push(base.wrapping_add(l as u32));
                }
            }
            i += L as u32;
        }
        if full < count {
            super::portable_scan(
                midstate,
                start.wrapping_add(full),
                count - full,
                max_top,
                candidates,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn header_of(seed: u8) -> [u8; 80] {
        let mut h = [0u8; 80];
        let mut x = (seed as u32).wrapping_mul(2654435761);
        for b in h.iter_mut() {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            *b = (x >> 16) as u8;
        }
        h
    }

    fn reference_top(header: &[u8; 80], nonce: u32) -> u32 {
        let mut h = *header;
        h[76..80].copy_from_slice(&nonce.to_le_bytes());
        top_word(&sha256d(&h))
    }

    /// Every engine reports exactly the nonces whose reference hash is under the bound.
    fn engine_matches_reference(engine: Engine) {
        for seed in 0..8u8 {
            let header = header_of(seed);
            let ms = Midstate::new(&header);
            let start = u32::MAX - 37; // exercises wrapping
            let count = 203; // not a multiple of the lane count
            let tops: Vec<u32> = (0..count)
                .map(|i| reference_top(&header, start.wrapping_add(i)))
                .collect();
            let mut sorted = tops.clone();
            sorted.sort_unstable();
            for bound in [0, sorted[10], sorted[100], u32::MAX] {
                let mut got = Vec::new();
                assert_eq!(
                    engine.scan(&ms, start, count, bound, &mut got),
                    count as u64
                );
                let want: Vec<u32> = (0..count)
                    .filter(|&i| tops[i as usize] <= bound)
                    .map(|i| start.wrapping_add(i))
                    .collect();
                assert_eq!(
                    got,
                    want,
                    "engine {} seed {seed} bound {bound:#x}",
                    engine.name()
                );
            }
        }
    }

    #[test]
    fn portable_engine_matches_reference() {
        engine_matches_reference(Engine::Portable);
    }

    #[test]
    fn detected_engine_matches_reference() {
        engine_matches_reference(Engine::detect());
    }

    #[test]
    fn target_comparison_is_little_endian() {
        let mut t = [0u8; 32];
        t[31] = 0x01;
        let mut h = [0xffu8; 32];
        h[31] = 0x00;
        assert!(meets_target(&h, &t));
        h[31] = 0x01;
        assert!(!meets_target(&h, &t));
        assert!(meets_target(&t, &t));
        assert_eq!(top_word(&t), 0x0100_0000);
    }
}
