//! Noise-encrypted Sv2 framing (spec 4: Noise_NX_Secp256k1+EllSwift_ChaChaPoly_SHA256), wrapping
//! SRI's `codec_sv2` `NoiseEncoder` / `NoiseDecoder`.

use crate::{
    budget::BudgetCharge,
    error::CodecError,
    plain::{check_encodable, eof_mid_frame},
};
use bytes::{Buf, Bytes, BytesMut};
use std::fmt;
use stratum_core::{
    codec_sv2::{
        Decrypted, NoiseDecoder, NoiseEncoder, Transport, TransportDecryptState,
        TransportEncryptState,
    },
    framing_sv2::{self, framing::EncodableFrame},
};
use tokio_util::codec::{Decoder, Encoder};
use tower_stratum_core::frame::{Frame, FrameHeader, HEADER_SIZE, MAX_PAYLOAD_LEN};

/// ChaCha20-Poly1305 MAC length in bytes (spec 4.3).
pub const MAC_LEN: usize = 16;

/// Encrypted Sv2 header length in bytes: the 6-byte header plus its MAC (spec 4.3.1).
pub const ENCRYPTED_HEADER_LEN: usize = HEADER_SIZE + MAC_LEN;

/// Largest Noise ciphertext (one encrypted chunk, MAC included), in bytes: 65535 (spec 4.3.1).
pub const MAX_CIPHERTEXT_CHUNK_LEN: usize = 65535;

/// Largest plaintext one chunk carries, in bytes: 65535 - 16 = 65519 (spec 4.3.1).
pub const MAX_PLAINTEXT_CHUNK_LEN: usize = MAX_CIPHERTEXT_CHUNK_LEN - MAC_LEN;

/// Bytes on the wire of one encrypted frame with `payload_len` payload bytes: the 22-byte
/// encrypted header, the payload, and one 16-byte MAC per started 65519-byte chunk (spec 4.3.1;
/// same as `codec_sv2::encrypted_payload_length` plus the header).
pub fn encrypted_frame_len(payload_len: usize) -> usize {
    ENCRYPTED_HEADER_LEN + payload_len + payload_len.div_ceil(MAX_PLAINTEXT_CHUNK_LEN) * MAC_LEN
}

/// A [`tokio_util::codec`] codec for Sv2 frames over a completed Noise NX transport (spec 4.3,
/// 4.5): each frame is sent as its encrypted 6-byte header (22 bytes with the MAC) followed by
/// its payload encrypted in chunks of at most 65519 plaintext bytes, each with its own MAC.
///
/// The crypto is SRI's: frames are encrypted with `codec_sv2::NoiseEncoder::encode_transport` and
/// decrypted with `codec_sv2::NoiseDecoder::next_transport_frame`, over the two halves of a
/// `codec_sv2::Transport` produced by a `codec_sv2::Handshake` (run one with
/// [`accept_noise`](crate::accept_noise) / [`connect_noise`](crate::connect_noise), or the sans-IO
/// [`NoiseResponder`](crate::NoiseResponder) / [`NoiseInitiator`](crate::NoiseInitiator)).
///
/// # Maximum frame size and buffering
///
/// The header that declares a frame's length is encrypted, and codec_sv2 decrypts it internally
/// without exposing it. So the limit is enforced on what the peer makes the codec buffer: the
/// encrypted bytes handed to codec_sv2 for the frame in progress ([`Self::buffered_len`]) never
/// exceed [`Self::max_buffered_len`] = [`encrypted_frame_len`]`(max_payload)`. codec_sv2 asks for
/// the frame a read window at a time (the 22-byte header, then one ciphertext chunk of at most
/// 65535 bytes at a time); before a window would take the frame past the bound, decoding fails
/// with [`CodecError::FrameTooLarge`] and nothing of that window is buffered. `declared` is then
/// a lower bound on the declared payload length. Once a frame is decrypted its plaintext header is
/// also checked against `max_payload` (defence in depth; the bound above already implies it).
///
/// Bytes of a window not yet complete stay in the caller's read buffer (`src`, at most one window,
/// i.e. 65535 bytes): codec_sv2's `writable()` must be filled whole. Nothing is reserved for the
/// frame's declared length: codec_sv2's buffer grows with the windows actually received.
///
/// With a budget ([`Self::set_budget`]), what an unfinished frame holds (its bytes inside
/// codec_sv2 plus those in `src`) beyond the budget's allowance is charged to it each time the
/// decoder waits; a refused charge fails with [`CodecError::BudgetExhausted`] (fatal). Inside codec_sv2 a frame is
/// held twice at the end (the encrypted payload, then the decrypted frame), and its buffers are
/// handed out and reallocated for every frame.
///
/// # Errors
///
/// A decryption failure is [`CodecError::Decrypt`]; it, an oversize frame, or a stream ending mid
/// frame ([`CodecError::Io`], `UnexpectedEof`) are fatal for decoding: codec_sv2 consumes the
/// decrypting state on error, and every later `decode` returns [`CodecError::Dead`]. An
/// encryption failure is [`CodecError::Encrypt`] and fatal for encoding likewise. Encoding a
/// payload over [`MAX_PAYLOAD_LEN`] fails with [`CodecError::FrameTooLarge`], writes nothing and
/// is not fatal.
pub struct NoiseCodec {
    encoder: NoiseEncoder,
    encrypt: Option<TransportEncryptState>,
    decoder: NoiseDecoder,
    decrypt: Option<TransportDecryptState>,
    max_payload: usize,
    max_buffered: usize,
    // Encrypted bytes of the frame in progress handed to `decoder`.
    buffered: usize,
    budget: Option<BudgetCharge>,
}

impl NoiseCodec {
    /// Builds the codec over a completed handshake's transport (both directions), accepting
    /// received payloads of at most `max_payload` bytes (values above [`MAX_PAYLOAD_LEN`] behave
    /// as [`MAX_PAYLOAD_LEN`]).
    pub fn new(transport: Transport, max_payload: usize) -> Self {
        let (encrypt, decrypt) = transport.split();
        let max_payload = max_payload.min(MAX_PAYLOAD_LEN);
        Self {
            encoder: NoiseEncoder::new(),
            encrypt: Some(encrypt),
            decoder: NoiseDecoder::new(),
            decrypt: Some(decrypt),
            max_payload,
            max_buffered: encrypted_frame_len(max_payload),
            buffered: 0,
            budget: None,
        }
    }

    /// Changes the largest received payload accepted, in bytes (capped at [`MAX_PAYLOAD_LEN`]).
    /// Applies at once, including to a frame already in progress.
    pub fn set_max_payload(&mut self, max_payload: usize) {
        self.max_payload = max_payload.min(MAX_PAYLOAD_LEN);
        self.max_buffered = encrypted_frame_len(self.max_payload);
    }

    /// Charges the bytes of unfinished frames to `charge` from now on (see
    /// [`PartialFrameBudget`](crate::PartialFrameBudget)).
    pub fn set_budget(&mut self, charge: BudgetCharge) {
        self.budget = Some(charge);
    }

    /// Charges `held` bytes of an unfinished frame to the budget, if any. On refusal the
    /// decoding half is dead (the caller has already taken the decrypting state).
    fn hold(&mut self, held: usize) -> Result<(), CodecError> {
        let Some(charge) = self.budget.as_mut() else {
            return Ok(());
        };
        match charge.set_held(held) {
            Ok(()) => Ok(()),
            Err(r) => {
                self.buffered = 0;
                self.budget = None;
                Err(CodecError::BudgetExhausted {
                    held: r.held,
                    used: r.used,
                    limit: r.limit,
                })
            }
        }
    }

    /// The largest received payload accepted, in bytes.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Encrypted bytes of the frame currently being received that this codec (inside codec_sv2's
    /// decoder) holds, in bytes; 0 between frames. Never more than [`Self::max_buffered_len`].
    /// Bytes still in the caller's read buffer are not counted.
    pub fn buffered_len(&self) -> usize {
        self.buffered
    }

    /// The bound on [`Self::buffered_len`]: [`encrypted_frame_len`]`(max_payload)` bytes.
    pub fn max_buffered_len(&self) -> usize {
        self.max_buffered
    }

    /// Whether the decoding half is still usable (no fatal decode error so far).
    pub fn can_decode(&self) -> bool {
        self.decrypt.is_some()
    }

    /// Whether the encoding half is still usable (no fatal encode error so far).
    pub fn can_encode(&self) -> bool {
        self.encrypt.is_some()
    }

    // A lower bound on the payload length a frame declares when codec_sv2 asks for `total`
    // encrypted bytes of it (header included); at least `max_payload + 1`, which is implied by
    // `total` exceeding `max_buffered` since the encrypted length grows with the payload.
    fn declared_lower_bound(&self, total: usize) -> usize {
        let ct = total.saturating_sub(ENCRYPTED_HEADER_LEN);
        let pt = ct.saturating_sub(ct.div_ceil(MAX_CIPHERTEXT_CHUNK_LEN) * MAC_LEN);
        pt.max(self.max_payload.saturating_add(1))
    }

    fn finish_frame(&mut self, bytes: Vec<u8>) -> Result<Frame, CodecError> {
        let bytes = Bytes::from(bytes);
        let Some(header) = FrameHeader::parse(&bytes) else {
            // codec_sv2 only returns whole frames; a shorter one means its framing is off.
            self.decrypt = None;
            return Err(CodecError::Decrypt);
        };
        if header.msg_length > self.max_payload {
            self.decrypt = None;
            return Err(CodecError::FrameTooLarge {
                declared: header.msg_length,
                max: self.max_payload,
            });
        }
        Ok(Frame {
            extension_type: header.extension_type,
            msg_type: header.msg_type,
            payload: bytes.slice(HEADER_SIZE..),
        })
    }
}

impl fmt::Debug for NoiseCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoiseCodec")
            .field("max_payload", &self.max_payload)
            .field("buffered", &self.buffered)
            .field("can_encode", &self.can_encode())
            .field("can_decode", &self.can_decode())
            .finish_non_exhaustive()
    }
}

impl Decoder for NoiseCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        // Taken out for the whole call: codec_sv2 consumes it on error, so on every early error
        // return below the codec is left dead.
        let mut state = self.decrypt.take().ok_or(CodecError::Dead)?;
        let mut fed_last_round = true;
        loop {
            let want = self.decoder.writable_len();
            if want > 0 {
                let total = self.buffered.saturating_add(want);
                if total > self.max_buffered {
                    self.buffered = 0;
                    self.budget = None;
                    return Err(CodecError::FrameTooLarge {
                        declared: self.declared_lower_bound(total),
                        max: self.max_payload,
                    });
                }
                if src.len() < want {
                    self.hold(self.buffered + src.len())?;
                    // At most one ciphertext chunk (65535 bytes), within the checked bound.
                    src.reserve(want - src.len());
                    self.decrypt = Some(state);
                    return Ok(None);
                }
                let window = self.decoder.writable();
                if window.len() != want {
                    // codec_sv2 changed its window between the two calls; its buffer now holds
                    // bytes we did not write. Not recoverable.
                    self.buffered = 0;
                    return Err(CodecError::Dead);
                }
                window.copy_from_slice(&src[..want]);
                src.advance(want);
                self.buffered = total;
                fed_last_round = true;
            } else if !fed_last_round {
                // Two rounds in a row with nothing to read and no frame: wait for more input
                // rather than spin (codec_sv2 never does this today).
                self.hold(self.buffered + src.len())?;
                self.decrypt = Some(state);
                return Ok(None);
            } else {
                // `Incomplete(0)`: the bytes are already buffered, call again without reading.
                fed_last_round = false;
            }
            match self.decoder.next_transport_frame(state) {
                Ok(Decrypted::Frame(frame, next)) => {
                    self.buffered = 0;
                    self.hold(0)?;
                    self.decrypt = Some(next);
                    return self.finish_frame(frame.into_bytes()).map(Some);
                }
                Ok(Decrypted::Incomplete(_, next)) => state = next,
                Err(error) => {
                    tracing::debug!(%error, "noise transport frame rejected");
                    self.buffered = 0;
                    self.budget = None;
                    return Err(CodecError::Decrypt);
                }
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() && self.buffered == 0 => Ok(None),
            None => {
                let received = src.len() + self.buffered;
                self.decrypt = None;
                self.buffered = 0;
                self.budget = None;
                Err(eof_mid_frame(received))
            }
        }
    }
}

impl Encoder<Frame> for NoiseCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        check_encodable(&item)?;
        let state = self.encrypt.as_mut().ok_or(CodecError::Dead)?;
        match self.encoder.encode_transport(PlainFrame(&item), state) {
            Ok(ciphertext) => {
                dst.extend_from_slice(&ciphertext);
                Ok(())
            }
            Err(error) => {
                self.encrypt = None;
                Err(CodecError::Encrypt(error.to_string()))
            }
        }
    }
}

/// A [`Frame`] serialized straight into codec_sv2's encoder buffer (header + payload), so the
/// encoder does not need an intermediate `Vec`.
struct PlainFrame<'a>(&'a Frame);

impl EncodableFrame for PlainFrame<'_> {
    fn encoded_length(&self) -> usize {
        self.0.encoded_len()
    }

    fn encode_into(self, dst: &mut [u8]) -> Result<(), framing_sv2::Error> {
        let frame = self.0;
        if dst.len() != frame.encoded_len() {
            return Err(framing_sv2::Error::UnexpectedDestinationLength {
                expected: frame.encoded_len(),
                actual: dst.len(),
            });
        }
        let (header, payload) = dst.split_at_mut(HEADER_SIZE);
        let [e0, e1] = frame.extension_type.to_le_bytes();
        // Checked by `check_encodable` to fit a U24.
        let [l0, l1, l2, _] = (frame.payload.len() as u32).to_le_bytes();
        header.copy_from_slice(&[e0, e1, frame.msg_type, l0, l1, l2]);
        payload.copy_from_slice(&frame.payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use stratum_core::framing_sv2::header::Header;

    #[test]
    fn encrypted_frame_len_matches_codec_sv2() {
        for len in [
            0usize,
            1,
            65518,
            65519,
            65520,
            131038,
            131039,
            1 << 20,
            MAX_PAYLOAD_LEN,
        ] {
            let mut raw = [0u8; 6];
            raw[3..].copy_from_slice(&(len as u32).to_le_bytes()[..3]);
            let header = Header::from_bytes(&raw).unwrap();
            assert_eq!(
                encrypted_frame_len(len),
                ENCRYPTED_HEADER_LEN + stratum_core::codec_sv2::encrypted_payload_length(&header),
                "{len}"
            );
        }
        assert_eq!(
            ENCRYPTED_HEADER_LEN,
            stratum_core::codec_sv2::ENCRYPTED_SV2_FRAME_HEADER_SIZE
        );
        assert_eq!(
            MAX_CIPHERTEXT_CHUNK_LEN,
            stratum_core::framing_sv2::SV2_FRAME_CHUNK_SIZE
        );
    }

    #[test]
    fn codec_is_send() {
        fn assert_send<T: Send + 'static>() {}
        assert_send::<NoiseCodec>();
    }
}
