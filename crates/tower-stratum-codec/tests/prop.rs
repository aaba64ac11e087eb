//! Property tests: arbitrary byte streams in arbitrary chunkings never panic the codecs, and
//! what they buffer stays within their documented bounds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::{encode_all, feed_chunked, noise_pair_sync};
use proptest::prelude::*;
use tokio_util::codec::Decoder;
use tower_stratum_codec::{CodecError, NoiseCodec, PlainCodec, ENCRYPTED_HEADER_LEN};
use tower_stratum_core::{frame::MAX_PAYLOAD_LEN, Frame};

fn arb_frame(max_len: usize) -> impl Strategy<Value = Frame> {
    (
        any::<u16>(),
        any::<u8>(),
        proptest::collection::vec(any::<u8>(), 0..max_len),
    )
        .prop_map(|(extension_type, msg_type, payload)| Frame {
            extension_type,
            msg_type,
            payload: Bytes::from(payload),
        })
}

fn chunkings() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(1usize..700, 1..12)
}

fn plain_bound(c: &PlainCodec, src: &bytes::BytesMut) {
    assert_eq!(c.buffered_len(), 0);
    assert!(src.len() < c.max_frame_len(), "{} bytes waiting", src.len());
}

fn noise_bound(c: &NoiseCodec, src: &bytes::BytesMut) {
    assert!(c.buffered_len() <= c.max_buffered_len());
    // At most one read window (one ciphertext chunk) waits in the read buffer.
    assert!(src.len() < 65535);
}

/// Frames up to the first one over `max`, and whether there is one.
fn expected(frames: &[Frame], max: usize) -> (Vec<Frame>, bool) {
    let ok: Vec<Frame> = frames
        .iter()
        .take_while(|f| f.payload.len() <= max)
        .cloned()
        .collect();
    let oversize = ok.len() < frames.len();
    (ok, oversize)
}

proptest! {
    #[test]
    fn plain_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        chunks in chunkings(),
        max in 0usize..2048,
    ) {
        let mut codec = PlainCodec::new(max);
        let (_, err) = feed_chunked(&mut codec, &bytes, &chunks, plain_bound);
        if let Some(e) = err {
            prop_assert!(matches!(e, CodecError::FrameTooLarge { .. } | CodecError::Io(_)), "{e:?}");
            let mut src = bytes::BytesMut::new();
            prop_assert!(matches!(codec.decode(&mut src), Err(CodecError::Dead)));
        }
    }

    #[test]
    fn plain_valid_frames_any_chunking(
        frames in proptest::collection::vec(arb_frame(600), 0..8),
        chunks in chunkings(),
        max in 0usize..700,
    ) {
        let wire = encode_all(&mut PlainCodec::new(MAX_PAYLOAD_LEN), &frames);
        let mut codec = PlainCodec::new(max);
        let (got, err) = feed_chunked(&mut codec, &wire, &chunks, plain_bound);
        let (want, oversize) = expected(&frames, max);
        prop_assert_eq!(got, want);
        prop_assert_eq!(oversize, matches!(err, Some(CodecError::FrameTooLarge { .. })));
        prop_assert_eq!(oversize, err.is_some());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn noise_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        chunks in chunkings(),
        max in 0usize..2048,
    ) {
        let (_, mut server) = noise_pair_sync(MAX_PAYLOAD_LEN, max);
        let (got, err) = feed_chunked(&mut server, &bytes, &chunks, noise_bound);
        prop_assert!(got.is_empty());
        if bytes.len() >= ENCRYPTED_HEADER_LEN {
            // Forging the header MAC is out of reach for random bytes.
            prop_assert!(matches!(err, Some(CodecError::Decrypt)), "{err:?}");
        } else if bytes.is_empty() {
            prop_assert!(err.is_none());
        } else {
            prop_assert!(matches!(err, Some(CodecError::Io(_))), "{err:?}");
        }
        if err.is_some() {
            let mut src = bytes::BytesMut::from(&bytes[..]);
            prop_assert!(matches!(server.decode(&mut src), Err(CodecError::Dead)));
        }
    }

    #[test]
    fn noise_valid_and_corrupted_streams(
        frames in proptest::collection::vec(arb_frame(1500), 0..6),
        chunks in chunkings(),
        max in 0usize..1600,
        corrupt in proptest::option::of((any::<prop::sample::Index>(), 1u8..=255)),
    ) {
        let (mut client, mut server) = noise_pair_sync(MAX_PAYLOAD_LEN, max);
        let mut wire = encode_all(&mut client, &frames);
        if let (Some((at, xor)), false) = (corrupt, wire.is_empty()) {
            let at = at.index(wire.len());
            wire[at] ^= xor;
        }
        let (got, err) = feed_chunked(&mut server, &wire, &chunks, noise_bound);
        let (want, oversize) = expected(&frames, max);
        // Whatever came out is a prefix of what was sent, and never an oversize frame.
        prop_assert!(got.len() <= want.len());
        prop_assert_eq!(&got[..], &want[..got.len()]);
        prop_assert!(got.iter().all(|f| f.payload.len() <= max));
        if corrupt.is_none() || wire.is_empty() {
            prop_assert_eq!(got.len(), want.len());
            prop_assert_eq!(oversize, err.is_some());
            if oversize {
                prop_assert!(matches!(err, Some(CodecError::FrameTooLarge { .. })), "{err:?}");
            }
        } else {
            prop_assert!(err.is_some());
        }
        if err.is_some() {
            let mut src = bytes::BytesMut::from(&wire[..]);
            prop_assert!(matches!(server.decode(&mut src), Err(CodecError::Dead)));
        }
    }
}
