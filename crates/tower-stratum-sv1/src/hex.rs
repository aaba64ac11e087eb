//! Hex text <-> bytes, as Sv1 writes every binary field.
//!
//! Input accepts upper- and lower-case digits; output is always lower case.

use serde::{Serialize, Serializer};
use std::fmt;

const DIGITS: &[u8; 16] = b"0123456789abcdef";

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes an even-length hex string (either case). `None` on an odd length or a non-hex digit.
pub(crate) fn decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    let mut out = Vec::with_capacity(b.len() / 2);
    for pair in b.chunks_exact(2) {
        out.push((nibble(pair[0])? << 4) | nibble(pair[1])?);
    }
    Some(out)
}

/// Decodes a hex string, left-padding an odd-length one with a `0` digit (`"abc"` -> `0a bc`),
/// as SRI's `sv1_api::utils::hex_decode_with_padding` does.
pub(crate) fn decode_padded(s: &str) -> Option<Vec<u8>> {
    if s.len().is_multiple_of(2) {
        return decode(s);
    }
    let mut padded = String::with_capacity(s.len() + 1);
    padded.push('0');
    padded.push_str(s);
    decode(&padded)
}

/// Decodes exactly 32 bytes (64 hex digits), in the order written.
pub(crate) fn decode_32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    decode(s)?.try_into().ok()
}

/// A big-endian `u32` from 1 to 8 hex digits; fewer than 8 are left-padded with zeros (as SRI's
/// `HexU32Be` parses). `None` when empty, longer than 8 digits, or not hex.
pub(crate) fn decode_u32(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 8 {
        return None;
    }
    let mut v: u32 = 0;
    for c in s.bytes() {
        v = (v << 4) | u32::from(nibble(c)?);
    }
    Some(v)
}

/// Lower-case hex of `bytes`.
pub(crate) fn encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Displays and serializes bytes as lower-case hex without allocating.
#[derive(Clone, Copy)]
pub(crate) struct Hex<'a>(pub(crate) &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 128];
        for chunk in self.0.chunks(64) {
            for (i, b) in chunk.iter().enumerate() {
                buf[2 * i] = DIGITS[usize::from(b >> 4)];
                buf[2 * i + 1] = DIGITS[usize::from(b & 0x0f)];
            }
            // Only ASCII hex digits were written.
            f.write_str(std::str::from_utf8(&buf[..2 * chunk.len()]).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

impl Serialize for Hex<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Serializes a `u32` as 8 big-endian hex digits (`0x20000000` -> `"20000000"`).
#[derive(Clone, Copy)]
pub(crate) struct HexU32(pub(crate) u32);

impl Serialize for HexU32 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Hex(&self.0.to_be_bytes()).serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_both_cases_and_rejects_junk() {
        assert_eq!(decode("DeadBEEF"), Some(vec![0xde, 0xad, 0xbe, 0xef]));
        assert_eq!(decode(""), Some(vec![]));
        assert_eq!(decode("abc"), None);
        assert_eq!(decode("zz"), None);
        assert_eq!(decode("é1"), None);
        assert_eq!(decode_padded("abc"), Some(vec![0x0a, 0xbc]));
        assert_eq!(decode_u32("1fffe000"), Some(0x1fff_e000));
        assert_eq!(decode_u32("1FFFE000"), Some(0x1fff_e000));
        assert_eq!(decode_u32("16"), Some(0x16));
        assert_eq!(decode_u32(""), None);
        assert_eq!(decode_u32("123456789"), None);
        assert_eq!(decode_u32("-1"), None);
        assert_eq!(Hex(&[0xab; 70]).to_string(), "ab".repeat(70));
        assert_eq!(encode(&[0, 0xff]), "00ff");
    }
}
