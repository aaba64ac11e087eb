//! Error types of the codecs and of the Noise handshake.

use std::io;

/// Why a codec could not decode or encode a frame.
///
/// Returned by [`PlainCodec`](crate::PlainCodec), [`NoiseCodec`](crate::NoiseCodec) and
/// [`Sv2Codec`](crate::Sv2Codec). Every decode error is fatal for the decoding half: the byte
/// stream can no longer be framed (or, for Noise, the receiving cipher's nonce no longer follows
/// the peer), so the codec answers every later `decode` with [`CodecError::Dead`] and the
/// connection should be closed. Encode errors are fatal only where stated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// A frame's payload is larger than the codec's maximum (spec 3.2: `msg_length` is a U24, so
    /// never more than 2^24 - 1 bytes; the maximum is local policy below that).
    ///
    /// On decode, nothing was reserved or buffered for the payload beyond the checked bound. With
    /// Noise the plaintext header is encrypted, so `declared` is the exact declared length when it
    /// could be read, and otherwise a lower bound on it derived from the number of encrypted bytes
    /// the peer was about to make the codec buffer (always `> max`). Fatal on decode.
    ///
    /// On encode, the frame's payload does not fit a U24 `msg_length`; nothing was written and
    /// the codec stays usable.
    #[error("frame payload of {declared} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// Payload length in bytes, as declared by the header (or a lower bound, see above).
        declared: usize,
        /// The maximum payload length in bytes the codec accepts.
        max: usize,
    },
    /// The frame being received would hold more bytes than the connection's share of a
    /// [`PartialFrameBudget`](crate::PartialFrameBudget) allows: `held` bytes of an unfinished
    /// frame, while all connections sharing the budget already hold `used` of its `limit`
    /// bytes. Fatal on decode: close the connection (its buffered bytes are released).
    #[error("unfinished frame holds {held} bytes, partial-frame budget exhausted ({used} of {limit} bytes in use)")]
    BudgetExhausted {
        /// Bytes of the unfinished frame held by this connection.
        held: usize,
        /// Bytes charged by all connections sharing the budget.
        used: usize,
        /// The budget's limit, in bytes.
        limit: usize,
    },
    /// A Noise transport frame failed authentication (ChaCha20-Poly1305 MAC mismatch: tampered,
    /// truncated-and-resynchronised or replayed ciphertext, or a peer with other keys). Spec 4.
    ///
    /// Fatal: codec_sv2 consumes the receiving cipher state on error, and the nonce no longer
    /// follows the peer's. Close the connection.
    #[error("noise frame failed to decrypt")]
    Decrypt,
    /// Encrypting an outgoing frame failed (codec_sv2 error text). Fatal for the encoding half:
    /// the sending nonce may already have advanced past what the peer expects.
    #[error("noise frame failed to encrypt: {0}")]
    Encrypt(String),
    /// An I/O error from the underlying transport, or [`io::ErrorKind::UnexpectedEof`] when the
    /// stream ended in the middle of a frame. `tokio_util::codec` requires `From<io::Error>`.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The codec (or the half that was called) already returned a fatal error, and will not
    /// process more bytes. Close the connection.
    #[error("codec is unusable after a previous fatal error")]
    Dead,
}

/// Why a Noise NX handshake (spec 4.5) failed.
///
/// Returned by [`accept_noise`](crate::accept_noise), [`connect_noise`](crate::connect_noise) and
/// the sans-IO [`NoiseResponder`](crate::NoiseResponder) / [`NoiseInitiator`](crate::NoiseInitiator).
/// In every case the connection must be dropped: a handshake cannot be retried on the same stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// Reading or writing a handshake message failed, including [`io::ErrorKind::UnexpectedEof`]
    /// when the peer closed before sending a whole message (64 bytes for act 1, 234 for act 2).
    #[error("i/o error during the noise handshake: {0}")]
    Io(#[from] io::Error),
    /// A cryptographic step failed: malformed or tampered handshake message (AEAD failure),
    /// invalid key material, mismatched authority key pair. Carries codec_sv2's description.
    #[error("noise handshake failed: {0}")]
    Noise(String),
    /// The initiator rejected the responder's certificate (spec 4.5.3 "Signature noise
    /// message"): unsupported certificate version, outside its `valid_from` ..
    /// `not_valid_after` window (with noise_sv2's 10 s tolerance), or not signed by the pinned
    /// authority public key. Carries the decoded certificate fields for diagnosis.
    #[error("responder certificate rejected: {0}")]
    CertificateRejected(String),
}

impl HandshakeError {
    /// Maps a codec_sv2 handshake error, separating certificate rejection from other failures.
    pub(crate) fn from_sri(e: stratum_core::codec_sv2::Error) -> Self {
        use stratum_core::{codec_sv2::Error as CodecSv2Error, noise_sv2::Error as NoiseSv2Error};
        match e {
            CodecSv2Error::NoiseSv2Error(NoiseSv2Error::InvalidCertificate(cert)) => {
                HandshakeError::CertificateRejected(format!(
                    "certificate version {}, valid_from {}, not_valid_after {} (unix seconds) \
                     failed verification against the authority key",
                    cert.version, cert.valid_from, cert.not_valid_after
                ))
            }
            other => HandshakeError::Noise(other.to_string()),
        }
    }
}
