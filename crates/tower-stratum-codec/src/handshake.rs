//! The Noise NX handshake (spec 4.5), sans-IO steps and thin async drivers.
//!
//! ```text
//! initiator (client)                          responder (server)
//!   NoiseInitiator::new ── act 1, 64 bytes ──▶ NoiseResponder::respond
//!   NoiseInitiator::finish ◀── act 2, 234 bytes ──┘
//! ```
//!
//! Act 1 is the initiator's ElligatorSwift-encoded ephemeral key. Act 2 is the responder's
//! ephemeral key (64), its encrypted static key (64 + 16 MAC) and the encrypted certificate
//! ("signature noise message", 74 + 16 MAC), signed by the authority key.
//! The steps are SRI's `codec_sv2::Handshake`; this module only moves the bytes and maps errors.
//! Deadlines are the caller's: wrap the async functions in a timer.

use crate::{
    error::HandshakeError,
    keys::{AuthorityKeypair, AuthorityPublicKey},
    noise::NoiseCodec,
};
use std::time::Duration;
use stratum_core::{
    codec_sv2::{Handshake, InitiatorSent},
    noise_sv2::{
        Initiator, Responder, ELLSWIFT_ENCODING_SIZE, INITIATOR_EXPECTED_HANDSHAKE_MESSAGE_SIZE,
    },
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Length in bytes of handshake act 1 (initiator → responder): 64, an ElligatorSwift-encoded
/// ephemeral public key (spec 4.5.1).
pub const ACT1_LEN: usize = ELLSWIFT_ENCODING_SIZE;

/// Length in bytes of handshake act 2 (responder → initiator): 234 = 64 (ElligatorSwift-encoded
/// ephemeral key) + 80 (encrypted ElligatorSwift static key, 64 + 16 MAC) + 90 (encrypted 74-byte
/// certificate + 16 MAC); spec 4.5.2. codec_sv2 calls it
/// `INITIATOR_EXPECTED_HANDSHAKE_MESSAGE_SIZE`. (Older spec revisions with 32-byte keys had 170.)
pub const ACT2_LEN: usize = INITIATOR_EXPECTED_HANDSHAKE_MESSAGE_SIZE;

/// The responder's side of the handshake, sans IO: feed it act 1, get act 2 and the codec.
///
/// Holds fresh ephemeral and static keys (generated in [`Self::new`]) and the authority key pair
/// that signs the certificate.
#[derive(Debug)]
pub struct NoiseResponder {
    handshake: Handshake<Responder>,
    max_payload: usize,
}

impl NoiseResponder {
    /// Prepares a responder that signs certificates valid for `cert_validity` from the moment of
    /// [`Self::respond`] (whole seconds; values above `u32::MAX` seconds are clamped, as the
    /// certificate's `not_valid_after` is a U32 unix time). `max_payload` (bytes) is passed to the
    /// resulting [`NoiseCodec`].
    ///
    /// Errors with [`HandshakeError::Noise`] if noise_sv2 rejects the key pair (it cannot, for a
    /// pair built by [`AuthorityKeypair`]).
    pub fn new(
        keypair: &AuthorityKeypair,
        cert_validity: Duration,
        max_payload: usize,
    ) -> Result<Self, HandshakeError> {
        let validity = Duration::from_secs(cert_validity.as_secs().min(u64::from(u32::MAX)));
        let responder = Responder::from_authority_kp(
            &keypair.public().to_bytes(),
            &keypair.secret().to_bytes(),
            validity,
        )
        .map_err(|e| HandshakeError::Noise(format!("{e:?}")))?;
        Ok(Self {
            handshake: Handshake::responder(responder),
            max_payload,
        })
    }

    /// Answers act 1, with the certificate's `valid_from` taken from the system clock.
    ///
    /// Returns act 2 (to send as is) and the codec for the connection. Errors with
    /// [`HandshakeError::Noise`] if act 1 is not a valid handshake message.
    pub fn respond(
        self,
        act1: [u8; ACT1_LEN],
    ) -> Result<([u8; ACT2_LEN], NoiseCodec), HandshakeError> {
        let (message, transport) = self
            .handshake
            .step_1(act1)
            .map_err(HandshakeError::from_sri)?;
        Ok((
            act2(message.payload())?,
            NoiseCodec::new(transport, self.max_payload),
        ))
    }

    /// [`Self::respond`] with the certificate's `valid_from` given as `now_unix_secs` (seconds
    /// since the Unix epoch, wall clock: certificate validity is the one place wall-clock time is
    /// used). The certificate is valid from `now_unix_secs` to `now_unix_secs + cert_validity`.
    pub fn respond_at(
        self,
        act1: [u8; ACT1_LEN],
        now_unix_secs: u32,
    ) -> Result<([u8; ACT2_LEN], NoiseCodec), HandshakeError> {
        let (message, transport) = self
            .handshake
            .step_1_with_now_rng(act1, now_unix_secs, &mut rand::thread_rng())
            .map_err(HandshakeError::from_sri)?;
        Ok((
            act2(message.payload())?,
            NoiseCodec::new(transport, self.max_payload),
        ))
    }
}

fn act2(payload: &[u8]) -> Result<[u8; ACT2_LEN], HandshakeError> {
    payload.try_into().map_err(|_| {
        HandshakeError::Noise(format!(
            "codec_sv2 produced a {}-byte act 2, expected {ACT2_LEN}",
            payload.len()
        ))
    })
}

/// The initiator's side of the handshake, sans IO, after act 1 was produced: feed it act 2 to get
/// the codec.
#[derive(Debug)]
pub struct NoiseInitiator {
    handshake: Handshake<InitiatorSent>,
    max_payload: usize,
    authenticated: bool,
}

impl NoiseInitiator {
    /// Starts a handshake; returns the initiator and act 1 to send.
    ///
    /// With `Some(authority)`, [`Self::finish`] accepts the responder only if its certificate is
    /// signed by `authority` and currently valid (spec 4.5.3).
    ///
    /// # Security
    ///
    /// With `None` the responder is **not authenticated**: its certificate is not checked at all,
    /// so the session is encrypted but anyone on the path can impersonate the responder or sit in
    /// the middle and read and rewrite every message. Nothing in the resulting [`NoiseCodec`]
    /// records this. Use `None` only on a trusted network for a responder that has no authority
    /// key to pin.
    ///
    /// `max_payload` (bytes) is passed to the resulting [`NoiseCodec`]. Errors with
    /// [`HandshakeError::Noise`] if key generation or the first step fails.
    pub fn new(
        authority: Option<AuthorityPublicKey>,
        max_payload: usize,
    ) -> Result<(Self, [u8; ACT1_LEN]), HandshakeError> {
        let initiator = match authority {
            Some(key) => Initiator::from_raw_k(key.to_bytes()),
            None => Initiator::without_pk(),
        }
        .map_err(|e| HandshakeError::Noise(format!("{e:?}")))?;
        let (message, handshake) = Handshake::initiator(initiator)
            .step_0()
            .map_err(HandshakeError::from_sri)?;
        let act1: [u8; ACT1_LEN] = message.payload().try_into().map_err(|_| {
            HandshakeError::Noise(format!(
                "codec_sv2 produced a {}-byte act 1, expected {ACT1_LEN}",
                message.payload().len()
            ))
        })?;
        Ok((
            Self {
                handshake,
                max_payload,
                authenticated: authority.is_some(),
            },
            act1,
        ))
    }

    /// Whether [`Self::finish`] will authenticate the responder (an authority key was given).
    pub fn authenticates_responder(&self) -> bool {
        self.authenticated
    }

    /// Completes the handshake with act 2, checking the certificate against the system clock.
    ///
    /// Errors with [`HandshakeError::CertificateRejected`] if an authority key was given and the
    /// certificate is not signed by it or not valid now (noise_sv2 allows 10 s of clock drift), and
    /// with [`HandshakeError::Noise`] if act 2 does not decrypt.
    pub fn finish(self, act2: [u8; ACT2_LEN]) -> Result<NoiseCodec, HandshakeError> {
        let transport = self
            .handshake
            .step_2(act2)
            .map_err(HandshakeError::from_sri)?;
        Ok(NoiseCodec::new(transport, self.max_payload))
    }

    /// [`Self::finish`] with the current time given as `now_unix_secs` (seconds since the Unix
    /// epoch, wall clock) for the certificate validity check.
    pub fn finish_at(
        self,
        act2: [u8; ACT2_LEN],
        now_unix_secs: u32,
    ) -> Result<NoiseCodec, HandshakeError> {
        let transport = self
            .handshake
            .step_2_with_now(act2, now_unix_secs)
            .map_err(HandshakeError::from_sri)?;
        Ok(NoiseCodec::new(transport, self.max_payload))
    }
}

/// Runs the responder (server) side of the Noise NX handshake on `io` (spec 4.5) and returns the
/// codec for the rest of the connection.
///
/// Reads exactly [`ACT1_LEN`] (64) bytes, writes exactly [`ACT2_LEN`] (234) bytes and flushes;
/// nothing after act 1 is read, so the caller can wrap `io` in a `Framed` with the returned
/// codec. The certificate is signed with `keypair` and valid for `cert_validity` from now (whole
/// seconds). `max_payload` (bytes) is the codec's receive limit.
///
/// Errors: [`HandshakeError::Io`] (including `UnexpectedEof` if the peer closes before 64 bytes),
/// [`HandshakeError::Noise`] on a malformed act 1. No deadline: wrap in a timer.
pub async fn accept_noise<IO>(
    io: &mut IO,
    keypair: &AuthorityKeypair,
    cert_validity: Duration,
    max_payload: usize,
) -> Result<NoiseCodec, HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let responder = NoiseResponder::new(keypair, cert_validity, max_payload)?;
    let mut act1 = [0u8; ACT1_LEN];
    io.read_exact(&mut act1).await?;
    let (act2, codec) = responder.respond(act1)?;
    io.write_all(&act2).await?;
    io.flush().await?;
    tracing::debug!(role = "responder", "noise handshake complete");
    Ok(codec)
}

/// Runs the initiator (client) side of the Noise NX handshake on `io` (spec 4.5) and returns the
/// codec for the rest of the connection.
///
/// Writes exactly [`ACT1_LEN`] (64) bytes and flushes, then reads exactly [`ACT2_LEN`] (234)
/// bytes. `max_payload` (bytes) is the codec's receive limit.
///
/// With `Some(authority)` the responder's certificate must be signed by that authority key and
/// valid now, or the handshake fails with [`HandshakeError::CertificateRejected`].
///
/// # Security
///
/// With `None` the responder is **NOT AUTHENTICATED**: the connection is encrypted, but an active
/// attacker can impersonate the pool or relay and rewrite every message (including where the
/// hashrate goes). Only for trusted networks; see [`NoiseInitiator::new`].
///
/// Errors: [`HandshakeError::Io`] (including `UnexpectedEof` if the peer closes before 234 bytes),
/// [`HandshakeError::CertificateRejected`], [`HandshakeError::Noise`] if act 2 does not decrypt.
/// No deadline: wrap in a timer.
pub async fn connect_noise<IO>(
    io: &mut IO,
    authority: Option<AuthorityPublicKey>,
    max_payload: usize,
) -> Result<NoiseCodec, HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (initiator, act1) = NoiseInitiator::new(authority, max_payload)?;
    io.write_all(&act1).await?;
    io.flush().await?;
    let mut act2 = [0u8; ACT2_LEN];
    io.read_exact(&mut act2).await?;
    let authenticated = initiator.authenticates_responder();
    let codec = initiator.finish(act2)?;
    tracing::debug!(
        role = "initiator",
        authenticated,
        "noise handshake complete"
    );
    Ok(codec)
}
