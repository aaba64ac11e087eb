//! Helpers shared by this crate's integration tests.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use bytes::{Bytes, BytesMut};
use std::time::Duration;
use tokio::io::DuplexStream;
use tokio_util::codec::{Decoder, Encoder};
use tower_stratum_codec::{
    accept_noise, connect_noise, AuthorityKeypair, CodecError, NoiseCodec, NoiseInitiator,
    NoiseResponder,
};
use tower_stratum_core::Frame;

pub const CERT_VALIDITY: Duration = Duration::from_secs(3600);

pub fn frame(extension_type: u16, msg_type: u8, payload: impl Into<Bytes>) -> Frame {
    Frame {
        extension_type,
        msg_type,
        payload: payload.into(),
    }
}

/// A handful of frames of different shapes: empty payload, channel message, extension message.
pub fn sample_frames() -> Vec<Frame> {
    vec![
        frame(0, 0x00, vec![1u8, 2, 3]),
        frame(0, 0x01, Vec::new()),
        frame(0x8000, 0x1b, (0u8..=40).collect::<Vec<_>>()),
        frame(0x0002, 0x05, vec![0xff; 7]),
        frame(0, 0x11, vec![9u8; 300]),
    ]
}

/// Runs the handshake over a duplex pipe; returns (client codec, client io, server codec,
/// server io).
pub async fn noise_pair(
    client_max: usize,
    server_max: usize,
) -> (NoiseCodec, DuplexStream, NoiseCodec, DuplexStream) {
    let authority = AuthorityKeypair::generate();
    let (mut client_io, mut server_io) = tokio::io::duplex(1 << 16);
    let (server, client) = tokio::join!(
        accept_noise(&mut server_io, &authority, CERT_VALIDITY, server_max),
        connect_noise(&mut client_io, Some(authority.public()), client_max),
    );
    (client.unwrap(), client_io, server.unwrap(), server_io)
}

/// The same handshake without any IO (sans-IO steps), for property tests and tight loops.
pub fn noise_pair_sync(client_max: usize, server_max: usize) -> (NoiseCodec, NoiseCodec) {
    let authority = AuthorityKeypair::generate();
    let responder = NoiseResponder::new(&authority, CERT_VALIDITY, server_max).unwrap();
    let (initiator, act1) = NoiseInitiator::new(Some(authority.public()), client_max).unwrap();
    let (act2, server) = responder.respond(act1).unwrap();
    let client = initiator.finish(act2).unwrap();
    (client, server)
}

pub fn encode_all<C: Encoder<Frame, Error = CodecError>>(
    codec: &mut C,
    frames: &[Frame],
) -> BytesMut {
    let mut out = BytesMut::new();
    for f in frames {
        codec.encode(f.clone(), &mut out).unwrap();
    }
    out
}

/// Feeds `bytes` to `codec` in the given chunk sizes (cycled), collecting frames until the first
/// error. Calls `bound` each time the codec asks for more bytes (`Ok(None)`), to check that the
/// read buffer and the codec's own buffer stay bounded.
pub fn feed_chunked<C, B>(
    codec: &mut C,
    bytes: &[u8],
    chunks: &[usize],
    bound: B,
) -> (Vec<Frame>, Option<CodecError>)
where
    C: Decoder<Item = Frame, Error = CodecError>,
    B: Fn(&C, &BytesMut),
{
    let mut src = BytesMut::new();
    let mut out = Vec::new();
    let mut offset = 0;
    let mut i = 0;
    while offset < bytes.len() {
        let n = chunks
            .get(i % chunks.len().max(1))
            .copied()
            .unwrap_or(1)
            .max(1)
            .min(bytes.len() - offset);
        i += 1;
        src.extend_from_slice(&bytes[offset..offset + n]);
        offset += n;
        loop {
            match codec.decode(&mut src) {
                Ok(Some(f)) => out.push(f),
                Ok(None) => {
                    bound(codec, &src);
                    break;
                }
                Err(e) => return (out, Some(e)),
            }
        }
    }
    match codec.decode_eof(&mut src) {
        Ok(Some(f)) => {
            out.push(f);
            (out, None)
        }
        Ok(None) => (out, None),
        Err(e) => (out, Some(e)),
    }
}
