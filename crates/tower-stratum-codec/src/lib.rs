//! `tokio_util::codec` codecs for Stratum V2 frames, the Noise NX handshake, and authority keys.
//!
//! - [`PlainCodec`]: plaintext Sv2 frames (spec 3.2).
//! - [`NoiseCodec`]: Sv2 frames over a Noise NX transport (spec 4,
//!   `Noise_NX_Secp256k1+EllSwift_ChaChaPoly_SHA256`), wrapping SRI's `codec_sv2`
//!   `NoiseEncoder` / `NoiseDecoder`; no crypto is reimplemented here.
//! - [`Sv2Codec`]: either of the two, so one `Framed<IO, Sv2Codec>` type serves both transports.
//! - [`accept_noise`] / [`connect_noise`]: the handshake (spec 4.5) over any
//!   `AsyncRead + AsyncWrite + Unpin`, on top of the sans-IO [`NoiseResponder`] /
//!   [`NoiseInitiator`].
//! - [`AuthorityPublicKey`], [`AuthoritySecretKey`], [`AuthorityKeypair`]: authority keys in SRI's
//!   base58check text format (spec 4.7).
//!
//! All codecs check a frame's declared size against their maximum before buffering it, buffer a
//! frame's bytes as they arrive (never reserving its declared length up front), can charge what
//! an unfinished frame holds to a [`PartialFrameBudget`] shared by many connections, and stop
//! for good after a fatal error ([`CodecError::Dead`]). The maximum can be changed between
//! frames ([`Sv2Codec::set_max_payload`]), e.g. once SetupConnection has told which subprotocol
//! the connection speaks.
//!
//! # Build your binary with `--cfg poly1305_force_soft`
//!
//! The Noise transport's cipher is ChaCha20-Poly1305 from the RustCrypto crates under SRI's
//! `noise_sv2` (`chacha20poly1305` 0.10, `poly1305` 0.8). On x86-64 with AVX2, `poly1305`
//! picks its AVX2 backend at run time, and for Sv2's small frames (every frame is two AEAD
//! messages: the 6-byte header and the payload, 20–60 bytes for shares and their replies) that
//! backend is about three times slower than its portable one: its per-message setup and
//! finalization dominate. Measured with this crate's `codec` bench on a 2-core x86-64 VM
//! (AVX2), one `SubmitSharesExtended` frame (71 bytes on the wire): Noise encode 2.72 µs →
//! 0.90 µs, decode 2.76 µs → 0.98 µs with the cfg (see `docs/PERFORMANCE.md`, "Codec").
//!
//! A library cannot set a cfg for its dependencies, so **binaries that use it should**:
//! put this in the `.cargo/config.toml` of the workspace that builds it (this repository's does)
//!
//! ```toml
//! [build]
//! rustflags = ["--cfg", "poly1305_force_soft"]
//! ```
//!
//! or build with `RUSTFLAGS="--cfg poly1305_force_soft"` (a `RUSTFLAGS` variable replaces the
//! config file's flags: add the cfg to it if you set one). The cfg changes only which
//! `poly1305` backend is compiled in, not its output (both compute the same tags). The AVX2
//! backend's advantage is on long messages (kilobyte templates and jobs), which are rare next
//! to shares; where the two cross was not measured.
//!
//! # Example
//!
//! A Noise connection over an in-memory pipe:
//!
//! ```
//! use futures_util::{SinkExt, StreamExt};
//! use std::time::Duration;
//! use tokio_util::codec::Framed;
//! use tower_stratum_codec::{accept_noise, connect_noise, AuthorityKeypair, Sv2Codec};
//! use tower_stratum_core::Frame;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! const MAX_PAYLOAD: usize = 1 << 16;
//! let authority = AuthorityKeypair::generate();
//! let (mut client_io, mut server_io) = tokio::io::duplex(64 * 1024);
//!
//! let (server, client) = tokio::join!(
//!     accept_noise(&mut server_io, &authority, Duration::from_secs(3600), MAX_PAYLOAD),
//!     connect_noise(&mut client_io, Some(authority.public()), MAX_PAYLOAD),
//! );
//! let mut server = Framed::new(server_io, Sv2Codec::from(server?));
//! let mut client = Framed::new(client_io, Sv2Codec::from(client?));
//!
//! let frame = Frame { extension_type: 0, msg_type: 0x00, payload: vec![1, 2, 3].into() };
//! client.send(frame.clone()).await?;
//! assert_eq!(server.next().await.transpose()?, Some(frame));
//! # Ok(())
//! # }
//! ```

mod budget;
mod error;
mod handshake;
mod keys;
mod noise;
mod plain;
mod sv2_codec;

pub use budget::{
    BudgetCharge, BudgetRefused, PartialFrameBudget, DEFAULT_PARTIAL_FRAME_ALLOWANCE,
};
pub use error::{CodecError, HandshakeError};
pub use handshake::{
    accept_noise, connect_noise, NoiseInitiator, NoiseResponder, ACT1_LEN, ACT2_LEN,
};
pub use keys::{
    AuthorityKeypair, AuthorityPublicKey, AuthoritySecretKey, KeyError,
    AUTHORITY_PUBLIC_KEY_VERSION, SRI_TEST_AUTHORITY_PUBLIC_KEY, SRI_TEST_AUTHORITY_SECRET_KEY,
};
pub use noise::{
    encrypted_frame_len, NoiseCodec, ENCRYPTED_HEADER_LEN, MAC_LEN, MAX_CIPHERTEXT_CHUNK_LEN,
    MAX_PLAINTEXT_CHUNK_LEN,
};
pub use plain::{PlainCodec, READ_CHUNK};
pub use sv2_codec::Sv2Codec;
